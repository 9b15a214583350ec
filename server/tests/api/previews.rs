//! Stream-only previews (`event_start` / `event_delta`) on the SSE stream.
//!
//! Goal: a stream that asked for `event_deltas[]=agent.message` gets
//! `event_start` once per id, then deltas in order, then the buffered event
//! last; a stream that did not ask gets only the event; thinking previews are
//! start-only; previews of an id whose event was already delivered are
//! dropped. Method: publish previews through the server's preview hub as the
//! runner does, inject the final event through the store, read the SSE body.

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use logbook_core::event::{AgentMessage, ContentBlock, Event};
use logbook_core::{Entry, EventId, SessionId};
use logbook_server::previews::{Preview, PreviewKind};
use logbook_store::{Append, Read};
use tower::ServiceExt;

use crate::harness::{Harness, id};

/// Reads SSE frames from a response body until `n` non-ping frames arrived.
async fn frames(body: &mut Body, n: usize) -> Vec<(String, serde_json::Value)> {
    let mut text = String::new();
    let mut out = Vec::new();
    while out.len() < n {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("no frame within the deadline")
            .expect("stream ended")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let event = block.lines().find_map(|l| l.strip_prefix("event: ")).unwrap_or("").to_owned();
            let data = block.lines().find_map(|l| l.strip_prefix("data: ")).unwrap_or("null");
            if event != "ping" && !event.is_empty() {
                out.push((event, serde_json::from_str(data).unwrap()));
            }
        }
    }
    out
}

async fn open(h: &Harness, session: &str, query: &str) -> Body {
    let request = Request::get(format!("/v1/sessions/{session}/events/stream{query}"))
        .header("x-api-key", &h.key_a)
        .header("anthropic-beta", "managed-agents-2026-04-01")
        .body(Body::empty())
        .unwrap();
    let response = h.app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    response.into_body()
}

#[tokio::test]
async fn previews_come_before_their_event_and_only_when_asked() {
    let h = Harness::new();
    let session = h.quick_session().await;
    let sid: SessionId = id(&session).parse().unwrap();
    let mut with_deltas =
        open(&h, id(&session), "?event_deltas%5B%5D=agent.message&event_deltas%5B%5D=agent.thinking").await;
    let mut plain = open(&h, id(&session), "").await;

    let head = h.state.store().head(sid).unwrap();
    let thinking_id: EventId = h.state.event_id(head.next);
    let message_id: EventId = h.state.event_id(logbook_core::Seq::new(head.next.get() + 1));
    let previews = h.state.previews();
    previews.publish(sid, Preview::Start { event_id: thinking_id, kind: PreviewKind::Thinking });
    // A delta before its start is never forwarded.
    previews.publish(sid, Preview::Delta { event_id: message_id, index: 0, text: "lost".into() });
    previews.publish(sid, Preview::Start { event_id: message_id, kind: PreviewKind::Message });
    previews.publish(sid, Preview::Start { event_id: message_id, kind: PreviewKind::Message });
    previews.publish(sid, Preview::Delta { event_id: message_id, index: 0, text: "Hel".into() });
    previews.publish(sid, Preview::Delta { event_id: message_id, index: 0, text: "lo".into() });
    let final_event = Event::AgentMessage(AgentMessage { content: vec![ContentBlock::Text { text: "Hello".into() }] });
    // The runner picks event ids before streaming and appends with them.
    let entries = [
        Entry { id: thinking_id, event: Event::AgentThinking(logbook_core::event::AgentThinking {}), at: h.now() },
        Entry { id: message_id, event: final_event, at: h.now() },
    ];
    h.state.store().append(sid, head.next, &entries).unwrap();

    let got = frames(&mut with_deltas, 6).await;
    let kinds: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["event_start", "event_start", "event_delta", "event_delta", "agent.thinking", "agent.message"]);
    assert_eq!(got[0].1["event"], serde_json::json!({"type": "agent.thinking", "id": thinking_id.to_string()}));
    assert_eq!(got[1].1["event"]["id"], message_id.to_string());
    assert_eq!(
        got[2].1["delta"],
        serde_json::json!({"type": "content_delta", "index": 0, "content": {"type": "text", "text": "Hel"}})
    );
    assert_eq!(got[3].1["event_id"], message_id.to_string());
    assert_eq!(got[5].1["content"][0]["text"], "Hello");

    // A preview of an id whose event was delivered is dropped: the next frame
    // is the next event.
    previews.publish(sid, Preview::Delta { event_id: message_id, index: 0, text: "late".into() });
    h.inject(&session, vec![Event::AgentThinking(logbook_core::event::AgentThinking {})]);
    let next = frames(&mut with_deltas, 1).await;
    assert_eq!(next[0].0, "agent.thinking");

    let plain_frames = frames(&mut plain, 2).await;
    assert_eq!(plain_frames.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["agent.thinking", "agent.message"]);
}

/// Goal: previews keep their place in the turn (behaviour digest §3.4:
/// `span.model_request_start` → previews → buffered `agent.message`): a
/// stream that has not yet delivered the events appended before a preview
/// was published (a client that read slowly for a moment, or one resuming
/// with `Last-Event-ID`) sends those events first. Method: the model request's
/// start is durable before its previews are published; the stream's body is
/// read only afterwards.
#[tokio::test]
async fn previews_do_not_overtake_events_appended_before_them() {
    let h = Harness::new();
    let session = h.quick_session().await;
    let sid: SessionId = id(&session).parse().unwrap();
    let mut stream = open(&h, id(&session), "?event_deltas%5B%5D=agent.message").await;

    // The runner appends the request's start, then streams the model's text.
    h.inject(&session, vec![Event::SpanModelRequestStart(logbook_core::event::SpanModelRequestStart {})]);
    let head = h.state.store().head(sid).unwrap();
    let message_id: EventId = h.state.event_id(head.next);
    let previews = h.state.previews();
    // As the runner publishes them: after what is durable when the block starts.
    previews.publish_after(sid, head.next, Preview::Start { event_id: message_id, kind: PreviewKind::Message });
    previews.publish_after(sid, head.next, Preview::Delta { event_id: message_id, index: 0, text: "Hi".into() });
    let final_event = Event::AgentMessage(AgentMessage { content: vec![ContentBlock::Text { text: "Hi".into() }] });
    h.state.store().append(sid, head.next, &[Entry { id: message_id, event: final_event, at: h.now() }]).unwrap();

    let got = frames(&mut stream, 4).await;
    let kinds: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        ["span.model_request_start", "event_start", "event_delta", "agent.message"],
        "the previews went out before the request's start, which was durable before they were published"
    );
}
