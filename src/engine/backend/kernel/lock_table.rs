//! The kernel's own table of held locks, read without taking any: `/proc/locks` on
//! Linux. Observers (`status`, `list`, `cleanup`) used to find out by briefly taking
//! a lock, and a `tryAcquire` elsewhere that landed in that moment failed with
//! "locked by another process" though nobody held it. Reading the table cannot.
//!
//! Since Linux 4.9 the table leaves out locks whose holder lives in a PID namespace
//! this process cannot see (another container sharing the volume): an empty answer
//! is not proof, and callers fall back to the records (see `observe.rs`).

use std::fs::File;

/// One `flock` held on a file, as the table lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableEntry {
    pub exclusive: bool,
    /// The holder's PID as this process's namespace sees it (0 or less: unknown).
    pub pid: i32,
}

/// The `flock` locks held on `file`, or `None` where the table cannot be read (not
/// Linux, no `/proc`).
#[cfg(target_os = "linux")]
pub fn flocks_on(file: &File) -> Option<Vec<TableEntry>> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().ok()?;
    let (major, minor) =
        superblock_device(file).unwrap_or((libc::major(meta.dev()), libc::minor(meta.dev())));
    let table = std::fs::read_to_string("/proc/locks").ok()?;
    Some(
        table
            .lines()
            .filter_map(|line| parse_line(line, major, minor, meta.ino()))
            .collect(),
    )
}

/// The device the table names a file's locks by: its filesystem's, from the mount
/// it is on. `stat` may report another (btrfs gives each subvolume a device of its
/// own), and then no line would ever match.
#[cfg(target_os = "linux")]
fn superblock_device(file: &File) -> Option<(u32, u32)> {
    let stat = super::lock_file::statx_fd(file, libc::STATX_MNT_ID).ok()?;
    if stat.stx_mask & libc::STATX_MNT_ID == 0 {
        return None;
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mount_device(&mounts, stat.stx_mnt_id)
}

/// `36 35 98:0 /mnt1 /mnt/parent rw ...`: the mount's device, `major:minor`.
#[cfg(target_os = "linux")]
fn mount_device(mountinfo: &str, mount_id: u64) -> Option<(u32, u32)> {
    mountinfo.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        if fields.next()?.parse::<u64>().ok()? != mount_id {
            return None;
        }
        let (major, minor) = fields.nth(1)?.split_once(':')?;
        Some((major.parse().ok()?, minor.parse().ok()?))
    })
}

#[cfg(not(target_os = "linux"))]
pub fn flocks_on(_file: &File) -> Option<Vec<TableEntry>> {
    None
}

/// The user id and command name of a process this process can see, for naming a
/// holder that wrote no record (a user with only read access to the lock file, or
/// `flock(1)`).
#[cfg(target_os = "linux")]
pub fn process_owner(pid: i32) -> Option<(u32, String)> {
    use std::os::unix::fs::MetadataExt;
    if pid <= 0 {
        return None;
    }
    let uid = std::fs::metadata(format!("/proc/{pid}")).ok()?.uid();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    Some((uid, comm.trim_end().to_string()))
}

#[cfg(not(target_os = "linux"))]
pub fn process_owner(_pid: i32) -> Option<(u32, String)> {
    None
}

/// `1: FLOCK  ADVISORY  WRITE 12345 fd:01:1234567 0 EOF`, for the file with this
/// device and inode. Waiting requests (`1: -> FLOCK ...`) hold nothing and are
/// skipped, as are POSIX and OFD locks, which do not conflict with `flock`.
#[cfg(target_os = "linux")]
fn parse_line(line: &str, major: u32, minor: u32, ino: u64) -> Option<TableEntry> {
    let mut fields = line.split_whitespace().skip(1);
    if fields.next()? != "FLOCK" {
        return None;
    }
    let _advisory = fields.next()?;
    let exclusive = match fields.next()? {
        "WRITE" => true,
        "READ" => false,
        _ => return None,
    };
    let pid = fields.next()?.parse().ok()?;
    let mut id = fields.next()?.split(':');
    let maj = u32::from_str_radix(id.next()?, 16).ok()?;
    let min = u32::from_str_radix(id.next()?, 16).ok()?;
    let inode: u64 = id.next()?.parse().ok()?;
    (maj == major && min == minor && inode == ino).then_some(TableEntry { exclusive, pid })
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn held_flocks_are_listed_and_waiters_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.lock");
        let held = File::create(&path).unwrap();
        let observer = File::open(&path).unwrap();
        assert_eq!(flocks_on(&observer).unwrap(), []);
        held.lock().unwrap();
        let listed = flocks_on(&observer).unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].exclusive);
        assert_eq!(listed[0].pid, std::process::id() as i32);
        held.unlock().unwrap();
        held.lock_shared().unwrap();
        assert!(!flocks_on(&observer).unwrap()[0].exclusive);
        assert_eq!(
            parse_line("2: -> FLOCK  ADVISORY  WRITE 7 fd:01:5 0 EOF", 0xfd, 1, 5),
            None
        );
        assert_eq!(
            parse_line("2: FLOCK  ADVISORY  READ 7 fd:01:5 0 EOF", 0xfd, 1, 5),
            Some(TableEntry {
                exclusive: false,
                pid: 7
            })
        );
        assert_eq!(
            parse_line("3: POSIX  ADVISORY  WRITE 7 fd:01:5 0 EOF", 0xfd, 1, 5),
            None
        );
    }
}
