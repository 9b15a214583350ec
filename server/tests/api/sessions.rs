//! `/v1/sessions` (API digest §2.4, §3.3; behaviour digest §3): create from
//! an agent id, a pinned version or overrides; initial events; resources,
//! vaults and budgets; list filters and bidirectional cursors; update;
//! archive; delete.

use std::collections::BTreeSet;

use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use crate::harness::{Harness, events_body, id, ids, user_message, without};

fn create_body(agent: Value, env: &Value) -> Value {
    json!({"agent": agent, "environment_id": env["id"]})
}

/// How many sessions workspace A sees, archived included.
async fn n_sessions(h: &Harness) -> usize {
    ids(&h.get("/v1/sessions?include_archived=true&limit=100").await.ok()).len()
}

#[tokio::test]
async fn create_from_id_pinned_version_and_overrides() {
    // Goal: a session's `agent` is the snapshot of the version it was created
    // from: a bare id pins the latest, `{type:"agent", version}` pins that
    // version, `agent_with_overrides` replaces the given fields but keeps
    // id/version; a model override runs at the default effort; model null is
    // 400 agent_model_required. The session object has every REQ field.
    // Method: one agent at two versions, sessions of each form.
    let h = Harness::new();
    let v1 = h
        .agent_with(&json!({"name": "one", "model": {"id": "claude-sonnet-4-6", "effort": "low"}, "system": "sys one",
            "tools": [{"type": "agent_toolset_20260401"}], "metadata": {"secret": "agent-only"}}))
        .await;
    let agent_path = format!("/v1/agents/{}", id(&v1));
    h.tick(1000);
    let v2 = h.post(&agent_path, &json!({"name": "two"})).await.ok();
    let env = h.env("e").await;
    h.tick(1000);

    let session =
        h.post("/v1/sessions", &json!({"agent": id(&v1), "environment_id": id(&env), "title": "t1"})).await.ok();
    assert!(id(&session).starts_with("sesn_"), "{session}");
    let now = h.now().to_string();
    let snapshot = without(&v2, &["metadata", "created_at", "updated_at", "archived_at"]);
    assert_eq!(
        without(&session, &["id", "stats"]),
        json!({
            "type": "session", "status": "idle", "environment_id": env["id"], "agent": snapshot,
            "title": "t1", "metadata": {}, "resources": [], "vault_ids": [], "outcome_evaluations": [],
            "budget": null, "deployment_id": null,
            "usage": {"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0,
                      "cache_creation": {"ephemeral_5m_input_tokens": 0},
                      "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0}, "active_seconds": 0.0},
            "created_at": now, "updated_at": now, "archived_at": null
        })
    );
    assert!(session["stats"]["duration_seconds"].is_number() && session["stats"]["active_seconds"].is_number());
    assert_eq!(h.get(&format!("/v1/sessions/{}", id(&session))).await.ok()["agent"], snapshot);

    let pinned =
        h.post("/v1/sessions", &create_body(json!({"type": "agent", "id": v1["id"], "version": 1}), &env)).await.ok();
    assert_eq!(pinned["agent"], without(&v1, &["metadata", "created_at", "updated_at", "archived_at"]));
    let latest = h.post("/v1/sessions", &create_body(json!({"type": "agent", "id": v1["id"]}), &env)).await.ok();
    assert_eq!(latest["agent"]["version"], 2);

    let overridden = h
        .post(
            "/v1/sessions",
            &create_body(
                json!({"type": "agent_with_overrides", "id": v1["id"], "version": 1, "model": "claude-sonnet-4-6",
                    "system": "override", "tools": []}),
                &env,
            ),
        )
        .await
        .ok();
    let agent = &overridden["agent"];
    assert_eq!(
        (agent["id"].clone(), agent["version"].clone(), agent["name"].clone()),
        (v1["id"].clone(), json!(1), json!("one"))
    );
    assert_eq!(agent["system"], "override");
    assert_eq!(agent["tools"], json!([]));
    assert_eq!(agent["model"]["effort"], json!({"type": "high"}), "a model override drops the agent's effort");
    // Omitted overrides inherit; null clears.
    let inherited = h
        .post(
            "/v1/sessions",
            &create_body(json!({"type": "agent_with_overrides", "id": v1["id"], "system": null}), &env),
        )
        .await
        .ok();
    assert_eq!(inherited["agent"]["system"], Value::Null);
    assert_eq!(inherited["agent"]["tools"], v2["tools"]);
    assert_eq!(inherited["agent"]["model"], v2["model"]);

    let before = n_sessions(&h).await;
    let body = h
        .post(
            "/v1/sessions",
            &create_body(json!({"type": "agent_with_overrides", "id": v1["id"], "model": null}), &env),
        )
        .await
        .invalid();
    assert_eq!(body["error"]["details"]["error_code"], "agent_model_required");
    // Invalid overrides are validated like agent fields.
    h.post("/v1/sessions", &create_body(json!({"type": "agent_with_overrides", "id": v1["id"], "tools": [{"type": "custom", "name": "bash", "description": "d", "input_schema": {"type": "object"}}]}), &env))
        .await
        .invalid();
    h.post("/v1/sessions", &create_body(json!({"type": "agent_with_overrides", "id": v1["id"], "mcp_servers": [{"type": "url", "name": "gh", "url": "https://x.example"}]}), &env))
        .await
        .invalid();
    h.post("/v1/sessions", &create_body(json!({"type": "robot", "id": v1["id"]}), &env)).await.invalid();
    // A mistyped override, or an override on a plain reference, is refused:
    // either would run the agent unchanged.
    let body = h
        .post("/v1/sessions", &create_body(json!({"type": "agent_with_overrides", "id": v1["id"], "modle": "x"}), &env))
        .await
        .invalid();
    assert!(body["error"]["message"].as_str().unwrap().contains("agent.modle"), "{body}");
    let body = h
        .post(
            "/v1/sessions",
            &create_body(json!({"type": "agent", "id": v1["id"], "model": "claude-sonnet-4-6"}), &env),
        )
        .await
        .invalid();
    assert!(body["error"]["message"].as_str().unwrap().contains("agent_with_overrides"), "{body}");
    // Versions start at 1: version 0 is a bad request, not a missing version.
    h.post("/v1/sessions", &create_body(json!({"type": "agent", "id": v1["id"], "version": 0}), &env)).await.invalid();
    assert_eq!(n_sessions(&h).await, before, "refused creates create nothing");
}

#[tokio::test]
async fn unknown_or_archived_references() {
    // Goal: an unknown agent, agent version or environment is 404; an archived
    // environment is 400 environment_archived; an archived agent is 400;
    // nothing is created. Method: each bad reference in turn.
    let h = Harness::new();
    let agent = h.agent("a").await;
    let env = h.env("e").await;
    let missing_agent = "agent_01JQ8Z7M3P5R7T9V1X3Z5B7D0E";
    let missing_env = "env_01JQ8Z7M3P5R7T9V1X3Z5B7D0E";
    h.post("/v1/sessions", &create_body(json!(missing_agent), &env)).await.not_found();
    h.post("/v1/sessions", &create_body(json!("garbage"), &env)).await.not_found();
    h.post("/v1/sessions", &create_body(json!({"type": "agent", "id": agent["id"], "version": 9}), &env))
        .await
        .not_found();
    let body = h.post("/v1/sessions", &json!({"agent": agent["id"], "environment_id": missing_env})).await.not_found();
    assert_eq!(body["error"]["details"]["error_code"], "environment_not_found");
    h.post("/v1/sessions", &json!({"agent": agent["id"], "environment_id": "garbage"})).await.not_found();
    h.post("/v1/sessions", &json!({"agent": agent["id"]})).await.invalid();
    h.post("/v1/sessions", &json!({"environment_id": env["id"]})).await.invalid();

    h.post_empty(&format!("/v1/environments/{}/archive", id(&env))).await.ok();
    let body = h.post("/v1/sessions", &create_body(agent["id"].clone(), &env)).await.invalid();
    assert_eq!(body["error"]["details"]["error_code"], "environment_archived");
    let env = h.env("e2").await;
    h.post_empty(&format!("/v1/agents/{}/archive", id(&agent))).await.ok();
    h.post("/v1/sessions", &create_body(agent["id"].clone(), &env)).await.invalid();
    assert_eq!(n_sessions(&h).await, 0);
}

#[tokio::test]
async fn initial_events_are_validated_all_or_nothing() {
    // Goal: `initial_events` accepts up to 50 user.message / user.define_outcome
    // events and persists them in order (not echoed in the response); 51, a
    // type other than those two, or any invalid event refuses the whole
    // request and creates nothing; an empty list equals omitted. Method:
    // count sessions around each refusal; list the events of accepted ones.
    let h = Harness::new();
    let agent = h.agent("a").await;
    let env = h.env("e").await;
    let with_initial =
        |events: Vec<Value>| json!({"agent": agent["id"], "environment_id": env["id"], "initial_events": events});

    let refused: Vec<(&str, Vec<Value>)> = vec![
        ("51 events", (0..51).map(|n| user_message(&format!("m{n}"))).collect()),
        (
            "system.message",
            vec![user_message("hi"), json!({"type": "system.message", "content": [{"type": "text", "text": "s"}]})],
        ),
        ("user.interrupt", vec![json!({"type": "user.interrupt"})]),
        (
            "user.tool_confirmation",
            vec![
                json!({"type": "user.tool_confirmation", "tool_use_id": crate::harness::missing_event_id(), "result": "allow"}),
            ],
        ),
        (
            "user.custom_tool_result",
            vec![json!({"type": "user.custom_tool_result", "custom_tool_use_id": crate::harness::missing_event_id()})],
        ),
        (
            "user.tool_result",
            vec![json!({"type": "user.tool_result", "tool_use_id": crate::harness::missing_event_id()})],
        ),
        ("agent.message", vec![json!({"type": "agent.message", "content": [{"type": "text", "text": "x"}]})]),
        ("unknown type", vec![json!({"type": "user.shout", "content": []})]),
        ("valid then empty content", vec![user_message("ok"), json!({"type": "user.message", "content": []})]),
        (
            "valid then redacted",
            vec![user_message("ok"), json!({"type": "user.message", "content": [{"type": "redacted"}]})],
        ),
        (
            "two outcomes",
            vec![
                json!({"type": "user.define_outcome", "description": "d", "rubric": {"type": "text", "content": "r"}}),
                json!({"type": "user.define_outcome", "description": "d", "rubric": {"type": "text", "content": "r"}}),
            ],
        ),
        ("outcome without rubric", vec![json!({"type": "user.define_outcome", "description": "d"})]),
    ];
    for (case, events) in refused {
        let resp = h.post("/v1/sessions", &with_initial(events)).await;
        assert_eq!(resp.status.as_u16(), 400, "{case} must be refused: {}", resp.text());
        resp.invalid();
        assert_eq!(n_sessions(&h).await, 0, "{case} created a session");
    }

    let fifty: Vec<Value> = (0..50).map(|n| user_message(&format!("m{n}"))).collect();
    let session = h.post("/v1/sessions", &with_initial(fifty)).await.ok();
    assert!(session.get("initial_events").is_none() && session.get("events").is_none(), "not echoed: {session}");
    let listed = h.events(&session).await;
    let texts: Vec<&str> = listed.iter().map(|e| e["content"][0]["text"].as_str().unwrap()).collect();
    assert_eq!(texts, (0..50).map(|n| format!("m{n}")).collect::<Vec<_>>());
    assert!(
        listed.iter().all(|e| e["type"] == "user.message" && e["id"].as_str().is_some_and(|i| i.starts_with("sevt_")))
    );

    let outcome = json!({"type": "user.define_outcome", "description": "ship it",
        "rubric": {"type": "text", "content": "works"}, "max_iterations": 5});
    let session = h.post("/v1/sessions", &with_initial(vec![user_message("go"), outcome])).await.ok();
    let listed = h.events(&session).await;
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1]["type"], "user.define_outcome");
    assert!(listed[1]["outcome_id"].as_str().is_some_and(|o| o.starts_with("outc_")), "{}", listed[1]);

    let session = h.post("/v1/sessions", &with_initial(vec![])).await.ok();
    assert_eq!(session["status"], "idle");
    assert!(h.events(&session).await.is_empty());
}

#[tokio::test]
async fn resources_and_vaults_are_refused_when_non_empty() {
    // Goal: Logbook has no vaults: a non-empty `vault_ids` is 400 (nothing
    // created), and a resource naming no file is 404 (nothing created; the
    // resources themselves are tested in resources.rs); empty lists are
    // fine; vault_ids cannot be updated. Method: create and update variants.
    let h = Harness::new();
    let agent = h.agent("a").await;
    let env = h.env("e").await;
    let base = create_body(agent["id"].clone(), &env);
    let mut body = base.clone();
    body["resources"] = json!([{"type": "file", "file_id": "file_01"}]);
    h.post("/v1/sessions", &body).await.not_found();
    let mut body = base.clone();
    body["vault_ids"] = json!(["vlt_01"]);
    h.post("/v1/sessions", &body).await.invalid();
    assert_eq!(n_sessions(&h).await, 0);
    let mut body = base;
    body["resources"] = json!([]);
    body["vault_ids"] = json!([]);
    let session = h.post("/v1/sessions", &body).await.ok();
    assert_eq!((session["resources"].clone(), session["vault_ids"].clone()), (json!([]), json!([])));
    h.post(&format!("/v1/sessions/{}", id(&session)), &json!({"vault_ids": ["vlt_01"]})).await.invalid();
}

#[tokio::test]
async fn budget_validation() {
    // Goal: a budget is `{type:"limit", max_list_cost:{amount:"<digits>",
    // currency:"USD"}}` and is echoed; anything else is 400; on update a
    // budget cannot be added to a session created without one, can be
    // replaced, and null removes it (API digest §2.4). Method: create and
    // update variants.
    let h = Harness::new();
    let agent = h.agent("a").await;
    let env = h.env("e").await;
    let with_budget = |budget: Value| json!({"agent": agent["id"], "environment_id": env["id"], "budget": budget});
    let good = json!({"type": "limit", "max_list_cost": {"amount": "2500", "currency": "USD"}});
    let bad = [
        json!({"type": "limit", "max_list_cost": {"amount": 2500, "currency": "USD"}}),
        json!({"type": "limit", "max_list_cost": {"amount": "2500", "currency": "EUR"}}),
        json!({"type": "limit", "max_list_cost": {"amount": "-5", "currency": "USD"}}),
        json!({"type": "limit", "max_list_cost": {"amount": "0", "currency": "USD"}}),
        json!({"type": "limit", "max_list_cost": {"amount": "0250", "currency": "USD"}}),
        json!({"type": "limit", "max_list_cost": {"amount": "2.50", "currency": "USD"}}),
        json!({"type": "limit", "max_list_cost": {"amount": "", "currency": "USD"}}),
        json!({"type": "limit"}),
        json!({"type": "cap", "max_list_cost": {"amount": "2500", "currency": "USD"}}),
        json!("2500"),
    ];
    for budget in &bad {
        let resp = h.post("/v1/sessions", &with_budget(budget.clone())).await;
        assert_eq!(resp.status.as_u16(), 400, "budget {budget} must be refused: {}", resp.text());
        resp.invalid();
    }
    let session = h.post("/v1/sessions", &with_budget(good.clone())).await.ok();
    assert_eq!(session["budget"], good);
    let path = format!("/v1/sessions/{}", id(&session));
    let raised = json!({"type": "limit", "max_list_cost": {"amount": "9000", "currency": "USD"}});
    assert_eq!(h.post(&path, &json!({"budget": raised})).await.ok()["budget"], raised);
    h.post(&path, &json!({"budget": bad[0]})).await.invalid();
    assert_eq!(h.post(&path, &json!({"budget": null})).await.ok()["budget"], Value::Null);
    // Now it has none: a budget cannot be added.
    h.post(&path, &json!({"budget": good})).await.invalid();
    let plain = h.session(&agent, &env).await;
    let refused = h.post(&format!("/v1/sessions/{}", id(&plain)), &json!({"budget": good})).await.invalid();
    assert_eq!(refused["error"]["details"]["error_code"], "budget_create_only", "{refused}");
}

#[tokio::test]
async fn update_title_metadata_and_tools() {
    // Goal: a session update changes title, metadata (patch) and the agent's
    // tools, keeps omitted fields, is a no-op when nothing changes, and each
    // effective change appends one `session.updated` event. Method: updates
    // followed by the event list.
    let h = Harness::new();
    let agent = h.agent("a").await;
    let env = h.env("e").await;
    let session = h
        .post(
            "/v1/sessions",
            &json!({"agent": agent["id"], "environment_id": env["id"], "title": "t", "metadata": {"a": "1", "b": "2"}}),
        )
        .await
        .ok();
    let path = format!("/v1/sessions/{}", id(&session));
    h.tick(1000);
    // `stats.duration_seconds` grows with the clock; everything else must stay.
    let stable = without(&session, &["stats"]);
    assert_eq!(without(&h.post(&path, &json!({})).await.ok(), &["stats"]), stable, "empty update");
    let same = h.post(&path, &json!({"title": "t", "metadata": {"a": "1"}})).await.ok();
    assert_eq!(without(&same, &["stats"]), stable, "same values");
    assert!(h.events(&session).await.is_empty(), "no-ops emit nothing");

    let updated = h.post(&path, &json!({"title": "new", "metadata": {"a": null, "c": "3"}})).await.ok();
    assert_eq!(updated["title"], "new");
    assert_eq!(updated["metadata"], json!({"b": "2", "c": "3"}));
    assert_eq!(updated["updated_at"], json!(h.now().to_string()));
    let tool = json!({"type": "custom", "name": "t", "description": "d", "input_schema": {"type": "object"}});
    let updated = h.post(&path, &json!({"agent": {"tools": [tool]}})).await.ok();
    assert_eq!(updated["agent"]["tools"], json!([tool]));
    assert_eq!(updated["title"], "new");
    let events = h.events(&session).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["session.updated", "session.updated"]);
    assert_eq!(events[0]["title"], "new");

    h.post(&path, &json!({"agent": {"tools": [{"type": "mcp_toolset", "mcp_server_name": "nowhere"}]}}))
        .await
        .invalid();
    // Only tools and mcp_servers may change; other agent fields are refused, not ignored.
    h.post(&path, &json!({"agent": {"system": "be someone else"}})).await.invalid();
    h.post(&path, &json!({"title": "x".repeat(513)})).await.invalid();
    let body = h.post(&path, &json!({"metadata": {"k": ["v"]}})).await.invalid();
    assert_eq!(body["error"]["details"]["error_code"], "invalid_metadata");
    h.post("/v1/sessions/sesn_01JQ8Z7M3P5R7T9V1X3Z5B7D0E", &json!({"title": "x"})).await.not_found();
}

#[tokio::test]
async fn an_update_cannot_add_an_mcp_server_a_limited_environment_refuses() {
    // Goal: as at create, an update's mcp_servers must be reachable under a
    // limited environment that does not allow MCP servers at large. Method:
    // a session in such an environment, updated with one allowed host and
    // one outside its allowed_hosts.
    let h = Harness::new();
    let agent = h.agent("a").await;
    let networking = json!({"type": "limited", "allowed_hosts": ["mcp.allowed.example"],
        "allow_mcp_servers": false, "allow_package_managers": false});
    let env = h
        .post("/v1/environments", &json!({"name": "limited", "config": {"type": "cloud", "networking": networking}}))
        .await
        .ok();
    let session = h.session(&agent, &env).await;
    let path = format!("/v1/sessions/{}", id(&session));
    let server = |url: &str| json!({"type": "url", "name": "tools", "url": url});
    let toolset = json!({"type": "mcp_toolset", "mcp_server_name": "tools"});
    let update = |url: &str| json!({"agent": {"mcp_servers": [server(url)], "tools": [toolset.clone()]}});
    let body = h.post(&path, &update("https://mcp.elsewhere.example/sse")).await.invalid();
    assert!(body["error"]["message"].as_str().unwrap().contains("allowed_hosts"), "{body}");
    h.post(&path, &update("https://mcp.allowed.example/sse")).await.ok();
}

#[tokio::test]
async fn list_filters() {
    // Goal: the session list filters by statuses[] (bracket and plain form),
    // agent_id, agent_id+agent_version, created_at ranges and
    // include_archived, orders desc by default and asc on request, and
    // refuses agent_version without agent_id, unknown statuses and orders.
    // Method: four sessions of two agents at known times, one archived.
    let h = Harness::new();
    let first_agent = h.agent("first").await;
    let second_agent = h.agent("second").await;
    let env = h.env("e").await;
    let mut sessions = Vec::new();
    for agent in [&first_agent, &first_agent, &second_agent] {
        h.tick(1000);
        sessions.push(h.session(agent, &env).await);
    }
    h.post(&format!("/v1/agents/{}", id(&first_agent)), &json!({"name": "first v2"})).await.ok();
    h.tick(1000);
    sessions.push(h.session(&first_agent, &env).await);
    h.tick(1000);
    h.post_empty(&format!("/v1/sessions/{}/archive", id(&sessions[1]))).await.ok();
    let sid = |n: usize| id(&sessions[n]).to_owned();

    let harness = &h;
    let list = |query: &str| {
        let url = format!("/v1/sessions?{query}");
        async move { ids(&harness.get(&url).await.ok()) }
    };
    assert_eq!(list("").await, vec![sid(3), sid(2), sid(0)], "desc by default, archived hidden");
    assert_eq!(list("order=asc").await, vec![sid(0), sid(2), sid(3)]);
    assert_eq!(list("include_archived=true").await, vec![sid(3), sid(2), sid(1), sid(0)]);
    assert_eq!(list("statuses[]=idle").await, vec![sid(3), sid(2), sid(0)]);
    assert_eq!(list("statuses%5B%5D=idle&statuses%5B%5D=running").await, vec![sid(3), sid(2), sid(0)]);
    assert_eq!(list("statuses=idle").await, vec![sid(3), sid(2), sid(0)], "plain form");
    assert_eq!(list("statuses[]=running").await, Vec::<String>::new());
    assert_eq!(list("statuses[]=terminated&include_archived=true").await, vec![sid(1)]);
    assert_eq!(list(&format!("agent_id={}", id(&first_agent))).await, vec![sid(3), sid(0)]);
    assert_eq!(list(&format!("agent_id={}&agent_version=1", id(&first_agent))).await, vec![sid(0)]);
    assert_eq!(list(&format!("agent_id={}&agent_version=2", id(&first_agent))).await, vec![sid(3)]);
    assert_eq!(list(&format!("agent_id={}", id(&second_agent))).await, vec![sid(2)]);
    let third_at = sessions[2]["created_at"].as_str().unwrap().to_owned();
    assert_eq!(list(&format!("created_at[gte]={third_at}")).await, vec![sid(3), sid(2)]);
    assert_eq!(list(&format!("created_at[gt]={third_at}")).await, vec![sid(3)]);
    assert_eq!(list(&format!("created_at[lt]={third_at}")).await, vec![sid(0)]);
    assert_eq!(list(&format!("created_at[lte]={third_at}&order=asc")).await, vec![sid(0), sid(2)]);
    let offset_form = "2026-05-01T12:00:02%2B00:00";
    assert_eq!(list(&format!("created_at[gte]={offset_form}&order=asc")).await, vec![sid(2), sid(3)], "offset form");
    assert_eq!(list("deployment_id=dep_01").await, Vec::<String>::new());

    h.get("/v1/sessions?agent_version=1").await.invalid();
    h.get("/v1/sessions?statuses[]=sleeping").await.invalid();
    h.get("/v1/sessions?order=sideways").await.invalid();
    h.get("/v1/sessions?limit=0").await.invalid();
    h.get("/v1/sessions?limit=101").await.invalid();
    h.get("/v1/sessions?created_at[gt]=soon").await.invalid();
    h.get("/v1/sessions?page=agents_00").await.invalid();
}

#[tokio::test]
async fn bidirectional_cursors_walk_forward_and_back() {
    // Goal: sessions page both ways: walking forward with next_page and back
    // with prev_page yields the same pages, in both orders; the first page
    // has no prev_page and the last no next_page. Method: 5 sessions, limit 2.
    let h = Harness::new();
    let agent = h.agent("a").await;
    let env = h.env("e").await;
    let mut created = Vec::new();
    for _ in 0..5 {
        h.tick(1000);
        created.push(id(&h.session(&agent, &env).await).to_owned());
    }
    for order in ["desc", "asc"] {
        let expected: Vec<String> =
            if order == "desc" { created.iter().rev().cloned().collect() } else { created.clone() };
        let mut forward: Vec<Value> = Vec::new();
        let mut url = format!("/v1/sessions?limit=2&order={order}");
        for _ in 0..5 {
            let page = h.get(&url).await.ok();
            forward.push(page.clone());
            match page["next_page"].as_str() {
                Some(cursor) => url = format!("/v1/sessions?limit=2&order={order}&page={cursor}"),
                None => break,
            }
        }
        let pages: Vec<Vec<String>> = forward.iter().map(ids).collect();
        assert_eq!(pages, vec![expected[0..2].to_vec(), expected[2..4].to_vec(), expected[4..].to_vec()], "{order}");
        assert!(forward[0].get("prev_page").is_none_or(Value::is_null), "first page has no prev_page");
        // Back from the last page.
        let mut page = forward[2].clone();
        let mut backward = vec![ids(&page)];
        for _ in 0..5 {
            let Some(cursor) = page["prev_page"].as_str() else { break };
            page = h.get(&format!("/v1/sessions?limit=2&order={order}&page={cursor}")).await.ok();
            backward.push(ids(&page));
        }
        backward.reverse();
        assert_eq!(backward, pages, "{order}: walking back gives the same pages");
        assert!(page.get("prev_page").is_none_or(Value::is_null), "{order}: back at the first page");
        // And forward again from a page reached backwards.
        let cursor = page["next_page"].as_str().unwrap();
        let again = h.get(&format!("/v1/sessions?limit=2&order={order}&page={cursor}")).await.ok();
        assert_eq!(ids(&again), pages[1]);
    }
}

#[tokio::test]
async fn session_cursors_are_tied_to_their_order() {
    // Goal: a sessions cursor belongs to the order of the list that returned
    // it: reusing it with the other order is a 400, as for event cursors
    // (behaviour digest §4.3), rather than a page of some other slice. The
    // server encodes the order in the cursor, so it can tell. Method: take a
    // desc cursor and an asc cursor and swap their orders.
    let h = Harness::new();
    let agent = h.agent("a").await;
    let env = h.env("e").await;
    for _ in 0..3 {
        h.tick(1000);
        h.session(&agent, &env).await;
    }
    let desc = h.get("/v1/sessions?limit=1&order=desc").await.ok()["next_page"].as_str().unwrap().to_owned();
    let asc = h.get("/v1/sessions?limit=1&order=asc").await.ok()["next_page"].as_str().unwrap().to_owned();
    h.get(&format!("/v1/sessions?limit=1&order=desc&page={desc}")).await.ok();
    let mut wrong = Vec::new();
    for url in [format!("/v1/sessions?limit=1&order=asc&page={desc}"), format!("/v1/sessions?limit=1&page={asc}")] {
        let resp = h.get(&url).await;
        if resp.status.as_u16() != 400 {
            wrong.push(format!("GET {url}: {} {}", resp.status, resp.text()));
        }
    }
    assert!(wrong.is_empty(), "FIXME: a cursor of the other order is accepted:\n{}", wrong.join("\n"));
}

#[tokio::test]
async fn archive_terminates_and_refuses_events() {
    // Goal: archiving an idle session sets archived_at and status terminated,
    // appends session.status_terminated, keeps it retrievable, and refuses
    // new events and updates with 400; archiving again changes nothing.
    // Method: archive, then probe.
    let h = Harness::new();
    let session = h.quick_session().await;
    let path = format!("/v1/sessions/{}", id(&session));
    h.post(&format!("{path}/events"), &events_body(vec![user_message("before")])).await.ok();
    h.tick(1000);
    let archived = h.post_empty(&format!("{path}/archive")).await.ok();
    assert_eq!(archived["status"], "terminated");
    assert_eq!(archived["archived_at"], json!(h.now().to_string()));
    let types: Vec<String> = h.events(&session).await.iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect();
    assert_eq!(types, ["user.message", "session.status_terminated"]);
    let retrieved = h.get(&path).await.ok();
    assert_eq!(
        (retrieved["status"].clone(), retrieved["archived_at"].clone()),
        (archived["status"].clone(), archived["archived_at"].clone())
    );
    h.post(&format!("{path}/events"), &events_body(vec![user_message("after")])).await.invalid();
    h.post(&format!("{path}/events"), &events_body(vec![json!({"type": "user.interrupt"})])).await.invalid();
    h.post(&path, &json!({"title": "late"})).await.invalid();
    h.tick(1000);
    let again = h.post_empty(&format!("{path}/archive")).await.ok();
    assert_eq!(again["archived_at"], archived["archived_at"], "archive is idempotent");
    assert_eq!(h.events(&session).await.len(), 2, "no second terminated event");
    h.post_empty("/v1/sessions/sesn_01JQ8Z7M3P5R7T9V1X3Z5B7D0E/archive").await.not_found();
}

#[tokio::test]
async fn archive_waits_for_input_the_runner_has_not_started_on() {
    // Goal: with a runner, a session whose log holds input after its last
    // idle (acknowledged, the turn not recorded yet) is not archived: that
    // would end it with the input never answered. The answer is a 409 the
    // client may retry; a rescheduling turn is refused like a running one
    // (archive and delete), for self-hosted sessions too. Servers without a
    // runner archive as before. Method: a runner that
    // is never woken (events are injected, not sent), so nothing starts.
    use logbook_core::Event;
    use logbook_core::event::{
        SessionStatusIdle, SessionStatusRescheduled, SpanModelRequestEnd, SpanModelRequestStart, StopReason,
        UserMessage,
    };

    let h = Harness::new();
    let message = || {
        Event::UserMessage(UserMessage {
            content: vec![logbook_core::event::ContentBlock::Text { text: "hello".into() }],
        })
    };
    // Created and given input before the runner is attached: it would wake
    // for a new session and act on what it finds.
    let session = h.quick_session().await;
    let path = format!("/v1/sessions/{}", id(&session));
    let agent = h.agent("hosted").await;
    let env = h.self_hosted_env("workers").await;
    let self_hosted = h.session(&agent, &env).await;
    h.inject(&session, vec![message()]);
    h.inject(&self_hosted, vec![message()]);
    h.attach_runner();

    let refused = h.post_empty(&format!("{path}/archive")).await;
    assert_eq!(refused.header("x-should-retry"), Some("true"));
    let body = refused.error(409, "conflict_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("not started on"), "{body}");

    h.inject(&session, vec![Event::SessionStatusRescheduled(SessionStatusRescheduled {})]);
    for refused in [h.post_empty(&format!("{path}/archive")).await, h.delete(&path).await] {
        let body = refused.error(409, "conflict_error");
        assert!(body["error"]["message"].as_str().unwrap().contains("is rescheduling"), "{body}");
    }

    // The turn answers the message and ends.
    let start = h.inject(&session, vec![Event::SpanModelRequestStart(SpanModelRequestStart {})])[0].parse().unwrap();
    h.inject(
        &session,
        vec![
            Event::SpanModelRequestEnd(SpanModelRequestEnd {
                model_request_start_id: start,
                model_usage: Default::default(),
                is_error: Some(false),
            }),
            Event::SessionStatusIdle(SessionStatusIdle { stop_reason: StopReason::EndTurn, stop_details: None }),
        ],
    );
    assert_eq!(h.post_empty(&format!("{path}/archive")).await.ok()["status"], "terminated");
    // The runner runs self-hosted sessions' turns too (only their tool calls
    // go to a worker): the same answer.
    let refused = h.post_empty(&format!("/v1/sessions/{}/archive", id(&self_hosted))).await;
    assert_eq!(refused.header("x-should-retry"), Some("true"));
    refused.error(409, "conflict_error");
}

#[tokio::test]
async fn delete_then_not_found() {
    // Goal: DELETE answers `{id, type:"session_deleted"}`; afterwards every
    // session route answers 404 like an unknown id, and the list no longer
    // shows it. Method: delete, then call each route.
    let h = Harness::new();
    let session = h.quick_session().await;
    let kept = h.quick_session().await;
    let path = format!("/v1/sessions/{}", id(&session));
    h.post(&format!("{path}/events"), &events_body(vec![user_message("hi")])).await.ok();
    assert_eq!(h.delete(&path).await.ok(), json!({"id": session["id"], "type": "session_deleted"}));
    let responses = [
        h.get(&path).await,
        h.post(&path, &json!({"title": "x"})).await,
        h.post_empty(&format!("{path}/archive")).await,
        h.delete(&path).await,
        h.get(&format!("{path}/events")).await,
        h.post(&format!("{path}/events"), &events_body(vec![user_message("x")])).await,
        h.get(&format!("{path}/events/stream")).await,
    ];
    for resp in responses {
        let body = resp.not_found();
        assert_eq!(body["error"]["details"]["error_code"], "session_not_found", "{body}");
    }
    assert_eq!(ids(&h.get("/v1/sessions?include_archived=true").await.ok()), vec![id(&kept)]);
    let missing = h.get("/v1/sessions/sesn_01JQ8Z7M3P5R7T9V1X3Z5B7D0E").await.not_found();
    assert_eq!(missing["error"]["details"]["error_code"], "session_not_found");
    h.get("/v1/sessions/nope").await.not_found();
}

#[tokio::test]
async fn a_delete_cut_short_after_recording_its_end_is_finished_by_a_retry() {
    // Goal: a DELETE cut short after `session.deleted` was recorded (a crash,
    // or the object's write failing) leaves the session found, and a retried
    // DELETE finishes the job without recording the end twice.
    // Method: record `session.deleted` through the store, as the first
    // attempt would have, then DELETE; a session never deleted is recorded
    // once too.
    let h = Harness::new();
    let cut_short = h.quick_session().await;
    let whole = h.quick_session().await;
    append_events(
        &h,
        id(&cut_short),
        vec![logbook_core::Event::SessionDeleted(logbook_core::event::SessionDeleted {})],
    );
    for session in [&cut_short, &whole] {
        let path = format!("/v1/sessions/{}", id(session));
        assert_eq!(h.delete(&path).await.ok(), json!({"id": session["id"], "type": "session_deleted"}));
        h.get(&path).await.not_found();
        use logbook_store::Read;
        let deleted = h
            .state
            .store()
            .scan_types(
                id(session).parse().unwrap(),
                &[logbook_core::event::EventType::SessionDeleted],
                logbook_core::Seq::ZERO,
                10,
            )
            .unwrap();
        assert_eq!(deleted.len(), 1, "{session}");
    }
}

#[tokio::test]
async fn a_session_whose_delete_was_recorded_takes_no_more_input() {
    // Goal: between a DELETE recording `session.deleted` and removing the
    // object (a delete cut short, or one still under way), the session takes
    // no input: none is appended after its end, and no turn starts on it.
    let h = Harness::new();
    let session = h.quick_session().await;
    append_events(&h, id(&session), vec![logbook_core::Event::SessionDeleted(logbook_core::event::SessionDeleted {})]);
    let sent = h.post(&format!("/v1/sessions/{}/events", id(&session)), &events_body(vec![user_message("hi")])).await;
    assert_ne!(sent.status.as_u16(), 200, "a message was accepted after session.deleted: {}", sent.text());
}

#[tokio::test]
async fn create_validation() {
    // Goal: a too-long title and invalid metadata are refused on create.
    // Method: variants of a valid body.
    let h = Harness::new();
    let agent = h.agent("a").await;
    let env = h.env("e").await;
    let mut body = create_body(agent["id"].clone(), &env);
    body["title"] = json!("t".repeat(513));
    h.post("/v1/sessions", &body).await.invalid();
    body["title"] = json!("t".repeat(512));
    h.post("/v1/sessions", &body).await.ok();
    let mut body = create_body(agent["id"].clone(), &env);
    body["metadata"] = json!({"k": null});
    let err = h.post("/v1/sessions", &body).await.invalid();
    assert_eq!(err["error"]["details"]["error_code"], "invalid_metadata");
    let unique: BTreeSet<String> = ids(&h.get("/v1/sessions").await.ok()).into_iter().collect();
    assert_eq!(unique.len(), 1);
}

#[tokio::test]
async fn the_decoded_session_cache_follows_every_change() {
    // Goal: the send path's cache of decoded sessions never answers with a
    // session as it was: after an update, the next load shows the update.
    // Method: load (cached), update the title through the API, load again.
    let h = Harness::new();
    let session = h.quick_session().await;
    let sid: logbook_core::SessionId = id(&session).parse().unwrap();
    let store = h.state.store();
    let workspace = logbook_server::tenancy::ensure_workspace(store, "tenant-a", h.now()).unwrap();
    let tenant = logbook_server::tenancy::Tenant { workspace: workspace.id };
    let first = h.state.sessions().load(store, &tenant, sid).unwrap();
    assert_eq!(first.title, None);
    h.post(&format!("/v1/sessions/{}", id(&session)), &json!({"title": "renamed"})).await.ok();
    let second = h.state.sessions().load(store, &tenant, sid).unwrap();
    assert_eq!(second.title.as_deref(), Some("renamed"));
    let other = logbook_server::tenancy::ensure_workspace(store, "tenant-b", h.now()).unwrap();
    let err =
        h.state.sessions().load(store, &logbook_server::tenancy::Tenant { workspace: other.id }, sid).unwrap_err();
    assert_eq!(err.status.as_u16(), 404, "another workspace's load misses, cached or not");
}

/// A limited cloud environment that allows only `mcp.allowed.example`.
async fn limited_env(h: &Harness) -> serde_json::Value {
    let networking = json!({"type": "limited", "allowed_hosts": ["mcp.allowed.example"],
        "allow_mcp_servers": false, "allow_package_managers": false});
    h.post("/v1/environments", &json!({"name": "limited", "config": {"type": "cloud", "networking": networking}}))
        .await
        .ok()
}

#[tokio::test]
async fn a_fork_cannot_add_an_mcp_server_a_limited_environment_refuses() {
    // Session create and session update refuse an MCP server whose host is
    // outside a limited environment's allowed_hosts (mcp::check_environment);
    // a fork with agent overrides makes a new session in the same environment
    // and must be held to the same rule.
    let h = Harness::new();
    let agent = h.agent("a").await;
    let env = limited_env(&h).await;
    let session = h
        .post(
            "/v1/sessions",
            &json!({"agent": agent["id"], "environment_id": env["id"],
            "initial_events": [user_message("hi")]}),
        )
        .await
        .ok();
    let overrides = json!({
        "mcp_servers": [{"type": "url", "name": "tools", "url": "https://mcp.elsewhere.example/sse"}],
        "tools": [{"type": "mcp_toolset", "mcp_server_name": "tools"}],
    });
    // The same overrides at create are refused...
    h.post("/v1/sessions", &json!({"environment_id": env["id"],
        "agent": {"type": "agent_with_overrides", "id": agent["id"], "mcp_servers": overrides["mcp_servers"], "tools": overrides["tools"]}}))
        .await
        .invalid();
    // ...and must be refused on a fork too.
    let resp =
        h.post(&format!("/x/v1/sessions/{}/fork", id(&session)), &json!({"at_seq": 0, "agent": overrides})).await;
    let forked = if resp.status.is_success() { Some(resp.json()) } else { None };
    assert_eq!(
        resp.status.as_u16(),
        400,
        "a fork escaped the environment's allowed_hosts for MCP: {}",
        forked.map(|f| f["agent"]["mcp_servers"].to_string()).unwrap_or_default()
    );
}

#[tokio::test]
async fn a_fork_cannot_start_a_session_in_an_archived_environment() {
    // "archived envs can't start sessions" (API digest §2.2); session create
    // answers 400 environment_archived, and so must a fork, which makes a new
    // session in its parent's environment.
    let h = Harness::new();
    let agent = h.agent("a").await;
    let env = h.env("e").await;
    let session = h
        .post(
            "/v1/sessions",
            &json!({"agent": agent["id"], "environment_id": env["id"],
            "initial_events": [user_message("hi")]}),
        )
        .await
        .ok();
    h.post_empty(&format!("/v1/environments/{}/archive", id(&env))).await.ok();
    h.post("/v1/sessions", &json!({"agent": agent["id"], "environment_id": env["id"]})).await.invalid();
    let resp = h.post(&format!("/x/v1/sessions/{}/fork", id(&session)), &json!({"at_seq": 0})).await;
    assert_eq!(resp.status.as_u16(), 400, "fork started a session in an archived environment: {}", resp.text());
}

#[tokio::test]
async fn initial_events_hold_at_most_100_file_sourced_documents() {
    // Goal: behaviour digest §3.2: `initial_events` takes "≤100 file-sourced
    // `document` blocks across the list"; 101 refuse the whole request (400,
    // nothing created), while 100 are fine. Method: 101 document blocks with
    // a `file` source spread over two user.message events, then 100.
    let h = Harness::new();
    let agent = h.agent("a").await;
    let env = h.env("e").await;
    let doc = |n: usize| json!({"type": "document", "source": {"type": "file", "file_id": format!("file_{n:04}")}});
    let message =
        |range: std::ops::Range<usize>| json!({"type": "user.message", "content": range.map(doc).collect::<Vec<_>>()});
    let with_initial =
        |events: Vec<Value>| json!({"agent": agent["id"], "environment_id": env["id"], "initial_events": events});
    let resp = h.post("/v1/sessions", &with_initial(vec![message(0..60), message(60..101)])).await;
    assert_eq!(
        resp.status.as_u16(),
        400,
        "101 file-sourced documents in initial_events were accepted: {}",
        resp.text()
    );
    resp.invalid();
    assert_eq!(n_sessions(&h).await, 0, "nothing created");
}

#[tokio::test]
async fn a_restart_resumes_sessions_whose_log_has_unanswered_input() {
    // Goal: nothing acknowledged is lost across a stop (SIGTERM's grace
    // runs out, or a crash): a `user.message` acknowledged on an idle
    // session must still get its turn after a restart. `serve` resumes the
    // sessions `sessions::unfinished` names (`RunnerHandle::recover`), which
    // reads the session object's cached `status`; that cache becomes
    // `running` only after the runner has appended `session.status_running`
    // and then updated the object. A stop between the send's acknowledgement
    // and that update leaves the message in the log and the session never
    // resumed (the client waits forever for a turn). Method: no runner here,
    // so the state is exactly that window: a message acknowledged on an idle
    // session (case 1), and a `session.status_running` in the log whose
    // object update never happened (case 2); both must be resumed.
    let h = Harness::new();
    let waiting = h.quick_session().await;
    h.post(&format!("/v1/sessions/{}/events", id(&waiting)), &events_body(vec![user_message("hi")])).await.ok();
    let running = h.quick_session().await;
    h.inject(&running, vec![serde_json::from_value(json!({"type": "session.status_running"})).unwrap()]);
    let resumed: BTreeSet<String> = logbook_server::api::sessions::unfinished(h.state.store())
        .unwrap()
        .into_iter()
        .map(|(_, session)| session.to_string())
        .collect();
    assert!(
        resumed.contains(id(&waiting)),
        "a session with an acknowledged, unanswered user.message is not resumed on restart: {resumed:?}"
    );
    assert!(resumed.contains(id(&running)), "a session whose log says running is not resumed on restart: {resumed:?}");
}

/// Appends `events` to `session`'s log through the store, as the runner
/// would, with ids made for their seqs; returns the ids.
fn append_events(h: &Harness, session: &str, events: Vec<logbook_core::Event>) -> Vec<logbook_core::EventId> {
    use logbook_store::{Append, Read};
    let session: logbook_core::SessionId = session.parse().unwrap();
    let store = h.state.store();
    let head = store.head(session).unwrap().next;
    let ms = u64::try_from(h.now().unix_ms()).unwrap();
    let entries: Vec<logbook_core::Entry> = events
        .into_iter()
        .enumerate()
        .map(|(k, event)| logbook_core::Entry {
            id: logbook_core::EventId::for_seq(ms, logbook_core::Seq::new(head.get() + k as u64), 0x5eed + k as u64),
            event,
            at: h.now(),
        })
        .collect();
    store.append(session, head, &entries).unwrap();
    entries.iter().map(|e| e.id).collect()
}

/// Every `tool_use` of an assistant turn is answered by a `tool_result` in
/// the user turn right after it, roles alternate, and the request ends on
/// the user's turn (Messages API rules).
fn assert_request_is_valid(messages: &[Value]) {
    for pair in messages.windows(2) {
        assert_ne!(pair[0]["role"], pair[1]["role"], "two turns of one role in a row: {messages:#?}");
    }
    assert_eq!(messages.last().map(|m| m["role"].clone()), Some(json!("user")), "{messages:#?}");
    for (index, message) in messages.iter().enumerate().filter(|(_, m)| m["role"] == "assistant") {
        let answers: BTreeSet<String> = messages
            .get(index + 1)
            .and_then(|next| next["content"].as_array())
            .into_iter()
            .flatten()
            .filter(|b| b["type"] == "tool_result")
            .filter_map(|b| b["tool_use_id"].as_str().map(str::to_owned))
            .collect();
        for block in message["content"].as_array().unwrap().iter().filter(|b| b["type"] == "tool_use") {
            assert!(
                answers.contains(block["id"].as_str().unwrap()),
                "tool_use {} has no tool_result in the next turn: {messages:#?}",
                block["id"]
            );
        }
    }
}

#[tokio::test]
async fn x_a_fork_inside_a_model_calls_records_leaves_no_tool_use_unanswered() {
    // Goal: a fork may be taken at any event (at_event_id of an
    // `agent.tool_use`, the natural pick from the events list), and then
    // "continues the way a session does after a restart" (fork.rs). The
    // runner records a response as one batch: `x.model_response` (with every
    // tool_use block), then one `agent.tool_use` per block, then
    // `span.model_request_end`. A fork cut inside that batch keeps the
    // response's blocks in the context but not all of its calls, and never
    // answers the missing ones, so every later model request of the fork is
    // one the Messages API refuses (tool_use without tool_result).
    // Method: a recorded response with two calls; fork at the first call's
    // event; drive the fork the way the runner does (the machine's commands,
    // recorded through the store) up to its next model call; that request, as
    // the state endpoint shows it, must pair every tool_use. Refusing such a
    // fork point (400) is an acceptable fix too.
    use logbook_core::event::{
        AgentToolResult, AgentToolUse, ContentBlock, ModelResponse, SessionStatusRunning, SpanModelRequestEnd,
        SpanModelRequestStart, ToolStarted, ToolUseLink,
    };
    use logbook_core::{Event, EventId, Json, Seq};
    use logbook_replay::{Command, Policy, SessionState};
    use logbook_store::Read;

    let h = Harness::new();
    let session = h.quick_session().await;
    let sid = id(&session).to_owned();
    h.post(&format!("/v1/sessions/{sid}/events"), &events_body(vec![user_message("list twice")])).await.ok();
    let [_, start] = append_events(
        &h,
        &sid,
        vec![
            Event::SessionStatusRunning(SessionStatusRunning {}),
            Event::SpanModelRequestStart(SpanModelRequestStart {}),
        ],
    )[..] else {
        panic!()
    };
    // The ids the calls' events will get: the next two seqs after the response.
    let parsed: logbook_core::SessionId = sid.parse().unwrap();
    let next = h.state.store().head(parsed).unwrap().next.get();
    let ms = u64::try_from(h.now().unix_ms()).unwrap();
    let call_id = |k: u64| EventId::for_seq(ms, Seq::new(next + 1 + k), 0x5eed + 1 + k);
    let bash = |id: &str| json!({"type": "tool_use", "id": id, "name": "bash", "input": {"command": "ls"}});
    let tool_use = || {
        Event::AgentToolUse(AgentToolUse {
            name: "bash".into(),
            input: Json::new(&json!({"command": "ls"})),
            evaluated_permission: None,
            evaluation: None,
            session_thread_id: None,
        })
    };
    let recorded = append_events(
        &h,
        &sid,
        vec![
            Event::ModelResponse(ModelResponse {
                model_request_start_id: start,
                content: Json::new(&json!([bash("toolu_a"), bash("toolu_b")])),
                tool_uses: vec![
                    ToolUseLink { provider_id: "toolu_a".into(), event_id: call_id(0) },
                    ToolUseLink { provider_id: "toolu_b".into(), event_id: call_id(1) },
                ],
            }),
            tool_use(),
            tool_use(),
            Event::SpanModelRequestEnd(SpanModelRequestEnd {
                model_request_start_id: start,
                model_usage: Default::default(),
                is_error: Some(false),
            }),
        ],
    );
    assert_eq!(recorded[1..3], [call_id(0), call_id(1)]);

    let resp = h.post(&format!("/x/v1/sessions/{sid}/fork"), &json!({"at_event_id": call_id(0).to_string()})).await;
    if resp.status.as_u16() == 400 {
        return;
    }
    let child = id(&resp.ok()).to_owned();
    let child_id: logbook_core::SessionId = child.parse().unwrap();

    // Drive the fork as its runner would, up to its next model call.
    for _ in 0..10 {
        let records = h.state.store().read(child_id, Seq::ZERO, 10_000).unwrap();
        let entries: Vec<logbook_core::Entry> = records.iter().map(|r| r.entry().unwrap()).collect();
        let state = SessionState::project(&entries);
        let events = match state.machine.next(&Policy::default()) {
            Command::CallModel { .. } => break,
            Command::StartTurn | Command::Resume => vec![Event::SessionStatusRunning(SessionStatusRunning {})],
            Command::CloseModelRequest { start_id } => vec![Event::SpanModelRequestEnd(SpanModelRequestEnd {
                model_request_start_id: start_id,
                model_usage: Default::default(),
                is_error: Some(true),
            })],
            Command::RunTools(ids) => {
                let mut events = vec![Event::ToolStarted(ToolStarted { tool_use_ids: ids.clone() })];
                events.extend(ids.into_iter().map(|id| {
                    Event::AgentToolResult(AgentToolResult {
                        tool_use_id: id,
                        content: Some(vec![ContentBlock::Text { text: "a\nb".into() }]),
                        is_error: Some(false),
                    })
                }));
                events
            }
            Command::FailTools { ids, .. } => ids
                .into_iter()
                .map(|id| {
                    Event::AgentToolResult(AgentToolResult { tool_use_id: id, content: None, is_error: Some(true) })
                })
                .collect(),
            other @ (Command::Wait
            | Command::GiveUp
            | Command::DenyTools(_)
            | Command::AwaitClient(_)
            | Command::Compact
            | Command::EndTurn
            | Command::Interrupt { .. }
            | Command::EvaluateOutcome { .. }) => panic!("the fork's runner would not call the model again: {other:?}"),
        };
        append_events(&h, &child, events);
    }
    let state = h.get(&format!("/x/v1/sessions/{child}/state")).await.ok();
    let messages = state["context"]["request"]["messages"].as_array().unwrap().clone();
    assert_request_is_valid(&messages);
}

#[tokio::test]
async fn x_a_slice_always_makes_progress_past_an_event_larger_than_its_budget() {
    // Goal: a slice is "bounded by a token budget", and a cut-short slice
    // says where to continue (`next_seq`). A single event whose preview alone
    // exceeds the budget (a user.message of many blocks, each under the
    // preview's cut of 2,000 characters: nothing of it is cut) is never
    // returned and `next_seq` names that same event again, so a client
    // following `next_seq` loops forever at the default budget.
    // Method: one such message, then a short one; page through the slice
    // with the default budget; every page must return an event or move
    // `next_seq` past the page's start.
    let h = Harness::new();
    let session = h.quick_session().await;
    let sid = id(&session).to_owned();
    let blocks: Vec<Value> =
        (0..40).map(|k| json!({"type": "text", "text": format!("{k}{}", "x".repeat(1_900))})).collect();
    let big = json!({"type": "user.message", "content": blocks});
    h.post(&format!("/v1/sessions/{sid}/events"), &events_body(vec![big])).await.ok();
    h.post(&format!("/v1/sessions/{sid}/events"), &events_body(vec![user_message("and this")])).await.ok();
    let mut from = 0u64;
    let mut seen = 0usize;
    for _ in 0..10 {
        let page = h.get(&format!("/x/v1/sessions/{sid}/slice?from_seq={from}")).await.ok();
        let n = page["data"].as_array().unwrap().len();
        seen += n;
        let Some(next) = page["next_seq"].as_u64() else { break };
        assert!(
            n > 0 || next > from,
            "a slice page from seq {from} returned nothing and continues at {next}: it can never make progress"
        );
        from = next;
    }
    assert!(seen >= 2, "the slice never reached both messages");
}

#[tokio::test]
async fn x_a_tool_filtered_slice_continued_at_next_seq_keeps_the_results_of_earlier_calls() {
    // Goal: `tools[]` keeps "tool calls of these names, with their results"
    // (replay/src/slice.rs). The server learns which calls are relevant only
    // from the records of the requested range, so continuing a cut-short
    // slice at its `next_seq` (or any `from_seq` after a call) drops the
    // results whose calls came before the range.
    // Method: one bash call and its result; a slice with `limit=1` returns
    // the call and `next_seq` at the result; the continuation must return
    // the result.
    use logbook_core::Event;
    use logbook_core::event::{AgentToolResult, AgentToolUse, ContentBlock};

    let h = Harness::new();
    let session = h.quick_session().await;
    let sid = id(&session).to_owned();
    h.post(&format!("/v1/sessions/{sid}/events"), &events_body(vec![user_message("build it")])).await.ok();
    let call = h.inject(
        &session,
        vec![Event::AgentToolUse(AgentToolUse {
            name: "bash".into(),
            input: logbook_core::Json::new(&json!({"command": "make"})),
            evaluated_permission: None,
            evaluation: None,
            session_thread_id: None,
        })],
    );
    let call_id: logbook_core::EventId = call[0].parse().unwrap();
    h.inject(
        &session,
        vec![Event::AgentToolResult(AgentToolResult {
            tool_use_id: call_id,
            content: Some(vec![ContentBlock::Text { text: "built".into() }]),
            is_error: Some(false),
        })],
    );
    let first = h.get(&format!("/x/v1/sessions/{sid}/slice?tools[]=bash&limit=1")).await.ok();
    assert_eq!(first["data"][0]["type"], "agent.tool_use", "{first}");
    let next = first["next_seq"].as_u64().expect("the first page is cut short");
    let rest = h.get(&format!("/x/v1/sessions/{sid}/slice?tools[]=bash&from_seq={next}")).await.ok();
    let types: Vec<&str> = rest["data"].as_array().unwrap().iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types, ["agent.tool_result"], "the continuation lost the call's result: {rest}");
}

#[tokio::test]
async fn x_a_slice_looks_up_a_bounded_number_of_earlier_calls_per_request() {
    // Goal: a result whose call lies before the scanned range makes the slice
    // look the call up (each lookup may read many records), so one request
    // makes at most MAX_CALL_LOOKUPS of them, then says where to continue;
    // continuing keeps the rest. Method: MAX_CALL_LOOKUPS + 1 bash calls,
    // then their results; a `tools[]=bash` slice from the first result.
    use logbook_core::Event;
    use logbook_core::event::{AgentToolResult, AgentToolUse};
    use logbook_server::api::x::slice::MAX_CALL_LOOKUPS;
    use logbook_store::Read;

    let h = Harness::new();
    let session = h.quick_session().await;
    let sid = id(&session).to_owned();
    let n = MAX_CALL_LOOKUPS + 1;
    let calls = h.inject(
        &session,
        (0..n)
            .map(|k| {
                Event::AgentToolUse(AgentToolUse {
                    name: "bash".into(),
                    input: logbook_core::Json::new(&json!({"command": format!("echo {k}")})),
                    evaluated_permission: None,
                    evaluation: None,
                    session_thread_id: None,
                })
            })
            .collect(),
    );
    let parsed: logbook_core::SessionId = sid.parse().unwrap();
    let from = h.state.store().head(parsed).unwrap().next.get();
    h.inject(
        &session,
        calls
            .iter()
            .map(|call| {
                Event::AgentToolResult(AgentToolResult {
                    tool_use_id: call.parse().unwrap(),
                    content: None,
                    is_error: Some(false),
                })
            })
            .collect(),
    );
    let query = "tools[]=bash&limit=10000&budget_tokens=1000000";
    let first = h.get(&format!("/x/v1/sessions/{sid}/slice?{query}&from_seq={from}")).await.ok();
    assert_eq!(first["data"].as_array().unwrap().len(), MAX_CALL_LOOKUPS, "one result per lookup, then the cap");
    let next = first["next_seq"].as_u64().expect("a page cut short by the lookup cap says where to continue");
    assert_eq!(next, from + MAX_CALL_LOOKUPS as u64);
    let rest = h.get(&format!("/x/v1/sessions/{sid}/slice?{query}&from_seq={next}")).await.ok();
    assert_eq!(rest["data"].as_array().unwrap().len(), 1, "{rest}");
    assert_eq!(rest["next_seq"], Value::Null, "{rest}");
}

#[tokio::test]
async fn x_a_slice_reads_a_bounded_number_of_records_per_request() {
    // Goal: a filter that matches little must not read a whole long session
    // in one request: a page stops after MAX_SCAN_RECORDS records and says
    // where to continue, and continuing reaches the end. Method: a session
    // one record longer than the cap, a filter that matches nothing.
    use logbook_server::api::x::slice::MAX_SCAN_RECORDS;
    let h = Harness::new();
    let session = h.quick_session().await;
    let sid = id(&session).to_owned();
    let message = |k: usize| {
        serde_json::from_value(json!({"type": "user.message", "content": [{"type": "text", "text": format!("m{k}")}]}))
            .unwrap()
    };
    let mut n = 0;
    while n <= MAX_SCAN_RECORDS {
        let batch = (MAX_SCAN_RECORDS + 1 - n).min(1000);
        h.inject(&session, (n..n + batch).map(message).collect());
        n += batch;
    }
    let page = h.get(&format!("/x/v1/sessions/{sid}/slice?types[]=session.error")).await.ok();
    assert_eq!(page["data"].as_array().unwrap().len(), 0);
    let next = page["next_seq"].as_u64().expect("a page cut short by the scan cap says where to continue");
    assert_eq!(next, MAX_SCAN_RECORDS as u64);
    let rest = h.get(&format!("/x/v1/sessions/{sid}/slice?types[]=session.error&from_seq={next}")).await.ok();
    assert_eq!(rest["next_seq"], Value::Null, "{rest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_decision_loop_is_still_bounded_by_the_step_limit() {
    // Defect (review of b1619a6, runner/mod.rs `Stopped::StepLimit`): a task
    // at its step limit (MAX_STEPS_PER_WAKE, 10,000) now yields and goes on
    // instead of stopping, so nothing bounds a decision loop that never
    // reaches `Wait` any more. Before, such a loop (a machine bug) cost at
    // most 10,000 steps per wake and the task ended; now the task appends
    // forever: the log (and disk) grows without bound and a core spins until
    // the server restarts. The budget loop the runner review found (unfixed:
    // `a_message_after_a_turn_that_crossed_the_budget_does_not_restart_turns`,
    // tests/tests/runner.rs) is such a loop: status_running, usage,
    // idle(budget_reached), over and over. Method: a session with a 1-cent
    // budget whose first turn cost more (injected), a runner (no model
    // needed: the budget is checked first), a message; the task must end
    // within a generous deadline (10,000 steps take a few seconds here).
    use logbook_core::event::{
        ModelUsage, SessionStatusIdle, SessionStatusRunning, SpanModelRequestEnd, SpanModelRequestStart, StopReason,
        UserMessage,
    };
    let h = Harness::new();
    let agent = h.agent("budget").await;
    let env = h.env("budget").await;
    let budget = json!({"type": "limit", "max_list_cost": {"amount": "1", "currency": "USD"}});
    let session = h
        .post("/v1/sessions", &json!({"agent": agent["id"], "environment_id": env["id"], "budget": budget}))
        .await
        .ok();
    let sid = id(&session).to_owned();
    let start = h.inject(
        &session,
        vec![
            logbook_core::Event::UserMessage(UserMessage {
                content: vec![logbook_core::event::ContentBlock::Text { text: "first".into() }],
            }),
            logbook_core::Event::SessionStatusRunning(SessionStatusRunning {}),
            logbook_core::Event::SpanModelRequestStart(SpanModelRequestStart {}),
        ],
    )[2]
    .parse()
    .unwrap();
    h.inject(
        &session,
        vec![
            logbook_core::Event::SpanModelRequestEnd(SpanModelRequestEnd {
                model_request_start_id: start,
                model_usage: ModelUsage { input_tokens: 1_000_000, ..Default::default() },
                is_error: Some(false),
            }),
            logbook_core::Event::SessionStatusIdle(SessionStatusIdle {
                stop_reason: StopReason::EndTurn,
                stop_details: None,
            }),
        ],
    );
    let runner = h.attach_runner();
    h.post(&format!("/v1/sessions/{sid}/events"), &events_body(vec![user_message("second")])).await.ok();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while runner.n_active() > 0 {
        if std::time::Instant::now() > deadline {
            let head = logbook_store::Read::head(h.state.store(), sid.parse().unwrap()).unwrap().next.get();
            panic!("the session's task still runs after 90 s: its log has {head} events and keeps growing");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_hosted_sessions_unstarted_input_is_not_archived_away_either() {
    // Defect (review of d0f2f61, sessions.rs `try_archive`): archive refuses
    // (retryably) while acknowledged input waits for the runner, except for
    // self-hosted sessions, on the premise that "its input waits for a worker
    // that may never come, nothing is about to start". But a self-hosted
    // session's turns are run by Logbook's runner like any other (only its
    // built-in tool calls go to a worker; behaviour digest §7.1:
    // orchestration stays on the server): a message starts a turn and a
    // model call at once, with no worker anywhere. So archiving a
    // self-hosted session right after a message is acknowledged ends it with
    // the message never answered, the race the commit closed for cloud
    // sessions. Method: first, that a self-hosted session's message starts a
    // turn with no worker (a runner without a model: the turn ends
    // retries_exhausted); then input acknowledged and not started yet, as in
    // `archive_waits_for_input_the_runner_has_not_started_on`.
    use logbook_core::Event;
    use logbook_core::event::UserMessage;

    let h = Harness::new();
    let agent = h.agent("hosted").await;
    let env = h.self_hosted_env("workers").await;
    let self_hosted = h.session(&agent, &env).await;
    let path = format!("/v1/sessions/{}", id(&self_hosted));
    let runner = h.attach_runner();
    // No worker polls, ever: the runner still takes the turn.
    h.post(&format!("{path}/events"), &events_body(vec![user_message("hello")])).await.ok();
    Harness::wait_runner_quiet(&runner, std::time::Duration::from_secs(10)).await;
    let kinds: Vec<String> =
        h.events(&self_hosted).await.iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect();
    assert!(kinds.iter().any(|k| k == "span.model_request_start"), "{kinds:?}");

    // Input acknowledged, its turn not recorded yet (the runner is not woken).
    h.inject(
        &self_hosted,
        vec![Event::UserMessage(UserMessage {
            content: vec![logbook_core::event::ContentBlock::Text { text: "again".into() }],
        })],
    );
    let archived = h.post_empty(&format!("{path}/archive")).await;
    assert_eq!(
        archived.header("x-should-retry"),
        Some("true"),
        "a self-hosted session was archived with input its runner was about to start on: {}",
        archived.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_next_wake_goes_on_from_what_its_last_task_read() {
    // Goal: a finished task's fold of the log is kept, covering exactly the
    // log as it then was, so the session's next wake reads only what was
    // appended since; an archived session's fold is dropped. (That a task
    // going on from a fold decides as a fresh one does is what `logbook
    // rerun` checks after every multi-turn end-to-end test.)
    use logbook_core::Seq;
    use logbook_store::Read as _;

    let h = Harness::new();
    let session = h.quick_session().await;
    let sid: logbook_core::SessionId = id(&session).parse().unwrap();
    let path = format!("/v1/sessions/{sid}");
    let log_bytes = || -> usize {
        let records = h.state.store().read(sid, Seq::ZERO, 10_000).unwrap();
        records.iter().map(|r| r.canonical().map_or(0, <[u8]>::len)).sum()
    };
    let runner = h.attach_runner();
    assert_eq!(runner.folded_usage(), (0, 0));
    // No model is configured: each turn ends `retries_exhausted`.
    h.post(&format!("{path}/events"), &events_body(vec![user_message("one")])).await.ok();
    Harness::wait_runner_quiet(&runner, std::time::Duration::from_secs(10)).await;
    let first = log_bytes();
    assert_eq!(runner.folded_usage(), (1, first));
    h.post(&format!("{path}/events"), &events_body(vec![user_message("two")])).await.ok();
    Harness::wait_runner_quiet(&runner, std::time::Duration::from_secs(10)).await;
    let second = log_bytes();
    assert!(second > first);
    assert_eq!(runner.folded_usage(), (1, second));
    let archived = h.post_empty(&format!("{path}/archive")).await;
    assert_eq!(archived.ok()["status"], "terminated");
    assert_eq!(runner.folded_usage(), (0, 0), "an archived session's fold is kept");
}

#[tokio::test]
async fn an_idle_session_whose_title_changed_can_be_archived() {
    // Goal (found by review of d0f2f61/3eab5ae/9184097, sessions.rs `log_has_work`,
    // server/src/api/sessions.rs:1115): `session.updated` counts as input that
    // starts work, so any update after the last idle (a title, metadata, an
    // agent's tools; only a budget change of a session paused at its budget
    // starts anything) makes every archive a retryable 409 "has input its
    // agent has not started on yet". The runner records no status for such an
    // update (the machine ignores it), so nothing ever clears it: the session
    // cannot be archived until a
    // new message runs a whole turn. Since 9184097 self-hosted sessions too.
    // Method: a runner attached (never needed: a title change wakes nothing),
    // an idle session, a title change, then archive.
    use logbook_core::Event;
    use logbook_core::event::{
        SessionStatusIdle, SessionStatusRunning, SpanModelRequestEnd, SpanModelRequestStart, StopReason, UserMessage,
    };

    let h = Harness::new();
    let session = h.quick_session().await;
    let path = format!("/v1/sessions/{}", id(&session));
    // A finished turn: the session is idle.
    h.inject(
        &session,
        vec![
            Event::UserMessage(UserMessage {
                content: vec![logbook_core::event::ContentBlock::Text { text: "hi".into() }],
            }),
            Event::SessionStatusRunning(SessionStatusRunning {}),
        ],
    );
    let start = h.inject(&session, vec![Event::SpanModelRequestStart(SpanModelRequestStart {})])[0].parse().unwrap();
    h.inject(
        &session,
        vec![
            Event::SpanModelRequestEnd(SpanModelRequestEnd {
                model_request_start_id: start,
                model_usage: Default::default(),
                is_error: Some(false),
            }),
            Event::SessionStatusIdle(SessionStatusIdle { stop_reason: StopReason::EndTurn, stop_details: None }),
        ],
    );
    let runner = h.attach_runner();
    h.post(&path, &json!({"title": "renamed"})).await.ok();
    // Had the update woken the runner, whatever it records is recorded by now.
    Harness::wait_runner_quiet(&runner, std::time::Duration::from_secs(10)).await;
    let archived = h.post_empty(&format!("{path}/archive")).await;
    assert_eq!(archived.ok()["status"], "terminated", "an idle session whose title changed cannot be archived");
}

#[tokio::test]
async fn a_self_hosted_session_waiting_on_a_worker_that_never_comes_can_be_archived() {
    // Goal (found by review of 9184097, server/src/api/sessions.rs:804 `try_archive`
    // now applies `log_has_work` to self-hosted sessions): a self-hosted
    // session idle `requires_action` on calls a worker runs holds a message
    // sent meanwhile until the worker answers (the machine supersedes only
    // calls no worker executes, so it decides `Wait`). `log_has_work` sees the
    // message after the last idle and every archive answers a retryable 409
    // "has input its agent has not started on yet; retry in a moment", for as
    // long as no worker comes, which is exactly when one archives such a
    // session. Before 9184097 this archive went ahead. Method: a runner
    // attached and woken by the message; a worker never polls.
    let h = Harness::new();
    let agent = h.agent("hosted").await;
    let env = h.self_hosted_env("workers").await;
    let session = h.session(&agent, &env).await;
    let path = format!("/v1/sessions/{}", id(&session));
    let running: logbook_core::Event = serde_json::from_value(json!({"type": "session.status_running"})).unwrap();
    let call: logbook_core::Event = serde_json::from_value(
        json!({"type": "agent.tool_use", "name": "bash", "input": {"command": "ls"}, "evaluated_permission": "allow"}),
    )
    .unwrap();
    let ids = h.inject(&session, vec![running, call]);
    let waiting =
        json!({"type": "session.status_idle", "stop_reason": {"type": "requires_action", "event_ids": [ids[1]]}});
    h.inject(&session, vec![serde_json::from_value(waiting).unwrap()]);
    let runner = h.attach_runner();
    h.post(&format!("{path}/events"), &events_body(vec![user_message("are you there?")])).await.ok();
    // The runner woke on the message and decided to wait for the worker.
    Harness::wait_runner_quiet(&runner, std::time::Duration::from_secs(10)).await;
    let retrieved = h.get(&path).await.ok();
    assert_eq!(retrieved["status"], "idle", "the session waits on its worker: {retrieved}");
    let archived = h.post_empty(&format!("{path}/archive")).await;
    assert_eq!(
        archived.ok()["status"],
        "terminated",
        "a self-hosted session whose input waits behind a worker that never comes cannot be archived"
    );
}

/// Goal: under a `limited` environment, a web tool's `allowed_domains` must
/// reach something the environment allows: the domain itself or a host
/// beneath it is enough, and the rule holds for a tools update too, not only
/// at create (behaviour digest §6.4).
#[tokio::test]
async fn web_tool_domains_are_checked_against_a_limited_environment_at_create_and_update() {
    let h = Harness::new();
    let env = h
        .post(
            "/v1/environments",
            &json!({"name": "limited", "config": {"type": "cloud",
                "networking": {"type": "limited", "allowed_hosts": ["example.com", "api.example.org"]}}}),
        )
        .await
        .ok();
    let fetch_only = |domains: Value| json!([{"type": "agent_toolset_20260401", "configs": [{"name": "web_fetch", "allowed_domains": domains}]}]);
    let agent = h
        .agent_with(&json!({"name": "fetcher", "model": "claude-sonnet-4-6",
            "tools": fetch_only(json!(["example.com", "example.org"]))}))
        .await;
    // example.com is allowed; example.org is not, but api.example.org beneath it is.
    let session = h.post("/v1/sessions", &json!({"agent": id(&agent), "environment_id": id(&env)})).await.ok();
    let path = format!("/v1/sessions/{}", id(&session));
    let refused = h.post(&path, &json!({"agent": {"tools": fetch_only(json!(["example.com", "other.net"]))}})).await;
    let body = refused.invalid();
    assert!(body["error"]["message"].as_str().unwrap().contains("allowed_domains[1] \"other.net\""), "{body}");
    // A disabled web tool is not checked.
    let disabled = json!([{"type": "agent_toolset_20260401",
        "configs": [{"name": "web_fetch", "enabled": false, "allowed_domains": ["other.net"]}]}]);
    h.post(&path, &json!({"agent": {"tools": disabled}})).await.ok();
}

/// Review (stop 20): behaviour digest §3.2 — skills are loaded with `read`,
/// so clearing the tools while skills stay effective is refused. Session
/// create refuses it for `agent_with_overrides`, but a session update of
/// `agent.tools` replaces the tools without the check, leaving the session's
/// skills with no `read` tool to load them.
#[tokio::test]
async fn updating_tools_to_nothing_while_skills_are_effective_is_refused() {
    let h = Harness::new();
    let agent = h
        .agent_with(&json!({
            "name": "with-skills",
            "model": "claude-sonnet-4-6",
            "tools": [{"type": "agent_toolset_20260401"}],
            "skills": [{"type": "anthropic", "skill_id": "xlsx"}],
        }))
        .await;
    let env = h.env("e").await;
    let session = h.post("/v1/sessions", &json!({"agent": id(&agent), "environment_id": id(&env)})).await.ok();
    let path = format!("/v1/sessions/{}", id(&session));
    let resp = h.post(&path, &json!({"agent": {"tools": []}})).await;
    assert_eq!(
        resp.status.as_u16(),
        400,
        "clearing tools by update while the agent's skills stay effective must be refused, got {}: {}",
        resp.status,
        resp.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runners_writes_to_the_object_never_make_an_update_or_delete_conflict() {
    // Goal: the runner records status and usage on the session object as it
    // goes (`set_status`, `set_usage`); those are the server's own writes,
    // so a client's update or delete that raced one is made again, not
    // answered 409 (which raw-HTTP clients would have to retry); nor does
    // the runner's own write give up while the client's is in flight.
    // Method: a thread records a new usage every 200 µs, as a busy runner
    // would at most, while 100 updates and then a delete go through; the
    // thread's writes all succeed until the session is gone.
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use logbook_server::api::sessions::{UsageView, set_usage};

    let h = Harness::new();
    let session = h.quick_session().await;
    let sid: logbook_core::SessionId = id(&session).parse().unwrap();
    let tenant = h.tenant(&h.key_a);
    let state = h.state.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut writes = 0u64;
            let mut failure = None;
            while !stop.load(Ordering::Relaxed) {
                writes += 1;
                let usage = UsageView {
                    input_tokens: writes,
                    output_tokens: 0,
                    cache_read_input_tokens: 0,
                    cache_creation_input_tokens: 0,
                    active_seconds: 0.0,
                    list_cost_cents: None,
                    web_search_requests: 0,
                    web_fetch_requests: 0,
                };
                // Ends once the session is deleted.
                if let Err(err) = set_usage(state.store(), &tenant, sid, usage) {
                    failure = Some(err.to_string());
                    break;
                }
                // Pacing, not synchronisation: a runner writes a few times a turn.
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            (writes, failure)
        })
    };
    for n in 0..100 {
        let updated = h.post(&format!("/v1/sessions/{sid}"), &json!({"title": format!("title {n}")})).await.ok();
        assert_eq!(updated["title"], format!("title {n}"));
    }
    h.delete(&format!("/v1/sessions/{sid}")).await.ok();
    stop.store(true, Ordering::Relaxed);
    let (writes, failure) = writer.join().unwrap();
    assert!(writes > 1, "the writer ran alongside ({writes} writes, ended by {failure:?})");
    if let Some(failure) = failure {
        assert!(failure.contains("not_found"), "the writer's own write failed: {failure}");
    }
    h.get(&format!("/v1/sessions/{sid}")).await.not_found();
}
