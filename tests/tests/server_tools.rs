//! End-to-end tests of the web tools and the provider's server tools: the
//! real `logbook` binary and the fake model.
//!
//! Goal: `web_search`/`web_fetch` go to the model as the provider's server
//! tools only when the provider runs them (`LOGBOOK_WEB_TOOLS=server`, the
//! default on Anthropic's API) and otherwise as client tools that Logbook runs
//! itself; the provider's calls and results are shown as `agent.tool_use` /
//! `agent.tool_result` and never run or awaited here; a `pause_turn` response
//! is continued instead of ending the turn; the searches the provider reports
//! are counted in the session's usage and priced at $10 per 1,000. Every
//! request re-projects from the log and `logbook rerun` agrees.
//! Method: scripted sessions over HTTP; a loopback SearXNG stand-in answers
//! Logbook's own searches and records the queries.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use logbook_tests::fake_model::FakeModel;
use logbook_tests::server::{Api, Server, run_cli, types, user_message};
use serde_json::{Value, json};

/// Every built-in tool runs without asking.
fn toolset() -> Value {
    json!({"tools": [{"type": "agent_toolset_20260401",
                      "default_config": {"permission_policy": {"type": "always_allow"}}}]})
}

fn text(text: &str) -> Value {
    json!({"content": [{"type": "text", "text": text}]})
}

fn of_type<'a>(events: &'a [Value], event_type: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == event_type).collect()
}

fn tool<'a>(request: &'a Value, name: &str) -> &'a Value {
    request["tools"].as_array().unwrap().iter().find(|t| t["name"] == name).unwrap()
}

fn rerun_passes(data: &std::path::Path) {
    let (code, _, stderr) = run_cli(&["rerun", "--data", data.to_str().unwrap()]);
    assert_eq!(code, 0, "rerun: {stderr}");
}

/// A SearXNG stand-in on loopback: `/search?q=...&format=json` answers one
/// result naming the query; the queries are recorded.
async fn search_stub() -> (String, Arc<Mutex<Vec<String>>>) {
    async fn search(
        State(queries): State<Arc<Mutex<Vec<String>>>>,
        Query(params): Query<HashMap<String, String>>,
    ) -> axum::Json<Value> {
        let query = params.get("q").cloned().unwrap_or_default();
        queries.lock().unwrap().push(query.clone());
        axum::Json(json!({"results": [{"url": "https://example.com/found", "title": format!("About {query}"),
                                        "content": "a snippet"}]}))
    }
    let queries = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let url = format!("http://{}/search", listener.local_addr().unwrap());
    let app = Router::new().route("/search", get(search)).with_state(Arc::clone(&queries));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, queries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_another_backend_web_tools_are_client_tools_that_logbook_runs() {
    let (search_url, queries) = search_stub().await;
    let model = FakeModel::start(vec![
        json!({"content": [{"type": "tool_use", "id": "toolu_1", "name": "web_search", "input": {"query": "rust mcp"}}]}),
        text("Found it."),
    ])
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The fake model is not Anthropic's API: the default is `client`. The
    // sandboxed executor runs web tools in the server (no jail is started).
    let server = Server::start(&data, &model, &[("LOGBOOK_TOOLS", ""), ("LOGBOOK_SEARCH_URL", &search_url)]);
    let api = Api::new(&server);
    let session = api.session_with(toolset(), json!({"name": "e2e"})).await;
    api.send(&session, user_message("search")).await;
    let events = api.wait_idle(&session, 1).await;
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn", "{:?}", types(&events));

    let requests: Vec<Value> = model.requests().into_iter().map(|r| r.body).collect();
    for name in ["web_search", "web_fetch"] {
        let definition = tool(&requests[0], name);
        assert!(definition.get("type").is_none(), "{definition}");
        assert_eq!(definition["input_schema"]["type"], "object", "{definition}");
    }
    assert_eq!(tool(&requests[0], "web_search")["input_schema"]["required"], json!(["query"]));
    assert_eq!(tool(&requests[0], "web_fetch")["input_schema"]["required"], json!(["url"]));

    // Logbook ran the search and the model got the result.
    assert_eq!(*queries.lock().unwrap(), ["rust mcp"]);
    let result = of_type(&events, "agent.tool_result")[0];
    assert_eq!(result["is_error"], false, "{result}");
    assert!(result.to_string().contains("About rust mcp"), "{result}");
    let last = requests[1]["messages"].as_array().unwrap().last().unwrap();
    assert_eq!(last["content"][0]["type"], "tool_result");
    assert_eq!(last["content"][0]["tool_use_id"], "toolu_1");
    assert!(last["content"].to_string().contains("About rust mcp"), "{last}");

    assert_eq!(api.assert_requests_reproject(&session, &model).await, 2);
    server.stop();
    rerun_passes(&data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_web_tools_are_shown_never_run_and_their_searches_are_priced() {
    let (search_url, queries) = search_stub().await;
    let search_result = json!({"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": [
        {"type": "web_search_result", "url": "https://example.com/a", "title": "Result A",
         "encrypted_content": "opaque", "page_age": "1 day"}]});
    let model = FakeModel::start(vec![json!({
        "content": [
            {"type": "text", "text": "Searching."},
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "logbook"}},
            search_result,
            {"type": "text", "text": "Result A it is."},
        ],
        "usage": {"server_tool_use": {"web_search_requests": 250}},
    })])
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(
        &data,
        &model,
        &[("LOGBOOK_WEB_TOOLS", "server"), ("LOGBOOK_TOOLS", ""), ("LOGBOOK_SEARCH_URL", &search_url)],
    );
    let api = Api::new(&server);
    // web_fetch asks first, which only Logbook can do: it stays a client tool.
    let agent = json!({"tools": [{"type": "agent_toolset_20260401",
        "default_config": {"permission_policy": {"type": "always_allow"}},
        "configs": [{"name": "web_fetch", "permission_policy": {"type": "always_ask"}}]}]});
    let session = api.session_with(agent, json!({"name": "e2e"})).await;
    api.send(&session, user_message("search")).await;
    let events = api.wait_idle(&session, 1).await;
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn", "{:?}", types(&events));

    let requests: Vec<Value> = model.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(requests.len(), 1, "a provider's call is not answered with another request");
    let search = tool(&requests[0], "web_search");
    assert_eq!(search["type"], "web_search_20250305", "{search}");
    assert!(search.get("input_schema").is_none(), "{search}");
    assert!(tool(&requests[0], "web_fetch").get("type").is_none(), "an always_ask web_fetch is a client tool");

    // Shown as a tool use and its result, in the order of the blocks.
    let shown: Vec<&str> = events
        .iter()
        .filter(|e| e["type"].as_str().unwrap().starts_with("agent."))
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(shown, ["agent.message", "agent.tool_use", "agent.tool_result", "agent.message"]);
    let call = of_type(&events, "agent.tool_use")[0];
    assert_eq!(call["name"], "web_search");
    assert_eq!(call["input"], json!({"query": "logbook"}));
    let result = of_type(&events, "agent.tool_result")[0];
    assert_eq!(result["tool_use_id"], call["id"]);
    assert_eq!(result["is_error"], false);
    assert!(result["content"][0]["text"].as_str().unwrap().contains("Result A"), "{result}");
    assert!(queries.lock().unwrap().is_empty(), "the provider's search was run here");

    // 250 searches are $2.50, on top of Sonnet's tokens and the running time.
    let usage = &api.get(&format!("/v1/sessions/{session}")).await["usage"];
    assert_eq!(usage["server_tool_use"]["web_search_requests"], 250, "{usage}");
    let count = |name: &str| usage[name].as_f64().unwrap();
    let dollars = count("input_tokens") * 3e-6
        + count("output_tokens") * 15e-6
        + count("cache_read_input_tokens") * 0.3e-6
        + usage["cache_creation"]["ephemeral_5m_input_tokens"].as_f64().unwrap() * 3.75e-6
        + count("active_seconds") / 3600.0 * 0.08;
    let cents: f64 = usage["list_cost"]["amount"].as_str().unwrap().parse().unwrap();
    let without_searches = (dollars * 100.0).ceil();
    // (The shown active seconds are rounded: allow a cent either way.)
    assert!((cents - 250.0 - without_searches).abs() <= 1.0, "list cost {cents} cents: {usage}");
    // The state endpoint folds the same counts from the log.
    let state = api.get(&format!("/x/v1/sessions/{session}/state")).await;
    assert_eq!(state["usage"]["server_tool_use"]["web_search_requests"], 250, "{}", state["usage"]);

    assert_eq!(api.assert_requests_reproject(&session, &model).await, 1);
    server.stop();
    rerun_passes(&data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_turn_is_continued_until_the_provider_finishes() {
    let model = FakeModel::start(vec![
        json!({"content": [
                {"type": "text", "text": "Let me look."},
                {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "long"}}],
               "stop_reason": "pause_turn",
               "usage": {"server_tool_use": {"web_search_requests": 1}}}),
        json!({"content": [
                {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
                {"type": "text", "text": "Nothing found."}],
               "usage": {"server_tool_use": {"web_search_requests": 1}}}),
        text("Second turn."),
    ])
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &model, &[("LOGBOOK_WEB_TOOLS", "server")]);
    let api = Api::new(&server);
    let session = api.session_with(toolset(), json!({"name": "e2e"})).await;
    api.send(&session, user_message("search long")).await;
    let events = api.wait_idle(&session, 1).await;

    // One turn, two calls, no idle in between.
    assert_eq!(of_type(&events, "session.status_idle").len(), 1, "{:?}", types(&events));
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn", "{:?}", types(&events));
    assert_eq!(of_type(&events, "span.model_request_start").len(), 2, "{:?}", types(&events));
    let requests: Vec<Value> = model.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(requests.len(), 2);
    // The continuation ends with the paused assistant content, as sent.
    let last = requests[1]["messages"].as_array().unwrap().last().unwrap();
    assert_eq!(last["role"], "assistant", "{last}");
    let kinds: Vec<&str> = last["content"].as_array().unwrap().iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["text", "server_tool_use"], "{last}");
    assert!(
        !requests[1].to_string().contains("\"tool_result\""),
        "no tool_result for the provider's call: {}",
        requests[1]
    );
    // The call made in the first response is answered by the second.
    let call = of_type(&events, "agent.tool_use")[0];
    let result = of_type(&events, "agent.tool_result")[0];
    assert_eq!(result["tool_use_id"], call["id"]);
    assert_eq!(result["content"][0]["text"], "No results.");
    let usage = &api.get(&format!("/v1/sessions/{session}")).await["usage"];
    assert_eq!(usage["server_tool_use"]["web_search_requests"], 2, "{usage}");

    // The next turn's request carries both responses, the search answered.
    api.send(&session, user_message("thanks")).await;
    api.wait_idle(&session, 2).await;
    let requests: Vec<Value> = model.requests().into_iter().map(|r| r.body).collect();
    let history = requests[2]["messages"].to_string();
    assert!(history.contains("srvtoolu_1") && history.contains("web_search_tool_result"), "{history}");

    assert_eq!(api.assert_requests_reproject(&session, &model).await, 3);
    server.stop();
    rerun_passes(&data);
}
