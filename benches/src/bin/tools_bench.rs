//! The server-side file tools (`logbook_server::tools::run`) against the
//! same work done without confinement, in one run, as ratios.
//!
//! Usage (as root: the tools `fchown` what they create to the sandbox user):
//! `cargo run --release -p logbook-benches --bin tools_bench`. Env:
//! `LOGBOOK_TOOLS_FILES` (files in the workspace, default 2000),
//! `LOGBOOK_TOOLS_ITERATIONS` (calls per small operation, default 2000; the
//! walks run a tenth as often).
//!
//! Each tool call goes through `run` exactly as the runner calls it (input
//! parsing, the enabled check, the blocking pool, the confined opens, the
//! result text). Each baseline does the same work the plain way on host
//! paths: `std::fs` for read/write/edit, ripgrep's own walker (`ignore`, path
//! based, hidden files included, `.gitignore` honoured) with `globset` and
//! `grep-searcher` for glob and grep. Tool and baseline calls alternate, so
//! both see the same machine. A last pair isolates the confinement itself:
//! `openat2(RESOLVE_BENEATH | NO_MAGICLINKS | NO_XDEV)` against a plain
//! `openat` of the same three-level path.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark fails by panicking")]

use std::path::Path;
use std::time::{Duration, Instant};

use globset::GlobBuilder;
use grep_regex::RegexMatcher;
use grep_searcher::Searcher;
use grep_searcher::sinks::UTF8;
use logbook_core::{Json, SessionId};
use logbook_server::api::tools::resolve_tools;
use logbook_server::sandbox::layout::SessionPaths;
use logbook_server::sandbox::policy::EgressPolicy;
use logbook_server::tools::{ToolContext, ToolServices, run};
use rustix::fs::{Mode, OFlags, ResolveFlags};
use serde_json::{Value, json};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Latencies of one kind of call.
#[derive(Default)]
struct Samples(Vec<Duration>);

impl Samples {
    fn time<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        self.0.push(start.elapsed());
        out
    }

    fn quantile(&self, q: f64) -> Duration {
        let mut sorted = self.0.clone();
        sorted.sort();
        sorted[((sorted.len() - 1) as f64 * q).round() as usize]
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn report(name: &str, tool: &Samples, base: &Samples) {
    let (t50, t99, b50, b99) = (tool.quantile(0.5), tool.quantile(0.99), base.quantile(0.5), base.quantile(0.99));
    println!(
        "{name:<28} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>8.2}x {:>8.2}x",
        micros(t50),
        micros(t99),
        micros(b50),
        micros(b99),
        t50.as_secs_f64() / b50.as_secs_f64(),
        t99.as_secs_f64() / b99.as_secs_f64()
    );
}

fn text(outcome: &logbook_server::runner::ToolOutcome) -> String {
    format!("{:?}", outcome.content)
}

fn main() {
    let n_files = env_usize("LOGBOOK_TOOLS_FILES", 2_000);
    let iterations = env_usize("LOGBOOK_TOOLS_ITERATIONS", 2_000);
    let walk_iterations = (iterations / 10).max(10);

    let dir = tempfile::tempdir().unwrap();
    let paths = SessionPaths::new(dir.path(), SessionId::from_parts(1, 1));
    for path in [paths.workspace(), paths.uploads(), paths.outputs()] {
        std::fs::create_dir_all(path).unwrap();
    }
    let ws = paths.workspace();
    // A small project: n_files text files of ~2 KiB in 40 directories, some ignored.
    for idx in 0..n_files {
        let rel = format!("src/d{:02}/f{idx:05}.txt", idx % 40);
        let body: String =
            (0..40).map(|line| format!("line {line} of file {idx}: some words and needle_{}\n", idx * line)).collect();
        let path = ws.join(&rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    std::fs::write(ws.join(".gitignore"), "target/\n").unwrap();
    std::fs::write(ws.join("edit.txt"), "alpha\n".repeat(100) + "MARKER_A\n").unwrap();

    let tools = resolve_tools(&[json!({"type": "agent_toolset_20260401"})]).unwrap();
    let services = ToolServices::from_search_url(None).unwrap();
    let egress = EgressPolicy::Open;
    let ctx = ToolContext {
        session: SessionId::from_parts(1, 1),
        paths: &paths,
        agent_tools: &tools,
        egress: &egress,
        services: &services,
        log: &[],
        files_here: true,
        // As the server runs them: write and edit measure the files first.
        disk_limit: Some(logbook_server::sandbox::disk::DiskLimit::default()),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let call = |name: &str, input: Value| {
        let outcome = runtime.block_on(run(&ctx, name, &Json::new(&input)));
        assert!(!outcome.is_error, "{name} {input}: {}", text(&outcome));
        outcome
    };

    println!("files: {n_files}, iterations: {iterations} (walks: {walk_iterations})");
    println!(
        "{:<28} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9}",
        "operation", "tool p50", "tool p99", "base p50", "base p99", "p50 ratio", "p99 ratio"
    );

    // read
    let (mut tool, mut base) = (Samples::default(), Samples::default());
    let read_rel = format!("src/d07/f{:05}.txt", 7.min(n_files - 1));
    for _ in 0..iterations {
        tool.time(|| call("read", json!({"file_path": read_rel})));
        base.time(|| std::fs::read_to_string(ws.join(&read_rel)).unwrap());
    }
    report("read (2 KiB)", &tool, &base);

    // glob
    let (mut tool, mut base) = (Samples::default(), Samples::default());
    let matcher = GlobBuilder::new("**/*.txt").literal_separator(true).build().unwrap().compile_matcher();
    for _ in 0..walk_iterations {
        tool.time(|| call("glob", json!({"pattern": "**/*.txt"})));
        base.time(|| baseline_glob(&ws, &matcher));
    }
    report(&format!("glob **/*.txt ({n_files} files)"), &tool, &base);

    // grep
    let (mut tool, mut base) = (Samples::default(), Samples::default());
    let regex = RegexMatcher::new_line_matcher("needle_1234[0-9]").unwrap();
    for _ in 0..walk_iterations {
        tool.time(|| call("grep", json!({"pattern": "needle_1234[0-9]"})));
        base.time(|| baseline_grep(&ws, &regex));
    }
    report(&format!("grep ({n_files} files)"), &tool, &base);

    // write (new content each time, existing file)
    let (mut tool, mut base) = (Samples::default(), Samples::default());
    let content = "x".repeat(4096);
    for _ in 0..iterations {
        tool.time(|| call("write", json!({"file_path": "out/w.txt", "content": content})));
        base.time(|| std::fs::write(ws.join("out/b.txt"), &content).unwrap());
    }
    report("write (4 KiB, overwrite)", &tool, &base);

    // write creating a new file in a new directory
    let (mut tool, mut base) = (Samples::default(), Samples::default());
    for idx in 0..iterations {
        tool.time(|| call("write", json!({"file_path": format!("new/t{idx}/a.txt"), "content": "x"})));
        base.time(|| {
            let path = ws.join(format!("new/b{idx}/a.txt"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "x").unwrap();
        });
    }
    report("write (new file + new dir)", &tool, &base);

    // edit
    let (mut tool, mut base) = (Samples::default(), Samples::default());
    std::fs::write(ws.join("edit_base.txt"), "alpha\n".repeat(100) + "MARKER_A\n").unwrap();
    for idx in 0..iterations {
        let (old, new) = if idx % 2 == 0 { ("MARKER_A", "MARKER_B") } else { ("MARKER_B", "MARKER_A") };
        tool.time(|| call("edit", json!({"file_path": "edit.txt", "old_string": old, "new_string": new})));
        base.time(|| {
            let path = ws.join("edit_base.txt");
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(text.matches(old).count(), 1);
            std::fs::write(&path, text.replacen(old, new, 1)).unwrap();
        });
    }
    report("edit (600 B file)", &tool, &base);

    // The confinement alone.
    let (mut tool, mut base) = (Samples::default(), Samples::default());
    let root = rustix::fs::open(&ws, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).unwrap();
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV;
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK;
    for _ in 0..iterations * 10 {
        tool.time(|| rustix::fs::openat2(&root, read_rel.as_str(), flags, Mode::empty(), resolve).unwrap());
        base.time(|| rustix::fs::openat(&root, read_rel.as_str(), flags, Mode::empty()).unwrap());
    }
    report("openat2 BENEATH vs openat", &tool, &base);
}

/// Every `.txt` below `ws`, newest first, the plain way.
fn baseline_glob(ws: &Path, matcher: &globset::GlobMatcher) -> Vec<String> {
    let mut found = Vec::new();
    for entry in ignore::WalkBuilder::new(ws).hidden(false).require_git(false).build() {
        let entry = entry.unwrap();
        if !entry.file_type().is_some_and(|kind| kind.is_file()) {
            continue;
        }
        let rel = entry.path().strip_prefix(ws).unwrap();
        if matcher.is_match(rel) {
            let mtime = entry.metadata().unwrap().modified().unwrap();
            found.push((mtime, rel.display().to_string()));
        }
    }
    found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    found.into_iter().take(200).map(|(_, rel)| rel).collect()
}

/// `path:line:text` for every match below `ws`, the plain way.
fn baseline_grep(ws: &Path, matcher: &RegexMatcher) -> String {
    let mut out = String::new();
    let mut searcher = Searcher::new();
    for entry in ignore::WalkBuilder::new(ws).hidden(false).require_git(false).build() {
        let entry = entry.unwrap();
        if !entry.file_type().is_some_and(|kind| kind.is_file()) {
            continue;
        }
        let rel = entry.path().strip_prefix(ws).unwrap().display().to_string();
        searcher
            .search_path(
                matcher,
                entry.path(),
                UTF8(|line_no, line| {
                    out.push_str(&format!("{rel}:{line_no}:{line}"));
                    Ok(true)
                }),
            )
            .unwrap();
    }
    out
}
