//! The one command connection a backend shares (redis-rs's `ConnectionManager`:
//! multiplexed, reconnects on its own), a blocking one for calls that block their
//! thread anyway, and how their failures become `LockError`s.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Connection, FromRedisValue, RedisError, Script, ScriptInvocation};

use super::config::{Keys, RedisConfig};
use super::UNAVAILABLE;
use crate::engine::error::{LockError, Result};

pub(crate) struct Conn {
    client: Client,
    manager: ConnectionManager,
    /// `host:port` for messages; the URL may carry a password.
    pub address: String,
    pub config: RedisConfig,
    /// Script calls made, for tests that prove a waiter does not poll.
    calls: AtomicU64,
    /// For a thread that waits for the reply anyway (a release from JavaScript): it
    /// talks to Redis itself, with no hop to the runtime's thread and back. Opened on
    /// first use, dropped after a failure.
    blocking: Mutex<Option<Connection>>,
}

impl Conn {
    /// Lazy: nothing is dialled until the first command, so a backend can be made
    /// while Redis is down. Must run inside a tokio runtime.
    pub fn open(config: &RedisConfig) -> Result<Conn> {
        config.validate()?;
        let client = Client::open(config.url.as_str())
            .map_err(|e| LockError::invalid(format!("invalid Redis URL: {e}")))?;
        let address = client.get_connection_info().addr().to_string();
        // Few, quick retries inside the manager: our callers have their own deadlines
        // and retry around it, and a long hidden backoff would outlive them.
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.response_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(200));
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)
            .map_err(|e| unavailable(&e, &address))?;
        Ok(Conn {
            client,
            manager,
            address,
            config: config.clone(),
            calls: AtomicU64::new(0),
            blocking: Mutex::new(None),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn script_calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Runs one of our scripts on a lock's keys; `ARGV[1]` is always its channel.
    pub async fn run<T: FromRedisValue>(
        &self,
        script: &Script,
        keys: &Keys,
        args: &[&str],
    ) -> Result<T> {
        let invocation = self.invocation(script, keys, args);
        let mut connection = self.manager.clone();
        self.bounded(invocation.invoke_async(&mut connection)).await
    }

    /// `run` on the calling thread, blocking it for the round trip: for callers that
    /// block anyway. Its socket has the connect and response timeouts, so it never
    /// hangs. A connection kept from before that fails at once (Redis restarted,
    /// an idle connection dropped) is replaced and the command sent once more.
    pub fn run_blocking<T: FromRedisValue>(
        &self,
        script: &Script,
        keys: &Keys,
        args: &[&str],
    ) -> Result<T> {
        let invocation = self.invocation(script, keys, args);
        let mut kept = self.blocking.lock().unwrap_or_else(|e| e.into_inner());
        let reused = kept.is_some();
        let outcome = self.on_blocking(&mut kept, &invocation);
        match outcome {
            Err(e)
                if reused && !e.is_timeout() && (e.is_io_error() || e.is_connection_dropped()) =>
            {
                self.on_blocking(&mut kept, &invocation)
            }
            outcome => outcome,
        }
        .map_err(|e| unavailable(&e, &self.address))
    }

    fn on_blocking<T: FromRedisValue>(
        &self,
        kept: &mut Option<Connection>,
        invocation: &ScriptInvocation<'_>,
    ) -> redis::RedisResult<T> {
        let connection = match kept {
            Some(connection) => connection,
            None => kept.insert(self.open_blocking()?),
        };
        let outcome = invocation.invoke(connection);
        if outcome.is_err() {
            // Whatever it was, the next call starts on a fresh connection.
            *kept = None;
        }
        outcome
    }

    fn open_blocking(&self) -> redis::RedisResult<Connection> {
        let connection = self
            .client
            .get_connection_with_timeout(self.config.connect_timeout)?;
        connection.set_read_timeout(Some(self.config.response_timeout))?;
        connection.set_write_timeout(Some(self.config.response_timeout))?;
        Ok(connection)
    }

    fn invocation<'s>(
        &self,
        script: &'s Script,
        keys: &Keys,
        args: &[&str],
    ) -> ScriptInvocation<'s> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut invocation = script.prepare_invoke();
        for key in [
            &keys.holders,
            &keys.leases,
            &keys.token,
            &keys.ticket,
            &keys.queue,
            &keys.waiters,
            &keys.asks,
        ] {
            invocation.key(key);
        }
        invocation.arg(&keys.channel);
        for arg in args {
            invocation.arg(*arg);
        }
        invocation
    }

    /// Every key matching `pattern`, by SCAN (never KEYS: it blocks the server).
    pub async fn scan(&self, pattern: &str) -> Result<BTreeSet<String>> {
        let mut connection = self.manager.clone();
        let mut cursor = 0u64;
        let mut found = BTreeSet::new();
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .bounded(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(200)
                        .query_async(&mut connection),
                )
                .await?;
            found.extend(keys);
            if next == 0 {
                return Ok(found);
            }
            cursor = next;
        }
    }

    /// A command bounded by connect + response time even if the client's own
    /// timeouts were to miss a case: a caller must never hang on Redis.
    async fn bounded<T>(
        &self,
        command: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T> {
        let limit = self.config.connect_timeout + self.config.response_timeout;
        match tokio::time::timeout(limit, command).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(unavailable(&e, &self.address)),
            Err(_) => Err(LockError::new(
                UNAVAILABLE,
                format!(
                    "EUNAVAILABLE: Redis at {} did not answer within {} ms",
                    self.address,
                    limit.as_millis()
                ),
                None,
            )),
        }
    }
}

/// A Redis failure as the caller sees it. Refused, dropped or timed-out connections,
/// a server still loading or a read-only replica are `EUNAVAILABLE`: retrying later
/// may work. Anything else the server said (a script error: a bug, or keys of
/// another program under our prefix) is `EIO` with its text.
pub(crate) fn unavailable(err: &RedisError, address: &str) -> LockError {
    let transient = err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || matches!(
            err.code(),
            Some("LOADING" | "READONLY" | "MASTERDOWN" | "TRYAGAIN" | "BUSY")
        );
    let code = if transient { UNAVAILABLE } else { "EIO" };
    LockError::new(code, format!("{code}: Redis at {address}: {err}"), None)
}
