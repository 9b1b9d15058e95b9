//! `LockManager`: acquires and releases locks for one owner label, remembers what it
//! holds, and turns a busy lock into a wait, a typed `ELOCKED` or an `ETIMEOUT`.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::engine::backend::traits::{PendingLock, PendingRelease, WaitRequest};
use crate::engine::backend::{open_backend, Backend, HeldLock};
use crate::engine::error::{code, LockError, Result};
use crate::engine::inspect::{CleanupReport, LockStatus};
use crate::engine::lock_path::{lockfile_for, real_target, validate_path};
use crate::engine::metrics::{Event, Metrics, MetricsSnapshot};
use crate::engine::owner_record::{now_ms, Claimant, LockMode, OwnerRecord};
use crate::engine::process::ProcessIdentity;
use crate::engine::release_events::ReleaseEvents;
use crate::engine::runtime::runtime;
use crate::engine::waiting::{existing_line, line_for, wait_for_lock, Place};

mod heartbeat;
mod options;

use heartbeat::start_heartbeat;
use options::heartbeat_period;
pub use options::{
    AcquireOptions, ManagerOptions, Wait, DEFAULT_STALE_MS, DEFAULT_TIMEOUT_MS, MAX_OWNER_LEN,
    MIN_STALE_MS,
};

/// Called from the heartbeat thread when a held lock turns out to be lost.
pub type CompromisedHandler = Box<dyn Fn(&LockGrant, &LockError) + Send + Sync>;

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
    /// Our place in the process's line for the lock file; `None` for a remote
    /// backend, whose server queues its waiters itself.
    place: Option<Place>,
}

/// One grant. The heartbeat beats each through its own mutex, so file I/O never
/// holds the map of held locks that every acquire and release needs.
struct Held {
    grant: LockGrant,
    granted: Instant,
    state: Mutex<HeldState>,
}

struct HeldState {
    /// `None` once released (a beat may still hold the `Held` a moment).
    lock: Option<Box<dyn HeldLock>>,
    compromised: Option<LockError>,
}

impl Held {
    fn state(&self) -> std::sync::MutexGuard<'_, HeldState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Inner {
    claimant: Claimant,
    lock_dir: Option<PathBuf>,
    timeout: Wait,
    stale_ms: u64,
    realpath: bool,
    backend: Arc<dyn Backend>,
    held: Mutex<HashMap<u64, Arc<Held>>>,
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
        // Records live in fixed regions of the lock file (see the kernel backend's
        // readers): a label this long is no label anyone reads anyway.
        // As written: JSON escapes a control character in six bytes.
        let written = serde_json::to_string(&options.owner).map_or(usize::MAX, |s| s.len() - 2);
        if written > MAX_OWNER_LEN {
            return Err(LockError::invalid(format!(
                "owner must take at most {MAX_OWNER_LEN} bytes as JSON, got {written}"
            )));
        }
        let lock_dir = match &options.lock_dir {
            Some(dir) => Some(validate_path(&dir.to_string_lossy(), "lockDir")?),
            None => None,
        };
        let identity = ProcessIdentity::get();
        let stale_ms = options.stale_ms.max(MIN_STALE_MS);
        let backend = open_backend(options.strategy.clone(), stale_ms)?;
        let heartbeat_ms = heartbeat_period(
            options.heartbeat_ms,
            backend.max_heartbeat_ms(stale_ms),
            backend.needs_heartbeat(),
        )?;
        let manager = LockManager {
            inner: Arc::new(Inner {
                claimant: identity.claimant(options.owner),
                lock_dir,
                timeout: options.timeout,
                stale_ms,
                realpath: options.realpath,
                backend,
                held: Mutex::default(),
                metrics: Metrics::new(options.metrics),
                on_compromised: Mutex::new(None),
                closing: CancellationToken::new(),
            }),
        };
        match heartbeat_ms {
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

    pub fn owner(&self) -> &str {
        self.inner.claimant.process()
    }

    /// The lock file `target` maps to, after the same checks `acquire` makes.
    /// `realpath` (default: the manager's) locks a symlink's target, not the link.
    pub fn resolve(
        &self,
        target: &str,
        lockfile_path: Option<&str>,
        realpath: Option<bool>,
    ) -> Result<(PathBuf, PathBuf)> {
        if self.inner.backend.remote() {
            // A logical key: used as given, whatever the working directory.
            let name = lockfile_path.unwrap_or(target);
            return Ok((lock_name(target, "path")?, lock_name(name, "lockfilePath")?));
        }
        let mut target_path = validate_path(target, "path")?;
        if realpath.unwrap_or(self.inner.realpath) {
            target_path = real_target(&target_path);
        }
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
        let (target, lockfile) =
            self.resolve(target, options.lockfile_path.as_deref(), options.realpath)?;
        if self.inner.closing.is_cancelled() {
            return Err(closed_error(&target, false));
        }
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
        let (target, lockfile) =
            match self.resolve(target, options.lockfile_path.as_deref(), options.realpath) {
                Ok(paths) => paths,
                Err(e) => return Acquisition::Ready(Err(e)),
            };
        if self.inner.closing.is_cancelled() {
            return Acquisition::Ready(Err(closed_error(&target, false)));
        }
        let asked = Instant::now();
        let wait = options.timeout.unwrap_or(self.inner.timeout);
        if self.inner.backend.remote() {
            // Even one attempt is a round trip: never on the calling thread.
            return Acquisition::Waiting(Box::pin(self.clone().wait(
                Request {
                    target,
                    lockfile,
                    mode: options.mode,
                    wait,
                    asked,
                    place: None,
                },
                cancel,
                ReleaseEvents::global(),
            )));
        }
        // The uncontended path stays on the calling thread.
        match self.attempt_now(&target, &lockfile, options.mode, asked) {
            Ok(Some(grant)) => return Acquisition::Ready(Ok(grant)),
            Ok(None) => {}
            Err(e) => return Acquisition::Ready(Err(e)),
        }
        if wait == Wait::Once {
            return Acquisition::Ready(Err(locked_error(
                &target,
                self.inner.backend.holders(&lockfile),
            )));
        }
        // Take this wait's place in the process's line for the file now, not when the
        // wait is first polled: a later attempt in this process must not jump it.
        let deadline = match wait {
            Wait::For(duration) => Some(asked + duration),
            Wait::Once | Wait::Forever => None,
        };
        let place = line_for(&lockfile).join(deadline);
        Acquisition::Waiting(Box::pin(self.clone().wait(
            Request {
                target,
                lockfile,
                mode: options.mode,
                wait,
                asked,
                place: Some(place),
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
            place,
        } = request;
        let backend = &self.inner.backend;
        let attempt: PendingLock = match place {
            Some(place) => Box::pin(wait_for_lock(
                place,
                backend.contender(&lockfile, mode)?,
                self.inner.claimant.clone(),
                events,
            )),
            None if wait == Wait::Once => {
                let once = self.attempt_held(&lockfile, mode).and_then(|held| {
                    held.ok_or_else(|| locked_error(&target, backend.holders(&lockfile)))
                });
                Box::pin(std::future::ready(once))
            }
            // The backend's wait makes its first attempt without queueing, as a file
            // lock's acquire does on its caller's thread; it says whether it waited.
            None => {
                let inner = Arc::clone(&self.inner);
                let pending = backend
                    .wait(WaitRequest {
                        lock: lockfile.clone(),
                        mode,
                        claimant: self.inner.claimant.clone(),
                        lock_id: ProcessIdentity::get().next_lock_id(),
                        deadline: match wait {
                            Wait::For(duration) => Some(asked + duration),
                            Wait::Once => Some(asked),
                            Wait::Forever => None,
                        },
                    })
                    .expect("a remote backend runs its own waits");
                Box::pin(async move {
                    let outcome = pending.await;
                    match &outcome {
                        Ok(held) if held.waited() => inner.metrics.record(Event::Contended),
                        Err(e) if e.is(code::TIMEOUT) => inner.metrics.record(Event::Contended),
                        _ => {}
                    }
                    outcome
                })
            }
        };
        // Counted from the call, however late the wait is first polled. A remote
        // backend ends its own wait (`EUNAVAILABLE` when the server never answered).
        let local_deadline = if backend.remote() {
            Wait::Forever
        } else {
            wait
        };
        let deadline = async {
            match local_deadline {
                Wait::For(duration) => {
                    tokio::time::sleep_until(tokio::time::Instant::from_std(asked + duration)).await
                }
                Wait::Once | Wait::Forever => std::future::pending().await,
            }
        };
        // Checked at every poll, before any attempt: a wait first polled again after
        // its deadline (its JS thread was busy in synchronous work) has timed out, and
        // must not take the lock long after its caller gave up on it.
        let overdue = std::future::poll_fn(|_| match local_deadline {
            Wait::For(duration) if asked.elapsed() >= duration => Poll::Ready(()),
            _ => Poll::Pending,
        });
        // `biased`: a wait that lost to the deadline or the abort held nothing when it
        // was dropped (every attempt is one non-blocking call).
        let outcome = tokio::select! {
            biased;
            _ = overdue => Err(timeout_error(&target, self.inner.backend.holders(&lockfile), wait)),
            granted = attempt => granted.and_then(|lock| self.register(&target, lock, asked)),
            _ = deadline => Err(timeout_error(&target, self.inner.backend.holders(&lockfile), wait)),
            _ = cancel.cancelled() => Err(LockError::new(code::ABORTED, format!("The wait for the lock on {} was aborted", target.display()), Some(&target))),
            _ = self.inner.closing.cancelled() => Err(closed_error(&target, true)),
        };
        match &outcome {
            Err(e) if e.is(code::TIMEOUT) => self.inner.metrics.record(Event::TimedOut),
            Err(e) if e.is(code::ABORTED) => self.inner.metrics.record(Event::Aborted),
            _ => {}
        }
        outcome
    }

    /// One attempt at the lock, as this manager's claimant.
    fn attempt_held(&self, lockfile: &Path, mode: LockMode) -> Result<Option<Box<dyn HeldLock>>> {
        let mut contender = self.inner.backend.contender(lockfile, mode)?;
        let lock_id = ProcessIdentity::get().next_lock_id();
        contender.try_acquire(&self.inner.claimant, lock_id, false)
    }

    fn attempt_now(
        &self,
        target: &Path,
        lockfile: &Path,
        mode: LockMode,
        asked: Instant,
    ) -> Result<Option<LockGrant>> {
        let attempt = || self.attempt_held(lockfile, mode);
        // Someone in this process is already waiting: they go first.
        let granted = match existing_line(lockfile) {
            Some(line) if !line.is_free() => None,
            _ => attempt()?,
        };
        match granted {
            Some(lock) => self.register(target, lock, asked).map(Some),
            None => {
                self.inner.metrics.record(Event::Contended);
                Ok(None)
            }
        }
    }

    /// Records a grant, unless `close()` came first: then the lock goes at once, as
    /// `close()` let go of everything else.
    fn register(
        &self,
        target: &Path,
        lock: Box<dyn HeldLock>,
        asked: Instant,
    ) -> Result<LockGrant> {
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
        let mut held = self.held();
        // Checked under the map's lock, which `close()` drains after cancelling.
        if self.inner.closing.is_cancelled() {
            drop(held);
            drop(lock);
            return Err(closed_error(target, true));
        }
        held.insert(
            grant.id,
            Arc::new(Held {
                grant: grant.clone(),
                granted,
                state: Mutex::new(HeldState {
                    lock: Some(lock),
                    compromised: None,
                }),
            }),
        );
        drop(held);
        self.inner.metrics.record(Event::Acquired {
            waited: granted - asked,
        });
        Ok(grant)
    }

    /// Releases one grant. `missing` is the code for a grant this manager does not
    /// hold: `ERELEASED` from the lock itself, `ENOTACQUIRED` from a bare id.
    pub fn release(&self, id: u64, missing: &str) -> Result<()> {
        match self.take_for_release(id, missing)? {
            Some(lock) => lock.release(),
            None => Ok(()),
        }
    }

    /// `release` for a caller that must not block (an async `release()`): the
    /// grant is gone from this manager at once, and a remote backend's round trip
    /// comes back to run on the wait runtime (`Some`). File locks release here.
    pub fn release_without_blocking(
        &self,
        id: u64,
        missing: &str,
    ) -> Result<Option<PendingRelease>> {
        match self.take_for_release(id, missing)? {
            Some(lock) if self.inner.backend.remote() => Ok(Some(lock.release_later())),
            Some(lock) => lock.release().map(|()| None),
            None => Ok(None),
        }
    }

    /// Forgets grant `id`, returning its lock to release (`None`: nothing left to
    /// release); `ECOMPROMISED` for one lost meanwhile.
    fn take_for_release(&self, id: u64, missing: &str) -> Result<Option<Box<dyn HeldLock>>> {
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
        // Waits for a beat of this lock in progress, if any.
        let (lock, compromised) = {
            let mut state = held.state();
            (state.lock.take(), state.compromised.take())
        };
        if let Some(lost) = compromised {
            drop(lock);
            return Err(lost);
        }
        Ok(lock)
    }

    /// A duplicate of a held kernel lock's descriptor without close-on-exec, for a
    /// child process to inherit: the lock then lasts while either holds it open.
    /// `None` when the lock has no descriptor (the mkdir strategy). The caller closes it.
    #[cfg(unix)]
    pub fn inheritable_fd(&self, id: u64) -> Result<Option<std::os::fd::RawFd>> {
        let Some(held) = self.held().get(&id).cloned() else {
            return Err(LockError::new(
                code::NOT_ACQUIRED,
                format!("No lock with id {id} is held by this LockManager"),
                None,
            ));
        };
        let state = held.state();
        let Some(fd) = state.lock.as_ref().and_then(|lock| lock.raw_fd()) else {
            return Ok(None);
        };
        // F_DUPFD shares the open file description, which is what holds the flock,
        // and leaves FD_CLOEXEC clear on the copy. Above stdio.
        let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD, 3) };
        if copy < 0 {
            return Err(LockError::from_io(
                &std::io::Error::last_os_error(),
                "duplicate",
                &held.grant.lockfile,
            ));
        }
        Ok(Some(copy))
    }

    /// Releases every lock this manager holds on `target` (its lock file).
    pub fn release_path(&self, target: &str, lockfile_path: Option<&str>) -> Result<usize> {
        let (target, lockfile) = self.resolve(target, lockfile_path, None)?;
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
        let (count, locks) = self.drain_held();
        // Each lock clears its record and unlocks as it drops.
        drop(locks);
        count
    }

    /// Forgets every grant: how many there were, and the locks still to give back.
    fn drain_held(&self) -> (usize, Vec<Box<dyn HeldLock>>) {
        let drained: Vec<Arc<Held>> = self.held().drain().map(|(_, held)| held).collect();
        let locks = drained
            .iter()
            .filter_map(|held| held.state().lock.take())
            .collect();
        (drained.len(), locks)
    }

    /// Ends pending waits and releases everything; later acquires fail.
    pub fn close(&self) -> usize {
        self.inner.closing.cancel();
        self.release_all()
    }

    /// `close` for a caller that must not block (an async `close()`): file locks go
    /// at once; a remote backend's leases are given back by the returned future, on
    /// the wait runtime. Failures are not reported: a lease not given back runs out.
    pub fn close_without_blocking(&self) -> Option<PendingRelease> {
        self.inner.closing.cancel();
        let (_, locks) = self.drain_held();
        if !self.inner.backend.remote() {
            return None; // `locks` drop here, each clearing its record and unlocking
        }
        let releases: Vec<PendingRelease> =
            locks.into_iter().map(|lock| lock.release_later()).collect();
        Some(Box::pin(async move {
            futures_util::future::join_all(releases).await;
            Ok(())
        }))
    }

    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics.snapshot(self.held_count())
    }

    pub fn reset_metrics(&self) {
        self.inner.metrics.reset();
    }

    /// Who holds the lock for `target` (any process's), and whether they are alive.
    pub fn status(&self, target: &str, lockfile_path: Option<&str>) -> Result<LockStatus> {
        let (_, lockfile) = self.resolve(target, lockfile_path, None)?;
        self.inner.backend.status(&lockfile)
    }

    /// The status of every lock file in `dir`, or in this manager's `lockDir`.
    pub fn list(&self, dir: Option<&str>) -> Result<Vec<LockStatus>> {
        let dir = self.sweep_dir(dir)?;
        self.inner.backend.list(&dir)
    }

    /// Removes what dead holders left in `dir`; with `dry_run`, only lists it.
    pub fn cleanup(&self, dir: Option<&str>, dry_run: bool) -> Result<CleanupReport> {
        let dir = self.sweep_dir(dir)?;
        let report = self.inner.backend.cleanup(&dir, dry_run)?;
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
        let (target, lockfile) = self.resolve(target, lockfile_path, None)?;
        let removed = self
            .inner
            .backend
            .force_release(&lockfile, &target, force)?;
        if removed {
            self.inner.metrics.record(Event::StaleCleaned(1));
        }
        Ok(removed)
    }

    fn sweep_dir(&self, dir: Option<&str>) -> Result<PathBuf> {
        match (dir, &self.inner.lock_dir) {
            (Some(dir), _) => validate_path(dir, "dir"),
            (None, Some(lock_dir)) => Ok(lock_dir.clone()),
            // A remote backend's locks are all under its prefix: no directory to name.
            (None, None) if self.inner.backend.remote() => Ok(PathBuf::new()),
            (None, None) => Err(LockError::invalid(
                "dir is required when the LockManager has no lockDir",
            )),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Held>>> {
        self.inner.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `ABORT_ERR` for an acquire that met `close()`: before it started, or while it waited.
fn closed_error(target: &Path, waiting: bool) -> LockError {
    let message = if waiting {
        format!(
            "The LockManager was closed while waiting for {}",
            target.display()
        )
    } else {
        format!(
            "The LockManager is closed: {} was not locked",
            target.display()
        )
    };
    LockError::new(code::ABORTED, message, Some(target))
}

/// A remote lock's name, checked as a path is: a non-empty string without NUL.
fn lock_name(name: &str, what: &str) -> Result<PathBuf> {
    if name.is_empty() || name.contains('\0') {
        return Err(LockError::invalid(format!(
            "{what} must be a non-empty lock name without NUL characters"
        )));
    }
    Ok(PathBuf::from(name))
}

fn locked_error(target: &Path, holders: Vec<OwnerRecord>) -> LockError {
    LockError::new(
        code::LOCKED,
        format!(
            "{} is locked by {}",
            target.display(),
            describe_holders(&holders)
        ),
        Some(target),
    )
}

fn timeout_error(target: &Path, holders: Vec<OwnerRecord>, wait: Wait) -> LockError {
    let waited = match wait {
        Wait::For(d) => format!("{} ms", d.as_millis()),
        _ => "the timeout".into(),
    };
    LockError::new(
        code::TIMEOUT,
        format!(
            "Timed out after {waited} waiting for the lock on {}, held by {}",
            target.display(),
            describe_holders(&holders)
        ),
        Some(target),
    )
}

/// "mcp-server (PID 12345 on build-1, held 3.2 s)", for error messages.
pub fn describe_holders(holders: &[OwnerRecord]) -> String {
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
    match holders {
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
    use crate::engine::backend::Strategy;

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

    /// Whether a third manager gets the lock on `target(dir)` now.
    fn is_free(dir: &tempfile::TempDir) -> bool {
        manager("c")
            .try_acquire(&target(dir), &AcquireOptions::default())
            .unwrap()
            .is_some()
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
        assert!(is_free(&dir), "the lock is free for another manager");
    }

    #[test]
    fn nothing_is_granted_once_closed_not_even_a_wait_won_at_that_instant() {
        let dir = tempfile::tempdir().unwrap();
        let a = manager("a");
        a.close();
        let err = a
            .try_acquire(&target(&dir), &AcquireOptions::default())
            .unwrap_err();
        assert_eq!(err.code, "ABORT_ERR");
        assert_eq!(a.held_count(), 0);
        // A wait whose lock came as close() ran: the grant is let go, not registered.
        let b = manager("b");
        let (_, lockfile) = b.resolve(&target(&dir), None, None).unwrap();
        let lock = open_backend(Strategy::Kernel, 10_000)
            .unwrap()
            .contender(&lockfile, LockMode::Exclusive)
            .unwrap()
            .try_acquire(&b.inner.claimant, "b-1".into(), false)
            .unwrap()
            .unwrap();
        b.close();
        let err = b
            .register(Path::new(&target(&dir)), lock, Instant::now())
            .unwrap_err();
        assert_eq!(err.code, "ABORT_ERR");
        assert_eq!(b.held_count(), 0);
        assert!(is_free(&dir), "the lock is free for another manager");
    }

    #[test]
    fn heartbeats_are_clamped_to_half_of_stale_and_never_rounded_to_none() {
        assert_eq!(heartbeat_period(None, 5_000, false).unwrap(), 5_000);
        assert_eq!(
            heartbeat_period(Some(60_000.0), 5_000, true).unwrap(),
            5_000
        );
        assert_eq!(
            heartbeat_period(Some(10_000.0), 5_000, false).unwrap(),
            5_000
        );
        assert_eq!(heartbeat_period(Some(0.5), 5_000, true).unwrap(), 1);
        assert_eq!(heartbeat_period(Some(0.0), 5_000, false).unwrap(), 0);
        assert_eq!(
            heartbeat_period(Some(0.0), 5_000, true).unwrap_err().code,
            "EINVAL"
        );
        assert_eq!(
            heartbeat_period(Some(f64::NAN), 5_000, false)
                .unwrap_err()
                .code,
            "EINVAL"
        );
    }

    /// A held lock whose heartbeat blocks until the test lets it go.
    #[derive(Debug)]
    struct StuckBeat {
        path: PathBuf,
        record: OwnerRecord,
        entered: std::sync::mpsc::SyncSender<()>,
        go: std::sync::mpsc::Receiver<()>,
    }

    impl HeldLock for StuckBeat {
        fn path(&self) -> &Path {
            &self.path
        }
        fn record(&self) -> &OwnerRecord {
            &self.record
        }
        fn beat(&mut self, _now_ms: u64) -> Result<()> {
            let _ = self.entered.send(());
            let _ = self.go.recv();
            Ok(())
        }
        fn release(self: Box<Self>) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn acquires_and_releases_go_on_while_a_heartbeat_does_its_file_io() {
        let dir = tempfile::tempdir().unwrap();
        let m = LockManager::new(ManagerOptions {
            heartbeat_ms: Some(0.0), // beats only when the test calls `beat`
            ..ManagerOptions::new("m")
        })
        .unwrap();
        let (entered_tx, entered) = std::sync::mpsc::sync_channel(1);
        let (go, go_rx) = std::sync::mpsc::channel();
        let stuck = StuckBeat {
            path: dir.path().join("stuck.lock"),
            record: m
                .inner
                .claimant
                .record(LockMode::Exclusive, "stuck".into(), 1),
            entered: entered_tx,
            go: go_rx,
        };
        m.register(&dir.path().join("stuck"), Box::new(stuck), Instant::now())
            .unwrap();
        let beating = {
            let m = m.clone();
            std::thread::spawn(move || m.beat())
        };
        entered.recv_timeout(Duration::from_secs(30)).unwrap();
        let (done_tx, done) = std::sync::mpsc::channel();
        let worker = {
            let (m, target) = (m.clone(), target(&dir));
            std::thread::spawn(move || {
                let grant = m
                    .try_acquire(&target, &AcquireOptions::default())
                    .unwrap()
                    .unwrap();
                m.release(grant.id, code::RELEASED).unwrap();
                let _ = done_tx.send(m.held_count());
            })
        };
        // A deadlock detector, not a speed check: before the fix this never came.
        let held = done.recv_timeout(Duration::from_secs(30));
        go.send(()).unwrap();
        beating.join().unwrap();
        worker.join().unwrap();
        assert_eq!(
            held.expect("an acquire and release waited for a heartbeat's file I/O"),
            1
        );
    }

    #[cfg(unix)]
    #[test]
    fn an_inheritable_descriptor_is_the_held_lock_without_close_on_exec() {
        use std::os::fd::{FromRawFd, OwnedFd};
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let a = manager("a");
        let grant = a
            .try_acquire(&target(&dir), &AcquireOptions::default())
            .unwrap()
            .unwrap();
        let fd = a.inheritable_fd(grant.id).unwrap().unwrap();
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        let copy = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        assert_eq!(flags & libc::FD_CLOEXEC, 0);
        assert_eq!(
            copy.metadata().unwrap().ino(),
            std::fs::metadata(&grant.lockfile).unwrap().ino()
        );
        // The copy shares the lock: closing the manager's grant releases both.
        a.release(grant.id, code::RELEASED).unwrap();
        drop(copy);
        assert_eq!(a.inheritable_fd(grant.id).unwrap_err().code, "ENOTACQUIRED");
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
