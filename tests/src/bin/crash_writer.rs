//! A child process for the crash test: appends to a store from many threads
//! until it is killed, printing an `ack` line after every acknowledged append;
//! and one more thread counts up a resource by compare-and-swap, printing
//! `resource N` once the write of `N` was acknowledged.
//!
//! Usage: `crash-writer DATA_DIR N_SESSIONS WRITERS_PER_SESSION`. Writers of one
//! session race each other (optimistic appends with retry on conflict), so the
//! test exercises conflicts and group commit together. The log's segments are
//! small (`SEGMENT_BYTES`) and another thread checkpoints all the time, so that
//! kills also land during segment rollovers, segment preparation and
//! checkpoints.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use logbook_core::event::sample_events;
use logbook_core::{Entry, EventId, Timestamp};
use logbook_store::{Append, AppendError, Read, Resources, SledOptions, SledStore, WalOptions};
use logbook_tests::{Ack, CRASH_COUNTER, crash_session};

/// Segments of the crash test's log: a few appends fill one.
const SEGMENT_BYTES: u64 = 64 << 10;

/// A batch or checkpoint the store takes longer than this on fails the store
/// (and so this writer, which then exits with its error): half the
/// storage-fault test's deadline for a run, far above any healthy batch or
/// checkpoint even on a loaded CI machine (a false stall would fail the
/// crash tests, which expect the writer to die by SIGKILL).
const STALL_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Pause between the checkpointing thread's checkpoints (the stimulus, not a wait).
const CHECKPOINT_PAUSE: std::time::Duration = std::time::Duration::from_millis(3);

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, n_sessions, writers] = args.as_slice() else {
        anyhow::bail!("usage: crash-writer DATA_DIR N_SESSIONS WRITERS_PER_SESSION");
    };
    let dir = PathBuf::from(dir);
    let n_sessions: u64 = n_sessions.parse().context("N_SESSIONS")?;
    let writers: u64 = writers.parse().context("WRITERS_PER_SESSION")?;
    let wal = WalOptions { segment_bytes: SEGMENT_BYTES, stall_limit: STALL_LIMIT, ..WalOptions::default() };
    let store = Arc::new(SledStore::open_with(&dir, &SledOptions { cache_capacity_bytes: 16 << 20 }, &wal)?);
    println!("ready");
    // Nothing joins these threads (the process runs until it is killed), so
    // a thread that fails ends the process with its reason: the test then
    // sees an exit instead of the kill it sent.
    let fail = |what: &str, err: anyhow::Error| -> ! {
        eprintln!("crash-writer: {what} failed: {err:#}");
        std::process::exit(2);
    };
    let checkpointer = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            loop {
                if let Err(err) = store.checkpoint() {
                    fail("a checkpoint", err.into());
                }
                std::thread::sleep(CHECKPOINT_PAUSE);
            }
        })
    };
    let counter = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            let counted = (|| -> anyhow::Result<()> {
                let (kind, key) = CRASH_COUNTER;
                loop {
                    let current = store.get_resource(kind, key)?;
                    let n = logbook_tests::counter_value(current.as_deref())?;
                    if store.swap_resource(kind, key, current.as_deref(), Some(&(n + 1).to_le_bytes()))?.is_ok() {
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "resource {}", n + 1)?;
                        out.flush()?;
                    }
                }
            })();
            if let Err(err) = counted {
                fail("the resource counter", err);
            }
        })
    };
    let samples = Arc::new(sample_events());
    let mut handles = Vec::new();
    for n in 0..n_sessions {
        for w in 0..writers {
            let store = Arc::clone(&store);
            let samples = Arc::clone(&samples);
            handles.push(std::thread::spawn(move || {
                let written = (|| -> anyhow::Result<()> {
                    let session = crash_session(n);
                    let mut counter: u64 = w << 40;
                    loop {
                        counter += 1;
                        let n_events = 1 + (counter % 3) as usize;
                        let batch: Vec<Entry> = (0..n_events)
                            .map(|k| Entry {
                                id: EventId::from_parts(1_764_000_000_000, u128::from(counter) << 8 | k as u128),
                                event: samples[(counter as usize + k) % samples.len()].clone(),
                                at: Timestamp::from_unix_micros(1_764_000_000_000_000 + counter as i64),
                            })
                            .collect();
                        let head = store.head(session)?;
                        match store.append(session, head.next, &batch) {
                            Ok(records) => {
                                let last = records.last().context("append returned no records")?;
                                let ack = Ack {
                                    session,
                                    next: last.seq().next().context("seq overflow")?,
                                    hash: last.hash(),
                                };
                                let mut out = std::io::stdout().lock();
                                writeln!(out, "{ack}")?;
                                out.flush()?;
                            }
                            Err(AppendError::Conflict { .. }) => {}
                            Err(other) => return Err(other.into()),
                        }
                    }
                })();
                if let Err(err) = written {
                    fail("a writer", err);
                }
            }));
        }
    }
    // The threads end only by a panic (a failure exits the process).
    for handle in handles {
        handle.join().map_err(|_| anyhow::anyhow!("writer panicked"))?;
    }
    checkpointer.join().map_err(|_| anyhow::anyhow!("checkpointer panicked"))?;
    counter.join().map_err(|_| anyhow::anyhow!("resource counter panicked"))?;
    Ok(())
}
