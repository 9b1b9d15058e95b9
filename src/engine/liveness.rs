//! Is a lock's recorded holder still alive? Only where the record proves the holder
//! ran on this host, in this boot and in this PID namespace can its PID be looked up:
//! then it is alive if that PID runs and started when the record says (a PID reused by
//! another process is not the holder). Anywhere else (another host, a container that
//! shares the host name, a record too old to say) its heartbeat must be fresh.

use super::owner_record::{OwnerRecord, ProcessOrigin};
#[cfg(not(target_os = "linux"))]
use super::process::process_start;
#[cfg(target_os = "linux")]
use super::process::start_ticks;
use super::process::ProcessIdentity;

/// Milliseconds since the holder last showed life: its heartbeat, or the grant time
/// for a record written before its first beat.
pub fn heartbeat_age_ms(record: &OwnerRecord, now_ms: u64) -> u64 {
    now_ms.saturating_sub(record.heartbeat.max(record.timestamp))
}

pub fn holder_alive(record: &OwnerRecord, stale_ms: u64, now_ms: u64) -> bool {
    match runs_here(record) {
        Some(alive) => alive,
        None => heartbeat_age_ms(record, now_ms) < stale_ms,
    }
}

/// Whether the holder still runs, if its PID can be looked up here at all: the record
/// must show this host, and where this OS has boot ids and PID namespaces, this boot
/// and this namespace. `None`: nothing here can tell; only its heartbeat can.
fn runs_here(record: &OwnerRecord) -> Option<bool> {
    let me = ProcessIdentity::get();
    let (mine, theirs) = (&me.origin, &record.origin);
    if record.host != me.host
        || !proven(&mine.boot_id, &theirs.boot_id)
        || !proven(&mine.pid_ns, &theirs.pid_ns)
    {
        return None;
    }
    Some(same_process_runs(record.pid, theirs, record.process_start))
}

/// The record matches us: both have the same value, or neither has one (an OS
/// without boot ids or PID namespaces). A value we cannot read for ourselves (no
/// `/proc`) proves nothing about a record that has one.
fn proven<T: PartialEq>(ours: &Option<T>, theirs: &Option<T>) -> bool {
    theirs == ours
}

/// Compared in clock ticks, which no wall-clock step moves.
#[cfg(target_os = "linux")]
fn same_process_runs(pid: u32, origin: &ProcessOrigin, _process_start: Option<u64>) -> bool {
    match (start_ticks(pid), origin.start_ticks) {
        (None, _) => false,
        (Some(started), Some(recorded)) => started == recorded,
        // A record without a start (another tool's) can only be judged by PID.
        (Some(_), None) => true,
    }
}

#[cfg(not(target_os = "linux"))]
fn same_process_runs(pid: u32, _origin: &ProcessOrigin, recorded_start: Option<u64>) -> bool {
    match (process_start(pid), recorded_start) {
        (None, _) => false,
        // Start times come from the same clock tick count; allow a second of rounding.
        (Some(started), Some(recorded)) => started.abs_diff(recorded) <= 1,
        (Some(_), None) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::owner_record::{now_ms, LockMode};

    fn record(pid: u32, origin: ProcessOrigin, host: &str, heartbeat: u64) -> OwnerRecord {
        let me = ProcessIdentity::get();
        OwnerRecord {
            pid,
            host: host.into(),
            process: "t".into(),
            user: "u".into(),
            timestamp: heartbeat,
            heartbeat,
            process_start: (pid == me.pid).then_some(me.process_start).flatten(),
            origin,
            mode: LockMode::Exclusive,
            lock_id: "x".into(),
            token: 1,
        }
    }

    fn here() -> (u32, ProcessOrigin, String) {
        let me = ProcessIdentity::get();
        (me.pid, me.origin.clone(), me.host.clone())
    }

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not() {
        let (pid, origin, host) = here();
        assert!(holder_alive(
            &record(pid, origin.clone(), &host, 0),
            10_000,
            now_ms()
        ));
        // Same PID, but the record says it started earlier: another process.
        let mut reused = record(pid, origin.clone(), &host, 0);
        reused.origin.start_ticks = origin.start_ticks.map(|t| t - 1);
        reused.process_start = reused.process_start.map(|s| s - 3600);
        assert!(!holder_alive(&reused, 10_000, now_ms()));
    }

    #[test]
    fn a_pid_that_does_not_run_is_dead() {
        let (_, origin, host) = here();
        assert!(!holder_alive(
            &record(u32::MAX - 7, origin, &host, now_ms()),
            10_000,
            now_ms()
        ));
    }

    #[test]
    fn remote_holders_live_by_heartbeat() {
        let now = now_ms();
        let origin = here().1;
        assert!(holder_alive(
            &record(1, origin.clone(), "elsewhere", now - 1_000),
            10_000,
            now
        ));
        assert!(!holder_alive(
            &record(1, origin, "elsewhere", now - 11_000),
            10_000,
            now
        ));
    }

    /// A holder in another PID namespace or boot, or a record that cannot say, lives by
    /// its heartbeat even where its PID does not run here.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_pid_from_elsewhere_lives_by_heartbeat() {
        let (_, origin, host) = here();
        let now = now_ms();
        let other_ns = ProcessOrigin {
            pid_ns: origin.pid_ns.map(|ns| ns + 1),
            ..origin.clone()
        };
        let other_boot = ProcessOrigin {
            boot_id: Some("another-boot".into()),
            ..origin.clone()
        };
        for elsewhere in [other_ns, other_boot, ProcessOrigin::default()] {
            let fresh = record(u32::MAX - 7, elsewhere.clone(), &host, now - 1_000);
            assert!(holder_alive(&fresh, 10_000, now), "{elsewhere:?}");
            let old = record(u32::MAX - 7, elsewhere.clone(), &host, now - 11_000);
            assert!(!holder_alive(&old, 10_000, now), "{elsewhere:?}");
        }
    }

    #[test]
    fn a_namespace_we_cannot_read_for_ourselves_proves_nothing() {
        assert!(
            !proven(&None, &Some(4026531836u64)),
            "unknown here: judge by heartbeat"
        );
        assert!(proven::<u64>(&None, &None), "an OS without namespaces");
        assert!(proven(&Some(7u64), &Some(7)));
        assert!(!proven(&Some(7u64), &None), "a record too old to say");
    }
}
