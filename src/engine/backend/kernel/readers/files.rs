//! Shared holders and the writer gate in files beside the lock file, where the OS has
//! no open-file-description byte locks (macOS, Windows; see `slots.rs` for Linux):
//! - `<lockfile>.readers/<lockId>.json`: one owner record per shared holder, itself
//!   locked by that holder, so a record whose lock can be taken is litter. Reached
//!   only through the directory's descriptor (see `safe_fs`), so a planted symlink in
//!   place of the directory sends nothing elsewhere.
//! - `<lockfile>.writer-waiting`: held exclusively by a writer while it waits. Readers
//!   that find it held wait too, so a stream of readers cannot starve a writer
//!   (Linux `flock` alone grants new shared locks while a writer waits). It holds one
//!   byte and is only ever opened read-only after its creation: the writer that leaves
//!   it reads that byte to wake the readers, and nobody else makes an event on it.

use std::ffi::OsString;
use std::fs::{File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

use crate::engine::error::{LockError, Result};
use crate::engine::lock_path::sibling;
use crate::engine::owner_record::OwnerRecord;
use crate::engine::safe_fs::{self, overwrite, Access, Create, Dir};

use super::super::lock_file::{read_whole, wake_waiters};

pub(in super::super) const READERS_DIR_SUFFIX: &str = ".readers";
pub(in super::super) const WRITER_WAITING_SUFFIX: &str = ".writer-waiting";

/// A shared holder's record file, with the directory it was made in.
#[derive(Debug)]
pub(in super::super) struct ReaderRecord {
    pub(in super::super) file: File,
    pub(in super::super) dir: Dir,
    pub(in super::super) name: OsString,
}

impl ReaderRecord {
    /// Rewrites the record (a heartbeat).
    pub(in super::super) fn write(&self, _main: &File, json: &[u8]) -> io::Result<()> {
        overwrite(&self.file, json, 0)
    }

    pub(in super::super) fn still_there(&self, _main: &File) -> bool {
        self.dir.holds(&self.name, &self.file)
    }

    /// Unlinks the record before its file closes: a prober that then takes the
    /// record's lock finds it gone from the directory, never a live-looking leftover.
    pub(in super::super) fn remove(self, _main: &File) {
        let _ = self.dir.unlink(&self.name);
    }
}

/// The readers' directory of `lockfile`, made if `create`. Never a symlink.
pub(in super::super) fn readers_dir(lockfile: &Path, create: bool) -> io::Result<Dir> {
    let parent = match lockfile.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let name = sibling(
        Path::new(lockfile.file_name().unwrap_or_default()),
        READERS_DIR_SUFFIX,
    );
    Dir::open(parent)?.sub_dir(name.as_os_str(), create)
}

/// A reader record as found by a look at the readers' directory.
pub(in super::super) struct FoundRecord {
    pub(in super::super) name: OsString,
    pub(in super::super) file: File,
    /// Its reader still holds it: alive.
    pub(in super::super) held: bool,
}

/// The readers' directory of `lockfile` and each record in it, opened read-only
/// (regular files only), with whether its reader still holds it.
pub(in super::super) fn reader_records(lockfile: &Path) -> Option<(Dir, Vec<FoundRecord>)> {
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
pub(in super::super) fn reader_owners(lockfile: &Path, held: bool) -> Vec<OwnerRecord> {
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

pub(in super::super) fn write_reader_record(
    _main: &File,
    lockfile: &Path,
    lock_id: &str,
    json: &[u8],
) -> Result<ReaderRecord> {
    let dir_path = sibling(lockfile, READERS_DIR_SUFFIX);
    let dir =
        readers_dir(lockfile, true).map_err(|e| LockError::from_io(&e, "mkdir", &dir_path))?;
    let name = OsString::from(format!("{lock_id}.json"));
    let io_err =
        |e: io::Error| LockError::from_io(&e, "write owner record", &dir.path().join(&name));
    let file = dir
        .open_file(&name, Access::ReadWrite, Create::New)
        .map_err(io_err)?;
    // Locked before it has content: a sweep leaves an empty record alone.
    file.lock().map_err(io_err)?;
    overwrite(&file, json, 0).map_err(io_err)?;
    Ok(ReaderRecord { file, dir, name })
}

/// What clearing dead readers did: their record files are removed.
#[derive(Debug, Default)]
pub(in super::super) struct DeadReaders {
    pub removed: Vec<PathBuf>,
    pub cleared: bool,
}

/// Reader records whose holder is gone (their lock can be taken): removed (unless
/// `dry_run`), and listed.
pub(in super::super) fn clear_dead_readers(lockfile: &Path, dry_run: bool) -> DeadReaders {
    let Some((dir, found)) = reader_records(lockfile) else {
        return DeadReaders::default();
    };
    let removed = found
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
        .collect();
    DeadReaders {
        removed,
        cleared: false,
    }
}

/// Creates the writer-waiting file with its one byte; losing a race to create it is
/// fine, the winner wrote the same.
pub(in super::super) fn create_writer_gate(path: &Path) -> io::Result<()> {
    match safe_fs::open_file(path, Access::ReadWrite, Create::New) {
        Ok(file) => overwrite(&file, b"w", 0),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Readers defer to a writer that holds the writer-waiting file. No such file
/// means no writer has ever waited here. Opened read-only: closing a file opened
/// for writing is an event waiters watch, and a reader would wake itself.
pub(in super::super) fn writer_is_waiting(_main: &File, lockfile: &Path) -> Result<bool> {
    let gate_path = &sibling(lockfile, WRITER_WAITING_SUFFIX);
    let gate = match safe_fs::open_file(gate_path, Access::Read, Create::No) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(LockError::from_io(&e, "open", gate_path)),
    };
    match gate.try_lock_shared() {
        Ok(()) => Ok(false), // closing the file below drops this probe lock
        Err(TryLockError::WouldBlock) => Ok(true),
        Err(TryLockError::Error(e)) => Err(LockError::from_io(&e, "lock", gate_path)),
    }
}

/// Holds the writer-waiting file for a writer about to wait. Best effort: failing to
/// announce only costs fairness, never exclusion. The file is created once, holding
/// one byte for `leave_writer_gate` to read, and is otherwise opened read-only so
/// that a failed announcement wakes nobody.
pub(in super::super) fn announce_writer(_main: &File, lockfile: &Path) -> Option<WriterGate> {
    let gate_path = &sibling(lockfile, WRITER_WAITING_SUFFIX);
    let gate = safe_fs::open_file(gate_path, Access::Read, Create::No).or_else(|e| {
        if e.kind() != io::ErrorKind::NotFound {
            return Err(e);
        }
        create_writer_gate(gate_path)?;
        safe_fs::open_file(gate_path, Access::Read, Create::No)
    });
    gate.ok()
        .filter(|gate| gate.try_lock().is_ok())
        .map(WriterGate)
}

/// Lets go of the writer-waiting file and wakes the readers held back by it: a
/// read is the event they watch for (a read-only close is not).
pub(in super::super) fn leave_writer_gate(gate: WriterGate, _main: &File) {
    let _ = gate.0.unlock();
    wake_waiters(&gate.0);
}

/// A writer's announcement that it waits: the writer-waiting file, held.
#[derive(Debug)]
pub(in super::super) struct WriterGate(File);

/// The paths whose events can mean this lock came free.
pub(in super::super) fn wake_paths(lockfile: &Path) -> Vec<PathBuf> {
    vec![
        lockfile.to_path_buf(),
        sibling(lockfile, WRITER_WAITING_SUFFIX),
    ]
}

/// Dead readers' records, then their directory if that left it empty, then a
/// writer-waiting file that no writer holds: removed (unless `dry_run`) and listed.
pub(in super::super) fn sweep_leftovers(lockfile: &Path, dry_run: bool) -> Vec<PathBuf> {
    let mut removed = clear_dead_readers(lockfile, dry_run).removed;
    if let Ok(dir) = readers_dir(lockfile, false) {
        let empty = dir.names().is_ok_and(|names| names.len() <= removed.len());
        let dir_path = sibling(lockfile, READERS_DIR_SUFFIX);
        if empty && (dry_run || std::fs::remove_dir(&dir_path).is_ok()) {
            removed.push(dir_path);
        }
    }
    let gate_path = sibling(lockfile, WRITER_WAITING_SUFFIX);
    if let Ok(gate) = safe_fs::open_file(&gate_path, Access::Read, Create::No) {
        // Held: a writer of the files layout waits; it still counts on the file. Only
        // the one byte such a gate holds proves it ours: anything else is left alone.
        let ours = read_whole(&gate).is_ok_and(|content| content == b"w");
        if ours && gate.try_lock().is_ok() && (dry_run || std::fs::remove_file(&gate_path).is_ok())
        {
            removed.push(gate_path);
        }
    }
    removed
}
