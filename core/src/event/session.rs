//! `session.*` lifecycle events of the session as a whole (API reference §4.2),
//! and the shapes they share: stop reasons, the session error union, usage
//! snapshots and budgets.
//!
//! Per-thread lifecycle events (`session.thread_*`) live in `thread.rs`. These
//! types record what happened; the status machine that decides which event comes
//! next lives in the server and the projections in `replay`.

use std::collections::BTreeMap;

use bincode::{Decode, Encode};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::id::EventId;
use crate::json::Json;

/// `session.status_running`: the session started working.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct SessionStatusRunning {}

/// `session.status_idle`: the session stopped and waits for input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct SessionStatusIdle {
    pub stop_reason: StopReason,
    #[serde(default)]
    pub stop_details: Option<StopDetails>,
}

/// `session.status_rescheduled`: a transient error; the session retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct SessionStatusRescheduled {}

/// `session.status_terminated`: the session ended, by error or completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct SessionStatusTerminated {}

/// `session.error`: something went wrong while the session ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct SessionError {
    pub error: SessionErrorDetail,
}

/// `session.updated`: an update request changed at least one field.
///
/// Unlike every other event, absent fields are *omitted* from the JSON rather
/// than written as `null`, because here `null` has its own meaning: the field
/// was cleared. `None` means "unchanged"; `Some(None)` means "cleared".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct SessionUpdated {
    /// The full agent snapshot (the Session's `agent`), present only when
    /// tools or MCP servers changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present_or_null")]
    pub budget: Option<Option<Budget>>,
    /// The full metadata after the update. The API omits the field when the
    /// update cleared metadata to empty; Logbook records an empty map instead,
    /// so that the log alone says what the metadata is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present_or_null")]
    pub title: Option<Option<String>>,
}

/// `session.usage`: a snapshot of the session's cumulative usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct SessionUsage {
    pub usage: UsageSnapshot,
    #[serde(default)]
    pub budget: Option<Budget>,
}

/// `session.deleted`: the session was deleted; every stream ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct SessionDeleted {}

/// Why a session (or thread) went idle, tagged by `type`.
///
/// # Important
/// Variant order is the canonical encoding: append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StopReason {
    /// The agent finished its turn.
    EndTurn,
    /// Tool calls wait for the client: the ids of the `agent.tool_use`,
    /// `agent.mcp_tool_use` and `agent.custom_tool_use` events still open.
    RequiresAction {
        event_ids: Vec<EventId>,
    },
    RetriesExhausted,
    BudgetReached,
    Refusal,
}

/// Details of a stop, tagged by `type`.
///
/// # Important
/// Variant order is the canonical encoding: append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StopDetails {
    /// `category` is open-ended (`cyber`, `bio`, `frontier_llm`,
    /// `reasoning_extraction`, `general_harms`, ...).
    Refusal {
        #[serde(default)]
        category: Option<String>,
        #[serde(default)]
        explanation: Option<String>,
    },
}

/// The `error` of a `session.error` event, tagged by `type`. Every variant
/// carries a human-readable `message` and a [`RetryStatus`].
///
/// # Important
/// Variant order is the canonical encoding: append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SessionErrorDetail {
    UnknownError {
        message: String,
        retry_status: RetryStatus,
    },
    ModelOverloadedError {
        message: String,
        retry_status: RetryStatus,
    },
    ModelRateLimitedError {
        message: String,
        retry_status: RetryStatus,
    },
    ModelRequestFailedError {
        message: String,
        retry_status: RetryStatus,
    },
    McpConnectionFailedError {
        message: String,
        retry_status: RetryStatus,
        mcp_server_name: String,
    },
    McpAuthenticationFailedError {
        message: String,
        retry_status: RetryStatus,
        mcp_server_name: String,
    },
    BillingError {
        message: String,
        retry_status: RetryStatus,
    },
    CredentialHostUnreachableError {
        message: String,
        retry_status: RetryStatus,
        credential_id: String,
        vault_id: String,
    },
    /// Ends the turn with `retries_exhausted`.
    ToolUseLimitReachedError {
        message: String,
        retry_status: RetryStatus,
    },
    /// Ends the turn with `retries_exhausted`.
    CompactionLimitReachedError {
        message: String,
        retry_status: RetryStatus,
    },
    /// The repository errors are always `retrying`: the session continues
    /// without the repository. `repository_url` is `None` when unknown.
    RepositoryAuthenticationError {
        message: String,
        retry_status: RetryStatus,
        #[serde(default)]
        repository_url: Option<String>,
    },
    RepositoryForbiddenError {
        message: String,
        retry_status: RetryStatus,
        #[serde(default)]
        repository_url: Option<String>,
    },
    RepositoryNotFoundError {
        message: String,
        retry_status: RetryStatus,
        #[serde(default)]
        repository_url: Option<String>,
    },
    RepositoryCheckoutError {
        message: String,
        retry_status: RetryStatus,
        #[serde(default)]
        repository_url: Option<String>,
    },
    RepositoryCloneError {
        message: String,
        retry_status: RetryStatus,
        #[serde(default)]
        repository_url: Option<String>,
    },
}

/// What happens after a session error, tagged by `type`.
///
/// # Important
/// Variant order is the canonical encoding: append only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RetryStatus {
    /// The server retries (and may report the error again).
    Retrying,
    /// The turn is dead, queued inputs are flushed, the session goes idle.
    Exhausted,
    /// The session will terminate.
    Terminal,
}

/// A spend ceiling, tagged by `type`.
///
/// # Important
/// Variant order is the canonical encoding: append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Budget {
    /// Stop issuing model requests once the list cost reaches `max_list_cost`.
    Limit { max_list_cost: Money },
}

/// A monetary amount. `amount` is a decimal string in minor units (`"2500"`),
/// as the API sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct Money {
    pub amount: String,
    pub currency: String,
}

/// A session's cumulative usage (the Session object's `usage`); every field
/// is optional in the API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct UsageSnapshot {
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    pub cache_creation: Option<CacheCreationUsage>,
    #[serde(default)]
    pub server_tool_use: Option<ServerToolUsage>,
    /// Time with at least one thread running.
    #[serde(default)]
    pub active_seconds: Option<Millis>,
    #[serde(default)]
    pub list_cost: Option<Money>,
}

/// Prompt-cache creation tokens by cache lifetime.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct CacheCreationUsage {
    #[serde(default)]
    pub ephemeral_5m_input_tokens: Option<u64>,
    #[serde(default)]
    pub ephemeral_1h_input_tokens: Option<u64>,
}

/// Server-executed tool calls by tool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct ServerToolUsage {
    #[serde(default)]
    pub web_search_requests: Option<u64>,
    #[serde(default)]
    pub web_fetch_requests: Option<u64>,
}

/// A duration in whole milliseconds, written in JSON as the API's fractional
/// seconds (`1.5`).
///
/// The log holds no floats (they have no canonical bytes and no `Eq`), so the
/// API's float seconds are rounded to the millisecond on the way in. Values
/// below [`Millis::EXACT_JSON_MAX`] survive a JSON round trip exactly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct Millis(pub u64);

impl SessionErrorDetail {
    pub fn message(&self) -> &str {
        match self {
            SessionErrorDetail::UnknownError { message, .. }
            | SessionErrorDetail::ModelOverloadedError { message, .. }
            | SessionErrorDetail::ModelRateLimitedError { message, .. }
            | SessionErrorDetail::ModelRequestFailedError { message, .. }
            | SessionErrorDetail::McpConnectionFailedError { message, .. }
            | SessionErrorDetail::McpAuthenticationFailedError { message, .. }
            | SessionErrorDetail::BillingError { message, .. }
            | SessionErrorDetail::CredentialHostUnreachableError { message, .. }
            | SessionErrorDetail::ToolUseLimitReachedError { message, .. }
            | SessionErrorDetail::CompactionLimitReachedError { message, .. }
            | SessionErrorDetail::RepositoryAuthenticationError { message, .. }
            | SessionErrorDetail::RepositoryForbiddenError { message, .. }
            | SessionErrorDetail::RepositoryNotFoundError { message, .. }
            | SessionErrorDetail::RepositoryCheckoutError { message, .. }
            | SessionErrorDetail::RepositoryCloneError { message, .. } => message,
        }
    }

    pub fn retry_status(&self) -> RetryStatus {
        match self {
            SessionErrorDetail::UnknownError { retry_status, .. }
            | SessionErrorDetail::ModelOverloadedError { retry_status, .. }
            | SessionErrorDetail::ModelRateLimitedError { retry_status, .. }
            | SessionErrorDetail::ModelRequestFailedError { retry_status, .. }
            | SessionErrorDetail::McpConnectionFailedError { retry_status, .. }
            | SessionErrorDetail::McpAuthenticationFailedError { retry_status, .. }
            | SessionErrorDetail::BillingError { retry_status, .. }
            | SessionErrorDetail::CredentialHostUnreachableError { retry_status, .. }
            | SessionErrorDetail::ToolUseLimitReachedError { retry_status, .. }
            | SessionErrorDetail::CompactionLimitReachedError { retry_status, .. }
            | SessionErrorDetail::RepositoryAuthenticationError { retry_status, .. }
            | SessionErrorDetail::RepositoryForbiddenError { retry_status, .. }
            | SessionErrorDetail::RepositoryNotFoundError { retry_status, .. }
            | SessionErrorDetail::RepositoryCheckoutError { retry_status, .. }
            | SessionErrorDetail::RepositoryCloneError { retry_status, .. } => *retry_status,
        }
    }

    /// Whether this error is about preparing a repository resource (the
    /// session continues without it), not about the agent loop.
    pub fn is_repository_error(&self) -> bool {
        match self {
            SessionErrorDetail::RepositoryAuthenticationError { .. }
            | SessionErrorDetail::RepositoryForbiddenError { .. }
            | SessionErrorDetail::RepositoryNotFoundError { .. }
            | SessionErrorDetail::RepositoryCheckoutError { .. }
            | SessionErrorDetail::RepositoryCloneError { .. } => true,
            SessionErrorDetail::UnknownError { .. }
            | SessionErrorDetail::ModelOverloadedError { .. }
            | SessionErrorDetail::ModelRateLimitedError { .. }
            | SessionErrorDetail::ModelRequestFailedError { .. }
            | SessionErrorDetail::McpConnectionFailedError { .. }
            | SessionErrorDetail::McpAuthenticationFailedError { .. }
            | SessionErrorDetail::BillingError { .. }
            | SessionErrorDetail::CredentialHostUnreachableError { .. }
            | SessionErrorDetail::ToolUseLimitReachedError { .. }
            | SessionErrorDetail::CompactionLimitReachedError { .. } => false,
        }
    }

    /// Whether this error is about connecting to an MCP server (the session
    /// continues without its tools), not a decision of the agent loop.
    pub fn is_mcp_error(&self) -> bool {
        match self {
            SessionErrorDetail::McpConnectionFailedError { .. }
            | SessionErrorDetail::McpAuthenticationFailedError { .. } => true,
            SessionErrorDetail::UnknownError { .. }
            | SessionErrorDetail::ModelOverloadedError { .. }
            | SessionErrorDetail::ModelRateLimitedError { .. }
            | SessionErrorDetail::ModelRequestFailedError { .. }
            | SessionErrorDetail::BillingError { .. }
            | SessionErrorDetail::CredentialHostUnreachableError { .. }
            | SessionErrorDetail::ToolUseLimitReachedError { .. }
            | SessionErrorDetail::CompactionLimitReachedError { .. }
            | SessionErrorDetail::RepositoryAuthenticationError { .. }
            | SessionErrorDetail::RepositoryForbiddenError { .. }
            | SessionErrorDetail::RepositoryNotFoundError { .. }
            | SessionErrorDetail::RepositoryCheckoutError { .. }
            | SessionErrorDetail::RepositoryCloneError { .. } => false,
        }
    }
}

impl Millis {
    /// Below this (2^40 ms, about 34 years) the seconds float of the JSON form
    /// converts back to the same number of milliseconds.
    pub const EXACT_JSON_MAX: u64 = 1 << 40;

    /// Rounds to the nearest millisecond; `None` for negative or non-finite
    /// input. Values beyond `u64::MAX` ms saturate.
    pub fn from_seconds(seconds: f64) -> Option<Millis> {
        let millis = (seconds * 1000.0).round();
        if !millis.is_finite() || millis < 0.0 {
            return None;
        }
        // `as` saturates for floats beyond u64::MAX; it never panics.
        Some(Millis(millis as u64))
    }

    pub fn as_seconds(self) -> f64 {
        self.0 as f64 / 1000.0
    }
}

impl Serialize for Millis {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.as_seconds())
    }
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let seconds = f64::deserialize(deserializer)?;
        Millis::from_seconds(seconds).ok_or_else(|| {
            serde::de::Error::custom(format_args!("expected a non-negative number of seconds, got {seconds}"))
        })
    }
}

/// Reads a field that is present (possibly `null`) as `Some(..)`; with
/// `#[serde(default)]` an absent field stays `None`.
fn present_or_null<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}
