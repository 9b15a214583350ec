//! The in-memory engine: `BTreeMap`s behind a lock.
//!
//! Used by tests and by the conformance suite as the second implementation. It
//! survives a simulated restart ([`MemEngine::clone_handle`] shares the maps),
//! so model tests can "reopen" it; it never survives the process.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Direction, Engine, Pairs, Tree, Write};
use crate::error::Error;

type Maps = [BTreeMap<Vec<u8>, Vec<u8>>; 4];

#[derive(Debug, Default, Clone)]
pub struct MemEngine {
    maps: Arc<Mutex<Maps>>,
}

impl MemEngine {
    pub fn new() -> MemEngine {
        MemEngine::default()
    }

    /// Another handle on the same data, as a reopened store would see it.
    pub fn clone_handle(&self) -> MemEngine {
        self.clone()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Maps>, Error> {
        self.maps.lock().map_err(|_| Error::Engine("memory engine lock poisoned".to_owned()))
    }
}

fn index(tree: Tree) -> usize {
    match tree {
        Tree::Meta => 0,
        Tree::Log => 1,
        Tree::Blobs => 2,
        Tree::Resources => 3,
    }
}

impl Engine for MemEngine {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.lock()?[index(tree)].get(key).cloned())
    }

    fn range(
        &self,
        tree: Tree,
        range: (Bound<Vec<u8>>, Bound<Vec<u8>>),
        direction: Direction,
        limit: usize,
    ) -> Result<Pairs, Error> {
        let maps = self.lock()?;
        let iter = maps[index(tree)].range(range).map(|(k, v)| (k.clone(), v.clone()));
        Ok(match direction {
            Direction::Forward => iter.take(limit).collect(),
            Direction::Backward => iter.rev().take(limit).collect(),
        })
    }

    fn apply(&self, tree: Tree, writes: Vec<Write>) -> Result<(), Error> {
        let mut maps = self.lock()?;
        let map = &mut maps[index(tree)];
        for (key, value) in writes {
            match value {
                Some(value) => map.insert(key, value),
                None => map.remove(&key),
            };
        }
        Ok(())
    }

    fn compare_and_swap(
        &self,
        tree: Tree,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<Vec<u8>>,
    ) -> Result<Result<(), Option<Vec<u8>>>, Error> {
        let mut maps = self.lock()?;
        let map = &mut maps[index(tree)];
        let current = map.get(key);
        if current.map(Vec::as_slice) != old {
            return Ok(Err(current.cloned()));
        }
        match new {
            Some(value) => map.insert(key.to_vec(), value),
            None => map.remove(key),
        };
        Ok(Ok(()))
    }

    fn sync(&self) -> Result<(), Error> {
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, Error> {
        Ok(0)
    }
}
