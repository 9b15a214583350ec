//! `span.*` observability events (API reference §4.2): the start and end of
//! each model request and of each outcome evaluation, with token usage.
//!
//! A span is a start event plus an end event that names the start's id; this
//! module does not pair them up or check that every start is closed.

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::id::{EventId, OutcomeId};

/// `span.model_request_start`: a model request began.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct SpanModelRequestStart {}

/// `span.model_request_end`: a model request finished (or died).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct SpanModelRequestEnd {
    /// The `span.model_request_start` event this closes.
    pub model_request_start_id: EventId,
    pub model_usage: ModelUsage,
    #[serde(default)]
    pub is_error: Option<bool>,
}

/// `span.outcome_evaluation_start`: the grader started evaluating an outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct SpanOutcomeEvaluationStart {
    pub outcome_id: OutcomeId,
    /// 0-based revision cycle.
    pub iteration: u32,
}

/// `span.outcome_evaluation_ongoing`: a heartbeat while the grader works.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct SpanOutcomeEvaluationOngoing {
    pub outcome_id: OutcomeId,
    pub iteration: u32,
}

/// `span.outcome_evaluation_end`: the grader reached a verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct SpanOutcomeEvaluationEnd {
    /// The `span.outcome_evaluation_start` event this closes; [`EventId::NIL`]
    /// (the API's empty string) for an outcome interrupted before any
    /// evaluation started.
    #[serde(with = "start_id")]
    pub outcome_evaluation_start_id: EventId,
    pub outcome_id: OutcomeId,
    pub iteration: u32,
    pub result: OutcomeEvaluationResult,
    /// Why; for `needs_revision`, which criteria failed.
    pub explanation: String,
    /// Aggregate token usage of the evaluation.
    pub usage: ModelUsage,
}

/// `outcome_evaluation_start_id` in JSON: the id, or `""` for [`EventId::NIL`]
/// (behaviour digest §10: empty when no evaluation started).
mod start_id {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::id::EventId;

    pub(super) fn serialize<S: Serializer>(id: &EventId, serializer: S) -> Result<S::Ok, S::Error> {
        if *id == EventId::NIL { serializer.serialize_str("") } else { id.serialize(serializer) }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<EventId, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        if text.is_empty() { Ok(EventId::NIL) } else { text.parse().map_err(serde::de::Error::custom) }
    }
}

/// Token usage of one model request. Also used for an outcome evaluation's
/// aggregate usage and in Logbook's `x.model_request`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct ModelUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    #[serde(default)]
    pub speed: Option<Speed>,
}

/// Inference speed mode, a bare string in JSON.
///
/// # Important
/// Variant order is the canonical encoding: append only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "lowercase")]
pub enum Speed {
    Standard,
    Fast,
}

/// The verdict of one outcome evaluation, a bare string in JSON.
/// `needs_revision` means another cycle follows; the others are terminal.
///
/// # Important
/// Variant order is the canonical encoding: append only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeEvaluationResult {
    /// The criteria are met; the session goes idle.
    Satisfied,
    /// The criteria are not met; another revision cycle follows.
    NeedsRevision,
    /// The evaluation budget is spent with the criteria still unmet.
    MaxIterationsReached,
    /// The outcome ended unmet without a verdict on the work: the grader
    /// found that the rubric does not apply to it (the API's meaning), or,
    /// in Logbook, could not be reached or gave no verdict, or the turn's
    /// response was refused; the explanation says which.
    Failed,
    /// The user interrupted the outcome, during an evaluation or before one.
    Interrupted,
}

impl OutcomeEvaluationResult {
    /// The API's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeEvaluationResult::Satisfied => "satisfied",
            OutcomeEvaluationResult::NeedsRevision => "needs_revision",
            OutcomeEvaluationResult::MaxIterationsReached => "max_iterations_reached",
            OutcomeEvaluationResult::Failed => "failed",
            OutcomeEvaluationResult::Interrupted => "interrupted",
        }
    }

    /// Whether no further evaluation cycle follows this verdict.
    pub fn is_terminal(self) -> bool {
        match self {
            OutcomeEvaluationResult::NeedsRevision => false,
            OutcomeEvaluationResult::Satisfied
            | OutcomeEvaluationResult::MaxIterationsReached
            | OutcomeEvaluationResult::Failed
            | OutcomeEvaluationResult::Interrupted => true,
        }
    }
}
