//! Session threads (`/v1/sessions/{id}/threads`, a preview of the hosted
//! API). Every session has one primary thread; Logbook runs each session as
//! that one thread (a coordinator's roster is stored but no child threads
//! are spawned), so a session's threads are exactly its primary thread: its
//! id is the session's with the thread prefix (`sthr_`), and its status,
//! usage, events and stream are the session's. Archiving the primary thread
//! is refused (archive the session).

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Value, json};

use logbook_core::{SessionId, ThreadId};

use super::error::ApiError;
use super::sessions::{self, Status};
use super::wire::Query;
use super::{Page, events, stream};
use crate::state::AppState;
use crate::tenancy::{Principal, Tenant};

/// Default and largest `limit` of the threads list (the reference's).
pub const MAX_THREADS_LIMIT: usize = 1000;

/// The id of `session`'s primary thread.
pub fn primary_thread(session: SessionId) -> ThreadId {
    ThreadId::from_bytes(session.to_bytes())
}

/// The session `raw_session` and, checked to be its primary thread,
/// `raw_thread`; 404 for anything else, as for a missing thread.
fn parse_ids(raw_session: &str, raw_thread: &str) -> Result<SessionId, ApiError> {
    let session = sessions::parse_session_id(raw_session)?;
    let thread = super::parse_id::<ThreadId>(raw_thread, "session_thread")?;
    if thread == primary_thread(session) {
        Ok(session)
    } else {
        Err(ApiError::not_found(format!("session_thread {raw_thread} not found")).with_code("session_thread_not_found"))
    }
}

/// The primary thread of `session` (the API's Session object).
fn thread_wire(session: &Value, thread: ThreadId) -> Value {
    let mut agent = session.get("agent").cloned().unwrap_or(Value::Null);
    if let Some(agent) = agent.as_object_mut() {
        // "The multiagent roster is not repeated here; read it from
        // Session.agent."
        agent.remove("multiagent");
    }
    let field = |name: &str| session.get(name).cloned().unwrap_or(Value::Null);
    json!({
        "id": thread,
        "type": "session_thread",
        "session_id": field("id"),
        "agent": agent,
        "status": field("status"),
        "parent_thread_id": null,
        "archived_at": field("archived_at"),
        "created_at": field("created_at"),
        "updated_at": field("updated_at"),
        "stats": field("stats"),
        "usage": field("usage"),
        "workflow_run_id": null,
    })
}

pub async fn list(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(session_id): Path<String>,
    query: Query,
) -> Result<Json<Page<Value>>, ApiError> {
    let id = sessions::parse_session_id(&session_id)?;
    query.limit(MAX_THREADS_LIMIT, MAX_THREADS_LIMIT)?;
    let statuses = query.all("statuses").into_iter().map(Status::parse).collect::<Result<Vec<_>, _>>()?;
    if let Some(raw) = query.one("page") {
        // The one page this list has ends with no next_page.
        return Err(ApiError::invalid(format!("page: {raw:?} is not a cursor this list returned")));
    }
    let session = sessions::current_wire(&state, tenant, id).await?;
    let status = session.get("status").and_then(Value::as_str).unwrap_or_default();
    let data = if statuses.is_empty() || statuses.iter().any(|s| s.wire() == status) {
        vec![thread_wire(&session, primary_thread(id))]
    } else {
        Vec::new()
    };
    Ok(Json(Page { data, next_page: None, prev_page: None }))
}

pub async fn retrieve(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path((session_id, thread_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_ids(&session_id, &thread_id)?;
    let session = sessions::current_wire(&state, tenant, id).await?;
    Ok(Json(thread_wire(&session, primary_thread(id))))
}

pub async fn archive(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path((session_id, thread_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_ids(&session_id, &thread_id)?;
    // The session must be the caller's before anything is said about it.
    sessions::current_wire(&state, tenant, id).await?;
    Err(ApiError::invalid(format!(
        "session_thread {thread_id} is the session's primary thread, which cannot be archived on its own; archive \
         the session instead"
    ))
    .with_code("primary_thread"))
}

pub async fn events(
    state: State<AppState>,
    tenant: Extension<Tenant>,
    principal: Extension<Principal>,
    Path((session_id, thread_id)): Path<(String, String)>,
    query: Query,
) -> Result<Json<Page<Value>>, ApiError> {
    parse_ids(&session_id, &thread_id)?;
    events::list(state, tenant, principal, Path(session_id), query).await
}

pub async fn stream(
    state: State<AppState>,
    tenant: Extension<Tenant>,
    principal: Extension<Principal>,
    Path((session_id, thread_id)): Path<(String, String)>,
    query: Query,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    parse_ids(&session_id, &thread_id)?;
    stream::stream(state, tenant, principal, Path(session_id), query, headers).await
}
