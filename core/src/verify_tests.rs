//! Tests for the verifier: clean chains, and that every kind of damage is
//! reported at the seq where it happened.

use proptest::prelude::*;

use super::*;
use crate::id::SessionId;

fn session() -> SessionId {
    SessionId::from_parts(1_764_000_000_000, 99)
}

/// A chain of records over arbitrary canonical-looking bytes (verification by
/// links does not decode entries).
fn chain_of(bodies: &[Vec<u8>]) -> Vec<Record> {
    let mut prev = chain::GENESIS;
    let mut out = Vec::new();
    for (idx, body) in bodies.iter().enumerate() {
        let record = Record::from_canonical(session(), Seq::new(idx as u64), prev, body.clone());
        prev = record.hash();
        out.push(record);
    }
    out
}

fn verify_stored(envelopes: &[Vec<u8>]) -> Report {
    let mut verifier = Verifier::new(Anchor::GENESIS, Depth::Links);
    for (idx, bytes) in envelopes.iter().enumerate() {
        match read_stored(session(), Seq::new(idx as u64), bytes) {
            Ok(record) => verifier.push(Ok(&record)),
            Err(unreadable) => verifier.push(Err(&unreadable)),
        }
    }
    verifier.finish()
}

#[test]
fn clean_chain_is_intact() {
    let records = chain_of(&[b"a".to_vec(), b"bb".to_vec(), vec![0; 300]]);
    let report = verify_chain(Anchor::GENESIS, records.iter().map(Ok));
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.n_intact, 3);
    assert_eq!(report.head, Some((Seq::new(2), records[2].hash())));
}

#[test]
fn missing_record_is_a_seq_gap() {
    let mut records = chain_of(&[b"a".to_vec(), b"b".to_vec(), b"c".to_vec(), b"d".to_vec()]);
    records.remove(1);
    let report = verify_chain(Anchor::GENESIS, records.iter().map(Ok));
    assert_eq!(report.n_intact, 1);
    let first = report.first_break().unwrap();
    assert_eq!(first.seq, Seq::new(1));
    assert_eq!(first.kind, BreakKind::SeqGap { expected: Seq::new(1), found: Seq::new(2) });
}

#[test]
fn redacted_record_still_verifies_but_does_not_decode() {
    let mut records = chain_of(&[b"secret".to_vec(), b"next".to_vec()]);
    records[0].redact();
    let report = verify_chain(Anchor::GENESIS, records.iter().map(Ok));
    assert!(report.is_intact());
    assert_eq!(report.n_redacted, 1);
    assert_eq!(records[0].entry(), Err(crate::encoding::DecodeError::Redacted));
}

#[test]
fn full_recompute_from_the_middle_is_caught_against_an_earlier_head() {
    // An attacker who rewrites record 1 and recomputes every later link produces
    // a chain that verifies on its own; it no longer ends at the head a client
    // saw before. (Signed heads build on this.)
    let honest = chain_of(&[b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    let forged = chain_of(&[b"a".to_vec(), b"B".to_vec(), b"c".to_vec()]);
    let report = verify_chain(Anchor::GENESIS, forged.iter().map(Ok));
    assert!(report.is_intact());
    assert_ne!(report.head.map(|(_, hash)| hash), Some(honest[2].hash()));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Goal: any single-bit flip anywhere in any stored envelope is detected,
    /// and the first break is at the damaged record's seq.
    #[test]
    fn any_single_bit_flip_is_detected_at_its_seq(
        bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 1..12),
        pick in any::<prop::sample::Index>(),
        bit in any::<prop::sample::Index>(),
    ) {
        let records = chain_of(&bodies);
        let mut envelopes: Vec<Vec<u8>> = records.iter().map(|r| r.to_envelope().unwrap()).collect();
        let victim = pick.index(envelopes.len());
        let n_bits = envelopes[victim].len() * 8;
        let bit = bit.index(n_bits);
        envelopes[victim][bit / 8] ^= 1 << (bit % 8);

        let report = verify_stored(&envelopes);
        let first = report.first_break();
        prop_assert!(first.is_some(), "flip of bit {bit} in record {victim} went unnoticed");
        prop_assert_eq!(first.map(|b| b.seq), Some(Seq::new(victim as u64)));
        prop_assert_eq!(report.n_intact, victim as u64);
    }

    /// Goal: the verifier never panics, whatever it is fed.
    #[test]
    fn garbage_envelopes_never_panic(envelopes in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 0..8)) {
        let report = verify_stored(&envelopes);
        prop_assert_eq!(report.n_records, envelopes.len() as u64);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Goal: verifying records in batches, spread over threads, reports
    /// exactly what verifying them one by one does, damage included.
    #[test]
    fn push_all_reports_what_push_does(
        n in 1usize..(3 * PARALLEL_VERIFY_MIN),
        damaged in prop::collection::vec(any::<prop::sample::Index>(), 0..3),
        removed in prop::option::of(any::<prop::sample::Index>()),
        depth in prop_oneof![Just(Depth::Links), Just(Depth::Entries)],
    ) {
        let bodies: Vec<Vec<u8>> = (0..n).map(|i| format!("body {i}").into_bytes()).collect();
        let mut records = chain_of(&bodies);
        for pick in &damaged {
            let victim = pick.index(records.len());
            let record = &records[victim];
            let mut body = match record.body() {
                Body::Canonical(bytes) => bytes.clone(),
                Body::Redacted { .. } => Vec::new(),
            };
            body.push(b'!');
            records[victim] = Record::from_parts(session(), record.seq(), record.prev(), record.hash(), Body::Canonical(body));
        }
        if let Some(pick) = removed {
            records.remove(pick.index(records.len()));
        }
        let mut one_by_one = Verifier::new(Anchor::GENESIS, depth);
        for record in &records {
            one_by_one.push(Ok(record));
        }
        let mut batched = Verifier::new(Anchor::GENESIS, depth);
        for page in records.chunks(PARALLEL_VERIFY_MIN + 7) {
            batched.push_all(page);
        }
        prop_assert_eq!(batched.finish(), one_by_one.finish());
    }
}

/// Goal: `map_parallel_with` gives every item's result in item order, each
/// thread lending its own state to its items, and items whose thread panicked
/// are done again on the caller. Method: more items than one thread's claim,
/// of uneven cost; then work that panics on every thread but the caller's.
#[test]
fn map_parallel_keeps_order_and_redoes_what_a_panicking_thread_lost() {
    let items: Vec<u64> = (0..(4 * PARALLEL_VERIFY_MIN as u64)).collect();
    let uneven = |calls: &mut u64, item: &u64| {
        *calls += 1;
        let spins = if item.is_multiple_of(97) { 20_000 } else { 10 };
        (0..spins).for_each(|spin| {
            std::hint::black_box(spin);
        });
        *item
    };
    assert_eq!(map_parallel_with(&items, || 0u64, uneven), items);
    // Work fails on every thread but the caller's, and the caller's first
    // item waits (under a deadline) until a helper has taken a claim and
    // failed, so the lost claim must be done again.
    use std::sync::atomic::{AtomicBool, Ordering};
    let parallel = std::thread::available_parallelism().map_or(1, usize::from) > 1;
    let caller = std::thread::current().id();
    let helper_failed = AtomicBool::new(false);
    let fails_off_the_caller = |(): &mut (), item: &u64| {
        if std::thread::current().id() != caller {
            helper_failed.store(true, Ordering::SeqCst);
            panic!("work on a helper thread fails");
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while parallel && !helper_failed.load(Ordering::SeqCst) {
            assert!(std::time::Instant::now() < deadline, "no helper thread took a claim");
            std::thread::yield_now();
        }
        *item
    };
    assert_eq!(map_parallel_with(&items, || (), fails_off_the_caller), items);
    assert_eq!(helper_failed.load(Ordering::SeqCst), parallel, "a helper failed, and its items were redone");
}

fn chain_of_n(n: usize) -> Vec<Record> {
    let mut prev = chain::GENESIS;
    (0..n)
        .map(|idx| {
            let record = Record::from_canonical(session(), Seq::new(idx as u64), prev, vec![idx as u8; 3]);
            prev = record.hash();
            record
        })
        .collect()
}

/// Records 2 and 3 are missing and the next stored record (key seq 4) is
/// unreadable: the verifier reports the unreadable record but not the gap
/// before it, because an `Unreadable` item skips the seq-continuity check.
#[test]
fn a_gap_before_an_unreadable_record_is_reported() {
    let records = chain_of_n(6);
    let unreadable = Unreadable { seq: Seq::new(4), reason: "bad bytes".to_owned() };
    let mut verifier = Verifier::new(Anchor::GENESIS, Depth::Links);
    verifier.push(Ok(&records[0]));
    verifier.push(Ok(&records[1]));
    verifier.push(Err(&unreadable));
    verifier.push(Ok(&records[5]));
    let report = verifier.finish();
    assert_eq!(report.n_intact, 2);
    assert_eq!(
        report.first_break().map(|brk| brk.seq),
        Some(Seq::new(2)),
        "seqs 2 and 3 are missing, so the first break is at 2: {report:?}"
    );
}

/// A stray copy of record 1 after record 2: records 0..=2 are intact
/// (`n_intact` is 3), yet the first break is reported at seq 1, and the real
/// record 3 that follows gets a second break at seq 2 (the verifier
/// re-anchored on the stray copy). The first break of a chain verified from
/// genesis must sit at seq `n_intact`, and a valid record must not be blamed.
#[test]
fn a_duplicated_record_is_reported_where_it_stands_and_not_before_the_valid_prefix() {
    let records = chain_of_n(4);
    let order = [0usize, 1, 2, 1, 3];
    let report = verify_chain(Anchor::GENESIS, order.iter().map(|&idx| Ok(&records[idx])));
    assert_eq!(report.n_intact, 3);
    let first = report.first_break().expect("a duplicate is a break");
    assert_eq!(first.seq, Seq::new(report.n_intact), "first break before the valid prefix ends: {report:?}");
    assert!(
        report.breaks.iter().all(|brk| brk.seq.get() >= 3),
        "records 0..=2 are intact and must not be blamed: {report:?}"
    );
}

/// A record whose seq is far ahead of where it stands (a damaged or stray
/// record claiming seq 1000, its hash not matching) between records 1 and 2
/// of an otherwise intact chain. Since the out-of-place change the verifier
/// anchors on the stray record's seq (1000 → expects 1001), so every intact
/// record after it (2, 3, 4) counts as "from the past" and is reported as a
/// SeqGap at 1001 without ever re-anchoring, and the report's head is the
/// stray record. Before the change it re-anchored on record 2. One stray
/// record must not make the rest of the chain unverifiable.
#[test]
fn a_stray_record_from_the_future_does_not_unanchor_the_intact_records_after_it() {
    let records = chain_of_n(5);
    let stray = Record::from_canonical(session(), Seq::new(1000), records[1].hash(), vec![7; 3]);
    let mut verifier = Verifier::new(Anchor::GENESIS, Depth::Links);
    verifier.push(Ok(&records[0]));
    verifier.push(Ok(&records[1]));
    verifier.push(Ok(&stray));
    for record in &records[2..] {
        verifier.push(Ok(record));
    }
    let report = verifier.finish();
    assert_eq!(
        report.head,
        Some((Seq::new(4), records[4].hash())),
        "the chain continues through records 2..=4: {report:?}"
    );
    assert!(
        report.breaks.iter().all(|brk| brk.seq.get() < 1000),
        "intact records 2..=4 are blamed at the stray's seq: {report:?}"
    );
}

/// Found by fuzzing: at the last seq a session may hold, the anchor cannot
/// move past the record just taken, so an unreadable item stored after it
/// (a copy of it under the next key) must be reported where it stands, not
/// as a gap at the seq that was just verified.
#[test]
fn an_unreadable_item_after_the_last_possible_seq_is_blamed_where_it_stands() {
    let last = crate::limits::MAX_EVENTS_PER_SESSION;
    let anchor = Anchor { next_seq: Seq::new(last - 1), prev: chain::GENESIS };
    let first = Record::from_canonical(session(), Seq::new(last - 1), chain::GENESIS, vec![1; 3]);
    let second = Record::from_canonical(session(), Seq::new(last), first.hash(), vec![2; 3]);
    let copy = Unreadable { seq: Seq::new(last + 1), reason: "a copy of the last record".to_owned() };
    let mut verifier = Verifier::new(anchor, Depth::Links);
    verifier.push(Ok(&first));
    verifier.push(Ok(&second));
    verifier.push(Err(&copy));
    let report = verifier.finish();
    assert_eq!(report.n_intact, 2, "{report:?}");
    assert_eq!(report.first_break().map(|brk| brk.seq), Some(Seq::new(last + 1)), "{report:?}");
}
