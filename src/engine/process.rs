//! This process and others as the OS reports them: who we are (host, user, start,
//! boot and PID namespace, for our records) and when another PID started, which is
//! how a recorded holder is told from a later process that reuses its PID.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use super::owner_record::{now_ms, Claimant, ProcessOrigin};

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

/// This process's boot, PID namespace and start ticks, where the OS has them.
#[cfg(target_os = "linux")]
pub fn origin_of_this_process() -> ProcessOrigin {
    use std::os::unix::fs::MetadataExt;
    ProcessOrigin {
        boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|id| id.trim().to_string())
            .filter(|id| !id.is_empty()),
        pid_ns: std::fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino()),
        start_ticks: start_ticks(std::process::id()),
    }
}

#[cfg(not(target_os = "linux"))]
pub fn origin_of_this_process() -> ProcessOrigin {
    ProcessOrigin::default()
}

/// When `pid` started, in clock ticks since boot (field 22 of `/proc/<pid>/stat`), or
/// `None` if no such process runs here. A zombie has exited: it holds nothing.
#[cfg(target_os = "linux")]
pub fn start_ticks(pid: u32) -> Option<u64> {
    ticks_from_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

#[cfg(target_os = "linux")]
fn ticks_from_stat(stat: &str) -> Option<u64> {
    // Field 2, the command name, is in parentheses and may itself hold spaces and
    // parentheses: the fields after it start after the last ')'.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?; // field 3
    if state == "Z" || state == "X" {
        return None;
    }
    fields.nth(18)?.parse().ok() // field 22
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
    /// `<pid>-<process start in ms, hex>-`: with a counter after it, a lock id unique
    /// on a host.
    lock_id_prefix: String,
}

impl ProcessIdentity {
    pub fn get() -> &'static ProcessIdentity {
        static IDENTITY: OnceLock<ProcessIdentity> = OnceLock::new();
        IDENTITY.get_or_init(|| ProcessIdentity {
            pid: std::process::id(),
            host: host_name(),
            user: user_name(),
            process_start: process_start(std::process::id()),
            origin: origin_of_this_process(),
            lock_id_prefix: format!("{}-{:x}-", std::process::id(), now_ms()),
        })
    }

    /// This process asking for locks under the owner label `process`.
    pub fn claimant(&self, process: impl Into<String>) -> Claimant {
        Claimant::new(
            self.pid,
            self.host.clone(),
            process.into(),
            self.user.clone(),
            self.process_start,
            self.origin.clone(),
        )
    }

    pub fn next_lock_id(&self) -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed) + 1;
        // Made on every grant: no formatting machinery for the one number that changes.
        let mut id = String::with_capacity(self.lock_id_prefix.len() + 20);
        id.push_str(&self.lock_id_prefix);
        id.push_str(itoa::Buffer::new().format(n));
        id
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

    #[cfg(target_os = "linux")]
    #[test]
    fn start_ticks_read_past_a_command_name_with_parentheses() {
        let rest = "0 0 0 0 -1 4194304 0 0 0 0 0 0 0 0 20 0 1 0 12345 0";
        assert_eq!(
            ticks_from_stat(&format!("42 (a) (b c)) S {rest}")),
            Some(12345)
        );
        assert_eq!(ticks_from_stat(&format!("42 (node) Z {rest}")), None);
        let ticks = start_ticks(std::process::id());
        assert!(ticks.is_some());
        assert_eq!(ticks, ProcessIdentity::get().origin.start_ticks);
        assert!(start_ticks(u32::MAX - 7).is_none());
    }
}
