//! Properties of the whole-state projection, compaction planning and the
//! low-token context, over random session logs.
//!
//! Goal: a state resumed from a checkpoint (its JSON) equals the state folded
//! from seq 0, at every seq; a compaction never separates a tool use from its
//! result and always keeps the newest message; a fitted context never exceeds
//! its budget and keeps the latest instruction and the open calls.
//! Method: proptest over logs made of turns with tool calls, results,
//! workspace deltas, settings and compactions planned by `plan_compaction`
//! itself, as the runner would.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

use logbook_core::event::{
    AgentConfig, AgentToolResult, AgentToolUse, Compaction, ContentBlock, Event, FileChange, ModelResponse,
    SessionStatusIdle, SessionStatusRunning, SpanModelRequestEnd, SpanModelRequestStart, StopReason, ToolUseLink,
    UserMessage, WorkspaceChange, WorkspaceDelta,
};
use logbook_core::{Entry, EventId, Json, Timestamp};
use logbook_replay::SessionState;
use logbook_replay::context::plan_compaction;
use logbook_replay::fit::fit;
use proptest::prelude::*;
use serde_json::{Value, json};

/// One step of a generated session.
#[derive(Debug, Clone)]
enum Step {
    UserMessage(usize),
    /// A model response with this many tool calls, each result this long.
    ToolRound {
        calls: usize,
        result_chars: usize,
    },
    FinalAnswer,
    /// Write or remove a file.
    Delta {
        path: u8,
        remove: bool,
    },
    Compact,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1usize..400).prop_map(Step::UserMessage),
        ((1usize..4), (0usize..3000)).prop_map(|(calls, result_chars)| Step::ToolRound { calls, result_chars }),
        Just(Step::FinalAnswer),
        (any::<u8>(), any::<bool>()).prop_map(|(path, remove)| Step::Delta { path: path % 16, remove }),
        Just(Step::Compact),
    ]
}

struct Builder {
    entries: Vec<Entry>,
    state: SessionState,
    n: u128,
}

impl Builder {
    fn new() -> Builder {
        let mut b = Builder { entries: Vec::new(), state: SessionState::new(), n: 0 };
        b.push(Event::AgentConfig(AgentConfig {
            agent: Json::new(&json!({"model": {"id": "claude-sonnet-4-6"}, "system": "Be brief.", "tools": []})),
            options: Json::new(
                &json!({"compaction": {"window_tokens": 4000, "trigger_tokens": 3000, "keep_tokens": 800}}),
            ),
        }));
        b
    }

    fn push(&mut self, event: Event) -> EventId {
        self.n += 1;
        let id = EventId::from_parts(1_764_000_000_000, self.n);
        let entry = Entry { id, event, at: Timestamp::from_unix_micros(self.n as i64 * 1000) };
        self.state.apply(&entry);
        self.entries.push(entry);
        id
    }

    fn model_call(&mut self, content: Value, links: Vec<ToolUseLink>) -> EventId {
        let start = self.push(Event::SpanModelRequestStart(SpanModelRequestStart {}));
        self.push(Event::ModelResponse(ModelResponse {
            model_request_start_id: start,
            content: Json::new(&content),
            tool_uses: links,
        }));
        self.push(Event::SpanModelRequestEnd(SpanModelRequestEnd {
            model_request_start_id: start,
            model_usage: Default::default(),
            is_error: Some(false),
        }));
        start
    }

    fn apply(&mut self, step: &Step) {
        match step {
            Step::UserMessage(len) => {
                self.push(Event::UserMessage(UserMessage {
                    content: vec![ContentBlock::Text { text: "u".repeat(*len) }],
                }));
                self.push(Event::SessionStatusRunning(SessionStatusRunning {}));
            }
            Step::ToolRound { calls, result_chars } => {
                let base = self.n + 10;
                let blocks: Vec<Value> = (0..*calls)
                    .map(|k| json!({"type": "tool_use", "id": format!("toolu_{base}_{k}"), "name": "bash", "input": {"command": "ls"}}))
                    .collect();
                // Ids of the public tool-use events, chosen after the response.
                let n_before = self.n;
                let links: Vec<ToolUseLink> = (0..*calls)
                    .map(|k| ToolUseLink {
                        provider_id: format!("toolu_{base}_{k}"),
                        event_id: EventId::from_parts(1_764_000_000_000, n_before + 4 + k as u128),
                    })
                    .collect();
                self.model_call(Value::Array(blocks), links.clone());
                let ids: Vec<EventId> = (0..*calls)
                    .map(|_| {
                        self.push(Event::AgentToolUse(AgentToolUse {
                            name: "bash".into(),
                            input: Json::new(&json!({"command": "ls"})),
                            evaluated_permission: None,
                            evaluation: None,
                            session_thread_id: None,
                        }))
                    })
                    .collect();
                assert_eq!(ids, links.iter().map(|l| l.event_id).collect::<Vec<_>>());
                for id in ids {
                    self.push(Event::AgentToolResult(AgentToolResult {
                        tool_use_id: id,
                        content: Some(vec![ContentBlock::Text { text: "r".repeat(*result_chars) }]),
                        is_error: Some(false),
                    }));
                }
            }
            Step::FinalAnswer => {
                self.model_call(json!([{"type": "text", "text": "done"}]), Vec::new());
                self.push(Event::SessionStatusIdle(SessionStatusIdle {
                    stop_reason: StopReason::EndTurn,
                    stop_details: None,
                }));
            }
            Step::Delta { path, remove } => {
                let change = if *remove {
                    FileChange::Removed
                } else {
                    FileChange::Written { blob: [*path; 32], size: u64::from(*path), mode: 0o644 }
                };
                self.push(Event::WorkspaceDelta(WorkspaceDelta {
                    tool_use_id: None,
                    changes: vec![WorkspaceChange { path: format!("/workspace/d{}/f{path}", path % 3), change }],
                }));
            }
            Step::Compact => {
                if let Some(plan) = plan_compaction(&self.state.context, 500) {
                    let kept_first =
                        self.state.context.messages().iter().find(|m| m.first_seq > plan.through_seq).cloned();
                    self.push(Event::Compaction(Compaction {
                        summary: format!("summary through {}", plan.through_seq),
                        through_seq: plan.through_seq,
                        tokens_before: plan.tokens_before,
                        tokens_after: plan.tokens_kept,
                        model: None,
                        usage: Default::default(),
                    }));
                    // The newest message is always kept, and the kept part never
                    // opens on tool results.
                    let kept = self.state.context.messages();
                    assert!(!kept.is_empty(), "a compaction kept nothing");
                    assert_eq!(kept.first().cloned(), kept_first);
                    let first = &kept[0];
                    assert!(
                        first.content.first().is_none_or(|b| b["type"] != "tool_result"),
                        "the kept part opens on a tool result"
                    );
                }
            }
        }
    }
}

/// Every tool_result answers a tool_use of the message right before it.
fn assert_pairs(messages: &[Value]) {
    for (index, message) in messages.iter().enumerate() {
        for block in message["content"].as_array().into_iter().flatten().filter(|b| b["type"] == "tool_result") {
            let before = &messages[index - 1];
            assert!(
                before["content"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|b| b["type"] == "tool_use" && b["id"] == block["tool_use_id"]),
                "a tool_result without its tool_use in {messages:#?}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn resuming_from_a_checkpoint_equals_folding_from_the_start(steps in prop::collection::vec(step(), 1..40), cut in any::<prop::sample::Index>()) {
        let mut builder = Builder::new();
        for step in &steps {
            builder.apply(step);
        }
        let entries = &builder.entries;
        let cut = cut.index(entries.len());
        let mut at_cut = SessionState::new();
        for entry in &entries[..cut] {
            at_cut.apply(entry);
        }
        let saved = serde_json::to_string(&at_cut).unwrap();
        let mut resumed: SessionState = serde_json::from_str(&saved).unwrap();
        for entry in &entries[cut..] {
            resumed.apply(entry);
        }
        prop_assert_eq!(&resumed, &builder.state);
        prop_assert_eq!(&SessionState::project(entries), &builder.state);
        let messages = builder.state.context.messages_json();
        assert_pairs(&messages);
        // The running token count is the count of what is sent.
        let counted: u64 = messages.iter().map(logbook_replay::tokens::message).sum();
        prop_assert_eq!(builder.state.context.estimate_tokens(), counted);
    }

    #[test]
    fn a_fitted_context_fits_and_keeps_the_instruction_and_open_calls(
        steps in prop::collection::vec(step(), 1..40),
        budget in 512u64..20_000,
        open_calls in 0usize..3,
    ) {
        let mut builder = Builder::new();
        builder.apply(&Step::UserMessage(50));
        for step in &steps {
            builder.apply(step);
        }
        builder.push(Event::UserMessage(UserMessage { content: vec![ContentBlock::Text { text: "LATEST INSTRUCTION: fix the build".into() }] }));
        if open_calls > 0 {
            // A response whose calls have no results yet.
            let blocks: Vec<Value> = (0..open_calls).map(|k| json!({"type": "tool_use", "id": format!("toolu_open_{k}"), "name": "bash", "input": {"command": "make"}})).collect();
            builder.model_call(Value::Array(blocks), Vec::new());
        }
        let fitted = fit(&builder.state, Some("Be brief."), budget);
        prop_assert!(fitted.estimated_tokens <= budget, "{} > {budget}", fitted.estimated_tokens);
        let text = serde_json::to_string(&fitted.messages).unwrap();
        prop_assert!(text.contains("LATEST INSTRUCTION: fix the build"));
        for k in 0..open_calls {
            let open_id = format!("toolu_open_{k}");
            prop_assert!(text.contains(&open_id));
        }
        prop_assert_eq!(&fitted.messages[0]["role"], "user");
        assert_pairs(&fitted.messages);
    }
}

#[test]
fn a_fitted_context_fits_even_when_the_newest_message_has_many_small_blocks() {
    // Goal: fit.rs promises "the result never exceeds the budget, shrinking
    // previews further when it must". Shrinking only shortens long strings;
    // a newest message made of many short blocks (a user.message of 150
    // lines sent as blocks, an MCP result of many parts) costs its block
    // framing whatever the edge, so the fitted context overshoots the budget
    // several times over. Method: one such message, the smallest budget.
    let mut builder = Builder::new();
    let blocks = (0..150).map(|k| ContentBlock::Text { text: format!("line {k}") }).collect();
    builder.push(Event::UserMessage(UserMessage { content: blocks }));
    let budget = logbook_replay::fit::MIN_BUDGET_TOKENS;
    let fitted = fit(&builder.state, Some("Be brief."), budget);
    assert!(fitted.estimated_tokens <= budget, "{} > {budget}", fitted.estimated_tokens);
}

#[test]
fn a_fork_taken_mid_turn_does_not_bill_the_time_between_the_parents_turn_and_the_fork() {
    // Goal: usage counts running time "from each session.status_running to
    // the next idle", so idle time never bills. A fork taken in the middle of
    // a turn inherits the open `session.status_running` of its parent; its
    // own records start at `x.fork_origin`, made whenever the fork was
    // requested (a day later, here). The fold keeps the parent's clock
    // running across that gap, so the fork's `active_seconds` (and its
    // list_cost, which prices runtime, and so its budget) include the whole
    // day. Method: a turn running for 5 s in the parent, a fork a day later
    // whose turn runs 10 s more.
    use logbook_core::SessionId;
    use logbook_core::event::ForkOrigin;
    use logbook_replay::usage::totals;

    const SECOND: i64 = 1_000_000;
    let at = |micros: i64, n: u128, event: Event| Entry {
        id: EventId::from_parts(1_764_000_000_000, n),
        event,
        at: Timestamp::from_unix_micros(1_764_000_000_000_000 + micros),
    };
    let text = vec![ContentBlock::Text { text: "go".into() }];
    let log = vec![
        at(0, 1, Event::UserMessage(UserMessage { content: text })),
        at(0, 2, Event::SessionStatusRunning(SessionStatusRunning {})),
        at(5 * SECOND, 3, Event::SpanModelRequestStart(SpanModelRequestStart {})),
        // The fork: the parent's records up to here, then its own.
        at(
            86_400 * SECOND,
            4,
            Event::ForkOrigin(ForkOrigin {
                parent_session_id: SessionId::from_parts(1_764_000_000_000, 9),
                parent_seq: 2,
                parent_chain_hash: [0; 32],
            }),
        ),
        at(
            86_410 * SECOND,
            5,
            Event::SessionStatusIdle(SessionStatusIdle { stop_reason: StopReason::EndTurn, stop_details: None }),
        ),
    ];
    let active = totals(&log).active_micros / SECOND as u64;
    assert!(active <= 15, "the fork bills {active} s of running time for a turn that ran 15 s");
}

#[test]
fn a_fitted_context_fits_when_the_newest_tool_result_has_many_small_blocks() {
    // Goal: the fix for many small blocks (merge_text_runs) joins runs of
    // text blocks at a message's top level only. The case its own test names,
    // "an MCP result of many parts", is a tool_result whose *inner* content
    // holds the many blocks: they are never merged, so the fitted context
    // still overshoots its budget several times over. Method: one call whose
    // result has 150 short text parts, the smallest budget.
    let mut builder = Builder::new();
    builder.push(Event::UserMessage(UserMessage { content: vec![ContentBlock::Text { text: "go".into() }] }));
    builder.push(Event::SessionStatusRunning(SessionStatusRunning {}));
    let n_before = builder.n;
    let link = ToolUseLink {
        provider_id: "toolu_many".into(),
        event_id: EventId::from_parts(1_764_000_000_000, n_before + 4),
    };
    builder.model_call(
        json!([{"type": "tool_use", "id": "toolu_many", "name": "bash", "input": {"command": "ls"}}]),
        vec![link],
    );
    let id = builder.push(Event::AgentToolUse(AgentToolUse {
        name: "bash".into(),
        input: Json::new(&json!({"command": "ls"})),
        evaluated_permission: None,
        evaluation: None,
        session_thread_id: None,
    }));
    builder.push(Event::AgentToolResult(AgentToolResult {
        tool_use_id: id,
        content: Some((0..150).map(|k| ContentBlock::Text { text: format!("part {k}") }).collect()),
        is_error: Some(false),
    }));
    let budget = logbook_replay::fit::MIN_BUDGET_TOKENS;
    let fitted = fit(&builder.state, Some("Be brief."), budget);
    assert!(fitted.estimated_tokens <= budget, "{} > {budget}", fitted.estimated_tokens);
}

#[test]
fn a_fitted_context_does_not_bring_back_the_input_a_refusal_took_out() {
    // Goal: after `stop_reason: refusal` the context takes the refused turn
    // and the input that drew it out (the provider refuses every later
    // request that still holds them), so the state API's request no longer
    // holds it. The low-token context (`fit`, for applications that continue
    // a session cheaply) adds `last_user_message` back as "The latest user
    // instruction" whenever it is not among the kept messages, which is
    // exactly the case after a refusal: the fitted context sends the refused
    // input again, first, before the older turn it never preceded.
    // Method: a turn answered, a second input refused with no content; the
    // fitted context must not hold the refused input.
    use logbook_core::event::ModelRequest;

    let mut builder = Builder::new();
    builder.apply(&Step::UserMessage(5));
    builder.apply(&Step::FinalAnswer);
    builder.push(Event::UserMessage(UserMessage {
        content: vec![ContentBlock::Text { text: "something the classifier stops".into() }],
    }));
    builder.push(Event::SessionStatusRunning(SessionStatusRunning {}));
    let start = builder.model_call(json!([]), Vec::new());
    builder.push(Event::ModelRequest(ModelRequest {
        model_request_start_id: start,
        model: "claude-sonnet-4-6".into(),
        request_id: None,
        stop_reason: Some("refusal".into()),
        usage: Default::default(),
        duration_ms: 1,
        attempt: 1,
    }));
    builder.push(Event::SessionStatusIdle(SessionStatusIdle { stop_reason: StopReason::Refusal, stop_details: None }));
    let sent = serde_json::to_string(&builder.state.context.messages_json()).unwrap();
    assert!(!sent.contains("classifier stops"), "the context itself keeps the refused input: {sent}");
    let fitted = fit(&builder.state, Some("Be brief."), logbook_replay::fit::DEFAULT_BUDGET_TOKENS);
    let text = serde_json::to_string(&fitted.messages).unwrap();
    assert!(!text.contains("classifier stops"), "the fitted context sends the refused input again: {text}");
}

#[test]
fn a_fitted_context_fits_when_the_newest_turn_made_many_parallel_calls() {
    // Goal: fit.rs promises "the result never exceeds the budget". The newest
    // message is always kept, and when it holds tool results the assistant
    // message with their calls is added too, outside the budget. Neither can
    // shrink: `merge_text_runs` joins only plain text blocks, and
    // `shrink_strings` leaves ids and names alone, so each tool_use and
    // tool_result block costs its framing whatever the edge. A turn with many
    // parallel calls (the model checking 30 services at once) gives a
    // fitted context several times its budget, and `estimated_tokens` says so.
    // Method: one response with 30 calls and their short results, the
    // smallest budget.
    let mut builder = Builder::new();
    builder.apply(&Step::UserMessage(40));
    builder.apply(&Step::ToolRound { calls: 30, result_chars: 20 });
    let budget = logbook_replay::fit::MIN_BUDGET_TOKENS;
    let fitted = fit(&builder.state, Some("Be brief."), budget);
    assert!(fitted.estimated_tokens <= budget, "{} > {budget}", fitted.estimated_tokens);
    assert!(fitted.elided.iter().any(|e| matches!(e, logbook_replay::fit::Elided::ToolCalls { count: 30 })));
    // Every result left still answers a call of the message before it.
    for pair in fitted.messages.windows(2) {
        let calls: Vec<&Value> = pair[0]["content"].as_array().unwrap().iter().map(|b| &b["id"]).collect();
        for block in pair[1]["content"].as_array().unwrap() {
            if block["type"] == "tool_result" {
                assert!(calls.contains(&&block["tool_use_id"]), "{block} answers no call");
            }
        }
    }
}

#[test]
fn a_fitted_context_counts_the_citations_of_cited_answer_text() {
    // Goal: the fitted context promises to fit its budget. An answer drawn
    // from web search comes as many text blocks, each with `citations`
    // (url, title, cited_text up to 150 characters, encrypted_index).
    // tokens::block counts a text block by its `text` alone, so the
    // citations cost nothing in the estimate: the fit keeps them whole and
    // reports a few thousand tokens for a context several times the budget.
    // Method: one such answer as the newest message, the default budget;
    // compare the reported estimate with the plain byte count of what is
    // returned (3 bytes a token, the estimator's own rate).
    let mut builder = Builder::new();
    builder.push(Event::UserMessage(UserMessage { content: vec![ContentBlock::text("What changed in Rust 1.90?")] }));
    let blocks: Vec<Value> = (0..200)
        .map(|k| {
            json!({"type": "text", "text": format!("Claim {k}."), "citations": [{
                "type": "web_search_result_location",
                "url": format!("https://blog.rust-lang.test/2025/09/18/post-{k}"),
                "title": format!("Announcing Rust 1.90.0, part {k}"),
                "cited_text": "c".repeat(150),
                "encrypted_index": "e".repeat(200),
            }]})
        })
        .collect();
    builder.model_call(Value::Array(blocks), Vec::new());
    let budget = logbook_replay::fit::DEFAULT_BUDGET_TOKENS;
    let fitted = fit(&builder.state, Some("Be brief."), budget);
    assert!(fitted.estimated_tokens <= budget, "{} > {budget}", fitted.estimated_tokens);
    let bytes = serde_json::to_string(&fitted.messages).unwrap().len() as u64;
    let plain = bytes.div_ceil(logbook_replay::tokens::BYTES_PER_TOKEN);
    assert!(
        plain <= budget,
        "the fitted context is {bytes} bytes ({plain} tokens at 3 bytes a token) for a budget of {budget}; it \
         reports {} estimated tokens",
        fitted.estimated_tokens
    );
}
