//! Forking by reference: the cost of creating a fork of a session of 1k
//! events against one of 1M, to show it does not grow with the parent.
//!
//! [`build_parent`] appends `n_events` of the corpus's events (cycled, in
//! appends of up to [`BUILD_BATCH`]) to one session. [`fork_times`] then
//! forks it at random seqs (each fork a new session with one first event, as
//! the server's `x.fork_origin` will be), and, as the baseline in the same
//! run, appends one event to a session of its own: both cost one group commit
//! (`pwrite` + `fdatasync`), so their ratio shows what forking adds.

use std::time::{Duration, Instant};

use anyhow::ensure;
use logbook_core::{Entry, Seq, SessionId};
use logbook_store::{Append, Fork, Read, SledStore};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::corpus::Corpus;

/// Events per append while building a parent.
pub const BUILD_BATCH: usize = 500;

/// Fork and append latencies, one of each per round, interleaved.
#[derive(Debug, Clone, Default)]
pub struct ForkTimes {
    pub parent_events: u64,
    pub fork: Vec<Duration>,
    /// Reading the fork's last 100 records right after creating it.
    pub read_after_fork: Vec<Duration>,
    pub append: Vec<Duration>,
}

/// Appends `n_events` of `corpus`'s events to `session`; returns the time it took.
pub fn build_parent(store: &SledStore, corpus: &Corpus, session: SessionId, n_events: u64) -> anyhow::Result<Duration> {
    let events: Vec<&Entry> = corpus.sessions.iter().flat_map(|s| s.entries.iter()).collect();
    ensure!(!events.is_empty(), "empty corpus");
    let start = Instant::now();
    let mut next = 0u64;
    while next < n_events {
        let n = (n_events - next).min(BUILD_BATCH as u64);
        let batch: Vec<Entry> = (next..next + n).map(|i| events[i as usize % events.len()].clone()).collect();
        store.append(session, Seq::new(next), &batch)?;
        next += n;
    }
    Ok(start.elapsed())
}

/// `rounds` forks of `parent` (which has `parent_events` records) at random
/// seqs, each followed by a read of the fork's last 100 records, interleaved
/// with 1-event appends to a session of their own.
pub fn fork_times(
    store: &SledStore,
    corpus: &Corpus,
    parent: SessionId,
    rounds: usize,
    seed: u64,
) -> anyhow::Result<ForkTimes> {
    let parent_events = store.head(parent)?.next.get();
    ensure!(parent_events > 0, "empty parent");
    let first: &Entry = &corpus.sessions[0].entries[0];
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = ForkTimes { parent_events, ..ForkTimes::default() };
    let solo = SessionId::from_parts(1_900_000_000_000 + parent_events, u128::from(seed));
    for round in 0..rounds {
        let at = Seq::new(rng.random_range(0..parent_events));
        let child =
            SessionId::from_parts(1_800_000_000_000 + round as u64, (u128::from(parent_events) << 32) | round as u128);
        let start = Instant::now();
        let own = store.fork(child, parent, at, std::slice::from_ref(first))?;
        out.fork.push(start.elapsed());
        ensure!(own.len() == 1 && own[0].seq() == Seq::new(at.get() + 1), "fork returned {own:?}");

        let start = Instant::now();
        let tail = store.read_before(child, Seq::new(u64::MAX), 100)?;
        out.read_after_fork.push(start.elapsed());
        ensure!(tail.len() as u64 == (at.get() + 2).min(100), "fork's tail has {} records", tail.len());

        let start = Instant::now();
        store.append(solo, Seq::new(round as u64), std::slice::from_ref(first))?;
        out.append.push(start.elapsed());
    }
    Ok(out)
}
