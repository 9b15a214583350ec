//! `POST /x/v1/sessions/{id}/fork`: a new session that continues another one
//! from any point of its log.
//!
//! The fork's log is the parent's records up to the fork point, shared by
//! reference (`logbook_store::Fork`), then its own records from an
//! `x.fork_origin` on, chained from the parent's hash at that point, so its
//! chain proves its ancestry. Its workspace, outputs and mounted files are
//! written from the projection at the fork point; its agent is the one the
//! parent ran with there (the recorded `x.agent_config`), optionally with
//! overrides, so a turn can be retried with another model or prompt. For the
//! compatible API it is an ordinary session: its events list, stream and take
//! input like any other.
//!
//! A fork taken in the middle of a turn continues the way a session does
//! after a restart: a model call without its response is made (again, with
//! the fork's agent), a tool call without its result gets an error result and
//! is never run a second time. Repository tokens are secrets held in memory
//! for the parent only; they are not carried into the fork.

use axum::extract::{Path as UrlPath, State};
use axum::{Extension, Json};
use logbook_core::event::{Event, ForkOrigin};
use logbook_core::{AgentId, Entry, EnvironmentId, EventId, EventType, Seq, SessionId, Timestamp};
use logbook_replay::SessionState;
use logbook_replay::workspace::{Area, Node, split};
use logbook_store::{Fork, ForkError, Read, ResourceKind, Resources as _, SledStore};
use rand::RngExt;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::environments;
use crate::api::error::ApiError;
use crate::api::events::find_event;
use crate::api::sessions::{self, AgentOverrides, MAX_TITLE_CHARS, SessionAgent, Status, StoredSession};
use crate::api::wire::{JsonBody, check_metadata};
use crate::api::work::WorkNeed;
use crate::api::{put_new, to_bytes};
use crate::resources::confine::Root;
use crate::resources::mount;
use crate::sandbox::layout::{SANDBOX_GID, SANDBOX_UID, SessionPaths};
use crate::state::AppState;
use crate::tenancy::Tenant;
use crate::workspace::write_tree;

/// The body of a fork request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForkRequest {
    /// Fork after this record of the parent (exactly one of the two).
    pub at_seq: Option<u64>,
    /// Fork after this event of the parent.
    pub at_event_id: Option<String>,
    /// Changes to the agent the fork runs with (model, system, tools,
    /// mcp_servers, skills), as in `agent_with_overrides`.
    pub agent: Option<AgentOverrides>,
    /// The fork's title (default: the parent's).
    pub title: Option<String>,
    /// The fork's metadata (default: the parent's).
    pub metadata: Option<Map<String, Value>>,
}

/// What a fork needs besides the request: where and when it is made.
#[derive(Debug)]
pub struct ForkPlace<'a> {
    pub tenant: Tenant,
    pub parent: SessionId,
    pub child: SessionId,
    pub now: Timestamp,
    /// The host directories of the child's sandbox, or `None` when this
    /// server keeps no workspaces (nothing is written then).
    pub paths: Option<&'a SessionPaths>,
    /// The running server, whose environment deletes the fork must not race;
    /// `None` offline (the data directory is the command's alone).
    pub state: Option<&'a AppState>,
}

/// A fork made: the new session and where it came from.
#[derive(Debug)]
pub struct Forked {
    pub session: StoredSession,
    pub origin: ForkOrigin,
    /// Files written into the fork's workspace, outputs and uploads.
    pub n_files: usize,
}

impl Forked {
    /// The API object: the session, with the fork's origin.
    pub fn to_wire(&self, now: Timestamp) -> Value {
        let mut wire = self.session.to_wire(now);
        if let Some(object) = wire.as_object_mut() {
            object.insert("fork_origin".to_owned(), json!(self.origin));
        }
        wire
    }
}

/// `POST /x/v1/sessions/{id}/fork`.
pub async fn fork(
    State(app): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    UrlPath(raw): UrlPath<String>,
    JsonBody(body): JsonBody<ForkRequest>,
) -> Result<Json<Value>, ApiError> {
    let parent = sessions::parse_session_id(&raw)?;
    let now = app.now();
    let child = app.new_id(now, SessionId::from_parts);
    let paths = app.resources_host().map(|host| host.paths(child));
    let worker_state = app.clone();
    let forked = app
        .blocking(move |store| {
            let place = ForkPlace { tenant, parent, child, now, paths: paths.as_ref(), state: Some(&worker_state) };
            let forked = fork_session(store, &place, body)?;
            crate::api::work::ensure_session_work(&worker_state, store, &tenant, &forked.session, WorkNeed::Input)?;
            // Woken here, not after the await: a request dropped meanwhile
            // would leave a fork that no task runs.
            if let Some(runner) = worker_state.runner() {
                runner.wake(&worker_state, tenant.workspace, child, false);
            }
            Ok(forked)
        })
        .await?;
    Ok(Json(forked.to_wire(now)))
}

/// Makes the fork: checks the request, writes the workspace, forks the log
/// and stores the session object, in that order (a failure before the log is
/// forked leaves nothing behind). Blocks: run it off the async threads.
pub fn fork_session(store: &SledStore, place: &ForkPlace<'_>, body: ForkRequest) -> Result<Forked, ApiError> {
    if let Some(title) = &body.title {
        crate::api::tools::check_len(title, 0, MAX_TITLE_CHARS, "title")?;
    }
    if let Some(metadata) = &body.metadata {
        check_metadata(metadata)?;
    }
    let (_, parent) = sessions::load(store, &place.tenant, place.parent)?;
    let at = fork_point(store, place.parent, body.at_seq, body.at_event_id.as_deref())?;
    let at = past_open_response(store, place.parent, at)?;
    let at = past_turn_start(store, place.parent, at)?;
    let projected = crate::projection::state_at(store, place.parent, at)?;
    let status = Status::from(projected.machine.status());
    if status == Status::Terminated {
        return Err(ApiError::invalid(format!(
            "the session is terminated at seq {at}; fork at a seq before its termination"
        )));
    }
    let mut agent = agent_at(&projected, &parent);
    if let Some(overrides) = body.agent {
        overrides.apply(&mut agent)?;
        // The fork keeps its parent's budget: a model override must be
        // priced, as at create.
        if parent.budget.is_some() {
            sessions::check_budgetable(&agent.model)?;
        }
    }
    // A fork starts a session in its parent's environment: the rules of
    // starting one there hold (session create checks the same).
    let env = parent_environment(store, &place.tenant, &parent)?;
    sessions::check_can_start(parent.environment_id, &env)?;
    check_agent_can_start(store, &place.tenant, agent.id)?;
    crate::mcp::check_environment(&agent.mcp_servers, &env.config)?;
    crate::tools::check_environment(&agent.tools, &env.config)?;
    let session = StoredSession {
        id: place.child,
        status,
        environment_id: parent.environment_id,
        agent,
        from_agent_ref: parent.from_agent_ref,
        title: body.title.or(parent.title),
        metadata: body.metadata.unwrap_or(parent.metadata),
        budget: parent.budget,
        created_at: place.now,
        updated_at: place.now,
        archived_at: None,
        terminated_at: None,
        self_hosted: parent.self_hosted,
        usage: sessions::UsageView::default(),
        outputs: std::collections::BTreeMap::new(),
        resources: Vec::new(),
        outcome_evaluations: Vec::new(),
    };
    let parent_record = store
        .read(place.parent, at, 1)?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::internal(format!("record {at} of {} vanished", place.parent)))?;
    let origin = ForkOrigin {
        parent_session_id: place.parent,
        parent_seq: at.get(),
        parent_chain_hash: *parent_record.hash().as_bytes(),
    };
    // A self-hosted session's files live on its workers' machines.
    let paths = place.paths.filter(|_| !parent.self_hosted);
    let environment_id = parent.environment_id;
    let forked = paths
        .map_or(Ok(0), |paths| write_workspace(store, paths, &projected))
        .and_then(|n_files| fork_log(store, place, environment_id, at, origin.clone()).map(|()| n_files))
        .and_then(|n_files| {
            put_new(store, ResourceKind::Session, &place.tenant.key(place.child.to_bytes()), &to_bytes(&session)?)?;
            Ok(n_files)
        });
    let n_files = match forked {
        Ok(n_files) => n_files,
        Err(err) => {
            // No session names the new directories: they go with the fork.
            if let Some(paths) = paths {
                let _ = std::fs::remove_dir_all(paths.root());
            }
            return Err(err);
        }
    };
    let session = sessions::with_log_state(store, session)?;
    Ok(Forked { session, origin, n_files })
}

/// Forks the parent's log at `at` into the child's, with `origin` its first
/// own record, while the environment is held in use.
fn fork_log(
    store: &SledStore,
    place: &ForkPlace<'_>,
    environment_id: EnvironmentId,
    at: Seq,
    origin: ForkOrigin,
) -> Result<(), ApiError> {
    let first = Seq::new(at.get() + 1);
    let ms = u64::try_from(place.now.unix_ms()).unwrap_or(0);
    let entry = Entry {
        id: EventId::for_seq(ms, first, rand::rng().random::<u64>()),
        event: Event::ForkOrigin(origin),
        at: place.now,
    };
    // The environment still exists when a session naming it does: no
    // delete runs between this check and the write.
    let _in_use = place.state.map(|state| state.environment_in_use(environment_id));
    environments::load(store, &place.tenant, environment_id)?;
    store.fork(place.child, place.parent, at, &[entry]).map_err(fork_error)?;
    Ok(())
}

/// An archived agent starts no sessions, forked ones included (session
/// create refuses it too). An agent this workspace lacks (the parent was
/// imported from a bundle) is not checked: the fork runs the recorded one.
fn check_agent_can_start(store: &SledStore, tenant: &Tenant, id: AgentId) -> Result<(), ApiError> {
    if store.get_resource(ResourceKind::Agent, &tenant.key(id.to_bytes()))?.is_none() {
        return Ok(());
    }
    let (_, agent) = crate::api::agents::load_latest(store, tenant, id)?;
    sessions::check_not_archived(&agent)
}

/// The environment a fork of `parent` starts in: its parent's. A session
/// imported from a bundle (`logbook import`) names its source's environment
/// unless it was imported with `--environment`; when this workspace lacks
/// it, that is said as such (400 `environment_missing`), not as a 404 that
/// reads as if the session were missing.
fn parent_environment(
    store: &SledStore,
    tenant: &Tenant,
    parent: &StoredSession,
) -> Result<environments::Environment, ApiError> {
    let key = tenant.key(parent.environment_id.to_bytes());
    if store.get_resource(ResourceKind::Environment, &key)?.is_none() {
        return Err(ApiError::invalid(format!(
            "session {}'s environment {} does not exist in this workspace, so it cannot be forked here (a \
             session imported from a bundle keeps its source's environment: import it with `logbook import \
             --environment ENV_ID`)",
            parent.id, parent.environment_id
        ))
        .with_code("environment_missing"));
    }
    environments::load(store, tenant, parent.environment_id).map(|(_, env)| env)
}

/// The parent's seq a request names: `at_seq`, or the seq of `at_event_id`.
fn fork_point(
    store: &SledStore,
    parent: SessionId,
    at_seq: Option<u64>,
    at_event_id: Option<&str>,
) -> Result<Seq, ApiError> {
    let next = store.head(parent)?.next.get();
    match (at_seq, at_event_id) {
        (Some(at), None) if at < next => Ok(Seq::new(at)),
        (Some(at), None) => Err(ApiError::invalid(match next.checked_sub(1) {
            Some(last) => format!("at_seq: {at} is beyond the session's last seq {last}"),
            None => "at_seq: the session has no events yet".to_owned(),
        })),
        (None, Some(raw)) => {
            let id: EventId =
                raw.parse().map_err(|_| ApiError::invalid(format!("at_event_id: {raw:?} is not an event id")))?;
            match find_event(store, parent, id)? {
                Some((seq, _)) => Ok(seq),
                None => Err(ApiError::invalid(format!("at_event_id: {id} is not an event of session {parent}"))),
            }
        }
        (Some(_), Some(_)) | (None, None) => Err(ApiError::invalid("give exactly one of at_seq and at_event_id")),
    }
}

/// Most records looked at around a fork point for a model response's batch
/// (a response's records are one append: bounded by its tool calls).
const MAX_BATCH_LOOKAROUND: usize = 4096;

/// The fork point moved past the rest of a model response's records, when
/// `at` falls among them. The runner appends a response as one batch
/// (`x.model_response`, an `agent.tool_use` per call, ...,
/// `span.model_request_end`, then `x.model_request` with the provider's stop
/// reason and, if the provider ran server tools, `x.server_tool_requests`); a
/// fork cut inside it would keep every call in the context but only some in
/// the machine, and the calls it lost would never be answered, so the API
/// would refuse the fork's every request. A cut before `x.model_request`
/// loses the stop reason (a paused turn would end) and the server tools'
/// usage.
fn past_open_response(store: &SledStore, parent: SessionId, at: Seq) -> Result<Seq, ApiError> {
    let next = Seq::new(at.get() + 1);
    // The request whose response batch `at` falls in, if it does, and
    // whether the batch's `span.model_request_end` is at or before `at`.
    let mut open: Option<(EventId, bool)> = None;
    // Whether every record from `at` back so far is of a batch's tail.
    let mut tail_only = true;
    // Reads may stop short of what they ask (the store's byte budget): each
    // walk goes on until it has looked at MAX_BATCH_LOOKAROUND records or
    // reaches the log's end.
    let (mut before, mut looked) = (next, 0);
    'back: while looked < MAX_BATCH_LOOKAROUND {
        let records = store.read_before(parent, before, MAX_BATCH_LOOKAROUND - looked)?;
        let Some(first) = records.first() else { break };
        before = first.seq();
        looked += records.len();
        for record in records.iter().rev() {
            let event = record.entry().map_err(ApiError::internal)?.event;
            if let Event::ModelResponse(response) = &event {
                open = Some((response.model_request_start_id, false));
                break 'back;
            }
            if let Event::SpanModelRequestEnd(end) = &event {
                // After a request's end, only its tail belongs to its batch.
                if tail_only {
                    open = Some((end.model_request_start_id, true));
                }
                break 'back;
            }
            if event.event_type() == EventType::SpanModelRequestStart {
                break 'back;
            }
            tail_only &= batch_tail_of(&event).is_some();
        }
    }
    let Some((start, mut ended)) = open else { return Ok(at) };
    let mut last = at;
    let (mut from, mut looked) = (next, 0);
    'forward: while looked < MAX_BATCH_LOOKAROUND {
        let records = store.read(parent, from, MAX_BATCH_LOOKAROUND - looked)?;
        let Some(final_record) = records.last() else { break };
        from = Seq::new(final_record.seq().get() + 1);
        looked += records.len();
        for record in records {
            let event = record.entry().map_err(ApiError::internal)?.event;
            if !ended {
                if let Event::SpanModelRequestEnd(end) = &event
                    && end.model_request_start_id == start
                {
                    ended = true;
                    last = record.seq();
                }
                continue;
            }
            if batch_tail_of(&event) != Some(start) {
                break 'forward;
            }
            last = record.seq();
        }
    }
    // A request that never ended (the parent stopped mid-batch) leaves the
    // point where it was: the fork closes the request, as a restart would.
    Ok(if ended { last } else { at })
}

/// `at`, or the record after it when `at` is a turn's `session.status_running`
/// and that record its primary thread's `session.thread_status_running`:
/// the runner appends the two together, and a fork cut between them would
/// run its turn without the thread ever said to run.
fn past_turn_start(store: &SledStore, parent: SessionId, at: Seq) -> Result<Seq, ApiError> {
    let records = store.read(parent, at, 2)?;
    let mut events = records.iter().map(|record| record.entry().map(|entry| entry.event));
    let (Some(first), Some(second)) = (events.next(), events.next()) else { return Ok(at) };
    let (first, second) = (first.map_err(ApiError::internal)?, second.map_err(ApiError::internal)?);
    let paired =
        matches!(first, Event::SessionStatusRunning(_)) && matches!(second, Event::SessionThreadStatusRunning(_));
    Ok(if paired { Seq::new(at.get() + 1) } else { at })
}

/// The request whose batch `event` ends, if it is one of a response batch's
/// records after `span.model_request_end`.
fn batch_tail_of(event: &Event) -> Option<EventId> {
    if let Event::ModelRequest(request) = event {
        Some(request.model_request_start_id)
    } else if let Event::ServerToolRequests(requests) = event {
        Some(requests.model_request_start_id)
    } else {
        None
    }
}

/// The agent the parent ran with at the fork point: the recorded one, or
/// (before its first model call) the session's own.
fn agent_at(projected: &SessionState, parent: &StoredSession) -> SessionAgent {
    projected
        .agent
        .as_ref()
        .and_then(|recorded| serde_json::from_value::<SessionAgent>(recorded.agent.clone()).ok())
        .unwrap_or_else(|| parent.agent.clone())
}

/// Writes the projected workspace, outputs and mounted files into the fork's
/// new directories; returns how many files it wrote.
fn write_workspace(store: &SledStore, paths: &SessionPaths, projected: &SessionState) -> Result<usize, ApiError> {
    paths.create().map_err(|err| ApiError::internal(format!("creating the fork's directories: {err}")))?;
    let owner = rustix::process::geteuid().is_root().then_some((SANDBOX_UID, SANDBOX_GID));
    write_tree(&projected.workspace, store, &paths.workspace(), &paths.outputs(), owner)
        .map_err(|err| ApiError::internal(format!("writing the fork's workspace: {err}")))?;
    let uploads: std::collections::BTreeMap<String, logbook_replay::resources::RecordedFile> = projected
        .workspace
        .iter()
        .filter(|(path, _)| split(path).is_ok_and(|(area, _)| area == Area::Uploads))
        .filter_map(|(path, node)| match node {
            Node::File { blob, size, mode } => Some((
                path.to_owned(),
                logbook_replay::resources::RecordedFile { blob: *blob, size: *size, mode: *mode },
            )),
            Node::Symlink { .. } => None,
        })
        .collect();
    let root = Root::open(&paths.uploads()).map_err(|err| ApiError::internal(format!("the fork's uploads: {err}")))?;
    mount::materialize(store, &root, &uploads).map_err(|err| ApiError::internal(format!("mounting files: {err}")))?;
    Ok(projected.workspace.len())
}

fn fork_error(err: ForkError) -> ApiError {
    match err {
        ForkError::BeyondHead { .. } | ForkError::SelfFork { .. } | ForkError::TooDeep { .. } => {
            ApiError::invalid(err.to_string())
        }
        ForkError::Exists { .. } => ApiError::conflict(err.to_string()),
        ForkError::Append(err) => err.into(),
        ForkError::Store(err) => err.into(),
    }
}
