//! The heartbeat: every held lock's sign of life refreshed on lockwright's own
//! runtime, so a holder whose JavaScript thread is blocked keeps its locks, and a lock
//! found lost is reported once (`ECOMPROMISED`) to the manager's handler.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::engine::metrics::Event;
use crate::engine::owner_record::now_ms;
use crate::engine::runtime::runtime;

use super::{Held, HeldState, Inner, LockManager};

impl LockManager {
    /// Refreshes every held lock's heartbeat; reports locks found lost. The map is
    /// held only to copy it: acquires and releases go on during the file I/O.
    pub(super) fn beat(&self) {
        let now = now_ms();
        let mut lost = Vec::new();
        let held: Vec<Arc<Held>> = self.held().values().cloned().collect();
        let beat = |held: &Arc<Held>| {
            let mut state = held.state();
            let HeldState { lock, compromised } = &mut *state;
            let lock = lock.as_mut()?;
            let err = lock.beat(now).err()?;
            if compromised.is_some() {
                return None;
            }
            *compromised = Some(err.clone());
            Some((held.grant.clone(), err))
        };
        if self.inner.backend.remote() {
            // Each beat is a round trip: side by side, so one lease's slow renewal
            // never makes another's come after its lease ran out.
            std::thread::scope(|scope| {
                let beats: Vec<_> = held.iter().map(|h| scope.spawn(move || beat(h))).collect();
                lost.extend(beats.into_iter().filter_map(|b| b.join().ok().flatten()));
            });
        } else {
            lost.extend(held.iter().filter_map(beat));
        }
        if lost.is_empty() {
            return;
        }
        let handler = self
            .inner
            .on_compromised
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (grant, err) in lost {
            self.inner.metrics.record(Event::Compromised);
            if let Some(handler) = handler.as_ref() {
                handler(&grant, &err);
            }
        }
    }
}

/// Beats on the shared runtime, so a holder whose JavaScript thread is blocked still
/// shows life; ends with the manager.
pub(super) fn start_heartbeat(manager: Weak<Inner>, period: Duration, closing: CancellationToken) {
    runtime().spawn(async move {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await; // the first tick is immediate; the grant wrote a fresh record
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = closing.cancelled() => return,
            }
            let Some(inner) = manager.upgrade() else {
                return;
            };
            // Off the wait runtime's single worker: the beats are file I/O.
            let _ = tokio::task::spawn_blocking(move || LockManager { inner }.beat()).await;
        }
    });
}
