//! The mkdir strategy: proper-lockfile's own on-disk protocol, so processes still on
//! proper-lockfile and processes on lockwright exclude each other.
//!
//! - `<file>.lock` is a directory made by `mkdir` (atomic everywhere, NFS included) and
//!   kept empty, so a proper-lockfile peer's `rmdir` can take over a dead holder's lock.
//! - Its mtime is the heartbeat: refreshed every `update` ms by the native heartbeat;
//!   a lock whose mtime is older than `stale` is stale.
//! - Beside it, `<file>.lock.owner.json` names the holder and the very directory it
//!   made (device and inode). A record naming another directory was left by an
//!   earlier owner and is ignored. A holder the record proves dead (on this host, boot
//!   and PID namespace, its PID gone or reused) is stale at once, not after `stale` ms.
//! - `<file>.lock.token` keeps the last fencing token, `{"token":N}`; each grant
//!   writes the next one while it holds the lock, and it stays across releases.
//! - Takeover of a stale lock happens under a kernel lock on `<file>.lock.takeover`,
//!   re-checking staleness inside it. proper-lockfile's rmdir-then-mkdir lets two
//!   processes that both saw the lock stale both win (its #121); two lockwright
//!   processes cannot.
//!
//! Everything beside the lock (record, token, guard) sits in a directory others may
//! write to, so it is opened through `safe_fs`: never through a symlink, never
//! blocking on a FIFO, regular files only, bounded reads, shared as the directory is.
//!
//! - `grant.rs`: making the directory, taking over a stale one, the heartbeat (its
//!   mtime) and release;
//! - `sweep.rs`: judging staleness and removing stale lock directories safely;
//! - `token.rs`: the fencing token kept beside the lock.

mod grant;
mod sweep;
#[cfg(test)]
mod tests;
mod token;

use std::fs::{self};
use std::path::Path;
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use crate::engine::backend::traits::{Backend, Contend};
use crate::engine::error::{code, LockError, Result};
use crate::engine::liveness::holder_alive;
use crate::engine::owner_record::{now_ms, LockMode, OwnerRecord};
use crate::engine::safe_fs::Access;

pub use grant::{MkdirContender, MkdirLock};
use sweep::*;

use crate::engine::inspect::{lock_entries, CleanupReport, LockStatus, OwnerStatus};

/// proper-lockfile's protocol; `stale` is its staleness threshold (and the lease a
/// holder's heartbeat must keep renewing).
#[derive(Debug)]
pub struct MkdirBackend {
    pub stale_ms: u64,
}

impl Backend for MkdirBackend {
    fn contender(&self, lock: &Path, mode: LockMode) -> Result<Box<dyn Contend>> {
        if mode == LockMode::Shared {
            return Err(LockError::invalid_path(
                "the mkdir strategy has exclusive locks only: mode 'shared' needs strategy 'kernel'",
                lock,
            ));
        }
        Ok(Box::new(MkdirContender::new(
            lock.to_path_buf(),
            self.stale_ms,
        )))
    }

    fn needs_heartbeat(&self) -> bool {
        true
    }

    fn holders(&self, lock: &Path) -> Vec<OwnerRecord> {
        current_owner(lock)
            .map(|(record, _)| record)
            .into_iter()
            .collect()
    }

    fn status(&self, lock: &Path) -> Result<LockStatus> {
        mkdir_status(lock, self.stale_ms)
    }

    fn list(&self, dir: &Path) -> Result<Vec<LockStatus>> {
        mkdir_list(dir, self.stale_ms)
    }

    fn cleanup(&self, dir: &Path, dry_run: bool) -> Result<CleanupReport> {
        mkdir_cleanup(dir, self.stale_ms, dry_run)
    }

    fn force_release(&self, lock: &Path, target: &Path, force: bool) -> Result<bool> {
        mkdir_force_release(lock, target, self.stale_ms, force)
    }
}

pub const OWNER_SUFFIX: &str = ".owner.json";
pub const TAKEOVER_SUFFIX: &str = ".takeover";
pub const TOKEN_SUFFIX: &str = ".token";

/// Read-only is enough for a kernel lock: another user's guard (a dead holder's, made
/// before guards were shared) no longer stops every takeover with EACCES. Windows
/// cannot create a file opened read-only (std refuses `create` without write), and
/// has no sticky directories to share.
#[cfg(unix)]
const GUARD_ACCESS: Access = Access::Read;
#[cfg(not(unix))]
const GUARD_ACCESS: Access = Access::ReadWrite;

/// The owner record beside a lock directory, tied to that directory's identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirOwner {
    #[serde(flatten)]
    pub record: OwnerRecord,
    pub dir_dev: u64,
    pub dir_ino: u64,
    /// Creation time in ns where the filesystem records it: inode numbers are reused
    /// at once, so a new directory can have the old one's.
    #[serde(default)]
    pub dir_born: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DirId {
    dev: u64,
    ino: u64,
    born: u64,
}

fn born_ns(meta: &fs::Metadata) -> u64 {
    meta.created()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(unix)]
fn dir_id(meta: &fs::Metadata) -> DirId {
    use std::os::unix::fs::MetadataExt;
    DirId {
        dev: meta.dev(),
        ino: meta.ino(),
        born: born_ns(meta),
    }
}

#[cfg(not(unix))]
fn dir_id(meta: &fs::Metadata) -> DirId {
    DirId {
        dev: 0,
        ino: 0,
        born: born_ns(meta),
    }
}

/// `status` for proper-lockfile's protocol: the directory exists and is fresh.
fn mkdir_status(dir: &Path, stale_ms: u64) -> Result<LockStatus> {
    let free = || LockStatus {
        lockfile: dir.to_path_buf(),
        locked: false,
        stale: false,
        mode: None,
        owners: Vec::new(),
    };
    let meta = match fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => meta,
        // A kernel lock file or a stranger's file: say which (never follow a symlink).
        Ok(meta) => return not_a_lock_dir(dir, &meta).map_or_else(|| Ok(free()), Err),
        Err(_) => return Ok(free()),
    };
    let stale = is_stale(dir, &meta, stale_ms);
    let age = mtime_age_ms(&meta);
    let owners = current_owner(dir)
        .map(|(record, _)| {
            let alive = !stale && holder_alive(&record, stale_ms, now_ms());
            vec![OwnerStatus {
                record,
                heartbeat_age_ms: age,
                alive,
            }]
        })
        .unwrap_or_default();
    Ok(LockStatus {
        lockfile: dir.to_path_buf(),
        locked: !stale,
        stale,
        mode: Some(LockMode::Exclusive),
        owners,
    })
}

/// `list` for mkdir locks: every `*.lock` directory in `dir`.
fn mkdir_list(dir: &Path, stale_ms: u64) -> Result<Vec<LockStatus>> {
    lock_entries(dir, |t| t.is_dir())?
        .iter()
        .map(|d| mkdir_status(d, stale_ms))
        .collect()
}

/// `cleanup` for mkdir locks: removes the stale lock directories in `dir`.
fn mkdir_cleanup(dir: &Path, stale_ms: u64, dry_run: bool) -> Result<CleanupReport> {
    let mut report = CleanupReport::default();
    let lock_dirs = lock_entries(dir, |t| t.is_dir())?;
    for lock_dir in lock_dirs {
        if remove_if_stale(&lock_dir, stale_ms, false, dry_run)? {
            report.removed.push(lock_dir);
        } else {
            report.kept += 1;
        }
    }
    Ok(report)
}

/// `force_release` for mkdir locks: a stale one is removed; a live one only with
/// `force`, since a directory, unlike a kernel lock, can be taken from its holder.
fn mkdir_force_release(dir: &Path, target: &Path, stale_ms: u64, force: bool) -> Result<bool> {
    let status = mkdir_status(dir, stale_ms)?;
    if status.locked && !force {
        let holder = status.owners.first().map(|o| o.record.who());
        return Err(LockError::new(
            code::LOCKED,
            format!(
                "{} is locked by {} and the holder is alive; pass force: true to break it anyway",
                target.display(),
                holder.unwrap_or_else(|| "another process".into())
            ),
            Some(target),
        ));
    }
    remove_if_stale(dir, stale_ms, force, false)
}
