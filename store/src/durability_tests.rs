//! Tests of the store's promises that need one interleaving or the
//! background sweep: a resource value reaches the engine (and so a
//! checkpoint's sync) only with its log entry, failed writes leave the value
//! the log holds, reads keep the tail caches within their budget (and a
//! sweep survives sessions used while it runs), a stuck committer fails the
//! store, and a checkpointer that dies poisons it.
//!
//! [`GatedEngine`] is the memory engine with a gate in front of every
//! segment's `write_at`: armed, the committer's write waits there until the
//! test lets it pass (or fail, as a process that died before its `pwrite`, or
//! a disk returning EIO, would).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

use std::io;
use std::ops::Bound;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::Resources;
use crate::engine::mem::MemEngine;
use crate::engine::{Direction, Engine, LogDir, Pairs, SegmentFile, Tree, Write};
use crate::error::Error;
use crate::keys::ResourceKind;
use crate::log::LogStore;

/// Where the committer's writes wait while the gate is armed.
#[derive(Debug, Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    armed: bool,
    /// Writes that reached the gate while it was armed.
    entered: u64,
    /// Writes allowed through, each `true` if it must fail.
    permits: Vec<bool>,
    /// Whether an engine sync on the checkpointer's thread panics, as a bug
    /// there would.
    checkpointer_panics: bool,
}

impl Gate {
    fn arm(&self) {
        self.state.lock().unwrap().armed = true;
    }

    fn disarm(&self) {
        let mut state = self.state.lock().unwrap();
        state.armed = false;
        drop(state);
        self.changed.notify_all();
    }

    /// Waits until `n` writes in all reached the armed gate.
    fn wait_entered(&self, n: u64) {
        let state = self.state.lock().unwrap();
        let (_state, timeout) =
            self.changed.wait_timeout_while(state, Duration::from_secs(30), |s| s.entered < n).unwrap();
        assert!(!timeout.timed_out(), "the committer never reached the gate");
    }

    /// Lets one waiting write through; `fail` makes it fail.
    fn pass_one(&self, fail: bool) {
        self.state.lock().unwrap().permits.push(fail);
        self.changed.notify_all();
    }

    /// Called by a segment's `write_at`: `Err` if the write must fail.
    fn pass(&self) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        if !state.armed {
            return Ok(());
        }
        state.entered += 1;
        self.changed.notify_all();
        loop {
            if !state.armed {
                return Ok(());
            }
            if !state.permits.is_empty() {
                let fail = state.permits.remove(0);
                return if fail { Err(io::Error::other("injected: the write never happened")) } else { Ok(()) };
            }
            state = self.changed.wait(state).unwrap();
        }
    }
}

#[derive(Debug, Clone)]
struct GatedEngine {
    inner: MemEngine,
    log: Arc<GatedLogDir>,
}

impl GatedEngine {
    fn new(inner: MemEngine, gate: Arc<Gate>) -> GatedEngine {
        let log = Arc::new(GatedLogDir { inner: inner.log_dir(), gate });
        GatedEngine { inner, log }
    }
}

#[derive(Debug)]
struct GatedLogDir {
    inner: Arc<dyn LogDir>,
    gate: Arc<Gate>,
}

#[derive(Debug)]
struct GatedSegment {
    inner: Arc<dyn SegmentFile>,
    gate: Arc<Gate>,
}

impl Engine for GatedEngine {
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

    fn range_within(
        &self,
        tree: Tree,
        range: (Bound<Vec<u8>>, Bound<Vec<u8>>),
        direction: Direction,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Pairs, Error> {
        self.inner.range_within(tree, range, direction, limit, max_bytes)
    }

    fn apply(&self, tree: Tree, writes: Vec<Write>) -> Result<(), Error> {
        self.inner.apply(tree, writes)
    }

    fn sync(&self) -> Result<(), Error> {
        let on_checkpointer = std::thread::current().name() == Some("logbook-checkpoint");
        if on_checkpointer && self.log.gate.state.lock().unwrap().checkpointer_panics {
            panic!("injected: a bug in the checkpointer");
        }
        self.inner.sync()
    }

    fn log_dir(&self) -> Arc<dyn LogDir> {
        Arc::clone(&self.log) as Arc<dyn LogDir>
    }

    fn size_on_disk(&self) -> Result<u64, Error> {
        Ok(0)
    }
}

impl LogDir for GatedLogDir {
    fn segments(&self) -> io::Result<Vec<u64>> {
        self.inner.segments()
    }

    fn open_segment(&self, number: u64, create: bool) -> io::Result<Arc<dyn SegmentFile>> {
        let inner = self.inner.open_segment(number, create)?;
        Ok(Arc::new(GatedSegment { inner, gate: Arc::clone(&self.gate) }))
    }

    fn size_on_disk(&self) -> io::Result<u64> {
        Ok(0)
    }

    fn forget_cached(&self, from: u64) -> io::Result<()> {
        self.inner.forget_cached(from)
    }
}

impl SegmentFile for GatedSegment {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.gate.pass()?;
        self.inner.write_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
}

/// Waits until `done` holds, failing the test with `what` after a deadline.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::yield_now();
    }
}

fn get(store: &impl Resources, key: &[u8]) -> Option<Vec<u8>> {
    store.get_resource(ResourceKind::Session, key).unwrap()
}

/// Goal: a resource write that never reached the log is never
/// durable, so after a crash the resource holds its last logged value.
/// Method: the committer is held before its `pwrite` of the batch holding
/// the write `v1 -> v2` (the swap has already put `v2` in the engine, as
/// `swap_resource` does before submitting); meanwhile a checkpoint runs (the
/// background one every 2 s does the same), which makes the engine durable;
/// then the process dies before the `pwrite` (modelled: that write fails,
/// then `lose_unsynced` drops what was never synced, as a SIGKILL drops
/// sled's unflushed memory or a power loss the page cache).
///
/// When the swap put `v2` in the engine before its batch was durable, the
/// restart read `v2`: a value the log never held and no caller was told
/// succeeded (recovery replays the log forward and never undoes one).
#[test]
fn a_resource_write_that_never_reached_the_log_is_not_durable_after_a_crash() {
    let mem = MemEngine::new();
    let gate = Arc::new(Gate::default());
    let store = LogStore::with_engine(GatedEngine::new(mem.clone_handle(), Arc::clone(&gate))).unwrap();
    store.swap_resource(ResourceKind::Session, b"k", None, Some(b"v1")).unwrap().unwrap();
    store.checkpoint().unwrap();

    gate.arm();
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || store.swap_resource(ResourceKind::Session, b"k", Some(b"v1"), Some(b"v2")))
    };
    gate.wait_entered(1);
    // The committer is about to write the batch: nothing of it is in the log.
    // Readers see only what is durable.
    assert_eq!(get(&store, b"k").as_deref(), Some(&b"v1"[..]));
    store.checkpoint().unwrap();
    // The process dies before its `pwrite`.
    gate.pass_one(true);
    assert!(writer.join().unwrap().is_err(), "the write was not acknowledged");
    gate.disarm();
    store.crash();
    mem.lose_unsynced().unwrap();

    let store = LogStore::with_engine(mem.clone_handle()).unwrap();
    assert_eq!(
        get(&store, b"k").as_deref(),
        Some(&b"v1"[..]),
        "the resource holds a value its log never had (an unacknowledged write came back after the crash)"
    );
}

/// Goal: resource writes whose batches fail leave the value the log holds,
/// for two writers of one key. Method: W1 swaps `v0 -> v1` and its batch is
/// held in its write; W2 swaps `v1 -> v2` (compared against W1's pending
/// value) into the next batch; the disk fails W1's batch, so the store is
/// poisoned and W2's batch fails too. Meanwhile readers see `v0`. When each failed write undid its own
/// change in the engine, W1's undo found `v2` and gave up and W2's put `v1`
/// back: the value of a write whose caller was told it failed, kept after a
/// restart.
#[test]
fn two_failed_resource_writes_to_one_key_leave_the_value_the_log_holds() {
    let mem = MemEngine::new();
    let gate = Arc::new(Gate::default());
    let store = LogStore::with_engine(GatedEngine::new(mem.clone_handle(), Arc::clone(&gate))).unwrap();
    store.swap_resource(ResourceKind::Session, b"k", None, Some(b"v0")).unwrap().unwrap();
    store.checkpoint().unwrap();
    let spawn_swap = |old: &'static [u8], new: &'static [u8]| {
        let store = store.clone();
        std::thread::spawn(move || store.swap_resource(ResourceKind::Session, b"k", Some(old), Some(new)))
    };

    gate.arm();
    let waits = store.barrier_stats().n_waits;
    let w1 = spawn_swap(b"v0", b"v1");
    gate.wait_entered(1);
    let w2 = spawn_swap(b"v1", b"v2");
    wait_until("W2 is queued", || store.barrier_stats().n_waits == waits + 2);
    // Readers see the durable value only; the engine never held W1's or W2's.
    assert_eq!(get(&store, b"k").as_deref(), Some(&b"v0"[..]), "nothing durable changed yet");
    // A third writer comparing against the durable value loses to W2's.
    let refused = store.swap_resource(ResourceKind::Session, b"k", Some(b"v0"), Some(b"v3")).unwrap();
    assert_eq!(refused, Err(Some(b"v2".to_vec())), "compared against the latest queued write");
    // The disk fails W1's batch; the store is poisoned, W2's batch fails next.
    gate.pass_one(true);
    assert!(w1.join().unwrap().is_err(), "W1 is told its write failed");
    assert!(w2.join().unwrap().is_err(), "W2 is told its write failed");
    gate.disarm();
    let live = get(&store, b"k");
    drop(store);
    let store = LogStore::with_engine(mem.clone_handle()).unwrap();
    let reopened = get(&store, b"k");
    assert_eq!(
        (live.as_deref(), reopened.as_deref()),
        (Some(&b"v0"[..]), Some(&b"v0"[..])),
        "both writes failed; the log holds v0 (before and after a restart)"
    );
}

/// Goal (docs/format.md, section 7): the tail caches hold at most
/// 128 MiB in all, the least recently used sessions' caches dropped first.
/// Method: 40 sessions of 128 records of 32 KiB (compressible, so the log is
/// small); their caches are emptied after each append (so no append ever
/// finds the total over budget and asks for a sweep); then each session is
/// read once to its head, which installs its tail (about 4 MiB) in its cache.
/// Nothing else happens: every record is checkpointed.
///
/// When only appends asked for a sweep (the checkpointer sweeps when asked or
/// when a checkpoint is due), reads alone grew the caches without bound
/// (4 MiB times the sessions read).
#[test]
fn reads_alone_keep_the_tail_caches_within_their_global_budget() {
    use logbook_core::event::{ContentBlock, Event, UserMessage};
    use logbook_core::{Entry, EventId, Seq, SessionId, Timestamp};

    use crate::session::{TAIL_CACHE_BYTES, TAIL_CACHE_SESSION_BYTES};
    use crate::{Append, Read};

    let store = LogStore::in_memory().unwrap();
    let text = "lorem ipsum ".repeat(32 * 1024 / 12);
    let n_sessions = (TAIL_CACHE_BYTES / TAIL_CACHE_SESSION_BYTES) as u64 + 8;
    let sessions: Vec<SessionId> =
        (0..n_sessions).map(|n| SessionId::from_parts(1_764_000_000_000 + n, u128::from(n) + 1)).collect();
    for (n, session) in sessions.iter().enumerate() {
        let entries: Vec<Entry> = (0..128u64)
            .map(|i| Entry {
                id: EventId::from_parts(1_764_000_000_000 + i, (n as u128) << 16 | u128::from(i)),
                event: Event::UserMessage(UserMessage { content: vec![ContentBlock::text(text.clone())] }),
                at: Timestamp::from_unix_micros(1_764_000_000_000_000 + i as i64),
            })
            .collect();
        store.append(*session, Seq::ZERO, &entries).unwrap();
        store.clear_caches();
    }
    store.checkpoint().unwrap();
    for session in &sessions {
        assert_eq!(store.read(*session, Seq::ZERO, 1000).unwrap().len(), 128);
    }
    let held = || store.inner.core.cache_bytes.load(std::sync::atomic::Ordering::Relaxed);
    wait_until("the tail caches shrink to their budget", || held() <= TAIL_CACHE_BYTES);
}

/// Goal: a cache sweep orders the sessions by a last use that reads and
/// appends keep changing while it runs, and survives it. Method: the caches
/// are counted as over budget (so every sweep orders every session), and two
/// threads keep changing every session's last use while the sweeps run.
///
/// When the sweep sorted by the live value, a key that changed during the
/// sort broke the sort's total order; the standard library's sort may answer
/// that with a panic, which killed the checkpointer (1 run in 24 of the test
/// above, under load).
#[test]
fn a_cache_sweep_survives_sessions_used_while_it_orders_them() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use crate::Append;

    let store = LogStore::in_memory().unwrap();
    for n in 0..64u64 {
        let session = logbook_core::SessionId::from_parts(1_764_000_000_000 + n, u128::from(n) + 1);
        store.append(session, logbook_core::Seq::ZERO, &sample_entries(n, 1)).unwrap();
    }
    let core = &store.inner.core;
    let slots: Vec<_> = core.slots.read().unwrap().values().cloned().collect();
    let counted = core.cache_bytes.swap(usize::MAX / 2, Ordering::Relaxed);
    let stop = AtomicBool::new(false);
    let sweeps = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for salt in 1..=2u64 {
            let (slots, stop) = (&slots, &stop);
            scope.spawn(move || {
                let mut x = salt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                while !stop.load(Ordering::Relaxed) {
                    for slot in slots {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        slot.last_used.store(x % 1000, Ordering::Relaxed);
                    }
                }
            });
        }
        let sweeping = scope.spawn(|| {
            for _ in 0..20_000 {
                crate::checkpoint::sweep_caches(core);
                sweeps.fetch_add(1, Ordering::Relaxed);
            }
        });
        let swept = sweeping.join();
        stop.store(true, Ordering::Relaxed);
        assert!(swept.is_ok(), "a sweep panicked after {} sweeps", sweeps.load(Ordering::Relaxed));
    });
    // Put back the true count: what it was, less what the sweeps cleared.
    let cleared = usize::MAX / 2 - core.cache_bytes.load(Ordering::Relaxed);
    core.cache_bytes.store(counted - cleared, Ordering::Relaxed);
    assert!(store.poisoned().is_none());
}

/// Goal: a checkpointer that dies (by a bug that panics) poisons the store,
/// which says why, instead of leaving it silently without checkpoints, cache
/// sweeps or prepared segments. Method: the engine panics when the
/// checkpointer syncs it, in the checkpoint due for a pending record.
#[test]
fn a_checkpointer_that_dies_poisons_the_store() {
    use crate::Append;

    let (store, gate, session) = gated_store(MemEngine::new(), crate::WalOptions::default().stall_limit);
    gate.state.lock().unwrap().checkpointer_panics = true;
    store.append(session, logbook_core::Seq::ZERO, &sample_entries(0, 1)).unwrap();
    wait_until("the store is poisoned", || store.poisoned().is_some());
    let reason = store.poisoned().unwrap_or_default();
    assert!(reason.contains("checkpointer"), "poisoned for another reason: {reason}");
    assert!(store.append(session, logbook_core::Seq::new(1), &sample_entries(1, 1)).is_err());
}

/// Goal: a batch the committer never finishes fails the store instead of
/// blocking its writers forever, and closing the store does not wait for the
/// stuck committer. Method: the committer is held in its `pwrite` (as sled
/// held it after an I/O error, or a disk that stopped answering would) past
/// a stall limit of 50 ms; the append returns an error while the write is
/// still held, later appends fail at once, and the store closes. The
/// committer then finishes the write: its writer's answer stays the failure.
#[test]
fn a_batch_that_never_finishes_fails_the_store() {
    let HeldAppend { store, gate, session, answered } = held_append(MemEngine::new());
    // The write is still held: the watchdog, not the committer, answers.
    match answered.recv_timeout(Duration::from_secs(30)).expect("the stalled append never answered") {
        Err(crate::AppendError::Store(Error::Poisoned { reason })) => assert!(reason.contains("committer"), "{reason}"),
        other => panic!("the stalled append answered {other:?}"),
    }
    assert!(store.poisoned().is_some());
    assert!(crate::Append::append(&store, session, logbook_core::Seq::new(1), &sample_entries(2, 1)).is_err());
    // Closing does not wait for the stuck committer.
    drop(store);
    gate.disarm();
}

/// Goal: closing the store while its committer is stuck neither hangs nor
/// leaves the stuck batch's writer unanswered, even when the close begins
/// before the stall limit is reached (the watchdog keeps watching until the
/// store has closed). Method (from the review of the watchdog): an append is
/// submitted and held in its `pwrite`, its writer keeps no store handle (an
/// async append whose request went away), and the store is dropped at once.
#[test]
fn closing_while_the_committer_is_stuck_does_not_hang() {
    let gate = Arc::new(Gate::default());
    let wal = crate::WalOptions { stall_limit: Duration::from_millis(50), ..crate::WalOptions::default() };
    let store = LogStore::with_options(GatedEngine::new(MemEngine::new(), Arc::clone(&gate)), &wal).unwrap();
    let session = logbook_core::SessionId::from_parts(1, 1);
    gate.arm();
    let pending = store.append_submit(session, logbook_core::Seq::ZERO, &sample_entries(0, 1)).unwrap();
    gate.wait_entered(1);
    let (tx, closed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(store);
        let _ = tx.send(());
    });
    closed.recv_timeout(Duration::from_secs(30)).expect("closing the store hung behind a stuck committer");
    let (tx, answered) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(pending.wait().is_ok()));
    let ok = answered.recv_timeout(Duration::from_secs(30)).expect("the stuck append was never answered");
    assert!(!ok, "the stuck append was acknowledged");
    gate.disarm();
}

/// Goal: a stuck batch fails even when the store was poisoned by something
/// else meanwhile (a failed checkpoint), rather than leave its writer
/// blocked. Method (from the review of the watchdog): the committer is held
/// in a batch's `pwrite`, then a checkpoint fails.
#[test]
fn a_stuck_batch_fails_even_when_the_store_was_poisoned_meanwhile() {
    let mem = MemEngine::new();
    let HeldAppend { store, gate, answered, .. } = held_append(mem.clone_handle());
    mem.fail_syncs(true);
    assert!(store.checkpoint().is_err());
    assert!(store.poisoned().is_some());
    let answer = answered.recv_timeout(Duration::from_secs(30)).expect("the stuck append was never answered");
    assert!(answer.is_err(), "the stuck append was acknowledged");
    drop(store);
    gate.disarm();
}

/// A store over `mem` with a stall limit of 50 ms, one append done, and a
/// second one held in the committer's `pwrite`; its answer comes on
/// `answered`.
struct HeldAppend {
    store: LogStore<GatedEngine>,
    gate: Arc<Gate>,
    session: logbook_core::SessionId,
    answered: std::sync::mpsc::Receiver<Result<Vec<logbook_core::Record>, crate::AppendError>>,
}

fn held_append(mem: MemEngine) -> HeldAppend {
    let (store, gate, session) = gated_store(mem, Duration::from_millis(50));
    crate::Append::append(&store, session, logbook_core::Seq::ZERO, &sample_entries(0, 1)).unwrap();
    let answered = hold_append(&store, &gate, session, 1);
    HeldAppend { store, gate, session, answered }
}

/// A store over `mem` whose committer can be held (by `gate`), with a stall
/// limit of `stall_limit`, and the session the tests append to.
fn gated_store(mem: MemEngine, stall_limit: Duration) -> (LogStore<GatedEngine>, Arc<Gate>, logbook_core::SessionId) {
    let gate = Arc::new(Gate::default());
    let wal = crate::WalOptions { stall_limit, ..crate::WalOptions::default() };
    let store = LogStore::with_options(GatedEngine::new(mem, Arc::clone(&gate)), &wal).unwrap();
    (store, gate, logbook_core::SessionId::from_parts(1, 1))
}

/// Appends one entry at `seq` on another thread and returns once the
/// committer is held in its `pwrite` of it; the answer comes on the receiver.
fn hold_append(
    store: &LogStore<GatedEngine>,
    gate: &Gate,
    session: logbook_core::SessionId,
    seq: u64,
) -> std::sync::mpsc::Receiver<Result<Vec<logbook_core::Record>, crate::AppendError>> {
    gate.arm();
    let (tx, answered) = std::sync::mpsc::channel();
    {
        let store = store.clone();
        let batch = sample_entries(seq, 1);
        std::thread::spawn(move || {
            tx.send(crate::Append::append(&store, session, logbook_core::Seq::new(seq), &batch))
        });
    }
    gate.wait_entered(1);
    answered
}

/// `n` sample entries, ids from `first`.
fn sample_entries(first: u64, n: usize) -> Vec<logbook_core::Entry> {
    logbook_core::event::sample_events()
        .into_iter()
        .take(n)
        .enumerate()
        .map(|(k, event)| logbook_core::Entry {
            id: logbook_core::EventId::from_parts(1, u128::from(first) + k as u128),
            event,
            at: logbook_core::Timestamp::from_unix_micros(1),
        })
        .collect()
}

/// Goal: when background work on the engine (here a checkpoint) stalls the
/// store first, the batch in flight fails too, however young: it waits on the
/// same device, or behind the stuck work's engine lock. Method (from the
/// second review of the watchdog): with a stall limit of 1 s, a checkpoint is
/// put on the watchdog's books and never ends; 500 ms later (the pause is the
/// stimulus) an append is held in its `pwrite`, so the checkpoint stalls the
/// store while the batch is half the limit old (the margin absorbs a slow
/// scheduler).
#[test]
fn a_stalled_checkpoint_fails_the_batch_in_flight() {
    let (store, gate, session) = gated_store(MemEngine::new(), Duration::from_secs(1));
    let stuck = store.inner.core.queue.background_work("a checkpoint");
    std::thread::sleep(Duration::from_millis(500));
    let answered = hold_append(&store, &gate, session, 0);
    let answer = answered.recv_timeout(Duration::from_secs(30)).expect("the held append was never answered");
    match answer {
        Err(crate::AppendError::Store(Error::Poisoned { reason })) => {
            assert!(reason.contains("checkpoint"), "{reason}")
        }
        other => panic!("the held append answered {other:?}"),
    }
    drop(stuck);
    drop(store);
    gate.disarm();
}
