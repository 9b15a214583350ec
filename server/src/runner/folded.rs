//! What finished tasks had read of their sessions' logs, kept so that the
//! next wake of a session folds only the entries appended since.
//!
//! A task folds its session's whole log into a [`SessionState`] before its
//! first decision. Without this cache every wake (each message, each tool
//! result a worker or client posts) would read and fold the log from seq 0
//! again, so a long session's wakes would cost in proportion to its length.
//! The projection is a pure fold of an append-only log, so a fold of seqs
//! `0..n` stays exact for as long as the session lives; the next task goes
//! on from `n`. Entries are bounded in number of sessions and in their
//! canonical bytes; the least recently parked go first, and a session that
//! ends (archived or deleted) is dropped.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use logbook_core::{Entry, SessionId};
use logbook_replay::SessionState;

/// Most sessions whose fold is kept.
pub(crate) const MAX_FOLDED_SESSIONS: usize = 1_024;
/// Most canonical bytes of entries kept over all sessions (the decoded
/// entries and projections take a small multiple of this in memory).
pub(crate) const MAX_FOLDED_BYTES: usize = 64 << 20;

/// A session's log as a task had read it: every entry from seq 0, and their
/// fold.
#[derive(Debug, Default)]
pub(crate) struct Folded {
    pub(crate) projection: SessionState,
    pub(crate) entries: Vec<Entry>,
    /// The entries' canonical bytes.
    pub(crate) bytes: usize,
}

/// The cache; see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct FoldedCache {
    inner: Mutex<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    by_session: HashMap<SessionId, (u64, Folded)>,
    /// Incremented per park: the smallest is the least recently parked.
    clock: u64,
    bytes: usize,
}

impl FoldedCache {
    /// Takes the session's fold, if one is kept.
    pub(crate) fn take(&self, session: SessionId) -> Option<Folded> {
        let mut slots = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let (_, folded) = slots.by_session.remove(&session)?;
        slots.bytes -= folded.bytes;
        Some(folded)
    }

    /// Keeps the session's fold, dropping the least recently parked ones
    /// over the limits. A fold over [`MAX_FOLDED_BYTES`] alone is not kept.
    pub(crate) fn park(&self, session: SessionId, folded: Folded) {
        if folded.bytes > MAX_FOLDED_BYTES {
            return;
        }
        let mut slots = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        slots.clock += 1;
        let tick = slots.clock;
        slots.bytes += folded.bytes;
        if let Some((_, old)) = slots.by_session.insert(session, (tick, folded)) {
            slots.bytes -= old.bytes;
        }
        while slots.bytes > MAX_FOLDED_BYTES || slots.by_session.len() > MAX_FOLDED_SESSIONS {
            let Some(oldest) = slots.by_session.iter().min_by_key(|(_, (tick, _))| *tick).map(|(id, _)| *id) else {
                break;
            };
            if let Some((_, dropped)) = slots.by_session.remove(&oldest) {
                slots.bytes -= dropped.bytes;
            }
        }
    }

    /// Forgets the session (it ended).
    pub(crate) fn forget(&self, session: SessionId) {
        drop(self.take(session));
    }

    /// Sessions kept and their canonical bytes (for tests and metrics).
    pub(crate) fn usage(&self) -> (usize, usize) {
        let slots = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        (slots.by_session.len(), slots.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folded(bytes: usize) -> Folded {
        Folded { bytes, ..Folded::default() }
    }

    #[test]
    fn keeps_the_most_recently_parked_within_the_limits() {
        let cache = FoldedCache::default();
        let ids: Vec<SessionId> = (0..3).map(|n| SessionId::from_parts(1, n)).collect();
        cache.park(ids[0], folded(MAX_FOLDED_BYTES / 2));
        cache.park(ids[1], folded(MAX_FOLDED_BYTES / 2));
        assert_eq!(cache.usage(), (2, MAX_FOLDED_BYTES));
        // A third pushes the least recently parked out.
        cache.park(ids[2], folded(1));
        assert_eq!(cache.usage(), (2, MAX_FOLDED_BYTES / 2 + 1));
        assert!(cache.take(ids[0]).is_none());
        assert_eq!(cache.take(ids[1]).map(|f| f.bytes), Some(MAX_FOLDED_BYTES / 2));
        assert_eq!(cache.usage(), (1, 1));
        // Too big alone: not kept, and nothing else is dropped for it.
        cache.park(ids[0], folded(MAX_FOLDED_BYTES + 1));
        assert_eq!(cache.usage(), (1, 1));
        // Parking again replaces, without counting twice.
        cache.park(ids[2], folded(10));
        assert_eq!(cache.usage(), (1, 10));
        cache.forget(ids[2]);
        assert_eq!(cache.usage(), (0, 0));
    }

    #[test]
    fn keeps_at_most_the_session_limit() {
        let cache = FoldedCache::default();
        let first = SessionId::from_parts(1, 0);
        cache.park(first, folded(1));
        for n in 1..=MAX_FOLDED_SESSIONS {
            cache.park(SessionId::from_parts(1, n as u128), folded(1));
        }
        assert_eq!(cache.usage(), (MAX_FOLDED_SESSIONS, MAX_FOLDED_SESSIONS));
        assert!(cache.take(first).is_none(), "the least recently parked goes first");
    }
}
