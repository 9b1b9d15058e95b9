//! Shared holders' owner records and the writer gate. On Linux both live in the lock
//! file itself (`slots.rs`, open-file-description byte locks), so a lock is one entry
//! on disk; elsewhere in files beside it (`files.rs`). Both offer the same functions.
//! The files layout is compiled and tested on Linux too.

// On Linux, the layout an earlier lockwright left beside lock files, for sweeps.
#[cfg_attr(target_os = "linux", allow(dead_code))]
pub(super) mod files;
#[cfg(target_os = "linux")]
pub(super) mod slots;

#[cfg(not(target_os = "linux"))]
pub(super) use files::*;
#[cfg(target_os = "linux")]
pub(super) use slots::*;

/// What the files layout left beside `lockfile` when this process keeps shared
/// holders in the lock file: dead readers' records, their directory once empty, and
/// a writer-waiting file no writer holds. Removed (unless `dry_run`) and listed, so a
/// lock is one entry on disk again after a sweep.
#[cfg(target_os = "linux")]
pub(super) fn sweep_legacy(lockfile: &std::path::Path, dry_run: bool) -> Vec<std::path::PathBuf> {
    files::sweep_leftovers(lockfile, dry_run)
}

#[cfg(not(target_os = "linux"))]
pub(super) fn sweep_legacy(_lockfile: &std::path::Path, _dry_run: bool) -> Vec<std::path::PathBuf> {
    Vec::new()
}
