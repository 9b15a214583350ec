//! Change detection: what a tool call changed in the workspace and outputs,
//! found by a stat-only walk against a per-session [`Index`], hashing only
//! what the walk cannot vouch for.
//!
//! The index maps every recorded path to its [`Node`] (a file's blake3 hash
//! and mode, or a symlink's target) and, for files, the stat fields that
//! change whenever content can: device, inode, mode, size, mtime and ctime
//! (ctime cannot be set from user space). A scan walks each directory through
//! file descriptors, never following a symlink (`openat` with `O_NOFOLLOW`,
//! `statat` without following), so a sandbox that swaps a directory for a
//! symlink mid-scan cannot make the server read outside the session. Each of
//! a few threads walks a subtree depth first, holding one open directory per
//! level (so a wide directory costs names, not descriptors), and hands the
//! unwalked subdirectories of its shallowest level to a thread that waits
//! for work. Files
//! whose stat fields match the index are unchanged; the rest are opened
//! beneath their root with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`,
//! checked to be regular files (`O_NONBLOCK`, so a FIFO never blocks), read
//! and hashed in parallel, and reported only if hash or mode differ. Paths in
//! the index that the walk did not see are reported removed.
//!
//! One scan's work and output are bounded whatever the sandbox holds: it
//! reads at most [`MAX_SCAN_READ_BYTES`] to hash files (a sparse file costs
//! the sandbox nothing against its disk limit, yet claims up to the blob
//! limit) and its changes name at most [`MAX_SCAN_PATH_BYTES`] of paths (an
//! empty file below a long path costs the sandbox one directory entry). What
//! does not fit is left for a later scan, exactly as if it had changed after
//! this one: the index keeps what the log last recorded for the path (not
//! vouched for, so it is looked at again), the report lists it in
//! `skipped`, and changes left waiting go first next time (oldest first), so
//! none waits forever. Entries that change under the scan (a file swapped
//! for a socket, a directory removed before it is read) and entries the
//! server may not read are skipped likewise rather than failing the scan: a
//! failed scan records nothing, which would keep every change out of the log.
//!
//! Blind spots, by design: empty directories and directory modes (a tree has
//! only leaves); FIFOs, sockets and device nodes; names that are not UTF-8;
//! setuid, setgid and sticky bits (only the permission bits are recorded);
//! files over the store's blob limit (recorded as removed, and logged);
//! paths longer than [`MAX_RELATIVE_PATH_BYTES`] below their root;
//! changes made while a scan runs (the next scan sees them). A file changed
//! within one timestamp tick of the previous scan with its size unchanged
//! would keep its stat fields, so, like git's "racily clean" entries, a file
//! whose mtime or ctime is within [`RACY_MARGIN`] of the scan's start is not
//! vouched for next time and is hashed again.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::io::Read as _;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use logbook_core::event::{FileChange, WorkspaceChange};
use logbook_core::limits::MAX_BLOB_BYTES;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::tree::{Area, Node, Tree, recorded_path};

/// A file modified this close to a scan's start is hashed again next scan.
pub const RACY_MARGIN: Duration = Duration::from_secs(2);
/// Directory depth a scan descends to; deeper entries are not recorded.
/// With [`WALK_THREADS`] it bounds the descriptors a walk holds: one per
/// level per thread, plus one shared directory and the roots.
pub const MAX_DEPTH: usize = 256;
/// Threads that hash changed files.
pub const HASH_THREADS: usize = 4;
/// Threads that walk directories (at most the machine's parallelism).
pub const WALK_THREADS: usize = 4;
/// Longest path below its root a scan records, in bytes: files are opened
/// by that path beneath their root, and the kernel opens no longer one
/// (`PATH_MAX`, 4096 bytes with the terminating NUL). Longer entries are
/// skipped (and reported), directories not entered.
pub const MAX_RELATIVE_PATH_BYTES: usize = 4095;
/// Most bytes one scan reads to hash files (each file is charged its size
/// when opened, before it is read). Files past it keep their last recorded
/// state and are hashed by a later scan, the longest waiting first. 1 GiB is
/// 16 files at the blob limit, about a second of hashing on 4 threads; the
/// outputs capture bounds its reads the same way
/// (`resources::outputs::MAX_CAPTURE_READ_BYTES`).
pub const MAX_SCAN_READ_BYTES: u64 = 1 << 30;
/// Most bytes of paths one scan's changes name (removals, writes and links
/// alike): one call's delta stays near this whatever the paths' lengths
/// (about 100,000 changes of 80-byte paths). Changes past it are left for a
/// later scan, the longest waiting first.
pub const MAX_SCAN_PATH_BYTES: usize = 8 << 20;
/// Most skipped paths one report lists; one more line counts the rest.
pub const MAX_REPORTED_SKIPS: usize = 100;

/// One directory a scan covers.
#[derive(Debug, Clone, Copy)]
pub struct ScanRoot<'a> {
    pub area: Area,
    pub host: &'a Path,
}

/// Stores a changed file's content and returns its blake3 hash.
pub type BlobSink<'a> = dyn Fn(&[u8]) -> Result<[u8; 32], String> + Sync + 'a;

/// What a scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Removals first, then writes and links, each sorted by path.
    pub changes: Vec<WorkspaceChange>,
    /// Entries the walk looked at.
    pub n_entries: usize,
    /// Files read and hashed.
    pub n_hashed: usize,
    /// Paths whose change (or hashing) was left for a later scan, over this
    /// scan's read or path budget.
    pub n_left: usize,
    /// Paths left out (not UTF-8, too deep, too large, unreadable, changed
    /// during the scan, left for a later scan), for the log: at most
    /// [`MAX_REPORTED_SKIPS`], then a line counting the rest.
    pub skipped: Vec<String>,
}

/// A scan that could not finish; the index is then unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("reading {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("storing the content of {path}: {message}")]
    Store { path: String, message: String },
}

/// The stat fields that vouch for a file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StatKey {
    dev: u64,
    ino: u64,
    mode: u32,
    size: i64,
    mtime: (i64, u64),
    ctime: (i64, u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    node: Node,
    /// `None` when the stat fields cannot vouch (fresh index, racy file).
    stat: Option<StatKey>,
}

impl Entry {
    /// The same node, vouched for by nothing (looked at again next scan).
    fn unvouched(&self) -> Entry {
        Entry { node: self.node.clone(), stat: None }
    }
}

/// What the scanner knows about one session's workspace and outputs.
#[derive(Debug, Clone, Default)]
pub struct Index {
    entries: BTreeMap<String, Entry>,
    /// Paths whose change a scan left for a later one (over its read or path
    /// budget), with the number of the scan that first did: the longest
    /// waiting go first, so none waits forever.
    deferred: BTreeMap<String, u64>,
    /// Scans done.
    scans: u64,
}

/// What one scan may read and record.
#[derive(Debug, Clone, Copy)]
struct Budget {
    read_bytes: u64,
    path_bytes: usize,
}

impl Default for Budget {
    fn default() -> Budget {
        Budget { read_bytes: MAX_SCAN_READ_BYTES, path_bytes: MAX_SCAN_PATH_BYTES }
    }
}

/// A file the walk cannot vouch for.
struct Candidate {
    path: String,
    root: usize,
    relative: String,
    /// Its size when the walk saw it: what it is charged of the read budget
    /// when its turn comes (corrected to the open file's size).
    size: u64,
}

/// Skipped paths for the report: the first [`MAX_REPORTED_SKIPS`], and how
/// many more.
#[derive(Debug, Default)]
struct Skips {
    listed: Vec<String>,
    more: usize,
}

impl Skips {
    fn push(&mut self, message: impl FnOnce() -> String) {
        if self.listed.len() < MAX_REPORTED_SKIPS {
            self.listed.push(message());
        } else {
            self.more += 1;
        }
    }

    fn append(&mut self, other: Skips) {
        for message in other.listed {
            self.push(|| message);
        }
        self.more += other.more;
    }

    fn into_lines(self) -> Vec<String> {
        let mut lines = self.listed;
        if self.more > 0 {
            lines.push(format!("and {} more paths", self.more));
        }
        lines
    }
}

impl Index {
    /// An index that knows `tree`'s contents but vouches for nothing: the
    /// first scan hashes every file and reports only real differences (used
    /// after a restart, with the tree the log describes).
    /// Only the workspace and outputs: mounted uploads are not scanned.
    pub fn from_tree(tree: &Tree) -> Index {
        let entries = [Area::Workspace, Area::Outputs]
            .into_iter()
            .flat_map(|area| tree.in_area(area))
            .map(|(path, node)| (path.to_owned(), Entry { node: node.clone(), stat: None }));
        Index { entries: entries.collect(), ..Index::default() }
    }

    /// The tree the index describes.
    pub fn tree(&self) -> Tree {
        let mut tree = Tree::default();
        for (path, entry) in &self.entries {
            let change = match &entry.node {
                Node::File { blob, size, mode } => FileChange::Written { blob: *blob, size: *size, mode: *mode },
                Node::Symlink { target } => FileChange::Symlink { target: target.clone() },
            };
            // Paths in the index were produced by a walk, so they are clean.
            let _ = tree.apply_change(&WorkspaceChange { path: path.clone(), change });
        }
        tree
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Walks `roots`, stores changed contents through `sink`, and updates the
    /// index. `started` is the (real) time the scan began.
    pub fn scan(
        &mut self,
        roots: &[ScanRoot<'_>],
        started: SystemTime,
        sink: &BlobSink<'_>,
    ) -> Result<ScanReport, ScanError> {
        self.scan_within(roots, started, sink, Budget::default())
    }

    /// [`Index::scan`] with the given budget (tests use small ones).
    fn scan_within(
        &mut self,
        roots: &[ScanRoot<'_>],
        started: SystemTime,
        sink: &BlobSink<'_>,
        budget: Budget,
    ) -> Result<ScanReport, ScanError> {
        let this_scan = self.scans;
        let mut report = ScanReport::default();
        let mut root_fds = Vec::new();
        let mut pending = Vec::new();
        for (root_idx, root) in roots.iter().enumerate() {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
            match rustix::fs::open(root.host, flags, Mode::empty()) {
                Ok(fd) => {
                    let walk_fd = rustix::io::dup(&fd).map_err(|err| io_error(root.host.display().to_string(), err))?;
                    pending.push(Pending {
                        dir: DirRef::Open(walk_fd),
                        root: root_idx,
                        area: root.area,
                        prefix: String::new(),
                        depth: 0,
                    });
                    root_fds.push(Some(fd));
                }
                Err(Errno::NOENT) => root_fds.push(None),
                Err(err) => return Err(io_error(root.host.display().to_string(), err)),
            }
        }
        let Found { next, mut candidates, mut skipped, n_entries, kept } = self.walk(pending)?;
        report.n_entries = n_entries;
        let mut next: BTreeMap<String, Entry> = next.into_iter().collect();
        // What the walk could not look at stays as the log last recorded it.
        for path in &kept {
            self.keep_under(path, &mut next);
        }
        // Changes left waiting by earlier scans go first, oldest first.
        let waiting_since = |path: &str| self.deferred.get(path).copied().unwrap_or(this_scan);
        candidates.sort_by(|a, b| (waiting_since(&a.path), &a.path).cmp(&(waiting_since(&b.path), &b.path)));
        let racy_after = started.checked_sub(RACY_MARGIN).unwrap_or(UNIX_EPOCH);
        let (hashed, n_read) = hash_candidates(&candidates, &root_fds, &self.entries, sink, budget.read_bytes)?;
        report.n_hashed = n_read;
        let mut deferred = BTreeMap::new();
        let mut proposed = Vec::new();
        for (candidate, outcome) in candidates.iter().zip(hashed) {
            let path = &candidate.path;
            match outcome {
                Hashed::Gone => {}
                Hashed::Raced(err) => skipped.push(|| format!("{path} (changed while the scan opened it: {err})")),
                Hashed::Unreadable(err) => {
                    skipped.push(|| format!("{path} (unreadable, kept as last recorded: {err})"));
                    self.keep(path, &mut next);
                }
                Hashed::TooLarge => skipped.push(|| format!("{path} (over {MAX_BLOB_BYTES} bytes)")),
                Hashed::OverBudget => {
                    skipped.push(|| format!("{path} (left for a later scan: over {} bytes read)", budget.read_bytes));
                    deferred.insert(path.clone(), waiting_since(path));
                    self.keep(path, &mut next);
                }
                Hashed::File { node, stat, changed } => {
                    if changed {
                        let Node::File { blob, size, mode } = node else { continue };
                        proposed.push(WorkspaceChange {
                            path: path.clone(),
                            change: FileChange::Written { blob, size, mode },
                        });
                    }
                    let vouched = !is_racy(&stat, racy_after);
                    next.insert(path.clone(), Entry { node, stat: vouched.then_some(stat) });
                }
            }
        }
        // Symlinks found by the walk.
        for (path, entry) in &next {
            if let Node::Symlink { target } = &entry.node
                && self.entries.get(path).map(|old| &old.node) != Some(&entry.node)
            {
                proposed.push(WorkspaceChange {
                    path: path.clone(),
                    change: FileChange::Symlink { target: target.clone() },
                });
            }
        }
        proposed.extend(
            self.entries
                .keys()
                .filter(|path| !next.contains_key(*path))
                .map(|path| WorkspaceChange { path: path.clone(), change: FileChange::Removed }),
        );
        // The path budget, longest waiting first; what does not fit stays
        // as the log last recorded it.
        proposed.sort_by(|a, b| (waiting_since(&a.path), &a.path).cmp(&(waiting_since(&b.path), &b.path)));
        let mut path_bytes = 0usize;
        let mut recorded = Vec::new();
        for change in proposed {
            if path_bytes + change.path.len() <= budget.path_bytes {
                path_bytes += change.path.len();
                recorded.push(change);
                continue;
            }
            let path = change.path;
            skipped.push(|| {
                format!("{path} (left for a later scan: over {} bytes of paths in one delta)", budget.path_bytes)
            });
            deferred.insert(path.clone(), waiting_since(&path));
            match self.entries.get(&path) {
                Some(old) => next.insert(path, old.unvouched()),
                None => next.remove(&path),
            };
        }
        // A recorded write or link replaces whatever was above or below its
        // path (as folding the delta does), kept entries included.
        for change in &recorded {
            if let FileChange::Removed = change.change {
                continue;
            }
            replace_around(&change.path, &mut next);
        }
        let (mut changes, mut written): (Vec<_>, Vec<_>) =
            recorded.into_iter().partition(|change| matches!(change.change, FileChange::Removed));
        changes.sort_by(|a, b| a.path.cmp(&b.path));
        written.sort_by(|a, b| a.path.cmp(&b.path));
        changes.extend(written);
        report.changes = changes;
        report.n_left = deferred.len();
        report.skipped = skipped.into_lines();
        self.entries = next;
        self.deferred = deferred;
        self.scans += 1;
        Ok(report)
    }

    /// Keeps `path` as the index last had it, vouched for by nothing.
    fn keep(&self, path: &str, next: &mut BTreeMap<String, Entry>) {
        if let Some(old) = self.entries.get(path) {
            next.insert(path.to_owned(), old.unvouched());
        }
    }

    /// Keeps `path` and everything below it as the index last had them.
    fn keep_under(&self, path: &str, next: &mut BTreeMap<String, Entry>) {
        self.keep(path, next);
        let below = format!("{path}/");
        for (kept, old) in self.entries.range(below.clone()..).take_while(|(kept, _)| kept.starts_with(&below)) {
            next.insert(kept.clone(), old.unvouched());
        }
    }

    /// Walks the roots on a few threads, each a subtree at a time, depth
    /// first: what each entry is, and which files need hashing.
    fn walk(&self, roots: Vec<Pending>) -> Result<Found, ScanError> {
        let queue = Queue {
            state: Mutex::new(QueueState { items: roots, in_flight: 0, error: None }),
            ready: Condvar::new(),
            waiting: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
        };
        let n_threads = std::thread::available_parallelism().map_or(2, usize::from).clamp(1, WALK_THREADS);
        // A worker that panicked walked part of the tree: what it found is
        // lost, and a scan without it would record its files as removed.
        let found: Option<Vec<Found>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..n_threads).map(|_| scope.spawn(|| self.walk_worker(&queue))).collect();
            workers.into_iter().map(|worker| worker.join().ok()).collect()
        });
        let found = found.ok_or_else(scan_panicked)?;
        let state = queue.state.into_inner().map_err(|_| scan_panicked())?;
        if let Some(err) = state.error {
            return Err(err);
        }
        let mut all = Found::default();
        for part in found {
            all.next.extend(part.next);
            all.candidates.extend(part.candidates);
            all.skipped.append(part.skipped);
            all.kept.extend(part.kept);
            all.n_entries += part.n_entries;
        }
        Ok(all)
    }

    fn walk_worker(&self, queue: &Queue) -> Found {
        let mut found = Found::default();
        loop {
            let work = {
                let Ok(mut state) = queue.state.lock() else { return found };
                loop {
                    if state.error.is_some() {
                        return found;
                    }
                    if let Some(work) = state.items.pop() {
                        state.in_flight += 1;
                        break work;
                    }
                    if state.in_flight == 0 {
                        queue.ready.notify_all();
                        return found;
                    }
                    queue.waiting.fetch_add(1, Ordering::SeqCst);
                    state = match queue.ready.wait(state) {
                        Ok(state) => state,
                        Err(_) => return found,
                    };
                    queue.waiting.fetch_sub(1, Ordering::SeqCst);
                }
            };
            // A panic (a bug) fails the scan like an error does: the other
            // workers, waiting for this subtree's end, are told.
            let res =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.walk_subtree(work, queue, &mut found)))
                    .unwrap_or_else(|_| Err(scan_panicked()));
            // Taken even if that panic poisoned it (while sharing work): the
            // others wait for this subtree's end and must hear of it. A
            // poisoned queue fails the scan once the workers are done.
            let mut state = queue.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            state.in_flight -= 1;
            if let Err(err) = res {
                state.error.get_or_insert(err);
                queue.failed.store(true, Ordering::SeqCst);
            }
            queue.ready.notify_all();
        }
    }

    /// Walks the directory `start` and everything below it, depth first,
    /// holding one open directory per level; shares unwalked subdirectories
    /// when another thread waits for work.
    fn walk_subtree(&self, start: Pending, queue: &Queue, found: &mut Found) -> Result<(), ScanError> {
        let mut stack: Vec<Level> = Vec::new();
        stack.extend(self.enter(start, found)?);
        loop {
            if queue.failed.load(Ordering::SeqCst) {
                return Ok(());
            }
            let Some(top) = stack.last_mut() else { return Ok(()) };
            let Some((name, relative)) = top.subdirs.pop() else {
                stack.pop();
                continue;
            };
            let child = Pending {
                dir: DirRef::At(Arc::clone(&top.fd), name),
                root: top.root,
                area: top.area,
                prefix: relative,
                depth: top.depth + 1,
            };
            stack.extend(self.enter(child, found)?);
            // After every directory, not only those with subdirectories: a
            // wide directory of leaves is shared too.
            queue.share(&mut stack);
        }
    }

    /// Opens and reads one directory: its entries go to `found`; returns
    /// it with its subdirectories, if it has any.
    fn enter(&self, dir: Pending, found: &mut Found) -> Result<Option<Level>, ScanError> {
        let Pending { dir, root, area, prefix, depth } = dir;
        let fd = match dir {
            DirRef::Open(fd) => fd,
            DirRef::At(parent, name) => {
                let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                match rustix::fs::openat(&*parent, name.as_c_str(), flags, Mode::empty()) {
                    Ok(fd) => fd,
                    // Replaced by something else since the stat: seen next time.
                    Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => return Ok(None),
                    Err(err) => return passed_over(err, display(area, &prefix), found).map(|()| None),
                }
            }
        };
        let names = match read_names(&fd) {
            Ok(names) => names,
            Err(err) => return passed_over(err, display(area, &prefix), found).map(|()| None),
        };
        let mut subdirs = Vec::new();
        for name in names {
            found.n_entries += 1;
            let Ok(name_str) = name.to_str() else {
                found
                    .skipped
                    .push(|| format!("{}/{} (name is not UTF-8)", display(area, &prefix), name.to_string_lossy()));
                continue;
            };
            let relative = if prefix.is_empty() { name_str.to_owned() } else { format!("{prefix}/{name_str}") };
            if relative.len() > MAX_RELATIVE_PATH_BYTES {
                found
                    .skipped
                    .push(|| format!("{} (path over {MAX_RELATIVE_PATH_BYTES} bytes)", recorded_path(area, &relative)));
                continue;
            }
            let path = recorded_path(area, &relative);
            let stat = match rustix::fs::statat(&fd, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => stat,
                Err(Errno::NOENT) => continue,
                Err(err) => {
                    passed_over(err, path, found)?;
                    continue;
                }
            };
            match FileType::from_raw_mode(stat.st_mode) {
                FileType::Directory => {
                    if depth + 1 >= MAX_DEPTH {
                        found.skipped.push(|| format!("{path} (deeper than {MAX_DEPTH} levels)"));
                        continue;
                    }
                    subdirs.push((name, relative));
                }
                FileType::RegularFile => {
                    let key = stat_key(&stat);
                    match self.entries.get(&path) {
                        Some(old) if old.stat == Some(key) && matches!(old.node, Node::File { .. }) => {
                            found.next.push((path, old.clone()));
                        }
                        _ => {
                            let size = u64::try_from(stat.st_size).unwrap_or(0);
                            found.candidates.push(Candidate { path, root, relative, size });
                        }
                    }
                }
                FileType::Symlink => {
                    let target = match rustix::fs::readlinkat(&fd, name.as_c_str(), Vec::new()) {
                        Ok(target) => target,
                        Err(Errno::NOENT | Errno::INVAL) => continue,
                        Err(err) => {
                            passed_over(err, path, found)?;
                            continue;
                        }
                    };
                    let Ok(target) = target.into_string() else {
                        found.skipped.push(|| format!("{path} (link target is not UTF-8)"));
                        continue;
                    };
                    found.next.push((path, Entry { node: Node::Symlink { target }, stat: None }));
                }
                FileType::Fifo
                | FileType::Socket
                | FileType::CharacterDevice
                | FileType::BlockDevice
                | FileType::Unknown => {}
            }
        }
        if subdirs.is_empty() {
            return Ok(None);
        }
        Ok(Some(Level { fd: Arc::new(fd), root, area, depth, subdirs }))
    }
}

/// Why an entry the walk met could not be looked at, when that is no reason
/// to fail the scan.
enum Trouble {
    /// It changed under the scan (removed, or swapped for something that
    /// cannot be read as what it was): the walk goes on without it, and the
    /// next scan sees what it became.
    Raced,
    /// The server may not read it: it stays as the log last recorded it.
    Unreadable,
}

/// The error of a scan one of whose threads panicked (a bug).
fn scan_panicked() -> ScanError {
    ScanError::Io { path: "/workspace".to_owned(), source: std::io::Error::other("a scan thread panicked") }
}

fn trouble(err: Errno) -> Option<Trouble> {
    match err {
        Errno::NOENT | Errno::NOTDIR | Errno::LOOP | Errno::NXIO | Errno::XDEV => Some(Trouble::Raced),
        // A lease or lock holds it (the sandbox's seccomp filter refuses
        // leases; a lock the server did not expect, then): it is there, so
        // it is not gone from the log.
        Errno::ACCESS | Errno::PERM | Errno::NAMETOOLONG | Errno::WOULDBLOCK => Some(Trouble::Unreadable),
        _ => None,
    }
}

/// Notes an entry (at `path`) the walk could not look at, or fails the scan
/// if `err` is the server's own trouble (descriptors, memory, I/O).
fn passed_over(err: Errno, path: String, found: &mut Found) -> Result<(), ScanError> {
    match trouble(err) {
        Some(Trouble::Raced) => {
            found.skipped.push(|| format!("{path} (changed during the scan: {err})"));
            Ok(())
        }
        Some(Trouble::Unreadable) => {
            found.skipped.push(|| format!("{path} (unreadable, kept as last recorded: {err})"));
            found.kept.push(path);
            Ok(())
        }
        None => Err(io_error(path, err)),
    }
}

/// Removes from `next` what a write or link at `path` replaces: entries
/// above it (a file where a directory now is) and below it.
fn replace_around(path: &str, next: &mut BTreeMap<String, Entry>) {
    let mut above = path;
    while let Some((parent, _)) = above.rsplit_once('/') {
        next.remove(parent);
        above = parent;
    }
    let below = format!("{path}/");
    let replaced: Vec<String> = next
        .range(below.clone()..)
        .take_while(|(under, _)| under.starts_with(&below))
        .map(|(p, _)| p.clone())
        .collect();
    for under in replaced {
        next.remove(&under);
    }
}

/// A directory waiting to be walked.
struct Pending {
    dir: DirRef,
    root: usize,
    area: Area,
    /// Its path below its root ("" for the root).
    prefix: String,
    depth: usize,
}

/// How to reach a directory waiting to be walked.
enum DirRef {
    /// Already open (a root).
    Open(OwnedFd),
    /// This name in that open directory, opened when its turn comes.
    At(Arc<OwnedFd>, CString),
}

/// One open directory on a walk thread's stack, and its subdirectories not
/// walked yet (name, path below the root).
struct Level {
    fd: Arc<OwnedFd>,
    root: usize,
    area: Area,
    depth: usize,
    subdirs: Vec<(CString, String)>,
}

/// What one walk thread found.
#[derive(Default)]
struct Found {
    next: Vec<(String, Entry)>,
    candidates: Vec<Candidate>,
    skipped: Skips,
    /// Paths the walk could not read: they and everything below them stay
    /// as the log last recorded them.
    kept: Vec<String>,
    n_entries: usize,
}

/// The walk's shared work queue: the roots, then subdirectories a thread
/// handed over for a waiting one. It is handed new work only when empty, so
/// it refers to at most one open directory.
struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
    /// Threads waiting for work.
    waiting: AtomicUsize,
    /// A thread failed: the others stop.
    failed: AtomicBool,
}

struct QueueState {
    items: Vec<Pending>,
    /// Subtrees being walked.
    in_flight: usize,
    error: Option<ScanError>,
}

impl Queue {
    /// When a thread waits for work and the queue has none, hands it the
    /// unwalked subdirectories of the shallowest level of `stack` (the
    /// largest subtrees).
    fn share(&self, stack: &mut [Level]) {
        if self.waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        let Ok(mut state) = self.state.lock() else { return };
        if !state.items.is_empty() {
            return;
        }
        let Some(level) = stack.iter_mut().find(|level| !level.subdirs.is_empty()) else { return };
        for (name, relative) in level.subdirs.drain(..) {
            state.items.push(Pending {
                dir: DirRef::At(Arc::clone(&level.fd), name),
                root: level.root,
                area: level.area,
                prefix: relative,
                depth: level.depth + 1,
            });
        }
        self.ready.notify_all();
    }
}

pub(crate) fn read_names(dir: &OwnedFd) -> rustix::io::Result<Vec<std::ffi::CString>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        names.push(CStr::to_owned(name));
    }
    Ok(names)
}

fn stat_key(stat: &rustix::fs::Stat) -> StatKey {
    StatKey {
        dev: stat.st_dev,
        ino: stat.st_ino,
        mode: stat.st_mode,
        size: stat.st_size,
        mtime: (stat.st_mtime, stat.st_mtime_nsec),
        ctime: (stat.st_ctime, stat.st_ctime_nsec),
    }
}

fn is_racy(stat: &StatKey, racy_after: SystemTime) -> bool {
    let as_time = |(secs, nanos): (i64, u64)| {
        u64::try_from(secs).map(|secs| UNIX_EPOCH + Duration::new(secs, nanos as u32)).unwrap_or(UNIX_EPOCH)
    };
    as_time(stat.mtime) >= racy_after || as_time(stat.ctime) >= racy_after
}

enum Hashed {
    /// Gone or no longer a regular file.
    Gone,
    /// Swapped for something that cannot be opened as a file (a socket)
    /// between the walk and the open: not recorded this time.
    Raced(Errno),
    /// The server may not open it: kept as last recorded.
    Unreadable(Errno),
    TooLarge,
    /// Past the scan's read budget: left for a later scan.
    OverBudget,
    File {
        node: Node,
        stat: StatKey,
        changed: bool,
    },
}

/// Reads, hashes and (when changed) stores every candidate, on a few threads,
/// in order while `read_bytes` last; returns the outcomes in candidate order
/// and how many files were read.
fn hash_candidates(
    candidates: &[Candidate],
    root_fds: &[Option<OwnedFd>],
    old: &BTreeMap<String, Entry>,
    sink: &BlobSink<'_>,
    read_bytes: u64,
) -> Result<(Vec<Hashed>, usize), ScanError> {
    let mut slots: Vec<Option<Result<Hashed, ScanError>>> = Vec::new();
    slots.resize_with(candidates.len(), || None);
    let slots = Mutex::new(slots);
    let turns = Turns { state: Mutex::new(TurnState { next: 0, left: read_bytes }) };
    let n_read = AtomicUsize::new(0);
    let n_threads = HASH_THREADS.min(candidates.len());
    std::thread::scope(|scope| {
        for _ in 0..n_threads {
            scope.spawn(|| {
                while let Some((idx, charged)) = turns.take(candidates) {
                    let Some(candidate) = candidates.get(idx) else { break };
                    let outcome = match charged {
                        Some(charged) => hash_one(candidate, root_fds, old, sink, &turns, charged, &n_read),
                        None => Ok(Hashed::OverBudget),
                    };
                    let failed = outcome.is_err();
                    if let Ok(mut slots) = slots.lock() {
                        slots[idx] = Some(outcome);
                    }
                    if failed {
                        // Let the other threads stop soon too.
                        turns.stop(candidates.len());
                        break;
                    }
                }
            });
        }
    });
    let slots = slots.into_inner().unwrap_or_default();
    let mut outcomes = Vec::with_capacity(slots.len());
    for (slot, candidate) in slots.into_iter().zip(candidates) {
        match slot {
            Some(Ok(hashed)) => outcomes.push(hashed),
            Some(Err(err)) => return Err(err),
            None => {
                return Err(ScanError::Store {
                    path: candidate.path.clone(),
                    message: "the scan stopped before this file".to_owned(),
                });
            }
        }
    }
    Ok((outcomes, n_read.load(Ordering::SeqCst)))
}

/// The hashing threads' turns: which candidate is next, and what is left of
/// the read budget. A candidate is charged its walk size when its turn is
/// taken (so candidates are charged in order), then the difference to its
/// open file's size.
struct Turns {
    state: Mutex<TurnState>,
}

struct TurnState {
    next: usize,
    left: u64,
}

impl Turns {
    /// The next candidate and what it was charged (`None`: over the budget).
    fn take(&self, candidates: &[Candidate]) -> Option<(usize, Option<u64>)> {
        let mut state = self.state.lock().ok()?;
        let idx = state.next;
        let candidate = candidates.get(idx)?;
        state.next += 1;
        // A file over the blob limit is not read: it costs nothing.
        let size = if candidate.size > MAX_BLOB_BYTES as u64 { 0 } else { candidate.size };
        let charged = state.left.checked_sub(size).map(|left| {
            state.left = left;
            size
        });
        Some((idx, charged))
    }

    /// Charges `more` bytes; false (and nothing charged) if they are not left.
    fn charge(&self, more: u64) -> bool {
        let Ok(mut state) = self.state.lock() else { return false };
        match state.left.checked_sub(more) {
            Some(left) => {
                state.left = left;
                true
            }
            None => false,
        }
    }

    /// Gives back `unused` bytes.
    fn refund(&self, unused: u64) {
        if let Ok(mut state) = self.state.lock() {
            state.left = state.left.saturating_add(unused);
        }
    }

    /// No more turns.
    fn stop(&self, n_candidates: usize) {
        if let Ok(mut state) = self.state.lock() {
            state.next = n_candidates;
        }
    }
}

/// A candidate opened and charged its size, or what it turned out to be.
enum Opened {
    File { fd: OwnedFd, stat: rustix::fs::Stat, size: u64 },
    Not(Hashed),
}

/// Opens `candidate` beneath its root and settles its charge to the open
/// file's size (refunding what is not read).
fn open_charged(
    candidate: &Candidate,
    root_fds: &[Option<OwnedFd>],
    turns: &Turns,
    charged: u64,
) -> Result<Opened, ScanError> {
    let not = |hashed: Hashed| {
        turns.refund(charged);
        Ok(Opened::Not(hashed))
    };
    let Some(Some(root)) = root_fds.get(candidate.root) else { return not(Hashed::Gone) };
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let resolve =
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV;
    let fd = match rustix::fs::openat2(root, candidate.relative.as_str(), flags, Mode::empty(), resolve) {
        Ok(fd) => fd,
        Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP | Errno::XDEV) => return not(Hashed::Gone),
        Err(err) => {
            return match trouble(err) {
                Some(Trouble::Raced) => not(Hashed::Raced(err)),
                Some(Trouble::Unreadable) => not(Hashed::Unreadable(err)),
                None => {
                    turns.refund(charged);
                    Err(io_error(candidate.path.clone(), err))
                }
            };
        }
    };
    let stat = match rustix::fs::fstat(&fd) {
        Ok(stat) => stat,
        Err(err) => {
            turns.refund(charged);
            return Err(io_error(candidate.path.clone(), err));
        }
    };
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return not(Hashed::Gone);
    }
    let Ok(size) = u64::try_from(stat.st_size) else { return not(Hashed::Gone) };
    if size > MAX_BLOB_BYTES as u64 {
        return not(Hashed::TooLarge);
    }
    // Charged by the size of the open file, whatever the walk saw.
    if size > charged {
        if !turns.charge(size - charged) {
            return not(Hashed::OverBudget);
        }
    } else {
        turns.refund(charged - size);
    }
    Ok(Opened::File { fd, stat, size })
}

fn hash_one(
    candidate: &Candidate,
    root_fds: &[Option<OwnedFd>],
    old: &BTreeMap<String, Entry>,
    sink: &BlobSink<'_>,
    turns: &Turns,
    charged: u64,
    n_read: &AtomicUsize,
) -> Result<Hashed, ScanError> {
    let (fd, stat, size) = match open_charged(candidate, root_fds, turns, charged)? {
        Opened::File { fd, stat, size } => (fd, stat, size),
        Opened::Not(hashed) => return Ok(hashed),
    };
    let key = stat_key(&stat);
    let mut file = std::fs::File::from(fd);
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    // No more than the size charged is read, even if the file grows
    // meanwhile: its stat fields then differ from the recorded ones (taken
    // before reading), so the next scan reads it again, as it does a file
    // written while it was read.
    let read = (&mut file).take(size).read_to_end(&mut bytes);
    read.map_err(|source| ScanError::Io { path: candidate.path.clone(), source })?;
    n_read.fetch_add(1, Ordering::SeqCst);
    // Contents over one chunk are stored as chunks and named by their
    // manifest, like every file the server stores (`resources::content`).
    let store_error = |message: String| ScanError::Store { path: candidate.path.clone(), message };
    let pieces = crate::resources::content::blobs_of(&bytes).map_err(|err| store_error(err.to_string()))?;
    let hashes: Vec<[u8; 32]> = pieces.iter().map(|piece| *blake3::hash(piece).as_bytes()).collect();
    let Some(&blob) = hashes.last() else { return Err(store_error("no blob names the contents".to_owned())) };
    let mode = stat.st_mode & 0o777;
    let node = Node::File { blob, size: bytes.len() as u64, mode };
    let changed = old.get(&candidate.path).map(|entry| &entry.node) != Some(&node);
    if changed {
        for (piece, hash) in pieces.iter().zip(&hashes) {
            if sink(piece).map_err(store_error)? != *hash {
                return Err(store_error("the store returned another hash than blake3 of the content".to_owned()));
            }
        }
    }
    // The content read may be newer than the stat taken before opening: vouch
    // with the stat of the open file, taken before reading.
    Ok(Hashed::File { node, stat: key, changed })
}

fn display(area: Area, relative: &str) -> String {
    if relative.is_empty() { area.root().to_owned() } else { recorded_path(area, relative) }
}

fn io_error(path: String, err: rustix::io::Errno) -> ScanError {
    ScanError::Io { path, source: err.into() }
}

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
