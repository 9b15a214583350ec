//! The settings a model call is made with, as the log records them
//! (`x.agent_config`), and the request rebuilt from them.
//!
//! The runner records the session's agent and its [`RequestOptions`] before a
//! model call whenever they differ from the last ones recorded, and builds the
//! call's request from the *recorded* JSON with [`request_from`]. The state
//! endpoint (`/x/v1/sessions/{id}/state`) and `logbook show` use the same
//! function on the projected state, so "what the model saw at seq N" is
//! computed by the code that sent it.

use serde_json::{Value, json};

use logbook_replay::state::AgentSettings;

use super::request::{AgentView, CompactionSettings, McpToolName, RequestOptions, Thinking, WebTools, build_request};

/// The options as recorded: every field of [`RequestOptions`].
pub fn options_json(options: &RequestOptions) -> Value {
    let thinking = match options.thinking {
        Thinking::FromEffort => "from_effort",
        Thinking::Disabled => "disabled",
    };
    let compaction = options.compaction.map(|c| {
        json!({
            "window_tokens": c.window_tokens,
            "trigger_tokens": c.trigger_tokens,
            "keep_tokens": c.keep_tokens,
        })
    });
    json!({
        "max_tokens": options.max_tokens,
        "thinking": thinking,
        "extra_system": options.extra_system,
        "extra_tools": options.extra_tools,
        "compaction": compaction,
        "web_tools": options.web_tools.as_str(),
        "auto_allowed": options.auto_allowed,
        "mcp_tools": options
            .mcp_tools
            .iter()
            .map(|t| json!({"name": t.name, "server": t.server, "tool": t.tool}))
            .collect::<Vec<Value>>(),
    })
}

/// [`RequestOptions`] from their recorded JSON; missing or malformed fields
/// take their defaults.
pub fn options_from(value: &Value) -> RequestOptions {
    let defaults = RequestOptions::default();
    let strings = |key: &str| -> Vec<String> {
        value
            .get(key)
            .and_then(Value::as_array)
            .map_or_else(Vec::new, |items| items.iter().filter_map(Value::as_str).map(str::to_owned).collect())
    };
    let compaction = value.get("compaction").and_then(|c| {
        Some(CompactionSettings {
            window_tokens: c.get("window_tokens")?.as_u64()?,
            trigger_tokens: c.get("trigger_tokens")?.as_u64()?,
            keep_tokens: c.get("keep_tokens")?.as_u64()?,
        })
    });
    RequestOptions {
        max_tokens: value
            .get("max_tokens")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(defaults.max_tokens),
        thinking: match value.get("thinking").and_then(Value::as_str) {
            Some("disabled") => Thinking::Disabled,
            Some(_) | None => Thinking::FromEffort,
        },
        extra_system: strings("extra_system"),
        extra_tools: value.get("extra_tools").and_then(Value::as_array).cloned().unwrap_or_default(),
        compaction,
        // Settings recorded before the option existed sent server tools.
        web_tools: value.get("web_tools").and_then(Value::as_str).and_then(WebTools::parse).unwrap_or_default(),
        mcp_tools: value
            .get("mcp_tools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|t| {
                let field = |name: &str| t.get(name).and_then(Value::as_str).map(str::to_owned);
                Some(McpToolName { name: field("name")?, server: field("server")?, tool: field("tool")? })
            })
            .collect(),
        auto_allowed: value
            .get("auto_allowed")
            .and_then(Value::as_array)
            .map(|tools| tools.iter().filter_map(Value::as_str).map(str::to_owned).collect()),
    }
}

/// The request's view of an agent from its API JSON (the session's `agent`).
pub fn agent_view(agent: &Value) -> AgentView {
    AgentView {
        model: agent.pointer("/model/id").and_then(Value::as_str).unwrap_or_default().to_owned(),
        effort: agent.pointer("/model/effort/type").and_then(Value::as_str).map(str::to_owned),
        system: agent.get("system").and_then(Value::as_str).map(str::to_owned),
        tools: agent.get("tools").and_then(Value::as_array).cloned().unwrap_or_default(),
        speed: agent.pointer("/model/speed").and_then(Value::as_str).map(str::to_owned),
        inference_geo: agent.pointer("/model/inference_geo").and_then(Value::as_str).map(str::to_owned),
    }
}

/// The model request for `messages` under recorded `settings`.
pub fn request_from(settings: &AgentSettings, messages: &[Value]) -> Value {
    build_request(&agent_view(&settings.agent), messages, &options_from(&settings.options))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip_through_their_json() {
        let options = RequestOptions {
            max_tokens: 1234,
            thinking: Thinking::Disabled,
            extra_system: vec!["env note".into()],
            extra_tools: vec![json!({"name": "mcp__x__y", "input_schema": {"type": "object"}})],
            compaction: Some(CompactionSettings::from_percent(1000, 80, 20)),
            web_tools: WebTools::Client,
            mcp_tools: vec![McpToolName { name: "mcp__x__y".into(), server: "x".into(), tool: "y".into() }],
            auto_allowed: Some(vec!["read".into()]),
        };
        assert_eq!(options_from(&options_json(&options)), options);
        assert_eq!(options_from(&options_json(&RequestOptions::default())), RequestOptions::default());
    }
}
