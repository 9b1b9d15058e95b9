//! One acquire attempt, and what a granted lease lets its holder do: renew it
//! (the heartbeat) and release it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::config::Keys;
use super::scripts;
use super::{Shared, UNAVAILABLE};
use crate::engine::error::{code, LockError, Result};
use crate::engine::owner_record::{LockMode, OwnerRecord};
use crate::engine::process::ProcessIdentity;
use crate::engine::runtime::block_on;

/// The outcome of one attempt that reached Redis.
pub(crate) enum Attempt {
    Granted(Box<RedisGrant>),
    /// Not now; without a message the next chance comes in `retry_in` at the
    /// latest (when the first lease ahead runs out; `None`: none ahead has one).
    Refused {
        retry_in: Option<Duration>,
    },
}

/// A lock request as the scripts see it.
pub(crate) struct Claim {
    pub name: String,
    pub keys: Keys,
    pub mode: LockMode,
    pub lock_id: String,
    /// Also the zset member: the mode's letter, so scripts tell writers from readers.
    pub member: String,
    pub record: OwnerRecord,
    /// The record as the scripts take it: see `record_head`.
    pub record_head: String,
    pub lease_ms: u64,
}

/// `record`'s JSON without `token`, `timestamp` and `heartbeat` and without its
/// closing brace: the script that grants the lock appends those three, so it never
/// decodes JSON.
fn record_head(record: &OwnerRecord) -> Result<String> {
    let encoding =
        |e: serde_json::Error| LockError::invalid(format!("cannot encode the owner record: {e}"));
    let mut value = serde_json::to_value(record).map_err(encoding)?;
    if let Some(fields) = value.as_object_mut() {
        for granted in ["token", "timestamp", "heartbeat"] {
            fields.remove(granted);
        }
    }
    let mut head = serde_json::to_string(&value).map_err(encoding)?;
    head.pop();
    Ok(head)
}

impl Claim {
    pub fn new(
        shared: &Shared,
        name: &str,
        mode: LockMode,
        record: &OwnerRecord,
        lease_ms: u64,
    ) -> Result<Claim> {
        super::config::validate_name(name)?;
        if lease_ms == 0 {
            return Err(LockError::invalid("a Redis lease must be at least 1 ms"));
        }
        let mut record = record.clone();
        record.mode = mode;
        if record.lock_id.is_empty() {
            record.lock_id = ProcessIdentity::get().next_lock_id();
        }
        Ok(Claim {
            name: name.to_string(),
            keys: Keys::new(&shared.conn.config.prefix, name),
            mode,
            member: member(mode, &record.lock_id),
            lock_id: record.lock_id.clone(),
            record_head: record_head(&record)?,
            record,
            lease_ms,
        })
    }

    /// One run of the acquire script; `queue`: take (or keep) a place in line.
    pub async fn attempt(&self, shared: &Arc<Shared>, queue: bool) -> Result<Attempt> {
        let floor = shared.conn.config.token_floor.to_string();
        let lease = self.lease_ms.to_string();
        let sent = Instant::now();
        // Until the reply is read, Redis may have granted us a lease: a caller that
        // drops this future (its timeout) must not leave it blocking everyone until
        // it runs out. (A lost reply is the caller's to handle: a retry with the same
        // claim gets the same grant back, or `undo`.)
        let mut unread = Undo {
            shared,
            claim: self,
            armed: true,
        };
        let reply: Result<Vec<i64>> = shared
            .conn
            .run(
                &scripts::ACQUIRE,
                &self.keys,
                &[
                    &self.lock_id,
                    mode_letter(self.mode),
                    &self.record_head,
                    &lease,
                    if queue { "1" } else { "0" },
                    &floor,
                ],
            )
            .await;
        unread.armed = false;
        let reply = reply?;
        match reply.as_slice() {
            [1, token, _deadline, now] => Ok(Attempt::Granted(Box::new(self.granted(
                shared,
                *token as u64,
                *now as u64,
                // From before the request left: our view of the lease never
                // outlasts Redis's.
                sent + Duration::from_millis(self.lease_ms),
            )))),
            [0, wait] => Ok(Attempt::Refused {
                retry_in: u64::try_from(*wait).ok().map(Duration::from_millis),
            }),
            other => Err(LockError::new(
                "EIO",
                format!("EIO: unexpected reply from the acquire script: {other:?}"),
                None,
            )),
        }
    }
}

impl Claim {
    /// The grant Redis made for this claim: `token` and `now` as the script wrote them
    /// into the record; `expires` is when the lease surely ends on this host's clock.
    pub fn granted(
        &self,
        shared: &Arc<Shared>,
        token: u64,
        now: u64,
        expires: Instant,
    ) -> RedisGrant {
        let mut record = self.record.clone();
        record.token = token;
        record.timestamp = now;
        record.heartbeat = now;
        RedisGrant {
            name: self.name.clone(),
            mode: self.mode,
            token,
            lock_id: self.lock_id.clone(),
            waited: false,
            record,
            lease_ms: self.lease_ms,
            shared: Arc::clone(shared),
            keys: self.keys.clone(),
            member: self.member.clone(),
            expires: Mutex::new(expires),
            finished: AtomicBool::new(false),
        }
    }

    /// Takes the claim back out of Redis now (after an attempt whose reply was lost).
    pub async fn undo(&self, shared: &Shared) -> Result<()> {
        shared
            .conn
            .run::<Vec<i64>>(
                &scripts::RELEASE,
                &self.keys,
                &[&self.lock_id, &self.member],
            )
            .await
            .map(drop)
    }
}

fn mode_letter(mode: LockMode) -> &'static str {
    match mode {
        LockMode::Exclusive => "x",
        LockMode::Shared => "s",
    }
}

fn member(mode: LockMode, lock_id: &str) -> String {
    format!("{}:{lock_id}", mode_letter(mode))
}

/// A held lease. Renew it every `lease_ms / 3` or so; dropping it releases it in
/// the background (best effort: the lease runs out anyway).
pub struct RedisGrant {
    pub name: String,
    pub mode: LockMode,
    /// Fencing token: exclusive grants take the next value of the lock's counter in
    /// the same script as the grant; shared grants get the current value.
    pub token: u64,
    pub lock_id: String,
    /// Granted after waiting in the queue: the lock was held (or others waited) when
    /// this claim first asked. Metrics count it as contended.
    pub waited: bool,
    /// As stored in Redis; `timestamp`/`heartbeat` are Redis's clock at the grant.
    pub record: OwnerRecord,
    pub lease_ms: u64,
    shared: Arc<Shared>,
    keys: Keys,
    member: String,
    expires: Mutex<Instant>,
    finished: AtomicBool,
}

impl std::fmt::Debug for RedisGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisGrant")
            .field("name", &self.name)
            .field("mode", &self.mode)
            .field("token", &self.token)
            .field("lock_id", &self.lock_id)
            .finish_non_exhaustive()
    }
}

impl RedisGrant {
    /// How often the heartbeat should call `renew`: a third of the lease, so two
    /// beats may fail (a slow or briefly unreachable Redis) before it runs out.
    pub fn renew_period(&self) -> Duration {
        Duration::from_millis((self.lease_ms / 3).max(1))
    }

    /// When the lease surely ends on this host's clock unless renewed.
    pub fn lease_expires(&self) -> Instant {
        *self.expires.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Extends the lease by `lease_ms`. `ECOMPROMISED` (with the cause) when the
    /// lease ran out or is gone, or when Redis stayed unreachable until it ran out;
    /// `EUNAVAILABLE` when Redis is unreachable but the lease may still stand (the
    /// next beat may get through).
    pub async fn renew(&self) -> Result<()> {
        let sent = Instant::now();
        let lease = self.lease_ms.to_string();
        let reply = self
            .shared
            .conn
            .run::<Vec<i64>>(
                &scripts::RENEW,
                &self.keys,
                &[&self.lock_id, &self.member, &lease],
            )
            .await;
        match reply.as_deref() {
            Ok([1, _]) => {
                *self.expires.lock().unwrap_or_else(|e| e.into_inner()) = sent + Duration::from_millis(self.lease_ms);
                Ok(())
            }
            Ok([-1, late]) => Err(self.lost(&format!(
                "its lease ran out {late} ms before this renewal (the holder was stopped or its heartbeats did not reach Redis)"
            )).await),
            Ok(_) => Err(self.lost(GONE).await),
            Err(e) if e.is(UNAVAILABLE) && Instant::now() >= self.lease_expires() => Err(self.compromised(&format!(
                "Redis was unreachable until its lease ran out ({})",
                e.message
            ))),
            Err(e) => Err(e.clone()),
        }
    }

    /// `ECOMPROMISED` for a lease whose renewals got no answer until it ran out.
    pub fn unanswered_past_lease(&self) -> LockError {
        self.compromised("Redis gave no answer to its renewals until its lease ran out (a partition, or a stopped server)")
    }

    /// Drops this grant without a release: for one lost before anyone held it,
    /// whose claim waits on. A release sent later under the same claim would take
    /// the grant its next attempt gets.
    pub(crate) fn forget(self) {
        self.finished.store(true, Ordering::Relaxed);
    }

    /// Releases now and hands the lock to whoever's turn it is. `ECOMPROMISED` when
    /// the lease had already run out or was gone; `EUNAVAILABLE` when Redis cannot be
    /// reached (the lease then ends by itself).
    pub async fn release(self) -> Result<()> {
        self.finished.store(true, Ordering::Relaxed);
        let reply = self
            .shared
            .conn
            .run::<Vec<i64>>(
                &scripts::RELEASE,
                &self.keys,
                &[&self.lock_id, &self.member],
            )
            .await?;
        match self.lost_cause(&reply) {
            Some(cause) => Err(self.lost(&cause).await),
            None => Ok(()),
        }
    }

    /// `release` on the calling thread, which it blocks for the round trip (see
    /// `Conn::run_blocking`): a synchronous release from JavaScript.
    pub fn release_blocking(self) -> Result<()> {
        self.finished.store(true, Ordering::Relaxed);
        let reply = self.shared.conn.run_blocking::<Vec<i64>>(
            &scripts::RELEASE,
            &self.keys,
            &[&self.lock_id, &self.member],
        )?;
        match self.lost_cause(&reply) {
            Some(cause) => Err(block_on(self.lost(&cause))),
            None => Ok(()),
        }
    }

    /// Why the release script found the lease lost, if it did.
    fn lost_cause(&self, reply: &[i64]) -> Option<String> {
        match reply {
            [1, _] => None,
            [-1, late] => Some(format!(
                "its lease had run out {late} ms before the release"
            )),
            _ => Some(GONE.to_string()),
        }
    }

    /// `compromised`, naming who holds the lock now when Redis says so (one more
    /// read, only on this rare path).
    async fn lost(&self, cause: &str) -> LockError {
        let successors = match super::inspect::status(&self.shared, &self.name).await {
            Ok(status) => status
                .owners
                .iter()
                .filter(|o| o.alive && o.record.lock_id != self.lock_id)
                .map(|o| format!("{} with token {}", o.record.who(), o.record.token))
                .collect::<Vec<_>>(),
            Err(_) => Vec::new(),
        };
        if successors.is_empty() {
            return self.compromised(cause);
        }
        self.compromised(&format!(
            "{cause}; it is now held by {}",
            successors.join(", ")
        ))
    }

    fn compromised(&self, cause: &str) -> LockError {
        LockError::new(
            code::COMPROMISED,
            format!(
                "ECOMPROMISED: the Redis lock '{}' (token {}) was lost: {cause}",
                self.name, self.token
            ),
            Some(std::path::Path::new(&self.name)),
        )
    }
}

const GONE: &str = "its lease is gone from Redis (broken by forceRelease, swept after it ran out, or Redis lost its data: a restart without persistence or a failover)";

impl Drop for RedisGrant {
    fn drop(&mut self) {
        if !self.finished.load(Ordering::Relaxed) {
            release_quietly(&self.shared, &self.keys, &self.lock_id, &self.member);
        }
    }
}

/// Removes a grant or a place in the queue in the background, for paths that
/// cannot wait (drops). Without a runtime it does nothing: the lease runs out.
pub(crate) fn release_quietly(shared: &Arc<Shared>, keys: &Keys, lock_id: &str, member: &str) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let (shared, keys, lock_id, member) = (
        Arc::clone(shared),
        keys.clone(),
        lock_id.to_string(),
        member.to_string(),
    );
    runtime.spawn(async move {
        let _ = shared
            .conn
            .run::<Vec<i64>>(&scripts::RELEASE, &keys, &[&lock_id, &member])
            .await;
    });
}

/// Takes a claim back out of Redis (its grant, its place in the queue) when dropped
/// armed: the attempt or wait ended without handing a grant to its caller (timeout,
/// abort, a dropped future, a lost reply), so those behind need not wait for a
/// lease that nobody renews.
pub(crate) struct Undo<'c> {
    pub shared: &'c Arc<Shared>,
    pub claim: &'c Claim,
    pub armed: bool,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if self.armed {
            release_quietly(
                self.shared,
                &self.claim.keys,
                &self.claim.lock_id,
                &self.claim.member,
            );
        }
    }
}
