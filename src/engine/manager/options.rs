//! What a manager and each acquire can be asked for, with the defaults and the
//! checks that turn what no caller means into `EINVAL`.

use std::path::PathBuf;
use std::time::Duration;

use crate::engine::backend::Strategy;
use crate::engine::error::{LockError, Result};
use crate::engine::owner_record::LockMode;

/// Used when neither the manager nor the call sets `timeout`.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// A holder on another host whose heartbeat is older than this is dead.
pub const DEFAULT_STALE_MS: u64 = 10_000;
/// The longest owner label: with the host and user names it must fit in a record.
pub const MAX_OWNER_LEN: usize = 256;
/// proper-lockfile's floor for `stale`: below it, a busy holder looks dead.
pub const MIN_STALE_MS: u64 = 2_000;

/// How long an acquire may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// `timeout: 0`: one attempt, `ELOCKED` when held.
    Once,
    For(Duration),
    /// `timeout: Infinity`.
    Forever,
}

impl Wait {
    /// Reads a JavaScript number of milliseconds, rejecting what no caller means.
    pub fn from_millis(value: f64, option: &str) -> Result<Wait> {
        if value.is_nan() || value < 0.0 {
            return Err(LockError::invalid(format!(
                "{option} must be a non-negative number of milliseconds or Infinity, got {value}"
            )));
        }
        // Beyond a century a deadline means nothing, and a far one overflows timers.
        const CENTURY_MS: f64 = 100.0 * 365.25 * 24.0 * 3600.0 * 1000.0;
        Ok(if value.is_infinite() || value > CENTURY_MS {
            Wait::Forever
        } else if value == 0.0 {
            Wait::Once
        } else {
            Wait::For(Duration::from_secs_f64(value / 1000.0))
        })
    }
}

#[derive(Debug, Clone)]
pub struct ManagerOptions {
    /// The owner label written as `process` in records ("mcp-server").
    pub owner: String,
    pub lock_dir: Option<PathBuf>,
    pub timeout: Wait,
    /// Raised to `MIN_STALE_MS` if lower.
    pub stale_ms: u64,
    /// Heartbeat period; `None` means half of `stale`, `Some(0)` turns beats off
    /// (kernel locks only). Clamped to `[1, stale / 2]`.
    pub heartbeat_ms: Option<f64>,
    /// Which backend holds the locks (kernel locks by default).
    pub strategy: Strategy,
    /// Record counts and wait/hold times (on unless turned off).
    pub metrics: bool,
    /// Lock a symlink's real target, as proper-lockfile does (on unless turned off).
    pub realpath: bool,
}

impl ManagerOptions {
    pub fn new(owner: impl Into<String>) -> Self {
        ManagerOptions {
            owner: owner.into(),
            lock_dir: None,
            timeout: Wait::For(Duration::from_millis(DEFAULT_TIMEOUT_MS)),
            stale_ms: DEFAULT_STALE_MS,
            heartbeat_ms: None,
            strategy: Strategy::Kernel,
            metrics: true,
            realpath: true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AcquireOptions {
    pub mode: LockMode,
    pub timeout: Option<Wait>,
    pub lockfile_path: Option<String>,
    /// Overrides the manager's `realpath` for this call.
    pub realpath: Option<bool>,
}

impl Default for AcquireOptions {
    fn default() -> Self {
        AcquireOptions {
            mode: LockMode::Exclusive,
            timeout: None,
            lockfile_path: None,
            realpath: None,
        }
    }
}

/// The heartbeat period in ms, 0 for none. A beat slower than `max_ms` (the backend's:
/// `stale / 2`, a third of a Redis lease) or none at all, or a fraction of a
/// millisecond read as none, lets a live holder's mkdir lock or lease look stale, so it
/// is clamped as proper-lockfile clamps `update`; only a kernel lock, whose liveness on
/// this host is its PID, may turn beats off (`needed` false).
pub(super) fn heartbeat_period(asked: Option<f64>, max_ms: u64, needed: bool) -> Result<u64> {
    let Some(ms) = asked else {
        return Ok(max_ms);
    };
    if !ms.is_finite() || ms < 0.0 {
        return Err(LockError::invalid(format!(
            "heartbeat must be a finite, non-negative number of milliseconds, got {ms}"
        )));
    }
    if ms == 0.0 {
        if needed {
            return Err(LockError::invalid(
                "heartbeat 0 would let a held lock go stale under its live holder; this strategy needs heartbeats",
            ));
        }
        return Ok(0);
    }
    Ok((ms.ceil() as u64).clamp(1, max_ms))
}
