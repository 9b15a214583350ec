//! Tests of the disk walk and the watch's decisions (no jail needed; the
//! jail-level behaviour is in `server/tests/sandbox/limits.rs`).

use std::path::Path;

use super::*;

fn write(path: &Path, bytes: usize) {
    std::fs::write(path, vec![7u8; bytes]).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn usage(root: &Path) -> Usage {
    disk_usage(&[root], MAX_ENTRIES).unwrap_or_else(|e| panic!("walking {}: {e}", root.display()))
}

/// Goal: the walk adds up what files allocate, nested directories included.
#[test]
fn files_in_nested_directories_are_counted() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let empty = usage(dir.path());
    std::fs::create_dir_all(dir.path().join("a/b/c")).unwrap_or_else(|e| panic!("{e}"));
    write(&dir.path().join("a/b/c/big"), 1 << 20);
    write(&dir.path().join("top"), 1 << 20);
    let full = usage(dir.path());
    assert!(full.bytes >= empty.bytes + (2 << 20), "{full:?} against {empty:?}");
    assert_eq!(full.entries, 5, "a, b, c, big and top: {full:?}");
}

/// Goal: a symlink to a big tree outside costs only itself: the walk never
/// follows one (a sandbox could point it anywhere).
#[test]
fn symlinks_are_not_followed() {
    let outside = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(&outside.path().join("big"), 4 << 20);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap_or_else(|e| panic!("{e}"));
    let found = usage(dir.path());
    assert!(found.bytes < 1 << 20, "{found:?}");
    assert_eq!(found.entries, 1);
    // A root that is itself a symlink is not walked either.
    let link_root = dir.path().join("link");
    assert!(disk_usage(&[&link_root], MAX_ENTRIES).is_err(), "a symlinked root must not be followed");
}

/// Goal: a file with several names is counted once, so hard links (pnpm's
/// store, say) do not count against the limit many times over.
#[test]
fn hard_links_count_once() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(&dir.path().join("one"), 2 << 20);
    let single = usage(dir.path());
    for i in 0..10 {
        std::fs::hard_link(dir.path().join("one"), dir.path().join(format!("link{i}")))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let linked = usage(dir.path());
    assert_eq!(linked.bytes, single.bytes, "{linked:?} against {single:?}");
    assert_eq!(linked.entries, 11);
}

/// Goal: the walk stops past its entry limit (a tree of a million empty files
/// costs no more to look at than the limit), and reports being over it.
#[test]
fn the_walk_stops_past_the_entry_limit() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for i in 0..50 {
        write(&dir.path().join(format!("f{i}")), 0);
    }
    let found = disk_usage(&[dir.path()], 10).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(found.entries, 11);
    let limit = DiskLimit { bytes: u64::MAX, entries: 10 };
    assert!(found.over(&limit).is_some());
    // Missing roots count nothing.
    let missing = dir.path().join("missing");
    assert_eq!(disk_usage(&[&missing], 10).unwrap_or_else(|e| panic!("{e}")), Usage::default());
}

/// Goal: the watch stops a jail that is over its limit and still growing,
/// never one that is over but shrinking or steady (so the agent can delete
/// files to get back under), and never on its first measurement.
#[test]
fn the_watch_stops_only_a_growing_jail_over_its_limit() {
    let limit = DiskLimit { bytes: 1000, entries: 10 };
    let at = |bytes, entries| Usage { bytes, entries };
    let watch = Watch::new(limit);
    assert_eq!(watch.observe(at(5000, 1)), None, "the first measurement is the baseline");
    assert_eq!(watch.observe(at(5000, 1)), None, "over but steady");
    assert_eq!(watch.observe(at(4000, 1)), None, "over but shrinking");
    assert_eq!(watch.observe(at(900, 1)), None);
    let reason = watch.observe(at(1001, 1));
    assert!(reason.as_deref().is_some_and(|r| r.contains("disk limit of 1000 bytes")), "{reason:?}");
    assert_eq!(watch.exceeded(), reason, "the reason is kept");
    assert_eq!(watch.observe(at(0, 0)), reason, "a stopped jail stays stopped");

    let by_entries = Watch::new(limit);
    assert_eq!(by_entries.observe(at(0, 10)), None);
    let reason = by_entries.observe(at(0, 11));
    assert!(reason.as_deref().is_some_and(|r| r.contains("more than 10 files")), "{reason:?}");
}

/// Goal: the watch's notification is not lost when nobody waits yet (a call
/// starting just after the jail went over still sees it).
#[tokio::test]
async fn going_over_wakes_a_later_waiter() {
    let watch = Watch::new(DiskLimit { bytes: 10, entries: 10 });
    watch.observe(Usage { bytes: 0, entries: 0 });
    assert!(watch.observe(Usage { bytes: 11, entries: 0 }).is_some());
    tokio::time::timeout(Duration::from_secs(10), watch.went_over())
        .await
        .unwrap_or_else(|_| panic!("the stored wake-up was lost"));
}

/// Goal: measuring a huge tree is spaced out in proportion to its cost.
#[test]
fn a_slow_walk_spaces_the_next_one_out() {
    assert_eq!(next_check_after(Duration::from_millis(1)), CHECK_INTERVAL);
    assert_eq!(next_check_after(Duration::from_secs(2)), Duration::from_secs(40));
}

/// Goal: a file a process keeps open after deleting it still counts (it has
/// no name for the walk to find, and a process can go on filling it); a
/// file on another device does not. Method: this test process is the one
/// holding the file (found through its own `/proc/<pid>/fd`).
#[test]
fn an_unlinked_open_file_is_counted() {
    use std::io::Write as _;
    use std::os::unix::fs::MetadataExt as _;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dev = std::fs::metadata(dir.path()).unwrap_or_else(|e| panic!("{e}")).dev();
    let me = [i32::try_from(std::process::id()).unwrap_or_else(|e| panic!("{e}"))];
    let before = unlinked_open_bytes(&me, dev);
    let path = dir.path().join("hidden");
    let mut file = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_file(&path).unwrap_or_else(|e| panic!("{e}"));
    file.write_all(&vec![7u8; 8 << 20]).unwrap_or_else(|e| panic!("{e}"));
    file.sync_all().unwrap_or_else(|e| panic!("{e}"));
    let after = unlinked_open_bytes(&me, dev);
    assert!(after >= before + (8 << 20), "{before} then {after}");
    assert_eq!(unlinked_open_bytes(&me, dev.wrapping_add(1)), 0, "another device's files are not counted");
    drop(file);
    assert_eq!(unlinked_open_bytes(&me, dev), before, "closed, it is gone");
}
