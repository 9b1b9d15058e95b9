//! Judging a lock directory and removing a stale one, under the takeover guard.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::engine::error::{LockError, Result};
use crate::engine::liveness::holder_alive;
use crate::engine::lock_path::sibling;
use crate::engine::owner_record::{classify, now_ms, Leftover, OwnerRecord};
use crate::engine::safe_fs::{self, Access, Create};

use super::{dir_id, DirId, DirOwner, GUARD_ACCESS, OWNER_SUFFIX, TAKEOVER_SUFFIX};

/// Stale: its mtime is older than `stale_ms`, or its owner record (tied to this very
/// directory) names a holder on this host that is no longer running.
pub fn is_stale(dir: &Path, meta: &fs::Metadata, stale_ms: u64) -> bool {
    if mtime_age_ms(meta) > stale_ms {
        return true;
    }
    match read_owner(dir, dir_id(meta)) {
        // Only where the directory's creation time is known: without it, a record
        // left by a directory that proper-lockfile removed could match a new one
        // that reused its inode number, and its dead PID would break a live lock.
        Some(owner) if owner.dir_born != 0 => !holder_alive(&owner.record, u64::MAX, now_ms()),
        _ => false,
    }
}

pub fn mtime_age_ms(meta: &fs::Metadata) -> u64 {
    let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
    SystemTime::now()
        .duration_since(mtime)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Why the non-directory at a lock directory's path is no lock of this protocol, or
/// `None` if it is gone. A kernel-strategy lock file there means processes disagree
/// on the protocol: each would think it holds the lock. Nothing there is changed.
pub fn not_a_lock_dir(dir: &Path, meta: &fs::Metadata) -> Option<LockError> {
    if meta.file_type().is_symlink() {
        return Some(LockError::not_a_lock_file(dir, "a symbolic link"));
    }
    let content = match read_beside(dir) {
        Ok(Some(content)) => content,
        Ok(None) => return None,
        Err(e) => return Some(LockError::from_io(&e, "open", dir)),
    };
    if let Leftover::Foreign = classify(&content) {
        return Some(LockError::not_a_lock_file(
            dir,
            "a file that is not a lockwright lock file",
        ));
    }
    Some(LockError::new(
        "ENOTDIR",
        format!(
            "ENOTDIR: '{}' is a lock file of lockwright's kernel strategy, not a lock directory: \
             another process locks this file with strategy 'kernel'. Processes sharing a lock must \
             use the same protocol: strategy 'mkdir' (or lockwright/proper-lockfile) everywhere, \
             or the kernel strategy everywhere",
            dir.display()
        ),
        Some(dir),
    ))
}

/// A small file beside a lock (record, token), or `None` if there is none. Never
/// through a symlink, never blocking on a FIFO, never more than a record's size.
pub(super) fn read_beside(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match safe_fs::open_file(path, Access::Read, Create::No) {
        Ok(file) => safe_fs::read_bounded(&file).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The owner record beside `dir`, if it was written for this very directory.
pub(super) fn read_owner(dir: &Path, id: DirId) -> Option<DirOwner> {
    let bytes = read_beside(&sibling(dir, OWNER_SUFFIX)).ok()??;
    let owner: DirOwner = serde_json::from_slice(&bytes).ok()?;
    (DirId {
        dev: owner.dir_dev,
        ino: owner.dir_ino,
        born: owner.dir_born,
    } == id)
        .then_some(owner)
}

/// The holder of the lock directory `dir`, as its record says, if the record is its.
pub fn current_owner(dir: &Path) -> Option<(OwnerRecord, fs::Metadata)> {
    let meta = fs::symlink_metadata(dir).ok()?;
    let owner = read_owner(dir, dir_id(&meta))?;
    Some((owner.record, meta))
}

pub(super) fn remove_owner_record_of(dir: &Path, id: DirId) {
    if read_owner(dir, id).is_some() {
        let _ = fs::remove_file(sibling(dir, OWNER_SUFFIX));
    }
}

/// Removes a stale lock directory (any holder's, proper-lockfile's too), or with
/// `force` any lock directory, under the takeover guard. Returns whether it removed
/// one; with `dry_run`, whether it would have.
pub fn remove_if_stale(dir: &Path, stale_ms: u64, force: bool, dry_run: bool) -> Result<bool> {
    let stale = |meta: &fs::Metadata| force || is_stale(dir, meta, stale_ms);
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return Ok(false);
    };
    if !meta.is_dir() || !stale(&meta) {
        return Ok(false);
    }
    Ok(remove_judged(dir, dir_id(&meta), stale, dry_run)?.unwrap_or(false))
}

/// Removes the lock directory `dir` if it is still the one judged (`judged`) and
/// `removable` still says so, both checked again under the takeover guard. Returns
/// whether it removed it (with `dry_run`, would have), or `None` when someone else
/// holds the guard: never blocks on it, since a peer stopped while holding it would
/// freeze every wait on this thread.
pub(super) fn remove_judged(
    dir: &Path,
    judged: DirId,
    removable: impl Fn(&fs::Metadata) -> bool,
    dry_run: bool,
) -> Result<Option<bool>> {
    let guard_path = sibling(dir, TAKEOVER_SUFFIX);
    let guard = safe_fs::open_file(&guard_path, GUARD_ACCESS, Create::IfMissing)
        .map_err(|e| LockError::from_io(&e, "open", &guard_path))?;
    match guard.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(None),
        Err(TryLockError::Error(e)) => return Err(LockError::from_io(&e, "lock", &guard_path)),
    }
    match fs::symlink_metadata(dir) {
        Ok(meta) if dir_id(&meta) == judged && removable(&meta) => {}
        _ => return Ok(Some(false)),
    }
    if dry_run {
        return Ok(Some(true));
    }
    remove_owner_record_of(dir, judged);
    #[cfg(test)]
    before_rmdir::run();
    match fs::remove_dir(dir) {
        Ok(()) => Ok(Some(true)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Some(false)),
        // Lock directories are kept empty: one with content is not a lock.
        Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => Ok(Some(false)),
        Err(e) => Err(rmdir_error(&e, dir)),
    }
}

/// In a sticky directory (`/tmp`) only its owner may remove a lock directory, as with
/// proper-lockfile: say whose it is, since the holder is the one who must release it.
pub(super) fn rmdir_error(e: &io::Error, dir: &Path) -> LockError {
    let mut err = LockError::from_io(e, "rmdir", dir);
    if err.code == "EPERM" {
        if let Some(owner) = safe_fs::owner_of(dir) {
            err.message
                .push_str(&format!(" (the lock directory belongs to {owner})"));
        }
    }
    err
}

/// The lock directory itself, opened for a look and a touch: never through a symlink
/// (a lock directory swapped for one would send the touch elsewhere). On Windows a
/// directory opens only with `FILE_FLAG_BACKUP_SEMANTICS`, and a touch needs
/// `FILE_WRITE_ATTRIBUTES`: a plain `File::open` failed there and every heartbeat with it.
pub fn open_lock_dir(dir: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY);
    }
    #[cfg(windows)]
    {
        use std::os::windows::fs::OpenOptionsExt;
        const FILE_READ_ATTRIBUTES: u32 = 0x80;
        const FILE_WRITE_ATTRIBUTES: u32 = 0x100;
        const FILE_FLAG_BACKUP_SEMANTICS: u32 = 0x0200_0000;
        const FILE_FLAG_OPEN_REPARSE_POINT: u32 = 0x0020_0000;
        options
            .access_mode(FILE_READ_ATTRIBUTES | FILE_WRITE_ATTRIBUTES)
            .custom_flags(FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OPEN_REPARSE_POINT);
    }
    let handle = options.open(dir)?;
    if !handle.metadata()?.is_dir() {
        return Err(io::ErrorKind::NotADirectory.into());
    }
    Ok(handle)
}

/// A hook between a removal's last check and its rmdir, where a takeover could come.
#[cfg(test)]
pub(super) mod before_rmdir {
    use std::cell::RefCell;

    thread_local! {
        static HOOK: RefCell<Option<Box<dyn FnOnce()>>> = RefCell::new(None);
    }

    pub fn set(hook: impl FnOnce() + 'static) {
        HOOK.with(|h| *h.borrow_mut() = Some(Box::new(hook)));
    }

    pub(in super::super) fn run() {
        if let Some(hook) = HOOK.with(|h| h.borrow_mut().take()) {
            hook()
        }
    }
}
