//! Group commit: concurrent writers share one `pwrite` + `fdatasync` of the
//! write-ahead log.
//!
//! A writer encodes its entries into the open batch (under the queue's lock,
//! which it holds only for the copy) together with the effects that must
//! follow durability, gets a [`Ticket`], and waits on it. One committer thread
//! takes the open batch as soon as the previous one is durable, writes it with
//! one `pwrite`, makes it durable with one `fdatasync`, hands the effects to
//! the [`Publisher`] (which indexes the records and moves the durable heads,
//! so readers and subscribers see them), and only then completes the ticket.
//! While one batch is being synced the next one fills, so one `fdatasync`
//! serves every writer that arrived during the previous one.
//!
//! Left alone, steady writers split into two cohorts that alternate (one
//! syncing while the other prepares), each batch holding about half of them.
//! A store may be opened to have the committer linger after a sync, briefly,
//! for the writers it just released to submit again, merging the cohorts:
//! until as many writes have joined the open batch as the finished batch
//! held, at most a fraction of the last sync's duration ([`LINGER_FRACTION`],
//! capped at `WalOptions::max_linger`, at most [`MAX_LINGER`]). It is off by
//! default: measured on the target machine, bigger batches did not make up
//! for the wait (16 in-process writers, 4 events per append: 60-62k events/s
//! never lingering against 52-55k lingering; 16 HTTP clients: +15-25 %; see
//! `benches/README.md`).
//!
//! A failed write or sync poisons the queue for good: nothing in that batch or
//! any later one is acknowledged (after an fsync error the kernel may have
//! dropped the dirty pages; retrying proves nothing).
//!
//! So does a batch that never finishes. A storage device that stops answering,
//! or sled after an I/O error (its `flush` then waits forever for a write that
//! failed, holding a lock the committer's next index write needs; found by
//! `tests/tests/storage_faults.rs`), would leave the committer blocked in a
//! call that cannot be interrupted, and every writer waiting with it. A
//! watchdog thread ([`CommitQueue::watch`]) fails the queue instead once the
//! committer has spent longer than its stall limit on one batch, or a
//! checkpoint or a segment's preparation has run that long: the batch in
//! flight and every later one fail, the store reports itself poisoned (the
//! server's `/healthz` answers 503), and closing the store leaves the stuck
//! threads behind rather than wait for them.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::wal::{BatchBuf, BatchHeader, LogWriter, MAX_BATCH_BYTES};

/// The committer waits at most this fraction of the last sync's duration for
/// released writers to rejoin: a wait that is small next to the sync it saves.
pub(crate) const LINGER_FRACTION: f64 = 0.5;

/// And never longer than this (what the benchmarks' lingering configuration uses).
pub const MAX_LINGER: Duration = Duration::from_millis(1);

/// The longest the committer may spend on one batch (its write, its sync and
/// the publishing of its effects) before the watchdog fails the queue. A
/// healthy disk syncs in milliseconds, an overloaded one in seconds; Linux
/// reports a task blocked this long as hung.
pub const COMMIT_STALL_LIMIT: Duration = Duration::from_secs(120);

/// The watchdog looks at least this often (and at least four times per stall limit).
const WATCH_PERIOD: Duration = Duration::from_secs(1);

/// Nor more often than this, however small the limit.
const MIN_WATCH_PERIOD: Duration = Duration::from_millis(1);

/// Closing looks at least this often whether a thread it waits for finished
/// (the thread wakes it as it finishes; this is the fallback).
const CLOSE_POLL: Duration = Duration::from_millis(200);

/// Most bytes one write (an append, a blob, a resource) may add to a batch:
/// half a batch, far above any of them (64 MiB each at most), so a batch of
/// one write and its framing always fits.
pub(crate) const MAX_WRITE_BYTES: usize = MAX_BATCH_BYTES / 2;

const _: () = assert!(logbook_core::limits::MAX_APPEND_BYTES + (1 << 20) <= MAX_WRITE_BYTES);
const _: () = assert!(logbook_core::limits::MAX_BLOB_BYTES + (1 << 20) <= MAX_WRITE_BYTES);
const _: () = assert!(crate::kv::MAX_RESOURCE_VALUE_BYTES + (1 << 20) <= MAX_WRITE_BYTES);

/// What the committer calls once a batch is durable, before acknowledging it.
pub(crate) trait Publisher<T>: Send + Sync + 'static {
    fn publish(&self, header: &BatchHeader, effects: Vec<T>);
}

/// Counters for benchmarks and diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BarrierStats {
    /// Batches written and synced (`fdatasync`s of the log).
    pub n_syncs: u64,
    /// Writes (appends, blobs, resources, forks) that waited on one.
    pub n_waits: u64,
    /// Checkpoints of the indexes.
    pub n_checkpoints: u64,
    /// Time spent writing and syncing batches (`pwrite` + `fdatasync`), in
    /// microseconds: with `n_syncs`, the mean cost of one barrier.
    pub sync_micros: u64,
}

/// The queue of batches and its committer's shared state.
#[derive(Debug)]
pub(crate) struct CommitQueue<T> {
    state: Mutex<State<T>>,
    /// Signals the committer: work queued, or stop.
    work: Condvar,
    /// Signals the watchdog (work began or ended, retire) and whoever waits
    /// in [`CommitQueue::wait_unless_stalled`] (a stall, a thread finishing).
    watch: Condvar,
}

#[derive(Debug)]
struct State<T> {
    open: Pending<T>,
    /// Batches that filled up before the committer took them, oldest first.
    sealed: VecDeque<Pending<T>>,
    poisoned: Option<String>,
    /// Set when the watchdog failed the queue because a batch or a
    /// checkpoint never finished.
    stalled: bool,
    stop: bool,
    /// The batch the committer is on, and since when.
    in_flight: Option<(Arc<Done>, Instant)>,
    /// Background work on the engine running: its number, what it is, since when.
    background: Vec<(u64, &'static str, Instant)>,
    /// The number the next background work gets.
    next_work: u64,
    /// Set as the store closes, once nothing is left to watch.
    watch_retired: bool,
    /// The log is durable up to here (the end of the last synced batch).
    durable_end: u64,
    /// The longest the committer lingers (zero: never).
    max_linger: Duration,
    /// Writes in the last batch synced, and how long its sync took.
    last_batch_writes: u64,
    /// Bytes of the last batch taken: the next one starts with that capacity.
    last_batch_bytes: usize,
    /// The committer sleeps until the open batch holds this many writes (1:
    /// any; `u64::MAX`: it is busy): a write wakes it only when it matters.
    wake_at: u64,
    last_sync: Duration,
    stats: BarrierStats,
}

#[derive(Debug)]
struct Pending<T> {
    buf: BatchBuf,
    effects: Vec<T>,
    done: Arc<Done>,
    /// Writes (submits) in this batch.
    n_writes: u64,
}

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Pending { buf: BatchBuf::new(), effects: Vec::new(), done: Arc::new(Done::default()), n_writes: 0 }
    }
}

/// A batch's outcome, shared by its writers: blocked threads wait on
/// `ready`, async tasks leave a waker.
#[derive(Debug, Default)]
struct Done {
    outcome: Mutex<Outcome>,
    ready: Condvar,
}

#[derive(Debug, Default)]
struct Outcome {
    result: Option<Result<(), String>>,
    wakers: Vec<Waker>,
}

/// A writer's claim on the batch holding its entries.
#[derive(Debug)]
#[must_use = "a write is durable only once its ticket's wait returns Ok"]
pub(crate) struct Ticket(Arc<Done>);

impl Ticket {
    /// Blocks until the batch is durable and its effects are published.
    pub(crate) fn wait(self) -> Result<(), Error> {
        let mut outcome = self.0.outcome.lock().map_err(|_| lock_poisoned())?;
        loop {
            match &outcome.result {
                Some(Ok(())) => return Ok(()),
                Some(Err(reason)) => return Err(Error::Poisoned { reason: reason.clone() }),
                None => outcome = self.0.ready.wait(outcome).map_err(|_| lock_poisoned())?,
            }
        }
    }

    /// Ready once the batch is durable and its effects are published (for
    /// async callers: nothing blocks while the batch is written).
    pub(crate) fn poll_durable(&self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let mut outcome = match self.0.outcome.lock() {
            Ok(outcome) => outcome,
            Err(_) => return Poll::Ready(Err(lock_poisoned())),
        };
        match &outcome.result {
            Some(Ok(())) => Poll::Ready(Ok(())),
            Some(Err(reason)) => Poll::Ready(Err(Error::Poisoned { reason: reason.clone() })),
            None => {
                if !outcome.wakers.iter().any(|waker| waker.will_wake(cx.waker())) {
                    outcome.wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

/// The committer's exit guard. Leaving [`CommitQueue::run`] other than by a
/// stop with nothing queued (a panic while publishing, a poisoned lock) would
/// leave every waiting writer, and every later one, blocked forever: instead
/// the queue is poisoned and every batch it holds fails.
struct Abandon<'a, T> {
    queue: &'a CommitQueue<T>,
    /// The batch being written, if any.
    in_flight: Option<Arc<Done>>,
}

impl<T> Drop for Abandon<'_, T> {
    fn drop(&mut self) {
        let mut state = self.queue.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.in_flight = None;
        let drained = state.stop && state.open.buf.is_empty() && state.sealed.is_empty();
        if drained && self.in_flight.is_none() {
            return;
        }
        let reason =
            state.poisoned.get_or_insert_with(|| "the log's committer stopped unexpectedly".to_owned()).clone();
        let mut failed: Vec<Arc<Done>> = self.in_flight.take().into_iter().collect();
        failed.extend(state.sealed.drain(..).map(|pending| pending.done));
        failed.push(Arc::clone(&state.open.done));
        drop(state);
        for done in failed {
            done.complete(Err(reason.clone()));
        }
        self.queue.work.notify_all();
    }
}

/// Background work on the engine in progress, on the watchdog's books until
/// dropped.
#[derive(Debug)]
#[must_use = "the work is watched only while the guard lives"]
pub(crate) struct BackgroundWork<'a, T> {
    queue: &'a CommitQueue<T>,
    /// Its number on the books (none if it could not be put there).
    id: Option<u64>,
}

impl<T> Drop for BackgroundWork<'_, T> {
    fn drop(&mut self) {
        let mut state = self.queue.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.background.retain(|(work, _, _)| Some(*work) != self.id);
        drop(state);
        self.queue.watch.notify_all();
    }
}

impl Done {
    /// Sets the outcome, unless it was set already (the watchdog may fail a
    /// batch the committer finishes later: its writers were told it failed).
    fn complete(&self, res: Result<(), String>) {
        // A poisoned lock still holds the wakers: every waiter must hear.
        let mut outcome = self.outcome.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        outcome.result.get_or_insert(res);
        let wakers = std::mem::take(&mut outcome.wakers);
        drop(outcome);
        self.ready.notify_all();
        for waker in wakers {
            waker.wake();
        }
    }
}

fn lock_poisoned() -> Error {
    Error::Engine("commit queue lock poisoned".to_owned())
}

impl<T: Send + 'static> CommitQueue<T> {
    /// A queue whose log is durable up to `durable_end`, lingering at most `max_linger`.
    pub(crate) fn new(durable_end: u64, max_linger: Duration) -> CommitQueue<T> {
        CommitQueue {
            state: Mutex::new(State {
                open: Pending::default(),
                sealed: VecDeque::new(),
                poisoned: None,
                stalled: false,
                stop: false,
                in_flight: None,
                background: Vec::new(),
                next_work: 0,
                watch_retired: false,
                durable_end,
                max_linger,
                last_batch_writes: 0,
                last_batch_bytes: 0,
                wake_at: u64::MAX,
                last_sync: Duration::ZERO,
                stats: BarrierStats::default(),
            }),
            work: Condvar::new(),
            watch: Condvar::new(),
        }
    }

    /// Adds entries to the open batch: `write` appends them to the batch (it
    /// gets the batch and the offset its first entry will have) and returns
    /// the effect to publish once they are durable. `n_bytes` estimates what
    /// `write` appends, so a batch never grows past [`MAX_BATCH_BYTES`]; one
    /// write over [`MAX_WRITE_BYTES`] is refused (a reader would take its
    /// batch for damage).
    pub(crate) fn submit<F>(&self, n_bytes: usize, write: F) -> Result<Ticket, Error>
    where
        F: FnOnce(&mut BatchBuf) -> Result<Option<T>, Error>,
    {
        if n_bytes > MAX_WRITE_BYTES {
            return Err(Error::Invalid(format!("a write of {n_bytes} bytes is over the log's {MAX_WRITE_BYTES}")));
        }
        let mut state = self.lock()?;
        if let Some(reason) = &state.poisoned {
            return Err(Error::Poisoned { reason: reason.clone() });
        }
        if state.stop {
            return Err(Error::Engine("the store is closing".to_owned()));
        }
        let sealed = !state.open.buf.is_empty() && state.open.buf.payload_len() + n_bytes > MAX_BATCH_BYTES;
        if sealed {
            let full = std::mem::take(&mut state.open);
            state.sealed.push_back(full);
        }
        let rollback = state.open.buf.bytes.len();
        let n_entries = state.open.buf.n_entries;
        match write(&mut state.open.buf) {
            Ok(effect) => {
                if let Some(effect) = effect {
                    state.open.effects.push(effect);
                }
            }
            Err(err) => {
                state.open.buf.bytes.truncate(rollback);
                state.open.buf.n_entries = n_entries;
                return Err(err);
            }
        }
        state.stats.n_waits += 1;
        state.open.n_writes += 1;
        let ticket = Ticket(Arc::clone(&state.open.done));
        let wake = sealed || state.open.n_writes >= state.wake_at;
        drop(state);
        if wake {
            self.work.notify_one();
        }
        Ok(ticket)
    }

    /// Runs the committer until [`CommitQueue::stop`]: the committer thread's body.
    pub(crate) fn run(&self, mut writer: LogWriter, publisher: &dyn Publisher<T>) {
        let mut guard = Abandon { queue: self, in_flight: None };
        while let Some(mut pending) = self.next_pending() {
            guard.in_flight = Some(Arc::clone(&pending.done));
            let poisoned = match self.lock() {
                Ok(mut state) => match state.poisoned.clone() {
                    Some(reason) => Some(reason),
                    None => {
                        state.in_flight = Some((Arc::clone(&pending.done), Instant::now()));
                        None
                    }
                },
                Err(_) => None,
            };
            if let Some(reason) = poisoned {
                pending.done.complete(Err(reason));
                guard.in_flight = None;
                continue;
            }
            let started = Instant::now();
            let result = match writer.write(&mut pending.buf) {
                Ok(header) => {
                    let took = started.elapsed();
                    publisher.publish(&header, std::mem::take(&mut pending.effects));
                    if let Ok(mut state) = self.lock() {
                        // Off the watchdog's books before the answer, so that
                        // a batch answered Ok is never also taken for stalled.
                        state.in_flight = None;
                        state.durable_end = writer.end();
                        state.stats.n_syncs += 1;
                        state.stats.sync_micros += u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
                        state.last_batch_writes = pending.n_writes;
                        state.last_sync = took;
                    }
                    Ok(())
                }
                Err(err) => {
                    let reason = format!("writing the log: {err}");
                    if let Ok(mut state) = self.lock() {
                        state.in_flight = None;
                        state.poisoned.get_or_insert_with(|| reason.clone());
                    }
                    Err(reason)
                }
            };
            pending.done.complete(result);
            guard.in_flight = None;
        }
    }

    /// Runs the watchdog until [`CommitQueue::retire_watchdog`]: the watchdog
    /// thread's body. Fails the queue once the committer has been on one
    /// batch, or background work on the engine (a checkpoint, a segment's
    /// preparation) has been running, for longer than `limit` (see the module
    /// documentation); a zero `limit` watches nothing.
    pub(crate) fn watch(&self, limit: Duration) {
        let period = (limit / 4).clamp(MIN_WATCH_PERIOD, WATCH_PERIOD);
        let Ok(mut state) = self.lock() else { return };
        while !state.watch_retired {
            if limit.is_zero() || state.stalled {
                let Ok(next) = self.watch.wait(state) else { return };
                state = next;
                continue;
            }
            let batch_stuck = state.in_flight.as_ref().is_some_and(|(_, since)| since.elapsed() > limit);
            let work_stuck =
                state.background.iter().find(|(_, _, since)| since.elapsed() > limit).map(|(_, what, _)| *what);
            if !batch_stuck && work_stuck.is_none() {
                let Ok((next, _)) = self.watch.wait_timeout(state, period) else { return };
                state = next;
                continue;
            }
            let what = match work_stuck {
                Some(work) if !batch_stuck => format!("{work} has been running"),
                Some(_) | None => "the log's committer has been on one batch".to_owned(),
            };
            let reason = format!(
                "{what} for more than {limit:?} (a storage device or the index engine stopped answering); restart \
                 the server"
            );
            state.poisoned = Some(reason.clone());
            state.stalled = true;
            // The batch in flight fails whatever its age: it waits on the
            // same device, or behind the stuck work's engine lock.
            let mut failed: Vec<Arc<Done>> =
                state.in_flight.as_ref().map(|(done, _)| Arc::clone(done)).into_iter().collect();
            failed.extend(state.sealed.drain(..).map(|pending| pending.done));
            failed.push(Arc::clone(&state.open.done));
            drop(state);
            self.watch.notify_all();
            for done in failed {
                done.complete(Err(reason.clone()));
            }
            let Ok(next) = self.lock() else { return };
            state = next;
        }
    }

    /// Notes that background work on the engine began (`what`: "a
    /// checkpoint", "a segment's preparation"), until the guard returned is
    /// dropped: the watchdog watches it too.
    pub(crate) fn background_work(&self, what: &'static str) -> BackgroundWork<'_, T> {
        let mut id = None;
        if let Ok(mut state) = self.lock() {
            let work = state.next_work;
            state.next_work += 1;
            state.background.push((work, what, Instant::now()));
            id = Some(work);
        }
        BackgroundWork { queue: self, id }
    }

    /// Wakes whoever waits in [`CommitQueue::wait_unless_stalled`]: a thread
    /// it waits for is finishing.
    pub(crate) fn wake_closer(&self) {
        // Under the lock, so that a waiter between its check and its wait
        // cannot miss it.
        drop(self.lock());
        self.watch.notify_all();
    }

    /// Whether the watchdog failed the queue: its committer, or a checkpoint,
    /// may be blocked for good.
    pub(crate) fn stalled(&self) -> bool {
        self.lock().is_ok_and(|state| state.stalled)
    }

    /// Waits until `done` says yes or the watchdog fails the queue; true if
    /// `done` said yes. For closing: a thread is joined only once it finished,
    /// and one stuck in the engine is left behind.
    pub(crate) fn wait_unless_stalled(&self, mut done: impl FnMut() -> bool) -> bool {
        let Ok(mut state) = self.lock() else { return done() };
        loop {
            if done() {
                return true;
            }
            if state.stalled {
                return false;
            }
            // `done` may not notify: look again at least this often.
            let Ok((next, _)) = self.watch.wait_timeout(state, CLOSE_POLL) else { return done() };
            state = next;
        }
    }

    /// Ends the watchdog: the last step of closing the store.
    pub(crate) fn retire_watchdog(&self) {
        if let Ok(mut state) = self.lock() {
            state.watch_retired = true;
        }
        self.watch.notify_all();
    }

    /// The next batch to write, waiting for one (and lingering for released
    /// writers, see the module documentation); `None` once stopped and drained.
    fn next_pending(&self) -> Option<Pending<T>> {
        let mut state = self.lock().ok()?;
        let linger = state.last_sync.mul_f64(LINGER_FRACTION).min(state.max_linger);
        let mut deadline: Option<Instant> = None;
        loop {
            if let Some(pending) = state.sealed.pop_front() {
                state.wake_at = u64::MAX;
                return Some(pending);
            }
            if state.stop && state.open.buf.is_empty() {
                return None;
            }
            if !state.open.buf.is_empty() {
                let enough = state.open.n_writes >= state.last_batch_writes || state.stop;
                let now = Instant::now();
                let until = *deadline.get_or_insert(now + linger);
                if enough || now >= until {
                    state.wake_at = u64::MAX;
                    let capacity = state.open.buf.bytes.len().max(state.last_batch_bytes);
                    state.last_batch_bytes = state.open.buf.bytes.len();
                    let next = Pending { buf: BatchBuf::with_capacity(capacity), ..Pending::default() };
                    return Some(std::mem::replace(&mut state.open, next));
                }
                state.wake_at = state.last_batch_writes;
                state = self.work.wait_timeout(state, until - now).ok()?.0;
                continue;
            }
            state.wake_at = 1;
            state = self.work.wait(state).ok()?;
        }
    }

    /// Stops the committer once everything queued is written.
    pub(crate) fn stop(&self) {
        if let Ok(mut state) = self.lock() {
            state.stop = true;
        }
        self.work.notify_all();
    }

    /// Fails every later write: the store can no longer make anything durable.
    pub(crate) fn poison(&self, reason: String) {
        // Even past a panic under the lock: the reason is one field, set whole.
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.poisoned.get_or_insert(reason);
    }

    /// Why the store fails every write, if it does. A lock poisoned by a panic
    /// counts: every write fails on it, so the store says so (a health check
    /// asks this) rather than look writable.
    pub(crate) fn poisoned(&self) -> Option<String> {
        match self.state.lock() {
            Ok(state) => state.poisoned.clone(),
            Err(poisoned) => Some(
                poisoned
                    .into_inner()
                    .poisoned
                    .clone()
                    .unwrap_or_else(|| "a panic poisoned the commit queue's lock".to_owned()),
            ),
        }
    }

    /// The LSN up to which the log is durable.
    pub(crate) fn durable_end(&self) -> u64 {
        self.lock().map(|state| state.durable_end).unwrap_or(0)
    }

    pub(crate) fn stats(&self) -> BarrierStats {
        self.lock().map(|state| state.stats).unwrap_or_default()
    }

    pub(crate) fn count_checkpoint(&self) {
        if let Ok(mut state) = self.lock() {
            state.stats.n_checkpoints += 1;
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, State<T>>, Error> {
        self.state.lock().map_err(|_| lock_poisoned())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

    use logbook_core::{ChainHash, Seq, SessionId};

    use super::*;
    use crate::engine::mem::MemLogDir;
    use crate::wal::BodyCodec;

    /// Panics on its first batch, as a bug while publishing would.
    struct Panicking;

    impl Publisher<()> for Panicking {
        fn publish(&self, _: &BatchHeader, _: Vec<()>) {
            panic!("a publishing bug");
        }
    }

    fn submit(queue: &CommitQueue<()>) -> Result<Ticket, Error> {
        queue.submit(64, |buf| {
            let session = SessionId::from_parts(1, 1);
            let hash = ChainHash::from_bytes([1; 32]);
            buf.push_record(session, Seq::ZERO, hash, hash, 3, BodyCodec::Raw, b"body");
            Ok(None)
        })
    }

    #[test]
    fn a_committer_that_dies_fails_its_writers_instead_of_leaving_them_waiting() {
        let queue = Arc::new(CommitQueue::<()>::new(0, Duration::ZERO));
        let ticket = submit(&queue).unwrap();
        let writer = LogWriter::new(Arc::new(MemLogDir::default()), 0, 0, None);
        let committer = {
            let queue = Arc::clone(&queue);
            std::thread::spawn(move || queue.run(writer, &Panicking))
        };
        assert!(committer.join().is_err(), "the publisher panicked");
        // Waited for on another thread, with a deadline: a lost ticket must
        // fail the test, not hang it.
        let (sent, outcome) = std::sync::mpsc::channel();
        std::thread::spawn(move || sent.send(ticket.wait()));
        let outcome = outcome.recv_timeout(Duration::from_secs(60)).expect("the waiting writer hears of it");
        assert!(matches!(outcome, Err(Error::Poisoned { .. })), "{outcome:?}");
        assert!(submit(&queue).is_err(), "and later writers are refused at once");
    }
}
