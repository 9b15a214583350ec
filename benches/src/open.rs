//! A large store for the open-time and whole-store verification measurements.
//!
//! [`build_or_reuse`] fills a store with `n_events` events over the corpus's
//! sessions, cycling through each session's corpus events, in large batched
//! appends on a few threads. Building a million events takes minutes, so a
//! directory given by the caller is kept and reused by later runs when the
//! marker file in it names the same seed, corpus and event count.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use logbook_core::{Entry, Seq};
use logbook_store::{Append, SledOptions, SledStore};

use crate::corpus::Corpus;

/// Most events per append while building.
const BUILD_BATCH: usize = 500;
/// Most canonical bytes per append while building (the store allows 64 MiB).
const BUILD_BATCH_BYTES: usize = 32 << 20;
const MARKER: &str = "bench-open.txt";

/// What the large store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OpenStore {
    pub n_events: u64,
    /// `None` when an earlier run's store was reused.
    pub build_time: Option<Duration>,
    pub canonical_bytes: u64,
    pub stored_bytes: u64,
    pub json_bytes: u64,
}

/// Builds the store in `dir` (which must be empty or hold a matching earlier
/// build) with `n_events` events, or reuses the earlier build.
pub fn build_or_reuse(corpus: &Corpus, n_events: u64, dir: &Path, threads: usize) -> anyhow::Result<OpenStore> {
    let n_sessions = corpus.sessions.len().max(1);
    let per_session = n_events.div_ceil(n_sessions as u64) as usize;
    let marker = format!(
        "seed={} corpus_events_per_session={} sessions={} events_per_session={}\n",
        corpus.config.seed, corpus.config.events_per_session, n_sessions, per_session
    );
    let mut out = OpenStore::default();
    for session in &corpus.sessions {
        for idx in 0..per_session {
            let event = &session.events[idx % session.events.len()];
            out.n_events += 1;
            out.canonical_bytes += event.canonical_len as u64;
            out.stored_bytes += event.stored_len as u64;
            out.json_bytes += event.json_line.len() as u64;
        }
    }
    let marker_path = dir.join(MARKER);
    if std::fs::read_to_string(&marker_path).ok().as_deref() == Some(marker.as_str()) {
        return Ok(out);
    }
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!("{} is not empty and holds no matching build; give an empty or new directory", dir.display());
    }
    let start = Instant::now();
    let store = SledStore::open(dir, &SledOptions::default())?;
    let threads = threads.clamp(1, n_sessions);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let store = &store;
                scope.spawn(move || -> anyhow::Result<()> {
                    for session in corpus.sessions.iter().skip(thread).step_by(threads) {
                        let len = session.entries.len();
                        let mut seq = 0usize;
                        while seq < per_session {
                            let mut batch: Vec<Entry> = Vec::with_capacity(BUILD_BATCH);
                            let mut bytes = 0usize;
                            while seq + batch.len() < per_session && batch.len() < BUILD_BATCH {
                                let idx = (seq + batch.len()) % len;
                                bytes += session.events[idx].canonical_len;
                                if bytes > BUILD_BATCH_BYTES && !batch.is_empty() {
                                    break;
                                }
                                batch.push(session.entries[idx].clone());
                            }
                            store
                                .append(session.session, Seq::new(seq as u64), &batch)
                                .with_context(|| format!("building {}", session.session))?;
                            seq += batch.len();
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for handle in handles {
            handle.join().map_err(|_| anyhow::anyhow!("a building thread panicked"))??;
        }
        Ok(())
    })?;
    drop(store);
    out.build_time = Some(start.elapsed());
    std::fs::write(&marker_path, marker)?;
    Ok(out)
}

/// Asks the kernel to drop its cached pages of every file under `dir`, so that
/// the next open reads from disk. Uses GNU `dd iflag=nocache count=0`, which
/// calls `posix_fadvise(POSIX_FADV_DONTNEED)` on the whole file; other files'
/// caches are left alone. The files must be clean (synced), as a store's are
/// once it is closed.
pub fn drop_page_cache(dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            drop_page_cache(&path)?;
        } else {
            let status = std::process::Command::new("dd")
                .arg(format!("if={}", path.display()))
                .args(["iflag=nocache", "count=0", "status=none"])
                .status()
                .context("running dd to drop the page cache")?;
            if !status.success() {
                bail!("dd iflag=nocache failed on {}", path.display());
            }
        }
    }
    Ok(())
}

/// How long [`time_open`] waits for an earlier handle's file lock.
const LOCK_WAIT: Duration = Duration::from_secs(60);

/// An open that succeeded, and what it took.
#[derive(Debug)]
pub struct Opened {
    pub store: SledStore,
    /// The successful `open` call.
    pub took: Duration,
    /// Time spent before it waiting for sled's file lock to be released.
    pub lock_wait: Duration,
}

/// Opens the store in `dir`, timing the successful `open` call.
///
/// sled releases its file lock only when its background threads let go of
/// the database, which can be well after the last handle was dropped when a
/// large store was just written; an `open` before then fails with
/// `WouldBlock`. Such failures are retried for up to a minute and reported as
/// [`Opened::lock_wait`], not counted as open time.
pub fn time_open(dir: &Path) -> anyhow::Result<Opened> {
    let first = Instant::now();
    loop {
        let start = Instant::now();
        match SledStore::open(dir, &SledOptions::default()) {
            Ok(store) => return Ok(Opened { store, took: start.elapsed(), lock_wait: start - first }),
            Err(err) if err.to_string().contains("could not acquire lock") && first.elapsed() < LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(err) => return Err(err.into()),
        }
    }
}
