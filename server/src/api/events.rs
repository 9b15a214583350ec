//! `/v1/sessions/{id}/events`: send input events and list a session's history.
//!
//! Sending validates every event first (all or nothing), then appends them in
//! one optimistic append at the head the references were checked against,
//! checked again after a conflict with another writer (so a tool call never
//! gets two answers); the echo is returned only once the events are durable.
//! Worker credentials may only send tool results. Listing reads the log, hides
//! Logbook's internal `x.*` events, and pages by seq with an opaque cursor.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use logbook_core::event::{
    AgentToolUse, ConfirmationResult, ContentBlock, EvaluatedPermission, Event, EventType, InputType, Rubric,
    StopReason, SystemMessage, UserCustomToolResult, UserDefineOutcome, UserInterrupt, UserMessage,
    UserToolConfirmation, UserToolResult,
};
use logbook_core::{Entry, EventId, OutcomeId, Record, Seq, SessionId, Timestamp};
use logbook_replay::SERVER_SIDE_TOOLS;
use logbook_store::{Append, AppendError, PendingAppend, Read, SledStore};

use super::error::ApiError;
use super::sessions::{self, Status, StoredSession};
use super::wire::{JsonBody, Order, Query, decode_cursor, encode_cursor, json_response};
use super::work::WorkNeed;
use super::{Page, from_bytes};
use crate::state::AppState;
use crate::tenancy::{KeyScope, Principal, Tenant};

/// Most events in one send request.
pub const MAX_EVENTS_PER_SEND: usize = 100;
/// Most content blocks in one event.
pub const MAX_CONTENT_BLOCKS: usize = 1000;
/// Most `document` blocks with a `file` source across `initial_events`
/// (behaviour digest §3.2).
pub const MAX_INITIAL_FILE_DOCUMENTS: usize = 100;
pub const DEFAULT_LIST_LIMIT: usize = 1000;
pub const MAX_LIST_LIMIT: usize = 1000;
/// Most attempts of an append that keeps losing races with other writers (the
/// runner appends to the same sessions). A lost race costs no fsync, only a
/// re-read of the head.
pub(crate) const MAX_APPEND_ATTEMPTS: usize = 256;
/// Records read per step when listing with filters, and most steps per request.
const LIST_STEP: usize = 1000;
const MAX_LIST_STEPS: usize = 32;
pub const MAX_RUBRIC_CHARS: usize = 262_144;
/// Largest inline image, as base64: the Messages API refuses images over 5 MiB.
pub const MAX_IMAGE_BASE64_BYTES: u64 = crate::tools::files::MAX_IMAGE_BASE64_BYTES;
/// Largest inline document, as base64 (what the runner inlines of a Files API
/// document at most, leaving room under the API's 32 MB request limit).
pub const MAX_DOCUMENT_BASE64_BYTES: u64 = crate::runner::inline::MAX_INLINE_FILE_BYTES;

/// Where input events come from: a send request (noting whether the session
/// is idle waiting for tool results or confirmations) or `initial_events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputContext {
    Send { requires_action: bool },
    Initial,
}

#[derive(Debug, Deserialize)]
pub struct SendEvents {
    events: Vec<Value>,
}

pub async fn send(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Extension(principal): Extension<Principal>,
    Path(session_id): Path<String>,
    JsonBody(body): JsonBody<SendEvents>,
) -> Result<Response, ApiError> {
    let id = sessions::parse_session_id(&session_id)?;
    if body.events.is_empty() {
        return Err(ApiError::invalid("events: must contain at least one event"));
    }
    if body.events.len() > MAX_EVENTS_PER_SEND {
        return Err(ApiError::invalid(format!("events: at most {MAX_EVENTS_PER_SEND} events per request")));
    }
    check_sender(&principal, &body.events)?;
    // Low on disk, no new work (`diskguard`).
    let needs_space = |event: &Value| {
        let kind = event.get("type").and_then(Value::as_str).and_then(|kind| kind.parse::<EventType>().ok());
        kind.and_then(EventType::as_input).is_some_and(crate::diskguard::starts_work)
    };
    if body.events.iter().any(needs_space)
        && let Some(refused) = state.refuse_for_space()
    {
        return Err(refused);
    }
    // Small sends (nearly all) are checked and submitted inline on the async
    // thread: what they read is in memory in all but cold cases, and a hop to
    // the blocking pool cost more than the work itself. A large one would hold
    // the thread while it is encoded and compressed, and an answer to a call
    // looks the call up in the log (scans whose length the request does not
    // bound), so they take the hop.
    let inline = body.events.iter().map(text_bytes).sum::<usize>() <= INLINE_SEND_MAX_BYTES
        && !body.events.iter().any(answers_a_call);
    let events = std::sync::Arc::new(body.events);
    let mut attempt = 0;
    let (pending, queued, rework) = loop {
        attempt += 1;
        let tried = if inline {
            try_send(&state, &tenant, id, &events)?
        } else {
            let (worker_state, events) = (state.clone(), std::sync::Arc::clone(&events));
            state.blocking(move |_| try_send(&worker_state, &tenant, id, &events)).await?
        };
        match tried {
            SendAttempt::Submitted { pending, queued, rework } => break (pending, queued, rework),
            // Nothing to append: every event was an interrupt the session
            // ignores while paused at its budget.
            SendAttempt::Ignored => return Ok(Json(json!({ "data": [] })).into_response()),
            SendAttempt::Behind(written) if attempt < MAX_APPEND_ATTEMPTS => {
                // Another append to this session is not durable yet: wait for
                // it (no thread waits), then check against the new head.
                let durable = state.store().wait_durable(id, written)?;
                let _ = tokio::time::timeout(RACE_WAIT, durable).await;
            }
            SendAttempt::Behind(_) => {
                return Err(ApiError::overloaded("the session is too busy to append to right now; retry"));
            }
        }
    };
    // Acknowledged only once durable; the wait holds no thread. What follows
    // the append (a self-hosted session's work item, the runner's wake-up)
    // is done here, or, if this request is dropped first (its client gone,
    // its timeout), by a task its guard hands it to: durable input must not
    // be left with nothing acting on it.
    let interrupt = events.iter().any(|event| event.get("type").and_then(Value::as_str) == Some("user.interrupt"));
    let stage = FollowUpStage::Pending(pending);
    let records = FollowUp { state: state.clone(), tenant, session: id, rework, interrupt, stage }.run().await?;
    let mut data: Vec<Value> = records.iter().map(record_json).collect::<Result<_, _>>()?;
    if queued {
        // The echo of a queued event has `processed_at: null` (API reference
        // §4.1); the log records when it arrived, and lists show that.
        for event in &mut data {
            if matches!(
                event["type"].as_str(),
                Some("user.message" | "user.interrupt" | "user.tool_confirmation" | "system.message")
            ) && let Some(obj) = event.as_object_mut()
            {
                obj.insert("processed_at".to_owned(), Value::Null);
            }
        }
    }
    Ok(json_response(&Echo { data: &data }, data.len() * ECHO_BYTES_PER_EVENT))
}

/// The answer to a send, `{"data": [...]}`: what `json!({"data": data})`
/// writes, without building the map.
#[derive(Serialize)]
struct Echo<'a> {
    data: &'a [Value],
}

/// Room reserved per echoed event for the answer to a send: a typical
/// event's JSON fits, so its buffer is not grown (and copied) on the way.
const ECHO_BYTES_PER_EVENT: usize = 1024;

fn state_has_runner(state: &AppState) -> bool {
    state.runner().is_some()
}

/// Worker credentials (environment keys, sessions tokens) answer tool calls;
/// they do not converse: only `user.tool_result` and `user.custom_tool_result`.
fn check_sender(principal: &Principal, events: &[Value]) -> Result<(), ApiError> {
    match principal.scope {
        KeyScope::Workspace => Ok(()),
        KeyScope::Environment { .. } | KeyScope::WorkSession { .. } => {
            for (idx, event) in events.iter().enumerate() {
                let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
                if !matches!(kind, "user.tool_result" | "user.custom_tool_result") {
                    return Err(ApiError::forbidden(format!(
                        "events[{idx}].type: a worker's credential may only send user.tool_result and user.custom_tool_result events, not {kind:?}; use an API key"
                    ))
                    .with_code("credential_not_accepted"));
                }
            }
            Ok(())
        }
    }
}

/// Inputs that give a session something to do (so a self-hosted one needs a worker).
pub(crate) fn starts_work(event: &Event) -> bool {
    matches!(
        event,
        Event::UserMessage(_)
            | Event::UserToolConfirmation(_)
            | Event::UserCustomToolResult(_)
            | Event::UserDefineOutcome(_)
            | Event::SystemMessage(_)
    )
}

/// The content blocks of an input event (none for events without content).
fn input_blocks(event: &Event) -> &[ContentBlock] {
    if let Event::UserMessage(message) = event {
        &message.content
    } else if let Event::UserCustomToolResult(result) = event {
        result.content.as_deref().unwrap_or(&[])
    } else {
        &[]
    }
}

/// The file id a block's `file` source names, if it has one.
fn file_source(block: &ContentBlock) -> Option<&str> {
    match block {
        ContentBlock::Image { source: logbook_core::event::ImageSource::File { file_id } }
        | ContentBlock::Document { source: logbook_core::event::DocumentSource::File { file_id }, .. } => Some(file_id),
        ContentBlock::Text { .. }
        | ContentBlock::Image { .. }
        | ContentBlock::Document { .. }
        | ContentBlock::SearchResult { .. }
        | ContentBlock::Redacted => None,
    }
}

/// Checks that every `file` source names a live file of the caller's
/// workspace (another workspace's file answers like a missing one): the
/// runner reads it from the Files API when it calls the model.
pub fn check_files(store: &SledStore, tenant: &Tenant, inputs: &[Event], now: Timestamp) -> Result<(), ApiError> {
    for event in inputs {
        let rubric = if let Event::UserDefineOutcome(outcome) = event
            && let Rubric::File { file_id } = &outcome.rubric
        {
            Some(file_id.as_str())
        } else {
            None
        };
        for file_id in input_blocks(event).iter().filter_map(file_source).chain(rubric) {
            let id = super::files::parse_file_id(file_id)?;
            super::files::load_live(store, tenant, id, now)?;
        }
    }
    Ok(())
}

/// Validates input events (shape, content, placement) without touching the log.
pub fn parse_inputs(
    raw: &[Value],
    context: InputContext,
    session: &StoredSession,
    now: Timestamp,
) -> Result<Vec<Event>, ApiError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut n_outcomes = 0;
    for (idx, value) in raw.iter().enumerate() {
        let field = match context {
            InputContext::Send { .. } => format!("events[{idx}]"),
            InputContext::Initial => format!("initial_events[{idx}]"),
        };
        let kind = value.get("type").and_then(Value::as_str).unwrap_or("");
        let event_type: EventType =
            kind.parse().map_err(|_| ApiError::invalid(format!("{field}.type: {kind:?} is not an event type")))?;
        let Some(input_type) = event_type.as_input() else {
            return Err(ApiError::invalid(format!(
                "{field}.type: {kind} is produced by the server, not sent by clients"
            )));
        };
        if context == InputContext::Initial
            && !matches!(input_type, InputType::UserMessage | InputType::UserDefineOutcome)
        {
            return Err(ApiError::invalid(format!(
                "{field}.type: only user.message and user.define_outcome are allowed in initial_events"
            )));
        }
        let parse_err = |err: serde_json::Error| ApiError::invalid(format!("{field}: {err}"));
        let event = match input_type {
            InputType::UserMessage => {
                let event = UserMessage::deserialize(value).map_err(parse_err)?;
                // Not `redacted`, though the SDK's params type admits it: the
                // platform emits those only, and refuses them in user events
                // (behaviour digest §4.1).
                check_content(&event.content, &field, &["text", "image", "document"], true)?;
                Event::UserMessage(event)
            }
            InputType::UserInterrupt => {
                let event = UserInterrupt::deserialize(value).map_err(parse_err)?;
                // Logbook runs each session as its one primary thread: an
                // interrupt naming it interrupts the session; any other thread
                // named is one this session does not have (the hosted
                // platform refuses a thread that is not running).
                if let Some(thread) = event.session_thread_id
                    && thread != super::threads::primary_thread(session.id)
                {
                    return Err(ApiError::invalid(format!(
                        "{field}.session_thread_id: {thread} is not a running thread of this session"
                    )));
                }
                Event::UserInterrupt(event)
            }
            InputType::UserToolConfirmation => {
                let event = UserToolConfirmation::deserialize(value).map_err(parse_err)?;
                if event.deny_message.is_some() && event.result != logbook_core::event::ConfirmationResult::Deny {
                    return Err(ApiError::invalid(format!("{field}.deny_message: only allowed when result is deny")));
                }
                Event::UserToolConfirmation(event)
            }
            InputType::UserCustomToolResult => {
                let event = UserCustomToolResult::deserialize(value).map_err(parse_err)?;
                if let Some(content) = &event.content {
                    check_content(content, &field, &["text", "image", "document", "search_result"], false)?;
                }
                Event::UserCustomToolResult(event)
            }
            InputType::UserToolResult => {
                if !session.self_hosted {
                    return Err(ApiError::invalid(format!(
                        "{field}: user.tool_result is only accepted on sessions in self_hosted environments"
                    )));
                }
                let event = UserToolResult::deserialize(value).map_err(parse_err)?;
                if let Some(content) = &event.content {
                    check_content(content, &field, &["text", "image", "document", "search_result"], false)?;
                }
                Event::UserToolResult(event)
            }
            InputType::UserDefineOutcome => {
                n_outcomes += 1;
                if n_outcomes > 1 {
                    return Err(ApiError::invalid(format!("{field}: at most one user.define_outcome per request")));
                }
                Event::UserDefineOutcome(parse_outcome(value, &field, now)?)
            }
            InputType::SystemMessage => {
                let event = SystemMessage::deserialize(value).map_err(parse_err)?;
                check_content(&event.content, &field, &["text"], true)?;
                if idx + 1 != raw.len() {
                    return Err(ApiError::invalid(format!(
                        "{field}: system.message must be the last event of the request"
                    )));
                }
                let previous = if idx > 0 { raw[idx - 1].get("type").and_then(Value::as_str) } else { None };
                // While the session waits on tool calls, a system message may only
                // accompany a tool result.
                if context == (InputContext::Send { requires_action: true })
                    && !matches!(previous, Some("user.tool_result" | "user.custom_tool_result"))
                {
                    return Err(ApiError::invalid(format!(
                        "{field}: while the session waits for tool results (requires_action), system.message must directly follow a user.tool_result or user.custom_tool_result"
                    )));
                }
                let follows = matches!(previous, Some("user.message" | "user.tool_result" | "user.custom_tool_result"));
                if !follows {
                    return Err(ApiError::invalid(format!(
                        "{field}: system.message must directly follow a user.message, user.tool_result or user.custom_tool_result in the same request"
                    )));
                }
                Event::SystemMessage(event)
            }
        };
        out.push(event);
    }
    if matches!(context, InputContext::Initial) {
        let n_file_documents = out
            .iter()
            .flat_map(input_blocks)
            .filter(|block| matches!(block, ContentBlock::Document { .. }) && file_source(block).is_some())
            .count();
        if n_file_documents > MAX_INITIAL_FILE_DOCUMENTS {
            return Err(ApiError::invalid(format!(
                "initial_events: at most {MAX_INITIAL_FILE_DOCUMENTS} file-sourced document blocks across the list \
                 ({n_file_documents} given)"
            )));
        }
    }
    Ok(out)
}

#[derive(Debug, Deserialize)]
struct OutcomeIn {
    description: String,
    rubric: Rubric,
    max_iterations: Option<u32>,
}

fn parse_outcome(value: &Value, field: &str, now: Timestamp) -> Result<UserDefineOutcome, ApiError> {
    let outcome: OutcomeIn =
        OutcomeIn::deserialize(value).map_err(|err| ApiError::invalid(format!("{field}: {err}")))?;
    if outcome.description.trim().is_empty() {
        return Err(ApiError::invalid(format!("{field}.description: must not be empty")));
    }
    if let Rubric::Text { content } = &outcome.rubric
        && content.chars().count() > MAX_RUBRIC_CHARS
    {
        return Err(ApiError::invalid(format!("{field}.rubric.content: at most {MAX_RUBRIC_CHARS} characters")));
    }
    let max_iterations = outcome.max_iterations.unwrap_or(logbook_replay::machine::DEFAULT_OUTCOME_ITERATIONS);
    if !(1..=20).contains(&max_iterations) {
        return Err(ApiError::invalid(format!("{field}.max_iterations: must be 1 to 20")));
    }
    let ms = u64::try_from(now.unix_ms()).unwrap_or(0);
    Ok(UserDefineOutcome {
        outcome_id: OutcomeId::from_parts(ms, rand_u128()),
        description: outcome.description,
        rubric: outcome.rubric,
        max_iterations: Some(max_iterations),
    })
}

fn rand_u128() -> u128 {
    use rand::RngExt;
    rand::rng().random::<u128>()
}

fn check_content(blocks: &[ContentBlock], field: &str, allowed: &[&str], required: bool) -> Result<(), ApiError> {
    if required && blocks.is_empty() {
        return Err(ApiError::invalid(format!("{field}.content: must contain at least one block")));
    }
    if blocks.len() > MAX_CONTENT_BLOCKS {
        return Err(ApiError::invalid(format!("{field}.content: at most {MAX_CONTENT_BLOCKS} blocks")));
    }
    for (idx, block) in blocks.iter().enumerate() {
        let kind = match block {
            ContentBlock::Text { .. } => "text",
            ContentBlock::Image { .. } => "image",
            ContentBlock::Document { .. } => "document",
            ContentBlock::SearchResult { .. } => "search_result",
            ContentBlock::Redacted => "redacted",
        };
        if !allowed.contains(&kind) {
            return Err(ApiError::invalid(format!(
                "{field}.content[{idx}].type: {kind} is not allowed here (allowed: {})",
                allowed.join(", ")
            )));
        }
        check_inline(block, &format!("{field}.content[{idx}].source"))?;
    }
    // The model is never sent a blank text block (the Messages API refuses
    // them), so input made only of those would reach it as nothing at all.
    let blank = |block: &ContentBlock| matches!(block, ContentBlock::Text { text } if text.trim().is_empty());
    if required && blocks.iter().all(blank) {
        return Err(ApiError::invalid(format!("{field}.content: must contain a block that is not blank text")));
    }
    Ok(())
}

/// Checks a block's inline data as the Messages API will when the block is
/// sent: an image's bytes must be of its media type, within the size limits,
/// and a base64 document a PDF. A block the API refuses would be sent again
/// with every later model request of the session (the log keeps it), so it
/// is refused here, where the client can correct it.
fn check_inline(block: &ContentBlock, at: &str) -> Result<(), ApiError> {
    use crate::tools::image::{self, MediaType};
    use logbook_core::event::{DocumentSource, ImageSource};
    let decode = |data: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|err| ApiError::invalid(format!("{at}.data: is not valid base64 ({err})")))
    };
    match block {
        ContentBlock::Image { source: ImageSource::Base64 { media_type, data } } => {
            let Some(declared) = MediaType::named(media_type) else {
                return Err(ApiError::invalid(format!(
                    "{at}.media_type: must be image/png, image/jpeg, image/gif or image/webp"
                )));
            };
            if data.len() as u64 > MAX_IMAGE_BASE64_BYTES {
                return Err(ApiError::invalid(format!(
                    "{at}.data: {} bytes of base64, more than the limit of {MAX_IMAGE_BASE64_BYTES} for an image",
                    data.len()
                )));
            }
            let bytes = decode(data)?;
            if let Some(found) = MediaType::of(&bytes)
                && found != declared
            {
                return Err(ApiError::invalid(format!(
                    "{at}.media_type: {media_type} was given, but the data is an {} image",
                    found.as_str()
                )));
            }
            image::check(&bytes).map_err(|refusal| ApiError::invalid(format!("{at}.data: {refusal}")))?;
            Ok(())
        }
        ContentBlock::Document { source: DocumentSource::Base64 { media_type, data }, .. } => {
            if media_type != "application/pdf" {
                return Err(ApiError::invalid(format!(
                    "{at}.media_type: must be application/pdf (send text as a text source)"
                )));
            }
            if data.len() as u64 > MAX_DOCUMENT_BASE64_BYTES {
                return Err(ApiError::invalid(format!(
                    "{at}.data: {} bytes of base64, more than the limit of {MAX_DOCUMENT_BASE64_BYTES} for a document",
                    data.len()
                )));
            }
            if !decode(data)?.starts_with(b"%PDF-") {
                return Err(ApiError::invalid(format!("{at}.data: is not a PDF (it does not start with %PDF-)")));
            }
            Ok(())
        }
        ContentBlock::Document { source: DocumentSource::Text { media_type, .. }, .. }
            if media_type != "text/plain" =>
        {
            Err(ApiError::invalid(format!("{at}.media_type: must be text/plain")))
        }
        ContentBlock::Image { source: ImageSource::Url { .. } | ImageSource::File { .. } }
        | ContentBlock::Document {
            source: DocumentSource::Text { .. } | DocumentSource::Url { .. } | DocumentSource::File { .. },
            ..
        }
        | ContentBlock::Text { .. }
        | ContentBlock::SearchResult { .. }
        | ContentBlock::Redacted => Ok(()),
    }
}

/// Checks that confirmations and tool results answer open calls of this
/// session, each at most once (also within the request). A `user.tool_result`
/// must answer a call a worker may run: an `agent.tool_use` of a tool that
/// does not run on the server, allowed by its policy or by a
/// `user.tool_confirmation`, with no result yet.
fn check_references(store: &SledStore, session: &StoredSession, inputs: &[Event]) -> Result<(), ApiError> {
    let mut answered_here: Vec<(EventType, EventId)> = Vec::new();
    let mut allowed_here: Vec<EventId> = Vec::new();
    for (idx, event) in inputs.iter().enumerate() {
        let field = format!("events[{idx}]");
        if let Event::UserDefineOutcome(_) = event
            && let Some(open) = open_outcome(store, session.id)?
        {
            // One outcome at a time (behaviour digest §10).
            return Err(ApiError::invalid(format!(
                "{field}: outcome {open} is still being worked on; a session works towards one outcome at a \
                 time: wait for its verdict, or interrupt the session to end it (at its budget, raise the budget \
                 first)"
            )));
        }
        if let Some(target) = event.answers() {
            let kind = event.event_type();
            if answered_here.contains(&(kind, target)) {
                return Err(ApiError::invalid(format!(
                    "{field}: {target} is already answered by an earlier event of this request"
                )));
            }
            answered_here.push((kind, target));
        }
        if let Event::UserToolConfirmation(confirmation) = event {
            let id = confirmation.tool_use_id;
            let target = find_event(store, session.id, id)?.map(|(_, entry)| entry.event);
            let permission = if let Some(Event::AgentToolUse(AgentToolUse { evaluated_permission, .. })) = &target {
                *evaluated_permission
            } else if let Some(Event::AgentMcpToolUse(tool_use)) = &target {
                tool_use.evaluated_permission
            } else {
                return Err(ApiError::invalid(format!("{field}.tool_use_id: {id} is not a tool use of this session")));
            };
            if permission != Some(EvaluatedPermission::Ask) {
                return Err(ApiError::invalid(format!(
                    "{field}.tool_use_id: {id} does not await confirmation (its evaluated_permission is not ask)"
                )));
            }
            if answered(store, session.id, id, &[EventType::UserToolConfirmation])? {
                return Err(ApiError::invalid(format!("{field}.tool_use_id: {id} was already confirmed")));
            }
            // Closed by the server (an interrupt or a superseding message
            // answers pending calls with an error result): nothing awaits it.
            if answered(store, session.id, id, &[EventType::AgentToolResult, EventType::AgentMcpToolResult])? {
                return Err(ApiError::invalid(format!(
                    "{field}.tool_use_id: {id} already has a result and no longer awaits confirmation"
                )));
            }
            if confirmation.result == ConfirmationResult::Allow {
                allowed_here.push(id);
            }
        } else if let Event::UserCustomToolResult(result) = event {
            let id = result.custom_tool_use_id;
            let target = find_event(store, session.id, id)?.map(|(_, entry)| entry.event);
            if !matches!(target, Some(Event::AgentCustomToolUse(_))) {
                return Err(ApiError::invalid(format!(
                    "{field}.custom_tool_use_id: {id} is not a custom tool use of this session"
                )));
            }
            // The server's error result closes a call that was interrupted
            // or superseded: one answer per call, as for `user.tool_result`.
            if answered(store, session.id, id, &[EventType::UserCustomToolResult, EventType::AgentToolResult])? {
                return Err(ApiError::invalid(format!("{field}.custom_tool_use_id: {id} already has a result")));
            }
        } else if let Event::UserToolResult(result) = event {
            let id = result.tool_use_id;
            let target = find_event(store, session.id, id)?.map(|(_, entry)| entry.event);
            let Some(Event::AgentToolUse(tool_use)) = target else {
                return Err(ApiError::invalid(format!("{field}.tool_use_id: {id} is not a tool use of this session")));
            };
            if answered(store, session.id, id, &[EventType::UserToolResult, EventType::AgentToolResult])? {
                return Err(ApiError::invalid(format!("{field}.tool_use_id: {id} already has a result")));
            }
            let not_executable = |why: String| {
                ApiError::invalid(format!("{field}.tool_use_id: {id} ({}) {why}", tool_use.name))
                    .with_code("tool_use_not_executable")
            };
            if SERVER_SIDE_TOOLS.contains(&tool_use.name.as_str()) {
                return Err(not_executable("runs on the server, not on a worker: Logbook records its result".into()));
            }
            match tool_use.evaluated_permission {
                None | Some(EvaluatedPermission::Allow) => {}
                Some(EvaluatedPermission::Deny) => {
                    return Err(not_executable("was denied by the permission policy and must not run".into()));
                }
                Some(EvaluatedPermission::Ask) => {
                    let confirmed = allowed_here.contains(&id)
                        || confirmation_of(store, session.id, id)? == Some(ConfirmationResult::Allow);
                    if !confirmed {
                        return Err(not_executable(
                            "awaits a user.tool_confirmation; it may run only once allowed".into(),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The session's outcome still worked towards, if any: the newest outcome
/// event is its definition, or a verdict asking for a revision (one outcome
/// is open at a time, so the newest event is the newest outcome's). A
/// definition followed by a model request, then an `end_turn` or `refusal`
/// idle, and no verdict was worked on by an older runner, which did not
/// grade: it is over (as the state machine has it).
fn open_outcome(store: &SledStore, session: SessionId) -> Result<Option<OutcomeId>, ApiError> {
    let types = [EventType::UserDefineOutcome, EventType::SpanOutcomeEvaluationEnd];
    let Some(record) = store.last_of_types(session, &types)? else { return Ok(None) };
    let entry = record.entry().map_err(ApiError::internal)?;
    if let Event::SpanOutcomeEvaluationEnd(end) = &entry.event {
        if end.result.is_terminal() {
            return Ok(None);
        }
        // A revision asked at the last allowed evaluation ends it too
        // (`machine::ends_outcome`): that needs its definition.
        let defined = store.last_of_types(session, &[EventType::UserDefineOutcome])?;
        let max_iterations = match defined.map(|r| r.entry()).transpose().map_err(ApiError::internal)? {
            Some(Entry { event: Event::UserDefineOutcome(defined), .. }) if defined.outcome_id == end.outcome_id => {
                defined.max_iterations.unwrap_or(logbook_replay::machine::DEFAULT_OUTCOME_ITERATIONS)
            }
            Some(_) | None => return Ok(Some(end.outcome_id)),
        };
        let ends = logbook_replay::machine::ends_outcome(end.result, end.iteration, max_iterations);
        return Ok((!ends).then_some(end.outcome_id));
    }
    let Event::UserDefineOutcome(defined) = &entry.event else { return Ok(None) };
    // A scan may stop short of what it was asked (the store's byte budget).
    let mut from = Seq::new(record.seq().get() + 1);
    let mut worked = false;
    loop {
        let types = [EventType::SpanModelRequestStart, EventType::SessionStatusIdle];
        let step = store.scan_types(session, &types, from, MAX_TURN_SCAN)?;
        let Some(last) = step.last() else { return Ok(Some(defined.outcome_id)) };
        from = Seq::new(last.seq().get() + 1);
        for record in step {
            let event = record.entry().map_err(ApiError::internal)?.event;
            if let Event::SessionStatusIdle(idle) = event {
                if worked && matches!(idle.stop_reason, StopReason::EndTurn | StopReason::Refusal) {
                    return Ok(None);
                }
            } else {
                worked = true;
            }
        }
    }
}

/// Records read per step of [`open_outcome`]'s scan.
const MAX_TURN_SCAN: usize = 256;

/// The verdict of the confirmation of `target`, if one was recorded.
fn confirmation_of(
    store: &SledStore,
    session: SessionId,
    target: EventId,
) -> Result<Option<ConfirmationResult>, ApiError> {
    Ok(answer_to(store, session, target, &[EventType::UserToolConfirmation])?.and_then(|event| {
        if let Event::UserToolConfirmation(confirmation) = event { Some(confirmation.result) } else { None }
    }))
}

/// Why the session is idle, if its latest status is idle.
fn idle_reason(last_status: Option<&Event>) -> Option<&StopReason> {
    if let Some(Event::SessionStatusIdle(idle)) = last_status { Some(&idle.stop_reason) } else { None }
}

/// What a session paused at its budget still accepts (behaviour digest §12).
fn settles_a_call(event: &Event) -> bool {
    matches!(
        event,
        Event::UserToolConfirmation(_)
            | Event::UserToolResult(_)
            | Event::UserCustomToolResult(_)
            | Event::UserInterrupt(_)
    )
}

/// Whether a session paused at its budget accepts `event` but drops it: an
/// interrupt then is neither persisted, listed nor echoed (behaviour digest
/// §3.6, §12), since there is no turn to interrupt and nothing may start one.
fn ignored_at_budget(event: &Event) -> bool {
    matches!(event, Event::UserInterrupt(_))
}

/// Records scanned past an id's seq hint before giving up on finding it.
const MAX_FIND_SCAN: usize = 10_000;

/// The entry with this id in the session's log and its seq, found through the
/// seq its id carries. That seq is a lower bound (the runner picks ids of
/// streamed events before appending them, and other appends may land first),
/// so a miss scans forward a bounded distance.
pub fn find_event(store: &SledStore, session: SessionId, id: EventId) -> Result<Option<(Seq, Entry)>, ApiError> {
    let mut from = id.seq_hint();
    let mut scanned = 0;
    while scanned < MAX_FIND_SCAN {
        let step = if scanned == 0 { 1 } else { LIST_STEP };
        let records = store.read(session, from, step)?;
        let Some(last) = records.last() else { return Ok(None) };
        for record in &records {
            let entry = record.entry().map_err(ApiError::internal)?;
            if entry.id == id {
                return Ok(Some((record.seq(), entry)));
            }
        }
        scanned += records.len();
        from = Seq::new(last.seq().get() + 1);
    }
    Ok(None)
}

/// Whether an event of one of `types` after the target names `target`.
fn answered(store: &SledStore, session: SessionId, target: EventId, types: &[EventType]) -> Result<bool, ApiError> {
    Ok(answer_to(store, session, target, types)?.is_some())
}

/// The first event of `types` that answers `target` (scanning the type index
/// from just after the target's seq hint).
fn answer_to(
    store: &SledStore,
    session: SessionId,
    target: EventId,
    types: &[EventType],
) -> Result<Option<Event>, ApiError> {
    let mut from = Seq::new(target.seq_hint().get() + 1);
    loop {
        let records = store.scan_types(session, types, from, LIST_STEP)?;
        let Some(last) = records.last() else { return Ok(None) };
        from = Seq::new(last.seq().get() + 1);
        for record in &records {
            let entry = record.entry().map_err(ApiError::internal)?;
            if entry.event.answers() == Some(target) {
                return Ok(Some(entry.event));
            }
        }
    }
}

/// Sends whose strings hold up to this many bytes are checked and submitted
/// inline on the async thread (see [`send`]); larger ones on the blocking pool.
const INLINE_SEND_MAX_BYTES: usize = 64 << 10;

/// The bytes of the strings in `value` (keys included): what encoding and
/// compressing it will cost, roughly.
fn text_bytes(value: &Value) -> usize {
    match value {
        Value::String(text) => text.len(),
        Value::Array(items) => items.iter().map(text_bytes).sum(),
        Value::Object(fields) => fields.iter().map(|(key, value)| key.len() + text_bytes(value)).sum(),
        Value::Null | Value::Bool(_) | Value::Number(_) => 8,
    }
}

/// Whether `event` is an answer to a call, which the send checks against the
/// call and its other answers in the log (see [`check_references`]).
fn answers_a_call(event: &Value) -> bool {
    matches!(
        event.get("type").and_then(Value::as_str),
        Some("user.tool_confirmation" | "user.custom_tool_result" | "user.tool_result")
    )
}

/// The longest a send that lost a race waits for the winner's records to
/// become durable before it reads the head again (a failed batch never moves
/// the head; the next attempt then reports the store's error).
pub(crate) const RACE_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// What follows a send's append once it is durable ([`FollowUp::run`]);
/// dropped before it is done, it hands the rest to a task of its own.
struct FollowUp {
    state: AppState,
    tenant: Tenant,
    session: SessionId,
    /// A self-hosted session whose work item the send asks for.
    rework: Option<std::sync::Arc<StoredSession>>,
    interrupt: bool,
    stage: FollowUpStage,
}

/// Where a [`FollowUp`] is.
enum FollowUpStage {
    /// The append is not durable yet.
    Pending(PendingAppend),
    /// It is; the work item and the wake-up are under way.
    Durable,
    /// Done, or nothing to do (the append failed).
    Done,
}

impl FollowUp {
    async fn run(mut self) -> Result<Vec<Record>, ApiError> {
        let durable = match &mut self.stage {
            FollowUpStage::Pending(pending) => pending.await,
            FollowUpStage::Durable | FollowUpStage::Done => Ok(Vec::new()),
        };
        let records = match durable {
            Ok(records) => records,
            Err(err) => {
                self.stage = FollowUpStage::Done;
                return Err(err.into());
            }
        };
        self.stage = FollowUpStage::Durable;
        Self::act(&self.state, self.tenant, self.session, self.rework.clone(), self.interrupt).await;
        self.stage = FollowUpStage::Done;
        Ok(records)
    }

    /// Queues the work item and wakes the runner.
    async fn act(
        state: &AppState,
        tenant: Tenant,
        id: SessionId,
        rework: Option<std::sync::Arc<StoredSession>>,
        interrupt: bool,
    ) {
        if let Some(session) = rework {
            let worker_state = state.clone();
            let queued = state
                .blocking(move |store| {
                    super::work::ensure_session_work(&worker_state, store, &tenant, &session, WorkNeed::Input)
                })
                .await;
            // The events are durable: the send succeeded, and answering an
            // error would have the client send them again. The runner queues
            // the work when it waits on a worker.
            if let Err(err) = queued {
                tracing::warn!(session = %id, error = %err.message, "queuing a work item after a send failed");
            }
        }
        if let Some(runner) = state.runner() {
            runner.wake(state, tenant.workspace, id, interrupt);
        }
    }
}

impl Drop for FollowUp {
    fn drop(&mut self) {
        let pending = match std::mem::replace(&mut self.stage, FollowUpStage::Done) {
            FollowUpStage::Pending(pending) => Some(pending),
            FollowUpStage::Durable => None,
            FollowUpStage::Done => return,
        };
        // A runtime is there whenever a request is dropped; without one (the
        // process ending) nothing could act anyway.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (state, tenant, id, rework, interrupt) =
            (self.state.clone(), self.tenant, self.session, self.rework.take(), self.interrupt);
        runtime.spawn(async move {
            if let Some(pending) = pending
                && pending.await.is_err()
            {
                return;
            }
            Self::act(&state, tenant, id, rework, interrupt).await;
        });
    }
}

/// One attempt at a send: the events submitted, or the head they must wait for.
enum SendAttempt {
    Submitted {
        pending: PendingAppend,
        queued: bool,
        rework: Option<std::sync::Arc<StoredSession>>,
    },
    /// Another append to the session is written but not yet durable; the
    /// session's written head is here.
    Behind(Seq),
    /// Every event was ignored (see [`ignored_at_budget`]): nothing appended.
    Ignored,
}

/// Checks a send against the session's durable state and submits it.
fn try_send(state: &AppState, tenant: &Tenant, id: SessionId, events: &[Value]) -> Result<SendAttempt, ApiError> {
    let store = state.store();
    // Everything below is checked against the log at this head or later, and
    // the events are appended at it: if anything lands after it (a status
    // the checks did not see), the append conflicts and the send checks again.
    let head = sessions::head_of(store, tenant, id)?;
    // Only the status is read from the log here (one record), not the
    // resources and usage a retrieve overlays: this is the hot path.
    let session = state.sessions().load(store, tenant, id)?;
    let last_status = sessions::last_status(store, id)?;
    let status = last_status.as_ref().and_then(sessions::status_of).unwrap_or(session.status);
    if session.archived_at.is_some() || status == Status::Terminated {
        return Err(ApiError::invalid(format!("session {id} is archived or terminated and accepts no events")));
    }
    // Sent during a turn, a message or interrupt waits for the runner.
    let queued = matches!(status, Status::Running | Status::Rescheduling) && state_has_runner(state);
    let idle = idle_reason(last_status.as_ref());
    let requires_action = matches!(idle, Some(StopReason::RequiresAction { .. }));
    let context = InputContext::Send { requires_action };
    let mut inputs = parse_inputs(events, context, &session, state.now())?;
    check_files(store, tenant, &inputs, state.now())?;
    // Paused at the budget until it is raised or removed: from then on the
    // runner resumes the paused work, and the session takes input again.
    if matches!(idle, Some(StopReason::BudgetReached)) && !sessions::budget_changed_since_last_status(store, id)? {
        if let Some(idx) = inputs.iter().position(|event| !settles_a_call(event)) {
            return Err(ApiError::invalid(format!(
                "events[{idx}]: the session is paused at its budget; until the budget is raised or removed it \
                 accepts only user.tool_confirmation, user.tool_result, user.custom_tool_result and user.interrupt"
            ))
            .with_code("budget_reached"));
        }
        inputs.retain(|event| !ignored_at_budget(event));
        if inputs.is_empty() {
            return Ok(SendAttempt::Ignored);
        }
    }
    // A self-hosted session whose work item stopped is queued again once its
    // new input is durable; so is one waiting on calls that gets an interrupt
    // (behaviour digest §3.6: it re-queues the work a failing worker left).
    let interrupts = requires_action && inputs.iter().any(|event| matches!(event, Event::UserInterrupt(_)));
    let rework = (session.self_hosted && (interrupts || inputs.iter().any(starts_work)))
        .then(|| std::sync::Arc::clone(&session));
    Ok(match submit_checked(state, store, &session, inputs, head)? {
        Ok(pending) => SendAttempt::Submitted { pending, queued, rework },
        Err(written) => SendAttempt::Behind(written),
    })
}

/// Appends sent input at `head`, a durable head read before anything the
/// send was checked against, after checking its references against the log
/// at or past it: if anything was appended after it (the runner
/// closing a call, another client answering it), the events are not
/// submitted and the session's written head is returned, so the caller waits
/// for it to be durable and checks again, and a call never gets two answers.
///
/// The events are submitted, not yet durable: the returned append completes
/// once they are (awaited by the handler, so no thread waits on the disk).
fn submit_checked(
    state: &AppState,
    store: &SledStore,
    session: &StoredSession,
    inputs: Vec<Event>,
    head: Seq,
) -> Result<Result<PendingAppend, Seq>, ApiError> {
    check_references(store, session, &inputs)?;
    let at = state.now();
    let entries: Vec<Entry> = inputs
        .into_iter()
        .enumerate()
        .map(|(idx, event)| Entry { id: state.event_id(Seq::new(head.get() + idx as u64)), event, at })
        .collect();
    match store.append_submit(session.id, head, &entries) {
        Ok(pending) => {
            state.metrics().events_appended.fetch_add(entries.len() as u64, std::sync::atomic::Ordering::Relaxed);
            Ok(Ok(pending))
        }
        Err(AppendError::Conflict { actual, .. }) => Ok(Err(actual)),
        Err(other) => Err(other.into()),
    }
}

/// Appends client input events; returns the durable records.
pub fn append_inputs(
    state: &AppState,
    store: &SledStore,
    session: &StoredSession,
    inputs: Vec<Event>,
) -> Result<Vec<Record>, ApiError> {
    append_events(state, store, session.id, inputs)
}

/// Appends events Logbook itself produces (status, updates).
pub fn append_system(
    state: &AppState,
    store: &SledStore,
    session: SessionId,
    events: Vec<Event>,
) -> Result<(), ApiError> {
    append_events(state, store, session, events).map(|_| ())
}

/// Appends at the current head, retrying when another writer got there first.
fn append_events(
    state: &AppState,
    store: &SledStore,
    session: SessionId,
    events: Vec<Event>,
) -> Result<Vec<Record>, ApiError> {
    // The durable head may lag the written one while another append waits on
    // its barrier; a conflict names the written head, so retry there.
    let mut expected = store.head(session)?.next;
    for _ in 0..MAX_APPEND_ATTEMPTS {
        let at = state.now();
        let entries: Vec<Entry> = events
            .iter()
            .enumerate()
            .map(|(idx, event)| Entry {
                id: state.event_id(Seq::new(expected.get() + idx as u64)),
                event: event.clone(),
                at,
            })
            .collect();
        match store.append(session, expected, &entries) {
            Ok(records) => {
                state.metrics().events_appended.fetch_add(records.len() as u64, std::sync::atomic::Ordering::Relaxed);
                return Ok(records);
            }
            Err(AppendError::Conflict { actual, .. }) => expected = actual,
            Err(other) => return Err(other.into()),
        }
    }
    Err(ApiError::overloaded("the session is too busy to append to right now; retry"))
}

/// Whether a credential is a self-hosted worker's (an environment key or a
/// sessions token): what it reads of a session is [`as_seen_by_worker`].
pub(crate) fn is_worker(principal: &Principal) -> bool {
    match principal.scope {
        KeyScope::Environment { .. } | KeyScope::WorkSession { .. } => true,
        KeyScope::Workspace => false,
    }
}

/// An event as a self-hosted worker reads it. The SDK's worker counts a call
/// settled only by a `user.tool_result` (or `user.custom_tool_result`), or by
/// a `user.tool_confirmation` denying it; it runs any other call it sees, and
/// holds an `ask` call until its confirmation comes. A call Logbook answered
/// itself (denied, interrupted, superseded, cut off, failed, or a web tool it
/// ran) is answered by an `agent.tool_result`, which the worker does not
/// read: to a worker that answer reads as the denial it amounts to (same id
/// and time), so no worker runs the call or waits on it. Everything else is
/// as stored.
pub(crate) fn as_seen_by_worker(entry: Entry) -> Entry {
    let Event::AgentToolResult(result) = &entry.event else { return entry };
    let denial = UserToolConfirmation {
        tool_use_id: result.tool_use_id,
        result: logbook_core::event::ConfirmationResult::Deny,
        deny_message: Some("answered by the server; not for a worker to run".to_owned()),
        session_thread_id: None,
    };
    Entry { id: entry.id, at: entry.at, event: Event::UserToolConfirmation(denial) }
}

/// The API's JSON for a stored record.
pub fn record_json(record: &Record) -> Result<Value, ApiError> {
    let entry = record.entry().map_err(ApiError::internal)?;
    serde_json::to_value(&entry).map_err(ApiError::internal)
}

pub async fn list(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Extension(principal): Extension<Principal>,
    Path(session_id): Path<String>,
    query: Query,
) -> Result<Json<Page<Value>>, ApiError> {
    let id = sessions::parse_session_id(&session_id)?;
    let worker = is_worker(&principal);
    let limit = query.limit(DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT)?;
    let order = query.order(Order::Asc)?;
    let range = query.time_range("created_at")?;
    // Internal types (`x.*`) are types nothing listed has; anything else that
    // is not a type is a mistake worth saying.
    let mut types: Vec<EventType> = Vec::new();
    for raw in query.all("types") {
        let event_type: EventType =
            raw.parse().map_err(|_| ApiError::invalid(format!("types[]: {raw:?} is not an event type")))?;
        if event_type.is_public() {
            types.push(event_type);
        }
    }
    let type_filter = !query.all("types").is_empty();
    let cursor = match query.one("page") {
        None => None,
        Some(raw) => {
            let bytes = decode_cursor("events", raw)?;
            let (&way, seq) = bytes.split_first().ok_or_else(|| ApiError::invalid("page: malformed cursor"))?;
            let expected = match order {
                Order::Asc => b'a',
                Order::Desc => b'd',
            };
            if way != expected {
                return Err(ApiError::invalid(
                    "page: this cursor belongs to the other order; keep the order of the first page",
                ));
            }
            let seq: [u8; 8] = seq.try_into().map_err(|_| ApiError::invalid("page: malformed cursor"))?;
            Some(Seq::new(u64::from_be_bytes(seq)))
        }
    };
    let page = state
        .blocking(move |store| {
            sessions::load(store, &tenant, id)?;
            let keep = |record: &Record| -> Result<Option<Value>, ApiError> {
                let entry = record.entry().map_err(ApiError::internal)?;
                let event_type = entry.event.event_type();
                let wanted =
                    event_type.is_public() && (!type_filter || types.contains(&event_type)) && range.contains(entry.at);
                if !wanted {
                    return Ok(None);
                }
                let entry = if worker { as_seen_by_worker(entry) } else { entry };
                serde_json::to_value(&entry).map(Some).map_err(ApiError::internal)
            };
            // The next step of an ascending walk from `from`: records of the
            // asked types through the type index, or every record.
            let read_step = |from: Seq| -> Result<Vec<Record>, ApiError> {
                Ok(if type_filter {
                    store.scan_types(id, &types, from, LIST_STEP)?
                } else {
                    store.read_within(id, from, LIST_STEP, MAX_PAGE_BYTES)?
                })
            };
            // Whether a record (of the asked types) exists from `at` on: a step
            // shorter than asked may have been cut by the store's byte budget,
            // so only this says the log ends.
            let more_from = |at: Seq| -> Result<bool, ApiError> {
                Ok(if type_filter {
                    !store.scan_types(id, &types, at, 1)?.is_empty()
                } else {
                    store.head(id)?.next > at
                })
            };
            let mut page_bytes = PageBytes::new(store.read_bytes().min(MAX_PAGE_BYTES));
            let mut data = Vec::new();
            let mut next_cursor: Option<Seq> = None;
            match order {
                Order::Asc => {
                    let mut from = cursor.unwrap_or(Seq::ZERO);
                    let mut exhausted = false;
                    let mut cut = false;
                    'steps: for _ in 0..MAX_LIST_STEPS {
                        let records = read_step(from)?;
                        let Some(last) = records.last() else {
                            exhausted = true;
                            break;
                        };
                        let step_end = Seq::new(last.seq().get() + 1);
                        for record in &records {
                            if data.len() == limit {
                                break;
                            }
                            if let Some(value) = keep(record)? {
                                if !page_bytes.admit(record) {
                                    // The next page starts with this event.
                                    next_cursor = Some(record.seq());
                                    cut = true;
                                    break 'steps;
                                }
                                data.push(value);
                                next_cursor = Some(Seq::new(record.seq().get() + 1));
                            }
                        }
                        from = step_end;
                        if data.len() < limit && records.len() < LIST_STEP && !more_from(step_end)? {
                            exhausted = true;
                        }
                        if data.len() == limit || exhausted {
                            break;
                        }
                    }
                    if cut {
                        // Cut by bytes: `next_cursor` names the event that did not fit.
                    } else if data.len() == limit
                        && let Some(after) = next_cursor
                    {
                        // A full page may have a next one; make sure before
                        // sending a cursor. With the whole filter (types, public, created_at),
                        // as the descending probe; if its budget runs out
                        // first, the cursor stays: at worst the next page is
                        // empty.
                        let mut more = true;
                        let mut probe = after;
                        for _ in 0..MAX_LIST_STEPS {
                            let records = read_step(probe)?;
                            let Some(last) = records.last() else {
                                more = false;
                                break;
                            };
                            let next = Seq::new(last.seq().get() + 1);
                            if records.iter().map(&keep).any(|r| matches!(r, Ok(Some(_)))) {
                                break;
                            }
                            if records.len() < LIST_STEP && !more_from(next)? {
                                more = false;
                                break;
                            }
                            probe = next;
                        }
                        if !more {
                            next_cursor = None;
                        }
                    } else if exhausted {
                        next_cursor = None;
                    } else {
                        // The scan's budget ran out before the page filled:
                        // the next page goes on from where it stopped.
                        next_cursor = Some(from);
                    }
                }
                Order::Desc => {
                    let mut before = cursor.unwrap_or(Seq::new(u64::MAX));
                    let mut exhausted = false;
                    let mut cut = false;
                    'steps: for _ in 0..MAX_LIST_STEPS {
                        let records = store.read_before_within(id, before, LIST_STEP, MAX_PAGE_BYTES)?;
                        let Some(first) = records.first() else {
                            exhausted = true;
                            break;
                        };
                        let step_start = first.seq();
                        for record in records.iter().rev() {
                            if data.len() == limit {
                                break;
                            }
                            if let Some(value) = keep(record)? {
                                if !page_bytes.admit(record) {
                                    // The next page starts with this event.
                                    next_cursor = Some(Seq::new(record.seq().get() + 1));
                                    cut = true;
                                    break 'steps;
                                }
                                data.push(value);
                                next_cursor = Some(record.seq());
                            }
                        }
                        before = step_start;
                        if data.len() == limit {
                            break;
                        }
                        if step_start == Seq::ZERO {
                            exhausted = true;
                            break;
                        }
                    }
                    if cut {
                        // Cut by bytes: `next_cursor` is just after the event that did not fit.
                    } else if data.len() < limit {
                        // Done, or the scan's budget ran out before the page
                        // filled: the next page goes on from where it stopped.
                        next_cursor = (!exhausted).then_some(before);
                    }
                    // A full page: send a cursor only if an older matching event exists.
                    if data.len() == limit
                        && let Some(before) = next_cursor
                    {
                        // If the probe's budget runs out first, the cursor stays:
                        // at worst the next page is empty.
                        let mut more = true;
                        let mut probe = before;
                        for _ in 0..MAX_LIST_STEPS {
                            let records = store.read_before_within(id, probe, LIST_STEP, MAX_PAGE_BYTES)?;
                            let Some(first) = records.first() else {
                                more = false;
                                break;
                            };
                            let first_seq = first.seq();
                            if records.iter().map(&keep).any(|r| matches!(r, Ok(Some(_)))) {
                                break;
                            }
                            if first_seq == Seq::ZERO {
                                more = false;
                                break;
                            }
                            probe = first_seq;
                        }
                        if !more {
                            next_cursor = None;
                        }
                    }
                }
            }
            let tag = match order {
                Order::Asc => b'a',
                Order::Desc => b'd',
            };
            let next_page = next_cursor.map(|seq| {
                let mut bytes = vec![tag];
                bytes.extend_from_slice(&seq.get().to_be_bytes());
                encode_cursor("events", &bytes)
            });
            Ok(Page { data, next_page, prev_page: None })
        })
        .await?;
    Ok(Json(page))
}

/// Most bytes of events one page of the events list holds (at least one
/// event; counted as the store's read budget counts them): a page is built
/// whole before it is sent, so this is what a client that does not read its
/// response makes the server hold, about 2.5× this with the page's JSON
/// (reliability goal G-S3: 16 stalled readers within 64 MiB). 1,000 typical
/// events (≈ 4.5 KiB each) take about five pages, most events (under 1 KiB)
/// far fewer; the SDK follows `next_page` by itself.
pub const MAX_PAGE_BYTES: usize = 1 << 20;

/// The bytes of events one page of the list may still take
/// ([`MAX_PAGE_BYTES`], or less if the store's read budget is lower), always
/// at least one event, so that a session of large events is listed over
/// more pages (each with a `next_page`) rather than in one huge response.
#[derive(Debug)]
struct PageBytes {
    left: usize,
    any: bool,
}

impl PageBytes {
    fn new(bytes: usize) -> PageBytes {
        PageBytes { left: bytes, any: false }
    }

    /// Whether the event of `record` still fits on the page.
    fn admit(&mut self, record: &Record) -> bool {
        let size = logbook_store::read_bytes_of(record);
        if self.any && size > self.left {
            return false;
        }
        self.left = self.left.saturating_sub(size);
        self.any = true;
        true
    }
}

/// Reads the stored session object of `id`, for handlers outside this module.
pub fn session_of(store: &SledStore, tenant: &Tenant, id: SessionId) -> Result<StoredSession, ApiError> {
    let (bytes, _) = sessions::load(store, tenant, id)?;
    from_bytes(&bytes)
}
