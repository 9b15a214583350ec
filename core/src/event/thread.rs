//! Events of multi-agent sessions (preview): threads being created and changing
//! status (`session.thread_*`) and agents messaging each other
//! (`agent.thread_*`), API reference §4.2.
//!
//! A thread's events are written to its own stream and cross-posted to the
//! primary one; which stream an event belongs to is the envelope's business, not
//! this module's.

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::event::content::ContentBlock;
use crate::event::session::{StopDetails, StopReason};
use crate::id::{ThreadId, WorkflowRunId};

/// `agent.thread_message_sent`: written to the sender's stream when an agent
/// messages another thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct AgentThreadMessageSent {
    pub to_session_thread_id: ThreadId,
    /// The API allows text, image, document and redacted blocks here.
    pub content: Vec<ContentBlock>,
    /// The receiving agent's name; `None` when sent to the primary agent.
    #[serde(default)]
    pub to_agent_name: Option<String>,
}

/// `agent.thread_message_received`: written to the receiver's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct AgentThreadMessageReceived {
    pub from_session_thread_id: ThreadId,
    /// The API allows text, image, document and redacted blocks here.
    pub content: Vec<ContentBlock>,
    /// The sending agent's name; `None` when sent by the primary agent.
    #[serde(default)]
    pub from_agent_name: Option<String>,
}

/// `agent.thread_context_compacted`: a thread's context was compacted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct AgentThreadContextCompacted {}

/// `session.thread_created`: a child thread was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct SessionThreadCreated {
    pub session_thread_id: ThreadId,
    /// The name of the callable agent the thread runs.
    pub agent_name: String,
    /// The workflow run that started the thread, if any.
    #[serde(default)]
    pub workflow_run_id: Option<WorkflowRunId>,
}

/// `session.thread_status_running`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct SessionThreadStatusRunning {
    pub session_thread_id: ThreadId,
    pub agent_name: String,
}

/// `session.thread_status_idle`: a thread yielded and waits for input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct SessionThreadStatusIdle {
    pub session_thread_id: ThreadId,
    pub agent_name: String,
    pub stop_reason: StopReason,
    #[serde(default)]
    pub stop_details: Option<StopDetails>,
}

/// `session.thread_status_rescheduled`: a thread hit a transient error and
/// retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct SessionThreadStatusRescheduled {
    pub session_thread_id: ThreadId,
    pub agent_name: String,
}

/// `session.thread_status_terminated`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct SessionThreadStatusTerminated {
    pub session_thread_id: ThreadId,
    pub agent_name: String,
}
