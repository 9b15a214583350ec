//! Re-execution check ("rerun"): do a session's recorded decisions follow from
//! its recorded inputs?
//!
//! Walks a log with a fresh [`Machine`]. Each time a step of the runner begins
//! (the first runner-made event after the previous step ended), the machine is
//! asked what it would do given everything recorded before, and the recorded
//! step must be that command: `session.status_running` for a turn start,
//! `span.model_request_start` for a model call, `x.tool_started` with the same
//! calls for a tool run, error results for denials, failures and interrupts,
//! `session.usage` + idle for turn ends and waits. Client input may interleave
//! anywhere. Model outputs and tool results are taken as recorded: this checks
//! the decisions, not the model. A mismatch means the log was not produced by
//! this state machine (a bug, a changed policy, or tampering).

use std::collections::BTreeSet;

use serde::Serialize;

use logbook_core::event::{
    Event, EventType, OutcomeEvaluationResult, RetryStatus, SpanOutcomeEvaluationEnd, StopReason,
};
use logbook_core::{Entry, EventId};

use crate::machine::{Command, Machine, Policy, is_last_evaluation};

/// A recorded step that is not what the machine would have done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// Position of the entry in the log.
    pub entry_idx: usize,
    pub recorded: String,
    pub expected: String,
}

/// The outcome of a rerun check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RerunReport {
    /// Runner steps checked.
    pub n_steps: usize,
    pub mismatches: Vec<Mismatch>,
}

impl RerunReport {
    pub fn is_consistent(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// What the walk is inside of.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    /// Between steps: the next runner event starts one.
    Between,
    /// A model call: until its `span.model_request_end` and what follows it
    /// in the same step (metadata; for a failed call, the error, a reschedule,
    /// or the usage and idle of a turn that gives up).
    Call { ended: bool, failed: bool },
    /// Tool results of these calls are still to come (error results only,
    /// when `errors`: calls denied, failed or interrupted).
    Results { open: BTreeSet<EventId>, errors: bool },
    /// `session.usage` was recorded; the idle that ends the step follows.
    Idling,
    /// One more event of this type may close the step: after `x.compaction`,
    /// `agent.thread_context_compacted`; after a turn's
    /// `session.status_running`, the primary thread's
    /// `session.thread_status_running` (logs from before 2026-12-06 have
    /// none).
    Expecting(EventType),
    /// An outcome's evaluation started: heartbeats, then its end.
    Evaluating,
    /// A turn the runner gave up on an internal error, in whatever step
    /// (`session.error` exhausted first): the open request's end, error
    /// results of these open calls and a `failed` end of the evaluation
    /// under way follow, then usage and the idle `retries_exhausted`.
    Failing(BTreeSet<EventId>),
}

pub fn check<'a>(entries: impl IntoIterator<Item = &'a Entry>, policy: &Policy) -> RerunReport {
    let entries: Vec<&Entry> = entries.into_iter().collect();
    let mut machine = Machine::new();
    let mut report = RerunReport::default();
    let mut mode = Mode::Between;
    // The turn under way was started by a runner that did not record the
    // primary thread's status, and did not grade outcomes (before
    // 2026-12-06).
    let mut older_turn = false;
    for (entry_idx, entry) in entries.iter().enumerate() {
        if let Event::SessionStatusRunning(_) = &entry.event {
            older_turn = true;
        } else if let Event::SessionThreadStatusRunning(_) = &entry.event {
            older_turn = false;
        }
        let event = &entry.event;
        if is_client_input(event) {
            machine.apply(entry);
            continue;
        }
        // Does this event continue the current step?
        let continues = match &mode {
            Mode::Between => false,
            Mode::Call { ended: false, .. } => true,
            Mode::Call { ended: true, failed: false } => {
                matches!(event, Event::ModelRequest(_) | Event::ServerToolRequests(_))
            }
            // A failed call's server tool uses were billed all the same.
            Mode::Call { ended: true, failed: true } => matches!(
                event,
                Event::ModelRequest(_)
                    | Event::ServerToolRequests(_)
                    | Event::SessionError(_)
                    | Event::SessionStatusRescheduled(_)
                    | Event::SessionUsage(_)
                    | Event::SessionStatusIdle(_)
            ),
            Mode::Results { open, errors } => {
                answered(event).is_some_and(|id| open.contains(&id)) && (!*errors || is_error_result(event))
            }
            Mode::Idling => matches!(event, Event::SessionStatusIdle(_)),
            Mode::Expecting(expected) => event.event_type() == *expected,
            Mode::Evaluating => {
                if let Event::SpanOutcomeEvaluationEnd(end) = event {
                    verdict_fits(&machine, end)
                } else {
                    matches!(event, Event::SpanOutcomeEvaluationOngoing(_))
                }
            }
            Mode::Failing(open) => {
                if let Event::SessionStatusIdle(idle) = event {
                    idle.stop_reason == StopReason::RetriesExhausted
                } else if let Some(id) = answered(event) {
                    open.contains(&id) && is_error_result(event)
                } else if let Event::SpanOutcomeEvaluationEnd(end) = event {
                    // The evaluation under way fails with the turn.
                    end.result == OutcomeEvaluationResult::Failed
                        && machine.outcome().is_some_and(|o| {
                            o.evaluating == Some(end.outcome_evaluation_start_id)
                                && o.outcome_id == end.outcome_id
                                && o.iteration == end.iteration
                        })
                } else {
                    matches!(event, Event::SpanModelRequestEnd(_) | Event::SessionUsage(_))
                }
            }
        };
        // The runner ends a turn a step failed in with an exhausted
        // `session.error` (`fail_turn`), which no command decides; only a
        // turn under way ends so.
        let gives_up = machine.in_turn()
            && matches!(event, Event::SessionError(error) if error.error.retry_status() == RetryStatus::Exhausted);
        if !continues {
            let expected = machine.next(policy);
            report.n_steps += 1;
            let next_idle = entries[entry_idx..].iter().find_map(|e| {
                if let Event::SessionStatusIdle(idle) = &e.event { Some(idle.stop_reason.clone()) } else { None }
            });
            let (ok, new_mode) = step_matches(&expected, event, next_idle.as_ref(), &machine, older_turn);
            let (ok, new_mode) = if !ok && gives_up {
                (true, Mode::Failing(machine.open_tools().map(|(id, _)| id).collect()))
            } else {
                (ok, new_mode)
            };
            if !ok {
                report.mismatches.push(Mismatch {
                    entry_idx,
                    recorded: event.event_type().as_str().to_owned(),
                    expected: format!("{expected:?}"),
                });
            }
            mode = new_mode;
        }
        // Advance the mode within the step.
        mode = match mode {
            Mode::Call { ended, failed } => {
                let (ended, failed) = if let Event::SpanModelRequestEnd(end) = event {
                    (true, end.is_error == Some(true))
                } else {
                    (ended, failed)
                };
                if matches!(event, Event::SessionStatusIdle(_)) { Mode::Between } else { Mode::Call { ended, failed } }
            }
            Mode::Results { mut open, errors } => {
                if let Some(id) = answered(event) {
                    open.remove(&id);
                }
                if open.is_empty() { Mode::Between } else { Mode::Results { open, errors } }
            }
            Mode::Idling => {
                if matches!(event, Event::SessionStatusIdle(_)) {
                    Mode::Between
                } else {
                    Mode::Idling
                }
            }
            Mode::Expecting(expected) => {
                if event.event_type() == expected {
                    Mode::Between
                } else {
                    Mode::Expecting(expected)
                }
            }
            Mode::Evaluating => {
                if matches!(event, Event::SpanOutcomeEvaluationEnd(_)) {
                    Mode::Between
                } else {
                    Mode::Evaluating
                }
            }
            Mode::Failing(mut open) => {
                if matches!(event, Event::SessionStatusIdle(_)) {
                    Mode::Between
                } else {
                    if let Some(id) = answered(event) {
                        open.remove(&id);
                    }
                    Mode::Failing(open)
                }
            }
            Mode::Between => Mode::Between,
        };
        machine.apply(entry);
    }
    report
}

/// Whether the verdict `end` is one the runner records for the outcome the
/// machine works towards: its evaluation, a revision only before the last
/// allowed one, `max_iterations_reached` only at it, `interrupted` only
/// after an interrupt.
fn verdict_fits(machine: &Machine, end: &SpanOutcomeEvaluationEnd) -> bool {
    let Some(outcome) = machine.outcome() else { return false };
    let last = is_last_evaluation(end.iteration, outcome.max_iterations);
    outcome.outcome_id == end.outcome_id
        && end.iteration == outcome.iteration
        && match end.result {
            OutcomeEvaluationResult::NeedsRevision => !last,
            OutcomeEvaluationResult::MaxIterationsReached => last,
            OutcomeEvaluationResult::Satisfied | OutcomeEvaluationResult::Failed => true,
            OutcomeEvaluationResult::Interrupted => machine.interrupted_outcome() == Some(end.outcome_id),
        }
}

/// Whether `event` can start the step `expected`, and the mode it opens.
fn step_matches(
    expected: &Command,
    event: &Event,
    next_idle: Option<&StopReason>,
    machine: &Machine,
    older_turn: bool,
) -> (bool, Mode) {
    // The other error results of calls the runner closes.
    let results_of = |ids: Vec<EventId>, first: Option<EventId>| {
        let mut open: BTreeSet<EventId> = ids.into_iter().collect();
        if let Some(first) = first {
            open.remove(&first);
        }
        if open.is_empty() { Mode::Between } else { Mode::Results { open, errors: true } }
    };
    // A result closing a call the runner did not run is an error result.
    let closes = |ids: &[EventId]| answered(event).is_some_and(|id| ids.contains(&id)) && is_error_result(event);
    match (expected, event) {
        (Command::StartTurn | Command::Resume, Event::SessionStatusRunning(_)) => {
            (true, Mode::Expecting(EventType::SessionThreadStatusRunning))
        }
        // The settings of the call are recorded with its start when they changed.
        (Command::CallModel { .. }, Event::SpanModelRequestStart(_) | Event::AgentConfig(_)) => {
            (true, Mode::Call { ended: false, failed: false })
        }
        (Command::Compact, Event::Compaction(_)) => (true, Mode::Expecting(EventType::AgentThreadContextCompacted)),
        // A compaction interrupted during its summarizing call records what
        // the provider billed for it in one that cut nothing, after the
        // interrupt it gave way to: part of the interrupt's step.
        (Command::Interrupt { .. }, Event::Compaction(compaction)) => {
            (compaction.summary.is_empty() && compaction.through_seq == 0, Mode::Between)
        }
        // An older runner ended an outcome's turn without grading it.
        (Command::EvaluateOutcome { start: None, .. }, Event::SessionUsage(_)) if older_turn => (
            matches!(next_idle, Some(StopReason::EndTurn | StopReason::Refusal | StopReason::BudgetReached)),
            Mode::Idling,
        ),
        // A budget stop: the runner idles instead of calling a priced model
        // (since 2026-12-06 the primary thread's idle comes first; the usage
        // then starts the same step again, as it does in older logs).
        (Command::CallModel { .. } | Command::Compact | Command::EvaluateOutcome { .. }, Event::SessionUsage(_)) => {
            (matches!(next_idle, Some(StopReason::BudgetReached)), Mode::Idling)
        }
        (
            Command::CallModel { .. } | Command::Compact | Command::EvaluateOutcome { .. },
            Event::SessionThreadStatusIdle(idle),
        ) => (
            idle.stop_reason == StopReason::BudgetReached && matches!(next_idle, Some(StopReason::BudgetReached)),
            Mode::Between,
        ),
        (Command::CloseModelRequest { .. }, Event::SpanModelRequestEnd(end)) => {
            (end.is_error == Some(true), Mode::Between)
        }
        // The runner runs the calls one per step (older logs: all at once).
        (Command::RunTools(ids), Event::ToolStarted(started)) => (
            !started.tool_use_ids.is_empty() && ids.starts_with(&started.tool_use_ids),
            Mode::Results { open: started.tool_use_ids.iter().copied().collect(), errors: false },
        ),
        (Command::DenyTools(calls), Event::AgentToolResult(_) | Event::AgentMcpToolResult(_)) => {
            let ids: Vec<EventId> = calls.iter().map(|(id, _)| *id).collect();
            (closes(&ids), results_of(ids.clone(), answered(event)))
        }
        (Command::FailTools { ids, .. }, Event::AgentToolResult(_) | Event::AgentMcpToolResult(_)) => {
            (closes(ids), results_of(ids.clone(), answered(event)))
        }
        (Command::Interrupt { open }, Event::AgentToolResult(_) | Event::AgentMcpToolResult(_)) => {
            let mut rest = results_of(open.clone(), answered(event));
            if rest == Mode::Between {
                rest = Mode::Idling;
            }
            (closes(open), rest)
        }
        (Command::Interrupt { open }, Event::SessionUsage(_)) => (open.is_empty(), Mode::Idling),
        // The outcome under way ends first (its evaluation's end, when the
        // interrupt stopped the grader, is part of the evaluation's step).
        (Command::Interrupt { .. }, Event::SpanOutcomeEvaluationEnd(end)) => {
            (end.result == OutcomeEvaluationResult::Interrupted && verdict_fits(machine, end), Mode::Between)
        }
        // A refused turn is not graded: its outcome ends `failed`.
        (Command::EndTurn, Event::SpanOutcomeEvaluationEnd(end)) => (
            end.result == OutcomeEvaluationResult::Failed
                && machine.outcome().is_some_and(|o| o.outcome_id == end.outcome_id)
                && matches!(next_idle, Some(StopReason::Refusal)),
            Mode::Between,
        ),
        // The settings a grading uses are recorded before it when they changed.
        (Command::EvaluateOutcome { start: None, .. }, Event::AgentConfig(_)) => (true, Mode::Between),
        (Command::EvaluateOutcome { outcome_id, iteration, start: None }, Event::SpanOutcomeEvaluationStart(span)) => {
            (span.outcome_id == *outcome_id && span.iteration == *iteration, Mode::Evaluating)
        }
        // An evaluation a crash left unended goes on: its end (or a heartbeat) comes next.
        (Command::EvaluateOutcome { start: Some(start), .. }, Event::SpanOutcomeEvaluationEnd(end)) => {
            (end.outcome_evaluation_start_id == *start && verdict_fits(machine, end), Mode::Between)
        }
        (Command::EvaluateOutcome { outcome_id, start: Some(_), .. }, Event::SpanOutcomeEvaluationOngoing(span)) => {
            (span.outcome_id == *outcome_id, Mode::Evaluating)
        }
        // `refusal` when the turn's last response was refused.
        (Command::EndTurn, Event::SessionUsage(_)) => {
            (matches!(next_idle, Some(StopReason::EndTurn | StopReason::Refusal)), Mode::Idling)
        }
        (Command::AwaitClient(ids), Event::SessionUsage(_)) => {
            (matches!(next_idle, Some(StopReason::RequiresAction { event_ids }) if event_ids == ids), Mode::Idling)
        }
        (Command::GiveUp, Event::SessionError(error)) => {
            (error.error.retry_status() == RetryStatus::Exhausted, Mode::Idling)
        }
        _ => (false, Mode::Between),
    }
}

/// Events a client sends (or Logbook records for one, or records while
/// preparing a session's resources or connecting its MCP servers): not runner
/// decisions.
fn is_client_input(event: &Event) -> bool {
    event.event_type().as_input().is_some()
        || matches!(
            event,
            Event::SessionUpdated(_)
                | Event::SessionDeleted(_)
                | Event::SessionStatusTerminated(_)
                | Event::WorkspaceDelta(_)
                | Event::ForkOrigin(_)
                | Event::SessionResource(_)
        )
        || matches!(event, Event::SessionError(error) if error.error.is_repository_error() || error.error.is_mcp_error())
}

/// The call a runner-made result answers.
/// Whether `event` is a tool result marked as an error.
fn is_error_result(event: &Event) -> bool {
    if let Event::AgentToolResult(result) = event {
        result.is_error == Some(true)
    } else if let Event::AgentMcpToolResult(result) = event {
        result.is_error == Some(true)
    } else {
        false
    }
}

fn answered(event: &Event) -> Option<EventId> {
    if let Event::AgentToolResult(result) = event {
        Some(result.tool_use_id)
    } else if let Event::AgentMcpToolResult(result) = event {
        Some(result.mcp_tool_use_id)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use logbook_core::event::{
        ContentBlock, SessionStatusIdle, SessionStatusRunning, SessionUsage, SpanModelRequestEnd,
        SpanModelRequestStart, UserMessage,
    };
    use logbook_core::{Entry, EventId, Timestamp};

    use super::*;

    fn log(events: Vec<Event>) -> Vec<Entry> {
        events
            .into_iter()
            .enumerate()
            .map(|(n, event)| Entry {
                id: EventId::from_parts(1, n as u128),
                event,
                at: Timestamp::from_unix_micros(0),
            })
            .collect()
    }

    fn turn(with_model_call: bool) -> Vec<Entry> {
        let mut events = vec![
            Event::UserMessage(UserMessage { content: vec![ContentBlock::Text { text: "hi".into() }] }),
            Event::SessionStatusRunning(SessionStatusRunning {}),
        ];
        if with_model_call {
            events.push(Event::SpanModelRequestStart(SpanModelRequestStart {}));
            events.push(Event::SpanModelRequestEnd(SpanModelRequestEnd {
                model_request_start_id: EventId::from_parts(1, 2),
                model_usage: Default::default(),
                is_error: Some(false),
            }));
        }
        events.push(Event::SessionUsage(SessionUsage { usage: Default::default(), budget: None }));
        events
            .push(Event::SessionStatusIdle(SessionStatusIdle { stop_reason: StopReason::EndTurn, stop_details: None }));
        log(events)
    }

    #[test]
    fn a_recorded_turn_is_consistent_and_a_skipped_model_call_is_not() {
        let report = check(&turn(true), &Policy::default());
        assert!(report.is_consistent(), "{report:?}");
        assert_eq!(report.n_steps, 3);
        let report = check(&turn(false), &Policy::default());
        assert_eq!(report.mismatches.len(), 1, "{report:?}");
        assert_eq!(report.mismatches[0].entry_idx, 2);
        assert_eq!(report.mismatches[0].recorded, "session.usage");
    }

    #[test]
    fn a_denied_mcp_call_is_answered_by_an_mcp_tool_result() {
        use logbook_core::Json;
        use logbook_core::event::{AgentMcpToolResult, AgentMcpToolUse, EvaluatedPermission};
        let start = Event::SpanModelRequestStart(SpanModelRequestStart {});
        let end = |start: u128| {
            Event::SpanModelRequestEnd(SpanModelRequestEnd {
                model_request_start_id: EventId::from_parts(1, start),
                model_usage: Default::default(),
                is_error: Some(false),
            })
        };
        // The runner records what the model asked for before the call's end.
        let events = vec![
            Event::UserMessage(UserMessage { content: vec![ContentBlock::Text { text: "hi".into() }] }),
            Event::SessionStatusRunning(SessionStatusRunning {}),
            start.clone(),
            Event::AgentMcpToolUse(AgentMcpToolUse {
                name: "delete_everything".into(),
                mcp_server_name: "docs".into(),
                input: Json::empty_object(),
                evaluated_permission: Some(EvaluatedPermission::Deny),
                evaluation: None,
                session_thread_id: None,
            }),
            end(2),
            Event::AgentMcpToolResult(AgentMcpToolResult {
                mcp_tool_use_id: EventId::from_parts(1, 3),
                content: None,
                is_error: Some(true),
            }),
            start,
            end(6),
            Event::SessionUsage(SessionUsage { usage: Default::default(), budget: None }),
            Event::SessionStatusIdle(SessionStatusIdle { stop_reason: StopReason::EndTurn, stop_details: None }),
        ];
        let report = check(&log(events), &Policy::default());
        assert!(report.is_consistent(), "{report:?}");
        assert_eq!(report.n_steps, 5);
    }

    #[test]
    fn mcp_connection_errors_and_server_tool_counts_are_not_decisions() {
        use logbook_core::event::{
            ModelRequest, ServerToolRequests, SessionError, SessionErrorDetail, SpanModelRequestEnd,
            SpanModelRequestStart,
        };
        let mut events = vec![
            Event::UserMessage(UserMessage { content: vec![ContentBlock::Text { text: "hi".into() }] }),
            Event::SessionStatusRunning(SessionStatusRunning {}),
            Event::SessionError(SessionError {
                error: SessionErrorDetail::McpConnectionFailedError {
                    message: "down".into(),
                    retry_status: RetryStatus::Retrying,
                    mcp_server_name: "docs".into(),
                },
            }),
            Event::SpanModelRequestStart(SpanModelRequestStart {}),
            Event::SpanModelRequestEnd(SpanModelRequestEnd {
                model_request_start_id: EventId::from_parts(1, 3),
                model_usage: Default::default(),
                is_error: Some(false),
            }),
            Event::ModelRequest(ModelRequest {
                model_request_start_id: EventId::from_parts(1, 3),
                model: "m".into(),
                request_id: None,
                stop_reason: Some("end_turn".into()),
                usage: Default::default(),
                duration_ms: 1,
                attempt: 1,
            }),
            Event::ServerToolRequests(ServerToolRequests {
                model_request_start_id: EventId::from_parts(1, 3),
                web_search_requests: 1,
                web_fetch_requests: 0,
            }),
        ];
        events.push(Event::SessionUsage(SessionUsage { usage: Default::default(), budget: None }));
        events
            .push(Event::SessionStatusIdle(SessionStatusIdle { stop_reason: StopReason::EndTurn, stop_details: None }));
        let report = check(&log(events), &Policy::default());
        assert!(report.is_consistent(), "{report:?}");
        assert_eq!(report.n_steps, 3);
    }

    /// Goal: a log an older runner recorded still reruns: before outcomes
    /// were graded (2026-12-06), a `user.define_outcome` started a turn
    /// that ended as any other, with no evaluation (as logs without
    /// `session.thread_status_running` are accepted, `Mode::Expecting`).
    /// Defect: the machine now grades where an outcome's turn would end, and
    /// `check` has no allowance for a turn that ended without: every session
    /// recorded with an outcome before the change reports a mismatch at its
    /// `session.usage` ("not produced by this state machine: a bug ... or
    /// tampering").
    /// Method: the older runner's turn for an outcome; the report must be
    /// consistent.
    #[test]
    fn an_outcome_turn_an_older_runner_ended_without_grading_reruns() {
        use logbook_core::OutcomeId;
        use logbook_core::event::{Rubric, UserDefineOutcome};
        let events = vec![
            Event::UserDefineOutcome(UserDefineOutcome {
                outcome_id: OutcomeId::from_parts(1, 1),
                description: "a README".into(),
                rubric: Rubric::Text { content: "has a usage section".into() },
                max_iterations: None,
            }),
            Event::SessionStatusRunning(SessionStatusRunning {}),
            Event::SpanModelRequestStart(SpanModelRequestStart {}),
            Event::SpanModelRequestEnd(SpanModelRequestEnd {
                model_request_start_id: EventId::from_parts(1, 2),
                model_usage: Default::default(),
                is_error: Some(false),
            }),
            Event::SessionUsage(SessionUsage { usage: Default::default(), budget: None }),
            Event::SessionStatusIdle(SessionStatusIdle { stop_reason: StopReason::EndTurn, stop_details: None }),
        ];
        let report = check(&log(events), &Policy::default());
        assert!(report.is_consistent(), "{report:?}");
    }
}
