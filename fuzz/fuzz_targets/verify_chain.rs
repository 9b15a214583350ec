//! Fuzz target: the chain verifier against damaged stored chains.
//!
//! The fuzzer picks a session, a start anchor (genesis, or a fork point up to
//! the last seq a session may hold) and record bodies (arbitrary bytes or real
//! entries), from which a correct chain is sealed with `Record::from_canonical`.
//! It then applies a list of mutations to the stored envelopes: flip bits,
//! truncate, drop, duplicate, swap, redact. Each envelope is read back with
//! `verify::read_stored` under the seq its position gives, as the store reads
//! it, and pushed into a `Verifier`. The oracle: a stored envelope is genuine if
//! it is the original envelope of its position or that record redacted. The
//! report must then be intact, with every record counted as intact, exactly
//! when every stored envelope is genuine; otherwise the first break is at the
//! first non-genuine position, and the records before it are the intact prefix.
//! That covers the two plain cases spelled out as their own assertions: an
//! unmutated chain is intact, and one envelope with flipped bits breaks at its
//! seq. Nothing may panic. A failure is a bug in `core`, not in this target.

#![no_main]

use std::sync::LazyLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use logbook_core::limits::MAX_EVENTS_PER_SESSION;
use logbook_core::verify::{self, Anchor, BreakKind, Depth, Report, Verifier};
use logbook_core::{ChainHash, Entry, Event, EventId, Record, Seq, SessionId, Timestamp};

/// Most records in one chain, and most mutations applied to it: enough for
/// every interaction between neighbours, small enough to stay fast.
const RECORDS_MAX: usize = 24;
const MUTATIONS_MAX: usize = 8;

#[derive(Debug, Arbitrary)]
struct Input {
    session: [u8; 16],
    start: Start,
    bodies: Vec<BodySpec>,
    mutations: Vec<Mutation>,
}

/// Where the chain starts: genesis, or a fork point `offset` seqs from the
/// bottom or from the top of the seq range, so that the
/// `MAX_EVENTS_PER_SESSION` edge is reached.
#[derive(Debug, Arbitrary)]
enum Start {
    Genesis,
    Fork { prev: [u8; 32], offset: u64, from_top: bool },
}

#[derive(Debug, Arbitrary)]
enum BodySpec {
    /// Bytes that need not be an entry: verification by links never decodes.
    Raw(Vec<u8>),
    /// A real entry, built from one of `sample_events()`.
    Entry { event_idx: u8, id: [u8; 16], at_micros: i64 },
}

/// What is done to the stored envelopes. Record indexes are taken modulo the
/// number of envelopes stored at the time. `Redact` replaces a body by its
/// digest, as tamper tooling would; the chain still verifies if the record was
/// genuine.
#[derive(Debug, Arbitrary)]
enum Mutation {
    FlipBits { record: u8, byte: u16, mask: u8 },
    Truncate { record: u8, len: u16 },
    Drop { record: u8 },
    Duplicate { record: u8 },
    Swap { a: u8, b: u8 },
    Redact { record: u8 },
}

static SAMPLE_EVENTS: LazyLock<Vec<Event>> = LazyLock::new(logbook_core::event::sample_events);

fuzz_target!(|input: Input| check(input));

fn check(input: Input) {
    let session = SessionId::from_bytes(input.session);
    let bodies: Vec<Vec<u8>> = input.bodies.iter().take(RECORDS_MAX).map(body_bytes).collect();
    let n_records = bodies.len();
    let anchor = anchor(&input.start, n_records);

    // The genuine chain: the envelopes as written, and as they read after a
    // legitimate redaction.
    let mut originals = Vec::with_capacity(n_records);
    let mut redacted = Vec::with_capacity(n_records);
    let mut prev = anchor.prev;
    for (idx, body) in bodies.into_iter().enumerate() {
        let mut record = Record::from_canonical(session, seq_at(anchor, idx), prev, body);
        prev = record.hash();
        originals.push(envelope(&record));
        record.redact();
        redacted.push(envelope(&record));
    }

    let mut stored = originals.clone();
    let mutations = &input.mutations[..input.mutations.len().min(MUTATIONS_MAX)];
    for mutation in mutations {
        apply(mutation, &mut stored);
    }

    let report = verify_stored(session, anchor, &stored, Depth::Links);
    let n_stored = stored.len() as u64;
    assert_eq!(report.n_records, n_stored);
    assert!(report.n_intact <= report.n_records);
    assert_eq!(report.is_intact(), report.n_intact == report.n_records, "{report:?}");

    let genuine = |idx: usize| originals.get(idx).is_some_and(|it| *it == stored[idx] || redacted[idx] == stored[idx]);
    match (0..stored.len()).find(|&idx| !genuine(idx)) {
        None => {
            assert!(report.is_intact(), "a chain of genuine records reports breaks: {report:?}");
            assert_eq!(report.n_intact, n_stored);
        }
        Some(first_damaged) => {
            let first = report.first_break().unwrap_or_else(|| {
                panic!("damage at position {first_damaged} went unnoticed: {report:?}\nmutations: {mutations:?}")
            });
            assert_eq!(first.seq, seq_at(anchor, first_damaged), "first break not at the first damage: {report:?}");
            assert_eq!(report.n_intact, first_damaged as u64);
        }
    }

    // The two cases the verifier's contract names, spelled out.
    if mutations.is_empty() {
        assert!(report.is_intact() && report.n_intact == n_records as u64, "an unmutated chain: {report:?}");
    }
    if let Some(victim) = single_flipped(mutations, &originals, &stored) {
        let first = report.first_break().map(|it| it.seq);
        assert_eq!(first, Some(seq_at(anchor, victim)), "bits flipped in record {victim} only: {report:?}");
    }

    // Decoding every entry as well adds breaks only where a body is not an
    // entry, and never panics.
    let deep = verify_stored(session, anchor, &stored, Depth::Entries);
    assert_eq!(deep.n_records, n_stored);
    assert!(deep.n_intact <= report.n_intact);
    for extra in deep.breaks.iter().filter(|it| !report.breaks.contains(it)) {
        assert!(matches!(extra.kind, BreakKind::EntryUndecodable { .. }), "{extra:?}");
    }
}

fn body_bytes(spec: &BodySpec) -> Vec<u8> {
    match spec {
        BodySpec::Raw(bytes) => bytes.clone(),
        BodySpec::Entry { event_idx, id, at_micros } => {
            let event = SAMPLE_EVENTS[usize::from(*event_idx) % SAMPLE_EVENTS.len()].clone();
            let entry = Entry { id: EventId::from_bytes(*id), at: Timestamp::from_unix_micros(*at_micros), event };
            entry.to_canonical().unwrap_or_else(|err| panic!("a sample entry does not encode: {err}"))
        }
    }
}

/// The start anchor, placed so that the last record's seq is at most
/// `MAX_EVENTS_PER_SESSION` (the highest seq `Seq::next` returns).
fn anchor(start: &Start, n_records: usize) -> Anchor {
    match start {
        Start::Genesis => Anchor::GENESIS,
        Start::Fork { prev, offset, from_top } => {
            let highest = MAX_EVENTS_PER_SESSION + 1 - n_records.max(1) as u64;
            let offset = offset % (highest + 1);
            let seq = if *from_top { highest - offset } else { offset };
            Anchor { next_seq: Seq::new(seq), prev: ChainHash::from_bytes(*prev) }
        }
    }
}

/// The seq the store's key gives the envelope at `position`.
fn seq_at(anchor: Anchor, position: usize) -> Seq {
    Seq::new(anchor.next_seq.get() + position as u64)
}

fn envelope(record: &Record) -> Vec<u8> {
    record.to_envelope().unwrap_or_else(|err| panic!("a sealed record does not encode: {err}"))
}

fn apply(mutation: &Mutation, stored: &mut Vec<Vec<u8>>) {
    if stored.is_empty() {
        return;
    }
    let n_stored = stored.len();
    let pick = |record: u8| usize::from(record) % n_stored;
    match *mutation {
        Mutation::FlipBits { record, byte, mask } => {
            let bytes = &mut stored[pick(record)];
            if !bytes.is_empty() {
                let idx = usize::from(byte) % bytes.len();
                bytes[idx] ^= mask.max(1);
            }
        }
        Mutation::Truncate { record, len } => {
            let bytes = &mut stored[pick(record)];
            bytes.truncate(usize::from(len) % bytes.len().max(1));
        }
        Mutation::Drop { record } => {
            stored.remove(pick(record));
        }
        Mutation::Duplicate { record } => {
            if stored.len() < RECORDS_MAX * 2 {
                let idx = pick(record);
                stored.insert(idx + 1, stored[idx].clone());
            }
        }
        Mutation::Swap { a, b } => {
            let (a, b) = (pick(a), pick(b));
            stored.swap(a, b);
        }
        Mutation::Redact { record } => {
            let idx = pick(record);
            if let Ok(mut decoded) = Record::from_envelope(&stored[idx]) {
                decoded.redact();
                stored[idx] = envelope(&decoded);
            }
        }
    }
}

/// Reads each stored envelope under its position's key and verifies the lot.
fn verify_stored(session: SessionId, anchor: Anchor, stored: &[Vec<u8>], depth: Depth) -> Report {
    let mut verifier = Verifier::new(anchor, depth);
    for (position, bytes) in stored.iter().enumerate() {
        match verify::read_stored(session, seq_at(anchor, position), bytes) {
            Ok(record) => verifier.push(Ok(&record)),
            Err(unreadable) => verifier.push(Err(&unreadable)),
        }
    }
    verifier.finish()
}

/// The one position whose envelope differs from the original, if bit flips
/// were the only mutations and they left exactly one envelope changed.
fn single_flipped(mutations: &[Mutation], originals: &[Vec<u8>], stored: &[Vec<u8>]) -> Option<usize> {
    if !mutations.iter().all(|it| matches!(it, Mutation::FlipBits { .. })) {
        return None;
    }
    let mut changed = (0..stored.len()).filter(|&idx| originals[idx] != stored[idx]);
    let victim = changed.next()?;
    changed.next().is_none().then_some(victim)
}
