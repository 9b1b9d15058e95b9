//! How a contended acquire waits: first in line among this process's waiters for the
//! same lock file, then retrying its non-blocking kernel lock whenever the lock file
//! may have been released. All waits share one small runtime, so the number of OS
//! threads stays fixed however many waiters there are, and no waiter occupies
//! libuv's threadpool (which Node's own `fs` calls need).

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use futures_util::future::select_all;
use tokio::sync::{Mutex as FifoMutex, OwnedMutexGuard};

use super::backend::{Contend, HeldLock};
use super::error::Result;
use super::owner_record::Claimant;
use super::process::ProcessIdentity;
use super::release_events::{listen, ReleaseEvents};

/// Retry interval for releases no event reports: a holder on another host of a
/// network filesystem, or a crashed holder whose close event beat its lock's removal.
pub const SAFETY_TICK: Duration = Duration::from_millis(50);

pub type Turn = Arc<FifoMutex<()>>;

type Turns = HashMap<OsString, Weak<FifoMutex<()>>>;

/// Queues by lock file, keyed by the path's bytes, as the idle files are: lock file
/// paths arrive normalised.
fn turns() -> std::sync::MutexGuard<'static, Turns> {
    static TURNS: OnceLock<Mutex<Turns>> = OnceLock::new();
    TURNS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// The in-process queue for one lock file. tokio's mutex grants in request order,
/// which is what makes waiters in one process first-come first-served.
pub fn turn_for(lockfile: &Path) -> Turn {
    let mut turns = turns();
    if let Some(turn) = turns.get(lockfile.as_os_str()).and_then(Weak::upgrade) {
        return turn;
    }
    // Forget queues nobody uses any more before adding one, so the map stays as
    // small as the set of lock files in use.
    if turns.len() >= 64 {
        turns.retain(|_, turn| turn.strong_count() > 0);
    }
    let turn = Arc::new(FifoMutex::new(()));
    turns.insert(lockfile.as_os_str().to_owned(), Arc::downgrade(&turn));
    turn
}

/// The queue for `lockfile` if a wait in this process has one; an uncontended
/// attempt only asks, and makes none.
pub fn existing_turn(lockfile: &Path) -> Option<Turn> {
    turns().get(lockfile.as_os_str()).and_then(Weak::upgrade)
}

/// Waits, first for this process's earlier waiters, then for the kernel lock. The
/// caller bounds it with a deadline and cancellation by dropping the future; every
/// attempt is a single non-blocking call, so a dropped wait never holds anything.
pub async fn wait_for_lock(
    (turn, place): (Turn, Option<OwnedMutexGuard<()>>),
    mut contender: Box<dyn Contend>,
    claimant: Claimant,
    events: Arc<ReleaseEvents>,
) -> Result<Box<dyn HeldLock>> {
    // Our place in line: taken already if the queue was free, else waited for.
    let _turn: OwnedMutexGuard<()> = match place {
        Some(place) => place,
        None => turn.lock_owned().await,
    };
    let paths = contender.wake_paths();
    let subscriptions: Vec<_> = paths.iter().map(|p| events.subscribe(p)).collect();
    let mut generation = contender.generation();
    // At most one immediate retry per wake-up: a lock file replaced on every attempt
    // must not spin this thread past its deadline.
    let mut retried = false;
    loop {
        for path in &paths {
            events.ensure_watched(path);
        }
        // Registered before the attempt, so a release between the attempt and the
        // await still wakes us.
        let wakes = listen(&subscriptions);
        if let Some(lock) =
            contender.try_acquire(&claimant, ProcessIdentity::get().next_lock_id(), true)?
        {
            return Ok(lock);
        }
        if contender.generation() != generation {
            // The lock file was re-created: watch the new one, then try again, since
            // a release of it before the watch existed woke nobody.
            generation = contender.generation();
            for path in &paths {
                events.rewatch(path);
            }
            if !retried {
                retried = true;
                continue;
            }
        }
        tokio::select! {
            _ = select_all(wakes) => {}
            _ = tokio::time::sleep(SAFETY_TICK) => {}
        }
        retried = false;
    }
}
