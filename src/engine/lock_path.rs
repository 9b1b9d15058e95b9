//! Where the lock file for a target lives: `<target>.lock` beside the target, or
//! `<lockDir>/<basename>.lock` when a lock directory is configured, or exactly the
//! `lockfilePath` a caller names.

use std::path::{Path, PathBuf};

use super::error::{LockError, Result};

pub const LOCK_SUFFIX: &str = ".lock";

/// Rejects what no filesystem call could take. Over-long paths are left to the OS,
/// which answers `ENAMETOOLONG` with the very limit of the filesystem in use.
pub fn validate_path(path: &str, what: &str) -> Result<PathBuf> {
    if path.is_empty() {
        return Err(LockError::invalid(format!(
            "{what} must be a non-empty string"
        )));
    }
    if path.contains('\0') {
        return Err(LockError::invalid(format!(
            "{what} must not contain a NUL byte: {:?}",
            path.replace('\0', "\\0")
        )));
    }
    // `absolute` is lexical: it neither requires the target to exist nor follows links,
    // so `a/b` and `/cwd/a/b` key the same in-process queue.
    std::path::absolute(path).map_err(|e| LockError::from_io(&e, "resolve", Path::new(path)))
}

/// `target` with its symlinks resolved, so a link and the file it names share one
/// lock (proper-lockfile's `realpath`). A target that does not exist yet is its
/// directory's real path joined with its name; anything unresolvable stays as it
/// is, and the open of its lock file reports the error.
pub fn real_target(target: &Path) -> PathBuf {
    if let Ok(real) = canonicalize(target) {
        return plain(real);
    }
    match (target.parent(), target.file_name()) {
        (Some(dir), Some(name)) => canonicalize(dir)
            .map(|dir| plain(dir).join(name))
            .unwrap_or_else(|_| target.to_path_buf()),
        _ => target.to_path_buf(),
    }
}

/// `realpath(3)`. Not the quicker `/proc/self/fd` link of an `O_PATH` open: a target
/// replaced by a rename (an atomic write) between the open and the read names the old,
/// now nameless inode, "`tasks.json (deleted)`", and the lock file would be another.
fn canonicalize(path: &Path) -> std::io::Result<PathBuf> {
    std::fs::canonicalize(path)
}

/// Windows' canonical form of a drive path is `\\?\C:\…`; callers wrote, and should
/// read back, `C:\…`.
#[cfg(windows)]
fn plain(path: PathBuf) -> PathBuf {
    match path.to_str().and_then(|p| p.strip_prefix(r"\\?\")) {
        Some(rest) if rest.as_bytes().get(1) == Some(&b':') => PathBuf::from(rest),
        _ => path,
    }
}

#[cfg(not(windows))]
fn plain(path: PathBuf) -> PathBuf {
    path
}

/// Resolves the lock file for `target`.
pub fn lockfile_for(
    target: &Path,
    lock_dir: Option<&Path>,
    lockfile_path: Option<&Path>,
) -> Result<PathBuf> {
    if let Some(explicit) = lockfile_path {
        return Ok(explicit.to_path_buf());
    }
    let Some(name) = target.file_name() else {
        return Err(LockError::invalid_path(
            format!("'{}' names no file to lock", target.display()),
            target,
        ));
    };
    let mut file_name = name.to_os_string();
    file_name.push(LOCK_SUFFIX);
    Ok(match lock_dir {
        Some(dir) => dir.join(file_name),
        None => target.with_file_name(file_name),
    })
}

/// `path` with `suffix` appended to its last component: `x.lock` -> `x.lock.readers`.
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_lock_file_sits_beside_the_target() {
        let target = validate_path("/data/tasks.json", "path").unwrap();
        assert_eq!(
            lockfile_for(&target, None, None).unwrap(),
            Path::new("/data/tasks.json.lock")
        );
    }

    #[test]
    fn lock_dir_collects_lock_files_by_basename() {
        let target = validate_path("/data/tasks.json", "path").unwrap();
        let got = lockfile_for(&target, Some(Path::new("/data/.flowforge/.locks")), None).unwrap();
        assert_eq!(got, Path::new("/data/.flowforge/.locks/tasks.json.lock"));
    }

    #[test]
    fn explicit_lockfile_path_wins() {
        let target = validate_path("/data/tasks.json", "path").unwrap();
        let got = lockfile_for(
            &target,
            Some(Path::new("/elsewhere")),
            Some(Path::new("/x/y.lock")),
        )
        .unwrap();
        assert_eq!(got, Path::new("/x/y.lock"));
    }

    #[test]
    fn relative_paths_become_absolute() {
        let target = validate_path("tasks.json", "path").unwrap();
        assert!(target.is_absolute());
        assert!(target.ends_with("tasks.json"));
    }

    #[test]
    fn empty_and_nul_paths_are_rejected() {
        assert_eq!(validate_path("", "path").unwrap_err().code, "EINVAL");
        let err = validate_path("a\0b", "path").unwrap_err();
        assert_eq!(err.code, "EINVAL");
        assert!(err.message.contains("NUL"));
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_resolves_to_its_target_and_a_missing_file_to_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let real_dir = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::write(dir.path().join("state.json"), "{}").unwrap();
        std::os::unix::fs::symlink("state.json", dir.path().join("link.json")).unwrap();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("via")).unwrap();
        assert_eq!(
            real_target(&dir.path().join("link.json")),
            real_dir.join("state.json")
        );
        assert_eq!(
            real_target(&dir.path().join("via/new.json")),
            real_dir.join("new.json")
        );
        let nowhere = dir.path().join("missing/x.json");
        assert_eq!(real_target(&nowhere), nowhere);
    }

    #[test]
    fn root_names_no_file() {
        let target = validate_path("/", "path").unwrap();
        assert_eq!(
            lockfile_for(&target, None, None).unwrap_err().code,
            "EINVAL"
        );
    }
}
