//! `/x/v1/sessions/{id}/state` and `/x/v1/sessions/{id}/files/{path}`: a
//! session as it was after any record of its log.
//!
//! The state is the checkpointed projection (`crate::projection`): status,
//! usage, open tool calls, the workspace tree, and the context window as the
//! exact Messages API request the next model call makes from that point, built
//! by the same code the runner sends with (`crate::model::settings`). The
//! request of the model call whose `span.model_request_start` is at seq S is
//! the state at `S - 1`'s `context.request`.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use logbook_core::{Seq, SessionId};
use logbook_replay::SessionState;
use logbook_replay::state::AgentSettings;
use logbook_replay::workspace::Node;
use logbook_store::{Blobs, Read, SledStore};
use serde_json::{Value, json};

use crate::api::error::ApiError;
use crate::api::events::session_of;
use crate::api::sessions::{StoredSession, parse_session_id};
use crate::api::wire::Query;
use crate::model::RequestOptions;
use crate::state::AppState;
use crate::tenancy::Tenant;

/// Most workspace entries a state response lists (`workspace.truncated` says
/// when there are more; the files endpoint reads any of them).
pub const MAX_STATE_FILES: usize = 10_000;

/// The seq a request asks about: `at_seq`, or the last record.
pub(crate) fn resolve_seq(store: &SledStore, id: SessionId, query: &Query) -> Result<Seq, ApiError> {
    let at = match query.one("at_seq") {
        None => None,
        Some(raw) => Some(raw.parse().map_err(|_| ApiError::invalid(format!("at_seq: {raw:?} is not a seq")))?),
    };
    seq_at(store, id, at)
}

/// `at`, checked against the session's log, or its last seq.
pub(crate) fn seq_at(store: &SledStore, id: SessionId, at: Option<u64>) -> Result<Seq, ApiError> {
    let head = store.head(id)?;
    let Some(last) = head.next.get().checked_sub(1) else {
        return Err(ApiError::invalid("the session has no events yet"));
    };
    match at {
        None => Ok(Seq::new(last)),
        Some(at) if at > last => {
            Err(ApiError::invalid(format!("at_seq: {at} is beyond the session's last seq {last}")))
        }
        Some(at) => Ok(Seq::new(at)),
    }
}

/// The request options this server's runner uses now.
pub(crate) fn current_options(state: &AppState) -> RequestOptions {
    state.runner().map_or_else(Default::default, |r| r.config().request_options.clone())
}

/// The settings the next model call would use: the recorded ones, or the
/// session's agent with the server's current options before the first call,
/// and at the head of a session whose agent changed since it was recorded
/// (a fork's overrides, an update), as the runner records them then.
pub fn settings_for(
    options: &RequestOptions,
    projected: &SessionState,
    session: &StoredSession,
    at_head: bool,
) -> (AgentSettings, &'static str) {
    let agent = serde_json::to_value(&session.agent).unwrap_or(Value::Null);
    if let Some(recorded) = &projected.agent
        && (!at_head || recorded.agent == agent)
    {
        return (recorded.clone(), "recorded");
    }
    (AgentSettings { agent, options: crate::model::settings::options_json(options) }, "current")
}

/// Whether `at` is the session's last seq.
pub(crate) fn is_head(store: &SledStore, id: SessionId, at: Seq) -> Result<bool, ApiError> {
    Ok(store.head(id)?.next.get() == at.get() + 1)
}

/// `GET /x/v1/sessions/{id}/state?at_seq=N`.
pub async fn state(
    State(app): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(raw): Path<String>,
    query: Query,
) -> Result<Json<Value>, ApiError> {
    let id = parse_session_id(&raw)?;
    let (session, at, projected, at_head) = app
        .blocking(move |store| {
            let session = session_of(store, &tenant, id)?;
            let at = resolve_seq(store, id, &query)?;
            let projected = crate::projection::state_at(store, id, at)?;
            Ok((session, at, projected, is_head(store, id, at)?))
        })
        .await?;
    Ok(Json(state_json(&current_options(&app), id, at, &session, &projected, at_head)))
}

/// The JSON of a projected state (shared with `logbook show`).
pub fn state_json(
    options: &RequestOptions,
    id: SessionId,
    at: Seq,
    session: &StoredSession,
    projected: &SessionState,
    at_head: bool,
) -> Value {
    let (settings, source) = settings_for(options, projected, session, at_head);
    let messages = projected.context.messages_json();
    let request = crate::model::settings::request_from(&settings, &messages);
    let totals = projected.usage.totals();
    let open: Vec<Value> = projected
        .machine
        .open_tools()
        .map(|(id, tool)| json!({"id": id, "name": tool.name, "started": tool.started}))
        .collect();
    let files: Vec<Value> =
        projected.workspace.iter().take(MAX_STATE_FILES).map(|(path, node)| node_json(path, node)).collect();
    let status = crate::api::sessions::Status::from(projected.machine.status());
    json!({
        "type": "session_state",
        "session_id": id,
        "at_seq": at,
        "status": status,
        "usage": {
            "input_tokens": totals.input_tokens,
            "output_tokens": totals.output_tokens,
            "cache_read_input_tokens": totals.cache_read_input_tokens,
            "cache_creation_input_tokens": totals.cache_creation_input_tokens,
            "active_seconds": totals.active_micros as f64 / 1e6,
            "model_requests": totals.n_model_requests,
            "server_tool_use": {
                "web_search_requests": totals.web_search_requests,
                "web_fetch_requests": totals.web_fetch_requests,
            },
        },
        "open_tool_calls": open,
        "context": {
            "request": request,
            "settings": source,
            "estimated_tokens": projected.estimated_prompt_tokens(),
            "summary": projected.context.summary(),
            "last_compaction_seq": projected.last_compaction,
        },
        "workspace": {
            "n_files": projected.workspace.len(),
            "total_bytes": projected.workspace.total_bytes(),
            "truncated": projected.workspace.len() > MAX_STATE_FILES,
            "files": files,
        },
        "fork_origin": projected.fork_origin,
    })
}

fn node_json(path: &str, node: &Node) -> Value {
    match node {
        Node::File { blob, size, mode } => json!({
            "path": path, "type": "file", "size": size, "mode": mode, "blob": logbook_replay::audit::to_hex(blob),
        }),
        Node::Symlink { target } => json!({"path": path, "type": "symlink", "target": target}),
    }
}

/// `GET /x/v1/sessions/{id}/files/{*path}?at_seq=N`: a file's bytes as the
/// session had it. The path is the sandbox path without its leading slash
/// (`workspace/src/main.rs`).
pub async fn file(
    State(app): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path((raw, path)): Path<(String, String)>,
    query: Query,
) -> Result<Response, ApiError> {
    let id = parse_session_id(&raw)?;
    let wanted = format!("/{}", path.trim_start_matches('/'));
    let (chunks, size) = app
        .blocking(move |store| {
            session_of(store, &tenant, id)?;
            let at = resolve_seq(store, id, &query)?;
            let projected = crate::projection::state_at(store, id, at)?;
            let (blob, size) = file_contents(&projected, &wanted, at)?;
            let missing = || {
                ApiError::not_found(format!(
                    "the contents of {wanted} at seq {at} are not in this server's store (a session imported from \
                     a bundle has its log, not its files' contents)"
                ))
                .with_code("file_contents_missing")
            };
            use crate::resources::content::ContentError;
            let chunks = match crate::resources::content::chunks(store, blob, size) {
                Ok(chunks) => chunks,
                Err(ContentError::Missing(_)) => return Err(missing()),
                Err(
                    err @ (ContentError::TooLarge { .. }
                    | ContentError::Source(_)
                    | ContentError::BadManifest(_)
                    | ContentError::Store(_)
                    | ContentError::Sink(_)),
                ) => return Err(ApiError::internal(err)),
            };
            // Every chunk is looked for before the answer starts: a missing
            // one would otherwise break off a 200 half way.
            for chunk in &chunks {
                if !store.has_blob(*chunk)? {
                    return Err(missing());
                }
            }
            Ok((chunks, size))
        })
        .await?;
    // One chunk in memory at a time, read as the client consumes the body.
    let slot = app.hold(tenant.workspace, crate::state::Held::Download).ok_or_else(ApiError::busy_downloads)?;
    let body = crate::resources::content::chunk_stream(app.store().clone(), chunks, slot);
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert("content-type", axum::http::HeaderValue::from_static("application/octet-stream"));
    headers.insert("content-length", axum::http::HeaderValue::from(size));
    Ok(response.into_response())
}

/// The stored contents (a blob, or a manifest of chunks: see
/// `resources::content`) and size of `path` in a projected workspace.
pub fn file_contents(projected: &SessionState, path: &str, at: Seq) -> Result<(logbook_core::Digest, u64), ApiError> {
    match projected.workspace.get(path) {
        Some(Node::File { blob, size, .. }) => Ok((logbook_core::Digest::from_bytes(*blob), *size)),
        Some(Node::Symlink { target }) => {
            Err(ApiError::invalid(format!("{path} is a symbolic link to {target} at seq {at}, not a file")))
        }
        None => Err(ApiError::not_found(format!("no file {path} in the workspace at seq {at}"))),
    }
}

/// `GET /x/v1/sessions/{id}/context?budget_tokens=N&at_seq=M`: the session's
/// context squeezed into a token budget (`logbook_replay::fit`), ready to send
/// as a Messages API `system` and `messages`.
pub async fn context(
    State(app): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(raw): Path<String>,
    query: Query,
) -> Result<Json<Value>, ApiError> {
    use logbook_replay::fit::{DEFAULT_BUDGET_TOKENS, MIN_BUDGET_TOKENS};
    let id = parse_session_id(&raw)?;
    let budget = match query.one("budget_tokens") {
        None => DEFAULT_BUDGET_TOKENS,
        Some(raw) => raw
            .parse::<u64>()
            .ok()
            .filter(|b| (MIN_BUDGET_TOKENS..=MAX_CONTEXT_BUDGET_TOKENS).contains(b))
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "budget_tokens: {raw:?} is not a number between {MIN_BUDGET_TOKENS} and {MAX_CONTEXT_BUDGET_TOKENS}"
                ))
            })?,
    };
    let (session, at, projected, at_head) = app
        .blocking(move |store| {
            let session = session_of(store, &tenant, id)?;
            let at = resolve_seq(store, id, &query)?;
            let projected = crate::projection::state_at(store, id, at)?;
            Ok((session, at, projected, is_head(store, id, at)?))
        })
        .await?;
    Ok(Json(context_json(&current_options(&app), id, at, &session, &projected, budget, at_head)))
}

/// The JSON of a fitted context (shared with `logbook show --budget-tokens`).
pub fn context_json(
    options: &RequestOptions,
    id: SessionId,
    at: Seq,
    session: &StoredSession,
    projected: &SessionState,
    budget: u64,
    at_head: bool,
) -> Value {
    let (settings, _) = settings_for(options, projected, session, at_head);
    let system = settings.agent.get("system").and_then(Value::as_str);
    let fitted = logbook_replay::fit::fit(projected, system, budget);
    json!({
        "type": "session_context",
        "session_id": id,
        "at_seq": at,
        "budget_tokens": budget,
        "estimated_tokens": fitted.estimated_tokens,
        "system": fitted.system,
        "messages": fitted.messages,
        "elided": fitted.elided,
        "calibration": {
            "factor": projected.calibration.factor_milli as f64 / 1000.0,
            "samples": projected.calibration.n_samples,
        },
    })
}

/// The largest budget the context endpoint accepts (a model's whole window).
pub const MAX_CONTEXT_BUDGET_TOKENS: u64 = 1_000_000;
