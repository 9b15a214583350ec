//! What can go wrong talking to the Messages API, classified for the runner.
//!
//! [`ModelError`] is a closed enum: the runner branches on it to decide between
//! retrying (with `retry_after` honoured), failing the turn, or reporting a
//! configuration problem. It never carries the API key. Building one from an
//! HTTP status and an error body lives here too, so the streaming client and
//! the mid-stream `error` event share one mapping.

use std::time::Duration;

use serde_json::Value;

/// Longest `retry-after` honoured; a larger value is clamped to it, so a
/// misbehaving endpoint cannot park a session for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);
/// Longest error message kept from a response body, in bytes.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 2_048;

/// A failed model request.
///
/// `is_retryable` says whether sending the same request again may succeed;
/// whether it is *safe* to (nothing of a broken stream was acted on) is the
/// runner's decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// 429: the organisation's rate limit was hit. `retryable` is false only
    /// when the endpoint said `x-should-retry: false`.
    #[error("rate limited by the model API: {message}")]
    RateLimited { retry_after: Option<Duration>, message: String, retryable: bool },
    /// 529, or an `overloaded_error` event in the stream (`retryable` as for
    /// [`ModelError::RateLimited`]).
    #[error("the model API is overloaded: {message}")]
    Overloaded { retry_after: Option<Duration>, message: String, retryable: bool },
    /// The server failed or could not finish: a 5xx other than 529, 408
    /// (request timeout), 409 (conflict), or an `api_error`, `timeout_error`
    /// or `conflict_error` event in the stream. The official SDKs retry all
    /// of these.
    #[error("the model API failed with status {status}: {message}")]
    Server {
        status: u16,
        message: String,
        /// How long the response asked us to wait (`retry-after`), if it said.
        retry_after: Option<Duration>,
    },
    /// The stream broke: connection reset, ended before `message_stop`, bytes
    /// that are not the Messages API protocol, a limit exceeded, or no bytes
    /// for longer than the idle timeout.
    #[error("the model stream broke: {reason}")]
    Broken { reason: String },
    /// 401/403, or no API key configured (checked before sending).
    #[error("the model API refused the credentials: {message}")]
    Authentication { message: String },
    /// 402, or a `billing_error` event: the organisation's billing stops
    /// the request (no credit, say). Sending it again does not help; the
    /// session reports it as its own `session.error` type, `billing_error`.
    #[error("the model API refused the request for billing reasons: {message}")]
    Billing { message: String },
    /// Any other 4xx: the request itself is wrong (400, 404, 413, ...).
    /// `status` is 0 when the client refused to send it (unrepresentable headers).
    #[error("the model API rejected the request with status {status}: {message}")]
    InvalidRequest { status: u16, message: String },
    /// The endpoint could not be reached (DNS, refused, TLS, connect timeout).
    #[error("cannot connect to the model API: {reason}")]
    Connect { reason: String },
}

impl ModelError {
    /// Whether the same request may succeed when sent again.
    pub fn is_retryable(&self) -> bool {
        match self {
            ModelError::RateLimited { retryable, .. } | ModelError::Overloaded { retryable, .. } => *retryable,
            ModelError::Server { .. } | ModelError::Broken { .. } | ModelError::Connect { .. } => true,
            ModelError::Authentication { .. } | ModelError::Billing { .. } | ModelError::InvalidRequest { .. } => false,
        }
    }

    /// How long the API asked us to wait before retrying, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ModelError::RateLimited { retry_after, .. }
            | ModelError::Overloaded { retry_after, .. }
            | ModelError::Server { retry_after, .. } => *retry_after,
            ModelError::Broken { .. }
            | ModelError::Authentication { .. }
            | ModelError::Billing { .. }
            | ModelError::InvalidRequest { .. }
            | ModelError::Connect { .. } => None,
        }
    }

    /// Classifies a non-success HTTP response from its status, its
    /// `retry-after` value and its body (the error envelope, or anything).
    pub(crate) fn from_status(status: u16, retry_after: Option<Duration>, body: &[u8]) -> ModelError {
        let message = error_message(body).unwrap_or_else(|| format!("HTTP status {status}"));
        match status {
            429 => ModelError::RateLimited { retry_after, message, retryable: true },
            529 => ModelError::Overloaded { retry_after, message, retryable: true },
            401 | 403 => ModelError::Authentication { message },
            402 => ModelError::Billing { message },
            // Transient, as the official SDKs treat them (they retry 408,
            // 409, 429 and every 5xx).
            // Their `retry-after` is honoured too, as the SDKs do.
            408 | 409 | 500..=599 => ModelError::Server { status, message, retry_after },
            // Too large in bytes, whoever answered (the API's envelope, or a
            // proxy's page): named so, the runner compacts and retries it
            // (`logbook_replay::machine::OVER_THE_WINDOW`).
            413 if !message.contains("request_too_large") => {
                ModelError::InvalidRequest { status, message: format!("request_too_large: {message}") }
            }
            // Redirects are followed by the HTTP client; what is left, and every
            // other non-success status, is a request this endpoint will not serve.
            _ => ModelError::InvalidRequest { status, message },
        }
    }

    /// Keeps the response's `retry-after` in a retried error that does not
    /// hold one yet (one `x-should-retry: true` made retryable).
    pub(crate) fn with_retry_after(self, wait: Option<Duration>) -> ModelError {
        match self {
            ModelError::Server { status, message, retry_after: None } => {
                ModelError::Server { status, message, retry_after: wait }
            }
            other @ (ModelError::Server { .. }
            | ModelError::RateLimited { .. }
            | ModelError::Overloaded { .. }
            | ModelError::Broken { .. }
            | ModelError::Authentication { .. }
            | ModelError::Billing { .. }
            | ModelError::InvalidRequest { .. }
            | ModelError::Connect { .. }) => other,
        }
    }

    /// Applies the endpoint's `x-should-retry` header, which overrides the
    /// classification by status as in the official SDKs: `true` makes a
    /// final error retryable, `false` a retryable one final. Credentials
    /// stay final whatever it says: a retry cannot fix them.
    pub(crate) fn with_should_retry(self, should_retry: Option<&str>) -> ModelError {
        match (should_retry.map(str::trim), self) {
            (Some("true"), ModelError::Billing { message }) => {
                ModelError::Server { status: 402, message, retry_after: None }
            }
            (Some("true"), ModelError::InvalidRequest { status, message }) if status != 0 => {
                ModelError::Server { status, message, retry_after: None }
            }
            (Some("false"), ModelError::Server { status, message, .. }) => {
                ModelError::InvalidRequest { status, message }
            }
            // Still reported as what they are, only not retried.
            (Some("false"), ModelError::RateLimited { retry_after, message, .. }) => {
                ModelError::RateLimited { retry_after, message, retryable: false }
            }
            (Some("false"), ModelError::Overloaded { retry_after, message, .. }) => {
                ModelError::Overloaded { retry_after, message, retryable: false }
            }
            (
                _,
                error @ (ModelError::RateLimited { .. }
                | ModelError::Overloaded { .. }
                | ModelError::Server { .. }
                | ModelError::Broken { .. }
                | ModelError::Authentication { .. }
                | ModelError::Billing { .. }
                | ModelError::InvalidRequest { .. }
                | ModelError::Connect { .. }),
            ) => error,
        }
    }

    /// Classifies an `error` event received in the middle of a stream, from
    /// its `error.type` (the status is implied by the type, as documented for
    /// the HTTP errors).
    pub(crate) fn from_error_event(data: &Value) -> ModelError {
        let error = data.get("error");
        let kind = error.and_then(|e| e.get("type")).and_then(Value::as_str).unwrap_or("");
        let message = error
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .map(|m| truncate(&format!("{kind}: {m}"), MAX_ERROR_MESSAGE_BYTES))
            .unwrap_or_else(|| format!("error event {kind:?}"));
        match kind {
            "overloaded_error" => ModelError::Overloaded { retry_after: None, message, retryable: true },
            "rate_limit_error" => ModelError::RateLimited { retry_after: None, message, retryable: true },
            "authentication_error" | "permission_error" => ModelError::Authentication { message },
            "billing_error" => ModelError::Billing { message },
            "invalid_request_error" => ModelError::InvalidRequest { status: 400, message },
            "not_found_error" => ModelError::InvalidRequest { status: 404, message },
            "request_too_large" => ModelError::InvalidRequest { status: 413, message },
            "timeout_error" => ModelError::Server { status: 504, message, retry_after: None },
            "conflict_error" => ModelError::Server { status: 409, message, retry_after: None },
            "api_error" => ModelError::Server { status: 500, message, retry_after: None },
            // A type this client does not know: taken for a failure of the
            // server while generating, worth a retry (bounded by the runner's
            // attempts), rather than ending the turn on a transient error.
            _ => ModelError::Server { status: 500, message, retry_after: None },
        }
    }

    pub(crate) fn broken(reason: impl Into<String>) -> ModelError {
        ModelError::Broken { reason: reason.into() }
    }
}

/// Reads `retry-after-ms` (milliseconds) or `retry-after` (seconds; an HTTP
/// date is not honoured) the way the official SDKs do, clamped to
/// [`MAX_RETRY_AFTER`]. Unparsable or negative values are ignored.
pub(crate) fn parse_retry_after(retry_after_ms: Option<&str>, retry_after: Option<&str>) -> Option<Duration> {
    let from_ms = retry_after_ms.and_then(parse_non_negative).map(|ms| ms / 1_000.0);
    let seconds = from_ms.or_else(|| retry_after.and_then(parse_non_negative))?;
    let clamped = seconds.min(MAX_RETRY_AFTER.as_secs_f64());
    Some(Duration::from_secs_f64(clamped))
}

fn parse_non_negative(value: &str) -> Option<f64> {
    let parsed: f64 = value.trim().parse().ok()?;
    (parsed.is_finite() && parsed >= 0.0).then_some(parsed)
}

/// The message of an error envelope `{"type":"error","error":{"type","message"}}`,
/// or the start of the body when it is not one.
fn error_message(body: &[u8]) -> Option<String> {
    if let Ok(value) = serde_json::from_slice::<Value>(body)
        && let Some(error) = value.get("error")
    {
        let kind = error.get("type").and_then(Value::as_str);
        let message = error.get("message").and_then(Value::as_str);
        return match (kind, message) {
            (Some(kind), Some(message)) => Some(truncate(&format!("{kind}: {message}"), MAX_ERROR_MESSAGE_BYTES)),
            (None, Some(message)) => Some(truncate(message, MAX_ERROR_MESSAGE_BYTES)),
            (Some(kind), None) => Some(kind.to_owned()),
            (None, None) => None,
        };
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    (!text.is_empty()).then(|| truncate(text, MAX_ERROR_MESSAGE_BYTES))
}

/// At most `max` bytes of `text`, cut at a character boundary.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
#[path = "error_tests.rs"]
mod tests;
