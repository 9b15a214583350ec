//! Blobs and resources: the store's non-log data.
//!
//! Blobs are keyed by the blake3 hash of their bytes, so a payload referenced
//! by many events or forks is stored once; their bytes are an entry of the
//! write-ahead log and the index records where, and a read re-hashes and
//! refuses bytes that do not match their key. Resources are opaque values
//! under `(kind, key)` with compare-and-swap, for the API's objects: each
//! write is a log entry, and the engine takes the new value only once that
//! entry's batch is durable (as blob and fork keys), so the engine never
//! holds a value the log lacks: a checkpoint's sync of the engine cannot make
//! an unacknowledged write durable, and a failed write has nothing to undo.
//! Until then the write is a [`PendingResources`] entry, which later writes of
//! the key compare against. Both pass the same group commit as appends
//! before a write returns.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::MutexGuard;
use std::sync::atomic::Ordering;

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

/// Largest resource value (framed): objects are small; this bounds a batch.
pub(crate) const MAX_RESOURCE_VALUE_BYTES: usize = 64 << 20;

/// Resource writes queued in the log whose batch is not durable yet: per
/// full key, the value the latest of them sets, and which write that is.
/// Reads see only the engine (durable values); a write compares against the
/// pending value first, so writers of one key are serialized as before. An
/// entry leaves when its write is published (the engine has the value then)
/// or fails, unless a later write of the key replaced it.
#[derive(Debug, Default)]
pub(crate) struct PendingResources {
    next_write: u64,
    by_key: HashMap<Vec<u8>, PendingValue>,
}

#[derive(Debug)]
struct PendingValue {
    write: u64,
    framed: Option<Vec<u8>>,
}

impl<E: Engine> crate::log::Core<E> {
    /// The pending resource writes, locked.
    fn lock_resources(&self) -> Result<MutexGuard<'_, PendingResources>, Error> {
        self.resources.lock().map_err(|_| Error::Engine("resource lock poisoned".to_owned()))
    }

    /// `write` of `key` is settled (published or failed): forgets it, unless a
    /// later write of the key is pending.
    pub(crate) fn settle_resource(&self, key: &[u8], write: u64) {
        // A poisoned lock still holds the map; the entry must go either way.
        let mut pending = self.resources.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if pending.by_key.get(key).is_some_and(|value| value.write == write) {
            pending.by_key.remove(key);
        }
    }
}

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

/// A resource's value as the store holds it: framed, perhaps compressed.
/// Equal stored bytes always decode to equal values, so a caller that keeps
/// what it made of a value can compare these to learn that the value did not
/// change, without decompressing it again (see
/// [`LogStore::get_resource_stored`]). Unequal bytes may still hold an equal
/// value: decode them to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResource {
    kind: ResourceKind,
    key: Vec<u8>,
    framed: Vec<u8>,
}

impl StoredResource {
    /// The value, as [`Resources::get_resource`] returns it.
    pub fn decode(&self) -> Result<Vec<u8>, Error> {
        decode_resource(self.kind, &self.key, &self.framed)
    }
}

impl<E: Engine> LogStore<E> {
    /// The resource `key` of `kind` as stored, not yet decoded: for callers
    /// that keep decoded values and decode again only when the stored bytes
    /// differ ([`StoredResource`]).
    pub fn get_resource_stored(&self, kind: ResourceKind, key: &[u8]) -> Result<Option<StoredResource>, Error> {
        Ok(self.inner.core.engine.get(Tree::Resources, &keys::resource_key(kind, key))?.map(|framed| StoredResource {
            kind,
            key: key.to_vec(),
            framed,
        }))
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
        // Bounded as read back (decoded), not only as stored: a value that
        // compresses well would otherwise be accepted and never read again.
        if let Some(len) = new.map(<[u8]>::len).filter(|len| *len > MAX_RESOURCE_VALUE_BYTES) {
            return Err(Error::Invalid(format!("resource value of {len} bytes is over {MAX_RESOURCE_VALUE_BYTES}")));
        }
        let framed = new.map(frame::encode);
        if let Some(len) = framed.as_ref().map(Vec::len).filter(|len| *len > MAX_RESOURCE_VALUE_BYTES) {
            return Err(Error::Invalid(format!(
                "resource value of {len} bytes (stored) is over {MAX_RESOURCE_VALUE_BYTES}"
            )));
        }
        let (ticket, write) = {
            // Held until the write is queued, so that writes of a key are
            // compared against the latest queued one and logged in order.
            let mut pending = core.lock_resources()?;
            // Compared on the decoded value: framing is deterministic only per
            // codec decision.
            let durable;
            let stored = match pending.by_key.get(&full_key) {
                Some(value) => value.framed.as_deref(),
                None => {
                    durable = core.engine.get(Tree::Resources, &full_key)?;
                    durable.as_deref()
                }
            };
            let current = stored.map(|framed| decode_resource(kind, key, framed)).transpose()?;
            if current.as_deref() != old {
                return Ok(Err(current));
            }
            let write = pending.next_write;
            pending.next_write += 1;
            let effect = Effect::Resource { key: full_key.clone(), framed: framed.clone(), write };
            let ticket = core.queue.submit(16 + key.len() + framed.as_ref().map_or(0, Vec::len), |buf| {
                buf.push_resource(kind, key, framed.as_deref());
                Ok(Some(vec![effect]))
            })?;
            pending.by_key.insert(full_key.clone(), PendingValue { write, framed });
            (ticket, write)
        };
        if let Err(err) = ticket.wait() {
            // Its batch failed (the store is now poisoned): the engine never
            // had the value, unless the watchdog failed a batch the committer
            // later finished (a stall: then the value is in the log, and the
            // engine, and comes back after a restart, like a write acknowledged
            // just before a crash whose caller never heard).
            core.settle_resource(&full_key, write);
            return Err(err);
        }
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
        let core = &self.inner.core;
        let max_bytes = core.read_bytes.load(Ordering::Relaxed);
        let pairs = core.engine.range_within(
            Tree::Resources,
            (start, end),
            direction,
            limit.min(MAX_READ_RECORDS),
            max_bytes,
        )?;
        // The budget holds for what is returned, decoded: the engine's range
        // counted stored (often compressed) bytes. Always at least one.
        let mut out = Vec::with_capacity(pairs.len());
        let mut held = 0usize;
        for (full_key, framed) in pairs {
            let key = full_key.get(1..).unwrap_or_default().to_vec();
            let value = decode_resource(kind, &key, &framed)?;
            held = held.saturating_add(key.len() + value.len());
            if held > max_bytes && !out.is_empty() {
                break;
            }
            out.push((key, value));
        }
        Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemStore;

    /// Goal: a caller that compares stored forms (`get_resource_stored`)
    /// sees a change whenever the value changed, and decodes what
    /// `get_resource` returns. Method: a compressible value read twice, then
    /// swapped for another, read stored and plain.
    #[test]
    fn stored_forms_are_equal_while_the_value_is_and_decode_to_it() {
        let store = MemStore::in_memory().unwrap();
        let v1 = "a session with a long agent snapshot ".repeat(64).into_bytes();
        let v2 = "a session with a long agent snapshot, updated ".repeat(64).into_bytes();
        assert_eq!(store.get_resource_stored(ResourceKind::Session, b"k").unwrap(), None);
        store.swap_resource(ResourceKind::Session, b"k", None, Some(&v1)).unwrap().unwrap();
        let first = store.get_resource_stored(ResourceKind::Session, b"k").unwrap().unwrap();
        let again = store.get_resource_stored(ResourceKind::Session, b"k").unwrap().unwrap();
        assert_eq!(first, again);
        assert_eq!(first.decode().unwrap(), v1);
        assert_eq!(store.get_resource(ResourceKind::Session, b"k").unwrap(), Some(v1.clone()));
        store.swap_resource(ResourceKind::Session, b"k", Some(&v1), Some(&v2)).unwrap().unwrap();
        let changed = store.get_resource_stored(ResourceKind::Session, b"k").unwrap().unwrap();
        assert_ne!(first, changed);
        assert_eq!(changed.decode().unwrap(), v2);
    }

    /// Goal: a resource write the log refused leaves the old value, so no
    /// later checkpoint can make durable what the caller was told failed.
    /// Method: a store whose committer was told to stop (as at close), then a
    /// swap that passes the checks but cannot be submitted.
    #[test]
    fn a_swap_the_log_refuses_leaves_the_old_value() {
        let store = MemStore::in_memory().unwrap();
        store.swap_resource(ResourceKind::Session, b"k", None, Some(b"v1")).unwrap().unwrap();
        store.inner.core.queue.stop();
        assert!(store.swap_resource(ResourceKind::Session, b"k", Some(b"v1"), Some(b"v2")).is_err());
        assert_eq!(store.get_resource(ResourceKind::Session, b"k").unwrap().as_deref(), Some(&b"v1"[..]));
        assert!(store.swap_resource(ResourceKind::Session, b"new", None, Some(b"v")).is_err());
        assert_eq!(store.get_resource(ResourceKind::Session, b"new").unwrap(), None);
    }

    /// Goal: a resource value too large for the log is a typed error, not a
    /// batch a reader would take for damage. Method: incompressible values
    /// just under and over the limit.
    #[test]
    fn an_oversized_resource_value_is_refused() {
        let store = MemStore::in_memory().unwrap();
        let mut noise = vec![0u8; MAX_RESOURCE_VALUE_BYTES + 1];
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for byte in &mut noise {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *byte = x as u8;
        }
        let err = store.swap_resource(ResourceKind::Session, b"big", None, Some(&noise)).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{err}");
        assert_eq!(store.get_resource(ResourceKind::Session, b"big").unwrap(), None);
        let fits = &noise[..MAX_RESOURCE_VALUE_BYTES - 64];
        store.swap_resource(ResourceKind::Session, b"big", None, Some(fits)).unwrap().unwrap();
        assert_eq!(store.get_resource(ResourceKind::Session, b"big").unwrap().as_deref(), Some(fits));
    }
}
