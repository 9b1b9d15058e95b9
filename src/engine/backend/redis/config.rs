//! What a Redis backend is told: where the server is, how long to wait for it, and
//! under which prefix its keys live; and the key names for one lock.

use std::time::Duration;

use crate::engine::error::{LockError, Result};

pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379/0";
pub const DEFAULT_PREFIX: &str = "lockwright:";

#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port/db` (or `rediss://` where the crate has TLS).
    pub url: String,
    /// Every key and channel starts with it, so one server can host several apps.
    pub prefix: String,
    /// Bound on one attempt to open a connection.
    pub connect_timeout: Duration,
    /// Bound on one command: a stopped or partitioned server answers nothing.
    pub response_timeout: Duration,
    /// Exclusive tokens are always above this. After Redis lost its data (no AOF,
    /// failover to a lagging replica) the counter restarts at 0; a caller that keeps
    /// the last token it saw elsewhere passes it here to keep tokens increasing.
    pub token_floor: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: DEFAULT_URL.into(),
            prefix: DEFAULT_PREFIX.into(),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(2),
            token_floor: 0,
        }
    }
}

impl RedisConfig {
    /// The server `LOCKWRIGHT_REDIS_URL` names, or the local default.
    pub fn from_env() -> Self {
        match std::env::var("LOCKWRIGHT_REDIS_URL") {
            Ok(url) if !url.is_empty() => RedisConfig::new(url),
            _ => RedisConfig::default(),
        }
    }

    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            ..RedisConfig::default()
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.connect_timeout.is_zero() || self.response_timeout.is_zero() {
            return Err(LockError::invalid(
                "connectTimeout and responseTimeout must be positive",
            ));
        }
        if self.prefix.contains(['{', '}']) {
            // The name goes between braces as the cluster hash tag; braces in the
            // prefix would move the tag off the name.
            return Err(LockError::invalid(
                "the Redis key prefix must not contain '{' or '}'",
            ));
        }
        Ok(())
    }
}

/// Lock names are logical keys, not paths: any non-empty string.
pub(crate) fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(LockError::invalid(
            "a Redis lock name must be a non-empty string",
        ));
    }
    Ok(())
}

/// The keys of one lock. All share the hash tag `{name}`, so a cluster keeps them on
/// one slot and a script may touch them all.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    /// lockId → holder's record (JSON, `OwnerRecord`).
    pub holders: String,
    /// `<m>:lockId` → lease deadline (ms, Redis clock); `m` is `x` or `s`.
    pub leases: String,
    /// Last exclusive fencing token.
    pub token: String,
    /// Ticket counter for the queue.
    pub ticket: String,
    /// `<m>:lockId` → ticket: the FIFO of waiters.
    pub queue: String,
    /// `<m>:lockId` → waiter's lease deadline: a dead waiter leaves the queue.
    pub waiters: String,
    /// `<m>:lockId` → a queued waiter's record, for the grant a release makes for it.
    pub asks: String,
    /// Published to on every change that may let a waiter in.
    pub channel: String,
}

impl Keys {
    pub fn new(prefix: &str, name: &str) -> Keys {
        let base = format!("{prefix}{{{name}}}:");
        Keys {
            holders: format!("{base}holders"),
            leases: format!("{base}leases"),
            token: format!("{base}token"),
            ticket: format!("{base}ticket"),
            queue: format!("{base}queue"),
            waiters: format!("{base}waiters"),
            asks: format!("{base}asks"),
            channel: format!("{base}released"),
        }
    }

    /// The SCAN pattern for every lock's key with this `suffix`, glob characters in
    /// the prefix escaped.
    pub fn pattern(prefix: &str, suffix: &str) -> String {
        let mut escaped = String::new();
        for c in prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                escaped.push('\\');
            }
            escaped.push(c);
        }
        format!("{escaped}{{*}}:{suffix}")
    }

    /// The lock name inside a key found by `pattern`.
    pub fn name_of<'k>(prefix: &str, key: &'k str, suffix: &str) -> Option<&'k str> {
        key.strip_prefix(prefix)?
            .strip_prefix('{')?
            .strip_suffix(suffix)?
            .strip_suffix("}:")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_name_as_hash_tag() {
        let keys = Keys::new("app:", "jobs/1");
        assert_eq!(keys.holders, "app:{jobs/1}:holders");
        assert_eq!(keys.channel, "app:{jobs/1}:released");
        assert_eq!(
            Keys::name_of("app:", &keys.leases, "leases"),
            Some("jobs/1")
        );
        assert_eq!(Keys::pattern("a*b:", "leases"), "a\\*b:{*}:leases");
    }
}
