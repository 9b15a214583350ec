//! The MCP client against hostile or careless servers: the names and
//! schemas it offers the model stay within what the Messages API takes, it
//! keeps no more of a listing than it can offer, and a server's error
//! message is bounded. Servers are hand-written streamable-HTTP endpoints
//! on loopback (`tests/tests/mcp.rs` drives the runner against a full one).

use logbook_server::mcp::tools::{ListedTool, MAX_TOOL_NAME_CHARS, model_name, offer};
use serde_json::{Value, json};

fn listed(name: &str) -> ListedTool {
    ListedTool { name: name.to_owned(), description: None, input_schema: json!({"type": "object"}) }
}

/// `mcp::tools` promises every offered name is unique and at most
/// `MAX_TOOL_NAME_CHARS` (the Messages API's limit). `model_name` tries the
/// plain name, then suffixes of 8, 16, 32 and 64 hex digits of a hash of the
/// server's and tool's names; at 64, `MAX_TOOL_NAME_CHARS - 1 - length`
/// underflows: a panic in a debug build, a name over 64 characters (every
/// request refused) in a release build. Reaching it takes nothing hostile: a
/// server listing one tool name five times (or repeating a page of its
/// listing with a constant `nextCursor`, which `list_tools` follows up to 16
/// times) gets there, since duplicates hash alike. A hostile server can also
/// get there with distinct names, by listing first tools whose plain names
/// are another tool's 8-, 16- and 32-digit hashed names.
#[test]
fn a_tool_name_listed_five_times_or_squatting_hashed_names_gets_valid_names() {
    let check = |tools: &[ListedTool]| {
        let offered = std::panic::catch_unwind(|| offer(&[], [("docs", tools)]));
        let offered = offered.expect("offering the listing panicked");
        let names: Vec<&str> = offered.names.iter().map(|n| n.name.as_str()).collect();
        for name in &names {
            assert!(name.len() <= MAX_TOOL_NAME_CHARS, "{name:?} is longer than {MAX_TOOL_NAME_CHARS}");
        }
        let unique: std::collections::BTreeSet<&&str> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
    };
    // The same name listed five times.
    check(&vec![listed("search"); 5]);
    // Distinct names chosen to take a long name's hashed names.
    let long = "a".repeat(100);
    let mut taken = std::collections::BTreeSet::new();
    let mut tools = Vec::new();
    for _ in 0..3 {
        let hashed = model_name("docs", &long, &taken);
        tools.push(listed(hashed.strip_prefix("mcp__docs__").unwrap()));
        taken.insert(hashed);
    }
    tools.push(listed(&long));
    check(&tools);
}

/// The Messages API refuses a request whose tools include an `input_schema`
/// with `oneOf`, `anyOf` or `allOf` at its top level (400 "input_schema does
/// not support oneOf, allOf, or anyOf at the top level"; behaviour digest
/// §2 lists the rule, and `api::tools` enforces it on custom tools). A listed
/// MCP tool's schema only gets `type: object` forced
/// (`ListedTool::from_json`), so a server with one such tool (what zod's
/// `z.union` or a "one of these fields" rule produces, common in MCP
/// servers) has it offered as is, and every model request of the session is
/// refused, not only calls of that tool.
#[test]
fn a_listed_schema_with_a_top_level_combinator_is_not_offered_as_is() {
    let with_one_of = ListedTool::from_json(&json!({
        "name": "get_resource",
        "description": "Get a resource by id or by path",
        "inputSchema": {
            "oneOf": [
                {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
                {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}
            ]
        }
    }))
    .unwrap();
    let with_any_of = ListedTool::from_json(&json!({
        "name": "lookup",
        "description": "Look up by id or name",
        "inputSchema": {
            "type": "object",
            "anyOf": [{"required": ["id"]}, {"required": ["name"]}],
            "properties": {"id": {"type": "string"}, "name": {"type": "string"}}
        }
    }))
    .unwrap();
    let agent_tools =
        logbook_server::api::tools::resolve_tools(&[json!({"type": "mcp_toolset", "mcp_server_name": "docs"})])
            .unwrap();
    let listing = [with_one_of, with_any_of];
    let offered = offer(&agent_tools, [("docs", &listing[..])]);
    for definition in &offered.definitions {
        for combinator in ["oneOf", "anyOf", "allOf"] {
            assert!(
                definition["input_schema"].get(combinator).is_none(),
                "{} is offered with a top-level {combinator}, which the Messages API refuses: {definition}",
                definition["name"]
            );
        }
    }
}

/// A hand-written MCP server (streamable HTTP, JSON responses) on loopback:
/// it answers `initialize` and `tools/list` with `tools` (one page) and
/// `tools/call` with `call_result`. Returns its URL.
async fn hostile_mcp_server(tools: Vec<Value>, call_result: Value) -> String {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let tools = std::sync::Arc::new(tools);
    let call_result = std::sync::Arc::new(call_result);
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(move |body: axum::Json<Value>| {
            let (tools, call_result) = (std::sync::Arc::clone(&tools), std::sync::Arc::clone(&call_result));
            async move {
                let request = body.0;
                let id = request["id"].clone();
                let result = match request["method"].as_str().unwrap_or_default() {
                    "initialize" => json!({
                        "protocolVersion": request["params"]["protocolVersion"],
                        "capabilities": {"tools": {}},
                        "serverInfo": {"name": "hostile", "version": "1.0.0"}
                    }),
                    "tools/list" => json!({"tools": *tools}),
                    "tools/call" => (*call_result).clone(),
                    // Notifications (no id) are accepted.
                    _ if id.is_null() => return StatusCode::ACCEPTED.into_response(),
                    _ => json!({}),
                };
                axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response()
            }
        })
        .get(|| async { StatusCode::METHOD_NOT_ALLOWED })
        .delete(|| async { StatusCode::METHOD_NOT_ALLOWED }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/mcp")
}

fn mcp_server(name: &str, url: &str) -> logbook_server::api::tools::McpServer {
    logbook_server::api::tools::McpServer { kind: "url".to_owned(), name: name.to_owned(), url: url.to_owned() }
}

/// `mcp::tools` offers at most `MAX_TOOLS_PER_SERVER` tools of a server
/// ("a server listing more is cut"), but the hub keeps every tool the server
/// listed (`connect::list_tools`: up to 16 pages of up to 16 MiB of JSON
/// each, millions of `{"name": ..., "inputSchema": {}}` entries) for as long
/// as the session's connection lives, and `McpHub::tools` clones all of them
/// for every model request. One hostile (or merely huge) MCP server makes
/// the process hold and copy gigabytes per session; only 128 are ever used.
#[tokio::test]
async fn the_hub_keeps_no_more_of_a_servers_tools_than_it_can_offer() {
    use logbook_server::mcp::tools::MAX_TOOLS_PER_SERVER;
    let tools: Vec<Value> =
        (0..5000).map(|n| json!({"name": format!("t{n}"), "inputSchema": {"type": "object"}})).collect();
    let url = hostile_mcp_server(tools, json!({"content": []})).await;
    let hub = logbook_server::mcp::McpHub::new(logbook_server::mcp::McpSettings::new("127.0.0.1")).unwrap();
    let session: logbook_core::SessionId = "sesn_01JQ8Z7M3P5R7T9V1X3Z5B7D0E".parse().unwrap();
    let servers = [mcp_server("docs", &url)];
    let failures = hub.prepare(session, &servers).await;
    assert!(failures.is_empty(), "{failures:?}");
    let listed = hub.tools(session, &servers);
    assert_eq!(listed.len(), 1);
    assert!(
        listed[0].tools.len() <= MAX_TOOLS_PER_SERVER,
        "the hub holds (and clones per request) {} tools of one server; at most {MAX_TOOLS_PER_SERVER} are ever offered",
        listed[0].tools.len()
    );
}

/// An MCP server on loopback that answers every request with a JSON-RPC
/// error whose message is `message`. Returns its URL.
async fn erroring_mcp_server(message: String) -> String {
    let message = std::sync::Arc::new(message);
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(move |body: axum::Json<Value>| {
            let message = std::sync::Arc::clone(&message);
            async move {
                axum::Json(
                    json!({"jsonrpc": "2.0", "id": body.0["id"], "error": {"code": -32000, "message": *message}}),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/mcp")
}

/// A server that cannot be connected becomes a `session.error`
/// (`mcp_connection_failed_error`) whose `message` is the connect error's,
/// and that error carries the server's JSON-RPC error message whole: a
/// server answering `initialize` with a 10 MB message has a 10 MB
/// `session.error` recorded in the log and pushed to every stream, again at
/// every turn (the connection is retried each turn). Tool output is held to
/// 100,000 characters (behaviour digest: larger outputs go to a file); an
/// error message the server wrote is not bounded at all.
#[tokio::test]
async fn a_servers_error_message_does_not_make_an_unbounded_session_error() {
    let url = erroring_mcp_server("x".repeat(10 * 1024 * 1024)).await;
    let hub = logbook_server::mcp::McpHub::new(logbook_server::mcp::McpSettings::new("127.0.0.1")).unwrap();
    let session: logbook_core::SessionId = "sesn_01JQ8Z7M3P5R7T9V1X3Z5B7D0E".parse().unwrap();
    let failures = hub.prepare(session, &[mcp_server("docs", &url)]).await;
    assert_eq!(failures.len(), 1);
    let message = failures[0].error.to_string();
    assert!(
        message.len() <= 100_000,
        "the session.error message would be {} bytes: {}...",
        message.len(),
        &message[..200]
    );
}
