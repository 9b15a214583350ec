//! The in-memory engine: `BTreeMap`s and byte vectors behind locks.
//!
//! Used by tests and by the conformance suite as the second implementation. It
//! survives a simulated restart ([`MemEngine::clone_handle`] shares the data),
//! so model tests can "reopen" it; it never survives the process.
//!
//! It also models durability, for deterministic crash tests: every write is
//! "live" at once, but becomes "durable" only when synced (`sync_data` for a
//! segment, [`Engine::sync`] for the maps). [`MemEngine::lose_unsynced`]
//! simulates a power loss by throwing away everything live that was never
//! synced, and [`MemEngine::fail_syncs`] makes every later sync fail, as a
//! disk returning EIO would: the failed bytes stay readable ("cached") but
//! are no longer waiting to be written, as Linux leaves them, until
//! [`LogDir::forget_cached`] drops what the "disk" does not hold.

use std::collections::BTreeMap;
use std::io;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use super::{Direction, Engine, LogDir, Pairs, SegmentFile, Tree, Write};
use crate::error::Error;

type Maps = [BTreeMap<Vec<u8>, Vec<u8>>; 4];

#[derive(Debug, Default, Clone)]
pub struct MemEngine {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    live: Mutex<Maps>,
    durable: Mutex<Maps>,
    log: Arc<MemLogDir>,
}

/// In-memory segments; see the module documentation.
#[derive(Debug, Default)]
pub struct MemLogDir {
    segments: Mutex<BTreeMap<u64, Arc<MemSegment>>>,
    failing: Arc<AtomicBool>,
}

#[derive(Debug)]
pub struct MemSegment {
    state: RwLock<SegmentState>,
    failing: Arc<AtomicBool>,
}

#[derive(Debug, Default)]
struct SegmentState {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// The byte range written since the last sync.
    dirty: Option<(usize, usize)>,
}

impl MemEngine {
    pub fn new() -> MemEngine {
        MemEngine::default()
    }

    /// Another handle on the same data, as a reopened store would see it.
    pub fn clone_handle(&self) -> MemEngine {
        self.clone()
    }

    /// Simulates a power loss: every write not yet synced is gone. Only
    /// meaningful while no store is open on this engine.
    pub fn lose_unsynced(&self) -> Result<(), Error> {
        let durable = self.shared.durable.lock().map_err(|_| poisoned())?.clone();
        *self.lock()? = durable;
        self.shared.log.lose_unsynced();
        Ok(())
    }

    /// From now on (while `fail` is true) every sync fails, as after a disk error.
    pub fn fail_syncs(&self, fail: bool) {
        self.shared.log.failing.store(fail, Ordering::SeqCst);
    }

    fn lock(&self) -> Result<MutexGuard<'_, Maps>, Error> {
        self.shared.live.lock().map_err(|_| poisoned())
    }
}

fn poisoned() -> Error {
    Error::Engine("memory engine lock poisoned".to_owned())
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

    fn range_within(
        &self,
        tree: Tree,
        range: (Bound<Vec<u8>>, Bound<Vec<u8>>),
        direction: Direction,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Pairs, Error> {
        let maps = self.lock()?;
        let iter = maps[index(tree)].range(range).map(Ok::<_, Error>);
        let size = |(k, v): &(&Vec<u8>, &Vec<u8>)| k.len() + v.len();
        let copy = |(k, v): (&Vec<u8>, &Vec<u8>)| (k.clone(), v.clone());
        match direction {
            Direction::Forward => super::take_within(iter, limit, max_bytes, size, copy),
            Direction::Backward => super::take_within(iter.rev(), limit, max_bytes, size, copy),
        }
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

    fn sync(&self) -> Result<(), Error> {
        if self.shared.log.failing.load(Ordering::SeqCst) {
            return Err(Error::Engine("injected: fsync returned EIO".to_owned()));
        }
        let live = self.lock()?.clone();
        *self.shared.durable.lock().map_err(|_| poisoned())? = live;
        Ok(())
    }

    fn log_dir(&self) -> Arc<dyn LogDir> {
        Arc::clone(&self.shared.log) as Arc<dyn LogDir>
    }

    fn size_on_disk(&self) -> Result<u64, Error> {
        Ok(0)
    }
}

impl MemLogDir {
    fn lock(&self) -> io::Result<MutexGuard<'_, BTreeMap<u64, Arc<MemSegment>>>> {
        self.segments.lock().map_err(|_| io::Error::other("memory log lock poisoned"))
    }

    fn lose_unsynced(&self) {
        if let Ok(segments) = self.lock() {
            for segment in segments.values() {
                if let Ok(mut state) = segment.state.write() {
                    let SegmentState { live, durable, dirty } = &mut *state;
                    live.clone_from(durable);
                    *dirty = None;
                }
            }
        }
    }
}

impl LogDir for MemLogDir {
    fn segments(&self) -> io::Result<Vec<u64>> {
        Ok(self.lock()?.keys().copied().collect())
    }

    fn open_segment(&self, number: u64, create: bool) -> io::Result<Arc<dyn SegmentFile>> {
        let mut segments = self.lock()?;
        if let Some(segment) = segments.get(&number) {
            return Ok(Arc::clone(segment) as Arc<dyn SegmentFile>);
        }
        if !create {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no segment {number}")));
        }
        let segment =
            Arc::new(MemSegment { state: RwLock::new(SegmentState::default()), failing: Arc::clone(&self.failing) });
        segments.insert(number, Arc::clone(&segment));
        Ok(segment)
    }

    fn size_on_disk(&self) -> io::Result<u64> {
        Ok(0)
    }

    fn forget_cached(&self, from: u64) -> io::Result<()> {
        let segments: Vec<Arc<MemSegment>> =
            self.lock()?.range(from..).map(|(_, segment)| Arc::clone(segment)).collect();
        for segment in segments {
            segment.sync_data()?;
            let mut state = segment.write_state()?;
            let SegmentState { live, durable, .. } = &mut *state;
            live.clone_from(durable);
        }
        Ok(())
    }
}

impl MemSegment {
    fn read_state(&self) -> io::Result<std::sync::RwLockReadGuard<'_, SegmentState>> {
        self.state.read().map_err(|_| io::Error::other("segment lock poisoned"))
    }

    fn write_state(&self) -> io::Result<std::sync::RwLockWriteGuard<'_, SegmentState>> {
        self.state.write().map_err(|_| io::Error::other("segment lock poisoned"))
    }
}

impl SegmentFile for MemSegment {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let state = self.read_state()?;
        let live = &state.live;
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(live.len());
        let n = buf.len().min(live.len() - start);
        buf[..n].copy_from_slice(&live[start..start + n]);
        Ok(n)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut state = self.write_state()?;
        let start = usize::try_from(offset).map_err(|_| io::Error::other("offset too large"))?;
        let end = start + buf.len();
        if state.live.len() < end {
            state.live.resize(end, 0);
        }
        state.live[start..end].copy_from_slice(buf);
        state.dirty = Some(match state.dirty {
            Some((from, to)) => (from.min(start), to.max(end)),
            None => (start, end),
        });
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.write_state()?;
        if self.failing.load(Ordering::SeqCst) {
            // As Linux does after a failed writeback: the pages stay cached,
            // no longer dirty, and never reach the disk.
            state.dirty = None;
            return Err(io::Error::other("injected: fsync returned EIO"));
        }
        let SegmentState { live, durable, dirty } = &mut *state;
        if let Some((from, to)) = dirty.take() {
            if durable.len() < to {
                durable.resize(to, 0);
            }
            durable[from..to].copy_from_slice(&live[from..to]);
        }
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.read_state()?.live.len() as u64)
    }
}
