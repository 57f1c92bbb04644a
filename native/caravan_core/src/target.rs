//! SRV targets -> the host part of node names.
//!
//! An SRV record gives a port and a target host name; the strategy builds
//! the node name `<node_sname>-<port>@<host>`. Which `host` matches the name
//! the peer was started with depends on the platform:
//!
//! - Consul answers `<node>.node.<dc>.consul` for services registered
//!   without an address, and `<hex-ip>.addr.<dc>.consul` for services
//!   registered with one (Consul 1.7 to 1.18: every Nomad job). No node is
//!   named after an `.addr.` name, so such targets are decoded to their IP.
//! - Kubernetes answers `<pod>.<svc>.<ns>.svc.cluster.local` (StatefulSet)
//!   or `<dashed-ip>.<svc>...` (Deployment), with the pod IPs in the
//!   additional section.
//!
//! [`NodeHost`] is the operator's choice; [`node_host`] applies it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// How the host part of a node name is chosen from an SRV record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NodeHost {
    /// The target as given, except Consul `.addr.` targets, which become
    /// their IP address (no node is named after an `.addr.` name).
    #[default]
    Auto,
    /// The target exactly as given (Caravan 1.x).
    Target,
    /// The target's IP address: decoded from an `.addr.` target, else from
    /// the answer's additional section, else resolved (A, then AAAA).
    Ip,
}

impl NodeHost {
    /// The option's name as written in config (`"auto"`, `"target"`, `"ip"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Target => "target",
            Self::Ip => "ip",
        }
    }
}

impl FromStr for NodeHost {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "auto" => Ok(Self::Auto),
            "target" => Ok(Self::Target),
            "ip" => Ok(Self::Ip),
            other => Err(format!(
                "invalid node_host {other:?}; expected \"auto\", \"target\" or \"ip\""
            )),
        }
    }
}

/// Why a record has no host part under [`NodeHost::Ip`]: its target has no
/// address. A reason, not a message: the sentence a user reads is written
/// once, on the BEAM side (`Caravan.DnsClient.no_address/1`), which also
/// words it for the `:inet_res` client that never runs this code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoAddress {
    /// The SRV target that has no address.
    pub target: String,
}

/// Decodes a Consul `.addr.` target: the first label is the address in hex
/// (8 digits for IPv4, 32 for IPv6) and the second label is `addr`; the
/// rest (datacenter, domain) is not checked, since the Consul domain is
/// configurable. Returns `None` for any other name.
///
/// Source: Consul's DNS interface docs ("Service lookups ... when the
/// service has an address, the target is `<hex>.addr.<dc>.consul`").
///
/// ```
/// use caravan_core::target::decode_addr;
/// assert_eq!(decode_addr("0a000001.addr.dc1.consul"), Some("10.0.0.1".parse().unwrap()));
/// assert_eq!(
///     decode_addr("fd000000000000000000000000000001.addr.dc1.consul"),
///     Some("fd00::1".parse().unwrap())
/// );
/// assert_eq!(decode_addr("web1.node.dc1.consul"), None);
/// ```
pub fn decode_addr(target: &str) -> Option<IpAddr> {
    let mut labels = target.split('.');
    let hex = labels.next()?;
    if !labels.next()?.eq_ignore_ascii_case("addr") || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    match hex.len() {
        8 => u32::from_str_radix(hex, 16)
            .ok()
            .map(|bits| IpAddr::V4(Ipv4Addr::from(bits))),
        32 => u128::from_str_radix(hex, 16)
            .ok()
            .map(|bits| IpAddr::V6(Ipv6Addr::from(bits))),
        _ => None,
    }
}

/// True when [`NodeHost::Ip`] would have to resolve `target`: it is not an
/// `.addr.` name, not an IP literal and has no address in `addresses`.
pub fn needs_resolution(target: &str, addresses: &[IpAddr]) -> bool {
    addresses.is_empty() && decode_addr(target).is_none() && target.parse::<IpAddr>().is_err()
}

/// The host part of the node name for an SRV `target` under `mode`, given
/// the `addresses` known for it (additional section or resolved).
///
/// IP addresses are written in their canonical text form (RFC 5952 for
/// IPv6: `fd00::1`), which is how a node started as `app-4370@fd00::1`
/// must be named. Among several addresses, the lowest IPv4 one wins, then
/// the lowest IPv6 one, so every node builds the same name.
///
/// Errors: [`NoAddress`] under [`NodeHost::Ip`] when there is no address.
///
/// ```
/// use caravan_core::target::{node_host, NodeHost};
/// let v4 = ["10.0.0.9".parse().unwrap()];
/// assert_eq!(node_host(NodeHost::Auto, "web1.node.dc1.consul", &v4).unwrap(), "web1.node.dc1.consul");
/// assert_eq!(node_host(NodeHost::Ip, "web1.node.dc1.consul", &v4).unwrap(), "10.0.0.9");
/// assert_eq!(node_host(NodeHost::Auto, "0a000001.addr.dc1.consul", &[]).unwrap(), "10.0.0.1");
/// assert_eq!(node_host(NodeHost::Target, "0a000001.addr.dc1.consul", &[]).unwrap(), "0a000001.addr.dc1.consul");
/// assert!(node_host(NodeHost::Ip, "web1.node.dc1.consul", &[]).is_err());
/// ```
pub fn node_host(mode: NodeHost, target: &str, addresses: &[IpAddr]) -> Result<String, NoAddress> {
    match mode {
        NodeHost::Target => Ok(target.to_string()),
        NodeHost::Auto => Ok(decode_addr(target)
            .map(|ip| ip.to_string())
            .unwrap_or_else(|| target.to_string())),
        NodeHost::Ip => decode_addr(target)
            .or_else(|| target.parse::<IpAddr>().ok())
            .or_else(|| preferred(addresses))
            .map(|ip| ip.to_string())
            .ok_or_else(|| NoAddress {
                target: target.to_string(),
            }),
    }
}

fn preferred(addresses: &[IpAddr]) -> Option<IpAddr> {
    let v4 = addresses.iter().filter(|ip| ip.is_ipv4()).min();
    v4.or_else(|| addresses.iter().min()).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn addr_targets_decode_to_ipv4_and_ipv6() {
        assert_eq!(
            decode_addr("c0a80a05.addr.dc1.consul"),
            Some(ip("192.168.10.5"))
        );
        assert_eq!(
            decode_addr("C0A80A05.ADDR.dc1.consul"),
            Some(ip("192.168.10.5"))
        );
        assert_eq!(decode_addr("7f000001.addr.consul"), Some(ip("127.0.0.1")));
        assert_eq!(
            decode_addr("20010db8000000000000000000000001.addr.east.consul"),
            Some(ip("2001:db8::1"))
        );
        // A custom Consul domain is fine: only the first two labels count.
        assert_eq!(
            decode_addr("0a000001.addr.dc1.example"),
            Some(ip("10.0.0.1"))
        );
    }

    #[test]
    fn other_names_are_not_addr_targets() {
        for name in [
            "web1.node.dc1.consul",
            "0a000001.node.dc1.consul",
            "0a00001.addr.dc1.consul",
            "0a0000011.addr.dc1.consul",
            "0a00000g.addr.dc1.consul",
            "+a000001.addr.dc1.consul",
            "addr.dc1.consul",
            "0a000001",
            "",
            ".addr.",
            "20010db800000000000000000000001.addr.dc1.consul",
            "10-0-0-1.app.default.svc.cluster.local",
        ] {
            assert_eq!(decode_addr(name), None, "{name:?}");
        }
    }

    #[test]
    fn hosts_by_mode() {
        let target = "web-0.app.default.svc.cluster.local";
        let addrs = [ip("fd00::7"), ip("10.1.0.7"), ip("10.1.0.3")];
        assert_eq!(node_host(NodeHost::Target, target, &addrs).unwrap(), target);
        assert_eq!(node_host(NodeHost::Auto, target, &addrs).unwrap(), target);
        assert_eq!(node_host(NodeHost::Ip, target, &addrs).unwrap(), "10.1.0.3");
        assert_eq!(
            node_host(NodeHost::Ip, target, &[ip("fd00::7"), ip("fd00::2")]).unwrap(),
            "fd00::2"
        );
        // An .addr. target wins over the additional section.
        assert_eq!(
            node_host(NodeHost::Ip, "0a000001.addr.dc1.consul", &addrs).unwrap(),
            "10.0.0.1"
        );
        // IP literal targets need no lookup.
        assert_eq!(
            node_host(NodeHost::Ip, "10.9.9.9", &[]).unwrap(),
            "10.9.9.9"
        );
        assert_eq!(
            node_host(NodeHost::Ip, target, &[]),
            Err(NoAddress {
                target: target.to_string()
            })
        );
    }

    #[test]
    fn resolution_is_needed_only_without_any_address() {
        assert!(needs_resolution("web1.node.dc1.consul", &[]));
        assert!(!needs_resolution("web1.node.dc1.consul", &[ip("10.0.0.1")]));
        assert!(!needs_resolution("0a000001.addr.dc1.consul", &[]));
        assert!(!needs_resolution("::1", &[]));
    }

    #[test]
    fn modes_parse_from_their_names() {
        for mode in [NodeHost::Auto, NodeHost::Target, NodeHost::Ip] {
            assert_eq!(mode.as_str().parse::<NodeHost>(), Ok(mode));
        }
        assert!("IP".parse::<NodeHost>().unwrap_err().contains("\"IP\""));
    }
}
