//! Whole-store verification (`logbook verify`).
//!
//! One sequential pass over the write-ahead log, from its first segment to its
//! durable end: every record is decoded and fed to its session's [`Verifier`]
//! at [`Depth::Entries`] (a fork's verifier starts at its origin, and the
//! parent's hash at the fork point is checked against the origin), every blob
//! is re-hashed, and where each chain ends is compared with the session's head.
//! Reading the log rather than the index also checks the index: every
//! record's indexed location must be where the scan found it, with its
//! type, every type-index entry must list a record of its type, a head that
//! stops short of the log's records and a session the log does not know are
//! reported. Unlike reads, which stop at the first damage, this reports every
//! break, and damage to the log itself (a batch failing its checksum has its
//! records checked one by one; an unreadable stretch is skipped and reported).

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::mpsc::SyncSender;

use logbook_core::verify::{
    Anchor, Break, BreakKind, Depth, Prechecked, Report, Unreadable, Verifier, map_parallel_with,
};
use logbook_core::{ChainHash, Digest, Seq, SessionId};
use serde::Serialize;

use crate::engine::{Direction, Engine, Tree, prefix_range};
use crate::error::Error;
use crate::index::{self, Chunk};
use crate::keys::{self, CHUNK_SEQS};
use crate::log::LogStore;
use crate::session::{PendingRecord, Slot};
use crate::wal::{self, Entry, Location, Scan, ScannedBatch};

/// Log payload bytes whose records are decompressed, hashed and decoded
/// together on several threads before they are checked in log order.
const VERIFY_WINDOW_BYTES: usize = 8 << 20;

/// And at most this many bytes of them decoded at once: a window's records
/// can expand far beyond its stored bytes (32 MB of repeated text compresses
/// to a few KB), and a part's records are all held until they are checked.
const VERIFY_DECODED_BYTES: usize = 64 << 20;

/// The end of the part of `items` from `start` whose decoded bodies fit in
/// [`VERIFY_DECODED_BYTES`] (at least one entry, however large).
fn decoded_part_end(items: &[(u64, usize, Entry<'_>)], start: usize) -> usize {
    let mut decoded = 0usize;
    let mut end = start;
    while let Some((_, _, entry)) = items.get(end) {
        decoded = decoded.saturating_add(entry.decoded_len());
        if end > start && decoded > VERIFY_DECODED_BYTES {
            break;
        }
        end += 1;
    }
    end
}

/// An entry's own work, done on any thread: a record read back and
/// prechecked (at [`Depth::Entries`], every chain's depth), or a blob re-hashed.
/// Neither keeps the entry's bytes.
enum Checked {
    /// `code`: the type code the record's canonical bytes hold (`None` for a
    /// redacted record, or bytes that could not be read).
    Record {
        header: wal::RecordHeader,
        read: Result<Prechecked, String>,
        code: Option<u16>,
    },
    Blob {
        digest: Digest,
        read: Result<(), String>,
    },
    Fork(wal::ForkEntry),
    Resource,
}

impl Checked {
    /// `scratch` is the calling thread's buffer for decompressed bodies.
    fn of(entry: &Entry<'_>, scratch: &mut Vec<u8>) -> Checked {
        match entry {
            Entry::Record { header, body } => {
                let read = wal::precheck_entry(header, body, Depth::Entries, scratch);
                // A compressed body was decompressed into `scratch`.
                let code = read.as_ref().ok().and_then(|_| match header.codec {
                    wal::BodyCodec::Raw => index::event_code(body),
                    wal::BodyCodec::Zstd => index::event_code(scratch),
                    wal::BodyCodec::Redacted => None,
                });
                Checked::Record { header: *header, read, code }
            }
            Entry::Blob { digest, codec, body } => {
                Checked::Blob { digest: *digest, read: wal::check_blob_entry(*digest, *codec, body, scratch) }
            }
            Entry::Fork(fork) => Checked::Fork(*fork),
            Entry::Resource { .. } => Checked::Resource,
        }
    }
}

/// Where a long verification is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyProgress {
    pub n_records: u64,
    pub n_sessions: u64,
    pub n_blobs: u64,
}

/// The outcome of verifying a whole store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreReport {
    pub sessions: Vec<SessionReport>,
    pub n_records: u64,
    pub n_blobs: u64,
    pub blob_errors: Vec<String>,
    /// Damage to the log outside any one record (a damaged batch, a stray segment).
    pub log_errors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionReport {
    pub session: SessionId,
    pub report: Report,
}

impl StoreReport {
    pub fn is_intact(&self) -> bool {
        self.blob_errors.is_empty() && self.log_errors.is_empty() && self.sessions.iter().all(|s| s.report.is_intact())
    }

    /// Sessions with at least one break.
    pub fn damaged(&self) -> impl Iterator<Item = &SessionReport> {
        self.sessions.iter().filter(|s| !s.report.is_intact())
    }
}

/// One session's verification in progress.
#[derive(Debug)]
struct Chain {
    verifier: Verifier,
    anchor: Anchor,
    /// For a fork: the parent and the parent's hash it claims at `at_seq`.
    origin: Option<(SessionId, Seq, ChainHash)>,
    /// Records whose index entry disagrees with the log.
    misplaced: Vec<Break>,
}

/// One session's index as of the start of the verification.
#[derive(Debug)]
struct IndexView {
    durable_next: Seq,
    indexed_next: Seq,
    pending: Vec<PendingRecord>,
    chunk: Option<(u64, Option<Chunk>)>,
}

impl IndexView {
    fn of(slot: &Slot) -> IndexView {
        let (indexed_next, pending) = slot
            .lock_index()
            .map(|index| (index.indexed_next, index.pending.iter().copied().collect()))
            .unwrap_or((Seq::ZERO, Vec::new()));
        IndexView { durable_next: slot.durable_head().next, indexed_next, pending, chunk: None }
    }

    /// Where the index says `seq` is, and its type code; `None` if it does not know.
    fn location(&mut self, engine: &dyn Engine, session: SessionId, seq: Seq) -> Option<(Location, u16)> {
        if seq >= self.indexed_next {
            return self.pending.get((seq.get() - self.indexed_next.get()) as usize).map(|p| (p.location, p.code));
        }
        let chunk_no = seq.get() / CHUNK_SEQS;
        if self.chunk.as_ref().map(|(n, _)| *n) != Some(chunk_no) {
            let key = keys::locations_key(session, seq);
            let chunk =
                engine.get(crate::engine::Tree::Log, &key).ok().flatten().and_then(|v| Chunk::decode(chunk_no, &v));
            self.chunk = Some((chunk_no, chunk));
        }
        let (_, chunk) = self.chunk.as_ref()?;
        let chunk = chunk.as_ref()?;
        let idx = seq.get().checked_sub(chunk.first.get())?;
        chunk.entries.get(idx as usize).copied()
    }

    /// The break to report if the index does not place this durable record
    /// where the log has it (`lsn`), or gives it another type than the log's
    /// entry; records past the durable head are not indexed yet and pass.
    /// (The type index proper is checked against these types once the log
    /// has been read: [`type_index_break`].)
    fn misplaced(&mut self, engine: &dyn Engine, header: &wal::RecordHeader, lsn: u64) -> Option<Break> {
        if header.seq >= self.durable_next {
            return None;
        }
        let reason = match self.location(engine, header.session, header.seq) {
            Some((location, code)) if location.lsn == lsn && code == header.code => return None,
            Some((location, _)) if location.lsn != lsn => {
                format!("the index places it at {location}, the log has it at {}", wal::Lsn(lsn))
            }
            Some((_, code)) => format!("the index gives it type code {code}, the log type code {}", header.code),
            None => "the index does not list it".to_owned(),
        };
        Some(Break { seq: header.seq, kind: BreakKind::Unreadable { reason } })
    }
}

/// Windows the log reader may have read ahead of the checks.
const VERIFY_WINDOWS_AHEAD: usize = 1;

/// Batches of the log read for one round of [`LogStore::verify_all`].
struct Window {
    batches: Vec<ScannedBatch>,
    /// Damage the scan salvaged past, or stopped at, reading them.
    errors: Vec<String>,
    /// The scan reached the durable end (or could go no further).
    last: bool,
}

/// The next [`VERIFY_WINDOW_BYTES`] of batches below `end`.
fn next_window(scan: &mut Scan, end: u64) -> Window {
    let mut window = Window { batches: Vec::new(), errors: Vec::new(), last: false };
    let mut bytes = 0;
    while bytes < VERIFY_WINDOW_BYTES {
        match scan.next_salvaged() {
            Ok(Some(salvaged)) if salvaged.batch.header.lsn < end => {
                window.errors.extend(salvaged.problem);
                bytes += salvaged.batch.payload.len();
                window.batches.push(salvaged.batch);
            }
            Ok(Some(_) | None) => {
                window.last = true;
                break;
            }
            Err(err) => {
                window.errors.push(err.to_string());
                window.last = true;
                break;
            }
        }
    }
    window
}

/// Reads the log in windows up to `end` and hands them on, until the last or
/// until nobody takes them; then how the scan ended.
fn read_windows(mut scan: Scan, end: u64, windows: SyncSender<Window>) -> Result<(), String> {
    loop {
        let window = next_window(&mut scan, end);
        let last = window.last;
        if windows.send(window).is_err() || last {
            break;
        }
    }
    scan.end().map(|_| ()).map_err(|err| err.to_string())
}

/// What [`LogStore::verify_all`] has found so far, window by window.
struct Pass<'a> {
    engine: &'a dyn Engine,
    chains: HashMap<SessionId, Chain>,
    views: HashMap<SessionId, IndexView>,
    /// The hashes at fork points (see `verify_all`), filled in as the scan passes them.
    fork_points: HashMap<(SessionId, Seq), Option<ChainHash>>,
    done: VerifyProgress,
    blob_errors: Vec<String>,
    log_errors: Vec<String>,
}

impl Pass<'_> {
    /// Checks one window of the log: its records' own work (decompressing,
    /// hashing, decoding) on several threads, then every check that follows
    /// the chains and the index here, in log order.
    fn check_window(&mut self, window: Window) {
        let Window { batches, errors, last: _ } = window;
        self.log_errors.extend(errors);
        let mut items: Vec<(u64, usize, Entry<'_>)> = Vec::new();
        for batch in &batches {
            for item in wal::entries(&batch.payload) {
                match item {
                    Ok((offset, entry)) => items.push((batch.header.lsn, offset, entry)),
                    Err(reason) => {
                        self.log_errors.push(format!("the batch at {}: {reason}", wal::Lsn(batch.header.lsn)));
                        break;
                    }
                }
            }
        }
        let mut part_start = 0;
        while part_start < items.len() {
            let part = &items[part_start..decoded_part_end(&items, part_start)];
            part_start += part.len();
            let checked = map_parallel_with(part, Vec::new, |scratch, (_, _, entry)| Checked::of(entry, scratch));
            for ((batch_lsn, offset, _), checked) in part.iter().zip(checked) {
                self.check_entry(batch_lsn + (wal::BATCH_HEADER_BYTES + offset) as u64, checked);
            }
        }
        self.done.n_sessions = self.chains.len() as u64;
    }

    /// The in-order checks of the entry at `lsn`.
    fn check_entry(&mut self, lsn: u64, checked: Checked) {
        match checked {
            Checked::Record { header, read, code } => {
                self.done.n_records += 1;
                let chain = self.chains.entry(header.session).or_insert_with(|| Chain::new(Anchor::GENESIS, None));
                let view = self.views.get_mut(&header.session);
                if let Some(misplaced) = view.and_then(|v| v.misplaced(self.engine, &header, lsn)) {
                    chain.misplaced.push(misplaced);
                }
                // The entry's type (what the index is built from) is not
                // hashed; the event's own is.
                if let Some(code) = code.filter(|code| *code != header.code) {
                    let reason = format!("its entry gives type code {}, its event has type code {code}", header.code);
                    chain.misplaced.push(Break { seq: header.seq, kind: BreakKind::Unreadable { reason } });
                }
                match read {
                    Ok(pre) => {
                        if let Some(slot) = self.fork_points.get_mut(&(header.session, header.seq)) {
                            *slot = Some(pre.stored_hash());
                        }
                        chain.verifier.push_prechecked(pre);
                    }
                    Err(reason) => chain.verifier.push(Err(&Unreadable { seq: header.seq, reason })),
                }
            }
            Checked::Fork(fork) => {
                let anchor = Anchor { next_seq: Seq::new(fork.at_seq.get() + 1), prev: fork.parent_hash };
                let origin = Some((fork.parent, fork.at_seq, fork.parent_hash));
                if self.chains.insert(fork.child, Chain::new(anchor, origin)).is_some() {
                    self.log_errors.push(format!("{} is forked after it already had records", fork.child));
                }
            }
            Checked::Blob { digest, read } => {
                self.done.n_blobs += 1;
                if let Err(reason) = read {
                    self.blob_errors.push(format!("blob {digest}: {reason}"));
                }
            }
            Checked::Resource => {}
        }
    }
}

impl<E: Engine> LogStore<E> {
    /// Verifies every chain, every head and every blob. `progress` is called
    /// after each window of the log's batches.
    pub fn verify_all(&self, progress: &mut dyn FnMut(VerifyProgress)) -> Result<StoreReport, Error> {
        let core = &self.inner.core;
        let slots: Vec<Arc<Slot>> = core.slots.read().map(|s| s.values().cloned().collect()).unwrap_or_default();
        // The store may be live: each session's durable head before the
        // scan's end is taken and after the scan bound the chain the scan
        // reads (appends acknowledged meanwhile are no damage).
        let heads_before: HashMap<SessionId, crate::Head> = slots.iter().map(|s| (s.id, s.durable_head())).collect();
        let end = core.queue.durable_end();
        // The hashes at fork points, keyed by the session that stores the
        // record there (a parent's own record, or one of its ancestors'),
        // filled in as the scan passes them.
        let owners: HashMap<SessionId, Arc<Slot>> = slots.iter().map(|s| (s.id, Arc::clone(s))).collect();
        let fork_points: HashMap<(SessionId, Seq), Option<ChainHash>> = slots
            .iter()
            .filter_map(|slot| slot.origin.get().map(|o| ((owner_of(&owners, o.parent, o.at_seq), o.at_seq), None)))
            .collect();
        let mut pass = Pass {
            engine: &core.engine,
            chains: HashMap::new(),
            views: slots.iter().map(|s| (s.id, IndexView::of(s))).collect(),
            fork_points,
            done: VerifyProgress { n_records: 0, n_sessions: 0, n_blobs: 0 },
            blob_errors: Vec::new(),
            log_errors: Vec::new(),
        };
        let scan = Scan::new(Arc::clone(&core.log), 0, None)
            .map_err(|err| Error::Engine(format!("reading the log: {err}")))?;
        // The log is read on its own thread, a window ahead: reading the next
        // window overlaps checking this one.
        let read = std::thread::scope(|scope| {
            let (windows_tx, windows) = std::sync::mpsc::sync_channel(VERIFY_WINDOWS_AHEAD);
            let reader = scope.spawn(move || read_windows(scan, end, windows_tx));
            for window in windows {
                pass.check_window(window);
                progress(pass.done);
            }
            reader.join()
        });
        let Pass { chains, views, fork_points, done, blob_errors, mut log_errors, .. } = pass;
        match read {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => log_errors.push(reason),
            Err(_) => log_errors.push("the thread reading the log panicked".to_owned()),
        }
        let mut sessions: Vec<SessionReport> = chains
            .into_iter()
            .map(|(session, chain)| {
                // A session created during the scan has no head before it.
                let after = core.slot(session).map(|s| s.durable_head());
                let heads = after.map(|after| Heads { before: heads_before.get(&session).copied(), after });
                finish(session, chain, heads, &owners, &fork_points)
            })
            .collect();
        // Index entries past a session's head, and type-index entries that
        // misstate a record's type (as checked against the log above).
        for slot in &slots {
            let mut breaks = Vec::new();
            if let Some(seq) = index_past_head(&core.engine, slot)? {
                let reason = format!("the index lists a record at seq {seq}, past the head");
                breaks.push(Break { seq, kind: BreakKind::Unreadable { reason } });
            }
            if let Some(view) = views.get(&slot.id) {
                breaks.extend(type_index_break(&core.engine, slot, view.indexed_next)?);
            }
            for brk in breaks {
                match sessions.iter_mut().find(|s| s.session == slot.id) {
                    Some(found) => {
                        found.report.breaks.push(brk);
                        found.report.breaks.sort_by_key(|b| b.seq);
                    }
                    None => {
                        let mut report = Verifier::new(Anchor::GENESIS, Depth::Entries).finish();
                        report.breaks.push(brk);
                        sessions.push(SessionReport { session: slot.id, report });
                    }
                }
            }
        }
        // Sessions the index knew, before the scan, that the log does not.
        for slot in &slots {
            let Some(&head) = heads_before.get(&slot.id) else { continue };
            if head.next > slot.own_start() && sessions.iter().all(|s| s.session != slot.id) {
                let mut report = Verifier::new(Anchor::GENESIS, Depth::Entries).finish();
                let reason =
                    format!("the index says {} records ending in {} but the log holds none", head.next, head.hash);
                report.breaks.push(Break { seq: slot.own_start(), kind: BreakKind::Unreadable { reason } });
                sessions.push(SessionReport { session: slot.id, report });
            }
        }
        sessions.sort_by_key(|s| s.session);
        Ok(StoreReport { sessions, n_records: done.n_records, n_blobs: done.n_blobs, blob_errors, log_errors })
    }
}

/// The first seq at or past `slot`'s durable head that its checkpointed index lists.
fn index_past_head(engine: &dyn Engine, slot: &Slot) -> Result<Option<Seq>, Error> {
    let head = slot.durable_head().next;
    let from = keys::locations_key(slot.id, head).to_vec();
    let (_, end) = crate::engine::prefix_range(&keys::session_prefix(keys::LogKeyKind::Locations, slot.id));
    let range = (std::ops::Bound::Included(from), end);
    for (key, value) in engine.range(crate::engine::Tree::Log, range, crate::engine::Direction::Forward, 2)? {
        let Some((_, chunk_no)) = keys::parse_locations_key(&key) else { continue };
        let Some(chunk) = Chunk::decode(chunk_no, &value) else { return Ok(Some(Seq::new(chunk_no * CHUNK_SEQS))) };
        let end = Seq::new(chunk.first.get() + chunk.entries.len() as u64);
        if end > head {
            return Ok(Some(head.max(chunk.first)));
        }
    }
    Ok(None)
}

/// The first of `slot`'s checkpointed records below `indexed_next` (what
/// was checkpointed when the verification started: checkpoints since only
/// add later seqs) that its type index misstates: listed under a type code
/// other than the one its location entry gives (which the pass checked
/// against the log), listed twice, listed though the session does not store
/// it, or not listed at all. Records past a gap in the location chunks are
/// left to the pass, which reports the gap. Reads the session's location
/// chunks and type spans once; holds a type code per record of this one
/// session (less than the location chunks themselves).
fn type_index_break(engine: &dyn Engine, slot: &Slot, indexed_next: Seq) -> Result<Option<Break>, Error> {
    let own_start = slot.own_start();
    let unreadable = |seq: Seq, reason: String| Ok(Some(Break { seq, kind: BreakKind::Unreadable { reason } }));
    // The type code each location entry gives, from own_start on, up to
    // indexed_next or the first gap; `None` once the type index listed it.
    let mut codes: Vec<Option<u16>> = Vec::new();
    let next_seq = |codes: &Vec<Option<u16>>| own_start.get() + codes.len() as u64;
    let (mut start, end) = prefix_range(&keys::session_prefix(keys::LogKeyKind::Locations, slot.id));
    'chunks: while next_seq(&codes) < indexed_next.get() {
        let page = engine.range(Tree::Log, (start, end.clone()), Direction::Forward, TYPE_CHECK_PAGE)?;
        let Some((page_last, _)) = page.last() else { break };
        start = Bound::Excluded(page_last.clone());
        for (key, value) in &page {
            let Some(chunk) = keys::parse_locations_key(key).and_then(|(_, no)| Chunk::decode(no, value)) else {
                break 'chunks;
            };
            for (idx, (_, code)) in chunk.entries.iter().enumerate() {
                let seq = chunk.first.get() + idx as u64;
                if seq < next_seq(&codes) {
                    continue;
                }
                if seq > next_seq(&codes) || seq >= indexed_next.get() {
                    break 'chunks;
                }
                codes.push(Some(*code));
            }
        }
    }
    let (mut start, end) = prefix_range(&keys::session_prefix(keys::LogKeyKind::TypeIndex, slot.id));
    loop {
        let page = engine.range(Tree::Log, (start, end.clone()), Direction::Forward, TYPE_CHECK_PAGE)?;
        let Some((page_last, _)) = page.last() else { break };
        start = Bound::Excluded(page_last.clone());
        for (key, value) in &page {
            let (seqs, code) = match (index::decode_span(slot.id, key, value), keys::parse_type_key(key)) {
                (Ok(seqs), Some((_, code, _))) => (seqs, code),
                (Err(err), _) => return unreadable(own_start, err.to_string()),
                (Ok(_), None) => return unreadable(own_start, "malformed type index key".to_owned()),
            };
            for seq in seqs.into_iter().filter(|seq| *seq < indexed_next) {
                let Some(idx) = seq.get().checked_sub(own_start.get()) else {
                    let reason =
                        format!("the type index lists it under type code {code}; the session does not store it");
                    return unreadable(seq, reason);
                };
                let Some(listed) = codes.get_mut(idx as usize) else { continue };
                match listed.take() {
                    Some(indexed) if indexed == code => {}
                    Some(indexed) => {
                        let reason =
                            format!("the type index lists it under type code {code}, its location under {indexed}");
                        return unreadable(seq, reason);
                    }
                    None => return unreadable(seq, format!("the type index lists it twice (again under {code})")),
                }
            }
        }
    }
    match codes.iter().position(Option::is_some) {
        Some(idx) => unreadable(Seq::new(own_start.get() + idx as u64), "the type index does not list it".to_owned()),
        None => Ok(None),
    }
}

/// Index keys read per engine call while checking the type index.
const TYPE_CHECK_PAGE: usize = 256;

impl Chain {
    fn new(anchor: Anchor, origin: Option<(SessionId, Seq, ChainHash)>) -> Chain {
        Chain { verifier: Verifier::new(anchor, Depth::Entries), anchor, origin, misplaced: Vec::new() }
    }
}

/// The session that stores `session`'s record at `seq`: itself, or for a
/// fork's inherited prefix, the ancestor whose own records cover `seq`.
fn owner_of(slots: &HashMap<SessionId, Arc<Slot>>, session: SessionId, seq: Seq) -> SessionId {
    let Some(origin) = slots.get(&session).and_then(|s| s.origin.get()) else { return session };
    origin.ancestry.iter().find(|(_, end)| seq < *end).map_or(session, |(owner, _)| *owner)
}

/// A session's durable head before the scan's end was taken (none: the
/// session was created since) and after the scan.
#[derive(Debug, Clone, Copy)]
struct Heads {
    before: Option<crate::Head>,
    after: crate::Head,
}

fn finish(
    session: SessionId,
    chain: Chain,
    heads: Option<Heads>,
    owners: &HashMap<SessionId, Arc<Slot>>,
    fork_points: &HashMap<(SessionId, Seq), Option<ChainHash>>,
) -> SessionReport {
    let Chain { verifier, anchor, origin, misplaced } = chain;
    let mut report = verifier.finish();
    report.breaks.extend(misplaced);
    let chain_end = match report.head {
        Some((seq, hash)) => (Seq::new(seq.get() + 1), hash),
        None => (anchor.next_seq, anchor.prev),
    };
    if let Some((parent, at_seq, claimed)) = origin {
        match fork_points.get(&(owner_of(owners, parent, at_seq), at_seq)) {
            Some(Some(hash)) if *hash == claimed => {}
            Some(Some(hash)) => report.breaks.push(Break {
                seq: anchor.next_seq,
                kind: BreakKind::PrevMismatch { expected: *hash, found: claimed },
            }),
            Some(None) | None => report.breaks.push(Break {
                seq: anchor.next_seq,
                kind: BreakKind::Unreadable {
                    reason: format!("the fork's parent {parent} has no record at seq {at_seq}"),
                },
            }),
        }
    }
    // The chain read ends where the head was when the scan's end was taken:
    // at the head before, at the head after, or (appends acknowledged during
    // the scan) between them.
    let problem = match heads {
        None => Some(("records are in the log but the index has no such session".to_owned(), chain_end.0)),
        Some(Heads { before, after }) => {
            let at = |head: crate::Head| (head.next, head.hash) == chain_end;
            let floor = before.map_or(anchor.next_seq, |head| head.next);
            let between = floor < chain_end.0 && chain_end.0 < after.next;
            if before.is_some_and(at) || at(after) || between {
                None
            } else {
                let reason = format!(
                    "the index says {} records ending in {}, the log's chain ends at {} with {}",
                    after.next, after.hash, chain_end.0, chain_end.1
                );
                Some((reason, chain_end.0.min(after.next)))
            }
        }
    };
    if let Some((reason, seq)) = problem {
        report.breaks.push(Break { seq, kind: BreakKind::Unreadable { reason } });
    }
    report.breaks.sort_by_key(|b| b.seq);
    if let Some(first) = report.breaks.first() {
        report.n_intact = report.n_intact.min(first.seq.get().saturating_sub(anchor.next_seq.get()));
    }
    SessionReport { session, report }
}

#[cfg(test)]
mod tests {
    use logbook_core::chain;

    use super::*;
    use crate::wal::{BodyCodec, RecordHeader};

    fn parts(items: &[(u64, usize, Entry<'_>)]) -> Vec<usize> {
        let mut sizes = Vec::new();
        let mut start = 0;
        while start < items.len() {
            let end = decoded_part_end(items, start);
            sizes.push(end - start);
            start = end;
        }
        sizes
    }

    /// Goal: `verify_all` holds at most its decoded budget of records at once,
    /// however well they compress. Method: records whose 4 MiB bodies are
    /// stored in a few hundred bytes, split into parts by their claimed size.
    #[test]
    fn a_part_holds_at_most_the_decoded_budget_of_records() {
        let expanded = vec![b'a'; 4 << 20];
        let body = crate::frame::compressed(&expanded).unwrap();
        assert!(body.len() < 4096, "4 MiB of one byte stored in {} bytes", body.len());
        let header = RecordHeader {
            session: SessionId::from_parts(1_764_000_000_000, 1),
            seq: Seq::ZERO,
            prev: chain::GENESIS,
            hash: chain::GENESIS,
            code: 0,
            codec: BodyCodec::Zstd,
            body_len: body.len() as u32,
        };
        let record = |offset| (0u64, offset, Entry::Record { header, body: &body });
        let items: Vec<_> = (0..40).map(record).collect();
        let per_part = VERIFY_DECODED_BYTES / (4 << 20);
        assert_eq!(parts(&items), vec![per_part, per_part, 40 - 2 * per_part]);
        // The largest blob fills a part on its own.
        let blob = crate::frame::compressed(&vec![b'a'; logbook_core::limits::MAX_BLOB_BYTES]).unwrap();
        let digest = Digest::from_bytes([0; 32]);
        let items = vec![
            (0, 0, Entry::Record { header, body: &body }),
            (0, 1, Entry::Blob { digest, codec: BodyCodec::Zstd, body: &blob }),
            (0, 2, Entry::Resource { kind: crate::ResourceKind::Session, key: b"k", value: None }),
        ];
        assert_eq!(parts(&items), vec![1, 2]);
    }
}
