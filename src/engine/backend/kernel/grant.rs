//! Granting a kernel lock: one non-blocking `flock` on the lock file, then the owner
//! record written only once the content proves the file ours (empty, or a lockwright
//! record): locking `Gemfile` must never overwrite a `Gemfile.lock` that is not a lock.
//! Heartbeats and release of the held lock live here too.

use std::fs;
use std::fs::TryLockError;
use std::io;

use std::path::{Path, PathBuf};

use crate::engine::backend::traits::{Contend, HeldLock};
use crate::engine::error::{code, LockError, Result};
use crate::engine::owner_record::{
    recorded_token, Claimant, LockMode, OwnerRecord, ReleasedRecord,
};
use crate::engine::safe_fs::{self, overwrite};

use super::lock_file::{read_region, read_whole, wake_waiters, LockFile, RECORD_REGION};
use super::readers::{
    announce_writer, leave_writer_gate, wake_paths, write_reader_record, writer_is_waiting,
    ReaderRecord, WriterGate,
};

/// A granted kernel lock. Dropping it releases the lock and clears the record.
#[derive(Debug)]
pub struct KernelLock {
    pub(super) file: Option<LockFile>,
    path: PathBuf,
    record: OwnerRecord,
    /// Bytes the lock file holds now; a shorter record is padded to cover them.
    record_len: usize,
    reader_record: Option<ReaderRecord>,
    /// Set once someone else removed or rewrote what we hold; release then leaves
    /// the files alone, as they are no longer ours.
    compromised: bool,
    /// Its descriptor was handed out (see `raw_fd`).
    lent: std::sync::atomic::AtomicBool,
}

impl KernelLock {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn record(&self) -> &OwnerRecord {
        &self.record
    }

    /// Writes a fresh heartbeat into the record, first checking that the record is
    /// still ours: an `ECOMPROMISED` error means someone removed or replaced it.
    pub fn beat(&mut self, now: u64) -> Result<()> {
        if self.compromised {
            return Ok(());
        }
        if let Err(reason) = self.check_still_ours() {
            return Err(self.lose(reason));
        }
        self.record.heartbeat = now;
        let json = serde_json::to_vec(&self.record).expect("an owner record serialises");
        // A failed write (a full disk, EIO) loses nothing: the kernel lock is still
        // ours. The next beat writes again; until then the heartbeat ages.
        match (&self.reader_record, &self.file) {
            (Some(reader), Some(lock_file)) => {
                let _ = reader.write(&lock_file.file, &json);
            }
            (None, Some(lock_file)) => {
                if overwrite(&lock_file.file, &json, self.record_len).is_ok() {
                    self.record_len = self.record_len.max(json.len());
                }
            }
            (_, None) => {}
        }
        Ok(())
    }

    fn lose(&mut self, reason: &str) -> LockError {
        self.compromised = true;
        LockError::new(
            code::COMPROMISED,
            format!(
                "The lock on {} was compromised: {reason}",
                self.path.display()
            ),
            Some(&self.path),
        )
    }

    fn check_still_ours(&mut self) -> std::result::Result<(), &'static str> {
        let Some(lock_file) = self.file.as_ref() else {
            return Ok(());
        };
        if !lock_file.is_at(&self.path) {
            return Err("its lock file was removed or replaced");
        }
        if let Some(reader) = &self.reader_record {
            return match reader.still_there(&lock_file.file) {
                true => Ok(()),
                false => Err("its reader record was removed or replaced"),
            };
        }
        // Unreadable for now (EIO): no verdict; the next beat looks again.
        let Ok(content) = read_whole(&lock_file.file) else {
            return Ok(());
        };
        match serde_json::from_slice::<OwnerRecord>(&content) {
            Ok(record) if record.lock_id == self.record.lock_id => Ok(()),
            _ => Err("its owner record was overwritten"),
        }
    }

    /// Releases now, reporting what went wrong; `Drop` does the same silently.
    /// A lock whose file was removed or replaced while held (before any heartbeat
    /// noticed) is `ECOMPROMISED`: someone may have held "the" lock beside us.
    pub fn release(mut self) -> Result<()> {
        if !self.compromised && self.file.as_ref().is_some_and(LockFile::is_unlinked) {
            let lost = self.lose("its lock file was removed or replaced while it was held");
            self.release_inner()?;
            return Err(lost);
        }
        self.release_inner()
    }

    fn release_inner(&mut self) -> Result<()> {
        let Some(lock_file) = self.file.take() else {
            return Ok(());
        };
        let mut outcome = Ok(());
        if self.compromised {
            // Not ours any more: drop our lock without touching what replaced it.
        } else if let Some(reader) = self.reader_record.take() {
            reader.remove(&lock_file.file);
        } else {
            // Keep only the token, so the next exclusive grant continues the sequence.
            let released = ReleasedRecord::padded(self.record.token, self.record_len);
            outcome = overwrite(&lock_file.file, &released, self.record_len)
                .map_err(|e| LockError::from_io(&e, "clear", &self.path));
        }
        // Unlock, then wake: waiters must find the lock free when they look. A file
        // whose unlock failed is closed instead of kept: closing drops any lock left.
        let unlocked = lock_file.file.unlock().is_ok();
        wake_waiters(&lock_file.file);
        let lent = self.lent.load(std::sync::atomic::Ordering::Relaxed);
        if unlocked && !self.compromised && !lent {
            // Released: the path is not needed here any more, and keys the idle file.
            lock_file.keep_idle(std::mem::take(&mut self.path));
        }
        outcome
    }
}

impl Drop for KernelLock {
    fn drop(&mut self) {
        let _ = self.release_inner();
    }
}

/// One caller's attempts on one lock file. The file stays open between attempts so a
/// retry is one non-blocking `flock`, and a waiter never re-creates a lock file.
pub struct Contender {
    path: PathBuf,
    mode: LockMode,
    main: Option<LockFile>,
    writer_waiting: Option<WriterGate>,
    opens: u32,
}

impl Contender {
    pub fn new(path: PathBuf, mode: LockMode) -> Self {
        Contender {
            path,
            mode,
            main: None,
            writer_waiting: None,
            opens: 0,
        }
    }

    /// One non-blocking attempt. `will_wait` says the caller waits if this fails; a
    /// writer that will wait announces itself so new readers queue behind it.
    pub fn try_acquire(
        &mut self,
        claimant: &Claimant,
        lock_id: String,
        will_wait: bool,
    ) -> Result<Option<KernelLock>> {
        // A lock file deleted or replaced while we waited on it is no longer the lock:
        // re-open and try again. A few rounds are enough; more means someone is
        // deleting lock files in a loop, and the next wake-up tries again.
        for _ in 0..4 {
            let lock_file = match self.main {
                Some(ref lock_file) => lock_file,
                None => {
                    let lock_file = match LockFile::take_idle(&self.path) {
                        Some(idle) => idle,
                        None => {
                            self.opens += 1;
                            LockFile::open(&self.path, true).map_err(|e| self.open_error(e))?
                        }
                    };
                    self.main.insert(lock_file)
                }
            };
            // Readers defer to a writer that waits, so a stream of them cannot starve it.
            if self.mode == LockMode::Shared && writer_is_waiting(&lock_file.file, &self.path)? {
                return Ok(None);
            }
            let locked = match self.mode {
                LockMode::Exclusive => lock_file.file.try_lock(),
                LockMode::Shared => lock_file.file.try_lock_shared(),
            };
            match locked {
                Ok(()) => {}
                // Held, but perhaps on a file removed from under its holder: the lock
                // is the file at the path now, which a waiter on the orphan would
                // never see come free.
                Err(TryLockError::WouldBlock) if will_wait && !lock_file.is_at(&self.path) => {
                    self.leave_writer_gate();
                    self.main = None;
                    continue;
                }
                Err(TryLockError::WouldBlock) => {
                    if will_wait && self.mode == LockMode::Exclusive {
                        self.announce_writer();
                    }
                    return Ok(None);
                }
                Err(TryLockError::Error(e)) => {
                    return Err(LockError::from_io(&e, "lock", &self.path))
                }
            }
            if !lock_file.is_at(&self.path) {
                self.leave_writer_gate();
                self.main = None; // closing drops the lock on the orphaned inode
                continue;
            }
            self.leave_writer_gate();
            let lock_file = self.main.take().expect("opened above");
            return self.grant(lock_file, claimant, lock_id).map(Some);
        }
        Ok(None)
    }

    /// A directory at the lock path is most likely proper-lockfile's lock: say so, and
    /// how to share locks with it, instead of a bare `EISDIR`.
    fn open_error(&self, e: io::Error) -> LockError {
        let directory = safe_fs::as_not_a_lock_file(&e).is_some_and(|n| n.found == "a directory")
            || e.kind() == io::ErrorKind::IsADirectory;
        if directory {
            return foreign_protocol_error(&self.path);
        }
        LockError::from_io(&e, "open", &self.path)
    }

    fn grant(
        &self,
        lock_file: LockFile,
        claimant: &Claimant,
        lock_id: String,
    ) -> Result<KernelLock> {
        let io_err = |e: io::Error| LockError::from_io(&e, "read", &self.path);
        let mut region = [0u8; RECORD_REGION];
        let previous = read_region(&lock_file.file, &mut region).map_err(io_err)?;
        // Written only if it is ours: `Gemfile.lock` next to a locked `Gemfile` is
        // someone's data. Dropping `lock_file` on the error closes it and unlocks.
        let Some(last) = recorded_token(previous) else {
            return Err(LockError::not_a_lock_file(
                &self.path,
                "its content is not a lockwright record",
            ));
        };
        // Only exclusive grants advance the fencing token; readers see the last one.
        let token = if self.mode == LockMode::Exclusive {
            last + 1
        } else {
            last
        };
        let record = claimant.record(self.mode, lock_id, token);
        let json = claimant.record_json(&record);
        let write_err = |e: io::Error| LockError::from_io(&e, "write owner record", &self.path);
        let reader_record = match self.mode {
            LockMode::Exclusive => {
                // Past its region the record would spill into the readers' slots.
                if json.len() >= RECORD_REGION {
                    return Err(record_too_long(&self.path, json.len()));
                }
                overwrite(&lock_file.file, &json, previous.len()).map_err(write_err)?;
                None
            }
            LockMode::Shared => {
                // Releases wake waiters with a one-byte read, and reading an empty
                // file makes no event: a file only readers ever used gets a record.
                // The record's region is padded to its full size, so readers' slots
                // after it never leave a hole of NULs that no JSON parser reads.
                if previous.len() < RECORD_REGION {
                    let released = ReleasedRecord::padded(last, RECORD_REGION);
                    overwrite(&lock_file.file, &released, RECORD_REGION).map_err(write_err)?;
                }
                Some(write_reader_record(
                    &lock_file.file,
                    &self.path,
                    &record.lock_id,
                    &json,
                )?)
            }
        };
        let record_len = json.len().max(previous.len());
        Ok(KernelLock {
            file: Some(lock_file),
            path: self.path.clone(),
            record,
            record_len,
            reader_record,
            compromised: false,
            lent: Default::default(),
        })
    }

    /// A writer that will wait announces itself, once, so new readers queue behind it.
    fn announce_writer(&mut self) {
        if let (None, Some(main)) = (&self.writer_waiting, &self.main) {
            self.writer_waiting = announce_writer(&main.file, &self.path);
        }
    }

    /// Withdraws the announcement (the lock is ours, or we stop waiting) and wakes the
    /// readers it held back.
    fn leave_writer_gate(&mut self) {
        if let (Some(gate), Some(main)) = (self.writer_waiting.take(), &self.main) {
            leave_writer_gate(gate, &main.file);
        }
    }
}

/// `EINVAL`: a record this long (an owner label full of characters JSON escapes)
/// does not fit its region of the lock file.
fn record_too_long(path: &Path, len: usize) -> LockError {
    LockError::new(
        code::INVALID,
        format!(
            "the owner record for '{}' is {len} bytes, more than the {RECORD_REGION} a lock file keeps for it: use a shorter owner label",
            path.display()
        ),
        Some(path),
    )
}

/// `ELOCKED` for a directory at a kernel lock path that looks like a live
/// proper-lockfile lock (fresh mtime), `EEXIST` otherwise; both name the way out.
pub fn foreign_protocol_error(path: &Path) -> LockError {
    /// proper-lockfile's default `stale`: its holders refresh the mtime well within it.
    const PROPER_LOCKFILE_STALE_MS: u128 = 10_000;
    let fresh = fs::symlink_metadata(path)
        .ok()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age.as_millis() < PROPER_LOCKFILE_STALE_MS);
    let hint = "lockwright's default kernel strategy cannot share a lock with proper-lockfile: \
                use strategy: 'mkdir' (or require('lockwright/proper-lockfile')) in every process \
                that shares this lock";
    if fresh {
        LockError::new(
            code::LOCKED,
            format!(
                "'{}' is a proper-lockfile lock directory, held by a proper-lockfile process; {hint}",
                path.display()
            ),
            Some(path),
        )
    } else {
        LockError::not_a_lock_file(
            path,
            &format!("a directory, maybe a stale proper-lockfile lock; {hint}"),
        )
    }
}

impl Drop for Contender {
    /// A file left here lost its attempt and holds no lock: keep it for the next one.
    /// A writer that gives up lets the readers behind it go.
    fn drop(&mut self) {
        self.leave_writer_gate();
        if let Some(lock_file) = self.main.take() {
            lock_file.keep_idle(std::mem::take(&mut self.path));
        }
    }
}

impl HeldLock for KernelLock {
    fn path(&self) -> &Path {
        KernelLock::path(self)
    }

    fn record(&self) -> &OwnerRecord {
        KernelLock::record(self)
    }

    fn beat(&mut self, now_ms: u64) -> Result<()> {
        KernelLock::beat(self, now_ms)
    }

    fn release(self: Box<Self>) -> Result<()> {
        KernelLock::release(*self)
    }

    /// Lent to a child (the CLI's command inherits it): the open file description may
    /// outlive this grant there, so on release it is closed, never kept for reuse.
    #[cfg(unix)]
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.lent.store(true, std::sync::atomic::Ordering::Relaxed);
        self.file
            .as_ref()
            .map(|lock_file| lock_file.file.as_raw_fd())
    }
}

impl Contend for Contender {
    fn try_acquire(
        &mut self,
        claimant: &Claimant,
        lock_id: String,
        will_wait: bool,
    ) -> Result<Option<Box<dyn HeldLock>>> {
        Ok(Contender::try_acquire(self, claimant, lock_id, will_wait)?
            .map(|lock| Box::new(lock) as Box<dyn HeldLock>))
    }

    fn wake_paths(&self) -> Vec<PathBuf> {
        wake_paths(&self.path)
    }

    fn generation(&self) -> u32 {
        self.opens
    }
}
