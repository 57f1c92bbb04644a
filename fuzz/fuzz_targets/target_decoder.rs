//! Fuzzes the SRV-target decoder: `target::decode_addr` and
//! `target::node_host` on any UTF-8 input must not panic, and a decoded
//! address must re-encode to the target's first label.
#![no_main]

use std::net::IpAddr;

use caravan_core::target::{self, NodeHost};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(ip) = target::decode_addr(target) {
        let bytes = match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let first = target.split('.').next().unwrap();
        assert_eq!(first.to_ascii_lowercase(), hex);
        assert_eq!(
            target::node_host(NodeHost::Auto, target, &[]),
            Ok(ip.to_string())
        );
    }
    for mode in [NodeHost::Auto, NodeHost::Target, NodeHost::Ip] {
        let _ = target::node_host(mode, target, &[]);
    }
    let _ = target::needs_resolution(target, &[]);
});
