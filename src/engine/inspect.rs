//! Looking at locks from outside, whatever backend holds them: what `status`, `list`
//! and the sweeps report. Each backend fills these in (`backend::Backend`).

use std::fs;
use std::path::{Path, PathBuf};

use super::error::{LockError, Result};
use super::lock_path::LOCK_SUFFIX;
use super::owner_record::{LockMode, OwnerRecord};

#[derive(Debug, Clone)]
pub struct OwnerStatus {
    pub record: OwnerRecord,
    pub heartbeat_age_ms: u64,
    pub alive: bool,
}

#[derive(Debug, Clone)]
pub struct LockStatus {
    pub lockfile: PathBuf,
    pub locked: bool,
    /// Locked by holders that are all dead, or not locked but a dead holder's record
    /// (or an empty lock file) is left behind: either way `cleanup` has work here.
    pub stale: bool,
    pub mode: Option<LockMode>,
    pub owners: Vec<OwnerStatus>,
}

#[derive(Debug, Default)]
pub struct CleanupReport {
    /// Unlinked: empty lock files, dead readers' records, stale lock directories.
    pub removed: Vec<PathBuf>,
    /// Dead holders' records rewritten as releases; the files stay, with their token.
    pub cleared: Vec<PathBuf>,
    pub kept: usize,
}

/// Entries of `dir` named `*.lock` whose type passes `kind`, sorted.
pub fn lock_entries(dir: &Path, kind: impl Fn(&fs::FileType) -> bool) -> Result<Vec<PathBuf>> {
    let entries = fs::read_dir(dir).map_err(|e| LockError::from_io(&e, "scandir", dir))?;
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().map(|t| kind(&t)).unwrap_or(false))
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(LOCK_SUFFIX))
        .collect();
    found.sort();
    Ok(found)
}
