//! A scripted fake of the Anthropic Messages API, for tests of the model
//! client and the runner without a network or a real model.
//!
//! It listens on loopback and answers `POST /v1/messages` with the real
//! streaming protocol: `message_start` (a full message object with usage), a
//! `ping`, `content_block_start`/`content_block_delta`/`content_block_stop`
//! per block (text and thinking in several deltas, a signature delta, tool
//! input as `input_json_delta` chunks cut mid-token), `message_delta` with the
//! stop reason and usage, `message_stop`. Every event is written as two body
//! chunks split mid-way (through UTF-8 characters and line ends alike), so
//! clients are tested against arbitrary chunking. What each request gets comes
//! from a script ([`script`] module docs): responses and faults (HTTP error
//! statuses with `retry-after`, a connection cut mid-stream, an `error` event
//! mid-stream, slow dripping, a hang after the headers). When the script runs
//! out, the answer is the text [`script::EXHAUSTED_TEXT`]. A summarizing request
//! (Logbook's compaction: the last user text starts with [`SUMMARY_REQUEST`])
//! is answered with a short summary naming how many messages it covers, without
//! consuming a script step, so scripts need not know when compaction happens.
//!
//! Every `/v1/messages` request is recorded (headers with the `x-api-key`
//! value redacted, and the JSON body). Requests without `anthropic-version`
//! get a 400, and, when an expected key is configured, requests with another
//! key a 401, both before the script is consulted. Bodies that are not a
//! streaming Messages request, hold `tool_use` or `tool_result` blocks
//! without defining tools, carry more than four `cache_control`
//! breakpoints, more than 100 images, or more than 20 images of which a PNG
//! is over 2,000 pixels on a side, get the 400 the real API would give.
//!
//! Two ways to run it: [`FakeModel::start`] in-process (its own thread and
//! tokio runtime, stopped on drop), or the `fake-model` binary for tests in
//! other languages, driven through `POST /_fake/script` (body: the script),
//! `GET /_fake/requests` and `POST /_fake/reset`.

pub mod script;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::{Value, json};

use script::{Ending, Ids, Plan, Step};

use crate::loopback::Loopback;

/// Largest request body accepted (conversations with images get big).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;
/// Most requests remembered; older ones are dropped first.
pub const MAX_RECORDED_REQUESTS: usize = 10_000;
/// The API's limit on `cache_control` breakpoints per request.
pub const MAX_CACHE_BREAKPOINTS: usize = 4;
/// The most images the Messages API takes in one request.
pub const MAX_IMAGES: usize = 100;
/// A request of more images than this may hold none over
/// [`MANY_IMAGES_MAX_SIDE`] pixels on a side.
pub const MANY_IMAGES: usize = 20;
pub const MANY_IMAGES_MAX_SIDE: u32 = 2_000;
/// Pause before a scripted cut, so the bytes before it reach the client.
const CUT_FLUSH_PAUSE: Duration = Duration::from_millis(50);
/// How Logbook's summarizing request (`logbook_replay::context::SUMMARY_INSTRUCTION`)
/// begins.
pub const SUMMARY_REQUEST: &str = "Summarize the conversation so far";

/// What a recorded `x-api-key` header shows instead of the key.
pub const REDACTED: &str = "<redacted>";

/// A `/v1/messages` request as the fake received it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Lowercase names; `x-api-key` is [`REDACTED`]. Repeated headers are joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// The body as JSON, or as a JSON string when it is not JSON.
    pub body: Value,
}

/// Settings of a fake.
#[derive(Debug, Clone, Default)]
pub struct FakeOptions {
    /// When set, requests whose `x-api-key` differs get a 401.
    pub api_key: Option<String>,
    /// When set, summarizing requests' answers are cut after this many
    /// events (as the `cut` fault does), so compaction's fallback is tested.
    pub summary_cut_after: Option<usize>,
    /// With `summary_cut_after`: cut only this many summarizing answers (the
    /// first ones); `None`: every one.
    pub summary_cuts: Option<usize>,
    /// When set, summarizing requests are served from this script first
    /// (steps as in the main script, faults included); once it runs out,
    /// with the built-in summary.
    pub summary_script: Option<Vec<Value>>,
}

/// A fake that cannot start or a script that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum FakeModelError {
    #[error("fake-model: {0}")]
    Io(#[from] std::io::Error),
    #[error("fake-model script: {0}")]
    Script(String),
}

/// The fake's shared state: script, recorded requests, settings. Cheap to clone.
#[derive(Debug, Clone)]
pub struct FakeState {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    script: VecDeque<Step>,
    requests: VecDeque<RecordedRequest>,
    /// Responses served so far (for unique message and tool ids).
    n_responses: u64,
    api_key: Option<String>,
    summary_cut_after: Option<usize>,
    /// Summarizing answers still to cut (`None`: every one).
    summary_cuts_left: Option<usize>,
    /// Steps for summarizing requests, served before the built-in summary.
    summary_script: VecDeque<Step>,
}

impl FakeState {
    pub fn new(script: Vec<Value>, options: FakeOptions) -> Result<FakeState, FakeModelError> {
        let script = Step::parse_script(script).map_err(FakeModelError::Script)?;
        let summary_script =
            Step::parse_script(options.summary_script.unwrap_or_default()).map_err(FakeModelError::Script)?;
        let inner = Inner {
            script,
            requests: VecDeque::new(),
            n_responses: 0,
            api_key: options.api_key,
            summary_cut_after: options.summary_cut_after,
            summary_cuts_left: options.summary_cuts,
            summary_script,
        };
        Ok(FakeState { inner: Arc::new(Mutex::new(inner)) })
    }

    /// Replaces the rest of the script.
    pub fn set_script(&self, script: Vec<Value>) -> Result<(), FakeModelError> {
        let script = Step::parse_script(script).map_err(FakeModelError::Script)?;
        self.lock().script = script;
        Ok(())
    }

    /// Every `/v1/messages` request so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.iter().cloned().collect()
    }

    /// Steps of the script not yet served.
    pub fn remaining_steps(&self) -> usize {
        self.lock().script.len()
    }

    /// Forgets the script and the recorded requests (the expected key stays).
    pub fn reset(&self) {
        let mut inner = self.lock();
        inner.script.clear();
        inner.requests.clear();
        inner.n_responses = 0;
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread must not take the fake down with it.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The fake's routes: the Messages API and the `/_fake` control endpoints.
pub fn router(state: FakeState) -> Router {
    Router::new()
        .route("/v1/messages", post(messages))
        .route("/_fake/script", post(set_script))
        .route("/_fake/requests", get(requests))
        .route("/_fake/reset", post(reset))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(state)
}

/// A fake running in this process on its own thread; stopped when dropped.
#[derive(Debug)]
pub struct FakeModel {
    state: FakeState,
    addr: SocketAddr,
    base_url: String,
    /// Serves until dropped.
    _server: Loopback,
}

impl FakeModel {
    /// Starts a fake with `script` on a free loopback port, accepting any key.
    pub fn start(script: Vec<Value>) -> Result<FakeModel, FakeModelError> {
        FakeModel::start_with(script, FakeOptions::default())
    }

    pub fn start_with(script: Vec<Value>, options: FakeOptions) -> Result<FakeModel, FakeModelError> {
        let state = FakeState::new(script, options)?;
        let app = router(state.clone());
        let server = Loopback::serve("fake-model", move || app, |_| {})?;
        let addr = server.addr();
        let base_url = format!("http://{addr}");
        Ok(FakeModel { state, addr, base_url, _server: server })
    }

    /// `http://127.0.0.1:PORT`, to use as `ANTHROPIC_BASE_URL`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests()
    }

    pub fn set_script(&self, script: Vec<Value>) -> Result<(), FakeModelError> {
        self.state.set_script(script)
    }

    pub fn reset(&self) {
        self.state.reset();
    }

    pub fn state(&self) -> &FakeState {
        &self.state
    }
}

/// `POST /v1/messages`.
async fn messages(State(state): State<FakeState>, headers: HeaderMap, body: Bytes) -> Response {
    let body_json: Option<Value> = serde_json::from_slice(&body).ok();
    let (plan, ids) = {
        let mut inner = state.lock();
        if inner.requests.len() >= MAX_RECORDED_REQUESTS {
            inner.requests.pop_front();
        }
        inner.requests.push_back(RecordedRequest {
            method: "POST".to_owned(),
            path: "/v1/messages".to_owned(),
            headers: record_headers(&headers),
            body: body_json.clone().unwrap_or_else(|| Value::String(String::from_utf8_lossy(&body).into_owned())),
        });
        inner.n_responses += 1;
        let ids = Ids { response: inner.n_responses };
        if let Some((status, message)) = refusal(&headers, body_json.as_ref(), inner.api_key.as_deref()) {
            drop(inner);
            return error_response(status, None, &message, &format!("req_fake_{:06}", ids.response));
        }
        let cut_after = match inner.summary_cuts_left {
            Some(0) => None,
            Some(_) | None => inner.summary_cut_after,
        };
        let plan = match body_json.as_ref().and_then(|body| summary_plan(body, cut_after)) {
            Some(_) if !inner.summary_script.is_empty() => script::next_plan(&mut inner.summary_script),
            Some(plan) => {
                if cut_after.is_some()
                    && let Some(left) = inner.summary_cuts_left.as_mut()
                {
                    *left -= 1;
                }
                plan
            }
            None => script::next_plan(&mut inner.script),
        };
        (plan, ids)
    };
    let request_id = format!("req_fake_{:06}", ids.response);
    let body_json = body_json.unwrap_or(Value::Null);
    match plan {
        Plan::Status { status, retry_after, message } => {
            let message = message.unwrap_or_else(|| format!("scripted status {status}"));
            error_response(status, retry_after, &message, &request_id)
        }
        Plan::Hang => {
            let body = Body::from_stream(futures_util::stream::pending::<Result<Bytes, std::io::Error>>());
            (sse_headers(&request_id), body).into_response()
        }
        Plan::Stream { response, delay_ms, ending } => {
            let model = body_json.get("model").and_then(Value::as_str).unwrap_or_default();
            let events = script::events(&response, model, body.len(), ids);
            let stream = frames(events, &ending);
            let body = Body::from_stream(drip(stream, Duration::from_millis(delay_ms)));
            (sse_headers(&request_id), body).into_response()
        }
    }
}

/// Whether `body` is Logbook's compaction request (its last user text starts
/// with [`SUMMARY_REQUEST`]).
pub fn is_summary_request(body: &Value) -> bool {
    let Some(last) = body.get("messages").and_then(Value::as_array).and_then(|m| m.last()) else { return false };
    let text = last.get("content").and_then(Value::as_array).and_then(|c| c.last()).and_then(|b| b.get("text"));
    last.get("role").is_some_and(|role| role == "user")
        && text.and_then(Value::as_str).is_some_and(|t| t.starts_with(SUMMARY_REQUEST))
}

/// The answer to a summarizing request, if `body` is one.
fn summary_plan(body: &Value, cut_after: Option<usize>) -> Option<Plan> {
    let messages = body.get("messages")?.as_array()?;
    let last = messages.last()?;
    let text = last.get("content")?.as_array()?.last()?.get("text")?.as_str()?;
    if last.get("role")? != "user" || !text.starts_with(SUMMARY_REQUEST) {
        return None;
    }
    let summary = format!("Summary of {} messages: the user asked for work and the tools ran.", messages.len());
    let response = script::ScriptedResponse {
        content: vec![json!({"type": "text", "text": summary})],
        stop_reason: None,
        stop_sequence: None,
        usage: None,
        model: None,
    };
    let ending = cut_after.map_or(Ending::Complete, |after_events| Ending::Cut { after_events });
    Some(Plan::Stream { response, delay_ms: 0, ending })
}

/// Why a request is refused before the script is consulted, if it is.
fn refusal(headers: &HeaderMap, body: Option<&Value>, expected_key: Option<&str>) -> Option<(u16, String)> {
    if headers.get("anthropic-version").is_none() {
        return Some((400, "anthropic-version: header is required".to_owned()));
    }
    if let Some(expected) = expected_key {
        let given = headers.get("x-api-key").and_then(|value| value.to_str().ok());
        if given != Some(expected) {
            return Some((401, "invalid x-api-key".to_owned()));
        }
    }
    let Some(body) = body.filter(|body| body.is_object()) else {
        return Some((400, "the body must be a JSON object".to_owned()));
    };
    if body.get("model").and_then(Value::as_str).is_none() {
        return Some((400, "model: Field required".to_owned()));
    }
    if body.get("max_tokens").and_then(Value::as_u64).is_none() {
        return Some((400, "max_tokens: Field required".to_owned()));
    }
    if body.get("messages").and_then(Value::as_array).is_none_or(Vec::is_empty) {
        return Some((400, "messages: at least one message is required".to_owned()));
    }
    if body.get("stream") != Some(&Value::Bool(true)) {
        return Some((400, "stream: fake-model only serves streaming requests".to_owned()));
    }
    // Tool blocks need tools defined (anthropic-sdk-python#494).
    let holds_tool_blocks = body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|message| message.get("content").and_then(Value::as_array))
        .flatten()
        .any(|block| matches!(block.get("type").and_then(Value::as_str), Some("tool_use" | "tool_result")));
    if holds_tool_blocks && body.get("tools").and_then(Value::as_array).is_none_or(Vec::is_empty) {
        return Some((400, "Requests which include `tool_use` or `tool_result` blocks must define tools.".to_owned()));
    }
    // The Messages API's limits on a request's images.
    let images = script::images(body);
    if images.len() > MAX_IMAGES {
        return Some((400, format!("messages: too many images and documents: {} > {MAX_IMAGES}", images.len())));
    }
    if images.len() > MANY_IMAGES
        && images.iter().filter_map(|image| script::png_dimensions(image)).any(|(w, h)| w.max(h) > MANY_IMAGES_MAX_SIDE)
    {
        return Some((
            400,
            format!(
                "messages: At least one of the image dimensions exceed max allowed size for many-image requests: \
                 {MANY_IMAGES_MAX_SIDE} pixels"
            ),
        ));
    }
    let n_breakpoints = script::count_cache_control(body);
    if n_breakpoints > MAX_CACHE_BREAKPOINTS {
        return Some((
            400,
            format!(
                "A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. Found {n_breakpoints}."
            ),
        ));
    }
    None
}

fn record_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut recorded: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = if name.as_str() == "x-api-key" {
            REDACTED.to_owned()
        } else {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        };
        recorded
            .entry(name.as_str().to_owned())
            .and_modify(|existing| {
                existing.push_str(", ");
                existing.push_str(&value);
            })
            .or_insert(value);
    }
    recorded
}

fn sse_headers(request_id: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("text/event-stream; charset=utf-8"));
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    insert_request_id(&mut headers, request_id);
    headers
}

fn insert_request_id(headers: &mut HeaderMap, request_id: &str) {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(HeaderName::from_static("request-id"), value);
    }
}

fn error_response(status: u16, retry_after: Option<u64>, message: &str, request_id: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    insert_request_id(&mut headers, request_id);
    if let Some(seconds) = retry_after {
        headers.insert("retry-after", HeaderValue::from(seconds));
    }
    let body = script::error_body(script::error_type(status), message, request_id);
    (code, headers, body.to_string()).into_response()
}

/// One chunk of a streamed body: bytes, or the cut that drops the connection.
#[derive(Debug)]
enum Frame {
    Bytes(Vec<u8>),
    Cut,
}

/// The body chunks of a response: every event split in two mid-way, then the
/// scripted ending applied.
fn frames(events: Vec<(String, Value)>, ending: &Ending) -> VecDeque<Frame> {
    let keep = match ending {
        Ending::Complete => events.len(),
        Ending::Cut { after_events } | Ending::ErrorEvent { after_events, .. } => *after_events,
    };
    let mut encoded = events.iter().map(|(name, data)| script::encode(name, data));
    let mut frames = VecDeque::new();
    for bytes in encoded.by_ref().take(keep) {
        let (head, tail) = bytes.split_at(bytes.len() / 2);
        frames.push_back(Frame::Bytes(head.to_vec()));
        frames.push_back(Frame::Bytes(tail.to_vec()));
    }
    match ending {
        Ending::Complete => {}
        Ending::Cut { .. } => {
            // Half of the next event, so the client also sees a torn event.
            if let Some(next) = encoded.next() {
                frames.push_back(Frame::Bytes(next[..next.len() / 2].to_vec()));
            }
            frames.push_back(Frame::Cut);
        }
        Ending::ErrorEvent { error_type, message, .. } => {
            let message = message.clone().unwrap_or_else(|| format!("scripted {error_type}"));
            let data = json!({"type": "error", "error": {"type": error_type, "message": message}});
            frames.push_back(Frame::Bytes(script::encode("error", &data)));
        }
    }
    frames
}

/// The frames as a body stream, `delay` before each chunk but the first; a
/// cut is an error, which makes hyper drop the connection mid-body.
fn drip(
    frames: VecDeque<Frame>,
    delay: Duration,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    futures_util::stream::unfold((frames, true), move |(mut frames, first)| async move {
        let frame = frames.pop_front()?;
        if !first && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let item = match frame {
            Frame::Bytes(bytes) => Ok(Bytes::from(bytes)),
            Frame::Cut => {
                // hyper writes what it buffered only when the body stalls; without
                // this pause the cut would also swallow the headers.
                tokio::time::sleep(CUT_FLUSH_PAUSE).await;
                Err(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "fake-model: scripted cut"))
            }
        };
        Some((item, (frames, false)))
    })
}

/// `POST /_fake/script`: replaces the rest of the script.
async fn set_script(State(state): State<FakeState>, body: Bytes) -> Response {
    let steps = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Array(steps)) => steps,
        Ok(_) | Err(_) => return (StatusCode::BAD_REQUEST, "the script must be a JSON list of steps").into_response(),
    };
    let n_steps = steps.len();
    match state.set_script(steps) {
        Ok(()) => axum::Json(json!({"steps": n_steps})).into_response(),
        Err(error) => (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
    }
}

/// `GET /_fake/requests`.
async fn requests(State(state): State<FakeState>) -> axum::Json<Vec<RecordedRequest>> {
    axum::Json(state.requests())
}

/// `POST /_fake/reset`.
async fn reset(State(state): State<FakeState>) -> StatusCode {
    state.reset();
    StatusCode::NO_CONTENT
}

async fn not_found() -> Response {
    error_response(404, None, "fake-model serves only POST /v1/messages", "req_fake_404")
}
