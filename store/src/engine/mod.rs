//! The storage engines under the store: an ordered key-value map per tree for
//! indexes and resources, plus a directory of log segments for the
//! write-ahead log that holds every record.
//!
//! All store logic (chains, heads, limits, group commit, indexes,
//! subscriptions) lives in `store/src/log.rs` and runs unchanged over every engine,
//! so the one conformance suite tests the same logic on sled and in memory. An
//! engine knows nothing of sessions or records: it stores bytes under keys and
//! bytes in numbered segment files.

use std::fmt::Debug;
use std::io;
use std::ops::Bound;
use std::sync::Arc;

use crate::error::Error;

pub mod files;
pub mod mem;
pub mod sled;

/// The trees (keyspaces) the store uses. See [`crate::keys`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tree {
    Meta,
    /// Derived indexes of the log: record locations, the type index, heads,
    /// forks, blob locations.
    Log,
    /// Storage version 1 only: blob bytes. Emptied by the migration to version 2.
    Blobs,
    Resources,
}

impl Tree {
    pub const ALL: [Tree; 4] = [Tree::Meta, Tree::Log, Tree::Blobs, Tree::Resources];

    pub fn name(self) -> &'static str {
        match self {
            Tree::Meta => "meta",
            Tree::Log => "log",
            Tree::Blobs => "blobs",
            Tree::Resources => "resources",
        }
    }
}

/// One write of a batch: insert (`Some`) or remove (`None`).
pub type Write = (Vec<u8>, Option<Vec<u8>>);

/// Key-value pairs read from a tree.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// The first pairs of `pairs`, at most `limit` of them, that fit in
/// `max_bytes` of keys and values (always the first one): what
/// [`Engine::range_within`] returns. `size` tells a pair's bytes before it
/// is copied out, so that refused pairs are never copied.
pub(crate) fn take_within<P, E>(
    pairs: impl Iterator<Item = Result<P, E>>,
    limit: usize,
    max_bytes: usize,
    size: impl Fn(&P) -> usize,
    copy: impl Fn(P) -> (Vec<u8>, Vec<u8>),
) -> Result<Pairs, Error>
where
    Error: From<E>,
{
    let mut budget = crate::budget::ReadBudget::new(max_bytes);
    let mut out = Vec::new();
    for pair in pairs.take(limit) {
        let pair = pair?;
        if !budget.admit_size(size(&pair)) {
            break;
        }
        out.push(copy(pair));
    }
    Ok(out)
}

/// Scan direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}

pub trait Engine: Send + Sync + std::fmt::Debug + 'static {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, Error>;

    /// Up to `limit` pairs with keys in `range`, in `direction`.
    fn range(
        &self,
        tree: Tree,
        range: (Bound<Vec<u8>>, Bound<Vec<u8>>),
        direction: Direction,
        limit: usize,
    ) -> Result<Pairs, Error>;

    /// [`Engine::range`] stopping before the pair that would take the keys
    /// and values returned past `max_bytes` (always at least one pair): how
    /// resources, whose values may be large, are scanned.
    fn range_within(
        &self,
        tree: Tree,
        range: (Bound<Vec<u8>>, Bound<Vec<u8>>),
        direction: Direction,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Pairs, Error>;

    /// Applies all writes to one tree atomically: after a crash, all or none.
    fn apply(&self, tree: Tree, writes: Vec<Write>) -> Result<(), Error>;

    /// Makes every key-value write that returned before this call durable.
    /// Called by checkpoints (and opening), never on the commit path: the
    /// write-ahead log makes appends durable.
    fn sync(&self) -> Result<(), Error>;

    /// The directory of write-ahead log segments that belongs with this
    /// engine's key-value data.
    fn log_dir(&self) -> Arc<dyn LogDir>;

    /// Bytes the engine's key-value data occupies on disk, the log's
    /// segments not included (0 in memory).
    fn size_on_disk(&self) -> Result<u64, Error>;
}

/// A directory of numbered segment files: where the write-ahead log, and so
/// every record, lives. Segments are only ever created and written; the store
/// never deletes one (a log is never deleted).
pub trait LogDir: Send + Sync + Debug + 'static {
    /// The numbers of the segments present, ascending.
    fn segments(&self) -> io::Result<Vec<u64>>;

    /// Opens segment `number`; with `create`, creates it empty if missing and
    /// makes the new directory entry durable before returning.
    fn open_segment(&self, number: u64, create: bool) -> io::Result<Arc<dyn SegmentFile>>;

    /// Bytes the segments occupy.
    fn size_on_disk(&self) -> io::Result<u64>;

    /// Creates segment `number` ahead of its use, `len` bytes of zeroes made
    /// durable, so that appends to it overwrite allocated blocks and their
    /// `fdatasync` has no file size or block allocation to write. Does nothing
    /// if the segment exists. Safe to call while the log is being written: a
    /// segment appears complete or not at all.
    fn prepare_segment(&self, number: u64, len: u64) -> io::Result<()> {
        let _ = (number, len);
        Ok(())
    }

    /// Makes later reads of the segments from `from` on come from the disk
    /// rather than from cached pages: what is cached dirty is synced, then the
    /// cache is dropped. After a failed `fdatasync` the kernel may keep the
    /// pages that never reached the disk, marked clean; a restart without a
    /// reboot would read them back as if they were durable.
    fn forget_cached(&self, from: u64) -> io::Result<()> {
        let _ = from;
        Ok(())
    }
}

/// One segment file. Reads and writes are positional, so any number of threads
/// may read while one writes.
pub trait SegmentFile: Send + Sync + Debug {
    /// Reads as many bytes as there are at `offset`, up to `buf.len()`; fewer
    /// only at the end of the file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;

    /// `fdatasync`: every byte written before this call is on stable storage.
    fn sync_data(&self) -> io::Result<()>;

    fn len(&self) -> io::Result<u64>;

    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Reads exactly `buf.len()` bytes at `offset`, or fails.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let n_read = self.read_at(buf, offset)?;
        if n_read < buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("read {n_read} of {} bytes at offset {offset}: past the end of the segment", buf.len()),
            ));
        }
        Ok(())
    }
}

/// All keys starting with `prefix`, as a range.
pub fn prefix_range(prefix: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let start = Bound::Included(prefix.to_vec());
    // The smallest key greater than every key with this prefix: increment the last
    // byte that is not 0xff and drop what follows; no such byte means unbounded.
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last != 0xff {
            end.push(last + 1);
            return (start, Bound::Excluded(end));
        }
    }
    (start, Bound::Unbounded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_range_bounds() {
        assert_eq!(prefix_range(&[1, 2]).1, Bound::Excluded(vec![1, 3]));
        assert_eq!(prefix_range(&[1, 0xff]).1, Bound::Excluded(vec![2]));
        assert_eq!(prefix_range(&[0xff, 0xff]).1, Bound::Unbounded);
    }
}
