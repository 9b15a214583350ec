//! Forks by reference: a new session whose log is another's prefix plus its
//! own records, without copying the prefix.
//!
//! A fork is one log entry (child, parent, the parent's last shared seq and
//! its hash there), written in the same batch as the fork's first records, so
//! creating one costs the same whatever the parent's length: one read of the
//! parent's record at the fork point and one group commit. The fork's own
//! records start at `at_seq + 1` and chain from the parent's hash at `at_seq`,
//! so the fork proves its ancestry. Reads of the inherited prefix are served by
//! the sessions that store it (flattened through forks of forks, see
//! [`crate::session::Origin`]), with the records carrying the fork's id.
//!
//! Logs are never deleted (deleting a session through the API appends
//! `session.deleted` and removes its resource; its records stay), so a
//! parent's records outlive every fork that references them, and a parent
//! that keeps growing is seen by its forks only up to their fork points. A
//! purge of records, should one ever be added, must refuse a session that
//! [`Fork::forks_of`] lists forks of.

use logbook_core::{Entry, Record, Seq, SessionId};

use crate::engine::{Direction, Engine, Tree, prefix_range};
use crate::error::{AppendError, Error, ForkError};
use crate::keys::{self, LogKeyKind};
use crate::log::{LogStore, prepare};
use crate::recovery::{MAX_FORK_DEPTH, flatten};
use crate::session::{Origin, WriteHead};
use crate::wal::ForkEntry;
use crate::{Fork, ForkOrigin, Read};

/// Most forks [`Fork::forks_of`] lists.
const MAX_FORKS_LISTED: usize = 10_000;

impl<E: Engine> Fork for LogStore<E> {
    fn fork(
        &self,
        child: SessionId,
        parent: SessionId,
        at_seq: Seq,
        entries: &[Entry],
    ) -> Result<Vec<Record>, ForkError> {
        let core = &*self.inner.core;
        core.check_poisoned()?;
        if child == parent {
            return Err(ForkError::SelfFork { session: child });
        }
        let prepared = prepare(entries, true)?;
        let parent_head = self.head(parent)?;
        if at_seq >= parent_head.next {
            return Err(ForkError::BeyondHead { parent, at_seq, next: parent_head.next });
        }
        let parent_slot = core.slot(parent).ok_or(ForkError::BeyondHead { parent, at_seq, next: Seq::ZERO })?;
        let shared = core.read_range(parent, at_seq, Seq::new(at_seq.get() + 1))?;
        let Some(parent_hash) = shared.last().map(Record::hash) else {
            return Err(ForkError::BeyondHead { parent, at_seq, next: parent_head.next });
        };
        let parent_ancestry = parent_slot.origin.get().map(|o| o.ancestry.clone()).unwrap_or_default();
        let ancestry = flatten(&parent_ancestry, parent, parent_slot.origin.get().map(Origin::own_start), at_seq);
        if ancestry.len() > MAX_FORK_DEPTH {
            return Err(ForkError::TooDeep { max: MAX_FORK_DEPTH });
        }
        let own_start = Seq::new(at_seq.get() + 1);
        if own_start.plus(entries.len() as u64).is_none() {
            return Err(
                AppendError::SessionFull { session: child, max: logbook_core::limits::MAX_EVENTS_PER_SESSION }.into()
            );
        }
        let slot = core.slot_or_create(child)?;
        let (ticket, records) = {
            let mut head = slot.lock_write()?;
            slot.check_corrupt()?;
            if head.next != Seq::ZERO || slot.origin.get().is_some() {
                return Err(ForkError::Exists { child });
            }
            let origin = Origin { parent, at_seq, parent_hash, ancestry };
            if slot.origin.set(origin).is_err() {
                return Err(ForkError::Exists { child });
            }
            slot.lock_index()?.indexed_next = own_start;
            *head = WriteHead { next: own_start, hash: parent_hash };
            let entry = ForkEntry { child, parent, at_seq, parent_hash };
            core.submit_records(&slot, &mut head, prepared, Some(entry))?
        };
        ticket.wait()?;
        Ok(records)
    }

    fn fork_origin(&self, session: SessionId) -> Result<Option<ForkOrigin>, Error> {
        let Some(slot) = self.inner.core.slot(session) else { return Ok(None) };
        if slot.durable_head().next == Seq::ZERO {
            return Ok(None);
        }
        Ok(slot.origin.get().map(|o| ForkOrigin { parent: o.parent, at_seq: o.at_seq, parent_hash: o.parent_hash }))
    }

    fn forks_of(&self, parent: SessionId) -> Result<Vec<(SessionId, Seq)>, Error> {
        let prefix = keys::session_prefix(LogKeyKind::Fork, parent);
        let (start, end) = prefix_range(&prefix);
        let pairs = self.inner.core.engine.range(Tree::Log, (start, end), Direction::Forward, MAX_FORKS_LISTED)?;
        let mut out = Vec::with_capacity(pairs.len());
        for (key, value) in pairs {
            let child = keys::parse_fork_key(&key).map(|(_, child)| child);
            let at_seq = <[u8; 8]>::try_from(value.as_slice()).ok().map(u64::from_be_bytes);
            if let (Some(child), Some(at_seq)) = (child, at_seq) {
                out.push((child, Seq::new(at_seq)));
            }
        }
        Ok(out)
    }
}
