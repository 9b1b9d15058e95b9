//! What every backend implements: the whole life of a lock behind three small traits.
//! A `Backend` makes contenders and looks at and sweeps its locks from outside; a
//! `Contend` makes non-blocking attempts; a `HeldLock` is what a successful attempt
//! holds, until its release. The manager and the wait loop know only these.

use std::fmt::Debug;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Instant;

use crate::engine::error::Result;
use crate::engine::inspect::{CleanupReport, LockStatus};
use crate::engine::owner_record::{Claimant, LockMode, OwnerRecord};

pub trait Backend: Send + Sync + Debug {
    /// A new contender for the lock at `lock` (a lock file, a lock directory).
    fn contender(&self, lock: &Path, mode: LockMode) -> Result<Box<dyn Contend>>;
    /// Whether a held lock lives only as long as its heartbeats keep it fresh (a lock
    /// directory's mtime, a lease), so turning heartbeats off would lose it.
    fn needs_heartbeat(&self) -> bool {
        false
    }
    /// The slowest heartbeat that keeps a live holder from looking stale.
    fn max_heartbeat_ms(&self, stale_ms: u64) -> u64 {
        stale_ms / 2
    }
    /// Whether locks live on a server (Redis) rather than in files: names are then
    /// logical keys, used as given, never resolved against the working directory; an
    /// async acquire never makes its round trip on the calling thread; and waits are
    /// the backend's own (`wait`), not the manager's file watching.
    fn remote(&self) -> bool {
        false
    }
    /// A remote backend's wait, which queues and wakes its waiters across hosts; it
    /// ends by `deadline` (`None`: never) with the backend's own error. File backends
    /// return `None`: the manager watches their lock files.
    fn wait(&self, _request: WaitRequest) -> Option<PendingLock> {
        None
    }
    /// Who holds `lock` now, as their records say: errors name them.
    fn holders(&self, lock: &Path) -> Vec<OwnerRecord>;
    fn status(&self, lock: &Path) -> Result<LockStatus>;
    /// The status of every lock in `dir`.
    fn list(&self, dir: &Path) -> Result<Vec<LockStatus>>;
    /// Clears what dead holders left in `dir`; with `dry_run`, only says what.
    fn cleanup(&self, dir: &Path, dry_run: bool) -> Result<CleanupReport>;
    /// Breaks one lock if its holder is dead, or (where the backend can) with `force`;
    /// `target` names it in errors. Returns whether anything changed.
    fn force_release(&self, lock: &Path, target: &Path, force: bool) -> Result<bool>;
}

/// What a self-waiting backend is asked for.
pub struct WaitRequest {
    pub lock: PathBuf,
    pub mode: LockMode,
    pub claimant: Claimant,
    pub lock_id: String,
    /// `None`: wait forever. A deadline already past means one attempt.
    pub deadline: Option<Instant>,
}

pub type PendingLock = Pin<Box<dyn Future<Output = Result<Box<dyn HeldLock>>> + Send>>;

/// A release whose round trip has yet to run (see `HeldLock::release_later`).
pub type PendingRelease = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

pub trait HeldLock: Send + Debug {
    fn path(&self) -> &Path;
    fn record(&self) -> &OwnerRecord;
    /// Refreshes the holder's sign of life; `ECOMPROMISED` if the lock was lost.
    fn beat(&mut self, now_ms: u64) -> Result<()>;
    /// Releases now, reporting failures; dropping releases silently.
    fn release(self: Box<Self>) -> Result<()>;
    /// A release that must not block its caller (an async `release()` from
    /// JavaScript): a remote backend's round trip, to run on the wait runtime. File
    /// locks release at once, in a few system calls.
    fn release_later(self: Box<Self>) -> PendingRelease {
        let released = self.release();
        Box::pin(std::future::ready(released))
    }
    /// Whether this grant came after waiting behind another holder (a remote backend's
    /// own wait; file waits are counted by the manager).
    fn waited(&self) -> bool {
        false
    }
    /// The descriptor whose open file holds the lock, if the lock is one.
    #[cfg(unix)]
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
}

pub trait Contend: Send {
    /// One non-blocking attempt. `will_wait`: the caller waits if this fails.
    fn try_acquire(
        &mut self,
        claimant: &Claimant,
        lock_id: String,
        will_wait: bool,
    ) -> Result<Option<Box<dyn HeldLock>>>;
    /// Paths whose changes may mean the lock came free.
    fn wake_paths(&self) -> Vec<PathBuf>;
    /// Changes when the watched lock file was re-created, so its watch must be renewed.
    fn generation(&self) -> u32;
}
