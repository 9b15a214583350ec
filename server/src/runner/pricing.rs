//! List prices, for a session's `list_cost` and budgets.
//!
//! Dollars per million tokens by model (input, output; cache writes at
//! 1.25x input, cache reads at 0.1x input), plus $10 per 1,000 web searches the
//! provider ran (its `usage.server_tool_use`; web fetches are free, and
//! searches Logbook runs through its own provider are not billed here), plus
//! $0.08 per hour a session runs; tokens of a session pinned to US inference
//! cost 1.1 times as much. (Fast mode's premium is not priced.)
//! A model this table does not know has no price: its sessions report no
//! `list_cost` and cannot be budgeted. Amounts are in cents (the API's minor
//! units, as decimal strings on the wire).

use logbook_replay::Totals;

use crate::api::tools::ModelConfig;

/// Dollars per running hour.
pub const RUNTIME_DOLLARS_PER_HOUR: f64 = 0.08;
/// Dollars per web search the provider ran ($10 per 1,000).
pub const WEB_SEARCH_DOLLARS: f64 = 10.0 / 1_000.0;

/// (model id, input $/MTok, output $/MTok). An id matches the model of that
/// exact id, or of that id followed by a release date
/// (`claude-opus-4-5-20251101`); it is never a prefix of a family, so a newer
/// model (`claude-opus-5-5`, `claude-sonnet-5`) is not priced as an older one.
/// Claude Opus 5 is the behaviour digest's §6.6 worked example ("1 h, Opus 5,
/// 50k in / 15k out = $0.705; with 40k cache reads $0.525"), which only
/// $5 / $25 satisfies; the rest are the published list prices of the 4-series.
/// A model whose list price no source gives stays out of this table.
const PRICES: &[(&str, f64, f64)] = &[
    ("claude-opus-5", 5.0, 25.0),
    ("claude-opus-4-8", 5.0, 25.0),
    ("claude-opus-4-7", 5.0, 25.0),
    ("claude-opus-4-6", 5.0, 25.0),
    ("claude-opus-4-5", 5.0, 25.0),
    ("claude-opus-4-1", 15.0, 75.0),
    ("claude-opus-4-0", 15.0, 75.0),
    ("claude-opus-4", 15.0, 75.0),
    ("claude-sonnet-4-6", 3.0, 15.0),
    ("claude-sonnet-4-5", 3.0, 15.0),
    ("claude-sonnet-4-0", 3.0, 15.0),
    ("claude-sonnet-4", 3.0, 15.0),
    ("claude-haiku-4-5", 1.0, 5.0),
];

/// The digits of the release date a model id may end with (`-20251101`).
const RELEASE_DATE_DIGITS: usize = 8;

/// Whether `model` is the model `id` names: the id itself, or the id with a
/// release date appended.
fn is_model(model: &str, id: &str) -> bool {
    match model.strip_prefix(id) {
        Some("") => true,
        Some(rest) => rest
            .strip_prefix('-')
            .is_some_and(|date| date.len() == RELEASE_DATE_DIGITS && date.bytes().all(|b| b.is_ascii_digit())),
        None => false,
    }
}

/// Token prices of a request whose inference is pinned to the US
/// (`inference_geo: "us"`) are this many times the list prices (behaviour
/// digest §16).
pub const US_INFERENCE_MULTIPLIER: f64 = 1.1;

/// The list cost of `totals` on `model`, in cents (rounded up), if priced:
/// what `list_cost` reports.
pub fn list_cost_cents(model: &str, totals: &Totals) -> Option<u64> {
    list_cost_exact_cents(model, totals).map(round_up)
}

/// [`list_cost_cents`] of a session's model configuration (its inference
/// pin priced in).
pub fn session_cost_cents(model: &ModelConfig, totals: &Totals) -> Option<u64> {
    session_cost_exact_cents(model, totals).map(round_up)
}

/// Cents rounded up, after the float error of the sum is rounded away (a
/// millionth of a cent), so a whole number of cents is not one more.
fn round_up(cents: f64) -> u64 {
    ((cents * 1e6).round() / 1e6).ceil() as u64
}

/// [`list_cost_exact_cents`] of a session's model configuration.
pub fn session_cost_exact_cents(model: &ModelConfig, totals: &Totals) -> Option<f64> {
    let multiplier = if model.inference_geo.as_deref() == Some("us") { US_INFERENCE_MULTIPLIER } else { 1.0 };
    cost_cents(&model.id, totals, multiplier)
}

/// The list cost of `totals` on `model`, in cents, unrounded, if priced:
/// what a budget is checked against (behaviour digest §12).
pub fn list_cost_exact_cents(model: &str, totals: &Totals) -> Option<f64> {
    cost_cents(model, totals, 1.0)
}

/// The cost in cents, tokens at `token_multiplier` times their list price.
fn cost_cents(model: &str, totals: &Totals, token_multiplier: f64) -> Option<f64> {
    let (_, input, output) = PRICES.iter().find(|(id, _, _)| is_model(model, id))?;
    let per_token = |dollars_per_mtok: f64| dollars_per_mtok / 1_000_000.0 * token_multiplier;
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
    fn tokens_pinned_to_us_inference_cost_a_tenth_more() {
        let totals = Totals { input_tokens: 1_000_000, web_search_requests: 100, ..Totals::default() };
        let model = |geo: Option<&str>| ModelConfig {
            id: "claude-sonnet-4-6".to_owned(),
            effort: crate::api::tools::Effort { level: "high".to_owned() },
            speed: "standard".to_owned(),
            inference_geo: geo.map(str::to_owned),
        };
        // $3 of tokens (× 1.1 when pinned) + $1 of searches (never).
        assert_eq!(session_cost_cents(&model(None), &totals), Some(400));
        assert_eq!(session_cost_cents(&model(Some("global")), &totals), Some(400));
        assert_eq!(session_cost_cents(&model(Some("us")), &totals), Some(430));
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

    #[test]
    fn opus_5_is_priced_as_the_worked_example() {
        // Behaviour digest §6.6: 1 h, 50k in / 15k out = $0.705.
        let totals =
            Totals { input_tokens: 50_000, output_tokens: 15_000, active_micros: 3_600_000_000, ..Totals::default() };
        let exact = list_cost_exact_cents("claude-opus-5", &totals).unwrap_or_default();
        assert!((exact - 70.5).abs() < 1e-9, "{exact}");
    }

    #[test]
    fn a_dated_id_is_priced_as_its_model() {
        let totals = Totals { input_tokens: 1_000_000, ..Totals::default() };
        assert_eq!(list_cost_cents("claude-opus-4-5-20251101", &totals), Some(500));
        assert_eq!(list_cost_cents("claude-sonnet-4-20250514", &totals), Some(300));
        assert_eq!(list_cost_cents("claude-opus-4-1-20250805", &totals), Some(1500));
        assert_eq!(list_cost_cents("claude-haiku-4-5-20251001", &totals), Some(100));
    }

    #[test]
    fn a_model_with_no_known_list_price_is_unpriced() {
        // Newer models the API names but no source prices must not fall into
        // an older model's row.
        let totals = Totals { input_tokens: 1_000_000, ..Totals::default() };
        for model in [
            "claude-opus-5-5",
            "claude-sonnet-5",
            "claude-sonnet-5-5",
            "claude-haiku-5-5",
            "claude-fable-5",
            "claude-opus-4-9",
            "claude-opus-5-latest",
            "claude-opus",
        ] {
            assert_eq!(list_cost_cents(model, &totals), None, "{model}");
        }
    }
}
