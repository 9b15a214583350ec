//! `/v1/agents`: create, retrieve (by version), update (optimistic, versioned),
//! list, archive, list versions.
//!
//! An agent is stored as its latest version under `(workspace, agent id)` and
//! every version under `(workspace, agent id, version)`. An update that changes
//! nothing returns the current version; one that changes anything writes the
//! next version with a compare-and-swap on the latest, so concurrent updates
//! cannot both win.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use logbook_core::{AgentId, Timestamp};
use logbook_store::{Direction, ResourceKind, Resources, SledStore};

use super::error::ApiError;
use super::tools::{
    self, McpServer, ModelConfig, ModelIn, RosterLookup, RosterMember, Skill, SkillIn, Tool, check_mcp, check_name,
    check_system, resolve_skills, resolve_tools,
};
use super::wire::{JsonBody, Query, check_metadata, decode_owned_cursor, double_option, encode_cursor, patch_metadata};
use super::{Page, from_bytes, parse_id, put_new, scan_page, to_bytes};
use crate::state::AppState;
use crate::tenancy::Tenant;

/// The Agent object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub id: AgentId,
    #[serde(rename = "type")]
    pub object: String,
    pub name: String,
    pub description: Option<String>,
    pub model: ModelConfig,
    pub system: Option<String>,
    pub tools: Vec<Tool>,
    pub mcp_servers: Vec<McpServer>,
    pub skills: Vec<Skill>,
    pub metadata: Map<String, Value>,
    pub execution_identity: Value,
    pub multiagent: Option<Value>,
    pub version: u32,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub archived_at: Option<Timestamp>,
}

#[derive(Debug, Deserialize)]
pub struct AgentCreate {
    model: ModelIn,
    name: String,
    description: Option<String>,
    system: Option<String>,
    tools: Option<Vec<Value>>,
    mcp_servers: Option<Vec<McpServer>>,
    skills: Option<Vec<SkillIn>>,
    metadata: Option<Map<String, Value>>,
    multiagent: Option<Value>,
    execution_identity: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
pub struct AgentUpdate {
    version: Option<u32>,
    #[serde(default, deserialize_with = "double_option")]
    name: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    system: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    model: Option<Option<ModelIn>>,
    #[serde(default, deserialize_with = "double_option")]
    tools: Option<Option<Vec<Value>>>,
    #[serde(default, deserialize_with = "double_option")]
    mcp_servers: Option<Option<Vec<McpServer>>>,
    #[serde(default, deserialize_with = "double_option")]
    skills: Option<Option<Vec<SkillIn>>>,
    #[serde(default, deserialize_with = "double_option")]
    metadata: Option<Option<Map<String, Value>>>,
    #[serde(default, deserialize_with = "double_option")]
    multiagent: Option<Option<Value>>,
    #[serde(default, deserialize_with = "double_option")]
    execution_identity: Option<Option<Value>>,
}

pub const MAX_LIST_LIMIT: usize = 100;
pub const DEFAULT_LIST_LIMIT: usize = 20;

pub async fn create(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    JsonBody(body): JsonBody<AgentCreate>,
) -> Result<Json<Agent>, ApiError> {
    check_name(&body.name)?;
    crate::api::tools::check_description(body.description.as_deref())?;
    if let Some(system) = &body.system {
        check_system(system)?;
    }
    let tools = resolve_tools(&body.tools.unwrap_or_default())?;
    let mcp_servers = body.mcp_servers.unwrap_or_default();
    check_mcp(&mcp_servers, &tools)?;
    let metadata = body.metadata.unwrap_or_default();
    check_metadata(&metadata)?;
    let now = state.now();
    let multiagent = body.multiagent;
    let agent = Agent {
        id: state.new_id(now, AgentId::from_parts),
        object: "agent".to_owned(),
        name: body.name,
        description: body.description.filter(|d| !d.is_empty()),
        model: body.model.resolve(None)?,
        system: body.system.filter(|s| !s.is_empty()),
        tools,
        mcp_servers,
        skills: resolve_skills(body.skills.unwrap_or_default())?,
        metadata,
        execution_identity: tools::resolve_execution_identity(body.execution_identity)?,
        multiagent: None,
        version: 1,
        created_at: now,
        updated_at: now,
        archived_at: None,
    };
    let agent = state
        .blocking(move |store| {
            // The roster's members are pinned to their versions as stored now.
            let lookup = |field: &str, member: &str, version: Option<u32>| {
                roster_member(store, &tenant, None, field, member, version)
            };
            let mut multiagent = tools::resolve_multiagent(multiagent, &lookup)?;
            resolve_self(&mut multiagent, agent.id, agent.version);
            let agent = Agent { multiagent, ..agent };
            let bytes = to_bytes(&agent)?;
            put_new(store, ResourceKind::Agent, &tenant.key(agent.id.to_bytes()), &bytes)?;
            put_new(store, ResourceKind::AgentVersion, &version_key(&tenant, agent.id, 1), &bytes)?;
            Ok(agent)
        })
        .await?;
    Ok(Json(agent))
}

pub async fn retrieve(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(agent_id): Path<String>,
    query: Query,
) -> Result<Json<Agent>, ApiError> {
    let id = parse_id::<AgentId>(&agent_id, "agent")?;
    let version = match query.one("version") {
        None => None,
        Some(raw) => match raw.parse::<u32>() {
            Ok(v) if v >= 1 => Some(v),
            _ => return Err(ApiError::invalid(format!("version: must be an integer of at least 1, got {raw:?}"))),
        },
    };
    let agent = state.blocking(move |store| load_version(store, &tenant, id, version)).await?;
    Ok(Json(agent))
}

pub async fn update(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(agent_id): Path<String>,
    JsonBody(body): JsonBody<AgentUpdate>,
) -> Result<Json<Agent>, ApiError> {
    let id = parse_id::<AgentId>(&agent_id, "agent")?;
    let now = state.now();
    let agent = state
        .blocking(move |store| {
            let key = tenant.key(id.to_bytes());
            let (current_bytes, current) = load_latest(store, &tenant, id)?;
            if current.archived_at.is_some() {
                return Err(ApiError::invalid(format!("agent {id} is archived and can no longer be updated")));
            }
            if body.version == Some(0) {
                return Err(ApiError::invalid("version: must be at least 1"));
            }
            if let Some(expected) = body.version
                && expected != current.version
            {
                return Err(ApiError::conflict(format!(
                    "version {expected} is not the current version of agent {id} (it is {}); retrieve the agent and retry",
                    current.version
                )));
            }
            let pinned = body.version.is_some();
            let lookup = |field: &str, member: &str, version: Option<u32>| {
                roster_member(store, &tenant, Some(id), field, member, version)
            };
            let mut next = apply_update(&current, body, &lookup)?;
            if next == current {
                return Ok(current);
            }
            next.version = current.version + 1;
            next.updated_at = now;
            resolve_self(&mut next.multiagent, id, next.version);
            let bytes = to_bytes(&next)?;
            match store.swap_resource(ResourceKind::Agent, &key, Some(&current_bytes), Some(&bytes))? {
                Ok(()) => {}
                // With a version, the client's view is now stale; without
                // one, sending the update again is right (the SDK retries it).
                Err(_) if pinned => {
                    return Err(ApiError::conflict(format!(
                        "agent {id} was updated concurrently: version {} is no longer current; retrieve the agent and retry",
                        current.version
                    )));
                }
                Err(_) => {
                    return Err(ApiError::conflict_transient(format!("agent {id} was updated concurrently; retry")));
                }
            }
            put_new(store, ResourceKind::AgentVersion, &version_key(&tenant, id, next.version), &bytes)?;
            Ok(next)
        })
        .await?;
    Ok(Json(agent))
}

/// Applies an update's fields (version and timestamps untouched); a new
/// roster's members are found through `lookup`.
fn apply_update(current: &Agent, body: AgentUpdate, lookup: &RosterLookup<'_>) -> Result<Agent, ApiError> {
    let mut next = current.clone();
    match body.name {
        None => {}
        Some(None) => return Err(ApiError::invalid("name: cannot be cleared")),
        Some(Some(name)) => {
            check_name(&name)?;
            next.name = name;
        }
    }
    if let Some(description) = body.description {
        crate::api::tools::check_description(description.as_deref())?;
        next.description = description.filter(|d| !d.is_empty());
    }
    if let Some(system) = body.system {
        if let Some(system) = &system {
            check_system(system)?;
        }
        next.system = system.filter(|s| !s.is_empty());
    }
    match body.model {
        None => {}
        Some(None) => return Err(ApiError::invalid("model: cannot be cleared")),
        Some(Some(model)) => next.model = model.resolve(Some(&current.model))?,
    }
    if let Some(tools) = body.tools {
        next.tools = resolve_tools(&tools.unwrap_or_default())?;
    }
    if let Some(servers) = body.mcp_servers {
        next.mcp_servers = servers.unwrap_or_default();
    }
    check_mcp(&next.mcp_servers, &next.tools)?;
    if let Some(skills) = body.skills {
        next.skills = resolve_skills(skills.unwrap_or_default())?;
    }
    if let Some(patch) = body.metadata {
        next.metadata = patch_metadata(&current.metadata, &patch.unwrap_or_default(), false)?;
    }
    if let Some(multiagent) = body.multiagent {
        next.multiagent = tools::resolve_multiagent(multiagent, lookup)?;
    }
    if let Some(identity) = body.execution_identity {
        next.execution_identity = tools::resolve_execution_identity(identity)?;
    }
    Ok(next)
}

pub async fn list(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    query: Query,
) -> Result<Json<Page<Agent>>, ApiError> {
    let limit = query.limit(DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT)?;
    let include_archived = query.flag("include_archived")?;
    let range = query.time_range("created_at")?;
    let after = query.one("page").map(|page| decode_owned_cursor("agents", page, &tenant.prefix())).transpose()?;
    let page = state
        .blocking(move |store| {
            // Newest first.
            let scanned =
                scan_page(store, ResourceKind::Agent, &tenant.prefix(), after, Direction::Backward, limit, |bytes| {
                    let agent: Agent = from_bytes(bytes)?;
                    let keep = (include_archived || agent.archived_at.is_none()) && range.contains(agent.created_at);
                    Ok(keep.then_some(agent))
                })?;
            Ok(Page {
                data: scanned.items.into_iter().map(|(_, agent)| agent).collect(),
                next_page: scanned.next.map(|key| encode_cursor("agents", &key)),
                prev_page: None,
            })
        })
        .await?;
    Ok(Json(page))
}

pub async fn archive(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(agent_id): Path<String>,
) -> Result<Json<Agent>, ApiError> {
    let id = parse_id::<AgentId>(&agent_id, "agent")?;
    let now = state.now();
    let agent = state
        .blocking(move |store| {
            let (current_bytes, mut agent) = load_latest(store, &tenant, id)?;
            if agent.archived_at.is_some() {
                return Ok(agent);
            }
            agent.archived_at = Some(now);
            agent.updated_at = now;
            let bytes = to_bytes(&agent)?;
            let key = tenant.key(id.to_bytes());
            match store.swap_resource(ResourceKind::Agent, &key, Some(&current_bytes), Some(&bytes))? {
                Ok(()) => Ok(agent),
                Err(_) => Err(ApiError::conflict_transient(format!("agent {id} was updated concurrently; retry"))),
            }
        })
        .await?;
    Ok(Json(agent))
}

pub async fn versions(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(agent_id): Path<String>,
    query: Query,
) -> Result<Json<Page<Agent>>, ApiError> {
    let id = parse_id::<AgentId>(&agent_id, "agent")?;
    let limit = query.limit(DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT)?;
    let after =
        query.one("page").map(|page| decode_owned_cursor("versions", page, &tenant.key(id.to_bytes()))).transpose()?;
    let page = state
        .blocking(move |store| {
            // 404 for an agent of another workspace, like any missing one.
            let (_, latest) = load_latest(store, &tenant, id)?;
            let prefix = tenant.key(id.to_bytes());
            let scanned =
                scan_page(store, ResourceKind::AgentVersion, &prefix, after, Direction::Backward, limit, |bytes| {
                    // Archiving is the agent's, not a version's: every version shows it.
                    from_bytes::<Agent>(bytes).map(|version| Some(Agent { archived_at: latest.archived_at, ..version }))
                })?;
            Ok(Page {
                data: scanned.items.into_iter().map(|(_, agent)| agent).collect(),
                next_page: scanned.next.map(|key| encode_cursor("versions", &key)),
                prev_page: None,
            })
        })
        .await?;
    Ok(Json(page))
}

fn version_key(tenant: &Tenant, id: AgentId, version: u32) -> Vec<u8> {
    let mut key = tenant.key(id.to_bytes());
    key.extend_from_slice(&version.to_be_bytes());
    key
}

pub fn not_found(id: AgentId) -> ApiError {
    ApiError::not_found(format!("agent {id} not found")).with_code("agent_not_found")
}

/// The agent `raw_id` that the roster entry `field` names, at `version` (the
/// latest when `None`), looked up in the caller's workspace: another
/// workspace's agent is not found, like a missing one, and the 404 names the
/// entry. The coordinator being updated (`coordinator`) names itself with
/// `{type: "self"}`, not its id.
fn roster_member(
    store: &SledStore,
    tenant: &Tenant,
    coordinator: Option<AgentId>,
    field: &str,
    raw_id: &str,
    version: Option<u32>,
) -> Result<RosterMember, ApiError> {
    let id = raw_id
        .parse::<AgentId>()
        .map_err(|_| ApiError::not_found(format!("{field}: agent {raw_id} not found")).with_code("agent_not_found"))?;
    if coordinator == Some(id) {
        return Err(ApiError::invalid(format!("{field}: names the agent itself; use {{type: self}}")));
    }
    let agent = load_version(store, tenant, id, version).map_err(|err| {
        if err.status == axum::http::StatusCode::NOT_FOUND {
            ApiError { message: format!("{field}: {}", err.message), ..err }
        } else {
            err
        }
    })?;
    Ok(RosterMember { version: agent.version, multiagent: agent.multiagent.is_some() })
}

/// A coordinator roster's `{type: "self"}` entry, resolved as the API does
/// to a concrete reference: the coordinator itself, at the version being
/// written (entries stored earlier are resolved already).
fn resolve_self(multiagent: &mut Option<Value>, id: AgentId, version: u32) {
    let Some(agents) = multiagent.as_mut().and_then(|m| m.get_mut("agents")).and_then(Value::as_array_mut) else {
        return;
    };
    for entry in agents.iter_mut() {
        if entry.get("type").and_then(Value::as_str) == Some("self") {
            *entry = serde_json::json!({"type": "agent", "id": id, "version": version});
        }
    }
}

/// The latest version, with its stored bytes (for compare-and-swap).
pub fn load_latest(store: &SledStore, tenant: &Tenant, id: AgentId) -> Result<(Vec<u8>, Agent), ApiError> {
    let bytes = store.get_resource(ResourceKind::Agent, &tenant.key(id.to_bytes()))?.ok_or_else(|| not_found(id))?;
    let agent = from_bytes(&bytes)?;
    Ok((bytes, agent))
}

/// A given version, or the latest. An archived agent's versions are all
/// archived (archiving is one-way and the agent's, stored on its latest).
pub fn load_version(store: &SledStore, tenant: &Tenant, id: AgentId, version: Option<u32>) -> Result<Agent, ApiError> {
    let (_, latest) = load_latest(store, tenant, id)?;
    let Some(version) = version.filter(|v| *v != latest.version) else { return Ok(latest) };
    match store.get_resource(ResourceKind::AgentVersion, &version_key(tenant, id, version))? {
        Some(bytes) => from_bytes::<Agent>(&bytes).map(|agent| Agent { archived_at: latest.archived_at, ..agent }),
        None => {
            Err(ApiError::not_found(format!("agent {id} has no version {version}"))
                .with_code("agent_version_not_found"))
        }
    }
}
