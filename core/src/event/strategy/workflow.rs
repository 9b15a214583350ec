//! Strategies for the `workflow_run.*` events.

use proptest::option;
use proptest::prelude::*;

use super::text;
use crate::event::{
    Event, WorkflowRunCreated, WorkflowRunError, WorkflowRunErrorDetail, WorkflowRunPhase, WorkflowRunPhaseEnded,
    WorkflowRunPhaseStarted, WorkflowRunResult, WorkflowRunStatusEnded, WorkflowRunStatusIdle,
    WorkflowRunStatusRunning,
};
use crate::id::{EventId, WorkflowRunId};

pub fn workflow_run_phase() -> impl Strategy<Value = WorkflowRunPhase> {
    (text(), text(), option::of(text())).prop_map(|(id, name, description)| WorkflowRunPhase { id, name, description })
}

pub fn workflow_run_error_detail() -> impl Strategy<Value = WorkflowRunErrorDetail> {
    use WorkflowRunErrorDetail as E;
    prop_oneof![
        text().prop_map(|message| E::TimeoutError { message }),
        text().prop_map(|message| E::ProgramError { message }),
        text().prop_map(|message| E::UnknownError { message }),
        text().prop_map(|message| E::ThreadLimitError { message }),
        text().prop_map(|message| E::MaxWorkflowRunsError { message }),
    ]
}

pub fn workflow_run_result() -> impl Strategy<Value = WorkflowRunResult> {
    prop_oneof![
        Just(WorkflowRunResult::Completed),
        Just(WorkflowRunResult::Stopped),
        workflow_run_error_detail().prop_map(|error| WorkflowRunResult::Error { error }),
    ]
}

/// `workflow_run.*`, in `EventType::ALL` order.
pub(super) fn variants() -> Vec<BoxedStrategy<Event>> {
    let run = any::<WorkflowRunId>;
    vec![
        (run(), text(), option::of(text()), prop::collection::vec(workflow_run_phase(), 0..3))
            .prop_map(|(workflow_run_id, name, description, phases)| {
                WorkflowRunCreated { workflow_run_id, name, description, phases }.into()
            })
            .boxed(),
        run().prop_map(|workflow_run_id| WorkflowRunStatusRunning { workflow_run_id }.into()).boxed(),
        run().prop_map(|workflow_run_id| WorkflowRunStatusIdle { workflow_run_id }.into()).boxed(),
        (run(), text())
            .prop_map(|(workflow_run_id, workflow_run_phase_id)| {
                WorkflowRunPhaseStarted { workflow_run_id, workflow_run_phase_id }.into()
            })
            .boxed(),
        (run(), text(), any::<EventId>())
            .prop_map(|(workflow_run_id, workflow_run_phase_id, phase_started_id)| {
                let event = WorkflowRunPhaseEnded { workflow_run_id, workflow_run_phase_id, phase_started_id };
                event.into()
            })
            .boxed(),
        (run(), workflow_run_result())
            .prop_map(|(workflow_run_id, result)| WorkflowRunStatusEnded { workflow_run_id, result }.into())
            .boxed(),
        (option::of(run()), workflow_run_error_detail())
            .prop_map(|(workflow_run_id, error)| WorkflowRunError { workflow_run_id, error }.into())
            .boxed(),
    ]
}
