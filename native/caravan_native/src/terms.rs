//! Terms <-> Rust values at the NIF boundary: the `{kind, message}` error,
//! IP tuples, nameservers as `{ip_tuple, port}`, SRV record maps, and node
//! names given as atoms, charlists or binaries. No logic: the rules live in
//! `caravan_core`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use rustler::types::list::ListIterator;
use rustler::types::tuple::get_tuple;
use rustler::{Atom, Decoder, Encoder, Env, NifMap, NifResult, Term, TermType};

use caravan_core::error::LookupError;
use caravan_core::node_name::{NodeNameError, MAX_NODE_NAME_CHARS};
use caravan_core::resolver::{Search, SrvRecord};

/// `{kind, message}`: the error every NIF returns inside `{:error, _}`
/// (rustler encodes `Result<T, KindError>` as `{:ok, t} | {:error, e}`),
/// `kind` an atom (the kinds are listed in `Caravan.error_kind()`).
pub(crate) struct KindError {
    pub(crate) kind: &'static str,
    pub(crate) message: String,
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
pub(crate) struct IpTerm(pub(crate) IpAddr);

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

impl<'a> Decoder<'a> for IpTerm {
    /// A 4-tuple of 0..255 or an 8-tuple of 0..65535, else `badarg`.
    fn decode(term: Term<'a>) -> NifResult<Self> {
        let parts = get_tuple(term)?;
        let ip = match parts.len() {
            4 => {
                let mut octets = [0u8; 4];
                for (octet, part) in octets.iter_mut().zip(&parts) {
                    *octet = part.decode()?;
                }
                IpAddr::V4(Ipv4Addr::from(octets))
            }
            8 => {
                let mut segments = [0u16; 8];
                for (segment, part) in segments.iter_mut().zip(&parts) {
                    *segment = part.decode()?;
                }
                IpAddr::V6(Ipv6Addr::from(segments))
            }
            _ => return Err(rustler::Error::BadArg),
        };
        Ok(Self(ip))
    }
}

/// A nameserver as `Caravan.DNS.Options` holds it once parsed:
/// `{ip_tuple, port}`, port 1..65535. Decoding is a conversion, not a
/// parse: the text was parsed once, by the `nameserver` NIF.
pub(crate) struct NameserverTerm(pub(crate) SocketAddr);

impl Encoder for NameserverTerm {
    fn encode<'a>(&self, env: Env<'a>) -> Term<'a> {
        (IpTerm(self.0.ip()), self.0.port()).encode(env)
    }
}

impl<'a> Decoder<'a> for NameserverTerm {
    /// `{ip_tuple, port}` with a port in 1..65535, else `badarg`.
    fn decode(term: Term<'a>) -> NifResult<Self> {
        let (ip, port): (IpTerm, u16) = term.decode()?;
        if port == 0 {
            return Err(rustler::Error::BadArg);
        }
        Ok(Self(SocketAddr::new(ip.0, port)))
    }
}

/// A search rule as `Caravan.DNS` passes it: `{[domain], ndots}`; a
/// domain that is not a DNS name is left out.
pub(crate) struct SearchTerm(pub(crate) Search);

impl<'a> Decoder<'a> for SearchTerm {
    fn decode(term: Term<'a>) -> NifResult<Self> {
        let (domains, ndots): (Vec<String>, usize) = term.decode()?;
        Ok(Self(Search::new(domains.iter().map(String::as_str), ndots)))
    }
}

/// `%{priority, weight, port, target, addresses: [ip], host: binary | nil,
/// transport: "udp" | "tcp"}`, plus `name: binary` when the query was
/// completed from the search list.
pub(crate) struct SrvTerm {
    fields: SrvFields,
    name: Option<String>,
}

#[derive(NifMap)]
#[rustler(encode)]
struct SrvFields {
    priority: u16,
    weight: u16,
    port: u16,
    target: String,
    addresses: Vec<IpTerm>,
    host: Option<String>,
    transport: &'static str,
}

impl SrvTerm {
    /// The terms of a lookup's records, in order.
    pub(crate) fn list(records: Vec<SrvRecord>) -> Vec<SrvTerm> {
        records.into_iter().map(SrvTerm::from).collect()
    }
}

impl Encoder for SrvTerm {
    fn encode<'a>(&self, env: Env<'a>) -> Term<'a> {
        let map = self.fields.encode(env);
        match &self.name {
            Some(name) => map.map_put(atoms::name(), name).unwrap_or(map),
            None => map,
        }
    }
}

mod atoms {
    rustler::atoms! { name }
}

impl From<SrvRecord> for SrvTerm {
    fn from(r: SrvRecord) -> Self {
        Self {
            fields: SrvFields {
                priority: r.priority,
                weight: r.weight,
                port: r.port,
                target: r.target,
                addresses: r.addresses.into_iter().map(IpTerm).collect(),
                host: r.host.ok(),
                transport: r.transport.as_str(),
            },
            name: r.name,
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
pub(crate) fn with_node_name<T>(
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
