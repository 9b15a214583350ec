//! proptest strategies for every event type, behind `cfg(test)` or the
//! `arbitrary` feature: [`Arbitrary`] for [`Event`] and [`EventType`], plus
//! public strategies for the payloads' shared shapes, for test suites
//! downstream.
//!
//! Strings are short and collections small so that shrinking stays fast; the
//! strategies aim to reach every variant and every `None`/`Some`, not to produce
//! realistic sessions (see [`sample_events`](crate::event::sample_events) for
//! that). Sub-modules follow the event modules' split by domain.

mod agent;
mod content;
mod input;
mod internal;
mod session;
mod span;
mod workflow;

use proptest::prelude::*;
use proptest::strategy::Union;

use crate::event::{Event, EventType};

pub use agent::{evaluated_permission, tool_evaluation};
pub use content::{content_block, content_list, document_source, image_source};
pub use input::{confirmation_result, rubric};
pub use internal::workspace_change;
pub use session::{
    budget, metadata, millis, money, retry_status, session_error_detail, stop_details, stop_reason, usage_snapshot,
};
pub use span::{model_usage, outcome_evaluation_result};
pub use workflow::{workflow_run_error_detail, workflow_run_phase, workflow_run_result};

impl Arbitrary for Event {
    type Parameters = ();
    type Strategy = BoxedStrategy<Event>;

    fn arbitrary_with((): ()) -> Self::Strategy {
        event()
    }
}

impl Arbitrary for EventType {
    type Parameters = ();
    type Strategy = proptest::sample::Select<EventType>;

    fn arbitrary_with((): ()) -> Self::Strategy {
        proptest::sample::select(EventType::ALL)
    }
}

/// Any event, every variant equally likely.
pub fn event() -> BoxedStrategy<Event> {
    Union::new(variants()).boxed()
}

/// Events of one type only.
pub fn event_of_type(event_type: EventType) -> BoxedStrategy<Event> {
    // `variants` has one strategy per type in code order (debug-asserted), so
    // the fallback is unreachable; it exists to keep this code panic-free.
    variants().into_iter().nth(usize::from(event_type.code())).unwrap_or_else(event)
}

/// A short string with some non-ASCII and JSON-escaped characters.
pub fn text() -> impl Strategy<Value = String> + Clone {
    "[a-z0-9 _.é🦀\"\\\\\n]{0,8}"
}

/// One strategy per event type, in [`EventType::ALL`] order.
fn variants() -> Vec<BoxedStrategy<Event>> {
    let variants = [
        input::variants(),
        agent::variants(),
        session::variants(),
        span::variants(),
        workflow::variants(),
        internal::variants(),
    ]
    .concat();
    debug_assert_eq!(variants.len(), EventType::ALL.len());
    variants
}
