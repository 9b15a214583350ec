//! `/v1/sessions`: create (from an agent id, a pinned version, or with
//! overrides; with initial events), retrieve, update, list (filters,
//! bidirectional cursors), archive, delete.
//!
//! The session object is a resource (`(workspace, session id)`) holding what
//! the API shows besides the log: the agent snapshot, environment, title,
//! metadata, status. The session's events live in its log. Status is kept in
//! the resource as an index of the log's status events, which only Logbook
//! itself appends (so far: archive appends `session.status_terminated`).

use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use logbook_core::event::{Event, SessionDeleted, SessionStatusTerminated, SessionUpdated};
use logbook_core::{AgentId, EnvironmentId, Json as CoreJson, SessionId, Timestamp};
use logbook_store::{Direction, ResourceKind, Resources, SledStore, StoredResource};

use super::agents::{self, Agent};
use super::environments::{self, EnvConfig};
use super::error::ApiError;
use super::events::{self, InputContext};
use super::tools::{
    self, McpServer, ModelConfig, ModelIn, Skill, SkillIn, Tool, check_mcp, resolve_skills, resolve_tools,
};
use super::wire::{
    JsonBody, Order, Query, check_metadata, decode_cursor, double_option, encode_cursor, patch_metadata,
};
use super::work::WorkNeed;
use super::{from_bytes, parse_id, put_new, scan_page, to_bytes};
use crate::state::AppState;
use crate::tenancy::Tenant;

pub const MAX_INITIAL_EVENTS: usize = 50;
pub const MAX_TITLE_CHARS: usize = 512;

/// What is stored for a session. `to_wire` turns it into the API object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSession {
    pub id: SessionId,
    pub status: Status,
    pub environment_id: EnvironmentId,
    pub agent: SessionAgent,
    /// Whether `agent` came from an agent reference (its tools may be updated).
    pub from_agent_ref: bool,
    pub title: Option<String>,
    pub metadata: Map<String, Value>,
    pub budget: Option<Value>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub archived_at: Option<Timestamp>,
    pub terminated_at: Option<Timestamp>,
    /// Whether the environment is self-hosted (decides `user.tool_result`).
    pub self_hosted: bool,
    /// Usage as of the last idle (an index of the log, kept by the runner).
    #[serde(default)]
    pub usage: UsageView,
    /// What each path of the outputs directory was last captured as.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub outputs: std::collections::BTreeMap<String, crate::resources::outputs::CapturedOutput>,
    /// The resources as the API shows them, read from the log (never stored).
    #[serde(skip)]
    pub resources: Vec<Value>,
    /// One per `user.define_outcome`, as its evaluation spans leave it, read
    /// from the log (never stored).
    #[serde(skip)]
    pub outcome_evaluations: Vec<Value>,
}

/// Cumulative usage the session object shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageView {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub active_seconds: f64,
    /// List cost in cents, when the model is priced.
    pub list_cost_cents: Option<u64>,
    /// Server tool uses the model provider billed.
    #[serde(default)]
    pub web_search_requests: u64,
    #[serde(default)]
    pub web_fetch_requests: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Idle,
    Running,
    Rescheduling,
    Terminated,
}

impl Status {
    /// The status as the API spells it.
    pub fn wire(self) -> &'static str {
        match self {
            Status::Idle => "idle",
            Status::Running => "running",
            Status::Rescheduling => "rescheduling",
            Status::Terminated => "terminated",
        }
    }
}

impl From<logbook_replay::Status> for Status {
    fn from(status: logbook_replay::Status) -> Status {
        match status {
            logbook_replay::Status::Idle => Status::Idle,
            logbook_replay::Status::Running => Status::Running,
            logbook_replay::Status::Rescheduling => Status::Rescheduling,
            logbook_replay::Status::Terminated => Status::Terminated,
        }
    }
}

impl Status {
    pub(crate) fn parse(raw: &str) -> Result<Status, ApiError> {
        match raw {
            "idle" => Ok(Status::Idle),
            "running" => Ok(Status::Running),
            "rescheduling" => Ok(Status::Rescheduling),
            "terminated" => Ok(Status::Terminated),
            other => Err(ApiError::invalid(format!(
                "statuses: must be idle, running, rescheduling or terminated, got {other:?}"
            ))),
        }
    }
}

/// The agent snapshot a session runs with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionAgent {
    pub id: AgentId,
    #[serde(rename = "type")]
    pub object: String,
    pub version: u32,
    pub name: String,
    pub description: Option<String>,
    pub model: ModelConfig,
    pub system: Option<String>,
    pub tools: Vec<Tool>,
    pub mcp_servers: Vec<McpServer>,
    pub skills: Vec<Skill>,
    pub execution_identity: Value,
    pub multiagent: Option<Value>,
}

impl From<&Agent> for SessionAgent {
    fn from(agent: &Agent) -> SessionAgent {
        SessionAgent {
            id: agent.id,
            object: "agent".to_owned(),
            version: agent.version,
            name: agent.name.clone(),
            description: agent.description.clone(),
            model: agent.model.clone(),
            system: agent.system.clone(),
            tools: agent.tools.clone(),
            mcp_servers: agent.mcp_servers.clone(),
            skills: agent.skills.clone(),
            execution_identity: agent.execution_identity.clone(),
            multiagent: agent.multiagent.clone(),
        }
    }
}

impl StoredSession {
    fn usage_json(&self) -> Value {
        let usage = &self.usage;
        let mut out = json!({
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cache_read_input_tokens": usage.cache_read_input_tokens,
            "cache_creation": {"ephemeral_5m_input_tokens": usage.cache_creation_input_tokens},
            "server_tool_use": {
                "web_search_requests": usage.web_search_requests,
                "web_fetch_requests": usage.web_fetch_requests,
            },
            "active_seconds": usage.active_seconds,
        });
        if let (Some(cents), Some(obj)) = (usage.list_cost_cents, out.as_object_mut()) {
            obj.insert("list_cost".to_owned(), json!({"amount": cents.to_string(), "currency": "USD"}));
        }
        out
    }

    /// The budget's limit in cents, if the session has one.
    pub fn budget_cents(&self) -> Option<u64> {
        self.budget.as_ref()?.pointer("/max_list_cost/amount")?.as_str()?.parse().ok()
    }

    /// The API's Session object as of `now`.
    pub fn to_wire(&self, now: Timestamp) -> Value {
        let end = self.terminated_at.unwrap_or(now);
        let duration = (end.unix_micros() - self.created_at.unix_micros()).max(0) as f64 / 1e6;
        json!({
            "id": self.id,
            "type": "session",
            "status": self.status,
            "environment_id": self.environment_id,
            "agent": self.agent,
            "title": self.title,
            "metadata": self.metadata,
            "resources": self.resources,
            "vault_ids": [],
            "outcome_evaluations": self.outcome_evaluations,
            "budget": self.budget,
            "deployment_id": null,
            "stats": {"active_seconds": self.usage.active_seconds, "duration_seconds": duration},
            "usage": self.usage_json(),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "archived_at": self.archived_at,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum AgentRef {
    Id(String),
    Object(Box<AgentRefObject>),
}

#[derive(Debug, Deserialize)]
pub struct AgentRefObject {
    #[serde(rename = "type")]
    kind: String,
    id: String,
    version: Option<u32>,
    #[serde(flatten)]
    overrides: AgentOverrides,
    /// What no field above took (declared last, so it sees only that):
    /// refused, as a mistyped override would otherwise be dropped.
    #[serde(flatten)]
    unknown: Map<String, Value>,
}

/// What `agent_with_overrides` (and a fork) may change of an agent: a field
/// that is present replaces the agent's; `null` clears it where allowed.
/// Any other field is refused, not ignored (a mistyped override would
/// otherwise run the agent unchanged).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentOverrides {
    #[serde(default, deserialize_with = "double_option")]
    model: Option<Option<ModelIn>>,
    #[serde(default, deserialize_with = "double_option")]
    system: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    tools: Option<Option<Vec<Value>>>,
    #[serde(default, deserialize_with = "double_option")]
    mcp_servers: Option<Option<Vec<McpServer>>>,
    #[serde(default, deserialize_with = "double_option")]
    skills: Option<Option<Vec<SkillIn>>>,
}

impl AgentOverrides {
    /// Whether no field is given.
    fn is_empty(&self) -> bool {
        let AgentOverrides { model, system, tools, mcp_servers, skills } = self;
        model.is_none() && system.is_none() && tools.is_none() && mcp_servers.is_none() && skills.is_none()
    }

    /// Applies the overrides to `snapshot`, validating each as agent create does.
    pub fn apply(self, snapshot: &mut SessionAgent) -> Result<(), ApiError> {
        match self.model {
            None => {}
            Some(None) => {
                return Err(ApiError::invalid("agent.model: cannot be null").with_code("agent_model_required"));
            }
            // A model override runs at the model's default effort.
            Some(Some(model)) => snapshot.model = model.resolve(None)?,
        }
        if let Some(system) = self.system {
            if let Some(system) = &system {
                tools::check_system(system)?;
            }
            snapshot.system = system.filter(|s| !s.is_empty());
        }
        let tools_or_skills = self.tools.is_some() || self.skills.is_some();
        if let Some(tools) = self.tools {
            snapshot.tools = resolve_tools(&tools.unwrap_or_default())?;
        }
        if let Some(servers) = self.mcp_servers {
            snapshot.mcp_servers = servers.unwrap_or_default();
        }
        if let Some(skills) = self.skills {
            snapshot.skills = resolve_skills(skills.unwrap_or_default())?;
        }
        // Behaviour digest §3.2: skills are loaded with `read`, so overrides
        // may not leave skills without it.
        if tools_or_skills {
            check_skills_can_load(snapshot)?;
        }
        check_mcp(&snapshot.mcp_servers, &snapshot.tools)
    }
}

/// Skills are loaded with the `read` tool (behaviour digest §3.2): an agent
/// snapshot whose tools were changed may not leave its skills without it.
fn check_skills_can_load(agent: &SessionAgent) -> Result<(), ApiError> {
    if !agent.skills.is_empty() && !crate::tools::is_enabled(&agent.tools, "read") {
        return Err(ApiError::invalid(
            "agent.tools: the agent's skills need the read tool (an agent_toolset_20260401 with read enabled); \
             keep it or clear skills too",
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
pub struct SessionCreate {
    agent: AgentRef,
    environment_id: String,
    title: Option<String>,
    metadata: Option<Map<String, Value>>,
    resources: Option<Vec<Value>>,
    initial_events: Option<Vec<Value>>,
    budget: Option<Value>,
    vault_ids: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SessionUpdate {
    #[serde(default, deserialize_with = "double_option")]
    title: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    metadata: Option<Option<Map<String, Value>>>,
    #[serde(default, deserialize_with = "double_option")]
    budget: Option<Option<Value>>,
    agent: Option<SessionAgentUpdate>,
    vault_ids: Option<Value>,
}

/// The agent fields a session update may change (API digest: `agent?` =
/// `{tools?, mcp_servers?}` only); anything else is refused, not ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionAgentUpdate {
    #[serde(default, deserialize_with = "double_option")]
    tools: Option<Option<Vec<Value>>>,
    #[serde(default, deserialize_with = "double_option")]
    mcp_servers: Option<Option<Vec<McpServer>>>,
}

pub async fn create(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    JsonBody(body): JsonBody<SessionCreate>,
) -> Result<Json<Value>, ApiError> {
    if let Some(title) = &body.title {
        tools::check_len(title, 0, MAX_TITLE_CHARS, "title")?;
    }
    let metadata = body.metadata.unwrap_or_default();
    check_metadata(&metadata)?;
    let specs = super::resources::parse_specs(&body.resources.unwrap_or_default())?;
    if body.vault_ids.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(ApiError::invalid("vault_ids: vaults are not supported by this server"));
    }
    let budget = body.budget.filter(|b| !b.is_null()).map(|b| check_budget(&b).map(|()| b)).transpose()?;
    let initial = body.initial_events.unwrap_or_default();
    if initial.len() > MAX_INITIAL_EVENTS {
        return Err(ApiError::invalid(format!(
            "initial_events: at most {MAX_INITIAL_EVENTS} events, got {}",
            initial.len()
        )));
    }
    let env_id = body.environment_id;
    let agent_ref = body.agent;
    let now = state.now();
    let id = state.new_id(now, SessionId::from_parts);
    let title = body.title;
    let worker_state = state.clone();
    let session = state
        .blocking(move |store| {
            let env_id: EnvironmentId = env_id.parse().map_err(|_| environments::not_found(&env_id))?;
            let (_, env) = environments::load(store, &tenant, env_id)?;
            check_can_start(env_id, &env)?;
            let (agent, from_agent_ref) = resolve_agent(store, &tenant, agent_ref)?;
            if budget.is_some() {
                check_budgetable(&agent.model)?;
            }
            crate::mcp::check_environment(&agent.mcp_servers, &env.config)?;
            crate::tools::check_environment(&agent.tools, &env.config)?;
            let self_hosted = matches!(env.config, EnvConfig::SelfHosted {});
            let mut session = StoredSession {
                id,
                status: Status::Idle,
                environment_id: env_id,
                agent,
                from_agent_ref,
                title,
                metadata,
                budget,
                created_at: now,
                updated_at: now,
                archived_at: None,
                terminated_at: None,
                self_hosted,
                usage: UsageView::default(),
                outputs: std::collections::BTreeMap::new(),
                resources: Vec::new(),
                outcome_evaluations: Vec::new(),
            };
            if self_hosted && !specs.is_empty() {
                return Err(super::resources::self_hosted_error(&session));
            }
            // Validate every initial event before creating anything.
            let inputs = events::parse_inputs(&initial, InputContext::Initial, &session, now)?;
            events::check_files(store, &tenant, &inputs, now)?;
            // Behaviour digest §3.2: initial input creates the session running
            // (when a runner will run it; without one, idle is the truth).
            if worker_state.runner().is_some() && inputs.iter().any(events::starts_work) {
                session.status = Status::Running;
            }
            let resolved = super::resources::resolve(store, &tenant, specs, &[], now)?;
            if let Some(host) = worker_state.resources_host() {
                host.prepare(id).map_err(ApiError::internal)?;
            }
            let prepared = super::resources::prepare(&worker_state, store, id, resolved)?;
            {
                // The environment still exists when a session naming it
                // does: no delete runs between this check and the write.
                let _in_use = worker_state.environment_in_use(env_id);
                environments::load(store, &tenant, env_id)?;
                put_new(store, ResourceKind::Session, &tenant.key(id.to_bytes()), &to_bytes(&session)?)?;
            }
            session.resources = super::resources::record(&worker_state, store, id, prepared)?;
            if !inputs.is_empty() {
                events::append_inputs(&worker_state, store, &session, inputs)?;
            }
            // A self-hosted session waits in its environment's work queue for a worker.
            super::work::ensure_session_work(&worker_state, store, &tenant, &session, WorkNeed::Input)?;
            // Woken here, not after the await: a request dropped meanwhile
            // would leave a session created running that no task runs.
            if let Some(runner) = worker_state.runner() {
                runner.wake(&worker_state, tenant.workspace, session.id, false);
            }
            Ok(session)
        })
        .await?;
    Ok(Json(session.to_wire(now)))
}

/// An archived environment starts no sessions (created or forked).
pub(crate) fn check_can_start(env_id: EnvironmentId, env: &environments::Environment) -> Result<(), ApiError> {
    match env.archived_at {
        Some(_) => Err(ApiError::invalid(format!("environment {env_id} is archived and cannot start sessions"))
            .with_code("environment_archived")),
        None => Ok(()),
    }
}

fn resolve_agent(store: &SledStore, tenant: &Tenant, agent_ref: AgentRef) -> Result<(SessionAgent, bool), ApiError> {
    let parse = |raw: &str| -> Result<AgentId, ApiError> { raw.parse().map_err(|_| agent_not_found(raw)) };
    match agent_ref {
        AgentRef::Id(id) => {
            let agent = agents::load_version(store, tenant, parse(&id)?, None)?;
            check_not_archived(&agent)?;
            let mut snapshot = SessionAgent::from(&agent);
            expand_roster(store, tenant, &mut snapshot)?;
            Ok((snapshot, true))
        }
        AgentRef::Object(obj) => {
            if obj.version == Some(0) {
                return Err(ApiError::invalid("agent.version: must be at least 1"));
            }
            if let Some(field) = obj.unknown.keys().next() {
                return Err(ApiError::invalid(format!("agent.{field}: unknown field")));
            }
            let agent = agents::load_version(store, tenant, parse(&obj.id)?, obj.version)?;
            check_not_archived(&agent)?;
            let mut snapshot = SessionAgent::from(&agent);
            expand_roster(store, tenant, &mut snapshot)?;
            match obj.kind.as_str() {
                "agent" if obj.overrides.is_empty() => Ok((snapshot, true)),
                "agent" => Err(ApiError::invalid(
                    "agent: overrides (model, system, tools, mcp_servers, skills) need type agent_with_overrides",
                )),
                "agent_with_overrides" => {
                    obj.overrides.apply(&mut snapshot)?;
                    Ok((snapshot, true))
                }
                other => {
                    Err(ApiError::invalid(format!("agent.type: must be agent or agent_with_overrides, got {other:?}")))
                }
            }
        }
    }
}

/// A coordinator's roster on a session's agent snapshot holds full agent
/// definitions (API digest §3.1: "on the Session snapshot they are
/// expanded"): each `{type: "agent", id, version}` becomes that version of
/// the agent, as a session thread's agent (no roster of its own). An entry
/// that no longer loads stays a reference.
fn expand_roster(store: &SledStore, tenant: &Tenant, snapshot: &mut SessionAgent) -> Result<(), ApiError> {
    let Some(multiagent) = snapshot.multiagent.as_mut() else { return Ok(()) };
    if multiagent.get("type").and_then(Value::as_str) != Some("coordinator") {
        return Ok(());
    }
    let Some(entries) = multiagent.get_mut("agents").and_then(Value::as_array_mut) else { return Ok(()) };
    for entry in entries.iter_mut() {
        if entry.get("type").and_then(Value::as_str) != Some("agent") {
            continue;
        }
        let id = entry.get("id").and_then(Value::as_str).and_then(|raw| raw.parse::<AgentId>().ok());
        let version = entry.get("version").and_then(Value::as_u64).and_then(|v| u32::try_from(v).ok());
        let Some(id) = id else { continue };
        let Ok(member) = agents::load_version(store, tenant, id, version) else { continue };
        let mut definition = serde_json::to_value(SessionAgent::from(&member)).map_err(ApiError::internal)?;
        if let Some(fields) = definition.as_object_mut() {
            fields.remove("multiagent");
        }
        *entry = definition;
    }
    Ok(())
}

fn agent_not_found(raw: &str) -> ApiError {
    ApiError::not_found(format!("agent {raw} not found")).with_code("agent_not_found")
}

pub(crate) fn check_not_archived(agent: &Agent) -> Result<(), ApiError> {
    if agent.archived_at.is_some() {
        return Err(ApiError::invalid(format!("agent {} is archived and cannot start sessions", agent.id)));
    }
    Ok(())
}

/// A budget needs a list price to count against (behaviour digest §12:
/// "Models without list price → 400 at create").
pub(crate) fn check_budgetable(model: &ModelConfig) -> Result<(), ApiError> {
    let totals = logbook_replay::Totals::default();
    match crate::runner::pricing::list_cost_cents(&model.id, &totals) {
        Some(_) => Ok(()),
        None => Err(ApiError::invalid(format!(
            "budget: model {} has no list price on this server, so a budget cannot be kept",
            model.id
        ))
        .with_code("model_not_budgetable")),
    }
}

fn check_budget(budget: &Value) -> Result<(), ApiError> {
    let ok = budget.get("type").and_then(Value::as_str) == Some("limit")
        && budget
            .pointer("/max_list_cost/amount")
            .and_then(Value::as_str)
            // Whole cents, no leading zeros, more than zero (behaviour digest §12).
            .is_some_and(|a| {
                !a.is_empty() && a.len() <= 18 && a.bytes().all(|b| b.is_ascii_digit()) && !a.starts_with('0')
            })
        && budget.pointer("/max_list_cost/currency").and_then(Value::as_str) == Some("USD");
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "budget: must be {\"type\": \"limit\", \"max_list_cost\": {\"amount\": \"<minor units>\", \"currency\": \"USD\"}}",
        ))
    }
}

pub async fn retrieve(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(session_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_session_id(&session_id)?;
    current_wire(&state, tenant, id).await.map(Json)
}

/// The session `id` of `tenant` as the API shows it now (its status and
/// usage from the log).
pub async fn current_wire(state: &AppState, tenant: Tenant, id: SessionId) -> Result<Value, ApiError> {
    let now = state.now();
    let session =
        state.blocking(move |store| load(store, &tenant, id).and_then(|(_, s)| with_log_state(store, s))).await?;
    Ok(session.to_wire(now))
}

pub async fn update(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(session_id): Path<String>,
    JsonBody(body): JsonBody<SessionUpdate>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_session_id(&session_id)?;
    if body.vault_ids.is_some() {
        return Err(ApiError::invalid("vault_ids: cannot be updated"));
    }
    let now = state.now();
    let worker_state = state.clone();
    let session = state
        .blocking(move |store| {
            // The runner records status and usage on the object as it goes:
            // a lost swap is the server's own write, so the update is made
            // again from what is stored now instead of answering 409.
            let mut known = None;
            for _ in 0..events::MAX_APPEND_ATTEMPTS {
                match update_once(&worker_state, store, &tenant, id, body.clone(), now, known.take())? {
                    Ok((session, budget_changed)) => {
                        // A session paused at its budget resumes by itself once
                        // it is raised or removed (behaviour digest §12): the
                        // runner reads the update from the log. Woken here, so
                        // a request dropped after the update still wakes it.
                        if budget_changed && let Some(runner) = worker_state.runner() {
                            runner.wake(&worker_state, tenant.workspace, id, false);
                        }
                        return Ok(session);
                    }
                    Err(current) => known = Some(current),
                }
            }
            Err(ApiError::conflict_transient(format!("session {id} changed concurrently; retry")))
        })
        .await?;
    Ok(Json(session.to_wire(now)))
}

/// The list cost, in cents unrounded, of everything `id`'s log holds now
/// (0 for a model without a price).
fn consumed_cents(store: &SledStore, id: SessionId, session: &StoredSession) -> Result<f64, ApiError> {
    use logbook_store::Read;
    let Some(last) = store.head(id)?.next.get().checked_sub(1) else { return Ok(0.0) };
    let projected = crate::projection::state_at(store, id, logbook_core::Seq::new(last))?;
    let totals = projected.usage.totals();
    Ok(crate::runner::pricing::session_cost_exact_cents(&session.agent.model, &totals).unwrap_or(0.0))
}

/// One attempt at an update, from `known` (see [`load_or`]): the session
/// updated and whether its budget changed, or the value another write left
/// between reading and writing it.
fn update_once(
    state: &AppState,
    store: &SledStore,
    tenant: &Tenant,
    id: SessionId,
    body: SessionUpdate,
    now: Timestamp,
    known: Option<Vec<u8>>,
) -> Result<Result<(StoredSession, bool), Vec<u8>>, ApiError> {
    let (current_bytes, current) = load_or(store, tenant, id, known)?;
    let live = with_log_state(store, current.clone())?;
    if current.archived_at.is_some() {
        return Err(ApiError::invalid(format!("session {id} is archived")));
    }
    let mut next = current.clone();
    let mut changes = SessionUpdated { agent: None, budget: None, metadata: None, title: None };
    if let Some(title) = body.title {
        if let Some(title) = &title {
            tools::check_len(title, 0, MAX_TITLE_CHARS, "title")?;
        }
        if title != current.title {
            changes.title = Some(title.clone());
            next.title = title;
        }
    }
    if let Some(patch) = body.metadata {
        let metadata = patch_metadata(&current.metadata, &patch.unwrap_or_default(), false)?;
        if metadata != current.metadata {
            changes.metadata =
                Some(metadata.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned())).collect());
            next.metadata = metadata;
        }
    }
    if let Some(budget) = body.budget {
        match (&current.budget, budget) {
            (None, Some(_)) => {
                return Err(ApiError::invalid(
                    "budget: a budget can only be set when the session is created (budget_create_only)",
                )
                .with_code("budget_create_only"));
            }
            (_, Some(budget)) => {
                check_budget(&budget)?;
                // A cap must leave room to run (behaviour digest §12), the
                // same one sent again too: measured on everything the log
                // holds now, a turn under way included (the last
                // `session.usage` is only the last idle's), or what that
                // last report said, whichever is more.
                let amount = budget.pointer("/max_list_cost/amount").and_then(Value::as_str);
                let reported = live.usage.list_cost_cents.unwrap_or(0) as f64;
                let consumed = consumed_cents(store, id, &current)?.max(reported);
                if amount.and_then(|a| a.parse::<u64>().ok()).is_some_and(|a| a as f64 <= consumed) {
                    return Err(ApiError::invalid(
                        "budget.max_list_cost must be greater than the session's consumed list cost",
                    )
                    .with_code("budget_not_raised"));
                }
                if Some(&budget) != current.budget.as_ref() {
                    changes.budget = Some(Some(budget_event(&budget)?));
                    next.budget = Some(budget);
                }
            }
            (Some(_), None) => {
                changes.budget = Some(None);
                next.budget = None;
            }
            (None, None) => {}
        }
    }
    if let Some(agent) = body.agent {
        if matches!(live.status, Status::Running | Status::Rescheduling) {
            return Err(ApiError::invalid(
                "agent: the session is not idle; send user.interrupt and wait for idle before changing its tools",
            ));
        }
        if !current.from_agent_ref {
            return Err(ApiError::invalid("agent: only sessions created from an agent reference can change tools"));
        }
        if let Some(tools) = agent.tools {
            next.agent.tools = resolve_tools(&tools.unwrap_or_default())?;
            check_skills_can_load(&next.agent)?;
            if let Ok((_, env)) = environments::load(store, tenant, current.environment_id) {
                crate::tools::check_environment(&next.agent.tools, &env.config)?;
            }
        }
        if let Some(servers) = agent.mcp_servers {
            next.agent.mcp_servers = servers.unwrap_or_default();
            // As at create: a limited environment decides which MCP hosts it reaches.
            // (A session outliving its environment, from before deletes
            // checked for sessions, has nothing left to check against.)
            if let Ok((_, env)) = environments::load(store, tenant, current.environment_id) {
                crate::mcp::check_environment(&next.agent.mcp_servers, &env.config)?;
            }
        }
        check_mcp(&next.agent.mcp_servers, &next.agent.tools)?;
        if next.agent != current.agent {
            changes.agent = Some(CoreJson::new(&serde_json::to_value(&next.agent).map_err(ApiError::internal)?));
        }
    }
    if next == current {
        return Ok(Ok((with_log_state(store, current)?, false)));
    }
    next.updated_at = now;
    if let Some(current) = try_swap(store, tenant, id, &current_bytes, Some(&next))? {
        return Ok(Err(current));
    }
    let budget_changed = changes.budget.is_some();
    events::append_system(state, store, id, vec![Event::SessionUpdated(changes)])?;
    Ok(Ok((with_log_state(store, next)?, budget_changed)))
}

fn budget_event(budget: &Value) -> Result<logbook_core::event::Budget, ApiError> {
    serde_json::from_value(budget.clone()).map_err(|err| ApiError::invalid(format!("budget: {err}")))
}

pub async fn list(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    query: Query,
) -> Result<Json<SessionPage>, ApiError> {
    let limit = query.limit(20, 100)?;
    let order = query.order(Order::Desc)?;
    let include_archived = query.flag("include_archived")?;
    let range = query.time_range("created_at")?;
    let statuses = query.all("statuses").into_iter().map(Status::parse).collect::<Result<Vec<_>, _>>()?;
    let agent_id = match query.one("agent_id") {
        None => None,
        Some(raw) => Some(
            raw.parse::<AgentId>().map_err(|_| ApiError::invalid(format!("agent_id: {raw:?} is not an agent id")))?,
        ),
    };
    let agent_version = match query.one("agent_version") {
        None => None,
        Some(_) if agent_id.is_none() => return Err(ApiError::invalid("agent_version: requires agent_id")),
        Some(raw) => Some(
            raw.parse::<u32>().map_err(|_| ApiError::invalid(format!("agent_version: {raw:?} is not a version")))?,
        ),
    };
    // Logbook has no deployments or memory stores: such filters match nothing.
    let impossible = query.one("deployment_id").is_some() || query.one("memory_store_id").is_some();
    let cursor = query.one("page").map(|raw| parse_session_cursor(raw, order, &tenant)).transpose()?;
    let now = state.now();
    let page = state
        .blocking(move |store| {
            let keep = |bytes: &[u8]| -> Result<Option<StoredSession>, ApiError> {
                let session = with_log_state(store, from_bytes(bytes)?)?;
                let keep = !impossible
                    && (include_archived || session.archived_at.is_none())
                    && range.contains(session.created_at)
                    && (statuses.is_empty() || statuses.contains(&session.status))
                    && agent_id.is_none_or(|a| session.agent.id == a)
                    && agent_version.is_none_or(|v| session.agent.version == v);
                Ok(keep.then_some(session))
            };
            let forward = match order {
                Order::Asc => Direction::Forward,
                Order::Desc => Direction::Backward,
            };
            let backward = match forward {
                Direction::Forward => Direction::Backward,
                Direction::Backward => Direction::Forward,
            };
            let prefix = tenant.prefix();
            let (items, next, prev) = match cursor {
                None | Some((CursorWay::Next, _)) => {
                    let after = cursor.map(|(_, key)| key);
                    let had_cursor = after.is_some();
                    let scanned = scan_page(store, ResourceKind::Session, &prefix, after, forward, limit, keep)?;
                    let prev = match scanned.items.first() {
                        Some((first, _)) if had_cursor => Some(first.clone()),
                        _ => None,
                    };
                    (scanned.items, scanned.next, prev)
                }
                Some((CursorWay::Prev, before)) => {
                    let scanned =
                        scan_page(store, ResourceKind::Session, &prefix, Some(before), backward, limit, keep)?;
                    let mut items = scanned.items;
                    items.reverse();
                    let next = items.last().map(|(key, _)| key.clone());
                    let prev = scanned.next.and(items.first().map(|(key, _)| key.clone()));
                    (items, next, prev)
                }
            };
            Ok(SessionPage {
                data: items.iter().map(|(_, s)| s.to_wire(now)).collect(),
                next_page: next.map(|key| encode_session_cursor(CursorWay::Next, order, &key)),
                prev_page: prev.map(|key| encode_session_cursor(CursorWay::Prev, order, &key)),
            })
        })
        .await?;
    Ok(Json(page))
}

/// The sessions list pages both ways and always sends `prev_page` (null on
/// the first page).
#[derive(Debug, Serialize)]
pub struct SessionPage {
    pub data: Vec<Value>,
    pub next_page: Option<String>,
    pub prev_page: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CursorWay {
    Next,
    Prev,
}

fn encode_session_cursor(way: CursorWay, order: Order, key: &[u8]) -> String {
    let mut bytes = vec![
        match way {
            CursorWay::Next => b'n',
            CursorWay::Prev => b'p',
        },
        match order {
            Order::Asc => b'a',
            Order::Desc => b'd',
        },
    ];
    bytes.extend_from_slice(key);
    encode_cursor("sessions", &bytes)
}

fn parse_session_cursor(raw: &str, order: Order, tenant: &Tenant) -> Result<(CursorWay, Vec<u8>), ApiError> {
    let bytes = decode_cursor("sessions", raw)?;
    let bad = || ApiError::invalid(format!("page: {raw:?} is not a cursor this list returned"));
    let (&way, rest) = bytes.split_first().ok_or_else(bad)?;
    let (&cursor_order, key) = rest.split_first().ok_or_else(bad)?;
    let way = match way {
        b'n' => CursorWay::Next,
        b'p' => CursorWay::Prev,
        _ => return Err(bad()),
    };
    let expected = match order {
        Order::Asc => b'a',
        Order::Desc => b'd',
    };
    if cursor_order != expected {
        return Err(ApiError::invalid(
            "page: this cursor belongs to the other order; keep the order of the first page",
        ));
    }
    if !key.starts_with(&tenant.prefix()) {
        return Err(bad());
    }
    Ok((way, key.to_vec()))
}

pub async fn archive(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(session_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_session_id(&session_id)?;
    let now = state.now();
    let mut attempt = 0;
    let session = loop {
        attempt += 1;
        let worker_state = state.clone();
        match state.blocking(move |store| try_archive(&worker_state, store, &tenant, id, now)).await? {
            ArchiveAttempt::Done(session) => break *session,
            ArchiveAttempt::Behind(written) if attempt < events::MAX_APPEND_ATTEMPTS => {
                // Another append is not durable yet: wait for it, then check
                // the status again at the new head (as a send does).
                let durable = state.store().wait_durable(id, written)?;
                let _ = tokio::time::timeout(events::RACE_WAIT, durable).await;
            }
            ArchiveAttempt::Behind(_) => {
                return Err(ApiError::overloaded("the session is too busy to archive right now; retry"));
            }
        }
    };
    // No worker is to be given the session any more (again, if the archive
    // was repeated after a crash between the two).
    let (worker_state, archived) = (state.clone(), session.clone());
    state.blocking(move |store| super::work::stop_session_work(&worker_state, store, &tenant, &archived)).await?;
    if let Some(runner) = state.runner() {
        runner.end_session(id).await;
    }
    Ok(Json(session.to_wire(now)))
}

/// What one try at archiving found.
enum ArchiveAttempt {
    Done(Box<StoredSession>),
    /// Something was appended after the head the status was checked at.
    Behind(logbook_core::Seq),
}

/// Archives at the durable head the status was checked at: the
/// `session.status_terminated` is appended there, so a message sent (and a
/// turn started) in between makes the append conflict and the check run
/// again, rather than a turn being cut short. The object is marked after
/// the log: from the terminated status on, sends are refused.
fn try_archive(
    state: &AppState,
    store: &SledStore,
    tenant: &Tenant,
    id: SessionId,
    now: Timestamp,
) -> Result<ArchiveAttempt, ApiError> {
    use logbook_store::Append;
    let head = head_of(store, tenant, id)?;
    let (_, session) = load(store, tenant, id)?;
    if session.archived_at.is_some() {
        return Ok(ArchiveAttempt::Done(Box::new(with_log_state(store, session)?)));
    }
    let status = last_status(store, id)?;
    if let Some(busy @ (Status::Running | Status::Rescheduling)) = status.as_ref().and_then(status_of) {
        return Err(ApiError::conflict(format!("session {id} is {}; interrupt it before archiving", busy.wire())));
    }
    // Input acknowledged before the runner recorded the turn it starts:
    // archiving now would end the session with that input never answered.
    // The runner records the turn in a moment (and then the session is
    // running, to be interrupted first); it runs self-hosted sessions' turns
    // too (only their tool calls go to a worker). Without a runner nothing is
    // about to start, so the archive goes ahead.
    if status.as_ref().and_then(status_of) != Some(Status::Terminated)
        && state.runner().is_some()
        && runner_has_work(store, &session, head)?
    {
        return Err(ApiError::conflict_transient(format!(
            "session {id} has input its agent has not started on yet; retry in a moment \
             (a running session must be interrupted before it is archived)"
        )));
    }
    if status.as_ref().and_then(status_of) != Some(Status::Terminated) {
        let entry = logbook_core::Entry {
            id: state.event_id(head),
            event: Event::SessionStatusTerminated(SessionStatusTerminated {}),
            at: now,
        };
        match store.append(id, head, &[entry]) {
            Ok(records) => {
                state.metrics().events_appended.fetch_add(records.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            Err(logbook_store::AppendError::Conflict { actual, .. }) => return Ok(ArchiveAttempt::Behind(actual)),
            Err(other) => return Err(other.into()),
        }
    }
    // The log says terminated; mark the object (again if it changed meanwhile).
    let mut known = None;
    for _ in 0..events::MAX_APPEND_ATTEMPTS {
        let (current_bytes, mut session) = load_or(store, tenant, id, known.take())?;
        if session.archived_at.is_some() {
            return Ok(ArchiveAttempt::Done(Box::new(with_log_state(store, session)?)));
        }
        session.archived_at = Some(now);
        session.updated_at = now;
        session.status = Status::Terminated;
        session.terminated_at.get_or_insert(now);
        match try_swap(store, tenant, id, &current_bytes, Some(&session))? {
            None => return Ok(ArchiveAttempt::Done(Box::new(with_log_state(store, session)?))),
            Some(current) => known = Some(current),
        }
    }
    Err(ApiError::conflict_transient(format!("session {id} changed concurrently; retry")))
}

/// Whether the session's runner, deciding at `head`, would act rather than
/// wait: a turn to start (input it has not started on, a paused budget
/// raised), a request or call to close. Input held behind calls a worker
/// runs, or a title change, gives it nothing to do.
fn runner_has_work(store: &SledStore, session: &StoredSession, head: logbook_core::Seq) -> Result<bool, ApiError> {
    use logbook_replay::{Command, Policy, ToolHost};
    let Some(last) = head.get().checked_sub(1) else { return Ok(false) };
    let machine = crate::projection::state_at(store, session.id, logbook_core::Seq::new(last))?.machine;
    let tool_host = if session.self_hosted { ToolHost::Worker } else { ToolHost::Server };
    let command = machine.next(&Policy { tool_host, ..Policy::default() });
    Ok(!matches!(command, Command::Wait | Command::AwaitClient(_)))
}

/// Deletes the session: it answers 404 from now on and `session.deleted` ends
/// its streams. The records stay in the log (it is append-only); purging them
/// is redaction's job.
///
/// `session.deleted` is recorded first, then the session's scoped files and
/// work item go, and its object last: a delete cut short anywhere before
/// that (a failed write, a crash) leaves the session found (as terminated),
/// and a retried DELETE, finding the event recorded, does the rest without
/// recording it again. (The other order left a session whose object was
/// gone, answering 404 to the retry, with its streams open, its scoped files
/// kept and its work item never stopped.)
pub async fn delete(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(session_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_session_id(&session_id)?;
    let worker_state = state.clone();
    state
        .blocking(move |store| {
            // Found, and not at work when the end is recorded: appended at
            // the head the status was read at, so that a turn starting in
            // between makes it conflict and the check run again. A retry of
            // a delete cut short finds the end recorded and goes on.
            let (current_bytes, session) = load(store, &tenant, id)?;
            let mut recorded = false;
            for _ in 0..events::MAX_APPEND_ATTEMPTS {
                let head = head_of(store, &tenant, id)?;
                let status = last_status(store, id)?;
                if let Some(Event::SessionDeleted(_)) = status {
                    recorded = true;
                    break;
                }
                if let Some(busy @ (Status::Running | Status::Rescheduling)) = status.as_ref().and_then(status_of) {
                    return Err(ApiError::conflict(format!(
                        "session {id} is {}; interrupt it before deleting",
                        busy.wire()
                    )));
                }
                let entry = logbook_core::Entry {
                    id: worker_state.event_id(head),
                    event: Event::SessionDeleted(SessionDeleted {}),
                    at: worker_state.now(),
                };
                match logbook_store::Append::append(store, id, head, &[entry]) {
                    Ok(records) => {
                        let appended = &worker_state.metrics().events_appended;
                        appended.fetch_add(records.len() as u64, std::sync::atomic::Ordering::Relaxed);
                        recorded = true;
                        break;
                    }
                    Err(logbook_store::AppendError::Conflict { .. }) => {}
                    Err(other) => return Err(other.into()),
                }
            }
            if !recorded {
                return Err(ApiError::conflict_transient(format!("session {id} changed concurrently; retry")));
            }
            // What goes with the session goes before its object (both are
            // idempotent): a failure here leaves it found, for a retry.
            super::files::delete_scoped(store, &tenant, id)?;
            // No worker is to be given the session any more.
            super::work::stop_session_work(&worker_state, store, &tenant, &session)?;
            // A lost swap is most often the runner recording status or usage
            // on the object: read it again and retry.
            let mut known = Some(current_bytes);
            for _ in 0..events::MAX_APPEND_ATTEMPTS {
                let (current_bytes, _) = load_or(store, &tenant, id, known.take())?;
                match try_swap(store, &tenant, id, &current_bytes, None)? {
                    None => return Ok(()),
                    Some(current) => known = Some(current),
                }
            }
            Err(ApiError::conflict_transient(format!("session {id} changed concurrently; retry")))
        })
        .await?;
    if let Some(runner) = state.runner() {
        runner.end_session(id).await;
    }
    if let Some(host) = state.resources_host() {
        host.vault().forget_session(id);
        // Nothing of the session runs any more: its directories (workspace,
        // mounted files, outputs) go with it. The log keeps what they held
        // as blobs.
        let root = host.paths(id).root().to_owned();
        let removed = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&root) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
            Ok(()) | Err(_) => Ok(()),
        })
        .await;
        if let Ok(Err(err)) = removed {
            tracing::warn!(session = %id, error = %err, "the deleted session's directories could not be removed");
        }
    }
    Ok(Json(json!({"id": id, "type": "session_deleted"})))
}

/// The session with its status and usage as its log says now. The object's
/// own `status` and `usage` are a cache the runner updates after appending;
/// the log is the truth, so reads and checks overlay what it says.
pub fn with_log_state(store: &SledStore, mut session: StoredSession) -> Result<StoredSession, ApiError> {
    use logbook_core::event::{Event, EventType};
    use logbook_store::Read;
    if let Some(status) = last_status(store, session.id)?.as_ref().and_then(status_of) {
        session.status = status;
    }
    session.resources = super::resources::attached(store, session.id)?.iter().map(super::resources::to_wire).collect();
    session.outcome_evaluations = outcome_evaluations(store, session.id)?;
    if let Some(record) = store.last_of_types(session.id, &[EventType::SessionUsage])? {
        let entry = record.entry().map_err(ApiError::internal)?;
        if let Event::SessionUsage(usage) = entry.event {
            let snapshot = usage.usage;
            session.usage = UsageView {
                input_tokens: snapshot.input_tokens.unwrap_or(0),
                output_tokens: snapshot.output_tokens.unwrap_or(0),
                cache_read_input_tokens: snapshot.cache_read_input_tokens.unwrap_or(0),
                cache_creation_input_tokens: snapshot
                    .cache_creation
                    .and_then(|c| c.ephemeral_5m_input_tokens)
                    .unwrap_or(0),
                active_seconds: snapshot.active_seconds.map_or(0.0, |ms| ms.0 as f64 / 1000.0),
                list_cost_cents: snapshot.list_cost.and_then(|cost| cost.amount.parse().ok()),
                web_search_requests: snapshot.server_tool_use.as_ref().and_then(|s| s.web_search_requests).unwrap_or(0),
                web_fetch_requests: snapshot.server_tool_use.as_ref().and_then(|s| s.web_fetch_requests).unwrap_or(0),
            };
        }
    }
    Ok(session)
}

/// Outcome events read per session for `outcome_evaluations` (outcomes and
/// their evaluation spans; a session defines a few, each evaluated at most
/// 20 times): what lies beyond is not shown.
const MAX_OUTCOME_EVENTS: usize = 4096;

/// The session's `outcome_evaluations`: one per `user.define_outcome`, in
/// order, `pending` until an evaluation span names it, then `evaluating`,
/// then the verdict of its last `span.outcome_evaluation_end` (API digest
/// §3.3), which the runner records when it grades (`runner::outcome`). The
/// heartbeats between (`span.outcome_evaluation_ongoing`) say nothing the
/// start did not, and are not read: a long grading's many would count
/// against [`MAX_OUTCOME_EVENTS`].
fn outcome_evaluations(store: &SledStore, id: SessionId) -> Result<Vec<Value>, ApiError> {
    use logbook_core::event::EventType;
    use logbook_store::Read;
    let types =
        [EventType::UserDefineOutcome, EventType::SpanOutcomeEvaluationStart, EventType::SpanOutcomeEvaluationEnd];
    // A scan may stop short of what it was asked (the store's byte budget):
    // go on until it returns nothing or the limit is read.
    let mut records = Vec::new();
    let mut from = logbook_core::Seq::ZERO;
    while records.len() < MAX_OUTCOME_EVENTS {
        let step = store.scan_types(id, &types, from, MAX_OUTCOME_EVENTS - records.len())?;
        let Some(last) = step.last() else { break };
        from = logbook_core::Seq::new(last.seq().get() + 1);
        records.extend(step);
    }
    let mut evaluations: Vec<(logbook_core::OutcomeId, Map<String, Value>)> = Vec::new();
    for record in records {
        let entry = record.entry().map_err(ApiError::internal)?;
        let (outcome_id, update) = if let Event::UserDefineOutcome(defined) = &entry.event {
            let mut evaluation = Map::new();
            evaluation.insert("type".to_owned(), json!("outcome_evaluation"));
            evaluation.insert("outcome_id".to_owned(), json!(defined.outcome_id));
            evaluation.insert("description".to_owned(), json!(defined.description));
            evaluation.insert("iteration".to_owned(), json!(0));
            evaluation.insert("result".to_owned(), json!("pending"));
            evaluations.push((defined.outcome_id, evaluation));
            continue;
        } else if let Event::SpanOutcomeEvaluationStart(span) = &entry.event {
            (span.outcome_id, json!({"iteration": span.iteration, "result": "evaluating"}))
        } else if let Event::SpanOutcomeEvaluationEnd(span) = &entry.event {
            let update = json!({"iteration": span.iteration, "result": span.result,
                "explanation": span.explanation, "completed_at": entry.at});
            (span.outcome_id, update)
        } else {
            continue;
        };
        if let Some((_, evaluation)) = evaluations.iter_mut().find(|(id, _)| *id == outcome_id)
            && let Value::Object(update) = update
        {
            // A new iteration's span leaves the last verdict behind.
            evaluation.remove("explanation");
            evaluation.remove("completed_at");
            evaluation.extend(update);
        }
    }
    Ok(evaluations.into_iter().map(|(_, evaluation)| Value::Object(evaluation)).collect())
}

/// The session's last status event, if it has one (the log is the truth for
/// status; the object's `status` is a cache of it).
pub fn last_status(store: &SledStore, id: SessionId) -> Result<Option<Event>, ApiError> {
    use logbook_core::event::EventType;
    use logbook_store::Read;
    let statuses = [
        EventType::SessionStatusRunning,
        EventType::SessionStatusIdle,
        EventType::SessionStatusRescheduled,
        EventType::SessionStatusTerminated,
        EventType::SessionDeleted,
    ];
    match store.last_of_types(id, &statuses)? {
        Some(record) => Ok(Some(record.entry().map_err(ApiError::internal)?.event)),
        None => Ok(None),
    }
}

/// `session.updated` records read per step when looking for a budget change.
const UPDATES_STEP: usize = 64;

/// Whether the session's budget changed (a `session.updated` with `budget`)
/// after its last status: a session paused at its budget is then no longer
/// paused but resuming, as its runner decides from the same log.
pub fn budget_changed_since_last_status(store: &SledStore, id: SessionId) -> Result<bool, ApiError> {
    use logbook_core::event::EventType;
    use logbook_store::Read;
    let statuses = [
        EventType::SessionStatusRunning,
        EventType::SessionStatusIdle,
        EventType::SessionStatusRescheduled,
        EventType::SessionStatusTerminated,
        EventType::SessionDeleted,
    ];
    let mut from = match store.last_of_types(id, &statuses)? {
        Some(record) => logbook_core::Seq::new(record.seq().get() + 1),
        None => logbook_core::Seq::ZERO,
    };
    loop {
        let records = store.scan_types(id, &[EventType::SessionUpdated], from, UPDATES_STEP)?;
        let Some(last) = records.last() else { return Ok(false) };
        for record in &records {
            if let Event::SessionUpdated(update) = record.entry().map_err(ApiError::internal)?.event
                && update.budget.is_some()
            {
                return Ok(true);
            }
        }
        from = logbook_core::Seq::new(last.seq().get() + 1);
    }
}

/// The status a status event sets.
pub fn status_of(event: &Event) -> Option<Status> {
    if let Event::SessionStatusRunning(_) = event {
        Some(Status::Running)
    } else if let Event::SessionStatusIdle(_) = event {
        Some(Status::Idle)
    } else if let Event::SessionStatusRescheduled(_) = event {
        Some(Status::Rescheduling)
    } else if let Event::SessionStatusTerminated(_) | Event::SessionDeleted(_) = event {
        // A delete cut short before the object went: over, as the state
        // machine has it (sends are refused; a retried DELETE ends it).
        Some(Status::Terminated)
    } else {
        None
    }
}

/// Records a status the runner appended (the object's status is an index of
/// the log's status events).
pub fn set_status(
    store: &SledStore,
    tenant: &Tenant,
    id: SessionId,
    status: Status,
    now: Timestamp,
) -> Result<(), ApiError> {
    let mut known = None;
    for _ in 0..events::MAX_APPEND_ATTEMPTS {
        let (bytes, mut session) = load_or(store, tenant, id, known.take())?;
        if session.status == status || session.status == Status::Terminated {
            return Ok(());
        }
        session.status = status;
        session.updated_at = now;
        match try_swap(store, tenant, id, &bytes, Some(&session))? {
            None => return Ok(()),
            Some(current) => known = Some(current),
        }
    }
    Err(ApiError::conflict(format!("session {id} keeps changing; status not recorded")))
}

/// Records the usage the runner computed at an idle.
pub fn set_usage(store: &SledStore, tenant: &Tenant, id: SessionId, usage: UsageView) -> Result<(), ApiError> {
    let mut known = None;
    for _ in 0..events::MAX_APPEND_ATTEMPTS {
        let (bytes, mut session) = load_or(store, tenant, id, known.take())?;
        if session.usage == usage {
            return Ok(());
        }
        session.usage = usage;
        match try_swap(store, tenant, id, &bytes, Some(&session))? {
            None => return Ok(()),
            Some(current) => known = Some(current),
        }
    }
    Err(ApiError::conflict(format!("session {id} keeps changing; usage not recorded")))
}

/// Visits every stored session under `prefix` (a workspace's, or all of them
/// for `b""`) with its key, until `visit` breaks (see [`super::scan_all`]).
pub fn scan_sessions(
    store: &SledStore,
    prefix: &[u8],
    mut visit: impl FnMut(&[u8], StoredSession) -> std::ops::ControlFlow<()>,
) -> Result<(), ApiError> {
    super::scan_all(store, ResourceKind::Session, prefix, |key, bytes| Ok(visit(key, from_bytes(bytes)?)))
}

/// Whether any session of `tenant` (archived ones too) runs in environment `env`.
pub fn any_in_environment(store: &SledStore, tenant: &Tenant, env: EnvironmentId) -> Result<bool, ApiError> {
    let mut found = false;
    scan_sessions(store, &tenant.prefix(), |_, session| {
        found = session.environment_id == env;
        if found { std::ops::ControlFlow::Break(()) } else { std::ops::ControlFlow::Continue(()) }
    })?;
    Ok(found)
}

/// Every session, in every workspace, that has work to continue after a
/// restart: its object or its log says running or rescheduling, or its log
/// holds input that starts work after its last status (acknowledged, but
/// the stop came before the runner recorded the turn). Waking a session
/// with nothing to do is harmless: its runner finds nothing and waits.
pub fn unfinished(store: &SledStore) -> Result<Vec<(logbook_core::WorkspaceId, SessionId)>, ApiError> {
    let mut out = Vec::new();
    let mut to_check = Vec::new();
    scan_sessions(store, b"", |key, session| {
        let workspace: [u8; 16] = key.get(..16).and_then(|k| k.try_into().ok()).unwrap_or([0; 16]);
        let workspace = logbook_core::WorkspaceId::from_bytes(workspace);
        let found = (workspace, session.id, session.environment_id);
        match session.status {
            Status::Running | Status::Rescheduling => out.push(found),
            Status::Idle if session.archived_at.is_none() => to_check.push((found, session.self_hosted)),
            Status::Idle | Status::Terminated => {}
        }
        std::ops::ControlFlow::Continue(())
    })?;
    for (found, self_hosted) in to_check {
        if log_has_work(store, found.1, self_hosted)? {
            out.push(found);
        }
    }
    // A session imported without its environment waits for one: nothing
    // continues it (no sandbox, no networking policy to run under).
    let mut resumable = Vec::with_capacity(out.len());
    for (workspace, id, environment) in out {
        let env_key = Tenant { workspace }.key(environment.to_bytes());
        if store.get_resource(ResourceKind::Environment, &env_key)?.is_some() {
            resumable.push((workspace, id));
        } else {
            tracing::warn!(session = %id, "not resumed: this store lacks its environment (imported without --environment)");
        }
    }
    Ok(resumable)
}

/// Whether a session's log says it is running or rescheduling, or holds
/// input that starts work after its last status, or (`self_hosted`) it is
/// idle waiting on the client: its calls may wait on a worker whose work
/// item a stop before the restart left unreplaced, which its runner queues.
fn log_has_work(store: &SledStore, id: SessionId, self_hosted: bool) -> Result<bool, ApiError> {
    use logbook_core::event::EventType;
    use logbook_store::Read;
    let statuses = [
        EventType::SessionStatusRunning,
        EventType::SessionStatusIdle,
        EventType::SessionStatusRescheduled,
        EventType::SessionStatusTerminated,
        EventType::SessionDeleted,
    ];
    let from = match store.last_of_types(id, &statuses)? {
        None => logbook_core::Seq::ZERO,
        Some(record) => {
            let event = record.entry().map_err(ApiError::internal)?.event;
            let status = event.event_type();
            if matches!(status, EventType::SessionStatusRunning | EventType::SessionStatusRescheduled) {
                return Ok(true);
            }
            if self_hosted
                && let Event::SessionStatusIdle(idle) = &event
                && matches!(idle.stop_reason, logbook_core::event::StopReason::RequiresAction { .. })
            {
                return Ok(true);
            }
            if matches!(status, EventType::SessionStatusTerminated | EventType::SessionDeleted) {
                return Ok(false);
            }
            logbook_core::Seq::new(record.seq().get() + 1)
        }
    };
    // What `events::starts_work` names, a worker's tool result, and an update
    // (a budget raised for a session paused at it resumes the paused work).
    let inputs = [
        EventType::UserMessage,
        EventType::UserToolConfirmation,
        EventType::UserCustomToolResult,
        EventType::UserDefineOutcome,
        EventType::SystemMessage,
        EventType::UserToolResult,
        EventType::SessionUpdated,
    ];
    Ok(!store.scan_types(id, &inputs, from, 1)?.is_empty())
}

/// The session's durable next seq, read before the session itself (callers
/// rely on that order). A log the store refuses (quarantined) is the
/// caller's to hear of only if the session is theirs: logs are keyed by
/// session id alone, so on such a refusal the session is looked up in the
/// caller's workspace, and another workspace's damaged session answers 404
/// like any.
pub fn head_of(store: &SledStore, tenant: &Tenant, id: SessionId) -> Result<logbook_core::Seq, ApiError> {
    use logbook_store::Read;
    match store.head(id) {
        Ok(head) => Ok(head.next),
        Err(err) => {
            load(store, tenant, id)?;
            Err(err.into())
        }
    }
}

pub fn not_found(raw: &str) -> ApiError {
    ApiError::not_found(format!("session {raw} not found")).with_code("session_not_found")
}

pub fn parse_session_id(raw: &str) -> Result<SessionId, ApiError> {
    parse_id::<SessionId>(raw, "session").map_err(|_| not_found(raw))
}

pub fn load(store: &SledStore, tenant: &Tenant, id: SessionId) -> Result<(Vec<u8>, StoredSession), ApiError> {
    let bytes = store
        .get_resource(ResourceKind::Session, &tenant.key(id.to_bytes()))?
        .ok_or_else(|| not_found(&id.to_string()))?;
    let session = from_bytes(&bytes)?;
    Ok((bytes, session))
}

/// The session as `known` holds it (what a lost swap returned), else as
/// stored: a retry starts from the value its swap lost to.
pub fn load_or(
    store: &SledStore,
    tenant: &Tenant,
    id: SessionId,
    known: Option<Vec<u8>>,
) -> Result<(Vec<u8>, StoredSession), ApiError> {
    match known {
        Some(bytes) => {
            let session = from_bytes(&bytes)?;
            Ok((bytes, session))
        }
        None => load(store, tenant, id),
    }
}

/// Replaces the stored session `old` with `new` (`None`: deletes it).
/// `Ok(None)` when done; `Ok(Some(current))` when another write came first,
/// with the value it left. That value counts writes still on their way to
/// disk, which reads do not see yet: a retry must start from it, not from a
/// fresh read, or it loses again for as long as that write is in flight.
/// 404 once the session is gone.
pub fn try_swap(
    store: &SledStore,
    tenant: &Tenant,
    id: SessionId,
    old: &[u8],
    new: Option<&StoredSession>,
) -> Result<Option<Vec<u8>>, ApiError> {
    let new = new.map(to_bytes).transpose()?;
    match store.swap_resource(ResourceKind::Session, &tenant.key(id.to_bytes()), Some(old), new.as_deref())? {
        Ok(()) => Ok(None),
        Err(Some(current)) => Ok(Some(current)),
        Err(None) => Err(not_found(&id.to_string())),
    }
}

/// Most sessions [`DecodedSessions`] keeps, and most (decoded) bytes of them
/// together; past either it starts over.
const DECODED_SESSIONS: usize = 4096;
const DECODED_SESSION_BYTES: usize = 32 << 20;

/// Sessions as last decoded, each with the stored bytes it was decoded from.
/// Sending an event reads the session's stored bytes (one index lookup) and
/// decodes them only if they changed since: the agent snapshot they hold
/// (system prompt, tools) can be far larger than the event. The bytes
/// compared are the store's own (framed, perhaps compressed,
/// [`StoredResource`]), so an unchanged session is neither decompressed nor
/// parsed. Nothing is invalidated: a session whose bytes differ is decoded
/// again, so this can never answer with a stale session. Tenancy is checked
/// by the read itself (the key includes the workspace).
#[derive(Debug, Default)]
pub struct DecodedSessions {
    entries: std::sync::Mutex<DecodedEntries>,
}

#[derive(Debug, Default)]
struct DecodedEntries {
    /// Each session with the stored bytes it was decoded from and the length
    /// of its decoded bytes (what [`DECODED_SESSION_BYTES`] bounds: the
    /// decoded session is about as large).
    by_id: std::collections::HashMap<SessionId, (StoredResource, std::sync::Arc<StoredSession>, usize)>,
    bytes: usize,
}

impl DecodedSessions {
    /// The session `id` of `tenant`, as stored now.
    pub fn load(
        &self,
        store: &SledStore,
        tenant: &Tenant,
        id: SessionId,
    ) -> Result<std::sync::Arc<StoredSession>, ApiError> {
        let stored = store
            .get_resource_stored(ResourceKind::Session, &tenant.key(id.to_bytes()))?
            .ok_or_else(|| not_found(&id.to_string()))?;
        // A poisoned lock only means a panic elsewhere mid-insert: the map is
        // still a map of whole entries, each checked against the bytes.
        let entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((known, session, _)) = entries.by_id.get(&id)
            && *known == stored
        {
            return Ok(std::sync::Arc::clone(session));
        }
        drop(entries);
        let bytes = stored.decode()?;
        let session = std::sync::Arc::new(from_bytes::<StoredSession>(&bytes)?);
        let len = bytes.len();
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Sessions too large to keep are not kept, and do not empty the map.
        if len <= DECODED_SESSION_BYTES / 16 {
            if entries.by_id.len() >= DECODED_SESSIONS || entries.bytes + len > DECODED_SESSION_BYTES {
                *entries = DecodedEntries::default();
            }
            entries.bytes += len;
            if let Some((_, _, old_len)) = entries.by_id.insert(id, (stored, std::sync::Arc::clone(&session), len)) {
                entries.bytes -= old_len;
            }
        }
        Ok(session)
    }
}
