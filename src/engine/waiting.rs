//! How a contended acquire waits: first in line among this process's waiters for the
//! same lock file, then retrying its non-blocking kernel lock whenever the lock file
//! may have been released. All waits share one small runtime, so the number of OS
//! threads stays fixed however many waiters there are, and no waiter occupies
//! libuv's threadpool (which Node's own `fs` calls need).

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use futures_util::future::select_all;
use tokio::sync::Notify;

use super::backend::{Contend, HeldLock};
use super::error::Result;
use super::owner_record::Claimant;
use super::process::ProcessIdentity;
use super::release_events::{listen, ReleaseEvents};

/// Retry interval for releases no event reports: a holder on another host of a
/// network filesystem, or a crashed holder whose close event beat its lock's removal.
pub const SAFETY_TICK: Duration = Duration::from_millis(50);

/// The waits of this process for one lock file, in the order they were asked for.
/// Each holds its place until it ends or its deadline passes, whichever is first: a
/// wait whose thread is busy (a JavaScript thread in synchronous work) cannot end
/// itself on time, so the waits behind it count its place as gone at its deadline
/// rather than wait for that thread to run again.
#[derive(Default)]
pub struct Line {
    places: Mutex<LinePlaces>,
    /// Told when a place leaves, so the waits behind it look again.
    left: Notify,
}

#[derive(Default)]
struct LinePlaces {
    next_id: u64,
    /// (id, deadline) in order of asking; `None`: waits forever.
    queue: VecDeque<(u64, Option<Instant>)>,
}

impl Line {
    fn places(&self) -> std::sync::MutexGuard<'_, LinePlaces> {
        self.places.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the place at the back of the line.
    pub fn join(self: &Arc<Line>, deadline: Option<Instant>) -> Place {
        let mut places = self.places();
        let id = places.next_id;
        places.next_id += 1;
        places.queue.push_back((id, deadline));
        Place {
            line: Arc::clone(self),
            id,
        }
    }

    /// Whether no wait holds a place that still counts: an attempt from outside the
    /// line may go ahead.
    pub fn is_free(&self) -> bool {
        let now = Instant::now();
        self.places()
            .queue
            .iter()
            .all(|&(_, deadline)| passed(deadline, now))
    }
}

fn passed(deadline: Option<Instant>, now: Instant) -> bool {
    deadline.is_some_and(|at| at <= now)
}

/// A wait's place in its `Line`; dropping it leaves the line.
pub struct Place {
    line: Arc<Line>,
    id: u64,
}

/// Where a place stands: first, or behind places of which the earliest to run out
/// does so at this instant (`None`: all of them wait forever).
enum Standing {
    First,
    Behind(Option<Instant>),
}

impl Place {
    fn standing(&self) -> Standing {
        let now = Instant::now();
        let mut ahead = false;
        let mut next_change: Option<Instant> = None;
        for &(id, deadline) in self.line.places().queue.iter() {
            if id == self.id {
                break;
            }
            if passed(deadline, now) {
                continue;
            }
            ahead = true;
            if let Some(at) = deadline {
                next_change = Some(next_change.map_or(at, |n| n.min(at)));
            }
        }
        if ahead {
            Standing::Behind(next_change)
        } else {
            Standing::First
        }
    }

    /// Until every place ahead has left or run out.
    pub async fn until_first(&self) {
        loop {
            let left = self.line.left.notified();
            tokio::pin!(left);
            left.as_mut().enable();
            match self.standing() {
                Standing::First => return,
                Standing::Behind(None) => left.await,
                Standing::Behind(Some(at)) => {
                    tokio::select! {
                        _ = left => {}
                        _ = tokio::time::sleep_until(at.into()) => {}
                    }
                }
            }
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.line.places().queue.retain(|&(id, _)| id != self.id);
        self.line.left.notify_waiters();
    }
}

type Lines = HashMap<OsString, Weak<Line>>;

/// Lines by lock file, keyed by the path's bytes, as the idle files are: lock file
/// paths arrive normalised.
fn lines() -> std::sync::MutexGuard<'static, Lines> {
    static LINES: OnceLock<Mutex<Lines>> = OnceLock::new();
    LINES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// The in-process line for one lock file, which makes waiters in one process
/// first-come first-served.
pub fn line_for(lockfile: &Path) -> Arc<Line> {
    let mut lines = lines();
    if let Some(line) = lines.get(lockfile.as_os_str()).and_then(Weak::upgrade) {
        return line;
    }
    // Forget lines nobody uses any more before adding one, so the map stays as
    // small as the set of lock files in use.
    if lines.len() >= 64 {
        lines.retain(|_, line| line.strong_count() > 0);
    }
    let line = Arc::new(Line::default());
    lines.insert(lockfile.as_os_str().to_owned(), Arc::downgrade(&line));
    line
}

/// The line for `lockfile` if a wait in this process has one; an uncontended
/// attempt only asks, and makes none.
pub fn existing_line(lockfile: &Path) -> Option<Arc<Line>> {
    lines().get(lockfile.as_os_str()).and_then(Weak::upgrade)
}

/// Waits, first for this process's earlier waiters, then for the kernel lock. The
/// caller bounds it with a deadline and cancellation by dropping the future; every
/// attempt is a single non-blocking call, so a dropped wait never holds anything.
pub async fn wait_for_lock(
    place: Place,
    mut contender: Box<dyn Contend>,
    claimant: Claimant,
    events: Arc<ReleaseEvents>,
) -> Result<Box<dyn HeldLock>> {
    // Our turn among this process's waits; the place is kept until we return.
    place.until_first().await;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn first(place: &Place) -> bool {
        matches!(place.standing(), Standing::First)
    }

    #[test]
    fn places_go_in_order_and_leave_when_dropped() {
        let line = Arc::new(Line::default());
        let a = line.join(None);
        let b = line.join(None);
        assert!(first(&a) && !first(&b) && !line.is_free());
        drop(a);
        assert!(first(&b));
        drop(b);
        assert!(line.is_free());
    }

    #[test]
    fn a_place_past_its_deadline_holds_back_no_one() {
        let line = Arc::new(Line::default());
        let now = Instant::now();
        let lapsed = line.join(Some(now));
        let later = line.join(Some(now + Duration::from_secs(60)));
        let last = line.join(None);
        assert!(first(&later), "the lapsed place ahead does not count");
        assert!(
            matches!(last.standing(), Standing::Behind(Some(at)) if at == now + Duration::from_secs(60))
        );
        drop(later);
        assert!(first(&last));
        drop(last);
        assert!(line.is_free(), "only a lapsed place is left");
        drop(lapsed);
    }

    #[tokio::test]
    async fn the_place_behind_moves_up_when_the_one_ahead_runs_out_or_leaves() {
        let line = Arc::new(Line::default());
        let ahead = line.join(Some(Instant::now() + Duration::from_millis(50)));
        let behind = line.join(None);
        // Nobody drops `ahead`: its deadline alone lets `behind` go.
        tokio::time::timeout(Duration::from_secs(10), behind.until_first())
            .await
            .expect("first once the place ahead ran out");
        drop(ahead);
        let forever = line.join(None);
        let next = line.join(None);
        let waiting = tokio::spawn(async move { next.until_first().await });
        tokio::task::yield_now().await;
        drop(behind);
        drop(forever);
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("first once the places ahead left")
            .unwrap();
    }
}
