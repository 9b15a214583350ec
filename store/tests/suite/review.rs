//! Review (store): failing tests that demonstrate defects found in review.
//! Each test states the promise it checks; see the commit that added it.

use logbook_core::Seq;
use logbook_store::engine::{Engine, Tree};
use logbook_store::wal::{self, RECORD_HEADER_BYTES};
use logbook_store::{Append, Error, Fork, LogStore, MemEngine, Read, SledStore, WalOptions, keys};

use super::{Fixture, MemFixture, entries, session, small_sled_options};

/// Flips one byte of the body of `session`'s own record at `seq`, in the log.
fn damage_record(fixture: &MemFixture, s: logbook_core::SessionId, seq: u64) {
    let location = fixture.store().locate(s, Seq::new(seq)).unwrap().unwrap();
    let log = fixture.store().engine().log_dir();
    let segment = log.open_segment(wal::segment_of(location.lsn), false).unwrap();
    let at = wal::offset_of(location.lsn) + RECORD_HEADER_BYTES as u64 + 3;
    let mut byte = [0u8];
    segment.read_exact_at(&mut byte, at).unwrap();
    segment.write_at(&[byte[0] ^ 0x20], at).unwrap();
    segment.sync_data().unwrap();
}

/// Goal: damage to a parent's record *past* a fork point quarantines the
/// parent only; the fork, whose inherited prefix (the parent's records up to
/// the fork point) is intact, keeps reading ("a damaged session is
/// quarantined and the others keep working", ARCHITECTURE.md). Method: a
/// parent of 12 records, a fork at seq 2, the parent's seq 11 damaged in the
/// log, reopen (the tail check quarantines the parent), read the fork.
#[test]
fn damage_past_a_fork_point_leaves_the_fork_readable() {
    let fixture = MemFixture::new();
    let (parent, child) = (session(300), session(301));
    let parent_records = fixture.store().append(parent, Seq::ZERO, &entries(0..12)).unwrap();
    let own = fixture.store().fork(child, parent, Seq::new(2), &entries(50..53)).unwrap();
    damage_record(&fixture, parent, 11);
    let fixture = fixture.reopen();
    assert!(
        matches!(fixture.store().read(parent, Seq::new(11), 1), Err(Error::Corrupted(_))),
        "the parent's damaged record is refused"
    );
    let read = fixture.store().read(child, Seq::ZERO, 100).unwrap_or_else(|err| {
        panic!("the fork's records 0..=2 (inherited, intact) and 3..6 (its own) must read, got: {err}")
    });
    assert_eq!(read.len(), 6);
    assert_eq!(read[2].hash(), parent_records[2].hash());
    assert_eq!(read[3..], own[..]);
}

/// Goal: a fork the store accepted and acknowledged opens again. A fork of a
/// fork at a seq the grandparent stores has a one-part ancestry however long
/// the chain of forks, and `fork` accepts it (its limit is on the flattened
/// ancestry); reopening must not refuse what was accepted. Method: a chain of
/// 70 forks, each of the previous one at seq 2 (a record of the root), with
/// ids that sort before their parents' (the store takes ids from its caller),
/// reopen, read the last fork.
#[test]
fn a_long_chain_of_forks_at_an_inherited_seq_survives_reopen() {
    let fixture = MemFixture::new();
    let root = session(1000);
    let root_records = fixture.store().append(root, Seq::ZERO, &entries(0..5)).unwrap();
    let mut parent = root;
    for k in 1..=70 {
        let child = session(900 - k);
        fixture.store().fork(child, parent, Seq::new(2), &[]).unwrap_or_else(|err| panic!("fork {k}: {err}"));
        parent = child;
    }
    let last = parent;
    assert_eq!(fixture.store().read(last, Seq::ZERO, 10).unwrap().len(), 3, "before reopening");
    let fixture = fixture.reopen();
    let read = fixture
        .store()
        .read(last, Seq::ZERO, 10)
        .unwrap_or_else(|err| panic!("the acknowledged fork is refused after reopening: {err}"));
    assert_eq!(read.len(), 3);
    assert_eq!(read[2].hash(), root_records[2].hash());
}

/// Goal: a damaged index entry is reported as corruption naming the session
/// and seq (ARCHITECTURE.md: "corruption is a value (`Corruption` naming the
/// session and seq)"), like every other damaged location, not as a failure of
/// the storage engine that a caller would take for transient and retry.
/// Method: the location of seq 3 in the checkpointed index given a length no
/// batch can hold (the bytes as a flipped high bit of the length would leave
/// them), caches dropped, read.
#[test]
fn an_index_location_longer_than_any_batch_is_corruption() {
    let fixture = MemFixture::new();
    let s = session(400);
    for i in 0..6 {
        fixture.store().append(s, Seq::new(i), &entries(i..i + 1)).unwrap();
    }
    fixture.store().checkpoint().unwrap();
    let engine = fixture.store().engine();
    let key = keys::locations_key(s, Seq::ZERO).to_vec();
    let mut chunk = engine.get(Tree::Log, &key).unwrap().unwrap();
    // `first[1]` then `lsn[8] len[4] type[2]` per seq: the high byte of seq 3's length.
    let at = 1 + 3 * 14 + 8 + 3;
    chunk[at] ^= 0x80;
    engine.apply(Tree::Log, vec![(key, Some(chunk))]).unwrap();
    fixture.store().clear_caches();
    match fixture.store().read(s, Seq::ZERO, 10) {
        Err(Error::Corrupted(corruption)) => assert_eq!((corruption.session, corruption.seq), (s, Seq::new(3))),
        other => panic!("expected corruption of {s} at seq 3, got {other:?}"),
    }
}

/// Goal: a record whose bytes are gone (its segment cut short) is named at
/// its own seq, not at the first record of the read it was part of (records
/// before it are intact; "corruption ... naming the session and seq").
/// Method: 12 records in one append (adjacent in the log), more appends so
/// that the log rolls into a second small segment and a clean close
/// checkpoints there, then the first segment cut in the middle of seq 9;
/// reopen (the tail check reads seqs 4..12 in one run) and read.
#[test]
fn a_record_cut_off_the_end_of_its_segment_is_named_at_its_seq() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let wal = WalOptions { segment_bytes: 64 << 10, ..WalOptions::default() };
    let s = session(500);
    let location = {
        let store = SledStore::open_with(&data, &small_sled_options(), &wal).unwrap();
        store.append(s, Seq::ZERO, &entries(0..12)).unwrap();
        // Another session's appends until the log is in its second segment.
        let other = session(501);
        let mut n = 0;
        loop {
            store.append(other, Seq::new(n), &entries(n..n + 4)).unwrap();
            n += 4;
            let last = store.locate(other, Seq::new(n - 1)).unwrap().unwrap();
            if wal::segment_of(last.lsn) > 0 {
                break;
            }
        }
        store.locate(s, Seq::new(9)).unwrap().unwrap()
    };
    assert_eq!(wal::segment_of(location.lsn), 0);
    let segment = data.join("log").join(format!("{:016x}.wal", 0));
    let file = std::fs::OpenOptions::new().write(true).open(&segment).unwrap();
    file.set_len(wal::offset_of(location.lsn) + u64::from(location.len) / 2).unwrap();
    drop(file);

    let store = SledStore::open_with(&data, &small_sled_options(), &wal).unwrap();
    match store.read(s, Seq::ZERO, 100) {
        Err(Error::Corrupted(corruption)) => {
            assert_eq!((corruption.session, corruption.seq), (s, Seq::new(9)), "{corruption}");
        }
        other => panic!("expected corruption of {s} at seq 9, got {other:?}"),
    }
}

/// Goal: a damaged type index never makes a read return silently wrong data:
/// `scan_types` returns only records of the types asked for (or reports
/// corruption), and `verify_all`, which promises to report a consistent
/// rewrite of the index (docs/format.md 6.4), reports it. Method: six
/// records of different types, checkpointed; the checkpointed type span of
/// seq 0's type given one more offset, that of a record of another type
/// (what a rewrite of the index, or a bug in a checkpoint, leaves); scan
/// for seq 0's type and verify.
#[test]
fn a_type_index_entry_naming_a_record_of_another_type_is_caught() {
    let fixture = MemFixture::new();
    let s = session(600);
    let records = fixture.store().append(s, Seq::ZERO, &entries(0..6)).unwrap();
    fixture.store().checkpoint().unwrap();
    let type_of = |record: &logbook_core::Record| record.entry().unwrap().event.event_type();
    let wanted = type_of(&records[0]);
    let other = records.iter().position(|r| type_of(r) != wanted).unwrap();
    let engine = fixture.store().engine();
    let key = keys::type_key_for_code(s, wanted.code(), 0).to_vec();
    let mut span = engine.get(Tree::Log, &key).unwrap().unwrap();
    let mut offsets: Vec<u16> = span.chunks_exact(2).map(|pair| u16::from_le_bytes([pair[0], pair[1]])).collect();
    offsets.push(other as u16);
    offsets.sort_unstable();
    span = offsets.iter().flat_map(|offset| offset.to_le_bytes()).collect();
    engine.apply(Tree::Log, vec![(key, Some(span))]).unwrap();

    let report = fixture.store().verify_all(&mut |_| {}).unwrap();
    let scanned = fixture.store().scan_types(s, &[wanted], Seq::ZERO, 100);
    let wrong: Vec<u64> = match &scanned {
        Ok(found) => found.iter().filter(|r| type_of(r) != wanted).map(|r| r.seq().get()).collect(),
        Err(Error::Corrupted(_)) => Vec::new(),
        Err(err) => panic!("scan: {err}"),
    };
    assert!(
        wrong.is_empty() && !report.is_intact(),
        "a scan for {wanted:?} returned seqs {wrong:?} of another type, and verify_all reports the store intact: {}",
        report.is_intact()
    );
}

/// Goal: `verify_all` reports damage where it is ("reports every break ...
/// so independent damage is reported where it is"): one flipped bit in an
/// old segment's header (outside any record: reads never look at it) must
/// not make it report every later session broken (the scan stops at the
/// header, so nothing after it is checked). Method: one session written
/// until the log rolls into segment 1, another written there, a byte of
/// segment 0's salt flipped, verify.
#[test]
fn a_damaged_old_segment_header_does_not_stop_verification() {
    let engine = MemEngine::new();
    let wal = WalOptions { segment_bytes: 4096, ..WalOptions::default() };
    let store = LogStore::with_options(engine.clone_handle(), &wal).unwrap();
    let (early, late) = (session(700), session(701));
    store.append(early, Seq::ZERO, &entries(0..2)).unwrap();
    // `early` alone until the log has rolled into segment 1, then `late` there.
    let mut n = 2;
    loop {
        store.append(early, Seq::new(n), &entries(n..n + 1)).unwrap();
        n += 1;
        let last = store.locate(early, Seq::new(n - 1)).unwrap().unwrap();
        if wal::segment_of(last.lsn) >= 1 {
            break;
        }
    }
    store.append(late, Seq::ZERO, &entries(0..3)).unwrap();
    let late_records = store.read(late, Seq::ZERO, 100).unwrap();
    assert!(late_records.iter().all(|r| {
        let l = store.locate(late, r.seq()).unwrap().unwrap();
        wal::segment_of(l.lsn) >= 1
    }));
    assert!(store.verify_all(&mut |_| {}).unwrap().is_intact(), "intact before the damage");
    let segment = engine.log_dir().open_segment(0, false).unwrap();
    let mut byte = [0u8];
    segment.read_exact_at(&mut byte, 30).unwrap();
    segment.write_at(&[byte[0] ^ 1], 30).unwrap();

    assert_eq!(store.read(late, Seq::ZERO, 100).unwrap(), late_records, "reads never look at the header");
    let report = store.verify_all(&mut |_| {}).unwrap();
    assert!(!report.log_errors.is_empty(), "the header's damage is reported");
    let damaged: Vec<_> = report.damaged().map(|s| (s.session, s.report.first_break().map(|b| b.seq))).collect();
    assert!(
        report.damaged().all(|s| s.session != late),
        "{late}, whose records are all intact in later segments, is reported broken: {damaged:?}; log errors: {:?}",
        report.log_errors
    );
}
