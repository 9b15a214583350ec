//! The store's logic over any engine: open, append with group commit, reads of
//! durable records, quarantine of corrupt sessions.
//!
//! Per session the store keeps a slot in memory: the written head (under the
//! session's write lock, which serializes appenders of one session), the durable
//! length (a watch channel that readers clamp to and subscribers wait on) and a
//! corruption marker. An append writes its records, the type index entries and
//! the new head in one atomic engine batch, then waits for the barrier, and only
//! then moves the durable length: nothing is read, streamed or acknowledged
//! before it is durable.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use logbook_core::limits::{MAX_APPEND_BYTES, MAX_EVENT_BYTES, MAX_EVENTS_PER_APPEND, MAX_EVENTS_PER_SESSION};
use logbook_core::verify::read_stored;
use logbook_core::{ChainHash, Entry, EventType, Record, Seq, SessionId, chain};
use tokio::sync::watch;

use crate::barrier::{Barrier, BarrierStats};
use crate::engine::mem::MemEngine;
use crate::engine::sled::{SledEngine, SledOptions};
use crate::engine::{Direction, Engine, Tree, Write, prefix_range};
use crate::error::{AppendError, Corruption, Error, OpenError, StoreCorruption};
use crate::journal::{Journal, Journaled};
use crate::keys::{self, MetaKey};
use crate::subscription::Subscription;
use crate::{Append, Head, MAX_READ_RECORDS, Read, Subscribe, frame};

/// The layout version this binary reads and writes. See `docs/format.md`.
pub const STORAGE_VERSION: u32 = 1;

/// Records checked at the end of every session's chain on open.
pub(crate) const TAIL_CHECK_RECORDS: usize = 8;

/// A store over engine `E`. Cheap to clone; clones share everything.
#[derive(Debug)]
pub struct LogStore<E: Engine> {
    pub(crate) inner: Arc<Inner<E>>,
}

impl<E: Engine> Clone for LogStore<E> {
    fn clone(&self) -> Self {
        LogStore { inner: Arc::clone(&self.inner) }
    }
}

#[derive(Debug)]
pub(crate) struct Inner<E: Engine> {
    pub(crate) engine: E,
    pub(crate) barrier: Barrier,
    slots: RwLock<HashMap<SessionId, Arc<Slot>>>,
    /// The head journal; `None` for engines that do not persist.
    journal: Option<Mutex<Journal>>,
    /// Damage found on open outside any one session.
    damage: Vec<StoreCorruption>,
}

#[derive(Debug)]
pub(crate) struct Slot {
    write: Mutex<WriteHead>,
    durable: watch::Sender<Head>,
    corrupt: OnceLock<Corruption>,
}

#[derive(Debug, Clone, Copy)]
struct WriteHead {
    next: Seq,
    hash: ChainHash,
}

/// sled's directory inside a data directory; the head journal sits beside it.
pub const SLED_DIR: &str = "sled";

impl LogStore<SledEngine> {
    /// Opens (or creates) the store in the data directory `dir`.
    pub fn open(dir: &Path, options: &SledOptions) -> Result<Self, OpenError> {
        if !dir.exists() {
            let io_err = |err: std::io::Error| OpenError::Io { path: dir.to_owned(), reason: err.to_string() };
            std::fs::create_dir_all(dir).map_err(io_err)?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::File::open(parent).and_then(|f| f.sync_all()).map_err(io_err)?;
            }
        }
        let engine = SledEngine::open(&dir.join(SLED_DIR), options)?;
        let journal = Journal::open(dir)
            .map_err(|err| OpenError::Io { path: dir.to_owned(), reason: format!("head journal: {err}") })?;
        LogStore::build(engine, Some(journal))
    }
}

impl LogStore<MemEngine> {
    /// A fresh in-memory store.
    pub fn in_memory() -> Result<Self, OpenError> {
        LogStore::with_engine(MemEngine::new())
    }
}

impl<E: Engine> LogStore<E> {
    /// Opens a store over `engine`: checks the storage version, loads every
    /// session's head and checks the tail of its chain. A session whose tail is
    /// damaged is quarantined (its reads and appends fail with its
    /// [`Corruption`]); the others work normally.
    pub fn with_engine(engine: E) -> Result<Self, OpenError> {
        LogStore::build(engine, None)
    }

    fn build(engine: E, journal: Option<(Journal, Journaled)>) -> Result<Self, OpenError> {
        check_storage_version(&engine)?;
        let (journal, journaled) = match journal {
            Some((journal, journaled)) => (Some(Mutex::new(journal)), Some(journaled)),
            None => (None, None),
        };
        let mut inner = Inner {
            engine,
            barrier: Barrier::default(),
            slots: RwLock::new(HashMap::new()),
            journal,
            damage: Vec::new(),
        };
        let mut slots = HashMap::new();
        let engine_err = |err: Error| StoreCorruption { place: "log tree".to_owned(), what: err.to_string() };
        let mut after = Bound::Included(vec![keys::LogKeyKind::Head as u8]);
        loop {
            let range = (after.clone(), prefix_range(&[keys::LogKeyKind::Head as u8]).1);
            let page = inner.engine.range(Tree::Log, range, Direction::Forward, 4096).map_err(engine_err)?;
            let Some((last_key, _)) = page.last() else { break };
            after = Bound::Excluded(last_key.clone());
            for (key, value) in &page {
                let Some(session) = keys::parse_head_key(key) else {
                    return Err(OpenError::Corrupted(StoreCorruption {
                        place: "log tree".to_owned(),
                        what: format!("malformed head key {key:02x?}"),
                    }));
                };
                let slot = match keys::parse_head_value(value) {
                    Some((next, hash)) => {
                        let slot = Slot::new(next, hash);
                        if let Err(corruption) = inner.check_tail(session, next, hash) {
                            let _ = slot.corrupt.set(corruption);
                        }
                        slot
                    }
                    None => {
                        let slot = Slot::new(Seq::ZERO, chain::GENESIS);
                        let _ = slot.corrupt.set(Corruption {
                            session,
                            seq: Seq::ZERO,
                            what: "head record is malformed".to_owned(),
                        });
                        slot
                    }
                };
                slots.insert(session, Arc::new(slot));
            }
        }
        let commit = read_commit(&inner.engine).map_err(engine_err)?;
        if let Some(journaled) = journaled {
            inner.check_journal(&journaled, &mut slots);
            if journaled.commit > commit {
                inner.damage.push(StoreCorruption {
                    place: "storage engine".to_owned(),
                    what: format!(
                        "the engine holds commits up to {commit} but commits up to {} were acknowledged: \
                         acknowledged writes were lost",
                        journaled.commit
                    ),
                });
            }
            inner.barrier.start_commits_at(journaled.commit);
        }
        inner.barrier.start_commits_at(commit);
        inner.slots = RwLock::new(slots);
        Ok(LogStore { inner: Arc::new(inner) })
    }

    /// Damage found on open that is not confined to one session.
    pub fn store_damage(&self) -> &[StoreCorruption] {
        &self.inner.damage
    }

    pub fn engine(&self) -> &E {
        &self.inner.engine
    }

    /// Group-commit counters since open.
    pub fn barrier_stats(&self) -> BarrierStats {
        self.inner.barrier.stats()
    }

    /// Sessions found corrupt so far (on open or on a later read).
    pub fn quarantined(&self) -> Vec<Corruption> {
        let slots = self.inner.slots.read().map(|slots| slots.clone()).unwrap_or_default();
        let mut out: Vec<Corruption> = slots.values().filter_map(|slot| slot.corrupt.get().cloned()).collect();
        out.sort_by_key(|c| c.session);
        out
    }

    /// Bytes on disk.
    pub fn size_on_disk(&self) -> Result<u64, Error> {
        self.inner.engine.size_on_disk()
    }
}

fn read_commit(engine: &dyn Engine) -> Result<u64, Error> {
    match engine.get(Tree::Meta, MetaKey::Commit.as_bytes())? {
        None => Ok(0),
        Some(bytes) => match <[u8; 8]>::try_from(bytes.as_slice()) {
            Ok(raw) => Ok(u64::from_be_bytes(raw)),
            Err(_) => Err(Error::StoreCorrupted(StoreCorruption {
                place: "meta tree".to_owned(),
                what: "commit number is malformed".to_owned(),
            })),
        },
    }
}

fn check_storage_version(engine: &dyn Engine) -> Result<(), OpenError> {
    let io =
        |err: Error| OpenError::Corrupted(StoreCorruption { place: "meta tree".to_owned(), what: err.to_string() });
    match engine.get(Tree::Meta, MetaKey::StorageVersion.as_bytes()).map_err(io)? {
        Some(bytes) => {
            let raw: [u8; 4] = bytes.as_slice().try_into().map_err(|_| {
                OpenError::Corrupted(StoreCorruption {
                    place: "meta tree".to_owned(),
                    what: format!("storage version is {} bytes, not 4", bytes.len()),
                })
            })?;
            let found = u32::from_be_bytes(raw);
            if found != STORAGE_VERSION {
                return Err(OpenError::UnknownStorageVersion { found, supported: STORAGE_VERSION });
            }
            Ok(())
        }
        None => {
            let any_data = Tree::ALL.iter().any(|tree| {
                engine
                    .range(*tree, (Bound::Unbounded, Bound::Unbounded), Direction::Forward, 1)
                    .map(|p| !p.is_empty())
                    .unwrap_or(true)
            });
            if any_data {
                return Err(OpenError::NotAStore { path: Path::new("(engine)").to_owned() });
            }
            let writes =
                vec![(MetaKey::StorageVersion.as_bytes().to_vec(), Some(STORAGE_VERSION.to_be_bytes().to_vec()))];
            engine.apply(Tree::Meta, writes).map_err(io)?;
            engine.sync().map_err(io)
        }
    }
}

impl Slot {
    fn new(next: Seq, hash: ChainHash) -> Slot {
        let (durable, _) = watch::channel(Head { next, hash });
        Slot { write: Mutex::new(WriteHead { next, hash }), durable, corrupt: OnceLock::new() }
    }

    pub(crate) fn durable_rx(&self) -> watch::Receiver<Head> {
        self.durable.subscribe()
    }

    fn check_corrupt(&self) -> Result<(), Error> {
        match self.corrupt.get() {
            Some(corruption) => Err(Error::Corrupted(corruption.clone())),
            None => Ok(()),
        }
    }
}

impl<E: Engine> Inner<E> {
    pub(crate) fn slot(&self, session: SessionId) -> Option<Arc<Slot>> {
        self.slots.read().ok()?.get(&session).cloned()
    }

    pub(crate) fn slot_or_create(&self, session: SessionId) -> Result<Arc<Slot>, Error> {
        if let Some(slot) = self.slot(session) {
            return Ok(slot);
        }
        let mut slots = self.slots.write().map_err(|_| Error::Engine("session table lock poisoned".to_owned()))?;
        Ok(Arc::clone(slots.entry(session).or_insert_with(|| Arc::new(Slot::new(Seq::ZERO, chain::GENESIS)))))
    }

    fn quarantine(&self, slot: &Slot, corruption: Corruption) -> Error {
        let _ = slot.corrupt.set(corruption);
        match slot.corrupt.get() {
            Some(first) => Error::Corrupted(first.clone()),
            None => Error::Engine("corruption marker unset".to_owned()),
        }
    }

    /// The barrier's sync: record the commit number, make the engine durable,
    /// journal the heads.
    fn sync(&self, commit: u64, heads: &BTreeMap<SessionId, Head>) -> Result<(), Error> {
        self.engine
            .apply(Tree::Meta, vec![(MetaKey::Commit.as_bytes().to_vec(), Some(commit.to_be_bytes().to_vec()))])?;
        self.engine.sync()?;
        if let Some(journal) = &self.journal {
            let mut journal = journal.lock().map_err(|_| Error::Engine("head journal lock poisoned".to_owned()))?;
            journal.append(commit, heads).map_err(|err| Error::Engine(format!("writing the head journal: {err}")))?;
        }
        Ok(())
    }

    pub(crate) fn wait_durable(&self, head: Option<(SessionId, Head)>) -> Result<(), Error> {
        self.barrier.wait(head, &|commit, heads| self.sync(commit, heads))
    }

    /// Quarantines every session whose stored head falls short of its journaled one.
    fn check_journal(&self, journaled: &Journaled, slots: &mut HashMap<SessionId, Arc<Slot>>) {
        for (session, acked) in &journaled.heads {
            let session = *session;
            let slot = slots.entry(session).or_insert_with(|| Arc::new(Slot::new(Seq::ZERO, chain::GENESIS)));
            if slot.corrupt.get().is_some() {
                continue;
            }
            let stored = slot.durable.borrow().next;
            let problem = if stored < acked.next {
                Some(Corruption {
                    session,
                    seq: stored,
                    what: format!(
                        "records {stored}..{} were acknowledged but the storage engine no longer has them",
                        acked.next
                    ),
                })
            } else {
                let last = Seq::new(acked.next.get().saturating_sub(1));
                match self.engine.get(Tree::Log, &keys::event_key(session, last)) {
                    Ok(Some(value)) => {
                        match decode_pairs(session, std::iter::once((keys::event_key(session, last).to_vec(), value))) {
                            Ok(records) if records.first().map(Record::hash) == Some(acked.hash) => None,
                            Ok(_) => Some(Corruption {
                                session,
                                seq: last,
                                what: "record differs from the acknowledged one".to_owned(),
                            }),
                            Err(corruption) => Some(corruption),
                        }
                    }
                    Ok(None) => Some(Corruption { session, seq: last, what: "acknowledged record missing".to_owned() }),
                    Err(err) => Some(Corruption { session, seq: last, what: err.to_string() }),
                }
            };
            if let Some(corruption) = problem {
                let _ = slot.corrupt.set(corruption);
            }
        }
    }

    /// Checks the last records of a session against its head.
    fn check_tail(&self, session: SessionId, next: Seq, hash: ChainHash) -> Result<(), Corruption> {
        let corrupt = |seq: Seq, what: String| Corruption { session, seq, what };
        if next == Seq::ZERO {
            return Err(corrupt(Seq::ZERO, "head records an empty log".to_owned()));
        }
        let range = (
            Bound::Included(keys::event_key(session, Seq::ZERO).to_vec()),
            prefix_range(&keys::event_prefix(session)).1,
        );
        let pairs = self
            .engine
            .range(Tree::Log, range, Direction::Backward, TAIL_CHECK_RECORDS)
            .map_err(|err| corrupt(next, format!("reading the tail: {err}")))?;
        let records = decode_pairs(session, pairs.into_iter().rev())?;
        let Some(last) = records.last() else {
            return Err(corrupt(Seq::ZERO, format!("head says {next} records but none are stored")));
        };
        let last_seq = Seq::new(next.get() - 1);
        if last.seq() != last_seq {
            let seq = if last.seq() > last_seq { last.seq() } else { Seq::new(last.seq().get() + 1) };
            return Err(corrupt(
                seq,
                format!("head says the last record is {last_seq}, storage ends at {}", last.seq()),
            ));
        }
        if last.hash() != hash {
            return Err(corrupt(last_seq, "last record's hash differs from the head's".to_owned()));
        }
        check_links(session, &records)
    }

    pub(crate) fn read_range(&self, session: SessionId, from: Seq, end_wanted: Seq) -> Result<Vec<Record>, Error> {
        let Some(slot) = self.slot(session) else { return Ok(Vec::new()) };
        slot.check_corrupt()?;
        let durable = slot.durable.borrow().next;
        let end = end_wanted.min(durable);
        if from >= end {
            return Ok(Vec::new());
        }
        let range = (
            Bound::Included(keys::event_key(session, from).to_vec()),
            Bound::Excluded(keys::event_key(session, end).to_vec()),
        );
        let n_wanted = (end.get() - from.get()) as usize;
        let pairs = self.engine.range(Tree::Log, range, Direction::Forward, n_wanted)?;
        let records = decode_pairs(session, pairs.into_iter()).map_err(|c| self.quarantine(&slot, c))?;
        let checked = check_links(session, &records).and_then(|()| {
            // Every durable record in the range must be there.
            let mut expected = from;
            for record in &records {
                if record.seq() != expected {
                    return Err(Corruption { session, seq: expected, what: "record missing".to_owned() });
                }
                expected = Seq::new(expected.get() + 1);
            }
            if expected != end {
                return Err(Corruption { session, seq: expected, what: "record missing".to_owned() });
            }
            Ok(())
        });
        checked.map_err(|c| self.quarantine(&slot, c))?;
        Ok(records)
    }
}

/// Decodes `(key, framed envelope)` pairs of one session into self-consistent records.
fn decode_pairs(
    session: SessionId,
    pairs: impl Iterator<Item = (Vec<u8>, Vec<u8>)>,
) -> Result<Vec<Record>, Corruption> {
    let mut out = Vec::new();
    for (key, value) in pairs {
        let Some((key_session, seq)) = keys::parse_event_key(&key) else {
            return Err(Corruption { session, seq: Seq::ZERO, what: format!("malformed event key {key:02x?}") });
        };
        if key_session != session {
            return Err(Corruption { session, seq, what: "event key of another session in range".to_owned() });
        }
        let envelope = frame::decode(&value).map_err(|err| Corruption { session, seq, what: err.to_string() })?;
        let record = read_stored(session, seq, &envelope).map_err(|unreadable| Corruption {
            session,
            seq,
            what: unreadable.reason,
        })?;
        if !record.is_self_consistent() {
            return Err(Corruption { session, seq, what: "stored hash does not match the record".to_owned() });
        }
        out.push(record);
    }
    Ok(out)
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

impl<E: Engine> Append for LogStore<E> {
    fn append(&self, session: SessionId, expected: Seq, entries: &[Entry]) -> Result<Vec<Record>, AppendError> {
        let inner = &*self.inner;
        inner.barrier.check()?;
        if entries.is_empty() || entries.len() > MAX_EVENTS_PER_APPEND {
            return Err(AppendError::BadCount { n_events: entries.len(), max: MAX_EVENTS_PER_APPEND });
        }
        let mut canonical = Vec::with_capacity(entries.len());
        let mut n_bytes = 0usize;
        for (event_idx, entry) in entries.iter().enumerate() {
            let bytes = entry.to_canonical()?;
            if bytes.len() > MAX_EVENT_BYTES {
                return Err(AppendError::EventTooLarge { event_idx, n_bytes: bytes.len(), max: MAX_EVENT_BYTES });
            }
            n_bytes += bytes.len();
            canonical.push((bytes, entry.event.event_type()));
        }
        if n_bytes > MAX_APPEND_BYTES {
            return Err(AppendError::AppendTooLarge { n_bytes, max: MAX_APPEND_BYTES });
        }

        let slot = inner.slot_or_create(session)?;
        let (records, end) = {
            let mut head = slot.write.lock().map_err(|_| Error::Engine("session write lock poisoned".to_owned()))?;
            slot.check_corrupt()?;
            if head.next != expected {
                return Err(AppendError::Conflict { session, expected, actual: head.next });
            }
            let end = head
                .next
                .plus(entries.len() as u64)
                .ok_or(AppendError::SessionFull { session, max: MAX_EVENTS_PER_SESSION })?;
            let mut records = Vec::with_capacity(entries.len());
            let mut writes: Vec<Write> = Vec::with_capacity(2 * entries.len() + 1);
            let (mut seq, mut prev) = (head.next, head.hash);
            for (bytes, event_type) in canonical {
                let record = Record::from_canonical(session, seq, prev, bytes);
                let envelope = record.to_envelope()?;
                writes.push((keys::event_key(session, seq).to_vec(), Some(frame::encode(&envelope))));
                writes.push((keys::type_key(session, event_type, seq).to_vec(), Some(Vec::new())));
                prev = record.hash();
                seq = Seq::new(seq.get() + 1);
                records.push(record);
            }
            writes.push((keys::head_key(session).to_vec(), Some(keys::head_value(end, prev).to_vec())));
            inner.engine.apply(Tree::Log, writes)?;
            *head = WriteHead { next: end, hash: prev };
            (records, end)
        };
        let new_head = Head { next: end, hash: records.last().map_or(chain::GENESIS, Record::hash) };
        inner.wait_durable(Some((session, new_head)))?;
        slot.durable.send_if_modified(|durable| {
            // Another appender's barrier may already have covered this append
            // and published a later head.
            let moved = durable.next < end;
            if moved {
                *durable = new_head;
            }
            moved
        });
        Ok(records)
    }
}

impl<E: Engine> Read for LogStore<E> {
    fn head(&self, session: SessionId) -> Result<Head, Error> {
        let Some(slot) = self.inner.slot(session) else {
            return Ok(Head { next: Seq::ZERO, hash: chain::GENESIS });
        };
        slot.check_corrupt()?;
        let head = *slot.durable.borrow();
        Ok(head)
    }

    fn read(&self, session: SessionId, from: Seq, limit: usize) -> Result<Vec<Record>, Error> {
        let limit = limit.min(MAX_READ_RECORDS) as u64;
        let end = Seq::new(from.get().saturating_add(limit));
        self.inner.read_range(session, from, end)
    }

    fn read_before(&self, session: SessionId, before: Seq, limit: usize) -> Result<Vec<Record>, Error> {
        let Some(slot) = self.inner.slot(session) else { return Ok(Vec::new()) };
        let before = before.min(slot.durable.borrow().next);
        let limit = limit.min(MAX_READ_RECORDS) as u64;
        let from = Seq::new(before.get().saturating_sub(limit));
        self.inner.read_range(session, from, before)
    }

    fn scan_types(
        &self,
        session: SessionId,
        types: &[EventType],
        from: Seq,
        limit: usize,
    ) -> Result<Vec<Record>, Error> {
        let Some(slot) = self.inner.slot(session) else { return Ok(Vec::new()) };
        slot.check_corrupt()?;
        let durable = slot.durable.borrow().next;
        let limit = limit.min(MAX_READ_RECORDS);
        let mut seqs = Vec::new();
        for event_type in types {
            let range = (
                Bound::Included(keys::type_key(session, *event_type, from).to_vec()),
                Bound::Excluded(keys::type_key(session, *event_type, durable).to_vec()),
            );
            for (key, _) in self.inner.engine.range(Tree::Log, range, Direction::Forward, limit)? {
                match keys::parse_type_key(&key) {
                    Some((_, _, seq)) => seqs.push(seq),
                    None => {
                        let corruption = Corruption { session, seq: from, what: "malformed type index key".to_owned() };
                        return Err(self.inner.quarantine(&slot, corruption));
                    }
                }
            }
        }
        seqs.sort_unstable();
        seqs.dedup();
        seqs.truncate(limit);
        let mut out = Vec::with_capacity(seqs.len());
        for seq in seqs {
            let mut records = self.inner.read_range(session, seq, Seq::new(seq.get() + 1))?;
            match records.pop() {
                Some(record) => out.push(record),
                None => {
                    let corruption = Corruption { session, seq, what: "type index names a missing record".to_owned() };
                    return Err(self.inner.quarantine(&slot, corruption));
                }
            }
        }
        Ok(out)
    }

    fn last_of_types(&self, session: SessionId, types: &[EventType]) -> Result<Option<Record>, Error> {
        let Some(slot) = self.inner.slot(session) else { return Ok(None) };
        slot.check_corrupt()?;
        let durable = slot.durable.borrow().next;
        let mut latest: Option<Seq> = None;
        for event_type in types {
            let range = (
                Bound::Included(keys::type_key(session, *event_type, Seq::ZERO).to_vec()),
                Bound::Excluded(keys::type_key(session, *event_type, durable).to_vec()),
            );
            if let Some((key, _)) = self.inner.engine.range(Tree::Log, range, Direction::Backward, 1)?.pop() {
                match keys::parse_type_key(&key) {
                    Some((_, _, seq)) => latest = latest.max(Some(seq)),
                    None => {
                        let corruption =
                            Corruption { session, seq: Seq::ZERO, what: "malformed type index key".to_owned() };
                        return Err(self.inner.quarantine(&slot, corruption));
                    }
                }
            }
        }
        let Some(seq) = latest else { return Ok(None) };
        let mut records = self.inner.read_range(session, seq, Seq::new(seq.get() + 1))?;
        match records.pop() {
            Some(record) => Ok(Some(record)),
            None => {
                let corruption = Corruption { session, seq, what: "type index names a missing record".to_owned() };
                Err(self.inner.quarantine(&slot, corruption))
            }
        }
    }

    fn sessions(&self) -> Result<Vec<SessionId>, Error> {
        let slots = self.inner.slots.read().map_err(|_| Error::Engine("session table lock poisoned".to_owned()))?;
        let mut out: Vec<SessionId> = slots
            .iter()
            .filter(|(_, slot)| slot.corrupt.get().is_some() || slot.durable.borrow().next > Seq::ZERO)
            .map(|(session, _)| *session)
            .collect();
        out.sort_unstable();
        Ok(out)
    }
}

impl<E: Engine> Subscribe for LogStore<E> {
    fn subscribe(&self, session: SessionId, from: Seq) -> Subscription {
        let source: Arc<dyn crate::subscription::Source> = self.inner.clone();
        Subscription::new(source, session, from)
    }
}
