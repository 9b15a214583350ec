//! The fake Messages API's script: what each incoming request gets, and the
//! exact SSE events a scripted response streams as.
//!
//! A script is a JSON list of steps. A step is a response
//! `{"content": [...], "stop_reason"?, "stop_sequence"?, "usage"?, "model"?}`
//! or a fault `{"fault": ...}`. `status` and `hang` faults answer a request on
//! their own; `cut`, `error_event` and `drip` modify the response that follows
//! them in the script and are served together with it (modifiers stack). This
//! module is pure: no sockets, no clock.

use std::collections::VecDeque;

use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The answer once the script has run out.
pub const EXHAUSTED_TEXT: &str = "(script exhausted)";
/// Characters per `input_json_delta` chunk; small and odd so keys, strings
/// and escapes are cut mid-token.
const INPUT_JSON_CHUNK_CHARS: usize = 6;
/// Text and thinking are streamed in about this many deltas.
const TEXT_DELTAS: usize = 3;

/// One step of a script.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Respond(ScriptedResponse),
    Fault(Fault),
}

/// A scripted answer; see the module docs for the JSON form.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedResponse {
    /// Blocks as the non-streamed API would return them. `text`, `thinking`,
    /// `tool_use` and `server_tool_use` are streamed with deltas; any other
    /// block arrives whole in its `content_block_start`. A `tool_use` block
    /// with a `partial_input` string streams that text as its input JSON
    /// instead of `input` (with `stop_reason: "max_tokens"`, an input the
    /// token limit cut off).
    pub content: Vec<Value>,
    /// Default: `tool_use` when the content has a `tool_use` block, else `end_turn`.
    pub stop_reason: Option<String>,
    pub stop_sequence: Option<String>,
    /// Counts to report; missing ones are estimated from the sizes. A
    /// `server_tool_use` object is passed through in `message_delta`.
    pub usage: Option<Map<String, Value>>,
    /// Default: the `model` of the request.
    pub model: Option<String>,
}

/// A scripted failure; see the module docs for which ones modify the next response.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Answer with this HTTP status and an error envelope.
    Status {
        status: u16,
        /// Seconds, sent as `retry-after`.
        retry_after: Option<u64>,
        message: Option<String>,
    },
    /// Stream `after_events` events and half of the next one, then drop the connection.
    Cut { after_events: usize },
    /// Stream `after_events` events, then an `error` event, then end the stream.
    ErrorEvent {
        after_events: usize,
        #[serde(default = "overloaded")]
        error_type: String,
        message: Option<String>,
    },
    /// Wait `delay_ms` before every chunk of the next response.
    Drip { delay_ms: u64 },
    /// Send the response headers, then nothing, ever.
    Hang,
}

fn overloaded() -> String {
    "overloaded_error".to_owned()
}

impl Step {
    /// Parses one step.
    pub fn parse(value: Value) -> Result<Step, String> {
        if value.get("fault").is_some() {
            serde_json::from_value(value).map(Step::Fault).map_err(|error| format!("fault step: {error}"))
        } else {
            serde_json::from_value(value).map(Step::Respond).map_err(|error| format!("response step: {error}"))
        }
    }

    /// Parses a whole script (a JSON list of steps).
    pub fn parse_script(steps: Vec<Value>) -> Result<VecDeque<Step>, String> {
        steps
            .into_iter()
            .enumerate()
            .map(|(idx, step)| Step::parse(step).map_err(|error| format!("step {idx}: {error}")))
            .collect()
    }
}

/// What one request gets, after modifiers were folded in.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    Status { status: u16, retry_after: Option<u64>, message: Option<String> },
    Hang,
    Stream { response: ScriptedResponse, delay_ms: u64, ending: Ending },
}

/// How a streamed response ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    Complete,
    Cut { after_events: usize },
    ErrorEvent { after_events: usize, error_type: String, message: Option<String> },
}

/// Takes the steps for one request off the front of `script`.
pub fn next_plan(script: &mut VecDeque<Step>) -> Plan {
    let mut delay_ms = 0;
    let mut ending = Ending::Complete;
    loop {
        match script.pop_front() {
            Some(Step::Fault(Fault::Drip { delay_ms: delay })) => delay_ms = delay,
            Some(Step::Fault(Fault::Cut { after_events })) => ending = Ending::Cut { after_events },
            Some(Step::Fault(Fault::ErrorEvent { after_events, error_type, message })) => {
                ending = Ending::ErrorEvent { after_events, error_type, message };
            }
            Some(Step::Fault(Fault::Status { status, retry_after, message })) => {
                return Plan::Status { status, retry_after, message };
            }
            Some(Step::Fault(Fault::Hang)) => return Plan::Hang,
            Some(Step::Respond(response)) => return Plan::Stream { response, delay_ms, ending },
            None => return Plan::Stream { response: exhausted(), delay_ms, ending },
        }
    }
}

fn exhausted() -> ScriptedResponse {
    ScriptedResponse {
        content: vec![json!({"type": "text", "text": EXHAUSTED_TEXT})],
        stop_reason: Some("end_turn".to_owned()),
        stop_sequence: None,
        usage: None,
        model: None,
    }
}

/// The error `type` the API uses for an HTTP status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        409 => "conflict_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        504 => "timeout_error",
        _ => "api_error",
    }
}

/// The API's error envelope.
pub fn error_body(kind: &str, message: &str, request_id: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id})
}

/// Numbers that make one response's ids unique.
#[derive(Debug, Clone, Copy)]
pub struct Ids {
    /// 1-based count of responses served.
    pub response: u64,
}

/// The SSE events `(event name, data)` of a complete scripted response.
pub fn events(
    response: &ScriptedResponse,
    request_model: &str,
    request_bytes: usize,
    ids: Ids,
) -> Vec<(String, Value)> {
    let model = response.model.clone().unwrap_or_else(|| request_model.to_owned());
    let usage = |name: &str| response.usage.as_ref().and_then(|usage| usage.get(name)).and_then(Value::as_u64);
    let content_chars: usize = response.content.iter().map(|block| block.to_string().len()).sum();
    let input_tokens = usage("input_tokens").unwrap_or((request_bytes / 4).max(1) as u64);
    let output_tokens = usage("output_tokens").unwrap_or((content_chars / 4).max(1) as u64);
    let has_tool_use = response.content.iter().any(|block| block.get("type") == Some(&json!("tool_use")));
    let stop_reason =
        response.stop_reason.clone().unwrap_or_else(|| if has_tool_use { "tool_use" } else { "end_turn" }.to_owned());

    let mut events = vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": {
                "id": format!("msg_fake_{:06}", ids.response),
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {
                    "input_tokens": input_tokens,
                    "cache_creation_input_tokens": usage("cache_creation_input_tokens").unwrap_or(0),
                    "cache_read_input_tokens": usage("cache_read_input_tokens").unwrap_or(0),
                    "output_tokens": 1
                }
            }}),
        ),
        event("ping", json!({"type": "ping"})),
    ];
    for (index, block) in response.content.iter().enumerate() {
        block_events(&mut events, index, block, ids);
    }
    let mut delta_usage = json!({"output_tokens": output_tokens});
    // The API reports server tool uses (web searches) with the final counts.
    if let (Some(server), Some(usage)) =
        (response.usage.as_ref().and_then(|usage| usage.get("server_tool_use")), delta_usage.as_object_mut())
    {
        usage.insert("server_tool_use".to_owned(), server.clone());
    }
    events.push(event(
        "message_delta",
        json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": response.stop_sequence},
            "usage": delta_usage}),
    ));
    events.push(event("message_stop", json!({"type": "message_stop"})));
    events
}

fn event(name: &str, data: Value) -> (String, Value) {
    (name.to_owned(), data)
}

fn block_events(events: &mut Vec<(String, Value)>, index: usize, block: &Value, ids: Ids) {
    let kind = block.get("type").and_then(Value::as_str).unwrap_or_default();
    let text = |name: &str| block.get(name).and_then(Value::as_str).unwrap_or_default();
    let start = |content_block: Value| {
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": content_block}),
        )
    };
    let delta = |delta: Value| {
        event("content_block_delta", json!({"type": "content_block_delta", "index": index, "delta": delta}))
    };
    match kind {
        "text" => {
            events.push(start(json!({"type": "text", "text": ""})));
            for piece in pieces(text("text"), TEXT_DELTAS) {
                events.push(delta(json!({"type": "text_delta", "text": piece})));
            }
        }
        "thinking" => {
            events.push(start(json!({"type": "thinking", "thinking": ""})));
            for piece in pieces(text("thinking"), TEXT_DELTAS) {
                events.push(delta(json!({"type": "thinking_delta", "thinking": piece})));
            }
            let signature = match block.get("signature").and_then(Value::as_str) {
                Some(signature) => signature.to_owned(),
                None => format!("fakesig_{:06}_{index}", ids.response),
            };
            events.push(delta(json!({"type": "signature_delta", "signature": signature})));
        }
        "tool_use" | "server_tool_use" => {
            let prefix = if kind == "tool_use" { "toolu" } else { "srvtoolu" };
            let id = match block.get("id").and_then(Value::as_str) {
                Some(id) => id.to_owned(),
                None => format!("{prefix}_fake_{:06}_{index}", ids.response),
            };
            events.push(start(json!({"type": kind, "id": id, "name": text("name"), "input": {}})));
            // The API opens with an empty chunk, then cuts the JSON anywhere.
            events.push(delta(json!({"type": "input_json_delta", "partial_json": ""})));
            let input = match block.get("partial_input").and_then(Value::as_str) {
                Some(partial) => partial.to_owned(),
                None => block.get("input").cloned().unwrap_or_else(|| json!({})).to_string(),
            };
            let n_pieces = input.chars().count().div_ceil(INPUT_JSON_CHUNK_CHARS);
            for piece in pieces(&input, n_pieces) {
                events.push(delta(json!({"type": "input_json_delta", "partial_json": piece})));
            }
        }
        _ => events.push(start(block.clone())),
    }
    events.push(event("content_block_stop", json!({"type": "content_block_stop", "index": index})));
}

/// `text` in about `n` pieces of whole characters (none for empty text).
fn pieces(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let size = chars.len().div_ceil(n.max(1)).max(1);
    chars.chunks(size).map(|chunk| chunk.iter().collect()).collect()
}

/// One SSE event as bytes, in the API's framing.
pub fn encode(name: &str, data: &Value) -> Vec<u8> {
    format!("event: {name}\ndata: {data}\n\n").into_bytes()
}

/// How many `cache_control` breakpoints a request body carries.
pub fn count_cache_control(value: &Value) -> usize {
    match value {
        Value::Object(map) => {
            map.iter().map(|(key, child)| usize::from(key == "cache_control") + count_cache_control(child)).sum()
        }
        Value::Array(items) => items.iter().map(count_cache_control).sum(),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => 0,
    }
}

/// The image blocks of a request's messages (in their content and in
/// `tool_result` blocks' content), in order.
pub fn images(body: &Value) -> Vec<&Value> {
    let mut found = Vec::new();
    let messages = body.get("messages").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    for message in messages {
        for block in message.get("content").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
            match block.get("type").and_then(Value::as_str) {
                Some("image") => found.push(block),
                Some("tool_result") => {
                    let inner = block.get("content").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
                    found.extend(inner.iter().filter(|b| b.get("type").and_then(Value::as_str) == Some("image")));
                }
                Some(_) | None => {}
            }
        }
    }
    found
}

/// The width and height of an inline PNG image block, from its header (the
/// fake reads PNG only; other images pass unjudged).
pub fn png_dimensions(block: &Value) -> Option<(u32, u32)> {
    use base64::Engine as _;
    let data = block.get("source")?.get("data")?.as_str()?;
    let head = base64::engine::general_purpose::STANDARD.decode(data.get(..32).unwrap_or(data)).ok()?;
    if !head.starts_with(b"\x89PNG\r\n\x1a\n") {
        return None;
    }
    let be32 = |at: usize| Some(u32::from_be_bytes(head.get(at..at + 4)?.try_into().ok()?));
    Some((be32(16)?, be32(20)?))
}

#[cfg(test)]
#[path = "script_tests.rs"]
mod tests;
