//! Sweeping what dead holders left: a dead holder's record is cleared (keeping its
//! fencing token); lock files themselves are never removed.

use std::fs::TryLockError;
use std::io;
use std::path::Path;

use crate::engine::error::{LockError, Result};
use crate::engine::owner_record::{classify, Leftover, ReleasedRecord};
use crate::engine::safe_fs::{self, overwrite, Access, Create};

use super::lock_file::{read_whole, still_at_path};
use super::observe::{observe, Holding};

/// What a lock file holds now, read without locking it; an unreadable, oversized or
/// non-regular file is `Foreign`.
pub fn leftover(lockfile: &Path) -> Leftover {
    safe_fs::open_file(lockfile, Access::Read, Create::No)
        .and_then(|file| read_whole(&file))
        .map(|content| classify(&content))
        .unwrap_or(Leftover::Foreign)
}

/// What a sweep did to one lock file.
#[derive(Debug, PartialEq, Eq)]
pub enum Swept {
    /// Held, cleanly released, empty, not ours, or no longer at the path: left alone.
    Kept,
    /// A dead holder's record: rewritten as a release, keeping its fencing token so
    /// the next grant continues the sequence (a new file would restart it at 1).
    Cleared,
}

/// Sweeps `lockfile` if nobody holds it. Lock files are never unlinked, even empty
/// ones: another process (ours, or `flock(1)`) may have one open and be about to lock
/// it, and would then hold a lock on an inode nobody else can reach. Only a dead
/// holder's record is cleared, and only while we hold the lock and the file is still
/// the one at the path. The file is looked at first without locking, so a sweep that
/// finds nothing to do never takes the lock (a `tryAcquire` elsewhere would fail).
/// With `dry_run`, makes the same checks and says what it would do.
pub fn sweep_unheld(lockfile: &Path, dry_run: bool) -> Result<Swept> {
    let seen = observe(lockfile)?;
    if seen.holding != Holding::Free || !seen.records_outlived_holders {
        return Ok(Swept::Kept);
    }
    let file = match safe_fs::open_file(lockfile, Access::ReadWrite, Create::No) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Swept::Kept),
        Err(e) => return Err(LockError::from_io(&e, "open", lockfile)),
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(Swept::Kept),
        Err(TryLockError::Error(e)) => return Err(LockError::from_io(&e, "lock", lockfile)),
    }
    let content = read_whole(&file).map_err(|e| LockError::from_io(&e, "read", lockfile))?;
    if !still_at_path(&file, lockfile) {
        return Ok(Swept::Kept);
    }
    let Leftover::DeadHolder(record) = classify(&content) else {
        return Ok(Swept::Kept);
    };
    if !dry_run {
        let released = serde_json::to_vec(&ReleasedRecord {
            token: record.token,
        })
        .expect("a token serialises");
        overwrite(&file, &released, content.len())
            .map_err(|e| LockError::from_io(&e, "clear", lockfile))?;
    }
    Ok(Swept::Cleared)
}
