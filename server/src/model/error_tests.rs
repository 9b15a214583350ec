//! Tests of error classification: statuses, error envelopes, error events,
//! `retry-after` headers.

use std::time::Duration;

use pretty_assertions::assert_eq;
use serde_json::json;

use super::*;

fn envelope(kind: &str, message: &str) -> Vec<u8> {
    json!({"type": "error", "error": {"type": kind, "message": message}}).to_string().into_bytes()
}

#[test]
fn statuses_map_to_variants() {
    let wait = Some(Duration::from_secs(3));
    let cases = [
        (
            429,
            ModelError::RateLimited {
                retry_after: wait,
                message: "rate_limit_error: slow down".into(),
                retryable: true,
            },
        ),
        (
            529,
            ModelError::Overloaded {
                retry_after: wait,
                message: "rate_limit_error: slow down".into(),
                retryable: true,
            },
        ),
        (500, ModelError::Server { status: 500, message: "rate_limit_error: slow down".into(), retry_after: wait }),
        (503, ModelError::Server { status: 503, message: "rate_limit_error: slow down".into(), retry_after: wait }),
        (401, ModelError::Authentication { message: "rate_limit_error: slow down".into() }),
        (403, ModelError::Authentication { message: "rate_limit_error: slow down".into() }),
        (400, ModelError::InvalidRequest { status: 400, message: "rate_limit_error: slow down".into() }),
        (404, ModelError::InvalidRequest { status: 404, message: "rate_limit_error: slow down".into() }),
        (
            413,
            ModelError::InvalidRequest {
                status: 413,
                message: "request_too_large: rate_limit_error: slow down".into(),
            },
        ),
    ];
    for (status, expected) in cases {
        assert_eq!(ModelError::from_status(status, wait, &envelope("rate_limit_error", "slow down")), expected);
    }
}

#[test]
fn retryable_and_retry_after() {
    let wait = Some(Duration::from_millis(1500));
    let retryable = [
        ModelError::RateLimited { retry_after: wait, message: String::new(), retryable: true },
        ModelError::Overloaded { retry_after: wait, message: String::new(), retryable: true },
        ModelError::Server { status: 502, message: String::new(), retry_after: None },
        ModelError::Broken { reason: String::new() },
        ModelError::Connect { reason: String::new() },
    ];
    for error in &retryable {
        assert!(error.is_retryable(), "{error:?}");
    }
    assert_eq!(retryable.iter().map(ModelError::retry_after).collect::<Vec<_>>(), vec![wait, wait, None, None, None]);
    let final_errors = [
        ModelError::Authentication { message: String::new() },
        ModelError::InvalidRequest { status: 400, message: String::new() },
    ];
    for error in &final_errors {
        assert!(!error.is_retryable(), "{error:?}");
        assert_eq!(error.retry_after(), None);
    }
}

#[test]
fn bodies_that_are_not_envelopes() {
    let html = b"<html><body>502 Bad Gateway</body></html>";
    assert_eq!(
        ModelError::from_status(502, None, html),
        ModelError::Server {
            status: 502,
            message: "<html><body>502 Bad Gateway</body></html>".into(),
            retry_after: None
        }
    );
    assert_eq!(
        ModelError::from_status(500, None, b""),
        ModelError::Server { status: 500, message: "HTTP status 500".into(), retry_after: None }
    );
    assert_eq!(
        ModelError::from_status(400, None, br#"{"error": {"message": "bad"}}"#),
        ModelError::InvalidRequest { status: 400, message: "bad".into() }
    );
    let long = vec![b'x'; MAX_ERROR_MESSAGE_BYTES * 2];
    let ModelError::Server { message, .. } = ModelError::from_status(500, None, &long) else {
        panic!("500 is Server");
    };
    assert_eq!(message.len(), MAX_ERROR_MESSAGE_BYTES + "…".len());
}

#[test]
fn error_events_map_by_type() {
    let event = |kind: &str| json!({"type": "error", "error": {"type": kind, "message": "m"}});
    let message = |kind: &str| format!("{kind}: m");
    assert_eq!(
        ModelError::from_error_event(&event("overloaded_error")),
        ModelError::Overloaded { retry_after: None, message: message("overloaded_error"), retryable: true }
    );
    assert_eq!(
        ModelError::from_error_event(&event("rate_limit_error")),
        ModelError::RateLimited { retry_after: None, message: message("rate_limit_error"), retryable: true }
    );
    assert_eq!(
        ModelError::from_error_event(&event("api_error")),
        ModelError::Server { status: 500, message: message("api_error"), retry_after: None }
    );
    assert_eq!(
        ModelError::from_error_event(&event("invalid_request_error")),
        ModelError::InvalidRequest { status: 400, message: message("invalid_request_error") }
    );
    assert_eq!(
        ModelError::from_error_event(&json!({"type": "error"})),
        ModelError::Server { status: 500, message: "error event \"\"".into(), retry_after: None }
    );
}

#[test]
fn retry_after_headers() {
    assert_eq!(parse_retry_after(None, Some("7")), Some(Duration::from_secs(7)));
    assert_eq!(parse_retry_after(None, Some(" 1.5 ")), Some(Duration::from_millis(1500)));
    assert_eq!(parse_retry_after(Some("250"), Some("7")), Some(Duration::from_millis(250)));
    assert_eq!(parse_retry_after(Some("junk"), Some("2")), Some(Duration::from_secs(2)));
    assert_eq!(parse_retry_after(None, Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
    assert_eq!(parse_retry_after(None, Some("-1")), None);
    assert_eq!(parse_retry_after(None, Some("NaN")), None);
    assert_eq!(parse_retry_after(None, Some("1e300")), Some(MAX_RETRY_AFTER));
    assert_eq!(parse_retry_after(None, None), None);
}

#[test]
fn truncation_respects_char_boundaries() {
    assert_eq!(truncate("héllo", 2), "h…");
    assert_eq!(truncate("héllo", 3), "hé…");
    assert_eq!(truncate("héllo", 10), "héllo");
}

#[test]
fn request_timeouts_and_conflicts_are_retryable() {
    // Goal: 408 (request timeout) and 409 (conflict) are transient: the
    // official Anthropic SDKs retry them, like 429 and 5xx (their
    // `shouldRetry`: 408, 409, 429, >= 500). `from_status` files every
    // non-5xx status it does not name as `InvalidRequest`, which is final:
    // a turn that meets a proxy's or the API's 408 dies `retries_exhausted`
    // at once, recorded as if the request itself were wrong.
    // Method: classify both statuses; each must be retryable.
    for status in [408, 409] {
        let error = ModelError::from_status(status, None, &envelope("api_error", "try again"));
        assert!(error.is_retryable(), "{status} is final: {error:?}");
    }
}

#[test]
fn a_billing_error_event_is_not_retried() {
    // Goal: `billing_error` (HTTP 402: a problem with the organisation's
    // billing) does not go away by sending the same request again, and the
    // session is to report it as its own `session.error` type
    // (`billing_error`, behaviour digest §3.7). `from_error_event` files any
    // type it does not name as `Server { status: 500 }`, which is retryable:
    // the runner re-sends the request with backoff until its attempts run
    // out, each time recording `model_request_failed_error` with
    // `retry_status: retrying`, as if the API had failed.
    // Method: classify a `billing_error` event; it must be final.
    let event = json!({"type": "error", "error": {"type": "billing_error", "message": "credit balance too low"}});
    let error = ModelError::from_error_event(&event);
    assert!(!error.is_retryable(), "a billing error is retried: {error:?}");
}

#[test]
fn payment_required_is_a_final_billing_error() {
    let error = ModelError::from_status(402, None, &envelope("billing_error", "credit balance too low"));
    assert_eq!(error, ModelError::Billing { message: "billing_error: credit balance too low".into() });
    assert!(!error.is_retryable());
    assert_eq!(error.retry_after(), None);
}

#[test]
fn x_should_retry_overrides_the_status() {
    let body = envelope("api_error", "no");
    let status =
        |status: u16, header: Option<&str>| ModelError::from_status(status, None, &body).with_should_retry(header);
    for code in [400, 402, 404, 413] {
        assert!(status(code, Some("true")).is_retryable(), "{code}");
        assert!(!status(code, Some("false")).is_retryable(), "{code}");
        assert!(!status(code, None).is_retryable(), "{code}");
    }
    for code in [408, 409, 429, 500, 503, 529] {
        assert!(!status(code, Some("false")).is_retryable(), "{code}");
        assert!(status(code, Some("true")).is_retryable(), "{code}");
        assert!(status(code, Some("maybe")).is_retryable(), "{code}");
    }
    // Credentials are not fixed by a retry, whatever the header says.
    assert!(!status(401, Some("true")).is_retryable());
    // A final rate limit or overload is still reported as what it is (the
    // session.error's type), only not retried.
    assert!(matches!(status(429, Some("false")), ModelError::RateLimited { retryable: false, .. }));
    assert!(matches!(status(529, Some("false")), ModelError::Overloaded { retryable: false, .. }));
}

#[test]
fn a_retried_server_error_keeps_the_wait_its_response_asked_for() {
    // Defect (review-runner2): `retry-after` is dropped from every retried
    // status but 429 and 529. `ModelClient::stream` parses the header for
    // every error response and passes it to `from_status`, which keeps it
    // only in `RateLimited` and `Overloaded`: a 503 (or 500, 504, 408, 409)
    // that says `retry-after: 30` becomes `Server { status, message }` and
    // `retry_after()` answers `None`, so the runner
    // (`Task::model_failed`) retries after its own backoff (0.5 s, 1 s,
    // 2 s, 4 s) instead: all five attempts are spent within seconds of a
    // server (a gateway, a load balancer, the API) that asked for 30 s, and
    // the turn ends `retries_exhausted`. The official SDKs honour
    // `retry-after`/`retry-after-ms` on every response they retry (their
    // `_calculate_retry_timeout`), whatever its status.
    // Method: classify each retried status with a `retry-after` of 30 s;
    // the error must be retryable and report that wait.
    let wait = Some(Duration::from_secs(30));
    for status in [408, 409, 500, 502, 503, 504] {
        let error = ModelError::from_status(status, wait, &envelope("api_error", "busy, try later"));
        assert!(error.is_retryable(), "{status}: {error:?}");
        assert_eq!(error.retry_after(), wait, "{status}: the wait the response asked for is lost: {error:?}");
    }
}

#[test]
fn a_final_status_made_retryable_keeps_its_wait() {
    let wait = Some(Duration::from_secs(7));
    let error = ModelError::from_status(400, wait, &envelope("invalid_request_error", "not now"))
        .with_should_retry(Some("true"))
        .with_retry_after(wait);
    assert!(error.is_retryable(), "{error:?}");
    assert_eq!(error.retry_after(), wait);
}
