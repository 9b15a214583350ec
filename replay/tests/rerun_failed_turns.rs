//! `logbook rerun` and the closing of a failed turn: it accepts what
//! `Task::fail_turn` (server/src/runner/step.rs) appends to end a turn a step
//! failed in, and still rejects exhausted `session.error` closings it never
//! writes.

#![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

use logbook_core::event::{
    AgentMessage, AgentToolResult, AgentToolUse, ContentBlock, Event, RetryStatus, SessionError, SessionErrorDetail,
    SessionStatusIdle, SessionStatusRunning, SessionUsage, SpanModelRequestEnd, SpanModelRequestStart, StopReason,
    ToolStarted, UserMessage,
};
use logbook_core::{Entry, EventId, Json, Timestamp};
use logbook_replay::{Policy, rerun_check};

fn log(events: Vec<Event>) -> Vec<Entry> {
    events
        .into_iter()
        .enumerate()
        .map(|(n, event)| Entry { id: EventId::from_parts(1, n as u128), event, at: Timestamp::from_unix_micros(0) })
        .collect()
}

fn exhausted() -> Event {
    Event::SessionError(SessionError {
        error: SessionErrorDetail::UnknownError {
            message: "the turn stopped on an internal error of the server; see its log".into(),
            retry_status: RetryStatus::Exhausted,
        },
    })
}

fn end(start: u128, is_error: bool) -> Event {
    Event::SpanModelRequestEnd(SpanModelRequestEnd {
        model_request_start_id: EventId::from_parts(1, start),
        model_usage: Default::default(),
        is_error: Some(is_error),
    })
}

fn idle(stop_reason: StopReason) -> Event {
    Event::SessionStatusIdle(SessionStatusIdle { stop_reason, stop_details: None })
}

fn usage() -> Event {
    Event::SessionUsage(SessionUsage { usage: Default::default(), budget: None })
}

/// A turn whose model call asked for bash (the call is event 3), started.
fn tool_call_started() -> Vec<Event> {
    vec![
        Event::UserMessage(UserMessage { content: vec![ContentBlock::Text { text: "hi".into() }] }),
        Event::SessionStatusRunning(SessionStatusRunning {}),
        Event::SpanModelRequestStart(SpanModelRequestStart {}),
        Event::AgentToolUse(AgentToolUse {
            name: "bash".into(),
            input: Json::empty_object(),
            evaluated_permission: None,
            evaluation: None,
            session_thread_id: None,
        }),
        end(2, false),
        Event::ToolStarted(ToolStarted { tool_use_ids: vec![EventId::from_parts(1, 3)] }),
    ]
}

/// An answer to the bash call of [`tool_call_started`].
fn bash_result(is_error: bool) -> Event {
    Event::AgentToolResult(AgentToolResult {
        tool_use_id: EventId::from_parts(1, 3),
        content: None,
        is_error: Some(is_error),
    })
}

/// Defect (replay/src/rerun.rs:109, `gives_up`): any exhausted
/// `session.error` that does not match the machine's command switches rerun
/// to `Mode::Failing`, whatever state the session is in. `fail_turn`
/// (server/src/runner/step.rs:234) appends nothing outside a turn, yet rerun
/// accepts a "failed turn" recorded on an idle session with no turn at all
/// (no `session.status_running` before it), closed by an idle of any stop
/// reason. A tampered or buggy log passes `logbook rerun`.
#[test]
fn rerun_rejects_a_failed_turn_closing_on_an_idle_session() {
    let events = vec![
        Event::UserMessage(UserMessage { content: vec![ContentBlock::Text { text: "hi".into() }] }),
        Event::SessionStatusRunning(SessionStatusRunning {}),
        Event::SpanModelRequestStart(SpanModelRequestStart {}),
        Event::AgentMessage(AgentMessage { content: vec![ContentBlock::Text { text: "hello".into() }] }),
        end(2, false),
        usage(),
        idle(StopReason::EndTurn),
    ];
    let turn = events.len();
    let mut events = events;
    events.extend([
        // No turn is under way: the runner's fail_turn appends nothing here.
        exhausted(),
        usage(),
        idle(StopReason::EndTurn),
    ]);
    let entries = log(events);
    assert!(rerun_check(&entries[..turn], &Policy::default()).is_consistent(), "the turn itself reruns");
    let report = rerun_check(&entries, &Policy::default());
    assert!(!report.is_consistent(), "rerun accepts an exhausted session.error and an idle outside any turn");
}

/// Defect (replay/src/rerun.rs:97-104, `Mode::Failing`): after an exhausted
/// `session.error` rerun accepts any `agent.tool_result`, even for a call
/// already answered, so a call with two answers (the defect class
/// `append_decided` was introduced against) passes rerun when the second
/// answer follows a `session.error`.
#[test]
fn rerun_rejects_a_second_answer_after_a_failed_turn_error() {
    let mut events = tool_call_started();
    events.push(bash_result(false));
    let answered = events.len();
    events.extend([
        exhausted(),
        // The call is answered already: fail_turn closes only open calls.
        bash_result(true),
        usage(),
        idle(StopReason::RetriesExhausted),
    ]);
    let entries = log(events);
    assert!(rerun_check(&entries[..answered], &Policy::default()).is_consistent(), "the answered call reruns");
    let report = rerun_check(&entries, &Policy::default());
    assert!(!report.is_consistent(), "rerun accepts a second answer to a call after a session.error");
}

/// Goal: `fail_turn` ends a turn whatever step failed, with `session.error`
/// (unknown_error, exhausted) first, the open calls closed, `session.usage`
/// and an idle `retries_exhausted`; rerun accepts that after a tool step too
/// (it once accepted it only inside a failed model call, so `logbook rerun`
/// failed on logs the runner itself writes).
/// Method: a turn whose tool step failed after `x.tool_started`.
#[test]
fn a_turn_ended_by_a_failing_tool_step_reruns_consistently() {
    let mut events = tool_call_started();
    // What `fail_turn` appends when the tool step fails.
    events.extend([exhausted(), bash_result(true), usage(), idle(StopReason::RetriesExhausted)]);
    let report = rerun_check(&log(events), &Policy::default());
    assert!(report.is_consistent(), "rerun rejects a log the runner's fail_turn wrote: {report:?}");
}

/// Goal: a turn that fails with its model request open is closed billed:
/// the request's end with what the provider reported, and the server tool
/// uses it counted, which rerun accepts after the error (they follow the
/// failed request's end as they follow any failed call's). Method: a turn
/// failed mid-request, closed as `fail_turn` closes it.
#[test]
fn a_turn_failed_mid_request_closes_it_with_its_server_tool_uses() {
    use logbook_core::event::ServerToolRequests;
    let mut events = vec![
        Event::UserMessage(UserMessage { content: vec![ContentBlock::Text { text: "hi".into() }] }),
        Event::SessionStatusRunning(SessionStatusRunning {}),
        Event::SpanModelRequestStart(SpanModelRequestStart {}),
    ];
    let requests = ServerToolRequests {
        model_request_start_id: EventId::from_parts(1, 2),
        web_search_requests: 2,
        web_fetch_requests: 0,
    };
    events.extend([
        exhausted(),
        end(2, true),
        Event::ServerToolRequests(requests),
        usage(),
        idle(StopReason::RetriesExhausted),
    ]);
    let report = rerun_check(&log(events), &Policy::default());
    assert!(report.is_consistent(), "rerun rejects a closing fail_turn writes: {report:?}");
}

/// A turn whose model call asked for bash (event 3), which the permission
/// policy denied, answered by `result`, then a final model call and the end
/// of the turn.
fn denied_call_answered_by(result: Event) -> Vec<Event> {
    use logbook_core::event::EvaluatedPermission;
    vec![
        Event::UserMessage(UserMessage { content: vec![ContentBlock::Text { text: "clean up".into() }] }),
        Event::SessionStatusRunning(SessionStatusRunning {}),
        Event::SpanModelRequestStart(SpanModelRequestStart {}),
        Event::AgentToolUse(AgentToolUse {
            name: "bash".into(),
            input: Json::new(&serde_json::json!({"command": "rm -rf /workspace"})),
            evaluated_permission: Some(EvaluatedPermission::Deny),
            evaluation: None,
            session_thread_id: None,
        }),
        end(2, false),
        result,
        Event::SpanModelRequestStart(SpanModelRequestStart {}),
        end(6, false),
        usage(),
        idle(StopReason::EndTurn),
    ]
}

#[test]
fn rerun_catches_a_denied_call_recorded_as_having_run() {
    // Goal: rerun checks that recorded steps are the machine's decisions,
    // "error results for denials, failures and interrupts" (rerun.rs module
    // doc). `step_matches` accepts any `agent.tool_result` answering a call
    // the machine denies (`Command::DenyTools`), whatever its `is_error`:
    // a log in which a call the policy denied is answered with a successful
    // result, its output, as if it had run, reproduces "every decision".
    // Method: the genuine log (an error result) is consistent; the same log
    // with that result turned into a success must not be.
    let genuine = Event::AgentToolResult(AgentToolResult {
        tool_use_id: EventId::from_parts(1, 3),
        content: Some(vec![ContentBlock::Text {
            text: "This tool call was denied: the tool is disabled or is not one of the agent's tools.".into(),
        }]),
        is_error: Some(true),
    });
    let report = rerun_check(&log(denied_call_answered_by(genuine)), &Policy::default());
    assert!(report.is_consistent(), "{report:?}");
    let ran = Event::AgentToolResult(AgentToolResult {
        tool_use_id: EventId::from_parts(1, 3),
        content: Some(vec![ContentBlock::Text { text: "removed 1,204 files".into() }]),
        is_error: Some(false),
    });
    let report = rerun_check(&log(denied_call_answered_by(ran)), &Policy::default());
    assert!(!report.is_consistent(), "a denied call answered as if it ran passes rerun: {report:?}");
    assert_eq!(report.mismatches[0].entry_idx, 5, "{report:?}");
}

/// A turn working to an outcome whose evaluation (event 5) had started when
/// a step failed: `fail_turn` closes it with `failed`, after the error.
fn evaluation_failed_with_the_turn(result: logbook_core::event::OutcomeEvaluationResult) -> Vec<Event> {
    use logbook_core::OutcomeId;
    use logbook_core::event::{Rubric, SpanOutcomeEvaluationEnd, SpanOutcomeEvaluationStart, UserDefineOutcome};
    let outcome_id = OutcomeId::from_parts(1, 99);
    vec![
        Event::UserDefineOutcome(UserDefineOutcome {
            outcome_id,
            description: "a README".into(),
            rubric: Rubric::Text { content: "has a usage section".into() },
            max_iterations: None,
        }),
        Event::SessionStatusRunning(SessionStatusRunning {}),
        Event::SpanModelRequestStart(SpanModelRequestStart {}),
        Event::AgentMessage(AgentMessage { content: vec![ContentBlock::Text { text: "Here it is.".into() }] }),
        end(2, false),
        Event::SpanOutcomeEvaluationStart(SpanOutcomeEvaluationStart { outcome_id, iteration: 0 }),
        exhausted(),
        Event::SpanOutcomeEvaluationEnd(SpanOutcomeEvaluationEnd {
            outcome_evaluation_start_id: EventId::from_parts(1, 5),
            outcome_id,
            iteration: 0,
            result,
            explanation: "The evaluation stopped on an internal error of the server.".into(),
            usage: Default::default(),
        }),
        usage(),
        idle(StopReason::RetriesExhausted),
    ]
}

/// Goal: a turn that fails while its outcome is being evaluated closes the
/// evaluation (`failed`, with the turn), and rerun accepts that closing;
/// but only as a failure: a verdict recorded after the turn's error (no
/// grader answered it) is not a closing the runner writes.
#[test]
fn a_turn_failed_during_its_evaluation_closes_it_as_failed_and_reruns() {
    use logbook_core::event::OutcomeEvaluationResult;
    let report =
        rerun_check(&log(evaluation_failed_with_the_turn(OutcomeEvaluationResult::Failed)), &Policy::default());
    assert!(report.is_consistent(), "rerun rejects the closing fail_turn writes: {report:?}");
    let report =
        rerun_check(&log(evaluation_failed_with_the_turn(OutcomeEvaluationResult::Satisfied)), &Policy::default());
    assert!(!report.is_consistent(), "a verdict after the turn's error passes rerun: {report:?}");
    assert_eq!(report.mismatches[0].entry_idx, 7, "{report:?}");
}
