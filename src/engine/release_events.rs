//! Wakes waiters when a lock file they wait on may have been released, without a
//! backoff timer: one filesystem watcher (inotify on Linux) per process reports the
//! close of a lock file, which is the moment its holder's kernel lock goes away, also
//! when the holder crashed. Waiters then retry their non-blocking lock at once.
//!
//! A watcher cannot see everything (another host on a network filesystem, platforms
//! without close events), so waiters also retry on a slow safety-net tick.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use notify::{RecursiveMode, Watcher};
use tokio::sync::Notify;

struct Watched {
    subscribers: usize,
    wake: Arc<Notify>,
}

pub struct ReleaseEvents {
    watcher: Option<Mutex<notify::RecommendedWatcher>>,
    watched: Arc<Mutex<HashMap<PathBuf, Watched>>>,
}

/// A waiter's interest in one path; the watch goes away with the last subscription.
pub struct Subscription {
    path: PathBuf,
    pub wake: Arc<Notify>,
}

impl ReleaseEvents {
    pub fn global() -> &'static ReleaseEvents {
        static EVENTS: OnceLock<ReleaseEvents> = OnceLock::new();
        EVENTS.get_or_init(ReleaseEvents::start)
    }

    fn start() -> ReleaseEvents {
        let watched: Arc<Mutex<HashMap<PathBuf, Watched>>> = Arc::default();
        let table = Arc::clone(&watched);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            let table = table.lock().unwrap_or_else(|p| p.into_inner());
            for path in &event.paths {
                if let Some(entry) = table.get(path) {
                    entry.wake.notify_waiters();
                }
            }
        });
        // Without a watcher (no inotify instances left, say) waiters still make
        // progress on the safety-net tick.
        ReleaseEvents { watcher: watcher.ok().map(Mutex::new), watched }
    }

    pub fn subscribe(&self, path: &Path) -> Subscription {
        let mut table = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        let entry = table.entry(path.to_path_buf()).or_insert_with(|| Watched { subscribers: 0, wake: Arc::new(Notify::new()) });
        entry.subscribers += 1;
        let wake = Arc::clone(&entry.wake);
        let first = entry.subscribers == 1;
        drop(table);
        if first {
            self.sync_watch(path);
        }
        Subscription { path: path.to_path_buf(), wake }
    }

    /// Re-arms the watch after the file was replaced: inotify watches an inode, and
    /// a lock file re-created after deletion is a new one.
    pub fn rewatch(&self, path: &Path) {
        if let Some(watcher) = &self.watcher {
            let mut watcher = watcher.lock().unwrap_or_else(|p| p.into_inner());
            let _ = watcher.unwatch(path);
            let _ = watcher.watch(path, RecursiveMode::NonRecursive);
        }
    }

    /// Makes the watch match the table. The table lock is not held across the call:
    /// the watcher's thread takes it to deliver events while it serves watch requests.
    /// The watcher's own lock orders these calls, and each re-reads the table, so the
    /// last call leaves the watch as the table says.
    fn sync_watch(&self, path: &Path) {
        let Some(watcher) = &self.watcher else { return };
        let mut watcher = watcher.lock().unwrap_or_else(|p| p.into_inner());
        let wanted = self.watched.lock().unwrap_or_else(|p| p.into_inner()).contains_key(path);
        if wanted {
            // A path that does not exist yet cannot be watched; the tick covers it.
            let _ = watcher.watch(path, RecursiveMode::NonRecursive);
        } else {
            let _ = watcher.unwatch(path);
        }
    }

    fn unsubscribe(&self, path: &Path) {
        let mut table = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = table.get_mut(path) else { return };
        entry.subscribers -= 1;
        if entry.subscribers == 0 {
            table.remove(path);
            drop(table);
            self.sync_watch(path);
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        ReleaseEvents::global().unsubscribe(&self.path);
    }
}
