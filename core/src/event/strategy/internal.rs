//! Strategies for Logbook's internal `x.*` events.

use proptest::option;
use proptest::prelude::*;

use super::span::model_usage;
use super::text;
use crate::event::{
    AgentConfig, AttachedResource, Compaction, Event, FileChange, ForkOrigin, ModelRequest, ModelResponse,
    RepositoryCheckout, ResourceChange, ServerToolRequests, SessionResource, ToolStarted, ToolUseLink, WorkspaceChange,
    WorkspaceDelta,
};
use crate::id::{EventId, FileId, SessionId, SessionResourceId};

pub fn workspace_change() -> impl Strategy<Value = WorkspaceChange> {
    let change = prop_oneof![
        (any::<[u8; 32]>(), any::<u64>(), any::<u32>()).prop_map(|(blob, size, mode)| FileChange::Written {
            blob,
            size,
            mode
        }),
        Just(FileChange::Removed),
        text().prop_map(|target| FileChange::Symlink { target }),
    ];
    (text(), change).prop_map(|(path, change)| WorkspaceChange { path, change })
}

fn resource_change() -> impl Strategy<Value = ResourceChange> {
    let checkout = option::of(prop_oneof![
        text().prop_map(|name| RepositoryCheckout::Branch { name }),
        text().prop_map(|sha| RepositoryCheckout::Commit { sha }),
    ]);
    let resource = prop_oneof![
        (any::<FileId>(), text()).prop_map(|(file_id, mount_path)| AttachedResource::File { file_id, mount_path }),
        (text(), text(), checkout).prop_map(|(url, mount_path, checkout)| AttachedResource::GithubRepository {
            url,
            mount_path,
            checkout
        }),
    ];
    prop_oneof![
        resource.prop_map(|resource| ResourceChange::Attached { resource }),
        Just(ResourceChange::Detached),
        Just(ResourceChange::TokenRotated),
        text().prop_map(|commit| ResourceChange::RepositoryCloned { commit }),
    ]
}

/// `x.*`, in `EventType::ALL` order.
pub(super) fn variants() -> Vec<BoxedStrategy<Event>> {
    vec![
        (option::of(any::<EventId>()), prop::collection::vec(workspace_change(), 0..4))
            .prop_map(|(tool_use_id, changes)| WorkspaceDelta { tool_use_id, changes }.into())
            .boxed(),
        (any::<SessionId>(), any::<u64>(), any::<[u8; 32]>())
            .prop_map(|(parent_session_id, parent_seq, parent_chain_hash)| {
                ForkOrigin { parent_session_id, parent_seq, parent_chain_hash }.into()
            })
            .boxed(),
        ((any::<EventId>(), text()), option::of(text()), option::of(text()), model_usage(), any::<u64>(), any::<u32>())
            .prop_map(|((start, model), request_id, stop_reason, usage, duration_ms, attempt)| {
                let event = ModelRequest {
                    model_request_start_id: start,
                    model,
                    request_id,
                    stop_reason,
                    usage,
                    duration_ms,
                    attempt,
                };
                event.into()
            })
            .boxed(),
        (
            any::<EventId>(),
            crate::json::strategy::json_value(),
            prop::collection::vec(("[a-z0-9_]{1,12}", any::<EventId>()), 0..3),
        )
            .prop_map(|(start, content, links)| {
                let tool_uses =
                    links.into_iter().map(|(provider_id, event_id)| ToolUseLink { provider_id, event_id }).collect();
                ModelResponse { model_request_start_id: start, content: crate::json::Json::new(&content), tool_uses }
                    .into()
            })
            .boxed(),
        prop::collection::vec(any::<EventId>(), 0..4)
            .prop_map(|tool_use_ids| ToolStarted { tool_use_ids }.into())
            .boxed(),
        (crate::json::strategy::json_value(), crate::json::strategy::json_value())
            .prop_map(|(agent, options)| {
                AgentConfig { agent: crate::json::Json::new(&agent), options: crate::json::Json::new(&options) }.into()
            })
            .boxed(),
        (text(), any::<u64>(), any::<u64>(), any::<u64>(), option::of(text()), model_usage())
            .prop_map(|(summary, through_seq, tokens_before, tokens_after, model, usage)| {
                Compaction { summary, through_seq, tokens_before, tokens_after, model, usage }.into()
            })
            .boxed(),
        (any::<SessionResourceId>(), resource_change())
            .prop_map(|(resource_id, change)| SessionResource { resource_id, change }.into())
            .boxed(),
        (any::<EventId>(), any::<u64>(), any::<u64>())
            .prop_map(|(model_request_start_id, web_search_requests, web_fetch_requests)| {
                ServerToolRequests { model_request_start_id, web_search_requests, web_fetch_requests }.into()
            })
            .boxed(),
    ]
}
