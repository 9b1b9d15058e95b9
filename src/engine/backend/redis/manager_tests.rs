//! The manager on Redis: the same calls as on files, through the `Backend` trait.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::test_server::TestRedis;
use super::RedisConfig;
use crate::engine::backend::Strategy;
use crate::engine::manager::{AcquireOptions, Acquisition, LockManager, ManagerOptions, Wait};
use crate::engine::owner_record::LockMode;
use crate::engine::runtime::runtime;
use crate::engine::{code, Result};

fn manager(server: &TestRedis, owner: &str) -> LockManager {
    LockManager::new(ManagerOptions {
        strategy: Strategy::Redis(RedisConfig::new(server.url())),
        stale_ms: 3_000,
        timeout: Wait::For(Duration::from_secs(5)),
        ..ManagerOptions::new(owner)
    })
    .unwrap()
}

/// A manager whose leases last `stale_ms`, with the default timeouts.
fn leasing(server: &TestRedis, owner: &str, stale_ms: u64) -> LockManager {
    LockManager::new(ManagerOptions {
        strategy: Strategy::Redis(RedisConfig::new(server.url())),
        stale_ms,
        ..ManagerOptions::new(owner)
    })
    .unwrap()
}

fn options(mode: LockMode, timeout: Option<Wait>) -> AcquireOptions {
    AcquireOptions {
        mode,
        timeout,
        ..AcquireOptions::default()
    }
}

fn acquire(
    m: &LockManager,
    name: &str,
    options: &AcquireOptions,
) -> Result<crate::engine::LockGrant> {
    match m.acquire(name, options, CancellationToken::new()) {
        Acquisition::Ready(result) => result,
        Acquisition::Waiting(wait) => runtime().block_on(wait),
    }
}

#[test]
fn a_manager_on_redis_grants_excludes_waits_and_names_holders() {
    let Some(server) = TestRedis::start() else {
        return;
    };
    let (a, b) = (manager(&server, "host-a"), manager(&server, "host-b"));
    // Names are keys, not paths: no working directory in them.
    let first = acquire(&a, "tasks.json", &options(LockMode::Exclusive, None)).unwrap();
    assert_eq!(first.lockfile.to_str(), Some("tasks.json"));
    assert_eq!(first.token, 1);
    assert!(b
        .try_acquire("tasks.json", &AcquireOptions::default())
        .unwrap()
        .is_none());
    let err = acquire(
        &b,
        "tasks.json",
        &options(LockMode::Exclusive, Some(Wait::Once)),
    )
    .unwrap_err();
    assert_eq!(err.code, code::LOCKED);
    assert!(err.message.contains("host-a"), "{}", err.message);
    let status = a.status("tasks.json", None).unwrap();
    assert!(status.locked);
    assert_eq!(status.owners[0].record.process, "host-a");
    // A waiter in another manager gets it once it is released, with a larger token.
    let waiter = b.acquire(
        "tasks.json",
        &AcquireOptions::default(),
        CancellationToken::new(),
    );
    let Acquisition::Waiting(wait) = waiter else {
        panic!("a remote acquire never settles on the calling thread");
    };
    let waiting = runtime().spawn(wait);
    a.release(first.id, code::RELEASED).unwrap();
    let second = runtime().block_on(waiting).unwrap().unwrap();
    assert_eq!(second.token, 2);
    // Heartbeats renew the lease (a third of stale) while it is held.
    b.release(second.id, code::RELEASED).unwrap();
    assert!(!a.status("tasks.json", None).unwrap().locked);
}

#[test]
fn a_manager_on_redis_shares_read_locks_and_times_out_writers() {
    let Some(server) = TestRedis::start() else {
        return;
    };
    let m = manager(&server, "reader");
    let r1 = acquire(&m, "index", &options(LockMode::Shared, None)).unwrap();
    let r2 = acquire(&m, "index", &options(LockMode::Shared, None)).unwrap();
    let writer = manager(&server, "writer");
    let err = acquire(
        &writer,
        "index",
        &options(
            LockMode::Exclusive,
            Some(Wait::For(Duration::from_millis(200))),
        ),
    )
    .unwrap_err();
    assert_eq!(err.code, code::TIMEOUT);
    m.release(r1.id, code::RELEASED).unwrap();
    m.release(r2.id, code::RELEASED).unwrap();
    let w = acquire(&writer, "index", &options(LockMode::Exclusive, None)).unwrap();
    writer.release(w.id, code::RELEASED).unwrap();
}

#[test]
fn a_manager_on_a_redis_that_is_not_there_is_unavailable_within_its_timeout() {
    let port = super::test_server::free_port();
    let m = LockManager::new(ManagerOptions {
        strategy: Strategy::Redis(RedisConfig {
            connect_timeout: Duration::from_millis(100),
            response_timeout: Duration::from_millis(100),
            ..RedisConfig::new(format!("redis://127.0.0.1:{port}/0"))
        }),
        ..ManagerOptions::new("lonely")
    })
    .unwrap();
    let started = std::time::Instant::now();
    let err = acquire(
        &m,
        "x",
        &options(
            LockMode::Exclusive,
            Some(Wait::For(Duration::from_millis(300))),
        ),
    )
    .unwrap_err();
    assert_eq!(err.code, super::UNAVAILABLE);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by its timeout"
    );
    let err = m.try_acquire("x", &AcquireOptions::default()).unwrap_err();
    assert_eq!(err.code, super::UNAVAILABLE);
}

#[test]
fn the_native_heartbeat_renews_a_held_lease() {
    let Some(server) = TestRedis::start() else {
        return;
    };
    let m = leasing(&server, "beating", 2_000); // a beat every 666 ms
    let held = acquire(&m, "lease", &options(LockMode::Exclusive, None)).unwrap();
    let other = manager(&server, "other");
    let started = std::time::Instant::now();
    // Renewed past the first lease's end, and still ours all along.
    loop {
        let status = other.status("lease", None).unwrap();
        let owner = &status.owners[0].record;
        assert_eq!(owner.lock_id, held.lock_id);
        if started.elapsed() > Duration::from_millis(2_500) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(other
        .try_acquire("lease", &AcquireOptions::default())
        .unwrap()
        .is_none());
    m.release(held.id, code::RELEASED).unwrap();
}

/// A stopped server accepts and never answers, so each renewal is cut off at its
/// beat's period (the client's own timeouts are longer): the holder is told once its
/// lease has surely run out, not only when the server answers again.
#[cfg(unix)]
#[test]
fn a_holder_whose_renewals_get_no_answer_is_compromised_when_its_lease_runs_out() {
    let Some(server) = TestRedis::start() else {
        return;
    };
    // A beat every 500 ms, bounded by that; replies time out in 2 s.
    let m = leasing(&server, "cut-off", 1_500);
    let (told, heard) = std::sync::mpsc::channel();
    m.set_on_compromised(Some(Box::new(move |_grant, error| {
        let _ = told.send(error.clone());
    })));
    let held = acquire(&m, "partitioned", &options(LockMode::Exclusive, None)).unwrap();
    server.pause(true);
    let heard = heard.recv_timeout(Duration::from_secs(10));
    server.pause(false);
    let error = heard.expect("told while the server is still stopped");
    assert_eq!(error.code, code::COMPROMISED, "{error}");
    assert!(error.message.contains("no answer"), "{error}");
    let _ = m.release(held.id, code::RELEASED);
}

#[test]
fn a_timeout_shorter_than_a_round_trip_is_one_attempt_and_etimeout() {
    let Some(server) = TestRedis::start() else {
        return;
    };
    let (a, b) = (manager(&server, "holder"), manager(&server, "hurried"));
    let held = acquire(&a, "busy", &options(LockMode::Exclusive, None)).unwrap();
    let short = options(
        LockMode::Exclusive,
        Some(Wait::For(Duration::from_micros(1))),
    );
    assert_eq!(acquire(&b, "busy", &short).unwrap_err().code, code::TIMEOUT);
    // On a free lock the one attempt is granted.
    let free = acquire(&b, "free", &short).unwrap();
    b.release(free.id, code::RELEASED).unwrap();
    a.release(held.id, code::RELEASED).unwrap();
}

#[test]
fn close_gives_leases_back_at_once() {
    let Some(server) = TestRedis::start() else {
        return;
    };
    let a = manager(&server, "closing");
    acquire(&a, "given-back", &options(LockMode::Exclusive, None)).unwrap();
    a.close();
    // Not left to run out its lease (3 s): free for the next process now.
    let b = manager(&server, "next");
    assert!(b
        .try_acquire("given-back", &AcquireOptions::default())
        .unwrap()
        .is_some());
}
