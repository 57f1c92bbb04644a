//! Caravan's native core, loaded as a NIF into `Caravan.Native`.
//!
//! This crate is the NIF layer only: decode terms, call `caravan_core`,
//! encode the answer. The logic lives in `caravan_core::node_name` (the port
//! rule) and `caravan_core::resolver` (SRV and host lookups), both unit-tested without
//! a BEAM; `terms` converts terms, `runtime` runs lookups off the
//! schedulers, `select` has the BEAM watch a lookup's first UDP socket.
//! NIFs return `Result<T, KindError>`, which rustler encodes as
//! `{:ok, t} | {:error, {kind, message}}`.

#![warn(missing_docs, unreachable_pub)]

mod runtime;
mod select;
mod terms;

use std::time::Duration;

use rustler::{Atom, Encoder, Env, Term};

use caravan_core::error::LookupError;
use caravan_core::node_name;
use caravan_core::resolver::{self, Family, LookupConfig, Search};
use caravan_core::target::NodeHost;

use terms::{with_node_name, IpTerm, KindError, NameserverTerm, SearchTerm, SrvTerm};

mod atoms {
    rustler::atoms! {
        caravan_srv,
        caravan_srv_early,
        caravan_host,
        inet,
        inet6,
    }
}

/// The nameservers (already parsed, see `nameserver/1`), the search rule
/// and the timeout as a [`LookupConfig`].
fn lookup_config(
    nameservers: Vec<NameserverTerm>,
    search: Search,
    timeout_ms: u64,
) -> LookupConfig {
    LookupConfig {
        nameservers: nameservers.into_iter().map(|ns| ns.0).collect(),
        timeout: Duration::from_millis(timeout_ms.max(1)),
        search,
    }
}

/// Spawns `work` on the runtime; the caller gets `{:ok, ref}` at once and
/// later `{tag, ref, {:ok, value} | {:error, {kind, message}}}` (with
/// `trace`, `{tag, ref, result, [line]}`: see `runtime::spawn_reply`).
fn spawn_lookup<'a, T>(
    env: Env<'a>,
    reference: Term<'a>,
    tag: Atom,
    trace: bool,
    work: impl std::future::Future<Output = Result<T, LookupError>> + Send + 'static,
) -> Result<Term<'a>, KindError>
where
    T: Encoder + Send + 'static,
{
    runtime::spawn_reply(env, reference, tag, trace, async move {
        work.await.map_err(KindError::from)
    })
    .map_err(|message| KindError {
        kind: "runtime",
        message,
    })
}

/// `dist_port(node) :: {:ok, port} | {:error, {kind, message}}`
#[rustler::nif]
fn dist_port(node: Term) -> Result<u16, KindError> {
    with_node_name(node, node_name::dist_port)
}

/// `listen_port(node) :: {:ok, port} | {:error, {kind, message}}`, port 0 for
/// release helper nodes.
#[rustler::nif]
fn listen_port(node: Term) -> Result<u16, KindError> {
    with_node_name(node, node_name::listen_port)
}

/// `srv_lookup(query, nameservers, timeout_ms, node_host, trace, search, early, select) :: {:ok, ref | {ref, resource, wait_ms}} | {:error, {kind, message}}`
///
/// `nameservers` are `{ip_tuple, port}` as `nameserver/1` returns them;
/// `search` is `{[domain], ndots}` (`{[], 1}`: the query is absolute);
/// `node_host` is `:auto`, `:target` or `:ip` (see `caravan_core::target`).
/// Returns at once; the caller later receives
/// `{:caravan_srv, ref, {:ok, [record]} | {:error, {kind, message}}}`, with
/// `trace` true `{:caravan_srv, ref, result, [line]}` (the lookup's
/// `tracing` events, `caravan_core::trace`). With `early` true, a UDP
/// answer that is doubted (truncated or maybe trimmed) first sends
/// `{:caravan_srv_early, ref, [record]}` (its records, possibly not all of
/// them) before the complete answer is asked over TCP; at most one such
/// message per nameserver asked, always before the `:caravan_srv` reply.
/// With `select` true and `trace` false, a lookup with one nameserver may
/// instead answer `{:ok, {ref, resource, wait_ms}}`: its first UDP query is
/// out and the BEAM watches its socket for the caller, who takes the next
/// steps (`srv_read/2`, `srv_tick/1`; see `select`).
#[rustler::nif]
#[allow(clippy::too_many_arguments)] // one per argument of the Elixir call
fn srv_lookup<'a>(
    env: Env<'a>,
    query: String,
    nameservers: Vec<NameserverTerm>,
    timeout_ms: u64,
    node_host: Atom,
    trace: bool,
    search: SearchTerm,
    early: bool,
    select: bool,
) -> Result<Term<'a>, KindError> {
    // Bad arguments are answered at once, before anything is spawned.
    let config = lookup_config(nameservers, search.0, timeout_ms);
    let name = resolver::parse_query(&query)?;
    let mode = node_host
        .to_term(env)
        .atom_to_string()
        .map_err(|_| String::from("an unreadable atom"))
        .and_then(|text| text.parse::<NodeHost>())
        .map_err(|message| KindError {
            kind: "invalid_option",
            message,
        })?;
    if select && !trace {
        if let Some(started) = select::start(env, &config, &name, mode, early)? {
            return Ok(started);
        }
    }
    let reference = env.make_ref().encode(env);
    let mut early = early.then(|| runtime::Early::new(env, reference, atoms::caravan_srv_early()));
    spawn_lookup(env, reference, atoms::caravan_srv(), trace, async move {
        let mut send_early = |records: Vec<resolver::SrvRecord>| {
            if let Some(early) = early.as_mut() {
                early.send(SrvTerm::list(records));
            }
        };
        let records = resolver::lookup_srv(&config, name, mode, &mut send_early).await?;
        Ok(SrvTerm::list(records))
    })
}

/// `srv_read(resource, ref)`: the step of a lookup started with `select`
/// once the BEAM sent `{:select, resource, ref, :ready_input}`; see
/// `select::read`.
#[rustler::nif]
fn srv_read<'a>(
    env: Env<'a>,
    resource: Term<'a>,
    reference: Term<'a>,
) -> rustler::NifResult<Term<'a>> {
    select::read(env, resource, reference)
}

/// `srv_tick(resource)`: the step of a lookup started with `select` once
/// its wait has passed; see `select::tick`.
#[rustler::nif]
fn srv_tick<'a>(env: Env<'a>, resource: Term<'a>) -> rustler::NifResult<Term<'a>> {
    select::tick(env, resource)
}

/// `host_lookup(host, family, nameservers, timeout_ms, trace) :: {:ok, ref} | {:error, {kind, message}}`
///
/// `family` is `:inet` (A) or `:inet6` (AAAA); `nameservers` as for
/// `srv_lookup`. The caller later receives
/// `{:caravan_host, ref, {:ok, [ip_tuple]} | {:error, {kind, message}}}`
/// (with `trace`, the lines as a fourth element, as for `srv_lookup`).
#[rustler::nif]
fn host_lookup<'a>(
    env: Env<'a>,
    host: String,
    family: Atom,
    nameservers: Vec<NameserverTerm>,
    timeout_ms: u64,
    trace: bool,
) -> Result<Term<'a>, KindError> {
    let family = if family == atoms::inet() {
        Family::V4
    } else if family == atoms::inet6() {
        Family::V6
    } else {
        return Err(KindError {
            kind: "invalid_option",
            message: "expected the family :inet or :inet6".into(),
        });
    };
    let config = lookup_config(nameservers, Search::default(), timeout_ms);
    let reference = env.make_ref().encode(env);
    spawn_lookup(env, reference, atoms::caravan_host(), trace, async move {
        let found = resolver::lookup_host(&config, &host, family).await?;
        Ok(found.into_iter().map(IpTerm).collect::<Vec<_>>())
    })
}

/// `nameserver(text) :: {:ok, {ip_tuple, port}} | {:error, {:invalid_nameserver, message}}`
///
/// The one nameserver parser (`caravan_core::resolver::parse_nameserver`),
/// called once when the options are validated (`Caravan.DNS.Options`); the
/// lookups take its `{ip_tuple, port}` and parse no text.
#[rustler::nif]
fn nameserver(text: Term) -> Result<NameserverTerm, KindError> {
    let text = text.decode::<String>().map_err(|_| KindError {
        kind: "invalid_nameserver",
        message: "expected the nameserver as a string".into(),
    })?;
    Ok(NameserverTerm(resolver::parse_nameserver(&text)?))
}

/// Test builds count every byte the library takes from the heap, so the
/// load test can check exactly that lookups leave no native memory behind
/// (the process's RSS moves by tens of MB with the allocators' caching
/// alone). Only with the cargo feature `heap-count`: production builds and
/// the bench use the system allocator untouched.
#[cfg(feature = "heap-count")]
#[global_allocator]
static HEAP: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

/// Test hooks, compiled only with the cargo feature `test-hooks` (which
/// `mix compile` turns on under MIX_ENV=test): the production library
/// exports only the NIFs `lib/` calls.
#[cfg(feature = "test-hooks")]
mod test_hooks {
    use rustler::{Atom, Encoder, Env, Term};

    use super::{runtime, spawn_lookup, KindError};
    use caravan_core::error::LookupError;

    mod atoms {
        rustler::atoms! {
            caravan_srv,
            nif,
            runtime,
            in_flight,
            started,
        }
    }

    /// `floor() :: :ok`: does nothing; the cheapest NIF call there is.
    #[rustler::nif]
    fn floor() -> Atom {
        rustler::types::atom::ok()
    }

    /// `native_heap() :: integer`: the bytes the library holds on its heap
    /// now, allocated minus freed, as counted by the test builds' allocator
    /// (`super::HEAP`; stats_alloc adds what a reallocation grows to the
    /// allocated bytes and what it shrinks to the freed ones).
    #[cfg(feature = "heap-count")]
    #[rustler::nif]
    fn native_heap() -> i64 {
        let stats = super::HEAP.stats();
        stats.bytes_allocated as i64 - stats.bytes_deallocated as i64
    }

    /// `runtime_info() :: %{started: boolean, in_flight: non_neg_integer}`:
    /// whether the tokio runtime runs, and how many spawned lookups have not
    /// replied yet.
    #[rustler::nif]
    fn runtime_info(env: Env) -> rustler::NifResult<Term> {
        Term::map_from_pairs(
            env,
            &[
                (atoms::started().encode(env), runtime::started().encode(env)),
                (
                    atoms::in_flight().encode(env),
                    runtime::in_flight().encode(env),
                ),
            ],
        )
        .map_err(|_| rustler::Error::BadArg)
    }

    /// `forget_transports() :: non_neg_integer`: forgets which queries
    /// go straight to TCP (`caravan_core::transport::tcp_first`), so the next query of
    /// each starts on UDP; returns how many were remembered. For tests that
    /// count a lookup's UDP and TCP queries.
    #[rustler::nif]
    fn forget_transports() -> usize {
        caravan_core::transport::forget_transports()
    }

    /// `__panic__(:nif | :runtime)`: panics on purpose, for the tests that
    /// check a panic in Rust becomes an Elixir error. `:nif` panics in the
    /// NIF call itself (rustler raises `:nif_panicked`); `:runtime` returns
    /// `{:ok, ref}` and panics in the spawned task, whose reply is then
    /// `{:caravan_srv, ref, {:error, {:internal, message}}}`.
    #[rustler::nif(name = "__panic__")]
    fn deliberate_panic<'a>(
        env: Env<'a>,
        place: Atom,
    ) -> rustler::NifResult<Result<Term<'a>, KindError>> {
        if place == atoms::nif() {
            panic!("deliberate panic in a NIF call (Caravan.Native.__panic__(:nif))");
        }
        if place != atoms::runtime() {
            return Err(rustler::Error::BadArg);
        }
        let reference = env.make_ref().encode(env);
        Ok(spawn_lookup(
            env,
            reference,
            atoms::caravan_srv(),
            false,
            async {
                if std::hint::black_box(true) {
                    panic!(
                        "deliberate panic in a runtime task (Caravan.Native.__panic__(:runtime))"
                    );
                }
                Ok::<(), LookupError>(())
            },
        ))
    }
}

/// Registers the resource type of the BEAM-watched lookups (`select`).
fn load(env: Env, _info: Term) -> bool {
    select::register(env)
}

rustler::init!("Elixir.Caravan.Native", load = load);
