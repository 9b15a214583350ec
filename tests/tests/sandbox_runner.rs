//! End-to-end: the real `logbook` binary with its default, sandboxed tools,
//! driven by the scripted fake Messages API.
//!
//! Goal: a model that calls bash gets the command's real output as its
//! `agent.tool_result`, the log holds an `x.workspace_delta` for the call
//! whose blob is the file's content, and an interrupt during a long command
//! kills it and the next turn's bash still works. Method: start the fake
//! model and the server (no `LOGBOOK_TOOLS`: bubblewrap sandboxes), send
//! messages over HTTP, wait for idles with deadlines, then stop the server
//! and read the log from the store directly (internal events are not listed
//! by the API), and check every decision with `logbook rerun`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

use std::path::Path;
use std::time::{Duration, Instant};

use logbook_core::event::{Event, FileChange};
use logbook_core::{Digest, SessionId};
use logbook_store::{Blobs, Read, SledOptions, SledStore};
use logbook_tests::fake_model::FakeModel;
use logbook_tests::server::{Api, Server, rerun_passes, sandbox_data_dir, user_message};
use serde_json::{Value, json};

/// Deadline of one sandboxed turn on a loaded machine.
const TURN_DEADLINE: Duration = Duration::from_secs(120);

/// The server with its sandboxed tools, and a client that waits long enough.
fn start(data: &Path, model: &FakeModel) -> (Server, Api) {
    let server = Server::start_sandboxed(data, model, &[]);
    let api = Api::new(&server).with_turn_deadline(TURN_DEADLINE);
    (server, api)
}

/// An agent with the built-in tools, always allowed, and a session of it.
async fn new_session(api: &Api) -> String {
    let tools =
        json!([{"type": "agent_toolset_20260401", "default_config": {"permission_policy": {"type": "always_allow"}}}]);
    api.session_with(json!({"name": "sandboxed", "tools": tools}), json!({"name": "sandboxed"})).await
}

fn bash_call(id: &str, command: &str) -> Value {
    json!({"content": [{"type": "tool_use", "id": id, "name": "bash", "input": {"command": command}}], "stop_reason": "tool_use"})
}

fn answer(text: &str) -> Value {
    json!({"content": [{"type": "text", "text": text}], "stop_reason": "end_turn"})
}

fn rerun_check(data: &Path) {
    let stderr = rerun_passes(data);
    assert!(stderr.contains("every decision reproduced"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bash_runs_in_the_sandbox_and_its_effects_are_in_the_log() {
    let model = FakeModel::start(vec![
        bash_call("toolu_1", "echo hello > greeting.txt && cat greeting.txt && id -u"),
        answer("Wrote the greeting."),
    ])
    .expect("fake starts");
    let (_dir, data) = sandbox_data_dir();
    let (server, api) = start(&data, &model);
    let session = new_session(&api).await;
    api.send(&session, user_message("greet")).await;
    let events = api.wait_idle(&session, 1).await;
    let tool_use = events.iter().find(|e| e["type"] == "agent.tool_use").unwrap();
    let result = events.iter().find(|e| e["type"] == "agent.tool_result").unwrap();
    assert_eq!(result["tool_use_id"], tool_use["id"]);
    assert_eq!(result["is_error"], false, "{result}");
    assert_eq!(result["content"][0]["text"], "hello\n65534\n");
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn");
    // The model saw the same output.
    let requests = model.requests();
    let sent = &requests[1].body["messages"].as_array().unwrap().last().unwrap()["content"][0];
    assert_eq!(sent["content"][0]["text"], "hello\n65534\n");
    let tool_use_id = tool_use["id"].as_str().unwrap().parse().unwrap();
    drop(server);

    let store = SledStore::open(&data, &SledOptions::default()).unwrap();
    let session_id: SessionId = session.parse().unwrap();
    let records = store.read(session_id, logbook_core::Seq::ZERO, 10_000).unwrap();
    let entries: Vec<_> = records.iter().map(|r| r.entry().unwrap()).collect();
    let (delta_idx, delta) = entries
        .iter()
        .enumerate()
        .find_map(|(idx, e)| if let Event::WorkspaceDelta(d) = &e.event { Some((idx, d.clone())) } else { None })
        .expect("an x.workspace_delta in the log");
    assert_eq!(delta.tool_use_id, Some(tool_use_id));
    assert_eq!(delta.changes.len(), 1);
    assert_eq!(delta.changes[0].path, "/workspace/greeting.txt");
    let FileChange::Written { blob, size, mode } = &delta.changes[0].change else { panic!("{delta:?}") };
    assert_eq!((*size, *mode), (6, 0o644));
    assert_eq!(store.get_blob(Digest::from_bytes(*blob)).unwrap().unwrap(), b"hello\n");
    // Recorded before the call's result.
    let result_idx = entries.iter().position(|e| matches!(e.event, Event::AgentToolResult(_))).unwrap();
    assert_eq!(delta_idx + 1, result_idx);
    drop(store);
    rerun_check(&data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_kills_a_long_command_and_the_next_turn_works() {
    let model = FakeModel::start(vec![
        bash_call("toolu_long", "touch started && sleep 600 && touch finished"),
        bash_call("toolu_next", "ls"),
        answer("Done."),
    ])
    .expect("fake starts");
    let (_dir, data) = sandbox_data_dir();
    let (server, api) = start(&data, &model);
    let session = new_session(&api).await;
    api.send(&session, user_message("wait a long time")).await;
    let started = data.join("sandboxes").join(&session).join("workspace").join("started");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !started.exists() {
        assert!(Instant::now() < deadline, "the command did not start");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    api.send(&session, json!([{"type": "user.interrupt"}])).await;
    let events = api.wait_idle(&session, 1).await;
    let result = events.iter().find(|e| e["type"] == "agent.tool_result").unwrap();
    assert_eq!(result["is_error"], true);
    assert!(result["content"][0]["text"].as_str().unwrap().contains("interrupted"), "{result}");
    // The next turn runs bash in a fresh sandbox: the old command is gone.
    api.send(&session, user_message("what is there?")).await;
    let events = api.wait_idle(&session, 2).await;
    let last_result = events.iter().rev().find(|e| e["type"] == "agent.tool_result").unwrap();
    assert_eq!(last_result["is_error"], false, "{last_result}");
    assert_eq!(last_result["content"][0]["text"], "started\n");
    assert!(!data.join("sandboxes").join(&session).join("workspace").join("finished").exists());
    drop(server);
    rerun_check(&data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmation_sent_while_another_call_runs_is_echoed_unprocessed() {
    // Goal: a user.tool_confirmation that arrives while the session runs is
    // queued, so its echo has `processed_at: null` (API reference §4.1), as a
    // queued user.message's has. Method: one response calls bash (allowed),
    // which waits for a file the test creates, and write (always ask); the
    // confirmation is sent while bash waits, then the file releases it.
    let model = FakeModel::start(vec![
        json!({"content": [
            {"type": "tool_use", "id": "toolu_wait", "name": "bash",
             "input": {"command": "for i in $(seq 1200); do [ -e go ] && break; sleep 0.1; done; echo released"}},
            {"type": "tool_use", "id": "toolu_ask", "name": "write",
             "input": {"file_path": "/workspace/note.txt", "content": "noted"}}],
            "stop_reason": "tool_use"}),
        answer("Both done."),
    ])
    .expect("fake starts");
    let (_dir, data) = sandbox_data_dir();
    let (server, api) = start(&data, &model);
    let tools = json!([{"type": "agent_toolset_20260401",
        "default_config": {"permission_policy": {"type": "always_allow"}},
        "configs": [{"name": "write", "permission_policy": {"type": "always_ask"}}]}]);
    let session = api.session_with(json!({"name": "asks", "tools": tools}), json!({"name": "asks"})).await;
    api.send(&session, user_message("wait, then write")).await;
    let deadline = Instant::now() + TURN_DEADLINE;
    let ask = loop {
        let events = api.events(&session).await;
        if let Some(ask) = events.iter().find(|e| e["type"] == "agent.tool_use" && e["name"] == "write") {
            break ask.clone();
        }
        assert!(Instant::now() < deadline, "no write call listed");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(ask["evaluated_permission"], "ask", "{ask}");
    let echo = api
        .send(&session, json!([{"type": "user.tool_confirmation", "tool_use_id": ask["id"], "result": "allow"}]))
        .await;
    assert_eq!(echo["data"][0]["type"], "user.tool_confirmation", "{echo}");
    assert_eq!(echo["data"][0]["processed_at"], Value::Null, "sent while bash runs, it is queued: {echo}");
    std::fs::write(data.join("sandboxes").join(&session).join("workspace").join("go"), b"").unwrap();
    let events = api.wait_idle(&session, 1).await;
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn", "{events:#?}");
    let results: Vec<&Value> = events.iter().filter(|e| e["type"] == "agent.tool_result").collect();
    assert_eq!(results.len(), 2, "{events:#?}");
    assert!(results.iter().all(|r| r["is_error"] == false), "{results:#?}");
    drop(server);
    rerun_check(&data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_a_tool_call_closes_it_with_an_error_and_the_turn_goes_on() {
    // The server is killed (SIGKILL) while bash runs; after the restart the
    // call gets an explicit error result (it is never run a second time), a
    // second call of the same response that had not started runs then, the
    // model is called again with both results, and the turn ends.
    let model = FakeModel::start(vec![
        json!({"content": [
            {"type": "tool_use", "id": "toolu_killed", "name": "bash",
             "input": {"command": "echo run >> runs.txt && sleep 600 && touch finished"}},
            {"type": "tool_use", "id": "toolu_next", "name": "bash", "input": {"command": "echo next >> runs.txt"}}],
            "stop_reason": "tool_use"}),
        answer("The command was cut off."),
    ])
    .expect("fake starts");
    let (_dir, data) = sandbox_data_dir();
    let (server, api) = start(&data, &model);
    let session = new_session(&api).await;
    api.send(&session, user_message("run the long job")).await;
    let runs = data.join("sandboxes").join(&session).join("workspace").join("runs.txt");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !runs.exists() {
        assert!(Instant::now() < deadline, "the command did not start");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    drop(server); // SIGKILL mid tool call

    let (server, api) = start(&data, &model);
    let events = api.wait_idle(&session, 1).await;
    let results: Vec<&Value> = events.iter().filter(|e| e["type"] == "agent.tool_result").collect();
    assert_eq!(results.len(), 2, "exactly one result per call: {results:?}");
    assert_eq!(results[0]["is_error"], true);
    assert!(results[0]["content"][0]["text"].as_str().unwrap().contains("restarted"), "{}", results[0]);
    assert_eq!(results[1]["is_error"], false, "the call that had not started runs: {}", results[1]);
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), "run\nnext\n", "the killed command was not run again");
    let answer = events.iter().rev().find(|e| e["type"] == "agent.message").unwrap();
    assert_eq!(answer["content"][0]["text"], "The command was cut off.");
    let requests = model.requests();
    assert_eq!(requests.len(), 2, "the model is called again after the restart");
    let last = requests[1].body["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["content"][0]["type"], "tool_result", "{last}");
    assert_eq!(last["content"][0]["tool_use_id"], "toolu_killed");
    assert_eq!(last["content"][0]["is_error"], true);
    assert_eq!(last["content"][1]["tool_use_id"], "toolu_next");
    drop(server);
    rerun_check(&data);
}

/// DEFECT (changes kept out of the log): everything one call changed goes
/// into a single `x.workspace_delta`, appended with the call's result, and
/// nothing bounds its size. A command that leaves ~9,000 symbolic links with
/// 4,000-byte targets (a second of work, no disk to speak of) makes that
/// event larger than `MAX_EVENT_BYTES` (32 MiB): the append is refused, the
/// runner step fails, and the scan's index has already moved on, so none of
/// the call's changes (here `evidence.txt`) ever reach the log that forks,
/// state at a seq and audits rebuild the workspace from ("every change a
/// tool call makes to the workspace or outputs is in an `x.workspace_delta`
/// appended with the call's result"). Method: one bash call making the links
/// and a file; the turn must end and the file must be in a recorded delta.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_with_a_huge_delta_still_records_its_changes() {
    let command = "python3 -c \"import os; t='t'*4000; [os.symlink(t, 'l%05d' % i) for i in range(9000)]\" \
                   && echo evidence > evidence.txt && echo done";
    let model = FakeModel::start(vec![bash_call("toolu_1", command), answer("Done.")]).expect("fake starts");
    let (_dir, data) = sandbox_data_dir();
    let (server, api) = start(&data, &model);
    let session = new_session(&api).await;
    api.send(&session, user_message("go")).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut events = api.events(&session).await;
    while Instant::now() < deadline && !events.iter().any(|e| e["type"] == "session.status_idle") {
        tokio::time::sleep(Duration::from_millis(250)).await;
        events = api.events(&session).await;
    }
    let output = server.output();
    drop(server);
    let store = SledStore::open(&data, &SledOptions::default()).unwrap();
    let session_id: SessionId = session.parse().unwrap();
    let records = store.read(session_id, logbook_core::Seq::ZERO, 10_000).unwrap();
    let recorded = records.iter().any(|r| {
        let Event::WorkspaceDelta(delta) = r.entry().unwrap().event else { return false };
        delta.changes.iter().any(|c| c.path == "/workspace/evidence.txt")
    });
    let shown: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    let errors: Vec<&str> = output.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect();
    assert!(recorded, "evidence.txt is in no x.workspace_delta; events: {shown:?}; server: {errors:?}");
}
