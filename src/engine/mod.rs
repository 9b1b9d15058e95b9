//! The lock engine: plain Rust, no Node types, so `cargo test` covers it alone.
//! The napi binding (`src/binding/`) only converts values and errors.
//!
//! `manager` grants, waits, releases and beats for one owner label; `backend/` holds
//! the mechanisms (a folder each) behind one trait; the rest are the pieces they
//! share: records, paths, liveness, waiting, files beside a lock, metrics, errors.

pub mod atomic_file;
pub mod backend;
pub mod error;
pub mod inspect;
pub mod liveness;
pub mod lock_path;
pub mod manager;
pub mod metrics;
pub mod owner_record;
pub mod process;
pub mod release_events;
pub mod runtime;
pub mod safe_fs;
pub mod waiting;

pub use error::{code, LockError, Result};
pub use manager::{AcquireOptions, Acquisition, LockGrant, LockManager, ManagerOptions, Wait};
pub use owner_record::LockMode;
