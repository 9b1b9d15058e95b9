//! The JSON a holder writes into its lock file: who holds it, since when, and the
//! fencing token of the grant. Field names are a superset of astrotask's
//! `{pid, timestamp, host, process}` so tools that read those keep working.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    Exclusive,
    Shared,
}

impl LockMode {
    pub fn parse(text: &str) -> Option<LockMode> {
        match text {
            "exclusive" => Some(LockMode::Exclusive),
            "shared" => Some(LockMode::Shared),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Exclusive => "exclusive",
            LockMode::Shared => "shared",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerRecord {
    pub pid: u32,
    pub host: String,
    /// The owner label: astrotask shows it as "in use by <process>".
    pub process: String,
    pub user: String,
    /// Milliseconds since the epoch when the lock was granted.
    pub timestamp: u64,
    /// Milliseconds since the epoch of the holder's last heartbeat.
    #[serde(default)]
    pub heartbeat: u64,
    /// When the holder's process started (seconds since the epoch): tells a reused
    /// PID from the holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_start: Option<u64>,
    /// Where the holder runs: what decides whether its PID can be looked up here.
    #[serde(flatten)]
    pub origin: ProcessOrigin,
    pub mode: LockMode,
    pub lock_id: String,
    pub token: u64,
}

/// What tells whether a recorded PID means the same process here. A container that
/// shares the host name (docker `--network host`, `unshare`, CI sandboxes) has PIDs of
/// its own namespace, which name another process here or none: judged by PID, a live
/// holder there looked dead at once. Each field is absent where the OS has no such
/// thing, and in records written before it existed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessOrigin {
    /// `/proc/sys/kernel/random/boot_id`: another boot of the same host name is
    /// another machine (or this one restarted), whose PIDs mean nothing here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// The inode of `/proc/self/ns/pid`: the PID namespace the `pid` belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_ns: Option<u64>,
    /// Start in clock ticks since boot (field 22 of `/proc/<pid>/stat`). A start in
    /// seconds since the epoch is boot time plus ticks, and moves with every step of
    /// the wall clock: compared that way, a live holder looked like a reused PID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ticks: Option<u64>,
}

impl OwnerRecord {
    /// The holder as error messages name it: `mcp-server (PID 12345 on build-1)`.
    pub fn who(&self) -> String {
        format!("{} (PID {} on {})", self.process, self.pid, self.host)
    }
}

/// What stays in a lock file after release: no owner, only the last fencing token,
/// so the next exclusive grant can continue the sequence.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReleasedRecord {
    pub token: u64,
}

/// Reads the fencing token out of whatever a lock file holds. Garbage, an empty file
/// or a record from another tool count as token 0.
pub fn last_token(content: &[u8]) -> u64 {
    #[derive(Deserialize)]
    struct TokenOnly {
        token: Option<u64>,
    }
    serde_json::from_slice::<TokenOnly>(content)
        .ok()
        .and_then(|t| t.token)
        .unwrap_or(0)
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Host and user are looked up once per process; they cannot change under us.
pub struct ProcessIdentity {
    pub pid: u32,
    pub host: String,
    pub user: String,
    /// This process's start as the OS reports it (seconds since the epoch).
    pub process_start: Option<u64>,
    /// Boot, PID namespace and start ticks of this process, for its records.
    pub origin: ProcessOrigin,
    /// Process start in ms: with the pid and a counter it makes lock ids unique on a host.
    started_ms: u64,
}

impl ProcessIdentity {
    pub fn get() -> &'static ProcessIdentity {
        static IDENTITY: OnceLock<ProcessIdentity> = OnceLock::new();
        IDENTITY.get_or_init(|| ProcessIdentity {
            pid: std::process::id(),
            host: host_name(),
            user: user_name(),
            process_start: super::liveness::process_start(std::process::id()),
            origin: super::liveness::origin_of_this_process(),
            started_ms: now_ms(),
        })
    }

    pub fn next_lock_id(&self) -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{}-{:x}-{}", self.pid, self.started_ms, n)
    }
}

#[cfg(unix)]
fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(not(unix))]
fn host_name() -> String {
    std::env::var("COMPUTERNAME").unwrap_or_else(|_| "localhost".into())
}

#[cfg(unix)]
fn user_name() -> String {
    let uid = nix::unistd::getuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string())
}

#[cfg(not(unix))]
fn user_name() -> String {
    std::env::var("USERNAME").unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_serialises_with_astrotask_fields() {
        let id = ProcessIdentity::get();
        let record = OwnerRecord {
            pid: id.pid,
            host: id.host.clone(),
            process: "mcp-server".into(),
            user: id.user.clone(),
            timestamp: 1,
            heartbeat: 1,
            process_start: id.process_start,
            origin: id.origin.clone(),
            mode: LockMode::Shared,
            lock_id: id.next_lock_id(),
            token: 7,
        };
        let json: serde_json::Value = serde_json::to_value(&record).unwrap();
        for key in [
            "pid",
            "host",
            "process",
            "user",
            "timestamp",
            "heartbeat",
            "processStart",
            "mode",
            "lockId",
            "token",
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        assert_eq!(json["mode"], "shared");
        #[cfg(target_os = "linux")]
        for key in ["bootId", "pidNs", "startTicks"] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        assert_eq!(last_token(&serde_json::to_vec(&record).unwrap()), 7);
    }

    #[test]
    fn records_without_an_origin_still_parse() {
        let old = br#"{"pid":1,"host":"h","process":"p","user":"u","timestamp":1,"mode":"exclusive","lockId":"x","token":2}"#;
        let record: OwnerRecord = serde_json::from_slice(old).unwrap();
        assert_eq!(record.origin, ProcessOrigin::default());
        assert_eq!(record.token, 2);
    }

    #[test]
    fn unreadable_content_counts_as_token_zero() {
        assert_eq!(last_token(b""), 0);
        assert_eq!(last_token(b"{not json"), 0);
        assert_eq!(last_token(br#"{"pid":1}"#), 0);
        assert_eq!(last_token(br#"{"token":41}"#), 41);
    }

    #[test]
    fn lock_ids_are_unique() {
        let id = ProcessIdentity::get();
        assert_ne!(id.next_lock_id(), id.next_lock_id());
    }
}
