//! Building a Messages API request from an agent's configuration and a conversation.
//!
//! [`build_request`] is a pure function: the agent (as an [`AgentView`], its
//! tools as the API stores them), the conversation already in Messages API
//! form, and [`RequestOptions`] in; the JSON body out. It decides three things
//! the agent configuration leaves open:
//!
//! - **Tools.** The built-in toolset's enabled tools become client tools with
//!   input schemas (bash, read, write, edit, glob, grep). `web_search` and
//!   `web_fetch` depend on [`RequestOptions::web_tools`]: with
//!   [`WebTools::Server`] (the backend is Anthropic's API) they are Anthropic
//!   server tools (`web_search_20250305`, `web_fetch_20250910`, with their
//!   domain filters and location passed through) that the provider runs,
//!   except one whose permission policy is `always_ask`, which is sent as a
//!   client tool so that the call can wait for a confirmation; with
//!   [`WebTools::Client`] (any other backend) both are client tools with
//!   inputs `{query}` and `{url}`, run by Logbook. Custom tools are sent as
//!   `{name, description, input_schema}`. MCP toolsets are not sent: the
//!   runner passes their definitions in [`RequestOptions::extra_tools`] once it
//!   has listed them. A disabled tool is never sent. The order is fixed
//!   (built-ins in [`BUILTIN_TOOL_ORDER`], then custom tools, then extra ones)
//!   so the cached prefix stays identical from one request to the next.
//! - **Prompt caching.** One `cache_control: {"type": "ephemeral"}` breakpoint
//!   on the last tool, one on the last system block and one on the last
//!   cacheable block of the last message (text that is not empty, not a
//!   thinking block), so every request reuses the previous one's prefix.
//!   Breakpoints already in the conversation are kept while the total stays
//!   within [`MAX_CACHE_BREAKPOINTS`]; beyond it the earliest are dropped.
//!   Breakpoints inside the caller's tool definitions are always dropped.
//! - **Thinking.** How a model takes the `thinking` parameter depends on the
//!   model ([`thinking_support`]). With [`Thinking::FromEffort`], a model that
//!   thinks adaptively (Claude Opus and Sonnet 4.6, Opus 4.7 and later,
//!   Mythos, the 5-series) is sent `thinking: {"type": "adaptive"}` and the
//!   agent's effort as `output_config: {"effort": ...}`: Opus 4.7 and later
//!   reject `{"type": "enabled", budget_tokens}` with a 400, and 4.6
//!   deprecates it. Older models get an extended-thinking budget from the
//!   effort: `low` none, `medium` 4,096, `high` 16,000, `xhigh` 24,000, `max`
//!   31,000 tokens, capped so that at least [`MIN_ANSWER_TOKENS`] of
//!   `max_tokens` remain for the answer, and left out when that leaves less
//!   than the API's minimum of 1,024. No effort, or one this code does not
//!   know, means no budget (and, for an adaptive model, no `output_config`:
//!   the model's default effort). [`Thinking::Disabled`] sends neither field:
//!   leaving `thinking` out is the one way to not think that every model
//!   accepts (adaptive-only models refuse `{"type": "disabled"}`).
//!
//! The conversation's images are held to the API's limits per request
//! ([`super::images`]): past them, the oldest images give way to a note.
//! A provider's tool call left without its result by a paused response that
//! was not continued is sent only while it is the last message.

use serde_json::{Map, Value, json};

/// The Messages API accepts at most this many `cache_control` breakpoints.
pub const MAX_CACHE_BREAKPOINTS: usize = 4;
/// The smallest `budget_tokens` the API accepts.
pub const MIN_THINKING_BUDGET: u32 = 1_024;
/// Tokens of `max_tokens` always left for the answer after thinking.
pub const MIN_ANSWER_TOKENS: u32 = 4_096;
/// The built-in tools in the order they are sent.
pub const BUILTIN_TOOL_ORDER: [&str; 8] = ["bash", "read", "write", "edit", "glob", "grep", "web_fetch", "web_search"];
/// The built-in toolset's `type` in agent tool entries.
pub const AGENT_TOOLSET_TYPE: &str = "agent_toolset_20260401";
/// The Messages API server tool behind the built-in `web_search`.
pub const WEB_SEARCH_TOOL_TYPE: &str = "web_search_20250305";
/// The Messages API server tool behind the built-in `web_fetch`.
pub const WEB_FETCH_TOOL_TYPE: &str = "web_fetch_20250910";

/// What of an agent a request needs. Tools are the resolved agent tool
/// entries exactly as the API stores and returns them
/// (`agent_toolset_20260401` with `default_config` and `configs`, `custom`,
/// `mcp_toolset`), kept as JSON so this module does not depend on the API's
/// types.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AgentView {
    /// The model id, e.g. `claude-sonnet-4-6`.
    pub model: String,
    /// `low`, `medium`, `high`, `xhigh` or `max`; `None` runs at the model's default.
    pub effort: Option<String>,
    pub system: Option<String>,
    pub tools: Vec<Value>,
    /// `fast` asks for fast mode (`speed: "fast"`); `None` or `standard`
    /// runs at standard speed.
    pub speed: Option<String>,
    /// Where inference may run (`us`, `global`); `None` leaves it to the
    /// workspace's default.
    pub inference_geo: Option<String>,
}

/// Request settings that are not part of the agent.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestOptions {
    pub max_tokens: u32,
    pub thinking: Thinking,
    /// System text sent after the agent's own system prompt (e.g. notes on the
    /// environment); empty strings are skipped.
    pub extra_system: Vec<String>,
    /// Complete tool definitions sent after the agent's tools (MCP tools).
    pub extra_tools: Vec<Value>,
    /// When the runner compacts the context; `None` never.
    pub compaction: Option<CompactionSettings>,
    /// Who runs `web_search` and `web_fetch`.
    pub web_tools: WebTools,
    /// The MCP server and tool each MCP tool name in `extra_tools` stands for
    /// (not sent: the runner maps the model's calls back with it).
    pub mcp_tools: Vec<McpToolName>,
    /// The built-in tools the `auto` policy allows without asking (the
    /// runner's `LOGBOOK_AUTO_ALLOW`): a web tool under `auto` outside it
    /// asks, so it is never the provider's server tool, which runs unasked.
    /// `None` (settings recorded before this existed): `auto` never asks.
    pub auto_allowed: Option<Vec<String>>,
}

/// The model's name of an MCP tool, and whose tool it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpToolName {
    /// The name in the tool definition (`mcp__server__tool`, made unique).
    pub name: String,
    /// The `mcp_servers[].name` of the agent.
    pub server: String,
    /// The tool's name on that server.
    pub tool: String,
}

/// Who runs the built-in web tools (`LOGBOOK_WEB_TOOLS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WebTools {
    /// The model provider, as Anthropic server tools (only Anthropic's API
    /// has them). Settings recorded before this option existed mean this.
    #[default]
    Server,
    /// Logbook, as ordinary client tools (`crate::tools::run`): for any other
    /// Anthropic-compatible backend.
    Client,
}

impl WebTools {
    /// The recorded name: `server` or `client`.
    pub fn as_str(self) -> &'static str {
        match self {
            WebTools::Server => "server",
            WebTools::Client => "client",
        }
    }

    /// From a recorded or configured name.
    pub fn parse(name: &str) -> Option<WebTools> {
        match name {
            "server" => Some(WebTools::Server),
            "client" => Some(WebTools::Client),
            _ => None,
        }
    }
}

/// When the context is compacted, in estimated tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionSettings {
    /// The model's context window.
    pub window_tokens: u64,
    /// A context at least this big is compacted before the next model call.
    pub trigger_tokens: u64,
    /// The newest turns worth about this many tokens are kept verbatim.
    pub keep_tokens: u64,
}

impl CompactionSettings {
    /// A window with the trigger and the kept part as percentages of it.
    pub fn from_percent(window_tokens: u64, trigger_percent: u64, keep_percent: u64) -> CompactionSettings {
        CompactionSettings {
            window_tokens,
            trigger_tokens: window_tokens.saturating_mul(trigger_percent) / 100,
            keep_tokens: window_tokens.saturating_mul(keep_percent) / 100,
        }
    }
}

impl Default for RequestOptions {
    fn default() -> RequestOptions {
        RequestOptions {
            max_tokens: super::config::DEFAULT_MAX_TOKENS,
            thinking: Thinking::FromEffort,
            extra_system: Vec::new(),
            extra_tools: Vec::new(),
            compaction: None,
            web_tools: WebTools::default(),
            mcp_tools: Vec::new(),
            auto_allowed: None,
        }
    }
}

/// Whether requests ask for extended thinking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Thinking {
    /// A budget chosen from the agent's effort (see the module docs).
    #[default]
    FromEffort,
    /// Never: neither `thinking` nor `output_config` is sent (endpoints
    /// without thinking, the summarizing request of a compaction). Leaving
    /// `thinking` out is accepted by every model, adaptive-only ones included.
    Disabled,
}

/// The Messages API request body (with `stream: true`) for one model call.
pub fn build_request(agent: &AgentView, conversation: &[Value], options: &RequestOptions) -> Value {
    let mut request = Map::new();
    request.insert("model".to_owned(), json!(agent.model));
    request.insert("max_tokens".to_owned(), json!(options.max_tokens));

    let mut tools = tool_definitions(&agent.tools, options.web_tools, options.auto_allowed.as_deref());
    tools.extend(options.extra_tools.iter().cloned());
    // The API refuses tool_use and tool_result blocks in a request that
    // defines no tools: a session whose tools were all removed still holds
    // its earlier calls, so they are defined as stubs the model may not call.
    let no_tools_left = tools.is_empty() && holds_tool_blocks(conversation);
    if no_tools_left {
        tools = removed_tool_stubs(conversation);
    }
    for tool in &mut tools {
        if let Value::Object(tool) = tool {
            tool.remove("cache_control");
        }
    }
    let mut n_breakpoints = 0;
    if let Some(Value::Object(last)) = tools.last_mut() {
        last.insert("cache_control".to_owned(), ephemeral());
        n_breakpoints += 1;
    }
    if !tools.is_empty() {
        request.insert("tools".to_owned(), Value::Array(tools));
    }

    let mut system: Vec<Value> = agent
        .system
        .iter()
        .chain(&options.extra_system)
        .filter(|text| !text.is_empty())
        .map(|text| json!({"type": "text", "text": text}))
        .collect();
    if let Some(Value::Object(last)) = system.last_mut() {
        last.insert("cache_control".to_owned(), ephemeral());
        n_breakpoints += 1;
    }
    if !system.is_empty() {
        request.insert("system".to_owned(), Value::Array(system));
    }

    let mut messages = conversation.to_vec();
    super::images::fit_images(&mut messages);
    drop_unanswered_server_calls(&mut messages);
    mark_last_message(&mut messages);
    limit_breakpoints(&mut messages, MAX_CACHE_BREAKPOINTS.saturating_sub(n_breakpoints));
    request.insert("messages".to_owned(), Value::Array(messages));

    match (options.thinking, thinking_support(&agent.model)) {
        (Thinking::Disabled, _) => {}
        (Thinking::FromEffort, support @ (ThinkingSupport::AdaptiveOnly | ThinkingSupport::AdaptiveOrBudget)) => {
            request.insert("thinking".to_owned(), json!({"type": "adaptive"}));
            if let Some(effort) = adaptive_effort(agent.effort.as_deref(), support) {
                request.insert("output_config".to_owned(), json!({"effort": effort}));
            }
        }
        (Thinking::FromEffort, ThinkingSupport::BudgetOnly) => {
            if let Some(budget) = thinking_budget(agent.effort.as_deref(), options.max_tokens) {
                request.insert("thinking".to_owned(), json!({"type": "enabled", "budget_tokens": budget}));
            }
        }
    }
    if no_tools_left {
        request.insert("tool_choice".to_owned(), json!({"type": "none"}));
    }
    // The agent's pins (behaviour digest §2): fast mode, and where
    // inference runs (its data residency).
    if agent.speed.as_deref() == Some(FAST_SPEED) {
        request.insert("speed".to_owned(), json!(FAST_SPEED));
    }
    if let Some(geo) = &agent.inference_geo {
        request.insert("inference_geo".to_owned(), json!(geo));
    }
    request.insert("stream".to_owned(), Value::Bool(true));
    Value::Object(request)
}

/// The `speed` of fast mode.
pub const FAST_SPEED: &str = "fast";

/// Stub definitions of removed tools, at most this many.
const MAX_REMOVED_TOOL_STUBS: usize = 128;

/// Whether any message holds a `tool_use` or `tool_result` block.
fn holds_tool_blocks(conversation: &[Value]) -> bool {
    conversation
        .iter()
        .filter_map(|message| message.get("content").and_then(Value::as_array))
        .flatten()
        .any(|block| matches!(block.get("type").and_then(Value::as_str), Some("tool_use" | "tool_result")))
}

/// A definition for each tool the conversation's `tool_use` blocks name (one
/// placeholder if a compaction left only results), saying it is gone; sent
/// with `tool_choice: none`, so none can be called.
fn removed_tool_stubs(conversation: &[Value]) -> Vec<Value> {
    let mut names: Vec<&str> = conversation
        .iter()
        .filter_map(|message| message.get("content").and_then(Value::as_array))
        .flatten()
        .filter(|block| block.get("type").and_then(Value::as_str) == Some("tool_use"))
        .filter_map(|block| block.get("name").and_then(Value::as_str))
        .collect();
    names.sort_unstable();
    names.dedup();
    names.truncate(MAX_REMOVED_TOOL_STUBS);
    if names.is_empty() {
        names.push("removed_tool");
    }
    names
        .into_iter()
        .map(|name| {
            json!({
                "name": name,
                "description": "This tool was removed from the agent and can no longer be called.",
                "input_schema": {"type": "object"},
            })
        })
        .collect()
}

/// `request` with tool use forbidden (`tool_choice: {"type": "none"}`), for
/// a request whose answer must be text: the summarizing request of a
/// compaction, which a tool call's preamble would otherwise answer. The tool
/// definitions stay: the conversation holds `tool_use` blocks, which the API
/// accepts only with their tools defined. A request without tools is
/// returned as it is (`tool_choice` needs tools).
pub fn without_tool_use(mut request: Value) -> Value {
    if let Value::Object(fields) = &mut request
        && fields.get("tools").and_then(Value::as_array).is_some_and(|tools| !tools.is_empty())
    {
        fields.insert("tool_choice".to_owned(), json!({"type": "none"}));
    }
    request
}

/// The Messages API tool definitions for an agent's tool entries (built-in
/// toolset and custom tools; MCP toolsets and unknown entries are skipped).
pub fn tool_definitions(entries: &[Value], web_tools: WebTools, auto_allowed: Option<&[String]>) -> Vec<Value> {
    let mut builtin = Vec::new();
    let mut custom = Vec::new();
    for entry in entries {
        match entry.get("type").and_then(Value::as_str) {
            Some(AGENT_TOOLSET_TYPE) => builtin.extend(builtin_definitions(entry, web_tools, auto_allowed)),
            Some("custom") => custom.extend(custom_definition(entry)),
            // MCP tools come from the server's own listing, through
            // `RequestOptions::extra_tools`; anything else is not a tool we send.
            Some(_) | None => {}
        }
    }
    builtin.extend(custom);
    builtin
}

fn ephemeral() -> Value {
    json!({"type": "ephemeral"})
}

/// The enabled built-in tools of one `agent_toolset_20260401` entry.
fn builtin_definitions(toolset: &Value, web_tools: WebTools, auto_allowed: Option<&[String]>) -> Vec<Value> {
    let default_config = toolset.get("default_config");
    let default_enabled =
        default_config.and_then(|config| config.get("enabled")).and_then(Value::as_bool).unwrap_or(true);
    let default_policy = default_config.and_then(|config| config.pointer("/permission_policy/type"));
    let configs = toolset.get("configs").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let mut definitions = Vec::new();
    for name in BUILTIN_TOOL_ORDER {
        let config = configs.iter().find(|config| config.get("name").and_then(Value::as_str) == Some(name));
        let enabled =
            config.and_then(|config| config.get("enabled")).and_then(Value::as_bool).unwrap_or(default_enabled);
        let policy = config.and_then(|config| config.pointer("/permission_policy/type")).or(default_policy);
        // A provider's server tool runs without asking anyone.
        let asks = match policy.and_then(Value::as_str) {
            Some("always_ask") => true,
            Some("auto") => auto_allowed.is_some_and(|allowed| !allowed.iter().any(|tool| tool == name)),
            Some(_) | None => false,
        };
        let web_tools = if asks { WebTools::Client } else { web_tools };
        if enabled && let Some(definition) = builtin_definition(name, config, web_tools) {
            definitions.push(definition);
        }
    }
    definitions
}

/// The definition of one built-in tool, with its config's extras applied.
fn builtin_definition(name: &str, config: Option<&Value>, web_tools: WebTools) -> Option<Value> {
    let (description, schema) = match (name, web_tools) {
        ("bash", _) => (BASH_DESCRIPTION, bash_schema()),
        ("read", _) => (READ_DESCRIPTION, read_schema()),
        ("write", _) => (WRITE_DESCRIPTION, write_schema()),
        ("edit", _) => (EDIT_DESCRIPTION, edit_schema()),
        ("glob", _) => (GLOB_DESCRIPTION, glob_schema()),
        ("grep", _) => (GREP_DESCRIPTION, grep_schema()),
        ("web_search", WebTools::Server) => {
            return Some(server_tool(WEB_SEARCH_TOOL_TYPE, name, config, &WEB_SEARCH_EXTRAS));
        }
        ("web_fetch", WebTools::Server) => {
            return Some(server_tool(WEB_FETCH_TOOL_TYPE, name, config, &WEB_FETCH_EXTRAS));
        }
        ("web_search", WebTools::Client) => (WEB_SEARCH_DESCRIPTION, web_search_schema()),
        ("web_fetch", WebTools::Client) => (WEB_FETCH_DESCRIPTION, web_fetch_schema()),
        _ => return None,
    };
    Some(json!({"name": name, "description": description, "input_schema": schema}))
}

/// Config fields passed through to the `web_search` server tool.
const WEB_SEARCH_EXTRAS: [&str; 3] = ["allowed_domains", "blocked_domains", "user_location"];
/// Config fields passed through to the `web_fetch` server tool.
const WEB_FETCH_EXTRAS: [&str; 3] = ["allowed_domains", "blocked_domains", "max_content_tokens"];

fn server_tool(kind: &str, name: &str, config: Option<&Value>, extras: &[&str]) -> Value {
    let mut tool = Map::new();
    tool.insert("type".to_owned(), json!(kind));
    tool.insert("name".to_owned(), json!(name));
    for extra in extras {
        if let Some(value) = config.and_then(|config| config.get(*extra)).filter(|value| !value.is_null()) {
            tool.insert((*extra).to_owned(), value.clone());
        }
    }
    Value::Object(tool)
}

fn custom_definition(entry: &Value) -> Option<Value> {
    let name = entry.get("name").and_then(Value::as_str)?;
    let mut tool = Map::new();
    tool.insert("name".to_owned(), json!(name));
    if let Some(description) = entry.get("description").and_then(Value::as_str) {
        tool.insert("description".to_owned(), json!(description));
    }
    let schema = entry.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object"}));
    tool.insert("input_schema".to_owned(), schema);
    Some(Value::Object(tool))
}

/// Takes out of every assistant message but the conversation's last the
/// provider's tool calls (`server_tool_use`) without a result block in that
/// message. A paused response (`pause_turn`) that was not continued (an
/// interrupt, the continuation limit) leaves one, and the API takes a call
/// without its result only in the last message, to continue it; anywhere
/// else every later request would be refused. A message left empty says it
/// was interrupted.
fn drop_unanswered_server_calls(messages: &mut [Value]) {
    let before_last = messages.len().saturating_sub(1);
    for message in &mut messages[..before_last] {
        if message.get("role").and_then(Value::as_str) != Some("assistant") {
            continue;
        }
        let Some(Value::Array(blocks)) = message.get_mut("content") else { continue };
        let is_result = |block: &Value| {
            block.get("type").and_then(Value::as_str).is_some_and(|kind| kind.ends_with("_tool_result"))
        };
        let answered: Vec<String> = blocks
            .iter()
            .filter(|block| is_result(block))
            .filter_map(|block| block.get("tool_use_id").and_then(Value::as_str).map(str::to_owned))
            .collect();
        let unanswered = |block: &Value| {
            block.get("type").and_then(Value::as_str) == Some("server_tool_use")
                && !block.get("id").and_then(Value::as_str).is_some_and(|id| answered.iter().any(|a| a == id))
        };
        if !blocks.iter().any(unanswered) {
            continue;
        }
        blocks.retain(|block| !unanswered(block));
        if blocks.is_empty() {
            blocks.push(json!({"type": "text", "text": "(interrupted)"}));
        }
    }
}

/// Puts a breakpoint on the last cacheable block of the last message.
fn mark_last_message(messages: &mut [Value]) {
    let Some(Value::Object(message)) = messages.last_mut() else { return };
    let Some(content) = message.get_mut("content") else { return };
    if let Value::String(text) = content {
        if text.is_empty() {
            return;
        }
        *content = json!([{"type": "text", "text": text}]);
    }
    let Value::Array(blocks) = content else { return };
    let cacheable = blocks.iter_mut().rev().find_map(|block| match block {
        Value::Object(block) if is_cacheable(block) => Some(block),
        Value::Object(_) | Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) | Value::Array(_) => None,
    });
    if let Some(block) = cacheable {
        block.insert("cache_control".to_owned(), ephemeral());
    }
}

/// Whether the API accepts `cache_control` on a block: not on thinking
/// blocks, not on empty text.
fn is_cacheable(block: &Map<String, Value>) -> bool {
    match block.get("type").and_then(Value::as_str) {
        Some("thinking" | "redacted_thinking") | None => false,
        Some("text") => block.get("text").and_then(Value::as_str).is_some_and(|text| !text.is_empty()),
        Some(_) => true,
    }
}

/// Drops the earliest breakpoints of the conversation until at most `allowed` remain.
fn limit_breakpoints(messages: &mut [Value], allowed: usize) {
    let mut marked = Vec::new();
    for (message_idx, message) in messages.iter().enumerate() {
        let Some(blocks) = message.get("content").and_then(Value::as_array) else { continue };
        for (block_idx, block) in blocks.iter().enumerate() {
            if block.get("cache_control").is_some() {
                marked.push((message_idx, block_idx, None));
            }
            // Blocks nested in a tool result may carry breakpoints too.
            let nested = block.get("content").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            for (nested_idx, nested) in nested.iter().enumerate() {
                if nested.get("cache_control").is_some() {
                    marked.push((message_idx, block_idx, Some(nested_idx)));
                }
            }
        }
    }
    let excess = marked.len().saturating_sub(allowed);
    for (message_idx, block_idx, nested_idx) in marked.into_iter().take(excess) {
        let block = messages
            .get_mut(message_idx)
            .and_then(|message| message.get_mut("content"))
            .and_then(|content| content.get_mut(block_idx));
        let target = match nested_idx {
            None => block,
            Some(nested_idx) => block.and_then(|block| block.get_mut("content")).and_then(|c| c.get_mut(nested_idx)),
        };
        if let Some(Value::Object(target)) = target {
            target.remove("cache_control");
        }
    }
}

/// How a model takes the `thinking` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThinkingSupport {
    /// Only `{"type": "adaptive"}`, with the effort in `output_config`:
    /// `{"type": "enabled", budget_tokens}` and `{"type": "disabled"}` are
    /// refused with a 400 (Claude Opus 4.7 and later, Mythos, the 5-series).
    AdaptiveOnly,
    /// Adaptive thinking, which Logbook uses, or the deprecated extended
    /// thinking budget (Claude Opus 4.6, Sonnet 4.6).
    AdaptiveOrBudget,
    /// Only an extended-thinking budget (Claude 4.5 and earlier, and any
    /// model that is not a Claude id).
    BudgetOnly,
}

/// The first Claude version (major, minor) that thinks adaptively.
pub const FIRST_ADAPTIVE_VERSION: (u32, u32) = (4, 6);
/// The first Claude version (major, minor) that refuses a thinking budget.
pub const FIRST_ADAPTIVE_ONLY_VERSION: (u32, u32) = (4, 7);
/// Claude families whose ids carry no version and that think adaptively
/// only (`claude-mythos-preview`).
pub const ADAPTIVE_ONLY_FAMILIES: [&str; 1] = ["mythos"];
/// The effort levels of `output_config.effort`.
pub const EFFORT_LEVELS: [&str; 5] = ["low", "medium", "high", "xhigh", "max"];

/// How `model` takes the `thinking` parameter, from its id.
///
/// A Claude id (`claude-<family>-<major>[-<minor>][-<date>]`, also inside a
/// cloud provider's id such as `anthropic.claude-opus-4-7-v1:0` or
/// `claude-opus-4-7@20260101`) is placed by its version against
/// [`FIRST_ADAPTIVE_VERSION`] and [`FIRST_ADAPTIVE_ONLY_VERSION`]; a family
/// in [`ADAPTIVE_ONLY_FAMILIES`] is adaptive-only whatever follows it. The
/// defaults for ids this cannot place, and why:
/// - A Claude id in the old naming (`claude-3-5-sonnet-...`, `claude-2.1`) is
///   budget-only: those models predate adaptive thinking.
/// - A Claude id with a family but no version Logbook can read is
///   adaptive-only: every known model is placed by its version, so an
///   unreadable one is most likely a newer model, and every Claude model
///   since 4.7 refuses a budget.
/// - Any other id (another Anthropic-compatible backend) is budget-only: the
///   compatible APIs implement the original `enabled` form, and it is what
///   Logbook always sent them.
pub fn thinking_support(model: &str) -> ThinkingSupport {
    const CLAUDE: &str = "claude-";
    let model = model.to_ascii_lowercase();
    let Some(start) = model.find(CLAUDE) else { return ThinkingSupport::BudgetOnly };
    let mut parts = model[start + CLAUDE.len()..].split(|c: char| !c.is_ascii_alphanumeric());
    let family = parts.next().unwrap_or_default();
    if family.starts_with(|c: char| c.is_ascii_digit()) {
        return ThinkingSupport::BudgetOnly;
    }
    if ADAPTIVE_ONLY_FAMILIES.contains(&family) {
        return ThinkingSupport::AdaptiveOnly;
    }
    // A version number has one or two digits; a longer number is a date
    // (`claude-sonnet-4-20250514` is 4.0).
    let number = |part: Option<&str>| part.filter(|part| part.len() <= 2).and_then(|part| part.parse::<u32>().ok());
    let Some(major) = number(parts.next()) else { return ThinkingSupport::AdaptiveOnly };
    let version = (major, number(parts.next()).unwrap_or(0));
    if version >= FIRST_ADAPTIVE_ONLY_VERSION {
        ThinkingSupport::AdaptiveOnly
    } else if version >= FIRST_ADAPTIVE_VERSION {
        ThinkingSupport::AdaptiveOrBudget
    } else {
        ThinkingSupport::BudgetOnly
    }
}

/// The `output_config.effort` for an adaptive model, or `None` (the model's
/// default) for no effort or one this code does not know. `xhigh` came with
/// Opus 4.7: a 4.6 model is sent `high` instead of a level it may refuse.
fn adaptive_effort(effort: Option<&str>, support: ThinkingSupport) -> Option<&'static str> {
    let effort = EFFORT_LEVELS.into_iter().find(|level| Some(*level) == effort)?;
    match (effort, support) {
        ("xhigh", ThinkingSupport::AdaptiveOrBudget) => Some("high"),
        (effort, ThinkingSupport::AdaptiveOnly | ThinkingSupport::AdaptiveOrBudget | ThinkingSupport::BudgetOnly) => {
            Some(effort)
        }
    }
}

/// The extended-thinking budget for an effort, or `None` for no thinking.
fn thinking_budget(effort: Option<&str>, max_tokens: u32) -> Option<u32> {
    let wanted = match effort? {
        "medium" => 4_096,
        "high" => 16_000,
        "xhigh" => 24_000,
        "max" => 31_000,
        // `low` thinks not at all; unknown levels are treated the same.
        _ => return None,
    };
    let budget = wanted.min(max_tokens.saturating_sub(MIN_ANSWER_TOKENS));
    (budget >= MIN_THINKING_BUDGET).then_some(budget)
}

const BASH_DESCRIPTION: &str = "Run a command in a persistent bash shell in the session's sandbox. \
The shell keeps its state between calls: the working directory, environment variables, functions \
and background jobs survive, so `cd` and `export` carry over. Commands run with no stdin and \
stderr merged into stdout; the result is the output, and a non-zero exit status makes it an \
error. Long output keeps only its tail. A command that runs longer than its timeout (default \
120 seconds, set with timeout_ms) is killed together with the shell, and the next call gets a \
fresh shell. Pass restart: true without a command to replace a stuck shell. Prefer the read, \
write, edit, glob and grep tools for files; use bash to build, test, run programs and use git.";

const READ_DESCRIPTION: &str = "Read a file from the workspace. file_path is relative to the \
working directory, or absolute inside it. Text files are returned as UTF-8 text; view_range \
[start_line, end_line] (1-based, inclusive; end_line 0 or negative reads to the end) returns \
part of a large file. Images (png, jpeg, gif, webp) are returned as images and PDFs as \
documents; view_range does not apply to them. Very large text files are refused: read a range, \
or use bash with head, tail or grep.";

const WRITE_DESCRIPTION: &str = "Write a file in the workspace, replacing its whole content, and \
create missing parent directories. file_path is relative to the working directory, or absolute \
inside it. Read an existing file before overwriting it; to change part of a file prefer edit.";

const EDIT_DESCRIPTION: &str = "Replace an exact string in a file of the workspace. old_string \
must match the file's text exactly, including whitespace and indentation, and must occur exactly \
once unless replace_all is true, in which case every occurrence is replaced. Include enough \
surrounding lines in old_string to make it unique. new_string must differ from old_string. The \
result says how many occurrences were replaced.";

const GLOB_DESCRIPTION: &str = "Find files by name with a glob pattern such as `**/*.rs` or \
`src/**/test_*.py` (`**` matches any number of directories). Searches the working directory, or \
path when given. Returns matching paths, most recently modified first, at most 200.";

const GREP_DESCRIPTION: &str = "Search file contents with a regular expression (ripgrep syntax). \
Searches the working directory, or path (a directory or one file) when given, skipping binary \
files and .git. Returns matching lines as `path:line:text`; long output is truncated, so narrow \
the pattern or the path when there are many matches.";

const WEB_SEARCH_DESCRIPTION: &str = "Search the web. Returns result titles, URLs and snippets for the \
query; fetch a result with web_fetch to read it. Some domains may be excluded by the agent's \
configuration.";

const WEB_FETCH_DESCRIPTION: &str = "Fetch a web page or PDF by URL and return its readable content \
(HTML as text, PDFs as documents). Only http and https URLs of public hosts; the agent's \
configuration may allow or block domains.";

fn web_search_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "What to search for."}
        },
        "required": ["query"]
    })
}

fn web_fetch_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "url": {"type": "string", "description": "The http or https URL to fetch."}
        },
        "required": ["url"]
    })
}

fn bash_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "command": {"type": "string", "description": "The command to run. Required unless restart is true."},
            "restart": {"type": "boolean", "description": "Replace the shell with a fresh one instead of running a command."},
            "timeout_ms": {"type": "integer", "minimum": 0, "description": "Time limit in milliseconds; 0 or absent uses the default of 120000."}
        }
    })
}

fn read_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "file_path": {"type": "string", "description": "The file to read."},
            "view_range": {
                "type": "array",
                "items": {"type": "integer"},
                "minItems": 2,
                "maxItems": 2,
                "description": "[start_line, end_line], 1-based and inclusive; end_line <= 0 reads to the end."
            }
        },
        "required": ["file_path"]
    })
}

fn write_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "file_path": {"type": "string", "description": "The file to write."},
            "content": {"type": "string", "description": "The file's complete new content."}
        },
        "required": ["file_path", "content"]
    })
}

fn edit_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "file_path": {"type": "string", "description": "The file to edit."},
            "old_string": {"type": "string", "description": "The exact text to replace."},
            "new_string": {"type": "string", "description": "The text to put in its place."},
            "replace_all": {"type": "boolean", "description": "Replace every occurrence instead of requiring exactly one."}
        },
        "required": ["file_path", "old_string", "new_string"]
    })
}

fn glob_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "pattern": {"type": "string", "description": "The glob pattern, e.g. **/*.ts."},
            "path": {"type": "string", "description": "The directory to search; the working directory when absent."}
        },
        "required": ["pattern"]
    })
}

fn grep_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "pattern": {"type": "string", "description": "The regular expression to search for."},
            "path": {"type": "string", "description": "The directory or file to search; the working directory when absent."}
        },
        "required": ["pattern"]
    })
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
