//! The one small runtime lockwright runs its own work on: waits that are not on a
//! JavaScript thread, heartbeats, the release watcher. One worker thread, however many
//! locks and waiters there are, so no waiter sits on libuv's threadpool.

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
