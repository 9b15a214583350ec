//! Failing tests of a review of the runner and the model client
//! (`review-runner2`): the real `logbook` binary, driving the scripted fake
//! Messages API over loopback, observed through the API, as in `runner.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

use std::time::{Duration, Instant};

use logbook_tests::fake_model::{FakeModel, FakeOptions, is_summary_request};
use logbook_tests::server::{Api, Server, rerun_passes, types, user_message};
use serde_json::{Value, json};

fn toolset(policy: &str) -> Value {
    json!([{"type": "agent_toolset_20260401", "default_config": {"permission_policy": {"type": policy}}}])
}

/// An agent with `tools` in a new environment, and a session of it.
async fn new_session(api: &Api, tools: Value) -> String {
    api.session_with(json!({"name": "review", "tools": tools}), json!({"name": "review"})).await
}

/// The input tokens every `span.model_request_end` of `events` reports.
fn span_input_tokens(events: &[Value]) -> u64 {
    events
        .iter()
        .filter(|e| e["type"] == "span.model_request_end")
        .map(|e| e["model_usage"]["input_tokens"].as_u64().unwrap_or(0))
        .sum()
}

/// Waits until the fake has received `n` summarizing requests.
async fn wait_summary_requests(model: &FakeModel, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while model.requests().iter().filter(|r| is_summary_request(&r.body)).count() < n {
        assert!(Instant::now() < deadline, "no summarizing request #{n}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Defect (review-runner2): a compaction interrupted while its summarizing
/// call is retried or streams loses the usage the provider already billed.
/// `Task::compact` keeps what each failed summarizing attempt reported after
/// `message_start` (`failed_usage`, "billed, so recorded with the
/// compaction"), but an interrupt (during the stream or the backoff) returns
/// `Ok(())` with nothing appended: neither that usage nor the current
/// attempt's is recorded anywhere, so `session.usage` and `list_cost` (and
/// budgets) under-count, unlike an interrupted model request, whose
/// `span.model_request_end` keeps what the provider reported.
/// Method: a second turn refused as too long makes the runner compact; the
/// first summarizing call reports 700,000 input tokens and breaks, the
/// second hangs; once the second was received (so the first's usage is in
/// `failed_usage`), the user interrupts. The idle's usage must include the
/// 700,000 tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_compaction_keeps_the_usage_its_summarizing_calls_were_billed() {
    let options = FakeOptions {
        summary_script: Some(vec![
            json!({"fault": "cut", "after_events": 2}),
            json!({"content": [{"type": "text", "text": "A summary that never arrives."}],
                   "usage": {"input_tokens": 700_000, "output_tokens": 5}}),
            json!({"fault": "hang"}),
        ]),
        ..FakeOptions::default()
    };
    let model = FakeModel::start_with(
        vec![
            json!({"content": [{"type": "text", "text": "First answer."}], "stop_reason": "end_turn"}),
            json!({"fault": "status", "status": 400, "message": "prompt is too long: 212345 tokens > 200000 maximum"}),
        ],
        options,
    )
    .expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[]);
    let api = Api::new(&server);
    let session = new_session(&api, toolset("always_allow")).await;
    api.send(&session, user_message("first")).await;
    api.wait_idle(&session, 1).await;
    api.send(&session, user_message("second")).await;
    // The second summarizing request was sent: the first one's break (and
    // the usage it reported) has been handled.
    wait_summary_requests(&model, 2).await;
    api.send(&session, json!([{"type": "user.interrupt"}])).await;
    let events = api.wait_idle(&session, 2).await;
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn", "{:#?}", types(&events));
    let usage = events.iter().rev().find(|e| e["type"] == "session.usage").unwrap();
    let input = usage["usage"]["input_tokens"].as_u64().unwrap();
    let spans = span_input_tokens(&events);
    assert!(
        input >= spans + 700_000,
        "the summarizing call billed 700,000 input tokens, but the session reports {input} \
         (its model requests' spans: {spans}): {usage}"
    );
    // The record of the billed summary is part of the interrupt's step.
    drop(server);
    let stderr = rerun_passes(&dir.path().join("data"));
    assert!(stderr.contains("every decision reproduced"), "{stderr}");
}

/// Defect (review-runner2): a summarizing call the provider refuses
/// (`stop_reason: "refusal"`) becomes the compaction's summary.
/// `Task::compact` takes the text of any successful summarizing response,
/// whatever its stop reason, so the refusal text ("I can't help with
/// that") replaces every older turn in the context for the rest of the
/// session: the model loses the conversation and is told it was a refusal.
/// A refused summary is no summary: it should be treated like a failed one
/// (the older turns elided mechanically, `elided_summary`), as the runner
/// does when the summarizing call fails or returns no text.
/// Method: a second turn refused as too long makes the runner compact; the
/// summarizing call is refused; the retried request of the turn must not
/// carry the refusal as the conversation's summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_summarizing_call_does_not_become_the_conversations_summary() {
    const REFUSAL: &str = "I can't help with summarizing this conversation.";
    let options = FakeOptions {
        summary_script: Some(vec![json!({"content": [{"type": "text", "text": REFUSAL}], "stop_reason": "refusal"})]),
        ..FakeOptions::default()
    };
    let model = FakeModel::start_with(
        vec![
            json!({"content": [{"type": "text", "text": "First answer."}], "stop_reason": "end_turn"}),
            json!({"fault": "status", "status": 400, "message": "prompt is too long: 212345 tokens > 200000 maximum"}),
            json!({"content": [{"type": "text", "text": "Second answer."}], "stop_reason": "end_turn"}),
        ],
        options,
    )
    .expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[]);
    let api = Api::new(&server);
    let session = new_session(&api, toolset("always_allow")).await;
    api.send(&session, user_message("first")).await;
    api.wait_idle(&session, 1).await;
    api.send(&session, user_message("second")).await;
    let events = api.wait_idle(&session, 2).await;
    assert!(types(&events).contains(&"agent.thread_context_compacted".to_owned()), "{:#?}", types(&events));
    let requests: Vec<Value> =
        model.requests().into_iter().map(|r| r.body).filter(|body| !is_summary_request(body)).collect();
    assert_eq!(requests.len(), 3, "the first turn's request, the refused one and its retry");
    let retried = requests[2]["messages"].to_string();
    assert!(
        !retried.contains(REFUSAL),
        "the provider refused to summarize, and its refusal was sent as the summary of the conversation: {}",
        requests[2]["messages"]
    );
}

/// Defect (review-runner2): a session pausing at its budget does not emit
/// the primary thread's `session.thread_status_idle`. The behaviour digest
/// (§12, and §3.4's newer reference: "a single-agent session's primary
/// thread also emits `session.thread_status_idle` at least when pausing at a
/// budget") gives the pause as `session.thread_status_idle (budget_reached)`
/// per thread → `session.usage` → `session.status_idle (budget_reached)`;
/// the runner's pause (`Task::call_model` → `idle_at(BudgetReached)`)
/// appends only the last two, and nothing in the server ever emits a
/// `session.thread_status_*` event (the primary thread `sthr_…` exists in
/// the threads API), so clients following threads never see it pause.
/// Method: one request costs more than the budget; the pause that follows
/// must end with the thread's idle, the usage and the session's idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_pause_idles_the_primary_thread_before_the_session() {
    let model = FakeModel::start(vec![json!({
        "content": [{"type": "tool_use", "id": "toolu_b", "name": "bash", "input": {"command": "ls"}}],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 1_000_000, "output_tokens": 10}
    })])
    .expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[]);
    let api = Api::new(&server);
    let budget = json!({"type": "limit", "max_list_cost": {"amount": "100", "currency": "USD"}});
    let session = api
        .session_with_fields(
            json!({"name": "b", "tools": toolset("always_allow")}),
            json!({"name": "b"}),
            json!({"budget": budget}),
        )
        .await;
    api.send(&session, user_message("go")).await;
    let events = api.wait_idle(&session, 1).await;
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "budget_reached", "{:#?}", types(&events));
    let tail: Vec<String> = types(&events).into_iter().rev().take(3).rev().collect();
    assert_eq!(
        tail,
        ["session.thread_status_idle", "session.usage", "session.status_idle"],
        "the pause at the budget: {:#?}",
        types(&events)
    );
    let thread_idle = &events[events.len() - 3];
    assert_eq!(thread_idle["stop_reason"]["type"], "budget_reached", "{thread_idle}");
    let thread = session.replacen("sesn_", "sthr_", 1);
    assert_eq!(thread_idle["session_thread_id"], thread.as_str(), "{thread_idle}");
}

/// Defect (review-runner2): a request the provider refuses as larger than
/// it accepts (HTTP 413 `request_too_large`: the Messages API takes at most
/// 32 MB) ends the turn `retries_exhausted`, and every later turn sends the
/// same (larger) conversation and is refused again: the session is wedged
/// for good. Only the two "over the window" messages
/// (`logbook_replay::machine::OVER_THE_WINDOW`) make the runner compact and
/// retry (`Task::model_failed`); a 413 is a final `InvalidRequest`. The
/// token-based trigger does not prevent it: images count a flat 1,600
/// tokens (`tokens::IMAGE_TOKENS`) however many bytes they are, so a
/// session that has collected some forty 1 MB screenshots (custom tool
/// results, user messages) is over 32 MB at about 64,000 estimated tokens,
/// far below the compaction trigger. A compaction (whose summary, or its
/// mechanical fallback, carries no images) is what makes such a request fit.
/// Method: a first turn answered; the second turn's request is refused with
/// the provider's 413; the runner must compact and answer the turn, not end
/// it `retries_exhausted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_provider_finds_too_large_is_compacted_not_the_end_of_the_session() {
    let model = FakeModel::start(vec![
        json!({"content": [{"type": "text", "text": "First answer."}], "stop_reason": "end_turn"}),
        json!({"fault": "status", "status": 413, "message": "Request exceeds the maximum allowed number of bytes."}),
        json!({"content": [{"type": "text", "text": "Second answer."}], "stop_reason": "end_turn"}),
    ])
    .expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[]);
    let api = Api::new(&server);
    let session = new_session(&api, toolset("always_allow")).await;
    api.send(&session, user_message("first")).await;
    let events = api.wait_idle(&session, 1).await;
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn");
    api.send(&session, user_message("second")).await;
    let events = api.wait_idle(&session, 2).await;
    let errors: Vec<&Value> = events.iter().filter(|e| e["type"] == "session.error").collect();
    assert_eq!(
        events.last().unwrap()["stop_reason"]["type"],
        "end_turn",
        "a request too large for the provider ended the turn: {errors:#?}"
    );
    assert!(types(&events).contains(&"agent.thread_context_compacted".to_owned()), "{:#?}", types(&events));
}

/// Defect (review-runner2): the password of a model endpoint's URL reaches
/// every API client of a session, and the server log. A gateway behind basic
/// authentication is configured as `ANTHROPIC_BASE_URL=https://user:password@host`;
/// when it cannot be reached, `ModelClient::stream` builds the error from the
/// whole request URL (`Connect { reason: format!("{url}: ...") }`, and
/// reqwest's own message names it again), and the runner records that text
/// as the `session.error` message (`error_detail`: `error.to_string()`),
/// which the events list and stream show to anyone who can read the
/// session, and logs it (`model call failed`). MCP URLs are cut to
/// `scheme://host:port` before they are shown (`mcp::connect::shown`); the
/// model's URL is not.
/// Method: point the server at a closed loopback port through a URL with a
/// password; the turn fails to connect; neither the session's events nor
/// the server's output may contain the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_endpoints_password_never_reaches_events_or_logs() {
    const PASSWORD: &str = "gw-pass-7f3a9c";
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let base_url = format!("http://gateway-user:{PASSWORD}@127.0.0.1:{port}");
    let model = FakeModel::start(vec![]).expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[("ANTHROPIC_BASE_URL", base_url.as_str())]);
    let api = Api::new(&server);
    let session = new_session(&api, toolset("always_allow")).await;
    api.send(&session, user_message("hello")).await;
    let events = api.wait_idle(&session, 1).await;
    let errors: Vec<&Value> = events.iter().filter(|e| e["type"] == "session.error").collect();
    assert!(!errors.is_empty(), "the unreachable endpoint made no session.error: {:#?}", types(&events));
    let listed = Value::Array(events.clone()).to_string();
    assert!(!listed.contains(PASSWORD), "the endpoint's password is in the session's events: {errors:#?}");
    let output = server.output();
    assert!(!output.contains(PASSWORD), "the endpoint's password is in the server's log: {output}");
}
