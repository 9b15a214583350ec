//! Runner overhead: turns of many tool steps against a zero-latency fake model,
//! and many sessions running at once.
//!
//! Usage: `cargo build --release -p logbook-server && cargo run --release -p
//! logbook-benches --bin runner_load`. Env: `LOGBOOK_BIN` (default
//! `target/release/logbook`), `LOGBOOK_RUNNER_STEPS` (tool steps per turn,
//! default 20), `LOGBOOK_RUNNER_TURNS` (sequential turns for the overhead
//! figures, default 50, so 1000 model calls), `LOGBOOK_RUNNER_SESSIONS`
//! (concurrent sessions, default 200), `LOGBOOK_RUNNER_LONG_TURNS` (turns of
//! the long session, default 300) and `LOGBOOK_RUNNER_LONG_STEPS` (its tool
//! steps per turn, default 5).
//!
//! The long session measures what a wake costs as a session's log grows: the
//! time from a message's `processed_at` to its turn's `session.status_running`
//! (both the server's clock), which is the runner catching up with the log
//! and deciding, over the first and the last ten turns.
//!
//! The fake model answers instantly and the tool is the server's test-only
//! `echo` executor (it runs nothing), so a step's time is the runner's own
//! overhead: recording the request start, the response, the tool start and its
//! result (each a durable append), and the loopback model call.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark fails by panicking")]

use std::time::{Duration, Instant};

use logbook_benches::serve::{self, KEY};
use logbook_tests::fake_model::FakeModel;
use serde_json::{Value, json};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A script of `steps` tool calls then a final answer, repeated `turns` times.
fn script(steps: usize, turns: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for _ in 0..turns {
        for step in 0..steps {
            out.push(
                json!({"content": [{"type": "tool_use", "name": "bash", "input": {"command": format!("step {step}")}}],
                            "stop_reason": "tool_use", "usage": {"input_tokens": 10, "output_tokens": 5}}),
            );
        }
        out.push(json!({"content": [{"type": "text", "text": "done"}], "stop_reason": "end_turn"}));
    }
    out
}

fn go() -> Value {
    json!({"events": [{"type": "user.message", "content": [{"type": "text", "text": "go"}]}]})
}

/// A tiny client of the server's API.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn post(&self, path: &str, body: Value) -> Value {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .header("x-api-key", KEY)
            .header("anthropic-beta", "managed-agents-2026-04-01")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success());
        res.json::<Value>().await.unwrap()
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .header("x-api-key", KEY)
            .header("anthropic-beta", "managed-agents-2026-04-01")
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    }

    /// The newest turn's wake: microseconds from the newest `user.message`'s
    /// `processed_at` to the `session.status_running` that follows it.
    async fn last_wake_us(&self, session: &str) -> u64 {
        let page = self.get(&format!("/v1/sessions/{session}/events?order=desc&limit=1000")).await;
        let events = page["data"].as_array().unwrap();
        let at = |event: &Value| event["processed_at"].as_str().unwrap().parse::<jiff::Timestamp>().unwrap();
        let message = events.iter().position(|e| e["type"] == "user.message").unwrap();
        let running = events[..message].iter().rev().find(|e| e["type"] == "session.status_running").unwrap();
        let span = at(running).as_microsecond() - at(&events[message]).as_microsecond();
        u64::try_from(span).unwrap()
    }

    /// How many events the session lists.
    async fn n_events(&self, session: &str) -> usize {
        let mut n = 0;
        let mut page = self.get(&format!("/v1/sessions/{session}/events?limit=1000")).await;
        loop {
            n += page["data"].as_array().map_or(0, Vec::len);
            match page["next_page"].as_str() {
                Some(next) => page = self.get(&format!("/v1/sessions/{session}/events?limit=1000&page={next}")).await,
                None => return n,
            }
        }
    }

    /// Waits until the session has `n` idles, polling its events.
    async fn wait_idle(self, session: String, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let page = self.get(&format!("/v1/sessions/{session}/events?types[]=session.status_idle&limit=1000")).await;
            if page["data"].as_array().map_or(0, Vec::len) >= n {
                return;
            }
            assert!(Instant::now() < deadline, "session {session} did not finish");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

fn main() {
    let steps = env_usize("LOGBOOK_RUNNER_STEPS", 20);
    let turns = env_usize("LOGBOOK_RUNNER_TURNS", 50);
    let n_sessions = env_usize("LOGBOOK_RUNNER_SESSIONS", 200);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let model = FakeModel::start(script(steps, turns)).unwrap();
        let dir = tempfile::tempdir_in("target").unwrap();
        let server = serve::launch(&dir.path().join("data")).model(&model).env("LOGBOOK_TOOLS", "echo").start();
        let api = Api { http: reqwest::Client::new(), base: server.base.clone() };
        let tools = json!([{"type": "agent_toolset_20260401", "default_config": {"permission_policy": {"type": "always_allow"}}}]);
        let agent = api.post("/v1/agents", json!({"model": "claude-sonnet-4-6", "name": "bench", "tools": tools})).await;
        let env = api.post("/v1/environments", json!({"name": "bench"})).await;
        let session_body = json!({"agent": agent["id"], "environment_id": env["id"]});

        // 1. Sequential turns of one session: per-step overhead.
        // A fresh session per turn, so the context stays a turn long.
        let mut per_step_us = Vec::with_capacity(turns);
        let mut turn_us = Vec::with_capacity(turns);
        for _ in 0..turns {
            let session = api.post("/v1/sessions", session_body.clone()).await["id"].as_str().unwrap().to_owned();
            let started = Instant::now();
            api.post(&format!("/v1/sessions/{session}/events"), go()).await;
            api.clone().wait_idle(session.clone(), 1).await;
            // steps tool calls + (steps + 1) model calls per turn.
            let elapsed = started.elapsed().as_micros() as u64;
            turn_us.push(elapsed);
            per_step_us.push(elapsed / (2 * steps as u64 + 1));
        }
        // The fake's own time for a turn: the last turn's requests, exactly as
        // the runner sent them, replayed straight to the fake (same loopback,
        // same streamed responses), 10 times.
        let bodies: Vec<Value> = model.requests().into_iter().map(|r| r.body).collect();
        let one_turn = bodies[bodies.len() - (steps + 1)..].to_vec();
        let reps = 10;
        model.set_script(script(steps, reps)).unwrap();
        let direct = reqwest::Client::new();
        let mut fake_turn_us = Vec::with_capacity(reps);
        for _ in 0..reps {
            let started = Instant::now();
            for body in &one_turn {
                let response = direct
                    .post(format!("{}/v1/messages", model.base_url()))
                    .header("x-api-key", "test-key")
                    .header("anthropic-version", "2023-06-01")
                    .json(body)
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success());
                response.bytes().await.unwrap();
            }
            fake_turn_us.push(started.elapsed().as_micros() as u64);
        }
        fake_turn_us.sort_unstable();
        turn_us.sort_unstable();
        let fake_us = fake_turn_us[reps / 2];
        let calls = 2 * steps as u64 + 1;
        let own: Vec<f64> = turn_us.iter().map(|t| t.saturating_sub(fake_us) as f64 / calls as f64 / 1000.0).collect();
        println!(
            "the fake model's own time per turn ({} requests replayed directly): p50 {:.3} ms; runner's own time per call \
             (turn minus the fake's time, over {calls} calls): p50 {:.3} ms, p99 {:.3} ms (target <= 1 ms)",
            steps + 1,
            fake_us as f64 / 1000.0,
            own[(own.len() - 1) / 2],
            own[((own.len() - 1) as f64 * 0.99).round() as usize]
        );
        per_step_us.sort_unstable();
        let pct = |p: f64| per_step_us[((per_step_us.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0;
        println!(
            "runner overhead per model call or tool call ({} turns × {} steps, {} calls): p50 {:.3} ms, p99 {:.3} ms (polling granularity 2 ms per turn included)",
            turns,
            steps,
            turns * (2 * steps + 1),
            pct(0.5),
            pct(0.99)
        );

        // 2. Many sessions at once, one turn each.
        model.set_script(script(steps, n_sessions)).unwrap();
        let rss_before = rss_kib(server.pid());
        let mut ids = Vec::with_capacity(n_sessions);
        for _ in 0..n_sessions {
            ids.push(api.post("/v1/sessions", session_body.clone()).await["id"].as_str().unwrap().to_owned());
        }
        let started = Instant::now();
        for id in &ids {
            api.post(&format!("/v1/sessions/{id}/events"), go()).await;
        }
        let waits: Vec<_> = ids.iter().map(|id| tokio::spawn(api.clone().wait_idle(id.clone(), 1))).collect();
        for wait in waits {
            wait.await.unwrap();
        }
        println!(
            "{n_sessions} concurrent sessions × {steps}-step turns: all idle after {:.2} s; server RSS {} -> {} KiB",
            started.elapsed().as_secs_f64(),
            rss_before,
            rss_kib(server.pid())
        );

        // 3. One long session: a wake's cost as the log grows.
        let long_turns = env_usize("LOGBOOK_RUNNER_LONG_TURNS", 300).clamp(20, 1_000);
        let long_steps = env_usize("LOGBOOK_RUNNER_LONG_STEPS", 5);
        model.set_script(script(long_steps, long_turns)).unwrap();
        let session = api.post("/v1/sessions", session_body.clone()).await["id"].as_str().unwrap().to_owned();
        let mut wake_us = Vec::with_capacity(long_turns);
        for turn in 0..long_turns {
            api.post(&format!("/v1/sessions/{session}/events"), go()).await;
            api.clone().wait_idle(session.clone(), turn + 1).await;
            wake_us.push(api.last_wake_us(&session).await);
        }
        let n_events = api.n_events(&session).await;
        let p50 = |slice: &[u64]| {
            let mut slice = slice.to_vec();
            slice.sort_unstable();
            slice[slice.len() / 2] as f64 / 1000.0
        };
        let (first, last) = (p50(&wake_us[..10]), p50(&wake_us[long_turns - 10..]));
        println!(
            "one session, {long_turns} turns × {long_steps} steps ({n_events} listed events): wake (message processed -> \
             turn running), p50 of the first 10 turns {first:.3} ms, of the last 10 {last:.3} ms ({:.2} ×)",
            last / first
        );
        drop(server);
    });
}
