//! `workflow_run.*` events (preview, API reference §4.2): the life of a
//! workflow run, a plan program that an agent of a multi-agent session writes
//! and the server runs in phases.
//!
//! Phase ids are the API's open-ended strings (`wrph_...`); this module does not
//! check that a phase named by `phase_started` was declared by `created`.

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::id::{EventId, WorkflowRunId};

/// `workflow_run.created`: a run was created; emitted before its other events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct WorkflowRunCreated {
    pub workflow_run_id: WorkflowRunId,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// The phases the plan declares, in the plan's order; may be empty.
    pub phases: Vec<WorkflowRunPhase>,
}

/// `workflow_run.status_running`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct WorkflowRunStatusRunning {
    pub workflow_run_id: WorkflowRunId,
}

/// `workflow_run.status_idle`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct WorkflowRunStatusIdle {
    pub workflow_run_id: WorkflowRunId,
}

/// `workflow_run.phase_started`: the plan entered a phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct WorkflowRunPhaseStarted {
    pub workflow_run_id: WorkflowRunId,
    /// A phase id from the run's `workflow_run.created`.
    pub workflow_run_phase_id: String,
}

/// `workflow_run.phase_ended`: the plan left a phase, or the run's end closed
/// it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct WorkflowRunPhaseEnded {
    pub workflow_run_id: WorkflowRunId,
    pub workflow_run_phase_id: String,
    /// The `workflow_run.phase_started` event that opened the phase.
    pub phase_started_id: EventId,
}

/// `workflow_run.status_ended`: the run ended; its last event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct WorkflowRunStatusEnded {
    pub workflow_run_id: WorkflowRunId,
    pub result: WorkflowRunResult,
}

/// `workflow_run.error`: a run met an error, or an error kept a run from
/// being created (then `workflow_run_id` is `None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct WorkflowRunError {
    #[serde(default)]
    pub workflow_run_id: Option<WorkflowRunId>,
    pub error: WorkflowRunErrorDetail,
}

/// A phase that a run's plan declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct WorkflowRunPhase {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
}

/// How a run ended, tagged by `type`.
///
/// # Important
/// Variant order is the canonical encoding: append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkflowRunResult {
    Completed,
    Stopped,
    Error { error: WorkflowRunErrorDetail },
}

/// Why a run did not finish (or was not created), tagged by `type`. The
/// message is written by the server and never quotes the run's content.
///
/// # Important
/// Variant order is the canonical encoding: append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkflowRunErrorDetail {
    TimeoutError { message: String },
    ProgramError { message: String },
    UnknownError { message: String },
    ThreadLimitError { message: String },
    MaxWorkflowRunsError { message: String },
}

impl WorkflowRunErrorDetail {
    pub fn message(&self) -> &str {
        match self {
            WorkflowRunErrorDetail::TimeoutError { message }
            | WorkflowRunErrorDetail::ProgramError { message }
            | WorkflowRunErrorDetail::UnknownError { message }
            | WorkflowRunErrorDetail::ThreadLimitError { message }
            | WorkflowRunErrorDetail::MaxWorkflowRunsError { message } => message,
        }
    }
}
