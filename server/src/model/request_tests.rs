//! Tests of `build_request`: the exact body for a representative agent,
//! cache breakpoint placement and limits, disabled tools, thinking per model.

use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use super::*;

/// An agent as the API stores it: the toolset with bash disabled and
/// web_search configured, plus a custom tool and an MCP toolset.
fn agent() -> AgentView {
    AgentView {
        model: "claude-sonnet-4-6".to_owned(),
        effort: Some("high".to_owned()),
        system: Some("You are a careful engineer.".to_owned()),
        tools: vec![
            json!({
                "type": "agent_toolset_20260401",
                "default_config": {"enabled": true, "permission_policy": {"type": "always_allow"}},
                "configs": [
                    {"name": "bash", "type": "bash", "enabled": false, "permission_policy": {"type": "always_allow"}},
                    {"name": "web_search", "type": "web_search", "enabled": true,
                        "permission_policy": {"type": "always_ask"},
                        "allowed_domains": ["docs.rs"],
                        "user_location": {"type": "approximate", "city": "Berlin", "country": "DE"}},
                    {"name": "web_fetch", "type": "web_fetch", "enabled": true,
                        "permission_policy": {"type": "always_allow"},
                        "blocked_domains": ["example.com"], "max_content_tokens": 5000, "url_sources": null}
                ]
            }),
            json!({"type": "custom", "name": "get_weather", "description": "Weather for a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}),
            json!({"type": "mcp_toolset", "mcp_server_name": "github",
                "default_config": {"enabled": true, "permission_policy": {"type": "always_ask"}}, "configs": []}),
        ],
        speed: None,
        inference_geo: None,
    }
}

fn conversation() -> Vec<Value> {
    vec![
        json!({"role": "user", "content": [{"type": "text", "text": "List the files."}]}),
        json!({"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Use glob.", "signature": "sig"},
            {"type": "tool_use", "id": "toolu_1", "name": "glob", "input": {"pattern": "*"}}
        ]}),
        json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "a.rs"}]}
        ]}),
    ]
}

fn names(request: &Value) -> Vec<&str> {
    request["tools"].as_array().expect("tools").iter().map(|tool| tool["name"].as_str().expect("a name")).collect()
}

/// Every `cache_control` in the request, as JSON pointers.
fn breakpoints(value: &Value, path: &str, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let child_path = format!("{path}/{key}");
                if key == "cache_control" {
                    found.push(child_path);
                } else {
                    breakpoints(child, &child_path, found);
                }
            }
        }
        Value::Array(items) => {
            for (idx, child) in items.iter().enumerate() {
                breakpoints(child, &format!("{path}/{idx}"), found);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
    }
}

fn all_breakpoints(request: &Value) -> Vec<String> {
    let mut found = Vec::new();
    breakpoints(request, "", &mut found);
    found
}

#[test]
fn representative_agent_gives_the_exact_request() {
    // Goal: pin the whole body once, so any change to tool definitions,
    // ordering or caching is a visible diff.
    let request = build_request(&agent(), &conversation(), &RequestOptions::default());
    let expected = json!({
        "model": "claude-sonnet-4-6",
        "max_tokens": 32000,
        "stream": true,
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "high"},
        "system": [{"type": "text", "text": "You are a careful engineer.", "cache_control": {"type": "ephemeral"}}],
        "tools": [
            {"name": "read", "description": READ_DESCRIPTION, "input_schema": read_schema()},
            {"name": "write", "description": WRITE_DESCRIPTION, "input_schema": write_schema()},
            {"name": "edit", "description": EDIT_DESCRIPTION, "input_schema": edit_schema()},
            {"name": "glob", "description": GLOB_DESCRIPTION, "input_schema": glob_schema()},
            {"name": "grep", "description": GREP_DESCRIPTION, "input_schema": grep_schema()},
            {"type": "web_fetch_20250910", "name": "web_fetch", "blocked_domains": ["example.com"],
                "max_content_tokens": 5000},
            // Asks before every call, so Logbook runs it (the provider would not ask).
            {"name": "web_search", "description": WEB_SEARCH_DESCRIPTION, "input_schema": web_search_schema()},
            {"name": "get_weather", "description": "Weather for a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                "cache_control": {"type": "ephemeral"}}
        ],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "List the files."}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Use glob.", "signature": "sig"},
                {"type": "tool_use", "id": "toolu_1", "name": "glob", "input": {"pattern": "*"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "a.rs"}],
                    "cache_control": {"type": "ephemeral"}}
            ]}
        ]
    });
    assert_eq!(request, expected);
}

#[test]
fn schemas_match_the_built_in_tool_inputs() {
    // Goal: the schemas name exactly the fields of the reference's §4.4.
    let properties = |schema: Value| {
        let mut keys: Vec<String> = schema["properties"].as_object().expect("properties").keys().cloned().collect();
        keys.sort();
        (keys, schema.get("required").cloned().unwrap_or(json!([])))
    };
    assert_eq!(properties(bash_schema()), (vec!["command".into(), "restart".into(), "timeout_ms".into()], json!([])));
    assert_eq!(properties(read_schema()), (vec!["file_path".into(), "view_range".into()], json!(["file_path"])));
    assert_eq!(
        properties(write_schema()),
        (vec!["content".into(), "file_path".into()], json!(["file_path", "content"]))
    );
    assert_eq!(
        properties(edit_schema()),
        (
            vec!["file_path".into(), "new_string".into(), "old_string".into(), "replace_all".into()],
            json!(["file_path", "old_string", "new_string"])
        )
    );
    assert_eq!(properties(glob_schema()), (vec!["path".into(), "pattern".into()], json!(["pattern"])));
    assert_eq!(properties(grep_schema()), (vec!["path".into(), "pattern".into()], json!(["pattern"])));
}

#[test]
fn disabled_tools_are_not_sent() {
    // Goal: per-tool `enabled` wins over the toolset default, both ways.
    let toolset = json!({
        "type": "agent_toolset_20260401",
        "default_config": {"enabled": false, "permission_policy": {"type": "always_allow"}},
        "configs": [
            {"name": "read", "type": "read", "enabled": true, "permission_policy": {"type": "always_ask"}},
            {"name": "web_search", "type": "web_search", "enabled": true, "permission_policy": {"type": "auto"}}
        ]
    });
    let agent = AgentView { model: "m".into(), tools: vec![toolset], ..AgentView::default() };
    let request = build_request(&agent, &[], &RequestOptions::default());
    assert_eq!(names(&request), vec!["read", "web_search"]);

    let everything_off = json!({"type": "agent_toolset_20260401",
        "default_config": {"enabled": false, "permission_policy": {"type": "always_allow"}}, "configs": []});
    let agent = AgentView { model: "m".into(), tools: vec![everything_off], ..AgentView::default() };
    let request = build_request(&agent, &[], &RequestOptions::default());
    assert_eq!(request.get("tools"), None);

    // An entry without default_config (request shorthand) enables everything.
    let shorthand = json!({"type": "agent_toolset_20260401"});
    let agent = AgentView { model: "m".into(), tools: vec![shorthand], ..AgentView::default() };
    let request = build_request(&agent, &[], &RequestOptions::default());
    assert_eq!(names(&request), BUILTIN_TOOL_ORDER.to_vec());
}

#[test]
fn extra_tools_follow_the_agent_tools_and_carry_the_breakpoint() {
    let options = RequestOptions {
        extra_tools: vec![json!({"name": "github__list_issues", "description": "List issues",
            "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}})],
        ..RequestOptions::default()
    };
    let request = build_request(&agent(), &[], &options);
    let tools = request["tools"].as_array().expect("tools");
    assert_eq!(tools.last().map(|tool| &tool["name"]), Some(&json!("github__list_issues")));
    assert_eq!(all_breakpoints(&request), vec!["/system/0/cache_control".to_owned(), "/tools/8/cache_control".into()]);
}

#[test]
fn breakpoints_skip_thinking_and_empty_text_and_convert_string_content() {
    // Goal: the last message's breakpoint lands on the last block the API
    // accepts one on, and string content becomes a block list to carry it.
    let agent = AgentView { model: "m".into(), ..AgentView::default() };
    let options = RequestOptions::default();

    let string_content = [json!({"role": "user", "content": "Hi"})];
    let request = build_request(&agent, &string_content, &options);
    assert_eq!(
        request["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}]}])
    );

    let assistant_last = [
        json!({"role": "user", "content": "Hi"}),
        json!({"role": "assistant", "content": [
            {"type": "text", "text": "Looking"},
            {"type": "text", "text": ""},
            {"type": "thinking", "thinking": "hmm", "signature": "s"}
        ]}),
    ];
    let request = build_request(&agent, &assistant_last, &options);
    assert_eq!(all_breakpoints(&request), vec!["/messages/1/content/0/cache_control".to_owned()]);

    let nothing_cacheable = [json!({"role": "user", "content": ""})];
    let request = build_request(&agent, &nothing_cacheable, &options);
    assert_eq!(all_breakpoints(&request), Vec::<String>::new());
    assert_eq!(request.get("system"), None);
    assert_eq!(request.get("tools"), None);
}

#[test]
fn never_more_than_four_breakpoints() {
    // Goal: breakpoints the conversation already carries are kept while they
    // fit and dropped earliest-first when they do not. Method: tools and system
    // take two, the last message one, leaving room for one of the three old ones.
    let marked = |text: &str| json!({"type": "text", "text": text, "cache_control": {"type": "ephemeral"}});
    let conversation = vec![
        json!({"role": "user", "content": [marked("one")]}),
        json!({"role": "assistant", "content": [marked("two")]}),
        json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [marked("three")]}]}),
        json!({"role": "assistant", "content": [{"type": "text", "text": "four"}]}),
        json!({"role": "user", "content": [{"type": "text", "text": "five"}]}),
    ];
    let request = build_request(&agent(), &conversation, &RequestOptions::default());
    assert_eq!(
        all_breakpoints(&request),
        vec![
            "/messages/2/content/0/content/0/cache_control".to_owned(),
            "/messages/4/content/0/cache_control".into(),
            "/system/0/cache_control".into(),
            "/tools/7/cache_control".into(),
        ]
    );

    // Without tools and system, three old ones fit next to the new one.
    let bare = AgentView { model: "m".into(), ..AgentView::default() };
    let request = build_request(&bare, &conversation, &RequestOptions::default());
    assert_eq!(all_breakpoints(&request).len(), MAX_CACHE_BREAKPOINTS);
}

#[test]
fn extra_system_blocks_follow_the_agent_prompt() {
    let options = RequestOptions {
        extra_system: vec![String::new(), "The workspace is /workspace.".to_owned()],
        ..RequestOptions::default()
    };
    let request = build_request(&agent(), &[], &options);
    assert_eq!(
        request["system"],
        json!([
            {"type": "text", "text": "You are a careful engineer."},
            {"type": "text", "text": "The workspace is /workspace.", "cache_control": {"type": "ephemeral"}}
        ])
    );
}

#[test]
fn thinking_budget_follows_effort_and_leaves_room_to_answer() {
    let budget = |effort: Option<&str>, max_tokens: u32, thinking: Thinking| {
        let agent = AgentView { model: "m".into(), effort: effort.map(str::to_owned), ..AgentView::default() };
        let options = RequestOptions { max_tokens, thinking, ..RequestOptions::default() };
        build_request(&agent, &[], &options).get("thinking").cloned()
    };
    let enabled = |tokens: u32| Some(json!({"type": "enabled", "budget_tokens": tokens}));
    assert_eq!(budget(Some("low"), 32_000, Thinking::FromEffort), None);
    assert_eq!(budget(Some("medium"), 32_000, Thinking::FromEffort), enabled(4_096));
    assert_eq!(budget(Some("high"), 32_000, Thinking::FromEffort), enabled(16_000));
    assert_eq!(budget(Some("xhigh"), 32_000, Thinking::FromEffort), enabled(24_000));
    assert_eq!(budget(Some("max"), 32_000, Thinking::FromEffort), enabled(27_904));
    assert_eq!(budget(Some("max"), 64_000, Thinking::FromEffort), enabled(31_000));
    assert_eq!(budget(Some("high"), 8_192, Thinking::FromEffort), enabled(4_096));
    assert_eq!(budget(Some("high"), 5_000, Thinking::FromEffort), None);
    assert_eq!(budget(Some("high"), 32_000, Thinking::Disabled), None);
    assert_eq!(budget(None, 32_000, Thinking::FromEffort), None);
    assert_eq!(budget(Some("turbo"), 32_000, Thinking::FromEffort), None);
}

#[test]
fn unknown_and_malformed_tool_entries_are_skipped() {
    let agent = AgentView {
        model: "m".into(),
        tools: vec![json!("bash"), json!({"type": "future_toolset"}), json!({"type": "custom"}), json!(null)],
        ..AgentView::default()
    };
    assert_eq!(build_request(&agent, &[], &RequestOptions::default()).get("tools"), None);
}

#[test]
fn web_tools_are_server_tools_only_when_the_provider_runs_them() {
    // Goal: with an Anthropic backend web tools are the provider's server
    // tools (their domain settings passed through), except one that must ask
    // first; with any other backend both are client tools Logbook runs.
    let toolset = |policy: &str| {
        json!({"type": "agent_toolset_20260401",
        "default_config": {"enabled": false, "permission_policy": {"type": "always_allow"}},
        "configs": [
            {"name": "web_fetch", "type": "web_fetch", "enabled": true, "permission_policy": {"type": policy},
                "allowed_domains": ["docs.rs"]},
            {"name": "web_search", "type": "web_search", "enabled": true,
                "permission_policy": {"type": "always_allow"}, "blocked_domains": ["example.com"]}
        ]})
    };
    let agent = |policy: &str| AgentView { model: "m".into(), tools: vec![toolset(policy)], ..AgentView::default() };
    let server = RequestOptions { web_tools: WebTools::Server, ..RequestOptions::default() };
    let client = RequestOptions { web_tools: WebTools::Client, ..RequestOptions::default() };

    let request = build_request(&agent("always_allow"), &[], &server);
    assert_eq!(
        request["tools"],
        json!([
            {"type": "web_fetch_20250910", "name": "web_fetch", "allowed_domains": ["docs.rs"]},
            {"type": "web_search_20250305", "name": "web_search", "blocked_domains": ["example.com"],
                "cache_control": {"type": "ephemeral"}}
        ])
    );
    let request = build_request(&agent("always_ask"), &[], &server);
    assert_eq!(
        request["tools"][0],
        json!({"name": "web_fetch", "description": WEB_FETCH_DESCRIPTION,
        "input_schema": web_fetch_schema()})
    );
    assert_eq!(request["tools"][1]["type"], "web_search_20250305");

    let request = build_request(&agent("auto"), &[], &client);
    assert_eq!(
        request["tools"],
        json!([
            {"name": "web_fetch", "description": WEB_FETCH_DESCRIPTION, "input_schema": web_fetch_schema()},
            {"name": "web_search", "description": WEB_SEARCH_DESCRIPTION, "input_schema": web_search_schema(),
                "cache_control": {"type": "ephemeral"}}
        ])
    );
    assert_eq!(web_search_schema()["required"], json!(["query"]));
    assert_eq!(web_fetch_schema()["required"], json!(["url"]));
}

#[test]
fn models_without_extended_thinking_are_not_sent_a_thinking_budget() {
    // Goal: Claude 4.7 and later models do not support extended thinking
    // (`thinking: {type: "enabled", budget_tokens}`) and reject a request
    // that uses it with a 400 (Messages API docs, "Troubleshooting
    // thinking": "Claude 4.7 and later models do not support it and reject
    // requests that use it"); they think with `{type: "adaptive"}`. The
    // agent API accepts these models (managed-agents-api.md lists
    // claude-opus-4-7, claude-opus-4-8, claude-sonnet-5, claude-opus-5...)
    // and resolves effort to `high` by default, and `thinking_budget` turns
    // any effort from medium up into an extended-thinking budget whatever
    // the model: every model request of such an agent is refused
    // (`InvalidRequest`, final), so every turn ends `retries_exhausted`.
    // Method: a request for each such model at the default effort must not
    // ask for extended thinking.
    for model in ["claude-opus-4-7", "claude-opus-4-8", "claude-sonnet-5", "claude-opus-5"] {
        let agent = AgentView { model: model.to_owned(), effort: Some("high".to_owned()), ..AgentView::default() };
        let request = build_request(&agent, &[], &RequestOptions::default());
        assert_ne!(
            request.pointer("/thinking/type").and_then(Value::as_str),
            Some("enabled"),
            "{model} is sent extended thinking, which it rejects: {}",
            request["thinking"]
        );
    }
}

#[test]
fn thinking_support_is_read_from_the_model_id() {
    let cases = [
        ("claude-opus-5", ThinkingSupport::AdaptiveOnly),
        ("claude-sonnet-5", ThinkingSupport::AdaptiveOnly),
        ("claude-fable-5-2", ThinkingSupport::AdaptiveOnly),
        ("claude-haiku-5-5", ThinkingSupport::AdaptiveOnly),
        ("claude-mythos-5", ThinkingSupport::AdaptiveOnly),
        ("claude-mythos-preview", ThinkingSupport::AdaptiveOnly),
        ("claude-opus-4-8", ThinkingSupport::AdaptiveOnly),
        ("claude-opus-4-7", ThinkingSupport::AdaptiveOnly),
        ("anthropic.claude-opus-4-7-v1:0", ThinkingSupport::AdaptiveOnly),
        ("claude-opus-4-7@20260101", ThinkingSupport::AdaptiveOnly),
        ("claude-opus-4-6", ThinkingSupport::AdaptiveOrBudget),
        ("claude-sonnet-4-6", ThinkingSupport::AdaptiveOrBudget),
        ("claude-haiku-4-5-20251001", ThinkingSupport::BudgetOnly),
        ("claude-opus-4-5-20251101", ThinkingSupport::BudgetOnly),
        ("claude-sonnet-4-5", ThinkingSupport::BudgetOnly),
        ("claude-opus-4-1-20250805", ThinkingSupport::BudgetOnly),
        ("claude-sonnet-4-20250514", ThinkingSupport::BudgetOnly),
        ("claude-3-7-sonnet-20250219", ThinkingSupport::BudgetOnly),
        // Unknown ids: a Claude family without a readable version is taken
        // for a new model; anything else for a compatible backend.
        ("claude-quill", ThinkingSupport::AdaptiveOnly),
        ("glm-4.6", ThinkingSupport::BudgetOnly),
        ("m", ThinkingSupport::BudgetOnly),
    ];
    for (model, expected) in cases {
        assert_eq!(thinking_support(model), expected, "{model}");
    }
}

#[test]
fn adaptive_models_get_adaptive_thinking_and_the_effort_in_output_config() {
    let request = |model: &str, effort: Option<&str>| {
        let agent = AgentView { model: model.to_owned(), effort: effort.map(str::to_owned), ..AgentView::default() };
        let request = build_request(&agent, &[], &RequestOptions::default());
        (request.get("thinking").cloned(), request.get("output_config").cloned())
    };
    let adaptive = Some(json!({"type": "adaptive"}));
    let effort = |level: &str| Some(json!({"effort": level}));
    for level in ["low", "medium", "high", "xhigh", "max"] {
        assert_eq!(request("claude-opus-4-7", Some(level)), (adaptive.clone(), effort(level)), "{level}");
    }
    assert_eq!(request("claude-opus-4-6", Some("max")), (adaptive.clone(), effort("max")));
    // `xhigh` is newer than the 4.6 models.
    assert_eq!(request("claude-sonnet-4-6", Some("xhigh")), (adaptive.clone(), effort("high")));
    // No effort, or an unknown one: the model's default.
    assert_eq!(request("claude-opus-5", None), (adaptive.clone(), None));
    assert_eq!(request("claude-opus-5", Some("turbo")), (adaptive, None));
    // Budget-only models never get `output_config`.
    assert_eq!(
        request("claude-sonnet-4-5", Some("high")),
        (Some(json!({"type": "enabled", "budget_tokens": 16_000})), None)
    );
}

#[test]
fn a_request_without_thinking_sends_no_thinking_field_to_any_model() {
    // Goal: the summarizing request of a compaction (`Thinking::Disabled`)
    // must not send `{type: "disabled"}` (nor a budget) to a model that
    // thinks adaptively only: both are refused with a 400.
    for model in ["claude-opus-4-7", "claude-opus-5", "claude-sonnet-4-6", "claude-sonnet-4-5", "m"] {
        let agent = AgentView { model: model.to_owned(), effort: Some("max".to_owned()), ..AgentView::default() };
        let options = RequestOptions { thinking: Thinking::Disabled, ..RequestOptions::default() };
        let request = build_request(&agent, &[], &options);
        assert_eq!(request.get("thinking"), None, "{model}");
        assert_eq!(request.get("output_config"), None, "{model}");
    }
}

#[test]
fn a_request_without_tool_use_keeps_its_tools_and_forbids_calling_them() {
    let request = without_tool_use(build_request(&agent(), &conversation(), &RequestOptions::default()));
    assert_eq!(request["tool_choice"], json!({"type": "none"}));
    assert!(request["tools"].as_array().is_some_and(|tools| !tools.is_empty()));
    let bare = AgentView { model: "claude-opus-4-7".into(), ..AgentView::default() };
    assert_eq!(without_tool_use(build_request(&bare, &[], &RequestOptions::default())).get("tool_choice"), None);
}

#[test]
fn a_paused_server_call_is_sent_only_while_it_can_be_continued() {
    // A `pause_turn` response may end in a server_tool_use whose result the
    // provider has not produced yet: sent as the last message, the request
    // continues it; once a user turn follows (the pause was interrupted),
    // the call without its result would have every request refused.
    let paused = json!({"role": "assistant", "content": [
        {"type": "text", "text": "Searching."},
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "a"}},
        {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
        {"type": "server_tool_use", "id": "srvtoolu_2", "name": "web_search", "input": {"query": "b"}}
    ]});
    let user = |text: &str| json!({"role": "user", "content": [{"type": "text", "text": text}]});
    let continued = build_request(&agent(), &[user("look"), paused.clone()], &RequestOptions::default());
    assert_eq!(continued["messages"][1]["content"].as_array().unwrap().len(), 4, "the continuation is sent whole");
    let interrupted = build_request(&agent(), &[user("look"), paused, user("stop")], &RequestOptions::default());
    let kinds: Vec<&str> = interrupted["messages"][1]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|block| block["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["text", "server_tool_use", "web_search_tool_result"]);
    assert_eq!(interrupted["messages"][1]["content"][1]["id"], "srvtoolu_1");
    // A message of nothing else says it was interrupted.
    let bare = json!({"role": "assistant", "content": [
        {"type": "server_tool_use", "id": "srvtoolu_3", "name": "web_fetch", "input": {"url": "https://a.test"}}
    ]});
    let request = build_request(&agent(), &[user("fetch"), bare, user("never mind")], &RequestOptions::default());
    assert_eq!(request["messages"][1]["content"], json!([{"type": "text", "text": "(interrupted)"}]));
}

#[test]
fn the_agents_speed_and_inference_geo_pins_are_sent() {
    let plain = build_request(&agent(), &[], &RequestOptions::default());
    assert_eq!((plain.get("speed"), plain.get("inference_geo")), (None, None));
    let pinned = AgentView { speed: Some("fast".into()), inference_geo: Some("us".into()), ..agent() };
    let request = build_request(&pinned, &[], &RequestOptions::default());
    assert_eq!((&request["speed"], &request["inference_geo"]), (&json!("fast"), &json!("us")));
    let standard = AgentView { speed: Some("standard".into()), ..agent() };
    assert_eq!(build_request(&standard, &[], &RequestOptions::default()).get("speed"), None);
}
