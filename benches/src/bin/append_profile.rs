//! The store's append path alone, for profilers: `writers` threads append the
//! corpus's events one per append (each writer owning its sessions, as in
//! the `durability` benchmark), and the process's CPU time per append is
//! printed next to the wall-clock rate. CPU time per append is what a
//! profiler (`valgrind --tool=callgrind`, `perf record`) breaks down, and it
//! is far less sensitive than the rate to other work on a shared machine.
//!
//! ```text
//! cargo build --release -p logbook-benches --bin append_profile
//! target/release/append_profile [mem|sled] [EVENTS] [WRITERS] [EVENTS_PER_APPEND]
//! valgrind --tool=callgrind target/release/append_profile mem 20000 1
//! ```

use std::time::Instant;

use anyhow::{Context, bail};
use logbook_benches::{Corpus, WorkloadConfig, scratch};
use logbook_core::Seq;
use logbook_store::{MemStore, SledOptions, SledStore, Store};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let engine = args.first().map_or("mem", String::as_str).to_owned();
    let n_events: u64 = args.get(1).map_or(Ok(50_000), |s| s.parse()).context("EVENTS")?;
    let writers: usize = args.get(2).map_or(Ok(1), |s| s.parse()).context("WRITERS")?;
    let batch: usize = args.get(3).map_or(Ok(1), |s| s.parse()).context("EVENTS_PER_APPEND")?;
    let corpus = Corpus::build(&WorkloadConfig::new(1, 100), 2)?;
    let dir = scratch::temp_dir()?;
    let cpu_before = cpu_seconds()?;
    let start = Instant::now();
    let stats = match engine.as_str() {
        "mem" => run(&MemStore::in_memory()?, &corpus, n_events, writers, batch)?,
        "sled" => {
            let store = SledStore::open(&dir.path().join("store"), &SledOptions::default())?;
            run(&store, &corpus, n_events, writers, batch)?;
            let stats = store.barrier_stats();
            (stats.n_syncs, stats.n_waits)
        }
        other => bail!("unknown engine {other:?}: mem or sled"),
    };
    let wall = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds()? - cpu_before;
    let n_appends = n_events / batch as u64;
    println!(
        "{engine}: {n_events} events in {n_appends} appends, {writers} writers: {wall:.2} s = {:.0} events/s; \
         CPU {cpu:.2} s = {:.1} µs per append ({:.2} cores busy); {} syncs for {} writes",
        n_events as f64 / wall,
        cpu * 1e6 / n_appends as f64,
        cpu / wall,
        stats.0,
        stats.1,
    );
    Ok(())
}

fn run<S: Store>(
    store: &S,
    corpus: &Corpus,
    n_events: u64,
    writers: usize,
    batch: usize,
) -> anyhow::Result<(u64, u64)> {
    let sessions = &corpus.sessions;
    let per_writer = n_events / writers as u64 / batch as u64;
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let handles: Vec<_> = (0..writers)
            .map(|writer| {
                scope.spawn(move || -> anyhow::Result<()> {
                    let mine: Vec<usize> = (writer..sessions.len()).step_by(writers).collect();
                    let mut next = vec![0u64; mine.len()];
                    for turn in 0..per_writer as usize {
                        let slot = turn % mine.len();
                        let session = &sessions[mine[slot]];
                        let start = (next[slot] as usize) % session.entries.len();
                        let entries = &session.entries[start..(start + batch).min(session.entries.len())];
                        store.append(session.session, Seq::new(next[slot]), entries)?;
                        next[slot] += entries.len() as u64;
                    }
                    Ok(())
                })
            })
            .collect();
        for handle in handles {
            handle.join().map_err(|_| anyhow::anyhow!("a writer panicked"))??;
        }
        Ok(())
    })?;
    Ok((0, 0))
}

/// User + system CPU time of this process so far, from `/proc/self/stat`.
fn cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).context("malformed /proc/self/stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of the whole line (utime, stime), in clock ticks.
    let utime: f64 = fields.get(11).context("utime")?.parse()?;
    let stime: f64 = fields.get(12).context("stime")?.parse()?;
    let ticks = 100.0; // USER_HZ on Linux.
    Ok((utime + stime) / ticks)
}
