//! The JSON a holder writes into its lock file: who holds it, since when, and the
//! fencing token of the grant. Field names are a superset of astrotask's
//! `{pid, timestamp, host, process}` so tools that read those keep working.

use std::sync::Arc;
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

impl ReleasedRecord {
    /// `{"token":N}` padded with spaces to `len` bytes: a release overwrites the
    /// record in place and must cover all of it.
    pub fn padded(token: u64, len: usize) -> Vec<u8> {
        let mut json = Vec::with_capacity(len.max(32));
        json.extend_from_slice(RELEASED_HEAD);
        json.extend_from_slice(itoa::Buffer::new().format(token).as_bytes());
        json.push(b'}');
        if json.len() < len {
            json.resize(len, b' ');
        }
        json
    }
}

/// How serde writes a `ReleasedRecord` up to its token.
const RELEASED_HEAD: &[u8] = br#"{"token":"#;

/// The fencing token a lock file's content carries: 0 for an empty file, `None` for
/// content that is not a lockwright record (another tool's file, or garbage).
pub fn recorded_token(content: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct TokenOnly {
        token: u64,
    }
    if let Some(token) = released_token(content) {
        return Some(token);
    }
    if content.iter().all(u8::is_ascii_whitespace) {
        return Some(0);
    }
    serde_json::from_slice::<TokenOnly>(content)
        .ok()
        .map(|t| t.token)
}

/// The token of a released lock file as a release writes it (`{"token":N}`, padded),
/// read without a parser: what every uncontended grant finds. `None` for anything
/// else, which the parser then reads.
fn released_token(content: &[u8]) -> Option<u64> {
    let rest = content.strip_prefix(RELEASED_HEAD)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let (number, rest) = rest.split_at(digits);
    let padding = rest.strip_prefix(b"}")?;
    // JSON numbers have no leading zeros; the parser decides about those.
    let canonical = number.len() == 1 || number.first() != Some(&b'0');
    if !canonical || !padding.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    std::str::from_utf8(number).ok()?.parse().ok()
}

/// Reads the fencing token out of whatever a lock file holds. Garbage, an empty file
/// or a record from another tool count as token 0.
pub fn last_token(content: &[u8]) -> u64 {
    recorded_token(content).unwrap_or(0)
}

/// Who is asking: the parts of the owner record that do not change per grant.
/// Fixed once made (the fields are private), so the JSON of those parts, made once,
/// serves every record written.
#[derive(Debug, Clone)]
pub struct Claimant {
    pid: u32,
    host: String,
    process: String,
    user: String,
    process_start: Option<u64>,
    origin: ProcessOrigin,
    json: Arc<ClaimantJson>,
}

/// A claimant's part of its records as serde writes it, around the fields that
/// change per grant: `head` ends where the timestamp goes, `tail` where the mode goes.
#[derive(Debug)]
struct ClaimantJson {
    head: String,
    tail: String,
}

impl ClaimantJson {
    fn of(claimant: &Claimant) -> ClaimantJson {
        let text = |s: &String| serde_json::to_string(s).expect("a string serialises");
        let head = format!(
            r#"{{"pid":{},"host":{},"process":{},"user":{},"timestamp":"#,
            claimant.pid,
            text(&claimant.host),
            text(&claimant.process),
            text(&claimant.user),
        );
        let mut tail = String::new();
        if let Some(start) = claimant.process_start {
            tail.push_str(&format!(r#","processStart":{start}"#));
        }
        // Flattened into the record: its object without the braces.
        let origin = serde_json::to_string(&claimant.origin).expect("an origin serialises");
        let fields = &origin[1..origin.len() - 1];
        if !fields.is_empty() {
            tail.push(',');
            tail.push_str(fields);
        }
        tail.push_str(r#","mode":""#);
        ClaimantJson { head, tail }
    }
}

impl Claimant {
    pub fn new(
        pid: u32,
        host: String,
        process: String,
        user: String,
        process_start: Option<u64>,
        origin: ProcessOrigin,
    ) -> Claimant {
        let mut claimant = Claimant {
            pid,
            host,
            process,
            user,
            process_start,
            origin,
            json: Arc::new(ClaimantJson {
                head: String::new(),
                tail: String::new(),
            }),
        };
        claimant.json = Arc::new(ClaimantJson::of(&claimant));
        claimant
    }

    /// The process label its records carry.
    pub fn process(&self) -> &str {
        &self.process
    }

    /// The same claimant under another PID (a process that is gone, say).
    #[cfg(test)]
    pub fn with_pid(&self, pid: u32) -> Claimant {
        Claimant::new(
            pid,
            self.host.clone(),
            self.process.clone(),
            self.user.clone(),
            self.process_start,
            self.origin.clone(),
        )
    }

    /// The JSON of `record`, one of this claimant's: the bytes `serde_json::to_vec`
    /// makes of it, with only the per-grant fields formatted, since a grant writes
    /// one on every acquire.
    pub fn record_json(&self, record: &OwnerRecord) -> Vec<u8> {
        let parts = &self.json;
        let mut numbers = itoa::Buffer::new();
        let mut json = Vec::with_capacity(parts.head.len() + parts.tail.len() + 128);
        json.extend_from_slice(parts.head.as_bytes());
        json.extend_from_slice(numbers.format(record.timestamp).as_bytes());
        json.extend_from_slice(br#","heartbeat":"#);
        json.extend_from_slice(numbers.format(record.heartbeat).as_bytes());
        json.extend_from_slice(parts.tail.as_bytes());
        json.extend_from_slice(record.mode.as_str().as_bytes());
        json.extend_from_slice(br#"","lockId":"#);
        serde_json::to_writer(&mut json, &record.lock_id).expect("a string serialises");
        json.extend_from_slice(br#","token":"#);
        json.extend_from_slice(numbers.format(record.token).as_bytes());
        json.push(b'}');
        json
    }

    /// The owner record of a grant made now.
    pub fn record(&self, mode: LockMode, lock_id: String, token: u64) -> OwnerRecord {
        let now = now_ms();
        OwnerRecord {
            pid: self.pid,
            host: self.host.clone(),
            process: self.process.clone(),
            user: self.user.clone(),
            timestamp: now,
            heartbeat: now,
            process_start: self.process_start,
            origin: self.origin.clone(),
            mode,
            lock_id,
            token,
        }
    }
}

/// What a lock file nobody holds contains.
#[derive(Debug)]
pub enum Leftover {
    /// `{"token":N}`: a clean release.
    Released,
    /// A holder's record: it died without releasing.
    DeadHolder(OwnerRecord),
    /// Nothing (or only padding): a lock file made but never written.
    Empty,
    /// Content that is none of ours: another tool's `*.lock` file (`Cargo.lock`,
    /// `yarn.lock`) or a record torn by a crash. Never swept: it may be someone's data.
    Foreign,
}

pub fn classify(content: &[u8]) -> Leftover {
    if content.iter().all(u8::is_ascii_whitespace) {
        return Leftover::Empty;
    }
    if let Ok(record) = serde_json::from_slice::<OwnerRecord>(content) {
        return Leftover::DeadHolder(record);
    }
    if serde_json::from_slice::<ReleasedRecord>(content).is_ok() {
        return Leftover::Released;
    }
    Leftover::Foreign
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::process::ProcessIdentity;

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

    /// What a grant writes is what serde writes, for every shape a claimant takes:
    /// readers (status, cleanup, astrotask) parse it as an `OwnerRecord`.
    #[test]
    fn a_claimants_record_json_is_serdes() {
        let id = ProcessIdentity::get();
        let bare = Claimant::new(
            7,
            "h\"ost".into(),
            "p\u{1}é\\".into(),
            "u".into(),
            None,
            ProcessOrigin::default(),
        );
        let partial = Claimant::new(
            1,
            "h".into(),
            "p".into(),
            "u".into(),
            Some(5),
            ProcessOrigin {
                pid_ns: Some(9),
                ..ProcessOrigin::default()
            },
        );
        for claimant in [id.claimant("mcp-server"), bare, partial] {
            for (mode, token) in [(LockMode::Exclusive, 0), (LockMode::Shared, u64::MAX)] {
                let record = claimant.record(mode, id.next_lock_id(), token);
                let json = claimant.record_json(&record);
                assert_eq!(
                    String::from_utf8(json.clone()).unwrap(),
                    serde_json::to_string(&record).unwrap()
                );
                assert_eq!(
                    serde_json::from_slice::<OwnerRecord>(&json).unwrap(),
                    record
                );
            }
        }
    }

    #[test]
    fn a_released_record_reads_back_its_token_with_or_without_the_parser() {
        for token in [0, 7, 41, u64::MAX] {
            let padded = ReleasedRecord::padded(token, 64);
            assert_eq!(padded.len(), 64);
            let bare = ReleasedRecord::padded(token, 0);
            assert_eq!(bare, serde_json::to_vec(&ReleasedRecord { token }).unwrap());
            assert_eq!(released_token(&padded), Some(token));
            assert_eq!(recorded_token(&padded), Some(token));
        }
        // Not the released shape: the parser decides, as before.
        for (content, token) in [
            (&br#"{"token":007}"#[..], None),
            (br#"{"token":18446744073709551616}"#, None),
            (br#"{"token":3} x"#, None),
            (br#"{"token":3,"pid":1}"#, Some(3)),
            (br#" {"token":3}"#, Some(3)),
            (br#"{"token":}"#, None),
        ] {
            assert_eq!(released_token(content), None, "{content:?}");
            assert_eq!(recorded_token(content), token, "{content:?}");
        }
    }

    #[test]
    fn lock_ids_are_unique() {
        let id = ProcessIdentity::get();
        assert_ne!(id.next_lock_id(), id.next_lock_id());
    }
}
