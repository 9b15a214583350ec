//! Review findings (branch review-core): verifier reports with missing or
//! misplaced breaks.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

use logbook_core::verify::{Anchor, Depth, Unreadable, Verifier, verify_chain};
use logbook_core::{Record, Seq, SessionId, chain};

fn session() -> SessionId {
    SessionId::from_parts(1_764_000_000_000, 99)
}

fn chain_of(n: usize) -> Vec<Record> {
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
    let records = chain_of(6);
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
    let records = chain_of(4);
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
