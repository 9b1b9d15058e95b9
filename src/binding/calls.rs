//! How a call crosses from JavaScript: a panic becomes `EPANIC`, a grant id is read
//! back from a double, a wait settles on the JS thread that started it.

use napi::bindgen_prelude::{Env, Object};

use crate::engine::{self, code, LockError, LockGrant};

use super::errors as js_error;
use super::lock_types::NativeGrant;

/// The release events that wake waits on this JS thread itself, if it can have them.
#[cfg(target_os = "linux")]
pub(crate) fn js_thread_events(
    env: &Env,
) -> Option<std::sync::Arc<engine::release_events::ReleaseEvents>> {
    super::js_thread_wait::events(env)
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn js_thread_events(
    _env: &Env,
) -> Option<std::sync::Arc<engine::release_events::ReleaseEvents>> {
    None
}

#[cfg(target_os = "linux")]
pub(crate) fn spawn_on_js_thread<'env>(
    env: &'env Env,
    wait: engine::manager::PendingGrant,
) -> napi::Result<Object<'env>> {
    super::js_thread_wait::spawn(env, wait)
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn spawn_on_js_thread<'env>(
    env: &'env Env,
    wait: engine::manager::PendingGrant,
) -> napi::Result<Object<'env>> {
    settle_in_background(env, wait)
}

/// A Promise that `wait`, run on the wait runtime, settles. The wait runs as its own
/// task so that a panic in it settles the promise with `EPANIC` instead of leaving it
/// pending forever.
pub(crate) fn settle_in_background<'env>(
    env: &'env Env,
    wait: impl std::future::Future<Output = engine::Result<LockGrant>> + Send + 'static,
) -> napi::Result<Object<'env>> {
    settle_with(env, wait, NativeGrant::from)
}

/// A Promise of `work`'s outcome, run on the wait runtime, as `to_js` makes it.
pub(crate) fn settle_with<'env, T, V>(
    env: &'env Env,
    work: impl std::future::Future<Output = engine::Result<T>> + Send + 'static,
    to_js: fn(T) -> V,
) -> napi::Result<Object<'env>>
where
    T: Send + 'static,
    V: napi::bindgen_prelude::ToNapiValue + 'static,
{
    let (deferred, promise) = env.create_deferred()?;
    engine::runtime::runtime().spawn(async move {
        let result = tokio::spawn(work).await.unwrap_or_else(|failed| {
            Err(match failed.try_into_panic() {
                Ok(payload) => LockError::panicked("waiting", payload.as_ref()),
                // Cancelled: only the runtime's own shutdown does that.
                Err(_) => LockError::new(code::ABORTED, "The wait was cancelled", None),
            })
        });
        deferred.resolve(move |env| result.map(to_js).map_err(|e| js_error::to_js(&env, e)));
    });
    Ok(promise)
}

/// A grant id from JavaScript. Anything but a whole positive number becomes 0, which
/// no grant has (they count from 1), so it is simply not held.
pub(crate) fn grant_id(id: f64) -> u64 {
    if id.fract() == 0.0 && id >= 1.0 && id < u64::MAX as f64 {
        id as u64
    } else {
        0
    }
}

/// Runs engine work for a binding call. A panic inside (a bug in lockwright) comes
/// out as an `EPANIC` error; unwinding into Node would abort the process. Every
/// method also has napi's `catch_unwind`, for the conversions around this.
pub(crate) fn guarded<T>(env: &Env, work: impl FnOnce() -> engine::Result<T>) -> napi::Result<T> {
    LockError::catch_panic("running a call", work).map_err(|e| js_error::to_js(env, e))
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
