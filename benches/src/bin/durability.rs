//! `durability`: the Logbook store against its baselines, side by side in one
//! run, printed as Markdown tables with ratios against the issue's targets.
//!
//! Sections (all by default; name some to run only those): `throughput`
//! (durable appends/s of the store, raw group commit, SQLite and JSONL under 16
//! writers over 100 sessions), `size` (stored bytes per event against JSONL),
//! `read` (latency of reading a session's last 100 events, store against
//! SQLite), `verify` (verification against raw blake3 over the same bytes),
//! `diag` (the store's append, read and scan costs broken down), `open`
//! (opening, then verifying, a store of many events), `fork` (forking a
//! session of 1k events against one of 1M), `codec` (zstd levels' speed, and
//! the bound decompression puts on any verifier of the stored log) and `dict`
//! (a trained zstd dictionary against plain zstd on small events). Sizes come
//! from `LOGBOOK_BENCH_*` environment variables; see `benches/README.md`.
//!
//! ```text
//! cargo run --release -p logbook-benches --bin durability [SECTION...]
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use logbook_benches::corpus::{Corpus, CorpusStats};
use logbook_benches::dict::{self, DictReport};
use logbook_benches::durable::{self, Limits, RunResult, RunSpec, System};
use logbook_benches::reads::{ReadFixture, quantile};
use logbook_benches::verify::{blake3_baseline, verify_in_memory, verify_store};
use logbook_benches::workload::WorkloadConfig;
use logbook_benches::{codec, diag};
use logbook_benches::{forks, open, scratch};
use logbook_core::verify::Depth;

const SECTIONS: &[&str] = &["throughput", "size", "read", "verify", "codec", "diag", "open", "fork", "dict"];

/// Sizes of the run, from the environment.
#[derive(Debug)]
struct Settings {
    seed: u64,
    corpus_events: usize,
    big_every: usize,
    /// Only throughput configurations whose label contains this.
    only: Option<String>,
    writers: usize,
    max_events: u64,
    max_time: Duration,
    rounds: usize,
    read_events: usize,
    reads: usize,
    open_events: u64,
    open_dir: Option<PathBuf>,
    fork_events: u64,
    forks: usize,
    threads: usize,
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        Ok(Settings {
            seed: env("LOGBOOK_BENCH_SEED", 1)?,
            corpus_events: env::<usize>("LOGBOOK_BENCH_CORPUS_EVENTS", 100)?.div_ceil(4) * 4,
            big_every: env("LOGBOOK_BENCH_BIG_EVERY", 50)?,
            only: std::env::var("LOGBOOK_BENCH_ONLY").ok(),
            writers: env("LOGBOOK_BENCH_WRITERS", 16)?,
            max_events: env("LOGBOOK_BENCH_EVENTS", 200_000)?,
            max_time: Duration::from_secs_f64(env("LOGBOOK_BENCH_SECONDS", 5.0)?),
            rounds: env("LOGBOOK_BENCH_ROUNDS", 2)?,
            read_events: env("LOGBOOK_BENCH_READ_EVENTS", 400)?,
            reads: env("LOGBOOK_BENCH_READS", 2000)?,
            open_events: env("LOGBOOK_BENCH_OPEN_EVENTS", 100_000)?,
            open_dir: std::env::var_os("LOGBOOK_BENCH_OPEN_DIR").map(PathBuf::from),
            fork_events: env("LOGBOOK_BENCH_FORK_EVENTS", 1_000_000)?,
            forks: env("LOGBOOK_BENCH_FORKS", 200)?,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        })
    }
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(text) => text.trim().parse().map_err(|err| anyhow::anyhow!("{name}={text:?}: {err}")),
        Err(_) => Ok(default),
    }
}

/// Everything measured, for the closing summary.
#[derive(Debug, Default)]
struct Findings {
    throughput: BTreeMap<String, Vec<RunResult>>,
    corpus: CorpusStats,
    read_p50: Option<(Duration, Duration)>,
    read_p50_small: Option<(Duration, Duration)>,
    verify: Vec<(String, f64)>,
    /// What decompressing and hashing alone allow a verifier of the stored
    /// log, over raw blake3 (the best round; `codec`).
    verify_bound: Option<f64>,
    open: Option<(u64, Vec<Duration>)>,
    /// Median over the rounds of the store's rate ÷ the raw limit, ÷ SQLite
    /// 1/txn (1 event/append), and 4 events/append ÷ the raw limit.
    round_ratios: Option<(f64, f64, f64)>,
    /// p50 of forking the small and the large parent, and of a 1-event append.
    fork_p50: Option<(u64, Duration, u64, Duration, Duration)>,
    /// Bytes on disk over the JSONL bytes of the same events, per measurement.
    disk_vs_jsonl: Vec<(String, f64)>,
}

fn main() -> anyhow::Result<()> {
    let wanted: Vec<String> = std::env::args().skip(1).collect();
    for name in &wanted {
        if !SECTIONS.contains(&name.as_str()) {
            bail!("unknown section {name:?}; sections: {}", SECTIONS.join(", "));
        }
    }
    let run = |section: &str| wanted.is_empty() || wanted.iter().any(|w| w == section);
    let settings = Settings::from_env()?;
    let base = scratch::base_dir()?;
    println!("# Logbook store benchmarks\n");
    println!(
        "scratch dir {} ({}), {} CPUs, settings {settings:?}\n",
        base.display(),
        scratch::filesystem_of(&base).unwrap_or_else(|| "?".to_owned()),
        settings.threads
    );

    let start = Instant::now();
    let config =
        WorkloadConfig { big_every: settings.big_every, ..WorkloadConfig::new(settings.seed, settings.corpus_events) };
    let corpus = Corpus::build(&config, settings.threads)?;
    let mut findings = Findings { corpus: corpus.stats(), ..Findings::default() };
    print_corpus(&corpus, start.elapsed());

    if run("throughput") {
        throughput(&settings, &corpus, &mut findings)?;
    }
    if run("size") || run("throughput") {
        size(&corpus);
    }
    if run("read") || run("verify") || run("diag") {
        read_and_verify(&settings, &corpus, run("read"), run("verify"), run("diag"), &mut findings)?;
    }
    if run("codec") {
        codec_section(&settings, &corpus, &mut findings)?;
    }
    if run("open") {
        open_section(&settings, &corpus, &mut findings)?;
    }
    if run("fork") {
        fork_section(&settings, &mut findings)?;
    }
    if run("dict") {
        dict_section(&settings, &corpus)?;
    }
    summary(&findings);
    println!("\ntotal time {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

fn print_corpus(corpus: &Corpus, took: Duration) {
    let stats = corpus.stats();
    let n = stats.n_events.max(1) as f64;
    println!("## Corpus\n");
    println!(
        "{} sessions × {} events = {} distinct events (generated in {:.1} s), {} of them ≥ 50 KiB.\n",
        corpus.sessions.len(),
        corpus.config.events_per_session,
        stats.n_events,
        took.as_secs_f64(),
        stats.n_big
    );
    println!("| form | bytes/event (mean) |\n|---|---:|");
    println!("| canonical (bincode, what the chain hashes) | {:.0} |", stats.canonical_bytes as f64 / n);
    println!("| record envelope (uncompressed) | {:.0} |", stats.envelope_bytes as f64 / n);
    println!(
        "| store's log entry (96 B header + canonical bytes, zstd level 1 when it pays) | {:.0} |",
        stats.stored_bytes as f64 / n
    );
    println!("| JSONL line | {:.0} |", stats.json_bytes as f64 / n);
    let mut sizes: Vec<usize> = corpus.sessions.iter().flat_map(|s| &s.events).map(|e| e.json_line.len()).collect();
    sizes.sort_unstable();
    let at = |q: f64| sizes.get(((q * sizes.len() as f64) as usize).min(sizes.len().saturating_sub(1))).copied();
    println!(
        "\nJSONL line size percentiles: p10 {:?}, p50 {:?}, p90 {:?}, p99 {:?}, max {:?} bytes.\n",
        at(0.1).unwrap_or(0),
        at(0.5).unwrap_or(0),
        at(0.9).unwrap_or(0),
        at(0.99).unwrap_or(0),
        sizes.last().copied().unwrap_or(0)
    );
}

const RAW_LIMIT: &str = "raw limit: 1 thread, write+fdatasync of 32 records";
const RAW_N: &str = "raw write+fdatasync, ≤32 records/sync";
const RAW_2: &str = "raw, ≤32 records/sync, 2 syncs in flight (diagnostic)";
const RAW_4: &str = "raw, ≤32 records/sync, 4 syncs in flight (diagnostic)";
const SQLITE: &str = "SQLite WAL FULL, 1 event/txn";
const LOGBOOK_1: &str = "Logbook, 1 event/append";
const LOGBOOK_4: &str = "Logbook, 4 events/append";

/// The configurations, the ones the targets compare run next to each other
/// so that the machine's load changes as little as possible between them.
fn specs(writers: usize) -> Vec<RunSpec> {
    let spec = |label: &str, system, writers| RunSpec { label: label.to_owned(), system, writers };
    vec![
        spec(RAW_LIMIT, System::RawLoop, 1),
        spec(LOGBOOK_1, System::Logbook { events_per_append: 1 }, writers),
        spec(SQLITE, System::Sqlite, writers),
        spec(LOGBOOK_4, System::Logbook { events_per_append: 4 }, writers),
        spec("Logbook, 1 event/append, lingering", System::LogbookLinger { events_per_append: 1 }, writers),
        spec(RAW_N, System::Raw, writers),
        spec(RAW_N, System::Raw, 32),
        spec(RAW_2, System::RawPipelined { depth: 2 }, writers),
        spec(RAW_4, System::RawPipelined { depth: 4 }, writers),
        spec("raw, 1 prepared file (diagnostic)", System::RawStriped { stripes: 1 }, writers),
        spec("raw, striped over 2 prepared files (diagnostic)", System::RawStriped { stripes: 2 }, writers),
        spec("raw, striped over 4 prepared files (diagnostic)", System::RawStriped { stripes: 4 }, writers),
        spec(RAW_N, System::Raw, 1),
        spec("raw, 1 prepared file (diagnostic)", System::RawStriped { stripes: 1 }, 1),
        spec("SQLite WAL FULL, ≤32 events/txn (group commit)", System::SqliteBatched, writers),
        spec("JSONL file/session, fdatasync/event", System::Jsonl, writers),
        spec(LOGBOOK_1, System::Logbook { events_per_append: 1 }, 32),
        spec(LOGBOOK_1, System::Logbook { events_per_append: 1 }, 1),
    ]
}

fn key(spec: &RunSpec) -> String {
    format!("{} | {}", spec.label, spec.writers)
}

fn throughput(settings: &Settings, corpus: &Corpus, findings: &mut Findings) -> anyhow::Result<()> {
    let limits = Limits { max_events: settings.max_events, max_time: settings.max_time };
    let mut specs = specs(settings.writers);
    if let Some(only) = &settings.only {
        specs.retain(|spec| spec.label.contains(only.as_str()));
    }
    println!("## Durable append throughput\n");
    println!(
        "Each configuration runs until {} events or {:.0} s, whichever comes first, {} rounds interleaved; \
         every acknowledged event is durable.\n",
        limits.max_events,
        limits.max_time.as_secs_f64(),
        settings.rounds
    );
    for round in 0..settings.rounds {
        for spec in &specs {
            let dir = scratch::temp_dir()?;
            let result = durable::run(spec, corpus, &limits, dir.path()).with_context(|| key(spec))?;
            eprintln!(
                "round {} {} ({} writers): {:.0} events/s, {}",
                round + 1,
                spec.label,
                spec.writers,
                result.events_per_sec(),
                result.note
            );
            findings.throughput.entry(key(spec)).or_default().push(result);
        }
    }
    // Noise (other work on the machine) only ever slows a run down, so the
    // best round is the estimate of each configuration's capacity.
    let best = |k: &str| -> f64 { findings.throughput.get(k).map_or(0.0, |runs| best_rate(runs)) };
    let n = settings.writers;
    let raw_limit = best(&format!("{RAW_LIMIT} | 1"));
    let raw_n = best(&format!("{RAW_N} | {n}"));
    let sqlite = best(&format!("{SQLITE} | {n}"));
    println!(
        "| configuration | writers | events/s per round | best | × raw limit | × raw ({} w) | × SQLite 1/txn | \
         batching | disk B/event | logical B/event | disk × JSONL |",
        settings.writers
    );
    println!("|---|---:|---|---:|---:|---:|---:|---|---:|---:|---:|");
    for spec in &specs {
        let k = key(spec);
        let Some(runs) = findings.throughput.get(&k) else { continue };
        let per_round: Vec<String> = runs.iter().map(|r| format!("{:.0}", r.events_per_sec())).collect();
        let m = best(&k);
        let last = runs.last();
        let events = last.map_or(1, |r| r.events.max(1)) as f64;
        println!(
            "| {} | {} | {} | **{:.0}** | {} | {} | {} | {} | {:.0} | {:.0} | {:.3} |",
            spec.label,
            spec.writers,
            per_round.join(" / "),
            m,
            ratio_to(m, raw_limit),
            ratio_to(m, raw_n),
            ratio_to(m, sqlite),
            last.map_or(String::new(), |r| r.note.clone()),
            last.map_or(0.0, |r| r.disk_bytes as f64 / events),
            last.map_or(0.0, |r| r.logical_bytes as f64 / events),
            last.map_or(0.0, |r| r.disk_bytes as f64 / r.json_bytes.max(1) as f64),
        );
        if let Some(run) = last.filter(|_| matches!(spec.system, System::Logbook { .. } | System::LogbookLinger { .. }))
        {
            findings.disk_vs_jsonl.push((
                format!("after the throughput run {} ({} writers)", spec.label, spec.writers),
                run.disk_bytes as f64 / run.json_bytes.max(1) as f64,
            ));
        }
    }
    println!();
    per_round_ratios(settings, findings);
    Ok(())
}

/// Ratios of the store to its baselines within each round (the runs a few
/// seconds apart), and their medians: steadier than ratios of best rounds
/// when other work on the machine comes and goes.
fn per_round_ratios(settings: &Settings, findings: &mut Findings) {
    let n = settings.writers;
    let rates = |k: String| -> Vec<f64> {
        findings.throughput.get(&k).map(|runs| runs.iter().map(RunResult::events_per_sec).collect()).unwrap_or_default()
    };
    let (one, four) = (rates(format!("{LOGBOOK_1} | {n}")), rates(format!("{LOGBOOK_4} | {n}")));
    let lingering = rates(format!("{LOGBOOK_1}, lingering | {n}"));
    let (limit, raw_n, sqlite) =
        (rates(format!("{RAW_LIMIT} | 1")), rates(format!("{RAW_N} | {n}")), rates(format!("{SQLITE} | {n}")));
    let ratio = |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(x, y)| x / y.max(1e-9)).collect() };
    let columns = [
        ("1 event/append ÷ raw limit", ratio(&one, &limit)),
        (&*format!("1 event/append ÷ raw ({n} w)"), ratio(&one, &raw_n)),
        ("1 event/append ÷ SQLite 1/txn", ratio(&one, &sqlite)),
        ("4 events/append ÷ raw limit", ratio(&four, &limit)),
        ("lingering ÷ raw limit", ratio(&lingering, &limit)),
    ]
    .map(|(name, values)| (name.to_owned(), values));
    if columns.iter().all(|(_, v)| v.is_empty()) {
        return;
    }
    println!("Logbook ({n} writers) against the baselines of the same round:\n");
    println!("| round | {} |", columns.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>().join(" | "));
    println!("|---|{}|", columns.iter().map(|_| "---:").collect::<Vec<_>>().join("|"));
    let n_rounds = columns.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    for round in 0..n_rounds {
        let cells: Vec<String> =
            columns.iter().map(|(_, v)| v.get(round).map_or("".to_owned(), |r| format!("{r:.2}"))).collect();
        println!("| {} | {} |", round + 1, cells.join(" | "));
    }
    let medians: Vec<f64> = columns.iter().map(|(_, v)| median(v)).collect();
    println!("| **median** | {} |\n", medians.iter().map(|m| format!("**{m:.2}**")).collect::<Vec<_>>().join(" | "));
    findings.round_ratios = Some((medians[0], medians[2], medians[3]));
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        len if len % 2 == 1 => sorted[len / 2],
        len => (sorted[len / 2 - 1] + sorted[len / 2]) / 2.0,
    }
}

fn size(corpus: &Corpus) {
    let stats = corpus.stats();
    let json = stats.json_bytes as f64;
    println!("## Stored bytes per event\n");
    println!("Over the corpus ({} events):\n", stats.n_events);
    println!("| form | bytes | × JSONL |\n|---|---:|---:|");
    println!("| JSONL | {} | 1.00 |", stats.json_bytes);
    println!("| canonical | {} | {:.3} |", stats.canonical_bytes, stats.canonical_bytes as f64 / json);
    println!("| record envelopes | {} | {:.3} |", stats.envelope_bytes, stats.envelope_bytes as f64 / json);
    println!("| store log entries (logical) | {} | {:.3} |", stats.stored_bytes, stats.stored_bytes as f64 / json);
    println!();
}

fn read_and_verify(
    settings: &Settings,
    corpus: &Corpus,
    read: bool,
    verify: bool,
    diag: bool,
    findings: &mut Findings,
) -> anyhow::Result<()> {
    let dir = scratch::temp_dir()?;
    let start = Instant::now();
    let fixture = ReadFixture::build(corpus, settings.read_events, dir.path())?;
    let n_events = settings.read_events * corpus.sessions.len();
    eprintln!("read fixture: {n_events} events loaded in {:.1} s", start.elapsed().as_secs_f64());
    // The same sessions without large tool outputs.
    let small_dir = scratch::temp_dir()?;
    let small_fixture = if read || diag {
        let small_corpus = Corpus::build(&WorkloadConfig { big_every: 0, ..corpus.config }, settings.threads)?;
        Some(ReadFixture::build(&small_corpus, settings.read_events, small_dir.path())?)
    } else {
        None
    };
    if read {
        println!("## Reading the last 100 events of a session\n");
        println!(
            "{} sessions × {} events, loaded into both systems; {} reads of a random session per round, \
             interleaved (store, store + entry decoding, SQLite). Then the same without large tool outputs \
             (a corpus with the same seed and no 50–500 KiB events).\n",
            corpus.sessions.len(),
            settings.read_events,
            settings.reads
        );
        println!(
            "| corpus | round | system | p50 | p90 | p99 | mean | SQLite p50 / this p50 |\n\
             |---|---|---|---:|---:|---:|---:|---:|"
        );
        let p50s = read_rounds(settings, &fixture, "with large outputs")?;
        findings.read_p50 = best_p50s(&p50s);
        let small = match &small_fixture {
            Some(small_fixture) => read_rounds(settings, small_fixture, "no large outputs")?,
            None => Vec::new(),
        };
        findings.read_p50_small = best_p50s(&small);
        println!();
    }
    if verify {
        let records = fixture.all_records()?;
        println!("## Verification throughput\n");
        println!(
            "Over the read fixture's {n_events} records ({:.1} MiB of canonical bytes); \
             throughput in MiB/s of canonical bytes.\n",
            records.iter().flatten().filter_map(|r| r.canonical()).map(|c| c.len()).sum::<usize>() as f64
                / (1 << 20) as f64
        );
        println!("| round | what | MiB/s | × raw blake3 |\n|---|---|---:|---:|");
        for round in 0..settings.rounds {
            let (bytes, blake) = blake3_baseline(&records);
            let mib = bytes as f64 / (1 << 20) as f64;
            let blake_rate = mib / blake.as_secs_f64();
            let links = mib / verify_in_memory(&records, Depth::Links)?.as_secs_f64();
            let entries = mib / verify_in_memory(&records, Depth::Entries)?.as_secs_f64();
            let (store_time, n_checked) = verify_store(&fixture.store)?;
            let store = mib / store_time.as_secs_f64();
            anyhow::ensure!(n_checked == n_events as u64, "verify_all checked {n_checked} records");
            for (what, rate) in [
                ("raw `blake3::hash` per record", blake_rate),
                ("`verify` in memory, links", links),
                ("`verify` in memory, links + entry decoding", entries),
                ("store `verify_all` (log scan, decompress, decode, verify, index cross-check)", store),
            ] {
                println!("| {} | {what} | {rate:.0} | {:.2} |", round + 1, rate / blake_rate);
            }
            let ratios = [("in memory, links", links / blake_rate), ("store verify_all", store / blake_rate)];
            if findings.verify.is_empty() {
                findings.verify = ratios.iter().map(|(what, _)| ((*what).to_owned(), 0.0)).collect();
            }
            for ((_, best), (_, ratio)) in findings.verify.iter_mut().zip(ratios) {
                *best = best.max(ratio);
            }
        }
        println!();
    }
    if let (true, Some(small_fixture)) = (diag, &small_fixture) {
        diagnostics(settings, corpus, &fixture, small_fixture)?;
    }
    Ok(())
}

fn diagnostics(settings: &Settings, corpus: &Corpus, fixture: &ReadFixture, small: &ReadFixture) -> anyhow::Result<()> {
    println!("## Diagnostics: where the store's time goes\n");
    let dir = scratch::temp_dir()?;
    let costs = diag::append_costs(corpus, 5000, dir.path())?;
    println!("Append path, one thread, no contention (means over the corpus's events):\n");
    println!("| operation | time |\n|---|---:|");
    println!(
        "| an append's work before any lock (canonical encoding, blake3, zstd when it pays), per event | {} |",
        nanos(costs.prepare)
    );
    println!(
        "| whole 1-event append over the memory engine (the above, sealing, batch copy, committer handoff, publication) | {} |",
        nanos(costs.mem_append)
    );
    println!(
        "| one batch of one event written to the log and made durable (`pwrite` + `fdatasync` of a segment) | {} |",
        nanos(costs.log_write)
    );
    println!("| 100 B `pwrite` + `fdatasync`, preallocated file | {} |", nanos(costs.fdatasync_prealloc));
    println!("| 4 KiB append + `fdatasync`, growing file (the raw baseline) | {} |", nanos(costs.fdatasync_append));
    println!(
        "\nSo the store's barrier is one log write ({}) against {} for the raw baseline's, and each append needs \
         about {} of CPU. Bounds for {} writers on {} cores: barrier-bound {:.0} appends/s (all {} writers in \
         every batch), CPU-bound {:.0} appends/s.\n",
        nanos(costs.log_write),
        nanos(costs.fdatasync_append),
        nanos(costs.mem_append),
        settings.writers,
        settings.threads,
        settings.writers as f64 / costs.log_write.as_secs_f64(),
        settings.writers,
        settings.threads as f64 / costs.mem_append.as_secs_f64(),
    );
    let stages = diag::read_stages(&fixture.store, &fixture.sessions, 100, 5)?;
    let small_stages = diag::read_stages(&small.store, &small.sessions, 100, 5)?;
    println!("Reading the last 100 records, cumulative stages (medians over {} reads):\n", 5 * fixture.sessions.len());
    println!("| stage | with large outputs | no large outputs |\n|---|---:|---:|");
    for (stage, a, b) in [
        ("`pread` of the 100 entries from the log", stages.read, small_stages.read),
        ("+ decompress bodies, build records", stages.decode, small_stages.decode),
        ("+ check each record's hash (blake3)", stages.hash, small_stages.hash),
        ("store `read_before`, tail cache emptied first", stages.store_cold, small_stages.store_cold),
        ("store `read_before`, from the tail cache", stages.store_cached, small_stages.store_cached),
    ] {
        println!("| {stage} | {} | {} |", micros(a), micros(b));
    }
    let scan = diag::scan_stages(&fixture.store)?;
    let mib = scan.canonical_bytes as f64 / (1 << 20) as f64;
    println!(
        "\nScanning the whole log of the read fixture ({} records, {mib:.1} MiB canonical), cumulative stages:\n",
        scan.n_records
    );
    println!("| stage | time | MiB/s canonical |\n|---|---:|---:|");
    for (stage, took) in [
        ("read every batch (checksums checked)", scan.scan),
        ("+ decompress every record", scan.decode),
        ("+ verify links (blake3 of each record)", scan.links),
        ("+ decode entries", scan.entries),
        ("store `verify_all` (the above, index cross-check, blobs)", scan.verify_all),
    ] {
        println!("| {stage} | {:.0} ms | {:.0} |", took.as_secs_f64() * 1e3, mib / took.as_secs_f64());
    }
    println!();
    Ok(())
}

fn fork_section(settings: &Settings, findings: &mut Findings) -> anyhow::Result<()> {
    println!("## Forking a session\n");
    // Small events: what a fork costs does not depend on their size, and a
    // parent of 1M small events builds in seconds.
    let config = WorkloadConfig { big_every: 0, ..WorkloadConfig::new(settings.seed, settings.corpus_events) };
    let corpus = Corpus::build(&config, settings.threads)?;
    let dir = scratch::temp_dir()?;
    let store = logbook_store::SledStore::open(&dir.path().join("store"), &logbook_store::SledOptions::default())?;
    let mut results = Vec::new();
    for (idx, n_events) in [1_000u64, settings.fork_events].into_iter().enumerate() {
        let parent = logbook_core::SessionId::from_parts(1_700_000_000_000 + idx as u64, u128::from(n_events));
        let took = forks::build_parent(&store, &corpus, parent, n_events)?;
        println!("parent of {n_events} events built in {:.1} s", took.as_secs_f64());
        results
            .push((n_events, forks::fork_times(&store, &corpus, parent, settings.forks, settings.seed + idx as u64)?));
    }
    println!(
        "\n{} forks of each parent at random seqs, each with one first event; after each, a read of the fork's last \
         100 records, and, as the baseline, a 1-event append to a session of its own (one group commit, as a fork \
         is). Durable when they return.\n",
        settings.forks
    );
    println!(
        "| parent | fork p50 | fork p90 | fork p99 | read of the fork's last 100, p50 | 1-event append p50 | fork / append |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for (n_events, times) in &results {
        let fork = quantile(&times.fork, 0.5);
        let append = quantile(&times.append, 0.5);
        println!(
            "| {n_events} events | {} | {} | {} | {} | {} | {:.2} |",
            micros(fork),
            micros(quantile(&times.fork, 0.9)),
            micros(quantile(&times.fork, 0.99)),
            micros(quantile(&times.read_after_fork, 0.5)),
            micros(append),
            fork.as_secs_f64() / append.as_secs_f64(),
        );
    }
    if let [(small_n, small), (large_n, large)] = results.as_slice() {
        let (small_p50, large_p50) = (quantile(&small.fork, 0.5), quantile(&large.fork, 0.5));
        println!(
            "\nFork p50 at {large_n} events / at {small_n} events = {:.2}.\n",
            large_p50.as_secs_f64() / small_p50.as_secs_f64()
        );
        let append = quantile(&large.append, 0.5).min(quantile(&small.append, 0.5));
        findings.fork_p50 = Some((*small_n, small_p50, *large_n, large_p50, append));
    }
    Ok(())
}

/// The lowest p50 of each system over the rounds.
fn best_p50s(p50s: &[(Duration, Duration)]) -> Option<(Duration, Duration)> {
    Some((p50s.iter().map(|p| p.0).min()?, p50s.iter().map(|p| p.1).min()?))
}

/// Warms both systems up, then runs the read rounds and prints their rows.
/// Returns each round's (store p50, SQLite p50).
fn read_rounds(settings: &Settings, fixture: &ReadFixture, corpus: &str) -> anyhow::Result<Vec<(Duration, Duration)>> {
    fixture.latencies(settings.reads.min(500), 100, settings.seed ^ 0xdead)?;
    let mut p50s = Vec::new();
    for round in 0..settings.rounds {
        let lat = fixture.latencies(settings.reads, 100, settings.seed + round as u64)?;
        let sqlite_p50 = quantile(&lat.sqlite, 0.5);
        for (name, samples) in [
            ("Logbook `read_before` (records, hashes checked)", &lat.store),
            ("Logbook `read_before` + decode entries", &lat.store_decoded),
            ("SQLite `ORDER BY seq DESC LIMIT 100`", &lat.sqlite),
        ] {
            let mean = samples.iter().sum::<Duration>() / samples.len().max(1) as u32;
            let p50 = quantile(samples, 0.5);
            println!(
                "| {corpus} | {} | {name} | {} | {} | {} | {} | {:.2} |",
                round + 1,
                micros(p50),
                micros(quantile(samples, 0.9)),
                micros(quantile(samples, 0.99)),
                micros(mean),
                sqlite_p50.as_secs_f64() / p50.as_secs_f64().max(1e-12)
            );
        }
        p50s.push((quantile(&lat.store, 0.5), sqlite_p50));
    }
    Ok(p50s)
}

fn open_section(settings: &Settings, corpus: &Corpus, findings: &mut Findings) -> anyhow::Result<()> {
    let temp;
    let dir = match &settings.open_dir {
        Some(dir) => dir.clone(),
        None => {
            temp = scratch::temp_dir()?;
            temp.path().join("store")
        }
    };
    println!("## Opening a large store\n");
    eprintln!("building or reusing a store of {} events in {}", settings.open_events, dir.display());
    let built = open::build_or_reuse(corpus, settings.open_events, &dir, settings.threads)?;
    match built.build_time {
        Some(took) => println!(
            "Built {} events in {:.1} s ({:.0} events/s, appends of up to 500 events on {} threads) in {}.\n",
            built.n_events,
            took.as_secs_f64(),
            built.n_events as f64 / took.as_secs_f64(),
            settings.threads,
            dir.display()
        ),
        None => println!("Reused the store of {} events in {}.\n", built.n_events, dir.display()),
    }
    // Cold opens (the store's files evicted from the page cache), then warm ones.
    let mut opens = Vec::new();
    let mut lock_waits = Vec::new();
    let (mut size_on_disk, mut stored) = (0, 0);
    for cold in [true, true, true, false, false, false] {
        if cold {
            // A closed store's files are clean; wait for sled to let go of them first.
            drop(open::time_open(&dir)?);
            std::thread::sleep(Duration::from_millis(200));
            open::drop_page_cache(&dir)?;
        }
        let opened = open::time_open(&dir)?;
        size_on_disk = opened.store.size_on_disk()?;
        stored = opened.store.stored_bytes()?;
        opens.push((cold, opened.took));
        lock_waits.push(opened.lock_wait);
    }
    let opened = open::time_open(&dir)?;
    let (verify_time, n_checked) = verify_store(&opened.store)?;
    drop(opened);
    let json = built.json_bytes as f64;
    println!("| measurement | value |\n|---|---:|");
    println!("| events | {} |", built.n_events);
    let list = |cold: bool| -> String {
        let ms: Vec<String> =
            opens.iter().filter(|o| o.0 == cold).map(|o| format!("{:.0} ms", o.1.as_secs_f64() * 1e3)).collect();
        ms.join(" / ")
    };
    println!("| open, store's files dropped from the page cache first | {} |", list(true));
    println!("| open, page cache warm | {} |", list(false));
    let waits: Vec<String> = lock_waits.iter().map(|d| format!("{:.0} ms", d.as_secs_f64() * 1e3)).collect();
    println!("| wait for sled's file lock before each open (not counted above) | {} |", waits.join(" / "));
    println!(
        "| `verify_all` | {:.1} s ({:.0} records/s, {:.0} MiB/s canonical) |",
        verify_time.as_secs_f64(),
        n_checked as f64 / verify_time.as_secs_f64(),
        built.canonical_bytes as f64 / (1 << 20) as f64 / verify_time.as_secs_f64()
    );
    println!(
        "| `stored_bytes` (the log up to its end, sled) | {:.1} MiB = {:.0} B/event = {:.3} × JSONL |",
        stored as f64 / (1 << 20) as f64,
        stored as f64 / built.n_events as f64,
        stored as f64 / json
    );
    println!(
        "| `size_on_disk` (with the segment prepared ahead) | {:.1} MiB = {:.0} B/event = {:.3} × JSONL |",
        size_on_disk as f64 / (1 << 20) as f64,
        size_on_disk as f64 / built.n_events as f64,
        size_on_disk as f64 / json
    );
    println!(
        "| store log entries (logical) | {:.0} B/event = {:.3} × JSONL |",
        built.stored_bytes as f64 / built.n_events as f64,
        built.stored_bytes as f64 / json
    );
    println!("| JSONL of the same events | {:.0} B/event |", json / built.n_events as f64);
    println!();
    findings.disk_vs_jsonl.push((format!("store of {} events", built.n_events), stored as f64 / json));
    findings.open = Some((built.n_events, opens.iter().map(|o| o.1).collect()));
    Ok(())
}

fn codec_section(settings: &Settings, corpus: &Corpus, findings: &mut Findings) -> anyhow::Result<()> {
    println!("## zstd levels and the bound on verifying the stored log\n");
    println!(
        "One thread, the corpus's canonical bytes, values compressed as the store does; \"bound\" is what {} cores \
         doing nothing but decompress and hash could reach, over raw blake3 (see `benches/src/codec.rs`).\n",
        settings.threads
    );
    let mut reports = Vec::with_capacity(settings.rounds);
    for round in 0..settings.rounds {
        let report = codec::measure(corpus, 3)?;
        println!(
            "Round {}: {:.0} MiB of canonical bytes, blake3 {:.0} MiB/s.\n",
            round + 1,
            report.canonical_mib,
            report.blake3_mib_s
        );
        println!("| zstd level | stored ÷ canonical | compress MiB/s | decompress MiB/s | bound × raw blake3 |");
        println!("|---:|---:|---:|---:|---:|");
        for row in &report.rows {
            println!(
                "| {}{} | {:.3} | {:.0} | {:.0} | {:.2} |",
                row.level,
                if row.level == logbook_store::frame::ZSTD_LEVEL { " (the store's)" } else { "" },
                row.stored_ratio,
                row.compress_mib_s,
                row.decompress_mib_s,
                report.bound(row, settings.threads)
            );
        }
        println!();
        reports.push(report);
    }
    // Noise only slows a pass down: the bound takes each speed's best round.
    if let Some(best) = codec::best_of(&reports) {
        for row in &best.rows {
            if row.level == logbook_store::frame::ZSTD_LEVEL {
                let bound = best.bound(row, settings.threads);
                println!(
                    "Best rounds: blake3 {:.0} MiB/s, the store's level decompresses at {:.0} MiB/s: bound {bound:.2} × \
                     raw blake3.\n",
                    best.blake3_mib_s, row.decompress_mib_s
                );
                findings.verify_bound = Some(bound);
            }
        }
    }
    Ok(())
}

fn dict_section(settings: &Settings, corpus: &Corpus) -> anyhow::Result<()> {
    let start = Instant::now();
    let train_config = WorkloadConfig::new(settings.seed.wrapping_add(1_000_003), settings.corpus_events);
    let train = Corpus::build(&train_config, settings.threads)?;
    eprintln!("training corpus built in {:.1} s", start.elapsed().as_secs_f64());
    println!("## zstd dictionary on small events\n");
    println!(
        "Dictionary trained on the record envelopes < {} KiB of a corpus with seed {}, measured on those of the \
         main corpus (seed {}).\n",
        dict::SMALL_MAX / 1024,
        train_config.seed,
        settings.seed
    );
    for dict_size in [64 * 1024, 16 * 1024] {
        for round in 0..settings.rounds {
            let report = dict::measure(&train, corpus, dict_size)?;
            print_dict(&report, dict_size, round + 1);
        }
    }
    Ok(())
}

fn print_dict(report: &DictReport, dict_size: usize, round: usize) {
    println!(
        "### {} KiB dictionary, round {round} ({} bytes, trained on {} samples in {:.2} s)\n",
        dict_size / 1024,
        report.dict_bytes,
        report.n_training_samples,
        report.training_time.as_secs_f64()
    );
    println!(
        "| envelope size | events | raw B | store today (zstd-1) B (× raw) | zstd-3 every value | zstd-3 + dict every value | \
         dict where it saves (× store today) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for row in report.classes.iter().chain(std::iter::once(&report.total)) {
        let raw = row.raw.max(1) as f64;
        let label = if row.low == 0 && row.high == dict::SMALL_MAX {
            "**all small**".to_owned()
        } else {
            format!("{}–{} B", row.low, row.high)
        };
        println!(
            "| {label} | {} | {} | {} ({:.3}) | {} ({:.3}) | {} ({:.3}) | {} ({:.3}) |",
            row.n_events,
            row.raw,
            row.store,
            row.store as f64 / raw,
            row.zstd,
            row.zstd as f64 / raw,
            row.dict,
            row.dict as f64 / raw,
            row.dict_policy,
            row.dict_policy as f64 / row.store.max(1) as f64
        );
    }
    let saved = report.total.store.saturating_sub(report.total.dict_policy);
    println!(
        "\nSmall events are {:.1}% of the bytes the store writes for the whole corpus (large outputs included); \
         the dictionary would save {saved} bytes, {:.1}% of the whole corpus's stored bytes.",
        100.0 * report.total.store as f64 / report.corpus_store_bytes.max(1) as f64,
        100.0 * saved as f64 / report.corpus_store_bytes.max(1) as f64
    );
    let t = &report.timings;
    println!("\n| per event | compress | decompress |\n|---|---:|---:|");
    println!("| store today (`frame::encode`/`decode`) | {} | {} |", nanos(t.store_encode), nanos(t.store_decode));
    println!("| zstd-3, reused context | {} | {} |", nanos(t.zstd_compress), nanos(t.zstd_decompress));
    println!("| zstd-3 + dict, reused context | {} | {} |", nanos(t.dict_compress), nanos(t.dict_decompress));
    println!();
}

fn summary(findings: &Findings) {
    println!("## Targets\n");
    println!("| target | measured | verdict |\n|---|---|---|");
    let best = |label: &str, writers: usize| -> Option<f64> {
        Some(best_rate(findings.throughput.get(&format!("{label} | {writers}"))?))
    };
    let writers = findings
        .throughput
        .keys()
        .filter(|k| k.starts_with("SQLite WAL FULL, 1 event/txn"))
        .filter_map(|k| k.rsplit(' ').next())
        .find_map(|w| w.parse().ok())
        .unwrap_or(16);
    let verdict = |ok: bool| if ok { "met" } else { "**not met**" };
    if let (Some(raw_limit), Some(raw_n), Some(sqlite), Some(one), Some(four)) = (
        best(RAW_LIMIT, 1),
        best(RAW_N, writers),
        best(SQLITE, writers),
        best(LOGBOOK_1, writers),
        best(LOGBOOK_4, writers),
    ) {
        println!(
            "| durable appends/s ≥ 0.6 × raw group commit (1 event/append, {writers} writers) | {one:.0}/s = {:.2} × the \
             raw limit ({raw_limit:.0}/s), {:.2} × raw with {writers} writers ({raw_n:.0}/s) | {} |",
            one / raw_limit,
            one / raw_n,
            verdict(one / raw_limit >= 0.6)
        );
        println!(
            "| same, 4 events/append | {four:.0} events/s = {:.2} × raw limit, {:.2} × raw ({writers} w) | {} |",
            four / raw_limit,
            four / raw_n,
            verdict(four / raw_limit >= 0.6)
        );
        println!(
            "| durable appends/s ≥ 3 × SQLite FULL per event | {one:.0}/s vs {sqlite:.0}/s = {:.2} × | {} |",
            one / sqlite,
            verdict(one / sqlite >= 3.0)
        );
    }
    if let Some((limit, sqlite, four)) = findings.round_ratios {
        println!(
            "| same targets, median of the per-round ratios | 1 event/append: {limit:.2} × the raw limit, {sqlite:.2} × \
             SQLite 1/txn; 4 events/append: {four:.2} × the raw limit | {} / {} / {} |",
            verdict(limit >= 0.6),
            verdict(sqlite >= 3.0),
            verdict(four >= 0.6)
        );
    }
    if let Some((store, sqlite)) = findings.read_p50 {
        let ratio = sqlite.as_secs_f64() / store.as_secs_f64().max(1e-12);
        println!(
            "| read last 100: p50 ≥ 2 × faster than SQLite | store {} vs SQLite {} = {ratio:.2} × faster | {} |",
            micros(store),
            micros(sqlite),
            verdict(ratio >= 2.0)
        );
    }
    if let Some((store, sqlite)) = findings.read_p50_small {
        let ratio = sqlite.as_secs_f64() / store.as_secs_f64().max(1e-12);
        println!(
            "| same, corpus without large outputs | store {} vs SQLite {} = {ratio:.2} × faster | {} |",
            micros(store),
            micros(sqlite),
            verdict(ratio >= 2.0)
        );
    }
    for (what, ratio) in &findings.verify {
        println!("| verify ≥ 0.5 × raw blake3 ({what}) | {ratio:.2} × | {} |", verdict(*ratio >= 0.5));
    }
    if let Some(bound) = findings.verify_bound {
        println!(
            "| (bound) verifying the stored log: decompress + blake3 alone, every core, perfect scaling | {bound:.2} × \
             raw blake3 | {} |",
            if bound >= 0.5 { "the target is within reach" } else { "the target is out of reach with this codec" }
        );
    }
    let corpus = &findings.corpus;
    if corpus.json_bytes > 0 {
        let ratio = corpus.stored_bytes as f64 / corpus.json_bytes as f64;
        println!(
            "| stored bytes/event ≤ 0.5 × JSONL (store log entries, logical) | {ratio:.3} × | {} |",
            verdict(ratio <= 0.5)
        );
    }
    for (what, ratio) in &findings.disk_vs_jsonl {
        println!(
            "| stored bytes/event ≤ 0.5 × JSONL (`stored_bytes`, {what}) | {ratio:.3} × | {} |",
            verdict(*ratio <= 0.5)
        );
    }
    if let Some((n, opens)) = &findings.open {
        let worst = opens.iter().max().copied().unwrap_or_default();
        println!(
            "| open a store of 1M events ≤ 2 s | {} events: worst of {} opens {:.0} ms | {}{} |",
            n,
            opens.len(),
            worst.as_secs_f64() * 1e3,
            verdict(worst <= Duration::from_secs(2)),
            if *n < 1_000_000 { " (fewer than 1M events: not the target's size)" } else { "" }
        );
    }
    if let Some((small_n, small, large_n, large, append)) = findings.fork_p50 {
        println!(
            "| fork ≤ 5 ms, the same at 1k and 1M events | p50 {} at {small_n} events, {} at {large_n} events \
             ({:.2} ×); a 1-event append: {} | {} |",
            micros(small),
            micros(large),
            large.as_secs_f64() / small.as_secs_f64(),
            micros(append),
            verdict(large <= Duration::from_millis(5) && large.as_secs_f64() / small.as_secs_f64() < 1.5)
        );
    }
}

/// `rate ÷ baseline`, or a dash when the baseline did not run (`LOGBOOK_BENCH_ONLY`).
fn ratio_to(rate: f64, baseline: f64) -> String {
    if baseline > 0.0 { format!("{:.2}", rate / baseline) } else { "–".to_owned() }
}

/// The highest events/s of a configuration's rounds.
fn best_rate(runs: &[RunResult]) -> f64 {
    runs.iter().map(RunResult::events_per_sec).fold(0.0, f64::max)
}

fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn nanos(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}
