//! `/v1/environments`: create, retrieve, update, list, archive, delete.
//!
//! An environment is a sandbox template: `cloud` (networking and packages) or
//! `self_hosted` (tools run on the user's workers). Its config type cannot
//! change after creation, and an archived environment accepts no updates and
//! starts no sessions.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use logbook_core::{EnvironmentId, Timestamp};
use logbook_store::{Direction, ResourceKind, Resources, SledStore};

use super::error::ApiError;
use super::tools::check_len;
use super::wire::{JsonBody, Query, check_metadata, decode_owned_cursor, double_option, encode_cursor, patch_metadata};
use super::{Page, from_bytes, parse_id, put_new, scan_page, to_bytes};
use crate::state::AppState;
use crate::tenancy::Tenant;

pub const MAX_ALLOWED_HOSTS: usize = 256;
pub const MAX_PACKAGES_PER_MANAGER: usize = 256;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub id: EnvironmentId,
    #[serde(rename = "type")]
    pub object: String,
    pub name: String,
    pub description: Option<String>,
    pub metadata: Map<String, Value>,
    pub config: EnvConfig,
    pub scope: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub archived_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EnvConfig {
    Cloud { networking: Networking, packages: Packages },
    SelfHosted {},
}

impl EnvConfig {
    fn type_name(&self) -> &'static str {
        match self {
            EnvConfig::Cloud { .. } => "cloud",
            EnvConfig::SelfHosted {} => "self_hosted",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Networking {
    Unrestricted {},
    Limited { allowed_hosts: Vec<String>, allow_mcp_servers: bool, allow_package_managers: bool },
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Packages {
    #[serde(rename = "type")]
    pub kind: PackagesTag,
    pub apt: Vec<String>,
    pub cargo: Vec<String>,
    pub gem: Vec<String>,
    pub go: Vec<String>,
    pub npm: Vec<String>,
    pub pip: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum PackagesTag {
    #[default]
    #[serde(rename = "packages")]
    Packages,
}

impl Packages {
    fn is_empty(&self) -> bool {
        [&self.apt, &self.cargo, &self.gem, &self.go, &self.npm, &self.pip].iter().all(|list| list.is_empty())
    }
}

#[derive(Debug, Deserialize)]
pub struct EnvironmentCreate {
    name: String,
    config: Option<Value>,
    description: Option<String>,
    metadata: Option<Map<String, Value>>,
    scope: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct EnvironmentUpdate {
    #[serde(default, deserialize_with = "double_option")]
    name: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    config: Option<Option<Value>>,
    #[serde(default, deserialize_with = "double_option")]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    metadata: Option<Option<Map<String, Value>>>,
    #[serde(default, deserialize_with = "double_option")]
    scope: Option<Option<String>>,
}

pub async fn create(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    JsonBody(body): JsonBody<EnvironmentCreate>,
) -> Result<Json<Environment>, ApiError> {
    check_env_name(&body.name)?;
    crate::api::tools::check_description(body.description.as_deref())?;
    let metadata = body.metadata.unwrap_or_default();
    check_metadata(&metadata)?;
    let config = resolve_config(body.config.as_ref(), None)?;
    let now = state.now();
    let env = Environment {
        id: state.new_id(now, EnvironmentId::from_parts),
        object: "environment".to_owned(),
        name: body.name,
        description: body.description,
        metadata,
        config,
        scope: resolve_scope(body.scope)?,
        created_at: now,
        updated_at: now,
        archived_at: None,
    };
    let stored = env.clone();
    state
        .blocking(move |store| {
            put_new(store, ResourceKind::Environment, &tenant.key(stored.id.to_bytes()), &to_bytes(&stored)?)
        })
        .await?;
    Ok(Json(env))
}

pub async fn retrieve(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(env_id): Path<String>,
) -> Result<Json<Environment>, ApiError> {
    let id = parse_env_id(&env_id)?;
    let env = state.blocking(move |store| load(store, &tenant, id).map(|(_, env)| env)).await?;
    Ok(Json(env))
}

pub async fn update(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(env_id): Path<String>,
    JsonBody(body): JsonBody<EnvironmentUpdate>,
) -> Result<Json<Environment>, ApiError> {
    let id = parse_env_id(&env_id)?;
    let now = state.now();
    let env = state
        .blocking(move |store| {
            let (current_bytes, current) = load(store, &tenant, id)?;
            if current.archived_at.is_some() {
                return Err(
                    ApiError::invalid(format!("environment {id} is archived")).with_code("environment_archived")
                );
            }
            let mut next = current.clone();
            match body.name {
                None => {}
                Some(None) => return Err(ApiError::invalid("name: cannot be cleared")),
                Some(Some(name)) => {
                    check_env_name(&name)?;
                    next.name = name;
                }
            }
            if let Some(description) = body.description {
                crate::api::tools::check_description(description.as_deref())?;
                next.description = description;
            }
            if let Some(patch) = body.metadata {
                next.metadata = patch_metadata(&current.metadata, &patch.unwrap_or_default(), true)?;
            }
            if let Some(Some(config)) = body.config {
                next.config = resolve_config(Some(&config), Some(&current.config))?;
                if next.config.type_name() != current.config.type_name() {
                    return Err(ApiError::invalid(format!(
                        "config.type: cannot change from {} to {}",
                        current.config.type_name(),
                        next.config.type_name()
                    ))
                    .with_code("invalid_config_type_change"));
                }
            }
            if let Some(scope) = body.scope {
                next.scope = resolve_scope(scope)?;
            }
            if next == current {
                return Ok(current);
            }
            next.updated_at = now;
            swap(store, &tenant, id, &current_bytes, &next)?;
            Ok(next)
        })
        .await?;
    Ok(Json(env))
}

pub async fn list(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    query: Query,
) -> Result<Json<Page<Environment>>, ApiError> {
    let limit = query.limit(20, 100)?;
    let include_archived = query.flag("include_archived")?;
    let after = query.one("page").map(|page| decode_owned_cursor("envs", page, &tenant.prefix())).transpose()?;
    let page = state
        .blocking(move |store| {
            let scanned = scan_page(
                store,
                ResourceKind::Environment,
                &tenant.prefix(),
                after,
                Direction::Backward,
                limit,
                |bytes| {
                    let env: Environment = from_bytes(bytes)?;
                    Ok((include_archived || env.archived_at.is_none()).then_some(env))
                },
            )?;
            Ok(Page {
                data: scanned.items.into_iter().map(|(_, env)| env).collect(),
                next_page: scanned.next.map(|key| encode_cursor("envs", &key)),
                prev_page: None,
            })
        })
        .await?;
    Ok(Json(page))
}

pub async fn archive(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(env_id): Path<String>,
) -> Result<Json<Environment>, ApiError> {
    let id = parse_env_id(&env_id)?;
    let now = state.now();
    let env = state
        .blocking(move |store| {
            let (current_bytes, mut env) = load(store, &tenant, id)?;
            if env.archived_at.is_none() {
                env.archived_at = Some(now);
                env.updated_at = now;
                swap(store, &tenant, id, &current_bytes, &env)?;
            }
            Ok(env)
        })
        .await?;
    Ok(Json(env))
}

pub async fn delete(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(env_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_env_id(&env_id)?;
    let worker_state = state.clone();
    state
        .blocking(move |store| {
            let _unused = worker_state.environment_unused(id);
            let (current_bytes, _) = load(store, &tenant, id)?;
            // Behaviour digest §6.4: an environment is deleted only when no
            // session references it (archive it instead).
            if super::sessions::any_in_environment(store, &tenant, id)? {
                return Err(ApiError::conflict(format!(
                    "environment {id} is used by sessions; delete them first, or archive the environment"
                ))
                .with_code("environment_in_use"));
            }
            match store.swap_resource(
                ResourceKind::Environment,
                &tenant.key(id.to_bytes()),
                Some(&current_bytes),
                None,
            )? {
                Ok(()) => Ok(()),
                Err(_) => Err(ApiError::conflict_transient(format!("environment {id} changed concurrently; retry"))),
            }
        })
        .await?;
    Ok(Json(json!({"id": id, "type": "environment_deleted"})))
}

pub fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("environment {id} not found")).with_code("environment_not_found")
}

fn parse_env_id(raw: &str) -> Result<EnvironmentId, ApiError> {
    parse_id::<EnvironmentId>(raw, "environment").map_err(|_| not_found(raw))
}

/// An environment with its stored bytes.
pub fn load(store: &SledStore, tenant: &Tenant, id: EnvironmentId) -> Result<(Vec<u8>, Environment), ApiError> {
    let bytes = store
        .get_resource(ResourceKind::Environment, &tenant.key(id.to_bytes()))?
        .ok_or_else(|| not_found(&id.to_string()))?;
    let env = from_bytes(&bytes)?;
    Ok((bytes, env))
}

fn swap(store: &SledStore, tenant: &Tenant, id: EnvironmentId, old: &[u8], new: &Environment) -> Result<(), ApiError> {
    match store.swap_resource(
        ResourceKind::Environment,
        &tenant.key(id.to_bytes()),
        Some(old),
        Some(&to_bytes(new)?),
    )? {
        Ok(()) => Ok(()),
        Err(_) => Err(ApiError::conflict_transient(format!("environment {id} changed concurrently; retry"))),
    }
}

fn check_env_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() {
        return Err(ApiError::invalid("name: must not be empty"));
    }
    check_len(name, 1, 256, "name")
}

fn resolve_scope(scope: Option<String>) -> Result<String, ApiError> {
    match scope.as_deref() {
        None | Some("organization") => Ok("organization".to_owned()),
        Some("account") => Ok("account".to_owned()),
        Some(other) => Err(ApiError::invalid(format!("scope: must be organization or account, got {other:?}"))),
    }
}

/// Resolves a requested config; on update, omitted fields keep `previous`.
fn resolve_config(value: Option<&Value>, previous: Option<&EnvConfig>) -> Result<EnvConfig, ApiError> {
    let default_cloud = || EnvConfig::Cloud { networking: Networking::Unrestricted {}, packages: Packages::default() };
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(previous.cloned().unwrap_or_else(default_cloud));
    };
    let object = value.as_object().ok_or_else(|| ApiError::invalid("config: must be an object"))?;
    match object.get("type").and_then(Value::as_str) {
        Some("self_hosted") => Ok(EnvConfig::SelfHosted {}),
        Some("cloud") => {
            let (prev_net, prev_pkgs) = match previous {
                Some(EnvConfig::Cloud { networking, packages }) => (Some(networking), Some(packages)),
                Some(EnvConfig::SelfHosted {}) | None => (None, None),
            };
            let networking = match object.get("networking").filter(|v| !v.is_null()) {
                None => prev_net.cloned().unwrap_or(Networking::Unrestricted {}),
                Some(net) => resolve_networking(net, prev_net)?,
            };
            let packages = match object.get("packages").filter(|v| !v.is_null()) {
                None => prev_pkgs.cloned().unwrap_or_default(),
                Some(pkgs) => resolve_packages(pkgs)?,
            };
            if let Networking::Limited { allow_package_managers: false, .. } = &networking
                && !packages.is_empty()
            {
                return Err(ApiError::invalid(
                    "config.networking.allow_package_managers: must be true when packages are given",
                ));
            }
            Ok(EnvConfig::Cloud { networking, packages })
        }
        other => Err(ApiError::invalid(format!("config.type: must be cloud or self_hosted, got {other:?}"))),
    }
}

fn resolve_networking(value: &Value, previous: Option<&Networking>) -> Result<Networking, ApiError> {
    let object = value.as_object().ok_or_else(|| ApiError::invalid("config.networking: must be an object"))?;
    match object.get("type").and_then(Value::as_str) {
        Some("unrestricted") => Ok(Networking::Unrestricted {}),
        Some("limited") => {
            let (prev_hosts, prev_mcp, prev_pkg) = match previous {
                Some(Networking::Limited { allowed_hosts, allow_mcp_servers, allow_package_managers }) => {
                    (allowed_hosts.clone(), *allow_mcp_servers, *allow_package_managers)
                }
                Some(Networking::Unrestricted {}) | None => (Vec::new(), false, false),
            };
            let allowed_hosts = match object.get("allowed_hosts").filter(|v| !v.is_null()) {
                None => prev_hosts,
                Some(hosts) => {
                    let hosts: Vec<String> = serde_json::from_value(hosts.clone()).map_err(|_| {
                        ApiError::invalid("config.networking.allowed_hosts: must be an array of strings")
                    })?;
                    if hosts.len() > MAX_ALLOWED_HOSTS {
                        return Err(ApiError::invalid(format!(
                            "config.networking.allowed_hosts: at most {MAX_ALLOWED_HOSTS} hosts"
                        )));
                    }
                    for host in &hosts {
                        check_host_rule(host)?;
                    }
                    hosts
                }
            };
            let flag = |key: &str, prev: bool| -> Result<bool, ApiError> {
                match object.get(key) {
                    None | Some(Value::Null) => Ok(prev),
                    Some(Value::Bool(b)) => Ok(*b),
                    Some(_) => Err(ApiError::invalid(format!("config.networking.{key}: must be true or false"))),
                }
            };
            Ok(Networking::Limited {
                allowed_hosts,
                allow_mcp_servers: flag("allow_mcp_servers", prev_mcp)?,
                allow_package_managers: flag("allow_package_managers", prev_pkg)?,
            })
        }
        other => {
            Err(ApiError::invalid(format!("config.networking.type: must be unrestricted or limited, got {other:?}")))
        }
    }
}

/// A host rule: a hostname, or `*.` followed by one.
fn check_host_rule(rule: &str) -> Result<(), ApiError> {
    let host = rule.strip_prefix("*.").unwrap_or(rule);
    if super::tools::is_hostname(host) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "config.networking.allowed_hosts: {rule:?} is not a hostname or a *.hostname rule"
        )))
    }
}

fn resolve_packages(value: &Value) -> Result<Packages, ApiError> {
    let object = value.as_object().ok_or_else(|| ApiError::invalid("config.packages: must be an object"))?;
    if let Some(kind) = object.get("type").filter(|v| !v.is_null())
        && kind.as_str() != Some("packages")
    {
        return Err(ApiError::invalid("config.packages.type: must be packages"));
    }
    let list = |key: &str| -> Result<Vec<String>, ApiError> {
        match object.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(items) => {
                let items: Vec<String> = serde_json::from_value(items.clone())
                    .map_err(|_| ApiError::invalid(format!("config.packages.{key}: must be an array of strings")))?;
                if items.len() > MAX_PACKAGES_PER_MANAGER {
                    return Err(ApiError::invalid(format!(
                        "config.packages.{key}: at most {MAX_PACKAGES_PER_MANAGER} packages"
                    )));
                }
                for item in &items {
                    if item.trim().is_empty()
                        || item.len() > 256
                        || item.chars().any(|c| c.is_whitespace() || c.is_control())
                    {
                        return Err(ApiError::invalid(format!(
                            "config.packages.{key}: {item:?} is not a package specification"
                        )));
                    }
                }
                Ok(items)
            }
        }
    };
    Ok(Packages {
        kind: PackagesTag::Packages,
        apt: list("apt")?,
        cargo: list("cargo")?,
        gem: list("gem")?,
        go: list("go")?,
        npm: list("npm")?,
        pip: list("pip")?,
    })
}
