//! The session state machine: what a session is doing, as a pure fold over
//! its log, and what the runner must do next.
//!
//! [`Machine::apply`] folds one entry; [`Machine::next`] says the next step as
//! a [`Command`]. The runner interprets the command (calls the model, runs
//! tools, appends status events), appends what happened, applies those entries
//! and asks again. It asks only between steps, never while one is under way,
//! which is what makes crash recovery a matter of reading the log: a model
//! request that started and never ended, or a tool call that started and has no
//! result, can only mean the previous runner died mid-step. The first is
//! closed and retried; the second gets an error result and is never run again.
//!
//! Where built-in tools run is the session's configuration ([`ToolHost`] in
//! the [`Policy`]): Logbook's sandbox, or, in a self-hosted environment, the
//! environment's workers. A call a worker runs waits on the client exactly like
//! a custom tool: the session idles with `requires_action` naming it until a
//! `user.tool_result` answers it, and a new user message does not supersede it
//! (a call in flight is not the user's to answer). Permission policies apply
//! first: a call that asks for confirmation is not executable until allowed,
//! a denied one never is. Server-side tools ([`SERVER_SIDE_TOOLS`]) and MCP
//! tools always run in Logbook. A call whose input `max_tokens` cut off
//! ([`cut_tool_use`]) is answered with an error result, never run or put to
//! the client: the model sees why, and can call again with less.
//!
//! An interrupt stops the turn under way, or the one the input before it was
//! about to start (the runner had not picked it up, or had not called the
//! model yet): that input stays in the conversation but starts nothing. Input
//! queued behind a turn that already called the model is not stopped: the
//! interrupt jumps the queue ahead of it, and it starts the next turn, as
//! input sent after the interrupt does. The turn ends idle `end_turn`, its
//! open calls closed with error results, without another model call.
//!
//! A session's budget is checked by the runner before each model call (the
//! price list is not in the log); the idle `budget_reached` it records pauses
//! the session: the work it stopped (unseen input or results, a request to
//! retry) is kept, nothing starts a turn, and only a budget change (the
//! `session.updated` the update endpoint records) resumes it.
//!
//! An outcome (`user.define_outcome`) is worked towards like a message, and
//! graded where its turn would end: [`Command::EvaluateOutcome`] has the
//! runner call a grader, whose verdict (`span.outcome_evaluation_end`) either
//! ends the turn (`satisfied`, `failed`), starts a revision (`needs_revision`:
//! the explanation is input the model has not seen), or, at the last allowed
//! evaluation (`max_iterations_reached`), asks for one final answer before
//! the turn ends. An interrupt ends the outcome open when it came
//! (`interrupted`), even while the session is idle (not while it is paused
//! at its budget, where interrupts are ignored), and with it a revision not
//! yet under way; a turn that dies keeps it, to be graded at the end of the
//! next one; a turn whose last response was refused is not graded: the
//! refusal took the outcome out of the model's context, and the runner ends
//! it `failed`. Whether a verdict ends its outcome is [`ends_outcome`] (a
//! revision recorded at the last allowed evaluation does), for the context
//! and the API as for the machine; an `end_turn` or `refusal` idle with an
//! outcome still open that a model request worked on ends it too: only a
//! runner from before outcomes were graded (2026-12-06) records one.
//!
//! Nothing here reads a clock or does IO; the same entries always give the
//! same state and the same command.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use logbook_core::event::{
    ConfirmationResult, ContentBlock, EvaluatedPermission, Event, ModelResponse, OutcomeEvaluationResult, RetryStatus,
    SessionError, SessionErrorDetail, SessionStatusIdle, StopReason,
};
use logbook_core::{Entry, EventId, OutcomeId};

use crate::tokens;

/// The session's status, as its status events say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    Idle,
    Running,
    Rescheduling,
    Terminated,
}

/// Which kind of call a tool use is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToolKind {
    /// `agent.tool_use`: a built-in tool the runner executes.
    Builtin,
    /// `agent.mcp_tool_use`: a tool of an MCP server.
    Mcp,
    /// `agent.custom_tool_use`: the client answers.
    Custom,
}

/// An open tool call: announced, no result yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenTool {
    pub kind: ToolKind,
    pub name: String,
    pub permission: Permission,
    pub confirmation: Option<Confirmation>,
    /// `x.tool_started` was recorded for it.
    pub started: bool,
    /// The response was cut off while writing its input ([`cut_tool_use`]):
    /// with an error result, never run or awaited.
    #[serde(default)]
    pub cut: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Permission {
    Allow,
    Ask,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Confirmation {
    Allow,
    Deny { message: Option<String> },
}

/// Why tool calls are closed with error results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    /// Started before a crash; its outcome is unknown, so it is not re-run.
    Orphaned,
    /// The turn was interrupted.
    Interrupted,
    /// The user sent a new message instead of answering.
    Superseded,
    /// The response was cut off ([`is_cut_off`]: `max_tokens`, or the
    /// model's context window) while the model wrote the call's input: what
    /// there is of it is not the call the model meant ([`cut_tool_use`]).
    CutOff,
}

/// The runner's next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Nothing to do until new input arrives.
    Wait,
    /// A turn begins: append `session.status_running`.
    StartTurn,
    /// After `session.status_rescheduled`: append `session.status_running` and go on.
    Resume,
    /// Call the model (attempt 1 is the first try of this request).
    CallModel { attempt: u32 },
    /// Retries are used up: `session.error` (exhausted), usage, idle
    /// `retries_exhausted`.
    GiveUp,
    /// A model request started and never ended (a crash): close it as failed.
    CloseModelRequest { start_id: EventId },
    /// Record `x.tool_started` for these calls, run them, record their results.
    RunTools(Vec<EventId>),
    /// Answer these calls with the denial as an error result.
    DenyTools(Vec<(EventId, Option<String>)>),
    /// Close these calls with an error result.
    FailTools { ids: Vec<EventId>, reason: FailReason },
    /// Idle with `requires_action` for these calls (confirmations, custom tool results).
    AwaitClient(Vec<EventId>),
    /// The context nears the model's window: summarize older turns
    /// (`x.compaction` and `agent.thread_context_compacted`) before the next
    /// model call.
    Compact,
    /// The turn is over: usage, then idle `end_turn`.
    EndTurn,
    /// An interrupt: close every open call (and end the outcome under way,
    /// `interrupted`), then usage and idle `end_turn`.
    Interrupt { open: Vec<EventId> },
    /// The turn's work is done and an outcome is set: grade it
    /// (`span.outcome_evaluation_start`, the grader's call, `_end`). `start`
    /// is the evaluation a crash left unended, which goes on.
    EvaluateOutcome { outcome_id: OutcomeId, iteration: u32, start: Option<EventId> },
}

/// Evaluate-then-revise cycles of an outcome that does not say (the API's
/// default).
pub const DEFAULT_OUTCOME_ITERATIONS: u32 = 3;

/// Whether evaluation `iteration` (0-based) is the last an outcome allowed
/// `max_iterations` may have.
pub fn is_last_evaluation(iteration: u32, max_iterations: u32) -> bool {
    iteration.saturating_add(1) >= max_iterations
}

/// Whether a verdict ends its outcome: any but `needs_revision`, and that
/// too at the last allowed evaluation.
pub fn ends_outcome(result: OutcomeEvaluationResult, iteration: u32, max_iterations: u32) -> bool {
    result.is_terminal() || is_last_evaluation(iteration, max_iterations)
}

/// The outcome being worked towards: from its `user.define_outcome` until a
/// verdict ends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveOutcome {
    pub outcome_id: OutcomeId,
    /// A model request started since it was defined: a turn worked on it
    /// (one defined after a turn's last call is the next turn's input).
    #[serde(default)]
    pub worked: bool,
    pub max_iterations: u32,
    /// The next evaluation's (0-based).
    pub iteration: u32,
    /// The `span.outcome_evaluation_start` of an evaluation under way.
    pub evaluating: Option<EventId>,
}

/// Policy the runner gives the machine (configuration, not state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Model attempts per request before giving up.
    pub max_model_attempts: u32,
    /// Where the session's built-in tools run: fixed by its environment.
    pub tool_host: ToolHost,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { max_model_attempts: 5, tool_host: ToolHost::Server }
    }
}

/// Where a session's built-in tool calls (`agent.tool_use`) are executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ToolHost {
    /// Logbook runs them (cloud environments).
    #[default]
    Server,
    /// The self-hosted environment's workers run them and answer each with a
    /// `user.tool_result`; Logbook never executes them.
    Worker,
}

/// Built-in tools Logbook runs itself in every session, self-hosted ones
/// included: they reach the network from the server (or the model provider
/// runs them as server tools, and they never become `agent.tool_use`). The
/// SDK's worker does not implement them.
pub const SERVER_SIDE_TOOLS: [&str; 2] = ["web_fetch", "web_search"];

/// The provider's stop reason for a response whose server tools are still
/// working: the turn is not over, the model is called again with the
/// response as it is.
pub const PAUSE_TURN: &str = "pause_turn";

/// The provider's stop reason for a response it refused to give.
pub const REFUSAL: &str = "refusal";

/// The provider's stop reason for a response cut off by `max_tokens`.
pub const MAX_TOKENS: &str = "max_tokens";

/// The provider's stop reason for a response that filled the model's
/// context window ("treat the response as truncated", as for `max_tokens`).
pub const CONTEXT_WINDOW_EXCEEDED: &str = "model_context_window_exceeded";

/// Whether a response stopped for `stop_reason` was cut off mid-output, so
/// its last tool call's input may be incomplete.
pub fn is_cut_off(stop_reason: Option<&str>) -> bool {
    matches!(stop_reason, Some(MAX_TOKENS | CONTEXT_WINDOW_EXCEEDED))
}

/// Consecutive `pause_turn` responses continued before the turn ends anyway:
/// a provider that never finishes must not bill model calls forever (each
/// continuation already lets the provider run about ten server tool
/// iterations).
pub const MAX_PAUSE_CONTINUATIONS: u32 = 16;

/// What the provider says when it refuses a request over the model's context
/// window: the prompt alone (`400 prompt is too long: N tokens > M maximum`)
/// or with `max_tokens` (`400 input length and max_tokens exceed context
/// limit: N + M > W`); or over its size in bytes (`413 request_too_large`:
/// 32 MB, which images reach far below the token trigger). The runner
/// retries such a request once, after a compaction the machine asks for
/// when the retrying `session.error` says this ([`is_over_the_window`]).
pub const OVER_THE_WINDOW: [&str; 3] = ["prompt is too long", "exceed context limit", "request_too_large"];

/// Whether an error message says the request was over the model's window.
pub fn is_over_the_window(message: &str) -> bool {
    OVER_THE_WINDOW.iter().any(|says| message.contains(says))
}

/// A session's state, folded from its log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    status: Option<Status>,
    /// A user message or system message the model has not seen yet.
    unseen_input: bool,
    /// A user message (or outcome) arrived since the session last waited on
    /// the client: sent instead of answering, it supersedes the calls still
    /// open. Input queued before the wait was announced does not (the client
    /// is asked to answer the calls, and the model sees it with the answers),
    /// nor does a `system.message` (the API takes one with a tool result only).
    #[serde(default)]
    new_message: bool,
    /// Tool results arrived that the model has not seen yet.
    unseen_results: bool,
    /// The open model request, if one started and did not end.
    open_request: Option<EventId>,
    /// Failed attempts of the current model request.
    failed_attempts: u32,
    /// The last model request ended successfully (not failed, not pending).
    last_request_ok: bool,
    /// Open tool calls in announcement order.
    tools: BTreeMap<EventId, OpenTool>,
    order: Vec<EventId>,
    /// An interrupt arrived during the current turn (or before the turn the
    /// input before it was to start) and was not applied yet.
    interrupt_pending: bool,
    /// The ids of the last `requires_action` idle, to not repeat it.
    awaited: Option<Vec<EventId>>,
    /// Retries exhausted: the turn must end (the runner records it).
    exhausted: bool,
    /// Estimated prompt tokens of the next model request: what the model
    /// reported for the last one (prompt and answer), plus what was added
    /// since, or a compaction's estimate.
    context_tokens: u64,
    /// Of `context_tokens`, what arrived while the open model request ran:
    /// the request's reported usage, which replaces the estimate when it
    /// ends, did not count it.
    #[serde(default)]
    arrived_during_request: u64,
    /// The context size that asks for a compaction, from the last
    /// `x.agent_config` (`options.compaction.trigger_tokens`); `None` = never.
    compaction_trigger: Option<u64>,
    /// A compaction was recorded since the last model request: do not ask for
    /// another before the model has been called.
    compacted: bool,
    /// The last request was refused as longer than the model's window
    /// ([`OVER_THE_WINDOW`]) and is to be retried: compact first.
    #[serde(default)]
    too_long: bool,
    /// The last response stopped with `pause_turn`: call the model again.
    #[serde(default)]
    paused: bool,
    /// `pause_turn` responses in a row in this turn.
    #[serde(default)]
    n_paused: u32,
    /// Tool uses of the last response that its provider runs itself (server
    /// tools): shown as `agent.tool_use`, answered inside the response, never
    /// run or awaited here.
    #[serde(default)]
    provider_run: Vec<EventId>,
    /// The call of the last response's last block ([`cut_tool_use`]): cut
    /// off if the response stopped with `max_tokens` (its `x.model_request`,
    /// recorded after the calls, says).
    #[serde(default)]
    last_tool_use: Option<EventId>,
    /// The last idle was `budget_reached` and the budget has not changed
    /// since: the session is paused, its pending work kept for when it is.
    #[serde(default)]
    at_budget: bool,
    /// The budget changed while paused: the paused work goes on in a new turn.
    #[serde(default)]
    resume: bool,
    /// A model request started since the session was last idle: unseen input
    /// is then queued behind the turn's work, not what started it.
    #[serde(default)]
    turn_called_model: bool,
    /// See [`ActiveOutcome`].
    #[serde(default)]
    outcome: Option<ActiveOutcome>,
    /// A verdict the model has not answered: the grader's explanation to
    /// revise by, or the last evaluation's, to close the work with.
    #[serde(default)]
    revise: bool,
    /// The last response was refused (`stop_reason: refusal`).
    #[serde(default)]
    refused: bool,
    /// The outcome open when the pending interrupt came: the one it ends.
    #[serde(default)]
    interrupted_outcome: Option<OutcomeId>,
    n_entries: u64,
}

impl Machine {
    pub fn new() -> Machine {
        Machine::default()
    }

    /// Folds a whole log.
    pub fn project<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Machine {
        let mut machine = Machine::new();
        for entry in entries {
            machine.apply(entry);
        }
        machine
    }

    pub fn status(&self) -> Status {
        self.status.unwrap_or(Status::Idle)
    }

    /// Entries applied so far.
    pub fn n_entries(&self) -> u64 {
        self.n_entries
    }

    /// The model request started and not ended, if any.
    pub fn open_request(&self) -> Option<EventId> {
        self.open_request
    }

    pub fn open_tools(&self) -> impl Iterator<Item = (EventId, &OpenTool)> {
        self.order.iter().filter_map(|id| self.tools.get(id).map(|tool| (*id, tool)))
    }

    /// Whether a compaction may still be asked for before the next model
    /// call (none was recorded since the last request that succeeded): a
    /// prompt refused as too long is worth retrying only then.
    pub fn may_compact(&self) -> bool {
        !self.compacted
    }

    /// The outcome being worked towards, if any.
    pub fn outcome(&self) -> Option<&ActiveOutcome> {
        self.outcome.as_ref()
    }

    /// The outcome a pending interrupt ends: the one open when it came (an
    /// outcome defined after it is not stopped by it).
    pub fn interrupted_outcome(&self) -> Option<OutcomeId> {
        self.interrupted_outcome.filter(|_| self.interrupt_pending)
    }

    /// Whether a turn is under way (running or rescheduling).
    pub fn in_turn(&self) -> bool {
        matches!(self.status(), Status::Running | Status::Rescheduling)
    }

    pub fn apply(&mut self, entry: &Entry) {
        self.n_entries += 1;
        let id = entry.id;
        match &entry.event {
            Event::UserMessage(message) => {
                self.unseen_input = true;
                self.new_message = true;
                self.add_tokens(content_tokens(&message.content));
            }
            Event::SystemMessage(message) => {
                self.unseen_input = true;
                self.add_tokens(content_tokens(&message.content));
            }
            Event::UserDefineOutcome(outcome) => {
                self.unseen_input = true;
                self.new_message = true;
                // The API refuses a second one while one is set; a log that
                // has one anyway works towards the newer.
                self.outcome = Some(ActiveOutcome {
                    outcome_id: outcome.outcome_id,
                    worked: false,
                    max_iterations: outcome.max_iterations.unwrap_or(DEFAULT_OUTCOME_ITERATIONS),
                    iteration: 0,
                    evaluating: None,
                });
            }
            Event::UserInterrupt(_) => {
                // It stops the turn under way, the wait on the client, or the turn
                // the input not yet picked up was about to start; against an idle
                // session with nothing pending, or one paused at its budget, it is
                // a no-op.
                let pending = self.unseen_input || self.resume;
                // An outcome is ended by an interrupt whenever it comes (but
                // at the budget, where interrupts are ignored).
                if self.in_turn() || self.awaiting_client() || ((pending || self.outcome.is_some()) && !self.at_budget)
                {
                    self.interrupt_pending = true;
                    if self.interrupted_outcome.is_none() {
                        self.interrupted_outcome = self.outcome.as_ref().map(|o| o.outcome_id);
                    }
                    // Input that a turn about to start (or started, with no model
                    // call yet) was for is stopped with it: it stays in the
                    // conversation (the model sees it with the next turn's input)
                    // but starts nothing; so does work resumed by a budget change.
                    // Input queued behind a turn that already called the model is
                    // not what the stop was for: the interrupt "jumps the queue"
                    // ahead of it (behaviour digest §3.6) and it starts the next
                    // turn, as input sent after the interrupt does.
                    if !self.turn_called_model {
                        self.unseen_input = false;
                        self.new_message = false;
                    }
                    self.resume = false;
                    self.revise = false;
                }
            }
            Event::UserToolConfirmation(confirmation) => {
                if let Some(tool) = self.tools.get_mut(&confirmation.tool_use_id) {
                    tool.confirmation = Some(match confirmation.result {
                        ConfirmationResult::Allow => Confirmation::Allow,
                        ConfirmationResult::Deny => Confirmation::Deny { message: confirmation.deny_message.clone() },
                    });
                }
            }
            Event::UserCustomToolResult(result) => {
                self.add_tokens(content_tokens(result.content.as_deref().unwrap_or_default()));
                self.close_tool(result.custom_tool_use_id);
            }
            Event::UserToolResult(result) => {
                self.add_tokens(content_tokens(result.content.as_deref().unwrap_or_default()));
                self.close_tool(result.tool_use_id);
            }
            Event::AgentToolResult(result) => {
                self.add_tokens(content_tokens(result.content.as_deref().unwrap_or_default()));
                self.close_tool(result.tool_use_id);
            }
            Event::AgentMcpToolResult(result) => {
                self.add_tokens(content_tokens(result.content.as_deref().unwrap_or_default()));
                self.close_tool(result.mcp_tool_use_id);
            }
            Event::AgentToolUse(tool_use) => {
                if !self.provider_run.contains(&id) {
                    self.open_tool(id, ToolKind::Builtin, &tool_use.name, permission(tool_use.evaluated_permission));
                }
            }
            Event::AgentMcpToolUse(tool_use) => {
                self.open_tool(id, ToolKind::Mcp, &tool_use.name, permission(tool_use.evaluated_permission));
            }
            Event::AgentCustomToolUse(tool_use) => {
                self.open_tool(id, ToolKind::Custom, &tool_use.name, Permission::Allow);
            }
            Event::ToolStarted(started) => {
                for tool_use_id in &started.tool_use_ids {
                    if let Some(tool) = self.tools.get_mut(tool_use_id) {
                        tool.started = true;
                    }
                }
            }
            Event::SpanModelRequestStart(_) => {
                self.open_request = Some(id);
                self.arrived_during_request = 0;
                self.turn_called_model = true;
                self.unseen_input = false;
                self.new_message = false;
                self.unseen_results = false;
                self.last_request_ok = false;
                self.paused = false;
                self.revise = false;
                self.refused = false;
                if let Some(outcome) = self.outcome.as_mut() {
                    outcome.worked = true;
                }
            }
            Event::SpanModelRequestEnd(end) => {
                self.open_request = None;
                if end.is_error == Some(true) {
                    self.failed_attempts += 1;
                    self.last_request_ok = false;
                } else {
                    self.failed_attempts = 0;
                    self.last_request_ok = true;
                    self.compacted = false;
                    self.too_long = false;
                    let usage = &end.model_usage;
                    self.context_tokens = usage.input_tokens
                        + usage.cache_read_input_tokens
                        + usage.cache_creation_input_tokens
                        + usage.output_tokens
                        + self.arrived_during_request;
                }
                self.arrived_during_request = 0;
            }
            Event::AgentConfig(config) => {
                self.compaction_trigger =
                    config.options.to_value().pointer("/compaction/trigger_tokens").and_then(Value::as_u64);
            }
            Event::Compaction(compaction) => {
                self.compacted = true;
                self.too_long = false;
                self.context_tokens = compaction.tokens_after;
            }
            Event::SessionStatusRunning(_) => {
                self.status = Some(Status::Running);
                self.exhausted = false;
                self.n_paused = 0;
                self.at_budget = false;
                self.resume = false;
            }
            Event::SessionStatusRescheduled(_) => self.status = Some(Status::Rescheduling),
            Event::SessionStatusTerminated(_) | Event::SessionDeleted(_) => self.status = Some(Status::Terminated),
            Event::SessionStatusIdle(SessionStatusIdle { stop_reason, .. }) => {
                self.status = Some(Status::Idle);
                self.interrupt_pending = false;
                self.interrupted_outcome = None;
                // A turn that ended after compacting (still over the window,
                // say) leaves the next turn free to compact again.
                self.compacted = false;
                self.turn_called_model = false;
                match stop_reason {
                    StopReason::RequiresAction { event_ids } => {
                        self.awaited = Some(event_ids.clone());
                        // What was sent before the client was asked is not an answer
                        // instead of one: the calls stay open for the client.
                        self.new_message = false;
                    }
                    StopReason::BudgetReached => {
                        // Paused before a model call: what that call was for (unseen
                        // input or results, a failed request, a paused response) is
                        // kept for when the budget is raised.
                        self.awaited = None;
                        self.failed_attempts = 0;
                        self.exhausted = false;
                        self.at_budget = true;
                        self.resume = false;
                    }
                    StopReason::EndTurn | StopReason::RetriesExhausted | StopReason::Refusal => {
                        // The turn is over: results recorded in it (error results of an
                        // interrupt, say) do not start another one, nor does a
                        // verdict it did not answer.
                        self.revise = false;
                        // Nor an outcome: this runner grades (or ends) an
                        // outcome a turn worked on before it ends `end_turn`;
                        // one still open here was worked on by an older
                        // runner, which did not grade (before 2026-12-06).
                        if !matches!(stop_reason, StopReason::RetriesExhausted)
                            && self.outcome.as_ref().is_some_and(|o| o.worked)
                        {
                            self.outcome = None;
                        }
                        if matches!(stop_reason, StopReason::RetriesExhausted) {
                            // A dead turn flushes the input queued during it (behaviour
                            // digest §3.7): the model sees it with the next message, which
                            // is what starts a turn again.
                            self.unseen_input = false;
                            self.new_message = false;
                        }
                        self.awaited = None;
                        self.failed_attempts = 0;
                        self.exhausted = false;
                        self.unseen_results = false;
                        self.last_request_ok = true;
                        self.paused = false;
                        self.n_paused = 0;
                    }
                }
            }
            Event::SessionError(SessionError { error }) => {
                if error.retry_status() == RetryStatus::Exhausted {
                    self.exhausted = true;
                }
                if let SessionErrorDetail::ModelRequestFailedError { message, retry_status: RetryStatus::Retrying } =
                    error
                    && is_over_the_window(message)
                {
                    self.too_long = true;
                }
            }
            Event::AgentMessage(_)
            | Event::AgentThinking(_)
            | Event::AgentThreadMessageSent(_)
            | Event::AgentThreadMessageReceived(_)
            | Event::AgentThreadContextCompacted(_)
            | Event::SessionUsage(_)
            | Event::SessionThreadCreated(_)
            | Event::SessionThreadStatusRunning(_)
            | Event::SessionThreadStatusIdle(_)
            | Event::SessionThreadStatusRescheduled(_)
            | Event::SessionThreadStatusTerminated(_)
            | Event::SpanOutcomeEvaluationOngoing(_)
            | Event::WorkflowRunCreated(_)
            | Event::WorkflowRunStatusRunning(_)
            | Event::WorkflowRunStatusIdle(_)
            | Event::WorkflowRunPhaseStarted(_)
            | Event::WorkflowRunPhaseEnded(_)
            | Event::WorkflowRunStatusEnded(_)
            | Event::WorkflowRunError(_)
            | Event::WorkspaceDelta(_)
            | Event::ForkOrigin(_)
            | Event::SessionResource(_)
            | Event::ServerToolRequests(_) => {}
            Event::SessionUpdated(update) => {
                // A raised or removed budget resumes a session paused at it;
                // the runner checks the new one before the next model call.
                if update.budget.is_some() && self.at_budget {
                    self.at_budget = false;
                    self.resume = true;
                }
            }
            Event::SpanOutcomeEvaluationStart(start) => {
                if let Some(outcome) = self.outcome.as_mut().filter(|o| o.outcome_id == start.outcome_id) {
                    outcome.evaluating = Some(id);
                }
            }
            Event::SpanOutcomeEvaluationEnd(end) => {
                if let Some(outcome) = self.outcome.as_mut().filter(|o| o.outcome_id == end.outcome_id) {
                    let last = is_last_evaluation(end.iteration, outcome.max_iterations);
                    match end.result {
                        OutcomeEvaluationResult::NeedsRevision if !last => {
                            outcome.evaluating = None;
                            outcome.iteration = end.iteration.saturating_add(1);
                            // The explanation is what the model revises by.
                            self.revise = true;
                            self.add_tokens(tokens::text(&end.explanation));
                        }
                        OutcomeEvaluationResult::NeedsRevision | OutcomeEvaluationResult::MaxIterationsReached => {
                            // One last answer, then the turn ends.
                            self.outcome = None;
                            self.revise = true;
                            self.add_tokens(tokens::text(&end.explanation));
                        }
                        OutcomeEvaluationResult::Satisfied | OutcomeEvaluationResult::Failed => {
                            // The model is told (`context::verdict_text`).
                            self.outcome = None;
                            self.add_tokens(tokens::text(&end.explanation));
                        }
                        OutcomeEvaluationResult::Interrupted => self.outcome = None,
                    }
                }
            }
            Event::ModelResponse(response) => {
                self.provider_run = provider_run_tool_uses(response);
                self.last_tool_use = cut_tool_use(response);
            }
            Event::ModelRequest(request) => {
                let last_tool_use = self.last_tool_use.take();
                if is_cut_off(request.stop_reason.as_deref())
                    && let Some(tool) = last_tool_use.and_then(|id| self.tools.get_mut(&id))
                {
                    tool.cut = true;
                }
                self.paused = request.stop_reason.as_deref() == Some(PAUSE_TURN);
                self.refused = request.stop_reason.as_deref() == Some(REFUSAL);
                self.n_paused = if self.paused { self.n_paused.saturating_add(1) } else { 0 };
            }
        }
    }

    /// The runner's next step. Call it only between steps.
    pub fn next(&self, policy: &Policy) -> Command {
        if self.status() == Status::Terminated {
            return Command::Wait;
        }
        // A request without an end, or a started call without a result, can only be
        // left over from a runner that died mid-step.
        if let Some(start_id) = self.open_request {
            return Command::CloseModelRequest { start_id };
        }
        if self.interrupt_pending {
            return Command::Interrupt { open: self.open_tools().map(|(id, _)| id).collect() };
        }
        let orphaned: Vec<EventId> = self.open_tools().filter(|(_, t)| t.started).map(|(id, _)| id).collect();
        if !orphaned.is_empty() {
            return Command::FailTools { ids: orphaned, reason: FailReason::Orphaned };
        }
        let host = policy.tool_host;
        let waiting: Vec<EventId> =
            self.open_tools().filter(|(_, t)| needs_client(t, host)).map(|(id, _)| id).collect();
        if !self.in_turn() {
            if !waiting.is_empty() {
                // A new message instead of answers: the calls still waiting on
                // the client are superseded, except those a worker is executing
                // (they finish, as in a turn). A call the user already confirmed
                // or denied keeps that answer: the turn runs or denies it.
                let superseded: Vec<EventId> = self
                    .open_tools()
                    .filter(|(_, t)| needs_client(t, host) && !awaits_worker(t, host))
                    .map(|(id, _)| id)
                    .collect();
                if self.new_message && !superseded.is_empty() {
                    return Command::FailTools { ids: superseded, reason: FailReason::Superseded };
                }
                // Some answers came, not all: idle again with the rest.
                if self.awaited.as_ref() != Some(&waiting) {
                    return Command::AwaitClient(waiting);
                }
                return Command::Wait;
            }
            // Paused at the budget: input queued before the pause waits for a
            // budget change, and the API refuses more until then.
            if self.at_budget {
                return Command::Wait;
            }
            if self.unseen_input || self.unseen_results || !self.tools.is_empty() || self.resume {
                return Command::StartTurn;
            }
            return Command::Wait;
        }
        if self.status() == Status::Rescheduling {
            return Command::Resume;
        }
        if self.exhausted {
            return Command::GiveUp;
        }
        // A cut-off call is answered as such, whatever its permission (the
        // runner announces it denied, so that no worker runs it).
        let denied: Vec<(EventId, Option<String>)> = self
            .open_tools()
            .filter(|(_, tool)| !tool.cut)
            .filter_map(|(id, tool)| match (&tool.permission, &tool.confirmation) {
                (Permission::Deny, _) => Some((id, None)),
                (Permission::Ask, Some(Confirmation::Deny { message })) => Some((id, message.clone())),
                (Permission::Ask, Some(Confirmation::Allow) | None) | (Permission::Allow, _) => None,
            })
            .collect();
        if !denied.is_empty() {
            return Command::DenyTools(denied);
        }
        let cut: Vec<EventId> = self.open_tools().filter(|(_, t)| t.cut).map(|(id, _)| id).collect();
        if !cut.is_empty() {
            return Command::FailTools { ids: cut, reason: FailReason::CutOff };
        }
        let runnable: Vec<EventId> =
            self.open_tools().filter(|(_, t)| is_runnable(t, host)).map(|(id, _)| id).collect();
        if !runnable.is_empty() {
            return Command::RunTools(runnable);
        }
        if !waiting.is_empty() {
            return Command::AwaitClient(waiting);
        }
        if self.failed_attempts >= policy.max_model_attempts {
            return Command::GiveUp;
        }
        let continues = self.paused && self.n_paused <= MAX_PAUSE_CONTINUATIONS;
        if self.unseen_input || self.unseen_results || !self.last_request_ok || continues || self.revise {
            let over_trigger = self.compaction_trigger.is_some_and(|trigger| self.context_tokens >= trigger);
            if (over_trigger || self.too_long) && !self.compacted {
                return Command::Compact;
            }
            return Command::CallModel { attempt: self.failed_attempts + 1 };
        }
        if let Some(outcome) = self.outcome.as_ref().filter(|_| !self.refused) {
            return Command::EvaluateOutcome {
                outcome_id: outcome.outcome_id,
                iteration: outcome.iteration,
                start: outcome.evaluating,
            };
        }
        Command::EndTurn
    }

    /// Estimated prompt tokens of the next model request.
    /// Adds `n` estimated tokens of new context (input, tool results).
    fn add_tokens(&mut self, n: u64) {
        self.context_tokens += n;
        if self.open_request.is_some() {
            self.arrived_during_request += n;
        }
    }

    pub fn context_tokens(&self) -> u64 {
        self.context_tokens
    }

    /// Open calls that a worker of the session's self-hosted environment is
    /// to run (allowed, not answered): while there are any, the session needs
    /// a work item in its environment's queue.
    pub fn worker_calls(&self, policy: &Policy) -> Vec<EventId> {
        self.open_tools().filter(|(_, t)| awaits_worker(t, policy.tool_host)).map(|(id, _)| id).collect()
    }

    /// Whether the session waits on the client (idle with `requires_action`).
    fn awaiting_client(&self) -> bool {
        self.status() == Status::Idle && self.awaited.is_some()
    }

    fn open_tool(&mut self, id: EventId, kind: ToolKind, name: &str, permission: Permission) {
        let tool = OpenTool { kind, name: name.to_owned(), permission, confirmation: None, started: false, cut: false };
        self.tools.insert(id, tool);
        self.order.push(id);
    }

    fn close_tool(&mut self, id: EventId) {
        if self.tools.remove(&id).is_some() {
            self.order.retain(|open| *open != id);
            self.unseen_results = true;
        }
    }
}

/// A call that waits on the client: a custom tool, one asking for
/// confirmation that has none yet, or an allowed one a worker runs; never a
/// cut one (the runner answers it).
fn needs_client(tool: &OpenTool, host: ToolHost) -> bool {
    if tool.cut {
        return false;
    }
    match (tool.kind, &tool.permission, &tool.confirmation) {
        (ToolKind::Custom, _, _) => true,
        (ToolKind::Builtin | ToolKind::Mcp, Permission::Ask, None) => true,
        (ToolKind::Builtin | ToolKind::Mcp, Permission::Ask, Some(_))
        | (ToolKind::Builtin | ToolKind::Mcp, Permission::Allow | Permission::Deny, _) => awaits_worker(tool, host),
    }
}

/// Whether the call is allowed to run: by its policy, or confirmed, and
/// not cut off.
fn is_allowed(tool: &OpenTool) -> bool {
    if tool.cut {
        return false;
    }
    match (&tool.permission, &tool.confirmation) {
        (Permission::Allow, _) | (Permission::Ask, Some(Confirmation::Allow)) => true,
        (Permission::Ask, Some(Confirmation::Deny { .. }) | None) | (Permission::Deny, _) => false,
    }
}

/// Whether the call is executed by a worker of a self-hosted environment.
fn runs_on_worker(tool: &OpenTool, host: ToolHost) -> bool {
    match (host, tool.kind) {
        (ToolHost::Worker, ToolKind::Builtin) => !SERVER_SIDE_TOOLS.contains(&tool.name.as_str()),
        (ToolHost::Worker, ToolKind::Mcp | ToolKind::Custom) | (ToolHost::Server, _) => false,
    }
}

/// An allowed call a worker is to run and has not answered yet.
fn awaits_worker(tool: &OpenTool, host: ToolHost) -> bool {
    runs_on_worker(tool, host) && is_allowed(tool)
}

/// A built-in or MCP call the runner may execute now.
fn is_runnable(tool: &OpenTool, host: ToolHost) -> bool {
    is_allowed(tool)
        && !tool.started
        && matches!(tool.kind, ToolKind::Builtin | ToolKind::Mcp)
        && !runs_on_worker(tool, host)
}

/// The events of a response's tool uses that its provider runs itself: the
/// links to `server_tool_use` blocks (web search, web fetch).
pub fn provider_run_tool_uses(response: &ModelResponse) -> Vec<EventId> {
    let content = response.content.to_value();
    let blocks = content.as_array().map(Vec::as_slice).unwrap_or_default();
    response
        .tool_uses
        .iter()
        .filter(|link| {
            blocks.iter().any(|block| {
                block.get("type").and_then(Value::as_str) == Some("server_tool_use")
                    && block.get("id").and_then(Value::as_str) == Some(link.provider_id.as_str())
            })
        })
        .map(|link| link.event_id)
        .collect()
}

/// The event of a response's last content block when that block is a
/// `tool_use` (a call Logbook or the client answers). When the response was
/// cut off ([`is_cut_off`]), that call's input was cut off: the model was
/// still writing it (the stream keeps it as `input: {}` when its JSON is
/// incomplete). Derived from `x.model_response` and the stop reason in
/// `x.model_request`, so the decision re-projects from the log. A call whose
/// JSON happened to be complete when the tokens ran out is treated the same:
/// nothing says the model had finished it.
pub fn cut_tool_use(response: &ModelResponse) -> Option<EventId> {
    let content = response.content.to_value();
    let last = content.as_array().and_then(|blocks| blocks.last())?;
    if last.get("type").and_then(Value::as_str) != Some("tool_use") {
        return None;
    }
    let provider_id = last.get("id").and_then(Value::as_str)?;
    response.tool_uses.iter().find(|link| link.provider_id == provider_id).map(|link| link.event_id)
}

/// Estimated tokens of content blocks added to the context.
fn content_tokens(blocks: &[ContentBlock]) -> u64 {
    blocks.iter().filter_map(|b| serde_json::to_value(b).ok()).map(|b| tokens::block(&b)).sum()
}

fn permission(evaluated: Option<EvaluatedPermission>) -> Permission {
    match evaluated {
        None | Some(EvaluatedPermission::Allow) => Permission::Allow,
        Some(EvaluatedPermission::Ask) => Permission::Ask,
        Some(EvaluatedPermission::Deny) => Permission::Deny,
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
