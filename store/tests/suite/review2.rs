//! Review (store), second pass: damage at the edges of batches and segments
//! (a batch length, a segment's last batch, a lost first segment), each
//! reported where it is without losing the intact batches around it. Each
//! test states the promise it checks; see the commit that added it.

use logbook_core::Seq;
use logbook_store::engine::Engine;
use logbook_store::wal::{self, BATCH_HEADER_BYTES, RECORD_HEADER_BYTES};
use logbook_store::{Append, LogStore, MemEngine, OpenError, Read, SledStore, WalOptions};

use super::{entries, session, small_sled_options};

/// Goal: `verify_all` reports damage where it is and "sessions whose records
/// are intact are reported intact" (docs/format.md 6.4): one flipped bit in
/// an old batch header's length field (outside any record: reads never look
/// at it) must not make it skip the intact batch that follows and report that
/// batch's session as holding no records. Method: three batches (sessions
/// `a`, `b`, `a`), the low bit of the first batch's `len` set 8 higher, verify.
#[test]
fn a_damaged_batch_length_does_not_swallow_the_next_batch() {
    let engine = MemEngine::new();
    let store = LogStore::with_engine(engine.clone_handle()).unwrap();
    let (a, b) = (session(800), session(801));
    store.append(a, Seq::ZERO, &entries(0..1)).unwrap();
    store.append(b, Seq::ZERO, &entries(10..11)).unwrap();
    store.append(a, Seq::new(1), &entries(1..2)).unwrap();
    assert!(store.verify_all(&mut |_| {}).unwrap().is_intact(), "intact before the damage");
    let b_records = store.read(b, Seq::ZERO, 10).unwrap();

    // The first batch holds `a`'s seq 0 alone: its header is just before it.
    let first = store.locate(a, Seq::ZERO).unwrap().unwrap();
    let batch_lsn = first.lsn - BATCH_HEADER_BYTES as u64;
    let segment = engine.log_dir().open_segment(wal::segment_of(batch_lsn), false).unwrap();
    let len_at = wal::offset_of(batch_lsn) + 24;
    let mut len = [0u8; 4];
    segment.read_exact_at(&mut len, len_at).unwrap();
    let len = u32::from_le_bytes(len);
    let bit = (3..5).find(|bit| len & (1 << bit) == 0).unwrap();
    let damaged_len = len | (1 << bit);
    segment.write_at(&damaged_len.to_le_bytes(), len_at).unwrap();

    assert_eq!(store.read(b, Seq::ZERO, 10).unwrap(), b_records, "reads never look at batch headers");
    let report = store.verify_all(&mut |_| {}).unwrap();
    assert!(!report.log_errors.is_empty(), "the header's damage is reported");
    let damaged: Vec<_> = report.damaged().map(|s| (s.session, s.report.first_break().cloned())).collect::<Vec<_>>();
    assert!(
        report.damaged().all(|s| s.session != b),
        "{b}, whose one record is intact in an intact batch, is reported broken: {damaged:?}; log errors: {:?}",
        report.log_errors
    );
}

/// Goal: `verify_all` checks the records of a batch failing its checksum one
/// by one and reports damage where it is (docs/format.md 6.4: "a batch
/// failing its checksum has its records checked one by one"), also when that
/// batch is the last of its segment. Method: appends of two records each
/// until the log rolls into segment 1, a byte of the second record of the
/// last batch of segment 0 flipped, verify: the first break must be at that
/// record's seq, not at the intact record before it in the same batch.
#[test]
fn a_damaged_last_batch_of_a_segment_is_checked_record_by_record() {
    let engine = MemEngine::new();
    let wal = WalOptions { segment_bytes: 4096, ..WalOptions::default() };
    let store = LogStore::with_options(engine.clone_handle(), &wal).unwrap();
    let s = session(810);
    let mut n = 0;
    let last_in_segment_0 = loop {
        store.append(s, Seq::new(n), &entries(n..n + 2)).unwrap();
        let location = store.locate(s, Seq::new(n)).unwrap().unwrap();
        if wal::segment_of(location.lsn) >= 1 {
            break n - 2;
        }
        n += 2;
    };
    store.append(s, Seq::new(n + 2), &entries(n + 2..n + 4)).unwrap();
    assert!(store.verify_all(&mut |_| {}).unwrap().is_intact(), "intact before the damage");

    // The second record of the last batch of segment 0.
    let damaged = Seq::new(last_in_segment_0 + 1);
    let location = store.locate(s, damaged).unwrap().unwrap();
    assert_eq!(wal::segment_of(location.lsn), 0);
    let segment = engine.log_dir().open_segment(0, false).unwrap();
    let at = wal::offset_of(location.lsn) + RECORD_HEADER_BYTES as u64 + 3;
    let mut byte = [0u8];
    segment.read_exact_at(&mut byte, at).unwrap();
    segment.write_at(&[byte[0] ^ 0x20], at).unwrap();

    let report = store.verify_all(&mut |_| {}).unwrap();
    let first_break = report.sessions.iter().find(|r| r.session == s).and_then(|r| r.report.first_break().cloned());
    assert_eq!(
        first_break.as_ref().map(|b| b.seq),
        Some(damaged),
        "the damaged record is at seq {damaged}; seq {} before it, in the same batch, is intact. Break: {first_break:?}; log errors: {:?}",
        damaged.get() - 1,
        report.log_errors
    );
}

/// Goal: a log whose first segment is gone while a later one holds batches is
/// damage, refused on open like a zeroed first segment ("a missing or shorter
/// segment where the checkpoint says batches are ... damage, refused";
/// "without a checkpoint the log starts at batch 0": a first batch numbered
/// otherwise is damage), not an empty store whose writer would then
/// overwrite segment 1. Method: a store written until the log rolls into
/// segment 1, closed; its index directory removed (which opening rebuilds
/// from the log) and segment 0's file removed; reopen.
#[test]
fn a_missing_first_segment_is_not_an_empty_log() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let wal_options = WalOptions { segment_bytes: 4096, ..WalOptions::default() };
    let s = session(820);
    {
        let store = SledStore::open_with(&data, &small_sled_options(), &wal_options).unwrap();
        let mut n = 0;
        loop {
            store.append(s, Seq::new(n), &entries(n..n + 1)).unwrap();
            let location = store.locate(s, Seq::new(n)).unwrap().unwrap();
            n += 1;
            if wal::segment_of(location.lsn) >= 1 {
                break;
            }
        }
    }
    std::fs::remove_dir_all(data.join(logbook_store::SLED_DIR)).unwrap();
    std::fs::remove_file(data.join("log").join(format!("{:016x}.wal", 0))).unwrap();
    assert!(data.join("log").join(format!("{:016x}.wal", 1)).exists());

    match SledStore::open_with(&data, &small_sled_options(), &wal_options) {
        Err(err) => assert!(matches!(err, OpenError::DamagedLog(_)), "refused, but not as damage: {err}"),
        Ok(store) => panic!(
            "opened as a store of sessions {:?} (head of {s}: {:?}), though segment 1 holds acknowledged batches",
            store.sessions().unwrap(),
            store.head(s).unwrap()
        ),
    }
}
