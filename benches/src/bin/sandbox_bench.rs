//! The sandbox's costs, each beside a baseline measured in the same run:
//!
//! - bash round trip: `true` in a session's persistent shell (through the
//!   tool executor, as the runner calls it), p50/p99;
//! - sandbox creation: the first bash call of a new session (a jail with its
//!   proxy, cgroup and forwarder, bash started and answering, then `true`),
//!   p50/p99;
//!
//! both as ratios to spawning `sh -c true` on the host; and
//! - change detection after a tool call that changed one file, in workspaces
//!   of 1k, 10k and 100k files (the executor's whole recording path: the stat
//!   walk, hashing what changed, storing its blob), p50/p99, as a ratio to a
//!   bare walk of the same tree with `std::fs` (`read_dir` + `symlink_metadata`
//!   of every entry, nothing else).
//!
//! Usage (as root, with bubblewrap installed): `cargo build --release -p
//! logbook-server --bin logbook && cargo run --release -p logbook-benches
//! --bin sandbox_bench`. Env: `LOGBOOK_BIN` (the forwarder; default
//! `target/release/logbook`), `LOGBOOK_SANDBOX_BENCH_CALLS` (bash round trips,
//! default 500; creations are a fifth of it, scans a tenth).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark fails by panicking")]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use logbook_core::{EnvironmentId, EventId, Json, Seq, SessionId, Timestamp};
use logbook_server::api::environments::{EnvConfig, Environment, Networking, Packages};
use logbook_server::runner::{ToolCall, ToolExecutor};
use logbook_server::sandbox::{SandboxConfig, SandboxTools};
use logbook_store::MemStore;
use serde_json::json;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let idx = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[idx.min(samples.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn ratio(a: Duration, b: Duration) -> String {
    format!("{:.1}x", a.as_secs_f64() / b.as_secs_f64())
}

fn environment() -> Environment {
    let at = Timestamp::from_unix_micros(1_700_000_000_000_000);
    Environment {
        id: EnvironmentId::from_parts(1_700_000_000_000, 1),
        object: "environment".to_owned(),
        name: "bench".to_owned(),
        description: None,
        metadata: Default::default(),
        config: EnvConfig::Cloud { networking: Networking::Unrestricted {}, packages: Packages::default() },
        scope: "workspace".to_owned(),
        created_at: at,
        updated_at: at,
        archived_at: None,
    }
}

fn session() -> SessionId {
    SessionId::from_parts(1_700_000_000_000, rand::random::<u128>() & ((1 << 80) - 1))
}

async fn bash(tools: &SandboxTools, session: SessionId, env: &Environment, command: &str) {
    let input = Json::new(&json!({ "command": command }));
    let call = ToolCall {
        session,
        tool_use_id: EventId::for_seq(1, Seq::new(1), 1),
        name: "bash",
        input: &input,
        agent_tools: &[],
        environment: Some(env),
        log: &[],
    };
    let outcome = tools.run(&call).await;
    assert!(!outcome.is_error, "{command}: {:?}", outcome.content);
}

/// Writes `n` files of ~100 bytes in directories of 100.
fn populate(root: &Path, n: usize) {
    for idx in 0..n {
        let dir = root.join(format!("d{:04}", idx / 100));
        if idx % 100 == 0 {
            std::fs::create_dir_all(&dir).unwrap();
        }
        std::fs::write(dir.join(format!("f{idx:06}.txt")), format!("file {idx} {}\n", "x".repeat(90))).unwrap();
    }
}

/// The baseline walk: `read_dir` and `symlink_metadata` of every entry.
fn bare_walk(root: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let meta = std::fs::symlink_metadata(entry.path()).unwrap();
            n += 1;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    n
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds = env_usize("LOGBOOK_SANDBOX_BENCH_CALLS", 500);
    let forwarder =
        std::env::var_os("LOGBOOK_BIN").map_or_else(|| PathBuf::from("target/release/logbook"), PathBuf::from);
    assert!(
        forwarder.is_file(),
        "{} is missing: cargo build --release -p logbook-server --bin logbook",
        forwarder.display()
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let data = dir.path().join("data");
    let store = Arc::new(MemStore::in_memory().unwrap());
    let tools = SandboxTools::new(SandboxConfig::for_data(&data, forwarder.canonicalize().unwrap()), store).unwrap();
    assert!(tools.check().is_empty(), "{:?}", tools.check());
    let env = environment();
    println!("sandbox bench: {rounds} round trips, {} creations; {}", rounds / 5, tools.describe_limits());

    // Baseline: a plain spawn on the host.
    let mut spawn = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        let status = std::process::Command::new("/bin/sh").args(["-c", "true"]).status().unwrap();
        spawn.push(started.elapsed());
        assert!(status.success());
    }
    let (spawn_p50, spawn_p99) = (percentile(&mut spawn, 0.5), percentile(&mut spawn, 0.99));

    // Sandbox creation: the first call of new sessions.
    let mut creation = Vec::new();
    for _ in 0..(rounds / 5).max(10) {
        let s = session();
        let started = Instant::now();
        bash(&tools, s, &env, "true").await;
        creation.push(started.elapsed());
        tools.end(s).await;
    }
    let (create_p50, create_p99) = (percentile(&mut creation, 0.5), percentile(&mut creation, 0.99));

    // Round trips in one persistent shell.
    let s = session();
    bash(&tools, s, &env, "true").await;
    let mut trips = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        bash(&tools, s, &env, "true").await;
        trips.push(started.elapsed());
    }
    tools.end(s).await;
    let (trip_p50, trip_p99) = (percentile(&mut trips, 0.5), percentile(&mut trips, 0.99));

    println!();
    println!("| what | p50 | p99 | p50 / spawn | p99 / spawn |");
    println!("|---|---:|---:|---:|---:|");
    println!("| `sh -c true` spawned on the host (baseline) | {} | {} | 1.0x | 1.0x |", ms(spawn_p50), ms(spawn_p99));
    println!(
        "| bash tool round trip (`true`, persistent shell) | {} | {} | {} | {} |",
        ms(trip_p50),
        ms(trip_p99),
        ratio(trip_p50, spawn_p50),
        ratio(trip_p99, spawn_p99)
    );
    println!(
        "| sandbox creation (first call of a session) | {} | {} | {} | {} |",
        ms(create_p50),
        ms(create_p99),
        ratio(create_p50, spawn_p50),
        ratio(create_p99, spawn_p99)
    );

    println!();
    println!("| files | change detection p50 | p99 | bare walk p50 | p50 / walk | no-change scan p50 |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for n in [1_000, 10_000, 100_000] {
        let s = session();
        let paths = tools.paths(s);
        paths.create().unwrap();
        populate(&paths.workspace(), n);
        // The first scan records everything; later ones are what a tool call costs.
        let first = tools.changes(s, &[]).await.unwrap();
        assert_eq!(first.len(), n);
        let scans = (rounds / 10).max(10);
        let mut changed = Vec::with_capacity(scans);
        let mut unchanged = Vec::with_capacity(scans);
        let mut walks = Vec::with_capacity(scans);
        for round in 0..scans {
            let target = paths.workspace().join(format!("d{:04}/f{:06}.txt", (round * 37 % n) / 100, round * 37 % n));
            std::fs::write(&target, format!("changed in round {round}\n")).unwrap();
            let started = Instant::now();
            let changes = tools.changes(s, &[]).await.unwrap();
            changed.push(started.elapsed());
            assert!(!changes.is_empty());
            let started = Instant::now();
            tools.changes(s, &[]).await.unwrap();
            unchanged.push(started.elapsed());
            let started = Instant::now();
            assert!(bare_walk(&paths.workspace()) >= n);
            walks.push(started.elapsed());
        }
        let (p50, p99) = (percentile(&mut changed, 0.5), percentile(&mut changed, 0.99));
        let walk = percentile(&mut walks, 0.5);
        println!(
            "| {n} | {} | {} | {} | {} | {} |",
            ms(p50),
            ms(p99),
            ms(walk),
            ratio(p50, walk),
            ms(percentile(&mut unchanged, 0.5))
        );
        std::fs::remove_dir_all(paths.root()).unwrap();
    }
}
