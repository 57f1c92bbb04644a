//! Connected UDP sockets kept per nameserver between queries, and a bound
//! on the UDP queries one nameserver has outstanding.
//!
//! A socket made, bound and connected per query cost a lookup about a
//! quarter of its time (bench/README.md, "The lookup path"), so a socket
//! whose exchange ended with its reply goes back to its nameserver's pool
//! and the next query reuses it. It stays connected, so a closed
//! nameserver port is still refused at once (the ICMP error comes back on
//! the socket). Only an exchange that got its reply returns its socket:
//! one that timed out or failed closes it, so a reused socket has at most
//! the replies to resent copies of a finished query pending, which the
//! exchange drops by id and question ([`super::reply_to`]); an error left
//! pending on it by a late ICMP message is cleared when it is taken.
//!
//! A query waited for outside tokio ([`super::UdpQuery`]) takes its socket
//! as a [`StdLease`], never registered with tokio's reactor, and does not
//! wait for a place under the bound: with none free it takes tokio's path.
//! A socket goes back to the pool as its exchange held it (registered with
//! the reactor or not), and each kind of exchange takes a socket of its
//! own kind first: a socket is moved in or out of the reactor only when
//! none of the right kind is kept, not once or twice per exchange.
//!
//! The bound ([`MAX_OUTSTANDING`] per nameserver) keeps a burst of lookups
//! from overflowing the server's receive buffer: a dropped query costs its
//! lookup a resend interval, a query that waits here only the time it
//! takes the server to answer the ones ahead of it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use once_cell::sync::Lazy;
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The most UDP queries outstanding at one nameserver (and so the most
/// sockets kept for it): below what a Linux server's default receive
/// buffer holds (212,992 bytes, a few hundred small datagrams), far above
/// what discovery asks. 1,000 lookups in flight against dnsmasq ran as
/// fast with 64, 128 or 192, none failing (bench/README.md, "The lookup
/// path").
pub const MAX_OUTSTANDING: usize = 128;

/// The receive buffer each socket keeps: the largest DNS message.
const BUFFER: usize = super::MAX_MESSAGE;

struct Server {
    permits: Arc<Semaphore>,
    idle: Vec<Idle>,
}

struct Idle {
    socket: Kept,
    buf: Box<[u8]>,
    since: Instant,
}

/// A kept socket, as the exchange that last held it left it: registered
/// with the reactor of the runtime named, or not.
enum Kept {
    Std(std::net::UdpSocket),
    Reactor(tokio::net::UdpSocket, tokio::runtime::Id),
}

/// A kept socket unused for this long is closed (and a nameserver with
/// none kept and none in use is forgotten), so nameservers no longer asked
/// hold no sockets.
pub const IDLE_FOR: Duration = Duration::from_secs(60);

struct Pool {
    servers: HashMap<SocketAddr, Server>,
    swept: Instant,
}

impl Pool {
    /// Closes the sockets idle for [`IDLE_FOR`], at most once a second.
    fn sweep(&mut self, now: Instant) {
        if now.duration_since(self.swept) < Duration::from_secs(1) {
            return;
        }
        self.swept = now;
        self.servers.retain(|_, entry| {
            entry
                .idle
                .retain(|idle| now.duration_since(idle.since) < IDLE_FOR);
            !entry.idle.is_empty() || entry.permits.available_permits() < MAX_OUTSTANDING
        });
    }
}

static POOL: Lazy<Mutex<Pool>> = Lazy::new(|| {
    Mutex::new(Pool {
        servers: HashMap::new(),
        swept: Instant::now(),
    })
});

/// A socket connected to one nameserver, held by one exchange at a time,
/// with its receive buffer. Dropped, it is closed; [`Lease::keep`] puts
/// it back in the pool.
pub(super) struct Lease {
    pub(super) socket: tokio::net::UdpSocket,
    pub(super) buf: Box<[u8]>,
    server: SocketAddr,
    /// The runtime whose reactor the socket is registered with.
    runtime: tokio::runtime::Id,
    _permit: OwnedSemaphorePermit,
}

/// A socket connected to `server` from the pool, or a new one; waits while
/// [`MAX_OUTSTANDING`] queries to `server` are outstanding. Must run inside
/// a tokio runtime (the socket is registered with its reactor).
pub(super) async fn lease(server: SocketAddr) -> std::io::Result<Lease> {
    let permit = permits(server)
        .acquire_owned()
        .await
        .expect("the pool never closes its semaphores");
    let runtime = tokio::runtime::Handle::current().id();
    let (socket, buf) = socket_for(server, Some(runtime))?;
    let socket = match socket {
        Kept::Reactor(socket, id) if id == runtime => socket,
        // Registered with another runtime (tests run many): a new socket.
        Kept::Reactor(..) => tokio::net::UdpSocket::from_std(connected(server)?)?,
        Kept::Std(socket) => tokio::net::UdpSocket::from_std(socket)?,
    };
    Ok(Lease {
        socket,
        buf,
        server,
        runtime,
        _permit: permit,
    })
}

/// [`lease`] for a query whose reply is waited for outside tokio
/// ([`super::UdpQuery`]): `Ok(None)` at once, without waiting, while
/// [`MAX_OUTSTANDING`] queries to `server` are outstanding.
pub(super) fn try_lease_std(server: SocketAddr) -> std::io::Result<Option<StdLease>> {
    let Ok(permit) = permits(server).try_acquire_owned() else {
        return Ok(None);
    };
    let (socket, buf) = socket_for(server, None)?;
    let socket = match socket {
        Kept::Std(socket) => socket,
        // Taken out of its reactor; should that fail, a new socket.
        Kept::Reactor(socket, _) => socket.into_std().or_else(|_| connected(server))?,
    };
    Ok(Some(StdLease {
        socket,
        buf,
        server,
        _permit: permit,
    }))
}

/// The bound on `server`'s outstanding queries, made on first use.
fn permits(server: SocketAddr) -> Arc<Semaphore> {
    POOL.lock()
        .servers
        .entry(server)
        .or_insert_with(|| Server {
            permits: Arc::new(Semaphore::new(MAX_OUTSTANDING)),
            idle: Vec::new(),
        })
        .permits
        .clone()
}

/// A kept socket connected to `server` (its pending error cleared) or a
/// new one, with its receive buffer; for the holder of a permit. A socket
/// registered with the reactor of `reactor` (`None`: with none) is taken
/// first, so exchanges of both kinds on one nameserver do not move one
/// socket in and out of the reactor by turns.
fn socket_for(
    server: SocketAddr,
    reactor: Option<tokio::runtime::Id>,
) -> std::io::Result<(Kept, Box<[u8]>)> {
    let idle = POOL.lock().servers.get_mut(&server).and_then(|entry| {
        let kind = |idle: &Idle| match idle.socket {
            Kept::Std(_) => None,
            Kept::Reactor(_, id) => Some(id),
        };
        let at = entry
            .idle
            .iter()
            .rposition(|idle| kind(idle) == reactor)
            .or(entry.idle.len().checked_sub(1))?;
        Some(entry.idle.swap_remove(at))
    });
    match idle {
        Some(idle) => {
            // An ICMP error for a resent copy of the last query must not
            // fail this one.
            let _ = match &idle.socket {
                Kept::Std(socket) => socket.take_error(),
                Kept::Reactor(socket, _) => socket.take_error(),
            };
            Ok((idle.socket, idle.buf))
        }
        None => Ok((
            Kept::Std(connected(server)?),
            vec![0u8; BUFFER].into_boxed_slice(),
        )),
    }
}

/// Puts a socket whose exchange got its reply back in `server`'s pool.
fn put_back(server: SocketAddr, socket: Kept, buf: Box<[u8]>) {
    let now = Instant::now();
    let mut pool = POOL.lock();
    if let Some(entry) = pool.servers.get_mut(&server) {
        entry.idle.push(Idle {
            socket,
            buf,
            since: now,
        });
    }
    pool.sweep(now);
}

/// A [`Lease`] whose socket is not registered with tokio's reactor: the
/// caller waits for its reply (the NIF, through the BEAM's own poll set).
/// Dropped, the socket is closed; [`StdLease::keep`] puts it back.
pub struct StdLease {
    pub(super) socket: std::net::UdpSocket,
    pub(super) buf: Box<[u8]>,
    server: SocketAddr,
    _permit: OwnedSemaphorePermit,
}

impl StdLease {
    /// Puts the socket back in its nameserver's pool (its exchange got its
    /// reply).
    pub fn keep(self) {
        put_back(self.server, Kept::Std(self.socket), self.buf);
    }
}

impl std::os::fd::AsRawFd for StdLease {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.socket.as_raw_fd()
    }
}

fn connected(server: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let local: SocketAddr = match server.ip() {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = std::net::UdpSocket::bind(local)?;
    socket.connect(server)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

impl Lease {
    /// Puts the socket back in its nameserver's pool (its exchange got its
    /// reply), still registered with the reactor.
    pub(super) fn keep(self) {
        put_back(
            self.server,
            Kept::Reactor(self.socket, self.runtime),
            self.buf,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_kept_socket_is_reused_and_the_bound_holds() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let first = lease(addr).await.unwrap();
        let port = first.socket.local_addr().unwrap().port();
        first.keep();
        let again = lease(addr).await.unwrap();
        assert_eq!(again.socket.local_addr().unwrap().port(), port);
        drop(again);
        // Dropped, not kept: closed, so the next lease makes a new socket.
        let mut leases = Vec::new();
        for _ in 0..MAX_OUTSTANDING {
            leases.push(lease(addr).await.unwrap());
        }
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), lease(addr));
        assert!(
            waiting.await.is_err(),
            "a lease past the bound did not wait"
        );
        leases.pop().unwrap().keep();
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), lease(addr));
        assert!(next.await.is_ok(), "a returned lease did not free a place");
    }

    #[tokio::test]
    async fn a_kept_socket_serves_either_kind_of_exchange() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let in_reactor = lease(addr).await.unwrap();
        let port = in_reactor.socket.local_addr().unwrap().port();
        in_reactor.keep();
        // Taken out of the reactor for a query waited for outside tokio...
        let outside = try_lease_std(addr).unwrap().unwrap();
        assert_eq!(outside.socket.local_addr().unwrap().port(), port);
        outside.socket.send(b"out").unwrap();
        outside.keep();
        // ...and registered again for the next exchange on tokio, which
        // still sends and receives on it.
        let again = lease(addr).await.unwrap();
        assert_eq!(again.socket.local_addr().unwrap().port(), port);
        again.socket.send(b"in").await.unwrap();
        let mut buf = [0u8; 8];
        let (len, from) = server.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..len], from.port()), (&b"out"[..], port));
        let (len, _) = server.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"in");
        server.send_to(b"reply", from).unwrap();
        let mut reply = [0u8; 8];
        let len = tokio::time::timeout(Duration::from_secs(5), again.socket.recv(&mut reply))
            .await
            .expect("a kept socket, registered again, got no reply")
            .unwrap();
        assert_eq!(&reply[..len], b"reply");
    }

    #[tokio::test]
    async fn each_kind_of_exchange_takes_a_socket_of_its_kind_first() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let in_reactor = lease(addr).await.unwrap();
        let reactor_port = in_reactor.socket.local_addr().unwrap().port();
        let outside = try_lease_std(addr).unwrap().unwrap();
        let std_port = outside.socket.local_addr().unwrap().port();
        // Kept last, the socket outside the reactor is not what the next
        // exchange on tokio takes...
        in_reactor.keep();
        outside.keep();
        let in_reactor = lease(addr).await.unwrap();
        assert_eq!(in_reactor.socket.local_addr().unwrap().port(), reactor_port);
        in_reactor.keep();
        // ...nor the reactor's socket what the next query outside takes.
        let outside = try_lease_std(addr).unwrap().unwrap();
        assert_eq!(outside.socket.local_addr().unwrap().port(), std_port);
    }

    #[test]
    fn a_socket_kept_by_a_runtime_since_dropped_is_not_reused_broken() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let addr = server.local_addr().unwrap();
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        for _ in 0..2 {
            runtime().block_on(async { lease(addr).await.unwrap().keep() });
        }
        // Both kept sockets belong to dropped runtimes: a lease on a third,
        // and a query waited for outside tokio, each get a working socket.
        runtime().block_on(async {
            let lease = lease(addr).await.unwrap();
            lease.socket.send(b"in").await.unwrap();
        });
        let outside = try_lease_std(addr).unwrap().unwrap();
        outside.socket.send(b"out").unwrap();
        let mut buf = [0u8; 8];
        let mut got = Vec::new();
        for _ in 0..2 {
            let (len, _) = server.recv_from(&mut buf).unwrap();
            got.push(buf[..len].to_vec());
        }
        got.sort();
        assert_eq!(got, [b"in".to_vec(), b"out".to_vec()]);
    }

    #[test]
    fn idle_sockets_and_unused_nameservers_are_let_go() {
        let start = Instant::now();
        let idle = |since| Idle {
            socket: Kept::Std(std::net::UdpSocket::bind("127.0.0.1:0").unwrap()),
            buf: Box::new([]),
            since,
        };
        let server = |idle: Vec<Idle>, in_use: usize| {
            let permits = Arc::new(Semaphore::new(MAX_OUTSTANDING));
            permits.forget_permits(in_use);
            Server { permits, idle }
        };
        let [old, fresh, busy] = [1, 2, 3].map(|port| SocketAddr::from(([127, 0, 0, 1], port)));
        let mut pool = Pool {
            servers: HashMap::from([
                (old, server(vec![idle(start)], 0)),
                (fresh, server(vec![idle(start), idle(start + IDLE_FOR)], 0)),
                (busy, server(vec![idle(start)], 1)),
            ]),
            swept: start,
        };
        // At most once a second.
        pool.sweep(start + Duration::from_millis(500));
        assert_eq!(pool.servers[&old].idle.len(), 1);
        pool.sweep(start + IDLE_FOR + Duration::from_secs(1));
        assert!(!pool.servers.contains_key(&old));
        assert_eq!(pool.servers[&fresh].idle.len(), 1);
        // A query in flight keeps its nameserver's bound.
        assert!(pool.servers[&busy].idle.is_empty());
    }
}
