//! Input events (API reference §4.1): what a client may POST to a session,
//! `user.*` and `system.message`, in the form in which they are persisted.
//!
//! The persisted form can differ from what the client sent: the server fills in
//! `outcome_id` on `user.define_outcome` and may set `session_thread_id` to the
//! thread it routed an event to. Checking the request-side rules (which content
//! blocks are allowed, `deny_message` only with `deny`, at most one
//! `system.message` per request) is the server's job, not this module's.

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::event::content::ContentBlock;
use crate::id::{EventId, OutcomeId, ThreadId};

/// `user.message`: a new turn, or steering while the agent runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct UserMessage {
    /// The API allows text, image, document and redacted blocks here.
    pub content: Vec<ContentBlock>,
}

/// `user.interrupt`: stop the current work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct UserInterrupt {
    /// The thread to interrupt; `None` interrupts every non-archived thread.
    #[serde(default)]
    pub session_thread_id: Option<ThreadId>,
}

/// `user.tool_confirmation`: the answer to a tool call that asked for
/// permission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct UserToolConfirmation {
    /// The `agent.tool_use` or `agent.mcp_tool_use` event being answered.
    pub tool_use_id: EventId,
    pub result: ConfirmationResult,
    /// Context for a denial; the API allows it only with `deny`.
    #[serde(default)]
    pub deny_message: Option<String>,
    /// The subagent thread the confirmation was routed to; `None` for the
    /// primary thread.
    #[serde(default)]
    pub session_thread_id: Option<ThreadId>,
}

/// `user.custom_tool_result`: the client's answer to `agent.custom_tool_use`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct UserCustomToolResult {
    /// The `agent.custom_tool_use` event being answered.
    pub custom_tool_use_id: EventId,
    /// The API allows text, image, document and search_result blocks here.
    #[serde(default)]
    pub content: Option<Vec<ContentBlock>>,
    #[serde(default)]
    pub is_error: Option<bool>,
    /// The subagent thread the result was routed to; `None` for the primary
    /// thread.
    #[serde(default)]
    pub session_thread_id: Option<ThreadId>,
}

/// `user.tool_result`: the result of a built-in tool that the client ran
/// itself. Valid only on self-hosted environments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct UserToolResult {
    /// The `agent.tool_use` event being answered.
    pub tool_use_id: EventId,
    /// The API allows text, image, document and search_result blocks here.
    #[serde(default)]
    pub content: Option<Vec<ContentBlock>>,
    #[serde(default)]
    pub is_error: Option<bool>,
    /// The subagent thread the result is routed to (copied from the tool use).
    #[serde(default)]
    pub session_thread_id: Option<ThreadId>,
}

/// `user.define_outcome` (preview), as persisted: the client's request plus the
/// `outcome_id` the server assigned. A client's request lacks `outcome_id`, so
/// it does not deserialize into this type; the server reads it into its own
/// request type and builds this event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct UserDefineOutcome {
    pub outcome_id: OutcomeId,
    /// What the agent should produce.
    pub description: String,
    pub rubric: Rubric,
    /// Evaluate-then-revise cycles before giving up (API default 3, max 20).
    #[serde(default)]
    pub max_iterations: Option<u32>,
}

/// `system.message`: a `role: system` turn appended to the conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct SystemMessage {
    /// The API allows text blocks only here.
    pub content: Vec<ContentBlock>,
}

/// A client's decision on a tool call that asked for permission.
///
/// # Important
/// Variant order is the canonical encoding: append only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "lowercase")]
pub enum ConfirmationResult {
    Allow,
    Deny,
}

/// How an outcome is graded.
///
/// # Important
/// Variant order is the canonical encoding: append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Rubric {
    /// Inline rubric text (the API allows up to 262,144 characters).
    Text { content: String },
    /// A rubric stored in the Files API (a string for the same reason as
    /// [`ImageSource::File`](crate::event::ImageSource::File)).
    File { file_id: String },
}
