//! The DNS exchange of every lookup: one UDP query with EDNS0, confirmed
//! over TCP only when the answer may be incomplete ([`trim`]), or sent
//! straight over TCP when its last complete answer needed it
//! ([`tcp_first`]).
//!
//! Messages are built and parsed with hickory-proto; the exchange is ours,
//! because a lookup needs what a resolver library hides (the raw reply
//! size, the OPT record, TC) and must not keep TCP connections open
//! between polls (a server that closed one stalls the next lookup, and a
//! server's TCP connection limit runs out when every node keeps one). So:
//!
//! - UDP on a *connected* socket, kept per nameserver between queries
//!   ([`udp_pool`]): an ICMP port-unreachable from a closed nameserver
//!   port comes back as `ECONNREFUSED` at once, not a timeout; replies
//!   with another message id or question are ignored (RFC 5452 9.1);
//! - TCP (RFC 7766) on a fresh connection per query, closed as soon as the
//!   answer is read.
//!
//! A query's first UDP exchange can also be waited for by the caller
//! ([`UdpQuery`]: the NIF has the BEAM's poll set watch the socket), with
//! the same sockets, copies and reply matching; the lookup then goes on
//! from its reply ([`Prior`]).

pub mod tcp_first;
pub mod trim;
pub mod udp_pool;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use once_cell::sync::Lazy;
use parking_lot::Mutex;

use hickory_resolver::proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use hickory_resolver::proto::serialize::binary::BinEncodable;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::error::LookupError;
use tcp_first::{Key, TcpFirst};
use trim::{Doubt, ReplyShape};

/// The DNS port (RFC 1035), used for a nameserver given without a port.
pub const DNS_PORT: u16 = 53;

/// EDNS0 UDP payload size advertised in queries (RFC 6891). 1232 bytes is
/// the DNS Flag Day 2020 recommendation: large enough for dozens of SRV
/// records, small enough to avoid IP fragmentation. Larger answers come back
/// truncated (or trimmed) and are asked again over TCP.
pub const EDNS_PAYLOAD_LEN: u16 = 1232;

/// The largest DNS message (RFC 1035 4.2.2: two-byte length over TCP).
pub(crate) const MAX_MESSAGE: usize = 65_535;

/// Which transport gave an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// One UDP datagram.
    Udp,
    /// A TCP connection opened for this query.
    Tcp,
}

impl Transport {
    /// `"udp"` or `"tcp"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        }
    }
}

/// A reply and how it came.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The parsed reply.
    pub message: Message,
    /// The transport that gave it.
    pub transport: Transport,
    /// Why UDP was not trusted, when the answer came over TCP.
    pub doubt: Option<Doubt>,
}

/// The bounds of one query's exchanges with one nameserver.
#[derive(Debug, Clone, Copy)]
pub struct Tries {
    /// Bound on the UDP exchange.
    pub udp: Duration,
    /// The UDP query is sent again after this without a reply (a datagram
    /// lost under load; RFC 1035 4.2.1), then after twice as long each
    /// time ([`resend_wait`]).
    pub retransmit: Duration,
    /// Bound on the TCP exchange: give it room for one SYN retransmission
    /// (1 s, RFC 6298 2.1), which is what a client gets from a server whose
    /// listen queue is full (dnsmasq under a burst of nodes polling at once).
    pub tcp: Duration,
}

impl Tries {
    /// The bounds for a lookup bounded by `timeout` over `servers`
    /// nameservers. With one nameserver its UDP exchange gets the whole
    /// bound, since a reply that is merely late (a loaded server or host)
    /// is still an answer and there is no next nameserver to leave time
    /// for. With more, UDP gets half, so a silent nameserver leaves time
    /// for the next. Either way an unanswered UDP query is first sent again after
    /// a sixth of the bound, then with the wait doubled each time. TCP gets
    /// all of it (the caller's outer bound still holds).
    pub fn for_servers(timeout: Duration, servers: usize) -> Self {
        let udp = if servers <= 1 { timeout } else { timeout / 2 };
        Tries {
            udp: udp.max(Duration::from_millis(50)),
            retransmit: timeout / 6,
            tcp: timeout,
        }
    }
}

/// Asks `server` for the `record_type` records of `name`: over UDP first,
/// over TCP when [`trim::may_be_trimmed`] doubts the UDP answer; straight
/// over TCP when the last complete answer to this query at this server
/// needed it ([`tcp_first`]), so a poll whose answer outgrew UDP
/// costs one query, not two. `tries` bounds each exchange ([`Tries`]).
///
/// Errors: [`LookupError::Timeout`], [`LookupError::Transport`] (refused
/// port, reset, malformed reply; the message names `server`),
/// [`LookupError::ServerFailure`] (an RCODE other than NOERROR/NXDOMAIN).
/// NXDOMAIN comes back as an `Ok` answer for the caller to read. A direct
/// TCP exchange that fails outright (refused, reset, malformed) is
/// forgotten, so the next query starts on UDP; one that times out is kept
/// once ([`TcpFirst::timed_out`]).
///
/// Only SRV answers are judged by the trim rules (records travel in groups
/// there); other types go to TCP on TC alone.
pub async fn query(
    server: SocketAddr,
    name: &Name,
    record_type: RecordType,
    tries: Tries,
) -> Result<Answer, LookupError> {
    query_early(server, name, record_type, tries, &mut |_| {}, &mut None).await
}

/// [`query`], handing a UDP answer that is doubted (truncated or maybe
/// trimmed) to `early` before asking over TCP: its records name live
/// instances, though maybe not all of them, so the caller can act on them
/// while the complete answer comes. The returned answer is still only ever
/// the complete one (or an error).
///
/// A `prior` reply for this query at this server ([`UdpQuery`]) is taken
/// as the UDP exchange's reply (and taken out of `prior`): nothing more is
/// sent over UDP.
pub async fn query_early(
    server: SocketAddr,
    name: &Name,
    record_type: RecordType,
    tries: Tries,
    early: &mut (dyn FnMut(&Message) + Send + '_),
    prior: &mut Option<Prior>,
) -> Result<Answer, LookupError> {
    let key = Key::new(server, &name.to_ascii(), u16::from(record_type));
    if let Some(prior) =
        prior.take_if(|p| p.server == server && p.record_type == record_type && p.name == *name)
    {
        return udp_answered(
            server,
            name,
            record_type,
            tries,
            early,
            key,
            &prior.request,
            &prior.reply,
        )
        .await;
    }
    let request = request(name, record_type);
    let remembered = TCP_FIRST.lock().lookup(&key, Instant::now());
    if let Some(entry) = remembered {
        tracing::debug!(%server, %name, "the last answer needed TCP; asking over TCP directly");
        return ask_tcp(
            server,
            &request,
            tries.tcp,
            key,
            record_type,
            entry.has_opt,
            Doubt::Remembered,
        )
        .await;
    }
    let udp = bounded(
        tries.udp,
        server,
        "UDP",
        udp_exchange(server, &request, tries.retransmit, tries.udp),
    )
    .await?;
    udp_answered(server, name, record_type, tries, early, key, &request, &udp).await
}

/// The rest of [`query_early`] once the UDP reply `udp` to `request` is in:
/// the answer, or, when it is doubted, the complete one over TCP.
#[allow(clippy::too_many_arguments)] // query_early's, and what it made
async fn udp_answered(
    server: SocketAddr,
    name: &Name,
    record_type: RecordType,
    tries: Tries,
    early: &mut (dyn FnMut(&Message) + Send + '_),
    key: Key,
    request: &Message,
    udp: &[u8],
) -> Result<Answer, LookupError> {
    let (message, size) = parse(server, request, udp)?;
    let has_opt = message.edns.is_some();
    let doubt = if record_type == RecordType::SRV {
        trim::may_be_trimmed(&shape(&message, size), EDNS_PAYLOAD_LEN)
    } else if message.metadata.truncation {
        Some(Doubt::Truncated)
    } else {
        None
    };
    let Some(doubt) = doubt else {
        return checked(
            server,
            Answer {
                message,
                transport: Transport::Udp,
                doubt: None,
            },
        );
    };
    match doubt {
        Doubt::Truncated => {
            tracing::debug!(%server, %name, "truncated response received, retrying over TCP")
        }
        other => tracing::debug!(
            %server,
            %name,
            doubt = other.as_str(),
            "UDP answer may have been trimmed without TC, retrying over TCP"
        ),
    }
    early(&message);
    ask_tcp(server, request, tries.tcp, key, record_type, has_opt, doubt).await
}

/// A query's first UDP exchange, for a caller that does its own waiting:
/// the NIF, which has the BEAM's poll set watch the socket (`enif_select`)
/// so that the reply wakes the calling process directly, with no thread
/// of Caravan's in between. [`UdpQuery::send`] sends the query;
/// [`UdpQuery::read`] takes the reply when the socket is readable and
/// [`UdpQuery::tick`] sends the copies [`udp_exchange`] would send, when
/// it would send them. The reply goes on as a [`Prior`] into the lookup,
/// which judges it as it judges any UDP reply (the trim rules, TCP, CNAMEs).
pub struct UdpQuery {
    server: SocketAddr,
    name: Name,
    record_type: RecordType,
    request: Message,
    bytes: Vec<u8>,
    lease: Option<udp_pool::StdLease>,
    sent: u32,
    next_send: Option<Instant>,
    deadline: Instant,
    retransmit: Duration,
}

/// A reply already received for a query's first UDP exchange
/// ([`UdpQuery::read`]), for [`query_early`] to take.
pub struct Prior {
    server: SocketAddr,
    name: Name,
    record_type: RecordType,
    request: Message,
    reply: Vec<u8>,
}

impl UdpQuery {
    /// Sends the `record_type` query for `name` to `server` on a socket
    /// from the nameserver's pool, as the first step of [`query`] would
    /// (`tries.udp` bounds the exchange, `tries.retransmit` paces the
    /// copies, [`resend_wait`]).
    ///
    /// `Ok(None)` when the query must take [`query`]'s own path: it goes
    /// straight to TCP ([`tcp_first`]), or [`udp_pool::MAX_OUTSTANDING`]
    /// queries to `server` are outstanding. Errors: [`LookupError::Transport`]
    /// (no socket, or the send failed; the message names `server`).
    pub fn send(
        server: SocketAddr,
        name: &Name,
        record_type: RecordType,
        tries: Tries,
    ) -> Result<Option<Self>, LookupError> {
        let key = Key::new(server, &name.to_ascii(), u16::from(record_type));
        let now = Instant::now();
        if TCP_FIRST.lock().lookup(&key, now).is_some() {
            return Ok(None);
        }
        let failed = |err: std::io::Error| io_failure("UDP", server, &err);
        let Some(lease) = udp_pool::try_lease_std(server).map_err(failed)? else {
            return Ok(None);
        };
        let request = request(name, record_type);
        let bytes = encode(&request).map_err(failed)?;
        let mut query = Self {
            server,
            name: name.clone(),
            record_type,
            request,
            bytes,
            lease: Some(lease),
            sent: 0,
            next_send: Some(now),
            deadline: now + tries.udp,
            retransmit: tries.retransmit.max(Duration::from_millis(20)),
        };
        query.tick(now)?;
        Ok(Some(query))
    }

    /// The socket's file descriptor, for the caller to wait on (readable).
    /// Valid until the lease is taken ([`UdpQuery::take_lease`]).
    pub fn fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.lease.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Reads what has arrived on the socket, without blocking: `Ok(Some)`
    /// the reply (datagrams for other queries are dropped, as [`query`]
    /// drops them), `Ok(None)` no reply yet. Errors:
    /// [`LookupError::Transport`] (the nameserver's port refused the query;
    /// the message names `server`).
    pub fn read(&mut self) -> Result<Option<Prior>, LookupError> {
        let Some(lease) = self.lease.as_mut() else {
            return Ok(None);
        };
        loop {
            match lease.socket.recv(&mut lease.buf) {
                Ok(len) if answers(&self.bytes, &lease.buf[..len]) => {
                    return Ok(Some(Prior {
                        server: self.server,
                        name: self.name.clone(),
                        record_type: self.record_type,
                        request: self.request.clone(),
                        reply: lease.buf[..len].to_vec(),
                    }));
                }
                Ok(_) => continue,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return Ok(None),
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(io_failure("UDP", self.server, &err)),
            }
        }
    }

    /// At `now`: sends the copy that is due, if one is, as
    /// [`udp_exchange`] does. Returns how long to wait before the next
    /// call. Errors: [`LookupError::Timeout`] once the UDP bound has
    /// passed; [`LookupError::Transport`] when a send fails.
    pub fn tick(&mut self, now: Instant) -> Result<Duration, LookupError> {
        if now >= self.deadline {
            return Err(LookupError::Timeout);
        }
        if self.next_send.is_some_and(|at| at <= now) {
            if let Some(lease) = &self.lease {
                if let Err(err) = lease.socket.send(&self.bytes) {
                    return Err(io_failure("UDP", self.server, &err));
                }
            }
            self.sent += 1;
            self.next_send = now
                .checked_add(resend_wait(self.retransmit, self.sent))
                .filter(|at| *at < self.deadline);
        }
        let next = self.next_send.unwrap_or(self.deadline).min(self.deadline);
        Ok(next.saturating_duration_since(now))
    }

    /// The socket's lease, taken out (once): the caller keeps it until the
    /// BEAM has stopped watching the socket, then keeps it in the pool
    /// ([`udp_pool::StdLease::keep`], after a reply) or drops it (closed).
    pub fn take_lease(&mut self) -> Option<udp_pool::StdLease> {
        self.lease.take()
    }
}

/// The TCP exchange of a query, asked straight away or after a doubted UDP
/// answer: `tcp_try` bounds it, `has_opt` is the EDNS0 support the server
/// showed over UDP, `doubt` why TCP. An answer is learnt from ([`learn`]).
/// An exchange that fails outright forgets the query (the next one starts
/// on UDP). One that times out does not, the first time: the server is
/// slow, not unable to serve TCP, and the answer has not shrunk, so
/// starting over on UDP would only add a UDP query whose answer is doubted
/// again, on a server already behind. A second timeout in a row forgets it
/// ([`TcpFirst::timed_out`]): TCP may be blocked, and an answer that fits
/// UDP again must not wait for the memory's 600 s bound.
async fn ask_tcp(
    server: SocketAddr,
    request: &Message,
    tcp_try: Duration,
    key: Key,
    record_type: RecordType,
    has_opt: bool,
    doubt: Doubt,
) -> Result<Answer, LookupError> {
    let reply = bounded(tcp_try, server, "TCP", tcp_exchange(server, request))
        .await
        .and_then(|bytes| parse(server, request, &bytes));
    let (message, size) = match reply {
        Ok(reply) => reply,
        Err(err) => {
            let mut memory = TCP_FIRST.lock();
            if matches!(err, LookupError::Timeout) {
                memory.timed_out(&key);
            } else {
                memory.forget(&key);
            }
            return Err(err);
        }
    };
    learn(key, record_type, &message, size, has_opt);
    checked(
        server,
        Answer {
            message,
            transport: Transport::Tcp,
            doubt: Some(doubt),
        },
    )
}

/// The queries that go straight to TCP, shared by every lookup of the VM.
static TCP_FIRST: Lazy<Mutex<TcpFirst>> = Lazy::new(|| Mutex::new(TcpFirst::new()));

/// Remembers whether a UDP reply of the complete `message` (`size` bytes)
/// would be doubted, given the EDNS0 support (`has_opt`) the server showed.
fn learn(key: Key, record_type: RecordType, message: &Message, size: usize, has_opt: bool) {
    let needs_tcp = if record_type == RecordType::SRV {
        // Larger than any UDP reply, with records: doubted whatever its
        // groups, so the answer is not measured again.
        let has_srv = || {
            message
                .answers
                .iter()
                .any(|r| r.record_type() == RecordType::SRV)
        };
        (size > usize::from(EDNS_PAYLOAD_LEN) && has_srv()) || {
            let as_udp = ReplyShape {
                truncated: false,
                has_opt,
                ..shape(message, size)
            };
            trim::may_be_trimmed(&as_udp, EDNS_PAYLOAD_LEN).is_some()
        }
    } else {
        size > usize::from(EDNS_PAYLOAD_LEN)
    };
    if needs_tcp {
        tracing::debug!(%size, "the complete answer does not fit UDP; the next query goes over TCP directly");
    }
    TCP_FIRST
        .lock()
        .learn(key, needs_tcp, has_opt, Instant::now());
}

/// Forgets which queries needed TCP: every next query starts on UDP.
/// Returns how many were remembered. For tests (the NIF test hooks).
pub fn forget_transports() -> usize {
    let mut memory = TCP_FIRST.lock();
    let remembered = memory.len();
    memory.clear();
    remembered
}

/// A query for `name` with EDNS0 ([`EDNS_PAYLOAD_LEN`]) and RD set.
fn request(name: &Name, record_type: RecordType) -> Message {
    // A random id (hickory-proto's RNG; RFC 5452 4.3).
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    let mut fqdn = name.clone();
    fqdn.set_fqdn(true);
    message.add_query(Query::query(fqdn, record_type));
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD_LEN);
    message.set_edns(edns);
    message
}

async fn bounded<F>(
    per_try: Duration,
    server: SocketAddr,
    what: &str,
    work: F,
) -> Result<Vec<u8>, LookupError>
where
    F: std::future::Future<Output = std::io::Result<Vec<u8>>>,
{
    match tokio::time::timeout(per_try, work).await {
        Err(_) => Err(LookupError::Timeout),
        Ok(Err(err)) => Err(io_failure(what, server, &err)),
        Ok(Ok(bytes)) => Ok(bytes),
    }
}

/// An exchange's I/O error, naming the transport and the nameserver.
fn io_failure(what: &str, server: SocketAddr, err: &std::io::Error) -> LookupError {
    LookupError::Transport(format!("{what} to {server}: {}", io_reason(err)))
}

fn io_reason(err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            "connection refused (nothing listens on that port)".into()
        }
        std::io::ErrorKind::ConnectionReset => "connection reset by the server".into(),
        std::io::ErrorKind::UnexpectedEof => "the server closed the connection".into(),
        _ => err.to_string(),
    }
}

/// How long to wait for a reply after the `sent`-th send (1 for the first)
/// of a UDP query whose first resend comes after `first`: `first`, then
/// doubled at each send (exponential backoff, RFC 1536 1), because a server
/// that is slow rather than losing datagrams answers every copy it gets,
/// and a fixed pace would multiply its work when it can least afford it.
///
/// ```
/// # use std::time::Duration;
/// # use caravan_core::transport::resend_wait;
/// let first = Duration::from_millis(100);
/// assert_eq!(resend_wait(first, 1), first);
/// assert_eq!(resend_wait(first, 3), Duration::from_millis(400));
/// ```
pub fn resend_wait(first: Duration, sent: u32) -> Duration {
    first.saturating_mul(1u32 << sent.saturating_sub(1).min(16))
}

/// One query, one reply, on a connected UDP socket from the nameserver's
/// pool ([`udp_pool`]); the query is sent again without a reply
/// ([`resend_wait`] from `retransmit`: a datagram lost under load; RFC
/// 1035 4.2.1), until the caller's bound ends the exchange. No copy is
/// sent at or after `bound` from the start (one could not be answered in
/// time). Datagrams that do not carry the query's id and question are
/// dropped and the wait goes on (a stale or spoofed reply). The socket
/// goes back to the pool only when the reply came.
async fn udp_exchange(
    server: SocketAddr,
    request: &Message,
    retransmit: Duration,
    bound: Duration,
) -> std::io::Result<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + bound;
    let retransmit = retransmit.max(Duration::from_millis(20));
    let bytes = encode(request)?;
    let mut lease = udp_pool::lease(server).await?;
    let mut sent = 0;
    let reply = loop {
        lease.socket.send(&bytes).await?;
        sent += 1;
        if sent == 1 {
            // The query is out: a caller that runs the first step on a
            // thread of its own (the NIF) gets its thread back here,
            // before any reply is handled.
            tokio::task::yield_now().await;
        }
        let resend_at = tokio::time::Instant::now()
            .checked_add(resend_wait(retransmit, sent))
            .filter(|at| *at < deadline);
        let Some(resend_at) = resend_at else {
            // No time for another copy: wait for a reply to those sent
            // (the caller's bound ends the wait).
            break reply_to(&lease.socket, &bytes, &mut lease.buf).await?;
        };
        let wait = reply_to(&lease.socket, &bytes, &mut lease.buf);
        if let Ok(reply) = tokio::time::timeout_at(resend_at, wait).await {
            break reply?;
        }
    };
    lease.keep();
    Ok(reply)
}

/// The next datagram on `socket` that is a reply to `query` ([`answers`]);
/// others are dropped.
async fn reply_to(socket: &UdpSocket, query: &[u8], buf: &mut [u8]) -> std::io::Result<Vec<u8>> {
    loop {
        let len = socket.recv(buf).await?;
        if answers(query, &buf[..len]) {
            return Ok(buf[..len].to_vec());
        }
    }
}

/// Whether `datagram` is taken as the reply to `query` (encoded): it
/// carries the query's id and is not a well-formed reply to another
/// question (a late reply to a resent copy of the socket's last query,
/// whose id matched by chance; names compared without case). A malformed
/// datagram with the id is taken, for the parser to reject.
fn answers(query: &[u8], datagram: &[u8]) -> bool {
    let other_question = datagram.get(4..6) == Some(&[0, 1]) && {
        let asked = question_of(datagram);
        !asked.is_empty() && !asked.eq_ignore_ascii_case(question_of(query))
    };
    datagram.len() >= 2 && datagram[..2] == query[..2] && !other_question
}

/// The question section of an encoded message with one question (header
/// bytes 12 to the end of QNAME, QTYPE and QCLASS), uncompressed as a
/// query writes it; empty when the message is shorter or compresses it.
fn question_of(message: &[u8]) -> &[u8] {
    let mut at = 12;
    while let Some(&len) = message.get(at) {
        if len == 0 {
            return message.get(12..at + 5).unwrap_or(&[]);
        }
        if len & 0xC0 != 0 {
            return &[];
        }
        at += 1 + usize::from(len);
    }
    &[]
}

/// One query, one reply, on a TCP connection opened for it and closed when
/// this returns (RFC 7766 6.2.1 lets a client close after its answer).
async fn tcp_exchange(server: SocketAddr, request: &Message) -> std::io::Result<Vec<u8>> {
    let bytes = encode(request)?;
    let mut stream = TcpStream::connect(server).await?;
    stream.set_nodelay(true)?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    framed.extend_from_slice(&bytes);
    stream.write_all(&framed).await?;
    // As after a UDP query's first send (udp_exchange).
    tokio::task::yield_now().await;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut reply).await?;
    Ok(reply)
}

fn encode(request: &Message) -> std::io::Result<Vec<u8>> {
    request
        .to_vec()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))
}

/// Parses a reply and checks it answers `request` (id, QR, question).
fn parse(
    server: SocketAddr,
    request: &Message,
    bytes: &[u8],
) -> Result<(Message, usize), LookupError> {
    let malformed =
        |why: String| LookupError::Transport(format!("malformed answer from {server}: {why}"));
    let message = Message::from_vec(bytes).map_err(|e| malformed(e.to_string()))?;
    if message.metadata.id != request.metadata.id
        || message.metadata.message_type != MessageType::Response
    {
        return Err(malformed("not a response to the query".into()));
    }
    let same_question = |a: &Query, b: &Query| {
        a.query_type() == b.query_type() && a.name().eq_ignore_root(b.name())
    };
    let asked = request.queries.first();
    if !message.queries.is_empty()
        && !message
            .queries
            .first()
            .zip(asked)
            .is_some_and(|(got, asked)| same_question(got, asked))
    {
        return Err(malformed("the answer is for another question".into()));
    }
    Ok((message, bytes.len()))
}

/// NOERROR and NXDOMAIN are answers; other codes are failures.
fn checked(server: SocketAddr, answer: Answer) -> Result<Answer, LookupError> {
    match answer.message.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => Ok(answer),
        code => Err(LookupError::ServerFailure(format!("{code} ({server})"))),
    }
}

/// The additional records of one answer by owner name, indexed once so
/// each SRV target finds its records in constant time (names compare
/// case-insensitively, as [`Name`]'s `Eq` and `Hash` do).
#[derive(Debug, Default)]
pub struct Additionals<'a> {
    by_owner: HashMap<&'a Name, Vec<&'a Record>>,
}

impl<'a> Additionals<'a> {
    /// Indexes `message`'s additional section.
    pub fn new(message: &'a Message) -> Self {
        let mut by_owner: HashMap<&Name, Vec<&Record>> = HashMap::new();
        for record in &message.additionals {
            by_owner.entry(&record.name).or_default().push(record);
        }
        Self { by_owner }
    }

    /// The additional records owned by `name`, in message order (empty
    /// when there are none).
    pub fn of(&self, name: &Name) -> &[&'a Record] {
        self.by_owner.get(name).map_or(&[], Vec::as_slice)
    }

    /// The A and AAAA addresses owned by `name`, in message order.
    pub fn addresses_of(&self, name: &Name) -> Vec<IpAddr> {
        self.of(name)
            .iter()
            .filter_map(|r| ip_of(&r.data))
            .collect()
    }
}

/// The address of an A or AAAA record.
pub fn ip_of(data: &RData) -> Option<IpAddr> {
    match data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
        _ => None,
    }
}

/// The [`ReplyShape`] of a parsed reply of `size` bytes, in time linear in
/// the message (each record's size is taken once, see [`wire_len`]).
pub fn shape(message: &Message, size: usize) -> ReplyShape {
    // Per owner name, the encoded size of its additional records.
    let mut extra: HashMap<&Name, usize> = HashMap::new();
    for record in &message.additionals {
        *extra.entry(&record.name).or_default() += wire_len(record);
    }
    let mut srv_answers = 0;
    let mut largest_group = 0;
    for srv in message
        .answers
        .iter()
        .filter(|r| r.record_type() == RecordType::SRV)
    {
        srv_answers += 1;
        largest_group = largest_group.max(group_size(srv, &extra, wire_len(srv)));
    }
    ReplyShape {
        truncated: message.metadata.truncation,
        has_opt: message.edns.is_some(),
        size,
        srv_answers,
        largest_group,
    }
}

/// The size of `record` encoded on its own, so without name compression
/// (RFC 1035 4.1.3: owner, then type, class, TTL and RDLENGTH in 10 bytes,
/// then RDATA). Counted for SRV (RFC 2782: its target is never
/// compressed), A and AAAA, the records a lookup's answers are made of;
/// any other type is encoded to be measured.
fn wire_len(record: &Record) -> usize {
    let rdata = match &record.data {
        RData::SRV(srv) => 6 + name_wire_len(&srv.target),
        RData::A(_) => 4,
        RData::AAAA(_) => 16,
        _ => return record.to_bytes().map_or(0, |bytes| bytes.len()),
    };
    name_wire_len(&record.name) + 10 + rdata
}

/// The size of `name` uncompressed (RFC 1035 3.1): a length byte and the
/// bytes of each label, then the root's zero byte.
fn name_wire_len(name: &Name) -> usize {
    name.iter().map(|label| label.len() + 1).sum::<usize>() + 1
}

/// An SRV record (`own` bytes) and its target's additional records (from
/// `extra`, bytes per owner), each encoded on its own (so without name
/// compression): an upper bound on the group's share of a message.
fn group_size(srv: &Record, extra: &HashMap<&Name, usize>, own: usize) -> usize {
    let RData::SRV(data) = &srv.data else {
        return own;
    };
    own + extra.get(&data.target).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::op::OpCode;
    use hickory_resolver::proto::rr::rdata::{A, AAAA, SRV, TXT};

    #[test]
    fn one_nameserver_gives_udp_the_whole_bound_more_give_it_half() {
        let bound = Duration::from_millis(1000);
        let one = Tries::for_servers(bound, 1);
        assert_eq!((one.udp, one.tcp), (bound, bound));
        assert_eq!(one.retransmit, bound / 6);
        let two = Tries::for_servers(bound, 2);
        assert_eq!((two.udp, two.tcp), (bound / 2, bound));
        let tiny = Tries::for_servers(Duration::from_millis(60), 3);
        assert_eq!(tiny.udp, Duration::from_millis(50));
    }

    fn reply(records: usize, opt: bool) -> (Message, usize) {
        let name = Name::from_ascii("web.service.consul.").unwrap();
        let mut message = Message::new(7, MessageType::Response, OpCode::Query);
        for i in 0..records {
            let target = Name::from_ascii(format!("node{i}.node.dc1.consul.")).unwrap();
            message.add_answer(Record::from_rdata(
                name.clone(),
                0,
                RData::SRV(SRV::new(1, 1, 20_000, target.clone())),
            ));
            message.add_additional(Record::from_rdata(
                target.clone(),
                0,
                RData::A(A::new(10, 0, 0, i as u8)),
            ));
            message.add_additional(Record::from_rdata(
                target,
                0,
                RData::TXT(TXT::new(vec!["consul-network-segment=".into()])),
            ));
        }
        if opt {
            message.set_edns(Edns::new());
        }
        let size = message.to_vec().unwrap().len();
        (message, size)
    }

    #[test]
    fn a_group_is_one_srv_with_its_address_and_meta() {
        let (message, size) = reply(1, true);
        let shape = shape(&message, size);
        assert_eq!(shape.srv_answers, 1);
        assert!(shape.has_opt);
        // Wire sizes (RFC 1035 3.2.1): SRV (owner 20 + 10 + 6 + target 23),
        // A (23 + 10 + 4), TXT (23 + 10 + 1 + 23).
        assert_eq!(shape.largest_group, 59 + 37 + 57);
        // Compression makes the message smaller than the sum of its parts.
        assert!(size < 12 + shape.largest_group + 11 + 40);
    }

    /// The scan per SRV record that [`shape`] and [`Additionals`] replace:
    /// the reference their indexed results must equal.
    fn shape_by_scan(message: &Message, size: usize) -> ReplyShape {
        let encoded = |r: &Record| r.to_bytes().map(|b| b.len()).unwrap_or(0);
        let srvs: Vec<&Record> = message
            .answers
            .iter()
            .filter(|r| r.record_type() == RecordType::SRV)
            .collect();
        let group = |srv: &Record| match &srv.data {
            RData::SRV(data) => {
                encoded(srv)
                    + message
                        .additionals
                        .iter()
                        .filter(|r| r.name == data.target)
                        .map(encoded)
                        .sum::<usize>()
            }
            _ => encoded(srv),
        };
        ReplyShape {
            truncated: message.metadata.truncation,
            has_opt: message.edns.is_some(),
            size,
            srv_answers: srvs.len(),
            largest_group: srvs.iter().map(|srv| group(srv)).max().unwrap_or(0),
        }
    }

    fn addresses_by_scan(target: &Name, additionals: &[Record]) -> Vec<IpAddr> {
        additionals
            .iter()
            .filter(|record| record.name == *target)
            .filter_map(|record| ip_of(&record.data))
            .collect()
    }

    /// A reply whose SRV records point at `targets` (indexes into a few
    /// names, in varying case, some without the root dot), with additional
    /// records owned by `owners`: `(name index, kind)`, kind 0 A, 1 AAAA,
    /// 2 TXT.
    fn mixed_reply(targets: &[usize], owners: &[(usize, u8)]) -> Message {
        let names = [
            "node0.node.dc1.consul.",
            "NODE0.node.DC1.consul.",
            "node1.node.dc1.consul.",
            "node1.node.dc1.consul",
            "0a000001.addr.dc1.consul.",
            "other.example.",
        ];
        let name = |i: usize| Name::from_ascii(names[i % names.len()]).unwrap();
        let owner = Name::from_ascii("web.service.consul.").unwrap();
        let mut message = Message::new(7, MessageType::Response, OpCode::Query);
        for (i, target) in targets.iter().enumerate() {
            message.add_answer(Record::from_rdata(
                owner.clone(),
                0,
                RData::SRV(SRV::new(1, 1, 20_000 + i as u16, name(*target))),
            ));
        }
        message.add_answer(Record::from_rdata(
            owner.clone(),
            0,
            RData::TXT(TXT::new(vec!["not an SRV record".into()])),
        ));
        for (i, (who, kind)) in owners.iter().enumerate() {
            let data = match kind % 3 {
                0 => RData::A(A::new(10, 0, 0, i as u8)),
                1 => RData::AAAA(AAAA::new(0xfd00, 0, 0, 0, 0, 0, 0, i as u16)),
                _ => RData::TXT(TXT::new(vec![format!("meta={i}")])),
            };
            message.add_additional(Record::from_rdata(name(*who), 0, data));
        }
        message
    }

    proptest::proptest! {
        #[test]
        fn indexed_answers_read_as_the_scans_did(
            targets in proptest::collection::vec(0usize..6, 0..40),
            owners in proptest::collection::vec((0usize..6, 0u8..3), 0..60),
            size in 0usize..2000,
        ) {
            let message = mixed_reply(&targets, &owners);
            proptest::prop_assert_eq!(shape(&message, size), shape_by_scan(&message, size));
            let index = Additionals::new(&message);
            for record in &message.answers {
                if let RData::SRV(srv) = &record.data {
                    proptest::prop_assert_eq!(
                        index.addresses_of(&srv.target),
                        addresses_by_scan(&srv.target, &message.additionals)
                    );
                }
            }
        }
    }

    #[test]
    fn wire_len_is_the_encoded_size() {
        let owner = Name::from_ascii("web.service.consul.").unwrap();
        let records = [
            RData::SRV(SRV::new(
                1,
                1,
                4370,
                Name::from_ascii("Node0.node.dc1.consul.").unwrap(),
            )),
            RData::SRV(SRV::new(
                1,
                1,
                4370,
                Name::from_ascii("node1.node.dc1.consul").unwrap(),
            )),
            RData::SRV(SRV::new(0, 0, 0, Name::root())),
            RData::A(A::new(10, 0, 0, 1)),
            RData::AAAA(AAAA::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)),
            RData::TXT(TXT::new(vec!["consul-network-segment=".into()])),
        ];
        for data in records {
            for name in [owner.clone(), Name::root(), Name::from_ascii("a").unwrap()] {
                let record = Record::from_rdata(name, 30, data.clone());
                assert_eq!(
                    wire_len(&record),
                    record.to_bytes().unwrap().len(),
                    "{record}"
                );
            }
        }
    }

    #[test]
    fn three_hundred_groups_shape_as_the_scan_did() {
        let (message, size) = reply(300, true);
        assert_eq!(shape(&message, size), shape_by_scan(&message, size));
        assert_eq!(shape(&message, size).srv_answers, 300);
    }

    #[test]
    fn shapes_feed_the_decision() {
        let (message, size) = reply(2, true);
        assert_eq!(
            trim::may_be_trimmed(&shape(&message, size), EDNS_PAYLOAD_LEN),
            None
        );
        let (message, size) = reply(3, false);
        assert_eq!(
            trim::may_be_trimmed(&shape(&message, size), EDNS_PAYLOAD_LEN),
            Some(Doubt::AnswerLimit)
        );
        let (message, size) = reply(20, true);
        assert!(size > 1100, "{size}");
        assert_eq!(
            trim::may_be_trimmed(&shape(&message, size), EDNS_PAYLOAD_LEN),
            Some(Doubt::NearPayload)
        );
    }

    #[tokio::test]
    async fn a_lost_query_is_sent_again() {
        // A server that ignores the first datagram and answers the second
        // with an empty NOERROR reply.
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 512];
            let (_, _) = server.recv_from(&mut buf).await.unwrap();
            let (len, from) = server.recv_from(&mut buf).await.unwrap();
            let query = Message::from_vec(&buf[..len]).unwrap();
            let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
            reply.add_queries(query.queries.clone());
            reply.set_edns(Edns::new());
            server
                .send_to(&reply.to_vec().unwrap(), from)
                .await
                .unwrap();
        });
        let name = Name::from_ascii("web.service.consul.").unwrap();
        let answer = query(
            addr,
            &name,
            RecordType::SRV,
            Tries {
                udp: Duration::from_secs(3),
                // Resent after this.
                retransmit: Duration::from_secs(1),
                tcp: Duration::from_secs(3),
            },
        )
        .await
        .unwrap();
        assert_eq!(answer.transport, Transport::Udp);
        assert!(answer.message.answers.is_empty());
    }

    #[tokio::test]
    async fn a_reply_to_another_question_with_the_same_id_is_dropped() {
        // A server that answers each query first with a reply to another
        // question under the query's id (what a late reply on a kept
        // socket can look like), then with the right one.
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 512];
            loop {
                let (len, from) = server.recv_from(&mut buf).await.unwrap();
                let query = Message::from_vec(&buf[..len]).unwrap();
                let other = Name::from_ascii("other.service.consul.").unwrap();
                for name in [other, query.queries[0].name().clone()] {
                    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
                    reply.add_query(Query::query(name, RecordType::SRV));
                    reply.set_edns(Edns::new());
                    let bytes = reply.to_vec().unwrap();
                    server.send_to(&bytes, from).await.unwrap();
                }
            }
        });
        let tries = Tries::for_servers(Duration::from_secs(5), 1);
        for name in ["web.service.consul.", "api.service.consul."] {
            let name = Name::from_ascii(name).unwrap();
            let answer = query(addr, &name, RecordType::SRV, tries).await.unwrap();
            assert_eq!(answer.message.queries[0].name(), &name);
        }
    }

    /// A query with the given bounds, for the [`UdpQuery`] tests.
    fn polled(server: SocketAddr, name: &str, udp: u64, retransmit: u64) -> UdpQuery {
        let name = Name::from_ascii(name).unwrap();
        let tries = Tries {
            udp: Duration::from_secs(udp),
            retransmit: Duration::from_secs(retransmit),
            tcp: Duration::from_secs(udp),
        };
        UdpQuery::send(server, &name, RecordType::SRV, tries)
            .unwrap()
            .expect("a query on UDP")
    }

    /// The datagrams waiting on `socket` (non-blocking).
    fn datagrams(socket: &std::net::UdpSocket) -> Vec<(Vec<u8>, SocketAddr)> {
        socket.set_nonblocking(true).unwrap();
        let mut buf = vec![0u8; 512];
        std::iter::from_fn(|| {
            socket
                .recv_from(&mut buf)
                .ok()
                .map(|(len, from)| (buf[..len].to_vec(), from))
        })
        .collect()
    }

    #[test]
    fn a_query_polled_by_its_caller_sends_its_copies_when_query_would() {
        // Bounds far above the test's own run time, and explicit instants:
        // each copy is due exactly when udp_exchange would send it.
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut query = polled(server.local_addr().unwrap(), "web.service.consul.", 60, 10);
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            datagrams(&server).len(),
            1,
            "the first copy goes out at once"
        );
        let wait = query.tick(t0).unwrap();
        assert!(wait <= Duration::from_secs(10) && wait > Duration::from_secs(9));
        let copies = |query: &mut UdpQuery, at: u64| {
            query.tick(t0 + Duration::from_secs(at)).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            datagrams(&server).len()
        };
        assert_eq!(
            copies(&mut query, 10),
            1,
            "the first resend, after retransmit"
        );
        assert_eq!(copies(&mut query, 20), 0, "the wait doubles");
        assert_eq!(
            copies(&mut query, 30),
            1,
            "the second resend, 20 s after the first"
        );
        // The next would be at 70 s, past the 60 s bound: none is sent.
        assert_eq!(copies(&mut query, 59), 0);
        let err = query.tick(t0 + Duration::from_secs(61)).unwrap_err();
        assert_eq!(err.kind(), "timeout");
    }

    #[test]
    fn a_query_polled_by_its_caller_takes_only_its_reply() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut query = polled(server.local_addr().unwrap(), "web.service.consul.", 60, 10);
        assert!(query.read().unwrap().is_none(), "nothing has come yet");
        std::thread::sleep(Duration::from_millis(20));
        let (bytes, from) = datagrams(&server).pop().unwrap();
        let asked = Message::from_vec(&bytes).unwrap();
        let reply = |id: u16, name: &str| {
            let mut reply = Message::response(id, asked.metadata.op_code);
            reply.add_query(Query::query(
                Name::from_ascii(name).unwrap(),
                RecordType::SRV,
            ));
            reply.to_vec().unwrap()
        };
        // Another id, and the query's id for another question: dropped.
        let id = asked.metadata.id;
        server
            .send_to(&reply(id.wrapping_add(1), "web.service.consul."), from)
            .unwrap();
        server
            .send_to(&reply(id, "other.service.consul."), from)
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert!(query.read().unwrap().is_none());
        server
            .send_to(&reply(id, "WEB.service.consul."), from)
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let prior = query.read().unwrap().expect("the reply");
        assert_eq!(prior.request.metadata.id, id);
        assert_eq!(prior.server, server.local_addr().unwrap());
    }

    #[test]
    fn a_query_polled_by_its_caller_hears_a_refusal_at_once() {
        // A port nothing listens on: the ICMP error comes back on the
        // connected socket.
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let mut query = polled(addr, "web.service.consul.", 60, 10);
        std::thread::sleep(Duration::from_millis(20));
        let err = query.read().err().expect("refused");
        assert_eq!(err.kind(), "transport");
        assert!(err.to_string().contains("connection refused"), "{err}");
    }

    #[test]
    fn resends_back_off() {
        let first = Duration::from_millis(100);
        let waits: Vec<u64> = (1..=5)
            .map(|sent| resend_wait(first, sent).as_millis() as u64)
            .collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600]);
        // Huge counts and waits saturate instead of overflowing.
        assert_eq!(resend_wait(first, u32::MAX), resend_wait(first, 17));
        assert_eq!(resend_wait(Duration::MAX, 3), Duration::MAX);
    }

    #[tokio::test]
    async fn a_silent_server_gets_a_handful_of_copies_not_one_per_interval() {
        // A server that never answers: over a bound of ten first waits, a
        // fixed pace would send 10 or 11 copies; doubling sends 4 (at 0, 1,
        // 3 and 7 first waits; the 5th would be at 15, past the bound). A
        // slow machine can only make the count smaller, and not below 2:
        // the bound's timer is checked after the exchange's own, so the
        // first resend is sent even after a stall.
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let name = Name::from_ascii("web.service.consul.").unwrap();
        let tries = Tries {
            udp: Duration::from_millis(500),
            retransmit: Duration::from_millis(50),
            tcp: Duration::from_millis(500),
        };
        let err = query(addr, &name, RecordType::SRV, tries)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "timeout", "{err}");
        let mut buf = vec![0u8; 512];
        let mut copies = 0;
        while let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(50), server.recv_from(&mut buf)).await
        {
            copies += 1;
        }
        assert!((2..=4).contains(&copies), "{copies} copies");
    }

    /// A TCP server that answers every query on `listener` with `records`
    /// SRV records (too many for UDP), while `answer` is true; otherwise
    /// it reads the query and never answers.
    async fn tcp_server(
        listener: tokio::net::TcpListener,
        records: usize,
        answer: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut len = [0u8; 2];
                stream.read_exact(&mut len).await.unwrap();
                let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
                stream.read_exact(&mut query).await.unwrap();
                if !answer.load(std::sync::atomic::Ordering::SeqCst) {
                    // Hold the connection open without a reply.
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    return;
                }
                let query = Message::from_vec(&query).unwrap();
                let (mut message, _) = reply(records, true);
                message.metadata.id = query.metadata.id;
                message.add_queries(query.queries.clone());
                let bytes = message.to_vec().unwrap();
                let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&bytes);
                stream.write_all(&framed).await.unwrap();
            });
        }
    }

    #[tokio::test]
    async fn a_direct_tcp_timeout_keeps_tcp_first_once_a_refusal_forgets_it() {
        // UDP on a port that answers with TC; TCP on the same port number.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let udp = tokio::net::UdpSocket::bind(addr).await.unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 512];
            while let Ok((len, from)) = udp.recv_from(&mut buf).await {
                let query = Message::from_vec(&buf[..len]).unwrap();
                let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
                reply.add_queries(query.queries.clone());
                reply.metadata.truncation = true;
                reply.set_edns(Edns::new());
                let _ = udp.send_to(&reply.to_vec().unwrap(), from).await;
            }
        });
        let answer = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let server = tokio::spawn(tcp_server(listener, 40, answer.clone()));
        let name = Name::from_ascii("web.service.consul.").unwrap();
        let key = Key::new(addr, &name.to_ascii(), u16::from(RecordType::SRV));
        // Generous bounds where an answer is expected (a loaded machine
        // must not turn them into timeouts); a short one where the server
        // holds the query.
        let patient = Tries {
            udp: Duration::from_secs(5),
            retransmit: Duration::from_secs(1),
            tcp: Duration::from_secs(5),
        };
        let short = Tries {
            tcp: Duration::from_millis(300),
            ..patient
        };
        let remembered = || TCP_FIRST.lock().lookup(&key, Instant::now()).is_some();
        let learn = || async {
            answer.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = query(addr, &name, RecordType::SRV, patient).await.unwrap();
            answer.store(false, std::sync::atomic::Ordering::SeqCst);
        };

        // UDP (truncated), then TCP: 40 records need TCP, so it is learnt.
        answer.store(true, std::sync::atomic::Ordering::SeqCst);
        let first = query(addr, &name, RecordType::SRV, patient).await.unwrap();
        assert_eq!(first.doubt, Some(Doubt::Truncated));
        assert!(remembered());
        answer.store(false, std::sync::atomic::Ordering::SeqCst);

        // Asked over TCP directly; the server holds the query: a timeout,
        // and the memory stays (the next poll goes over TCP again).
        let err = query(addr, &name, RecordType::SRV, short)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "timeout", "{err}");
        assert!(remembered(), "a timeout forgot the TCP memory");

        // A second timeout in a row: TCP may be blocked; forgotten, so the
        // next query starts on UDP.
        let err = query(addr, &name, RecordType::SRV, short)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "timeout", "{err}");
        assert!(!remembered(), "two timeouts in a row kept the TCP memory");

        // Learnt again (UDP, then TCP); then nothing listens on TCP any
        // more: refused, and forgotten at once.
        learn().await;
        assert!(remembered());
        server.abort();
        let _ = server.await;
        let err = query(addr, &name, RecordType::SRV, patient)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "transport", "{err}");
        assert!(!remembered(), "a refusal kept the TCP memory");
    }

    #[tokio::test]
    async fn a_closed_port_is_refused_at_once() {
        // Bind and drop, so the port is (very likely) closed.
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server: SocketAddr = ([127, 0, 0, 1], port).into();
        let name = Name::from_ascii("web.service.consul.").unwrap();
        let err = query(
            server,
            &name,
            RecordType::SRV,
            Tries {
                udp: Duration::from_secs(5),
                retransmit: Duration::from_secs(1),
                tcp: Duration::from_secs(5),
            },
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), "transport", "{err}");
        assert!(err.to_string().contains("refused"), "{err}");
        assert!(err.to_string().contains(&server.to_string()), "{err}");
    }
}
