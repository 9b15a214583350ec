//! `agent.*` events (API reference §4.2): what the model and its harness
//! produced: messages, thinking markers, tool calls and their results.
//!
//! Agent-to-agent messages of multi-agent sessions live in `thread.rs`. This
//! module records decisions (a tool call's evaluated permission); it does not
//! make them.

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::event::content::ContentBlock;
use crate::id::{EventId, ThreadId};
use crate::json::Json;

/// `agent.message`: model output shown to the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct AgentMessage {
    /// The API allows text and redacted blocks here.
    pub content: Vec<ContentBlock>,
}

/// `agent.thinking`: a progress signal that the model is thinking; it carries
/// no content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct AgentThinking {}

/// `agent.tool_use`: the agent called a built-in tool (`bash`, `read`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct AgentToolUse {
    /// The built-in tool's name.
    pub name: String,
    /// The tool's input, a JSON object (schemas in API reference §4.4).
    pub input: Json,
    /// What the permission policy decided; `ask` makes the session wait for a
    /// `user.tool_confirmation`.
    #[serde(default)]
    pub evaluated_permission: Option<EvaluatedPermission>,
    /// How the decision was reached; `None` when the call was refused before
    /// any policy applied (for example, the tool is not enabled).
    #[serde(default)]
    pub evaluation: Option<ToolEvaluation>,
    /// Set when this event was cross-posted from a subagent's thread.
    #[serde(default)]
    pub session_thread_id: Option<ThreadId>,
}

/// `agent.tool_result`: the result of a built-in tool call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct AgentToolResult {
    /// The `agent.tool_use` event this answers.
    pub tool_use_id: EventId,
    /// The API allows text, image, document and search_result blocks here.
    #[serde(default)]
    pub content: Option<Vec<ContentBlock>>,
    #[serde(default)]
    pub is_error: Option<bool>,
}

/// `agent.mcp_tool_use`: the agent called a tool of an MCP server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct AgentMcpToolUse {
    /// The tool's name on its server.
    pub name: String,
    /// The `mcp_servers[].name` of the agent that provides the tool.
    pub mcp_server_name: String,
    /// The tool's input, a JSON object.
    pub input: Json,
    #[serde(default)]
    pub evaluated_permission: Option<EvaluatedPermission>,
    #[serde(default)]
    pub evaluation: Option<ToolEvaluation>,
    /// Set when this event was cross-posted from a subagent's thread.
    #[serde(default)]
    pub session_thread_id: Option<ThreadId>,
}

/// `agent.mcp_tool_result`: the result of an MCP tool call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct AgentMcpToolResult {
    /// The `agent.mcp_tool_use` event this answers.
    pub mcp_tool_use_id: EventId,
    /// The API allows text, image, document and search_result blocks here.
    #[serde(default)]
    pub content: Option<Vec<ContentBlock>>,
    #[serde(default)]
    pub is_error: Option<bool>,
}

/// `agent.custom_tool_use`: the agent called a custom tool, which the client
/// runs and answers with `user.custom_tool_result`. Not subject to permission
/// policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct AgentCustomToolUse {
    /// The custom tool's name.
    pub name: String,
    /// The tool's input, a JSON object matching the tool's `input_schema`.
    pub input: Json,
    /// Set when this event was cross-posted from a subagent's thread.
    #[serde(default)]
    pub session_thread_id: Option<ThreadId>,
}

/// The outcome of the permission policy for one tool call, a bare string in
/// JSON (`"allow"`, `"ask"`, `"deny"`).
///
/// # Important
/// Variant order is the canonical encoding: append only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "lowercase")]
pub enum EvaluatedPermission {
    Allow,
    Ask,
    Deny,
}

/// Which permission policy judged a tool call, tagged by `type`.
///
/// # Important
/// Variant order is the canonical encoding: append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToolEvaluation {
    /// The `always_allow` policy.
    AlwaysAllow,
    /// The `always_ask` policy.
    AlwaysAsk,
    /// The `auto` policy: the server judged the call itself.
    Auto { evaluated_permission: AutoPermission },
}

/// The verdict of the `auto` permission policy, tagged by `type`.
///
/// # Important
/// Variant order is the canonical encoding: append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AutoPermission {
    Allow,
    /// `reason_code` is open-ended (`indeterminate`, `high_risk`, ...).
    Ask {
        reason_code: String,
    },
    Deny {
        reason_code: String,
    },
}

impl AutoPermission {
    /// The plain permission this verdict amounts to.
    pub fn permission(&self) -> EvaluatedPermission {
        match self {
            AutoPermission::Allow => EvaluatedPermission::Allow,
            AutoPermission::Ask { .. } => EvaluatedPermission::Ask,
            AutoPermission::Deny { .. } => EvaluatedPermission::Deny,
        }
    }
}
