//! Logbook's internal events (`x.*`): facts the log needs for replay, fork and
//! accounting that the public API has no event for.
//!
//! They are never shown to API clients (the server filters on
//! [`EventType::is_public`](crate::event::EventType::is_public)); their JSON form
//! exists for debugging and export only, so it follows the same conventions but
//! promises no compatibility with anything outside Logbook. Blob contents live in
//! the store; these events carry only their hashes.

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::event::span::ModelUsage;
use crate::id::{EventId, FileId, SessionId, SessionResourceId};
use crate::json::Json;

/// `x.workspace_delta`: how the workspace changed after a tool call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct WorkspaceDelta {
    /// The `agent.tool_use` (or other tool-call) event that caused the change;
    /// `None` for changes with no single cause (for example, a resource mount).
    #[serde(default)]
    pub tool_use_id: Option<EventId>,
    /// In the order they were applied.
    pub changes: Vec<WorkspaceChange>,
}

/// One changed path of the workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct WorkspaceChange {
    /// The absolute sandbox path (`/workspace/src/main.rs`,
    /// `/mnt/session/uploads/data.csv`, `/mnt/session/outputs/report.md`).
    pub path: String,
    pub change: FileChange,
}

/// What happened to a path, tagged by `type`.
///
/// # Important
/// Variant order is the canonical encoding: append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FileChange {
    /// The path now holds a regular file: its blake3 hash (hex in JSON), size
    /// in bytes and Unix mode bits.
    Written {
        #[serde(with = "hex32")]
        blob: [u8; 32],
        size: u64,
        mode: u32,
    },
    /// The path no longer exists.
    Removed,
    /// The path is now a symbolic link to `target`.
    Symlink { target: String },
}

/// `x.fork_origin`: the first event of a forked session's own tail, naming the
/// point of the parent's log the fork continues from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct ForkOrigin {
    pub parent_session_id: SessionId,
    /// The seq of the parent's last event that the fork shares.
    pub parent_seq: u64,
    /// The parent's chain hash at `parent_seq` (hex in JSON), so a verifier can
    /// check the shared prefix without trusting the fork.
    #[serde(with = "hex32")]
    pub parent_chain_hash: [u8; 32],
}

/// `x.model_request`: provider-side metadata of one model call, recorded next
/// to the public `span.model_request_*` pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct ModelRequest {
    /// The `span.model_request_start` event of this call.
    pub model_request_start_id: EventId,
    /// The model id sent to the provider (`claude-sonnet-4-6`, ...).
    pub model: String,
    /// The provider's request id, when it returned one.
    #[serde(default)]
    pub request_id: Option<String>,
    /// The provider's stop reason (`end_turn`, `tool_use`, ...), if the call
    /// finished.
    #[serde(default)]
    pub stop_reason: Option<String>,
    pub usage: ModelUsage,
    pub duration_ms: u64,
    /// 1 for the first try, counting retries of the same request.
    pub attempt: u32,
}

/// `x.model_response`: the assistant content of one model call exactly as the
/// provider returned it (text, thinking with its signature, tool_use blocks
/// with the provider's ids, server tool blocks), which the context projection
/// replays to the model on the next call. The public `agent.*` events are the
/// API's view of the same response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct ModelResponse {
    /// The `span.model_request_start` event of this call.
    pub model_request_start_id: EventId,
    /// The content blocks, as a JSON array.
    pub content: Json,
    /// Each tool_use block's provider id and the event that exposes it.
    pub tool_uses: Vec<ToolUseLink>,
}

/// A provider tool-use id (`toolu_...`) and the `agent.tool_use`,
/// `agent.mcp_tool_use` or `agent.custom_tool_use` event made from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct ToolUseLink {
    pub provider_id: String,
    pub event_id: EventId,
}

/// `x.server_tool_requests`: the provider's count of server tool uses
/// (`usage.server_tool_use`) in one model call, recorded next to its
/// `x.model_request` when the provider reported any. Web searches are billed
/// per request, so a session's `list_cost` and `usage.server_tool_use` are
/// sums of these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct ServerToolRequests {
    /// The `span.model_request_start` event of this call.
    pub model_request_start_id: EventId,
    pub web_search_requests: u64,
    pub web_fetch_requests: u64,
}

/// `x.tool_started`: the runner is about to execute these tool calls. A call
/// that started and has no result when a crashed server comes back gets an
/// error result: a side effect is never run twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct ToolStarted {
    pub tool_use_ids: Vec<EventId>,
}

/// `x.agent_config`: the agent and the request settings the model calls after
/// it are made with. The runner records it before a model call whenever it
/// differs from the last one recorded, so the request any model call sent can
/// be rebuilt from the log alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct AgentConfig {
    /// The session's resolved agent (model, system, tools, MCP servers,
    /// skills) as the API shows it.
    pub agent: Json,
    /// Request settings outside the agent (`max_tokens`, thinking, extra
    /// system text, extra tool definitions such as MCP tools).
    pub options: Json,
}

/// `x.compaction`: a summary the context projection uses in place of the
/// conversation up to `through_seq`. Recorded next to the public
/// `agent.thread_context_compacted`; nothing is removed from the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct Compaction {
    /// The text the model sees in place of the replaced conversation. Empty
    /// when nothing could be cut (the context is then unchanged).
    pub summary: String,
    /// The last seq whose conversation the summary replaces.
    pub through_seq: u64,
    /// Estimated tokens of the context before and after.
    pub tokens_before: u64,
    pub tokens_after: u64,
    /// The model that wrote the summary; `None` when the older turns were
    /// elided mechanically (the model call failed).
    #[serde(default)]
    pub model: Option<String>,
    /// Tokens the summarizing call used (billed like any model call): for a
    /// call that failed, what the provider reported before it failed.
    pub usage: ModelUsage,
}

/// `x.session_resource`: a resource of the session was attached, changed or
/// detached. The log's record of what the session's `resources` are, so that
/// the list, and a fork at any point, follow from the log. Secrets (a
/// repository's token) are never part of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct SessionResource {
    pub resource_id: SessionResourceId,
    pub change: ResourceChange,
}

/// What happened to a session resource, tagged by `type`.
///
/// # Important
/// Variant order is the canonical encoding: append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResourceChange {
    /// The resource was attached (at session creation or later).
    Attached { resource: AttachedResource },
    /// The resource was removed from the session.
    Detached,
    /// A repository's authorization token was replaced. The token itself is
    /// kept out of the log.
    TokenRotated,
    /// A repository was cloned into the workspace at this commit: the
    /// repository's state as of this point of the log.
    RepositoryCloned { commit: String },
}

/// A resource as attached, tagged by `type` like the API's resources.
///
/// # Important
/// Variant order is the canonical encoding: append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AttachedResource {
    /// A Files API file, materialized read-only at `mount_path` (an absolute
    /// sandbox path under `/mnt/session/uploads`).
    File { file_id: FileId, mount_path: String },
    /// A git repository cloned at `mount_path` (an absolute sandbox path
    /// under `/workspace`).
    GithubRepository {
        url: String,
        mount_path: String,
        #[serde(default)]
        checkout: Option<RepositoryCheckout>,
    },
}

/// What to check out of a repository, tagged by `type`.
///
/// # Important
/// Variant order is the canonical encoding: append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RepositoryCheckout {
    Branch { name: String },
    Commit { sha: String },
}

/// serde for 32-byte hashes as 64 lowercase hex characters.
mod hex32 {
    use std::fmt::Write as _;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8; 32], serializer: S) -> Result<S::Ok, S::Error> {
        let mut text = String::with_capacity(64);
        for byte in bytes {
            // Writing to a String cannot fail.
            let _ = write!(text, "{byte:02x}");
        }
        serializer.serialize_str(&text)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 32], D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format_args!("expected 64 lowercase hex characters, got {text:?}")))
    }

    fn parse(text: &str) -> Option<[u8; 32]> {
        let digits = text.as_bytes();
        if digits.len() != 64 {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            let [high, low] = pair else { return None };
            *byte = (nibble(*high)? << 4) | nibble(*low)?;
        }
        Some(bytes)
    }

    fn nibble(digit: u8) -> Option<u8> {
        match digit {
            b'0'..=b'9' => Some(digit - b'0'),
            b'a'..=b'f' => Some(digit - b'a' + 10),
            _ => None,
        }
    }
}
