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
//! symlink mid-scan cannot make the server read outside the session; a few
//! threads take directories from a shared queue. Files
//! whose stat fields match the index are unchanged; the rest are opened
//! beneath their root with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`,
//! checked to be regular files (`O_NONBLOCK`, so a FIFO never blocks), read
//! and hashed in parallel, and reported only if hash or mode differ. Paths in
//! the index that the walk did not see are reported removed.
//!
//! Blind spots, by design: empty directories and directory modes (a tree has
//! only leaves); FIFOs, sockets and device nodes; names that are not UTF-8;
//! setuid, setgid and sticky bits (only the permission bits are recorded);
//! files over the store's blob limit (recorded as removed, and logged);
//! changes made while a scan runs (the next scan sees them). A file changed
//! within one timestamp tick of the previous scan with its size unchanged
//! would keep its stat fields, so, like git's "racily clean" entries, a file
//! whose mtime or ctime is within [`RACY_MARGIN`] of the scan's start is not
//! vouched for next time and is hashed again.

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::io::Read as _;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use logbook_core::event::{FileChange, WorkspaceChange};
use logbook_core::limits::MAX_BLOB_BYTES;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};

use super::tree::{Area, Node, Tree, recorded_path};

/// A file modified this close to a scan's start is hashed again next scan.
pub const RACY_MARGIN: Duration = Duration::from_secs(2);
/// Directory depth a scan descends to; deeper entries are not recorded.
pub const MAX_DEPTH: usize = 256;
/// Threads that hash changed files.
pub const HASH_THREADS: usize = 4;
/// Threads that walk directories (at most the machine's parallelism).
pub const WALK_THREADS: usize = 4;

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
    /// Paths left out (not UTF-8, too deep, too large), for the log.
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

/// What the scanner knows about one session's workspace and outputs.
#[derive(Debug, Clone, Default)]
pub struct Index {
    entries: BTreeMap<String, Entry>,
}

/// A file the walk cannot vouch for.
struct Candidate {
    path: String,
    root: usize,
    relative: String,
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
        Index { entries: entries.collect() }
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
        let mut report = ScanReport::default();
        let mut root_fds = Vec::new();
        let mut pending = Vec::new();
        for (root_idx, root) in roots.iter().enumerate() {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
            match rustix::fs::open(root.host, flags, Mode::empty()) {
                Ok(fd) => {
                    let walk_fd = rustix::io::dup(&fd).map_err(|err| io_error(root.host.display().to_string(), err))?;
                    pending.push(Pending {
                        fd: walk_fd,
                        root: root_idx,
                        area: root.area,
                        prefix: String::new(),
                        depth: 0,
                    });
                    root_fds.push(Some(fd));
                }
                Err(rustix::io::Errno::NOENT) => root_fds.push(None),
                Err(err) => return Err(io_error(root.host.display().to_string(), err)),
            }
        }
        let found = self.walk(pending)?;
        report.n_entries = found.n_entries;
        report.skipped = found.skipped;
        let candidates = found.candidates;
        let mut next: BTreeMap<String, Entry> = found.next.into_iter().collect();
        let racy_after = started.checked_sub(RACY_MARGIN).unwrap_or(UNIX_EPOCH);
        let (hashed, n_read) = hash_candidates(&candidates, &root_fds, &self.entries, sink)?;
        report.n_hashed = n_read;
        let mut written = Vec::new();
        for (candidate, outcome) in candidates.iter().zip(hashed) {
            match outcome {
                Hashed::Gone => {}
                Hashed::TooLarge => report.skipped.push(format!("{} (over {MAX_BLOB_BYTES} bytes)", candidate.path)),
                Hashed::File { node, stat, changed } => {
                    if changed {
                        let Node::File { blob, size, mode } = node else { continue };
                        written.push(WorkspaceChange {
                            path: candidate.path.clone(),
                            change: FileChange::Written { blob, size, mode },
                        });
                    }
                    let vouched = !is_racy(&stat, racy_after);
                    next.insert(candidate.path.clone(), Entry { node, stat: vouched.then_some(stat) });
                }
            }
        }
        // Symlinks found by the walk.
        for (path, entry) in &next {
            if let Node::Symlink { target } = &entry.node
                && self.entries.get(path).map(|old| &old.node) != Some(&entry.node)
            {
                written.push(WorkspaceChange {
                    path: path.clone(),
                    change: FileChange::Symlink { target: target.clone() },
                });
            }
        }
        let mut changes: Vec<WorkspaceChange> = self
            .entries
            .keys()
            .filter(|path| !next.contains_key(*path))
            .map(|path| WorkspaceChange { path: path.clone(), change: FileChange::Removed })
            .collect();
        written.sort_by(|a, b| a.path.cmp(&b.path));
        changes.extend(written);
        report.changes = changes;
        self.entries = next;
        Ok(report)
    }

    /// Walks the roots on a few threads, one directory at a time from a
    /// shared queue: what each entry is, and which files need hashing.
    fn walk(&self, roots: Vec<Pending>) -> Result<Found, ScanError> {
        let queue =
            Queue { state: Mutex::new(QueueState { items: roots, in_flight: 0, error: None }), ready: Condvar::new() };
        let n_threads = std::thread::available_parallelism().map_or(2, usize::from).clamp(1, WALK_THREADS);
        let found: Vec<Found> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..n_threads).map(|_| scope.spawn(|| self.walk_worker(&queue))).collect();
            workers.into_iter().filter_map(|worker| worker.join().ok()).collect()
        });
        let state = queue.state.into_inner().map_err(|_| ScanError::Io {
            path: "/workspace".to_owned(),
            source: std::io::Error::other("a scan thread panicked"),
        })?;
        if let Some(err) = state.error {
            return Err(err);
        }
        let mut all = Found::default();
        for part in found {
            all.next.extend(part.next);
            all.candidates.extend(part.candidates);
            all.skipped.extend(part.skipped);
            all.n_entries += part.n_entries;
        }
        Ok(all)
    }

    fn walk_worker(&self, queue: &Queue) -> Found {
        let mut found = Found::default();
        let mut subdirs = Vec::new();
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
                    state = match queue.ready.wait(state) {
                        Ok(state) => state,
                        Err(_) => return found,
                    };
                }
            };
            let res = self.walk_dir(work, &mut found, &mut subdirs);
            let Ok(mut state) = queue.state.lock() else { return found };
            state.items.append(&mut subdirs);
            state.in_flight -= 1;
            if let Err(err) = res {
                state.error.get_or_insert(err);
            }
            queue.ready.notify_all();
        }
    }

    /// Looks at the entries of one directory; its subdirectories go to `subdirs`.
    fn walk_dir(&self, dir: Pending, found: &mut Found, subdirs: &mut Vec<Pending>) -> Result<(), ScanError> {
        let Pending { fd, root, area, prefix, depth } = dir;
        let names = read_names(&fd).map_err(|err| io_error(display(area, &prefix), err))?;
        for name in names {
            found.n_entries += 1;
            let Ok(name_str) = name.to_str() else {
                found.skipped.push(format!(
                    "{}/{} (name is not UTF-8)",
                    display(area, &prefix),
                    name.to_string_lossy()
                ));
                continue;
            };
            let relative = if prefix.is_empty() { name_str.to_owned() } else { format!("{prefix}/{name_str}") };
            let stat = match rustix::fs::statat(&fd, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => stat,
                Err(rustix::io::Errno::NOENT) => continue,
                Err(err) => return Err(io_error(display(area, &relative), err)),
            };
            let path = recorded_path(area, &relative);
            match FileType::from_raw_mode(stat.st_mode) {
                FileType::Directory => {
                    if depth + 1 >= MAX_DEPTH {
                        found.skipped.push(format!("{path} (deeper than {MAX_DEPTH} levels)"));
                        continue;
                    }
                    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                    let sub = match rustix::fs::openat(&fd, name.as_c_str(), flags, Mode::empty()) {
                        Ok(sub) => sub,
                        // Replaced by something else since the stat: seen next time.
                        Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => continue,
                        Err(err) => return Err(io_error(path, err)),
                    };
                    subdirs.push(Pending { fd: sub, root, area, prefix: relative, depth: depth + 1 });
                }
                FileType::RegularFile => {
                    let key = stat_key(&stat);
                    match self.entries.get(&path) {
                        Some(old) if old.stat == Some(key) && matches!(old.node, Node::File { .. }) => {
                            found.next.push((path, old.clone()));
                        }
                        _ => found.candidates.push(Candidate { path, root, relative }),
                    }
                }
                FileType::Symlink => {
                    let target = match rustix::fs::readlinkat(&fd, name.as_c_str(), Vec::new()) {
                        Ok(target) => target,
                        Err(rustix::io::Errno::NOENT | rustix::io::Errno::INVAL) => continue,
                        Err(err) => return Err(io_error(path, err)),
                    };
                    let Ok(target) = target.into_string() else {
                        found.skipped.push(format!("{path} (link target is not UTF-8)"));
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
        Ok(())
    }
}

/// A directory waiting to be walked.
struct Pending {
    fd: OwnedFd,
    root: usize,
    area: Area,
    prefix: String,
    depth: usize,
}

/// What one walk thread found.
#[derive(Default)]
struct Found {
    next: Vec<(String, Entry)>,
    candidates: Vec<Candidate>,
    skipped: Vec<String>,
    n_entries: usize,
}

/// The walk's shared work queue.
struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

struct QueueState {
    items: Vec<Pending>,
    /// Directories being read (their subdirectories are not queued yet).
    in_flight: usize,
    error: Option<ScanError>,
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
    TooLarge,
    File {
        node: Node,
        stat: StatKey,
        changed: bool,
    },
}

/// Reads, hashes and (when changed) stores every candidate, on a few threads;
/// returns the outcomes in candidate order and how many files were read.
fn hash_candidates(
    candidates: &[Candidate],
    root_fds: &[Option<OwnedFd>],
    old: &BTreeMap<String, Entry>,
    sink: &BlobSink<'_>,
) -> Result<(Vec<Hashed>, usize), ScanError> {
    let mut slots: Vec<Option<Result<Hashed, ScanError>>> = Vec::new();
    slots.resize_with(candidates.len(), || None);
    let slots = Mutex::new(slots);
    let next_idx = AtomicUsize::new(0);
    let n_read = AtomicUsize::new(0);
    let n_threads = HASH_THREADS.min(candidates.len());
    std::thread::scope(|scope| {
        for _ in 0..n_threads {
            scope.spawn(|| {
                loop {
                    let idx = next_idx.fetch_add(1, Ordering::SeqCst);
                    let Some(candidate) = candidates.get(idx) else { break };
                    let outcome = hash_one(candidate, root_fds, old, sink, &n_read);
                    let failed = outcome.is_err();
                    if let Ok(mut slots) = slots.lock() {
                        slots[idx] = Some(outcome);
                    }
                    if failed {
                        // Let the other threads stop soon too.
                        next_idx.store(candidates.len(), Ordering::SeqCst);
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

fn hash_one(
    candidate: &Candidate,
    root_fds: &[Option<OwnedFd>],
    old: &BTreeMap<String, Entry>,
    sink: &BlobSink<'_>,
    n_read: &AtomicUsize,
) -> Result<Hashed, ScanError> {
    let Some(Some(root)) = root_fds.get(candidate.root) else { return Ok(Hashed::Gone) };
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let resolve =
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV;
    let fd = match rustix::fs::openat2(root, candidate.relative.as_str(), flags, Mode::empty(), resolve) {
        Ok(fd) => fd,
        Err(
            rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP | rustix::io::Errno::XDEV,
        ) => {
            return Ok(Hashed::Gone);
        }
        Err(err) => return Err(io_error(candidate.path.clone(), err)),
    };
    let stat = rustix::fs::fstat(&fd).map_err(|err| io_error(candidate.path.clone(), err))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Ok(Hashed::Gone);
    }
    let key = stat_key(&stat);
    if usize::try_from(stat.st_size).map_or(true, |size| size > MAX_BLOB_BYTES) {
        return Ok(Hashed::TooLarge);
    }
    let mut file = std::fs::File::from(fd);
    let mut bytes = Vec::with_capacity(usize::try_from(stat.st_size).unwrap_or(0));
    let read = (&mut file).take((MAX_BLOB_BYTES + 1) as u64).read_to_end(&mut bytes);
    read.map_err(|source| ScanError::Io { path: candidate.path.clone(), source })?;
    n_read.fetch_add(1, Ordering::SeqCst);
    if bytes.len() > MAX_BLOB_BYTES {
        return Ok(Hashed::TooLarge);
    }
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
