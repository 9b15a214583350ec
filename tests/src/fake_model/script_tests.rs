//! Tests of script parsing, step folding and the exact event sequence of a
//! scripted response.

use serde_json::json;

use super::*;

#[test]
fn a_text_and_tool_response_streams_as_the_api_does() {
    // Goal: pin the event sequence and shapes once; the client tests rely on
    // the fake speaking the documented protocol.
    let Step::Respond(response) = Step::parse(json!({
        "content": [{"type": "text", "text": "abcdef"}, {"type": "tool_use", "name": "read", "input": {"file_path": "a.txt"}}],
        "usage": {"input_tokens": 9, "output_tokens": 7}
    }))
    .expect("a valid step") else {
        panic!("a response step");
    };
    let events = events(&response, "claude-x", 100, Ids { response: 3 });
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    for (name, data) in &events {
        assert_eq!(data["type"], json!(name), "the data's type repeats the event name");
    }
    assert_eq!(
        events[0].1,
        json!({"type": "message_start", "message": {"id": "msg_fake_000003", "type": "message", "role": "assistant",
            "model": "claude-x", "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 9, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 1}}})
    );
    assert_eq!(
        events[3].1,
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "ab"}})
    );
    assert_eq!(
        events[7].1,
        json!({"type": "content_block_start", "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_fake_000003_1", "name": "read", "input": {}}})
    );
    assert_eq!(events[8].1["delta"], json!({"type": "input_json_delta", "partial_json": ""}));
    let partial: String =
        events[8..13].iter().map(|(_, data)| data["delta"]["partial_json"].as_str().unwrap_or("")).collect();
    assert_eq!(partial, r#"{"file_path":"a.txt"}"#);
    assert_eq!(events[9].1["delta"]["partial_json"], json!("{\"file"));
    assert_eq!(
        events[14].1,
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
            "usage": {"output_tokens": 7}})
    );
    assert_eq!(encode("ping", &json!({"type": "ping"})), b"event: ping\ndata: {\"type\":\"ping\"}\n\n".to_vec());
}

#[test]
fn modifiers_attach_to_the_next_response() {
    let mut script = Step::parse_script(vec![
        json!({"fault": "drip", "delay_ms": 5}),
        json!({"fault": "cut", "after_events": 2}),
        json!({"content": [{"type": "text", "text": "one"}]}),
        json!({"fault": "status", "status": 429, "retry_after": 1}),
        json!({"fault": "hang"}),
        json!({"fault": "error_event", "after_events": 1}),
    ])
    .expect("a valid script");
    let Plan::Stream { response, delay_ms: 5, ending: Ending::Cut { after_events: 2 } } = next_plan(&mut script) else {
        panic!("drip and cut modify the first response");
    };
    assert_eq!(response.content, vec![json!({"type": "text", "text": "one"})]);
    assert_eq!(next_plan(&mut script), Plan::Status { status: 429, retry_after: Some(1), message: None });
    assert_eq!(next_plan(&mut script), Plan::Hang);
    // A trailing modifier applies to the default answer.
    let Plan::Stream { response, delay_ms: 0, ending: Ending::ErrorEvent { after_events: 1, error_type, .. } } =
        next_plan(&mut script)
    else {
        panic!("the error event modifies the default answer");
    };
    assert_eq!(error_type, "overloaded_error");
    assert_eq!(response.content, vec![json!({"type": "text", "text": EXHAUSTED_TEXT})]);
    assert!(script.is_empty());
}

#[test]
fn bad_steps_are_refused_with_their_position() {
    let error = Step::parse_script(vec![json!({"content": []}), json!({"fault": "explode"})]).expect_err("invalid");
    assert!(error.starts_with("step 1: fault step:"), "{error}");
    assert!(Step::parse(json!({"content": [], "stop_reasn": "end_turn"})).is_err());
    assert!(Step::parse(json!({"fault": "status"})).is_err(), "status needs a status");
}

#[test]
fn pieces_keep_characters_whole() {
    assert_eq!(pieces("héllo🦀", 3), vec!["hé", "ll", "o🦀"]);
    assert_eq!(pieces("", 3), Vec::<String>::new());
    assert_eq!(pieces("a", 3), vec!["a"]);
}

#[test]
fn breakpoints_are_counted_anywhere() {
    let body = json!({"system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [{"type": "tool_result", "content": [
            {"type": "text", "text": "t", "cache_control": {"type": "ephemeral"}}]}]}]});
    assert_eq!(count_cache_control(&body), 2);
}
