//! Token estimates: how many tokens a piece of context costs the model, without
//! a tokenizer.
//!
//! Anthropic publishes no tokenizer for current models, so Logbook estimates
//! (`crates.md` row 12): text at [`BYTES_PER_TOKEN`] bytes a token, rounded
//! up; an image at a flat [`IMAGE_TOKENS`]; a base64 document at one token per
//! [`DOCUMENT_BYTES_PER_TOKEN`] bytes of its base64 text; each content block
//! and message a small fixed overhead for its framing. The estimate is
//! deliberately on the high side for English and code.
//!
//! [`Calibration`] corrects it per session: the model reports the real input
//! tokens of every request (`x.model_request` usage), and the ratio between
//! that and the estimate of the same request scales later estimates, clamped
//! to [`MIN_FACTOR`]..=[`MAX_FACTOR`] so that one odd request cannot swing it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Bytes of UTF-8 text per token (English prose runs near 4, code near 3).
pub const BYTES_PER_TOKEN: u64 = 3;
/// An image block, whatever its size (the API resizes large images to about
/// 1,600 tokens).
pub const IMAGE_TOKENS: u64 = 1_600;
/// Bytes of a base64 document (a PDF) per token.
pub const DOCUMENT_BYTES_PER_TOKEN: u64 = 20;
/// Framing of one content block (type tags, ids, JSON punctuation).
pub const BLOCK_OVERHEAD_TOKENS: u64 = 8;
/// Framing of one message (role, separators).
pub const MESSAGE_OVERHEAD_TOKENS: u64 = 4;
/// Bounds of the calibration factor, in thousandths.
pub const MIN_FACTOR: u64 = 500;
pub const MAX_FACTOR: u64 = 2_000;

/// Tokens of a text.
pub fn text(text: &str) -> u64 {
    (text.len() as u64).div_ceil(BYTES_PER_TOKEN)
}

/// Tokens of one content block in Messages API form.
pub fn block(block: &Value) -> u64 {
    let kind = block.get("type").and_then(Value::as_str).unwrap_or("");
    let body = match kind {
        "image" => IMAGE_TOKENS,
        "document" => match block.pointer("/source/type").and_then(Value::as_str) {
            Some("base64") => {
                let data = block.pointer("/source/data").and_then(Value::as_str).unwrap_or("");
                (data.len() as u64).div_ceil(DOCUMENT_BYTES_PER_TOKEN)
            }
            Some(_) | None => value(block.get("source").unwrap_or(&Value::Null)),
        },
        // A cited answer's citations (url, title, cited text, index) are
        // counted too: the API may bill less for them, but a fitted context
        // carries them whole, and an overestimate only compacts sooner.
        "text" => {
            text(block.get("text").and_then(Value::as_str).unwrap_or(""))
                + block.get("citations").filter(|c| !c.is_null()).map_or(0, value)
        }
        "thinking" => text(block.get("thinking").and_then(Value::as_str).unwrap_or("")),
        "tool_result" => match block.get("content") {
            Some(Value::Array(content)) => content.iter().map(self::block).sum(),
            Some(other) => value(other),
            None => 0,
        },
        _ => value(block),
    };
    body + BLOCK_OVERHEAD_TOKENS
}

/// Tokens of a message `{role, content}`.
pub fn message(message: &Value) -> u64 {
    let content = match message.get("content") {
        Some(Value::Array(blocks)) => blocks.iter().map(block).sum(),
        Some(Value::String(s)) => text(s),
        Some(other) => value(other),
        None => 0,
    };
    content + MESSAGE_OVERHEAD_TOKENS
}

/// Tokens of arbitrary JSON, by its serialized length.
pub fn value(value: &Value) -> u64 {
    match value {
        Value::String(s) => text(s),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::Array(_) | Value::Object(_) => {
            text(&value.to_string())
        }
    }
}

/// The prompt tokens of a whole Messages API request body (system, tools,
/// messages).
pub fn request(body: &Value) -> u64 {
    let system = match body.get("system") {
        Some(Value::Array(blocks)) => blocks.iter().map(block).sum(),
        Some(Value::String(s)) => text(s),
        Some(_) | None => 0,
    };
    let tools = body.get("tools").map_or(0, value);
    let messages: u64 = body.get("messages").and_then(Value::as_array).map_or(0, |m| m.iter().map(message).sum());
    system + tools + messages
}

/// A per-session correction of the estimate from what the model reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Calibration {
    /// Reported tokens per estimated token, in thousandths.
    pub factor_milli: u64,
    /// Requests the factor was learnt from.
    pub n_samples: u64,
}

impl Default for Calibration {
    fn default() -> Calibration {
        Calibration { factor_milli: 1_000, n_samples: 0 }
    }
}

impl Calibration {
    /// Learns from one request: `estimated` by this module, `reported` by the
    /// model (input, cache read and cache creation tokens together). The
    /// factor is the running mean of the per-request ratios, clamped.
    pub fn learn(&mut self, estimated: u64, reported: u64) {
        if estimated == 0 || reported == 0 {
            return;
        }
        let ratio = (reported.saturating_mul(1_000) / estimated).clamp(MIN_FACTOR, MAX_FACTOR);
        let n = self.n_samples.saturating_add(1);
        let total = self.factor_milli.saturating_mul(self.n_samples).saturating_add(ratio);
        self.factor_milli = (total / n).clamp(MIN_FACTOR, MAX_FACTOR);
        self.n_samples = n;
    }

    /// An estimate corrected by the factor.
    pub fn apply(&self, estimated: u64) -> u64 {
        estimated.saturating_mul(self.factor_milli).div_ceil(1_000)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn text_rounds_up_and_blocks_carry_overhead() {
        assert_eq!(text(""), 0);
        assert_eq!(text("abcd"), 2);
        assert_eq!(block(&json!({"type": "text", "text": "abc"})), 1 + BLOCK_OVERHEAD_TOKENS);
        let image = json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "x".repeat(1 << 20)}});
        assert_eq!(block(&image), IMAGE_TOKENS + BLOCK_OVERHEAD_TOKENS);
    }

    #[test]
    fn tool_results_count_their_content() {
        let result =
            json!({"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "x".repeat(300)}]});
        assert_eq!(block(&result), 100 + 2 * BLOCK_OVERHEAD_TOKENS);
    }

    #[test]
    fn calibration_follows_reports_within_bounds() {
        let mut calibration = Calibration::default();
        calibration.learn(1_000, 1_500);
        assert_eq!(calibration.factor_milli, 1_500);
        calibration.learn(1_000, 500);
        assert_eq!(calibration.factor_milli, 1_000);
        calibration.learn(1, 1_000_000);
        assert!(calibration.factor_milli <= MAX_FACTOR);
        assert_eq!(calibration.apply(100), (100 * calibration.factor_milli).div_ceil(1_000));
    }
}
