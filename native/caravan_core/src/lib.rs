//! Caravan's core in plain Rust, with no rustler types, so all of it is
//! unit-tested by `cargo test` without a BEAM. The NIF crate
//! (`caravan_native`) is a thin layer over it.
//!
//! The modules form a DAG; each uses only those listed before it:
//!
//! - [`node_name`]: node-name parsing and the port-from-name rule.
//! - [`target`]: SRV targets -> the host part of node names (Consul
//!   `.addr.` decoding, the `node_host` choice).
//! - [`trace`]: the `tracing` events of one lookup, as lines for Elixir's
//!   Logger.
//! - [`error`]: [`error::LookupError`], the typed failure of every lookup.
//! - [`transport`]: the DNS exchange (UDP, confirmed over a fresh TCP
//!   connection when [`transport::trim`] doubts the answer; straight TCP
//!   for the queries [`transport::tcp_first`] remembers). Uses `error`.
//! - [`resolver`]: SRV and A/AAAA lookups over that one transport (CNAME
//!   chains, nameservers in turn, resolv.conf). Uses `error`, `transport`
//!   and `target`.

#![warn(missing_docs, unreachable_pub)]

pub mod error;
pub mod node_name;
pub mod resolver;
pub mod target;
pub mod trace;
pub mod transport;
