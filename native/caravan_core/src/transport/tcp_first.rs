//! Which queries go straight to TCP: the memory behind the transport's
//! one-query-per-poll rule (see [`crate::transport`]). Discovery's SRV
//! answers are the ones that outgrow UDP.
//!
//! A node polls the same query every second. When its answer no longer fits
//! a UDP datagram (more than about 20 instances with their addresses in
//! 1232 bytes), asking over UDP first costs every poll two queries (the
//! doubted UDP answer, then TCP) and, when N nodes poll at once, a burst of
//! UDP answers the server builds only to see them thrown away. RFC 7766 (5)
//! lets a client send a query over TCP directly; RFC 9210 makes TCP a
//! requirement for every DNS server, so one that answered over TCP once is
//! asked that way again.
//!
//! The rule, per (nameserver, query name, record type):
//!
//! - remembered when the complete (TCP) answer is one a UDP reply could not
//!   be trusted to carry: [`super::trim::may_be_trimmed`] on the TCP
//!   answer's own size and records, with the EDNS0 support the server
//!   showed over UDP;
//! - forgotten when a TCP answer would now fit (the service shrank: the next
//!   poll is back on UDP), when a direct TCP exchange fails outright
//!   (refused, reset, malformed: the next poll starts over on UDP, as if
//!   nothing were known), at the [`TIMEOUTS_TO_FORGET`]th direct TCP
//!   timeout in a row (one timeout says the server is slow, and keeps it;
//!   a second says TCP may be blocked, and a UDP answer that fits again
//!   must then not wait for [`FORGET_AFTER`]), and after [`FORGET_AFTER`]
//!   in any case;
//! - at most [`CAPACITY`] entries (an entry is a few dozen bytes); when
//!   full, the oldest is dropped.
//!
//! The data structure is pure: the caller passes the time, so the rule is
//! unit-tested without a clock.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long an entry is trusted without being confirmed by a TCP answer.
/// Every direct TCP answer re-checks (and renews) it, so this only bounds
/// the life of entries for queries nobody asks any more.
pub const FORGET_AFTER: Duration = Duration::from_secs(600);

/// Direct TCP timeouts in a row after which a query is forgotten.
pub const TIMEOUTS_TO_FORGET: u8 = 2;

/// The most (nameserver, query) pairs remembered at once.
pub const CAPACITY: usize = 1024;

/// A query at one nameserver: the server, the query name in lower case
/// without the trailing dot, and the record type's code.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    server: SocketAddr,
    name: String,
    record_type: u16,
}

impl Key {
    /// The key of `name` (any case, with or without the trailing dot) of
    /// type `record_type` (its RFC 1035 code, 33 for SRV) at `server`.
    ///
    /// ```
    /// use caravan_core::transport::tcp_first::Key;
    /// let server = "127.0.0.1:53".parse().unwrap();
    /// assert_eq!(Key::new(server, "Web.Service.Consul.", 33), Key::new(server, "web.service.consul", 33));
    /// ```
    pub fn new(server: SocketAddr, name: &str, record_type: u16) -> Self {
        Self {
            server,
            name: name.trim_end_matches('.').to_ascii_lowercase(),
            record_type,
        }
    }
}

/// What is remembered of a query that needed TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Whether the server's UDP reply carried an OPT record (EDNS0): the
    /// trim rule for a server that ignores EDNS0 differs.
    pub has_opt: bool,
    since: Instant,
    /// Direct TCP timeouts since the last answer.
    timeouts: u8,
}

/// The queries whose answers needed TCP (see the module doc).
#[derive(Debug, Default)]
pub struct TcpFirst {
    entries: HashMap<Key, Entry>,
}

impl TcpFirst {
    /// An empty memory.
    pub fn new() -> Self {
        Self::default()
    }

    /// The entry for `key` if the query should go straight to TCP at `now`;
    /// `None` when unknown or older than [`FORGET_AFTER`] (then dropped).
    pub fn lookup(&mut self, key: &Key, now: Instant) -> Option<Entry> {
        let entry = *self.entries.get(key)?;
        if now.saturating_duration_since(entry.since) >= FORGET_AFTER {
            self.entries.remove(key);
            return None;
        }
        Some(entry)
    }

    /// Records the outcome of a complete (TCP) answer for `key`:
    /// `needs_tcp` whether a UDP reply of that answer would be doubted,
    /// `has_opt` whether the server speaks EDNS0. Remembers (or renews) the
    /// query when it needs TCP, forgets it when it does not.
    pub fn learn(&mut self, key: Key, needs_tcp: bool, has_opt: bool, now: Instant) {
        if !needs_tcp {
            self.entries.remove(&key);
            return;
        }
        if self.entries.len() >= CAPACITY && !self.entries.contains_key(&key) {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, entry)| entry.since)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(
            key,
            Entry {
                has_opt,
                since: now,
                timeouts: 0,
            },
        );
    }

    /// Forgets `key` (a direct TCP exchange failed outright).
    pub fn forget(&mut self, key: &Key) {
        self.entries.remove(key);
    }

    /// Notes a direct TCP exchange of `key` that timed out: kept the first
    /// time (a slow server), forgotten at the [`TIMEOUTS_TO_FORGET`]th in a
    /// row (TCP may be blocked; the next query starts on UDP). An answer
    /// ([`TcpFirst::learn`]) resets the count. Returns whether it is still
    /// remembered.
    pub fn timed_out(&mut self, key: &Key) -> bool {
        let Some(entry) = self.entries.get_mut(key) else {
            return false;
        };
        entry.timeouts = entry.timeouts.saturating_add(1);
        if entry.timeouts >= TIMEOUTS_TO_FORGET {
            self.entries.remove(key);
            return false;
        }
        true
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// How many queries are remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u16) -> Key {
        Key::new(
            SocketAddr::from(([127, 0, 0, 1], 8600)),
            &format!("s{i}.service.consul"),
            33,
        )
    }

    #[test]
    fn unknown_queries_start_on_udp() {
        let mut memory = TcpFirst::new();
        assert_eq!(memory.lookup(&key(1), Instant::now()), None);
    }

    #[test]
    fn a_query_that_needed_tcp_goes_straight_to_tcp() {
        let mut memory = TcpFirst::new();
        let now = Instant::now();
        memory.learn(key(1), true, true, now);
        let entry = memory
            .lookup(&key(1), now + Duration::from_secs(1))
            .unwrap();
        assert!(entry.has_opt);
        assert_eq!(memory.lookup(&key(2), now), None, "per query");
        let other_server = Key::new(
            SocketAddr::from(([127, 0, 0, 2], 8600)),
            "s1.service.consul",
            33,
        );
        assert_eq!(memory.lookup(&other_server, now), None, "per nameserver");
        let other_type = Key::new(
            SocketAddr::from(([127, 0, 0, 1], 8600)),
            "s1.service.consul",
            1,
        );
        assert_eq!(memory.lookup(&other_type, now), None, "per record type");
    }

    #[test]
    fn an_answer_that_fits_again_is_forgotten() {
        let mut memory = TcpFirst::new();
        let now = Instant::now();
        memory.learn(key(1), true, true, now);
        memory.learn(key(1), false, true, now);
        assert_eq!(memory.lookup(&key(1), now), None);
        assert!(memory.is_empty());
    }

    #[test]
    fn a_failed_tcp_exchange_forgets() {
        let mut memory = TcpFirst::new();
        let now = Instant::now();
        memory.learn(key(1), true, false, now);
        memory.forget(&key(1));
        assert_eq!(memory.lookup(&key(1), now), None);
    }

    #[test]
    fn one_timeout_keeps_a_second_in_a_row_forgets_an_answer_resets() {
        let mut memory = TcpFirst::new();
        let now = Instant::now();
        memory.learn(key(1), true, true, now);
        assert!(memory.timed_out(&key(1)));
        assert!(memory.lookup(&key(1), now).is_some());
        // An answer in between: the count starts again.
        memory.learn(key(1), true, true, now);
        assert!(memory.timed_out(&key(1)));
        assert!(memory.lookup(&key(1), now).is_some());
        // Two in a row.
        assert!(!memory.timed_out(&key(1)));
        assert_eq!(memory.lookup(&key(1), now), None);
        // Unknown keys stay unknown.
        assert!(!memory.timed_out(&key(2)));
        assert!(memory.is_empty());
    }

    #[test]
    fn entries_expire_and_renew() {
        let mut memory = TcpFirst::new();
        let t0 = Instant::now();
        memory.learn(key(1), true, true, t0);
        let later = t0 + FORGET_AFTER - Duration::from_secs(1);
        assert!(memory.lookup(&key(1), later).is_some());
        memory.learn(key(1), true, true, later);
        assert!(
            memory.lookup(&key(1), t0 + FORGET_AFTER).is_some(),
            "renewed"
        );
        assert_eq!(
            memory.lookup(&key(1), later + FORGET_AFTER),
            None,
            "expired"
        );
        assert!(memory.is_empty(), "an expired entry is dropped");
    }

    #[test]
    fn capacity_drops_the_oldest() {
        let mut memory = TcpFirst::new();
        let t0 = Instant::now();
        for i in 0..CAPACITY as u16 {
            memory.learn(key(i), true, true, t0 + Duration::from_millis(u64::from(i)));
        }
        assert_eq!(memory.len(), CAPACITY);
        let t1 = t0 + Duration::from_secs(5);
        memory.learn(key(9999), true, true, t1);
        assert_eq!(memory.len(), CAPACITY);
        assert_eq!(memory.lookup(&key(0), t1), None, "the oldest went");
        assert!(memory.lookup(&key(1), t1).is_some());
        assert!(memory.lookup(&key(9999), t1).is_some());
    }

    #[test]
    fn names_compare_without_case_or_root() {
        let mut memory = TcpFirst::new();
        let now = Instant::now();
        let server = SocketAddr::from(([127, 0, 0, 1], 53));
        memory.learn(Key::new(server, "WEB.service.consul.", 33), true, true, now);
        assert!(memory
            .lookup(&Key::new(server, "web.service.consul", 33), now)
            .is_some());
    }
}
