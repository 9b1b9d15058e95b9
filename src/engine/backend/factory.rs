//! Which backend a manager runs on. Adding a backend adds a folder beside this file
//! and one arm here.

use std::sync::Arc;

use super::kernel::KernelBackend;
use super::mkdir::MkdirBackend;
use super::redis::{RedisConfig, RedisLocks};
use super::traits::Backend;
use crate::engine::error::{LockError, Result};

#[derive(Debug, Clone)]
pub enum Strategy {
    /// OS advisory locks on a lock file (`flock`).
    Kernel,
    /// proper-lockfile's protocol: `mkdir <file>.lock`, kept fresh by its mtime.
    Mkdir,
    /// Leases in a Redis server, for processes on several hosts.
    Redis(RedisConfig),
}

impl Strategy {
    /// The `strategy` option's value; Redis's server comes from `LOCKWRIGHT_REDIS_URL`
    /// unless the caller gives one.
    pub fn parse(name: &str) -> Result<Strategy> {
        match name {
            "kernel" => Ok(Strategy::Kernel),
            "mkdir" => Ok(Strategy::Mkdir),
            "redis" => Ok(Strategy::Redis(RedisConfig::from_env())),
            other => Err(LockError::invalid(format!(
                "strategy must be 'kernel', 'mkdir' or 'redis', got '{other}'"
            ))),
        }
    }
}

/// The backend for `strategy`; `stale_ms` is when a silent holder counts as dead (for
/// Redis, the lease).
pub fn open_backend(strategy: Strategy, stale_ms: u64) -> Result<Arc<dyn Backend>> {
    Ok(match strategy {
        Strategy::Kernel => Arc::new(KernelBackend { stale_ms }),
        Strategy::Mkdir => Arc::new(MkdirBackend { stale_ms }),
        Strategy::Redis(config) => Arc::new(RedisLocks::open(config, stale_ms)?),
    })
}
