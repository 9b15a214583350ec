use std::os::unix::fs::{PermissionsExt, symlink};
use std::sync::Mutex;

use logbook_core::event::{FileChange, WorkspaceDelta};

use super::*;
use crate::workspace::tree::materialize;

/// Collects stored blobs in memory.
#[derive(Default)]
struct Sink {
    stored: Mutex<Vec<Vec<u8>>>,
}

impl Sink {
    fn put(&self, bytes: &[u8]) -> Result<[u8; 32], String> {
        self.stored.lock().unwrap().push(bytes.to_vec());
        Ok(*blake3::hash(bytes).as_bytes())
    }

    fn n_stored(&self) -> usize {
        self.stored.lock().unwrap().len()
    }
}

fn scan(index: &mut Index, ws: &Path, out: &Path, sink: &Sink) -> ScanReport {
    let roots = [ScanRoot { area: Area::Workspace, host: ws }, ScanRoot { area: Area::Outputs, host: out }];
    // A start far in the future: nothing counts as racy, so the test sees
    // exactly what the stat fields vouch for.
    let started = SystemTime::now() + Duration::from_secs(24 * 3600);
    index.scan(&roots, started, &|bytes: &[u8]| sink.put(bytes)).unwrap()
}

fn summary(report: &ScanReport) -> Vec<(String, &'static str)> {
    report
        .changes
        .iter()
        .map(|c| {
            let kind = match c.change {
                FileChange::Written { .. } => "written",
                FileChange::Removed => "removed",
                FileChange::Symlink { .. } => "symlink",
            };
            (c.path.clone(), kind)
        })
        .collect()
}

fn owned(items: &[(&str, &'static str)]) -> Vec<(String, &'static str)> {
    items.iter().map(|(p, k)| ((*p).to_owned(), *k)).collect()
}

#[test]
fn reports_writes_links_removals_and_mode_changes_once() {
    let dir = tempfile::tempdir().unwrap();
    let (ws, out) = (dir.path().join("ws"), dir.path().join("out"));
    std::fs::create_dir_all(ws.join("src")).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(ws.join("a.txt"), "a").unwrap();
    std::fs::write(ws.join("src/lib.rs"), "fn main() {}").unwrap();
    std::fs::write(out.join("report.md"), "# r").unwrap();
    symlink("a.txt", ws.join("link")).unwrap();
    let sink = Sink::default();
    let mut index = Index::default();
    let first = scan(&mut index, &ws, &out, &sink);
    assert_eq!(
        summary(&first),
        owned(&[
            ("/mnt/session/outputs/report.md", "written"),
            ("/workspace/a.txt", "written"),
            ("/workspace/link", "symlink"),
            ("/workspace/src/lib.rs", "written")
        ])
    );
    assert_eq!(sink.n_stored(), 3);

    // Nothing changed: nothing reported, nothing hashed.
    let again = scan(&mut index, &ws, &out, &sink);
    assert_eq!((again.changes.len(), again.n_hashed), (0, 0));

    std::fs::write(ws.join("a.txt"), "b").unwrap();
    std::fs::set_permissions(ws.join("src/lib.rs"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(out.join("report.md")).unwrap();
    std::fs::remove_file(ws.join("link")).unwrap();
    symlink("src", ws.join("link")).unwrap();
    let third = scan(&mut index, &ws, &out, &sink);
    assert_eq!(
        summary(&third),
        owned(&[
            ("/mnt/session/outputs/report.md", "removed"),
            ("/workspace/a.txt", "written"),
            ("/workspace/link", "symlink"),
            ("/workspace/src/lib.rs", "written")
        ])
    );
}

#[test]
fn a_rewrite_with_the_same_content_is_not_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let (ws, out) = (dir.path().join("ws"), dir.path().join("out"));
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(ws.join("same"), "x").unwrap();
    let sink = Sink::default();
    let mut index = Index::default();
    scan(&mut index, &ws, &out, &sink);
    std::fs::remove_file(ws.join("same")).unwrap();
    std::fs::write(ws.join("same"), "x").unwrap();
    let report = scan(&mut index, &ws, &out, &sink);
    assert_eq!((report.changes.len(), report.n_hashed), (0, 1), "hashed again (new inode), not reported");
}

#[test]
fn fifos_devices_and_symlinked_directories_are_never_followed_or_read() {
    let dir = tempfile::tempdir().unwrap();
    let (ws, out) = (dir.path().join("ws"), dir.path().join("out"));
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), "secret").unwrap();
    symlink(&outside, ws.join("escape")).unwrap();
    symlink("/etc/shadow", ws.join("shadow")).unwrap();
    rustix::fs::mknodat(rustix::fs::CWD, ws.join("fifo").as_path(), FileType::Fifo, Mode::from_raw_mode(0o644), 0)
        .unwrap();
    let sink = Sink::default();
    let mut index = Index::default();
    let report = scan(&mut index, &ws, &out, &sink);
    assert_eq!(summary(&report), owned(&[("/workspace/escape", "symlink"), ("/workspace/shadow", "symlink")]));
    assert_eq!(sink.n_stored(), 0, "no file content was read");
}

#[test]
fn a_racy_file_is_hashed_again_and_an_index_from_the_log_reports_only_differences() {
    let dir = tempfile::tempdir().unwrap();
    let (ws, out) = (dir.path().join("ws"), dir.path().join("out"));
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(ws.join("kept"), "same").unwrap();
    std::fs::write(ws.join("edited"), "old").unwrap();
    let sink = Sink::default();
    let mut index = Index::default();
    let roots = [ScanRoot { area: Area::Workspace, host: &ws }, ScanRoot { area: Area::Outputs, host: &out }];
    let first = index.scan(&roots, SystemTime::now(), &|bytes: &[u8]| sink.put(bytes)).unwrap();
    let again = index.scan(&roots, SystemTime::now(), &|bytes: &[u8]| sink.put(bytes)).unwrap();
    assert_eq!((again.changes.len(), again.n_hashed), (0, 2), "just-written files are not vouched for");

    // A restart: the index comes from the log's deltas, and the files are
    // hashed once against it.
    let log = WorkspaceDelta { tool_use_id: None, changes: first.changes };
    let mut rebuilt = Index::from_tree(&materialize([&log]));
    std::fs::write(ws.join("edited"), "new").unwrap();
    let report = scan(&mut rebuilt, &ws, &out, &sink);
    assert_eq!(summary(&report), owned(&[("/workspace/edited", "written")]));
}

#[test]
fn the_index_tree_is_what_the_deltas_materialize() {
    let dir = tempfile::tempdir().unwrap();
    let (ws, out) = (dir.path().join("ws"), dir.path().join("out"));
    std::fs::create_dir_all(ws.join("d/e")).unwrap();
    std::fs::write(ws.join("d/e/f"), "f").unwrap();
    let sink = Sink::default();
    let mut index = Index::default();
    let mut deltas = vec![WorkspaceDelta { tool_use_id: None, changes: scan(&mut index, &ws, &out, &sink).changes }];
    std::fs::remove_dir_all(ws.join("d")).unwrap();
    std::fs::write(ws.join("d"), "now a file").unwrap();
    deltas.push(WorkspaceDelta { tool_use_id: None, changes: scan(&mut index, &ws, &out, &sink).changes });
    assert_eq!(materialize(&deltas), index.tree());
    assert_eq!(index.len(), 1);
}

#[test]
fn a_file_over_one_chunk_is_stored_as_chunks_and_written_back_whole() {
    use crate::resources::content::CHUNK_BYTES;
    use logbook_store::{Blobs, MemStore};
    let dir = tempfile::tempdir().unwrap();
    let (ws, out) = (dir.path().join("ws"), dir.path().join("out"));
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let big: Vec<u8> = (0..CHUNK_BYTES + CHUNK_BYTES / 3).map(|n| (n % 253) as u8).collect();
    std::fs::write(ws.join("big.bin"), &big).unwrap();
    let mut index = Index::default();
    let sink = Sink::default();
    let report = scan(&mut index, &ws, &out, &sink);
    // Two chunks and the manifest naming them, as `resources::content` stores files.
    assert_eq!(sink.n_stored(), 3);
    let [change] = report.changes.as_slice() else { panic!("{:?}", report.changes) };
    let FileChange::Written { blob, size, .. } = change.change else { panic!("{change:?}") };
    assert_eq!(size, big.len() as u64);
    let stored = sink.stored.lock().unwrap().clone();
    assert_eq!(blob, *blake3::hash(&stored[2]).as_bytes(), "the manifest names the file");

    let store = MemStore::in_memory().unwrap();
    for bytes in &stored {
        store.put_blob(bytes).unwrap();
    }
    let tree = materialize(&[WorkspaceDelta { tool_use_id: None, changes: report.changes.clone() }]);
    let (ws2, out2) = (dir.path().join("ws2"), dir.path().join("out2"));
    crate::workspace::write_tree(&tree, &store, &ws2, &out2, None).unwrap();
    assert!(std::fs::read(ws2.join("big.bin")).unwrap() == big);
}

/// Goal: how many directories one directory holds (the sandbox decides, up
/// to its million-entry disk limit) does not decide how many descriptors a
/// scan holds at once: the server's descriptors are shared by every session,
/// the store and the API's connections. Method: a directory with more
/// subdirectories, each holding a file, than this process may open files
/// (its soft `RLIMIT_NOFILE`, lowered to at most 4096 so the test stays
/// quick; nextest runs each test in its own process); the scan must succeed
/// and record every file.
#[test]
fn a_directory_with_more_subdirectories_than_open_files_allowed_is_scanned() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let soft = limit.current.unwrap_or(u64::MAX).min(4096);
    setrlimit(Resource::Nofile, Rlimit { current: Some(soft), maximum: limit.maximum }).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ws, out) = (dir.path().join("ws"), dir.path().join("out"));
    let n_dirs = usize::try_from(soft).unwrap() + 16;
    for n in 0..n_dirs {
        let sub = ws.join("wide").join(n.to_string());
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("f"), "x").unwrap();
    }
    let sink = Sink::default();
    let mut index = Index::default();
    let roots = [ScanRoot { area: Area::Workspace, host: &ws }, ScanRoot { area: Area::Outputs, host: &out }];
    let started = SystemTime::now() + Duration::from_secs(24 * 3600);
    let report = index.scan(&roots, started, &|bytes: &[u8]| sink.put(bytes));
    let report = match report {
        Ok(report) => report,
        Err(err) => panic!("a scan of {n_dirs} directories with a {soft}-descriptor limit failed: {err}"),
    };
    assert_eq!(report.changes.len(), n_dirs);
}

/// Goal: a sandbox swapping a file for a socket (or anything else it may not
/// be read as) while a scan runs cannot make the scan fail: a failed scan
/// records no delta, so a background job doing this in a loop would keep
/// every change out of the log. Method: a thread keeps renaming a fresh unix
/// socket and a fresh file over one path while the workspace is scanned
/// again and again; every scan must succeed.
#[test]
fn a_file_swapped_for_a_socket_during_a_scan_does_not_fail_it() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    let dir = tempfile::tempdir().unwrap();
    let (ws, out) = (dir.path().join("ws"), dir.path().join("out"));
    std::fs::create_dir_all(&ws).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (ws, stop) = (ws.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let socket = std::os::unix::net::UnixListener::bind(ws.join(".s")).unwrap();
                std::fs::rename(ws.join(".s"), ws.join("f")).unwrap();
                drop(socket);
                std::fs::write(ws.join(".f"), n.to_string()).unwrap();
                std::fs::rename(ws.join(".f"), ws.join("f")).unwrap();
                n += 1;
            }
        })
    };
    let sink = Sink::default();
    let mut index = Index::default();
    let roots = [ScanRoot { area: Area::Workspace, host: &ws }, ScanRoot { area: Area::Outputs, host: &out }];
    let mut failed = None;
    for _ in 0..2000 {
        if let Err(err) = index.scan(&roots, SystemTime::now(), &|bytes: &[u8]| sink.put(bytes)) {
            failed = Some(err.to_string());
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    swapper.join().unwrap();
    assert_eq!(failed, None, "a scan failed because the sandbox swapped a file");
}

/// Bytes this process has read through `read` and the like so far
/// (`/proc/self/io`'s `rchar`).
fn bytes_read_by_this_process() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap();
    io.lines().find_map(|line| line.strip_prefix("rchar: ")).unwrap().trim().parse().unwrap()
}

/// Goal: the work of one scan is bounded by what the sandbox can hold, not
/// by the sizes its files claim: a sparse file costs the sandbox nothing
/// against its disk limit (its allocated blocks are counted), yet the scan
/// reads and hashes every byte of it, again after every `touch`, before the
/// call's result is posted (the outputs capture bounds its reads for this
/// very reason). Method: 128 sparse files of the largest recorded size (8 GiB
/// claimed, nothing allocated); the scan may read at most 4 GiB.
#[test]
fn a_scan_of_sparse_files_reads_a_bounded_amount() {
    let dir = tempfile::tempdir().unwrap();
    let (ws, out) = (dir.path().join("ws"), dir.path().join("out"));
    std::fs::create_dir_all(&ws).unwrap();
    for n in 0..128 {
        let file = std::fs::File::create(ws.join(format!("sparse{n}"))).unwrap();
        file.set_len(MAX_BLOB_BYTES as u64).unwrap();
    }
    let mut index = Index::default();
    let roots = [ScanRoot { area: Area::Workspace, host: &ws }, ScanRoot { area: Area::Outputs, host: &out }];
    let started = SystemTime::now() + Duration::from_secs(24 * 3600);
    let before = bytes_read_by_this_process();
    // A store that keeps nothing (the test only counts what is read).
    index.scan(&roots, started, &|bytes: &[u8]| Ok(*blake3::hash(bytes).as_bytes())).unwrap();
    let read = bytes_read_by_this_process() - before;
    assert!(read <= 4 << 30, "one scan of files holding no data read {read} bytes");
}

/// Goal: what one call's delta records (and the scan and the session's index
/// hold in memory) stays within a small multiple of what the sandbox holds
/// against its disk limit: neither the log nor the server's memory is under
/// that limit. Every change carries its full path, and a path can be 4 KiB
/// while an empty file costs the sandbox only its directory entry, so within
/// its limits (a million entries, 10 GB) a sandbox could make one scan hold
/// and append about 4 GB, and again on every call that recreates the files.
/// Method: 20,000 empty files with short names below a 3,900-byte directory
/// path; the paths recorded may come to at most 16 times what the disk
/// limit's walk counts for the tree.
#[test]
fn the_delta_of_empty_files_with_long_paths_is_bounded_by_their_disk_use() {
    let dir = tempfile::tempdir().unwrap();
    let (ws, out) = (dir.path().join("ws"), dir.path().join("out"));
    let mut deep = ws.clone();
    for n in 0..15 {
        deep.push(format!("{n:0>255}"));
    }
    std::fs::create_dir_all(&deep).unwrap();
    for n in 0..20_000 {
        std::fs::File::create(deep.join(format!("f{n}"))).unwrap();
    }
    let held = crate::sandbox::disk::disk_usage(&[ws.as_path(), out.as_path()], u64::MAX).bytes;
    let mut index = Index::default();
    let roots = [ScanRoot { area: Area::Workspace, host: &ws }, ScanRoot { area: Area::Outputs, host: &out }];
    let started = SystemTime::now() + Duration::from_secs(24 * 3600);
    let report = index.scan(&roots, started, &|bytes: &[u8]| Ok(*blake3::hash(bytes).as_bytes())).unwrap();
    let recorded: u64 = report.changes.iter().map(|change| change.path.len() as u64).sum();
    assert!(recorded <= 16 * held, "the delta names {recorded} bytes of paths for a tree taking {held} bytes on disk");
}

/// A scan with the given read and path budgets (far in the future: nothing
/// is racy).
fn scan_within(index: &mut Index, ws: &Path, out: &Path, read_bytes: u64, path_bytes: usize) -> ScanReport {
    let roots = [ScanRoot { area: Area::Workspace, host: ws }, ScanRoot { area: Area::Outputs, host: out }];
    let started = SystemTime::now() + Duration::from_secs(24 * 3600);
    let sink = |bytes: &[u8]| Ok(*blake3::hash(bytes).as_bytes());
    index.scan_within(&roots, started, &sink, Budget { read_bytes, path_bytes }).unwrap()
}

fn written_paths(report: &ScanReport) -> Vec<String> {
    summary(report).into_iter().filter(|(_, kind)| *kind == "written").map(|(path, _)| path).collect()
}

/// Goal: files past a scan's read budget are recorded by the next scans,
/// the longest waiting first, even while the sandbox rewrites the files
/// that were read (so it cannot keep a change out of the log by keeping the
/// budget busy), and the index stays what the deltas fold to. Method: six
/// 100-byte files and a 200-byte budget; the first file is rewritten before
/// every scan.
#[test]
fn files_past_the_read_budget_are_recorded_by_later_scans_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let (ws, out) = (dir.path().join("ws"), dir.path().join("out"));
    std::fs::create_dir_all(&ws).unwrap();
    for n in 0..6 {
        std::fs::write(ws.join(format!("f{n}")), [b'a' + n; 100]).unwrap();
    }
    let mut index = Index::default();
    let mut deltas = Vec::new();
    let mut written = Vec::new();
    for round in 0..4u8 {
        std::fs::write(ws.join("f0"), [b'0' + round; 100]).unwrap();
        let report = scan_within(&mut index, &ws, &out, 200, MAX_SCAN_PATH_BYTES);
        assert!(report.n_hashed <= 2, "{report:?}");
        written.push(written_paths(&report));
        deltas.push(WorkspaceDelta { tool_use_id: None, changes: report.changes });
        assert_eq!(materialize(&deltas), index.tree());
    }
    let names = |names: &[&str]| names.iter().map(|name| format!("/workspace/{name}")).collect::<Vec<_>>();
    assert_eq!(written, [names(&["f0", "f1"]), names(&["f2", "f3"]), names(&["f4", "f5"]), names(&["f0"])]);
    let tree = index.tree();
    let Some(Node::File { blob, .. }) = tree.get("/workspace/f0") else { panic!("{tree:?}") };
    assert_eq!(*blob, *blake3::hash(&[b'3'; 100]).as_bytes(), "the last content of f0 is recorded");
}

/// Goal: changes past a scan's path budget are recorded by the next scans,
/// and a change left waiting never leaves the index disagreeing with the
/// log (a recorded write replaces what was below or above its path).
/// Method: 40 new files with 30-byte paths and a 300-byte budget (ten per
/// scan); then a directory whose long-named file's removal does not fit is
/// replaced by a file that does.
#[test]
fn changes_past_the_path_budget_are_recorded_by_later_scans() {
    let dir = tempfile::tempdir().unwrap();
    let (ws, out) = (dir.path().join("ws"), dir.path().join("out"));
    std::fs::create_dir_all(&ws).unwrap();
    for n in 0..40 {
        std::fs::write(ws.join(format!("file-with-a-name-{n:0>2}")), "x").unwrap();
    }
    let mut index = Index::default();
    let mut deltas = Vec::new();
    for _ in 0..4 {
        let report = scan_within(&mut index, &ws, &out, MAX_SCAN_READ_BYTES, 300);
        let named: usize = report.changes.iter().map(|change| change.path.len()).sum();
        assert!(named <= 300 && report.changes.len() == 10, "{report:?}");
        deltas.push(WorkspaceDelta { tool_use_id: None, changes: report.changes });
        assert_eq!(materialize(&deltas), index.tree());
    }
    assert_eq!(index.len(), 40);
    let last = scan_within(&mut index, &ws, &out, MAX_SCAN_READ_BYTES, 300);
    assert_eq!((last.changes.len(), last.n_left), (0, 0));

    for n in 0..40 {
        std::fs::remove_file(ws.join(format!("file-with-a-name-{n:0>2}"))).unwrap();
    }
    std::fs::create_dir_all(ws.join("d")).unwrap();
    std::fs::write(ws.join("d").join("x".repeat(200)), "x").unwrap();
    let mut index = Index::default();
    let mut deltas =
        vec![WorkspaceDelta { tool_use_id: None, changes: scan(&mut index, &ws, &out, &Sink::default()).changes }];
    std::fs::remove_dir_all(ws.join("d")).unwrap();
    std::fs::write(ws.join("d"), "now a file").unwrap();
    // "/workspace/d" fits, the removal below it does not: the write replaces it.
    let report = scan_within(&mut index, &ws, &out, MAX_SCAN_READ_BYTES, 100);
    assert_eq!(summary(&report), owned(&[("/workspace/d", "written")]));
    deltas.push(WorkspaceDelta { tool_use_id: None, changes: report.changes });
    assert_eq!(materialize(&deltas), index.tree());
    assert_eq!(index.len(), 1);
}

/// Goal: directories removed (or swapped for files) while a scan walks them
/// never fail it. Method: a thread keeps creating and removing a small tree
/// (a directory of 200 subdirectories) while the workspace is scanned again
/// and again.
#[test]
fn directories_removed_during_a_scan_do_not_fail_it() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    let dir = tempfile::tempdir().unwrap();
    let (ws, out) = (dir.path().join("ws"), dir.path().join("out"));
    std::fs::create_dir_all(&ws).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let churner = {
        let (ws, stop) = (ws.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                for n in 0..200 {
                    let sub = ws.join(format!("d/{n}/e"));
                    std::fs::create_dir_all(&sub).unwrap();
                    std::fs::write(sub.join("g"), "g").unwrap();
                }
                std::fs::remove_dir_all(ws.join("d")).unwrap();
                std::fs::write(ws.join("d"), "file").unwrap();
                std::fs::remove_file(ws.join("d")).unwrap();
            }
        })
    };
    let sink = Sink::default();
    let mut index = Index::default();
    let roots = [ScanRoot { area: Area::Workspace, host: &ws }, ScanRoot { area: Area::Outputs, host: &out }];
    let mut failed = None;
    for _ in 0..200 {
        if let Err(err) = index.scan(&roots, SystemTime::now(), &|bytes: &[u8]| sink.put(bytes)) {
            failed = Some(err.to_string());
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    churner.join().unwrap();
    assert_eq!(failed, None, "a scan failed because the sandbox removed a directory");
}
