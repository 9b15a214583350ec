//! End-to-end tests of forks: the real `logbook` binary with real sandboxes,
//! the fake model, `POST /x/v1/sessions/{id}/fork` and `logbook fork`.
//!
//! Goal: a fork is an ordinary session whose log starts with its parent's
//! records up to the fork point (the same events, byte for byte, and a chain
//! that verifies through them), whose workspace on disk is the parent's
//! projection at that point, whose later changes touch neither the parent nor
//! its siblings, and which can retry a turn with another model: the request
//! that model receives is the parent's context at the fork point.
//! Method: scripted sessions over HTTP with real bash in bubblewrap; host
//! directories compared with the projections; requests recorded by the fake.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

use std::collections::BTreeMap;
use std::path::Path;

use logbook_tests::fake_model::FakeModel;
use logbook_tests::server::{Api, Server, host_snapshot, outcome, run_cli, sandbox_data_dir, user_message};
use serde_json::{Value, json};

fn bash(id: &str, command: &str) -> Value {
    json!({"content": [{"type": "tool_use", "id": id, "name": "bash", "input": {"command": command}}]})
}

fn text(text: &str) -> Value {
    json!({"content": [{"type": "text", "text": text}]})
}

/// The workspace, outputs and mounted files of a session's sandbox
/// directory on the host.
fn on_disk(data: &Path, session: &str) -> BTreeMap<String, Vec<u8>> {
    let host = data.join("sandboxes").join(session);
    let mut files = host_snapshot(&host.join("workspace"), "/workspace");
    files.extend(host_snapshot(&host.join("outputs"), "/mnt/session/outputs"));
    files.extend(host_snapshot(&host.join("uploads"), "/mnt/session/uploads"));
    files
}

/// The last tool result's text.
fn last_tool_output(events: &[Value]) -> String {
    let result = events.iter().rev().find(|e| e["type"] == "agent.tool_result").unwrap();
    assert_eq!(result["is_error"], false, "{result}");
    result["content"].as_array().unwrap().iter().filter_map(|b| b["text"].as_str()).collect()
}

async fn fork(api: &Api, parent: &str, body: Value) -> Value {
    api.post(&format!("/x/v1/sessions/{parent}/fork"), body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_starts_from_the_parents_workspace_and_goes_its_own_way() {
    let model = FakeModel::start(vec![
        // Parent, turn 1 and turn 2.
        bash(
            "toolu_1",
            "mkdir -p src && echo one > src/a.txt && echo report > /mnt/session/outputs/r.md && ln -s src/a.txt link",
        ),
        text("turn one done"),
        bash("toolu_2", "echo two >> src/a.txt && echo b > b.txt && rm link"),
        text("turn two done"),
        // The fork's turn.
        bash(
            "toolu_3",
            "cat src/a.txt; test -e b.txt && echo has-b || echo no-b; cat /mnt/session/uploads/data/prices.csv; \
             echo forked > src/a.txt",
        ),
        text("fork turn done"),
        // The fork of the fork.
        bash("toolu_4", "cat src/a.txt"),
        text("grandchild done"),
    ])
    .unwrap();
    let (dir, data) = sandbox_data_dir();
    let server = Server::start_sandboxed(&data, &model, &[]);
    let api = Api::new(&server);
    let file_id = api.upload("prices.csv", b"item,price\ntea,3\n").await;
    let agent = api
        .post(
            "/v1/agents",
            json!({"model": "claude-sonnet-4-6", "name": "forked",
        "tools": [{"type": "agent_toolset_20260401"}]}),
        )
        .await;
    let env = api.post("/v1/environments", json!({"name": "forks"})).await;
    let created = api
        .post(
            "/v1/sessions",
            json!({"agent": agent["id"], "environment_id": env["id"],
        "resources": [{"type": "file", "file_id": file_id, "mount_path": "data/prices.csv"}]}),
        )
        .await;
    let parent = created["id"].as_str().unwrap().to_owned();

    api.send(&parent, user_message("turn one")).await;
    api.wait_idle(&parent, 1).await;
    let first_idle = api.seqs_of(&parent, "session.status_idle").await[0];
    let after_turn_one = on_disk(&data, &parent);
    assert!(after_turn_one.contains_key("/workspace/link"), "{:?}", after_turn_one.keys());
    api.send(&parent, user_message("turn two")).await;
    api.wait_idle(&parent, 2).await;
    let parent_after_two = on_disk(&data, &parent);

    // Fork after turn one.
    let forked = fork(&api, &parent, json!({"at_seq": first_idle, "title": "what if"})).await;
    let child = forked["id"].as_str().unwrap().to_owned();
    assert_eq!(forked["type"], "session");
    assert_eq!(forked["status"], "idle");
    assert_eq!(forked["title"], "what if");
    assert_eq!(forked["fork_origin"]["parent_session_id"], parent.as_str());
    assert_eq!(forked["fork_origin"]["parent_seq"], first_idle);
    // An ordinary session for the compatible API: retrievable, listable.
    assert_eq!(api.get(&format!("/v1/sessions/{child}")).await["id"], child.as_str());

    // Its log is the parent's prefix: the same events, ids and all.
    let parent_events = api.events(&parent).await;
    let child_events = api.events(&child).await;
    let idle_id = &api.get(&format!("/x/v1/sessions/{parent}/events/{first_idle}")).await["id"];
    let prefix_len = parent_events.iter().position(|e| &e["id"] == idle_id).unwrap() + 1;
    assert_eq!(child_events, parent_events[..prefix_len], "the fork's events are the parent's up to the fork point");
    // Its chain verifies through the shared prefix into its own records.
    let report = api.get(&format!("/x/v1/sessions/{child}/verify")).await;
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["n_records"].as_u64().unwrap(), first_idle + 2, "{report}");
    let state = api.get(&format!("/x/v1/sessions/{child}/state")).await;
    assert_eq!(state["fork_origin"]["parent_seq"], first_idle);

    // Its workspace on disk is the parent's at the fork point, and so are its
    // mounted files (the resource is inherited with the log).
    assert_eq!(on_disk(&data, &child), after_turn_one);
    assert_eq!(after_turn_one["/mnt/session/uploads/data/prices.csv"], b"item,price\ntea,3\n");
    let resources = api.get(&format!("/v1/sessions/{child}/resources")).await;
    assert_eq!(resources["data"][0]["file_id"], file_id.as_str(), "{resources}");
    assert_eq!(api.projected_files(&parent, first_idle).await, after_turn_one);

    // Its own turn sees that workspace, and its changes stay its own.
    api.send(&child, user_message("fork turn")).await;
    let child_events = api.wait_idle(&child, 2).await;
    assert_eq!(last_tool_output(&child_events), "one\nno-b\nitem,price\ntea,3\n");
    let child_now = on_disk(&data, &child);
    assert_eq!(child_now["/workspace/src/a.txt"], b"forked\n");
    let child_last = *api.seqs_of(&child, "session.status_idle").await.last().unwrap();
    assert_eq!(api.projected_files(&child, child_last).await, child_now);
    assert_eq!(on_disk(&data, &parent), parent_after_two, "the parent's files are untouched");
    let parent_last = *api.seqs_of(&parent, "session.status_idle").await.last().unwrap();
    assert_eq!(api.projected_files(&parent, parent_last).await, parent_after_two);
    assert_eq!(api.events(&parent).await, parent_events, "the parent's log is untouched");

    // A fork of the fork, at an event id: the grandchild sees the child's files.
    let last_id = child_events.iter().rev().find(|e| e["type"] == "session.status_idle").unwrap()["id"].clone();
    let grandchild = fork(&api, &child, json!({"at_event_id": last_id})).await["id"].as_str().unwrap().to_owned();
    assert_eq!(on_disk(&data, &grandchild), child_now);
    api.send(&grandchild, user_message("and now")).await;
    let grandchild_events = api.wait_idle(&grandchild, 3).await;
    assert_eq!(last_tool_output(&grandchild_events), "forked\n");
    let report = api.get(&format!("/x/v1/sessions/{grandchild}/verify")).await;
    assert_eq!(report["valid"], true, "{report}");

    // The fork's bundle verifies offline like any session's.
    let (status, bundle) = api.get_bytes(&format!("/x/v1/sessions/{grandchild}/export")).await;
    assert_eq!(status, 200);
    let path = dir.path().join("grandchild.jsonl");
    std::fs::write(&path, bundle).unwrap();
    server.stop();
    let (code, stdout, stderr) = run_cli(&["verify", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, _, stderr) = run_cli(&["rerun", "--data", data.to_str().unwrap()]);
    assert_eq!(code, 0, "rerun: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_retries_a_turn_with_another_model_on_the_same_context() {
    let model = FakeModel::start(vec![text("first answer"), text("second opinion")]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &model, &[]);
    let api = Api::new(&server);
    let parent = api.session(json!([])).await;
    api.send(&parent, user_message("what is the answer?")).await;
    let parent_events = api.wait_idle(&parent, 1).await;
    let message = parent_events.iter().find(|e| e["type"] == "user.message").unwrap();

    let forked = fork(
        &api,
        &parent,
        json!({"at_event_id": message["id"], "agent": {"model": "claude-opus-4-6", "system": "Be brief."}}),
    )
    .await;
    let child = forked["id"].as_str().unwrap().to_owned();
    assert_eq!(forked["agent"]["model"]["id"], "claude-opus-4-6", "{forked}");
    let child_events = api.wait_idle(&child, 1).await;
    let answer = child_events.iter().rev().find(|e| e["type"] == "agent.message").unwrap();
    assert_eq!(answer["content"][0]["text"], "second opinion");
    assert_eq!(child_events.iter().find(|e| e["type"] == "user.message").unwrap()["id"], message["id"]);

    // The retried request: the same conversation, the new model and prompt.
    let requests: Vec<Value> = model.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1]["model"], "claude-opus-4-6");
    assert_eq!(requests[0]["messages"], requests[1]["messages"]);
    assert_ne!(requests[0]["system"], requests[1]["system"]);
    // Each session's requests are the projections of its own log.
    api.assert_bodies_reproject(&parent, &requests[..1]).await;
    let own: Vec<u64> = api.seqs_of(&child, "span.model_request_start").await;
    let fork_point = forked["fork_origin"]["parent_seq"].as_u64().unwrap();
    assert!(own.iter().all(|&seq| seq > fork_point), "the fork made its own call: {own:?}");
    let state = api.get(&format!("/x/v1/sessions/{child}/state?at_seq={}", own[0] - 1)).await;
    assert_eq!(state["context"]["request"], requests[1]);

    // Bad requests are client errors that name the problem.
    let cases = [
        (format!("/x/v1/sessions/{parent}/fork"), json!({}), 400, "exactly one"),
        (
            format!("/x/v1/sessions/{parent}/fork"),
            json!({"at_seq": 0, "at_event_id": message["id"]}),
            400,
            "exactly one",
        ),
        (format!("/x/v1/sessions/{parent}/fork"), json!({"at_seq": 99_999}), 400, "beyond"),
        (format!("/x/v1/sessions/{parent}/fork"), json!({"at_event_id": "sevt_nope"}), 400, "not an event id"),
        (format!("/x/v1/sessions/{parent}/fork"), json!({"at_seq": 0, "agent": {"model": null}}), 400, "model"),
        (format!("/x/v1/sessions/{parent}/fork"), json!({"at_sequence": 0}), 400, "at_sequence"),
        ("/x/v1/sessions/sesn_01JQ8Z7M3P5R7T9V1X3Z5B7D0E/fork".to_owned(), json!({"at_seq": 0}), 404, "not found"),
    ];
    for (path, body, want, needle) in cases {
        let (status, error) = api.raw(reqwest::Method::POST, &path, Some(body.clone())).await;
        assert_eq!(status, want, "{body}: {error}");
        let text = error["error"]["message"].as_str().unwrap_or_default();
        assert!(text.contains(needle), "{body}: {text}");
    }

    // Deleting the parent takes nothing from the fork: its shared prefix,
    // its chain and its projections stay (logs are never deleted).
    let before = api.events(&child).await;
    let (status, deleted) = api.raw(reqwest::Method::DELETE, &format!("/v1/sessions/{parent}"), None).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(api.events(&child).await, before);
    let report = api.get(&format!("/x/v1/sessions/{child}/verify")).await;
    assert_eq!(report["valid"], true, "{report}");
    let state = api.get(&format!("/x/v1/sessions/{child}/state?at_seq={}", own[0] - 1)).await;
    assert_eq!(state["context"]["request"], requests[1], "projections of the fork survive its parent");

    // `logbook fork` is the offline twin (here, a fork of the fork).
    server.stop();
    let at = fork_point.to_string();
    let (code, stdout, stderr) =
        run_cli(&["fork", "--data", data.to_str().unwrap(), &child, "--at-seq", &at, "--model", "claude-haiku-4-5"]);
    assert_eq!(code, 0, "fork: {stderr}");
    let offline: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(offline["agent"]["model"]["id"], "claude-haiku-4-5");
    assert_eq!(offline["fork_origin"]["parent_seq"], fork_point);
    let id = offline["id"].as_str().unwrap();
    let (code, stdout, stderr) = run_cli(&["show", "--data", data.to_str().unwrap(), id]);
    assert_eq!(code, 0, "show: {stderr}");
    let shown: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(shown["fork_origin"]["parent_session_id"], child.as_str());
    let (code, _, stderr) = run_cli(&["fork", "--data", data.to_str().unwrap(), &parent]);
    assert_ne!(code, 0, "a fork point is required: {stderr}");
}

/// The record lines of a session's exported bundle (after its header, before
/// its blobs): one per record, with seq, prev, hash and canonical bytes (no
/// session id).
async fn bundle_lines(api: &Api, session: &str) -> Vec<String> {
    let (status, bytes) = api.get_bytes(&format!("/x/v1/sessions/{session}/export")).await;
    assert_eq!(status, 200);
    let text = String::from_utf8(bytes).unwrap();
    let header: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let n_records = usize::try_from(header["n_records"].as_u64().unwrap()).unwrap();
    text.lines().skip(1).take(n_records).map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forks_at_random_seqs_verify_share_the_prefix_and_start_from_its_workspace() {
    let mut script = Vec::new();
    for (n, command) in [
        "mkdir -p d && echo 1 > d/a && echo x > b",
        "echo 2 >> d/a && rm b && ln -s d/a link && echo r > /mnt/session/outputs/r.md",
        "rm -r d && printf 'bin\\x00' > c && chmod 700 c",
    ]
    .iter()
    .enumerate()
    {
        script.push(bash(&format!("toolu_{n}"), command));
        script.push(text("ok"));
    }
    let model = FakeModel::start(script).unwrap();
    let (_dir, data) = sandbox_data_dir();
    let server = Server::start_sandboxed(&data, &model, &[]);
    let api = Api::new(&server);
    let parent = api.session(json!([{"type": "agent_toolset_20260401"}])).await;
    for n in 1..=3 {
        api.send(&parent, user_message("next")).await;
        api.wait_idle(&parent, n).await;
    }
    let parent_lines = bundle_lines(&api, &parent).await;
    let last = parent_lines.len() as u64 - 1;

    // Seeded picks over the whole log, the ends included.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut seqs = vec![0, last];
    for _ in 0..6 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        seqs.push(x % (last + 1));
    }
    for at in seqs {
        let forked = fork(&api, &parent, json!({"at_seq": at})).await;
        let child = forked["id"].as_str().unwrap().to_owned();
        // The workspace on disk is the projection at the fork point.
        assert_eq!(on_disk(&data, &child), api.projected_files(&parent, at).await, "workspace of a fork at {at}");
        // The chain verifies through the shared prefix, which is byte for byte the parent's.
        let report = api.get(&format!("/x/v1/sessions/{child}/verify")).await;
        assert_eq!(report["valid"], true, "fork at {at}: {report}");
        let child_lines = bundle_lines(&api, &child).await;
        let shared = at as usize + 1;
        assert_eq!(child_lines[..shared], parent_lines[..shared], "the prefix of a fork at {at}");
        assert!(child_lines[shared].contains(&format!("\"seq\":{}", at + 1)), "{}", child_lines[shared]);
    }
    // Whatever the forks did afterwards, the parent's log is unchanged.
    assert_eq!(bundle_lines(&api, &parent).await, parent_lines);
    server.stop();
}

/// Defect (review-model): a fork taken inside a `pause_turn` response ends
/// the paused turn instead of continuing it. `past_open_response` (api/x/
/// fork.rs) moves a fork point inside a response's batch to its
/// `span.model_request_end`, but the batch goes on with `x.model_request`,
/// which carries the provider's `stop_reason`; the machine learns that the
/// response paused only from it (`Machine::apply`, `Event::ModelRequest`).
/// The fork therefore ends the turn idle `end_turn` with the provider's
/// server tool call unanswered in its context (the paused assistant content
/// ends on a `server_tool_use` with no result), where the parent called the
/// model again to let the provider finish.
/// Method: a parent whose turn pauses once; a fork at its paused response's
/// `x.model_response` must call the model again (a second request start in
/// the fork's log), as the parent did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_inside_a_paused_response_continues_the_turn() {
    let model = FakeModel::start(vec![
        json!({"content": [
                {"type": "text", "text": "Let me look."},
                {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "long"}}],
               "stop_reason": "pause_turn",
               "usage": {"server_tool_use": {"web_search_requests": 1}}}),
        json!({"content": [
                {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
                {"type": "text", "text": "Nothing found."}]}),
        json!({"content": [
                {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
                {"type": "text", "text": "The fork found nothing either."}]}),
    ])
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &model, &[("LOGBOOK_WEB_TOOLS", "server")]);
    let api = Api::new(&server);
    let parent = api.session(json!([{"type": "agent_toolset_20260401"}])).await;
    api.send(&parent, user_message("search long")).await;
    let parent_events = api.wait_idle(&parent, 1).await;
    let starts = parent_events.iter().filter(|e| e["type"] == "span.model_request_start").count();
    assert_eq!(starts, 2, "the parent continued its paused turn");

    let paused = api.seqs_of(&parent, "x.model_response").await[0];
    let forked = fork(&api, &parent, json!({"at_seq": paused})).await;
    let child = forked["id"].as_str().unwrap().to_owned();
    let child_events = api.wait_idle(&child, 1).await;
    let starts = child_events.iter().filter(|e| e["type"] == "span.model_request_start").count();
    assert_eq!(
        starts,
        2,
        "the fork ended the paused turn ({}) without letting the provider finish",
        child_events.last().unwrap()["stop_reason"]
    );
}

/// Goal: a fork's agent overrides apply to every model call the fork makes,
/// its outcome's grading included ("a turn can be retried with another
/// model").
/// Defect: `Task::evaluate_outcome` takes the agent from the recorded
/// `x.agent_config` (the parent's, at the fork point) before the session's
/// own: a fork taken where the agent's work is done and the grading is next
/// grades with the parent's model, not the fork's override (while its
/// list cost is priced at the fork's model).
/// Method: a parent graded `satisfied`; a fork right before its
/// `span.outcome_evaluation_start`, with another model; the fork's grading
/// request must name that model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_before_its_grading_grades_with_the_forks_model() {
    let model = FakeModel::start(vec![text("The draft."), text("VERDICT: satisfied\nFine.")]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &model, &[]);
    let api = Api::new(&server);
    let parent = api.session(json!([])).await;
    api.send(&parent, outcome("a README", "has a usage section", 3)).await;
    api.wait_idle(&parent, 1).await;
    let start = api.seqs_of(&parent, "span.outcome_evaluation_start").await[0];
    let parent_model = model.requests()[1].body["model"].clone();
    assert_ne!(parent_model, "claude-opus-4-6");

    model.set_script(vec![text("VERDICT: satisfied\nFine by the other model.")]).unwrap();
    let forked = fork(&api, &parent, json!({"at_seq": start - 1, "agent": {"model": "claude-opus-4-6"}})).await;
    let child = forked["id"].as_str().unwrap().to_owned();
    let child_events = api.wait_idle(&child, 1).await;
    let end = child_events.iter().rev().find(|e| e["type"] == "span.outcome_evaluation_end").unwrap();
    assert_eq!(end["explanation"], "Fine by the other model.", "{end}");
    let requests = model.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests[2].body.to_string().contains("strict, fair grader"), "{}", requests[2].body);
    assert_eq!(
        requests[2].body["model"], "claude-opus-4-6",
        "the fork's grading went to the parent's model {parent_model}"
    );
    // The settings the grading used are recorded before it (`x.` events are
    // not listed; the rerun checks the recorded steps).
    drop(server);
    let stderr = logbook_tests::server::rerun_passes(&data);
    assert!(stderr.contains("every decision reproduced"), "{stderr}");
}

/// Goal: every `session.status_running` of a fork's log is followed by the
/// primary thread's `session.thread_status_running`, as the runner records
/// them (one append), so that clients tracking the thread (the SDK's
/// strict types, `tests/sdk`) see it run.
/// Defect: the two are one batch, but a fork point is only moved past a
/// model response's batch (`past_open_response`): a fork at the seq of
/// `session.status_running` keeps it without its thread's status, and the
/// fork's turn runs with its primary thread never said to be running.
/// Method: a fork at the parent's `session.status_running`; the fork's
/// events must hold `session.thread_status_running` after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_at_a_turns_start_keeps_the_primary_threads_running_status() {
    let model = FakeModel::start(vec![text("first answer"), text("the fork's answer")]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &model, &[]);
    let api = Api::new(&server);
    let parent = api.session(json!([])).await;
    api.send(&parent, user_message("hello")).await;
    api.wait_idle(&parent, 1).await;
    let running = api.seqs_of(&parent, "session.status_running").await[0];
    let forked = fork(&api, &parent, json!({"at_seq": running})).await;
    let child = forked["id"].as_str().unwrap().to_owned();
    let child_events = api.wait_idle(&child, 1).await;
    let types = logbook_tests::server::types(&child_events);
    let at = types.iter().position(|t| t == "session.status_running").unwrap();
    assert_eq!(
        types.get(at + 1).map(String::as_str),
        Some("session.thread_status_running"),
        "the fork's turn: {types:?}"
    );
    drop(server);
    let stderr = logbook_tests::server::rerun_passes(&data);
    assert!(stderr.contains("every decision reproduced"), "{stderr}");
}
