//! Connecting to an MCP server: which addresses may be reached, the HTTP
//! client the official SDK (`rmcp`) speaks streamable HTTP through, and what
//! a failed connection is called.
//!
//! MCP connections leave the server, so they get web_fetch's guarantees: the
//! client's only resolver answers a name with addresses it has checked
//! against `crate::net::addr::is_public` (refusing the whole name if any
//! address is not public), a URL whose host is an IP address is checked
//! before anything connects, redirects are not followed and proxies from the
//! environment are ignored. Hosts on the operator's allowlist
//! (`LOGBOOK_MCP_PRIVATE_HOSTS`, names or IP literals as written in URLs)
//! may resolve to private addresses: the operator's own MCP servers.
//!
//! Messages never carry the server's URL beyond its scheme, host and port: a
//! URL may hold a token in its path or query.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use rmcp::ServiceExt;
use rmcp::model::{ClientCapabilities, ClientConfig, Implementation};
use rmcp::service::{ClientInitializeError, RoleClient, RunningService, ServiceError};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::{StreamableHttpClientTransportConfig, StreamableHttpError};
use url::Url;

use super::tools::{ListedTool, MAX_TOOLS_PER_SERVER};
use crate::net::addr::is_public;
use crate::tools::web::HostResolver;

/// One TCP (and TLS) connection to an MCP server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest lookup of an MCP server's name.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest JSON response or SSE event accepted from an MCP server: a tool
/// result bigger than this is refused (the model never sees more than
/// 100,000 characters of one anyway).
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// Pages of `tools/list` followed at most (a server paging forever must not
/// hold a turn).
pub const MAX_LIST_PAGES: usize = 16;
const CLIENT_NAME: &str = "logbook";
/// Most characters of an error the server (or its transport) reported that
/// are kept: the message becomes a `session.error` or a tool result, and a
/// server could send megabytes of it on every attempt.
pub const MAX_ERROR_CHARS: usize = 4_000;

/// A live connection: the SDK's client service (dropping it closes the
/// connection) and the tools the server listed last.
pub struct Connection {
    pub service: RunningService<RoleClient, ClientConfig>,
    /// What the model may be offered of the last listing (shared with every
    /// request's settings, not copied).
    tools: std::sync::Mutex<Arc<[ListedTool]>>,
}

impl Connection {
    /// The tools of the last listing.
    pub fn tools(&self) -> Arc<[ListedTool]> {
        Arc::clone(&self.tools.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Lists the server's tools again: they may change while a connection
    /// lives (a server sends `notifications/tools/list_changed`, which this
    /// client does not follow, or none at all). On failure the last listing
    /// stays; the error names the server by `scheme://host:port` only.
    pub async fn relist(&self, url: &str) -> Result<(), ConnectError> {
        let shown_url = Url::parse(url).map(|url| shown(&url)).unwrap_or_default();
        let listed = list_tools(&self.service).await.map_err(|err| service_error(&err, url, &shown_url))?;
        let tools: Arc<[ListedTool]> = listed.into();
        *self.tools.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = tools;
        Ok(())
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection").field("tools", &self.tools().len()).finish_non_exhaustive()
    }
}

/// Why a server could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The server refused our (absent) credentials: 401 or 403.
    #[error("{0}")]
    Authentication(String),
    /// Anything else: refused address, DNS, TCP, TLS, protocol, timeout.
    #[error("{0}")]
    Connection(String),
}

/// The parts of a URL safe to show: `scheme://host[:port]`.
pub fn shown(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

/// The HTTP client MCP connections use: `resolver` behind the address
/// checks, `private_hosts` exempt from them.
pub fn http_client(
    resolver: Arc<dyn HostResolver>,
    private_hosts: Arc<[String]>,
) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .dns_resolver(CheckedResolver { inner: resolver, private_hosts })
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!("logbook-mcp/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Connects to `url`, initializes the session and lists the tools.
pub async fn connect(http: &reqwest::Client, private_hosts: &[String], url: &str) -> Result<Connection, ConnectError> {
    let parsed = Url::parse(url).map_err(|err| ConnectError::Connection(format!("the URL is not valid: {err}")))?;
    let shown_url = shown(&parsed);
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ConnectError::Connection(format!("{shown_url}: only http and https MCP servers are supported")));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ConnectError::Connection(format!("{shown_url}: the URL must not contain credentials")));
    }
    let host = parsed.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    if let Ok(ip) = host.parse::<IpAddr>()
        && !is_public(ip)
        && !private_hosts.contains(&host)
    {
        return Err(ConnectError::Connection(refused(&host, ip)));
    }
    let config = StreamableHttpClientTransportConfig::with_uri(url)
        .reinit_on_expired_session(true)
        .max_json_response_size(MAX_RESPONSE_BYTES)
        .max_sse_event_size(MAX_RESPONSE_BYTES);
    let transport = StreamableHttpClientTransport::with_client(http.clone(), config);
    let info =
        ClientConfig::new(ClientCapabilities::default(), Implementation::new(CLIENT_NAME, env!("CARGO_PKG_VERSION")));
    let service = info.serve(transport).await.map_err(|err| init_error(&err, url, &shown_url))?;
    let tools = list_tools(&service).await.map_err(|err| service_error(&err, url, &shown_url))?;
    Ok(Connection { service, tools: std::sync::Mutex::new(tools.into()) })
}

/// The tools the server lists, following at most [`MAX_LIST_PAGES`] pages:
/// the first [`MAX_TOOLS_PER_SERVER`] distinct names (no more can be
/// offered), each name once (its first listing), and no page more once
/// those are known.
async fn list_tools(service: &RunningService<RoleClient, ClientConfig>) -> Result<Vec<ListedTool>, ServiceError> {
    let mut tools: Vec<ListedTool> = Vec::new();
    let mut cursor = None;
    for _ in 0..MAX_LIST_PAGES {
        let params =
            cursor.take().map(|cursor| rmcp::model::PaginatedRequestParams::default().with_cursor(Some(cursor)));
        let page = service.list_tools(params).await?;
        let page = serde_json::to_value(&page).unwrap_or_default();
        let listed = page.get("tools").and_then(serde_json::Value::as_array).into_iter().flatten();
        for tool in listed.filter_map(ListedTool::from_json) {
            if tools.len() == MAX_TOOLS_PER_SERVER {
                return Ok(tools);
            }
            if tools.iter().all(|known| known.name != tool.name) {
                tools.push(tool);
            }
        }
        match page.get("nextCursor").and_then(serde_json::Value::as_str) {
            Some(next) if !next.is_empty() && tools.len() < MAX_TOOLS_PER_SERVER => cursor = Some(next.to_owned()),
            Some(_) | None => return Ok(tools),
        }
    }
    Ok(tools)
}

fn init_error(err: &ClientInitializeError, url: &str, shown_url: &str) -> ConnectError {
    // The SDK's transport error is not the initialize error's `source`: follow
    // it by hand, or the reason (a refused address, say) would be lost.
    let message = if let ClientInitializeError::TransportError { error, context } = err {
        format!("{}, when {context}", chain(&*error.error))
    } else {
        chain(err)
    };
    let message = bounded(redact(&message, url, shown_url));
    if err.is_authorization_required() || is_auth_status(&message) {
        ConnectError::Authentication(format!("{shown_url} requires authorization: {message}"))
    } else {
        ConnectError::Connection(format!("cannot connect to {shown_url}: {message}"))
    }
}

/// A failed request on a live connection (listing tools or calling one).
pub fn service_error(err: &ServiceError, url: &str, shown_url: &str) -> ConnectError {
    let message = bounded(redact(&chain(err), url, shown_url));
    if err.auth_challenge().is_some() || is_auth_status(&message) {
        ConnectError::Authentication(format!("{shown_url} requires authorization: {message}"))
    } else {
        ConnectError::Connection(format!("{shown_url}: {message}"))
    }
}

/// A 401 or 403 without a challenge reaches us only as its status line.
fn is_auth_status(message: &str) -> bool {
    message.contains("HTTP 401") || message.contains("HTTP 403")
}

/// An error and its sources, joined.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = next_cause(err);
    while let Some(current) = source {
        let text = current.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        source = next_cause(current);
    }
    parts.join(": ")
}

/// What caused `err`: its `source`, or for the SDK's HTTP client error (which
/// does not name the HTTP client's error as its source) that error.
fn next_cause<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a (dyn std::error::Error + 'static)> {
    if let Some(StreamableHttpError::Client(inner)) = err.downcast_ref::<StreamableHttpError<reqwest::Error>>() {
        return Some(inner);
    }
    err.source()
}

/// `message` with the server's URL (which may carry a token) cut down to
/// what [`shown`] shows.
fn redact(message: &str, url: &str, shown_url: &str) -> String {
    let mut out = message.replace(url, shown_url);
    if let Ok(parsed) = Url::parse(url) {
        out = out.replace(parsed.as_str(), shown_url);
    }
    out
}

/// `message` cut to [`MAX_ERROR_CHARS`], saying how much was left out (cut
/// after redacting, so no part of a secret survives a cut through it).
fn bounded(message: String) -> String {
    match message.char_indices().nth(MAX_ERROR_CHARS) {
        Some((end, _)) => {
            let rest = message[end..].chars().count();
            format!("{}… ({rest} more characters)", &message[..end])
        }
        None => message,
    }
}

fn refused(host: &str, ip: IpAddr) -> String {
    format!(
        "refused to connect: {host} is {ip}, which is not a public address \
         (an operator can allow a private MCP server with LOGBOOK_MCP_PRIVATE_HOSTS)"
    )
}

/// The client's resolver: public addresses only, except for allowlisted hosts.
#[derive(Clone)]
struct CheckedResolver {
    inner: Arc<dyn HostResolver>,
    private_hosts: Arc<[String]>,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = self.clone();
        let host = name.as_str().to_ascii_lowercase();
        Box::pin(async move {
            let lookup = resolver.inner.lookup(host.clone());
            let addrs = match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                Ok(result) => result?,
                Err(_) => return Err(format!("resolving {host} timed out").into()),
            };
            if addrs.is_empty() {
                return Err(format!("{host} has no addresses").into());
            }
            if !resolver.private_hosts.contains(&host)
                && let Some(ip) = addrs.iter().find(|ip| !is_public(**ip))
            {
                return Err(refused(&host, *ip).into());
            }
            let addrs: Addrs =
                Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)).collect::<Vec<_>>().into_iter());
            Ok(addrs)
        })
    }
}
