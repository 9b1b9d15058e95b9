//! What crosses to JavaScript as plain data: grants, statuses, metrics.

use napi::bindgen_prelude::{FnArgs, Function, Unknown};
use napi_derive::napi;

use crate::engine::inspect::{LockStatus, OwnerStatus};
use crate::engine::metrics::{Distribution, MetricsSnapshot};
use crate::engine::{self, code, LockGrant, LockManager};

/// A granted lock, as plain data; `lib/lock.js` wraps it in a `Lock`.
#[napi(object)]
pub struct NativeGrant {
    /// Process-unique number that `release` takes. A double, not a u32: a busy
    /// process passes 2^32 grants in hours, and doubles are exact to 2^53.
    pub id: f64,
    pub path: String,
    pub lockfile_path: String,
    pub mode: String,
    /// Fencing token: strictly increasing for exclusive grants of one lock file.
    pub token: i64,
    /// Unique per grant; also written in the lock file's owner record.
    pub lock_id: String,
    /// Milliseconds since the epoch when the lock was granted.
    pub acquired_at: f64,
}

/// What `makeGrant` (from `lib/lock-manager.js`) takes: id, token, acquiredAt, lockId, path,
/// lockfilePath and whether the grant is shared.
pub(crate) type GrantParts = FnArgs<(f64, f64, f64, String, String, String, bool)>;

/// Builds an immediate grant with `makeGrant`. One call with plain values costs about
/// a third of a native object with seven named properties (napi defines each name
/// anew), and this is on every uncontended acquire. Waits, which are slow anyway,
/// still resolve to a `NativeGrant`.
pub(crate) fn grant_value<'env>(
    manager: &LockManager,
    make_grant: &Function<'env, GrantParts, Unknown<'env>>,
    grant: LockGrant,
) -> napi::Result<Unknown<'env>> {
    let id = grant.id;
    let made = make_grant.call(FnArgs::from((
        grant.id as f64,
        grant.token as f64,
        grant.acquired_at as f64,
        grant.lock_id,
        grant.target.to_string_lossy().into_owned(),
        grant.lockfile.to_string_lossy().into_owned(),
        grant.mode == engine::LockMode::Shared,
    )));
    // No Lock object will ever release it: let go now rather than hold it forever.
    if made.is_err() {
        let _ = manager.release(id, code::NOT_ACQUIRED);
    }
    made
}

impl From<LockGrant> for NativeGrant {
    fn from(grant: LockGrant) -> Self {
        NativeGrant {
            id: grant.id as f64,
            path: grant.target.to_string_lossy().into_owned(),
            lockfile_path: grant.lockfile.to_string_lossy().into_owned(),
            mode: grant.mode.as_str().to_string(),
            token: grant.token as i64,
            lock_id: grant.lock_id,
            acquired_at: grant.acquired_at as f64,
        }
    }
}

/// One holder of a lock, as `status()` reports it.
#[napi(object)]
pub struct NativeOwner {
    pub pid: u32,
    pub host: String,
    pub process: String,
    pub user: String,
    pub mode: String,
    pub lock_id: String,
    pub token: i64,
    /// When the lock was granted (ms since the epoch).
    pub since: f64,
    pub heartbeat_age_ms: f64,
    /// On this host: the PID runs and is the same process. Elsewhere: a fresh heartbeat.
    pub alive: bool,
}

impl From<OwnerStatus> for NativeOwner {
    fn from(o: OwnerStatus) -> Self {
        let r = o.record;
        NativeOwner {
            pid: r.pid,
            host: r.host,
            process: r.process,
            user: r.user,
            mode: r.mode.as_str().into(),
            lock_id: r.lock_id,
            token: r.token as i64,
            since: r.timestamp as f64,
            heartbeat_age_ms: o.heartbeat_age_ms as f64,
            alive: o.alive,
        }
    }
}

#[napi(object)]
pub struct NativeStatus {
    pub locked: bool,
    pub stale: bool,
    pub mode: Option<String>,
    pub lockfile_path: String,
    pub owners: Vec<NativeOwner>,
}

impl From<LockStatus> for NativeStatus {
    fn from(s: LockStatus) -> Self {
        NativeStatus {
            locked: s.locked,
            stale: s.stale,
            mode: s.mode.map(|m| m.as_str().into()),
            lockfile_path: s.lockfile.to_string_lossy().into_owned(),
            owners: s.owners.into_iter().map(Into::into).collect(),
        }
    }
}

#[napi(object)]
pub struct NativeCleanup {
    /// Unlinked: empty lock files, dead readers' records, stale lock directories.
    pub removed: Vec<String>,
    /// Dead holders' records cleared; the lock files stay, keeping their token.
    pub cleared: Vec<String>,
    pub kept: u32,
}

/// A time distribution in milliseconds.
#[napi(object)]
pub struct NativeDistribution {
    pub count: f64,
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl From<Distribution> for NativeDistribution {
    fn from(d: Distribution) -> Self {
        NativeDistribution {
            count: d.count as f64,
            mean: d.mean,
            p50: d.p50,
            p95: d.p95,
            p99: d.p99,
            max: d.max,
        }
    }
}

#[napi(object)]
pub struct NativeMetrics {
    pub acquisitions: f64,
    pub releases: f64,
    pub contended: f64,
    pub timeouts: f64,
    pub aborts: f64,
    pub stale_cleaned: f64,
    pub compromised: f64,
    pub held_now: f64,
    pub wait: NativeDistribution,
    pub hold: NativeDistribution,
}

impl From<MetricsSnapshot> for NativeMetrics {
    fn from(m: MetricsSnapshot) -> Self {
        NativeMetrics {
            acquisitions: m.acquisitions as f64,
            releases: m.releases as f64,
            contended: m.contended as f64,
            timeouts: m.timeouts as f64,
            aborts: m.aborts as f64,
            stale_cleaned: m.stale_cleaned as f64,
            compromised: m.compromised as f64,
            held_now: m.held_now as f64,
            wait: m.wait.into(),
            hold: m.hold.into(),
        }
    }
}

pub(crate) fn list_statuses(
    engine: &LockManager,
    dir: Option<&str>,
) -> engine::Result<Vec<NativeStatus>> {
    engine
        .list(dir)
        .map(|l| l.into_iter().map(Into::into).collect())
}
