//! The conformance suite: every behaviour of the `Store` traits, run against
//! both engines by the `conformance!` macro at the bottom.

use std::sync::Arc;
use std::time::Duration;

use logbook_core::verify::{Anchor, verify_chain};
use logbook_core::{EventType, Seq, chain};
use logbook_store::engine::Direction;
use logbook_store::{Append, AppendError, Blobs, Fork, Head, Read, ResourceKind, Resources, Subscribe};
use pretty_assertions::assert_eq;

use super::{Fixture, entries, entry, session};

pub(crate) fn append_then_read_back<F: Fixture>(fixture: F) {
    let store = fixture.store();
    let s = session(1);
    assert_eq!(store.head(s).unwrap(), Head { next: Seq::ZERO, hash: chain::GENESIS });
    let first = store.append(s, Seq::ZERO, &entries(0..3)).unwrap();
    let second = store.append(s, Seq::new(3), &entries(3..5)).unwrap();
    assert_eq!(first.len(), 3);
    assert_eq!(second[0].prev(), first[2].hash());
    let all = store.read(s, Seq::ZERO, 100).unwrap();
    assert_eq!(all, [first, second].concat());
    for (idx, record) in all.iter().enumerate() {
        assert_eq!(record.seq(), Seq::new(idx as u64));
        assert_eq!(record.entry().unwrap(), entry(idx as u64));
    }
    assert!(verify_chain(Anchor::GENESIS, all.iter().map(Ok)).is_intact());
    assert_eq!(store.head(s).unwrap(), Head { next: Seq::new(5), hash: all[4].hash() });
    assert_eq!(store.read(s, Seq::new(3), 1).unwrap(), all[3..4].to_vec());
    assert_eq!(store.read(s, Seq::new(9), 10).unwrap(), vec![]);
    assert_eq!(store.read_before(s, Seq::new(5), 2).unwrap(), all[3..5].to_vec());
    assert_eq!(store.read_before(s, Seq::new(100), 100).unwrap(), all);
    assert_eq!(store.sessions().unwrap(), vec![s]);
}

pub(crate) fn conflicting_append_changes_nothing<F: Fixture>(fixture: F) {
    let store = fixture.store();
    let s = session(2);
    store.append(s, Seq::ZERO, &entries(0..2)).unwrap();
    for wrong in [Seq::ZERO, Seq::new(1), Seq::new(3)] {
        match store.append(s, wrong, &entries(2..3)) {
            Err(AppendError::Conflict { expected, actual, .. }) => {
                assert_eq!((expected, actual), (wrong, Seq::new(2)));
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
    }
    assert_eq!(store.read(s, Seq::ZERO, 10).unwrap().len(), 2);
}

pub(crate) fn limits_are_enforced<F: Fixture>(fixture: F) {
    let store = fixture.store();
    let s = session(3);
    assert!(matches!(store.append(s, Seq::ZERO, &[]), Err(AppendError::BadCount { n_events: 0, .. })));
    let too_many = vec![entry(0); logbook_core::limits::MAX_EVENTS_PER_APPEND + 1];
    assert!(matches!(store.append(s, Seq::ZERO, &too_many), Err(AppendError::BadCount { .. })));
    assert_eq!(store.head(s).unwrap().next, Seq::ZERO);
}

/// Goal: optimistic appends from concurrent writers on one session never lose,
/// duplicate or interleave an append. Method: 8 threads each append 25 times,
/// retrying on conflict from the head they re-read; then the log must hold
/// exactly 200 records, every thread's entries in its own order, chain intact.
pub(crate) fn concurrent_writers_on_one_session<F>(fixture: F)
where
    F: Fixture + Send + Sync + 'static,
{
    let store = Arc::new(fixture);
    let s = session(4);
    let n_threads = 8u64;
    let n_appends = 25u64;
    let mut handles = Vec::new();
    for thread in 0..n_threads {
        let fixture = Arc::clone(&store);
        handles.push(std::thread::spawn(move || {
            let store = fixture.store();
            let mut n_conflicts = 0;
            for i in 0..n_appends {
                let entry = entry(thread * 1000 + i);
                loop {
                    let head = store.head(s).unwrap();
                    match store.append(s, head.next, std::slice::from_ref(&entry)) {
                        Ok(_) => break,
                        Err(AppendError::Conflict { .. }) => n_conflicts += 1,
                        Err(other) => panic!("append failed: {other}"),
                    }
                }
            }
            n_conflicts
        }));
    }
    for handle in handles {
        handle.join().unwrap();
    }
    let store = store.store();
    let records = store.read(s, Seq::ZERO, 10_000).unwrap();
    assert_eq!(records.len() as u64, n_threads * n_appends);
    assert!(verify_chain(Anchor::GENESIS, records.iter().map(Ok)).is_intact());
    let mut per_thread = vec![Vec::new(); n_threads as usize];
    for record in &records {
        let id = record.entry().unwrap().id;
        let n = id.unix_ms() - 1_764_000_000_000;
        per_thread[(n / 1000) as usize].push(n % 1000);
    }
    for seen in per_thread {
        assert_eq!(seen, (0..n_appends).collect::<Vec<_>>());
    }
}

/// Goal: writers on different sessions share barriers (group commit) and each
/// session's log is exactly what its writer appended.
pub(crate) fn concurrent_writers_on_many_sessions<F>(fixture: F)
where
    F: Fixture + Send + Sync + 'static,
{
    let fixture = Arc::new(fixture);
    let mut handles = Vec::new();
    for thread in 0..16u64 {
        let fixture = Arc::clone(&fixture);
        handles.push(std::thread::spawn(move || {
            let store = fixture.store();
            let s = session(100 + thread);
            for i in 0..20u64 {
                store.append(s, Seq::new(i), &[entry(i)]).unwrap();
            }
        }));
    }
    for handle in handles {
        handle.join().unwrap();
    }
    let store = fixture.store();
    assert_eq!(store.sessions().unwrap().len(), 16);
    for thread in 0..16u64 {
        let records = store.read(session(100 + thread), Seq::ZERO, 100).unwrap();
        assert_eq!(records.iter().map(|r| r.entry().unwrap()).collect::<Vec<_>>(), entries(0..20));
    }
}

pub(crate) fn scan_by_type<F: Fixture>(fixture: F) {
    let store = fixture.store();
    let s = session(5);
    let all = entries(0..60);
    store.append(s, Seq::ZERO, &all).unwrap();
    let wanted = [EventType::UserMessage, EventType::SessionStatusIdle];
    let found = store.scan_types(s, &wanted, Seq::ZERO, 1000).unwrap();
    let expected: Vec<u64> = all
        .iter()
        .enumerate()
        .filter(|(_, e)| wanted.contains(&e.event.event_type()))
        .map(|(idx, _)| idx as u64)
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(found.iter().map(|r| r.seq().get()).collect::<Vec<_>>(), expected);
    let last = store.last_of_types(s, &wanted).unwrap().unwrap();
    assert_eq!(last.seq().get(), *expected.last().unwrap());
    assert!(store.last_of_types(session(999), &wanted).unwrap().is_none());
    let from_later = store.scan_types(s, &wanted, Seq::new(expected[1]), 1).unwrap();
    assert_eq!(from_later.iter().map(|r| r.seq().get()).collect::<Vec<_>>(), vec![expected[1]]);
}

/// Goal: the latest record of a type is never older than what is already
/// durable, while appends land concurrently (the per-session type memo must
/// know a record by the time the durable head covers it). Method: one thread
/// appends deterministic entries one at a time; another reads the durable head
/// and then the latest of one type, which must be at least the latest of that
/// type below the head it read.
pub(crate) fn latest_of_a_type_keeps_up_with_the_durable_head<F>(fixture: F)
where
    F: Fixture + Send + Sync + 'static,
{
    const N_APPENDS: u64 = 2_000;
    let fixture = Arc::new(fixture);
    let s = session(12);
    let samples: Vec<EventType> = (0..N_APPENDS).map(|i| entry(i).event.event_type()).collect();
    let writer = {
        let fixture = Arc::clone(&fixture);
        std::thread::spawn(move || {
            let store = fixture.store();
            for i in 0..N_APPENDS {
                store.append(s, Seq::new(i), &[entry(i)]).unwrap();
            }
        })
    };
    let store = fixture.store();
    let mut n_checks = 0u64;
    let mut turn = 0usize;
    loop {
        let durable = store.head(s).unwrap().next.get();
        let wanted = samples[turn % samples.len()];
        turn += 1;
        let expected = samples[..durable as usize].iter().rposition(|t| *t == wanted);
        let got = store.last_of_types(s, &[wanted]).unwrap().map(|r| r.seq().get());
        if let Some(expected) = expected {
            let got = got.unwrap_or_else(|| panic!("no {wanted:?} below {durable}, expected #{expected}"));
            assert!(got >= expected as u64, "latest {wanted:?} is #{got} below {durable}, but #{expected} is durable");
            assert_eq!(samples[got as usize], wanted);
        }
        n_checks += 1;
        if durable == N_APPENDS {
            break;
        }
    }
    writer.join().unwrap();
    assert!(n_checks > 1);
}

pub(crate) fn subscription_sees_later_appends_in_order<F: Fixture>(fixture: F) {
    let store = fixture.store();
    let s = session(6);
    store.append(s, Seq::ZERO, &entries(0..2)).unwrap();
    let mut sub = store.subscribe(s, Seq::new(1));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let deadline = Duration::from_secs(10);
    let first =
        runtime.block_on(async { tokio::time::timeout(deadline, sub.next_batch(10)).await }).unwrap().unwrap().unwrap();
    assert_eq!(first.iter().map(|r| r.seq().get()).collect::<Vec<_>>(), vec![1]);
    assert!(sub.try_next_batch(10).unwrap().is_empty());
    std::thread::scope(|scope| {
        scope.spawn(|| {
            store.append(s, Seq::new(2), &entries(2..5)).unwrap();
            store.append(s, Seq::new(5), &entries(5..6)).unwrap();
        });
        let mut seen = Vec::new();
        while seen.len() < 4 {
            let batch = runtime
                .block_on(async { tokio::time::timeout(deadline, sub.next_batch(2)).await })
                .unwrap()
                .unwrap()
                .unwrap();
            assert!(batch.len() <= 2);
            seen.extend(batch.iter().map(|r| r.seq().get()));
        }
        assert_eq!(seen, vec![2, 3, 4, 5]);
    });
}

pub(crate) fn subscription_to_an_unknown_session_waits<F: Fixture>(fixture: F) {
    let store = fixture.store();
    let s = session(7);
    let mut sub = store.subscribe(s, Seq::ZERO);
    assert!(sub.try_next_batch(10).unwrap().is_empty());
    store.append(s, Seq::ZERO, &entries(0..1)).unwrap();
    assert_eq!(sub.try_next_batch(10).unwrap().len(), 1);
}

pub(crate) fn blobs_are_stored_once_and_checked<F: Fixture>(fixture: F) {
    let store = fixture.store();
    let big = vec![7u8; 300 * 1024];
    let a = store.put_blob(&big).unwrap();
    let b = store.put_blob(&big).unwrap();
    assert_eq!(a, b);
    assert_eq!(a, chain::digest(&big));
    assert_eq!(store.get_blob(a).unwrap(), Some(big));
    assert!(store.has_blob(a).unwrap());
    let missing = chain::digest(b"nope");
    assert_eq!(store.get_blob(missing).unwrap(), None);
    assert!(!store.has_blob(missing).unwrap());
}

pub(crate) fn resources_compare_and_swap<F: Fixture>(fixture: F) {
    let store = fixture.store();
    let kind = ResourceKind::Agent;
    assert_eq!(store.get_resource(kind, b"a1").unwrap(), None);
    assert_eq!(store.swap_resource(kind, b"a1", None, Some(b"v1")).unwrap(), Ok(()));
    assert_eq!(store.swap_resource(kind, b"a1", None, Some(b"v2")).unwrap(), Err(Some(b"v1".to_vec())));
    let long = vec![b'x'; 4096];
    assert_eq!(store.swap_resource(kind, b"a1", Some(b"v1"), Some(&long)).unwrap(), Ok(()));
    assert_eq!(store.get_resource(kind, b"a1").unwrap(), Some(long.clone()));
    store.swap_resource(kind, b"a0", None, Some(b"zero")).unwrap().unwrap();
    store.swap_resource(ResourceKind::Environment, b"e", None, Some(b"env")).unwrap().unwrap();
    let listed = store.scan_resources(kind, b"", None, Direction::Forward, 10).unwrap();
    assert_eq!(listed, vec![(b"a0".to_vec(), b"zero".to_vec()), (b"a1".to_vec(), long.clone())]);
    assert_eq!(store.scan_resources(kind, b"", Some(b"a0"), Direction::Forward, 10).unwrap().len(), 1);
    let backward = store.scan_resources(kind, b"a", None, Direction::Backward, 10).unwrap();
    assert_eq!(backward.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), vec![b"a1".to_vec(), b"a0".to_vec()]);
    assert_eq!(store.scan_resources(kind, b"a", Some(b"a1"), Direction::Backward, 10).unwrap().len(), 1);
    assert!(store.scan_resources(kind, b"b", None, Direction::Forward, 10).unwrap().is_empty());
    // A cursor outside the prefix never widens the scan beyond it.
    for cursor in [&b"\x00"[..], b"zzzz", b"\xff\xff"] {
        for direction in [Direction::Forward, Direction::Backward] {
            let got = store.scan_resources(kind, b"a", Some(cursor), direction, 10).unwrap();
            assert!(got.iter().all(|(k, _)| k.starts_with(b"a")), "{cursor:?} {direction:?}: {got:?}");
        }
    }
    store.swap_resource(kind, b"b0", None, Some(b"other")).unwrap().unwrap();
    assert_eq!(store.scan_resources(kind, b"a", Some(b"a1"), Direction::Forward, 10).unwrap(), vec![]);
    assert_eq!(store.scan_resources(kind, b"b", Some(b"a"), Direction::Backward, 10).unwrap(), vec![]);
    assert_eq!(store.swap_resource(kind, b"a1", Some(&long), None).unwrap(), Ok(()));
    assert_eq!(store.get_resource(kind, b"a1").unwrap(), None);
}

pub(crate) fn everything_survives_reopen<F: Fixture>(fixture: F)
where
    F::Store: VerifyAll,
{
    let s = session(8);
    let records = fixture.store().append(s, Seq::ZERO, &entries(0..10)).unwrap();
    let blob = fixture.store().put_blob(b"blob bytes").unwrap();
    fixture.store().swap_resource(ResourceKind::Session, b"k", None, Some(b"v")).unwrap().unwrap();
    let fixture = fixture.reopen();
    let store = fixture.store();
    assert_eq!(store.read(s, Seq::ZERO, 100).unwrap(), records);
    assert_eq!(store.head(s).unwrap().hash, records[9].hash());
    assert_eq!(store.get_blob(blob).unwrap(), Some(b"blob bytes".to_vec()));
    assert_eq!(store.get_resource(ResourceKind::Session, b"k").unwrap(), Some(b"v".to_vec()));
    let more = store.append(s, Seq::new(10), &entries(10..12)).unwrap();
    assert_eq!(more[0].prev(), records[9].hash());
    assert!(fixture.store().verify_store_is_intact());
}

/// `n` bytes that compress poorly, from `seed` (xorshift).
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            b'a' + (state % 26) as u8
        })
        .collect()
}

/// An entry of about `kib` KiB of text that compresses poorly (so its bytes
/// in the log are not much smaller than its bytes in memory).
fn large_entry(i: u64, kib: usize) -> logbook_core::Entry {
    use logbook_core::event::{AgentToolResult, ContentBlock, Event};
    let mut base = entry(i);
    let text = String::from_utf8(noise(i, kib * 1024)).unwrap();
    base.event = Event::AgentToolResult(AgentToolResult {
        tool_use_id: logbook_core::EventId::from_parts(9, u128::from(i)),
        content: Some(vec![ContentBlock::text(text)]),
        is_error: Some(false),
    });
    base
}

/// A log of large and small records: 24 of 20-80 KiB, each followed by two
/// small ones (types of the sample events, so type scans find some).
fn mixed_entries() -> Vec<logbook_core::Entry> {
    let mut out = Vec::new();
    for i in 0..24u64 {
        out.push(large_entry(i * 3, 20 + (i as usize * 37) % 61));
        out.push(entry(i * 3 + 1));
        out.push(entry(i * 3 + 2));
    }
    out
}

/// The byte budget the read tests set: a few of the large records.
const SMALL_READ_BYTES: usize = 200 * 1024;

/// Checks that `read` is what a budgeted read from `from` returns of `all`:
/// at least one record, in order, and as many as fit, the next not fitting.
fn check_cut_forward(all: &[logbook_core::Record], from: usize, read: &[logbook_core::Record], asked: usize) {
    assert!(!read.is_empty(), "a read returns at least one record");
    assert_eq!(read, &all[from..from + read.len()], "records in order from {from}");
    let bytes: usize = read.iter().map(logbook_store::read_bytes_of).sum();
    if read.len() > 1 {
        assert!(bytes <= SMALL_READ_BYTES, "{bytes} bytes in a read of {} records", read.len());
    }
    if read.len() < asked
        && let Some(next) = all.get(from + read.len())
    {
        assert!(bytes + logbook_store::read_bytes_of(next) > SMALL_READ_BYTES, "the next record would have fitted");
    }
}

/// Goal: with large records a read is cut by bytes (never by more than the
/// budget, always at least one record, the next record not fitting), and a
/// caller that goes on from where each read stopped gets the whole log, in
/// order: forward, backward, by type, through a subscription, for a fork's
/// inherited prefix, and from the tail cache as from the log (after a
/// reopen). Method: a small budget over records of 20-80 KiB.
pub(crate) fn reads_are_cut_by_bytes_and_callers_go_on<F: Fixture>(fixture: F)
where
    F::Store: VerifyAll,
{
    let s = session(20);
    let all = fixture.store().append(s, Seq::ZERO, &mixed_entries()).unwrap();
    let child = session(21);
    let fork_at = 40u64;
    let own = fixture.store().fork(child, s, Seq::new(fork_at), &entries(100..103)).unwrap();
    let child_all: Vec<logbook_core::Record> = all[..=fork_at as usize]
        .iter()
        .map(|r| logbook_core::Record::from_parts(child, r.seq(), r.prev(), r.hash(), r.body().clone()))
        .chain(own)
        .collect();
    // With the tail caches warm, then after a reopen (read from the log).
    check_every_way(&fixture, s, &all);
    check_every_way(&fixture, child, &child_all);
    let fixture = fixture.reopen();
    check_every_way(&fixture, s, &all);
    check_every_way(&fixture, child, &child_all);
    assert!(fixture.store().verify_store_is_intact());
}

fn check_every_way<F: Fixture>(fixture: &F, s: logbook_core::SessionId, all: &[logbook_core::Record]) {
    let store = fixture.store();
    fixture.set_read_bytes(SMALL_READ_BYTES);
    // Forward.
    let (mut got, mut cut) = (Vec::new(), 0);
    while got.len() < all.len() + 1 {
        let read = store.read(s, Seq::new(got.len() as u64), 10_000).unwrap();
        if read.is_empty() {
            break;
        }
        check_cut_forward(all, got.len(), &read, 10_000);
        cut += usize::from(got.len() + read.len() < all.len());
        got.extend(read);
    }
    assert_eq!(got, all, "forward");
    assert!(cut >= 3, "reads were cut short ({cut} times)");
    // Backward: each read is the last records before its bound that fit.
    let mut before = all.len();
    let mut back = Vec::new();
    while before > 0 {
        let read = store.read_before(s, Seq::new(before as u64), 10_000).unwrap();
        assert!(!read.is_empty(), "a read before {before} returns at least one record");
        let from = before - read.len();
        assert_eq!(read, &all[from..before], "records in order before {before}");
        let bytes: usize = read.iter().map(logbook_store::read_bytes_of).sum();
        assert!(read.len() == 1 || bytes <= SMALL_READ_BYTES, "{bytes} bytes before {before}");
        if from > 0 {
            assert!(bytes + logbook_store::read_bytes_of(&all[from - 1]) > SMALL_READ_BYTES, "the one before fitted");
        }
        back.splice(0..0, read);
        before = from;
    }
    assert_eq!(back, all, "backward");
    // By type: the large records' type, and a small records' type.
    for wanted in [EventType::AgentToolResult, all[1].entry().unwrap().event.event_type()] {
        let expected: Vec<_> =
            all.iter().filter(|r| r.entry().unwrap().event.event_type() == wanted).cloned().collect();
        let mut found: Vec<logbook_core::Record> = Vec::new();
        let mut from = Seq::ZERO;
        loop {
            let read = store.scan_types(s, &[wanted], from, 10_000).unwrap();
            let Some(last) = read.last() else { break };
            let bytes: usize = read.iter().map(logbook_store::read_bytes_of).sum();
            assert!(read.len() == 1 || bytes <= SMALL_READ_BYTES, "{bytes} bytes scanned");
            from = Seq::new(last.seq().get() + 1);
            found.extend(read);
        }
        assert_eq!(found, expected, "scan of {wanted:?}");
    }
    // A subscription delivers everything once, in order.
    let mut subscription = store.subscribe(s, Seq::ZERO);
    let mut delivered = Vec::new();
    loop {
        let batch = subscription.try_next_batch(10_000).unwrap();
        if batch.is_empty() {
            break;
        }
        delivered.extend(batch);
    }
    assert_eq!(delivered, all, "subscription");
}

/// Goal: a record larger than the whole budget is still read, alone, so a
/// caller always gets further; one that does not fit after others waits for
/// the next read. Method: a budget of 4 KiB, records of 16 KiB between small
/// ones, read every way.
pub(crate) fn a_record_larger_than_the_budget_is_read_alone<F: Fixture>(fixture: F) {
    let store = fixture.store();
    let s = session(22);
    let all = store.append(s, Seq::ZERO, &[entry(0), large_entry(1, 16), large_entry(2, 16), entry(3)]).unwrap();
    fixture.set_read_bytes(4 * 1024);
    assert_eq!(store.read(s, Seq::ZERO, 10).unwrap(), all[..1], "the small one, not the large one after it");
    assert_eq!(store.read(s, Seq::new(1), 10).unwrap(), all[1..2], "a large one alone");
    assert_eq!(store.read(s, Seq::new(2), 10).unwrap(), all[2..3]);
    assert_eq!(store.read(s, Seq::new(3), 10).unwrap(), all[3..]);
    assert_eq!(store.read_before(s, Seq::new(4), 10).unwrap(), all[3..], "the small one, not the large one before it");
    assert_eq!(store.read_before(s, Seq::new(3), 10).unwrap(), all[2..3], "a large one alone");
    assert_eq!(store.scan_types(s, &[EventType::AgentToolResult], Seq::ZERO, 10).unwrap(), all[1..2]);
    let kind = ResourceKind::Session;
    let big = noise(7, 16 * 1024);
    store.swap_resource(kind, b"r1", None, Some(b"small")).unwrap().unwrap();
    store.swap_resource(kind, b"r2", None, Some(&big)).unwrap().unwrap();
    store.swap_resource(kind, b"r3", None, Some(&big)).unwrap().unwrap();
    let keys = |pairs: logbook_store::engine::Pairs| pairs.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    let scan = |after: Option<&[u8]>, direction| store.scan_resources(kind, b"r", after, direction, 10).unwrap();
    assert_eq!(keys(scan(None, Direction::Forward)), [b"r1".to_vec()]);
    assert_eq!(keys(scan(Some(b"r1"), Direction::Forward)), [b"r2".to_vec()]);
    assert_eq!(keys(scan(Some(b"r2"), Direction::Forward)), [b"r3".to_vec()]);
    assert_eq!(keys(scan(None, Direction::Backward)), [b"r3".to_vec()]);
    // Many resources walked after the last key come back whole.
    for n in 0..40u32 {
        store
            .swap_resource(kind, format!("w{n:02}").as_bytes(), None, Some(&noise(u64::from(n), 1000)))
            .unwrap()
            .unwrap();
    }
    let (mut walked, mut after, mut scans) = (Vec::new(), None::<Vec<u8>>, 0);
    loop {
        let pairs = store.scan_resources(kind, b"w", after.as_deref(), Direction::Forward, 1000).unwrap();
        let Some((last, _)) = pairs.last() else { break };
        after = Some(last.clone());
        scans += 1;
        walked.extend(keys(pairs));
    }
    assert_eq!(walked, (0..40).map(|n| format!("w{n:02}").into_bytes()).collect::<Vec<_>>());
    assert!(scans >= 5, "scans of 4 KiB: {scans}");
}

/// Goal: a read of many records from the log (decoded on several threads)
/// is cut exactly where a short one is: the records that fit, the next one
/// not. Method: 1,200 small records, reopened (so the read goes to the log),
/// read with a budget of exactly the first 700 records' bytes, then on.
pub(crate) fn a_long_read_from_the_log_is_cut_like_a_short_one<F: Fixture>(fixture: F) {
    let s = session(23);
    let mut all = Vec::new();
    for start in (0..1200u64).step_by(400) {
        all.extend(fixture.store().append(s, Seq::new(start), &entries(start..start + 400)).unwrap());
    }
    let fixture = fixture.reopen();
    let budget: usize = all[..700].iter().map(logbook_store::read_bytes_of).sum();
    fixture.set_read_bytes(budget);
    let store = fixture.store();
    assert_eq!(store.read(s, Seq::ZERO, 10_000).unwrap(), all[..700]);
    assert_eq!(store.read(s, Seq::new(700), 10_000).unwrap(), all[700..]);
    fixture.set_read_bytes(budget - 1);
    assert_eq!(store.read(s, Seq::ZERO, 10_000).unwrap(), all[..699]);
}

/// What every fixture's store can say about its own integrity.
pub(crate) trait VerifyAll {
    fn verify_store_is_intact(&self) -> bool;
}

impl<E: logbook_store::engine::Engine> VerifyAll for logbook_store::LogStore<E> {
    fn verify_store_is_intact(&self) -> bool {
        let report = self.verify_all(&mut |_| {}).unwrap();
        report.is_intact() && report.n_records > 0
    }
}

macro_rules! conformance {
    ($module:ident, $fixture:expr) => {
        mod $module {
            #[test]
            fn append_then_read_back() {
                super::append_then_read_back($fixture);
            }
            #[test]
            fn conflicting_append_changes_nothing() {
                super::conflicting_append_changes_nothing($fixture);
            }
            #[test]
            fn limits_are_enforced() {
                super::limits_are_enforced($fixture);
            }
            #[test]
            fn concurrent_writers_on_one_session() {
                super::concurrent_writers_on_one_session($fixture);
            }
            #[test]
            fn concurrent_writers_on_many_sessions() {
                super::concurrent_writers_on_many_sessions($fixture);
            }
            #[test]
            fn scan_by_type() {
                super::scan_by_type($fixture);
            }
            #[test]
            fn latest_of_a_type_keeps_up_with_the_durable_head() {
                super::latest_of_a_type_keeps_up_with_the_durable_head($fixture);
            }
            #[test]
            fn subscription_sees_later_appends_in_order() {
                super::subscription_sees_later_appends_in_order($fixture);
            }
            #[test]
            fn subscription_to_an_unknown_session_waits() {
                super::subscription_to_an_unknown_session_waits($fixture);
            }
            #[test]
            fn blobs_are_stored_once_and_checked() {
                super::blobs_are_stored_once_and_checked($fixture);
            }
            #[test]
            fn resources_compare_and_swap() {
                super::resources_compare_and_swap($fixture);
            }
            #[test]
            fn everything_survives_reopen() {
                super::everything_survives_reopen($fixture);
            }
            #[test]
            fn reads_are_cut_by_bytes_and_callers_go_on() {
                super::reads_are_cut_by_bytes_and_callers_go_on($fixture);
            }
            #[test]
            fn a_long_read_from_the_log_is_cut_like_a_short_one() {
                super::a_long_read_from_the_log_is_cut_like_a_short_one($fixture);
            }
            #[test]
            fn a_record_larger_than_the_budget_is_read_alone() {
                super::a_record_larger_than_the_budget_is_read_alone($fixture);
            }
        }
    };
}

conformance!(mem, super::super::MemFixture::new());
conformance!(sled, super::super::SledFixture::new());

/// Polls `future` to completion on this thread, parking between wake-ups.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(output) => return output,
            std::task::Poll::Pending => std::thread::park_timeout(Duration::from_secs(1)),
        }
    }
}

#[test]
fn an_awaited_append_is_durable_and_readable() {
    let fixture = super::SledFixture::new();
    let store = fixture.store();
    let first = store.append_submit(session(1), Seq::ZERO, &entries(0..2)).unwrap();
    let second = store.append_submit(session(1), Seq::new(2), &entries(2..3)).unwrap();
    // A conflict is known at submission, before anything is durable.
    let conflict = store.append_submit(session(1), Seq::ZERO, &entries(0..1));
    assert!(matches!(conflict, Err(AppendError::Conflict { .. })), "{conflict:?}");
    let mut records = block_on(first).unwrap();
    records.extend(block_on(second).unwrap());
    assert_eq!(records.len(), 3);
    assert_eq!(store.read(session(1), Seq::ZERO, 10).unwrap(), records, "awaited records are readable");
    let fixture = fixture.crash();
    assert_eq!(fixture.store().read(session(1), Seq::ZERO, 10).unwrap(), records, "and survive a crash");
}

/// Goal: a subscription that reads from the log (not the tail cache) on a
/// tokio runtime, where the read runs on the blocking pool, delivers every
/// record once and in order, also when a wait is cancelled mid-read (as an
/// SSE stream's `select!` does). Method: 300 records, caches emptied,
/// followed from the start with the first wait cancelled at once.
#[test]
fn a_subscription_reading_the_log_off_thread_delivers_everything_once() {
    let fixture = super::SledFixture::new();
    let store = fixture.store();
    let s = session(40);
    store.append(s, Seq::ZERO, &entries(0..300)).unwrap();
    store.clear_caches();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(async {
        let mut sub = store.subscribe(s, Seq::ZERO);
        {
            // Polled once, then dropped mid-read, as a `select!` whose other
            // branch won would.
            let mut first = std::pin::pin!(sub.next_batch(64));
            let polled = first.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
            assert!(polled.is_pending(), "a read from the log is not ready at the first poll");
        }
        let mut seen = Vec::new();
        while seen.len() < 300 {
            let batch = sub.next_batch(64).await.unwrap().unwrap();
            seen.extend(batch.iter().map(|r| r.seq().get()));
        }
        assert_eq!(seen, (0..300).collect::<Vec<_>>());
        assert_eq!(sub.position(), Seq::new(300));
    });
}
