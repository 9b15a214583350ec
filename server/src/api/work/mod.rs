//! `/v1/environments/{environment_id}/work...`: the work queue of a
//! self-hosted environment, which the official SDK's environment worker polls.
//!
//! A session on a self-hosted environment has a work item in the queue when it
//! is created, when it gets new input after its last item stopped, and when
//! its runner waits on built-in calls that only a worker can run
//! ([`ensure_session_work`]; not for calls whose worker failed its item, see
//! [`WorkNeed`]): a stop wakes the runner, and so does a request that finds
//! a stopping item lapsed to stopped ([`queue::Lapsed`]), so a session still
//! waiting on a call is queued again. A worker polls (long poll, `block_ms`
//! 1-999), acks, heartbeats its lease, serves the session's tool calls with
//! the sessions token the poll's `secret` carries, and stops the item. The
//! item's state machine and storage are in [`queue`]; which credential may
//! call what is in [`access`]; long-poll wake-ups and the workers seen
//! polling are in [`hub`]. Healthcheck items (`/x/v1/.../work/healthcheck`)
//! let an operator check that a worker is alive: a worker acks and stops
//! them. Deleting or archiving a session stops its item
//! ([`stop_session_work`]).

pub mod access;
pub mod hub;
pub mod queue;

use std::collections::HashSet;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use logbook_core::{EnvironmentId, SessionId, WorkId, WorkspaceId};
use logbook_store::{Direction, ResourceKind, SledStore};

use self::queue::{StoredWork, WorkData, WorkState};
use super::environments::{self, EnvConfig, Environment};
use super::error::ApiError;
use super::sessions::StoredSession;
use super::wire::{JsonBody, Query, decode_owned_cursor, encode_cursor, patch_metadata};
use super::{Page, from_bytes, parse_id, scan_page};
use crate::state::AppState;
use crate::tenancy::{KeyScope, Principal, Tenant};

pub use access::Access;
pub use queue::WorkNeed;

/// Longest `Anthropic-Worker-ID` accepted: the SDK's are `<hostname>-<12 hex>`.
pub const MAX_WORKER_ID_CHARS: usize = 256;
/// Longest `block_ms` the API allows (the SDK uses exactly this).
pub const MAX_BLOCK_MS: u64 = 999;
/// Longest `reclaim_older_than_ms` accepted: a day.
pub const MAX_RECLAIM_MS: u64 = 86_400_000;
/// Longest `expected_last_heartbeat` accepted (ours are RFC 3339 timestamps).
pub const MAX_HEARTBEAT_VALUE_CHARS: usize = 64;

pub async fn poll(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(env_id): Path<String>,
    query: Query,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let env = parse_env_id(&env_id)?;
    let block_ms = match query.one("block_ms") {
        None => None,
        Some(raw) => match raw.parse::<u64>() {
            Ok(ms) if (1..=MAX_BLOCK_MS).contains(&ms) => Some(ms),
            _ => {
                return Err(ApiError::invalid(format!(
                    "block_ms: must be an integer from 1 to {MAX_BLOCK_MS} (omit it for a poll that does not wait), got {raw:?}"
                )));
            }
        },
    };
    let reclaim_ms = match query.one("reclaim_older_than_ms") {
        None => queue::DEFAULT_RECLAIM_MS,
        Some(raw) => match raw.parse::<u64>() {
            Ok(ms) if ms <= MAX_RECLAIM_MS => ms,
            _ => {
                return Err(ApiError::invalid(format!(
                    "reclaim_older_than_ms: must be an integer from 0 to {MAX_RECLAIM_MS}, got {raw:?}"
                )));
            }
        },
    };
    let worker = worker_id(&headers)?;
    state.blocking(move |store| queue_env(store, &tenant, env).map(|_| ())).await?;
    if let Some(worker) = &worker {
        state.work_hub().note_poller(tenant.workspace, env, worker, state.now());
    }
    let deadline = block_ms.map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms));
    loop {
        // Listen before looking, so an item enqueued in between wakes this poll.
        let waiter = state.work_hub().waiter(tenant.workspace, env);
        let notified = waiter.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let now = state.now();
        let claimed = with_lapses(&state, tenant, move |store, lapsed| {
            queue::claim_next(store, &tenant, env, now, reclaim_ms, lapsed)
        })
        .await?;
        if let Some(claimed) = claimed {
            let secret = claimed.token.as_deref().map(secret_payload);
            tracing::info!(work = %claimed.item.id, environment = %env, worker = ?worker, "work item claimed");
            return Ok(Json(claimed.item.to_wire(secret.as_deref())));
        }
        let Some(deadline) = deadline else { return Ok(Json(Value::Null)) };
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Ok(Json(Value::Null));
        }
    }
}

pub async fn ack(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path((env_id, work_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let ttl = state.config().work_lease_ttl_secs;
    let (item, _) = change_item(&state, tenant, &env_id, &work_id, move |item, work, now| match item.ack(now, ttl) {
        Ok(()) => Ok(true),
        Err(current) => Err(ApiError::conflict(format!(
            "work item {work} is {}; only a queued item can be acknowledged",
            current.as_str()
        ))
        .with_code("work_not_queued")),
    })
    .await?;
    Ok(Json(item.to_wire(None)))
}

/// Changes one item of an environment's queue: the ids parsed, the queue
/// checked, `change` applied to the item (with its id and the time) and
/// retried on concurrent writes (`queue::update`). Says whether it changed.
async fn change_item(
    state: &AppState,
    tenant: Tenant,
    env_id: &str,
    work_id: &str,
    mut change: impl FnMut(&mut StoredWork, WorkId, logbook_core::Timestamp) -> Result<bool, ApiError> + Send + 'static,
) -> Result<(StoredWork, bool), ApiError> {
    let (env, work) = (parse_env_id(env_id)?, parse_work_id(work_id)?);
    let now = state.now();
    with_lapses(state, tenant, move |store, lapsed| {
        queue_env(store, &tenant, env)?;
        queue::update(store, &tenant, env, work, now, lapsed, |item| change(item, work, now))
    })
    .await
}

/// Runs `work` on the blocking pool with a [`queue::Lapsed`] to note lapses
/// in, then wakes the runners of the sessions whose stopping item lapsed to
/// stopped (one still waiting on a worker gets a new item), whether `work`
/// succeeded or not: a lapse persisted before a refusal (a late worker's
/// stop of an item that lapsed meanwhile) needs its wake-up too.
async fn with_lapses<T: Send + 'static>(
    state: &AppState,
    tenant: Tenant,
    work: impl FnOnce(&SledStore, &mut queue::Lapsed) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let worker_state = state.clone();
    state
        .blocking(move |store| {
            let mut lapsed = queue::Lapsed::default();
            let result = work(store, &mut lapsed);
            // Woken here, not after the await: a request dropped meanwhile
            // would leave the lapse persisted and no runner looking again.
            if let Some(runner) = worker_state.runner() {
                for session in lapsed.sessions() {
                    tracing::info!(%session, "a stopping work item lapsed; the session's runner looks again");
                    runner.wake(&worker_state, tenant.workspace, *session, false);
                }
            }
            result
        })
        .await
}

pub async fn heartbeat(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Extension(principal): Extension<Principal>,
    Path((env_id, work_id)): Path<(String, String)>,
    query: Query,
) -> Result<Json<Value>, ApiError> {
    let desired = match query.one("desired_ttl_seconds") {
        None => None,
        Some(raw) => match raw.parse::<u64>() {
            Ok(secs) if secs >= 1 => Some(
                u32::try_from(secs).unwrap_or(u32::MAX).clamp(queue::MIN_LEASE_TTL_SECS, queue::MAX_LEASE_TTL_SECS),
            ),
            _ => {
                return Err(ApiError::invalid(format!(
                    "desired_ttl_seconds: must be a positive integer (leases last {} to {} seconds), got {raw:?}",
                    queue::MIN_LEASE_TTL_SECS,
                    queue::MAX_LEASE_TTL_SECS
                )));
            }
        },
    };
    let expected = query.one("expected_last_heartbeat").map(str::to_owned);
    if let Some(value) = &expected
        && (value.is_empty() || value.len() > MAX_HEARTBEAT_VALUE_CHARS)
    {
        return Err(ApiError::invalid(format!(
            "expected_last_heartbeat: must be {} or the last_heartbeat of the previous heartbeat, got {value:?}",
            queue::NO_HEARTBEAT
        )));
    }
    let holder = match principal.scope {
        KeyScope::WorkSession { claim, .. } => Some(claim),
        KeyScope::Workspace | KeyScope::Environment { .. } => None,
    };
    let default_ttl = state.config().work_lease_ttl_secs;
    let (item, extended) = change_item(&state, tenant, &env_id, &work_id, move |item, work, now| {
        let ttl = desired.unwrap_or_else(|| item.ttl_seconds(default_ttl));
        item.heartbeat(expected.as_deref(), holder, ttl, now, default_ttl)
            .map_err(|lease| lease_lost(work, expected.as_deref(), &lease))
    })
    .await?;
    Ok(Json(json!({
        "type": "work_heartbeat",
        "last_heartbeat": item.last_heartbeat().unwrap_or_default(),
        "lease_extended": extended,
        "state": item.state.as_str(),
        "ttl_seconds": item.ttl_seconds(default_ttl),
    })))
}

/// The 412 a refused heartbeat answers, with the lease as the server holds it.
fn lease_lost(work: WorkId, expected: Option<&str>, lease: &queue::LeaseState) -> ApiError {
    let why = match lease.state {
        WorkState::Queued => "the item is queued: it was never acknowledged, or its lease lapsed".to_owned(),
        WorkState::Starting | WorkState::Active | WorkState::Stopping | WorkState::Stopped => format!(
            "expected_last_heartbeat {expected:?} is not the lease's last heartbeat {:?}: another worker may hold it",
            lease.last_heartbeat.as_deref().unwrap_or(queue::NO_HEARTBEAT)
        ),
    };
    ApiError::precondition_failed(format!("heartbeat of work item {work} refused: {why}"))
        .with_code("heartbeat_precondition_failed")
        .with_detail("current_state", lease.to_json())
}

#[derive(Debug, Deserialize)]
pub struct StopBody {
    force: Option<bool>,
}

pub async fn stop(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Extension(principal): Extension<Principal>,
    Path((env_id, work_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<StopBody>,
) -> Result<Json<Value>, ApiError> {
    let force = body.force.unwrap_or(false);
    let by = match principal.scope {
        KeyScope::Workspace => queue::StopBy::Operator,
        KeyScope::Environment { .. } | KeyScope::WorkSession { .. } => queue::StopBy::Worker,
    };
    let (env, work) = (parse_env_id(&env_id)?, parse_work_id(&work_id)?);
    let now = state.now();
    let worker_state = state.clone();
    let item = with_lapses(&state, tenant, move |store, lapsed| {
        queue_env(store, &tenant, env)?;
        let (item, _) = queue::update(store, &tenant, env, work, now, lapsed, |item| {
            if let KeyScope::WorkSession { claim, .. } = principal.scope
                && item.state != WorkState::Stopped
                && !item.held_by(claim)
            {
                return Err(ApiError::conflict(format!(
                    "work item {work} is no longer held by this sessions token's claim; it was not stopped"
                ))
                .with_code("lease_lost"));
            }
            match item.stop(force, by, now) {
                Ok(()) => Ok(true),
                Err(queue::AlreadyStopped) => Err(ApiError::conflict(format!("work item {work} is already stopped"))
                    .with_code("work_already_stopped")),
            }
        })?;
        // A session whose item stopped while it still waits on a worker needs
        // a new one, unless its worker failed it (`WorkNeed::WorkerCalls`).
        // Woken here, so a request dropped after the stop still wakes it.
        if let (WorkData::Session { id }, Some(runner)) = (item.data, worker_state.runner()) {
            runner.wake(&worker_state, tenant.workspace, id, false);
        }
        Ok(item)
    })
    .await?;
    tracing::info!(work = %item.id, state = item.state.as_str(), force, "work item stop");
    Ok(Json(item.to_wire(None)))
}

pub async fn retrieve(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path((env_id, work_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (env, work) = (parse_env_id(&env_id)?, parse_work_id(&work_id)?);
    let now = state.now();
    let (_, item) = with_lapses(&state, tenant, move |store, lapsed| {
        queue_env(store, &tenant, env)?;
        queue::load_settled(store, &tenant, env, work, now, lapsed)
    })
    .await?;
    Ok(Json(item.to_wire(None)))
}

#[derive(Debug, Deserialize)]
pub struct UpdateBody {
    metadata: Option<Map<String, Value>>,
}

pub async fn update(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path((env_id, work_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<UpdateBody>,
) -> Result<Json<Value>, ApiError> {
    let patch = body.metadata.ok_or_else(|| {
        ApiError::invalid("metadata: required (set a key to a string to upsert it, or to null to delete it)")
    })?;
    let (item, _) = change_item(&state, tenant, &env_id, &work_id, move |item, _, _| {
        let metadata = patch_metadata(&item.metadata, &patch, false)?;
        let changed = metadata != item.metadata;
        item.metadata = metadata;
        Ok(changed)
    })
    .await?;
    Ok(Json(item.to_wire(None)))
}

pub async fn list(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(env_id): Path<String>,
    query: Query,
) -> Result<Json<Page<Value>>, ApiError> {
    let env = parse_env_id(&env_id)?;
    let limit = query.limit(20, 100)?;
    let prefix = queue::item_key(&tenant, env, None);
    let after = query.one("page").map(|page| decode_owned_cursor("work", page, &prefix)).transpose()?;
    let now = state.now();
    let page = with_lapses(&state, tenant, move |store, lapsed| {
        queue_env(store, &tenant, env)?;
        // Lapses are applied (and persisted) before the list shows them.
        queue::apply_lapses(store, &tenant, env, now, lapsed)?;
        let scanned = scan_page(store, ResourceKind::WorkItem, &prefix, after, Direction::Backward, limit, |bytes| {
            let mut item: StoredWork = from_bytes(bytes)?;
            item.settle(now);
            Ok(Some(item.to_wire(None)))
        })?;
        Ok(Page {
            data: scanned.items.into_iter().map(|(_, item)| item).collect(),
            next_page: scanned.next.map(|key| encode_cursor("work", &key)),
            prev_page: None,
        })
    })
    .await?;
    Ok(Json(page))
}

pub async fn stats(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(env_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let env = parse_env_id(&env_id)?;
    let now = state.now();
    let (depth, pending, oldest) = with_lapses(&state, tenant, move |store, lapsed| {
        queue_env(store, &tenant, env)?;
        let mut depth = 0usize;
        let mut pending = 0usize;
        let mut oldest = None;
        for item in queue::queued_items(store, &tenant, env, now, lapsed)? {
            if item.pending(now) {
                pending += 1;
            } else {
                depth += 1;
            }
            oldest = Some(oldest.map_or(item.queued_at, |at: logbook_core::Timestamp| at.min(item.queued_at)));
        }
        Ok((depth, pending, oldest))
    })
    .await?;
    Ok(Json(json!({
        "type": "work_queue_stats",
        "depth": depth,
        "pending": pending,
        "oldest_queued_at": oldest,
        "workers_polling": state.work_hub().workers_polling(tenant.workspace, env, now),
    })))
}

/// `POST /x/v1/environments/{environment_id}/work/healthcheck`: queues a
/// healthcheck item; a live worker acks and stops it (its `acknowledged_at`
/// and `stopped_at` show when).
pub async fn healthcheck(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(env_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let env = parse_env_id(&env_id)?;
    let now = state.now();
    let id = state.new_id(now, WorkId::from_parts);
    let item = state
        .blocking(move |store| {
            queue_env(store, &tenant, env)?;
            let item = StoredWork::new(id, env, WorkData::Healthcheck {}, now);
            queue::create(store, &tenant, &item)?;
            Ok(item)
        })
        .await?;
    state.work_hub().wake(tenant.workspace, env);
    Ok(Json(item.to_wire(None)))
}

/// Gives a self-hosted session a live work item if it has none and `need`
/// calls for one (session created, new input after its item stopped, a
/// worker needed: see [`WorkNeed`]); wakes the environment's long
/// polls when it enqueued one. Cloud sessions: nothing.
pub fn ensure_session_work(
    state: &AppState,
    store: &SledStore,
    tenant: &Tenant,
    session: &StoredSession,
    need: WorkNeed,
) -> Result<(), ApiError> {
    if !session.self_hosted {
        return Ok(());
    }
    // A session archived or deleted since the caller read it gets no item: its
    // archive (or deletion) stopped the one it had. One archived while this
    // queues is checked again after; whichever side comes second stops the
    // new item.
    let ended = |store: &SledStore| match super::sessions::load(store, tenant, session.id) {
        Ok((_, current)) => Ok(current.archived_at.is_some()),
        Err(err) if err.status == axum::http::StatusCode::NOT_FOUND => Ok(true),
        Err(err) => Err(err),
    };
    if ended(store)? {
        return Ok(());
    }
    let now = state.now();
    let id = state.new_id(now, WorkId::from_parts);
    let env = session.environment_id;
    if let Some(item) = queue::ensure_session_item(store, tenant, env, session.id, id, now, need)? {
        if ended(store)? {
            queue::stop_session_item(store, tenant, session.id, now)?;
            return Ok(());
        }
        tracing::info!(work = %item.id, session = %session.id, environment = %env, "work item queued");
        state.work_hub().wake(tenant.workspace, env);
    }
    Ok(())
}

/// Stops a deleted or archived session's live work item, as a forced stop
/// would: it is no longer handed to workers nor counted in `stats`. Cloud
/// sessions: nothing.
pub fn stop_session_work(
    state: &AppState,
    store: &SledStore,
    tenant: &Tenant,
    session: &StoredSession,
) -> Result<(), ApiError> {
    if !session.self_hosted {
        return Ok(());
    }
    if let Some(item) = queue::stop_session_item(store, tenant, session.id, state.now())? {
        tracing::info!(work = %item.id, session = %session.id, "work item stopped with its session");
    }
    Ok(())
}

/// The session's latest work item (for tests and operators).
pub fn session_work(
    state: &AppState,
    store: &SledStore,
    tenant: &Tenant,
    session: SessionId,
) -> Result<Option<StoredWork>, ApiError> {
    queue::session_item(store, tenant, session, state.now())
}

/// Finds an environment by id in any workspace (for the offline
/// `logbook keys create --environment`): its workspace and the environment.
pub fn find_environment(store: &SledStore, env: EnvironmentId) -> Result<Option<(WorkspaceId, Environment)>, ApiError> {
    let mut found = None;
    crate::api::scan_all(store, ResourceKind::Environment, b"", |key, bytes| {
        let Some(workspace) = key.strip_suffix(&env.to_bytes()).and_then(|w| <[u8; 16]>::try_from(w).ok()) else {
            return Ok(std::ops::ControlFlow::Continue(()));
        };
        found = Some((WorkspaceId::from_bytes(workspace), from_bytes(bytes)?));
        Ok(std::ops::ControlFlow::Break(()))
    })?;
    Ok(found)
}

/// Every session, in every workspace, whose built-in tools run on a worker
/// (for the offline re-execution check, which needs each session's policy).
pub fn self_hosted_sessions(store: &SledStore) -> Result<HashSet<SessionId>, ApiError> {
    let mut out = HashSet::new();
    crate::api::sessions::scan_sessions(store, b"", |_, session| {
        if session.self_hosted {
            out.insert(session.id);
        }
        std::ops::ControlFlow::Continue(())
    })?;
    Ok(out)
}

/// The environment of a queue route: it must exist in the caller's
/// workspace and be self-hosted.
fn queue_env(store: &SledStore, tenant: &Tenant, env: EnvironmentId) -> Result<Environment, ApiError> {
    let (_, environment) = environments::load(store, tenant, env)?;
    match environment.config {
        EnvConfig::SelfHosted {} => Ok(environment),
        EnvConfig::Cloud { .. } => Err(ApiError::invalid(format!(
            "environment {env} is a cloud environment; only self_hosted environments have a work queue"
        ))
        .with_code("environment_not_self_hosted")),
    }
}

fn parse_env_id(raw: &str) -> Result<EnvironmentId, ApiError> {
    parse_id::<EnvironmentId>(raw, "environment").map_err(|_| environments::not_found(raw))
}

fn parse_work_id(raw: &str) -> Result<WorkId, ApiError> {
    parse_id::<WorkId>(raw, "work").map_err(|_| queue::not_found(raw))
}

/// The `Anthropic-Worker-ID` header, if sent.
fn worker_id(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("anthropic-worker-id") else { return Ok(None) };
    let bad = || {
        ApiError::invalid(format!("Anthropic-Worker-ID: must be 1 to {MAX_WORKER_ID_CHARS} visible ASCII characters"))
    };
    let text = value.to_str().map_err(|_| bad())?;
    if text.is_empty() || text.len() > MAX_WORKER_ID_CHARS || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok(Some(text.to_owned()))
}

/// The poll's `secret`: URL-safe base64 (no padding) of `{"sessions_token": ...}`.
fn secret_payload(token: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json!({"sessions_token": token}).to_string())
}
