//! The sandbox's disk limit: how much a session's writable directories (its
//! workspace and outputs) may hold, and the watch that enforces it while the
//! session's jail lives.
//!
//! The hosted platform gives each sandbox 10 GB of disk. Here the writable
//! directories are plain directories on the data directory's file system,
//! which a runaway command (or a background job left running between calls)
//! could fill for every session and for the store itself. `RLIMIT_FSIZE`
//! bounds one file, `/tmp` is a tmpfs charged to the jail's memory cgroup;
//! this module bounds the sum. File systems give no portable per-directory
//! quota, so the limit is enforced by measuring: [`disk_usage`] walks the
//! directories through file descriptors (never following a symlink, so a
//! sandbox cannot point the walk elsewhere), adding up allocated blocks (a
//! sparse file counts what it holds, a file with several links once), and a
//! [`Watch`] measures every [`CHECK_INTERVAL`] (or twenty times the last
//! walk's duration, if longer). A jail found over the limit with more in it than at
//! the previous measurement is killed, every process in it: a command running
//! then ends with an error saying why; a jail idle between calls is stopped
//! and the next call's result says so. A jail over the limit that is not
//! growing is left alone, so the agent can delete files to get back under it.
//! What a jail writes between two measurements can go past the limit; the
//! overshoot is one interval's writing. Files deleted while a jail process
//! still holds them open or mapped have no name for the walk: they are found
//! through `/proc/<pid>/fd` and `/proc/<pid>/map_files` of the processes in
//! the jail's cgroup (without cgroups, they are not seen). A jail that starts
//! over its limit runs with a file-size limit of 0, so it can delete files
//! but not write them (otherwise each call's jail could add an overshoot).
//!
//! A walk is bounded: it stops past the entry limit, does not descend below
//! [`MAX_DEPTH`] directories, and cannot enter a directory it may not read.
//! What lies beyond such a [`Cut`] is not counted, so a cut walk cannot tell
//! whether the jail grew. A cut walk therefore counts as over the limit, and
//! growth is then judged by the whole file system the directories are on:
//! a jail whose walk is cut is stopped as soon as that file system holds
//! more bytes or inodes than at the previous measurement, whoever wrote
//! them. Only a jail already far outside the norm (a million files, 256
//! levels of directories) is judged so coarsely, and deleting files (which
//! is what it is asked to do) shrinks the file system.

use std::collections::HashSet;
use std::ffi::CStr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

/// The default disk limit of a sandbox (the hosted platform's 10 GB).
pub const DISK_LIMIT_BYTES: u64 = 10 * 1000 * 1000 * 1000;
/// The default limit on files and directories in a sandbox's writable
/// directories (each costs an inode whatever its size; it also bounds a walk).
pub const MAX_ENTRIES: u64 = 1_000_000;
/// How often a live jail's disk use is measured, at most.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// A walk taking `t` is not repeated within `t` times this, so that measuring
/// a huge tree (a `node_modules` of 50,000 files walks in ≈ 0.1 s) costs a
/// live jail at most a twentieth of a core.
const WALK_COST_FACTOR: u32 = 20;
/// The longest pause between measurements, however long the last took: a
/// jail whose processes hold a million descriptors makes each measurement
/// take seconds (each is looked at for a deleted file), and twenty times
/// that left the watch blind for minutes while a writer filled the disk.
/// At the cap, measuring such a jail costs up to a few tenths of a core.
pub const MAX_CHECK_PAUSE: Duration = Duration::from_secs(30);
/// Directory depth the walk descends to: a directory this many levels below a
/// root cuts the walk (see [`Cut::Depth`]), so a sandbox may nest directories
/// one level less. The walk holds one descriptor per level.
pub const MAX_DEPTH: usize = 256;

/// A sandbox's disk limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskLimit {
    /// Allocated bytes the writable directories may hold.
    pub bytes: u64,
    /// Files, directories and links they may hold.
    pub entries: u64,
}

impl Default for DiskLimit {
    fn default() -> DiskLimit {
        DiskLimit { bytes: DISK_LIMIT_BYTES, entries: MAX_ENTRIES }
    }
}

/// What a walk found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Allocated bytes (blocks × 512) of every entry, each inode once.
    pub bytes: u64,
    /// Entries seen (the walk stops counting past the limit it was given).
    pub entries: u64,
    /// Why the walk did not see everything, if it did not.
    pub cut: Option<Cut>,
    /// What the file systems holding the directories hold in all, whoever
    /// wrote it: how growth is judged when the walk was cut.
    pub device: DeviceUse,
}

/// Why a walk stopped short of seeing everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// More entries than the walk's limit.
    Entries,
    /// Directories below [`MAX_DEPTH`].
    Depth,
    /// A directory the server may not read (the jail changed its mode).
    Unreadable,
    /// The jail's processes hold more open files and mappings than a
    /// measurement looks at ([`MAX_OPEN_FDS_SCANNED`]): a deleted file past
    /// them would not be counted.
    OpenFiles,
    /// The walk failed with this error.
    Failed(rustix::io::Errno),
}

/// Used bytes and inodes of the file systems under a walk's roots (each file
/// system once).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceUse {
    pub bytes: u64,
    pub inodes: u64,
}

impl Usage {
    /// Why this usage is over `limit`, if it is.
    pub fn over(&self, limit: &DiskLimit) -> Option<String> {
        match self.cut {
            Some(Cut::Entries) => {
                return Some(format!(
                    "it holds more than {} files and directories, the sandbox's limit",
                    limit.entries
                ));
            }
            Some(Cut::Depth) => {
                return Some(format!("it nests directories {MAX_DEPTH} levels deep, the sandbox's limit"));
            }
            Some(Cut::Unreadable) => {
                return Some("it holds a directory the disk limit's watch may not read".to_owned());
            }
            Some(Cut::OpenFiles) => {
                return Some(format!(
                    "its processes hold more than {MAX_OPEN_FDS_SCANNED} open files and mappings, more than the disk \
                     limit's watch looks at"
                ));
            }
            Some(Cut::Failed(err)) => return Some(format!("its disk use cannot be measured ({err})")),
            None => {}
        }
        if self.bytes > limit.bytes {
            Some(format!("its files take {} bytes, over the sandbox's disk limit of {} bytes", self.bytes, limit.bytes))
        } else if self.entries > limit.entries {
            Some(format!("it holds more than {} files and directories, the sandbox's limit", limit.entries))
        } else {
            None
        }
    }

    /// Whether `self` holds more than `before`: by what the walks counted
    /// if both saw everything, else by the whole file system.
    fn grew_since(&self, before: &Usage) -> bool {
        if self.cut.is_some() || before.cut.is_some() {
            self.device.bytes > before.device.bytes || self.device.inodes > before.device.inodes
        } else {
            self.bytes > before.bytes || self.entries > before.entries
        }
    }
}

/// Measures the directories under `roots` (missing ones count nothing),
/// stopping once more than `max_entries` entries were seen. Never fails: a
/// walk that cannot go on says why in [`Usage::cut`].
pub fn disk_usage(roots: &[&Path], max_entries: u64) -> Usage {
    let mut usage = Usage { device: device_use(roots), ..Usage::default() };
    if let Err(err) = walk(roots, max_entries, &mut usage) {
        usage.cut = Some(Cut::Failed(err));
    }
    usage
}

/// Used bytes and inodes of the file systems holding `roots`, each once
/// (missing roots, and file systems that do not say, count nothing).
fn device_use(roots: &[&Path]) -> DeviceUse {
    let mut seen = HashSet::new();
    let mut device = DeviceUse::default();
    for root in roots {
        let Ok(stat) = rustix::fs::lstat(*root) else { continue };
        if !seen.insert(stat.st_dev) {
            continue;
        }
        let Ok(fs) = rustix::fs::statvfs(*root) else { continue };
        let used_blocks = fs.f_blocks.saturating_sub(fs.f_bfree);
        device.bytes = device.bytes.saturating_add(used_blocks.saturating_mul(fs.f_frsize));
        device.inodes = device.inodes.saturating_add(fs.f_files.saturating_sub(fs.f_ffree));
    }
    device
}

/// The walk of [`disk_usage`]: adds what it sees to `usage`, sets its cut
/// where it stops short, fails on an unexpected error.
fn walk(roots: &[&Path], max_entries: u64, usage: &mut Usage) -> rustix::io::Result<()> {
    let mut seen_links = HashSet::new();
    for root in roots {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match rustix::fs::open(*root, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => continue,
            Err(err) => return Err(err),
        };
        let stat = rustix::fs::fstat(&fd)?;
        usage.bytes = usage.bytes.saturating_add(allocated(&stat));
        // Depth first, one open directory and its unread names per level.
        let names = crate::workspace::scan::read_names(&fd)?;
        let mut stack = vec![(fd, names)];
        loop {
            let depth = stack.len();
            let Some((dir, names)) = stack.last_mut() else { break };
            let Some(name) = names.pop() else {
                stack.pop();
                continue;
            };
            usage.entries += 1;
            if usage.entries > max_entries {
                usage.cut = Some(Cut::Entries);
                return Ok(());
            }
            let stat = match rustix::fs::statat(&*dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => stat,
                Err(rustix::io::Errno::NOENT) => continue,
                Err(rustix::io::Errno::ACCESS | rustix::io::Errno::PERM) => {
                    usage.cut.get_or_insert(Cut::Unreadable);
                    continue;
                }
                Err(err) => return Err(err),
            };
            let is_dir = FileType::from_raw_mode(stat.st_mode) == FileType::Directory;
            if is_dir || stat.st_nlink <= 1 || seen_links.insert((stat.st_dev, stat.st_ino)) {
                usage.bytes = usage.bytes.saturating_add(allocated(&stat));
            }
            if !is_dir {
                continue;
            }
            if depth >= MAX_DEPTH {
                usage.cut.get_or_insert(Cut::Depth);
                continue;
            }
            let sub = match open_dir_at(&*dir, name.as_c_str()) {
                Ok(Some(sub)) => sub,
                Ok(None) => continue,
                Err(rustix::io::Errno::ACCESS | rustix::io::Errno::PERM) => {
                    usage.cut.get_or_insert(Cut::Unreadable);
                    continue;
                }
                Err(err) => return Err(err),
            };
            let names = match crate::workspace::scan::read_names(&sub) {
                Ok(names) => names,
                Err(rustix::io::Errno::NOENT) => continue,
                Err(rustix::io::Errno::ACCESS | rustix::io::Errno::PERM) => {
                    usage.cut.get_or_insert(Cut::Unreadable);
                    continue;
                }
                Err(err) => return Err(err),
            };
            stack.push((sub, names));
        }
    }
    Ok(())
}

/// Entries of `/proc/<pid>/fd` and lines of `/proc/<pid>/maps` looked at
/// per measurement, at most. A jail may hold more (its pids limit × its
/// open-files limit of descriptors, and mappings besides): past this the
/// measurement is cut ([`Cut::OpenFiles`]), so it counts as over the limit
/// and growth is judged by the file system, as for a cut walk.
pub const MAX_OPEN_FDS_SCANNED: usize = 1 << 20;

/// What [`unlinked_open_bytes`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unlinked {
    pub bytes: u64,
    /// Whether it looked at every descriptor and mapping (false: stopped
    /// at [`MAX_OPEN_FDS_SCANNED`]).
    pub complete: bool,
}

/// Bytes allocated to regular files on the device `dev` that the processes
/// `pids` hold open, or mapped, after they were deleted: such a file has no
/// name for the walk to find, yet a process can go on filling it (through a
/// descriptor, or through a shared mapping after closing the descriptor).
/// Each inode once; processes that end meanwhile are skipped. Mappings are
/// read through `/proc/<pid>/map_files`, which needs `CAP_SYS_ADMIN` (a
/// root server): without it mapped files are not seen.
pub fn unlinked_open_bytes(pids: &[i32], dev: u64) -> Unlinked {
    use std::os::unix::fs::MetadataExt as _;
    let mut seen = HashSet::new();
    let mut bytes = 0u64;
    let mut scanned = 0usize;
    let mut count = |path: &Path, bytes: &mut u64| {
        // The link leads to the open inode itself, name or none.
        if let Ok(meta) = std::fs::metadata(path)
            && meta.is_file()
            && meta.nlink() == 0
            && meta.dev() == dev
            && seen.insert(meta.ino())
        {
            *bytes = bytes.saturating_add(meta.blocks().saturating_mul(512));
        }
    };
    for pid in pids {
        if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            for fd in fds.flatten() {
                scanned += 1;
                if scanned > MAX_OPEN_FDS_SCANNED {
                    return Unlinked { bytes, complete: false };
                }
                let deleted = std::fs::read_link(fd.path())
                    .is_ok_and(|target| target.as_os_str().as_encoded_bytes().ends_with(DELETED));
                if deleted {
                    count(&fd.path(), &mut bytes);
                }
            }
        }
        let Ok(maps) = std::fs::read(format!("/proc/{pid}/maps")) else { continue };
        for line in maps.split(|b| *b == b'\n') {
            scanned += 1;
            if scanned > MAX_OPEN_FDS_SCANNED {
                return Unlinked { bytes, complete: false };
            }
            if !line.ends_with(DELETED) {
                continue;
            }
            let Some(range) = line.split(|b| *b == b' ').next().and_then(|range| std::str::from_utf8(range).ok())
            else {
                continue;
            };
            count(Path::new(&format!("/proc/{pid}/map_files/{range}")), &mut bytes);
        }
    }
    Unlinked { bytes, complete: true }
}

/// How `/proc` marks the name of a file that was deleted.
const DELETED: &[u8] = b" (deleted)";

/// Opens the directory `name` beneath `dir` without following a symlink;
/// `None` if it was replaced or removed since it was looked at.
fn open_dir_at(dir: &std::os::fd::OwnedFd, name: &CStr) -> rustix::io::Result<Option<std::os::fd::OwnedFd>> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Ok(sub) => Ok(Some(sub)),
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => Ok(None),
        Err(err) => Err(err),
    }
}

/// The bytes a stat says its inode has allocated.
fn allocated(stat: &rustix::fs::Stat) -> u64 {
    u64::try_from(stat.st_blocks).unwrap_or(0).saturating_mul(512)
}

/// The disk watch of one live jail: it measures, decides, and remembers why
/// it stopped the jail.
#[derive(Debug)]
pub struct Watch {
    limit: DiskLimit,
    state: Mutex<WatchState>,
    /// Woken (with a stored permit) when the jail goes over its limit.
    over: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct WatchState {
    /// The last measurement, if one was made.
    last: Option<Usage>,
    /// Why the jail must stop, once it must.
    exceeded: Option<String>,
}

impl Watch {
    pub fn new(limit: DiskLimit) -> Watch {
        Watch { limit, state: Mutex::new(WatchState::default()), over: tokio::sync::Notify::new() }
    }

    /// Takes a measurement: returns why the jail must stop if it is over its
    /// limit and holds more than at the previous measurement (the first
    /// measurement is the baseline a jail starts from).
    pub fn observe(&self, usage: Usage) -> Option<String> {
        let mut state = match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        let before = state.last.replace(usage);
        if state.exceeded.is_some() {
            return state.exceeded.clone();
        }
        let grew = before.is_some_and(|before| usage.grew_since(&before));
        let reason = usage.over(&self.limit).filter(|_| grew)?;
        state.exceeded = Some(reason.clone());
        drop(state);
        self.over.notify_one();
        Some(reason)
    }

    /// The watch cannot measure any more (a bug panicked in it): the jail is
    /// treated as over its limit, since nothing bounds its disk use now.
    /// Returns the reason it is stopped for.
    pub fn give_up(&self) -> String {
        let mut state = match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        let reason = state
            .exceeded
            .get_or_insert_with(|| "its disk use could no longer be measured, so it counts as over".to_owned())
            .clone();
        drop(state);
        self.over.notify_one();
        reason
    }

    /// Why the jail went over its limit, if it did.
    pub fn exceeded(&self) -> Option<String> {
        match self.state.lock() {
            Ok(state) => state.exceeded.clone(),
            Err(poisoned) => poisoned.into_inner().exceeded.clone(),
        }
    }

    /// Resolves once the jail has gone over its limit.
    pub async fn went_over(&self) {
        self.over.notified().await;
    }

    pub fn limit(&self) -> DiskLimit {
        self.limit
    }
}

/// The pause before the next measurement, given how long the last walk took.
pub fn next_check_after(walk: Duration) -> Duration {
    pause_after(CHECK_INTERVAL, walk)
}

/// The pause before the next measurement of a watch measuring every
/// `interval`, given how long the last walk took: at least `interval`, and
/// long enough that walking costs at most a [`WALK_COST_FACTOR`]th of a core,
/// but never more than [`MAX_CHECK_PAUSE`] (or `interval`, if longer).
pub fn pause_after(interval: Duration, walk: Duration) -> Duration {
    interval.max(walk.saturating_mul(WALK_COST_FACTOR).min(MAX_CHECK_PAUSE))
}

/// Measures `roots` on a blocking thread, adding what the processes listed
/// in the cgroup file `procs` (if any) hold open on the first root's device
/// after deleting it; the usage, and how long it took.
pub async fn measure(
    roots: Vec<std::path::PathBuf>,
    procs: Option<std::path::PathBuf>,
    max_entries: u64,
) -> (Usage, Duration) {
    let started = Instant::now();
    let walked = tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::MetadataExt as _;
        let paths: Vec<&Path> = roots.iter().map(std::path::PathBuf::as_path).collect();
        let mut usage = disk_usage(&paths, max_entries);
        let pids: Vec<i32> = procs
            .and_then(|procs| std::fs::read_to_string(procs).ok())
            .map(|listed| listed.lines().filter_map(|line| line.trim().parse().ok()).collect())
            .unwrap_or_default();
        if let Some(dev) = roots.first().and_then(|root| std::fs::symlink_metadata(root).ok()).map(|m| m.dev()) {
            let unlinked = unlinked_open_bytes(&pids, dev);
            usage.bytes = usage.bytes.saturating_add(unlinked.bytes);
            if !unlinked.complete {
                usage.cut.get_or_insert(Cut::OpenFiles);
            }
        }
        usage
    })
    .await;
    // The blocking task only ends early if it panicked or the runtime is
    // shutting down: judged like any walk that failed.
    let usage =
        walked.unwrap_or_else(|_| Usage { cut: Some(Cut::Failed(rustix::io::Errno::CANCELED)), ..Usage::default() });
    (usage, started.elapsed())
}

#[cfg(test)]
#[path = "disk_tests.rs"]
mod tests;
