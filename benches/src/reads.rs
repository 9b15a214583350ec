//! Reading the last 100 events of a session: the Logbook store against SQLite.
//!
//! [`ReadFixture::build`] loads the same events into a Logbook store (through
//! `append`, in batches) and into the SQLite baseline (its JSON, one
//! transaction per session). The store's read is `read_before(session, end,
//! 100)`: it returns records whose frames were decompressed, whose envelopes
//! were decoded and whose hashes and links were checked. SQLite's is
//! `SELECT bytes ... ORDER BY seq DESC LIMIT 100`: the stored JSON, unchecked.
//! [`ReadFixture::latencies`] interleaves the two, one read of each per
//! session drawn, so that machine noise hits both alike.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use logbook_core::{Entry, Record, Seq, SessionId};
use logbook_store::{Append, Read, SledOptions, SledStore};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::corpus::Corpus;
use crate::sqlite::{SqliteLog, SqliteReader};

/// Events per `append` while loading.
const LOAD_BATCH: usize = 200;

/// The same sessions in the Logbook store and in SQLite.
#[derive(Debug)]
pub struct ReadFixture {
    pub store: SledStore,
    pub sqlite: SqliteReader,
    pub sqlite_path: PathBuf,
    pub sessions: Vec<SessionId>,
    pub events_per_session: usize,
}

/// Latencies of one read each, in the order they ran.
#[derive(Debug, Clone, Default)]
pub struct ReadLatencies {
    /// `read_before` of the store.
    pub store: Vec<Duration>,
    /// `read_before`, then decoding every entry (what a server does next).
    pub store_decoded: Vec<Duration>,
    pub sqlite: Vec<Duration>,
}

impl ReadFixture {
    /// Loads `events_per_session` events per corpus session (cycling through
    /// the corpus's events) into both systems under `dir`.
    pub fn build(corpus: &Corpus, events_per_session: usize, dir: &Path) -> anyhow::Result<ReadFixture> {
        let store = SledStore::open(&dir.join("logbook"), &SledOptions::default())?;
        let sqlite_path = dir.join("events.sqlite");
        let sqlite_log = SqliteLog::open(&sqlite_path)?;
        let mut sessions = Vec::new();
        for session in &corpus.sessions {
            ensure!(!session.entries.is_empty(), "empty corpus session");
            let len = session.entries.len();
            let id = session.session;
            let mut seq = 0usize;
            while seq < events_per_session {
                let n = LOAD_BATCH.min(events_per_session - seq);
                let batch: Vec<Entry> = (seq..seq + n).map(|i| session.entries[i % len].clone()).collect();
                store.append(id, Seq::new(seq as u64), &batch).with_context(|| format!("loading {id}"))?;
                seq += n;
            }
            let key = id.to_bytes();
            sqlite_log.append_many(
                (0..events_per_session).map(|i| (&key, i as u64, &session.events[i % len].json_line[..])),
            )?;
            sessions.push(id);
        }
        drop(sqlite_log);
        let sqlite = SqliteReader::open(&sqlite_path)?;
        Ok(ReadFixture { store, sqlite, sqlite_path, sessions, events_per_session })
    }

    /// The last `n` records of `session` from the store.
    pub fn store_last(&self, session: SessionId, n: usize) -> anyhow::Result<Vec<Record>> {
        Ok(self.store.read_before(session, Seq::new(u64::MAX), n)?)
    }

    /// `n_reads` reads of the last `n` events of a random session, from each system.
    pub fn latencies(&self, n_reads: usize, n: usize, seed: u64) -> anyhow::Result<ReadLatencies> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut out = ReadLatencies::default();
        let expected = n.min(self.events_per_session);
        for _ in 0..n_reads {
            let session = self.sessions[rng.random_range(0..self.sessions.len())];
            let key = session.to_bytes();

            let start = Instant::now();
            let records = self.store_last(session, n)?;
            out.store.push(start.elapsed());
            ensure!(records.len() == expected, "store returned {} records", records.len());

            let start = Instant::now();
            let records = self.store_last(session, n)?;
            let entries = records.iter().map(Record::entry).collect::<Result<Vec<_>, _>>()?;
            out.store_decoded.push(start.elapsed());
            ensure!(entries.len() == expected, "store returned {} entries", entries.len());

            let start = Instant::now();
            let rows = self.sqlite.read_last(&key, n)?;
            out.sqlite.push(start.elapsed());
            ensure!(rows.len() == expected, "SQLite returned {} rows", rows.len());
        }
        Ok(out)
    }

    /// Every record of every session, in order.
    pub fn all_records(&self) -> anyhow::Result<Vec<Vec<Record>>> {
        let mut out = Vec::with_capacity(self.sessions.len());
        for session in &self.sessions {
            let mut records = Vec::with_capacity(self.events_per_session);
            while records.len() < self.events_per_session {
                let page = self.store.read(*session, Seq::new(records.len() as u64), 1000)?;
                ensure!(!page.is_empty(), "session {session} ends early");
                records.extend(page);
            }
            out.push(records);
        }
        Ok(out)
    }
}

/// The `q`-quantile (0..=1) of `samples` (nearest rank); zero when empty.
pub fn quantile(samples: &[Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
