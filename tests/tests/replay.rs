//! End-to-end tests of the replay engine: the real `logbook` binary, the fake
//! model, and the `/x/v1` extensions and offline commands.
//!
//! Goal: a session's state at any seq is what the runner had there (the model
//! request rebuilt from the log is byte-for-byte the one the model received,
//! across compactions); compaction keeps the context within the window and
//! never separates a tool use from its result; slices and the low-token
//! context fit their budgets and keep what must be kept; exported bundles
//! verify offline, catch a changed byte and import intact.
//! Method: scripted sessions over HTTP; the fake model records every request.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

use std::collections::BTreeSet;

use logbook_tests::fake_model::{FakeModel, FakeOptions, is_summary_request};
use logbook_tests::server::{Api, Server, host_snapshot, run_cli, sandbox_data_dir, types, user_message};
use serde_json::{Value, json};

fn toolset() -> Value {
    json!([{"type": "agent_toolset_20260401"},
           {"type": "custom", "name": "get_weather", "description": "Get weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}])
}

fn bash(id: &str, command: &str) -> Value {
    json!({"content": [{"type": "tool_use", "id": id, "name": "bash", "input": {"command": command}}]})
}

/// A server whose context window is 3,000 tokens, compacted at 60 %
/// keeping 15 %: a few 1,400-character tool results fill it.
fn small_window_server(data: &std::path::Path, model: &FakeModel) -> Server {
    Server::start(
        data,
        model,
        &[
            ("LOGBOOK_CONTEXT_WINDOW", "3000"),
            ("LOGBOOK_COMPACTION_PERCENT", "60"),
            ("LOGBOOK_COMPACTION_KEEP_PERCENT", "15"),
        ],
    )
}

fn text(text: &str) -> Value {
    json!({"content": [{"type": "text", "text": text}]})
}

/// Every tool_result in a request answers a tool_use of the message before it.
fn assert_tool_pairs_whole(body: &Value) {
    let messages = body["messages"].as_array().unwrap();
    for (index, message) in messages.iter().enumerate() {
        for block in message["content"].as_array().into_iter().flatten() {
            if block["type"] != "tool_result" {
                continue;
            }
            let id = &block["tool_use_id"];
            let before = index.checked_sub(1).map(|i| &messages[i]);
            let answered = before
                .and_then(|m| m["content"].as_array())
                .is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "tool_use" && &b["id"] == id));
            assert!(answered, "tool_result {id} in message {index} has no tool_use right before it: {body:#}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_model_request_is_the_projection_of_the_log_before_it() {
    let model = FakeModel::start(vec![
        json!({"content": [{"type": "text", "text": "Let me look."},
                           {"type": "tool_use", "id": "toolu_1", "name": "bash", "input": {"command": "ls -la"}}]}),
        bash("toolu_2", &"echo lots; ".repeat(300)),
        json!({"content": [{"type": "tool_use", "id": "toolu_3", "name": "get_weather", "input": {"city": "Oslo"}}]}),
        text("Done: two files, and it is cold in Oslo."),
        text("Second turn answer."),
    ])
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &model, &[]);
    let api = Api::new(&server);
    let session = api.session(toolset()).await;
    api.send(&session, user_message("what is here, and the weather?")).await;
    let events = api.wait_idle(&session, 1).await;
    let call = events.iter().find(|e| e["type"] == "agent.custom_tool_use").unwrap();
    api.send(
        &session,
        json!([{"type": "user.custom_tool_result", "custom_tool_use_id": call["id"],
                "content": [{"type": "text", "text": "-3 C"}]}]),
    )
    .await;
    api.wait_idle(&session, 2).await;
    api.send(&session, user_message("and now?")).await;
    api.wait_idle(&session, 3).await;
    assert_eq!(api.assert_requests_reproject(&session, &model).await, 5);

    // The state at a seq in the middle: the custom call open, status idle.
    let awaiting = api.seqs_of(&session, "session.status_idle").await[0];
    let state = api.get(&format!("/x/v1/sessions/{session}/state?at_seq={awaiting}")).await;
    assert_eq!(state["status"], "idle");
    assert_eq!(state["open_tool_calls"][0]["name"], "get_weather");
    let (status, error) =
        api.raw(reqwest::Method::GET, &format!("/x/v1/sessions/{session}/state?at_seq=999999"), None).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["type"], "invalid_request_error");

    let online = api.get(&format!("/x/v1/sessions/{session}/state?at_seq={awaiting}")).await;

    server.stop();
    let (code, _, stderr) = run_cli(&["rerun", "--data", data.to_str().unwrap(), &session]);
    assert_eq!(code, 0, "rerun: {stderr}");
    assert!(stderr.contains("rerun of 1 sessions"), "{stderr}");
    // `logbook show` is the offline twin of the state endpoint.
    let at = awaiting.to_string();
    let (code, stdout, stderr) = run_cli(&["show", "--data", data.to_str().unwrap(), &session, "--at-seq", &at]);
    assert_eq!(code, 0, "show: {stderr}");
    assert_eq!(serde_json::from_str::<Value>(&stdout).unwrap(), online);
    let (code, stdout, _) = run_cli(&["show", "--data", data.to_str().unwrap(), &session, "--budget-tokens", "1000"]);
    assert_eq!(code, 0);
    assert!(serde_json::from_str::<Value>(&stdout).unwrap()["estimated_tokens"].as_u64().unwrap() <= 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_the_context_within_the_window_and_reprojects() {
    // A 3,000-token window, compacted at 60 % keeping 15 %; each tool result
    // is about 500 tokens, so the threshold is crossed every few calls.
    let window = 3_000u64;
    let mut script: Vec<Value> =
        (0..24).map(|n| bash(&format!("toolu_{n}"), &format!("step {n}: {}", "x".repeat(1_400)))).collect();
    script.push(text("All steps done."));
    let model = FakeModel::start(script).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(
        &data,
        &model,
        &[
            ("LOGBOOK_CONTEXT_WINDOW", "3000"),
            ("LOGBOOK_COMPACTION_PERCENT", "60"),
            ("LOGBOOK_COMPACTION_KEEP_PERCENT", "15"),
        ],
    );
    let api = Api::new(&server);
    let session = api.session(toolset()).await;
    api.send(&session, user_message("run the 24 steps")).await;
    let events = api.wait_idle(&session, 1).await;
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn", "{:?}", types(&events));
    let n_compactions = events.iter().filter(|e| e["type"] == "agent.thread_context_compacted").count();
    assert!(n_compactions >= 3, "only {n_compactions} compactions: {:?}", types(&events));
    let requests: Vec<Value> = model.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(requests.iter().filter(|b| is_summary_request(b)).count(), n_compactions);
    for body in &requests {
        assert_tool_pairs_whole(body);
        // The fake reports a request's bytes / 4 as its input tokens.
        let tokens = body.to_string().len() as u64 / 4;
        assert!(tokens <= window, "a request of ~{tokens} tokens exceeds the {window}-token window");
    }
    // The first user instruction survives in every later request's summary or verbatim.
    api.assert_requests_reproject(&session, &model).await;

    // The state after a compaction names it and its summary.
    let compacted = api.seqs_of(&session, "x.compaction").await;
    let state = api.get(&format!("/x/v1/sessions/{session}/state?at_seq={}", compacted[0])).await;
    assert_eq!(state["context"]["last_compaction_seq"], compacted[0]);
    assert!(state["context"]["summary"]["text"].as_str().unwrap().starts_with("Summary of"));
    let first = state["context"]["request"]["messages"][0]["content"][0]["text"].as_str().unwrap();
    assert!(first.contains("<summary>"), "{first}");

    // Usage counts the summarizing calls.
    let usage = &state["usage"];
    assert!(usage["model_requests"].as_u64().unwrap() > 0);
    server.stop();
    let (code, _, stderr) = run_cli(&["rerun", "--data", data.to_str().unwrap()]);
    assert_eq!(code, 0, "rerun: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_summarizes_a_sent_file_by_its_content_not_its_id() {
    // A file sent as a document source is inlined in the turn's requests; the
    // summarizing request, which carries the compacted turns, must inline it
    // too: Logbook's file ids mean nothing to the provider.
    let script: Vec<Value> =
        (0..8).map(|n| bash(&format!("toolu_{n}"), &format!("step {n}: {}", "x".repeat(1_400)))).collect();
    let model = FakeModel::start([script, vec![text("All steps done.")]].concat()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = small_window_server(&dir.path().join("data"), &model);
    let api = Api::new(&server);
    let file = api.upload("plan.txt", b"# plan\nship it on friday").await;
    let session = api.session(toolset()).await;
    api.send(
        &session,
        json!([{"type": "user.message", "content": [
            {"type": "text", "text": "follow the plan, in steps"},
            {"type": "document", "source": {"type": "file", "file_id": file}}]}]),
    )
    .await;
    let events = api.wait_idle(&session, 1).await;
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn", "{:?}", types(&events));
    let requests: Vec<Value> = model.requests().into_iter().map(|r| r.body).collect();
    let summaries: Vec<&Value> = requests.iter().filter(|b| is_summary_request(b)).collect();
    assert!(!summaries.is_empty(), "no compaction: {:?}", types(&events));
    for body in &requests {
        assert!(!body.to_string().contains(&file), "a request names the file by id: {body:#}");
    }
    assert!(summaries[0].to_string().contains("ship it on friday"), "{:#}", summaries[0]);
}

/// Goal: a summarizing call that breaks after `message_start` is billed for
/// what the provider reported, like any failed model call (behaviour digest
/// §12): the session's usage counts it, though the older turns are elided
/// mechanically.
/// Method: every summarizing request is cut after `message_start`; the
/// session's usage at the end exceeds the sum of its listed model requests'
/// by the summaries' input tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_summarizing_call_that_breaks_is_billed_for_what_was_reported() {
    let script: Vec<Value> =
        (0..8).map(|n| bash(&format!("toolu_{n}"), &format!("step {n}: {}", "x".repeat(1_400)))).collect();
    let options = FakeOptions { summary_cut_after: Some(1), ..FakeOptions::default() };
    let model = FakeModel::start_with([script, vec![text("All steps done.")]].concat(), options).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = small_window_server(&dir.path().join("data"), &model);
    let api = Api::new(&server);
    let session = api.session(toolset()).await;
    api.send(&session, user_message("run the steps")).await;
    let events = api.wait_idle(&session, 1).await;
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn", "{:?}", types(&events));
    let n_summaries = model.requests().iter().filter(|r| is_summary_request(&r.body)).count() as u64;
    let n_compactions = events.iter().filter(|e| e["type"] == "agent.thread_context_compacted").count() as u64;
    assert!(n_compactions > 0, "no compaction: {:?}", types(&events));
    // A broken stream is transient: each compaction tried its call three times.
    assert_eq!(n_summaries, 3 * n_compactions);
    let ends: Vec<&Value> = events.iter().filter(|e| e["type"] == "span.model_request_end").collect();
    let listed: u64 = ends.iter().map(|e| e["model_usage"]["input_tokens"].as_u64().unwrap()).sum();
    let state = api.get(&format!("/x/v1/sessions/{session}/state")).await;
    let usage = &state["usage"];
    assert_eq!(usage["model_requests"].as_u64(), Some(ends.len() as u64 + n_compactions), "{usage}");
    assert!(
        usage["input_tokens"].as_u64().unwrap() > listed,
        "the broken summarizing calls were not billed: {usage} against {listed} listed"
    );
}

/// Goal: a summarizing call that fails transiently (a broken stream, an
/// overloaded provider) is tried again: the older turns are summarized, not
/// elided for good because of one bad moment.
/// Method: the first summarizing answer is cut; every compaction still
/// holds the model's summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_summarizing_call_that_breaks_once_is_tried_again() {
    let script: Vec<Value> =
        (0..8).map(|n| bash(&format!("toolu_{n}"), &format!("step {n}: {}", "x".repeat(1_400)))).collect();
    let options = FakeOptions { summary_cut_after: Some(1), summary_cuts: Some(1), ..FakeOptions::default() };
    let model = FakeModel::start_with([script, vec![text("All steps done.")]].concat(), options).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = small_window_server(&dir.path().join("data"), &model);
    let api = Api::new(&server);
    let session = api.session(toolset()).await;
    api.send(&session, user_message("run the steps")).await;
    let events = api.wait_idle(&session, 1).await;
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn", "{:?}", types(&events));
    let compacted = api.seqs_of(&session, "x.compaction").await;
    assert!(!compacted.is_empty(), "no compaction: {:?}", types(&events));
    let state = api.get(&format!("/x/v1/sessions/{session}/state?at_seq={}", compacted[0])).await;
    let summary = state["context"]["summary"]["text"].as_str().unwrap();
    assert!(summary.starts_with("Summary of"), "the first compaction elided the turns: {summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slices_and_the_low_token_context_fit_their_budgets() {
    let mut script: Vec<Value> =
        (0..12).map(|n| bash(&format!("toolu_{n}"), &format!("cat big-{n}.log # {}", "y".repeat(3_000)))).collect();
    script.push(
        json!({"content": [{"type": "tool_use", "id": "toolu_w", "name": "get_weather", "input": {"city": "Bergen"}}]}),
    );
    let model = FakeModel::start(script).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &model, &[]);
    let api = Api::new(&server);
    let session = api.session(toolset()).await;
    let instruction = "Read every big log and then ask for the weather in Bergen.";
    api.send(&session, user_message(instruction)).await;
    let events = api.wait_idle(&session, 1).await;
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "requires_action");

    // A small budget cuts the slice short, with previews and a place to go on.
    let slice = api.get(&format!("/x/v1/sessions/{session}/slice?budget_tokens=1500")).await;
    assert_eq!(slice["truncated"], true);
    assert!(slice["used_tokens"].as_u64().unwrap() <= 1_500);
    let next = slice["next_seq"].as_u64().unwrap();
    let rest = api.get(&format!("/x/v1/sessions/{session}/slice?from_seq={next}&budget_tokens=1000000")).await;
    let seen: BTreeSet<u64> = slice["data"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["data"].as_array().unwrap())
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seen.len(),
        slice["data"].as_array().unwrap().len() + rest["data"].as_array().unwrap().len(),
        "no seq twice"
    );
    let elided =
        rest["data"].as_array().unwrap().iter().find(|e| e.get("elided").is_some()).expect("a previewed event");
    let whole = api.get(&format!("/x/v1/sessions/{session}/events/{}", elided["seq"])).await;
    assert!(whole.to_string().len() > elided.to_string().len());

    // A tool filter keeps calls and results of that tool only.
    let by_tool = api.get(&format!("/x/v1/sessions/{session}/slice?tools[]=get_weather&budget_tokens=100000")).await;
    let kinds: Vec<&str> = by_tool["data"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["agent.custom_tool_use"]);
    // Newest first.
    let newest = api.get(&format!("/x/v1/sessions/{session}/slice?order=desc&limit=1")).await;
    assert_eq!(newest["data"][0]["type"], "session.status_idle");

    // The context fits every budget and keeps the instruction and the open call.
    let full: u64 = model.requests().last().unwrap().body.to_string().len() as u64 / 3;
    for budget in [512u64, 1_000, 2_000, 4_000, 8_000, 50_000] {
        let context = api.get(&format!("/x/v1/sessions/{session}/context?budget_tokens={budget}")).await;
        let estimated = context["estimated_tokens"].as_u64().unwrap();
        assert!(estimated <= budget, "budget {budget}: estimated {estimated}");
        let body = context.to_string();
        assert!(body.contains(&instruction[..40]), "budget {budget}: the instruction is missing");
        let messages = context["messages"].as_array().unwrap();
        let last = messages.last().unwrap();
        assert_eq!(last["role"], "assistant", "budget {budget}");
        assert!(
            last["content"].as_array().unwrap().iter().any(|b| b["type"] == "tool_use" && b["name"] == "get_weather")
        );
        assert_eq!(messages[0]["role"], "user");
        if budget <= 8_000 {
            assert!(estimated < full, "budget {budget}: {estimated} is not smaller than the full {full}");
        }
    }
    let (status, _) =
        api.raw(reqwest::Method::GET, &format!("/x/v1/sessions/{session}/context?budget_tokens=10"), None).await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_verify_offline_catch_a_changed_byte_and_import_intact() {
    let model = FakeModel::start(vec![bash("toolu_1", "ls"), text("ok")]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &model, &[]);
    let api = Api::new(&server);
    let session = api.session(toolset()).await;
    api.send(&session, user_message("list")).await;
    api.wait_idle(&session, 1).await;

    let keys = api.get("/x/v1/keys").await;
    let public_key = keys["data"][0]["public_key"].as_str().unwrap().to_owned();
    let verified = api.get(&format!("/x/v1/sessions/{session}/verify")).await;
    assert_eq!(verified["valid"], true);
    let head = verified["signed_head"].clone();
    assert_eq!(head["public_key"], public_key.as_str());

    let (status, bundle) = api.get_bytes(&format!("/x/v1/sessions/{session}/export")).await;
    assert_eq!(status, 200);
    let path = dir.path().join("session.jsonl");
    std::fs::write(&path, &bundle).unwrap();
    let (code, _, stderr) = run_cli(&["verify", path.to_str().unwrap(), "--public-key", &public_key]);
    assert_eq!(code, 0, "{stderr}");

    // One changed byte in the third record line: caught at its seq.
    let text = String::from_utf8(bundle.clone()).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[3] = lines[3].replacen("\"seq\":2", "\"seq\":2 ", 1);
    let tampered = dir.path().join("tampered.jsonl");
    std::fs::write(&tampered, lines.join("\n") + "\n").unwrap();
    let (code, _, stderr) = run_cli(&["verify", tampered.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("first bad seq #2") || stderr.contains("first bad seq 2"), "{stderr}");

    // The log still extends the head signed earlier.
    api.send(&session, user_message("more")).await;
    api.wait_idle(&session, 2).await;
    let check = api.post(&format!("/x/v1/sessions/{session}/consistency"), json!({"signed_head": head})).await;
    assert_eq!(check["consistent"], true, "{check}");

    // Import into another data directory: the chain is intact there.
    server.stop();
    let other = dir.path().join("other");
    let (code, _, stderr) =
        run_cli(&["import", "--data", other.to_str().unwrap(), "--public-key", &public_key, path.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = run_cli(&["verify", "--data", other.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workspace_at_every_idle_is_the_projection_of_the_log() {
    // Three turns of real bash in the sandbox change the workspace and the
    // outputs; after each, the host directories are the truth the projection
    // at that idle's seq must match, byte for byte.
    let turns = [
        "mkdir -p src && printf 'fn main() {}\\n' > src/main.rs && echo draft > notes.txt && ln -s src/main.rs entry",
        "sed -i s/draft/final/ notes.txt && rm entry && mkdir -p /mnt/session/outputs/r && echo done > /mnt/session/outputs/r/report.md",
        "rm -r src && printf '\\x00\\x01binary' > data.bin && chmod 600 data.bin",
    ];
    let mut script = Vec::new();
    for (n, command) in turns.iter().enumerate() {
        script.push(bash(&format!("toolu_{n}"), command));
        script.push(text("ok"));
    }
    let model = FakeModel::start(script).unwrap();
    let (_dir, data) = sandbox_data_dir();
    let server = Server::start_sandboxed(&data, &model, &[]);
    let api = Api::new(&server);
    let session = api.session(toolset()).await;
    let host = data.join("sandboxes").join(&session);
    let mut expected = Vec::new();
    for n in 1..=turns.len() {
        api.send(&session, user_message("next step")).await;
        let events = api.wait_idle(&session, n).await;
        let result = events.iter().rev().find(|e| e["type"] == "agent.tool_result").unwrap();
        assert_eq!(result["is_error"], false, "{result}");
        let idle = *api.seqs_of(&session, "session.status_idle").await.last().unwrap();
        let mut files = host_snapshot(&host.join("workspace"), "/workspace");
        files.extend(host_snapshot(&host.join("outputs"), "/mnt/session/outputs"));
        expected.push((idle, files));
    }
    assert!(expected[0].1.contains_key("/workspace/entry"), "{:?}", expected[0].1.keys());
    for (idle, files) in &expected {
        let projected = api.projected_files(&session, *idle).await;
        assert_eq!(&projected, files, "the workspace at seq {idle}");
    }
    server.stop();
}

/// Defect (review-model): the summarizing request of a compaction offers the
/// agent's tools and lets the model use them. `Task::compact` (step.rs)
/// builds it with `build_request` from the agent, so it carries every tool
/// definition and no `tool_choice`; after a conversation of tool calls the
/// model may well answer "Summarize the conversation so far" with a tool
/// call ("Let me check the file first." + `tool_use`). The runner keeps only
/// the text blocks: that preamble becomes the summary (or, with no text, the
/// mechanical elision), and the older turns are replaced by it for good.
/// Method: a session compacted by a small window; every summarizing request
/// the fake received must forbid tool use (`tool_choice: none`; the tools
/// themselves stay, since the history holds tool_use blocks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_summarizing_request_does_not_let_the_model_call_tools() {
    let script: Vec<Value> =
        (0..8).map(|n| bash(&format!("toolu_{n}"), &format!("step {n}: {}", "x".repeat(1_400)))).collect();
    let model = FakeModel::start([script, vec![text("All steps done.")]].concat()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = small_window_server(&dir.path().join("data"), &model);
    let api = Api::new(&server);
    let session = api.session(toolset()).await;
    api.send(&session, user_message("run the steps")).await;
    let events = api.wait_idle(&session, 1).await;
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn", "{:?}", types(&events));
    let requests: Vec<Value> = model.requests().into_iter().map(|r| r.body).collect();
    let summaries: Vec<&Value> = requests.iter().filter(|b| is_summary_request(b)).collect();
    assert!(!summaries.is_empty(), "no compaction: {:?}", types(&events));
    for body in summaries {
        let offers_tools = body["tools"].as_array().is_some_and(|tools| !tools.is_empty());
        assert!(
            !offers_tools || body["tool_choice"]["type"] == "none",
            "the summarizing request lets the model call tools: tools {} and tool_choice {}",
            body["tools"].as_array().map_or(0, Vec::len),
            body["tool_choice"]
        );
    }
}
