//! Lookups above [`crate::transport`]: SRV discovery and A/AAAA host
//! lookups, each following CNAMEs and asking the nameservers in turn.
//!
//! Nothing here knows about rustler: the NIF layer decodes terms into a
//! [`LookupConfig`], awaits [`lookup_srv`] or [`lookup_host`] on the runtime
//! and encodes the [`SrvRecord`]s, addresses or the [`LookupError`].
//! Answers are not cached: every call asks a nameserver, so membership
//! changes are seen at the next poll.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::proto::op::Message;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::domain::usage::{INVALID, ONION};
use hickory_resolver::proto::rr::rdata::CNAME;
use hickory_resolver::proto::rr::{RData, Record, RecordType};

/// A DNS name as the lookups take it ([`parse_query`] makes one).
pub use hickory_resolver::proto::rr::Name;
use tracing::instrument::WithSubscriber;

use crate::error::{LookupError, MAX_CNAME_HOPS};
use crate::target::{self, NoAddress, NodeHost};
use crate::transport::{self, Additionals, Answer, Prior, Transport, Tries, UdpQuery, DNS_PORT};

/// Where and how long to ask. Built by the NIF layer from the options
/// `Caravan.DNS` validated (the defaults live there, once).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LookupConfig {
    /// Nameservers to ask, in order. Empty means the system's
    /// configuration (`/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
    /// Bound on the whole lookup, every retry and transport included.
    pub timeout: Duration,
    /// How an SRV query name that is not fully qualified is completed when
    /// `nameservers` are the VM's (its resolv.conf's, as OTP's `inet_db`
    /// read it). Empty for nameservers given to Caravan, whose names are
    /// absolute; with no `nameservers`, the system's resolv.conf gives it.
    pub search: Search,
}

/// resolv.conf's search rule: `domain` then `search` domains, and `ndots`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Search {
    /// Domains appended, in order, to a name that is not fully qualified.
    pub domains: Vec<Name>,
    /// A name with more labels than this is asked as it is first.
    pub ndots: usize,
}

impl Search {
    /// The rule for `domains` (text, in order; one that is not a DNS name is
    /// left out) and `ndots`.
    pub fn new<'a>(domains: impl IntoIterator<Item = &'a str>, ndots: usize) -> Self {
        let domains = domains
            .into_iter()
            .filter_map(|d| Name::from_utf8(d).ok())
            .map(|mut d| {
                d.set_fqdn(true);
                d
            })
            .collect();
        Self { domains, ndots }
    }
}

impl Default for Search {
    /// No search domains (names are absolute), resolv.conf's default ndots.
    fn default() -> Self {
        Self {
            domains: Vec::new(),
            ndots: 1,
        }
    }
}

/// One SRV answer record (RFC 2782), target without its trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    /// Lower is preferred (RFC 2782).
    pub priority: u16,
    /// Relative weight among records of the same priority.
    pub weight: u16,
    /// The service's port on the target.
    pub port: u16,
    /// The target host name, ASCII (punycode for IDNs), no trailing dot.
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
    /// The name that answered, no trailing dot, when it is not the query
    /// as given: the query completed from [`LookupConfig::search`].
    pub name: Option<String>,
}

/// The address family of a host lookup (`:inet` / `:inet6` on the BEAM side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// A records.
    V4,
    /// AAAA records.
    V6,
}

impl Family {
    fn record_type(self) -> RecordType {
        match self {
            Self::V4 => RecordType::A,
            Self::V6 => RecordType::AAAA,
        }
    }
}

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
/// [`NodeHost::Ip`] included, ends within `config.timeout`; a target whose
/// address lookup gets no answer within half of it keeps no address (its
/// record's host is a [`NoAddress`]).
///
/// The query goes out over UDP with EDNS0 and is confirmed over a fresh
/// TCP connection only when the answer may have been trimmed
/// ([`crate::transport`]); each record says which transport gave it.
/// CNAMEs are followed up to [`MAX_CNAME_HOPS`]; a loop is
/// [`LookupError::CnameLoop`], never NODATA. With no configured
/// nameservers, the ones in `/etc/resolv.conf` are asked.
pub async fn lookup_srv(
    config: &LookupConfig,
    name: Name,
    node_host: NodeHost,
    early: &mut (dyn FnMut(Vec<SrvRecord>) + Send + '_),
) -> Result<Vec<SrvRecord>, LookupError> {
    lookup_srv_after(config, name, node_host, early, None).await
}

/// Sends the first UDP query of [`lookup_srv`] for the caller to wait on
/// ([`UdpQuery`]), when the lookup has one nameserver (configured, so no
/// resolv.conf is read): the query for the name's first search candidate.
/// Once its reply is read, [`lookup_srv_after`] goes on from it. `Ok(None)`
/// when the lookup must run whole ([`UdpQuery::send`]'s cases, or more
/// than one nameserver). Errors: as [`UdpQuery::send`].
pub fn send_first_srv_query(
    config: &LookupConfig,
    name: &Name,
) -> Result<Option<UdpQuery>, LookupError> {
    let [server] = config.nameservers[..] else {
        return Ok(None);
    };
    let servers = Servers::for_config(config)?;
    let Some(first) = servers.candidates(name).into_iter().next() else {
        return Ok(None);
    };
    UdpQuery::send(
        server,
        &first,
        RecordType::SRV,
        Tries::for_servers(config.timeout, 1),
    )
}

/// [`lookup_srv`], taking `prior` (the reply [`send_first_srv_query`]'s
/// query got) as the reply to its first UDP query, which is not sent
/// again. `config.timeout` bounds what is left of the lookup.
pub async fn lookup_srv_after(
    config: &LookupConfig,
    name: Name,
    node_host: NodeHost,
    early: &mut (dyn FnMut(Vec<SrvRecord>) + Send + '_),
    prior: Option<Prior>,
) -> Result<Vec<SrvRecord>, LookupError> {
    tracing::debug!(query = %name, nameservers = ?config.nameservers, timeout = ?config.timeout, ?node_host, "SRV lookup");
    let result = tokio::time::timeout(
        config.timeout,
        lookup_srv_unbounded(config, name, node_host, early, prior),
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
    early: &mut (dyn FnMut(Vec<SrvRecord>) + Send + '_),
    mut prior: Option<Prior>,
) -> Result<Vec<SrvRecord>, LookupError> {
    let servers = Servers::for_config(config)?;
    let tries = Tries::for_servers(config.timeout, servers.addrs.len());
    // A doubted UDP answer's SRV records, as they are (no address is
    // resolved for them), handed over before the complete answer comes.
    let mut doubted = |candidate: &Name, message: &Message| {
        let answered = (!candidate.eq_ignore_root(&name)).then(|| target_name(candidate));
        let (records, _) = records_of(message, Transport::Udp, node_host, answered);
        if !records.is_empty() {
            early(records);
        }
    };
    let (answered, answer) = first_answer(
        &servers,
        &name,
        RecordType::SRV,
        tries,
        &mut doubted,
        &mut prior,
    )
    .await?;
    let completed = !answered.eq_ignore_root(&name);
    let answered = completed.then(|| target_name(&answered));
    let transport = answer.transport;
    let message = &answer.message;
    let (mut records, mut targets) = records_of(message, transport, node_host, answered);
    if records.is_empty() {
        return Err(LookupError::NoData);
    }
    tracing::debug!(
        srv = records.len(),
        additional = message.additionals.len(),
        transport = transport.as_str(),
        doubt = answer.doubt.map(|d| d.as_str()),
        "SRV answer: records and additional records"
    );
    if node_host == NodeHost::Ip {
        resolve_missing(&servers, config.timeout / 2, &mut targets).await;
        for (record, (target, addresses)) in records.iter_mut().zip(targets) {
            record.host = target::node_host(node_host, &target, &addresses);
            record.addresses = addresses;
        }
    }
    Ok(records)
}

/// The SRV records of `message` (come over `transport`, for the query
/// completed as `answered`, if it was) with the
/// addresses its additional section gives their targets (indexed once),
/// and the (target, addresses) pairs apart, for [`NodeHost::Ip`] to
/// complete.
fn records_of(
    message: &Message,
    transport: Transport,
    node_host: NodeHost,
    answered: Option<String>,
) -> (Vec<SrvRecord>, Vec<(String, Vec<IpAddr>)>) {
    let additionals = Additionals::new(message);
    message
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::SRV(srv) => Some(srv),
            _ => None,
        })
        .map(|srv| {
            let target = target_name(&srv.target);
            let addresses = additionals.addresses_of(&srv.target);
            let record = SrvRecord {
                priority: srv.priority,
                weight: srv.weight,
                port: srv.port,
                host: target::node_host(node_host, &target, &addresses),
                target: target.clone(),
                addresses: addresses.clone(),
                transport,
                name: answered.clone(),
            };
            (record, (target, addresses))
        })
        .unzip()
}

/// The first of `name`'s [`Servers::candidates`] that has `record_type`
/// records, with its answer. NXDOMAIN and NODATA go on to the next
/// candidate (the last one's is returned); any other failure ends the
/// search, so a failing server never makes a later candidate answer.
/// A doubted UDP answer goes to `early` with the candidate it answers.
async fn first_answer(
    servers: &Servers,
    name: &Name,
    record_type: RecordType,
    tries: Tries,
    early: &mut (dyn FnMut(&Name, &Message) + Send + '_),
    prior: &mut Option<Prior>,
) -> Result<(Name, Answer), LookupError> {
    let mut last = LookupError::NoData;
    for candidate in servers.candidates(name) {
        let mut doubted = |message: &Message| early(&candidate, message);
        match answer(
            &servers.addrs,
            candidate.clone(),
            record_type,
            tries,
            &mut doubted,
            &mut *prior,
        )
        .await
        {
            Ok(found) => return Ok((candidate, found)),
            Err(err @ (LookupError::NxDomain | LookupError::NoData)) => last = err,
            Err(err) => return Err(err),
        }
    }
    Err(last)
}

/// The nameservers a lookup asks and how a host name is completed.
#[derive(Debug, Clone)]
struct Servers {
    addrs: Vec<SocketAddr>,
    /// Domains appended to a host name that is not fully qualified
    /// (resolv.conf's `domain`, then `search`); none for configured
    /// nameservers.
    search: Vec<Name>,
    /// A name with more labels than this is asked as it is first.
    ndots: usize,
}

impl Servers {
    /// The configured nameservers (with the config's search rule), else
    /// the system's (`/etc/resolv.conf`, with its search domains).
    fn for_config(config: &LookupConfig) -> Result<Self, LookupError> {
        if !config.nameservers.is_empty() {
            return Ok(Self {
                addrs: config.nameservers.clone(),
                search: config.search.domains.clone(),
                ndots: config.search.ndots,
            });
        }
        let (system, opts) = hickory_resolver::system_conf::read_system_conf().map_err(|e| {
            LookupError::Config(format!("cannot read the system's resolv.conf: {e}"))
        })?;
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for ns in system.name_servers() {
            let port = ns.connections.first().map_or(DNS_PORT, |c| c.port);
            let addr = SocketAddr::new(ns.ip, port);
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        if addrs.is_empty() {
            return Err(LookupError::Config(
                "no nameservers: none configured and none in /etc/resolv.conf".into(),
            ));
        }
        let mut search: Vec<Name> = Vec::new();
        for domain in system.domain().into_iter().chain(system.search()) {
            if !search.contains(domain) {
                search.push(domain.clone());
            }
        }
        Ok(Self {
            addrs,
            search,
            ndots: opts.ndots,
        })
    }

    /// The names to ask for host `name`, in order (resolv.conf's rule): a
    /// fully qualified name alone; else the name as it is first when it
    /// has more than `ndots` labels (or is a localhost name), last
    /// otherwise, and the search domains appended in between.
    fn candidates(&self, name: &Name) -> Vec<Name> {
        let mut fqdn = name.clone();
        fqdn.set_fqdn(true);
        if name.is_fqdn() || self.search.is_empty() {
            return vec![fqdn];
        }
        let raw_first = usize::from(name.num_labels()) > self.ndots || name.is_localhost();
        let mut names = Vec::with_capacity(self.search.len() + 1);
        if raw_first {
            names.push(fqdn.clone());
        }
        for domain in &self.search {
            if let Ok(searched) = name.clone().append_domain(domain) {
                if !names.contains(&searched) {
                    names.push(searched);
                }
            }
        }
        if !raw_first && !names.contains(&fqdn) {
            names.push(fqdn);
        }
        names
    }
}

/// The answer for the `record_type` records of `name`, following CNAMEs
/// (up to [`MAX_CNAME_HOPS`], loops are [`LookupError::CnameLoop`]): a
/// chain inside one answer is walked, and a chain that stops at a CNAME is
/// asked again for its end. NXDOMAIN is an error, an answer with no
/// records of the type [`LookupError::NoData`].
async fn answer(
    servers: &[SocketAddr],
    name: Name,
    record_type: RecordType,
    tries: Tries,
    early: &mut (dyn FnMut(&Message) + Send + '_),
    prior: &mut Option<Prior>,
) -> Result<Answer, LookupError> {
    let mut chain = vec![name];
    loop {
        let current = chain
            .last()
            .expect("the chain starts with the name")
            .clone();
        let answer = ask_each(
            servers,
            &current,
            record_type,
            tries,
            &mut *early,
            &mut *prior,
        )
        .await?;
        if answer.message.metadata.response_code == ResponseCode::NXDomain {
            return Err(LookupError::NxDomain);
        }
        let has_records = answer
            .message
            .answers
            .iter()
            .any(|r| r.record_type() == record_type);
        if has_records {
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

/// Asks each nameserver in turn; the first answer wins (NXDOMAIN and
/// NODATA are answers, so they end the search). When none answers, the
/// last failure is returned (transport and server-failure messages name
/// the nameserver; the BEAM side adds the list asked).
async fn ask_each(
    servers: &[SocketAddr],
    name: &Name,
    record_type: RecordType,
    tries: Tries,
    early: &mut (dyn FnMut(&Message) + Send + '_),
    prior: &mut Option<Prior>,
) -> Result<Answer, LookupError> {
    let mut last = LookupError::Config("no nameservers to ask".into());
    for server in servers {
        match transport::query_early(*server, name, record_type, tries, &mut *early, &mut *prior)
            .await
        {
            Ok(answer) => return Ok(answer),
            Err(err) => {
                tracing::debug!(%server, %name, error = %err, "nameserver failed");
                last = err;
            }
        }
    }
    Err(last)
}

/// Resolves the targets (`(target, addresses)`) that have no address yet,
/// each distinct target once, all at the same time, each within `bound`.
/// A target that does not resolve keeps no address (its record's host is
/// then a [`NoAddress`] error).
async fn resolve_missing(
    servers: &Servers,
    bound: Duration,
    targets: &mut [(String, Vec<IpAddr>)],
) {
    let mut pending = tokio::task::JoinSet::new();
    let mut asked = HashSet::new();
    for (target, addresses) in targets.iter() {
        if target::needs_resolution(target, addresses) && asked.insert(target.clone()) {
            let servers = servers.clone();
            let target = target.clone();
            tracing::debug!(%target, "no address in the answer; resolving");
            // The lookup's tracing subscriber (if any) follows the task.
            pending.spawn(
                async move {
                    let found = tokio::time::timeout(bound, resolve_any(&servers, bound, &target))
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .unwrap_or_default();
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
async fn resolve_any(
    servers: &Servers,
    bound: Duration,
    host: &str,
) -> Result<Vec<IpAddr>, LookupError> {
    let name = parse_query(host)?;
    match resolve_family(servers, bound, &name, Family::V4).await {
        Ok(found) => Ok(found),
        Err(_) => resolve_family(servers, bound, &name, Family::V6).await,
    }
}

/// The `family` addresses of `name`, trying its [`Servers::candidates`]
/// in turn until one has an address (the last failure otherwise).
/// Localhost names (RFC 6761 6.3) are the loopback address and `.invalid`
/// and `.onion` names do not exist, without a query.
async fn resolve_family(
    servers: &Servers,
    bound: Duration,
    name: &Name,
    family: Family,
) -> Result<Vec<IpAddr>, LookupError> {
    if name.is_localhost() {
        return Ok(vec![match family {
            Family::V4 => IpAddr::from([127, 0, 0, 1]),
            Family::V6 => IpAddr::from([0, 0, 0, 0, 0, 0, 0, 1u16]),
        }]);
    }
    if INVALID.zone_of(name) || ONION.zone_of(name) {
        return Err(LookupError::NxDomain);
    }
    let record_type = family.record_type();
    let tries = Tries::for_servers(bound, servers.addrs.len());
    let mut last = LookupError::NoData;
    for candidate in servers.candidates(name) {
        match answer(
            &servers.addrs,
            candidate,
            record_type,
            tries,
            &mut |_| {},
            &mut None,
        )
        .await
        {
            Ok(answer) => {
                // The answer may also hold the CNAMEs that led to the address.
                let found: Vec<IpAddr> = answer
                    .message
                    .answers
                    .iter()
                    .filter(|r| r.record_type() == record_type)
                    .filter_map(|r| transport::ip_of(&r.data))
                    .collect();
                if !found.is_empty() {
                    return Ok(found);
                }
                last = LookupError::NoData;
            }
            Err(err) => last = err,
        }
    }
    Err(last)
}

/// Looks up the addresses of `host` in `family` through the configured
/// nameservers (the epmd module's `address_please/3` and A/AAAA discovery
/// use it), over the same transport as [`lookup_srv`]. An IP literal of
/// that family is returned without a lookup.
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
    tracing::debug!(query = %name, nameservers = ?config.nameservers, timeout = ?config.timeout, ?family, "host lookup");
    let servers = Servers::for_config(config)?;
    tokio::time::timeout(
        config.timeout,
        resolve_family(&servers, config.timeout, &name, family),
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::rr::rdata::{A, SRV};

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

    fn servers(search: &[&str], ndots: usize) -> Servers {
        Servers {
            addrs: vec!["127.0.0.1:53".parse().unwrap()],
            search: search
                .iter()
                .map(|d| Name::from_ascii(d).unwrap())
                .collect(),
            ndots,
        }
    }

    fn names(names: Vec<Name>) -> Vec<String> {
        names.iter().map(Name::to_ascii).collect()
    }

    #[test]
    fn configured_nameservers_ask_the_name_alone() {
        let name = Name::from_ascii("web").unwrap();
        assert_eq!(names(servers(&[], 1).candidates(&name)), ["web."]);
    }

    #[test]
    fn search_domains_follow_resolv_conf_order() {
        let ns = servers(&["svc.cluster.local.", "cluster.local."], 1);
        // Fewer labels than ndots + 1: the search domains first.
        let short = Name::from_ascii("web").unwrap();
        assert_eq!(
            names(ns.candidates(&short)),
            ["web.svc.cluster.local.", "web.cluster.local.", "web."]
        );
        // More labels than ndots: the name as it is first.
        let long = Name::from_ascii("web.service.consul").unwrap();
        assert_eq!(
            names(ns.candidates(&long)),
            [
                "web.service.consul.",
                "web.service.consul.svc.cluster.local.",
                "web.service.consul.cluster.local."
            ]
        );
        // A fully qualified name alone.
        let fqdn = Name::from_ascii("web.").unwrap();
        assert_eq!(names(ns.candidates(&fqdn)), ["web."]);
        // Kubernetes' ndots:5 sends even dotted names through the search list first.
        let k8s = servers(&["svc.cluster.local."], 5);
        assert_eq!(
            names(k8s.candidates(&long)),
            [
                "web.service.consul.svc.cluster.local.",
                "web.service.consul."
            ]
        );
    }

    #[tokio::test]
    async fn special_names_are_answered_without_a_query() {
        // No nameserver listens on the configured address: any query fails.
        let ns = servers(&[], 1);
        let bound = Duration::from_millis(200);
        let localhost = Name::from_ascii("localhost").unwrap();
        assert_eq!(
            resolve_family(&ns, bound, &localhost, Family::V4).await,
            Ok(vec![IpAddr::from([127, 0, 0, 1])])
        );
        assert_eq!(
            resolve_family(&ns, bound, &localhost, Family::V6).await,
            Ok(vec!["::1".parse().unwrap()])
        );
        let invalid = Name::from_ascii("web.invalid").unwrap();
        assert_eq!(
            resolve_family(&ns, bound, &invalid, Family::V4).await,
            Err(LookupError::NxDomain)
        );
    }

    /// A zone's reply to `(name, type)`: `(rcode, answers)`; `None` stays silent.
    type Zone = fn(&str, RecordType) -> Option<(ResponseCode, Vec<Record>)>;

    /// A UDP nameserver on a free loopback port that answers each query
    /// from `answer`.
    async fn nameserver(answer: Zone) -> SocketAddr {
        use hickory_resolver::proto::op::Message;
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((len, from)) = socket.recv_from(&mut buf).await {
                let query = Message::from_vec(&buf[..len]).unwrap();
                let asked = query.queries[0].clone();
                let Some((code, records)) = answer(&asked.name().to_ascii(), asked.query_type())
                else {
                    continue;
                };
                let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
                reply.metadata.response_code = code;
                reply.add_query(asked);
                for record in records {
                    reply.add_answer(record);
                }
                let _ = socket.send_to(&reply.to_vec().unwrap(), from).await;
            }
        });
        addr
    }

    fn a(owner: &str, last: u8) -> Record {
        let owner = Name::from_ascii(owner).unwrap();
        Record::from_rdata(owner, 0, RData::A(A::new(10, 0, 0, last)))
    }

    fn cname(owner: &str, target: &str) -> Record {
        let owner = Name::from_ascii(owner).unwrap();
        let target = Name::from_ascii(target).unwrap();
        Record::from_rdata(owner, 0, RData::CNAME(CNAME(target)))
    }

    fn zone(name: &str, record_type: RecordType) -> Option<(ResponseCode, Vec<Record>)> {
        let ok = ResponseCode::NoError;
        match (name, record_type) {
            ("web1.node.dc1.consul.", RecordType::A) => Some((ok, vec![a(name, 1)])),
            // A chain inside one answer.
            ("alias.consul.", _) => Some((
                ok,
                vec![
                    cname(name, "web1.node.dc1.consul."),
                    a("web1.node.dc1.consul.", 1),
                ],
            )),
            // A chain that stops at a CNAME: its end is asked again.
            ("outside.consul.", _) => Some((ok, vec![cname(name, "web1.node.dc1.consul.")])),
            ("loop1.consul.", _) => Some((ok, vec![cname(name, "loop2.consul.")])),
            ("loop2.consul.", _) => Some((ok, vec![cname(name, "loop1.consul.")])),
            ("web1.node.dc1.consul.", _) => Some((ok, vec![])),
            ("failing.consul.", _) => Some((ResponseCode::ServFail, vec![])),
            ("refusing.consul.", _) => Some((ResponseCode::Refused, vec![])),
            ("silent.consul.", _) => None,
            _ => Some((ResponseCode::NXDomain, vec![])),
        }
    }

    fn config(nameservers: Vec<SocketAddr>) -> LookupConfig {
        LookupConfig {
            nameservers,
            timeout: Duration::from_millis(600),
            search: Search::default(),
        }
    }

    fn srv(owner: &str, target: &str) -> Record {
        let (owner, target) = (
            Name::from_ascii(owner).unwrap(),
            Name::from_ascii(target).unwrap(),
        );
        Record::from_rdata(owner, 0, RData::SRV(SRV::new(1, 1, 4370, target)))
    }

    /// A cluster's DNS: one headless service, and a namespace whose server fails.
    fn cluster(name: &str, record_type: RecordType) -> Option<(ResponseCode, Vec<Record>)> {
        match (name, record_type) {
            ("web-headless.default.svc.cluster.local.", RecordType::SRV) => Some((
                ResponseCode::NoError,
                vec![srv(
                    name,
                    "10-0-0-1.web-headless.default.svc.cluster.local.",
                )],
            )),
            ("web-headless.failing.svc.cluster.local.", _) => {
                Some((ResponseCode::ServFail, vec![]))
            }
            _ => Some((ResponseCode::NXDomain, vec![])),
        }
    }

    #[tokio::test]
    async fn a_lookup_goes_on_from_the_reply_its_caller_waited_for() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static ASKED: AtomicUsize = AtomicUsize::new(0);
        fn counted(name: &str, record_type: RecordType) -> Option<(ResponseCode, Vec<Record>)> {
            ASKED.fetch_add(1, Ordering::SeqCst);
            match (name, record_type) {
                ("web.service.consul.", RecordType::SRV) => Some((
                    ResponseCode::NoError,
                    vec![srv(name, "web1.node.dc1.consul.")],
                )),
                _ => Some((ResponseCode::NXDomain, vec![])),
            }
        }
        let ns = nameserver(counted).await;
        let name = Name::from_ascii("web.service.consul").unwrap();
        let mut query = send_first_srv_query(&config(vec![ns]), &name)
            .unwrap()
            .expect("one nameserver: the query is the caller's to wait on");
        let mut prior = None;
        for _ in 0..400 {
            prior = query.read().unwrap();
            if prior.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let records = lookup_srv_after(
            &config(vec![ns]),
            name.clone(),
            NodeHost::Target,
            &mut |_| {},
            Some(prior.expect("a reply within 2 s")),
        )
        .await
        .unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].target, "web1.node.dc1.consul");
        assert_eq!(records[0].transport, Transport::Udp);
        assert_eq!(
            ASKED.load(Ordering::SeqCst),
            1,
            "the query was not asked again"
        );
        // With more than one nameserver the lookup runs whole.
        assert!(send_first_srv_query(&config(vec![ns, ns]), &name)
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn srv_names_are_completed_from_the_search_list_given() {
        let mut config = config(vec![nameserver(cluster).await]);
        let lookup = |config: LookupConfig, query: &'static str| async move {
            lookup_srv(
                &config,
                parse_query(query).unwrap(),
                NodeHost::Target,
                &mut |_| {},
            )
            .await
        };
        // Nameservers given to Caravan: names are absolute.
        assert_eq!(
            lookup(config.clone(), "web-headless").await,
            Err(LookupError::NxDomain)
        );
        let domains = [
            "default.svc.cluster.local.",
            "svc.cluster.local.",
            "cluster.local.",
        ];
        config.search = Search {
            domains: domains
                .iter()
                .map(|d| Name::from_ascii(d).unwrap())
                .collect(),
            ndots: 5,
        };
        let completed = Some("web-headless.default.svc.cluster.local".to_string());
        let records = lookup(config.clone(), "web-headless").await.unwrap();
        assert_eq!(records[0].name, completed);
        assert_eq!(
            records[0].target,
            "10-0-0-1.web-headless.default.svc.cluster.local"
        );
        let records = lookup(config.clone(), "web-headless.default")
            .await
            .unwrap();
        assert_eq!(records[0].name, completed);
        // A name that answers as it is is not completed.
        let full = "web-headless.default.svc.cluster.local";
        assert_eq!(lookup(config.clone(), full).await.unwrap()[0].name, None);
        // A fully qualified name is asked alone; a failing candidate ends the search.
        assert_eq!(
            lookup(config.clone(), "web-headless.").await,
            Err(LookupError::NxDomain)
        );
        assert_eq!(
            lookup(config.clone(), "web-headless.failing")
                .await
                .unwrap_err()
                .kind(),
            "server_failure"
        );
    }

    #[tokio::test]
    async fn host_lookups_go_over_the_transport_with_its_error_kinds() {
        let config = config(vec![nameserver(zone).await]);
        let host = |name: &'static str, family| {
            let config = config.clone();
            async move { lookup_host(&config, name, family).await }
        };
        let ten = |last| vec![IpAddr::from([10, 0, 0, last])];
        assert_eq!(host("web1.node.dc1.consul", Family::V4).await, Ok(ten(1)));
        assert_eq!(host("alias.consul", Family::V4).await, Ok(ten(1)));
        assert_eq!(host("outside.consul", Family::V4).await, Ok(ten(1)));
        assert_eq!(
            host("loop1.consul", Family::V4).await.unwrap_err().kind(),
            "cname_loop"
        );
        assert_eq!(
            host("web1.node.dc1.consul", Family::V6).await,
            Err(LookupError::NoData)
        );
        assert_eq!(
            host("nowhere.consul", Family::V4).await,
            Err(LookupError::NxDomain)
        );
        for failing in ["failing.consul", "refusing.consul"] {
            assert_eq!(
                host(failing, Family::V4).await.unwrap_err().kind(),
                "server_failure"
            );
        }
        assert_eq!(
            host("silent.consul", Family::V4).await,
            Err(LookupError::Timeout)
        );
        assert_eq!(
            host("10.0.0.9", Family::V4).await,
            Ok(vec![IpAddr::from([10, 0, 0, 9])])
        );
    }

    #[tokio::test]
    async fn the_next_nameserver_is_asked_when_one_fails() {
        // Bind and drop, so the port is (very likely) closed: refused at once.
        let closed = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let config = config(vec![closed, nameserver(zone).await]);
        assert_eq!(
            lookup_host(&config, "web1.node.dc1.consul", Family::V4).await,
            Ok(vec![IpAddr::from([10, 0, 0, 1])])
        );
    }
}
