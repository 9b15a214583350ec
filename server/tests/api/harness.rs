//! The in-process test harness: a server over a fresh sled store in a temp dir,
//! two workspaces with keys, a manual clock, and helpers that send one request
//! through the router with `ServiceExt::oneshot` (no sockets).
//!
//! Bodies are collected under a deadline so a hung handler fails the test
//! instead of hanging it; SSE responses are returned without reading the body.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use logbook_core::{Clock, Entry, Event, EventId, ManualClock, Record, SessionId, Timestamp};
use logbook_server::http::{MANAGED_AGENTS_BETA, app};
use logbook_server::ratelimit::RateLimits;
use logbook_server::state::{AppState, Config};
use logbook_server::tenancy;
use logbook_store::{Append, Read, SledOptions, SledStore};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::watch;
use tower::ServiceExt;

/// How long one request may take, body included.
pub(crate) const REQUEST_DEADLINE: Duration = Duration::from_secs(30);

/// The clock's start: 2026-05-01T12:00:00Z.
pub(crate) const START_MICROS: i64 = 1_777_636_800_000_000;

/// The seed of the test server's audit key.
pub(crate) const AUDIT_SEED: [u8; 32] = [7; 32];

/// How a request presents its key.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Auth<'a> {
    XApiKey(&'a str),
    Bearer(&'a str),
    /// No key header at all.
    Missing,
}

/// One test server and its tenants.
#[derive(Debug)]
pub(crate) struct Harness {
    pub(crate) app: Router,
    pub(crate) state: AppState,
    pub(crate) clock: Arc<ManualClock>,
    /// Workspace A's live key.
    pub(crate) key_a: String,
    /// Workspace B's live key.
    pub(crate) key_b: String,
    /// A key of workspace A that was revoked.
    pub(crate) revoked_a: String,
    _shutdown: watch::Sender<bool>,
    _dir: TempDir,
}

/// A collected response.
#[derive(Debug)]
pub(crate) struct Resp {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) bytes: Bytes,
}

impl Resp {
    /// The body as JSON; panics with the raw text when it is not JSON.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or_else(|err| {
            panic!("body is not JSON ({err}): {:?} (status {})", String::from_utf8_lossy(&self.bytes), self.status)
        })
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a 200 and returns the JSON body.
    #[track_caller]
    pub(crate) fn ok(&self) -> Value {
        assert_eq!(self.status, StatusCode::OK, "expected 200, got {}: {}", self.status, self.text());
        self.json()
    }

    /// Asserts an error response with this status and `error.type`, checks
    /// the envelope's exact shape and the request id, and returns the body.
    #[track_caller]
    pub(crate) fn error(&self, status: u16, kind: &str) -> Value {
        assert_eq!(self.status.as_u16(), status, "expected {status} {kind}, got {}: {}", self.status, self.text());
        let body = self.json();
        check_envelope(&body, self.header("request-id"));
        assert_eq!(body["error"]["type"], kind, "error type in {body}");
        body
    }

    /// Asserts a 400 invalid_request_error and returns the body.
    #[track_caller]
    pub(crate) fn invalid(&self) -> Value {
        self.error(400, "invalid_request_error")
    }

    /// Asserts a 404 not_found_error and returns the body.
    #[track_caller]
    pub(crate) fn not_found(&self) -> Value {
        self.error(404, "not_found_error")
    }
}

/// Checks `{"type":"error","error":{"type","message","details?"},"request_id"}`
/// exactly: no other keys, strings where strings belong, and `request_id` equal
/// to the `request-id` header.
#[track_caller]
pub(crate) fn check_envelope(body: &Value, request_id_header: Option<&str>) {
    let top = body.as_object().unwrap_or_else(|| panic!("error body is not an object: {body}"));
    let mut keys: Vec<&str> = top.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["error", "request_id", "type"], "top-level keys of {body}");
    assert_eq!(body["type"], "error");
    let error = body["error"].as_object().unwrap_or_else(|| panic!("error is not an object: {body}"));
    for key in error.keys() {
        assert!(["type", "message", "details"].contains(&key.as_str()), "unexpected error.{key} in {body}");
    }
    assert!(error.get("type").is_some_and(Value::is_string), "error.type in {body}");
    assert!(error.get("message").is_some_and(|m| m.as_str().is_some_and(|m| !m.is_empty())), "error.message in {body}");
    if let Some(details) = error.get("details") {
        assert!(details.is_object(), "error.details must be an object: {body}");
    }
    let header = request_id_header.unwrap_or_else(|| panic!("no request-id header on the error {body}"));
    assert!(header.starts_with("req_"), "request-id {header}");
    assert_eq!(body["request_id"], header, "body request_id equals the request-id header");
}

impl Harness {
    /// A server with unlimited rates.
    pub(crate) fn new() -> Harness {
        Harness::with_limits(RateLimits { create_per_minute: 0, read_per_minute: 0, work_per_minute: 0 })
    }

    pub(crate) fn with_limits(rate_limits: RateLimits) -> Harness {
        Harness::with_config(Config { rate_limits, ..Config::default() })
    }

    /// A server with this configuration (rate limits as given).
    pub(crate) fn with_config(config: Config) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("data"), &SledOptions { cache_capacity_bytes: 8 << 20 }).unwrap();
        let clock = Arc::new(ManualClock::new(Timestamp::from_unix_micros(START_MICROS)));
        let now = clock.now();
        let workspace_a = tenancy::ensure_workspace(&store, "tenant-a", now).unwrap();
        let workspace_b = tenancy::ensure_workspace(&store, "tenant-b", now).unwrap();
        let key_a = tenancy::create_key(&store, &workspace_a, now).unwrap();
        let key_b = tenancy::create_key(&store, &workspace_b, now).unwrap();
        let revoked_a = tenancy::create_key(&store, &workspace_a, now).unwrap();
        assert!(tenancy::revoke_key(&store, &revoked_a, now).unwrap());
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let state = AppState::new(store, Arc::clone(&clock) as Arc<dyn Clock>, config, shutdown_rx);
        state.set_audit_key(Arc::new(logbook_server::audit::AuditKey::from_seed(AUDIT_SEED)));
        let git = logbook_server::resources::git::GitSettings::default();
        state.set_resources_host(Arc::new(logbook_server::resources::Host::new(
            &dir.path().join("data"),
            git,
            logbook_server::sandbox::disk::DiskLimit::default(),
        )));
        Harness { app: app(state.clone()), state, clock, key_a, key_b, revoked_a, _shutdown: shutdown_tx, _dir: dir }
    }

    /// Creates workspace `name` as if at `at` (workspace ids sort by creation
    /// time, and so do the keys of their objects) and returns a key of it.
    pub(crate) fn workspace_key(&self, name: &str, at: Timestamp) -> String {
        let store = self.state.store();
        let workspace = tenancy::ensure_workspace(store, name, at).unwrap();
        tenancy::create_key(store, &workspace, at).unwrap()
    }

    /// The server's data directory (the store, and the sessions' directories).
    pub(crate) fn data_dir(&self) -> std::path::PathBuf {
        self._dir.path().join("data")
    }

    /// Uploads a file with `key` as the SDK does (multipart, part `file`).
    pub(crate) async fn upload_as(&self, key: &str, filename: &str, content_type: &str, bytes: &[u8]) -> Resp {
        self.upload_with(Auth::XApiKey(key), filename, content_type, bytes).await
    }

    /// Uploads a file presenting the key as `auth` says.
    pub(crate) async fn upload_with(&self, auth: Auth<'_>, filename: &str, content_type: &str, bytes: &[u8]) -> Resp {
        let boundary = "logbook-test-boundary-7d93";
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
             Content-Type: {content_type}\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(bytes);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri("/v1/files")
            .header("content-type", format!("multipart/form-data; boundary={boundary}"));
        builder = match auth {
            Auth::XApiKey(key) => builder.header("x-api-key", key),
            Auth::Bearer(key) => builder.header("authorization", format!("Bearer {key}")),
            Auth::Missing => builder,
        };
        self.raw(builder.body(Body::from(body)).unwrap()).await
    }

    /// Uploads a file as workspace A and returns its metadata.
    pub(crate) async fn upload(&self, filename: &str, content_type: &str, bytes: &[u8]) -> Value {
        self.upload_as(&self.key_a, filename, content_type, bytes).await.ok()
    }

    /// The tenant a key authenticates as.
    pub(crate) fn tenant(&self, key: &str) -> tenancy::Tenant {
        tenancy::authenticate(self.state.store(), key).unwrap()
    }

    /// Moves the clock forward, so ids and timestamps of later objects sort after earlier ones.
    pub(crate) fn tick(&self, ms: i64) {
        self.clock.advance_micros(ms * 1000);
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Sends a request as built; collects the body unless it is an SSE stream.
    pub(crate) async fn raw(&self, request: Request<Body>) -> Resp {
        let work = async {
            let response = self.app.clone().oneshot(request).await.unwrap();
            let (parts, body) = response.into_parts();
            let is_stream = parts
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream"));
            let bytes = if is_stream { Bytes::new() } else { body.collect().await.unwrap().to_bytes() };
            Resp { status: parts.status, headers: parts.headers, bytes }
        };
        tokio::time::timeout(REQUEST_DEADLINE, work).await.expect("the request missed its deadline")
    }

    /// GETs `path` with `key` and returns the response as it comes, its
    /// body unread (a stream or a download held open by the caller).
    pub(crate) async fn open_unread(&self, path: &str, key: &str) -> axum::response::Response {
        let request = Request::get(path)
            .header("anthropic-beta", MANAGED_AGENTS_BETA)
            .header("x-api-key", key)
            .body(Body::empty())
            .unwrap();
        self.app.clone().oneshot(request).await.unwrap()
    }

    /// A request with the beta header, the given key and an optional JSON body.
    pub(crate) async fn call(&self, method: Method, path: &str, auth: Auth<'_>, body: Option<&Value>) -> Resp {
        let mut builder = Request::builder().method(method).uri(path).header("anthropic-beta", MANAGED_AGENTS_BETA);
        builder = match auth {
            Auth::XApiKey(key) => builder.header("x-api-key", key),
            Auth::Bearer(key) => builder.header("authorization", format!("Bearer {key}")),
            Auth::Missing => builder,
        };
        let body = match body {
            Some(value) => {
                builder = builder.header("content-type", "application/json");
                Body::from(serde_json::to_vec(value).unwrap())
            }
            None => Body::empty(),
        };
        self.raw(builder.body(body).unwrap()).await
    }

    /// GET as workspace A.
    pub(crate) async fn get(&self, path: &str) -> Resp {
        self.call(Method::GET, path, Auth::XApiKey(&self.key_a), None).await
    }

    /// POST a JSON body as workspace A.
    pub(crate) async fn post(&self, path: &str, body: &Value) -> Resp {
        self.call(Method::POST, path, Auth::XApiKey(&self.key_a), Some(body)).await
    }

    /// POST with an empty body and `content-type: application/json`, as the SDK does for archive.
    pub(crate) async fn post_empty(&self, path: &str) -> Resp {
        self.bodiless(Method::POST, path, &self.key_a).await
    }

    /// DELETE with an empty body and `content-type: application/json`, as the SDK does.
    pub(crate) async fn delete(&self, path: &str) -> Resp {
        self.bodiless(Method::DELETE, path, &self.key_a).await
    }

    pub(crate) async fn bodiless(&self, method: Method, path: &str, key: &str) -> Resp {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("anthropic-beta", MANAGED_AGENTS_BETA)
            .header("x-api-key", key)
            .header("content-type", "application/json")
            .header("content-length", "0")
            .body(Body::empty())
            .unwrap();
        self.raw(request).await
    }

    /// Creates an agent in workspace A and returns it.
    pub(crate) async fn agent(&self, name: &str) -> Value {
        self.agent_with(&json!({"name": name, "model": "claude-sonnet-4-6"})).await
    }

    pub(crate) async fn agent_with(&self, body: &Value) -> Value {
        self.post("/v1/agents", body).await.ok()
    }

    /// Creates a cloud environment in workspace A.
    pub(crate) async fn env(&self, name: &str) -> Value {
        self.post("/v1/environments", &json!({"name": name})).await.ok()
    }

    /// Creates a self-hosted environment in workspace A.
    pub(crate) async fn self_hosted_env(&self, name: &str) -> Value {
        self.post("/v1/environments", &json!({"name": name, "config": {"type": "self_hosted"}})).await.ok()
    }

    /// Creates a session of `agent` in `env` in workspace A.
    pub(crate) async fn session(&self, agent: &Value, env: &Value) -> Value {
        self.post("/v1/sessions", &json!({"agent": agent["id"], "environment_id": env["id"]})).await.ok()
    }

    /// An agent, a cloud environment and a session, in workspace A.
    pub(crate) async fn quick_session(&self) -> Value {
        let agent = self.agent("quick").await;
        let env = self.env("quick").await;
        self.session(&agent, &env).await
    }

    /// Attaches a runner with no model (a turn it starts ends with retries
    /// exhausted) and the echo tools, and returns it. A runner wakes for a
    /// session when the session is created or sent input; input injected
    /// before this is attached is found only by archive's and other checks.
    pub(crate) fn attach_runner(&self) -> logbook_server::runner::RunnerHandle {
        use logbook_server::runner::{RunnerConfig, RunnerHandle};
        let mcp = logbook_server::mcp::McpHub::new(logbook_server::mcp::McpSettings::new("")).unwrap();
        let runner = RunnerHandle::new(RunnerConfig {
            model: None,
            request_options: Default::default(),
            tools: Arc::new(logbook_server::runner::tools::EchoTools),
            mcp: Arc::new(mcp),
            policy: Default::default(),
            retry_base: std::time::Duration::from_millis(1),
            outcome_heartbeat: logbook_server::runner::OUTCOME_HEARTBEAT,
            auto_allowed: Vec::new(),
            max_working_per_workspace: logbook_server::runner::DEFAULT_MAX_WORKING_PER_WORKSPACE,
        });
        self.state.set_runner(runner.clone());
        runner
    }

    /// Waits until no session has a runner task (each woke, did its work and
    /// found nothing more to do), failing after `deadline`: the point after
    /// which a runner that was going to append something has appended it.
    pub(crate) async fn wait_runner_quiet(
        runner: &logbook_server::runner::RunnerHandle,
        deadline: std::time::Duration,
    ) {
        let until = std::time::Instant::now() + deadline;
        while runner.n_active() > 0 {
            assert!(std::time::Instant::now() < until, "the runner still works after {deadline:?}");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Appends server-side events to a session's log directly through the
    /// store, as the runner would; returns their ids.
    pub(crate) fn inject(&self, session: &Value, events: Vec<Event>) -> Vec<String> {
        let session: SessionId = session["id"].as_str().unwrap().parse().unwrap();
        let store = self.state.store();
        let head = store.head(session).unwrap();
        let at = self.now();
        let entries: Vec<Entry> = events
            .into_iter()
            .enumerate()
            .map(|(idx, event)| Entry {
                id: self.state.event_id(logbook_core::Seq::new(head.next.get() + idx as u64)),
                event,
                at,
            })
            .collect();
        let records: Vec<Record> = store.append(session, head.next, &entries).unwrap();
        records.iter().map(|record| record.entry().unwrap().id.to_string()).collect()
    }

    /// Every public event of a session, in order, as workspace A sees it.
    pub(crate) async fn events(&self, session: &Value) -> Vec<Value> {
        let page = self.get(&format!("/v1/sessions/{}/events", id(session))).await.ok();
        assert_eq!(page["next_page"], Value::Null);
        page["data"].as_array().unwrap().clone()
    }
}

/// The `id` of an API object.
pub(crate) fn id(object: &Value) -> &str {
    object["id"].as_str().unwrap_or_else(|| panic!("no id in {object}"))
}

/// The `id`s of a page's `data`.
pub(crate) fn ids(page: &Value) -> Vec<String> {
    page["data"].as_array().unwrap().iter().map(|item| id(item).to_owned()).collect()
}

/// A `user.message` input event with one text block.
pub(crate) fn user_message(text: &str) -> Value {
    json!({"type": "user.message", "content": [{"type": "text", "text": text}]})
}

/// `{"events": [...]}`.
pub(crate) fn events_body(events: Vec<Value>) -> Value {
    json!({ "events": events })
}

/// An event id that is well formed but names nothing.
pub(crate) fn missing_event_id() -> String {
    EventId::for_seq(1_777_636_800_000, logbook_core::Seq::new(5000), 7).to_string()
}

/// Removes keys that differ between runs (ids, timestamps) so whole objects
/// can be compared.
pub(crate) fn without(value: &Value, keys: &[&str]) -> Value {
    let mut value = value.clone();
    if let Some(object) = value.as_object_mut() {
        for key in keys {
            object.remove(*key);
        }
    }
    value
}
