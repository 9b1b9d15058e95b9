//! The kernel strategy: an OS advisory lock (`flock` on Unix, `LockFileEx` on
//! Windows, through std's `File::lock` family) on `<target>.lock`. The kernel drops
//! the lock when its holder dies, so a crash never leaves a lock that blocks others.
//!
//! Files beside the lock file:
//! - `<lockfile>.readers/<lockId>.json`: one owner record per shared holder, itself
//!   locked by that holder, so a record whose lock can be taken is litter. Reached
//!   only through the directory's descriptor (see `safe_fs`), so a planted symlink in
//!   place of the directory sends nothing elsewhere.
//! - `<lockfile>.writer-waiting`: held exclusively by a writer while it waits. Readers
//!   that find it held wait too, so a stream of readers cannot starve a writer
//!   (Linux `flock` alone grants new shared locks while a writer waits). It holds one
//!   byte and is only ever opened read-only after its creation: the writer that leaves
//!   it reads that byte to wake the readers, and nobody else makes an event on it.
//!
//! Every file is opened through `safe_fs`: no symlinks, no FIFOs, bounded reads. A lock
//! file is written only once its content proves it ours (empty, or a lockwright record):
//! locking `Gemfile` must never overwrite a `Gemfile.lock` that is not a lock.

use std::ffi::OsString;
use std::fs::{self, File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::{code, LockError, Result};
use super::lock_table;
use super::lock_file::{overwrite, read_whole, still_at_path, wake_waiters, LockFile};
use super::lock_path::sibling;
use super::owner_record::{classify, Claimant, Leftover, LockMode, OwnerRecord, ReleasedRecord};
use super::safe_fs::{self, Access, Create, Dir};
use super::strategy::{Contend, HeldLock};

pub const READERS_DIR_SUFFIX: &str = ".readers";
pub const WRITER_WAITING_SUFFIX: &str = ".writer-waiting";

/// A shared holder's record file, with the directory it was made in.
#[derive(Debug)]
struct ReaderRecord {
    file: File,
    dir: Dir,
    name: OsString,
}

impl ReaderRecord {
    fn still_there(&self) -> bool {
        self.dir.holds(&self.name, &self.file)
    }
}

/// A granted kernel lock. Dropping it releases the lock and clears the record.
#[derive(Debug)]
pub struct KernelLock {
    file: Option<LockFile>,
    path: PathBuf,
    record: OwnerRecord,
    /// Bytes the lock file holds now; a shorter record is padded to cover them.
    record_len: usize,
    reader_record: Option<ReaderRecord>,
    /// Set once someone else removed or rewrote what we hold; release then leaves
    /// the files alone, as they are no longer ours.
    compromised: bool,
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
            (Some(reader), _) => {
                let _ = overwrite(&reader.file, &json, 0);
            }
            (None, Some(lock_file)) => {
                if overwrite(&lock_file.file, &json, self.record_len).is_ok() {
                    self.record_len = self.record_len.max(json.len());
                }
            }
            (None, None) => {}
        }
        Ok(())
    }

    fn lose(&mut self, reason: &str) -> LockError {
        self.compromised = true;
        LockError::new(
            code::COMPROMISED,
            format!("The lock on {} was compromised: {reason}", self.path.display()),
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
            return match reader.still_there() {
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
            // Unlink before closing: a prober that then takes the record's lock finds
            // it gone from the directory, never a live-looking leftover.
            let _ = reader.dir.unlink(&reader.name);
        } else {
            // Keep only the token, so the next exclusive grant continues the sequence.
            let released = serde_json::to_vec(&ReleasedRecord {
                token: self.record.token,
            })
            .expect("a token serialises");
            outcome = overwrite(&lock_file.file, &released, self.record_len)
                .map_err(|e| LockError::from_io(&e, "clear", &self.path));
        }
        // Unlock, then wake: waiters must find the lock free when they look. A file
        // whose unlock failed is closed instead of kept: closing drops any lock left.
        let unlocked = lock_file.file.unlock().is_ok();
        wake_waiters(&lock_file.file);
        if unlocked && !self.compromised {
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
    writer_waiting: Option<File>,
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

    pub fn writer_waiting_path(&self) -> PathBuf {
        sibling(&self.path, WRITER_WAITING_SUFFIX)
    }

    /// One non-blocking attempt. `will_wait` says the caller waits if this fails; a
    /// writer that will wait announces itself so new readers queue behind it.
    pub fn try_acquire(
        &mut self,
        claimant: &Claimant,
        lock_id: String,
        will_wait: bool,
    ) -> Result<Option<KernelLock>> {
        if self.mode == LockMode::Shared && self.writer_is_waiting()? {
            return Ok(None);
        }
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
            let locked = match self.mode {
                LockMode::Exclusive => lock_file.file.try_lock(),
                LockMode::Shared => lock_file.file.try_lock_shared(),
            };
            match locked {
                Ok(()) => {}
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
                self.main = None; // closing drops the lock on the orphaned inode
                continue;
            }
            let lock_file = self.main.take().expect("opened above");
            self.leave_writer_gate();
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
        let previous = read_whole(&lock_file.file).map_err(io_err)?;
        // Written only if it is ours: `Gemfile.lock` next to a locked `Gemfile` is
        // someone's data. Dropping `lock_file` on the error closes it and unlocks.
        let Some(last) = recorded_token(&previous) else {
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
        let json = serde_json::to_vec(&record).expect("an owner record serialises");
        let write_err = |e: io::Error| LockError::from_io(&e, "write owner record", &self.path);
        let reader_record = match self.mode {
            LockMode::Exclusive => {
                overwrite(&lock_file.file, &json, previous.len()).map_err(write_err)?;
                None
            }
            LockMode::Shared => {
                // Releases wake waiters with a one-byte read, and reading an empty
                // file makes no event: a file only readers ever used gets a record.
                if previous.is_empty() {
                    let released = serde_json::to_vec(&ReleasedRecord { token: 0 })
                        .expect("a token serialises");
                    let _ = overwrite(&lock_file.file, &released, 0);
                }
                Some(write_reader_record(&self.path, &record.lock_id, &json)?)
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
        })
    }

    /// Readers defer to a writer that holds the writer-waiting file. No such file
    /// means no writer has ever waited here. Opened read-only: closing a file opened
    /// for writing is an event waiters watch, and a reader would wake itself.
    fn writer_is_waiting(&self) -> Result<bool> {
        let gate_path = self.writer_waiting_path();
        let gate = match safe_fs::open_file(&gate_path, Access::Read, Create::No) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(LockError::from_io(&e, "open", &gate_path)),
        };
        match gate.try_lock_shared() {
            Ok(()) => Ok(false), // closing the file below drops this probe lock
            Err(TryLockError::WouldBlock) => Ok(true),
            Err(TryLockError::Error(e)) => Err(LockError::from_io(&e, "lock", &gate_path)),
        }
    }

    /// Best effort: failing to announce only costs fairness, never exclusion. The
    /// file is created once, holding one byte for `leave_writer_gate` to read, and is
    /// otherwise opened read-only so that a failed announcement wakes nobody.
    fn announce_writer(&mut self) {
        if self.writer_waiting.is_some() {
            return;
        }
        let gate_path = self.writer_waiting_path();
        let gate = safe_fs::open_file(&gate_path, Access::Read, Create::No).or_else(|e| {
            if e.kind() != io::ErrorKind::NotFound {
                return Err(e);
            }
            create_writer_gate(&gate_path)?;
            safe_fs::open_file(&gate_path, Access::Read, Create::No)
        });
        if let Ok(gate) = gate {
            if gate.try_lock().is_ok() {
                self.writer_waiting = Some(gate);
            }
        }
    }

    /// Lets go of the writer-waiting file and wakes the readers held back by it: a
    /// read is the event they watch for (a read-only close is not).
    fn leave_writer_gate(&mut self) {
        if let Some(gate) = self.writer_waiting.take() {
            let _ = gate.unlock();
            wake_waiters(&gate);
        }
    }
}

/// The fencing token a lock file's content carries: 0 for an empty file, `None` for
/// content that is not a lockwright record (another tool's file, or garbage).
fn recorded_token(content: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct TokenOnly {
        token: u64,
    }
    if content.iter().all(u8::is_ascii_whitespace) {
        return Some(0);
    }
    serde_json::from_slice::<TokenOnly>(content).ok().map(|t| t.token)
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
        LockError::not_a_lock_file(path, &format!("a directory, maybe a stale proper-lockfile lock; {hint}"))
    }
}

/// Creates the writer-waiting file with its one byte; losing a race to create it is
/// fine, the winner wrote the same.
fn create_writer_gate(path: &Path) -> io::Result<()> {
    match safe_fs::open_file(path, Access::ReadWrite, Create::New) {
        Ok(file) => overwrite(&file, b"w", 0),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
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

    #[cfg(unix)]
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
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
        vec![self.path.clone(), self.writer_waiting_path()]
    }

    fn generation(&self) -> u32 {
        self.opens
    }
}

/// The readers' directory of `lockfile`, made if `create`. Never a symlink.
fn readers_dir(lockfile: &Path, create: bool) -> io::Result<Dir> {
    let parent = match lockfile.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let name = sibling(Path::new(lockfile.file_name().unwrap_or_default()), READERS_DIR_SUFFIX);
    Dir::open(parent)?.sub_dir(name.as_os_str(), create)
}

/// A reader record as found by a look at the readers' directory.
struct FoundRecord {
    name: OsString,
    file: File,
    /// Its reader still holds it: alive.
    held: bool,
}

/// The readers' directory of `lockfile` and each record in it, opened read-only
/// (regular files only), with whether its reader still holds it.
fn reader_records(lockfile: &Path) -> Option<(Dir, Vec<FoundRecord>)> {
    let dir = readers_dir(lockfile, false).ok()?;
    let found = dir
        .names()
        .ok()?
        .into_iter()
        .filter_map(|name| {
            let file = dir.open_file(&name, Access::Read, Create::No).ok()?;
            let held = matches!(file.try_lock_shared(), Err(TryLockError::WouldBlock));
            Some(FoundRecord { name, file, held })
        })
        .collect();
    Some((dir, found))
}

/// The records of live (`held`) or dead readers.
fn reader_owners(lockfile: &Path, held: bool) -> Vec<OwnerRecord> {
    let Some((_, found)) = reader_records(lockfile) else {
        return Vec::new();
    };
    found
        .iter()
        .filter(|r| r.held == held)
        .filter_map(|r| parse_record(&r.file))
        .collect()
}

fn parse_record(file: &File) -> Option<OwnerRecord> {
    serde_json::from_slice::<OwnerRecord>(&read_whole(file).ok()?).ok()
}

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
        .and_then(|file| parse_record(&file))
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
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(seen(Holding::Missing, Vec::new(), false)),
        Err(e) => return Err(LockError::from_io(&e, "open", lockfile)),
    };
    let before = recorded_holders(&file, lockfile);
    let Some(entries) = lock_table::flocks_on(&file) else {
        let holding = probe(lockfile)?;
        return Ok(seen(holding, Vec::new(), holding == Holding::Free && !before.is_empty()));
    };
    if !entries.is_empty() {
        let holding = if entries.iter().any(|e| e.exclusive) {
            Holding::Exclusive
        } else {
            Holding::Shared
        };
        return Ok(seen(holding, entries.iter().map(|e| e.pid).collect(), false));
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
fn recorded_holders(file: &File, lockfile: &Path) -> Vec<String> {
    let mut ids: Vec<String> = reader_owners(lockfile, true)
        .into_iter()
        .map(|r| r.lock_id)
        .collect();
    if let Some(record) = parse_record(file) {
        ids.push(record.lock_id);
    }
    ids.sort();
    ids
}

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

/// Reader records whose holder is gone (their lock can be taken): removed (unless
/// `dry_run`), and listed.
pub fn remove_dead_reader_records(lockfile: &Path, dry_run: bool) -> Vec<PathBuf> {
    let Some((dir, found)) = reader_records(lockfile) else {
        return Vec::new();
    };
    found
        .into_iter()
        // Empty: a reader between creating its record and locking it (it writes only
        // once locked), not a dead one.
        .filter(|r| {
            !r.held
                && r.file.try_lock().is_ok()
                && r.file.metadata().is_ok_and(|m| m.len() > 0)
                && dir.holds(&r.name, &r.file)
                && (dry_run || dir.unlink(&r.name).is_ok())
        })
        .map(|r| dir.path().join(&r.name))
        .collect()
}

/// The records of dead readers, for `status`.
pub fn dead_reader_records(lockfile: &Path) -> Vec<OwnerRecord> {
    reader_owners(lockfile, false)
}


fn write_reader_record(lockfile: &Path, lock_id: &str, json: &[u8]) -> Result<ReaderRecord> {
    let dir_path = sibling(lockfile, READERS_DIR_SUFFIX);
    let dir = readers_dir(lockfile, true).map_err(|e| LockError::from_io(&e, "mkdir", &dir_path))?;
    let name = OsString::from(format!("{lock_id}.json"));
    let io_err = |e: io::Error| LockError::from_io(&e, "write owner record", &dir.path().join(&name));
    let file = dir
        .open_file(&name, Access::ReadWrite, Create::New)
        .map_err(io_err)?;
    // Locked before it has content: a sweep leaves an empty record alone.
    file.lock().map_err(io_err)?;
    overwrite(&file, json, 0).map_err(io_err)?;
    Ok(ReaderRecord { file, dir, name })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimant(label: &str) -> Claimant {
        crate::engine::process::ProcessIdentity::get().claimant(label)
    }

    fn contender(dir: &Path, mode: LockMode) -> Contender {
        Contender::new(dir.join("t.lock"), mode)
    }

    /// One attempt by a new contender named `name`.
    fn attempt(dir: &Path, mode: LockMode, name: &str, will_wait: bool) -> Option<KernelLock> {
        contender(dir, mode)
            .try_acquire(&claimant(name), name.into(), will_wait)
            .unwrap()
    }

    /// Another attempt by a contender that waits.
    fn retry(contender: &mut Contender, name: &str) -> Option<KernelLock> {
        contender
            .try_acquire(&claimant(name), name.into(), true)
            .unwrap()
    }

    #[test]
    fn exclusive_excludes_and_tokens_increase_across_releases() {
        let dir = tempfile::tempdir().unwrap();
        let first = contender(dir.path(), LockMode::Exclusive)
            .try_acquire(&claimant("a"), "1".into(), false)
            .unwrap()
            .unwrap();
        assert_eq!(first.record().token, 1);
        // A second open file description is a second holder, as another process would be.
        assert!(contender(dir.path(), LockMode::Exclusive)
            .try_acquire(&claimant("b"), "2".into(), false)
            .unwrap()
            .is_none());
        assert!(contender(dir.path(), LockMode::Shared)
            .try_acquire(&claimant("b"), "3".into(), false)
            .unwrap()
            .is_none());
        first.release().unwrap();
        let second = contender(dir.path(), LockMode::Exclusive)
            .try_acquire(&claimant("b"), "4".into(), false)
            .unwrap()
            .unwrap();
        assert_eq!(second.record().token, 2);
        let on_disk: OwnerRecord =
            serde_json::from_slice(&fs::read(dir.path().join("t.lock")).unwrap()).unwrap();
        assert_eq!(on_disk.process, "b");
    }

    #[test]
    fn readers_share_and_record_themselves() {
        let dir = tempfile::tempdir().unwrap();
        let a = attempt(dir.path(), LockMode::Shared, "ra", false).unwrap();
        let b = attempt(dir.path(), LockMode::Shared, "rb", false).unwrap();
        let mut names: Vec<_> = read_holders(&dir.path().join("t.lock"))
            .into_iter()
            .map(|r| r.process)
            .collect();
        names.sort();
        assert_eq!(names, ["ra", "rb"]);
        drop(a);
        drop(b);
        assert!(read_holders(&dir.path().join("t.lock")).is_empty());
    }

    #[test]
    fn a_waiting_writer_holds_back_new_readers() {
        let dir = tempfile::tempdir().unwrap();
        let reader = attempt(dir.path(), LockMode::Shared, "r", false).unwrap();
        let mut writer = contender(dir.path(), LockMode::Exclusive);
        assert!(retry(&mut writer, "w").is_none());
        assert!(attempt(dir.path(), LockMode::Shared, "r2", false).is_none());
        drop(reader);
        let granted = retry(&mut writer, "w").unwrap();
        drop(granted);
        assert!(attempt(dir.path(), LockMode::Shared, "r3", false).is_some());
    }

    #[test]
    fn a_deleted_lock_file_is_not_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let mut waiter = contender(dir.path(), LockMode::Exclusive);
        let holder = attempt(dir.path(), LockMode::Exclusive, "h", false).unwrap();
        assert!(retry(&mut waiter, "w").is_none());
        // Someone removes the held file and a newcomer creates and locks a fresh one.
        fs::remove_file(dir.path().join("t.lock")).unwrap();
        let newcomer = attempt(dir.path(), LockMode::Exclusive, "n", false).unwrap();
        drop(holder);
        // The waiter's old inode is free now, but it must not count as holding.
        assert!(retry(&mut waiter, "w").is_none());
        drop(newcomer);
        assert!(retry(&mut waiter, "w").is_some());
    }

    #[test]
    fn releasing_a_lock_whose_file_was_removed_is_compromised() {
        let dir = tempfile::tempdir().unwrap();
        let held = attempt(dir.path(), LockMode::Exclusive, "a", false).unwrap();
        fs::remove_file(dir.path().join("t.lock")).unwrap();
        // A newcomer made a new file at the path and "holds the lock" beside us.
        let newcomer = attempt(dir.path(), LockMode::Exclusive, "b", false).unwrap();
        let err = held.release().unwrap_err();
        assert_eq!(err.code, code::COMPROMISED);
        // The newcomer's record is left alone.
        let on_disk: OwnerRecord =
            serde_json::from_slice(&fs::read(dir.path().join("t.lock")).unwrap()).unwrap();
        assert_eq!(on_disk.lock_id, "b");
        newcomer.release().unwrap();
    }

    #[test]
    fn a_lock_file_removed_while_idle_is_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        // Released: the file stays open in this process's idle set.
        drop(attempt(dir.path(), LockMode::Exclusive, "a", false).unwrap());
        fs::remove_file(dir.path().join("t.lock")).unwrap();
        let holder = attempt(dir.path(), LockMode::Exclusive, "b", false)
            .expect("granted on a fresh file, not the removed one");
        assert!(dir.path().join("t.lock").exists());
        assert!(attempt(dir.path(), LockMode::Exclusive, "c", false).is_none());
        drop(holder);
    }

    /// Whether an event reports `holder`'s release to a waiter watching `path`. No
    /// safety tick here: only the event can end the wait.
    #[cfg(target_os = "linux")]
    fn release_wakes_waiters(path: &Path, holder: KernelLock) -> bool {
        use super::super::release_events::ReleaseEvents;
        use super::super::runtime::runtime;
        let subscription = ReleaseEvents::global().subscribe(path);
        let mut wake = Box::pin(subscription.wake.notified());
        wake.as_mut().enable();
        holder.release().unwrap();
        runtime()
            .block_on(async {
                tokio::time::timeout(std::time::Duration::from_secs(10), wake).await
            })
            .is_ok()
    }

    /// The release keeps its file open, so no close event tells waiters; the read it
    /// makes after its unlock must.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_release_that_keeps_its_file_open_still_wakes_waiters() {
        let dir = tempfile::tempdir().unwrap();
        let holder = attempt(dir.path(), LockMode::Exclusive, "h", false).unwrap();
        assert!(release_wakes_waiters(&dir.path().join("t.lock"), holder));
    }

    /// Readers record themselves beside the lock file, and reading an empty file makes
    /// no event: the first reader gives the lock file content.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_reader_releasing_a_lock_file_only_readers_used_wakes_waiters() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.lock");
        let reader = attempt(dir.path(), LockMode::Shared, "r", false).unwrap();
        assert!(!fs::read(&path).unwrap().is_empty());
        assert!(release_wakes_waiters(&path, reader));
    }

    #[test]
    fn a_sweep_removes_dead_readers_records_but_not_one_still_being_made() {
        let dir = tempfile::tempdir().unwrap();
        let lockfile = dir.path().join("t.lock");
        let readers = sibling(&lockfile, READERS_DIR_SUFFIX);
        fs::create_dir(&readers).unwrap();
        // Created, not yet locked or written: a live reader a moment from its lock.
        fs::write(readers.join("new.json"), "").unwrap();
        fs::write(readers.join("dead.json"), "{\"pid\":1}").unwrap();
        let removed = remove_dead_reader_records(&lockfile, false);
        assert_eq!(removed, vec![readers.join("dead.json")]);
        assert!(readers.join("new.json").exists());
    }

    /// A reader held back by a waiting writer must not wake itself with its own
    /// checks (it once did, spinning a CPU), and must be woken when the writer gives up.
    #[cfg(target_os = "linux")]
    #[test]
    fn readers_behind_a_waiting_writer_wake_only_when_it_leaves() {
        use super::super::release_events::ReleaseEvents;
        use futures_util::FutureExt;
        let dir = tempfile::tempdir().unwrap();
        let holder = attempt(dir.path(), LockMode::Exclusive, "h", false).unwrap();
        let mut writer = contender(dir.path(), LockMode::Exclusive);
        assert!(retry(&mut writer, "w").is_none());
        let events = ReleaseEvents::polled().expect("an inotify instance");
        let mut reader = contender(dir.path(), LockMode::Shared);
        let subscriptions: Vec<_> = reader
            .wake_paths()
            .iter()
            .map(|p| events.subscribe(p))
            .collect();
        // Waiters register before they look, as the wait loop does.
        let listen = || super::super::release_events::listen(&subscriptions);
        let woken = |wakes: Vec<_>| {
            events.drain();
            wakes
                .into_iter()
                .any(|w: std::pin::Pin<Box<tokio::sync::futures::Notified>>| {
                    w.now_or_never().is_some()
                })
        };
        let wakes = listen();
        for _ in 0..3 {
            assert!(retry(&mut reader, "r").is_none());
        }
        // A second writer failing to announce itself is no event either.
        let mut second = contender(dir.path(), LockMode::Exclusive);
        assert!(retry(&mut second, "w2").is_none());
        drop(second);
        assert!(!woken(wakes), "a failed attempt woke the waiters");
        let wakes = listen();
        drop(writer); // gives up
        assert!(woken(wakes), "the writer left without waking anyone");
        drop(holder);
    }

    #[cfg(unix)]
    #[test]
    fn symlinked_lock_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(dir.path().join("victim"), dir.path().join("t.lock")).unwrap();
        let err = contender(dir.path(), LockMode::Exclusive)
            .try_acquire(&claimant("a"), "1".into(), false)
            .unwrap_err();
        assert_eq!(err.code, "ELOOP");
        assert!(!dir.path().join("victim").exists());
    }
}
