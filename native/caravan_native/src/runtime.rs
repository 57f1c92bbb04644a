//! The one tokio runtime, and the pattern that keeps NIF calls short: capture
//! the caller's pid, make a reference, spawn the work, return the reference at
//! once. The task replies `{tag, reference, result}` to the caller with
//! `OwnedEnv::send_and_clear` from a runtime thread, never from a scheduler
//! thread, and nothing ever calls `block_on` inside a NIF.

use std::future::Future;

use once_cell::sync::Lazy;
use rustler::{Encoder, Env, OwnedEnv, Term};
use tokio::runtime::{Builder, Runtime};

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

/// Spawns `work` on the runtime and returns a fresh reference to the caller.
/// When `work` finishes, the calling process receives
/// `{tag, reference, encode(result)}`. If the caller has died by then, the
/// message is dropped with the environment that held it.
///
/// Errors: the runtime could not be started (the message says why).
pub fn spawn_reply<'a, W, T, Tag>(env: Env<'a>, tag: Tag, work: W) -> Result<Term<'a>, String>
where
    W: Future<Output = T> + Send + 'static,
    T: Encoder + Send + 'static,
    Tag: Encoder + Send + 'static,
{
    let runtime = RUNTIME.as_ref().map_err(Clone::clone)?;
    let pid = env.pid();
    let reference = env.make_ref();
    let mut owned = OwnedEnv::new();
    let saved = owned.save(reference);
    runtime.spawn(async move {
        let result = work.await;
        // An Err here means the caller is gone; nothing is waiting for it.
        let _ = owned.send_and_clear(&pid, |msg_env| (tag, saved.load(msg_env), result));
    });
    Ok(reference.encode(env))
}
