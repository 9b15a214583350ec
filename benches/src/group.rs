//! A group committer: writer threads hand items to one committer thread, which
//! commits them in batches and acknowledges every item of a batch at once.
//!
//! Shared by the raw baseline (a batch is one `write` plus one `fdatasync`) and
//! the batched SQLite baseline (a batch is one transaction). A writer's
//! [`GroupCommit::submit`] returns only after the batch holding its item was
//! committed, so every acknowledged item is durable. The committer takes
//! whatever is queued, up to `max_batch` items, as soon as the previous commit
//! ends: it never waits to fill a batch, so a batch can only hold items whose
//! writers are waiting (16 writers with one item each make batches of at most
//! 16). [`GroupCommit::start_pipelined`] runs several committers, so that
//! one batch's commit overlaps the next's (a diagnostic of what overlapping
//! `fdatasync`s of one file would give).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use anyhow::{Context, anyhow};

/// Statistics of a committer's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    pub n_batches: u64,
    pub n_items: u64,
}

/// See the module documentation.
#[derive(Debug)]
pub struct GroupCommit<T: Send + 'static> {
    shared: Arc<Shared<T>>,
    committers: Vec<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared<T> {
    state: Mutex<State<T>>,
    /// Signals the committer: work queued, or shutdown.
    work: Condvar,
    /// Signals writers: a batch was committed.
    done: Condvar,
}

#[derive(Debug)]
struct State<T> {
    queue: VecDeque<T>,
    /// Tickets handed out, one per item, in queue order.
    issued: u64,
    /// Tickets taken into batches by committers.
    taken: u64,
    /// Every ticket up to this one is durable.
    committed: u64,
    failed: Option<String>,
    shutdown: bool,
    stats: CommitStats,
}

impl<T: Send + 'static> GroupCommit<T> {
    /// Starts the committer thread. `commit` makes a batch durable.
    pub fn start<F>(max_batch: usize, commit: F) -> Self
    where
        F: FnMut(&mut Vec<T>) -> anyhow::Result<()> + Send + 'static,
    {
        let commit = Mutex::new(commit);
        GroupCommit::start_pipelined(max_batch, 1, move |batch| {
            let mut commit = commit.lock().map_err(|_| anyhow!("commit function lock poisoned"))?;
            commit(batch)
        })
    }

    /// Starts `depth` committer threads: while one commits a batch, the next
    /// takes what is queued and commits it too, so up to `depth` commits are in
    /// flight. Batches are still acknowledged in the order they were taken: a
    /// batch's writers return once it and every earlier batch are committed.
    pub fn start_pipelined<F>(max_batch: usize, depth: usize, commit: F) -> Self
    where
        F: Fn(&mut Vec<T>) -> anyhow::Result<()> + Send + Sync + 'static,
    {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                issued: 0,
                taken: 0,
                committed: 0,
                failed: None,
                shutdown: false,
                stats: CommitStats::default(),
            }),
            work: Condvar::new(),
            done: Condvar::new(),
        });
        let commit = Arc::new(commit);
        let committers = (0..depth.max(1))
            .map(|_| {
                let shared = Arc::clone(&shared);
                let commit = Arc::clone(&commit);
                std::thread::spawn(move || commit_batches(&shared, max_batch, commit.as_ref()))
            })
            .collect();
        GroupCommit { shared, committers }
    }

    /// Queues `item` and returns once it is committed.
    pub fn submit(&self, item: T) -> anyhow::Result<()> {
        let mut state = self.lock()?;
        if let Some(reason) = &state.failed {
            return Err(anyhow!("committer failed: {reason}"));
        }
        state.queue.push_back(item);
        state.issued += 1;
        let ticket = state.issued;
        self.shared.work.notify_one();
        while state.committed < ticket {
            if let Some(reason) = &state.failed {
                return Err(anyhow!("committer failed: {reason}"));
            }
            state = self.shared.done.wait(state).map_err(|_| anyhow!("group commit lock poisoned"))?;
        }
        Ok(())
    }

    pub fn stats(&self) -> CommitStats {
        self.lock().map(|state| state.stats).unwrap_or_default()
    }

    /// Stops the committer after it commits what is queued.
    pub fn finish(mut self) -> anyhow::Result<CommitStats> {
        self.stop()?;
        let state = self.lock()?;
        match &state.failed {
            Some(reason) => Err(anyhow!("committer failed: {reason}")),
            None => Ok(state.stats),
        }
    }

    fn stop(&mut self) -> anyhow::Result<()> {
        if let Ok(mut state) = self.shared.state.lock() {
            state.shutdown = true;
        }
        self.shared.work.notify_all();
        for handle in self.committers.drain(..) {
            handle.join().map_err(|_| anyhow!("committer thread panicked")).context("stopping the committer")?;
        }
        Ok(())
    }

    fn lock(&self) -> anyhow::Result<MutexGuard<'_, State<T>>> {
        self.shared.state.lock().map_err(|_| anyhow!("group commit lock poisoned"))
    }
}

/// One committer thread's loop (see [`GroupCommit::start_pipelined`]).
fn commit_batches<T>(shared: &Shared<T>, max_batch: usize, commit: &dyn Fn(&mut Vec<T>) -> anyhow::Result<()>) {
    let mut batch = Vec::with_capacity(max_batch);
    loop {
        let Ok(mut state) = shared.state.lock() else { return };
        while state.queue.is_empty() && !state.shutdown && state.failed.is_none() {
            state = match shared.work.wait(state) {
                Ok(state) => state,
                Err(_) => return,
            };
        }
        if state.queue.is_empty() || state.failed.is_some() {
            return;
        }
        let n = state.queue.len().min(max_batch);
        batch.extend(state.queue.drain(..n));
        let first = state.taken;
        state.taken += n as u64;
        let last = state.taken;
        drop(state);
        // A panicking commit fails the committer like an error does: the
        // batches after it would otherwise wait for it for ever.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| commit(&mut batch)))
            .unwrap_or_else(|_| Err(anyhow!("the commit function panicked")));
        batch.clear();
        let Ok(mut state) = shared.state.lock() else { return };
        // Acknowledged in order: after every batch taken before this one.
        while state.committed < first && state.failed.is_none() {
            state = match shared.done.wait(state) {
                Ok(state) => state,
                Err(_) => return,
            };
        }
        match result {
            Ok(()) if state.failed.is_none() => {
                state.committed = last;
                state.stats.n_batches += 1;
                state.stats.n_items += n as u64;
            }
            Ok(()) => {}
            Err(err) => state.failed = Some(format!("{err:#}")),
        }
        shared.done.notify_all();
        if state.failed.is_some() {
            shared.work.notify_all();
            return;
        }
    }
}

impl<T: Send + 'static> Drop for GroupCommit<T> {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
