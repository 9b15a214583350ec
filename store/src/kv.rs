//! Blobs and resources: the store's non-log data.
//!
//! Blobs are keyed by the blake3 hash of their bytes, so a payload referenced
//! by many events or forks is stored once; a read re-hashes and refuses bytes
//! that do not match their key. Resources are opaque values under
//! `(kind, key)` with compare-and-swap, for the API's objects. Both pass the
//! same durability barrier as appends before a write returns.

use std::ops::Bound;

use logbook_core::limits::MAX_BLOB_BYTES;
use logbook_core::{Digest, chain};

use crate::engine::{Direction, Engine, Tree, prefix_range};
use crate::error::{Error, StoreCorruption};
use crate::keys::{self, ResourceKind};
use crate::log::LogStore;
use crate::{Blobs, MAX_READ_RECORDS, Resources, frame};

impl<E: Engine> Blobs for LogStore<E> {
    fn put_blob(&self, bytes: &[u8]) -> Result<Digest, Error> {
        let inner = &*self.inner;
        inner.barrier.check()?;
        if bytes.len() > MAX_BLOB_BYTES {
            return Err(Error::Invalid(format!("blob of {} bytes is over the limit of {MAX_BLOB_BYTES}", bytes.len())));
        }
        let hash = chain::digest(bytes);
        if inner.engine.get(Tree::Blobs, hash.as_bytes())?.is_none() {
            inner.engine.apply(Tree::Blobs, vec![(hash.as_bytes().to_vec(), Some(frame::encode(bytes)))])?;
        }
        // Even when the blob was already there: a concurrent writer may have put it
        // and not yet passed its barrier.
        inner.wait_durable(None)?;
        Ok(hash)
    }

    fn get_blob(&self, hash: Digest) -> Result<Option<Vec<u8>>, Error> {
        let Some(framed) = self.inner.engine.get(Tree::Blobs, hash.as_bytes())? else {
            return Ok(None);
        };
        let corrupt = |what: String| Error::StoreCorrupted(StoreCorruption { place: format!("blob {hash}"), what });
        let bytes = frame::decode(&framed).map_err(|err| corrupt(err.to_string()))?;
        if chain::digest(&bytes) != hash {
            return Err(corrupt("contents do not match the blob's hash".to_owned()));
        }
        Ok(Some(bytes))
    }

    fn has_blob(&self, hash: Digest) -> Result<bool, Error> {
        Ok(self.inner.engine.get(Tree::Blobs, hash.as_bytes())?.is_some())
    }
}

impl<E: Engine> Resources for LogStore<E> {
    fn get_resource(&self, kind: ResourceKind, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        match self.inner.engine.get(Tree::Resources, &keys::resource_key(kind, key))? {
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
        let inner = &*self.inner;
        inner.barrier.check()?;
        let full_key = keys::resource_key(kind, key);
        // The engine compares stored (framed) bytes, and framing is deterministic
        // only per codec decision, so compare on the decoded value and swap on the
        // exact stored bytes.
        let stored = inner.engine.get(Tree::Resources, &full_key)?;
        let current = match &stored {
            Some(framed) => Some(decode_resource(kind, key, framed)?),
            None => None,
        };
        if current.as_deref() != old {
            return Ok(Err(current));
        }
        let res =
            inner.engine.compare_and_swap(Tree::Resources, &full_key, stored.as_deref(), new.map(frame::encode))?;
        match res {
            Ok(()) => {
                inner.wait_durable(None)?;
                Ok(Ok(()))
            }
            Err(now) => match now {
                Some(framed) => Ok(Err(Some(decode_resource(kind, key, &framed)?))),
                None => Ok(Err(None)),
            },
        }
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
        let pairs = self.inner.engine.range(Tree::Resources, (start, end), direction, limit.min(MAX_READ_RECORDS))?;
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
