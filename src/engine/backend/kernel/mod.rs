//! The kernel backend: an OS advisory lock (`flock` on Unix, `LockFileEx` on
//! Windows, through std's `File::lock` family) on `<target>.lock`. The kernel drops
//! the lock when its holder dies, so a crash never leaves a lock that blocks others.
//!
//! - `grant.rs`: taking the lock, the owner record, heartbeats and release;
//! - `readers.rs`: shared holders' records and the writer gate beside the lock file;
//! - `observe.rs`: who holds a lock, found without taking it (`lock_table.rs` reads the
//!   kernel's own table);
//! - `sweep.rs`: clearing what dead holders left;
//! - `lock_file.rs`: opening lock files, identity checks, record I/O, idle reuse.
//!
//! Every file is opened through `safe_fs`: no symlinks, no FIFOs, bounded reads.

mod grant;
pub mod lock_file;
mod lock_table;
mod observe;
mod readers;
mod sweep;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use crate::engine::backend::traits::{Backend, Contend};
use crate::engine::error::{code, LockError, Result};
use crate::engine::inspect::{lock_entries, CleanupReport, LockStatus, OwnerStatus};
use crate::engine::liveness::{heartbeat_age_ms, holder_alive};
use crate::engine::owner_record::{now_ms, Leftover, LockMode, OwnerRecord};
use crate::engine::process::ProcessIdentity;
use crate::engine::safe_fs;

pub use grant::{Contender, KernelLock};
use observe::Observed;
pub use observe::{observe, read_holders, Holding};
use readers::{clear_dead_readers, reader_owners, sweep_legacy};
use sweep::{leftover, sweep_unheld, Swept};

/// Kernel locks; `stale` judges holders on other hosts by their heartbeat.
#[derive(Debug)]
pub struct KernelBackend {
    pub stale_ms: u64,
}

impl Backend for KernelBackend {
    fn contender(&self, lock: &Path, mode: LockMode) -> Result<Box<dyn Contend>> {
        Ok(Box::new(Contender::new(lock.to_path_buf(), mode)))
    }

    fn holders(&self, lock: &Path) -> Vec<OwnerRecord> {
        read_holders(lock)
    }

    fn status(&self, lock: &Path) -> Result<LockStatus> {
        status(lock, self.stale_ms)
    }

    fn list(&self, dir: &Path) -> Result<Vec<LockStatus>> {
        list(dir, self.stale_ms)
    }

    fn cleanup(&self, dir: &Path, dry_run: bool) -> Result<CleanupReport> {
        cleanup(dir, dry_run)
    }

    fn force_release(&self, lock: &Path, target: &Path, _force: bool) -> Result<bool> {
        force_release(lock, target, self.stale_ms)
    }
}

fn status(lockfile: &Path, stale_ms: u64) -> Result<LockStatus> {
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
            let mut owners: Vec<OwnerStatus> = reader_owners(lockfile, false)
                .into_iter()
                .map(|r| judge(r, false))
                .collect();
            if let Leftover::DeadHolder(record) = leftover(lockfile) {
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
                owners = pids
                    .iter()
                    .filter_map(|&pid| unrecorded_holder(pid, holding))
                    .collect();
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

fn list(dir: &Path, stale_ms: u64) -> Result<Vec<LockStatus>> {
    lock_files(dir)?
        .iter()
        .map(|f| status(f, stale_ms))
        .collect()
}

/// Clears the records of holders that died holding a lock and removes dead readers'
/// records. Keeps held locks, every lock file itself (see `sweep_unheld`: unlinking
/// one that another process has open splits the lock in two), and any `*.lock` file
/// whose content is not ours.
fn cleanup(dir: &Path, dry_run: bool) -> Result<CleanupReport> {
    let mut report = CleanupReport::default();
    for lockfile in lock_files(dir)? {
        let dead = clear_dead_readers(&lockfile, dry_run);
        report.removed.extend(dead.removed);
        report.removed.extend(sweep_legacy(&lockfile, dry_run));
        match sweep_unheld(&lockfile, dry_run)? {
            Swept::Cleared => report.cleared.push(lockfile),
            Swept::Kept if dead.cleared => report.cleared.push(lockfile),
            Swept::Kept => report.kept += 1,
        }
    }
    Ok(report)
}

/// Breaks one lock. A kernel lock held by a live process cannot be broken by anyone
/// but that process, `force` or not: we say so rather than pretend. A lock nobody
/// holds has its leftovers swept (see `sweep_unheld`). Returns whether anything changed.
fn force_release(lockfile: &Path, target: &Path, stale_ms: u64) -> Result<bool> {
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
    let dead = clear_dead_readers(lockfile, false);
    let legacy = sweep_legacy(lockfile, false);
    let swept = sweep_unheld(lockfile, false)?;
    Ok(swept != Swept::Kept || dead.cleared || !dead.removed.is_empty() || !legacy.is_empty())
}
