//! The checkpointed index of the log: where each record is and which records
//! have which type.
//!
//! Locations live in chunk keys of [`CHUNK_SEQS`] seqs: the value is
//! `first[1]` (the first seq in the chunk minus the chunk's base, non-zero only
//! for a fork's first chunk) followed by one [`LOCATION_BYTES`] entry per seq:
//! `lsn[8] len[4] type[2]`, little-endian. The type index keeps, per session,
//! type and span of [`TYPE_SPAN_SEQS`] seqs, the sorted `u16` offsets of the
//! records of that type. Both are written only by checkpoints, in bulk; the
//! durable records since the last checkpoint are in each slot's pending list,
//! and lookups merge the two.

use std::collections::BTreeMap;
use std::ops::Bound;

use logbook_core::{Seq, SessionId};

use crate::engine::{Direction, Engine, Tree, Write};
use crate::error::{Corruption, Error};
use crate::keys::{self, CHUNK_SEQS, TYPE_SPAN_SEQS};
use crate::session::{Latest, PendingRecord, Slot};
use crate::wal::Location;

/// Bytes of one entry of a location chunk.
pub(crate) const LOCATION_BYTES: usize = 8 + 4 + 2;

/// Type-index spans read per engine call while scanning.
const SPANS_PER_READ: usize = 16;

/// One record's place in the log and its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Located {
    pub(crate) seq: Seq,
    pub(crate) location: Location,
    pub(crate) code: u16,
}

/// A decoded location chunk: the seq of its first entry and the entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunk {
    pub(crate) first: Seq,
    pub(crate) entries: Vec<(Location, u16)>,
}

impl Chunk {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.entries.len() * LOCATION_BYTES);
        out.push((self.first.get() % CHUNK_SEQS) as u8);
        for (location, code) in &self.entries {
            out.extend_from_slice(&location.lsn.to_le_bytes());
            out.extend_from_slice(&location.len.to_le_bytes());
            out.extend_from_slice(&code.to_le_bytes());
        }
        out
    }

    /// Decodes the chunk stored under chunk number `chunk`.
    pub(crate) fn decode(chunk: u64, value: &[u8]) -> Option<Chunk> {
        let (first_offset, rest) = value.split_first()?;
        let first_offset = u64::from(*first_offset);
        if rest.len() % LOCATION_BYTES != 0 || first_offset + (rest.len() / LOCATION_BYTES) as u64 > CHUNK_SEQS {
            return None;
        }
        let entries = rest
            .chunks_exact(LOCATION_BYTES)
            .map(|item| {
                let lsn = u64::from_le_bytes(item[..8].try_into().unwrap_or_default());
                let len = u32::from_le_bytes(item[8..12].try_into().unwrap_or_default());
                let code = u16::from_le_bytes([item[12], item[13]]);
                (Location { lsn, len }, code)
            })
            .collect();
        Some(Chunk { first: Seq::new(chunk * CHUNK_SEQS + first_offset), entries })
    }

    fn end(&self) -> Seq {
        Seq::new(self.first.get() + self.entries.len() as u64)
    }
}

/// Where an entry's canonical bytes hold its event's variant index (the
/// event type's code): after the entry format byte and the 16-byte event id
/// (docs/format.md, 2.2).
const EVENT_CODE_AT: usize = 1 + 16;

/// The event type code an entry's canonical bytes hold, read in place
/// without decoding the entry (no allocation): the bincode varint of the
/// `Event` variant index, one byte below 251, else 251 and a `u16`. `None`
/// for bytes that are no entry of this format or no code.
pub(crate) fn event_code(canonical: &[u8]) -> Option<u16> {
    if *canonical.first()? != logbook_core::encoding::ENTRY_FORMAT_V1 {
        return None;
    }
    match *canonical.get(EVENT_CODE_AT)? {
        small @ 0..=250 => Some(u16::from(small)),
        251 => Some(u16::from_le_bytes(canonical.get(EVENT_CODE_AT + 1..EVENT_CODE_AT + 3)?.try_into().ok()?)),
        252..=255 => None,
    }
}

/// The locations of `slot`'s own records `from .. end` (all must exist).
pub(crate) fn locate(engine: &dyn Engine, slot: &Slot, from: Seq, end: Seq) -> Result<Vec<Located>, Error> {
    let session = slot.id;
    let (indexed_next, pending) = {
        let index = slot.lock_index()?;
        let start = from.max(index.indexed_next);
        let pending: Vec<Located> = (start.get()..end.get().min(index.end().get()))
            .map(|seq| {
                let record = index.pending[(seq - index.indexed_next.get()) as usize];
                Located { seq: Seq::new(seq), location: record.location, code: record.code }
            })
            .collect();
        (index.indexed_next, pending)
    };
    let mut out = Vec::with_capacity((end.get().saturating_sub(from.get())) as usize);
    let mut seq = from;
    let indexed_end = end.min(indexed_next);
    while seq < indexed_end {
        let chunk_no = seq.get() / CHUNK_SEQS;
        let chunk = read_chunk(engine, session, chunk_no)?
            .ok_or_else(|| missing(session, seq, "its index chunk is missing"))?;
        let mut progressed = false;
        for (idx, (location, code)) in chunk.entries.iter().enumerate() {
            let at = Seq::new(chunk.first.get() + idx as u64);
            if at < seq {
                continue;
            }
            if at >= indexed_end || at != seq {
                break;
            }
            out.push(Located { seq, location: *location, code: *code });
            seq = Seq::new(seq.get() + 1);
            progressed = true;
        }
        if !progressed {
            return Err(missing(session, seq, "its index chunk does not list it"));
        }
    }
    out.extend(pending);
    if out.len() as u64 != end.get().saturating_sub(from.get()) {
        return Err(missing(session, Seq::new(from.get() + out.len() as u64), "not indexed"));
    }
    Ok(out)
}

fn missing(session: SessionId, seq: Seq, why: &str) -> Error {
    Error::Corrupted(Corruption { session, seq, what: format!("record missing: {why}") })
}

fn read_chunk(engine: &dyn Engine, session: SessionId, chunk_no: u64) -> Result<Option<Chunk>, Error> {
    let key = keys::locations_key(session, Seq::new(chunk_no * CHUNK_SEQS));
    match engine.get(Tree::Log, &key)? {
        None => Ok(None),
        Some(value) => Chunk::decode(chunk_no, &value).map(Some).ok_or_else(|| {
            Error::Corrupted(Corruption {
                session,
                seq: Seq::new(chunk_no * CHUNK_SEQS),
                what: "malformed index chunk".to_owned(),
            })
        }),
    }
}

/// Seqs of `slot`'s own records in `from .. end` whose type code is in
/// `codes`, ascending, at most `limit`.
pub(crate) fn scan_types(
    engine: &dyn Engine,
    slot: &Slot,
    codes: &[u16],
    from: Seq,
    end: Seq,
    limit: usize,
) -> Result<Vec<Seq>, Error> {
    let (indexed_next, pending) = pending_matches(slot, codes, from, end)?;
    let mut seqs = Vec::new();
    let indexed_end = end.min(indexed_next);
    if from < indexed_end {
        for code in codes {
            let last_key = keys::type_key_for_code(slot.id, *code, (indexed_end.get() - 1) / TYPE_SPAN_SEQS).to_vec();
            let mut start =
                Bound::Included(keys::type_key_for_code(slot.id, *code, from.get() / TYPE_SPAN_SEQS).to_vec());
            let mut n_found = 0;
            'pages: loop {
                let range = (start.clone(), Bound::Included(last_key.clone()));
                let page = engine.range(Tree::Log, range, Direction::Forward, SPANS_PER_READ)?;
                let Some((page_last, _)) = page.last() else { break };
                start = Bound::Excluded(page_last.clone());
                for (key, value) in &page {
                    for seq in decode_span(slot.id, key, value)? {
                        if seq >= indexed_end {
                            break 'pages;
                        }
                        if seq >= from {
                            seqs.push(seq);
                            n_found += 1;
                            if n_found >= limit {
                                break 'pages;
                            }
                        }
                    }
                }
            }
        }
    }
    seqs.sort_unstable();
    seqs.dedup();
    seqs.extend(pending);
    seqs.truncate(limit);
    Ok(seqs)
}

/// The latest of `slot`'s own records before `end` whose type code is in
/// `codes`: from the slot's type memo, asking the index only for what the
/// memo does not know.
pub(crate) fn last_of_types(engine: &dyn Engine, slot: &Slot, codes: &[u16], end: Seq) -> Result<Option<Seq>, Error> {
    let mut latest: Option<Seq> = None;
    for &code in codes {
        let known = slot.lock_types()?.latest(code, end);
        let found = match known {
            Latest::Known(found) => found,
            Latest::LookUpBefore(tracked_from) => {
                let before = scan_last_of_code(engine, slot, code, tracked_from)?;
                slot.lock_types()?.learn(code, before);
                before
            }
            Latest::Unknown => scan_last_of_code(engine, slot, code, end)?,
        };
        latest = latest.max(found);
    }
    Ok(latest)
}

/// The latest of `slot`'s own records of type `code` before `end`, from its
/// pending records and the checkpointed type index.
fn scan_last_of_code(engine: &dyn Engine, slot: &Slot, code: u16, end: Seq) -> Result<Option<Seq>, Error> {
    let (indexed_next, pending) = pending_matches(slot, &[code], slot.own_start(), end)?;
    if let Some(last) = pending.last() {
        return Ok(Some(*last));
    }
    let indexed_end = end.min(indexed_next);
    if indexed_end == Seq::ZERO {
        return Ok(None);
    }
    let first_key = keys::type_key_for_code(slot.id, code, 0).to_vec();
    let mut end_bound =
        Bound::Included(keys::type_key_for_code(slot.id, code, (indexed_end.get() - 1) / TYPE_SPAN_SEQS).to_vec());
    loop {
        let range = (Bound::Included(first_key.clone()), end_bound.clone());
        let page = engine.range(Tree::Log, range, Direction::Backward, SPANS_PER_READ)?;
        let Some((page_last, _)) = page.last() else { return Ok(None) };
        end_bound = Bound::Excluded(page_last.clone());
        for (key, value) in &page {
            let found = decode_span(slot.id, key, value)?.into_iter().rev().find(|seq| *seq < indexed_end);
            if found.is_some() {
                return Ok(found);
            }
        }
    }
}

/// The slot's pending records in `from .. end` with one of `codes`, and where
/// the checkpointed index ends.
fn pending_matches(slot: &Slot, codes: &[u16], from: Seq, end: Seq) -> Result<(Seq, Vec<Seq>), Error> {
    let index = slot.lock_index()?;
    let matches = index
        .pending
        .iter()
        .enumerate()
        .map(|(idx, record)| (Seq::new(index.indexed_next.get() + idx as u64), record.code))
        .filter(|(seq, code)| *seq >= from && *seq < end && codes.contains(code))
        .map(|(seq, _)| seq)
        .collect();
    Ok((index.indexed_next, matches))
}

/// The seqs a type-index span lists.
pub(crate) fn decode_span(session: SessionId, key: &[u8], value: &[u8]) -> Result<Vec<Seq>, Error> {
    let malformed =
        || Error::Corrupted(Corruption { session, seq: Seq::ZERO, what: "malformed type index entry".to_owned() });
    let (key_session, _, span) = keys::parse_type_key(key).ok_or_else(malformed)?;
    if key_session != session || !value.len().is_multiple_of(2) {
        return Err(malformed());
    }
    let base = span.checked_mul(TYPE_SPAN_SEQS).ok_or_else(malformed)?;
    value
        .chunks_exact(2)
        .map(|pair| base.checked_add(u64::from(u16::from_le_bytes([pair[0], pair[1]]))).map(Seq::new))
        .collect::<Option<Vec<Seq>>>()
        .ok_or_else(malformed)
}

/// The engine writes that add `records` (the slot's records from `first` on)
/// to the checkpointed index, merged with what the index already holds.
pub(crate) fn checkpoint_writes(
    engine: &dyn Engine,
    session: SessionId,
    first: Seq,
    records: &[PendingRecord],
) -> Result<Vec<Write>, Error> {
    let mut writes = Vec::new();
    let Some(last) = records.last() else { return Ok(writes) };
    // Location chunks: the first may already hold earlier records.
    let mut chunks: BTreeMap<u64, Chunk> = BTreeMap::new();
    for (idx, record) in records.iter().enumerate() {
        let seq = Seq::new(first.get() + idx as u64);
        let chunk_no = seq.get() / CHUNK_SEQS;
        if let std::collections::btree_map::Entry::Vacant(vacant) = chunks.entry(chunk_no) {
            let existing = match read_chunk(engine, session, chunk_no)? {
                // Keep what the chunk holds below `seq`; anything from `seq` on
                // is being rewritten (a checkpoint redone after a crash).
                Some(mut chunk) if chunk.first <= seq && chunk.end() >= seq => {
                    chunk.entries.truncate((seq.get() - chunk.first.get()) as usize);
                    chunk
                }
                Some(_) | None => Chunk { first: seq, entries: Vec::new() },
            };
            vacant.insert(existing);
        }
        if let Some(chunk) = chunks.get_mut(&chunk_no) {
            chunk.entries.push((record.location, record.code));
        }
    }
    for (chunk_no, chunk) in chunks {
        writes.push((keys::locations_key(session, Seq::new(chunk_no * CHUNK_SEQS)).to_vec(), Some(chunk.encode())));
    }
    // Type spans: append offsets to what the span holds below `first`.
    let mut spans: BTreeMap<(u16, u64), Vec<u8>> = BTreeMap::new();
    for (idx, record) in records.iter().enumerate() {
        let seq = first.get() + idx as u64;
        let span = seq / TYPE_SPAN_SEQS;
        let key = (record.code, span);
        if let std::collections::btree_map::Entry::Vacant(vacant) = spans.entry(key) {
            let existing = engine.get(Tree::Log, &keys::type_key_for_code(session, record.code, span))?;
            let mut value = existing.unwrap_or_default();
            // Keep only offsets below `first`: anything at or after it is
            // being rewritten now (a checkpoint redone after a crash).
            let keep = value
                .chunks_exact(2)
                .take_while(|pair| {
                    span * TYPE_SPAN_SEQS + u64::from(u16::from_le_bytes([pair[0], pair[1]])) < first.get()
                })
                .count();
            value.truncate(keep * 2);
            vacant.insert(value);
        }
        if let Some(value) = spans.get_mut(&key) {
            value.extend_from_slice(&((seq % TYPE_SPAN_SEQS) as u16).to_le_bytes());
        }
    }
    for ((code, span), value) in spans {
        writes.push((keys::type_key_for_code(session, code, span).to_vec(), Some(value)));
    }
    let end = Seq::new(first.get() + records.len() as u64);
    writes.push((keys::head_key(session).to_vec(), Some(keys::head_value(end, last.hash).to_vec())));
    Ok(writes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: the type code read in place from canonical bytes is the event's
    /// type for every event type. Method: one sample event of each type.
    #[test]
    fn event_codes_read_in_place_are_the_event_types() {
        for (i, event) in logbook_core::event::sample_events().into_iter().enumerate() {
            let entry = logbook_core::Entry {
                id: logbook_core::EventId::from_parts(1_764_000_000_000, i as u128),
                at: logbook_core::Timestamp::from_unix_micros(1_764_000_000_000_000),
                event,
            };
            let canonical = entry.to_canonical().unwrap();
            assert_eq!(event_code(&canonical), Some(entry.event.event_type().code()), "{}", entry.event.event_type());
        }
        assert_eq!(event_code(&[]), None);
        assert_eq!(event_code(&[9; 40]), None, "another entry format");
    }

    #[test]
    fn chunks_round_trip_and_reject_garbage() {
        let chunk = Chunk {
            first: Seq::new(3 * CHUNK_SEQS + 5),
            entries: vec![(Location { lsn: 1 << 40, len: 99 }, 7), (Location { lsn: 12, len: 1 }, 0)],
        };
        assert_eq!(Chunk::decode(3, &chunk.encode()), Some(chunk.clone()));
        assert_eq!(Chunk::decode(3, &[]), None);
        assert_eq!(Chunk::decode(3, &chunk.encode()[..10]), None);
        let mut overfull = vec![60u8];
        overfull.extend(std::iter::repeat_n(0u8, LOCATION_BYTES * 5));
        assert_eq!(Chunk::decode(0, &overfull), None, "entries past the chunk's end");
    }
}
