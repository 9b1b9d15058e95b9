#![deny(clippy::all)]
//! The JavaScript surface of the native addon. Each function reads its arguments,
//! hands off to the engine and converts the result; the work lives in `engine`.
//! `lockwright.js` builds the public API (re-entrant `withLock`, `Symbol.asyncDispose`,
//! exit handling) on top of these.

pub mod engine;
mod js_args;
mod js_error;

use napi::bindgen_prelude::{ClassInstance, Either, Env, Object, Unknown};
use napi_derive::napi;
use tokio_util::sync::CancellationToken;

use engine::manager::DEFAULT_TIMEOUT_MS;
use engine::{code, AcquireOptions, Acquisition, LockError, LockGrant, LockManager, ManagerOptions, Wait};


/// A granted lock, as plain data; `lockwright.js` wraps it in a `Lock`.
#[napi(object)]
pub struct NativeGrant {
    /// Process-unique number that `release` takes.
    pub id: u32,
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

impl From<LockGrant> for NativeGrant {
    fn from(grant: LockGrant) -> Self {
        NativeGrant {
            id: grant.id as u32,
            path: grant.target.to_string_lossy().into_owned(),
            lockfile_path: grant.lockfile.to_string_lossy().into_owned(),
            mode: grant.mode.as_str().to_string(),
            token: grant.token as i64,
            lock_id: grant.lock_id,
            acquired_at: grant.acquired_at as f64,
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
        WaitCanceller { token: CancellationToken::new() }
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
    #[napi(constructor)]
    pub fn new(env: Env, options: Option<Unknown>) -> napi::Result<Self> {
        let build = || -> engine::Result<Self> {
            let options = js_args::options(options, "options")?;
            let options = options.as_ref();
            let owner = js_args::optional_string(options, "owner")?.unwrap_or_else(|| "node".into());
            match js_args::optional_string(options, "strategy")?.as_deref() {
                None | Some("kernel") => {}
                Some(other) => return Err(LockError::invalid(format!("strategy must be 'kernel', got '{other}'"))),
            }
            // Checked now so a bad value fails at construction; stale detection uses them.
            js_args::optional_millis(options, "stale")?;
            js_args::optional_millis(options, "heartbeat")?;
            let timeout = js_args::optional_wait(options, "timeout")?
                .unwrap_or(Wait::For(std::time::Duration::from_millis(DEFAULT_TIMEOUT_MS)));
            let lock_dir = js_args::optional_string(options, "lockDir")?.map(Into::into);
            Ok(NativeLockManager { engine: LockManager::new(ManagerOptions { owner, lock_dir, timeout })? })
        };
        build().map_err(|e| js_error::to_js(&env, e))
    }

    #[napi(getter)]
    pub fn owner(&self) -> String {
        self.engine.owner().to_string()
    }

    #[napi(getter)]
    pub fn held_count(&self) -> u32 {
        self.engine.held_count() as u32
    }

    /// Resolves to a grant, or settles at once: returns the grant itself when the lock
    /// was free, throws for bad input or `timeout: 0` on a held lock, and otherwise
    /// returns a Promise that the wait settles.
    #[napi(catch_unwind, ts_return_type = "NativeGrant | Promise<NativeGrant>")]
    pub fn acquire<'env>(
        &self,
        env: &'env Env,
        path: Unknown,
        options: Option<Unknown>,
        canceller: Option<ClassInstance<WaitCanceller>>,
    ) -> napi::Result<Either<NativeGrant, Object<'env>>> {
        let request = read_request(path, options).map_err(|e| js_error::to_js(env, e))?;
        let cancel = canceller.map(|c| c.token.clone()).unwrap_or_default();
        match self.engine.acquire(&request.0, &request.1, cancel) {
            Acquisition::Ready(result) => result.map(|g| Either::A(g.into())).map_err(|e| js_error::to_js(env, e)),
            Acquisition::Waiting(wait) => {
                let (deferred, promise) = env.create_deferred()?;
                engine::waiting::runtime().spawn(async move {
                    // The wait runs as its own task so that a panic in it settles the
                    // promise with an error instead of leaving it pending forever.
                    let result = tokio::spawn(wait).await.unwrap_or_else(|panic| {
                        Err(LockError::new("EPANIC", format!("lockwright: internal error while waiting: {panic}"), None))
                    });
                    deferred.resolve(move |env| result.map(NativeGrant::from).map_err(|e| js_error::to_js(&env, e)));
                });
                Ok(Either::B(promise))
            }
        }
    }

    /// Blocks the calling thread up to the timeout.
    #[napi(catch_unwind)]
    pub fn acquire_sync(&self, env: Env, path: Unknown, options: Option<Unknown>) -> napi::Result<NativeGrant> {
        let (target, options) = read_request(path, options).map_err(|e| js_error::to_js(&env, e))?;
        self.engine.acquire_blocking(&target, &options).map(Into::into).map_err(|e| js_error::to_js(&env, e))
    }

    /// One attempt: the grant, or `null` when the lock is held.
    #[napi(catch_unwind)]
    pub fn try_acquire(&self, env: Env, path: Unknown, options: Option<Unknown>) -> napi::Result<Option<NativeGrant>> {
        let (target, options) = read_request(path, options).map_err(|e| js_error::to_js(&env, e))?;
        self.engine.try_acquire(&target, &options).map(|g| g.map(Into::into)).map_err(|e| js_error::to_js(&env, e))
    }

    /// Releases a grant. `missingCode` is thrown when this manager does not hold it.
    #[napi(catch_unwind)]
    pub fn release(&self, env: Env, id: u32, missing_code: String) -> napi::Result<()> {
        let missing = if missing_code == code::RELEASED { code::RELEASED } else { code::NOT_ACQUIRED };
        self.engine.release(id as u64, missing).map_err(|e| js_error::to_js(&env, e))
    }

    /// Releases every grant this manager holds on `path`; returns how many.
    #[napi(catch_unwind)]
    pub fn release_path(&self, env: Env, path: Unknown, lockfile_path: Option<String>) -> napi::Result<u32> {
        let target = js_args::string(&path, "path").map_err(|e| js_error::to_js(&env, e))?;
        self.engine
            .release_path(&target, lockfile_path.as_deref())
            .map(|n| n as u32)
            .map_err(|e| js_error::to_js(&env, e))
    }

    #[napi]
    pub fn is_held(&self, id: u32) -> bool {
        self.engine.is_held(id as u64)
    }

    /// The lock file an acquire of `path` with `options` would use, after the same
    /// checks `acquire` makes; `withLock` keys re-entry by it.
    #[napi(catch_unwind)]
    pub fn lockfile_for(&self, env: Env, path: Unknown, options: Option<Unknown>) -> napi::Result<String> {
        let (target, options) = read_request(path, options).map_err(|e| js_error::to_js(&env, e))?;
        self.engine
            .resolve(&target, options.lockfile_path.as_deref())
            .map(|(_, lockfile)| lockfile.to_string_lossy().into_owned())
            .map_err(|e| js_error::to_js(&env, e))
    }

    #[napi]
    pub fn held(&self) -> Vec<NativeGrant> {
        self.engine.held_grants().into_iter().map(Into::into).collect()
    }

    /// Releases everything held, keeping the manager usable (process exit).
    #[napi]
    pub fn release_all(&self) -> u32 {
        self.engine.release_all() as u32
    }

    /// Ends pending waits and releases everything; later acquires fail.
    #[napi]
    pub fn close(&self) -> u32 {
        self.engine.close() as u32
    }
}

fn read_request(path: Unknown, options: Option<Unknown>) -> engine::Result<(String, AcquireOptions)> {
    let target = js_args::string(&path, "path")?;
    let options = js_args::options(options, "options")?;
    let options = options.as_ref();
    Ok((
        target,
        AcquireOptions {
            mode: js_args::optional_mode(options)?.unwrap_or(engine::LockMode::Exclusive),
            timeout: js_args::optional_wait(options, "timeout")?,
            lockfile_path: js_args::optional_string(options, "lockfilePath")?,
        },
    ))
}
