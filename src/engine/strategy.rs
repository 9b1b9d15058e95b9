//! The mechanisms a lock can be built on, behind two small traits: a `Contend` makes
//! non-blocking attempts, a `HeldLock` is what a successful attempt holds. The
//! manager and the wait loop know only these; adding a mechanism adds a file.

use std::fmt::Debug;
use std::path::{Path, PathBuf};

use super::error::{LockError, Result};
use super::kernel_lock::Contender;
use super::owner_record::Claimant;
use super::mkdir_lock::MkdirContender;
use super::owner_record::{LockMode, OwnerRecord};

pub trait HeldLock: Send + Debug {
    fn path(&self) -> &Path;
    fn record(&self) -> &OwnerRecord;
    /// Refreshes the holder's sign of life; `ECOMPROMISED` if the lock was lost.
    fn beat(&mut self, now_ms: u64) -> Result<()>;
    /// Releases now, reporting failures; dropping releases silently.
    fn release(self: Box<Self>) -> Result<()>;
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// OS advisory locks on a lock file (`flock`).
    Kernel,
    /// proper-lockfile's protocol: `mkdir <file>.lock`, kept fresh by its mtime.
    Mkdir { stale_ms: u64 },
}

impl Strategy {
    pub fn contender(self, lockfile: PathBuf, mode: LockMode) -> Result<Box<dyn Contend>> {
        Ok(match self {
            Strategy::Kernel => Box::new(Contender::new(lockfile, mode)),
            Strategy::Mkdir { stale_ms } => {
                if mode == LockMode::Shared {
                    return Err(LockError::invalid_path(
                        "the mkdir strategy has exclusive locks only: mode 'shared' needs strategy 'kernel'",
                        &lockfile,
                    ));
                }
                Box::new(MkdirContender::new(lockfile, stale_ms))
            }
        })
    }
}
