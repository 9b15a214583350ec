//! The low-token context: a session's context window squeezed into a token
//! budget, for applications that want to continue or inspect a session
//! cheaply (`GET /x/v1/sessions/{id}/context?budget_tokens=N`).
//!
//! [`fit`] works on a projected [`SessionState`]. The newest messages are kept
//! verbatim except for their bulk (thinking dropped, images and documents as
//! stubs, tool outputs as head-and-tail previews); older messages are kept
//! while they fit, in a tighter preview; what does not fit is replaced by the
//! compaction summary when there is one, and a stub naming the elided seqs.
//! The system text carries the agent's system prompt and a manifest of the
//! workspace. Two things are always there: the latest user instruction and
//! the open tool calls (the newest assistant message). Every size is a
//! calibrated estimate ([`crate::tokens`]); the result never exceeds the
//! budget, shrinking previews further when it must and, last, turning tool
//! calls and their results into stubs, oldest first.

use serde::Serialize;
use serde_json::{Value, json};

use crate::context::Role;
use crate::slice::head_tail;
use crate::state::SessionState;
use crate::tokens;
use crate::workspace::Node;

/// The smallest budget a fitted context can honour (the instruction, the open
/// calls and the framing need some room).
pub const MIN_BUDGET_TOKENS: u64 = 512;
/// The budget when the caller names none.
pub const DEFAULT_BUDGET_TOKENS: u64 = 8_000;
/// Newest messages kept with generous previews.
pub const RECENT_MESSAGES: usize = 6;
/// Characters kept at each end of a tool output in recent / older messages.
pub const RECENT_EDGE_CHARS: usize = 1_000;
pub const OLDER_EDGE_CHARS: usize = 200;
/// Share of the budget the workspace manifest may take, in percent.
pub const MANIFEST_PERCENT: u64 = 10;

/// Something left out of a fitted context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Elided {
    /// Whole messages, from the first seq to the last (the summary, if any,
    /// stands in for them).
    Messages { first_seq: u64, last_seq: u64, count: u64 },
    /// Characters cut out of tool outputs and other long texts.
    Text { chars: u64 },
    /// Images, documents and the provider's server tool blocks (whose
    /// encrypted content cannot be cut) replaced by stubs.
    Media { count: u64 },
    /// Workspace files left out of the manifest.
    Files { count: u64 },
    /// Tool calls (and their results) replaced by stubs: a budget that
    /// cannot hold them.
    ToolCalls { count: u64 },
    /// Citations taken off the text blocks of cited answers.
    Citations { count: u64 },
}

/// A context that fits a budget.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fitted {
    pub system: String,
    pub messages: Vec<Value>,
    pub estimated_tokens: u64,
    pub elided: Vec<Elided>,
}

#[derive(Debug, Default)]
struct Cuts {
    chars: u64,
    media: u64,
}

/// Fits `state`'s context into `budget` tokens; `system` is the agent's
/// system prompt. `budget` below [`MIN_BUDGET_TOKENS`] is raised to it.
pub fn fit(state: &SessionState, system: Option<&str>, budget: u64) -> Fitted {
    let budget = budget.max(MIN_BUDGET_TOKENS);
    let calibrated = |n: u64| state.calibration.apply(n);
    let mut elided = Vec::new();
    let mut cuts = Cuts::default();

    // The system text: the prompt (previewed if huge) and the manifest.
    let prompt = system.unwrap_or("");
    let prompt = shrink_text(prompt, (budget / 4).saturating_mul(tokens::BYTES_PER_TOKEN) as usize, &mut cuts);
    let (manifest, left_out) = manifest(state, budget * MANIFEST_PERCENT / 100);
    if left_out > 0 {
        elided.push(Elided::Files { count: left_out });
    }
    let system_text = if manifest.is_empty() { prompt } else { format!("{prompt}\n\n{manifest}") };
    let mut used = calibrated(tokens::text(&system_text));

    // Newest first: each message in its preview, while it fits.
    let kept = state.context.messages();
    let mut chosen: Vec<Value> = Vec::new();
    let mut first_kept = kept.len();
    for (index, message) in kept.iter().enumerate().rev() {
        let recent = kept.len() - index <= RECENT_MESSAGES;
        let edge = if recent { RECENT_EDGE_CHARS } else { OLDER_EDGE_CHARS };
        let mut local = Cuts::default();
        let shown = preview_message(&message.to_json(), edge, &mut local);
        let cost = calibrated(tokens::message(&shown));
        let is_newest = index + 1 == kept.len();
        if used + cost > budget && !is_newest {
            break;
        }
        // A message may only open the kept part if it is not a tool result
        // (its call would be missing); otherwise keep looking further back.
        used += cost;
        cuts.chars += local.chars;
        cuts.media += local.media;
        chosen.push(shown);
        first_kept = index;
    }
    // Never open on tool results whose calls were left out: take the call
    // too (the results of the newest turn matter most), or drop the results.
    while first_kept < kept.len() && !opens_cleanly(&kept[first_kept].content, kept[first_kept].role) {
        if first_kept == 0 {
            if let Some(dropped) = chosen.pop() {
                used = used.saturating_sub(calibrated(tokens::message(&dropped)));
            }
            first_kept += 1;
            continue;
        }
        first_kept -= 1;
        let shown = preview_message(&kept[first_kept].to_json(), OLDER_EDGE_CHARS, &mut cuts);
        used += calibrated(tokens::message(&shown));
        chosen.push(shown);
    }
    chosen.reverse();

    // What stands in for the older part: the summary, a stub, the instruction.
    let mut preface: Vec<Value> = Vec::new();
    if first_kept > 0 {
        let first_seq = kept.first().map_or(0, |m| m.first_seq);
        let last_seq = kept.get(first_kept).map_or(first_seq, |m| m.first_seq.saturating_sub(1));
        elided.push(Elided::Messages { first_seq, last_seq, count: first_kept as u64 });
        preface.push(json!({"type": "text", "text": format!(
            "[{first_kept} earlier messages (seq {first_seq} to {last_seq}) are elided; fetch them with the slice API]"
        )}));
    }
    if let Some(summary) = state.context.summary() {
        let room = budget.saturating_sub(used) / 2;
        let text = shrink_text(&summary.text, (room * tokens::BYTES_PER_TOKEN) as usize, &mut cuts);
        preface.insert(0, json!({"type": "text", "text": format!("Summary of the conversation before seq {}:\n{text}", summary.through_seq + 1)}));
        // What it replaced that stands on after it: system messages, the
        // open outcome (`Context::standing_blocks`).
        for (at, block) in state.context.standing_blocks().enumerate() {
            preface.insert(1 + at, preview_block(block, OLDER_EDGE_CHARS, &mut cuts));
        }
        if summary.through_seq > 0 {
            elided.push(Elided::Messages { first_seq: 0, last_seq: summary.through_seq, count: 0 });
        }
    }
    // The instruction is added when the budget or a compaction left it out,
    // not when a refusal took it out of the context (or it would be sent
    // again, and refused again).
    if let Some((seq, instruction)) = &state.last_user_message
        && !chosen.iter().any(|m| m["role"] == "user" && contains_blocks(m, instruction))
        && still_in_context(state, *seq, instruction)
    {
        let mut local = Cuts::default();
        let shown: Vec<Value> = instruction.iter().map(|b| preview_block(b, RECENT_EDGE_CHARS, &mut local)).collect();
        cuts.chars += local.chars;
        cuts.media += local.media;
        preface.push(json!({"type": "text", "text": format!("The latest user instruction (seq {seq}):")}));
        preface.extend(shown);
    }
    let mut messages = Vec::with_capacity(chosen.len() + 1);
    if !preface.is_empty() {
        messages.push(json!({"role": "user", "content": preface}));
    }
    for message in chosen {
        push_merged(&mut messages, message);
    }
    if messages.first().is_some_and(|m| m["role"] != "user") {
        messages
            .insert(0, json!({"role": "user", "content": [{"type": "text", "text": "[earlier conversation elided]"}]}));
    }
    if cuts.chars > 0 {
        elided.push(Elided::Text { chars: cuts.chars });
    }
    if cuts.media > 0 {
        elided.push(Elided::Media { count: cuts.media });
    }
    let mut fitted = Fitted { system: system_text, messages, estimated_tokens: 0, elided };
    shrink_to(&mut fitted, budget, state);
    fitted
}

/// Estimated tokens of a fitted context.
fn estimate(fitted: &Fitted, state: &SessionState) -> u64 {
    state.calibration.apply(tokens::text(&fitted.system) + fitted.messages.iter().map(tokens::message).sum::<u64>())
}

/// Shrinks every long text until the whole fits (a last resort for budgets
/// the newest message alone exceeds).
fn shrink_to(fitted: &mut Fitted, budget: u64, state: &SessionState) {
    let mut edge = RECENT_EDGE_CHARS;
    let mut merged = false;
    loop {
        fitted.estimated_tokens = estimate(fitted, state);
        if fitted.estimated_tokens <= budget {
            break;
        }
        if !merged {
            // Citations (a cited answer's sources, one per text block) go
            // first: they are not the answer. Then many short text blocks
            // cost their framing whatever the edge: each run of them is
            // joined into one block, which the edge shortens like any long
            // text.
            merged = true;
            let dropped: u64 = fitted.messages.iter_mut().map(drop_citations).sum();
            if dropped > 0 {
                fitted.elided.push(Elided::Citations { count: dropped });
            }
            fitted.messages.iter_mut().for_each(merge_text_runs);
            continue;
        }
        if edge < 8 {
            // Tool calls and results cost their ids and framing whatever
            // the edge: as a last resort, each turn's calls and their
            // results become stubs, oldest first, until the whole fits.
            match collapse_oldest_calls(&mut fitted.messages) {
                Some(count) => {
                    fitted.elided.push(Elided::ToolCalls { count });
                    continue;
                }
                None => break,
            }
        }
        edge /= 2;
        let mut cuts = Cuts::default();
        for message in &mut fitted.messages {
            shrink_strings(message, edge, &mut cuts);
        }
        let system_limit = (budget / 4) as usize * tokens::BYTES_PER_TOKEN as usize;
        fitted.system = shrink_text(&fitted.system, system_limit.min(edge * 8), &mut cuts);
        if cuts.chars > 0 {
            fitted.elided.push(Elided::Text { chars: cuts.chars });
        }
    }
}

/// Replaces the tool calls of the oldest assistant message that has some,
/// and their results in the message after it, with one text stub each (so
/// no result is left without its call); how many calls, or `None` if no
/// message has calls.
fn collapse_oldest_calls(messages: &mut [Value]) -> Option<u64> {
    let is_call = |block: &Value| block["type"] == "tool_use";
    let at = messages.iter().position(|m| {
        m["role"] == "assistant" && m["content"].as_array().is_some_and(|content| content.iter().any(is_call))
    })?;
    let Some(Value::Array(content)) = messages[at].get_mut("content") else { return None };
    let mut ids: Vec<Value> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut stub_at = None;
    let mut kept: Vec<Value> = Vec::with_capacity(content.len());
    for block in std::mem::take(content) {
        if is_call(&block) {
            ids.push(block["id"].clone());
            names.push(block["name"].as_str().unwrap_or("a tool").to_owned());
            stub_at.get_or_insert(kept.len());
        } else {
            kept.push(block);
        }
    }
    let count = ids.len() as u64;
    let stub = format!("[{count} tool calls elided ({}); fetch them with the slice API]", names.join(", "));
    kept.insert(stub_at.unwrap_or(kept.len()), json!({"type": "text", "text": stub}));
    *content = kept;
    if let Some(Value::Array(content)) = messages.get_mut(at + 1).and_then(|next| next.get_mut("content")) {
        let before = content.len();
        content.retain(|block| !(block["type"] == "tool_result" && ids.contains(&block["tool_use_id"])));
        let removed = before - content.len();
        if removed > 0 {
            content.insert(0, json!({"type": "text", "text": format!("[{removed} tool results elided]")}));
        }
    }
    Some(count)
}

/// Takes the citations off every text block of a message (a tool result's
/// included); how many were taken.
fn drop_citations(message: &mut Value) -> u64 {
    let Some(Value::Array(blocks)) = message.get_mut("content") else { return 0 };
    let mut dropped = 0;
    for block in blocks.iter_mut() {
        if let Some(Value::Array(inner)) = block.get_mut("content") {
            dropped += inner.iter_mut().map(drop_block_citations).sum::<u64>();
        }
        dropped += drop_block_citations(block);
    }
    dropped
}

fn drop_block_citations(block: &mut Value) -> u64 {
    match block.as_object_mut().and_then(|map| map.remove("citations")) {
        Some(Value::Array(citations)) => citations.len() as u64,
        Some(Value::Null) | None => 0,
        Some(Value::Bool(_) | Value::Number(_) | Value::String(_) | Value::Object(_)) => 1,
    }
}

/// Joins each run of adjacent plain text blocks (`type` and `text` only) of
/// a message's content, and of each tool result's content in it, into one
/// block, lines separated by newlines.
fn merge_text_runs(message: &mut Value) {
    let Some(Value::Array(blocks)) = message.get_mut("content") else { return };
    merge_runs(blocks);
    for block in blocks.iter_mut() {
        if block.get("type") == Some(&json!("tool_result"))
            && let Some(Value::Array(inner)) = block.get_mut("content")
        {
            merge_runs(inner);
        }
    }
}

fn merge_runs(blocks: &mut Vec<Value>) {
    let plain_text = |block: &Value| {
        block.as_object().is_some_and(|map| map.len() == 2 && map.get("type") == Some(&json!("text")))
            && block.get("text").is_some_and(Value::is_string)
    };
    let mut out: Vec<Value> = Vec::with_capacity(blocks.len());
    for block in std::mem::take(blocks) {
        if plain_text(&block)
            && let Some(last) = out.last_mut()
            && plain_text(last)
            && let (Some(Value::String(into)), Some(text)) =
                (last.get_mut("text"), block.get("text").and_then(Value::as_str))
        {
            into.push('\n');
            into.push_str(text);
            continue;
        }
        out.push(block);
    }
    *blocks = out;
}

fn shrink_strings(value: &mut Value, edge: usize, cuts: &mut Cuts) {
    match value {
        Value::String(text) => {
            let n = text.chars().count();
            if n > 2 * edge + 64 {
                cuts.chars += (n - 2 * edge) as u64;
                *text = head_tail(text, edge);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| shrink_strings(v, edge, cuts)),
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                // Ids and types must stay intact.
                if !matches!(key.as_str(), "id" | "type" | "role" | "tool_use_id" | "name") {
                    shrink_strings(v, edge, cuts);
                }
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn shrink_text(text: &str, max_chars: usize, cuts: &mut Cuts) -> String {
    let n = text.chars().count();
    if n <= max_chars.max(64) {
        return text.to_owned();
    }
    let edge = max_chars.max(64) / 2;
    cuts.chars += (n - 2 * edge) as u64;
    head_tail(text, edge)
}

/// A message with its bulk cut: thinking dropped, media as stubs, tool
/// outputs and long texts as head-and-tail previews.
fn preview_message(message: &Value, edge: usize, cuts: &mut Cuts) -> Value {
    let content: Vec<Value> = message
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|b| !matches!(b.get("type").and_then(Value::as_str), Some("thinking" | "redacted_thinking")))
        .map(|b| preview_block(b, edge, cuts))
        .collect();
    let content = if content.is_empty() { vec![json!({"type": "text", "text": "(thinking elided)"})] } else { content };
    json!({"role": message["role"], "content": content})
}

fn preview_block(block: &Value, edge: usize, cuts: &mut Cuts) -> Value {
    match block.get("type").and_then(Value::as_str) {
        Some("image") => {
            cuts.media += 1;
            json!({"type": "text", "text": "[image elided]"})
        }
        Some("document") => {
            cuts.media += 1;
            let title = block.get("title").and_then(Value::as_str).unwrap_or("a document");
            json!({"type": "text", "text": format!("[{title} elided]")})
        }
        Some("tool_result") => {
            let mut block = block.clone();
            if let Some(Value::Array(content)) = block.get_mut("content") {
                let previewed: Vec<Value> = content.iter().map(|b| preview_block(b, edge, cuts)).collect();
                *content = previewed;
            }
            block
        }
        Some("text") => {
            let text = block.get("text").and_then(Value::as_str).unwrap_or("");
            let n = text.chars().count();
            if n > 2 * edge + 64 {
                cuts.chars += (n - 2 * edge) as u64;
                json!({"type": "text", "text": head_tail(text, edge)})
            } else {
                block.clone()
            }
        }
        // The provider's own tool calls and results carry encrypted content
        // that must reach it whole or not at all: stubs, both, so neither is
        // left without the other.
        Some("server_tool_use") => {
            cuts.media += 1;
            let name = block.get("name").and_then(Value::as_str).unwrap_or("a server tool");
            let input = block.get("input").map(Value::to_string).unwrap_or_default();
            json!({"type": "text", "text": format!("[{name} call {} elided]", head_tail(&input, edge))})
        }
        Some("web_search_tool_result" | "web_fetch_tool_result") => {
            cuts.media += 1;
            json!({"type": "text", "text": "[server tool result elided]"})
        }
        Some("tool_use") => {
            let mut block = block.clone();
            let input = block.get("input").map(Value::to_string).unwrap_or_default();
            if input.chars().count() > 4 * edge + 64 {
                cuts.chars += (input.chars().count() - 2 * edge) as u64;
                block["input"] = json!({"preview": head_tail(&input, edge)});
            }
            block
        }
        Some(_) | None => block.clone(),
    }
}

/// Whether a kept part may begin with this message.
fn opens_cleanly(content: &[Value], role: Role) -> bool {
    match role {
        Role::Assistant => true,
        Role::User => content.first().is_none_or(|b| b.get("type").and_then(Value::as_str) != Some("tool_result")),
    }
}

/// Whether the input at `seq` (its `blocks`) is part of the context: in a
/// message, held until the open request's response, or covered by the
/// summary.
fn still_in_context(state: &SessionState, seq: u64, blocks: &[Value]) -> bool {
    let context = &state.context;
    context.summary().is_some_and(|summary| seq <= summary.through_seq)
        || context.messages().iter().any(|m| m.role == Role::User && content_holds(&m.content, blocks))
        || context.held().iter().any(|held| content_holds(held, blocks))
}

fn contains_blocks(message: &Value, blocks: &[Value]) -> bool {
    let Some(content) = message.get("content").and_then(Value::as_array) else { return false };
    content_holds(content, blocks)
}

/// Whether `content` holds `blocks`' text (each text block's first 64
/// characters; a preview keeps at least those).
fn content_holds(content: &[Value], blocks: &[Value]) -> bool {
    blocks.iter().filter(|b| b["type"] == "text").all(|b| {
        content.iter().any(|c| {
            c["type"] == "text"
                && c["text"].as_str().is_some_and(|t| {
                    b["text"].as_str().is_some_and(|w| t.starts_with(&w.chars().take(64).collect::<String>()))
                })
        })
    })
}

fn push_merged(messages: &mut Vec<Value>, message: Value) {
    if let Some(last) = messages.last_mut()
        && last["role"] == message["role"]
        && let (Some(Value::Array(into)), Some(Value::Array(from))) = (last.get_mut("content"), message.get("content"))
    {
        into.extend(from.iter().cloned());
        return;
    }
    messages.push(message);
}

/// The workspace as lines of `path size`, newest-first by nothing (path
/// order), within `max_tokens`; and how many files were left out.
fn manifest(state: &SessionState, max_tokens: u64) -> (String, u64) {
    let tree = &state.workspace;
    if tree.is_empty() {
        return (String::new(), 0);
    }
    let mut text = format!("Workspace files ({} files, {} bytes):", tree.len(), tree.total_bytes());
    let mut shown = 0u64;
    for (path, node) in tree.iter() {
        let line = match node {
            Node::File { size, .. } => format!("\n{path} {size}"),
            Node::Symlink { target } => format!("\n{path} -> {target}"),
        };
        if tokens::text(&text) + tokens::text(&line) > max_tokens {
            break;
        }
        text.push_str(&line);
        shown += 1;
    }
    (text, tree.len() as u64 - shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_tool_calls_and_results_become_stubs_together() {
        // A cut encrypted_content would have the provider refuse the
        // context; a call without its result likewise.
        let message = json!({"role": "assistant", "content": [
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "rust"}},
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1",
                "content": [{"type": "web_search_result", "url": "https://a.test", "title": "A",
                    "encrypted_content": "x".repeat(10_000)}]},
            {"type": "text", "text": "Found it."}
        ]});
        let mut cuts = Cuts::default();
        let shown = preview_message(&message, RECENT_EDGE_CHARS, &mut cuts);
        assert_eq!(
            shown["content"],
            json!([
                {"type": "text", "text": "[web_search call {\"query\":\"rust\"} elided]"},
                {"type": "text", "text": "[server tool result elided]"},
                {"type": "text", "text": "Found it."}
            ])
        );
        assert_eq!(cuts.media, 2);
    }
}
