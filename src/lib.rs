#![deny(clippy::all)]
//! The JavaScript surface of the native addon. Each function reads its arguments,
//! hands off to the engine and converts the result; the work lives in `engine`.
//! `lockwright.js` builds the public API (re-entrant `withLock`, `Symbol.asyncDispose`,
//! exit handling) on top of these.

mod atomic_write_task;
#[cfg(feature = "test-hooks")]
mod bench_floors;
pub mod engine;
mod js_args;
mod js_error;
#[cfg(target_os = "linux")]
mod js_thread_wait;

use napi::bindgen_prelude::{
    AsyncTask, Buffer, ClassInstance, Either, Env, FnArgs, Object, Unknown,
};
use napi_derive::napi;
use tokio_util::sync::CancellationToken;

use engine::inspect::{LockStatus, OwnerStatus};
use engine::metrics::{Distribution, MetricsSnapshot};
use engine::{
    code, AcquireOptions, Acquisition, LockError, LockGrant, LockManager, ManagerOptions,
};
use napi::bindgen_prelude::Function;
use napi::threadsafe_function::ThreadsafeFunctionCallMode;

/// A granted lock, as plain data; `lockwright.js` wraps it in a `Lock`.
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

/// What `makeGrant` (from `lockwright.js`) takes: id, token, acquiredAt, lockId, path,
/// lockfilePath and whether the grant is shared.
type GrantParts = FnArgs<(f64, f64, f64, String, String, String, bool)>;

/// Builds an immediate grant with `makeGrant`. One call with plain values costs about
/// a third of a native object with seven named properties (napi defines each name
/// anew), and this is on every uncontended acquire. Waits, which are slow anyway,
/// still resolve to a `NativeGrant`.
fn grant_value<'env>(
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

/// Ends one pending `acquire` early; `lockwright.js` calls `cancel()` when the
/// caller's `AbortSignal` fires.
#[napi]
pub struct WaitCanceller {
    token: CancellationToken,
}

#[napi]
impl WaitCanceller {
    #[napi(constructor)]
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        WaitCanceller {
            token: CancellationToken::new(),
        }
    }

    #[napi]
    pub fn cancel(&self) {
        self.token.cancel();
    }
}

#[napi]
pub struct NativeLockManager {
    engine: LockManager,
}

#[napi]
impl NativeLockManager {
    #[napi(constructor, catch_unwind)]
    pub fn new(env: Env, options: Option<Unknown>) -> napi::Result<Self> {
        let build = || -> engine::Result<Self> {
            let options = js_args::options(options, "options")?;
            let options = options.as_ref();
            let owner =
                js_args::optional_string(options, "owner")?.unwrap_or_else(|| "node".into());
            let mkdir = match js_args::optional_string(options, "strategy")?.as_deref() {
                None | Some("kernel") => false,
                Some("mkdir") => true,
                Some(other) => {
                    return Err(LockError::invalid(format!(
                        "strategy must be 'kernel' or 'mkdir', got '{other}'"
                    )))
                }
            };
            let defaults = ManagerOptions::new(owner);
            Ok(NativeLockManager {
                engine: LockManager::new(ManagerOptions {
                    lock_dir: js_args::optional_string(options, "lockDir")?.map(Into::into),
                    timeout: js_args::optional_wait(options, "timeout")?
                        .unwrap_or(defaults.timeout),
                    stale_ms: js_args::optional_millis(options, "stale")?
                        .unwrap_or(defaults.stale_ms),
                    heartbeat_ms: js_args::optional_millis(options, "heartbeat")?,
                    metrics: js_args::optional_bool(options, "metrics")?.unwrap_or(true),
                    mkdir,
                    ..defaults
                })?,
            })
        };
        guarded(&env, build)
    }

    #[napi(getter)]
    pub fn owner(&self) -> String {
        self.engine.owner().to_string()
    }

    #[napi(getter, catch_unwind)]
    pub fn held_count(&self) -> u32 {
        self.engine.held_count() as u32
    }

    /// Resolves to a grant, or settles at once: returns `makeGrant`'s grant when the
    /// lock was free, throws for bad input or `timeout: 0` on a held lock, and
    /// otherwise returns a Promise that the wait settles with a `NativeGrant`.
    #[napi(
        catch_unwind,
        ts_args_type = "path: unknown, options: unknown, canceller: WaitCanceller | undefined | null, makeGrant: (id: number, token: number, acquiredAt: number, lockId: string, path: string, lockfilePath: string, shared: boolean) => NativeGrant",
        ts_return_type = "NativeGrant | Promise<NativeGrant>"
    )]
    pub fn acquire<'env>(
        &self,
        env: &'env Env,
        path: Unknown,
        options: Option<Unknown>,
        canceller: Option<ClassInstance<WaitCanceller>>,
        make_grant: Function<'env, GrantParts, Unknown<'env>>,
    ) -> napi::Result<Either<Unknown<'env>, Object<'env>>> {
        let cancel = canceller.map(|c| c.token.clone()).unwrap_or_default();
        let on_js_thread = std::cell::Cell::new(false);
        let acquisition = guarded(env, || {
            let (target, options) = read_request(path, options)?;
            Ok(self.engine.acquire_woken_by(&target, &options, cancel, || {
                let events = js_thread_events(env);
                on_js_thread.set(events.is_some());
                events
            }))
        })?;
        match acquisition {
            Acquisition::Ready(result) => {
                let grant = result.map_err(|e| js_error::to_js(env, e))?;
                grant_value(&self.engine, &make_grant, grant).map(Either::A)
            }
            Acquisition::Waiting(wait) if on_js_thread.get() => {
                spawn_on_js_thread(env, wait).map(Either::B)
            }
            Acquisition::Waiting(wait) => settle_in_background(env, wait).map(Either::B),
        }
    }

    /// Blocks the calling thread up to the timeout.
    #[napi(
        catch_unwind,
        ts_args_type = "path: unknown, options: unknown, makeGrant: (id: number, token: number, acquiredAt: number, lockId: string, path: string, lockfilePath: string, shared: boolean) => NativeGrant",
        ts_return_type = "NativeGrant"
    )]
    pub fn acquire_sync<'env>(
        &self,
        env: Env,
        path: Unknown,
        options: Option<Unknown>,
        make_grant: Function<'env, GrantParts, Unknown<'env>>,
    ) -> napi::Result<Unknown<'env>> {
        let grant = guarded(&env, || {
            let (target, options) = read_request(path, options)?;
            self.engine.acquire_blocking(&target, &options)
        })?;
        grant_value(&self.engine, &make_grant, grant)
    }

    /// One attempt: the grant, or `null` when the lock is held.
    #[napi(
        catch_unwind,
        ts_args_type = "path: unknown, options: unknown, makeGrant: (id: number, token: number, acquiredAt: number, lockId: string, path: string, lockfilePath: string, shared: boolean) => NativeGrant",
        ts_return_type = "NativeGrant | null"
    )]
    pub fn try_acquire<'env>(
        &self,
        env: Env,
        path: Unknown,
        options: Option<Unknown>,
        make_grant: Function<'env, GrantParts, Unknown<'env>>,
    ) -> napi::Result<Option<Unknown<'env>>> {
        let grant = guarded(&env, || {
            let (target, options) = read_request(path, options)?;
            self.engine.try_acquire(&target, &options)
        })?;
        grant
            .map(|g| grant_value(&self.engine, &make_grant, g))
            .transpose()
    }

    /// Releases a grant; returns how many this manager still holds. When this manager
    /// does not hold it, throws `ERELEASED` if `byLock` (a `Lock` releasing itself),
    /// else `ENOTACQUIRED`. A flag, not the code: a string argument would cost a
    /// copy and an allocation on every release.
    #[napi(catch_unwind)]
    pub fn release(&self, env: Env, id: f64, by_lock: bool) -> napi::Result<u32> {
        let missing = if by_lock {
            code::RELEASED
        } else {
            code::NOT_ACQUIRED
        };
        guarded(&env, || self.engine.release(grant_id(id), missing))?;
        Ok(self.engine.held_count() as u32)
    }

    /// Releases every grant this manager holds on `path`; returns how many.
    #[napi(catch_unwind)]
    pub fn release_path(
        &self,
        env: Env,
        path: Unknown,
        lockfile_path: Option<String>,
    ) -> napi::Result<u32> {
        guarded(&env, || {
            let target = js_args::string(&path, "path")?;
            self.engine
                .release_path(&target, lockfile_path.as_deref())
                .map(|n| n as u32)
        })
    }

    #[napi(catch_unwind)]
    pub fn is_held(&self, id: f64) -> bool {
        self.engine.is_held(grant_id(id))
    }

    /// The lock file an acquire of `path` with `options` would use, after the same
    /// checks `acquire` makes; `withLock` keys re-entry by it.
    #[napi(catch_unwind)]
    pub fn lockfile_for(
        &self,
        env: Env,
        path: Unknown,
        options: Option<Unknown>,
    ) -> napi::Result<String> {
        guarded(&env, || {
            let (target, options) = read_request(path, options)?;
            self.engine
                .resolve(&target, options.lockfile_path.as_deref())
                .map(|(_, lockfile)| lockfile.to_string_lossy().into_owned())
        })
    }

    #[napi(catch_unwind)]
    pub fn held(&self) -> Vec<NativeGrant> {
        self.engine
            .held_grants()
            .into_iter()
            .map(Into::into)
            .collect()
    }

    #[napi(getter)]
    pub fn stale(&self) -> f64 {
        self.engine.stale_ms() as f64
    }

    #[napi(catch_unwind)]
    pub fn status(
        &self,
        env: Env,
        path: Unknown,
        options: Option<Unknown>,
    ) -> napi::Result<NativeStatus> {
        guarded(&env, || {
            let (target, options) = read_request(path, options)?;
            self.engine
                .status(&target, options.lockfile_path.as_deref())
                .map(Into::into)
        })
    }

    #[napi(catch_unwind)]
    pub fn list(&self, env: Env, dir: Option<Unknown>) -> napi::Result<Vec<NativeStatus>> {
        guarded(&env, || {
            let dir = optional_dir(dir)?;
            self.engine
                .list(dir.as_deref())
                .map(|l| l.into_iter().map(Into::into).collect())
        })
    }

    /// Removes what dead holders left; with `dryRun`, only lists what it would remove.
    #[napi(catch_unwind)]
    pub fn cleanup(
        &self,
        env: Env,
        dir: Option<Unknown>,
        dry_run: Option<bool>,
    ) -> napi::Result<NativeCleanup> {
        let report = guarded(&env, || {
            self.engine
                .cleanup(optional_dir(dir)?.as_deref(), dry_run.unwrap_or(false))
        })?;
        let strings = |paths: &[std::path::PathBuf]| -> Vec<String> {
            paths
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect()
        };
        Ok(NativeCleanup {
            removed: strings(&report.removed),
            cleared: strings(&report.cleared),
            kept: report.kept as u32,
        })
    }

    /// Breaks a lock nobody alive holds; returns whether anything was removed.
    #[napi(catch_unwind)]
    pub fn force_release(
        &self,
        env: Env,
        path: Unknown,
        options: Option<Unknown>,
        force: bool,
    ) -> napi::Result<bool> {
        guarded(&env, || {
            let (target, options) = read_request(path, options)?;
            self.engine
                .force_release(&target, options.lockfile_path.as_deref(), force)
        })
    }

    #[napi(catch_unwind)]
    pub fn metrics(&self) -> NativeMetrics {
        self.engine.metrics().into()
    }

    #[napi(catch_unwind)]
    pub fn reset_metrics(&self) {
        self.engine.reset_metrics();
    }

    /// `callback([lockId, code, message, path])` runs on the JS thread when the
    /// heartbeat finds a held lock lost. It does not keep the process alive.
    #[napi(
        ts_args_type = "callback: (lost: [lockId: string, code: string, message: string, path: string]) => void"
    )]
    pub fn on_compromised(
        &self,
        callback: Function<(String, String, String, String), ()>,
    ) -> napi::Result<()> {
        let tsfn = callback
            .build_threadsafe_function()
            .weak::<true>()
            .callee_handled::<false>()
            .build()?;
        self.engine
            .set_on_compromised(Some(Box::new(move |grant, err| {
                let path = err.path.as_deref().unwrap_or(&grant.lockfile);
                tsfn.call(
                    (
                        grant.lock_id.clone(),
                        err.code.clone(),
                        err.message.clone(),
                        path.to_string_lossy().into_owned(),
                    ),
                    ThreadsafeFunctionCallMode::NonBlocking,
                );
            })));
        Ok(())
    }

    /// Releases everything held, keeping the manager usable (process exit).
    #[napi(catch_unwind)]
    pub fn release_all(&self) -> u32 {
        self.engine.release_all() as u32
    }

    /// Ends pending waits and releases everything; later acquires fail.
    #[napi(catch_unwind)]
    pub fn close(&self) -> u32 {
        self.engine.close() as u32
    }
}

/// Replaces `path` with `data` so a crash leaves the old content or the new, never a
/// mix. Runs on the threadpool; resolves when the new content is durable.
#[napi(catch_unwind, ts_return_type = "Promise<void>")]
pub fn write_file_atomic(
    env: Env,
    path: Unknown,
    data: Buffer,
    options: Option<Unknown>,
) -> napi::Result<AsyncTask<atomic_write_task::AtomicWriteTask>> {
    let (path, options) =
        read_write_request(path, options).map_err(|e| js_error::to_js(&env, e))?;
    Ok(AsyncTask::new(atomic_write_task::AtomicWriteTask {
        path,
        data: data.to_vec(),
        options,
        failure: None,
    }))
}

#[napi(catch_unwind)]
pub fn write_file_atomic_sync(
    env: Env,
    path: Unknown,
    data: Buffer,
    options: Option<Unknown>,
) -> napi::Result<()> {
    let (path, options) =
        read_write_request(path, options).map_err(|e| js_error::to_js(&env, e))?;
    guarded(&env, || {
        engine::atomic_file::write_file_atomic(&path, &data, options)
    })
}

/// The release events that wake waits on this JS thread itself, if it can have them.
#[cfg(target_os = "linux")]
fn js_thread_events(env: &Env) -> Option<std::sync::Arc<engine::release_events::ReleaseEvents>> {
    js_thread_wait::events(env)
}

#[cfg(not(target_os = "linux"))]
fn js_thread_events(_env: &Env) -> Option<std::sync::Arc<engine::release_events::ReleaseEvents>> {
    None
}

#[cfg(target_os = "linux")]
fn spawn_on_js_thread<'env>(
    env: &'env Env,
    wait: engine::manager::PendingGrant,
) -> napi::Result<Object<'env>> {
    js_thread_wait::spawn(env, wait)
}

#[cfg(not(target_os = "linux"))]
fn spawn_on_js_thread<'env>(
    env: &'env Env,
    wait: engine::manager::PendingGrant,
) -> napi::Result<Object<'env>> {
    settle_in_background(env, wait)
}

/// A Promise that `wait`, run on the wait runtime, settles. The wait runs as its own
/// task so that a panic in it settles the promise with `EPANIC` instead of leaving it
/// pending forever.
fn settle_in_background<'env>(
    env: &'env Env,
    wait: impl std::future::Future<Output = engine::Result<LockGrant>> + Send + 'static,
) -> napi::Result<Object<'env>> {
    let (deferred, promise) = env.create_deferred()?;
    engine::waiting::runtime().spawn(async move {
        let result = tokio::spawn(wait).await.unwrap_or_else(|failed| {
            Err(match failed.try_into_panic() {
                Ok(payload) => LockError::panicked("waiting", payload.as_ref()),
                // Cancelled: only the runtime's own shutdown does that.
                Err(_) => LockError::new(code::ABORTED, "The wait was cancelled", None),
            })
        });
        deferred.resolve(move |env| {
            result
                .map(NativeGrant::from)
                .map_err(|e| js_error::to_js(&env, e))
        });
    });
    Ok(promise)
}

/// A grant id from JavaScript. Anything but a whole positive number becomes 0, which
/// no grant has (they count from 1), so it is simply not held.
fn grant_id(id: f64) -> u64 {
    if id.fract() == 0.0 && id >= 1.0 && id < u64::MAX as f64 {
        id as u64
    } else {
        0
    }
}

/// Runs engine work for a binding call. A panic inside (a bug in lockwright) comes
/// out as an `EPANIC` error; unwinding into Node would abort the process. Every
/// method also has napi's `catch_unwind`, for the conversions around this.
fn guarded<T>(env: &Env, work: impl FnOnce() -> engine::Result<T>) -> napi::Result<T> {
    LockError::catch_panic("running a call", work).map_err(|e| js_error::to_js(env, e))
}

#[cfg(feature = "test-hooks")]
/// Test hook, not API: panics on purpose, in engine work of this call (`'call'`),
/// inside a wait on the wait runtime (`'wait'`) or inside a wait on this JS thread
/// (`'js-thread-wait'`), so the suite can prove that a Rust panic reaches JavaScript
/// as an `EPANIC` error and never aborts Node.
#[napi(
    catch_unwind,
    js_name = "__panicForTest",
    ts_return_type = "void | Promise<never>"
)]
pub fn panic_for_test<'env>(
    env: &'env Env,
    place: String,
) -> napi::Result<Either<(), Object<'env>>> {
    let wait = Box::pin(async { panic!("deliberate panic in a wait, for the test suite") });
    match place.as_str() {
        "wait" => return settle_in_background(env, wait).map(Either::B),
        "js-thread-wait" if js_thread_events(env).is_some() => {
            return spawn_on_js_thread(env, wait).map(Either::B)
        }
        _ => {}
    }
    guarded(env, || -> engine::Result<()> {
        panic!("deliberate panic in a call, for the test suite")
    })
    .map(Either::A)
}

#[cfg(feature = "test-hooks")]
/// Test hook, not API: whether contended acquires on this thread wait on the JS thread
/// itself (see `js_thread_wait.rs`) rather than on the wait runtime.
#[napi(js_name = "__waitsOnJsThread")]
pub fn waits_on_js_thread(env: Env) -> bool {
    js_thread_events(&env).is_some()
}

#[cfg(feature = "test-hooks")]
/// For `npm run bench`: the kernel primitives and one engine cycle, timed in Rust in
/// the directory `dir` (see `bench_floors.rs`).
#[napi(catch_unwind)]
pub fn benchmark_floors(
    env: Env,
    dir: String,
    iterations: u32,
) -> napi::Result<bench_floors::Floors> {
    guarded(&env, || {
        bench_floors::measure(std::path::Path::new(&dir), iterations)
    })
}

fn read_write_request(
    path: Unknown,
    options: Option<Unknown>,
) -> engine::Result<(std::path::PathBuf, engine::atomic_file::AtomicWriteOptions)> {
    let path = engine::lock_path::validate_path(&js_args::string(&path, "path")?, "path")?;
    let options = js_args::options(options, "options")?;
    let options = options.as_ref();
    let mode = match js_args::optional_number(options, "mode")? {
        Some(m) if m.is_finite() && m >= 0.0 && m <= 0o7777 as f64 && m.fract() == 0.0 => {
            Some(m as u32)
        }
        Some(m) => {
            return Err(LockError::invalid(format!(
                "mode must be a permission number such as 0o644, got {m}"
            )))
        }
        None => None,
    };
    let fsync = js_args::optional_bool(options, "fsync")?.unwrap_or(true);
    Ok((
        path,
        engine::atomic_file::AtomicWriteOptions { mode, fsync },
    ))
}

fn optional_dir(dir: Option<Unknown>) -> engine::Result<Option<String>> {
    match dir {
        Some(value)
            if !matches!(
                value.get_type(),
                Ok(napi::ValueType::Undefined | napi::ValueType::Null)
            ) =>
        {
            js_args::string(&value, "dir").map(Some)
        }
        _ => Ok(None),
    }
}

fn read_request(
    path: Unknown,
    options: Option<Unknown>,
) -> engine::Result<(String, AcquireOptions)> {
    let target = js_args::string(&path, "path")?;
    let read_options = || -> engine::Result<AcquireOptions> {
        let options = js_args::options(options, "options")?;
        let options = options.as_ref();
        Ok(AcquireOptions {
            mode: js_args::optional_mode(options)?.unwrap_or(engine::LockMode::Exclusive),
            timeout: js_args::optional_wait(options, "timeout")?,
            lockfile_path: js_args::optional_string(options, "lockfilePath")?,
        })
    };
    let options = read_options().map_err(|e| e.about(&target))?;
    Ok((target, options))
}

#[cfg(test)]
mod tests {
    use super::grant_id;

    #[test]
    fn grant_ids_past_u32_survive_and_unreadable_ones_match_nothing() {
        assert_eq!(grant_id(1.0), 1);
        assert_eq!(grant_id(2f64.powi(32) + 5.0), (1u64 << 32) + 5);
        assert_eq!(grant_id(2f64.powi(53)), 1u64 << 53);
        for unreadable in [0.0, -1.0, 1.5, f64::NAN, f64::INFINITY, 2f64.powi(64)] {
            assert_eq!(grant_id(unreadable), 0, "{unreadable}");
        }
    }
}
