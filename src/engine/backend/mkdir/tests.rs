//! The mkdir backend's own tests.

use std::fs::{self, File};
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::engine::backend::traits::{Contend, HeldLock};
use crate::engine::error::Result;
use crate::engine::lock_path::sibling;
use crate::engine::owner_record::{now_ms, Claimant};

use super::grant::*;
use super::sweep::*;
use super::*;

fn claimant() -> Claimant {
    crate::engine::process::ProcessIdentity::get().claimant("t")
}

fn set_mtime(dir: &Path, at: SystemTime) {
    touch(&open_lock_dir(dir).unwrap(), at).unwrap();
}

#[test]
fn mkdir_excludes_and_release_removes_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let lock_dir = dir.path().join("f.lock");
    let held = MkdirContender::new(lock_dir.clone(), 10_000)
        .try_acquire(&claimant(), "a".into(), false)
        .unwrap()
        .unwrap();
    assert!(lock_dir.is_dir());
    assert!(MkdirContender::new(lock_dir.clone(), 10_000)
        .try_acquire(&claimant(), "b".into(), false)
        .unwrap()
        .is_none());
    held.release().unwrap();
    assert!(!lock_dir.exists());
    assert!(!sibling(&lock_dir, OWNER_SUFFIX).exists());
}

#[test]
fn an_old_mtime_is_stale_and_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let lock_dir = dir.path().join("f.lock");
    fs::create_dir(&lock_dir).unwrap(); // a proper-lockfile holder...
    set_mtime(&lock_dir, SystemTime::now() - Duration::from_secs(60)); // ...that stopped updating
    let held = MkdirContender::new(lock_dir.clone(), 10_000)
        .try_acquire(&claimant(), "a".into(), false)
        .unwrap();
    assert!(held.is_some());
}

#[test]
fn an_old_directory_with_content_is_not_a_lock_and_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_lock = dir.path().join("build.lock");
    fs::create_dir(&not_a_lock).unwrap();
    fs::write(not_a_lock.join("data"), "keep me").unwrap();
    set_mtime(&not_a_lock, SystemTime::now() - Duration::from_secs(60));
    assert!(!remove_if_stale(&not_a_lock, 10_000, false, false).unwrap());
    assert_eq!(fs::read(not_a_lock.join("data")).unwrap(), b"keep me");
}

#[test]
fn a_record_left_for_another_directory_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let lock_dir = dir.path().join("f.lock");
    let dead = claimant().with_pid(u32::MAX - 3); // no such process
    let held = MkdirContender::new(lock_dir.clone(), 10_000)
        .try_acquire(&dead, "old".into(), false)
        .unwrap()
        .unwrap();
    // Its directory goes (a peer's rmdir) and a live proper-lockfile holder makes a
    // new one; the old record still sits beside it.
    let stale_record = fs::read(sibling(&lock_dir, OWNER_SUFFIX)).unwrap();
    drop(held);
    fs::create_dir(&lock_dir).unwrap();
    fs::write(sibling(&lock_dir, OWNER_SUFFIX), stale_record).unwrap();
    assert!(MkdirContender::new(lock_dir.clone(), 10_000)
        .try_acquire(&claimant(), "b".into(), false)
        .unwrap()
        .is_none());
}

#[test]
fn a_dead_holder_on_this_host_is_stale_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let lock_dir = dir.path().join("f.lock");
    let dead = claimant().with_pid(u32::MAX - 3);
    let held = MkdirContender::new(lock_dir.clone(), 10_000)
        .try_acquire(&dead, "old".into(), false)
        .unwrap()
        .unwrap();
    std::mem::forget(held); // the holder "crashes": nothing released
    assert!(MkdirContender::new(lock_dir.clone(), 10_000)
        .try_acquire(&claimant(), "b".into(), false)
        .unwrap()
        .is_some());
}

fn try_lock(lock_dir: &Path) -> Result<Option<Box<dyn HeldLock>>> {
    MkdirContender::new(lock_dir.to_path_buf(), 10_000).try_acquire(&claimant(), "a".into(), false)
}

#[test]
fn a_kernel_lock_file_at_the_path_says_the_protocols_differ() {
    let dir = tempfile::tempdir().unwrap();
    let lock_dir = dir.path().join("f.lock");
    for kernel_file in ["", r#"{"token":4}"#] {
        fs::write(&lock_dir, kernel_file).unwrap();
        let err = try_lock(&lock_dir).unwrap_err();
        assert_eq!(err.code, "ENOTDIR");
        assert!(err.message.contains("kernel strategy"), "{}", err.message);
        assert!(err.message.contains("same protocol"), "{}", err.message);
        assert_eq!(fs::read_to_string(&lock_dir).unwrap(), kernel_file);
    }
}

#[cfg(unix)]
#[test]
fn anything_else_at_the_path_is_not_a_lock_and_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let lock_dir = dir.path().join("f.lock");
    fs::write(&lock_dir, "# Cargo.lock\nversion = 4\n").unwrap();
    let err = try_lock(&lock_dir).unwrap_err();
    assert_eq!(err.code, "EEXIST");
    assert!(
        err.message.contains("is not a lock file"),
        "{}",
        err.message
    );
    assert_eq!(
        fs::read_to_string(&lock_dir).unwrap(),
        "# Cargo.lock\nversion = 4\n"
    );
    // A symlink to a directory is not followed; a FIFO is not waited on.
    fs::remove_file(&lock_dir).unwrap();
    fs::create_dir(dir.path().join("elsewhere")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("elsewhere"), &lock_dir).unwrap();
    assert_eq!(try_lock(&lock_dir).unwrap_err().code, "EEXIST");
    fs::remove_file(&lock_dir).unwrap();
    nix::unistd::mkfifo(&lock_dir, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
    let err = within_seconds(move || try_lock(&lock_dir).map(|_| ())).unwrap_err();
    assert_eq!(err.code, "EEXIST");
}

/// Runs `work` on a thread; a hang (an open blocked on a FIFO) fails the test.
#[cfg(unix)]
fn within_seconds<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(work()));
    result
        .recv_timeout(Duration::from_secs(10))
        .expect("blocked: a FIFO beside the lock was opened for reading or writing")
}

#[cfg(unix)]
#[test]
fn symlinks_and_fifos_planted_beside_the_lock_are_never_followed_or_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    let lock_dir = dir.path().join("f.lock");
    let victim = dir.path().join("victim");
    fs::write(&victim, "precious").unwrap();
    for suffix in [OWNER_SUFFIX, TAKEOVER_SUFFIX] {
        std::os::unix::fs::symlink(&victim, sibling(&lock_dir, suffix)).unwrap();
    }
    let mut held = try_lock(&lock_dir).unwrap().unwrap();
    held.beat(now_ms()).unwrap();
    held.release().unwrap();
    // A stale lock: its takeover meets the symlinked guard and says so.
    fs::create_dir(&lock_dir).unwrap();
    set_mtime(&lock_dir, SystemTime::now() - Duration::from_secs(60));
    assert_eq!(try_lock(&lock_dir).unwrap_err().code, "ELOOP");
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    fs::remove_dir(&lock_dir).unwrap();

    for suffix in [OWNER_SUFFIX, TAKEOVER_SUFFIX] {
        fs::remove_file(sibling(&lock_dir, suffix)).unwrap();
        nix::unistd::mkfifo(
            &sibling(&lock_dir, suffix),
            nix::sys::stat::Mode::from_bits_truncate(0o666),
        )
        .unwrap();
    }
    let path = lock_dir.clone();
    within_seconds(move || {
        let mut held = try_lock(&path).unwrap().unwrap();
        held.beat(now_ms()).unwrap();
        assert!(current_owner(&path).is_none());
        held.release().unwrap();
    });
    fs::create_dir(&lock_dir).unwrap();
    set_mtime(&lock_dir, SystemTime::now() - Duration::from_secs(60));
    let err = within_seconds(move || try_lock(&lock_dir).map(|_| ())).unwrap_err();
    assert_eq!(err.code, "EEXIST");
}

#[cfg(unix)]
#[test]
fn a_huge_owner_record_is_not_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let lock_dir = dir.path().join("f.lock");
    fs::create_dir(&lock_dir).unwrap();
    let record = File::create(sibling(&lock_dir, OWNER_SUFFIX)).unwrap();
    record.set_len(1 << 40).unwrap(); // sparse: 1 TiB
    let meta = fs::symlink_metadata(&lock_dir).unwrap();
    assert!(!is_stale(&lock_dir, &meta, 10_000));
    assert!(current_owner(&lock_dir).is_none());
}

#[test]
fn grants_get_increasing_tokens_kept_across_releases() {
    let dir = tempfile::tempdir().unwrap();
    let lock_dir = dir.path().join("f.lock");
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let held = try_lock(&lock_dir).unwrap().unwrap();
        tokens.push(held.record().token);
        held.release().unwrap();
    }
    assert_eq!(tokens, [1, 2, 3]);
    // A dead holder's takeover continues the sequence too.
    let held = try_lock(&lock_dir).unwrap().unwrap();
    std::mem::forget(held);
    set_mtime(&lock_dir, SystemTime::now() - Duration::from_secs(60));
    assert_eq!(try_lock(&lock_dir).unwrap().unwrap().record().token, 5);
    // Someone else's file at the token's name: refused, untouched, no lock left.
    fs::write(sibling(&lock_dir, TOKEN_SUFFIX), "not a token").unwrap();
    let other = dir.path().join("g.lock");
    fs::write(sibling(&other, TOKEN_SUFFIX), "not a token").unwrap();
    assert_eq!(try_lock(&other).unwrap_err().code, "EEXIST");
    assert!(!other.exists());
    assert_eq!(
        fs::read_to_string(sibling(&other, TOKEN_SUFFIX)).unwrap(),
        "not a token"
    );
}

#[test]
fn a_touched_or_removed_directory_compromises_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let lock_dir = dir.path().join("f.lock");
    let mut held = MkdirContender::new(lock_dir.clone(), 10_000)
        .try_acquire(&claimant(), "a".into(), false)
        .unwrap()
        .unwrap();
    set_mtime(&lock_dir, SystemTime::now() - Duration::from_secs(5));
    let err = held.beat(now_ms()).unwrap_err();
    assert_eq!(err.code, "ECOMPROMISED");
    assert_eq!(
        err.message,
        "Unable to update lock within the stale threshold"
    );
}

#[test]
fn a_release_never_removes_the_directory_of_a_takeover_that_came_after_its_check() {
    let dir = tempfile::tempdir().unwrap();
    let lock_dir = dir.path().join("f.lock");
    let held = try_lock(&lock_dir).unwrap().unwrap();
    // Between the release's last check and its rmdir, the lock looks stale to a peer
    // (a long stall) and the peer tries to take it over.
    let taken = std::rc::Rc::new(std::cell::RefCell::new(None));
    let (path, slot) = (lock_dir.clone(), taken.clone());
    before_rmdir::set(move || {
        set_mtime(&path, SystemTime::now() - Duration::from_secs(60));
        *slot.borrow_mut() = try_lock(&path).unwrap();
    });
    held.release().unwrap();
    // The release held the takeover guard from its check to its rmdir, so the peer
    // found it busy and did not take over; had it, our rmdir would have removed the
    // directory it holds, and two holders would have run at once.
    assert!(taken.borrow().is_none(), "the peer took over mid-release");
    assert!(!lock_dir.exists());
}
