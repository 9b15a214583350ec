//! Discrepancies between the server and the references found by the API
//! review (managed-agents-api.md, managed-agents-behaviour.md). Each test
//! asserts what the reference says and fails until the server does it.

use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use crate::harness::{Harness, id};

/// A budget in the shape the SDK sends.
fn budget(amount: &str) -> Value {
    json!({"type": "limit", "max_list_cost": {"amount": amount, "currency": "USD"}})
}

/// API digest §2.4 (SessionUpdate): "`budget?` (... unpriced model → `model_not_budgetable`)";
/// behaviour digest §12: "Models without list price → 400 at create, or pause + update
/// rejected later."
///
/// Logbook prices only the models in `runner::pricing::PRICES`; any other id
/// (a local backend's, a family it does not know) has no list price, so the
/// runner's budget check always sees a cost of 0 and never pauses. A budget on
/// such a session must be refused at create, not accepted and silently ignored.
#[tokio::test]
async fn a_budget_on_a_model_without_a_list_price_is_refused_at_create() {
    let h = Harness::new();
    let agent = h.agent_with(&json!({"name": "local", "model": "my-local-model"})).await;
    let env = h.env("e").await;
    let resp = h
        .post("/v1/sessions", &json!({"agent": id(&agent), "environment_id": id(&env), "budget": budget("2500")}))
        .await;
    assert_eq!(
        resp.status.as_u16(),
        400,
        "a budget on an unpriced model must be refused (model_not_budgetable), got {}: {}",
        resp.status,
        resp.text()
    );
    let body = resp.invalid();
    assert_eq!(body["error"]["details"]["error_code"], "model_not_budgetable", "{body}");
}

/// Behaviour digest §6.6 (Billing): "Worked example: 1 h, Opus 5, 50k in / 15k out =
/// $0.705; with 40k cache reads $0.525." (and §16: "$0.705 / $0.525 | worked pricing
/// example (1 h Opus 5, 50k in, 15k out; 40k cached)").
///
/// That is Opus 5 at $5 / $25 per million tokens (cache reads at 0.1x input) plus
/// $0.08 per running hour. `runner::pricing::PRICES` has no row for `claude-opus-5`,
/// so it falls through to the generic `claude-opus` row at
/// $15 / $75: the session's `usage.list_cost` reads three times the list price and a
/// budget pauses an Opus 5 session at a third of what it allows.
#[test]
fn opus_5_is_priced_as_the_worked_example_says() {
    use logbook_replay::Totals;
    use logbook_server::runner::pricing::list_cost_cents;
    let hour = 3_600_000_000;
    let plain = Totals { input_tokens: 50_000, output_tokens: 15_000, active_micros: hour, ..Totals::default() };
    // 40k of the 50k input tokens read from the cache: 10k uncached.
    let cached = Totals {
        input_tokens: 10_000,
        cache_read_input_tokens: 40_000,
        output_tokens: 15_000,
        active_micros: hour,
        ..Totals::default()
    };
    // $0.705 and $0.525, in cents rounded up.
    assert_eq!(
        (list_cost_cents("claude-opus-5", &plain), list_cost_cents("claude-opus-5", &cached)),
        (Some(71), Some(53)),
        "list cost of claude-opus-5 for the documented worked example"
    );
}

/// Behaviour digest §3.2 (agent_with_overrides): "`null`/`[]` → cleared (but `model:null`
/// → 400 `agent_model_required`; clearing `tools` while skills are effective → 400 because
/// skills need `read`; ...)".
///
/// `AgentOverrides::apply` clears the tools and checks only the MCP servers against
/// them, so a session whose agent has skills starts with no `read` tool to load them.
#[tokio::test]
async fn overriding_tools_to_nothing_while_skills_are_effective_is_refused() {
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
    for cleared in [json!([]), Value::Null] {
        let body = json!({
            "agent": {"type": "agent_with_overrides", "id": id(&agent), "tools": cleared},
            "environment_id": id(&env),
        });
        let resp = h.post("/v1/sessions", &body).await;
        assert_eq!(
            resp.status.as_u16(),
            400,
            "clearing tools (tools: {cleared}) while the agent's skills stay effective must be refused, got {}: {}",
            resp.status,
            resp.text()
        );
        resp.invalid();
    }
}

/// API digest §1 (Pagination): "the SDK auto-pages by re-sending the same query plus
/// `page=<next_page>` until `next_page` is null/empty"; §2.6: `GET
/// /v1/sessions/{sid}/resources` takes `limit`, `page`.
///
/// The resources list's cursor is the id of the page's last resource, and the next
/// page starts after that id's position in the current list. Once that resource
/// is deleted (files can be removed from a running session at any time), the id
/// has no position: the page comes back empty with a null `next_page`, so the
/// client's walk ends and every later resource is skipped.
#[tokio::test]
async fn a_resource_page_whose_cursor_resource_was_deleted_goes_on_with_the_rest() {
    let h = Harness::new();
    let session = h.quick_session().await;
    let base = format!("/v1/sessions/{}/resources", id(&session));
    let mut attached = Vec::new();
    for name in ["a.csv", "b.csv", "c.csv"] {
        let file = h.upload(name, "text/csv", b"x,y\n1,2\n").await;
        h.tick(1);
        attached.push(h.post(&base, &json!({"type": "file", "file_id": id(&file)})).await.ok());
    }
    let first = h.get(&format!("{base}?limit=1")).await.ok();
    assert_eq!(crate::harness::ids(&first), [id(&attached[0]).to_owned()]);
    let cursor = first["next_page"].as_str().unwrap().to_owned();
    // The first page's resource goes before the client asks for the second.
    h.delete(&format!("{base}/{}", id(&attached[0]))).await.ok();
    let second = h.get(&format!("{base}?limit=1&page={cursor}")).await.ok();
    assert_eq!(
        crate::harness::ids(&second),
        [id(&attached[1]).to_owned()],
        "the page after the cursor must continue with the next resource: {second}"
    );
    assert!(second["next_page"].is_string(), "one more resource remains: {second}");
}

/// API digest §1 (Pagination): "the SDK auto-pages by re-sending the same query plus
/// `page=<next_page>` until `next_page` is null/empty"; §2.5: the events list takes
/// `created_at[gt|gte|lt|lte]` (compared to `processed_at`).
///
/// In ascending order, a full page checks whether more events follow with
/// `more_public_after` (or a type scan), which ignores the `created_at` range: a
/// page that holds the last match still gets a `next_page`, and the client pays
/// for a further request that can only come back empty. The other lists (and
/// the descending events list) probe with the whole filter.
#[tokio::test]
async fn an_events_page_holding_the_last_match_of_a_time_range_has_no_next_page() {
    let h = Harness::new();
    let session = h.quick_session().await;
    let path = format!("/v1/sessions/{}/events", id(&session));
    let mut processed = Vec::new();
    for text in ["a", "b", "c"] {
        h.tick(1000);
        let echo = h.post(&path, &crate::harness::events_body(vec![crate::harness::user_message(text)])).await.ok();
        processed.push(echo["data"][0]["processed_at"].as_str().unwrap().to_owned());
    }
    // Exactly two events are before the third: a page of two holds them all.
    let query = format!("{path}?limit=2&order=asc&created_at%5Blt%5D={}", processed[2]);
    let page = h.get(&query).await.ok();
    assert_eq!(page["data"].as_array().unwrap().len(), 2, "{page}");
    let desc = h.get(&format!("{path}?limit=2&order=desc&created_at%5Blt%5D={}", processed[2])).await.ok();
    assert_eq!(desc["next_page"], Value::Null, "descending: nothing more matches: {desc}");
    assert_eq!(page["next_page"], Value::Null, "ascending: nothing more matches the range: {page}");
}

/// API digest §3.3 (Session): "REQ ... `outcome_evaluations` (one per define_outcome)";
/// "`outcome_evaluations[]`: `{type:"outcome_evaluation", outcome_id (outc_...),
/// description, iteration (0-based), result (pending|running|evaluating|...)`";
/// behaviour digest §10: "Session object `outcome_evaluations[].result` shows
/// `pending|running|evaluating` until done."
///
/// `StoredSession::to_wire` writes `"outcome_evaluations": []` whatever the log
/// holds, so an accepted `user.define_outcome` never shows on the session.
#[tokio::test]
async fn a_defined_outcome_shows_in_the_sessions_outcome_evaluations() {
    let h = Harness::new();
    let session = h.quick_session().await;
    let outcome = json!({"type": "user.define_outcome", "description": "a report",
        "rubric": {"type": "text", "content": "has a title"}});
    let echo = h
        .post(&format!("/v1/sessions/{}/events", id(&session)), &crate::harness::events_body(vec![outcome]))
        .await
        .ok();
    let outcome_id = echo["data"][0]["outcome_id"].as_str().unwrap().to_owned();
    let retrieved = h.get(&format!("/v1/sessions/{}", id(&session))).await.ok();
    let evaluations = retrieved["outcome_evaluations"].as_array().unwrap();
    assert_eq!(evaluations.len(), 1, "one evaluation per user.define_outcome: {retrieved}");
    assert_eq!(evaluations[0]["type"], "outcome_evaluation");
    assert_eq!(evaluations[0]["outcome_id"], outcome_id.as_str());
    assert_eq!(evaluations[0]["description"], "a report");
}

/// API digest §3.1 (Multiagent): roster entry = "agent id string | `{type:"agent", id,
/// version?}` | ... Responses resolve refs to `{type:"agent", id, version}`"; behaviour
/// digest §9: "agent id (pinned to latest at coordinator save) ... Roster versions are
/// snapshotted when the coordinator is saved."
///
/// `tools::resolve_multiagent` turns a bare id into `{type: "agent", id}` and keeps
/// `{type: "agent", id}` as given: no version is pinned (nor is the agent looked
/// up), so the response lacks the `version` the SDK's roster model carries, and
/// a later update of the member silently changes what the coordinator runs.
#[tokio::test]
async fn a_coordinator_roster_pins_each_member_to_its_version_at_save() {
    let h = Harness::new();
    // Two members, one named by a bare id and one by `{type: "agent", id}`:
    // the same agent twice is refused (the roster's entries are distinct).
    let member = h.agent("member").await;
    let other = h.agent("other").await;
    let coordinator = h
        .agent_with(&json!({
            "name": "lead",
            "model": "claude-sonnet-4-6",
            "multiagent": {"type": "coordinator", "agents": [id(&member), {"type": "agent", "id": id(&other)}]},
        }))
        .await;
    let pinned = |agent: &Value| json!({"type": "agent", "id": id(agent), "version": 1});
    assert_eq!(coordinator["multiagent"]["agents"], json!([pinned(&member), pinned(&other)]), "{coordinator}");
}

/// Behaviour digest §6.4 (Networking): "Newer doc: a `limited` cloud environment's
/// `allowed_hosts` also applies to them [web_search/web_fetch] (session create/update →
/// 400 if an enabled web tool's `allowed_domains` entry isn't within `allowed_hosts`; at
/// runtime fetch → `url_not_allowed`, search omits results)".
///
/// Session create checks only the MCP servers against a limited environment
/// (`mcp::check_environment`); a web tool restricted to domains the environment
/// never lets through is accepted, and every call of it then fails at runtime.
#[tokio::test]
async fn a_web_tool_domain_outside_a_limited_environments_hosts_is_refused_at_create() {
    let h = Harness::new();
    let env = h
        .post(
            "/v1/environments",
            &json!({"name": "limited", "config": {"type": "cloud",
                "networking": {"type": "limited", "allowed_hosts": ["example.com"]}}}),
        )
        .await
        .ok();
    let agent = h
        .agent_with(&json!({
            "name": "fetcher",
            "model": "claude-sonnet-4-6",
            "tools": [{"type": "agent_toolset_20260401",
                "configs": [{"name": "web_fetch", "allowed_domains": ["other.org"]}]}],
        }))
        .await;
    let resp = h.post("/v1/sessions", &json!({"agent": id(&agent), "environment_id": id(&env)})).await;
    assert_eq!(
        resp.status.as_u16(),
        400,
        "web_fetch.allowed_domains [other.org] is outside the environment's allowed_hosts [example.com], got {}: {}",
        resp.status,
        resp.text()
    );
    resp.invalid();
}

/// Behaviour digest §8.3 (web_fetch / web_search config): "`allowed_domains` or
/// `blocked_domains` (... plain ASCII hostnames, subdomains covered, no IPs, no bare
/// TLD/public suffix/single label, no `localhost`/`.local`/...)"; "Violations → 400
/// `invalid_request_error` naming list and index".
///
/// `check_tool_extras` refuses single labels and reserved names but not a public
/// suffix of more than one label: `co.uk` (every UK company's domain) is accepted
/// as if it were one registrable domain.
#[tokio::test]
async fn a_public_suffix_is_refused_as_a_web_tool_domain() {
    let h = Harness::new();
    for domain in ["co.uk", "org.uk"] {
        let body = json!({
            "name": "fetcher",
            "model": "claude-sonnet-4-6",
            "tools": [{"type": "agent_toolset_20260401",
                "configs": [{"name": "web_fetch", "allowed_domains": [domain]}]}],
        });
        let resp = h.post("/v1/agents", &body).await;
        assert_eq!(
            resp.status.as_u16(),
            400,
            "allowed_domains [{domain}] is a public suffix, got {}: {}",
            resp.status,
            resp.text()
        );
        resp.invalid();
    }
}

/// Behaviour digest §9 (Multiagent threads): "Coordinator agent has `multiagent.agents`
/// (1–**20** distinct entries): agent id ..., `{type:"agent",id,version}`,
/// `{type:"self"}` (≤1), and `{type:"advisor", model}` (≤1, reserved name
/// `anthropic.advisor`). Depth limit **1** (referencing an agent with its own roster →
/// validation error)."
///
/// `tools::resolve_multiagent` checks each entry's shape and the count only: a
/// roster naming `self` twice, the same agent twice, two advisors, or an agent
/// that is itself a coordinator is stored. (The existing
/// `agents::multiagent_must_be_a_known_shape` even expects 20 `self` entries to be
/// accepted, which the reference's "≤1" contradicts.)
#[tokio::test]
async fn a_coordinator_roster_holds_distinct_entries_one_self_one_advisor_and_no_nested_roster() {
    let h = Harness::new();
    let member = h.agent("member").await;
    let nested = h
        .agent_with(&json!({"name": "sub-lead", "model": "claude-sonnet-4-6",
            "multiagent": {"type": "coordinator", "agents": [id(&member)]}}))
        .await;
    let advisor = json!({"type": "advisor", "model": "claude-opus-4-6"});
    let cases = [
        ("self twice", json!([{"type": "self"}, {"type": "self"}])),
        ("the same agent twice", json!([id(&member), id(&member)])),
        ("two advisors", json!([advisor, advisor])),
        ("a member with its own roster", json!([id(&nested)])),
    ];
    let mut accepted = Vec::new();
    for (case, roster) in cases {
        let body = json!({"name": "lead", "model": "claude-sonnet-4-6",
            "multiagent": {"type": "coordinator", "agents": roster}});
        let resp = h.post("/v1/agents", &body).await;
        if resp.status.as_u16() != 400 {
            accepted.push(format!("{case}: {}", resp.status));
        }
    }
    assert!(accepted.is_empty(), "rosters the reference refuses were accepted:\n{}", accepted.join("\n"));
}
