//! Replacing a file so that a crash at any moment leaves the old content or the new,
//! never a mix: write a temp file in the same directory, fsync it, rename it over the
//! target (atomic within one filesystem), fsync the directory so the rename itself
//! survives a power cut.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::error::{LockError, Result};

#[derive(Debug, Clone, Copy)]
pub struct AtomicWriteOptions {
    /// Permission bits for a new file; an existing file keeps its own.
    pub mode: Option<u32>,
    /// fsync the data and the directory (default). Off trades durability for speed.
    pub fsync: bool,
}

impl Default for AtomicWriteOptions {
    fn default() -> Self {
        AtomicWriteOptions {
            mode: None,
            fsync: true,
        }
    }
}

/// Where the data really goes: a symlinked target is written through, as npm's
/// write-file-atomic does, so the link stays a link and the file it names changes.
/// A target that does not exist yet (or a dangling link) is written at its own path.
fn real_target(target: &Path) -> Result<PathBuf> {
    if target.file_name().is_none() {
        return Err(LockError::invalid_path(
            format!("'{}' names no file to write", target.display()),
            target,
        ));
    }
    Ok(fs::canonicalize(target).unwrap_or_else(|_| target.to_path_buf()))
}

pub fn write_file_atomic(target: &Path, data: &[u8], options: AtomicWriteOptions) -> Result<()> {
    let real = real_target(target)?;
    let io_err = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |e: io::Error| LockError::from_io(&e, action, &path)
    };
    let dir = match real.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let existing = fs::metadata(&real).ok().filter(|m| m.is_file());
    // A random name made with O_EXCL: no other writer, on this host or another sharing
    // the directory, can hold the same name, and none of them has to guess whether a
    // temp file is abandoned. Removed on any failure (dropping it unlinks it).
    let prefix = format!(
        ".{}.lockwright-",
        real.file_name().unwrap_or_default().to_string_lossy()
    );
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // A new file gets `mode` less the umask, as `fs.writeFile` does.
        builder.permissions(fs::Permissions::from_mode(options.mode.unwrap_or(0o666)));
    }
    let mut temp = builder.tempfile_in(&dir).map_err(io_err("open", &dir))?;
    if let Some(meta) = &existing {
        keep_mode_and_owner(temp.as_file(), meta).map_err(io_err("chmod", temp.path()))?;
    }
    temp.write_all(data).map_err(io_err("write", temp.path()))?;
    if options.fsync {
        temp.as_file()
            .sync_all()
            .map_err(io_err("fsync", temp.path()))?;
    }
    temp.persist(&real)
        .map_err(|e| LockError::from_io(&e.error, "rename", &real))?;
    if options.fsync {
        sync_dir(&dir).map_err(io_err("fsync", &dir))?;
    }
    Ok(())
}

/// The replacement keeps the old file's mode, and its owner and group where we may
/// set them (root may; another user's chown fails with EPERM and the new file is
/// then ours, as with any rewrite by that user).
fn keep_mode_and_owner(file: &File, old: &fs::Metadata) -> io::Result<()> {
    file.set_permissions(old.permissions())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let new = file.metadata()?;
        if (new.uid(), new.gid()) != (old.uid(), old.gid()) {
            match std::os::unix::fs::fchown(file, Some(old.uid()), Some(old.gid())) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
                Err(e) => return Err(e),
            }
            // chown clears setuid/setgid bits: put the mode back.
            file.set_permissions(old.permissions())?;
        }
    }
    Ok(())
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_keeps_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("state.json");
        write_file_atomic(&target, b"one", AtomicWriteOptions::default()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
        }
        write_file_atomic(
            &target,
            b"two",
            AtomicWriteOptions {
                mode: Some(0o644),
                fsync: false,
            },
        )
        .unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&target).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn other_writers_temp_files_are_never_touched() {
        // Another host's or container's in-flight temp file: its PID means nothing here.
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("state.json");
        let theirs = dir.path().join(".state.json.lockwright-4000000-0.tmp");
        fs::write(&theirs, b"in flight").unwrap();
        write_file_atomic(&target, b"new", AtomicWriteOptions::default()).unwrap();
        assert_eq!(fs::read(&theirs).unwrap(), b"in flight");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            2,
            "ours was renamed away"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_symlinked_target_is_written_through_keeping_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.json");
        fs::write(&real, b"old").unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o640)).unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write_file_atomic(&link, b"new", AtomicWriteOptions::default()).unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&real).unwrap(), b"new");
        assert_eq!(
            fs::metadata(&real).unwrap().permissions().mode() & 0o777,
            0o640
        );
    }

    #[cfg(unix)]
    #[test]
    fn the_owner_is_kept_when_root_rewrites_a_users_file() {
        use std::os::unix::fs::MetadataExt;
        if !nix::unistd::geteuid().is_root() {
            return; // only root may give a file away
        }
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("owned.json");
        fs::write(&target, b"old").unwrap();
        std::os::unix::fs::chown(&target, Some(65534), Some(65534)).unwrap();
        write_file_atomic(&target, b"new", AtomicWriteOptions::default()).unwrap();
        let meta = fs::metadata(&target).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    }

    #[test]
    fn a_missing_directory_is_enoent_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_file_atomic(
            &dir.path().join("no/such.json"),
            b"x",
            AtomicWriteOptions::default(),
        )
        .unwrap_err();
        assert_eq!(err.code, "ENOENT");
    }
}
