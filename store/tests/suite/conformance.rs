//! The conformance suite: every behaviour of the `Store` traits, run against
//! both engines by the `conformance!` macro at the bottom.

use std::sync::Arc;
use std::time::Duration;

use logbook_core::verify::{Anchor, verify_chain};
use logbook_core::{EventType, Seq, chain};
use logbook_store::engine::Direction;
use logbook_store::{Append, AppendError, Blobs, Head, Read, ResourceKind, Resources, Subscribe};
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
