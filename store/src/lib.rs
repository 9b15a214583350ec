//! `logbook-store`: the only crate that touches disk.
//!
//! A session's log is an append-only, hash-chained sequence of records. The
//! store appends with an expected seq (optimistic concurrency), acknowledges an
//! append only once its write-ahead log batch, shared by concurrent writers
//! (group commit), is durable, shows readers and subscribers only durable
//! records, forks a session by reference, keeps large payloads as
//! content-addressed blobs, and holds the API's resources (agents,
//! environments, session metadata) as key-value pairs. Records live in the
//! write-ahead log's segments; the engine (sled by default, or memory) holds
//! indexes rebuilt from the log, checkpointed in the background. The same
//! logic runs over both engines, held to one conformance suite.
//!
//! Every method blocks (sled is synchronous); call them from
//! `spawn_blocking` in async code. Subscriptions are async.
//!
//! ```
//! use logbook_core::event::{Event, SessionStatusRunning};
//! use logbook_core::{Entry, EventId, Seq, SessionId, Timestamp};
//! use logbook_store::{Append, MemStore, Read};
//!
//! let store = MemStore::in_memory().unwrap();
//! let session = SessionId::from_parts(1, 1);
//! let entry = Entry {
//!     id: EventId::from_parts(1, 2),
//!     event: Event::SessionStatusRunning(SessionStatusRunning {}),
//!     at: Timestamp::from_unix_micros(0),
//! };
//! let records = store.append(session, Seq::ZERO, &[entry]).unwrap();
//! assert_eq!(store.head(session).unwrap().next, Seq::new(1));
//! assert_eq!(store.read(session, Seq::ZERO, 10).unwrap(), records);
//! ```

pub mod engine;
pub mod error;
pub mod frame;
pub mod keys;
pub mod wal;

mod budget;
mod check;
mod checkpoint;
mod commit;
mod fork;
mod index;
mod journal;
mod kv;
mod log;
mod migrate;
mod recovery;
mod session;
mod subscription;

#[cfg(test)]
mod durability_tests;

use logbook_core::{ChainHash, Digest, Entry, EventType, Record, Seq, SessionId};

pub use check::{SessionReport, StoreReport, VerifyProgress};
pub use checkpoint::{CHECKPOINT_BYTES, CHECKPOINT_INTERVAL};
pub use commit::{BarrierStats, COMMIT_STALL_LIMIT, MAX_LINGER};
pub use engine::Direction;
pub use engine::files::create_dir_durably;
pub use engine::mem::MemEngine;
pub use engine::sled::{SledEngine, SledOptions};
pub use error::{AppendError, Corruption, Error, ForkError, OpenError, StoreCorruption};
pub use keys::ResourceKind;
pub use kv::StoredResource;
pub use log::{LogStore, PendingAppend, SLED_DIR, STORAGE_VERSION};
pub use recovery::MAX_FORK_DEPTH;
pub use subscription::Subscription;
pub use wal::WalOptions;

/// The store on sled: the default.
pub type SledStore = LogStore<SledEngine>;
/// The store in memory: tests, and the second conformance implementation.
pub type MemStore = LogStore<MemEngine>;

/// Most records one read returns.
pub const MAX_READ_RECORDS: usize = 10_000;

/// Most bytes of records one read returns (each counted as its canonical
/// bytes plus a fixed overhead, as the tail cache counts them), a read of
/// records, of records by type or of resources: records are returned in
/// order until the next would take the read past this, and always at least
/// one, so a caller going on from where a read stopped always gets further.
///
/// Records are bounded by [`logbook_core::limits::MAX_EVENT_BYTES`] (32 MiB),
/// so without this one read of [`MAX_READ_RECORDS`] could hold 320 GiB.
/// 64 MiB is twice the largest record, so a read always holds at least one
/// maximal record and whatever small ones surround it, and as much as one
/// maximal append ([`logbook_core::limits::MAX_APPEND_BYTES`]) brings; it is
/// far above what reads of ordinary sessions hold (the benchmark corpus's
/// events average 4.5 KiB: 100 of them, the hot read, are about 0.5 MiB, and
/// a full page of 1,000 events about 5 MiB), so only logs of unusually large
/// events are read in more than one step. A few concurrent reads at this
/// bound fit comfortably in the memory of the smallest machine we run on.
pub const MAX_READ_BYTES: usize = 64 << 20;

const _: () = assert!(MAX_READ_BYTES >= 2 * logbook_core::limits::MAX_EVENT_BYTES);

/// What `record` counts as against a read's budget ([`MAX_READ_BYTES`]):
/// its canonical bytes (a redacted record's digest) plus a fixed overhead.
pub fn read_bytes_of(record: &Record) -> usize {
    session::record_size(record)
}

/// A session's durable end: how many records it has and the last one's hash
/// (`GENESIS` for an empty session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub next: Seq,
    pub hash: ChainHash,
}

/// Appending to a session's log.
pub trait Append {
    /// Appends `entries` if the log has exactly `expected` records, and returns
    /// the sealed records once they are durable.
    fn append(&self, session: SessionId, expected: Seq, entries: &[Entry]) -> Result<Vec<Record>, AppendError>;
}

/// Reading durable records.
pub trait Read {
    /// The durable head; an unknown session has an empty one.
    fn head(&self, session: SessionId) -> Result<Head, Error>;

    /// Up to `limit` (at most [`MAX_READ_RECORDS`]) records from `from` on, in
    /// order, and no more than [`MAX_READ_BYTES`] of them (at least one). Fewer
    /// than `limit` does not mean the log ends there: go on from the last
    /// record's seq + 1 until a read returns nothing or the head is reached.
    fn read(&self, session: SessionId, from: Seq, limit: usize) -> Result<Vec<Record>, Error>;

    /// Up to `limit` (at most [`MAX_READ_RECORDS`]) records just before
    /// `before`, in ascending order: the last ones before it that fit in
    /// [`MAX_READ_BYTES`] (at least one). Fewer than `limit` does not mean the
    /// log starts there: go on before the first record's seq.
    fn read_before(&self, session: SessionId, before: Seq, limit: usize) -> Result<Vec<Record>, Error>;

    /// Up to `limit` (at most [`MAX_READ_RECORDS`]) records of the given types
    /// from `from` on, in order, no more than [`MAX_READ_BYTES`] of them (at
    /// least one). Fewer than `limit` does not mean there are no more: go on
    /// from the last record's seq + 1 until a scan returns nothing.
    fn scan_types(
        &self,
        session: SessionId,
        types: &[EventType],
        from: Seq,
        limit: usize,
    ) -> Result<Vec<Record>, Error>;

    /// The latest durable record whose type is one of `types`, through the type
    /// index (no scan of the log).
    fn last_of_types(&self, session: SessionId, types: &[EventType]) -> Result<Option<Record>, Error>;

    /// Every session with at least one record, in id order.
    fn sessions(&self) -> Result<Vec<SessionId>, Error>;
}

/// Where a fork's log comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForkOrigin {
    pub parent: SessionId,
    /// The parent's last seq the fork shares.
    pub at_seq: Seq,
    /// The parent's chain hash at `at_seq`; the fork's own records chain from it.
    pub parent_hash: ChainHash,
}

/// Forking a session by reference.
pub trait Fork {
    /// Creates `child` as a fork of `parent` at `at_seq`: its log is the
    /// parent's records `0..=at_seq`, shared and not copied, then `entries`
    /// (possibly none) from `at_seq + 1` on, the first chaining from the
    /// parent's hash at `at_seq`. Atomic and durable when it returns; costs
    /// the same whatever the parent's length. Reads, type scans,
    /// subscriptions and verification of the fork include the inherited
    /// prefix, its records carrying the fork's id. Forks of forks work.
    fn fork(
        &self,
        child: SessionId,
        parent: SessionId,
        at_seq: Seq,
        entries: &[Entry],
    ) -> Result<Vec<Record>, ForkError>;

    /// Where `session`'s log comes from, if it is a fork.
    fn fork_origin(&self, session: SessionId) -> Result<Option<ForkOrigin>, Error>;

    /// The forks of `parent` (direct ones), with their fork points. Logs are
    /// never deleted, so forks never lose their inherited prefix; anything that
    /// would remove a session's records must refuse while this lists forks.
    fn forks_of(&self, parent: SessionId) -> Result<Vec<(SessionId, Seq)>, Error>;
}

/// Following a session's log as it grows.
pub trait Subscribe {
    /// A subscription delivering every durable record from `from` on.
    fn subscribe(&self, session: SessionId, from: Seq) -> Subscription;
}

/// Content-addressed blobs, stored once however often they are referenced.
pub trait Blobs {
    /// Stores `bytes` durably and returns their blake3 hash.
    fn put_blob(&self, bytes: &[u8]) -> Result<Digest, Error>;
    fn get_blob(&self, hash: Digest) -> Result<Option<Vec<u8>>, Error>;
    fn has_blob(&self, hash: Digest) -> Result<bool, Error>;
}

/// Key-value resources (agents, environments, session metadata, ...). Values are
/// opaque bytes; the server encodes them.
pub trait Resources {
    fn get_resource(&self, kind: ResourceKind, key: &[u8]) -> Result<Option<Vec<u8>>, Error>;

    /// Sets `key` to `new` (or removes it when `None`) if it currently holds
    /// `old`; otherwise returns the current value. Durable when it returns `Ok`.
    fn swap_resource(
        &self,
        kind: ResourceKind,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<Result<(), Option<Vec<u8>>>, Error>;

    /// Up to `limit` (at most [`MAX_READ_RECORDS`]) resources of `kind` whose
    /// keys start with `prefix`, in key order (`Forward`) or reverse key order
    /// (`Backward`), starting after the key `after` (exclusive) when given, no
    /// more than [`MAX_READ_BYTES`] of keys and stored values (at least one).
    /// Fewer than `limit` does not mean there are no more: go on after the
    /// last key until a scan returns nothing.
    fn scan_resources(
        &self,
        kind: ResourceKind,
        prefix: &[u8],
        after: Option<&[u8]>,
        direction: engine::Direction,
        limit: usize,
    ) -> Result<engine::Pairs, Error>;
}

/// Everything a store does.
pub trait Store: Append + Read + Subscribe + Fork + Blobs + Resources + Send + Sync {}

impl<T: Append + Read + Subscribe + Fork + Blobs + Resources + Send + Sync> Store for T {}
