//! Looking at Redis locks from outside (`status`, `list`) and sweeping what dead
//! holders and waiters left (`cleanup`, `force_release`), in the shapes the file
//! backends return. A lock's "file" is its name.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::config::{validate_name, Keys};
use super::scripts;
use super::Shared;
use crate::engine::error::{code, LockError, Result};
use crate::engine::inspect::{CleanupReport, LockStatus, OwnerStatus};
use crate::engine::owner_record::{LockMode, OwnerRecord};

/// Holders with a live lease are alive; an expired lease or a record without one is
/// litter that the next acquire or `cleanup` removes. Ages use Redis's clock.
pub(crate) async fn status(shared: &Shared, name: &str) -> Result<LockStatus> {
    validate_name(name)?;
    let keys = Keys::new(&shared.conn.config.prefix, name);
    let (now, holders, leases): (u64, Vec<String>, Vec<String>) =
        shared.conn.run(&scripts::INSPECT, &keys, &[]).await?;
    let deadlines: HashMap<&str, u64> = leases
        .chunks(2)
        .filter_map(|pair| match pair {
            [member, deadline] => Some((member.get(2..)?, deadline.parse::<f64>().ok()? as u64)),
            _ => None,
        })
        .collect();
    let owners: Vec<OwnerStatus> = holders
        .chunks(2)
        .filter_map(|pair| match pair {
            [lock_id, json] => Some(owner(
                lock_id,
                json,
                deadlines.get(lock_id.as_str()).copied(),
                now,
            )),
            _ => None,
        })
        .collect();
    let live: Vec<&OwnerStatus> = owners.iter().filter(|o| o.alive).collect();
    let mode = match live.as_slice() {
        [] => None,
        live if live.iter().any(|o| o.record.mode == LockMode::Exclusive) => {
            Some(LockMode::Exclusive)
        }
        _ => Some(LockMode::Shared),
    };
    Ok(LockStatus {
        lockfile: PathBuf::from(name),
        locked: mode.is_some(),
        stale: owners.iter().any(|o| !o.alive),
        mode,
        owners,
    })
}

fn owner(lock_id: &str, json: &str, deadline: Option<u64>, now: u64) -> OwnerStatus {
    // A record we cannot read (another program's keys) still shows as an owner.
    let record = serde_json::from_str::<OwnerRecord>(json).unwrap_or_else(|_| OwnerRecord {
        pid: 0,
        host: String::new(),
        process: "unknown".into(),
        user: String::new(),
        timestamp: 0,
        heartbeat: 0,
        process_start: None,
        origin: Default::default(),
        mode: LockMode::Exclusive,
        lock_id: lock_id.to_string(),
        token: 0,
    });
    OwnerStatus {
        heartbeat_age_ms: now.saturating_sub(record.heartbeat),
        alive: deadline.is_some_and(|d| d > now),
        record,
    }
}

/// Names with holders or waiters (live or not), found by SCAN under the prefix.
async fn names(shared: &Shared, suffixes: &[&str]) -> Result<BTreeSet<String>> {
    let prefix = &shared.conn.config.prefix;
    let mut names = BTreeSet::new();
    for suffix in suffixes {
        for key in shared.conn.scan(&Keys::pattern(prefix, suffix)).await? {
            if let Some(name) = Keys::name_of(prefix, &key, suffix) {
                names.insert(name.to_string());
            }
        }
    }
    Ok(names)
}

pub(crate) async fn list(shared: &Shared) -> Result<Vec<LockStatus>> {
    let mut found = Vec::new();
    for name in names(shared, &["holders", "leases"]).await? {
        found.push(status(shared, &name).await?);
    }
    Ok(found)
}

/// Removes expired leases and dead waiters under the prefix. `removed` names the
/// locks where something went; `kept` counts the others.
pub(crate) async fn cleanup(shared: &Shared, dry_run: bool) -> Result<CleanupReport> {
    let mut report = CleanupReport::default();
    for name in names(shared, &["holders", "leases", "waiters"]).await? {
        if sweep(shared, &name, dry_run, false).await? {
            report.removed.push(PathBuf::from(name));
        } else {
            report.kept += 1;
        }
    }
    Ok(report)
}

/// Breaks one lock. Unlike a kernel lock, a Redis lease can be taken from a live
/// holder, so that needs `force`; its next renewal then reports `ECOMPROMISED`.
/// Returns whether anything was removed. Waiters keep their places.
pub(crate) async fn force_release(shared: &Shared, name: &str, force: bool) -> Result<bool> {
    if !force {
        let status = status(shared, name).await?;
        if status.locked {
            let holders: Vec<String> = status
                .owners
                .iter()
                .filter(|o| o.alive)
                .map(|o| o.record.who())
                .collect();
            return Err(LockError::new(
                code::LOCKED,
                format!(
                    "ELOCKED: the Redis lock '{name}' is held by {} with a live lease; pass force: true to break it",
                    holders.join(", ")
                ),
                Some(Path::new(name)),
            ));
        }
    }
    sweep(shared, name, false, force).await
}

async fn sweep(shared: &Shared, name: &str, dry_run: bool, force: bool) -> Result<bool> {
    let keys = Keys::new(&shared.conn.config.prefix, name);
    let flag = |on: bool| if on { "1" } else { "0" };
    let (holders, waiters): (u64, u64) = shared
        .conn
        .run(&scripts::SWEEP, &keys, &[flag(dry_run), flag(force)])
        .await?;
    Ok(holders + waiters > 0)
}
