//! The storage engines under the store: an ordered key-value map per tree with
//! atomic batches, plus a durability barrier.
//!
//! All store logic (chains, heads, limits, group commit, subscriptions) lives in
//! [`crate::log`] and runs unchanged over every engine, so the one conformance
//! suite tests the same logic on sled and in memory. An engine knows nothing of
//! sessions or records.

use std::ops::Bound;

use crate::error::Error;

pub mod mem;
pub mod sled;

/// The trees (keyspaces) the store uses. See [`crate::keys`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tree {
    Meta,
    Log,
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

    /// Applies all writes to one tree atomically: after a crash, all or none.
    fn apply(&self, tree: Tree, writes: Vec<Write>) -> Result<(), Error>;

    /// Sets `key` to `new` if it currently is `old`. Returns the current value on mismatch.
    fn compare_and_swap(
        &self,
        tree: Tree,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<Vec<u8>>,
    ) -> Result<Result<(), Option<Vec<u8>>>, Error>;

    /// Makes every write that returned before this call durable. Called by the
    /// group-commit barrier only, never concurrently with itself.
    fn sync(&self) -> Result<(), Error>;

    /// Bytes the engine occupies on disk (0 in memory).
    fn size_on_disk(&self) -> Result<u64, Error>;
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
