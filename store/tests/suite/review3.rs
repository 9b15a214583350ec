//! Review (store), third pass. Each test states the promise it checks; see
//! the commit that added it.

use logbook_store::engine::Direction;
use logbook_store::{MemStore, ResourceKind, Resources};

/// Goal: "a read holds at most `MAX_READ_BYTES` of them, and always at least
/// one: ... resource scans return a prefix of what was asked"
/// (ARCHITECTURE.md, store invariants; docs/format.md section 8 lists resource
/// scans under bytes per read). The values a scan returns are decoded, so
/// that is what it holds in memory. Method: a read budget of 4 KiB, ten
/// resources of 3,000 bytes each that compress well (stored as a few dozen
/// bytes), one scan: it must stop after the values that fit in 4 KiB.
#[test]
fn a_resource_scan_is_bounded_by_its_decoded_bytes_not_its_stored_ones() {
    let store = MemStore::in_memory().unwrap();
    let kind = ResourceKind::Session;
    let value = vec![b'a'; 3000];
    for n in 0..10u32 {
        store.swap_resource(kind, format!("c{n}").as_bytes(), None, Some(&value)).unwrap().unwrap();
    }
    let budget = 4 * 1024;
    store.set_read_bytes(budget);
    let pairs = store.scan_resources(kind, b"c", None, Direction::Forward, 100).unwrap();
    let held: usize = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
    assert!(
        pairs.len() == 1 || held <= budget,
        "one scan with a {budget}-byte budget returned {} values holding {held} bytes",
        pairs.len()
    );
}

/// Goal: a resource value `swap_resource` accepts reads back ("corruption is
/// a value ... never silently wrong data": a value written through the API
/// is not corruption). `swap_resource` bounds a value by its stored (framed,
/// compressed) size, but reading it decompresses with a limit of
/// `frame::MAX_DECOMPRESSED_BYTES`. Method: a value one byte over that limit
/// that compresses to a few KiB (zeroes), swapped in, then read.
#[test]
fn a_resource_value_the_store_accepts_reads_back() {
    let store = MemStore::in_memory().unwrap();
    let kind = ResourceKind::Session;
    let value = vec![0u8; logbook_store::frame::MAX_DECOMPRESSED_BYTES + 1];
    let accepted = store.swap_resource(kind, b"zeroes", None, Some(&value));
    if !matches!(accepted, Ok(Ok(()))) {
        return; // refused up front: nothing stored that cannot be read
    }
    let read = store.get_resource(kind, b"zeroes");
    assert!(
        matches!(&read, Ok(Some(v)) if v.len() == value.len()),
        "swap_resource accepted a value of {} bytes; get_resource answers {:?}",
        value.len(),
        read.as_ref().map(|v| v.as_ref().map(Vec::len))
    );
}

/// Goal: `verify_all` on a store in use reports damage only where there is
/// some. It reads the log up to the durable end it took when it started, and
/// is written to tolerate checkpoints running meanwhile (it snapshots what was
/// indexed), but it compares each chain it read with the session's durable
/// head as it is when the scan is over: an append acknowledged during the
/// verification makes an intact session read as damaged. Method: two
/// sessions, one more record appended to one of them from the progress
/// callback (called after each window of the log is checked), then the report.
#[test]
fn an_append_during_verify_all_is_not_reported_as_damage() {
    use logbook_core::Seq;
    use logbook_store::{Append, LogStore, MemEngine};

    use super::{entries, session};

    let store = LogStore::with_engine(MemEngine::new()).unwrap();
    let (a, b) = (session(900), session(901));
    store.append(a, Seq::ZERO, &entries(0..2)).unwrap();
    store.append(b, Seq::ZERO, &entries(2..4)).unwrap();
    let writer = store.clone();
    let mut appended = false;
    let report = store
        .verify_all(&mut |_| {
            if !appended {
                appended = true;
                writer.append(a, Seq::new(2), &entries(4..5)).unwrap();
            }
        })
        .unwrap();
    assert!(appended, "the callback ran");
    let damaged: Vec<_> = report.damaged().map(|s| (s.session, s.report.breaks.clone())).collect();
    assert!(report.is_intact(), "nothing is damaged, yet verify_all reports {damaged:?}");
}
