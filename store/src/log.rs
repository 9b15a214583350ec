//! The store's logic over any engine: appends through the write-ahead log,
//! reads of durable records, forks, quarantine of corrupt sessions.
//!
//! An append encodes, hashes and compresses its entries without any lock,
//! then, under the session's write lock, checks the expected seq, seals the
//! records onto the chain and copies them into the open batch of the group
//! committer ([`crate::commit`]). It returns once the committer has made that
//! batch durable and published it: indexed the records in the session's
//! pending list and moved its durable head. Nothing is read, streamed or
//! acknowledged before it is durable. Checkpoints ([`crate::checkpoint`]) move
//! pending records into the engine's index in the background.
//!
//! A read takes records from the session's tail cache when it holds them, or
//! else locates them through the index and reads them from the log, checking
//! each one's place and hash and the links between them. A fork's reads of
//! its inherited prefix are served by the sessions that store it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use logbook_core::limits::{MAX_APPEND_BYTES, MAX_EVENT_BYTES, MAX_EVENTS_PER_APPEND, MAX_EVENTS_PER_SESSION};
use logbook_core::{Body, ChainHash, Digest, Entry, EventType, Record, Seq, SessionId, chain};

use crate::budget::ReadBudget;
use crate::checkpoint::Checkpoints;
use crate::commit::{BarrierStats, CommitQueue, Publisher, Ticket};
use crate::engine::mem::MemEngine;
use crate::engine::sled::{SledEngine, SledOptions};
use crate::engine::{Engine, LogDir, Tree};
use crate::error::{AppendError, Corruption, Error, OpenError, StoreCorruption};
use crate::index::{self, Located};
use crate::keys;
use crate::session::{PendingRecord, RECORD_OVERHEAD_BYTES, Slot, WriteHead, counted_size};
use crate::subscription::Subscription;
use crate::wal::{self, BatchBuf, BatchHeader, BodyCodec, ForkEntry, Location, RECORD_HEADER_BYTES, WalOptions};
use crate::{Append, Head, MAX_READ_BYTES, MAX_READ_RECORDS, Read, Subscribe, frame};

/// The layout version this binary reads and writes. See `docs/format.md`.
pub const STORAGE_VERSION: u32 = 2;

/// Records checked at the end of every session's chain on open.
pub(crate) const TAIL_CHECK_RECORDS: usize = 8;

/// sled's directory inside a data directory; the log's segments are in `log/`.
pub const SLED_DIR: &str = crate::engine::sled::SLED_DIR;

/// A store over engine `E`. Cheap to clone; clones share everything. Dropping
/// the last clone stops the committer and writes a final checkpoint.
#[derive(Debug)]
pub struct LogStore<E: Engine> {
    pub(crate) inner: Arc<Inner<E>>,
}

impl<E: Engine> Clone for LogStore<E> {
    fn clone(&self) -> Self {
        LogStore { inner: Arc::clone(&self.inner) }
    }
}

/// The store and its background threads.
#[derive(Debug)]
pub(crate) struct Inner<E: Engine> {
    pub(crate) core: Arc<Core<E>>,
    /// The committer and the checkpointer.
    threads: Mutex<Vec<Worker>>,
    /// Runs until the store has closed (see `commit.rs`).
    watchdog: Mutex<Option<JoinHandle<()>>>,
    /// Set by [`LogStore::crash`]: close without the final checkpoint.
    crashed: std::sync::atomic::AtomicBool,
}

/// Everything the store's threads share.
#[derive(Debug)]
pub(crate) struct Core<E: Engine> {
    pub(crate) engine: E,
    pub(crate) log: Arc<dyn LogDir>,
    pub(crate) slots: RwLock<HashMap<SessionId, Arc<Slot>>>,
    pub(crate) queue: CommitQueue<Vec<Effect>>,
    pub(crate) checkpoints: Checkpoints,
    /// Damage found on open outside any one session.
    pub(crate) damage: Vec<StoreCorruption>,
    /// Bytes held by all tail caches.
    pub(crate) cache_bytes: AtomicUsize,
    /// The byte budget of one read: [`MAX_READ_BYTES`] unless a test lowered it.
    pub(crate) read_bytes: AtomicUsize,
    ticks: AtomicU64,
    /// Resource writes in the log's queue, not yet durable. Held while a
    /// resource write is compared and queued, so that writes of a key are
    /// compared against the latest queued one and reach the log in order.
    pub(crate) resources: Mutex<crate::kv::PendingResources>,
}

/// What publishing a durable batch does, per write.
#[derive(Debug)]
pub(crate) enum Effect {
    /// An append's records: index them and move the session's durable head.
    Records { slot: Arc<Slot>, first: Seq, records: Vec<(u32, u32, u16, ChainHash)> },
    /// A blob: record where it is.
    Blob { digest: Digest, offset: u32, len: u32 },
    /// A fork: record its origin and make the session visible.
    Fork { slot: Arc<Slot>, entry: ForkEntry },
    /// A resource write: the engine takes the value only now that it is
    /// durable (see [`crate::kv::PendingResources`]).
    Resource { key: Vec<u8>, framed: Option<Vec<u8>>, write: u64 },
}

/// The mode of a data directory the store creates: traversable by others (the
/// sandbox user reaches the session directories through it), listable by the
/// server's user only.
pub(crate) const DATA_DIR_MODE: u32 = 0o711;

impl LogStore<SledEngine> {
    /// Opens (or creates) the store in the data directory `dir`: sled in
    /// `dir/sled`, the log in `dir/log`. A storage version 1 directory is
    /// migrated first.
    pub fn open(dir: &Path, options: &SledOptions) -> Result<Self, OpenError> {
        LogStore::open_with(dir, options, &WalOptions::default())
    }

    /// [`LogStore::open`] with the log written as `wal` says.
    pub fn open_with(dir: &Path, options: &SledOptions, wal: &WalOptions) -> Result<Self, OpenError> {
        // Traversable (the sandbox user reaches `sandboxes/` through it) but
        // not listable; what is in it is private (see `engine::files`).
        crate::engine::files::create_dir_durably(dir, DATA_DIR_MODE)
            .map_err(|err| OpenError::Io { path: dir.to_owned(), reason: err.to_string() })?;
        let engine = SledEngine::open(dir, options)?;
        crate::migrate::migrate_if_needed(&engine, dir)?;
        LogStore::with_options(engine, wal)
    }
}

impl LogStore<MemEngine> {
    /// A fresh in-memory store.
    pub fn in_memory() -> Result<Self, OpenError> {
        LogStore::with_engine(MemEngine::new())
    }
}

impl<E: Engine> LogStore<E> {
    /// [`Read::read`] of records that together take at most `max_bytes` as
    /// well (counted as the read budget counts them; at least one record).
    pub fn read_within(
        &self,
        session: SessionId,
        from: Seq,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, Error> {
        let limit = limit.min(MAX_READ_RECORDS) as u64;
        let end = Seq::new(from.get().saturating_add(limit));
        self.inner.core.read_range_within(session, from, end, max_bytes)
    }

    /// [`Read::read_before`] of records that together take at most
    /// `max_bytes` as well (at least one record).
    pub fn read_before_within(
        &self,
        session: SessionId,
        before: Seq,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, Error> {
        let core = &*self.inner.core;
        let Some(slot) = core.slot(session) else { return Ok(Vec::new()) };
        let before = before.min(slot.durable_head().next);
        let limit = limit.min(MAX_READ_RECORDS) as u64;
        let from = Seq::new(before.get().saturating_sub(limit));
        let first = core.read_range_within(session, from, before, max_bytes)?;
        if first.last().is_none_or(|last| last.seq().get() + 1 >= before.get()) {
            return Ok(first);
        }
        // Cut by the byte budget: the records wanted are the last ones before
        // `before` that fit. Read on, keeping the longest suffix that fits
        // (at least one record): at most two budgets in memory at a time.
        let budget = core.read_bytes.load(Ordering::Relaxed).min(max_bytes);
        let mut kept: std::collections::VecDeque<Record> = std::collections::VecDeque::new();
        let mut kept_bytes = 0usize;
        let mut chunk = first;
        while let Some(last) = chunk.last() {
            let next = Seq::new(last.seq().get() + 1);
            for record in chunk {
                kept_bytes += crate::session::record_size(&record);
                kept.push_back(record);
                while kept_bytes > budget && kept.len() > 1 {
                    if let Some(dropped) = kept.pop_front() {
                        kept_bytes -= crate::session::record_size(&dropped);
                    }
                }
            }
            if next >= before {
                break;
            }
            chunk = core.read_range_within(session, next, before, max_bytes)?;
        }
        Ok(kept.into())
    }

    /// Opens a store over `engine`: checks the storage version, loads every
    /// session's head, replays the log from the last checkpoint and checks the
    /// tail of every chain. A session whose log is damaged is quarantined (its
    /// reads and appends fail with its [`Corruption`]); the others work
    /// normally. A log damaged in a way that could hide acknowledged writes
    /// refuses to open.
    pub fn with_engine(engine: E) -> Result<Self, OpenError> {
        LogStore::with_options(engine, &WalOptions::default())
    }

    /// [`LogStore::with_engine`] with the log written as `wal` says.
    pub fn with_options(engine: E, wal: &WalOptions) -> Result<Self, OpenError> {
        let recovered = crate::recovery::recover(&engine)?;
        let writer = recovered.writer.with_segment_bytes(wal.segment_bytes);
        let core = Arc::new(Core {
            log: engine.log_dir(),
            engine,
            slots: RwLock::new(recovered.slots),
            queue: CommitQueue::new(writer.end(), wal.max_linger),
            checkpoints: Checkpoints::new(recovered.checkpoint, writer.end(), writer.next_batch(), wal.segment_bytes),
            damage: recovered.damage,
            cache_bytes: AtomicUsize::new(0),
            read_bytes: AtomicUsize::new(MAX_READ_BYTES),
            ticks: AtomicU64::new(0),
            resources: Mutex::new(crate::kv::PendingResources::default()),
        });
        core.check_tails();
        // Replayed records wait for the next checkpoint like appended ones.
        for slot in core.slots.read().map(|s| s.values().cloned().collect::<Vec<_>>()).unwrap_or_default() {
            if slot.lock_index().is_ok_and(|index| !index.pending.is_empty()) {
                core.checkpoints.mark_dirty(&slot);
            }
        }
        let thread_err = |err: std::io::Error| OpenError::Io { path: "(thread)".into(), reason: err.to_string() };
        let committer =
            Worker::spawn(&core, "logbook-commit", move |core| core.queue.run(writer, core)).map_err(thread_err)?;
        let checkpointer = Worker::spawn(&core, "logbook-checkpoint", crate::checkpoint::run).map_err(thread_err)?;
        let watchdog = {
            let core = Arc::clone(&core);
            let limit = wal.stall_limit;
            std::thread::Builder::new()
                .name("logbook-watchdog".to_owned())
                .spawn(move || core.queue.watch(limit))
                .map_err(thread_err)?
        };
        let threads = Mutex::new(vec![committer, checkpointer]);
        Ok(LogStore {
            inner: Arc::new(Inner {
                core,
                threads,
                watchdog: Mutex::new(Some(watchdog)),
                crashed: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// Sets the byte budget of every later read ([`MAX_READ_BYTES`] when the
    /// store opens). For tests: a small budget makes small records cut reads
    /// short, as records of tens of MiB do at the real one, so that callers'
    /// going on from where a read stopped is tested without gigabytes.
    pub fn set_read_bytes(&self, bytes: usize) {
        self.inner.core.read_bytes.store(bytes, Ordering::Relaxed);
    }

    /// The byte budget of one read: [`MAX_READ_BYTES`] unless
    /// [`LogStore::set_read_bytes`] changed it.
    pub fn read_bytes(&self) -> usize {
        self.inner.core.read_bytes.load(Ordering::Relaxed)
    }

    /// Damage found on open that is not confined to one session.
    pub fn store_damage(&self) -> &[StoreCorruption] {
        &self.inner.core.damage
    }

    pub fn engine(&self) -> &E {
        &self.inner.core.engine
    }

    /// Group-commit counters since open.
    pub fn barrier_stats(&self) -> BarrierStats {
        self.inner.core.queue.stats()
    }

    /// Why the store stopped accepting writes (a failed sync or index write:
    /// fail-stop until it is reopened), if it did.
    pub fn poisoned(&self) -> Option<String> {
        self.inner.core.queue.poisoned()
    }

    /// Sessions found corrupt so far (on open or on a later read).
    pub fn quarantined(&self) -> Vec<Corruption> {
        let slots = self.inner.core.slots.read().map(|slots| slots.clone()).unwrap_or_default();
        let mut out: Vec<Corruption> = slots.values().filter_map(|slot| slot.corrupt.get().cloned()).collect();
        out.sort_by_key(|c| c.session);
        out
    }

    /// Bytes on disk: the log's segments (a segment prepared ahead included)
    /// and the engine's indexes and resources.
    pub fn size_on_disk(&self) -> Result<u64, Error> {
        let core = &self.inner.core;
        let log = core.log.size_on_disk().map_err(|err| Error::Engine(format!("measuring the log: {err}")))?;
        Ok(log + core.engine.size_on_disk()?)
    }

    /// Bytes the store's data takes: the log up to its end (the zeroes of a
    /// segment prepared ahead are free space, not data) and the engine's
    /// indexes and resources.
    pub fn stored_bytes(&self) -> Result<u64, Error> {
        let core = &self.inner.core;
        let end = core.queue.durable_end();
        let io = |err: std::io::Error| Error::Engine(format!("measuring the log: {err}"));
        let mut log = wal::offset_of(end);
        for number in core.log.segments().map_err(io)? {
            if number < wal::segment_of(end) {
                log += core.log.open_segment(number, false).and_then(|s| s.len()).map_err(io)?;
            }
        }
        Ok(log + core.engine.size_on_disk()?)
    }

    /// Where the log stores a session's own record: for tools and tests that
    /// inspect or damage the raw log. `None` for records the session does not
    /// store itself (not durable, or a fork's inherited prefix).
    pub fn locate(&self, session: SessionId, seq: Seq) -> Result<Option<Location>, Error> {
        let core = &self.inner.core;
        let Some(slot) = core.slot(session) else { return Ok(None) };
        if seq < slot.own_start() || seq >= slot.durable_head().next {
            return Ok(None);
        }
        let located = index::locate(&core.engine, &slot, seq, Seq::new(seq.get() + 1))?;
        Ok(located.first().map(|l| l.location))
    }

    /// Empties every session's tail cache: later reads go to the log until
    /// appends and reads fill the caches again. For benchmarks of cold reads,
    /// and to give memory back.
    pub fn clear_caches(&self) {
        let core = &self.inner.core;
        let slots: Vec<Arc<Slot>> = core.slots.read().map(|s| s.values().cloned().collect()).unwrap_or_default();
        for slot in slots {
            if let Ok(mut cache) = slot.lock_cache() {
                cache.clear(&core.cache_bytes);
            }
        }
    }

    /// Closes the store as a crash would, for crash tests: the background
    /// threads stop, and no final checkpoint is written. (Other clones and
    /// subscriptions keep it open until they are dropped too.)
    pub fn crash(self) {
        self.inner.crashed.store(true, Ordering::SeqCst);
    }

    /// Moves every durable record into the engine's index and makes the index
    /// durable now, instead of in the background.
    pub fn checkpoint(&self) -> Result<(), Error> {
        crate::checkpoint::checkpoint(&self.inner.core)
    }
}

/// A thread of the store that closing waits for, unless it is stuck.
#[derive(Debug)]
struct Worker {
    handle: JoinHandle<()>,
    /// Set as its body returns (before the thread lets go of the core).
    done: Arc<std::sync::atomic::AtomicBool>,
}

impl Worker {
    fn spawn<E: Engine>(
        core: &Arc<Core<E>>,
        name: &str,
        body: impl FnOnce(&Core<E>) + Send + 'static,
    ) -> std::io::Result<Worker> {
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (core, flag) = (Arc::clone(core), Arc::clone(&done));
        let handle = std::thread::Builder::new().name(name.to_owned()).spawn(move || {
            body(&core);
            flag.store(true, Ordering::SeqCst);
            core.queue.wake_closer();
        })?;
        Ok(Worker { handle, done })
    }

    /// Joins the thread once its body returned (or it ended by a panic, which
    /// sets no flag: the poll sees it); leaves it behind if the watchdog gave
    /// up on the store first.
    fn join_unless_stalled<T: Send + 'static>(self, queue: &CommitQueue<T>) {
        if queue.wait_unless_stalled(|| self.done.load(Ordering::SeqCst) || self.handle.is_finished()) {
            let _ = self.handle.join();
        }
    }
}

impl<E: Engine> Drop for Inner<E> {
    fn drop(&mut self) {
        let queue = &self.core.queue;
        queue.stop();
        self.core.checkpoints.stop();
        let threads = self.threads.get_mut().map(std::mem::take).unwrap_or_default();
        // The committer and the checkpointer are joined once they finish; one
        // stuck in the engine is left behind once the watchdog gives up on
        // it (see `commit.rs`), and so is the final checkpoint.
        for thread in threads {
            thread.join_unless_stalled(queue);
        }
        // The last checkpoint makes the next open fast; the log has everything
        // even if it fails. It runs on a thread of its own so that closing
        // does not wait on an engine that stopped answering.
        if !self.crashed.load(Ordering::SeqCst) && !queue.stalled() {
            let close = Worker::spawn(&self.core, "logbook-close", |core| {
                let _ = crate::checkpoint::checkpoint(core);
            });
            if let Ok(close) = close {
                close.join_unless_stalled(queue);
            }
        }
        queue.retire_watchdog();
        if let Some(watchdog) = self.watchdog.get_mut().ok().and_then(Option::take) {
            let _ = watchdog.join();
        }
    }
}

impl<E: Engine> Core<E> {
    pub(crate) fn slot(&self, session: SessionId) -> Option<Arc<Slot>> {
        self.slots.read().ok()?.get(&session).cloned()
    }

    pub(crate) fn slot_or_create(&self, session: SessionId) -> Result<Arc<Slot>, Error> {
        if let Some(slot) = self.slot(session) {
            return Ok(slot);
        }
        let mut slots = self.slots.write().map_err(|_| Error::Engine("session table lock poisoned".to_owned()))?;
        Ok(Arc::clone(slots.entry(session).or_insert_with(|| Arc::new(Slot::empty(session)))))
    }

    pub(crate) fn tick(&self) -> u64 {
        self.ticks.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn check_poisoned(&self) -> Result<(), Error> {
        match self.queue.poisoned() {
            Some(reason) => Err(Error::Poisoned { reason }),
            None => Ok(()),
        }
    }

    pub(crate) fn quarantine(&self, slot: &Slot, corruption: Corruption) -> Error {
        let _ = slot.corrupt.set(corruption);
        match slot.corrupt.get() {
            Some(first) => Error::Corrupted(first.clone()),
            None => Error::Engine("corruption marker unset".to_owned()),
        }
    }

    /// Checks the last records of every session against its head; quarantines
    /// the ones that do not match.
    fn check_tails(&self) {
        let slots: Vec<Arc<Slot>> = self.slots.read().map(|s| s.values().cloned().collect()).unwrap_or_default();
        for slot in slots {
            if slot.corrupt.get().is_some() {
                continue;
            }
            let head = slot.durable_head();
            let own_start = slot.own_start();
            let from = Seq::new(head.next.get().saturating_sub(TAIL_CHECK_RECORDS as u64).max(own_start.get()));
            if from >= head.next {
                continue;
            }
            // All of the tail, whatever its size: a read cut short would look like a tail that does not reach the head.
            let whole = &mut ReadBudget::new(usize::MAX);
            let checked = self.read_own(&slot, from, head.next, whole).and_then(|records| match records.last() {
                Some(last) if last.hash() == head.hash => Ok(()),
                Some(last) => Err(Error::Corrupted(Corruption {
                    session: slot.id,
                    seq: last.seq(),
                    what: "last record's hash differs from the head's".to_owned(),
                })),
                None => {
                    Err(Error::Corrupted(Corruption { session: slot.id, seq: from, what: "tail missing".to_owned() }))
                }
            });
            if let Err(Error::Corrupted(corruption)) = checked {
                let _ = slot.corrupt.set(corruption);
            }
        }
    }

    /// Durable records `from .. end_wanted` of `session` (clamped to its
    /// durable head), its inherited prefix included.
    ///
    /// Within the read's byte budget ([`MAX_READ_BYTES`]): the records from
    /// `from` on that fit, at least one, so the result may end before `end`.
    pub(crate) fn read_range(&self, session: SessionId, from: Seq, end_wanted: Seq) -> Result<Vec<Record>, Error> {
        self.read_range_within(session, from, end_wanted, usize::MAX)
    }

    /// [`Core::read_range`] within `max_bytes` as well as the store's own
    /// budget (counted alike; at least one record).
    pub(crate) fn read_range_within(
        &self,
        session: SessionId,
        from: Seq,
        end_wanted: Seq,
        max_bytes: usize,
    ) -> Result<Vec<Record>, Error> {
        let Some(slot) = self.slot(session) else { return Ok(Vec::new()) };
        slot.check_corrupt()?;
        let mut end = end_wanted.min(slot.durable_head().next);
        if from >= end {
            return Ok(Vec::new());
        }
        slot.last_used.store(self.tick(), Ordering::Relaxed);
        let mut budget = ReadBudget::new(self.read_bytes.load(Ordering::Relaxed).min(max_bytes));
        let mut out = Vec::with_capacity((end.get() - from.get()) as usize);
        // A fork's inherited parts are its ancestors' records, stamped as its own.
        for (owner, lo, hi) in self.parts(&slot, from, end)? {
            let records = self.read_own(&owner, lo, hi, &mut budget)?;
            if owner.id == session {
                out.extend(records);
            } else {
                out.extend(records.into_iter().map(|r| restamp(r, session)));
            }
            if budget.is_cut() {
                end = Seq::new(from.get() + out.len() as u64);
                break;
            }
        }
        check_contiguous(session, from, end, &out).map_err(|c| self.quarantine(&slot, c))?;
        Ok(out)
    }

    /// Whether [`Core::read_range`] of `from .. end` would be served from
    /// memory (the session's own tail cache), with no read of the log.
    pub(crate) fn is_cached(&self, session: SessionId, from: Seq, end: Seq) -> bool {
        let Some(slot) = self.slot(session) else { return true };
        if from < slot.own_start() {
            return false;
        }
        slot.lock_cache().is_ok_and(|cache| from >= cache.first && end <= cache.end())
    }

    /// `slot`'s own records `from .. end`, all durable: from the tail cache if
    /// it holds them, else from the log, checked. Only the first ones
    /// `budget` admits: fewer when it is cut.
    pub(crate) fn read_own(
        &self,
        slot: &Slot,
        from: Seq,
        end: Seq,
        budget: &mut ReadBudget,
    ) -> Result<Vec<Record>, Error> {
        let (cached_tail, disk_end) = {
            let cache = slot.lock_cache()?;
            if let Some(records) = cache.get(from, end, budget) {
                return Ok(records);
            }
            // The cached tail is taken now, before a checkpoint's trim can
            // drop it; it is one session's cache at most.
            match cache.get(cache.first, end, &mut ReadBudget::new(usize::MAX)) {
                Some(tail) if cache.first > from => (tail, cache.first),
                Some(_) | None => (Vec::new(), end),
            }
        };
        let located = index::locate(&self.engine, slot, from, disk_end)?;
        let mut records = self.read_located(slot, &located, budget)?;
        records.reserve(cached_tail.len());
        records.extend(cached_tail.into_iter().take_while(|record| budget.admit(record)));
        let reached_head = end == slot.durable_head().next;
        if reached_head && !budget.is_cut() && !records.is_empty() {
            slot.lock_cache()?.install(&records, &self.cache_bytes);
            self.keep_caches_in_budget();
        }
        Ok(records)
    }

    /// Reads located records from the log (adjacent ones in one read) and
    /// checks each: its place, its hash, its link to the one before. Only the
    /// first ones `budget` admits are read, and only they are decoded.
    fn read_located(&self, slot: &Slot, located: &[Located], budget: &mut ReadBudget) -> Result<Vec<Record>, Error> {
        // A record's stored entry is never larger than what it counts as once
        // decoded (its header is within the overhead counted, and a body is
        // compressed only when that is smaller), so the records past the
        // prefix whose stored sizes fit would not fit either: they are not read.
        // A location longer than any record's entry is damage, which reading
        // it reports: it counts for nothing here rather than end the read.
        let n_located = located.len();
        let mut stored = *budget;
        let stored_size = |item: &Located| match item.location.len as usize {
            len if len <= MAX_RECORD_ENTRY_BYTES => len,
            _ => 0,
        };
        let n_read = located.iter().take_while(|item| stored.admit_size(stored_size(item))).count();
        let located = &located[..n_read];
        // The runs' bytes, and for each record its run and offset.
        let mut runs: Vec<Vec<u8>> = Vec::new();
        let mut places: Vec<(usize, usize)> = Vec::with_capacity(located.len());
        let mut at = 0;
        while at < located.len() {
            let first = located[at].location;
            // Locations come from the index: a damaged LSN near `u64::MAX`
            // must be corruption of its record, not an overflow.
            if first.lsn.checked_add(u64::from(first.len)).is_none() {
                let what = format!("the index places it at {first}, past the last position of the log");
                return Err(self.quarantine(slot, Corruption { session: slot.id, seq: located[at].seq, what }));
            }
            let mut run_end = at + 1;
            let mut len = u64::from(first.len);
            while run_end < located.len()
                && first.lsn.checked_add(len) == Some(located[run_end].location.lsn)
                && len + u64::from(located[run_end].location.len) <= READ_RUN_BYTES
            {
                len += u64::from(located[run_end].location.len);
                run_end += 1;
            }
            let bytes = wal::read_entry(&*self.log, Location { lsn: first.lsn, len: len as u32 })
                .map_err(|err| self.read_error(slot, &located[at..run_end], &err))?;
            let mut offset = 0usize;
            for item in &located[at..run_end] {
                places.push((runs.len(), offset));
                offset += item.location.len as usize;
            }
            runs.push(bytes);
            at = run_end;
        }
        let entry_of = |i: usize| {
            let (run, offset) = places[i];
            &runs[run][offset..offset + located[i].location.len as usize]
        };
        let decode_one =
            |i: usize| wal::decode_record(entry_of(i), slot.id, located[i].seq).map_err(|what| (located[i].seq, what));
        if located.len() < PARALLEL_DECODE_MIN {
            // In order, each record admitted as it is decoded: at most one
            // past the budget is decoded, and dropped.
            let mut out = Vec::with_capacity(located.len());
            for i in 0..located.len() {
                let record = decode_one(i)
                    .map_err(|(seq, what)| self.quarantine(slot, Corruption { session: slot.id, seq, what }))?;
                if !budget.admit(&record) {
                    break;
                }
                out.push(record);
            }
            check_links(slot.id, &out).map_err(|c| self.quarantine(slot, c))?;
            if out.len() < n_located {
                // Left out by the bound above, if not refused: they would not have fitted.
                budget.stop();
            }
            return Ok(out);
        }
        // Many records: only those whose decoded sizes fit are decoded; the
        // headers say the sizes (an entry that cannot say is decoded, which
        // reports why).
        let mut decoded = *budget;
        let n_decoded = (0..located.len())
            .take_while(|&i| {
                let entry = entry_of(i);
                decoded.admit_size(wal::decode_entry(entry).map_or(entry.len(), |(e, _)| counted_size(e.decoded_len())))
            })
            .count();
        // Decoding (decompressing, checking each hash) is most of a long
        // read's time: many records are decoded on up to MAX_DECODE_THREADS
        // threads, in parts kept in seq order.
        let decode = |range: std::ops::Range<usize>| -> Decoded { range.map(&decode_one).collect() };
        let n_threads = if n_decoded < PARALLEL_DECODE_MIN {
            1
        } else {
            std::thread::available_parallelism().map_or(1, usize::from).clamp(1, MAX_DECODE_THREADS)
        };
        let parts: Vec<Option<Decoded>> = if n_threads == 1 {
            vec![Some(decode(0..n_decoded))]
        } else {
            let per_thread = n_decoded.div_ceil(n_threads);
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..n_threads)
                    .map(|t| {
                        let range = (t * per_thread).min(n_decoded)..((t + 1) * per_thread).min(n_decoded);
                        scope.spawn(move || decode(range))
                    })
                    .collect();
                handles.into_iter().map(|handle| handle.join().ok()).collect()
            })
        };
        // Parts are in seq order, so the first error met is the first bad seq.
        let mut out = Vec::with_capacity(n_decoded);
        for part in parts {
            match part {
                Some(Ok(records)) => out.extend(records),
                Some(Err((seq, what))) => {
                    return Err(self.quarantine(slot, Corruption { session: slot.id, seq, what }));
                }
                None => return Err(Error::Engine(format!("a thread decoding {} panicked", slot.id))),
            }
        }
        check_links(slot.id, &out).map_err(|c| self.quarantine(slot, c))?;
        let admitted = out.iter().take_while(|record| budget.admit(record)).count();
        out.truncate(admitted);
        if out.len() < n_located {
            // Left out by the bounds above: they would not have fitted.
            budget.stop();
        }
        Ok(out)
    }

    /// The error for a failed read of `run` (adjacent records read in one
    /// `pread`). A missing segment, missing bytes or a location no batch can
    /// hold (`InvalidData` from [`wal::read_entry`]) are damage: the session
    /// is quarantined at the first record whose bytes are gone, which need
    /// not be the run's first. Anything else (EIO, ...) may be transient and
    /// quarantines nothing.
    fn read_error(&self, slot: &Slot, run: &[Located], err: &std::io::Error) -> Error {
        let damage = matches!(
            err.kind(),
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidData
        );
        let Some(first) = run.first() else {
            return Error::Engine(format!("reading {} from the log: {err}", slot.id));
        };
        if !damage {
            let last = run.last().map_or(first.seq, |l| l.seq);
            return Error::Engine(format!("reading {}#{}..={last} at {}: {err}", slot.id, first.seq, first.location));
        }
        if err.kind() == std::io::ErrorKind::InvalidData {
            // Only a location's own length can be over the limit: a run of
            // several is at most `READ_RUN_BYTES`.
            let item = run.iter().find(|item| item.location.len as usize > wal::MAX_BATCH_BYTES).unwrap_or(first);
            let what = format!("the index places it at {}, which no batch can hold: {err}", item.location);
            return self.quarantine(slot, Corruption { session: slot.id, seq: item.seq, what });
        }
        let corruption = match self.first_cut_off(run) {
            Some((item, segment_len)) => Corruption {
                session: slot.id,
                seq: item.seq,
                what: format!("its bytes at {} are gone: the segment ends at offset {segment_len}", item.location),
            },
            None => Corruption {
                session: slot.id,
                seq: first.seq,
                what: format!("its bytes at {} are gone: {err}", first.location),
            },
        };
        self.quarantine(slot, corruption)
    }

    /// The first record of `run` that its segment, shorter than the run
    /// needs, cuts off, with the segment's length; `None` if that cannot be
    /// told (the segment is missing or its length unknown): then the run's
    /// first record is the first whose bytes are gone. Only on the error path.
    fn first_cut_off<'a>(&self, run: &'a [Located]) -> Option<(&'a Located, u64)> {
        let first = run.first()?;
        let segment = self.log.open_segment(wal::segment_of(first.location.lsn), false).ok()?;
        let segment_len = segment.len().ok()?;
        run.iter()
            .find(|item| wal::offset_of(item.location.lsn) + u64::from(item.location.len) > segment_len)
            .map(|item| (item, segment_len))
    }

    /// Submits a slot's sealed records to the log and updates its written head
    /// and tail cache. Called with the slot's write lock held.
    pub(crate) fn submit_records(
        &self,
        slot: &Arc<Slot>,
        head: &mut WriteHead,
        prepared: Vec<Prepared>,
        fork: Option<ForkEntry>,
    ) -> Result<(Ticket, Vec<Record>), Error> {
        let first = head.next;
        let (mut seq, mut prev) = (head.next, head.hash);
        let mut records = Vec::with_capacity(prepared.len());
        let mut bodies = Vec::with_capacity(prepared.len());
        let mut n_bytes = fork.map_or(0, |_| wal::FORK_ENTRY_BYTES);
        for item in prepared {
            let hash = chain::link(prev, seq, item.digest);
            n_bytes += RECORD_HEADER_BYTES + item.body.as_ref().map_or(item.canonical.len(), Vec::len);
            bodies.push((item.code, item.body));
            records.push(Record::from_parts(slot.id, seq, prev, hash, Body::Canonical(item.canonical)));
            prev = hash;
            seq = Seq::new(seq.get() + 1);
        }
        let ticket = self.queue.submit(n_bytes, |buf: &mut BatchBuf| {
            let mut effects = Vec::new();
            if let Some(entry) = fork {
                buf.push_fork(&entry);
                effects.push(Effect::Fork { slot: Arc::clone(slot), entry });
            }
            let mut located = Vec::with_capacity(records.len());
            for (record, (code, body)) in records.iter().zip(&bodies) {
                let offset = buf.next_offset();
                let (codec, bytes) = match body {
                    Some(compressed) => (BodyCodec::Zstd, compressed.as_slice()),
                    None => (BodyCodec::Raw, record.canonical().unwrap_or_default()),
                };
                let len =
                    buf.push_record(record.session(), record.seq(), record.prev(), record.hash(), *code, codec, bytes);
                located.push((offset, len, *code, record.hash()));
            }
            if !located.is_empty() {
                effects.push(Effect::Records { slot: Arc::clone(slot), first, records: located });
            }
            Ok(Some(effects))
        })?;
        *head = WriteHead { next: seq, hash: prev };
        let mut cache = slot.lock_cache()?;
        for record in &records {
            cache.push(record, &self.cache_bytes);
        }
        drop(cache);
        self.keep_caches_in_budget();
        slot.last_used.store(self.tick(), Ordering::Relaxed);
        Ok((ticket, records))
    }
}

/// A record's entry in the log (its header, and its body: raw, compressed only
/// when that is smaller, or a redacted record's digest) is never larger than
/// the record counts as against a read's budget once decoded.
const _: () = assert!(RECORD_HEADER_BYTES <= RECORD_OVERHEAD_BYTES, "a stored entry never counts more than its record");

/// The longest a record's entry in the log can be: its header and its body,
/// raw (a compressed body is smaller).
const MAX_RECORD_ENTRY_BYTES: usize = RECORD_HEADER_BYTES + MAX_EVENT_BYTES;

/// Bytes read from the log in one `pread` when a session's records are adjacent.
const READ_RUN_BYTES: u64 = 4 << 20;
const _: () = assert!(READ_RUN_BYTES <= wal::MAX_BATCH_BYTES as u64, "a run is never refused for its length");
/// Records in one read from which decoding is spread over threads (below it,
/// starting threads costs more than it saves).
const PARALLEL_DECODE_MIN: usize = 512;
/// Most threads one read decodes on.
const MAX_DECODE_THREADS: usize = 4;

/// A thread's share of a parallel decode: its records, or the first bad seq and why.
type Decoded = Result<Vec<Record>, (Seq, String)>;

/// A record with another session's id: how a fork's inherited records read.
/// The session is not part of the chain, so the record verifies unchanged.
fn restamp(record: Record, session: SessionId) -> Record {
    if record.session() == session {
        return record;
    }
    Record::from_parts(session, record.seq(), record.prev(), record.hash(), record.body().clone())
}

/// Checks that `records` are exactly `from .. end`, linked.
fn check_contiguous(session: SessionId, from: Seq, end: Seq, records: &[Record]) -> Result<(), Corruption> {
    let mut expected = from;
    for record in records {
        if record.seq() != expected {
            return Err(Corruption { session, seq: expected, what: "record missing".to_owned() });
        }
        expected = Seq::new(expected.get() + 1);
    }
    if expected != end {
        return Err(Corruption { session, seq: expected, what: "record missing".to_owned() });
    }
    check_links(session, records)
}

/// Checks that consecutive records link.
fn check_links(session: SessionId, records: &[Record]) -> Result<(), Corruption> {
    for pair in records.windows(2) {
        if pair[1].seq().get() == pair[0].seq().get() + 1 && pair[1].prev() != pair[0].hash() {
            return Err(Corruption {
                session,
                seq: pair[1].seq(),
                what: "prev does not match the previous record's hash".to_owned(),
            });
        }
    }
    Ok(())
}

/// An entry encoded, hashed and compressed, ready to be sealed.
#[derive(Debug)]
pub(crate) struct Prepared {
    canonical: Vec<u8>,
    digest: Digest,
    code: u16,
    /// The compressed canonical bytes, when compression paid.
    body: Option<Vec<u8>>,
}

/// Checks an append's limits and prepares its entries, with no lock held.
pub(crate) fn prepare(entries: &[Entry], allow_empty: bool) -> Result<Vec<Prepared>, AppendError> {
    if (entries.is_empty() && !allow_empty) || entries.len() > MAX_EVENTS_PER_APPEND {
        return Err(AppendError::BadCount { n_events: entries.len(), max: MAX_EVENTS_PER_APPEND });
    }
    let mut out = Vec::with_capacity(entries.len());
    let mut n_bytes = 0usize;
    for (event_idx, entry) in entries.iter().enumerate() {
        let canonical = entry.to_canonical()?;
        if canonical.len() > MAX_EVENT_BYTES {
            return Err(AppendError::EventTooLarge { event_idx, n_bytes: canonical.len(), max: MAX_EVENT_BYTES });
        }
        n_bytes += canonical.len();
        if n_bytes > MAX_APPEND_BYTES {
            return Err(AppendError::AppendTooLarge { n_bytes, max: MAX_APPEND_BYTES });
        }
        let body = frame::compressed(&canonical);
        out.push(Prepared {
            digest: chain::digest(&canonical),
            code: entry.event.event_type().code(),
            canonical,
            body,
        });
    }
    Ok(out)
}

impl<E: Engine> Publisher<Vec<Effect>> for Core<E> {
    fn publish(&self, header: &BatchHeader, effects: Vec<Vec<Effect>>) {
        for effect in effects.into_iter().flatten() {
            match effect {
                Effect::Records { slot, first, records } => self.publish_records(header, &slot, first, &records),
                Effect::Blob { digest, offset, len } => {
                    let location = keys::blob_value(header.lsn + u64::from(offset), len).to_vec();
                    if let Err(err) =
                        self.engine.apply(Tree::Log, vec![(keys::blob_key(digest).to_vec(), Some(location))])
                    {
                        self.queue.poison(format!("indexing a blob: {err}"));
                    }
                }
                Effect::Fork { slot, entry } => {
                    let writes = vec![
                        (
                            keys::origin_key(entry.child).to_vec(),
                            Some(keys::origin_value(entry.parent, entry.at_seq, entry.parent_hash).to_vec()),
                        ),
                        (
                            keys::fork_key(entry.parent, entry.child).to_vec(),
                            Some(entry.at_seq.get().to_be_bytes().to_vec()),
                        ),
                    ];
                    if let Err(err) = self.engine.apply(Tree::Log, writes) {
                        self.queue.poison(format!("indexing a fork: {err}"));
                    }
                    slot.publish(Head { next: Seq::new(entry.at_seq.get() + 1), hash: entry.parent_hash });
                }
                Effect::Resource { key, framed, write } => {
                    if let Err(err) = self.engine.apply(Tree::Resources, vec![(key.clone(), framed)]) {
                        self.queue.poison(format!("writing a resource: {err}"));
                    }
                    self.settle_resource(&key, write);
                }
            }
        }
        self.checkpoints.note_written(header);
    }
}

impl<E: Engine> Core<E> {
    /// Asks the checkpointer to shrink the tail caches if they grew past
    /// their budget (by appends, or by reads that reached a session's head).
    fn keep_caches_in_budget(&self) {
        if self.cache_bytes.load(Ordering::Relaxed) > crate::session::TAIL_CACHE_BYTES {
            self.checkpoints.request_sweep();
        }
    }

    fn publish_records(
        &self,
        header: &BatchHeader,
        slot: &Arc<Slot>,
        first: Seq,
        records: &[(u32, u32, u16, ChainHash)],
    ) {
        // Appends of a session are published in seq order, under a lock no
        // one panics with; anything else is a bug, and the session must not
        // be read past it (its durable records would be missing from reads).
        let broken = |what: &str| {
            let _ = slot.corrupt.set(Corruption { session: slot.id, seq: first, what: what.to_owned() });
        };
        let Ok(mut index) = slot.lock_index() else { return broken("its index lock was poisoned while publishing") };
        if index.end() != first {
            drop(index);
            return broken("published out of order");
        }
        for (offset, len, code, hash) in records {
            let location = Location { lsn: header.lsn + u64::from(*offset), len: *len };
            index.pending.push_back(PendingRecord { location, code: *code, hash: *hash });
        }
        // The type memo learns the records before the durable head covers
        // them: a reader that saw the head must find them there.
        let Ok(mut types) = slot.lock_types() else {
            drop(index);
            return broken("its type memo lock was poisoned while publishing");
        };
        for (n, (_, _, code, _)) in records.iter().enumerate() {
            types.note(*code, Seq::new(first.get() + n as u64));
        }
        drop(types);
        drop(index);
        if let Some((_, _, _, hash)) = records.last() {
            slot.publish(Head { next: Seq::new(first.get() + records.len() as u64), hash: *hash });
        }
        self.checkpoints.mark_dirty(slot);
    }
}

/// An append submitted to the log: its records are sealed and in a batch,
/// and they are durable (and visible to readers) once this future is ready or
/// [`PendingAppend::wait`] returns. Dropping it does not undo the append.
#[derive(Debug)]
#[must_use = "the records are durable only once this is awaited or waited on"]
pub struct PendingAppend {
    ticket: Ticket,
    records: Vec<Record>,
}

impl PendingAppend {
    /// Blocks until the records are durable, and returns them.
    pub fn wait(self) -> Result<Vec<Record>, AppendError> {
        self.ticket.wait()?;
        Ok(self.records)
    }
}

impl std::future::Future for PendingAppend {
    type Output = Result<Vec<Record>, AppendError>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        match self.ticket.poll_durable(cx) {
            std::task::Poll::Ready(Ok(())) => std::task::Poll::Ready(Ok(std::mem::take(&mut self.records))),
            std::task::Poll::Ready(Err(err)) => std::task::Poll::Ready(Err(err.into())),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

impl<E: Engine> LogStore<E> {
    /// [`Append::append`] without the wait: the records are sealed and
    /// submitted (a conflict or a full session is an error now), and the
    /// returned [`PendingAppend`] completes once they are durable. For async
    /// callers, which then wait without holding a thread.
    pub fn append_submit(
        &self,
        session: SessionId,
        expected: Seq,
        entries: &[Entry],
    ) -> Result<PendingAppend, AppendError> {
        let core = &*self.inner.core;
        core.check_poisoned()?;
        let prepared = prepare(entries, false)?;
        let slot = core.slot_or_create(session)?;
        let (ticket, records) = {
            let mut head = slot.lock_write()?;
            slot.check_corrupt()?;
            if head.next != expected {
                return Err(AppendError::Conflict { session, expected, actual: head.next });
            }
            if head.next.plus(entries.len() as u64).is_none() {
                return Err(AppendError::SessionFull { session, max: MAX_EVENTS_PER_SESSION });
            }
            core.submit_records(&slot, &mut head, prepared, None)?
        };
        Ok(PendingAppend { ticket, records })
    }
}

impl<E: Engine> LogStore<E> {
    /// Waits until `session`'s durable head reaches `seq`: what a checked
    /// appender that lost a race awaits before it reads the head again, so the
    /// winner's records are durable and visible to its checks. A batch that
    /// fails never moves the head (the next append reports why), so callers
    /// bound the wait with a timeout. Returns `false` if the store is dropped.
    pub fn wait_durable(
        &self,
        session: SessionId,
        seq: Seq,
    ) -> Result<impl std::future::Future<Output = bool> + Send + 'static, Error> {
        let mut rx = self.inner.core.slot_or_create(session)?.durable_rx();
        Ok(async move { rx.wait_for(|head| head.next >= seq).await.is_ok() })
    }
}

impl<E: Engine> Append for LogStore<E> {
    fn append(&self, session: SessionId, expected: Seq, entries: &[Entry]) -> Result<Vec<Record>, AppendError> {
        self.append_submit(session, expected, entries)?.wait()
    }
}

impl<E: Engine> Read for LogStore<E> {
    fn head(&self, session: SessionId) -> Result<Head, Error> {
        let Some(slot) = self.inner.core.slot(session) else {
            return Ok(Head { next: Seq::ZERO, hash: chain::GENESIS });
        };
        slot.check_corrupt()?;
        Ok(slot.durable_head())
    }

    fn read(&self, session: SessionId, from: Seq, limit: usize) -> Result<Vec<Record>, Error> {
        self.read_within(session, from, limit, usize::MAX)
    }

    fn read_before(&self, session: SessionId, before: Seq, limit: usize) -> Result<Vec<Record>, Error> {
        self.read_before_within(session, before, limit, usize::MAX)
    }

    fn scan_types(
        &self,
        session: SessionId,
        types: &[EventType],
        from: Seq,
        limit: usize,
    ) -> Result<Vec<Record>, Error> {
        let core = &*self.inner.core;
        let Some(slot) = core.slot(session) else { return Ok(Vec::new()) };
        slot.check_corrupt()?;
        let durable = slot.durable_head().next;
        let limit = limit.min(MAX_READ_RECORDS);
        let codes: Vec<u16> = types.iter().map(|t| t.code()).collect();
        let mut budget = ReadBudget::new(core.read_bytes.load(Ordering::Relaxed));
        let mut out = Vec::new();
        'parts: for (owner, lo, hi) in core.layout(&slot, from, durable)? {
            if out.len() >= limit {
                break;
            }
            for seq in index::scan_types(&core.engine, &owner, &codes, lo, hi, limit - out.len())? {
                let record = core.read_listed(&slot, &owner, seq, &codes)?;
                if !budget.admit(&record) {
                    break 'parts;
                }
                out.push(record);
            }
        }
        Ok(out)
    }

    fn last_of_types(&self, session: SessionId, types: &[EventType]) -> Result<Option<Record>, Error> {
        let core = &*self.inner.core;
        let Some(slot) = core.slot(session) else { return Ok(None) };
        slot.check_corrupt()?;
        let durable = slot.durable_head().next;
        let codes: Vec<u16> = types.iter().map(|t| t.code()).collect();
        for (owner, _, hi) in core.layout(&slot, Seq::ZERO, durable)?.into_iter().rev() {
            if let Some(seq) = index::last_of_types(&core.engine, &owner, &codes, hi)? {
                return core.read_listed(&slot, &owner, seq, &codes).map(Some);
            }
        }
        Ok(None)
    }

    fn sessions(&self) -> Result<Vec<SessionId>, Error> {
        let slots =
            self.inner.core.slots.read().map_err(|_| Error::Engine("session table lock poisoned".to_owned()))?;
        let mut out: Vec<SessionId> = slots
            .iter()
            .filter(|(_, slot)| slot.corrupt.get().is_some() || slot.durable_head().next > Seq::ZERO)
            .map(|(session, _)| *session)
            .collect();
        out.sort_unstable();
        Ok(out)
    }
}

impl<E: Engine> Core<E> {
    /// `slot`'s record at `seq`, which `owner` (the slot, or the ancestor
    /// storing that seq) lists in its type index as one of `codes`. The
    /// record's own type is checked against `codes`: a damaged or rewritten
    /// type index must not make a scan return records of other types. A
    /// mismatch quarantines `owner`, whose index it is. A redacted record has
    /// no bytes to read its type from and is returned as listed.
    fn read_listed(&self, slot: &Arc<Slot>, owner: &Slot, seq: Seq, codes: &[u16]) -> Result<Record, Error> {
        let Some(record) = self.read_range(slot.id, seq, Seq::new(seq.get() + 1))?.pop() else {
            let corruption = Corruption { session: slot.id, seq, what: "type index names a missing record".to_owned() };
            return Err(self.quarantine(slot, corruption));
        };
        let Some(canonical) = record.canonical() else { return Ok(record) };
        match index::event_code(canonical) {
            Some(code) if codes.contains(&code) => Ok(record),
            found => {
                let found = found.map_or("no readable type".to_owned(), |code| match EventType::from_code(code) {
                    Some(event_type) => format!("type {event_type}"),
                    None => format!("unknown type code {code}"),
                });
                let what = format!("the type index lists it under type codes {codes:?}, but it has {found}");
                Err(self.quarantine(owner, Corruption { session: owner.id, seq, what }))
            }
        }
    }

    /// The sessions storing `slot`'s records `from .. end`, in seq order, each
    /// with the part `lo .. hi` it stores, for reading those records.
    ///
    /// An ancestor found corrupt refuses only the parts that reach the seq
    /// its corruption names: its records below that seq are what the fork
    /// inherited, and each one read is still checked (place, hash, links)
    /// like any other, so a fork whose inherited prefix is intact stays
    /// readable while its ancestor is quarantined for damage past it.
    pub(crate) fn parts(&self, slot: &Arc<Slot>, from: Seq, end: Seq) -> Result<Vec<(Arc<Slot>, Seq, Seq)>, Error> {
        let parts = self.layout(slot, from, end)?;
        for (owner, _, hi) in &parts {
            if owner.id == slot.id {
                continue;
            }
            if let Some(corruption) = owner.corrupt.get()
                && corruption.seq < *hi
            {
                return Err(Error::Corrupted(corruption.clone()));
            }
        }
        Ok(parts)
    }

    /// [`Core::parts`] without judging the ancestors' corruption: for lookups
    /// in their indexes (type scans), whose records are then read through
    /// [`Core::read_range`], which does.
    fn layout(&self, slot: &Arc<Slot>, from: Seq, end: Seq) -> Result<Vec<(Arc<Slot>, Seq, Seq)>, Error> {
        let mut out = Vec::new();
        let own_start = slot.own_start();
        if let Some(origin) = slot.origin.get() {
            let mut part_start = Seq::ZERO;
            for (owner, part_end) in &origin.ancestry {
                let (lo, hi) = (from.max(part_start), end.min(*part_end));
                if lo < hi {
                    let owner_slot = self.slot(*owner).ok_or_else(|| {
                        Error::Corrupted(Corruption {
                            session: slot.id,
                            seq: lo,
                            what: format!("the fork's ancestor {owner} is missing"),
                        })
                    })?;
                    out.push((owner_slot, lo, hi));
                }
                part_start = *part_end;
            }
        }
        let lo = from.max(own_start);
        if lo < end {
            out.push((Arc::clone(slot), lo, end));
        }
        Ok(out)
    }
}

impl<E: Engine> Subscribe for LogStore<E> {
    fn subscribe(&self, session: SessionId, from: Seq) -> Subscription {
        let source: Arc<dyn crate::subscription::Source> = self.inner.clone();
        Subscription::new(source, session, from)
    }
}
