//! The provider's server tool blocks as the API shows them.
//!
//! With Anthropic's server tools (`crate::model::WebTools::Server`) a web
//! search or fetch happens inside a model response: a `server_tool_use` block
//! names the call and a `web_search_tool_result` or `web_fetch_tool_result`
//! block (in the same response, or in the continuation of a `pause_turn`)
//! carries its result. Both stay in `x.model_response`, where the context
//! needs them; the hosted API shows web tool calls as `agent.tool_use` and
//! their results as `agent.tool_result` (a refused fetch is an
//! `agent.tool_result` with `is_error`, and the SDK's worker sees the calls),
//! so the runner records those events too, made here. The state machine and
//! the context recognise the calls as run by the provider (their links point
//! at `server_tool_use` blocks): they are never run, awaited or answered
//! again.

use logbook_core::event::ContentBlock;
use serde_json::Value;

use super::ToolOutcome;

/// The block naming a call the provider runs itself.
pub const SERVER_TOOL_USE: &str = "server_tool_use";
/// The result blocks of the provider's web tools.
pub const RESULT_BLOCKS: [&str; 2] = ["web_search_tool_result", "web_fetch_tool_result"];
/// Search results listed in a result's text.
const MAX_LISTED_RESULTS: usize = 50;

/// The provider's id of the call a result block answers, and the result as
/// tool result content; `None` for a block that is not a web tool result.
pub fn result_outcome(block: &Value) -> Option<(String, ToolOutcome)> {
    let kind = block.get("type").and_then(Value::as_str)?;
    if !RESULT_BLOCKS.contains(&kind) {
        return None;
    }
    let tool_use_id = block.get("tool_use_id").and_then(Value::as_str)?.to_owned();
    let content = block.get("content").unwrap_or(&Value::Null);
    let outcome = match content.get("type").and_then(Value::as_str) {
        Some("web_search_tool_result_error" | "web_fetch_tool_result_error") => {
            let code = content.get("error_code").and_then(Value::as_str).unwrap_or("unknown");
            let tool = if kind == "web_search_tool_result" { "web_search" } else { "web_fetch" };
            ToolOutcome::error(format!("{tool} failed: {code}"))
        }
        Some("web_fetch_result") => fetched(content),
        Some(_) | None => match content {
            Value::Array(results) => searched(results),
            Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) | Value::Object(_) => {
                ToolOutcome::text(content.to_string())
            }
        },
    };
    Some((tool_use_id, outcome))
}

/// A web search's results as one text block: title, URL and page age of each
/// (their content is encrypted for the model alone).
fn searched(results: &[Value]) -> ToolOutcome {
    if results.is_empty() {
        return ToolOutcome::text("No results.");
    }
    let mut lines = Vec::new();
    for (n, result) in results.iter().take(MAX_LISTED_RESULTS).enumerate() {
        let title = result.get("title").and_then(Value::as_str).unwrap_or("(untitled)");
        let url = result.get("url").and_then(Value::as_str).unwrap_or("");
        let age = result.get("page_age").and_then(Value::as_str).map(|age| format!(" ({age})")).unwrap_or_default();
        lines.push(format!("{}. {title}\n   {url}{age}", n + 1));
    }
    if results.len() > MAX_LISTED_RESULTS {
        lines.push(format!("... and {} more", results.len() - MAX_LISTED_RESULTS));
    }
    ToolOutcome::text(lines.join("\n"))
}

/// A fetched page: its document block as the provider gave it, or its URL
/// when the block is not one the API's events can carry.
fn fetched(content: &Value) -> ToolOutcome {
    let url = content.get("url").and_then(Value::as_str).unwrap_or("");
    let document = content.get("content").cloned().and_then(|block| serde_json::from_value::<ContentBlock>(block).ok());
    match document {
        Some(block @ ContentBlock::Document { .. }) => ToolOutcome { content: vec![block], is_error: false },
        Some(
            ContentBlock::Text { .. }
            | ContentBlock::Image { .. }
            | ContentBlock::SearchResult { .. }
            | ContentBlock::Redacted,
        )
        | None => ToolOutcome::text(format!("Fetched {url}")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

    use logbook_core::event::DocumentSource;
    use serde_json::json;

    use super::*;

    #[test]
    fn search_results_fetches_and_errors_become_tool_results() {
        let search = json!({"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": [
            {"type": "web_search_result", "url": "https://docs.rs/", "title": "Docs.rs", "page_age": "1 day ago",
             "encrypted_content": "xyz"}]});
        let (id, outcome) = result_outcome(&search).unwrap();
        assert_eq!(id, "srvtoolu_1");
        assert_eq!(outcome, ToolOutcome::text("1. Docs.rs\n   https://docs.rs/ (1 day ago)"));

        let refused = json!({"type": "web_fetch_tool_result", "tool_use_id": "srvtoolu_2",
            "content": {"type": "web_fetch_tool_result_error", "error_code": "url_not_allowed"}});
        let (_, outcome) = result_outcome(&refused).unwrap();
        assert_eq!(outcome, ToolOutcome::error("web_fetch failed: url_not_allowed"));

        let page = json!({"type": "web_fetch_tool_result", "tool_use_id": "srvtoolu_3", "content": {
            "type": "web_fetch_result", "url": "https://example.com/",
            "content": {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "Hi"},
                        "title": "Example"}}});
        let (_, outcome) = result_outcome(&page).unwrap();
        assert_eq!(
            outcome.content,
            vec![ContentBlock::Document {
                source: DocumentSource::Text { media_type: "text/plain".into(), data: "Hi".into() },
                title: Some("Example".into()),
                context: None,
            }]
        );
        assert!(result_outcome(&json!({"type": "text", "text": "x"})).is_none());
    }
}
