//! Opening a store: the storage version, the checkpointed heads and forks,
//! and the replay of the log from the last checkpoint.
//!
//! The segments to replay are first synced and dropped from the page cache.
//! The sync keeps what a crashed process wrote but never synced: later
//! appends will chain onto those batches, so they must not be lost. The drop
//! makes the replay read what the disk holds: after a failed `fdatasync` (the
//! store stopped, then restarted without a reboot) the kernel may still cache
//! pages that never reached the disk, marked clean, and replaying them would
//! build on records a power loss would take away.
//!
//! The engine's trees hold everything up to the checkpoint's LSN; the log
//! holds everything. Recovery loads the heads and fork origins from the trees,
//! then reads every batch from the checkpoint to the end of the log
//! ([`crate::wal::Scan`] tells a torn tail from damage) and applies each entry
//! again: records join their session's pending list (checked for seq
//! continuity and chain links), resource writes and blob locations are
//! written to the trees again (idempotently), forks get their origin.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;

use logbook_core::{ChainHash, Seq, SessionId, chain};

use crate::engine::{Direction, Engine, Tree, Write, prefix_range};
use crate::error::{Corruption, Error, OpenError, StoreCorruption};
use crate::keys::{self, LogKeyKind, MetaKey};
use crate::log::STORAGE_VERSION;
use crate::session::{Origin, PendingRecord, Slot};
use crate::wal::{self, Entry, ForkEntry, Location, LogWriter, Lsn, Scan};

/// Forks of forks of ... are limited to this depth: a fork's inherited prefix
/// is read through this many sessions at most (the length of its flattened
/// ancestry, checked by `fork` and again on open; the chain of parents
/// behind it may be longer).
pub const MAX_FORK_DEPTH: usize = 64;

/// Keys read per engine scan on open.
const SCAN_PAGE: usize = 4096;

/// What recovery hands the store.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) slots: HashMap<SessionId, Arc<Slot>>,
    pub(crate) writer: LogWriter,
    /// The last checkpoint: `(lsn, batch)`.
    pub(crate) checkpoint: (u64, u64),
    pub(crate) damage: Vec<StoreCorruption>,
}

/// A session as recovery rebuilds it.
#[derive(Debug, Clone)]
struct State {
    next: Seq,
    hash: ChainHash,
    indexed_next: Seq,
    pending: Vec<PendingRecord>,
    origin: Option<(SessionId, Seq, ChainHash)>,
    corrupt: Option<Corruption>,
}

impl State {
    fn empty() -> State {
        State {
            next: Seq::ZERO,
            hash: chain::GENESIS,
            indexed_next: Seq::ZERO,
            pending: Vec::new(),
            origin: None,
            corrupt: None,
        }
    }

    fn fail(&mut self, session: SessionId, seq: Seq, what: String) {
        self.corrupt.get_or_insert(Corruption { session, seq, what });
    }
}

pub(crate) fn recover(engine: &dyn Engine) -> Result<Recovered, OpenError> {
    let log = engine.log_dir();
    let tree_err = |err: Error| StoreCorruption { place: "index trees".to_owned(), what: err.to_string() };
    check_storage_version(engine)?;
    let checkpoint = match engine.get(Tree::Meta, MetaKey::Checkpoint.as_bytes()).map_err(tree_err)? {
        None => None,
        Some(value) => Some(keys::parse_checkpoint_value(&value).ok_or_else(|| StoreCorruption {
            place: "meta tree".to_owned(),
            what: "the checkpoint record is malformed".to_owned(),
        })?),
    };
    let (from, first_batch) = checkpoint.unwrap_or((0, 0));
    let mut states = load_heads(engine)?;
    load_origins(engine, &mut states)?;

    // What is replayed is read from the disk: after a failed `fdatasync`,
    // pages that never got there may still be cached (see `forget_cached`).
    log.forget_cached(wal::segment_of(from)).map_err(|err| OpenError::Io {
        path: "(log)".into(),
        reason: format!(
            "syncing the log's tail before replaying it: {err}. After a run that stopped on a failed write, \
                 this reports a write that was never acknowledged and is lost: opening again is safe. If it \
                 recurs, the disk is failing"
        ),
    })?;
    // Without a checkpoint the log starts at batch 0: a first batch numbered
    // otherwise (say, segment 0 zeroed before segment 1) is damage.
    let mut scan = Scan::new(Arc::clone(&log), from, Some(first_batch))
        .map_err(|err| OpenError::Io { path: "(log)".into(), reason: err.to_string() })?;
    while let Some(batch) = scan.next_batch()? {
        replay_batch(engine, &mut states, batch.header.lsn, &batch.payload)?;
    }
    let end = scan.end()?;
    if end.end < from {
        // Writing on from here would overwrite checkpointed records.
        return Err(OpenError::DamagedLog(wal::ScanError::BadSegment {
            segment: wal::segment_of(end.end),
            reason: format!("the log ends at {}, before its last checkpoint at {}", Lsn(end.end), Lsn(from)),
        }));
    }
    let damage = Vec::new();
    let next_batch = if end.next_batch == 0 && checkpoint.is_some() { first_batch } else { end.next_batch };
    let writer = LogWriter::new(Arc::clone(&log), end.end, next_batch, end.header);
    let slots = build_slots(states);
    Ok(Recovered { slots, writer, checkpoint: (from, first_batch), damage })
}

/// Checks (or, for a new store, writes) the storage version.
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
            match u32::from_be_bytes(raw) {
                STORAGE_VERSION => Ok(()),
                1 => Err(OpenError::Migration {
                    path: "(engine)".into(),
                    reason: "storage version 1 is migrated by `SledStore::open`, not over a bare engine".to_owned(),
                }),
                found => Err(OpenError::UnknownStorageVersion { found, supported: STORAGE_VERSION }),
            }
        }
        None => {
            let any_data = Tree::ALL.iter().any(|tree| {
                engine
                    .range(*tree, (Bound::Unbounded, Bound::Unbounded), Direction::Forward, 1)
                    .map(|p| !p.is_empty())
                    .unwrap_or(true)
            });
            if any_data {
                return Err(OpenError::NotAStore { path: "(engine)".into() });
            }
            // Either a new store, or one whose index was lost while its log
            // survived: both start from version 2's empty trees, and the
            // replay below rebuilds everything the log holds.
            let writes =
                vec![(MetaKey::StorageVersion.as_bytes().to_vec(), Some(STORAGE_VERSION.to_be_bytes().to_vec()))];
            engine.apply(Tree::Meta, writes).map_err(io)?;
            engine.sync().map_err(io)
        }
    }
}

/// Every checkpointed head.
fn load_heads(engine: &dyn Engine) -> Result<BTreeMap<SessionId, State>, OpenError> {
    let mut states = BTreeMap::new();
    for (key, value) in scan_kind(engine, LogKeyKind::Head)? {
        let session = keys::parse_head_key(&key).ok_or_else(|| malformed(&key))?;
        let mut state = State::empty();
        match keys::parse_head_value(&value) {
            Some((next, hash)) => {
                state.next = next;
                state.hash = hash;
                state.indexed_next = next;
            }
            None => state.fail(session, Seq::ZERO, "head record is malformed".to_owned()),
        }
        states.insert(session, state);
    }
    Ok(states)
}

/// Every checkpointed fork origin.
fn load_origins(engine: &dyn Engine, states: &mut BTreeMap<SessionId, State>) -> Result<(), OpenError> {
    for (key, value) in scan_kind(engine, LogKeyKind::ForkOrigin)? {
        let child = keys::parse_origin_key(&key).ok_or_else(|| malformed(&key))?;
        let state = states.entry(child).or_insert_with(State::empty);
        match keys::parse_origin_value(&value) {
            Some((_, at_seq, _)) if at_seq.get() == u64::MAX => {
                state.fail(child, Seq::ZERO, "fork origin is past the last seq".to_owned());
            }
            Some((parent, at_seq, hash)) => {
                let own_start = Seq::new(at_seq.get() + 1);
                if state.next < own_start {
                    // No own record checkpointed yet: the fork ends at its origin.
                    state.next = own_start;
                    state.hash = hash;
                    state.indexed_next = own_start;
                }
                state.origin = Some((parent, at_seq, hash));
            }
            None => state.fail(child, Seq::ZERO, "fork origin is malformed".to_owned()),
        }
    }
    Ok(())
}

fn scan_kind(engine: &dyn Engine, kind: LogKeyKind) -> Result<crate::engine::Pairs, OpenError> {
    let tree_err = |err: Error| StoreCorruption { place: "log tree".to_owned(), what: err.to_string() };
    let (mut start, end) = prefix_range(&[kind as u8]);
    let mut out = Vec::new();
    loop {
        let page = engine.range(Tree::Log, (start, end.clone()), Direction::Forward, SCAN_PAGE).map_err(tree_err)?;
        let Some((last_key, _)) = page.last() else { break };
        start = Bound::Excluded(last_key.clone());
        out.extend(page);
    }
    Ok(out)
}

fn malformed(key: &[u8]) -> OpenError {
    OpenError::Corrupted(StoreCorruption { place: "log tree".to_owned(), what: format!("malformed key {key:02x?}") })
}

/// Applies one batch's entries again.
fn replay_batch(
    engine: &dyn Engine,
    states: &mut BTreeMap<SessionId, State>,
    batch_lsn: u64,
    payload: &[u8],
) -> Result<(), OpenError> {
    let tree_err = |err: Error| StoreCorruption { place: "index trees".to_owned(), what: err.to_string() };
    let mut log_writes: Vec<Write> = Vec::new();
    let mut resource_writes: Vec<Write> = Vec::new();
    for item in wal::entries(payload) {
        let (offset, entry) = item.map_err(|reason| StoreCorruption {
            place: "write-ahead log".to_owned(),
            what: format!("the intact batch at {} holds an undecodable entry: {reason}", Lsn(batch_lsn)),
        })?;
        let lsn = batch_lsn + (wal::BATCH_HEADER_BYTES + offset) as u64;
        match entry {
            Entry::Record { header, body } => {
                let location = Location { lsn, len: (wal::RECORD_HEADER_BYTES + body.len()) as u32 };
                replay_record(states, &header, location);
            }
            Entry::Resource { kind, key, value } => {
                resource_writes.push((keys::resource_key(kind, key), value.map(<[u8]>::to_vec)));
            }
            Entry::Blob { digest, body, .. } => {
                let len = (wal::BLOB_HEADER_BYTES + body.len()) as u32;
                log_writes.push((keys::blob_key(digest).to_vec(), Some(keys::blob_value(lsn, len).to_vec())));
            }
            Entry::Fork(fork) => replay_fork(states, &fork, &mut log_writes),
        }
    }
    if !log_writes.is_empty() {
        engine.apply(Tree::Log, log_writes).map_err(tree_err)?;
    }
    if !resource_writes.is_empty() {
        engine.apply(Tree::Resources, resource_writes).map_err(tree_err)?;
    }
    Ok(())
}

fn replay_record(states: &mut BTreeMap<SessionId, State>, header: &wal::RecordHeader, location: Location) {
    let session = header.session;
    let state = states.entry(session).or_insert_with(State::empty);
    if state.corrupt.is_some() || header.seq < state.next {
        // Quarantined, or already in the index (a checkpoint that was made
        // durable just before its checkpoint record).
        return;
    }
    if header.seq > state.next {
        let what = format!("the log holds seq {} after seq {}: records are missing", header.seq, state.next);
        state.fail(session, state.next, what);
        return;
    }
    if header.prev != state.hash {
        state.fail(session, header.seq, "prev does not match the previous record's hash".to_owned());
        return;
    }
    state.pending.push(PendingRecord { location, code: header.code, hash: header.hash });
    state.next = Seq::new(header.seq.get() + 1);
    state.hash = header.hash;
}

fn replay_fork(states: &mut BTreeMap<SessionId, State>, fork: &ForkEntry, log_writes: &mut Vec<Write>) {
    let state = states.entry(fork.child).or_insert_with(State::empty);
    let origin = (fork.parent, fork.at_seq, fork.parent_hash);
    if state.origin == Some(origin) {
        return;
    }
    if state.origin.is_some() || state.next > Seq::ZERO {
        state.fail(fork.child, Seq::ZERO, "the log forks a session that already exists".to_owned());
        return;
    }
    let own_start = Seq::new(fork.at_seq.get() + 1);
    state.origin = Some(origin);
    state.next = own_start;
    state.hash = fork.parent_hash;
    state.indexed_next = own_start;
    log_writes.push((
        keys::origin_key(fork.child).to_vec(),
        Some(keys::origin_value(fork.parent, fork.at_seq, fork.parent_hash).to_vec()),
    ));
    log_writes.push((keys::fork_key(fork.parent, fork.child).to_vec(), Some(fork.at_seq.get().to_be_bytes().to_vec())));
}

/// Slots from the recovered states, forks with their flattened ancestry.
fn build_slots(mut states: BTreeMap<SessionId, State>) -> HashMap<SessionId, Arc<Slot>> {
    let mut ancestries = ancestries(&states);
    for (child, known) in &ancestries {
        if let (Err(what), Some(state)) = (known, states.get_mut(child)) {
            state.fail(*child, Seq::ZERO, what.clone());
        }
    }
    let mut slots = HashMap::with_capacity(states.len());
    for (session, state) in states {
        let slot = Slot::new(session, state.next, state.hash);
        if let Ok(mut index) = slot.index.lock() {
            index.indexed_next = state.indexed_next;
            index.pending = state.pending.into_iter().collect();
        }
        if let (Some((parent, at_seq, parent_hash)), Some(Ok(ancestry))) = (state.origin, ancestries.remove(&session)) {
            let _ = slot.origin.set(Origin { parent, at_seq, parent_hash, ancestry });
        }
        if let Some(corruption) = state.corrupt {
            let _ = slot.corrupt.set(corruption);
        }
        slots.insert(session, Arc::new(slot));
    }
    slots
}

/// A fork's flattened ancestry (see [`Origin::ancestry`]), or why it has none.
type Ancestry = Result<Vec<(SessionId, Seq)>, String>;

/// The flattened ancestry of every fork, each computed once from its
/// parent's, parents first. The limit is the one `fork` applies, on the
/// flattened ancestry ([`MAX_FORK_DEPTH`] sessions), not on the chain of
/// parents: a fork of a fork at a seq the grandparent stores has the
/// grandparent's one part however long the chain, and whatever `fork`
/// accepted must open again. Iterative, so that no chain of parents (a
/// long one, or a cycle in a damaged index) can exhaust the stack.
fn ancestries(states: &BTreeMap<SessionId, State>) -> HashMap<SessionId, Ancestry> {
    let mut known: HashMap<SessionId, Ancestry> = HashMap::new();
    for (child, state) in states {
        if state.origin.is_none() || known.contains_key(child) {
            continue;
        }
        // The forks from `child` up to the first whose parent is known or is
        // no fork: theirs are computed in reverse order, parents first.
        let mut path = vec![*child];
        let mut on_path: HashSet<SessionId> = HashSet::from([*child]);
        let mut cycle_from = None;
        let mut at = *child;
        while let Some((parent, _, _)) = states.get(&at).and_then(|s| s.origin) {
            if known.contains_key(&parent) || states.get(&parent).is_none_or(|p| p.origin.is_none()) {
                break;
            }
            if !on_path.insert(parent) {
                cycle_from = path.iter().position(|s| *s == parent);
                break;
            }
            path.push(parent);
            at = parent;
        }
        if let Some(first) = cycle_from {
            for session in path.drain(first..) {
                known.insert(session, Err("the fork's ancestry is a cycle".to_owned()));
            }
        }
        for session in path.into_iter().rev() {
            let ancestry = ancestry(states, session, &known);
            known.insert(session, ancestry);
        }
    }
    known
}

/// The flattened ancestry of fork `child`, from its parent's in `known` (a
/// parent that is no fork has none).
fn ancestry(states: &BTreeMap<SessionId, State>, child: SessionId, known: &HashMap<SessionId, Ancestry>) -> Ancestry {
    let Some((parent, at_seq, _)) = states.get(&child).and_then(|s| s.origin) else {
        return Ok(Vec::new());
    };
    let parent_state = states.get(&parent).ok_or_else(|| format!("the fork's parent {parent} is missing"))?;
    if parent_state.next <= at_seq {
        return Err(format!("the fork's parent {parent} has no record at seq {at_seq}"));
    }
    let parent_origin = parent_state.origin.map(|(_, s, _)| Seq::new(s.get() + 1));
    let flattened = match (parent_origin, known.get(&parent)) {
        (None, _) => flatten(&[], parent, None, at_seq),
        (Some(_), Some(Ok(parent_ancestry))) => flatten(parent_ancestry, parent, parent_origin, at_seq),
        (Some(_), Some(Err(what))) => return Err(format!("the fork's parent {parent}: {what}")),
        (Some(_), None) => return Err(format!("the fork's parent {parent} has no known ancestry")),
    };
    if flattened.len() > MAX_FORK_DEPTH {
        return Err(format!("the fork's ancestry is read through more than {MAX_FORK_DEPTH} sessions"));
    }
    Ok(flattened)
}

/// A child's ancestry from its parent's: the parent's parts up to `at_seq`,
/// then the parent's own records up to `at_seq`.
pub(crate) fn flatten(
    parent_ancestry: &[(SessionId, Seq)],
    parent: SessionId,
    parent_own_start: Option<Seq>,
    at_seq: Seq,
) -> Vec<(SessionId, Seq)> {
    let end = Seq::new(at_seq.get() + 1);
    let mut out = Vec::new();
    for (owner, part_end) in parent_ancestry {
        let clamped = (*part_end).min(end);
        out.push((*owner, clamped));
        if clamped == end {
            return out;
        }
    }
    if parent_own_start.unwrap_or(Seq::ZERO) < end {
        out.push((parent, end));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

    use super::*;

    fn id(n: u64) -> SessionId {
        SessionId::from_parts(1_764_000_000_000 + n, u128::from(n))
    }

    fn state(next: u64, origin: Option<(SessionId, u64)>) -> State {
        let mut state = State::empty();
        state.next = Seq::new(next);
        state.origin = origin.map(|(parent, at_seq)| (parent, Seq::new(at_seq), chain::GENESIS));
        state
    }

    /// Goal: recovery accepts any chain of forks whose flattened ancestry
    /// `fork` accepted, however long the chain of parents, without deep
    /// recursion. Method: 10 000 forks, each of the previous one at seq 2 (a
    /// record of the root), with ids sorting before their parents'.
    #[test]
    fn a_long_chain_of_forks_at_an_inherited_seq_has_a_one_part_ancestry() {
        let root = id(20_000);
        let mut states = BTreeMap::from([(root, state(5, None))]);
        let mut parent = root;
        for k in 1..=10_000 {
            let child = id(20_000 - k);
            states.insert(child, state(3, Some((parent, 2))));
            parent = child;
        }
        let known = ancestries(&states);
        assert_eq!(known.len(), 10_000);
        assert!(known.values().all(|a| a.as_ref().is_ok_and(|a| *a == vec![(root, Seq::new(3))])));
    }

    /// Goal: the limit on open is `fork`'s, on the flattened ancestry; a
    /// cycle of origins (a damaged index) fails its forks and their
    /// descendants without looping. Method: fork `k` of fork `k - 1` at its
    /// own first record, so that each adds a part; and two forks of each other.
    #[test]
    fn ancestries_longer_than_the_limit_and_cycles_fail() {
        let root = id(0);
        let mut states = BTreeMap::from([(root, state(2, None))]);
        for k in 1..=(MAX_FORK_DEPTH as u64 + 2) {
            states.insert(id(k), state(k + 1, Some((id(k - 1), k - 1))));
        }
        let (a, b, c) = (id(1000), id(1001), id(1002));
        states.insert(a, state(5, Some((b, 1))));
        states.insert(b, state(5, Some((a, 1))));
        states.insert(c, state(5, Some((a, 2))));
        let known = ancestries(&states);
        let depth = MAX_FORK_DEPTH as u64;
        assert_eq!(known[&id(depth)].as_ref().map(Vec::len), Ok(MAX_FORK_DEPTH));
        assert!(known[&id(depth + 1)].is_err(), "one part more than fork() accepts");
        assert!(known[&id(depth + 2)].is_err(), "a fork of a refused fork");
        assert!(known[&a].is_err() && known[&b].is_err() && known[&c].is_err());
    }
}
