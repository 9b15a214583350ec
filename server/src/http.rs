//! The HTTP app: the route table, the middleware every request passes, and the
//! operational endpoints (`/healthz`, `/metrics`, `/openapi.json`).
//!
//! [`routes`] is the single list of API routes: the router is built from it,
//! the OpenAPI document is generated from it (with each route's query
//! parameters, request body and response), and the tenant-isolation test
//! walks it, so a route cannot exist without being documented and tested.
//! [`operational_routes`] lists the others the router serves, also documented.
//!
//! Middleware, outermost first: request id (every response gets `request-id`,
//! and error bodies get `request_id`) and metrics; then, on API routes, the
//! beta header check, authentication, the credential's scope (each route says
//! which credentials it takes: API keys, or also the environment keys and
//! sessions tokens of self-hosted workers; see `api::work::access`), the rate
//! limit, the body limit (32 MB, the file upload's own above it; also on
//! routes whose handler reads no body) and the request timeout. Every
//! request's body must arrive in time (`body_deadline`,
//! [`crate::transport::DeadlineBody`]).

use std::sync::Arc;
use std::time::Instant;

use axum::RequestExt;
use axum::extract::{DefaultBodyLimit, MatchedPath, RawPathParams, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::api::error::ApiError;
use crate::api::wire::MAX_BODY_BYTES;
use crate::api::work::access::PathParams;
use crate::api::work::{self, Access};
use crate::api::{agents, environments, events, files, resources, sessions, stream, threads};
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
    /// The query parameters its handler reads (`api::wire::Query`).
    pub query: &'static [QueryParam],
    /// What its handler reads as the request body.
    pub body: RequestBody,
    /// What it answers with on success.
    pub response: ResponseBody,
    /// The request headers its handler reads, beyond the credentials and
    /// `anthropic-beta` that every route takes.
    pub headers: &'static [HeaderParam],
    /// The error statuses it answers beyond those every API route may
    /// (`openapi::api_operation` lists those).
    pub errors: &'static [ErrorStatus],
}

impl RouteSpec {
    /// The largest request body the route takes: the API's 32 MB, or the
    /// file upload's own limit.
    pub fn max_body_bytes(&self) -> usize {
        match self.body {
            RequestBody::None | RequestBody::Json | RequestBody::OptionalJson => MAX_BODY_BYTES,
            RequestBody::Multipart => files::MAX_UPLOAD_BODY_BYTES,
        }
    }
}

/// A query parameter a route's handler reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryParam {
    /// As the SDK sends it: arrays as `name[]`, ranges as `name[gte]`.
    pub name: &'static str,
    pub kind: ParamKind,
    pub description: &'static str,
}

/// A request header a route's handler reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderParam {
    /// As the API documents it (header names are case-insensitive).
    pub name: &'static str,
    pub description: &'static str,
}

/// An error status only some routes answer, with the envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorStatus {
    pub status: u16,
    /// When, naming the envelope's `error_code` if it has one.
    pub description: &'static str,
}

/// The type of a query parameter's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    String,
    Integer,
    /// `true` or `false`.
    Boolean,
    /// An RFC 3339 datetime or a bare date.
    DateTime,
    /// Repeated: `name[]=a&name[]=b`.
    StringArray,
}

/// What a route's handler reads as its request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    /// Nothing. A body sent anyway is still held to the limit: the guard
    /// reads it (at most [`MAX_BODY_BYTES`]) before the handler runs, and
    /// hands the handler the same bytes.
    None,
    /// A JSON object with required fields: the route needs a body.
    Json,
    /// A JSON object whose fields are all optional; an empty body reads as `{}`.
    OptionalJson,
    /// `multipart/form-data` with a `file` part (the file upload).
    Multipart,
}

/// What a route answers with on success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseBody {
    Json,
    /// Server-sent events.
    EventStream,
    /// A file's bytes.
    Bytes,
    /// JSON Lines (an exported bundle).
    JsonLines,
    /// Prometheus' text format.
    Text,
}

fn spec(method: Method, path: &'static str, summary: &'static str) -> RouteSpec {
    RouteSpec {
        method,
        path,
        summary,
        streaming: false,
        access: Access::API_KEY,
        query: &[],
        body: RequestBody::None,
        response: ResponseBody::Json,
        headers: &[],
        errors: &[],
    }
}

/// A route the self-hosted workers call, taking `access`.
fn worker_spec(method: Method, path: &'static str, summary: &'static str, access: Access) -> RouteSpec {
    RouteSpec { access, ..spec(method, path, summary) }
}

/// A route that reads a JSON body with required fields.
fn json_spec(method: Method, path: &'static str, summary: &'static str) -> RouteSpec {
    RouteSpec { body: RequestBody::Json, ..spec(method, path, summary) }
}

/// A route that reads a JSON body whose fields are all optional.
fn optional_json_spec(method: Method, path: &'static str, summary: &'static str) -> RouteSpec {
    RouteSpec { body: RequestBody::OptionalJson, ..spec(method, path, summary) }
}

/// A GET route whose handler reads `query`.
fn query_spec(path: &'static str, summary: &'static str, query: &'static [QueryParam]) -> RouteSpec {
    RouteSpec { query, ..spec(Method::GET, path, summary) }
}

/// What the guard needs to know of a route: who may call it, whether it
/// streams (no request timeout), and its body's limit.
#[derive(Debug, Clone, Copy)]
struct RouteRule {
    access: Access,
    streaming: bool,
    max_body_bytes: usize,
    /// The handler reads no body, so the guard reads it first to hold it to
    /// `max_body_bytes` ([`RequestBody::None`]).
    read_body_first: bool,
}

impl RouteRule {
    /// A method the route does not have (answered 405): API keys and the
    /// API's body limit; the answer reads no body, so none is read.
    const UNMATCHED: RouteRule =
        RouteRule { access: Access::API_KEY, streaming: false, max_body_bytes: MAX_BODY_BYTES, read_body_first: false };

    fn of(spec: &RouteSpec) -> RouteRule {
        let read_body_first = match spec.body {
            RequestBody::None => true,
            // The handler's extractor reads the body, within the route's
            // `DefaultBodyLimit`.
            RequestBody::Json | RequestBody::OptionalJson | RequestBody::Multipart => false,
        };
        RouteRule {
            access: spec.access,
            streaming: spec.streaming,
            max_body_bytes: spec.max_body_bytes(),
            read_body_first,
        }
    }
}

/// The rule of each route, by method and path template.
type RouteRules = std::collections::HashMap<(Method, &'static str), RouteRule>;

/// Every authenticated API route with its handler.
fn table() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    let mut routes = vec![
        (json_spec(Method::POST, "/v1/agents", "Create an agent"), post(agents::create)),
        (query_spec("/v1/agents", "List agents", query::AGENTS), get(agents::list)),
        (
            query_spec("/v1/agents/{agent_id}", "Retrieve an agent (optionally a version)", query::AGENT),
            get(agents::retrieve),
        ),
        (
            optional_json_spec(Method::POST, "/v1/agents/{agent_id}", "Update an agent (new version)"),
            post(agents::update),
        ),
        (spec(Method::POST, "/v1/agents/{agent_id}/archive", "Archive an agent"), post(agents::archive)),
        (query_spec("/v1/agents/{agent_id}/versions", "List an agent's versions", query::PAGED), get(agents::versions)),
        (json_spec(Method::POST, "/v1/environments", "Create an environment"), post(environments::create)),
        (query_spec("/v1/environments", "List environments", query::ENVIRONMENTS), get(environments::list)),
        (
            spec(Method::GET, "/v1/environments/{environment_id}", "Retrieve an environment"),
            get(environments::retrieve),
        ),
        (
            optional_json_spec(Method::POST, "/v1/environments/{environment_id}", "Update an environment"),
            post(environments::update),
        ),
        (
            spec(Method::DELETE, "/v1/environments/{environment_id}", "Delete an environment"),
            delete(environments::delete),
        ),
        (
            spec(Method::POST, "/v1/environments/{environment_id}/archive", "Archive an environment"),
            post(environments::archive),
        ),
        (json_spec(Method::POST, "/v1/sessions", "Create a session"), post(sessions::create)),
        (query_spec("/v1/sessions", "List sessions", query::SESSIONS), get(sessions::list)),
        (
            worker_spec(Method::GET, "/v1/sessions/{session_id}", "Retrieve a session", Access::ANY),
            get(sessions::retrieve),
        ),
        (optional_json_spec(Method::POST, "/v1/sessions/{session_id}", "Update a session"), post(sessions::update)),
        (spec(Method::DELETE, "/v1/sessions/{session_id}", "Delete a session"), delete(sessions::delete)),
        (spec(Method::POST, "/v1/sessions/{session_id}/archive", "Archive a session"), post(sessions::archive)),
        (
            RouteSpec {
                access: Access::ANY,
                ..query_spec("/v1/sessions/{session_id}/events", "List a session's events", query::EVENTS)
            },
            get(events::list),
        ),
        (
            RouteSpec {
                access: Access::ANY,
                ..json_spec(Method::POST, "/v1/sessions/{session_id}/events", "Send events to a session")
            },
            post(events::send),
        ),
        (
            RouteSpec {
                streaming: true,
                access: Access::ANY,
                response: ResponseBody::EventStream,
                headers: headers::STREAM,
                ..query_spec(
                    "/v1/sessions/{session_id}/events/stream",
                    "Stream a session's events (SSE)",
                    query::STREAM,
                )
            },
            get(stream::stream),
        ),
        (
            query_spec(
                "/v1/sessions/{session_id}/threads",
                "List a session's threads (its primary thread)",
                query::THREADS,
            ),
            get(threads::list),
        ),
        (
            spec(Method::GET, "/v1/sessions/{session_id}/threads/{thread_id}", "Retrieve a session thread"),
            get(threads::retrieve),
        ),
        (
            spec(Method::POST, "/v1/sessions/{session_id}/threads/{thread_id}/archive", "Archive a session thread"),
            post(threads::archive),
        ),
        (
            query_spec("/v1/sessions/{session_id}/threads/{thread_id}/events", "List a thread's events", query::PAGED),
            get(threads::events),
        ),
        (
            RouteSpec {
                streaming: true,
                response: ResponseBody::EventStream,
                headers: headers::STREAM,
                ..query_spec(
                    "/v1/sessions/{session_id}/threads/{thread_id}/stream",
                    "Stream a thread's events (SSE)",
                    query::STREAM,
                )
            },
            get(threads::stream),
        ),
    ];
    routes.extend(files_table());
    routes.extend(work_table());
    routes.extend(x_table());
    routes
}

/// The Files API and session resources.
fn files_table() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    let resource = "/v1/sessions/{session_id}/resources/{resource_id}";
    vec![
        (
            RouteSpec {
                streaming: true,
                body: RequestBody::Multipart,
                ..spec(Method::POST, "/v1/files", "Upload a file (multipart)")
            },
            post(files::upload),
        ),
        (query_spec("/v1/files", "List files (optionally of one session: scope_id)", query::FILES), get(files::list)),
        (spec(Method::GET, "/v1/files/{file_id}", "Retrieve a file's metadata"), get(files::retrieve)),
        (spec(Method::DELETE, "/v1/files/{file_id}", "Delete a file"), delete(files::delete)),
        (
            RouteSpec {
                streaming: true,
                response: ResponseBody::Bytes,
                ..spec(Method::GET, "/v1/files/{file_id}/content", "Download a file")
            },
            get(files::content),
        ),
        (
            json_spec(Method::POST, "/v1/sessions/{session_id}/resources", "Add a file to a session"),
            post(resources::add),
        ),
        (
            query_spec("/v1/sessions/{session_id}/resources", "List a session's resources", query::PAGED),
            get(resources::list),
        ),
        (spec(Method::GET, resource, "Retrieve a session resource"), get(resources::retrieve)),
        (json_spec(Method::POST, resource, "Rotate a repository resource's token"), post(resources::update)),
        (spec(Method::DELETE, resource, "Remove a file from a session"), delete(resources::delete)),
    ]
}

/// The self-hosted work queue (`client.beta.environments.work`).
fn work_table() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    const QUEUE: &str = "/v1/environments/{environment_id}/work";
    const ITEM: &str = "/v1/environments/{environment_id}/work/{work_id}";
    vec![
        (
            RouteSpec {
                access: Access::ENVIRONMENT_KEY,
                headers: headers::POLL,
                ..query_spec("/v1/environments/{environment_id}/work/poll", "Long-poll for a work item", query::POLL)
            },
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
            RouteSpec {
                query: query::HEARTBEAT,
                errors: &[ErrorStatus {
                    status: 412,
                    description: "heartbeat_precondition_failed: expected_last_heartbeat is not the lease's last \
                                  heartbeat (another worker may hold it), or the item is queued again (never \
                                  acknowledged, or its lease lapsed); details.current_state is the lease as the \
                                  server holds it",
                }],
                ..worker_spec(
                    Method::POST,
                    "/v1/environments/{environment_id}/work/{work_id}/heartbeat",
                    "Renew a work item's lease",
                    Access::WORKER,
                )
            },
            post(work::heartbeat),
        ),
        (
            RouteSpec {
                access: Access::ANY,
                ..optional_json_spec(
                    Method::POST,
                    "/v1/environments/{environment_id}/work/{work_id}/stop",
                    "Stop a work item",
                )
            },
            post(work::stop),
        ),
        (spec(Method::GET, ITEM, "Retrieve a work item"), get(work::retrieve)),
        (json_spec(Method::POST, ITEM, "Update a work item's metadata"), post(work::update)),
        (
            RouteSpec {
                access: Access::ENVIRONMENT_KEY,
                ..query_spec(QUEUE, "List an environment's work items", query::PAGED)
            },
            get(work::list),
        ),
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
                response: ResponseBody::JsonLines,
                ..spec(Method::GET, "/x/v1/sessions/{session_id}/export", "Export a session as a verifiable bundle")
            },
            get(x::audit::export),
        ),
        (
            json_spec(
                Method::POST,
                "/x/v1/sessions/{session_id}/consistency",
                "Check that the log extends an earlier signed head",
            ),
            post(x::audit::check_consistency),
        ),
        (
            query_spec(
                "/x/v1/sessions/{session_id}/slice",
                "A filtered, budgeted view of a session's events",
                query::SLICE,
            ),
            get(x::slice::slice),
        ),
        (
            spec(Method::GET, "/x/v1/sessions/{session_id}/events/{seq}", "One event of a session, whole, by seq"),
            get(x::slice::event),
        ),
        (
            query_spec(
                "/x/v1/sessions/{session_id}/context",
                "A session's context fitted to a token budget",
                query::CONTEXT,
            ),
            get(x::state::context),
        ),
        (
            query_spec("/x/v1/sessions/{session_id}/state", "A session's state after any seq", query::AT_SEQ_ONLY),
            get(x::state::state),
        ),
        (
            RouteSpec {
                response: ResponseBody::Bytes,
                ..query_spec(
                    "/x/v1/sessions/{session_id}/files/{*path}",
                    "A workspace file's bytes at any seq",
                    query::AT_SEQ_ONLY,
                )
            },
            get(x::state::file),
        ),
        (
            json_spec(
                Method::POST,
                "/x/v1/sessions/{session_id}/fork",
                "A new session continuing this one from any seq",
            ),
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

/// The query parameters of the route table, as the handlers read them.
mod query {
    use super::{ParamKind, QueryParam};

    const fn param(name: &'static str, kind: ParamKind, description: &'static str) -> QueryParam {
        QueryParam { name, kind, description }
    }

    const LIMIT: QueryParam = param("limit", ParamKind::Integer, "Page size");
    const PAGE: QueryParam = param("page", ParamKind::String, "The cursor of the page to read (a list's next_page)");
    const ORDER: QueryParam = param("order", ParamKind::String, "asc or desc");
    const INCLUDE_ARCHIVED: QueryParam =
        param("include_archived", ParamKind::Boolean, "Whether archived objects are listed too");
    const CREATED_GT: QueryParam = param("created_at[gt]", ParamKind::DateTime, "Created after");
    const CREATED_GTE: QueryParam = param("created_at[gte]", ParamKind::DateTime, "Created at or after");
    const CREATED_LT: QueryParam = param("created_at[lt]", ParamKind::DateTime, "Created before");
    const CREATED_LTE: QueryParam = param("created_at[lte]", ParamKind::DateTime, "Created at or before");
    const AT_SEQ: QueryParam = param("at_seq", ParamKind::Integer, "The seq to answer as of (default: the last)");
    const BUDGET_TOKENS: QueryParam = param("budget_tokens", ParamKind::Integer, "The token budget");
    const TYPES: QueryParam = param("types[]", ParamKind::StringArray, "Only events of these types");

    pub(super) const PAGED: &[QueryParam] = &[LIMIT, PAGE];
    pub(super) const AGENTS: &[QueryParam] =
        &[LIMIT, PAGE, INCLUDE_ARCHIVED, CREATED_GT, CREATED_GTE, CREATED_LT, CREATED_LTE];
    pub(super) const AGENT: &[QueryParam] =
        &[param("version", ParamKind::Integer, "The version to retrieve (default: the latest)")];
    pub(super) const ENVIRONMENTS: &[QueryParam] = &[LIMIT, PAGE, INCLUDE_ARCHIVED];
    pub(super) const SESSIONS: &[QueryParam] = &[
        LIMIT,
        PAGE,
        ORDER,
        INCLUDE_ARCHIVED,
        CREATED_GT,
        CREATED_GTE,
        CREATED_LT,
        CREATED_LTE,
        param("statuses[]", ParamKind::StringArray, "Only sessions with these statuses"),
        param("agent_id", ParamKind::String, "Only sessions of this agent"),
        param("agent_version", ParamKind::Integer, "Only sessions of this version of agent_id"),
        param("deployment_id", ParamKind::String, "Logbook has no deployments: matches nothing"),
        param("memory_store_id", ParamKind::String, "Logbook has no memory stores: matches nothing"),
    ];
    pub(super) const EVENTS: &[QueryParam] =
        &[LIMIT, PAGE, ORDER, CREATED_GT, CREATED_GTE, CREATED_LT, CREATED_LTE, TYPES];
    pub(super) const THREADS: &[QueryParam] =
        &[LIMIT, PAGE, param("statuses[]", ParamKind::StringArray, "Only threads with these statuses")];
    pub(super) const STREAM: &[QueryParam] = &[param(
        "event_deltas[]",
        ParamKind::StringArray,
        "Also stream the deltas of these events (agent.message, agent.thinking)",
    )];
    pub(super) const FILES: &[QueryParam] = &[
        LIMIT,
        PAGE,
        param("scope_id", ParamKind::String, "Only the files of this session (needs the Managed Agents beta)"),
        param("ids[]", ParamKind::StringArray, "Only these files (not with limit or page)"),
    ];
    pub(super) const POLL: &[QueryParam] = &[
        param("block_ms", ParamKind::Integer, "How long to wait for an item (omit for a poll that does not wait)"),
        param("reclaim_older_than_ms", ParamKind::Integer, "Claim items claimed but not acked for this long"),
    ];
    pub(super) const HEARTBEAT: &[QueryParam] = &[
        param("desired_ttl_seconds", ParamKind::Integer, "The lease's new time to live"),
        param(
            "expected_last_heartbeat",
            ParamKind::String,
            "The last_heartbeat of the previous heartbeat (the first: the lease's no-heartbeat marker)",
        ),
    ];
    pub(super) const SLICE: &[QueryParam] = &[
        TYPES,
        param("tools[]", ParamKind::StringArray, "Only the calls and results of these tools"),
        param("path", ParamKind::String, "Only the tool calls that touched this path, with their results"),
        param("include_internal", ParamKind::Boolean, "Whether internal (x.*) events are included"),
        param("from_seq", ParamKind::Integer, "The first seq"),
        param("to_seq", ParamKind::Integer, "The last seq"),
        param("last_turns", ParamKind::Integer, "Only the last this many turns"),
        BUDGET_TOKENS,
        LIMIT,
        ORDER,
    ];
    pub(super) const CONTEXT: &[QueryParam] = &[AT_SEQ, BUDGET_TOKENS];
    pub(super) const AT_SEQ_ONLY: &[QueryParam] = &[AT_SEQ];
}

/// The request headers of the route table, as the handlers read them.
mod headers {
    use super::HeaderParam;

    pub(super) const STREAM: &[HeaderParam] = &[HeaderParam {
        name: "Last-Event-ID",
        description: "Resume after this event of the session (the id of the last event received): the stream \
                      sends the events after it, then live ones; without it, the stream starts with live events",
    }];
    pub(super) const POLL: &[HeaderParam] = &[HeaderParam {
        name: "Anthropic-Worker-ID",
        description: "The polling worker's id (1 to 256 visible ASCII characters)",
    }];
}

/// The API route table (without handlers).
pub fn routes() -> Vec<RouteSpec> {
    table().into_iter().map(|(spec, _)| spec).collect()
}

/// A route outside the API: a GET that takes no key and no beta header, and
/// is not rate limited.
#[derive(Debug, Clone)]
pub struct OperationalRoute {
    pub path: &'static str,
    pub summary: &'static str,
    pub response: ResponseBody,
}

/// The operational routes with their handlers.
fn operational_table() -> Vec<(OperationalRoute, MethodRouter<AppState>)> {
    let route = |path, summary, response| OperationalRoute { path, summary, response };
    vec![
        (route("/healthz", "Liveness and store health", ResponseBody::Json), get(healthz)),
        (route("/health", "Liveness and store health (as /healthz)", ResponseBody::Json), get(healthz)),
        (route("/metrics", "Prometheus metrics", ResponseBody::Text), get(metrics)),
        (route("/openapi.json", "This document", ResponseBody::Json), get(openapi_doc)),
    ]
}

/// The operational routes (without handlers).
pub fn operational_routes() -> Vec<OperationalRoute> {
    operational_table().into_iter().map(|(route, _)| route).collect()
}

pub fn app(state: AppState) -> Router {
    let mut api = Router::new();
    let mut rules = RouteRules::new();
    for (spec, handler) in table() {
        rules.insert((spec.method.clone(), spec.path), RouteRule::of(&spec));
        api = api.route(spec.path, handler.layer(DefaultBodyLimit::max(spec.max_body_bytes())));
    }
    let api = api.layer(middleware::from_fn_with_state((state.clone(), Arc::new(rules)), guard));
    let mut router = Router::new();
    for (route, handler) in operational_table() {
        router = router.route(route.path, handler);
    }
    router
        .merge(api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

async fn healthz(State(state): State<AppState>) -> Response {
    let quarantined = state.store().quarantined();
    let damage = state.store().store_damage();
    // A store that stopped accepting writes (fail-stop after a failed sync)
    // answers every write 503 until the server restarts: unhealthy, so that
    // a supervisor restarts it. Its reason stays in the server's log.
    let writable = state.store().poisoned().is_none();
    // Low on disk, the server takes no new work from clients (`diskguard`).
    let disk_low = state.disk_guard().is_some_and(|guard| guard.low(Instant::now()).is_some());
    let ok = quarantined.is_empty() && damage.is_empty() && !disk_low;
    let status = match (writable, ok) {
        (false, _) => "failing",
        (true, true) => "ok",
        (true, false) => "degraded",
    };
    let code = if writable { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": status,
        "writable": writable,
        // Counts only: this route takes no key, and session ids and damage
        // reports belong to their workspaces and the operator
        // (`logbook verify`, the server's log).
        "quarantined_sessions": quarantined.len(),
        "store_damage": damage.len(),
        "disk_low": disk_low,
    });
    (code, Json(body)).into_response()
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
        (
            "logbook_runner_sessions",
            "Sessions with a runner task (working, or deciding what to do next).",
            state.runner().map_or(0, |runner| runner.n_active()) as f64,
        ),
        (
            "logbook_runner_folded_bytes",
            "Canonical bytes of the session logs the runner keeps folded for their next wake.",
            state.runner().map_or(0, |runner| runner.folded_usage().1) as f64,
        ),
    ];
    let mut response = state.metrics().render(&extra).into_response();
    response.headers_mut().insert("content-type", HeaderValue::from_static("text/plain; version=0.0.4"));
    response
}

async fn openapi_doc() -> Json<Value> {
    Json(openapi::document(&routes(), &operational_routes()))
}

async fn method_not_allowed(request: Request) -> ApiError {
    let mut err = ApiError::invalid(format!("{} is not allowed on {}", request.method(), request.uri().path()));
    err.status = StatusCode::METHOD_NOT_ALLOWED;
    err
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(format!("no route for {} {}", request.method(), request.uri().path()))
}

/// Most bytes of header fields a request may carry (names, values and
/// their separators): more is refused with 431 before anything runs.
/// hyper's own bound on a request head (`transport::MAX_HEAD_BUFFER_BYTES`)
/// is larger, so requests between the two get the API's envelope.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The 431 for `headers` if they are over [`MAX_HEADER_BYTES`].
fn headers_too_large(headers: &HeaderMap) -> Option<ApiError> {
    let bytes: usize = headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    (bytes > MAX_HEADER_BYTES).then(|| {
        ApiError::for_status(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("the request's headers take {bytes} bytes, over the limit of {MAX_HEADER_BYTES}"),
        )
    })
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
    let oversized = headers_too_large(request.headers());
    let run = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(body_deadline(&state, request, next)));
    let mut response = match oversized {
        Some(error) => error.into_response(),
        None => run.await.unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            ApiError::internal(format!("request {request_id}: a handler panicked: {what}")).into_response()
        }),
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
pub fn has_beta(headers: &HeaderMap, beta: &str) -> bool {
    headers
        .get_all("anthropic-beta")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|b| b.trim() == beta)
}

/// Beta header, authentication, rate limit, body limit and timeout for API
/// routes.
async fn guard(
    State((state, rules)): State<(AppState, Arc<RouteRules>)>,
    mut request: Request,
    next: Next,
) -> Response {
    let rule = match admit(&state, &rules, &mut request).await {
        Ok(rule) => rule,
        Err(err) => return err.into_response(),
    };
    // A declared length over the limit is refused before anything reads
    // the body, on every route: those whose handler never reads it too.
    if declared_length(&request).is_some_and(|n| n > rule.max_body_bytes) {
        return body_too_large(rule.max_body_bytes).into_response();
    }
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    let body = request.extensions().get::<Arc<BodyProgress>>().cloned();
    let run = async move {
        let request =
            if rule.read_body_first { read_unread_body(request, rule.max_body_bytes).await? } else { request };
        Ok::<_, ApiError>(next.run(request).await)
    };
    if rule.streaming {
        return run.await.unwrap_or_else(IntoResponse::into_response);
    }
    match tokio::time::timeout(state.config().request_timeout, run).await {
        Ok(response) => response.unwrap_or_else(IntoResponse::into_response),
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

/// The request's `content-length`, if it has one that parses.
fn declared_length(request: &Request) -> Option<usize> {
    request.headers().get(axum::http::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn body_too_large(limit: usize) -> ApiError {
    ApiError::too_large(format!("request body is over the limit of {limit} bytes"))
}

/// The request of a route whose handler reads no body, with its body read
/// first, so that a body sent without a `content-length` (chunked) is held
/// to the limit as well: over `limit` bytes is a 413 and the handler does
/// not run. The handler gets the same bytes. An empty body (nearly every
/// such request) is not touched.
async fn read_unread_body(request: Request, limit: usize) -> Result<Request, ApiError> {
    use futures_util::StreamExt;
    if http_body::Body::is_end_stream(request.body()) {
        return Ok(request);
    }
    let (parts, body) = request.into_parts();
    let mut chunks = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|err| ApiError::invalid(format!("could not read the request body: {err}")))?;
        if bytes.len().saturating_add(chunk.len()) > limit {
            return Err(body_too_large(limit));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Request::from_parts(parts, axum::body::Body::from(bytes)))
}

/// Whether requests to `path` (a request's path, or a route's template) must
/// name [`MANAGED_AGENTS_BETA`] in `anthropic-beta`: all but the `/x/v1`
/// extensions and the Files API, which has its own beta that the SDK does
/// not send by default.
pub fn requires_managed_agents_beta(path: &str) -> bool {
    let extension = path.starts_with("/x/");
    let files = path == "/v1/files" || path.starts_with("/v1/files/");
    !extension && !files
}

/// Checks a request's headers and key, and that the key's scope reaches the
/// route and its objects; returns the route's rule.
async fn admit(state: &AppState, rules: &RouteRules, request: &mut Request) -> Result<RouteRule, ApiError> {
    let headers = request.headers();
    if requires_managed_agents_beta(request.uri().path()) && !has_beta(headers, MANAGED_AGENTS_BETA) {
        // The thread routes "don't exist" without the beta (the behaviour
        // reference): answered as an unknown route is.
        let path = request.uri().path();
        if path.starts_with("/v1/sessions/") && path.contains("/threads") {
            return Err(ApiError::not_found(format!("no route for {} {path}", request.method())));
        }
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
    // Refused at once, with no hashing of up to a header's size and no trip
    // to the store: a stream of bad keys costs little more than `/healthz`.
    if !tenancy::could_be_key(&key) {
        return Err(ApiError::unauthenticated("invalid API key"));
    }
    let route = request.extensions().get::<MatchedPath>().map(|path| path.as_str().to_owned());
    // axum answers HEAD with the route's GET handler: it is judged by GET's rule.
    let method = if request.method() == Method::HEAD { Method::GET } else { request.method().clone() };
    let rule =
        route.as_deref().and_then(|path| rules.get(&(method.clone(), path))).copied().unwrap_or(RouteRule::UNMATCHED);
    let route_access = rule.access;
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
    // Low on disk: no new work from clients (workers finish what runs).
    if principal.scope == KeyScope::Workspace
        && let Some(path) = route.as_deref()
        && !crate::diskguard::exempt(&method, path)
        && let Some(refused) = state.refuse_for_space()
    {
        return Err(refused);
    }
    // Streams, exports and file transfers (`RouteSpec::streaming`) are not
    // cut off by the request timeout.
    request.extensions_mut().insert(tenant);
    request.extensions_mut().insert(principal);
    Ok(rule)
}
