//! web_fetch's `url_sources`: which parts of the session's context a URL
//! may come from (managed-agents-api.md, the web_fetch extras). A URL is
//! fetched only when it appears in the text of an allowed source: the
//! user's messages (`user_input`), the results of custom tools
//! (`client_tool_results`, by tool name) and of web_search and web_fetch
//! run by Logbook (`server_tool_results`); otherwise the fetch fails with
//! `url_not_in_prior_context`. Absent (or `null`), every source is allowed
//! and nothing is checked. The API resolved the setting when the agent was
//! saved (`api::tools`); a filter unreadable here counts as `all`.

use std::collections::HashMap;

use logbook_core::EventId;
use logbook_core::entry::Entry;
use logbook_core::event::{ContentBlock, Event, SearchResultContent};
use serde_json::{Map, Value};

/// Which results of one kind of tool a URL may come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SourceFilter {
    All,
    None,
    Only(Vec<String>),
    Except(Vec<String>),
}

impl SourceFilter {
    fn parse(value: Option<&Value>) -> SourceFilter {
        let kind = match value {
            Some(Value::String(kind)) => kind.as_str(),
            Some(Value::Object(object)) => object.get("type").and_then(Value::as_str).unwrap_or("all"),
            Some(Value::Null | Value::Bool(_) | Value::Number(_) | Value::Array(_)) | None => "all",
        };
        let names = || -> Vec<String> {
            value
                .and_then(|value| value.get("tools"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|tool| tool.get("name").and_then(Value::as_str).map(str::to_owned))
                .collect()
        };
        match kind {
            "none" => SourceFilter::None,
            "only" => SourceFilter::Only(names()),
            "except" => SourceFilter::Except(names()),
            _ => SourceFilter::All,
        }
    }

    fn admits(&self, tool: &str) -> bool {
        match self {
            SourceFilter::All => true,
            SourceFilter::None => false,
            SourceFilter::Only(names) => names.iter().any(|name| name == tool),
            SourceFilter::Except(names) => !names.iter().any(|name| name == tool),
        }
    }
}

/// web_fetch's `url_sources`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UrlSources {
    pub(crate) user_input: SourceFilter,
    pub(crate) client_tool_results: SourceFilter,
    pub(crate) server_tool_results: SourceFilter,
}

impl UrlSources {
    /// Every source allowed: no check.
    pub(crate) const ALL: UrlSources = UrlSources {
        user_input: SourceFilter::All,
        client_tool_results: SourceFilter::All,
        server_tool_results: SourceFilter::All,
    };

    pub(crate) fn from_extra(extra: &Map<String, Value>) -> UrlSources {
        let Some(sources) = extra.get("url_sources").and_then(Value::as_object) else { return UrlSources::ALL };
        UrlSources {
            user_input: SourceFilter::parse(sources.get("user_input")),
            client_tool_results: SourceFilter::parse(sources.get("client_tool_results")),
            server_tool_results: SourceFilter::parse(sources.get("server_tool_results")),
        }
    }

    /// Whether any URL may be fetched, whatever the context holds.
    pub(crate) fn admits_all(&self) -> bool {
        *self == UrlSources::ALL
    }

    /// The texts of `log` a fetched URL may come from.
    pub(crate) fn allowed_texts(&self, log: &[Entry]) -> Vec<String> {
        let mut tool_names: HashMap<EventId, &str> = HashMap::new();
        for entry in log {
            if let Event::AgentToolUse(tool_use) = &entry.event {
                tool_names.insert(entry.id, tool_use.name.as_str());
            } else if let Event::AgentCustomToolUse(tool_use) = &entry.event {
                tool_names.insert(entry.id, tool_use.name.as_str());
            }
        }
        let tool_name = |id: &EventId| tool_names.get(id).copied();
        let mut texts = Vec::new();
        for entry in log {
            let content = if let Event::UserMessage(message) = &entry.event {
                Some(&message.content).filter(|_| self.user_input.admits(""))
            } else if let Event::UserCustomToolResult(result) = &entry.event {
                result.content.as_ref().filter(|_| {
                    tool_name(&result.custom_tool_use_id).is_some_and(|name| self.client_tool_results.admits(name))
                })
            } else if let Event::AgentToolResult(result) = &entry.event {
                result.content.as_ref().filter(|_| {
                    tool_name(&result.tool_use_id)
                        .is_some_and(|name| is_web_tool(name) && self.server_tool_results.admits(name))
                })
            } else {
                None
            };
            texts.extend(content.into_iter().flatten().flat_map(block_texts));
        }
        texts
    }
}

fn is_web_tool(name: &str) -> bool {
    matches!(name, "web_search" | "web_fetch")
}

/// The texts of a block a URL can be read from.
fn block_texts(block: &ContentBlock) -> Vec<String> {
    match block {
        ContentBlock::Text { text } => vec![text.clone()],
        ContentBlock::SearchResult { source, title, content, .. } => {
            let mut texts = vec![source.clone(), title.clone()];
            texts.extend(content.iter().map(|SearchResultContent::Text { text }| text.clone()));
            texts
        }
        ContentBlock::Image { .. } | ContentBlock::Document { .. } | ContentBlock::Redacted => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use logbook_core::event::{AgentCustomToolUse, AgentToolResult, AgentToolUse, UserCustomToolResult, UserMessage};
    use logbook_core::{Json, Timestamp};
    use serde_json::json;

    use super::*;

    fn entry(n: u128, event: Event) -> Entry {
        Entry { id: EventId::from_parts(1, n), event, at: Timestamp::from_unix_micros(0) }
    }

    fn text(text: &str) -> Vec<ContentBlock> {
        vec![ContentBlock::Text { text: text.to_owned() }]
    }

    fn sources(value: Value) -> UrlSources {
        UrlSources::from_extra(json!({"url_sources": value}).as_object().unwrap())
    }

    #[test]
    fn urls_come_only_from_the_sources_allowed() {
        let tool_use = |name: &str| AgentToolUse {
            name: name.to_owned(),
            input: Json::new(&json!({})),
            evaluated_permission: None,
            evaluation: None,
            session_thread_id: None,
        };
        let log = vec![
            entry(1, Event::UserMessage(UserMessage { content: text("see https://user.test/") })),
            entry(2, Event::AgentToolUse(tool_use("web_search"))),
            entry(
                3,
                Event::AgentToolResult(AgentToolResult {
                    tool_use_id: EventId::from_parts(1, 2),
                    content: Some(text("https://search.test/")),
                    is_error: None,
                }),
            ),
            entry(4, Event::AgentToolUse(tool_use("read"))),
            entry(
                5,
                Event::AgentToolResult(AgentToolResult {
                    tool_use_id: EventId::from_parts(1, 4),
                    content: Some(text("https://file.test/")),
                    is_error: None,
                }),
            ),
            entry(
                6,
                Event::AgentCustomToolUse(AgentCustomToolUse {
                    name: "lookup".to_owned(),
                    input: Json::new(&json!({})),
                    session_thread_id: None,
                }),
            ),
            entry(
                7,
                Event::UserCustomToolResult(UserCustomToolResult {
                    custom_tool_use_id: EventId::from_parts(1, 6),
                    content: Some(text("https://custom.test/")),
                    is_error: None,
                    session_thread_id: None,
                }),
            ),
        ];
        let joined = |sources: &UrlSources| sources.allowed_texts(&log).join(" ");

        assert!(UrlSources::from_extra(&Map::new()).admits_all());
        assert!(sources(Value::Null).admits_all());
        let only_search = sources(json!({
            "user_input": "none", "client_tool_results": {"type": "none"},
            "server_tool_results": {"type": "only", "tools": [{"type": "tool_reference", "name": "web_search"}]}
        }));
        assert!(!only_search.admits_all());
        assert_eq!(joined(&only_search), "https://search.test/");
        let no_search = sources(json!({
            "server_tool_results": {"type": "except", "tools": [{"type": "tool_reference", "name": "web_search"}]}
        }));
        assert_eq!(joined(&no_search), "see https://user.test/ https://custom.test/");
        // The results of other built-in tools are never a source.
        let user_only = sources(json!({"client_tool_results": "none", "server_tool_results": "none"}));
        assert_eq!(joined(&user_only), "see https://user.test/");
    }
}
