//! Strategies for the `span.*` events and model usage.

use proptest::option;
use proptest::prelude::*;

use super::text;
use crate::event::{
    Event, ModelUsage, OutcomeEvaluationResult, SpanModelRequestEnd, SpanModelRequestStart, SpanOutcomeEvaluationEnd,
    SpanOutcomeEvaluationOngoing, SpanOutcomeEvaluationStart, Speed,
};
use crate::id::{EventId, OutcomeId};

pub fn model_usage() -> impl Strategy<Value = ModelUsage> {
    let speed = prop_oneof![Just(Speed::Standard), Just(Speed::Fast)];
    (any::<[u64; 4]>(), option::of(speed)).prop_map(|([input, output, creation, read], speed)| ModelUsage {
        input_tokens: input,
        output_tokens: output,
        cache_creation_input_tokens: creation,
        cache_read_input_tokens: read,
        speed,
    })
}

pub fn outcome_evaluation_result() -> impl Strategy<Value = OutcomeEvaluationResult> {
    prop_oneof![
        Just(OutcomeEvaluationResult::Satisfied),
        Just(OutcomeEvaluationResult::NeedsRevision),
        Just(OutcomeEvaluationResult::MaxIterationsReached),
        Just(OutcomeEvaluationResult::Failed),
        Just(OutcomeEvaluationResult::Interrupted),
    ]
}

/// `span.*`, in `EventType::ALL` order.
pub(super) fn variants() -> Vec<BoxedStrategy<Event>> {
    vec![
        Just(SpanModelRequestStart {}.into()).boxed(),
        (any::<EventId>(), model_usage(), option::of(any::<bool>()))
            .prop_map(|(model_request_start_id, model_usage, is_error)| {
                SpanModelRequestEnd { model_request_start_id, model_usage, is_error }.into()
            })
            .boxed(),
        (any::<OutcomeId>(), any::<u32>())
            .prop_map(|(outcome_id, iteration)| SpanOutcomeEvaluationStart { outcome_id, iteration }.into())
            .boxed(),
        (any::<OutcomeId>(), any::<u32>())
            .prop_map(|(outcome_id, iteration)| SpanOutcomeEvaluationOngoing { outcome_id, iteration }.into())
            .boxed(),
        ((any::<EventId>(), any::<OutcomeId>(), any::<u32>()), outcome_evaluation_result(), text(), model_usage())
            .prop_map(|((start, outcome_id, iteration), result, explanation, usage)| {
                let event = SpanOutcomeEvaluationEnd {
                    outcome_evaluation_start_id: start,
                    outcome_id,
                    iteration,
                    result,
                    explanation,
                    usage,
                };
                event.into()
            })
            .boxed(),
    ]
}
