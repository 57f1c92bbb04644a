//! Caravan's core in plain Rust, with no rustler types, so all of it is
//! unit-tested by `cargo test` without a BEAM. The NIF crate
//! (`caravan_native`) is a thin layer over it.
//!
//! - [`node_name`]: node-name parsing and the port-from-name rule.
//! - [`resolver`]: SRV and host lookups, and their typed errors.
//! - [`discovery`]: the SRV query's transport (UDP, confirmed over a fresh
//!   TCP connection when [`trim`] doubts the answer).
//! - [`tcp_first`]: which queries go straight to TCP (their last complete
//!   answer did not fit UDP).
//! - [`target`]: SRV targets -> the host part of node names (Consul
//!   `.addr.` decoding, the `node_host` choice).
//! - [`trace`]: the `tracing` events of one lookup, as lines for Elixir's
//!   Logger.

pub mod discovery;
pub mod node_name;
pub mod resolver;
pub mod target;
pub mod tcp_first;
pub mod trace;
pub mod trim;
