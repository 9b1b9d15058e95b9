//! Is a lock's recorded holder still alive? On this host: its PID runs and started
//! when the record says (a PID reused by another process is not the holder). On
//! another host we cannot see its processes, so its heartbeat must be fresh.

use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use super::owner_record::{OwnerRecord, ProcessIdentity};

/// When `pid` started, in seconds since the epoch, or `None` if no such process runs.
pub fn process_start(pid: u32) -> Option<u64> {
    let pid = Pid::from_u32(pid);
    let mut system = System::new();
    system.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[pid]),
        true,
        ProcessRefreshKind::nothing(),
    );
    system.process(pid).map(|p| p.start_time())
}

/// Milliseconds since the holder last showed life: its heartbeat, or the grant time
/// for a record written before its first beat.
pub fn heartbeat_age_ms(record: &OwnerRecord, now_ms: u64) -> u64 {
    now_ms.saturating_sub(record.heartbeat.max(record.timestamp))
}

pub fn holder_alive(record: &OwnerRecord, stale_ms: u64, now_ms: u64) -> bool {
    if record.host != ProcessIdentity::get().host {
        return heartbeat_age_ms(record, now_ms) < stale_ms;
    }
    match (process_start(record.pid), record.process_start) {
        (None, _) => false,
        // Start times come from the same clock tick count; allow a second of rounding.
        (Some(started), Some(recorded)) => started.abs_diff(recorded) <= 1,
        // A record without a start time (another tool's) can only be judged by PID.
        (Some(_), None) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::owner_record::{now_ms, LockMode};

    fn record(pid: u32, process_start: Option<u64>, host: &str, heartbeat: u64) -> OwnerRecord {
        OwnerRecord {
            pid,
            host: host.into(),
            process: "t".into(),
            user: "u".into(),
            timestamp: heartbeat,
            heartbeat,
            process_start,
            mode: LockMode::Exclusive,
            lock_id: "x".into(),
            token: 1,
        }
    }

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not() {
        let me = ProcessIdentity::get();
        let host = me.host.clone();
        assert!(holder_alive(
            &record(me.pid, me.process_start, &host, 0),
            10_000,
            now_ms()
        ));
        // Same PID, but the record says it started an hour earlier: another process.
        let reused = record(me.pid, me.process_start.map(|s| s - 3600), &host, 0);
        assert!(!holder_alive(&reused, 10_000, now_ms()));
    }

    #[test]
    fn a_pid_that_does_not_run_is_dead() {
        let host = ProcessIdentity::get().host.clone();
        assert!(!holder_alive(
            &record(u32::MAX - 7, None, &host, now_ms()),
            10_000,
            now_ms()
        ));
    }

    #[test]
    fn remote_holders_live_by_heartbeat() {
        let now = now_ms();
        assert!(holder_alive(
            &record(1, None, "elsewhere", now - 1_000),
            10_000,
            now
        ));
        assert!(!holder_alive(
            &record(1, None, "elsewhere", now - 11_000),
            10_000,
            now
        ));
    }
}
