//! Taking a mkdir lock (or a stale one over), its heartbeat and its release.

use std::fs::{self, File, FileTimes};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::engine::backend::traits::{Contend, HeldLock};
use crate::engine::error::{code, LockError, Result};
use crate::engine::lock_path::sibling;
use crate::engine::owner_record::{now_ms, Claimant, LockMode, OwnerRecord};
use crate::engine::safe_fs::{self, overwrite, Access, Create};

#[cfg(test)]
use super::sweep::before_rmdir;
use super::sweep::{
    is_stale, not_a_lock_dir, open_lock_dir, remove_judged, remove_owner_record_of, rmdir_error,
};
use super::token::next_token;
use super::{dir_id, DirId, DirOwner, OWNER_SUFFIX};

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

/// Sets the open directory's mtime to `at` and returns it as the filesystem stored
/// it (some keep only seconds), which is what later checks compare against.
pub(super) fn touch(handle: &File, at: SystemTime) -> io::Result<fs::Metadata> {
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
        // A grant without its token would break the promise of increasing tokens:
        // give the lock back and say why.
        let token = next_token(dir).inspect_err(|_| {
            let _ = fs::remove_dir(dir);
        })?;
        let record = claimant.record(LockMode::Exclusive, lock_id.to_string(), token);
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
        // failure to write it does not undo the grant. Release removes it only if it
        // names our directory (a FIFO or symlink planted there is not ours to delete).
        let _ = lock.write_owner();
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

impl MkdirLock {
    fn release_inner(&mut self) -> Result<()> {
        if self.released || self.compromised {
            self.released = true;
            return Ok(());
        }
        self.released = true;
        self.still_ours()?;
        // Checked again and removed under the takeover guard, as a takeover removes:
        // a stale takeover between a check by path and an rmdir by path would
        // otherwise lose its new lock directory to us.
        let (id, mtime) = (self.id, self.mtime);
        let ours = |meta: &fs::Metadata| dir_id(meta) == id && meta.modified().ok() == Some(mtime);
        for _ in 0..RELEASE_GUARD_TRIES {
            match remove_judged(&self.dir, id, ours, false) {
                Ok(Some(true)) => return Ok(()),
                // Taken over since the check above: lost, and not ours to remove.
                Ok(Some(false)) => return self.still_ours().map(drop),
                // A takeover or sweep holds the guard for a stat and an rmdir.
                Ok(None) => std::thread::sleep(Duration::from_millis(1)),
                // No usable guard (a symlink or FIFO planted at its name): no takeover
                // gets through it either, so removing without it races with none.
                Err(_) => return self.remove_unguarded(),
            }
        }
        // Still busy: whoever holds the guard judged our lock stale and removes it.
        Ok(())
    }

    fn remove_unguarded(&self) -> Result<()> {
        self.still_ours()?;
        remove_owner_record_of(&self.dir, self.id);
        #[cfg(test)]
        before_rmdir::run();
        match fs::remove_dir(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(rmdir_error(&e, &self.dir)),
        }
    }
}

/// How many times a release tries the takeover guard, a millisecond apart.
const RELEASE_GUARD_TRIES: u32 = 50;

/// `ECOMPROMISED` for the OS error that revealed the loss, its own code kept at the
/// head of the message (`ECOMPROMISED` ... `ENOENT: ..., stat '<dir>'`), as
/// proper-lockfile re-codes the `fs` error and keeps its message.
pub(super) fn compromised_by(e: &io::Error, action: &str, dir: &Path) -> LockError {
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
        let _ = self.write_owner();
        Ok(())
    }

    fn release(mut self: Box<Self>) -> Result<()> {
        self.release_inner()
    }
}

impl Drop for MkdirLock {
    fn drop(&mut self) {
        let _ = self.release_inner();
    }
}
