//! Fault injection: an engine whose durability barrier fails on command.
//!
//! Goal: a write whose barrier failed is never acknowledged, never readable and
//! never delivered to a subscriber, and the store stops acknowledging anything
//! after a failed barrier (fail-stop: after an fsync error the kernel may have
//! dropped the dirty pages). Also: a store refuses a storage version it does not
//! know. Method: wrap the memory engine and fail `sync` from a chosen call on.

use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use logbook_core::Seq;
use logbook_store::engine::{Direction, Engine, Pairs, Tree, Write};
use logbook_store::{
    Append, AppendError, Blobs, Error, LogStore, MemEngine, OpenError, Read, ResourceKind, Resources, Subscribe,
};

use super::{Fixture, SledFixture, entries, session};

#[derive(Debug, Default)]
struct FailingSync {
    inner: MemEngine,
    fail: Arc<AtomicBool>,
}

impl Engine for FailingSync {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.inner.get(tree, key)
    }

    fn range(
        &self,
        tree: Tree,
        range: (Bound<Vec<u8>>, Bound<Vec<u8>>),
        direction: Direction,
        limit: usize,
    ) -> Result<Pairs, Error> {
        self.inner.range(tree, range, direction, limit)
    }

    fn apply(&self, tree: Tree, writes: Vec<Write>) -> Result<(), Error> {
        self.inner.apply(tree, writes)
    }

    fn compare_and_swap(
        &self,
        tree: Tree,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<Vec<u8>>,
    ) -> Result<Result<(), Option<Vec<u8>>>, Error> {
        self.inner.compare_and_swap(tree, key, old, new)
    }

    fn sync(&self) -> Result<(), Error> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(Error::Engine("injected: fsync returned EIO".to_owned()));
        }
        self.inner.sync()
    }

    fn size_on_disk(&self) -> Result<u64, Error> {
        self.inner.size_on_disk()
    }
}

#[test]
fn a_failed_barrier_acknowledges_nothing_and_stops_the_store() {
    let fail = Arc::new(AtomicBool::new(false));
    let store = LogStore::with_engine(FailingSync { inner: MemEngine::new(), fail: Arc::clone(&fail) }).unwrap();
    let s = session(1);
    store.append(s, Seq::ZERO, &entries(0..2)).unwrap();
    let mut sub = store.subscribe(s, Seq::ZERO);
    assert_eq!(sub.try_next_batch(10).unwrap().len(), 2);

    fail.store(true, Ordering::SeqCst);
    match store.append(s, Seq::new(2), &entries(2..3)) {
        Err(AppendError::Store(Error::Poisoned { reason })) => assert!(reason.contains("EIO"), "{reason}"),
        other => panic!("expected a poisoned store, got {other:?}"),
    }
    // Written to the engine, but never durable: invisible everywhere.
    assert_eq!(store.head(s).unwrap().next, Seq::new(2));
    assert_eq!(store.read(s, Seq::ZERO, 10).unwrap().len(), 2);
    assert!(sub.try_next_batch(10).unwrap().is_empty());

    // Fail-stop, even once the disk "recovers".
    fail.store(false, Ordering::SeqCst);
    assert!(matches!(store.append(s, Seq::new(2), &entries(2..3)), Err(AppendError::Store(Error::Poisoned { .. }))));
    assert!(matches!(store.put_blob(b"x"), Err(Error::Poisoned { .. })));
    assert!(matches!(store.swap_resource(ResourceKind::Agent, b"a", None, Some(b"v")), Err(Error::Poisoned { .. })));
}

#[test]
fn an_unknown_storage_version_is_refused() {
    let fixture = SledFixture::new();
    fixture.store().append(session(1), Seq::ZERO, &entries(0..1)).unwrap();
    let engine = fixture.store().engine();
    engine.apply(Tree::Meta, vec![(b"storage_version".to_vec(), Some(7u32.to_be_bytes().to_vec()))]).unwrap();
    engine.sync().unwrap();
    let dir = fixture.data_dir();
    let _dir_kept_alive = fixture.close();
    match logbook_store::SledStore::open(&dir, &super::small_sled_options()) {
        Err(OpenError::UnknownStorageVersion { found: 7, supported: 1 }) => {}
        other => panic!("expected an unknown storage version, got {other:?}"),
    }
}

/// Goal: a store reopened in the same process while the previous handle is
/// still closing (sled keeps its file lock until its threads finish) waits for
/// the lock instead of failing. Method: hold a handle open in another thread,
/// release it after a moment (the sleep is the stimulus, not a wait), and open
/// the same directory meanwhile.
#[test]
fn reopening_waits_for_a_handle_that_is_still_closing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let first = logbook_store::SledStore::open(&path, &super::small_sled_options()).unwrap();
    let closer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(first);
    });
    let second = logbook_store::SledStore::open(&path, &super::small_sled_options());
    closer.join().unwrap();
    assert!(second.is_ok(), "{:?}", second.err());
}
