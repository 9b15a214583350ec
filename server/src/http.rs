//! The HTTP app: the route table, the middleware every request passes, and the
//! operational endpoints (`/healthz`, `/metrics`, `/openapi.json`).
//!
//! [`routes`] is the single list of API routes: the router is built from it,
//! the OpenAPI document is generated from it, and the tenant-isolation test
//! walks it, so a route cannot exist without being documented and tested.
//!
//! Middleware, outermost first: request id (every response gets `request-id`,
//! and error bodies get `request_id`) and metrics; then, on API routes, the
//! beta header check, authentication, the credential's scope (each route says
//! which credentials it takes: API keys, or also the environment keys and
//! sessions tokens of self-hosted workers; see `api::work::access`), the rate
//! limit and the request timeout. Every request's body must arrive in time
//! (`body_deadline`, [`crate::transport::DeadlineBody`]).

use std::sync::Arc;
use std::time::Instant;

use axum::RequestExt;
use axum::extract::{DefaultBodyLimit, MatchedPath, RawPathParams, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::api::error::ApiError;
use crate::api::wire::MAX_BODY_BYTES;
use crate::api::work::access::PathParams;
use crate::api::work::{self, Access};
use crate::api::{agents, environments, events, files, resources, sessions, stream};
use crate::openapi;
use crate::ratelimit::Class;
use crate::state::AppState;
use crate::tenancy::{self, KeyScope, Principal, Tenant};
use crate::transport::{BodyProgress, DeadlineBody};

/// The beta every Managed Agents call must name.
pub const MANAGED_AGENTS_BETA: &str = "managed-agents-2026-04-01";

/// One API route.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub method: Method,
    pub path: &'static str,
    pub summary: &'static str,
    /// Streams never time out.
    pub streaming: bool,
    /// Which credentials it takes (API keys only, unless it is a route the
    /// self-hosted workers call).
    pub access: Access,
}

fn spec(method: Method, path: &'static str, summary: &'static str) -> RouteSpec {
    RouteSpec { method, path, summary, streaming: false, access: Access::API_KEY }
}

/// A route the self-hosted workers call, taking `access`.
fn worker_spec(method: Method, path: &'static str, summary: &'static str, access: Access) -> RouteSpec {
    RouteSpec { access, ..spec(method, path, summary) }
}

/// Which credentials each route (method, path template) takes.
/// Per route (method, path pattern): who may call it, and whether it streams
/// (no request timeout).
type AccessTable = std::collections::HashMap<(Method, &'static str), (Access, bool)>;

/// Every authenticated API route with its handler.
fn table() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    let mut routes = vec![
        (spec(Method::POST, "/v1/agents", "Create an agent"), post(agents::create)),
        (spec(Method::GET, "/v1/agents", "List agents"), get(agents::list)),
        (spec(Method::GET, "/v1/agents/{agent_id}", "Retrieve an agent (optionally a version)"), get(agents::retrieve)),
        (spec(Method::POST, "/v1/agents/{agent_id}", "Update an agent (new version)"), post(agents::update)),
        (spec(Method::POST, "/v1/agents/{agent_id}/archive", "Archive an agent"), post(agents::archive)),
        (spec(Method::GET, "/v1/agents/{agent_id}/versions", "List an agent's versions"), get(agents::versions)),
        (spec(Method::POST, "/v1/environments", "Create an environment"), post(environments::create)),
        (spec(Method::GET, "/v1/environments", "List environments"), get(environments::list)),
        (
            spec(Method::GET, "/v1/environments/{environment_id}", "Retrieve an environment"),
            get(environments::retrieve),
        ),
        (spec(Method::POST, "/v1/environments/{environment_id}", "Update an environment"), post(environments::update)),
        (
            spec(Method::DELETE, "/v1/environments/{environment_id}", "Delete an environment"),
            delete(environments::delete),
        ),
        (
            spec(Method::POST, "/v1/environments/{environment_id}/archive", "Archive an environment"),
            post(environments::archive),
        ),
        (spec(Method::POST, "/v1/sessions", "Create a session"), post(sessions::create)),
        (spec(Method::GET, "/v1/sessions", "List sessions"), get(sessions::list)),
        (
            worker_spec(Method::GET, "/v1/sessions/{session_id}", "Retrieve a session", Access::ANY),
            get(sessions::retrieve),
        ),
        (spec(Method::POST, "/v1/sessions/{session_id}", "Update a session"), post(sessions::update)),
        (spec(Method::DELETE, "/v1/sessions/{session_id}", "Delete a session"), delete(sessions::delete)),
        (spec(Method::POST, "/v1/sessions/{session_id}/archive", "Archive a session"), post(sessions::archive)),
        (
            worker_spec(Method::GET, "/v1/sessions/{session_id}/events", "List a session's events", Access::ANY),
            get(events::list),
        ),
        (
            worker_spec(Method::POST, "/v1/sessions/{session_id}/events", "Send events to a session", Access::ANY),
            post(events::send),
        ),
        (
            RouteSpec {
                streaming: true,
                access: Access::ANY,
                ..spec(Method::GET, "/v1/sessions/{session_id}/events/stream", "Stream a session's events (SSE)")
            },
            get(stream::stream),
        ),
    ];
    routes.extend(files_table());
    routes.extend(work_table());
    routes.extend(x_table());
    routes
}

/// The Files API and session resources.
fn files_table() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    let upload = post(files::upload).layer(DefaultBodyLimit::max(files::MAX_UPLOAD_BODY_BYTES));
    let resource = "/v1/sessions/{session_id}/resources/{resource_id}";
    vec![
        (RouteSpec { streaming: true, ..spec(Method::POST, "/v1/files", "Upload a file (multipart)") }, upload),
        (spec(Method::GET, "/v1/files", "List files (optionally of one session: scope_id)"), get(files::list)),
        (spec(Method::GET, "/v1/files/{file_id}", "Retrieve a file's metadata"), get(files::retrieve)),
        (spec(Method::DELETE, "/v1/files/{file_id}", "Delete a file"), delete(files::delete)),
        (
            RouteSpec { streaming: true, ..spec(Method::GET, "/v1/files/{file_id}/content", "Download a file") },
            get(files::content),
        ),
        (spec(Method::POST, "/v1/sessions/{session_id}/resources", "Add a file to a session"), post(resources::add)),
        (spec(Method::GET, "/v1/sessions/{session_id}/resources", "List a session's resources"), get(resources::list)),
        (spec(Method::GET, resource, "Retrieve a session resource"), get(resources::retrieve)),
        (spec(Method::POST, resource, "Rotate a repository resource's token"), post(resources::update)),
        (spec(Method::DELETE, resource, "Remove a file from a session"), delete(resources::delete)),
    ]
}

/// The self-hosted work queue (`client.beta.environments.work`).
fn work_table() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    const QUEUE: &str = "/v1/environments/{environment_id}/work";
    const ITEM: &str = "/v1/environments/{environment_id}/work/{work_id}";
    vec![
        (
            worker_spec(
                Method::GET,
                "/v1/environments/{environment_id}/work/poll",
                "Long-poll for a work item",
                Access::ENVIRONMENT_KEY,
            ),
            get(work::poll),
        ),
        (
            worker_spec(
                Method::POST,
                "/v1/environments/{environment_id}/work/{work_id}/ack",
                "Acknowledge a work item",
                Access::ENVIRONMENT_KEY,
            ),
            post(work::ack),
        ),
        (
            worker_spec(
                Method::POST,
                "/v1/environments/{environment_id}/work/{work_id}/heartbeat",
                "Renew a work item's lease",
                Access::WORKER,
            ),
            post(work::heartbeat),
        ),
        (
            worker_spec(
                Method::POST,
                "/v1/environments/{environment_id}/work/{work_id}/stop",
                "Stop a work item",
                Access::ANY,
            ),
            post(work::stop),
        ),
        (spec(Method::GET, ITEM, "Retrieve a work item"), get(work::retrieve)),
        (spec(Method::POST, ITEM, "Update a work item's metadata"), post(work::update)),
        (worker_spec(Method::GET, QUEUE, "List an environment's work items", Access::ENVIRONMENT_KEY), get(work::list)),
        (
            worker_spec(
                Method::GET,
                "/v1/environments/{environment_id}/work/stats",
                "Work queue statistics",
                Access::MONITOR,
            ),
            get(work::stats),
        ),
    ]
}

/// The `/x/v1` extension routes (no beta header needed; same keys and errors).
fn x_table() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    use crate::api::x;
    vec![
        (spec(Method::GET, "/x/v1/keys", "The public key signed heads are signed with"), get(x::audit::keys)),
        (
            spec(Method::GET, "/x/v1/sessions/{session_id}/verify", "Verify a session's chain; a signed head"),
            get(x::audit::verify),
        ),
        (
            RouteSpec {
                streaming: true,
                ..spec(Method::GET, "/x/v1/sessions/{session_id}/export", "Export a session as a verifiable bundle")
            },
            get(x::audit::export),
        ),
        (
            spec(
                Method::POST,
                "/x/v1/sessions/{session_id}/consistency",
                "Check that the log extends an earlier signed head",
            ),
            post(x::audit::check_consistency),
        ),
        (
            spec(Method::GET, "/x/v1/sessions/{session_id}/slice", "A filtered, budgeted view of a session's events"),
            get(x::slice::slice),
        ),
        (
            spec(Method::GET, "/x/v1/sessions/{session_id}/events/{seq}", "One event of a session, whole, by seq"),
            get(x::slice::event),
        ),
        (
            spec(Method::GET, "/x/v1/sessions/{session_id}/context", "A session's context fitted to a token budget"),
            get(x::state::context),
        ),
        (
            spec(Method::GET, "/x/v1/sessions/{session_id}/state", "A session's state after any seq"),
            get(x::state::state),
        ),
        (
            spec(Method::GET, "/x/v1/sessions/{session_id}/files/{*path}", "A workspace file's bytes at any seq"),
            get(x::state::file),
        ),
        (
            spec(Method::POST, "/x/v1/sessions/{session_id}/fork", "A new session continuing this one from any seq"),
            post(x::fork::fork),
        ),
        (
            spec(
                Method::POST,
                "/x/v1/environments/{environment_id}/work/healthcheck",
                "Queue a healthcheck item for a self-hosted environment's workers",
            ),
            post(work::healthcheck),
        ),
    ]
}

/// The API route table (without handlers).
pub fn routes() -> Vec<RouteSpec> {
    table().into_iter().map(|(spec, _)| spec).collect()
}

pub fn app(state: AppState) -> Router {
    let mut api = Router::new();
    let mut access = AccessTable::new();
    for (spec, handler) in table() {
        access.insert((spec.method.clone(), spec.path), (spec.access, spec.streaming));
        api = api.route(spec.path, handler);
    }
    let api = api
        .layer(middleware::from_fn_with_state((state.clone(), Arc::new(access)), guard))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/health", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_doc))
        .merge(api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

async fn healthz(State(state): State<AppState>) -> Response {
    let quarantined = state.store().quarantined();
    let damage = state.store().store_damage();
    let ok = quarantined.is_empty() && damage.is_empty();
    let body = json!({
        "status": if ok { "ok" } else { "degraded" },
        // Counts only: this route takes no key, and session ids and damage
        // reports belong to their workspaces and the operator
        // (`logbook verify`, the server's log).
        "quarantined_sessions": quarantined.len(),
        "store_damage": damage.len(),
    });
    Json(body).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let stats = state.store().barrier_stats();
    let extra = [
        ("logbook_store_barriers", "Durability barriers (fsync rounds) since start.", stats.n_syncs as f64),
        ("logbook_store_barrier_waits", "Writes that waited on a durability barrier.", stats.n_waits as f64),
        (
            "logbook_store_barrier_seconds",
            "Time spent writing and syncing the log's batches.",
            stats.sync_micros as f64 / 1e6,
        ),
        (
            "logbook_store_quarantined_sessions",
            "Sessions quarantined for integrity failures.",
            state.store().quarantined().len() as f64,
        ),
    ];
    let mut response = state.metrics().render(&extra).into_response();
    response.headers_mut().insert("content-type", HeaderValue::from_static("text/plain; version=0.0.4"));
    response
}

async fn openapi_doc() -> Json<Value> {
    Json(openapi::document(&routes()))
}

async fn method_not_allowed(request: Request) -> ApiError {
    let mut err = ApiError::invalid(format!("{} is not allowed on {}", request.method(), request.uri().path()));
    err.status = axum::http::StatusCode::METHOD_NOT_ALLOWED;
    err
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(format!("no route for {} {}", request.method(), request.uri().path()))
}

/// Request ids, error envelopes with the id, metrics, logs.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = state.new_id(state.now(), request_id);
    let method = request.method().clone();
    // A reference-counted copy of the route template, not a new string.
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    // A panicking handler answers 500 with the envelope and a request id
    // instead of dropping the connection (the SDK would retry blind).
    let run = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(body_deadline(&state, request, next)));
    let mut response = match run.await {
        Ok(response) => response,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            ApiError::internal(format!("request {request_id}: a handler panicked: {what}")).into_response()
        }
    };
    if response.extensions().get::<ApiError>().is_none() && is_bare_error(&response) {
        // An extractor's rejection (say, a path segment that is not UTF-8)
        // answers in plain text: give it the API's envelope too.
        let (parts, body) = response.into_parts();
        let text = axum::body::to_bytes(body, MAX_BARE_ERROR_BYTES).await.unwrap_or_default();
        let mut error = ApiError::for_status(parts.status, String::from_utf8_lossy(&text).trim());
        if error.message.is_empty() {
            error.message = parts.status.canonical_reason().unwrap_or("error").to_owned();
        }
        response = Response::from_parts(parts, axum::body::Body::empty());
        response.extensions_mut().insert(error);
    }
    if let Some(error) = response.extensions().get::<ApiError>().cloned() {
        let headers = response.headers().clone();
        let mut rebuilt = (error.status, Json(error.body(Some(&request_id)))).into_response();
        for (name, value) in &headers {
            if name != "content-length" && name != "content-type" {
                rebuilt.headers_mut().insert(name, value.clone());
            }
        }
        response = rebuilt;
    }
    let status = response.status();
    let seconds = started.elapsed().as_secs_f64();
    state.metrics().observe(method_label(&method), route, status.as_u16(), seconds);
    if status.is_server_error() {
        tracing::warn!(request_id = %request_id, %method, %route, status = status.as_u16(), seconds, "request failed");
    } else {
        tracing::debug!(request_id = %request_id, %method, %route, status = status.as_u16(), seconds, "request");
    }
    // Last, as it takes the id's string (the header keeps its bytes, uncopied).
    if let Ok(value) = HeaderValue::try_from(request_id) {
        response.headers_mut().insert("request-id", value);
    }
    response
}

/// Bounds how long a request body may take to arrive
/// ([`crate::transport::DeadlineBody`]). A body cut off answers 408 whatever
/// the handler made of the failed read, and closes the connection (the rest
/// of the body may still be on its way).
///
/// Called by [`observe`], inside it, rather than as a middleware layer of its
/// own: each layer costs every request a clone of the service under it and
/// a boxed future.
async fn body_deadline(state: &AppState, request: Request, next: Next) -> Response {
    if http_body::Body::is_end_stream(request.body()) {
        // No body (most GETs and DELETEs): nothing to time.
        return next.run(request).await;
    }
    let timeout = state.config().body_read_timeout;
    let progress = Arc::new(BodyProgress::default());
    let body_progress = Arc::clone(&progress);
    let mut request = request.map(|body| axum::body::Body::new(DeadlineBody::new(body, timeout, body_progress)));
    // For `guard`'s request timeout.
    request.extensions_mut().insert(Arc::clone(&progress));
    let response = next.run(request).await;
    if !progress.timed_out() {
        return response;
    }
    let message = format!(
        "the request body took too long to arrive: it must arrive within {} s, plus 1 s per {} KiB received",
        timeout.as_secs(),
        crate::transport::BODY_MIN_BYTES_PER_SEC / 1024
    );
    body_too_slow(message)
}

/// 408 for a request whose body did not arrive in time, closing the
/// connection: the rest of the body may still be on its way.
fn body_too_slow(message: String) -> Response {
    let mut response = ApiError::request_timeout(message).into_response();
    response.headers_mut().insert(axum::http::header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Most bytes of a plain-text error body carried into the envelope's message.
const MAX_BARE_ERROR_BYTES: usize = 4096;

/// An error response without the API's envelope: plain text or nothing.
fn is_bare_error(response: &Response) -> bool {
    let status = response.status();
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    (status.is_client_error() || status.is_server_error()) && !content_type.starts_with("application/json")
}

/// A method as `/metrics` labels it: a client may send any token as a
/// method, and each would otherwise be a series of its own, kept for good.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// A request id, `req_` and a ULID: one allocation, sized for it.
fn request_id(ms: u64, random: u128) -> String {
    use std::fmt::Write;
    let ulid = logbook_core::EventId::from_parts(ms, random);
    let mut id = String::with_capacity(REQUEST_ID_CAPACITY);
    // Writing to a String cannot fail.
    let _ = write!(id, "{ulid}");
    id.replace_range(..logbook_core::EventId::PREFIX.len(), REQUEST_ID_PREFIX);
    id
}

/// What a request id starts with.
const REQUEST_ID_PREFIX: &str = "req_";
/// The bytes of an event id's text (its prefix and a 26-character ULID):
/// room for the request id made from it.
const REQUEST_ID_CAPACITY: usize = logbook_core::EventId::PREFIX.len() + 26;

/// Whether the `anthropic-beta` headers (each a comma-separated list) name `beta`.
pub fn has_beta(headers: &axum::http::HeaderMap, beta: &str) -> bool {
    headers
        .get_all("anthropic-beta")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|b| b.trim() == beta)
}

/// Beta header, authentication, rate limit and timeout for API routes.
async fn guard(
    State((state, access)): State<(AppState, Arc<AccessTable>)>,
    mut request: Request,
    next: Next,
) -> Response {
    match admit(&state, &access, &mut request).await {
        Ok(streaming) => {
            if streaming {
                return next.run(request).await;
            }
            let reads = matches!(*request.method(), Method::GET | Method::HEAD);
            let body = request.extensions().get::<Arc<BodyProgress>>().cloned();
            match tokio::time::timeout(state.config().request_timeout, next.run(request)).await {
                Ok(response) => response,
                Err(_) if body.is_some_and(|body| body.waiting_for_client()) => {
                    // The handler was waiting for the rest of the body: the
                    // client's slowness, not ours, and nothing was done yet.
                    let timeout = state.config().request_timeout.as_secs_f64();
                    body_too_slow(format!("the request body was still arriving when the request's {timeout} s ran out"))
                }
                Err(_) if reads => ApiError::timeout("the request took too long; retry").into_response(),
                Err(_) => {
                    // The write may still land (work handed to the store goes
                    // on): a blind retry could make it twice. Read, then decide.
                    let mut err =
                        ApiError::timeout("the request took too long; it may still take effect: check before retrying");
                    err.should_retry = Some(false);
                    err.into_response()
                }
            }
        }
        Err(err) => err.into_response(),
    }
}

/// Checks a request's headers and key, and that the key's scope reaches the
/// route and its objects; returns whether the route streams.
async fn admit(state: &AppState, access: &AccessTable, request: &mut Request) -> Result<bool, ApiError> {
    let headers = request.headers();
    let path = request.uri().path();
    let extension = path.starts_with("/x/");
    // The Files API has its own beta, which the SDK does not send by default.
    let files = path == "/v1/files" || path.starts_with("/v1/files/");
    if !extension && !files && !has_beta(headers, MANAGED_AGENTS_BETA) {
        return Err(ApiError::invalid(format!(
            "the anthropic-beta header must include {MANAGED_AGENTS_BETA} to use the Managed Agents API"
        )));
    }
    let key = if let Some(value) = headers.get("x-api-key") {
        value.to_str().ok().map(str::trim).map(str::to_owned)
    } else if let Some(value) = headers.get("authorization") {
        // The scheme is case-insensitive (RFC 9110 §11.1).
        value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, key)| key.trim().to_owned())
    } else {
        return Err(ApiError::unauthenticated("missing API key: send it as x-api-key or as Authorization: Bearer"));
    };
    let key = key.ok_or_else(|| ApiError::unauthenticated("malformed API key header"))?;
    let route = request.extensions().get::<MatchedPath>().map(|path| path.as_str().to_owned());
    let (route_access, streaming) = route
        .as_deref()
        .and_then(|path| access.get(&(request.method().clone(), path)))
        .copied()
        .unwrap_or((Access::API_KEY, false));
    let now = state.now();
    let hash = tenancy::key_hash(&key);
    // A workspace key passes any route that takes API keys without the store.
    let cached = state.key_cache().get(&hash, Instant::now()).filter(|_| route_access.api_key);
    let principal: Principal = match cached {
        Some(principal) => principal,
        None => {
            let params = match request.extract_parts::<RawPathParams>().await {
                Ok(raw) => PathParams(raw.iter().map(|(name, value)| (name.to_owned(), value.to_owned())).collect()),
                Err(_) => PathParams::default(),
            };
            let principal = state
                .blocking(move |store| {
                    let principal = tenancy::authenticate_principal(store, &key)?;
                    work::access::check(store, &principal, route_access, &params, now)?;
                    Ok(principal)
                })
                .await?;
            state.key_cache().insert(hash, principal, Instant::now());
            principal
        }
    };
    let tenant: Tenant = principal.tenant();
    // Workers have their own allowance (see `ratelimit`): their polls and
    // heartbeats never use up the workspace's API limits.
    let class = match principal.scope {
        KeyScope::Environment { .. } | KeyScope::WorkSession { .. } => Class::Work,
        KeyScope::Workspace => match *request.method() {
            Method::GET | Method::HEAD => Class::Read,
            _ => Class::Create,
        },
    };
    if let Err(wait_ms) = state.limiter().check(tenant.workspace, class, state.now()) {
        state.metrics().rate_limited.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Err(ApiError::rate_limited(wait_ms));
    }
    // Streams, exports and file transfers (`RouteSpec::streaming`) are not
    // cut off by the request timeout.
    request.extensions_mut().insert(tenant);
    request.extensions_mut().insert(principal);
    Ok(streaming)
}
