//! `/v1/sessions/{id}/events` (API digest §2.5, §4; behaviour digest §3.5,
//! §4): sending every input type with its placement and reference rules,
//! and listing with type, time and order filters and cursors.
//!
//! Server-produced events (tool uses, agent messages, internal `x.*` events)
//! are appended straight to the store, as the runner would append them.

use axum::http::Method;
use logbook_core::Event;
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use crate::harness::{Auth, Harness, events_body, id, missing_event_id, user_message};

fn event(value: Value) -> Event {
    serde_json::from_value(value).unwrap()
}

fn tool_use(permission: &str) -> Event {
    event(
        json!({"type": "agent.tool_use", "name": "bash", "input": {"command": "ls"}, "evaluated_permission": permission}),
    )
}

fn custom_tool_use() -> Event {
    event(json!({"type": "agent.custom_tool_use", "name": "get_weather", "input": {"city": "Paris"}}))
}

fn system_message(text: &str) -> Value {
    json!({"type": "system.message", "content": [{"type": "text", "text": text}]})
}

fn internal_events() -> Vec<Event> {
    vec![
        event(json!({"type": "x.workspace_delta", "tool_use_id": null, "changes": []})),
        event(json!({"type": "x.fork_origin", "parent_session_id": "sesn_01JQ8Z7M3P5R7T9V1X3Z5B7D0E", "parent_seq": 0,
            "parent_chain_hash": "00".repeat(32)})),
    ]
}

/// The value without object entries whose value is null (optional fields
/// may be echoed as null).
fn strip_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            Value::Object(map.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), strip_nulls(v))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(strip_nulls).collect()),
        other @ (Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_)) => other.clone(),
    }
}

fn types_of(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect()
}

fn ids_of(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| id(e).to_owned()).collect()
}

#[tokio::test]
async fn send_each_input_type() {
    // Goal: every input type is accepted where it applies and echoed in
    // `data` with a server id, in order, and then listed with the same ids:
    // user.message (text, image, document), user.interrupt,
    // user.tool_confirmation, user.custom_tool_result, system.message,
    // user.define_outcome on a cloud session, user.tool_result on a
    // self-hosted one. Method: inject the tool uses being answered, send, list.
    let h = Harness::new();
    let session = h.quick_session().await;
    let path = format!("/v1/sessions/{}/events", id(&session));
    let injected = h.inject(&session, vec![tool_use("ask"), custom_tool_use()]);
    let batch = vec![
        json!({"type": "user.message", "content": [
            {"type": "text", "text": "look"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJ"}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "notes"}, "title": "n"},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQ="}}
        ]}),
        json!({"type": "user.interrupt"}),
        json!({"type": "user.tool_confirmation", "tool_use_id": injected[0], "result": "deny", "deny_message": "no"}),
        json!({"type": "user.custom_tool_result", "custom_tool_use_id": injected[1],
            "content": [{"type": "text", "text": "sunny"}], "is_error": false}),
        system_message("be brief"),
    ];
    let echoed = h.post(&path, &events_body(batch.clone())).await.ok();
    let data = echoed["data"].as_array().unwrap();
    assert_eq!(types_of(data), types_of(&batch));
    for (sent, echo) in batch.iter().zip(data) {
        assert!(id(echo).starts_with("sevt_"), "{echo}");
        assert!(echo.as_object().unwrap().contains_key("processed_at"), "{echo}");
        for (key, value) in sent.as_object().unwrap() {
            assert_eq!(strip_nulls(&echo[key]), strip_nulls(value), "echo keeps {key}");
        }
    }
    let outcome =
        json!({"type": "user.define_outcome", "description": "d", "rubric": {"type": "text", "content": "r"}});
    let echoed_outcome = h.post(&path, &events_body(vec![outcome])).await.ok();
    assert!(echoed_outcome["data"][0]["outcome_id"].as_str().is_some_and(|o| o.starts_with("outc_")));
    assert_eq!(echoed_outcome["data"][0]["max_iterations"], 3, "default max_iterations");

    let listed = h.events(&session).await;
    let mut expected_ids = injected.clone();
    expected_ids.extend(ids_of(data));
    expected_ids.extend(ids_of(echoed_outcome["data"].as_array().unwrap()));
    assert_eq!(ids_of(&listed), expected_ids);
    assert_eq!(listed[2..7].to_vec(), data.clone(), "the list shows what the send echoed");

    // user.tool_result, on a self-hosted session.
    let agent = h.agent("a").await;
    let env = h.self_hosted_env("w").await;
    let hosted = h.session(&agent, &env).await;
    let tool = h.inject(&hosted, vec![tool_use("allow")]);
    let batch = vec![
        json!({"type": "user.tool_result", "tool_use_id": tool[0], "content": [{"type": "text", "text": "a\nb"}], "is_error": false}),
        system_message("note"),
    ];
    let echoed = h.post(&format!("/v1/sessions/{}/events", id(&hosted)), &events_body(batch)).await.ok();
    assert_eq!(types_of(echoed["data"].as_array().unwrap()), ["user.tool_result", "system.message"]);
    // A second result for the same call is refused.
    let again = json!({"type": "user.tool_result", "tool_use_id": tool[0]});
    h.post(&format!("/v1/sessions/{}/events", id(&hosted)), &events_body(vec![again])).await.invalid();
}

#[tokio::test]
async fn system_message_placement() {
    // Goal: system.message is at most one per request, must be the last
    // event, and must directly follow a user.message, user.tool_result or
    // user.custom_tool_result; it holds text only (behaviour digest §4.1).
    // Method: each placement against one session; refused sends append nothing.
    let h = Harness::new();
    let session = h.quick_session().await;
    let path = format!("/v1/sessions/{}/events", id(&session));
    let custom = h.inject(&session, vec![custom_tool_use()]);
    let result = json!({"type": "user.custom_tool_result", "custom_tool_use_id": custom[0]});
    let refused: Vec<(&str, Vec<Value>)> = vec![
        ("alone", vec![system_message("s")]),
        ("first", vec![system_message("s"), user_message("u")]),
        ("not last", vec![user_message("u"), system_message("s"), user_message("u2")]),
        ("two", vec![user_message("u"), system_message("s"), system_message("t")]),
        (
            "two, each after a message",
            vec![user_message("u"), system_message("s"), user_message("u2"), system_message("t")],
        ),
        ("after an interrupt", vec![user_message("u"), json!({"type": "user.interrupt"}), system_message("s")]),
        (
            "image content",
            vec![
                user_message("u"),
                json!({"type": "system.message", "content": [
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]}),
            ],
        ),
        ("empty content", vec![user_message("u"), json!({"type": "system.message", "content": []})]),
    ];
    let before = h.events(&session).await.len();
    for (case, batch) in refused {
        let resp = h.post(&path, &events_body(batch)).await;
        assert_eq!(resp.status.as_u16(), 400, "{case} must be refused: {}", resp.text());
        resp.invalid();
    }
    assert_eq!(h.events(&session).await.len(), before, "refused sends append nothing");
    h.post(&path, &events_body(vec![user_message("u"), system_message("s")])).await.ok();
    h.post(&path, &events_body(vec![result, system_message("s")])).await.ok();
}

#[tokio::test]
async fn answers_must_reference_open_calls() {
    // Goal: a tool confirmation or custom tool result naming an event that is
    // not an open call of this session is 400: a missing id, an id of another
    // kind of event, a call of another session, a call that does not await
    // confirmation, a call already answered; deny_message only with deny.
    // Method: inject calls and send wrong answers; nothing is appended.
    let h = Harness::new();
    let session = h.quick_session().await;
    let other = h.quick_session().await;
    let path = format!("/v1/sessions/{}/events", id(&session));
    let calls = h.inject(&session, vec![tool_use("ask"), tool_use("allow"), custom_tool_use()]);
    let other_calls = h.inject(&other, vec![tool_use("ask"), custom_tool_use()]);
    let message =
        h.post(&path, &events_body(vec![user_message("hi")])).await.ok()["data"][0]["id"].as_str().unwrap().to_owned();
    let confirm = |target: &str| json!({"type": "user.tool_confirmation", "tool_use_id": target, "result": "allow"});
    let answer = |target: &str| json!({"type": "user.custom_tool_result", "custom_tool_use_id": target});
    let missing = missing_event_id();
    let refused: Vec<(&str, Value)> = vec![
        ("confirm a missing id", confirm(&missing)),
        ("confirm a malformed id", confirm("toolu_123")),
        ("confirm a user.message", confirm(&message)),
        ("confirm a custom tool use", confirm(&calls[2])),
        ("confirm another session's call", confirm(&other_calls[0])),
        ("confirm a call that was allowed", confirm(&calls[1])),
        ("answer a missing id", answer(&missing)),
        ("answer a built-in tool use", answer(&calls[0])),
        ("answer another session's call", answer(&other_calls[1])),
        (
            "deny_message with allow",
            json!({"type": "user.tool_confirmation", "tool_use_id": calls[0], "result": "allow", "deny_message": "x"}),
        ),
        (
            "result neither allow nor deny",
            json!({"type": "user.tool_confirmation", "tool_use_id": calls[0], "result": "maybe"}),
        ),
    ];
    let before = h.events(&session).await.len();
    for (case, input) in refused {
        let resp = h.post(&path, &events_body(vec![input])).await;
        assert_eq!(resp.status.as_u16(), 400, "{case} must be refused: {}", resp.text());
        resp.invalid();
    }
    assert_eq!(h.events(&session).await.len(), before, "refused sends append nothing");
    // The right answers work once; an MCP tool use that asks can be confirmed too.
    let mcp = h.inject(
        &session,
        vec![event(json!({"type": "agent.mcp_tool_use", "name": "create_issue",
        "mcp_server_name": "gh", "input": {}, "evaluated_permission": "ask"}))],
    );
    h.post(&path, &events_body(vec![confirm(&calls[0]), answer(&calls[2]), confirm(&mcp[0])])).await.ok();
    h.post(&path, &events_body(vec![confirm(&calls[0])])).await.invalid();
    h.post(&path, &events_body(vec![answer(&calls[2])])).await.invalid();
}

#[tokio::test]
async fn tool_result_only_on_self_hosted_and_no_redacted_input() {
    // Goal: user.tool_result on a cloud session is 400 even for a real tool
    // use; a redacted block in a user event is 400 (behaviour digest §4.1);
    // server-produced and unknown types are 400. Method: send each.
    let h = Harness::new();
    let session = h.quick_session().await;
    let path = format!("/v1/sessions/{}/events", id(&session));
    let calls = h.inject(&session, vec![tool_use("allow")]);
    let refused = [
        json!({"type": "user.tool_result", "tool_use_id": calls[0], "content": [{"type": "text", "text": "x"}]}),
        json!({"type": "user.message", "content": [{"type": "redacted"}]}),
        json!({"type": "user.message", "content": [{"type": "text", "text": "a"}, {"type": "redacted"}]}),
        json!({"type": "user.custom_tool_result", "custom_tool_use_id": missing_event_id(), "content": [{"type": "redacted"}]}),
        json!({"type": "user.message", "content": []}),
        json!({"type": "user.message"}),
        // Only blank text: the model would be sent nothing (it refuses blank text blocks).
        json!({"type": "user.message", "content": [{"type": "text", "text": ""}, {"type": "text", "text": " \n\t"}]}),
        json!({"type": "system.message", "content": [{"type": "text", "text": "  "}]}),
        json!({"type": "user.message", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/tiff", "data": "x"}}]}),
        json!({"type": "user.message", "content": [{"type": "search_result", "source": "https://x", "title": "t",
            "content": [{"type": "text", "text": "x"}], "citations": {"enabled": false}}]}),
        json!({"type": "agent.message", "content": [{"type": "text", "text": "x"}]}),
        json!({"type": "session.status_idle", "stop_reason": {"type": "end_turn"}}),
        json!({"type": "x.workspace_delta", "changes": []}),
        json!({"type": "user.shout"}),
        json!({"content": []}),
        json!({"type": "user.define_outcome", "description": "d", "rubric": {"type": "text", "content": "r"}, "max_iterations": 21}),
        json!({"type": "user.define_outcome", "description": "", "rubric": {"type": "text", "content": "r"}}),
    ];
    for input in refused {
        let resp = h.post(&path, &events_body(vec![input.clone()])).await;
        assert_eq!(resp.status.as_u16(), 400, "{input} must be refused: {}", resp.text());
        resp.invalid();
    }
    assert_eq!(h.events(&session).await.len(), 1, "only the injected tool use");
}

#[tokio::test]
async fn batch_size_limits() {
    // Goal: a send carries 1 to 100 events: 101 or none is 400, 100 is fine,
    // and a batch is all or nothing. Method: send each size; count the log.
    let h = Harness::new();
    let session = h.quick_session().await;
    let path = format!("/v1/sessions/{}/events", id(&session));
    let many = |n: usize| (0..n).map(|i| user_message(&format!("m{i}"))).collect::<Vec<_>>();
    h.post(&path, &events_body(many(101))).await.invalid();
    h.post(&path, &events_body(vec![])).await.invalid();
    h.post(&path, &json!({})).await.invalid();
    h.post(&path, &json!({"events": "user.message"})).await.invalid();
    let mut mixed = many(3);
    mixed.push(json!({"type": "user.message", "content": []}));
    h.post(&path, &events_body(mixed)).await.invalid();
    assert!(h.events(&session).await.is_empty());
    let echoed = h.post(&path, &events_body(many(100))).await.ok();
    assert_eq!(echoed["data"].as_array().unwrap().len(), 100);
    assert_eq!(h.events(&session).await.len(), 100);
    h.post("/v1/sessions/sesn_01JQ8Z7M3P5R7T9V1X3Z5B7D0E/events", &events_body(many(1))).await.not_found();
}

/// A session whose log is, in order: user.message "a" (t+1s); agent.message,
/// x.workspace_delta, session.status_idle (t+2s); user.message "b" (t+3s);
/// x.fork_origin (t+4s). Returns the session and the public events.
async fn history(h: &Harness) -> (Value, Vec<Value>) {
    let session = h.quick_session().await;
    let path = format!("/v1/sessions/{}/events", id(&session));
    h.tick(1000);
    h.post(&path, &events_body(vec![user_message("a")])).await.ok();
    h.tick(1000);
    let internal = internal_events();
    h.inject(
        &session,
        vec![
            event(json!({"type": "agent.message", "content": [{"type": "text", "text": "hello"}]})),
            internal[0].clone(),
            event(json!({"type": "session.status_idle", "stop_reason": {"type": "end_turn"}})),
        ],
    );
    h.tick(1000);
    h.post(&path, &events_body(vec![user_message("b")])).await.ok();
    h.tick(1000);
    h.inject(&session, vec![internal[1].clone()]);
    let listed = h.events(&session).await;
    (session, listed)
}

/// Follows next_page from `query` and returns every event seen.
async fn walk(h: &Harness, session: &Value, query: &str) -> Vec<Value> {
    let base = format!("/v1/sessions/{}/events?{query}", id(session));
    let mut url = base.clone();
    let mut seen = Vec::new();
    for _ in 0..20 {
        let page = h.get(&url).await.ok();
        seen.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next_page"].as_str() {
            Some(cursor) => url = format!("{base}&page={cursor}"),
            None => return seen,
        }
    }
    panic!("more than 20 pages for {query}");
}

#[tokio::test]
async fn list_filters_orders_and_cursors() {
    // Goal: the history lists public events only, in order; types[] filters
    // (bracket and plain forms); order=desc reverses; created_at[gt|gte|lt|lte]
    // compare processed_at; limit is 1..1000; cursors walk every page, end
    // with a null next_page even when only internal events remain, and are
    // tied to their order (API digest §2.5; behaviour digest §4.3). Method: a
    // known history (see `history`) listed every way.
    let h = Harness::new();
    let (session, all) = history(&h).await;
    assert_eq!(types_of(&all), ["user.message", "agent.message", "session.status_idle", "user.message"]);
    assert!(all.iter().all(|e| !e["type"].as_str().unwrap().starts_with("x.")), "no internal events");
    let base = format!("/v1/sessions/{}/events", id(&session));
    let harness = &h;
    let list = |query: String| {
        let url = format!("{base}?{query}");
        async move { harness.get(&url).await }
    };
    let data = |page: Value| page["data"].as_array().unwrap().clone();

    let messages = vec![all[0].clone(), all[3].clone()];
    assert_eq!(data(list("types[]=user.message".into()).await.ok()), messages);
    assert_eq!(data(list("types%5B%5D=user.message".into()).await.ok()), messages);
    assert_eq!(data(list("types=user.message".into()).await.ok()), messages, "plain form");
    assert_eq!(
        data(list("types[]=user.message&types[]=session.status_idle".into()).await.ok()),
        vec![all[0].clone(), all[2].clone(), all[3].clone()]
    );
    assert_eq!(data(list("types[]=x.workspace_delta".into()).await.ok()), Vec::<Value>::new());
    list("types[]=agent.mesage".into()).await.invalid();
    assert_eq!(data(list("types[]=x.fork_origin&types[]=agent.message".into()).await.ok()), vec![all[1].clone()]);

    let mut reversed = all.clone();
    reversed.reverse();
    assert_eq!(data(list("order=desc".into()).await.ok()), reversed);
    assert_eq!(data(list("order=asc".into()).await.ok()), all);
    list("order=newest".into()).await.invalid();

    let t2 = all[1]["processed_at"].as_str().unwrap().to_owned();
    assert_eq!(all[2]["processed_at"], t2);
    assert_eq!(data(list(format!("created_at[gte]={t2}")).await.ok()), all[1..].to_vec());
    assert_eq!(data(list(format!("created_at[gt]={t2}")).await.ok()), all[3..].to_vec());
    assert_eq!(data(list(format!("created_at[lt]={t2}")).await.ok()), all[..1].to_vec());
    assert_eq!(
        data(list(format!("created_at[lte]={t2}&order=desc")).await.ok()),
        vec![all[2].clone(), all[1].clone(), all[0].clone()]
    );
    list("created_at[gte]=noon".into()).await.invalid();

    for bad in ["0", "1001", "x"] {
        list(format!("limit={bad}")).await.invalid();
    }
    let page = list("limit=1000".into()).await.ok();
    assert_eq!(page["next_page"], Value::Null);
    let page = list("limit=4".into()).await.ok();
    assert_eq!(page["next_page"], Value::Null, "only internal events follow the fourth");

    assert_eq!(walk(&h, &session, "limit=1").await, all);
    assert_eq!(walk(&h, &session, "limit=3").await, all);
    assert_eq!(walk(&h, &session, "limit=1&order=desc").await, reversed);
    assert_eq!(walk(&h, &session, "limit=1&types[]=user.message").await, messages);
    assert_eq!(
        walk(&h, &session, "limit=1&order=desc&types[]=user.message").await,
        vec![all[3].clone(), all[0].clone()]
    );

    let asc_cursor = list("limit=1".into()).await.ok()["next_page"].as_str().unwrap().to_owned();
    let desc_cursor = list("limit=1&order=desc".into()).await.ok()["next_page"].as_str().unwrap().to_owned();
    list(format!("limit=1&order=desc&page={asc_cursor}")).await.invalid();
    list(format!("limit=1&page={desc_cursor}")).await.invalid();
    list("page=garbage".into()).await.invalid();
    list("page=sessions_6e6400".into()).await.invalid();
    list("page=events_a%C3%A90".into()).await.invalid();
    h.get("/v1/sessions/sesn_01JQ8Z7M3P5R7T9V1X3Z5B7D0E/events").await.not_found();
}

#[tokio::test]
async fn lists_go_on_past_long_runs_of_unlisted_events() {
    // Goal: a list whose scan budget runs out before its page fills says
    // where to go on (a cursor), never "no more" (a null next_page), whatever
    // the order and filters. Method: two messages around 33,000 internal
    // events (more than one request scans), walked with each order and filter.
    let h = Harness::new();
    let session = h.quick_session().await;
    let path = format!("/v1/sessions/{}/events", id(&session));
    h.tick(1000);
    h.post(&path, &events_body(vec![user_message("first")])).await.ok();
    let delta = internal_events().remove(0);
    for _ in 0..33 {
        h.inject(&session, vec![delta.clone(); 1000]);
    }
    h.tick(1000);
    let last_at = h.now();
    h.post(&path, &events_body(vec![user_message("last")])).await.ok();
    let texts = |events: Vec<Value>| -> Vec<String> {
        events.iter().map(|e| e["content"][0]["text"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(texts(walk(&h, &session, "limit=10").await), ["first", "last"]);
    assert_eq!(texts(walk(&h, &session, "limit=10&order=desc").await), ["last", "first"]);
    assert_eq!(texts(walk(&h, &session, "limit=1&order=desc").await), ["last", "first"]);
    assert_eq!(texts(walk(&h, &session, "limit=10&types[]=user.message").await), ["first", "last"]);
    let since = last_at.to_string();
    assert_eq!(texts(walk(&h, &session, &format!("limit=10&created_at[gte]={since}")).await), ["last"]);
    assert_eq!(texts(walk(&h, &session, &format!("limit=10&order=desc&created_at[lt]={since}")).await), ["first"]);
}

#[tokio::test]
async fn lists_of_large_events_are_paged_by_bytes() {
    // Goal: a page holds no more bytes of events than one read of the store
    // (always at least one event); a page cut by bytes has a next_page, and
    // following next_page lists every event once, in order, whatever the
    // order and filters; the store's reads cut short by bytes are not taken
    // for the end of the log. Method: 24 agent messages of 10-33 KiB between
    // internal and small events, listed with the store's read budget at
    // 64 KiB, against the same lists in one page at the default budget.
    let h = Harness::new();
    let session = h.quick_session().await;
    let path = format!("/v1/sessions/{}/events", id(&session));
    h.post(&path, &events_body(vec![user_message("first")])).await.ok();
    let delta = internal_events().remove(0);
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for i in 0..24usize {
        let text: String = (0..(10 + (i * 7) % 24) * 1024)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                char::from(b'a' + (state % 26) as u8)
            })
            .collect();
        let message = event(json!({"type": "agent.message", "content": [{"type": "text", "text": text}]}));
        h.inject(&session, vec![message, delta.clone()]);
        if i % 5 == 0 {
            h.tick(1000);
            h.post(&path, &events_body(vec![user_message(&format!("m{i}"))])).await.ok();
        }
    }
    let all = h.get(&format!("{path}?limit=1000")).await.ok()["data"].as_array().unwrap().clone();
    assert_eq!(types_of(&all).iter().filter(|t| *t == "agent.message").count(), 24);
    let last_at = all.last().unwrap()["processed_at"].as_str().unwrap().to_owned();
    let queries = [
        "limit=1000".to_owned(),
        "limit=1000&order=desc".to_owned(),
        "limit=7".to_owned(),
        "limit=1000&types[]=agent.message".to_owned(),
        format!("limit=1000&order=desc&created_at[lt]={last_at}"),
    ];
    let mut whole = Vec::new();
    for query in &queries {
        let page = h.get(&format!("{path}?{query}")).await.ok();
        let data = page["data"].as_array().unwrap().clone();
        if query == "limit=7" {
            whole.push(walk(&h, &session, query).await);
        } else {
            assert_eq!(page["next_page"], Value::Null, "{query}: one page at the default budget");
            whole.push(data);
        }
    }
    let mut reversed = all.clone();
    reversed.reverse();
    assert_eq!(whole[1], reversed);
    assert_eq!(whole[2], all);
    assert_eq!(types_of(&whole[3]), vec!["agent.message"; 24]);
    assert!(!whole[4].is_empty() && whole[4].len() < all.len());

    h.state.store().set_read_bytes(64 * 1024);
    for (query, expected) in queries.iter().zip(&whole) {
        let first = h.get(&format!("{path}?{query}")).await.ok();
        let data = first["data"].as_array().unwrap();
        assert!(data.len() < expected.len(), "{query}: the first page is cut by bytes ({} events)", data.len());
        assert!(first["next_page"].is_string(), "{query}: a page cut by bytes has a next_page");
        let bytes: usize = data.iter().map(|e| e.to_string().len()).sum();
        assert!(data.len() == 1 || bytes < 2 * 64 * 1024, "{query}: {bytes} bytes of JSON in {} events", data.len());
        assert_eq!(&walk(&h, &session, query).await, expected, "{query}: every event once, in order");
    }
}

/// The SSE body of the session's stream (resumed after `last_event_id`),
/// read until the server ends it; `None` if it is still open at the deadline.
async fn stream_until_closed(h: &Harness, session: &Value, last_event_id: Option<&str>) -> Option<String> {
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let mut builder = Request::builder()
        .uri(format!("/v1/sessions/{}/events/stream", id(session)))
        .header("anthropic-beta", logbook_server::http::MANAGED_AGENTS_BETA)
        .header("x-api-key", &h.key_a);
    if let Some(last) = last_event_id {
        builder = builder.header("last-event-id", last);
    }
    let response = h.app.clone().oneshot(builder.body(axum::body::Body::empty()).unwrap()).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = tokio::time::timeout(std::time::Duration::from_secs(5), response.into_body().collect()).await.ok()?;
    Some(String::from_utf8(body.unwrap().to_bytes().to_vec()).unwrap())
}

#[tokio::test]
async fn a_stream_that_starts_past_the_closing_event_ends() {
    // Goal: a stream that starts past `session.status_terminated` (live on a
    // session the runner terminated, whose stored status says nothing of it,
    // or resumed with Last-Event-ID at that event) ends rather than pinging
    // forever; one resumed before it delivers it and ends (API digest §3.4).
    // Method: a terminated event appended as the runner would, streams read
    // to their end under a deadline.
    let h = Harness::new();
    let session = h.quick_session().await;
    let path = format!("/v1/sessions/{}/events", id(&session));
    let sent = h.post(&path, &events_body(vec![user_message("hi")])).await.ok();
    let message_id = sent["data"][0]["id"].as_str().unwrap().to_owned();
    let terminated = h.inject(&session, vec![event(json!({"type": "session.status_terminated"}))]).remove(0);
    let live = stream_until_closed(&h, &session, None).await.expect("a live stream of a terminated session ends");
    assert!(!live.contains("event: session."), "{live}");
    let resumed = stream_until_closed(&h, &session, Some(&terminated)).await.expect("resumed at the end, it ends");
    assert!(!resumed.contains("event: session."), "{resumed}");
    let replay = stream_until_closed(&h, &session, Some(&message_id)).await.expect("a replay through the end ends");
    assert!(replay.contains("event: session.status_terminated"), "{replay}");
}

#[tokio::test]
async fn stream_refuses_bad_event_deltas() {
    // Goal: the stream answers 200 text/event-stream for a session and 400 for
    // event_deltas[] values other than agent.message / agent.thinking
    // (behaviour digest §4.4). Method: open the stream (head only) each way.
    let h = Harness::new();
    let session = h.quick_session().await;
    let path = format!("/v1/sessions/{}/events/stream", id(&session));
    let resp = h.get(&path).await;
    assert_eq!(resp.status.as_u16(), 200);
    assert!(resp.header("content-type").unwrap().starts_with("text/event-stream"));
    let resp = h.get(&format!("{path}?event_deltas[]=agent.message&event_deltas[]=agent.thinking")).await;
    assert_eq!(resp.status.as_u16(), 200);
    h.get(&format!("{path}?event_deltas[]=user.message")).await.invalid();
}

#[tokio::test]
async fn system_message_while_requires_action_only_trails_a_tool_result() {
    // Goal: while the session is idle with `requires_action`, system.message
    // is accepted only trailing a tool result (behaviour digest §4.1), not
    // after a user.message. Method: inject a custom tool use and the idle
    // event that waits on it, then send both placements.
    let h = Harness::new();
    let session = h.quick_session().await;
    let path = format!("/v1/sessions/{}/events", id(&session));
    let calls = h.inject(&session, vec![custom_tool_use()]);
    h.inject(
        &session,
        vec![event(json!({"type": "session.status_idle",
        "stop_reason": {"type": "requires_action", "event_ids": [calls[0]]}}))],
    );
    let resp = h.post(&path, &events_body(vec![user_message("steer"), system_message("s")])).await;
    assert_eq!(
        resp.status.as_u16(),
        400,
        "FIXME: accepted a system.message after a user.message while requires_action: {}",
        resp.text()
    );
    resp.invalid();
    let result = json!({"type": "user.custom_tool_result", "custom_tool_use_id": calls[0], "content": [{"type": "text", "text": "ok"}]});
    h.post(&path, &events_body(vec![result, system_message("s")])).await.ok();
}

#[tokio::test]
async fn an_interrupt_while_paused_at_the_budget_is_accepted_and_ignored() {
    // Goal: paused at its budget, a session accepts a user.interrupt and
    // ignores it: not persisted, not listed, not echoed (behaviour digest
    // §3.6, §12), while a user.message is still refused with
    // `budget_reached`. Method: inject an open custom call and the budget
    // idle, send an interrupt alone, a message, then a result with an
    // interrupt, and list after each.
    let h = Harness::new();
    let session = h.quick_session().await;
    let path = format!("/v1/sessions/{}/events", id(&session));
    let calls = h.inject(&session, vec![custom_tool_use()]);
    h.inject(&session, vec![event(json!({"type": "session.status_idle", "stop_reason": {"type": "budget_reached"}}))]);
    let before = h.events(&session).await;
    let interrupt = json!({"type": "user.interrupt"});

    let sent = h.post(&path, &events_body(vec![interrupt.clone()])).await.ok();
    assert_eq!(sent, json!({"data": []}), "an ignored interrupt is not echoed");
    assert_eq!(h.events(&session).await, before, "an ignored interrupt is not listed");

    let refused = h.post(&path, &events_body(vec![user_message("more")])).await.invalid();
    assert_eq!(refused["error"]["details"]["error_code"], "budget_reached", "{refused}");

    let result = json!({"type": "user.custom_tool_result", "custom_tool_use_id": calls[0],
        "content": [{"type": "text", "text": "ok"}]});
    let sent = h.post(&path, &events_body(vec![interrupt, result])).await.ok();
    assert_eq!(types_of(sent["data"].as_array().unwrap()), ["user.custom_tool_result"]);
    let listed = h.events(&session).await;
    assert_eq!(types_of(&listed[before.len()..]), ["user.custom_tool_result"]);
}

#[tokio::test]
async fn a_session_paused_at_the_budget_takes_input_again_once_the_budget_changes() {
    // Goal: a session is paused at its budget from its `budget_reached`
    // idle until a `session.updated` changes the budget (the runner resumes
    // the paused work from the same log): an update of the title leaves it
    // paused, a budget removal ends the pause, and a message is taken again
    // before the runner has recorded the resumed turn.
    // Method: inject the budget idle, then a title update, then a budget
    // removal, sending a message after each.
    let h = Harness::new();
    let session = h.quick_session().await;
    let path = format!("/v1/sessions/{}/events", id(&session));
    h.inject(&session, vec![event(json!({"type": "session.status_idle", "stop_reason": {"type": "budget_reached"}}))]);
    h.inject(&session, vec![event(json!({"type": "session.updated", "title": "renamed"}))]);
    let refused = h.post(&path, &events_body(vec![user_message("more")])).await.invalid();
    assert_eq!(refused["error"]["details"]["error_code"], "budget_reached", "{refused}");
    h.inject(&session, vec![event(json!({"type": "session.updated", "budget": null}))]);
    let sent = h.post(&path, &events_body(vec![user_message("more")])).await.ok();
    assert_eq!(types_of(sent["data"].as_array().unwrap()), ["user.message"]);
}

#[tokio::test]
async fn the_same_budget_sent_again_while_paused_at_it_is_not_raised() {
    // Goal: a budget update must be greater than the session's consumed list
    // cost, else 400 `budget_not_raised` (behaviour digest §12: "Resume only
    // by budget update (must be > consumed cost, else 400 `budget.max_list_cost
    // must be greater than the session's consumed list cost`)"; API digest
    // §2.4). `sessions::update_once` checks the amount only when the budget
    // differs from the current one, so the same $1 budget sent again to a
    // session paused at it (having spent $1.50) answers 200 as if it were
    // taken, and the session stays paused with no word of why.
    // Method: a session with a $1 budget; inject the $1.50 usage and the
    // budget idle the runner appends at the pause; send the same budget.
    let h = Harness::new();
    let agent = h.agent("a").await;
    let env = h.env("e").await;
    let budget = json!({"type": "limit", "max_list_cost": {"amount": "100", "currency": "USD"}});
    let session = h
        .post("/v1/sessions", &json!({"agent": agent["id"], "environment_id": env["id"], "budget": budget}))
        .await
        .ok();
    h.inject(
        &session,
        vec![
            event(json!({"type": "session.usage", "budget": budget,
                "usage": {"input_tokens": 500_000, "list_cost": {"amount": "150", "currency": "USD"}}})),
            event(json!({"type": "session.status_idle", "stop_reason": {"type": "budget_reached"}})),
        ],
    );
    let resp = h.post(&format!("/v1/sessions/{}", id(&session)), &json!({"budget": budget})).await;
    assert_eq!(
        resp.status.as_u16(),
        400,
        "a $1 budget is not above the $1.50 consumed, yet the update was taken: {}",
        resp.text()
    );
    let body = resp.invalid();
    assert_eq!(body["error"]["details"]["error_code"], "budget_not_raised", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_to_one_session_all_land_and_a_call_gets_one_answer() {
    // Goal: sends racing on one session never fail for losing the race (a
    // loser waits for the winner's records to be durable and checks again),
    // every message lands exactly once in a gap-free log, and of several
    // concurrent confirmations of one call exactly one is accepted.
    // Method: 40 messages (one of them large) and 6 confirmations of one open
    // call, all at once.
    let h = Harness::new();
    let session = h.quick_session().await;
    let path = format!("/v1/sessions/{}/events", id(&session));
    let calls = h.inject(&session, vec![tool_use("ask")]);
    let before = h.events(&session).await.len();
    let confirm = json!({"type": "user.tool_confirmation", "tool_use_id": calls[0], "result": "allow"});
    // Message 0 is large: it is checked and submitted on the blocking pool.
    let text = |i: usize| if i == 0 { format!("m0{}", "x".repeat(100_000)) } else { format!("m{i}") };
    let message_bodies: Vec<Value> = (0..40).map(|i| events_body(vec![user_message(&text(i))])).collect();
    let confirm_body = events_body(vec![confirm]);
    let messages = message_bodies.iter().map(|body| h.post(&path, body));
    let confirmations = (0..6).map(|_| h.post(&path, &confirm_body));
    let (messages, confirmations) =
        tokio::join!(futures_util::future::join_all(messages), futures_util::future::join_all(confirmations));
    for resp in &messages {
        assert_eq!(resp.status.as_u16(), 200, "a racing send must land: {}", resp.text());
    }
    let accepted = confirmations.iter().filter(|resp| resp.status.as_u16() == 200).count();
    assert_eq!(accepted, 1, "exactly one confirmation of the call is accepted");
    for resp in confirmations.iter().filter(|resp| resp.status.as_u16() != 200) {
        resp.invalid();
    }
    let events = h.events(&session).await;
    assert_eq!(events.len(), before + 41, "every message and one confirmation, nothing twice");
    let mut texts: Vec<String> = events[before..]
        .iter()
        .filter(|e| e["type"] == "user.message")
        .map(|e| e["content"][0]["text"].as_str().unwrap().to_owned())
        .collect();
    texts.sort_unstable();
    let mut want: Vec<String> = (0..40).map(text).collect();
    want.sort_unstable();
    assert_eq!(texts, want);
}

#[tokio::test]
async fn a_custom_tool_result_for_a_call_already_closed_by_the_server_is_refused() {
    // Goal: a call gets one answer (ARCHITECTURE "a tool call gets one
    // answer"; behaviour digest §3.6: an interrupt closes each pending call
    // "with an error tool result"; a new message supersedes them the same
    // way). Once the runner has closed an open custom tool call with an
    // `agent.tool_result`, a late `user.custom_tool_result` for it answers a
    // call that is no longer open: it must be 400, not appended (the context
    // would then hold a second tool_result for one tool_use, which the
    // Messages API rejects on every later model call). Method: inject the
    // call and the error result the runner appends on interrupt, then send
    // the client's result.
    let h = Harness::new();
    let session = h.quick_session().await;
    let path = format!("/v1/sessions/{}/events", id(&session));
    let calls = h.inject(&session, vec![custom_tool_use()]);
    h.inject(
        &session,
        vec![event(json!({"type": "agent.tool_result", "tool_use_id": calls[0], "is_error": true,
            "content": [{"type": "text", "text": "Tool execution was interrupted before completion. Please retry."}]}))],
    );
    let before = h.events(&session).await.len();
    let late = json!({"type": "user.custom_tool_result", "custom_tool_use_id": calls[0],
        "content": [{"type": "text", "text": "sunny"}]});
    let resp = h.post(&path, &events_body(vec![late])).await;
    assert_eq!(resp.status.as_u16(), 400, "a second answer to a closed custom call was accepted: {}", resp.text());
    resp.invalid();
    assert_eq!(h.events(&session).await.len(), before, "nothing appended");
}

#[tokio::test]
async fn a_confirmation_of_a_call_already_closed_by_the_server_is_refused() {
    // Goal: a `user.tool_confirmation` resolves a call that awaits one
    // (behaviour digest §3.5); a call the runner already closed (an interrupt
    // or a superseding message answers it with an error `agent.tool_result`,
    // §3.6) no longer awaits anything, so confirming it is 400 like confirming
    // an already-confirmed call. Method: inject an `ask` call and its closing
    // error result, then confirm it.
    let h = Harness::new();
    let session = h.quick_session().await;
    let path = format!("/v1/sessions/{}/events", id(&session));
    let calls = h.inject(&session, vec![tool_use("ask")]);
    h.inject(
        &session,
        vec![event(json!({"type": "agent.tool_result", "tool_use_id": calls[0], "is_error": true,
            "content": [{"type": "text", "text": "Tool execution was interrupted before completion. Please retry."}]}))],
    );
    let confirm = json!({"type": "user.tool_confirmation", "tool_use_id": calls[0], "result": "allow"});
    let resp = h.post(&path, &events_body(vec![confirm])).await;
    assert_eq!(resp.status.as_u16(), 400, "a confirmation of a closed call was accepted: {}", resp.text());
    resp.invalid();
}

#[tokio::test]
async fn content_naming_a_file_that_is_not_the_workspaces_is_refused() {
    // Goal: an image or document block with a `file` source (API digest
    // §4.3) names a file of the caller's Files API. The send neither checks
    // that the file exists in this workspace nor does the runner resolve it
    // (the block goes verbatim to the Messages API, where Logbook's ids mean
    // nothing), so the message is accepted and every model call of the turn
    // fails. A file id that names no file of this workspace, or another
    // workspace's file, must be refused when sent. Method: send each; the
    // same block naming workspace A's own upload is accepted.
    let h = Harness::new();
    let session = h.quick_session().await;
    let path = format!("/v1/sessions/{}/events", id(&session));
    let theirs = h.upload_as(&h.key_b, "b.txt", "text/plain", b"workspace b's secret").await.ok();
    let ours = h.upload("a.txt", "text/plain", b"notes").await;
    let doc = |file_id: &str| {
        json!({"type": "user.message", "content": [
            {"type": "text", "text": "read this"},
            {"type": "document", "source": {"type": "file", "file_id": file_id}}]})
    };
    let mut accepted = Vec::new();
    for (case, file_id) in
        [("no such file", "file_011CNha8iCJcU1wXNR6q4V8w"), ("another workspace's file", id(&theirs))]
    {
        let resp = h.post(&path, &events_body(vec![doc(file_id)])).await;
        if resp.status.is_success() {
            accepted.push(case);
        } else {
            assert!(matches!(resp.status.as_u16(), 400 | 404), "{case}: {}", resp.text());
        }
    }
    h.post(&path, &events_body(vec![doc(id(&ours))])).await.ok();
    assert!(
        accepted.is_empty(),
        "file-sourced content naming files the caller does not have was accepted: {accepted:?}"
    );
}

#[tokio::test]
async fn an_interrupt_naming_a_thread_the_session_does_not_have_is_refused() {
    // Goal: `user.interrupt` may name `session_thread_id` (API digest §4.1):
    // only that thread is interrupted, and naming a thread that is not
    // running (terminated) is 400 (behaviour digest §3.6). A thread id that
    // is not a thread of this session is a client mistake: refused, not
    // accepted and applied to the whole session (the machine ignores the
    // field and interrupts everything). Method: send an interrupt naming a
    // well-formed thread id the session never had.
    let h = Harness::new();
    let session = h.quick_session().await;
    let path = format!("/v1/sessions/{}/events", id(&session));
    let interrupt = json!({"type": "user.interrupt", "session_thread_id": "sthr_01JQ8Z7M3P5R7T9V1X3Z5B7D0E"});
    let resp = h.post(&path, &events_body(vec![interrupt])).await;
    assert!(
        matches!(resp.status.as_u16(), 400 | 404),
        "an interrupt naming a thread this session does not have was accepted: {}",
        resp.text()
    );
}

#[tokio::test]
async fn an_outcome_whose_rubric_names_a_file_that_is_not_the_workspaces_is_refused() {
    // Goal: sends now check that every `file` source names a live file of the
    // caller's workspace (`events::check_files`), and the context now renders
    // a `user.define_outcome`'s file rubric as a file-sourced document for
    // the model. But `check_files` looks only at user.message and
    // user.custom_tool_result content: a rubric naming no file of this
    // workspace (or another workspace's file) is accepted, and the outcome
    // is graded against a rubric the model is told is unavailable.
    // Method: send each; the caller's own file is accepted.
    let h = Harness::new();
    let session = h.quick_session().await;
    let path = format!("/v1/sessions/{}/events", id(&session));
    let theirs = h.upload_as(&h.key_b, "b.txt", "text/plain", b"workspace b's rubric").await.ok();
    let ours = h.upload("a.txt", "text/plain", b"- all tests pass").await;
    let outcome = |file_id: &str| json!({"type": "user.define_outcome", "description": "d", "rubric": {"type": "file", "file_id": file_id}});
    let mut accepted = Vec::new();
    for (case, file_id) in
        [("no such file", "file_011CNha8iCJcU1wXNR6q4V8w"), ("another workspace's file", id(&theirs))]
    {
        let resp = h.post(&path, &events_body(vec![outcome(file_id)])).await;
        if resp.status.is_success() {
            accepted.push(case);
        } else {
            assert!(matches!(resp.status.as_u16(), 400 | 404), "{case}: {}", resp.text());
        }
    }
    h.post(&path, &events_body(vec![outcome(id(&ours))])).await.ok();
    assert!(accepted.is_empty(), "rubrics naming files the caller does not have were accepted: {accepted:?}");
}

#[tokio::test]
async fn event_ids_increase_along_the_log_when_the_wall_clock_steps_back() {
    // Goal: "Event ids strictly increase per session" (reliability goals
    // G-S5); ids sort in creation order (docs/format.md: "byte order =
    // creation order"). Method: send a message, step the clock back two
    // seconds (an NTP correction), send another; compare the ids. Event ids
    // take the clock's millisecond as it is (`AppState::event_id`), unlike
    // object ids (`AppState::new_id`, which never goes back), so the later
    // event gets the smaller id.
    let h = Harness::new();
    let session = h.quick_session().await;
    let path = format!("/v1/sessions/{}/events", id(&session));
    let first = h.post(&path, &events_body(vec![user_message("before the step")])).await.ok();
    h.tick(-2000);
    let second = h.post(&path, &events_body(vec![user_message("after the step")])).await.ok();
    let (first, second) = (id(&first["data"][0]).to_owned(), id(&second["data"][0]).to_owned());
    let listed = ids_of(&h.events(&session).await);
    assert_eq!(listed, [first.clone(), second.clone()], "the log's order");
    assert!(second > first, "the later event's id {second} sorts before the earlier one's {first}");
}

#[tokio::test]
async fn a_workspace_holds_at_most_its_cap_of_open_streams() {
    // Goal: one workspace cannot take every connection the server accepts
    // with SSE streams: past `max_streams_per_workspace` open at once, a new
    // stream answers 429 rate_limit_error with retry-after; other
    // workspaces are unaffected, and a closed stream frees its place.
    // Method: a cap of 2; two streams of workspace A held open (their
    // bodies kept), a third refused, B's accepted; one of A's dropped, then
    // A's next accepted.
    let config = logbook_server::state::Config { max_streams_per_workspace: 2, ..Default::default() };
    let h = Harness::with_config(config);
    let session = h.quick_session().await;
    let open = |key: String, session: String| {
        let h = &h;
        async move { h.open_unread(&format!("/v1/sessions/{session}/events/stream"), &key).await }
    };
    let sid = id(&session).to_owned();
    let first = open(h.key_a.clone(), sid.clone()).await;
    let second = open(h.key_a.clone(), sid.clone()).await;
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));
    let third = open(h.key_a.clone(), sid.clone()).await;
    assert_eq!(third.status().as_u16(), 429);
    assert!(third.headers().contains_key("retry-after"));
    let body = http_body_util::BodyExt::collect(third.into_body()).await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("event streams"), "{body}");

    let env_b = h.call(Method::POST, "/v1/environments", Auth::XApiKey(&h.key_b), Some(&json!({"name": "b"}))).await;
    let agent_b = h
        .call(
            Method::POST,
            "/v1/agents",
            Auth::XApiKey(&h.key_b),
            Some(&json!({"name": "b", "model": "claude-sonnet-4-6"})),
        )
        .await;
    let session_b = h
        .call(
            Method::POST,
            "/v1/sessions",
            Auth::XApiKey(&h.key_b),
            Some(&json!({"agent": agent_b.ok()["id"], "environment_id": env_b.ok()["id"]})),
        )
        .await
        .ok();
    let other = open(h.key_b.clone(), id(&session_b).to_owned()).await;
    assert_eq!(other.status().as_u16(), 200, "another workspace's streams are not counted");

    drop(first);
    let again = open(h.key_a.clone(), sid.clone()).await;
    assert_eq!(again.status().as_u16(), 200, "a closed stream frees its place");
    drop((second, again, other));
}

#[tokio::test]
async fn inline_data_the_messages_api_would_refuse_is_refused_with_its_reason() {
    // Goal: an image or document the Messages API would refuse is a 400
    // naming the field and the reason, not a block the log keeps and sends
    // with every later model call (each of which would then be refused).
    // Method: send each; nothing is stored.
    let h = Harness::new();
    let session = h.quick_session().await;
    let path = format!("/v1/sessions/{}/events", id(&session));
    let image = |media_type: &str, data: String| {
        json!({"type": "user.message", "content": [{"type": "text", "text": "see"},
            {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}]})
    };
    let document = |source: Value| json!({"type": "user.message", "content": [{"type": "document", "source": source}]});
    let cases = [
        (image("image/png", "/9j/4AAQ".to_owned()), "image/png was given, but the data is an image/jpeg image"),
        (image("image/png", "aGVsbG8=".to_owned()), "not a PNG, JPEG, GIF or WebP image"),
        (image("image/png", "iVBORw0KGgo".to_owned()), "not valid base64"),
        (image("image/png", "iVBORw0KGgo=".to_owned()), "its header gives no size"),
        (image("image/png", png_base64(8_001, 10)), "8001 x 10 pixels"),
        (image("image/png", "A".repeat(5 * 1024 * 1024 + 4)), "more than the limit of 5242880"),
        (document(json!({"type": "base64", "media_type": "application/pdf", "data": "aGVsbG8="})), "is not a PDF"),
        (document(json!({"type": "base64", "media_type": "text/csv", "data": "YSxi"})), "must be application/pdf"),
        (document(json!({"type": "text", "media_type": "text/csv", "data": "a,b"})), "must be text/plain"),
    ];
    for (input, reason) in cases {
        let resp = h.post(&path, &events_body(vec![input.clone()])).await;
        let body = resp.invalid();
        let message = body["error"]["message"].as_str().unwrap_or_default().to_owned();
        assert!(message.contains("events[0].content[") && message.contains(reason), "{input}: {message}");
    }
    assert!(h.events(&session).await.is_empty());
}

/// A PNG header of `width` x `height` pixels, base64.
fn png_base64(width: u32, height: u32) -> String {
    use base64::Engine as _;
    let mut png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
    png.extend_from_slice(&width.to_be_bytes());
    png.extend_from_slice(&height.to_be_bytes());
    png.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
    base64::engine::general_purpose::STANDARD.encode(png)
}

#[tokio::test]
async fn low_on_disk_new_work_is_refused_and_work_under_way_winds_down() {
    // Goal: below the data directory's reserve of free space
    // (`logbook_server::diskguard`), what would start new work answers 503
    // api_error with error_code insufficient_storage and x-should-retry
    // false, and is counted; reads, interrupts, archives and deletes still
    // work, and /healthz says the server is degraded. Method: objects made
    // first, then a guard whose reserve no disk has (u64::MAX).
    let h = Harness::new();
    let session = h.quick_session().await;
    let sid = id(&session).to_owned();
    let agent = h.agent("kept").await;
    let env = h.env("kept").await;
    let events = format!("/v1/sessions/{sid}/events");
    assert_eq!(h.get("/healthz").await.ok()["disk_low"], false);
    h.state.set_disk_guard(logbook_server::diskguard::DiskGuard::new(&h.data_dir(), u64::MAX));

    let refused = |resp: crate::harness::Resp, what: &str| {
        let body = resp.error(503, "api_error");
        assert_eq!(body["error"]["details"]["error_code"], "insufficient_storage", "{what}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("low on disk space"), "{what}: {body}");
        assert_eq!(resp.header("x-should-retry"), Some("false"), "{what}");
    };
    let new_agent = json!({"name": "new", "model": "claude-sonnet-4-6"});
    refused(h.post("/v1/agents", &new_agent).await, "an agent");
    refused(h.post("/v1/environments", &json!({"name": "new"})).await, "an environment");
    refused(h.post("/v1/sessions", &json!({"agent": agent["id"], "environment_id": env["id"]})).await, "a session");
    refused(
        h.post(&format!("/v1/agents/{}", id(&agent)), &json!({"version": 1, "name": "renamed"})).await,
        "an update",
    );
    refused(h.upload_as(&h.key_a, "a.txt", "text/plain", b"contents").await, "an upload");
    refused(h.post(&events, &events_body(vec![user_message("hello")])).await, "a message");
    let outcome =
        json!({"type": "user.define_outcome", "description": "d", "rubric": {"type": "text", "content": "r"}});
    refused(h.post(&events, &events_body(vec![outcome])).await, "an outcome");
    // A request that starts work is refused whole, an interrupt with it too.
    let both = events_body(vec![json!({"type": "user.interrupt"}), user_message("and this")]);
    refused(h.post(&events, &both).await, "an interrupt with a message");
    assert_eq!(h.events(&session).await.len(), 0, "nothing refused was appended");
    // A method the route lacks is still a 405, not a refusal for space.
    assert_eq!(h.post(&format!("{events}/stream"), &json!({})).await.status.as_u16(), 405);

    // Reads, an interrupt, archives and deletes go through.
    assert_eq!(h.get(&format!("/v1/sessions/{sid}")).await.ok()["id"], sid.as_str());
    h.get(&events).await.ok();
    h.post(&events, &events_body(vec![json!({"type": "user.interrupt"})])).await.ok();
    h.post_empty(&format!("/v1/agents/{}/archive", id(&agent))).await.ok();
    h.delete(&format!("/v1/sessions/{sid}")).await.ok();

    let health = h.get("/healthz").await.ok();
    assert_eq!((&health["status"], &health["disk_low"]), (&json!("degraded"), &json!(true)), "{health}");
    let metrics = h.get("/metrics").await.text();
    assert!(metrics.contains("logbook_disk_low_refused_total 8\n"), "{metrics}");
}
