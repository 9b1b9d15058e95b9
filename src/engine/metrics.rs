//! Counters and wait/hold time distributions for one LockManager. Recording is a
//! counter bump and a histogram increment under an uncontended mutex, so the
//! uncontended acquire path stays a few system calls.

use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

/// A distribution in milliseconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Distribution {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    pub acquisitions: u64,
    pub releases: u64,
    /// Attempts that found the lock held (whether they then waited, failed or gave up).
    pub contended: u64,
    pub timeouts: u64,
    pub aborts: u64,
    pub stale_cleaned: u64,
    pub compromised: u64,
    pub held_now: u64,
    pub wait: Distribution,
    pub hold: Distribution,
}

#[derive(Debug, Clone, Copy)]
pub enum Event {
    Acquired { waited: Duration },
    Released { held: Duration },
    Contended,
    TimedOut,
    Aborted,
    StaleCleaned(u64),
    Compromised,
}

struct Recorded {
    acquisitions: u64,
    releases: u64,
    contended: u64,
    timeouts: u64,
    aborts: u64,
    stale_cleaned: u64,
    compromised: u64,
    /// Microseconds, three significant figures, growing as needed.
    wait: Histogram<u64>,
    hold: Histogram<u64>,
}

impl Recorded {
    fn new() -> Self {
        let histogram = || Histogram::new(3).expect("3 significant figures is a valid histogram");
        Recorded {
            acquisitions: 0,
            releases: 0,
            contended: 0,
            timeouts: 0,
            aborts: 0,
            stale_cleaned: 0,
            compromised: 0,
            wait: histogram(),
            hold: histogram(),
        }
    }
}

pub struct Metrics {
    recorded: Mutex<Recorded>,
    /// `metrics: false` turns recording off; snapshots then stay at zero.
    enabled: bool,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(true)
    }
}

impl Metrics {
    pub fn new(enabled: bool) -> Self {
        Metrics {
            recorded: Mutex::new(Recorded::new()),
            enabled,
        }
    }

    pub fn record(&self, event: Event) {
        if !self.enabled {
            return;
        }
        let mut m = self.recorded.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            Event::Acquired { waited } => {
                m.acquisitions += 1;
                let _ = m.wait.record(waited.as_micros() as u64); // grows as needed
            }
            Event::Released { held } => {
                m.releases += 1;
                let _ = m.hold.record(held.as_micros() as u64);
            }
            Event::Contended => m.contended += 1,
            Event::TimedOut => m.timeouts += 1,
            Event::Aborted => m.aborts += 1,
            Event::StaleCleaned(n) => m.stale_cleaned += n,
            Event::Compromised => m.compromised += 1,
        }
    }

    pub fn snapshot(&self, held_now: usize) -> MetricsSnapshot {
        let m = self.recorded.lock().unwrap_or_else(|p| p.into_inner());
        MetricsSnapshot {
            acquisitions: m.acquisitions,
            releases: m.releases,
            contended: m.contended,
            timeouts: m.timeouts,
            aborts: m.aborts,
            stale_cleaned: m.stale_cleaned,
            compromised: m.compromised,
            held_now: held_now as u64,
            wait: distribution(&m.wait),
            hold: distribution(&m.hold),
        }
    }

    pub fn reset(&self) {
        *self.recorded.lock().unwrap_or_else(|p| p.into_inner()) = Recorded::new();
    }
}

fn distribution(h: &Histogram<u64>) -> Distribution {
    if h.is_empty() {
        return Distribution::default();
    }
    let ms = |micros: u64| micros as f64 / 1000.0;
    Distribution {
        count: h.len(),
        mean: h.mean() / 1000.0,
        p50: ms(h.value_at_quantile(0.50)),
        p95: ms(h.value_at_quantile(0.95)),
        p99: ms(h.value_at_quantile(0.99)),
        max: ms(h.max()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_distributions() {
        let metrics = Metrics::default();
        for ms in 1..=100 {
            metrics.record(Event::Acquired {
                waited: Duration::from_millis(ms),
            });
        }
        metrics.record(Event::Contended);
        metrics.record(Event::TimedOut);
        metrics.record(Event::StaleCleaned(3));
        let s = metrics.snapshot(2);
        assert_eq!(
            (
                s.acquisitions,
                s.contended,
                s.timeouts,
                s.stale_cleaned,
                s.held_now
            ),
            (100, 1, 1, 3, 2)
        );
        assert_eq!(s.wait.count, 100);
        assert!((s.wait.mean - 50.5).abs() < 0.1, "{}", s.wait.mean);
        assert!(
            (s.wait.p50 - 50.0).abs() < 0.1
                && (s.wait.p99 - 99.0).abs() < 0.1
                && (s.wait.max - 100.0).abs() < 0.1,
            "{s:?}"
        );
        assert_eq!(s.hold, Distribution::default());
        metrics.reset();
        assert_eq!(metrics.snapshot(0), MetricsSnapshot::default());
    }
}
