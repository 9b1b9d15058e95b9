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
    if let Some(real) = without_symlinks(target) {
        return real;
    }
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

/// An absolute `path` in which no component is a symlink is its own real path once
/// its `.` and `..` are folded: one `openat2(RESOLVE_NO_SYMLINKS)` proves there is
/// none, where `realpath(3)` reads each component's link, a call per component. Not a
/// cache: nothing remembered can go stale. `None` sends the caller to `realpath(3)`:
/// a symlink on the way (`ELOOP`), a missing file, or a kernel or sandbox without
/// `openat2` (`ENOSYS`, `EPERM`), after which it is not tried again.
#[cfg(target_os = "linux")]
fn without_symlinks(path: &Path) -> Option<PathBuf> {
    use std::sync::atomic::{AtomicBool, Ordering};

    use nix::errno::Errno;
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag, AT_FDCWD};

    static UNAVAILABLE: AtomicBool = AtomicBool::new(false);
    if !path.is_absolute() || UNAVAILABLE.load(Ordering::Relaxed) {
        return None;
    }
    // O_PATH opens nothing (no FIFO blocks, no device wakes), as realpath(3) reads
    // nothing; no O_NOFOLLOW, so a symlink as the last component fails too.
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS);
    match openat2(AT_FDCWD, path, how) {
        Ok(_closed_on_drop) => Some(fold_dots(path)),
        Err(Errno::ENOSYS | Errno::EPERM) => {
            UNAVAILABLE.store(true, Ordering::Relaxed);
            None
        }
        Err(_) => None,
    }
}

#[cfg(not(target_os = "linux"))]
fn without_symlinks(_path: &Path) -> Option<PathBuf> {
    None
}

/// `.` dropped and `..` taken as the parent: what `realpath(3)` makes of them when
/// no component is a symlink, each `..` then being the directory before it.
#[cfg(target_os = "linux")]
fn fold_dots(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut folded = PathBuf::with_capacity(path.as_os_str().len());
    for component in path.components() {
        match component {
            Component::ParentDir => {
                folded.pop();
            }
            Component::CurDir => {}
            other => folded.push(other),
        }
    }
    folded
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

    /// Every spelling resolves as `realpath(3)` resolves it now, however the links and
    /// names on the way changed since the last resolve: nothing may be remembered.
    #[cfg(unix)]
    #[test]
    fn resolves_as_realpath_does_after_links_and_names_change() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let at = |p: &str| root.join(p);
        for sub in ["a/deep", "b/deep", "c"] {
            std::fs::create_dir_all(at(sub)).unwrap();
        }
        for file in ["a/deep/f.json", "b/deep/f.json", "c/f.json"] {
            std::fs::write(at(file), "{}").unwrap();
        }
        symlink(at("a"), at("via")).unwrap();
        symlink("deep/f.json", at("a/link.json")).unwrap();
        let spellings = [
            "a/deep/f.json",
            "a/./deep//f.json",
            "a/deep/../deep/f.json",
            "c/../a/deep/f.json",
            "via/deep/f.json",
            "via/../c/f.json", // `..` after a link is the link target's parent
            "a/link.json",
            "via/link.json",
            "a/deep/new.json",
            "via/deep/new.json",
        ];
        let check = |when: &str| {
            for spelling in spellings {
                let path = at(spelling);
                // A file not there yet: its directory's real path and its name.
                let expected = std::fs::canonicalize(&path).unwrap_or_else(|_| {
                    let dir = std::fs::canonicalize(path.parent().unwrap()).unwrap();
                    dir.join(path.file_name().unwrap())
                });
                assert_eq!(real_target(&path), expected, "{spelling} {when}");
            }
        };
        check("at first");
        // A symlink retargeted to another directory holding a file of the same name.
        std::fs::remove_file(at("via")).unwrap();
        symlink(at("b"), at("via")).unwrap();
        check("after the link moved to b");
        // The target renamed, and another file renamed into its place (atomic write).
        std::fs::rename(at("b/deep/f.json"), at("b/deep/g.json")).unwrap();
        std::fs::write(at("b/deep/next.json"), "{}").unwrap();
        std::fs::rename(at("b/deep/next.json"), at("b/deep/f.json")).unwrap();
        check("after the target was replaced");
        // A directory on the way renamed, and a link left at its old name.
        std::fs::rename(at("b/deep"), at("b/moved")).unwrap();
        symlink("moved", at("b/deep")).unwrap();
        check("after the directory moved behind a link");
        // A directory on the way replaced by a link to another directory.
        std::fs::rename(at("a/deep"), at("a/gone")).unwrap();
        symlink(at("b/moved"), at("a/deep")).unwrap();
        check("after a directory became a link");
    }

    /// Symlink-free paths take the one-call way; any link on the way takes realpath(3).
    #[cfg(target_os = "linux")]
    #[test]
    fn only_symlink_free_paths_skip_realpath() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(root.join("d")).unwrap();
        std::fs::write(root.join("d/f.json"), "{}").unwrap();
        std::os::unix::fs::symlink(root.join("d"), root.join("l")).unwrap();
        std::os::unix::fs::symlink("f.json", root.join("d/l.json")).unwrap();
        let plain = root.join("d/./../d/f.json");
        assert_eq!(without_symlinks(&plain), Some(root.join("d/f.json")));
        assert_eq!(without_symlinks(&root.join("l/f.json")), None);
        assert_eq!(without_symlinks(&root.join("d/l.json")), None);
        assert_eq!(without_symlinks(&root.join("d/missing.json")), None);
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
