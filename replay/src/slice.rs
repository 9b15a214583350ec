//! Slices: a filtered, bounded view of a session's events, each with its
//! `seq`, for applications that want to read a session cheaply.
//!
//! A [`Filter`] keeps events by type, seq range, tool name or file path; the
//! caller feeds entries in seq order (the server reads them from the store) and
//! [`preview`] turns each kept one into its JSON with large payloads cut to a
//! head and a tail: a text over [`PREVIEW_TEXT_CHARS`] characters, any base64
//! data, and tool inputs over [`PREVIEW_INPUT_CHARS`]. A cut event says so
//! (`"elided": {...}`) and names the handle that fetches it whole
//! (`/x/v1/sessions/{id}/events/{seq}`). Token costs come from
//! [`crate::tokens`]; the caller stops when its budget is spent.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use logbook_core::event::{Event, FileChange};
use logbook_core::{Entry, EventId, EventType};

use crate::tokens;

/// Characters of a text kept whole; longer texts keep a head and a tail.
pub const PREVIEW_TEXT_CHARS: usize = 2_000;
/// Characters kept at each end of a cut text.
pub const PREVIEW_EDGE_CHARS: usize = 600;
/// Characters of a serialized tool input kept whole.
pub const PREVIEW_INPUT_CHARS: usize = 4_000;

/// Which events a slice keeps. Empty sets mean "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub types: BTreeSet<EventType>,
    /// Keep internal `x.*` events (only when asked, or named in `types`).
    pub include_internal: bool,
    /// Tool calls of these names, with their results and workspace deltas.
    pub tools: BTreeSet<String>,
    /// Tool calls that touched this path (named in their input, or changed by
    /// them per the workspace deltas), with their results and deltas.
    pub path: Option<String>,
}

/// What a filter needs to know before the main pass: the tool calls that
/// touched the filter's path or have one of its tool names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Relevant {
    pub tool_uses: BTreeSet<EventId>,
}

impl Filter {
    /// Whether the filter needs the tool-call pre-pass.
    pub fn by_tool_call(&self) -> bool {
        !self.tools.is_empty() || self.path.is_some()
    }

    /// The pre-pass: learns the tool calls this filter keeps from one entry
    /// (feed every entry of the range, in order).
    pub fn learn(&self, entry: &Entry, relevant: &mut Relevant) {
        if let Some((name, input)) = tool_call(&entry.event) {
            if self.tools.contains(name) || self.path.as_deref().is_some_and(|p| mentions(&input.to_string(), p)) {
                relevant.tool_uses.insert(entry.id);
            }
        } else if let Event::WorkspaceDelta(delta) = &entry.event
            && let (Some(path), Some(tool_use)) = (&self.path, delta.tool_use_id)
            && delta.changes.iter().any(|c| same_or_below(&c.path, path))
        {
            relevant.tool_uses.insert(tool_use);
        }
    }

    /// Whether the slice keeps `entry`.
    pub fn keeps(&self, entry: &Entry, relevant: &Relevant) -> bool {
        let kind = entry.event.event_type();
        if !kind.is_public() && !self.include_internal && !self.types.contains(&kind) {
            return false;
        }
        if !self.types.is_empty() && !self.types.contains(&kind) {
            return false;
        }
        if !self.by_tool_call() {
            return true;
        }
        if let Event::WorkspaceDelta(delta) = &entry.event
            && let Some(path) = &self.path
            && delta.changes.iter().any(|c| same_or_below(&c.path, path))
        {
            return true;
        }
        let call = if tool_call(&entry.event).is_some() { Some(entry.id) } else { call_of(&entry.event) };
        call.is_some_and(|id| relevant.tool_uses.contains(&id))
    }
}

/// The name and input of a tool call event.
fn tool_call(event: &Event) -> Option<(&str, &logbook_core::Json)> {
    if let Event::AgentToolUse(call) = event {
        Some((&call.name, &call.input))
    } else if let Event::AgentMcpToolUse(call) = event {
        Some((&call.name, &call.input))
    } else if let Event::AgentCustomToolUse(call) = event {
        Some((&call.name, &call.input))
    } else {
        None
    }
}

/// The tool call an event answers, confirms or records the effects of.
/// The tool call an event answers or belongs to (results, confirmations,
/// a call's workspace changes).
pub fn call_of(event: &Event) -> Option<EventId> {
    if let Event::AgentToolResult(result) = event {
        Some(result.tool_use_id)
    } else if let Event::UserToolResult(result) = event {
        Some(result.tool_use_id)
    } else if let Event::AgentMcpToolResult(result) = event {
        Some(result.mcp_tool_use_id)
    } else if let Event::UserCustomToolResult(result) = event {
        Some(result.custom_tool_use_id)
    } else if let Event::UserToolConfirmation(confirmation) = event {
        Some(confirmation.tool_use_id)
    } else if let Event::WorkspaceDelta(delta) = event {
        delta.tool_use_id
    } else {
        None
    }
}

/// Whether `text` names `path` (also without the `/workspace/` prefix the
/// model often leaves out).
fn mentions(text: &str, path: &str) -> bool {
    text.contains(path) || path.strip_prefix("/workspace/").is_some_and(|rel| !rel.is_empty() && text.contains(rel))
}

fn same_or_below(candidate: &str, path: &str) -> bool {
    let path = path.trim_end_matches('/');
    candidate == path || candidate.strip_prefix(path).is_some_and(|rest| rest.starts_with('/'))
}

/// One event of a slice: its JSON with large payloads cut, and its token cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Preview {
    pub json: Value,
    pub tokens: u64,
    pub elided: bool,
}

/// The slice form of the entry at `seq`.
pub fn preview(seq: u64, entry: &Entry) -> Preview {
    let mut value = serde_json::to_value(entry).unwrap_or(Value::Null);
    let mut cut = Cut::default();
    cut.walk(&mut value, None);
    if let Value::Object(map) = &mut value {
        map.insert("seq".to_owned(), json!(seq));
        if let Event::WorkspaceDelta(delta) = &entry.event {
            // Hashes are noise to a reader; sizes and kinds are what matter.
            let changes: Vec<Value> = delta
                .changes
                .iter()
                .map(|c| match &c.change {
                    FileChange::Written { size, mode, .. } => {
                        json!({"path": c.path, "type": "written", "size": size, "mode": mode})
                    }
                    FileChange::Removed => json!({"path": c.path, "type": "removed"}),
                    FileChange::Symlink { target } => json!({"path": c.path, "type": "symlink", "target": target}),
                })
                .collect();
            map.insert("changes".to_owned(), Value::Array(changes));
        }
        if cut.n_chars > 0 {
            map.insert("elided".to_owned(), json!({"chars": cut.n_chars, "fetch": format!("events/{seq}")}));
        }
    }
    let tokens = tokens::value(&value);
    Preview { json: value, tokens, elided: cut.n_chars > 0 }
}

#[derive(Debug, Default)]
struct Cut {
    n_chars: u64,
}

impl Cut {
    fn walk(&mut self, value: &mut Value, key: Option<&str>) {
        match value {
            Value::String(text) => {
                let limit = match key {
                    Some("data") => 0,
                    Some("input") => PREVIEW_INPUT_CHARS,
                    _ => PREVIEW_TEXT_CHARS,
                };
                let n = text.chars().count();
                if n > limit.max(2 * PREVIEW_EDGE_CHARS) || (limit == 0 && n > 0) {
                    self.n_chars += n as u64;
                    *text = if limit == 0 {
                        format!("[{n} characters of data elided]")
                    } else {
                        head_tail(text, PREVIEW_EDGE_CHARS)
                    };
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| self.walk(item, key)),
            Value::Object(map) => {
                if key == Some("input") {
                    let text = Value::Object(map.clone()).to_string();
                    if text.chars().count() > PREVIEW_INPUT_CHARS {
                        self.n_chars += text.chars().count() as u64;
                        let mut cut = Map::new();
                        cut.insert("preview".to_owned(), Value::String(head_tail(&text, PREVIEW_EDGE_CHARS)));
                        *map = cut;
                    }
                    return;
                }
                for (k, v) in map.iter_mut() {
                    self.walk(v, Some(k.as_str()));
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
}

/// The first and last `edge` characters of `text` around a note of what was cut.
pub fn head_tail(text: &str, edge: usize) -> String {
    let n = text.chars().count();
    if n <= 2 * edge {
        return text.to_owned();
    }
    let head: String = text.chars().take(edge).collect();
    let tail: String = text.chars().skip(n - edge).collect();
    format!("{head}\n…[{} characters elided]…\n{tail}", n - 2 * edge)
}

#[cfg(test)]
mod tests {
    use logbook_core::Timestamp;
    use logbook_core::event::{AgentToolResult, AgentToolUse, ContentBlock, WorkspaceChange, WorkspaceDelta};

    use super::*;

    fn entry(n: u128, event: Event) -> Entry {
        Entry { id: EventId::from_parts(1, n), event, at: Timestamp::from_unix_micros(0) }
    }

    #[test]
    fn long_texts_keep_a_head_and_a_tail_and_say_what_was_cut() {
        let text = "x".repeat(10_000);
        let e = entry(
            1,
            Event::AgentToolResult(AgentToolResult {
                tool_use_id: EventId::from_parts(1, 0),
                content: Some(vec![ContentBlock::Text { text }]),
                is_error: Some(false),
            }),
        );
        let p = preview(7, &e);
        assert!(p.elided);
        assert_eq!(p.json["seq"], 7);
        assert_eq!(p.json["elided"]["chars"], 10_000);
        let shown = p.json["content"][0]["text"].as_str().unwrap();
        assert!(shown.len() < 2_000, "{}", shown.len());
        assert!(p.tokens < 1_000);
    }

    #[test]
    fn a_path_filter_keeps_the_calls_that_changed_it() {
        let call = entry(
            1,
            Event::AgentToolUse(AgentToolUse {
                name: "bash".into(),
                input: logbook_core::Json::new(&json!({"command": "make"})),
                evaluated_permission: None,
                evaluation: None,
                session_thread_id: None,
            }),
        );
        let other = entry(
            2,
            Event::AgentToolUse(AgentToolUse {
                name: "read".into(),
                input: logbook_core::Json::new(&json!({"file_path": "/workspace/b.txt"})),
                evaluated_permission: None,
                evaluation: None,
                session_thread_id: None,
            }),
        );
        let delta = entry(
            3,
            Event::WorkspaceDelta(WorkspaceDelta {
                tool_use_id: Some(call.id),
                changes: vec![WorkspaceChange { path: "/workspace/out/a.o".into(), change: FileChange::Removed }],
            }),
        );
        let filter = Filter { path: Some("/workspace/out".into()), include_internal: true, ..Filter::default() };
        let mut relevant = Relevant::default();
        for e in [&call, &other, &delta] {
            filter.learn(e, &mut relevant);
        }
        assert!(filter.keeps(&call, &relevant));
        assert!(!filter.keeps(&other, &relevant));
        assert!(filter.keeps(&delta, &relevant));
    }
}
