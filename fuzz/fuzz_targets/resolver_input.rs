//! Fuzzes the parsers of the lookup's inputs: `parse_nameserver` and
//! `parse_query` on any UTF-8 input must not panic, and what they accept
//! must be usable (a nameserver with a non-zero port).
#![no_main]

use caravan_core::resolver;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match resolver::parse_nameserver(text) {
        Ok(addr) => assert_ne!(addr.port(), 0),
        Err(err) => assert_eq!(err.kind(), "invalid_nameserver"),
    }
    match resolver::parse_query(text) {
        Ok(name) => assert!(name.len() <= 255),
        Err(err) => assert_eq!(err.kind(), "invalid_query"),
    }
});
