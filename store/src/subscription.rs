//! Subscriptions: following a session's log as it grows.
//!
//! A subscription reads durable records from its cursor on and then waits for
//! the session's durable head to move. It never sees a record before that
//! record's barrier has passed, and never skips or repeats one: it reads by seq.
//! Its memory use is bounded by the batch size the caller asks for. Awaited
//! on a tokio runtime, a batch that must be read from the log (not in the
//! session's tail cache: a replay from far back) is read on the blocking
//! pool, so that it does not hold an async worker.

use std::sync::Arc;

use logbook_core::{Record, Seq, SessionId};
use tokio::sync::watch;

use crate::Head;
use crate::engine::Engine;
use crate::error::Error;
use crate::log::Inner;

/// What a subscription reads from: the store behind a type-erased handle.
pub(crate) trait Source: Send + Sync + std::fmt::Debug {
    fn durable_rx(&self, session: SessionId) -> Result<watch::Receiver<Head>, Error>;
    /// Records `from .. end` that fit in `max_bytes` (at least one).
    fn read_range(&self, session: SessionId, from: Seq, end: Seq, max_bytes: usize) -> Result<Vec<Record>, Error>;
    /// Whether `read_range` of these would be served from memory.
    fn is_cached(&self, session: SessionId, from: Seq, end: Seq) -> bool;
}

impl<E: Engine> Source for Inner<E> {
    fn durable_rx(&self, session: SessionId) -> Result<watch::Receiver<Head>, Error> {
        Ok(self.core.slot_or_create(session)?.durable_rx())
    }

    fn read_range(&self, session: SessionId, from: Seq, end: Seq, max_bytes: usize) -> Result<Vec<Record>, Error> {
        self.core.read_range_within(session, from, end, max_bytes)
    }

    fn is_cached(&self, session: SessionId, from: Seq, end: Seq) -> bool {
        self.core.is_cached(session, from, end)
    }
}

/// Follows one session from a seq on. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    source: Arc<dyn Source>,
    session: SessionId,
    next: Seq,
    rx: Option<watch::Receiver<Head>>,
    /// A read of the batch from `next` on the blocking pool, kept across a
    /// cancelled [`Subscription::next_batch`] so the next call awaits it
    /// rather than starting over.
    reading: Option<tokio::task::JoinHandle<Result<Vec<Record>, Error>>>,
}

impl Subscription {
    pub(crate) fn new(source: Arc<dyn Source>, session: SessionId, from: Seq) -> Subscription {
        Subscription { source, session, next: from, rx: None, reading: None }
    }

    /// The seq of the next record this subscription will deliver.
    pub fn position(&self) -> Seq {
        self.next
    }

    /// Waits for and returns the next records (at most `max`). Returns `None`
    /// only if the store was dropped.
    ///
    /// Cancel-safe: dropped mid-read, it delivers nothing and moves nothing;
    /// the next call picks the same read up. (A read left behind when the
    /// subscription is dropped finishes on its own, holding the store open
    /// until then: one batch.)
    pub async fn next_batch(&mut self, max: usize) -> Result<Option<Vec<Record>>, Error> {
        self.next_batch_within(max, usize::MAX).await
    }

    /// [`Subscription::next_batch`] of records that together take at most
    /// `max_bytes` (counted as the store's read budget counts them; always
    /// at least one record), so that a consumer holds a bounded batch
    /// whatever the size of the session's events. Cancel-safe alike.
    pub async fn next_batch_within(&mut self, max: usize, max_bytes: usize) -> Result<Option<Vec<Record>>, Error> {
        loop {
            if let Some(reading) = self.reading.as_mut() {
                let read = reading.await;
                self.reading = None;
                let batch = read.map_err(|err| Error::Engine(format!("a subscription's read failed: {err}")))??;
                if !batch.is_empty() {
                    self.advance(&batch);
                    return Ok(Some(batch));
                }
            } else if let Some((from, end)) = self.next_range(max)? {
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) if !self.source.is_cached(self.session, from, end) => {
                        let (source, session) = (Arc::clone(&self.source), self.session);
                        self.reading =
                            Some(runtime.spawn_blocking(move || source.read_range(session, from, end, max_bytes)));
                        continue;
                    }
                    Ok(_) | Err(_) => {
                        let batch = self.source.read_range(self.session, from, end, max_bytes)?;
                        if !batch.is_empty() {
                            self.advance(&batch);
                            return Ok(Some(batch));
                        }
                    }
                }
            }
            let Some(rx) = self.rx.as_mut() else { return Ok(None) };
            if rx.changed().await.is_err() {
                return Ok(None);
            }
        }
    }

    /// The records durable now from the cursor on (at most `max`), without waiting.
    pub fn try_next_batch(&mut self, max: usize) -> Result<Vec<Record>, Error> {
        // A read left by a cancelled `next_batch` covers the same records: its
        // result is dropped, and they are read here instead.
        self.reading = None;
        let Some((from, end)) = self.next_range(max)? else { return Ok(Vec::new()) };
        let records = self.source.read_range(self.session, from, end, usize::MAX)?;
        self.advance(&records);
        Ok(records)
    }

    /// The seqs of the next batch of at most `max` durable records, if any.
    fn next_range(&mut self, max: usize) -> Result<Option<(Seq, Seq)>, Error> {
        if self.rx.is_none() {
            self.rx = Some(self.source.durable_rx(self.session)?);
        }
        let durable = match self.rx.as_mut() {
            Some(rx) => rx.borrow_and_update().next,
            None => return Ok(None),
        };
        if self.next >= durable {
            return Ok(None);
        }
        Ok(Some((self.next, Seq::new(durable.get().min(self.next.get().saturating_add(max.max(1) as u64))))))
    }

    fn advance(&mut self, records: &[Record]) {
        if let Some(last) = records.last() {
            self.next = Seq::new(last.seq().get() + 1);
        }
    }
}
