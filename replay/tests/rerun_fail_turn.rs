//! `logbook rerun` accepts the events `Task::fail_turn`
//! (server/src/runner/step.rs) appends to end a turn a step failed in.

#![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

use logbook_core::event::{
    AgentToolResult, AgentToolUse, ContentBlock, Event, RetryStatus, SessionError, SessionErrorDetail,
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

/// Defect: `fail_turn` ends a turn whatever step failed, with
/// `session.error` (unknown_error, exhausted), `session.usage` and an idle
/// `retries_exhausted`; rerun accepts those only inside a failed model call
/// (`Mode::Call { failed: true }`). A step that fails elsewhere (here a tool
/// step: `x.tool_started` recorded, then the step errs, e.g. its result
/// cannot be appended or the session cannot be loaded) leaves a log that
/// rerun reports as not produced by the state machine (it expects
/// `FailTools { Orphaned }` for the started call), so `logbook rerun` fails
/// on logs the runner itself writes. The same holds for a failure right after
/// `session.status_running` (rerun expects `CallModel`). Note also that the
/// turn ends with the call still open: the machine later closes it as
/// orphaned, and any call of that response not started yet (unanswered, not
/// waiting on the client) makes the next wake start a turn and run it (a
/// dead turn's call, run with no new input but whatever wakes the task).
#[test]
fn a_turn_ended_by_a_failing_tool_step_reruns_consistently() {
    let events = vec![
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
        Event::SpanModelRequestEnd(SpanModelRequestEnd {
            model_request_start_id: EventId::from_parts(1, 2),
            model_usage: Default::default(),
            is_error: Some(false),
        }),
        Event::ToolStarted(ToolStarted { tool_use_ids: vec![EventId::from_parts(1, 3)] }),
        // What `fail_turn` appends when the tool step fails: the error, the
        // open call closed, usage and the idle.
        Event::SessionError(SessionError {
            error: SessionErrorDetail::UnknownError {
                message: "the turn stopped on an internal error of the server; see its log".into(),
                retry_status: RetryStatus::Exhausted,
            },
        }),
        Event::AgentToolResult(AgentToolResult {
            tool_use_id: EventId::from_parts(1, 3),
            content: None,
            is_error: Some(true),
        }),
        Event::SessionUsage(SessionUsage { usage: Default::default(), budget: None }),
        Event::SessionStatusIdle(SessionStatusIdle { stop_reason: StopReason::RetriesExhausted, stop_details: None }),
    ];
    let report = rerun_check(&log(events), &Policy::default());
    assert!(report.is_consistent(), "rerun rejects a log the runner's fail_turn wrote: {report:?}");
}
