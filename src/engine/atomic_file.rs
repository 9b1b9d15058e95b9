//! Replacing a file so that a crash at any moment leaves the old content or the new,
//! never a mix: write a temp file in the same directory, fsync it, rename it over the
//! target (atomic within one filesystem), fsync the directory so the rename itself
//! survives a power cut.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::{LockError, Result};
use super::liveness::process_start;

const TEMP_TAG: &str = ".lockwright-";
const TEMP_SUFFIX: &str = ".tmp";

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

/// `.<name>.lockwright-<pid>-<n>.tmp` beside the target: the pid lets the next writer
/// tell a crashed writer's leftover from a live writer's temp file.
fn temp_path(target: &Path) -> Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = target.file_name().ok_or_else(|| {
        LockError::invalid_path(
            format!("'{}' names no file to write", target.display()),
            target,
        )
    })?;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    Ok(target.with_file_name(format!(
        ".{}{TEMP_TAG}{}-{n}{TEMP_SUFFIX}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

pub fn write_file_atomic(target: &Path, data: &[u8], options: AtomicWriteOptions) -> Result<()> {
    remove_crashed_temp_files(target);
    let temp = temp_path(target)?;
    let result = write_and_rename(target, &temp, data, options);
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

fn write_and_rename(
    target: &Path,
    temp: &Path,
    data: &[u8],
    options: AtomicWriteOptions,
) -> Result<()> {
    let io_err = |action: &str, path: &Path| {
        let action = action.to_string();
        let path = path.to_path_buf();
        move |e: io::Error| LockError::from_io(&e, &action, &path)
    };
    let existing_mode = existing_permissions(target);
    let mut file = create_new(temp, options.mode.unwrap_or(0o666)).map_err(io_err("open", temp))?;
    if let Some(permissions) = existing_mode {
        file.set_permissions(permissions)
            .map_err(io_err("chmod", temp))?;
    }
    file.write_all(data).map_err(io_err("write", temp))?;
    if options.fsync {
        file.sync_all().map_err(io_err("fsync", temp))?;
    }
    drop(file);
    fs::rename(temp, target).map_err(io_err("rename", target))?;
    if options.fsync {
        sync_dir(target).map_err(io_err("fsync", target))?;
    }
    Ok(())
}

fn existing_permissions(target: &Path) -> Option<fs::Permissions> {
    fs::metadata(target)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.permissions())
}

fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode).custom_flags(libc::O_NOFOLLOW);
    }
    #[cfg(not(unix))]
    let _ = mode;
    options.open(path)
}

#[cfg(unix)]
fn sync_dir(target: &Path) -> io::Result<()> {
    let dir = match target.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_target: &Path) -> io::Result<()> {
    Ok(())
}

/// Temp files of this target whose writer process is gone: what a crash mid-write
/// leaves. A live writer's temp file is left alone.
fn remove_crashed_temp_files(target: &Path) {
    let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
        return;
    };
    let prefix = format!(".{}{TEMP_TAG}", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    }) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file_name
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(TEMP_SUFFIX))
        else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && process_start(pid).is_none() {
            let _ = fs::remove_file(entry.path());
        }
    }
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
    fn a_crashed_writers_temp_file_is_removed_a_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("state.json");
        let dead = dir.path().join(format!(
            ".state.json{TEMP_TAG}{}-0{TEMP_SUFFIX}",
            u32::MAX - 5
        ));
        let live = dir
            .path()
            .join(format!(".state.json{TEMP_TAG}1-0{TEMP_SUFFIX}")); // pid 1 runs
        fs::write(&dead, b"half").unwrap();
        fs::write(&live, b"busy").unwrap();
        write_file_atomic(&target, b"new", AtomicWriteOptions::default()).unwrap();
        assert!(!dead.exists());
        assert!(live.exists());
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
