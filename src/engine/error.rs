//! The one error type the engine returns. Every error has a stable string `code`
//! (what JavaScript sees as `err.code`) and, where one is involved, the path.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Codes the engine itself decides on. OS failures keep their errno name instead
/// (`ENOENT`, `EACCES`, ...), see [`LockError::from_io`].
pub mod code {
    pub const LOCKED: &str = "ELOCKED";
    pub const TIMEOUT: &str = "ETIMEOUT";
    pub const ABORTED: &str = "ABORT_ERR";
    pub const RELEASED: &str = "ERELEASED";
    pub const NOT_ACQUIRED: &str = "ENOTACQUIRED";
    pub const INVALID: &str = "EINVAL";
    pub const DEADLOCK: &str = "EDEADLK";
    pub const COMPROMISED: &str = "ECOMPROMISED";
    /// A lock server (Redis) could not be reached in time.
    pub const UNAVAILABLE: &str = "EUNAVAILABLE";
    /// A bug in lockwright (a Rust panic), reported instead of aborting Node.
    pub const PANIC: &str = "EPANIC";
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockError {
    pub code: String,
    pub message: String,
    pub path: Option<PathBuf>,
}

impl LockError {
    pub fn new(code: &str, message: impl Into<String>, path: Option<&Path>) -> Self {
        LockError {
            code: code.to_string(),
            message: message.into(),
            path: path.map(Path::to_path_buf),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(code::INVALID, message, None)
    }

    pub fn invalid_path(message: impl Into<String>, path: &Path) -> Self {
        Self::new(code::INVALID, message, Some(path))
    }

    /// Keeps the OS error's own name as the code, so callers can branch on
    /// `ENOENT`/`EACCES` exactly as they do with Node's `fs` errors.
    pub fn from_io(err: &io::Error, action: &str, path: &Path) -> Self {
        if let Some(found) = super::safe_fs::as_not_a_lock_file(err) {
            return LockError::not_a_lock_file(path, found.found);
        }
        let code = errno_name(err).unwrap_or("EIO");
        let mut message = format!("{code}: {err}, {action} '{}'", path.display());
        if code == "EACCES" {
            // Another user's lock file: say whose, so the fix (a shared group, or a
            // lock directory of one's own) is plain.
            if let Some(owner) = super::safe_fs::owner_of(path) {
                message.push_str(&format!(" (the file belongs to {owner})"));
            }
        }
        LockError::new(code, message, Some(path))
    }

    /// `EEXIST`: something that is not a lock file sits where a lock file would be.
    /// Nothing was written to it; the way out is another lock file path.
    pub fn not_a_lock_file(path: &Path, found: &str) -> Self {
        LockError::new(
            "EEXIST",
            format!(
                "EEXIST: '{}' exists and is not a lock file ({found}); it was left untouched. \
                 Lock through another file with the `lockDir` or `lockfilePath` option",
                path.display()
            ),
            Some(path),
        )
    }

    /// `EPANIC`: a bug in lockwright panicked while `doing` something. The panic's
    /// own message is kept when it has one.
    pub fn panicked(doing: &str, payload: &(dyn std::any::Any + Send)) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        LockError::new(
            code::PANIC,
            format!("lockwright: internal error while {doing}: {message}"),
            None,
        )
    }

    /// Runs `work`, turning a panic inside it into `panicked`.
    pub fn catch_panic<T>(doing: &str, work: impl FnOnce() -> Result<T>) -> Result<T> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
            .unwrap_or_else(|payload| Err(LockError::panicked(doing, payload.as_ref())))
    }

    /// Names the lock `path` a request was for, when the error does not name a path
    /// yet (a bad option, say), so the caller sees which of its locks failed.
    pub fn about(mut self, path: &str) -> Self {
        if self.path.is_none() {
            self.message = format!("{}, for the lock on '{path}'", self.message);
            self.path = Some(path.into());
        }
        self
    }

    pub fn is(&self, code: &str) -> bool {
        self.code == code
    }
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LockError {}

pub type Result<T> = std::result::Result<T, LockError>;

/// The errno's name; an error that lost its errno on the way (a library's wrapper
/// that adds the path) is named by its kind.
#[cfg(unix)]
fn errno_name(err: &io::Error) -> Option<&'static str> {
    let Some(raw) = err.raw_os_error() else {
        return kind_name(err.kind());
    };
    // nix's Errno Debug output is the symbolic name ("ENOENT").
    let name = format!("{:?}", nix::errno::Errno::from_raw(raw));
    KNOWN_ERRNO_NAMES
        .iter()
        .copied()
        .find(|known| *known == name)
}

#[cfg(not(unix))]
fn errno_name(err: &io::Error) -> Option<&'static str> {
    kind_name(err.kind())
}

fn kind_name(kind: io::ErrorKind) -> Option<&'static str> {
    use io::ErrorKind::*;
    Some(match kind {
        NotFound => "ENOENT",
        PermissionDenied => "EACCES",
        AlreadyExists => "EEXIST",
        IsADirectory => "EISDIR",
        NotADirectory => "ENOTDIR",
        InvalidFilename => "ENAMETOOLONG",
        ReadOnlyFilesystem => "EROFS",
        _ => return None,
    })
}

/// The errno names we hand to JavaScript as `'static` codes; anything else is `EIO`.
#[cfg(unix)]
const KNOWN_ERRNO_NAMES: &[&str] = &[
    "ENOENT",
    "EACCES",
    "EPERM",
    "EEXIST",
    "EISDIR",
    "ENOTDIR",
    "ENAMETOOLONG",
    "ELOOP",
    "EROFS",
    "ENOSPC",
    "EMFILE",
    "ENFILE",
    "EBUSY",
    "EINVAL",
    "EIO",
    "ENOLCK",
    "EDQUOT",
    "EXDEV",
    "ENOTEMPTY",
    "EAGAIN",
    "EINTR",
    "ESTALE",
    "EBADF",
    "ENOMEM",
    "EFBIG",
];

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn os_errors_keep_their_errno_name() {
        let err = io::Error::from_raw_os_error(libc::ENAMETOOLONG);
        let lock_err = LockError::from_io(&err, "open", Path::new("/x"));
        assert_eq!(lock_err.code, "ENAMETOOLONG");
        assert!(lock_err.message.contains("'/x'"));
        assert_eq!(lock_err.path.as_deref(), Some(Path::new("/x")));
    }
}
