//! MCP toolsets: the agent's `mcp_servers` (streamable HTTP, through the
//! official Rust SDK, `rmcp`), connected per session, their tools offered to
//! the model and their calls run by Logbook (also for self-hosted
//! environments: the SDK's worker never runs MCP tools).
//!
//! [`McpHub`] holds every session's connections. The runner asks it to
//! [`prepare`](McpHub::prepare) a session when a turn starts: servers not
//! connected yet (the first turn, or a failure before) are connected and
//! their tools listed, in parallel; a server that fails is reported (the
//! runner records `session.error` `mcp_connection_failed_error` or
//! `mcp_authentication_failed_error`, `retrying`) and the session goes on
//! without its tools until the next turn tries again, as the hosted service
//! does. Connected servers stay connected across turns. The tools offered
//! are part of the recorded settings (`x.agent_config`), so every request
//! can be rebuilt from the log. A call on a server whose connection is gone
//! (the server restarted, the connection was closed) reconnects once; the
//! call itself is never retried, since it may have run.
//!
//! - `connect`: the address checks, the HTTP client, connecting and listing.
//! - `tools`: names, definitions and permissions, results as content.
//! - `log`: the SDK's own log events, with the URLs they name cut down.

pub mod connect;
pub mod log;
pub mod tools;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::future::join_all;
use logbook_core::SessionId;
use rmcp::model::CallToolRequestParams;
use serde_json::Value;

use crate::api::environments::{EnvConfig, Networking};
use crate::api::error::ApiError;
use crate::api::tools::McpServer;
use crate::runner::ToolOutcome;
use crate::sandbox::policy::{EgressPolicy, HostRule};
use crate::tools::web::{HostResolver, SystemResolver};
pub use connect::ConnectError;
use connect::{Connection, shown};
pub use tools::ListedTool;

/// Connecting, initializing and listing one server's tools.
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(30);
/// One tool call. MCP clients commonly wait about a minute; tools that build
/// or search take longer, so this is bash's default.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Sessions whose connections are kept: connecting one more closes those of
/// the session used longest ago (they reconnect on their next call or turn).
pub const MAX_SESSIONS: usize = 256;

/// How MCP connections are made.
#[derive(Debug, Clone)]
pub struct McpSettings {
    /// Hosts (names or IP literals, as written in URLs) that may resolve to
    /// private addresses: the operator's own MCP servers.
    pub private_hosts: Vec<String>,
    pub resolver: Arc<dyn HostResolver>,
    pub connect_deadline: Duration,
    pub call_timeout: Duration,
}

impl McpSettings {
    /// The defaults, with a comma-separated allowlist of private hosts.
    pub fn new(private_hosts: &str) -> McpSettings {
        McpSettings {
            private_hosts: private_hosts
                .split(',')
                .map(|h| h.trim().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
            resolver: Arc::new(SystemResolver),
            connect_deadline: CONNECT_DEADLINE,
            call_timeout: CALL_TIMEOUT,
        }
    }
}

impl Default for McpSettings {
    fn default() -> McpSettings {
        McpSettings::new("")
    }
}

/// Checks that a `limited` environment lets a session reach the agent's MCP
/// servers: without `allow_mcp_servers`, each server's host must be in
/// `allowed_hosts` (the hosted service refuses such a session with a 400).
pub fn check_environment(servers: &[McpServer], config: &EnvConfig) -> Result<(), ApiError> {
    let EnvConfig::Cloud { networking: Networking::Limited { allowed_hosts, allow_mcp_servers: false, .. }, .. } =
        config
    else {
        return Ok(());
    };
    let rules = EgressPolicy::Hosts(allowed_hosts.iter().map(|rule| HostRule::parse(rule)).collect());
    for (idx, server) in servers.iter().enumerate() {
        let host = url::Url::parse(&server.url).ok().and_then(|url| url.host_str().map(str::to_owned));
        let host = host.unwrap_or_default();
        if !rules.allows(&host) {
            return Err(ApiError::invalid(format!(
                "agent.mcp_servers[{idx}].url: {host:?} is not in the environment's networking.allowed_hosts; add it \
                 there or set networking.allow_mcp_servers to true"
            )));
        }
    }
    Ok(())
}

/// A server that could not be connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectFailure {
    /// The agent's name of the server.
    pub server: String,
    pub error: ConnectError,
}

/// A server's listed tools.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerTools {
    pub server: String,
    pub tools: std::sync::Arc<[ListedTool]>,
}

/// Why the hub could not be built.
#[derive(Debug, thiserror::Error)]
#[error("building the MCP HTTP client failed: {0}")]
pub struct HubError(#[from] reqwest::Error);

/// Every session's MCP connections.
#[derive(Debug)]
pub struct McpHub {
    settings: McpSettings,
    http: reqwest::Client,
    sessions: Mutex<Sessions>,
}

#[derive(Debug, Default)]
struct Sessions {
    by_id: HashMap<SessionId, BTreeMap<String, Server>>,
    /// Sessions in the order they were last used, oldest first.
    recency: Vec<SessionId>,
}

/// One of a session's servers.
#[derive(Debug)]
enum Server {
    Connected { url: String, connection: Arc<Connection> },
    Failed { url: String },
}

impl McpHub {
    pub fn new(settings: McpSettings) -> Result<McpHub, HubError> {
        let private_hosts: Arc<[String]> = settings.private_hosts.clone().into();
        let http = connect::http_client(Arc::clone(&settings.resolver), private_hosts)?;
        Ok(McpHub { settings, http, sessions: Mutex::new(Sessions::default()) })
    }

    /// Whether `session` was prepared since it was last dropped (a server
    /// restart, an eviction): if not, its first model call prepares it.
    pub fn is_prepared(&self, session: SessionId) -> bool {
        self.lock().by_id.contains_key(&session)
    }

    /// Connects `servers` of `session` that are not connected (all of them
    /// the first time; those that failed, whose URL changed, or whose
    /// connection closed, later), lists the tools of those that are again
    /// (a server's tools may change between turns), and forgets servers the
    /// agent no longer has. Returns the failures to connect.
    pub async fn prepare(&self, session: SessionId, servers: &[McpServer]) -> Vec<ConnectFailure> {
        let (wanted, connected): (Vec<&McpServer>, Vec<(&McpServer, Arc<Connection>)>) = {
            let mut sessions = self.lock();
            sessions.touch(session);
            let known = sessions.by_id.entry(session).or_default();
            known.retain(|name, server| servers.iter().any(|s| s.name == *name && s.url == server.url()));
            let mut wanted = Vec::new();
            let mut connected = Vec::new();
            for server in servers {
                match known.get(&server.name) {
                    Some(Server::Connected { connection, .. }) if !connection.service.is_transport_closed() => {
                        connected.push((server, Arc::clone(connection)));
                    }
                    Some(Server::Connected { .. } | Server::Failed { .. }) | None => wanted.push(server),
                }
            }
            (wanted, connected)
        };
        let relists = connected.iter().map(|(server, connection)| async move {
            let listed = tokio::time::timeout(self.settings.connect_deadline, connection.relist(&server.url)).await;
            let error = match listed {
                Ok(Ok(())) => return,
                Ok(Err(err)) => err.to_string(),
                Err(_) => format!("no answer within {} s", self.settings.connect_deadline.as_secs()),
            };
            // The connection is kept with its last listing: a call that
            // finds it broken reconnects.
            tracing::warn!(server = %server.name, %error, "listing an MCP server's tools again failed; the last listing stays");
        });
        let attempts = wanted.iter().map(|server| async move { (*server, self.connect(&server.url).await) });
        let mut failures = Vec::new();
        let (results, _) = futures_util::future::join(join_all(attempts), join_all(relists)).await;
        let mut sessions = self.lock();
        // Ended or evicted while connecting: what connected closes here, and
        // nothing of the session stays (an entry without its place in
        // `recency` would never be evicted).
        let Some(known) = sessions.by_id.get_mut(&session) else {
            return failures;
        };
        for (server, result) in results {
            let entry = match result {
                Ok(connection) => Server::Connected { url: server.url.clone(), connection: Arc::new(connection) },
                Err(error) => {
                    failures.push(ConnectFailure { server: server.name.clone(), error });
                    Server::Failed { url: server.url.clone() }
                }
            };
            known.insert(server.name.clone(), entry);
        }
        sessions.evict(MAX_SESSIONS);
        failures
    }

    /// The tools of the connected servers among `servers`, in their order.
    pub fn tools(&self, session: SessionId, servers: &[McpServer]) -> Vec<ServerTools> {
        let sessions = self.lock();
        let Some(known) = sessions.by_id.get(&session) else { return Vec::new() };
        servers
            .iter()
            .filter_map(|server| match known.get(&server.name) {
                Some(Server::Connected { url, connection }) if *url == server.url => {
                    Some(ServerTools { server: server.name.clone(), tools: connection.tools() })
                }
                Some(Server::Connected { .. } | Server::Failed { .. }) | None => None,
            })
            .collect()
    }

    /// Calls `tool` on `server` with `input` (a JSON object). Reconnects
    /// once when the server is not connected or its connection closed.
    pub async fn call(&self, session: SessionId, server: &McpServer, tool: &str, input: &Value) -> ToolOutcome {
        let Value::Object(arguments) = input else {
            return ToolOutcome::error(format!("the input of {tool} must be a JSON object"));
        };
        let connection = match self.connection(session, server).await {
            Ok(connection) => connection,
            Err(error) => return ToolOutcome::error(format!("MCP server {} is not connected: {error}", server.name)),
        };
        let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments.clone());
        let shown_url = url::Url::parse(&server.url).map(|url| shown(&url)).unwrap_or_default();
        match tokio::time::timeout(self.settings.call_timeout, connection.service.call_tool(params)).await {
            Ok(Ok(result)) => tools::outcome(&serde_json::to_value(&result).unwrap_or_default()),
            Ok(Err(err)) => {
                let error = connect::service_error(&err, &server.url, &shown_url);
                if connection.service.is_transport_closed() {
                    self.forget(session, &server.name);
                }
                ToolOutcome::error(format!("the MCP tool {tool} of {} failed: {error}", server.name))
            }
            Err(_) => ToolOutcome::error(format!(
                "the MCP tool {tool} of {} did not answer within {} s",
                server.name,
                self.settings.call_timeout.as_secs()
            )),
        }
    }

    /// Closes the session's connections (it ended).
    pub fn end_session(&self, session: SessionId) {
        let mut sessions = self.lock();
        sessions.by_id.remove(&session);
        sessions.recency.retain(|s| *s != session);
    }

    /// Closes every connection (shutdown).
    pub fn close_all(&self) {
        let mut sessions = self.lock();
        sessions.by_id.clear();
        sessions.recency.clear();
    }

    /// The live connection to `server`, connecting if there is none.
    async fn connection(&self, session: SessionId, server: &McpServer) -> Result<Arc<Connection>, ConnectError> {
        {
            let mut sessions = self.lock();
            if sessions.by_id.contains_key(&session) {
                sessions.touch(session);
            }
            if let Some(Server::Connected { url, connection }) =
                sessions.by_id.get(&session).and_then(|known| known.get(&server.name))
                && *url == server.url
                && !connection.service.is_transport_closed()
            {
                return Ok(Arc::clone(connection));
            }
        }
        let connection = Arc::new(self.connect(&server.url).await?);
        let mut sessions = self.lock();
        // Kept only for a session the hub holds: one that is not prepared
        // (evicted, or ended meanwhile) gets this connection for this call
        // alone, so it never looks prepared with one server of several.
        if let Some(known) = sessions.by_id.get_mut(&session) {
            known.insert(
                server.name.clone(),
                Server::Connected { url: server.url.clone(), connection: Arc::clone(&connection) },
            );
            sessions.touch(session);
            sessions.evict(MAX_SESSIONS);
        }
        Ok(connection)
    }

    async fn connect(&self, url: &str) -> Result<Connection, ConnectError> {
        let attempt = connect::connect(&self.http, &self.settings.private_hosts, url);
        match tokio::time::timeout(self.settings.connect_deadline, attempt).await {
            Ok(result) => result,
            Err(_) => {
                let shown_url = url::Url::parse(url).map(|url| shown(&url)).unwrap_or_default();
                Err(ConnectError::Connection(format!(
                    "{shown_url} did not connect and list its tools within {} s",
                    self.settings.connect_deadline.as_secs()
                )))
            }
        }
    }

    fn forget(&self, session: SessionId, server: &str) {
        if let Some(known) = self.lock().by_id.get_mut(&session) {
            known.remove(server);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Server {
    fn url(&self) -> &str {
        match self {
            Server::Connected { url, .. } | Server::Failed { url } => url,
        }
    }
}

impl Sessions {
    fn touch(&mut self, session: SessionId) {
        self.recency.retain(|s| *s != session);
        self.recency.push(session);
    }

    /// Closes the connections of the sessions used longest ago beyond `max`.
    fn evict(&mut self, max: usize) {
        while self.recency.len() > max {
            let oldest = self.recency.remove(0);
            self.by_id.remove(&oldest);
        }
    }
}
