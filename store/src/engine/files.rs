//! Segment files on disk: the write-ahead log's [`LogDir`] for the sled store.
//!
//! Segment `n` is the file `{n:016x}.wal` in the log directory. A created file
//! is `fsync`ed together with its directory before it is used, so its
//! directory entry survives a power loss; after that only `fdatasync` is
//! needed. The directory, and its parent (for its own entry), are also
//! `fsync`ed when it is opened (an entry a crash left unsynced, created or
//! renamed just before it, is made durable before the log writes on), and the
//! directory again when the log starts writing a segment it did not create
//! (one prepared ahead, whose own directory sync may have failed).
//! Open files are kept in a small cache so that reads do not reopen them.
//!
//! The store is private to the server's user: the log and sled directories
//! are created mode [`PRIVATE_DIR_MODE`] and the segments
//! [`PRIVATE_FILE_MODE`], and opening a store made before that restricts them
//! ([`make_private_dir`]). The data directory itself must stay traversable by
//! the sandbox user, so its own mode cannot protect them.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{LogDir, SegmentFile};

/// File name suffix of a segment.
pub const SEGMENT_SUFFIX: &str = "wal";

/// Suffix of a segment being prepared (zero-filled) before it is renamed into place.
const PREPARING_SUFFIX: &str = "prep";

/// Bytes of zeroes written per `write` while preparing a segment.
const ZERO_CHUNK_BYTES: usize = 1 << 20;

/// Segment files kept open. Reads of old segments reopen them beyond this;
/// bounded so that a store of thousands of segments does not exhaust file
/// descriptors.
const MAX_OPEN_SEGMENTS: usize = 64;

/// A directory of segment files.
#[derive(Debug)]
pub struct FsLogDir {
    path: PathBuf,
    open: Mutex<BTreeMap<u64, Arc<FsSegment>>>,
}

/// The mode of the store's directories: the server's user only.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// The mode of the store's files.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Creates the directory `path` (and its missing parents) mode
/// [`PRIVATE_DIR_MODE`], or restricts an existing one to it; then restricts
/// each entry directly in it that others could reach (files to
/// [`PRIVATE_FILE_MODE`], directories to [`PRIVATE_DIR_MODE`]; symbolic links
/// are left alone). Returns whether it created the directory.
pub fn make_private_dir(path: &Path) -> io::Result<bool> {
    let created = match std::fs::DirBuilder::new().recursive(false).mode(PRIVATE_DIR_MODE).create(path) {
        Ok(()) => true,
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => false,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::DirBuilder::new().mode(PRIVATE_DIR_MODE).create(path)?;
            true
        }
        Err(err) => return Err(err),
    };
    restrict(path, PRIVATE_DIR_MODE)?;
    for item in std::fs::read_dir(path)? {
        let item = item?;
        let kind = item.file_type()?;
        if kind.is_dir() {
            restrict(&item.path(), PRIVATE_DIR_MODE)?;
        } else if kind.is_file() {
            restrict(&item.path(), PRIVATE_FILE_MODE)?;
        }
    }
    Ok(created)
}

/// Creates the directory `path` and its missing ancestors (mode `mode`), each
/// synced into its parent as it is made, and syncs `path`'s parent even when
/// it existed (a crash may have come between an earlier creation and its
/// sync): a power loss cannot then take away a directory the caller goes on
/// to write in.
pub fn create_dir_durably(path: &Path, mode: u32) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = path;
    while !at.as_os_str().is_empty() && !at.try_exists()? {
        missing.push(at);
        match at.parent() {
            Some(parent) => at = parent,
            None => break,
        }
    }
    let parent_of = |dir: &Path| -> PathBuf {
        dir.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_owned()
    };
    let created_path = !missing.is_empty();
    for dir in missing.into_iter().rev() {
        match std::fs::DirBuilder::new().mode(mode).create(dir) {
            Ok(()) => {}
            // Made meanwhile by someone else: synced below all the same.
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(err),
        }
        File::open(parent_of(dir))?.sync_all()?;
    }
    if !created_path {
        File::open(parent_of(path))?.sync_all()?;
    }
    Ok(())
}

/// Takes away the group's and others' permissions of `path` (not a symbolic
/// link), leaving `mode` if it had any of them.
fn restrict(path: &Path, mode: u32) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() || meta.mode() & 0o077 == 0 {
        return Ok(());
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[derive(Debug)]
pub struct FsSegment {
    file: File,
}

impl FsLogDir {
    /// Opens (creating if needed, durably) the directory `path`.
    pub fn open(path: &Path) -> io::Result<FsLogDir> {
        make_private_dir(path)?;
        // Its entry too, created now or by a process a crash stopped before
        // its sync.
        if let Some(parent) = path.parent() {
            File::open(parent)?.sync_all()?;
        }
        // A preparation a crash interrupted is useless: start it over when needed.
        for item in std::fs::read_dir(path)? {
            let item = item?;
            if item.file_name().to_str().is_some_and(|n| n.ends_with(PREPARING_SUFFIX)) {
                std::fs::remove_file(item.path())?;
            }
        }
        File::open(path)?.sync_all()?;
        Ok(FsLogDir { path: path.to_owned(), open: Mutex::new(BTreeMap::new()) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of segment `number`.
    pub fn segment_path(&self, number: u64) -> PathBuf {
        self.path.join(format!("{number:016x}.{SEGMENT_SUFFIX}"))
    }

    fn lock(&self) -> io::Result<MutexGuard<'_, BTreeMap<u64, Arc<FsSegment>>>> {
        self.open.lock().map_err(|_| io::Error::other("segment cache lock poisoned"))
    }
}

impl LogDir for FsLogDir {
    fn segments(&self) -> io::Result<Vec<u64>> {
        let mut out = Vec::new();
        for item in std::fs::read_dir(&self.path)? {
            let name = item?.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX).and_then(|s| s.strip_suffix('.')) else { continue };
            if stem.len() == 16
                && let Ok(number) = u64::from_str_radix(stem, 16)
            {
                out.push(number);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    fn open_segment(&self, number: u64, create: bool) -> io::Result<Arc<dyn SegmentFile>> {
        let mut open = self.lock()?;
        if let Some(segment) = open.get(&number) {
            if create {
                // The writer starting it (see below), though a reader opened it first.
                File::open(&self.path)?.sync_all()?;
            }
            return Ok(Arc::clone(segment) as Arc<dyn SegmentFile>);
        }
        let path = self.segment_path(number);
        let exists = path.exists();
        if !exists && !create {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no segment {}", path.display())));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .mode(PRIVATE_FILE_MODE)
            .open(&path)?;
        if !exists {
            file.sync_all()?;
        }
        if create {
            // The file's entry must survive a power loss before anything
            // written to it is acknowledged: a new one, or one prepared ahead
            // (its rename's directory sync may have failed unnoticed).
            File::open(&self.path)?.sync_all()?;
        }
        let segment = Arc::new(FsSegment { file });
        if open.len() >= MAX_OPEN_SEGMENTS
            && let Some(oldest) = open.keys().next().copied()
        {
            open.remove(&oldest);
        }
        open.insert(number, Arc::clone(&segment));
        Ok(segment)
    }

    fn prepare_segment(&self, number: u64, len: u64) -> io::Result<()> {
        let path = self.segment_path(number);
        if path.exists() {
            return Ok(());
        }
        let temp = path.with_extension(format!("{SEGMENT_SUFFIX}.{PREPARING_SUFFIX}"));
        {
            let mut file =
                OpenOptions::new().write(true).create(true).truncate(true).mode(PRIVATE_FILE_MODE).open(&temp)?;
            let zeroes = vec![0u8; ZERO_CHUNK_BYTES];
            let mut written = 0u64;
            while written < len {
                let n = (len - written).min(ZERO_CHUNK_BYTES as u64) as usize;
                std::io::Write::write_all(&mut file, &zeroes[..n])?;
                written += n as u64;
            }
            file.sync_all()?;
        }
        // Under the lock `open_segment` takes: the log may have created the
        // segment itself meanwhile, and that one must not be replaced.
        let _open = self.lock()?;
        if path.exists() {
            return std::fs::remove_file(&temp);
        }
        std::fs::rename(&temp, &path)?;
        File::open(&self.path)?.sync_all()
    }

    fn forget_cached(&self, from: u64) -> io::Result<()> {
        for number in self.segments()?.into_iter().filter(|number| *number >= from) {
            let file = File::open(self.segment_path(number))?;
            file.sync_data()?;
            rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed)?;
        }
        Ok(())
    }

    fn size_on_disk(&self) -> io::Result<u64> {
        let mut total = 0;
        for number in self.segments()? {
            // Allocated blocks, not the apparent length: what the disk holds.
            total += std::fs::metadata(self.segment_path(number))?.blocks() * 512;
        }
        Ok(total)
    }
}

impl SegmentFile for FsSegment {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut n_read = 0;
        while n_read < buf.len() {
            match self.file.read_at(&mut buf[n_read..], offset + n_read as u64) {
                Ok(0) => break,
                Ok(n) => n_read += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(n_read)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

    use super::*;

    /// Goal: forgetting the cached log keeps every byte written, synced or
    /// not, and only the segments asked for. Method: write to two segments
    /// without syncing, forget from the second, read both back (the page
    /// cache itself is not observable here; a failed `fdatasync` cannot be
    /// provoked without a faulty device).
    #[test]
    fn forgetting_the_cache_keeps_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let log = FsLogDir::open(dir.path()).unwrap();
        for number in 0..2u64 {
            let segment = log.open_segment(number, true).unwrap();
            segment.write_at(&[number as u8 + 1; 4096], 0).unwrap();
        }
        log.forget_cached(1).unwrap();
        log.forget_cached(7).unwrap();
        for number in 0..2u64 {
            let mut buf = vec![0u8; 4096];
            File::open(log.segment_path(number)).unwrap().read_exact_at(&mut buf, 0).unwrap();
            assert_eq!(buf, vec![number as u8 + 1; 4096], "segment {number}");
        }
    }
}
