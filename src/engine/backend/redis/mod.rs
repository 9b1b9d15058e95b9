//! A lock backend on Redis, for processes on several hosts (issue #14). Locks are
//! leases kept in Redis and changed only by Lua scripts, one atomic step each:
//! grant (with the fencing token), renew, release, inspect, sweep. Waiters queue
//! FIFO; a release hands the lock to the next in line in the same step and tells it
//! by pub/sub, so nobody polls. See the README's Redis section.
//!
//! Self-contained for now: the manager will drive it through a `Backend` trait.

mod backend;
mod config;
mod connection;
mod grant;
mod inspect;
mod scripts;
mod waiting;

#[cfg(test)]
mod manager_tests;
#[cfg(test)]
mod test_server;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

pub use backend::RedisLocks;
pub use config::{RedisConfig, DEFAULT_PREFIX, DEFAULT_URL};
pub use grant::RedisGrant;

use connection::Conn;
use grant::{Attempt, Claim};
use waiting::Wakeups;

use crate::engine::error::{LockError, Result};
use crate::engine::inspect::{CleanupReport, LockStatus};
use crate::engine::owner_record::{LockMode, OwnerRecord};
use crate::engine::process::ProcessIdentity;

/// Redis could not be reached (refused, timed out, dropped, loading, read-only).
pub const UNAVAILABLE: &str = crate::engine::code::UNAVAILABLE;

/// What grants, waits and inspections share: one command connection, one pub/sub
/// listener.
pub(crate) struct Shared {
    conn: Conn,
    wakeups: Wakeups,
}

/// A connection to one Redis server (lazy, reconnecting) and the locks under one
/// key prefix. Cheap to clone.
#[derive(Clone)]
pub struct RedisBackend {
    shared: Arc<Shared>,
}

impl RedisBackend {
    /// Checks the configuration and returns at once: nothing is dialled until the
    /// first request, so a backend can be made while Redis is down. Must be called
    /// inside a tokio runtime; the pub/sub listener is spawned on the runtime of the
    /// first wait.
    pub async fn connect(config: RedisConfig) -> Result<RedisBackend> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(LockError::invalid(
                "RedisBackend::connect must run inside a tokio runtime",
            ));
        }
        let conn = Conn::open(&config)?;
        let wakeups = Wakeups::new(
            conn.client().clone(),
            config.connect_timeout,
            config.response_timeout,
        );
        Ok(RedisBackend {
            shared: Arc::new(Shared { conn, wakeups }),
        })
    }

    /// A record for this process as `owner` (the `process` label); the scripts fill
    /// in token, timestamp and heartbeat.
    pub fn record(owner: &str, mode: LockMode) -> OwnerRecord {
        ProcessIdentity::get()
            .claimant(owner)
            .record(mode, String::new(), 0)
    }

    /// One attempt, never queued: `None` when held or when others wait ahead.
    /// `record.lock_id` is used if set, else a fresh one is made.
    pub async fn try_acquire(
        &self,
        name: &str,
        mode: LockMode,
        record: &OwnerRecord,
        lease_ms: u64,
    ) -> Result<Option<RedisGrant>> {
        let claim = Claim::new(&self.shared, name, mode, record, lease_ms)?;
        match claim.attempt(&self.shared, false).await {
            Ok(Attempt::Granted(grant)) => Ok(Some(*grant)),
            Ok(Attempt::Refused { .. }) => Ok(None),
            Err(e) => {
                // The script may have run and granted it: take that back before
                // saying it failed.
                let _ = claim.undo(&self.shared).await;
                Err(e)
            }
        }
    }

    /// Waits its turn (FIFO) until `deadline` (`None`: no limit) or `cancel`.
    /// The first attempt always runs, so a deadline already past (or shorter than a
    /// round trip) means one attempt: `ETIMEOUT` if the lock is held.
    /// `ETIMEOUT` when others kept it, `EUNAVAILABLE` when Redis could not be
    /// reached in time, `ABORT_ERR` when cancelled. Dropping the future gives up
    /// the place in the queue.
    pub async fn acquire(
        &self,
        name: &str,
        mode: LockMode,
        record: &OwnerRecord,
        lease_ms: u64,
        deadline: Option<Instant>,
        cancel: CancellationToken,
    ) -> Result<RedisGrant> {
        let claim = Claim::new(&self.shared, name, mode, record, lease_ms)?;
        waiting::acquire(&self.shared, &claim, deadline, cancel).await
    }

    pub async fn status(&self, name: &str) -> Result<LockStatus> {
        inspect::status(&self.shared, name).await
    }

    /// Every lock under the prefix with holders, live or expired.
    pub async fn list(&self) -> Result<Vec<LockStatus>> {
        inspect::list(&self.shared).await
    }

    pub async fn cleanup(&self, dry_run: bool) -> Result<CleanupReport> {
        inspect::cleanup(&self.shared, dry_run).await
    }

    pub async fn force_release(&self, name: &str, force: bool) -> Result<bool> {
        inspect::force_release(&self.shared, name, force).await
    }

    /// `host:port` of the server, for messages (the URL may hold a password).
    pub fn address(&self) -> &str {
        &self.shared.conn.address
    }

    /// Scripts run so far through this backend: tests use it to show that a waiter
    /// is woken, not polling.
    pub fn script_calls(&self) -> u64 {
        self.shared.conn.script_calls()
    }
}
