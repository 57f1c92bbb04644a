//! Resolver config -> hickory resolver; SRV lookup -> plain Rust records.
//!
//! Nothing here knows about rustler: the NIF layer decodes terms into a
//! [`LookupConfig`], awaits [`lookup_srv`] on the runtime and encodes the
//! [`SrvRecord`]s or the [`LookupError`].

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolverConfig as HickoryConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::rdata::CNAME;
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use hickory_resolver::TokioResolver;
use once_cell::sync::Lazy;
use parking_lot::Mutex;
use tracing::instrument::WithSubscriber;

use crate::discovery::{self, Transport};
use crate::target::{self, NoAddress, NodeHost};

/// The DNS port (RFC 1035), used for a nameserver given without a port.
pub const DNS_PORT: u16 = 53;

/// EDNS0 UDP payload size advertised in queries (RFC 6891). 1232 bytes is
/// the DNS Flag Day 2020 recommendation: large enough for dozens of SRV
/// records, small enough to avoid IP fragmentation. Larger answers come back
/// truncated and are retried over TCP.
pub const EDNS_PAYLOAD_LEN: u16 = 1232;

/// Longest CNAME chain [`lookup_srv`] walks when an answer has no SRV
/// records; longer counts as a loop. hickory itself follows 8.
pub const MAX_CNAME_HOPS: usize = 8;

/// Where and how long to ask. Built by the NIF layer from the options
/// `Caravan.DNS` validated (the defaults live there, once).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LookupConfig {
    /// Nameservers to ask, in order. Empty means the system's
    /// configuration (`/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
    /// Bound on the whole lookup, every retry and transport included.
    pub timeout: Duration,
}

/// One SRV answer record (RFC 2782), target without its trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
    /// The target's addresses: from the answer's additional section (A and
    /// AAAA records of the target), or resolved when [`NodeHost::Ip`] asked
    /// for it and the additional section had none.
    pub addresses: Vec<IpAddr>,
    /// The host part of the node name under the lookup's [`NodeHost`]
    /// (see [`target::node_host`]); `Err` when `NodeHost::Ip` found no address.
    pub host: Result<String, NoAddress>,
    /// The transport that gave the answer this record came in.
    pub transport: Transport,
}

/// The address family of a host lookup (`:inet` / `:inet6` on the BEAM side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// A records.
    V4,
    /// AAAA records.
    V6,
}

/// Why a lookup gave no records.
///
/// [`LookupError::NxDomain`] and [`LookupError::NoData`] are authoritative
/// "no such records"; every other variant means the answer is *unknown* and
/// must never be read as "no peers".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// The name does not exist (RCODE 3, NXDOMAIN).
    NxDomain,
    /// The name exists but has no SRV records (NOERROR with no answer).
    NoData,
    /// No answer within the time bound.
    Timeout,
    /// The server answered with an error code (SERVFAIL, REFUSED, ...).
    ServerFailure(String),
    /// The name leads into a CNAME loop (or a chain longer than
    /// [`MAX_CNAME_HOPS`]): a broken zone, not an answer.
    CnameLoop(String),
    /// The query is not a valid domain name.
    InvalidQuery(String),
    /// A nameserver string is not `IP` or `IP:PORT`.
    InvalidNameserver(String),
    /// The resolver could not be set up (unreadable resolv.conf, no nameservers).
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

/// Parses a nameserver string: `"10.0.0.1"` (port 53), `"127.0.0.1:8600"`,
/// `"::1"` or `"[::1]:8600"`.
///
/// ```
/// use caravan_core::resolver::parse_nameserver;
/// assert_eq!(parse_nameserver("127.0.0.1:8600").unwrap().port(), 8600);
/// assert_eq!(parse_nameserver("::1").unwrap().port(), 53);
/// assert!(parse_nameserver("consul:8600").is_err());
/// ```
pub fn parse_nameserver(text: &str) -> Result<SocketAddr, LookupError> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        if addr.port() != 0 {
            return Ok(addr);
        }
    } else if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DNS_PORT));
    }
    Err(LookupError::InvalidNameserver(text.to_string()))
}

/// Parses a query into a DNS name, rejecting what is not one.
pub fn parse_query(query: &str) -> Result<Name, LookupError> {
    if query.trim().is_empty() {
        return Err(LookupError::InvalidQuery("the query is empty".into()));
    }
    Name::from_utf8(query).map_err(|e| LookupError::InvalidQuery(format!("{query:?}: {e}")))
}

/// Looks up the SRV records of `name` (parsed by [`parse_query`]) and
/// chooses each record's node-name host under `node_host`.
///
/// The whole lookup, retries, TCP fallback and the address lookups of
/// [`NodeHost::Ip`] included, ends within `config.timeout`. Answers are not
/// cached: every call asks the nameserver, so membership changes are seen
/// at the next poll.
///
/// The query goes out over UDP with EDNS0 and is confirmed over a fresh
/// TCP connection only when the answer may have been trimmed
/// ([`crate::trim`], [`crate::discovery`]); each record says which
/// transport gave it. CNAMEs are followed up to [`MAX_CNAME_HOPS`]; a loop
/// is [`LookupError::CnameLoop`], never NODATA. With no configured
/// nameservers, the ones in `/etc/resolv.conf` are asked.
pub async fn lookup_srv(
    config: &LookupConfig,
    name: Name,
    node_host: NodeHost,
) -> Result<Vec<SrvRecord>, LookupError> {
    tracing::debug!(query = %name, nameservers = ?config.nameservers, timeout = ?config.timeout, ?node_host, "SRV lookup");
    let result = tokio::time::timeout(
        config.timeout,
        lookup_srv_unbounded(config, name, node_host),
    )
    .await
    .map_err(|_| LookupError::Timeout)
    .and_then(|result| result);
    match &result {
        Ok(records) => tracing::debug!(records = records.len(), "SRV lookup answered"),
        Err(err) => tracing::debug!(kind = err.kind(), "SRV lookup failed: {err}"),
    }
    result
}

async fn lookup_srv_unbounded(
    config: &LookupConfig,
    name: Name,
    node_host: NodeHost,
) -> Result<Vec<SrvRecord>, LookupError> {
    let servers = discovery_servers(config)?;
    let answer = srv_answer(config, &servers, name).await?;
    let transport = answer.transport;
    let message = &answer.message;
    // (target, addresses) per SRV record, then the records themselves once
    // every address :ip needs is known.
    let srvs: Vec<_> = message
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::SRV(srv) => Some(srv),
            _ => None,
        })
        .collect();
    if srvs.is_empty() {
        return Err(LookupError::NoData);
    }
    let mut targets: Vec<(String, Vec<IpAddr>)> = srvs
        .iter()
        .map(|srv| {
            (
                target_name(&srv.target),
                addresses_of(&srv.target, &message.additionals),
            )
        })
        .collect();
    tracing::debug!(
        srv = srvs.len(),
        additional = message.additionals.len(),
        transport = transport.as_str(),
        doubt = answer.doubt.map(|d| d.as_str()),
        "SRV answer: records and additional records"
    );
    if node_host == NodeHost::Ip {
        let resolver = resolver_for(config)?;
        resolve_missing(&resolver, &mut targets).await;
    }
    let records = srvs
        .into_iter()
        .zip(targets)
        .map(|(srv, (target, addresses))| SrvRecord {
            priority: srv.priority,
            weight: srv.weight,
            port: srv.port,
            host: target::node_host(node_host, &target, &addresses),
            target,
            addresses,
            transport,
        })
        .collect();
    Ok(records)
}

/// The nameservers SRV discovery asks: the configured ones, else the
/// system's (`/etc/resolv.conf`).
fn discovery_servers(config: &LookupConfig) -> Result<Vec<SocketAddr>, LookupError> {
    if !config.nameservers.is_empty() {
        return Ok(config.nameservers.clone());
    }
    let (system, _opts) = hickory_resolver::system_conf::read_system_conf()
        .map_err(|e| LookupError::Config(format!("cannot read the system's resolv.conf: {e}")))?;
    let mut servers: Vec<SocketAddr> = Vec::new();
    for ns in system.name_servers() {
        let port = ns.connections.first().map_or(DNS_PORT, |c| c.port);
        let addr = SocketAddr::new(ns.ip, port);
        if !servers.contains(&addr) {
            servers.push(addr);
        }
    }
    if servers.is_empty() {
        return Err(LookupError::Config(
            "no nameservers: none configured and none in /etc/resolv.conf".into(),
        ));
    }
    Ok(servers)
}

/// The SRV answer for `name`, following CNAMEs (up to [`MAX_CNAME_HOPS`],
/// loops are [`LookupError::CnameLoop`]). Each nameserver is asked in turn
/// until one answers; NXDOMAIN and NODATA are answers, so they end the
/// search.
async fn srv_answer(
    config: &LookupConfig,
    servers: &[SocketAddr],
    name: Name,
) -> Result<discovery::Answer, LookupError> {
    let tries = discovery::Tries::for_servers(config.timeout, servers.len());
    let mut chain = vec![name];
    loop {
        let current = chain
            .last()
            .expect("the chain starts with the name")
            .clone();
        let answer = ask_each(servers, &current, tries).await?;
        if answer.message.metadata.response_code == ResponseCode::NXDomain {
            return Err(LookupError::NxDomain);
        }
        let has_srv = answer
            .message
            .answers
            .iter()
            .any(|r| r.record_type() == RecordType::SRV);
        if has_srv {
            return Ok(answer);
        }
        // Walk the CNAMEs this answer holds, then ask for where they end.
        let mut followed = false;
        while let Some(next) = cname_of(&answer.message.answers, chain.last().expect("non-empty")) {
            let looped = chain.iter().any(|seen| seen.eq_ignore_root(&next));
            chain.push(next);
            followed = true;
            if looped || chain.len() > MAX_CNAME_HOPS + 1 {
                let names: Vec<String> = chain.iter().map(target_name).collect();
                return Err(LookupError::CnameLoop(names.join(" -> ")));
            }
        }
        if !followed {
            return Err(LookupError::NoData);
        }
    }
}

/// The CNAME target of `owner` among `answers`.
fn cname_of(answers: &[Record], owner: &Name) -> Option<Name> {
    answers.iter().find_map(|record| match &record.data {
        RData::CNAME(CNAME(target)) if record.name.eq_ignore_root(owner) => Some(target.clone()),
        _ => None,
    })
}

/// Asks each nameserver in turn; the first answer wins. When none
/// answers, the last failure is returned (transport and server-failure
/// messages name the nameserver; the BEAM side adds the list asked).
async fn ask_each(
    servers: &[SocketAddr],
    name: &Name,
    tries: discovery::Tries,
) -> Result<discovery::Answer, LookupError> {
    let mut last = LookupError::Config("no nameservers to ask".into());
    for server in servers {
        match discovery::query(*server, name, RecordType::SRV, tries).await {
            Ok(answer) => return Ok(answer),
            Err(err) => {
                tracing::debug!(%server, %name, error = %err, "nameserver failed");
                last = err;
            }
        }
    }
    Err(last)
}

/// The A/AAAA records for `target` in an answer's additional section.
fn addresses_of(target: &Name, additionals: &[Record]) -> Vec<IpAddr> {
    additionals
        .iter()
        .filter(|record| record.name == *target)
        .filter_map(|record| ip_of(&record.data))
        .collect()
}

/// The address of an A or AAAA record.
fn ip_of(data: &RData) -> Option<IpAddr> {
    match data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
        _ => None,
    }
}

/// Resolves the targets (`(target, addresses)`) that have no address yet,
/// each distinct target once, all at the same time. A target that does not
/// resolve keeps no address (its record's host is then a [`NoAddress`]
/// error).
async fn resolve_missing(resolver: &TokioResolver, targets: &mut [(String, Vec<IpAddr>)]) {
    let mut pending = tokio::task::JoinSet::new();
    let mut asked = std::collections::HashSet::new();
    for (target, addresses) in targets.iter() {
        if target::needs_resolution(target, addresses) && asked.insert(target.clone()) {
            let resolver = resolver.clone();
            let target = target.clone();
            tracing::debug!(%target, "no address in the answer; resolving");
            // The lookup's tracing subscriber (if any) follows the task.
            pending.spawn(
                async move {
                    let found = resolve_any(&resolver, &target).await.unwrap_or_default();
                    (target, found)
                }
                .with_current_subscriber(),
            );
        }
    }
    let mut found = HashMap::new();
    while let Some(joined) = pending.join_next().await {
        if let Ok((target, addresses)) = joined {
            found.insert(target, addresses);
        }
    }
    for (target, addresses) in targets.iter_mut() {
        if let Some(resolved) = found.get(target) {
            addresses.clone_from(resolved);
        }
    }
}

/// A records of `host`, else its AAAA records.
async fn resolve_any(resolver: &TokioResolver, host: &str) -> Result<Vec<IpAddr>, LookupError> {
    let name = parse_query(host)?;
    match resolve_family(resolver, name.clone(), Family::V4).await {
        Ok(found) => Ok(found),
        Err(_) => resolve_family(resolver, name, Family::V6).await,
    }
}

async fn resolve_family(
    resolver: &TokioResolver,
    name: Name,
    family: Family,
) -> Result<Vec<IpAddr>, LookupError> {
    let record_type = match family {
        Family::V4 => RecordType::A,
        Family::V6 => RecordType::AAAA,
    };
    let lookup = resolver.lookup(name, record_type).await.map_err(classify)?;
    // The answer may also hold the CNAMEs that led to the address.
    let found: Vec<IpAddr> = lookup
        .answers()
        .iter()
        .filter_map(|r| ip_of(&r.data))
        .collect();
    if found.is_empty() {
        return Err(LookupError::NoData);
    }
    Ok(found)
}

/// Looks up the addresses of `host` in `family` through the configured
/// nameservers (the epmd module's `address_please/3` uses it). An IP
/// literal of that family is returned without a lookup.
///
/// Ends within `config.timeout`. Errors as for [`lookup_srv`]; `NoData`
/// when the name has no records of that family.
pub async fn lookup_host(
    config: &LookupConfig,
    host: &str,
    family: Family,
) -> Result<Vec<IpAddr>, LookupError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return match (ip, family) {
            (IpAddr::V4(_), Family::V4) | (IpAddr::V6(_), Family::V6) => Ok(vec![ip]),
            _ => Err(LookupError::NoData),
        };
    }
    let name = parse_query(host)?;
    let resolver = resolver_for(config)?;
    tokio::time::timeout(config.timeout, resolve_family(&resolver, name, family))
        .await
        .map_err(|_| LookupError::Timeout)?
}

/// A target as a host name: ASCII (punycode for IDNs), no trailing dot.
fn target_name(name: &Name) -> String {
    let mut text = name.to_ascii();
    if text.len() > 1 && text.ends_with('.') {
        text.pop();
    }
    text
}

/// Maps hickory's error to Caravan's: NXDOMAIN and NODATA stay distinct from
/// failures, so callers never read "unknown" as "no peers".
pub fn classify(err: NetError) -> LookupError {
    if err.is_nx_domain() {
        return LookupError::NxDomain;
    }
    if err.is_no_records_found() {
        return LookupError::NoData;
    }
    match err {
        NetError::Timeout => LookupError::Timeout,
        NetError::Dns(DnsError::ResponseCode(code)) => LookupError::ServerFailure(code.to_string()),
        other => LookupError::Transport(other.to_string()),
    }
}

/// Resolvers are built once per config and shared: building one reads
/// resolv.conf and sets up connection pools. The map is bounded so a caller
/// cycling through configs cannot grow it without limit.
const MAX_RESOLVERS: usize = 64;
static RESOLVERS: Lazy<Mutex<HashMap<LookupConfig, TokioResolver>>> =
    Lazy::new(|| Mutex::new(HashMap::new()));

fn resolver_for(config: &LookupConfig) -> Result<TokioResolver, LookupError> {
    if let Some(resolver) = RESOLVERS.lock().get(config) {
        return Ok(resolver.clone());
    }
    let resolver = build_resolver(config)?;
    let mut resolvers = RESOLVERS.lock();
    if resolvers.len() >= MAX_RESOLVERS {
        resolvers.clear();
    }
    Ok(resolvers.entry(config.clone()).or_insert(resolver).clone())
}

/// Builds a hickory resolver for discovery: EDNS0 on with
/// [`EDNS_PAYLOAD_LEN`], UDP then TCP to each nameserver (truncated answers
/// are retried over TCP), no answer cache, and per-try timeouts that fit the
/// total bound.
pub fn build_resolver(config: &LookupConfig) -> Result<TokioResolver, LookupError> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = if config.nameservers.is_empty() {
        TokioResolver::builder(provider).map_err(|e| {
            LookupError::Config(format!("cannot read the system's resolv.conf: {e}"))
        })?
    } else {
        let servers = config
            .nameservers
            .iter()
            .map(|addr| {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
            })
            .collect();
        TokioResolver::builder_with_config(HickoryConfig::from_name_servers(servers), provider)
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    opts.edns0 = true;
    opts.edns_payload_len = EDNS_PAYLOAD_LEN;
    opts.cache_size = 0;
    opts.preserve_intermediates = false;
    opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
    // One retry within the bound; the outer timeout in `lookup_srv` is the
    // hard limit either way.
    opts.attempts = 1;
    opts.timeout = (config.timeout / 2).max(Duration::from_millis(50));
    builder
        .build()
        .map_err(|e| LookupError::Config(format!("cannot build the resolver: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameserver_forms() {
        assert_eq!(
            parse_nameserver("127.0.0.1:8600"),
            Ok("127.0.0.1:8600".parse().unwrap())
        );
        assert_eq!(
            parse_nameserver("10.0.0.1"),
            Ok("10.0.0.1:53".parse().unwrap())
        );
        assert_eq!(parse_nameserver("::1"), Ok("[::1]:53".parse().unwrap()));
        assert_eq!(
            parse_nameserver("[::1]:8600"),
            Ok("[::1]:8600".parse().unwrap())
        );
        assert_eq!(
            parse_nameserver(" 127.0.0.1:53 "),
            Ok("127.0.0.1:53".parse().unwrap())
        );
    }

    #[test]
    fn bad_nameservers() {
        for bad in [
            "",
            "consul",
            "consul:8600",
            "127.0.0.1:0",
            "127.0.0.1:70000",
            "1.2.3",
        ] {
            assert_eq!(
                parse_nameserver(bad).unwrap_err().kind(),
                "invalid_nameserver",
                "{bad:?}"
            );
        }
        let msg = parse_nameserver("consul:8600").unwrap_err().to_string();
        assert!(
            msg.contains("consul:8600") && msg.contains("IP:PORT"),
            "{msg}"
        );
    }

    #[test]
    fn queries() {
        assert!(parse_query("_app._tcp.service.consul").is_ok());
        assert!(parse_query("app.service.dc1.consul.").is_ok());
        assert_eq!(parse_query("").unwrap_err().kind(), "invalid_query");
        assert_eq!(parse_query("  ").unwrap_err().kind(), "invalid_query");
        let too_long_label = format!("{}.consul", "a".repeat(64));
        assert_eq!(
            parse_query(&too_long_label).unwrap_err().kind(),
            "invalid_query"
        );
    }

    #[test]
    fn target_names_lose_the_root_dot() {
        let name = Name::from_ascii("web1.node.dc1.consul.").unwrap();
        assert_eq!(target_name(&name), "web1.node.dc1.consul");
        let name = Name::from_ascii("web1.node.dc1.consul").unwrap();
        assert_eq!(target_name(&name), "web1.node.dc1.consul");
    }

    #[test]
    fn no_records_is_only_nxdomain_and_nodata() {
        assert!(LookupError::NxDomain.is_no_records());
        assert!(LookupError::NoData.is_no_records());
        assert!(!LookupError::Timeout.is_no_records());
        assert!(!LookupError::ServerFailure("SERVFAIL".into()).is_no_records());
        assert!(!LookupError::Transport("x".into()).is_no_records());
        assert!(!LookupError::CnameLoop("a -> a".into()).is_no_records());
    }

    #[test]
    fn classify_keeps_failures_apart_from_no_records() {
        use hickory_resolver::proto::op::ResponseCode;
        assert_eq!(classify(NetError::Timeout), LookupError::Timeout);
        assert_eq!(
            classify(NetError::Dns(DnsError::ResponseCode(
                ResponseCode::ServFail
            )))
            .kind(),
            "server_failure"
        );
        assert_eq!(
            classify(NetError::Dns(DnsError::ResponseCode(ResponseCode::Refused))).kind(),
            "server_failure"
        );
    }
}
