//! The kernel strategy: an OS advisory lock (`flock` on Unix, `LockFileEx` on
//! Windows, through std's `File::lock` family) on `<target>.lock`. The kernel drops
//! the lock when its holder dies, so a crash never leaves a lock that blocks others.
//!
//! Files beside the lock file:
//! - `<lockfile>.readers/<lockId>.json`: one owner record per shared holder, itself
//!   locked by that holder, so a record whose lock can be taken is litter.
//! - `<lockfile>.writer-waiting`: held exclusively by a writer while it waits. Readers
//!   that find it held wait too, so a stream of readers cannot starve a writer
//!   (Linux `flock` alone grants new shared locks while a writer waits). It holds one
//!   byte and is only ever opened read-only after its creation: the writer that leaves
//!   it reads that byte to wake the readers, and nobody else makes an event on it.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::error::{code, LockError, Result};
use super::lock_file::{
    no_follow, open_no_follow, open_read_only, overwrite, read_whole, still_at_path, wake_waiters,
    LockFile,
};
use super::owner_record::{last_token, now_ms, LockMode, OwnerRecord, ReleasedRecord};
use super::strategy::{Contend, HeldLock};

pub const READERS_DIR_SUFFIX: &str = ".readers";
pub const WRITER_WAITING_SUFFIX: &str = ".writer-waiting";

/// Who is asking: the parts of the owner record that do not change per grant.
#[derive(Debug, Clone)]
pub struct Claimant {
    pub pid: u32,
    pub host: String,
    pub process: String,
    pub user: String,
    pub process_start: Option<u64>,
}

impl Claimant {
    /// The owner record of a grant made now.
    pub fn record(&self, mode: LockMode, lock_id: String, token: u64) -> OwnerRecord {
        let now = now_ms();
        OwnerRecord {
            pid: self.pid,
            host: self.host.clone(),
            process: self.process.clone(),
            user: self.user.clone(),
            timestamp: now,
            heartbeat: now,
            process_start: self.process_start,
            mode,
            lock_id,
            token,
        }
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
    reader_record: Option<(File, PathBuf)>,
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
            self.compromised = true;
            return Err(LockError::new(
                code::COMPROMISED,
                format!(
                    "The lock on {} was compromised: {reason}",
                    self.path.display()
                ),
                Some(&self.path),
            ));
        }
        self.record.heartbeat = now;
        let json = serde_json::to_vec(&self.record).expect("an owner record serialises");
        // A failed write (a full disk, EIO) loses nothing: the kernel lock is still
        // ours. The next beat writes again; until then the heartbeat ages.
        match (&self.reader_record, &self.file) {
            (Some((record_file, _)), _) => {
                let _ = overwrite(record_file, &json, 0);
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

    fn check_still_ours(&mut self) -> std::result::Result<(), &'static str> {
        let Some(lock_file) = self.file.as_ref() else {
            return Ok(());
        };
        if !lock_file.is_at(&self.path) {
            return Err("its lock file was removed or replaced");
        }
        if let Some((record_file, record_path)) = &self.reader_record {
            return match still_at_path(record_file, record_path) {
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
    pub fn release(mut self) -> Result<()> {
        self.release_inner()
    }

    fn release_inner(&mut self) -> Result<()> {
        let Some(lock_file) = self.file.take() else {
            return Ok(());
        };
        let mut outcome = Ok(());
        if self.compromised {
            // Not ours any more: drop our lock without touching what replaced it.
        } else if let Some((record_file, record_path)) = self.reader_record.take() {
            // Unlink before closing: a prober that then takes the record's lock finds
            // it gone from the directory, never a live-looking leftover.
            let _ = fs::remove_file(&record_path);
            drop(record_file);
        } else {
            // Keep only the token, so the next exclusive grant continues the sequence.
            let released = serde_json::to_vec(&ReleasedRecord {
                token: self.record.token,
            })
            .expect("a token serialises");
            outcome = overwrite(&lock_file.file, &released, self.record_len)
                .map_err(|e| LockError::from_io(&e, "clear", &self.path));
        }
        // Unlock, then wake: waiters must find the lock free when they look.
        let _ = lock_file.file.unlock();
        wake_waiters(&lock_file.file);
        if !self.compromised {
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
                            LockFile::open(&self.path, true)
                                .map_err(|e| LockError::from_io(&e, "open", &self.path))?
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

    fn grant(
        &self,
        lock_file: LockFile,
        claimant: &Claimant,
        lock_id: String,
    ) -> Result<KernelLock> {
        let io_err = |e: io::Error| LockError::from_io(&e, "write owner record", &self.path);
        let previous = read_whole(&lock_file.file).map_err(io_err)?;
        let last = last_token(&previous);
        // Only exclusive grants advance the fencing token; readers see the last one.
        let token = if self.mode == LockMode::Exclusive {
            last + 1
        } else {
            last
        };
        let record = claimant.record(self.mode, lock_id, token);
        let json = serde_json::to_vec(&record).expect("an owner record serialises");
        let reader_record = match self.mode {
            LockMode::Exclusive => {
                overwrite(&lock_file.file, &json, previous.len()).map_err(io_err)?;
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
        let gate = match open_read_only(&gate_path) {
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
        let gate = open_read_only(&gate_path).or_else(|e| {
            if e.kind() != io::ErrorKind::NotFound {
                return Err(e);
            }
            create_writer_gate(&gate_path)?;
            open_read_only(&gate_path)
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

/// Creates the writer-waiting file with its one byte; losing a race to create it is
/// fine, the winner wrote the same.
fn create_writer_gate(path: &Path) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    no_follow(&mut options);
    match options.open(path) {
        Ok(mut file) => file.write_all(b"w"),
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

/// Who holds a lock file, as the records say: the live shared holders if there are
/// any, else the exclusive holder's record. A reader record whose lock can be taken
/// was left by a crashed reader and is skipped.
pub fn read_holders(lockfile: &Path) -> Vec<OwnerRecord> {
    let mut readers = Vec::new();
    if let Ok(entries) = fs::read_dir(sibling(lockfile, READERS_DIR_SUFFIX)) {
        for entry in entries.flatten() {
            let Ok(mut file) = File::open(entry.path()) else {
                continue;
            };
            if !matches!(file.try_lock_shared(), Err(TryLockError::WouldBlock)) {
                continue;
            }
            let mut bytes = Vec::new();
            if file.read_to_end(&mut bytes).is_ok() {
                readers.extend(serde_json::from_slice::<OwnerRecord>(&bytes).ok());
            }
        }
    }
    if !readers.is_empty() {
        return readers;
    }
    fs::read(lockfile)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<OwnerRecord>(&bytes).ok())
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
/// at once. The probe opens the file for writing where it may, so its close wakes
/// any waiter whose attempt it got in the way of.
pub fn probe(lockfile: &Path) -> Result<Holding> {
    let file = match open_no_follow(lockfile, false).or_else(|_| open_read_only(lockfile)) {
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

/// What a lock file nobody holds contains.
#[derive(Debug)]
pub enum Leftover {
    /// `{"token":N}`: a clean release.
    Released,
    /// A holder's record: it died without releasing.
    DeadHolder(OwnerRecord),
    /// Nothing (or only padding): a lock file made but never written.
    Empty,
    /// Content that is none of ours: another tool's `*.lock` file (`Cargo.lock`,
    /// `yarn.lock`) or a record torn by a crash. Never swept: it may be someone's data.
    Foreign,
}

pub fn classify(content: &[u8]) -> Leftover {
    if content.iter().all(u8::is_ascii_whitespace) {
        return Leftover::Empty;
    }
    if let Ok(record) = serde_json::from_slice::<OwnerRecord>(content) {
        return Leftover::DeadHolder(record);
    }
    if serde_json::from_slice::<ReleasedRecord>(content).is_ok() {
        return Leftover::Released;
    }
    Leftover::Foreign
}

/// What a sweep did to one lock file.
#[derive(Debug, PartialEq, Eq)]
pub enum Swept {
    /// Held, cleanly released, not ours, or no longer at the path: left alone.
    Kept,
    /// Empty and unheld: unlinked.
    Removed,
    /// A dead holder's record: rewritten as a release, keeping its fencing token so
    /// the next grant continues the sequence (a new file would restart it at 1).
    Cleared,
}

/// Sweeps `lockfile` if nobody holds it. The work is done while we hold its lock and
/// only if it is still the file at the path, so a process that took it meanwhile
/// keeps it, and one blocked on an unlinked file finds it gone and re-opens (see
/// `Contender`). With `dry_run`, makes the same checks and says what it would do.
pub fn sweep_unheld(lockfile: &Path, dry_run: bool) -> Result<Swept> {
    let file = match open_no_follow(lockfile, false) {
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
    match classify(&content) {
        Leftover::Empty => {
            if !dry_run {
                fs::remove_file(lockfile)
                    .map_err(|e| LockError::from_io(&e, "unlink", lockfile))?;
            }
            Ok(Swept::Removed)
        }
        Leftover::DeadHolder(record) => {
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
        Leftover::Released | Leftover::Foreign => Ok(Swept::Kept),
    }
}

/// Reader records whose holder is gone (their lock can be taken): removed (unless
/// `dry_run`), and listed.
pub fn remove_dead_reader_records(lockfile: &Path, dry_run: bool) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(sibling(lockfile, READERS_DIR_SUFFIX)) else {
        return removed;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(file) = open_read_only(&path) else {
            continue;
        };
        // Empty: a reader between creating its record and locking it (it writes only
        // once locked), not a dead one.
        if file.try_lock().is_ok()
            && file.metadata().is_ok_and(|m| m.len() > 0)
            && still_at_path(&file, &path)
            && (dry_run || fs::remove_file(&path).is_ok())
        {
            removed.push(path);
        }
    }
    removed
}

/// The records of dead readers, for `status`.
pub fn dead_reader_records(lockfile: &Path) -> Vec<OwnerRecord> {
    let mut dead = Vec::new();
    let Ok(entries) = fs::read_dir(sibling(lockfile, READERS_DIR_SUFFIX)) else {
        return dead;
    };
    for entry in entries.flatten() {
        let Ok(mut file) = open_read_only(&entry.path()) else {
            continue;
        };
        if matches!(file.try_lock_shared(), Err(TryLockError::WouldBlock)) {
            continue;
        }
        let mut bytes = Vec::new();
        if file.read_to_end(&mut bytes).is_ok() {
            dead.extend(serde_json::from_slice::<OwnerRecord>(&bytes).ok());
        }
    }
    dead
}

pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

fn write_reader_record(lockfile: &Path, lock_id: &str, json: &[u8]) -> Result<(File, PathBuf)> {
    let dir = sibling(lockfile, READERS_DIR_SUFFIX);
    match fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(LockError::from_io(&e, "mkdir", &dir)),
    }
    let path = dir.join(format!("{lock_id}.json"));
    let io_err = |e: io::Error| LockError::from_io(&e, "write owner record", &path);
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    no_follow(&mut options);
    let mut file = options.open(&path).map_err(io_err)?;
    // Locked before it has content: a sweep leaves an empty record alone.
    file.lock().map_err(io_err)?;
    file.write_all(json).map_err(io_err)?;
    Ok((file, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimant(label: &str) -> Claimant {
        Claimant {
            pid: std::process::id(),
            host: "h".into(),
            process: label.into(),
            user: "u".into(),
            process_start: None,
        }
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
        use super::super::waiting::runtime;
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
