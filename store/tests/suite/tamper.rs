//! Tamper tests: logical edits applied straight to the engine, below the
//! store's API, as someone with write access to the data directory could.
//!
//! Goal: every edit is detected, the verifier names the first bad seq for local
//! edits, and the head journal catches what the chain alone cannot (a deleted
//! tail, or a chain recomputed after an edit). Method: build a store, tamper
//! through `Engine::apply`, then run `verify_all` and reopen.

use logbook_core::verify::BreakKind;
use logbook_core::{Record, Seq};
use logbook_store::engine::{Engine, Tree};
use logbook_store::{Append, Error, Read, frame, keys};

use super::{Fixture, SledFixture, entries, entry, session};

const N_RECORDS: u64 = 12;

fn build() -> (SledFixture, Vec<Record>) {
    let fixture = SledFixture::new();
    let records = fixture.store().append(session(1), Seq::ZERO, &entries(0..N_RECORDS)).unwrap();
    fixture.store().append(session(2), Seq::ZERO, &entries(0..3)).unwrap();
    (fixture, records)
}

fn put_record(fixture: &SledFixture, record: &Record) {
    let key = keys::event_key(record.session(), record.seq()).to_vec();
    let value = frame::encode(&record.to_envelope().unwrap());
    fixture.store().engine().apply(Tree::Log, vec![(key, Some(value))]).unwrap();
}

fn first_break(fixture: &SledFixture) -> (Seq, BreakKind) {
    let report = fixture.store().verify_all(&mut |_| {}).unwrap();
    let damaged: Vec<_> = report.damaged().collect();
    assert_eq!(damaged.len(), 1, "only the tampered session is damaged: {report:?}");
    assert_eq!(damaged[0].session, session(1));
    let brk = damaged[0].report.first_break().unwrap().clone();
    (brk.seq, brk.kind)
}

#[test]
fn edited_payload_is_named_at_its_seq() {
    let (fixture, records) = build();
    let victim = &records[5];
    // Same seq, prev and stored hash; different event.
    let forged = Record::from_parts(
        victim.session(),
        victim.seq(),
        victim.prev(),
        victim.hash(),
        logbook_core::Body::Canonical(entry(99).to_canonical().unwrap()),
    );
    put_record(&fixture, &forged);
    let (seq, kind) = first_break(&fixture);
    assert_eq!(seq, Seq::new(5));
    assert!(matches!(kind, BreakKind::HashMismatch { .. }), "{kind:?}");
    // Reading through it fails with a typed error naming the seq.
    match fixture.store().read(session(1), Seq::ZERO, 100) {
        Err(Error::Corrupted(corruption)) => assert_eq!(corruption.seq, Seq::new(5)),
        other => panic!("expected corruption, got {other:?}"),
    }
    // The other session is unaffected.
    assert_eq!(fixture.store().read(session(2), Seq::ZERO, 100).unwrap().len(), 3);
}

#[test]
fn deleted_record_is_named_at_its_seq() {
    let (fixture, _) = build();
    let key = keys::event_key(session(1), Seq::new(7)).to_vec();
    fixture.store().engine().apply(Tree::Log, vec![(key, None)]).unwrap();
    let (seq, kind) = first_break(&fixture);
    assert_eq!(seq, Seq::new(7));
    assert!(matches!(kind, BreakKind::SeqGap { .. }), "{kind:?}");
}

#[test]
fn swapped_records_are_named_at_the_first() {
    let (fixture, records) = build();
    let (a, b) = (&records[3], &records[4]);
    let engine = fixture.store().engine();
    let value = |r: &Record| frame::encode(&r.to_envelope().unwrap());
    engine
        .apply(
            Tree::Log,
            vec![
                (keys::event_key(session(1), a.seq()).to_vec(), Some(value(b))),
                (keys::event_key(session(1), b.seq()).to_vec(), Some(value(a))),
            ],
        )
        .unwrap();
    let (seq, _) = first_break(&fixture);
    assert_eq!(seq, Seq::new(3));
}

#[test]
fn inserted_record_past_the_head_is_reported() {
    let (fixture, records) = build();
    let last = records.last().unwrap();
    let extra = Record::seal(session(1), Seq::new(N_RECORDS), last.hash(), &entry(500)).unwrap();
    put_record(&fixture, &extra);
    let (seq, kind) = first_break(&fixture);
    assert_eq!(seq, Seq::new(N_RECORDS + 1));
    assert!(matches!(kind, BreakKind::Unreadable { .. }), "{kind:?}");
}

/// A deleted tail with the head rewritten to match, and a chain recomputed
/// from an edited record onwards, both verify on their own. The head journal,
/// written at every barrier outside sled, catches them on the next open.
#[test]
fn truncated_tail_and_recomputed_chain_are_caught_by_the_journal() {
    for recompute in [false, true] {
        let (fixture, records) = build();
        let engine = fixture.store().engine();
        let mut writes = Vec::new();
        let cut = 8usize;
        let mut prev = records[cut - 1].hash();
        let mut end = Seq::new(cut as u64);
        if recompute {
            // Rewrite records cut.. with other content and a consistent chain.
            for (idx, _) in records.iter().enumerate().skip(cut) {
                let forged = Record::seal(session(1), Seq::new(idx as u64), prev, &entry(1000 + idx as u64)).unwrap();
                prev = forged.hash();
                end = Seq::new(idx as u64 + 1);
                writes.push((
                    keys::event_key(session(1), forged.seq()).to_vec(),
                    Some(frame::encode(&forged.to_envelope().unwrap())),
                ));
            }
        } else {
            for record in &records[cut..] {
                writes.push((keys::event_key(session(1), record.seq()).to_vec(), None));
            }
        }
        writes.push((keys::head_key(session(1)).to_vec(), Some(keys::head_value(end, prev).to_vec())));
        engine.apply(Tree::Log, writes).unwrap();
        engine.sync().unwrap();
        assert!(fixture.store().verify_all(&mut |_| {}).unwrap().is_intact(), "the chain alone cannot tell");

        let fixture = fixture.reopen();
        let quarantined = fixture.store().quarantined();
        assert_eq!(quarantined.len(), 1, "recompute={recompute}: {quarantined:?}");
        assert_eq!(quarantined[0].session, session(1));
        let expected_seq = if recompute { Seq::new(N_RECORDS - 1) } else { Seq::new(cut as u64) };
        assert_eq!(quarantined[0].seq, expected_seq, "recompute={recompute}");
        assert!(matches!(fixture.store().read(session(1), Seq::ZERO, 100), Err(Error::Corrupted(_))));
        assert_eq!(fixture.store().read(session(2), Seq::ZERO, 100).unwrap().len(), 3);
    }
}
