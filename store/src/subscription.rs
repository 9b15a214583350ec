//! Subscriptions: following a session's log as it grows.
//!
//! A subscription reads durable records from its cursor on and then waits for
//! the session's durable head to move. It never sees a record before that
//! record's barrier has passed, and never skips or repeats one: it reads by seq.
//! Its memory use is bounded by the batch size the caller asks for.

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
    fn read_range(&self, session: SessionId, from: Seq, end: Seq) -> Result<Vec<Record>, Error>;
}

impl<E: Engine> Source for Inner<E> {
    fn durable_rx(&self, session: SessionId) -> Result<watch::Receiver<Head>, Error> {
        Ok(self.core.slot_or_create(session)?.durable_rx())
    }

    fn read_range(&self, session: SessionId, from: Seq, end: Seq) -> Result<Vec<Record>, Error> {
        self.core.read_range(session, from, end)
    }
}

/// Follows one session from a seq on. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    source: Arc<dyn Source>,
    session: SessionId,
    next: Seq,
    rx: Option<watch::Receiver<Head>>,
}

impl Subscription {
    pub(crate) fn new(source: Arc<dyn Source>, session: SessionId, from: Seq) -> Subscription {
        Subscription { source, session, next: from, rx: None }
    }

    /// The seq of the next record this subscription will deliver.
    pub fn position(&self) -> Seq {
        self.next
    }

    /// Waits for and returns the next records (at most `max`). Returns `None`
    /// only if the store was dropped.
    pub async fn next_batch(&mut self, max: usize) -> Result<Option<Vec<Record>>, Error> {
        loop {
            let batch = self.try_next_batch(max)?;
            if !batch.is_empty() {
                return Ok(Some(batch));
            }
            let Some(rx) = self.rx.as_mut() else { return Ok(None) };
            if rx.changed().await.is_err() {
                return Ok(None);
            }
        }
    }

    /// The records durable now from the cursor on (at most `max`), without waiting.
    pub fn try_next_batch(&mut self, max: usize) -> Result<Vec<Record>, Error> {
        if self.rx.is_none() {
            self.rx = Some(self.source.durable_rx(self.session)?);
        }
        let durable = match self.rx.as_mut() {
            Some(rx) => rx.borrow_and_update().next,
            None => return Ok(Vec::new()),
        };
        if self.next >= durable {
            return Ok(Vec::new());
        }
        let end = Seq::new(durable.get().min(self.next.get().saturating_add(max.max(1) as u64)));
        let records = self.source.read_range(self.session, self.next, end)?;
        if let Some(last) = records.last() {
            self.next = Seq::new(last.seq().get() + 1);
        }
        Ok(records)
    }
}
