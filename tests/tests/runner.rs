//! End-to-end tests of the runner: the real `logbook` binary, driving the
//! scripted fake Messages API over loopback, observed through the API.
//!
//! Goal: a turn's event sequence and stop reasons are those of the hosted
//! service for tool use, confirmations, custom tools, model faults, interrupts
//! and a kill -9 mid-turn; the model sees tool results under its own tool ids.
//! Method: start the fake model with a script, start the server pointed at it
//! (`LOGBOOK_TOOLS=echo`: built-in tools echo their input instead of running in
//! the sandbox; `sandbox_runner.rs` runs them for real),
//! send events over HTTP and wait (with deadlines, polling the list) for the
//! idle that ends the turn.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

use std::path::Path;
use std::time::{Duration, Instant};

use logbook_tests::fake_model::{FakeModel, FakeOptions, is_summary_request};
use logbook_tests::server::{Api, Server, outcome, rerun_passes, types, user_message};
use serde_json::{Value, json};

/// Stops the server and checks, with `logbook rerun`, that every recorded
/// decision of every session follows from the log through the state machine.
fn rerun_check(server: Server, data: &Path) {
    drop(server);
    let stderr = rerun_passes(data);
    assert!(stderr.contains("every decision reproduced"), "{stderr}");
}

/// An agent with `tools` in a new environment, and a session of it.
async fn new_session(api: &Api, tools: Value) -> String {
    api.session_with(json!({"name": "runner", "tools": tools}), json!({"name": "runner"})).await
}

fn toolset(policy: &str) -> Value {
    json!([{"type": "agent_toolset_20260401", "default_config": {"permission_policy": {"type": policy}}},
           {"type": "custom", "name": "get_weather", "description": "Get weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_using_turn_has_the_hosted_event_sequence() {
    let model = FakeModel::start(vec![
        json!({"content": [{"type": "text", "text": "Let me look."},
                           {"type": "tool_use", "id": "toolu_01", "name": "bash", "input": {"command": "ls"}}],
               "stop_reason": "tool_use"}),
        json!({"content": [{"type": "text", "text": "There are two files."}], "stop_reason": "end_turn"}),
    ])
    .expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[]);
    let api = Api::new(&server);
    let session = new_session(&api, toolset("always_allow")).await;
    api.send(&session, user_message("what is here?")).await;
    let events = api.wait_idle(&session, 1).await;
    assert_eq!(
        types(&events),
        [
            "user.message",
            "session.status_running",
            "session.thread_status_running",
            "span.model_request_start",
            "agent.message",
            "agent.tool_use",
            "span.model_request_end",
            "agent.tool_result",
            "span.model_request_start",
            "agent.message",
            "span.model_request_end",
            "session.usage",
            "session.status_idle",
        ]
    );
    let tool_use = &events[5];
    assert_eq!(tool_use["evaluated_permission"], "allow");
    assert_eq!(events[7]["tool_use_id"], tool_use["id"]);
    assert_eq!(events[7]["is_error"], false);
    assert_eq!(events[12]["stop_reason"]["type"], "end_turn");
    // The primary thread runs with the session.
    assert_eq!(events[2]["session_thread_id"], format!("sthr_{}", &session["sesn_".len()..]));
    assert_eq!(events[2]["agent_name"], "runner");
    // The model saw the result under its own tool id, after its own tool_use.
    let requests = model.requests();
    assert_eq!(requests.len(), 2);
    let messages = requests[1].body["messages"].as_array().unwrap();
    let last = messages.last().unwrap();
    assert_eq!(last["role"], "user");
    assert_eq!(last["content"][0]["type"], "tool_result");
    assert_eq!(last["content"][0]["tool_use_id"], "toolu_01");
    assert_eq!(messages[1]["content"][1]["id"], "toolu_01");
    let session_obj = api.get(&format!("/v1/sessions/{session}")).await;
    assert_eq!(session_obj["status"], "idle");
    rerun_check(server, &dir.path().join("data"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_ask_waits_and_a_denial_becomes_an_error_result() {
    let model = FakeModel::start(vec![
        json!({"content": [{"type": "tool_use", "id": "toolu_a", "name": "bash", "input": {"command": "rm -rf /tmp/x"}}],
               "stop_reason": "tool_use"}),
        json!({"content": [{"type": "text", "text": "Understood."}], "stop_reason": "end_turn"}),
    ])
    .expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[]);
    let api = Api::new(&server);
    let session = new_session(&api, toolset("always_ask")).await;
    api.send(&session, user_message("clean up")).await;
    let events = api.wait_idle(&session, 1).await;
    let idle = events.last().unwrap();
    assert_eq!(idle["stop_reason"]["type"], "requires_action");
    let tool_use = events.iter().find(|e| e["type"] == "agent.tool_use").unwrap();
    assert_eq!(tool_use["evaluated_permission"], "ask");
    assert_eq!(idle["stop_reason"]["event_ids"], json!([tool_use["id"]]));
    api.send(
        &session,
        json!([{"type": "user.tool_confirmation", "tool_use_id": tool_use["id"], "result": "deny", "deny_message": "not today"}]),
    )
    .await;
    let events = api.wait_idle(&session, 2).await;
    let result = events.iter().find(|e| e["type"] == "agent.tool_result").unwrap();
    assert_eq!(result["is_error"], true);
    assert!(result["content"][0]["text"].as_str().unwrap().contains("not today"));
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn");
    rerun_check(server, &dir.path().join("data"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_tools_wait_for_the_client_result() {
    let model = FakeModel::start(vec![
        json!({"content": [{"type": "tool_use", "id": "toolu_w", "name": "get_weather", "input": {"city": "Oslo"}}],
               "stop_reason": "tool_use"}),
        json!({"content": [{"type": "text", "text": "It is cold in Oslo."}], "stop_reason": "end_turn"}),
    ])
    .expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[]);
    let api = Api::new(&server);
    let session = new_session(&api, toolset("always_allow")).await;
    api.send(&session, user_message("weather?")).await;
    let events = api.wait_idle(&session, 1).await;
    let call = events.iter().find(|e| e["type"] == "agent.custom_tool_use").unwrap();
    assert_eq!(events.last().unwrap()["stop_reason"]["event_ids"], json!([call["id"]]));
    api.send(
        &session,
        json!([{"type": "user.custom_tool_result", "custom_tool_use_id": call["id"],
                "content": [{"type": "text", "text": "-3 C"}]}]),
    )
    .await;
    let events = api.wait_idle(&session, 2).await;
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn");
    let requests = model.requests();
    let last = requests[1].body["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["content"][0]["tool_use_id"], "toolu_w");
    assert_eq!(last["content"][0]["content"][0]["text"], "-3 C");
    rerun_check(server, &dir.path().join("data"));
}

/// Slack either way around the disk reserve of
/// [`a_disk_below_its_reserve_takes_no_new_work_but_ends_what_runs`]: what
/// other tests may write or delete on the same disk while it runs.
const DISK_SLACK_MIB: u64 = 512;

/// Waits until `/healthz` says the disk is (`low`) or is not below its
/// reserve: the guard reads the disk again then, so the next request is
/// judged on the same reading.
async fn wait_disk_low(api: &Api, low: bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let health = api.get("/healthz").await;
        if health["disk_low"] == low {
            return;
        }
        assert!(Instant::now() < deadline, "/healthz never said disk_low {low}: {health}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Goal: with the data directory's disk below its reserve
/// (`--disk-reserve-mib`), clients' new work is refused (503 api_error
/// `insufficient_storage`, not to be retried at once) while work under way
/// ends: a custom tool's result is taken and its turn answered; once space
/// is freed, new work is taken and answered again, with no restart.
/// Method: the real server with a reserve [`DISK_SLACK_MIB`] under the
/// disk's free space; a file of twice that allocated (`fallocate`) beside
/// the data directory while the session waits for the tool's result, then
/// removed (other test servers run with no reserve, so the file does not
/// make them refuse work). The guard reads the disk at most every 250 ms:
/// the test waits until `/healthz` reports each change before it sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_below_its_reserve_takes_no_new_work_but_ends_what_runs() {
    use logbook_server::diskguard::{DiskGuard, Free};
    let model = FakeModel::start(vec![
        json!({"content": [{"type": "tool_use", "id": "toolu_w", "name": "get_weather", "input": {"city": "Oslo"}}],
               "stop_reason": "tool_use"}),
        json!({"content": [{"type": "text", "text": "It is cold in Oslo."}], "stop_reason": "end_turn"}),
        json!({"content": [{"type": "text", "text": "Back."}], "stop_reason": "end_turn"}),
    ])
    .expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let Free::Bytes(free) = DiskGuard::new(dir.path(), 1).free(Instant::now()) else { panic!("statvfs") };
    let free_mib = free >> 20;
    // Servers started elsewhere keep the default reserve: with the file in
    // place, the disk stays above it, with slack.
    let needed = 3 * DISK_SLACK_MIB + (logbook_server::diskguard::DEFAULT_RESERVE_BYTES >> 20);
    assert!(free_mib > needed, "this test needs {needed} MiB free, the disk has {free_mib}");
    let reserve = (free_mib - DISK_SLACK_MIB).to_string();
    let data = dir.path().join("data");
    let server = Server::start(&data, &model, &[("LOGBOOK_DISK_RESERVE_MIB", reserve.as_str())]);
    let api = Api::new(&server);
    let session = new_session(&api, toolset("always_allow")).await;
    api.send(&session, user_message("weather?")).await;
    let events = api.wait_idle(&session, 1).await;
    let call = events.iter().find(|e| e["type"] == "agent.custom_tool_use").unwrap()["id"].clone();

    // The disk fills beyond the reserve.
    let filler = dir.path().join("filler");
    let size = format!("{}MiB", 2 * DISK_SLACK_MIB);
    let status = std::process::Command::new("fallocate").args(["-l", &size]).arg(&filler).status().unwrap();
    assert!(status.success(), "fallocate -l {size}: {status}");
    wait_disk_low(&api, true).await;
    let path = format!("/v1/sessions/{session}/events");
    let (status, refusal) = api.raw(reqwest::Method::POST, &path, Some(json!({"events": user_message("more?")}))).await;
    assert_eq!(status, 503, "{refusal}");
    assert_eq!(refusal["error"]["type"], "api_error", "{refusal}");
    assert_eq!(refusal["error"]["details"]["error_code"], "insufficient_storage", "{refusal}");

    // What runs ends: the tool's result is taken and its turn answered.
    let idles = api.events(&session).await.iter().filter(|e| e["type"] == "session.status_idle").count();
    api.send(
        &session,
        json!([{"type": "user.custom_tool_result", "custom_tool_use_id": call,
                "content": [{"type": "text", "text": "-3 C"}]}]),
    )
    .await;
    let events = api.wait_idle(&session, idles + 1).await;
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn", "{:#?}", types(&events));
    assert!(events.iter().any(|e| e["type"] == "agent.message"), "{:#?}", types(&events));

    // Space freed: new work is taken again, and answered.
    std::fs::remove_file(&filler).unwrap();
    wait_disk_low(&api, false).await;
    api.send(&session, user_message("back?")).await;
    let events = api.wait_idle(&session, idles + 2).await;
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn", "{:#?}", types(&events));
    assert!(api.metric("logbook_disk_low_refused_total").await >= 1.0);
    rerun_check(server, &data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_are_retried_and_a_rejected_key_ends_the_turn() {
    let model = FakeModel::start(vec![
        json!({"fault": "status", "status": 529, "retry_after": 0}),
        // `cut` breaks the response that follows it, after three stream events.
        json!({"fault": "cut", "after_events": 3}),
        json!({"content": [{"type": "text", "text": "This answer is cut."}], "stop_reason": "end_turn"}),
        json!({"content": [{"type": "text", "text": "Recovered."}], "stop_reason": "end_turn"}),
        json!({"fault": "status", "status": 401, "message": "invalid x-api-key"}),
    ])
    .expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[]);
    let api = Api::new(&server);
    let session = new_session(&api, toolset("always_allow")).await;
    api.send(&session, user_message("hi")).await;
    let events = api.wait_idle(&session, 1).await;
    let errors: Vec<&Value> = events.iter().filter(|e| e["type"] == "session.error").collect();
    assert_eq!(errors.len(), 2, "{:#?}", types(&events));
    assert_eq!(errors[0]["error"]["type"], "model_overloaded_error");
    assert_eq!(errors[0]["error"]["retry_status"]["type"], "retrying");
    assert_eq!(errors[1]["error"]["type"], "model_request_failed_error");
    assert_eq!(types(&events).iter().filter(|t| *t == "session.status_rescheduled").count(), 2);
    assert_eq!(
        types(&events).iter().filter(|t| *t == "agent.message").count(),
        1,
        "no duplicate message after retries"
    );
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn");

    api.send(&session, user_message("again")).await;
    let events = api.wait_idle(&session, 2).await;
    let last_error = events.iter().rev().find(|e| e["type"] == "session.error").unwrap();
    assert_eq!(last_error["error"]["retry_status"]["type"], "exhausted");
    assert!(last_error["error"]["message"].as_str().unwrap().contains("credentials"));
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "retries_exhausted");
    rerun_check(server, &dir.path().join("data"));
}

/// Goal: an interrupt stops a streaming model call and ends the turn
/// `end_turn`, with no `agent.message`; so does one routed to the session's
/// primary thread (the thread `GET /threads` lists, running while the
/// session runs: API digest §2.7, events reach threads through the
/// session-level POST by `session_thread_id`).
/// Method: for each form of the interrupt, a dripping answer interrupted
/// once its request started; `logbook rerun` reproduces the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_stops_the_model_stream_and_ends_the_turn() {
    for to_primary_thread in [false, true] {
        let model = FakeModel::start(vec![
            json!({"fault": "drip", "delay_ms": 400}),
            json!({"content": [{"type": "text", "text": "a very long answer that takes a while to stream"}], "stop_reason": "end_turn"}),
        ])
        .expect("fake starts");
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(&dir.path().join("data"), &model, &[]);
        let api = Api::new(&server);
        let session = new_session(&api, toolset("always_allow")).await;
        api.send(&session, user_message("tell me everything")).await;
        // Wait until the model request is under way, then interrupt.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !types(&api.events(&session).await).contains(&"span.model_request_start".to_owned()) {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut interrupt = json!({"type": "user.interrupt"});
        if to_primary_thread {
            let threads = api.get(&format!("/v1/sessions/{session}/threads")).await;
            assert_eq!(threads["data"][0]["status"], "running", "{threads}");
            interrupt["session_thread_id"] = threads["data"][0]["id"].clone();
        }
        let (status, body) = api
            .raw(reqwest::Method::POST, &format!("/v1/sessions/{session}/events"), Some(json!({"events": [interrupt]})))
            .await;
        assert_eq!(status, 200, "{body}");
        let events = api.wait_idle(&session, 1).await;
        assert!(!types(&events).contains(&"agent.message".to_owned()), "{:#?}", types(&events));
        let end = events.iter().find(|e| e["type"] == "span.model_request_end").unwrap();
        assert_eq!(end["is_error"], true);
        assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn");
        rerun_check(server, &dir.path().join("data"));
    }
}

/// Goal: "send, then stop" in one request stops the turn the message would
/// start (behaviour digest §3.6: the turn ends `end_turn`): the model is not
/// called, the message starts no turn later, and the next message does.
/// Method: a message and an interrupt in one request to an idle session;
/// then another message; `logbook rerun` reproduces the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_then_an_interrupt_in_one_request_calls_no_model() {
    let model =
        FakeModel::start(vec![json!({"content": [{"type": "text", "text": "Hello."}], "stop_reason": "end_turn"})])
            .expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[]);
    let api = Api::new(&server);
    let session = new_session(&api, toolset("always_allow")).await;
    api.send(
        &session,
        json!([{"type": "user.message", "content": [{"type": "text", "text": "do it"}]}, {"type": "user.interrupt"}]),
    )
    .await;
    let events = api.wait_idle(&session, 1).await;
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn", "{:#?}", types(&events));
    api.wait_runner_quiet().await;
    let events = api.events(&session).await;
    assert!(!types(&events).contains(&"span.model_request_start".to_owned()), "{:#?}", types(&events));
    assert_eq!(model.requests().len(), 0);
    api.send(&session, user_message("now this")).await;
    let events = api.wait_idle(&session, 2).await;
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn", "{:#?}", types(&events));
    assert_eq!(model.requests().len(), 1);
    rerun_check(server, &dir.path().join("data"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_mid_turn_is_recovered_on_restart() {
    let model = FakeModel::start(vec![json!({"fault": "hang"})]).expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &model, &[]);
    let api = Api::new(&server);
    let session = new_session(&api, toolset("always_allow")).await;
    api.send(&session, user_message("hi")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !types(&api.events(&session).await).contains(&"span.model_request_start".to_owned()) {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(server); // SIGKILL mid model request
    model.set_script(vec![json!({"content": [{"type": "text", "text": "Back."}], "stop_reason": "end_turn"})]).unwrap();
    let server = Server::start(&data, &model, &[]);
    let api = Api::new(&server);
    let events = api.wait_idle(&session, 1).await;
    let ends: Vec<&Value> = events.iter().filter(|e| e["type"] == "span.model_request_end").collect();
    assert_eq!(ends.len(), 2, "{:#?}", types(&events));
    assert_eq!(ends[0]["is_error"], true, "the request cut by the kill is closed as failed");
    assert_eq!(ends[1]["is_error"], false);
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn");
    rerun_check(server, &data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_stops_the_session_after_at_most_one_request() {
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
    // One request cost $3 (1M input tokens) against a $1 budget: the tool
    // still runs, the next request is not made.
    assert_eq!(types(&events).iter().filter(|t| *t == "span.model_request_start").count(), 1);
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "budget_reached");
    // The primary thread pauses first (behaviour digest §12): its
    // `session.thread_status_idle`, then the usage and the session's idle.
    let tail: Vec<String> = types(&events).into_iter().rev().take(3).rev().collect();
    assert_eq!(tail, ["session.thread_status_idle", "session.usage", "session.status_idle"], "{:#?}", types(&events));
    let thread_idle = &events[events.len() - 3];
    assert_eq!(thread_idle["stop_reason"]["type"], "budget_reached", "{thread_idle}");
    assert_eq!(thread_idle["session_thread_id"], session.replacen("sesn_", "sthr_", 1).as_str(), "{thread_idle}");
    let usage = events.iter().rev().find(|e| e["type"] == "session.usage").unwrap();
    assert_eq!(usage["usage"]["input_tokens"], 1_000_000);
    assert_eq!(usage["usage"]["list_cost"]["currency"], "USD");
    let object = api.get(&format!("/v1/sessions/{session}")).await;
    assert_eq!(object["usage"]["input_tokens"], 1_000_000);
    assert!(object["usage"]["list_cost"]["amount"].as_str().unwrap().parse::<u64>().unwrap() >= 300);
    // Paused at the cap (behaviour digest §12): a new message is refused, a
    // new cap at or below the consumed cost too; one above it is taken.
    let (status, body) = api
        .raw(
            reqwest::Method::POST,
            &format!("/v1/sessions/{session}/events"),
            Some(json!({"events": user_message("more")})),
        )
        .await;
    assert_eq!((status, body["error"]["details"]["error_code"].clone()), (400, json!("budget_reached")), "{body}");
    let cap = |cents: &str| json!({"budget": {"type": "limit", "max_list_cost": {"amount": cents, "currency": "USD"}}});
    let (status, body) = api.raw(reqwest::Method::POST, &format!("/v1/sessions/{session}"), Some(cap("200"))).await;
    assert_eq!((status, body["error"]["details"]["error_code"].clone()), (400, json!("budget_not_raised")), "{body}");
    api.post(&format!("/v1/sessions/{session}"), cap("100000")).await;
    rerun_check(server, &dir.path().join("data"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auto_policy_runs_the_allowed_tools_and_asks_for_the_rest() {
    // One response calls a reading tool and bash. By default `auto` runs the
    // read and asks for bash; with LOGBOOK_AUTO_ALLOW naming bash, both run.
    let calls = json!({"content": [
        {"type": "tool_use", "id": "toolu_r", "name": "read", "input": {"file_path": "/workspace/a.txt"}},
        {"type": "tool_use", "id": "toolu_b", "name": "bash", "input": {"command": "ls"}}],
        "stop_reason": "tool_use"});
    let done = json!({"content": [{"type": "text", "text": "done"}], "stop_reason": "end_turn"});
    for (allow, bash_asks) in [(None, true), (Some("bash, read"), false)] {
        let model = FakeModel::start(vec![calls.clone(), done.clone()]).expect("fake starts");
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let env: Vec<(&str, &str)> = allow.map(|list| ("LOGBOOK_AUTO_ALLOW", list)).into_iter().collect();
        let server = Server::start(&data, &model, &env);
        let api = Api::new(&server);
        let session = new_session(&api, toolset("auto")).await;
        api.send(&session, user_message("look and list")).await;
        let events = api.wait_idle(&session, 1).await;
        let uses: Vec<&Value> = events.iter().filter(|e| e["type"] == "agent.tool_use").collect();
        let (read, bash) = (uses[0], uses[1]);
        assert_eq!(read["evaluated_permission"], "allow", "{read}");
        assert_eq!(read["evaluation"]["type"], "auto", "{read}");
        let idle = events.iter().rev().find(|e| e["type"] == "session.status_idle").unwrap();
        if bash_asks {
            assert_eq!(bash["evaluated_permission"], "ask", "{bash}");
            assert_eq!(idle["stop_reason"]["type"], "requires_action", "{idle}");
            assert_eq!(idle["stop_reason"]["event_ids"], json!([bash["id"]]));
        } else {
            assert_eq!(bash["evaluated_permission"], "allow", "{bash}");
            assert_eq!(idle["stop_reason"]["type"], "end_turn", "{idle}");
        }
        rerun_check(server, &data);
    }
    // A name that is not a built-in tool stops the server at start-up.
    let model = FakeModel::start(vec![]).expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = logbook_tests::server::run_cli_env(
        &["serve", "--listen", "127.0.0.1:0", "--data", dir.path().join("data").to_str().unwrap()],
        &[("LOGBOOK_AUTO_ALLOW", "bash,rm"), ("ANTHROPIC_BASE_URL", model.base_url()), ("ANTHROPIC_API_KEY", "k")],
    );
    assert_ne!(code, 0);
    assert!(stderr.contains("LOGBOOK_AUTO_ALLOW") && stderr.contains("\"rm\""), "{stderr}");
}

/// Goal: raising the budget of a session paused at it resumes the paused
/// work by itself (behaviour digest §12: "resumption is automatic"), though
/// no new input arrives: the model sees the tool result it paused before.
/// Method: the first request costs $3 against a $1 budget and calls a tool;
/// the runner pauses before the next call; the budget is raised to $1,000;
/// the turn goes on to `end_turn` with a second request, and `logbook rerun`
/// reproduces it. Compaction is off: the 1M-token context would otherwise be
/// summarized first, in a request of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raised_budget_resumes_the_paused_turn() {
    let model = FakeModel::start(vec![
        json!({
            "content": [{"type": "tool_use", "id": "toolu_b", "name": "bash", "input": {"command": "ls"}}],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 1_000_000, "output_tokens": 10}
        }),
        json!({"content": [{"type": "text", "text": "Listed."}], "stop_reason": "end_turn",
               "usage": {"input_tokens": 10, "output_tokens": 10}}),
    ])
    .expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[("LOGBOOK_COMPACTION_PERCENT", "0")]);
    let api = Api::new(&server).with_turn_deadline(Duration::from_secs(10));
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
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "budget_reached");
    let cap = json!({"budget": {"type": "limit", "max_list_cost": {"amount": "100000", "currency": "USD"}}});
    api.post(&format!("/v1/sessions/{session}"), cap).await;
    // The paused turn goes on by itself: the model sees the tool result.
    let events = api.wait_idle(&session, 2).await;
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn", "{:#?}", types(&events));
    assert_eq!(model.requests().len(), 2);
    rerun_check(server, &dir.path().join("data"));
}

/// Goal: a session paused at its budget stays paused with the input queued
/// before the pause (behaviour digest §12): no turn starts again until the
/// budget changes (the runner used to restart turns in a loop, up to
/// `MAX_STEPS_PER_WAKE` of them per wake).
/// Method: a message is sent while the request that uses up the budget
/// streams; the runner pauses before the next call; a second later the log
/// still holds one turn and one idle, and `logbook rerun` reproduces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_queued_when_the_budget_runs_out_does_not_restart_turns() {
    let model = FakeModel::start(vec![
        json!({"fault": "drip", "delay_ms": 150}),
        json!({
            "content": [{"type": "text", "text": "An expensive answer."}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 1_000_000, "output_tokens": 10}
        }),
    ])
    .expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[]);
    let api = Api::new(&server).with_turn_deadline(Duration::from_secs(10));
    let budget = json!({"type": "limit", "max_list_cost": {"amount": "100", "currency": "USD"}});
    let session = api
        .session_with_fields(
            json!({"name": "b", "tools": toolset("always_allow")}),
            json!({"name": "b"}),
            json!({"budget": budget}),
        )
        .await;
    api.send(&session, user_message("first")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !types(&api.events(&session).await).contains(&"span.model_request_start".to_owned()) {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Queued while the expensive request streams.
    api.send(&session, user_message("second")).await;
    let events = api.wait_idle(&session, 1).await;
    assert_eq!(
        events.iter().rev().find(|e| e["type"] == "session.status_idle").unwrap()["stop_reason"]["type"],
        "budget_reached"
    );
    api.wait_runner_quiet().await;
    let events = api.events(&session).await;
    let kinds = types(&events);
    let running = kinds.iter().filter(|t| *t == "session.status_running").count();
    let idles = kinds.iter().filter(|t| *t == "session.status_idle").count();
    assert_eq!((running, idles), (1, 1), "paused at the budget, the session must stay idle: {} events", events.len());
    assert_eq!(model.requests().len(), 1);
    rerun_check(server, &dir.path().join("data"));
}

/// Goal: when retries are exhausted, input queued during the dead turn is
/// flushed (behaviour digest §3.7: "queued inputs are flushed; session
/// returns to idle"): no turn starts on its own after `retries_exhausted`.
/// Method: a message is sent while the request that fails for good (a
/// rejected key) streams; once the runner is quiet after the `retries_exhausted` idle, the log
/// holds one turn and the model one request, and `logbook rerun` reproduces
/// it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_flush_the_queued_input() {
    let model = FakeModel::start(vec![
        json!({"fault": "drip", "delay_ms": 150}),
        json!({"fault": "error_event", "after_events": 4, "error_type": "authentication_error", "message": "bad key"}),
        json!({"content": [{"type": "text", "text": "never seen"}], "stop_reason": "end_turn"}),
        json!({"content": [{"type": "text", "text": "A turn nobody asked for."}], "stop_reason": "end_turn"}),
    ])
    .expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[]);
    let api = Api::new(&server).with_turn_deadline(Duration::from_secs(10));
    let session = new_session(&api, toolset("always_allow")).await;
    api.send(&session, user_message("first")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !types(&api.events(&session).await).contains(&"span.model_request_start".to_owned()) {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Queued while the request that will fail for good streams.
    api.send(&session, user_message("second")).await;
    let events = api.wait_idle(&session, 1).await;
    let idle = events.iter().find(|e| e["type"] == "session.status_idle").unwrap();
    assert_eq!(idle["stop_reason"]["type"], "retries_exhausted", "{:#?}", types(&events));
    api.wait_runner_quiet().await;
    let events = api.events(&session).await;
    let running = types(&events).iter().filter(|t| *t == "session.status_running").count();
    assert_eq!(running, 1, "the dead turn's queued input started another turn: {:#?}", types(&events));
    assert_eq!(model.requests().len(), 1);
    rerun_check(server, &dir.path().join("data"));
}

/// Defect (review-runner): a call can get two answers. The runner closes
/// open calls (an interrupt's error results, step.rs `Command::Interrupt`;
/// likewise `FailTools` and `DenyTools`) with a plain `append` at whatever
/// the head is, without checking that the calls are still open there. A
/// client's `user.custom_tool_result` that lands between the runner's
/// catch-up and that append is accepted by the API (the call is open at its
/// head) and the runner's error result follows it: two answers to one call.
/// The context then holds two `tool_result` blocks for it (the second under
/// Logbook's event id, which the model never saw), which the Messages API
/// rejects, so every later turn of the session fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_racing_a_custom_tool_result_never_answers_a_call_twice() {
    let custom = json!({"content": [{"type": "tool_use", "id": "toolu_w", "name": "get_weather", "input": {"city": "Oslo"}}],
                        "stop_reason": "tool_use"});
    let model = FakeModel::start(vec![]).expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[]);
    let api = Api::new(&server).with_turn_deadline(Duration::from_secs(10));
    let session = new_session(&api, toolset("always_allow")).await;
    let path = format!("/v1/sessions/{session}/events");
    let mut idles = 0;
    for round in 0..40 {
        model.set_script(vec![custom.clone()]).unwrap();
        api.send(&session, user_message("weather?")).await;
        idles += 1;
        let events = api.wait_idle(&session, idles).await;
        let call = events.iter().rev().find(|e| e["type"] == "agent.custom_tool_use").unwrap()["id"].clone();
        assert_eq!(events.last().unwrap()["stop_reason"]["event_ids"], json!([call]), "round {round}");
        // The user stops the session while the client answers the call.
        let interrupt = api.raw(reqwest::Method::POST, &path, Some(json!({"events": [{"type": "user.interrupt"}]})));
        let answer = api.raw(
            reqwest::Method::POST,
            &path,
            Some(json!({"events": [{"type": "user.custom_tool_result", "custom_tool_use_id": call,
                                    "content": [{"type": "text", "text": "-3 C"}]}]})),
        );
        let ((status, body), _) = tokio::join!(interrupt, answer);
        assert_eq!(status, 200, "{body}");
        // However the race goes, the session ends up idle again.
        idles += 1;
        api.wait_idle(&session, idles).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        let events = loop {
            let events = api.events(&session).await;
            let kinds = types(&events);
            if kinds.last().map(String::as_str) == Some("session.status_idle")
                && events.iter().filter(|e| e["type"] == "session.status_idle").count() == idles
            {
                break events;
            }
            // The answer may have started a turn the interrupt then ended: one more idle.
            if events.iter().filter(|e| e["type"] == "session.status_idle").count() > idles {
                idles = events.iter().filter(|e| e["type"] == "session.status_idle").count();
                continue;
            }
            assert!(Instant::now() < deadline, "{kinds:#?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let answers: Vec<&Value> = events
            .iter()
            .filter(|e| e["tool_use_id"] == call || e["custom_tool_use_id"] == call)
            .filter(|e| e["type"] != "user.tool_confirmation")
            .collect();
        assert!(answers.len() <= 1, "round {round}: call {call} answered {} times: {answers:#?}", answers.len());
    }
}

/// Defect (review-runner): a model request that is interrupted (or breaks)
/// after `message_start` is recorded with zero usage, though the provider
/// reported (and bills) its input tokens. step.rs `call_model` closes it with
/// `request_end(start_id, ModelUsage::default(), true)` (and `model_failed`
/// does the same), and `StreamEvent::MessageStart` does not carry the usage,
/// so `session.usage`, `list_cost` and the budget check miss every such
/// request: a session whose requests keep breaking mid-stream spends without
/// limit against a budget that sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_request_keeps_the_usage_the_provider_reported() {
    let model = FakeModel::start(vec![
        json!({"fault": "drip", "delay_ms": 300}),
        json!({"content": [{"type": "text", "text": "a long answer that is still streaming when the user stops it"}],
               "stop_reason": "end_turn", "usage": {"input_tokens": 1_000_000, "output_tokens": 10}}),
    ])
    .expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[]);
    let api = Api::new(&server).with_turn_deadline(Duration::from_secs(10));
    let session = new_session(&api, toolset("always_allow")).await;
    // The runner previews the answer's text as it streams: once its
    // `event_start` is out, the runner has read `message_start` (which comes
    // first on the provider's stream) and the text is far from complete.
    let stream = api
        .request(
            reqwest::Method::GET,
            &format!("/v1/sessions/{session}/events/stream?event_deltas%5B%5D=agent.message"),
        )
        .header("anthropic-beta", "managed-agents-2026-04-01")
        .send()
        .await
        .expect("stream opens");
    assert_eq!(stream.status(), 200);
    api.send(&session, user_message("tell me everything")).await;
    let mut chunks = stream.bytes_stream();
    let mut seen = Vec::new();
    let started = tokio::time::timeout(Duration::from_secs(10), async {
        use futures_util::StreamExt as _;
        while let Some(Ok(chunk)) = chunks.next().await {
            seen.extend_from_slice(&chunk);
            if String::from_utf8_lossy(&seen).contains("event_start") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(started, Ok(true), "no preview of the answer: {}", String::from_utf8_lossy(&seen));
    api.send(&session, json!([{"type": "user.interrupt"}])).await;
    let events = api.wait_idle(&session, 1).await;
    assert!(!types(&events).contains(&"agent.message".to_owned()), "{:#?}", types(&events));
    let usage = events.iter().rev().find(|e| e["type"] == "session.usage").unwrap();
    assert_eq!(usage["usage"]["input_tokens"], 1_000_000, "{usage}");
}

/// Defect (review-runner): a turn the model refuses ends as a plain
/// `end_turn`. The wire format (managed-agents-api.md, `session.status_idle`)
/// has `stop_reason: {type: "refusal"}` with `stop_details: {type:
/// "refusal", category?, explanation?}`, and `StopReason::Refusal` exists in
/// core, but nothing produces it: the machine ends every turn whose last
/// response has no tool calls with `Command::EndTurn`, whatever the
/// provider's `stop_reason` was (recorded in `x.model_request`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_turn_idles_with_the_refusal_stop_reason() {
    let model = FakeModel::start(vec![json!({
        "content": [{"type": "text", "text": "I can't help with that."}],
        "stop_reason": "refusal"
    })])
    .expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[]);
    let api = Api::new(&server).with_turn_deadline(Duration::from_secs(10));
    let session = new_session(&api, toolset("always_allow")).await;
    api.send(&session, user_message("something the model refuses")).await;
    let events = api.wait_idle(&session, 1).await;
    let idle = events.last().unwrap();
    assert_eq!(idle["stop_reason"]["type"], "refusal", "{idle}");
}

/// Defect (review-runner): a response with more content blocks than one
/// append may hold wedges the session in `running`. The stream accepts up
/// to `MAX_CONTENT_BLOCKS` (4,096) blocks, but step.rs `call_model` appends
/// the response's events (one per block, plus `x.model_response`, the end
/// and `x.model_request`) in one append, which the store refuses past
/// `MAX_EVENTS_PER_APPEND` (1,024). The error ends the task ("runner step
/// failed; the session waits for new input"): no `session.error`, no idle,
/// the request left open; every later wake closes it and makes the same
/// call again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_with_many_blocks_does_not_wedge_the_session() {
    let blocks: Vec<Value> = (0..1_100).map(|n| json!({"type": "text", "text": format!("part {n}")})).collect();
    let model = FakeModel::start(vec![json!({"content": blocks, "stop_reason": "end_turn"})]).expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[]);
    let api = Api::new(&server).with_turn_deadline(Duration::from_secs(15));
    let session = new_session(&api, toolset("always_allow")).await;
    api.send(&session, user_message("list everything, one block each")).await;
    // Whatever the runner makes of it, the turn ends.
    let events = api.wait_idle(&session, 1).await;
    assert_eq!(events.iter().filter(|e| e["type"] == "session.status_idle").count(), 1);
}

/// Goal: as `a_message_queued_when_the_budget_runs_out_does_not_restart_turns`,
/// with no timing involved: a message accepted after the turn that crossed
/// the budget ended normally starts one turn, which pauses, and no other.
/// Method: the first turn's single request costs $3 against a $1 budget and
/// ends `end_turn`; a second message follows; once the runner is quiet after its
/// `budget_reached` idle the log holds two turns, and `logbook rerun`
/// reproduces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_after_a_turn_that_crossed_the_budget_does_not_restart_turns() {
    let model = FakeModel::start(vec![json!({
        "content": [{"type": "text", "text": "An expensive answer."}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 1_000_000, "output_tokens": 10}
    })])
    .expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[]);
    let api = Api::new(&server).with_turn_deadline(Duration::from_secs(10));
    let budget = json!({"type": "limit", "max_list_cost": {"amount": "100", "currency": "USD"}});
    let session = api
        .session_with_fields(
            json!({"name": "b", "tools": toolset("always_allow")}),
            json!({"name": "b"}),
            json!({"budget": budget}),
        )
        .await;
    api.send(&session, user_message("first")).await;
    let events = api.wait_idle(&session, 1).await;
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn");
    api.send(&session, user_message("second")).await;
    let events = api.wait_idle(&session, 2).await;
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "budget_reached");
    api.wait_runner_quiet().await;
    let events = api.events(&session).await;
    let running = types(&events).iter().filter(|t| *t == "session.status_running").count();
    assert_eq!(running, 2, "paused at the budget, the session must stay idle: {} events", events.len());
    rerun_check(server, &dir.path().join("data"));
}

/// Defect (review-runner): an interrupt's wake-up outlives the interrupt.
/// `RunnerHandle::wake` calls `Notify::notify_one`, which stores a permit
/// when the task is not waiting in one of its `select!`s (it is appending,
/// say). The interrupt itself is applied from the log, but the permit stays;
/// when the same task goes on (the documented "interrupt, then a message in
/// the same request starts the next turn"), the next turn's first model call
/// is cut at once: a `span.model_request_end` with `is_error` and no
/// `session.error`, an attempt spent on nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applied_interrupt_does_not_cut_the_next_turns_model_call() {
    let round = |n: usize| {
        json!({"content": [{"type": "tool_use", "id": format!("toolu_{n}"), "name": "bash", "input": {"command": "ls"}}],
               "stop_reason": "tool_use"})
    };
    let model = FakeModel::start(vec![]).expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[]);
    let api = Api::new(&server).with_turn_deadline(Duration::from_secs(20));
    let session = new_session(&api, toolset("always_allow")).await;
    let mut idles = 0;
    for attempt in 0..6 {
        // A turn of quick tool rounds: the runner spends most of it appending.
        model.set_script((0..40).map(round).collect()).unwrap();
        api.send(&session, user_message("work")).await;
        let seen = api.events(&session).await.len();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let events = api.events(&session).await;
            if events[seen.min(events.len())..].iter().filter(|e| e["type"] == "agent.tool_result").count() >= 3 {
                break;
            }
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let before = api.events(&session).await.len();
        api.send(
            &session,
            json!([{"type": "user.interrupt"},
                                  {"type": "user.message", "content": [{"type": "text", "text": "now this"}]}]),
        )
        .await;
        // The interrupted turn's idle, then the next turn's.
        model
            .set_script(vec![json!({"content": [{"type": "text", "text": "done"}], "stop_reason": "end_turn"})])
            .unwrap();
        idles += 2;
        let events = api.wait_idle(&session, idles).await;
        let interrupted = events[before..].iter().position(|e| e["type"] == "session.status_idle").unwrap() + before;
        let next_turn = &events[interrupted + 1..];
        let spurious = next_turn.iter().enumerate().any(|(idx, e)| {
            e["type"] == "span.model_request_end"
                && e["is_error"] == true
                && next_turn.get(idx + 1).is_none_or(|n| n["type"] != "session.error")
        });
        assert!(!spurious, "attempt {attempt}: the next turn's model call was cut: {:#?}", types(next_turn));
    }
}

/// Goal: the budget is checked on the exact unrounded cost (behaviour
/// digest §12), not on `list_cost` rounded up to a cent: a session that has
/// spent $0.99 and a fraction of a cent of a $1.00 budget is not paused.
/// Method: the first request costs $0.99 (330,000 input tokens on Sonnet)
/// and calls a tool; with the runtime the cost reported is $1.00, yet the
/// next request is made and the turn ends `end_turn`; `logbook rerun`
/// reproduces it. Compaction is off: the 330,000-token context would
/// otherwise be summarized first, in a request of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_is_checked_on_the_unrounded_cost() {
    let model = FakeModel::start(vec![
        // 330,000 input tokens on Sonnet: $0.99, plus a second or so of runtime.
        json!({"content": [{"type": "tool_use", "id": "toolu_b", "name": "bash", "input": {"command": "ls"}}],
               "stop_reason": "tool_use", "usage": {"input_tokens": 330_000, "output_tokens": 1}}),
        json!({"content": [{"type": "text", "text": "done"}], "stop_reason": "end_turn",
               "usage": {"input_tokens": 10, "output_tokens": 1}}),
    ])
    .expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[("LOGBOOK_COMPACTION_PERCENT", "0")]);
    let api = Api::new(&server).with_turn_deadline(Duration::from_secs(10));
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
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn", "{:#?}", types(&events));
    assert_eq!(model.requests().len(), 2);
    rerun_check(server, &dir.path().join("data"));
}

/// Defect (review-model): the `session.usage` that closes a turn whose last
/// request failed for good leaves that request out. `model_failed` (step.rs)
/// puts the request's `span.model_request_end` (with the usage the provider
/// reported before failing: a request cut short is billed too) in the same
/// append as the `session.usage` and the idle, but `idle_at` computes the
/// snapshot from the projection *before* that append; the session object's
/// usage (`set_usage`) is the same stale total. The last attempt of every
/// exhausted retry loop is lost the same way.
/// Method: a stream that reports its input tokens in `message_start` and
/// then fails with a final error event; the usage before the idle must count
/// what the request's end records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_usage_before_a_failed_turns_idle_counts_the_failed_request() {
    let model = FakeModel::start(vec![
        json!({"fault": "error_event", "after_events": 2, "error_type": "invalid_request_error", "message": "bad"}),
        json!({"content": [{"type": "text", "text": "never finished"}], "stop_reason": "end_turn",
               "usage": {"input_tokens": 1_000_000, "output_tokens": 10}}),
    ])
    .expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[]);
    let api = Api::new(&server);
    let session = new_session(&api, toolset("always_allow")).await;
    api.send(&session, user_message("hi")).await;
    let events = api.wait_idle(&session, 1).await;
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "retries_exhausted", "{:#?}", types(&events));
    let end = events.iter().find(|e| e["type"] == "span.model_request_end").unwrap();
    assert_eq!(end["model_usage"]["input_tokens"], 1_000_000, "{end}");
    let usage = events.iter().rev().find(|e| e["type"] == "session.usage").unwrap();
    assert_eq!(usage["usage"]["input_tokens"], 1_000_000, "the failed request's usage is left out: {usage}");
    let session_obj = api.get(&format!("/v1/sessions/{session}")).await;
    assert_eq!(session_obj["usage"]["input_tokens"], 1_000_000, "{}", session_obj["usage"]);
}

/// Defect (review-model): a client's empty text block is accepted and then
/// sent to the model in every later request. `check_content` (api/events.rs)
/// accepts `{"type": "text", "text": ""}` (or whitespace only) in a
/// `user.message`, and the context passes it through, but the Messages API
/// refuses any request holding one with a final 400 ("messages: text content
/// blocks must be non-empty" / "must contain non-whitespace text"): the turn
/// ends `retries_exhausted`, and so does every later one, since the block
/// stays in the log the context is built from.
/// Method: a message with an empty and a whitespace-only text block beside a
/// real one; either the send is refused with a 400, or no model request
/// carries a blank text block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blank_text_block_from_the_client_never_reaches_the_model() {
    let model =
        FakeModel::start(vec![json!({"content": [{"type": "text", "text": "Hello."}], "stop_reason": "end_turn"})])
            .expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[]);
    let api = Api::new(&server);
    let session = new_session(&api, toolset("always_allow")).await;
    let (status, body) = api
        .raw(
            reqwest::Method::POST,
            &format!("/v1/sessions/{session}/events"),
            Some(json!({"events": [{"type": "user.message", "content": [
                {"type": "text", "text": ""}, {"type": "text", "text": "  \n"}, {"type": "text", "text": "hello"}]}]})),
        )
        .await;
    // Accepted (a real block is there); the blank ones are left out of the context.
    assert!(status < 300, "{status}: {body}");
    api.wait_idle(&session, 1).await;
    assert_eq!(model.requests().len(), 1);
    for request in model.requests() {
        let blank: Vec<&Value> = request.body["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|m| m["content"].as_array().into_iter().flatten())
            .filter(|b| b["type"] == "text" && b["text"].as_str().is_some_and(|t| t.trim().is_empty()))
            .collect();
        assert!(blank.is_empty(), "the model is sent blank text blocks, which it refuses: {blank:?}");
    }
}

/// Defect (review): a call of a tool the agent does not have (a name the
/// model made up) is `agent.tool_use` with `evaluated_permission: allow` and
/// `evaluation: always_allow` whenever the agent has the built-in toolset:
/// `permission_for` (runner/step.rs) falls back to the toolset's
/// `default_config` for any name, not only the eight built-in tools. The
/// behaviour digest §8.2: "A call to a tool not enabled in the session is
/// denied with no `evaluation`". Under `always_ask` the user is asked to
/// confirm a tool that does not exist; on a self-hosted environment the call
/// is handed to the worker. Method: the model calls `delete_everything`
/// (no such tool) for an agent with the toolset (always_allow) and a custom
/// tool; the call must be denied, without an evaluation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_of_a_tool_the_agent_does_not_have_is_denied() {
    let model = FakeModel::start(vec![
        json!({"content": [{"type": "tool_use", "id": "toolu_x", "name": "delete_everything", "input": {}}],
               "stop_reason": "tool_use"}),
        json!({"content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn"}),
    ])
    .expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[]);
    let api = Api::new(&server);
    let session = new_session(&api, toolset("always_allow")).await;
    api.send(&session, user_message("go")).await;
    let events = api.wait_idle(&session, 1).await;
    let tool_use = events.iter().find(|e| e["type"] == "agent.tool_use").unwrap();
    assert_eq!(tool_use["evaluated_permission"], "deny", "{tool_use}");
    assert!(tool_use.get("evaluation").is_none_or(Value::is_null), "{tool_use}");
    let result = events.iter().find(|e| e["type"] == "agent.tool_result").unwrap();
    let text = result["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("not one of the agent's tools"), "{text}");
}

/// Goal: the model is told who denied a call: a user's denial without a
/// message reads as the user's, not as the permission policy's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_denial_without_a_message_is_told_as_the_users() {
    let model = FakeModel::start(vec![
        json!({"content": [{"type": "tool_use", "id": "toolu_a", "name": "bash", "input": {"command": "ls"}}],
               "stop_reason": "tool_use"}),
        json!({"content": [{"type": "text", "text": "Understood."}], "stop_reason": "end_turn"}),
    ])
    .expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[]);
    let api = Api::new(&server);
    let session = new_session(&api, toolset("always_ask")).await;
    api.send(&session, user_message("look")).await;
    let events = api.wait_idle(&session, 1).await;
    let tool_use = events.iter().find(|e| e["type"] == "agent.tool_use").unwrap();
    api.send(&session, json!([{"type": "user.tool_confirmation", "tool_use_id": tool_use["id"], "result": "deny"}]))
        .await;
    let events = api.wait_idle(&session, 2).await;
    let result = events.iter().find(|e| e["type"] == "agent.tool_result").unwrap();
    assert_eq!(result["content"][0]["text"], "The user denied this tool call.");
    rerun_check(server, &dir.path().join("data"));
}

/// Defect (review-model): a context that outgrows the model's window is
/// never compacted once the token estimate is wrong. Compaction is only ever
/// triggered by the machine's estimate (`Command::Compact` when
/// `context_tokens >= trigger_tokens`); when the provider itself refuses the
/// request with `400 invalid_request_error: prompt is too long: N tokens >
/// M maximum` (the estimate undercounted: code, non-English text, images),
/// the error is `InvalidRequest`, not retryable, and the turn dies
/// `retries_exhausted`. Nothing changes the context, so every later turn
/// sends a longer prompt and dies the same way: the session is wedged for
/// good, although the harness is to compact "when it approaches the context
/// window" (behaviour digest §5).
/// Method: a first turn answered; the second turn's request is refused as
/// too long; the runner must compact and answer the turn (the fake answers
/// the summarizing call itself), not end it `retries_exhausted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_the_provider_finds_too_long_is_compacted_not_the_end_of_the_session() {
    // Both ways the Messages API refuses a request over the window: the
    // prompt alone, or (since Claude 3.7, and what a growing session with a
    // large max_tokens meets first) the prompt plus max_tokens (review of
    // 46340df: only the first was compacted, the second wedged the session).
    for message in [
        "prompt is too long: 212345 tokens > 200000 maximum",
        "input length and `max_tokens` exceed context limit: 190012 + 32000 > 200000, decrease input length or \
         `max_tokens` and try again",
    ] {
        let refusal = json!({"fault": "status", "status": 400, "message": message});
        let (events, server, dir) = second_turn_after_refusal(refusal).await;
        assert!(
            types(&events).contains(&"agent.thread_context_compacted".to_owned()),
            "a prompt over the window ({message}) was not compacted: {:#?}",
            events
                .iter()
                .filter(|e| e["type"] == "session.error" || e["type"] == "session.status_idle")
                .collect::<Vec<_>>()
        );
        assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn", "{:#?}", types(&events));
        rerun_check(server, &dir.path().join("data"));
    }
}

/// A session whose first turn is answered and whose second turn's first
/// request gets `refusal` (then an answer): the events after the second
/// idle, the server and its directory.
async fn second_turn_after_refusal(refusal: Value) -> (Vec<Value>, Server, tempfile::TempDir) {
    let model = FakeModel::start(vec![
        json!({"content": [{"type": "text", "text": "First answer."}], "stop_reason": "end_turn"}),
        refusal,
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
    (events, server, dir)
}

/// Goal: a prompt still too long after the compaction it caused ends the
/// turn instead of retrying for ever: one compaction, one retry, then
/// `retries_exhausted`; the next turn may compact again.
/// Method: the second turn's request and its retry are both refused as too
/// long; `logbook rerun` reproduces the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_still_too_long_after_compacting_ends_the_turn() {
    let too_long =
        json!({"fault": "status", "status": 400, "message": "prompt is too long: 212345 tokens > 200000 maximum"});
    let model = FakeModel::start(vec![
        json!({"content": [{"type": "text", "text": "First answer."}], "stop_reason": "end_turn"}),
        too_long.clone(),
        too_long.clone(),
        too_long,
        json!({"content": [{"type": "text", "text": "Third answer."}], "stop_reason": "end_turn"}),
    ])
    .expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[]);
    let api = Api::new(&server);
    let session = new_session(&api, toolset("always_allow")).await;
    api.send(&session, user_message("first")).await;
    api.wait_idle(&session, 1).await;
    api.send(&session, user_message("second")).await;
    let events = api.wait_idle(&session, 2).await;
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "retries_exhausted", "{:#?}", types(&events));
    let kinds = types(&events);
    assert_eq!(kinds.iter().filter(|t| *t == "agent.thread_context_compacted").count(), 1, "{kinds:#?}");
    let failed = events.iter().filter(|e| e["type"] == "span.model_request_end" && e["is_error"] == true).count();
    assert_eq!(failed, 2, "{kinds:#?}");
    // The next turn may compact again (the context grew since).
    api.send(&session, user_message("third")).await;
    let events = api.wait_idle(&session, 3).await;
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn", "{:#?}", types(&events));
    let kinds = types(&events);
    assert_eq!(kinds.iter().filter(|t| *t == "agent.thread_context_compacted").count(), 2, "{kinds:#?}");
    rerun_check(server, &dir.path().join("data"));
}

/// Goal: a tool call whose input `max_tokens` cut off is a complete response,
/// not a broken stream: the model is not called again with the same request,
/// the call is not run (its input is not the one the model meant) but
/// answered with an error result that says why, and the turn goes on.
/// Method: a response that stops with `max_tokens` in the middle of a write's
/// input; then a text answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_call_cut_by_max_tokens_is_answered_with_an_error_and_the_turn_goes_on() {
    let model = FakeModel::start(vec![
        json!({"content": [{"type": "text", "text": "Writing the file."},
                           {"type": "tool_use", "id": "toolu_cut", "name": "write",
                            "partial_input": "{\"file_path\": \"a.txt\", \"content\": \"lorem ipsum do"}],
               "stop_reason": "max_tokens"}),
        json!({"content": [{"type": "text", "text": "I will write it in parts."}], "stop_reason": "end_turn"}),
    ])
    .expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[]);
    let api = Api::new(&server);
    let session = new_session(&api, toolset("always_allow")).await;
    api.send(&session, user_message("write a.txt")).await;
    let events = api.wait_idle(&session, 1).await;
    assert_eq!(
        types(&events),
        [
            "user.message",
            "session.status_running",
            "session.thread_status_running",
            "span.model_request_start",
            "agent.message",
            "agent.tool_use",
            "span.model_request_end",
            "agent.tool_result",
            "span.model_request_start",
            "agent.message",
            "span.model_request_end",
            "session.usage",
            "session.status_idle",
        ],
        "{events:#?}"
    );
    let call = events.iter().find(|e| e["type"] == "agent.tool_use").unwrap();
    assert_eq!(call["input"], json!({}));
    let result = events.iter().find(|e| e["type"] == "agent.tool_result").unwrap();
    assert_eq!(result["tool_use_id"], call["id"]);
    assert_eq!(result["is_error"], true);
    assert!(result["content"][0]["text"].as_str().unwrap().contains("max_tokens"), "{result}");
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn");
    // The model saw the cut call (input `{}`) and its error result.
    let requests = model.requests();
    assert_eq!(requests.len(), 2, "the cut response was not retried");
    let messages = requests[1].body["messages"].as_array().unwrap();
    let assistant = &messages[messages.len() - 2]["content"];
    let tool_use = assistant.as_array().unwrap().iter().find(|b| b["type"] == "tool_use").unwrap();
    assert_eq!((&tool_use["id"], &tool_use["input"]), (&json!("toolu_cut"), &json!({})));
    let answer = &messages[messages.len() - 1]["content"][0];
    assert_eq!((&answer["tool_use_id"], &answer["is_error"]), (&json!("toolu_cut"), &json!(true)));
    rerun_check(server, &dir.path().join("data"));
}

/// Goal: a billing error (HTTP 402) is final: not retried, reported as the
/// `session.error` type `billing_error` (behaviour digest §3.7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_billing_error_ends_the_turn_at_once_as_billing_error() {
    let model = FakeModel::start(vec![
        json!({"fault": "status", "status": 402, "message": "credit balance too low"}),
        json!({"content": [{"type": "text", "text": "Not to be reached."}], "stop_reason": "end_turn"}),
    ])
    .expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[]);
    let api = Api::new(&server);
    let session = new_session(&api, toolset("always_allow")).await;
    api.send(&session, user_message("hi")).await;
    let events = api.wait_idle(&session, 1).await;
    let errors: Vec<&Value> = events.iter().filter(|e| e["type"] == "session.error").collect();
    assert_eq!(errors.len(), 1, "{:#?}", types(&events));
    assert_eq!(errors[0]["error"]["type"], "billing_error");
    assert_eq!(errors[0]["error"]["retry_status"]["type"], "exhausted");
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "retries_exhausted");
    assert_eq!(model.requests().len(), 1, "a billing error is not retried");
    rerun_check(server, &dir.path().join("data"));
}

/// Defect (review): with the provider's server tools
/// (`LOGBOOK_WEB_TOOLS=server`), a web tool whose policy is `auto` is sent
/// as a server tool, which the provider runs without asking anyone, even
/// when the operator's `LOGBOOK_AUTO_ALLOW` leaves it out (so `auto` must
/// ask for it, as `permission_for` decides for a client call). Only
/// `always_ask` is sent as a client tool (`builtin_definitions`,
/// model/request.rs), and `provider_tool_use_event` then records the call as
/// allowed. Behaviour digest §8.2: `auto` pauses like `always_ask` when it
/// does not allow. Method: `LOGBOOK_AUTO_ALLOW=read`, web_fetch under `auto`;
/// the request must offer web_fetch as a client tool (name, input_schema),
/// not as `web_fetch_20250910`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_web_tool_the_operator_does_not_allow_is_not_a_provider_server_tool() {
    let model = FakeModel::start(vec![json!({"content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn"})])
        .expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &model,
        &[("LOGBOOK_AUTO_ALLOW", "read"), ("LOGBOOK_WEB_TOOLS", "server")],
    );
    let api = Api::new(&server);
    let tools = json!([{"type": "agent_toolset_20260401", "default_config": {"enabled": false},
        "configs": [{"name": "web_fetch", "enabled": true, "permission_policy": {"type": "auto"}}]}]);
    let session = new_session(&api, tools).await;
    api.send(&session, user_message("fetch it")).await;
    api.wait_idle(&session, 1).await;
    let requests = model.requests();
    let web_fetch =
        requests[0].body["tools"].as_array().unwrap().iter().find(|tool| tool["name"] == "web_fetch").cloned().unwrap();
    assert!(
        web_fetch.get("input_schema").is_some() && web_fetch.get("type").is_none(),
        "web_fetch under auto, which must ask for it here, is the provider's server tool: {web_fetch}"
    );
}

/// Waits (with a deadline) until `/metrics` says `count` sessions wait for a work slot.
async fn wait_waiting(api: &Api, count: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.metric("logbook_runner_sessions_waiting").await != count {
        assert!(Instant::now() < deadline, "never {count} sessions waiting for a work slot");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Goal: a workspace's sessions call the model (and run tools) at most
/// `LOGBOOK_MAX_WORKING_SESSIONS` at a time, so one tenant's many sessions
/// cannot take every sandbox and model connection; a session over the cap
/// shows `running` and waits its turn, and an interrupt still reaches it.
/// Method: a cap of 1. Session A's model call hangs. Session B, sent a
/// message, is running and waiting for the slot (`/metrics`) without a
/// model request; interrupted, it idles without one. Sent another message,
/// it waits again, and gets the slot (and its answer) once A is interrupted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_works_on_at_most_its_cap_of_sessions_at_once() {
    let model = FakeModel::start(vec![
        json!({"fault": "hang"}),
        json!({"content": [{"type": "text", "text": "B's answer"}], "stop_reason": "end_turn"}),
    ])
    .expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[("LOGBOOK_MAX_WORKING_SESSIONS", "1")]);
    let api = Api::new(&server);
    let a = new_session(&api, toolset("always_allow")).await;
    let b = new_session(&api, toolset("always_allow")).await;
    api.send(&a, user_message("hang on")).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while model.requests().is_empty() {
        assert!(Instant::now() < deadline, "A's model call never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    api.send(&b, user_message("first")).await;
    wait_waiting(&api, 1.0).await;
    let waiting = types(&api.events(&b).await);
    assert!(waiting.contains(&"session.status_running".to_owned()), "{waiting:?}");
    assert!(!waiting.contains(&"span.model_request_start".to_owned()), "{waiting:?}");
    api.send(&b, json!([{"type": "user.interrupt"}])).await;
    let events = api.wait_idle(&b, 1).await;
    assert!(!types(&events).contains(&"span.model_request_start".to_owned()), "{:?}", types(&events));
    wait_waiting(&api, 0.0).await;
    assert_eq!(model.requests().len(), 1, "only A's call was made");

    api.send(&b, user_message("second")).await;
    wait_waiting(&api, 1.0).await;
    assert_eq!(model.requests().len(), 1, "B waits for A's slot");
    api.send(&a, json!([{"type": "user.interrupt"}])).await;
    api.wait_idle(&a, 1).await;
    let events = api.wait_idle(&b, 2).await;
    let answer = events.iter().rev().find(|e| e["type"] == "agent.message").expect("B is answered");
    assert_eq!(answer["content"][0]["text"], "B's answer");
    assert_eq!(model.requests().len(), 2);
    assert_eq!(api.metric("logbook_runner_sessions_waiting").await, 0.0);
    rerun_check(server, &dir.path().join("data"));
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

/// Regression (found by review): a compaction interrupted while its summarizing
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

/// Regression (found by review): a summarizing call the provider refuses
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

/// Regression (found by review): a request the provider refuses as larger than
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
    let refusal =
        json!({"fault": "status", "status": 413, "message": "Request exceeds the maximum allowed number of bytes."});
    let (events, server, dir) = second_turn_after_refusal(refusal).await;
    let errors: Vec<&Value> = events.iter().filter(|e| e["type"] == "session.error").collect();
    assert_eq!(
        events.last().unwrap()["stop_reason"]["type"],
        "end_turn",
        "a request too large for the provider ended the turn: {errors:#?}"
    );
    assert!(types(&events).contains(&"agent.thread_context_compacted".to_owned()), "{:#?}", types(&events));
    rerun_check(server, &dir.path().join("data"));
}

/// Regression (found by review): the password of a model endpoint's URL reaches
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

/// A PNG header of `width` x `height` pixels (all the Messages API and the
/// server read of it), base64.
fn png_base64(width: u32, height: u32) -> String {
    use base64::Engine as _;
    let mut png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
    png.extend_from_slice(&width.to_be_bytes());
    png.extend_from_slice(&height.to_be_bytes());
    png.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
    base64::engine::general_purpose::STANDARD.encode(png)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_past_twenty_images_drops_its_oldest_large_one_instead_of_wedging() {
    // The Messages API refuses a request of more than 20 images if one is
    // over 2,000 pixels on a side (the fake does too), and the log sends
    // every image again: without the fit, no request could ever succeed.
    let model = FakeModel::start(vec![
        json!({"content": [{"type": "text", "text": "Seen."}], "stop_reason": "end_turn"}),
        json!({"content": [{"type": "text", "text": "Seen again."}], "stop_reason": "end_turn"}),
    ])
    .expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[]);
    let api = Api::new(&server);
    let session = new_session(&api, toolset("always_allow")).await;
    let image = |side: u32| json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png_base64(side, 10)}});
    let mut content = vec![image(2_500)];
    content.extend((0..20).map(|_| image(1_000)));
    content.push(json!({"type": "text", "text": "what are these?"}));
    api.send(&session, json!([{"type": "user.message", "content": content}])).await;
    let events = api.wait_idle(&session, 1).await;
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn", "{:#?}", types(&events));
    api.send(&session, user_message("and now?")).await;
    let events = api.wait_idle(&session, 2).await;
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn", "{:#?}", types(&events));
    let requests = model.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        let first = &request.body["messages"][0]["content"][0];
        assert_eq!(first["type"], "text", "{first}");
        assert!(first["text"].as_str().unwrap().contains("2500 x 10 pixels"), "{first}");
        assert_eq!(logbook_tests::fake_model::script::images(&request.body).len(), 20);
    }
    // The log keeps the image as the client sent it.
    let events = api.events(&session).await;
    assert_eq!(events[0]["content"][0]["type"], "image");
    rerun_check(server, &dir.path().join("data"));
}

/// Defect: a document the user sends by `file_id` (Files API) is estimated
/// by the JSON of its source (`{"type":"file","file_id":...}`, about 25
/// tokens, `tokens::block`), not by the file the request inlines, so the
/// compaction planner (`plan_compaction`, keeping `keep_tokens` by the
/// estimate) sees documents of thousands of tokens as nearly free. When the
/// context crosses the trigger because of them, the plan finds that
/// everything "fits" in what is to be kept and cuts at the first cut point:
/// it summarizes the first message only, and the request after the
/// compaction carries every document again (over the trigger again, or
/// refused as too long: every later call pays a summarizing call that cuts
/// one more message).
/// Method: a 3,000-token window compacted at 60 % keeping 15 % (450
/// tokens); "hello", then two 3,000-character documents by file id; the
/// provider reports the usage those requests had; the fourth turn crosses
/// the trigger. The request after the compaction cannot keep either
/// document (each about 1,000 tokens, more than the 450 to keep).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_does_not_keep_documents_sent_by_file_id_as_if_they_were_free() {
    let answer = |text: &str, input: u64| {
        json!({"content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
               "usage": {"input_tokens": input, "output_tokens": 5}})
    };
    let model = FakeModel::start(vec![
        answer("Hi.", 100),
        answer("Read A.", 1_200),
        answer("Read B.", 2_300),
        answer("Done.", 600),
    ])
    .expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &model,
        &[
            ("LOGBOOK_CONTEXT_WINDOW", "3000"),
            ("LOGBOOK_COMPACTION_PERCENT", "60"),
            ("LOGBOOK_COMPACTION_KEEP_PERCENT", "15"),
        ],
    );
    let api = Api::new(&server);
    let doc = |marker: &str| format!("{marker}\n{}", "lorem ipsum dolor sit amet ".repeat(110));
    let file_a = api.upload("a.txt", doc("DOCUMENT-ALPHA").as_bytes()).await;
    let file_b = api.upload("b.txt", doc("DOCUMENT-BRAVO").as_bytes()).await;
    let session = new_session(&api, toolset("always_allow")).await;
    api.send(&session, user_message("hello")).await;
    api.wait_idle(&session, 1).await;
    for (n, file) in [(2, &file_a), (3, &file_b)] {
        api.send(
            &session,
            json!([{"type": "user.message", "content": [
                {"type": "text", "text": "read this"},
                {"type": "document", "source": {"type": "file", "file_id": file}}]}]),
        )
        .await;
        let events = api.wait_idle(&session, n).await;
        assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn", "{:#?}", types(&events));
    }
    api.send(&session, user_message("what now?")).await;
    let events = api.wait_idle(&session, 4).await;
    assert!(types(&events).contains(&"agent.thread_context_compacted".to_owned()), "{:#?}", types(&events));
    let requests: Vec<Value> =
        model.requests().into_iter().map(|r| r.body).filter(|body| !is_summary_request(body)).collect();
    assert_eq!(requests.len(), 4, "one request per turn");
    let after = requests[3]["messages"].to_string();
    let kept: Vec<&str> = ["DOCUMENT-ALPHA", "DOCUMENT-BRAVO"].into_iter().filter(|m| after.contains(m)).collect();
    let summarized: Vec<Value> = model
        .requests()
        .into_iter()
        .map(|r| r.body)
        .filter(is_summary_request)
        .map(|b| b["messages"].clone())
        .collect();
    assert!(
        kept.is_empty(),
        "the compaction (keeping 450 tokens) kept {kept:?}, about 1,000 tokens each: the request after it \
         is as large as before; it summarized only {summarized}",
        summarized = Value::Array(summarized)
    );
}

/// Defect: a request the provider refuses as larger than its 32 MB limit
/// (413 `request_too_large`) is compacted and retried, but the compaction
/// plans in tokens only: it keeps the newest `keep_tokens` (40,000 by
/// default) of estimated tokens, and an image counts a flat 1,600 tokens
/// (`tokens::IMAGE_TOKENS`) however many bytes it is. Some 25 screenshots fit
/// in what is kept, over 32 MB of them when each is above 1.3 MB, so the
/// retry carries the same images, is refused again, and the turn ends
/// `retries_exhausted`; every later turn keeps them too (each adds a few
/// tokens), so the session stays wedged, which the compaction on 413 was to
/// end.
/// Method: "hello", then three turns of seven 1280x800 screenshots (1.6 MB of
/// base64 each, 33.6 MB together); the third turn's request is refused with
/// the provider's 413. The retried request must be under the 32 MB limit it
/// was refused for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_refused_as_too_large_is_retried_under_the_providers_byte_limit() {
    use base64::Engine as _;
    const LIMIT: usize = 32 * 1000 * 1000;
    let answer = |text: &str, input: u64| {
        json!({"content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
               "usage": {"input_tokens": input, "output_tokens": 5}})
    };
    let model = FakeModel::start(vec![
        answer("Hi.", 50),
        answer("Seen 1.", 10_000),
        answer("Seen 2.", 20_000),
        json!({"fault": "status", "status": 413, "message": "Request exceeds the maximum allowed number of bytes."}),
        answer("Seen 3.", 30_000),
    ])
    .expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[]);
    let api = Api::new(&server);
    let session = new_session(&api, toolset("always_allow")).await;
    api.send(&session, user_message("hello")).await;
    api.wait_idle(&session, 1).await;
    // A 1280x800 PNG header, then 1.2 MB of pixel data: 1.6 MB of base64.
    let mut png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
    png.extend_from_slice(&1280u32.to_be_bytes());
    png.extend_from_slice(&800u32.to_be_bytes());
    png.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
    png.resize(1_200_000, 0x5a);
    let data = base64::engine::general_purpose::STANDARD.encode(&png);
    let screenshot = json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}});
    // The events list pages at 1 MiB, so the turns are followed through the
    // fake's requests (their count: turns 2 to 4, and turn 4's retry) and the
    // session's status.
    for (n, requests) in [(2, 2), (3, 3), (4, 5)] {
        let mut content = vec![screenshot.clone(); 7];
        content.push(json!({"type": "text", "text": format!("screenshots, batch {n}")}));
        api.send(&session, json!([{"type": "user.message", "content": content}])).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let main = model.requests().iter().filter(|r| !is_summary_request(&r.body)).count();
            let status = api.get(&format!("/v1/sessions/{session}")).await["status"].clone();
            if main >= requests && status == "idle" {
                break;
            }
            assert!(Instant::now() < deadline, "turn {n}: {main} requests, status {status}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(model.requests().iter().any(|r| is_summary_request(&r.body)), "no compaction after the 413");
    let sizes: Vec<usize> = model
        .requests()
        .into_iter()
        .filter(|r| !is_summary_request(&r.body))
        .map(|r| serde_json::to_vec(&r.body).unwrap().len())
        .collect();
    assert_eq!(sizes.len(), 5, "four turns' requests and the retry: {sizes:?}");
    assert!(sizes[3] > LIMIT, "the refused request is over the limit: {sizes:?}");
    assert!(
        sizes[4] <= LIMIT,
        "the request refused as over 32 MB was retried after compacting with {} bytes, the same \
         images: it is refused again (request sizes {sizes:?})",
        sizes[4]
    );
}

/// Goal: a session whose tools are removed by an update after a tool-using
/// turn can still call the model. The Messages API refuses every request that
/// holds `tool_use` or `tool_result` blocks without defining tools (400
/// "Requests which include tool_use or tool_result blocks must define
/// tools."), so such a request would end every later turn in
/// `retries_exhausted`.
/// Method: a turn with a bash call, an update setting the agent's tools to
/// `[]` (allowed while idle), another message; every recorded request that
/// holds tool blocks must define tools.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_tools_were_removed_still_sends_requests_the_api_accepts() {
    let model = FakeModel::start(vec![
        json!({"content": [{"type": "tool_use", "id": "toolu_rm", "name": "bash", "input": {"command": "ls"}}],
               "stop_reason": "tool_use"}),
        json!({"content": [{"type": "text", "text": "Listed."}], "stop_reason": "end_turn"}),
        json!({"content": [{"type": "text", "text": "Hello again."}], "stop_reason": "end_turn"}),
    ])
    .expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[]);
    let api = Api::new(&server);
    let session = new_session(&api, toolset("always_allow")).await;
    api.send(&session, user_message("what is here?")).await;
    let events = api.wait_idle(&session, 1).await;
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn", "{:#?}", types(&events));
    assert!(types(&events).contains(&"agent.tool_result".to_owned()));
    let (status, body) =
        api.raw(reqwest::Method::POST, &format!("/v1/sessions/{session}"), Some(json!({"agent": {"tools": []}}))).await;
    assert_eq!(status, 200, "{body}");
    api.send(&session, user_message("and now?")).await;
    let events = api.wait_idle(&session, 2).await;
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn", "{:#?}", types(&events));
    let requests = model.requests();
    assert_eq!(requests.len(), 3);
    // The removed tools are defined only so the history stays valid: the
    // model may call none of them.
    assert_eq!(requests[2].body["tool_choice"], json!({"type": "none"}), "{:#}", requests[2].body);
    assert_eq!(requests[2].body["tools"][0]["name"], "bash", "{:#}", requests[2].body);
    for (n, request) in requests.iter().enumerate() {
        let holds_tool_blocks = request.body["messages"].as_array().unwrap().iter().any(|message| {
            message["content"].as_array().is_some_and(|blocks| {
                blocks.iter().any(|block| block["type"] == "tool_use" || block["type"] == "tool_result")
            })
        });
        let defines_tools = request.body["tools"].as_array().is_some_and(|tools| !tools.is_empty());
        assert!(
            !holds_tool_blocks || defines_tools,
            "request {n} holds tool_use/tool_result blocks but defines no tools (the API refuses it): {:#}",
            request.body
        );
    }
}

/// Goal: a response the provider stopped with `model_context_window_exceeded`
/// (Messages API stop reasons: "the response filled the model's context
/// window; treat the response as truncated") is a truncated response, like
/// one stopped by `max_tokens`: the call whose input it cut off is answered
/// with an error result and the turn goes on. It is not a broken stream to
/// retry: the same request fills the same window again, and every retry is
/// billed.
/// Method: a response whose last `tool_use` input breaks off, stopped with
/// `model_context_window_exceeded`; the call must be recorded and answered,
/// and the model must not be asked the same request again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_call_cut_by_the_context_window_is_answered_not_retried_as_a_broken_stream() {
    let model = FakeModel::start(vec![
        json!({"content": [{"type": "text", "text": "Writing the file."},
                           {"type": "tool_use", "id": "toolu_win", "name": "write",
                            "partial_input": "{\"file_path\": \"a.txt\", \"content\": \"lorem ipsum do"}],
               "stop_reason": "model_context_window_exceeded"}),
        json!({"content": [{"type": "text", "text": "Done."}], "stop_reason": "end_turn"}),
    ])
    .expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[]);
    let api = Api::new(&server);
    let session = new_session(&api, toolset("always_allow")).await;
    api.send(&session, user_message("write a.txt")).await;
    let events = api.wait_idle(&session, 1).await;
    let errors: Vec<&Value> = events.iter().filter(|e| e["type"] == "session.error").collect();
    assert!(errors.is_empty(), "the truncated response was taken for a failure: {errors:#?}");
    let call = events.iter().find(|e| e["type"] == "agent.tool_use");
    let call = call.unwrap_or_else(|| panic!("the truncated response's call was not recorded: {:#?}", types(&events)));
    let result = events.iter().find(|e| e["type"] == "agent.tool_result").unwrap();
    assert_eq!((&result["tool_use_id"], &result["is_error"]), (&call["id"], &json!(true)));
    let requests = model.requests();
    let messages = requests[1].body["messages"].as_array().unwrap();
    assert!(messages.iter().any(|m| m["content"].to_string().contains("toolu_win")), "{messages:#?}");
}

/// An agent's model pins reach every model request of its sessions
/// (behaviour digest §2): `model.inference_geo` as the request's
/// `inference_geo` (where inference may run), and `model.speed: "fast"` as
/// `speed: "fast"`. The agent API stores both; before they were never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_inference_geo_and_speed_pins_are_sent_with_its_requests() {
    for (model_config, field, expected) in [
        (json!({"id": "claude-sonnet-4-6", "inference_geo": "us"}), "inference_geo", "us"),
        (json!({"id": "claude-opus-4-6", "speed": "fast"}), "speed", "fast"),
    ] {
        let model = FakeModel::start(vec![json!({"content": [{"type": "text", "text": "hi"}]})]).expect("fake starts");
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(&dir.path().join("data"), &model, &[]);
        let api = Api::new(&server);
        let agent = json!({"name": "pinned", "model": model_config, "tools": []});
        let session = api.session_with(agent, json!({"name": "pinned"})).await;
        let object = api.get(&format!("/v1/sessions/{session}")).await;
        assert_eq!(object["agent"]["model"][field], expected, "the pin is stored: {}", object["agent"]);
        api.send(&session, user_message("hello")).await;
        api.wait_idle(&session, 1).await;
        let requests = model.requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].body[field], expected, "the request lacks its pin: {}", requests[0].body);
    }
}

/// A session waiting out a model error's `retry-after` (rescheduled, no
/// request open) gives its workspace's work slot back for the wait
/// (`runner::step::Task::model_failed`): with `retry-after` honoured up to
/// 15 minutes, holding it would stop every other session over the cap
/// (another model, say), though the waiting one holds no model connection or
/// sandbox. (The summarizing call's retry inside `compact` gives it back too.)
/// Method: a cap of 1. Session A (Opus) is answered 529 with
/// `retry-after: 600` and shows `rescheduled`; session B (Sonnet), sent a
/// message, must be answered well within A's ten minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_waiting_out_a_retry_after_does_not_hold_its_workspaces_work_slot() {
    let model = FakeModel::start(vec![
        json!({"fault": "status", "status": 529, "retry_after": 600, "message": "Overloaded"}),
        json!({"content": [{"type": "text", "text": "B's answer"}], "stop_reason": "end_turn"}),
    ])
    .expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[("LOGBOOK_MAX_WORKING_SESSIONS", "1")]);
    // Far less than A's 600 s wait.
    let api = Api::new(&server).with_turn_deadline(Duration::from_secs(60));
    let a = api.session_with(json!({"name": "a", "model": "claude-opus-4-6", "tools": []}), json!({"name": "a"})).await;
    let b =
        api.session_with(json!({"name": "b", "model": "claude-sonnet-4-6", "tools": []}), json!({"name": "b"})).await;
    api.send(&a, user_message("overloaded")).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = types(&api.events(&a).await);
        if events.contains(&"session.status_rescheduled".to_owned()) {
            break;
        }
        assert!(Instant::now() < deadline, "A was never rescheduled: {events:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    api.send(&b, user_message("hello")).await;
    let events = api.wait_idle(&b, 1).await;
    let answer = events.iter().rev().find(|e| e["type"] == "agent.message").expect("B is answered");
    assert_eq!(answer["content"][0]["text"], "B's answer");
    api.send(&a, json!([{"type": "user.interrupt"}])).await;
}

/// The web searches a failed attempt's provider reported (its
/// `message_delta` usage, `server_tool_use.web_search_requests`) are billed
/// ($10 per 1,000) like its tokens, but only its tokens are recorded:
/// `runner::step::model_usage` keeps the token counts of `reported` for the
/// failed request's `span.model_request_end`, and `x.server_tool_requests`
/// is appended for a successful response only (`Task::call_model`), so
/// `session.usage`'s `web_search_requests` and `list_cost` under-count.
/// Method: a response reporting 3 web searches is cut after its
/// `message_delta`, before `message_stop`; the retry succeeds with none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_searches_a_broken_response_reported_are_counted() {
    let model = FakeModel::start(vec![
        // message_start, ping, block start, 3 text deltas, block stop, message_delta: 8 events.
        json!({"fault": "cut", "after_events": 8}),
        json!({"content": [{"type": "text", "text": "abc"}],
               "usage": {"input_tokens": 100, "output_tokens": 5, "server_tool_use": {"web_search_requests": 3}}}),
        json!({"content": [{"type": "text", "text": "done"}], "usage": {"input_tokens": 100, "output_tokens": 5}}),
    ])
    .expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[]);
    let api = Api::new(&server);
    let session = new_session(&api, json!([])).await;
    api.send(&session, user_message("search")).await;
    let events = api.wait_idle(&session, 1).await;
    assert_eq!(model.requests().len(), 2, "{:#?}", types(&events));
    let ends: Vec<&Value> = events.iter().filter(|e| e["type"] == "span.model_request_end").collect();
    assert_eq!(ends[0]["is_error"], true, "the first attempt broke: {}", ends[0]);
    assert_eq!(ends[0]["model_usage"]["output_tokens"], 5, "its message_delta was read: {}", ends[0]);
    let usage = events.iter().rev().find(|e| e["type"] == "session.usage").unwrap();
    assert_eq!(
        usage["usage"]["server_tool_use"]["web_search_requests"], 3,
        "the broken attempt's 3 billed web searches are not counted: {usage}"
    );
}

/// Waits until the session's log lists `n` `span.model_request_start` events.
async fn wait_request_starts(api: &Api, session: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events = api.events(session).await;
        if events.iter().filter(|e| e["type"] == "span.model_request_start").count() >= n {
            return;
        }
        assert!(Instant::now() < deadline, "no model request #{n}: {:#?}", types(&events));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Goal: a budget update must be greater than the session's consumed list
/// cost, else 400 `budget_not_raised` (behaviour digest §12: "Resume only by
/// budget update (must be > consumed cost, else 400 ...)"; API digest §2.4:
/// "lowering to ≤ consumed → `budget_not_raised`"), whatever the session's
/// status. `sessions::update_once` compares the new amount with the usage
/// of the last `session.usage` (`with_log_state`), which is only appended at
/// an idle: during a turn, what the turn has spent is not counted, and a
/// budget below it is accepted.
/// Method: the first request of a turn costs $3 (1M input tokens, Sonnet)
/// under a $1,000 budget and calls a tool; the second request hangs; while
/// it does, the budget is lowered to $1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_lowered_below_what_a_running_turn_spent_is_refused() {
    let model = FakeModel::start(vec![
        json!({
            "content": [{"type": "tool_use", "id": "toolu_b", "name": "bash", "input": {"command": "ls"}}],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 1_000_000, "output_tokens": 10}
        }),
        json!({"fault": "hang"}),
    ])
    .expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[("LOGBOOK_COMPACTION_PERCENT", "0")]);
    let api = Api::new(&server);
    let budget = json!({"type": "limit", "max_list_cost": {"amount": "100000", "currency": "USD"}});
    let session = api
        .session_with_fields(
            json!({"name": "b", "tools": toolset("always_allow")}),
            json!({"name": "b"}),
            json!({"budget": budget}),
        )
        .await;
    api.send(&session, user_message("go")).await;
    // The $3 request ended and the next one is under way: $3 are consumed.
    wait_request_starts(&api, &session, 2).await;
    let events = api.events(&session).await;
    let first_end = events.iter().find(|e| e["type"] == "span.model_request_end").unwrap();
    assert_eq!(first_end["model_usage"]["input_tokens"], 1_000_000, "{first_end}");
    let cap = json!({"budget": {"type": "limit", "max_list_cost": {"amount": "100", "currency": "USD"}}});
    let (status, body) = api.raw(reqwest::Method::POST, &format!("/v1/sessions/{session}"), Some(cap)).await;
    assert_eq!(
        (status, body["error"]["details"]["error_code"].clone()),
        (400, json!("budget_not_raised")),
        "a $1 budget is below the $3 the running turn consumed: {body}"
    );
}

/// A server on `model` with one session of the tool-using agent: its data
/// directory (kept while the first value lives), the server, the API, the
/// session.
async fn started(model: &FakeModel) -> (tempfile::TempDir, std::path::PathBuf, Server, Api, String) {
    started_with(model, &[]).await
}

/// [`started`] with extra server environment.
async fn started_with(
    model: &FakeModel,
    env: &[(&str, &str)],
) -> (tempfile::TempDir, std::path::PathBuf, Server, Api, String) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, model, env);
    let api = Api::new(&server);
    let session = new_session(&api, toolset("always_allow")).await;
    (dir, data, server, api, session)
}

fn answer(text: &str) -> Value {
    json!({"content": [{"type": "text", "text": text}], "stop_reason": "end_turn"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_is_graded_revised_and_accepted() {
    // Goal: an outcome is graded where its turn would end; a verdict of
    // `needs_revision` sends the agent back to work with the grader's
    // explanation, `satisfied` ends the turn; the grader has its own context
    // (its call and answer never reach the agent's); the session shows the
    // verdict; one outcome at a time; an interrupt ends the one under way
    // (the machine's tests cover one ended while idle).
    let model = FakeModel::start(vec![
        answer("Here is the README draft."),
        answer("VERDICT: needs_revision\nThe README lacks a usage section."),
        answer("Added a usage section."),
        answer("VERDICT: satisfied\nEvery criterion is met."),
    ])
    .expect("fake starts");
    let (_dir, data, server, api, session) = started(&model).await;
    api.send(&session, outcome("a README for the project", "has a usage section", 3)).await;
    let events = api.wait_idle(&session, 1).await;
    assert_eq!(
        types(&events),
        [
            "user.define_outcome",
            "session.status_running",
            "session.thread_status_running",
            "span.model_request_start",
            "agent.message",
            "span.model_request_end",
            "span.outcome_evaluation_start",
            "span.outcome_evaluation_end",
            "span.model_request_start",
            "agent.message",
            "span.model_request_end",
            "span.outcome_evaluation_start",
            "span.outcome_evaluation_end",
            "session.usage",
            "session.status_idle",
        ]
    );
    let outcome_id = events[0]["outcome_id"].as_str().unwrap();
    let (first, second) = (&events[7], &events[12]);
    assert_eq!((first["iteration"].as_u64(), first["result"].as_str()), (Some(0), Some("needs_revision")));
    assert_eq!(first["explanation"], "The README lacks a usage section.");
    assert_eq!(first["outcome_evaluation_start_id"], events[6]["id"]);
    assert_eq!((second["iteration"].as_u64(), second["result"].as_str()), (Some(1), Some("satisfied")));
    assert_eq!(second["outcome_id"], outcome_id);
    assert!(second["usage"]["input_tokens"].as_u64().unwrap() > 0, "the grader's usage: {second}");
    assert_eq!(events[14]["stop_reason"]["type"], "end_turn");

    let requests = model.requests();
    assert_eq!(requests.len(), 4);
    let (grader, revision) = (requests[1].body.to_string(), requests[2].body.to_string());
    assert!(grader.contains("grader") && grader.contains("has a usage section"), "{grader}");
    assert!(grader.contains("Here is the README draft."), "the grader did not see the work: {grader}");
    assert!(revision.contains("The README lacks a usage section."), "{revision}");
    assert!(!revision.contains("VERDICT") && !revision.contains("strict, fair grader"), "{revision}");

    let shown = api.get(&format!("/v1/sessions/{session}")).await;
    let evaluation = &shown["outcome_evaluations"][0];
    assert_eq!((evaluation["result"].as_str(), evaluation["iteration"].as_u64()), (Some("satisfied"), Some(1)));
    // The usage counts the grader's calls with the agent's.
    let reported: u64 = events
        .iter()
        .filter_map(|e| match e["type"].as_str() {
            Some("span.model_request_end") => e["model_usage"]["input_tokens"].as_u64(),
            Some("span.outcome_evaluation_end") => e["usage"]["input_tokens"].as_u64(),
            _ => None,
        })
        .sum();
    assert_eq!(shown["usage"]["input_tokens"].as_u64(), Some(reported), "{shown}");

    // A new outcome once the first is judged, not a second beside it; an
    // interrupt ends the one under way (its model call hangs here).
    model.set_script(vec![json!({"fault": "hang"})]).unwrap();
    let path = format!("/v1/sessions/{session}/events");
    let second_outcome = outcome("a CHANGELOG", "lists every release", 2);
    let (status, _) = api.raw(reqwest::Method::POST, &path, Some(json!({"events": second_outcome}))).await;
    assert_eq!(status, 200);
    let (status, body) = api.raw(reqwest::Method::POST, &path, Some(json!({"events": outcome("x", "y", 1)}))).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("one outcome at a time"), "{body}");
    api.send(&session, json!([{"type": "user.interrupt"}])).await;
    let events = api.wait_idle(&session, 2).await;
    let ended: Vec<&Value> = events.iter().filter(|e| e["type"] == "span.outcome_evaluation_end").collect();
    assert_eq!(ended.len(), 3);
    assert_eq!(ended[2]["result"], "interrupted");
    assert_ne!(ended[2]["outcome_id"], outcome_id);
    let shown = api.get(&format!("/v1/sessions/{session}")).await;
    assert_eq!(shown["outcome_evaluations"][1]["result"], "interrupted", "{shown}");
    // (The interrupt may have come before the model call took the hang.)
    model.set_script(Vec::new()).unwrap();
    let (status, body) = api.raw(reqwest::Method::POST, &path, Some(json!({"events": outcome("x", "y", 1)}))).await;
    assert_eq!(status, 200, "{body}");
    // The script is spent: the answer and the grader's have no verdict line.
    let events = api.wait_idle(&session, 3).await;
    assert_eq!(events.iter().rev().find(|e| e["type"] == "span.outcome_evaluation_end").unwrap()["result"], "failed");
    rerun_check(server, &data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_still_unmet_at_its_last_evaluation_gets_one_final_answer() {
    // Goal: `max_iterations_reached` at the last allowed evaluation: the
    // model is told, answers once more, and the turn ends without another
    // evaluation; a grader answer with no verdict line fails the outcome.
    let model = FakeModel::start(vec![
        answer("First try."),
        answer("VERDICT: needs_revision\nThe tests are missing."),
        answer("I could not add the tests; they need a database."),
        answer("Second outcome's work."),
        answer("Looks good to me!"),
    ])
    .expect("fake starts");
    let (_dir, data, server, api, session) = started(&model).await;
    api.send(&session, outcome("tests for the parser", "every rule has a test", 1)).await;
    let events = api.wait_idle(&session, 1).await;
    let tail: Vec<String> = types(&events).split_off(6);
    assert_eq!(
        tail,
        [
            "span.outcome_evaluation_start",
            "span.outcome_evaluation_end",
            "span.model_request_start",
            "agent.message",
            "span.model_request_end",
            "session.usage",
            "session.status_idle",
        ]
    );
    assert_eq!(events[7]["result"], "max_iterations_reached");
    let last = model.requests()[2].body.to_string();
    assert!(last.contains("no evaluation is left") && last.contains("The tests are missing."), "{last}");

    api.send(&session, outcome("a summary", "one paragraph", 3)).await;
    let events = api.wait_idle(&session, 2).await;
    let end = events.iter().rev().find(|e| e["type"] == "span.outcome_evaluation_end").unwrap();
    assert_eq!(end["result"], "failed");
    assert!(end["explanation"].as_str().unwrap().contains("no verdict line"), "{end}");
    rerun_check(server, &data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_evaluation_ends_the_outcome_with_what_the_grader_was_billed() {
    // Goal: an interrupt while the grader works ends the outcome
    // `interrupted`, closing the evaluation that started, and the usage
    // the grader's broken attempt was billed is recorded with that end.
    let model = FakeModel::start(vec![
        answer("The work."),
        json!({"fault": "cut", "after_events": 2}),
        json!({"content": [{"type": "text", "text": "VERDICT: satisfied"}],
               "usage": {"input_tokens": 700_000, "output_tokens": 5}}),
        json!({"fault": "hang"}),
    ])
    .expect("fake starts");
    let (_dir, data, server, api, session) = started(&model).await;
    api.send(&session, outcome("a README", "has a usage section", 3)).await;
    // The grader's second attempt was sent: the first one's break (and the
    // usage it reported) has been handled.
    let deadline = Instant::now() + Duration::from_secs(20);
    while model.requests().len() < 3 {
        assert!(Instant::now() < deadline, "no second grading request");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    api.send(&session, json!([{"type": "user.interrupt"}])).await;
    let events = api.wait_idle(&session, 1).await;
    let start = events.iter().find(|e| e["type"] == "span.outcome_evaluation_start").unwrap();
    let end = events.iter().find(|e| e["type"] == "span.outcome_evaluation_end").unwrap();
    assert_eq!(end["result"], "interrupted");
    assert_eq!(end["outcome_evaluation_start_id"], start["id"]);
    assert!(end["usage"]["input_tokens"].as_u64().unwrap() >= 700_000, "{end}");
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn");
    rerun_check(server, &data);
}

/// Goal: a grading that takes a while says so: while the grader's call is
/// under way the stream gets `span.outcome_evaluation_ongoing` heartbeats
/// naming the outcome and iteration, the session shows the outcome
/// `evaluating`, and the log with heartbeats reruns. Method: the grader's
/// call hangs; heartbeats every 20 ms (`LOGBOOK_OUTCOME_HEARTBEAT_MS`); wait
/// for three, then interrupt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grading_under_way_sends_heartbeats() {
    let model = FakeModel::start(vec![answer("The work."), json!({"fault": "hang"})]).expect("fake starts");
    let (_dir, data, server, api, session) = started_with(&model, &[("LOGBOOK_OUTCOME_HEARTBEAT_MS", "20")]).await;
    api.send(&session, outcome("a README", "has a usage section", 3)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let beats = loop {
        let events = api.events(&session).await;
        let beats: Vec<Value> = events.into_iter().filter(|e| e["type"] == "span.outcome_evaluation_ongoing").collect();
        if beats.len() >= 3 {
            break beats;
        }
        assert!(Instant::now() < deadline, "{} heartbeats while the grader hangs", beats.len());
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let shown = api.get(&format!("/v1/sessions/{session}")).await;
    let evaluation = &shown["outcome_evaluations"][0];
    assert_eq!(evaluation["result"], "evaluating", "{shown}");
    for beat in &beats {
        assert_eq!(beat["outcome_id"], evaluation["outcome_id"], "{beat}");
        assert_eq!(beat["iteration"], 0, "{beat}");
    }
    api.send(&session, json!([{"type": "user.interrupt"}])).await;
    let events = api.wait_idle(&session, 1).await;
    let at = |kind: &str| events.iter().position(|e| e["type"] == kind).unwrap();
    let last_beat = events.iter().rposition(|e| e["type"] == "span.outcome_evaluation_ongoing").unwrap();
    assert!(at("span.outcome_evaluation_start") < at("span.outcome_evaluation_ongoing"));
    assert!(last_beat < at("span.outcome_evaluation_end"), "no heartbeat after the evaluation ended");
    assert_eq!(events[at("span.outcome_evaluation_end")]["result"], "interrupted");
    rerun_check(server, &data);
}

/// Goal: a grading waiting to retry still says it goes on: heartbeats come
/// during the backoff between attempts too, not only while an attempt is
/// under way. Method: the grader's first attempt is refused as overloaded
/// with `retry-after: 1` (attempts themselves take milliseconds), heartbeats
/// every 20 ms; the second attempt answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grading_waiting_to_retry_sends_heartbeats() {
    let model = FakeModel::start(vec![
        answer("The work."),
        json!({"fault": "status", "status": 529, "retry_after": 1}),
        json!({"content": [{"type": "text", "text": "VERDICT: satisfied"}]}),
    ])
    .expect("fake starts");
    let (_dir, data, server, api, session) = started_with(&model, &[("LOGBOOK_OUTCOME_HEARTBEAT_MS", "20")]).await;
    api.send(&session, outcome("a README", "has a usage section", 3)).await;
    let events = api.wait_idle(&session, 1).await;
    let beats = events.iter().filter(|e| e["type"] == "span.outcome_evaluation_ongoing").count();
    assert!(beats >= 5, "{beats} heartbeats over a one-second backoff");
    let end = events.iter().find(|e| e["type"] == "span.outcome_evaluation_end").unwrap();
    assert_eq!(end["result"], "satisfied", "{end}");
    rerun_check(server, &data);
}

/// Goal: the agent is never sent back to revise towards an outcome it can no
/// longer see.
/// Defect: a refused response is taken out of the context with the input
/// that drew it (`Context::forget_refused`); when that input was the
/// `user.define_outcome`, the outcome's description and rubric leave the
/// agent's context, yet the outcome stays set, the refused turn is graded
/// (the machine evaluates instead of ending it `refusal`), and a
/// `needs_revision` verdict sends the agent a bare "revise your work" with
/// nothing to revise towards.
/// Method: the model refuses the outcome's work, the grader asks for a
/// revision; every agent request carrying the verdict must also carry the
/// outcome (or there is none: the refused turn is not graded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_outcome_turn_does_not_send_the_agent_to_revise_blind() {
    let model = FakeModel::start(vec![
        json!({"content": [{"type": "text", "text": "I can't help with that."}], "stop_reason": "refusal"}),
        answer("VERDICT: needs_revision\nNothing was delivered."),
        answer("Revised."),
        answer("VERDICT: satisfied\nFine."),
    ])
    .expect("fake starts");
    let (_dir, data, server, api, session) = started(&model).await;
    api.send(&session, outcome("a README for the project", "has a usage section", 3)).await;
    let events = api.wait_idle(&session, 1).await;
    // The refused turn is not graded: its outcome ends `failed`, naming no
    // evaluation, and the turn ends `refusal`; the grader is never called.
    assert_eq!(model.requests().len(), 1, "{:#?}", types(&events));
    let end = events.iter().find(|e| e["type"] == "span.outcome_evaluation_end").expect("the outcome's end");
    assert_eq!((end["result"].as_str(), end["outcome_evaluation_start_id"].as_str()), (Some("failed"), Some("")));
    assert!(end["explanation"].as_str().unwrap().contains("refused"), "{end}");
    assert!(!events.iter().any(|e| e["type"] == "span.outcome_evaluation_start"));
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "refusal");
    rerun_check(server, &data);
}

/// Goal: an outcome interrupted before any evaluation started ends with an
/// empty `outcome_evaluation_start_id` (behaviour digest §10: "`interrupted`
/// (`outcome_evaluation_start_id` empty if none started)").
/// Defect: `Task::outcome_end` named the outcome's
/// `user.define_outcome` there instead, so a client pairing an
/// evaluation's end with its `span.outcome_evaluation_start` by that id
/// finds a user event.
/// Method: an outcome whose first model call hangs, interrupted; the end's
/// field must be empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_interrupted_before_its_first_evaluation_names_no_start() {
    let model = FakeModel::start(vec![json!({"fault": "hang"})]).expect("fake starts");
    let (_dir, data, server, api, session) = started(&model).await;
    api.send(&session, outcome("a README", "has a usage section", 3)).await;
    api.send(&session, json!([{"type": "user.interrupt"}])).await;
    let events = api.wait_idle(&session, 1).await;
    let end = events.iter().find(|e| e["type"] == "span.outcome_evaluation_end").expect("the outcome's end");
    assert_eq!(end["result"], "interrupted", "{end}");
    assert!(!events.iter().any(|e| e["type"] == "span.outcome_evaluation_start"));
    assert_eq!(end["outcome_evaluation_start_id"], "", "{end}");
    rerun_check(server, &data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grading_call_refused_as_too_long_is_retried_with_a_fitted_conversation() {
    // Goal: the grader sees the whole conversation, which near the model's
    // window can make its call too long (a 400 no retry mends): it is then
    // asked once more with the conversation fitted into half its estimate,
    // instead of the outcome ending `failed` on an unreachable grader.
    let model = FakeModel::start(vec![
        answer("The work."),
        json!({"fault": "status", "status": 400, "message": "prompt is too long: 212345 tokens > 200000 maximum"}),
        answer("VERDICT: satisfied\nFine."),
    ])
    .expect("fake starts");
    let (_dir, data, server, api, session) = started(&model).await;
    api.send(&session, outcome("a README", "has a usage section", 3)).await;
    let events = api.wait_idle(&session, 1).await;
    let end = events.iter().find(|e| e["type"] == "span.outcome_evaluation_end").unwrap();
    assert_eq!((end["result"].as_str(), end["explanation"].as_str()), (Some("satisfied"), Some("Fine.")), "{end}");
    let requests = model.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests[2].body.to_string().contains("strict, fair grader"), "{}", requests[2].body);
    rerun_check(server, &data);
}

/// Goal: a bug that panics in the middle of a turn ends the turn with an
/// error, instead of leaving the session `running` with nothing running it
/// (the runner's task for the session died with the panic, and every later
/// wake found its entry and started nothing), and the session takes the next
/// message as usual. Method: the model calls `bash` with the command the echo
/// tools panic on (`logbook_server::runner::tools::ECHO_PANIC_COMMAND`), then
/// answers a second message; `logbook rerun` reproduces the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_turn_ends_the_turn_and_the_session_goes_on() {
    let model = FakeModel::start(vec![
        json!({"content": [{"type": "tool_use", "id": "toolu_01", "name": "bash",
                            "input": {"command": "logbook-test-panic"}}],
               "stop_reason": "tool_use"}),
        json!({"content": [{"type": "text", "text": "Still here."}], "stop_reason": "end_turn"}),
    ])
    .expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[]);
    let api = Api::new(&server);
    let session = new_session(&api, toolset("always_allow")).await;
    api.send(&session, user_message("run it")).await;
    let events = api.wait_idle(&session, 1).await;
    let error = events.iter().find(|e| e["type"] == "session.error").expect("the turn ended with an error");
    assert_eq!(error["error"]["type"], "unknown_error", "{error}");
    let result = events.iter().find(|e| e["type"] == "agent.tool_result").expect("the call was answered");
    assert_eq!(result["is_error"], true);
    assert_eq!(api.get(&format!("/v1/sessions/{session}")).await["status"], "idle");
    assert_eq!(api.metric("logbook_panics_total").await, 1.0, "the panic is counted");

    api.send(&session, user_message("still there?")).await;
    let events = api.wait_idle(&session, 2).await;
    let answer = events.iter().rev().find(|e| e["type"] == "agent.message").expect("the next turn answered");
    assert_eq!(answer["content"][0]["text"], "Still here.");
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn");
    assert_eq!(model.requests().len(), 2);
    rerun_check(server, &dir.path().join("data"));
}

/// Goal: a session whose stored object says `running` while its log says
/// idle (the server died, or the runner panicked, between appending the idle
/// and recording it in the object, which caches the log's status) is shown
/// idle, as its log says, and the restart's recovery starts nothing. Method:
/// a turn runs to its idle; with the server killed, the object's status is
/// set back to `running` in the store, as that crash leaves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_left_behind_by_a_crash_follows_the_log_after_a_restart() {
    use logbook_server::api::sessions::{self, Status};
    use logbook_store::{SledOptions, SledStore};

    let model =
        FakeModel::start(vec![json!({"content": [{"type": "text", "text": "Done."}], "stop_reason": "end_turn"})])
            .expect("fake starts");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &model, &[]);
    let api = Api::new(&server);
    let session = new_session(&api, toolset("always_allow")).await;
    api.send(&session, user_message("hi")).await;
    let before = api.wait_idle(&session, 1).await;
    drop(server);
    {
        let store = SledStore::open(&data, &SledOptions::default()).unwrap();
        let tenant = logbook_server::tenancy::authenticate(&store, logbook_tests::server::KEY).unwrap();
        let now = logbook_core::Timestamp::from_unix_micros(1_764_000_000_000_000);
        let id = session.parse().unwrap();
        sessions::set_status(&store, &tenant, id, Status::Running, now).unwrap();
        let (_, stored) = sessions::load(&store, &tenant, id).unwrap();
        assert_eq!(stored.status, Status::Running, "the crash's leftover is in place");
    }
    let server = Server::start(&data, &model, &[]);
    let api = Api::new(&server);
    assert_eq!(api.get(&format!("/v1/sessions/{session}")).await["status"], "idle");
    let listed = api.get("/v1/sessions?statuses[]=running").await;
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(0), "{listed}");
    assert_eq!(api.events(&session).await, before, "nothing was appended");
    assert_eq!(model.requests().len(), 1);
    rerun_check(server, &data);
}
