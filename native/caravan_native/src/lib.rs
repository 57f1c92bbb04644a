//! Caravan's native core, loaded as a NIF into `Caravan.Native`.
//!
//! This crate is the NIF layer only: decode terms, call `caravan_core`,
//! encode the answer. The logic lives in `caravan_core::node_name` (the port
//! rule) and `caravan_core::resolver` (SRV lookups), both unit-tested without
//! a BEAM; `runtime` runs lookups off the schedulers.

mod runtime;

use std::time::Duration;

use rustler::types::list::ListIterator;
use rustler::{Atom, Encoder, Env, NifMap, Term, TermType};

use caravan_core::node_name::{self, NodeNameError, MAX_NODE_NAME_CHARS};
use caravan_core::resolver::{self, LookupConfig, LookupError, SrvRecord};

mod atoms {
    rustler::atoms! {
        ok,
        error,
        caravan_srv,
    }
}

/// `{kind, message}`: the error shape every NIF returns, `kind` an atom.
struct KindError {
    kind: &'static str,
    message: String,
}

impl Encoder for KindError {
    fn encode<'a>(&self, env: Env<'a>) -> Term<'a> {
        let kind = Atom::from_str(env, self.kind).expect("error kinds are valid atoms");
        (kind, self.message.as_str()).encode(env)
    }
}

impl From<NodeNameError> for KindError {
    fn from(err: NodeNameError) -> Self {
        Self {
            kind: err.kind(),
            message: err.to_string(),
        }
    }
}

impl From<LookupError> for KindError {
    fn from(err: LookupError) -> Self {
        Self {
            kind: err.kind(),
            message: err.to_string(),
        }
    }
}

#[derive(NifMap)]
struct SrvTerm {
    priority: u16,
    weight: u16,
    port: u16,
    target: String,
}

impl From<SrvRecord> for SrvTerm {
    fn from(r: SrvRecord) -> Self {
        Self {
            priority: r.priority,
            weight: r.weight,
            port: r.port,
            target: r.target,
        }
    }
}

/// Runs `f` on the text of an atom whose name is all ASCII, read into a
/// stack buffer (no allocation: the common case of a node name); None for
/// any other term or atom, which then takes the general path.
fn with_ascii_atom<R>(term: Term, f: impl FnOnce(&str) -> R) -> Option<R> {
    let mut buf = [0u8; MAX_NODE_NAME_CHARS + 1];
    // SAFETY: `term` belongs to the calling environment and `buf` is
    // writable for its whole length, which is passed as the size.
    // enif_get_atom writes at most that many bytes (text plus NUL) and
    // returns 0, writing nothing, when `term` is not an atom, does not fit
    // or is not Latin-1 (erl_nif docs).
    let written = unsafe {
        rustler::sys::enif_get_atom(
            term.get_env().as_c_arg(),
            term.as_c_arg(),
            buf.as_mut_ptr() as *mut std::os::raw::c_char,
            buf.len() as std::os::raw::c_uint,
            rustler::sys::ErlNifCharEncoding::ERL_NIF_LATIN1,
        )
    };
    let text = &buf[..usize::try_from(written).ok()?.checked_sub(1)?];
    if !text.is_ascii() {
        return None;
    }
    std::str::from_utf8(text).ok().map(f)
}

/// Calls `rule` with the node name `term` (an atom, a charlist or a UTF-8
/// binary) as text. ASCII atoms, what node names are, are read without
/// allocating.
fn with_node_name<T>(
    term: Term,
    rule: impl Fn(&str) -> Result<T, NodeNameError>,
) -> Result<T, KindError> {
    if let Some(result) = with_ascii_atom(term, &rule) {
        return Ok(result?);
    }
    Ok(rule(&decode_node_name(term)?)?)
}

/// Decodes a node name given as an atom, a charlist or a UTF-8 binary.
/// Inputs longer than any atom can be are refused before they are walked,
/// so a huge input cannot make the call slow.
fn decode_node_name(term: Term) -> Result<String, KindError> {
    let not_a_name = |what: &str| KindError {
        kind: "not_a_node_name",
        message: format!("expected a node name as an atom, a charlist or a binary; got {what}"),
    };
    let too_long = |chars: usize| KindError::from(NodeNameError::TooLong { chars });
    match term.get_type() {
        TermType::Atom => term
            .atom_to_string()
            .map_err(|_| not_a_name("an unreadable atom")),
        TermType::Binary => {
            let binary = term
                .decode_as_binary()
                .map_err(|_| not_a_name("a bitstring"))?;
            if binary.len() > MAX_NODE_NAME_CHARS * 4 {
                return Err(too_long(binary.len()));
            }
            std::str::from_utf8(binary.as_slice())
                .map(str::to_owned)
                .map_err(|_| not_a_name("a binary that is not valid UTF-8"))
        }
        TermType::List => {
            let len = term
                .list_length()
                .map_err(|_| not_a_name("an improper list"))?;
            if len > MAX_NODE_NAME_CHARS {
                return Err(too_long(len));
            }
            let chars: ListIterator = term.decode().map_err(|_| not_a_name("an improper list"))?;
            chars
                .map(|c| c.decode::<u32>().ok().and_then(char::from_u32))
                .collect::<Option<String>>()
                .ok_or_else(|| not_a_name("a list that is not a charlist"))
        }
        _ => Err(not_a_name("a term of another type")),
    }
}

/// `dist_port(node) :: {:ok, port} | {:error, {kind, message}}`
#[rustler::nif]
fn dist_port<'a>(env: Env<'a>, node: Term<'a>) -> Term<'a> {
    ResultTerm(with_node_name(node, node_name::dist_port)).encode(env)
}

/// `listen_port(node) :: {:ok, port} | {:error, {kind, message}}`, port 0 for
/// release helper nodes.
#[rustler::nif]
fn listen_port<'a>(env: Env<'a>, node: Term<'a>) -> Term<'a> {
    ResultTerm(with_node_name(node, node_name::listen_port)).encode(env)
}

/// `srv_lookup(query, nameservers, timeout_ms) :: {:ok, ref} | {:error, {kind, message}}`
///
/// Returns at once; the caller later receives
/// `{:caravan_srv, ref, {:ok, [record]} | {:error, {kind, message}}}`.
#[rustler::nif]
fn srv_lookup<'a>(
    env: Env<'a>,
    query: String,
    nameservers: Vec<String>,
    timeout_ms: u64,
) -> Term<'a> {
    // Bad arguments are answered at once, before anything is spawned.
    let parsed = nameservers
        .iter()
        .map(|ns| resolver::parse_nameserver(ns))
        .collect::<Result<Vec<_>, _>>()
        .and_then(|nameservers| Ok((nameservers, resolver::parse_query(&query)?)));
    let (config, name) = match parsed {
        Ok((nameservers, name)) => (
            LookupConfig {
                nameservers,
                timeout: Duration::from_millis(timeout_ms.max(1)),
            },
            name,
        ),
        Err(err) => return ResultTerm::<()>(Err(err.into())).encode(env),
    };
    let work = async move {
        let records = resolver::lookup_srv(&config, name).await?;
        Ok(records.into_iter().map(SrvTerm::from).collect::<Vec<_>>())
    };
    let spawned = runtime::spawn_reply(
        env,
        atoms::caravan_srv(),
        async move { ResultTerm(work.await) },
    );
    match spawned {
        Ok(reference) => ResultTerm(Ok(reference)).encode(env),
        Err(message) => ResultTerm::<()>(Err(KindError {
            kind: "runtime",
            message,
        }))
        .encode(env),
    }
}

/// `floor() :: :ok`: does nothing. The cheapest NIF call there is, kept as
/// the floor the benchmarks compare `dist_port/1` against.
#[rustler::nif]
fn floor() -> Atom {
    atoms::ok()
}

/// `{:ok, value} | {:error, {kind, message}}` built on the runtime thread.
struct ResultTerm<T>(Result<T, KindError>);

impl<T: Encoder> Encoder for ResultTerm<T> {
    fn encode<'a>(&self, env: Env<'a>) -> Term<'a> {
        match &self.0 {
            Ok(value) => (atoms::ok(), value).encode(env),
            Err(err) => (atoms::error(), err).encode(env),
        }
    }
}

rustler::init!("Elixir.Caravan.Native");
