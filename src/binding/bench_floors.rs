//! Floors for `npm run bench`, timed in Rust so that no JavaScript or binding cost is
//! in them: what the kernel's primitives cost on this machine, and what one engine
//! acquire/release cycle costs before any call crosses into Node.

use std::fs::{self, OpenOptions};
use std::path::Path;
use std::time::Instant;

use crate::engine::backend::Strategy;
use crate::engine::safe_fs::overwrite;
use crate::engine::{AcquireOptions, LockManager, ManagerOptions, Result};

/// Nanoseconds per iteration of each floor.
#[napi_derive::napi(object, js_name = "BenchmarkFloors")]
pub struct Floors {
    /// A bare `flock` lock + unlock pair on an open file.
    pub flock_pair: f64,
    /// The least a lock that records its owner can do, on a descriptor kept open:
    /// `flock(LOCK_EX)`, `pwrite` a 200-byte record, `pwrite` a release record,
    /// `flock(LOCK_UN)`. The physical floor of an uncontended cycle (issue #16).
    pub record_cycle: f64,
    /// A bare `mkdir` + `rmdir` pair: proper-lockfile's protocol without anything else.
    pub mkdir_rmdir: f64,
    /// One engine acquire + release, kernel strategy.
    pub engine_cycle: f64,
    /// One engine acquire + release, mkdir strategy.
    pub engine_mkdir_cycle: f64,
}

pub fn measure(dir: &Path, iterations: u32) -> Result<Floors> {
    let iterations = iterations.max(1);
    let per = |started: Instant| started.elapsed().as_nanos() as f64 / f64::from(iterations);
    let io = |e: std::io::Error| crate::engine::LockError::from_io(&e, "benchmark", dir);

    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join("floor.lock"))
        .map_err(io)?;
    let started = Instant::now();
    for _ in 0..iterations {
        file.lock().map_err(io)?;
        file.unlock().map_err(io)?;
    }
    let flock_pair = per(started);

    let record = [b' '; 200];
    let released = br#"{"token":1}"#;
    let started = Instant::now();
    for _ in 0..iterations {
        file.lock().map_err(io)?;
        overwrite(&file, &record, 0).map_err(io)?;
        overwrite(&file, released, 0).map_err(io)?;
        file.unlock().map_err(io)?;
    }
    let record_cycle = per(started);

    let lock_dir = dir.join("floor.dir.lock");
    let started = Instant::now();
    for _ in 0..iterations {
        fs::create_dir(&lock_dir).map_err(io)?;
        fs::remove_dir(&lock_dir).map_err(io)?;
    }
    let mkdir_rmdir = per(started);

    let cycle = |strategy: Strategy, name: &str| -> Result<f64> {
        // No beats during the loop: the kernel strategy may turn them off; the mkdir
        // one needs them, at its default period (longer than the loop).
        let heartbeat_ms = matches!(strategy, Strategy::Kernel).then_some(0.0);
        let manager = LockManager::new(ManagerOptions {
            strategy,
            heartbeat_ms,
            ..ManagerOptions::new("bench-floor")
        })?;
        // A file that exists, as a locked file does: a missing one would take
        // realpath's slow way on every acquire.
        let target = dir.join(name);
        fs::write(&target, b"{}").map_err(io)?;
        let target = target.to_string_lossy().into_owned();
        let options = AcquireOptions::default();
        let started = Instant::now();
        for _ in 0..iterations {
            let grant = manager.acquire_blocking(&target, &options)?;
            manager.release(grant.id, crate::engine::code::RELEASED)?;
        }
        Ok(per(started))
    };
    Ok(Floors {
        flock_pair,
        record_cycle,
        mkdir_rmdir,
        engine_cycle: cycle(Strategy::Kernel, "floor-engine.json")?,
        engine_mkdir_cycle: cycle(Strategy::Mkdir, "floor-engine-mkdir.json")?,
    })
}
