//! Node-name parsing and the port rule. Pure Rust: no rustler types, so
//! everything here is unit-tested by `cargo test` without a BEAM.
//!
//! The rule (Caravan 1.x compatible): a node's distribution port is the
//! integer just left of the `@` in its node name, or at the end of a name
//! without a host part. A name part with no trailing digits listens on
//! [`DEFAULT_PORT`]. Leading zeros are read as decimal, as 1.x did
//! (`app-04370` is 4370).
//!
//! | node name                   | distribution port |
//! |-----------------------------|-------------------|
//! | `app-4370@host`             | 4370              |
//! | `app-name3434@example.net`  | 3434              |
//! | `app-name-4834@example.net` | 4834              |
//! | `app@host`                  | 4370              |
//! | `app-9000`                  | 9000              |

use std::fmt;

/// The distribution port of a node name without trailing digits: one above
/// epmd's 4369.
pub const DEFAULT_PORT: u16 = 4370;

/// Atoms hold at most 255 characters (OTP system limits), so no node name is
/// longer.
pub const MAX_NODE_NAME_CHARS: usize = 255;

/// A node name split at its first `@`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeName<'a> {
    /// The name part, left of the `@` (`app-4370`).
    pub name: &'a str,
    /// The host part, right of the `@`, if there is one.
    pub host: Option<&'a str>,
}

/// Why a string is not a node name Caravan can derive a port from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeNameError {
    /// The whole node name is empty.
    Empty,
    /// Longer than an atom can be.
    TooLong {
        /// The name's length, in characters.
        chars: usize,
    },
    /// Nothing left of the `@` (`"@host"`).
    EmptyName {
        /// The node name as given.
        node: String,
    },
    /// An `@` with nothing after it (`"app@"`).
    EmptyHost {
        /// The node name as given.
        node: String,
    },
    /// The name part has a character outside `[0-9A-Za-z_-]`.
    InvalidName {
        /// The node name as given.
        node: String,
        /// Its name part (left of the `@`).
        name: String,
    },
    /// The trailing digits are not a port in 1..=65535.
    PortOutOfRange {
        /// The node name as given.
        node: String,
        /// The trailing digits of its name part.
        digits: String,
    },
}

impl NodeNameError {
    /// A short, stable tag for the error kind (used as an atom on the BEAM side).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::TooLong { .. } => "too_long",
            Self::EmptyName { .. } => "empty_name",
            Self::EmptyHost { .. } => "empty_host",
            Self::InvalidName { .. } => "invalid_name",
            Self::PortOutOfRange { .. } => "port_out_of_range",
        }
    }
}

impl fmt::Display for NodeNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => write!(f, "node name is empty; expected name@host, e.g. app-4370@host"),
            Self::TooLong { chars } => write!(
                f,
                "node name is {chars} characters long; an atom holds at most {MAX_NODE_NAME_CHARS}"
            ),
            Self::EmptyName { node } => write!(
                f,
                "node name {node:?} has an empty name part; expected name@host, e.g. app-4370@host"
            ),
            Self::EmptyHost { node } => write!(
                f,
                "node name {node:?} has an empty host part after '@'; expected name@host"
            ),
            Self::InvalidName { node, name } => write!(
                f,
                "node name {node:?} has name part {name:?}; expected only ASCII letters, digits, '_' and '-'"
            ),
            Self::PortOutOfRange { node, digits } => write!(
                f,
                "node name {node:?} ends its name part in {digits}, which is not a port in 1..65535"
            ),
        }
    }
}

impl std::error::Error for NodeNameError {}

/// Splits a node name at its first `@` and checks its shape.
///
/// Errors: [`NodeNameError::Empty`], [`NodeNameError::TooLong`],
/// [`NodeNameError::EmptyName`], [`NodeNameError::EmptyHost`],
/// [`NodeNameError::InvalidName`] (the name part must match
/// `^[0-9A-Za-z_-]+$`, as OTP's `net_kernel` requires). The host part is not
/// checked beyond being non-empty: OTP accepts host names and IP literals.
pub fn parse(node: &str) -> Result<NodeName<'_>, NodeNameError> {
    if node.is_empty() {
        return Err(NodeNameError::Empty);
    }
    // A string is never longer in chars than in bytes: count only when the
    // bytes alone do not settle it.
    if node.len() > MAX_NODE_NAME_CHARS {
        let chars = node.chars().count();
        if chars > MAX_NODE_NAME_CHARS {
            return Err(NodeNameError::TooLong { chars });
        }
    }
    let (name, host) = match node.split_once('@') {
        Some((name, host)) => (name, Some(host)),
        None => (node, None),
    };
    if name.is_empty() {
        return Err(NodeNameError::EmptyName { node: node.into() });
    }
    if host == Some("") {
        return Err(NodeNameError::EmptyHost { node: node.into() });
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(NodeNameError::InvalidName {
            node: node.into(),
            name: name.into(),
        });
    }
    Ok(NodeName { name, host })
}

/// The distribution port of a node name: the integer just left of the `@`
/// (or at the end of a name without host), [`DEFAULT_PORT`] when there is
/// none.
///
/// Errors: every error of [`parse`], and [`NodeNameError::PortOutOfRange`]
/// when the trailing digits are 0 or above 65535 (TCP ports, RFC 793).
///
/// ```
/// use caravan_core::node_name::dist_port;
/// assert_eq!(dist_port("app-4370@host"), Ok(4370));
/// assert_eq!(dist_port("app-name3434@example.net"), Ok(3434));
/// assert_eq!(dist_port("app@host"), Ok(4370));
/// assert!(dist_port("app-70000@host").is_err());
/// ```
pub fn dist_port(node: &str) -> Result<u16, NodeNameError> {
    let parsed = parse(node)?;
    port_of_name_part(node, parsed.name)
}

/// The port a node should *listen* on, for `listen_port_please/2`: the
/// [`dist_port`] of the node, except 0 ("any free port") for the helper nodes
/// of Elixir release scripts (see [`is_release_helper`]), which would
/// otherwise collide with the node they attach to.
pub fn listen_port(node: &str) -> Result<u16, NodeNameError> {
    let parsed = parse(node)?;
    if is_release_helper(parsed.name) {
        return Ok(0);
    }
    port_of_name_part(node, parsed.name)
}

/// True for the name part of a helper node started by an Elixir release
/// script: `rem-<hex>-<node>` (`bin/app remote`) or `rpc-<hex>-<node>`
/// (`bin/app rpc`), where `<hex>` is the script's random suffix.
///
/// ```
/// use caravan_core::node_name::is_release_helper;
/// assert!(is_release_helper("rem-1a2b-app-4370"));
/// assert!(is_release_helper("rpc-ff00-app-4370"));
/// assert!(!is_release_helper("rpc-server-4370"));
/// ```
pub fn is_release_helper(name: &str) -> bool {
    let rest = match name
        .strip_prefix("rem-")
        .or_else(|| name.strip_prefix("rpc-"))
    {
        Some(rest) => rest,
        None => return false,
    };
    match rest.split_once('-') {
        Some((random, target)) => {
            (1..=16).contains(&random.len())
                && random.bytes().all(|b| b.is_ascii_hexdigit())
                && !target.is_empty()
        }
        None => false,
    }
}

fn port_of_name_part(node: &str, name: &str) -> Result<u16, NodeNameError> {
    let digits_start = name
        .bytes()
        .rposition(|b| !b.is_ascii_digit())
        .map_or(0, |i| i + 1);
    let digits = &name[digits_start..];
    if digits.is_empty() {
        return Ok(DEFAULT_PORT);
    }
    let significant = digits.trim_start_matches('0');
    // At most five significant digits fit a port; checking the length first
    // keeps arbitrarily long digit runs from overflowing the parse.
    let port = if significant.len() <= 5 {
        significant.parse::<u32>().unwrap_or(0)
    } else {
        0
    };
    match u16::try_from(port) {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(NodeNameError::PortOutOfRange {
            node: node.into(),
            digits: digits.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caravan_1x_examples() {
        assert_eq!(dist_port("app-4370@host"), Ok(4370));
        assert_eq!(dist_port("app-name3434@example.net"), Ok(3434));
        assert_eq!(dist_port("app-name-4834@example.net"), Ok(4834));
    }

    #[test]
    fn no_trailing_digits_uses_default() {
        assert_eq!(dist_port("app@host"), Ok(DEFAULT_PORT));
        assert_eq!(dist_port("app-name@example.net"), Ok(DEFAULT_PORT));
        assert_eq!(dist_port("app4x@host"), Ok(DEFAULT_PORT));
        assert_eq!(dist_port("app"), Ok(DEFAULT_PORT));
    }

    #[test]
    fn name_without_host() {
        assert_eq!(dist_port("app-9000"), Ok(9000));
        assert_eq!(dist_port("9000"), Ok(9000));
    }

    #[test]
    fn only_digits_left_of_the_first_at_count() {
        assert_eq!(dist_port("app-5000@host-6000"), Ok(5000));
        assert_eq!(dist_port("app@10.0.0.1"), Ok(DEFAULT_PORT));
        assert_eq!(dist_port("a1@b2@c3"), Ok(1));
    }

    #[test]
    fn port_bounds() {
        assert_eq!(dist_port("app-1@h"), Ok(1));
        assert_eq!(dist_port("app-65535@h"), Ok(65535));
        assert_eq!(
            dist_port("app-65536@h"),
            Err(NodeNameError::PortOutOfRange {
                node: "app-65536@h".into(),
                digits: "65536".into()
            })
        );
        assert_eq!(
            dist_port("app-0@h").unwrap_err().kind(),
            "port_out_of_range"
        );
        assert_eq!(
            dist_port("app-000@h").unwrap_err().kind(),
            "port_out_of_range"
        );
        let huge = "app-100000000000000000000@h"; // 10^20 overflows u64
        assert_eq!(dist_port(huge).unwrap_err().kind(), "port_out_of_range");
        let very_long = format!("app-{}@h", "9".repeat(200));
        assert_eq!(
            dist_port(&very_long).unwrap_err().kind(),
            "port_out_of_range"
        );
    }

    #[test]
    fn leading_zeros_read_as_decimal_like_1x() {
        assert_eq!(dist_port("app-04370@h"), Ok(4370));
        assert_eq!(dist_port("app-0000000000000080@h"), Ok(80));
    }

    #[test]
    fn bad_shapes() {
        assert_eq!(dist_port(""), Err(NodeNameError::Empty));
        assert_eq!(dist_port("@host").unwrap_err().kind(), "empty_name");
        assert_eq!(dist_port("app@").unwrap_err().kind(), "empty_host");
        assert_eq!(dist_port("app 1@h").unwrap_err().kind(), "invalid_name");
        assert_eq!(dist_port("app.1@h").unwrap_err().kind(), "invalid_name");
        assert_eq!(dist_port("äpp-1@h").unwrap_err().kind(), "invalid_name");
        assert_eq!(dist_port("app-١٢@h").unwrap_err().kind(), "invalid_name");
    }

    #[test]
    fn length_limit_counts_characters() {
        let ok = format!("a@{}", "h".repeat(MAX_NODE_NAME_CHARS - 2));
        assert_eq!(dist_port(&ok), Ok(DEFAULT_PORT));
        let too_long = format!("a@{}", "h".repeat(MAX_NODE_NAME_CHARS - 1));
        assert_eq!(
            dist_port(&too_long),
            Err(NodeNameError::TooLong {
                chars: MAX_NODE_NAME_CHARS + 1
            })
        );
    }

    #[test]
    fn errors_name_the_value_and_the_expectation() {
        let msg = dist_port("app-99999@h").unwrap_err().to_string();
        assert!(
            msg.contains("app-99999@h") && msg.contains("1..65535"),
            "{msg}"
        );
        let msg = dist_port("a.b@h").unwrap_err().to_string();
        assert!(msg.contains("\"a.b\"") && msg.contains("letters"), "{msg}");
    }

    #[test]
    fn release_helpers_listen_on_any_port() {
        assert_eq!(listen_port("rem-1a2b-app-4370@host"), Ok(0));
        assert_eq!(listen_port("rpc-00ff-app-4370@host"), Ok(0));
        // The node itself and look-alikes keep the port from their name.
        assert_eq!(listen_port("app-4370@host"), Ok(4370));
        assert_eq!(listen_port("rpc-server-4370@host"), Ok(4370));
        assert_eq!(listen_port("rem-4370@host"), Ok(4370));
        assert_eq!(listen_port("rem-1a2b-@host"), Ok(4370));
        // dist_port is the plain rule: a helper's derived port, for port_please.
        assert_eq!(dist_port("rem-1a2b-app-4370@host"), Ok(4370));
        // A helper's name still has to be a valid name.
        assert!(listen_port("rem-1a2b-app 1@host").is_err());
    }

    #[test]
    fn parse_splits_at_first_at() {
        assert_eq!(
            parse("app-1@web1.node.dc1.consul"),
            Ok(NodeName {
                name: "app-1",
                host: Some("web1.node.dc1.consul")
            })
        );
        assert_eq!(
            parse("app-1"),
            Ok(NodeName {
                name: "app-1",
                host: None
            })
        );
    }
}
