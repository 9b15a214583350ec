//! Strategies for the `session.*` events (including `session.thread_*`) and
//! the shapes they share: stop reasons, errors, usage and budgets.

use std::collections::BTreeMap;

use proptest::option;
use proptest::prelude::*;

use super::text;
use crate::event::{
    Budget, CacheCreationUsage, Event, Millis, Money, RetryStatus, ServerToolUsage, SessionDeleted, SessionError,
    SessionErrorDetail, SessionStatusIdle, SessionStatusRescheduled, SessionStatusRunning, SessionStatusTerminated,
    SessionThreadCreated, SessionThreadStatusIdle, SessionThreadStatusRescheduled, SessionThreadStatusRunning,
    SessionThreadStatusTerminated, SessionUpdated, SessionUsage, StopDetails, StopReason, UsageSnapshot,
};
use crate::id::{EventId, ThreadId, WorkflowRunId};
use crate::json::strategy::json_object;

pub fn stop_reason() -> impl Strategy<Value = StopReason> {
    prop_oneof![
        Just(StopReason::EndTurn),
        prop::collection::vec(any::<EventId>(), 0..3).prop_map(|event_ids| StopReason::RequiresAction { event_ids }),
        Just(StopReason::RetriesExhausted),
        Just(StopReason::BudgetReached),
        Just(StopReason::Refusal),
    ]
}

pub fn stop_details() -> impl Strategy<Value = StopDetails> {
    (option::of(text()), option::of(text()))
        .prop_map(|(category, explanation)| StopDetails::Refusal { category, explanation })
}

pub fn retry_status() -> impl Strategy<Value = RetryStatus> + Clone {
    prop_oneof![Just(RetryStatus::Retrying), Just(RetryStatus::Exhausted), Just(RetryStatus::Terminal),]
}

/// Every `session.error` error type.
pub fn session_error_detail() -> impl Strategy<Value = SessionErrorDetail> {
    use SessionErrorDetail as E;
    let base = (text(), retry_status());
    let plain = (base.clone(), 0..7u8).prop_map(|((message, retry_status), kind)| match kind {
        0 => E::UnknownError { message, retry_status },
        1 => E::ModelOverloadedError { message, retry_status },
        2 => E::ModelRateLimitedError { message, retry_status },
        3 => E::ModelRequestFailedError { message, retry_status },
        4 => E::BillingError { message, retry_status },
        5 => E::ToolUseLimitReachedError { message, retry_status },
        _ => E::CompactionLimitReachedError { message, retry_status },
    });
    let mcp =
        (base.clone(), text(), any::<bool>()).prop_map(|((message, retry_status), mcp_server_name, authentication)| {
            if authentication {
                E::McpAuthenticationFailedError { message, retry_status, mcp_server_name }
            } else {
                E::McpConnectionFailedError { message, retry_status, mcp_server_name }
            }
        });
    let credential = (base.clone(), text(), text()).prop_map(|((message, retry_status), credential_id, vault_id)| {
        E::CredentialHostUnreachableError { message, retry_status, credential_id, vault_id }
    });
    let repository =
        (base, option::of(text()), 0..5u8).prop_map(|((message, retry_status), repository_url, kind)| match kind {
            0 => E::RepositoryAuthenticationError { message, retry_status, repository_url },
            1 => E::RepositoryForbiddenError { message, retry_status, repository_url },
            2 => E::RepositoryNotFoundError { message, retry_status, repository_url },
            3 => E::RepositoryCheckoutError { message, retry_status, repository_url },
            _ => E::RepositoryCloneError { message, retry_status, repository_url },
        });
    prop_oneof![7 => plain, 2 => mcp, 1 => credential, 5 => repository]
}

pub fn money() -> impl Strategy<Value = Money> {
    ("[0-9]{1,6}", "[A-Z]{3}").prop_map(|(amount, currency)| Money { amount, currency })
}

pub fn budget() -> impl Strategy<Value = Budget> {
    money().prop_map(|max_list_cost| Budget::Limit { max_list_cost })
}

/// Milliseconds whose JSON seconds convert back exactly.
pub fn millis() -> impl Strategy<Value = Millis> {
    (0..Millis::EXACT_JSON_MAX).prop_map(Millis)
}

pub fn usage_snapshot() -> impl Strategy<Value = UsageSnapshot> {
    let tokens = || option::of(any::<u64>());
    let cache = (tokens(), tokens()).prop_map(|(five_minutes, one_hour)| CacheCreationUsage {
        ephemeral_5m_input_tokens: five_minutes,
        ephemeral_1h_input_tokens: one_hour,
    });
    let server = (tokens(), tokens()).prop_map(|(web_search_requests, web_fetch_requests)| ServerToolUsage {
        web_search_requests,
        web_fetch_requests,
    });
    ((tokens(), tokens(), tokens()), option::of(cache), option::of(server), option::of(millis()), option::of(money()))
        .prop_map(|((input, output, cache_read), cache_creation, server_tool_use, active, cost)| UsageSnapshot {
            input_tokens: input,
            output_tokens: output,
            cache_read_input_tokens: cache_read,
            cache_creation,
            server_tool_use,
            active_seconds: active,
            list_cost: cost,
        })
}

/// Metadata maps as `session.updated` carries them.
pub fn metadata() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(text(), text(), 0..3)
}

/// `session.*` then `session.thread_*`, in `EventType::ALL` order.
pub(super) fn variants() -> Vec<BoxedStrategy<Event>> {
    let thread = || (any::<ThreadId>(), text());
    vec![
        Just(SessionStatusRunning {}.into()).boxed(),
        (stop_reason(), option::of(stop_details()))
            .prop_map(|(stop_reason, stop_details)| SessionStatusIdle { stop_reason, stop_details }.into())
            .boxed(),
        Just(SessionStatusRescheduled {}.into()).boxed(),
        Just(SessionStatusTerminated {}.into()).boxed(),
        session_error_detail().prop_map(|error| SessionError { error }.into()).boxed(),
        (
            option::of(json_object()),
            option::of(option::of(budget())),
            option::of(metadata()),
            option::of(option::of(text())),
        )
            .prop_map(|(agent, budget, metadata, title)| SessionUpdated { agent, budget, metadata, title }.into())
            .boxed(),
        (usage_snapshot(), option::of(budget()))
            .prop_map(|(usage, budget)| SessionUsage { usage, budget }.into())
            .boxed(),
        Just(SessionDeleted {}.into()).boxed(),
        (thread(), option::of(any::<WorkflowRunId>()))
            .prop_map(|((session_thread_id, agent_name), workflow_run_id)| {
                SessionThreadCreated { session_thread_id, agent_name, workflow_run_id }.into()
            })
            .boxed(),
        thread()
            .prop_map(|(session_thread_id, agent_name)| {
                SessionThreadStatusRunning { session_thread_id, agent_name }.into()
            })
            .boxed(),
        (thread(), stop_reason(), option::of(stop_details()))
            .prop_map(|((session_thread_id, agent_name), stop_reason, stop_details)| {
                let event = SessionThreadStatusIdle { session_thread_id, agent_name, stop_reason, stop_details };
                event.into()
            })
            .boxed(),
        thread()
            .prop_map(|(session_thread_id, agent_name)| {
                SessionThreadStatusRescheduled { session_thread_id, agent_name }.into()
            })
            .boxed(),
        thread()
            .prop_map(|(session_thread_id, agent_name)| {
                SessionThreadStatusTerminated { session_thread_id, agent_name }.into()
            })
            .boxed(),
    ]
}
