//! The one small runtime lockwright runs its own work on: waits that are not on a
//! JavaScript thread, heartbeats, the release watcher. One worker thread, however many
//! locks and waiters there are, so no waiter sits on libuv's threadpool.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::Runtime;

pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("lockwright-wait")
            .enable_time()
            .enable_io() // the inotify stream on Linux
            .build()
            .expect("the lockwright wait runtime starts")
    })
}

/// Runs `future` to completion from synchronous code (a sync API, a heartbeat, a
/// release) on this runtime. On one of its own threads it blocks in place, so the
/// runtime moves its other work elsewhere meanwhile; anywhere else it blocks on it.
pub fn block_on<F: Future>(future: F) -> F::Output {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => tokio::task::block_in_place(|| handle.block_on(future)),
        Err(_) => runtime().block_on(future),
    }
}
