//! What the store keeps in memory per session: its slot.
//!
//! A slot holds the written head (under the session's write lock, which
//! serializes its appenders), the durable head (a watch channel that readers
//! clamp to and subscribers wait on), a corruption marker, the locations of
//! its durable records not yet checkpointed into the index, a cache of its
//! latest records, the latest record of each event type, and, for a fork,
//! where its log comes from.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use logbook_core::{ChainHash, Record, Seq, SessionId, chain};
use tokio::sync::watch;

use crate::Head;
use crate::budget::ReadBudget;
use crate::error::{Corruption, Error};
use crate::wal::Location;

/// Records of a session kept in its tail cache. A read of the last 100 events
/// (what a client resuming a conversation asks for) is served from memory.
pub(crate) const TAIL_CACHE_RECORDS: usize = 128;

/// Canonical bytes one session's tail cache may hold, so that a few huge tool
/// outputs cannot hold the cache of many sessions.
pub(crate) const TAIL_CACHE_SESSION_BYTES: usize = 4 << 20;

/// Canonical bytes all tail caches may hold together; beyond it the least
/// recently used sessions' caches are dropped.
pub(crate) const TAIL_CACHE_BYTES: usize = 128 << 20;

/// What one cached record is counted as besides its canonical bytes.
pub(crate) const RECORD_OVERHEAD_BYTES: usize = 160;

/// What a redacted record's body (its digest) is counted as.
const REDACTED_BYTES: usize = 32;

#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) id: SessionId,
    pub(crate) write: Mutex<WriteHead>,
    pub(crate) durable: watch::Sender<Head>,
    pub(crate) corrupt: OnceLock<Corruption>,
    pub(crate) index: Mutex<SlotIndex>,
    pub(crate) cache: Mutex<TailCache>,
    pub(crate) types: Mutex<TypeMemo>,
    pub(crate) origin: OnceLock<Origin>,
    /// In the checkpointer's list of slots with pending index entries.
    pub(crate) dirty: AtomicBool,
    /// When this slot was last read or written, in [`crate::log::Core`]'s ticks.
    pub(crate) last_used: AtomicU64,
}

/// The head as appenders see it: written, maybe not yet durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WriteHead {
    pub(crate) next: Seq,
    pub(crate) hash: ChainHash,
}

/// The latest of the slot's own records of each type code, so that "the
/// session's latest status" is a map lookup rather than an index scan. Every
/// record from `tracked_from` on is noted as it is published (under the index
/// lock, before the durable head moves past it, so a reader that read the head
/// finds in the memo every record below it); what came before is looked up
/// once per code and never changes. Bounded by the number of event types.
#[derive(Debug)]
pub(crate) struct TypeMemo {
    /// The durable head when the slot was made.
    tracked_from: Seq,
    /// The latest published record of each code from `tracked_from` on.
    written: HashMap<u16, Seq>,
    /// The latest record of each code before `tracked_from`, once looked up.
    before: HashMap<u16, Option<Seq>>,
}

/// What the memo knows of the latest record of a code before some seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Latest {
    /// It is this one (or there is none).
    Known(Option<Seq>),
    /// Ask the index for the latest before this seq, and tell [`TypeMemo::learn`].
    LookUpBefore(Seq),
    /// Ask the index (a newer record of the code was published after the
    /// caller read its end, or the end is older than what is tracked).
    Unknown,
}

impl TypeMemo {
    fn new(tracked_from: Seq) -> TypeMemo {
        TypeMemo { tracked_from, written: HashMap::new(), before: HashMap::new() }
    }

    /// Notes a record published at `seq` (called in seq order, under the index lock).
    pub(crate) fn note(&mut self, code: u16, seq: Seq) {
        self.written.insert(code, seq);
    }

    /// The latest own record of `code` before `end`.
    pub(crate) fn latest(&self, code: u16, end: Seq) -> Latest {
        if let Some(&seq) = self.written.get(&code) {
            // The latest published of all; if it is past `end`, an earlier one may still be before it.
            return if seq < end { Latest::Known(Some(seq)) } else { Latest::Unknown };
        }
        // Nothing of `code` written since `tracked_from`.
        if end < self.tracked_from {
            return Latest::Unknown;
        }
        match self.before.get(&code) {
            Some(before) => Latest::Known(*before),
            None => Latest::LookUpBefore(self.tracked_from),
        }
    }

    /// Records what the index said is the latest record of `code` before `tracked_from`.
    pub(crate) fn learn(&mut self, code: u16, before: Option<Seq>) {
        self.before.insert(code, before);
    }
}

/// Where a fork's log comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) parent: SessionId,
    /// The parent's last shared seq.
    pub(crate) at_seq: Seq,
    /// The parent's hash at `at_seq`: the fork's chain continues from it.
    pub(crate) parent_hash: ChainHash,
    /// Who stores each part of the inherited prefix: `(owner, end)` in seq
    /// order, the owner's own records covering `[previous end, end)`. Flattened
    /// through forks of forks, so a read never walks a chain of parents.
    pub(crate) ancestry: Vec<(SessionId, Seq)>,
}

impl Origin {
    /// The first seq the fork stores itself.
    pub(crate) fn own_start(&self) -> Seq {
        Seq::new(self.at_seq.get() + 1)
    }
}

/// The durable records not yet in the checkpointed index.
#[derive(Debug)]
pub(crate) struct SlotIndex {
    /// Records below this are in the engine's location index.
    pub(crate) indexed_next: Seq,
    /// Records from `indexed_next` on, in seq order.
    pub(crate) pending: VecDeque<PendingRecord>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PendingRecord {
    pub(crate) location: Location,
    pub(crate) code: u16,
    pub(crate) hash: ChainHash,
}

impl SlotIndex {
    pub(crate) fn end(&self) -> Seq {
        Seq::new(self.indexed_next.get() + self.pending.len() as u64)
    }
}

/// The session's latest records, contiguous: `first .. first + records.len()`.
/// Records enter when appended (before they are durable: readers clamp to the
/// durable head) or when a read from disk reaches the head.
#[derive(Debug)]
pub(crate) struct TailCache {
    pub(crate) first: Seq,
    pub(crate) records: VecDeque<Record>,
    pub(crate) bytes: usize,
}

impl Slot {
    pub(crate) fn new(id: SessionId, next: Seq, hash: ChainHash) -> Slot {
        let (durable, _) = watch::channel(Head { next, hash });
        Slot {
            id,
            write: Mutex::new(WriteHead { next, hash }),
            durable,
            corrupt: OnceLock::new(),
            index: Mutex::new(SlotIndex { indexed_next: next, pending: VecDeque::new() }),
            cache: Mutex::new(TailCache { first: next, records: VecDeque::new(), bytes: 0 }),
            types: Mutex::new(TypeMemo::new(next)),
            origin: OnceLock::new(),
            dirty: AtomicBool::new(false),
            last_used: AtomicU64::new(0),
        }
    }

    pub(crate) fn empty(id: SessionId) -> Slot {
        Slot::new(id, Seq::ZERO, chain::GENESIS)
    }

    pub(crate) fn durable_rx(&self) -> watch::Receiver<Head> {
        self.durable.subscribe()
    }

    pub(crate) fn durable_head(&self) -> Head {
        *self.durable.borrow()
    }

    pub(crate) fn check_corrupt(&self) -> Result<(), Error> {
        match self.corrupt.get() {
            Some(corruption) => Err(Error::Corrupted(corruption.clone())),
            None => Ok(()),
        }
    }

    /// The first seq this session stores itself (0 unless it is a fork).
    pub(crate) fn own_start(&self) -> Seq {
        self.origin.get().map_or(Seq::ZERO, Origin::own_start)
    }

    /// Moves the durable head forward to `head` (never back).
    pub(crate) fn publish(&self, head: Head) {
        self.durable.send_if_modified(|durable| {
            let moved = durable.next < head.next;
            if moved {
                *durable = head;
            }
            moved
        });
    }

    pub(crate) fn lock_write(&self) -> Result<MutexGuard<'_, WriteHead>, Error> {
        self.write.lock().map_err(|_| Error::Engine("session write lock poisoned".to_owned()))
    }

    pub(crate) fn lock_index(&self) -> Result<MutexGuard<'_, SlotIndex>, Error> {
        self.index.lock().map_err(|_| Error::Engine("session index lock poisoned".to_owned()))
    }

    pub(crate) fn lock_types(&self) -> Result<MutexGuard<'_, TypeMemo>, Error> {
        self.types.lock().map_err(|_| Error::Engine("session type memo lock poisoned".to_owned()))
    }

    pub(crate) fn lock_cache(&self) -> Result<MutexGuard<'_, TailCache>, Error> {
        self.cache.lock().map_err(|_| Error::Engine("session cache lock poisoned".to_owned()))
    }
}

impl TailCache {
    pub(crate) fn end(&self) -> Seq {
        Seq::new(self.first.get() + self.records.len() as u64)
    }

    /// Adds the next record; a record that does not follow the cached ones
    /// restarts the cache. `total` counts the bytes of every cache.
    pub(crate) fn push(&mut self, record: &Record, total: &AtomicUsize) {
        if self.end() != record.seq() {
            self.clear(total);
            self.first = record.seq();
        }
        let size = record_size(record);
        self.records.push_back(record.clone());
        self.bytes += size;
        total.fetch_add(size, Ordering::Relaxed);
        while self.records.len() > TAIL_CACHE_RECORDS
            || (self.bytes > TAIL_CACHE_SESSION_BYTES && self.records.len() > 1)
        {
            self.pop_front(total);
        }
    }

    /// Replaces an empty cache by `records` (ending at the durable head), keeping the last ones.
    pub(crate) fn install(&mut self, records: &[Record], total: &AtomicUsize) {
        if !self.records.is_empty() {
            return;
        }
        let keep = records.len().min(TAIL_CACHE_RECORDS);
        for record in &records[records.len() - keep..] {
            self.push(record, total);
        }
    }

    /// If all of the records `from .. end` are cached, clones of the first
    /// of them that `budget` admits.
    pub(crate) fn get(&self, from: Seq, end: Seq, budget: &mut ReadBudget) -> Option<Vec<Record>> {
        if from < self.first || end > self.end() || from >= end {
            return None;
        }
        let start = (from.get() - self.first.get()) as usize;
        let stop = (end.get() - self.first.get()) as usize;
        let mut out = Vec::with_capacity(stop - start);
        for record in self.records.range(start..stop) {
            if !budget.admit(record) {
                break;
            }
            out.push(record.clone());
        }
        Some(out)
    }

    pub(crate) fn clear(&mut self, total: &AtomicUsize) {
        total.fetch_sub(self.bytes, Ordering::Relaxed);
        self.records.clear();
        self.bytes = 0;
    }

    fn pop_front(&mut self, total: &AtomicUsize) {
        if let Some(record) = self.records.pop_front() {
            let size = record_size(&record);
            self.bytes -= size;
            total.fetch_sub(size, Ordering::Relaxed);
            self.first = Seq::new(self.first.get() + 1);
        }
    }
}

/// What `record` is counted as in memory: by the tail caches and by a
/// read's budget.
pub(crate) fn record_size(record: &Record) -> usize {
    counted_size(record.canonical().map_or(REDACTED_BYTES, <[u8]>::len))
}

/// [`record_size`] of a record whose body is `body_len` bytes once decoded
/// (its canonical bytes, or a redacted record's digest).
pub(crate) fn counted_size(body_len: usize) -> usize {
    body_len + RECORD_OVERHEAD_BYTES
}
