//! An SRV lookup's first UDP exchange, waited for by the BEAM: the socket
//! is handed to the BEAM's own poll set (`enif_select`), so the reply wakes
//! the calling process directly, as a reply on a `:gen_udp` socket does,
//! instead of waking Caravan's runtime thread, which then wakes the process
//! (bench/README.md, "The lookup path"). The exchange's rules stay in
//! `caravan_core` ([`UdpQuery`]); this module owns the socket's life with
//! the BEAM.
//!
//! A [`Waiting`] resource holds the query. The BEAM sends the calling
//! process `{:select, resource, ref, :ready_input}` when the socket is
//! readable; the process then calls `srv_read/2`, or `srv_tick/1` when its
//! wait ends first (a copy is due, or the bound has passed). Once the
//! reply is in, the lookup goes on from it as any lookup does
//! ([`resolver::lookup_srv_after`]): on the caller's thread when nothing
//! more is asked (the common case), else on the runtime, which replies
//! `{:caravan_srv, ref, result}` as for any lookup.
//!
//! The BEAM may still watch a socket after the exchange ends, so a socket
//! is only closed or put back in the pool from the resource type's `stop`
//! callback, which the BEAM calls once it has let the socket go
//! (`ERL_NIF_SELECT_STOP`, erl_nif(3)). The calling process is monitored:
//! if it dies while waiting, the `down` callback stops the watch, and the
//! socket and its place in the nameserver's bound are given back.
//! rustler's resources register no `stop` callback, so the type is
//! registered here, by hand.

use std::ffi::c_void;
use std::mem::MaybeUninit;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustler::sys::{
    enif_alloc_resource, enif_get_resource, enif_init_resource_type, enif_make_resource,
    enif_monitor_process, enif_release_resource, enif_select, ErlNifEnv, ErlNifEvent,
    ErlNifMonitor, ErlNifPid, ErlNifResourceDown, ErlNifResourceDtor, ErlNifResourceFlags,
    ErlNifResourceStop, ErlNifResourceType, ErlNifResourceTypeInit, ERL_NIF_SELECT_READ,
    ERL_NIF_SELECT_STOP,
};
use rustler::{Encoder, Env, Term};

use caravan_core::error::LookupError;
use caravan_core::resolver::{self, LookupConfig, Name, SrvRecord};
use caravan_core::target::NodeHost;
use caravan_core::transport::udp_pool::StdLease;
use caravan_core::transport::UdpQuery;

use crate::terms::{KindError, SrvTerm};

mod atoms {
    rustler::atoms! {
        caravan_srv,
        caravan_srv_early,
        done,
        spawned,
        wait,
    }
}

/// The resource type of [`Waiting`], registered at load.
static TYPE: AtomicPtr<ErlNifResourceType> = AtomicPtr::new(ptr::null_mut());

/// Registers the resource type; called from the library's `load`. Returns
/// false when the BEAM refuses it (the library then fails to load).
pub(crate) fn register(env: Env) -> bool {
    let init = ErlNifResourceTypeInit {
        dtor: destructor as *const ErlNifResourceDtor,
        stop: stop as *const ErlNifResourceStop,
        down: down as *const ErlNifResourceDown,
        members: 3,
        dyncall: ptr::null(),
    };
    let mut tried = MaybeUninit::uninit();
    // SAFETY: called from the load callback with its env; the name is a
    // NUL-terminated static string and `init` outlives the call (the BEAM
    // copies it).
    let rt = unsafe {
        enif_init_resource_type(
            env.as_c_arg(),
            c"caravan_udp_query".as_ptr(),
            &init,
            ErlNifResourceFlags::ERL_NIF_RT_CREATE,
            tried.as_mut_ptr(),
        )
    };
    TYPE.store(rt as *mut ErlNifResourceType, Ordering::Release);
    !rt.is_null()
}

/// A lookup whose first UDP reply the BEAM is watching for.
struct Waiting {
    /// The lookup's arguments, for when the reply is in.
    config: LookupConfig,
    name: Name,
    node_host: NodeHost,
    early: bool,
    started: Instant,
    state: Mutex<State>,
}

struct State {
    /// Until the exchange ends.
    query: Option<UdpQuery>,
    /// The socket, from the exchange's end until the BEAM lets it go
    /// (`stop`), and whether it goes back to the pool then.
    ended: Option<(StdLease, bool)>,
}

impl Waiting {
    /// Ends the exchange: from now on the socket is the `stop` callback's,
    /// which keeps it in the pool when `keep`. Returns the descriptor to
    /// stop watching, or None when the exchange had already ended.
    fn end(&self, keep: bool) -> Option<ErlNifEvent> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut query = state.query.take()?;
        let fd = query.fd()?;
        let lease = query.take_lease()?;
        state.ended = Some((lease, keep));
        Some(fd)
    }

    /// What is left of the lookup's bound.
    fn config_left(&self) -> LookupConfig {
        let left = self.config.timeout.saturating_sub(self.started.elapsed());
        LookupConfig {
            timeout: left.max(Duration::from_millis(1)),
            ..self.config.clone()
        }
    }
}

/// The resource a term holds and its [`Waiting`], if it is one of ours.
fn resource_of<'a>(term: Term<'a>) -> Option<(*mut c_void, &'a Waiting)> {
    let mut obj: *const c_void = ptr::null();
    // SAFETY: the type is ours; on success `obj` is the resource's data,
    // which `start` wrote, valid as long as the term is (erl_nif(3),
    // enif_get_resource).
    let found = unsafe {
        enif_get_resource(
            term.get_env().as_c_arg(),
            term.as_c_arg(),
            TYPE.load(Ordering::Acquire),
            &mut obj,
        )
    };
    (found != 0).then(|| (obj as *mut c_void, waiting_of(obj as *mut c_void)))
}

/// Starts `query`'s lookup with its first UDP query sent and watched by
/// the BEAM for the caller: `Ok(Some({ref, resource, wait_ms}))`, or
/// `Ok(None)` when the lookup must run whole on the runtime (more than one
/// nameserver, a query that goes straight to TCP, the nameserver's bound
/// reached, or the BEAM refused to watch the socket).
///
/// Errors: as the query's first send ([`UdpQuery::send`]).
pub(crate) fn start<'a>(
    env: Env<'a>,
    config: &LookupConfig,
    name: &Name,
    node_host: NodeHost,
    early: bool,
) -> Result<Option<Term<'a>>, LookupError> {
    let rt = TYPE.load(Ordering::Acquire);
    if rt.is_null() {
        return Ok(None);
    }
    let started = Instant::now();
    let Some(mut query) = resolver::send_first_srv_query(config, name)? else {
        return Ok(None);
    };
    let Some(fd) = query.fd() else {
        return Ok(None);
    };
    let wait = query.tick(Instant::now())?;
    let waiting = Box::new(Waiting {
        config: config.clone(),
        name: name.clone(),
        node_host,
        early,
        started,
        state: Mutex::new(State {
            query: Some(query),
            ended: None,
        }),
    });
    let reference = env.make_ref().encode(env);
    let pid = env.pid();
    // SAFETY: the resource's data is one pointer, to a leaked Box<Waiting>
    // that `destructor` frees. The term made here holds the resource; our
    // own reference is released once it exists.
    let (obj, resource) = unsafe {
        let obj = enif_alloc_resource(rt, std::mem::size_of::<*const Waiting>());
        ptr::write(obj as *mut *const Waiting, Box::into_raw(waiting));
        let resource = Term::new(env, enif_make_resource(env.as_c_arg(), obj));
        enif_release_resource(obj);
        (obj, resource)
    };
    let waiting = waiting_of(obj);
    // SAFETY: `obj` is a live resource of our type (the term holds it);
    // `pid` is the caller.
    let selected = unsafe {
        enif_select(
            env.as_c_arg(),
            fd,
            ERL_NIF_SELECT_READ,
            obj,
            pid.as_c_arg(),
            reference.as_c_arg(),
        )
    };
    if selected < 0 {
        // Never watched, so the socket is closed at once (the query sent is
        // lost; the lookup runs whole on the runtime).
        let _ = waiting.end(false);
        waiting
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ended = None;
        return Ok(None);
    }
    let mut monitor = MaybeUninit::<ErlNifMonitor>::zeroed();
    // SAFETY: as above; the caller is alive (it is making this call). The
    // monitor goes with the resource.
    unsafe { enif_monitor_process(env.as_c_arg(), obj, pid.as_c_arg(), monitor.as_mut_ptr()) };
    Ok(Some((reference, resource, wait_ms(wait)).encode(env)))
}

/// The [`Waiting`] behind a resource's data pointer.
fn waiting_of<'a>(obj: *mut c_void) -> &'a Waiting {
    // SAFETY: `obj` is a resource of our type, whose data `start` wrote.
    unsafe { &**(obj as *const *const Waiting) }
}

/// Stops the BEAM watching `fd` for `obj`; the `stop` callback then gives
/// the socket back.
fn stop_watching(env: *mut ErlNifEnv, obj: *mut c_void, fd: ErlNifEvent) {
    // SAFETY: `obj` is a live resource of our type that selected `fd`.
    unsafe {
        enif_select(
            env,
            fd,
            ERL_NIF_SELECT_STOP,
            obj,
            ptr::null(),
            rustler::sys::enif_make_atom(env, c"undefined".as_ptr()),
        );
    }
}

/// `srv_read(resource, ref)`, called on `{:select, resource, ref,
/// :ready_input}`: `{:done, result}` (the lookup's result, as the
/// `{:caravan_srv, ref, result}` message would carry it), `:spawned` (the
/// reply is in and the lookup goes on; that message will come), or
/// `{:wait, ms}` (no reply yet: the BEAM watches again; call `srv_tick/1`
/// after `ms`). Raises `ArgumentError` for a resource that is not a
/// lookup's, or whose exchange has ended.
pub(crate) fn read<'a>(
    env: Env<'a>,
    resource: Term<'a>,
    reference: Term<'a>,
) -> rustler::NifResult<Term<'a>> {
    let (obj, waiting) = resource_of(resource).ok_or(rustler::Error::BadArg)?;
    let read = {
        let mut state = waiting.state.lock().unwrap_or_else(|e| e.into_inner());
        match state.query.as_mut() {
            None => return Err(rustler::Error::BadArg),
            Some(query) => query.read(),
        }
    };
    match read {
        Ok(None) => {
            let wait = {
                let mut state = waiting.state.lock().unwrap_or_else(|e| e.into_inner());
                let Some(query) = state.query.as_mut() else {
                    return Err(rustler::Error::BadArg);
                };
                let fd = query.fd();
                let wait = query.tick(Instant::now());
                if let (Ok(_), Some(fd)) = (&wait, fd) {
                    // SAFETY: `obj` is our live resource (the term holds it).
                    unsafe {
                        enif_select(
                            env.as_c_arg(),
                            fd,
                            ERL_NIF_SELECT_READ,
                            obj,
                            env.pid().as_c_arg(),
                            reference.as_c_arg(),
                        );
                    }
                }
                wait
            };
            match wait {
                Ok(wait) => Ok((atoms::wait(), wait_ms(wait)).encode(env)),
                Err(err) => Ok(fail(env, waiting, obj, err)),
            }
        }
        Ok(Some(prior)) => {
            if let Some(fd) = waiting.end(true) {
                stop_watching(env.as_c_arg(), obj, fd);
            }
            go_on(env, waiting, reference, prior)
        }
        Err(err) => Ok(fail(env, waiting, obj, err)),
    }
}

/// `srv_tick(resource)`, when the wait `srv_read/2` or the start gave has
/// passed: `{:wait, ms}` (a copy was sent if one was due), or `{:done,
/// {:error, {:timeout, message}}}` once the bound has passed. Raises as
/// `srv_read/2`.
pub(crate) fn tick<'a>(env: Env<'a>, resource: Term<'a>) -> rustler::NifResult<Term<'a>> {
    let (obj, waiting) = resource_of(resource).ok_or(rustler::Error::BadArg)?;
    let wait = {
        let mut state = waiting.state.lock().unwrap_or_else(|e| e.into_inner());
        match state.query.as_mut() {
            None => return Err(rustler::Error::BadArg),
            Some(query) => query.tick(Instant::now()),
        }
    };
    match wait {
        Ok(wait) => Ok((atoms::wait(), wait_ms(wait)).encode(env)),
        Err(err) => Ok(fail(env, waiting, obj, err)),
    }
}

/// Ends the exchange without a reply (the socket is closed) and answers
/// `{:done, {:error, {kind, message}}}`.
fn fail<'a>(env: Env<'a>, waiting: &Waiting, obj: *mut c_void, err: LookupError) -> Term<'a> {
    if let Some(fd) = waiting.end(false) {
        stop_watching(env.as_c_arg(), obj, fd);
    }
    let failed: Result<(), KindError> = Err(err.into());
    (atoms::done(), failed).encode(env)
}

/// The lookup from its first UDP reply on: `{:done, result}` when that
/// needs nothing more, else `:spawned`. Records of a doubted reply go to
/// the caller first as `{:caravan_srv_early, ref, records}` (when it asked
/// for them), sent from here, since the runtime has not taken over yet.
fn go_on<'a>(
    env: Env<'a>,
    waiting: &Waiting,
    reference: Term<'a>,
    prior: caravan_core::transport::Prior,
) -> rustler::NifResult<Term<'a>> {
    let config = waiting.config_left();
    let name = waiting.name.clone();
    let node_host = waiting.node_host;
    let early_on = waiting.early;
    let buffered = std::sync::Arc::new(Mutex::new(None::<Vec<SrvRecord>>));
    let slot = buffered.clone();
    let mut runtime_early =
        early_on.then(|| crate::runtime::Early::new(env, reference, atoms::caravan_srv_early()));
    let work = async move {
        let mut send_early = |records: Vec<SrvRecord>| {
            if !early_on {
                return;
            }
            if rustler::thread::is_scheduler_thread() {
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(records);
            } else if let Some(early) = runtime_early.as_mut() {
                early.send(SrvTerm::list(records));
            }
        };
        resolver::lookup_srv_after(&config, name, node_host, &mut send_early, Some(prior))
            .await
            .map(SrvTerm::list)
            .map_err(KindError::from)
    };
    // Records of a doubted reply, kept while the work ran here, go to the
    // caller before the rest is spawned, so they come before the reply.
    let send_buffered = || {
        let early = buffered.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(records) = early {
            // The caller is this process, alive: this cannot fail.
            let _ = env.send(
                &env.pid(),
                (
                    atoms::caravan_srv_early(),
                    reference,
                    SrvTerm::list(records),
                ),
            );
        }
    };
    match crate::runtime::run_or_spawn(env, reference, atoms::caravan_srv(), work, send_buffered) {
        Ok(Some(result)) => Ok((atoms::done(), result).encode(env)),
        Ok(None) => Ok(atoms::spawned().encode(env)),
        Err(message) => {
            let failed: Result<(), KindError> = Err(KindError {
                kind: "runtime",
                message,
            });
            Ok((atoms::done(), failed).encode(env))
        }
    }
}

fn wait_ms(wait: Duration) -> u32 {
    // Rounded up, so a wait is never cut short to 0 before a copy is due.
    let ms = wait.as_micros().div_ceil(1000);
    ms.min(u128::from(u32::MAX)) as u32
}

/// The BEAM has let the socket go: it goes back to the pool, or is closed.
unsafe extern "C" fn stop(_env: *mut ErlNifEnv, obj: *mut c_void, _fd: ErlNifEvent, _direct: i32) {
    let waiting = waiting_of(obj);
    let ended = {
        let mut state = waiting.state.lock().unwrap_or_else(|e| e.into_inner());
        state.ended.take()
    };
    match ended {
        Some((lease, true)) => lease.keep(),
        Some((lease, false)) => drop(lease),
        None => {}
    }
}

/// The caller died while waiting: stop watching; `stop` closes the socket.
unsafe extern "C" fn down(
    env: *mut ErlNifEnv,
    obj: *mut c_void,
    _pid: *const ErlNifPid,
    _monitor: *const ErlNifMonitor,
) {
    let waiting = waiting_of(obj);
    if let Some(fd) = waiting.end(false) {
        stop_watching(env, obj, fd);
    }
}

/// The resource is gone: free the [`Waiting`] (a socket still held, never
/// watched, is closed with it).
unsafe extern "C" fn destructor(_env: *mut ErlNifEnv, obj: *mut c_void) {
    let waiting = ptr::read(obj as *const *const Waiting);
    drop(Box::from_raw(waiting as *mut Waiting));
}
