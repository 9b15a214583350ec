//! The context window: the conversation the next model request sends, as a
//! pure projection of the log.
//!
//! User turns come from `user.message` (and `system.message`, as a text block
//! marked as coming from the system, since the Messages API has no
//! mid-conversation system role), assistant turns from `x.model_response`
//! exactly as the provider returned them (thinking signatures and tool ids
//! intact), and tool results from `agent.tool_result`, `agent.mcp_tool_result`,
//! `user.custom_tool_result` and `user.tool_result`, mapped back to the
//! provider's tool-use ids. Consecutive blocks of one role merge into one
//! message; in a user message, tool results come first, as the API requires.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use logbook_core::event::{ContentBlock, Event};
use logbook_core::{Entry, EventId};

/// One message of the conversation: `{"role", "content": [blocks]}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

impl Message {
    pub fn to_json(&self) -> Value {
        let role = match self.role {
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        json!({"role": role, "content": self.content})
    }
}

/// The conversation as of the end of `entries`.
pub fn conversation<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Vec<Message> {
    let mut builder = Builder::default();
    for entry in entries {
        builder.apply(entry);
    }
    builder.messages
}

#[derive(Debug, Default)]
struct Builder {
    messages: Vec<Message>,
    /// Our tool-use event ids to the provider's tool-use ids.
    provider_ids: BTreeMap<EventId, String>,
}

impl Builder {
    fn apply(&mut self, entry: &Entry) {
        match &entry.event {
            Event::UserMessage(message) => {
                let blocks = message.content.iter().filter_map(block_json).collect();
                self.push(Role::User, blocks);
            }
            Event::SystemMessage(message) => {
                let blocks = message
                    .content
                    .iter()
                    .filter_map(|block| match block {
                        ContentBlock::Text { text } => {
                            Some(json!({"type": "text", "text": format!("<system>{text}</system>")}))
                        }
                        ContentBlock::Image { .. }
                        | ContentBlock::Document { .. }
                        | ContentBlock::SearchResult { .. }
                        | ContentBlock::Redacted => None,
                    })
                    .collect();
                self.push(Role::User, blocks);
            }
            Event::ModelResponse(response) => {
                for link in &response.tool_uses {
                    self.provider_ids.insert(link.event_id, link.provider_id.clone());
                }
                let blocks = match response.content.to_value() {
                    Value::Array(blocks) => blocks,
                    Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) | Value::Object(_) => Vec::new(),
                };
                self.push(Role::Assistant, blocks);
            }
            Event::AgentToolResult(result) => {
                self.tool_result(result.tool_use_id, result.content.as_deref(), result.is_error);
            }
            Event::AgentMcpToolResult(result) => {
                self.tool_result(result.mcp_tool_use_id, result.content.as_deref(), result.is_error);
            }
            Event::UserCustomToolResult(result) => {
                self.tool_result(result.custom_tool_use_id, result.content.as_deref(), result.is_error);
            }
            Event::UserToolResult(result) => {
                self.tool_result(result.tool_use_id, result.content.as_deref(), result.is_error);
            }
            Event::UserInterrupt(_)
            | Event::UserToolConfirmation(_)
            | Event::UserDefineOutcome(_)
            | Event::AgentMessage(_)
            | Event::AgentThinking(_)
            | Event::AgentToolUse(_)
            | Event::AgentMcpToolUse(_)
            | Event::AgentCustomToolUse(_)
            | Event::AgentThreadMessageSent(_)
            | Event::AgentThreadMessageReceived(_)
            | Event::AgentThreadContextCompacted(_)
            | Event::SessionStatusRunning(_)
            | Event::SessionStatusIdle(_)
            | Event::SessionStatusRescheduled(_)
            | Event::SessionStatusTerminated(_)
            | Event::SessionError(_)
            | Event::SessionUpdated(_)
            | Event::SessionUsage(_)
            | Event::SessionDeleted(_)
            | Event::SessionThreadCreated(_)
            | Event::SessionThreadStatusRunning(_)
            | Event::SessionThreadStatusIdle(_)
            | Event::SessionThreadStatusRescheduled(_)
            | Event::SessionThreadStatusTerminated(_)
            | Event::SpanModelRequestStart(_)
            | Event::SpanModelRequestEnd(_)
            | Event::SpanOutcomeEvaluationStart(_)
            | Event::SpanOutcomeEvaluationOngoing(_)
            | Event::SpanOutcomeEvaluationEnd(_)
            | Event::WorkflowRunCreated(_)
            | Event::WorkflowRunStatusRunning(_)
            | Event::WorkflowRunStatusIdle(_)
            | Event::WorkflowRunPhaseStarted(_)
            | Event::WorkflowRunPhaseEnded(_)
            | Event::WorkflowRunStatusEnded(_)
            | Event::WorkflowRunError(_)
            | Event::WorkspaceDelta(_)
            | Event::ForkOrigin(_)
            | Event::ModelRequest(_)
            | Event::ToolStarted(_)
            | Event::SessionResource(_) => {}
        }
    }

    fn tool_result(&mut self, tool_use_id: EventId, content: Option<&[ContentBlock]>, is_error: Option<bool>) {
        let provider_id = self.provider_ids.get(&tool_use_id).cloned().unwrap_or_else(|| tool_use_id.to_string());
        let content: Vec<Value> = content.unwrap_or_default().iter().filter_map(block_json).collect();
        let mut block = json!({"type": "tool_result", "tool_use_id": provider_id, "content": content});
        if is_error == Some(true)
            && let Some(obj) = block.as_object_mut()
        {
            obj.insert("is_error".to_owned(), Value::Bool(true));
        }
        match self.messages.last_mut() {
            Some(last) if last.role == Role::User => {
                // Tool results go before any other block of the user turn.
                let at = last.content.iter().take_while(|b| b["type"] == "tool_result").count();
                last.content.insert(at, block);
            }
            Some(_) | None => self.messages.push(Message { role: Role::User, content: vec![block] }),
        }
    }

    fn push(&mut self, role: Role, blocks: Vec<Value>) {
        if blocks.is_empty() {
            return;
        }
        match self.messages.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            Some(_) | None => self.messages.push(Message { role, content: blocks }),
        }
    }
}

/// A content block as the Messages API takes it; redacted blocks are dropped.
fn block_json(block: &ContentBlock) -> Option<Value> {
    match block {
        ContentBlock::Redacted => None,
        ContentBlock::Text { .. }
        | ContentBlock::Image { .. }
        | ContentBlock::Document { .. }
        | ContentBlock::SearchResult { .. } => serde_json::to_value(block).ok(),
    }
}
