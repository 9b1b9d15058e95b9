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

use std::fs::{self, File, FileTimes, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::error::{code, LockError, Result};
use super::lock_path::sibling;
use super::owner_record::{classify, Claimant, Leftover};
use super::liveness::holder_alive;
use super::lock_file::overwrite;
use super::owner_record::{now_ms, LockMode, OwnerRecord, ReleasedRecord};
use super::safe_fs::{self, Access, Create};
use super::strategy::{Contend, HeldLock};

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

pub struct MkdirContender {
    dir: PathBuf,
    stale_ms: u64,
    /// The lock directory we last saw: a different one needs a new watch.
    last_seen: Option<DirId>,
    generation: u32,
}

impl MkdirContender {
    pub fn new(dir: PathBuf, stale_ms: u64) -> Self {
        MkdirContender {
            dir,
            stale_ms,
            last_seen: None,
            generation: 0,
        }
    }

    fn try_mkdir(&mut self, claimant: &Claimant, lock_id: &str) -> Result<Option<MkdirLock>> {
        match fs::create_dir(&self.dir) {
            Ok(()) => MkdirLock::grant(&self.dir, claimant, lock_id, self.stale_ms).map(Some),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(LockError::from_io(&e, "mkdir", &self.dir)),
        }
    }

    /// Removes a stale lock and takes it, unless someone did first.
    fn take_over(
        &mut self,
        judged: DirId,
        claimant: &Claimant,
        lock_id: &str,
    ) -> Result<Option<MkdirLock>> {
        let (dir, stale_ms) = (&self.dir, self.stale_ms);
        // Someone else taking over right now means "not now".
        if remove_judged(dir, judged, |meta| is_stale(dir, meta, stale_ms), false)?.is_none() {
            return Ok(None);
        }
        self.generation += 1;
        self.try_mkdir(claimant, lock_id)
    }
}

impl Contend for MkdirContender {
    fn try_acquire(
        &mut self,
        claimant: &Claimant,
        lock_id: String,
        _will_wait: bool,
    ) -> Result<Option<Box<dyn HeldLock>>> {
        if let Some(lock) = self.try_mkdir(claimant, &lock_id)? {
            return Ok(Some(Box::new(lock)));
        }
        let meta = match fs::symlink_metadata(&self.dir) {
            Ok(meta) => meta,
            // Released between our mkdir and stat: one more plain attempt.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(self
                    .try_mkdir(claimant, &lock_id)?
                    .map(|l| Box::new(l) as Box<dyn HeldLock>));
            }
            Err(e) => return Err(LockError::from_io(&e, "stat", &self.dir)),
        };
        if !meta.is_dir() {
            return match not_a_lock_dir(&self.dir, &meta) {
                Some(err) => Err(err),
                None => Ok(None), // gone meanwhile: the next attempt makes it
            };
        }
        if self.last_seen.replace(dir_id(&meta)) != Some(dir_id(&meta)) {
            self.generation += 1;
        }
        if !is_stale(&self.dir, &meta, self.stale_ms) {
            return Ok(None);
        }
        Ok(self
            .take_over(dir_id(&meta), claimant, &lock_id)?
            .map(|l| Box::new(l) as Box<dyn HeldLock>))
    }

    fn wake_paths(&self) -> Vec<PathBuf> {
        // The directory's removal is the release.
        vec![self.dir.clone()]
    }

    fn generation(&self) -> u32 {
        self.generation
    }
}

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
fn read_beside(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match safe_fs::open_file(path, Access::Read, Create::No) {
        Ok(file) => safe_fs::read_bounded(&file).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The owner record beside `dir`, if it was written for this very directory.
fn read_owner(dir: &Path, id: DirId) -> Option<DirOwner> {
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

fn remove_owner_record_of(dir: &Path, id: DirId) {
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
fn remove_judged(
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
fn rmdir_error(e: &io::Error, dir: &Path) -> LockError {
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

/// The next fencing token for a grant of the lock directory `dir`, kept beside it.
/// Called only while holding the lock, so read-then-write cannot interleave.
fn next_token(dir: &Path) -> Result<u64> {
    let path = sibling(dir, TOKEN_SUFFIX);
    let path = &path;
    let io_err = |action| move |e: io::Error| LockError::from_io(&e, action, path);
    let file =
        safe_fs::open_file(path, Access::ReadWrite, Create::IfMissing).map_err(io_err("open"))?;
    let content = safe_fs::read_bounded(&file).map_err(io_err("read"))?;
    let last = match classify(&content) {
        Leftover::Empty => 0,
        Leftover::Released => super::owner_record::last_token(&content),
        Leftover::DeadHolder(record) => record.token,
        Leftover::Foreign => {
            return Err(LockError::not_a_lock_file(
                path,
                "a file that is not a token record",
            ))
        }
    };
    let token = last + 1;
    let json = serde_json::to_vec(&ReleasedRecord { token }).expect("a token serialises");
    overwrite(&file, &json, content.len()).map_err(io_err("write"))?;
    Ok(token)
}

/// Sets the open directory's mtime to `at` and returns it as the filesystem stored
/// it (some keep only seconds), which is what later checks compare against.
fn touch(handle: &File, at: SystemTime) -> io::Result<fs::Metadata> {
    handle.set_times(FileTimes::new().set_accessed(at).set_modified(at))?;
    handle.metadata()
}

#[derive(Debug)]
pub struct MkdirLock {
    dir: PathBuf,
    id: DirId,
    /// The mtime we last set: anything else means someone else touched the lock.
    mtime: SystemTime,
    record: OwnerRecord,
    /// When the mtime was last refreshed (ms since the epoch), and how old it may get.
    touched_at: u64,
    stale_ms: u64,
    released: bool,
    compromised: bool,
    /// Whether the record beside the lock is one we wrote: only then does release
    /// remove it (a FIFO or symlink planted there is not ours to delete).
    wrote_record: bool,
}

impl MkdirLock {
    fn grant(dir: &Path, claimant: &Claimant, lock_id: &str, stale_ms: u64) -> Result<MkdirLock> {
        // mkdir just set the directory's mtime to now: that is the first heartbeat.
        let meta = fs::symlink_metadata(dir).map_err(|e| LockError::from_io(&e, "stat", dir))?;
        // A grant without its token would break the promise of increasing tokens:
        // give the lock back and say why.
        let token = next_token(dir).inspect_err(|_| {
            let _ = fs::remove_dir(dir);
        })?;
        let record = claimant.record(LockMode::Exclusive, lock_id.to_string(), token);
        let mut lock = MkdirLock {
            dir: dir.to_path_buf(),
            id: dir_id(&meta),
            mtime: meta.modified().unwrap_or(UNIX_EPOCH),
            record,
            touched_at: now_ms(),
            stale_ms,
            released: false,
            compromised: false,
            wrote_record: false,
        };
        // The record is informative (who holds it); the directory is the lock. A
        // failure to write it does not undo the grant.
        lock.wrote_record = lock.write_owner().is_ok();
        Ok(lock)
    }

    /// Written in place: a reader that catches it half-written cannot parse it and
    /// treats the lock as one without a record, judged by its mtime alone. Opened
    /// through `safe_fs`: a symlink planted at the record's name made every grant and
    /// heartbeat overwrite the file it pointed to, and a FIFO froze the heartbeat.
    fn write_owner(&self) -> io::Result<()> {
        let owner = DirOwner {
            record: self.record.clone(),
            dir_dev: self.id.dev,
            dir_ino: self.id.ino,
            dir_born: self.id.born,
        };
        let json = serde_json::to_vec(&owner).expect("an owner record serialises");
        let path = sibling(&self.dir, OWNER_SUFFIX);
        let file = safe_fs::open_file(&path, Access::ReadWrite, Create::IfMissing)?;
        overwrite(&file, &json, 0)?;
        file.set_len(json.len() as u64)
    }

    fn still_ours(&self) -> std::result::Result<fs::Metadata, LockError> {
        self.judge(fs::symlink_metadata(&self.dir))
    }

    /// Ours if it is the directory we made, with the mtime we last set.
    fn judge(
        &self,
        meta: io::Result<fs::Metadata>,
    ) -> std::result::Result<fs::Metadata, LockError> {
        let lost = |message: String| LockError::new(code::COMPROMISED, message, Some(&self.dir));
        match meta {
            Ok(meta) if dir_id(&meta) == self.id && meta.modified().ok() == Some(self.mtime) => {
                Ok(meta)
            }
            Ok(_) => Err(lost(
                "Unable to update lock within the stale threshold".into(),
            )),
            Err(e) => Err(self.unreadable(e)),
        }
    }

    /// Marks the lock lost, and returns why.
    fn lose(&mut self, why: LockError) -> LockError {
        self.compromised = true;
        why
    }

    /// Lost: the lock directory cannot even be looked at.
    fn unreadable(&self, e: io::Error) -> LockError {
        compromised_by(&e, "stat", &self.dir)
    }
}

/// `ECOMPROMISED` for the OS error that revealed the loss, its own code kept at the
/// head of the message (`ECOMPROMISED` ... `ENOENT: ..., stat '<dir>'`), as
/// proper-lockfile re-codes the `fs` error and keeps its message.
fn compromised_by(e: &io::Error, action: &str, dir: &Path) -> LockError {
    let mut err = LockError::from_io(e, action, dir);
    err.code = code::COMPROMISED.into();
    err
}

impl HeldLock for MkdirLock {
    fn path(&self) -> &Path {
        &self.dir
    }

    fn record(&self) -> &OwnerRecord {
        &self.record
    }

    fn beat(&mut self, now: u64) -> Result<()> {
        if self.compromised || self.released {
            return Ok(());
        }
        // A failure to look at or touch the directory (EMFILE, EIO, NFS's ESTALE) may
        // pass. As with proper-lockfile, only its absence, or no successful touch for
        // `stale` ms, loses the lock; otherwise the next beat tries again.
        let passing = |e: &io::Error| {
            e.kind() != io::ErrorKind::NotFound
                && now.saturating_sub(self.touched_at) < self.stale_ms
        };
        // One handle for the check and the touch: were the path taken over between
        // a check by path and a touch by path, we would refresh the new holder's lock.
        let opened = open_lock_dir(&self.dir).and_then(|handle| Ok((handle.metadata()?, handle)));
        let handle = match opened {
            Ok((meta, handle)) => match self.judge(Ok(meta)) {
                Ok(_) => handle,
                Err(lost) => return Err(self.lose(lost)),
            },
            Err(e) if passing(&e) => return Ok(()),
            Err(e) => return Err(self.lose(self.unreadable(e))),
        };
        match touch(&handle, UNIX_EPOCH + Duration::from_millis(now)) {
            Ok(meta) => {
                self.mtime = meta.modified().unwrap_or(self.mtime);
                self.touched_at = now;
            }
            Err(e) if passing(&e) => return Ok(()),
            Err(e) => return Err(self.lose(compromised_by(&e, "utimes", &self.dir))),
        }
        self.record.heartbeat = now;
        self.wrote_record |= self.write_owner().is_ok();
        Ok(())
    }

    fn release(mut self: Box<Self>) -> Result<()> {
        self.release_inner()
    }
}

impl MkdirLock {
    fn release_inner(&mut self) -> Result<()> {
        if self.released || self.compromised {
            self.released = true;
            return Ok(());
        }
        self.released = true;
        self.still_ours()?;
        // Still ours, so the record beside it, if we wrote one, is ours.
        if self.wrote_record {
            let _ = fs::remove_file(sibling(&self.dir, OWNER_SUFFIX));
        }
        match fs::remove_dir(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(rmdir_error(&e, &self.dir)),
        }
    }
}

impl Drop for MkdirLock {
    fn drop(&mut self) {
        let _ = self.release_inner();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimant() -> Claimant {
        super::super::process::ProcessIdentity::get().claimant("t")
    }

    fn set_mtime(dir: &Path, at: SystemTime) {
        touch(&open_lock_dir(dir).unwrap(), at).unwrap();
    }

    #[test]
    fn mkdir_excludes_and_release_removes_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let lock_dir = dir.path().join("f.lock");
        let held = MkdirContender::new(lock_dir.clone(), 10_000)
            .try_acquire(&claimant(), "a".into(), false)
            .unwrap()
            .unwrap();
        assert!(lock_dir.is_dir());
        assert!(MkdirContender::new(lock_dir.clone(), 10_000)
            .try_acquire(&claimant(), "b".into(), false)
            .unwrap()
            .is_none());
        held.release().unwrap();
        assert!(!lock_dir.exists());
        assert!(!sibling(&lock_dir, OWNER_SUFFIX).exists());
    }

    #[test]
    fn an_old_mtime_is_stale_and_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let lock_dir = dir.path().join("f.lock");
        fs::create_dir(&lock_dir).unwrap(); // a proper-lockfile holder...
        set_mtime(&lock_dir, SystemTime::now() - Duration::from_secs(60)); // ...that stopped updating
        let held = MkdirContender::new(lock_dir.clone(), 10_000)
            .try_acquire(&claimant(), "a".into(), false)
            .unwrap();
        assert!(held.is_some());
    }

    #[test]
    fn an_old_directory_with_content_is_not_a_lock_and_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let not_a_lock = dir.path().join("build.lock");
        fs::create_dir(&not_a_lock).unwrap();
        fs::write(not_a_lock.join("data"), "keep me").unwrap();
        set_mtime(&not_a_lock, SystemTime::now() - Duration::from_secs(60));
        assert!(!remove_if_stale(&not_a_lock, 10_000, false, false).unwrap());
        assert_eq!(fs::read(not_a_lock.join("data")).unwrap(), b"keep me");
    }

    #[test]
    fn a_record_left_for_another_directory_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let lock_dir = dir.path().join("f.lock");
        let mut dead = claimant();
        dead.pid = u32::MAX - 3; // no such process
        let held = MkdirContender::new(lock_dir.clone(), 10_000)
            .try_acquire(&dead, "old".into(), false)
            .unwrap()
            .unwrap();
        // Its directory goes (a peer's rmdir) and a live proper-lockfile holder makes a
        // new one; the old record still sits beside it.
        let stale_record = fs::read(sibling(&lock_dir, OWNER_SUFFIX)).unwrap();
        drop(held);
        fs::create_dir(&lock_dir).unwrap();
        fs::write(sibling(&lock_dir, OWNER_SUFFIX), stale_record).unwrap();
        assert!(MkdirContender::new(lock_dir.clone(), 10_000)
            .try_acquire(&claimant(), "b".into(), false)
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_dead_holder_on_this_host_is_stale_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let lock_dir = dir.path().join("f.lock");
        let mut dead = claimant();
        dead.pid = u32::MAX - 3;
        let held = MkdirContender::new(lock_dir.clone(), 10_000)
            .try_acquire(&dead, "old".into(), false)
            .unwrap()
            .unwrap();
        std::mem::forget(held); // the holder "crashes": nothing released
        assert!(MkdirContender::new(lock_dir.clone(), 10_000)
            .try_acquire(&claimant(), "b".into(), false)
            .unwrap()
            .is_some());
    }

    fn try_lock(lock_dir: &Path) -> Result<Option<Box<dyn HeldLock>>> {
        MkdirContender::new(lock_dir.to_path_buf(), 10_000).try_acquire(
            &claimant(),
            "a".into(),
            false,
        )
    }

    #[test]
    fn a_kernel_lock_file_at_the_path_says_the_protocols_differ() {
        let dir = tempfile::tempdir().unwrap();
        let lock_dir = dir.path().join("f.lock");
        for kernel_file in ["", r#"{"token":4}"#] {
            fs::write(&lock_dir, kernel_file).unwrap();
            let err = try_lock(&lock_dir).unwrap_err();
            assert_eq!(err.code, "ENOTDIR");
            assert!(err.message.contains("kernel strategy"), "{}", err.message);
            assert!(err.message.contains("same protocol"), "{}", err.message);
            assert_eq!(fs::read_to_string(&lock_dir).unwrap(), kernel_file);
        }
    }

    #[cfg(unix)]
    #[test]
    fn anything_else_at_the_path_is_not_a_lock_and_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let lock_dir = dir.path().join("f.lock");
        fs::write(&lock_dir, "# Cargo.lock\nversion = 4\n").unwrap();
        let err = try_lock(&lock_dir).unwrap_err();
        assert_eq!(err.code, "EEXIST");
        assert!(
            err.message.contains("is not a lock file"),
            "{}",
            err.message
        );
        assert_eq!(
            fs::read_to_string(&lock_dir).unwrap(),
            "# Cargo.lock\nversion = 4\n"
        );
        // A symlink to a directory is not followed; a FIFO is not waited on.
        fs::remove_file(&lock_dir).unwrap();
        fs::create_dir(dir.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &lock_dir).unwrap();
        assert_eq!(try_lock(&lock_dir).unwrap_err().code, "EEXIST");
        fs::remove_file(&lock_dir).unwrap();
        nix::unistd::mkfifo(&lock_dir, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
        let err = within_seconds(move || try_lock(&lock_dir).map(|_| ())).unwrap_err();
        assert_eq!(err.code, "EEXIST");
    }

    /// Runs `work` on a thread; a hang (an open blocked on a FIFO) fails the test.
    #[cfg(unix)]
    fn within_seconds<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || done.send(work()));
        result
            .recv_timeout(Duration::from_secs(10))
            .expect("blocked: a FIFO beside the lock was opened for reading or writing")
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_and_fifos_planted_beside_the_lock_are_never_followed_or_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let lock_dir = dir.path().join("f.lock");
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        for suffix in [OWNER_SUFFIX, TAKEOVER_SUFFIX] {
            std::os::unix::fs::symlink(&victim, sibling(&lock_dir, suffix)).unwrap();
        }
        let mut held = try_lock(&lock_dir).unwrap().unwrap();
        held.beat(now_ms()).unwrap();
        held.release().unwrap();
        // A stale lock: its takeover meets the symlinked guard and says so.
        fs::create_dir(&lock_dir).unwrap();
        set_mtime(&lock_dir, SystemTime::now() - Duration::from_secs(60));
        assert_eq!(try_lock(&lock_dir).unwrap_err().code, "ELOOP");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        fs::remove_dir(&lock_dir).unwrap();

        for suffix in [OWNER_SUFFIX, TAKEOVER_SUFFIX] {
            fs::remove_file(sibling(&lock_dir, suffix)).unwrap();
            nix::unistd::mkfifo(
                &sibling(&lock_dir, suffix),
                nix::sys::stat::Mode::from_bits_truncate(0o666),
            )
            .unwrap();
        }
        let path = lock_dir.clone();
        within_seconds(move || {
            let mut held = try_lock(&path).unwrap().unwrap();
            held.beat(now_ms()).unwrap();
            assert!(current_owner(&path).is_none());
            held.release().unwrap();
        });
        fs::create_dir(&lock_dir).unwrap();
        set_mtime(&lock_dir, SystemTime::now() - Duration::from_secs(60));
        let err = within_seconds(move || try_lock(&lock_dir).map(|_| ())).unwrap_err();
        assert_eq!(err.code, "EEXIST");
    }

    #[cfg(unix)]
    #[test]
    fn a_huge_owner_record_is_not_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let lock_dir = dir.path().join("f.lock");
        fs::create_dir(&lock_dir).unwrap();
        let record = File::create(sibling(&lock_dir, OWNER_SUFFIX)).unwrap();
        record.set_len(1 << 40).unwrap(); // sparse: 1 TiB
        let meta = fs::symlink_metadata(&lock_dir).unwrap();
        assert!(!is_stale(&lock_dir, &meta, 10_000));
        assert!(current_owner(&lock_dir).is_none());
    }

    #[test]
    fn grants_get_increasing_tokens_kept_across_releases() {
        let dir = tempfile::tempdir().unwrap();
        let lock_dir = dir.path().join("f.lock");
        let mut tokens = Vec::new();
        for _ in 0..3 {
            let held = try_lock(&lock_dir).unwrap().unwrap();
            tokens.push(held.record().token);
            held.release().unwrap();
        }
        assert_eq!(tokens, [1, 2, 3]);
        // A dead holder's takeover continues the sequence too.
        let held = try_lock(&lock_dir).unwrap().unwrap();
        std::mem::forget(held);
        set_mtime(&lock_dir, SystemTime::now() - Duration::from_secs(60));
        assert_eq!(try_lock(&lock_dir).unwrap().unwrap().record().token, 5);
        // Someone else's file at the token's name: refused, untouched, no lock left.
        fs::write(sibling(&lock_dir, TOKEN_SUFFIX), "not a token").unwrap();
        let other = dir.path().join("g.lock");
        fs::write(sibling(&other, TOKEN_SUFFIX), "not a token").unwrap();
        assert_eq!(try_lock(&other).unwrap_err().code, "EEXIST");
        assert!(!other.exists());
        assert_eq!(
            fs::read_to_string(sibling(&other, TOKEN_SUFFIX)).unwrap(),
            "not a token"
        );
    }

    #[test]
    fn a_touched_or_removed_directory_compromises_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let lock_dir = dir.path().join("f.lock");
        let mut held = MkdirContender::new(lock_dir.clone(), 10_000)
            .try_acquire(&claimant(), "a".into(), false)
            .unwrap()
            .unwrap();
        set_mtime(&lock_dir, SystemTime::now() - Duration::from_secs(5));
        let err = held.beat(now_ms()).unwrap_err();
        assert_eq!(err.code, "ECOMPROMISED");
        assert_eq!(
            err.message,
            "Unable to update lock within the stale threshold"
        );
    }
}
