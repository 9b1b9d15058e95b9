//! Against a real, private redis-server (see `test_server`); no mocks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex as AsyncMutex;
use tokio_util::sync::CancellationToken;

use super::grant::{Attempt, Claim};
use super::test_server::{free_port, TestRedis};
use super::{RedisBackend, RedisConfig, RedisGrant, UNAVAILABLE};
use crate::engine::error::code;
use crate::engine::owner_record::LockMode::{self, Exclusive, Shared};

const LONG: u64 = 30_000;

async fn backend(server: &TestRedis) -> RedisBackend {
    backend_with(RedisConfig::new(server.url())).await
}

/// A config that gives up on a silent server after `ms` per connect or command.
fn impatient(url: String, ms: u64) -> RedisConfig {
    RedisConfig {
        connect_timeout: Duration::from_millis(ms),
        response_timeout: Duration::from_millis(ms),
        ..RedisConfig::new(url)
    }
}

async fn backend_with(config: RedisConfig) -> RedisBackend {
    RedisBackend::connect(config).await.expect("connect")
}

async fn try_lock(
    backend: &RedisBackend,
    name: &str,
    mode: LockMode,
    lease_ms: u64,
) -> Option<RedisGrant> {
    backend
        .try_acquire(name, mode, &RedisBackend::record("test", mode), lease_ms)
        .await
        .expect("try_acquire")
}

async fn lock(
    backend: &RedisBackend,
    name: &str,
    mode: LockMode,
    lease_ms: u64,
    within: Duration,
) -> crate::engine::Result<RedisGrant> {
    backend
        .acquire(
            name,
            mode,
            &RedisBackend::record("test", mode),
            lease_ms,
            Some(Instant::now() + within),
            CancellationToken::new(),
        )
        .await
}

/// A backend whose pub/sub listener is connected, so no reconnect wake-up comes
/// later to blur a count of script calls.
async fn listening(server: &TestRedis) -> RedisBackend {
    let side = backend(server).await;
    side.shared.wakeups.ensure_started();
    let start = Instant::now();
    while !side.shared.wakeups.listening() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "listener never connected"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    side
}

/// A writer that takes a place in line for `name` and is never driven again: it
/// neither renews its place nor hears a grant (a waiter that died, or one that is
/// about to give up).
async fn undriven_waiter(backend: &RedisBackend, name: &str, lease_ms: u64) -> Claim {
    let record = RedisBackend::record("undriven", Exclusive);
    let claim = Claim::new(&backend.shared, name, Exclusive, &record, lease_ms).unwrap();
    let queued = claim.attempt(&backend.shared, true).await.unwrap();
    assert!(matches!(queued, Attempt::Refused { .. }));
    claim
}

/// `lock` in a task of its own: a waiter.
fn spawn_lock(
    backend: &RedisBackend,
    name: &'static str,
    mode: LockMode,
    lease_ms: u64,
    within: Duration,
) -> tokio::task::JoinHandle<crate::engine::Result<RedisGrant>> {
    let backend = backend.clone();
    tokio::spawn(async move { lock(&backend, name, mode, lease_ms, within).await })
}

/// Waits until `backend` has made `calls` script calls (a waiter that queued).
async fn until_calls(backend: &RedisBackend, calls: u64) {
    let start = Instant::now();
    while backend.script_calls() < calls {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "waiter never queued"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Releases `held` once a waiter on `waiter_side` is in line for `name`; returns
/// the grant the release hands that waiter.
async fn handed_over_by_release(
    held: RedisGrant,
    waiter_side: &RedisBackend,
    name: &'static str,
) -> RedisGrant {
    let waiter = spawn_lock(waiter_side, name, Exclusive, LONG, Duration::from_secs(10));
    until_in_line(waiter_side, name, 1).await;
    held.release().await.unwrap();
    waiter.await.unwrap().expect("handed over")
}

/// Waits until `waiters` wait in line for `name` (however many attempts that took:
/// a process already subscribed queues in its first).
async fn until_in_line(backend: &RedisBackend, name: &str, waiters: u64) {
    let queue = super::config::Keys::new(&backend.shared.conn.config.prefix, name).queue;
    let mut con = backend
        .shared
        .conn
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let start = Instant::now();
    loop {
        let queued: u64 = redis::cmd("ZCARD")
            .arg(&queue)
            .query_async(&mut con)
            .await
            .unwrap();
        if queued >= waiters {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{queued} of {waiters} waiters in line"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_grants_exclude_and_tokens_increase() {
    let Some(server) = TestRedis::start() else {
        return;
    };
    let (a, b) = (backend(&server).await, backend(&server).await);
    let first = try_lock(&a, "job", Exclusive, LONG)
        .await
        .expect("free lock");
    assert_eq!(first.token, 1);
    assert_eq!(first.record.token, 1);
    assert!(try_lock(&b, "job", Exclusive, LONG).await.is_none());
    assert!(try_lock(&b, "job", Shared, LONG).await.is_none());
    first.release().await.unwrap();
    let mut last = 1;
    for _ in 0..3 {
        let grant = try_lock(&b, "job", Exclusive, LONG)
            .await
            .expect("released");
        assert!(grant.token > last, "{} after {last}", grant.token);
        last = grant.token;
        grant.release().await.unwrap();
    }
    // Another name has its own counter.
    assert_eq!(
        try_lock(&a, "other", Exclusive, LONG).await.unwrap().token,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_share_and_a_waiting_writer_stops_new_readers() {
    let Some(server) = TestRedis::start() else {
        return;
    };
    let (readers, writer_side) = (backend(&server).await, backend(&server).await);
    let r1 = try_lock(&readers, "doc", Shared, LONG)
        .await
        .expect("first reader");
    let r2 = try_lock(&readers, "doc", Shared, LONG)
        .await
        .expect("readers overlap");
    assert_eq!(r1.token, r2.token, "readers share the current token");
    let status = readers.status("doc").await.unwrap();
    assert_eq!(
        (status.locked, status.mode, status.owners.len()),
        (true, Some(Shared), 2)
    );

    let writer = spawn_lock(
        &writer_side,
        "doc",
        Exclusive,
        LONG,
        Duration::from_secs(10),
    );
    until_calls(&writer_side, 2).await; // tried, then queued
    assert!(
        try_lock(&readers, "doc", Shared, LONG).await.is_none(),
        "a queued writer stops new readers"
    );
    r1.release().await.unwrap();
    assert!(!writer.is_finished());
    r2.release().await.unwrap();
    let w = writer
        .await
        .unwrap()
        .expect("writer gets in once the readers left");
    assert!(w.token > status.owners[0].record.token);
    assert!(try_lock(&readers, "doc", Shared, LONG).await.is_none());
    // Readers queued behind the writer come in together when it leaves.
    let writer_token = w.token;
    let queued: Vec<_> = (0..2)
        .map(|_| spawn_lock(&readers, "doc", Shared, LONG, Duration::from_secs(10)))
        .collect();
    until_in_line(&readers, "doc", 2).await;
    w.release().await.unwrap();
    let mut together = Vec::new();
    for reader in queued {
        together.push(reader.await.unwrap().expect("reader after the writer"));
    }
    assert_eq!(readers.status("doc").await.unwrap().owners.len(), 2);
    assert!(together.iter().all(|r| r.token == writer_token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_keeps_its_place_beyond_its_own_lease() {
    let Some(server) = TestRedis::start() else {
        return;
    };
    let (holder_side, first_side, later_side) = (
        backend(&server).await,
        listening(&server).await,
        backend(&server).await,
    );
    let held = try_lock(&holder_side, "keep", Exclusive, LONG)
        .await
        .unwrap();
    let first = spawn_lock(&first_side, "keep", Exclusive, 300, Duration::from_secs(10));
    until_calls(&first_side, 2).await;
    // Three of its leases: it renewed its place in the meantime.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(
        first_side.script_calls() >= 5,
        "{}",
        first_side.script_calls()
    );
    let later = spawn_lock(
        &later_side,
        "keep",
        Exclusive,
        LONG,
        Duration::from_secs(10),
    );
    until_calls(&later_side, 2).await;
    held.release().await.unwrap();
    let grant = first.await.unwrap().expect("first in line");
    assert!(!later.is_finished());
    grant.release().await.unwrap();
    later.await.unwrap().expect("then the later one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_wakes_the_waiter_without_polling() {
    let Some(server) = TestRedis::start() else {
        return;
    };
    let (holder_side, waiter_side) = (backend(&server).await, listening(&server).await);
    let held = try_lock(&holder_side, "q", Exclusive, LONG).await.unwrap();
    let waiter = spawn_lock(&waiter_side, "q", Exclusive, LONG, Duration::from_secs(20));
    until_calls(&waiter_side, 2).await;
    // Idle while held: no retries (its fallback is the lease, 30 s away, and its own
    // place is renewed every 10 s).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(waiter_side.script_calls(), 2);
    let released = Instant::now();
    held.release().await.unwrap();
    let grant = waiter.await.unwrap().expect("woken by the release");
    assert_eq!(
        waiter_side.script_calls(),
        2,
        "handed the lock by the release: no attempt of its own"
    );
    assert!(released.elapsed() < Duration::from_secs(5));
    assert_eq!(grant.token, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_served_in_arrival_order() {
    let Some(server) = TestRedis::start() else {
        return;
    };
    let holder_side = backend(&server).await;
    let held = try_lock(&holder_side, "fifo", Exclusive, LONG)
        .await
        .unwrap();
    let order = Arc::new(AsyncMutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for i in 0..4 {
        let side = backend(&server).await;
        let order = Arc::clone(&order);
        let mode = if i == 2 { Shared } else { Exclusive };
        let task = {
            let side = side.clone();
            tokio::spawn(async move {
                let grant = lock(&side, "fifo", mode, LONG, Duration::from_secs(10))
                    .await
                    .unwrap();
                order.lock().await.push(i);
                tokio::time::sleep(Duration::from_millis(20)).await;
                grant.release().await.unwrap();
            })
        };
        until_calls(&side, 2).await; // queued before the next arrives
        waiters.push((side, task));
    }
    held.release().await.unwrap();
    for (_, task) in waiters {
        task.await.unwrap();
    }
    assert_eq!(*order.lock().await, vec![0, 1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_holder_loses_to_a_newcomer_with_a_larger_token() {
    let Some(server) = TestRedis::start() else {
        return;
    };
    let (stopped, newcomer) = (backend(&server).await, backend(&server).await);
    let old = try_lock(&stopped, "lease", Exclusive, 300).await.unwrap();
    // A renewing holder keeps it past its lease.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        old.renew().await.unwrap();
        assert!(try_lock(&newcomer, "lease", Exclusive, LONG)
            .await
            .is_none());
    }
    // Then it stops renewing (SIGSTOP, a blocked host): the newcomer waits for the
    // lease, not for a fixed delay.
    let new = lock(&newcomer, "lease", Exclusive, LONG, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(new.token > old.token);
    let lost = old.renew().await.unwrap_err();
    assert_eq!(lost.code, code::COMPROMISED, "{lost}");
    assert!(lost.message.contains("gone"), "{lost}");
    let successor = format!("now held by test (PID {}", std::process::id());
    assert!(lost.message.contains(&successor), "{lost}");
    assert!(
        lost.message.contains(&format!("with token {}", new.token)),
        "{lost}"
    );
    let lost = old.release().await.unwrap_err();
    assert_eq!(lost.code, code::COMPROMISED);
    // The successor is untouched.
    new.renew().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_compromised_even_unclaimed() {
    let Some(server) = TestRedis::start() else {
        return;
    };
    let side = backend(&server).await;
    let grant = try_lock(&side, "e", Exclusive, 100).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lost = grant.renew().await.unwrap_err();
    assert_eq!(lost.code, code::COMPROMISED);
    assert!(lost.message.contains("ran out"), "{lost}");
    assert!(try_lock(&side, "e", Exclusive, LONG).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_dying_and_coming_back() {
    let Some(mut server) = TestRedis::start() else {
        return;
    };
    let config = impatient(server.url(), 300);
    let side = backend_with(config).await;
    let grant = try_lock(&side, "r", Exclusive, 1_000).await.unwrap();
    server.kill();
    let err = grant.renew().await.unwrap_err();
    assert_eq!(err.code, UNAVAILABLE, "while the lease may stand: {err}");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let err = grant.renew().await.unwrap_err();
    assert_eq!(err.code, code::COMPROMISED, "{err}");
    assert!(err.message.contains("unreachable"), "{err}");
    // Waiting while it is down ends in EUNAVAILABLE, within the timeout.
    let start = Instant::now();
    let err = lock(&side, "r", Exclusive, LONG, Duration::from_millis(500))
        .await
        .unwrap_err();
    assert_eq!(err.code, UNAVAILABLE, "{err}");
    assert!(start.elapsed() < Duration::from_millis(1_500));

    server.launch();
    // The same backend reconnects by itself. The data is gone (no persistence):
    // the token counter starts again, which docs/redis.md warns about.
    let again = lock(&side, "r", Exclusive, LONG, Duration::from_secs(5))
        .await
        .expect("reconnected");
    assert_eq!(again.token, 1);
    // A waiter on the same backend is woken through the re-established pub/sub.
    let waiter = spawn_lock(&side, "r", Exclusive, LONG, Duration::from_secs(10));
    tokio::time::sleep(Duration::from_millis(200)).await;
    again.release().await.unwrap();
    assert_eq!(waiter.await.unwrap().unwrap().token, 2);
    drop(grant);
}

/// Lua's numbers print with 14 digits: a token above 10^14 (a floor taken from a
/// store that counts in nanoseconds, say) must still be handed over, renewed and
/// read back as the same integer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_beyond_fourteen_digits_survive_handoffs_and_renewals() {
    let Some(server) = TestRedis::start() else {
        return;
    };
    let floor = 1u64 << 50;
    let config = |url| RedisConfig {
        token_floor: floor,
        ..RedisConfig::new(url)
    };
    let holder_side = backend_with(config(server.url())).await;
    let waiter_side = listening(&server).await;
    let held = try_lock(&holder_side, "big", Exclusive, LONG)
        .await
        .unwrap();
    assert_eq!(held.token, floor + 1);
    held.renew().await.unwrap();
    let status = holder_side.status("big").await.unwrap();
    assert_eq!(status.owners[0].record.token, floor + 1, "{status:?}");
    let calls = waiter_side.script_calls();
    let grant = handed_over_by_release(held, &waiter_side, "big").await;
    assert_eq!(grant.token, floor + 2);
    // Told by the release's message (its two calls: an attempt, then one that
    // queued, once subscribed), not by an attempt of its own after the release.
    assert_eq!(waiter_side.script_calls(), calls + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_floor_keeps_tokens_above_what_was_seen() {
    let Some(server) = TestRedis::start() else {
        return;
    };
    let side = backend_with(RedisConfig {
        token_floor: 100,
        ..RedisConfig::new(server.url())
    })
    .await;
    let grant = try_lock(&side, "f", Exclusive, LONG).await.unwrap();
    assert_eq!(grant.token, 101);
    grant.release().await.unwrap();
    assert_eq!(
        try_lock(&side, "f", Exclusive, LONG).await.unwrap().token,
        102
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_is_unavailable_within_the_timeout() {
    let config = impatient(format!("redis://127.0.0.1:{}/0", free_port()), 200);
    let side = backend_with(config).await;
    let start = Instant::now();
    let err = lock(&side, "x", Exclusive, LONG, Duration::from_millis(400))
        .await
        .unwrap_err();
    assert_eq!(err.code, UNAVAILABLE, "{err}");
    assert!(err.message.contains("127.0.0.1"), "names the server: {err}");
    assert!(start.elapsed() < Duration::from_millis(1_000));
    let err = side
        .try_acquire("x", Exclusive, &RedisBackend::record("t", Exclusive), LONG)
        .await
        .unwrap_err();
    assert_eq!(err.code, UNAVAILABLE);
    assert_eq!(side.status("x").await.unwrap_err().code, UNAVAILABLE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_aborts_give_up_the_place_in_line() {
    let Some(server) = TestRedis::start() else {
        return;
    };
    let (holder_side, waiter_side) = (backend(&server).await, backend(&server).await);
    let held = try_lock(&holder_side, "t", Exclusive, LONG).await.unwrap();
    let err = lock(
        &waiter_side,
        "t",
        Exclusive,
        LONG,
        Duration::from_millis(200),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, code::TIMEOUT, "{err}");
    let cancel = CancellationToken::new();
    let aborted = {
        let (side, cancel) = (waiter_side.clone(), cancel.clone());
        tokio::spawn(async move {
            side.acquire(
                "t",
                Exclusive,
                &RedisBackend::record("t", Exclusive),
                LONG,
                None,
                cancel,
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    cancel.cancel();
    assert_eq!(aborted.await.unwrap().unwrap_err().code, code::ABORTED);
    held.release().await.unwrap();
    // The two that gave up are out of the queue (removed in the background).
    let start = Instant::now();
    while try_lock(&holder_side, "t", Exclusive, LONG).await.is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "a waiter that gave up still blocks the queue"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_list_cleanup_and_force_release() {
    let Some(server) = TestRedis::start() else {
        return;
    };
    let side = backend(&server).await;
    let record = RedisBackend::record("mcp-server", Exclusive);
    let live = side
        .try_acquire("live", Exclusive, &record, LONG)
        .await
        .unwrap()
        .unwrap();
    let dead = try_lock(&side, "dead", Shared, 100).await.unwrap();
    std::mem::forget(dead); // a holder that died: nothing releases it
    tokio::time::sleep(Duration::from_millis(150)).await;

    let status = side.status("live").await.unwrap();
    assert!(status.locked && !status.stale);
    assert_eq!(status.mode, Some(Exclusive));
    let owner = &status.owners[0];
    assert!(owner.alive);
    assert_eq!(owner.record.process, "mcp-server");
    assert_eq!(owner.record.pid, std::process::id());
    assert_eq!(owner.record.token, live.token);
    assert!(owner.heartbeat_age_ms < 5_000);
    let status = side.status("dead").await.unwrap();
    assert!(!status.locked && status.stale && !status.owners[0].alive);
    let free = side.status("never").await.unwrap();
    assert!(!free.locked && !free.stale && free.owners.is_empty());

    let names: Vec<String> = side
        .list()
        .await
        .unwrap()
        .iter()
        .map(|s| s.lockfile.display().to_string())
        .collect();
    assert_eq!(names, vec!["dead", "live"]);

    let report = side.cleanup(true).await.unwrap();
    assert_eq!((report.removed.len(), report.kept), (1, 1));
    assert!(
        side.status("dead").await.unwrap().stale,
        "a dry run removes nothing"
    );
    let report = side.cleanup(false).await.unwrap();
    assert_eq!(report.removed, vec![std::path::PathBuf::from("dead")]);
    assert!(side.status("dead").await.unwrap().owners.is_empty());

    let refused = side.force_release("live", false).await.unwrap_err();
    assert_eq!(refused.code, code::LOCKED);
    assert!(refused.message.contains("mcp-server"), "{refused}");
    assert!(side.force_release("live", true).await.unwrap());
    assert!(
        !side.force_release("live", true).await.unwrap(),
        "nothing left to break"
    );
    let lost = live.renew().await.unwrap_err();
    assert_eq!(lost.code, code::COMPROMISED);
    assert!(lost.message.contains("forceRelease"), "{lost}");
    // The counter survives a forced release: the next token is larger.
    assert!(
        try_lock(&side, "live", Exclusive, LONG)
            .await
            .unwrap()
            .token
            > live.token
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_waiter_drops_out_of_the_queue() {
    let Some(server) = TestRedis::start() else {
        return;
    };
    let (holder_side, live_side) = (backend(&server).await, listening(&server).await);
    let held = try_lock(&holder_side, "d", Exclusive, LONG).await.unwrap();
    // A waiter that queues once and then dies: it never renews its place.
    undriven_waiter(&holder_side, "d", 200).await;
    let live = spawn_lock(&live_side, "d", Exclusive, LONG, Duration::from_secs(5));
    until_calls(&live_side, 2).await;
    let start = Instant::now();
    held.release().await.unwrap();
    // The release hands the lock to the dead waiter, for what is left of its place;
    // the live one gets it when that runs out (its fallback timer), not after its
    // own 10 s refresh or a whole lease of its own.
    let grant = live.await.unwrap().expect("the dead waiter's place lapsed");
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(
        live_side.script_calls() <= 4,
        "{} calls",
        live_side.script_calls()
    );
    assert_eq!(grant.token, 3, "the dead waiter's grant took token 2");
}

/// Runs `work` on `threads` threads, each with its own runtime and backend (as
/// separate processes would have), and waits for them all.
fn on_threads<F, Fut>(threads: u64, server: &TestRedis, work: F)
where
    F: Fn(u64, RedisBackend) -> Fut + Send + Clone + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (url, work) = (server.url(), work.clone());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let side = backend_with(RedisConfig::new(url)).await;
                    work(t, side).await
                });
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
}

/// Several threads, each with its own runtime and connection (as separate
/// processes would have), doing unsafe read-modify-write increments under the lock.
#[test]
fn threads_with_their_own_connections_never_overlap() {
    let Some(server) = TestRedis::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("counter");
    let marker = dir.path().join("held");
    std::fs::write(&counter, "0").unwrap();
    let last_token = Arc::new(std::sync::atomic::AtomicU64::new(0));
    const THREADS: u64 = 4;
    const ROUNDS: u64 = 25;
    let total = counter.clone();
    on_threads(THREADS, &server, move |_, side| {
        let (counter, marker, last_token) =
            (counter.clone(), marker.clone(), Arc::clone(&last_token));
        async move {
            for _ in 0..ROUNDS {
                let grant = lock(&side, "stress", Exclusive, LONG, Duration::from_secs(20))
                    .await
                    .unwrap();
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&marker)
                    .expect("two holders at once");
                let previous =
                    last_token.fetch_max(grant.token, std::sync::atomic::Ordering::SeqCst);
                assert!(
                    previous < grant.token,
                    "token {} after {previous}",
                    grant.token
                );
                let value: u64 = std::fs::read_to_string(&counter).unwrap().parse().unwrap();
                tokio::task::yield_now().await;
                std::fs::write(&counter, (value + 1).to_string()).unwrap();
                std::fs::remove_file(&marker).unwrap();
                grant.release().await.unwrap();
            }
        }
    });
    assert_eq!(
        std::fs::read_to_string(&total).unwrap(),
        (THREADS * ROUNDS).to_string()
    );
}

/// Acquires a lock held by another client while the server is stopped (it accepts
/// and never answers), with a timeout of `within`; returns the error and how long
/// it took. The holder still holds the lock, and renews, once the server is back.
#[cfg(unix)]
async fn acquire_while_silent(
    server: &TestRedis,
    config: RedisConfig,
    within: Duration,
) -> (crate::engine::LockError, Duration) {
    let side = backend_with(config).await;
    let held = try_lock(&side, "h", Exclusive, LONG).await.unwrap();
    server.pause(true);
    let start = Instant::now();
    let err = lock(&side, "h", Exclusive, LONG, within).await.unwrap_err();
    let waited = start.elapsed();
    server.pause(false);
    held.renew().await.unwrap();
    (err, waited)
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_answering_never_holds_an_acquire_past_its_timeout() {
    let Some(server) = TestRedis::start() else {
        return;
    };
    let config = impatient(server.url(), 300);
    let (err, waited) = acquire_while_silent(&server, config, Duration::from_millis(500)).await;
    assert_eq!(err.code, UNAVAILABLE, "{err}");
    assert!(waited < Duration::from_millis(1_000), "{waited:?}");
}

/// The client's own timeouts (2 s to connect, 2 s per reply, by default) are longer
/// than many an acquire's: a silent server must end the acquire by its own timeout.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_ends_an_acquire_by_its_timeout_not_the_client_timeouts() {
    let Some(server) = TestRedis::start() else {
        return;
    };
    let config = RedisConfig::new(server.url());
    let (err, waited) = acquire_while_silent(&server, config, Duration::from_millis(300)).await;
    assert_eq!(err.code, UNAVAILABLE, "{err}");
    assert!(waited < Duration::from_millis(1_500), "{waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_keys_under_the_prefix_are_an_error_not_unavailable() {
    let Some(server) = TestRedis::start() else {
        return;
    };
    let client = redis::Client::open(server.url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg("lockwright:{w}:holders")
        .arg("not a hash")
        .query_async(&mut con)
        .await
        .unwrap();
    let side = backend(&server).await;
    let err = side
        .try_acquire("w", Exclusive, &RedisBackend::record("t", Exclusive), LONG)
        .await
        .unwrap_err();
    assert_eq!(err.code, "EIO", "{err}");
    assert!(err.message.contains("WRONGTYPE"), "{err}");
}

/// Readers and writers on threads with their own connections, some giving up on
/// short timeouts: a writer never overlaps anyone, and everyone who waits long
/// enough gets in.
#[test]
fn mixed_readers_and_writers_never_break_exclusion() {
    use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
    let Some(server) = TestRedis::start() else {
        return;
    };
    let writers = Arc::new(AtomicU32::new(0));
    let readers = Arc::new(AtomicU32::new(0));
    on_threads(4, &server, move |t, side| {
        let (writers, readers) = (Arc::clone(&writers), Arc::clone(&readers));
        async move {
            let mut granted = 0;
            for round in 0..30u64 {
                let mode = if (t + round) % 3 == 0 {
                    Exclusive
                } else {
                    Shared
                };
                // Every fifth try is impatient and may time out.
                let within = Duration::from_millis(if round % 5 == 4 { 2 } else { 20_000 });
                let Ok(grant) = lock(&side, "mixed", mode, LONG, within).await else {
                    assert!(round % 5 == 4, "a patient waiter failed");
                    continue;
                };
                granted += 1;
                if mode == Exclusive {
                    assert_eq!(writers.fetch_add(1, SeqCst), 0, "two writers");
                    assert_eq!(readers.load(SeqCst), 0, "a writer beside readers");
                    tokio::task::yield_now().await;
                    writers.fetch_sub(1, SeqCst);
                } else {
                    readers.fetch_add(1, SeqCst);
                    assert_eq!(writers.load(SeqCst), 0, "a reader beside a writer");
                    tokio::task::yield_now().await;
                    readers.fetch_sub(1, SeqCst);
                }
                grant.release().await.unwrap();
            }
            assert!(granted >= 24);
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_lost_reply_gets_the_same_grant_back() {
    let Some(server) = TestRedis::start() else {
        return;
    };
    let side = backend(&server).await;
    let record = RedisBackend::record("retry", Exclusive);
    let claim = Claim::new(&side.shared, "lost", Exclusive, &record, LONG).unwrap();
    let Attempt::Granted(first) = claim.attempt(&side.shared, false).await.unwrap() else {
        panic!("free lock refused");
    };
    // As if that reply never arrived: the same claim again.
    let Attempt::Granted(again) = claim.attempt(&side.shared, false).await.unwrap() else {
        panic!("a retry queued behind its own grant");
    };
    assert_eq!((again.token, &again.lock_id), (first.token, &first.lock_id));
    assert_eq!(side.status("lost").await.unwrap().owners.len(), 1);
    std::mem::forget(first); // one grant, two handles: release it once
    again.release().await.unwrap();
    assert!(!side.status("lost").await.unwrap().locked);
}

#[tokio::test]
async fn bad_configurations_are_einval() {
    let bad_url = RedisBackend::connect(RedisConfig::new("not a url")).await;
    assert_eq!(
        bad_url.err().map(|e| e.code),
        Some(code::INVALID.to_string())
    );
    let braces = RedisConfig {
        prefix: "app{1}:".into(),
        ..RedisConfig::default()
    };
    let braces = RedisBackend::connect(braces).await;
    assert_eq!(
        braces.err().map(|e| e.code),
        Some(code::INVALID.to_string())
    );
    // Bad requests fail before anything is dialled.
    let nowhere = format!("redis://127.0.0.1:{}/0", free_port());
    let side = RedisBackend::connect(RedisConfig::new(nowhere))
        .await
        .unwrap();
    let record = RedisBackend::record("t", Exclusive);
    let err = side
        .try_acquire("", Exclusive, &record, LONG)
        .await
        .unwrap_err();
    assert_eq!(err.code, code::INVALID);
    let err = side
        .try_acquire("n", Exclusive, &record, 0)
        .await
        .unwrap_err();
    assert_eq!(err.code, code::INVALID);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_wakes_only_the_writer_whose_turn_it_is() {
    let Some(server) = TestRedis::start() else {
        return;
    };
    let holder_side = backend(&server).await;
    let mut held = try_lock(&holder_side, "herd", Exclusive, LONG)
        .await
        .unwrap();
    let mut waiters = Vec::new();
    for _ in 0..4 {
        let side = listening(&server).await;
        let task = spawn_lock(&side, "herd", Exclusive, LONG, Duration::from_secs(10));
        until_calls(&side, 2).await;
        waiters.push((side, task));
    }
    for turn in 0..4 {
        let asleep: Vec<u64> = waiters[turn + 1..]
            .iter()
            .map(|(side, _)| side.script_calls())
            .collect();
        held.release().await.unwrap();
        held = (&mut waiters[turn].1).await.unwrap().expect("its turn");
        // Let any wrongly woken waiter make its attempt before counting.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let after: Vec<u64> = waiters[turn + 1..]
            .iter()
            .map(|(side, _)| side.script_calls())
            .collect();
        assert_eq!(
            after, asleep,
            "waiters behind the next writer slept through turn {turn}"
        );
    }
    held.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_keep_applications_apart() {
    let Some(server) = TestRedis::start() else {
        return;
    };
    let plain = backend(&server).await;
    let starred = backend_with(RedisConfig {
        prefix: "app*[1]:".into(),
        ..RedisConfig::new(server.url())
    })
    .await;
    let _mine = try_lock(&plain, "same", Exclusive, LONG).await.unwrap();
    let theirs = try_lock(&starred, "same", Exclusive, LONG)
        .await
        .expect("another prefix, another lock");
    assert_eq!(theirs.token, 1);
    let _other = try_lock(&starred, "x}y", Shared, LONG).await.unwrap();
    let names = |list: Vec<crate::engine::inspect::LockStatus>| -> Vec<String> {
        list.iter()
            .map(|s| s.lockfile.display().to_string())
            .collect()
    };
    assert_eq!(names(plain.list().await.unwrap()), vec!["same"]);
    assert_eq!(names(starred.list().await.unwrap()), vec!["same", "x}y"]);
}

/// The lock ids holding `name` now, by status.
async fn holders_of(backend: &RedisBackend, name: &str) -> Vec<String> {
    let status = backend.status(name).await.unwrap();
    status
        .owners
        .into_iter()
        .filter(|o| o.alive)
        .map(|o| o.record.lock_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_handed_to_a_waiter_that_gives_up_goes_on_to_the_next() {
    let Some(server) = TestRedis::start() else {
        return;
    };
    let (holder_side, next_side) = (backend(&server).await, listening(&server).await);
    let held = try_lock(&holder_side, "g", Exclusive, LONG).await.unwrap();
    // A waiter in line that nobody drives: the release hands it the lock.
    let leaving = undriven_waiter(&holder_side, "g", LONG).await;
    let next = spawn_lock(&next_side, "g", Exclusive, LONG, Duration::from_secs(10));
    until_calls(&next_side, 2).await;
    held.release().await.unwrap();
    assert_eq!(
        holders_of(&holder_side, "g").await,
        vec![leaving.lock_id.clone()]
    );
    // It gives up (its timeout, an abort) without having seen the grant: the undo
    // takes the grant back and passes the lock on at once, not after the lease.
    let start = Instant::now();
    leaving.undo(&holder_side.shared).await.unwrap();
    let grant = next.await.unwrap().expect("passed on");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(grant.token, 3);
    assert_eq!(
        holders_of(&holder_side, "g").await,
        vec![grant.lock_id.clone()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_cancelled_as_the_release_grants_it_holds_nothing_afterwards() {
    let Some(server) = TestRedis::start() else {
        return;
    };
    let (holder_side, waiter_side) = (backend(&server).await, listening(&server).await);
    let mut cancelled_after_grant = 0;
    for round in 0..20 {
        let name: &'static str = Box::leak(format!("c{round}").into_boxed_str());
        let held = try_lock(&holder_side, name, Exclusive, LONG).await.unwrap();
        let cancel = CancellationToken::new();
        let calls = waiter_side.script_calls();
        let waiter = {
            let (side, cancel) = (waiter_side.clone(), cancel.clone());
            tokio::spawn(async move {
                let record = RedisBackend::record("test", Exclusive);
                side.acquire(name, Exclusive, &record, LONG, None, cancel)
                    .await
            })
        };
        until_calls(&waiter_side, calls + 2).await;
        // The release has handed it over (its message is on the way) when the wait
        // is cancelled: whichever the waiter sees first, it must not keep a lease it
        // does not know it holds.
        held.release().await.unwrap();
        cancel.cancel();
        match waiter.await.unwrap() {
            Ok(grant) => grant.release().await.unwrap(),
            Err(e) => {
                assert_eq!(e.code, code::ABORTED, "{e}");
                cancelled_after_grant += 1;
            }
        }
        assert_eq!(holders_of(&holder_side, name).await, Vec::<String>::new());
        assert!(try_lock(&holder_side, name, Exclusive, LONG)
            .await
            .is_some());
    }
    // Which one the waiter sees first varies; the rounds the abort won tested the
    // undo of a grant it was handed.
    eprintln!("{cancelled_after_grant} of 20 waits were cancelled after their grant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_and_readers_are_handed_the_lock_in_line() {
    let Some(server) = TestRedis::start() else {
        return;
    };
    let holder_side = backend(&server).await;
    let held = try_lock(&holder_side, "line", Exclusive, LONG)
        .await
        .unwrap();
    // In line: W1, R1, R2, W2, R3.
    let modes = [Exclusive, Shared, Shared, Exclusive, Shared];
    let mut waiters = Vec::new();
    for mode in modes {
        let side = listening(&server).await;
        let task = spawn_lock(&side, "line", mode, LONG, Duration::from_secs(10));
        until_calls(&side, 2).await;
        waiters.push(task);
    }
    let mut waiters = waiters.into_iter();
    let mut next = || waiters.next().unwrap();
    held.release().await.unwrap();
    let w1 = next().await.unwrap().unwrap();
    assert_eq!(w1.token, 2);
    w1.release().await.unwrap();
    // The readers at the head come in together; R3 stays behind W2.
    let (r1, r2) = (
        next().await.unwrap().unwrap(),
        next().await.unwrap().unwrap(),
    );
    assert_eq!((r1.token, r2.token), (2, 2));
    let (w2, r3) = (next(), next());
    assert_eq!(holders_of(&holder_side, "line").await.len(), 2);
    r1.release().await.unwrap();
    assert!(!w2.is_finished());
    r2.release().await.unwrap();
    let w2 = w2.await.unwrap().unwrap();
    assert_eq!(w2.token, 3);
    assert!(!r3.is_finished());
    w2.release().await.unwrap();
    assert_eq!(r3.await.unwrap().unwrap().token, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_waits_on_a_lock_again_queues_in_its_first_attempt() {
    let Some(server) = TestRedis::start() else {
        return;
    };
    let (holder_side, waiter_side) = (backend(&server).await, listening(&server).await);
    for round in 0..3 {
        let held = try_lock(&holder_side, "again", Exclusive, LONG)
            .await
            .unwrap();
        let calls = waiter_side.script_calls();
        let grant = handed_over_by_release(held, &waiter_side, "again").await;
        assert!(grant.waited);
        // The first wait tries, subscribes and queues; later ones find the channel
        // still subscribed and queue at once: one script call, the release does the rest.
        let expected = if round == 0 { 2 } else { 1 };
        assert_eq!(
            waiter_side.script_calls() - calls,
            expected,
            "round {round}"
        );
        grant.release().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_release_reconnects_after_a_restart_and_reports_a_lost_lease() {
    let Some(mut server) = TestRedis::start() else {
        return;
    };
    let side = backend_with(impatient(server.url(), 500)).await;
    // The first blocking release opens the connection it then keeps.
    let grant = try_lock(&side, "b", Exclusive, LONG).await.unwrap();
    grant.release_blocking().unwrap();
    server.kill();
    let err = side
        .try_acquire(
            "b",
            Exclusive,
            &RedisBackend::record("test", Exclusive),
            LONG,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, UNAVAILABLE, "{err}");
    server.launch();
    // The kept connection died with the server: replaced, and the release goes through.
    let grant = lock(&side, "b", Exclusive, LONG, Duration::from_secs(5))
        .await
        .unwrap();
    grant.release_blocking().unwrap();
    assert!(holders_of(&side, "b").await.is_empty());
    // A lease that ran out before its release is reported, as by the async release.
    let grant = try_lock(&side, "b", Exclusive, 100).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lost = grant.release_blocking().unwrap_err();
    assert_eq!(lost.code, code::COMPROMISED, "{lost}");
    assert!(lost.message.contains("run out"), "{lost}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_stopped_past_its_place_after_a_handoff_waits_on_and_gets_the_lock() {
    let Some(server) = TestRedis::start() else {
        return;
    };
    let (holder_side, waiter_side) = (backend(&server).await, listening(&server).await);
    const PLACE_MS: u64 = 300;
    // On resuming, the waiter finds both the handoff's message and its timer ready,
    // and which it takes first varies: rounds enough that the message is taken.
    for round in 0..8 {
        let name: &'static str = Box::leak(format!("s{round}").into_boxed_str());
        let held = try_lock(&holder_side, name, Exclusive, LONG).await.unwrap();
        let record = RedisBackend::record("test", Exclusive);
        let mut wait = Box::pin(waiter_side.acquire(
            name,
            Exclusive,
            &record,
            PLACE_MS,
            None,
            CancellationToken::new(),
        ));
        // Driven until it waits in line, then not at all: a process stopped by SIGSTOP.
        tokio::select! {
            _ = &mut wait => panic!("granted while held"),
            _ = until_in_line(&holder_side, name, 1) => {}
        }
        let held_token = held.token;
        held.release().await.unwrap(); // hands the lock to the stopped waiter
        let start = Instant::now();
        while !holders_of(&holder_side, name).await.is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the grant never lapsed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // It runs again: the grant it hears of lapsed, which is no lock it lost.
        let grant = wait.await.expect("waits on and gets the free lock");
        assert!(
            grant.token > held_token + 1,
            "the lapsed grant took a token"
        );
        grant.release().await.unwrap();
    }
}
