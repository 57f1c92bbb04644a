//! The one tokio runtime, and the pattern that keeps NIF calls short: capture
//! the caller's pid, make a reference, run the work's first step (it ends
//! once the query is sent), spawn the rest, return the reference at once.
//! The task replies `{tag, reference, result}` to the caller with
//! `OwnedEnv::send_and_clear` from a runtime thread, never from a scheduler
//! thread, and nothing ever calls `block_on` inside a NIF.
//!
//! A panic inside the work is caught: the caller still gets its one reply,
//! `{tag, reference, {:error, {:internal, message}}}`, instead of waiting
//! for a reply that never comes.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use caravan_core::trace::Collector;
use futures_util::FutureExt;
use once_cell::sync::Lazy;
use rustler::env::SavedTerm;
use rustler::{Atom, Encoder, Env, LocalPid, OwnedEnv, Term};
use tokio::runtime::{Builder, Runtime};
use tracing::instrument::WithSubscriber;

mod atoms {
    rustler::atoms! {
        error,
        internal,
    }
}

/// Tasks spawned by [`spawn_reply`] that have not finished yet.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// The number of spawned tasks that have not replied yet (lookups in
/// flight). Exposed to tests to show that nothing is left behind.
#[cfg(feature = "test-hooks")]
pub(crate) fn in_flight() -> usize {
    IN_FLIGHT.load(Ordering::Relaxed)
}

/// True once the runtime has been started (by the first lookup).
#[cfg(feature = "test-hooks")]
pub(crate) fn started() -> bool {
    Lazy::get(&RUNTIME).is_some()
}

/// Decrements [`IN_FLIGHT`] when the task ends, however it ends.
struct InFlight;

impl InFlight {
    fn enter() -> Self {
        IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The work's result, or the message of the panic that ended it.
enum Reply<T> {
    Done(T),
    Panicked(String),
}

impl<T: Encoder> Encoder for Reply<T> {
    fn encode<'a>(&self, env: Env<'a>) -> Term<'a> {
        match self {
            Self::Done(result) => result.encode(env),
            Self::Panicked(message) => (
                atoms::error(),
                (
                    atoms::internal(),
                    format!("Caravan's native code panicked: {message}"),
                ),
            )
                .encode(env),
        }
    }
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

/// Built on first use, so nodes that never look anything up (the epmd path
/// only) start no threads. One worker thread is enough: the work is waiting
/// on sockets, not computing.
static RUNTIME: Lazy<Result<Runtime, String>> = Lazy::new(|| {
    Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(1)
        .thread_name("caravan-runtime")
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| format!("cannot start Caravan's tokio runtime: {e}"))
});

/// Spawns `work` on the runtime and returns `reference` (a fresh one, made
/// by the caller) to the caller. When `work` finishes, the calling process
/// receives
/// `{tag, reference, encode(result)}`, or `{tag, reference, {:error,
/// {:internal, message}}}` if `work` panicked. If the caller has died by
/// then, the message is dropped with the environment that held it.
///
/// With `trace`, `work` runs under a [`Collector`] and the message is
/// `{tag, reference, result, [line]}`, the lines being the `tracing` events
/// of the work (`caravan_core::trace`). Without it no subscriber exists.
///
/// Errors: the runtime could not be started (the message says why).
pub(crate) fn spawn_reply<'a, W, T, Tag>(
    env: Env<'a>,
    reference: Term<'a>,
    tag: Tag,
    trace: bool,
    work: W,
) -> Result<Term<'a>, String>
where
    W: Future<Output = T> + Send + 'static,
    T: Encoder + Send + 'static,
    Tag: Encoder + Send + 'static,
{
    start(env, reference, tag, trace, work, None::<fn()>)?;
    Ok(reference)
}

/// [`spawn_reply`] without a trace, except that `work` finishing in its
/// first step (on the caller's thread) is returned here, encoded, and no
/// message is sent: `Some(result)` then, `None` when the rest was spawned
/// (the message will come). `pending` runs between that first step and
/// the spawn, when the work goes on (to send what must come before the
/// reply).
pub(crate) fn run_or_spawn<'a, W, T, Tag>(
    env: Env<'a>,
    reference: Term<'a>,
    tag: Tag,
    work: W,
    pending: impl FnOnce(),
) -> Result<Option<Term<'a>>, String>
where
    W: Future<Output = T> + Send + 'static,
    T: Encoder + Send + 'static,
    Tag: Encoder + Send + 'static,
{
    Ok(start(env, reference, tag, false, work, Some(pending))?.map(|reply| reply.encode(env)))
}

/// Runs `work`'s first step here and spawns the rest; with `inline`, a
/// first step that finishes the work is returned instead of sent, and
/// `inline` runs before a spawn.
fn start<'a, W, T, Tag>(
    env: Env<'a>,
    reference: Term<'a>,
    tag: Tag,
    trace: bool,
    work: W,
    inline: Option<impl FnOnce()>,
) -> Result<Option<Reply<T>>, String>
where
    W: Future<Output = T> + Send + 'static,
    T: Encoder + Send + 'static,
    Tag: Encoder + Send + 'static,
{
    let runtime = RUNTIME.as_ref().map_err(Clone::clone)?;
    let collector = trace.then(Collector::new);
    let work: Pin<Box<dyn Future<Output = T> + Send>> = match &collector {
        Some(collector) => Box::pin(work.with_subscriber(collector.dispatch())),
        None => Box::pin(work),
    };
    let mut work = AssertUnwindSafe(work).catch_unwind();
    // The work's first step runs here, on the caller's thread: it sends the
    // query, so the runtime thread's wake-up overlaps the server's reply
    // instead of preceding the query. A step that is pending has left its
    // wakers nowhere (a no-op waker); the runtime polls it again at once,
    // with its own, and the sockets and timers keep what happened between.
    let first = {
        let _runtime = runtime.enter();
        Pin::new(&mut work).poll(&mut Context::from_waker(Waker::noop()))
    };
    if let Some(pending) = inline {
        if let Poll::Ready(caught) = first {
            return Ok(Some(reply_of(caught)));
        }
        pending();
    }
    let pid = env.pid();
    let mut owned = OwnedEnv::new();
    let saved = owned.save(reference);
    let in_flight = InFlight::enter();
    runtime.spawn(async move {
        let _in_flight = in_flight;
        let caught = match first {
            Poll::Ready(caught) => caught,
            Poll::Pending => work.await,
        };
        let result = reply_of(caught);
        let lines = collector.map(|collector| collector.lines());
        // An Err here means the caller is gone; nothing is waiting for it.
        let _ = owned.send_and_clear(&pid, |msg_env| {
            let reference = saved.load(msg_env);
            match &lines {
                Some(lines) => (&tag, reference, &result, lines).encode(msg_env),
                None => (&tag, reference, &result).encode(msg_env),
            }
        });
    });
    Ok(None)
}

fn reply_of<T>(caught: Result<T, Box<dyn Any + Send>>) -> Reply<T> {
    match caught {
        Ok(result) => Reply::Done(result),
        Err(payload) => Reply::Panicked(panic_message(payload)),
    }
}

/// One message sent to the caller of a NIF before its reply, from the
/// runtime thread: `{tag, reference, value}`, the reference being the one
/// the reply will carry. Sends at most once; a call from a scheduler
/// thread (where rustler cannot send) sends nothing.
pub(crate) struct Early {
    pid: LocalPid,
    tag: Atom,
    env: Option<(OwnedEnv, SavedTerm)>,
}

impl Early {
    /// Ready to send `{tag, reference, value}` to the calling process.
    pub(crate) fn new(env: Env, reference: Term, tag: Atom) -> Self {
        let owned = OwnedEnv::new();
        let saved = owned.save(reference);
        Self {
            pid: env.pid(),
            tag,
            env: Some((owned, saved)),
        }
    }

    /// Sends `{tag, reference, value}`, the first time only.
    pub(crate) fn send(&mut self, value: impl Encoder) {
        if rustler::thread::is_scheduler_thread() {
            return;
        }
        if let Some((mut owned, saved)) = self.env.take() {
            let tag = self.tag;
            // An Err here means the caller is gone.
            let _ = owned.send_and_clear(&self.pid, |msg_env| {
                (tag, saved.load(msg_env), value).encode(msg_env)
            });
        }
    }
}
