//! The benchmark workload: sessions of realistic agent events.
//!
//! Each session follows the shape of a real agent transcript: a user message,
//! `session.status_running`, then model turns (`span.model_request_start`, an
//! optional `agent.message`, `agent.tool_use`, `span.model_request_end`,
//! `agent.tool_result`), a closing `agent.message`, usage and
//! `session.status_idle`, and again. Tool results are 0.3–4 KiB of shell output,
//! source, listings, diffs or logs; about every 50th event is a 50–500 KiB tool
//! output instead. Text comes from [`crate::text`]. Everything is a function of
//! the seed and the session's index, so sessions can be generated in parallel,
//! in any order, and identically on every run.

use logbook_core::event::{
    AgentMessage, AgentToolResult, AgentToolUse, AutoPermission, ContentBlock, EvaluatedPermission, ModelUsage,
    SessionStatusIdle, SessionStatusRunning, SessionUsage, SpanModelRequestEnd, SpanModelRequestStart, Speed,
    StopReason, ToolEvaluation, UsageSnapshot, UserMessage,
};
use logbook_core::{Entry, Event, EventId, Json, SessionId, Timestamp};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::json;

use crate::text;

/// 2026-11-29T00:00:00Z in milliseconds: when the generated sessions start.
const T0_MS: u64 = 1_764_374_400_000;

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkloadConfig {
    pub seed: u64,
    pub n_sessions: usize,
    pub events_per_session: usize,
    /// One event in about this many is a large (50–500 KiB) tool output; 0 for none.
    pub big_every: usize,
}

impl WorkloadConfig {
    /// The workload shape: 100 sessions, a large output every ~50 events.
    pub fn new(seed: u64, events_per_session: usize) -> Self {
        WorkloadConfig { seed, n_sessions: 100, events_per_session, big_every: 50 }
    }
}

/// One session's events, in log order.
#[derive(Debug, Clone)]
pub struct SessionLog {
    pub session: SessionId,
    pub entries: Vec<Entry>,
}

/// Every session of `config`, generated on up to `threads` threads.
pub fn generate(config: &WorkloadConfig, threads: usize) -> Vec<SessionLog> {
    let threads = threads.clamp(1, config.n_sessions.max(1));
    let mut out: Vec<Option<SessionLog>> = vec![None; config.n_sessions];
    std::thread::scope(|scope| {
        for (part, chunk) in out.chunks_mut(config.n_sessions.div_ceil(threads).max(1)).enumerate() {
            let first = part * config.n_sessions.div_ceil(threads).max(1);
            scope.spawn(move || {
                for (offset, slot) in chunk.iter_mut().enumerate() {
                    *slot = Some(session(config, first + offset));
                }
            });
        }
    });
    out.into_iter().flatten().collect()
}

/// The session with index `idx` of `config`.
pub fn session(config: &WorkloadConfig, idx: usize) -> SessionLog {
    let mut generator = SessionGen::new(config, idx);
    let entries = (0..config.events_per_session).map(|_| generator.next_entry()).collect();
    SessionLog { session: generator.session, entries }
}

/// The id of session `idx` under `seed`, without generating its events.
pub fn session_id(seed: u64, idx: usize) -> SessionId {
    let mut rng = StdRng::seed_from_u64(mix(seed, idx as u64));
    SessionId::from_parts(T0_MS + idx as u64 * 1000, rng.random())
}

/// The JSONL form of one event: the API event object plus `session_id`, no newline.
pub fn jsonl_line(session: SessionId, entry: &Entry) -> Result<String, serde_json::Error> {
    let mut value = serde_json::to_value(entry)?;
    if let Some(object) = value.as_object_mut() {
        object.insert("session_id".to_owned(), json!(session.to_string()));
    }
    serde_json::to_string(&value)
}

/// A stream of one session's events.
#[derive(Debug)]
pub struct SessionGen {
    pub session: SessionId,
    rng: StdRng,
    big_every: usize,
    /// Events until the next large tool output.
    until_big: usize,
    now_ms: u64,
    /// Events still to emit for the current step, in order.
    pending: Vec<Event>,
    turn_phase: Phase,
    tools_left: usize,
    last_request_start: EventId,
    last_tool_use: EventId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    UserTurn,
    ToolCycle,
    Close,
}

impl SessionGen {
    pub fn new(config: &WorkloadConfig, idx: usize) -> Self {
        let session = session_id(config.seed, idx);
        let mut rng = StdRng::seed_from_u64(mix(config.seed, idx as u64) ^ 0x5e55_1011);
        let until_big = next_gap(&mut rng, config.big_every);
        SessionGen {
            session,
            rng,
            big_every: config.big_every,
            until_big,
            now_ms: T0_MS + idx as u64 * 1000,
            pending: Vec::new(),
            turn_phase: Phase::UserTurn,
            tools_left: 0,
            last_request_start: EventId::from_parts(T0_MS, 0),
            last_tool_use: EventId::from_parts(T0_MS, 0),
        }
    }

    /// The next event of the session, with its id and time.
    pub fn next_entry(&mut self) -> Entry {
        if self.pending.is_empty() {
            self.refill();
        }
        self.until_big = self.until_big.saturating_sub(1);
        self.now_ms += self.rng.random_range(5..4000);
        let id = EventId::from_parts(self.now_ms, self.rng.random());
        // `refill` always pushes at least one event; the fallback is unreachable.
        let mut event = if self.pending.is_empty() {
            Event::SessionStatusRunning(SessionStatusRunning {})
        } else {
            self.pending.remove(0)
        };
        // Results and span ends refer to the tool use or span start before them.
        if let Event::SpanModelRequestStart(_) = &event {
            self.last_request_start = id;
        }
        if let Event::AgentToolUse(_) = &event {
            self.last_tool_use = id;
        }
        if let Event::AgentToolResult(result) = &mut event {
            result.tool_use_id = self.last_tool_use;
        }
        if let Event::SpanModelRequestEnd(end) = &mut event {
            end.model_request_start_id = self.last_request_start;
        }
        Entry { id, event, at: Timestamp::from_unix_micros((self.now_ms * 1000) as i64) }
    }

    fn refill(&mut self) {
        match self.turn_phase {
            Phase::UserTurn => {
                let rng = &mut self.rng;
                let target = rng.random_range(60..600);
                let mut content = vec![ContentBlock::text(text::prose(rng, target))];
                if rng.random_bool(0.25) {
                    let target = rng.random_range(300..2500);
                    let pasted =
                        if rng.random_bool(0.5) { text::code(rng, target) } else { text::log_lines(rng, target) };
                    content.push(ContentBlock::text(pasted));
                }
                self.pending.push(Event::UserMessage(UserMessage { content }));
                self.pending.push(Event::SessionStatusRunning(SessionStatusRunning {}));
                self.tools_left = self.rng.random_range(1..8);
                self.turn_phase = Phase::ToolCycle;
            }
            Phase::ToolCycle => {
                self.pending.push(Event::SpanModelRequestStart(SpanModelRequestStart {}));
                if self.rng.random_bool(0.4) {
                    let target = self.rng.random_range(80..700);
                    let message = text::prose(&mut self.rng, target);
                    self.pending.push(Event::AgentMessage(AgentMessage { content: vec![ContentBlock::text(message)] }));
                }
                let event = self.tool_use();
                self.pending.push(event);
                let event = self.request_end();
                self.pending.push(event);
                let event = self.tool_result();
                self.pending.push(event);
                self.tools_left = self.tools_left.saturating_sub(1);
                if self.tools_left == 0 {
                    self.turn_phase = Phase::Close;
                }
            }
            Phase::Close => {
                self.pending.push(Event::SpanModelRequestStart(SpanModelRequestStart {}));
                let target = self.rng.random_range(300..2000);
                let message = text::prose(&mut self.rng, target);
                self.pending.push(Event::AgentMessage(AgentMessage { content: vec![ContentBlock::text(message)] }));
                let event = self.request_end();
                self.pending.push(event);
                if self.rng.random_bool(0.5) {
                    let event = self.usage();
                    self.pending.push(event);
                }
                self.pending.push(Event::SessionStatusIdle(SessionStatusIdle {
                    stop_reason: StopReason::EndTurn,
                    stop_details: None,
                }));
                self.turn_phase = Phase::UserTurn;
            }
        }
    }

    fn tool_use(&mut self) -> Event {
        let rng = &mut self.rng;
        let (name, input) = match rng.random_range(0..10) {
            0..=3 => ("bash", json!({"command": text::command(rng), "timeout_ms": 120_000})),
            4..=5 => {
                ("read", json!({"file_path": text::file_path(rng), "offset": rng.random_range(0..400), "limit": 200}))
            }
            6 => {
                let (old_len, new_len) = (rng.random_range(80..400), rng.random_range(80..600));
                let old = text::code(rng, old_len);
                let new = text::code(rng, new_len);
                ("edit", json!({"file_path": text::file_path(rng), "old_string": old, "new_string": new}))
            }
            7 => {
                let target = rng.random_range(300..3000);
                let content = text::code(rng, target);
                ("write", json!({"file_path": text::file_path(rng), "content": content}))
            }
            8 => ("grep", json!({"pattern": text::ident(rng), "path": text::file_path(rng), "output_mode": "content"})),
            _ => ("glob", json!({"pattern": format!("**/*{}*.rs", text::ident(rng))})),
        };
        let (evaluated_permission, evaluation) = if rng.random_bool(0.8) {
            (Some(EvaluatedPermission::Allow), Some(ToolEvaluation::AlwaysAllow))
        } else {
            (
                Some(EvaluatedPermission::Allow),
                Some(ToolEvaluation::Auto { evaluated_permission: AutoPermission::Allow }),
            )
        };
        Event::AgentToolUse(AgentToolUse {
            name: name.to_owned(),
            input: Json::new(&input),
            evaluated_permission,
            evaluation,
            session_thread_id: None,
        })
    }

    fn tool_result(&mut self) -> Event {
        let big = self.big_every > 0 && self.until_big <= 4;
        let target = if big {
            self.until_big = next_gap(&mut self.rng, self.big_every) + 4;
            self.rng.random_range(50 * 1024..500 * 1024)
        } else {
            self.rng.random_range(300..4096)
        };
        let output = text::tool_output(&mut self.rng, target);
        Event::AgentToolResult(AgentToolResult {
            tool_use_id: EventId::from_parts(T0_MS, 0),
            content: Some(vec![ContentBlock::text(output)]),
            is_error: Some(self.rng.random_bool(0.05)),
        })
    }

    fn request_end(&mut self) -> Event {
        let rng = &mut self.rng;
        Event::SpanModelRequestEnd(SpanModelRequestEnd {
            model_request_start_id: EventId::from_parts(T0_MS, 0),
            model_usage: ModelUsage {
                input_tokens: rng.random_range(200..4000),
                output_tokens: rng.random_range(20..2000),
                cache_creation_input_tokens: rng.random_range(0..8000),
                cache_read_input_tokens: rng.random_range(0..120_000),
                speed: Some(Speed::Standard),
            },
            is_error: Some(false),
        })
    }

    fn usage(&mut self) -> Event {
        let rng = &mut self.rng;
        Event::SessionUsage(SessionUsage {
            usage: UsageSnapshot {
                input_tokens: Some(rng.random_range(1000..200_000)),
                output_tokens: Some(rng.random_range(100..50_000)),
                cache_read_input_tokens: Some(rng.random_range(0..2_000_000)),
                cache_creation: None,
                server_tool_use: None,
                active_seconds: None,
                list_cost: None,
            },
            budget: None,
        })
    }
}

/// Events between two large outputs: uniform in `[every/2, 3*every/2)`, mean `every`.
fn next_gap(rng: &mut StdRng, every: usize) -> usize {
    if every == 0 { usize::MAX } else { rng.random_range(every / 2..every + every / 2).max(1) }
}

/// splitmix64 of `seed` and `idx`: independent streams per session.
fn mix(seed: u64, idx: u64) -> u64 {
    let mut z = seed ^ idx.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
