//! Model-based test: random operation sequences against a store and a plain
//! `Vec` per session, including reopening the store mid-sequence, cleanly or
//! after a crash (in memory: a power loss). Goal: the store behaves exactly
//! like the model (appends, conflicts, reads, heads, scans) and nothing
//! acknowledged is lost across a reopen or a crash. Forks are in the mix: a
//! fork's model log is a copy of its parent's prefix, the store's is not.

use std::collections::BTreeMap;

use logbook_core::{ChainHash, Entry, EventType, Seq};
use logbook_store::{Append, AppendError, Fork, ForkError, Head, Read};
use proptest::prelude::*;

use super::{Fixture, MemFixture, SledFixture, session};

#[derive(Debug, Clone)]
enum Op {
    Append { session: u64, entries: Vec<Entry>, skew: i64 },
    Read { session: u64, from: u64, limit: usize },
    ReadBefore { session: u64, before: u64, limit: usize },
    ScanType { session: u64, type_idx: usize },
    LastOfTypes { session: u64, type_idxs: Vec<usize> },
    Head { session: u64 },
    Fork { parent: u64, child: u64, at: u64, entries: Vec<Entry> },
    Checkpoint,
    Reopen,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u64..5, prop::collection::vec(any::<Entry>(), 1..4), prop_oneof![8 => Just(0i64), 1 => -2i64..3])
            .prop_map(|(session, entries, skew)| Op::Append { session, entries, skew }),
        2 => (0u64..5, 0u64..12, 0usize..6).prop_map(|(session, from, limit)| Op::Read { session, from, limit }),
        1 => (0u64..5, 0u64..14, 0usize..6).prop_map(|(session, before, limit)| Op::ReadBefore { session, before, limit }),
        1 => (0u64..5, 0usize..EventType::ALL.len()).prop_map(|(session, type_idx)| Op::ScanType { session, type_idx }),
        2 => (0u64..5, prop::collection::vec(0usize..EventType::ALL.len(), 1..12))
            .prop_map(|(session, type_idxs)| Op::LastOfTypes { session, type_idxs }),
        1 => (0u64..5).prop_map(|session| Op::Head { session }),
        1 => (0u64..5, 2u64..5, 0u64..8, prop::collection::vec(any::<Entry>(), 0..3))
            .prop_map(|(parent, child, at, entries)| Op::Fork { parent, child, at, entries }),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
    ]
}

#[derive(Default)]
struct Model {
    logs: BTreeMap<u64, Vec<(Entry, ChainHash)>>,
}

fn run<F: Fixture>(mut fixture: F, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Append { session: s, entries, skew } => {
                let log = model.logs.entry(s).or_default();
                let len = log.len() as u64;
                let expected = Seq::new(len.saturating_add_signed(skew));
                let res = fixture.store().append(session(s), expected, &entries);
                if expected.get() == len {
                    let records = res.map_err(|err| TestCaseError::fail(err.to_string()))?;
                    for (record, entry) in records.iter().zip(&entries) {
                        prop_assert_eq!(&record.entry().map_err(|e| TestCaseError::fail(e.to_string()))?, entry);
                        log.push((entry.clone(), record.hash()));
                    }
                } else {
                    match res {
                        Err(AppendError::Conflict { actual, .. }) => prop_assert_eq!(actual, Seq::new(len)),
                        other => return Err(TestCaseError::fail(format!("expected a conflict, got {other:?}"))),
                    }
                }
            }
            Op::Read { session: s, from, limit } => {
                let log = model.logs.get(&s).map(Vec::as_slice).unwrap_or_default();
                let got = fixture
                    .store()
                    .read(session(s), Seq::new(from), limit)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let start = (from as usize).min(log.len());
                let want = &log[start..(start + limit).min(log.len())];
                prop_assert_eq!(got.len(), want.len());
                for (record, (entry, hash)) in got.iter().zip(want) {
                    prop_assert_eq!(&record.entry().map_err(|e| TestCaseError::fail(e.to_string()))?, entry);
                    prop_assert_eq!(record.hash(), *hash);
                }
            }
            Op::ReadBefore { session: s, before, limit } => {
                let log = model.logs.get(&s).map(Vec::as_slice).unwrap_or_default();
                let got = fixture
                    .store()
                    .read_before(session(s), Seq::new(before), limit)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let end = (before as usize).min(log.len());
                let start = end.saturating_sub(limit);
                prop_assert_eq!(
                    got.iter().map(|r| r.seq().get()).collect::<Vec<_>>(),
                    (start as u64..end as u64).collect::<Vec<_>>()
                );
            }
            Op::ScanType { session: s, type_idx } => {
                let event_type = EventType::ALL[type_idx];
                let log = model.logs.get(&s).map(Vec::as_slice).unwrap_or_default();
                let got = fixture
                    .store()
                    .scan_types(session(s), &[event_type], Seq::ZERO, 100)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let want: Vec<u64> = log
                    .iter()
                    .enumerate()
                    .filter(|(_, (entry, _))| entry.event.event_type() == event_type)
                    .map(|(idx, _)| idx as u64)
                    .collect();
                prop_assert_eq!(got.iter().map(|r| r.seq().get()).collect::<Vec<_>>(), want);
            }
            Op::LastOfTypes { session: s, type_idxs } => {
                let types: Vec<EventType> = type_idxs.iter().map(|idx| EventType::ALL[*idx]).collect();
                let log = model.logs.get(&s).map(Vec::as_slice).unwrap_or_default();
                let got = fixture
                    .store()
                    .last_of_types(session(s), &types)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let want = log.iter().rposition(|(entry, _)| types.contains(&entry.event.event_type()));
                prop_assert_eq!(got.map(|r| r.seq().get()), want.map(|idx| idx as u64));
            }
            Op::Head { session: s } => {
                let log = model.logs.get(&s).map(Vec::as_slice).unwrap_or_default();
                let head = fixture.store().head(session(s)).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let want = Head {
                    next: Seq::new(log.len() as u64),
                    hash: log.last().map_or(logbook_core::chain::GENESIS, |(_, hash)| *hash),
                };
                prop_assert_eq!(head, want);
            }
            Op::Fork { parent, child, at, entries } => {
                let parent_log = model.logs.get(&parent).cloned().unwrap_or_default();
                let child_exists = model.logs.get(&child).is_some_and(|log| !log.is_empty());
                let res = fixture.store().fork(session(child), session(parent), Seq::new(at), &entries);
                if parent == child {
                    prop_assert!(matches!(res, Err(ForkError::SelfFork { .. })), "{res:?}");
                } else if at >= parent_log.len() as u64 {
                    prop_assert!(matches!(res, Err(ForkError::BeyondHead { .. })), "{res:?}");
                } else if child_exists {
                    prop_assert!(matches!(res, Err(ForkError::Exists { .. })), "{res:?}");
                } else {
                    let records = res.map_err(|err| TestCaseError::fail(err.to_string()))?;
                    let mut log = parent_log[..=at as usize].to_vec();
                    for (record, entry) in records.iter().zip(&entries) {
                        prop_assert_eq!(&record.entry().map_err(|e| TestCaseError::fail(e.to_string()))?, entry);
                        log.push((entry.clone(), record.hash()));
                    }
                    model.logs.insert(child, log);
                }
            }
            Op::Checkpoint => fixture.checkpoint(),
            Op::Reopen => fixture = fixture.reopen(),
            Op::Crash => fixture = fixture.crash(),
        }
    }
    Ok(())
}

fn config(cases: u32) -> ProptestConfig {
    // `LOGBOOK_MODEL_CASES` scales both runs up for soak testing.
    let scale = std::env::var("LOGBOOK_MODEL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    ProptestConfig {
        cases: cases * scale,
        failure_persistence: Some(Box::new(prop::test_runner::FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn mem_store_matches_the_model(ops in prop::collection::vec(op(), 1..40)) {
        run(MemFixture::new(), ops)?;
    }
}

proptest! {
    // Each case opens sled on disk, so fewer cases.
    #![proptest_config(config(24))]

    #[test]
    fn sled_store_matches_the_model(ops in prop::collection::vec(op(), 1..40)) {
        run(SledFixture::new(), ops)?;
    }
}
