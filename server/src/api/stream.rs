//! `GET /v1/sessions/{id}/events/stream`: the session's events over SSE.
//!
//! Live from the moment of connecting (the SDK's recipe: open the stream, list
//! the history, dedupe by id), or, with `Last-Event-ID`, from just after that
//! event (an extension raw-HTTP clients need). Every frame has an `event:` line
//! (the SDK drops frames without one) and persisted events an `id:` line. Idle
//! streams send `event: ping`. The stream ends after `session.status_terminated`
//! or `session.deleted`, and when the server shuts down.
//!
//! A stream opened with a self-hosted worker's sessions token lives no longer
//! than the token: its claim's hold on the work item is checked again at least
//! every ping interval, and when the lease is due to expire (by the injected
//! clock), and the stream ends once the lease lapsed, was released or went to
//! another claim. It ends without an error frame, as at shutdown: the
//! worker's reconnect is answered 401 (the token expired), which the SDK
//! treats as final. API keys and environment keys change only offline, so
//! their streams are not checked again.
//!
//! Memory per connection is bounded: the stream is pulled by the connection.
//! Records are read from the store only when the socket takes more, in batches
//! of at most [`STREAM_BATCH`] records and [`STREAM_BATCH_BYTES`] bytes (one
//! larger event alone), so a client that stops reading costs a subscription
//! and one bounded batch, and its kernel socket buffers; the TCP user timeout
//! set on accepted sockets then closes it.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use std::collections::HashSet;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use logbook_core::event::Event;
use logbook_core::{EventId, EventType, Seq, Timestamp};
use logbook_store::{Read, Subscribe, Subscription};

use super::error::ApiError;
use super::events::find_event;
use super::sessions::{self, Status};
use super::wire::Query;
use super::work::access::{self, Hold};
use crate::previews::{PREVIEW_CAPACITY, Preview, PreviewKind, Published};
use crate::state::AppState;
use crate::tenancy::{KeyScope, Principal, Tenant};

/// Records read from the store per step of a stream.
pub const STREAM_BATCH: usize = 64;
/// Most bytes of events one read of a stream takes from the store (at least
/// one event): what a client that stops reading makes its connection hold,
/// besides the socket's buffers (reliability goal G-S3: ≤ 256 KiB).
pub const STREAM_BATCH_BYTES: usize = 256 * 1024;
/// The `retry-after` of a stream refused because its workspace holds the
/// most streams it may.
const STREAM_SLOT_RETRY_MS: u64 = 1_000;
/// Most `event_deltas[]` values.
pub const MAX_EVENT_DELTAS: usize = 100;
/// Shortest wait between two checks of a sessions token's lease, so that a
/// lease due any moment (or a clock a little behind tokio's) is not polled in
/// a tight loop.
pub const LEASE_CHECK_FLOOR: Duration = Duration::from_millis(100);

pub async fn stream(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Extension(principal): Extension<Principal>,
    Path(session_id): Path<String>,
    query: Query,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = sessions::parse_session_id(&session_id)?;
    let deltas = query.all("event_deltas");
    if deltas.len() > MAX_EVENT_DELTAS {
        return Err(ApiError::invalid(format!("event_deltas: at most {MAX_EVENT_DELTAS} values")));
    }
    if let Some(bad) = deltas.iter().find(|d| **d != "agent.message" && **d != "agent.thinking") {
        return Err(ApiError::invalid(format!("event_deltas: must be agent.message or agent.thinking, got {bad:?}")));
    }
    let last_event_id =
        match headers.get("last-event-id").map(|v| v.to_str()) {
            None => None,
            Some(Ok("")) => None,
            Some(Ok(raw)) => Some(raw.trim().parse::<EventId>().map_err(|_| {
                ApiError::invalid(format!("Last-Event-ID: {raw:?} is not an event id of this session"))
            })?),
            Some(Err(_)) => return Err(ApiError::invalid("Last-Event-ID: not a valid header value")),
        };
    let now = state.now();
    let (from, finished, hold) = state
        .blocking(move |store| {
            // The head before the session: an archive or delete changes the
            // session before it appends, so a session read as live has its
            // closing event, if any, at or past this head.
            let head = sessions::head_of(store, &tenant, id)?;
            let (_, session) = sessions::load(store, &tenant, id)?;
            let from = match last_event_id {
                // Live only: start at the durable head as of now.
                None => head,
                Some(event_id) => match find_event(store, id, event_id)? {
                    Some((seq, _)) => Seq::new(seq.get() + 1),
                    None => {
                        return Err(ApiError::invalid(format!(
                            "Last-Event-ID: {event_id} is not an event of session {id}"
                        )));
                    }
                },
            };
            // A stream that starts past the session's closing event (live on
            // a terminated session, or resumed after that event) ends at once
            // instead of pinging forever; one before it delivers it and ends.
            let closed_before = store
                .last_of_types(id, &[EventType::SessionStatusTerminated, EventType::SessionDeleted])?
                .is_some_and(|record| record.seq() < from);
            let finished = closed_before || (session.status == Status::Terminated && last_event_id.is_none());
            // Read after the guard's check: a lease may have ended since.
            let hold = access::hold(store, &principal, now)?;
            Ok((from, finished, hold))
        })
        .await?;
    let lease = match (principal.scope, hold) {
        (_, Hold::Ended) => return Err(ApiError::unauthenticated(access::TOKEN_EXPIRED)),
        (KeyScope::WorkSession { .. }, Hold::Held { until }) => {
            Some(LeaseWatch { principal, next_check: next_lease_check(state.config().sse_ping_interval, until, now) })
        }
        (KeyScope::Workspace | KeyScope::Environment { .. }, Hold::Held { .. }) => None,
    };
    let slot = state.hold(tenant.workspace, crate::state::Held::Stream).ok_or_else(|| {
        ApiError::limited(
            format!(
                "this workspace has {} event streams open, the most it may; close one, or retry later",
                state.config().max_streams_per_workspace
            ),
            STREAM_SLOT_RETRY_MS,
        )
    })?;
    // Previews are subscribed before reading anything, so none published from
    // now on is missed; they are ephemeral and never replayed.
    let want = Wanted { message: deltas.contains(&"agent.message"), thinking: deltas.contains(&"agent.thinking") };
    let previews = (want.message || want.thinking).then(|| state.previews().subscribe(id));
    let subscription = state.store().subscribe(id, from);
    let worker = crate::api::events::is_worker(&principal);
    let body = events(subscription, previews, want, Viewer { lease, worker }, state.clone(), finished, slot);
    let keep_alive =
        KeepAlive::new().interval(state.config().sse_ping_interval).event(SseEvent::default().event("ping").data("{}"));
    let mut response = Sse::new(body).keep_alive(keep_alive).into_response();
    let headers = response.headers_mut();
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// Which previews a stream asked for.
#[derive(Debug, Clone, Copy)]
struct Wanted {
    message: bool,
    thinking: bool,
}

/// The sessions token a stream was opened with, and when to check next that
/// its claim still holds the work item.
#[derive(Debug)]
struct LeaseWatch {
    principal: Principal,
    next_check: tokio::time::Instant,
}

/// When to check a lease again: after `every` (the ping interval), or when
/// it is due to expire, if sooner (but not sooner than [`LEASE_CHECK_FLOOR`]).
fn next_lease_check(every: Duration, until: Option<Timestamp>, now: Timestamp) -> tokio::time::Instant {
    let wait = until.map_or(every, |until| {
        let left = u64::try_from(until.unix_micros().saturating_sub(now.unix_micros())).unwrap_or(0);
        Duration::from_micros(left).max(LEASE_CHECK_FLOOR).min(every)
    });
    tokio::time::Instant::now() + wait
}

/// Most ids a stream remembers as previewed or finished; beyond it the sets
/// are cleared (at worst a very late delta of an old id is dropped).
const MAX_TRACKED_IDS: usize = 10_000;

struct StreamState {
    subscription: Subscription,
    previews: Option<broadcast::Receiver<Published>>,
    /// Previews received before the stream delivered the events they follow
    /// (at most [`PREVIEW_CAPACITY`]), in order.
    held: std::collections::VecDeque<Published>,
    want: Wanted,
    /// Ids whose `event_start` this stream sent and whose final event it has not.
    started: HashSet<EventId>,
    /// Ids whose previews were shed after a lag: no more deltas for them.
    shed: HashSet<EventId>,
    /// Ids whose final event this stream delivered: nothing more for them.
    finished: HashSet<EventId>,
    pending: std::collections::VecDeque<SseEvent>,
    state: AppState,
    shutdown: tokio::sync::watch::Receiver<bool>,
    /// Set when a sessions token opened the stream.
    lease: Option<LeaseWatch>,
    /// Whether a worker's credential opened the stream (see
    /// `events::as_seen_by_worker`).
    worker: bool,
    done: bool,
    _open: OpenStream,
    /// Counts the stream against its workspace's open streams.
    _slot: crate::state::HeldSlot,
}

/// Counts open streams for `/metrics`; decrements when the stream is dropped.
struct OpenStream(AppState);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.metrics().sse_streams_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Who reads a stream: a sessions token's lease to keep checking, and
/// whether it is a worker's credential (see `events::as_seen_by_worker`).
struct Viewer {
    lease: Option<LeaseWatch>,
    worker: bool,
}

fn events(
    subscription: Subscription,
    previews: Option<broadcast::Receiver<Published>>,
    want: Wanted,
    viewer: Viewer,
    state: AppState,
    finished: bool,
    slot: crate::state::HeldSlot,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    state.metrics().sse_streams_open.fetch_add(1, Ordering::Relaxed);
    let initial = StreamState {
        subscription,
        previews,
        held: std::collections::VecDeque::new(),
        want,
        started: HashSet::new(),
        shed: HashSet::new(),
        finished: HashSet::new(),
        pending: std::collections::VecDeque::new(),
        shutdown: state.shutdown(),
        lease: viewer.lease,
        worker: viewer.worker,
        _open: OpenStream(state.clone()),
        _slot: slot,
        state,
        done: finished,
    };
    stream::unfold(initial, |mut st| async move {
        loop {
            if let Some(event) = st.pending.pop_front() {
                st.state.metrics().sse_events_sent.fetch_add(1, Ordering::Relaxed);
                return Some((Ok(event), st));
            }
            if st.done || *st.shutdown.borrow() {
                return None;
            }
            // Checked here, not only when the select below wakes for it: a
            // stream catching up on a backlog, or fed previews, always has a
            // ready arm before the check's.
            if st.lease.as_ref().is_some_and(|lease| lease.next_check <= tokio::time::Instant::now())
                && !st.lease_holds().await
            {
                return None;
            }
            let batch = tokio::select! {
                // Previews first: those published before an event was appended
                // go out before it (those published after events this stream
                // has not delivered yet wait for them: `held`).
                biased;
                preview = next_preview(&mut st.previews) => {
                    st.receive_preview(preview);
                    continue;
                }
                batch = st.subscription.next_batch_within(STREAM_BATCH, STREAM_BATCH_BYTES) => batch,
                _ = st.shutdown.changed() => return None,
                // Checked at the top of the loop.
                () = lease_check_due(st.lease.as_ref()) => continue,
            };
            match batch {
                Ok(Some(records)) => {
                    for record in records {
                        st.release_held(record.seq());
                        match record.entry() {
                            Ok(entry) => {
                                if !entry.event.event_type().is_public() {
                                    continue;
                                }
                                let entry =
                                    if st.worker { crate::api::events::as_seen_by_worker(entry) } else { entry };
                                let event_type = entry.event.event_type();
                                let closes =
                                    matches!(entry.event, Event::SessionStatusTerminated(_) | Event::SessionDeleted(_));
                                st.note_final(entry.id);
                                match serde_json::to_string(&entry) {
                                    Ok(json) => st.pending.push_back(
                                        SseEvent::default()
                                            .event(event_type.as_str())
                                            .id(entry.id.to_string())
                                            .data(json),
                                    ),
                                    Err(err) => {
                                        st.pending.push_back(error_event(&format!("cannot encode event: {err}")));
                                        st.done = true;
                                    }
                                }
                                if closes {
                                    st.done = true;
                                    break;
                                }
                            }
                            Err(err) => {
                                tracing::error!(error = %err, "undecodable record on a stream");
                                st.pending.push_back(error_event("an event of this session could not be read"));
                                st.done = true;
                                break;
                            }
                        }
                    }
                    let position = st.subscription.position();
                    st.release_held(position);
                }
                Ok(None) => return None,
                Err(err) => {
                    tracing::error!(error = %err, "stream read failed");
                    st.pending.push_back(error_event(&ApiError::from(err).message));
                    st.done = true;
                }
            }
        }
    })
}

/// The next preview, or never when the stream takes none.
async fn next_preview(receiver: &mut Option<broadcast::Receiver<Published>>) -> Result<Published, RecvError> {
    match receiver {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// Resolves when the stream's lease is due for a check; never without one.
async fn lease_check_due(lease: Option<&LeaseWatch>) {
    match lease {
        Some(lease) => tokio::time::sleep_until(lease.next_check).await,
        None => std::future::pending().await,
    }
}

impl StreamState {
    /// Whether the sessions token that opened the stream still holds its
    /// work item; schedules the next check if so. A failed read ends the
    /// stream too (the reconnect is checked afresh).
    async fn lease_holds(&mut self) -> bool {
        let Some(lease) = self.lease.as_mut() else { return true };
        let principal = lease.principal;
        let now = self.state.now();
        match self.state.blocking(move |store| access::hold(store, &principal, now)).await {
            Ok(Hold::Held { until }) => {
                lease.next_check = next_lease_check(self.state.config().sse_ping_interval, until, now);
                true
            }
            Ok(Hold::Ended) => false,
            Err(err) => {
                tracing::warn!(error = %err.message, "checking a stream's lease failed; ending the stream");
                false
            }
        }
    }

    /// A preview from the channel: taken now if the stream has delivered the
    /// events it follows and holds no earlier one, else held.
    fn receive_preview(&mut self, received: Result<Published, RecvError>) {
        match received {
            Ok(published) if self.held.is_empty() && published.after <= self.subscription.position() => {
                self.take_preview(Ok(published.preview));
            }
            Ok(published) if self.held.len() < PREVIEW_CAPACITY => self.held.push_back(published),
            // Too far behind to hold more: lose previews as on a lag.
            Ok(_) => {
                self.held.clear();
                self.take_preview(Err(RecvError::Lagged(1)));
            }
            Err(err) => self.take_preview(Err(err)),
        }
    }

    /// Takes the held previews that follow only events before `next`.
    fn release_held(&mut self, next: Seq) {
        while self.held.front().is_some_and(|published| published.after <= next) {
            if let Some(published) = self.held.pop_front() {
                self.take_preview(Ok(published.preview));
            }
        }
    }

    fn take_preview(&mut self, preview: Result<Preview, RecvError>) {
        match preview {
            Ok(Preview::Start { event_id, kind }) => {
                let wanted = match kind {
                    PreviewKind::Message => self.want.message,
                    PreviewKind::Thinking => self.want.thinking,
                };
                if wanted && !self.finished.contains(&event_id) && self.started.insert(event_id) {
                    let data = serde_json::json!({
                        "type": "event_start",
                        "event": {"type": kind.event_type(), "id": event_id},
                    });
                    self.pending.push_back(SseEvent::default().event("event_start").data(data.to_string()));
                }
            }
            Ok(Preview::Delta { event_id, index, text }) => {
                let open = self.started.contains(&event_id)
                    && !self.shed.contains(&event_id)
                    && !self.finished.contains(&event_id);
                if self.want.message && open {
                    let data = serde_json::json!({
                        "type": "event_delta",
                        "event_id": event_id,
                        "delta": {"type": "content_delta", "index": index, "content": {"type": "text", "text": text}},
                    });
                    self.pending.push_back(SseEvent::default().event("event_delta").data(data.to_string()));
                }
            }
            Err(RecvError::Lagged(_)) => {
                // Deltas were lost: what was sent must stay a prefix, so stop
                // previewing everything in flight.
                self.shed.extend(self.started.iter().copied());
                self.cap_tracking();
            }
            Err(RecvError::Closed) => self.previews = None,
        }
    }

    /// The final event of `id` was delivered: no preview may follow it.
    fn note_final(&mut self, id: EventId) {
        self.started.remove(&id);
        self.shed.remove(&id);
        self.finished.insert(id);
        self.cap_tracking();
    }

    fn cap_tracking(&mut self) {
        for set in [&mut self.started, &mut self.shed, &mut self.finished] {
            if set.len() > MAX_TRACKED_IDS {
                set.clear();
            }
        }
    }
}

/// An in-stream error the SDK raises as an `APIStatusError`.
fn error_event(message: &str) -> SseEvent {
    let body = serde_json::json!({"type": "error", "error": {"type": "api_error", "message": message}});
    SseEvent::default().event("error").data(body.to_string())
}
