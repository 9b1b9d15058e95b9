//! The lock engine: plain Rust, no Node types, so `cargo test` covers it alone.
//! The napi binding in `crate::binding` only converts values and errors.

pub mod atomic_file;
pub mod error;
pub mod inspect;
pub mod kernel_lock;
pub mod liveness;
pub mod lock_file;
pub mod lock_path;
pub mod lock_table;
pub mod manager;
pub mod metrics;
pub mod mkdir_lock;
pub mod owner_record;
pub mod process;
pub mod release_events;
pub mod runtime;
pub mod safe_fs;
pub mod strategy;
pub mod waiting;

pub use error::{code, LockError, Result};
pub use manager::{AcquireOptions, Acquisition, LockGrant, LockManager, ManagerOptions, Wait};
pub use owner_record::LockMode;
