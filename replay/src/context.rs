//! The context window: the conversation the next model request sends, as a
//! pure projection of the log, and the planning of its compaction.
//!
//! User turns come from `user.message` (and `system.message`, as a text block
//! marked as coming from the system, since the Messages API has no
//! mid-conversation system role), assistant turns from `x.model_response`
//! exactly as the provider returned them (thinking signatures and tool ids
//! intact), and tool results from `agent.tool_result`, `agent.mcp_tool_result`,
//! `user.custom_tool_result` and `user.tool_result`, mapped back to the
//! provider's tool-use ids. Consecutive blocks of one role merge into one
//! message; in a user message, tool results come first, as the API requires.
//! Blank text blocks (which the provider sometimes returns, and always
//! refuses in a request) are left out.
//! Server tools (web search and fetch run by the provider) have their use and
//! result inside the provider's content; the `agent.tool_result` made from
//! such a result is for the API's clients and adds nothing here.
//!
//! Compaction: an `x.compaction` replaces every message that began at or
//! before its `through_seq` with its summary, rendered as the first user
//! message. [`plan_compaction`] only ever cuts where a message begins that is
//! not a tool result, so a tool use is never separated from its result, and
//! always keeps the newest message.
//!
//! A `system.message` applies "for this and all later turns" (behaviour
//! digest §4), so a compaction does not summarize it away: the system
//! messages it replaces stand, verbatim, right after the summary. So does
//! the outcome being worked towards (its description and rubric), until a
//! verdict ends it: the agent revises towards it, however long that takes.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use logbook_core::event::{
    Compaction, ContentBlock, Event, OutcomeEvaluationResult, Rubric, SpanOutcomeEvaluationEnd, StopReason,
    UserDefineOutcome,
};
use logbook_core::{Entry, EventId, OutcomeId};

use crate::machine::{REFUSAL, ends_outcome};
use crate::tokens;

/// Bytes of system messages that a compaction keeps standing after its
/// summary; beyond it the oldest are dropped, so they cannot outgrow the
/// window (a client that sends one each turn repeats itself, and a repeated
/// one stands once).
pub const MAX_STANDING_SYSTEM_BYTES: usize = 40_000;
/// How the summary of compacted turns is introduced to the model.
pub const SUMMARY_PREAMBLE: &str = "The earlier part of this conversation was compacted to save context. Its summary:";
/// Characters of each user text a mechanical (elided) summary keeps.
pub const ELIDED_TEXT_CHARS: usize = 400;
/// Lines a mechanical summary keeps (its newest ones).
pub const ELIDED_MAX_LINES: usize = 200;
/// Characters of the newest user text, and of an earlier compaction's
/// summary, that a mechanical summary keeps: both whole in all but extreme
/// cases (the instruction the turn is carrying out; the only record of the
/// turns before), bounded so the summary cannot outgrow the window.
pub const ELIDED_KEPT_CHARS: usize = 40_000;
/// What the summarizing model call is asked.
pub const SUMMARY_INSTRUCTION: &str = "Summarize the conversation so far for your own later use: the user's goals \
and instructions (quote the latest exactly), decisions made, files read or changed and what they contain that \
still matters, commands run and their outcomes, open problems and next steps. Be complete but concise; the \
conversation above will be replaced by your summary.";

/// One message of the conversation: `{"role", "content": [blocks]}`, with the
/// seq of the first entry that contributed to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Value>,
    pub first_seq: u64,
    /// `tokens::message` of this message, kept up to date as blocks are
    /// added, so the context's size is known without walking it.
    pub tokens: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

    /// Whether a compaction may cut just before this message.
    fn is_cut_point(&self) -> bool {
        match self.role {
            Role::Assistant => true,
            Role::User => {
                self.content.first().is_none_or(|b| b.get("type").and_then(Value::as_str) != Some("tool_result"))
            }
        }
    }
}

/// The summary in effect: its text and the seq of the `x.compaction`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub text: String,
    pub compaction_seq: u64,
    pub through_seq: u64,
}

/// The conversation, folded entry by entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Context {
    messages: Vec<Message>,
    /// Our open tool-use event ids to the provider's tool-use ids.
    provider_ids: BTreeMap<EventId, String>,
    /// Tool uses the provider runs itself (server tools) whose result has not
    /// been recorded yet: their results are already part of the provider's
    /// content, so their `agent.tool_result` adds nothing here.
    #[serde(default)]
    provider_run: BTreeSet<EventId>,
    summary: Option<Summary>,
    /// Whether a model request is open (started, its response not recorded).
    #[serde(default)]
    request_open: bool,
    /// User and system input that arrived while a request was open: the model
    /// was not sent it, so it goes after that request's response (sends never
    /// wait for the runner, so it lands between the start and the response).
    #[serde(default)]
    held: Vec<Vec<Value>>,
    /// Where the newest response's blocks went and which input drew it, so
    /// that a refused response can be taken out again with that input.
    #[serde(default)]
    last_response: Option<ResponsePlace>,
    /// The blocks of the `system.message`s still in the messages (or held),
    /// so that a compaction can tell them from the user's text.
    #[serde(default)]
    system_blocks: Vec<Value>,
    /// The blocks of the system messages compactions replaced, oldest
    /// first: sent after the summary (see the module's documentation).
    #[serde(default)]
    standing: Vec<Value>,
    /// The outcome being worked towards, as the model is told it.
    #[serde(default)]
    outcome: Option<OutcomeBlocks>,
}

/// An open outcome's blocks; `replaced` once a compaction took them out of
/// the messages (they then stand after the summary). Its life is the
/// machine's (`machine::ends_outcome`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OutcomeBlocks {
    outcome_id: OutcomeId,
    max_iterations: u32,
    /// A model request started since it was defined.
    #[serde(default)]
    worked: bool,
    blocks: Vec<Value>,
    replaced: bool,
}

/// See [`Context::last_response`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct ResponsePlace {
    start: EventId,
    /// The message the response's blocks joined and how many blocks it had
    /// before them; `None` when the response added no block.
    response: Option<(usize, usize)>,
    /// The user message just before the response (the input that drew it)
    /// and how many blocks it had then: input held during the request may
    /// join it after; `None` for a continuation of an earlier answer.
    input: Option<(usize, usize)>,
}

/// The conversation as of the end of `entries` (the first entry at seq 0).
pub fn conversation<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Vec<Value> {
    let mut context = Context::default();
    for (seq, entry) in entries.into_iter().enumerate() {
        context.apply(seq as u64, entry);
    }
    context.messages_json()
}

impl Context {
    /// The messages a model request sends now, summary first.
    pub fn messages_json(&self) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::with_capacity(self.messages.len() + 1);
        let mut rest = self.messages.iter();
        if let Some(summary) = &self.summary {
            let mut blocks = vec![summary_block(&summary.text)];
            blocks.extend(self.standing_blocks().cloned());
            if let Some(first) = self.messages.first()
                && first.role == Role::User
            {
                blocks.extend(first.content.iter().cloned());
                rest.next();
            }
            out.push(json!({"role": "user", "content": blocks}));
        }
        out.extend(rest.map(Message::to_json));
        out
    }

    /// The kept messages (after the summary).
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    pub fn summary(&self) -> Option<&Summary> {
        self.summary.as_ref()
    }

    /// What stands after the summary: the system messages compactions
    /// replaced, then the open outcome if a compaction replaced it.
    pub fn standing_blocks(&self) -> impl Iterator<Item = &Value> {
        let outcome = self.outcome.as_ref().filter(|o| o.replaced).map(|o| o.blocks.as_slice()).unwrap_or_default();
        self.standing.iter().chain(outcome)
    }

    /// The blocks of each input held while a model request is open; they
    /// join the context when its response lands.
    pub fn held(&self) -> &[Vec<Value>] {
        &self.held
    }

    /// Estimated tokens of what will stand after `compaction`'s summary
    /// once it is applied ([`Context::standing_blocks`]).
    pub fn standing_tokens_after(&self, compaction: &Compaction) -> u64 {
        let mut after = self.clone();
        after.compact(0, compaction);
        after.standing_blocks().map(tokens::block).sum()
    }

    /// Estimated tokens of [`Context::messages_json`].
    pub fn estimate_tokens(&self) -> u64 {
        let messages: u64 = self.messages.iter().map(|m| m.tokens).sum();
        let standing: u64 = self.standing_blocks().map(tokens::block).sum();
        let summary = match (&self.summary, self.messages.first()) {
            (None, _) => 0,
            // Merged into the first kept message when that is the user's.
            (Some(summary), Some(first)) if first.role == Role::User => {
                tokens::block(&summary_block(&summary.text)) + standing
            }
            (Some(summary), Some(_) | None) => {
                tokens::block(&summary_block(&summary.text)) + standing + tokens::MESSAGE_OVERHEAD_TOKENS
            }
        };
        messages + summary
    }

    pub fn apply(&mut self, seq: u64, entry: &Entry) {
        match &entry.event {
            Event::UserMessage(message) => {
                let blocks = message.content.iter().filter_map(block_json).collect();
                self.push_input(seq, blocks);
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
                    .collect::<Vec<Value>>();
                self.system_blocks.extend(blocks.iter().cloned());
                self.push_input(seq, blocks);
            }
            Event::UserDefineOutcome(outcome) => {
                let blocks = outcome_blocks(outcome);
                self.outcome = Some(OutcomeBlocks {
                    outcome_id: outcome.outcome_id,
                    max_iterations: outcome.max_iterations.unwrap_or(crate::machine::DEFAULT_OUTCOME_ITERATIONS),
                    worked: false,
                    blocks: blocks.clone(),
                    replaced: false,
                });
                self.push_input(seq, blocks);
            }
            Event::SpanOutcomeEvaluationEnd(end) => {
                if self.outcome.as_ref().is_some_and(|o| {
                    o.outcome_id == end.outcome_id && ends_outcome(end.result, end.iteration, o.max_iterations)
                }) {
                    self.outcome = None;
                }
                if let Some(text) = verdict_text(end) {
                    self.push_input(seq, vec![json!({"type": "text", "text": text})]);
                }
            }
            Event::SessionStatusIdle(idle) => {
                // As for the machine: an outcome a model request worked on
                // still open at an `end_turn` or `refusal` idle was an older
                // runner's, which did not grade; it is over.
                if matches!(idle.stop_reason, StopReason::EndTurn | StopReason::Refusal)
                    && self.outcome.as_ref().is_some_and(|o| o.worked)
                {
                    self.outcome = None;
                }
            }
            Event::SpanModelRequestStart(_) => {
                self.request_open = true;
                if let Some(outcome) = self.outcome.as_mut() {
                    outcome.worked = true;
                }
            }
            Event::SpanModelRequestEnd(_) => self.release_held(seq),
            Event::ModelResponse(response) => {
                let provider_run = crate::machine::provider_run_tool_uses(response);
                for link in &response.tool_uses {
                    if provider_run.contains(&link.event_id) {
                        self.provider_run.insert(link.event_id);
                    } else {
                        self.provider_ids.insert(link.event_id, link.provider_id.clone());
                    }
                }
                let mut blocks = match response.content.to_value() {
                    Value::Array(blocks) => blocks,
                    Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) | Value::Object(_) => Vec::new(),
                };
                // The provider sometimes answers with an empty text block,
                // but refuses one in a request.
                blocks.retain(|block| !is_blank_text(block));
                let n = self.messages.len();
                let (response_at, input) = match self.messages.last() {
                    Some(last) if last.role == Role::Assistant => ((n - 1, last.content.len()), None),
                    Some(last) => ((n, 0), Some((n - 1, last.content.len()))),
                    None => ((n, 0), None),
                };
                self.last_response = Some(ResponsePlace {
                    start: response.model_request_start_id,
                    response: (!blocks.is_empty()).then_some(response_at),
                    input,
                });
                self.push(seq, Role::Assistant, blocks);
                self.release_held(seq);
            }
            Event::ModelRequest(request) if request.stop_reason.as_deref() == Some(REFUSAL) => {
                self.forget_refused(request.model_request_start_id);
            }
            Event::AgentToolResult(result) => {
                if !self.provider_run.remove(&result.tool_use_id) {
                    self.tool_result(seq, result.tool_use_id, result.content.as_deref(), result.is_error);
                }
            }
            Event::AgentMcpToolResult(result) => {
                self.tool_result(seq, result.mcp_tool_use_id, result.content.as_deref(), result.is_error);
            }
            Event::UserCustomToolResult(result) => {
                self.tool_result(seq, result.custom_tool_use_id, result.content.as_deref(), result.is_error);
            }
            Event::UserToolResult(result) => {
                self.tool_result(seq, result.tool_use_id, result.content.as_deref(), result.is_error);
            }
            Event::Compaction(compaction) => self.compact(seq, compaction),
            Event::UserInterrupt(_)
            | Event::UserToolConfirmation(_)
            | Event::AgentMessage(_)
            | Event::AgentThinking(_)
            | Event::AgentToolUse(_)
            | Event::AgentMcpToolUse(_)
            | Event::AgentCustomToolUse(_)
            | Event::AgentThreadMessageSent(_)
            | Event::AgentThreadMessageReceived(_)
            | Event::AgentThreadContextCompacted(_)
            | Event::SessionStatusRunning(_)
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
            | Event::SpanOutcomeEvaluationStart(_)
            | Event::SpanOutcomeEvaluationOngoing(_)
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
            | Event::AgentConfig(_) => {}
            Event::SessionResource(_) | Event::ServerToolRequests(_) => {}
        }
    }

    /// Takes a refused response out of the conversation, with the input
    /// that drew it: the provider refuses every later request that still
    /// holds them ("remove or rephrase the turn that triggered the refusal").
    /// Tool results in that input stay (their calls must be answered), and
    /// so does input that arrived while the refused request was open.
    fn forget_refused(&mut self, start: EventId) {
        let Some(place) = self.last_response.take() else { return };
        if place.start != start {
            return;
        }
        // The response first: it comes after the input, whose index stays.
        if let Some((at, blocks_before)) = place.response {
            let Some(response) = self.messages.get_mut(at).filter(|m| m.role == Role::Assistant) else { return };
            // A refused response with calls in it stays: their results will
            // name them (a refusal has none in practice).
            let refused = response.content.get(blocks_before..).unwrap_or_default();
            if refused.iter().any(|block| block["type"] == "tool_use" || block["type"] == "server_tool_use") {
                return;
            }
            response.content.truncate(blocks_before);
            if response.content.is_empty() {
                self.messages.remove(at);
            } else {
                response.tokens = tokens::message(&response.to_json());
            }
        }
        if let Some((at, n_blocks)) = place.input
            && let Some(input) = self.messages.get_mut(at).filter(|m| m.role == Role::User)
        {
            // Only the blocks it had when the response came: input held
            // during the request may have joined it since.
            let mut index = 0;
            input.content.retain(|block| {
                index += 1;
                index > n_blocks || block["type"] == "tool_result"
            });
            if input.content.is_empty() {
                self.messages.remove(at);
            } else {
                input.tokens = tokens::message(&input.to_json());
            }
        }
        self.merge_neighbours();
    }

    /// Merges consecutive messages of one role (left by a removal).
    fn merge_neighbours(&mut self) {
        let mut merged: Vec<Message> = Vec::with_capacity(self.messages.len());
        for message in std::mem::take(&mut self.messages) {
            match merged.last_mut() {
                Some(last) if last.role == message.role => {
                    last.content.extend(message.content);
                    last.tokens = tokens::message(&last.to_json());
                }
                Some(_) | None => merged.push(message),
            }
        }
        self.messages = merged;
    }

    fn compact(&mut self, seq: u64, compaction: &Compaction) {
        // An empty summary records that nothing could be cut.
        if compaction.summary.is_empty() {
            return;
        }
        if let Some(current) = &self.summary
            && compaction.through_seq <= current.through_seq
        {
            // Nothing new to replace (a compaction that found nothing to cut).
            return;
        }
        let n_replaced = self.messages.iter().take_while(|m| m.first_seq <= compaction.through_seq).count();
        let replaced: Vec<Message> = self.messages.drain(..n_replaced).collect();
        self.keep_standing(&replaced);
        self.summary = Some(Summary {
            text: compaction.summary.clone(),
            compaction_seq: seq,
            through_seq: compaction.through_seq,
        });
    }

    /// Moves the system messages among `replaced` to the standing ones, and
    /// marks the open outcome replaced if its blocks are among them.
    fn keep_standing(&mut self, replaced: &[Message]) {
        if let Some(outcome) = self.outcome.as_mut()
            && let Some(first) = outcome.blocks.first()
            && replaced.iter().filter(|m| m.role == Role::User).any(|m| m.content.contains(first))
        {
            outcome.replaced = true;
        }
        for block in replaced.iter().filter(|m| m.role == Role::User).flat_map(|m| &m.content) {
            let Some(at) = self.system_blocks.iter().position(|b| b == block) else { continue };
            let block = self.system_blocks.remove(at);
            // A repeated one stands once, at its newest place.
            self.standing.retain(|b| *b != block);
            self.standing.push(block);
        }
        let bytes = |block: &Value| block.get("text").and_then(Value::as_str).map_or(0, str::len);
        let mut total: usize = self.standing.iter().map(bytes).sum();
        let mut n_dropped = 0;
        // The newest stands whatever its size (it was in every request since
        // it was sent).
        for block in self.standing.iter().take(self.standing.len().saturating_sub(1)) {
            if total <= MAX_STANDING_SYSTEM_BYTES {
                break;
            }
            total -= bytes(block);
            n_dropped += 1;
        }
        self.standing.drain(..n_dropped);
    }

    fn tool_result(
        &mut self,
        seq: u64,
        tool_use_id: EventId,
        content: Option<&[ContentBlock]>,
        is_error: Option<bool>,
    ) {
        let provider_id = self.provider_ids.remove(&tool_use_id).unwrap_or_else(|| tool_use_id.to_string());
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
                last.tokens += tokens::block(&block);
                last.content.insert(at, block);
            }
            Some(_) | None => {
                let tokens = tokens::message(&json!({"content": [&block]}));
                self.messages.push(Message { role: Role::User, content: vec![block], first_seq: seq, tokens });
            }
        }
    }

    /// User or system input: held while a model request is open.
    fn push_input(&mut self, seq: u64, blocks: Vec<Value>) {
        if self.request_open {
            self.held.push(blocks);
        } else {
            self.push(seq, Role::User, blocks);
        }
    }

    /// Closes the open request: input held during it follows its response.
    /// Pushed as of the record after `seq` (the response's or the end's):
    /// messages' first seqs stay in log order and distinct, so a compaction
    /// cut before the held input (`through_seq` = its first seq − 1) covers
    /// the response it follows.
    fn release_held(&mut self, seq: u64) {
        self.request_open = false;
        for blocks in std::mem::take(&mut self.held) {
            self.push(seq.saturating_add(1), Role::User, blocks);
        }
    }

    fn push(&mut self, seq: u64, role: Role, blocks: Vec<Value>) {
        if blocks.is_empty() {
            return;
        }
        let added: u64 = blocks.iter().map(tokens::block).sum();
        match self.messages.last_mut() {
            Some(last) if last.role == role => {
                last.tokens += added;
                last.content.extend(blocks);
            }
            Some(_) | None => self.messages.push(Message {
                role,
                content: blocks,
                first_seq: seq,
                tokens: added + tokens::MESSAGE_OVERHEAD_TOKENS,
            }),
        }
    }
}

/// What the model is told of an outcome: it starts work on its own
/// (behaviour digest §10), so the agent is told what to produce and how it
/// will be judged. The description's text block, then the rubric's (a
/// document block for a rubric file, read from the Files API when a request
/// is sent).
pub fn outcome_blocks(outcome: &UserDefineOutcome) -> Vec<Value> {
    let description = json!({"type": "text", "text": format!(
        "<outcome>\nWork towards this outcome:\n{}\n</outcome>", outcome.description
    )});
    let rubric = match &outcome.rubric {
        Rubric::Text { content } => json!({"type": "text", "text": format!("<rubric>\n{content}\n</rubric>")}),
        Rubric::File { file_id } => json!({
            "type": "document", "title": "rubric", "source": {"type": "file", "file_id": file_id}
        }),
    };
    vec![description, rubric]
}

/// What the model is told of a grader's verdict: the explanation to revise
/// by, why the work stops, or that it was accepted; nothing after an
/// interrupt (the user stopped the work, and says what next).
fn verdict_text(end: &SpanOutcomeEvaluationEnd) -> Option<String> {
    let says = match end.result {
        OutcomeEvaluationResult::NeedsRevision => {
            "The grader found that the outcome is not met yet. Revise your work accordingly, then finish your turn."
        }
        OutcomeEvaluationResult::MaxIterationsReached => {
            "The grader found that the outcome is still not met, and no evaluation is left. Stop working on it: \
             briefly tell the user what is done and what remains unmet."
        }
        OutcomeEvaluationResult::Satisfied => "The grader found that the outcome is met.",
        // Why (the rubric did not apply, the grader could not be reached, the
        // turn was refused) is the explanation.
        OutcomeEvaluationResult::Failed => "The outcome is over, unmet.",
        OutcomeEvaluationResult::Interrupted => return None,
    };
    Some(format!(
        "<outcome_evaluation iteration=\"{}\" result=\"{}\">\n{says}\n{}\n</outcome_evaluation>",
        end.iteration,
        end.result.as_str(),
        end.explanation
    ))
}

/// Whether `block` is a text block with nothing but whitespace.
fn is_blank_text(block: &Value) -> bool {
    block.get("type").and_then(Value::as_str) == Some("text")
        && block.get("text").and_then(Value::as_str).is_none_or(|text| text.trim().is_empty())
}

fn summary_block(text: &str) -> Value {
    json!({"type": "text", "text": format!("{SUMMARY_PREAMBLE}\n\n<summary>\n{text}\n</summary>")})
}

/// What a compaction would replace.
#[derive(Debug, Clone, PartialEq)]
pub struct CompactionPlan {
    /// The last seq whose messages the summary replaces.
    pub through_seq: u64,
    /// The messages to summarize (the current summary first, if any), in
    /// Messages API form.
    pub replaced: Vec<Value>,
    /// Estimated tokens of the whole context now, and of what is kept.
    pub tokens_before: u64,
    pub tokens_kept: u64,
    /// The summary of an earlier compaction that this one replaces (also the
    /// first of `replaced`): a mechanical summary carries it on whole.
    pub earlier_summary: Option<String>,
    /// How many blocks open the first of `replaced` before the replaced
    /// messages' own: the earlier summary and the standing system messages
    /// (which a mechanical summary need not list: they stand on).
    pub n_preface_blocks: usize,
}

/// Plans a compaction that keeps the newest messages worth at most
/// `keep_tokens` (but always the newest message), cutting only before a
/// message that is not a tool result. `None` when there is nothing to cut.
pub fn plan_compaction(context: &Context, keep_tokens: u64) -> Option<CompactionPlan> {
    plan_compaction_by(context, Keep { tokens: keep_tokens, bytes: u64::MAX }, &|message| Weight {
        tokens: message.tokens,
        bytes: 0,
    })
}

/// What a compaction may keep of the newest messages, at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep {
    pub tokens: u64,
    /// Bytes as sent: the provider also refuses requests over its size limit
    /// (413), and an image's tokens say nothing of its bytes.
    pub bytes: u64,
}

/// What a message weighs in a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Weight {
    pub tokens: u64,
    pub bytes: u64,
}

/// [`plan_compaction`] with each message weighed by `weigh` (which may know
/// more than the context: what a file source becomes once inlined, how many
/// bytes a message takes), keeping at most `keep` of both.
pub fn plan_compaction_by(context: &Context, keep: Keep, weigh: &dyn Fn(&Message) -> Weight) -> Option<CompactionPlan> {
    let messages = &context.messages;
    let weights: Vec<Weight> = messages.iter().map(weigh).collect();
    let tokens: Vec<u64> = weights.iter().map(|w| w.tokens).collect();
    // The context's estimate, with what the weights know beyond it.
    let beyond: u64 = messages.iter().zip(&tokens).map(|(m, t)| t.saturating_sub(m.tokens)).sum();
    let tokens_before = context.estimate_tokens() + beyond;
    // The earliest cut point whose suffix fits, else the latest cut point.
    let mut suffix = Weight::default();
    let mut chosen = None;
    for index in (1..messages.len()).rev() {
        suffix.tokens += weights[index].tokens;
        suffix.bytes += weights[index].bytes;
        if !messages[index].is_cut_point() {
            continue;
        }
        if (suffix.tokens <= keep.tokens && suffix.bytes <= keep.bytes) || chosen.is_none() {
            chosen = Some(index);
        } else {
            break;
        }
    }
    let cut = chosen?;
    let through_seq = messages[cut].first_seq.checked_sub(1)?;
    let mut replaced = Vec::with_capacity(cut + 1);
    let mut n_preface_blocks = 0;
    if let Some(summary) = &context.summary {
        let mut blocks = vec![summary_block(&summary.text)];
        blocks.extend(context.standing_blocks().cloned());
        n_preface_blocks = blocks.len();
        replaced.push(json!({"role": "user", "content": blocks}));
    }
    for message in &messages[..cut] {
        merge_push(&mut replaced, message.to_json());
    }
    let tokens_kept = tokens[cut..].iter().sum();
    let earlier_summary = context.summary.as_ref().map(|summary| summary.text.clone());
    Some(CompactionPlan { through_seq, replaced, tokens_before, tokens_kept, earlier_summary, n_preface_blocks })
}

/// The messages of the summarizing call: what is replaced, then the
/// instruction as the last user turn.
pub fn summary_request_messages(plan: &CompactionPlan) -> Vec<Value> {
    let mut messages = plan.replaced.clone();
    merge_push(&mut messages, json!({"role": "user", "content": [{"type": "text", "text": SUMMARY_INSTRUCTION}]}));
    messages
}

/// A summary made without the model: the summary of an earlier compaction
/// it replaces, whole; then the user's texts and the tool calls, in order,
/// each shortened, the newest [`ELIDED_MAX_LINES`] lines; and the newest
/// user text whole (the instruction the turn may still be carrying out).
/// Whole means up to [`ELIDED_KEPT_CHARS`].
pub fn elided_summary(plan: &CompactionPlan) -> String {
    let mut lines = Vec::new();
    let mut newest_user: Option<&str> = None;
    for (index, message) in plan.replaced.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        // The earlier summary is carried on below; a first replaced message
        // of the user's was merged into its message.
        let skip = if index == 0 { plan.n_preface_blocks } else { 0 };
        for block in message.get("content").and_then(Value::as_array).into_iter().flatten().skip(skip) {
            let kind = block.get("type").and_then(Value::as_str).unwrap_or("");
            let line = match (role, kind) {
                ("user", "text") => {
                    let text = block["text"].as_str().unwrap_or("");
                    newest_user = Some(text);
                    format!("User: {}", shorten(text))
                }
                ("assistant", "text") => format!("Assistant: {}", shorten(block["text"].as_str().unwrap_or(""))),
                ("assistant", "tool_use") => {
                    format!(
                        "Tool call {}: {}",
                        block["name"].as_str().unwrap_or("?"),
                        shorten(&block["input"].to_string())
                    )
                }
                ("user", "tool_result") => {
                    let error = block.get("is_error").and_then(Value::as_bool) == Some(true);
                    format!("Tool result{}", if error { " (error)" } else { "" })
                }
                _ => continue,
            };
            lines.push(line);
        }
    }
    let skip = lines.len().saturating_sub(ELIDED_MAX_LINES);
    let mut text = String::from("(The model could not summarize; older turns elided.)\n");
    if let Some(earlier) = &plan.earlier_summary {
        text.push_str(&format!("Summary of the turns before:\n{}\n", cut_at(earlier, ELIDED_KEPT_CHARS)));
    }
    if skip > 0 {
        text.push_str(&format!("({skip} earlier lines omitted)\n"));
    }
    text.push_str(&lines[skip..].join("\n"));
    if let Some(newest) = newest_user.filter(|newest| newest.chars().count() > ELIDED_TEXT_CHARS) {
        text.push_str(&format!("\nThe newest user message, whole:\n{}", cut_at(newest, ELIDED_KEPT_CHARS)));
    }
    text
}

/// `text`'s first `max` characters, marked when cut.
fn cut_at(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

fn shorten(text: &str) -> String {
    if text.chars().count() <= ELIDED_TEXT_CHARS {
        return text.to_owned();
    }
    let head: String = text.chars().take(ELIDED_TEXT_CHARS).collect();
    format!("{head}…")
}

/// Pushes a message, merging it into the last one when the roles match.
fn merge_push(messages: &mut Vec<Value>, message: Value) {
    if let Some(last) = messages.last_mut()
        && last.get("role") == message.get("role")
        && let (Some(Value::Array(into)), Some(Value::Array(from))) =
            (last.get_mut("content"), message.get("content").cloned())
    {
        into.extend(from);
        return;
    }
    messages.push(message);
}

/// A content block as the Messages API takes it; redacted blocks and blank
/// text (which the API refuses with a final 400) are dropped.
fn block_json(block: &ContentBlock) -> Option<Value> {
    match block {
        ContentBlock::Redacted => None,
        ContentBlock::Text { text } if text.trim().is_empty() => None,
        ContentBlock::Text { .. }
        | ContentBlock::Image { .. }
        | ContentBlock::Document { .. }
        | ContentBlock::SearchResult { .. } => serde_json::to_value(block).ok(),
    }
}

#[cfg(test)]
mod tests {
    use logbook_core::event::{
        AgentToolResult, AgentToolUse, EvaluatedPermission, ModelResponse, ToolUseLink, UserMessage,
    };
    use logbook_core::{Json, Timestamp};

    use super::*;

    fn entry(n: u128, event: Event) -> Entry {
        Entry { id: EventId::from_parts(1, n), event, at: Timestamp::from_unix_micros(0) }
    }

    /// A model call's recorded batch from seq `n` on: its response with
    /// `content`, the span's end and the request stopping for `stop`.
    fn response(n: u128, start: EventId, content: Value, stop: &str) -> Vec<Entry> {
        use logbook_core::event::{ModelRequest, ModelUsage, SpanModelRequestEnd};
        vec![
            entry(
                n,
                Event::ModelResponse(ModelResponse {
                    model_request_start_id: start,
                    content: Json::new(&content),
                    tool_uses: Vec::new(),
                }),
            ),
            entry(
                n + 1,
                Event::SpanModelRequestEnd(SpanModelRequestEnd {
                    model_request_start_id: start,
                    model_usage: ModelUsage::default(),
                    is_error: Some(false),
                }),
            ),
            entry(
                n + 2,
                Event::ModelRequest(ModelRequest {
                    model_request_start_id: start,
                    model: "claude-sonnet-4-6".into(),
                    request_id: None,
                    stop_reason: Some(stop.into()),
                    usage: ModelUsage::default(),
                    duration_ms: 1,
                    attempt: 1,
                }),
            ),
        ]
    }

    #[test]
    fn a_turn_started_by_an_outcome_alone_sends_a_valid_request() {
        // Goal: `user.define_outcome` is input that starts a turn (the machine
        // marks it unseen and asks for a model call), and initial_events may
        // hold it alone (behaviour digest §3.2). The context renders nothing
        // for it, so the call that follows sends `messages: []` (first turn;
        // the API refuses it, the runner retries until retries_exhausted) or
        // ends on the assistant's last answer (a prefill, not the outcome).
        // Method: a session whose only input is an outcome; when the machine
        // says to call the model, the request must have a user turn last.
        use crate::machine::{Command, Machine, Policy};
        use logbook_core::OutcomeId;
        use logbook_core::event::{Rubric, SessionStatusRunning, UserDefineOutcome};

        let log = vec![
            entry(
                1,
                Event::UserDefineOutcome(UserDefineOutcome {
                    outcome_id: OutcomeId::from_parts(1, 1),
                    description: "A passing test suite.".into(),
                    rubric: Rubric::Text { content: "- all tests pass".into() },
                    max_iterations: None,
                }),
            ),
            entry(2, Event::SessionStatusRunning(SessionStatusRunning {})),
        ];
        let machine = Machine::project(&log);
        assert_eq!(machine.next(&Policy::default()), Command::CallModel { attempt: 1 });
        let messages = conversation(&log);
        assert_eq!(
            messages.last().map(|m| m["role"].clone()),
            Some(json!("user")),
            "the model is called with {messages:?}"
        );
    }

    #[test]
    fn a_message_sent_while_the_model_answers_comes_after_the_answer() {
        // Goal: a user.message sent while a model call streams is appended to
        // the log between `span.model_request_start` and the response's
        // records (sends never wait for the runner). The model did not see it,
        // and the machine calls the model again for it. The context pushes it
        // before the response arrives, so it merges into the user turn the
        // model answered: the next request claims the user said it before the
        // answer, and ends on the assistant's turn (a prefill of the old
        // answer) instead of on the new message.
        // Method: a turn whose follow-up arrives mid-call; when the machine
        // says to call the model again, the request must end with the
        // follow-up, after the answer.
        use crate::machine::{Command, Machine, Policy};
        use logbook_core::event::{SessionStatusRunning, SpanModelRequestEnd, SpanModelRequestStart};

        let text = |t: &str| vec![ContentBlock::Text { text: t.into() }];
        let start = EventId::from_parts(1, 3);
        let log = vec![
            entry(1, Event::UserMessage(UserMessage { content: text("first question") })),
            entry(2, Event::SessionStatusRunning(SessionStatusRunning {})),
            entry(3, Event::SpanModelRequestStart(SpanModelRequestStart {})),
            entry(4, Event::UserMessage(UserMessage { content: text("follow-up") })),
            entry(
                5,
                Event::ModelResponse(ModelResponse {
                    model_request_start_id: start,
                    content: Json::new(&json!([{"type": "text", "text": "first answer"}])),
                    tool_uses: Vec::new(),
                }),
            ),
            entry(
                6,
                Event::SpanModelRequestEnd(SpanModelRequestEnd {
                    model_request_start_id: start,
                    model_usage: Default::default(),
                    is_error: Some(false),
                }),
            ),
        ];
        assert_eq!(Machine::project(&log).next(&Policy::default()), Command::CallModel { attempt: 1 });
        assert_eq!(
            conversation(&log),
            vec![
                json!({"role": "user", "content": [{"type": "text", "text": "first question"}]}),
                json!({"role": "assistant", "content": [{"type": "text", "text": "first answer"}]}),
                json!({"role": "user", "content": [{"type": "text", "text": "follow-up"}]}),
            ]
        );
    }

    #[test]
    fn a_compaction_cut_at_held_input_replaces_exactly_what_it_summarized() {
        // Goal: input held during a model call is released at the response's
        // seq, so the assistant's answer and the held user turn share a
        // `first_seq`. A compaction cut at that user turn (a cut point: it
        // holds no tool_result) records `through_seq = first_seq - 1`, which
        // is before the answer: the plan summarizes [question, answer], but
        // applying the compaction drops only the question, so the answer is
        // both in the summary and kept (and `tokens_kept` is wrong).
        // Method: plan with nothing to keep (the latest cut point), apply it,
        // and compare what is kept with what the plan said it keeps.
        use logbook_core::event::{ModelUsage, SpanModelRequestEnd, SpanModelRequestStart};

        let text = |t: &str| vec![ContentBlock::Text { text: t.into() }];
        let start = EventId::from_parts(1, 2);
        let log = [
            entry(1, Event::UserMessage(UserMessage { content: text("first question") })),
            entry(2, Event::SpanModelRequestStart(SpanModelRequestStart {})),
            entry(3, Event::UserMessage(UserMessage { content: text("follow-up") })),
            entry(
                4,
                Event::ModelResponse(ModelResponse {
                    model_request_start_id: start,
                    content: Json::new(&json!([{"type": "text", "text": "first answer"}])),
                    tool_uses: Vec::new(),
                }),
            ),
            entry(
                5,
                Event::SpanModelRequestEnd(SpanModelRequestEnd {
                    model_request_start_id: start,
                    model_usage: ModelUsage::default(),
                    is_error: Some(false),
                }),
            ),
        ];
        let mut context = Context::default();
        for (seq, e) in log.iter().enumerate() {
            context.apply(seq as u64, e);
        }
        let plan = plan_compaction(&context, 0).expect("something to cut");
        let n_replaced = plan.replaced.len();
        let compaction = Compaction {
            summary: "summary".into(),
            through_seq: plan.through_seq,
            tokens_before: plan.tokens_before,
            tokens_after: plan.tokens_kept,
            model: None,
            usage: ModelUsage::default(),
        };
        context.apply(log.len() as u64, &entry(6, Event::Compaction(compaction)));
        let kept: Vec<Value> = context.messages().iter().map(Message::to_json).collect();
        assert_eq!(
            kept,
            vec![json!({"role": "user", "content": [{"type": "text", "text": "follow-up"}]})],
            "the plan replaced {n_replaced} messages (through seq {}), yet kept {kept:?}",
            plan.through_seq
        );
    }

    #[test]
    fn an_empty_text_block_the_model_returned_is_not_sent_back() {
        // Goal: the Messages API sometimes returns an empty text block (e.g.
        // `[{"type":"text","text":""}, {"type":"tool_use",...}]`), but refuses
        // one in a request with a non-retryable 400 "messages: text content
        // blocks must be non-empty". The context replays `x.model_response`
        // verbatim, so once such a response is recorded every later request of
        // the session is refused: the session is poisoned for good.
        // Method: a response with an empty text block and a tool use, then the
        // tool's result; the conversation the next request sends must hold no
        // text block with empty (or whitespace-only) text.
        let call = EventId::from_parts(1, 3);
        let log = vec![
            entry(1, Event::UserMessage(UserMessage { content: vec![ContentBlock::Text { text: "go".into() }] })),
            entry(
                2,
                Event::ModelResponse(ModelResponse {
                    model_request_start_id: EventId::from_parts(1, 0),
                    content: Json::new(&json!([
                        {"type": "text", "text": ""},
                        {"type": "tool_use", "id": "toolu_1", "name": "bash", "input": {"command": "ls"}}
                    ])),
                    tool_uses: vec![ToolUseLink { provider_id: "toolu_1".into(), event_id: call }],
                }),
            ),
            entry(
                3,
                Event::AgentToolUse(AgentToolUse {
                    name: "bash".into(),
                    input: Json::new(&json!({"command": "ls"})),
                    evaluated_permission: Some(EvaluatedPermission::Allow),
                    evaluation: None,
                    session_thread_id: None,
                }),
            ),
            entry(
                4,
                Event::AgentToolResult(AgentToolResult {
                    tool_use_id: call,
                    content: Some(vec![ContentBlock::Text { text: "a.txt".into() }]),
                    is_error: Some(false),
                }),
            ),
        ];
        let messages = conversation(&log);
        let empty: Vec<&Value> = messages
            .iter()
            .flat_map(|m| m["content"].as_array().into_iter().flatten())
            .filter(|b| b["type"] == "text" && b["text"].as_str().is_some_and(|t| t.trim().is_empty()))
            .collect();
        assert!(empty.is_empty(), "the next request sends empty text blocks {empty:?} in {messages:#?}");
    }

    #[test]
    fn a_refused_turn_is_not_sent_to_the_model_again() {
        // Goal: after `stop_reason: refusal` the Messages API documentation
        // says the conversation must be reset before continuing ("remove or
        // rephrase the turn that triggered the refusal, or clear the
        // conversation history entirely. Attempting to continue without
        // resetting will result in continued refusals"; Handle streaming
        // refusals). The runner ends the turn idle `refusal`, but the context
        // keeps the refused response (and the input that triggered it), so
        // every later turn of the session sends them again and is refused
        // again.
        // Method: a turn refused mid-answer, then a new message; the
        // conversation the next request sends must not hold the refused
        // partial answer.
        use logbook_core::event::{SessionStatusIdle, SessionStatusRunning, SpanModelRequestStart, StopReason};

        let text = |t: &str| vec![ContentBlock::Text { text: t.into() }];
        let start = EventId::from_parts(1, 3);
        let mut log = vec![
            entry(1, Event::UserMessage(UserMessage { content: text("something the classifier stops") })),
            entry(2, Event::SessionStatusRunning(SessionStatusRunning {})),
            entry(3, Event::SpanModelRequestStart(SpanModelRequestStart {})),
        ];
        log.extend(response(4, start, json!([{"type": "text", "text": "Sure, the first step is"}]), "refusal"));
        log.extend([
            entry(
                7,
                Event::SessionStatusIdle(SessionStatusIdle { stop_reason: StopReason::Refusal, stop_details: None }),
            ),
            entry(8, Event::UserMessage(UserMessage { content: text("let us talk about something else") })),
        ]);
        let messages = conversation(&log);
        assert!(
            !serde_json::to_string(&messages).unwrap().contains("Sure, the first step is"),
            "the next request sends the refused answer again: {messages:#?}"
        );
    }

    #[test]
    fn a_refusal_with_no_content_still_takes_out_the_input_that_drew_it() {
        // Defect (review of 444f1d5): a refusal often comes with no content at
        // all (the classifier stops the answer before its first block). The
        // runner records the `ModelResponse` with `content: []`; the context
        // sets `last_response` to `message: messages.len()` (the slot the
        // blocks would have taken) but pushes nothing, so `forget_refused`
        // finds `place.message >= messages.len()` and returns without taking
        // out the user input that drew the refusal. Every later request still
        // holds it and is refused again: the session is refused for good,
        // which is what 444f1d5 was to end.
        // Method: a first turn answered, a second refused with empty content,
        // then a new message; the next request must not hold the refused input.
        use logbook_core::event::{SessionStatusIdle, SessionStatusRunning, SpanModelRequestStart, StopReason};

        let text = |t: &str| vec![ContentBlock::Text { text: t.into() }];
        let mut log = vec![
            entry(1, Event::UserMessage(UserMessage { content: text("hello") })),
            entry(2, Event::SessionStatusRunning(SessionStatusRunning {})),
            entry(3, Event::SpanModelRequestStart(SpanModelRequestStart {})),
        ];
        log.extend(response(4, EventId::from_parts(1, 3), json!([{"type": "text", "text": "Hi."}]), "end_turn"));
        log.push(entry(
            7,
            Event::SessionStatusIdle(SessionStatusIdle { stop_reason: StopReason::EndTurn, stop_details: None }),
        ));
        log.push(entry(8, Event::UserMessage(UserMessage { content: text("something the classifier stops") })));
        log.push(entry(9, Event::SessionStatusRunning(SessionStatusRunning {})));
        log.push(entry(10, Event::SpanModelRequestStart(SpanModelRequestStart {})));
        log.extend(response(11, EventId::from_parts(1, 10), json!([]), "refusal"));
        log.push(entry(
            14,
            Event::SessionStatusIdle(SessionStatusIdle { stop_reason: StopReason::Refusal, stop_details: None }),
        ));
        log.push(entry(15, Event::UserMessage(UserMessage { content: text("let us talk about something else") })));
        let messages = conversation(&log);
        assert!(
            !serde_json::to_string(&messages).unwrap().contains("something the classifier stops"),
            "the next request sends the input that drew the refusal again: {messages:#?}"
        );
    }

    #[test]
    fn a_refusal_with_no_content_keeps_the_input_sent_during_it() {
        // Defect (review of 444f1d5): `forget_refused` promises that input
        // sent while the refused request was open stays. When the refused
        // response has no (non-blank) content and follows an assistant
        // message (a `pause_turn` continuation), `last_response` points at
        // `messages.len()`, the slot its blocks would have taken; nothing is
        // pushed there, but the held input released after it is, and the
        // refusal then takes that user message out instead: the user's words
        // are silently dropped from the conversation.
        // Method: a paused response, its continuation refused with empty
        // content while the user sent a message; the next request must hold
        // that message.
        use logbook_core::event::{SessionStatusRunning, SpanModelRequestStart};

        let text = |t: &str| vec![ContentBlock::Text { text: t.into() }];
        let mut log = vec![
            entry(1, Event::UserMessage(UserMessage { content: text("look this up") })),
            entry(2, Event::SessionStatusRunning(SessionStatusRunning {})),
            entry(3, Event::SpanModelRequestStart(SpanModelRequestStart {})),
        ];
        log.extend(response(4, EventId::from_parts(1, 3), json!([{"type": "text", "text": "Looking."}]), "pause_turn"));
        log.push(entry(7, Event::SpanModelRequestStart(SpanModelRequestStart {})));
        log.push(entry(8, Event::UserMessage(UserMessage { content: text("and keep it short please") })));
        log.extend(response(9, EventId::from_parts(1, 7), json!([]), "refusal"));
        let messages = conversation(&log);
        assert!(
            serde_json::to_string(&messages).unwrap().contains("and keep it short please"),
            "the input sent during the refused request was dropped: {messages:#?}"
        );
    }

    #[test]
    fn a_refusal_with_no_content_keeps_input_sent_during_it_that_joined_the_drawing_input() {
        // Goal: with no response block in between, input held during the
        // refused request joins the user message that drew the refusal; the
        // refusal takes out only what that message held before.
        use logbook_core::event::SpanModelRequestStart;

        let start = EventId::from_parts(1, 2);
        let text = |t: &str| vec![ContentBlock::Text { text: t.into() }];
        let mut log = vec![
            entry(1, Event::UserMessage(UserMessage { content: text("something the classifier stops") })),
            entry(2, Event::SpanModelRequestStart(SpanModelRequestStart {})),
            entry(3, Event::UserMessage(UserMessage { content: text("never mind, tell me a joke") })),
        ];
        log.extend(response(4, start, json!([]), "refusal"));
        let sent = serde_json::to_string(&conversation(&log)).unwrap();
        assert!(!sent.contains("classifier stops"), "{sent}");
        assert!(sent.contains("tell me a joke"), "the input sent during the refused request was dropped: {sent}");
    }

    #[test]
    fn server_tool_results_stay_inside_the_providers_content() {
        // Goal: a web search the provider ran (paused, then continued) is sent
        // back as the provider's own blocks, in one assistant turn, and its
        // `agent.tool_result` adds no tool_result block the API would reject.
        let search = EventId::from_parts(1, 3);
        let use_block = json!({"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search",
                               "input": {"query": "q"}});
        let result_block = json!({"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []});
        let log = vec![
            entry(1, Event::UserMessage(UserMessage { content: vec![ContentBlock::Text { text: "find".into() }] })),
            entry(
                2,
                Event::ModelResponse(ModelResponse {
                    model_request_start_id: EventId::from_parts(1, 0),
                    content: Json::new(&json!([use_block])),
                    tool_uses: vec![ToolUseLink { provider_id: "srvtoolu_1".into(), event_id: search }],
                }),
            ),
            entry(
                3,
                Event::AgentToolUse(AgentToolUse {
                    name: "web_search".into(),
                    input: Json::new(&json!({"query": "q"})),
                    evaluated_permission: Some(EvaluatedPermission::Allow),
                    evaluation: None,
                    session_thread_id: None,
                }),
            ),
            entry(
                4,
                Event::ModelResponse(ModelResponse {
                    model_request_start_id: EventId::from_parts(1, 0),
                    content: Json::new(&json!([result_block, {"type": "text", "text": "found"}])),
                    tool_uses: Vec::new(),
                }),
            ),
            entry(5, Event::AgentToolResult(AgentToolResult { tool_use_id: search, content: None, is_error: None })),
        ];
        assert_eq!(
            conversation(&log),
            vec![
                json!({"role": "user", "content": [{"type": "text", "text": "find"}]}),
                json!({"role": "assistant", "content": [use_block, result_block, {"type": "text", "text": "found"}]}),
            ]
        );
    }
}

#[cfg(test)]
mod mechanical_summary_tests {
    use logbook_core::event::{
        AgentToolResult, Compaction, ModelResponse, ModelUsage, SystemMessage, ToolUseLink, UserMessage,
    };
    use logbook_core::{Json, Timestamp};

    use super::*;

    fn entry(n: u128, event: Event) -> Entry {
        Entry { id: EventId::from_parts(1, n), event, at: Timestamp::from_unix_micros(0) }
    }

    fn text(t: &str) -> Vec<ContentBlock> {
        vec![ContentBlock::Text { text: t.into() }]
    }

    /// The model's call `id` of bash, at `n`.
    fn call(n: u128, id: &str) -> Entry {
        entry(
            n,
            Event::ModelResponse(ModelResponse {
                model_request_start_id: EventId::from_parts(1, 0),
                content: Json::new(&json!([
                    {"type": "tool_use", "id": id, "name": "bash", "input": {"command": "cargo test"}}
                ])),
                tool_uses: vec![ToolUseLink { provider_id: id.into(), event_id: EventId::from_parts(2, n) }],
            }),
        )
    }

    /// The result of the call at `of`, at `n`.
    fn result(n: u128, of: u128) -> Entry {
        entry(
            n,
            Event::AgentToolResult(AgentToolResult {
                tool_use_id: EventId::from_parts(2, of),
                content: Some(text("ok")),
                is_error: Some(false),
            }),
        )
    }

    #[test]
    fn a_mechanical_summary_keeps_the_instruction_the_turn_is_working_on() {
        // Defect: when the summarizing call fails (the provider refuses it as
        // too long, which is likely exactly when the context was refused as
        // too long; an error; a refusal), `elided_summary` stands for the
        // replaced turns and keeps `ELIDED_TEXT_CHARS` (400) characters of
        // every user text, the newest one included. In a long agentic turn
        // the plan replaces the message that started it (only the newest
        // messages are kept), so the agent goes on with the first 400
        // characters of the instruction it is carrying out; the rest is gone
        // from the conversation for good (the summarizing request asks the
        // model to "quote the latest exactly"; the mechanical one cuts it).
        // Method: an instruction of about 1,000 characters, then two tool
        // calls and their results; a compaction keeping nothing it need not,
        // with the mechanical summary; the conversation sent next must still
        // hold the end of the instruction.
        let instruction = format!(
            "Refactor the parser. {} Finally, and most importantly: DO NOT TOUCH THE PUBLIC API.",
            "Keep every error message as it is, add a test per grammar rule, run the whole suite. ".repeat(10)
        );
        let log = [
            entry(0, Event::UserMessage(UserMessage { content: text(&instruction) })),
            call(1, "toolu_1"),
            result(2, 1),
            call(3, "toolu_2"),
            result(4, 3),
        ];
        let mut context = Context::default();
        for (seq, e) in log.iter().enumerate() {
            context.apply(seq as u64, e);
        }
        let plan = plan_compaction(&context, 0).expect("something to cut");
        let compaction = Compaction {
            summary: elided_summary(&plan),
            through_seq: plan.through_seq,
            tokens_before: plan.tokens_before,
            tokens_after: plan.tokens_kept,
            model: None,
            usage: ModelUsage::default(),
        };
        context.apply(log.len() as u64, &entry(5, Event::Compaction(compaction)));
        let sent = serde_json::to_string(&context.messages_json()).unwrap();
        assert!(
            sent.contains("DO NOT TOUCH THE PUBLIC API"),
            "the instruction the turn works on was cut to its first {ELIDED_TEXT_CHARS} characters: {sent}"
        );
    }

    #[test]
    fn a_mechanical_summary_keeps_the_summary_of_the_turns_before() {
        // Defect: a second compaction replaces the first one's summary with
        // the rest. When its summarizing call fails, `elided_summary` renders
        // that summary (the only record of every turn before the first
        // compaction) as one user text, and keeps `ELIDED_TEXT_CHARS` (400)
        // characters of it: after the preamble, about 300 characters of what
        // may be thousands. One failed summarizing call (a provider refusing
        // it as too long, an outage) wipes the session's whole history.
        // Method: a conversation compacted once with a long summary that
        // ends with what matters; two tool calls; a second compaction whose
        // summary is mechanical. The conversation sent next must still hold
        // the end of the first summary.
        let first_summary = format!(
            "{} The user's deadline is Friday; the staging database password was rotated.",
            "Read src/parser.rs and src/lexer.rs; the grammar has 14 rules, 3 untested. ".repeat(20)
        );
        let compaction = |summary: String, through_seq: u64| Compaction {
            summary,
            through_seq,
            tokens_before: 0,
            tokens_after: 0,
            model: None,
            usage: ModelUsage::default(),
        };
        let answer = entry(
            1,
            Event::ModelResponse(ModelResponse {
                model_request_start_id: EventId::from_parts(1, 0),
                content: Json::new(&json!([{"type": "text", "text": "Done."}])),
                tool_uses: Vec::new(),
            }),
        );
        let log = [
            entry(0, Event::UserMessage(UserMessage { content: text("read the parser") })),
            answer,
            entry(2, Event::UserMessage(UserMessage { content: text("now add the missing tests") })),
            entry(3, Event::Compaction(compaction(first_summary, 1))),
            call(4, "toolu_1"),
            result(5, 4),
            call(6, "toolu_2"),
            result(7, 6),
        ];
        let mut context = Context::default();
        for (seq, e) in log.iter().enumerate() {
            context.apply(seq as u64, e);
        }
        let plan = plan_compaction(&context, 0).expect("something to cut");
        let second = compaction(elided_summary(&plan), plan.through_seq);
        context.apply(log.len() as u64, &entry(8, Event::Compaction(second)));
        let sent = serde_json::to_string(&context.messages_json()).unwrap();
        assert!(
            sent.contains("the staging database password was rotated"),
            "the summary of every turn before the first compaction was cut to {ELIDED_TEXT_CHARS} characters: {sent}"
        );
        // The first replaced message was the user's, which joined the earlier
        // summary's message in the plan; it is listed, not skipped with it.
        assert!(sent.contains("User: now add the missing tests"), "{sent}");
    }

    fn compacted(context: &mut Context, seq: u64, summary: &str) {
        let plan = plan_compaction(context, 0).expect("something to cut");
        let compaction = Compaction {
            summary: summary.into(),
            through_seq: plan.through_seq,
            tokens_before: plan.tokens_before,
            tokens_after: plan.tokens_kept,
            model: None,
            usage: ModelUsage::default(),
        };
        context.apply(seq, &entry(seq.into(), Event::Compaction(compaction)));
    }

    #[test]
    fn a_system_message_stands_after_the_compactions_that_replace_it() {
        // Defect: a `system.message` applies to "this and all later turns"
        // (behaviour digest §4), but a compaction replaced it with the rest of
        // the turns it covered, so the model stopped seeing it (or saw what a
        // summary made of it).
        // Method: two system messages (one sent twice), tool calls, two
        // compactions keeping only the newest message; each system message
        // must be sent once, verbatim, and counted in the estimate.
        let system = |t: &str| Event::SystemMessage(SystemMessage { content: text(t) });
        let log = [
            entry(0, Event::UserMessage(UserMessage { content: text("build it") })),
            entry(1, system("Answer in French.")),
            call(2, "toolu_1"),
            result(3, 2),
            entry(4, system("Never push to main.")),
            entry(5, system("Answer in French.")),
            call(6, "toolu_2"),
            result(7, 6),
        ];
        let mut context = Context::default();
        for (seq, e) in log.iter().enumerate() {
            context.apply(seq as u64, e);
        }
        compacted(&mut context, 8, "first summary");
        let once = |context: &Context| {
            let sent = serde_json::to_string(&context.messages_json()).unwrap();
            for rule in ["<system>Answer in French.</system>", "<system>Never push to main.</system>"] {
                assert_eq!(sent.matches(rule).count(), 1, "{rule} is not sent exactly once: {sent}");
            }
            let standing: u64 = context.standing_blocks().map(tokens::block).sum();
            assert!(standing > 0 && context.estimate_tokens() > standing);
        };
        once(&context);
        // The newest ones stand in the order they were last sent.
        let order: Vec<&str> = context.standing_blocks().filter_map(|b| b["text"].as_str()).collect();
        assert_eq!(order, ["<system>Never push to main.</system>", "<system>Answer in French.</system>"]);
        context.apply(9, &call(9, "toolu_3"));
        context.apply(10, &result(10, 9));
        compacted(&mut context, 11, "second summary");
        once(&context);
        let sent = serde_json::to_string(&context.messages_json()).unwrap();
        assert!(!sent.contains("first summary") && sent.contains("second summary"), "{sent}");
    }

    #[test]
    fn the_open_outcome_stands_after_a_compaction_until_its_verdict() {
        // Goal: the agent revises towards an outcome however long it works:
        // a compaction that replaces the `user.define_outcome` keeps its
        // description and rubric after the summary, until a verdict ends it.
        use logbook_core::event::{OutcomeEvaluationResult, SpanOutcomeEvaluationEnd, UserDefineOutcome};
        let outcome_id = OutcomeId::from_parts(1, 9);
        let mut context = Context::default();
        let define = Event::UserDefineOutcome(UserDefineOutcome {
            outcome_id,
            description: "a README for the parser".into(),
            rubric: Rubric::Text { content: "has a usage section".into() },
            max_iterations: Some(3),
        });
        context.apply(0, &entry(0, define));
        for (seq, e) in [call(1, "toolu_1"), result(2, 1), call(3, "toolu_2"), result(4, 3)].iter().enumerate() {
            context.apply(seq as u64 + 1, e);
        }
        compacted(&mut context, 5, "summary");
        let sent = serde_json::to_string(&context.messages_json()).unwrap();
        assert_eq!(sent.matches("a README for the parser").count(), 1, "{sent}");
        assert_eq!(sent.matches("has a usage section").count(), 1, "{sent}");
        let end = |result| {
            Event::SpanOutcomeEvaluationEnd(SpanOutcomeEvaluationEnd {
                outcome_evaluation_start_id: EventId::NIL,
                outcome_id,
                iteration: 0,
                result,
                explanation: "the usage section is missing".into(),
                usage: ModelUsage::default(),
            })
        };
        context.apply(6, &entry(6, end(OutcomeEvaluationResult::NeedsRevision)));
        assert!(serde_json::to_string(&context.messages_json()).unwrap().contains("a README for the parser"));
        context.apply(7, &entry(7, end(OutcomeEvaluationResult::Satisfied)));
        let sent = serde_json::to_string(&context.messages_json()).unwrap();
        assert!(!sent.contains("a README for the parser"), "an outcome over still stands: {sent}");
    }

    #[test]
    fn standing_system_messages_are_bounded() {
        // Limits on everything: a client sending a new long system message
        // every turn cannot grow what stands past the bound; the oldest go.
        let mut context = Context::default();
        let rule = |n: usize| format!("rule {n}: {}", "x".repeat(MAX_STANDING_SYSTEM_BYTES / 4));
        let mut seq = 0;
        for n in 0..8 {
            context.apply(seq, &entry(seq.into(), Event::SystemMessage(SystemMessage { content: text(&rule(n)) })));
            context.apply(seq + 1, &call(seq as u128 + 1, &format!("toolu_{n}")));
            context.apply(seq + 2, &result(seq as u128 + 2, seq as u128 + 1));
            seq += 3;
        }
        compacted(&mut context, seq, "summary");
        let standing: Vec<&str> = context.standing_blocks().filter_map(|b| b["text"].as_str()).collect();
        assert!(standing.iter().map(|t| t.len()).sum::<usize>() <= MAX_STANDING_SYSTEM_BYTES);
        assert!(standing.last().is_some_and(|t| t.starts_with("<system>rule 7:")), "the newest went: {standing:?}");
        assert!(!standing.iter().any(|t| t.starts_with("<system>rule 0:")), "the oldest stayed");
        // The newest stands whatever its size: it was in every request since.
        let huge = format!("one rule: {}", "y".repeat(MAX_STANDING_SYSTEM_BYTES * 2));
        context.apply(seq + 1, &entry((seq + 1).into(), Event::SystemMessage(SystemMessage { content: text(&huge) })));
        context.apply(seq + 2, &call(seq as u128 + 2, "toolu_huge"));
        context.apply(seq + 3, &result(seq as u128 + 3, seq as u128 + 2));
        compacted(&mut context, seq + 4, "summary");
        let standing: Vec<&str> = context.standing_blocks().filter_map(|b| b["text"].as_str()).collect();
        assert_eq!(standing.len(), 1);
        assert!(standing[0].starts_with("<system>one rule:"), "{}", &standing[0][..40]);
    }
}
