//! Group commit: concurrent writers share one durability barrier.
//!
//! A writer first makes its write visible to the engine, then calls
//! [`Barrier::wait`]. It takes a ticket; if no sync is running it becomes the
//! leader and runs one `Engine::sync` covering every ticket issued so far, else
//! it waits for a sync that started after its ticket. So each write is covered
//! by a sync that began after the write completed, and one fsync serves every
//! writer that arrived while the previous one ran. A failed sync poisons the
//! barrier for good: nothing written after it can be acknowledged.
//!
//! Writers hand the barrier the head their write produced; the leader passes
//! every head its sync covers to the sync function, which journals them (see
//! [`crate::journal`]) so that a later loss of acknowledged records is detected.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex, MutexGuard};

use logbook_core::SessionId;

use crate::Head;
use crate::error::Error;

/// What a barrier's leader runs: make everything written so far durable and
/// journal `heads` under commit number `commit`.
pub(crate) type SyncFn<'a> = &'a dyn Fn(u64, &BTreeMap<SessionId, Head>) -> Result<(), Error>;

#[derive(Debug, Default)]
pub(crate) struct Barrier {
    state: Mutex<State>,
    synced: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Tickets issued.
    issued: u64,
    /// Every ticket up to this one is durable.
    completed: u64,
    running: bool,
    poisoned: Option<String>,
    /// Heads written since the last sync started, newest per session.
    pending: BTreeMap<SessionId, Head>,
    /// Syncs started; the commit number of the next one.
    commit: u64,
    n_syncs: u64,
    n_waits: u64,
}

/// Counters for benchmarks and diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BarrierStats {
    /// Engine syncs run.
    pub n_syncs: u64,
    /// Writers that waited on a barrier.
    pub n_waits: u64,
}

impl Barrier {
    /// Returns once every write that completed before this call is durable.
    /// `head` is the head the caller's write produced, if it appended.
    pub(crate) fn wait(&self, head: Option<(SessionId, Head)>, sync: SyncFn<'_>) -> Result<(), Error> {
        let mut state = self.lock()?;
        if let Some((session, head)) = head {
            let newest = state.pending.entry(session).or_insert(head);
            if head.next > newest.next {
                *newest = head;
            }
        }
        state.issued += 1;
        state.n_waits += 1;
        let ticket = state.issued;
        loop {
            if let Some(reason) = &state.poisoned {
                return Err(Error::Poisoned { reason: reason.clone() });
            }
            if state.completed >= ticket {
                return Ok(());
            }
            if state.running {
                state = self.synced.wait(state).map_err(|_| Error::Engine("barrier lock poisoned".to_owned()))?;
                continue;
            }
            // Lead: one sync for every ticket issued so far.
            state.running = true;
            let target = state.issued;
            let heads = std::mem::take(&mut state.pending);
            state.commit += 1;
            let commit = state.commit;
            drop(state);
            let res = sync(commit, &heads);
            state = self.lock()?;
            state.running = false;
            state.n_syncs += 1;
            match res {
                Ok(()) => state.completed = target,
                Err(err) => state.poisoned = Some(err.to_string()),
            }
            self.synced.notify_all();
        }
    }

    /// The reason the barrier failed, if it did.
    pub(crate) fn poisoned(&self) -> Option<String> {
        self.lock().ok().and_then(|state| state.poisoned.clone())
    }

    pub(crate) fn check(&self) -> Result<(), Error> {
        match self.poisoned() {
            Some(reason) => Err(Error::Poisoned { reason }),
            None => Ok(()),
        }
    }

    /// Continues commit numbering after what the store already holds.
    pub(crate) fn start_commits_at(&self, commit: u64) {
        if let Ok(mut state) = self.lock() {
            state.commit = state.commit.max(commit);
        }
    }

    pub(crate) fn stats(&self) -> BarrierStats {
        self.lock().map(|state| BarrierStats { n_syncs: state.n_syncs, n_waits: state.n_waits }).unwrap_or_default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, Error> {
        self.state.lock().map_err(|_| Error::Engine("barrier lock poisoned".to_owned()))
    }
}
