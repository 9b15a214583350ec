//! A small MCP server for the MCP tests, on loopback, speaking streamable
//! HTTP through the official Rust SDK's server side (`rmcp`), so Logbook's
//! client is tested against an implementation that is not its own.
//!
//! It serves `/mcp` with a few tools ([`TOOLS`]): `echo {text}`, `add {a,
//! b}`, `big {chars}` (that many `x`), `fail` (an error result) and
//! `delete_everything` (for tests that disable a tool), and any a test adds
//! while it runs ([`McpServer::add_tool`]). It records every call
//! and counts the TCP connections it accepted, so a test can prove that a
//! refused server was never reached. With [`Auth::Challenge`] or
//! [`Auth::Plain`] every request without the expected bearer token gets a 401
//! (with or without a `WWW-Authenticate` challenge). [`McpServer::start`]
//! runs it on its own thread and runtime; dropping it stops it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use rmcp::ErrorData;
use rmcp::handler::server::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::{Map, Value, json};

use crate::loopback::Loopback;

/// The tools it lists, in order.
pub const TOOLS: [&str; 5] = ["echo", "add", "big", "fail", "delete_everything"];
/// The bearer token [`Auth`] modes expect.
pub const TOKEN: &str = "mcp-test-token";

/// Whether requests need a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    None,
    /// 401 with `WWW-Authenticate: Bearer ...` without the token.
    Challenge,
    /// 401 without a challenge.
    Plain,
}

/// What the server saw.
#[derive(Debug, Default)]
struct Shared {
    calls: Mutex<Vec<(String, Value)>>,
    connections: AtomicUsize,
    /// While set, `tools/list` is answered only once it is closed
    /// ([`McpServer::hold_listings`]).
    list_gate: Mutex<Option<Arc<tokio::sync::Semaphore>>>,
    /// Notified on every `tools/list` request, before any hold.
    listings: tokio::sync::Notify,
    /// Tools listed after [`TOOLS`] ([`McpServer::add_tool`]).
    added: Mutex<Vec<String>>,
}

/// A running server; stopped when dropped.
#[derive(Debug)]
pub struct McpServer {
    shared: Arc<Shared>,
    server: Loopback,
}

impl McpServer {
    pub fn start(auth: Auth) -> std::io::Result<McpServer> {
        let shared = Arc::new(Shared::default());
        let handler = Handler { shared: Arc::clone(&shared) };
        let counter = Arc::clone(&shared);
        let server = Loopback::serve(
            "mcp-server",
            move || {
                let service = StreamableHttpService::new(
                    move || Ok(handler.clone()),
                    Arc::new(LocalSessionManager::default()),
                    StreamableHttpServerConfig::default(),
                );
                Router::new().nest_service("/mcp", service).layer(middleware::from_fn_with_state(auth, require_token))
            },
            move |_| {
                counter.connections.fetch_add(1, Ordering::SeqCst);
            },
        )?;
        Ok(McpServer { shared, server })
    }

    /// `http://127.0.0.1:PORT/mcp`.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.server.addr())
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Every tool call so far: the tool and its arguments.
    pub fn calls(&self) -> Vec<(String, Value)> {
        self.shared.calls.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// From now on, `tools/list` requests wait until
    /// [`McpServer::release_listings`].
    pub fn hold_listings(&self) {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        *self.shared.list_gate.lock().unwrap_or_else(PoisonError::into_inner) = Some(gate);
    }

    /// Answers the held `tools/list` requests, and later ones at once.
    pub fn release_listings(&self) {
        if let Some(gate) = self.shared.list_gate.lock().unwrap_or_else(PoisonError::into_inner).take() {
            gate.close();
        }
    }

    /// Waits for a `tools/list` request (one that arrived since the last wait,
    /// or the next one).
    pub async fn listing_arrived(&self) {
        self.shared.listings.notified().await;
    }

    /// Lists a tool `name` (answering `added: NAME`) from now on, after the
    /// others.
    pub fn add_tool(&self, name: &str) {
        self.shared.added.lock().unwrap_or_else(PoisonError::into_inner).push(name.to_owned());
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

/// A URL on loopback where nothing listens (a server that is down).
pub fn down_url() -> std::io::Result<String> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    let addr = listener.local_addr()?;
    drop(listener);
    Ok(format!("http://{addr}/mcp"))
}

async fn require_token(State(auth): State<Auth>, request: Request, next: Next) -> Response {
    let expected = format!("Bearer {TOKEN}");
    let authorized = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some(&expected);
    match auth {
        Auth::None => next.run(request).await,
        Auth::Challenge | Auth::Plain if authorized => next.run(request).await,
        Auth::Challenge => {
            let mut response = (StatusCode::UNAUTHORIZED, Body::from("token required")).into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"mcp-test\""));
            response
        }
        Auth::Plain => (StatusCode::UNAUTHORIZED, Body::from("token required")).into_response(),
    }
}

#[derive(Debug, Clone)]
struct Handler {
    shared: Arc<Shared>,
}

fn schema(value: Value) -> Arc<Map<String, Value>> {
    match value {
        Value::Object(map) => Arc::new(map),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) | Value::Array(_) => Arc::new(Map::new()),
    }
}

fn tools() -> Vec<Tool> {
    vec![
        Tool::new(
            "echo",
            "Echo the text back",
            schema(json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]})),
        ),
        Tool::new(
            "add",
            "Add two numbers",
            schema(json!({"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}})),
        ),
        Tool::new(
            "big",
            "Return that many characters",
            schema(json!({"type": "object", "properties": {"chars": {"type": "integer"}}})),
        ),
        Tool::new("fail", "Always fails", schema(json!({"type": "object"}))),
        Tool::new("delete_everything", "Dangerous", schema(json!({"type": "object"}))),
    ]
}

impl ServerHandler for Handler {
    fn get_info(&self) -> ServerConfig {
        let mut info = ServerConfig::new(ServerCapabilities::builder().enable_tools().build());
        info.server_info = Implementation::new("logbook-test-mcp", "1.0.0");
        info
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        self.shared.listings.notify_one();
        let gate = self.shared.list_gate.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(gate) = gate {
            // Closed when released: the wait ends either way.
            let _released = gate.acquire().await;
        }
        let mut listed = tools();
        for name in self.shared.added.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            listed.push(Tool::new(name.clone(), "Added while the server ran", schema(json!({"type": "object"}))));
        }
        Ok(ListToolsResult::with_all_items(listed))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let arguments = Value::Object(request.arguments.clone().unwrap_or_default());
        self.shared
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((request.name.to_string(), arguments.clone()));
        let number = |name: &str| arguments.get(name).and_then(Value::as_f64).unwrap_or(0.0);
        let result = match request.name.as_ref() {
            "echo" => CallToolResult::success(vec![ContentBlock::text(format!(
                "echo: {}",
                arguments.get("text").and_then(Value::as_str).unwrap_or_default()
            ))]),
            "add" => CallToolResult::success(vec![ContentBlock::text(format!("{}", number("a") + number("b")))]),
            "big" => CallToolResult::success(vec![ContentBlock::text("x".repeat(number("chars") as usize))]),
            "fail" => CallToolResult::error(vec![ContentBlock::text("it failed on purpose")]),
            "delete_everything" => CallToolResult::success(vec![ContentBlock::text("deleted everything")]),
            other if self.shared.added.lock().unwrap_or_else(PoisonError::into_inner).iter().any(|n| n == other) => {
                CallToolResult::success(vec![ContentBlock::text(format!("added: {other}"))])
            }
            other => return Err(ErrorData::invalid_params(format!("no tool {other}"), None)),
        };
        Ok(CallToolResponse::Complete(result))
    }
}
