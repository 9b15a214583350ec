//! Tests of the stream accumulator, fed recorded Messages API byte streams in
//! awkward chunkings (one byte at a time, CRLF and UTF-8 characters split
//! across chunks) and broken ones.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use super::*;

const IDLE: Duration = Duration::from_secs(5);

/// A text answer as the API streams it (from the streaming docs).
const TEXT_STREAM: &str = "event: message_start
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-6\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1,\"cache_creation_input_tokens\":7,\"cache_read_input_tokens\":100}}}

event: content_block_start
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}

event: ping
data: {\"type\": \"ping\"}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Héllo\"}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" 🦀!\"}}

event: content_block_stop
data: {\"type\":\"content_block_stop\",\"index\":0}

event: message_delta
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}

event: message_stop
data: {\"type\":\"message_stop\"}

";

fn expected_text_response() -> ModelResponse {
    ModelResponse {
        id: "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY".to_owned(),
        model: "claude-sonnet-4-6".to_owned(),
        content: vec![json!({"type": "text", "text": "Héllo 🦀!"})],
        stop_reason: Some("end_turn".to_owned()),
        stop_sequence: None,
        usage: Usage {
            input_tokens: 25,
            output_tokens: 15,
            cache_creation_input_tokens: 7,
            cache_read_input_tokens: 100,
            ..Usage::default()
        },
        request_id: None,
    }
}

fn chunked(chunks: Vec<Vec<u8>>) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
    futures_util::stream::iter(chunks.into_iter().map(|chunk| Ok(Bytes::from(chunk))))
}

async fn read(chunks: Vec<Vec<u8>>) -> (Result<ModelResponse, ModelError>, Vec<StreamEvent>) {
    let mut events = Vec::new();
    let result = read_stream(chunked(chunks), IDLE, &mut |event| events.push(event)).await;
    (result, events)
}

async fn read_str(text: &str) -> Result<ModelResponse, ModelError> {
    read(vec![text.as_bytes().to_vec()]).await.0
}

/// SSE events `(name, data)` as one byte string.
fn sse(events: &[(&str, Value)]) -> String {
    events.iter().map(|(name, data)| format!("event: {name}\ndata: {data}\n\n")).collect()
}

fn start() -> (&'static str, Value) {
    (
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_x", "type": "message", "role": "assistant",
            "content": [], "model": "m", "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 1}}}),
    )
}

fn block_start(index: usize, block: Value) -> (&'static str, Value) {
    ("content_block_start", json!({"type": "content_block_start", "index": index, "content_block": block}))
}

fn delta(index: usize, delta: Value) -> (&'static str, Value) {
    ("content_block_delta", json!({"type": "content_block_delta", "index": index, "delta": delta}))
}

fn block_stop(index: usize) -> (&'static str, Value) {
    ("content_block_stop", json!({"type": "content_block_stop", "index": index}))
}

fn message_delta(stop_reason: &str, output_tokens: u64) -> (&'static str, Value) {
    (
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null},
            "usage": {"output_tokens": output_tokens}}),
    )
}

fn stop() -> (&'static str, Value) {
    ("message_stop", json!({"type": "message_stop"}))
}

#[tokio::test]
async fn text_stream_in_one_chunk() {
    // Goal: the documented example folds into the documented message, and the
    // previews name the block and each delta.
    let (result, events) = read(vec![TEXT_STREAM.as_bytes().to_vec()]).await;
    assert_eq!(result, Ok(expected_text_response()));
    assert_eq!(
        events,
        vec![
            StreamEvent::MessageStart {
                id: "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY".to_owned(),
                model: "claude-sonnet-4-6".to_owned(),
                usage: Usage {
                    input_tokens: 25,
                    output_tokens: 1,
                    cache_creation_input_tokens: 7,
                    cache_read_input_tokens: 100,
                    ..Usage::default()
                }
            },
            StreamEvent::BlockStart { index: 0, kind: "text".to_owned() },
            StreamEvent::TextDelta { index: 0, text: "Héllo".to_owned() },
            StreamEvent::TextDelta { index: 0, text: " 🦀!".to_owned() },
            StreamEvent::BlockStop { index: 0, block: json!({"type": "text", "text": "Héllo 🦀!"}) },
            StreamEvent::MessageDelta {
                stop_reason: Some("end_turn".to_owned()),
                usage: expected_text_response().usage
            },
        ]
    );
}

#[tokio::test]
async fn every_split_point_gives_the_same_message() {
    // Goal: chunk boundaries never matter. Method: split the recorded stream
    // (LF and CRLF variants) at every byte, which cuts multi-byte UTF-8
    // characters, `\r\n` pairs and JSON tokens in two, and also feed it one
    // byte at a time.
    let crlf = TEXT_STREAM.replace('\n', "\r\n");
    for text in [TEXT_STREAM, crlf.as_str()] {
        let bytes = text.as_bytes();
        for split in 0..=bytes.len() {
            let (head, tail) = bytes.split_at(split);
            let (result, _) = read(vec![head.to_vec(), tail.to_vec()]).await;
            assert_eq!(result, Ok(expected_text_response()), "split at byte {split}");
        }
        let (result, _) = read(bytes.iter().map(|byte| vec![*byte]).collect()).await;
        assert_eq!(result, Ok(expected_text_response()));
    }
}

#[tokio::test]
async fn utf8_character_and_crlf_split_across_chunks() {
    // Goal: the two classic hand-written-parser bugs, spelled out: a 4-byte
    // character split 2+2 and a CRLF split between its bytes.
    let crlf = TEXT_STREAM.replace('\n', "\r\n");
    let crab = crlf.find('🦀').expect("the stream has a crab");
    let line_end = crlf.find("\r\n").expect("the stream has CRLF");
    let bytes = crlf.as_bytes();
    let chunks = vec![bytes[..=line_end].to_vec(), bytes[line_end + 1..crab + 2].to_vec(), bytes[crab + 2..].to_vec()];
    let (result, _) = read(chunks).await;
    assert_eq!(result, Ok(expected_text_response()));
}

#[tokio::test]
async fn thinking_with_signature_and_redacted_thinking() {
    // Goal: thinking text and its signature are kept for the next request;
    // redacted thinking arrives whole and is kept as is.
    let stream = sse(&[
        start(),
        block_start(0, json!({"type": "thinking", "thinking": ""})),
        delta(0, json!({"type": "thinking_delta", "thinking": "Let me think"})),
        delta(0, json!({"type": "thinking_delta", "thinking": " about it."})),
        delta(0, json!({"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"})),
        block_stop(0),
        block_start(1, json!({"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"})),
        block_stop(1),
        block_start(2, json!({"type": "text", "text": ""})),
        delta(2, json!({"type": "text_delta", "text": "42"})),
        block_stop(2),
        message_delta("end_turn", 30),
        stop(),
    ]);
    let (result, events) = read(vec![stream.into_bytes()]).await;
    let response = result.expect("a complete message");
    assert_eq!(
        response.content,
        vec![
            json!({"type": "thinking", "thinking": "Let me think about it.", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"}),
            json!({"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"}),
            json!({"type": "text", "text": "42"}),
        ]
    );
    assert!(events.contains(&StreamEvent::ThinkingDelta { index: 0, thinking: " about it.".to_owned() }));
    assert!(events.contains(&StreamEvent::BlockStart { index: 1, kind: "redacted_thinking".to_owned() }));
}

#[tokio::test]
async fn tool_use_input_split_mid_token() {
    // Goal: partial JSON is concatenated and parsed once, at block stop, however
    // the API split it; a tool called without arguments gets `{}`.
    let stream = sse(&[
        start(),
        block_start(0, json!({"type": "tool_use", "id": "toolu_01A", "name": "bash", "input": {}})),
        delta(0, json!({"type": "input_json_delta", "partial_json": ""})),
        delta(0, json!({"type": "input_json_delta", "partial_json": "{\"comm"})),
        delta(0, json!({"type": "input_json_delta", "partial_json": "and\": \"echo é"})),
        delta(0, json!({"type": "input_json_delta", "partial_json": "\\u00e9\", \"timeout_ms\": 12"})),
        delta(0, json!({"type": "input_json_delta", "partial_json": "00}"})),
        block_stop(0),
        block_start(1, json!({"type": "tool_use", "id": "toolu_01B", "name": "glob", "input": {}})),
        delta(1, json!({"type": "input_json_delta", "partial_json": ""})),
        block_stop(1),
        message_delta("tool_use", 40),
        stop(),
    ]);
    let (result, events) = read(vec![stream.into_bytes()]).await;
    let response = result.expect("a complete message");
    assert_eq!(
        response.content,
        vec![
            json!({"type": "tool_use", "id": "toolu_01A", "name": "bash",
                "input": {"command": "echo éé", "timeout_ms": 1200}}),
            json!({"type": "tool_use", "id": "toolu_01B", "name": "glob", "input": {}}),
        ]
    );
    assert_eq!(response.stop_reason.as_deref(), Some("tool_use"));
    assert!(events.contains(&StreamEvent::InputJsonDelta { index: 0, partial_json: "00}".to_owned() }));
}

#[tokio::test]
async fn a_tool_input_cut_by_max_tokens_is_a_max_tokens_response_not_a_broken_stream() {
    // Goal: when `max_tokens` runs out while the model writes a tool call's
    // input, the API streams the partial input JSON, stops the block, and
    // reports `stop_reason: max_tokens` with the output tokens billed
    // (Messages API docs, "Handling stop reasons": an incomplete tool use
    // block). That is a complete, well-formed stream. The accumulator parses
    // the input at `content_block_stop` and fails the whole response as
    // `Broken`, which is retryable: the runner re-sends the same request
    // (same `max_tokens`, same cut) until its attempts run out, each attempt
    // billed for its output yet recorded with only `message_start`'s
    // provisional output count, and the turn ends `retries_exhausted` with a
    // misleading "stream broke" error.
    // Method: such a stream; it must read as a `max_tokens` response with the
    // reported usage (or at least not as a retryable failure).
    let stream = sse(&[
        start(),
        block_start(0, json!({"type": "text", "text": ""})),
        delta(0, json!({"type": "text_delta", "text": "Writing the file."})),
        block_stop(0),
        block_start(1, json!({"type": "tool_use", "id": "toolu_01A", "name": "write", "input": {}})),
        delta(1, json!({"type": "input_json_delta", "partial_json": "{\"path\": \"/w/a.txt\", \"content\": \"lo"})),
        delta(1, json!({"type": "input_json_delta", "partial_json": "rem ipsum dol"})),
        block_stop(1),
        message_delta("max_tokens", 4096),
        stop(),
    ]);
    match read_str(&stream).await {
        Ok(response) => {
            assert_eq!(response.stop_reason.as_deref(), Some("max_tokens"));
            assert_eq!(response.usage.output_tokens, 4096, "the output billed is recorded");
        }
        Err(error) => {
            panic!("a max_tokens response is read as an error (retryable: {}): {error}", error.is_retryable())
        }
    }
}

#[tokio::test]
async fn server_tool_blocks_and_citations_pass_through() {
    // Goal: server tool blocks (input streamed like tool_use, results whole),
    // citations and blocks of unknown types arrive exactly as sent; unknown
    // event and delta types are skipped.
    let search_result = json!({"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1",
        "content": [{"type": "web_search_result", "url": "https://example.com", "title": "Example",
            "encrypted_content": "Eq8B", "page_age": null}]});
    let future_block = json!({"type": "hologram", "payload": {"nested": [1, 2, 3]}});
    let citation = json!({"type": "web_search_result_location", "url": "https://example.com",
        "title": "Example", "encrypted_index": "Eo8B", "cited_text": "An example"});
    let stream = sse(&[
        start(),
        block_start(0, json!({"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}})),
        delta(0, json!({"type": "input_json_delta", "partial_json": "{\"query\": \"exa"})),
        delta(0, json!({"type": "input_json_delta", "partial_json": "mple\"}"})),
        block_stop(0),
        block_start(1, search_result.clone()),
        block_stop(1),
        block_start(2, json!({"type": "text", "text": "", "citations": null})),
        delta(2, json!({"type": "citations_delta", "citation": citation})),
        delta(2, json!({"type": "text_delta", "text": "It is an example."})),
        delta(2, json!({"type": "sparkle_delta", "sparkle": true})),
        ("hologram_event", json!({"type": "hologram_event", "index": 2})),
        block_stop(2),
        block_start(3, future_block.clone()),
        block_stop(3),
        message_delta("end_turn", 50),
        stop(),
    ]);
    let response = read_str(&stream).await.expect("a complete message");
    assert_eq!(
        response.content,
        vec![
            json!({"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "example"}}),
            search_result,
            json!({"type": "text", "text": "It is an example.", "citations": [citation]}),
            future_block,
        ]
    );
}

#[tokio::test]
async fn usage_from_message_delta_replaces_only_what_it_names() {
    // Goal: message_start's input counts survive a message_delta that only
    // reports output tokens; one that reports everything (server tools) wins.
    let only_output = sse(&[start(), message_delta("end_turn", 77), stop()]);
    let usage = read_str(&only_output).await.expect("a complete message").usage;
    assert_eq!(usage, Usage { input_tokens: 10, output_tokens: 77, ..Usage::default() });

    let everything = sse(&[
        start(),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                "usage": {"input_tokens": 12, "output_tokens": 5, "cache_creation_input_tokens": 3,
                    "cache_read_input_tokens": 4, "server_tool_use": {"web_search_requests": 1}}}),
        ),
        stop(),
    ]);
    let usage = read_str(&everything).await.expect("a complete message").usage;
    assert_eq!(
        usage,
        Usage {
            input_tokens: 12,
            output_tokens: 5,
            cache_creation_input_tokens: 3,
            cache_read_input_tokens: 4,
            web_search_requests: 1,
            web_fetch_requests: 0
        }
    );
}

#[tokio::test]
async fn stop_sequence_is_reported() {
    let stream = sse(&[
        start(),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "stop_sequence", "stop_sequence": "END"},
                "usage": {"output_tokens": 2}}),
        ),
        stop(),
    ]);
    let response = read_str(&stream).await.expect("a complete message");
    assert_eq!(response.stop_reason.as_deref(), Some("stop_sequence"));
    assert_eq!(response.stop_sequence.as_deref(), Some("END"));
    assert_eq!(response.content, Vec::<Value>::new());
}

#[tokio::test]
async fn error_event_mid_stream() {
    // Goal: an `error` event after content has streamed fails the request with
    // the error it names, not with a truncated message.
    let overloaded = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
    let stream = sse(&[
        start(),
        block_start(0, json!({"type": "text", "text": ""})),
        delta(0, json!({"type": "text_delta", "text": "Half an ans"})),
        ("error", overloaded),
    ]);
    let result = read_str(&stream).await;
    assert_eq!(
        result,
        Err(ModelError::Overloaded {
            retry_after: None,
            message: "overloaded_error: Overloaded".to_owned(),
            retryable: true
        })
    );
    assert!(result.is_err_and(|error| error.is_retryable()));

    let api_error = json!({"type": "error", "error": {"type": "api_error", "message": "Internal"}});
    let result = read_str(&sse(&[start(), ("error", api_error)])).await;
    assert_eq!(
        result,
        Err(ModelError::Server { status: 500, message: "api_error: Internal".to_owned(), retry_after: None })
    );
}

#[tokio::test]
async fn stream_cut_before_message_stop_is_broken() {
    // Goal: every prefix of a stream that lacks message_stop is Broken, never a
    // message: the runner must not act on a truncated answer.
    let bytes = TEXT_STREAM.as_bytes();
    let stop_at = TEXT_STREAM.find("event: message_stop").expect("the stream has message_stop");
    for cut in 0..=stop_at {
        let (result, _) = read(vec![bytes[..cut].to_vec()]).await;
        assert!(matches!(result, Err(ModelError::Broken { .. })), "cut at {cut}: {result:?}");
    }
    let (result, _) = read(vec![bytes[..stop_at].to_vec()]).await;
    assert_eq!(
        result,
        Err(ModelError::Broken {
            reason: "the stream ended before message_stop (after 1 content block(s))".to_owned()
        })
    );
}

#[tokio::test]
async fn transport_error_mid_stream_is_broken() {
    let chunks = vec![
        Ok(Bytes::from(sse(&[start()]))),
        Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset by peer")),
    ];
    let result = read_stream(futures_util::stream::iter(chunks), IDLE, &mut |_| {}).await;
    assert_eq!(
        result,
        Err(ModelError::Broken { reason: "the connection failed mid-stream: connection reset by peer".to_owned() })
    );
}

#[tokio::test]
async fn silence_longer_than_the_idle_timeout_is_broken() {
    // Goal: headers and a first event, then nothing: the idle timer fires.
    // Method: a stream that never yields again, a 50 ms timeout (real time:
    // only a timer is pending, nothing else).
    let first = futures_util::stream::iter([Ok::<_, Infallible>(Bytes::from(sse(&[start()])))]);
    let body = futures_util::StreamExt::chain(first, futures_util::stream::pending());
    let result = read_stream(body, Duration::from_millis(50), &mut |_| {}).await;
    assert_eq!(result, Err(ModelError::Broken { reason: "no bytes for 50ms (idle timeout)".to_owned() }));
}

#[tokio::test]
async fn malformed_streams_are_broken() {
    // Goal: protocol violations are Broken with a reason, never a panic or a
    // silently wrong message.
    let cases: Vec<(String, &str)> = vec![
        ("event: message_start\ndata: {not json\n\n".to_owned(), "is not JSON"),
        (sse(&[block_start(0, json!({"type": "text", "text": ""}))]), "content_block_start before message_start"),
        (sse(&[start(), start()]), "a second message_start"),
        (sse(&[start(), block_start(1, json!({"type": "text", "text": ""}))]), "expected block 0"),
        (sse(&[start(), delta(0, json!({"type": "text_delta", "text": "x"}))]), "never started"),
        (sse(&[start(), block_start(0, json!({"type": "text"})), block_stop(0), block_stop(0)]), "already stopped"),
        (sse(&[start(), block_start(0, json!({"type": "text", "text": ""})), stop()]), "block 0 never stopped"),
        (sse(&[start(), ("content_block_start", json!({"type": "content_block_start"}))]), "without a block index"),
        (sse(&[start(), block_start(0, json!("text"))]), "without a content_block object"),
        (
            sse(&[
                start(),
                block_start(0, json!({"type": "tool_use", "id": "t", "name": "n", "input": {}})),
                delta(0, json!({"type": "input_json_delta", "partial_json": "{\"a\": "})),
                block_stop(0),
            ]),
            "the input of block 0 is not JSON",
        ),
        (sse(&[start(), delta(0, json!({"type": "text_delta"}))]), "never started"),
        (
            sse(&[
                start(),
                block_start(0, json!({"type": "text", "text": ""})),
                delta(0, json!({"type": "text_delta"})),
            ]),
            "text_delta of block 0 without text",
        ),
        (sse(&[stop()]), "message_stop before message_start"),
        (b"data: \xff\xfe\n\n".iter().map(|b| *b as char).collect(), "is not JSON"),
    ];
    for (stream, expected) in cases {
        let result = read_str(&stream).await;
        match result {
            Err(ModelError::Broken { reason }) => assert!(reason.contains(expected), "{reason:?} lacks {expected:?}"),
            other => panic!("{stream:?} gave {other:?}, expected Broken with {expected:?}"),
        }
    }
    let invalid_utf8 = vec![b"event: ping\ndata: \xff\xfe\n\n".to_vec()];
    let (result, _) = read(invalid_utf8).await;
    assert!(matches!(result, Err(ModelError::Broken { .. })), "{result:?}");
}

#[tokio::test]
async fn an_event_larger_than_the_limit_is_broken() {
    // Goal: a peer that never finishes an event cannot make us buffer without
    // bound. Method: 1 MiB chunks of one endless data line.
    let mut chunks = vec![b"event: content_block_delta\ndata: ".to_vec()];
    let n_chunks = MAX_SSE_EVENT_BYTES / (1024 * 1024) + 1;
    chunks.extend((0..n_chunks).map(|_| vec![b'x'; 1024 * 1024]));
    let (result, _) = read(chunks).await;
    assert_eq!(
        result,
        Err(ModelError::Broken {
            reason: format!("more than {MAX_SSE_EVENT_BYTES} bytes without completing an SSE event")
        })
    );
}

#[tokio::test]
async fn metadata_only_blocks_and_comments_are_ignored() {
    let stream = format!(": keep-alive comment\n\nretry: 100\n\n{}", sse(&[start(), stop()]));
    let response = read_str(&stream).await.expect("a complete message");
    assert_eq!(response.id, "msg_x");
}

#[tokio::test]
async fn only_the_last_block_of_a_max_tokens_response_may_have_a_cut_input() {
    // Goal: the cut block is kept with an object input (it is sent back in
    // later requests), and an unparsable input anywhere else is still a
    // broken stream: under another stop reason, or followed by a block.
    let tool = |index: usize| block_start(index, json!({"type": "tool_use", "id": "t", "name": "n", "input": {}}));
    let partial = |index: usize| delta(index, json!({"type": "input_json_delta", "partial_json": "{\"a\": \"b"}));
    let cut = sse(&[start(), tool(0), partial(0), block_stop(0), message_delta("max_tokens", 10), stop()]);
    let response = read_str(&cut).await.unwrap();
    assert_eq!(response.content, vec![json!({"type": "tool_use", "id": "t", "name": "n", "input": {}})]);

    let not_cut = sse(&[start(), tool(0), partial(0), block_stop(0), message_delta("tool_use", 10), stop()]);
    let followed = sse(&[
        start(),
        tool(0),
        partial(0),
        block_stop(0),
        block_start(1, json!({"type": "text", "text": ""})),
        block_stop(1),
        message_delta("max_tokens", 10),
        stop(),
    ]);
    for stream in [not_cut, followed] {
        match read_str(&stream).await {
            Err(ModelError::Broken { reason }) => {
                assert!(reason.contains("the input of block 0 is not JSON"), "{reason}")
            }
            other => panic!("expected a broken stream, got {other:?}"),
        }
    }
}
