//! The self-hosted work queue (API digest §2.3, behaviour digest §7.2-7.3 and
//! §15.6-15.7): every endpoint's validation and errors, the lease protocol
//! (acks, heartbeats with `expected_last_heartbeat`, 412 on a stale one, TTL
//! expiry re-queueing, graceful and forced stops, 409 on a re-stop), claims
//! and reclaims, concurrent pollers, credentials (environment keys, the
//! sessions token in the poll's `secret`, revocation), and `user.tool_result`
//! accepted only for calls a worker may run.
//!
//! Method: the in-process router over a fresh store with a manual clock, so
//! lease expiry is a clock advance, not a wait. The harness has no runner:
//! these tests are about the queue and the API; the runner's side is tested
//! through the official SDK's worker (`tests/sdk/test_worker.py`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::http::Method;
use base64::Engine;
use logbook_core::Event;
use logbook_server::ratelimit::RateLimits;
use logbook_server::state::Config;
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use crate::harness::{Auth, Harness, Resp, events_body, id, ids, user_message};
use logbook_server::api::work::WorkNeed;

/// A self-hosted environment of workspace A, with an environment key.
struct Queue {
    env: String,
    key: String,
}

impl Queue {
    async fn new(h: &Harness) -> Queue {
        let env = h.self_hosted_env("workers").await;
        let env = id(&env).to_owned();
        let key = env_key(h, &env);
        Queue { env, key }
    }

    fn path(&self, rest: &str) -> String {
        format!("/v1/environments/{}/work{rest}", self.env)
    }

    /// A session of A on this environment.
    async fn session(&self, h: &Harness) -> String {
        let agent = h.agent("worker-agent").await;
        let session = h.post("/v1/sessions", &json!({"agent": agent["id"], "environment_id": self.env})).await.ok();
        id(&session).to_owned()
    }

    async fn worker(&self, h: &Harness, method: Method, rest: &str, body: Option<&Value>) -> Resp {
        h.call(method, &self.path(rest), Auth::Bearer(&self.key), body).await
    }

    async fn poll(&self, h: &Harness, query: &str) -> Resp {
        self.worker(h, Method::GET, &format!("/poll{query}"), None).await
    }

    async fn ack(&self, h: &Harness, work: &str) -> Resp {
        self.worker(h, Method::POST, &format!("/{work}/ack"), None).await
    }

    async fn list(&self, h: &Harness) -> Vec<Value> {
        let page = self.worker(h, Method::GET, "?limit=100", None).await.ok();
        page["data"].as_array().unwrap().clone()
    }

    async fn retrieve(&self, h: &Harness, work: &str) -> Value {
        h.get(&self.path(&format!("/{work}"))).await.ok()
    }

    async fn stats(&self, h: &Harness) -> Value {
        h.get(&self.path("/stats")).await.ok()
    }
}

/// A new environment key of `env` (workspace A), as `logbook keys create --environment` makes one.
fn env_key(h: &Harness, env: &str) -> String {
    let workspace = h.tenant(&h.key_a).workspace;
    logbook_server::tenancy::create_environment_key(h.state.store(), workspace, env.parse().unwrap(), h.now()).unwrap()
}

/// The sessions token inside a polled item's `secret`.
fn token_of(item: &Value) -> String {
    let secret = item["secret"].as_str().unwrap_or_else(|| panic!("no secret in {item}"));
    let bytes =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(secret).expect("URL-safe base64 without padding");
    let payload: Value = serde_json::from_slice(&bytes).unwrap();
    let token = payload["sessions_token"].as_str().unwrap().to_owned();
    assert!(token.starts_with(logbook_server::tenancy::SESSIONS_TOKEN_PREFIX), "{token}");
    token
}

async fn heartbeat(h: &Harness, q: &Queue, work: &str, auth: Auth<'_>, query: &str) -> Resp {
    h.call(Method::POST, &q.path(&format!("/{work}/heartbeat{query}")), auth, None).await
}

async fn stop(h: &Harness, q: &Queue, work: &str, auth: Auth<'_>, force: bool) -> Resp {
    h.call(Method::POST, &q.path(&format!("/{work}/stop")), auth, Some(&json!({"force": force}))).await
}

fn expected(value: &str) -> String {
    format!("?expected_last_heartbeat={}", form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>())
}

fn tool_use(name: &str, permission: Option<&str>) -> Event {
    let mut event = json!({"type": "agent.tool_use", "name": name, "input": {"command": "ls"}});
    if let Some(permission) = permission {
        event["evaluated_permission"] = json!(permission);
    }
    serde_json::from_value(event).unwrap()
}

fn tool_result(tool_use_id: &str) -> Value {
    json!({"type": "user.tool_result", "tool_use_id": tool_use_id, "content": [{"type": "text", "text": "ok"}], "is_error": false})
}

#[tokio::test]
async fn self_hosted_sessions_queue_a_work_item_each_first_in_first_out() {
    // Goal: creating a session on a self-hosted environment queues one work
    // item `{type: "session", id}`; a cloud session queues none; polls hand
    // items out oldest first, each once, with a secret only on the poll.
    let h = Harness::new();
    let q = Queue::new(&h).await;
    let first = q.session(&h).await;
    h.tick(5);
    let second = q.session(&h).await;
    let listed = q.list(&h).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["data"], json!({"type": "session", "id": second}), "newest first");
    assert_eq!(listed[1]["data"], json!({"type": "session", "id": first}));
    for item in &listed {
        assert_eq!((item["type"].as_str(), item["state"].as_str()), (Some("work"), Some("queued")));
        assert_eq!(item["environment_id"], q.env);
        assert_eq!(item["secret"], Value::Null);
        assert_eq!(item["metadata"], json!({}));
        assert!(item["id"].as_str().unwrap().starts_with("work_"));
    }
    let cloud = h.quick_session().await;
    let tenant = h.tenant(&h.key_a);
    let cloud_id = id(&cloud).parse().unwrap();
    let none = logbook_server::api::work::session_work(&h.state, h.state.store(), &tenant, cloud_id).unwrap();
    assert_eq!(none, None, "a cloud session has no work item");

    let polled = q.poll(&h, "").await.ok();
    assert_eq!(polled["data"]["id"], first.as_str(), "oldest first");
    assert_eq!(polled["state"], "queued", "a claimed item stays queued (pending) until acked");
    token_of(&polled);
    let polled = q.poll(&h, "").await.ok();
    assert_eq!(polled["data"]["id"], second.as_str());
    let empty = q.poll(&h, "").await;
    assert_eq!(empty.text(), "null", "an empty poll answers JSON null");
    assert_eq!(q.retrieve(&h, id(&polled)).await["secret"], Value::Null, "secret only on the poll");
}

#[tokio::test]
async fn poll_validates_its_parameters_and_credential() {
    let h = Harness::new();
    let q = Queue::new(&h).await;
    for query in ["?block_ms=0", "?block_ms=1000", "?block_ms=abc", "?block_ms=-5", "?block_ms=1.5", "?block_ms="] {
        let body = q.poll(&h, query).await.invalid();
        assert!(body["error"]["message"].as_str().unwrap().contains("block_ms"), "{query}: {body}");
    }
    for query in ["?reclaim_older_than_ms=-1", "?reclaim_older_than_ms=x", "?reclaim_older_than_ms=86400001"] {
        let body = q.poll(&h, query).await.invalid();
        assert!(body["error"]["message"].as_str().unwrap().contains("reclaim_older_than_ms"), "{query}: {body}");
    }
    for worker in ["w".repeat(257), "two words".to_owned()] {
        let request = axum::http::Request::builder()
            .uri(q.path("/poll"))
            .header("anthropic-beta", logbook_server::http::MANAGED_AGENTS_BETA)
            .header("authorization", format!("Bearer {}", q.key))
            .header("anthropic-worker-id", worker)
            .body(axum::body::Body::empty())
            .unwrap();
        h.raw(request).await.invalid();
    }
    let empty = q.poll(&h, "?block_ms=1&reclaim_older_than_ms=0").await;
    assert_eq!((empty.status.as_u16(), empty.text()), (200, "null".to_owned()));
    assert_eq!(empty.header("content-type"), Some("application/json"));

    // An API key cannot poll; a missing or malformed environment is 404.
    let body = h.get(&q.path("/poll")).await.error(403, "permission_error");
    assert_eq!(body["error"]["details"]["error_code"], "credential_not_accepted");
    for env in ["env_01JQ8Z7M3P5R7T9V1X3Z5B7D0E", "nope"] {
        let resp = h.call(Method::GET, &format!("/v1/environments/{env}/work/poll"), Auth::Bearer(&q.key), None).await;
        let body = resp.not_found();
        assert_eq!(body["error"]["details"]["error_code"], "environment_not_found");
    }
    // A cloud environment has no queue.
    let cloud = h.env("cloud").await;
    let cloud_key = env_key(&h, id(&cloud));
    let path = format!("/v1/environments/{}/work/poll", id(&cloud));
    let body = h.call(Method::GET, &path, Auth::Bearer(&cloud_key), None).await.invalid();
    assert_eq!(body["error"]["details"]["error_code"], "environment_not_self_hosted");
}

#[tokio::test]
async fn a_long_poll_returns_work_that_arrives_while_it_waits() {
    // Goal: a poll with block_ms waits for work and is woken when a session
    // queues an item, instead of answering null at its deadline. Method: the
    // poll is started first (the queue's poller count says it arrived), then
    // a session is created; the poll must return that session's item.
    let h = Arc::new(Harness::new());
    let q = Arc::new(Queue::new(&h).await);
    let env: logbook_core::EnvironmentId = q.env.parse().unwrap();
    let workspace = h.tenant(&h.key_a).workspace;
    let poll = {
        let (h, q) = (Arc::clone(&h), Arc::clone(&q));
        tokio::spawn(async move {
            let request = axum::http::Request::builder()
                .uri(q.path("/poll?block_ms=999"))
                .header("anthropic-beta", logbook_server::http::MANAGED_AGENTS_BETA)
                .header("authorization", format!("Bearer {}", q.key))
                .header("anthropic-worker-id", "waiting-worker")
                .body(axum::body::Body::empty())
                .unwrap();
            h.raw(request).await
        })
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while h.state.work_hub().workers_polling(workspace, env, h.now()) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the poll never arrived");
        tokio::task::yield_now().await;
    }
    let session = q.session(&h).await;
    let item = poll.await.unwrap().ok();
    assert_eq!(item["data"]["id"], session.as_str(), "{item}");
}

#[tokio::test]
async fn the_lease_protocol_ack_heartbeat_stop() {
    // Goal: ack moves queued → starting (once); the first heartbeat claims the
    // lease with NO_HEARTBEAT (active), later ones echo last_heartbeat; a
    // stale value answers 412 with the lease as the server holds it; TTLs are
    // clamped; a graceful stop is stopping until the worker's force-stop, and
    // a heartbeat tells the worker; re-stopping answers 409.
    let h = Harness::new();
    let q = Queue::new(&h).await;
    let session = q.session(&h).await;
    let work = id(&q.poll(&h, "").await.ok()).to_owned();
    let w = Auth::Bearer(&q.key);

    for missing in ["work_01JQ8Z7M3P5R7T9V1X3Z5B7D0E", "nope"] {
        let body = q.ack(&h, missing).await.not_found();
        assert_eq!(body["error"]["details"]["error_code"], "work_not_found");
    }
    let refused = heartbeat(&h, &q, &work, w, &expected("NO_HEARTBEAT")).await;
    let body = refused.error(412, "conflict_error");
    assert_eq!(body["error"]["details"]["error_code"], "heartbeat_precondition_failed");
    assert_eq!(
        body["error"]["details"]["current_state"],
        json!({"last_heartbeat": null, "lease_extended": false, "state": "queued", "ttl_seconds": 300}),
        "no lease before the ack"
    );

    let acked = q.ack(&h, &work).await.ok();
    assert_eq!((acked["state"].as_str(), acked["acknowledged_at"].is_string()), (Some("starting"), true));
    assert_eq!(acked["data"]["id"], session.as_str());
    let again = q.ack(&h, &work).await;
    let body = again.error(409, "conflict_error");
    assert_eq!(body["error"]["details"]["error_code"], "work_not_queued");
    assert_eq!(again.header("x-should-retry"), Some("false"));

    for query in ["?expected_last_heartbeat=", &format!("?expected_last_heartbeat={}", "x".repeat(65))] {
        heartbeat(&h, &q, &work, w, query).await.invalid();
    }
    for ttl in ["0", "-1", "abc", "1.5"] {
        let body = heartbeat(&h, &q, &work, w, &format!("?desired_ttl_seconds={ttl}")).await.invalid();
        assert!(body["error"]["message"].as_str().unwrap().contains("desired_ttl_seconds"), "{body}");
    }

    h.tick(1000);
    let beat = heartbeat(&h, &q, &work, w, &expected("NO_HEARTBEAT")).await.ok();
    let last = beat["last_heartbeat"].as_str().unwrap().to_owned();
    assert_eq!(
        beat,
        json!({"type": "work_heartbeat", "last_heartbeat": last, "lease_extended": true, "state": "active", "ttl_seconds": 300})
    );
    let item = q.retrieve(&h, &work).await;
    assert_eq!(item["state"], "active");
    assert_eq!(item["started_at"], item["latest_heartbeat_at"]);
    assert_eq!(item["latest_heartbeat_at"], last.as_str());

    // A second worker claiming the lease, or a stale echo, gets 412 with the lease.
    let refused = heartbeat(&h, &q, &work, w, &expected("NO_HEARTBEAT")).await;
    let body = refused.error(412, "conflict_error");
    assert_eq!(
        body["error"]["details"]["current_state"],
        json!({"last_heartbeat": last, "lease_extended": false, "state": "active", "ttl_seconds": 300})
    );
    let beat = heartbeat(&h, &q, &work, w, &format!("{}&desired_ttl_seconds=1", expected(&last))).await.ok();
    assert_eq!(beat["ttl_seconds"], 2, "clamped to the shortest lease");
    let stale = heartbeat(&h, &q, &work, w, &expected(&last)).await;
    stale.error(412, "conflict_error");
    let last = beat["last_heartbeat"].as_str().unwrap().to_owned();
    let beat = heartbeat(&h, &q, &work, w, &format!("{}&desired_ttl_seconds=100000", expected(&last))).await.ok();
    assert_eq!(beat["ttl_seconds"], 3600, "clamped to the longest lease");
    let last = beat["last_heartbeat"].as_str().unwrap().to_owned();

    // A graceful stop (here by the API key holder) reaches the worker on its next heartbeat.
    let bad = h.post(&q.path(&format!("/{work}/stop")), &json!({"force": "yes"})).await;
    bad.invalid();
    let stopping = h.post(&q.path(&format!("/{work}/stop")), &json!({})).await.ok();
    assert_eq!(stopping["state"], "stopping");
    assert!(stopping["stop_requested_at"].is_string() && stopping["stopped_at"].is_null());
    assert_eq!(h.post_empty(&q.path(&format!("/{work}/stop"))).await.ok()["state"], "stopping", "still stopping");
    let told = heartbeat(&h, &q, &work, w, &expected("anything: not compared while stopping")).await.ok();
    assert_eq!((told["state"].as_str(), told["lease_extended"].as_bool()), (Some("stopping"), Some(false)));
    assert_eq!(told["last_heartbeat"], last.as_str());
    // The worker exits and force-stops.
    let stopped = stop(&h, &q, &work, w, true).await.ok();
    assert_eq!(stopped["state"], "stopped");
    assert!(stopped["stopped_at"].is_string());
    let again = stop(&h, &q, &work, w, true).await;
    let body = again.error(409, "conflict_error");
    assert_eq!(body["error"]["details"]["error_code"], "work_already_stopped");
    assert_eq!(again.header("x-should-retry"), Some("false"));
    let told = heartbeat(&h, &q, &work, w, &expected(&last)).await.ok();
    assert_eq!((told["state"].as_str(), told["lease_extended"].as_bool()), (Some("stopped"), Some(false)));
    q.ack(&h, &work).await.error(409, "conflict_error");

    // A queued item stops at once: there is no worker to confirm.
    q.session(&h).await;
    let queued = id(&q.list(&h).await[0]).to_owned();
    let stopped = stop(&h, &q, &queued, Auth::XApiKey(&h.key_a), false).await.ok();
    assert_eq!(stopped["state"], "stopped");
    assert_eq!(q.poll(&h, "").await.text(), "null", "a stopped item is never handed out");
}

#[tokio::test]
async fn expired_leases_are_reclaimed_and_the_old_holder_is_refused() {
    // Goal: a lease not renewed within its TTL lapses: the item is queued
    // again (and handed to the next poll with a new sessions token), the old
    // token stops working, the old holder's heartbeat gets 412 and its stop
    // 409; a stopping item whose worker disappears ends stopped.
    let h = Harness::new();
    let q = Queue::new(&h).await;
    let session = q.session(&h).await;
    let polled = q.poll(&h, "").await.ok();
    let (work, old_token) = (id(&polled).to_owned(), token_of(&polled));
    q.ack(&h, &work).await.ok();
    let old = Auth::Bearer(&old_token);
    let beat = heartbeat(&h, &q, &work, old, &format!("{}&desired_ttl_seconds=10", expected("NO_HEARTBEAT"))).await;
    let mut last = beat.ok()["last_heartbeat"].as_str().unwrap().to_owned();
    h.tick(9_000);
    let beat = heartbeat(&h, &q, &work, old, &expected(&last)).await.ok();
    assert_eq!(beat["lease_extended"], true, "renewed in time");
    last = beat["last_heartbeat"].as_str().unwrap().to_owned();
    h.get(&format!("/v1/sessions/{session}")).await.ok();
    assert_eq!(h.call(Method::GET, &format!("/v1/sessions/{session}"), old, None).await.status.as_u16(), 200);

    h.tick(10_000);
    let item = q.retrieve(&h, &work).await;
    assert_eq!(item["state"], "queued", "the lease lapsed: back in the queue");
    assert_eq!((item["acknowledged_at"].clone(), item["started_at"].clone()), (Value::Null, Value::Null));
    assert_eq!(q.stats(&h).await["depth"], 1);
    let body =
        h.call(Method::GET, &format!("/v1/sessions/{session}"), old, None).await.error(401, "authentication_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("expired"), "{body}");
    let refused = heartbeat(&h, &q, &work, old, &expected(&last)).await;
    let body = refused.error(412, "conflict_error");
    assert_eq!(body["error"]["details"]["current_state"]["state"], "queued");
    let body = stop(&h, &q, &work, old, true).await.error(409, "conflict_error");
    assert_eq!(body["error"]["details"]["error_code"], "lease_lost");
    assert_eq!(q.retrieve(&h, &work).await["state"], "queued", "the old holder did not stop it");

    let polled = q.poll(&h, "").await.ok();
    assert_eq!(id(&polled), work, "the same item, handed out again");
    let new_token = token_of(&polled);
    assert_ne!(new_token, old_token);
    q.ack(&h, &work).await.ok();
    let new = Auth::Bearer(&new_token);
    heartbeat(&h, &q, &work, new, &expected("NO_HEARTBEAT")).await.ok();
    h.call(Method::GET, &format!("/v1/sessions/{session}"), new, None).await.ok();
    h.call(Method::GET, &format!("/v1/sessions/{session}"), old, None).await.error(401, "authentication_error");

    // Stopping, then the worker vanishes: the lapse ends it stopped.
    let stopping = h.post(&q.path(&format!("/{work}/stop")), &json!({"force": false})).await.ok();
    assert_eq!(stopping["state"], "stopping");
    h.tick(301_000);
    let item = q.retrieve(&h, &work).await;
    assert_eq!(item["state"], "stopped");
    assert!(item["stopped_at"].is_string());
    assert_eq!(q.poll(&h, "").await.text(), "null");
}

#[tokio::test]
async fn unacked_claims_are_offered_again_after_the_reclaim_window() {
    // Goal: a polled item that is not acked is pending; after
    // reclaim_older_than_ms (default 5 s) another poll gets it; until a
    // heartbeat binds the lease both claims' tokens work, then only the
    // holder's does.
    let h = Harness::new();
    let q = Queue::new(&h).await;
    let session = q.session(&h).await;
    let slow = q.poll(&h, "").await.ok();
    assert_eq!(q.poll(&h, "").await.text(), "null", "pending, not offered again yet");
    let stats = q.stats(&h).await;
    assert_eq!((stats["depth"].as_u64(), stats["pending"].as_u64()), (Some(0), Some(1)), "{stats}");
    assert_eq!(stats["oldest_queued_at"], slow["created_at"]);
    h.tick(4_999);
    assert_eq!(q.poll(&h, "").await.text(), "null");
    h.tick(1);
    let fast = q.poll(&h, "").await.ok();
    assert_eq!(id(&fast), id(&slow));
    assert_eq!(q.poll(&h, "?reclaim_older_than_ms=0").await.ok()["id"], id(&slow), "a shorter window reclaims now");
    let (slow_token, fast_token) = (token_of(&slow), token_of(&fast));
    for token in [&slow_token, &fast_token] {
        h.call(Method::GET, &format!("/v1/sessions/{session}"), Auth::Bearer(token), None).await.ok();
    }
    let work = id(&slow).to_owned();
    q.ack(&h, &work).await.ok();
    // The slow worker's ack won (the ack cannot tell whose it is); its first heartbeat binds the lease.
    heartbeat(&h, &q, &work, Auth::Bearer(&slow_token), &expected("NO_HEARTBEAT")).await.ok();
    heartbeat(&h, &q, &work, Auth::Bearer(&fast_token), &expected("NO_HEARTBEAT")).await.error(412, "conflict_error");
    h.call(Method::GET, &format!("/v1/sessions/{session}"), Auth::Bearer(&fast_token), None)
        .await
        .error(401, "authentication_error");
    let stats = q.stats(&h).await;
    assert_eq!((stats["depth"].as_u64(), stats["pending"].as_u64()), (Some(0), Some(0)));
    assert_eq!(stats["oldest_queued_at"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_never_hold_the_same_item_at_once() {
    // Goal: with concurrent pollers that re-claim eagerly
    // (reclaim_older_than_ms=0, so claims overlap), every item is run by
    // exactly one worker, and never by two at once. Method: 12 sessions, 4
    // workers in parallel tasks; a worker "runs" an item from a successful
    // ack plus first heartbeat until its force-stop, and registers in a
    // shared set while running (a second registration fails the test). The
    // four first polls all claim the oldest item (so at least three acks must
    // lose); after that the workers race freely. Counted: runs per item,
    // lost acks.
    let h = Arc::new(Harness::new());
    let q = Arc::new(Queue::new(&h).await);
    let n_items = 12;
    for _ in 0..n_items {
        q.session(&h).await;
    }
    let running: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let runs: Arc<Mutex<BTreeMap<String, Vec<usize>>>> = Arc::default();
    let lost_acks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut first_polls = Vec::new();
    for _ in 0..4 {
        first_polls.push(q.poll(&h, "?reclaim_older_than_ms=0").await.ok());
    }
    assert!(first_polls.iter().all(|item| item["id"] == first_polls[0]["id"]), "every first poll claims the oldest");
    let mut workers = Vec::new();
    for (worker, first) in first_polls.into_iter().enumerate() {
        let (h, q, running, runs, lost_acks) =
            (Arc::clone(&h), Arc::clone(&q), Arc::clone(&running), Arc::clone(&runs), Arc::clone(&lost_acks));
        workers.push(tokio::spawn(async move {
            let mut first = Some(first);
            loop {
                if runs.lock().unwrap().len() == n_items {
                    return;
                }
                let polled = match first.take() {
                    Some(polled) => polled,
                    None => q.poll(&h, "?block_ms=20&reclaim_older_than_ms=0").await.ok(),
                };
                if polled.is_null() {
                    continue;
                }
                let (work, token) = (id(&polled).to_owned(), token_of(&polled));
                let ack = q.ack(&h, &work).await;
                if ack.status.as_u16() == 409 {
                    lost_acks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    continue;
                }
                assert_eq!(ack.status.as_u16(), 200, "{}", ack.text());
                let auth = Auth::Bearer(&token);
                let beat = heartbeat(&h, &q, &work, auth, &expected("NO_HEARTBEAT")).await.ok();
                assert!(running.lock().unwrap().insert(work.clone()), "{work} is run by two workers at once");
                runs.lock().unwrap().entry(work.clone()).or_default().push(worker);
                let mut last = beat["last_heartbeat"].as_str().unwrap().to_owned();
                for _ in 0..3 {
                    let beat = heartbeat(&h, &q, &work, auth, &expected(&last)).await.ok();
                    last = beat["last_heartbeat"].as_str().unwrap().to_owned();
                }
                assert!(running.lock().unwrap().remove(&work));
                stop(&h, &q, &work, auth, true).await.ok();
            }
        }));
    }
    let all = async {
        for worker in workers {
            worker.await.unwrap();
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(120), all).await.expect("the workers did not drain the queue");
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), n_items);
    for (work, by) in runs.iter() {
        assert_eq!(by.len(), 1, "{work} was run {} times, by workers {by:?}", by.len());
    }
    let listed = q.list(&h).await;
    assert!(listed.iter().all(|item| item["state"] == "stopped"), "{listed:?}");
    let lost_acks = lost_acks.load(std::sync::atomic::Ordering::Relaxed);
    println!("lost acks (claims that overlapped): {lost_acks}");
    assert!(lost_acks >= 3, "the overlapping first claims: only one ack may win");
}

#[tokio::test]
async fn the_sessions_token_reaches_exactly_its_session_and_item() {
    // Goal: the token in the poll's secret authorizes its session's retrieve,
    // events list, stream and tool results, and its item's heartbeat and stop;
    // nothing else: another session or item is 404 (as if missing), other
    // routes are 403, and it expires when its item stops.
    let h = Harness::new();
    let q = Queue::new(&h).await;
    let mine = q.session(&h).await;
    h.tick(5);
    let other = q.session(&h).await;
    let polled = q.poll(&h, "").await.ok();
    assert_eq!(polled["data"]["id"], mine.as_str());
    let token = token_of(&polled);
    let work = id(&polled).to_owned();
    let other_work = id(&q.list(&h).await[0]).to_owned();
    let t = Auth::Bearer(&token);
    q.ack(&h, &work).await.ok();
    heartbeat(&h, &q, &work, t, &expected("NO_HEARTBEAT")).await.ok();

    let call = |method: Method, path: String, body: Option<Value>| {
        let h = &h;
        async move { h.call(method, &path, t, body.as_ref()).await }
    };
    call(Method::GET, format!("/v1/sessions/{mine}"), None).await.ok();
    call(Method::GET, format!("/v1/sessions/{mine}/events"), None).await.ok();
    let stream = call(Method::GET, format!("/v1/sessions/{mine}/events/stream"), None).await;
    assert_eq!(stream.status.as_u16(), 200);
    let session: Value = json!({"id": mine});
    let calls = h.inject(&session, vec![tool_use("bash", Some("allow"))]);
    call(Method::POST, format!("/v1/sessions/{mine}/events"), Some(events_body(vec![tool_result(&calls[0])])))
        .await
        .ok();
    let body = call(Method::POST, format!("/v1/sessions/{mine}/events"), Some(events_body(vec![user_message("hi")])))
        .await
        .error(403, "permission_error");
    assert_eq!(body["error"]["details"]["error_code"], "credential_not_accepted");

    for (method, path) in [
        (Method::GET, format!("/v1/sessions/{other}")),
        (Method::GET, format!("/v1/sessions/{other}/events")),
        (Method::GET, format!("/v1/sessions/{other}/events/stream")),
        (Method::POST, format!("/v1/sessions/{other}/events")),
    ] {
        let body = call(method.clone(), path.clone(), Some(events_body(vec![tool_result(&calls[0])]))).await;
        assert_eq!(body.not_found()["error"]["details"]["error_code"], "session_not_found", "{method} {path}");
    }
    for path in [q.path(&format!("/{other_work}/heartbeat")), q.path(&format!("/{other_work}/stop"))] {
        let body = call(Method::POST, path, None).await.not_found();
        assert_eq!(body["error"]["details"]["error_code"], "work_not_found");
    }
    for (method, path) in [
        (Method::GET, q.path("/poll")),
        (Method::POST, q.path(&format!("/{work}/ack"))),
        (Method::GET, q.path("")),
        (Method::GET, q.path("/stats")),
        (Method::GET, q.path(&format!("/{work}"))),
        (Method::POST, q.path(&format!("/{work}"))),
        (Method::GET, "/v1/agents".to_owned()),
        (Method::GET, "/v1/sessions".to_owned()),
        (Method::GET, format!("/v1/environments/{}", q.env)),
        (Method::POST, format!("/v1/sessions/{mine}/archive")),
        (Method::GET, format!("/x/v1/sessions/{mine}/verify")),
    ] {
        let resp = call(method.clone(), path.clone(), None).await;
        assert_eq!(resp.status.as_u16(), 403, "{method} {path}: {}", resp.text());
        resp.error(403, "permission_error");
    }

    stop(&h, &q, &work, t, true).await.ok();
    call(Method::GET, format!("/v1/sessions/{mine}"), None).await.error(401, "authentication_error");
    let told = heartbeat(&h, &q, &work, t, "").await.ok();
    assert_eq!(told["state"], "stopped", "the worker learns its item stopped");
    stop(&h, &q, &work, t, true).await.error(409, "conflict_error");
}

#[tokio::test]
async fn environment_keys_reach_their_queue_and_its_sessions_only() {
    // Goal: an environment key polls its own environment's queue and serves
    // (reads, answers tool calls of) sessions in that environment; it cannot
    // read other environments, other sessions, or the workspace's objects,
    // cannot converse, and stops working once revoked.
    let h = Harness::new();
    let q = Queue::new(&h).await;
    let mine = q.session(&h).await;
    let second = Queue::new(&h).await;
    let elsewhere = second.session(&h).await;
    let cloud = h.quick_session().await;
    let k = Auth::Bearer(&q.key);
    h.call(Method::GET, &format!("/v1/sessions/{mine}"), k, None).await.ok();
    h.call(Method::GET, &format!("/v1/sessions/{mine}/events"), k, None).await.ok();
    let calls = h.inject(&json!({"id": mine}), vec![tool_use("bash", Some("allow"))]);
    let path = format!("/v1/sessions/{mine}/events");
    h.call(Method::POST, &path, k, Some(&events_body(vec![tool_result(&calls[0])]))).await.ok();
    h.call(Method::POST, &path, k, Some(&events_body(vec![user_message("hi")]))).await.error(403, "permission_error");
    for session in [elsewhere.as_str(), id(&cloud)] {
        for path in [format!("/v1/sessions/{session}"), format!("/v1/sessions/{session}/events")] {
            let body = h.call(Method::GET, &path, k, None).await.not_found();
            assert_eq!(body["error"]["details"]["error_code"], "session_not_found");
        }
    }
    for path in [second.path("/poll"), second.path(""), second.path("/stats")] {
        let body = h.call(Method::GET, &path, k, None).await.not_found();
        assert_eq!(body["error"]["details"]["error_code"], "environment_not_found", "{path}");
    }
    for path in ["/v1/agents", "/v1/environments", "/v1/sessions", &format!("/v1/environments/{}", q.env)] {
        h.call(Method::GET, path, k, None).await.error(403, "permission_error");
    }
    h.call(Method::GET, &q.path("/stats"), k, None).await.ok();

    q.poll(&h, "").await.ok();
    logbook_server::tenancy::revoke_key(h.state.store(), &q.key, h.now()).unwrap();
    let body = q.poll(&h, "").await.error(401, "authentication_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("revoked"), "{body}");
    h.call(Method::GET, &format!("/v1/sessions/{mine}"), k, None).await.error(401, "authentication_error");
    let fresh = env_key(&h, &q.env);
    h.call(Method::GET, &q.path("/stats"), Auth::Bearer(&fresh), None).await.ok();
}

#[tokio::test]
async fn retrieve_update_list_and_stats() {
    let h = Harness::new();
    let q = Queue::new(&h).await;
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(q.session(&h).await);
        h.tick(5);
    }
    let listed = q.list(&h).await;
    let work = id(&listed[0]).to_owned();

    // Retrieve and update take an API key, not the environment key.
    let item = q.retrieve(&h, &work).await;
    assert_eq!(item, listed[0]);
    let path = q.path(&format!("/{work}"));
    h.call(Method::GET, &path, Auth::Bearer(&q.key), None).await.error(403, "permission_error");
    h.call(Method::POST, &path, Auth::Bearer(&q.key), Some(&json!({"metadata": {}})))
        .await
        .error(403, "permission_error");
    let body = h.get(&q.path("/work_01JQ8Z7M3P5R7T9V1X3Z5B7D0E")).await.not_found();
    assert_eq!(body["error"]["details"]["error_code"], "work_not_found");

    let updated = h.post(&path, &json!({"metadata": {"host": "a", "rack": "7"}})).await.ok();
    assert_eq!(updated["metadata"], json!({"host": "a", "rack": "7"}));
    let updated = h.post(&path, &json!({"metadata": {"host": null, "rack": "8"}})).await.ok();
    assert_eq!(updated["metadata"], json!({"rack": "8"}));
    assert_eq!(q.retrieve(&h, &work).await["metadata"], json!({"rack": "8"}));
    for bad in [json!({}), json!({"metadata": null}), json!({"metadata": {"k": 1}}), json!({"metadata": "x"})] {
        h.post(&path, &bad).await.invalid();
    }
    let many: serde_json::Map<String, Value> = (0..17).map(|n| (format!("k{n}"), json!("v"))).collect();
    let body = h.post(&path, &json!({"metadata": many})).await.invalid();
    assert_eq!(body["error"]["details"]["error_code"], "invalid_metadata");

    // The list pages newest first and takes only the environment key.
    let mut seen = Vec::new();
    let mut page = q.worker(&h, Method::GET, "?limit=1", None).await.ok();
    loop {
        seen.extend(ids(&page));
        let Some(next) = page["next_page"].as_str() else { break };
        page = q.worker(&h, Method::GET, &format!("?limit=1&page={next}"), None).await.ok();
    }
    assert_eq!(seen, listed.iter().map(|item| id(item).to_owned()).collect::<Vec<_>>());
    assert_eq!(seen.len(), 3);
    for query in ["?limit=0", "?limit=101", "?page=work_zz", "?page=envs_00"] {
        q.worker(&h, Method::GET, query, None).await.invalid();
    }
    h.get(&q.path("")).await.error(403, "permission_error");

    let stats = q.stats(&h).await;
    assert_eq!(
        stats,
        json!({"type": "work_queue_stats", "depth": 3, "pending": 0, "oldest_queued_at": listed[2]["created_at"], "workers_polling": 0})
    );
}

#[tokio::test]
async fn workers_polling_counts_distinct_workers_over_30_seconds() {
    let h = Harness::new();
    let q = Queue::new(&h).await;
    for worker in ["host-a", "host-b", "host-a"] {
        let request = axum::http::Request::builder()
            .uri(q.path("/poll"))
            .header("anthropic-beta", logbook_server::http::MANAGED_AGENTS_BETA)
            .header("authorization", format!("Bearer {}", q.key))
            .header("anthropic-worker-id", worker)
            .body(axum::body::Body::empty())
            .unwrap();
        h.raw(request).await.ok();
    }
    q.poll(&h, "").await.ok();
    assert_eq!(q.stats(&h).await["workers_polling"], 2, "distinct ids; a poll without one is not counted");
    let with_key = h.call(Method::GET, &q.path("/stats"), Auth::Bearer(&q.key), None).await.ok();
    assert_eq!(with_key["workers_polling"], 2);
    h.tick(30_001);
    assert_eq!(q.stats(&h).await["workers_polling"], 0);
}

#[tokio::test]
async fn workers_polling_do_not_use_up_the_workspace_reads() {
    // Goal: worker calls (polls, acks, heartbeats with worker credentials)
    // draw on their own allowance, not on the workspace's read or create
    // limits (behaviour digest §14 names those for the API's create and read
    // endpoints; the work queue is not among them), so a fleet of idle
    // workers cannot starve the API. Method: a read limit whose burst is 3,
    // twenty empty polls with the environment key, then API reads.
    let h = Harness::with_limits(RateLimits { read_per_minute: 60, ..RateLimits::default() });
    let q = Queue::new(&h).await;
    for n_poll in 0..20 {
        let resp = q.poll(&h, "").await;
        assert_eq!(resp.status.as_u16(), 200, "poll {n_poll}: {}", resp.text());
        assert_eq!(resp.json(), Value::Null);
    }
    for _ in 0..3 {
        h.get("/v1/agents").await.ok();
    }
    h.get("/v1/agents").await.error(429, "rate_limit_error");

    // The workers' own allowance is limited too, and using it up leaves the
    // workspace's reads alone.
    let h = Harness::with_limits(RateLimits { create_per_minute: 0, read_per_minute: 60, work_per_minute: 60 });
    let q = Queue::new(&h).await;
    for _ in 0..3 {
        q.poll(&h, "").await.ok();
    }
    let refused = q.poll(&h, "").await;
    refused.error(429, "rate_limit_error");
    assert_eq!(refused.header("retry-after-ms"), Some("1000"));
    h.get("/v1/agents").await.ok();
}

#[tokio::test]
async fn a_dormant_session_is_queued_again_when_it_gets_new_input() {
    // Goal: once a session's work item stopped, new input (a message, a
    // confirmation, a custom tool result) queues a new item; while one is
    // live, input does not queue another; an interrupt queues nothing (unless
    // the session waits on calls: see
    // a_worker_that_fails_its_item_gets_it_back_only_after_an_interrupt_or_input).
    let h = Harness::new();
    let q = Queue::new(&h).await;
    let session = q.session(&h).await;
    let first = id(&q.list(&h).await[0]).to_owned();
    let path = format!("/v1/sessions/{session}/events");
    h.post(&path, &events_body(vec![user_message("again")])).await.ok();
    assert_eq!(q.list(&h).await.len(), 1, "the item is still live");
    stop(&h, &q, &first, Auth::XApiKey(&h.key_a), true).await.ok();
    h.post(&path, &events_body(vec![json!({"type": "user.interrupt"})])).await.ok();
    assert_eq!(q.list(&h).await.len(), 1, "an interrupt gives no work");
    h.post(&path, &events_body(vec![user_message("back")])).await.ok();
    let listed = q.list(&h).await;
    assert_eq!(listed.len(), 2);
    assert_eq!(
        (listed[0]["state"].as_str(), listed[0]["data"]["id"].as_str()),
        (Some("queued"), Some(session.as_str()))
    );
    assert_ne!(id(&listed[0]), first);
    // Concurrent input queues one item between them.
    stop(&h, &q, id(&listed[0]), Auth::XApiKey(&h.key_a), true).await.ok();
    let bodies: Vec<Value> = (0..4).map(|n| events_body(vec![user_message(&format!("m{n}"))])).collect();
    let sends: Vec<_> = bodies.iter().map(|body| h.post(&path, body)).collect();
    for resp in futures_util::future::join_all(sends).await {
        resp.ok();
    }
    let live: Vec<Value> = q.list(&h).await.into_iter().filter(|item| item["state"] != "stopped").collect();
    assert_eq!(live.len(), 1, "{live:?}");
}

#[tokio::test]
async fn tool_results_answer_only_calls_a_worker_may_run() {
    // Goal: user.tool_result is accepted once for an open agent.tool_use that
    // a worker may run: allowed by its policy, or asking and confirmed (also
    // earlier in the same request); not for a denied call, one awaiting
    // confirmation, a server-side tool (web_fetch, web_search), a call Logbook
    // already answered, or twice in one request; concurrent answers to one
    // call append exactly one.
    let h = Arc::new(Harness::new());
    let q = Queue::new(&h).await;
    let session = q.session(&h).await;
    let handle = json!({"id": session});
    let calls = h.inject(
        &handle,
        vec![
            tool_use("bash", Some("allow")),
            tool_use("bash", Some("ask")),
            tool_use("bash", Some("deny")),
            tool_use("web_fetch", Some("allow")),
            tool_use("web_search", Some("allow")),
            tool_use("read", None),
            tool_use("grep", Some("allow")),
        ],
    );
    let [allowed, asking, denied, fetch, search, unrated, answered] = <[String; 7]>::try_from(calls).unwrap();
    h.inject(
        &handle,
        vec![
            serde_json::from_value(json!({"type": "agent.tool_result", "tool_use_id": answered, "is_error": true}))
                .unwrap(),
        ],
    );
    let path = format!("/v1/sessions/{session}/events");
    let send = |events: Vec<Value>| {
        let (h, path) = (Arc::clone(&h), path.clone());
        async move { h.post(&path, &events_body(events)).await }
    };
    let n_before = h.events(&handle).await.len();
    for (call, code) in [
        (&asking, "tool_use_not_executable"),
        (&denied, "tool_use_not_executable"),
        (&fetch, "tool_use_not_executable"),
        (&search, "tool_use_not_executable"),
    ] {
        let body = send(vec![tool_result(call)]).await.invalid();
        assert_eq!(body["error"]["details"]["error_code"], code, "{body}");
    }
    send(vec![tool_result(&answered)]).await.invalid();
    send(vec![tool_result(&unrated), tool_result(&unrated)]).await.invalid();
    assert_eq!(h.events(&handle).await.len(), n_before, "refused sends append nothing");

    send(vec![tool_result(&allowed)]).await.ok();
    send(vec![tool_result(&allowed)]).await.invalid();
    let confirm = json!({"type": "user.tool_confirmation", "tool_use_id": asking, "result": "allow"});
    send(vec![confirm, tool_result(&asking)]).await.ok();

    let racers: Vec<_> = (0..8).map(|_| tokio::spawn(send(vec![tool_result(&unrated)]))).collect();
    let mut n_ok = 0;
    for racer in racers {
        let resp = racer.await.unwrap();
        if resp.status.as_u16() == 200 {
            n_ok += 1;
        } else {
            resp.invalid();
        }
    }
    assert_eq!(n_ok, 1, "exactly one concurrent answer is accepted");
    let results: Vec<Value> = h
        .events(&handle)
        .await
        .into_iter()
        .filter(|e| e["type"] == "user.tool_result" && e["tool_use_id"] == unrated.as_str())
        .collect();
    assert_eq!(results.len(), 1);
}

#[tokio::test]
async fn healthcheck_items_are_claimed_and_stopped_like_any_item() {
    let h = Harness::new();
    let q = Queue::new(&h).await;
    let path = format!("/x/v1/environments/{}/work/healthcheck", q.env);
    let check = h.post_empty(&path).await.ok();
    assert_eq!(check["data"], json!({"type": "healthcheck", "id": check["id"]}));
    assert_eq!(check["state"], "queued");
    let polled = q.poll(&h, "").await.ok();
    assert_eq!(polled["id"], check["id"]);
    assert_eq!(polled["secret"], Value::Null, "no session, no sessions token");
    q.ack(&h, id(&polled)).await.ok();
    let stopped = stop(&h, &q, id(&polled), Auth::Bearer(&q.key), true).await.ok();
    assert!(stopped["acknowledged_at"].is_string() && stopped["stopped_at"].is_string());
    let cloud = h.env("cloud").await;
    h.post_empty(&format!("/x/v1/environments/{}/work/healthcheck", id(&cloud))).await.invalid();
}

/// How long a stream may take to show an event or to end.
const STREAM_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Opens the session's event stream with `key` as a Bearer credential.
async fn open_stream(h: &Harness, session: &str, key: &str) -> axum::body::Body {
    open_stream_with(h, session, key, "").await
}

/// The same, with a query string (`?...` or empty).
async fn open_stream_with(h: &Harness, session: &str, key: &str, query: &str) -> axum::body::Body {
    use tower::ServiceExt;
    let request = axum::http::Request::get(format!("/v1/sessions/{session}/events/stream{query}"))
        .header("authorization", format!("Bearer {key}"))
        .header("anthropic-beta", logbook_server::http::MANAGED_AGENTS_BETA)
        .body(axum::body::Body::empty())
        .unwrap();
    let response = h.app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    response.into_body()
}

/// Reads a stream until its text shows `needle`; panics if it ends or the deadline passes first.
async fn read_until(body: &mut axum::body::Body, needle: &str) {
    use http_body_util::BodyExt;
    let mut text = String::new();
    let read = async {
        while !text.contains(needle) {
            let frame = body.frame().await.unwrap_or_else(|| panic!("the stream ended before {needle}: {text}"));
            if let Ok(data) = frame.unwrap().into_data() {
                text.push_str(&String::from_utf8_lossy(&data));
            }
        }
    };
    tokio::time::timeout(STREAM_DEADLINE, read).await.unwrap_or_else(|_| panic!("no {needle} within the deadline"));
}

/// Whether the stream ends (pings aside) within the deadline.
async fn ends(body: &mut axum::body::Body) -> bool {
    use http_body_util::BodyExt;
    let drain = async {
        while let Some(frame) = body.frame().await {
            frame.unwrap();
        }
    };
    tokio::time::timeout(STREAM_DEADLINE, drain).await.is_ok()
}

/// A harness whose streams ping every 200 ms (the longest gap between lease
/// checks), and a session whose work item a worker took with a 10 s lease:
/// the queue, the session, the item, its sessions token and its
/// `last_heartbeat`.
struct LeasedSession {
    h: Harness,
    q: Queue,
    session: String,
    work: String,
    token: String,
    last_heartbeat: String,
}

async fn leased_session() -> LeasedSession {
    let config = Config {
        rate_limits: RateLimits { create_per_minute: 0, read_per_minute: 0, work_per_minute: 0 },
        sse_ping_interval: std::time::Duration::from_millis(200),
        ..Config::default()
    };
    let h = Harness::with_config(config);
    let q = Queue::new(&h).await;
    let session = q.session(&h).await;
    let polled = q.poll(&h, "").await.ok();
    let (work, token) = (id(&polled).to_owned(), token_of(&polled));
    q.ack(&h, &work).await.ok();
    let t = Auth::Bearer(&token);
    let beat = heartbeat(&h, &q, &work, t, &format!("{}&desired_ttl_seconds=10", expected("NO_HEARTBEAT"))).await;
    let last_heartbeat = beat.ok()["last_heartbeat"].as_str().unwrap().to_owned();
    LeasedSession { h, q, session, work, token, last_heartbeat }
}

#[tokio::test]
async fn a_stream_opened_with_a_sessions_token_ends_with_its_lease() {
    // Goal: a stream opened with a sessions token lives no longer than the
    // token: it outlives a lease that was renewed, ends when the lease lapses
    // and when the worker releases the item, while an API key's stream of the
    // same session stays open. Method: streams read through the router with a
    // short ping interval (the longest gap between checks); the lease ends by
    // advancing the manual clock, then by a stop; each end is awaited under a
    // deadline, and the API key's stream must still deliver a later event.
    let LeasedSession { h, q, session, work, token, last_heartbeat: last } = leased_session().await;
    let t = Auth::Bearer(&token);
    let mut by_token = open_stream(&h, &session, &token).await;
    let mut by_key = open_stream(&h, &session, &h.key_a).await;
    let session_value = json!({"id": session});

    // Renewed at 9 s for 10 s more: at 18 s the first lease would have lapsed.
    h.tick(9_000);
    let beat = heartbeat(&h, &q, &work, t, &expected(&last)).await.ok();
    assert_eq!(beat["lease_extended"], true);
    h.tick(9_000);
    let call = h.inject(&session_value, vec![tool_use("bash", Some("allow"))]).remove(0);
    read_until(&mut by_token, &call).await;

    h.tick(2_000);
    assert!(ends(&mut by_token).await, "the lease lapsed: the token's stream ends");
    let later = h.inject(&session_value, vec![tool_use("bash", Some("allow"))]).remove(0);
    read_until(&mut by_key, &later).await;

    // The next worker's stream ends when it releases the item.
    let polled = q.poll(&h, "").await.ok();
    assert_eq!(id(&polled), work);
    let token = token_of(&polled);
    q.ack(&h, &work).await.ok();
    heartbeat(&h, &q, &work, Auth::Bearer(&token), &expected("NO_HEARTBEAT")).await.ok();
    let mut by_token = open_stream(&h, &session, &token).await;
    stop(&h, &q, &work, Auth::Bearer(&token), true).await.ok();
    assert!(ends(&mut by_token).await, "the item stopped: the token's stream ends");
    let last = h.inject(&session_value, vec![tool_use("bash", Some("allow"))]).remove(0);
    read_until(&mut by_key, &last).await;
}

#[tokio::test]
async fn a_lease_that_ends_while_its_stream_has_a_backlog_ends_the_stream() {
    // Goal: a sessions token's stream catching up on a backlog ends when the
    // lease does, instead of after the backlog. Method: a backlog of ten
    // stream batches; the token's stream reads three events, the lease lapses
    // by the manual clock, two pings on an API key's stream opened just after
    // it show the check is due; then the token's stream is read to its end
    // under a deadline. (The subscription yields between batches, so this
    // holds even without the check at the top of the stream's loop; that
    // check is for a stream whose previews are always ready: the next test.)
    let LeasedSession { h, session, token, .. } = leased_session().await;
    let mut by_token = open_stream(&h, &session, &token).await;
    let mut by_key = open_stream(&h, &session, &h.key_a).await;
    let session_value = json!({"id": session});
    let backlog = 10 * logbook_server::api::stream::STREAM_BATCH;
    let mut ids = Vec::new();
    for _ in 0..backlog / 8 {
        ids.extend(h.inject(&session_value, (0..8).map(|_| tool_use("bash", Some("allow"))).collect()));
    }
    let last = ids.last().unwrap().clone();
    // The token's stream is under way when the lease lapses.
    read_until(&mut by_token, &ids[2]).await;
    h.tick(11_000);
    read_until(&mut by_key, &last).await;
    for _ in 0..2 {
        read_until(&mut by_key, "event: ping").await;
    }
    let delivered = async {
        use http_body_util::BodyExt;
        let mut n_events = 0;
        while let Some(frame) = by_token.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                n_events += String::from_utf8_lossy(&data).matches("event: agent.tool_use").count();
            }
        }
        n_events
    };
    let delivered = tokio::time::timeout(STREAM_DEADLINE, delivered).await.expect("the token's stream ends");
    assert!(delivered < backlog, "the stream ended with its lease, not after the backlog: {delivered} of {backlog}");
}

#[tokio::test]
async fn a_lease_that_ends_while_previews_keep_coming_ends_the_stream() {
    // Goal: a sessions token's stream whose previews are always ready still
    // ends when its lease does (the stream's select prefers previews, so only
    // the check at the top of its loop sees the lease). Method: the token's
    // stream asks for message previews and is not read while a preview's
    // start and 1,000 deltas are published; two pings on an API key's stream
    // opened after it show the token stream's check is due; the lease lapses
    // by the manual clock; then the token's stream is read to its end under a
    // deadline and must deliver none of the deltas.
    use logbook_server::previews::{Preview, PreviewKind};
    use logbook_store::Read as _;

    let LeasedSession { h, session, token, .. } = leased_session().await;
    let mut by_token = open_stream_with(&h, &session, &token, "?event_deltas%5B%5D=agent.message").await;
    let mut by_key = open_stream(&h, &session, &h.key_a).await;
    let sid: logbook_core::SessionId = session.parse().unwrap();
    let head = h.state.store().head(sid).unwrap();
    let message_id: logbook_core::EventId = h.state.event_id(head.next);
    let previews = h.state.previews();
    let n_deltas = 1_000;
    assert!(n_deltas < logbook_server::previews::PREVIEW_CAPACITY, "no preview is lost to a lag");
    previews.publish(sid, Preview::Start { event_id: message_id, kind: PreviewKind::Message });
    for _ in 0..n_deltas {
        previews.publish(sid, Preview::Delta { event_id: message_id, index: 0, text: "x".into() });
    }
    for _ in 0..2 {
        read_until(&mut by_key, "event: ping").await;
    }
    h.tick(11_000);
    let delivered = async {
        use http_body_util::BodyExt;
        let mut n = 0;
        while let Some(frame) = by_token.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                n += String::from_utf8_lossy(&data).matches("event: event_delta").count();
            }
        }
        n
    };
    let delivered = tokio::time::timeout(STREAM_DEADLINE, delivered).await.expect("the token's stream ends");
    assert_eq!(delivered, 0, "the lease had lapsed before the stream was read");
}

#[tokio::test]
async fn a_deleted_or_archived_sessions_item_is_stopped_with_it() {
    // Goal: deleting or archiving a session stops its work item, as a forced
    // stop would: a worker is never handed the item of a session that no
    // longer exists or takes no events (the SDK worker would fail it on the
    // 404 of GET /v1/sessions/{id}), and `stats.depth` does not count it (a
    // fleet scaled on depth would start workers for nothing). Method: a
    // queued session deleted, another archived; depth, poll and the items
    // after each.
    let h = Harness::new();
    let q = Queue::new(&h).await;
    let session = q.session(&h).await;
    assert_eq!(q.stats(&h).await["depth"], 1);
    h.delete(&format!("/v1/sessions/{session}")).await.ok();
    h.get(&format!("/v1/sessions/{session}")).await.not_found();
    assert_eq!(q.stats(&h).await["depth"], 0, "a deleted session's item is still counted as waiting");
    let polled = q.poll(&h, "").await;
    assert_eq!(polled.text(), "null", "a worker was handed the item of a deleted session: {}", polled.text());
    assert_eq!(q.list(&h).await[0]["state"], "stopped");

    let archived = q.session(&h).await;
    assert_eq!(q.stats(&h).await["depth"], 1);
    h.post_empty(&format!("/v1/sessions/{archived}/archive")).await.ok();
    assert_eq!(q.stats(&h).await["depth"], 0, "an archived session's item is still counted as waiting");
    assert_eq!(q.poll(&h, "").await.text(), "null", "a worker was handed the item of an archived session");
    let items = q.list(&h).await;
    assert_eq!(
        (items[0]["data"]["id"].as_str(), items[0]["state"].as_str()),
        (Some(archived.as_str()), Some("stopped"))
    );
}

#[tokio::test]
async fn items_queued_behind_a_thousand_running_ones_are_counted_and_handed_out() {
    // Goal: however many items are being served (acked: their leases keep
    // them live), the items queued behind them are found by polls and counted
    // by `stats`; a poll's scan is bounded by the queued items it looks at
    // (MAX_POLL_SCAN), not by the running ones. Before the queue had its own
    // markers, a scan of every live item stopped after ~1000, so a fleet of
    // more than ~1000 concurrent workers on one environment starved every new
    // session and `stats` said depth 0 while items waited. Method:
    // MAX_POLL_SCAN + 100 healthcheck items, each polled and acked in turn
    // (every poll must find the next), then a session's item: depth 1, and
    // the next poll hands it out.
    let h = Harness::new();
    let q = Queue::new(&h).await;
    let path = format!("/x/v1/environments/{}/work/healthcheck", q.env);
    let n_items = logbook_server::api::work::queue::MAX_POLL_SCAN + 100;
    for _ in 0..n_items {
        h.post_empty(&path).await.ok();
    }
    // Workers take the items one by one and keep running them (acked).
    for n_taken in 0..n_items {
        let polled = q.poll(&h, "").await;
        if polled.text() == "null" {
            let stats = q.stats(&h).await;
            panic!(
                "poll {n_taken} answered null while {} items were still queued behind {n_taken} running ones (stats: {stats})",
                n_items - n_taken
            );
        }
        q.ack(&h, id(&polled.ok())).await.ok();
    }
    let session = q.session(&h).await;
    assert_eq!(q.stats(&h).await["depth"], 1);
    assert_eq!(q.poll(&h, "").await.ok()["data"]["id"], session.as_str());
}

#[tokio::test]
async fn items_marked_in_the_layout_before_queue_markers_are_still_served() {
    // Goal: a data directory written before queued and leased items had
    // their own markers (one `ws 'l' env work` marker per unstopped item)
    // still works: its queued items are counted and handed out, and a lapse
    // of its leased ones is still noticed (docs/format.md §5, work items).
    // Method: a queued and an acked item whose markers are rewritten into the
    // old layout in the store; stats, a poll, and a poll after the lease ran
    // out.
    use logbook_store::{Direction, ResourceKind, Resources};
    let h = Harness::new();
    let q = Queue::new(&h).await;
    let leased = q.session(&h).await;
    h.tick(5);
    let queued = q.session(&h).await;
    let polled = q.poll(&h, "").await.ok();
    assert_eq!(polled["data"]["id"], leased.as_str());
    let leased_work = id(&polled).to_owned();
    q.ack(&h, &leased_work).await.ok();

    let store = h.state.store();
    let env: logbook_core::EnvironmentId = q.env.parse().unwrap();
    let mut prefix = h.tenant(&h.key_a).prefix();
    for tag in [b'q', b'e'] {
        let mut range = prefix.clone();
        range.push(tag);
        range.extend_from_slice(&env.to_bytes());
        for (key, _) in store.scan_resources(ResourceKind::WorkItem, &range, None, Direction::Forward, 100).unwrap() {
            store.swap_resource(ResourceKind::WorkItem, &key, Some(b""), None).unwrap().unwrap();
        }
    }
    prefix.push(b'l');
    prefix.extend_from_slice(&env.to_bytes());
    for item in q.list(&h).await {
        let work: logbook_core::WorkId = item["id"].as_str().unwrap().parse().unwrap();
        let mut key = prefix.clone();
        key.extend_from_slice(&work.to_bytes());
        store.swap_resource(ResourceKind::WorkItem, &key, None, Some(b"")).unwrap().unwrap();
    }

    assert_eq!(q.stats(&h).await["depth"], 1);
    assert_eq!(q.poll(&h, "").await.ok()["data"]["id"], queued.as_str());
    assert_eq!(q.poll(&h, "").await.text(), "null", "the acked item is not handed out while leased");
    h.tick(301_000);
    let again = q.poll(&h, "").await.ok();
    assert_eq!((id(&again), again["state"].as_str()), (leased_work.as_str(), Some("queued")), "its lease lapsed");
    let old = store.scan_resources(ResourceKind::WorkItem, &prefix, None, Direction::Forward, 100).unwrap();
    assert_eq!(old.len(), 0, "the old markers were converted");
}

#[tokio::test]
async fn a_stopping_item_that_lapses_is_reported_by_the_request_that_finds_it() {
    // Goal: a stopping item whose worker never confirms lapses to stopped,
    // and the request that applies the lapse reports its session (so the
    // handler wakes its runner, which queues a new item if calls still wait):
    // a poll finds it through the lease markers due, without reading the
    // item itself; a lapse back to the queue is not reported. Method: the
    // queue functions a poll uses, called directly (the harness has no
    // runner to wake), after a clock advance.
    use logbook_server::api::work::queue::{self, Lapsed};
    let h = Harness::new();
    let q = Queue::new(&h).await;
    let stopping = q.session(&h).await;
    h.tick(5);
    let requeued = q.session(&h).await;
    let mut works = Vec::new();
    for _ in 0..2 {
        let polled = q.poll(&h, "").await.ok();
        q.ack(&h, id(&polled)).await.ok();
        works.push(id(&polled).to_owned());
    }
    h.post(&q.path(&format!("/{}/stop", works[0])), &json!({"force": false})).await.ok();
    h.tick(301_000);
    let (store, tenant) = (h.state.store(), h.tenant(&h.key_a));
    let env = q.env.parse().unwrap();
    let mut lapsed = Lapsed::default();
    let claimed = queue::claim_next(store, &tenant, env, h.state.now(), queue::DEFAULT_RECLAIM_MS, &mut lapsed);
    let claimed = claimed.unwrap().expect("the lapsed lease is back in the queue");
    assert_eq!(claimed.item.data, queue::WorkData::Session { id: requeued.parse().unwrap() });
    assert_eq!(lapsed.sessions(), [stopping.parse().unwrap()], "only the stopping item's lapse ends it");
    assert_eq!(q.retrieve(&h, &works[0]).await["state"], "stopped");
}

#[tokio::test]
async fn a_worker_that_fails_its_item_gets_it_back_only_after_an_interrupt_or_input() {
    // Goal: a worker that stops its own item unasked (the SDK worker's
    // force-stop with the sessions token after any error) while the session
    // waits on its calls failed them: the runner, which asks for an item
    // whenever calls wait on a worker (`WorkNeed::WorkerCalls`), gets none, so
    // a worker whose failure is deterministic is not handed the session back
    // in an endless poll, ack, fail loop. The session stays idle with
    // `requires_action`; an interrupt (behaviour digest §3.6) or new input
    // queues the work again. A stop the operator asked for (forced, or
    // graceful and confirmed by the worker) is no failure: the runner gets a
    // new item at once. Method: the harness has no runner, so the test calls
    // `ensure_session_work` as the runner does, after each kind of stop.
    let h = Harness::new();
    let q = Queue::new(&h).await;
    let session = q.session(&h).await;
    let tenant = h.tenant(&h.key_a);
    let ensure = |need| {
        let store = h.state.store();
        let (_, stored) = logbook_server::api::sessions::load(store, &tenant, session.parse().unwrap()).unwrap();
        logbook_server::api::work::ensure_session_work(&h.state, store, &tenant, &stored, need).unwrap();
    };
    let take = async || {
        let polled = q.poll(&h, "").await.ok();
        let (work, token) = (id(&polled).to_owned(), token_of(&polled));
        q.ack(&h, &work).await.ok();
        heartbeat(&h, &q, &work, Auth::Bearer(&token), &expected("NO_HEARTBEAT")).await.ok();
        (work, token)
    };
    let handle = json!({"id": session});
    let [call] = <[String; 1]>::try_from(h.inject(&handle, vec![tool_use("bash", Some("allow"))])).unwrap();
    let waiting =
        json!({"type": "session.status_idle", "stop_reason": {"type": "requires_action", "event_ids": [call]}});
    h.inject(&handle, vec![serde_json::from_value(waiting).unwrap()]);
    let calls = WorkNeed::WorkerCalls { newest_call_at: h.now() };

    // The worker fails its item: no new one for the calls, however often the runner asks.
    let (failed, token) = take().await;
    stop(&h, &q, &failed, Auth::Bearer(&token), true).await.ok();
    ensure(calls);
    ensure(calls);
    assert_eq!(q.stats(&h).await["depth"], 0);
    assert_eq!(q.poll(&h, "").await.text(), "null", "the failing worker got its session back");
    // An interrupt queues the work again.
    let path = format!("/v1/sessions/{session}/events");
    h.post(&path, &events_body(vec![json!({"type": "user.interrupt"})])).await.ok();
    assert_eq!(q.stats(&h).await["depth"], 1, "an interrupt re-queues the work");
    // So does new input, after the next failure (this time with the environment key).
    let (failed, _) = take().await;
    stop(&h, &q, &failed, Auth::Bearer(&q.key), true).await.ok();
    ensure(calls);
    assert_eq!(q.stats(&h).await["depth"], 0);
    h.post(&path, &events_body(vec![user_message("try again")])).await.ok();
    assert_eq!(q.stats(&h).await["depth"], 1, "new input re-queues the work");

    // The operator's graceful stop, confirmed by the worker: a new item for the calls.
    let (confirmed, token) = take().await;
    stop(&h, &q, &confirmed, Auth::XApiKey(&h.key_a), false).await.ok();
    stop(&h, &q, &confirmed, Auth::Bearer(&token), true).await.ok();
    ensure(calls);
    assert_eq!(q.stats(&h).await["depth"], 1, "a requested stop is no failure");
    // The operator's forced stop: likewise.
    let (forced, _) = take().await;
    stop(&h, &q, &forced, Auth::XApiKey(&h.key_a), true).await.ok();
    ensure(calls);
    assert_eq!(q.stats(&h).await["depth"], 1);
    let items = q.list(&h).await;
    assert_eq!(items.len(), 5, "one item per stop, none for the repeated asks: {items:?}");
}

#[tokio::test]
async fn input_whose_request_is_dropped_once_submitted_still_queues_the_work() {
    // Goal: what follows a durable send (a self-hosted session's work item,
    // the runner's wake-up) happens even if the request is dropped while the
    // append becomes durable (its client gone, its timeout): the input is in
    // the log, so something must act on it. Method: a session whose worker
    // failed its item (so only input re-queues it, see the test above); a
    // message's request polled once (submitted, waiting on durability) and
    // dropped; the item must still be queued.
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;
    let h = Harness::new();
    let q = Queue::new(&h).await;
    let session = q.session(&h).await;
    let polled = q.poll(&h, "").await.ok();
    let (work, token) = (id(&polled).to_owned(), token_of(&polled));
    q.ack(&h, &work).await.ok();
    heartbeat(&h, &q, &work, Auth::Bearer(&token), &expected("NO_HEARTBEAT")).await.ok();
    stop(&h, &q, &work, Auth::Bearer(&token), true).await.ok();
    assert_eq!(q.stats(&h).await["depth"], 0);

    let body = events_body(vec![user_message("are you there?")]);
    let request = Request::post(format!("/v1/sessions/{session}/events"))
        .header("anthropic-beta", logbook_server::http::MANAGED_AGENTS_BETA)
        .header("x-api-key", &h.key_a)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let mut send = Box::pin(h.app.clone().oneshot(request));
    let first = futures_util::poll!(&mut send);
    drop(send);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while q.stats(&h).await["depth"] != 1 {
        assert!(std::time::Instant::now() < deadline, "no item for the input of a dropped send ({first:?})");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_worker_releasing_its_item_before_any_call_waits_is_no_failure_of_later_calls() {
    // Goal (found by review of ebd3c8a): a worker's unasked stop sets
    // `stopped_by_worker` whatever the session is doing,
    // though the field's own doc says a worker "that stops its item while
    // calls still wait on it failed them". A worker that releases its item
    // while no call waits on it (the SDK worker force-stops its item on
    // SIGTERM, or after idling out at the end of a turn; here mid-turn, the
    // model still answering) failed nothing, yet the flag stays on the item:
    // when the model then asks for `bash`, the runner's
    // `ensure_session_work(WorkerCalls)` queues nothing and the session sits
    // idle with `requires_action` for a call no worker will ever be handed,
    // until the user interrupts or sends something. Method: as the test
    // above, the runner's ensure called directly (the harness has no runner).
    let h = Harness::new();
    let q = Queue::new(&h).await;
    let session = q.session(&h).await;
    let tenant = h.tenant(&h.key_a);
    let handle = json!({"id": session});
    // A worker takes the session's item; a turn starts, with no call yet.
    let polled = q.poll(&h, "").await.ok();
    let (work, token) = (id(&polled).to_owned(), token_of(&polled));
    q.ack(&h, &work).await.ok();
    heartbeat(&h, &q, &work, Auth::Bearer(&token), &expected("NO_HEARTBEAT")).await.ok();
    let running: Event = serde_json::from_value(json!({"type": "session.status_running"})).unwrap();
    h.inject(&handle, vec![running]);
    // The worker is scaled down (SIGTERM): it releases its item. No call waits.
    stop(&h, &q, &work, Auth::Bearer(&token), true).await.ok();
    h.tick(1000);
    // The model now asks for bash: the call waits on a worker.
    let [call] = <[String; 1]>::try_from(h.inject(&handle, vec![tool_use("bash", Some("allow"))])).unwrap();
    let waiting =
        json!({"type": "session.status_idle", "stop_reason": {"type": "requires_action", "event_ids": [call]}});
    h.inject(&handle, vec![serde_json::from_value(waiting).unwrap()]);
    let store = h.state.store();
    let (_, stored) = logbook_server::api::sessions::load(store, &tenant, session.parse().unwrap()).unwrap();
    let need = WorkNeed::WorkerCalls { newest_call_at: h.now() };
    logbook_server::api::work::ensure_session_work(&h.state, store, &tenant, &stored, need).unwrap();
    assert_eq!(
        q.stats(&h).await["depth"],
        1,
        "a call made after its worker released the item gets no worker: the session waits forever"
    );
}

#[tokio::test]
async fn a_runner_step_that_began_before_an_archive_queues_no_item_after_it() {
    // Defect (review of 1cb09cb/ebd3c8a, work/mod.rs `ensure_session_work`,
    // queue.rs `ensure_session_item`): archiving stops a self-hosted
    // session's item (`stop_session_work`, as an operator's forced stop), but
    // nothing stops the session's runner from queueing a new one right
    // after: a runner step that read the log before the
    // `session.status_terminated` (woken by a worker's answer to one of two
    // calls, say) ends with `ensure_work` (step.rs) for the call still
    // waiting, and `ensure_session_item` replaces an operator-stopped item
    // for an archived session as for any other. The archived session's item
    // is handed to a worker and counted in `stats.depth` (the very thing
    // 1cb09cb prevents). Method: a session waiting on a worker's call is
    // archived; then the runner's call, as its late step makes it.
    let h = Harness::new();
    let q = Queue::new(&h).await;
    let session = q.session(&h).await;
    let tenant = h.tenant(&h.key_a);
    let handle = json!({"id": session});
    let [call] = <[String; 1]>::try_from(h.inject(&handle, vec![tool_use("bash", Some("allow"))])).unwrap();
    let waiting =
        json!({"type": "session.status_idle", "stop_reason": {"type": "requires_action", "event_ids": [call]}});
    h.inject(&handle, vec![serde_json::from_value(waiting).unwrap()]);
    h.post_empty(&format!("/v1/sessions/{session}/archive")).await.ok();
    assert_eq!(q.stats(&h).await["depth"], 0);
    // The runner's step that read the log before the archive ends now.
    let store = h.state.store();
    let (_, stored) = logbook_server::api::sessions::load(store, &tenant, session.parse().unwrap()).unwrap();
    let need = WorkNeed::WorkerCalls { newest_call_at: h.now() };
    logbook_server::api::work::ensure_session_work(&h.state, store, &tenant, &stored, need).unwrap();
    assert_eq!(q.stats(&h).await["depth"], 0, "an archived session's item was queued again");
    assert_eq!(q.poll(&h, "").await.text(), "null", "a worker was handed the item of an archived session");
}

/// Goal: only an environment key may poll (the route's `Access`), whatever
/// the method. The guard looks a request's rule up by (method, route), and
/// the table lists GET only: a HEAD falls back to the rule of an unknown
/// method, which takes API keys, and axum serves HEAD with the GET handler.
/// So a workspace API key that sends `HEAD .../work/poll` claims the next
/// item, and the answer (its `secret` included) is thrown away: the item
/// sits claimed by nobody until a worker reclaims it.
/// Method: queue an item, HEAD the poll with the API key, then poll with
/// the environment key.
#[tokio::test]
async fn an_api_key_cannot_claim_work_by_polling_with_head() {
    let h = Harness::new();
    let q = Queue::new(&h).await;
    let session = q.session(&h).await;
    let head = h.call(Method::HEAD, &q.path("/poll"), Auth::XApiKey(&h.key_a), None).await;
    assert_eq!(head.status.as_u16(), 403, "HEAD poll with an API key: {} {:?}", head.status, head.headers);
    let item = q.poll(&h, "").await.ok();
    assert_eq!(item["data"]["id"], session.as_str(), "the item is still queued for the workers: {item}");
}
