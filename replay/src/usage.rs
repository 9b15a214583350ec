//! Usage of a session: tokens summed over its model requests, and the time it
//! spent running, as a pure projection of its log.
//!
//! Running time counts from each `session.status_running` to the next
//! `session.status_idle`, `session.status_rescheduled` or
//! `session.status_terminated` (a turn still running counts up to its last
//! entry), so idle time never bills.

use logbook_core::Entry;
use logbook_core::event::Event;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub cache_creation_input_tokens: u64,
    /// Microseconds spent running.
    pub active_micros: u64,
    /// Model requests made (successful or not).
    pub n_model_requests: u64,
}

pub fn totals<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Totals {
    let mut totals = Totals::default();
    let mut running_since: Option<i64> = None;
    let mut last_at = None;
    for entry in entries {
        let at = entry.at.unix_micros();
        last_at = Some(at);
        if let Event::SpanModelRequestEnd(end) = &entry.event {
            totals.n_model_requests += 1;
            totals.input_tokens += end.model_usage.input_tokens;
            totals.output_tokens += end.model_usage.output_tokens;
            totals.cache_read_input_tokens += end.model_usage.cache_read_input_tokens;
            totals.cache_creation_input_tokens += end.model_usage.cache_creation_input_tokens;
        } else if let Event::SessionStatusRunning(_) = &entry.event {
            running_since.get_or_insert(at);
        } else if matches!(
            entry.event,
            Event::SessionStatusIdle(_) | Event::SessionStatusRescheduled(_) | Event::SessionStatusTerminated(_)
        ) && let Some(since) = running_since.take()
        {
            totals.active_micros += u64::try_from(at - since).unwrap_or(0);
        }
    }
    if let (Some(since), Some(last)) = (running_since, last_at) {
        totals.active_micros += u64::try_from(last - since).unwrap_or(0);
    }
    totals
}
