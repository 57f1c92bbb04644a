//! Why a lookup gave no records: the one error type of every layer above
//! it ([`crate::transport`], [`crate::resolver`]).

use std::fmt;

/// Longest CNAME chain a lookup walks; longer counts as a loop
/// ([`LookupError::CnameLoop`]).
pub const MAX_CNAME_HOPS: usize = 8;

/// Why a lookup gave no records.
///
/// [`LookupError::NxDomain`] and [`LookupError::NoData`] are authoritative
/// "no such records"; every other variant means the answer is *unknown* and
/// must never be read as "no peers".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// The name does not exist (RCODE 3, NXDOMAIN).
    NxDomain,
    /// The name exists but has no records of the asked type (NOERROR with
    /// no answer).
    NoData,
    /// No answer within the time bound.
    Timeout,
    /// The server answered with an error code (SERVFAIL, REFUSED, ...);
    /// the text names the code and the nameserver.
    ServerFailure(String),
    /// The name leads into a CNAME loop (or a chain longer than
    /// [`MAX_CNAME_HOPS`]): a broken zone, not an answer. The text is the
    /// chain, `a -> b -> a`.
    CnameLoop(String),
    /// The query is not a valid domain name.
    InvalidQuery(String),
    /// A nameserver string is not `IP` or `IP:PORT`.
    InvalidNameserver(String),
    /// The nameservers are unknown (unreadable resolv.conf, none in it).
    Config(String),
    /// Sockets, malformed packets, and anything else on the way.
    Transport(String),
}

impl LookupError {
    /// A short, stable tag for the error kind (used as an atom on the BEAM side).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NxDomain => "nxdomain",
            Self::NoData => "nodata",
            Self::Timeout => "timeout",
            Self::ServerFailure(_) => "server_failure",
            Self::CnameLoop(_) => "cname_loop",
            Self::InvalidQuery(_) => "invalid_query",
            Self::InvalidNameserver(_) => "invalid_nameserver",
            Self::Config(_) => "config",
            Self::Transport(_) => "transport",
        }
    }

    /// True for answers that authoritatively say "no records".
    pub fn is_no_records(&self) -> bool {
        matches!(self, Self::NxDomain | Self::NoData)
    }
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NxDomain => write!(f, "the name does not exist (NXDOMAIN)"),
            Self::NoData => write!(f, "the name has no SRV records (NODATA)"),
            Self::Timeout => write!(f, "no answer within the lookup timeout"),
            Self::ServerFailure(code) => write!(f, "the nameserver answered {code}"),
            Self::CnameLoop(chain) => write!(f, "the name leads into a CNAME loop: {chain}"),
            Self::InvalidQuery(msg) => write!(f, "invalid query: {msg}"),
            Self::InvalidNameserver(ns) => write!(
                f,
                "invalid nameserver {ns:?}; expected \"IP\" or \"IP:PORT\", e.g. \"127.0.0.1:8600\" or \"[::1]:53\""
            ),
            Self::Config(msg) => write!(f, "resolver configuration: {msg}"),
            // The kind is shown beside the message (`transport: ...`), so
            // the message does not repeat it.
            Self::Transport(msg) => write!(f, "{msg}"),
        }
    }
}

impl std::error::Error for LookupError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_records_is_only_nxdomain_and_nodata() {
        assert!(LookupError::NxDomain.is_no_records());
        assert!(LookupError::NoData.is_no_records());
        assert!(!LookupError::Timeout.is_no_records());
        assert!(!LookupError::ServerFailure("SERVFAIL".into()).is_no_records());
        assert!(!LookupError::Transport("x".into()).is_no_records());
        assert!(!LookupError::CnameLoop("a -> a".into()).is_no_records());
    }
}
