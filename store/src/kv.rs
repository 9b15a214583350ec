//! Blobs and resources: the store's non-log data.
//!
//! Blobs are keyed by the blake3 hash of their bytes, so a payload referenced
//! by many events or forks is stored once; their bytes are an entry of the
//! write-ahead log and the index records where, and a read re-hashes and
//! refuses bytes that do not match their key. Resources are opaque values
//! under `(kind, key)` with compare-and-swap, for the API's objects: the
//! engine holds the current value, and each write is also a log entry, so it
//! is durable when its batch is and recovery can replay it. Both pass the same
//! group commit as appends before a write returns.

use std::ops::Bound;

use logbook_core::limits::MAX_BLOB_BYTES;
use logbook_core::{Digest, chain};

use crate::engine::{Direction, Engine, Tree, prefix_range};
use crate::error::{Error, StoreCorruption};
use crate::keys::{self, ResourceKind};
use crate::log::{Effect, LogStore};
use crate::wal::{self, Location};
use crate::{Blobs, MAX_READ_RECORDS, Resources, frame};

/// Longest resource key: the log stores its length in 16 bits.
pub(crate) const MAX_RESOURCE_KEY_BYTES: usize = u16::MAX as usize;

impl<E: Engine> Blobs for LogStore<E> {
    fn put_blob(&self, bytes: &[u8]) -> Result<Digest, Error> {
        let core = &*self.inner.core;
        core.check_poisoned()?;
        if bytes.len() > MAX_BLOB_BYTES {
            return Err(Error::Invalid(format!("blob of {} bytes is over the limit of {MAX_BLOB_BYTES}", bytes.len())));
        }
        let digest = chain::digest(bytes);
        if core.engine.get(Tree::Log, &keys::blob_key(digest))?.is_some() {
            // Stored already, and durable: a blob's key is indexed only once
            // its batch is synced (`Core::publish`).
            return Ok(digest);
        }
        let (codec, body) = wal::code_blob(bytes);
        let ticket = core.queue.submit(wal::BLOB_HEADER_BYTES + body.len(), |buf| {
            let offset = buf.next_offset();
            let len = buf.push_blob(digest, codec, &body);
            Ok(Some(vec![Effect::Blob { digest, offset, len }]))
        })?;
        ticket.wait()?;
        Ok(digest)
    }

    fn get_blob(&self, hash: Digest) -> Result<Option<Vec<u8>>, Error> {
        let core = &*self.inner.core;
        let Some(value) = core.engine.get(Tree::Log, &keys::blob_key(hash))? else {
            return Ok(None);
        };
        let corrupt = |what: String| Error::StoreCorrupted(StoreCorruption { place: format!("blob {hash}"), what });
        let (lsn, len) = keys::parse_blob_value(&value).ok_or_else(|| corrupt("malformed blob location".to_owned()))?;
        let location = Location { lsn, len };
        let entry =
            wal::read_entry(&*core.log, location).map_err(|err| corrupt(format!("reading {location}: {err}")))?;
        wal::decode_blob(&entry, hash).map(Some).map_err(corrupt)
    }

    fn has_blob(&self, hash: Digest) -> Result<bool, Error> {
        Ok(self.inner.core.engine.get(Tree::Log, &keys::blob_key(hash))?.is_some())
    }
}

impl<E: Engine> Resources for LogStore<E> {
    fn get_resource(&self, kind: ResourceKind, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        match self.inner.core.engine.get(Tree::Resources, &keys::resource_key(kind, key))? {
            Some(framed) => decode_resource(kind, key, &framed).map(Some),
            None => Ok(None),
        }
    }

    fn swap_resource(
        &self,
        kind: ResourceKind,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<Result<(), Option<Vec<u8>>>, Error> {
        let core = &*self.inner.core;
        core.check_poisoned()?;
        if key.len() > MAX_RESOURCE_KEY_BYTES {
            return Err(Error::Invalid(format!(
                "resource key of {} bytes is over {MAX_RESOURCE_KEY_BYTES}",
                key.len()
            )));
        }
        let full_key = keys::resource_key(kind, key);
        let framed = new.map(frame::encode);
        let ticket = {
            // Held until the write is in the log's batch, so that resource
            // writes reach the engine and the log in the same order.
            let _order = core.resource_lock.lock().map_err(|_| Error::Engine("resource lock poisoned".to_owned()))?;
            // The engine compares stored (framed) bytes, and framing is deterministic
            // only per codec decision, so compare on the decoded value and swap on the
            // exact stored bytes.
            let stored = core.engine.get(Tree::Resources, &full_key)?;
            let current = match &stored {
                Some(framed) => Some(decode_resource(kind, key, framed)?),
                None => None,
            };
            if current.as_deref() != old {
                return Ok(Err(current));
            }
            if let Err(now) =
                core.engine.compare_and_swap(Tree::Resources, &full_key, stored.as_deref(), framed.clone())?
            {
                return match now {
                    Some(framed) => Ok(Err(Some(decode_resource(kind, key, &framed)?))),
                    None => Ok(Err(None)),
                };
            }
            core.queue.submit(16 + key.len() + framed.as_ref().map_or(0, Vec::len), |buf| {
                buf.push_resource(kind, key, framed.as_deref());
                Ok(None)
            })?
        };
        ticket.wait()?;
        Ok(Ok(()))
    }

    fn scan_resources(
        &self,
        kind: ResourceKind,
        prefix: &[u8],
        after: Option<&[u8]>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, Error> {
        let full_prefix = keys::resource_key(kind, prefix);
        let (mut start, mut end) = prefix_range(&full_prefix);
        if let Some(after) = after {
            // The cursor narrows the prefix range; it can never widen it, so a
            // crafted cursor cannot reach keys outside the prefix (another
            // tenant's objects).
            let cursor = keys::resource_key(kind, after);
            let past_end = match &end {
                Bound::Excluded(limit) => cursor >= *limit,
                Bound::Included(_) | Bound::Unbounded => false,
            };
            match direction {
                Direction::Forward if cursor < full_prefix => {}
                Direction::Forward if past_end => return Ok(Vec::new()),
                Direction::Forward => start = Bound::Excluded(cursor),
                Direction::Backward if cursor < full_prefix => return Ok(Vec::new()),
                Direction::Backward if past_end => {}
                Direction::Backward => end = Bound::Excluded(cursor),
            }
        }
        let pairs =
            self.inner.core.engine.range(Tree::Resources, (start, end), direction, limit.min(MAX_READ_RECORDS))?;
        pairs
            .into_iter()
            .map(|(full_key, framed)| {
                let key = full_key.get(1..).unwrap_or_default().to_vec();
                let value = decode_resource(kind, &key, &framed)?;
                Ok((key, value))
            })
            .collect()
    }
}

fn decode_resource(kind: ResourceKind, key: &[u8], framed: &[u8]) -> Result<Vec<u8>, Error> {
    frame::decode(framed).map_err(|err| {
        Error::StoreCorrupted(StoreCorruption {
            place: format!("resource {kind:?} {}", String::from_utf8_lossy(key)),
            what: err.to_string(),
        })
    })
}
