//! `LockManager`: acquires and releases locks for one owner label, remembers what it
//! holds, and turns a busy lock into a wait, a typed `ELOCKED` or an `ETIMEOUT`.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Weak;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OwnedMutexGuard;
use tokio_util::sync::CancellationToken;

use super::error::{code, LockError, Result};
use super::inspect::{self, CleanupReport, LockStatus};
use super::kernel_lock::{read_holders, Claimant};
use super::lock_path::{lockfile_for, validate_path};
use super::metrics::{Event, Metrics, MetricsSnapshot};
use super::owner_record::{now_ms, LockMode, OwnerRecord, ProcessIdentity};
use super::release_events::ReleaseEvents;
use super::strategy::{HeldLock, Strategy};
use super::waiting::{existing_turn, runtime, turn_for, wait_for_lock, Turn};

/// Used when neither the manager nor the call sets `timeout`.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// A holder on another host whose heartbeat is older than this is dead.
pub const DEFAULT_STALE_MS: u64 = 10_000;
/// proper-lockfile's floor for `stale`: below it, a busy holder looks dead.
pub const MIN_STALE_MS: u64 = 2_000;

/// Called from the heartbeat thread when a held lock turns out to be lost.
pub type CompromisedHandler = Box<dyn Fn(&LockGrant, &LockError) + Send + Sync>;

/// How long an acquire may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// `timeout: 0`: one attempt, `ELOCKED` when held.
    Once,
    For(Duration),
    /// `timeout: Infinity`.
    Forever,
}

impl Wait {
    /// Reads a JavaScript number of milliseconds, rejecting what no caller means.
    pub fn from_millis(value: f64, option: &str) -> Result<Wait> {
        if value.is_nan() || value < 0.0 {
            return Err(LockError::invalid(format!(
                "{option} must be a non-negative number of milliseconds or Infinity, got {value}"
            )));
        }
        // Beyond a century a deadline means nothing, and a far one overflows timers.
        const CENTURY_MS: f64 = 100.0 * 365.25 * 24.0 * 3600.0 * 1000.0;
        Ok(if value.is_infinite() || value > CENTURY_MS {
            Wait::Forever
        } else if value == 0.0 {
            Wait::Once
        } else {
            Wait::For(Duration::from_secs_f64(value / 1000.0))
        })
    }
}

#[derive(Debug, Clone)]
pub struct ManagerOptions {
    /// The owner label written as `process` in records ("mcp-server").
    pub owner: String,
    pub lock_dir: Option<PathBuf>,
    pub timeout: Wait,
    /// Raised to `MIN_STALE_MS` if lower.
    pub stale_ms: u64,
    /// Heartbeat period; `None` means half of `stale`, `Some(0)` turns beats off.
    pub heartbeat_ms: Option<u64>,
    /// Kernel locks, or proper-lockfile's mkdir protocol (whose `stale` is set here).
    pub mkdir: bool,
    /// Record counts and wait/hold times (on unless turned off).
    pub metrics: bool,
}

impl ManagerOptions {
    pub fn new(owner: impl Into<String>) -> Self {
        ManagerOptions {
            owner: owner.into(),
            lock_dir: None,
            timeout: Wait::For(Duration::from_millis(DEFAULT_TIMEOUT_MS)),
            stale_ms: DEFAULT_STALE_MS,
            heartbeat_ms: None,
            mkdir: false,
            metrics: true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AcquireOptions {
    pub mode: LockMode,
    pub timeout: Option<Wait>,
    pub lockfile_path: Option<String>,
}

impl Default for AcquireOptions {
    fn default() -> Self {
        AcquireOptions {
            mode: LockMode::Exclusive,
            timeout: None,
            lockfile_path: None,
        }
    }
}

/// What a caller learns about a granted lock.
#[derive(Debug, Clone)]
pub struct LockGrant {
    /// Unique in this process; `release(id)` takes it.
    pub id: u64,
    pub target: PathBuf,
    pub lockfile: PathBuf,
    pub mode: LockMode,
    pub token: u64,
    pub lock_id: String,
    pub acquired_at: u64,
}

pub type PendingGrant = Pin<Box<dyn Future<Output = Result<LockGrant>> + Send>>;

/// An acquire either settles at once (free lock, bad input, `timeout: 0`) or must wait.
pub enum Acquisition {
    Ready(Result<LockGrant>),
    Waiting(PendingGrant),
}

/// A contended acquire, as its wait needs it.
struct Request {
    target: PathBuf,
    lockfile: PathBuf,
    mode: LockMode,
    wait: Wait,
    asked: Instant,
    /// The process's queue for the lock file, and our place in it if it was free.
    turn: Turn,
    place: Option<OwnedMutexGuard<()>>,
}

struct Held {
    grant: LockGrant,
    lock: Box<dyn HeldLock>,
    granted: Instant,
    compromised: Option<LockError>,
}

struct Inner {
    claimant: Claimant,
    lock_dir: Option<PathBuf>,
    timeout: Wait,
    stale_ms: u64,
    strategy: Strategy,
    held: Mutex<HashMap<u64, Held>>,
    metrics: Metrics,
    on_compromised: Mutex<Option<CompromisedHandler>>,
    /// Cancelled by `close()`, which ends this manager's waits too.
    closing: CancellationToken,
}

#[derive(Clone)]
pub struct LockManager {
    inner: Arc<Inner>,
}

/// Grant ids count from 1: the binding maps ids it cannot read to 0, held by nobody.
static NEXT_GRANT_ID: AtomicU64 = AtomicU64::new(1);

impl LockManager {
    pub fn new(options: ManagerOptions) -> Result<LockManager> {
        if options.owner.is_empty() {
            return Err(LockError::invalid("owner must be a non-empty string"));
        }
        let lock_dir = match &options.lock_dir {
            Some(dir) => Some(validate_path(&dir.to_string_lossy(), "lockDir")?),
            None => None,
        };
        let identity = ProcessIdentity::get();
        let stale_ms = options.stale_ms.max(MIN_STALE_MS);
        let manager = LockManager {
            inner: Arc::new(Inner {
                claimant: Claimant {
                    pid: identity.pid,
                    host: identity.host.clone(),
                    process: options.owner,
                    user: identity.user.clone(),
                    process_start: identity.process_start,
                },
                lock_dir,
                timeout: options.timeout,
                stale_ms,
                strategy: if options.mkdir {
                    Strategy::Mkdir { stale_ms }
                } else {
                    Strategy::Kernel
                },
                held: Mutex::default(),
                metrics: Metrics::new(options.metrics),
                on_compromised: Mutex::new(None),
                closing: CancellationToken::new(),
            }),
        };
        match options.heartbeat_ms.unwrap_or(stale_ms / 2) {
            0 => {}
            period => start_heartbeat(
                Arc::downgrade(&manager.inner),
                Duration::from_millis(period),
                manager.inner.closing.clone(),
            ),
        }
        Ok(manager)
    }

    pub fn stale_ms(&self) -> u64 {
        self.inner.stale_ms
    }

    pub fn set_on_compromised(&self, handler: Option<CompromisedHandler>) {
        *self
            .inner
            .on_compromised
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = handler;
    }

    /// Refreshes every held lock's heartbeat; reports locks found lost.
    fn beat(&self) {
        let now = now_ms();
        let mut lost = Vec::new();
        for held in self.held().values_mut() {
            if let Err(err) = held.lock.beat(now) {
                if held.compromised.is_none() {
                    held.compromised = Some(err.clone());
                    lost.push((held.grant.clone(), err));
                }
            }
        }
        if lost.is_empty() {
            return;
        }
        let handler = self
            .inner
            .on_compromised
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (grant, err) in lost {
            self.inner.metrics.record(Event::Compromised);
            if let Some(handler) = handler.as_ref() {
                handler(&grant, &err);
            }
        }
    }

    pub fn owner(&self) -> &str {
        &self.inner.claimant.process
    }

    /// The lock file `target` maps to, after the same checks `acquire` makes.
    pub fn resolve(&self, target: &str, lockfile_path: Option<&str>) -> Result<(PathBuf, PathBuf)> {
        let target_path = validate_path(target, "path")?;
        let explicit = lockfile_path
            .map(|p| validate_path(p, "lockfilePath"))
            .transpose()?;
        let lockfile = lockfile_for(
            &target_path,
            self.inner.lock_dir.as_deref(),
            explicit.as_deref(),
        )?;
        Ok((target_path, lockfile))
    }

    /// One attempt that neither waits nor jumps this process's queue for the file.
    pub fn try_acquire(&self, target: &str, options: &AcquireOptions) -> Result<Option<LockGrant>> {
        let (target, lockfile) = self.resolve(target, options.lockfile_path.as_deref())?;
        self.attempt_now(&target, &lockfile, options.mode, Instant::now())
    }

    /// Settles at once when it can; otherwise hands back the wait, bounded by the
    /// timeout and ended early by `cancel` (an `AbortSignal`) or `close()`.
    pub fn acquire(
        &self,
        target: &str,
        options: &AcquireOptions,
        cancel: CancellationToken,
    ) -> Acquisition {
        self.acquire_woken_by(target, options, cancel, || None)
    }

    /// `acquire` whose wait is woken by the events `events()` gives, asked for only
    /// when the acquire must wait (`None`: the process's instance, read on the wait
    /// runtime). The binding gives the JS thread's own instance, so a release wakes
    /// that thread directly.
    pub fn acquire_woken_by(
        &self,
        target: &str,
        options: &AcquireOptions,
        cancel: CancellationToken,
        events: impl FnOnce() -> Option<Arc<ReleaseEvents>>,
    ) -> Acquisition {
        let (target, lockfile) = match self.resolve(target, options.lockfile_path.as_deref()) {
            Ok(paths) => paths,
            Err(e) => return Acquisition::Ready(Err(e)),
        };
        if self.inner.closing.is_cancelled() {
            return Acquisition::Ready(Err(closed_error(&target)));
        }
        let asked = Instant::now();
        // The uncontended path stays on the calling thread.
        match self.attempt_now(&target, &lockfile, options.mode, asked) {
            Ok(Some(grant)) => return Acquisition::Ready(Ok(grant)),
            Ok(None) => {}
            Err(e) => return Acquisition::Ready(Err(e)),
        }
        let wait = options.timeout.unwrap_or(self.inner.timeout);
        if wait == Wait::Once {
            return Acquisition::Ready(Err(locked_error(&target, &lockfile)));
        }
        // Take this wait's place in the process's queue for the file now, not when the
        // wait is first polled: a later attempt in this process must not jump it.
        let turn = turn_for(&lockfile);
        let place = Arc::clone(&turn).try_lock_owned().ok();
        Acquisition::Waiting(Box::pin(self.clone().wait(
            Request {
                target,
                lockfile,
                mode: options.mode,
                wait,
                asked,
                turn,
                place,
            },
            cancel,
            events().unwrap_or_else(ReleaseEvents::global),
        )))
    }

    /// `acquire` for callers that must block: the calling thread waits, bounded by
    /// the timeout, while the shared runtime watches for the release.
    pub fn acquire_blocking(&self, target: &str, options: &AcquireOptions) -> Result<LockGrant> {
        match self.acquire(target, options, CancellationToken::new()) {
            Acquisition::Ready(result) => result,
            Acquisition::Waiting(wait) => runtime().block_on(wait),
        }
    }

    async fn wait(
        self,
        request: Request,
        cancel: CancellationToken,
        events: Arc<ReleaseEvents>,
    ) -> Result<LockGrant> {
        let Request {
            target,
            lockfile,
            mode,
            wait,
            asked,
            turn,
            place,
        } = request;
        let contender = match self.inner.strategy.contender(lockfile.clone(), mode) {
            Ok(contender) => contender,
            Err(e) => return Err(e),
        };
        let attempt = wait_for_lock(
            (turn, place),
            contender,
            self.inner.claimant.clone(),
            events,
        );
        // Counted from the call, however late the wait is first polled.
        let deadline = async {
            match wait {
                Wait::For(duration) => {
                    tokio::time::sleep_until(tokio::time::Instant::from_std(asked + duration)).await
                }
                Wait::Once | Wait::Forever => std::future::pending().await,
            }
        };
        // `biased`: a lock granted in the same instant as the deadline is kept, and a
        // wait that lost to the deadline or the abort held nothing when it was dropped.
        let outcome = tokio::select! {
            biased;
            granted = attempt => granted.map(|lock| self.register(&target, lock, asked)),
            _ = deadline => Err(timeout_error(&target, &lockfile, wait)),
            _ = cancel.cancelled() => Err(LockError::new(code::ABORTED, format!("The wait for the lock on {} was aborted", target.display()), Some(&target))),
            _ = self.inner.closing.cancelled() => Err(closed_error(&target)),
        };
        match &outcome {
            Err(e) if e.is(code::TIMEOUT) => self.inner.metrics.record(Event::TimedOut),
            Err(e) if e.is(code::ABORTED) => self.inner.metrics.record(Event::Aborted),
            _ => {}
        }
        outcome
    }

    fn attempt_now(
        &self,
        target: &Path,
        lockfile: &Path,
        mode: LockMode,
        asked: Instant,
    ) -> Result<Option<LockGrant>> {
        let attempt = || -> Result<Option<Box<dyn HeldLock>>> {
            let mut contender = self
                .inner
                .strategy
                .contender(lockfile.to_path_buf(), mode)?;
            let lock_id = ProcessIdentity::get().next_lock_id();
            contender.try_acquire(&self.inner.claimant, lock_id, false)
        };
        // Someone in this process is already waiting: they go first.
        let granted = match existing_turn(lockfile) {
            None => attempt()?,
            Some(turn) => match turn.try_lock() {
                Ok(_turn) => attempt()?,
                Err(_) => None,
            },
        };
        match granted {
            Some(lock) => Ok(Some(self.register(target, lock, asked))),
            None => {
                self.inner.metrics.record(Event::Contended);
                Ok(None)
            }
        }
    }

    fn register(&self, target: &Path, lock: Box<dyn HeldLock>, asked: Instant) -> LockGrant {
        let record = lock.record();
        let grant = LockGrant {
            id: NEXT_GRANT_ID.fetch_add(1, Ordering::Relaxed),
            target: target.to_path_buf(),
            lockfile: lock.path().to_path_buf(),
            mode: record.mode,
            token: record.token,
            lock_id: record.lock_id.clone(),
            acquired_at: record.timestamp,
        };
        let granted = Instant::now();
        self.inner.metrics.record(Event::Acquired {
            waited: granted - asked,
        });
        self.held().insert(
            grant.id,
            Held {
                grant: grant.clone(),
                lock,
                granted,
                compromised: None,
            },
        );
        grant
    }

    /// Releases one grant. `missing` is the code for a grant this manager does not
    /// hold: `ERELEASED` from the lock itself, `ENOTACQUIRED` from a bare id.
    pub fn release(&self, id: u64, missing: &str) -> Result<()> {
        let Some(held) = self.held().remove(&id) else {
            let message = if missing == code::RELEASED {
                "Lock is already released".to_string()
            } else {
                format!("No lock with id {id} is held by this LockManager")
            };
            return Err(LockError::new(missing, message, None));
        };
        self.inner.metrics.record(Event::Released {
            held: held.granted.elapsed(),
        });
        if let Some(lost) = held.compromised {
            return Err(lost);
        }
        held.lock.release()
    }

    /// Releases every lock this manager holds on `target` (its lock file).
    pub fn release_path(&self, target: &str, lockfile_path: Option<&str>) -> Result<usize> {
        let (target, lockfile) = self.resolve(target, lockfile_path)?;
        let ids: Vec<u64> = self
            .held()
            .values()
            .filter(|h| h.grant.lockfile == lockfile)
            .map(|h| h.grant.id)
            .collect();
        if ids.is_empty() {
            return Err(LockError::new(
                code::NOT_ACQUIRED,
                format!("{} is not locked by this LockManager", target.display()),
                Some(&target),
            ));
        }
        // Every grant is released even if one fails (a compromised one, say); the
        // first failure is what the caller hears.
        let failures: Vec<LockError> = ids
            .iter()
            .filter_map(|id| self.release(*id, code::NOT_ACQUIRED).err())
            .collect();
        match failures.into_iter().next() {
            Some(first) => Err(first),
            None => Ok(ids.len()),
        }
    }

    pub fn is_held(&self, id: u64) -> bool {
        self.held().contains_key(&id)
    }

    pub fn held_count(&self) -> usize {
        self.held().len()
    }

    pub fn held_grants(&self) -> Vec<LockGrant> {
        self.held().values().map(|h| h.grant.clone()).collect()
    }

    /// Releases everything without ending the manager: used at process exit.
    pub fn release_all(&self) -> usize {
        let drained: Vec<Held> = self.held().drain().map(|(_, held)| held).collect();
        let count = drained.len();
        drop(drained); // each lock clears its record and unlocks as it drops
        count
    }

    /// Ends pending waits and releases everything; later acquires fail.
    pub fn close(&self) -> usize {
        self.inner.closing.cancel();
        self.release_all()
    }

    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics.snapshot(self.held_count())
    }

    pub fn reset_metrics(&self) {
        self.inner.metrics.reset();
    }

    /// Who holds the lock for `target` (any process's), and whether they are alive.
    pub fn status(&self, target: &str, lockfile_path: Option<&str>) -> Result<LockStatus> {
        let (_, lockfile) = self.resolve(target, lockfile_path)?;
        match self.inner.strategy {
            Strategy::Kernel => inspect::status(&lockfile, self.inner.stale_ms),
            Strategy::Mkdir { stale_ms } => inspect::mkdir_status(&lockfile, stale_ms),
        }
    }

    /// The status of every lock file in `dir`, or in this manager's `lockDir`.
    pub fn list(&self, dir: Option<&str>) -> Result<Vec<LockStatus>> {
        let dir = self.sweep_dir(dir)?;
        match self.inner.strategy {
            Strategy::Kernel => inspect::list(&dir, self.inner.stale_ms),
            Strategy::Mkdir { stale_ms } => inspect::mkdir_list(&dir, stale_ms),
        }
    }

    /// Removes what dead holders left in `dir`; with `dry_run`, only lists it.
    pub fn cleanup(&self, dir: Option<&str>, dry_run: bool) -> Result<CleanupReport> {
        let dir = self.sweep_dir(dir)?;
        let report = match self.inner.strategy {
            Strategy::Kernel => inspect::cleanup(&dir, dry_run)?,
            Strategy::Mkdir { stale_ms } => inspect::mkdir_cleanup(&dir, stale_ms, dry_run)?,
        };
        if !dry_run {
            self.inner.metrics.record(Event::StaleCleaned(
                (report.removed.len() + report.cleared.len()) as u64,
            ));
        }
        Ok(report)
    }

    pub fn force_release(
        &self,
        target: &str,
        lockfile_path: Option<&str>,
        force: bool,
    ) -> Result<bool> {
        let (target, lockfile) = self.resolve(target, lockfile_path)?;
        let removed = match self.inner.strategy {
            Strategy::Kernel => inspect::force_release(&lockfile, &target, self.inner.stale_ms)?,
            Strategy::Mkdir { stale_ms } => {
                inspect::mkdir_force_release(&lockfile, &target, stale_ms, force)?
            }
        };
        if removed {
            self.inner.metrics.record(Event::StaleCleaned(1));
        }
        Ok(removed)
    }

    fn sweep_dir(&self, dir: Option<&str>) -> Result<PathBuf> {
        match (dir, &self.inner.lock_dir) {
            (Some(dir), _) => validate_path(dir, "dir"),
            (None, Some(lock_dir)) => Ok(lock_dir.clone()),
            (None, None) => Err(LockError::invalid(
                "dir is required when the LockManager has no lockDir",
            )),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Held>> {
        self.inner.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Beats on the shared runtime, so a holder whose JavaScript thread is blocked still
/// shows life; ends with the manager.
fn start_heartbeat(manager: Weak<Inner>, period: Duration, closing: CancellationToken) {
    runtime().spawn(async move {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await; // the first tick is immediate; the grant wrote a fresh record
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = closing.cancelled() => return,
            }
            let Some(inner) = manager.upgrade() else {
                return;
            };
            LockManager { inner }.beat();
        }
    });
}

fn closed_error(target: &Path) -> LockError {
    LockError::new(
        code::ABORTED,
        format!(
            "The LockManager was closed while waiting for {}",
            target.display()
        ),
        Some(target),
    )
}

fn locked_error(target: &Path, lockfile: &Path) -> LockError {
    LockError::new(
        code::LOCKED,
        format!(
            "{} is locked by {}",
            target.display(),
            describe_holders(lockfile)
        ),
        Some(target),
    )
}

fn timeout_error(target: &Path, lockfile: &Path, wait: Wait) -> LockError {
    let waited = match wait {
        Wait::For(d) => format!("{} ms", d.as_millis()),
        _ => "the timeout".into(),
    };
    LockError::new(
        code::TIMEOUT,
        format!(
            "Timed out after {waited} waiting for the lock on {}, held by {}",
            target.display(),
            describe_holders(lockfile)
        ),
        Some(target),
    )
}

/// "mcp-server (PID 12345 on build-1, held 3.2 s)", for error messages.
pub fn describe_holders(lockfile: &Path) -> String {
    let holders = read_holders(lockfile);
    if holders.is_empty() {
        return "another process".into();
    }
    let now = now_ms();
    let describe = |r: &OwnerRecord| {
        let held = now.saturating_sub(r.timestamp) as f64 / 1000.0;
        format!(
            "{} (PID {} on {}, held {held:.1} s)",
            r.process, r.pid, r.host
        )
    };
    match holders.as_slice() {
        [only] => describe(only),
        many => format!(
            "{} readers: {}",
            many.len(),
            many.iter().map(describe).collect::<Vec<_>>().join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manager(owner: &str) -> LockManager {
        LockManager::new(ManagerOptions {
            timeout: Wait::For(Duration::from_secs(5)),
            ..ManagerOptions::new(owner)
        })
        .unwrap()
    }

    fn target(dir: &tempfile::TempDir) -> String {
        dir.path().join("state.json").to_string_lossy().into_owned()
    }

    fn exclusive(timeout: Option<Wait>) -> AcquireOptions {
        AcquireOptions {
            timeout,
            ..AcquireOptions::default()
        }
    }

    /// `a` holds the lock; `b`'s acquire must wait. Returns a's grant and b's wait.
    fn held_and_waiting(
        dir: &tempfile::TempDir,
        a: &LockManager,
        b: &LockManager,
        cancel: CancellationToken,
    ) -> (LockGrant, tokio::task::JoinHandle<Result<LockGrant>>) {
        let held = a
            .try_acquire(&target(dir), &AcquireOptions::default())
            .unwrap()
            .unwrap();
        let Acquisition::Waiting(wait) =
            b.acquire(&target(dir), &exclusive(Some(Wait::Forever)), cancel)
        else {
            panic!("a held lock must make the acquire wait")
        };
        (held, runtime().spawn(wait))
    }

    #[test]
    fn timeout_values_are_checked() {
        assert_eq!(Wait::from_millis(0.0, "timeout").unwrap(), Wait::Once);
        assert_eq!(
            Wait::from_millis(f64::INFINITY, "timeout").unwrap(),
            Wait::Forever
        );
        assert_eq!(
            Wait::from_millis(2f64.powi(64), "timeout").unwrap(),
            Wait::Forever
        );
        assert_eq!(
            Wait::from_millis(f64::NAN, "timeout").unwrap_err().code,
            "EINVAL"
        );
        assert!(Wait::from_millis(-1.0, "timeout")
            .unwrap_err()
            .message
            .contains("timeout"));
    }

    #[test]
    fn two_managers_exclude_each_other_and_name_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (manager("indexer"), manager("server"));
        let grant = a
            .try_acquire(&target(&dir), &AcquireOptions::default())
            .unwrap()
            .unwrap();
        assert!(b
            .try_acquire(&target(&dir), &AcquireOptions::default())
            .unwrap()
            .is_none());
        let Acquisition::Ready(Err(err)) = b.acquire(
            &target(&dir),
            &exclusive(Some(Wait::Once)),
            CancellationToken::new(),
        ) else {
            panic!("timeout 0 must settle at once")
        };
        assert_eq!(err.code, "ELOCKED");
        assert!(
            err.message.contains("is locked by indexer (PID"),
            "{}",
            err.message
        );
        a.release(grant.id, code::RELEASED).unwrap();
        assert_eq!(
            a.release(grant.id, code::RELEASED).unwrap_err().code,
            "ERELEASED"
        );
        assert!(b
            .try_acquire(&target(&dir), &AcquireOptions::default())
            .unwrap()
            .is_some());
    }

    #[test]
    fn a_waiter_gets_the_lock_when_it_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (manager("a"), manager("b"));
        let (held, waiter) = held_and_waiting(&dir, &a, &b, CancellationToken::new());
        a.release(held.id, code::RELEASED).unwrap();
        let grant = runtime().block_on(waiter).unwrap().unwrap();
        assert_eq!(grant.token, held.token + 1);
        assert!(b.is_held(grant.id));
    }

    #[test]
    fn waits_end_in_timeout_or_abort_holding_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (manager("a"), manager("b"), manager("c"));
        let cancel = CancellationToken::new();
        let (held, waiter) = held_and_waiting(&dir, &a, &b, cancel.clone());
        let err = c
            .acquire_blocking(
                &target(&dir),
                &exclusive(Some(Wait::For(Duration::from_millis(30)))),
            )
            .unwrap_err();
        assert_eq!(err.code, "ETIMEOUT");
        cancel.cancel();
        assert_eq!(
            runtime().block_on(waiter).unwrap().unwrap_err().code,
            "ABORT_ERR"
        );
        assert_eq!(b.held_count() + c.held_count(), 0);
        a.release(held.id, code::RELEASED).unwrap();
    }

    #[test]
    fn close_ends_waits_and_releases() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (manager("a"), manager("b"));
        let (_, waiter) = held_and_waiting(&dir, &a, &b, CancellationToken::new());
        b.close();
        assert_eq!(
            runtime().block_on(waiter).unwrap().unwrap_err().code,
            "ABORT_ERR"
        );
        assert_eq!(a.close(), 1);
        assert!(manager("c")
            .try_acquire(&target(&dir), &AcquireOptions::default())
            .unwrap()
            .is_some());
    }

    #[test]
    fn release_by_path_needs_a_held_lock() {
        let dir = tempfile::tempdir().unwrap();
        let a = manager("a");
        assert_eq!(
            a.release_path(&target(&dir), None).unwrap_err().code,
            "ENOTACQUIRED"
        );
        a.try_acquire(&target(&dir), &AcquireOptions::default())
            .unwrap()
            .unwrap();
        assert_eq!(a.release_path(&target(&dir), None).unwrap(), 1);
        assert_eq!(
            a.release(999_999, code::NOT_ACQUIRED).unwrap_err().code,
            "ENOTACQUIRED"
        );
    }
}
