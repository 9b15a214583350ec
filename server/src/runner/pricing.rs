//! List prices, for a session's `list_cost` and budgets.
//!
//! Dollars per million tokens by model family (input, output; cache writes at
//! 1.25x input, cache reads at 0.1x input), plus $10 per 1,000 web searches the
//! provider ran (its `usage.server_tool_use`; web fetches are free, and
//! searches Logbook runs through its own provider are not billed here), plus
//! $0.08 per hour a session runs.
//! A model this table does not know has no price: its sessions report no
//! `list_cost` and cannot be budgeted. Amounts are in cents (the API's minor
//! units, as decimal strings on the wire).

use logbook_replay::Totals;

/// Dollars per running hour.
pub const RUNTIME_DOLLARS_PER_HOUR: f64 = 0.08;
/// Dollars per web search the provider ran ($10 per 1,000).
pub const WEB_SEARCH_DOLLARS: f64 = 10.0 / 1_000.0;

/// (model id prefix, input $/MTok, output $/MTok), most specific first.
const PRICES: &[(&str, f64, f64)] = &[
    ("claude-opus-4-5", 5.0, 25.0),
    ("claude-opus-4-6", 5.0, 25.0),
    ("claude-opus-4-7", 5.0, 25.0),
    ("claude-opus-4-8", 5.0, 25.0),
    ("claude-opus", 15.0, 75.0),
    ("claude-sonnet", 3.0, 15.0),
    ("claude-haiku", 1.0, 5.0),
    ("claude-fable", 3.0, 15.0),
];

/// The list cost of `totals` on `model`, in cents (rounded up), if priced:
/// what `list_cost` reports.
pub fn list_cost_cents(model: &str, totals: &Totals) -> Option<u64> {
    list_cost_exact_cents(model, totals).map(|cents| cents.ceil() as u64)
}

/// The list cost of `totals` on `model`, in cents, unrounded, if priced:
/// what a budget is checked against (behaviour digest §12).
pub fn list_cost_exact_cents(model: &str, totals: &Totals) -> Option<f64> {
    let (_, input, output) = PRICES.iter().find(|(prefix, _, _)| model.starts_with(prefix))?;
    let per_token = |dollars_per_mtok: f64| dollars_per_mtok / 1_000_000.0;
    let dollars = totals.input_tokens as f64 * per_token(*input)
        + totals.output_tokens as f64 * per_token(*output)
        + totals.cache_creation_input_tokens as f64 * per_token(*input) * 1.25
        + totals.cache_read_input_tokens as f64 * per_token(*input) * 0.1
        + totals.web_search_requests as f64 * WEB_SEARCH_DOLLARS
        + totals.active_micros as f64 / 3.6e9 * RUNTIME_DOLLARS_PER_HOUR;
    Some(dollars * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_tokens_and_runtime() {
        let totals = Totals {
            input_tokens: 1_000_000,
            output_tokens: 100_000,
            active_micros: 3_600_000_000,
            ..Totals::default()
        };
        // $3 + $1.50 + $0.08 = $4.58
        assert_eq!(list_cost_cents("claude-sonnet-4-6", &totals), Some(458));
        assert_eq!(list_cost_cents("some-local-model", &totals), None);
    }

    #[test]
    fn web_searches_cost_ten_dollars_a_thousand() {
        let totals = Totals { web_search_requests: 150, web_fetch_requests: 40, ..Totals::default() };
        // 150 searches = $1.50; fetches are free.
        assert_eq!(list_cost_cents("claude-sonnet-4-6", &totals), Some(150));
    }

    #[test]
    fn the_exact_cost_is_not_rounded_and_the_reported_one_is_rounded_up() {
        // 330,000 input tokens on Sonnet: $0.99, plus 0.01 s of runtime.
        let totals = Totals { input_tokens: 330_000, active_micros: 10_000, ..Totals::default() };
        let exact = list_cost_exact_cents("claude-sonnet-4-6", &totals).unwrap_or_default();
        assert!(exact > 99.0 && exact < 99.001, "{exact}");
        assert_eq!(list_cost_cents("claude-sonnet-4-6", &totals), Some(100));
    }
}
