//! Caravan's native core, loaded as a NIF into `Caravan.Native`.
//!
//! This crate is the NIF layer only: decode terms, call `caravan_core`,
//! encode the answer. The logic lives in `caravan_core::node_name` (the port
//! rule) and `caravan_core::resolver` (SRV lookups), both unit-tested without
//! a BEAM; `runtime` runs lookups off the schedulers.

mod runtime;

use std::net::IpAddr;
use std::time::Duration;

use rustler::types::list::ListIterator;
use rustler::{Atom, Encoder, Env, NifMap, Term, TermType};

use caravan_core::node_name::{self, NodeNameError, MAX_NODE_NAME_CHARS};
use caravan_core::resolver::{self, Family, LookupConfig, LookupError, SrvRecord};
use caravan_core::target::NodeHost;

mod atoms {
    rustler::atoms! {
        caravan_srv,
        caravan_host,
        inet,
        inet6,
    }
}

/// `{kind, message}`: the error every NIF returns inside `{:error, _}`
/// (rustler encodes `Result<T, KindError>` as `{:ok, t} | {:error, e}`),
/// `kind` an atom (the kinds are listed in `Caravan.error_kind()`).
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

/// An IP address as `:inet` writes it: a 4-tuple or an 8-tuple.
struct IpTerm(IpAddr);

impl Encoder for IpTerm {
    fn encode<'a>(&self, env: Env<'a>) -> Term<'a> {
        match self.0 {
            IpAddr::V4(ip) => {
                let [a, b, c, d] = ip.octets();
                (a, b, c, d).encode(env)
            }
            IpAddr::V6(ip) => {
                let [a, b, c, d, e, f, g, h] = ip.segments();
                let tuple: Vec<Term> = [a, b, c, d, e, f, g, h]
                    .iter()
                    .map(|s| s.encode(env))
                    .collect();
                rustler::types::tuple::make_tuple(env, &tuple)
            }
        }
    }
}

/// `%{priority, weight, port, target, addresses: [ip], host: binary | nil}`
#[derive(NifMap)]
#[rustler(encode)]
struct SrvTerm {
    priority: u16,
    weight: u16,
    port: u16,
    target: String,
    addresses: Vec<IpTerm>,
    host: Option<String>,
}

impl From<SrvRecord> for SrvTerm {
    fn from(r: SrvRecord) -> Self {
        Self {
            priority: r.priority,
            weight: r.weight,
            port: r.port,
            target: r.target,
            addresses: r.addresses.into_iter().map(IpTerm).collect(),
            host: r.host.ok(),
        }
    }
}

/// Parses the nameserver strings and the timeout into a [`LookupConfig`].
fn lookup_config(nameservers: &[String], timeout_ms: u64) -> Result<LookupConfig, KindError> {
    let nameservers = nameservers
        .iter()
        .map(|ns| resolver::parse_nameserver(ns))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(LookupConfig {
        nameservers,
        timeout: Duration::from_millis(timeout_ms.max(1)),
    })
}

/// Spawns `work` on the runtime; the caller gets `{:ok, ref}` at once and
/// later `{tag, ref, {:ok, value} | {:error, {kind, message}}}` (with
/// `trace`, `{tag, ref, result, [line]}`: see `runtime::spawn_reply`).
fn spawn_lookup<'a, T>(
    env: Env<'a>,
    tag: Atom,
    trace: bool,
    work: impl std::future::Future<Output = Result<T, LookupError>> + Send + 'static,
) -> Result<Term<'a>, KindError>
where
    T: Encoder + Send + 'static,
{
    runtime::spawn_reply(env, tag, trace, async move {
        work.await.map_err(KindError::from)
    })
    .map_err(|message| KindError {
        kind: "runtime",
        message,
    })
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
        TermType::Atom => atom_text(term).ok_or_else(|| not_a_name("an unreadable atom")),
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

/// The text of an atom. With NIF 2.16 (OTP 25) rustler reads atoms as
/// Latin-1, which fails for atoms with other characters
/// (`:"app-1@ホスト"`); those are read from the atom's external term format
/// instead, which is `131, SMALL_ATOM_UTF8_EXT (119), len:8, utf8` or
/// `131, ATOM_UTF8_EXT (118), len:16, utf8` (OTP's external term format docs).
fn atom_text(term: Term) -> Option<String> {
    if let Ok(text) = term.atom_to_string() {
        return Some(text);
    }
    let etf = term.to_binary();
    let utf8 = match etf.as_slice() {
        [131, 119, len, rest @ ..] if rest.len() == usize::from(*len) => rest,
        [131, 118, hi, lo, rest @ ..]
            if rest.len() == usize::from(u16::from_be_bytes([*hi, *lo])) =>
        {
            rest
        }
        _ => return None,
    };
    std::str::from_utf8(utf8).ok().map(str::to_owned)
}

/// `dist_port(node) :: {:ok, port} | {:error, {kind, message}}`
#[rustler::nif]
fn dist_port(node: Term) -> Result<u16, KindError> {
    with_node_name(node, node_name::dist_port)
}

/// `listen_port(node) :: {:ok, port} | {:error, {kind, message}}`, port 0 for
/// release helper nodes.
#[rustler::nif]
fn listen_port(node: Term) -> Result<u16, KindError> {
    with_node_name(node, node_name::listen_port)
}

/// `srv_lookup(query, nameservers, timeout_ms, node_host, trace) :: {:ok, ref} | {:error, {kind, message}}`
///
/// `node_host` is `:auto`, `:target` or `:ip` (see `caravan_core::target`).
/// Returns at once; the caller later receives
/// `{:caravan_srv, ref, {:ok, [record]} | {:error, {kind, message}}}`, with
/// `trace` true `{:caravan_srv, ref, result, [line]}` (the lookup's
/// `tracing` events, `caravan_core::trace`).
#[rustler::nif]
fn srv_lookup<'a>(
    env: Env<'a>,
    query: String,
    nameservers: Vec<String>,
    timeout_ms: u64,
    node_host: Atom,
    trace: bool,
) -> Result<Term<'a>, KindError> {
    // Bad arguments are answered at once, before anything is spawned.
    let config = lookup_config(&nameservers, timeout_ms)?;
    let name = resolver::parse_query(&query)?;
    let mode = node_host
        .to_term(env)
        .atom_to_string()
        .map_err(|_| String::from("an unreadable atom"))
        .and_then(|text| text.parse::<NodeHost>())
        .map_err(|message| KindError {
            kind: "invalid_option",
            message,
        })?;
    spawn_lookup(env, atoms::caravan_srv(), trace, async move {
        let records = resolver::lookup_srv(&config, name, mode).await?;
        Ok(records.into_iter().map(SrvTerm::from).collect::<Vec<_>>())
    })
}

/// `host_lookup(host, family, nameservers, timeout_ms, trace) :: {:ok, ref} | {:error, {kind, message}}`
///
/// `family` is `:inet` (A) or `:inet6` (AAAA). The caller later receives
/// `{:caravan_host, ref, {:ok, [ip_tuple]} | {:error, {kind, message}}}`
/// (with `trace`, the lines as a fourth element, as for `srv_lookup`).
#[rustler::nif]
fn host_lookup<'a>(
    env: Env<'a>,
    host: String,
    family: Atom,
    nameservers: Vec<String>,
    timeout_ms: u64,
    trace: bool,
) -> Result<Term<'a>, KindError> {
    let family = if family == atoms::inet() {
        Family::V4
    } else if family == atoms::inet6() {
        Family::V6
    } else {
        return Err(KindError {
            kind: "invalid_option",
            message: "expected the family :inet or :inet6".into(),
        });
    };
    let config = lookup_config(&nameservers, timeout_ms)?;
    spawn_lookup(env, atoms::caravan_host(), trace, async move {
        let found = resolver::lookup_host(&config, &host, family).await?;
        Ok(found.into_iter().map(IpTerm).collect::<Vec<_>>())
    })
}

/// `nameserver(text) :: {:ok, "IP:PORT"} | {:error, {:invalid_nameserver, message}}`
///
/// The one nameserver parser (`caravan_core::resolver::parse_nameserver`),
/// so config validation and lookups agree.
#[rustler::nif]
fn nameserver(text: Term) -> Result<String, KindError> {
    let text = text.decode::<String>().map_err(|_| KindError {
        kind: "invalid_nameserver",
        message: "expected the nameserver as a string".into(),
    })?;
    Ok(resolver::parse_nameserver(&text)?.to_string())
}

/// Test hooks, compiled only with the cargo feature `test-hooks` (which
/// `mix compile` turns on under MIX_ENV=test): the production library
/// exports only the NIFs `lib/` calls.
#[cfg(feature = "test-hooks")]
mod test_hooks {
    use rustler::{Atom, Encoder, Env, Term};

    use super::{runtime, spawn_lookup, KindError};
    use caravan_core::resolver::LookupError;

    mod atoms {
        rustler::atoms! {
            caravan_srv,
            nif,
            runtime,
            in_flight,
            started,
        }
    }

    /// `floor() :: :ok`: does nothing; the cheapest NIF call there is.
    #[rustler::nif]
    fn floor() -> Atom {
        rustler::types::atom::ok()
    }

    /// `runtime_info() :: %{started: boolean, in_flight: non_neg_integer}`:
    /// whether the tokio runtime runs, and how many spawned lookups have not
    /// replied yet.
    #[rustler::nif]
    fn runtime_info(env: Env) -> rustler::NifResult<Term> {
        Term::map_from_pairs(
            env,
            &[
                (atoms::started().encode(env), runtime::started().encode(env)),
                (
                    atoms::in_flight().encode(env),
                    runtime::in_flight().encode(env),
                ),
            ],
        )
        .map_err(|_| rustler::Error::BadArg)
    }

    /// `__panic__(:nif | :runtime)`: panics on purpose, for the tests that
    /// check a panic in Rust becomes an Elixir error. `:nif` panics in the
    /// NIF call itself (rustler raises `:nif_panicked`); `:runtime` returns
    /// `{:ok, ref}` and panics in the spawned task, whose reply is then
    /// `{:caravan_srv, ref, {:error, {:internal, message}}}`.
    #[rustler::nif(name = "__panic__")]
    fn deliberate_panic<'a>(
        env: Env<'a>,
        place: Atom,
    ) -> rustler::NifResult<Result<Term<'a>, KindError>> {
        if place == atoms::nif() {
            panic!("deliberate panic in a NIF call (Caravan.Native.__panic__(:nif))");
        }
        if place != atoms::runtime() {
            return Err(rustler::Error::BadArg);
        }
        Ok(spawn_lookup(env, atoms::caravan_srv(), false, async {
            if std::hint::black_box(true) {
                panic!("deliberate panic in a runtime task (Caravan.Native.__panic__(:runtime))");
            }
            Ok::<(), LookupError>(())
        }))
    }
}

rustler::init!("Elixir.Caravan.Native");
