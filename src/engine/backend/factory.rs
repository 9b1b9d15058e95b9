//! Which backend a manager runs on. Adding a backend adds a folder beside this file
//! and one arm here.

use std::sync::Arc;

use super::kernel::KernelBackend;
use super::mkdir::MkdirBackend;
use super::traits::Backend;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// OS advisory locks on a lock file (`flock`).
    Kernel,
    /// proper-lockfile's protocol: `mkdir <file>.lock`, kept fresh by its mtime.
    Mkdir,
}

impl Strategy {
    /// The `strategy` option's value.
    pub fn parse(name: &str) -> crate::engine::Result<Strategy> {
        match name {
            "kernel" => Ok(Strategy::Kernel),
            "mkdir" => Ok(Strategy::Mkdir),
            other => Err(crate::engine::LockError::invalid(format!(
                "strategy must be 'kernel' or 'mkdir', got '{other}'"
            ))),
        }
    }
}

/// The backend for `strategy`; `stale_ms` is when a silent holder counts as dead.
pub fn open_backend(strategy: Strategy, stale_ms: u64) -> Arc<dyn Backend> {
    match strategy {
        Strategy::Kernel => Arc::new(KernelBackend { stale_ms }),
        Strategy::Mkdir => Arc::new(MkdirBackend { stale_ms }),
    }
}
