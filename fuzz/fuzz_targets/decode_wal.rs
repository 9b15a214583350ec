//! Fuzz target: the write-ahead log's readers, fed arbitrary and damaged logs.
//!
//! The first input byte picks the shape. Odd: the rest is a segment file as
//! found on disk, arbitrary bytes. Even: a valid segment is built from the
//! rest (batches of records and resource entries whose bodies are slices of
//! the input), then damaged at positions and with values the input chooses.
//! Either way the segment is scanned as recovery scans it (`Scan::next_batch`)
//! and as verification does (`Scan::next_salvaged`), and every entry found is
//! decoded. Nothing may panic, both scans must end (they always move forward),
//! and an undamaged valid log must scan back to exactly the batches written.

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use logbook_core::{ChainHash, Seq, SessionId};
use logbook_store::ResourceKind;
use logbook_store::engine::LogDir;
use logbook_store::engine::mem::MemLogDir;
use logbook_store::wal::{self, BatchBuf, BodyCodec, LogWriter, Scan};

/// Most steps a scan of one input may take: far above what any input of the
/// fuzzer's size holds, so hitting it means a scan that does not move forward.
const MAX_STEPS: usize = 100_000;

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else { return };
    let dir: Arc<dyn LogDir> = Arc::new(MemLogDir::default());
    if mode % 2 == 1 {
        if dir.open_segment(0, true).and_then(|s| s.write_at(rest, 0)).is_err() {
            return;
        }
        scan_everything(&dir, None);
        for item in wal::entries(rest) {
            let Ok((_, entry)) = item else { break };
            decode(&entry);
        }
        let _ = wal::SegmentHeader::decode(rest, 0);
        let _ = wal::decode_record(rest, SessionId::from_parts(1, 1), Seq::ZERO);
        return;
    }
    let (written, damage) = build(&dir, rest);
    let damaged = !damage.is_empty();
    if let Ok(segment) = dir.open_segment(0, false) {
        for (at, value) in damage {
            let len = segment.len().unwrap_or(0);
            if len > 0 {
                let _ = segment.write_at(&[value], u64::from(at) % len);
            }
        }
    }
    scan_everything(&dir, (!damaged).then_some(written));
});

/// Writes batches made from `input` into segment 0; returns how many were
/// written and the damage the input's tail asks for.
fn build(dir: &Arc<dyn LogDir>, input: &[u8]) -> (usize, Vec<(u16, u8)>) {
    let (body, tail) = input.split_at(input.len() * 3 / 4);
    let damage: Vec<(u16, u8)> =
        tail.chunks_exact(3).take(4).map(|c| (u16::from_le_bytes([c[0], c[1]]), c[2])).collect();
    let mut writer = LogWriter::new(Arc::clone(dir), 0, 0, None);
    let session = SessionId::from_parts(7, 7);
    let mut written = 0;
    for (idx, chunk) in body.chunks(64).enumerate() {
        let mut batch = BatchBuf::new();
        let hash = ChainHash::from_bytes([idx as u8; 32]);
        batch.push_record(session, Seq::new(idx as u64), hash, hash, idx as u16, BodyCodec::Raw, chunk);
        if idx % 3 == 0 {
            batch.push_resource(ResourceKind::Agent, &chunk[..chunk.len().min(8)], Some(chunk));
        }
        if writer.write(&mut batch).is_err() {
            break;
        }
        written += 1;
    }
    (written, damage)
}

/// Scans `dir` both ways; with `expected`, the strict scan must find exactly
/// that many batches and the salvaging one no problem.
fn scan_everything(dir: &Arc<dyn LogDir>, expected: Option<usize>) {
    if let Ok(mut scan) = Scan::new(Arc::clone(dir), 0, None) {
        let mut n = 0;
        while let Ok(Some(batch)) = scan.next_batch() {
            n += 1;
            assert!(n < MAX_STEPS, "the scan does not move forward");
            for item in wal::entries(&batch.payload) {
                let Ok((_, entry)) = item else { break };
                decode(&entry);
            }
        }
        let _ = scan.end();
        if let Some(expected) = expected {
            assert_eq!(n, expected, "an intact log scans back to what was written");
        }
    }
    if let Ok(mut scan) = Scan::new(Arc::clone(dir), 0, None) {
        let mut n = 0;
        while let Ok(Some(salvaged)) = scan.next_salvaged() {
            n += 1;
            assert!(n < MAX_STEPS, "the salvaging scan does not move forward");
            if expected.is_some() {
                assert_eq!(salvaged.problem, None, "an intact log has no problem");
            }
        }
    }
}

fn decode(entry: &wal::Entry<'_>) {
    match entry {
        wal::Entry::Record { header, body } => {
            // A few bytes of zstd can claim megabytes; those are only refused.
            let _ = wal::record_from_entry(header, body).map(|r| r.is_self_consistent());
        }
        wal::Entry::Blob { digest, codec, body } => {
            let _ = wal::blob_bytes(*digest, *codec, body);
        }
        wal::Entry::Resource { .. } | wal::Entry::Fork(_) => {}
    }
}
