//! An open lock file: how it is opened, how we tell it is still the file at its path,
//! positional reads and writes of its record, and the idle ones this process keeps.
//!
//! A released lock file stays open (unlocked) for the next acquire of the same path:
//! reusing it saves an open, a stat and a close per grant, which were most of an
//! uncontended acquire. The kernel lock is what excludes, never the descriptor, so an
//! idle descriptor holds nothing. Someone may remove the file meanwhile (cleanup,
//! `rm`); whoever takes an idle file checks that it is still the one at its path.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::engine::safe_fs::{self, Access, Create};

/// How many released lock files stay open. Only on Linux: waiters there also wake on
/// a read (see `wake_waiters`), which an open descriptor can make after its unlock.
/// Elsewhere the watchers report closes, so a release must close.
#[cfg(target_os = "linux")]
pub const IDLE_LIMIT: usize = 256;

/// An open lock file and the identity (device, inode) it had when opened.
#[derive(Debug)]
pub struct LockFile {
    pub file: File,
    identity: Identity,
}

impl LockFile {
    /// Opens read-write through `safe_fs` (no symlink, no FIFO; created as shared as
    /// its directory), creating where `create`, never truncating: a loser must not
    /// clobber the holder's record.
    pub fn open(path: &Path, create: bool) -> io::Result<LockFile> {
        let file = match open_no_follow(path, create) {
            // Out of descriptors: give back the idle ones and try once more.
            Err(e) if out_of_descriptors(&e) && close_idle() > 0 => open_no_follow(path, create)?,
            other => other?,
        };
        let identity = Identity::of(&file)?;
        Ok(LockFile { file, identity })
    }

    /// A released lock file of `path` kept open by this process, if there is one.
    pub fn take_idle(path: &Path) -> Option<LockFile> {
        idle().remove(path.as_os_str())
    }

    /// Keeps this (unlocked) file open for the next acquire of `path`.
    #[cfg(target_os = "linux")]
    pub fn keep_idle(self, path: PathBuf) {
        let mut idle = idle();
        if idle.len() >= IDLE_LIMIT && !idle.contains_key(path.as_os_str()) {
            // Any one will do: an idle file only saves an open.
            if let Some(evicted) = idle.keys().next().cloned() {
                idle.remove(&evicted);
            }
        }
        idle.insert(path.into_os_string(), self);
    }

    /// Elsewhere the file closes here: its close is what wakes waiters.
    #[cfg(not(target_os = "linux"))]
    pub fn keep_idle(self, _path: PathBuf) {}

    /// Whether `path` still names this file. A lock on a file that was removed or
    /// replaced excludes nobody, since newcomers open whatever the path names now.
    pub fn is_at(&self, path: &Path) -> bool {
        self.identity.is_at(path)
    }

    /// Whether the file has no name left: removed, or replaced by a rename over it.
    /// Asked of the descriptor, so it costs no path lookup.
    pub fn is_unlinked(&self) -> bool {
        link_count(&self.file).is_ok_and(|links| links == 0)
    }
}

#[cfg(target_os = "linux")]
fn link_count(file: &File) -> io::Result<u64> {
    // Only the link count: see `Identity` on why a stat must not ask for times.
    Ok(statx_fd(file, libc::STATX_NLINK)?.stx_nlink as u64)
}

/// `statx` of an open descriptor, asking for `mask` alone.
#[cfg(target_os = "linux")]
pub(super) fn statx_fd(file: &File, mask: u32) -> io::Result<libc::statx> {
    use std::os::fd::AsRawFd;
    // SAFETY: an empty NUL-terminated path with AT_EMPTY_PATH names the descriptor;
    // `buf` is a plain struct the call fills.
    let mut buf: libc::statx = unsafe { std::mem::zeroed() };
    let status = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            mask,
            &mut buf,
        )
    };
    if status != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(buf)
}

#[cfg(all(unix, not(target_os = "linux")))]
fn link_count(file: &File) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(file.metadata()?.nlink())
}

/// Windows cannot remove a file another process has open.
#[cfg(not(unix))]
fn link_count(_file: &File) -> io::Result<u64> {
    Ok(1)
}

/// Closes every idle lock file; returns how many.
pub fn close_idle() -> usize {
    let mut idle = idle();
    let count = idle.len();
    idle.clear();
    count
}

/// Keyed by the path's bytes: hashing a `Path` walks its components, which costs more
/// than the map lookup itself, and lock file paths arrive normalised.
fn idle() -> std::sync::MutexGuard<'static, HashMap<OsString, LockFile>> {
    static IDLE: OnceLock<Mutex<HashMap<OsString, LockFile>>> = OnceLock::new();
    IDLE.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

#[cfg(unix)]
fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

#[cfg(not(unix))]
fn out_of_descriptors(_e: &io::Error) -> bool {
    false
}

#[cfg(unix)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
}

/// Linux: `statx` asking for the inode number alone. A stat that asks for times (as
/// `std::fs::metadata` does) makes the kernel stamp the next write with a fresh
/// fine-grained time (multigrain timestamps, Linux 6.13+), which dirties the inode and
/// adds a journal update to every record write.
#[cfg(target_os = "linux")]
impl Identity {
    fn of(file: &File) -> io::Result<Identity> {
        use std::os::fd::AsRawFd;
        Identity::statx(file.as_raw_fd(), c"", libc::AT_EMPTY_PATH)
    }

    fn is_at(&self, path: &Path) -> bool {
        use nix::NixPath;
        // A path of usual length is made a C string on the stack: this runs every grant.
        path.with_nix_path(|path| Identity::statx(libc::AT_FDCWD, path, 0))
            .is_ok_and(|named| named.is_ok_and(|named| named == *self))
    }

    fn statx(dir: libc::c_int, path: &std::ffi::CStr, flags: libc::c_int) -> io::Result<Identity> {
        // SAFETY: `path` is NUL-terminated and `buf` is a plain struct the call fills.
        let mut buf: libc::statx = unsafe { std::mem::zeroed() };
        let flags = flags | libc::AT_SYMLINK_NOFOLLOW;
        let status = unsafe { libc::statx(dir, path.as_ptr(), flags, libc::STATX_INO, &mut buf) };
        if status != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Identity {
            dev: libc::makedev(buf.stx_dev_major, buf.stx_dev_minor),
            ino: buf.stx_ino,
        })
    }
}

#[cfg(all(unix, not(target_os = "linux")))]
impl Identity {
    fn of(file: &File) -> io::Result<Identity> {
        use std::os::unix::fs::MetadataExt;
        let meta = file.metadata()?;
        Ok(Identity {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    fn is_at(&self, path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(path).is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino)
    }
}

/// Windows cannot delete a file another process has open, so the path cannot move.
#[cfg(not(unix))]
#[derive(Debug, Clone, Copy)]
struct Identity;

#[cfg(not(unix))]
impl Identity {
    fn of(_file: &File) -> io::Result<Identity> {
        Ok(Identity)
    }

    fn is_at(&self, _path: &Path) -> bool {
        true
    }
}

/// Whether `path` still names the file `file` has open.
pub fn still_at_path(file: &File, path: &Path) -> bool {
    Identity::of(file).is_ok_and(|identity| identity.is_at(path))
}

/// Wakes this file's waiters in other processes after an unlock. On Linux they watch
/// for reads as well as closes (inotify has no event for an unlock), and a one-byte
/// read is the cheapest event a descriptor that stays open can make.
#[cfg(target_os = "linux")]
pub fn wake_waiters(file: &File) {
    let _ = read_at(file, &mut [0u8; 1], 0);
}

/// Elsewhere no watcher reports reads: the close that follows is the event.
#[cfg(not(target_os = "linux"))]
pub fn wake_waiters(_file: &File) {}

/// Read-write, never through a symlink, never blocking, regular files only.
fn open_no_follow(path: &Path, create: bool) -> io::Result<File> {
    let create = if create {
        Create::IfMissing
    } else {
        Create::No
    };
    safe_fs::open_file(path, Access::ReadWrite, create)
}

/// Bytes the owner record may take at the start of a lock file; shared holders'
/// records follow in regions of the same size (see `readers::slots`).
pub const RECORD_REGION: usize = 1024;

/// The owner record's region: at most `RECORD_REGION` bytes from offset 0, in one
/// positional read. Content past it is never read here, so a sparse terabyte planted
/// at a lock path costs one small read and is then refused as not a record.
pub fn read_whole(file: &File) -> io::Result<Vec<u8>> {
    let mut region = [0u8; RECORD_REGION];
    Ok(read_region(file, &mut region)?.to_vec())
}

/// `read_whole` into the caller's buffer: a grant reads the region on every acquire.
pub fn read_region<'a>(file: &File, region: &'a mut [u8; RECORD_REGION]) -> io::Result<&'a [u8]> {
    let n = read_at(file, region, 0)?;
    Ok(&region[..n])
}

/// The owner record at the start of `file`, if it holds one.
pub fn read_record(file: &File) -> Option<crate::engine::owner_record::OwnerRecord> {
    serde_json::from_slice(&read_whole(file).ok()?).ok()
}

fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    safe_fs::read_at(file, buf, offset)
}

// Idle files are kept on Linux only.
#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn an_idle_file_is_reused_until_its_path_names_another() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.lock");
        LockFile::open(&path, true).unwrap().keep_idle(path.clone());
        let idle = LockFile::take_idle(&path).expect("kept");
        assert!(idle.is_at(&path));
        assert!(LockFile::take_idle(&path).is_none(), "taken once");
        fs::remove_file(&path).unwrap();
        LockFile::open(&path, true).unwrap();
        assert!(!idle.is_at(&path), "a re-created file is another file");
    }

    #[test]
    fn the_idle_set_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..IDLE_LIMIT + 10 {
            let path = dir.path().join(format!("{i}.lock"));
            LockFile::open(&path, true).unwrap().keep_idle(path.clone());
        }
        assert!(idle().len() <= IDLE_LIMIT);
    }
}
