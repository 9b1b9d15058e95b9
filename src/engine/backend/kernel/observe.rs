//! Who holds a kernel lock, seen from outside and without taking it.

use std::fs::{File, TryLockError};
use std::io;
use std::path::Path;

use crate::engine::error::{LockError, Result};
use crate::engine::owner_record::OwnerRecord;
use crate::engine::safe_fs::{self, Access, Create};

use super::lock_file::read_record;
use super::lock_table;
use super::readers::reader_owners;

/// Who holds a lock file, as the records say: the live shared holders if there are
/// any, else the exclusive holder's record. A reader record whose lock can be taken
/// was left by a crashed reader and is skipped.
pub fn read_holders(lockfile: &Path) -> Vec<OwnerRecord> {
    let readers = reader_owners(lockfile, true);
    if !readers.is_empty() {
        return readers;
    }
    safe_fs::open_file(lockfile, Access::Read, Create::No)
        .ok()
        .and_then(|file| read_record(&file))
        .into_iter()
        .collect()
}

/// Who holds a lock file's kernel lock, seen from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holding {
    Missing,
    Free,
    Shared,
    Exclusive,
}

/// Finds out by trying: a non-blocking exclusive lock, then a shared one, each let go
/// at once. Such a probe holds the lock for a moment, and a `tryAcquire` elsewhere in
/// that moment fails: `observe` uses it only where the kernel's own table cannot tell.
pub fn probe(lockfile: &Path) -> Result<Holding> {
    let file = match safe_fs::open_file(lockfile, Access::ReadWrite, Create::No)
        .or_else(|_| safe_fs::open_file(lockfile, Access::Read, Create::No))
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Holding::Missing),
        Err(e) => return Err(LockError::from_io(&e, "open", lockfile)),
    };
    let lock_err = |e: io::Error| LockError::from_io(&e, "lock", lockfile);
    match file.try_lock() {
        Ok(()) => return Ok(Holding::Free),
        Err(TryLockError::WouldBlock) => {}
        Err(TryLockError::Error(e)) => return Err(lock_err(e)),
    }
    match file.try_lock_shared() {
        Ok(()) => Ok(Holding::Shared),
        Err(TryLockError::WouldBlock) => Ok(Holding::Exclusive),
        Err(TryLockError::Error(e)) => Err(lock_err(e)),
    }
}

/// What a look from outside found.
#[derive(Debug)]
pub struct Observed {
    pub holding: Holding,
    /// The holders' PIDs, where the kernel's table lists them.
    pub pids: Vec<i32>,
    /// The records named the same holders before and after a look that found the lock
    /// free: they are dead (or were unseen, and the probe said which). Only then may a
    /// sweep lock the file to clear them; a record seen once may be a live holder's
    /// that was just let go, and locking then would refuse that holder's next try.
    pub records_outlived_holders: bool,
}

/// Who holds a lock file, found without taking its lock: the kernel's table where it
/// can be read, with the PIDs it lists. The table leaves out holders in PID
/// namespaces we cannot see, so where it lists nobody while the records say someone
/// is in, and the records stay the same around the look (a live holder we can see
/// rewrites its record before it unlocks), only a probe can tell a dead holder from
/// an unseen one. Off Linux the probe is all there is.
pub fn observe(lockfile: &Path) -> Result<Observed> {
    let seen = |holding, pids, records_outlived_holders| Observed {
        holding,
        pids,
        records_outlived_holders,
    };
    let file = match safe_fs::open_file(lockfile, Access::Read, Create::No) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(seen(Holding::Missing, Vec::new(), false))
        }
        Err(e) => return Err(LockError::from_io(&e, "open", lockfile)),
    };
    let before = recorded_holders(&file, lockfile);
    let Some(entries) = lock_table::flocks_on(&file) else {
        let holding = probe(lockfile)?;
        return Ok(seen(
            holding,
            Vec::new(),
            holding == Holding::Free && !before.is_empty(),
        ));
    };
    if !entries.is_empty() {
        let holding = if entries.iter().any(|e| e.exclusive) {
            Holding::Exclusive
        } else {
            Holding::Shared
        };
        return Ok(seen(
            holding,
            entries.iter().map(|e| e.pid).collect(),
            false,
        ));
    }
    if before.is_empty() || recorded_holders(&file, lockfile) != before {
        // Nobody was recorded, or holders came and went while we looked: at the
        // moment the table was read, the lock was free.
        return Ok(seen(Holding::Free, Vec::new(), false));
    }
    let holding = probe(lockfile)?;
    Ok(seen(holding, Vec::new(), holding == Holding::Free))
}

/// The lock ids the records name as holding now: the exclusive holder's, and each
/// reader whose record is still locked.
pub(super) fn recorded_holders(file: &File, lockfile: &Path) -> Vec<String> {
    let mut ids: Vec<String> = reader_owners(lockfile, true)
        .into_iter()
        .map(|r| r.lock_id)
        .collect();
    if let Some(record) = read_record(file) {
        ids.push(record.lock_id);
    }
    ids.sort();
    ids
}
