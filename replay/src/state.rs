//! A session's whole state at a seq: every projection folded together, so
//! that "what was the session at seq N" is one fold, and so that the fold can
//! be saved as a checkpoint and resumed from it.
//!
//! [`SessionState::apply`] takes entries in seq order from 0 (or from the seq
//! after a checkpoint). The state is plain data with serde, so a checkpoint is
//! its JSON; resuming from a checkpoint at seq C and folding the entries after
//! it gives exactly the state a fold from 0 gives (the replay tests check it).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use logbook_core::Entry;
use logbook_core::event::{Event, ForkOrigin};

use crate::context::Context;
use crate::machine::Machine;
use crate::tokens::{self, Calibration};
use crate::usage::UsageFold;
use crate::workspace::Tree;

/// The last `x.agent_config`: the agent and the request settings, as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentSettings {
    pub agent: Value,
    pub options: Value,
}

/// Every projection of a session at one point of its log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionState {
    /// Entries folded: the state is "after seq `next_seq - 1`".
    pub next_seq: u64,
    pub machine: Machine,
    pub context: Context,
    pub usage: UsageFold,
    pub workspace: Tree,
    pub agent: Option<AgentSettings>,
    pub calibration: Calibration,
    /// The seq of the last `x.compaction`.
    pub last_compaction: Option<u64>,
    /// Where this session was forked from, if it was.
    pub fork_origin: Option<ForkOrigin>,
    /// The newest `user.message`: its seq and content in Messages API form
    /// (kept even when compaction summarized it away).
    pub last_user_message: Option<(u64, Vec<Value>)>,
    /// Estimated prompt tokens of the model request in flight (for calibration).
    pending_estimate: Option<u64>,
}

impl SessionState {
    pub fn new() -> SessionState {
        SessionState::default()
    }

    /// Folds a whole log from seq 0.
    pub fn project<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> SessionState {
        let mut state = SessionState::new();
        for entry in entries {
            state.apply(entry);
        }
        state
    }

    /// Folds the entry at seq `self.next_seq`.
    pub fn apply(&mut self, entry: &Entry) {
        let seq = self.next_seq;
        self.machine.apply(entry);
        self.context.apply(seq, entry);
        self.usage.apply(entry);
        if let Event::WorkspaceDelta(delta) = &entry.event {
            self.workspace.apply(delta);
        } else if let Event::AgentConfig(config) = &entry.event {
            self.agent = Some(AgentSettings { agent: config.agent.to_value(), options: config.options.to_value() });
        } else if let Event::Compaction(_) = &entry.event {
            self.last_compaction = Some(seq);
        } else if let Event::UserMessage(message) = &entry.event {
            let blocks = message
                .content
                .iter()
                .filter(|b| !matches!(b, logbook_core::event::ContentBlock::Redacted))
                .filter_map(|b| serde_json::to_value(b).ok())
                .collect();
            self.last_user_message = Some((seq, blocks));
        } else if let Event::ForkOrigin(origin) = &entry.event {
            self.fork_origin = Some(origin.clone());
        } else if let Event::SpanModelRequestStart(_) = &entry.event {
            self.pending_estimate = Some(self.fixed_tokens() + self.context.estimate_tokens());
        } else if let Event::SpanModelRequestEnd(end) = &entry.event
            && let Some(estimate) = self.pending_estimate.take()
            && end.is_error != Some(true)
        {
            let usage = &end.model_usage;
            let reported = usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens;
            self.calibration.learn(estimate, reported);
        }
        self.next_seq = seq + 1;
    }

    /// Estimated tokens of the parts of a request that are not messages (the
    /// system prompt and the tool definitions).
    pub fn fixed_tokens(&self) -> u64 {
        let Some(settings) = &self.agent else { return 0 };
        let system = settings.agent.get("system").and_then(Value::as_str).map_or(0, tokens::text);
        let tools = settings.agent.get("tools").map_or(0, tokens::value);
        system + tools
    }

    /// The estimated prompt tokens of the next model request, calibrated.
    pub fn estimated_prompt_tokens(&self) -> u64 {
        self.calibration.apply(self.fixed_tokens() + self.context.estimate_tokens())
    }
}
