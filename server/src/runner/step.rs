//! One session's task: catch up with the log, ask the machine, carry out the
//! command, append what happened.
//!
//! Events a step produces are appended together, in one optimistic append
//! (retried on conflict with the API appending client input), after the work
//! is done: a model response becomes `x.model_response`, the public `agent.*`
//! events, `span.model_request_end` and `x.model_request` in one batch. Event
//! ids shown in previews are chosen before the response completes, from the seq
//! the event is expected at; an id's seq is therefore a lower bound, which is
//! what `find_event` relies on. A turn's start and end, a model call's
//! opening, closing error results, a wait on the client and a compaction
//! are appended only right after the entries they were decided on
//! (`Task::append_decided`):
//! input that lands first (a worker answering fast) makes the task decide
//! again once it is durable. A call's workspace changes may take several
//! `x.workspace_delta` events and appends (`split_delta`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use logbook_core::event::{
    AgentCustomToolUse, AgentMcpToolResult, AgentMcpToolUse, AgentMessage, AgentThinking, AgentToolResult,
    AgentToolUse, AutoPermission, CacheCreationUsage, ContentBlock, EvaluatedPermission, Event, ModelRequest,
    ModelResponse, ModelUsage, OutcomeEvaluationResult, RetryStatus, ServerToolRequests, ServerToolUsage, SessionError,
    SessionErrorDetail, SessionStatusIdle, SessionStatusRescheduled, SessionStatusRunning, SessionThreadStatusIdle,
    SessionThreadStatusRunning, SessionUsage, SpanModelRequestEnd, SpanModelRequestStart, StopReason, ToolEvaluation,
    ToolStarted, ToolUseLink, UsageSnapshot, WorkspaceDelta,
};
use logbook_core::{Entry, EventId, Json, Record, Seq, SessionId};
use logbook_replay::machine::{REFUSAL, is_over_the_window};
use logbook_replay::state::AgentSettings;
use logbook_replay::{Command, FailReason, Policy, SessionState, Status as MachineStatus, ToolHost};
use logbook_store::{AppendError, Read};
use serde_json::Value;

use super::failpoint::{self, Point};
use super::folded::Folded;
use super::server_tools;
use super::tools::{ToolCall, ToolExecutor};
use super::{RunnerHandle, TaskSignals, ToolOutcome};
use crate::api::environments::{self, Environment};
use crate::api::error::ApiError;
use crate::api::sessions::{self, Status, StoredSession};
use crate::api::tools::{PolicyKind, Tool};
use crate::api::work::WorkNeed;
use crate::model::settings::{agent_view, options_from};
use crate::model::{McpToolName, ModelError, StreamEvent, Thinking, build_request, without_tool_use};
use crate::previews::{Preview, PreviewKind};
use crate::state::AppState;
use crate::tenancy::Tenant;

/// Attempts of one append that keeps losing races with the API.
const MAX_APPEND_ATTEMPTS: usize = 256;
/// The `session.error` message of a turn ended on an internal error. It
/// names no internals (clients are shown it); the server log has them.
const INTERNAL_ERROR: &str = "the turn stopped on an internal error of the server; see its log";
/// Records read per catch-up step.
const CATCH_UP_BATCH: usize = 10_000;
/// Attempts of a summarizing call that keeps failing transiently before the
/// older turns are elided instead.
const SUMMARY_MAX_ATTEMPTS: u32 = 3;
/// `max_tokens` of a summarizing call: a summary longer than this is no summary.
const SUMMARY_MAX_TOKENS: u32 = 8_192;
/// Most bytes (as sent) a compaction keeps of the newest messages: half the
/// Messages API's 32 MB request limit, so that what follows a compaction is
/// never refused as too large (413) for what was kept, whatever the tokens
/// say (an image counts 1,600 of them at any size).
const MAX_KEPT_BYTES: u64 = 16 * 1024 * 1024;

/// Why [`Task::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stopped {
    /// The machine waits for input (or the session ended).
    Waiting,
    /// The step limit was reached with work left: yield, then run again.
    StepLimit,
}

pub(crate) struct Task {
    state: AppState,
    handle: RunnerHandle,
    tenant: Tenant,
    session: SessionId,
    signals: Arc<TaskSignals>,
    /// Every projection of the log read so far (the machine among them).
    projection: SessionState,
    entries: Vec<Entry>,
    /// The canonical bytes of `entries`.
    entry_bytes: usize,
    /// The last model failure, to name the error when retries run out.
    last_error: Option<ModelError>,
    /// The session's policy, once read (see [`Task::policy`]).
    policy: Option<Policy>,
    /// The workspace's work slot, held for one model call or tool run.
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
    /// What the provider billed for a grading call an interrupt stopped,
    /// recorded with the outcome's end.
    interrupted_grading: Option<ModelUsage>,
    /// The call cut short whose changes were recorded last
    /// ([`Task::record_cut_short`]): recorded once, then answered, even if
    /// something in the sandbox keeps writing.
    cut_short: Option<EventId>,
}

/// How a call beside the conversation ended ([`Task::side_call`]).
enum SideCall {
    /// Answered, or failed for good (with the usage reported before the
    /// failure); `failed_usage` is what earlier failed attempts were billed.
    Done { outcome: Result<crate::model::ModelResponse, (ModelError, ModelUsage)>, failed_usage: ModelUsage },
    /// An interrupt stopped it, after the usage billed so far.
    Interrupted { usage: ModelUsage },
}

/// Counts a task waiting for a work slot in `/metrics` while it lives.
struct WaitingForSlot<'a>(&'a AppState);

impl<'a> WaitingForSlot<'a> {
    fn new(state: &'a AppState) -> WaitingForSlot<'a> {
        state.metrics().runner_sessions_waiting.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        WaitingForSlot(state)
    }
}

impl Drop for WaitingForSlot<'_> {
    fn drop(&mut self) {
        self.0.metrics().runner_sessions_waiting.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Whether carrying out `command` takes one of the workspace's work slots:
/// model calls (a summary is one) and tool runs do, and so does closing
/// calls a restart cut short (it scans their workspace first, every
/// recovered session at once); status and result bookkeeping does not, so
/// an interrupt or an end is never held up (an interrupt found after a
/// restart scans the call it closes without one).
fn needs_work_slot(command: &Command) -> bool {
    match command {
        Command::CallModel { .. } | Command::RunTools(_) | Command::Compact | Command::EvaluateOutcome { .. } => true,
        Command::FailTools { reason, .. } => match reason {
            FailReason::Orphaned => true,
            FailReason::Interrupted | FailReason::Superseded | FailReason::CutOff => false,
        },
        Command::Wait
        | Command::StartTurn
        | Command::Resume
        | Command::GiveUp
        | Command::CloseModelRequest { .. }
        | Command::DenyTools(_)
        | Command::AwaitClient(_)
        | Command::EndTurn
        | Command::Interrupt { .. } => false,
    }
}

/// Where an idle is appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdleAt {
    /// At the head, whatever arrived meanwhile: the idle closes work that
    /// happened (an interrupt, a failed request, retries given up).
    Head,
    /// Only right after the entries the machine decided on: a turn's end, a
    /// wait for the client or a pause at the budget, which input arriving
    /// meanwhile may change (a budget raised as the pause is recorded must
    /// not be missed: it is what resumes the session).
    Decided,
}

impl Task {
    pub(crate) fn new(
        state: AppState,
        handle: RunnerHandle,
        tenant: Tenant,
        session: SessionId,
        signals: Arc<TaskSignals>,
        folded: Folded,
    ) -> Task {
        Task {
            state,
            handle,
            tenant,
            session,
            signals,
            projection: folded.projection,
            entries: folded.entries,
            entry_bytes: folded.bytes,
            last_error: None,
            policy: None,
            slot: None,
            interrupted_grading: None,
            cut_short: None,
        }
    }

    /// What the task has read of the log, for the session's next task.
    pub(crate) fn into_folded(self) -> Folded {
        Folded { projection: self.projection, entries: self.entries, bytes: self.entry_bytes }
    }

    /// Takes steps until the machine waits, or `max_steps` were taken.
    pub(crate) async fn run(&mut self, max_steps: usize) -> Result<Stopped, ApiError> {
        let stopped = self.steps(max_steps).await;
        self.slot = None;
        stopped
    }

    /// Takes a work slot of the session's workspace: `true` if one was free.
    /// Otherwise waits for one, or for news (input, an interrupt, the
    /// session's end), and says `false`: time passed, so the caller decides
    /// again, holding the slot if one came.
    async fn take_slot(&mut self) -> bool {
        let slots = self.handle.slots(self.tenant.workspace);
        if let Ok(permit) = Arc::clone(&slots).try_acquire_owned() {
            self.slot = Some(permit);
            return true;
        }
        let _waiting = WaitingForSlot::new(&self.state);
        tokio::select! {
            // Never closed: an error only leaves the slot to the next try.
            permit = slots.acquire_owned() => self.slot = permit.ok(),
            () = self.signals.poke.notified() => {}
        }
        false
    }

    async fn steps(&mut self, max_steps: usize) -> Result<Stopped, ApiError> {
        for _ in 0..max_steps {
            // Every interrupt up to here is in the log the machine reads
            // next (the API wakes the task only once one is durable): a
            // signal left over from one must not cut the next call short.
            self.signals.forget_interrupt();
            self.catch_up().await?;
            if self.projection.machine.status() == MachineStatus::Terminated {
                return Ok(Stopped::Waiting);
            }
            let policy = self.policy().await?;
            let command = self.projection.machine.next(&policy);
            tracing::debug!(session = %self.session, ?command, "runner step");
            let worker_calls =
                if policy.tool_host == ToolHost::Worker && matches!(command, Command::Wait | Command::AwaitClient(_)) {
                    self.projection.machine.worker_calls(&policy)
                } else {
                    Vec::new()
                };
            if !worker_calls.is_empty() {
                self.ensure_work(&worker_calls).await?;
            }
            if !needs_work_slot(&command) {
                self.slot = None;
            } else if self.slot.is_none() && !self.take_slot().await {
                continue;
            }
            match command.clone() {
                Command::Wait => return Ok(Stopped::Waiting),
                Command::StartTurn | Command::Resume => {
                    // Only right after what it was decided on: an archive (or an
                    // interrupt) landing first makes the task decide again.
                    let running = self.running_events().await?;
                    failpoint::pass(Point::TurnBeforeRunning);
                    if !self.append_decided(running).await? {
                        continue;
                    }
                    failpoint::pass(Point::TurnAfterRunning);
                    self.set_status(Status::Running).await;
                    crate::resources::before_turn(&self.state, self.tenant, self.session).await;
                    // Idle to running: connect what is not connected yet (a
                    // failed server is tried again here, as hosted).
                    if command == Command::StartTurn {
                        self.prepare_mcp().await?;
                    }
                }
                Command::CallModel { attempt } => self.call_model(attempt).await?,
                Command::GiveUp => {
                    let error = self.last_error.clone();
                    self.give_up(error.as_ref()).await?;
                }
                Command::CloseModelRequest { start_id } => {
                    self.append(vec![(None, request_end(start_id, ModelUsage::default(), true))]).await?;
                }
                Command::RunTools(ids) => self.run_tools(ids).await?,
                // Closing results are appended only right after the entries
                // they were decided on: a client's answer that lands first
                // (a custom tool result racing an interrupt) makes the task
                // decide again instead of answering the call twice.
                Command::DenyTools(calls) => {
                    let events = calls
                        .into_iter()
                        .map(|(id, message)| {
                            let by_user = self.projection.machine.open_tools().any(|(open, tool)| {
                                open == id
                                    && matches!(tool.confirmation, Some(logbook_replay::machine::Confirmation::Deny { .. }))
                            });
                            let text = match (message, by_user) {
                                (Some(message), _) => format!("The user denied this tool call: {message}"),
                                (None, true) => "The user denied this tool call.".to_owned(),
                                (None, false) => {
                                    "This tool call was denied: the tool is disabled or is not one of the agent's tools."
                                        .to_owned()
                                }
                            };
                            (None, self.answer(id, ToolOutcome::error(text)))
                        })
                        .collect();
                    self.append_decided(events).await?;
                }
                Command::FailTools { ids, reason } => {
                    // A call a restart cut short may have run: what it changed
                    // is recorded as its changes first, and the run loop,
                    // catching up, decides again.
                    if reason == FailReason::Orphaned && self.record_cut_short().await? {
                        continue;
                    }
                    let text = match reason {
                        FailReason::Orphaned => {
                            "The server restarted while this tool call ran; it was not run again and its outcome is unknown."
                        }
                        FailReason::Interrupted => "Tool execution was interrupted before completion. Please retry.",
                        FailReason::Superseded => "The user sent a new message instead of answering this tool call.",
                        FailReason::CutOff => {
                            "This tool call was not run: the response was cut off (it reached max_tokens or filled \
                             the model's context window) while its input was being written. Call the tool again with \
                             a shorter input (split a large file into several writes or edits)."
                        }
                    };
                    let events = ids.into_iter().map(|id| (None, self.answer(id, ToolOutcome::error(text)))).collect();
                    self.append_decided(events).await?;
                }
                Command::AwaitClient(ids) => {
                    self.idle_at(StopReason::RequiresAction { event_ids: ids }, Vec::new(), IdleAt::Decided).await?;
                }
                Command::EndTurn => {
                    // With an outcome still set, the turn's last response
                    // was refused (the machine grades any other): the
                    // refusal took the outcome out of the model's context.
                    let refused = "The model refused this turn's work; the outcome was not graded.";
                    let events = self.outcome_end(OutcomeEvaluationResult::Failed, refused).into_iter().collect();
                    self.idle_at(self.end_turn_reason(), events, IdleAt::Decided).await?;
                }
                Command::Compact => self.compact().await?,
                Command::Interrupt { open } => {
                    // A started call the interrupt closes may have run (after
                    // a restart, say): its changes are recorded first.
                    if self.record_cut_short().await? {
                        continue;
                    }
                    let text = "Tool execution was interrupted before completion. Please retry.";
                    let interrupted = "The user interrupted the session.";
                    let mut events: Vec<(Option<EventId>, Event)> =
                        self.outcome_end(OutcomeEvaluationResult::Interrupted, interrupted).into_iter().collect();
                    events.extend(open.into_iter().map(|id| (None, self.answer(id, ToolOutcome::error(text)))));
                    if self.idle_at(StopReason::EndTurn, events, IdleAt::Decided).await? {
                        // Recorded with the outcome's end.
                        self.interrupted_grading = None;
                    }
                }
                Command::EvaluateOutcome { outcome_id, iteration, start } => {
                    self.evaluate_outcome(outcome_id, iteration, start).await?;
                }
            }
            // One call or run per slot: sessions waiting take turns with this one.
            self.slot = None;
        }
        Ok(Stopped::StepLimit)
    }

    /// Appends events only right after the entries the machine decided on.
    /// `Ok(false)` if something landed since: nothing is appended, and the
    /// run loop, catching up, decides again.
    async fn append_decided(&self, events: Vec<(Option<EventId>, Event)>) -> Result<bool, ApiError> {
        let expected = Seq::new(self.entries.len() as u64);
        if self.append_at(expected, events).await?.is_some() {
            return Ok(true);
        }
        self.wait_for_landed(expected).await?;
        Ok(false)
    }

    /// Waits (boundedly) until what another append put at `seq` is durable:
    /// catching up reads durable records only, and deciding again before
    /// it sees them would decide the same thing.
    async fn wait_for_landed(&self, seq: Seq) -> Result<(), ApiError> {
        let durable = self.state.store().wait_durable(self.session, Seq::new(seq.get() + 1))?;
        let _ = tokio::time::timeout(crate::api::events::RACE_WAIT, durable).await;
        Ok(())
    }

    /// How a turn the machine ends stops: `refusal` when the provider
    /// refused in the turn's last response, else `end_turn`.
    fn end_turn_reason(&self) -> StopReason {
        let last_stop = self.entries.iter().rev().find_map(|entry| {
            if let Event::ModelRequest(request) = &entry.event { Some(request.stop_reason.as_deref()) } else { None }
        });
        if last_stop == Some(Some(REFUSAL)) { StopReason::Refusal } else { StopReason::EndTurn }
    }

    /// `session.status_running` and its primary thread's running: the
    /// primary thread runs with the session (behaviour digest §3.4, newer
    /// reference).
    async fn running_events(&self) -> Result<Vec<(Option<EventId>, Event)>, ApiError> {
        // The agent the last call recorded names it (a session's agent is
        // pinned); before any call, the session says.
        let recorded = self.projection.agent.as_ref().and_then(|settings| settings.agent.get("name"));
        let agent_name = match recorded.and_then(Value::as_str) {
            Some(name) => name.to_owned(),
            None => self.load_session().await?.agent.name,
        };
        let thread = SessionThreadStatusRunning {
            session_thread_id: crate::api::threads::primary_thread(self.session),
            agent_name,
        };
        Ok(vec![
            (None, Event::SessionStatusRunning(SessionStatusRunning {})),
            (None, Event::SessionThreadStatusRunning(thread)),
        ])
    }

    /// Ends what a panic stopped, read afresh from the log (the caller logs
    /// the panic): an open turn as [`Task::fail_turn`] ends it; input that
    /// the panic kept from starting a turn gets a turn that fails at once,
    /// so that it is answered, like input whose turn failed, instead of
    /// left waiting unanswered for whatever wakes the session next.
    pub(crate) async fn fail_after_panic(&mut self) -> Result<(), ApiError> {
        for _ in 0..MAX_APPEND_ATTEMPTS {
            self.catch_up().await?;
            if self.projection.machine.in_turn() {
                return self.fail_turn().await;
            }
            let policy = self.policy().await?;
            if self.projection.machine.next(&policy) != Command::StartTurn {
                return Ok(());
            }
            let running = self.running_events().await?;
            if self.append_decided(running).await? {
                self.set_status(Status::Running).await;
                return self.fail_turn().await;
            }
        }
        Err(ApiError::overloaded("the session is too busy to end the turn a panic stopped"))
    }

    /// The last resort when ending a turn panics too (the same state meets
    /// the same bug, reading the log or ending the turn): no task can tell
    /// what is open, so the store alone records a `session.error` and an
    /// idle, if the log's last status says a turn runs. The session is then
    /// not shown `running` with nothing running it, and a client waiting for
    /// the idle gets one. What the turn left open stays open: a later wake
    /// that can read the log closes it or goes on with it. A session not in
    /// a turn gets nothing (an error there is no closing the runner makes,
    /// and `logbook rerun` would reject it): the server log has the panic.
    pub(crate) async fn record_unreadable(&self) -> Result<(), ApiError> {
        let session = self.session;
        for _ in 0..MAX_APPEND_ATTEMPTS {
            // The head first: anything appended after it (an archive, a
            // delete, an idle) makes the append conflict, and the status is
            // read again.
            let (head, status) = self
                .state
                .blocking(move |store| {
                    let head = store.head(session)?.next;
                    Ok((head, sessions::last_status(store, session)?.as_ref().and_then(sessions::status_of)))
                })
                .await?;
            match status {
                Some(Status::Running | Status::Rescheduling) => {}
                Some(Status::Idle | Status::Terminated) | None => return Ok(()),
            }
            let detail = SessionErrorDetail::UnknownError {
                message: INTERNAL_ERROR.to_owned(),
                retry_status: RetryStatus::Exhausted,
            };
            let idle = SessionStatusIdle { stop_reason: StopReason::RetriesExhausted, stop_details: None };
            let events = vec![
                (None, Event::SessionError(SessionError { error: detail })),
                (None, Event::SessionStatusIdle(idle)),
            ];
            if self.append_at(head, events).await?.is_some() {
                self.set_status(Status::Idle).await;
                return Ok(());
            }
        }
        Err(ApiError::overloaded("the session is too busy to record its error"))
    }

    /// Ends a turn a step failed in (the caller logs the error): the
    /// open model request, the open calls and an outcome evaluation under
    /// way are closed (as errors; the evaluation `failed`), and a
    /// `session.error` and an idle say the turn is over, so the session is
    /// not left `running` with no task. Nothing is appended if the session
    /// is not in a turn.
    pub(crate) async fn fail_turn(&mut self) -> Result<(), ApiError> {
        for _ in 0..MAX_APPEND_ATTEMPTS {
            self.catch_up().await?;
            if !self.projection.machine.in_turn() {
                return Ok(());
            }
            // What a call that started changed is recorded as its changes
            // (it may have run); then catch up and close.
            // Best effort: the turn must end even if that cannot be recorded.
            match self.record_cut_short().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(err) => {
                    tracing::warn!(session = %self.session, error = %err, "cannot record a cut-short call's changes");
                }
            }
            let detail = SessionErrorDetail::UnknownError {
                message: INTERNAL_ERROR.to_owned(),
                retry_status: RetryStatus::Exhausted,
            };
            // The error first: `rerun` reads what follows it as the closing of a
            // failed turn, whatever step it failed in.
            let mut events = vec![(None, Event::SessionError(SessionError { error: detail }))];
            // The open request is billed for what the provider reported of it
            // (if this process saw it: a restart does not know).
            if let Some(start_id) = self.projection.machine.open_request() {
                let usage = self.signals.reported.get(start_id).unwrap_or_default();
                events.push((None, request_end(start_id, model_usage(&usage), true)));
                events.extend(server_tool_requests(start_id, &usage));
            }
            // No call of a dead turn is left open to run later without input.
            // A call that started may have run to its end (its result was
            // not recorded): the model is told its outcome is unknown, so
            // that it does not take it for not done.
            let open: Vec<(EventId, bool)> =
                self.projection.machine.open_tools().map(|(id, tool)| (id, tool.started)).collect();
            for (id, started) in open {
                let text = if started {
                    "The turn stopped on an internal error of the server after this call started; it may have \
                     run, in part or in full, and its outcome is unknown. It was not run again."
                } else {
                    "The turn stopped on an internal error of the server before this call ran."
                };
                events.push((None, self.answer(id, ToolOutcome::error(text))));
            }
            // Nor an evaluation: its verdict will never come, so the outcome
            // ends `failed` (with none under way it stays, for the next turn),
            // billed for what its grading calls were (if this process made
            // them: a restart does not know).
            if let Some(outcome) = self.projection.machine.outcome()
                && let Some(start_id) = outcome.evaluating
            {
                let end = logbook_core::event::SpanOutcomeEvaluationEnd {
                    outcome_evaluation_start_id: start_id,
                    outcome_id: outcome.outcome_id,
                    iteration: outcome.iteration,
                    result: OutcomeEvaluationResult::Failed,
                    explanation: "The evaluation stopped on an internal error of the server.".to_owned(),
                    usage: self.signals.graded.get(start_id).unwrap_or_default(),
                };
                events.push((None, Event::SpanOutcomeEvaluationEnd(end)));
            }
            // Right after what it read: a client's answer landing first would
            // otherwise get a second one here. Then read and close again.
            if self.idle_at(StopReason::RetriesExhausted, events, IdleAt::Decided).await? {
                return Ok(());
            }
        }
        Err(ApiError::overloaded("the session is too busy to end its failed turn"))
    }

    /// Reads and applies every durable entry not yet seen.
    async fn catch_up(&mut self) -> Result<(), ApiError> {
        loop {
            let from = Seq::new(self.entries.len() as u64);
            let session = self.session;
            let records: Vec<Record> =
                self.state.blocking(move |store| Ok(store.read(session, from, CATCH_UP_BATCH)?)).await?;
            if records.is_empty() {
                return Ok(());
            }
            for record in records {
                let entry = record.entry().map_err(ApiError::internal)?;
                self.projection.apply(&entry);
                self.entries.push(entry);
                self.entry_bytes += record.canonical().map_or(0, <[u8]>::len);
            }
        }
    }

    /// Appends events at the head; `Some(id)` keeps an id chosen in advance.
    async fn append(&self, events: Vec<(Option<EventId>, Event)>) -> Result<Vec<Record>, ApiError> {
        let state = self.state.clone();
        let session = self.session;
        self.state
            .blocking(move |store| {
                // A conflict names the written head (the durable one may lag it).
                let mut expected = store.head(session)?.next;
                for _ in 0..MAX_APPEND_ATTEMPTS {
                    let at = state.now();
                    let entries: Vec<Entry> = events
                        .iter()
                        .enumerate()
                        .map(|(idx, (id, event))| Entry {
                            id: id.unwrap_or_else(|| state.event_id(Seq::new(expected.get() + idx as u64))),
                            event: event.clone(),
                            at,
                        })
                        .collect();
                    match store.append_submit(session, expected, &entries) {
                        Ok(pending) => return Ok(pending),
                        Err(AppendError::Conflict { actual, .. }) => expected = actual,
                        Err(other) => return Err(other.into()),
                    }
                }
                Err(ApiError::overloaded("the session is too busy to append to"))
            })
            .await?
            // Durability is awaited here, not on a blocking thread: many
            // sessions' turns waiting on one sync hold no threads.
            .await
            .map_err(ApiError::from)
    }

    /// Appends events at exactly `expected`; `None` if the log moved past it.
    async fn append_at(
        &self,
        expected: Seq,
        events: Vec<(Option<EventId>, Event)>,
    ) -> Result<Option<Vec<Record>>, ApiError> {
        let state = self.state.clone();
        let session = self.session;
        let submitted = self
            .state
            .blocking(move |store| {
                let at = state.now();
                let entries: Vec<Entry> = events
                    .into_iter()
                    .enumerate()
                    .map(|(idx, (id, event))| Entry {
                        id: id.unwrap_or_else(|| state.event_id(Seq::new(expected.get() + idx as u64))),
                        event,
                        at,
                    })
                    .collect();
                match store.append_submit(session, expected, &entries) {
                    Ok(pending) => Ok(Some(pending)),
                    Err(AppendError::Conflict { .. }) => Ok(None),
                    Err(other) => Err(other.into()),
                }
            })
            .await?;
        match submitted {
            Some(pending) => Ok(Some(pending.await?)),
            None => Ok(None),
        }
    }

    /// The session's policy: the runner's, with where the session's built-in
    /// tools run (its environment decides, once and for all).
    async fn policy(&mut self) -> Result<Policy, ApiError> {
        if let Some(policy) = self.policy {
            return Ok(policy);
        }
        let session = self.load_session().await?;
        let tool_host = if session.self_hosted { ToolHost::Worker } else { ToolHost::Server };
        let policy = Policy { tool_host, ..self.handle.config().policy };
        self.policy = Some(policy);
        Ok(policy)
    }

    /// Makes sure a self-hosted session waiting on its worker has a work item
    /// in the queue (its last one may have stopped), unless its worker failed
    /// the last one: then the calls wait for an interrupt or new input, which
    /// queue the work ([`WorkNeed::WorkerCalls`]).
    async fn ensure_work(&self, calls: &[EventId]) -> Result<(), ApiError> {
        let session = self.load_session().await?;
        let state = self.state.clone();
        let tenant = self.tenant;
        let newest_call_at = self
            .entries
            .iter()
            .filter(|entry| calls.contains(&entry.id))
            .map(|entry| entry.at)
            .max()
            .unwrap_or_else(|| self.state.now());
        let need = WorkNeed::WorkerCalls { newest_call_at };
        self.state
            .blocking(move |store| crate::api::work::ensure_session_work(&state, store, &tenant, &session, need))
            .await
    }

    async fn load_session(&self) -> Result<StoredSession, ApiError> {
        let tenant = self.tenant;
        let session = self.session;
        self.state.blocking(move |store| sessions::load(store, &tenant, session).map(|(_, s)| s)).await
    }

    /// Records the session's status in its object (an index of the log).
    async fn set_status(&self, status: Status) {
        let tenant = self.tenant;
        let session = self.session;
        let now = self.state.now();
        let res = self.state.blocking(move |store| sessions::set_status(store, &tenant, session, status, now)).await;
        if let Err(err) = res {
            tracing::warn!(%session, error = %err, "cannot record the session status");
        }
    }

    /// `session.usage` then `session.status_idle`, after `before`.
    async fn idle(&mut self, stop_reason: StopReason, before: Vec<(Option<EventId>, Event)>) -> Result<(), ApiError> {
        self.idle_at(stop_reason, before, IdleAt::Head).await.map(drop)
    }

    /// Appends `before`, `session.usage` and the idle; `Ok(false)` when
    /// `at` is [`IdleAt::Decided`] and input landed first (nothing appended).
    async fn idle_at(
        &mut self,
        stop_reason: StopReason,
        mut before: Vec<(Option<EventId>, Event)>,
        at: IdleAt,
    ) -> Result<bool, ApiError> {
        let session = self.load_session().await?;
        // What `before` records (a failed request's end, say) is counted
        // too: the snapshot appended with it must include it.
        let mut fold = self.projection.usage;
        for (_, event) in &before {
            fold.count(event);
        }
        let mut totals = fold.totals();
        // A turn still running is counted up to its last entry; the idle is now.
        if self.projection.machine.in_turn()
            && let Some(last) = self.entries.last()
        {
            totals.active_micros += u64::try_from(self.state.now().unix_micros() - last.at.unix_micros()).unwrap_or(0);
        }
        let cents = super::pricing::session_cost_cents(&session.agent.model, &totals);
        let budget = session.budget.as_ref().and_then(|b| serde_json::from_value(b.clone()).ok());
        if stop_reason == StopReason::BudgetReached {
            // Each thread pauses before the session does (behaviour digest
            // §12); a session runs its one primary thread.
            before.push((
                None,
                Event::SessionThreadStatusIdle(SessionThreadStatusIdle {
                    session_thread_id: crate::api::threads::primary_thread(self.session),
                    agent_name: session.agent.name.clone(),
                    stop_reason: StopReason::BudgetReached,
                    stop_details: None,
                }),
            ));
        }
        before.push((None, Event::SessionUsage(SessionUsage { usage: usage_snapshot(&totals, cents), budget })));
        before.push((None, Event::SessionStatusIdle(SessionStatusIdle { stop_reason, stop_details: None })));
        failpoint::pass(Point::IdleBefore);
        match at {
            IdleAt::Head => {
                self.append(before).await?;
            }
            IdleAt::Decided => {
                // Input arrived since the decision (a worker's or client's
                // answer): decide again instead of idling on stale state.
                if !self.append_decided(before).await? {
                    return Ok(false);
                }
            }
        }
        failpoint::pass(Point::IdleAfter);
        self.set_status(Status::Idle).await;
        crate::resources::after_idle(&self.state, self.tenant, self.session);
        let view = sessions::UsageView {
            input_tokens: totals.input_tokens,
            output_tokens: totals.output_tokens,
            cache_read_input_tokens: totals.cache_read_input_tokens,
            cache_creation_input_tokens: totals.cache_creation_input_tokens,
            active_seconds: totals.active_micros as f64 / 1e6,
            list_cost_cents: cents,
            web_search_requests: totals.web_search_requests,
            web_fetch_requests: totals.web_fetch_requests,
        };
        let (tenant, id) = (self.tenant, self.session);
        if let Err(err) = self.state.blocking(move |store| sessions::set_usage(store, &tenant, id, view)).await {
            tracing::warn!(session = %id, error = %err, "cannot record the session usage");
        }
        Ok(true)
    }

    async fn give_up(&mut self, error: Option<&ModelError>) -> Result<(), ApiError> {
        let detail = error_detail(error, RetryStatus::Exhausted);
        self.idle(StopReason::RetriesExhausted, vec![(None, Event::SessionError(SessionError { error: detail }))]).await
    }

    /// Whether the session's budget is used up (checked before every model
    /// call, so a budget overshoots by at most one request), on the exact
    /// unrounded cost (behaviour digest §12): the cost `list_cost` reports is
    /// rounded up to a cent, and would pause a session still under its budget.
    fn budget_reached(&self, session: &StoredSession) -> bool {
        let Some(limit) = session.budget_cents() else { return false };
        let totals = self.projection.usage.totals();
        let cost = super::pricing::session_cost_exact_cents(&session.agent.model, &totals).unwrap_or(0.0);
        cost >= limit as f64
    }

    /// The settings the next model call is made with, and the `x.agent_config`
    /// to record first when they differ from the last recorded ones.
    fn settings(&self, session: &StoredSession) -> (AgentSettings, Option<Event>) {
        let agent = serde_json::to_value(&session.agent).unwrap_or(Value::Null);
        let mut request_options = self.handle.config().request_options.clone();
        request_options.auto_allowed = Some(self.handle.config().auto_allowed.clone());
        let listed = self.handle.config().mcp.tools(self.session, &session.agent.mcp_servers);
        let offered = crate::mcp::tools::offer(
            &session.agent.tools,
            listed.iter().map(|server| (server.server.as_str(), &server.tools[..])),
        );
        request_options.extra_tools.extend(offered.definitions);
        request_options.mcp_tools.extend(offered.names);
        let options = crate::model::settings::options_json(&request_options);
        let settings = AgentSettings { agent, options };
        if self.projection.agent.as_ref() == Some(&settings) {
            return (settings, None);
        }
        let event = Event::AgentConfig(logbook_core::event::AgentConfig {
            agent: Json::new(&settings.agent),
            options: Json::new(&settings.options),
        });
        (settings, Some(event))
    }

    /// `messages` with their file sources read from the Files API
    /// (`inline`); the store is touched only when there are some.
    async fn with_files_inlined(&self, mut messages: Vec<Value>) -> Result<Vec<Value>, ApiError> {
        if !super::inline::has_file_sources(&messages) {
            return Ok(messages);
        }
        let (tenant, now) = (self.tenant, self.state.now());
        self.state
            .blocking(move |store| {
                super::inline::inline_files(store, &tenant, now, &mut messages)?;
                Ok(messages)
            })
            .await
    }

    async fn call_model(&mut self, attempt: u32) -> Result<(), ApiError> {
        let session = self.load_session().await?;
        if self.budget_reached(&session) {
            return self.idle_at(StopReason::BudgetReached, Vec::new(), IdleAt::Decided).await.map(drop);
        }
        // After a restart (or an eviction) mid-turn the connections are gone.
        if !session.agent.mcp_servers.is_empty() && !self.handle.config().mcp.is_prepared(self.session) {
            self.prepare_mcp().await?;
        }
        let (settings, record) = self.settings(&session);
        let mcp_names = options_from(&settings.options).mcp_tools;
        // Built from the recorded settings and the projected context: exactly
        // what the state endpoint shows for this point of the log, with file
        // sources read from the Files API (`inline`).
        let messages = self.with_files_inlined(self.projection.context.messages_json()).await?;
        let request = crate::model::settings::request_from(&settings, &messages);
        let mut opening: Vec<(Option<EventId>, Event)> = record.into_iter().map(|event| (None, event)).collect();
        opening.push((None, Event::SpanModelRequestStart(SpanModelRequestStart {})));
        // Appended at the head the request was built from: input that arrived
        // meanwhile (while the session loaded, MCP connected or files were
        // read) would otherwise stand before the start, as if the model had
        // been sent it. Then the run loop catches up and decides again.
        let expected = Seq::new(self.entries.len() as u64);
        failpoint::pass(Point::ModelBeforeStart);
        let Some(started) = self.append_at(expected, opening).await? else {
            self.wait_for_landed(expected).await?;
            return Ok(());
        };
        failpoint::pass(Point::ModelAfterStart);
        let started: Vec<Record> = started.into_iter().rev().take(1).collect();
        let Some(start) = started.first() else { return Err(ApiError::internal("append returned nothing")) };
        let start_id = start.entry().map_err(ApiError::internal)?.id;
        let base = start.seq().get() + 2; // after the start and x.model_response
        let Some(client) = self.handle.config().model.as_ref() else {
            let error = ModelError::Authentication {
                message:
                    "no model API is configured: set ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL for another endpoint)"
                        .to_owned(),
            };
            return self.model_failed(start_id, attempt, error, &crate::model::Usage::default()).await;
        };
        let began = Instant::now();
        // What the provider reported so far: a request cut short is billed too.
        let mut reported = crate::model::Usage::default();
        // Preview ids by content block index, chosen at block start.
        let mut preview_ids: HashMap<usize, EventId> = HashMap::new();
        // The durable head each previewed block was started after.
        let mut preview_after: HashMap<usize, Seq> = HashMap::new();
        let mut n_public_blocks = 0u64;
        let state = self.state.clone();
        let session_id = self.session;
        let signals = Arc::clone(&self.signals);
        // The preview callback borrows the id table only while the stream runs.
        let outcome = {
            let mut on_event = |event: StreamEvent| match event {
                StreamEvent::BlockStart { index, kind } => {
                    if index == 0 {
                        failpoint::pass(Point::ModelStreaming);
                    }
                    let preview = match kind.as_str() {
                        "text" => Some(PreviewKind::Message),
                        "thinking" | "redacted_thinking" => Some(PreviewKind::Thinking),
                        _ => None,
                    };
                    // Blocks that always become exactly one event get their id
                    // now (a web tool result may become none: its events take
                    // the seq they land at, so every chosen id stays a lower bound).
                    if matches!(kind.as_str(), "text" | "thinking" | "redacted_thinking" | "tool_use")
                        || kind == server_tools::SERVER_TOOL_USE
                    {
                        let id = state.event_id(Seq::new(base + n_public_blocks));
                        n_public_blocks += 1;
                        preview_ids.insert(index, id);
                        if let Some(kind) = preview {
                            // After what is durable now: a stream behind it
                            // delivers that first.
                            let after = state.store().head(session_id).map_or(Seq::ZERO, |head| head.next);
                            preview_after.insert(index, after);
                            state.previews().publish_after(session_id, after, Preview::Start { event_id: id, kind });
                        }
                    }
                }
                StreamEvent::TextDelta { index, text } => {
                    if let Some(id) = preview_ids.get(&index) {
                        let after = preview_after.get(&index).copied().unwrap_or(Seq::ZERO);
                        state.previews().publish_after(
                            session_id,
                            after,
                            Preview::Delta { event_id: *id, index: 0, text },
                        );
                    }
                }
                StreamEvent::MessageStart { usage, .. } | StreamEvent::MessageDelta { usage, .. } => {
                    reported = usage;
                    signals.reported.set(start_id, usage);
                }
                StreamEvent::ThinkingDelta { .. }
                | StreamEvent::InputJsonDelta { .. }
                | StreamEvent::BlockStop { .. } => {}
            };
            tokio::select! {
                res = client.stream(&request, &mut on_event) => Some(res),
                () = self.signals.interrupt.notified() => None,
            }
        };
        match outcome {
            None => {
                // Interrupted: close the request; the machine applies the interrupt.
                let mut events = vec![(None, request_end(start_id, model_usage(&reported), true))];
                events.extend(server_tool_requests(start_id, &reported));
                self.append(events).await?;
                Ok(())
            }
            Some(Err(error)) => self.model_failed(start_id, attempt, error, &reported).await,
            Some(Ok(response)) => {
                self.signals.reported.set(start_id, response.usage);
                failpoint::pass(Point::ModelAfterResponse);
                self.last_error = None;
                let usage = model_usage(&response.usage);
                let mut events: Vec<(Option<EventId>, Event)> = Vec::new();
                let mut public: Vec<(Option<EventId>, Event)> = Vec::new();
                let mut links = Vec::new();
                // A response cut off mid-call: that call (the last block) is
                // announced denied, since it is never run (`cut_tool_use`),
                // so that no self-hosted worker runs it either.
                let cut_at = logbook_replay::machine::is_cut_off(response.stop_reason.as_deref())
                    .then(|| response.content.len().checked_sub(1))
                    .flatten();
                for (index, block) in response.content.iter().enumerate() {
                    let id = preview_ids.get(&index).copied();
                    let kind = block.get("type").and_then(Value::as_str).unwrap_or("");
                    match kind {
                        "text" => {
                            let text = block.get("text").and_then(Value::as_str).unwrap_or("").to_owned();
                            let content = vec![ContentBlock::Text { text }];
                            public.push((id, Event::AgentMessage(AgentMessage { content })));
                        }
                        "thinking" | "redacted_thinking" => public.push((id, Event::AgentThinking(AgentThinking {}))),
                        "tool_use" | server_tools::SERVER_TOOL_USE => {
                            let id = id.unwrap_or_else(|| self.state.event_id(Seq::new(base + public.len() as u64)));
                            let name = block.get("name").and_then(Value::as_str).unwrap_or("").to_owned();
                            let input = Json::new(block.get("input").unwrap_or(&Value::Null));
                            if let Some(provider_id) = block.get("id").and_then(Value::as_str) {
                                links.push(ToolUseLink { provider_id: provider_id.to_owned(), event_id: id });
                            }
                            let auto = &self.handle.config().auto_allowed;
                            let event = if kind == "tool_use" {
                                let mut event = tool_use_event(&session, auto, &mcp_names, name, input);
                                if cut_at == Some(index) {
                                    deny(&mut event);
                                }
                                event
                            } else {
                                // A call the provider runs: shown, never run here.
                                provider_tool_use_event(&session, auto, name, input)
                            };
                            public.push((Some(id), event));
                        }
                        // Its result, here or after a pause_turn.
                        _ => {
                            if let Some((provider_id, outcome)) = server_tools::result_outcome(block) {
                                let call = links
                                    .iter()
                                    .find(|link| link.provider_id == provider_id)
                                    .map(|link| link.event_id)
                                    .or_else(|| self.linked_event(&provider_id));
                                if let Some(call) = call {
                                    public.push((None, tool_result(call, outcome)));
                                }
                            }
                        }
                    }
                }
                events.push((
                    None,
                    Event::ModelResponse(ModelResponse {
                        model_request_start_id: start_id,
                        content: Json::new(&Value::Array(response.content.clone())),
                        tool_uses: links,
                    }),
                ));
                events.extend(public);
                events.push((None, request_end(start_id, usage.clone(), false)));
                events.push((
                    None,
                    Event::ModelRequest(ModelRequest {
                        model_request_start_id: start_id,
                        model: response.model.clone(),
                        request_id: response.request_id.clone(),
                        stop_reason: response.stop_reason.clone(),
                        usage,
                        duration_ms: began.elapsed().as_millis() as u64,
                        attempt,
                    }),
                ));
                events.extend(server_tool_requests(start_id, &response.usage));
                self.append(events).await?;
                failpoint::pass(Point::ModelAfterAppend);
                Ok(())
            }
        }
    }

    /// What each message of the context weighs in a request, by its first
    /// seq: its bytes as sent, and for one with file sources, its tokens and
    /// bytes once they are inlined (the context counts a file source by its
    /// id alone, a few tokens, whatever the file holds).
    async fn message_weights(&self) -> Result<HashMap<u64, logbook_replay::context::Weight>, ApiError> {
        use logbook_replay::context::Weight;
        let messages: Vec<(u64, u64, Value)> = self
            .projection
            .context
            .messages()
            .iter()
            .map(|message| (message.first_seq, message.tokens, message.to_json()))
            .collect();
        let (tenant, now) = (self.tenant, self.state.now());
        self.state
            .blocking(move |store| {
                let mut weights = HashMap::with_capacity(messages.len());
                for (first_seq, tokens, json) in messages {
                    let mut one = [json];
                    let tokens = if super::inline::has_file_sources(&one) {
                        super::inline::inline_files(store, &tenant, now, &mut one)?;
                        logbook_replay::tokens::message(&one[0])
                    } else {
                        tokens
                    };
                    weights.insert(first_seq, Weight { tokens, bytes: one[0].to_string().len() as u64 });
                }
                Ok(weights)
            })
            .await
    }

    /// Compacts the context: asks the model to summarize the older turns (or,
    /// if that fails, elides them mechanically) and records the summary the
    /// context projection uses from now on.
    async fn compact(&mut self) -> Result<(), ApiError> {
        use logbook_core::event::{AgentThreadContextCompacted, Compaction};
        use logbook_replay::context::{Keep, elided_summary, plan_compaction_by, summary_request_messages};

        let session = self.load_session().await?;
        if self.budget_reached(&session) {
            return self.idle_at(StopReason::BudgetReached, Vec::new(), IdleAt::Decided).await.map(drop);
        }
        // The machine asked from the recorded settings; plan with the same.
        let settings = match &self.projection.agent {
            Some(recorded) => recorded.clone(),
            None => self.settings(&session).0,
        };
        let options = options_from(&settings.options);
        let calibration = self.projection.calibration;
        let keep =
            options.compaction.map_or(0, |c| c.keep_tokens).saturating_mul(1_000) / calibration.factor_milli.max(1);
        let weights = self.message_weights().await?;
        let before = self.projection.estimated_prompt_tokens();
        let keep = Keep { tokens: keep, bytes: MAX_KEPT_BYTES };
        let weigh =
            |message: &logbook_replay::context::Message| weights.get(&message.first_seq).copied().unwrap_or_default();
        let Some(plan) = plan_compaction_by(&self.projection.context, keep, &weigh) else {
            // Nothing can be cut (one huge message): record that, and go on.
            let nothing = Compaction {
                summary: String::new(),
                through_seq: 0,
                tokens_before: before,
                tokens_after: before,
                model: None,
                usage: ModelUsage::default(),
            };
            // Right after what it was decided on, like any compaction
            // (nothing was billed: if input landed first, the run loop
            // decides again).
            self.append_decided(vec![(None, Event::Compaction(nothing))]).await?;
            return Ok(());
        };
        let summary_options = crate::model::RequestOptions {
            max_tokens: options.max_tokens.min(SUMMARY_MAX_TOKENS),
            thinking: Thinking::Disabled,
            compaction: None,
            ..options
        };
        // File sources mean nothing to the provider here either.
        let messages = self.with_files_inlined(summary_request_messages(&plan)).await?;
        let request = without_tool_use(build_request(&agent_view(&settings.agent), &messages, &summary_options));
        let (outcome, failed_usage) = match self.side_call(&request, SUMMARY_MAX_ATTEMPTS, "summarizing", None).await {
            SideCall::Done { outcome, failed_usage } => (outcome, failed_usage),
            SideCall::Interrupted { usage } => {
                // The machine applies the interrupt next. What the provider
                // billed for the summary so far is recorded in a compaction
                // that cut nothing (`rerun` knows it as the interrupt's), so
                // usage and budgets count it.
                return self.record_interrupted_summary(before, usage).await;
            }
        };
        let (summary, model, mut usage) = match outcome {
            Ok(response) => {
                let text = crate::model::text_of(&response.content);
                let usage = model_usage(&response.usage);
                // A refusal is no summary: its text would stand for every older turn.
                if text.trim().is_empty() || response.stop_reason.as_deref() == Some(REFUSAL) {
                    (elided_summary(&plan), Some(response.model), usage)
                } else {
                    (text, Some(response.model), usage)
                }
            }
            Err((error, reported)) => {
                tracing::warn!(session = %self.session, %error, "the summarizing call failed; eliding older turns");
                (elided_summary(&plan), None, reported)
            }
        };
        add_usage(&mut usage, &failed_usage);
        failpoint::pass(Point::CompactAfterSummary);
        let mut compaction =
            Compaction { summary, through_seq: plan.through_seq, tokens_before: before, tokens_after: 0, model, usage };
        // What stands after the summary (system messages, the open
        // outcome) is sent with it.
        compaction.tokens_after = calibration.apply(
            self.projection.fixed_tokens()
                + logbook_replay::tokens::text(&compaction.summary)
                + logbook_replay::tokens::BLOCK_OVERHEAD_TOKENS
                + plan.tokens_kept
                + self.projection.context.standing_tokens_after(&compaction),
        );
        // Only right after what it was decided on. Input that landed
        // meanwhile leaves the same cut standing (the machine still decides
        // to compact: it is appended after that input, which stays after the
        // cut and is counted in what the context holds after it), or it is
        // an interrupt, which the summary gives way to as one that an
        // interrupt stops while it is written does.
        let mut seen = before;
        for _ in 0..MAX_APPEND_ATTEMPTS {
            let events = vec![
                (None, Event::Compaction(compaction.clone())),
                (None, Event::AgentThreadContextCompacted(AgentThreadContextCompacted {})),
            ];
            if self.append_decided(events).await? {
                return Ok(());
            }
            self.catch_up().await?;
            let policy = self.policy().await?;
            match self.projection.machine.next(&policy) {
                Command::Compact => {
                    let now = self.projection.estimated_prompt_tokens();
                    compaction.tokens_before = now;
                    compaction.tokens_after += now.saturating_sub(seen);
                    seen = now;
                }
                Command::Interrupt { .. } => return self.record_interrupted_summary(before, compaction.usage).await,
                // Anything else (the session archived, say): the summary is
                // dropped (a compaction there is no step `rerun` knows), and
                // the run loop decides.
                Command::Wait
                | Command::StartTurn
                | Command::Resume
                | Command::CallModel { .. }
                | Command::GiveUp
                | Command::CloseModelRequest { .. }
                | Command::RunTools(_)
                | Command::DenyTools(_)
                | Command::FailTools { .. }
                | Command::AwaitClient(_)
                | Command::EndTurn
                | Command::EvaluateOutcome { .. } => {
                    tracing::warn!(session = %self.session, usage = ?compaction.usage,
                        "a summary overtaken by the session's end is dropped; its usage is not recorded");
                    return Ok(());
                }
            }
        }
        tracing::warn!(session = %self.session, usage = ?compaction.usage,
            "the session is too busy to record its compaction; its usage is not recorded");
        Err(ApiError::overloaded("the session is too busy to record its compaction"))
    }

    /// Records what the provider billed for a summary an interrupt stopped
    /// (or came before the end of) in a compaction that cut nothing (`rerun`
    /// knows it as part of the interrupt's step), so that usage and budgets
    /// count it; nothing if nothing was billed.
    async fn record_interrupted_summary(&self, before: u64, usage: ModelUsage) -> Result<(), ApiError> {
        if usage == ModelUsage::default() {
            return Ok(());
        }
        let billed = logbook_core::event::Compaction {
            summary: String::new(),
            through_seq: 0,
            tokens_before: before,
            tokens_after: before,
            model: None,
            usage,
        };
        self.append(vec![(None, Event::Compaction(billed))]).await?;
        Ok(())
    }

    /// A model call beside the conversation (a compaction's summary, an
    /// outcome's evaluation): transient failures are retried up to
    /// `max_attempts` with backoff, the wait giving the workspace's work slot
    /// back; an interrupt stops it. `heartbeat`, if any, is appended every
    /// [`super::RunnerConfig::outcome_heartbeat`] until it ends (attempts,
    /// backoffs and waits for a slot alike), so that the stream shows the
    /// work goes on (the API's `span.outcome_evaluation_ongoing`).
    async fn side_call(
        &mut self,
        request: &Value,
        max_attempts: u32,
        what: &str,
        heartbeat: Option<Event>,
    ) -> SideCall {
        // Usage the provider reported for attempts that failed after
        // `message_start`: billed, so recorded with the call's result.
        let mut failed_usage = ModelUsage::default();
        let mut attempt = 1;
        let period = self.handle.config().outcome_heartbeat;
        let mut beats = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // What the provider reported so far in this attempt.
            let mut reported = crate::model::Usage::default();
            let mut on_event = |event: StreamEvent| match event {
                StreamEvent::MessageStart { usage, .. } | StreamEvent::MessageDelta { usage, .. } => reported = usage,
                StreamEvent::BlockStart { .. }
                | StreamEvent::TextDelta { .. }
                | StreamEvent::ThinkingDelta { .. }
                | StreamEvent::InputJsonDelta { .. }
                | StreamEvent::BlockStop { .. } => {}
            };
            // A clone (the connection pool is shared), so that the call
            // borrows nothing of the task while heartbeats are appended.
            let client = self.handle.config().model.clone();
            let outcome = match client.as_ref() {
                Some(client) => {
                    let call = client.stream(request, &mut on_event);
                    self.until_interrupted(call, &mut beats, heartbeat.as_ref(), what).await
                }
                None => Some(Err(ModelError::Authentication { message: "no model API is configured".to_owned() })),
            };
            match outcome {
                // A transient failure (overloaded, rate limited, a broken
                // stream) is worth another attempt.
                Some(Err(error)) if error.is_retryable() && attempt < max_attempts => {
                    tracing::warn!(session = %self.session, attempt, %error, "the {what} call failed; retrying");
                    add_usage(&mut failed_usage, &model_usage(&reported));
                    let delay =
                        error.retry_after().unwrap_or_else(|| backoff(self.handle.config().retry_base, attempt));
                    // As for a model call: the wait gives the workspace's
                    // slot back, and the next attempt takes one again.
                    self.slot = None;
                    let pause = tokio::time::sleep(delay);
                    if self.until_interrupted(pause, &mut beats, heartbeat.as_ref(), what).await.is_none() {
                        return SideCall::Interrupted { usage: failed_usage };
                    }
                    let slots = self.handle.slots(self.tenant.workspace);
                    let waiting = WaitingForSlot::new(&self.state);
                    let acquire = slots.acquire_owned();
                    let Some(permit) = self.until_interrupted(acquire, &mut beats, heartbeat.as_ref(), what).await
                    else {
                        return SideCall::Interrupted { usage: failed_usage };
                    };
                    drop(waiting);
                    self.slot = permit.ok();
                    attempt += 1;
                }
                Some(Err(error)) => {
                    return SideCall::Done { outcome: Err((error, model_usage(&reported))), failed_usage };
                }
                Some(Ok(response)) => return SideCall::Done { outcome: Ok(response), failed_usage },
                None => {
                    add_usage(&mut failed_usage, &model_usage(&reported));
                    return SideCall::Interrupted { usage: failed_usage };
                }
            }
        }
    }

    /// `work`'s output, or `None` if an interrupt comes first; meanwhile
    /// `heartbeat`, if any, is appended at every tick of `beats` (see
    /// [`Task::side_call`]). Only a sign of life: one that cannot be
    /// recorded is skipped, not worth the call.
    async fn until_interrupted<T>(
        &self,
        work: impl std::future::Future<Output = T>,
        beats: &mut tokio::time::Interval,
        heartbeat: Option<&Event>,
        what: &str,
    ) -> Option<T> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return Some(out),
                () = self.signals.interrupt.notified() => return None,
                _ = beats.tick(), if heartbeat.is_some() => {
                    if let Some(event) = heartbeat
                        && let Err(error) = self.append(vec![(None, event.clone())]).await
                    {
                        tracing::warn!(session = %self.session, %error, "a {what} heartbeat was not recorded");
                    }
                }
            }
        }
    }

    /// Grades the outcome under way: `span.outcome_evaluation_start` (unless
    /// a crash left one open), the grader's call, and its verdict in
    /// `span.outcome_evaluation_end`. The grader is the session's model with
    /// its own instructions, shown the conversation (`super::outcome`).
    async fn evaluate_outcome(
        &mut self,
        outcome_id: logbook_core::OutcomeId,
        iteration: u32,
        start: Option<EventId>,
    ) -> Result<(), ApiError> {
        use logbook_core::event::{SpanOutcomeEvaluationEnd, SpanOutcomeEvaluationOngoing, SpanOutcomeEvaluationStart};

        let session = self.load_session().await?;
        if self.budget_reached(&session) {
            return self.idle_at(StopReason::BudgetReached, Vec::new(), IdleAt::Decided).await.map(drop);
        }
        let Some(active) = self.projection.machine.outcome().cloned() else { return Ok(()) };
        // The session's settings now, as a model call takes them (a fork's
        // override included), recorded with the evaluation's start when they
        // changed, so that the grader's request can be rebuilt from the log.
        let (settings, record) = self.settings(&session);
        let start_id = match start {
            Some(start_id) => start_id,
            None => {
                let start = SpanOutcomeEvaluationStart { outcome_id, iteration };
                let mut events: Vec<(Option<EventId>, Event)> =
                    record.map(|config| (None, config)).into_iter().collect();
                let id = self.state.event_id(Seq::new((self.entries.len() + events.len()) as u64));
                events.push((Some(id), Event::SpanOutcomeEvaluationStart(start)));
                // Right after what it was decided on: an interrupt landing
                // first ends the outcome instead.
                if !self.append_decided(events).await? {
                    return Ok(());
                }
                id
            }
        };
        failpoint::pass(Point::GradeAfterStart);
        let defined = self.entries.iter().rev().find_map(|entry| {
            if let Event::UserDefineOutcome(defined) = &entry.event
                && defined.outcome_id == outcome_id
            {
                Some(defined.clone())
            } else {
                None
            }
        });
        let options = options_from(&settings.options);
        let grader_options = crate::model::RequestOptions {
            max_tokens: options.max_tokens.min(super::outcome::GRADER_MAX_TOKENS),
            thinking: Thinking::Disabled,
            compaction: None,
            extra_system: Vec::new(),
            ..options
        };
        let mut agent = agent_view(&settings.agent);
        agent.system = Some(super::outcome::GRADER_SYSTEM.to_owned());
        // The whole conversation first; refused as over the model's window,
        // once more with the conversation fitted into half its estimate
        // (`logbook_replay::fit`: older turns summarized, long outputs cut).
        let mut conversation = self.projection.context.messages_json();
        let mut usage = ModelUsage::default();
        let mut fitted = false;
        let verdict = loop {
            let messages =
                super::outcome::grader_messages(conversation, defined.as_ref(), iteration, active.max_iterations);
            let messages = self.with_files_inlined(messages).await?;
            let request = without_tool_use(build_request(&agent, &messages, &grader_options));
            let heartbeat = Event::SpanOutcomeEvaluationOngoing(SpanOutcomeEvaluationOngoing { outcome_id, iteration });
            match self.side_call(&request, super::outcome::GRADER_MAX_ATTEMPTS, "grading", Some(heartbeat)).await {
                SideCall::Done { outcome: Ok(response), failed_usage } => {
                    add_usage(&mut usage, &model_usage(&response.usage));
                    add_usage(&mut usage, &failed_usage);
                    self.signals.graded.set(start_id, usage.clone());
                    break super::outcome::read_verdict(&response.content, response.stop_reason.as_deref());
                }
                SideCall::Done { outcome: Err((error, reported)), failed_usage } => {
                    tracing::warn!(session = %self.session, %error, "the grading call failed");
                    add_usage(&mut usage, &reported);
                    add_usage(&mut usage, &failed_usage);
                    self.signals.graded.set(start_id, usage.clone());
                    let too_long =
                        matches!(&error, ModelError::InvalidRequest { message, .. } if is_over_the_window(message));
                    if too_long && !fitted {
                        fitted = true;
                        let budget = self.projection.estimated_prompt_tokens() / 2;
                        conversation = logbook_replay::fit::fit(&self.projection, None, budget).messages;
                        continue;
                    }
                    break super::outcome::unreachable_grader(&error);
                }
                SideCall::Interrupted { usage: billed } => {
                    // The interrupt ends the outcome next; what the grader
                    // was billed goes with that end.
                    add_usage(&mut usage, &billed);
                    self.signals.graded.set(start_id, usage.clone());
                    self.interrupted_grading = Some(usage);
                    return Ok(());
                }
            }
        };
        failpoint::pass(Point::GradeAfterVerdict);
        let result = super::outcome::result_at(verdict.result, iteration, active.max_iterations);
        let end = SpanOutcomeEvaluationEnd {
            outcome_evaluation_start_id: start_id,
            outcome_id,
            iteration,
            result,
            explanation: verdict.explanation,
            usage,
        };
        self.append(vec![(None, Event::SpanOutcomeEvaluationEnd(end))]).await?;
        Ok(())
    }

    /// The end of the outcome under way, if one is (`interrupted` by the
    /// user, or `failed` after a refusal), closing its evaluation if one
    /// started (else naming none: the API's empty id). An interrupted one
    /// carries what a grading call it stopped was billed.
    fn outcome_end(&self, result: OutcomeEvaluationResult, explanation: &str) -> Option<(Option<EventId>, Event)> {
        use logbook_core::event::SpanOutcomeEvaluationEnd;
        let machine = &self.projection.machine;
        // An interrupt ends the outcome open when it came, not one defined
        // after it.
        let active = machine.outcome().filter(|o| {
            result != OutcomeEvaluationResult::Interrupted || machine.interrupted_outcome() == Some(o.outcome_id)
        })?;
        let usage = match result {
            OutcomeEvaluationResult::Interrupted => self.interrupted_grading.clone().unwrap_or_default(),
            OutcomeEvaluationResult::Satisfied
            | OutcomeEvaluationResult::NeedsRevision
            | OutcomeEvaluationResult::MaxIterationsReached
            | OutcomeEvaluationResult::Failed => ModelUsage::default(),
        };
        let end = SpanOutcomeEvaluationEnd {
            outcome_evaluation_start_id: active.evaluating.unwrap_or(EventId::NIL),
            outcome_id: active.outcome_id,
            iteration: active.iteration,
            result,
            explanation: explanation.to_owned(),
            usage,
        };
        Some((None, Event::SpanOutcomeEvaluationEnd(end)))
    }

    /// Records a failed model call, with the usage the provider reported
    /// before it failed: retried with backoff while attempts last.
    async fn model_failed(
        &mut self,
        start_id: EventId,
        attempt: u32,
        error: ModelError,
        reported: &crate::model::Usage,
    ) -> Result<(), ApiError> {
        tracing::warn!(session = %self.session, attempt, %error, "model call failed");
        let max = self.handle.config().policy.max_model_attempts;
        // A prompt over the model's window is retried once the machine has
        // compacted (it asks to when the retrying error says so), unless it
        // compacted for this request already.
        let too_long = matches!(&error, ModelError::InvalidRequest { message, .. } if is_over_the_window(message))
            && self.projection.machine.may_compact();
        let retrying = (error.is_retryable() || too_long) && attempt < max;
        // The request's end, with what the provider reported of it before it
        // failed (tokens, and server tool uses, billed all the same).
        let mut end = vec![(None, request_end(start_id, model_usage(reported), true))];
        end.extend(server_tool_requests(start_id, reported));
        if !retrying {
            let detail = error_detail(Some(&error), RetryStatus::Exhausted);
            self.last_error = Some(error);
            end.push((None, Event::SessionError(SessionError { error: detail })));
            return self.idle(StopReason::RetriesExhausted, end).await;
        }
        let detail = error_detail(Some(&error), RetryStatus::Retrying);
        let delay = if too_long {
            // Nothing to wait for: the compaction is what changes.
            Duration::ZERO
        } else {
            error.retry_after().unwrap_or_else(|| backoff(self.handle.config().retry_base, attempt))
        };
        self.last_error = Some(error);
        end.push((None, Event::SessionError(SessionError { error: detail })));
        end.push((None, Event::SessionStatusRescheduled(SessionStatusRescheduled {})));
        self.append(end).await?;
        self.set_status(Status::Rescheduling).await;
        // The wait is no work: the workspace's slot goes to another session
        // meanwhile (a retry-after may be minutes), and the retry takes one
        // again.
        self.slot = None;
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = self.signals.interrupt.notified() => {}
        }
        Ok(())
    }

    /// Runs the first of the calls the machine named (the run loop comes
    /// back for the others), marked started just before it runs: after a
    /// crash, only a call that was running is reported as orphaned; the ones
    /// after it run then. The mark goes only right after the entries the
    /// machine decided on: if anything landed since (an interrupt), the call
    /// is not started and the run loop decides again.
    async fn run_tools(&mut self, ids: Vec<EventId>) -> Result<(), ApiError> {
        let Some(&id) = ids.first() else { return Ok(()) };
        let started = vec![(None, Event::ToolStarted(ToolStarted { tool_use_ids: vec![id] }))];
        failpoint::pass(Point::ToolBeforeStart);
        if !self.append_decided(started).await? {
            return Ok(());
        }
        failpoint::pass(Point::ToolAfterStart);
        let session = self.load_session().await?;
        let environment = self.load_environment(&session).await;
        let tools = Arc::clone(&self.handle.config().tools);
        let call = self.entries.iter().find(|e| e.id == id).map(|e| e.event.clone());
        let result = match call {
            Some(Event::AgentToolUse(tool_use)) => {
                let call = ToolCall {
                    session: self.session,
                    tool_use_id: id,
                    name: &tool_use.name,
                    input: &tool_use.input,
                    agent_tools: &session.agent.tools,
                    environment: environment.as_ref(),
                    log: &self.entries,
                };
                let finished = tokio::select! {
                    outcome = tools.run(&call) => Some(outcome),
                    () = self.signals.interrupt.notified() => None,
                };
                match finished {
                    Some(outcome) => tool_result(id, outcome),
                    None => {
                        // The machine closes this and the other open calls;
                        // what the call changed before it stopped is still recorded.
                        self.cut_short = Some(id);
                        let delta = self.workspace_delta(tools.as_ref(), id).await?;
                        self.append_after_delta(delta, Vec::new()).await?;
                        return Ok(());
                    }
                }
            }
            Some(Event::AgentMcpToolUse(tool_use)) => {
                let server = session.agent.mcp_servers.iter().find(|s| s.name == tool_use.mcp_server_name);
                let Some(server) = server else {
                    let text = format!("the agent has no MCP server named {:?}", tool_use.mcp_server_name);
                    self.append(vec![(None, mcp_tool_result(id, ToolOutcome::error(text)))]).await?;
                    return Ok(());
                };
                let hub = Arc::clone(&self.handle.config().mcp);
                let input = tool_use.input.to_value();
                let finished = tokio::select! {
                    outcome = hub.call(self.session, server, &tool_use.name, &input) => Some(outcome),
                    () = self.signals.interrupt.notified() => None,
                };
                // Interrupted: the machine closes this and the other open
                // calls (with nothing to record: the call ran elsewhere).
                let Some(outcome) = finished else {
                    self.cut_short = Some(id);
                    return Ok(());
                };
                let policy = self.policy().await?;
                let outcome = match policy.tool_host {
                    ToolHost::Server => tools.save_large_outputs(self.session, outcome).await,
                    ToolHost::Worker => crate::tools::spill::preview_large_outputs(
                        outcome,
                        "the session's workspace is on its self-hosted worker",
                    ),
                };
                mcp_tool_result(id, outcome)
            }
            _ => tool_result(id, ToolOutcome::error("internal error: the tool call was not found in the log")),
        };
        failpoint::pass(Point::ToolAfterRun);
        let delta = self.workspace_delta(tools.as_ref(), id).await?;
        self.append_after_delta(delta, vec![(None, result)]).await?;
        failpoint::pass(Point::ToolAfterResult);
        Ok(())
    }

    /// Appends a call's `x.workspace_delta` events, then `last` (its result)
    /// with the final ones: in one append when they fit, else in several of
    /// [`DELTAS_PER_APPEND`] (a crash between them leaves true changes
    /// recorded and the call without a result, which the machine closes).
    async fn append_after_delta(
        &self,
        mut delta: Vec<(Option<EventId>, Event)>,
        last: Vec<(Option<EventId>, Event)>,
    ) -> Result<(), ApiError> {
        while delta.len() > DELTAS_PER_APPEND {
            let rest = delta.split_off(DELTAS_PER_APPEND);
            self.append(delta).await?;
            delta = rest;
        }
        delta.extend(last);
        if !delta.is_empty() {
            self.append(delta).await?;
        }
        Ok(())
    }

    /// Connects the session's MCP servers that are not connected and records
    /// each failure as a `session.error` (the session goes on without that
    /// server's tools). An interrupt stops the wait; nothing is recorded then.
    async fn prepare_mcp(&mut self) -> Result<(), ApiError> {
        let session = self.load_session().await?;
        let hub = Arc::clone(&self.handle.config().mcp);
        if session.agent.mcp_servers.is_empty() {
            hub.end_session(self.session);
            return Ok(());
        }
        let failures = tokio::select! {
            failures = hub.prepare(self.session, &session.agent.mcp_servers) => failures,
            () = self.signals.interrupt.notified() => return Ok(()),
        };
        let events: Vec<(Option<EventId>, Event)> = failures
            .into_iter()
            .map(|failure| {
                tracing::warn!(session = %self.session, server = %failure.server, error = %failure.error,
                    "MCP server not connected");
                let retry_status = RetryStatus::Retrying;
                let mcp_server_name = failure.server;
                let error = match failure.error {
                    crate::mcp::ConnectError::Authentication(message) => {
                        SessionErrorDetail::McpAuthenticationFailedError { message, retry_status, mcp_server_name }
                    }
                    crate::mcp::ConnectError::Connection(message) => {
                        SessionErrorDetail::McpConnectionFailedError { message, retry_status, mcp_server_name }
                    }
                };
                (None, Event::SessionError(SessionError { error }))
            })
            .collect();
        if !events.is_empty() {
            self.append(events).await?;
        }
        Ok(())
    }

    /// The result event closing the open call `id`: `agent.mcp_tool_result`
    /// for an MCP call, `agent.tool_result` for any other.
    fn answer(&self, id: EventId, outcome: ToolOutcome) -> Event {
        let kind = self.projection.machine.open_tools().find(|(open, _)| *open == id).map(|(_, tool)| tool.kind);
        match kind {
            Some(logbook_replay::machine::ToolKind::Mcp) => mcp_tool_result(id, outcome),
            Some(logbook_replay::machine::ToolKind::Builtin | logbook_replay::machine::ToolKind::Custom) | None => {
                tool_result(id, outcome)
            }
        }
    }

    /// The event made from the provider's tool use `provider_id` in an
    /// earlier response of the log.
    fn linked_event(&self, provider_id: &str) -> Option<EventId> {
        self.entries.iter().rev().find_map(|entry| {
            let Event::ModelResponse(response) = &entry.event else { return None };
            response.tool_uses.iter().find(|link| link.provider_id == provider_id).map(|link| link.event_id)
        })
    }

    /// The session's environment, if it can be loaded (a tool that needs it
    /// fails clearly without it).
    async fn load_environment(&self, session: &StoredSession) -> Option<Environment> {
        let tenant = self.tenant;
        let id = session.environment_id;
        match self.state.blocking(move |store| environments::load(store, &tenant, id).map(|(_, env)| env)).await {
            Ok(environment) => Some(environment),
            Err(err) => {
                tracing::warn!(session = %self.session, error = %err, "cannot load the session's environment");
                None
            }
        }
    }

    /// Records what the workspace shows changed since the log's last delta
    /// as the changes of the first open call that started: calls cut short
    /// (by a restart, a failed turn, or an interrupt found after a restart)
    /// after they started may have run (the first takes every change: one
    /// scan cannot tell whose they are), so that the log's workspace stays the
    /// disk's (a fork, a replay and the files API read the log's); only
    /// where the files are kept here (a self-hosted worker keeps its own).
    /// `true` if anything was appended. Tried once per call, even if that
    /// fails (a later call's scan then records the changes): a process left
    /// running in the sandbox may write on, and the call must still be
    /// answered.
    async fn record_cut_short(&mut self) -> Result<bool, ApiError> {
        let started = self.projection.machine.open_tools().find(|(_, tool)| tool.started);
        let Some((id, _)) = started else { return Ok(false) };
        if self.cut_short.replace(id) == Some(id) {
            return Ok(false);
        }
        let tools = Arc::clone(&self.handle.config().tools);
        let delta = self.workspace_delta(tools.as_ref(), id).await?;
        if delta.is_empty() {
            return Ok(false);
        }
        self.append_after_delta(delta, Vec::new()).await?;
        Ok(true)
    }

    /// An `x.workspace_delta` with what the call `id` changed, or nothing when
    /// it changed nothing, or when the session's files are not kept here (a
    /// self-hosted worker keeps them: this server's directory for the
    /// session is not its workspace). A failed scan is logged; its changes
    /// are found by the next one.
    async fn workspace_delta(
        &mut self,
        tools: &dyn ToolExecutor,
        id: EventId,
    ) -> Result<Vec<(Option<EventId>, Event)>, ApiError> {
        match self.policy().await?.tool_host {
            ToolHost::Server => {}
            ToolHost::Worker => return Ok(Vec::new()),
        }
        match tools.workspace_changes(self.session, &self.entries).await {
            Ok(changes) => Ok(split_delta(id, changes)),
            Err(err) => {
                tracing::warn!(session = %self.session, error = %err, "cannot record the workspace changes");
                Ok(Vec::new())
            }
        }
    }
}

/// Most estimated bytes of changes one `x.workspace_delta` holds: a call
/// may change any number of paths, an event holds at most
/// `MAX_EVENT_BYTES`.
const DELTA_EVENT_BYTES: usize = 1 << 20;
/// Most `x.workspace_delta` events in one append (with room to spare under
/// `MAX_APPEND_BYTES`).
const DELTAS_PER_APPEND: usize = 16;
/// Bytes of a change besides its path and link target (tags, hash, size, mode).
const CHANGE_OVERHEAD_BYTES: usize = 64;

const _: () = assert!(DELTA_EVENT_BYTES * 2 <= logbook_core::limits::MAX_EVENT_BYTES);
const _: () = assert!(DELTA_EVENT_BYTES * (DELTAS_PER_APPEND + 1) <= logbook_core::limits::MAX_APPEND_BYTES / 2);

/// A call's changes as `x.workspace_delta` events of at most
/// [`DELTA_EVENT_BYTES`] each (estimated), in order; none for no change.
fn split_delta(id: EventId, changes: Vec<logbook_core::event::WorkspaceChange>) -> Vec<(Option<EventId>, Event)> {
    let mut events = Vec::new();
    let mut part = Vec::new();
    let mut part_bytes = 0;
    for change in changes {
        let target = match &change.change {
            logbook_core::event::FileChange::Symlink { target } => target.len(),
            logbook_core::event::FileChange::Written { .. } | logbook_core::event::FileChange::Removed => 0,
        };
        let bytes = change.path.len() + target + CHANGE_OVERHEAD_BYTES;
        if !part.is_empty() && part_bytes + bytes > DELTA_EVENT_BYTES {
            let changes = std::mem::take(&mut part);
            events.push((None, Event::WorkspaceDelta(WorkspaceDelta { tool_use_id: Some(id), changes })));
            part_bytes = 0;
        }
        part_bytes += bytes;
        part.push(change);
    }
    if !part.is_empty() {
        events.push((None, Event::WorkspaceDelta(WorkspaceDelta { tool_use_id: Some(id), changes: part })));
    }
    events
}

fn request_end(start_id: EventId, usage: ModelUsage, is_error: bool) -> Event {
    Event::SpanModelRequestEnd(SpanModelRequestEnd {
        model_request_start_id: start_id,
        model_usage: usage,
        is_error: Some(is_error),
    })
}

fn tool_result(tool_use_id: EventId, outcome: ToolOutcome) -> Event {
    Event::AgentToolResult(AgentToolResult {
        tool_use_id,
        content: Some(outcome.content),
        is_error: Some(outcome.is_error),
    })
}

fn mcp_tool_result(mcp_tool_use_id: EventId, outcome: ToolOutcome) -> Event {
    Event::AgentMcpToolResult(AgentMcpToolResult {
        mcp_tool_use_id,
        content: Some(outcome.content),
        is_error: Some(outcome.is_error),
    })
}

/// The event for a tool_use block: a custom tool, an MCP tool (by the names
/// recorded with the call's settings) with its toolset's permission, or a
/// built-in one with the permission its policy gives.
fn tool_use_event(
    session: &StoredSession,
    auto_allowed: &[String],
    mcp_names: &[McpToolName],
    name: String,
    input: Json,
) -> Event {
    let custom = session.agent.tools.iter().any(|t| matches!(t, Tool::Custom { name: n, .. } if *n == name));
    if custom {
        return Event::AgentCustomToolUse(AgentCustomToolUse { name, input, session_thread_id: None });
    }
    if let Some(mcp) = mcp_names.iter().find(|mcp| mcp.name == name) {
        let (permission, evaluation) = crate::mcp::tools::permission(&session.agent.tools, &mcp.server, &mcp.tool);
        return Event::AgentMcpToolUse(AgentMcpToolUse {
            name: mcp.tool.clone(),
            mcp_server_name: mcp.server.clone(),
            input,
            evaluated_permission: Some(permission),
            evaluation,
            session_thread_id: None,
        });
    }
    let (permission, evaluation) = permission_for(session, auto_allowed, &name);
    Event::AgentToolUse(AgentToolUse {
        name,
        input,
        evaluated_permission: Some(permission),
        evaluation,
        session_thread_id: None,
    })
}

/// Marks a call event as denied (a custom tool's call carries no permission).
fn deny(event: &mut Event) {
    if let Event::AgentToolUse(tool_use) = event {
        tool_use.evaluated_permission = Some(EvaluatedPermission::Deny);
    } else if let Event::AgentMcpToolUse(tool_use) = event {
        tool_use.evaluated_permission = Some(EvaluatedPermission::Deny);
    }
}

/// Adds `more` to `usage`'s token counts.
fn add_usage(usage: &mut ModelUsage, more: &ModelUsage) {
    usage.input_tokens += more.input_tokens;
    usage.output_tokens += more.output_tokens;
    usage.cache_creation_input_tokens += more.cache_creation_input_tokens;
    usage.cache_read_input_tokens += more.cache_read_input_tokens;
}

/// The token counts a response reported, as `span.model_request_end` records them.
/// The `x.server_tool_requests` of a request whose provider reported
/// running server tools (billed whether or not the response then completed).
fn server_tool_requests(start_id: EventId, usage: &crate::model::Usage) -> Option<(Option<EventId>, Event)> {
    (usage.web_search_requests > 0 || usage.web_fetch_requests > 0).then(|| {
        let requests = ServerToolRequests {
            model_request_start_id: start_id,
            web_search_requests: usage.web_search_requests,
            web_fetch_requests: usage.web_fetch_requests,
        };
        (None, Event::ServerToolRequests(requests))
    })
}

fn model_usage(usage: &crate::model::Usage) -> ModelUsage {
    ModelUsage {
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        cache_creation_input_tokens: usage.cache_creation_input_tokens,
        cache_read_input_tokens: usage.cache_read_input_tokens,
        speed: None,
    }
}

/// The event for a server_tool_use block: a built-in web tool the provider
/// has run already, so whatever the policy says it was allowed (a web tool
/// that must ask is never sent as a server tool).
fn provider_tool_use_event(session: &StoredSession, auto_allowed: &[String], name: String, input: Json) -> Event {
    let evaluation = match permission_for(session, auto_allowed, &name) {
        (EvaluatedPermission::Allow, evaluation) => evaluation,
        (EvaluatedPermission::Ask | EvaluatedPermission::Deny, _) => None,
    };
    Event::AgentToolUse(AgentToolUse {
        name,
        input,
        evaluated_permission: Some(EvaluatedPermission::Allow),
        evaluation,
        session_thread_id: None,
    })
}

/// The permission of a built-in tool under the agent's toolset config. The
/// `auto` policy allows the tools in `auto_allowed` (by default the read-only
/// ones, `RunnerConfig::auto_allowed`) and asks for the rest.
fn permission_for(
    session: &StoredSession,
    auto_allowed: &[String],
    name: &str,
) -> (EvaluatedPermission, Option<ToolEvaluation>) {
    // The toolset's configs apply to its built-in tools only: a name the
    // model made up is no tool of the agent (behaviour digest §8.2).
    if !crate::api::tools::BUILTIN_TOOLS.contains(&name) {
        return (EvaluatedPermission::Deny, None);
    }
    for tool in &session.agent.tools {
        if let Tool::AgentToolset { default_config, configs } = tool {
            let (enabled, policy) = match configs.iter().find(|c| c.name == name) {
                Some(config) => (config.enabled, config.permission_policy.kind),
                None => (default_config.enabled, default_config.permission_policy.kind),
            };
            if !enabled {
                return (EvaluatedPermission::Deny, None);
            }
            return match policy {
                PolicyKind::AlwaysAllow => (EvaluatedPermission::Allow, Some(ToolEvaluation::AlwaysAllow)),
                PolicyKind::AlwaysAsk => (EvaluatedPermission::Ask, Some(ToolEvaluation::AlwaysAsk)),
                PolicyKind::Auto => {
                    if auto_allowed.iter().any(|allowed| allowed == name) {
                        (
                            EvaluatedPermission::Allow,
                            Some(ToolEvaluation::Auto { evaluated_permission: AutoPermission::Allow }),
                        )
                    } else {
                        let verdict = AutoPermission::Ask { reason_code: "indeterminate".to_owned() };
                        (EvaluatedPermission::Ask, Some(ToolEvaluation::Auto { evaluated_permission: verdict }))
                    }
                }
            };
        }
    }
    // A tool the agent does not have: refused before any policy applies.
    (EvaluatedPermission::Deny, None)
}

fn error_detail(error: Option<&ModelError>, retry_status: RetryStatus) -> SessionErrorDetail {
    let Some(error) = error else {
        return SessionErrorDetail::ModelRequestFailedError {
            message: "the model request failed too many times".to_owned(),
            retry_status,
        };
    };
    let message = error.to_string();
    match error {
        ModelError::RateLimited { .. } => SessionErrorDetail::ModelRateLimitedError { message, retry_status },
        ModelError::Overloaded { .. } => SessionErrorDetail::ModelOverloadedError { message, retry_status },
        ModelError::Billing { .. } => SessionErrorDetail::BillingError { message, retry_status },
        ModelError::Server { .. }
        | ModelError::Broken { .. }
        | ModelError::Authentication { .. }
        | ModelError::InvalidRequest { .. }
        | ModelError::Connect { .. } => SessionErrorDetail::ModelRequestFailedError { message, retry_status },
    }
}

fn backoff(base: Duration, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
    base.saturating_mul(factor).min(super::RETRY_MAX)
}

/// The `session.usage` snapshot of `totals`.
fn usage_snapshot(totals: &logbook_replay::Totals, cents: Option<u64>) -> UsageSnapshot {
    UsageSnapshot {
        input_tokens: Some(totals.input_tokens),
        output_tokens: Some(totals.output_tokens),
        cache_read_input_tokens: Some(totals.cache_read_input_tokens),
        cache_creation: Some(CacheCreationUsage {
            ephemeral_5m_input_tokens: Some(totals.cache_creation_input_tokens),
            ephemeral_1h_input_tokens: None,
        }),
        server_tool_use: Some(ServerToolUsage {
            web_search_requests: Some(totals.web_search_requests),
            web_fetch_requests: Some(totals.web_fetch_requests),
        }),
        active_seconds: Some(logbook_core::event::Millis(totals.active_micros / 1000)),
        list_cost: cents.map(|c| logbook_core::event::Money { amount: c.to_string(), currency: "USD".to_owned() }),
    }
}
