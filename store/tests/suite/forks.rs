//! Forks by reference, in the conformance suite (both engines, through the
//! `forks!` macro at the bottom).
//!
//! Goal: a fork reads as its parent's prefix followed by its own records, its
//! chain verifies from genesis through the fork point, it is independent of
//! its parent afterwards (either may grow), and every read path (range reads,
//! reads before a seq, type scans, the latest of a type, subscriptions,
//! heads, whole-store verification) includes the inherited prefix, for forks
//! of forks too, across reopens and crashes. Method: build parents with the
//! sample events, fork, compare with the records expected.

use std::time::Duration;

use logbook_core::verify::{Anchor, verify_chain};
use logbook_core::{Record, Seq, SessionId};
use logbook_store::{Append, AppendError, Fork, ForkError, ForkOrigin, Head, Read, Subscribe};
use pretty_assertions::assert_eq;

use super::conformance::VerifyAll;
use super::{Fixture, entries, session};

/// The records a fork of `parent` at `at` with `own` after it must read as.
fn expected(child: SessionId, parent: &[Record], at: usize, own: &[Record]) -> Vec<Record> {
    let inherited =
        parent[..=at].iter().map(|r| Record::from_parts(child, r.seq(), r.prev(), r.hash(), r.body().clone()));
    inherited.chain(own.iter().cloned()).collect()
}

fn all(store: &impl Read, s: SessionId) -> Vec<Record> {
    store.read(s, Seq::ZERO, 10_000).unwrap()
}

pub(crate) fn a_fork_reads_its_parents_prefix_then_its_own<F: Fixture>(fixture: F) {
    let store = fixture.store();
    let (parent, child) = (session(10), session(11));
    let parent_records = store.append(parent, Seq::ZERO, &entries(0..10)).unwrap();
    let own = store.fork(child, parent, Seq::new(4), &entries(50..52)).unwrap();
    assert_eq!(own.iter().map(|r| r.seq().get()).collect::<Vec<_>>(), vec![5, 6]);
    assert_eq!(own[0].prev(), parent_records[4].hash(), "the fork continues the parent's chain");
    let read = all(store, child);
    assert_eq!(read, expected(child, &parent_records, 4, &own));
    assert!(verify_chain(Anchor::GENESIS, read.iter().map(Ok)).is_intact());
    assert_eq!(store.head(child).unwrap(), Head { next: Seq::new(7), hash: own[1].hash() });
    assert_eq!(store.read(child, Seq::new(3), 3).unwrap(), read[3..6].to_vec(), "a range across the fork point");
    assert_eq!(store.read_before(child, Seq::new(6), 4).unwrap(), read[2..6].to_vec());
    assert_eq!(
        store.fork_origin(child).unwrap(),
        Some(ForkOrigin { parent, at_seq: Seq::new(4), parent_hash: parent_records[4].hash() })
    );
    assert_eq!(store.fork_origin(parent).unwrap(), None);
    assert_eq!(store.forks_of(parent).unwrap(), vec![(child, Seq::new(4))]);
    let mut sessions = store.sessions().unwrap();
    sessions.sort();
    assert_eq!(sessions, vec![parent, child]);
}

pub(crate) fn parent_and_fork_grow_independently<F: Fixture>(fixture: F) {
    let store = fixture.store();
    let (parent, child) = (session(20), session(21));
    let parent_records = store.append(parent, Seq::ZERO, &entries(0..6)).unwrap();
    store.fork(child, parent, Seq::new(5), &[]).unwrap();
    assert_eq!(store.head(child).unwrap(), Head { next: Seq::new(6), hash: parent_records[5].hash() });
    // The parent grows (even its end: a deletion is just another event).
    let later = store.append(parent, Seq::new(6), &entries(6..9)).unwrap();
    let own = store.append(child, Seq::new(6), &entries(60..62)).unwrap();
    assert_eq!(all(store, parent), [parent_records.clone(), later].concat());
    assert_eq!(all(store, child), expected(child, &parent_records, 5, &own));
    assert_ne!(own[0].hash(), all(store, parent)[6].hash(), "the two logs diverge at seq 6");
    match store.append(child, Seq::new(5), &entries(70..71)) {
        Err(AppendError::Conflict { actual, .. }) => assert_eq!(actual, Seq::new(8)),
        other => panic!("expected a conflict, got {other:?}"),
    }
}

pub(crate) fn forks_of_forks_read_through_every_ancestor<F: Fixture>(fixture: F)
where
    F::Store: VerifyAll,
{
    let store = fixture.store();
    let (a, b, c, d) = (session(30), session(31), session(32), session(33));
    let a_records = store.append(a, Seq::ZERO, &entries(0..10)).unwrap();
    let b_own = store.fork(b, a, Seq::new(6), &entries(100..103)).unwrap();
    let b_all = expected(b, &a_records, 6, &b_own);
    // C forks B past B's own start: its prefix comes from A and from B.
    let c_own = store.fork(c, b, Seq::new(8), &entries(200..202)).unwrap();
    let c_all = all(store, c);
    assert_eq!(c_all, expected(c, &b_all, 8, &c_own));
    assert!(verify_chain(Anchor::GENESIS, c_all.iter().map(Ok)).is_intact());
    // D forks B before B's own start: its prefix is A's only.
    let d_own = store.fork(d, b, Seq::new(3), &entries(300..301)).unwrap();
    assert_eq!(d_own[0].prev(), a_records[3].hash());
    assert_eq!(all(store, d), expected(d, &a_records, 3, &d_own));
    assert_eq!(store.forks_of(b).unwrap().len(), 2);
    assert!(store.verify_store_is_intact(), "fork points resolved through the ancestry");
}

pub(crate) fn type_scans_and_subscriptions_include_the_prefix<F: Fixture>(fixture: F) {
    let store = fixture.store();
    let (parent, child) = (session(40), session(41));
    let parent_records = store.append(parent, Seq::ZERO, &entries(0..40)).unwrap();
    let own = store.fork(child, parent, Seq::new(29), &entries(33..40)).unwrap();
    let child_all = expected(child, &parent_records, 29, &own);
    let type_at = |seq: usize| child_all[seq].entry().unwrap().event.event_type();
    // One type seen in the prefix, one in the fork's own records.
    let wanted = [type_at(5), type_at(31)];
    let want: Vec<u64> = child_all
        .iter()
        .filter(|r| wanted.contains(&r.entry().unwrap().event.event_type()))
        .map(|r| r.seq().get())
        .collect();
    assert!(want.iter().any(|s| *s <= 29) && want.iter().any(|s| *s > 29), "matches on both sides: {want:?}");
    let found = store.scan_types(child, &wanted, Seq::ZERO, 1000).unwrap();
    assert_eq!(found.iter().map(|r| r.seq().get()).collect::<Vec<_>>(), want);
    assert_eq!(found, want.iter().map(|s| child_all[*s as usize].clone()).collect::<Vec<_>>());
    let limited = store.scan_types(child, &wanted, Seq::new(1), 2).unwrap();
    assert_eq!(
        limited.iter().map(|r| r.seq().get()).collect::<Vec<_>>(),
        want.iter().copied().filter(|s| *s >= 1).take(2).collect::<Vec<_>>()
    );
    let last = store.last_of_types(child, &wanted).unwrap().unwrap();
    assert_eq!(last.seq().get(), *want.last().unwrap());
    // A type only the prefix has: found through the parent's index.
    let prefix_only = child_all[..=29]
        .iter()
        .map(|r| r.entry().unwrap().event.event_type())
        .find(|t| child_all[30..].iter().all(|r| r.entry().unwrap().event.event_type() != *t))
        .unwrap();
    let last = store.last_of_types(child, &[prefix_only]).unwrap().unwrap();
    assert!(last.seq().get() <= 29 && last.session() == child);

    let mut sub = store.subscribe(child, Seq::new(27));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let mut seen = Vec::new();
    while seen.len() < 10 {
        let batch = runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), sub.next_batch(3)).await })
            .unwrap()
            .unwrap()
            .unwrap();
        seen.extend(batch);
    }
    assert_eq!(seen, child_all[27..37].to_vec());
    let next = store.append(child, Seq::new(37), &entries(90..91)).unwrap();
    assert_eq!(sub.try_next_batch(10).unwrap(), next);
}

pub(crate) fn bad_forks_are_refused<F: Fixture>(fixture: F) {
    let store = fixture.store();
    let (parent, child, other) = (session(50), session(51), session(52));
    store.append(parent, Seq::ZERO, &entries(0..3)).unwrap();
    store.append(other, Seq::ZERO, &entries(0..1)).unwrap();
    assert!(matches!(
        store.fork(child, parent, Seq::new(3), &[]),
        Err(ForkError::BeyondHead { next, .. }) if next == Seq::new(3)
    ));
    assert!(matches!(store.fork(child, session(59), Seq::ZERO, &[]), Err(ForkError::BeyondHead { .. })));
    assert!(matches!(store.fork(parent, parent, Seq::ZERO, &[]), Err(ForkError::SelfFork { .. })));
    assert!(matches!(store.fork(other, parent, Seq::ZERO, &[]), Err(ForkError::Exists { .. })));
    let too_many = vec![entries(0..1)[0].clone(); logbook_core::limits::MAX_EVENTS_PER_APPEND + 1];
    assert!(matches!(
        store.fork(child, parent, Seq::ZERO, &too_many),
        Err(ForkError::Append(AppendError::BadCount { .. }))
    ));
    // Nothing of the refused forks exists.
    assert_eq!(store.head(child).unwrap().next, Seq::ZERO);
    assert_eq!(store.fork_origin(child).unwrap(), None);
    store.fork(child, parent, Seq::ZERO, &[]).unwrap();
    assert!(matches!(store.fork(child, parent, Seq::ZERO, &[]), Err(ForkError::Exists { .. })));
}

pub(crate) fn forks_survive_reopen_crash_and_verify<F: Fixture>(fixture: F)
where
    F::Store: VerifyAll,
{
    let (parent, child, grandchild) = (session(60), session(61), session(62));
    let parent_records = fixture.store().append(parent, Seq::ZERO, &entries(0..8)).unwrap();
    let own = fixture.store().fork(child, parent, Seq::new(2), &entries(80..83)).unwrap();
    let fixture = fixture.reopen();
    let child_all = expected(child, &parent_records, 2, &own);
    assert_eq!(all(fixture.store(), child), child_all);
    assert!(fixture.store().verify_store_is_intact());
    let grand_own = fixture.store().fork(grandchild, child, Seq::new(4), &entries(90..91)).unwrap();
    fixture.store().append(parent, Seq::new(8), &entries(8..9)).unwrap();
    let fixture = fixture.crash();
    assert_eq!(all(fixture.store(), child), child_all);
    assert_eq!(all(fixture.store(), grandchild), expected(grandchild, &child_all, 4, &grand_own));
    assert_eq!(fixture.store().forks_of(child).unwrap(), vec![(grandchild, Seq::new(4))]);
    assert!(fixture.store().verify_store_is_intact());
    let fixture = fixture.reopen();
    assert_eq!(fixture.store().fork_origin(grandchild).unwrap().map(|o| o.parent), Some(child));
    assert!(fixture.store().verify_store_is_intact());
}

macro_rules! forks {
    ($module:ident, $fixture:expr) => {
        mod $module {
            #[test]
            fn a_fork_reads_its_parents_prefix_then_its_own() {
                super::a_fork_reads_its_parents_prefix_then_its_own($fixture);
            }
            #[test]
            fn parent_and_fork_grow_independently() {
                super::parent_and_fork_grow_independently($fixture);
            }
            #[test]
            fn forks_of_forks_read_through_every_ancestor() {
                super::forks_of_forks_read_through_every_ancestor($fixture);
            }
            #[test]
            fn type_scans_and_subscriptions_include_the_prefix() {
                super::type_scans_and_subscriptions_include_the_prefix($fixture);
            }
            #[test]
            fn bad_forks_are_refused() {
                super::bad_forks_are_refused($fixture);
            }
            #[test]
            fn forks_survive_reopen_crash_and_verify() {
                super::forks_survive_reopen_crash_and_verify($fixture);
            }
        }
    };
}

forks!(mem, super::super::MemFixture::new());
forks!(sled, super::super::SledFixture::new());
