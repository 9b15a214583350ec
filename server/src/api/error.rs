//! The API's error type and its wire envelope.
//!
//! Every failure a handler can return is an [`ApiError`]: an HTTP status, the
//! API's error `type`, a message, optional `details` (with a stable
//! `error_code`), and whether a 409 is worth retrying. It renders as
//! `{"type":"error","error":{"type","message","details?"},"request_id"}`; the
//! request-id middleware fills `request_id` and the `request-id` header. Client
//! mistakes are 4xx with a message saying what to fix; internal failures are a
//! generic 500 whose detail goes to the log, never to the client.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use logbook_store::{AppendError, Error as StoreError};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: ErrorKind,
    pub message: String,
    pub details: Option<Map<String, Value>>,
    /// Sent as `x-should-retry`. `None` leaves the SDK's default (retry 409, 429, 5xx).
    pub should_retry: Option<bool>,
    /// Sent as `retry-after` (seconds) and `retry-after-ms`.
    pub retry_after_ms: Option<u64>,
}

/// The API's `error.type` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    Authentication,
    Permission,
    NotFound,
    Conflict,
    RequestTooLarge,
    RateLimit,
    Api,
    Timeout,
    Overloaded,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::Permission => "permission_error",
            ErrorKind::NotFound => "not_found_error",
            ErrorKind::Conflict => "conflict_error",
            ErrorKind::RequestTooLarge => "request_too_large",
            ErrorKind::RateLimit => "rate_limit_error",
            ErrorKind::Api => "api_error",
            ErrorKind::Timeout => "timeout_error",
            ErrorKind::Overloaded => "overloaded_error",
        }
    }
}

/// The API's "overloaded" status. `http` names no constant for 529; every
/// value in 100..=999 is valid, so the fallback is never taken.
fn overloaded_status() -> StatusCode {
    StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
}

/// The `retry-after` of a transfer refused by [`ApiError::busy_transfers`].
const TRANSFER_RETRY_MS: u64 = 1_000;

impl ApiError {
    fn new(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError { status, kind, message: message.into(), details: None, should_retry: None, retry_after_ms: None }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorKind::InvalidRequest, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, ErrorKind::Authentication, message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, ErrorKind::Permission, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, ErrorKind::NotFound, message)
    }

    /// A conflict that retrying the same request will not resolve.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        let mut err = ApiError::new(StatusCode::CONFLICT, ErrorKind::Conflict, message);
        err.should_retry = Some(false);
        err
    }

    /// A conflict with a concurrent write that the same request, sent again,
    /// gets past (`x-should-retry: true`): lost compare-and-swap races.
    pub fn conflict_transient(message: impl Into<String>) -> ApiError {
        let mut err = ApiError::new(StatusCode::CONFLICT, ErrorKind::Conflict, message);
        err.should_retry = Some(true);
        err
    }

    /// A precondition the request names does not hold (412), such as a work
    /// item's heartbeat that does not match its lease.
    pub fn precondition_failed(message: impl Into<String>) -> ApiError {
        let mut err = ApiError::new(StatusCode::PRECONDITION_FAILED, ErrorKind::Conflict, message);
        err.should_retry = Some(false);
        err
    }

    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, ErrorKind::RequestTooLarge, message)
    }

    pub fn rate_limited(retry_after_ms: u64) -> ApiError {
        ApiError::limited(
            "rate limit exceeded for this workspace; retry after the time in the retry-after header",
            retry_after_ms,
        )
    }

    /// 429 when a workspace (or the server) has as many exports and uploads
    /// under way as it may (`crate::state::Held::Transfer`).
    pub fn busy_transfers() -> ApiError {
        ApiError::limited(
            "too many exports and uploads are under way for this workspace (or on this server); retry once one ends",
            TRANSFER_RETRY_MS,
        )
    }

    /// 429 when a workspace has as many downloads under way as it may
    /// (`crate::state::Held::Download`).
    pub fn busy_downloads() -> ApiError {
        ApiError::limited("too many downloads are under way for this workspace; retry once one ends", TRANSFER_RETRY_MS)
    }

    /// 429 `rate_limit_error` with `message` and a `retry-after`.
    pub fn limited(message: impl Into<String>, retry_after_ms: u64) -> ApiError {
        let mut err = ApiError::new(StatusCode::TOO_MANY_REQUESTS, ErrorKind::RateLimit, message);
        err.retry_after_ms = Some(retry_after_ms);
        err
    }

    /// The envelope for an error response something other than a handler
    /// made (an extractor's rejection, a panic): its status keeps its meaning.
    pub fn for_status(status: StatusCode, message: impl Into<String>) -> ApiError {
        let kind = match status.as_u16() {
            401 => ErrorKind::Authentication,
            403 => ErrorKind::Permission,
            404 | 405 => ErrorKind::NotFound,
            409 => ErrorKind::Conflict,
            413 => ErrorKind::RequestTooLarge,
            429 => ErrorKind::RateLimit,
            408 | 504 => ErrorKind::Timeout,
            529 => ErrorKind::Overloaded,
            code if code < 500 => ErrorKind::InvalidRequest,
            _ => ErrorKind::Api,
        };
        ApiError::new(status, kind, message)
    }

    /// 408: the client did not send its request in time (nothing ran).
    pub fn request_timeout(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::REQUEST_TIMEOUT, ErrorKind::Timeout, message)
    }

    pub fn timeout(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::GATEWAY_TIMEOUT, ErrorKind::Timeout, message)
    }

    /// 503: something this server lacks (a feature not configured, a store
    /// that can no longer write); retrying does not help until an operator acts.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorKind::Api, message)
    }

    /// 503 while the data directory's disk is below its reserve of free
    /// space (`crate::diskguard`): the server takes no new work until an
    /// operator frees space, so the SDKs are told not to retry at once.
    pub fn insufficient_storage(low: crate::diskguard::Low) -> ApiError {
        const MIB: u64 = 1 << 20;
        let mut err = ApiError::unavailable(format!(
            "the server is low on disk space ({} MiB free, {} MiB kept for work under way): it takes no new work \
             until space is freed; reads, interrupts, confirmations, tool results, archives and deletes still work",
            low.free / MIB,
            low.reserve / MIB
        ))
        .with_code("insufficient_storage");
        err.should_retry = Some(false);
        err
    }

    /// 529 `overloaded_error`, as the API answers when it is busy: a retry
    /// shortly after may succeed (the SDKs retry it by default).
    pub fn overloaded(message: impl Into<String>) -> ApiError {
        ApiError::new(overloaded_status(), ErrorKind::Overloaded, message)
    }

    /// An internal failure: logged in full, answered generically.
    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        tracing::error!(%detail, "internal error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorKind::Api, "internal server error")
    }

    /// Adds `details.error_code`.
    pub fn with_code(mut self, code: &str) -> ApiError {
        self.details.get_or_insert_with(Map::new).insert("error_code".to_owned(), Value::from(code));
        self
    }

    pub fn with_detail(mut self, key: &str, value: Value) -> ApiError {
        self.details.get_or_insert_with(Map::new).insert(key.to_owned(), value);
        self
    }

    pub fn body(&self, request_id: Option<&str>) -> Value {
        let mut error = json!({"type": self.kind.as_str(), "message": self.message});
        if let (Some(details), Some(obj)) = (&self.details, error.as_object_mut()) {
            obj.insert("details".to_owned(), Value::Object(details.clone()));
        }
        json!({"type": "error", "error": error, "request_id": request_id})
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.kind.as_str(), self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The request-id middleware replaces this body with one carrying the id.
        let mut response = (self.status, axum::Json(self.body(None))).into_response();
        let headers = response.headers_mut();
        if let Some(retry) = self.should_retry {
            headers.insert("x-should-retry", HeaderValue::from_static(if retry { "true" } else { "false" }));
        }
        if let Some(ms) = self.retry_after_ms {
            if let Ok(value) = HeaderValue::from_str(&ms.div_ceil(1000).max(1).to_string()) {
                headers.insert("retry-after", value);
            }
            if let Ok(value) = HeaderValue::from_str(&ms.to_string()) {
                headers.insert("retry-after-ms", value);
            }
        }
        response.extensions_mut().insert(self);
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> ApiError {
        match err {
            StoreError::Corrupted(corruption) => {
                tracing::error!(%corruption, "session quarantined");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorKind::Api,
                    format!(
                        "session {} is quarantined: its log failed an integrity check at seq {}; an operator must run `logbook verify`",
                        corruption.session, corruption.seq
                    ),
                )
                .with_code("session_corrupted")
            }
            StoreError::Poisoned { .. } => {
                tracing::error!(error = %err, "store poisoned");
                ApiError::unavailable("the server can no longer write durably and must be restarted")
            }
            StoreError::Invalid(message) => ApiError::invalid(message),
            other @ (StoreError::StoreCorrupted(_) | StoreError::Engine(_)) => ApiError::internal(other),
        }
    }
}

impl From<AppendError> for ApiError {
    fn from(err: AppendError) -> ApiError {
        match err {
            AppendError::Conflict { .. } => {
                let mut err =
                    ApiError::new(StatusCode::CONFLICT, ErrorKind::Conflict, "the session changed concurrently; retry");
                err.should_retry = Some(true);
                err
            }
            AppendError::BadCount { .. }
            | AppendError::EventTooLarge { .. }
            | AppendError::AppendTooLarge { .. }
            | AppendError::SessionFull { .. } => ApiError::invalid(err.to_string()),
            AppendError::Encode(encode) => ApiError::invalid(encode.to_string()),
            AppendError::Store(store) => store.into(),
        }
    }
}
