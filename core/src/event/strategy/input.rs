//! Strategies for the input events (`user.*`, `system.message`).

use proptest::option;
use proptest::prelude::*;

use super::content::content_list;
use super::text;
use crate::event::{
    ConfirmationResult, Event, Rubric, SystemMessage, UserCustomToolResult, UserDefineOutcome, UserInterrupt,
    UserMessage, UserToolConfirmation, UserToolResult,
};
use crate::id::{EventId, OutcomeId, ThreadId};

pub fn confirmation_result() -> impl Strategy<Value = ConfirmationResult> {
    prop_oneof![Just(ConfirmationResult::Allow), Just(ConfirmationResult::Deny)]
}

pub fn rubric() -> impl Strategy<Value = Rubric> {
    prop_oneof![
        text().prop_map(|content| Rubric::Text { content }),
        text().prop_map(|file_id| Rubric::File { file_id }),
    ]
}

/// `user.*` then `system.message`, in `EventType::ALL` order.
pub(super) fn variants() -> Vec<BoxedStrategy<Event>> {
    let thread = || option::of(any::<ThreadId>());
    vec![
        content_list().prop_map(|content| UserMessage { content }.into()).boxed(),
        thread().prop_map(|session_thread_id| UserInterrupt { session_thread_id }.into()).boxed(),
        (any::<EventId>(), confirmation_result(), option::of(text()), thread())
            .prop_map(|(tool_use_id, result, deny_message, session_thread_id)| {
                let event = UserToolConfirmation { tool_use_id, result, deny_message, session_thread_id };
                event.into()
            })
            .boxed(),
        (any::<EventId>(), option::of(content_list()), option::of(any::<bool>()), thread())
            .prop_map(|(custom_tool_use_id, content, is_error, session_thread_id)| {
                let event = UserCustomToolResult { custom_tool_use_id, content, is_error, session_thread_id };
                event.into()
            })
            .boxed(),
        (any::<EventId>(), option::of(content_list()), option::of(any::<bool>()), thread())
            .prop_map(|(tool_use_id, content, is_error, session_thread_id)| {
                UserToolResult { tool_use_id, content, is_error, session_thread_id }.into()
            })
            .boxed(),
        (any::<OutcomeId>(), text(), rubric(), option::of(0u32..=20))
            .prop_map(|(outcome_id, description, rubric, max_iterations)| {
                UserDefineOutcome { outcome_id, description, rubric, max_iterations }.into()
            })
            .boxed(),
        content_list().prop_map(|content| SystemMessage { content }.into()).boxed(),
    ]
}
