//! The Anthropic Messages API client the runner calls the model with.
//!
//! - [`build_request`] turns an agent's configuration ([`AgentView`]) and a
//!   conversation into a request body: tools, system prompt, prompt-caching
//!   breakpoints, thinking (see the [`request`] module docs for the choices).
//! - [`ModelClient::stream`] sends it to `{base_url}/v1/messages` with
//!   `stream: true`, reports progress as [`StreamEvent`]s for live previews
//!   and returns the whole message as a [`ModelResponse`], content blocks
//!   exactly as the non-streaming API would return them.
//! - Every failure is a [`ModelError`] that says whether a retry may help and
//!   how long the API asked to wait. The client itself never retries.
//!
//! Nothing here touches the store or the session log: recording requests and
//! responses, retry budgets and `pause_turn` continuation are the runner's.
//!
//! ```no_run
//! # async fn example() -> Result<(), logbook_server::model::ModelError> {
//! use logbook_server::model::{AgentView, ModelClient, ModelConfig, StreamEvent, build_request};
//!
//! let Ok(config) = ModelConfig::from_env() else { return Ok(()) };
//! let client = ModelClient::new(config.clone())?;
//! let agent = AgentView { model: "claude-sonnet-4-6".into(), ..AgentView::default() };
//! let conversation = [serde_json::json!({"role": "user", "content": "Hello"})];
//! let request = build_request(&agent, &conversation, &config.request_options());
//! let response = client
//!     .stream(&request, &mut |event| {
//!         if let StreamEvent::TextDelta { text, .. } = event {
//!             print!("{text}");
//!         }
//!     })
//!     .await?;
//! println!("\nstop_reason: {:?}, usage: {:?}", response.stop_reason, response.usage);
//! # Ok(())
//! # }
//! ```

mod client;
mod config;
mod error;
pub mod images;
pub mod request;
pub mod settings;
mod stream;

pub use client::{MAX_ERROR_BODY_BYTES, ModelClient};
pub use config::{
    ANTHROPIC_API_HOST, ANTHROPIC_VERSION, ConfigError, DEFAULT_BASE_URL, DEFAULT_COMPACTION_KEEP_PERCENT,
    DEFAULT_COMPACTION_PERCENT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_CONTEXT_WINDOW, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_TOKENS, ModelConfig,
};
pub use error::{MAX_ERROR_MESSAGE_BYTES, MAX_RETRY_AFTER, ModelError};
pub use request::{
    AgentView, CompactionSettings, McpToolName, RequestOptions, Thinking, ThinkingSupport, WebTools, build_request,
    thinking_support, tool_definitions, without_tool_use,
};
pub use stream::{MAX_CONTENT_BLOCKS, MAX_SSE_EVENT_BYTES, MAX_STREAM_BYTES, ModelResponse, StreamEvent, Usage};

/// The text of a response's text blocks, one per line (what a summary or a
/// verdict says).
pub fn text_of(content: &[serde_json::Value]) -> String {
    let texts: Vec<&str> = content
        .iter()
        .filter(|b| b.get("type").and_then(serde_json::Value::as_str) == Some("text"))
        .filter_map(|b| b.get("text").and_then(serde_json::Value::as_str))
        .collect();
    texts.join("\n")
}
