//! Test modules and the fixtures they share.

mod conformance;
mod corruption;
mod fault;
mod forks;
mod migration;
mod model;
mod review;
mod review2;
mod review3;
mod tamper;

use std::path::PathBuf;

use logbook_core::event::sample_events;
use logbook_core::{Entry, EventId, SessionId, Timestamp};
use logbook_store::{MemEngine, MemStore, SledOptions, SledStore, Store};

/// A store that can be dropped and opened again on the same data.
pub(crate) trait Fixture: Sized {
    type Store: Store + 'static;
    fn store(&self) -> &Self::Store;
    fn reopen(self) -> Self;
    /// Runs a checkpoint now.
    fn checkpoint(&self);
    /// Stops the store as a crash would (no final checkpoint; in memory, also
    /// a power loss: what was not synced is gone) and opens it again.
    fn crash(self) -> Self;
    /// Sets the byte budget of the store's reads (until it is reopened).
    fn set_read_bytes(&self, bytes: usize);
}

pub(crate) struct MemFixture {
    engine: MemEngine,
    store: MemStore,
}

impl MemFixture {
    pub(crate) fn new() -> Self {
        let engine = MemEngine::new();
        let store = MemStore::with_engine(engine.clone_handle()).unwrap();
        MemFixture { engine, store }
    }
}

impl Fixture for MemFixture {
    type Store = MemStore;

    fn store(&self) -> &MemStore {
        &self.store
    }

    fn reopen(self) -> Self {
        let MemFixture { engine, store } = self;
        drop(store);
        let store = MemStore::with_engine(engine.clone_handle()).unwrap();
        MemFixture { engine, store }
    }

    fn checkpoint(&self) {
        self.store.checkpoint().unwrap();
    }

    fn crash(self) -> Self {
        let MemFixture { engine, store } = self;
        store.crash();
        engine.lose_unsynced().unwrap();
        let store = MemStore::with_engine(engine.clone_handle()).unwrap();
        MemFixture { engine, store }
    }

    fn set_read_bytes(&self, bytes: usize) {
        self.store.set_read_bytes(bytes);
    }
}

pub(crate) struct SledFixture {
    dir: tempfile::TempDir,
    store: Option<SledStore>,
}

pub(crate) fn small_sled_options() -> SledOptions {
    SledOptions { cache_capacity_bytes: 8 * 1024 * 1024 }
}

impl SledFixture {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("data"), &small_sled_options()).unwrap();
        SledFixture { dir, store: Some(store) }
    }

    pub(crate) fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Closes the store and returns the directory (deleted when dropped), for
    /// tests that reopen it by hand.
    pub(crate) fn close(mut self) -> tempfile::TempDir {
        drop(self.store.take());
        self.dir
    }
}

impl Fixture for SledFixture {
    type Store = SledStore;

    fn store(&self) -> &SledStore {
        self.store.as_ref().unwrap()
    }

    fn reopen(mut self) -> Self {
        // sled releases its file lock only when every handle is dropped.
        drop(self.store.take());
        let store = SledStore::open(&self.data_dir(), &small_sled_options()).unwrap();
        SledFixture { dir: self.dir, store: Some(store) }
    }

    fn checkpoint(&self) {
        self.store().checkpoint().unwrap();
    }

    fn crash(mut self) -> Self {
        if let Some(store) = self.store.take() {
            store.crash();
        }
        let store = SledStore::open(&self.data_dir(), &small_sled_options()).unwrap();
        SledFixture { dir: self.dir, store: Some(store) }
    }

    fn set_read_bytes(&self, bytes: usize) {
        self.store().set_read_bytes(bytes);
    }
}

pub(crate) fn session(n: u64) -> SessionId {
    SessionId::from_parts(1_764_000_000_000 + n, u128::from(n))
}

/// A deterministic entry: the `i`-th sample event with an id and time derived from `i`.
pub(crate) fn entry(i: u64) -> Entry {
    let samples = sample_events();
    let event = samples[(i as usize) % samples.len()].clone();
    Entry {
        id: EventId::from_parts(1_764_000_000_000 + i, u128::from(i) << 8),
        event,
        at: Timestamp::from_unix_micros(1_764_000_000_000_000 + i as i64 * 1000),
    }
}

pub(crate) fn entries(range: std::ops::Range<u64>) -> Vec<Entry> {
    range.map(entry).collect()
}
