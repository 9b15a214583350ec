//! Fault injection: an engine whose syncs fail on command, as a disk
//! returning EIO would.
//!
//! Goal: a write whose batch failed to become durable is never acknowledged,
//! never readable and never delivered to a subscriber, and the store stops
//! acknowledging anything after a failed sync (fail-stop: after an fsync error
//! the kernel may have dropped the dirty pages). Also: a store refuses a
//! storage version it does not know. Method: the memory engine's
//! `fail_syncs` switch.

use logbook_core::Seq;
use logbook_store::engine::{Engine, Tree};
use logbook_store::{
    Append, AppendError, Blobs, Error, LogStore, MemEngine, OpenError, Read, ResourceKind, Resources, Subscribe,
};

use super::{Fixture, SledFixture, entries, session};

#[test]
fn a_failed_sync_acknowledges_nothing_and_stops_the_store() {
    let engine = MemEngine::new();
    let store = LogStore::with_engine(engine.clone_handle()).unwrap();
    let s = session(1);
    store.append(s, Seq::ZERO, &entries(0..2)).unwrap();
    let mut sub = store.subscribe(s, Seq::ZERO);
    assert_eq!(sub.try_next_batch(10).unwrap().len(), 2);

    assert_eq!(store.poisoned(), None);
    engine.fail_syncs(true);
    match store.append(s, Seq::new(2), &entries(2..3)) {
        Err(AppendError::Store(Error::Poisoned { reason })) => assert!(reason.contains("EIO"), "{reason}"),
        other => panic!("expected a poisoned store, got {other:?}"),
    }
    // Written to the log, but never durable: invisible everywhere.
    assert_eq!(store.head(s).unwrap().next, Seq::new(2));
    assert_eq!(store.read(s, Seq::ZERO, 10).unwrap().len(), 2);
    assert!(sub.try_next_batch(10).unwrap().is_empty());

    // Fail-stop, even once the disk "recovers".
    engine.fail_syncs(false);
    assert!(matches!(store.append(s, Seq::new(2), &entries(2..3)), Err(AppendError::Store(Error::Poisoned { .. }))));
    assert!(matches!(store.put_blob(b"x"), Err(Error::Poisoned { .. })));
    assert!(matches!(store.swap_resource(ResourceKind::Agent, b"a", None, Some(b"v")), Err(Error::Poisoned { .. })));
    assert!(store.poisoned().is_some_and(|reason| reason.contains("EIO")), "health checks can tell");
}

/// Goal: after a failed sync, a restart without a reboot does not replay the
/// failed batch from the page cache, where the kernel may have left it
/// (marked clean, never written). Method: the memory engine models that
/// cache; a batch whose sync failed, then the store reopened on the same
/// engine with the disk answering again.
#[test]
fn a_batch_whose_sync_failed_is_not_replayed_after_a_restart() {
    let engine = MemEngine::new();
    let store = LogStore::with_engine(engine.clone_handle()).unwrap();
    let s = session(3);
    store.append(s, Seq::ZERO, &entries(0..2)).unwrap();
    engine.fail_syncs(true);
    assert!(store.append(s, Seq::new(2), &entries(2..3)).is_err());
    drop(store);
    engine.fail_syncs(false);
    let store = LogStore::with_engine(engine.clone_handle()).unwrap();
    assert_eq!(store.head(s).unwrap().next, Seq::new(2), "the failed append is not there");
    assert_eq!(store.read(s, Seq::ZERO, 10).unwrap().len(), 2);
    store.append(s, Seq::new(2), &entries(2..3)).unwrap();
    assert_eq!(store.read(s, Seq::ZERO, 10).unwrap().len(), 3);
}

/// Goal: a simulated power loss (every write not yet synced is gone) keeps
/// every acknowledged append and never a torn one. Method: the memory engine
/// keeps what was synced apart from what was written; appends, a checkpoint,
/// more appends, then "power loss" and reopen.
/// A checkpoint is fail-stop like the log: one that fails poisons the store,
/// and none runs on a poisoned store (a later sync succeeding proves nothing
/// about the pages the failed one may have lost).
#[test]
fn a_failed_checkpoint_stops_the_store() {
    let engine = MemEngine::new();
    let store = LogStore::with_engine(engine.clone_handle()).unwrap();
    let s = session(2);
    store.append(s, Seq::ZERO, &entries(0..2)).unwrap();
    engine.fail_syncs(true);
    assert!(store.checkpoint().is_err());
    engine.fail_syncs(false);
    assert!(matches!(store.checkpoint(), Err(Error::Poisoned { .. })), "no checkpoint after a failed one");
    assert!(matches!(store.append(s, Seq::new(2), &entries(2..3)), Err(AppendError::Store(Error::Poisoned { .. }))));
    assert_eq!(store.read(s, Seq::ZERO, 10).unwrap().len(), 2, "what was durable stays readable");
}

/// A resource write whose batch failed is not left behind in the index:
/// readers keep seeing the old value, as the log has it.
#[test]
fn a_resource_write_whose_batch_failed_leaves_the_old_value() {
    let engine = MemEngine::new();
    let store = LogStore::with_engine(engine.clone_handle()).unwrap();
    store.swap_resource(ResourceKind::Agent, b"k", None, Some(b"v1")).unwrap().unwrap();
    engine.fail_syncs(true);
    assert!(store.swap_resource(ResourceKind::Agent, b"k", Some(b"v1"), Some(b"v2")).is_err());
    assert_eq!(store.get_resource(ResourceKind::Agent, b"k").unwrap().as_deref(), Some(&b"v1"[..]));
}

#[test]
fn a_power_loss_keeps_every_acknowledged_append() {
    let engine = MemEngine::new();
    let store = LogStore::with_engine(engine.clone_handle()).unwrap();
    let (a, b) = (session(1), session(2));
    let before = store.append(a, Seq::ZERO, &entries(0..5)).unwrap();
    store.checkpoint().unwrap();
    let after = store.append(a, Seq::new(5), &entries(5..7)).unwrap();
    let other = store.append(b, Seq::ZERO, &entries(0..3)).unwrap();
    store.swap_resource(ResourceKind::Session, b"k", None, Some(b"v")).unwrap().unwrap();
    // The power fails: no final checkpoint.
    store.crash();
    engine.lose_unsynced().unwrap();
    let store = LogStore::with_engine(engine.clone_handle()).unwrap();
    assert_eq!(store.read(a, Seq::ZERO, 100).unwrap(), [before, after].concat());
    assert_eq!(store.read(b, Seq::ZERO, 100).unwrap(), other);
    assert_eq!(store.get_resource(ResourceKind::Session, b"k").unwrap(), Some(b"v".to_vec()));
    assert!(store.quarantined().is_empty());
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
        Err(OpenError::UnknownStorageVersion { found: 7, supported: 2 }) => {}
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

/// Goal: a snapshot sled never finished writing does not stop the store from
/// opening. sled 0.34.7 reads the highest-named `snap.*` file at open,
/// `.generating` ones included (spacejam/sled#1527), and a crash in the middle
/// of writing one left a store that never opened again ("Read corrupted
/// data"). Method: a partial snapshot file, as such a crash leaves it, is put
/// beside a closed store's files; the store opens with everything it held,
/// and the file is gone. (A complete one is renamed into place: the unit
/// test beside `settle_unfinished_snapshots`.)
#[test]
fn a_snapshot_sled_never_finished_does_not_stop_the_store_from_opening() {
    let fixture = SledFixture::new();
    fixture.store().append(session(1), Seq::ZERO, &entries(0..3)).unwrap();
    let dir = fixture.data_dir();
    let _dir_kept_alive = fixture.close();
    let partial = dir.join(logbook_store::SLED_DIR).join("snap.FFFFFFFFFFFFFFF0.generating");
    std::fs::write(&partial, b"half a snapshot").unwrap();
    let store = logbook_store::SledStore::open(&dir, &super::small_sled_options()).unwrap();
    assert_eq!(store.read(session(1), Seq::ZERO, 10).unwrap().len(), 3);
    assert!(!partial.exists());
}

/// Goal: a store whose creation a crash cut short is created again. sled
/// writes its `conf` file with no barrier, and a `sled` directory cut short
/// there never opened again; sled is now built in `sled.creating` and renamed
/// into place once complete (that a crash at each step leaves a store that
/// opens is `tests/tests/storage_faults.rs`'s part). Method: what such a crash
/// now leaves (a `sled.creating` directory with a half-written `conf`) is in
/// the data directory; the store opens, takes an append, and the leftover is
/// gone. Then what it left before (`sled` with a half-written `conf` and no
/// `db`): the store is created in its place.
#[test]
fn a_store_whose_creation_was_cut_short_is_created_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let creating = data.join("sled.creating");
    std::fs::create_dir_all(&creating).unwrap();
    std::fs::write(creating.join("conf"), b"segment_size: 52").unwrap();
    let store = logbook_store::SledStore::open(&data, &super::small_sled_options()).unwrap();
    store.append(session(1), Seq::ZERO, &entries(0..1)).unwrap();
    assert!(!creating.exists());
    drop(store);
    let store = logbook_store::SledStore::open(&data, &super::small_sled_options()).unwrap();
    assert_eq!(store.read(session(1), Seq::ZERO, 10).unwrap().len(), 1);
    drop(store);

    // What the same crash left before sled was built aside: `sled` itself
    // with a half-written `conf`, an empty `blobs` and no `db`.
    let data = dir.path().join("older");
    std::fs::create_dir_all(data.join("sled/blobs")).unwrap();
    std::fs::write(data.join("sled/conf"), b"segment_size: 52").unwrap();
    let store = logbook_store::SledStore::open(&data, &super::small_sled_options()).unwrap();
    store.append(session(1), Seq::ZERO, &entries(0..1)).unwrap();
}
