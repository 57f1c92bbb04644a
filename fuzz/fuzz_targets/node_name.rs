//! Fuzzes the port rule: `node_name::dist_port` and `listen_port` on any
//! UTF-8 input must not panic, and every answer must agree with the rule's
//! definition (checked here independently of the implementation).
#![no_main]

use caravan_core::node_name::{self, DEFAULT_PORT};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(node) = std::str::from_utf8(data) else {
        return;
    };
    let port = node_name::dist_port(node);
    let listen = node_name::listen_port(node);
    match &port {
        Ok(port) => {
            assert!(*port >= 1);
            assert!(node.chars().count() <= 255);
            let name = node.split('@').next().unwrap();
            assert!(!name.is_empty());
            assert!(name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
            let digits = &name[name.trim_end_matches(|c: char| c.is_ascii_digit()).len()..];
            if digits.is_empty() {
                assert_eq!(*port, DEFAULT_PORT);
            } else {
                assert_eq!(digits.trim_start_matches('0'), port.to_string());
            }
            // A valid name always has a listen port: its own or 0.
            assert!(matches!(listen, Ok(p) if p == *port || p == 0));
        }
        Err(err) => {
            // Errors render, and have a stable kind.
            assert!(!err.to_string().is_empty());
            assert!(!err.kind().is_empty());
        }
    }
});
