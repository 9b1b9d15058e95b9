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
        for held in held {
            let mut state = held.state();
            let HeldState { lock, compromised } = &mut *state;
            let Some(lock) = lock.as_mut() else { continue };
            if let Err(err) = lock.beat(now) {
                if compromised.is_none() {
                    *compromised = Some(err.clone());
                    lost.push((held.grant.clone(), err));
                }
            }
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
