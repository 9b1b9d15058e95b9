//! The JavaScript surface of the native addon, and only that: every `#[napi]` item
//! lives here. Each function reads its arguments, hands off to `crate::engine` and
//! converts the result or the error; the work lives in the engine, which knows nothing
//! of Node. `lib/` builds the public API (re-entrant `withLock`, `Symbol.asyncDispose`,
//! exit handling) on top of these.
//!
//! - `manager.rs`: the `NativeLockManager` class;
//! - `lock_types.rs`: grants, statuses and metrics as plain data;
//! - `files.rs`: `writeFileAtomic`;
//! - `args.rs`, `errors.rs`: reading arguments, typed errors with `err.code`;
//! - `calls.rs`: panics to `EPANIC`, waits settled on the JS thread;
//! - `js_thread_wait.rs`: contended acquires waited on the JS thread (Linux);
//! - `engine_task.rs`: engine work on libuv's threadpool;
//! - `test_hooks.rs`, `bench_floors.rs`: hooks for the tests and the benchmark only.

// `cargo test` builds the lib without napi's registration, so functions only
// JavaScript calls look unused there.
#![cfg_attr(test, allow(dead_code))]

mod args;
#[cfg(feature = "test-hooks")]
mod bench_floors;
mod calls;
mod engine_task;
mod errors;
mod files;
#[cfg(target_os = "linux")]
mod js_thread_wait;
mod lock_types;
mod manager;
#[cfg(feature = "test-hooks")]
mod test_hooks;
