//! End-to-end tests of MCP toolsets: the real `logbook` binary, the fake
//! model, and a loopback MCP server built on the official SDK's server side.
//!
//! Goal: an agent's MCP servers are connected when a turn starts and their
//! tools offered to the model; calls become `agent.mcp_tool_use` with the
//! toolset's permission (`always_ask` by default), run only when allowed,
//! and are answered by `agent.mcp_tool_result`; a server that is down, that
//! wants credentials, or that is on a private address without the operator's
//! allowlist is a `session.error` and the turn still completes; every request
//! re-projects from the log and `logbook rerun` agrees with every decision.
//! Method: scripted sessions over HTTP; the MCP server records each call and
//! counts the connections it accepted.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

use logbook_tests::fake_model::FakeModel;
use logbook_tests::mcp_server::{Auth, McpServer, down_url};
use logbook_tests::server::{Api, Server, run_cli, types, user_message};
use serde_json::{Value, json};

/// The loopback servers are the operator's own in these tests.
const PRIVATE_HOSTS: (&str, &str) = ("LOGBOOK_MCP_PRIVATE_HOSTS", "127.0.0.1");

fn call(id: &str, name: &str, input: Value) -> Value {
    json!({"type": "tool_use", "id": id, "name": name, "input": input})
}

fn text(text: &str) -> Value {
    json!({"content": [{"type": "text", "text": text}]})
}

/// An agent with one MCP server per `(name, url, toolset extras)`.
fn agent(servers: &[(&str, &str, Value)]) -> Value {
    let mut tools = Vec::new();
    let mut mcp_servers = Vec::new();
    for (name, url, extras) in servers {
        let mut toolset = json!({"type": "mcp_toolset", "mcp_server_name": name});
        if let (Some(toolset), Some(extras)) = (toolset.as_object_mut(), extras.as_object()) {
            toolset.extend(extras.clone());
        }
        tools.push(toolset);
        mcp_servers.push(json!({"type": "url", "name": name, "url": url}));
    }
    json!({"tools": tools, "mcp_servers": mcp_servers})
}

fn of_type<'a>(events: &'a [Value], event_type: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == event_type).collect()
}

fn tool_names(request: &Value) -> Vec<String> {
    request["tools"].as_array().into_iter().flatten().filter_map(|t| t["name"].as_str().map(str::to_owned)).collect()
}

/// The `tool_result` blocks of a request's last message.
fn last_results(request: &Value) -> Vec<Value> {
    let messages = request["messages"].as_array().unwrap();
    let last = messages.last().unwrap();
    last["content"].as_array().unwrap().iter().filter(|b| b["type"] == "tool_result").cloned().collect()
}

fn rerun_passes(data: &std::path::Path) {
    let (code, _, stderr) = run_cli(&["rerun", "--data", data.to_str().unwrap()]);
    assert_eq!(code, 0, "rerun: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_always_ask_call_waits_for_confirmation_then_runs() {
    let mcp = McpServer::start(Auth::None).unwrap();
    let model = FakeModel::start(vec![
        json!({"content": [{"type": "text", "text": "Let me echo."}, call("toolu_1", "mcp__docs__echo", json!({"text": "hi"}))]}),
        text("It said hi."),
    ])
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &model, &[PRIVATE_HOSTS]);
    let api = Api::new(&server);
    let tools = json!({"configs": [{"name": "delete_everything", "enabled": false}]});
    let session = api.session_with(agent(&[("docs", &mcp.url(), tools)]), json!({"name": "e2e"})).await;
    api.send(&session, user_message("echo hi")).await;
    let events = api.wait_idle(&session, 1).await;

    // The listed tools went to the model, the disabled one not.
    let requests: Vec<Value> = model.requests().into_iter().map(|r| r.body).collect();
    let names = tool_names(&requests[0]);
    assert_eq!(names, ["mcp__docs__echo", "mcp__docs__add", "mcp__docs__big", "mcp__docs__fail"], "{names:?}");
    let echo = requests[0]["tools"].as_array().unwrap().iter().find(|t| t["name"] == "mcp__docs__echo").unwrap();
    assert_eq!(echo["description"], "Echo the text back");
    assert_eq!(echo["input_schema"]["required"], json!(["text"]));

    // The call waits: the default policy asks.
    let uses = of_type(&events, "agent.mcp_tool_use");
    assert_eq!(uses.len(), 1, "{:?}", types(&events));
    let use_event = uses[0];
    assert_eq!(use_event["name"], "echo");
    assert_eq!(use_event["mcp_server_name"], "docs");
    assert_eq!(use_event["input"], json!({"text": "hi"}));
    assert_eq!(use_event["evaluated_permission"], "ask");
    assert_eq!(use_event["evaluation"], json!({"type": "always_ask"}));
    let idle = events.last().unwrap();
    assert_eq!(idle["stop_reason"], json!({"type": "requires_action", "event_ids": [use_event["id"]]}));
    assert!(mcp.calls().is_empty(), "ran before it was allowed: {:?}", mcp.calls());

    api.send(&session, json!([{"type": "user.tool_confirmation", "tool_use_id": use_event["id"], "result": "allow"}]))
        .await;
    let events = api.wait_idle(&session, 2).await;
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn", "{:?}", types(&events));
    assert_eq!(mcp.calls(), vec![("echo".to_owned(), json!({"text": "hi"}))]);
    let results = of_type(&events, "agent.mcp_tool_result");
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["mcp_tool_use_id"], use_event["id"]);
    assert_eq!(results[0]["is_error"], false);
    assert_eq!(results[0]["content"], json!([{"type": "text", "text": "echo: hi"}]));
    // The model got the result under its own tool-use id.
    let requests: Vec<Value> = model.requests().into_iter().map(|r| r.body).collect();
    let sent = last_results(&requests[1]);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["tool_use_id"], "toolu_1");
    assert_eq!(sent[0]["content"][0]["text"], "echo: hi");

    assert_eq!(api.assert_requests_reproject(&session, &model).await, 2);
    server.stop();
    rerun_passes(&data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_and_disabled_calls_never_reach_the_server_and_always_allow_runs_at_once() {
    let mcp = McpServer::start(Auth::None).unwrap();
    let model = FakeModel::start(vec![
        json!({"content": [call("toolu_1", "mcp__docs__add", json!({"a": 2, "b": 3})),
                           call("toolu_2", "mcp__docs__echo", json!({"text": "no"}))]}),
        json!({"content": [call("toolu_3", "mcp__docs__delete_everything", json!({}))]}),
        json!({"content": [call("toolu_4", "mcp__docs__fail", json!({}))]}),
        text("Done."),
    ])
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &model, &[PRIVATE_HOSTS]);
    let api = Api::new(&server);
    let toolset = json!({"configs": [
        {"name": "add", "permission_policy": {"type": "always_allow"}},
        {"name": "fail", "permission_policy": {"type": "always_allow"}},
        {"name": "delete_everything", "enabled": false}]});
    let session = api.session_with(agent(&[("docs", &mcp.url(), toolset)]), json!({"name": "e2e"})).await;
    api.send(&session, user_message("add, then echo")).await;
    let events = api.wait_idle(&session, 1).await;
    // `add` ran without asking; `echo` waits.
    assert_eq!(mcp.calls(), vec![("add".to_owned(), json!({"a": 2, "b": 3}))]);
    let uses = of_type(&events, "agent.mcp_tool_use");
    assert_eq!(uses[0]["evaluated_permission"], "allow");
    assert_eq!(uses[0]["evaluation"], json!({"type": "always_allow"}));
    let results = of_type(&events, "agent.mcp_tool_result");
    assert_eq!(results[0]["content"], json!([{"type": "text", "text": "5"}]));
    let echo = uses[1];
    assert_eq!(events.last().unwrap()["stop_reason"]["event_ids"], json!([echo["id"]]));

    api.send(
        &session,
        json!([{"type": "user.tool_confirmation", "tool_use_id": echo["id"], "result": "deny",
                "deny_message": "not now"}]),
    )
    .await;
    let events = api.wait_idle(&session, 2).await;
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn", "{:?}", types(&events));
    let results = of_type(&events, "agent.mcp_tool_result");
    let denied = results.iter().find(|r| r["mcp_tool_use_id"] == echo["id"]).unwrap();
    assert_eq!(denied["is_error"], true);
    assert_eq!(denied["content"][0]["text"], "The user denied this tool call: not now");
    // The disabled tool is an MCP call denied before any policy applies.
    let uses = of_type(&events, "agent.mcp_tool_use");
    let disabled = uses.iter().find(|u| u["name"] == "delete_everything").unwrap();
    assert_eq!(disabled["evaluated_permission"], "deny");
    assert!(disabled.get("evaluation").is_none_or(Value::is_null), "{disabled}");
    let refused = results.iter().find(|r| r["mcp_tool_use_id"] == disabled["id"]).unwrap();
    assert_eq!(refused["is_error"], true);
    // A tool's own error result is an error result.
    let fail = uses.iter().find(|u| u["name"] == "fail").unwrap();
    let failed = results.iter().find(|r| r["mcp_tool_use_id"] == fail["id"]).unwrap();
    assert_eq!(failed["is_error"], true);
    assert_eq!(failed["content"], json!([{"type": "text", "text": "it failed on purpose"}]));

    let names: Vec<String> = mcp.calls().into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["add", "fail"], "only allowed calls reach the server");
    api.assert_requests_reproject(&session, &model).await;
    server.stop();
    rerun_passes(&data);
}

/// Goal: a tool a server adds while the session lives is offered from the
/// next turn on, over the same connection, and runs. Method: a first turn
/// sees the server's tools; the server adds `later`; the second turn's
/// request offers it and the model calls it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_added_between_turns_is_offered_at_the_next_turn() {
    let mcp = McpServer::start(Auth::None).unwrap();
    let model = FakeModel::start(vec![
        text("First."),
        json!({"content": [call("toolu_1", "mcp__docs__later", json!({}))]}),
        text("Done."),
    ])
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &model, &[PRIVATE_HOSTS]);
    let api = Api::new(&server);
    let toolset = json!({"default_config": {"permission_policy": {"type": "always_allow"}}});
    let session = api.session_with(agent(&[("docs", &mcp.url(), toolset)]), json!({"name": "e2e"})).await;
    api.send(&session, user_message("hello")).await;
    api.wait_idle(&session, 1).await;
    let first = tool_names(&model.requests()[0].body);
    assert!(first.contains(&"mcp__docs__echo".to_owned()) && !first.iter().any(|n| n.ends_with("later")), "{first:?}");

    mcp.add_tool("later");
    api.send(&session, user_message("now use the new tool")).await;
    let events = api.wait_idle(&session, 2).await;
    assert!(tool_names(&model.requests()[1].body).contains(&"mcp__docs__later".to_owned()));
    let results = of_type(&events, "agent.mcp_tool_result");
    assert_eq!(results.last().unwrap()["content"], json!([{"type": "text", "text": "added: later"}]));
    assert_eq!(mcp.calls(), vec![("later".to_owned(), json!({}))]);
    api.assert_requests_reproject(&session, &model).await;
    server.stop();
    rerun_passes(&data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_down_is_an_error_and_the_turn_completes_without_its_tools() {
    let up = McpServer::start(Auth::None).unwrap();
    let down = down_url().unwrap();
    let model = FakeModel::start(vec![
        json!({"content": [call("toolu_1", "mcp__up__echo", json!({"text": "still here"}))]}),
        text("Only one server answered."),
        text("Second turn."),
    ])
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &model, &[PRIVATE_HOSTS]);
    let api = Api::new(&server);
    let allow = json!({"default_config": {"permission_policy": {"type": "always_allow"}}});
    let agent = agent(&[("up", &up.url(), allow.clone()), ("down", &down, allow)]);
    let session = api.session_with(agent, json!({"name": "e2e"})).await;
    api.send(&session, user_message("use your tools")).await;
    let events = api.wait_idle(&session, 1).await;
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn", "{:?}", types(&events));
    let errors = of_type(&events, "session.error");
    assert_eq!(errors.len(), 1, "{errors:?}");
    let error = &errors[0]["error"];
    assert_eq!(error["type"], "mcp_connection_failed_error");
    assert_eq!(error["mcp_server_name"], "down");
    assert_eq!(error["retry_status"], json!({"type": "retrying"}));
    assert!(error["message"].as_str().unwrap().contains("cannot connect"), "{error}");
    // The error comes with the turn, before the first model request.
    let position = |t: &str| events.iter().position(|e| e["type"] == t).unwrap();
    assert!(position("session.error") < position("span.model_request_start"));
    let requests: Vec<Value> = model.requests().into_iter().map(|r| r.body).collect();
    let names = tool_names(&requests[0]);
    assert!(names.contains(&"mcp__up__echo".to_owned()) && !names.iter().any(|n| n.starts_with("mcp__down")));
    assert_eq!(of_type(&events, "agent.mcp_tool_result")[0]["content"][0]["text"], "echo: still here");

    // The next idle -> running transition tries the failed server again.
    api.send(&session, user_message("again")).await;
    let events = api.wait_idle(&session, 2).await;
    assert_eq!(of_type(&events, "session.error").len(), 2, "{:?}", types(&events));
    api.assert_requests_reproject(&session, &model).await;
    server.stop();
    rerun_passes(&data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_addresses_are_refused_without_the_operators_allowlist() {
    let mcp = McpServer::start(Auth::None).unwrap();
    let model = FakeModel::start(vec![text("No tools today.")]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[]);
    let api = Api::new(&server);
    let by_name = format!("http://localhost:{}/mcp", mcp.addr().port());
    let mapped = format!("http://[::ffff:127.0.0.1]:{}/mcp", mcp.addr().port());
    let agent =
        agent(&[("literal", &mcp.url(), json!({})), ("named", &by_name, json!({})), ("mapped", &mapped, json!({}))]);
    let session = api.session_with(agent, json!({"name": "e2e"})).await;
    api.send(&session, user_message("hi")).await;
    let events = api.wait_idle(&session, 1).await;
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn");
    let errors = of_type(&events, "session.error");
    assert_eq!(errors.len(), 3, "{errors:?}");
    for error in errors {
        assert_eq!(error["error"]["type"], "mcp_connection_failed_error");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains("not a public address"), "{message}");
        assert!(message.contains("LOGBOOK_MCP_PRIVATE_HOSTS"), "{message}");
    }
    assert_eq!(mcp.connections(), 0, "a refused server was reached");
    assert!(tool_names(&model.requests()[0].body).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_wants_credentials_is_an_authentication_error() {
    let challenge = McpServer::start(Auth::Challenge).unwrap();
    let plain = McpServer::start(Auth::Plain).unwrap();
    let model = FakeModel::start(vec![text("No tools.")]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[PRIVATE_HOSTS]);
    let api = Api::new(&server);
    let url_with_token = format!("{}?api_key=do-not-leak", plain.url());
    let agent = agent(&[("challenge", &challenge.url(), json!({})), ("plain", &url_with_token, json!({}))]);
    let session = api.session_with(agent, json!({"name": "e2e"})).await;
    api.send(&session, user_message("hi")).await;
    let events = api.wait_idle(&session, 1).await;
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn");
    let errors = of_type(&events, "session.error");
    assert_eq!(errors.len(), 2, "{errors:?}");
    for error in &errors {
        assert_eq!(error["error"]["type"], "mcp_authentication_failed_error", "{error}");
        assert!(!error.to_string().contains("do-not-leak"), "the URL's token leaked: {error}");
    }
    let servers: Vec<&Value> = errors.iter().map(|e| &e["error"]["mcp_server_name"]).collect();
    assert!(servers.contains(&&json!("challenge")) && servers.contains(&&json!("plain")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_over_100k_characters_are_saved_to_the_workspace() {
    let mcp = McpServer::start(Auth::None).unwrap();
    let model = FakeModel::start(vec![
        json!({"content": [call("toolu_1", "mcp__docs__big", json!({"chars": 150_000}))]}),
        text("That was big."),
    ])
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The sandboxed executor (its server-side part: no jail is started).
    let server = Server::start(&data, &model, &[PRIVATE_HOSTS, ("LOGBOOK_TOOLS", "")]);
    let api = Api::new(&server);
    let allow = json!({"default_config": {"permission_policy": {"type": "always_allow"}}});
    let session = api.session_with(agent(&[("docs", &mcp.url(), allow)]), json!({"name": "e2e"})).await;
    api.send(&session, user_message("big")).await;
    let events = api.wait_idle(&session, 1).await;
    let result = of_type(&events, "agent.mcp_tool_result")[0];
    let preview = result["content"][0]["text"].as_str().unwrap();
    assert!(preview.starts_with("[This output is 150000 characters"), "{}", &preview[..200.min(preview.len())]);
    let path = preview.split_whitespace().find(|w| w.starts_with("/workspace/.logbook/tool-outputs/")).unwrap();
    let path = path.trim_end_matches(':');
    assert!(preview.len() < 20_000, "the preview is {} bytes", preview.len());
    // The saved file is in the workspace, as the log records it.
    let last = api.seqs_of(&session, "agent.mcp_tool_result").await[0];
    let (status, bytes) = api.get_bytes(&format!("/x/v1/sessions/{session}/files{path}?at_seq={last}")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    // Whole, its one long line broken into lines of 2,000 characters (so
    // that read's view_range and grep can reach all of it).
    let saved = String::from_utf8(bytes).unwrap();
    assert_eq!(saved.replace('\n', ""), "x".repeat(150_000));
    assert!(saved.lines().all(|line| line.len() == 2_000), "{:?}", saved.lines().map(str::len).collect::<Vec<_>>());
    server.stop();
    rerun_passes(&data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_environment_refuses_mcp_hosts_it_does_not_allow() {
    let model = FakeModel::start(vec![]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[]);
    let api = Api::new(&server);
    let agent = api
        .post(
            "/v1/agents",
            json!({"model": "claude-sonnet-4-6", "name": "e2e",
                   "tools": [{"type": "mcp_toolset", "mcp_server_name": "docs"}],
                   "mcp_servers": [{"type": "url", "name": "docs", "url": "https://mcp.example.com/mcp"}]}),
        )
        .await;
    let limited = |hosts: Value, allow: bool| {
        json!({"name": "e2e", "config": {"type": "cloud", "networking": {"type": "limited",
            "allowed_hosts": hosts, "allow_mcp_servers": allow}}})
    };
    for (env, ok) in [
        (limited(json!([]), false), false),
        (limited(json!(["*.example.com"]), false), true),
        (limited(json!([]), true), true),
    ] {
        let env = api.post("/v1/environments", env).await;
        let (status, body) = api
            .raw(
                reqwest::Method::POST,
                "/v1/sessions",
                Some(json!({"agent": agent["id"], "environment_id": env["id"]})),
            )
            .await;
        if ok {
            assert_eq!(status, 200, "{body}");
        } else {
            assert_eq!(status, 400, "{body}");
            assert!(body["error"]["message"].as_str().unwrap().contains("allow_mcp_servers"), "{body}");
        }
    }
}

/// Defect (review): `connect.rs` promises that messages never carry an MCP
/// server's URL beyond scheme://host:port ("a URL may hold a token in its
/// path or query") and redacts its own errors, but the SDK (`rmcp`) logs its
/// transport's errors itself, at `error` level, with reqwest's error text,
/// which names the full URL: closing a connection to a server that has gone
/// away logs `fail to delete session: ... for url (http://...?token=...)`.
/// The server's default filter (`info`) prints it. Method: a session
/// connects to a server whose URL carries a token; the server goes away; the
/// session is deleted (its connections close); the server's log must not
/// contain the token once the SDK has logged the failed close (polled with
/// a deadline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_in_a_server_url_never_reaches_the_log() {
    const SECRET: &str = "url-token-4f2a9c";
    let mcp = McpServer::start(Auth::None).unwrap();
    let model = FakeModel::start(vec![text("Hello.")]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[PRIVATE_HOSTS]);
    let api = Api::new(&server);
    let url = format!("{}?token={SECRET}", mcp.url());
    let session = api.session_with(agent(&[("docs", &url, json!({}))]), json!({"name": "e2e"})).await;
    api.send(&session, user_message("hi")).await;
    let events = api.wait_idle(&session, 1).await;
    assert!(of_type(&events, "session.error").is_empty(), "the server did not connect: {:?}", types(&events));
    drop(mcp);
    // A delete racing the runner's last appends answers a transient 409
    // (`x-should-retry: true`), which the SDK retries: so does this test.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (status, body) = loop {
        let (status, body) = api.raw(reqwest::Method::DELETE, &format!("/v1/sessions/{session}"), None).await;
        if status != 409 || std::time::Instant::now() >= deadline {
            break (status, body);
        }
    };
    assert_eq!(status, 200, "{body}");
    while !server.output().contains("delete session") && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let output = server.output();
    // The SDK's failure line must be there, or the test would pass on a log
    // that names no URL at all.
    let failure = output.lines().find(|line| line.contains("delete session"));
    assert!(
        failure.is_some_and(|line| line.contains("://")),
        "the SDK logged no failure naming the server's URL:\n{output}"
    );
    let leaked: Vec<&str> = output.lines().filter(|line| line.contains(SECRET)).collect();
    assert!(leaked.is_empty(), "the MCP server's URL token is in the server's log:\n{}", leaked.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ended_while_its_servers_connect_keeps_no_connection() {
    // Goal: once a session is archived or deleted (`Runner::end_session`,
    // "once this returns, nothing of it runs") the hub holds nothing of it.
    // A turn's `prepare` that was connecting meanwhile must not put the
    // session's connections back: they would stay open for good, outside
    // the recency list that bounds the hub to MAX_SESSIONS sessions.
    use std::sync::Arc;

    use logbook_core::SessionId;
    use logbook_server::mcp::{McpHub, McpSettings};

    let server = McpServer::start(Auth::None).unwrap();
    server.hold_listings();
    let hub = Arc::new(McpHub::new(McpSettings::new("127.0.0.1")).unwrap());
    let session = SessionId::from_parts(1_764_000_000_000, 7);
    let servers =
        vec![logbook_server::api::tools::McpServer { kind: "url".into(), name: "docs".into(), url: server.url() }];
    let preparing = tokio::spawn({
        let hub = Arc::clone(&hub);
        async move { hub.prepare(session, &servers).await }
    });
    tokio::time::timeout(std::time::Duration::from_secs(30), server.listing_arrived())
        .await
        .expect("the hub never listed the server's tools");
    // The session is archived while its turn connects.
    hub.end_session(session);
    server.release_listings();
    let failures = preparing.await.unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    assert!(
        !hub.is_prepared(session),
        "the ended session's MCP connection was put back in the hub and is never closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_after_an_eviction_does_not_leave_the_session_half_prepared() {
    // Goal: a session whose connections were closed to make room for others
    // (MAX_SESSIONS) gets all its servers' tools again on its next model
    // call: `call_model` prepares a session the hub does not know. A call
    // that ran first (an always_ask call confirmed hours later) reconnects
    // only its own server, and must not make the hub report the session as
    // prepared: the other servers' tools would be missing for the rest of
    // the turn.
    use std::sync::Arc;

    use logbook_core::SessionId;
    use logbook_server::mcp::{MAX_SESSIONS, McpHub, McpSettings};

    let server = McpServer::start(Auth::None).unwrap();
    let hub = Arc::new(McpHub::new(McpSettings::new("127.0.0.1")).unwrap());
    let session = SessionId::from_parts(1_764_000_000_000, 7);
    let mcp_server =
        |name: &str| logbook_server::api::tools::McpServer { kind: "url".into(), name: name.into(), url: server.url() };
    let servers = vec![mcp_server("docs"), mcp_server("more")];
    assert!(hub.prepare(session, &servers).await.is_empty());
    assert_eq!(hub.tools(session, &servers).len(), 2);
    // As many other sessions are used since: this one's connections are closed.
    for n in 0..MAX_SESSIONS as u128 {
        hub.prepare(SessionId::from_parts(1_764_000_000_000, 1_000 + n), &[]).await;
    }
    assert!(!hub.is_prepared(session));
    // The turn goes on: the confirmed call runs, then the model is called.
    let outcome = hub.call(session, &servers[0], "echo", &json!({"text": "hi"})).await;
    assert!(!outcome.is_error, "{outcome:?}");
    let offered: Vec<String> = hub.tools(session, &servers).into_iter().map(|tools| tools.server).collect();
    assert!(
        !hub.is_prepared(session) || offered.len() == 2,
        "the next model call will not prepare the session and offers only the tools of {offered:?}"
    );
}
