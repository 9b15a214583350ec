//! Usage of a session: tokens summed over its model requests (compaction
//! summaries and outcome evaluations included), the provider's server tool uses (web searches), and
//! the time it spent running, as a pure projection of its log.
//!
//! Running time counts from each `session.status_running` to the next
//! `session.status_idle`, `session.status_rescheduled` or
//! `session.status_terminated` (a turn still running counts up to its last
//! entry), so idle time never bills.

use serde::{Deserialize, Serialize};

use logbook_core::Entry;
use logbook_core::event::{Event, ModelUsage};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub cache_creation_input_tokens: u64,
    /// Microseconds spent running.
    pub active_micros: u64,
    /// Model requests made (successful or not), compaction summaries included.
    pub n_model_requests: u64,
    /// Server tool uses the provider reported (`x.server_tool_requests`).
    #[serde(default)]
    pub web_search_requests: u64,
    #[serde(default)]
    pub web_fetch_requests: u64,
}

/// The fold behind [`totals`], for incremental use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageFold {
    closed: Totals,
    running_since: Option<i64>,
    last_at: Option<i64>,
}

impl UsageFold {
    pub fn apply(&mut self, entry: &Entry) {
        let at = entry.at.unix_micros();
        let previous = self.last_at.replace(at);
        if let Event::ForkOrigin(_) = &entry.event
            && let (Some(since), Some(previous)) = (self.running_since, previous)
        {
            // A fork of a running turn: the parent's interval ends at the last
            // record the fork copied and the fork's starts at its origin, so
            // the time between the two (however long) is not billed.
            self.closed.active_micros += u64::try_from(previous - since).unwrap_or(0);
            self.running_since = Some(at);
        } else if self.count(&entry.event) {
            // A request's, a summary's or the server tools' usage: counted.
        } else if let Event::SessionStatusRunning(_) = &entry.event {
            self.running_since.get_or_insert(at);
        } else if matches!(
            entry.event,
            Event::SessionStatusIdle(_) | Event::SessionStatusRescheduled(_) | Event::SessionStatusTerminated(_)
        ) && let Some(since) = self.running_since.take()
        {
            self.closed.active_micros += u64::try_from(at - since).unwrap_or(0);
        }
    }

    /// Counts what `event` used (its model request's tokens, a summarizing
    /// call's, the provider's server tool uses); whether it was such an
    /// event. For events about to be appended, which the totals must
    /// include before they are durable (a `session.usage` appended with
    /// them), as for folded ones.
    pub fn count(&mut self, event: &Event) -> bool {
        if let Event::SpanModelRequestEnd(end) = event {
            self.add(&end.model_usage);
        } else if let Event::Compaction(compaction) = event {
            // A summary the model wrote, or a summarizing call that failed
            // after the provider reported (and billed) usage; an elision
            // without any call adds nothing.
            if compaction.model.is_some() || compaction.usage != ModelUsage::default() {
                self.add(&compaction.usage);
            }
        } else if let Event::SpanOutcomeEvaluationEnd(end) = event {
            // The grader's calls (none when the outcome ended before one).
            if end.usage != ModelUsage::default() {
                self.add(&end.usage);
            }
        } else if let Event::ServerToolRequests(requests) = event {
            self.closed.web_search_requests += requests.web_search_requests;
            self.closed.web_fetch_requests += requests.web_fetch_requests;
        } else {
            return false;
        }
        true
    }

    fn add(&mut self, usage: &ModelUsage) {
        let totals = &mut self.closed;
        totals.n_model_requests += 1;
        totals.input_tokens += usage.input_tokens;
        totals.output_tokens += usage.output_tokens;
        totals.cache_read_input_tokens += usage.cache_read_input_tokens;
        totals.cache_creation_input_tokens += usage.cache_creation_input_tokens;
    }

    /// The totals so far (a turn still running counts up to the last entry).
    pub fn totals(&self) -> Totals {
        let mut totals = self.closed;
        if let (Some(since), Some(last)) = (self.running_since, self.last_at) {
            totals.active_micros += u64::try_from(last - since).unwrap_or(0);
        }
        totals
    }
}

pub fn totals<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Totals {
    let mut fold = UsageFold::default();
    for entry in entries {
        fold.apply(entry);
    }
    fold.totals()
}
