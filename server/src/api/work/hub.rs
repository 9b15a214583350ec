//! What the work queue keeps in memory: wake-ups for long polls and the
//! workers seen polling.
//!
//! Nothing here is needed to be correct after a restart: a long poll that
//! misses a wake-up finds the item on its next look (polls re-read the store),
//! and `workers_polling` is a count over the last [`POLLING_WINDOW_MICROS`],
//! which a restart only resets. Every work item itself lives in the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use logbook_core::{EnvironmentId, Timestamp, WorkspaceId};
use tokio::sync::Notify;

/// `workers_polling` counts distinct worker ids seen in this window (30 s, as
/// the API documents).
pub const POLLING_WINDOW_MICROS: i64 = 30_000_000;

/// Worker ids remembered per environment; beyond it the longest-silent ones
/// are forgotten (a flood of made-up ids cannot grow memory without bound).
pub const MAX_TRACKED_WORKERS: usize = 1024;

/// The in-memory side of every environment's queue.
#[derive(Debug, Default)]
pub struct WorkHub {
    queues: Mutex<HashMap<(WorkspaceId, EnvironmentId), Queue>>,
}

#[derive(Debug, Default)]
struct Queue {
    /// Woken (every waiter) when an item may have become claimable.
    wake: Arc<Notify>,
    /// Worker id -> when it last polled.
    pollers: HashMap<String, Timestamp>,
}

impl WorkHub {
    /// The notifier a long poll of this queue waits on. Create the
    /// `notified()` future (and `enable` it) before looking at the store, so a
    /// wake-up between the look and the wait is not lost.
    pub fn waiter(&self, workspace: WorkspaceId, env: EnvironmentId) -> Arc<Notify> {
        match self.queues.lock() {
            Ok(mut queues) => Arc::clone(&queues.entry((workspace, env)).or_default().wake),
            // A poisoned lock only loses wake-ups: polls still find items on their next look.
            Err(_) => Arc::new(Notify::new()),
        }
    }

    /// Wakes every long poll of this queue.
    pub fn wake(&self, workspace: WorkspaceId, env: EnvironmentId) {
        if let Ok(queues) = self.queues.lock()
            && let Some(queue) = queues.get(&(workspace, env))
        {
            queue.wake.notify_waiters();
        }
    }

    /// Records that `worker` polled at `now`.
    pub fn note_poller(&self, workspace: WorkspaceId, env: EnvironmentId, worker: &str, now: Timestamp) {
        let Ok(mut queues) = self.queues.lock() else { return };
        let queue = queues.entry((workspace, env)).or_default();
        queue.pollers.insert(worker.to_owned(), now);
        if queue.pollers.len() > MAX_TRACKED_WORKERS {
            let horizon = now.unix_micros() - POLLING_WINDOW_MICROS;
            queue.pollers.retain(|_, at| at.unix_micros() >= horizon);
        }
        while queue.pollers.len() > MAX_TRACKED_WORKERS {
            let oldest = queue.pollers.iter().min_by_key(|(_, at)| **at).map(|(id, _)| id.clone());
            match oldest {
                Some(id) => queue.pollers.remove(&id),
                None => break,
            };
        }
    }

    /// Distinct workers that polled this queue in the last 30 s.
    pub fn workers_polling(&self, workspace: WorkspaceId, env: EnvironmentId, now: Timestamp) -> usize {
        let Ok(queues) = self.queues.lock() else { return 0 };
        let horizon = now.unix_micros() - POLLING_WINDOW_MICROS;
        queues
            .get(&(workspace, env))
            .map_or(0, |queue| queue.pollers.values().filter(|at| at.unix_micros() >= horizon).count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pollers_are_counted_over_the_window_and_bounded() {
        let hub = WorkHub::default();
        let ws = WorkspaceId::from_parts(1, 1);
        let env = EnvironmentId::from_parts(1, 2);
        let t0 = Timestamp::from_unix_micros(1_000_000_000_000);
        hub.note_poller(ws, env, "a", t0);
        hub.note_poller(ws, env, "b", t0);
        hub.note_poller(ws, env, "a", t0);
        assert_eq!(hub.workers_polling(ws, env, t0), 2);
        let later = Timestamp::from_unix_micros(t0.unix_micros() + POLLING_WINDOW_MICROS + 1);
        assert_eq!(hub.workers_polling(ws, env, later), 0);
        assert_eq!(hub.workers_polling(ws, EnvironmentId::from_parts(1, 3), t0), 0);
        for n in 0..(MAX_TRACKED_WORKERS + 10) {
            hub.note_poller(ws, env, &format!("w{n}"), later);
        }
        assert_eq!(hub.workers_polling(ws, env, later), MAX_TRACKED_WORKERS);
    }
}
