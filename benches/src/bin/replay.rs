//! Benchmarks of the replay engine (issue #6), each beside its baseline in the
//! same run:
//!
//! - **state at a seq** of a long session (default 1M events): p50/p99 of
//!   `projection::state_at` at random seqs, against the same at seqs near the
//!   start (the cost must not grow with length; target ≤ 50 ms and ≤ 2×);
//! - **verify**: the session's chain verified from the store, in MB/s of
//!   canonical bytes, against `blake3::hash` over the same bytes in memory;
//! - **fork**: the store's fork of a 1k-event session beside the long one
//!   (target ≤ 5 ms and independent of length), and a whole fork as the
//!   endpoint makes it (state, workspace written, log);
//! - **low-token context** of long coding sessions: tokens of the fitted
//!   context at turn 100 (default budget) as a fraction of re-sending the
//!   whole history, with the must-keep items checked (target ≤ 0.2).
//!
//! The session is generated as the runner writes one: turns of model calls
//! (`x.model_response` with tool uses, `agent.tool_use`, spans, usage), tool
//! results, workspace deltas over a 1k-file tree, and a compaction whenever
//! the projected context crosses 80 % of a 200k window.
//!
//! `cargo run --release -p logbook-benches --bin replay -- [--events N] [--samples K]`

use std::time::Instant;

use anyhow::Context as _;
use logbook_core::event::{
    AgentConfig, AgentMessage, AgentThreadContextCompacted, AgentToolResult, AgentToolUse, Compaction, ContentBlock,
    Event, FileChange, ModelResponse, ModelUsage, SessionStatusIdle, SessionStatusRunning, SessionUsage,
    SpanModelRequestEnd, SpanModelRequestStart, StopReason, ToolStarted, ToolUseLink, UserMessage, WorkspaceChange,
    WorkspaceDelta,
};
use logbook_core::{Entry, EventId, Json, Seq, SessionId, Timestamp};
use logbook_replay::SessionState;
use logbook_replay::context::plan_compaction;
use logbook_replay::fit::{DEFAULT_BUDGET_TOKENS, fit};
use logbook_store::{Append, Read, SledOptions, SledStore};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};

const WINDOW: u64 = 200_000;
const TRIGGER: u64 = 160_000;
const KEEP: u64 = 40_000;
const WORKSPACE_FILES: u32 = 1_000;
const APPEND_BATCH: usize = 1_000;

struct Gen {
    rng: StdRng,
    state: SessionState,
    entries: Vec<Entry>,
    /// File contents the deltas name, for the caller to store.
    blobs: Vec<Vec<u8>>,
    n: u128,
}

impl Gen {
    fn new(seed: u64) -> Gen {
        Gen {
            rng: StdRng::seed_from_u64(seed),
            state: SessionState::new(),
            entries: Vec::new(),
            blobs: Vec::new(),
            n: 0,
        }
    }

    fn push(&mut self, event: Event) -> EventId {
        self.n += 1;
        let id = EventId::from_parts(1_764_000_000_000 + (self.n as u64 / 1000), self.n);
        let entry = Entry { id, event, at: Timestamp::from_unix_micros(1_764_000_000_000_000 + self.n as i64 * 1000) };
        self.state.apply(&entry);
        self.entries.push(entry);
        id
    }

    fn words(&mut self, n_bytes: usize) -> String {
        const WORDS: &[&str] = &[
            "fn",
            "let",
            "parse",
            "error",
            "config",
            "the",
            "test",
            "cargo",
            "build",
            "src/lib.rs",
            "warning:",
            "struct",
            "impl",
            "return",
            "Ok(())",
            "match",
            "self",
            "value",
            "=>",
            "line",
            "42",
            "0x1f",
            "async",
        ];
        let mut text = String::with_capacity(n_bytes + 16);
        while text.len() < n_bytes {
            text.push_str(WORDS[self.rng.random_range(0..WORDS.len())]);
            text.push(if self.rng.random_range(0..8) == 0 { '\n' } else { ' ' });
        }
        text
    }

    /// One model call with `calls` tool uses and their results.
    fn tool_round(&mut self, calls: usize) {
        let start = self.push(Event::SpanModelRequestStart(SpanModelRequestStart {}));
        let mut blocks = vec![json!({"type": "text", "text": self.words(120)})];
        let mut inputs = Vec::new();
        for k in 0..calls {
            let file = self.rng.random_range(0..WORKSPACE_FILES);
            let input = match self.rng.random_range(0..3) {
                0 => json!({"command": format!("cargo test -p crate{} -- --nocapture", file % 7)}),
                1 => json!({"file_path": format!("/workspace/src/m{file}.rs")}),
                _ => json!({"file_path": format!("/workspace/src/m{file}.rs"), "content": self.words(600)}),
            };
            blocks.push(
                json!({"type": "tool_use", "id": format!("toolu_{}_{k}", self.n), "name": "bash", "input": input}),
            );
            inputs.push((format!("toolu_{}_{k}", self.n), input));
        }
        // The public tool-use events follow the response and the text message.
        let first = self.n + 3;
        let links: Vec<ToolUseLink> = inputs
            .iter()
            .enumerate()
            .map(|(k, (provider_id, _))| ToolUseLink {
                provider_id: provider_id.clone(),
                event_id: EventId::from_parts(
                    1_764_000_000_000 + ((first + k as u128) as u64 / 1000),
                    first + k as u128,
                ),
            })
            .collect();
        self.push(Event::ModelResponse(ModelResponse {
            model_request_start_id: start,
            content: Json::new(&Value::Array(blocks)),
            tool_uses: links,
        }));
        let text = self.words(120);
        self.push(Event::AgentMessage(AgentMessage { content: vec![ContentBlock::Text { text }] }));
        let ids: Vec<EventId> = inputs
            .iter()
            .map(|(_, input)| {
                self.push(Event::AgentToolUse(AgentToolUse {
                    name: "bash".into(),
                    input: Json::new(input),
                    evaluated_permission: None,
                    evaluation: None,
                    session_thread_id: None,
                }))
            })
            .collect();
        let prompt = self.state.estimated_prompt_tokens();
        self.push(Event::SpanModelRequestEnd(SpanModelRequestEnd {
            model_request_start_id: start,
            model_usage: ModelUsage {
                input_tokens: prompt,
                output_tokens: 300,
                cache_creation_input_tokens: 0,
                cache_read_input_tokens: 0,
                speed: None,
            },
            is_error: Some(false),
        }));
        self.push(Event::ToolStarted(ToolStarted { tool_use_ids: ids.clone() }));
        for id in ids {
            let size = self.rng.random_range(300..4_000);
            let text = self.words(size);
            self.push(Event::AgentToolResult(AgentToolResult {
                tool_use_id: id,
                content: Some(vec![ContentBlock::Text { text }]),
                is_error: Some(false),
            }));
            let file = self.rng.random_range(0..WORKSPACE_FILES);
            let contents = format!("// m{file}, version {}\n", self.n).repeat(8).into_bytes();
            let blob = *blake3::hash(&contents).as_bytes();
            self.push(Event::WorkspaceDelta(WorkspaceDelta {
                tool_use_id: Some(id),
                changes: vec![WorkspaceChange {
                    path: format!("/workspace/src/m{file}.rs"),
                    change: FileChange::Written { blob, size: contents.len() as u64, mode: 0o644 },
                }],
            }));
            self.blobs.push(contents);
        }
        if self.state.estimated_prompt_tokens() >= TRIGGER
            && let Some(plan) = plan_compaction(&self.state.context, KEEP)
        {
            let summary = self.words(4_000);
            self.push(Event::Compaction(Compaction {
                summary,
                through_seq: plan.through_seq,
                tokens_before: plan.tokens_before,
                tokens_after: plan.tokens_kept + 1_400,
                model: Some("claude-sonnet-4-6".into()),
                usage: ModelUsage::default(),
            }));
            self.push(Event::AgentThreadContextCompacted(AgentThreadContextCompacted {}));
        }
    }

    fn turn(&mut self) {
        let text = format!("Please {}", self.words(200));
        self.push(Event::UserMessage(UserMessage { content: vec![ContentBlock::Text { text }] }));
        self.push(Event::SessionStatusRunning(SessionStatusRunning {}));
        for _ in 0..self.rng.random_range(3..10) {
            let calls = self.rng.random_range(1..4);
            self.tool_round(calls);
        }
        let start = self.push(Event::SpanModelRequestStart(SpanModelRequestStart {}));
        let text = self.words(300);
        self.push(Event::ModelResponse(ModelResponse {
            model_request_start_id: start,
            content: Json::new(&json!([{"type": "text", "text": text}])),
            tool_uses: Vec::new(),
        }));
        self.push(Event::SpanModelRequestEnd(SpanModelRequestEnd {
            model_request_start_id: start,
            model_usage: ModelUsage::default(),
            is_error: Some(false),
        }));
        self.push(Event::SessionUsage(SessionUsage { usage: Default::default(), budget: None }));
        self.push(Event::SessionStatusIdle(SessionStatusIdle { stop_reason: StopReason::EndTurn, stop_details: None }));
    }
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let idx = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples.get(idx).copied().unwrap_or(0.0)
}

fn main() -> anyhow::Result<()> {
    let mut events: u64 = 1_000_000;
    let mut samples: usize = 200;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--events" => events = args.next().context("--events N")?.parse()?,
            "--samples" => samples = args.next().context("--samples K")?.parse()?,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let dir = tempfile::tempdir()?;
    let store = SledStore::open(dir.path(), &SledOptions::default())?;
    let session = SessionId::from_parts(1_764_000_000_000, 1);

    // Generate and store the long session.
    let began = Instant::now();
    let mut generator = Gen::new(7);
    generator.push(Event::AgentConfig(AgentConfig {
        agent: Json::new(
            &json!({"model": {"id": "claude-sonnet-4-6"}, "system": "You are a careful engineer.", "tools": []}),
        ),
        options: Json::new(
            &json!({"compaction": {"window_tokens": WINDOW, "trigger_tokens": TRIGGER, "keep_tokens": KEEP}}),
        ),
    }));
    let mut stored = 0u64;
    let mut n_turns = 0u64;
    let mut contents: Vec<Vec<u8>> = Vec::new();
    while stored < events {
        generator.turn();
        n_turns += 1;
        stored += generator.entries.len() as u64;
        let mut base = store.head(session)?.next.get();
        contents.append(&mut generator.blobs);
        let batch: Vec<Entry> = std::mem::take(&mut generator.entries);
        for chunk in batch.chunks(APPEND_BATCH) {
            store.append(session, Seq::new(base), chunk)?;
            base += chunk.len() as u64;
        }
    }
    let n = store.head(session)?.next.get();
    eprintln!("generated {n} events in {n_turns} turns in {:.1} s", began.elapsed().as_secs_f64());

    // Warm the checkpoints once (the first query of a long session folds it).
    let began = Instant::now();
    let last = logbook_server::projection::state_at(&store, session, Seq::new(n - 1))
        .map_err(|e| anyhow::anyhow!(e.message))?;
    eprintln!(
        "first state query (builds the checkpoints): {:.1} s; context {} messages, workspace {} files",
        began.elapsed().as_secs_f64(),
        last.context.messages().len(),
        last.workspace.len()
    );

    let mut rng = StdRng::seed_from_u64(11);
    let mut time_at = |range: std::ops::Range<u64>| -> anyhow::Result<Vec<f64>> {
        let mut out = Vec::with_capacity(samples);
        for _ in 0..samples {
            let at = rng.random_range(range.clone());
            let began = Instant::now();
            let state = logbook_server::projection::state_at(&store, session, Seq::new(at))
                .map_err(|e| anyhow::anyhow!(e.message))?;
            out.push(began.elapsed().as_secs_f64() * 1e3);
            assert_eq!(state.next_seq, at + 1);
        }
        Ok(out)
    };
    let mut near_start = time_at(0..2_048.min(n))?;
    let mut anywhere = time_at(0..n)?;
    let (s50, s99) = (percentile(&mut near_start, 0.5), percentile(&mut near_start, 0.99));
    let (a50, a99) = (percentile(&mut anywhere, 0.5), percentile(&mut anywhere, 0.99));
    println!("state_at near the start: p50 {s50:.2} ms p99 {s99:.2} ms");
    println!(
        "state_at anywhere in {n}: p50 {a50:.2} ms p99 {a99:.2} ms  (ratio p50 {:.2}x, target <= 2x and <= 50 ms)",
        a50 / s50
    );

    // Verify: the chain from the store vs raw blake3 over the same bytes.
    let mut canonical = Vec::new();
    let mut next = Seq::ZERO;
    loop {
        let page = store.read(session, next, logbook_store::MAX_READ_RECORDS)?;
        let Some(last) = page.last() else { break };
        next = Seq::new(last.seq().get() + 1);
        for record in &page {
            if let logbook_core::record::Body::Canonical(bytes) = record.body() {
                canonical.push(bytes.clone());
            }
        }
    }
    let bytes: u64 = canonical.iter().map(|b| b.len() as u64).sum();
    let began = Instant::now();
    for record in &canonical {
        std::hint::black_box(blake3::hash(record));
    }
    let raw = bytes as f64 / began.elapsed().as_secs_f64() / 1e6;
    drop(canonical);
    for (depth, what) in [
        (logbook_core::verify::Depth::Links, "hash links"),
        (logbook_core::verify::Depth::Entries, "links and entries decoded (the audit endpoint)"),
    ] {
        let began = Instant::now();
        let mut verifier = logbook_core::verify::Verifier::new(logbook_core::verify::Anchor::GENESIS, depth);
        let mut next = Seq::ZERO;
        loop {
            let page = store.read(session, next, logbook_store::MAX_READ_RECORDS)?;
            let Some(last) = page.last() else { break };
            next = Seq::new(last.seq().get() + 1);
            verifier.push_all(&page);
        }
        let report = verifier.finish();
        anyhow::ensure!(report.is_intact(), "the generated chain does not verify");
        let ours = bytes as f64 / began.elapsed().as_secs_f64() / 1e6;
        println!(
            "verify from the store ({what}): {ours:.0} MB/s; raw blake3 in memory: {raw:.0} MB/s  (ratio {:.2}x)",
            ours / raw
        );
    }

    // Fork: the log part (the store's fork by reference) of a 1k-event
    // session and of the long one, side by side; then a whole fork as the
    // endpoint makes it (the state at the fork point, its workspace written
    // to disk, the log forked), whose cost follows the workspace's size.
    let small = SessionId::from_parts(1_764_000_000_000, 2);
    let mut small_gen = Gen::new(9);
    while store.head(small)?.next.get() < 1_000 {
        small_gen.turn();
        let base = store.head(small)?.next.get();
        store.append(small, Seq::new(base), &std::mem::take(&mut small_gen.entries))?;
    }
    let n_small = store.head(small)?.next.get();
    let mut n_children = 1_000u128;
    let mut fork_times = |parent: SessionId, len: u64| -> anyhow::Result<Vec<f64>> {
        let mut out = Vec::with_capacity(samples);
        for _ in 0..samples {
            n_children += 1;
            let child = SessionId::from_parts(1_764_000_000_000, n_children);
            let at = Seq::new(rng.random_range(0..len));
            let began = Instant::now();
            logbook_store::Fork::fork(&store, child, parent, at, &[])?;
            out.push(began.elapsed().as_secs_f64() * 1e3);
        }
        Ok(out)
    };
    let mut small_forks = fork_times(small, n_small)?;
    let mut long_forks = fork_times(session, n)?;
    let (f50, f99) = (percentile(&mut small_forks, 0.5), percentile(&mut small_forks, 0.99));
    let (l50, l99) = (percentile(&mut long_forks, 0.5), percentile(&mut long_forks, 0.99));
    println!("fork of a {n_small}-event session: p50 {f50:.3} ms p99 {f99:.3} ms");
    println!(
        "fork of the {n}-event session: p50 {l50:.3} ms p99 {l99:.3} ms  (ratio p50 {:.2}x, target <= 5 ms and independent of length)",
        l50 / f50
    );
    // The files' contents, stored by 16 writers so their syncs are shared.
    let began = Instant::now();
    let n_contents = contents.len();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let workers: Vec<_> = contents
            .chunks(n_contents.div_ceil(16).max(1))
            .map(|part| {
                let store = &store;
                scope.spawn(move || part.iter().try_for_each(|c| logbook_store::Blobs::put_blob(store, c).map(|_| ())))
            })
            .collect();
        for worker in workers {
            worker.join().map_err(|_| anyhow::anyhow!("a blob writer panicked"))??;
        }
        Ok(())
    })?;
    drop(contents);
    eprintln!("stored {n_contents} file contents in {:.1} s", began.elapsed().as_secs_f64());
    let mut whole = Vec::new();
    let mut n_files = 0;
    for i in 0..samples.min(20) {
        let at = Seq::new(rng.random_range(0..n));
        let target = tempfile::tempdir()?;
        n_children += 1;
        let child = SessionId::from_parts(1_764_000_000_000, n_children);
        let began = Instant::now();
        let state =
            logbook_server::projection::state_at(&store, session, at).map_err(|e| anyhow::anyhow!(e.message))?;
        logbook_server::workspace::write_tree(
            &state.workspace,
            &store,
            &target.path().join("workspace"),
            &target.path().join("outputs"),
            None,
        )?;
        logbook_store::Fork::fork(&store, child, session, at, &[])?;
        whole.push(began.elapsed().as_secs_f64() * 1e3);
        if i == 0 {
            n_files = state.workspace.len();
        }
    }
    let (w50, w99) = (percentile(&mut whole, 0.5), percentile(&mut whole, 0.99));
    println!(
        "a whole fork of the {n}-event session (state, {n_files}-file workspace written, log): p50 {w50:.1} ms p99 {w99:.1} ms"
    );

    // The low-token context at turn 100 of long coding sessions.
    for seed in 0..3u64 {
        let mut coding = Gen::new(100 + seed);
        coding.push(Event::AgentConfig(AgentConfig {
            agent: Json::new(
                &json!({"model": {"id": "claude-sonnet-4-6"}, "system": "You are a careful engineer.", "tools": []}),
            ),
            options: Json::new(&json!({})),
        }));
        let mut full = logbook_replay::Context::default();
        let mut seq = 0u64;
        for _ in 0..100 {
            coding.turn();
            for entry in coding.entries.drain(..) {
                if !matches!(entry.event, Event::Compaction(_)) {
                    full.apply(seq, &entry);
                }
                seq += 1;
            }
        }
        let instruction = "LATEST: rename the config module and fix the tests";
        coding.push(Event::UserMessage(UserMessage { content: vec![ContentBlock::Text { text: instruction.into() }] }));
        coding.tool_round(2);
        for entry in coding.entries.drain(..) {
            if !matches!(entry.event, Event::Compaction(_)) {
                full.apply(seq, &entry);
            }
            seq += 1;
        }
        let full_tokens = full.estimate_tokens();
        let fitted = fit(&coding.state, Some("You are a careful engineer."), DEFAULT_BUDGET_TOKENS);
        let text = serde_json::to_string(&fitted.messages)?;
        let kept = text.contains(instruction);
        println!(
            "context at turn 100 (seed {seed}): {} tokens of {full_tokens} for the whole history = {:.3} (target <= 0.2); latest instruction kept: {kept}",
            fitted.estimated_tokens,
            fitted.estimated_tokens as f64 / full_tokens as f64
        );
    }
    Ok(())
}
