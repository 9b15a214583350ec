//! Tests of the session state machine: table tests of each flow, and a
//! simulated runner driven by proptest through random model outputs, client
//! actions, interrupts and crashes.

use std::collections::BTreeMap;

use logbook_core::event::{
    AgentConfig, AgentCustomToolUse, AgentToolResult, AgentToolUse, Compaction, ConfirmationResult, ContentBlock,
    EvaluatedPermission, Event, RetryStatus, SessionError, SessionErrorDetail, SessionStatusIdle, SessionStatusRunning,
    SessionUpdated, SpanModelRequestEnd, SpanModelRequestStart, StopReason, ToolStarted, UserCustomToolResult,
    UserInterrupt, UserMessage, UserToolConfirmation, UserToolResult,
};
use logbook_core::{Entry, EventId, Json, Timestamp};
use pretty_assertions::assert_eq;
use proptest::prelude::*;

use super::*;

/// A log under construction, with a machine kept in step.
struct Log {
    entries: Vec<Entry>,
    machine: Machine,
    next_id: u128,
    policy: Policy,
}

impl Log {
    fn new() -> Log {
        Log::with_host(ToolHost::Server)
    }

    /// A log of a session whose built-in tools run on `host`.
    fn with_host(tool_host: ToolHost) -> Log {
        Log {
            entries: Vec::new(),
            machine: Machine::new(),
            next_id: 1,
            policy: Policy { tool_host, ..Policy::default() },
        }
    }

    fn push(&mut self, event: Event) -> EventId {
        let id = EventId::from_parts(1_764_000_000_000, self.next_id);
        self.next_id += 1;
        let entry = Entry { id, event, at: Timestamp::from_unix_micros(0) };
        self.machine.apply(&entry);
        self.entries.push(entry);
        id
    }

    fn next(&self) -> Command {
        self.machine.next(&self.policy)
    }

    fn user_message(&mut self) -> EventId {
        self.push(Event::UserMessage(UserMessage { content: vec![ContentBlock::Text { text: "hi".into() }] }))
    }

    fn model_ok(&mut self) {
        self.push(Event::SpanModelRequestStart(SpanModelRequestStart {}));
        self.push(Event::SpanModelRequestEnd(SpanModelRequestEnd {
            model_request_start_id: EventId::from_parts(0, 0),
            model_usage: Default::default(),
            is_error: Some(false),
        }));
    }

    fn tool_use(&mut self, permission: EvaluatedPermission) -> EventId {
        self.named_tool_use("bash", permission)
    }

    fn named_tool_use(&mut self, name: &str, permission: EvaluatedPermission) -> EventId {
        self.push(Event::AgentToolUse(AgentToolUse {
            name: name.into(),
            input: Json::empty_object(),
            evaluated_permission: Some(permission),
            evaluation: None,
            session_thread_id: None,
        }))
    }

    fn custom_tool_use(&mut self) -> EventId {
        self.push(Event::AgentCustomToolUse(AgentCustomToolUse {
            name: "get_weather".into(),
            input: Json::empty_object(),
            session_thread_id: None,
        }))
    }

    /// A worker's answer to a built-in call.
    fn worker_result(&mut self, tool_use_id: EventId) {
        self.push(Event::UserToolResult(UserToolResult {
            tool_use_id,
            content: None,
            is_error: Some(false),
            session_thread_id: None,
        }));
    }

    fn confirm(&mut self, tool_use_id: EventId, allow: bool) {
        self.push(Event::UserToolConfirmation(UserToolConfirmation {
            tool_use_id,
            result: if allow { ConfirmationResult::Allow } else { ConfirmationResult::Deny },
            deny_message: None,
            session_thread_id: None,
        }));
    }

    fn result(&mut self, tool_use_id: EventId, is_error: bool) {
        self.push(Event::AgentToolResult(AgentToolResult { tool_use_id, content: None, is_error: Some(is_error) }));
    }

    fn idle(&mut self, stop_reason: StopReason) {
        self.push(Event::SessionStatusIdle(SessionStatusIdle { stop_reason, stop_details: None }));
    }

    /// What the runner records to end a step in idle: usage, then the idle.
    fn usage_idle(&mut self, stop_reason: StopReason) {
        self.push(Event::SessionUsage(logbook_core::event::SessionUsage { usage: Default::default(), budget: None }));
        self.idle(stop_reason);
    }

    /// A turn's start as the runner records it: the session's status, then
    /// its primary thread's.
    fn running(&mut self) {
        self.push(Event::SessionStatusRunning(SessionStatusRunning {}));
        self.push(Event::SessionThreadStatusRunning(logbook_core::event::SessionThreadStatusRunning {
            session_thread_id: logbook_core::ThreadId::from_parts(1, 1),
            agent_name: "agent".into(),
        }));
    }
}

#[test]
fn a_plain_turn() {
    let mut log = Log::new();
    assert_eq!(log.next(), Command::Wait);
    log.user_message();
    assert_eq!(log.next(), Command::StartTurn);
    log.running();
    assert_eq!(log.next(), Command::CallModel { attempt: 1 });
    log.model_ok();
    assert_eq!(log.next(), Command::EndTurn);
    log.idle(StopReason::EndTurn);
    assert_eq!(log.next(), Command::Wait);
}

#[test]
fn allowed_tools_run_then_the_model_sees_their_results() {
    let mut log = Log::new();
    log.user_message();
    log.running();
    log.model_ok();
    let tool = log.tool_use(EvaluatedPermission::Allow);
    assert_eq!(log.next(), Command::RunTools(vec![tool]));
    log.push(Event::ToolStarted(ToolStarted { tool_use_ids: vec![tool] }));
    log.result(tool, false);
    assert_eq!(log.next(), Command::CallModel { attempt: 1 });
}

#[test]
fn always_ask_waits_for_confirmation_and_denial_gives_an_error_result() {
    for allow in [true, false] {
        let mut log = Log::new();
        log.user_message();
        log.running();
        log.model_ok();
        let a = log.tool_use(EvaluatedPermission::Ask);
        let b = log.tool_use(EvaluatedPermission::Ask);
        assert_eq!(log.next(), Command::AwaitClient(vec![a, b]));
        log.idle(StopReason::RequiresAction { event_ids: vec![a, b] });
        assert_eq!(log.next(), Command::Wait);
        let result = if allow { ConfirmationResult::Allow } else { ConfirmationResult::Deny };
        let deny_message = (!allow).then(|| "no".to_owned());
        log.push(Event::UserToolConfirmation(UserToolConfirmation {
            tool_use_id: a,
            result,
            deny_message: deny_message.clone(),
            session_thread_id: None,
        }));
        // Resolving some re-idles with the rest.
        assert_eq!(log.next(), Command::AwaitClient(vec![b]));
        log.idle(StopReason::RequiresAction { event_ids: vec![b] });
        log.push(Event::UserToolConfirmation(UserToolConfirmation {
            tool_use_id: b,
            result: ConfirmationResult::Allow,
            deny_message: None,
            session_thread_id: None,
        }));
        assert_eq!(log.next(), Command::StartTurn);
        log.running();
        if allow {
            assert_eq!(log.next(), Command::RunTools(vec![a, b]));
        } else {
            assert_eq!(log.next(), Command::DenyTools(vec![(a, deny_message)]));
            log.result(a, true);
            assert_eq!(log.next(), Command::RunTools(vec![b]));
        }
    }
}

#[test]
fn custom_tools_wait_for_the_client_result() {
    let mut log = Log::new();
    log.user_message();
    log.running();
    log.model_ok();
    let call = log.custom_tool_use();
    assert_eq!(log.next(), Command::AwaitClient(vec![call]));
    log.idle(StopReason::RequiresAction { event_ids: vec![call] });
    log.push(Event::UserCustomToolResult(UserCustomToolResult {
        custom_tool_use_id: call,
        content: None,
        is_error: None,
        session_thread_id: None,
    }));
    assert_eq!(log.next(), Command::StartTurn);
    log.running();
    assert_eq!(log.next(), Command::CallModel { attempt: 1 });
}

#[test]
fn interrupt_closes_open_calls_and_ends_the_turn() {
    let mut log = Log::new();
    log.user_message();
    log.running();
    log.model_ok();
    let call = log.custom_tool_use();
    log.idle(StopReason::RequiresAction { event_ids: vec![call] });
    log.push(Event::UserInterrupt(UserInterrupt { session_thread_id: None }));
    assert_eq!(log.next(), Command::Interrupt { open: vec![call] });
    log.result(call, true);
    log.idle(StopReason::EndTurn);
    assert_eq!(log.next(), Command::Wait, "an interrupt does not start another turn");
}

#[test]
fn an_interrupt_while_idle_is_a_no_op() {
    let mut log = Log::new();
    log.push(Event::UserInterrupt(UserInterrupt { session_thread_id: None }));
    assert_eq!(log.next(), Command::Wait);
}

#[test]
fn a_crash_mid_request_closes_it_and_a_crash_mid_tool_never_reruns_it() {
    let mut log = Log::new();
    log.user_message();
    log.running();
    let start = log.push(Event::SpanModelRequestStart(SpanModelRequestStart {}));
    // The runner died here.
    let recovered = Machine::project(&log.entries);
    assert_eq!(recovered.next(&Policy::default()), Command::CloseModelRequest { start_id: start });

    let mut log = Log::new();
    log.user_message();
    log.running();
    log.model_ok();
    let tool = log.tool_use(EvaluatedPermission::Allow);
    log.push(Event::ToolStarted(ToolStarted { tool_use_ids: vec![tool] }));
    // The runner died while the tool ran.
    let recovered = Machine::project(&log.entries);
    assert_eq!(
        recovered.next(&Policy::default()),
        Command::FailTools { ids: vec![tool], reason: FailReason::Orphaned }
    );
}

#[test]
fn failed_requests_are_retried_then_given_up() {
    let mut log = Log::new();
    log.user_message();
    log.running();
    for attempt in 1..=Policy::default().max_model_attempts {
        assert_eq!(log.next(), Command::CallModel { attempt });
        log.push(Event::SpanModelRequestStart(SpanModelRequestStart {}));
        log.push(Event::SpanModelRequestEnd(SpanModelRequestEnd {
            model_request_start_id: EventId::from_parts(0, 0),
            model_usage: Default::default(),
            is_error: Some(true),
        }));
    }
    assert_eq!(log.next(), Command::GiveUp);
    log.push(Event::SessionError(SessionError {
        error: SessionErrorDetail::ModelOverloadedError {
            message: "overloaded".into(),
            retry_status: RetryStatus::Exhausted,
        },
    }));
    log.idle(StopReason::RetriesExhausted);
    assert_eq!(log.next(), Command::Wait);
}

#[test]
fn a_new_message_supersedes_calls_waiting_on_the_client() {
    let mut log = Log::new();
    log.user_message();
    log.running();
    log.model_ok();
    let call = log.custom_tool_use();
    log.idle(StopReason::RequiresAction { event_ids: vec![call] });
    log.user_message();
    assert_eq!(log.next(), Command::FailTools { ids: vec![call], reason: FailReason::Superseded });
    log.result(call, true);
    assert_eq!(log.next(), Command::StartTurn);
}

/// A call the user already answered (denied, with a message for the model)
/// is not one a new message leaves unanswered: only the calls still waiting
/// are superseded, and the denial is what the model is told of the other.
#[test]
fn a_new_message_does_not_supersede_a_call_the_user_already_denied() {
    let mut log = Log::new();
    log.user_message();
    log.running();
    log.model_ok();
    let asked = log.tool_use(EvaluatedPermission::Ask);
    let custom = log.custom_tool_use();
    assert_eq!(log.next(), Command::AwaitClient(vec![asked, custom]));
    log.idle(StopReason::RequiresAction { event_ids: vec![asked, custom] });
    log.push(Event::UserToolConfirmation(UserToolConfirmation {
        tool_use_id: asked,
        result: ConfirmationResult::Deny,
        deny_message: Some("not on production".to_owned()),
        session_thread_id: None,
    }));
    assert_eq!(log.next(), Command::AwaitClient(vec![custom]));
    log.idle(StopReason::RequiresAction { event_ids: vec![custom] });
    // The user moves on instead of answering the custom tool.
    log.user_message();
    assert_eq!(log.next(), Command::FailTools { ids: vec![custom], reason: FailReason::Superseded });
    log.result(custom, true);
    assert_eq!(log.next(), Command::StartTurn);
    log.running();
    assert_eq!(log.next(), Command::DenyTools(vec![(asked, Some("not on production".to_owned()))]));
}

#[test]
fn in_a_self_hosted_session_allowed_builtin_calls_wait_for_the_worker() {
    // Goal: with the tools on a worker, an allowed built-in call is never run
    // by the runner; the session idles with requires_action naming it until
    // the worker's user.tool_result, then the model sees the result.
    let mut log = Log::with_host(ToolHost::Worker);
    log.user_message();
    assert_eq!(log.next(), Command::StartTurn);
    log.running();
    log.model_ok();
    let a = log.tool_use(EvaluatedPermission::Allow);
    let b = log.named_tool_use("read", EvaluatedPermission::Allow);
    assert_eq!(log.machine.worker_calls(&log.policy), vec![a, b]);
    assert_eq!(log.next(), Command::AwaitClient(vec![a, b]));
    log.usage_idle(StopReason::RequiresAction { event_ids: vec![a, b] });
    assert_eq!(log.next(), Command::Wait);
    log.worker_result(a);
    assert_eq!(log.next(), Command::AwaitClient(vec![b]), "partial answers re-idle with the rest");
    log.usage_idle(StopReason::RequiresAction { event_ids: vec![b] });
    log.worker_result(b);
    assert!(log.machine.worker_calls(&log.policy).is_empty());
    assert_eq!(log.next(), Command::StartTurn);
    log.running();
    assert_eq!(log.next(), Command::CallModel { attempt: 1 });
}

#[test]
fn in_a_self_hosted_session_server_side_and_mcp_tools_still_run_in_logbook() {
    let mut log = Log::with_host(ToolHost::Worker);
    log.user_message();
    log.running();
    log.model_ok();
    let fetch = log.named_tool_use("web_fetch", EvaluatedPermission::Allow);
    let bash = log.tool_use(EvaluatedPermission::Allow);
    assert_eq!(log.next(), Command::RunTools(vec![fetch]));
    log.push(Event::ToolStarted(ToolStarted { tool_use_ids: vec![fetch] }));
    log.result(fetch, false);
    assert_eq!(log.next(), Command::AwaitClient(vec![bash]));
    assert_eq!(log.machine.worker_calls(&log.policy), vec![bash]);
}

#[test]
fn in_a_self_hosted_session_confirmation_comes_before_the_worker() {
    // Goal: permission policies are Logbook's: an ask call is not the
    // worker's until allowed (it is listed while it awaits either), a denied
    // one never is and gets the denial as its result.
    for allow in [true, false] {
        let mut log = Log::with_host(ToolHost::Worker);
        log.user_message();
        log.running();
        log.model_ok();
        let call = log.tool_use(EvaluatedPermission::Ask);
        assert!(log.machine.worker_calls(&log.policy).is_empty(), "not executable before confirmation");
        assert_eq!(log.next(), Command::AwaitClient(vec![call]));
        log.usage_idle(StopReason::RequiresAction { event_ids: vec![call] });
        log.confirm(call, allow);
        if allow {
            assert_eq!(log.machine.worker_calls(&log.policy), vec![call]);
            assert_eq!(log.next(), Command::Wait, "still awaited, now from the worker: no new idle");
            log.worker_result(call);
            assert_eq!(log.next(), Command::StartTurn);
        } else {
            assert!(log.machine.worker_calls(&log.policy).is_empty());
            assert_eq!(log.next(), Command::StartTurn);
            log.running();
            assert_eq!(log.next(), Command::DenyTools(vec![(call, None)]));
        }
    }
    let mut log = Log::with_host(ToolHost::Worker);
    log.user_message();
    log.running();
    log.model_ok();
    let denied = log.tool_use(EvaluatedPermission::Deny);
    assert!(log.machine.worker_calls(&log.policy).is_empty());
    assert_eq!(log.next(), Command::DenyTools(vec![(denied, None)]));
}

#[test]
fn in_a_self_hosted_session_a_new_message_waits_for_calls_in_flight() {
    // Goal: a message sent while a worker runs calls supersedes the calls that
    // wait on the user (custom tools) but not the worker's; the model sees the
    // message with the worker's results.
    let mut log = Log::with_host(ToolHost::Worker);
    log.user_message();
    log.running();
    log.model_ok();
    let bash = log.tool_use(EvaluatedPermission::Allow);
    let custom = log.custom_tool_use();
    assert_eq!(log.next(), Command::AwaitClient(vec![bash, custom]));
    log.usage_idle(StopReason::RequiresAction { event_ids: vec![bash, custom] });
    log.user_message();
    assert_eq!(log.next(), Command::FailTools { ids: vec![custom], reason: FailReason::Superseded });
    log.result(custom, true);
    assert_eq!(log.next(), Command::AwaitClient(vec![bash]));
    log.usage_idle(StopReason::RequiresAction { event_ids: vec![bash] });
    assert_eq!(log.next(), Command::Wait);
    log.worker_result(bash);
    assert_eq!(log.next(), Command::StartTurn);
    log.running();
    assert_eq!(log.next(), Command::CallModel { attempt: 1 });
    // An interrupt, though, closes the worker's calls too.
    let mut log = Log::with_host(ToolHost::Worker);
    log.user_message();
    log.running();
    log.model_ok();
    let bash = log.tool_use(EvaluatedPermission::Allow);
    log.usage_idle(StopReason::RequiresAction { event_ids: vec![bash] });
    log.push(Event::UserInterrupt(UserInterrupt { session_thread_id: None }));
    assert_eq!(log.next(), Command::Interrupt { open: vec![bash] });
}

/// One random choice of the simulated world.
#[derive(Debug, Clone)]
struct Choices(Vec<u8>);

impl Choices {
    fn pick(&mut self, n: u8) -> u8 {
        self.0.pop().map_or(0, |c| c % n)
    }
}

/// Runs a simulated runner over random choices; returns the log and how many
/// times each tool ran.
fn simulate(mut choices: Choices, host: ToolHost) -> (Log, BTreeMap<EventId, u32>) {
    let mut log = Log::with_host(host);
    let mut executed: BTreeMap<EventId, u32> = BTreeMap::new();
    // Compaction on: any added content asks for one before the next call.
    let mut record_compaction_config = choices.pick(2) == 0;
    log.user_message();
    for _ in 0..300 {
        match log.next() {
            Command::Wait => match choices.pick(7) {
                0 => {
                    log.user_message();
                }
                1 => {
                    log.push(Event::UserInterrupt(UserInterrupt { session_thread_id: None }));
                }
                2 | 3 => {
                    // Answer one waiting call: the worker runs the calls it
                    // may run, the user confirms or answers the others.
                    let worker_calls = log.machine.worker_calls(&log.policy);
                    if let Some(id) = worker_calls.first().copied() {
                        *executed.entry(id).or_default() += 1;
                        log.worker_result(id);
                        continue;
                    }
                    let Some((id, tool)) = log.machine.open_tools().next().map(|(id, t)| (id, t.clone())) else {
                        break;
                    };
                    match tool.kind {
                        ToolKind::Builtin | ToolKind::Mcp => {
                            let allow = choices.pick(2) == 0;
                            log.confirm(id, allow);
                        }
                        ToolKind::Custom => {
                            log.push(Event::UserCustomToolResult(UserCustomToolResult {
                                custom_tool_use_id: id,
                                content: None,
                                is_error: None,
                                session_thread_id: None,
                            }));
                            // A system message may come with the result.
                            if choices.pick(3) == 0 {
                                log.push(Event::SystemMessage(logbook_core::event::SystemMessage {
                                    content: vec![ContentBlock::Text { text: "note".into() }],
                                }));
                            }
                        }
                    }
                }
                // The budget is removed (a session paused at it resumes).
                4 => {
                    log.push(Event::SessionUpdated(SessionUpdated {
                        agent: None,
                        budget: Some(None),
                        metadata: None,
                        title: None,
                    }));
                }
                // An outcome (the API takes one only when none is set).
                5 if log.machine.outcome().is_none() => {
                    let n = u128::from(choices.pick(255));
                    log.push(Event::UserDefineOutcome(logbook_core::event::UserDefineOutcome {
                        outcome_id: logbook_core::OutcomeId::from_parts(1, n),
                        description: "d".into(),
                        rubric: logbook_core::event::Rubric::Text { content: "r".into() },
                        max_iterations: Some(u32::from(choices.pick(3)) + 1),
                    }));
                }
                _ => break,
            },
            Command::EvaluateOutcome { outcome_id, iteration, start } => {
                use logbook_core::event::{
                    OutcomeEvaluationResult, SpanOutcomeEvaluationEnd, SpanOutcomeEvaluationStart,
                };
                let max = log.machine.outcome().map_or(0, |o| o.max_iterations);
                assert!(iteration < max, "evaluation {iteration} of an outcome allowed {max}");
                // The runner may pause at the budget first, or die mid-evaluation.
                if choices.pick(10) == 0 {
                    log.usage_idle(StopReason::BudgetReached);
                    continue;
                }
                let start = match start {
                    Some(start) => start,
                    None => log
                        .push(Event::SpanOutcomeEvaluationStart(SpanOutcomeEvaluationStart { outcome_id, iteration })),
                };
                if choices.pick(6) == 0 {
                    continue;
                }
                let result = match choices.pick(3) {
                    0 => OutcomeEvaluationResult::Satisfied,
                    1 => OutcomeEvaluationResult::Failed,
                    _ if iteration + 1 >= max => OutcomeEvaluationResult::MaxIterationsReached,
                    _ => OutcomeEvaluationResult::NeedsRevision,
                };
                log.push(Event::SpanOutcomeEvaluationEnd(SpanOutcomeEvaluationEnd {
                    outcome_evaluation_start_id: start,
                    outcome_id,
                    iteration,
                    result,
                    explanation: "e".into(),
                    usage: Default::default(),
                }));
            }
            Command::StartTurn | Command::Resume => log.running(),
            Command::Compact => {
                let summary = if choices.pick(4) == 0 { String::new() } else { "summary".to_owned() };
                log.push(Event::Compaction(Compaction {
                    summary,
                    through_seq: 0,
                    tokens_before: 10,
                    tokens_after: 5,
                    model: None,
                    usage: Default::default(),
                }));
            }
            Command::CallModel { .. } => {
                // The runner pauses at the budget instead of calling the model.
                if choices.pick(10) == 0 {
                    log.usage_idle(StopReason::BudgetReached);
                    continue;
                }
                if record_compaction_config {
                    // The settings are recorded with the call that first uses them.
                    log.push(Event::AgentConfig(AgentConfig {
                        agent: Json::new(&serde_json::json!({})),
                        options: Json::new(&serde_json::json!({"compaction": {"trigger_tokens": 1}})),
                    }));
                    record_compaction_config = false;
                }
                log.push(Event::SpanModelRequestStart(SpanModelRequestStart {}));
                match choices.pick(8) {
                    // The runner dies mid-request.
                    0 => continue,
                    1 => {
                        log.push(Event::SpanModelRequestEnd(SpanModelRequestEnd {
                            model_request_start_id: EventId::from_parts(0, 0),
                            model_usage: Default::default(),
                            is_error: Some(true),
                        }));
                    }
                    _ => {
                        let n_tools = choices.pick(3);
                        let mut uses = Vec::new();
                        for _ in 0..n_tools {
                            uses.push(match choices.pick(4) {
                                0 => Event::AgentCustomToolUse(AgentCustomToolUse {
                                    name: "c".into(),
                                    input: Json::empty_object(),
                                    session_thread_id: None,
                                }),
                                k => Event::AgentToolUse(AgentToolUse {
                                    name: if choices.pick(4) == 0 { "web_fetch" } else { "bash" }.into(),
                                    input: Json::empty_object(),
                                    evaluated_permission: Some(match k {
                                        1 => EvaluatedPermission::Allow,
                                        2 => EvaluatedPermission::Ask,
                                        _ => EvaluatedPermission::Deny,
                                    }),
                                    evaluation: None,
                                    session_thread_id: None,
                                }),
                            });
                        }
                        for event in uses {
                            log.push(event);
                        }
                        log.push(Event::SpanModelRequestEnd(SpanModelRequestEnd {
                            model_request_start_id: EventId::from_parts(0, 0),
                            model_usage: Default::default(),
                            is_error: Some(false),
                        }));
                    }
                }
            }
            Command::GiveUp => {
                log.push(Event::SessionError(SessionError {
                    error: SessionErrorDetail::ModelOverloadedError {
                        message: "x".into(),
                        retry_status: RetryStatus::Exhausted,
                    },
                }));
                log.usage_idle(StopReason::RetriesExhausted);
            }
            Command::CloseModelRequest { .. } => {
                log.push(Event::SpanModelRequestEnd(SpanModelRequestEnd {
                    model_request_start_id: EventId::from_parts(0, 0),
                    model_usage: Default::default(),
                    is_error: Some(true),
                }));
            }
            Command::RunTools(ids) => {
                for id in &ids {
                    let call = log.entries.iter().find(|e| e.id == *id).map(|e| e.event.clone());
                    if let (ToolHost::Worker, Some(Event::AgentToolUse(tool_use))) = (host, call) {
                        assert!(
                            SERVER_SIDE_TOOLS.contains(&tool_use.name.as_str()),
                            "the runner ran {} of a self-hosted session",
                            tool_use.name
                        );
                    }
                }
                log.push(Event::ToolStarted(ToolStarted { tool_use_ids: ids.clone() }));
                for id in ids {
                    *executed.entry(id).or_default() += 1;
                    // The runner may die after running a tool, before its result.
                    if choices.pick(6) == 0 {
                        break;
                    }
                    log.result(id, false);
                }
            }
            Command::DenyTools(calls) => {
                for (id, _) in calls {
                    log.result(id, true);
                }
            }
            Command::FailTools { ids, .. } => {
                for id in ids {
                    log.result(id, true);
                }
            }
            Command::AwaitClient(ids) => log.usage_idle(StopReason::RequiresAction { event_ids: ids }),
            Command::EndTurn => log.usage_idle(StopReason::EndTurn),
            Command::Interrupt { open } => {
                if let Some(outcome) = log.machine.outcome().cloned() {
                    log.push(Event::SpanOutcomeEvaluationEnd(logbook_core::event::SpanOutcomeEvaluationEnd {
                        outcome_evaluation_start_id: outcome.evaluating.unwrap_or(EventId::NIL),
                        outcome_id: outcome.outcome_id,
                        iteration: outcome.iteration,
                        result: logbook_core::event::OutcomeEvaluationResult::Interrupted,
                        explanation: String::new(),
                        usage: Default::default(),
                    }));
                }
                for id in open {
                    log.result(id, true);
                }
                log.usage_idle(StopReason::EndTurn);
            }
        }
    }
    (log, executed)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Goal: whatever the interleaving of model outputs, confirmations, custom
    /// results (with system messages), worker results, interrupts, pauses at
    /// the budget, budget changes and crashes, in cloud and self-hosted
    /// sessions, no tool runs twice, no call gets two results, the runner
    /// never runs a self-hosted session's worker tools, and once nothing is
    /// open every call has exactly one result.
    /// Also: applying entries one by one equals projecting the whole log.
    #[test]
    fn every_tool_use_gets_exactly_one_result(
        choices in prop::collection::vec(any::<u8>(), 0..400),
        self_hosted in any::<bool>(),
    ) {
        let host = if self_hosted { ToolHost::Worker } else { ToolHost::Server };
        let (log, executed) = simulate(Choices(choices), host);
        for (id, n) in &executed {
            prop_assert!(*n <= 1, "tool {id} ran {n} times");
        }
        let mut results: BTreeMap<EventId, u32> = BTreeMap::new();
        let mut uses = Vec::new();
        for entry in &log.entries {
            if let Some(target) = entry.event.answers()
                && !matches!(entry.event, Event::UserToolConfirmation(_))
            {
                *results.entry(target).or_default() += 1;
            }
            if matches!(entry.event, Event::AgentToolUse(_) | Event::AgentCustomToolUse(_)) {
                uses.push(entry.id);
            }
        }
        for (id, n) in &results {
            prop_assert!(*n == 1, "call {id} has {n} results");
        }
        let open: Vec<EventId> = log.machine.open_tools().map(|(id, _)| id).collect();
        for id in &uses {
            prop_assert!(results.contains_key(id) || open.contains(id), "call {id} has neither a result nor is open");
        }
        prop_assert_eq!(Machine::project(&log.entries), log.machine.clone());
        // Re-execution: every recorded decision follows from what came before it.
        let report = crate::rerun::check(&log.entries, &log.policy);
        prop_assert!(report.is_consistent(), "{:?}", report.mismatches);
    }
}

/// A model response's records as the runner appends them: the provider's
/// content, the public events, the span's end and `x.model_request` with the
/// stop reason. `public` gets the id each public event will have.
fn respond(
    log: &mut Log,
    content: serde_json::Value,
    stop_reason: &str,
    public: impl FnOnce(&[EventId]) -> Vec<Event>,
) {
    use logbook_core::event::{ModelRequest, ModelResponse, ToolUseLink};
    let start = log.push(Event::SpanModelRequestStart(SpanModelRequestStart {}));
    // Ids are sequential: the response is next, then the public events.
    let first_public = log.next_id + 1;
    let ids: Vec<EventId> = (0..8).map(|n| EventId::from_parts(1_764_000_000_000, first_public + n)).collect();
    let events = public(&ids);
    let links = content
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| matches!(b["type"].as_str(), Some("tool_use" | "server_tool_use")))
        .zip(&ids)
        .map(|(block, id)| ToolUseLink {
            provider_id: block["id"].as_str().unwrap_or_default().to_owned(),
            event_id: *id,
        })
        .collect();
    log.push(Event::ModelResponse(ModelResponse {
        model_request_start_id: start,
        content: Json::new(&content),
        tool_uses: links,
    }));
    for event in events {
        log.push(event);
    }
    log.push(Event::SpanModelRequestEnd(SpanModelRequestEnd {
        model_request_start_id: start,
        model_usage: Default::default(),
        is_error: Some(false),
    }));
    log.push(Event::ModelRequest(ModelRequest {
        model_request_start_id: start,
        model: "m".into(),
        request_id: None,
        stop_reason: Some(stop_reason.to_owned()),
        usage: Default::default(),
        duration_ms: 1,
        attempt: 1,
    }));
}

fn web_search_use() -> Event {
    Event::AgentToolUse(AgentToolUse {
        name: "web_search".into(),
        input: Json::new(&serde_json::json!({"query": "rust"})),
        evaluated_permission: Some(EvaluatedPermission::Allow),
        evaluation: None,
        session_thread_id: None,
    })
}

#[test]
fn a_paused_response_is_continued_until_the_provider_finishes() {
    let mut log = Log::new();
    log.user_message();
    log.running();
    let search = serde_json::json!([{"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search",
                                     "input": {"query": "rust"}}]);
    respond(&mut log, search, PAUSE_TURN, |_| vec![web_search_use()]);
    // The search is the provider's: not run here, not awaited, and the turn goes on.
    assert_eq!(log.next(), Command::CallModel { attempt: 1 });
    let result = serde_json::json!([{"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
                                     {"type": "text", "text": "found it"}]);
    let search_id = EventId::from_parts(1_764_000_000_000, 5);
    respond(&mut log, result, "end_turn", |_| {
        vec![Event::AgentToolResult(AgentToolResult { tool_use_id: search_id, content: None, is_error: None })]
    });
    assert_eq!(log.next(), Command::EndTurn);
}

#[test]
fn answered_server_tool_uses_do_not_call_the_model_again() {
    let mut log = Log::new();
    log.user_message();
    log.running();
    let content = serde_json::json!([
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "rust"}},
        {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
        {"type": "text", "text": "done"}]);
    respond(&mut log, content, "end_turn", |ids| {
        vec![
            web_search_use(),
            Event::AgentToolResult(AgentToolResult { tool_use_id: ids[0], content: None, is_error: None }),
        ]
    });
    assert_eq!(log.machine.open_tools().count(), 0);
    assert_eq!(log.next(), Command::EndTurn);
}

#[test]
fn a_provider_that_never_finishes_is_continued_a_bounded_number_of_times() {
    let mut log = Log::new();
    log.user_message();
    log.running();
    let mut calls = 0;
    while log.next() == (Command::CallModel { attempt: 1 }) {
        calls += 1;
        assert!(calls <= MAX_PAUSE_CONTINUATIONS + 1, "{calls} calls");
        respond(&mut log, serde_json::json!([{"type": "text", "text": "still searching"}]), PAUSE_TURN, |_| vec![]);
    }
    assert_eq!(calls, MAX_PAUSE_CONTINUATIONS + 1);
    assert_eq!(log.next(), Command::EndTurn);
    // The next turn may pause again.
    log.usage_idle(StopReason::EndTurn);
    log.user_message();
    log.running();
    respond(&mut log, serde_json::json!([{"type": "text", "text": "again"}]), PAUSE_TURN, |_| vec![]);
    assert_eq!(log.next(), Command::CallModel { attempt: 1 });
}

/// Goal: the session never announces `requires_action` and retracts it
/// without new input. A message queued while the model answered was sent
/// before the call existed: the turn waits on the client for the call, and
/// once that idle is recorded the same message does not close the call as
/// "sent instead of answering"; the model sees it with the answer. A
/// message sent after the idle still supersedes.
/// Method: a message lands while the model streams a custom call; the idle
/// is recorded; the call is answered. Then the same up to the idle, and a
/// message after it.
#[test]
fn a_requires_action_idle_is_not_retracted_without_new_input() {
    let queued_then_idle = || {
        let mut log = Log::new();
        log.user_message();
        log.running();
        log.push(Event::SpanModelRequestStart(SpanModelRequestStart {}));
        // Sent while the model streams its answer.
        log.user_message();
        let call = log.custom_tool_use();
        log.push(Event::SpanModelRequestEnd(SpanModelRequestEnd {
            model_request_start_id: EventId::from_parts(0, 0),
            model_usage: Default::default(),
            is_error: Some(false),
        }));
        assert_eq!(log.next(), Command::AwaitClient(vec![call]));
        log.usage_idle(StopReason::RequiresAction { event_ids: vec![call] });
        (log, call)
    };
    let (mut log, call) = queued_then_idle();
    assert_eq!(log.next(), Command::Wait, "the call it just asked the client to answer is closed");
    log.push(Event::UserCustomToolResult(UserCustomToolResult {
        custom_tool_use_id: call,
        content: None,
        is_error: None,
        session_thread_id: None,
    }));
    assert_eq!(log.next(), Command::StartTurn);
    log.running();
    assert_eq!(log.next(), Command::CallModel { attempt: 1 });
    let report = crate::rerun::check(&log.entries, &log.policy);
    assert!(report.is_consistent(), "{:?}", report.mismatches);
    let (mut log, call) = queued_then_idle();
    log.user_message();
    assert_eq!(log.next(), Command::FailTools { ids: vec![call], reason: FailReason::Superseded });
}

/// Goal: an interrupt that lands after a message, before the runner
/// recorded the turn's `session.status_running`, stops that turn: "send,
/// then stop" (the stop landing before the runner picked the message up, or
/// both in one request) calls no model. The turn ends idle `end_turn`
/// (behaviour digest §3.6; there is no running status, as when an interrupt
/// ends a wait on the client). The message stays in the conversation but
/// starts nothing; a message after the interrupt starts the next turn. The
/// same holds when the runner recorded the running status first.
/// Method: a message then an interrupt; a message, an interrupt and a
/// message; a message, the turn's running status, then an interrupt.
#[test]
fn an_interrupt_right_after_a_message_is_not_lost_before_the_turn_starts() {
    let mut log = Log::new();
    log.user_message();
    log.push(Event::UserInterrupt(UserInterrupt { session_thread_id: None }));
    if log.next() == Command::StartTurn {
        log.running();
    }
    assert!(
        !matches!(log.next(), Command::CallModel { .. }),
        "the interrupt sent after the message was ignored: the model is called"
    );
    assert_eq!(log.next(), Command::Interrupt { open: vec![] });
    log.usage_idle(StopReason::EndTurn);
    assert_eq!(log.next(), Command::Wait, "the interrupted message starts no turn");
    log.user_message();
    assert_eq!(log.next(), Command::StartTurn);
    log.running();
    assert_eq!(log.next(), Command::CallModel { attempt: 1 });
    let report = crate::rerun::check(&log.entries, &log.policy);
    assert!(report.is_consistent(), "{:?}", report.mismatches);

    // In one request, a message after the interrupt starts the next turn.
    let mut log = Log::new();
    log.user_message();
    log.push(Event::UserInterrupt(UserInterrupt { session_thread_id: None }));
    log.user_message();
    assert_eq!(log.next(), Command::Interrupt { open: vec![] });
    log.usage_idle(StopReason::EndTurn);
    assert_eq!(log.next(), Command::StartTurn);

    // The runner started the turn first: the same outcome.
    let mut log = Log::new();
    log.user_message();
    log.running();
    log.push(Event::UserInterrupt(UserInterrupt { session_thread_id: None }));
    assert_eq!(log.next(), Command::Interrupt { open: vec![] });
    log.usage_idle(StopReason::EndTurn);
    assert_eq!(log.next(), Command::Wait, "the interrupted turn is not started again");
}

/// Goal: input queued behind a turn that already called the model is not
/// what an interrupt stops: the interrupt jumps the queue ahead of it
/// (behaviour digest §3.6), ends the turn, and the queued message starts the
/// next turn. Method: a turn whose model call ran a tool; a message, then an
/// interrupt, while the tool's result is pending.
#[test]
fn an_interrupt_jumps_the_queue_ahead_of_a_message_queued_behind_the_turn() {
    let mut log = Log::new();
    log.user_message();
    log.running();
    log.model_ok();
    let call = log.tool_use(EvaluatedPermission::Allow);
    log.user_message();
    log.push(Event::UserInterrupt(UserInterrupt { session_thread_id: None }));
    assert_eq!(log.next(), Command::Interrupt { open: vec![call] });
    log.result(call, true);
    log.usage_idle(StopReason::EndTurn);
    assert_eq!(log.next(), Command::StartTurn, "the message queued behind the turn was dropped");
    log.running();
    assert_eq!(log.next(), Command::CallModel { attempt: 1 });
}

/// Goal: a `system.message` sent with a tool result (the only way the API
/// takes one while the session waits on the client) is not a message sent
/// instead of answering: resolving fewer than all calls re-emits the idle
/// with the remaining ids (behaviour digest §3.5), and the model sees the
/// note with the answers.
/// Method: two custom calls wait; the first is answered together with a
/// system message; then the second is answered.
#[test]
fn a_system_message_with_a_tool_result_does_not_supersede_the_other_calls() {
    let mut log = Log::new();
    log.user_message();
    log.running();
    log.model_ok();
    let first = log.custom_tool_use();
    let second = log.custom_tool_use();
    assert_eq!(log.next(), Command::AwaitClient(vec![first, second]));
    log.usage_idle(StopReason::RequiresAction { event_ids: vec![first, second] });
    log.push(Event::UserCustomToolResult(UserCustomToolResult {
        custom_tool_use_id: first,
        content: None,
        is_error: None,
        session_thread_id: None,
    }));
    log.push(Event::SystemMessage(logbook_core::event::SystemMessage {
        content: vec![ContentBlock::Text { text: "the first result came from the cache".into() }],
    }));
    assert_eq!(log.next(), Command::AwaitClient(vec![second]));
    log.usage_idle(StopReason::RequiresAction { event_ids: vec![second] });
    assert_eq!(log.next(), Command::Wait);
    log.push(Event::UserCustomToolResult(UserCustomToolResult {
        custom_tool_use_id: second,
        content: None,
        is_error: None,
        session_thread_id: None,
    }));
    assert_eq!(log.next(), Command::StartTurn);
    log.running();
    assert_eq!(log.next(), Command::CallModel { attempt: 1 });
}

/// Goal: a session paused at its budget stays paused with the input queued
/// before the pause, and a budget change (not another update) resumes it.
/// Method: a message lands while the model answers; the runner then pauses
/// at the budget instead of the next call; an update of the title, then a
/// removal of the budget, are recorded.
#[test]
fn a_pause_at_the_budget_keeps_queued_input_until_the_budget_changes() {
    let mut log = Log::new();
    log.user_message();
    log.running();
    log.push(Event::SpanModelRequestStart(SpanModelRequestStart {}));
    log.user_message();
    log.push(Event::SpanModelRequestEnd(SpanModelRequestEnd {
        model_request_start_id: EventId::from_parts(0, 0),
        model_usage: Default::default(),
        is_error: Some(false),
    }));
    assert_eq!(log.next(), Command::CallModel { attempt: 1 });
    log.usage_idle(StopReason::BudgetReached);
    assert_eq!(log.next(), Command::Wait, "paused at the budget, the queued message starts nothing");
    let update = |budget| SessionUpdated { agent: None, budget, metadata: None, title: None };
    log.push(Event::SessionUpdated(SessionUpdated { title: Some(Some("renamed".into())), ..update(None) }));
    assert_eq!(log.next(), Command::Wait, "only a budget change resumes");
    log.push(Event::SessionUpdated(update(Some(None))));
    assert_eq!(log.next(), Command::StartTurn);
    log.running();
    assert_eq!(log.next(), Command::CallModel { attempt: 1 });
    log.model_ok();
    assert_eq!(log.next(), Command::EndTurn);
    let report = crate::rerun::check(&log.entries, &log.policy);
    assert!(report.is_consistent(), "{:?}", report.mismatches);
}

/// Goal: the work a budget pause stopped goes on when the budget is raised,
/// though no new input arrives: the model sees the tool results it paused
/// before.
/// Method: a tool runs, the runner pauses at the budget before the call
/// that would show its result; the budget is removed.
#[test]
fn a_budget_change_resumes_a_turn_paused_before_its_tool_results_were_seen() {
    let mut log = Log::new();
    log.user_message();
    log.running();
    log.push(Event::SpanModelRequestStart(SpanModelRequestStart {}));
    let call = log.tool_use(EvaluatedPermission::Allow);
    log.push(Event::SpanModelRequestEnd(SpanModelRequestEnd {
        model_request_start_id: EventId::from_parts(0, 0),
        model_usage: Default::default(),
        is_error: Some(false),
    }));
    assert_eq!(log.next(), Command::RunTools(vec![call]));
    log.push(Event::ToolStarted(ToolStarted { tool_use_ids: vec![call] }));
    log.result(call, false);
    assert_eq!(log.next(), Command::CallModel { attempt: 1 });
    log.usage_idle(StopReason::BudgetReached);
    assert_eq!(log.next(), Command::Wait);
    log.push(Event::UserInterrupt(UserInterrupt { session_thread_id: None }));
    assert_eq!(log.next(), Command::Wait, "an interrupt while paused at the budget is ignored");
    log.push(Event::SessionUpdated(SessionUpdated { agent: None, budget: Some(None), metadata: None, title: None }));
    assert_eq!(log.next(), Command::StartTurn);
    let mut interrupted = Log { entries: log.entries.clone(), machine: log.machine.clone(), ..Log::new() };
    log.running();
    assert_eq!(log.next(), Command::CallModel { attempt: 1 });
    let report = crate::rerun::check(&log.entries, &log.policy);
    assert!(report.is_consistent(), "{:?}", report.mismatches);
    // An interrupt after the budget change, before the turn starts, stops the
    // resumed work like any turn about to start.
    interrupted.next_id = 100;
    interrupted.push(Event::UserInterrupt(UserInterrupt { session_thread_id: None }));
    assert_eq!(interrupted.next(), Command::Interrupt { open: vec![] });
    interrupted.usage_idle(StopReason::EndTurn);
    assert_eq!(interrupted.next(), Command::Wait);
}

/// Goal: when retries are exhausted, the input queued during the dead turn
/// is flushed (behaviour digest §3.7): it starts no turn, a later message
/// does.
/// Method: a message lands while the last attempt fails; the runner gives
/// up; then another message is sent.
#[test]
fn exhausted_retries_flush_the_input_queued_during_the_turn() {
    let mut log = Log::new();
    log.user_message();
    log.running();
    for attempt in 1..=Policy::default().max_model_attempts {
        assert_eq!(log.next(), Command::CallModel { attempt });
        log.push(Event::SpanModelRequestStart(SpanModelRequestStart {}));
        if attempt == Policy::default().max_model_attempts {
            log.user_message();
        }
        log.push(Event::SpanModelRequestEnd(SpanModelRequestEnd {
            model_request_start_id: EventId::from_parts(0, 0),
            model_usage: Default::default(),
            is_error: Some(true),
        }));
    }
    assert_eq!(log.next(), Command::GiveUp);
    log.push(Event::SessionError(SessionError {
        error: SessionErrorDetail::ModelOverloadedError {
            message: "overloaded".into(),
            retry_status: RetryStatus::Exhausted,
        },
    }));
    log.usage_idle(StopReason::RetriesExhausted);
    assert_eq!(log.next(), Command::Wait, "the queued message is flushed with the dead turn");
    log.user_message();
    assert_eq!(log.next(), Command::StartTurn);
    let report = crate::rerun::check(&log.entries, &log.policy);
    assert!(report.is_consistent(), "{:?}", report.mismatches);
}

#[test]
fn a_tool_call_cut_by_max_tokens_gets_an_error_result_and_the_others_run() {
    // Goal: the last call of a response that stopped with `max_tokens` was
    // cut off while the model wrote it: it is answered with an error, never
    // run or awaited; a complete call before it runs as usual.
    let mut log = Log::new();
    log.user_message();
    log.running();
    let content = serde_json::json!([
        {"type": "tool_use", "id": "toolu_a", "name": "read", "input": {"file_path": "a"}},
        {"type": "tool_use", "id": "toolu_b", "name": "write", "input": {}}]);
    respond(&mut log, content, MAX_TOKENS, |_| {
        vec![log_tool_use("read", EvaluatedPermission::Allow), log_tool_use("write", EvaluatedPermission::Ask)]
    });
    let ids: Vec<EventId> = log.machine.open_tools().map(|(id, _)| id).collect();
    assert_eq!(log.next(), Command::FailTools { ids: vec![ids[1]], reason: FailReason::CutOff });
    log.result(ids[1], true);
    assert_eq!(log.next(), Command::RunTools(vec![ids[0]]));
    log.push(Event::ToolStarted(ToolStarted { tool_use_ids: vec![ids[0]] }));
    log.result(ids[0], false);
    assert_eq!(log.next(), Command::CallModel { attempt: 1 });

    // A custom call cut off is not put to the client either.
    let custom = serde_json::json!([{"type": "tool_use", "id": "toolu_c", "name": "get_weather", "input": {}}]);
    respond(&mut log, custom, MAX_TOKENS, |_| {
        vec![Event::AgentCustomToolUse(AgentCustomToolUse {
            name: "get_weather".into(),
            input: Json::empty_object(),
            session_thread_id: None,
        })]
    });
    let custom_id = log.machine.open_tools().map(|(id, _)| id).next().unwrap();
    assert_eq!(log.next(), Command::FailTools { ids: vec![custom_id], reason: FailReason::CutOff });
    log.result(custom_id, true);

    // Text cut off after a complete call: the call runs.
    let content = serde_json::json!([
        {"type": "tool_use", "id": "toolu_d", "name": "read", "input": {"file_path": "d"}},
        {"type": "text", "text": "and then"}]);
    respond(&mut log, content, MAX_TOKENS, |_| vec![log_tool_use("read", EvaluatedPermission::Allow)]);
    let read = log.machine.open_tools().map(|(id, _)| id).next().unwrap();
    assert_eq!(log.next(), Command::RunTools(vec![read]));
    log.push(Event::ToolStarted(ToolStarted { tool_use_ids: vec![read] }));
    log.result(read, false);
    respond(&mut log, serde_json::json!([{"type": "text", "text": "done"}]), "end_turn", |_| Vec::new());
    assert_eq!(log.next(), Command::EndTurn);
    log.usage_idle(StopReason::EndTurn);
    let report = crate::rerun::check(&log.entries, &log.policy);
    assert!(report.is_consistent(), "{:?}", report.mismatches);
}

fn log_tool_use(name: &str, permission: EvaluatedPermission) -> Event {
    Event::AgentToolUse(AgentToolUse {
        name: name.into(),
        input: Json::empty_object(),
        evaluated_permission: Some(permission),
        evaluation: None,
        session_thread_id: None,
    })
}

#[test]
fn a_message_sent_while_the_model_answers_counts_towards_the_compaction_trigger() {
    // Defect: a user.message that lands while a model request is open (sends
    // never wait for the runner) adds its tokens to `context_tokens`, but the
    // request's `span.model_request_end` then overwrites `context_tokens`
    // with the usage of that request, which the model reported for a prompt
    // without the message. The message's tokens are forgotten: a context the
    // message took past the trigger is sent uncompacted (and refused by the
    // provider once past the window).
    // Method: a trigger of 1,000 tokens; a first request of 100 + 10 tokens;
    // during it, a message of about 2,000 tokens. The next request would
    // carry about 2,100 tokens: the machine must compact first.
    let mut log = Log::new();
    log.push(Event::AgentConfig(AgentConfig {
        agent: Json::new(&serde_json::json!({})),
        options: Json::new(&serde_json::json!({"compaction": {"trigger_tokens": 1_000, "keep_tokens": 200}})),
    }));
    log.user_message();
    log.running();
    assert_eq!(log.next(), Command::CallModel { attempt: 1 });
    let start = log.push(Event::SpanModelRequestStart(SpanModelRequestStart {}));
    let paste = "x".repeat(6_000);
    log.push(Event::UserMessage(UserMessage { content: vec![ContentBlock::Text { text: paste }] }));
    log.push(Event::SpanModelRequestEnd(SpanModelRequestEnd {
        model_request_start_id: start,
        model_usage: logbook_core::event::ModelUsage { input_tokens: 100, output_tokens: 10, ..Default::default() },
        is_error: Some(false),
    }));
    assert!(
        log.machine.context_tokens() >= 2_000,
        "the next request carries the 6,000-character message (about 2,000 tokens), but the machine \
         estimates {} tokens",
        log.machine.context_tokens()
    );
    assert_eq!(log.next(), Command::Compact, "a context past the trigger is sent without compacting");
}

mod outcomes {
    use logbook_core::OutcomeId;
    use logbook_core::event::{
        OutcomeEvaluationResult, Rubric, SpanOutcomeEvaluationEnd, SpanOutcomeEvaluationStart, UserDefineOutcome,
    };
    use pretty_assertions::assert_eq;

    use super::*;

    fn define(log: &mut Log, max_iterations: u32) -> OutcomeId {
        let outcome_id = OutcomeId::from_parts(1, 7);
        log.push(Event::UserDefineOutcome(UserDefineOutcome {
            outcome_id,
            description: "a README".into(),
            rubric: Rubric::Text { content: "has a usage section".into() },
            max_iterations: Some(max_iterations),
        }));
        outcome_id
    }

    fn evaluated(log: &mut Log, outcome_id: OutcomeId, iteration: u32, result: OutcomeEvaluationResult) {
        let start = log.push(Event::SpanOutcomeEvaluationStart(SpanOutcomeEvaluationStart { outcome_id, iteration }));
        log.push(Event::SpanOutcomeEvaluationEnd(SpanOutcomeEvaluationEnd {
            outcome_evaluation_start_id: start,
            outcome_id,
            iteration,
            result,
            explanation: "why".into(),
            usage: Default::default(),
        }));
    }

    #[test]
    fn an_outcome_is_graded_where_its_turn_would_end_and_revised_until_accepted() {
        let mut log = Log::new();
        let outcome_id = define(&mut log, 3);
        assert_eq!(log.next(), Command::StartTurn);
        log.running();
        assert_eq!(log.next(), Command::CallModel { attempt: 1 });
        log.model_ok();
        assert_eq!(log.next(), Command::EvaluateOutcome { outcome_id, iteration: 0, start: None });
        evaluated(&mut log, outcome_id, 0, OutcomeEvaluationResult::NeedsRevision);
        assert_eq!(log.next(), Command::CallModel { attempt: 1 });
        log.model_ok();
        // A crash mid-evaluation: the evaluation goes on from its start.
        let start =
            log.push(Event::SpanOutcomeEvaluationStart(SpanOutcomeEvaluationStart { outcome_id, iteration: 1 }));
        assert_eq!(log.next(), Command::EvaluateOutcome { outcome_id, iteration: 1, start: Some(start) });
        log.push(Event::SpanOutcomeEvaluationEnd(SpanOutcomeEvaluationEnd {
            outcome_evaluation_start_id: start,
            outcome_id,
            iteration: 1,
            result: OutcomeEvaluationResult::Satisfied,
            explanation: String::new(),
            usage: Default::default(),
        }));
        assert_eq!(log.next(), Command::EndTurn);
        log.usage_idle(StopReason::EndTurn);
        assert_eq!(log.next(), Command::Wait);
        assert_eq!(log.machine.outcome(), None);
    }

    #[test]
    fn an_interrupt_does_not_end_an_outcome_defined_after_it() {
        // Goal: an interrupt stops what was under way when it came; an
        // outcome defined right after it (before the runner acts) survives
        // and starts the next turn, as other input after an interrupt does.
        let mut log = Log::new();
        log.user_message();
        log.running();
        log.model_ok();
        log.push(Event::UserInterrupt(UserInterrupt { session_thread_id: None }));
        let outcome_id = define(&mut log, 3);
        assert_eq!(log.next(), Command::Interrupt { open: Vec::new() });
        assert_eq!(log.machine.interrupted_outcome(), None, "the interrupt would end the outcome sent after it");
        log.usage_idle(StopReason::EndTurn);
        assert_eq!(log.machine.outcome().map(|o| o.outcome_id), Some(outcome_id));
        assert_eq!(log.next(), Command::StartTurn);
        let report = crate::rerun::check(&log.entries, &log.policy);
        assert!(report.is_consistent(), "{report:?}");
    }

    #[test]
    fn the_last_evaluation_gets_one_final_answer_and_an_interrupt_ends_an_idle_outcome() {
        let mut log = Log::new();
        let outcome_id = define(&mut log, 1);
        log.running();
        log.model_ok();
        evaluated(&mut log, outcome_id, 0, OutcomeEvaluationResult::MaxIterationsReached);
        assert_eq!(log.next(), Command::CallModel { attempt: 1 });
        log.model_ok();
        assert_eq!(log.next(), Command::EndTurn);
        log.usage_idle(StopReason::EndTurn);

        // A turn that died keeps its outcome; an interrupt ends it.
        let outcome_id = define(&mut log, 3);
        log.running();
        log.push(Event::SessionError(SessionError {
            error: SessionErrorDetail::UnknownError { message: "x".into(), retry_status: RetryStatus::Exhausted },
        }));
        log.usage_idle(StopReason::RetriesExhausted);
        assert_eq!(log.next(), Command::Wait);
        assert_eq!(log.machine.outcome().map(|o| o.outcome_id), Some(outcome_id));
        log.push(Event::UserInterrupt(UserInterrupt { session_thread_id: None }));
        assert_eq!(log.next(), Command::Interrupt { open: Vec::new() });
        // No evaluation started: the end names none.
        log.push(Event::SpanOutcomeEvaluationEnd(SpanOutcomeEvaluationEnd {
            outcome_evaluation_start_id: EventId::NIL,
            outcome_id,
            iteration: 0,
            result: OutcomeEvaluationResult::Interrupted,
            explanation: String::new(),
            usage: Default::default(),
        }));
        log.usage_idle(StopReason::EndTurn);
        assert_eq!(log.next(), Command::Wait);
        assert_eq!(log.machine.outcome(), None);
    }

    /// Goal: an interrupt ends the outcome and the turn; nothing starts again
    /// until the user sends something.
    /// Defect: a `needs_revision` verdict sets `unseen_input`, which the
    /// interrupt (the turn had called the model) and its `end_turn` idle leave
    /// set: when the interrupt lands between the verdict and the revision's
    /// model call (or while the grader answers, the runner appending the
    /// verdict at the head), the outcome is ended `interrupted`, the session
    /// goes idle, and then a new turn starts on its own to revise work for an
    /// outcome that is over.
    /// Method: verdict `needs_revision`, then `user.interrupt`, then what the
    /// runner records for the interrupt (the outcome's end, usage, idle); the
    /// machine must wait.
    #[test]
    fn an_interrupt_after_a_needs_revision_verdict_starts_no_revision_turn() {
        let mut log = Log::new();
        let outcome_id = define(&mut log, 3);
        log.running();
        log.model_ok();
        evaluated(&mut log, outcome_id, 0, OutcomeEvaluationResult::NeedsRevision);
        assert_eq!(log.next(), Command::CallModel { attempt: 1 });
        log.push(Event::UserInterrupt(UserInterrupt { session_thread_id: None }));
        assert_eq!(log.next(), Command::Interrupt { open: Vec::new() });
        log.push(Event::SpanOutcomeEvaluationEnd(SpanOutcomeEvaluationEnd {
            outcome_evaluation_start_id: EventId::NIL,
            outcome_id,
            iteration: 1,
            result: OutcomeEvaluationResult::Interrupted,
            explanation: String::new(),
            usage: Default::default(),
        }));
        log.usage_idle(StopReason::EndTurn);
        assert_eq!(log.machine.outcome(), None);
        assert_eq!(log.next(), Command::Wait, "a turn starts by itself after the interrupt ended the outcome");
    }

    /// Goal: `logbook rerun` flags an evaluation the runner never makes.
    /// Defect: neither the machine nor the check bounds evaluations by the
    /// outcome's `max_iterations`: a `needs_revision` recorded at the last
    /// allowed evaluation (the runner records `max_iterations_reached`
    /// there, `outcome::result_at`) is taken as a revision, and the
    /// evaluation after it, beyond the maximum, is accepted as a decided
    /// step; the recorded verdict's result is not checked at all in
    /// `Mode::Evaluating`.
    /// Method: an outcome with `max_iterations: 1` evaluated twice (0:
    /// `needs_revision`, 1: `satisfied`); the check must report a mismatch.
    #[test]
    fn rerun_flags_an_evaluation_beyond_max_iterations() {
        let mut log = Log::new();
        let outcome_id = define(&mut log, 1);
        log.running();
        log.model_ok();
        evaluated(&mut log, outcome_id, 0, OutcomeEvaluationResult::NeedsRevision);
        log.model_ok();
        evaluated(&mut log, outcome_id, 1, OutcomeEvaluationResult::Satisfied);
        log.usage_idle(StopReason::EndTurn);
        let report = crate::rerun::check(&log.entries, &log.policy);
        assert!(!report.is_consistent(), "two evaluations of an outcome allowed one were accepted: {report:?}");
    }
}
