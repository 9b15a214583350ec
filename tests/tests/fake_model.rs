//! The fake Messages API driven by the real model client, end to end over
//! loopback: every block type, every fault, request recording, the control
//! endpoints and the `fake-model` binary.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use logbook_server::model::{
    AgentView, ModelClient, ModelConfig, ModelError, ModelResponse, RequestOptions, StreamEvent, Usage, build_request,
};
use logbook_tests::fake_model::{FakeModel, FakeOptions, REDACTED, script::EXHAUSTED_TEXT};
use serde_json::{Value, json};

const KEY: &str = "sk-fake-test-key";

fn client(fake: &FakeModel) -> ModelClient {
    client_with(fake, |_| {})
}

fn client_with(fake: &FakeModel, adjust: impl FnOnce(&mut ModelConfig)) -> ModelClient {
    let mut config = ModelConfig::new(fake.base_url());
    config.api_key = Some(KEY.to_owned());
    config.idle_timeout = Duration::from_secs(10);
    adjust(&mut config);
    ModelClient::new(config).expect("a client")
}

fn request() -> Value {
    let agent = AgentView { model: "claude-sonnet-4-6".to_owned(), ..AgentView::default() };
    build_request(&agent, &[json!({"role": "user", "content": "Hi"})], &RequestOptions::default())
}

async fn call(client: &ModelClient) -> (Result<ModelResponse, ModelError>, Vec<StreamEvent>) {
    let mut events = Vec::new();
    let result = client.stream(&request(), &mut |event| events.push(event)).await;
    (result, events)
}

#[tokio::test]
async fn every_block_type_round_trips() {
    // Goal: what the fake is scripted with is what the client assembles, for
    // every block kind, with tool ids generated where the script has none.
    let search_result = json!({"type": "web_search_tool_result", "tool_use_id": "srvtoolu_given",
        "content": [{"type": "web_search_result", "url": "https://example.com", "title": "Ex", "encrypted_content": "E"}]});
    let content = vec![
        json!({"type": "thinking", "thinking": "First, think. Then — act ✓.", "signature": "sig-123"}),
        json!({"type": "redacted_thinking", "data": "opaque"}),
        json!({"type": "text", "text": "Grüße, 世界! 🦀 Here is a longer sentence to stream."}),
        json!({"type": "server_tool_use", "id": "srvtoolu_given", "name": "web_search", "input": {"query": "rust sse"}}),
        search_result.clone(),
        json!({"type": "tool_use", "name": "bash", "input": {"command": "echo \"é\\n\" && ls", "timeout_ms": 5000}}),
        json!({"type": "tool_use", "id": "toolu_given", "name": "glob", "input": {}}),
    ];
    let fake = FakeModel::start(vec![json!({
        "content": content,
        "usage": {"input_tokens": 120, "output_tokens": 45, "cache_read_input_tokens": 100}
    })])
    .expect("the fake starts");
    let (result, events) = call(&client(&fake)).await;
    let response = result.expect("a response");

    let mut expected_content = content.clone();
    expected_content[5]["id"] = json!("toolu_fake_000001_5");
    assert_eq!(response.content, expected_content);
    assert_eq!(response.id, "msg_fake_000001");
    assert_eq!(response.model, "claude-sonnet-4-6");
    assert_eq!(response.stop_reason.as_deref(), Some("tool_use"));
    assert_eq!(
        response.usage,
        Usage {
            input_tokens: 120,
            output_tokens: 45,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 100,
            ..Usage::default()
        }
    );
    assert_eq!(response.request_id.as_deref(), Some("req_fake_000001"));

    let text_deltas: Vec<&str> = events
        .iter()
        .filter_map(
            |event| if let StreamEvent::TextDelta { index: 2, text } = event { Some(text.as_str()) } else { None },
        )
        .collect();
    assert!(text_deltas.len() >= 2, "text is streamed in several deltas: {text_deltas:?}");
    assert_eq!(text_deltas.concat(), "Grüße, 世界! 🦀 Here is a longer sentence to stream.");
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|event| if let StreamEvent::BlockStart { kind, .. } = event { Some(kind.as_str()) } else { None })
        .collect();
    assert_eq!(
        kinds,
        ["thinking", "redacted_thinking", "text", "server_tool_use", "web_search_tool_result", "tool_use", "tool_use"]
    );
    let input_chunks =
        events.iter().filter(|event| matches!(event, StreamEvent::InputJsonDelta { index: 5, .. })).count();
    assert!(input_chunks > 3, "tool input arrives in many chunks, got {input_chunks}");
}

#[tokio::test]
async fn requests_are_recorded_without_the_key() {
    let fake = FakeModel::start(vec![json!({"content": [{"type": "text", "text": "ok"}]})]).expect("the fake starts");
    let (result, _) = call(&client(&fake)).await;
    assert_eq!(result.expect("a response").content, vec![json!({"type": "text", "text": "ok"})]);

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let recorded = &requests[0];
    assert_eq!((recorded.method.as_str(), recorded.path.as_str()), ("POST", "/v1/messages"));
    assert_eq!(recorded.headers.get("x-api-key").map(String::as_str), Some(REDACTED));
    assert_eq!(recorded.headers.get("anthropic-version").map(String::as_str), Some("2023-06-01"));
    assert_eq!(recorded.headers.get("content-type").map(String::as_str), Some("application/json"));
    assert_eq!(recorded.headers.get("anthropic-beta"), None);
    assert_eq!(recorded.body, request());
    assert!(!format!("{requests:?}").contains(KEY));
}

#[tokio::test]
async fn web_fetch_adds_its_beta_header() {
    let fake = FakeModel::start(vec![]).expect("the fake starts");
    let agent = AgentView {
        model: "m".to_owned(),
        tools: vec![json!({"type": "agent_toolset_20260401"})],
        ..AgentView::default()
    };
    let request = build_request(&agent, &[json!({"role": "user", "content": "Hi"})], &RequestOptions::default());
    let client = client_with(&fake, |config| config.betas = vec!["files-api-2025-04-14".to_owned()]);
    client.stream(&request, &mut |_| {}).await.expect("a response");
    let recorded = &fake.requests()[0];
    assert_eq!(
        recorded.headers.get("anthropic-beta").map(String::as_str),
        Some("files-api-2025-04-14,web-fetch-2025-09-10")
    );
}

#[tokio::test]
async fn the_key_is_checked() {
    // Goal: a wrong key is a 401 (Authentication, not retryable); no key at
    // all fails before anything is sent.
    let fake =
        FakeModel::start_with(vec![], FakeOptions { api_key: Some("sk-other".to_owned()), ..FakeOptions::default() })
            .expect("the fake starts");
    let (result, _) = call(&client(&fake)).await;
    let error = result.expect_err("a wrong key is refused");
    assert_eq!(error, ModelError::Authentication { message: "authentication_error: invalid x-api-key".to_owned() });
    assert!(!error.is_retryable());

    let keyless = client_with(&fake, |config| config.api_key = None);
    let (result, _) = call(&keyless).await;
    assert!(matches!(result, Err(ModelError::Authentication { .. })), "{result:?}");
    assert_eq!(fake.requests().len(), 1, "the keyless call sent nothing");

    let right = client_with(&fake, |config| config.api_key = Some("sk-other".to_owned()));
    let (result, _) = call(&right).await;
    assert_eq!(result.expect("the right key works").content, vec![json!({"type": "text", "text": EXHAUSTED_TEXT})]);
}

#[tokio::test]
async fn status_faults() {
    // Goal: each scripted status becomes the matching error, with retry-after.
    let fake = FakeModel::start(vec![
        json!({"fault": "status", "status": 429, "retry_after": 2, "message": "slow down"}),
        json!({"fault": "status", "status": 529}),
        json!({"fault": "status", "status": 500, "message": "boom"}),
        json!({"fault": "status", "status": 401}),
        json!({"fault": "status", "status": 413}),
        json!({"content": [{"type": "text", "text": "recovered"}]}),
    ])
    .expect("the fake starts");
    let client = client(&fake);
    let mut results = Vec::new();
    for _ in 0..6 {
        results.push(call(&client).await.0);
    }
    assert_eq!(
        results[0],
        Err(ModelError::RateLimited {
            retry_after: Some(Duration::from_secs(2)),
            message: "rate_limit_error: slow down".to_owned(),
            retryable: true,
        })
    );
    assert_eq!(
        results[1],
        Err(ModelError::Overloaded {
            retry_after: None,
            message: "overloaded_error: scripted status 529".to_owned(),
            retryable: true,
        })
    );
    assert_eq!(
        results[2],
        Err(ModelError::Server { status: 500, message: "api_error: boom".to_owned(), retry_after: None })
    );
    assert!(matches!(results[3], Err(ModelError::Authentication { .. })), "{:?}", results[3]);
    assert!(matches!(results[4], Err(ModelError::InvalidRequest { status: 413, .. })), "{:?}", results[4]);
    assert_eq!(results[5].as_ref().map(|r| r.content.clone()), Ok(vec![json!({"type": "text", "text": "recovered"})]));
    assert_eq!(results.iter().filter(|r| r.as_ref().is_err_and(ModelError::is_retryable)).count(), 3);
}

#[tokio::test]
async fn a_cut_stream_is_broken() {
    // Goal: the connection dropped mid-event at any point is Broken, and the
    // next request gets the next step.
    for after_events in [0, 1, 3, 6] {
        let fake = FakeModel::start(vec![
            json!({"fault": "cut", "after_events": after_events}),
            json!({"content": [{"type": "text", "text": "cut short"}, {"type": "tool_use", "name": "read", "input": {"file_path": "a"}}]}),
            json!({"content": [{"type": "text", "text": "whole"}]}),
        ])
        .expect("the fake starts");
        let client = client(&fake);
        let (result, events) = call(&client).await;
        let reason = match result {
            Err(ModelError::Broken { reason }) => reason,
            other => panic!("after {after_events}: {other:?}"),
        };
        assert!(reason.starts_with("the connection failed mid-stream"), "after {after_events}: {reason}");
        // The events before the cut did arrive: the cut is mid-stream, not before the headers.
        let started = events.iter().any(|event| matches!(event, StreamEvent::MessageStart { .. }));
        assert_eq!(started, after_events >= 1, "after {after_events}: {events:?}");
        let (result, _) = call(&client).await;
        assert_eq!(result.expect("the retry works").content, vec![json!({"type": "text", "text": "whole"})]);
    }
}

#[tokio::test]
async fn an_error_event_mid_stream() {
    let fake = FakeModel::start(vec![
        json!({"fault": "error_event", "after_events": 4}),
        json!({"content": [{"type": "text", "text": "a long answer that is interrupted"}]}),
        json!({"fault": "error_event", "after_events": 2, "error_type": "api_error", "message": "internal"}),
    ])
    .expect("the fake starts");
    let client = client(&fake);
    let (result, events) = call(&client).await;
    assert_eq!(
        result,
        Err(ModelError::Overloaded {
            retry_after: None,
            message: "overloaded_error: scripted overloaded_error".into(),
            retryable: true,
        })
    );
    assert!(events.iter().any(|event| matches!(event, StreamEvent::TextDelta { .. })), "text streamed first");
    let (result, _) = call(&client).await;
    assert_eq!(
        result,
        Err(ModelError::Server { status: 500, message: "api_error: internal".to_owned(), retry_after: None })
    );
}

#[tokio::test]
async fn a_dripping_stream_arrives_whole() {
    // Goal: a slow stream (delays between chunks, each event split in two) is
    // assembled correctly and is not mistaken for an idle one.
    let fake = FakeModel::start(vec![
        json!({"fault": "drip", "delay_ms": 20}),
        json!({"content": [{"type": "text", "text": "slow but sure"}], "stop_reason": "max_tokens"}),
    ])
    .expect("the fake starts");
    let client = client_with(&fake, |config| config.idle_timeout = Duration::from_secs(2));
    let started = Instant::now();
    let (result, _) = call(&client).await;
    let response = result.expect("a response");
    assert_eq!(response.content, vec![json!({"type": "text", "text": "slow but sure"})]);
    assert_eq!(response.stop_reason.as_deref(), Some("max_tokens"));
    // message_start, ping, start, 3 deltas, stop, message_delta, message_stop:
    // 9 events, 18 chunks, 17 delays.
    assert!(started.elapsed() >= Duration::from_millis(17 * 20), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_hanging_stream_hits_the_idle_timeout() {
    let fake = FakeModel::start(vec![json!({"fault": "hang"})]).expect("the fake starts");
    let client = client_with(&fake, |config| config.idle_timeout = Duration::from_millis(300));
    let started = Instant::now();
    let (result, _) = call(&client).await;
    assert_eq!(result, Err(ModelError::Broken { reason: "no bytes for 300ms (idle timeout)".to_owned() }));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn the_exhausted_script_answers_by_default() {
    let fake = FakeModel::start(vec![]).expect("the fake starts");
    let (result, _) = call(&client(&fake)).await;
    let response = result.expect("a response");
    assert_eq!(response.content, vec![json!({"type": "text", "text": EXHAUSTED_TEXT})]);
    assert_eq!(response.stop_reason.as_deref(), Some("end_turn"));
}

#[tokio::test]
async fn invalid_requests_get_the_api_errors() {
    // Goal: the fake holds requests to the API's rules, so client bugs show up
    // in tests: too many cache breakpoints, a non-streaming body.
    let fake = FakeModel::start(vec![]).expect("the fake starts");
    let client = client(&fake);
    let marked = json!({"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}});
    let too_many = json!({"model": "m", "max_tokens": 10, "stream": true,
        "messages": [{"role": "user", "content": [marked, marked, marked, marked, marked]}]});
    let result = client.stream(&too_many, &mut |_| {}).await;
    assert!(matches!(result, Err(ModelError::InvalidRequest { status: 400, .. })), "{result:?}");

    // The client adds `stream: true` when it is missing, so this one passes.
    let unstreamed = json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]});
    client.stream(&unstreamed, &mut |_| {}).await.expect("stream: true is added");
    assert_eq!(fake.requests()[1].body["stream"], json!(true));
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error() {
    let fake = FakeModel::start(vec![]).expect("the fake starts");
    let url = fake.base_url().to_owned();
    drop(fake);
    let mut config = ModelConfig::new(url);
    config.api_key = Some(KEY.to_owned());
    let client = ModelClient::new(config).expect("a client");
    let result = client.stream(&request(), &mut |_| {}).await;
    assert!(matches!(result, Err(ModelError::Connect { .. })), "{result:?}");
    assert!(result.is_err_and(|error| error.is_retryable()));
}

#[tokio::test]
async fn scripts_can_be_replaced_and_reset() {
    let fake = FakeModel::start(vec![json!({"content": [{"type": "text", "text": "first"}]})]).expect("starts");
    fake.set_script(vec![json!({"content": [{"type": "text", "text": "second"}]})]).expect("a valid script");
    let (result, _) = call(&client(&fake)).await;
    assert_eq!(result.expect("a response").content, vec![json!({"type": "text", "text": "second"})]);
    assert_eq!(fake.requests().len(), 1);
    fake.reset();
    assert_eq!(fake.requests().len(), 0);

    let typo = fake.set_script(vec![json!({"fault": "cut", "after_event": 1})]);
    assert!(typo.is_err(), "unknown fields in a step are refused");
    let typo = fake.set_script(vec![json!({"contents": []})]);
    assert!(typo.is_err(), "unknown fields in a response are refused");
}

/// The `fake-model` binary, killed on drop.
struct FakeProcess {
    child: Child,
    base_url: String,
}

impl FakeProcess {
    fn start(args: &[&str]) -> FakeProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fake-model"))
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("fake-model runs");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("a first line");
        let base_url = line
            .trim()
            .strip_prefix("fake-model listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        FakeProcess { child, base_url }
    }
}

impl Drop for FakeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_binary_is_driven_through_control_endpoints() {
    // Goal: the flow a Python test uses: start the binary, set a script over
    // HTTP, call it, read the recorded requests back, reset.
    let process = FakeProcess::start(&["--api-key", KEY]);
    assert!(process.base_url.starts_with("http://127.0.0.1:"), "{}", process.base_url);
    let http = reqwest::Client::new();
    let script = json!([{"content": [{"type": "text", "text": "from the binary"}]}]);
    let reply = http.post(format!("{}/_fake/script", process.base_url)).json(&script).send().await.expect("sent");
    assert_eq!(reply.status(), 200);
    let bad = json!([{"fault": "nonsense"}]);
    let reply = http.post(format!("{}/_fake/script", process.base_url)).json(&bad).send().await.expect("sent");
    assert_eq!(reply.status(), 400);
    // The rejected script did not replace the good one.

    let mut config = ModelConfig::new(process.base_url.clone());
    config.api_key = Some(KEY.to_owned());
    let client = ModelClient::new(config).expect("a client");
    let response = client.stream(&request(), &mut |_| {}).await.expect("a response");
    assert_eq!(response.content, vec![json!({"type": "text", "text": "from the binary"})]);

    let recorded: Value = http
        .get(format!("{}/_fake/requests", process.base_url))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");
    assert_eq!(recorded[0]["body"], request());
    assert_eq!(recorded[0]["headers"]["x-api-key"], json!(REDACTED));

    let reply = http.post(format!("{}/_fake/reset", process.base_url)).send().await.expect("sent");
    assert_eq!(reply.status(), 204);
    let recorded: Value = http
        .get(format!("{}/_fake/requests", process.base_url))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");
    assert_eq!(recorded, json!([]));
}
