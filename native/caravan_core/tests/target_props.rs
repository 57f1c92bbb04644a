//! Property tests: the Consul `.addr.` target decoder
//! (`target::decode_addr`) and `target::node_host` against a plain
//! reference written here, on random targets.
//!
//! Cases per property: 10 000, or `PROPTEST_CASES` when set.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use caravan_core::target::{self, NodeHost};
use proptest::prelude::*;

mod common;
use common::config;

/// The decoder, the obvious way: the first label read two hex digits at a
/// time into 4 or 16 bytes, the second label `addr` in any case.
fn reference_decode(target: &str) -> Option<IpAddr> {
    let labels: Vec<&str> = target.split('.').collect();
    if labels.len() < 2 || !labels[1].eq_ignore_ascii_case("addr") {
        return None;
    }
    let hex = labels[0].as_bytes();
    if hex.len() != 8 && hex.len() != 32 {
        return None;
    }
    let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut bytes = Vec::new();
    for pair in hex.chunks(2) {
        bytes.push(digit(pair[0])? * 16 + digit(pair[1])?);
    }
    Some(match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        _ => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).unwrap())),
    })
}

fn hex_of(ip: IpAddr, upper: bool) -> String {
    let bytes = match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    if upper {
        hex.to_uppercase()
    } else {
        hex
    }
}

fn any_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        any::<[u8; 16]>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b))),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Every address, encoded the way Consul does, decodes back to itself.
    #[test]
    fn addr_targets_round_trip(
        ip in any_ip(),
        upper in any::<bool>(),
        addr in "(addr|ADDR|Addr)",
        rest in "(\\.[a-z0-9-]{1,8}){0,3}",
    ) {
        let target = format!("{}.{addr}{rest}", hex_of(ip, upper));
        prop_assert_eq!(target::decode_addr(&target), Some(ip));
        prop_assert_eq!(target::node_host(NodeHost::Auto, &target, &[]), Ok(ip.to_string()));
        prop_assert_eq!(target::node_host(NodeHost::Ip, &target, &[]), Ok(ip.to_string()));
        prop_assert_eq!(target::node_host(NodeHost::Target, &target, &[]), Ok(target.clone()));
    }

    /// Near misses: hex-ish first labels of other lengths and characters.
    #[test]
    fn near_misses_agree_with_the_reference(
        hex in "[0-9a-fA-Fg+ -]{6,34}",
        addr in "(addr|adr|node|ADDR|)",
        rest in "(\\.[a-z0-9]{1,4}){0,2}",
    ) {
        let target = format!("{hex}.{addr}{rest}");
        prop_assert_eq!(target::decode_addr(&target), reference_decode(&target), "{}", target);
    }

    /// Anything at all.
    #[test]
    fn arbitrary_targets_agree_with_the_reference(target in any::<String>()) {
        prop_assert_eq!(target::decode_addr(&target), reference_decode(&target));
    }

    /// Under `ip`, among several known addresses, the lowest IPv4 one wins,
    /// then the lowest IPv6 one; without any, a non-`.addr.` target is an error.
    #[test]
    fn ip_mode_picks_the_same_address_everywhere(
        name in "[a-z]{1,8}\\.node\\.dc1\\.consul",
        mut addresses in proptest::collection::vec(any_ip(), 0..6),
    ) {
        let got = target::node_host(NodeHost::Ip, &name, &addresses);
        addresses.sort_by_key(|ip| (ip.is_ipv6(), *ip));
        match addresses.first() {
            Some(ip) => prop_assert_eq!(got, Ok(ip.to_string())),
            None => prop_assert!(got.is_err()),
        }
        prop_assert_eq!(target::needs_resolution(&name, &addresses), addresses.is_empty());
    }
}
