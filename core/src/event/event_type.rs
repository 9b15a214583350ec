//! [`EventType`]: the fieldless mirror of [`Event`](crate::event::Event), with
//! the wire strings, stable numeric codes and the public/input classification.
//!
//! Useful wherever a kind of event is named without its payload: type filters
//! (`types[]=agent.message`), indexes, metrics. It does not parse or hold
//! payloads.

use std::fmt;
use std::str::FromStr;

use bincode::{Decode, Encode};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The type of an [`Event`](crate::event::Event), one variant per event variant
/// in the same order.
///
/// # Important
/// The variant order is the canonical encoding and defines [`EventType::code`]:
/// variants may only be appended (together with the matching `Event` variant),
/// never reordered or removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub enum EventType {
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
}

/// A string that names no event type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event type {input:?}")]
pub struct UnknownEventType {
    pub input: String,
}

impl EventType {
    /// Every event type, in declaration order: `ALL[t.code() as usize] == t`.
    pub const ALL: &[EventType] = &[
        EventType::UserMessage,
        EventType::UserInterrupt,
        EventType::UserToolConfirmation,
        EventType::UserCustomToolResult,
        EventType::UserToolResult,
        EventType::UserDefineOutcome,
        EventType::SystemMessage,
        EventType::AgentMessage,
        EventType::AgentThinking,
        EventType::AgentToolUse,
        EventType::AgentToolResult,
        EventType::AgentMcpToolUse,
        EventType::AgentMcpToolResult,
        EventType::AgentCustomToolUse,
        EventType::AgentThreadMessageSent,
        EventType::AgentThreadMessageReceived,
        EventType::AgentThreadContextCompacted,
        EventType::SessionStatusRunning,
        EventType::SessionStatusIdle,
        EventType::SessionStatusRescheduled,
        EventType::SessionStatusTerminated,
        EventType::SessionError,
        EventType::SessionUpdated,
        EventType::SessionUsage,
        EventType::SessionDeleted,
        EventType::SessionThreadCreated,
        EventType::SessionThreadStatusRunning,
        EventType::SessionThreadStatusIdle,
        EventType::SessionThreadStatusRescheduled,
        EventType::SessionThreadStatusTerminated,
        EventType::SpanModelRequestStart,
        EventType::SpanModelRequestEnd,
        EventType::SpanOutcomeEvaluationStart,
        EventType::SpanOutcomeEvaluationOngoing,
        EventType::SpanOutcomeEvaluationEnd,
        EventType::WorkflowRunCreated,
        EventType::WorkflowRunStatusRunning,
        EventType::WorkflowRunStatusIdle,
        EventType::WorkflowRunPhaseStarted,
        EventType::WorkflowRunPhaseEnded,
        EventType::WorkflowRunStatusEnded,
        EventType::WorkflowRunError,
        EventType::WorkspaceDelta,
        EventType::ForkOrigin,
        EventType::ModelRequest,
        EventType::ModelResponse,
        EventType::ToolStarted,
        EventType::AgentConfig,
        EventType::Compaction,
        EventType::SessionResource,
        EventType::ServerToolRequests,
    ];

    /// The `type` string of the JSON form, e.g. `"user.message"`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::UserMessage => "user.message",
            EventType::UserInterrupt => "user.interrupt",
            EventType::UserToolConfirmation => "user.tool_confirmation",
            EventType::UserCustomToolResult => "user.custom_tool_result",
            EventType::UserToolResult => "user.tool_result",
            EventType::UserDefineOutcome => "user.define_outcome",
            EventType::SystemMessage => "system.message",
            EventType::AgentMessage => "agent.message",
            EventType::AgentThinking => "agent.thinking",
            EventType::AgentToolUse => "agent.tool_use",
            EventType::AgentToolResult => "agent.tool_result",
            EventType::AgentMcpToolUse => "agent.mcp_tool_use",
            EventType::AgentMcpToolResult => "agent.mcp_tool_result",
            EventType::AgentCustomToolUse => "agent.custom_tool_use",
            EventType::AgentThreadMessageSent => "agent.thread_message_sent",
            EventType::AgentThreadMessageReceived => "agent.thread_message_received",
            EventType::AgentThreadContextCompacted => "agent.thread_context_compacted",
            EventType::SessionStatusRunning => "session.status_running",
            EventType::SessionStatusIdle => "session.status_idle",
            EventType::SessionStatusRescheduled => "session.status_rescheduled",
            EventType::SessionStatusTerminated => "session.status_terminated",
            EventType::SessionError => "session.error",
            EventType::SessionUpdated => "session.updated",
            EventType::SessionUsage => "session.usage",
            EventType::SessionDeleted => "session.deleted",
            EventType::SessionThreadCreated => "session.thread_created",
            EventType::SessionThreadStatusRunning => "session.thread_status_running",
            EventType::SessionThreadStatusIdle => "session.thread_status_idle",
            EventType::SessionThreadStatusRescheduled => "session.thread_status_rescheduled",
            EventType::SessionThreadStatusTerminated => "session.thread_status_terminated",
            EventType::SpanModelRequestStart => "span.model_request_start",
            EventType::SpanModelRequestEnd => "span.model_request_end",
            EventType::SpanOutcomeEvaluationStart => "span.outcome_evaluation_start",
            EventType::SpanOutcomeEvaluationOngoing => "span.outcome_evaluation_ongoing",
            EventType::SpanOutcomeEvaluationEnd => "span.outcome_evaluation_end",
            EventType::WorkflowRunCreated => "workflow_run.created",
            EventType::WorkflowRunStatusRunning => "workflow_run.status_running",
            EventType::WorkflowRunStatusIdle => "workflow_run.status_idle",
            EventType::WorkflowRunPhaseStarted => "workflow_run.phase_started",
            EventType::WorkflowRunPhaseEnded => "workflow_run.phase_ended",
            EventType::WorkflowRunStatusEnded => "workflow_run.status_ended",
            EventType::WorkflowRunError => "workflow_run.error",
            EventType::WorkspaceDelta => "x.workspace_delta",
            EventType::ForkOrigin => "x.fork_origin",
            EventType::ModelRequest => "x.model_request",
            EventType::ModelResponse => "x.model_response",
            EventType::ToolStarted => "x.tool_started",
            EventType::AgentConfig => "x.agent_config",
            EventType::Compaction => "x.compaction",
            EventType::SessionResource => "x.session_resource",
            EventType::ServerToolRequests => "x.server_tool_requests",
        }
    }

    /// A stable number for the type: its position in declaration order, the
    /// same as the bincode variant index of the matching `Event`. Stable because
    /// variants are only ever appended.
    pub fn code(self) -> u16 {
        // A fieldless enum's discriminants are 0, 1, 2, ... in declaration order.
        self as u16
    }

    /// The type for a code; `None` for codes no type has (yet).
    pub fn from_code(code: u16) -> Option<EventType> {
        EventType::ALL.get(usize::from(code)).copied()
    }

    /// Whether API clients may see events of this type: false for Logbook's
    /// internal `x.*` events.
    pub fn is_public(self) -> bool {
        match self {
            EventType::UserMessage
            | EventType::UserInterrupt
            | EventType::UserToolConfirmation
            | EventType::UserCustomToolResult
            | EventType::UserToolResult
            | EventType::UserDefineOutcome
            | EventType::SystemMessage
            | EventType::AgentMessage
            | EventType::AgentThinking
            | EventType::AgentToolUse
            | EventType::AgentToolResult
            | EventType::AgentMcpToolUse
            | EventType::AgentMcpToolResult
            | EventType::AgentCustomToolUse
            | EventType::AgentThreadMessageSent
            | EventType::AgentThreadMessageReceived
            | EventType::AgentThreadContextCompacted
            | EventType::SessionStatusRunning
            | EventType::SessionStatusIdle
            | EventType::SessionStatusRescheduled
            | EventType::SessionStatusTerminated
            | EventType::SessionError
            | EventType::SessionUpdated
            | EventType::SessionUsage
            | EventType::SessionDeleted
            | EventType::SessionThreadCreated
            | EventType::SessionThreadStatusRunning
            | EventType::SessionThreadStatusIdle
            | EventType::SessionThreadStatusRescheduled
            | EventType::SessionThreadStatusTerminated
            | EventType::SpanModelRequestStart
            | EventType::SpanModelRequestEnd
            | EventType::SpanOutcomeEvaluationStart
            | EventType::SpanOutcomeEvaluationOngoing
            | EventType::SpanOutcomeEvaluationEnd
            | EventType::WorkflowRunCreated
            | EventType::WorkflowRunStatusRunning
            | EventType::WorkflowRunStatusIdle
            | EventType::WorkflowRunPhaseStarted
            | EventType::WorkflowRunPhaseEnded
            | EventType::WorkflowRunStatusEnded
            | EventType::WorkflowRunError => true,
            EventType::WorkspaceDelta
            | EventType::ForkOrigin
            | EventType::ModelRequest
            | EventType::ModelResponse
            | EventType::ToolStarted
            | EventType::AgentConfig
            | EventType::Compaction => false,
            EventType::SessionResource | EventType::ServerToolRequests => false,
        }
    }

    /// Whether a client may POST events of this type (API reference §4.1).
    pub fn is_input(self) -> bool {
        match self {
            EventType::UserMessage
            | EventType::UserInterrupt
            | EventType::UserToolConfirmation
            | EventType::UserCustomToolResult
            | EventType::UserToolResult
            | EventType::UserDefineOutcome
            | EventType::SystemMessage => true,
            EventType::AgentMessage
            | EventType::AgentThinking
            | EventType::AgentToolUse
            | EventType::AgentToolResult
            | EventType::AgentMcpToolUse
            | EventType::AgentMcpToolResult
            | EventType::AgentCustomToolUse
            | EventType::AgentThreadMessageSent
            | EventType::AgentThreadMessageReceived
            | EventType::AgentThreadContextCompacted
            | EventType::SessionStatusRunning
            | EventType::SessionStatusIdle
            | EventType::SessionStatusRescheduled
            | EventType::SessionStatusTerminated
            | EventType::SessionError
            | EventType::SessionUpdated
            | EventType::SessionUsage
            | EventType::SessionDeleted
            | EventType::SessionThreadCreated
            | EventType::SessionThreadStatusRunning
            | EventType::SessionThreadStatusIdle
            | EventType::SessionThreadStatusRescheduled
            | EventType::SessionThreadStatusTerminated
            | EventType::SpanModelRequestStart
            | EventType::SpanModelRequestEnd
            | EventType::SpanOutcomeEvaluationStart
            | EventType::SpanOutcomeEvaluationOngoing
            | EventType::SpanOutcomeEvaluationEnd
            | EventType::WorkflowRunCreated
            | EventType::WorkflowRunStatusRunning
            | EventType::WorkflowRunStatusIdle
            | EventType::WorkflowRunPhaseStarted
            | EventType::WorkflowRunPhaseEnded
            | EventType::WorkflowRunStatusEnded
            | EventType::WorkflowRunError
            | EventType::WorkspaceDelta
            | EventType::ForkOrigin
            | EventType::ModelRequest
            | EventType::ModelResponse
            | EventType::ToolStarted
            | EventType::AgentConfig
            | EventType::Compaction => false,
            EventType::SessionResource | EventType::ServerToolRequests => false,
        }
    }

    /// The input kind of this type, if a client may POST it. Matching on the
    /// result is exhaustive over the input events only.
    pub fn as_input(self) -> Option<InputType> {
        match self {
            EventType::UserMessage => Some(InputType::UserMessage),
            EventType::UserInterrupt => Some(InputType::UserInterrupt),
            EventType::UserToolConfirmation => Some(InputType::UserToolConfirmation),
            EventType::UserCustomToolResult => Some(InputType::UserCustomToolResult),
            EventType::UserToolResult => Some(InputType::UserToolResult),
            EventType::UserDefineOutcome => Some(InputType::UserDefineOutcome),
            EventType::SystemMessage => Some(InputType::SystemMessage),
            EventType::AgentMessage
            | EventType::AgentThinking
            | EventType::AgentToolUse
            | EventType::AgentToolResult
            | EventType::AgentMcpToolUse
            | EventType::AgentMcpToolResult
            | EventType::AgentCustomToolUse
            | EventType::AgentThreadMessageSent
            | EventType::AgentThreadMessageReceived
            | EventType::AgentThreadContextCompacted
            | EventType::SessionStatusRunning
            | EventType::SessionStatusIdle
            | EventType::SessionStatusRescheduled
            | EventType::SessionStatusTerminated
            | EventType::SessionError
            | EventType::SessionUpdated
            | EventType::SessionUsage
            | EventType::SessionDeleted
            | EventType::SessionThreadCreated
            | EventType::SessionThreadStatusRunning
            | EventType::SessionThreadStatusIdle
            | EventType::SessionThreadStatusRescheduled
            | EventType::SessionThreadStatusTerminated
            | EventType::SpanModelRequestStart
            | EventType::SpanModelRequestEnd
            | EventType::SpanOutcomeEvaluationStart
            | EventType::SpanOutcomeEvaluationOngoing
            | EventType::SpanOutcomeEvaluationEnd
            | EventType::WorkflowRunCreated
            | EventType::WorkflowRunStatusRunning
            | EventType::WorkflowRunStatusIdle
            | EventType::WorkflowRunPhaseStarted
            | EventType::WorkflowRunPhaseEnded
            | EventType::WorkflowRunStatusEnded
            | EventType::WorkflowRunError
            | EventType::WorkspaceDelta
            | EventType::ForkOrigin
            | EventType::ModelRequest
            | EventType::ModelResponse
            | EventType::ToolStarted
            | EventType::AgentConfig
            | EventType::Compaction => None,
            EventType::SessionResource | EventType::ServerToolRequests => None,
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventType {
    type Err = UnknownEventType;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .iter()
            .copied()
            .find(|event_type| event_type.as_str() == input)
            .ok_or_else(|| UnknownEventType { input: input.to_owned() })
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The event types a client may send (API reference §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputType {
    UserMessage,
    UserInterrupt,
    UserToolConfirmation,
    UserCustomToolResult,
    UserToolResult,
    UserDefineOutcome,
    SystemMessage,
}
