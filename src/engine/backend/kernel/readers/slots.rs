//! Shared holders and the writer gate inside the lock file itself (Linux), so a lock
//! is one entry on disk. Open-file-description locks (`F_OFD_SETLK`) on bytes far
//! past any content, each independent of the `flock` that is the lock itself:
//! - the gate byte: a writer that waits holds a write lock on it (one writer at a time;
//!   the others find it held, which is all they need), and a reader that finds it held
//!   waits too, so a stream of readers cannot starve a writer (Linux `flock` alone
//!   grants new shared locks while a writer waits);
//! - slot bytes: a reader holds a write lock on one slot's byte and writes its owner
//!   record into that slot's region of the file. A slot whose byte nobody holds is
//!   free, and a record left in it was a crashed reader's: the kernel, not a PID,
//!   tells a dead reader.
//!
//! These locks belong to the open file description, like `flock`: a descriptor passed
//! to a child keeps them, and they go when the last descriptor closes (a crash too).
//! The file: the owner record (or `{"token":N}`) in the first `REGION` bytes, padded
//! with spaces; reader slot `i` in the `REGION` bytes after `(i + 1) * REGION`, a
//! record padded with spaces and ending in a newline, or all spaces when free.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};

use crate::engine::error::{LockError, Result};
use crate::engine::owner_record::OwnerRecord;
use crate::engine::safe_fs::{self, Access, Create};

use super::super::lock_file::{wake_waiters, RECORD_REGION};

/// Where the lock bytes start: far past any content, so they never meet a tool that
/// locks the bytes it writes.
const GATE_BYTE: i64 = 1 << 40;
/// How many readers can hold one lock at once.
pub(in super::super) const MAX_SLOTS: u32 = 4096;

fn slot_byte(slot: u32) -> i64 {
    GATE_BYTE + 1 + i64::from(slot)
}

fn slot_offset(slot: u32) -> u64 {
    (u64::from(slot) + 1) * RECORD_REGION as u64
}

fn range(kind: libc::c_short, byte: i64) -> libc::flock {
    // SAFETY: a plain C struct; every field is set below or meant to be zero.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = byte;
    lock.l_len = 1;
    lock
}

/// A non-blocking OFD lock on one byte: `Ok(false)` when someone else holds it.
fn try_set(file: &File, kind: libc::c_short, byte: i64) -> io::Result<bool> {
    match fcntl(file.as_fd(), FcntlArg::F_OFD_SETLK(&range(kind, byte))) {
        Ok(_) => Ok(true),
        Err(Errno::EAGAIN) | Err(Errno::EACCES) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn unset(file: &File, byte: i64) {
    let _ = fcntl(
        file.as_fd(),
        FcntlArg::F_OFD_SETLK(&range(libc::F_UNLCK as _, byte)),
    );
}

/// Whether another open file description holds a lock on `byte` that a lock of
/// `kind` would conflict with. Takes nothing.
fn held_by_others(file: &File, kind: libc::c_short, byte: i64) -> io::Result<bool> {
    let mut probe = range(kind, byte);
    fcntl(file.as_fd(), FcntlArg::F_OFD_GETLK(&mut probe))?;
    Ok(probe.l_type != libc::F_UNLCK as libc::c_short)
}

/// The paths whose events can mean this lock came free: only the lock file.
pub(in super::super) fn wake_paths(lockfile: &Path) -> Vec<PathBuf> {
    vec![lockfile.to_path_buf()]
}

/// A writer's announcement that it waits: a write lock on the gate byte of its own
/// open lock file.
#[derive(Debug)]
pub(in super::super) struct WriterGate;

/// Readers defer to any writer that waits.
pub(in super::super) fn writer_is_waiting(main: &File, lockfile: &Path) -> Result<bool> {
    held_by_others(main, libc::F_WRLCK as _, GATE_BYTE)
        .map_err(|e| LockError::from_io(&e, "lock", lockfile))
}

/// Best effort: failing to announce only costs fairness, never exclusion. A gate
/// another writer holds already holds readers back; taking it fails without an event,
/// so waiters are not woken by writers queueing.
pub(in super::super) fn announce_writer(main: &File, _lockfile: &Path) -> Option<WriterGate> {
    try_set(main, libc::F_WRLCK as _, GATE_BYTE)
        .ok()
        .filter(|&held| held)
        .map(|_| WriterGate)
}

/// Lets go of the gate and wakes the readers held back by it: a read of the lock file
/// is the event waiters watch for.
pub(in super::super) fn leave_writer_gate(_gate: WriterGate, main: &File) {
    unset(main, GATE_BYTE);
    wake_waiters(main);
}

/// A shared holder's slot in the lock file.
#[derive(Debug)]
pub(in super::super) struct ReaderRecord {
    slot: u32,
}

impl ReaderRecord {
    /// Rewrites the record (a heartbeat).
    pub(in super::super) fn write(&self, main: &File, json: &[u8]) -> io::Result<()> {
        write_slot(main, self.slot, json)
    }

    /// A slot cannot be taken from its holder: while we hold its byte it is ours.
    pub(in super::super) fn still_there(&self, _main: &File) -> bool {
        true
    }

    /// Blanks the slot, then lets its byte go: a sweep never sees a live-looking record
    /// in a free slot.
    pub(in super::super) fn remove(self, main: &File) {
        let _ = write_slot(main, self.slot, b"");
        unset(main, slot_byte(self.slot));
    }
}

/// The region of `slot`, holding `json` padded with spaces and ending in a newline.
fn write_slot(file: &File, slot: u32, json: &[u8]) -> io::Result<()> {
    if json.len() >= RECORD_REGION {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "owner record too long",
        ));
    }
    let mut region = vec![b' '; RECORD_REGION];
    region[..json.len()].copy_from_slice(json);
    region[RECORD_REGION - 1] = b'\n';
    std::os::unix::fs::FileExt::write_all_at(file, &region, slot_offset(slot))
}

/// Takes the first free slot and writes the record there. The slot's byte is locked
/// before the record is written, so a sweep never blanks a record being made.
pub(in super::super) fn write_reader_record(
    main: &File,
    lockfile: &Path,
    _lock_id: &str,
    json: &[u8],
) -> Result<ReaderRecord> {
    let io_err = |e: io::Error| LockError::from_io(&e, "write owner record", lockfile);
    for slot in 0..MAX_SLOTS {
        if try_set(main, libc::F_WRLCK as _, slot_byte(slot)).map_err(io_err)? {
            let record = ReaderRecord { slot };
            if let Err(e) = record.write(main, json) {
                unset(main, slot_byte(slot));
                return Err(io_err(e));
            }
            return Ok(record);
        }
    }
    Err(LockError::new(
        "EAGAIN",
        format!("'{}' has {MAX_SLOTS} readers already", lockfile.display()),
        Some(lockfile),
    ))
}

/// One slot as a look from outside finds it.
struct FoundSlot {
    slot: u32,
    record: OwnerRecord,
    held: bool,
}

/// The records in `lockfile`'s slots, each with whether its reader still holds it.
fn slots(file: &File) -> Vec<FoundSlot> {
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return Vec::new();
    };
    let count = (len / RECORD_REGION as u64)
        .saturating_sub(1)
        .min(u64::from(MAX_SLOTS)) as u32;
    (0..count)
        .filter_map(|slot| {
            let mut region = vec![0u8; RECORD_REGION];
            let n = safe_fs::read_at(file, &mut region, slot_offset(slot)).ok()?;
            let record = serde_json::from_slice::<OwnerRecord>(&region[..n]).ok()?;
            let held = held_by_others(file, libc::F_WRLCK as _, slot_byte(slot)).ok()?;
            Some(FoundSlot { slot, record, held })
        })
        .collect()
}

/// The records of live (`held`) or dead readers.
pub(in super::super) fn reader_owners(lockfile: &Path, held: bool) -> Vec<OwnerRecord> {
    let Ok(file) = safe_fs::open_file(lockfile, Access::Read, Create::No) else {
        return Vec::new();
    };
    slots(&file)
        .into_iter()
        .filter(|s| s.held == held)
        .map(|s| s.record)
        .collect()
}

/// What clearing dead readers did: slots are blanked inside the lock file.
#[derive(Debug, Default)]
pub(in super::super) struct DeadReaders {
    pub removed: Vec<PathBuf>,
    pub cleared: bool,
}

/// Blanks the slots of readers that died holding the lock (unless `dry_run`). Each
/// slot is taken first, so a reader that is just now writing its record keeps it.
pub(in super::super) fn clear_dead_readers(lockfile: &Path, dry_run: bool) -> DeadReaders {
    let Ok(file) = safe_fs::open_file(lockfile, Access::ReadWrite, Create::No) else {
        return DeadReaders::default();
    };
    let mut cleared = false;
    for dead in slots(&file).into_iter().filter(|s| !s.held) {
        if dry_run {
            cleared = true;
            continue;
        }
        if !try_set(&file, libc::F_WRLCK as _, slot_byte(dead.slot)).unwrap_or(false) {
            continue;
        }
        let mut region = vec![0u8; RECORD_REGION];
        let still = safe_fs::read_at(&file, &mut region, slot_offset(dead.slot))
            .ok()
            .and_then(|n| serde_json::from_slice::<OwnerRecord>(&region[..n]).ok())
            .is_some_and(|r| r.lock_id == dead.record.lock_id);
        if still && write_slot(&file, dead.slot, b"").is_ok() {
            cleared = true;
        }
        unset(&file, slot_byte(dead.slot));
    }
    DeadReaders {
        removed: Vec::new(),
        cleared,
    }
}
