//! Turning a Messages API event stream into the message it describes.
//!
//! Bytes go through a guard (idle timer, size limits), then `sse-stream`'s
//! decoder (CRLF, UTF-8 split across chunks and partial lines are its job),
//! then [`Accumulator`], which folds the events (`message_start`,
//! `content_block_*`, `message_delta`, `message_stop`, `ping`, `error`) into
//! the content blocks the API would have returned non-streamed. Blocks whose
//! type this client does not know are kept exactly as they arrived, and so are
//! unknown fields of known blocks; unknown event and delta types are skipped,
//! as the API asks of clients. A tool call whose input `max_tokens` cut off
//! (its JSON incomplete, in the last block of a response that stops with
//! `max_tokens`) is part of a complete response: the block is kept with
//! `input: {}` (the API needs an object when it is sent back), and the runner
//! answers the call with an error result instead of running it. An
//! unparsable input anywhere else, and anything else that is not the
//! protocol, is [`ModelError::Broken`], never a panic.
//!
//! This module does no HTTP; `client` feeds it a response body and tests feed
//! it recorded bytes.

use std::error::Error as StdError;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sse_stream::{Sse, SseByteStream};

use super::error::{ModelError, truncate};

/// Most bytes one model response may stream. Far above what `max_tokens`
/// allows with SSE framing; a stream past it is broken, not buffered. The
/// response is recorded twice in one append (`x.model_response` and the
/// public events), so it must fit one event and half an append.
pub const MAX_STREAM_BYTES: usize = 16 * 1024 * 1024;
/// Most bytes received without completing an SSE event. A single event can
/// carry a whole server-tool result (a fetched page), hence not tiny.
pub const MAX_SSE_EVENT_BYTES: usize = 8 * 1024 * 1024;
/// Most content blocks in one response. Each becomes at most one event,
/// and a response's events are appended together with a few more.
pub const MAX_CONTENT_BLOCKS: usize = 1_000;

const _: () = assert!(MAX_SSE_EVENT_BYTES < MAX_STREAM_BYTES);
// With room for the envelopes and the few other events of the append.
const _: () = assert!(MAX_STREAM_BYTES <= logbook_core::limits::MAX_EVENT_BYTES / 2);
const _: () = assert!(2 * MAX_STREAM_BYTES <= logbook_core::limits::MAX_APPEND_BYTES / 2);
const _: () = assert!(MAX_CONTENT_BLOCKS + 16 <= logbook_core::limits::MAX_EVENTS_PER_APPEND);

/// Progress of a streaming response, for live previews. The final
/// [`ModelResponse`] is the authority; these only say what arrived so far.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// `message_start`: the message id, the model that answers, and the
    /// usage it reports (the input side is final from here on: a request cut
    /// short later is still billed for it).
    MessageStart { id: String, model: String, usage: Usage },
    /// A content block began; `kind` is its `type` (`text`, `thinking`,
    /// `tool_use`, `server_tool_use`, `web_search_tool_result`, ...).
    BlockStart { index: usize, kind: String },
    /// More text of a `text` block.
    TextDelta { index: usize, text: String },
    /// More reasoning of a `thinking` block.
    ThinkingDelta { index: usize, thinking: String },
    /// More of a tool input's JSON text (not valid JSON until the block stops).
    InputJsonDelta { index: usize, partial_json: String },
    /// A content block is complete, exactly as it appears in the response.
    BlockStop { index: usize, block: Value },
    /// `message_delta`: the stop reason and the usage so far.
    MessageDelta { stop_reason: Option<String>, usage: Usage },
}

/// A complete assistant message, as the non-streaming API would return it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelResponse {
    /// `msg_...`.
    pub id: String,
    /// The model that answered (may differ from the alias requested).
    pub model: String,
    /// The assistant content blocks, signatures, ids and inputs included.
    pub content: Vec<Value>,
    /// `end_turn`, `tool_use`, `max_tokens`, `stop_sequence`, `pause_turn`,
    /// `refusal`, ... (absent only from a non-conforming endpoint).
    pub stop_reason: Option<String>,
    pub stop_sequence: Option<String>,
    pub usage: Usage,
    /// The `request-id` response header, for support requests and logs.
    pub request_id: Option<String>,
}

/// Token counts of one response, and the server tool uses it billed
/// (`usage.server_tool_use`). `message_start` gives the input side and a
/// provisional output count; each `message_delta` carries cumulative counts
/// that replace the ones it names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    #[serde(default)]
    pub web_search_requests: u64,
    #[serde(default)]
    pub web_fetch_requests: u64,
}

impl Usage {
    /// Overwrites every count present (and a number) in `usage`.
    fn merge(&mut self, usage: Option<&Value>) {
        let Some(usage) = usage else { return };
        let count = |name: &str| usage.get(name).and_then(Value::as_u64);
        if let Some(n) = count("input_tokens") {
            self.input_tokens = n;
        }
        if let Some(n) = count("output_tokens") {
            self.output_tokens = n;
        }
        if let Some(n) = count("cache_creation_input_tokens") {
            self.cache_creation_input_tokens = n;
        }
        if let Some(n) = count("cache_read_input_tokens") {
            self.cache_read_input_tokens = n;
        }
        let server_tool = |name: &str| usage.get("server_tool_use").and_then(|s| s.get(name)).and_then(Value::as_u64);
        if let Some(n) = server_tool("web_search_requests") {
            self.web_search_requests = n;
        }
        if let Some(n) = server_tool("web_fetch_requests") {
            self.web_fetch_requests = n;
        }
    }
}

/// Reads an SSE body to `message_stop` and returns the message (without its
/// `request_id`, which only the HTTP layer knows).
///
/// Fails with `Broken` when no bytes arrive for `idle_timeout`, when the body
/// ends or fails before `message_stop`, or when a limit is exceeded; with the
/// mapped error when the stream carries an `error` event.
pub(crate) async fn read_stream<S, E>(
    body: S,
    idle_timeout: Duration,
    on_event: &mut (dyn FnMut(StreamEvent) + Send),
) -> Result<ModelResponse, ModelError>
where
    S: Stream<Item = Result<Bytes, E>> + Send,
    E: StdError + Send + Sync + 'static,
{
    // Bytes received since the decoder last completed an event; reset below.
    let pending = Arc::new(AtomicUsize::new(0));
    let guarded = guard(body, idle_timeout, Arc::clone(&pending));
    let mut events = pin!(SseByteStream::new(guarded));
    let mut accumulator = Accumulator::default();
    loop {
        let sse = match events.next().await {
            Some(Ok(sse)) => sse,
            Some(Err(error)) => return Err(decode_error(&error)),
            None => return Err(accumulator.ended_early()),
        };
        pending.store(0, Ordering::Relaxed);
        match accumulator.feed(&sse, on_event)? {
            Fed::More => {}
            Fed::Stopped => return accumulator.finish(),
        }
    }
}

/// Why the byte stream under the SSE decoder stopped early.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("the connection failed mid-stream: {0}")]
    Transport(String),
    #[error("no bytes for {0:?} (idle timeout)")]
    Idle(Duration),
    #[error("more than {limit} bytes {what}")]
    TooLarge { what: &'static str, limit: usize },
}

/// State of [`guard`]'s unfold.
struct Guard<S> {
    body: std::pin::Pin<Box<S>>,
    idle_timeout: Duration,
    total: usize,
    pending: Arc<AtomicUsize>,
    done: bool,
}

/// The body with an idle timer on every chunk and the byte limits enforced;
/// the first failure is yielded once, then the stream ends.
fn guard<S, E>(
    body: S,
    idle_timeout: Duration,
    pending: Arc<AtomicUsize>,
) -> impl Stream<Item = Result<Bytes, BodyError>> + Send
where
    S: Stream<Item = Result<Bytes, E>> + Send,
    E: StdError + Send + Sync + 'static,
{
    let state = Guard { body: Box::pin(body), idle_timeout, total: 0, pending, done: false };
    futures_util::stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        let item = match tokio::time::timeout(state.idle_timeout, state.body.next()).await {
            Err(_elapsed) => Err(BodyError::Idle(state.idle_timeout)),
            Ok(None) => return None,
            Ok(Some(Err(error))) => Err(BodyError::Transport(error_chain(&error))),
            Ok(Some(Ok(chunk))) => {
                state.total = state.total.saturating_add(chunk.len());
                let pending = state.pending.fetch_add(chunk.len(), Ordering::Relaxed).saturating_add(chunk.len());
                if state.total > MAX_STREAM_BYTES {
                    Err(BodyError::TooLarge { what: "in one response", limit: MAX_STREAM_BYTES })
                } else if pending > MAX_SSE_EVENT_BYTES {
                    Err(BodyError::TooLarge { what: "without completing an SSE event", limit: MAX_SSE_EVENT_BYTES })
                } else {
                    Ok(chunk)
                }
            }
        };
        state.done = item.is_err();
        Some((item, state))
    })
}

/// A decoder failure as a `Broken` error naming its cause.
fn decode_error(error: &sse_stream::Error) -> ModelError {
    if let sse_stream::Error::Body(inner) = error
        && let Some(body) = inner.downcast_ref::<BodyError>()
    {
        return ModelError::broken(body.to_string());
    }
    ModelError::broken(format!("undecodable event stream: {error}"))
}

/// An error and its sources, joined with `: ` (reqwest's own message alone
/// is often just "error decoding response body").
pub(crate) fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Whether the stream goes on after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fed {
    More,
    /// `message_stop` arrived: the message is complete.
    Stopped,
}

/// One content block being streamed.
#[derive(Debug)]
struct Block {
    value: Map<String, Value>,
    /// Concatenated `input_json_delta`s; `None` until the first one.
    partial_json: Option<String>,
    stopped: bool,
}

/// A tool input that did not parse when its block stopped: acceptable only
/// as the last block of a response that stops with `max_tokens`.
#[derive(Debug)]
struct CutInput {
    /// Why it is not JSON, and its start: the error if it was not cut.
    error: String,
}

/// Folds Messages API stream events into a message. Pure: no IO, no clock.
#[derive(Debug, Default)]
pub(crate) struct Accumulator {
    /// The tool input that did not parse, if one did not.
    cut_input: Option<CutInput>,
    /// `(id, model)` once `message_start` arrived.
    head: Option<(String, String)>,
    blocks: Vec<Block>,
    stop_reason: Option<String>,
    stop_sequence: Option<String>,
    usage: Usage,
}

impl Accumulator {
    /// Applies one SSE event, reporting progress through `on_event`.
    pub(crate) fn feed(
        &mut self,
        sse: &Sse,
        on_event: &mut (dyn FnMut(StreamEvent) + Send),
    ) -> Result<Fed, ModelError> {
        let Some(data) = sse.data.as_deref() else {
            // A block of only comments, `id:` or `retry:` fields carries nothing.
            return Ok(Fed::More);
        };
        if sse.event.as_deref() == Some("ping") {
            return Ok(Fed::More);
        }
        let value: Value = serde_json::from_str(data).map_err(|error| {
            ModelError::broken(format!("event {:?} is not JSON ({error}): {}", sse.event, truncate(data, 200)))
        })?;
        // The JSON `type` is authoritative; the SSE `event:` name only repeats it.
        let kind = match value.get("type").and_then(Value::as_str) {
            Some(kind) => kind.to_owned(),
            None => sse.event.clone().unwrap_or_default(),
        };
        match kind.as_str() {
            "ping" => Ok(Fed::More),
            "error" => Err(ModelError::from_error_event(&value)),
            "message_start" => self.message_start(&value, on_event),
            "content_block_start" => self.block_start(&value, on_event),
            "content_block_delta" => self.block_delta(&value, on_event),
            "content_block_stop" => self.block_stop(&value, on_event),
            "message_delta" => self.message_delta(&value, on_event),
            "message_stop" => {
                self.require_started("message_stop")?;
                Ok(Fed::Stopped)
            }
            // New event types may be added to the protocol; skipping them is
            // what the API documentation asks of clients.
            _ => {
                tracing::debug!(event = %kind, "skipping an unknown model stream event");
                Ok(Fed::More)
            }
        }
    }

    /// The message, once `message_stop` was fed.
    pub(crate) fn finish(self) -> Result<ModelResponse, ModelError> {
        let (id, model) = self.head.ok_or_else(|| ModelError::broken("message_stop before message_start"))?;
        if !logbook_replay::machine::is_cut_off(self.stop_reason.as_deref())
            && let Some(cut) = self.cut_input
        {
            return Err(ModelError::broken(cut.error));
        }
        let mut content = Vec::with_capacity(self.blocks.len());
        for (index, block) in self.blocks.into_iter().enumerate() {
            if !block.stopped {
                return Err(ModelError::broken(format!("content block {index} never stopped")));
            }
            content.push(Value::Object(block.value));
        }
        Ok(ModelResponse {
            id,
            model,
            content,
            stop_reason: self.stop_reason,
            stop_sequence: self.stop_sequence,
            usage: self.usage,
            request_id: None,
        })
    }

    /// The error for a body that ended before `message_stop`.
    pub(crate) fn ended_early(&self) -> ModelError {
        if let Some(cut) = &self.cut_input {
            return ModelError::broken(format!("{} (and the stream ended before message_stop)", cut.error));
        }
        let received = match &self.head {
            None => "before message_start".to_owned(),
            Some(_) => format!("after {} content block(s)", self.blocks.len()),
        };
        ModelError::broken(format!("the stream ended before message_stop ({received})"))
    }

    fn require_started(&self, event: &str) -> Result<(), ModelError> {
        match self.head {
            Some(_) => Ok(()),
            None => Err(ModelError::broken(format!("{event} before message_start"))),
        }
    }

    fn message_start(
        &mut self,
        value: &Value,
        on_event: &mut (dyn FnMut(StreamEvent) + Send),
    ) -> Result<Fed, ModelError> {
        if self.head.is_some() {
            return Err(ModelError::broken("a second message_start"));
        }
        let message = value.get("message").ok_or_else(|| ModelError::broken("message_start without a message"))?;
        let text = |name: &str| message.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
        let (id, model) = (text("id"), text("model"));
        self.usage.merge(message.get("usage"));
        self.head = Some((id.clone(), model.clone()));
        on_event(StreamEvent::MessageStart { id, model, usage: self.usage });
        Ok(Fed::More)
    }

    fn block_start(
        &mut self,
        value: &Value,
        on_event: &mut (dyn FnMut(StreamEvent) + Send),
    ) -> Result<Fed, ModelError> {
        self.require_started("content_block_start")?;
        let index = event_index(value, "content_block_start")?;
        if index != self.blocks.len() {
            return Err(ModelError::broken(format!(
                "content_block_start for block {index}, expected block {}",
                self.blocks.len()
            )));
        }
        if index >= MAX_CONTENT_BLOCKS {
            return Err(ModelError::broken(format!("more than {MAX_CONTENT_BLOCKS} content blocks")));
        }
        // The model went on after the input: it was not cut, it is not JSON.
        if let Some(cut) = self.cut_input.take() {
            return Err(ModelError::broken(cut.error));
        }
        let Some(Value::Object(block)) = value.get("content_block") else {
            return Err(ModelError::broken(format!("content_block_start {index} without a content_block object")));
        };
        let kind = block.get("type").and_then(Value::as_str).unwrap_or_default().to_owned();
        self.blocks.push(Block { value: block.clone(), partial_json: None, stopped: false });
        on_event(StreamEvent::BlockStart { index, kind });
        Ok(Fed::More)
    }

    fn block_delta(
        &mut self,
        value: &Value,
        on_event: &mut (dyn FnMut(StreamEvent) + Send),
    ) -> Result<Fed, ModelError> {
        let index = event_index(value, "content_block_delta")?;
        let block = self.open_block(index, "content_block_delta")?;
        let delta = value.get("delta").ok_or_else(|| ModelError::broken("content_block_delta without a delta"))?;
        let delta_kind = delta.get("type").and_then(Value::as_str).unwrap_or_default();
        let field = |name: &str| {
            delta
                .get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| ModelError::broken(format!("{delta_kind} of block {index} without {name}")))
        };
        match delta_kind {
            "text_delta" => {
                let text = field("text")?;
                append_text(&mut block.value, "text", text);
                on_event(StreamEvent::TextDelta { index, text: text.to_owned() });
            }
            "thinking_delta" => {
                let thinking = field("thinking")?;
                append_text(&mut block.value, "thinking", thinking);
                on_event(StreamEvent::ThinkingDelta { index, thinking: thinking.to_owned() });
            }
            "signature_delta" => append_text(&mut block.value, "signature", field("signature")?),
            "input_json_delta" => {
                let partial = field("partial_json")?;
                block.partial_json.get_or_insert_with(String::new).push_str(partial);
                on_event(StreamEvent::InputJsonDelta { index, partial_json: partial.to_owned() });
            }
            "citations_delta" => {
                let citation =
                    delta.get("citation").ok_or_else(|| ModelError::broken("citations_delta without a citation"))?;
                let citations = block.value.entry("citations").or_insert_with(|| Value::Array(Vec::new()));
                match citations {
                    Value::Array(list) => list.push(citation.clone()),
                    Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) | Value::Object(_) => {
                        *citations = Value::Array(vec![citation.clone()]);
                    }
                }
            }
            _ => tracing::debug!(delta = %delta_kind, index, "skipping an unknown content block delta"),
        }
        Ok(Fed::More)
    }

    fn block_stop(&mut self, value: &Value, on_event: &mut (dyn FnMut(StreamEvent) + Send)) -> Result<Fed, ModelError> {
        let index = event_index(value, "content_block_stop")?;
        let mut cut = None;
        let block = self.open_block(index, "content_block_stop")?;
        if let Some(partial) = block.partial_json.take() {
            // The API sends `""` deltas for a tool called without arguments.
            let input = if partial.trim().is_empty() {
                Value::Object(Map::new())
            } else {
                match serde_json::from_str(&partial) {
                    Ok(input) => input,
                    Err(error) => {
                        // Cut by `max_tokens` if the response says so next;
                        // `finish` and the events after decide.
                        let error =
                            format!("the input of block {index} is not JSON ({error}): {}", truncate(&partial, 200));
                        cut = Some(CutInput { error });
                        Value::Object(Map::new())
                    }
                }
            };
            block.value.insert("input".to_owned(), input);
        }
        block.stopped = true;
        on_event(StreamEvent::BlockStop { index, block: Value::Object(block.value.clone()) });
        if cut.is_some() {
            self.cut_input = cut;
        }
        Ok(Fed::More)
    }

    fn message_delta(
        &mut self,
        value: &Value,
        on_event: &mut (dyn FnMut(StreamEvent) + Send),
    ) -> Result<Fed, ModelError> {
        self.require_started("message_delta")?;
        if let Some(delta) = value.get("delta") {
            if let Some(reason) = delta.get("stop_reason") {
                self.stop_reason = reason.as_str().map(str::to_owned);
                if !logbook_replay::machine::is_cut_off(self.stop_reason.as_deref())
                    && let Some(cut) = self.cut_input.take()
                {
                    return Err(ModelError::broken(cut.error));
                }
            }
            if let Some(sequence) = delta.get("stop_sequence") {
                self.stop_sequence = sequence.as_str().map(str::to_owned);
            }
        }
        self.usage.merge(value.get("usage"));
        on_event(StreamEvent::MessageDelta { stop_reason: self.stop_reason.clone(), usage: self.usage });
        Ok(Fed::More)
    }

    /// The started, not yet stopped block `index`.
    fn open_block(&mut self, index: usize, event: &str) -> Result<&mut Block, ModelError> {
        match self.blocks.get_mut(index) {
            Some(block) if !block.stopped => Ok(block),
            Some(_) => Err(ModelError::broken(format!("{event} for block {index}, which already stopped"))),
            None => Err(ModelError::broken(format!("{event} for block {index}, which never started"))),
        }
    }
}

fn event_index(value: &Value, event: &str) -> Result<usize, ModelError> {
    value
        .get("index")
        .and_then(Value::as_u64)
        .and_then(|index| usize::try_from(index).ok())
        .ok_or_else(|| ModelError::broken(format!("{event} without a block index")))
}

/// Appends to a string field, creating it (or replacing a non-string).
fn append_text(block: &mut Map<String, Value>, name: &str, text: &str) {
    match block.get_mut(name) {
        Some(Value::String(existing)) => existing.push_str(text),
        Some(_) | None => {
            block.insert(name.to_owned(), Value::String(text.to_owned()));
        }
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
