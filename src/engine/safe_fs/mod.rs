//! Reaching what sits next to a lock without trusting it. Locks live in shared places
//! (`/tmp`, a group folder, a volume several containers mount), where a careless or
//! hostile neighbour can plant a symlink, a FIFO or a huge file at any name we use.
//! So every file we open there is opened without following a symlink (`O_NOFOLLOW`),
//! without blocking (`O_NONBLOCK`: a FIFO would otherwise freeze the opening thread),
//! checked with `fstat` to be a regular file, and read with a bound. Inside directories
//! we make (`<lock>.readers/`), names are reached through the directory's descriptor,
//! so a directory swapped for a symlink cannot send us elsewhere.
//!
//! Files and directories we create are shared as their parent is: a lock in a
//! group-writable or world-writable (sticky) directory must be usable by the other
//! users who can reach it, as proper-lockfile's directories are.

use std::fmt;
use std::fs::File;
use std::io;

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;

#[cfg(not(unix))]
mod other;
#[cfg(not(unix))]
pub use other::*;

/// The most a lock record can take. Ours are a few hundred bytes; anything longer is
/// someone else's file (or a sparse file or device meant to exhaust our memory).
pub const RECORD_LIMIT: usize = 16 * 1024;

/// How a file is opened: records are read by anyone, written only by holders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    ReadWrite,
}

/// What an open call may create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// Only open what exists.
    No,
    /// Create if missing, shared as the parent directory is (see `shared_mode`).
    IfMissing,
    /// Create; fail with `EEXIST` if anything is there.
    New,
}

/// Something other than a regular file (or, where a directory is asked for, other than
/// a directory) at a path we would use: reported, never opened for I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotALockFile {
    /// What was found instead: "a FIFO", "a directory", "larger than a lock record"...
    pub found: &'static str,
}

impl fmt::Display for NotALockFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a lock file: {}", self.found)
    }
}

impl std::error::Error for NotALockFile {}

pub fn not_a_lock_file(found: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, NotALockFile { found })
}

/// The `NotALockFile` inside an I/O error, if that is what it is.
pub fn as_not_a_lock_file(err: &io::Error) -> Option<NotALockFile> {
    err.get_ref()?.downcast_ref::<NotALockFile>().copied()
}

/// Reads `file` from offset 0 up to `RECORD_LIMIT` bytes with positional reads: one
/// read for a record of ordinary size. Longer content is not a record of ours.
pub fn read_bounded(file: &File) -> io::Result<Vec<u8>> {
    let mut content = vec![0u8; 1024];
    let mut filled = 0;
    loop {
        let n = read_at(file, &mut content[filled..], filled as u64)?;
        filled += n;
        if n == 0 || filled < content.len() {
            content.truncate(filled);
            return Ok(content);
        }
        if content.len() > RECORD_LIMIT {
            return Err(not_a_lock_file("larger than any lock record"));
        }
        content.resize(content.len() * 2, 0);
    }
}

/// Replaces the record in place, padding with spaces (JSON allows trailing white
/// space) instead of truncating. Truncating to zero makes ext4 flush the file to disk
/// at close (its `auto_da_alloc` rule for replace-via-truncate), which costs a disk
/// write on every acquire and release; one in-place write also never shows a reader
/// an empty file.
pub fn overwrite(file: &File, content: &[u8], old_len: usize) -> io::Result<()> {
    if content.len() >= old_len {
        return write_all_at_start(file, content);
    }
    let mut padded = content.to_vec();
    padded.resize(old_len, b' ');
    write_all_at_start(file, &padded)
}

#[cfg(unix)]
fn write_all_at_start(file: &File, content: &[u8]) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, content, 0)
}

#[cfg(windows)]
fn write_all_at_start(mut file: &File, content: &[u8]) -> io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    file.seek(SeekFrom::Start(0))?;
    file.write_all(content)
}

#[cfg(unix)]
pub fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

#[cfg(windows)]
pub fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, offset)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    #[test]
    fn symlinks_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let link = dir.path().join("t.lock");
        symlink(&victim, &link).unwrap();
        let err = open_file(&link, Access::ReadWrite, Create::IfMissing).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
        // A directory we made, replaced by a symlink to another directory.
        fs::create_dir(dir.path().join("elsewhere")).unwrap();
        symlink(
            dir.path().join("elsewhere"),
            dir.path().join("t.lock.readers"),
        )
        .unwrap();
        let parent = Dir::open(dir.path()).unwrap();
        assert!(parent.sub_dir(OsStr::new("t.lock.readers"), true).is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn fifos_and_directories_are_not_lock_files_and_never_block() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("f.lock");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
        for access in [Access::Read, Access::ReadWrite] {
            let err = open_file(&fifo, access, Create::IfMissing).unwrap_err();
            assert_eq!(as_not_a_lock_file(&err).unwrap().found, "a FIFO");
        }
        let sub = dir.path().join("d.lock");
        fs::create_dir(&sub).unwrap();
        let err = open_file(&sub, Access::Read, Create::No).unwrap_err();
        assert!(as_not_a_lock_file(&err).is_some() || err.raw_os_error() == Some(libc::EISDIR));
    }

    #[test]
    fn reads_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.lock");
        fs::File::create(&path).unwrap().set_len(1 << 40).unwrap(); // sparse: 1 TiB of zeros
        let file = fs::File::open(&path).unwrap();
        let err = read_bounded(&file).unwrap_err();
        assert!(as_not_a_lock_file(&err).is_some());
        fs::write(&path, b"{\"token\":3}").unwrap();
        assert_eq!(
            read_bounded(&fs::File::open(&path).unwrap()).unwrap(),
            b"{\"token\":3}"
        );
    }

    #[test]
    fn new_files_are_shared_as_their_directory_is() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
        let path = dir.path().join("shared.lock");
        let file = open_file(&path, Access::ReadWrite, Create::IfMissing).unwrap();
        assert_eq!(file.metadata().unwrap().permissions().mode() & 0o777, 0o666);
        let private = tempfile::tempdir().unwrap();
        fs::set_permissions(private.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let path = private.path().join("private.lock");
        let file = open_file(&path, Access::ReadWrite, Create::IfMissing).unwrap();
        assert_eq!(file.metadata().unwrap().permissions().mode() & 0o777, 0o644);
    }
}
