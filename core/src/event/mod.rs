//! The event vocabulary of a session log: one closed [`Event`] enum with a
//! named payload struct per event type, and the fieldless [`EventType`].
//!
//! It covers every persisted session event of the Managed Agents API (user and
//! system input, `agent.*`, `session.*`, `span.*`, `workflow_run.*`) plus
//! Logbook's internal `x.*` events. Each type has two encodings: serde gives the
//! API's JSON shapes (an [`Event`] is the API event object without `id` and
//! `processed_at`, which the envelope adds), and bincode's derive gives the
//! canonical storage bytes that the hash chain covers. Stream-only previews
//! (`event_start`, `event_delta`) are not events and are not here; neither are
//! ids, timestamps or sequence numbers of the envelope.

mod agent;
mod content;
mod event_type;
mod internal;
mod sample;
mod session;
mod span;
#[cfg(any(test, feature = "arbitrary"))]
pub mod strategy;
mod thread;
mod user;
mod workflow;

use bincode::{Decode, Encode};

use crate::id::EventId;
use serde::{Deserialize, Serialize};

pub use agent::{
    AgentCustomToolUse, AgentMcpToolResult, AgentMcpToolUse, AgentMessage, AgentThinking, AgentToolResult,
    AgentToolUse, AutoPermission, EvaluatedPermission, ToolEvaluation,
};
pub use content::{ContentBlock, DocumentSource, ImageSource, SearchResultCitations, SearchResultContent};
pub use event_type::{EventType, InputType, UnknownEventType};
pub use internal::{
    AgentConfig, AttachedResource, Compaction, FileChange, ForkOrigin, ModelRequest, ModelResponse, RepositoryCheckout,
    ResourceChange, ServerToolRequests, SessionResource, ToolStarted, ToolUseLink, WorkspaceChange, WorkspaceDelta,
};
pub use sample::sample_events;
pub use session::{
    Budget, CacheCreationUsage, Millis, Money, RetryStatus, ServerToolUsage, SessionDeleted, SessionError,
    SessionErrorDetail, SessionStatusIdle, SessionStatusRescheduled, SessionStatusRunning, SessionStatusTerminated,
    SessionUpdated, SessionUsage, StopDetails, StopReason, UsageSnapshot,
};
pub use span::{
    ModelUsage, OutcomeEvaluationResult, SpanModelRequestEnd, SpanModelRequestStart, SpanOutcomeEvaluationEnd,
    SpanOutcomeEvaluationOngoing, SpanOutcomeEvaluationStart, Speed,
};
pub use thread::{
    AgentThreadContextCompacted, AgentThreadMessageReceived, AgentThreadMessageSent, SessionThreadCreated,
    SessionThreadStatusIdle, SessionThreadStatusRescheduled, SessionThreadStatusRunning, SessionThreadStatusTerminated,
};
pub use user::{
    ConfirmationResult, Rubric, SystemMessage, UserCustomToolResult, UserDefineOutcome, UserInterrupt, UserMessage,
    UserToolConfirmation, UserToolResult,
};
pub use workflow::{
    WorkflowRunCreated, WorkflowRunError, WorkflowRunErrorDetail, WorkflowRunPhase, WorkflowRunPhaseEnded,
    WorkflowRunPhaseStarted, WorkflowRunResult, WorkflowRunStatusEnded, WorkflowRunStatusIdle,
    WorkflowRunStatusRunning,
};

/// One event of a session log: the API's event union plus Logbook's `x.*`
/// events. In JSON it is tagged by `type` with the wire string (see
/// [`EventType::as_str`]).
///
/// # Important
/// The variant order is the canonical (bincode) encoding and matches
/// [`EventType`] and [`EventType::code`]: variants may only be appended (in both
/// enums at once), never reordered or removed. Retire a variant by keeping it
/// with `#[deprecated]` to reserve its slot. Public variants come first; the
/// internal `x.*` ones were appended after them, and new public event types are
/// appended after those.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(tag = "type")]
pub enum Event {
    // Input events (client → server).
    #[serde(rename = "user.message")]
    UserMessage(UserMessage),
    #[serde(rename = "user.interrupt")]
    UserInterrupt(UserInterrupt),
    #[serde(rename = "user.tool_confirmation")]
    UserToolConfirmation(UserToolConfirmation),
    #[serde(rename = "user.custom_tool_result")]
    UserCustomToolResult(UserCustomToolResult),
    #[serde(rename = "user.tool_result")]
    UserToolResult(UserToolResult),
    #[serde(rename = "user.define_outcome")]
    UserDefineOutcome(UserDefineOutcome),
    #[serde(rename = "system.message")]
    SystemMessage(SystemMessage),
    // agent.*: model and harness output.
    #[serde(rename = "agent.message")]
    AgentMessage(AgentMessage),
    #[serde(rename = "agent.thinking")]
    AgentThinking(AgentThinking),
    #[serde(rename = "agent.tool_use")]
    AgentToolUse(AgentToolUse),
    #[serde(rename = "agent.tool_result")]
    AgentToolResult(AgentToolResult),
    #[serde(rename = "agent.mcp_tool_use")]
    AgentMcpToolUse(AgentMcpToolUse),
    #[serde(rename = "agent.mcp_tool_result")]
    AgentMcpToolResult(AgentMcpToolResult),
    #[serde(rename = "agent.custom_tool_use")]
    AgentCustomToolUse(AgentCustomToolUse),
    #[serde(rename = "agent.thread_message_sent")]
    AgentThreadMessageSent(AgentThreadMessageSent),
    #[serde(rename = "agent.thread_message_received")]
    AgentThreadMessageReceived(AgentThreadMessageReceived),
    #[serde(rename = "agent.thread_context_compacted")]
    AgentThreadContextCompacted(AgentThreadContextCompacted),
    // session.*: lifecycle.
    #[serde(rename = "session.status_running")]
    SessionStatusRunning(SessionStatusRunning),
    #[serde(rename = "session.status_idle")]
    SessionStatusIdle(SessionStatusIdle),
    #[serde(rename = "session.status_rescheduled")]
    SessionStatusRescheduled(SessionStatusRescheduled),
    #[serde(rename = "session.status_terminated")]
    SessionStatusTerminated(SessionStatusTerminated),
    #[serde(rename = "session.error")]
    SessionError(SessionError),
    #[serde(rename = "session.updated")]
    SessionUpdated(SessionUpdated),
    #[serde(rename = "session.usage")]
    SessionUsage(SessionUsage),
    #[serde(rename = "session.deleted")]
    SessionDeleted(SessionDeleted),
    // session.thread_*: multi-agent threads (preview).
    #[serde(rename = "session.thread_created")]
    SessionThreadCreated(SessionThreadCreated),
    #[serde(rename = "session.thread_status_running")]
    SessionThreadStatusRunning(SessionThreadStatusRunning),
    #[serde(rename = "session.thread_status_idle")]
    SessionThreadStatusIdle(SessionThreadStatusIdle),
    #[serde(rename = "session.thread_status_rescheduled")]
    SessionThreadStatusRescheduled(SessionThreadStatusRescheduled),
    #[serde(rename = "session.thread_status_terminated")]
    SessionThreadStatusTerminated(SessionThreadStatusTerminated),
    // span.*: observability.
    #[serde(rename = "span.model_request_start")]
    SpanModelRequestStart(SpanModelRequestStart),
    #[serde(rename = "span.model_request_end")]
    SpanModelRequestEnd(SpanModelRequestEnd),
    #[serde(rename = "span.outcome_evaluation_start")]
    SpanOutcomeEvaluationStart(SpanOutcomeEvaluationStart),
    #[serde(rename = "span.outcome_evaluation_ongoing")]
    SpanOutcomeEvaluationOngoing(SpanOutcomeEvaluationOngoing),
    #[serde(rename = "span.outcome_evaluation_end")]
    SpanOutcomeEvaluationEnd(SpanOutcomeEvaluationEnd),
    // workflow_run.*: multi-agent workflow runs (preview).
    #[serde(rename = "workflow_run.created")]
    WorkflowRunCreated(WorkflowRunCreated),
    #[serde(rename = "workflow_run.status_running")]
    WorkflowRunStatusRunning(WorkflowRunStatusRunning),
    #[serde(rename = "workflow_run.status_idle")]
    WorkflowRunStatusIdle(WorkflowRunStatusIdle),
    #[serde(rename = "workflow_run.phase_started")]
    WorkflowRunPhaseStarted(WorkflowRunPhaseStarted),
    #[serde(rename = "workflow_run.phase_ended")]
    WorkflowRunPhaseEnded(WorkflowRunPhaseEnded),
    #[serde(rename = "workflow_run.status_ended")]
    WorkflowRunStatusEnded(WorkflowRunStatusEnded),
    #[serde(rename = "workflow_run.error")]
    WorkflowRunError(WorkflowRunError),
    // x.*: Logbook-internal, never shown to API clients.
    #[serde(rename = "x.workspace_delta")]
    WorkspaceDelta(WorkspaceDelta),
    #[serde(rename = "x.fork_origin")]
    ForkOrigin(ForkOrigin),
    #[serde(rename = "x.model_request")]
    ModelRequest(ModelRequest),
    #[serde(rename = "x.model_response")]
    ModelResponse(ModelResponse),
    #[serde(rename = "x.tool_started")]
    ToolStarted(ToolStarted),
    #[serde(rename = "x.agent_config")]
    AgentConfig(AgentConfig),
    #[serde(rename = "x.compaction")]
    Compaction(Compaction),
    #[serde(rename = "x.session_resource")]
    SessionResource(SessionResource),
    #[serde(rename = "x.server_tool_requests")]
    ServerToolRequests(ServerToolRequests),
}

impl Event {
    /// The type of this event; exhaustive, so a new variant cannot be
    /// forgotten here.
    pub fn event_type(&self) -> EventType {
        match self {
            Event::UserMessage(_) => EventType::UserMessage,
            Event::UserInterrupt(_) => EventType::UserInterrupt,
            Event::UserToolConfirmation(_) => EventType::UserToolConfirmation,
            Event::UserCustomToolResult(_) => EventType::UserCustomToolResult,
            Event::UserToolResult(_) => EventType::UserToolResult,
            Event::UserDefineOutcome(_) => EventType::UserDefineOutcome,
            Event::SystemMessage(_) => EventType::SystemMessage,
            Event::AgentMessage(_) => EventType::AgentMessage,
            Event::AgentThinking(_) => EventType::AgentThinking,
            Event::AgentToolUse(_) => EventType::AgentToolUse,
            Event::AgentToolResult(_) => EventType::AgentToolResult,
            Event::AgentMcpToolUse(_) => EventType::AgentMcpToolUse,
            Event::AgentMcpToolResult(_) => EventType::AgentMcpToolResult,
            Event::AgentCustomToolUse(_) => EventType::AgentCustomToolUse,
            Event::AgentThreadMessageSent(_) => EventType::AgentThreadMessageSent,
            Event::AgentThreadMessageReceived(_) => EventType::AgentThreadMessageReceived,
            Event::AgentThreadContextCompacted(_) => EventType::AgentThreadContextCompacted,
            Event::SessionStatusRunning(_) => EventType::SessionStatusRunning,
            Event::SessionStatusIdle(_) => EventType::SessionStatusIdle,
            Event::SessionStatusRescheduled(_) => EventType::SessionStatusRescheduled,
            Event::SessionStatusTerminated(_) => EventType::SessionStatusTerminated,
            Event::SessionError(_) => EventType::SessionError,
            Event::SessionUpdated(_) => EventType::SessionUpdated,
            Event::SessionUsage(_) => EventType::SessionUsage,
            Event::SessionDeleted(_) => EventType::SessionDeleted,
            Event::SessionThreadCreated(_) => EventType::SessionThreadCreated,
            Event::SessionThreadStatusRunning(_) => EventType::SessionThreadStatusRunning,
            Event::SessionThreadStatusIdle(_) => EventType::SessionThreadStatusIdle,
            Event::SessionThreadStatusRescheduled(_) => EventType::SessionThreadStatusRescheduled,
            Event::SessionThreadStatusTerminated(_) => EventType::SessionThreadStatusTerminated,
            Event::SpanModelRequestStart(_) => EventType::SpanModelRequestStart,
            Event::SpanModelRequestEnd(_) => EventType::SpanModelRequestEnd,
            Event::SpanOutcomeEvaluationStart(_) => EventType::SpanOutcomeEvaluationStart,
            Event::SpanOutcomeEvaluationOngoing(_) => EventType::SpanOutcomeEvaluationOngoing,
            Event::SpanOutcomeEvaluationEnd(_) => EventType::SpanOutcomeEvaluationEnd,
            Event::WorkflowRunCreated(_) => EventType::WorkflowRunCreated,
            Event::WorkflowRunStatusRunning(_) => EventType::WorkflowRunStatusRunning,
            Event::WorkflowRunStatusIdle(_) => EventType::WorkflowRunStatusIdle,
            Event::WorkflowRunPhaseStarted(_) => EventType::WorkflowRunPhaseStarted,
            Event::WorkflowRunPhaseEnded(_) => EventType::WorkflowRunPhaseEnded,
            Event::WorkflowRunStatusEnded(_) => EventType::WorkflowRunStatusEnded,
            Event::WorkflowRunError(_) => EventType::WorkflowRunError,
            Event::WorkspaceDelta(_) => EventType::WorkspaceDelta,
            Event::ForkOrigin(_) => EventType::ForkOrigin,
            Event::ModelRequest(_) => EventType::ModelRequest,
            Event::ModelResponse(_) => EventType::ModelResponse,
            Event::ToolStarted(_) => EventType::ToolStarted,
            Event::AgentConfig(_) => EventType::AgentConfig,
            Event::Compaction(_) => EventType::Compaction,
            Event::SessionResource(_) => EventType::SessionResource,
            Event::ServerToolRequests(_) => EventType::ServerToolRequests,
        }
    }

    /// The tool use (an `agent.*tool_use` event id) this event answers: a
    /// confirmation or a tool result. Exhaustive, so a new answering event
    /// cannot be forgotten.
    pub fn answers(&self) -> Option<EventId> {
        match self {
            Event::UserToolConfirmation(e) => Some(e.tool_use_id),
            Event::UserCustomToolResult(e) => Some(e.custom_tool_use_id),
            Event::UserToolResult(e) => Some(e.tool_use_id),
            Event::AgentToolResult(e) => Some(e.tool_use_id),
            Event::AgentMcpToolResult(e) => Some(e.mcp_tool_use_id),
            Event::UserMessage(_)
            | Event::UserInterrupt(_)
            | Event::UserDefineOutcome(_)
            | Event::SystemMessage(_)
            | Event::AgentMessage(_)
            | Event::AgentThinking(_)
            | Event::AgentToolUse(_)
            | Event::AgentMcpToolUse(_)
            | Event::AgentCustomToolUse(_)
            | Event::AgentThreadMessageSent(_)
            | Event::AgentThreadMessageReceived(_)
            | Event::AgentThreadContextCompacted(_)
            | Event::SessionStatusRunning(_)
            | Event::SessionStatusIdle(_)
            | Event::SessionStatusRescheduled(_)
            | Event::SessionStatusTerminated(_)
            | Event::SessionError(_)
            | Event::SessionUpdated(_)
            | Event::SessionUsage(_)
            | Event::SessionDeleted(_)
            | Event::SessionThreadCreated(_)
            | Event::SessionThreadStatusRunning(_)
            | Event::SessionThreadStatusIdle(_)
            | Event::SessionThreadStatusRescheduled(_)
            | Event::SessionThreadStatusTerminated(_)
            | Event::SpanModelRequestStart(_)
            | Event::SpanModelRequestEnd(_)
            | Event::SpanOutcomeEvaluationStart(_)
            | Event::SpanOutcomeEvaluationOngoing(_)
            | Event::SpanOutcomeEvaluationEnd(_)
            | Event::WorkflowRunCreated(_)
            | Event::WorkflowRunStatusRunning(_)
            | Event::WorkflowRunStatusIdle(_)
            | Event::WorkflowRunPhaseStarted(_)
            | Event::WorkflowRunPhaseEnded(_)
            | Event::WorkflowRunStatusEnded(_)
            | Event::WorkflowRunError(_)
            | Event::WorkspaceDelta(_)
            | Event::ForkOrigin(_)
            | Event::ModelRequest(_)
            | Event::ModelResponse(_)
            | Event::ToolStarted(_)
            | Event::AgentConfig(_)
            | Event::Compaction(_) => None,
            Event::SessionResource(_) | Event::ServerToolRequests(_) => None,
        }
    }
}

/// `From<Payload> for Event` for every payload struct.
macro_rules! event_from_payload {
    ($($name:ident),* $(,)?) => {
        $(
            impl From<$name> for Event {
                fn from(payload: $name) -> Self {
                    Event::$name(payload)
                }
            }
        )*
    };
}

event_from_payload!(
    UserMessage,
    UserInterrupt,
    UserToolConfirmation,
    UserCustomToolResult,
    UserToolResult,
    UserDefineOutcome,
    SystemMessage,
    AgentMessage,
    AgentThinking,
    AgentToolUse,
    AgentToolResult,
    AgentMcpToolUse,
    AgentMcpToolResult,
    AgentCustomToolUse,
    AgentThreadMessageSent,
    AgentThreadMessageReceived,
    AgentThreadContextCompacted,
    SessionStatusRunning,
    SessionStatusIdle,
    SessionStatusRescheduled,
    SessionStatusTerminated,
    SessionError,
    SessionUpdated,
    SessionUsage,
    SessionDeleted,
    SessionThreadCreated,
    SessionThreadStatusRunning,
    SessionThreadStatusIdle,
    SessionThreadStatusRescheduled,
    SessionThreadStatusTerminated,
    SpanModelRequestStart,
    SpanModelRequestEnd,
    SpanOutcomeEvaluationStart,
    SpanOutcomeEvaluationOngoing,
    SpanOutcomeEvaluationEnd,
    WorkflowRunCreated,
    WorkflowRunStatusRunning,
    WorkflowRunStatusIdle,
    WorkflowRunPhaseStarted,
    WorkflowRunPhaseEnded,
    WorkflowRunStatusEnded,
    WorkflowRunError,
    WorkspaceDelta,
    ForkOrigin,
    ModelRequest,
    ModelResponse,
    ToolStarted,
    AgentConfig,
    Compaction,
    SessionResource,
    ServerToolRequests,
);

#[cfg(test)]
mod tests;
