//! A generated workload with every form the benchmarks write precomputed.
//!
//! For each event: the [`Entry`] (what the Logbook store appends), its JSONL
//! line (what the JSONL and SQLite baselines write), its record envelope sealed
//! at its seq (what the raw baseline writes: the record before compression)
//! and the size of the store's log entry for it. Computing
//! them up front keeps serialization out of the timed loops of the baselines;
//! the store serializes inside `append`, as it must.

use std::sync::Arc;

use logbook_core::{Entry, Record, Seq, SessionId, chain};
use logbook_store::{frame, wal};

use crate::workload::{self, WorkloadConfig};

/// One event in every form but the [`Entry`], which [`PreparedSession::entries`] holds.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The JSONL line, newline included.
    pub json_line: Arc<[u8]>,
    /// The record envelope (uncompressed) at the event's seq in its session.
    pub envelope: Arc<[u8]>,
    pub canonical_len: usize,
    /// Bytes of the store's log entry for the record: its fixed header and the
    /// canonical bytes, compressed when that pays.
    pub stored_len: usize,
}

/// One session's prepared events.
#[derive(Debug, Clone)]
pub struct PreparedSession {
    pub session: SessionId,
    /// The entries, contiguous so that a run of them can be appended at once.
    pub entries: Vec<Entry>,
    /// `events[i]` is `entries[i]` in the other forms.
    pub events: Vec<Prepared>,
}

/// A prepared workload.
#[derive(Debug, Clone)]
pub struct Corpus {
    pub config: WorkloadConfig,
    pub sessions: Vec<PreparedSession>,
}

/// Byte totals over a corpus.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CorpusStats {
    pub n_events: u64,
    /// Events of at least 50 KiB canonical.
    pub n_big: u64,
    pub canonical_bytes: u64,
    pub envelope_bytes: u64,
    pub stored_bytes: u64,
    pub json_bytes: u64,
}

impl Corpus {
    /// Generates and prepares `config` on up to `threads` threads.
    pub fn build(config: &WorkloadConfig, threads: usize) -> anyhow::Result<Corpus> {
        let logs = workload::generate(config, threads);
        let threads = threads.max(1);
        let per_thread = logs.len().div_ceil(threads).max(1);
        let mut sessions = Vec::with_capacity(logs.len());
        std::thread::scope(|scope| -> anyhow::Result<()> {
            let handles: Vec<_> =
                logs.chunks(per_thread).map(|chunk| scope.spawn(move || chunk.iter().map(prepare).collect())).collect();
            for handle in handles {
                let prepared: anyhow::Result<Vec<PreparedSession>> =
                    handle.join().map_err(|_| anyhow::anyhow!("a preparing thread panicked"))?;
                sessions.extend(prepared?);
            }
            Ok(())
        })?;
        Ok(Corpus { config: *config, sessions })
    }

    pub fn n_events(&self) -> usize {
        self.sessions.iter().map(|s| s.events.len()).sum()
    }

    pub fn stats(&self) -> CorpusStats {
        let mut stats = CorpusStats::default();
        for event in self.sessions.iter().flat_map(|s| &s.events) {
            stats.n_events += 1;
            stats.n_big += u64::from(event.canonical_len >= 50 * 1024);
            stats.canonical_bytes += event.canonical_len as u64;
            stats.envelope_bytes += event.envelope.len() as u64;
            stats.stored_bytes += event.stored_len as u64;
            stats.json_bytes += event.json_line.len() as u64;
        }
        stats
    }
}

fn prepare(log: &workload::SessionLog) -> anyhow::Result<PreparedSession> {
    let mut prev = chain::GENESIS;
    let mut events = Vec::with_capacity(log.entries.len());
    for (idx, entry) in log.entries.iter().enumerate() {
        let canonical = entry.to_canonical()?;
        let canonical_len = canonical.len();
        let record = Record::from_canonical(log.session, Seq::new(idx as u64), prev, canonical);
        prev = record.hash();
        let envelope = record.to_envelope()?;
        let mut body = Vec::new();
        frame::compress(record.canonical().unwrap_or_default(), &mut body);
        let stored_len = wal::RECORD_HEADER_BYTES + body.len();
        let mut line = workload::jsonl_line(log.session, entry)?.into_bytes();
        line.push(b'\n');
        events.push(Prepared { json_line: line.into(), envelope: envelope.into(), canonical_len, stored_len });
    }
    Ok(PreparedSession { session: log.session, entries: log.entries.clone(), events })
}
