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
}

#[derive(Default)]
struct LinePlaces {
    /// In order of asking.
    queue: VecDeque<Entry>,
}

struct Entry {
    /// `None`: waits forever.
    deadline: Option<Instant>,
    /// Told when the place may have come first: only the new first place is told
    /// when one leaves, so a long line costs one wake-up per turn. Also the place's
    /// identity: its `Place` holds the same `Arc`.
    turn: Arc<Notify>,
}

impl Entry {
    fn is(&self, place: &Place) -> bool {
        Arc::ptr_eq(&self.turn, &place.turn)
    }
}

impl Line {
    fn places(&self) -> std::sync::MutexGuard<'_, LinePlaces> {
        self.places.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the place at the back of the line.
    pub fn join(self: &Arc<Line>, deadline: Option<Instant>) -> Place {
        let turn = Arc::new(Notify::new());
        self.places().queue.push_back(Entry {
            deadline,
            turn: Arc::clone(&turn),
        });
        Place {
            line: Arc::clone(self),
            turn,
        }
    }

    /// Whether no wait holds a place that still counts: an attempt from outside the
    /// line may go ahead.
    pub fn is_free(&self) -> bool {
        let now = Instant::now();
        self.places()
            .queue
            .iter()
            .all(|entry| passed(entry.deadline, now))
    }
}

fn passed(deadline: Option<Instant>, now: Instant) -> bool {
    deadline.is_some_and(|at| at <= now)
}

/// A wait's place in its `Line`; dropping it leaves the line.
pub struct Place {
    line: Arc<Line>,
    turn: Arc<Notify>,
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
        for entry in self.line.places().queue.iter() {
            if entry.is(self) {
                break;
            }
            if passed(entry.deadline, now) {
                continue;
            }
            ahead = true;
            if let Some(at) = entry.deadline {
                next_change = Some(next_change.map_or(at, |n| n.min(at)));
            }
        }
        if ahead {
            Standing::Behind(next_change)
        } else {
            Standing::First
        }
    }

    /// Until every place ahead has left or run out. A place that leaves tells the
    /// one then first (a permit kept if it is not listening yet); one ahead that
    /// runs out tells nobody, so the places behind it also wake at its deadline.
    pub async fn until_first(&self) {
        loop {
            match self.standing() {
                Standing::First => return,
                Standing::Behind(None) => self.turn.notified().await,
                Standing::Behind(Some(at)) => {
                    tokio::select! {
                        _ = self.turn.notified() => {}
                        _ = tokio::time::sleep_until(at.into()) => {}
                    }
                }
            }
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let now = Instant::now();
        let mut places = self.line.places();
        // Usually at the front: the wait that leaves is the one whose turn it was.
        if let Some(at) = places.queue.iter().position(|entry| entry.is(self)) {
            places.queue.remove(at);
        }
        if let Some(first) = places.queue.iter().find(|e| !passed(e.deadline, now)) {
            first.turn.notify_one();
        }
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

    #[test]
    fn a_place_that_leaves_tells_only_the_one_then_first() {
        use futures_util::FutureExt;
        let line = Arc::new(Line::default());
        let (a, b, c) = (line.join(None), line.join(None), line.join(None));
        drop(a);
        assert!(b.turn.notified().now_or_never().is_some());
        assert!(c.turn.notified().now_or_never().is_none());
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
