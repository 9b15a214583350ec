//! Durable append throughput: N writer threads over the corpus's sessions,
//! each append acknowledged only once durable, for the Logbook store and every
//! baseline, under the same driver.
//!
//! Writer `w` owns the sessions whose index is `w` modulo the number of
//! writers and appends to them round-robin, each at the seq it expects next
//! (it is their only writer, so there are no conflicts). A session's events
//! are the corpus's, cycled when a run goes past them. A run stops after
//! `max_events` events or `max_time`, whichever comes first, and reports
//! events per second from the moment all writers start to the moment the last
//! one returns.

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, ensure};
use logbook_core::Seq;
use logbook_store::{Append, MAX_LINGER, SledOptions, SledStore, WalOptions};

use crate::corpus::{Corpus, Prepared};
use crate::jsonl::JsonlLog;
use crate::raw::{RAW_BATCH, RawLog};
use crate::sqlite::{SqliteBatched, SqliteLog};

/// Bytes zeroed ahead in each file of [`System::RawStriped`].
const PREPARED_BYTES: u64 = 64 << 20;

/// What is appended to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    /// The physical limit: one thread appends exactly [`RAW_BATCH`] records per
    /// `write` + `fdatasync`, with no writers to hand records over (the
    /// writer count is ignored).
    RawLoop,
    /// [`crate::raw`]: writers hand records to a committer that `write`s and
    /// `fdatasync`s up to [`RAW_BATCH`] at a time.
    Raw,
    /// The same with this many committers, so that syncs overlap (a
    /// diagnostic: what overlapping `fdatasync`s of one file give).
    RawPipelined { depth: usize },
    /// Writers' records spread over this many files by session, each file with
    /// its own committer, each file zeroed ahead ([`RawLog::create_prepared`])
    /// as the store's segments are (a diagnostic: what a log striped over
    /// files would give; 1 stripe is the store's own layout).
    RawStriped { stripes: usize },
    /// [`crate::sqlite::SqliteLog`]: one transaction per event.
    Sqlite,
    /// [`crate::sqlite::SqliteBatched`]: up to 32 events per transaction.
    SqliteBatched,
    /// [`crate::jsonl`]: a file per session, `fdatasync` per event.
    Jsonl,
    /// The Logbook store on sled, `events_per_append` events per `append`.
    Logbook { events_per_append: usize },
    /// The same with the committer lingering (up to [`MAX_LINGER`]) for released writers.
    LogbookLinger { events_per_append: usize },
}

/// One configuration of a run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub label: String,
    pub system: System,
    pub writers: usize,
}

/// When a run stops.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_events: u64,
    pub max_time: Duration,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub label: String,
    pub events: u64,
    pub elapsed: Duration,
    /// Bytes the system holds on disk afterwards.
    pub disk_bytes: u64,
    /// Bytes the system was handed or wrote, before any filesystem or engine
    /// overhead (for the store: its framed, compressed values).
    pub logical_bytes: u64,
    /// Bytes of the JSONL lines of the same events (the size yardstick).
    pub json_bytes: u64,
    /// Commit batching: durability syncs (or transactions) and what they covered.
    pub n_syncs: u64,
    pub note: String,
}

impl RunResult {
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs `spec` over `corpus` in a fresh directory under `dir`.
pub fn run(spec: &RunSpec, corpus: &Corpus, limits: &Limits, dir: &Path) -> anyhow::Result<RunResult> {
    let sessions = &corpus.sessions;
    let bytes_of = |written: &[u64], size: &dyn Fn(&Prepared) -> usize| -> u64 {
        let mut total = 0u64;
        for (session, n) in sessions.iter().zip(written) {
            for idx in 0..*n {
                total += size(&session.events[idx as usize % session.events.len()]) as u64;
            }
        }
        total
    };
    match spec.system {
        System::RawLoop => {
            let path = dir.join("raw.log");
            let (events, elapsed, written, n_syncs) = raw_loop(corpus, limits, &path)?;
            Ok(RunResult {
                label: spec.label.clone(),
                events,
                elapsed,
                disk_bytes: std::fs::metadata(&path)?.len(),
                logical_bytes: bytes_of(&written, &|p| p.envelope.len() + 4),
                json_bytes: bytes_of(&written, &|p| p.json_line.len()),
                n_syncs,
                note: format!("{:.1} records per fdatasync", ratio(events, n_syncs)),
            })
        }
        System::Raw | System::RawPipelined { .. } => {
            let path = dir.join("raw.log");
            let log = match spec.system {
                System::RawPipelined { depth } => RawLog::create_pipelined(&path, depth)?,
                System::RawLoop
                | System::Raw
                | System::RawStriped { .. }
                | System::Sqlite
                | System::SqliteBatched
                | System::Jsonl
                | System::Logbook { .. }
                | System::LogbookLinger { .. } => RawLog::create(&path)?,
            };
            let (events, elapsed, written) = drive(corpus, spec.writers, 1, limits, |idx, seq, range| {
                let event = event_at(corpus, idx, range.start)?;
                log.append(Arc::clone(&event.envelope)).with_context(|| format!("raw append {idx}#{seq}"))
            })?;
            let stats = log.finish()?;
            Ok(RunResult {
                label: spec.label.clone(),
                events,
                elapsed,
                disk_bytes: std::fs::metadata(&path)?.len(),
                logical_bytes: bytes_of(&written, &|p| p.envelope.len() + 4),
                json_bytes: bytes_of(&written, &|p| p.json_line.len()),
                n_syncs: stats.n_batches,
                note: format!("{:.1} records per fdatasync", ratio(stats.n_items, stats.n_batches)),
            })
        }
        System::RawStriped { stripes } => {
            let logs: Vec<RawLog> = (0..stripes)
                .map(|i| RawLog::create_prepared(&dir.join(format!("raw{i}.log")), PREPARED_BYTES))
                .collect::<Result<_, _>>()?;
            let (events, elapsed, written) = drive(corpus, spec.writers, 1, limits, |idx, seq, range| {
                let event = event_at(corpus, idx, range.start)?;
                logs[idx % stripes]
                    .append(Arc::clone(&event.envelope))
                    .with_context(|| format!("raw append {idx}#{seq}"))
            })?;
            let (mut items, mut batches) = (0, 0);
            for log in logs {
                let stats = log.finish()?;
                items += stats.n_items;
                batches += stats.n_batches;
            }
            Ok(RunResult {
                label: spec.label.clone(),
                events,
                elapsed,
                // The files are prepared and reused round and round: what
                // was handed over is the only meaningful size.
                disk_bytes: bytes_of(&written, &|p| p.envelope.len() + 4),
                logical_bytes: bytes_of(&written, &|p| p.envelope.len() + 4),
                json_bytes: bytes_of(&written, &|p| p.json_line.len()),
                n_syncs: batches,
                note: format!("{:.1} records per fdatasync", ratio(items, batches)),
            })
        }
        System::Sqlite => {
            let path = dir.join("events.sqlite");
            let log = SqliteLog::open(&path)?;
            let (events, elapsed, written) = drive(corpus, spec.writers, 1, limits, |idx, seq, range| {
                let session = sessions[idx].session.to_bytes();
                log.append(&session, seq, &event_at(corpus, idx, range.start)?.json_line)
            })?;
            drop(log);
            Ok(RunResult {
                label: spec.label.clone(),
                events,
                elapsed,
                disk_bytes: sqlite_bytes(&path),
                logical_bytes: bytes_of(&written, &|p| p.json_line.len()),
                json_bytes: bytes_of(&written, &|p| p.json_line.len()),
                n_syncs: events,
                note: "1 event per transaction".to_owned(),
            })
        }
        System::SqliteBatched => {
            let path = dir.join("events.sqlite");
            let log = SqliteBatched::open(&path)?;
            let (events, elapsed, written) = drive(corpus, spec.writers, 1, limits, |idx, seq, range| {
                let session = sessions[idx].session.to_bytes();
                log.append(session, seq, Arc::clone(&event_at(corpus, idx, range.start)?.json_line))
            })?;
            let stats = log.finish()?;
            Ok(RunResult {
                label: spec.label.clone(),
                events,
                elapsed,
                disk_bytes: sqlite_bytes(&path),
                logical_bytes: bytes_of(&written, &|p| p.json_line.len()),
                json_bytes: bytes_of(&written, &|p| p.json_line.len()),
                n_syncs: stats.n_batches,
                note: format!("{:.1} events per transaction", ratio(stats.n_items, stats.n_batches)),
            })
        }
        System::Jsonl => {
            let log = JsonlLog::create(&dir.join("jsonl"), sessions.len())?;
            let (events, elapsed, written) = drive(corpus, spec.writers, 1, limits, |idx, _seq, range| {
                log.append(idx, &event_at(corpus, idx, range.start)?.json_line)
            })?;
            Ok(RunResult {
                label: spec.label.clone(),
                events,
                elapsed,
                disk_bytes: log.total_bytes()?,
                logical_bytes: bytes_of(&written, &|p| p.json_line.len()),
                json_bytes: bytes_of(&written, &|p| p.json_line.len()),
                n_syncs: events,
                note: "1 fdatasync per event".to_owned(),
            })
        }
        System::Logbook { events_per_append } | System::LogbookLinger { events_per_append } => {
            let wal = match spec.system {
                System::LogbookLinger { .. } => WalOptions { max_linger: MAX_LINGER, ..WalOptions::default() },
                System::RawLoop
                | System::Raw
                | System::RawPipelined { .. }
                | System::RawStriped { .. }
                | System::Sqlite
                | System::SqliteBatched
                | System::Jsonl
                | System::Logbook { .. } => WalOptions::default(),
            };
            let store = SledStore::open_with(&dir.join("logbook"), &SledOptions::default(), &wal)?;
            let (events, elapsed, written) =
                drive(corpus, spec.writers, events_per_append, limits, |idx, seq, range| {
                    let session = &sessions[idx];
                    let entries = session.entries.get(range).ok_or_else(|| anyhow!("batch out of range"))?;
                    store.append(session.session, Seq::new(seq), entries)?;
                    Ok(())
                })?;
            let stats = store.barrier_stats();
            Ok(RunResult {
                label: spec.label.clone(),
                events,
                elapsed,
                disk_bytes: store.stored_bytes()?,
                logical_bytes: bytes_of(&written, &|p| p.stored_len),
                json_bytes: bytes_of(&written, &|p| p.json_line.len()),
                n_syncs: stats.n_syncs,
                note: format!(
                    "{:.1} appends ({:.1} events) per barrier; {:.0} MiB allocated on disk",
                    ratio(stats.n_waits, stats.n_syncs),
                    ratio(events, stats.n_syncs),
                    store.size_on_disk()? as f64 / f64::from(1 << 20)
                ),
            })
        }
    }
}

/// [`System::RawLoop`]: batches of [`RAW_BATCH`] records taken round-robin from
/// the sessions, each written with one `write` and made durable with one `fdatasync`.
fn raw_loop(corpus: &Corpus, limits: &Limits, path: &Path) -> anyhow::Result<(u64, Duration, Vec<u64>, u64)> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new().create(true).write(true).truncate(true).open(path)?;
    std::fs::File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()?;
    let n_sessions = corpus.sessions.len();
    ensure!(n_sessions > 0, "empty corpus");
    let mut written = vec![0u64; n_sessions];
    let (mut events, mut n_syncs, mut turn) = (0u64, 0u64, 0usize);
    let mut buf = Vec::new();
    let start = Instant::now();
    while events < limits.max_events && start.elapsed() < limits.max_time {
        buf.clear();
        for _ in 0..RAW_BATCH {
            let idx = turn % n_sessions;
            turn += 1;
            let session = &corpus.sessions[idx];
            let record = &session.events[written[idx] as usize % session.events.len()].envelope;
            buf.extend_from_slice(&(record.len() as u32).to_le_bytes());
            buf.extend_from_slice(record);
            written[idx] += 1;
        }
        file.write_all(&buf)?;
        file.sync_data()?;
        events += RAW_BATCH as u64;
        n_syncs += 1;
    }
    Ok((events, start.elapsed(), written, n_syncs))
}

fn event_at(corpus: &Corpus, idx: usize, at: usize) -> anyhow::Result<&Prepared> {
    corpus.sessions.get(idx).and_then(|s| s.events.get(at)).ok_or_else(|| anyhow!("no event {idx}/{at}"))
}

fn ratio(a: u64, b: u64) -> f64 {
    a as f64 / (b as f64).max(1.0)
}

/// The database file plus its WAL.
fn sqlite_bytes(path: &Path) -> u64 {
    let wal = path.with_extension("sqlite-wal");
    [path, wal.as_path()].iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum()
}

/// Runs `writers` threads appending `batch` events at a time through `append(session
/// index, first seq, corpus index range)`. Returns the events appended, the time
/// taken and how many events each session received.
fn drive<F>(
    corpus: &Corpus,
    writers: usize,
    batch: usize,
    limits: &Limits,
    append: F,
) -> anyhow::Result<(u64, Duration, Vec<u64>)>
where
    F: Fn(usize, u64, Range<usize>) -> anyhow::Result<()> + Sync,
{
    let n_sessions = corpus.sessions.len();
    ensure!(writers >= 1 && n_sessions >= writers, "need at least one session per writer");
    ensure!(batch >= 1, "batch must be at least 1");
    for session in &corpus.sessions {
        ensure!(
            !session.events.is_empty() && session.events.len() % batch == 0,
            "each session's event count must be a multiple of the batch size {batch}"
        );
    }
    let claimed = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let start_line = Barrier::new(writers + 1);
    let append = &append;
    let (elapsed, results) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..writers)
            .map(|writer| {
                let (claimed, stop, start_line) = (&claimed, &stop, &start_line);
                scope.spawn(move || -> anyhow::Result<Vec<(usize, u64)>> {
                    let mine: Vec<usize> = (writer..n_sessions).step_by(writers).collect();
                    let mut next = vec![0u64; mine.len()];
                    start_line.wait();
                    let deadline = Instant::now() + limits.max_time;
                    let mut turn = 0usize;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        if claimed.fetch_add(batch as u64, Ordering::Relaxed) >= limits.max_events {
                            break;
                        }
                        let slot = turn % mine.len();
                        turn += 1;
                        let idx = mine[slot];
                        let seq = next[slot];
                        let len = corpus.sessions[idx].events.len();
                        let start = (seq as usize) % len;
                        if let Err(err) = append(idx, seq, start..start + batch) {
                            stop.store(true, Ordering::Relaxed);
                            return Err(err);
                        }
                        next[slot] += batch as u64;
                    }
                    Ok(mine.into_iter().zip(next).collect())
                })
            })
            .collect();
        start_line.wait();
        let start = Instant::now();
        let results: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
        (start.elapsed(), results)
    });
    let mut written = vec![0u64; n_sessions];
    for result in results {
        for (idx, n) in result.map_err(|_| anyhow!("a writer panicked"))?? {
            written[idx] = n;
        }
    }
    Ok((written.iter().sum(), elapsed, written))
}
