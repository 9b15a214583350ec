//! Tamper tests: edits applied below the store's API, to the log's segments or
//! to the index in sled, as someone with write access to the data directory
//! could.
//!
//! Goal: every edit is detected, by a read (typed error naming the seq) and
//! by `verify_all`, which names the first bad seq. Method: build a store with
//! one batch per record, tamper with the raw bytes (located through
//! `LogStore::locate`) or the index keys (the layout in `docs/format.md`),
//! reopen (so no cached record hides the edit), then read and verify.
//!
//! What local checks cannot catch, by design: a history rewritten in place
//! with a recomputed chain *and* recomputed batch checksums. Signed heads and
//! the consistency check (`/x/v1`) catch that.

use std::sync::Arc;

use logbook_core::verify::BreakKind;
use logbook_core::{Record, Seq};
use logbook_store::engine::{Engine, LogDir, Tree};
use logbook_store::wal::{self, BatchBuf, BodyCodec, LogWriter, Scan};
use logbook_store::{Append, Error, Fork, Read, SledEngine, StoreReport, Subscribe, keys};

use super::{Fixture, MemFixture, SledFixture, entries, entry, session, small_sled_options};

const N_RECORDS: u64 = 12;
/// Bytes of one entry of a location chunk: `lsn[8] len[4] type[2]`.
const LOCATION_BYTES: usize = 14;

fn build() -> (SledFixture, Vec<Record>) {
    let fixture = SledFixture::new();
    let mut records = Vec::new();
    for i in 0..N_RECORDS {
        records.extend(fixture.store().append(session(1), Seq::new(i), &entries(i..i + 1)).unwrap());
    }
    fixture.store().append(session(2), Seq::ZERO, &entries(0..3)).unwrap();
    fixture.store().checkpoint().unwrap();
    (fixture, records)
}

fn segment_of(dir: &Arc<dyn LogDir>, lsn: u64) -> Arc<dyn logbook_store::engine::SegmentFile> {
    dir.open_segment(wal::segment_of(lsn), false).unwrap()
}

fn report(fixture: &SledFixture) -> StoreReport {
    fixture.store().verify_all(&mut |_| {}).unwrap()
}

/// The first break of the only damaged session, which must be session 1.
fn first_break(report: &StoreReport) -> (Seq, BreakKind) {
    let damaged: Vec<_> = report.damaged().collect();
    assert_eq!(damaged.len(), 1, "only the tampered session is damaged: {report:?}");
    assert_eq!(damaged[0].session, session(1));
    let brk = damaged[0].report.first_break().unwrap().clone();
    (brk.seq, brk.kind)
}

/// Reading session 1 fails with a typed error at one of `seqs` (the first
/// damage the read, or the tail check on open, came across).
fn assert_read_fails_at(fixture: &SledFixture, seqs: &[u64]) {
    match fixture.store().read(session(1), Seq::ZERO, 100) {
        Err(Error::Corrupted(corruption)) => assert!(seqs.contains(&corruption.seq.get()), "{corruption}"),
        other => panic!("expected corruption at {seqs:?}, got {other:?}"),
    }
    assert_eq!(fixture.store().read(session(2), Seq::ZERO, 100).unwrap().len(), 3, "the other session reads");
}

#[test]
fn edited_payload_is_named_at_its_seq() {
    let (fixture, _) = build();
    let location = fixture.store().locate(session(1), Seq::new(5)).unwrap().unwrap();
    let dir = fixture.store().engine().log_dir();
    let segment = segment_of(&dir, location.lsn);
    let mut bytes = vec![0u8; location.len as usize];
    segment.read_exact_at(&mut bytes, wal::offset_of(location.lsn)).unwrap();
    let (wal::Entry::Record { header, .. }, _) = wal::decode_entry(&bytes).unwrap() else { panic!("not a record") };
    assert_eq!(header.codec, BodyCodec::Raw, "a small sample event is stored raw");
    // Same seq, prev and stored hash; one byte of the event changed.
    let at = wal::offset_of(location.lsn) + wal::RECORD_HEADER_BYTES as u64 + 3;
    let mut byte = [0u8];
    segment.read_exact_at(&mut byte, at).unwrap();
    segment.write_at(&[byte[0] ^ 0x01], at).unwrap();

    let fixture = fixture.reopen();
    let report = report(&fixture);
    let (seq, kind) = first_break(&report);
    assert_eq!(seq, Seq::new(5));
    assert!(matches!(kind, BreakKind::HashMismatch { .. }), "{kind:?}");
    assert!(!report.log_errors.is_empty(), "the batch's checksum fails too");
    assert_read_fails_at(&fixture, &[5]);
}

#[test]
fn deleted_record_is_named_at_its_seq() {
    let (fixture, _) = build();
    let location = fixture.store().locate(session(1), Seq::new(7)).unwrap().unwrap();
    let dir = fixture.store().engine().log_dir();
    segment_of(&dir, location.lsn).write_at(&vec![0u8; location.len as usize], wal::offset_of(location.lsn)).unwrap();

    let fixture = fixture.reopen();
    let (seq, kind) = first_break(&report(&fixture));
    assert_eq!(seq, Seq::new(7));
    assert!(matches!(kind, BreakKind::SeqGap { .. }), "{kind:?}");
    assert_read_fails_at(&fixture, &[7]);
}

#[test]
fn swapped_index_entries_are_named_at_the_first() {
    let (fixture, _) = build();
    let engine = fixture.store().engine();
    let key = keys::locations_key(session(1), Seq::ZERO).to_vec();
    let mut chunk = engine.get(Tree::Log, &key).unwrap().unwrap();
    let (a, b) = (1 + 3 * LOCATION_BYTES, 1 + 4 * LOCATION_BYTES);
    let third = chunk[a..a + LOCATION_BYTES].to_vec();
    chunk.copy_within(b..b + LOCATION_BYTES, a);
    chunk[b..b + LOCATION_BYTES].copy_from_slice(&third);
    engine.apply(Tree::Log, vec![(key, Some(chunk))]).unwrap();
    engine.sync().unwrap();

    let fixture = fixture.reopen();
    let (seq, _) = first_break(&report(&fixture));
    assert_eq!(seq, Seq::new(3));
    assert_read_fails_at(&fixture, &[3, 4]);
}

#[test]
fn an_index_entry_past_the_head_is_reported() {
    let (fixture, _) = build();
    let engine = fixture.store().engine();
    let key = keys::locations_key(session(1), Seq::ZERO).to_vec();
    let mut chunk = engine.get(Tree::Log, &key).unwrap().unwrap();
    let last = chunk[chunk.len() - LOCATION_BYTES..].to_vec();
    chunk.extend_from_slice(&last);
    engine.apply(Tree::Log, vec![(key, Some(chunk))]).unwrap();
    let (seq, kind) = first_break(&report(&fixture));
    assert_eq!(seq, Seq::new(N_RECORDS));
    assert!(matches!(kind, BreakKind::Unreadable { .. }), "{kind:?}");
}

/// A deleted tail (index entries and head rewritten to match), and a chain
/// recomputed from a record on and appended to the log with the index pointed
/// at it: both read back consistently, so only the log shows them, and
/// `verify_all` reports them at the first seq changed.
#[test]
fn truncated_tail_and_recomputed_chain_are_reported_by_verify() {
    for recompute in [false, true] {
        let (fixture, records) = build();
        let cut = 8usize;
        let data_dir = fixture.data_dir();
        let dir_guard = fixture.close();
        let engine = SledEngine::open(&data_dir, &small_sled_options()).unwrap();
        let key = keys::locations_key(session(1), Seq::ZERO).to_vec();
        let mut chunk = engine.get(Tree::Log, &key).unwrap().unwrap();
        chunk.truncate(1 + cut * LOCATION_BYTES);
        let mut head = (Seq::new(cut as u64), records[cut - 1].hash());
        if recompute {
            // Forge records cut.. with other content and a consistent chain,
            // in a valid batch at the log's end, and point the index at them.
            let log = engine.log_dir();
            let mut scan = Scan::new(Arc::clone(&log), 0, Some(0)).unwrap();
            while scan.next_batch().unwrap().is_some() {}
            let end = scan.end().unwrap();
            let mut writer = LogWriter::new(Arc::clone(&log), end.end, end.next_batch, end.header);
            let mut batch = BatchBuf::new();
            let mut offsets = Vec::new();
            let mut prev = head.1;
            for idx in cut..records.len() {
                let forged = Record::seal(session(1), Seq::new(idx as u64), prev, &entry(1000 + idx as u64)).unwrap();
                let offset = batch.next_offset();
                let code = forged.entry().unwrap().event.event_type().code();
                let canonical = forged.canonical().unwrap();
                let len =
                    batch.push_record(session(1), forged.seq(), prev, forged.hash(), code, BodyCodec::Raw, canonical);
                offsets.push((offset, len, code));
                prev = forged.hash();
            }
            let header = writer.write(&mut batch).unwrap();
            for (offset, len, code) in offsets {
                chunk.extend_from_slice(&(header.lsn + u64::from(offset)).to_le_bytes());
                chunk.extend_from_slice(&len.to_le_bytes());
                chunk.extend_from_slice(&code.to_le_bytes());
            }
            head = (Seq::new(records.len() as u64), prev);
            // The checkpoint now covers the forged batch, so no replay undoes it.
            let checkpoint = keys::checkpoint_value(writer.end(), writer.next_batch()).to_vec();
            engine.apply(Tree::Meta, vec![(b"checkpoint".to_vec(), Some(checkpoint))]).unwrap();
        }
        let head_value = keys::head_value(head.0, head.1).to_vec();
        engine
            .apply(Tree::Log, vec![(key, Some(chunk)), (keys::head_key(session(1)).to_vec(), Some(head_value))])
            .unwrap();
        engine.sync().unwrap();
        drop(engine);

        let store = logbook_store::SledStore::open(&data_dir, &small_sled_options()).unwrap();
        assert!(store.quarantined().is_empty(), "recompute={recompute}: reads see a consistent log");
        assert_eq!(store.read(session(1), Seq::ZERO, 100).unwrap().len(), head.0.get() as usize);
        let report = store.verify_all(&mut |_| {}).unwrap();
        let damaged: Vec<_> = report.damaged().collect();
        assert_eq!(damaged.len(), 1, "recompute={recompute}: {report:?}");
        assert_eq!(damaged[0].session, session(1));
        assert_eq!(damaged[0].report.first_break().unwrap().seq, Seq::new(cut as u64), "recompute={recompute}");
        drop(store);
        drop(dir_guard);
    }
}

#[test]
fn long_reads_and_verify_on_several_threads_name_the_damaged_seqs() {
    // 1,200 records: one read of all of them is decoded in parallel parts, and
    // so is verify_all's window of the log that holds them.
    let fixture = SledFixture::new();
    let n = 1_200u64;
    for start in (0..n).step_by(100) {
        fixture.store().append(session(1), Seq::new(start), &entries(start..start + 100)).unwrap();
    }
    fixture.store().append(session(2), Seq::ZERO, &entries(0..3)).unwrap();
    fixture.store().checkpoint().unwrap();
    let intact = fixture.store().read(session(1), Seq::ZERO, n as usize).unwrap();
    let mut fixture = fixture.reopen();
    assert_eq!(fixture.store().read(session(1), Seq::ZERO, n as usize).unwrap(), intact, "parallel = cached");

    // Damage a record in the last part, then one in the first: the read names
    // the earliest, whichever thread met it.
    for seq in [1_100, 300] {
        let location = fixture.store().locate(session(1), Seq::new(seq)).unwrap().unwrap();
        let at = wal::offset_of(location.lsn) + wal::RECORD_HEADER_BYTES as u64 + 3;
        let segment = segment_of(&fixture.store().engine().log_dir(), location.lsn);
        let mut byte = [0u8];
        segment.read_exact_at(&mut byte, at).unwrap();
        segment.write_at(&[byte[0] ^ 0x01], at).unwrap();
        fixture = fixture.reopen();
        match fixture.store().read(session(1), Seq::ZERO, n as usize) {
            Err(Error::Corrupted(corruption)) => assert_eq!(corruption.seq, Seq::new(seq), "{corruption}"),
            other => panic!("expected corruption at {seq}, got {:?}", other.map(|r| r.len())),
        }
    }

    // verify_all reports every break, whichever thread read the record.
    let report = fixture.store().verify_all(&mut |_| {}).unwrap();
    assert_eq!(report.n_records, n + 3);
    let damaged: Vec<_> = report.damaged().collect();
    assert_eq!(damaged.len(), 1, "only session 1 is damaged: {report:?}");
    let seqs: Vec<u64> = damaged[0].report.breaks.iter().map(|b| b.seq.get()).collect();
    assert!(seqs.contains(&300) && seqs.contains(&1_100), "both damaged records are named: {seqs:?}");
    assert_eq!(damaged[0].report.first_break().unwrap().seq, Seq::new(300));
}

/// Flips one byte of the body of `s`'s own record at `seq`, in the log.
fn damage_own_record(store: &logbook_store::MemStore, s: logbook_core::SessionId, seq: u64) {
    let location = store.locate(s, Seq::new(seq)).unwrap().unwrap();
    let segment = segment_of(&store.engine().log_dir(), location.lsn);
    let at = wal::offset_of(location.lsn) + wal::RECORD_HEADER_BYTES as u64 + 3;
    let mut byte = [0u8];
    segment.read_exact_at(&mut byte, at).unwrap();
    segment.write_at(&[byte[0] ^ 0x20], at).unwrap();
    segment.sync_data().unwrap();
}

/// Goal: a quarantined ancestor refuses exactly the fork's reads that reach
/// the seq its corruption names, on every read path: range reads, type
/// scans, the latest of a type, subscriptions and forks of the fork; what
/// lies below it (inherited and intact) and the fork's own records read.
/// Method: a parent of 12 records, a fork at seq 8 with 3 records of its
/// own, the parent's seq 5 damaged, reopen (the tail check quarantines the
/// parent at seq 5), then read the fork every way, below and across seq 5.
#[test]
fn a_quarantined_ancestor_refuses_only_the_reads_that_reach_its_damage() {
    let fixture = MemFixture::new();
    let (parent, child) = (session(310), session(311));
    let parent_records = fixture.store().append(parent, Seq::ZERO, &entries(0..12)).unwrap();
    let own = fixture.store().fork(child, parent, Seq::new(8), &entries(50..53)).unwrap();
    damage_own_record(fixture.store(), parent, 5);
    let fixture = fixture.reopen();
    let store = fixture.store();
    let corrupt_at = |result: Result<_, Error>| match result {
        Err(Error::Corrupted(corruption)) => Some((corruption.session, corruption.seq)),
        Err(_) | Ok(_) => None,
    };
    assert_eq!(corrupt_at(store.read(parent, Seq::ZERO, 1).map(|_| ())), Some((parent, Seq::new(5))));

    // Range reads: below the damage, and the fork's own records.
    let below = store.read(child, Seq::ZERO, 5).unwrap();
    assert_eq!(
        below.iter().map(Record::hash).collect::<Vec<_>>(),
        parent_records[..5].iter().map(Record::hash).collect::<Vec<_>>()
    );
    assert_eq!(store.read(child, Seq::new(9), 10).unwrap(), own);
    assert_eq!(corrupt_at(store.read(child, Seq::ZERO, 100).map(|_| ())), Some((parent, Seq::new(5))));
    assert_eq!(corrupt_at(store.read(child, Seq::new(5), 1).map(|_| ())), Some((parent, Seq::new(5))));

    // Type scans and the latest of a type: what they return is read the same way.
    let type_of = |record: &Record| record.entry().unwrap().event.event_type();
    let first_type = type_of(&parent_records[0]);
    let found = store.scan_types(child, &[first_type], Seq::ZERO, 1).unwrap();
    assert_eq!(found.iter().map(Record::seq).collect::<Vec<_>>(), vec![Seq::ZERO]);
    assert!(
        corrupt_at(store.scan_types(child, &[type_of(&parent_records[5])], Seq::new(5), 100).map(|_| ())).is_some()
    );
    let latest_own = store.last_of_types(child, &[type_of(&own[2])]).unwrap().unwrap();
    assert_eq!(latest_own.seq(), own[2].seq());
    let only_below: Vec<_> = parent_records[..5]
        .iter()
        .map(type_of)
        .filter(|t| parent_records[5..9].iter().chain(&own).all(|r| type_of(r) != *t))
        .collect();
    if let Some(t) = only_below.first() {
        assert!(store.last_of_types(child, &[*t]).unwrap().is_some_and(|r| r.seq() < Seq::new(5)));
    }

    // A subscription delivers up to the damage, then reports it.
    let mut subscription = store.subscribe(child, Seq::ZERO);
    assert_eq!(subscription.try_next_batch(5).unwrap().len(), 5);
    assert!(corrupt_at(subscription.try_next_batch(5).map(|_| ())).is_some());

    // A fork of the fork below the damage reads; one past it is refused.
    let grandchild = session(312);
    store.fork(grandchild, child, Seq::new(3), &[]).unwrap();
    assert_eq!(store.read(grandchild, Seq::ZERO, 100).unwrap().len(), 4);
    assert!(matches!(
        store.fork(session(313), child, Seq::new(6), &[]),
        Err(logbook_store::ForkError::Store(Error::Corrupted(_)))
    ));
}

/// Goal: a type index that misstates a record's type is reported by
/// `verify_all` at that record's seq, whichever way it errs, and a scan that
/// the misstatement would make return a record of another type reports
/// corruption instead (and quarantines the session). Method: per case, the
/// checkpointed type span of a record's type loses that record, the record's
/// location entry gives another type, or another type's span lists it;
/// verify, and scan for the type the index claims.
#[test]
fn a_type_index_that_misstates_a_record_is_reported() {
    let type_of = |record: &Record| record.entry().unwrap().event.event_type().code();
    let span_key = |code: u16| keys::type_key_for_code(session(1), code, 0).to_vec();
    let offsets =
        |span: &[u8]| -> Vec<u16> { span.chunks_exact(2).map(|p| u16::from_le_bytes([p[0], p[1]])).collect() };
    let encode = |offsets: &[u16]| -> Vec<u8> { offsets.iter().flat_map(|o| o.to_le_bytes()).collect() };
    for case in ["unlisted", "location type", "listed under another type"] {
        let (fixture, records) = build();
        let engine = fixture.store().engine();
        let (seq, code) = (4usize, type_of(&records[4]));
        let other = records.iter().map(type_of).find(|c| *c != code).unwrap();
        match case {
            "unlisted" => {
                let span = engine.get(Tree::Log, &span_key(code)).unwrap().unwrap();
                let kept: Vec<u16> = offsets(&span).into_iter().filter(|o| usize::from(*o) != seq).collect();
                engine.apply(Tree::Log, vec![(span_key(code), Some(encode(&kept)))]).unwrap();
            }
            "location type" => {
                let key = keys::locations_key(session(1), Seq::ZERO).to_vec();
                let mut chunk = engine.get(Tree::Log, &key).unwrap().unwrap();
                let at = 1 + seq * LOCATION_BYTES + 12;
                chunk[at..at + 2].copy_from_slice(&other.to_le_bytes());
                engine.apply(Tree::Log, vec![(key, Some(chunk))]).unwrap();
            }
            _ => {
                let span = engine.get(Tree::Log, &span_key(other)).unwrap().unwrap();
                let mut listed = offsets(&span);
                listed.push(seq as u16);
                listed.sort_unstable();
                engine.apply(Tree::Log, vec![(span_key(other), Some(encode(&listed)))]).unwrap();
            }
        }
        let (first, kind) = first_break(&report(&fixture));
        assert_eq!(first, Seq::new(seq as u64), "{case}: {kind:?}");
        if case == "listed under another type" {
            let other_type = logbook_core::EventType::from_code(other).unwrap();
            match fixture.store().scan_types(session(1), &[other_type], Seq::ZERO, 100) {
                Err(Error::Corrupted(corruption)) => assert_eq!(corruption.seq, Seq::new(seq as u64)),
                found => panic!("{case}: a scan for {other_type} returned {found:?}"),
            }
            assert!(matches!(fixture.store().read(session(1), Seq::ZERO, 1), Err(Error::Corrupted(_))), "quarantined");
        }
    }
}

/// Goal: an index location at the very end of the LSN space (a forged or
/// damaged `lsn`) is corruption of its record, not an arithmetic overflow
/// (a panic in a debug build) when the read looks for the records adjacent
/// to it. Method: seq 3's checkpointed location given an LSN a few bytes
/// below `u64::MAX`, caches dropped, a read of all six records.
#[test]
fn an_index_location_at_the_end_of_the_lsn_space_is_corruption() {
    let fixture = MemFixture::new();
    let s = session(410);
    for i in 0..6 {
        fixture.store().append(s, Seq::new(i), &entries(i..i + 1)).unwrap();
    }
    fixture.store().checkpoint().unwrap();
    let engine = fixture.store().engine();
    let key = keys::locations_key(s, Seq::ZERO).to_vec();
    let mut chunk = engine.get(Tree::Log, &key).unwrap().unwrap();
    let at = 1 + 3 * LOCATION_BYTES;
    chunk[at..at + 8].copy_from_slice(&(u64::MAX - 8).to_le_bytes());
    engine.apply(Tree::Log, vec![(key, Some(chunk))]).unwrap();
    fixture.store().clear_caches();
    match fixture.store().read(s, Seq::ZERO, 10) {
        Err(Error::Corrupted(corruption)) => assert_eq!((corruption.session, corruption.seq), (s, Seq::new(3))),
        other => panic!("expected corruption of {s} at seq 3, got {other:?}"),
    }
    assert!(matches!(fixture.store().read(s, Seq::ZERO, 1), Err(Error::Corrupted(_))), "quarantined");
}
