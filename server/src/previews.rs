//! Stream-only previews (`event_start`, `event_delta`): what the model is
//! writing before the buffered event is appended.
//!
//! Previews are never persisted: the runner publishes them to a per-session
//! broadcast channel of bounded capacity, and each SSE stream that asked for
//! them (`event_deltas[]`) forwards the ones it wants. A stream that falls
//! behind loses previews, never events: on a lag it stops previewing the ids in
//! flight, so what it did deliver is still a prefix of the final text, and the
//! buffered event remains the last thing delivered for its id.
//!
//! Each preview is published with the session's durable head at the time
//! ([`Published::after`]): a stream that has not yet delivered the events
//! before it (one resumed, or catching up after reading slowly) holds the
//! preview until it has, so previews never overtake events that were
//! durable before them, and always precede their own final event (appended
//! after them).

use std::collections::HashMap;
use std::sync::Mutex;

use logbook_core::{EventId, Seq, SessionId};
use tokio::sync::broadcast;

/// Previews buffered per session before slow streams start losing them.
pub const PREVIEW_CAPACITY: usize = 1024;

/// With this many channels, a new subscription first drops those nobody
/// listens to any more.
const SWEEP_AT_CHANNELS: usize = 64;

/// The events a preview can be for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreviewKind {
    Message,
    Thinking,
}

impl PreviewKind {
    pub fn event_type(self) -> &'static str {
        match self {
            PreviewKind::Message => "agent.message",
            PreviewKind::Thinking => "agent.thinking",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preview {
    /// The event `event_id` has started.
    Start { event_id: EventId, kind: PreviewKind },
    /// Text appended at `index` of the event's content (messages only).
    Delta { event_id: EventId, index: usize, text: String },
}

impl Preview {
    pub fn event_id(&self) -> EventId {
        match self {
            Preview::Start { event_id, .. } | Preview::Delta { event_id, .. } => *event_id,
        }
    }
}

/// A preview as published: it follows the events before `after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The session's durable next seq when the preview was published.
    pub after: Seq,
    pub preview: Preview,
}

/// The per-session preview channels.
#[derive(Debug, Default)]
pub struct Previews {
    channels: Mutex<HashMap<SessionId, broadcast::Sender<Published>>>,
}

impl Previews {
    /// Sends a preview to the session's current subscribers (none is fine),
    /// to follow the events before `after`.
    pub fn publish_after(&self, session: SessionId, after: Seq, preview: Preview) {
        let Ok(mut channels) = self.channels.lock() else { return };
        if let Some(sender) = channels.get(&session)
            && sender.send(Published { after, preview }).is_err()
        {
            // No subscriber left: forget the channel so the map stays bounded.
            channels.remove(&session);
        }
    }

    /// [`Previews::publish_after`] with no events to follow.
    pub fn publish(&self, session: SessionId, preview: Preview) {
        self.publish_after(session, Seq::ZERO, preview);
    }

    pub fn subscribe(&self, session: SessionId) -> broadcast::Receiver<Published> {
        match self.channels.lock() {
            Ok(mut channels) => {
                // Channels whose streams all closed after the last preview
                // was published; dropped here so the map stays bounded by
                // the streams open (plus one sweep's worth).
                if channels.len() >= SWEEP_AT_CHANNELS {
                    channels.retain(|_, sender| sender.receiver_count() > 0);
                }
                channels.entry(session).or_insert_with(|| broadcast::channel(PREVIEW_CAPACITY).0).subscribe()
            }
            // A poisoned map only costs previews.
            Err(_) => broadcast::channel(1).1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(n: u64) -> SessionId {
        SessionId::from_parts(1_764_000_000_000 + n, u128::from(n))
    }

    /// Goal: channels of sessions whose streams closed do not pile up.
    /// Method: many sessions subscribed to and dropped without a publish,
    /// then one more subscription.
    #[test]
    fn channels_nobody_listens_to_are_dropped() {
        let previews = Previews::default();
        let kept = previews.subscribe(session(0));
        for n in 1..1000 {
            drop(previews.subscribe(session(n)));
        }
        let _new = previews.subscribe(session(1000));
        let n_channels = previews.channels.lock().unwrap().len();
        assert!(n_channels <= SWEEP_AT_CHANNELS + 1, "{n_channels} channels left");
        let event_id = EventId::from_parts(1_764_000_000_000, 1);
        previews.publish(session(0), Preview::Start { event_id, kind: PreviewKind::Message });
        let mut kept = kept;
        assert_eq!(kept.try_recv().unwrap().preview.event_id(), event_id, "a listened-to channel stays");
    }
}
