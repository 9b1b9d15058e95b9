//! Looking at locks from outside: who holds one and whether they are alive
//! (`status`, `list`), and sweeping away what dead holders left (`cleanup`,
//! `force_release`). Works on any lock file, whoever holds it.

use std::fs;
use std::path::{Path, PathBuf};

use super::error::{code, LockError, Result};
use super::kernel_lock::{
    self, dead_reader_records, observe, Observed, read_holders, sweep_unheld, Holding, Swept,
};
use super::lock_table;
use super::safe_fs;
use super::liveness::{heartbeat_age_ms, holder_alive};
use super::lock_path::LOCK_SUFFIX;
use super::mkdir_lock;
use super::owner_record::{now_ms, LockMode, Leftover, OwnerRecord};
use super::process::ProcessIdentity;

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

pub fn status(lockfile: &Path, stale_ms: u64) -> Result<LockStatus> {
    let Observed { holding, pids, .. } = observe(lockfile)?;
    let now = now_ms();
    let judge = |record: OwnerRecord, alive: bool| OwnerStatus {
        heartbeat_age_ms: heartbeat_age_ms(&record, now),
        alive,
        record,
    };
    let (mode, owners, litter) = match holding {
        Holding::Missing => (None, Vec::new(), false),
        Holding::Free => {
            // Nobody holds the kernel lock, so every record here is a dead holder's.
            let mut owners: Vec<OwnerStatus> = dead_reader_records(lockfile)
                .into_iter()
                .map(|r| judge(r, false))
                .collect();
            if let Leftover::DeadHolder(record) = kernel_lock::leftover(lockfile) {
                owners.push(judge(record, false));
            }
            let litter = !owners.is_empty();
            (None, owners, litter)
        }
        Holding::Shared | Holding::Exclusive => {
            let mut owners: Vec<OwnerStatus> = read_holders(lockfile)
                .into_iter()
                .map(|r| {
                    let alive = holder_alive(&r, stale_ms, now);
                    judge(r, alive)
                })
                .collect();
            if owners.is_empty() {
                // Held, but no record says by whom: a holder that could not write one
                // (read access is enough for a kernel lock) or `flock(1)`. Name it by
                // what the kernel's table says.
                owners = pids.iter().filter_map(|&pid| unrecorded_holder(pid, holding)).collect();
            }
            let mode = if holding == Holding::Shared {
                LockMode::Shared
            } else {
                LockMode::Exclusive
            };
            (Some(mode), owners, false)
        }
    };
    let locked = mode.is_some();
    let stale = litter || (locked && !owners.is_empty() && owners.iter().all(|o| !o.alive));
    Ok(LockStatus {
        lockfile: lockfile.to_path_buf(),
        locked,
        stale,
        mode,
        owners,
    })
}

/// An owner entry for a process that holds a lock without a record of its own.
fn unrecorded_holder(pid: i32, holding: Holding) -> Option<OwnerStatus> {
    let (uid, command) = lock_table::process_owner(pid)?;
    let now = now_ms();
    let identity = ProcessIdentity::get();
    Some(OwnerStatus {
        record: OwnerRecord {
            pid: pid as u32,
            host: identity.host.clone(),
            process: command,
            user: safe_fs::user_name(uid),
            timestamp: now,
            heartbeat: now,
            process_start: None,
            origin: Default::default(),
            mode: if holding == Holding::Shared {
                LockMode::Shared
            } else {
                LockMode::Exclusive
            },
            lock_id: String::new(),
            token: 0,
        },
        heartbeat_age_ms: 0,
        alive: true,
    })
}

/// The lock files in `dir` (`*.lock` regular files; not symlinks, not our side files).
pub fn lock_files(dir: &Path) -> Result<Vec<PathBuf>> {
    lock_entries(dir, |t| t.is_file())
}

/// Entries of `dir` named `*.lock` whose type passes `kind`, sorted.
fn lock_entries(dir: &Path, kind: impl Fn(&fs::FileType) -> bool) -> Result<Vec<PathBuf>> {
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

/// `list` for mkdir locks: every `*.lock` directory in `dir`.
pub fn mkdir_list(dir: &Path, stale_ms: u64) -> Result<Vec<LockStatus>> {
    lock_entries(dir, |t| t.is_dir())?
        .iter()
        .map(|d| mkdir_status(d, stale_ms))
        .collect()
}

pub fn list(dir: &Path, stale_ms: u64) -> Result<Vec<LockStatus>> {
    lock_files(dir)?
        .iter()
        .map(|f| status(f, stale_ms))
        .collect()
}

#[derive(Debug, Default)]
pub struct CleanupReport {
    /// Unlinked: empty lock files, dead readers' records, stale lock directories.
    pub removed: Vec<PathBuf>,
    /// Dead holders' records rewritten as releases; the files stay, with their token.
    pub cleared: Vec<PathBuf>,
    pub kept: usize,
}

/// Clears the records of holders that died holding a lock and removes dead readers'
/// records. Keeps held locks, every lock file itself (see `sweep_unheld`: unlinking
/// one that another process has open splits the lock in two), and any `*.lock` file
/// whose content is not ours.
pub fn cleanup(dir: &Path, dry_run: bool) -> Result<CleanupReport> {
    let mut report = CleanupReport::default();
    for lockfile in lock_files(dir)? {
        report
            .removed
            .extend(kernel_lock::remove_dead_reader_records(&lockfile, dry_run));
        match sweep_unheld(&lockfile, dry_run)? {
            Swept::Cleared => report.cleared.push(lockfile),
            Swept::Kept => report.kept += 1,
        }
    }
    Ok(report)
}

/// Breaks one lock. A kernel lock held by a live process cannot be broken by anyone
/// but that process, `force` or not: we say so rather than pretend. A lock nobody
/// holds has its leftovers swept (see `sweep_unheld`). Returns whether anything changed.
pub fn force_release(lockfile: &Path, target: &Path, stale_ms: u64) -> Result<bool> {
    let status = status(lockfile, stale_ms)?;
    if status.locked {
        let holder = status
            .owners
            .iter()
            .map(|o| o.record.who())
            .collect::<Vec<_>>()
            .join(", ");
        let holder = if holder.is_empty() {
            "another process".to_string()
        } else {
            holder
        };
        return Err(LockError::new(
            code::LOCKED,
            format!(
                "{} is locked by {holder}. A kernel lock held by a live process cannot be broken from outside: \
                 it ends when that process releases it or exits",
                target.display()
            ),
            Some(target),
        ));
    }
    let readers = kernel_lock::remove_dead_reader_records(lockfile, false);
    let swept = sweep_unheld(lockfile, false)?;
    Ok(swept != Swept::Kept || !readers.is_empty())
}

/// `status` for proper-lockfile's protocol: the directory exists and is fresh.
pub fn mkdir_status(dir: &Path, stale_ms: u64) -> Result<LockStatus> {
    let free = || LockStatus {
        lockfile: dir.to_path_buf(),
        locked: false,
        stale: false,
        mode: None,
        owners: Vec::new(),
    };
    let meta = match fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => meta,
        // A kernel lock file or a stranger's file: say which (never follow a symlink).
        Ok(meta) => return mkdir_lock::not_a_lock_dir(dir, &meta).map_or_else(|| Ok(free()), Err),
        Err(_) => return Ok(free()),
    };
    let stale = mkdir_lock::is_stale(dir, &meta, stale_ms);
    let age = mkdir_lock::mtime_age_ms(&meta);
    let owners = mkdir_lock::current_owner(dir)
        .map(|(record, _)| {
            let alive = !stale && holder_alive(&record, stale_ms, now_ms());
            vec![OwnerStatus {
                record,
                heartbeat_age_ms: age,
                alive,
            }]
        })
        .unwrap_or_default();
    Ok(LockStatus {
        lockfile: dir.to_path_buf(),
        locked: !stale,
        stale,
        mode: Some(LockMode::Exclusive),
        owners,
    })
}

/// `cleanup` for mkdir locks: removes the stale lock directories in `dir`.
pub fn mkdir_cleanup(dir: &Path, stale_ms: u64, dry_run: bool) -> Result<CleanupReport> {
    let mut report = CleanupReport::default();
    let lock_dirs = lock_entries(dir, |t| t.is_dir())?;
    for lock_dir in lock_dirs {
        if mkdir_lock::remove_if_stale(&lock_dir, stale_ms, false, dry_run)? {
            report.removed.push(lock_dir);
        } else {
            report.kept += 1;
        }
    }
    Ok(report)
}

/// `force_release` for mkdir locks: a stale one is removed; a live one only with
/// `force`, since a directory, unlike a kernel lock, can be taken from its holder.
pub fn mkdir_force_release(dir: &Path, target: &Path, stale_ms: u64, force: bool) -> Result<bool> {
    let status = mkdir_status(dir, stale_ms)?;
    if status.locked && !force {
        let holder = status.owners.first().map(|o| o.record.who());
        return Err(LockError::new(
            code::LOCKED,
            format!(
                "{} is locked by {} and the holder is alive; pass force: true to break it anyway",
                target.display(),
                holder.unwrap_or_else(|| "another process".into())
            ),
            Some(target),
        ));
    }
    mkdir_lock::remove_if_stale(dir, stale_ms, force, false)
}
