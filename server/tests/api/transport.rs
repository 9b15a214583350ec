//! Transport conventions every endpoint shares (API digest §1, §5; behaviour
//! digest §1, §14): keys, the beta header, request ids, the error envelope,
//! empty bodies, body limits, retry headers, rate limits, and the operational
//! endpoints.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use logbook_core::AgentId;
use logbook_server::http::{MANAGED_AGENTS_BETA, operational_routes, routes};
use logbook_server::ratelimit::RateLimits;
use logbook_server::state::Config;
use logbook_store::{ResourceKind, Resources};
use pretty_assertions::assert_eq;
use serde_json::json;

use crate::harness::{Auth, Harness, check_envelope, id};

#[tokio::test]
async fn both_key_headers_authenticate() {
    // Goal: the SDK's `Authorization: Bearer` and the docs' `x-api-key` both
    // work and see the same workspace. Method: create with one, read with the other.
    let h = Harness::new();
    let body = json!({"name": "a", "model": "m"});
    let agent = h.call(Method::POST, "/v1/agents", Auth::Bearer(&h.key_a), Some(&body)).await.ok();
    let path = format!("/v1/agents/{}", id(&agent));
    let via_header = h.call(Method::GET, &path, Auth::XApiKey(&h.key_a), None).await.ok();
    let via_bearer = h.call(Method::GET, &path, Auth::Bearer(&h.key_a), None).await.ok();
    assert_eq!(via_header, agent);
    assert_eq!(via_bearer, agent);
    // The scheme is case-insensitive (RFC 9110 §11.1).
    for scheme in ["bearer", "BEARER"] {
        let request = Request::builder()
            .uri(&path)
            .header("anthropic-beta", MANAGED_AGENTS_BETA)
            .header("authorization", format!("{scheme} {}", h.key_a))
            .body(Body::empty())
            .unwrap();
        assert_eq!(h.raw(request).await.ok(), agent, "{scheme}");
    }
}

#[tokio::test]
async fn missing_key_is_401_authentication_error() {
    // Goal: no key → 401 authentication_error in the exact envelope. Method:
    // a GET and a POST without any key header.
    let h = Harness::new();
    for (method, body) in [(Method::GET, None), (Method::POST, Some(json!({"name": "x", "model": "m"})))] {
        let resp = h.call(method, "/v1/agents", Auth::Missing, body.as_ref()).await;
        resp.error(401, "authentication_error");
    }
}

#[tokio::test]
async fn malformed_unknown_and_revoked_keys_are_401() {
    // Goal: every kind of bad key is a 401 authentication_error, never a 404
    // or a 500. Method: present each through x-api-key and through Bearer.
    let h = Harness::new();
    let unknown = format!("sk-logbook-{}", "0".repeat(48));
    let long = format!("sk-logbook-{}", "a".repeat(500));
    let bad_keys = ["not-a-key", "sk-logbook-", unknown.as_str(), long.as_str(), h.revoked_a.as_str(), " "];
    for key in bad_keys {
        h.call(Method::GET, "/v1/agents", Auth::XApiKey(key), None).await.error(401, "authentication_error");
        h.call(Method::GET, "/v1/agents", Auth::Bearer(key), None).await.error(401, "authentication_error");
    }
    // An Authorization header that is not a Bearer token, and a key header
    // that is not visible ASCII.
    for (name, value) in
        [("authorization", "Basic dXNlcjpwYXNz".as_bytes()), ("x-api-key", b"sk-logbook-\xff\xfe".as_slice())]
    {
        let request = Request::builder()
            .uri("/v1/agents")
            .header("anthropic-beta", MANAGED_AGENTS_BETA)
            .header(name, axum::http::HeaderValue::from_bytes(value).unwrap())
            .body(Body::empty())
            .unwrap();
        h.raw(request).await.error(401, "authentication_error");
    }
}

#[tokio::test]
async fn beta_header_is_required_and_parsed_as_a_comma_list() {
    // Goal: a missing or wrong `anthropic-beta` is a 400 invalid_request_error;
    // a comma list containing ours (as the SDK sends with extra betas) works,
    // as do repeated header lines. Method: vary only that header.
    let h = Harness::new();
    let send = |beta: Vec<&'static str>| {
        let mut builder = Request::builder().uri("/v1/agents").header("x-api-key", h.key_a.as_str());
        for value in beta {
            builder = builder.header("anthropic-beta", value);
        }
        h.raw(builder.body(Body::empty()).unwrap())
    };
    send(vec![]).await.invalid();
    send(vec!["files-api-2025-04-14"]).await.invalid();
    send(vec!["managed-agents-2026-04-02"]).await.invalid();
    send(vec!["managed-agents-2026-04-01-extra"]).await.invalid();
    send(vec!["files-api-2025-04-14,managed-agents-2026-04-01"]).await.ok();
    send(vec!["files-api-2025-04-14, managed-agents-2026-04-01 "]).await.ok();
    send(vec!["files-api-2025-04-14", "managed-agents-2026-04-01"]).await.ok();
    // Any anthropic-version is accepted.
    let request = Request::builder()
        .uri("/v1/agents")
        .header("x-api-key", h.key_a.as_str())
        .header("anthropic-beta", MANAGED_AGENTS_BETA)
        .header("anthropic-version", "2026-10-21")
        .header("anthropic-workspace-id", "wrkspc_ignored")
        .body(Body::empty())
        .unwrap();
    h.raw(request).await.ok();
}

#[tokio::test]
async fn every_response_has_a_request_id() {
    // Goal: `request-id` on every response, success or error, unique per
    // request, and equal to the body's `request_id` on errors. Method: a mix of
    // successes, client errors from each layer, and operational endpoints.
    let h = Harness::new();
    let mut seen = BTreeSet::new();
    let responses = vec![
        h.get("/v1/agents").await,
        h.post("/v1/agents", &json!({"name": "x", "model": "m"})).await,
        h.get("/v1/agents/agent_missing").await,
        h.post("/v1/agents", &json!({"name": ""})).await,
        h.call(Method::GET, "/v1/agents", Auth::Missing, None).await,
        h.raw(Request::builder().uri("/v1/agents").body(Body::empty()).unwrap()).await,
        h.get("/v1/no-such-route").await,
        h.raw(Request::builder().uri("/healthz").body(Body::empty()).unwrap()).await,
        h.raw(Request::builder().uri("/metrics").body(Body::empty()).unwrap()).await,
        h.raw(Request::builder().uri("/openapi.json").body(Body::empty()).unwrap()).await,
    ];
    for resp in responses {
        let request_id = resp.header("request-id").unwrap_or_else(|| panic!("no request-id: {}", resp.status));
        assert!(request_id.starts_with("req_"), "{request_id}");
        assert!(seen.insert(request_id.to_owned()), "request ids repeat: {request_id}");
        if !resp.status.is_success() {
            check_envelope(&resp.json(), Some(request_id));
        }
    }
}

#[tokio::test]
async fn error_envelope_has_the_exact_shape() {
    // Goal: `{"type":"error","error":{"type","message","details?"},"request_id"}`
    // with nothing else, `details.error_code` where the API documents a code.
    // Method: compare a 404 with a code and a 400 without one as whole values,
    // after taking out the message and the id.
    let h = Harness::new();
    let resp = h.get("/v1/environments/env_0000000000000000000000000").await;
    let body = resp.error(404, "not_found_error");
    let request_id = resp.header("request-id").unwrap();
    assert_eq!(
        body,
        json!({
            "type": "error",
            "error": {
                "type": "not_found_error",
                "message": body["error"]["message"],
                "details": {"error_code": "environment_not_found"}
            },
            "request_id": request_id
        })
    );
    let resp = h.post("/v1/agents", &json!({"model": "m", "name": ""})).await;
    let body = resp.invalid();
    assert_eq!(
        body,
        json!({
            "type": "error",
            "error": {"type": "invalid_request_error", "message": body["error"]["message"]},
            "request_id": resp.header("request-id").unwrap()
        })
    );
    // Content type of an error is JSON.
    assert!(resp.header("content-type").unwrap().starts_with("application/json"));
}

#[tokio::test]
async fn malformed_json_bodies_are_400_naming_the_field() {
    // Goal: bodies that do not parse, or fields of the wrong type, are 400
    // invalid_request_error whose message names what to fix. Method: raw bytes
    // and typed mistakes on create calls.
    let h = Harness::new();
    let send_raw = |bytes: &'static str| {
        let request = Request::builder()
            .method(Method::POST)
            .uri("/v1/agents")
            .header("anthropic-beta", MANAGED_AGENTS_BETA)
            .header("x-api-key", h.key_a.as_str())
            .header("content-type", "application/json")
            .body(Body::from(bytes))
            .unwrap();
        h.raw(request)
    };
    send_raw("{not json").await.invalid();
    send_raw("[1, 2]").await.invalid();
    send_raw("null").await.invalid();
    let body = h.post("/v1/agents", &json!({"model": "m", "name": 5})).await.invalid();
    assert!(body["error"]["message"].as_str().unwrap().contains("name"), "{body}");
    let body = h.post("/v1/agents", &json!({"name": "x"})).await.invalid();
    assert!(body["error"]["message"].as_str().unwrap().contains("model"), "{body}");
    let body = h.post("/v1/environments", &json!({"name": "x", "metadata": []})).await.invalid();
    assert!(body["error"]["message"].as_str().unwrap().contains("metadata"), "{body}");
}

#[tokio::test]
async fn trailing_data_after_the_json_body_is_400() {
    // Goal: a body is one JSON value; a valid object followed by more bytes
    // does not parse and is a 400 invalid_request_error (wire.rs contract:
    // everything that does not parse is a 400), not silently truncated.
    // Method: two bodies with trailing data; neither may create an agent.
    let h = Harness::new();
    let mut wrong = Vec::new();
    for body in [r#"{"name": "a", "model": "m"} trailing"#, r#"{"name": "a", "model": "m"}{"name": "b"}"#] {
        let request = Request::builder()
            .method(Method::POST)
            .uri("/v1/agents")
            .header("anthropic-beta", MANAGED_AGENTS_BETA)
            .header("x-api-key", h.key_a.as_str())
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        let resp = h.raw(request).await;
        if resp.status == StatusCode::BAD_REQUEST {
            resp.invalid();
        } else {
            wrong.push(format!("{body:?} answered {}", resp.status));
        }
    }
    assert!(wrong.is_empty(), "FIXME: bodies with trailing data are accepted:\n{}", wrong.join("\n"));
}

#[tokio::test]
async fn empty_body_with_json_content_type_is_an_empty_object() {
    // Goal: the SDK sends `content-type: application/json` with an empty body
    // on archive and delete (and may on updates); each must work. Method: call
    // every bodiless POST/DELETE that way.
    let h = Harness::new();
    let agent = h.agent("a").await;
    let env = h.env("e").await;
    let session = h.session(&agent, &env).await;
    let archived = h.post_empty(&format!("/v1/agents/{}/archive", id(&agent))).await.ok();
    assert!(archived["archived_at"].is_string());
    let updated = h.post_empty(&format!("/v1/environments/{}", id(&env))).await.ok();
    assert_eq!(updated, env, "an empty update changes nothing");
    let updated = h.post_empty(&format!("/v1/sessions/{}", id(&session))).await.ok();
    assert_eq!(updated["id"], session["id"]);
    h.post_empty(&format!("/v1/sessions/{}/archive", id(&session))).await.ok();
    let deleted = h.delete(&format!("/v1/sessions/{}", id(&session))).await.ok();
    assert_eq!(deleted, json!({"id": session["id"], "type": "session_deleted"}));
    h.post_empty(&format!("/v1/environments/{}/archive", id(&env))).await.ok();
    let deleted = h.delete(&format!("/v1/environments/{}", id(&env))).await.ok();
    assert_eq!(deleted, json!({"id": env["id"], "type": "environment_deleted"}));
    // Whitespace only is empty too.
    let agent = h.agent("b").await;
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("/v1/agents/{}/archive", id(&agent)))
        .header("anthropic-beta", MANAGED_AGENTS_BETA)
        .header("x-api-key", h.key_a.as_str())
        .header("content-type", "application/json")
        .body(Body::from(" \n"))
        .unwrap();
    h.raw(request).await.ok();
}

#[tokio::test]
async fn unknown_route_is_a_404_envelope() {
    // Goal: a path the API does not have answers 404 not_found_error in the
    // envelope, with or without a key, never an empty body. Method: unknown
    // paths under and outside /v1.
    let h = Harness::new();
    for path in ["/v1/nope", "/v1/agents/x/y/z", "/", "/v2/agents"] {
        h.get(path).await.not_found();
        h.raw(Request::builder().uri(path).body(Body::empty()).unwrap()).await.not_found();
    }
}

#[tokio::test]
async fn an_extractor_rejection_is_an_error_envelope() {
    // Goal: requests that fail before a handler runs (a path segment that is
    // not UTF-8) still answer in the API's envelope with a request id, not in
    // axum's plain text. Method: percent-encoded invalid UTF-8 in ids.
    let h = Harness::new();
    for path in ["/v1/sessions/%FF", "/v1/agents/%C3%28", "/v1/sessions/%FF/events"] {
        h.get(path).await.invalid();
    }
}

#[tokio::test]
async fn wrong_method_on_a_known_path_is_an_error_envelope() {
    // Goal: updates are POST only (API digest §1); PATCH, PUT or DELETE on a
    // path that exists is an error in the envelope with a request id (404 or
    // 405), not a bare status. Method: call each with a valid key.
    let h = Harness::new();
    let agent = h.agent("a").await;
    let path = format!("/v1/agents/{}", id(&agent));
    for method in [Method::PATCH, Method::PUT, Method::DELETE] {
        let resp = h.call(method.clone(), &path, Auth::XApiKey(&h.key_a), Some(&json!({"name": "b"}))).await;
        assert!(
            resp.status == StatusCode::NOT_FOUND || resp.status == StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {}",
            resp.status
        );
        assert!(!resp.bytes.is_empty(), "FIXME: {method} on a known path answers {} with an empty body", resp.status);
        check_envelope(&resp.json(), resp.header("request-id"));
    }
    // The agent is untouched.
    assert_eq!(h.get(&path).await.ok(), agent);
}

#[tokio::test]
async fn body_over_32_mb_is_413_request_too_large() {
    // Goal: a body over the API's 32 MB is refused with 413 request_too_large
    // (behaviour digest §14), while a large body under it is read. Method:
    // send 33 MB to every create endpoint, then a 1 MB system prompt overflow
    // (a 400, proving the body was parsed).
    let h = Harness::new();
    let big = vec![b' '; 33 * 1024 * 1024];
    for path in ["/v1/agents", "/v1/environments", "/v1/sessions"] {
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("anthropic-beta", MANAGED_AGENTS_BETA)
            .header("x-api-key", h.key_a.as_str())
            .header("content-type", "application/json")
            .header("content-length", big.len().to_string())
            .body(Body::from(big.clone()))
            .unwrap();
        h.raw(request).await.error(413, "request_too_large");
    }
    // Without a content-length header (a streamed body) the limit still holds.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..33).map(|_| Ok(vec![b' '; 1024 * 1024])).collect();
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/agents")
        .header("anthropic-beta", MANAGED_AGENTS_BETA)
        .header("x-api-key", h.key_a.as_str())
        .header("content-type", "application/json")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .unwrap();
    h.raw(request).await.error(413, "request_too_large");
    let body = json!({"name": "x", "model": "m", "system": "s".repeat(1_000_000)});
    h.post("/v1/agents", &body).await.invalid();
}

#[tokio::test]
async fn version_conflict_is_409_and_not_retried() {
    // Goal: an update naming a stale version is 409 conflict_error with
    // `x-should-retry: false`, so the SDK does not repeat it (API digest §1).
    // Method: update with version 2 while the agent is at 1.
    let h = Harness::new();
    let agent = h.agent("a").await;
    let resp = h.post(&format!("/v1/agents/{}", id(&agent)), &json!({"version": 2, "name": "b"})).await;
    resp.error(409, "conflict_error");
    assert_eq!(resp.header("x-should-retry"), Some("false"));
}

#[tokio::test]
async fn rate_limit_is_per_workspace_with_retry_after() {
    // Goal: a workspace over its read limit gets 429 rate_limit_error with
    // `retry-after` (seconds) and `retry-after-ms`; another workspace is
    // unaffected, and so is the same workspace's create allowance. Method:
    // 60 reads/min allows a burst of 3; send reads until refused.
    let h = Harness::with_limits(RateLimits { create_per_minute: 0, read_per_minute: 60, work_per_minute: 0 });
    let mut n_ok = 0;
    let refused = loop {
        let resp = h.get("/v1/agents").await;
        if resp.status == StatusCode::TOO_MANY_REQUESTS {
            break resp;
        }
        resp.ok();
        n_ok += 1;
        assert!(n_ok <= 10, "no 429 after {n_ok} reads");
    };
    assert_eq!(n_ok, 3, "burst of {n_ok}");
    refused.error(429, "rate_limit_error");
    let retry_after: u64 = refused.header("retry-after").expect("retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry_after), "retry-after {retry_after}");
    let retry_after_ms: u64 = refused.header("retry-after-ms").expect("retry-after-ms").parse().unwrap();
    assert!((1..=60_000).contains(&retry_after_ms), "retry-after-ms {retry_after_ms}");
    // Workspace B has its own bucket.
    h.call(Method::GET, "/v1/agents", Auth::XApiKey(&h.key_b), None).await.ok();
    // Creates are not limited here.
    h.post("/v1/agents", &json!({"name": "x", "model": "m"})).await.ok();
    // Requests that fail authentication are not charged to anyone.
    h.call(Method::GET, "/v1/agents", Auth::XApiKey(&h.revoked_a), None).await.error(401, "authentication_error");
}

#[tokio::test]
async fn a_full_burst_passes_and_the_next_waits_for_retry_after() {
    // Goal: with the default limits (behaviour digest §14: 1,200 reads and
    // 300 creates a minute), a workspace may send 3 s of its allowance at
    // once (60 reads, 15 creates; README "Commands"); the next request is
    // refused with the exact wait, and after that wait, on the server's
    // injected clock, one more passes. Method: the clock stands still while
    // the bursts are sent, then advances by `retry-after-ms`.
    let h = Harness::with_limits(RateLimits::default());
    for n_read in 0..60 {
        let resp = h.get("/v1/agents").await;
        assert_eq!(resp.status.as_u16(), 200, "read {n_read}: {}", resp.text());
    }
    let refused = h.get("/v1/agents").await;
    refused.error(429, "rate_limit_error");
    assert_eq!((refused.header("retry-after"), refused.header("retry-after-ms")), (Some("1"), Some("50")));
    h.tick(50);
    h.get("/v1/agents").await.ok();
    h.get("/v1/agents").await.error(429, "rate_limit_error");
    for n_create in 0..15 {
        let resp = h.post("/v1/agents", &json!({"name": format!("a{n_create}"), "model": "m"})).await;
        assert_eq!(resp.status.as_u16(), 200, "create {n_create}: {}", resp.text());
    }
    let refused = h.post("/v1/agents", &json!({"name": "late", "model": "m"})).await;
    refused.error(429, "rate_limit_error");
    assert_eq!((refused.header("retry-after"), refused.header("retry-after-ms")), (Some("1"), Some("200")));
}

#[tokio::test]
async fn healthz_metrics_and_openapi() {
    // Goal: the operational endpoints work without a key or beta header:
    // `/healthz` says ok, `/metrics` is Prometheus text that counts API
    // requests by route template, and `/openapi.json` lists exactly the routes
    // of `routes()` and `operational_routes()`. Method: make one API request,
    // then read all three.
    let h = Harness::new();
    let plain = |path: &str| h.raw(Request::builder().uri(path).body(Body::empty()).unwrap());
    let health = plain("/healthz").await.ok();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["writable"], true);
    assert_eq!(
        (health["quarantined_sessions"].clone(), health["store_damage"].clone()),
        (json!(0), json!(0)),
        "counts, no ids"
    );

    let agent = h.agent("a").await;
    h.get(&format!("/v1/agents/{}", id(&agent))).await.ok();
    let metrics = plain("/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(metrics.header("content-type").unwrap().starts_with("text/plain"), "{:?}", metrics.headers);
    let text = metrics.text();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix('#') {
            assert!(comment.starts_with(" HELP ") || comment.starts_with(" TYPE "), "bad comment line {line:?}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {line:?}"));
        assert!(value.parse::<f64>().is_ok(), "bad value in {line:?}");
        let name = series.split('{').next().unwrap();
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "bad metric name in {line:?}");
        assert!(text.contains(&format!("# TYPE {name} ")), "no TYPE line for {name}");
    }
    for store_metric in ["logbook_store_barriers ", "logbook_store_barrier_seconds ", "logbook_runner_sessions "] {
        assert!(text.contains(store_metric), "{store_metric}missing");
    }
    assert!(
        text.contains(r#"logbook_http_requests_total{method="GET",route="/v1/agents/{agent_id}",status="200"} 1"#),
        "{text}"
    );
    assert!(!text.contains(id(&agent)), "metrics must not be labelled by object id");
    // Methods a client makes up share one label: no series per made-up token.
    for made_up in ["FROB1", "FROB2"] {
        h.raw(Request::builder().method(made_up).uri("/v1/agents").body(Body::empty()).unwrap()).await;
    }
    let text = plain("/metrics").await.text();
    assert!(!text.contains("FROB"), "{text}");
    assert!(text.contains(r#"method="OTHER""#), "{text}");

    let doc = plain("/openapi.json").await.ok();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    let mut n_operations = 0;
    for (_, item) in paths {
        n_operations += item.as_object().unwrap().len();
    }
    let table = routes();
    let operational = operational_routes();
    assert_eq!(n_operations, table.len() + operational.len(), "the document lists exactly the routes");
    for route in &operational {
        assert!(
            doc["paths"][route.path]["get"]["summary"].is_string(),
            "GET {} is missing from /openapi.json",
            route.path
        );
    }
    for route in table {
        // axum's catch-all `{*name}` is documented as the template `{name}`.
        let path = route.path.replace("{*", "{");
        let operation = &doc["paths"][path.as_str()][route.method.as_str().to_lowercase()];
        assert!(operation.is_object(), "{} {} is missing from /openapi.json", route.method, route.path);
        assert!(operation["summary"].is_string());
    }
}

#[tokio::test]
async fn slow_request_is_504_timeout_error() {
    // Goal: a request that outlives the configured request timeout answers
    // 504 timeout_error in the envelope (behaviour digest §14), and a write
    // says not to retry blind. Method: a 200 ms timeout and a session create
    // held up by the lock an environment delete takes (held by the test);
    // once it is released the create goes through: a write may land after
    // its 504.
    let config = Config {
        rate_limits: RateLimits { create_per_minute: 0, read_per_minute: 0, work_per_minute: 0 },
        request_timeout: Duration::from_millis(200),
        ..Config::default()
    };
    let h = Harness::with_config(config);
    let agent = h.agent("a").await;
    let env = h.env("e").await;
    let body = json!({"agent": id(&agent), "environment_id": id(&env)});
    let (locked_tx, locked) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let state = h.state.clone();
    let env_id: logbook_core::EnvironmentId = id(&env).parse().unwrap();
    let deleting = std::thread::spawn(move || {
        let _unused = state.environment_unused(env_id);
        locked_tx.send(()).unwrap();
        // Held until the test says so (or gives up).
        let _ = release_rx.recv_timeout(Duration::from_secs(60));
    });
    locked.recv_timeout(Duration::from_secs(60)).expect("the lock is taken");
    let resp = h.post("/v1/sessions", &body).await;
    resp.error(504, "timeout_error");
    assert_eq!(resp.header("x-should-retry"), Some("false"));
    release.send(()).unwrap();
    deleting.join().unwrap();
    // A normal request still works.
    h.get("/v1/agents").await.ok();
}

#[tokio::test]
async fn a_body_still_arriving_at_the_request_timeout_is_408() {
    // Goal: when the request timeout fires while the handler waits for the
    // rest of the body, the client was slow: 408 timeout_error and the
    // connection closed, not a 504 saying a write may have landed. Method:
    // a 200 ms request timeout, the body deadline far away, and a request
    // body that never finishes arriving.
    let config = Config {
        rate_limits: RateLimits { create_per_minute: 0, read_per_minute: 0, work_per_minute: 0 },
        request_timeout: Duration::from_millis(200),
        body_read_timeout: Duration::from_secs(600),
        ..Config::default()
    };
    let h = Harness::with_config(config);
    let never = futures_util::StreamExt::chain(
        futures_util::stream::iter([Ok::<_, std::io::Error>(b"{".to_vec())]),
        futures_util::stream::pending::<Result<Vec<u8>, std::io::Error>>(),
    );
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/agents")
        .header("anthropic-beta", MANAGED_AGENTS_BETA)
        .header("x-api-key", h.key_a.as_str())
        .header("content-type", "application/json")
        .body(Body::from_stream(never))
        .unwrap();
    let resp = h.raw(request).await;
    resp.error(408, "timeout_error");
    assert_eq!(resp.header("connection"), Some("close"));
    assert_eq!(h.get("/v1/agents").await.ok()["data"], json!([]), "nothing was created");
}

#[tokio::test]
async fn internal_failure_is_a_generic_500_api_error() {
    // Goal: an internal failure answers 500 api_error with a generic message
    // that reveals nothing of the cause (error.rs contract), with a request
    // id. Method: overwrite a stored agent with bytes that are not an agent,
    // then read it.
    let h = Harness::new();
    let agent = h.agent("a").await;
    let tenant = h.tenant(&h.key_a);
    let agent_id: AgentId = id(&agent).parse().unwrap();
    let key = tenant.key(agent_id.to_bytes());
    let store = h.state.store();
    let current = store.get_resource(ResourceKind::Agent, &key).unwrap();
    let garbage = b"{\"not\": \"an agent, secret-internal-detail\"}";
    store.swap_resource(ResourceKind::Agent, &key, current.as_deref(), Some(garbage)).unwrap().unwrap();
    let resp = h.get(&format!("/v1/agents/{}", id(&agent))).await;
    let body = resp.error(500, "api_error");
    assert!(!resp.text().contains("secret-internal-detail"), "{body}");
    assert!(!resp.text().contains("missing field"), "the serde detail stays in the log: {body}");
    // Other agents are unaffected.
    h.agent("b").await;
}

/// `/openapi.json`, as a client without a key reads it.
async fn openapi(h: &Harness) -> serde_json::Value {
    h.raw(Request::builder().uri("/openapi.json").body(Body::empty()).unwrap()).await.ok()
}

/// The names of an operation's parameters that are `in` `location`.
fn parameter_names(operation: &serde_json::Value, location: &str) -> BTreeSet<String> {
    operation["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["in"] == location)
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn openapi_documents_the_query_parameters_routes_take() {
    // Goal: `/openapi.json` describes every route's parameters, not only
    // its path parameters: the lists' `limit` and `page` (API digest §1
    // "Pagination"), the events list's `order` and `types[]` (§2.5), the
    // stream's `event_deltas[]`, an agent's `version` (§2.1) and the work
    // poll's `block_ms` (§2.3) are all read by the server. Method: read the
    // document and look for each.
    let h = Harness::new();
    let doc = openapi(&h).await;
    let expected: Vec<(&str, &str, &[&str])> = vec![
        ("get", "/v1/agents", &["limit", "page", "include_archived"]),
        ("get", "/v1/agents/{agent_id}", &["version"]),
        ("get", "/v1/sessions", &["limit", "page", "order", "agent_id", "statuses[]"]),
        ("get", "/v1/sessions/{session_id}/events", &["limit", "page", "order", "types[]"]),
        ("get", "/v1/sessions/{session_id}/events/stream", &["event_deltas[]"]),
        ("get", "/v1/environments/{environment_id}/work/poll", &["block_ms", "reclaim_older_than_ms"]),
    ];
    let mut missing = Vec::new();
    for (method, path, names) in expected {
        let documented = parameter_names(&doc["paths"][path][method], "query");
        for name in names {
            if !documented.contains(*name) {
                missing.push(format!("{method} {path} ?{name}"));
            }
        }
    }
    assert!(missing.is_empty(), "query parameters the server reads are not in /openapi.json:\n{}", missing.join("\n"));
}

#[tokio::test]
async fn openapi_describes_the_file_upload_as_multipart() {
    // Goal: the document describes request bodies as the server reads them:
    // `POST /v1/files` takes `multipart/form-data` (part `file`), not JSON.
    // Method: read the upload's requestBody.
    let h = Harness::new();
    let doc = openapi(&h).await;
    let content = &doc["paths"]["/v1/files"]["post"]["requestBody"]["content"];
    assert!(
        content.get("multipart/form-data").is_some(),
        "POST /v1/files is documented with a body of {content}, but the server reads multipart/form-data"
    );
}

#[tokio::test]
async fn openapi_requires_the_beta_header_only_where_the_server_does() {
    // Goal: the document marks `anthropic-beta` required only on routes that
    // refuse a request without it: the `/x/v1` extensions and the Files API
    // take requests without the managed-agents beta (http.rs `admit`).
    // Method: call one route of each without the header (it works), then
    // read what the document says of the header there.
    let h = Harness::new();
    for path in ["/x/v1/keys", "/v1/files"] {
        let request = Request::builder().uri(path).header("x-api-key", h.key_a.as_str()).body(Body::empty()).unwrap();
        h.raw(request).await.ok();
    }
    let doc = openapi(&h).await;
    let mut wrong = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !(path.starts_with("/x/") || path == "/v1/files" || path.starts_with("/v1/files/")) {
            continue;
        }
        for (method, operation) in item.as_object().unwrap() {
            let beta = operation["parameters"].as_array().into_iter().flatten().find(|p| p["name"] == "anthropic-beta");
            if beta.is_some_and(|p| p["required"] == true) {
                wrong.push(format!("{method} {path}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "anthropic-beta is documented as required where the server does not require it:\n{}",
        wrong.join("\n")
    );
}

#[tokio::test]
async fn openapi_path_templates_are_valid() {
    // Goal: every path in the document is an OpenAPI path template whose
    // `{name}` segments are its path parameters; axum's catch-all syntax
    // (`{*path}`) is not OpenAPI and its parameter name `*path` is not an
    // identifier generators accept. Method: check every template segment.
    let h = Harness::new();
    let doc = openapi(&h).await;
    let bad: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|path| {
            path.split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .any(|name| !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        })
        .cloned()
        .collect();
    assert!(bad.is_empty(), "paths that are not OpenAPI templates: {bad:?}");
}

#[tokio::test]
async fn body_over_32_mb_is_413_on_routes_that_ignore_their_body_too() {
    // Goal: behaviour digest §14: a Sessions, Agents or Environments request
    // over 32 MB is refused with 413 request_too_large. Routes whose handler
    // reads no body (archive, delete) take a 33 MB body (content-length
    // given) and act on it as if it were empty. Method: archive an agent and
    // a session and delete a session with a 33 MB body; each must be 413 and
    // change nothing.
    let h = Harness::new();
    let agent = h.agent("a").await;
    let session = h.quick_session().await;
    let big = vec![b' '; 33 * 1024 * 1024];
    let mut wrong = Vec::new();
    for (method, path) in [
        (Method::POST, format!("/v1/agents/{}/archive", id(&agent))),
        (Method::POST, format!("/v1/sessions/{}/archive", id(&session))),
        (Method::DELETE, format!("/v1/sessions/{}", id(&session))),
    ] {
        let request = Request::builder()
            .method(method.clone())
            .uri(&path)
            .header("anthropic-beta", MANAGED_AGENTS_BETA)
            .header("x-api-key", h.key_a.as_str())
            .header("content-type", "application/json")
            .header("content-length", big.len().to_string())
            .body(Body::from(big.clone()))
            .unwrap();
        let resp = h.raw(request).await;
        if resp.status != StatusCode::PAYLOAD_TOO_LARGE {
            wrong.push(format!("{method} {path}: {}", resp.status));
        }
    }
    assert!(wrong.is_empty(), "33 MB bodies accepted:\n{}", wrong.join("\n"));
}

#[tokio::test]
async fn openapi_lists_the_operational_routes_the_router_serves() {
    // Goal: `/openapi.json` describes every route the router serves. The
    // operational routes (`/healthz`, `/health`, `/metrics`, `/openapi.json`)
    // answer 200 without a key but are missing from it. Method: call each,
    // then look it up in the document.
    let h = Harness::new();
    let doc = openapi(&h).await;
    let mut missing = Vec::new();
    for path in ["/healthz", "/health", "/metrics", "/openapi.json"] {
        let resp = h.raw(Request::builder().uri(path).body(Body::empty()).unwrap()).await;
        assert_eq!(resp.status, StatusCode::OK, "{path} is served");
        if !doc["paths"][path]["get"].is_object() {
            missing.push(path);
        }
    }
    assert!(missing.is_empty(), "served but not in /openapi.json: {missing:?}");
}

#[tokio::test]
async fn a_streamed_body_over_32_mb_is_413_on_routes_that_ignore_their_body() {
    // Goal: the body limit holds on a route whose handler reads no body
    // even when the body comes without a content-length (chunked): the
    // server reads it (at most 32 MB) before the handler runs, refuses it
    // past the limit and changes nothing; a small streamed body is read and
    // ignored. Method: archive an agent with a streamed 33 MB body, then
    // with a streamed `{}`.
    let h = Harness::new();
    let agent = h.agent("a").await;
    let path = format!("/v1/agents/{}/archive", id(&agent));
    let archive = |chunks: Vec<Result<Vec<u8>, std::io::Error>>| {
        Request::builder()
            .method(Method::POST)
            .uri(&path)
            .header("anthropic-beta", MANAGED_AGENTS_BETA)
            .header("x-api-key", h.key_a.as_str())
            .header("content-type", "application/json")
            .body(Body::from_stream(futures_util::stream::iter(chunks)))
            .unwrap()
    };
    let big = (0..33).map(|_| Ok(vec![b' '; 1024 * 1024])).collect();
    h.raw(archive(big)).await.error(413, "request_too_large");
    let unchanged = h.get(&format!("/v1/agents/{}", id(&agent))).await.ok();
    assert_eq!(unchanged["archived_at"], serde_json::Value::Null, "a refused archive changes nothing");
    let archived = h.raw(archive(vec![Ok(b"{}".to_vec())])).await.ok();
    assert!(archived["archived_at"].is_string(), "{archived}");
}

#[tokio::test]
async fn openapi_requires_a_request_body_where_the_handler_needs_one() {
    // Goal: the document describes each route's body as its handler reads
    // it: creates need a JSON body, updates of optional fields take an
    // optional one (an empty body reads as `{}`), archive and delete take
    // none. Method: read the requestBody of one route of each kind.
    let h = Harness::new();
    let doc = openapi(&h).await;
    let body = |method: &str, path: &str| doc["paths"][path][method]["requestBody"].clone();
    for path in ["/v1/agents", "/v1/environments", "/v1/sessions", "/v1/sessions/{session_id}/events"] {
        let create = body("post", path);
        assert_eq!(create["required"], true, "POST {path}: {create}");
        assert!(create["content"]["application/json"].is_object(), "POST {path}: {create}");
    }
    assert_eq!(body("post", "/v1/files")["required"], true);
    assert_eq!(body("post", "/v1/agents/{agent_id}")["required"], false);
    assert!(body("post", "/v1/agents/{agent_id}/archive").is_null());
    assert!(body("delete", "/v1/sessions/{session_id}").is_null());
}

#[tokio::test]
async fn openapi_documents_the_headers_and_statuses_of_the_worker_and_stream_routes() {
    // Goal: `/openapi.json` is "an OpenAPI document of the whole surface"
    // (issue 3 item 5). The stream reads `Last-Event-ID` (issue 3 item 4: the
    // extension raw-HTTP clients need to resume), the work poll reads
    // `anthropic-worker-id` (API digest §2.3), and the heartbeat answers 412
    // `heartbeat_precondition_failed` (§2.3, the lease protocol the SDK's
    // worker relies on). Method: read the document for each. The operation
    // builder (`openapi::api_operation`) documents only path and query
    // parameters and a fixed set of statuses.
    let h = Harness::new();
    let doc = openapi(&h).await;
    let mut missing = Vec::new();
    let headers: [(&str, &str, &str); 3] = [
        ("get", "/v1/sessions/{session_id}/events/stream", "last-event-id"),
        ("get", "/v1/sessions/{session_id}/threads/{thread_id}/stream", "last-event-id"),
        ("get", "/v1/environments/{environment_id}/work/poll", "anthropic-worker-id"),
    ];
    for (method, path, name) in headers {
        let documented: BTreeSet<String> =
            parameter_names(&doc["paths"][path][method], "header").into_iter().map(|n| n.to_lowercase()).collect();
        if !documented.contains(name) {
            missing.push(format!("{method} {path}: header {name}"));
        }
    }
    let heartbeat = &doc["paths"]["/v1/environments/{environment_id}/work/{work_id}/heartbeat"]["post"];
    let precondition = heartbeat["responses"]["412"]["description"].as_str().unwrap_or("");
    if !precondition.contains("heartbeat_precondition_failed") {
        missing.push("post .../work/{work_id}/heartbeat: response 412 heartbeat_precondition_failed".to_owned());
    }
    // What every API route may answer (by code reading: the credential's
    // scope check `work::access::check` runs on every route and answers 403
    // `credential_not_accepted`; a body that arrives too slowly is a 408 on
    // any route; a store that can no longer write and a busy session are
    // 503), and the request timeout's 504 on every route that is not a
    // stream. Only the heartbeat answers 412.
    for route in routes() {
        let method = route.method.as_str().to_lowercase();
        let responses = &doc["paths"][route.path.replace("{*", "{")][&method]["responses"];
        for status in ["400", "401", "403", "404", "408", "409", "413", "429", "500", "503"] {
            if responses.get(status).is_none() {
                missing.push(format!("{method} {}: response {status}", route.path));
            }
        }
        if responses.get("504").is_some() == route.streaming {
            missing.push(format!("{method} {}: response 504 only where the request timeout applies", route.path));
        }
        if responses.get("412").is_some() != route.path.ends_with("/heartbeat") {
            missing.push(format!("{method} {}: response 412 only on the heartbeat", route.path));
        }
        for (status, response) in responses.as_object().into_iter().flatten().filter(|(status, _)| *status != "200") {
            if response["content"]["application/json"]["schema"]["$ref"] != "#/components/schemas/Error" {
                missing.push(format!("{method} {}: response {status} without the error envelope", route.path));
            }
        }
        let forbidden = responses["403"]["description"].as_str().unwrap_or("");
        if !forbidden.contains("credential_not_accepted") {
            missing.push(format!("{method} {}: response 403 credential_not_accepted", route.path));
        }
    }
    let worker_id = doc["paths"]["/v1/environments/{environment_id}/work/poll"]["get"]["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"].as_str().is_some_and(|name| name.eq_ignore_ascii_case("anthropic-worker-id")))
        .and_then(|p| p["description"].as_str())
        .unwrap_or("");
    let limit = format!("1 to {}", logbook_server::api::work::MAX_WORKER_ID_CHARS);
    if !worker_id.contains(&limit) {
        missing.push(format!("anthropic-worker-id: the description {worker_id:?} does not say {limit:?}"));
    }
    assert!(missing.is_empty(), "what the server reads and answers is not in /openapi.json:\n{}", missing.join("\n"));
}
