//! What the model sees of MCP servers and what it gets back: tool
//! definitions under collision-free names, the permission of each call, and
//! call results as tool result content. Pure: no IO.
//!
//! A listed tool is offered as `mcp__<server>__<tool>`, with characters the
//! Messages API does not allow in a tool name replaced by `_`; a name that
//! would be longer than [`MAX_TOOL_NAME_CHARS`] or is already taken is cut and
//! given a short hash of the server and tool names, so every name is unique
//! and the same listing always gives the same names. The events keep the bare
//! tool name and the server's name (`agent.mcp_tool_use`), which is why the
//! mapping is recorded with the settings ([`McpToolName`], in
//! `RequestOptions::mcp_tools`): the runner maps a call back with the
//! recorded table, never by parsing the name.

use std::collections::BTreeSet;

use base64::Engine as _;
use logbook_core::event::ToolEvaluation;
use logbook_core::event::{AutoPermission, ContentBlock, DocumentSource, EvaluatedPermission, ImageSource};
use serde_json::{Map, Value, json};

use crate::api::tools::{PolicyKind, Tool};
use crate::model::request::McpToolName;
use crate::runner::ToolOutcome;
use crate::tools::files::MAX_IMAGE_BASE64_BYTES;
use crate::tools::image::{self, MediaType};

/// The Messages API's longest tool name.
pub const MAX_TOOL_NAME_CHARS: usize = 64;
/// The prefix of every MCP tool's name, reserved for them (custom tools may
/// not use it).
pub const NAME_PREFIX: &str = "mcp__";
/// Tools offered per server at most: the API's limit on tools per agent; a
/// server listing more is cut (and the cut logged).
pub const MAX_TOOLS_PER_SERVER: usize = 128;
/// Longest tool name accepted from a listing (the MCP specification asks for
/// at most 128 characters); a tool with a longer one is left out, since the
/// name is recorded with the session's settings and every call.
pub const MAX_LISTED_NAME_CHARS: usize = 1_024;
/// Most bytes of tool definitions offered from all of a session's servers
/// together: every request carries them, and the Messages API takes
/// requests of up to 32 MB. Tools past it are left out (and logged).
pub const MAX_OFFERED_BYTES: usize = 4 * 1024 * 1024;
/// Longest description kept; MCP servers write long ones, and every request
/// carries them.
pub const MAX_DESCRIPTION_CHARS: usize = 4_096;
/// Largest input schema offered (its JSON); a bigger one is replaced by an
/// open object schema rather than filling the context.
pub const MAX_SCHEMA_BYTES: usize = 32 * 1024;
/// Content blocks kept of one result, and images or documents among them
/// (more than 20 images in a request limits each to 2,000 px; a request
/// holds at most 100).
pub const MAX_RESULT_BLOCKS: usize = 100;
pub const MAX_RESULT_MEDIA: usize = 20;
/// What the model gets for a call that returned no content.
pub const NO_OUTPUT: &str = "(no output)";

/// One tool a server listed.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedTool {
    pub name: String,
    pub description: Option<String>,
    /// A JSON Schema object.
    pub input_schema: Value,
}

impl ListedTool {
    /// A tool from its `tools/list` JSON (`name`, `description`,
    /// `inputSchema`); `None` without a name.
    pub fn from_json(tool: &Value) -> Option<ListedTool> {
        let name = tool
            .get("name")
            .and_then(Value::as_str)
            .filter(|name| !name.is_empty() && name.chars().count() <= MAX_LISTED_NAME_CHARS)?
            .to_owned();
        let description = tool.get("description").and_then(Value::as_str).map(|text| cut(text, MAX_DESCRIPTION_CHARS));
        let mut input_schema = tool.get("inputSchema").cloned().unwrap_or_else(|| json!({"type": "object"}));
        if !input_schema.is_object() || input_schema.to_string().len() > MAX_SCHEMA_BYTES {
            input_schema = json!({"type": "object"});
        }
        if let Value::Object(schema) = &mut input_schema {
            // The Messages API requires an object schema, without
            // combinators at its top level.
            schema.insert("type".to_owned(), json!("object"));
            flatten_combinators(schema);
        }
        // A schema the Messages API would refuse (every request of the
        // session, not only this tool's calls): an open object instead. The
        // model then writes the input from the description, and the server
        // checks it.
        if !is_offerable_schema(&input_schema, 0) {
            input_schema = json!({"type": "object"});
        }
        Some(ListedTool { name, description, input_schema })
    }
}

/// Deepest nesting of subschemas checked; a deeper schema is not offered as is.
const MAX_SCHEMA_DEPTH: usize = 32;
/// The types of JSON Schema.
const SCHEMA_TYPES: [&str; 7] = ["null", "boolean", "object", "array", "number", "string", "integer"];

/// Whether the Messages API takes `schema` as an input schema (draft 2020-12,
/// property names matching `^[a-zA-Z0-9_.-]{1,64}$`), as far as the
/// keywords that hold subschemas, `type`, `required` and `properties` go.
fn is_offerable_schema(schema: &Value, depth: usize) -> bool {
    if depth > MAX_SCHEMA_DEPTH {
        return false;
    }
    let schema = match schema {
        Value::Bool(_) => return true,
        Value::Object(schema) => schema,
        Value::Null | Value::Number(_) | Value::String(_) | Value::Array(_) => return false,
    };
    let sub = |value: &Value| is_offerable_schema(value, depth + 1);
    let type_ok = match schema.get("type") {
        None => true,
        Some(Value::String(name)) => SCHEMA_TYPES.contains(&name.as_str()),
        Some(Value::Array(names)) => names.iter().all(|n| n.as_str().is_some_and(|n| SCHEMA_TYPES.contains(&n))),
        Some(_) => false,
    };
    let required_ok =
        schema.get("required").is_none_or(|r| r.as_array().is_some_and(|r| r.iter().all(Value::is_string)));
    let properties_ok = schema.get("properties").is_none_or(|properties| {
        properties
            .as_object()
            .is_some_and(|properties| properties.iter().all(|(name, property)| is_property_name(name) && sub(property)))
    });
    let maps_ok = ["patternProperties", "$defs", "definitions", "dependentSchemas"]
        .iter()
        .filter_map(|key| schema.get(*key))
        .all(|map| map.as_object().is_some_and(|map| map.values().all(sub)));
    let single_ok = ["items", "additionalProperties", "not", "contains", "propertyNames", "if", "then", "else"]
        .iter()
        .filter_map(|key| schema.get(*key))
        .all(sub);
    let lists_ok = ["anyOf", "oneOf", "allOf", "prefixItems"]
        .iter()
        .filter_map(|key| schema.get(*key))
        .all(|list| list.as_array().is_some_and(|list| !list.is_empty() && list.iter().all(sub)));
    type_ok && required_ok && properties_ok && maps_ok && single_ok && lists_ok
}

/// A property name the Messages API takes: `^[a-zA-Z0-9_.-]{1,64}$`.
fn is_property_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The top-level combinators the Messages API refuses in an input schema.
const COMBINATORS: [&str; 3] = ["oneOf", "anyOf", "allOf"];

/// Takes `oneOf`, `anyOf` and `allOf` out of the top of `schema` (the
/// Messages API refuses a request whose tools have them there, every request
/// of the session, not only calls of that tool) and keeps what the model
/// needs of them: every branch's properties join the schema's own (its own
/// first), and a property is required if the schema requires it, if an
/// `allOf` branch does, or if every branch of a `oneOf` or `anyOf` does. The
/// server still checks its input; a call the looser schema lets through is
/// answered with the server's error.
fn flatten_combinators(schema: &mut Map<String, Value>) {
    let mut properties = match schema.remove("properties") {
        Some(Value::Object(properties)) => properties,
        Some(_) | None => Map::new(),
    };
    let mut required: BTreeSet<String> = required_of(schema.get("required"));
    let mut changed = false;
    for combinator in COMBINATORS {
        let Some(branches) = schema.remove(combinator) else { continue };
        changed = true;
        let branches = branches.as_array().cloned().unwrap_or_default();
        let mut in_every: Option<BTreeSet<String>> = None;
        for branch in &branches {
            if let Some(Value::Object(branch_properties)) = branch.get("properties") {
                for (name, property) in branch_properties {
                    properties.entry(name.clone()).or_insert_with(|| property.clone());
                }
            }
            let branch_required = required_of(branch.get("required"));
            in_every = Some(match in_every {
                Some(so_far) => so_far.intersection(&branch_required).cloned().collect(),
                None => branch_required.clone(),
            });
            if combinator == "allOf" {
                required.extend(branch_required);
            }
        }
        if combinator != "allOf" {
            required.extend(in_every.unwrap_or_default());
        }
    }
    if !properties.is_empty() || changed {
        schema.insert("properties".to_owned(), Value::Object(properties));
    }
    if changed {
        schema.insert("required".to_owned(), json!(required));
    }
}

fn required_of(value: Option<&Value>) -> BTreeSet<String> {
    value.and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect()
}

/// What the model is offered of the servers' tools.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Offered {
    /// Complete Messages API tool definitions of the enabled tools.
    pub definitions: Vec<Value>,
    /// Which server and tool each name stands for: the enabled tools', and
    /// the disabled ones' too, so that a call of a disabled tool is still an
    /// `agent.mcp_tool_use` (denied).
    pub names: Vec<McpToolName>,
}

/// The definitions of every enabled tool of `servers` (in the agent's server
/// order, each server's tools in its listing order).
///
/// A tool's name does not depend on where it is listed: two tools whose
/// plain names would be the same (`get.file` and `get_file` both sanitize to
/// `get_file`) both get hashed ones. Were the first listed to keep the plain
/// name, a server listing them the other way round after a reconnect would
/// give the history's calls of one the other's name.
pub fn offer<'a>(agent_tools: &[Tool], servers: impl IntoIterator<Item = (&'a str, &'a [ListedTool])>) -> Offered {
    // Each server's distinct tools (a name listed twice names one tool: it
    // is offered once), as many as may be offered.
    let servers: Vec<(&str, Vec<&ListedTool>)> = servers
        .into_iter()
        .map(|(server, tools)| {
            let mut seen = BTreeSet::new();
            let distinct = tools.iter().filter(|tool| seen.insert(tool.name.as_str()));
            (server, distinct.take(MAX_TOOLS_PER_SERVER).collect())
        })
        .collect();
    // Every plain name is reserved before any hashed name is chosen (a
    // tool may be named like another's hashed name); one that more than one
    // tool would have goes to none of them.
    let mut taken = BTreeSet::new();
    let mut contested = BTreeSet::new();
    for (server, tools) in &servers {
        for tool in tools {
            let plain = plain_name(server, &tool.name);
            if !taken.insert(plain.clone()) {
                contested.insert(plain);
            }
        }
    }
    let mut offered = Offered::default();
    let mut offered_bytes = 0;
    for (server, tools) in servers {
        for tool in tools {
            let plain = plain_name(server, &tool.name);
            let name = if plain.len() <= MAX_TOOL_NAME_CHARS && !contested.contains(&plain) {
                plain
            } else {
                // Taken: every plain name, and the hashed names chosen so far.
                model_name(server, &tool.name, &taken)
            };
            taken.insert(name.clone());
            offered.names.push(McpToolName { name: name.clone(), server: server.to_owned(), tool: tool.name.clone() });
            if !is_enabled(agent_tools, server, &tool.name) {
                continue;
            }
            let mut definition = Map::new();
            definition.insert("name".to_owned(), json!(name));
            if let Some(description) = &tool.description {
                definition.insert("description".to_owned(), json!(description));
            }
            definition.insert("input_schema".to_owned(), tool.input_schema.clone());
            let definition = Value::Object(definition);
            let bytes = definition.to_string().len();
            if offered_bytes + bytes > MAX_OFFERED_BYTES {
                tracing::warn!(server, tool = %name, "MCP tool left out: the offered tools' definitions reach {MAX_OFFERED_BYTES} bytes");
                continue;
            }
            offered_bytes += bytes;
            offered.definitions.push(definition);
        }
    }
    offered
}

/// `mcp__<server>__<tool>`, sanitized (maybe too long for a tool name).
fn plain_name(server: &str, tool: &str) -> String {
    format!("{NAME_PREFIX}{}__{}", sanitize(server), sanitize(tool))
}

/// The model's name for `tool` of `server`, unique among `taken`: the plain
/// name if it fits and is not taken, else a prefix of it with a hash of the
/// server and tool names.
pub fn model_name(server: &str, tool: &str, taken: &BTreeSet<String>) -> String {
    let plain = plain_name(server, tool);
    if plain.len() <= MAX_TOOL_NAME_CHARS && !taken.contains(&plain) {
        return plain;
    }
    let mut hasher = blake3::Hasher::new();
    hasher.update(server.as_bytes());
    hasher.update(&[0]);
    hasher.update(tool.as_bytes());
    let hash = hasher.finalize().to_hex();
    // At most 48 digits, so a prefix of the name always stays.
    for length in [8, 16, 32, 48] {
        let suffix = &hash.as_str()[..length];
        // ASCII only after sanitizing, so byte lengths are char counts.
        let keep = MAX_TOOL_NAME_CHARS - 1 - length;
        let name = format!("{}_{suffix}", &plain[..plain.len().min(keep)]);
        if !taken.contains(&name) {
            return name;
        }
    }
    // 2^256 to one: the full hash collided too. Still unique: count up.
    (0u64..)
        .map(|n| format!("{NAME_PREFIX}{n}"))
        .find(|name| !taken.contains(name))
        .unwrap_or_else(|| NAME_PREFIX.to_owned())
}

/// `[A-Za-z0-9_-]` kept, anything else `_`.
fn sanitize(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect()
}

/// Whether the agent's toolset for `server` enables `tool` (its config, else
/// the toolset's default; no toolset, no tools).
pub fn is_enabled(agent_tools: &[Tool], server: &str, tool: &str) -> bool {
    toolset_config(agent_tools, server, tool).is_some_and(|(enabled, _)| enabled)
}

/// The evaluated permission of a call of `tool` on `server`: per-tool config
/// over the toolset's default (`always_ask` unless set). `auto` asks: MCP
/// tools are the server's, and its hints about them are not to be trusted.
pub fn permission(agent_tools: &[Tool], server: &str, tool: &str) -> (EvaluatedPermission, Option<ToolEvaluation>) {
    match toolset_config(agent_tools, server, tool) {
        None | Some((false, _)) => (EvaluatedPermission::Deny, None),
        Some((true, PolicyKind::AlwaysAllow)) => (EvaluatedPermission::Allow, Some(ToolEvaluation::AlwaysAllow)),
        Some((true, PolicyKind::AlwaysAsk)) => (EvaluatedPermission::Ask, Some(ToolEvaluation::AlwaysAsk)),
        Some((true, PolicyKind::Auto)) => {
            let verdict = AutoPermission::Ask { reason_code: "indeterminate".to_owned() };
            (EvaluatedPermission::Ask, Some(ToolEvaluation::Auto { evaluated_permission: verdict }))
        }
    }
}

fn toolset_config(agent_tools: &[Tool], server: &str, tool: &str) -> Option<(bool, PolicyKind)> {
    agent_tools.iter().find_map(|entry| match entry {
        Tool::McpToolset { mcp_server_name, default_config, configs } if mcp_server_name == server => {
            Some(match configs.iter().find(|config| config.name == tool) {
                Some(config) => (config.enabled, config.permission_policy.kind),
                None => (default_config.enabled, default_config.permission_policy.kind),
            })
        }
        Tool::McpToolset { .. } | Tool::AgentToolset { .. } | Tool::Custom { .. } => None,
    })
}

/// A `tools/call` result (its JSON) as tool result content: text as text,
/// images declared of a type the API takes as images (of the type their
/// bytes are, which the server may have got wrong), PDFs as documents, text
/// resources as text; anything else is described in a line of text rather
/// than dropped. Structured content stands in when there is no content.
pub fn outcome(result: &Value) -> ToolOutcome {
    let is_error = result.get("isError").and_then(Value::as_bool).unwrap_or(false);
    // Every later request carries the result: at most MAX_RESULT_BLOCKS
    // blocks of it, MAX_RESULT_MEDIA of them images or documents, and one
    // note for the rest.
    let mut content: Vec<ContentBlock> = Vec::new();
    let (mut n_media, mut n_left_out) = (0usize, 0usize);
    for item in result.get("content").and_then(Value::as_array).into_iter().flatten() {
        if content.len() >= MAX_RESULT_BLOCKS {
            n_left_out += 1;
            continue;
        }
        let converted = block(item);
        let is_media = match &converted {
            ContentBlock::Image { .. } | ContentBlock::Document { .. } => true,
            ContentBlock::Text { .. } | ContentBlock::SearchResult { .. } | ContentBlock::Redacted => false,
        };
        if is_media && n_media >= MAX_RESULT_MEDIA {
            n_left_out += 1;
            continue;
        }
        n_media += usize::from(is_media);
        content.push(converted);
    }
    if n_left_out > 0 {
        content.push(ContentBlock::Text {
            text: format!(
                "[{n_left_out} more content blocks left out: a tool result keeps at most {MAX_RESULT_BLOCKS} blocks, \
                 {MAX_RESULT_MEDIA} of them images or documents]"
            ),
        });
    }
    if content.is_empty()
        && let Some(structured) = result.get("structuredContent").filter(|value| !value.is_null())
    {
        content.push(ContentBlock::Text { text: structured.to_string() });
    }
    if content.is_empty() {
        content.push(ContentBlock::Text { text: NO_OUTPUT.to_owned() });
    }
    ToolOutcome { content, is_error }
}

fn block(item: &Value) -> ContentBlock {
    let text = |name: &str| item.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
    match item.get("type").and_then(Value::as_str) {
        Some("text") => ContentBlock::Text { text: text("text") },
        Some("image") if MediaType::named(&text("mimeType")).is_some() => image(&text("mimeType"), text("data")),
        Some("image" | "audio") => ContentBlock::Text {
            text: format!(
                "[{} content of type {} left out: tool results cannot carry it]",
                text("type"),
                text("mimeType")
            ),
        },
        Some("resource") => {
            let resource = item.get("resource").unwrap_or(&Value::Null);
            let field = |name: &str| resource.get(name).and_then(Value::as_str);
            let uri = field("uri").unwrap_or_default();
            match (field("text"), field("blob"), field("mimeType")) {
                (Some(body), _, _) => ContentBlock::Text { text: format!("[resource {uri}]\n{body}") },
                (None, Some(blob), Some("application/pdf")) => match pdf_problem(blob) {
                    None => ContentBlock::Document {
                        source: DocumentSource::Base64 {
                            media_type: "application/pdf".to_owned(),
                            data: blob.to_owned(),
                        },
                        title: Some(uri.to_owned()),
                        context: None,
                    },
                    Some(problem) => ContentBlock::Text { text: format!("[PDF resource {uri} left out: {problem}]") },
                },
                (None, Some(_), mime) => ContentBlock::Text {
                    text: format!("[binary resource {uri} ({}) left out]", mime.unwrap_or("unknown type")),
                },
                (None, None, _) => ContentBlock::Text { text: format!("[resource {uri}]") },
            }
        }
        Some("resource_link") => {
            ContentBlock::Text { text: format!("[resource link: {} <{}>]", text("name"), text("uri")) }
        }
        Some(_) | None => ContentBlock::Text { text: item.to_string() },
    }
}

/// An image block, sent as the media type its bytes are (not the one the
/// server declared), or a note in its place when the Messages API would
/// refuse it: over its per-image limit (the read tool's cap), not base64, no
/// PNG, JPEG, GIF or WebP image, or over [`image::MAX_SIDE_PIXELS`] on a side
/// ([`image::check`]). Such a block, once in the session's log, would have
/// every later request of the session refused, so the session could not go
/// on.
fn image(declared: &str, data: String) -> ContentBlock {
    let too_large = u64::try_from(data.len()).map_or(true, |len| len > MAX_IMAGE_BASE64_BYTES);
    let problem = if too_large {
        format!("{} bytes of base64, more than the limit of {MAX_IMAGE_BASE64_BYTES}", data.len())
    } else {
        match base64::engine::general_purpose::STANDARD.decode(data.as_bytes()) {
            Err(_) => "its data is not valid base64".to_owned(),
            Ok(bytes) => match image::check(&bytes) {
                Ok(media_type) => {
                    let media_type = media_type.as_str().to_owned();
                    return ContentBlock::Image { source: ImageSource::Base64 { media_type, data } };
                }
                Err(refusal) => refusal.to_string(),
            },
        }
    };
    ContentBlock::Text { text: format!("[image content of type {declared} left out: {problem}]") }
}

/// Why the Messages API would refuse a base64 PDF, if it would.
fn pdf_problem(blob: &str) -> Option<String> {
    let max = crate::tools::files::MAX_PDF_BYTES;
    match base64::engine::general_purpose::STANDARD.decode(blob.as_bytes()) {
        Err(_) => Some("its data is not valid base64".to_owned()),
        Ok(bytes) if u64::try_from(bytes.len()).map_or(true, |len| len > max) => {
            Some(format!("{} bytes, more than the limit of {max}", bytes.len()))
        }
        Ok(_) => None,
    }
}

/// `text` cut to `max` characters.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => text[..end].to_owned(),
        None => text.to_owned(),
    }
}

#[cfg(test)]
#[path = "tools_tests.rs"]
mod tests;
