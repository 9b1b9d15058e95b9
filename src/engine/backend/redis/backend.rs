//! The Redis backend behind the manager's traits: names are logical keys, a held lock
//! is a lease its heartbeat renews, and waits are Redis's own (FIFO, woken by
//! pub/sub), not the file watcher's. The trait is synchronous where the manager is
//! (a `tryAcquire`, a heartbeat, a sync release), so those calls block for one round
//! trip, a sync release on a connection of its own from the calling thread; an async
//! release runs on the shared connection, off the caller's thread (`release_later`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::engine::backend::traits::{
    Backend, Contend, HeldLock, PendingLock, PendingRelease, WaitRequest,
};
use crate::engine::error::{code, LockError, Result};
use crate::engine::inspect::{CleanupReport, LockStatus};
use crate::engine::owner_record::{Claimant, LockMode, OwnerRecord};
use crate::engine::runtime::{block_on, runtime};

use super::{RedisBackend, RedisConfig, RedisGrant, UNAVAILABLE};

/// Redis locks for one manager: its connection, and the lease (`stale`) it grants.
pub struct RedisLocks {
    redis: RedisBackend,
    lease_ms: u64,
}

impl std::fmt::Debug for RedisLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLocks")
            .field("server", &self.redis.address())
            .field("lease_ms", &self.lease_ms)
            .finish()
    }
}

impl RedisLocks {
    /// Checks the configuration; dials nothing until the first request.
    pub fn open(config: RedisConfig, lease_ms: u64) -> Result<RedisLocks> {
        let redis = runtime().block_on(RedisBackend::connect(config))?;
        Ok(RedisLocks { redis, lease_ms })
    }
}

fn name(lock: &Path) -> String {
    lock.to_string_lossy().into_owned()
}

impl Backend for RedisLocks {
    fn contender(&self, lock: &Path, mode: LockMode) -> Result<Box<dyn Contend>> {
        Ok(Box::new(RedisContender {
            redis: self.redis.clone(),
            name: name(lock),
            mode,
            lease_ms: self.lease_ms,
        }))
    }

    fn needs_heartbeat(&self) -> bool {
        true
    }

    /// A third of the lease: two renewals may fail (a slow or briefly unreachable
    /// Redis) before it runs out.
    fn max_heartbeat_ms(&self, stale_ms: u64) -> u64 {
        stale_ms / 3
    }

    fn remote(&self) -> bool {
        true
    }

    fn wait(&self, request: WaitRequest) -> Option<PendingLock> {
        let redis = self.redis.clone();
        let lease_ms = self.lease_ms;
        Some(Box::pin(async move {
            let name = name(&request.lock);
            let record = request.claimant.record(request.mode, request.lock_id, 0);
            let grant = redis
                .acquire(
                    &name,
                    request.mode,
                    &record,
                    lease_ms,
                    request.deadline,
                    // The manager ends the wait by dropping it, which gives up the place.
                    Default::default(),
                )
                .await?;
            Ok(Box::new(RedisHeld::new(grant, request.lock)) as Box<dyn HeldLock>)
        }))
    }

    fn holders(&self, lock: &Path) -> Vec<OwnerRecord> {
        block_on(self.redis.status(&name(lock)))
            .map(|status| {
                status
                    .owners
                    .into_iter()
                    .filter(|o| o.alive)
                    .map(|o| o.record)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn status(&self, lock: &Path) -> Result<LockStatus> {
        block_on(self.redis.status(&name(lock)))
    }

    /// Every lock under the key prefix; there are no directories.
    fn list(&self, _dir: &Path) -> Result<Vec<LockStatus>> {
        block_on(self.redis.list())
    }

    fn cleanup(&self, _dir: &Path, dry_run: bool) -> Result<CleanupReport> {
        block_on(self.redis.cleanup(dry_run))
    }

    /// A live holder's lease can be taken from it, with `force`; it then learns at
    /// its next renewal (`ECOMPROMISED`).
    fn force_release(&self, lock: &Path, _target: &Path, force: bool) -> Result<bool> {
        block_on(self.redis.force_release(&name(lock), force))
    }
}

/// One attempt at a Redis lock: a round trip, never queued.
struct RedisContender {
    redis: RedisBackend,
    name: String,
    mode: LockMode,
    lease_ms: u64,
}

impl Contend for RedisContender {
    fn try_acquire(
        &mut self,
        claimant: &Claimant,
        lock_id: String,
        _will_wait: bool,
    ) -> Result<Option<Box<dyn HeldLock>>> {
        let record = claimant.record(self.mode, lock_id, 0);
        let grant =
            block_on(
                self.redis
                    .try_acquire(&self.name, self.mode, &record, self.lease_ms),
            )?;
        Ok(grant.map(|grant| {
            Box::new(RedisHeld::new(grant, PathBuf::from(&self.name))) as Box<dyn HeldLock>
        }))
    }

    /// Redis tells waiters of their grants itself; there is no file to watch.
    fn wake_paths(&self) -> Vec<PathBuf> {
        Vec::new()
    }

    fn generation(&self) -> u32 {
        0
    }
}

/// A lease held in Redis, renewed by the manager's heartbeat.
#[derive(Debug)]
struct RedisHeld {
    grant: Option<RedisGrant>,
    name: PathBuf,
    record: OwnerRecord,
}

impl RedisHeld {
    fn new(grant: RedisGrant, name: PathBuf) -> RedisHeld {
        let mut record = grant.record.clone();
        record.token = grant.token;
        record.lock_id = grant.lock_id.clone();
        RedisHeld {
            grant: Some(grant),
            name,
            record,
        }
    }
}

/// A lease dropped without a release (`close()`, the exit hook, a wait that won as its
/// manager closed) is given back now, bounded, rather than left to run out: others
/// would wait up to `stale` for it.
impl Drop for RedisHeld {
    fn drop(&mut self) {
        if let Some(grant) = self.grant.take() {
            let bound = grant.renew_period();
            let _ = block_on(async { tokio::time::timeout(bound, grant.release()).await });
        }
    }
}

impl HeldLock for RedisHeld {
    fn path(&self) -> &Path {
        &self.name
    }

    fn waited(&self) -> bool {
        self.grant.as_ref().is_some_and(|grant| grant.waited)
    }

    fn record(&self) -> &OwnerRecord {
        &self.record
    }

    /// Renews the lease. An unreachable Redis is no verdict yet (the next beat tries
    /// again, and the lease still stands); a lease gone or taken is `ECOMPROMISED`.
    fn beat(&mut self, now_ms: u64) -> Result<()> {
        let Some(grant) = &self.grant else {
            return Ok(());
        };
        // Bounded by the beat's own period: a renewal stuck on a stalled server must
        // not hold up the next one (the lease runs out at the same time either way).
        let bound = grant.renew_period();
        // Built inside the runtime: a timer made outside it has no clock to run on.
        match block_on(async { tokio::time::timeout(bound, grant.renew()).await }) {
            Ok(Ok(())) => {
                self.record.heartbeat = now_ms;
                Ok(())
            }
            // Cut off with no answer (a partition, a stopped server: the client's
            // own timeouts may be longer than a beat): no verdict while the lease may
            // stand, lost once it surely ran out.
            Err(_) if Instant::now() >= grant.lease_expires() => Err(grant.unanswered_past_lease()),
            Err(_) => Ok(()),
            Ok(Err(e)) if e.is(UNAVAILABLE) => Ok(()),
            Ok(Err(e)) => Err(e),
        }
    }

    /// The release script on the shared async connection: the JavaScript thread
    /// (its event loop) is never blocked by a round trip, a slow or a stopped server.
    fn release_later(mut self: Box<Self>) -> PendingRelease {
        match self.grant.take() {
            Some(grant) => Box::pin(async move { grant.release().await }),
            None => Box::pin(std::future::ready(self.release())),
        }
    }

    fn release(mut self: Box<Self>) -> Result<()> {
        match self.grant.take() {
            Some(grant) => grant.release_blocking(),
            None => Err(LockError::new(
                code::RELEASED,
                "Lock is already released",
                Some(&self.name),
            )),
        }
    }
}
