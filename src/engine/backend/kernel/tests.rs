//! The kernel backend's own tests: grants, readers, the writer gate, sweeps.

use std::fs;
use std::path::Path;

use crate::engine::backend::traits::{Contend, HeldLock};
use crate::engine::error::code;
use crate::engine::lock_path::sibling;
use crate::engine::owner_record::{Claimant, LockMode, OwnerRecord};

use super::grant::*;
use super::observe::*;

fn claimant(label: &str) -> Claimant {
    crate::engine::process::ProcessIdentity::get().claimant(label)
}

fn contender(dir: &Path, mode: LockMode) -> Contender {
    Contender::new(dir.join("t.lock"), mode)
}

/// One attempt by a new contender named `name`.
fn attempt(dir: &Path, mode: LockMode, name: &str, will_wait: bool) -> Option<KernelLock> {
    contender(dir, mode)
        .try_acquire(&claimant(name), name.into(), will_wait)
        .unwrap()
}

/// Another attempt by a contender that waits.
fn retry(contender: &mut Contender, name: &str) -> Option<KernelLock> {
    contender
        .try_acquire(&claimant(name), name.into(), true)
        .unwrap()
}

#[test]
fn exclusive_excludes_and_tokens_increase_across_releases() {
    let dir = tempfile::tempdir().unwrap();
    let first = contender(dir.path(), LockMode::Exclusive)
        .try_acquire(&claimant("a"), "1".into(), false)
        .unwrap()
        .unwrap();
    assert_eq!(first.record().token, 1);
    // A second open file description is a second holder, as another process would be.
    assert!(contender(dir.path(), LockMode::Exclusive)
        .try_acquire(&claimant("b"), "2".into(), false)
        .unwrap()
        .is_none());
    assert!(contender(dir.path(), LockMode::Shared)
        .try_acquire(&claimant("b"), "3".into(), false)
        .unwrap()
        .is_none());
    first.release().unwrap();
    let second = contender(dir.path(), LockMode::Exclusive)
        .try_acquire(&claimant("b"), "4".into(), false)
        .unwrap()
        .unwrap();
    assert_eq!(second.record().token, 2);
    let on_disk: OwnerRecord =
        serde_json::from_slice(&fs::read(dir.path().join("t.lock")).unwrap()).unwrap();
    assert_eq!(on_disk.process, "b");
}

#[test]
fn readers_share_and_record_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let a = attempt(dir.path(), LockMode::Shared, "ra", false).unwrap();
    let b = attempt(dir.path(), LockMode::Shared, "rb", false).unwrap();
    let mut names: Vec<_> = read_holders(&dir.path().join("t.lock"))
        .into_iter()
        .map(|r| r.process)
        .collect();
    names.sort();
    assert_eq!(names, ["ra", "rb"]);
    drop(a);
    drop(b);
    assert!(read_holders(&dir.path().join("t.lock")).is_empty());
}

#[test]
fn a_waiting_writer_holds_back_new_readers() {
    let dir = tempfile::tempdir().unwrap();
    let reader = attempt(dir.path(), LockMode::Shared, "r", false).unwrap();
    let mut writer = contender(dir.path(), LockMode::Exclusive);
    assert!(retry(&mut writer, "w").is_none());
    assert!(attempt(dir.path(), LockMode::Shared, "r2", false).is_none());
    drop(reader);
    let granted = retry(&mut writer, "w").unwrap();
    drop(granted);
    assert!(attempt(dir.path(), LockMode::Shared, "r3", false).is_some());
}

#[test]
fn a_deleted_lock_file_is_not_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let mut waiter = contender(dir.path(), LockMode::Exclusive);
    let holder = attempt(dir.path(), LockMode::Exclusive, "h", false).unwrap();
    assert!(retry(&mut waiter, "w").is_none());
    // Someone removes the held file and a newcomer creates and locks a fresh one.
    fs::remove_file(dir.path().join("t.lock")).unwrap();
    let newcomer = attempt(dir.path(), LockMode::Exclusive, "n", false).unwrap();
    drop(holder);
    // The waiter's old inode is free now, but it must not count as holding.
    assert!(retry(&mut waiter, "w").is_none());
    drop(newcomer);
    assert!(retry(&mut waiter, "w").is_some());
}

#[test]
fn releasing_a_lock_whose_file_was_removed_is_compromised() {
    let dir = tempfile::tempdir().unwrap();
    let held = attempt(dir.path(), LockMode::Exclusive, "a", false).unwrap();
    fs::remove_file(dir.path().join("t.lock")).unwrap();
    // A newcomer made a new file at the path and "holds the lock" beside us.
    let newcomer = attempt(dir.path(), LockMode::Exclusive, "b", false).unwrap();
    let err = held.release().unwrap_err();
    assert_eq!(err.code, code::COMPROMISED);
    // The newcomer's record is left alone.
    let on_disk: OwnerRecord =
        serde_json::from_slice(&fs::read(dir.path().join("t.lock")).unwrap()).unwrap();
    assert_eq!(on_disk.lock_id, "b");
    newcomer.release().unwrap();
}

#[test]
fn a_lock_file_removed_while_idle_is_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    // Released: the file stays open in this process's idle set.
    drop(attempt(dir.path(), LockMode::Exclusive, "a", false).unwrap());
    fs::remove_file(dir.path().join("t.lock")).unwrap();
    let holder = attempt(dir.path(), LockMode::Exclusive, "b", false)
        .expect("granted on a fresh file, not the removed one");
    assert!(dir.path().join("t.lock").exists());
    assert!(attempt(dir.path(), LockMode::Exclusive, "c", false).is_none());
    drop(holder);
}

/// Whether an event reports `holder`'s release to a waiter watching `path`. No
/// safety tick here: only the event can end the wait.
#[cfg(target_os = "linux")]
fn release_wakes_waiters(path: &Path, holder: KernelLock) -> bool {
    use crate::engine::release_events::ReleaseEvents;
    use crate::engine::runtime::runtime;
    let subscription = ReleaseEvents::global().subscribe(path);
    let mut wake = Box::pin(subscription.wake.notified());
    wake.as_mut().enable();
    holder.release().unwrap();
    runtime()
        .block_on(async { tokio::time::timeout(std::time::Duration::from_secs(10), wake).await })
        .is_ok()
}

/// The release keeps its file open, so no close event tells waiters; the read it
/// makes after its unlock must.
#[cfg(target_os = "linux")]
#[test]
fn a_release_that_keeps_its_file_open_still_wakes_waiters() {
    let dir = tempfile::tempdir().unwrap();
    let holder = attempt(dir.path(), LockMode::Exclusive, "h", false).unwrap();
    assert!(release_wakes_waiters(&dir.path().join("t.lock"), holder));
}

/// Readers record themselves beside the lock file, and reading an empty file makes
/// no event: the first reader gives the lock file content.
#[cfg(target_os = "linux")]
#[test]
fn a_reader_releasing_a_lock_file_only_readers_used_wakes_waiters() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.lock");
    let reader = attempt(dir.path(), LockMode::Shared, "r", false).unwrap();
    assert!(!fs::read(&path).unwrap().is_empty());
    assert!(release_wakes_waiters(&path, reader));
}

#[test]
fn a_sweep_removes_dead_readers_records_but_not_one_still_being_made() {
    use super::readers::files::{clear_dead_readers, READERS_DIR_SUFFIX};
    let dir = tempfile::tempdir().unwrap();
    let lockfile = dir.path().join("t.lock");
    let readers = sibling(&lockfile, READERS_DIR_SUFFIX);
    fs::create_dir(&readers).unwrap();
    // Created, not yet locked or written: a live reader a moment from its lock.
    fs::write(readers.join("new.json"), "").unwrap();
    fs::write(readers.join("dead.json"), "{\"pid\":1}").unwrap();
    let removed = clear_dead_readers(&lockfile, false).removed;
    assert_eq!(removed, vec![readers.join("dead.json")]);
    assert!(readers.join("new.json").exists());
}

/// A lock is one entry on disk, whatever mode it was used in (Linux: readers and the
/// writer gate live in the lock file).
#[cfg(target_os = "linux")]
#[test]
fn exclusive_and_shared_use_leave_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let holder = attempt(dir.path(), LockMode::Exclusive, "h", false).unwrap();
    let mut writer = contender(dir.path(), LockMode::Exclusive);
    assert!(retry(&mut writer, "w").is_none()); // queued: the gate is held
    assert!(
        attempt(dir.path(), LockMode::Shared, "r0", false).is_none(),
        "readers wait behind a writer"
    );
    drop(writer);
    drop(holder);
    let a = attempt(dir.path(), LockMode::Shared, "ra", false).unwrap();
    let b = attempt(dir.path(), LockMode::Shared, "rb", false).unwrap();
    let mut names: Vec<_> = read_holders(&dir.path().join("t.lock"))
        .into_iter()
        .map(|r| r.process)
        .collect();
    names.sort();
    assert_eq!(names, ["ra", "rb"]);
    a.release().unwrap();
    b.release().unwrap();
    let entries: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["t.lock"]);
    // What is left is still a record JSON can read: the token, then blank slots.
    let left: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join("t.lock")).unwrap()).unwrap();
    assert!(left.get("token").is_some());
}

/// A reader that died holding the lock left its record in its slot: status sees it as
/// dead (nobody holds the slot), a sweep blanks it, and a live reader's is kept.
#[cfg(target_os = "linux")]
#[test]
fn a_dead_readers_slot_is_dead_and_swept_a_live_ones_kept() {
    use super::readers::{clear_dead_readers, reader_owners};
    let dir = tempfile::tempdir().unwrap();
    let lockfile = dir.path().join("t.lock");
    let live = attempt(dir.path(), LockMode::Shared, "live", false).unwrap();
    let dead = attempt(dir.path(), LockMode::Shared, "dead", false).unwrap();
    // A crash: the descriptor closes (its locks go) without the release's clean-up.
    let mut dead = std::mem::ManuallyDrop::new(dead);
    drop(dead.file.take());
    let names = |held| -> Vec<String> {
        reader_owners(&lockfile, held)
            .into_iter()
            .map(|r| r.process)
            .collect()
    };
    assert_eq!(names(true), ["live"]);
    assert_eq!(names(false), ["dead"]);
    assert!(
        clear_dead_readers(&lockfile, true).cleared,
        "a dry run says it would clear"
    );
    assert_eq!(names(false), ["dead"], "and changes nothing");
    assert!(clear_dead_readers(&lockfile, false).cleared);
    assert!(names(false).is_empty());
    assert_eq!(names(true), ["live"]);
    live.release().unwrap();
}

/// What the files layout left (a dead reader's record, the readers' directory, an
/// unheld writer-waiting file) is swept away; a held writer-waiting file is kept.
#[cfg(target_os = "linux")]
#[test]
fn leftovers_of_the_files_layout_are_swept() {
    use super::readers::files::{READERS_DIR_SUFFIX, WRITER_WAITING_SUFFIX};
    use super::readers::sweep_legacy;
    let dir = tempfile::tempdir().unwrap();
    let lockfile = dir.path().join("t.lock");
    fs::write(&lockfile, "{\"token\":4}").unwrap();
    let readers = sibling(&lockfile, READERS_DIR_SUFFIX);
    fs::create_dir(&readers).unwrap();
    fs::write(readers.join("dead.json"), "{\"pid\":1}").unwrap();
    let gate = sibling(&lockfile, WRITER_WAITING_SUFFIX);
    fs::write(&gate, "w").unwrap();
    let held = fs::File::open(&gate).unwrap();
    held.lock().unwrap();
    let removed = sweep_legacy(&lockfile, false);
    assert_eq!(removed, vec![readers.join("dead.json"), readers.clone()]);
    assert!(
        gate.exists(),
        "a writer of the old layout still waits on it"
    );
    drop(held);
    assert_eq!(sweep_legacy(&lockfile, false), vec![gate.clone()]);
    let entries: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["t.lock"]);
}

/// A reader held back by a waiting writer must not wake itself with its own
/// checks (it once did, spinning a CPU), and must be woken when the writer gives up.
#[cfg(target_os = "linux")]
#[test]
fn readers_behind_a_waiting_writer_wake_only_when_it_leaves() {
    use crate::engine::release_events::ReleaseEvents;
    use futures_util::FutureExt;
    let dir = tempfile::tempdir().unwrap();
    let holder = attempt(dir.path(), LockMode::Exclusive, "h", false).unwrap();
    let mut writer = contender(dir.path(), LockMode::Exclusive);
    assert!(retry(&mut writer, "w").is_none());
    let events = ReleaseEvents::polled().expect("an inotify instance");
    let mut reader = contender(dir.path(), LockMode::Shared);
    let subscriptions: Vec<_> = reader
        .wake_paths()
        .iter()
        .map(|p| events.subscribe(p))
        .collect();
    // Waiters register before they look, as the wait loop does.
    let listen = || crate::engine::release_events::listen(&subscriptions);
    let woken = |wakes: Vec<_>| {
        events.drain();
        wakes
            .into_iter()
            .any(|w: std::pin::Pin<Box<tokio::sync::futures::Notified>>| w.now_or_never().is_some())
    };
    let wakes = listen();
    for _ in 0..3 {
        assert!(retry(&mut reader, "r").is_none());
    }
    // A second writer failing to announce itself is no event either.
    let mut second = contender(dir.path(), LockMode::Exclusive);
    assert!(retry(&mut second, "w2").is_none());
    drop(second);
    assert!(!woken(wakes), "a failed attempt woke the waiters");
    let wakes = listen();
    drop(writer); // gives up
    assert!(woken(wakes), "the writer left without waking anyone");
    drop(holder);
}

#[cfg(unix)]
#[test]
fn symlinked_lock_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(dir.path().join("victim"), dir.path().join("t.lock")).unwrap();
    let err = contender(dir.path(), LockMode::Exclusive)
        .try_acquire(&claimant("a"), "1".into(), false)
        .unwrap_err();
    assert_eq!(err.code, "ELOOP");
    assert!(!dir.path().join("victim").exists());
}

/// A descriptor lent to a child (the CLI) may live on there: its lock file is closed
/// on release, never kept for the next acquire, which would share the child's lock.
#[cfg(target_os = "linux")]
#[test]
fn a_lent_descriptor_is_closed_on_release_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.lock");
    let kept = attempt(dir.path(), LockMode::Exclusive, "a", false).unwrap();
    kept.release().unwrap();
    assert!(
        super::lock_file::LockFile::take_idle(&path).is_some(),
        "an ordinary release keeps its file"
    );
    let lent = attempt(dir.path(), LockMode::Exclusive, "b", false).unwrap();
    assert!(HeldLock::raw_fd(&lent).is_some());
    lent.release().unwrap();
    assert!(
        super::lock_file::LockFile::take_idle(&path).is_none(),
        "a lent file was kept for reuse"
    );
}

/// A waiter whose lock file was removed from under its holder moves to the file at the
/// path, which is the lock now, instead of waiting on the orphan until its timeout.
#[test]
fn a_waiter_on_a_file_removed_under_its_holder_moves_to_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let holder = attempt(dir.path(), LockMode::Exclusive, "h", false).unwrap();
    let mut waiter = contender(dir.path(), LockMode::Exclusive);
    assert!(retry(&mut waiter, "w").is_none());
    fs::remove_file(dir.path().join("t.lock")).unwrap();
    let got = retry(&mut waiter, "w").expect("the lock at the path is free");
    assert_eq!(got.record().process, "w");
    drop(holder);
}
