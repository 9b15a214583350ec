//! JSON shape tests: events serialize to exactly the API reference's shapes
//! (§4, §7) and those shapes parse back into the same events.

use std::collections::BTreeMap;

use pretty_assertions::assert_eq;
use serde_json::Value;

use crate::event::*;
use crate::id::{EventId, ThreadId};
use crate::json::Json;

/// Asserts that `event` serializes to exactly `expected` and that `expected`
/// deserializes back to `event`.
fn assert_json(event: &Event, expected: &str) {
    let expected: Value = serde_json::from_str(expected).unwrap();
    assert_eq!(serde_json::to_value(event).unwrap(), expected);
    assert_eq!(&serde_json::from_value::<Event>(expected).unwrap(), event);
}

fn parse(text: &str) -> Event {
    serde_json::from_str(text).unwrap()
}

const TOOL_USE_ID: &str = "sevt_01JQ8Z7M3P5R7T9V1X3Z5B7D0A";
const CUSTOM_TOOL_USE_ID: &str = "sevt_01JQ8Z7M3P5R7T9V1X3Z5B7D0B";

fn tool_use_id() -> EventId {
    TOOL_USE_ID.parse().unwrap()
}

// Shapes of §4 events, written out as the API shows them.

#[test]
fn user_message_with_text() {
    // §7, request 4: the body the SDK sends.
    let event = Event::UserMessage(UserMessage { content: vec![ContentBlock::text("hi")] });
    assert_json(&event, r#"{"type":"user.message","content":[{"type":"text","text":"hi"}]}"#);
}

#[test]
fn agent_tool_use_with_evaluated_permission() {
    let event = Event::AgentToolUse(AgentToolUse {
        name: "bash".to_owned(),
        input: Json::parse(r#"{"command":"rm -rf build","timeout_ms":0}"#).unwrap(),
        evaluated_permission: Some(EvaluatedPermission::Ask),
        evaluation: Some(ToolEvaluation::Auto {
            evaluated_permission: AutoPermission::Ask { reason_code: "high_risk".to_owned() },
        }),
        session_thread_id: None,
    });
    assert_json(
        &event,
        r#"{
            "type": "agent.tool_use",
            "name": "bash",
            "input": {"command": "rm -rf build", "timeout_ms": 0},
            "evaluated_permission": "ask",
            "evaluation": {
                "type": "auto",
                "evaluated_permission": {"type": "ask", "reason_code": "high_risk"}
            },
            "session_thread_id": null
        }"#,
    );
    let always = r#"{"type":"agent.tool_use","name":"read","input":{"file_path":"a"},
        "evaluated_permission":"allow","evaluation":{"type":"always_allow"}}"#;
    let Event::AgentToolUse(parsed) = parse(always) else { panic!("wrong variant") };
    assert_eq!(parsed.evaluation, Some(ToolEvaluation::AlwaysAllow));
    assert_eq!(parsed.evaluated_permission, Some(EvaluatedPermission::Allow));
}

#[test]
fn session_status_idle_requires_action() {
    let event = Event::SessionStatusIdle(SessionStatusIdle {
        stop_reason: StopReason::RequiresAction { event_ids: vec![tool_use_id(), CUSTOM_TOOL_USE_ID.parse().unwrap()] },
        stop_details: None,
    });
    assert_json(
        &event,
        &format!(
            r#"{{
                "type": "session.status_idle",
                "stop_reason": {{
                    "type": "requires_action",
                    "event_ids": ["{TOOL_USE_ID}", "{CUSTOM_TOOL_USE_ID}"]
                }},
                "stop_details": null
            }}"#
        ),
    );
}

#[test]
fn session_status_idle_from_the_wire_capture() {
    // §7 stream: the API's object with `id` and `processed_at` (the envelope's
    // fields, ignored here) and no `stop_details`.
    let event = parse(
        r#"{"id":"sevt_03","type":"session.status_idle","processed_at":"2026-05-01T12:00:00Z",
            "stop_reason":{"type":"end_turn"}}"#,
    );
    let expected = Event::SessionStatusIdle(SessionStatusIdle { stop_reason: StopReason::EndTurn, stop_details: None });
    assert_eq!(event, expected);
    let running = parse(r#"{"id":"sevt_10","type":"session.status_running","processed_at":"x"}"#);
    assert_eq!(running, Event::SessionStatusRunning(SessionStatusRunning {}));
    assert_json(&running, r#"{"type":"session.status_running"}"#);
}

#[test]
fn session_error_with_retry_status() {
    let event = Event::SessionError(SessionError {
        error: SessionErrorDetail::McpConnectionFailedError {
            message: "could not reach github".to_owned(),
            retry_status: RetryStatus::Retrying,
            mcp_server_name: "github".to_owned(),
        },
    });
    assert_json(
        &event,
        r#"{
            "type": "session.error",
            "error": {
                "type": "mcp_connection_failed_error",
                "message": "could not reach github",
                "retry_status": {"type": "retrying"},
                "mcp_server_name": "github"
            }
        }"#,
    );
    let Event::SessionError(SessionError { error }) = &event else { panic!("wrong variant") };
    assert_eq!(error.message(), "could not reach github");
    assert_eq!(error.retry_status(), RetryStatus::Retrying);

    let repository = parse(
        r#"{"type":"session.error","error":{"type":"repository_clone_error",
            "message":"clone failed","retry_status":{"type":"retrying"}}}"#,
    );
    let expected = Event::SessionError(SessionError {
        error: SessionErrorDetail::RepositoryCloneError {
            message: "clone failed".to_owned(),
            retry_status: RetryStatus::Retrying,
            repository_url: None,
        },
    });
    assert_eq!(repository, expected);
}

#[test]
fn span_model_request_end_with_model_usage() {
    let event = Event::SpanModelRequestEnd(SpanModelRequestEnd {
        model_request_start_id: tool_use_id(),
        model_usage: ModelUsage {
            input_tokens: 1830,
            output_tokens: 412,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 6144,
            speed: Some(Speed::Fast),
        },
        is_error: None,
    });
    assert_json(
        &event,
        &format!(
            r#"{{
                "type": "span.model_request_end",
                "model_request_start_id": "{TOOL_USE_ID}",
                "model_usage": {{
                    "input_tokens": 1830,
                    "output_tokens": 412,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 6144,
                    "speed": "fast"
                }},
                "is_error": null
            }}"#
        ),
    );
    let missing_usage = r#"{"type":"span.model_request_end","model_request_start_id":"x"}"#;
    assert!(serde_json::from_str::<Event>(missing_usage).is_err(), "required fields are required");
}

#[test]
fn agent_tool_result_with_content() {
    let event = Event::AgentToolResult(AgentToolResult {
        tool_use_id: tool_use_id(),
        content: Some(vec![
            ContentBlock::text("total 0"),
            ContentBlock::Image {
                source: ImageSource::Base64 { media_type: "image/png".to_owned(), data: "iVBORw0KGgo=".to_owned() },
            },
        ]),
        is_error: Some(false),
    });
    assert_json(
        &event,
        &format!(
            r#"{{
                "type": "agent.tool_result",
                "tool_use_id": "{TOOL_USE_ID}",
                "content": [
                    {{"type": "text", "text": "total 0"}},
                    {{"type": "image", "source": {{"type": "base64", "media_type": "image/png",
                                                   "data": "iVBORw0KGgo="}}}}
                ],
                "is_error": false
            }}"#
        ),
    );
}

#[test]
fn content_blocks_of_every_kind() {
    let event = Event::UserCustomToolResult(UserCustomToolResult {
        custom_tool_use_id: tool_use_id(),
        content: Some(vec![
            ContentBlock::Document {
                source: DocumentSource::Text { media_type: "text/plain".to_owned(), data: "notes".to_owned() },
                title: Some("notes.txt".to_owned()),
                context: None,
            },
            ContentBlock::Document {
                source: DocumentSource::File { file_id: "file_abc".to_owned() },
                title: None,
                context: None,
            },
            ContentBlock::SearchResult {
                source: "https://example.com".to_owned(),
                title: "Example".to_owned(),
                content: vec![SearchResultContent::Text { text: "snippet".to_owned() }],
                citations: SearchResultCitations { enabled: true },
            },
            ContentBlock::Redacted,
        ]),
        is_error: None,
        session_thread_id: None,
    });
    assert_json(
        &event,
        &format!(
            r#"{{
                "type": "user.custom_tool_result",
                "custom_tool_use_id": "{TOOL_USE_ID}",
                "content": [
                    {{"type": "document", "title": "notes.txt", "context": null,
                      "source": {{"type": "text", "media_type": "text/plain", "data": "notes"}}}},
                    {{"type": "document", "title": null, "context": null,
                      "source": {{"type": "file", "file_id": "file_abc"}}}},
                    {{"type": "search_result", "source": "https://example.com", "title": "Example",
                      "content": [{{"type": "text", "text": "snippet"}}],
                      "citations": {{"enabled": true}}}},
                    {{"type": "redacted"}}
                ],
                "is_error": null,
                "session_thread_id": null
            }}"#
        ),
    );
}

#[test]
fn optional_fields_accept_missing_and_null() {
    let missing = parse(
        r#"{"type":"user.tool_confirmation","tool_use_id":"SEVT","result":"allow"}"#
            .replace("SEVT", TOOL_USE_ID)
            .as_str(),
    );
    let null = parse(
        r#"{"type":"user.tool_confirmation","tool_use_id":"SEVT","result":"allow",
            "deny_message":null,"session_thread_id":null}"#
            .replace("SEVT", TOOL_USE_ID)
            .as_str(),
    );
    let expected = Event::UserToolConfirmation(UserToolConfirmation {
        tool_use_id: tool_use_id(),
        result: ConfirmationResult::Allow,
        deny_message: None,
        session_thread_id: None,
    });
    assert_eq!(missing, expected);
    assert_eq!(null, expected);
}

#[test]
fn session_updated_omits_unchanged_and_writes_null_for_cleared() {
    let event = Event::SessionUpdated(SessionUpdated {
        agent: None,
        budget: Some(None),
        metadata: None,
        title: Some(Some("t2".to_owned())),
    });
    assert_json(&event, r#"{"type":"session.updated","budget":null,"title":"t2"}"#);
    let nothing = Event::SessionUpdated(SessionUpdated {
        agent: None,
        budget: None,
        metadata: Some(BTreeMap::new()),
        title: Some(None),
    });
    assert_json(&nothing, r#"{"type":"session.updated","metadata":{},"title":null}"#);
}

#[test]
fn session_usage_writes_active_seconds_as_float_seconds() {
    let event = Event::SessionUsage(SessionUsage {
        usage: UsageSnapshot {
            input_tokens: Some(0),
            output_tokens: Some(0),
            cache_read_input_tokens: Some(0),
            active_seconds: Some(Millis(1500)),
            list_cost: Some(Money { amount: "2500".to_owned(), currency: "USD".to_owned() }),
            ..UsageSnapshot::default()
        },
        budget: None,
    });
    assert_json(
        &event,
        r#"{
            "type": "session.usage",
            "usage": {
                "input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0,
                "cache_creation": null, "server_tool_use": null, "active_seconds": 1.5,
                "list_cost": {"amount": "2500", "currency": "USD"}
            },
            "budget": null
        }"#,
    );
    // The API's usage object may omit any field; seconds may be integers.
    let sparse = parse(r#"{"type":"session.usage","usage":{"active_seconds":0.0004}}"#);
    let Event::SessionUsage(SessionUsage { usage, .. }) = sparse else { panic!("wrong variant") };
    assert_eq!(usage, UsageSnapshot { active_seconds: Some(Millis(0)), ..UsageSnapshot::default() });
    let integral = parse(r#"{"type":"session.usage","usage":{"active_seconds":2}}"#);
    let Event::SessionUsage(SessionUsage { usage, .. }) = integral else { panic!("wrong variant") };
    assert_eq!(usage.active_seconds, Some(Millis(2000)));
    let negative = r#"{"type":"session.usage","usage":{"active_seconds":-1}}"#;
    assert!(serde_json::from_str::<Event>(negative).is_err());
}

#[test]
fn define_outcome_and_thread_events() {
    let thread: ThreadId = "sthr_01JQ8Z7M3P5R7T9V1X3Z5B7D0C".parse().unwrap();
    let event = Event::SessionThreadStatusIdle(SessionThreadStatusIdle {
        session_thread_id: thread,
        agent_name: "reviewer".to_owned(),
        stop_reason: StopReason::Refusal,
        stop_details: Some(StopDetails::Refusal { category: Some("bio".to_owned()), explanation: None }),
    });
    assert_json(
        &event,
        r#"{
            "type": "session.thread_status_idle",
            "session_thread_id": "sthr_01JQ8Z7M3P5R7T9V1X3Z5B7D0C",
            "agent_name": "reviewer",
            "stop_reason": {"type": "refusal"},
            "stop_details": {"type": "refusal", "category": "bio", "explanation": null}
        }"#,
    );
    let outcome = parse(
        r#"{"type":"user.define_outcome","outcome_id":"outc_01JQ8Z7M3P5R7T9V1X3Z5B7D0D",
            "description":"d","rubric":{"type":"file","file_id":"file_1"}}"#,
    );
    let Event::UserDefineOutcome(outcome) = outcome else { panic!("wrong variant") };
    assert_eq!(outcome.rubric, Rubric::File { file_id: "file_1".to_owned() });
    assert_eq!(outcome.max_iterations, None);
}

#[test]
fn internal_events_write_hashes_as_hex() {
    let event = Event::WorkspaceDelta(WorkspaceDelta {
        tool_use_id: None,
        changes: vec![WorkspaceChange {
            path: "a.txt".to_owned(),
            change: FileChange::Written { blob: [0xab; 32], size: 3, mode: 0o644 },
        }],
    });
    let hex = "ab".repeat(32);
    assert_json(
        &event,
        &format!(
            r#"{{"type":"x.workspace_delta","tool_use_id":null,"changes":[
                {{"path":"a.txt","change":{{"type":"written","blob":"{hex}","size":3,"mode":420}}}}
            ]}}"#
        ),
    );
    let bad = r#"{"type":"x.fork_origin","parent_session_id":"sesn_01JQ8Z7M3P5R7T9V1X3Z5B7D0E",
        "parent_seq":1,"parent_chain_hash":"AB"}"#;
    assert!(serde_json::from_str::<Event>(bad).is_err());
}

#[test]
fn session_resource_records_carry_no_token_field() {
    // The resource record is the log's copy of what the API shows: a
    // repository's url, mount path and checkout, never its token.
    let event = Event::SessionResource(SessionResource {
        resource_id: "sesrsc_01JQ8Z7M3P5R7T9V1X3Z5B7D0E".parse().unwrap(),
        change: ResourceChange::Attached {
            resource: AttachedResource::GithubRepository {
                url: "https://github.com/o/r".to_owned(),
                mount_path: "/workspace/r".to_owned(),
                checkout: Some(RepositoryCheckout::Commit { sha: "ab".repeat(20) }),
            },
        },
    });
    assert_json(
        &event,
        &format!(
            r#"{{"type":"x.session_resource","resource_id":"sesrsc_01JQ8Z7M3P5R7T9V1X3Z5B7D0E",
                "change":{{"type":"attached","resource":{{"type":"github_repository","url":"https://github.com/o/r",
                "mount_path":"/workspace/r","checkout":{{"type":"commit","sha":"{}"}}}}}}}}"#,
            "ab".repeat(20)
        ),
    );
    let file = Event::SessionResource(SessionResource {
        resource_id: "sesrsc_01JQ8Z7M3P5R7T9V1X3Z5B7D0E".parse().unwrap(),
        change: ResourceChange::Attached {
            resource: AttachedResource::File {
                file_id: "file_01JQ8Z7M3P5R7T9V1X3Z5B7D0E".parse().unwrap(),
                mount_path: "/mnt/session/uploads/data.csv".to_owned(),
            },
        },
    });
    assert_json(
        &file,
        r#"{"type":"x.session_resource","resource_id":"sesrsc_01JQ8Z7M3P5R7T9V1X3Z5B7D0E",
            "change":{"type":"attached","resource":{"type":"file","file_id":"file_01JQ8Z7M3P5R7T9V1X3Z5B7D0E",
            "mount_path":"/mnt/session/uploads/data.csv"}}}"#,
    );
    let cloned = Event::SessionResource(SessionResource {
        resource_id: "sesrsc_01JQ8Z7M3P5R7T9V1X3Z5B7D0E".parse().unwrap(),
        change: ResourceChange::RepositoryCloned { commit: "cd".repeat(20) },
    });
    assert_json(
        &cloned,
        &format!(
            r#"{{"type":"x.session_resource","resource_id":"sesrsc_01JQ8Z7M3P5R7T9V1X3Z5B7D0E",
                "change":{{"type":"repository_cloned","commit":"{}"}}}}"#,
            "cd".repeat(20)
        ),
    );
}

#[test]
fn server_tool_requests_name_their_model_call() {
    let event = Event::ServerToolRequests(ServerToolRequests {
        model_request_start_id: tool_use_id(),
        web_search_requests: 2,
        web_fetch_requests: 0,
    });
    assert_json(
        &event,
        &format!(
            r#"{{"type":"x.server_tool_requests","model_request_start_id":"{TOOL_USE_ID}",
                "web_search_requests":2,"web_fetch_requests":0}}"#
        ),
    );
}

#[test]
fn outcome_results_name_themselves_as_serde_does() {
    use OutcomeEvaluationResult::{Failed, Interrupted, MaxIterationsReached, NeedsRevision, Satisfied};
    for result in [Satisfied, NeedsRevision, MaxIterationsReached, Failed, Interrupted] {
        assert_eq!(serde_json::to_value(result).unwrap(), Value::from(result.as_str()));
    }
}

#[test]
fn an_outcome_end_without_an_evaluation_names_an_empty_start() {
    let end = |start: EventId| {
        Event::SpanOutcomeEvaluationEnd(SpanOutcomeEvaluationEnd {
            outcome_evaluation_start_id: start,
            outcome_id: crate::id::OutcomeId::from_parts(1, 2),
            iteration: 0,
            result: OutcomeEvaluationResult::Interrupted,
            explanation: String::new(),
            usage: ModelUsage::default(),
        })
    };
    for start in [EventId::NIL, tool_use_id()] {
        let json = serde_json::to_value(end(start)).unwrap();
        let shown = if start == EventId::NIL { String::new() } else { start.to_string() };
        assert_eq!(json["outcome_evaluation_start_id"], Value::from(shown));
        assert_eq!(serde_json::from_value::<Event>(json).unwrap(), end(start));
    }
}
