//! The mkdir strategy: proper-lockfile's own on-disk protocol, so processes still on
//! proper-lockfile and processes on lockwright exclude each other.
//!
//! - `<file>.lock` is a directory made by `mkdir` (atomic everywhere, NFS included) and
//!   kept empty, so a proper-lockfile peer's `rmdir` can take over a dead holder's lock.
//! - Its mtime is the heartbeat: refreshed every `update` ms by the native heartbeat;
//!   a lock whose mtime is older than `stale` is stale.
//! - Beside it, `<file>.lock.owner.json` names the holder and the very directory it
//!   made (device and inode). A record naming another directory was left by an
//!   earlier owner and is ignored. On this host a dead holder (PID gone or reused) is
//!   stale at once, not after `stale` ms.
//! - Takeover of a stale lock happens under a kernel lock on `<file>.lock.takeover`,
//!   re-checking staleness inside it. proper-lockfile's rmdir-then-mkdir lets two
//!   processes that both saw the lock stale both win (its #121); two lockwright
//!   processes cannot.

use std::fs::{self, File, FileTimes, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::error::{code, LockError, Result};
use super::kernel_lock::{sibling, Claimant};
use super::liveness::holder_alive;
use super::lock_file::open_no_follow;
use super::owner_record::{now_ms, LockMode, OwnerRecord};
use super::strategy::{Contend, HeldLock};

pub const OWNER_SUFFIX: &str = ".owner.json";
pub const TAKEOVER_SUFFIX: &str = ".takeover";

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
            return Err(LockError::new(
                "ENOTDIR",
                format!(
                    "ENOTDIR: '{}' exists and is not a lock directory",
                    self.dir.display()
                ),
                Some(&self.dir),
            ));
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

/// The owner record beside `dir`, if it was written for this very directory.
fn read_owner(dir: &Path, id: DirId) -> Option<DirOwner> {
    let bytes = fs::read(sibling(dir, OWNER_SUFFIX)).ok()?;
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
    let guard = open_no_follow(&guard_path, true)
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
        Err(e) => Err(LockError::from_io(&e, "rmdir", dir)),
    }
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
}

impl MkdirLock {
    fn grant(dir: &Path, claimant: &Claimant, lock_id: &str, stale_ms: u64) -> Result<MkdirLock> {
        // mkdir just set the directory's mtime to now: that is the first heartbeat.
        let meta = fs::symlink_metadata(dir).map_err(|e| LockError::from_io(&e, "stat", dir))?;
        let record = claimant.record(LockMode::Exclusive, lock_id.to_string(), 0);
        let lock = MkdirLock {
            dir: dir.to_path_buf(),
            id: dir_id(&meta),
            mtime: meta.modified().unwrap_or(UNIX_EPOCH),
            record,
            touched_at: now_ms(),
            stale_ms,
            released: false,
            compromised: false,
        };
        // The record is informative (who holds it); the directory is the lock. A
        // failure to write it does not undo the grant.
        let _ = lock.write_owner();
        Ok(lock)
    }

    /// One plain write: a reader that catches it half-written cannot parse it and
    /// treats the lock as one without a record, judged by its mtime alone.
    fn write_owner(&self) -> io::Result<()> {
        let owner = DirOwner {
            record: self.record.clone(),
            dir_dev: self.id.dev,
            dir_ino: self.id.ino,
            dir_born: self.id.born,
        };
        fs::write(
            sibling(&self.dir, OWNER_SUFFIX),
            serde_json::to_vec(&owner).expect("an owner record serialises"),
        )
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
        LockError::new(
            code::COMPROMISED,
            format!("{}, stat '{}'", e, self.dir.display()),
            Some(&self.dir),
        )
    }
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
        let opened = File::open(&self.dir).and_then(|handle| Ok((handle.metadata()?, handle)));
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
            Err(e) => {
                let message = format!("{e}, utimes '{}'", self.dir.display());
                return Err(self.lose(LockError::new(code::COMPROMISED, message, Some(&self.dir))));
            }
        }
        self.record.heartbeat = now;
        let _ = self.write_owner();
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
        // Still ours, so the record beside it is the one we wrote.
        let _ = fs::remove_file(sibling(&self.dir, OWNER_SUFFIX));
        match fs::remove_dir(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(LockError::from_io(&e, "rmdir", &self.dir)),
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
        let id = super::super::owner_record::ProcessIdentity::get();
        Claimant {
            pid: id.pid,
            host: id.host.clone(),
            process: "t".into(),
            user: "u".into(),
            process_start: id.process_start,
        }
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
        touch(
            &File::open(&lock_dir).unwrap(),
            SystemTime::now() - Duration::from_secs(60),
        )
        .unwrap(); // ...that stopped updating
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
        touch(
            &File::open(&not_a_lock).unwrap(),
            SystemTime::now() - Duration::from_secs(60),
        )
        .unwrap();
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

    #[test]
    fn a_lock_path_that_is_a_file_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let lock_dir = dir.path().join("f.lock");
        fs::write(&lock_dir, "").unwrap();
        let err = MkdirContender::new(lock_dir, 10_000)
            .try_acquire(&claimant(), "a".into(), false)
            .unwrap_err();
        assert_eq!(err.code, "ENOTDIR");
    }

    #[test]
    fn a_touched_or_removed_directory_compromises_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let lock_dir = dir.path().join("f.lock");
        let mut held = MkdirContender::new(lock_dir.clone(), 10_000)
            .try_acquire(&claimant(), "a".into(), false)
            .unwrap()
            .unwrap();
        touch(
            &File::open(&lock_dir).unwrap(),
            SystemTime::now() - Duration::from_secs(5),
        )
        .unwrap();
        let err = held.beat(now_ms()).unwrap_err();
        assert_eq!(err.code, "ECOMPROMISED");
        assert_eq!(
            err.message,
            "Unable to update lock within the stale threshold"
        );
    }
}
