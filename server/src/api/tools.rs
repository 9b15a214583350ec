//! Agent configuration shared by agents and sessions: model config, tools,
//! MCP servers, skills, and their validation.
//!
//! Requests accept the API's short forms (a bare model id, `effort: "high"`,
//! omitted tool configs); responses always carry the resolved objects. Every
//! rule in the references is checked here and reported as a 400 naming the
//! field.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::ApiError;

/// The built-in toolset's tools.
pub const BUILTIN_TOOLS: [&str; 8] = ["bash", "read", "write", "edit", "glob", "grep", "web_fetch", "web_search"];
/// Most tools across all toolsets of an agent.
pub const MAX_TOOLS: usize = 128;
pub const MAX_MCP_SERVERS: usize = 20;
pub const MAX_MCP_NAME_CHARS: usize = 255;
pub const MAX_MCP_URL_CHARS: usize = 2048;
pub const MAX_CUSTOM_TOOL_NAME_CHARS: usize = 128;
pub const MAX_PROPERTY_NAME_CHARS: usize = 64;
pub const MAX_SYSTEM_CHARS: usize = 100_000;
pub const MAX_NAME_CHARS: usize = 256;
pub const MAX_SKILLS: usize = 64;
pub const MAX_DOMAINS: usize = 64;
/// Effort used when a request does not give one.
pub const DEFAULT_EFFORT: &str = "high";

const EFFORTS: [&str; 5] = ["low", "medium", "high", "xhigh", "max"];

/// The resolved model config, as every response carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub id: String,
    pub effort: Effort,
    pub speed: String,
    pub inference_geo: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Effort {
    #[serde(rename = "type")]
    pub level: String,
}

/// `model` in a request: a bare id or an object.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ModelIn {
    Id(String),
    Config { id: String, effort: Option<EffortIn>, speed: Option<String>, inference_geo: Option<String> },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum EffortIn {
    Level(String),
    Object {
        #[serde(rename = "type")]
        level: String,
    },
}

impl ModelIn {
    /// Resolves a requested model; `previous` keeps its effort when the id is unchanged
    /// and no effort is given.
    pub fn resolve(self, previous: Option<&ModelConfig>) -> Result<ModelConfig, ApiError> {
        let (id, effort, speed, geo) = match self {
            ModelIn::Id(id) => (id, None, None, None),
            ModelIn::Config { id, effort, speed, inference_geo } => (id, effort, speed, inference_geo),
        };
        if id.trim().is_empty() || id.len() > 256 {
            return Err(ApiError::invalid("model.id: must be a model id such as claude-sonnet-4-6"));
        }
        super::model_id::check(&id, "model.id")?;
        let effort = match effort {
            Some(EffortIn::Level(level) | EffortIn::Object { level }) => {
                if !EFFORTS.contains(&level.as_str()) {
                    return Err(ApiError::invalid(format!("model.effort: must be one of {EFFORTS:?}, got {level:?}")));
                }
                level
            }
            None => match previous {
                Some(prev) if prev.id == id => prev.effort.level.clone(),
                _ => DEFAULT_EFFORT.to_owned(),
            },
        };
        let speed = speed.unwrap_or_else(|| "standard".to_owned());
        if speed != "standard" && speed != "fast" {
            return Err(ApiError::invalid(format!("model.speed: must be standard or fast, got {speed:?}")));
        }
        if let Some(geo) = &geo
            && geo != "us"
            && geo != "global"
        {
            return Err(ApiError::invalid(format!("model.inference_geo: must be us or global, got {geo:?}")));
        }
        Ok(ModelConfig { id, effort: Effort { level: effort }, speed, inference_geo: geo })
    }
}

/// `{type: always_allow | always_ask | auto}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PermissionPolicy {
    #[serde(rename = "type")]
    pub kind: PolicyKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    AlwaysAllow,
    AlwaysAsk,
    Auto,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDefaults {
    pub enabled: bool,
    pub permission_policy: PermissionPolicy,
}

/// One built-in tool's resolved config; tool-specific extras (`allowed_domains`,
/// `user_location`, ...) are kept as given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub enabled: bool,
    pub permission_policy: PermissionPolicy,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McpToolConfig {
    pub name: String,
    pub enabled: bool,
    pub permission_policy: PermissionPolicy,
}

/// A resolved tool entry of an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Tool {
    #[serde(rename = "agent_toolset_20260401")]
    AgentToolset { default_config: ToolDefaults, configs: Vec<ToolConfig> },
    #[serde(rename = "mcp_toolset")]
    McpToolset { mcp_server_name: String, default_config: ToolDefaults, configs: Vec<McpToolConfig> },
    #[serde(rename = "custom")]
    Custom { name: String, description: String, input_schema: Value },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McpServer {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skill {
    #[serde(rename = "type")]
    pub kind: String,
    pub skill_id: String,
    pub version: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SkillIn {
    #[serde(rename = "type")]
    pub kind: String,
    pub skill_id: String,
    pub version: Option<Value>,
}

/// Resolves and validates a request's `tools` array.
pub fn resolve_tools(raw: &[Value]) -> Result<Vec<Tool>, ApiError> {
    let mut tools: Vec<Tool> = Vec::with_capacity(raw.len());
    let mut custom_names = BTreeSet::new();
    let mut n_tools = 0usize;
    let mut has_builtin_toolset = false;
    let mut mcp_toolsets = BTreeSet::new();
    for (idx, value) in raw.iter().enumerate() {
        let field = format!("tools[{idx}]");
        let object = value.as_object().ok_or_else(|| ApiError::invalid(format!("{field}: must be an object")))?;
        let kind = object.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "agent_toolset_20260401" => {
                if has_builtin_toolset {
                    return Err(ApiError::invalid(format!("{field}: agent_toolset_20260401 is given twice")));
                }
                has_builtin_toolset = true;
                let defaults = resolve_defaults(object.get("default_config"), PolicyKind::AlwaysAllow, &field)?;
                let mut configs = Vec::new();
                let mut seen = BTreeSet::new();
                for (cfg_idx, cfg) in array_field(object, "configs", &field)?.iter().enumerate() {
                    let cfg_field = format!("{field}.configs[{cfg_idx}]");
                    let mut cfg = cfg
                        .as_object()
                        .cloned()
                        .ok_or_else(|| ApiError::invalid(format!("{cfg_field}: must be an object")))?;
                    let name = take_string(&mut cfg, "name", &cfg_field)?;
                    if !BUILTIN_TOOLS.contains(&name.as_str()) {
                        return Err(ApiError::invalid(format!(
                            "{cfg_field}.name: {name:?} is not a built-in tool ({})",
                            BUILTIN_TOOLS.join(", ")
                        )));
                    }
                    if !seen.insert(name.clone()) {
                        return Err(ApiError::invalid(format!("{cfg_field}.name: {name:?} is configured twice")));
                    }
                    if let Some(kind) = cfg.remove("type")
                        && kind.as_str() != Some(name.as_str())
                    {
                        return Err(ApiError::invalid(format!("{cfg_field}.type: must equal the name {name:?}")));
                    }
                    let enabled = take_bool(&mut cfg, "enabled", &cfg_field)?.unwrap_or(defaults.enabled);
                    let permission_policy =
                        take_policy(&mut cfg, &cfg_field)?.unwrap_or(defaults.permission_policy.clone());
                    check_tool_extras(&name, &cfg, &cfg_field)?;
                    configs.push(ToolConfig { kind: name.clone(), name, enabled, permission_policy, extra: cfg });
                }
                n_tools += BUILTIN_TOOLS.len();
                tools.push(Tool::AgentToolset { default_config: defaults, configs });
            }
            "mcp_toolset" => {
                let server = object
                    .get("mcp_server_name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ApiError::invalid(format!("{field}.mcp_server_name: required")))?;
                check_len(server, 1, MAX_MCP_NAME_CHARS, &format!("{field}.mcp_server_name"))?;
                if !mcp_toolsets.insert(server.to_owned()) {
                    return Err(ApiError::invalid(format!("{field}: a second mcp_toolset for {server:?}")));
                }
                let defaults = resolve_defaults(object.get("default_config"), PolicyKind::AlwaysAsk, &field)?;
                let mut configs = Vec::new();
                let mut seen = BTreeSet::new();
                for (cfg_idx, cfg) in array_field(object, "configs", &field)?.iter().enumerate() {
                    let cfg_field = format!("{field}.configs[{cfg_idx}]");
                    let mut cfg = cfg
                        .as_object()
                        .cloned()
                        .ok_or_else(|| ApiError::invalid(format!("{cfg_field}: must be an object")))?;
                    let name = take_string(&mut cfg, "name", &cfg_field)?;
                    check_len(&name, 1, 128, &format!("{cfg_field}.name"))?;
                    if !seen.insert(name.clone()) {
                        return Err(ApiError::invalid(format!("{cfg_field}.name: {name:?} is configured twice")));
                    }
                    let enabled = take_bool(&mut cfg, "enabled", &cfg_field)?.unwrap_or(defaults.enabled);
                    let permission_policy =
                        take_policy(&mut cfg, &cfg_field)?.unwrap_or(defaults.permission_policy.clone());
                    configs.push(McpToolConfig { name, enabled, permission_policy });
                    n_tools += 1;
                }
                tools.push(Tool::McpToolset { mcp_server_name: server.to_owned(), default_config: defaults, configs });
            }
            "custom" => {
                let tool = resolve_custom(object, &field)?;
                if let Tool::Custom { name, .. } = &tool
                    && !custom_names.insert(name.clone())
                {
                    return Err(ApiError::invalid(format!("{field}.name: {name:?} is used by another custom tool")));
                }
                n_tools += 1;
                tools.push(tool);
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "{field}.type: must be agent_toolset_20260401, mcp_toolset or custom, got {other:?}"
                )));
            }
        }
    }
    if n_tools > MAX_TOOLS {
        return Err(ApiError::invalid(format!("tools: at most {MAX_TOOLS} tools across all toolsets, got {n_tools}")));
    }
    // url_sources.client_tool_results may only name this agent's custom tools.
    for (idx, tool) in tools.iter_mut().enumerate() {
        if let Tool::AgentToolset { configs, .. } = tool {
            for (cfg_idx, cfg) in configs.iter_mut().enumerate() {
                if let Some(sources) = cfg.extra.get_mut("url_sources") {
                    let field = format!("tools[{idx}].configs[{cfg_idx}].url_sources");
                    *sources = resolve_url_sources(sources, &custom_names, &field)?;
                }
            }
        }
    }
    Ok(tools)
}

/// Resolves `url_sources` to its object form and checks the tool references.
fn resolve_url_sources(value: &Value, custom_names: &BTreeSet<String>, field: &str) -> Result<Value, ApiError> {
    if value.is_null() {
        return Ok(Value::Null);
    }
    let object = value.as_object().ok_or_else(|| ApiError::invalid(format!("{field}: must be an object")))?;
    let mut out = Map::new();
    let mut n_none = 0;
    for key in object.keys() {
        if !["user_input", "client_tool_results", "server_tool_results"].contains(&key.as_str()) {
            return Err(ApiError::invalid(format!("{field}.{key}: not a url source")));
        }
    }
    for key in ["user_input", "client_tool_results", "server_tool_results"] {
        let Some(filter) = object.get(key).filter(|v| !v.is_null()) else { continue };
        let sub_field = format!("{field}.{key}");
        let kind = match filter {
            Value::String(kind) => kind.clone(),
            Value::Object(obj) => obj.get("type").and_then(Value::as_str).unwrap_or("").to_owned(),
            Value::Null | Value::Bool(_) | Value::Number(_) | Value::Array(_) => String::new(),
        };
        let resolved = match kind.as_str() {
            "all" | "none" => {
                if kind == "none" {
                    n_none += 1;
                }
                serde_json::json!({"type": kind})
            }
            "only" | "except" if key != "user_input" => {
                let tools = filter
                    .get("tools")
                    .and_then(Value::as_array)
                    .ok_or_else(|| ApiError::invalid(format!("{sub_field}.tools: required with {kind}")))?;
                if tools.is_empty() || tools.len() > 128 {
                    return Err(ApiError::invalid(format!("{sub_field}.tools: 1 to 128 tool references")));
                }
                let mut names = BTreeSet::new();
                for tool in tools {
                    let name =
                        match (tool.get("type").and_then(Value::as_str), tool.get("name").and_then(Value::as_str)) {
                            (Some("tool_reference"), Some(name)) => name,
                            _ => {
                                return Err(ApiError::invalid(format!(
                                    "{sub_field}.tools: each entry is {{\"type\": \"tool_reference\", \"name\": ...}}"
                                )));
                            }
                        };
                    if !names.insert(name.to_owned()) {
                        return Err(ApiError::invalid(format!("{sub_field}.tools: {name:?} is listed twice")));
                    }
                    let known = if key == "server_tool_results" {
                        name == "web_search" || name == "web_fetch"
                    } else {
                        custom_names.contains(name)
                    };
                    if !known {
                        return Err(ApiError::invalid(format!(
                            "{sub_field}.tools: {name:?} is not {}",
                            if key == "server_tool_results" {
                                "web_search or web_fetch"
                            } else {
                                "a custom tool of this agent"
                            }
                        )));
                    }
                }
                serde_json::json!({"type": kind, "tools": tools})
            }
            _ => {
                let allowed = if key == "user_input" { "all or none" } else { "all, none, only or except" };
                return Err(ApiError::invalid(format!("{sub_field}: must be {allowed}")));
            }
        };
        out.insert(key.to_owned(), resolved);
    }
    if n_none == 3 {
        return Err(ApiError::invalid(format!(
            "{field}: setting all three sources to none disables the tool; use enabled: false"
        )));
    }
    Ok(Value::Object(out))
}

/// Checks that MCP servers and MCP toolsets reference each other one to one.
pub fn check_mcp(servers: &[McpServer], tools: &[Tool]) -> Result<(), ApiError> {
    if servers.len() > MAX_MCP_SERVERS {
        return Err(ApiError::invalid(format!("mcp_servers: at most {MAX_MCP_SERVERS}, got {}", servers.len())));
    }
    let mut names = BTreeSet::new();
    for (idx, server) in servers.iter().enumerate() {
        let field = format!("mcp_servers[{idx}]");
        if server.kind != "url" {
            return Err(ApiError::invalid(format!("{field}.type: must be url")));
        }
        check_len(&server.name, 1, MAX_MCP_NAME_CHARS, &format!("{field}.name"))?;
        check_len(&server.url, 1, MAX_MCP_URL_CHARS, &format!("{field}.url"))?;
        if !(server.url.starts_with("https://") || server.url.starts_with("http://")) {
            return Err(ApiError::invalid(format!("{field}.url: must be an http(s) URL")));
        }
        if !names.insert(server.name.as_str()) {
            return Err(ApiError::invalid(format!("{field}.name: {:?} is used twice", server.name)));
        }
    }
    let mut referenced = BTreeSet::new();
    for tool in tools {
        if let Tool::McpToolset { mcp_server_name, .. } = tool {
            if !names.contains(mcp_server_name.as_str()) {
                return Err(ApiError::invalid(format!(
                    "tools: mcp_toolset references {mcp_server_name:?}, which is not in mcp_servers"
                )));
            }
            referenced.insert(mcp_server_name.as_str());
        }
    }
    if let Some(unused) = names.iter().find(|name| !referenced.contains(*name)) {
        return Err(ApiError::invalid(format!(
            "mcp_servers: {unused:?} is not referenced by any mcp_toolset in tools"
        )));
    }
    Ok(())
}

pub fn resolve_skills(raw: Vec<SkillIn>) -> Result<Vec<Skill>, ApiError> {
    if raw.len() > MAX_SKILLS {
        return Err(ApiError::invalid(format!("skills: at most {MAX_SKILLS}, got {}", raw.len())));
    }
    raw.into_iter()
        .enumerate()
        .map(|(idx, skill)| {
            if skill.kind != "anthropic" && skill.kind != "custom" {
                return Err(ApiError::invalid(format!("skills[{idx}].type: must be anthropic or custom")));
            }
            check_len(&skill.skill_id, 1, 256, &format!("skills[{idx}].skill_id"))?;
            let version = match skill.version {
                None | Some(Value::Null) => "latest".to_owned(),
                Some(Value::String(v)) => v,
                Some(Value::Number(n)) => n.to_string(),
                Some(_) => return Err(ApiError::invalid(format!("skills[{idx}].version: must be a string"))),
            };
            Ok(Skill { kind: skill.kind, skill_id: skill.skill_id, version })
        })
        .collect()
}

pub fn check_system(system: &str) -> Result<(), ApiError> {
    let n = system.chars().count();
    if n > MAX_SYSTEM_CHARS {
        return Err(ApiError::invalid(format!("system: at most {MAX_SYSTEM_CHARS} characters, got {n}")));
    }
    Ok(())
}

pub fn check_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() {
        return Err(ApiError::invalid("name: must not be empty"));
    }
    check_len(name, 1, MAX_NAME_CHARS, "name")
}

/// `{type: service_account}` or `{type: aws_role, role_arn}`.
pub fn resolve_execution_identity(value: Option<Value>) -> Result<Value, ApiError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(serde_json::json!({"type": "service_account"}));
    };
    match value.get("type").and_then(Value::as_str) {
        Some("service_account") => Ok(serde_json::json!({"type": "service_account"})),
        Some("aws_role") => {
            let arn = value.get("role_arn").and_then(Value::as_str).unwrap_or("");
            check_len(arn, 1, 2048, "execution_identity.role_arn")?;
            Ok(serde_json::json!({"type": "aws_role", "role_arn": arn}))
        }
        _ => Err(ApiError::invalid("execution_identity.type: must be service_account or aws_role")),
    }
}

fn resolve_defaults(value: Option<&Value>, default_policy: PolicyKind, field: &str) -> Result<ToolDefaults, ApiError> {
    let mut defaults = ToolDefaults { enabled: true, permission_policy: PermissionPolicy { kind: default_policy } };
    let Some(value) = value.filter(|v| !v.is_null()) else { return Ok(defaults) };
    let field = format!("{field}.default_config");
    let mut object =
        value.as_object().cloned().ok_or_else(|| ApiError::invalid(format!("{field}: must be an object")))?;
    if let Some(enabled) = take_bool(&mut object, "enabled", &field)? {
        defaults.enabled = enabled;
    }
    if let Some(policy) = take_policy(&mut object, &field)? {
        defaults.permission_policy = policy;
    }
    Ok(defaults)
}

fn resolve_custom(object: &Map<String, Value>, field: &str) -> Result<Tool, ApiError> {
    let name = object
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid(format!("{field}.name: required")))?;
    check_len(name, 1, MAX_CUSTOM_TOOL_NAME_CHARS, &format!("{field}.name"))?;
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(ApiError::invalid(format!(
            "{field}.name: only letters, digits, _ and - are allowed, got {name:?}"
        )));
    }
    if BUILTIN_TOOLS.contains(&name) {
        return Err(ApiError::invalid(format!("{field}.name: {name:?} is the name of a built-in tool")));
    }
    if name.starts_with("mcp__") {
        return Err(ApiError::invalid(format!("{field}.name: the mcp__ prefix is reserved")));
    }
    let description = object.get("description").and_then(Value::as_str).unwrap_or("");
    if description.trim().is_empty() {
        return Err(ApiError::invalid(format!("{field}.description: required and must not be empty")));
    }
    let schema = object
        .get("input_schema")
        .and_then(Value::as_object)
        .ok_or_else(|| ApiError::invalid(format!("{field}.input_schema: required, a JSON schema object")))?;
    let schema_field = format!("{field}.input_schema");
    if schema.get("type").and_then(Value::as_str) != Some("object") {
        return Err(ApiError::invalid(format!("{schema_field}.type: must be \"object\"")));
    }
    for combinator in ["oneOf", "anyOf", "allOf"] {
        if schema.contains_key(combinator) {
            return Err(ApiError::invalid(format!("{schema_field}: top-level {combinator} is not allowed")));
        }
    }
    if contains_ref(&Value::Object(schema.clone())) {
        return Err(ApiError::invalid(format!("{schema_field}: $ref is not allowed anywhere in the schema")));
    }
    if let Some(properties) = schema.get("properties") {
        let properties = properties
            .as_object()
            .ok_or_else(|| ApiError::invalid(format!("{schema_field}.properties: must be an object")))?;
        for name in properties.keys() {
            let n = name.chars().count();
            if n == 0
                || n > MAX_PROPERTY_NAME_CHARS
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
            {
                return Err(ApiError::invalid(format!(
                    "{schema_field}.properties: property names are 1 to {MAX_PROPERTY_NAME_CHARS} letters, digits, _ . or -, got {name:?}"
                )));
            }
        }
    }
    if let Some(required) = schema.get("required")
        && !required.as_array().is_some_and(|items| items.iter().all(Value::is_string))
    {
        return Err(ApiError::invalid(format!("{schema_field}.required: must be an array of strings")));
    }
    Ok(Tool::Custom {
        name: name.to_owned(),
        description: description.to_owned(),
        input_schema: Value::Object(schema.clone()),
    })
}

fn contains_ref(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.contains_key("$ref") || map.values().any(contains_ref),
        Value::Array(items) => items.iter().any(contains_ref),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => false,
    }
}

fn check_tool_extras(name: &str, extra: &Map<String, Value>, field: &str) -> Result<(), ApiError> {
    let allowed: &[&str] = match name {
        "web_fetch" => &["allowed_domains", "blocked_domains", "max_content_tokens", "url_sources"],
        "web_search" => &["allowed_domains", "blocked_domains", "user_location"],
        _ => &[],
    };
    for key in extra.keys() {
        if !allowed.contains(&key.as_str()) {
            return Err(ApiError::invalid(format!("{field}.{key}: not a setting of the {name} tool")));
        }
    }
    let allowed_domains = extra.get("allowed_domains").filter(|v| !v.is_null());
    let blocked_domains = extra.get("blocked_domains").filter(|v| !v.is_null());
    if allowed_domains.is_some() && blocked_domains.is_some() {
        return Err(ApiError::invalid(format!("{field}: allowed_domains and blocked_domains are mutually exclusive")));
    }
    for (key, list) in [("allowed_domains", allowed_domains), ("blocked_domains", blocked_domains)] {
        if let Some(list) = list {
            let items = list.as_array().ok_or_else(|| ApiError::invalid(format!("{field}.{key}: must be an array")))?;
            if items.is_empty() || items.len() > MAX_DOMAINS {
                return Err(ApiError::invalid(format!("{field}.{key}: 1 to {MAX_DOMAINS} domains")));
            }
            let mut seen = std::collections::HashSet::new();
            for (idx, item) in items.iter().enumerate() {
                let entry = format!("{field}.{key}.{idx}");
                let domain = item.as_str().unwrap_or("");
                if domain.is_empty() || domain.len() > MAX_DOMAIN_CHARS {
                    return Err(ApiError::invalid(format!("{entry}: must be 1 to {MAX_DOMAIN_CHARS} characters")));
                }
                if !seen.insert(domain.to_ascii_lowercase()) {
                    return Err(ApiError::invalid(format!("{entry}: {domain:?} is listed twice")));
                }
                // web_search accepts a path suffix (example.com/docs); web_fetch plain hostnames only.
                let (host, path) = match domain.split_once('/') {
                    Some((host, path)) if name == "web_search" => (host, Some(path)),
                    Some(_) => ("", None),
                    None => (domain, None),
                };
                if host.contains(':') || host.rsplit('.').next().is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()))
                {
                    return Err(ApiError::invalid(format!(
                        "{entry}: IP addresses are not supported; name a hostname ({domain:?})"
                    )));
                }
                let path_ok =
                    path.is_none_or(|p| !p.is_empty() && !p.chars().any(|c| c.is_whitespace() || c.is_control()));
                if !is_hostname(host) || !path_ok {
                    return Err(ApiError::invalid(format!(
                        "{entry}: {domain:?} is not a plain ASCII hostname (punycode for others){}",
                        if name == "web_search" { " (optionally with a /path)" } else { "" }
                    )));
                }
                let lower = host.to_ascii_lowercase();
                if !lower.contains('.') {
                    return Err(ApiError::invalid(format!(
                        "{entry}: {domain:?} is a single label; name a registrable domain or a host in one"
                    )));
                }
                if RESERVED_DOMAINS
                    .iter()
                    .any(|reserved| lower == *reserved || lower.ends_with(&format!(".{reserved}")))
                {
                    return Err(ApiError::invalid(format!(
                        "{entry}: {domain:?} is a local or reserved name, not reachable from the web tools"
                    )));
                }
                if is_public_suffix(&lower) {
                    return Err(ApiError::invalid(format!(
                        "{entry}: {domain:?} is a public suffix, under which unrelated parties register their own \
                         domains; name a registrable domain or a host in one"
                    )));
                }
            }
        }
    }
    if let Some(location) = extra.get("user_location").filter(|v| !v.is_null()) {
        let sub_field = format!("{field}.user_location");
        let object =
            location.as_object().ok_or_else(|| ApiError::invalid(format!("{sub_field}: must be an object")))?;
        if object.get("type").and_then(Value::as_str) != Some("approximate") {
            return Err(ApiError::invalid(format!("{sub_field}.type: must be approximate")));
        }
        for (key, value) in object {
            match key.as_str() {
                "type" => {}
                "city" | "region" | "timezone" | "country" => {
                    let text = match value {
                        Value::Null => continue,
                        Value::String(text) => text.as_str(),
                        Value::Bool(_) | Value::Number(_) | Value::Array(_) | Value::Object(_) => "",
                    };
                    let valid = match key.as_str() {
                        "country" => text.len() == 2 && text.chars().all(|c| c.is_ascii_alphabetic()),
                        "timezone" => {
                            !text.is_empty()
                                && text.len() <= 64
                                && text.chars().all(|c| c.is_ascii_alphanumeric() || "/_+-".contains(c))
                        }
                        _ => !text.trim().is_empty() && text.chars().count() <= 255,
                    };
                    if !valid {
                        return Err(ApiError::invalid(format!(
                            "{sub_field}.{key}: {}",
                            match key.as_str() {
                                "country" => "must be a two-letter ISO 3166-1 code",
                                "timezone" => "must be an IANA time zone such as Europe/Paris",
                                _ => "must be a non-empty string",
                            }
                        )));
                    }
                }
                other => return Err(ApiError::invalid(format!("{sub_field}.{other}: not a location field"))),
            }
        }
    }
    if let Some(tokens) = extra.get("max_content_tokens").filter(|v| !v.is_null())
        && tokens.as_u64().is_none_or(|n| n == 0)
    {
        return Err(ApiError::invalid(format!("{field}.max_content_tokens: must be a positive integer")));
    }
    Ok(())
}

/// Longest entry of a web tool's domain list.
const MAX_DOMAIN_CHARS: usize = 255;

/// Names (and their subdomains) a web tool's domain list may not hold.
const RESERVED_DOMAINS: [&str; 5] = ["localhost", "local", "internal", "localdomain", "invalid"];

/// Whether `host` (in lower case) is itself a public suffix of the Public
/// Suffix List, ICANN or private section, its wildcard and exception rules
/// applied: `co.uk`, `github.io` and `anything.ck` (`*.ck`) are, while
/// `example.co.uk` and `www.ck` (`!www.ck`) are not. A name under a TLD the
/// list does not know is not one (only its last label would be).
pub fn is_public_suffix(host: &str) -> bool {
    psl::suffix(host.as_bytes()).is_some_and(|suffix| suffix.is_known() && suffix.as_bytes().len() == host.len())
}

/// Whether `host` is a DNS hostname (labels of letters, digits and inner hyphens).
pub fn is_hostname(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Most entries of a coordinator roster, and of a `predefined_agents` list
/// (API digest §3.1; behaviour digest §9).
pub const MAX_ROSTER_ENTRIES: usize = 20;
/// Most `{type: "self"}` entries of a coordinator roster (behaviour digest §9: "≤1").
pub const MAX_ROSTER_SELF_ENTRIES: usize = 1;
/// Most `{type: "advisor", model}` entries of a coordinator roster (behaviour digest §9: "≤1").
pub const MAX_ROSTER_ADVISORS: usize = 1;

/// An agent a roster names, as the caller's workspace holds it when the
/// roster is saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RosterMember {
    /// The version the roster pins.
    pub version: u32,
    /// Whether that version is itself multiagent (has a roster of its own).
    pub multiagent: bool,
}

/// What a roster entry names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RosterRef {
    /// Another agent, found in the workspace.
    Agent { id: String, member: RosterMember },
    /// The coordinator itself (`{type: "self"}`).
    Coordinator,
    /// The platform's advisor (`{type: "advisor", model}`).
    Advisor,
}

impl RosterRef {
    /// The id of the agent this names, if another agent.
    fn agent_id(&self) -> Option<&str> {
        match self {
            RosterRef::Agent { id, .. } => Some(id),
            RosterRef::Coordinator | RosterRef::Advisor => None,
        }
    }
}

/// Finds the agent a roster entry names: given the entry's field, the agent
/// id and the version it asks for (`None`: the latest), the member, or the
/// error that names the entry (a missing agent, or another workspace's).
pub type RosterLookup<'a> = dyn Fn(&str, &str, Option<u32>) -> Result<RosterMember, ApiError> + 'a;

/// Validates `multiagent` (preview) and resolves every agent reference of a
/// roster (a coordinator's `agents`, a `multiagent_20261001` toggle's
/// `predefined_agents`) to `{type: "agent", id, version}`, the version pinned
/// through `lookup` when the coordinator is saved (API digest §3.1: "Responses
/// resolve refs to `{type:"agent", id, version}`"; behaviour digest §9:
/// "Roster versions are snapshotted when the coordinator is saved").
pub fn resolve_multiagent(value: Option<Value>, lookup: &RosterLookup<'_>) -> Result<Option<Value>, ApiError> {
    let Some(value) = value.filter(|v| !v.is_null()) else { return Ok(None) };
    let object = value.as_object().ok_or_else(|| ApiError::invalid("multiagent: must be an object or null"))?;
    let toggle = |key: &str, allowed_extra: &[&str]| -> Result<Option<Value>, ApiError> {
        let Some(setting) = object.get(key).filter(|v| !v.is_null()) else { return Ok(None) };
        let field = format!("multiagent.{key}");
        match setting.get("type").and_then(Value::as_str) {
            Some("disabled") => Ok(Some(setting.clone())),
            Some("enabled") => {
                for extra in setting.as_object().map(|o| o.keys().collect::<Vec<_>>()).unwrap_or_default() {
                    if extra != "type" && !allowed_extra.contains(&extra.as_str()) {
                        return Err(ApiError::invalid(format!("{field}.{extra}: not a setting of {key}")));
                    }
                }
                if key == "advisor" && setting.get("model").is_none_or(Value::is_null) {
                    return Err(ApiError::invalid(format!("{field}.model: required when enabled")));
                }
                let mut resolved = setting.clone();
                if let Some(agents) = setting.get("predefined_agents").filter(|v| !v.is_null()) {
                    let agents = agents
                        .as_array()
                        .ok_or_else(|| ApiError::invalid(format!("{field}.predefined_agents: must be an array")))?;
                    if agents.len() > MAX_ROSTER_ENTRIES {
                        return Err(ApiError::invalid(format!(
                            "{field}.predefined_agents: at most {MAX_ROSTER_ENTRIES}"
                        )));
                    }
                    let pinned = agents
                        .iter()
                        .enumerate()
                        .map(|(idx, agent)| {
                            roster_entry(agent, &format!("{field}.predefined_agents[{idx}]"), lookup)
                                .map(|(resolved, _)| resolved)
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    if let Some(resolved) = resolved.as_object_mut() {
                        resolved.insert("predefined_agents".to_owned(), Value::Array(pinned));
                    }
                }
                Ok(Some(resolved))
            }
            _ => Err(ApiError::invalid(format!("{field}.type: must be enabled or disabled"))),
        }
    };
    match object.get("type").and_then(Value::as_str) {
        Some("coordinator") => {
            let agents = object
                .get("agents")
                .and_then(Value::as_array)
                .ok_or_else(|| ApiError::invalid("multiagent.agents: required, an array"))?;
            if agents.is_empty() || agents.len() > MAX_ROSTER_ENTRIES {
                return Err(ApiError::invalid(format!("multiagent.agents: 1 to {MAX_ROSTER_ENTRIES} agents")));
            }
            let mut resolved = Vec::with_capacity(agents.len());
            let mut refs = Vec::with_capacity(agents.len());
            for (idx, entry) in agents.iter().enumerate() {
                let field = format!("multiagent.agents[{idx}]");
                let (value, named) = roster_entry(entry, &field, lookup)?;
                check_coordinator_entry(&field, &named, &refs)?;
                resolved.push(value);
                refs.push(named);
            }
            Ok(Some(serde_json::json!({"type": "coordinator", "agents": resolved})))
        }
        Some("multiagent_20261001") => {
            let mut resolved = object.clone();
            for (key, allowed_extra) in [
                ("advisor", &["model"][..]),
                ("subagents", &["inline_agents", "predefined_agents"][..]),
                ("workflows", &["inline_agents", "predefined_agents"][..]),
            ] {
                if let Some(setting) = toggle(key, allowed_extra)? {
                    resolved.insert(key.to_owned(), setting);
                }
            }
            // Each member resolved with its defaults (a missing or null one
            // takes them): the advisor disabled, subagents and workflows
            // enabled, with inline agents enabled and no predefined agents.
            if resolved.get("advisor").is_none_or(Value::is_null) {
                resolved.insert("advisor".to_owned(), serde_json::json!({"type": "disabled"}));
            }
            for key in ["subagents", "workflows"] {
                if resolved.get(key).is_none_or(Value::is_null) {
                    resolved.insert(key.to_owned(), serde_json::json!({"type": "enabled"}));
                }
                if let Some(member) = resolved.get_mut(key).and_then(Value::as_object_mut)
                    && member.get("type").and_then(Value::as_str) == Some("enabled")
                {
                    if member.get("inline_agents").is_none_or(Value::is_null) {
                        member.insert("inline_agents".to_owned(), serde_json::json!({"type": "enabled"}));
                    }
                    if member.get("predefined_agents").is_none_or(Value::is_null) {
                        member.insert("predefined_agents".to_owned(), serde_json::json!([]));
                    }
                }
            }
            Ok(Some(Value::Object(resolved)))
        }
        _ => Err(ApiError::invalid("multiagent.type: must be coordinator or multiagent_20261001")),
    }
}

/// A coordinator roster's entry `field`, naming `named`, after the entries
/// `before` it (behaviour digest §9: "1–20 distinct entries: ...
/// `{type:"self"}` (≤1), and `{type:"advisor", model}` (≤1) ... Depth limit 1
/// (referencing an agent with its own roster → validation error)").
fn check_coordinator_entry(field: &str, named: &RosterRef, before: &[RosterRef]) -> Result<(), ApiError> {
    match named {
        RosterRef::Agent { id, member } => {
            if before.iter().any(|other| other.agent_id() == Some(id.as_str())) {
                return Err(ApiError::invalid(format!(
                    "{field}: agent {id} is already in the roster; list each agent once"
                )));
            }
            if member.multiagent {
                return Err(ApiError::invalid(format!(
                    "{field}: agent {id} (version {}) is itself multiagent; a roster is one level deep, \
                     so its agents cannot have rosters of their own",
                    member.version
                )));
            }
        }
        RosterRef::Coordinator => {
            if before.iter().filter(|other| **other == RosterRef::Coordinator).count() >= MAX_ROSTER_SELF_ENTRIES {
                return Err(ApiError::invalid(format!(
                    "{field}: {{type: self}} may appear at most {MAX_ROSTER_SELF_ENTRIES} time in a roster"
                )));
            }
        }
        RosterRef::Advisor => {
            if before.iter().filter(|other| **other == RosterRef::Advisor).count() >= MAX_ROSTER_ADVISORS {
                return Err(ApiError::invalid(format!(
                    "{field}: a roster holds at most {MAX_ROSTER_ADVISORS} advisor"
                )));
            }
        }
    }
    Ok(())
}

/// One roster entry, checked and resolved, with what it names: an agent (a
/// bare id or `{type: "agent", id, version?}`) becomes `{type: "agent", id,
/// version}` with the version `lookup` pins; `self` and `advisor` entries
/// stay as given.
fn roster_entry(entry: &Value, field: &str, lookup: &RosterLookup<'_>) -> Result<(Value, RosterRef), ApiError> {
    let (id, version) = match entry {
        Value::String(id) => (id.as_str(), None),
        Value::Object(object) => match object.get("type").and_then(Value::as_str) {
            Some("agent") => {
                let id = object
                    .get("id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ApiError::invalid(format!("{field}.id: required, an agent id")))?;
                let version = match object.get("version") {
                    None | Some(Value::Null) => None,
                    Some(version) => {
                        Some(version.as_u64().filter(|v| *v >= 1).and_then(|v| u32::try_from(v).ok()).ok_or_else(
                            || ApiError::invalid(format!("{field}.version: must be an integer of at least 1")),
                        )?)
                    }
                };
                (id, version)
            }
            Some("self") => return Ok((entry.clone(), RosterRef::Coordinator)),
            Some("advisor") if object.get("model").is_some_and(|m| !m.is_null()) => {
                return Ok((entry.clone(), RosterRef::Advisor));
            }
            _ => return Err(roster_entry_shape(field)),
        },
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::Array(_) => return Err(roster_entry_shape(field)),
    };
    let member = lookup(field, id, version)?;
    let resolved = serde_json::json!({"type": "agent", "id": id, "version": member.version});
    Ok((resolved, RosterRef::Agent { id: id.to_owned(), member }))
}

/// The error for a roster entry of no known shape.
fn roster_entry_shape(field: &str) -> ApiError {
    ApiError::invalid(format!(
        "{field}: must be an agent id, {{type: agent, id, version?}}, {{type: self}} or {{type: advisor, model}}"
    ))
}

fn array_field<'a>(object: &'a Map<String, Value>, key: &str, field: &str) -> Result<&'a [Value], ApiError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(ApiError::invalid(format!("{field}.{key}: must be an array"))),
    }
}

fn take_string(object: &mut Map<String, Value>, key: &str, field: &str) -> Result<String, ApiError> {
    match object.remove(key) {
        Some(Value::String(text)) => Ok(text),
        _ => Err(ApiError::invalid(format!("{field}.{key}: required, a string"))),
    }
}

fn take_bool(object: &mut Map<String, Value>, key: &str, field: &str) -> Result<Option<bool>, ApiError> {
    match object.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(_) => Err(ApiError::invalid(format!("{field}.{key}: must be true or false"))),
    }
}

fn take_policy(object: &mut Map<String, Value>, field: &str) -> Result<Option<PermissionPolicy>, ApiError> {
    match object.remove("permission_policy") {
        None | Some(Value::Null) => Ok(None),
        Some(value) => serde_json::from_value(value).map(Some).map_err(|_| {
            ApiError::invalid(format!(
                "{field}.permission_policy: must be {{\"type\": \"always_allow\" | \"always_ask\" | \"auto\"}}"
            ))
        }),
    }
}

/// Longest agent or environment `description` (behaviour digest's limits
/// table: 2,048 characters for an agent's; environments get the same).
pub const MAX_DESCRIPTION_CHARS: usize = 2048;

/// `description`, when given, is at most [`MAX_DESCRIPTION_CHARS`] long.
pub fn check_description(description: Option<&str>) -> Result<(), ApiError> {
    description.map_or(Ok(()), |text| check_len(text, 0, MAX_DESCRIPTION_CHARS, "description"))
}

pub fn check_len(text: &str, min: usize, max: usize, field: &str) -> Result<(), ApiError> {
    let n = text.chars().count();
    if n < min || n > max {
        return Err(ApiError::invalid(format!("{field}: must be {min} to {max} characters, got {n}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn toolset_resolves_defaults_and_configs() {
        let tools = resolve_tools(&[json!({
            "type": "agent_toolset_20260401",
            "default_config": {"permission_policy": {"type": "always_allow"}},
            "configs": [{"name": "bash", "permission_policy": {"type": "always_ask"}}]
        })])
        .unwrap();
        assert_eq!(
            serde_json::to_value(&tools).unwrap(),
            json!([{"type": "agent_toolset_20260401",
                "default_config": {"enabled": true, "permission_policy": {"type": "always_allow"}},
                "configs": [{"type": "bash", "name": "bash", "enabled": true, "permission_policy": {"type": "always_ask"}}]}])
        );
    }

    #[test]
    fn custom_tool_rules() {
        let ok = json!({"type": "custom", "name": "get_weather", "description": "Get weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}});
        assert!(resolve_tools(std::slice::from_ref(&ok)).is_ok());
        let cases = [
            json!({"type": "custom", "name": "bash", "description": "d", "input_schema": {"type": "object"}}),
            json!({"type": "custom", "name": "mcp__x", "description": "d", "input_schema": {"type": "object"}}),
            json!({"type": "custom", "name": "bad name", "description": "d", "input_schema": {"type": "object"}}),
            json!({"type": "custom", "name": "t", "description": "", "input_schema": {"type": "object"}}),
            json!({"type": "custom", "name": "t", "description": "d", "input_schema": {"type": "array"}}),
            json!({"type": "custom", "name": "t", "description": "d", "input_schema": {"type": "object", "oneOf": []}}),
            json!({"type": "custom", "name": "t", "description": "d", "input_schema": {"type": "object", "properties": {"a": {"$ref": "#/x"}}}}),
            json!({"type": "custom", "name": "t", "description": "d", "input_schema": {"type": "object", "properties": {"a b": {}}}}),
        ];
        for case in cases {
            assert!(resolve_tools(std::slice::from_ref(&case)).is_err(), "{case}");
        }
        assert!(resolve_tools(&[ok.clone(), ok]).is_err(), "duplicate names");
    }

    #[test]
    fn mcp_servers_and_toolsets_must_match() {
        let tools = resolve_tools(&[json!({"type": "mcp_toolset", "mcp_server_name": "gh"})]).unwrap();
        let server = McpServer { kind: "url".into(), name: "gh".into(), url: "https://mcp.example.com".into() };
        assert!(check_mcp(std::slice::from_ref(&server), &tools).is_ok());
        assert!(check_mcp(&[], &tools).is_err());
        assert!(check_mcp(&[server], &[]).is_err());
    }

    #[test]
    fn a_coordinator_roster_holds_distinct_entries_and_no_nested_roster() {
        // `agent_nested` is itself multiagent; every other id is a plain agent at version 2.
        let lookup = |_: &str, id: &str, version: Option<u32>| {
            Ok(RosterMember { version: version.unwrap_or(2), multiagent: id == "agent_nested" })
        };
        let coordinator = |agents: Value| Some(json!({"type": "coordinator", "agents": agents}));
        let advisor = json!({"type": "advisor", "model": "claude-opus-4-6"});
        let ok = resolve_multiagent(
            coordinator(
                json!(["agent_a", {"type": "agent", "id": "agent_b", "version": 1}, {"type": "self"}, advisor]),
            ),
            &lookup,
        )
        .unwrap();
        assert_eq!(
            ok,
            coordinator(json!([{"type": "agent", "id": "agent_a", "version": 2},
                {"type": "agent", "id": "agent_b", "version": 1}, {"type": "self"}, advisor]))
        );
        let cases = [
            (json!([{"type": "self"}, {"type": "self"}]), "multiagent.agents[1]: {type: self} may appear"),
            (
                json!(["agent_a", {"type": "agent", "id": "agent_a", "version": 1}]),
                "multiagent.agents[1]: agent agent_a is already",
            ),
            (json!([advisor, advisor]), "multiagent.agents[1]: a roster holds at most 1 advisor"),
            (
                json!(["agent_a", "agent_nested"]),
                "multiagent.agents[1]: agent agent_nested (version 2) is itself multiagent",
            ),
        ];
        for (agents, message) in cases {
            let err = resolve_multiagent(coordinator(agents.clone()), &lookup).unwrap_err();
            assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST, "{agents}");
            assert!(err.message.starts_with(message), "{agents}: {}", err.message);
        }
    }

    #[test]
    fn public_suffixes_follow_the_lists_wildcard_and_exception_rules() {
        for suffix in ["co.uk", "org.uk", "com.au", "github.io", "com", "foo.ck", "foo.kawasaki.jp"] {
            assert!(is_public_suffix(suffix), "{suffix}");
        }
        for domain in ["example.co.uk", "example.com", "foo.github.io", "www.ck", "city.kawasaki.jp", "example.zzzz"] {
            assert!(!is_public_suffix(domain), "{domain}");
        }
    }

    #[test]
    fn model_short_forms() {
        let model = ModelIn::Id("claude-sonnet-4-6".into()).resolve(None).unwrap();
        assert_eq!(model.effort.level, "high");
        let obj: ModelIn = serde_json::from_value(json!({"id": "m", "effort": "low"})).unwrap();
        let resolved = obj.resolve(None).unwrap();
        assert_eq!(resolved.effort.level, "low");
        let keep: ModelIn = serde_json::from_value(json!({"id": "m"})).unwrap();
        assert_eq!(keep.resolve(Some(&resolved)).unwrap().effort.level, "low");
        let bad: ModelIn = serde_json::from_value(json!({"id": "m", "effort": {"type": "huge"}})).unwrap();
        assert!(bad.resolve(None).is_err());
    }
}
