//! Unit tests of the log format: batches written and scanned back, torn
//! tails kept as data, damage told apart from a torn tail, segment rollover.

use std::sync::Arc;

use logbook_core::{ChainHash, Seq, SessionId};

use super::*;
use crate::engine::mem::MemLogDir;

fn dir() -> Arc<dyn LogDir> {
    Arc::new(MemLogDir::default())
}

fn batch_of(n: usize, fill: u8) -> BatchBuf {
    let mut batch = BatchBuf::new();
    for idx in 0..n {
        let body = vec![fill; 10 + idx];
        let session = SessionId::from_parts(1, 1);
        batch.push_record(
            session,
            Seq::new(idx as u64),
            ChainHash::from_bytes([1; 32]),
            ChainHash::from_bytes([2; 32]),
            3,
            BodyCodec::Raw,
            &body,
        );
    }
    batch
}

/// Scans the whole log: the batches' first bytes of payload and the end.
fn scan_all(dir: &Arc<dyn LogDir>) -> Result<(Vec<BatchHeader>, ScanEnd), ScanError> {
    let mut scan = Scan::new(Arc::clone(dir), 0, Some(0)).unwrap();
    let mut headers = Vec::new();
    while let Some(batch) = scan.next_batch()? {
        assert_eq!(wal_entries_count(&batch.payload), batch.header.n_entries as usize);
        headers.push(batch.header);
    }
    Ok((headers, scan.end()?))
}

fn wal_entries_count(payload: &[u8]) -> usize {
    entries(payload).inspect(|e| assert!(e.is_ok(), "{e:?}")).count()
}

fn write_batches(dir: &Arc<dyn LogDir>, n: usize) -> (LogWriter, Vec<BatchHeader>) {
    let mut writer = LogWriter::new(Arc::clone(dir), 0, 0, None);
    let headers = (0..n).map(|idx| writer.write(&mut batch_of(idx + 1, idx as u8)).unwrap()).collect();
    (writer, headers)
}

#[test]
fn batches_read_back_in_order_with_their_entries() {
    let dir = dir();
    let (writer, written) = write_batches(&dir, 5);
    let (read, end) = scan_all(&dir).unwrap();
    assert_eq!(read, written);
    assert_eq!(end.end, writer.end());
    assert_eq!(end.next_batch, 5);
    let segment = dir.open_segment(0, false).unwrap();
    let second = written[1];
    let mut bytes = vec![0u8; (second.end() - second.lsn) as usize];
    segment.read_exact_at(&mut bytes, offset_of(second.lsn)).unwrap();
    let (entry, len) = decode_entry(&bytes[BATCH_HEADER_BYTES..]).unwrap();
    assert_eq!(len, RECORD_HEADER_BYTES + 10);
    match entry {
        Entry::Record { header, body } => {
            assert_eq!((header.seq, header.code, body), (Seq::ZERO, 3, &[1u8; 10][..]));
        }
        other @ (Entry::Resource { .. } | Entry::Blob { .. } | Entry::Fork(_)) => {
            panic!("expected a record, got {other:?}")
        }
    }
}

/// Goal: a batch torn by a crash (any prefix of its bytes written) ends the
/// log just before it, and writing resumes there. Method: write 4 batches,
/// then for every cut point inside the 4th, cut the segment there, scan, and
/// write a new batch at the end found.
#[test]
fn a_torn_last_batch_ends_the_log_and_writing_resumes_over_it() {
    let dir = dir();
    let (_, written) = write_batches(&dir, 4);
    let last = written[3];
    let segment = dir.open_segment(0, false).unwrap();
    let mut image = vec![0u8; segment.len().unwrap() as usize];
    segment.read_exact_at(&mut image, 0).unwrap();
    for cut in (offset_of(last.lsn) as usize..image.len()).step_by(7) {
        let torn_dir = self::dir();
        let torn = torn_dir.open_segment(0, true).unwrap();
        // The torn batch's tail is garbage rather than zeroes, as on a real disk.
        let mut bytes = image.clone();
        for byte in &mut bytes[cut..] {
            *byte = byte.wrapping_mul(31).wrapping_add(7);
        }
        torn.write_at(&bytes, 0).unwrap();
        let (read, end) = scan_all(&torn_dir).unwrap_or_else(|err| panic!("cut at {cut}: {err}"));
        assert_eq!(read, written[..3], "cut at {cut}");
        assert_eq!(end.end, last.lsn);
        let mut writer = LogWriter::new(Arc::clone(&torn_dir), end.end, end.next_batch, end.header);
        let again = writer.write(&mut batch_of(1, 0xee)).unwrap();
        assert_eq!((again.lsn, again.batch), (last.lsn, 3));
        let (read, _) = scan_all(&torn_dir).unwrap();
        assert_eq!(read.len(), 4, "cut at {cut}");
    }
}

/// Goal: damage to a batch followed by intact ones is reported, never taken
/// for the end of the log. Method: flip one byte in the middle batch.
#[test]
fn damage_before_intact_batches_is_reported() {
    let dir = dir();
    let (_, written) = write_batches(&dir, 5);
    let victim = written[2];
    let segment = dir.open_segment(0, false).unwrap();
    for at in [offset_of(victim.lsn), offset_of(victim.lsn) + 20, offset_of(victim.lsn) + 60] {
        let mut byte = [0u8];
        segment.read_exact_at(&mut byte, at).unwrap();
        segment.write_at(&[byte[0] ^ 0x10], at).unwrap();
        match scan_all(&dir) {
            Err(ScanError::Damaged { at: found, later, .. }) => {
                assert_eq!((found, later), (victim.lsn, written[3].lsn));
            }
            other => panic!("expected damage, got {other:?}"),
        }
        segment.write_at(&byte, at).unwrap();
    }
    assert!(scan_all(&dir).is_ok());
}

#[test]
fn an_intact_batch_out_of_place_is_damage() {
    let dir = dir();
    let (_, written) = write_batches(&dir, 3);
    // Batch 1 rewritten with another number: intact, but not what follows batch 0.
    let key = SegmentHeader::decode(&read_header(&dir), 0).unwrap().batch_key();
    let mut stale = batch_of(2, 1);
    stale.seal(written[1].lsn, 7, &key);
    dir.open_segment(0, false).unwrap().write_at(&stale.bytes, offset_of(written[1].lsn)).unwrap();
    assert!(matches!(scan_all(&dir), Err(ScanError::Damaged { .. })));
}

/// `n` batches of one 20 MiB blob each: three fill a 64 MiB segment.
fn write_big_batches(dir: &Arc<dyn LogDir>, n: u8) -> (LogWriter, Vec<BatchHeader>) {
    let mut writer = LogWriter::new(Arc::clone(dir), 0, 0, None);
    let big = |fill: u8| {
        let mut batch = BatchBuf::new();
        batch.push_blob(logbook_core::Digest::from_bytes([fill; 32]), BodyCodec::Raw, &vec![fill; 20 << 20]);
        batch
    };
    let written = (0..n).map(|idx| writer.write(&mut big(idx)).unwrap()).collect();
    (writer, written)
}

fn read_header(dir: &Arc<dyn LogDir>) -> Vec<u8> {
    let mut bytes = vec![0u8; SEGMENT_HEADER_BYTES];
    dir.open_segment(0, false).unwrap().read_exact_at(&mut bytes, 0).unwrap();
    bytes
}

/// Goal: batches continue in a new segment once one is full; a torn new
/// segment (header not durable) is rewritten; a segment beyond the end is
/// reported. Method: batches of 20 MiB, so the fourth starts segment 1.
#[test]
fn segments_roll_over_and_strays_are_reported() {
    let dir = dir();
    let (writer, written) = write_big_batches(&dir, 4);
    assert_eq!(written.iter().map(|h| segment_of(h.lsn)).collect::<Vec<_>>(), [0, 0, 0, 1]);
    assert_eq!(offset_of(written[3].lsn), SEGMENT_HEADER_BYTES as u64);
    let (read, end) = scan_all(&dir).unwrap();
    assert_eq!(read, written);
    assert_eq!(end.end, writer.end());

    // Segment 1's header torn: the log ends at segment 1's start and writing
    // there rewrites it.
    dir.open_segment(1, false).unwrap().write_at(&[0u8; 8], 0).unwrap();
    let (read, end) = scan_all(&dir).unwrap();
    assert_eq!(read, written[..3]);
    let mut writer = LogWriter::new(Arc::clone(&dir), end.end, end.next_batch, end.header);
    let again = writer.write(&mut batch_of(1, 1)).unwrap();
    assert_eq!(again.batch, 3);
    assert_eq!(scan_all(&dir).unwrap().0.len(), 4);

    dir.open_segment(5, true).unwrap().write_at(b"stray", 0).unwrap();
    assert!(matches!(scan_all(&dir), Err(ScanError::BadSegment { segment: 5, .. })));
}

#[test]
fn entries_round_trip_and_garbage_never_panics() {
    let mut batch = BatchBuf::new();
    let session = SessionId::from_parts(5, 6);
    batch.push_record(
        session,
        Seq::new(9),
        ChainHash::from_bytes([3; 32]),
        ChainHash::from_bytes([4; 32]),
        12,
        BodyCodec::Zstd,
        b"zz",
    );
    batch.push_resource(ResourceKind::Agent, b"key", Some(b"value"));
    batch.push_resource(ResourceKind::Session, b"gone", None);
    batch.push_blob(logbook_core::Digest::from_bytes([8; 32]), BodyCodec::Raw, b"blob");
    let fork = ForkEntry {
        child: session,
        parent: SessionId::from_parts(7, 8),
        at_seq: Seq::new(4),
        parent_hash: ChainHash::from_bytes([9; 32]),
    };
    batch.push_fork(&fork);
    let payload = batch.bytes[BATCH_HEADER_BYTES..].to_vec();
    let decoded: Vec<Entry<'_>> = entries(&payload).map(|e| e.unwrap().1).collect();
    assert_eq!(decoded.len(), 5);
    assert!(matches!(decoded[1], Entry::Resource { kind: ResourceKind::Agent, key: b"key", value: Some(b"value") }));
    assert!(matches!(decoded[2], Entry::Resource { value: None, .. }));
    assert_eq!(decoded[4], Entry::Fork(fork));
    for cut in 0..payload.len() {
        let _ = entries(&payload[..cut]).count();
        let mut flipped = payload.clone();
        flipped[cut] ^= 0xff;
        let _ = entries(&flipped).count();
    }
}

/// Goal: a segment prepared ahead (zeroes, made durable) neither ends the log
/// early nor passes for damage, on disk. Method: a few batches in segment 0,
/// segment 1 prepared, scan; then a batch written at segment 1's start is
/// found after the ones in segment 0.
#[test]
fn a_prepared_next_segment_is_not_data() {
    let tmp = tempfile::tempdir().unwrap();
    let dir: Arc<dyn LogDir> = Arc::new(crate::engine::files::FsLogDir::open(&tmp.path().join("log")).unwrap());
    let (writer, written) = write_batches(&dir, 3);
    dir.prepare_segment(1, 1 << 20).unwrap();
    dir.prepare_segment(1, 1 << 20).unwrap();
    assert_eq!(dir.open_segment(1, false).unwrap().len().unwrap(), 1 << 20);
    let (read, end) = scan_all(&dir).unwrap();
    assert_eq!((read, end.end), (written.clone(), writer.end()));
    // What a rollover into the prepared segment writes: header and batch at 0.
    let mut next = LogWriter { number: 1, offset: 0, header: None, key: None, segment: None, ..writer };
    let header = next.write(&mut batch_of(2, 9)).unwrap();
    assert_eq!((header.lsn, header.batch), (lsn(1, SEGMENT_HEADER_BYTES as u64), 3));
    let (read, end) = scan_all(&dir).unwrap();
    assert_eq!(read.len(), 4);
    assert_eq!(end.end, next.end());
    assert_eq!(dir.open_segment(1, false).unwrap().len().unwrap(), 1 << 20, "written in place, not appended");
}

/// Goal: damage to the first batch of a later segment, with intact batches
/// after it, is reported as damage, not taken for the log's end (a rollover
/// would then overwrite the acknowledged batches after it). Method: batches
/// of 20 MiB, so the fourth and fifth are in segment 1; flip a byte in the
/// fourth.
#[test]
fn damage_at_the_start_of_the_next_segment_is_reported() {
    let dir = dir();
    let (_, written) = write_big_batches(&dir, 5);
    assert_eq!(written.iter().map(|h| segment_of(h.lsn)).collect::<Vec<_>>(), [0, 0, 0, 1, 1]);
    let at = offset_of(written[3].lsn) + 100;
    let segment = dir.open_segment(1, false).unwrap();
    let mut byte = [0u8];
    segment.read_exact_at(&mut byte, at).unwrap();
    segment.write_at(&[byte[0] ^ 0x10], at).unwrap();
    match scan_all(&dir) {
        Err(ScanError::Damaged { at, later, .. }) => assert_eq!((at, later), (written[3].lsn, written[4].lsn)),
        other => panic!("expected damage, got {other:?}"),
    }
    // Verification's salvaging scan goes on past it, once.
    let mut scan = Scan::new(Arc::clone(&dir), 0, Some(0)).unwrap();
    let mut salvaged = Vec::new();
    while let Some(batch) = scan.next_salvaged().unwrap() {
        salvaged.push((batch.batch.header.lsn, batch.problem.is_some()));
        assert!(salvaged.len() <= written.len(), "the scan came back over {salvaged:?}");
    }
    let expected: Vec<(u64, bool)> = written.iter().enumerate().map(|(idx, h)| (h.lsn, idx == 3)).collect();
    assert_eq!(salvaged, expected);
    segment.write_at(&byte, at).unwrap();
    assert_eq!(scan_all(&dir).unwrap().0, written);
}

/// Goal: checking a record entry in place (`precheck_entry`, with one reused
/// buffer for decompressed bodies) finds what checking the record read back
/// (`record_from_entry`, then `Prechecked::of`) finds. Method: raw,
/// compressed and redacted bodies, intact and with a wrong stored hash, a
/// large compressed body before small ones so the buffer is reused larger
/// than they need.
#[test]
fn checking_an_entry_in_place_agrees_with_reading_it_back() {
    use logbook_core::event::{ContentBlock, Event, SystemMessage};
    use logbook_core::verify::{Depth, Prechecked};
    use logbook_core::{Entry, EventId, Timestamp, chain};

    let entry = |text: String| {
        let event = Event::SystemMessage(SystemMessage { content: vec![ContentBlock::Text { text }] });
        Entry { id: EventId::from_parts(1, 1), event, at: Timestamp::from_unix_micros(1) }.to_canonical().unwrap()
    };
    let session = SessionId::from_parts(1, 1);
    let bodies = [entry("x".repeat(300_000)), entry("y".repeat(400)), entry("short".to_owned())];
    let mut scratch = Vec::new();
    for depth in [Depth::Links, Depth::Entries] {
        for canonical in &bodies {
            let prev = ChainHash::from_bytes([7; 32]);
            let hash = chain::link(prev, Seq::new(3), chain::digest(canonical));
            let compressed = crate::frame::compressed(canonical);
            let mut stored = vec![(BodyCodec::Raw, canonical.clone())];
            stored.extend(compressed.map(|body| (BodyCodec::Zstd, body)));
            stored.push((BodyCodec::Redacted, chain::digest(canonical).as_bytes().to_vec()));
            for (codec, body) in stored {
                for hash in [hash, ChainHash::from_bytes([9; 32])] {
                    let header = RecordHeader {
                        session,
                        seq: Seq::new(3),
                        prev,
                        hash,
                        code: 0,
                        codec,
                        body_len: body.len() as u32,
                    };
                    let read_back = Prechecked::of(&record_from_entry(&header, &body).unwrap(), depth);
                    assert_eq!(precheck_entry(&header, &body, depth, &mut scratch), Ok(read_back), "{codec:?}");
                }
            }
        }
    }
    assert!(scratch.capacity() >= bodies[0].len(), "the buffer was reused, not replaced");
}

#[test]
fn an_entry_length_no_batch_could_hold_is_refused_before_reading() {
    // Goal: a damaged index cannot size a read's buffer (up to 4 GiB).
    let dir = dir();
    let (_writer, headers) = write_batches(&dir, 1);
    let lsn = headers[0].lsn;
    let err = read_entry(&*dir, Location { lsn, len: u32::MAX }).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    assert!(read_entry(&*dir, Location { lsn, len: 48 }).is_ok());
}

/// Goal: a damaged header on a segment that holds more than one batch is
/// reported, not taken for a segment torn at creation. A rollover writes the
/// header and the segment's first batch in one write and only writes the next
/// batch once that one is durable, so a second batch proves the header was
/// durable too; ending the log before the segment silently drops the
/// acknowledged batches in it, and the next rollover overwrites them. Method:
/// batches of 20 MiB, so the fourth and fifth are in segment 1; zero segment
/// 1's header (as a zeroed disk block would), scan.
#[test]
fn a_damaged_header_on_a_segment_holding_several_batches_is_reported() {
    let dir = dir();
    let (_, written) = write_big_batches(&dir, 5);
    assert_eq!(written.iter().map(|h| segment_of(h.lsn)).collect::<Vec<_>>(), [0, 0, 0, 1, 1]);
    dir.open_segment(1, false).unwrap().write_at(&[0u8; SEGMENT_HEADER_BYTES], 0).unwrap();
    match scan_all(&dir) {
        Err(ScanError::BadSegment { segment: 1, .. } | ScanError::Damaged { .. }) => {}
        Ok((read, end)) => panic!(
            "segment 1's two acknowledged batches were dropped without a word: the log reads {} batches and ends at {}",
            read.len(),
            Lsn(end.end)
        ),
        Err(other) => panic!("expected damage in segment 1, got {other}"),
    }
}

/// Goal: a damaged header is told from a segment torn at creation by the
/// batches after the segment's first, and only by those: a zeroed block that
/// takes the first batch's header along is still reported (the next batch's
/// header and number tell), a segment whose only batch is in the last segment
/// is not (a torn creation looks the same), and bytes inside the first
/// batch's payload that look like a batch header are not taken for one.
/// Method: batches of 20 MiB, so segment 1 holds the fourth (and fifth).
#[test]
fn a_damaged_header_is_told_from_a_torn_creation_by_the_batches_after_the_first() {
    // Segment 1's header zeroed, its first batch's header intact.
    let dir = dir();
    let (_, written) = write_big_batches(&dir, 5);
    dir.open_segment(1, false).unwrap().write_at(&[0u8; SEGMENT_HEADER_BYTES], 0).unwrap();
    match scan_all(&dir) {
        Err(ScanError::BadSegment { segment: 1, reason }) => {
            assert!(reason.contains(&Lsn(written[4].lsn).to_string()), "{reason}");
        }
        other => panic!("expected segment 1 reported, got {other:?}"),
    }
    // A zeroed 4 KiB block over segment 1's header and its first batch's
    // header looks like a segment prepared ahead: the blind spot (searching
    // a prepared segment would read all of it at every open).
    let dir = self::dir();
    let (_, written) = write_big_batches(&dir, 5);
    dir.open_segment(1, false).unwrap().write_at(&[0u8; 4096], 0).unwrap();
    let (read, _) = scan_all(&dir).unwrap();
    assert!(read.len() < written.len(), "the blind spot: segment 1's batches are not read");

    // Segment 0 alone, with several batches: its header damaged is reported
    // too (the scan starts in it); with one batch, the log is empty.
    let dir = self::dir();
    write_batches(&dir, 3);
    dir.open_segment(0, false).unwrap().write_at(&[0u8; SEGMENT_HEADER_BYTES], 0).unwrap();
    assert!(matches!(scan_all(&dir), Err(ScanError::BadSegment { segment: 0, .. })));
    let dir = self::dir();
    write_batches(&dir, 1);
    dir.open_segment(0, false).unwrap().write_at(&[0u8; SEGMENT_HEADER_BYTES], 0).unwrap();
    let (read, end) = scan_all(&dir).unwrap();
    assert_eq!((read.len(), end.end, end.next_batch), (0, lsn(0, SEGMENT_HEADER_BYTES as u64), 0));

    // Segment 1 torn at creation: its header lost, its one batch's payload
    // holding (as any client's bytes can) what looks like the header of the
    // batch after it, standing where it says it is.
    let dir = self::dir();
    let (mut writer, written) = write_big_batches(&dir, 3);
    let first = SEGMENT_HEADER_BYTES as u64;
    let body_at = first + (BATCH_HEADER_BYTES + BLOB_HEADER_BYTES) as u64;
    let forged_at = align(body_at);
    let mut forged = BATCH_MAGIC.to_vec();
    forged.extend_from_slice(&lsn(1, forged_at).to_le_bytes());
    forged.extend_from_slice(&4u64.to_le_bytes());
    forged.extend_from_slice(&8u32.to_le_bytes());
    forged.extend_from_slice(&1u32.to_le_bytes());
    forged.extend_from_slice(&[0xab; CHECKSUM_BYTES + 8]);
    let mut body = vec![0u8; (forged_at - body_at) as usize];
    body.extend_from_slice(&forged);
    body.resize(20 << 20, 7);
    let mut batch = BatchBuf::new();
    batch.push_blob(logbook_core::Digest::from_bytes([3; 32]), BodyCodec::Raw, &body);
    let fourth = writer.write(&mut batch).unwrap();
    assert_eq!(fourth.lsn, lsn(1, first));
    dir.open_segment(1, false).unwrap().write_at(&[0u8; SEGMENT_HEADER_BYTES], 0).unwrap();
    let (read, end) = scan_all(&dir).unwrap();
    assert_eq!((read, end.end), (written.clone(), written[2].end()));
}

/// Salvages the whole log: each batch's LSN and problem.
fn salvage_all(dir: &Arc<dyn LogDir>) -> (Vec<(u64, Option<String>)>, Option<ScanError>) {
    let mut scan = Scan::new(Arc::clone(dir), 0, None).unwrap();
    let mut salvaged = Vec::new();
    loop {
        match scan.next_salvaged() {
            Ok(Some(batch)) => salvaged.push((batch.batch.header.lsn, batch.problem)),
            Ok(None) => break,
            Err(err) => return (salvaged, Some(err)),
        }
        assert!(salvaged.len() <= 16, "the scan came back over {salvaged:?}");
    }
    assert!(matches!(scan.next_salvaged(), Ok(None)), "after the end, the end");
    (salvaged, None)
}

/// Goal: verification's salvaging scan reports a damaged segment header as
/// damage of that segment, reads its batches by their headers alone and goes
/// on into the next segment; a batch header lost in such a segment is
/// reported as a skipped stretch; a damaged last header with several batches
/// is salvaged the same way. Method: batches of 20 MiB (segments 0 and 1),
/// one bit of segment 0's salt flipped, then also batch 1's header zeroed;
/// then only segment 1's header zeroed.
#[test]
fn a_salvaging_scan_reads_on_through_a_segment_whose_header_is_damaged() {
    let dir = dir();
    let (_, written) = write_big_batches(&dir, 5);
    let lsns: Vec<u64> = written.iter().map(|h| h.lsn).collect();
    let segment = dir.open_segment(0, false).unwrap();
    let mut byte = [0u8];
    segment.read_exact_at(&mut byte, 30).unwrap();
    segment.write_at(&[byte[0] ^ 1], 30).unwrap();
    let (salvaged, err) = salvage_all(&dir);
    assert_eq!(err, None);
    assert_eq!(salvaged.iter().map(|(lsn, _)| *lsn).collect::<Vec<_>>(), lsns);
    let problems: Vec<bool> = salvaged.iter().map(|(_, problem)| problem.is_some()).collect();
    assert_eq!(problems, [true, false, false, false, false], "{salvaged:?}");
    let problem = salvaged[0].1.as_deref().unwrap_or_default();
    assert!(problem.contains("segment 0") && problem.contains("without their checksums"), "{problem}");

    segment.write_at(&[0u8; BATCH_HEADER_BYTES], offset_of(lsns[1])).unwrap();
    let (salvaged, err) = salvage_all(&dir);
    assert_eq!(err, None);
    assert_eq!(salvaged.iter().map(|(lsn, _)| *lsn).collect::<Vec<_>>(), [lsns[0], lsns[2], lsns[3], lsns[4]]);
    let problem = salvaged[1].1.as_deref().unwrap_or_default();
    assert!(problem.contains(&format!("{} to {}", Lsn(lsns[1]), Lsn(lsns[2]))), "{problem}");

    let dir = self::dir();
    write_big_batches(&dir, 5);
    dir.open_segment(1, false).unwrap().write_at(&[0u8; SEGMENT_HEADER_BYTES], 0).unwrap();
    let (salvaged, err) = salvage_all(&dir);
    assert_eq!(err, None);
    let problems: Vec<(u64, bool)> = salvaged.iter().map(|(lsn, problem)| (*lsn, problem.is_some())).collect();
    assert_eq!(problems, lsns.iter().enumerate().map(|(idx, lsn)| (*lsn, idx == 3)).collect::<Vec<_>>());
}
