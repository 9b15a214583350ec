//! The record: an entry as stored, with its place in the chain.
//!
//! A record holds its session, its `seq` (0-based, gap-free), the previous
//! record's hash, its own hash, and its body: the entry's canonical bytes, or,
//! after redaction, only their digest. The hash never covers compression or the
//! envelope layout; it is `chain::link(prev, seq, digest(canonical))`.

use std::fmt;

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::chain::{self, ChainHash, Digest};
use crate::encoding::{self, DecodeError, EncodeError, RECORD_FORMAT_V1};
use crate::entry::Entry;
use crate::id::SessionId;
use crate::limits::MAX_EVENTS_PER_SESSION;

/// A record's position in its session's log.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Encode, Decode, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Seq(u64);

impl Seq {
    pub const ZERO: Seq = Seq(0);

    pub const fn new(value: u64) -> Seq {
        Seq(value)
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    /// The next position, or `None` past [`MAX_EVENTS_PER_SESSION`].
    pub fn next(self) -> Option<Seq> {
        let next = self.0.checked_add(1)?;
        (next <= MAX_EVENTS_PER_SESSION).then_some(Seq(next))
    }

    /// `self + n`, or `None` past [`MAX_EVENTS_PER_SESSION`].
    pub fn plus(self, n: u64) -> Option<Seq> {
        let value = self.0.checked_add(n)?;
        (value <= MAX_EVENTS_PER_SESSION).then_some(Seq(value))
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What a record carries of its entry.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Body {
    /// The entry's canonical bytes.
    Canonical(Vec<u8>),
    /// The entry was redacted; its digest keeps the chain verifiable.
    Redacted { digest: Digest },
}

/// One stored entry and its chain position. Fields are private: a record is
/// either sealed from an entry or decoded, and [`Record::is_self_consistent`]
/// says whether a decoded one can be trusted.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Record {
    session: SessionId,
    seq: Seq,
    prev: ChainHash,
    hash: ChainHash,
    body: Body,
}

impl Record {
    /// Seals `entry` at `seq` after `prev`.
    pub fn seal(session: SessionId, seq: Seq, prev: ChainHash, entry: &Entry) -> Result<Record, EncodeError> {
        Ok(Record::from_canonical(session, seq, prev, entry.to_canonical()?))
    }

    /// Seals canonical bytes produced elsewhere (import, fork).
    pub fn from_canonical(session: SessionId, seq: Seq, prev: ChainHash, canonical: Vec<u8>) -> Record {
        let hash = chain::link(prev, seq, chain::digest(&canonical));
        Record { session, seq, prev, hash, body: Body::Canonical(canonical) }
    }

    /// Builds a record from stored parts without checking them; see
    /// [`Record::is_self_consistent`]. For import, tests and tamper tooling.
    pub fn from_parts(session: SessionId, seq: Seq, prev: ChainHash, hash: ChainHash, body: Body) -> Record {
        Record { session, seq, prev, hash, body }
    }

    pub fn session(&self) -> SessionId {
        self.session
    }

    pub fn seq(&self) -> Seq {
        self.seq
    }

    pub fn prev(&self) -> ChainHash {
        self.prev
    }

    pub fn hash(&self) -> ChainHash {
        self.hash
    }

    pub fn body(&self) -> &Body {
        &self.body
    }

    /// The canonical bytes, unless redacted.
    pub fn canonical(&self) -> Option<&[u8]> {
        match &self.body {
            Body::Canonical(bytes) => Some(bytes),
            Body::Redacted { .. } => None,
        }
    }

    pub fn digest(&self) -> Digest {
        match &self.body {
            Body::Canonical(bytes) => chain::digest(bytes),
            Body::Redacted { digest } => *digest,
        }
    }

    /// The hash this record's contents call for.
    pub fn computed_hash(&self) -> ChainHash {
        chain::link(self.prev, self.seq, self.digest())
    }

    /// Whether the stored hash matches the contents.
    pub fn is_self_consistent(&self) -> bool {
        self.computed_hash() == self.hash
    }

    /// Decodes the entry.
    pub fn entry(&self) -> Result<Entry, DecodeError> {
        match &self.body {
            Body::Canonical(bytes) => Entry::from_canonical(bytes),
            Body::Redacted { .. } => Err(DecodeError::Redacted),
        }
    }

    /// Replaces the body by its digest. The chain still verifies.
    pub fn redact(&mut self) {
        self.body = Body::Redacted { digest: self.digest() };
    }

    /// The envelope bytes: the record format byte, then the bincode encoding.
    pub fn to_envelope(&self) -> Result<Vec<u8>, EncodeError> {
        encoding::encode_versioned(RECORD_FORMAT_V1, self)
    }

    pub fn from_envelope(bytes: &[u8]) -> Result<Record, DecodeError> {
        encoding::decode_versioned(RECORD_FORMAT_V1, bytes)
    }
}
