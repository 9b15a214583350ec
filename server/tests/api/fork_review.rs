//! Forks (`POST /x/v1/sessions/{id}/fork`): defects the fork review found,
//! each kept as a test of what the server now does.

use serde_json::json;

use crate::harness::{Harness, events_body, id, user_message};

/// The session directories under the data directory's `sandboxes`.
fn sandbox_dirs(h: &Harness) -> std::collections::BTreeSet<String> {
    match std::fs::read_dir(h.data_dir().join("sandboxes")) {
        Ok(entries) => entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => std::collections::BTreeSet::new(),
    }
}

#[tokio::test]
async fn a_fork_refused_as_too_deep_leaves_no_directories_behind() {
    // Goal: fork_session says "a failure before the log is forked leaves
    // nothing behind". The fork's workspace directories are written before
    // `store.fork`, and only a failure of that writing removes them: a fork
    // the store refuses (too deep) answers 400 but leaves
    // `sandboxes/<child>` on disk, named by no session, never removed.
    // Method: fork the newest fork, each at its head, until the store
    // refuses; the refused fork must leave the set of directories as it was.
    let h = Harness::new();
    let session = h.quick_session().await;
    let mut current = id(&session).to_owned();
    h.post(&format!("/v1/sessions/{current}/events"), &events_body(vec![user_message("hi")])).await.ok();
    let mut refused = None;
    for _ in 0..=logbook_store::MAX_FORK_DEPTH + 1 {
        let sid: logbook_core::SessionId = current.parse().unwrap();
        let last = logbook_store::Read::head(h.state.store(), sid).unwrap().next.get() - 1;
        let before = sandbox_dirs(&h);
        let resp = h.post(&format!("/x/v1/sessions/{current}/fork"), &json!({"at_seq": last})).await;
        if resp.status.is_success() {
            current = id(&resp.json()).to_owned();
            continue;
        }
        assert_eq!(resp.status.as_u16(), 400, "{}", resp.text());
        refused = Some((before, sandbox_dirs(&h)));
        break;
    }
    let (before, after) = refused.expect("the store never refused a fork as too deep");
    let left: Vec<&String> = after.difference(&before).collect();
    assert!(left.is_empty(), "a refused fork left session directories behind: {left:?}");
}

#[tokio::test]
async fn a_fork_with_an_unknown_agent_override_field_is_refused() {
    // Goal: docs/extensions.md (forks): "an unknown field, or an invalid
    // override answer 400". `ForkRequest` denies unknown fields, but its
    // `agent` (`AgentOverrides`, sessions.rs) does not: a mistyped override
    // (`modle`, `system_prompt`) is dropped silently and the fork runs the
    // parent's model and prompt, so a "retry with another model" retries
    // nothing. Method: fork with `agent: {"modle": ...}`.
    let h = Harness::new();
    let session = h.quick_session().await;
    let sid = id(&session).to_owned();
    h.post(&format!("/v1/sessions/{sid}/events"), &events_body(vec![user_message("hi")])).await.ok();
    let resp = h
        .post(&format!("/x/v1/sessions/{sid}/fork"), &json!({"at_seq": 0, "agent": {"modle": "claude-opus-4-6"}}))
        .await;
    assert_eq!(
        resp.status.as_u16(),
        400,
        "a mistyped override was ignored; the fork runs {}",
        if resp.status.is_success() { resp.json()["agent"]["model"].to_string() } else { resp.text() }
    );
}

#[tokio::test]
async fn a_fork_cannot_start_a_session_of_an_archived_agent() {
    // Goal: behaviour digest §2: an archived agent is read-only and "new
    // sessions cannot reference it"; session create answers 400 ("agent ...
    // is archived and cannot start sessions"). A fork is a new session
    // running its parent's agent, but `fork_session` (api/x/fork.rs) checks
    // only the environment's archival (`check_can_start`), never the
    // agent's, so an archived agent keeps starting sessions through forks.
    // Method: a session, its agent archived, then create (refused) and fork.
    let h = Harness::new();
    let agent = h.agent("a").await;
    let env = h.env("e").await;
    let session = h
        .post(
            "/v1/sessions",
            &json!({"agent": agent["id"], "environment_id": env["id"], "initial_events": [user_message("hi")]}),
        )
        .await
        .ok();
    h.post_empty(&format!("/v1/agents/{}/archive", id(&agent))).await.ok();
    h.post("/v1/sessions", &json!({"agent": agent["id"], "environment_id": env["id"]})).await.invalid();
    let resp = h.post(&format!("/x/v1/sessions/{}/fork", id(&session)), &json!({"at_seq": 0})).await;
    assert_eq!(resp.status.as_u16(), 400, "a fork started a session of an archived agent: {}", resp.text());
}

#[tokio::test]
async fn the_state_of_a_fork_with_an_agent_override_shows_the_request_its_next_call_makes() {
    // Goal: `/state`'s `context.request` is "the exact body the next model
    // call makes from that point" (docs/extensions.md). A fork with agent
    // overrides ("retry a turn with another model or prompt") records no
    // `x.agent_config` (fork.rs `fork_log` writes only `x.fork_origin`), so
    // `settings_for` (api/x/state.rs) finds the parent's recorded settings
    // and shows the parent's model and prompt, while the fork's next call
    // sends the overrides (the runner records a new `x.agent_config` first).
    // Method: a parent whose log recorded its settings (as the runner does
    // before a model call) and then idled; fork it with another model and
    // prompt; read the fork's state at its head.
    use logbook_core::event::{AgentConfig, SessionStatusIdle, StopReason};
    use logbook_core::{Event, Json};
    let h = Harness::new();
    let session = h.quick_session().await;
    let sid = id(&session).to_owned();
    let agent = session["agent"].clone();
    let options = logbook_server::model::settings::options_json(&Default::default());
    h.inject(
        &session,
        vec![
            Event::AgentConfig(AgentConfig { agent: Json::new(&agent), options: Json::new(&options) }),
            Event::SessionStatusIdle(SessionStatusIdle { stop_reason: StopReason::EndTurn, stop_details: None }),
        ],
    );
    let parent_state = h.get(&format!("/x/v1/sessions/{sid}/state")).await.ok();
    assert_eq!(parent_state["context"]["settings"], "recorded", "{parent_state}");
    assert_eq!(parent_state["context"]["request"]["model"], "claude-sonnet-4-6", "{parent_state}");

    let forked = h
        .post(
            &format!("/x/v1/sessions/{sid}/fork"),
            &json!({"at_seq": 1, "agent": {"model": "claude-opus-4-6", "system": "Answer in French."}}),
        )
        .await
        .ok();
    assert_eq!(forked["agent"]["model"]["id"], "claude-opus-4-6", "{forked}");
    let child = id(&forked).to_owned();
    let state = h.get(&format!("/x/v1/sessions/{child}/state")).await.ok();
    let request = &state["context"]["request"];
    assert_eq!(
        (request["model"].as_str(), request["system"].to_string().contains("Answer in French.")),
        (Some("claude-opus-4-6"), true),
        "the fork's state shows the parent's settings ({}), not those its next call sends: {request}",
        state["context"]["settings"]
    );
}
