//! Tests of the HTTP client's local decisions (the exchange itself is tested
//! against the fake Messages API in `logbook-tests`).

use serde_json::json;

use super::*;

#[test]
fn loopback_base_urls() {
    for url in ["http://127.0.0.1:8080", "http://localhost", "http://[::1]:9/x", "http://127.1.2.3"] {
        assert!(is_loopback(url), "{url}");
    }
    for url in ["https://api.anthropic.com", "http://10.0.0.1", "not a url", "http://localhost.example.com"] {
        assert!(!is_loopback(url), "{url}");
    }
}

#[test]
fn the_stream_future_is_send() {
    // Goal: the runner spawns model calls on the multi-threaded runtime.
    fn assert_send<T: Send>(_: &T) {}
    let client = ModelClient::new(ModelConfig::default()).expect("a client");
    let request = json!({});
    let mut on_event = |_: StreamEvent| {};
    let future = client.stream(&request, &mut on_event);
    assert_send(&future);
}

#[tokio::test]
async fn a_missing_key_fails_before_sending() {
    // Nothing listens on port 9 of a documentation address; the key check must come first.
    let client = ModelClient::new(ModelConfig::new("http://192.0.2.1:9")).expect("a client");
    let result = client.stream(&json!({}), &mut |_| {}).await;
    assert_eq!(
        result,
        Err(ModelError::Authentication { message: "no API key configured: set ANTHROPIC_API_KEY".to_owned() })
    );
}
