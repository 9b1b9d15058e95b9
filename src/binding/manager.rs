//! `NativeLockManager`: the class JavaScript's `LockManager` wraps. Each method reads
//! its arguments, hands off to the engine's `LockManager` and converts the result.

use napi::bindgen_prelude::{AsyncTask, ClassInstance, Either, Env, Function, Object, Unknown};
use napi::threadsafe_function::ThreadsafeFunctionCallMode;
use napi_derive::napi;
use tokio_util::sync::CancellationToken;

use crate::engine::backend::redis::RedisConfig;
use crate::engine::backend::Strategy;
use crate::engine::{
    self, code, AcquireOptions, Acquisition, LockError, LockManager, ManagerOptions,
};

use super::args as js_args;
use super::calls::{
    grant_id, guarded, js_thread_events, settle_in_background, settle_with, spawn_on_js_thread,
};
use super::errors as js_error;
use super::lock_types::{
    grant_value, list_statuses, GrantParts, NativeCleanup, NativeGrant, NativeMetrics, NativeStatus,
};

/// Ends one pending `acquire` early; `lib/lock-manager.js` calls `cancel()` when the
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
            let strategy = match js_args::optional_string(options, "strategy")? {
                Some(name) => Strategy::parse(&name)?,
                None => Strategy::Kernel,
            };
            let strategy = match (
                strategy,
                js_args::optional_redis(options, RedisConfig::from_env())?,
            ) {
                (Strategy::Redis(_), Some(config)) => Strategy::Redis(config),
                (_, Some(_)) => {
                    return Err(LockError::invalid(
                        "the redis option goes with strategy: 'redis'",
                    ))
                }
                (strategy, None) => strategy,
            };
            let defaults = ManagerOptions::new(owner);
            Ok(NativeLockManager {
                engine: LockManager::new(ManagerOptions {
                    lock_dir: js_args::optional_string(options, "lockDir")?.map(Into::into),
                    timeout: js_args::optional_wait(options, "timeout")?
                        .unwrap_or(defaults.timeout),
                    stale_ms: js_args::optional_millis(options, "stale")?
                        .unwrap_or(defaults.stale_ms),
                    heartbeat_ms: js_args::optional_number(options, "heartbeat")?,
                    metrics: js_args::optional_bool(options, "metrics")?.unwrap_or(true),
                    realpath: js_args::optional_bool(options, "realpath")?.unwrap_or(true),
                    strategy,
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

    /// `release` without waiting for a remote backend's round trip on this thread:
    /// returns the count still held when it is done at once (file locks), else a
    /// Promise that settles when Redis has answered. The grant is gone either way.
    #[napi(catch_unwind, ts_return_type = "number | Promise<void>")]
    pub fn release_without_blocking<'env>(
        &self,
        env: &'env Env,
        id: f64,
        by_lock: bool,
    ) -> napi::Result<Either<u32, Object<'env>>> {
        let missing = if by_lock {
            code::RELEASED
        } else {
            code::NOT_ACQUIRED
        };
        match guarded(env, || {
            self.engine.release_without_blocking(grant_id(id), missing)
        })? {
            None => Ok(Either::A(self.engine.held_count() as u32)),
            Some(pending) => settle_with(env, pending, |()| ()).map(Either::B),
        }
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

    /// A copy of a held lock's descriptor that a child process inherits (see
    /// `LockManager::inheritable_fd`), or `null` when the lock has none to give
    /// (the mkdir strategy, or not Unix). The caller closes it.
    #[napi(catch_unwind)]
    pub fn inheritable_fd(&self, env: Env, id: f64) -> napi::Result<Option<i32>> {
        #[cfg(unix)]
        return guarded(&env, || self.engine.inheritable_fd(grant_id(id)));
        #[cfg(not(unix))]
        {
            let _ = (env, id);
            Ok(None)
        }
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
                .resolve(&target, options.lockfile_path.as_deref(), options.realpath)
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

    /// Who holds the lock on `path` (any process's). The record reads and process
    /// look-ups run on the threadpool.
    #[napi(catch_unwind, ts_return_type = "Promise<NativeStatus>")]
    pub fn status(
        &self,
        env: Env,
        path: Unknown,
        options: Option<Unknown>,
    ) -> napi::Result<AsyncTask<super::engine_task::EngineTask<NativeStatus>>> {
        let (target, options) =
            read_request(path, options).map_err(|e| js_error::to_js(&env, e))?;
        let engine = self.engine.clone();
        Ok(super::engine_task::EngineTask::spawn(
            "reading a status",
            move || {
                engine
                    .status(&target, options.lockfile_path.as_deref())
                    .map(Into::into)
            },
        ))
    }

    #[napi(catch_unwind)]
    pub fn status_sync(
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

    /// The status of every lock file in `dir`, read on the threadpool.
    #[napi(catch_unwind, ts_return_type = "Promise<Array<NativeStatus>>")]
    pub fn list(
        &self,
        env: Env,
        dir: Option<Unknown>,
    ) -> napi::Result<AsyncTask<super::engine_task::EngineTask<Vec<NativeStatus>>>> {
        let dir = optional_dir(dir).map_err(|e| js_error::to_js(&env, e))?;
        let engine = self.engine.clone();
        Ok(super::engine_task::EngineTask::spawn(
            "listing locks",
            move || list_statuses(&engine, dir.as_deref()),
        ))
    }

    #[napi(catch_unwind)]
    pub fn list_sync(&self, env: Env, dir: Option<Unknown>) -> napi::Result<Vec<NativeStatus>> {
        guarded(&env, || {
            list_statuses(&self.engine, optional_dir(dir)?.as_deref())
        })
    }

    /// Removes what dead holders left; with `dryRun`, only lists what it would remove.
    /// The scan and the process look-ups run on the threadpool.
    #[napi(catch_unwind, ts_return_type = "Promise<NativeCleanup>")]
    pub fn cleanup(
        &self,
        env: Env,
        dir: Option<Unknown>,
        dry_run: Option<bool>,
    ) -> napi::Result<AsyncTask<super::engine_task::EngineTask<NativeCleanup>>> {
        let dir = optional_dir(dir).map_err(|e| js_error::to_js(&env, e))?;
        let engine = self.engine.clone();
        Ok(super::engine_task::EngineTask::spawn(
            "cleaning up",
            move || {
                let report = engine.cleanup(dir.as_deref(), dry_run.unwrap_or(false))?;
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
            },
        ))
    }

    /// Breaks a lock nobody alive holds; resolves to whether anything was removed.
    /// Runs on the threadpool.
    #[napi(catch_unwind, ts_return_type = "Promise<boolean>")]
    pub fn force_release(
        &self,
        env: Env,
        path: Unknown,
        options: Option<Unknown>,
        force: bool,
    ) -> napi::Result<AsyncTask<super::engine_task::EngineTask<bool>>> {
        let (target, options) =
            read_request(path, options).map_err(|e| js_error::to_js(&env, e))?;
        let engine = self.engine.clone();
        Ok(super::engine_task::EngineTask::spawn(
            "force-releasing",
            move || engine.force_release(&target, options.lockfile_path.as_deref(), force),
        ))
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

    /// Ends pending waits and releases everything; later acquires fail. Never waits
    /// on this thread for Redis: `undefined` when done at once (file locks), else a
    /// Promise that settles when the leases are given back.
    #[napi(catch_unwind, ts_return_type = "Promise<void> | undefined")]
    pub fn close<'env>(&self, env: &'env Env) -> napi::Result<Option<Object<'env>>> {
        self.engine
            .close_without_blocking()
            .map(|given_back| settle_with(env, given_back, |()| ()))
            .transpose()
    }
}

pub(crate) fn optional_dir(dir: Option<Unknown>) -> engine::Result<Option<String>> {
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

pub(crate) fn read_request(
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
            realpath: js_args::optional_bool(options, "realpath")?,
        })
    };
    let options = read_options().map_err(|e| e.about(&target))?;
    Ok((target, options))
}
