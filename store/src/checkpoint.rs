//! Checkpoints: moving the durable records' locations from the sessions'
//! pending lists into the engine's index, in the background.
//!
//! A checkpoint takes the log's durable end `L`, writes the location chunks,
//! type-index spans and heads of every record before `L` in one engine batch,
//! makes the engine durable, then records `L` (and the batch number found
//! there) as the checkpoint and makes that durable too. Recovery replays the
//! log from the recorded checkpoint. Resource values and blob and fork
//! locations are written to the engine as they happen; the checkpoint only
//! makes them durable. Nothing is deleted from the log, so a checkpoint never
//! races a truncation: the log is the truth, the checkpoint a bookmark in it.
//!
//! The checkpointer thread runs one when [`CHECKPOINT_BYTES`] of log were
//! written since the last, every [`CHECKPOINT_INTERVAL`] if anything is
//! pending, and when the store closes. It also trims the tail caches when they
//! hold more than their budget, and prepares the log's next segment (zeroes
//! made durable, see [`crate::engine::LogDir::prepare_segment`]) once the
//! current one is a quarter full, so that the committer never waits for it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::engine::{Engine, Tree};
use crate::error::Error;
use crate::index;
use crate::keys::{self, MetaKey};
use crate::log::Core;
use crate::session::{Slot, TAIL_CACHE_BYTES};
use crate::wal::{BatchHeader, offset_of, segment_of};

/// Log bytes after which a checkpoint runs: bounds what recovery replays and
/// what the pending lists hold (≈ 40k records of 1.7 KB, ≈ 2 MB of locations).
pub const CHECKPOINT_BYTES: u64 = 64 << 20;

/// A checkpoint also runs this long after the last one if records are
/// pending: it bounds what recovery replays, and the stretch of log whose
/// loss after a crash recovery could not tell from the crash (see
/// `docs/format.md`, 6.4). A checkpoint costs two sled syncs in the background.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(2);

/// The checkpointer's shared state.
#[derive(Debug)]
pub(crate) struct Checkpoints {
    state: Mutex<State>,
    wake: Condvar,
    /// Slots with pending records, not yet taken by a checkpoint.
    dirty: Mutex<Vec<Arc<Slot>>>,
    /// Held for a whole checkpoint: two at once could record a checkpoint
    /// that covers records the other has not indexed yet.
    running: Mutex<()>,
}

#[derive(Debug)]
struct State {
    /// The last checkpoint's LSN and batch number.
    lsn: u64,
    batch: u64,
    /// The log's durable end and the batch number that goes there.
    end: u64,
    next_batch: u64,
    bytes_since: u64,
    sweep: bool,
    /// A segment to prepare, and the highest one asked for so far.
    prepare: Option<u64>,
    prepare_asked: u64,
    segment_bytes: u64,
    stop: bool,
}

impl Checkpoints {
    pub(crate) fn new(checkpoint: (u64, u64), end: u64, next_batch: u64, segment_bytes: u64) -> Checkpoints {
        Checkpoints {
            state: Mutex::new(State {
                lsn: checkpoint.0,
                batch: checkpoint.1,
                end,
                next_batch,
                // Replayed log since the checkpoint: checkpoint soon if any.
                bytes_since: if end > checkpoint.0 { CHECKPOINT_BYTES / 2 } else { 0 },
                sweep: false,
                prepare: None,
                prepare_asked: segment_of(end),
                segment_bytes,
                stop: false,
            }),
            wake: Condvar::new(),
            dirty: Mutex::new(Vec::new()),
            running: Mutex::new(()),
        }
    }

    /// Called by the committer after each durable batch.
    pub(crate) fn note_written(&self, header: &BatchHeader) {
        let Ok(mut state) = self.lock() else { return };
        state.bytes_since += header.end().saturating_sub(header.lsn);
        state.end = header.end();
        state.next_batch = header.batch + 1;
        let next_segment = segment_of(header.lsn) + 1;
        let ask = offset_of(header.end()) >= state.segment_bytes / 4 && next_segment > state.prepare_asked;
        if ask {
            state.prepare = Some(next_segment);
            state.prepare_asked = next_segment;
        }
        if ask || state.bytes_since >= CHECKPOINT_BYTES {
            drop(state);
            self.wake.notify_one();
        }
    }

    pub(crate) fn mark_dirty(&self, slot: &Arc<Slot>) {
        if !slot.dirty.swap(true, Ordering::AcqRel)
            && let Ok(mut dirty) = self.dirty.lock()
        {
            dirty.push(Arc::clone(slot));
        }
    }

    pub(crate) fn request_sweep(&self) {
        if let Ok(mut state) = self.lock()
            && !state.sweep
        {
            state.sweep = true;
            drop(state);
            self.wake.notify_one();
        }
    }

    pub(crate) fn stop(&self) {
        if let Ok(mut state) = self.lock() {
            state.stop = true;
        }
        self.wake.notify_all();
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, Error> {
        self.state.lock().map_err(|_| Error::Engine("checkpoint lock poisoned".to_owned()))
    }
}

/// The checkpointer's exit guard. Leaving [`run`] other than by a stop (a
/// panic, a poisoned lock) would leave the store running without checkpoints,
/// cache sweeps or prepared segments: recovery would replay ever more log and
/// the caches would grow without bound, silently. Instead the store is
/// poisoned, like a failed checkpoint poisons it, and says why.
struct Abandon<'a, E: Engine> {
    core: &'a Core<E>,
    asked_to_stop: bool,
}

impl<E: Engine> Drop for Abandon<'_, E> {
    fn drop(&mut self) {
        if !self.asked_to_stop {
            self.core.queue.poison("the checkpointer stopped unexpectedly".to_owned());
        }
    }
}

/// The checkpointer thread's body.
pub(crate) fn run<E: Engine>(core: &Core<E>) {
    let mut exit = Abandon { core, asked_to_stop: false };
    exit.asked_to_stop = serve(core);
}

/// Checkpoints, sweeps and prepares segments until asked to stop (`true`) or
/// its state's lock is poisoned (`false`).
fn serve<E: Engine>(core: &Core<E>) -> bool {
    let checkpoints = &core.checkpoints;
    // Counted from the last checkpoint (or from when nothing was pending), not
    // from the last wake-up: sweeps and preparations wake the thread often.
    let mut deadline = Instant::now() + CHECKPOINT_INTERVAL;
    // Once a checkpoint failed (or the store was poisoned), none is due any
    // more; the thread stays for the cache sweeps, which a store still
    // serving reads needs.
    let mut checkpoints_off = false;
    loop {
        let Ok(mut state) = checkpoints.lock() else { return false };
        let due = loop {
            if state.stop {
                return true;
            }
            if let Some(segment) = state.prepare.take() {
                let segment_bytes = state.segment_bytes;
                drop(state);
                // On failure the committer creates the segment itself, unprepared.
                let watched = core.queue.background_work("a segment's preparation");
                let _ = core.log.prepare_segment(segment, segment_bytes);
                drop(watched);
                let Ok(next) = checkpoints.lock() else { return false };
                state = next;
                continue;
            }
            if state.sweep {
                state.sweep = false;
                break false;
            }
            if !checkpoints_off && state.bytes_since >= CHECKPOINT_BYTES {
                break true;
            }
            let now = Instant::now();
            if now >= deadline {
                if !checkpoints_off && state.end > state.lsn {
                    break true;
                }
                deadline = now + CHECKPOINT_INTERVAL;
            }
            let Ok((next, _)) = checkpoints.wake.wait_timeout(state, deadline - now) else { return false };
            state = next;
        };
        drop(state);
        sweep_caches(core);
        if due {
            deadline = Instant::now() + CHECKPOINT_INTERVAL;
            // On failure the store is poisoned (see `checkpoint`).
            checkpoints_off = checkpoint(core).is_err();
        }
    }
}

/// Runs one checkpoint (see the module documentation). Fail-stop, like the
/// log: a failed one poisons the store (the engine may have lost pages the
/// kernel failed to write), and none runs on a poisoned store (a sync after
/// a failed one proves nothing, and could record as durable what is not).
pub(crate) fn checkpoint<E: Engine>(core: &Core<E>) -> Result<(), Error> {
    core.check_poisoned()?;
    let result = write_checkpoint(core);
    if let Err(err) = &result {
        core.queue.poison(format!("checkpoint failed: {err}"));
    }
    result
}

fn write_checkpoint<E: Engine>(core: &Core<E>) -> Result<(), Error> {
    let checkpoints = &core.checkpoints;
    let _running = checkpoints.running.lock().map_err(|_| Error::Engine("checkpoint lock poisoned".to_owned()))?;
    let _watched = core.queue.background_work("a checkpoint");
    let (target, next_batch) = {
        let state = checkpoints.lock()?;
        (state.end, state.next_batch)
    };
    let taken =
        std::mem::take(&mut *checkpoints.dirty.lock().map_err(|_| Error::Engine("dirty list poisoned".to_owned()))?);
    let mut writes = Vec::new();
    let mut cuts = Vec::new();
    for slot in taken {
        slot.dirty.store(false, Ordering::Release);
        let (first, records) = {
            let index = slot.lock_index()?;
            let n = index.pending.iter().take_while(|p| p.location.lsn < target).count();
            (index.indexed_next, index.pending.iter().take(n).copied().collect::<Vec<_>>())
        };
        if records.is_empty() {
            if !slot.lock_index()?.pending.is_empty() {
                checkpoints.mark_dirty(&slot);
            }
            continue;
        }
        writes.extend(index::checkpoint_writes(&core.engine, slot.id, first, &records)?);
        cuts.push((slot, records.len()));
    }
    if !writes.is_empty() {
        core.engine.apply(Tree::Log, writes)?;
    }
    for (slot, n) in &cuts {
        let mut index = slot.lock_index()?;
        index.pending.drain(..*n);
        index.indexed_next = seq_plus(index.indexed_next, *n);
        let more = !index.pending.is_empty();
        drop(index);
        if more {
            checkpoints.mark_dirty(slot);
        }
    }
    core.engine.sync()?;
    let value = keys::checkpoint_value(target, next_batch).to_vec();
    core.engine.apply(Tree::Meta, vec![(MetaKey::Checkpoint.as_bytes().to_vec(), Some(value))])?;
    core.engine.sync()?;
    let mut state = checkpoints.lock()?;
    // Batches written during the checkpoint count towards the next one only
    // roughly; the bound on replay stays within a factor of two.
    state.bytes_since = 0;
    state.lsn = target;
    state.batch = next_batch;
    drop(state);
    core.queue.count_checkpoint();
    Ok(())
}

fn seq_plus(seq: logbook_core::Seq, n: usize) -> logbook_core::Seq {
    logbook_core::Seq::new(seq.get() + n as u64)
}

/// Drops the least recently used sessions' tail caches until all of them hold
/// at most three quarters of [`TAIL_CACHE_BYTES`].
pub(crate) fn sweep_caches<E: Engine>(core: &Core<E>) {
    if core.cache_bytes.load(Ordering::Relaxed) <= TAIL_CACHE_BYTES {
        return;
    }
    let mut slots: Vec<Arc<Slot>> = core.slots.read().map(|s| s.values().cloned().collect()).unwrap_or_default();
    // Each session's last use is read once, before the sort: reads and
    // appends change it meanwhile, and a key that changes during `sort_by_key`
    // breaks the sort's total order, which the standard library's sort may
    // answer with a panic (it did, and the checkpointer died with it).
    slots.sort_by_cached_key(|slot| slot.last_used.load(Ordering::Relaxed));
    for slot in slots {
        if core.cache_bytes.load(Ordering::Relaxed) <= TAIL_CACHE_BYTES / 4 * 3 {
            break;
        }
        if let Ok(mut cache) = slot.lock_cache() {
            cache.clear(&core.cache_bytes);
        }
    }
}
