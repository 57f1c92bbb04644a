//! Property tests: the port rule (`node_name::dist_port`/`listen_port`)
//! against a plain reference rule written here, on random node names.
//!
//! Cases per property: 10 000, or `PROPTEST_CASES` when set (the long run
//! of `script/fuzz --proptest` sets it high).

use caravan_core::node_name::{self, NodeNameError, DEFAULT_PORT};
use proptest::prelude::*;

mod common;
use common::config;

/// The rule, written the obvious way: characters, not bytes; the digits'
/// value computed with saturating arithmetic so any length is fine.
fn reference_dist_port(node: &str) -> Result<u16, &'static str> {
    if node.is_empty() {
        return Err("empty");
    }
    if node.chars().count() > 255 {
        return Err("too_long");
    }
    let (name, host) = match node.find('@') {
        Some(at) => (&node[..at], Some(&node[at + 1..])),
        None => (node, None),
    };
    if name.is_empty() {
        return Err("empty_name");
    }
    if host == Some("") {
        return Err("empty_host");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err("invalid_name");
    }
    let mut digits: Vec<u32> = name
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .map(|c| c.to_digit(10).unwrap())
        .collect();
    if digits.is_empty() {
        return Ok(4370);
    }
    digits.reverse();
    let value = digits.iter().fold(0u128, |acc, d| {
        acc.saturating_mul(10).saturating_add(*d as u128)
    });
    if (1..=65_535).contains(&value) {
        Ok(value as u16)
    } else {
        Err("port_out_of_range")
    }
}

/// `rem-<1..16 hex>-<something>` / `rpc-...` name parts listen on port 0.
fn reference_listen_port(node: &str) -> Result<u16, &'static str> {
    let port = reference_dist_port(node);
    let name = node.split('@').next().unwrap_or("");
    let helper = ["rem-", "rpc-"].iter().any(|prefix| {
        name.starts_with(prefix) && {
            let rest = &name[4..];
            match rest.find('-') {
                Some(dash) => {
                    let random = &rest[..dash];
                    (1..=16).contains(&random.len())
                        && random.chars().all(|c| c.is_ascii_hexdigit())
                        && dash + 1 < rest.len()
                }
                None => false,
            }
        }
    });
    match port {
        // A helper's name must still be a valid name; its port is "any".
        Ok(_) if helper => Ok(0),
        Err("port_out_of_range") if helper => Ok(0),
        other => other,
    }
}

fn check(node: &str) -> Result<(), TestCaseError> {
    let got = node_name::dist_port(node);
    let want = reference_dist_port(node);
    prop_assert_eq!(
        got.as_ref().copied().map_err(NodeNameError::kind),
        want,
        "{:?}",
        node
    );
    if let Err(err) = got {
        // Every error names the value it refuses (but the empty and the
        // too-long ones, which would be useless or huge).
        let message = err.to_string();
        if !matches!(err, NodeNameError::Empty | NodeNameError::TooLong { .. }) {
            prop_assert!(message.contains(&format!("{node:?}")), "{}", message);
        }
    }
    let got = node_name::listen_port(node);
    prop_assert_eq!(
        got.as_ref().copied().map_err(NodeNameError::kind),
        reference_listen_port(node),
        "listen_port {:?}",
        node
    );
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// Names shaped like real node names, with the characters that matter
    /// (digits, '-', '@', '.', '_', spaces, non-ASCII) mixed in.
    #[test]
    fn plausible_names(node in "(rem-|rpc-)?[a-zA-Z_-]{0,6}[0-9]{0,8}(@[a-z0-9.-]{0,12})?") {
        check(&node)?;
    }

    #[test]
    fn names_with_odd_characters(node in "[a-zA-Z0-9_@. é١\u{1F600}\u{0}-]{0,24}") {
        check(&node)?;
    }

    /// Ports around the edges, with leading zeros.
    #[test]
    fn ports_near_the_bounds(
        name in "[a-z]{1,4}-?",
        zeros in 0usize..4,
        port in prop_oneof![0u64..=20, 65_520u64..=65_550, any::<u64>()],
        host in "(@[a-z]{1,4})?",
    ) {
        check(&format!("{name}{}{port}{host}", "0".repeat(zeros)))?;
    }

    /// Around the 255-character limit, counted in characters.
    #[test]
    fn long_names(len in 240usize..270, wide in any::<bool>(), port in "(-[0-9]{1,6})?") {
        let host = if wide { "é".repeat(len) } else { "h".repeat(len) };
        check(&format!("a{port}@{host}"))?;
    }

    /// Anything at all.
    #[test]
    fn arbitrary_strings(node in any::<String>()) {
        check(&node)?;
    }

    #[test]
    fn ok_ports_are_valid_ports(node in any::<String>()) {
        if let Ok(port) = node_name::dist_port(&node) {
            prop_assert!(port >= 1);
        }
    }
}

#[test]
fn the_reference_agrees_with_the_documented_examples() {
    // If the reference were wrong the properties above would prove nothing.
    assert_eq!(reference_dist_port("app-4370@host"), Ok(4370));
    assert_eq!(reference_dist_port("app-name3434@example.net"), Ok(3434));
    assert_eq!(reference_dist_port("app@host"), Ok(DEFAULT_PORT));
    assert_eq!(reference_dist_port("app-04370@h"), Ok(4370));
    assert_eq!(
        reference_dist_port("app-100000000000000000000@h"),
        Err("port_out_of_range")
    );
    assert_eq!(reference_dist_port("app-0@h"), Err("port_out_of_range"));
    assert_eq!(reference_dist_port("a.b@h"), Err("invalid_name"));
    assert_eq!(reference_listen_port("rem-1a2b-app-4370@h"), Ok(0));
    assert_eq!(reference_listen_port("rem-1a2b-app-0@h"), Ok(0));
    assert_eq!(reference_listen_port("rem-1a2b-@h"), Ok(4370));
}
