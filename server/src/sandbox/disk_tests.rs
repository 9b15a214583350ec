//! Tests of the disk walk and the watch's decisions (no jail needed; the
//! jail-level behaviour is in `server/tests/sandbox/limits.rs`).

use std::path::Path;

use super::*;

fn write(path: &Path, bytes: usize) {
    std::fs::write(path, vec![7u8; bytes]).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn usage(root: &Path) -> Usage {
    let usage = disk_usage(&[root], MAX_ENTRIES);
    assert_eq!(usage.cut, None, "walking {}: {usage:?}", root.display());
    usage
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
    let refused = disk_usage(&[&link_root], MAX_ENTRIES);
    assert!(matches!(refused.cut, Some(Cut::Failed(_))), "a symlinked root must not be followed: {refused:?}");
    assert!(refused.over(&DiskLimit::default()).is_some(), "a walk that failed counts as over: {refused:?}");
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
    let found = disk_usage(&[dir.path()], 10);
    assert_eq!((found.entries, found.cut), (11, Some(Cut::Entries)));
    let limit = DiskLimit { bytes: u64::MAX, entries: 10 };
    assert!(found.over(&limit).is_some());
    // Missing roots count nothing.
    let missing = dir.path().join("missing");
    let nothing = disk_usage(&[&missing], 10);
    assert_eq!((nothing.bytes, nothing.entries, nothing.cut), (0, 0, None));
}

/// Goal: the watch stops a jail that is over its limit and still growing,
/// never one that is over but shrinking or steady (so the agent can delete
/// files to get back under), and never on its first measurement.
#[test]
fn the_watch_stops_only_a_growing_jail_over_its_limit() {
    let limit = DiskLimit { bytes: 1000, entries: 10 };
    let at = |bytes, entries| Usage { bytes, entries, ..Usage::default() };
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
    watch.observe(Usage::default());
    assert!(watch.observe(Usage { bytes: 11, ..Usage::default() }).is_some());
    tokio::time::timeout(Duration::from_secs(10), watch.went_over())
        .await
        .unwrap_or_else(|_| panic!("the stored wake-up was lost"));
}

/// Goal: measuring a huge tree is spaced out in proportion to its cost, up
/// to a cap that keeps the watch from going blind.
#[test]
fn a_slow_walk_spaces_the_next_one_out() {
    assert_eq!(next_check_after(Duration::from_millis(1)), CHECK_INTERVAL);
    assert_eq!(next_check_after(Duration::from_millis(500)), Duration::from_secs(10));
    // A jail that makes measuring slow does not make the watch blind.
    assert_eq!(next_check_after(Duration::from_secs(2)), MAX_CHECK_PAUSE);
    assert_eq!(next_check_after(Duration::from_secs(3_600)), MAX_CHECK_PAUSE);
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
    let before = unlinked_open_bytes(&me, dev).bytes;
    let path = dir.path().join("hidden");
    let mut file = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_file(&path).unwrap_or_else(|e| panic!("{e}"));
    file.write_all(&vec![7u8; 8 << 20]).unwrap_or_else(|e| panic!("{e}"));
    file.sync_all().unwrap_or_else(|e| panic!("{e}"));
    let after = unlinked_open_bytes(&me, dev).bytes;
    assert!(after >= before + (8 << 20), "{before} then {after}");
    assert_eq!(unlinked_open_bytes(&me, dev.wrapping_add(1)).bytes, 0, "another device's files are not counted");
    drop(file);
    let closed = unlinked_open_bytes(&me, dev);
    assert_eq!((closed.bytes, closed.complete), (before, true), "closed, it is gone");
}

/// Writes 8 MiB chunks to `file` (each a new write, so the file system
/// grows) and measures after each, until the watch says stop; panics if 16
/// chunks go unseen. Other processes on this machine may free space between
/// two measurements, which can hide one chunk's growth, never sixteen.
fn grow_until_stopped(watch: &Watch, file: &Path, measure: impl Fn() -> Usage) -> String {
    use std::io::Write as _;
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .unwrap_or_else(|e| panic!("opening {}: {e}", file.display()));
    for _ in 0..16 {
        out.write_all(&vec![7u8; 8 << 20]).unwrap_or_else(|e| panic!("{e}"));
        out.sync_all().unwrap_or_else(|e| panic!("{e}"));
        if let Some(reason) = watch.observe(measure()) {
            return reason;
        }
    }
    panic!("128 MiB written to {} went unseen", file.display());
}

/// Goal (review, stop 20): a jail that starts over its entry limit (the files
/// of a jail stopped for holding too many are still there) is still stopped
/// when it grows. The walk stops counting at the entry limit, so what is
/// written to entries past the cut is judged by the whole file system.
#[test]
fn growth_past_the_entry_cut_is_seen() {
    let limit = DiskLimit { bytes: 1 << 20, entries: 2 };
    for i in 0..5 {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        for j in 0..5 {
            write(&dir.path().join(format!("f{j}")), 0);
        }
        let watch = Watch::new(limit);
        let baseline = disk_usage(&[dir.path()], limit.entries);
        assert_eq!(baseline.cut, Some(Cut::Entries), "{baseline:?}");
        assert_eq!(watch.observe(baseline), None, "the baseline");
        let reason =
            grow_until_stopped(&watch, &dir.path().join(format!("f{i}")), || disk_usage(&[dir.path()], limit.entries));
        assert!(reason.contains("more than 2 files and directories"), "{reason}");
    }
}

/// Goal (review, stop 20): a jail writing beneath more directories than the
/// walk descends is stopped: nesting that deep counts as over the limit, and
/// growth is judged by the whole file system.
#[test]
fn files_below_the_walk_depth_are_counted() {
    let limit = DiskLimit { bytes: 4 << 20, entries: MAX_ENTRIES };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut deep = dir.path().to_path_buf();
    for _ in 0..MAX_DEPTH + 1 {
        deep.push("d");
    }
    std::fs::create_dir_all(&deep).unwrap_or_else(|e| panic!("{e}"));
    let watch = Watch::new(limit);
    let baseline = disk_usage(&[dir.path()], limit.entries);
    assert_eq!(baseline.cut, Some(Cut::Depth), "{baseline:?}");
    assert_eq!(watch.observe(baseline), None, "the baseline");
    let reason = grow_until_stopped(&watch, &deep.join("big"), || disk_usage(&[dir.path()], limit.entries));
    assert!(reason.contains("nests directories 256 levels deep"), "{reason}");
}

/// Goal: a tree exactly as deep as the walk goes is walked whole (the cut
/// starts below it, not at it).
#[test]
fn a_tree_as_deep_as_the_walk_is_seen_whole() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut deep = dir.path().to_path_buf();
    for _ in 0..MAX_DEPTH - 1 {
        deep.push("d");
    }
    std::fs::create_dir_all(&deep).unwrap_or_else(|e| panic!("{e}"));
    write(&deep.join("f"), 1 << 20);
    let found = usage(dir.path());
    assert_eq!(found.entries, MAX_DEPTH as u64);
    assert!(found.bytes >= 1 << 20, "{found:?}");
    deep.push("d");
    std::fs::create_dir(&deep).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(disk_usage(&[dir.path()], MAX_ENTRIES).cut, Some(Cut::Depth));
}

/// Goal: once a walk is cut, the watch judges growth by the whole file
/// system: it stops a jail when the file system grows in bytes or inodes,
/// never when it shrinks or stays (so the agent can delete files), whatever
/// the walk counted; a walk that sees everything again is judged exactly.
#[test]
fn a_cut_walk_is_judged_by_the_file_system() {
    let limit = DiskLimit { bytes: 1000, entries: 10 };
    let at = |bytes, inodes, cut| Usage { bytes: 0, entries: 11, cut, device: DeviceUse { bytes, inodes } };
    let watch = Watch::new(limit);
    assert_eq!(watch.observe(at(5000, 50, Some(Cut::Entries))), None, "the baseline");
    assert_eq!(watch.observe(at(5000, 50, Some(Cut::Entries))), None, "steady");
    assert_eq!(watch.observe(at(4000, 40, Some(Cut::Entries))), None, "shrinking");
    assert_eq!(watch.observe(at(3000, 41, Some(Cut::Entries))).map(|r| r.contains("more than 10 files")), Some(true));

    let by_bytes = Watch::new(limit);
    by_bytes.observe(at(5000, 50, Some(Cut::Depth)));
    let reason = by_bytes.observe(at(5001, 10, Some(Cut::Depth)));
    assert!(reason.as_deref().is_some_and(|r| r.contains("levels deep")), "{reason:?}");

    // Back under the limit with everything seen: the file system is not
    // looked at (another session may be writing), nor the cut before.
    let cleaned = Watch::new(limit);
    cleaned.observe(at(5000, 50, Some(Cut::Entries)));
    let exact = Usage { bytes: 10, entries: 3, cut: None, device: DeviceUse { bytes: 9000, inodes: 90 } };
    assert_eq!(cleaned.observe(exact), None);
    assert_eq!(cleaned.observe(Usage { device: DeviceUse { bytes: 9999, inodes: 99 }, ..exact }), None);
    let failed = Usage { cut: Some(Cut::Failed(rustix::io::Errno::IO)), ..exact };
    let reason = Watch::new(limit).observe(failed);
    assert_eq!(reason, None, "a failed first walk is a baseline");
}

/// Goal: a directory the server may not read cuts the walk rather than
/// failing it (without `CAP_DAC_OVERRIDE`; a root server reads it whole).
#[test]
fn an_unreadable_directory_cuts_the_walk() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap_or_else(|e| panic!("{e}"));
    write(&locked.join("f"), 4096);
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap_or_else(|e| panic!("{e}"));
    let found = disk_usage(&[dir.path()], MAX_ENTRIES);
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap_or_else(|e| panic!("{e}"));
    if rustix::process::geteuid().is_root() {
        assert_eq!((found.entries, found.cut), (2, None), "{found:?}");
    } else {
        assert_eq!((found.entries, found.cut), (1, Some(Cut::Unreadable)), "{found:?}");
        assert!(found.over(&DiskLimit::default()).is_some_and(|r| r.contains("may not read")));
    }
}
