//! The sled engine: sled for the indexes and resources, segment files for the
//! write-ahead log, in one data directory (`sled/` and `log/`).
//!
//! sled is never on the commit path: the write-ahead log makes appends
//! durable, and sled is brought up to date in the background and made durable
//! at checkpoints. sled 0.34.7 still needs a real durability barrier for those:
//! its `flush()` writes its log with `sync_file_range`, which flushes neither
//! the disk's write cache nor file metadata, writes values over ~128 KiB to
//! separate files in `blobs/` without any fsync, and renames snapshots without
//! fsyncing the directory. [`SledEngine::sync`] therefore runs `flush()` and then
//! `fdatasync`s the `db` file, `fsync`s every file that appeared in the data
//! directory or `blobs/` since the last barrier, and `fsync`s a directory whose
//! entries changed. See `docs/format.md` for the crash analysis.

use std::collections::BTreeSet;
use std::fs::File;
use std::ops::Bound;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use super::files::FsLogDir;
use super::{Direction, Engine, LogDir, Pairs, Tree, Write};
use crate::error::{Error, OpenError};

/// sled's directory inside a data directory.
pub const SLED_DIR: &str = "sled";

/// Where a new sled directory is built before it is renamed to [`SLED_DIR`].
pub const SLED_CREATING_DIR: &str = "sled.creating";

/// The write-ahead log's directory inside a data directory.
pub const LOG_DIR: &str = "log";

/// sled's cache. Its default is 1 GiB; the server sets this explicitly.
pub const DEFAULT_CACHE_BYTES: u64 = 256 * 1024 * 1024;

/// How long opening waits for the data directory's lock ([`DataDirLock`])
/// and for sled's own (see [`open_waiting_for_lock`]).
pub const LOCK_WAIT: Duration = Duration::from_secs(10);

/// The data directory's lock file (see [`DataDirLock`]).
pub const DATA_LOCK_FILE: &str = "lock";

/// A directory mtime younger than this may hide a later change in the same
/// coarse timestamp tick, so it is not trusted to skip a rescan.
const MTIME_TRUST_AFTER: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct SledOptions {
    pub cache_capacity_bytes: u64,
}

impl Default for SledOptions {
    fn default() -> Self {
        SledOptions { cache_capacity_bytes: DEFAULT_CACHE_BYTES }
    }
}

#[derive(Debug)]
pub struct SledEngine {
    db: sled::Db,
    trees: [sled::Tree; 4],
    dir: PathBuf,
    log: Arc<FsLogDir>,
    sync_state: Mutex<SyncState>,
    /// Last, so it is released after sled's handle is dropped.
    _lock: DataDirLock,
}

/// The one process that has a data directory's store open holds an exclusive
/// `flock` on its [`DATA_LOCK_FILE`], taken before anything in the directory
/// is created or removed and released when the engine is dropped (or the
/// process dies). sled locks its own `db` file too, but only once it opens:
/// two processes creating a store at once would otherwise remove each other's
/// `sled.creating`, or a finished `sled`.
#[derive(Debug)]
struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock of the data directory `data`, waiting up to `wait` for
    /// it (a store of this process that was just dropped releases it only once
    /// its last thread lets go of the engine).
    fn acquire(data: &Path, wait: Duration) -> Result<DataDirLock, OpenError> {
        let path = data.join(DATA_LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(super::files::PRIVATE_FILE_MODE)
            .open(&path)
            .map_err(|err| OpenError::Io { path: path.clone(), reason: format!("opening the lock file: {err}") })?;
        let started = Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(DataDirLock { _file: file }),
                Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < wait => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                Err(std::fs::TryLockError::WouldBlock) => return Err(OpenError::InUse { path: data.to_owned() }),
                Err(std::fs::TryLockError::Error(err)) => {
                    return Err(OpenError::Io { path, reason: format!("locking: {err}") });
                }
            }
        }
    }
}

#[derive(Debug)]
struct SyncState {
    db_file: File,
    dirs: Vec<DirState>,
}

/// What the barrier last saw of one directory.
#[derive(Debug)]
struct DirState {
    path: PathBuf,
    known: BTreeSet<PathBuf>,
    trusted_mtime: Option<SystemTime>,
}

impl SledEngine {
    /// Opens (or creates) the engine in the data directory `data`: sled in
    /// `data/sled`, the log segments in `data/log`.
    pub fn open(data: &Path, options: &SledOptions) -> Result<SledEngine, OpenError> {
        let lock = DataDirLock::acquire(data, LOCK_WAIT)?;
        let dir = &data.join(SLED_DIR);
        let io_err = |reason: String| OpenError::Io { path: dir.to_owned(), reason };
        let creating = data.join(SLED_CREATING_DIR);
        if !holds_a_database(dir).map_err(|err| io_err(err.to_string()))? {
            create_sled_dir(&creating, dir, options).map_err(io_err)?;
        } else {
            remove_if_present(&creating).map_err(|err| io_err(format!("removing {}: {err}", creating.display())))?;
        }
        // Private: sled creates its files with the process umask's modes, so
        // the directory is what keeps them from other users.
        super::files::make_private_dir(dir).map_err(|err| io_err(err.to_string()))?;
        let config = sled_config(dir, options);
        let db = open_waiting_for_lock(&config, dir)
            .map_err(|err| OpenError::Engine { path: dir.to_owned(), reason: err.to_string() })?;
        // The files sled just created (db, conf, blobs/) get private modes too.
        super::files::make_private_dir(dir).map_err(|err| io_err(err.to_string()))?;
        let open_tree = |tree: Tree| {
            db.open_tree(tree.name()).map_err(|err| OpenError::Engine { path: dir.to_owned(), reason: err.to_string() })
        };
        let trees =
            [open_tree(Tree::Meta)?, open_tree(Tree::Log)?, open_tree(Tree::Blobs)?, open_tree(Tree::Resources)?];
        let db_file = File::open(dir.join("db")).map_err(|err| io_err(format!("opening sled's db file: {err}")))?;
        let dirs = vec![DirState::new(dir.to_owned()), DirState::new(dir.join("blobs"))];
        let log_path = data.join(LOG_DIR);
        let log = FsLogDir::open(&log_path).map_err(|err| OpenError::Io {
            path: log_path.clone(),
            reason: format!("opening the log directory: {err}"),
        })?;
        let engine = SledEngine {
            db,
            trees,
            dir: dir.to_owned(),
            log: Arc::new(log),
            sync_state: Mutex::new(SyncState { db_file, dirs }),
            _lock: lock,
        };
        engine.sync().map_err(|err| io_err(format!("initial durability barrier: {err}")))?;
        Ok(engine)
    }

    /// sled's own directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The log segments' directory.
    pub fn files(&self) -> &FsLogDir {
        &self.log
    }

    fn tree(&self, tree: Tree) -> &sled::Tree {
        match tree {
            Tree::Meta => &self.trees[0],
            Tree::Log => &self.trees[1],
            Tree::Blobs => &self.trees[2],
            Tree::Resources => &self.trees[3],
        }
    }

    fn lock_sync(&self) -> Result<MutexGuard<'_, SyncState>, Error> {
        self.sync_state.lock().map_err(|_| Error::Engine("sync state lock poisoned".to_owned()))
    }
}

impl Engine for SledEngine {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.tree(tree).get(key)?.map(|value| value.to_vec()))
    }

    fn range(
        &self,
        tree: Tree,
        range: (Bound<Vec<u8>>, Bound<Vec<u8>>),
        direction: Direction,
        limit: usize,
    ) -> Result<Pairs, Error> {
        let iter = self.tree(tree).range::<Vec<u8>, _>(range);
        let collect = |item: Result<(sled::IVec, sled::IVec), sled::Error>| {
            item.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(Error::from)
        };
        match direction {
            Direction::Forward => iter.take(limit).map(collect).collect(),
            Direction::Backward => iter.rev().take(limit).map(collect).collect(),
        }
    }

    fn range_within(
        &self,
        tree: Tree,
        range: (Bound<Vec<u8>>, Bound<Vec<u8>>),
        direction: Direction,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Pairs, Error> {
        let iter = self.tree(tree).range::<Vec<u8>, _>(range);
        let size = |(k, v): &(sled::IVec, sled::IVec)| k.len() + v.len();
        let copy = |(k, v): (sled::IVec, sled::IVec)| (k.to_vec(), v.to_vec());
        match direction {
            Direction::Forward => super::take_within(iter, limit, max_bytes, size, copy),
            Direction::Backward => super::take_within(iter.rev(), limit, max_bytes, size, copy),
        }
    }

    fn apply(&self, tree: Tree, writes: Vec<Write>) -> Result<(), Error> {
        let mut batch = sled::Batch::default();
        for (key, value) in writes {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        self.tree(tree).apply_batch(batch)?;
        Ok(())
    }

    fn sync(&self) -> Result<(), Error> {
        let mut state = self.lock_sync()?;
        self.db.flush()?;
        let io = |what: &str, err: std::io::Error| Error::Engine(format!("{what}: {err}"));
        state.db_file.sync_data().map_err(|err| io("fdatasync of sled's db file", err))?;
        for dir in &mut state.dirs {
            dir.sync_new_entries().map_err(|err| io("fsync of new files", err))?;
        }
        Ok(())
    }

    fn log_dir(&self) -> Arc<dyn LogDir> {
        Arc::clone(&self.log) as Arc<dyn LogDir>
    }

    fn size_on_disk(&self) -> Result<u64, Error> {
        Ok(self.db.size_on_disk()?)
    }
}

impl DirState {
    fn new(path: PathBuf) -> DirState {
        DirState { path, known: BTreeSet::new(), trusted_mtime: None }
    }

    /// fsyncs files that appeared since the last call, then the directory if its
    /// entries changed. Skips the listing when the directory's mtime is unchanged
    /// and old enough to be trusted.
    fn sync_new_entries(&mut self) -> std::io::Result<()> {
        let meta = match std::fs::metadata(&self.path) {
            Ok(meta) => meta,
            // `blobs/` exists only once sled wrote a large value.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(err),
        };
        let mtime = meta.modified()?;
        if self.trusted_mtime == Some(mtime) {
            return Ok(());
        }
        let mut current = BTreeSet::new();
        for entry in std::fs::read_dir(&self.path)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                current.insert(entry.path());
            }
        }
        for path in current.difference(&self.known) {
            match File::open(path) {
                Ok(file) => file.sync_all()?,
                // sled may have removed it (an old snapshot, a collected blob) meanwhile.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
        }
        if current != self.known {
            fsync_dir(&self.path)?;
        }
        self.known = current;
        let age = SystemTime::now().duration_since(mtime).unwrap_or(Duration::ZERO);
        self.trusted_mtime = (age >= MTIME_TRUST_AFTER).then_some(mtime);
        Ok(())
    }
}

/// Opens sled, waiting up to [`LOCK_WAIT`] for its file lock: a handle of this
/// process that was just dropped keeps the lock until sled's background
/// threads finish. Another process holding it (a running server) still fails,
/// after the wait, with sled's lock error.
///
/// Before sled opens, snapshot files sled never finished are settled (see
/// [`settle_unfinished_snapshots`]).
fn open_waiting_for_lock(config: &sled::Config, dir: &Path) -> Result<sled::Db, sled::Error> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        if !settle_unfinished_snapshots(dir)? && started.elapsed() < LOCK_WAIT {
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(200));
            continue;
        }
        match config.open() {
            // sled reports a held lock as an `Other` IO error with this text.
            Err(sled::Error::Io(err))
                if err.to_string().contains("could not acquire lock") && started.elapsed() < LOCK_WAIT =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

/// Settles the snapshots sled was writing when it stopped, returning false
/// (and touching nothing) while another handle holds sled's lock.
///
/// sled 0.34.7 writes a snapshot to `snap.<lsn>.generating`, syncs it and
/// renames it to `snap.<lsn>`, but at open it reads the highest-named `snap.*`
/// file, `.generating` ones included: after a crash in the middle of writing
/// one, it reads that partial file and refuses to open ("Read corrupted data";
/// spacejam/sled#1527, found here by `tests/tests/storage_faults.rs`). A
/// partial one (its CRC-32 trailer does not check) was never in effect and is
/// removed: the state of a crash just before its creation. A complete one is
/// what sled itself would read: it is synced and renamed into place, the
/// state of a crash just after the rename (on a file system without a
/// journal, the rename may be lost while the older snapshot's removal after
/// it is not). This happens under sled's own `flock` on `db` (taken and
/// released here), so a snapshot a running handle is writing is never
/// touched.
fn settle_unfinished_snapshots(dir: &Path) -> std::io::Result<bool> {
    let db = match File::open(dir.join("db")) {
        Ok(db) => db,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(err) => return Err(err),
    };
    match db.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Ok(false),
        Err(std::fs::TryLockError::Error(err)) => return Err(err),
    }
    let mut changed = false;
    for item in std::fs::read_dir(dir)? {
        let item = item?;
        let name = item.file_name();
        let name = name.to_string_lossy();
        let Some(finished_name) = name.strip_prefix("snap.").and_then(|rest| rest.strip_suffix(".generating")) else {
            continue;
        };
        let path = item.path();
        if snapshot_is_complete(&std::fs::read(&path)?) {
            // Complete in the page cache is not complete on disk: sled syncs
            // it before its rename, and so does this.
            File::open(&path)?.sync_all()?;
            std::fs::rename(&path, dir.join(format!("snap.{finished_name}")))?;
        } else {
            std::fs::remove_file(&path)?;
        }
        changed = true;
    }
    if changed {
        fsync_dir(dir)?;
    }
    // Dropping `db` releases the lock for sled to take.
    Ok(true)
}

/// The trailer sled 0.34.7 ends a snapshot file with: the snapshot's length
/// (8 bytes; sled reads it only when compressing) and the CRC-32 of its bytes
/// (4 bytes, little-endian).
const SNAPSHOT_TRAILER_BYTES: usize = 12;
const SNAPSHOT_CRC_AT: usize = 8;

/// Whether a snapshot file holds all sled wrote, as sled 0.34.7 checks it
/// when it reads one: some bytes, then the trailer, whose CRC-32 matches them.
fn snapshot_is_complete(file: &[u8]) -> bool {
    let Some(body_len) = file.len().checked_sub(SNAPSHOT_TRAILER_BYTES).filter(|n| *n > 0) else { return false };
    let (body, trailer) = file.split_at(body_len);
    let Ok(crc) = <[u8; 4]>::try_from(&trailer[SNAPSHOT_CRC_AT..]) else { return false };
    crc32fast::hash(body) == u32::from_le_bytes(crc)
}

fn sled_config(dir: &Path, options: &SledOptions) -> sled::Config {
    sled::Config::new()
        .path(dir)
        .cache_capacity(options.cache_capacity_bytes)
        .mode(sled::Mode::HighThroughput)
        // Every write goes through our barrier; sled's own periodic flusher
        // would only add fsyncs at moments we do not control.
        .flush_every_ms(None)
}

/// Creates sled's directory `dir` so that a crash leaves either none or a
/// complete one. sled writes its `conf` file and its first pages with no
/// barrier, and a directory a crash cut short there never opens again (sled
/// reads it as corrupted data; found by `tests/tests/storage_faults.rs`). So
/// the new database is built in `creating` (any leftover of an earlier try is
/// removed first), made durable and closed, and only then renamed to `dir`,
/// with the data directory synced after the rename.
///
/// A `dir` that [`holds_a_database`] says holds none (what an older release's
/// crash at the same point left) is removed first.
fn create_sled_dir(creating: &Path, dir: &Path, options: &SledOptions) -> Result<(), String> {
    let io =
        |what: &str, err: std::io::Error| format!("creating the database in {}: {what}: {err}", creating.display());
    remove_if_present(creating).map_err(|err| io("removing a leftover", err))?;
    remove_if_present(dir).map_err(|err| io("removing a database directory with no database", err))?;
    super::files::make_private_dir(creating).map_err(|err| io("making the directory", err))?;
    // sled's handle panics when its closing `fsync` fails (sled 0.34.7
    // `Log::drop`): here that is an error of the creation, not of the process.
    let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<(), String> {
        let db = open_waiting_for_lock(&sled_config(creating, options), creating).map_err(|err| err.to_string())?;
        db.flush().map_err(|err| err.to_string())?;
        drop(db);
        Ok(())
    }));
    match built {
        Ok(result) => result.map_err(|reason| format!("creating the database in {}: {reason}", creating.display()))?,
        Err(_) => return Err(format!("creating the database in {}: sled failed while closing it", creating.display())),
    }
    let mut synced = 0;
    for sub in [creating.to_owned(), creating.join("blobs")] {
        if !sub.try_exists().map_err(|err| io("listing", err))? {
            continue;
        }
        for item in std::fs::read_dir(&sub).map_err(|err| io("listing", err))? {
            let item = item.map_err(|err| io("listing", err))?;
            if item.file_type().map_err(|err| io("listing", err))?.is_file() {
                File::open(item.path()).and_then(|file| file.sync_all()).map_err(|err| io("fsync", err))?;
                synced += 1;
            }
        }
        fsync_dir(&sub).map_err(|err| io("fsync of the directory", err))?;
    }
    if synced == 0 {
        return Err(format!("sled wrote no files in {}", creating.display()));
    }
    std::fs::rename(creating, dir).map_err(|err| io("renaming it into place", err))?;
    let data = dir.parent().unwrap_or(Path::new("."));
    fsync_dir(data).map_err(|err| io("fsync of the data directory", err))
}

/// Whether sled's directory `dir` holds a database: false when it is missing,
/// and when all it holds is what a crash before sled created its `db` file
/// leaves (a `conf` file, an empty `blobs` directory). Anything else is left
/// for sled to open, or to refuse.
fn holds_a_database(dir: &Path) -> std::io::Result<bool> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(err),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let empty_blobs = name == "blobs" && std::fs::read_dir(entry.path())?.next().is_none();
        if !(name == "conf" || empty_blobs) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Removes a directory tree, if there is one.
fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn fsync_dir(path: &Path) -> std::io::Result<()> {
    File::open(path)?.sync_all()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use super::{DataDirLock, settle_unfinished_snapshots};
    use crate::error::OpenError;

    /// A snapshot file as sled 0.34.7 writes one: its bytes, their length,
    /// their CRC-32.
    fn snapshot(body: &[u8]) -> Vec<u8> {
        let mut file = body.to_vec();
        file.extend_from_slice(&(body.len() as u64).to_le_bytes());
        file.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        file
    }

    /// Goal: of the snapshots sled never renamed, a partial one is removed
    /// and a complete one is renamed into place (what sled would read in
    /// either case, had it written them atomically); finished ones are left
    /// alone, and nothing is touched while another handle holds sled's lock.
    #[test]
    fn unfinished_snapshots_are_removed_when_partial_and_renamed_when_complete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        std::fs::write(path.join("db"), b"").unwrap();
        let complete = snapshot(b"the pages of a snapshot");
        std::fs::write(path.join("snap.0000000000000010"), snapshot(b"an older one")).unwrap();
        std::fs::write(path.join("snap.0000000000000020.generating"), &complete).unwrap();
        std::fs::write(path.join("snap.0000000000000030.generating"), &complete[..complete.len() - 1]).unwrap();

        let held = std::fs::File::open(path.join("db")).unwrap();
        held.try_lock().unwrap();
        assert!(!settle_unfinished_snapshots(path).unwrap(), "went ahead under another handle's lock");
        assert!(path.join("snap.0000000000000030.generating").exists());
        drop(held);

        assert!(settle_unfinished_snapshots(path).unwrap());
        let mut names: Vec<String> =
            std::fs::read_dir(path).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, ["db", "snap.0000000000000010", "snap.0000000000000020"]);
        assert_eq!(std::fs::read(path.join("snap.0000000000000020")).unwrap(), complete);
    }

    /// Goal: one holder of a data directory at a time, another process's open
    /// file description (an `flock` is per open, so this process's second open
    /// stands for one) is refused with `InUse`, and dropping the holder frees it.
    #[test]
    fn a_data_directory_has_one_holder_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let held = DataDirLock::acquire(dir.path(), std::time::Duration::ZERO).unwrap();
        match DataDirLock::acquire(dir.path(), std::time::Duration::ZERO) {
            Err(OpenError::InUse { path }) => assert_eq!(path, dir.path()),
            other => panic!("a second holder: {other:?}"),
        }
        drop(held);
        DataDirLock::acquire(dir.path(), std::time::Duration::ZERO).unwrap();
    }
}
