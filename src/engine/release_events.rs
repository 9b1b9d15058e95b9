//! Wakes waiters when a lock they wait on may have been released, without a backoff
//! timer. On Linux one inotify instance per process, read on the wait runtime's own
//! thread, reports the events that can mean a release: the read a holder makes right
//! after its unlock (inotify has no event for an unlock itself), the close of a lock
//! file opened for writing (a crashed holder's lock goes away with it) and the
//! removal of a lock directory. Waiters then retry their non-blocking lock at once. Elsewhere the `notify` crate's watcher does the same
//! with whatever events its platform reports.
//!
//! Node's JS thread can read an instance of its own (`ReleaseEvents::polled`): the
//! binding then watches its descriptor on the JS thread's event loop, so a release
//! wakes that thread directly instead of this runtime's thread and then that one.
//!
//! A watcher cannot see everything (another host on a network filesystem, a crashed
//! holder whose close event beat its lock's removal), so waiters also retry on a slow
//! safety-net tick.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use std::pin::Pin;

use tokio::sync::futures::Notified;
use tokio::sync::Notify;

struct Watched {
    subscribers: usize,
    wake: Arc<Notify>,
}

type Table = Arc<Mutex<HashMap<PathBuf, Watched>>>;

pub struct ReleaseEvents {
    backend: Option<backend::Backend>,
    watched: Table,
}

/// A waiter's interest in one path; the watch goes away with the last subscription.
pub struct Subscription {
    events: Arc<ReleaseEvents>,
    path: PathBuf,
    pub wake: Arc<Notify>,
}

fn lock_table(table: &Table) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Watched>> {
    table.lock().unwrap_or_else(|p| p.into_inner())
}

/// Wakes the waiters of each path an event names.
fn deliver<'a>(table: &Table, paths: impl IntoIterator<Item = &'a Path>) {
    let table = lock_table(table);
    for path in paths {
        if let Some(entry) = table.get(path) {
            entry.wake.notify_waiters();
        }
    }
}

/// Wakes every waiter: the kernel's event queue overflowed, so some release may
/// have been dropped, and anyone could be the one it was for.
#[cfg(target_os = "linux")]
fn deliver_to_all(table: &Table) {
    for entry in lock_table(table).values() {
        entry.wake.notify_waiters();
    }
}

impl ReleaseEvents {
    /// The process's instance, read on the wait runtime.
    pub fn global() -> Arc<ReleaseEvents> {
        static EVENTS: OnceLock<Arc<ReleaseEvents>> = OnceLock::new();
        Arc::clone(EVENTS.get_or_init(ReleaseEvents::started))
    }

    /// An instance read on the wait runtime. Without a watcher (no inotify instances
    /// left, say) waiters still make progress on the safety-net tick; on Linux a
    /// failed or ended watcher is started again.
    fn started() -> Arc<ReleaseEvents> {
        let watched: Table = Arc::default();
        Arc::new(ReleaseEvents {
            backend: backend::Backend::start(Arc::clone(&watched)),
            watched,
        })
    }

    /// An instance nobody reads: the caller watches `fd()` for readability and calls
    /// `drain()`, on whatever thread should wake.
    #[cfg(target_os = "linux")]
    pub fn polled() -> Option<Arc<ReleaseEvents>> {
        let watched: Table = Arc::default();
        Some(Arc::new(ReleaseEvents {
            backend: Some(backend::Backend::start_polled()?),
            watched,
        }))
    }

    /// The descriptor of a `polled()` instance.
    #[cfg(target_os = "linux")]
    pub fn fd(&self) -> Option<std::os::fd::RawFd> {
        self.backend.as_ref().and_then(backend::Backend::polled_fd)
    }

    /// Reads what a `polled()` instance has queued and wakes those waiters, on the
    /// calling thread. Never blocks.
    #[cfg(target_os = "linux")]
    pub fn drain(&self) {
        if let Some(backend) = &self.backend {
            backend.drain(&self.watched);
        }
    }

    pub fn subscribe(self: &Arc<Self>, path: &Path) -> Subscription {
        let mut table = lock_table(&self.watched);
        let entry = table.entry(path.to_path_buf()).or_insert_with(|| Watched {
            subscribers: 0,
            wake: Arc::new(Notify::new()),
        });
        entry.subscribers += 1;
        let wake = Arc::clone(&entry.wake);
        let first = entry.subscribers == 1;
        drop(table);
        if first {
            self.sync_watch(path, false);
        }
        Subscription {
            events: Arc::clone(self),
            path: path.to_path_buf(),
            wake,
        }
    }

    /// Re-arms the watch after the file was replaced: a watch follows an inode, and a
    /// lock file re-created after deletion is a new one.
    pub fn rewatch(&self, path: &Path) {
        self.sync_watch(path, true);
    }

    /// Watches `path` if it is not watched yet: a file that did not exist when it was
    /// subscribed to (the writer-waiting file before any writer waited) may now.
    pub fn ensure_watched(&self, path: &Path) {
        self.sync_watch(path, false);
    }

    /// Makes the watch match the table. The backend's own lock orders these calls and
    /// each re-reads the table, so the last call leaves the watch as the table says.
    fn sync_watch(&self, path: &Path, renew: bool) {
        if let Some(backend) = &self.backend {
            backend.update(path, renew, || lock_table(&self.watched).contains_key(path));
        }
    }

    fn unsubscribe(&self, path: &Path) {
        let mut table = lock_table(&self.watched);
        let Some(entry) = table.get_mut(path) else {
            return;
        };
        entry.subscribers -= 1;
        if entry.subscribers == 0 {
            table.remove(path);
            drop(table);
            self.sync_watch(path, false);
        }
    }
}

/// The next wake-up of each subscription, registered now: a release after this call
/// wakes the caller even if it happens before the caller awaits.
pub fn listen(subscriptions: &[Subscription]) -> Vec<Pin<Box<Notified<'_>>>> {
    let mut wakes: Vec<_> = subscriptions
        .iter()
        .map(|s| Box::pin(s.wake.notified()))
        .collect();
    for wake in &mut wakes {
        wake.as_mut().enable();
    }
    wakes
}

/// Logs to stderr under `LOCKWRIGHT_DEBUG=1`, as the JavaScript side logs lock events.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn debug(line: std::fmt::Arguments) {
    static ON: OnceLock<bool> = OnceLock::new();
    let on = ON.get_or_init(|| {
        std::env::var("LOCKWRIGHT_DEBUG")
            .is_ok_and(|v| ["1", "true", "yes"].contains(&v.to_ascii_lowercase().as_str()))
    });
    if *on {
        eprintln!("lockwright[{}] {line}", std::process::id());
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.events.unsubscribe(&self.path);
    }
}

#[cfg(target_os = "linux")]
mod backend {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use futures_util::StreamExt;
    use inotify::{Event, EventMask, Inotify, WatchDescriptor, WatchMask, Watches};

    use super::{debug, deliver, deliver_to_all, lock_table, Table};
    use crate::engine::runtime::runtime;

    /// A read (a releasing holder reads one byte after its unlock), the close of a
    /// file opened for writing (every holder opens its lock file so, and a crash
    /// closes it), and the deletion or move of a watched file or directory. Not
    /// writes: a holder writes its record while it still holds. Each event wakes every
    /// waiter of its path.
    const RELEASE_EVENTS: WatchMask = WatchMask::ACCESS
        .union(WatchMask::CLOSE_WRITE)
        .union(WatchMask::DELETE_SELF)
        .union(WatchMask::MOVE_SELF);

    /// How often a watcher that failed to start is tried again: each try is a system
    /// call, and waits keep asking while inotify instances are exhausted.
    const RETRY: Duration = Duration::from_secs(1);

    pub struct Watching {
        /// `None` while the instance failed to start or its stream ended.
        watches: Option<Watches>,
        by_path: HashMap<PathBuf, WatchDescriptor>,
        /// When a missing instance may be started again.
        retry_at: Option<Instant>,
        /// When the instance was last started, and how many times it was.
        started_at: Option<Instant>,
        starts: u32,
    }

    impl Watching {
        fn new(watches: Option<Watches>) -> Watching {
            Watching {
                watches,
                by_path: HashMap::new(),
                retry_at: None,
                started_at: None,
                starts: 0,
            }
        }

        fn add(&mut self, paths: &ByWatch, path: &Path) {
            let Some(watches) = self.watches.as_mut() else {
                return;
            };
            if let Ok(wd) = watches.add(path, RELEASE_EVENTS) {
                paths
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(wd.clone())
                    .or_default()
                    .push(path.to_path_buf());
                self.by_path.insert(path.to_path_buf(), wd);
            }
        }
    }

    /// The paths each watch stands for.
    type ByWatch = Arc<Mutex<HashMap<WatchDescriptor, Vec<PathBuf>>>>;

    /// Wakes the waiters of the paths these events name. An overflow means events
    /// were dropped, any waiter's release among them: it wakes every waiter.
    fn dispatch<S>(paths: &ByWatch, table: &Table, events: impl IntoIterator<Item = Event<S>>) {
        let mut named = Vec::new();
        let mut overflowed = false;
        {
            let paths = paths.lock().unwrap_or_else(|p| p.into_inner());
            for event in events {
                overflowed |= event.mask.contains(EventMask::Q_OVERFLOW);
                named.extend(paths.get(&event.wd).into_iter().flatten().cloned());
            }
        }
        if overflowed {
            deliver_to_all(table);
        }
        deliver(table, named.iter().map(PathBuf::as_path));
    }

    /// What the instance read on the wait runtime shares with its reading task, which
    /// starts a new instance when the stream ends.
    #[derive(Clone)]
    struct Shared {
        state: Arc<Mutex<Watching>>,
        paths: ByWatch,
        table: Table,
        /// Ends the reading task as a failed stream would (tests).
        stop: Arc<tokio::sync::Notify>,
    }

    // Test hook: how many of this thread's next instance starts fail.
    #[cfg(test)]
    thread_local! {
        pub static FAIL_STARTS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    fn init() -> std::io::Result<Inotify> {
        #[cfg(test)]
        if FAIL_STARTS.with(|n| n.replace(n.get().saturating_sub(1))) > 0 {
            return Err(std::io::Error::from_raw_os_error(libc::EMFILE));
        }
        Inotify::init()
    }

    impl Shared {
        /// Starts a fresh instance watching every subscribed path, and its reader.
        /// Waiters are woken after: a release may have gone unseen meanwhile.
        fn open(&self, state: &mut Watching) {
            state.by_path.clear();
            self.paths.lock().unwrap_or_else(|p| p.into_inner()).clear();
            state.watches = None;
            let _guard = runtime().enter();
            let opened = init().and_then(|inotify| {
                let watches = inotify.watches();
                Ok((watches, inotify.into_event_stream(vec![0u8; 4096])?))
            });
            let (watches, mut events) = match opened {
                Ok(opened) => opened,
                Err(err) => {
                    debug(format_args!(
                        "release watcher could not start ({err}); waits retry every 50 ms until it does"
                    ));
                    state.retry_at = Some(Instant::now() + RETRY);
                    return;
                }
            };
            state.watches = Some(watches);
            state.retry_at = None;
            state.started_at = Some(Instant::now());
            state.starts += 1;
            let wanted: Vec<PathBuf> = lock_table(&self.table).keys().cloned().collect();
            for path in wanted {
                state.add(&self.paths, &path);
            }
            let shared = self.clone();
            // Read on the wait runtime itself: the waiter woken runs on the same thread.
            runtime().spawn(async move {
                let ended = loop {
                    tokio::select! {
                        event = events.next() => match event {
                            Some(Ok(event)) => dispatch(&shared.paths, &shared.table, [event]),
                            Some(Err(err)) => break err.to_string(),
                            None => break "end of stream".to_string(),
                        },
                        _ = shared.stop.notified() => break "stopped".to_string(),
                    }
                };
                debug(format_args!(
                    "release watcher stopped ({ended}); restarting it"
                ));
                let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
                match state.started_at {
                    // A stream that fails at once again would spin: wait a little.
                    Some(at) if at.elapsed() < RETRY => {
                        state.watches = None;
                        state.retry_at = Some(at + RETRY);
                    }
                    _ => shared.open(&mut state),
                }
            });
            deliver_to_all(&self.table);
        }
    }

    pub struct Backend {
        state: Arc<Mutex<Watching>>,
        paths: ByWatch,
        /// The instance itself when its owner reads it (`ReleaseEvents::polled`).
        polled: Option<Mutex<Inotify>>,
        /// Set for the instance read on the wait runtime, which restarts itself.
        shared: Option<Shared>,
    }

    impl Backend {
        pub fn start_polled() -> Option<Backend> {
            let inotify = init().ok()?; // non-blocking, close-on-exec
            Some(Backend {
                state: Arc::new(Mutex::new(Watching::new(Some(inotify.watches())))),
                paths: Default::default(),
                polled: Some(Mutex::new(inotify)),
                shared: None,
            })
        }

        pub fn polled_fd(&self) -> Option<std::os::fd::RawFd> {
            use std::os::fd::AsRawFd;
            let inotify = self.polled.as_ref()?;
            Some(
                inotify
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_raw_fd(),
            )
        }

        pub fn drain(&self, table: &Table) {
            let Some(inotify) = &self.polled else {
                return;
            };
            let mut inotify = inotify.lock().unwrap_or_else(|p| p.into_inner());
            let mut buffer = [0u8; 4096];
            // Until the queue is empty (`WouldBlock`) or the instance fails.
            while let Ok(events) = inotify.read_events(&mut buffer) {
                dispatch(&self.paths, table, events);
            }
        }

        pub fn start(table: Table) -> Option<Backend> {
            let state = Arc::new(Mutex::new(Watching::new(None)));
            let shared = Shared {
                state: Arc::clone(&state),
                paths: Default::default(),
                table,
                stop: Default::default(),
            };
            shared.open(&mut state.lock().unwrap_or_else(|p| p.into_inner()));
            Some(Backend {
                state,
                paths: Arc::clone(&shared.paths),
                polled: None,
                shared: Some(shared),
            })
        }

        /// How many times the instance started, if it is running now (tests).
        #[cfg(test)]
        pub fn running(&self) -> Option<u32> {
            let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.watches.as_ref().map(|_| state.starts)
        }

        /// Ends the reading task as a stream error would (tests).
        #[cfg(test)]
        pub fn stop_stream(&self) {
            if let Some(shared) = &self.shared {
                shared.stop.notify_one();
            }
        }

        /// Watches `path` if `wanted()` says so, else drops its watch. A path that does
        /// not exist yet cannot be watched; the safety-net tick covers it.
        pub fn update(&self, path: &Path, renew: bool, wanted: impl FnOnce() -> bool) {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if !wanted() {
                self.forget(&mut state, path);
                return;
            }
            if let (Some(shared), Some(retry_at)) = (&self.shared, state.retry_at) {
                if Instant::now() >= retry_at {
                    // Watches every subscribed path, this one included.
                    shared.open(&mut state);
                    return;
                }
            }
            if state.by_path.contains_key(path) && !renew {
                return;
            }
            self.forget(&mut state, path);
            state.add(&self.paths, path);
        }

        fn forget(&self, state: &mut Watching, path: &Path) {
            let Some(wd) = state.by_path.remove(path) else {
                return;
            };
            let mut paths = self.paths.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(named) = paths.get_mut(&wd) {
                named.retain(|p| p != path);
                if named.is_empty() {
                    paths.remove(&wd);
                    // Fails harmlessly when the kernel already dropped the watch.
                    if let Some(watches) = state.watches.as_mut() {
                        let _ = watches.remove(wd);
                    }
                }
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod backend {
    use std::collections::HashSet;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    use notify::{RecursiveMode, Watcher};

    use super::{deliver, Table};

    pub struct Backend {
        /// The watcher, and the paths it watches: watching a path again restarts
        /// FSEvents' stream, and events in the gap are lost for every waiter.
        state: Mutex<(notify::RecommendedWatcher, HashSet<PathBuf>)>,
    }

    impl Backend {
        pub fn start(table: Table) -> Option<Backend> {
            let watcher =
                notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                    if let Ok(event) = event {
                        deliver(&table, event.paths.iter().map(|p| p.as_path()));
                    }
                })
                .ok()?;
            Some(Backend {
                state: Mutex::new((watcher, HashSet::new())),
            })
        }

        pub fn update(&self, path: &Path, renew: bool, wanted: impl FnOnce() -> bool) {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let (watcher, watched) = &mut *state;
            if !wanted() {
                if watched.remove(path) {
                    let _ = watcher.unwatch(path);
                }
                return;
            }
            if watched.contains(path) && !renew {
                return;
            }
            if watched.remove(path) {
                let _ = watcher.unwatch(path);
            }
            if watcher.watch(path, RecursiveMode::NonRecursive).is_ok() {
                watched.insert(path.to_path_buf());
            }
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Past the kernel's queue limit, events are dropped and one overflow event is
    /// queued instead: any waiter's release may be among those lost, so all wake.
    #[test]
    fn an_overflowed_event_queue_wakes_every_waiter() {
        let dir = tempfile::tempdir().unwrap();
        let [busy, other, quiet] = ["busy", "other", "quiet"].map(|n| dir.path().join(n));
        for path in [&busy, &other, &quiet] {
            std::fs::write(path, "x").unwrap();
        }
        let events = ReleaseEvents::polled().unwrap();
        let subscriptions: Vec<_> = [&busy, &other, &quiet]
            .iter()
            .map(|p| events.subscribe(p))
            .collect();
        let limit: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(16384);
        // Alternating files, so the kernel cannot merge consecutive events into one.
        let files = [&busy, &other].map(|p| std::fs::File::open(p).unwrap());
        for i in 0..=limit {
            crate::engine::backend::kernel::lock_file::wake_waiters(&files[i % 2]);
        }
        let mut quiet_wake = Box::pin(subscriptions[2].wake.notified());
        quiet_wake.as_mut().enable();
        events.drain();
        let woken = futures_util::FutureExt::now_or_never(quiet_wake);
        assert!(
            woken.is_some(),
            "a waiter on an untouched file was not woken"
        );
    }
}

#[cfg(all(test, target_os = "linux"))]
mod restarts {
    use super::*;
    use std::time::{Duration, Instant};

    /// Calls `ensure_watched` (what every waiting loop does) until the instance has
    /// started `starts` times; bounded, so a watcher never restarted fails the test.
    fn until_started(events: &ReleaseEvents, path: &Path, starts: u32) {
        let backend = events.backend.as_ref().unwrap();
        let give_up = Instant::now() + Duration::from_secs(30);
        while backend.running() != Some(starts) {
            assert!(
                Instant::now() < give_up,
                "the release watcher was not started again"
            );
            events.ensure_watched(path);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A release of `path` wakes its subscriber.
    fn wakes(subscription: &Subscription, path: &Path) -> bool {
        let mut wake = Box::pin(subscription.wake.notified());
        wake.as_mut().enable();
        crate::engine::backend::kernel::lock_file::wake_waiters(
            &std::fs::File::open(path).unwrap(),
        );
        crate::engine::runtime::runtime()
            .block_on(async { tokio::time::timeout(Duration::from_secs(30), wake).await })
            .is_ok()
    }

    #[test]
    fn a_watcher_that_failed_to_start_or_whose_stream_ended_is_started_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.lock");
        std::fs::write(&path, "x").unwrap(); // an empty file's read reports nothing
        backend::FAIL_STARTS.with(|n| n.set(1));
        let events = ReleaseEvents::started();
        assert_eq!(events.backend.as_ref().unwrap().running(), None);
        let subscription = events.subscribe(&path);
        until_started(&events, &path, 1);
        assert!(wakes(&subscription, &path));
        // The stream ends (as on a read error): a new instance watches the same paths.
        events.backend.as_ref().unwrap().stop_stream();
        until_started(&events, &path, 2);
        assert!(wakes(&subscription, &path));
    }
}

#[cfg(all(test, target_os = "linux"))]
mod late_files {
    use super::*;

    #[test]
    fn a_file_made_after_its_subscription_is_watched_once_ensured() {
        let dir = tempfile::tempdir().unwrap();
        let late = dir.path().join("late");
        let events = ReleaseEvents::polled().unwrap();
        let subscription = events.subscribe(&late); // nothing to watch yet
        std::fs::write(&late, "x").unwrap();
        events.ensure_watched(&late);
        let mut wake = Box::pin(subscription.wake.notified());
        wake.as_mut().enable();
        crate::engine::backend::kernel::lock_file::wake_waiters(
            &std::fs::File::open(&late).unwrap(),
        );
        events.drain();
        assert!(futures_util::FutureExt::now_or_never(wake).is_some());
    }
}
