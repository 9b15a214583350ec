//! `/v1/sessions/{id}/resources`: a session's resources (files mounted under
//! `/mnt/session/uploads`, repositories cloned into `/workspace`), given at
//! session creation or, for files, added later; listed, retrieved, deleted
//! (files only: repositories stay for the session's life), and a
//! repository's token rotated.
//!
//! The log is the record: attaching appends `x.session_resource` (and, for
//! files, an `x.workspace_delta` naming the mounted contents), so the list
//! here, the session object's `resources`, and a fork at any point all follow
//! from it (`replay::resources`). Tokens never enter the log or a response:
//! they are kept in memory (`resources::secrets`).
//!
//! Limits: [`MAX_FILE_RESOURCES`] files and [`MAX_REPOSITORY_RESOURCES`]
//! repositories per session (400 beyond); mount paths may not collide or
//! nest. Self-hosted environments take no file or repository resources (400,
//! as documented); memory stores are not supported by this server (400).

use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use logbook_core::event::{
    AttachedResource, Event, RepositoryCheckout, ResourceChange, SessionResource, WorkspaceDelta,
};
use logbook_core::{EventType, FileId, Seq, SessionId, SessionResourceId, Timestamp};
use logbook_replay::resources::Resource;
use logbook_store::{MAX_READ_RECORDS, Read, SledStore};

use super::error::ApiError;
use super::files::{self, StoredFile};
use super::sessions::{self, StoredSession};
use super::wire::{JsonBody, Query, decode_cursor, encode_cursor};
use super::{events, parse_id};
use crate::resources::git::{RepoUrl, check_checkout};
use crate::resources::mount::{self, MountPath};
use crate::resources::secrets::{MAX_TOKEN_BYTES, Secret};
use crate::resources::{Host, confine};
use crate::state::AppState;
use crate::tenancy::Tenant;

/// Most file resources per session (the hosted limit; an older page said 999,
/// another 100).
pub const MAX_FILE_RESOURCES: usize = 500;
/// Most repositories per session: each is cloned before the first turn, so
/// this bounds how long a session takes to start. Not documented by the
/// hosted service.
pub const MAX_REPOSITORY_RESOURCES: usize = 10;
/// Most resources one list page returns (documented maximum).
const MAX_LIST_LIMIT: usize = 1000;

/// A resource in a request, as sent.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ResourceParams {
    File {
        file_id: String,
        #[serde(default)]
        mount_path: Option<String>,
    },
    GithubRepository {
        url: String,
        #[serde(default)]
        authorization_token: Option<Secret>,
        /// Parsed on its own, so errors can name the field (an internally
        /// tagged enum loses the path of what is inside it).
        #[serde(default)]
        checkout: Option<Value>,
        #[serde(default)]
        mount_path: Option<String>,
    },
    MemoryStore {},
}

/// A resource a request asks for, checked for form but not yet resolved.
#[derive(Debug)]
pub enum ResourceSpec {
    File { file_id: FileId, mount: MountPath },
    Repository { url: RepoUrl, checkout: Option<RepositoryCheckout>, mount: MountPath, token: Option<Secret> },
}

/// A resource ready to attach: files have been found in the workspace.
#[derive(Debug)]
pub enum Resolved {
    File { file: StoredFile, mount: MountPath },
    Repository { url: RepoUrl, checkout: Option<RepositoryCheckout>, mount: MountPath, token: Option<Secret> },
}

impl Resolved {
    fn mount(&self) -> &MountPath {
        match self {
            Resolved::File { mount, .. } | Resolved::Repository { mount, .. } => mount,
        }
    }
}

/// Parses the `resources` of a session create call.
pub fn parse_specs(values: &[Value]) -> Result<Vec<ResourceSpec>, ApiError> {
    values.iter().enumerate().map(|(idx, value)| parse_spec(value, &format!("resources[{idx}]"))).collect()
}

/// Parses one resource; `at` names it in messages (`resources[0]`, or ""
/// for a request body that is the resource itself).
fn parse_spec(value: &Value, at: &str) -> Result<ResourceSpec, ApiError> {
    let field = |name: &str| if at.is_empty() { name.to_owned() } else { format!("{at}.{name}") };
    let params: ResourceParams = serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        match (path.as_str(), at.is_empty()) {
            (".", true) => ApiError::invalid(format!("invalid resource: {inner}")),
            (".", false) => ApiError::invalid(format!("{at}: {inner}")),
            (path, _) => ApiError::invalid(format!("{}: {inner}", field(path))),
        }
    })?;
    match params {
        ResourceParams::File { file_id, mount_path } => {
            let file_id = parse_id::<FileId>(&file_id, "file").map_err(|_| files::not_found(&file_id))?;
            let mount = mount::upload_path(mount_path.as_deref(), file_id)
                .map_err(|err| ApiError::invalid(format!("{}: {err}", field("mount_path"))))?;
            Ok(ResourceSpec::File { file_id, mount })
        }
        ResourceParams::GithubRepository { url, authorization_token, checkout, mount_path } => {
            let url = RepoUrl::parse(&url).map_err(|err| ApiError::invalid(format!("{}: {err}", field("url"))))?;
            let checkout = checkout
                .filter(|c| !c.is_null())
                .map(serde_json::from_value::<RepositoryCheckout>)
                .transpose()
                .map_err(|err| ApiError::invalid(format!("{}: {err}", field("checkout"))))?;
            if let Some(checkout) = &checkout {
                check_checkout(checkout).map_err(|err| ApiError::invalid(field(&err)))?;
            }
            let token = authorization_token.filter(|t| !t.expose().is_empty());
            if token.as_ref().is_some_and(|t| t.expose().len() > MAX_TOKEN_BYTES) {
                let message = format!("{}: at most {MAX_TOKEN_BYTES} bytes", field("authorization_token"));
                return Err(ApiError::invalid(message));
            }
            let mount = mount::repository_path(mount_path.as_deref(), url.name())
                .map_err(|err| ApiError::invalid(format!("{}: {err}", field("mount_path"))))?;
            Ok(ResourceSpec::Repository { url, checkout, mount, token })
        }
        ResourceParams::MemoryStore {} => Err(ApiError::invalid(format!(
            "{}: memory_store resources are not supported by this server",
            if at.is_empty() { "type" } else { at }
        ))),
    }
}

/// The message the hosted service gives for resources on a self-hosted
/// environment.
pub fn self_hosted_error(session: &StoredSession) -> ApiError {
    ApiError::invalid(format!(
        "Environment {} is a self-hosted environment. `resources` are not supported with self-hosted environments.",
        session.environment_id
    ))
}

/// Finds the files of `specs` in the tenant's workspace and checks the
/// limits and mount paths against each other and the `existing` resources.
pub fn resolve(
    store: &SledStore,
    tenant: &Tenant,
    specs: Vec<ResourceSpec>,
    existing: &[Resource],
    now: Timestamp,
) -> Result<Vec<Resolved>, ApiError> {
    let mut resolved: Vec<Resolved> = Vec::with_capacity(specs.len());
    for spec in specs {
        resolved.push(match spec {
            ResourceSpec::File { file_id, mount } => {
                Resolved::File { file: files::load_live(store, tenant, file_id, now)?, mount }
            }
            ResourceSpec::Repository { url, checkout, mount, token } => {
                Resolved::Repository { url, checkout, mount, token }
            }
        });
    }
    let is_file = |r: &AttachedResource| matches!(r, AttachedResource::File { .. });
    let n_files = existing.iter().filter(|r| is_file(&r.resource)).count()
        + resolved.iter().filter(|r| matches!(r, Resolved::File { .. })).count();
    let n_repos = existing.len() + resolved.len() - n_files;
    if n_files > MAX_FILE_RESOURCES {
        return Err(ApiError::invalid(format!(
            "resources: a session can have at most {MAX_FILE_RESOURCES} file resources, this would make {n_files}"
        )));
    }
    if n_repos > MAX_REPOSITORY_RESOURCES {
        return Err(ApiError::invalid(format!(
            "resources: a session can have at most {MAX_REPOSITORY_RESOURCES} repositories, this would make {n_repos}"
        )));
    }
    let mut taken: Vec<MountPath> =
        existing.iter().filter_map(|r| MountPath::from_absolute(mount_path(&r.resource))).collect();
    for new in &resolved {
        if let Some(other) = taken.iter().find(|t| t.overlaps(new.mount())) {
            return Err(ApiError::invalid(format!(
                "mount_path: {} collides with the resource mounted at {}",
                new.mount().absolute(),
                other.absolute()
            )));
        }
        taken.push(new.mount().clone());
    }
    Ok(resolved)
}

/// Resources mounted and ready to record.
#[derive(Debug)]
pub struct Prepared {
    events: Vec<Event>,
    wire: Vec<Value>,
}

/// Mounts the files (on disk) and keeps the tokens (in memory); the events
/// to record come back, for [`record`] to append.
pub fn prepare(
    state: &AppState,
    store: &SledStore,
    session: SessionId,
    resolved: Vec<Resolved>,
) -> Result<Prepared, ApiError> {
    if resolved.is_empty() {
        return Ok(Prepared { events: Vec::new(), wire: Vec::new() });
    }
    let host = host(state)?;
    host.prepare(session).map_err(confine_error)?;
    let uploads = host.uploads(session).map_err(confine_error)?;
    let now = state.now();
    let mut events = Vec::new();
    let mut changes = Vec::new();
    let mut wire = Vec::new();
    for item in resolved {
        let id = state.new_id(now, SessionResourceId::from_parts);
        let resource = match item {
            Resolved::File { file, mount } => {
                let change = mount::mount_file(store, &uploads, &mount, &file.content()).map_err(mount_error)?;
                changes.push(change);
                AttachedResource::File { file_id: file.id, mount_path: mount.absolute() }
            }
            Resolved::Repository { url, checkout, mount, token } => {
                host.vault().set(session, id, token);
                AttachedResource::GithubRepository {
                    url: url.as_str().to_owned(),
                    mount_path: mount.absolute(),
                    checkout,
                }
            }
        };
        wire.push(to_wire(&Resource {
            id,
            resource: resource.clone(),
            created_at: now,
            updated_at: now,
            cloned_commit: None,
        }));
        events.push(Event::SessionResource(SessionResource {
            resource_id: id,
            change: ResourceChange::Attached { resource },
        }));
    }
    if !changes.is_empty() {
        events.push(Event::WorkspaceDelta(WorkspaceDelta { tool_use_id: None, changes }));
    }
    Ok(Prepared { events, wire })
}

/// Appends what [`prepare`] did to the session's log; returns the resources
/// as the API shows them.
pub fn record(
    state: &AppState,
    store: &SledStore,
    session: SessionId,
    prepared: Prepared,
) -> Result<Vec<Value>, ApiError> {
    if !prepared.events.is_empty() {
        events::append_system(state, store, session, prepared.events)?;
    }
    Ok(prepared.wire)
}

/// The resources attached to `session`, from its log.
pub fn attached(store: &SledStore, session: SessionId) -> Result<Vec<Resource>, ApiError> {
    let mut entries = Vec::new();
    let mut from = Seq::ZERO;
    loop {
        // Fewer than asked is not the end (the store's byte budget may cut a
        // scan short); an empty scan is.
        let records = store.scan_types(session, &[EventType::SessionResource], from, MAX_READ_RECORDS)?;
        let Some(last) = records.last() else { break };
        from = Seq::new(last.seq().get() + 1);
        for record in records {
            entries.push(record.entry().map_err(ApiError::internal)?);
        }
    }
    Ok(logbook_replay::resources::resources(&entries))
}

/// A resource as the API shows it.
pub fn to_wire(resource: &Resource) -> Value {
    match &resource.resource {
        AttachedResource::File { file_id, mount_path } => json!({
            "id": resource.id,
            "type": "file",
            "file_id": file_id,
            "mount_path": mount_path,
            "created_at": resource.created_at,
            "updated_at": resource.updated_at,
        }),
        AttachedResource::GithubRepository { url, mount_path, checkout } => json!({
            "id": resource.id,
            "type": "github_repository",
            "url": url,
            "mount_path": mount_path,
            "checkout": checkout,
            "created_at": resource.created_at,
            "updated_at": resource.updated_at,
        }),
    }
}

fn mount_path(resource: &AttachedResource) -> &str {
    match resource {
        AttachedResource::File { mount_path, .. } | AttachedResource::GithubRepository { mount_path, .. } => mount_path,
    }
}

fn host(state: &AppState) -> Result<&std::sync::Arc<Host>, ApiError> {
    state.resources_host().ok_or_else(|| {
        ApiError::unavailable("this server has no directory for session files; resources cannot be mounted")
    })
}

fn confine_error(err: confine::ConfineError) -> ApiError {
    match err {
        confine::ConfineError::Symlink { .. }
        | confine::ConfineError::Escape { .. }
        | confine::ConfineError::NotADirectory { .. }
        | confine::ConfineError::IsADirectory { .. }
        | confine::ConfineError::Exists { .. } => ApiError::invalid(format!("mount_path: {err}")),
        confine::ConfineError::Io { .. } => ApiError::internal(err),
    }
}

fn mount_error(err: mount::MountError) -> ApiError {
    match err {
        mount::MountError::Confine(err) => confine_error(err),
        mount::MountError::Content(err) => files::content_error(err),
    }
}

fn resource_not_found(raw: &str) -> ApiError {
    ApiError::not_found(format!("session resource {raw} not found")).with_code("session_resource_not_found")
}

/// The session (of this tenant) and its resources, refusing archived ones
/// when `writing`.
fn load_session(
    store: &SledStore,
    tenant: &Tenant,
    id: SessionId,
    writing: bool,
) -> Result<(StoredSession, Vec<Resource>), ApiError> {
    let (_, session) = sessions::load(store, tenant, id)?;
    if writing && session.archived_at.is_some() {
        return Err(ApiError::invalid(format!("session {id} is archived; its resources cannot change")));
    }
    let resources = attached(store, id)?;
    Ok((session, resources))
}

fn find(resources: &[Resource], raw: &str) -> Result<Resource, ApiError> {
    let id = raw.parse::<SessionResourceId>().map_err(|_| resource_not_found(raw))?;
    resources.iter().find(|r| r.id == id).cloned().ok_or_else(|| resource_not_found(raw))
}

pub async fn add(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(session_id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let id = sessions::parse_session_id(&session_id)?;
    let spec = match body.get("type").and_then(Value::as_str) {
        Some("github_repository") => {
            return Err(ApiError::invalid(
                "type: only file resources can be added to a session; repositories are given when it is created",
            ));
        }
        _ => parse_spec(&body, "")?,
    };
    let now = state.now();
    let worker = state.clone();
    let mut wire = state
        .blocking(move |store| {
            let host = host(&worker)?;
            let _guard = host.lock(id);
            let (session, existing) = load_session(store, &tenant, id, true)?;
            if session.self_hosted {
                return Err(self_hosted_error(&session));
            }
            let resolved = resolve(store, &tenant, vec![spec], &existing, now)?;
            let prepared = prepare(&worker, store, id, resolved)?;
            record(&worker, store, id, prepared)
        })
        .await?;
    wire.pop().map(Json).ok_or_else(|| ApiError::internal("no resource was attached"))
}

pub async fn list(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(session_id): Path<String>,
    query: Query,
) -> Result<Json<Value>, ApiError> {
    let id = sessions::parse_session_id(&session_id)?;
    let limit = match query.one("limit") {
        None => None,
        Some(_) => Some(query.limit(MAX_LIST_LIMIT, MAX_LIST_LIMIT)?),
    };
    let after = match query.one("page") {
        None => None,
        Some(raw) => {
            let bytes = decode_cursor("resources", raw)?;
            let bytes: [u8; 16] = bytes
                .try_into()
                .map_err(|_| ApiError::invalid(format!("page: {raw:?} is not a cursor this list returned")))?;
            Some(SessionResourceId::from_bytes(bytes))
        }
    };
    let resources = state.blocking(move |store| load_session(store, &tenant, id, false).map(|(_, r)| r)).await?;
    let start = match after {
        None => 0,
        // A cursor whose resource was deleted since goes on with the first
        // one attached after it (ids grow with attach time).
        Some(after) => match resources.iter().position(|r| r.id == after) {
            Some(idx) => idx + 1,
            None => resources.iter().position(|r| r.id > after).unwrap_or(resources.len()),
        },
    };
    let rest = &resources[start.min(resources.len())..];
    let n = limit.unwrap_or(rest.len()).min(rest.len());
    let page = &rest[..n];
    let next_page = match (page.last(), n < rest.len()) {
        (Some(last), true) => Some(encode_cursor("resources", &last.id.to_bytes())),
        _ => None,
    };
    Ok(Json(json!({"data": page.iter().map(to_wire).collect::<Vec<_>>(), "next_page": next_page})))
}

pub async fn retrieve(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path((session_id, resource_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id = sessions::parse_session_id(&session_id)?;
    let resources = state.blocking(move |store| load_session(store, &tenant, id, false).map(|(_, r)| r)).await?;
    Ok(Json(to_wire(&find(&resources, &resource_id)?)))
}

/// The body of a resource update: a new token.
#[derive(Debug, Deserialize)]
pub struct ResourceUpdate {
    authorization_token: Secret,
}

pub async fn update(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path((session_id, resource_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<ResourceUpdate>,
) -> Result<Json<Value>, ApiError> {
    let id = sessions::parse_session_id(&session_id)?;
    let token = body.authorization_token;
    if token.expose().is_empty() || token.expose().len() > MAX_TOKEN_BYTES {
        return Err(ApiError::invalid(format!("authorization_token: must be 1 to {MAX_TOKEN_BYTES} bytes")));
    }
    let worker = state.clone();
    let resource = state
        .blocking(move |store| {
            let host = host(&worker)?;
            let _guard = host.lock(id);
            let (_, resources) = load_session(store, &tenant, id, true)?;
            let resource = find(&resources, &resource_id)?;
            match resource.resource {
                AttachedResource::GithubRepository { .. } => {}
                AttachedResource::File { .. } => {
                    return Err(ApiError::invalid(
                        "authorization_token: only github_repository resources have a token to rotate",
                    ));
                }
            }
            host.vault().set(id, resource.id, Some(token));
            let event = Event::SessionResource(SessionResource {
                resource_id: resource.id,
                change: ResourceChange::TokenRotated,
            });
            events::append_system(&worker, store, id, vec![event])?;
            let resources = attached(store, id)?;
            resources
                .into_iter()
                .find(|r| r.id == resource.id)
                .ok_or_else(|| resource_not_found(&resource.id.to_string()))
        })
        .await?;
    Ok(Json(to_wire(&resource)))
}

pub async fn delete(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path((session_id, resource_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id = sessions::parse_session_id(&session_id)?;
    let worker = state.clone();
    let deleted = state
        .blocking(move |store| {
            let host = host(&worker)?;
            let _guard = host.lock(id);
            let (_, resources) = load_session(store, &tenant, id, true)?;
            let resource = find(&resources, &resource_id)?;
            let AttachedResource::File { mount_path, .. } = &resource.resource else {
                return Err(ApiError::invalid(
                    "resource: repositories stay attached for the session's life; only file resources can be deleted",
                ));
            };
            let mut events = vec![Event::SessionResource(SessionResource {
                resource_id: resource.id,
                change: ResourceChange::Detached,
            })];
            if let Some(mount) = MountPath::from_absolute(mount_path) {
                let uploads = host.uploads(id).map_err(confine_error)?;
                let change = mount::unmount_file(&uploads, &mount).map_err(mount_error)?;
                events.push(Event::WorkspaceDelta(WorkspaceDelta { tool_use_id: None, changes: vec![change] }));
            }
            events::append_system(&worker, store, id, events)?;
            Ok(resource.id)
        })
        .await?;
    Ok(Json(json!({"id": deleted, "type": "session_resource_deleted"})))
}
