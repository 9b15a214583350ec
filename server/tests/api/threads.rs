//! Session threads (API digest §2.7, §3.5): every session has one primary
//! thread, which is all Logbook runs; its status, usage, events and stream
//! are the session's.

use axum::body::Body;
use axum::http::{Method, Request};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use crate::harness::{Harness, events_body, id, user_message};

/// The primary thread's id for `session` (the session's, with `sthr_`).
fn thread_of(session: &Value) -> String {
    id(session).replacen("sesn_", "sthr_", 1)
}

/// Goal: a session's threads list is its primary thread, shaped as the
/// SDK's `BetaManagedAgentsSessionThread` with the session's status, agent
/// (without the roster) and times, and retrieve answers the same object.
#[tokio::test]
async fn a_session_lists_its_primary_thread() {
    let h = Harness::new();
    let session = h.quick_session().await;
    let sid = id(&session);
    let page = h.get(&format!("/v1/sessions/{sid}/threads")).await.ok();
    assert_eq!(page["next_page"], Value::Null);
    let data = page["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{page}");
    let thread = &data[0];
    assert_eq!(thread["id"], json!(thread_of(&session)));
    assert_eq!(thread["type"], "session_thread");
    assert_eq!(thread["session_id"], json!(sid));
    assert_eq!(thread["parent_thread_id"], Value::Null);
    assert_eq!(thread["status"], session["status"]);
    assert_eq!(thread["created_at"], session["created_at"]);
    assert_eq!(thread["agent"]["id"], session["agent"]["id"]);
    assert_eq!(thread["agent"]["type"], "agent");
    assert!(thread["agent"].get("multiagent").is_none(), "the roster is read from the session: {thread}");
    let one = h.get(&format!("/v1/sessions/{sid}/threads/{}", thread_of(&session))).await.ok();
    assert_eq!(&one, thread);

    // statuses[] filters; a bad status, limit or cursor is a 400.
    let idle = h.get(&format!("/v1/sessions/{sid}/threads?statuses[]=idle")).await.ok();
    assert_eq!(idle["data"].as_array().map(Vec::len), Some(1), "{idle}");
    let running = h.get(&format!("/v1/sessions/{sid}/threads?statuses[]=running&statuses[]=terminated")).await.ok();
    assert_eq!(running["data"], json!([]));
    h.get(&format!("/v1/sessions/{sid}/threads?statuses[]=asleep")).await.invalid();
    h.get(&format!("/v1/sessions/{sid}/threads?limit=1001")).await.invalid();
    h.get(&format!("/v1/sessions/{sid}/threads?page=abc")).await.invalid();
}

/// Goal: a thread that is not the session's primary thread is a 404, as a
/// missing one: another session's primary thread, an unknown id, a malformed
/// one.
#[tokio::test]
async fn other_threads_are_not_found() {
    let h = Harness::new();
    let session = h.quick_session().await;
    let other = h.quick_session().await;
    let sid = id(&session);
    for thread in [thread_of(&other), "sthr_01JQ8Z7M3P5R7T9V1X3Z5B7D0C".to_owned(), "nonsense".to_owned()] {
        for path in ["", "/events"] {
            let resp = h.get(&format!("/v1/sessions/{sid}/threads/{thread}{path}")).await;
            resp.not_found();
            assert_eq!(resp.json()["error"]["details"]["error_code"], "session_thread_not_found", "{}", resp.text());
        }
    }
}

/// Goal: the primary thread's events are the session's, page for page.
#[tokio::test]
async fn the_primary_threads_events_are_the_sessions() {
    let h = Harness::new();
    let session = h.quick_session().await;
    let sid = id(&session);
    for text in ["one", "two", "three"] {
        h.post(&format!("/v1/sessions/{sid}/events"), &events_body(vec![user_message(text)])).await.ok();
    }
    let of_session = h.get(&format!("/v1/sessions/{sid}/events?limit=2")).await.ok();
    let of_thread = h.get(&format!("/v1/sessions/{sid}/threads/{}/events?limit=2", thread_of(&session))).await.ok();
    assert_eq!(of_thread, of_session);
    let cursor = of_thread["next_page"].as_str().unwrap();
    let next = h.get(&format!("/v1/sessions/{sid}/threads/{}/events?page={cursor}", thread_of(&session))).await.ok();
    assert_eq!(next, h.get(&format!("/v1/sessions/{sid}/events?page={cursor}")).await.ok());
}

/// Goal: the primary thread streams (an SSE response), and is not archived
/// on its own: a 400 saying to archive the session.
#[tokio::test]
async fn the_primary_thread_streams_and_is_archived_with_its_session() {
    let h = Harness::new();
    let session = h.quick_session().await;
    let sid = id(&session);
    let thread = thread_of(&session);
    let stream = h.get(&format!("/v1/sessions/{sid}/threads/{thread}/stream")).await;
    assert_eq!(stream.status.as_u16(), 200);
    assert_eq!(stream.header("content-type"), Some("text/event-stream"));
    let archived = h.post_empty(&format!("/v1/sessions/{sid}/threads/{thread}/archive")).await;
    let body = archived.invalid();
    assert_eq!(body["error"]["details"]["error_code"], "primary_thread");
    assert_eq!(h.get(&format!("/v1/sessions/{sid}")).await.ok()["archived_at"], Value::Null);
}

/// Goal (behaviour digest §1): without the Managed Agents beta the thread
/// routes "don't exist": 404, where other routes answer 400.
#[tokio::test]
async fn thread_routes_are_not_found_without_the_beta() {
    let h = Harness::new();
    let session = h.quick_session().await;
    let sid = id(&session);
    let without_beta = |path: String| {
        Request::builder().method(Method::GET).uri(path).header("x-api-key", &h.key_a).body(Body::empty()).unwrap()
    };
    let resp = h.raw(without_beta(format!("/v1/sessions/{sid}/threads"))).await;
    resp.not_found();
    h.raw(without_beta(format!("/v1/sessions/{sid}/events"))).await.invalid();
}
