//! Strategies for the `agent.*` events, including agent-to-agent messages.

use proptest::option;
use proptest::prelude::*;

use super::content::content_list;
use super::text;
use crate::event::{
    AgentCustomToolUse, AgentMcpToolResult, AgentMcpToolUse, AgentMessage, AgentThinking, AgentThreadContextCompacted,
    AgentThreadMessageReceived, AgentThreadMessageSent, AgentToolResult, AgentToolUse, AutoPermission,
    EvaluatedPermission, Event, ToolEvaluation,
};
use crate::id::{EventId, ThreadId};
use crate::json::strategy::json_object;

pub fn evaluated_permission() -> impl Strategy<Value = EvaluatedPermission> {
    prop_oneof![Just(EvaluatedPermission::Allow), Just(EvaluatedPermission::Ask), Just(EvaluatedPermission::Deny),]
}

pub fn tool_evaluation() -> impl Strategy<Value = ToolEvaluation> {
    let auto = prop_oneof![
        Just(AutoPermission::Allow),
        text().prop_map(|reason_code| AutoPermission::Ask { reason_code }),
        text().prop_map(|reason_code| AutoPermission::Deny { reason_code }),
    ];
    prop_oneof![
        Just(ToolEvaluation::AlwaysAllow),
        Just(ToolEvaluation::AlwaysAsk),
        auto.prop_map(|evaluated_permission| ToolEvaluation::Auto { evaluated_permission }),
    ]
}

/// `agent.*`, in `EventType::ALL` order.
pub(super) fn variants() -> Vec<BoxedStrategy<Event>> {
    let thread = || option::of(any::<ThreadId>());
    let result = || (any::<EventId>(), option::of(content_list()), option::of(any::<bool>()));
    let permission = || (option::of(evaluated_permission()), option::of(tool_evaluation()));
    vec![
        content_list().prop_map(|content| AgentMessage { content }.into()).boxed(),
        Just(AgentThinking {}.into()).boxed(),
        (text(), json_object(), permission(), thread())
            .prop_map(|(name, input, (evaluated_permission, evaluation), session_thread_id)| {
                let event = AgentToolUse { name, input, evaluated_permission, evaluation, session_thread_id };
                event.into()
            })
            .boxed(),
        result()
            .prop_map(|(tool_use_id, content, is_error)| AgentToolResult { tool_use_id, content, is_error }.into())
            .boxed(),
        ((text(), text()), json_object(), permission(), thread())
            .prop_map(|((name, mcp_server_name), input, (evaluated_permission, evaluation), thread)| {
                let event = AgentMcpToolUse {
                    name,
                    mcp_server_name,
                    input,
                    evaluated_permission,
                    evaluation,
                    session_thread_id: thread,
                };
                event.into()
            })
            .boxed(),
        result()
            .prop_map(|(mcp_tool_use_id, content, is_error)| {
                AgentMcpToolResult { mcp_tool_use_id, content, is_error }.into()
            })
            .boxed(),
        (text(), json_object(), thread())
            .prop_map(|(name, input, session_thread_id)| AgentCustomToolUse { name, input, session_thread_id }.into())
            .boxed(),
        (any::<ThreadId>(), content_list(), option::of(text()))
            .prop_map(|(to_session_thread_id, content, to_agent_name)| {
                AgentThreadMessageSent { to_session_thread_id, content, to_agent_name }.into()
            })
            .boxed(),
        (any::<ThreadId>(), content_list(), option::of(text()))
            .prop_map(|(from_session_thread_id, content, from_agent_name)| {
                let event = AgentThreadMessageReceived { from_session_thread_id, content, from_agent_name };
                event.into()
            })
            .boxed(),
        Just(AgentThreadContextCompacted {}.into()).boxed(),
    ]
}
