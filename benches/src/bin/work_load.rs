//! The self-hosted work queue under load, through the real server on
//! loopback, each figure next to a baseline measured in the same run.
//!
//! Usage: `cargo build --release -p logbook-server && cargo run --release -p
//! logbook-benches --bin work_load`. Env: `LOGBOOK_BIN` (default
//! `target/release/logbook`), `LOGBOOK_WORK_ITEMS` (work items served, default
//! 1000), `LOGBOOK_WORK_WORKERS` (concurrent workers, default 8),
//! `LOGBOOK_WORK_WAKEUPS` (long-poll wake-ups timed, default 100).
//!
//! Three measurements:
//! - **enqueue cost**: creating a session on a self-hosted environment (which
//!   queues its work item) against creating one on a cloud environment;
//! - **lease cycle**: W workers each repeating the SDK worker's protocol
//!   (poll, ack, heartbeat `NO_HEARTBEAT`, heartbeat echo, force-stop) until
//!   every item is served; per-step latency and items/s, against W clients
//!   doing one durable resource write per request (an environment metadata
//!   update), the cheapest durable request there is;
//! - **long-poll wake-up**: a worker blocked in `poll?block_ms=999`; the time
//!   from sending a session create to the poll returning its item, against the
//!   create request's own latency (a poll that missed the wake-up would take
//!   up to 999 ms).
//!
//! The environment key is minted the way operators mint it: the server is
//! stopped, `logbook keys create --environment` runs, the server restarts.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark fails by panicking")]

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use logbook_benches::serve::{self, KEY};
use serde_json::{Value, json};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {}", self.key))
            .header("anthropic-beta", "managed-agents-2026-04-01")
            .header("anthropic-worker-id", "bench-worker");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let value = response.json().await.unwrap_or(Value::Null);
        (status, value)
    }

    async fn ok(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (status, value) = self.send(method, path, body).await;
        assert_eq!(status, 200, "{path}: {value}");
        value
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

struct Stats {
    p50: Duration,
    p99: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort_unstable();
    Stats { p50: percentile(&samples, 0.5), p99: percentile(&samples, 0.99) }
}

fn main() {
    let n_items = env_usize("LOGBOOK_WORK_ITEMS", 1000);
    let n_workers = env_usize("LOGBOOK_WORK_WORKERS", 8);
    let n_wakeups = env_usize("LOGBOOK_WORK_WAKEUPS", 100);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();

    // The environment, then its key, minted offline.
    let server = serve::launch(&data).arg("--no-runner").start();
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    let admin = Api { http: http.clone(), base: server.base.clone(), key: KEY.to_owned() };
    let (env, cloud_env, agent) = runtime.block_on(async {
        let env = admin
            .ok(
                reqwest::Method::POST,
                "/v1/environments",
                Some(json!({"name": "bench", "config": {"type": "self_hosted"}})),
            )
            .await;
        let cloud = admin.ok(reqwest::Method::POST, "/v1/environments", Some(json!({"name": "cloud"}))).await;
        let agent = admin
            .ok(reqwest::Method::POST, "/v1/agents", Some(json!({"name": "bench", "model": "claude-sonnet-4-6"})))
            .await;
        (
            env["id"].as_str().unwrap().to_owned(),
            cloud["id"].as_str().unwrap().to_owned(),
            agent["id"].as_str().unwrap().to_owned(),
        )
    });
    drop(server);
    let out = Command::new(serve::bin())
        .args(["keys", "create", "--data"])
        .arg(&data)
        .args(["--environment", &env])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let env_key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let server = serve::launch(&data).arg("--no-runner").start();
    let admin = Api { http: http.clone(), base: server.base.clone(), key: KEY.to_owned() };
    let worker = Api { http: http.clone(), base: server.base.clone(), key: env_key };
    println!("work_load: {n_items} items, {n_workers} workers, {n_wakeups} wake-ups; server {}", server.base);

    runtime.block_on(async {
        // 1. Enqueue cost: session creates, self-hosted (queues an item) and cloud, interleaved.
        let mut hosted = Vec::new();
        let mut cloud = Vec::new();
        let creates = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..n_workers {
            let (admin, env, cloud_env, agent, creates) =
                (admin.clone(), env.clone(), cloud_env.clone(), agent.clone(), Arc::clone(&creates));
            tasks.push(tokio::spawn(async move {
                let mut hosted = Vec::new();
                let mut cloud = Vec::new();
                while creates.fetch_add(1, Ordering::Relaxed) < n_items {
                    let began = Instant::now();
                    admin
                        .ok(reqwest::Method::POST, "/v1/sessions", Some(json!({"agent": agent, "environment_id": env})))
                        .await;
                    hosted.push(began.elapsed());
                    let began = Instant::now();
                    admin
                        .ok(
                            reqwest::Method::POST,
                            "/v1/sessions",
                            Some(json!({"agent": agent, "environment_id": cloud_env})),
                        )
                        .await;
                    cloud.push(began.elapsed());
                }
                (hosted, cloud)
            }));
        }
        for task in tasks {
            let (h, c) = task.await.unwrap();
            hosted.extend(h);
            cloud.extend(c);
        }
        let (hosted, cloud) = (stats(hosted), stats(cloud));
        println!("\n== enqueue: session create, {n_workers} clients ({n_items} each kind)");
        println!("| environment | p50 ms | p99 ms | p50 × cloud |");
        println!("|---|---:|---:|---:|");
        println!("| cloud (baseline) | {} | {} | 1.00 |", ms(cloud.p50), ms(cloud.p99));
        println!(
            "| self-hosted (queues a work item) | {} | {} | {:.2} |",
            ms(hosted.p50),
            ms(hosted.p99),
            hosted.p50.as_secs_f64() / cloud.p50.as_secs_f64()
        );

        // 2. Baseline: one durable resource write per request (each client its
        // own environment, so the writes never conflict).
        let writes = Arc::new(AtomicUsize::new(0));
        let n_writes = n_items * 5;
        let mut own_envs = Vec::new();
        for client in 0..n_workers {
            let env = admin
                .ok(reqwest::Method::POST, "/v1/environments", Some(json!({"name": format!("baseline {client}")})))
                .await;
            own_envs.push(env["id"].as_str().unwrap().to_owned());
        }
        let began = Instant::now();
        let mut tasks = Vec::new();
        for own_env in own_envs {
            let (admin, writes) = (admin.clone(), Arc::clone(&writes));
            tasks.push(tokio::spawn(async move {
                let mut samples = Vec::new();
                loop {
                    let n = writes.fetch_add(1, Ordering::Relaxed);
                    if n >= n_writes {
                        return samples;
                    }
                    let t = Instant::now();
                    let body = json!({"metadata": {"n": n.to_string()}});
                    admin.ok(reqwest::Method::POST, &format!("/v1/environments/{own_env}"), Some(body)).await;
                    samples.push(t.elapsed());
                }
            }));
        }
        let mut samples = Vec::new();
        for task in tasks {
            samples.extend(task.await.unwrap());
        }
        let baseline_rate = n_writes as f64 / began.elapsed().as_secs_f64();
        let baseline = stats(samples);

        // 3. The lease cycle, W workers.
        let served = Arc::new(AtomicUsize::new(0));
        let began = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..n_workers {
            let (worker, env, served) = (worker.clone(), env.clone(), Arc::clone(&served));
            tasks.push(tokio::spawn(async move {
                let mut steps: Vec<Vec<Duration>> = vec![Vec::new(); 6];
                let mut lost_acks = 0usize;
                while served.load(Ordering::Relaxed) < n_items {
                    let cycle = Instant::now();
                    let t = Instant::now();
                    let item =
                        worker.ok(reqwest::Method::GET, &format!("/v1/environments/{env}/work/poll"), None).await;
                    steps[0].push(t.elapsed());
                    let Some(work) = item["id"].as_str() else { continue };
                    let t = Instant::now();
                    let (status, _) = worker
                        .send(reqwest::Method::POST, &format!("/v1/environments/{env}/work/{work}/ack"), None)
                        .await;
                    steps[1].push(t.elapsed());
                    if status == 409 {
                        lost_acks += 1;
                        continue;
                    }
                    let t = Instant::now();
                    let beat = worker
                        .ok(
                            reqwest::Method::POST,
                            &format!(
                                "/v1/environments/{env}/work/{work}/heartbeat?expected_last_heartbeat=NO_HEARTBEAT"
                            ),
                            None,
                        )
                        .await;
                    steps[2].push(t.elapsed());
                    let last = beat["last_heartbeat"].as_str().unwrap().to_owned();
                    let t = Instant::now();
                    let query: String = form_urlencoded(&last);
                    worker
                        .ok(
                            reqwest::Method::POST,
                            &format!("/v1/environments/{env}/work/{work}/heartbeat?expected_last_heartbeat={query}"),
                            None,
                        )
                        .await;
                    steps[3].push(t.elapsed());
                    let t = Instant::now();
                    worker
                        .ok(
                            reqwest::Method::POST,
                            &format!("/v1/environments/{env}/work/{work}/stop"),
                            Some(json!({"force": true})),
                        )
                        .await;
                    steps[4].push(t.elapsed());
                    steps[5].push(cycle.elapsed());
                    served.fetch_add(1, Ordering::Relaxed);
                }
                (steps, lost_acks)
            }));
        }
        let mut steps: Vec<Vec<Duration>> = vec![Vec::new(); 6];
        let mut lost_acks = 0;
        for task in tasks {
            let (s, lost) = task.await.unwrap();
            for (all, mine) in steps.iter_mut().zip(s) {
                all.extend(mine);
            }
            lost_acks += lost;
        }
        let rate = n_items as f64 / began.elapsed().as_secs_f64();
        println!("\n== lease cycle: {n_workers} workers, {n_items} items ({lost_acks} acks lost to another worker)");
        println!("| request | p50 ms | p99 ms | p50 × baseline write |");
        println!("|---|---:|---:|---:|");
        println!(
            "| baseline: environment metadata update (1 durable write) | {} | {} | 1.00 |",
            ms(baseline.p50),
            ms(baseline.p99)
        );
        for (name, samples) in [
            "poll (claims, mints a token)",
            "ack",
            "heartbeat NO_HEARTBEAT",
            "heartbeat echo",
            "stop force",
            "whole cycle (5 requests)",
        ]
        .iter()
        .zip(steps)
        {
            let s = stats(samples);
            println!(
                "| {name} | {} | {} | {:.2} |",
                ms(s.p50),
                ms(s.p99),
                s.p50.as_secs_f64() / baseline.p50.as_secs_f64()
            );
        }
        println!(
            "items/s: {rate:.0}; baseline writes/s: {baseline_rate:.0}; items/s × 5 ÷ baseline writes/s = {:.2}",
            rate * 5.0 / baseline_rate
        );

        // 4. Long-poll wake-up.
        let mut wakes = Vec::new();
        let mut creates = Vec::new();
        for _ in 0..n_wakeups {
            let poller = {
                let (worker, env) = (worker.clone(), env.clone());
                tokio::spawn(async move {
                    let item = worker
                        .ok(reqwest::Method::GET, &format!("/v1/environments/{env}/work/poll?block_ms=999"), None)
                        .await;
                    (Instant::now(), item)
                })
            };
            // Let the poll reach the server and wait (it answers null after 999 ms otherwise).
            tokio::time::sleep(Duration::from_millis(20)).await;
            let sent = Instant::now();
            let session = admin
                .ok(reqwest::Method::POST, "/v1/sessions", Some(json!({"agent": agent, "environment_id": env})))
                .await;
            creates.push(sent.elapsed());
            let (returned, item) = poller.await.unwrap();
            assert_eq!(item["data"]["id"], session["id"], "the poll returned the new session's item");
            wakes.push(returned.saturating_duration_since(sent));
            let work = item["id"].as_str().unwrap();
            worker
                .ok(
                    reqwest::Method::POST,
                    &format!("/v1/environments/{env}/work/{work}/stop"),
                    Some(json!({"force": true})),
                )
                .await;
        }
        let (wakes, creates) = (stats(wakes), stats(creates));
        println!("\n== long-poll wake-up ({n_wakeups} times)");
        println!("| what | p50 ms | p99 ms | p50 × create |");
        println!("|---|---:|---:|---:|");
        println!("| session create request (baseline) | {} | {} | 1.00 |", ms(creates.p50), ms(creates.p99));
        println!(
            "| create sent → blocked poll returns its item | {} | {} | {:.2} |",
            ms(wakes.p50),
            ms(wakes.p99),
            wakes.p50.as_secs_f64() / creates.p50.as_secs_f64()
        );
    });
    drop(server);
}

/// Percent-encodes a query value (RFC 3339 timestamps carry `:` and `+`).
fn form_urlencoded(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
