//! What the crash tests check after each crash of `crash-writer`: its output
//! lines are the acknowledgements, and the store, opened again, must hold
//! every one of them.
//!
//! [`Survivors`] collects the acknowledgements of all runs over one data
//! directory (an [`Ack`] per session, the resource counter's values) and
//! [`Survivors::check`] opens the store and checks that nothing acknowledged
//! is missing, that every session's seqs are gap-free and its chain verifies,
//! that the whole log verifies against the index, and that what one check saw
//! is still there, unchanged, at the next.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail, ensure};
use logbook_core::verify::{Anchor, verify_chain};
use logbook_core::{Record, Seq, SessionId};
use logbook_store::{Read, Resources, SledOptions, SledStore};

use crate::{Ack, CRASH_COUNTER, counter_value, crash_session};

/// sled's cache when the checks open a store (small: they read each record once).
pub const CHECK_CACHE_BYTES: u64 = 16 << 20;

/// Records asked for per read while reading a session whole.
const READ_CHUNK: usize = 10_000;

/// One line of `crash-writer`'s output (with the storage-fault shim loaded,
/// its own report too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// The store is open.
    Ready,
    /// An append was acknowledged.
    Ack(Ack),
    /// The resource counter's write of this value was acknowledged.
    Resource(u64),
    /// The storage-fault shim injected its fault: the operation's number, name and path.
    Fault(String),
}

impl Line {
    /// Parses a line; `None` for anything else (a line cut short by a kill is
    /// no acknowledgement).
    pub fn parse(line: &str) -> Option<Line> {
        if line == "ready" {
            return Some(Line::Ready);
        }
        if let Some(value) = line.strip_prefix("resource ") {
            return value.parse().ok().map(Line::Resource);
        }
        if let Some(fault) = line.strip_prefix("fault ") {
            return Some(Line::Fault(fault.to_owned()));
        }
        line.parse().ok().map(Line::Ack)
    }
}

/// What every run over one data directory acknowledged, and what the last
/// check found there.
#[derive(Debug, Default)]
pub struct Survivors {
    /// The highest acknowledgement per session.
    acked: BTreeMap<SessionId, Ack>,
    /// The records each session held at the last check.
    seen: BTreeMap<SessionId, Vec<Record>>,
    /// The highest acknowledged value of the counter.
    counter_acked: u64,
    /// The counter's value at the last check.
    counter_seen: u64,
    /// Acknowledgements taken, over all runs.
    pub n_acks: u64,
}

impl Survivors {
    /// Takes an acknowledgement (other lines change nothing).
    pub fn take(&mut self, line: &Line) {
        match line {
            Line::Ack(ack) => {
                self.n_acks += 1;
                let entry = self.acked.entry(ack.session).or_insert(*ack);
                if ack.next > entry.next {
                    *entry = *ack;
                }
            }
            Line::Resource(value) => self.counter_acked = self.counter_acked.max(*value),
            Line::Ready | Line::Fault(_) => {}
        }
    }

    /// Opens the store in `data` (the writer has exited) and checks it
    /// against every acknowledgement taken so far and the last check's
    /// findings. `n_sessions` is the writer's session count.
    pub fn check(&mut self, data: &Path, n_sessions: u64) -> anyhow::Result<()> {
        let store =
            SledStore::open(data, &SledOptions { cache_capacity_bytes: CHECK_CACHE_BYTES }).context("reopen failed")?;
        ensure!(store.quarantined().is_empty(), "quarantined sessions: {:?}", store.quarantined());
        ensure!(store.store_damage().is_empty(), "store damage: {:?}", store.store_damage());
        // The whole log against the index, every chain from genesis.
        let report = store.verify_all(&mut |_| {}).context("verify")?;
        ensure!(report.is_intact(), "verify: {:?} {:?}", report.log_errors, report.damaged().collect::<Vec<_>>());
        for n in 0..n_sessions {
            let session = crash_session(n);
            let records = read_all(&store, session)?;
            let report = verify_chain(Anchor::GENESIS, records.iter().map(Ok));
            ensure!(report.is_intact(), "{session}: {report:?}");
            for (idx, record) in records.iter().enumerate() {
                ensure!(record.seq() == Seq::new(idx as u64), "gap in {session} at {idx}");
            }
            if let Some(ack) = self.acked.get(&session) {
                let n_records = records.len() as u64;
                ensure!(
                    n_records >= ack.next.get(),
                    "{session} lost acknowledged records: has {n_records}, acked {}",
                    ack.next
                );
                let last = usize::try_from(ack.next.get()).ok().and_then(|next| next.checked_sub(1));
                let Some(acked) = last.and_then(|last| records.get(last)) else {
                    bail!("{session}: an acknowledgement of {} records", ack.next)
                };
                ensure!(acked.hash() == ack.hash, "{session}: the acknowledged hash differs");
            }
            if let Some(before) = self.seen.get(&session) {
                ensure!(records.len() >= before.len(), "{session} shrank");
                ensure!(records[..before.len()] == before[..], "{session} changed");
            }
            self.seen.insert(session, records);
        }
        let (kind, key) = CRASH_COUNTER;
        let counter = counter_value(store.get_resource(kind, key)?.as_deref())?;
        // The one write in flight at the crash may have become durable unacknowledged.
        ensure!(
            (self.counter_acked..=self.counter_acked + 1).contains(&counter) && counter >= self.counter_seen,
            "the counter holds {counter}; acknowledged {}, held {} at the last check",
            self.counter_acked,
            self.counter_seen
        );
        self.counter_seen = counter;
        self.counter_acked = self.counter_acked.max(counter);
        Ok(())
    }

    /// Records over all sessions at the last check.
    pub fn n_records(&self) -> usize {
        self.seen.values().map(Vec::len).sum()
    }

    /// The resource counter's value at the last check.
    pub fn counter(&self) -> u64 {
        self.counter_seen
    }
}

fn read_all(store: &SledStore, session: SessionId) -> anyhow::Result<Vec<Record>> {
    let mut out = Vec::new();
    loop {
        let batch = store.read(session, Seq::new(out.len() as u64), READ_CHUNK)?;
        if batch.is_empty() {
            return Ok(out);
        }
        out.extend(batch);
    }
}
