//! Test and benchmark hooks, not API: built only with the `test-hooks` feature, which
//! `npm test` and `npm run bench` turn on and a published build leaves off.

use napi::bindgen_prelude::{Either, Env, Object};
use napi_derive::napi;

use crate::engine::{self};

use super::calls::{guarded, js_thread_events, settle_in_background, spawn_on_js_thread};

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

/// Test hook, not API: whether contended acquires on this thread wait on the JS thread
/// itself (see `js_thread_wait.rs`) rather than on the wait runtime.
#[napi(js_name = "__waitsOnJsThread")]
pub fn waits_on_js_thread(env: Env) -> bool {
    js_thread_events(&env).is_some()
}

/// For `npm run bench`: the kernel primitives and one engine cycle, timed in Rust in
/// the directory `dir` (see `bench_floors.rs`).
#[napi(catch_unwind)]
pub fn benchmark_floors(
    env: Env,
    dir: String,
    iterations: u32,
) -> napi::Result<super::bench_floors::Floors> {
    guarded(&env, || {
        super::bench_floors::measure(std::path::Path::new(&dir), iterations)
    })
}
