//! Every key the store writes in the engine's trees, in one place.
//!
//! Keys are byte strings whose order is the order we scan in: a one-byte kind
//! prefix, then fixed-width fields, integers big-endian so that byte order equals
//! numeric order. Records themselves are not here: they live in the
//! write-ahead log's segments (see [`crate::wal`]), and the `log` tree only
//! indexes them. Everything in the `log` tree is derived from the segments and
//! could be rebuilt from them. The layout is specified in `docs/format.md`;
//! change both together, and only by adding kinds.
//!
//! | tree        | key                                        | value                                       |
//! |-------------|--------------------------------------------|---------------------------------------------|
//! | `log`       | `0x10 session[16] chunk[8]`                | record locations: see `store/src/index.rs`   |
//! | `log`       | `0x11 session[16] type[2] span[8]`         | seqs of that type in the span               |
//! | `log`       | `0x12 session[16]`                         | head: `next[8] hash[32]`                    |
//! | `log`       | `0x13 child[16]`                           | fork origin: `parent[16] at_seq[8] hash[32]`|
//! | `log`       | `0x14 parent[16] child[16]`                | `at_seq[8]`: the parent's forks             |
//! | `log`       | `0x15 digest[32]`                          | blob location: `lsn[8] len[4]`              |
//! | `resources` | `kind[1] key...`                           | framed resource bytes                       |
//! | `meta`      | ASCII name                                 | see [`MetaKey`]                             |
//!
//! Storage version 1 kept records in the `log` tree (kinds `0x01`–`0x03`) and
//! blob bytes in the `blobs` tree; [`v1`] names those keys for the migration.

use logbook_core::{ChainHash, Digest, EventType, Seq, SessionId};

/// The kinds of keys in the `log` tree. The discriminants are on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum LogKeyKind {
    /// Version 1: a record. See [`v1`].
    V1Event = 0x01,
    /// Version 1: a head. See [`v1`].
    V1Head = 0x02,
    /// Version 1: the type index. See [`v1`].
    V1TypeIndex = 0x03,
    Locations = 0x10,
    TypeIndex = 0x11,
    Head = 0x12,
    ForkOrigin = 0x13,
    Fork = 0x14,
    BlobLocation = 0x15,
}

impl LogKeyKind {
    /// The kinds storage version 2 writes.
    pub const CURRENT: [LogKeyKind; 6] = [
        LogKeyKind::Locations,
        LogKeyKind::TypeIndex,
        LogKeyKind::Head,
        LogKeyKind::ForkOrigin,
        LogKeyKind::Fork,
        LogKeyKind::BlobLocation,
    ];

    /// The kinds only storage version 1 wrote.
    pub const V1: [LogKeyKind; 3] = [LogKeyKind::V1Event, LogKeyKind::V1Head, LogKeyKind::V1TypeIndex];
}

/// Seqs per location chunk: a chunk key covers `[chunk × CHUNK_SEQS, (chunk + 1) × CHUNK_SEQS)`.
/// 64 keeps a full chunk under 1 KiB (64 × 14 bytes), one engine read per 64
/// records, and one rewrite per session per checkpoint.
pub const CHUNK_SEQS: u64 = 64;

/// Seqs per type-index span. Offsets within a span are `u16`.
pub const TYPE_SPAN_SEQS: u64 = 1024;

const _: () = assert!(TYPE_SPAN_SEQS <= u16::MAX as u64 + 1);

pub const LOCATIONS_KEY_LEN: usize = 1 + 16 + 8;
pub const TYPE_KEY_LEN: usize = 1 + 16 + 2 + 8;
pub const HEAD_KEY_LEN: usize = 1 + 16;
pub const HEAD_VALUE_LEN: usize = 8 + 32;
pub const ORIGIN_KEY_LEN: usize = 1 + 16;
pub const ORIGIN_VALUE_LEN: usize = 16 + 8 + 32;
pub const FORK_KEY_LEN: usize = 1 + 16 + 16;
pub const BLOB_KEY_LEN: usize = 1 + 32;
pub const BLOB_VALUE_LEN: usize = 8 + 4;

/// The location chunk holding `seq`'s record.
pub fn locations_key(session: SessionId, seq: Seq) -> [u8; LOCATIONS_KEY_LEN] {
    let mut key = [0u8; LOCATIONS_KEY_LEN];
    key[..17].copy_from_slice(&session_prefix(LogKeyKind::Locations, session));
    key[17..].copy_from_slice(&(seq.get() / CHUNK_SEQS).to_be_bytes());
    key
}

/// The prefix shared by a session's keys of one kind.
pub fn session_prefix(kind: LogKeyKind, session: SessionId) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = kind as u8;
    key[1..].copy_from_slice(&session.to_bytes());
    key
}

pub fn parse_locations_key(key: &[u8]) -> Option<(SessionId, u64)> {
    if key.len() != LOCATIONS_KEY_LEN || key[0] != LogKeyKind::Locations as u8 {
        return None;
    }
    Some((session_at(key, 1)?, u64_at(key, 17)?))
}

/// The type-index span of `event_type` holding `seq`.
pub fn type_key(session: SessionId, event_type: EventType, seq: Seq) -> [u8; TYPE_KEY_LEN] {
    type_key_for_code(session, event_type.code(), seq.get() / TYPE_SPAN_SEQS)
}

pub fn type_key_for_code(session: SessionId, code: u16, span: u64) -> [u8; TYPE_KEY_LEN] {
    let mut key = [0u8; TYPE_KEY_LEN];
    key[..17].copy_from_slice(&session_prefix(LogKeyKind::TypeIndex, session));
    key[17..19].copy_from_slice(&code.to_be_bytes());
    key[19..].copy_from_slice(&span.to_be_bytes());
    key
}

/// `(session, type code, span)`.
pub fn parse_type_key(key: &[u8]) -> Option<(SessionId, u16, u64)> {
    if key.len() != TYPE_KEY_LEN || key[0] != LogKeyKind::TypeIndex as u8 {
        return None;
    }
    let code = u16::from_be_bytes([key[17], key[18]]);
    Some((session_at(key, 1)?, code, u64_at(key, 19)?))
}

pub fn head_key(session: SessionId) -> [u8; HEAD_KEY_LEN] {
    session_prefix(LogKeyKind::Head, session)
}

pub fn parse_head_key(key: &[u8]) -> Option<SessionId> {
    if key.len() != HEAD_KEY_LEN || key[0] != LogKeyKind::Head as u8 {
        return None;
    }
    session_at(key, 1)
}

/// The value of a head key: the session's length and last hash.
pub fn head_value(next: Seq, hash: ChainHash) -> [u8; HEAD_VALUE_LEN] {
    let mut value = [0u8; HEAD_VALUE_LEN];
    value[..8].copy_from_slice(&next.get().to_be_bytes());
    value[8..].copy_from_slice(hash.as_bytes());
    value
}

pub fn parse_head_value(value: &[u8]) -> Option<(Seq, ChainHash)> {
    if value.len() != HEAD_VALUE_LEN {
        return None;
    }
    Some((Seq::new(u64_at(value, 0)?), hash_at(value, 8)?))
}

pub fn origin_key(child: SessionId) -> [u8; ORIGIN_KEY_LEN] {
    session_prefix(LogKeyKind::ForkOrigin, child)
}

pub fn parse_origin_key(key: &[u8]) -> Option<SessionId> {
    if key.len() != ORIGIN_KEY_LEN || key[0] != LogKeyKind::ForkOrigin as u8 {
        return None;
    }
    session_at(key, 1)
}

/// A fork's origin: the parent, the parent's last shared seq and its hash there.
pub fn origin_value(parent: SessionId, at_seq: Seq, hash: ChainHash) -> [u8; ORIGIN_VALUE_LEN] {
    let mut value = [0u8; ORIGIN_VALUE_LEN];
    value[..16].copy_from_slice(&parent.to_bytes());
    value[16..24].copy_from_slice(&at_seq.get().to_be_bytes());
    value[24..].copy_from_slice(hash.as_bytes());
    value
}

pub fn parse_origin_value(value: &[u8]) -> Option<(SessionId, Seq, ChainHash)> {
    if value.len() != ORIGIN_VALUE_LEN {
        return None;
    }
    Some((session_at(value, 0)?, Seq::new(u64_at(value, 16)?), hash_at(value, 24)?))
}

pub fn fork_key(parent: SessionId, child: SessionId) -> [u8; FORK_KEY_LEN] {
    let mut key = [0u8; FORK_KEY_LEN];
    key[..17].copy_from_slice(&session_prefix(LogKeyKind::Fork, parent));
    key[17..].copy_from_slice(&child.to_bytes());
    key
}

/// `(parent, child)`.
pub fn parse_fork_key(key: &[u8]) -> Option<(SessionId, SessionId)> {
    if key.len() != FORK_KEY_LEN || key[0] != LogKeyKind::Fork as u8 {
        return None;
    }
    Some((session_at(key, 1)?, session_at(key, 17)?))
}

pub fn blob_key(digest: Digest) -> [u8; BLOB_KEY_LEN] {
    let mut key = [0u8; BLOB_KEY_LEN];
    key[0] = LogKeyKind::BlobLocation as u8;
    key[1..].copy_from_slice(digest.as_bytes());
    key
}

pub fn parse_blob_key(key: &[u8]) -> Option<Digest> {
    if key.len() != BLOB_KEY_LEN || key[0] != LogKeyKind::BlobLocation as u8 {
        return None;
    }
    let bytes: [u8; 32] = key.get(1..33)?.try_into().ok()?;
    Some(Digest::from_bytes(bytes))
}

/// A blob's location: the log position of its entry and the entry's length.
pub fn blob_value(lsn: u64, len: u32) -> [u8; BLOB_VALUE_LEN] {
    let mut value = [0u8; BLOB_VALUE_LEN];
    value[..8].copy_from_slice(&lsn.to_be_bytes());
    value[8..].copy_from_slice(&len.to_be_bytes());
    value
}

pub fn parse_blob_value(value: &[u8]) -> Option<(u64, u32)> {
    if value.len() != BLOB_VALUE_LEN {
        return None;
    }
    let len: [u8; 4] = value.get(8..12)?.try_into().ok()?;
    Some((u64_at(value, 0)?, u32::from_be_bytes(len)))
}

/// What a resource key names. The discriminants are on disk; only append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum ResourceKind {
    Agent = 0x01,
    AgentVersion = 0x02,
    Environment = 0x03,
    Session = 0x04,
    ApiKey = 0x05,
    WorkItem = 0x06,
    File = 0x07,
    Setting = 0x08,
    Workspace = 0x09,
    /// Saved projections of a session at a seq (derived; rebuildable).
    Checkpoint = 0x0A,
}

impl ResourceKind {
    pub const ALL: &[ResourceKind] = &[
        ResourceKind::Agent,
        ResourceKind::AgentVersion,
        ResourceKind::Environment,
        ResourceKind::Session,
        ResourceKind::ApiKey,
        ResourceKind::WorkItem,
        ResourceKind::File,
        ResourceKind::Setting,
        ResourceKind::Workspace,
        ResourceKind::Checkpoint,
    ];

    pub fn from_byte(byte: u8) -> Option<ResourceKind> {
        ResourceKind::ALL.iter().copied().find(|kind| *kind as u8 == byte)
    }
}

pub fn resource_key(kind: ResourceKind, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + key.len());
    out.push(kind as u8);
    out.extend_from_slice(key);
    out
}

/// Names in the `meta` tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    /// `u32` big-endian: the storage layout version, checked at open.
    StorageVersion,
    /// Version 2: `lsn[8] batch[8]`, big-endian: the last checkpoint. Every
    /// log entry before `lsn` is reflected in the engine's trees; recovery
    /// replays the log from there, expecting batch number `batch` first.
    Checkpoint,
    /// Version 1 only: `u64` big-endian, the number of the last durability
    /// barrier. Removed by the migration.
    V1Commit,
}

impl MetaKey {
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            MetaKey::StorageVersion => b"storage_version",
            MetaKey::Checkpoint => b"checkpoint",
            MetaKey::V1Commit => b"commit",
        }
    }
}

/// The value of [`MetaKey::Checkpoint`].
pub fn checkpoint_value(lsn: u64, batch: u64) -> [u8; 16] {
    let mut value = [0u8; 16];
    value[..8].copy_from_slice(&lsn.to_be_bytes());
    value[8..].copy_from_slice(&batch.to_be_bytes());
    value
}

pub fn parse_checkpoint_value(value: &[u8]) -> Option<(u64, u64)> {
    if value.len() != 16 {
        return None;
    }
    Some((u64_at(value, 0)?, u64_at(value, 8)?))
}

/// Storage version 1's keys, read only by the migration.
pub mod v1 {
    use logbook_core::{Seq, SessionId};

    use super::{LogKeyKind, session_at, u64_at};

    pub const EVENT_KEY_LEN: usize = 1 + 16 + 8;

    /// `0x01 session[16] seq[8]` → frame(record envelope).
    pub fn event_key(session: SessionId, seq: Seq) -> [u8; EVENT_KEY_LEN] {
        let mut key = [0u8; EVENT_KEY_LEN];
        key[0] = LogKeyKind::V1Event as u8;
        key[1..17].copy_from_slice(&session.to_bytes());
        key[17..].copy_from_slice(&seq.get().to_be_bytes());
        key
    }

    pub fn parse_event_key(key: &[u8]) -> Option<(SessionId, Seq)> {
        if key.len() != EVENT_KEY_LEN || key[0] != LogKeyKind::V1Event as u8 {
            return None;
        }
        Some((session_at(key, 1)?, Seq::new(u64_at(key, 17)?)))
    }

    /// `0x02 session[16]` → `next[8 BE] hash[32]`.
    pub fn parse_head_key(key: &[u8]) -> Option<SessionId> {
        if key.len() != 17 || key[0] != LogKeyKind::V1Head as u8 {
            return None;
        }
        session_at(key, 1)
    }
}

fn session_at(key: &[u8], at: usize) -> Option<SessionId> {
    let bytes: [u8; 16] = key.get(at..at + 16)?.try_into().ok()?;
    Some(SessionId::from_bytes(bytes))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let raw: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_be_bytes(raw))
}

fn hash_at(bytes: &[u8], at: usize) -> Option<ChainHash> {
    let raw: [u8; 32] = bytes.get(at..at + 32)?.try_into().ok()?;
    Some(ChainHash::from_bytes(raw))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn location_keys_round_trip_and_sort_by_session_then_seq(
            a in any::<SessionId>(), b in any::<SessionId>(), x in 0u64..1 << 40, y in 0u64..1 << 40,
        ) {
            let ka = locations_key(a, Seq::new(x));
            let kb = locations_key(b, Seq::new(y));
            prop_assert_eq!(parse_locations_key(&ka), Some((a, x / CHUNK_SEQS)));
            prop_assert_eq!(ka.cmp(&kb), (a.to_bytes(), x / CHUNK_SEQS).cmp(&(b.to_bytes(), y / CHUNK_SEQS)));
            prop_assert!(ka.starts_with(&session_prefix(LogKeyKind::Locations, a)));
        }

        #[test]
        fn type_keys_round_trip(s in any::<SessionId>(), idx in 0usize..EventType::ALL.len(), seq in any::<u64>()) {
            let event_type = EventType::ALL[idx];
            let key = type_key(s, event_type, Seq::new(seq));
            prop_assert_eq!(parse_type_key(&key), Some((s, event_type.code(), seq / TYPE_SPAN_SEQS)));
        }

        #[test]
        fn heads_origins_forks_and_blobs_round_trip(
            s in any::<SessionId>(), t in any::<SessionId>(), next in any::<u64>(), hash in any::<[u8; 32]>(),
            lsn in any::<u64>(), len in any::<u32>(),
        ) {
            let hash = ChainHash::from_bytes(hash);
            prop_assert_eq!(parse_head_key(&head_key(s)), Some(s));
            prop_assert_eq!(parse_head_value(&head_value(Seq::new(next), hash)), Some((Seq::new(next), hash)));
            prop_assert_eq!(parse_origin_key(&origin_key(s)), Some(s));
            prop_assert_eq!(parse_origin_value(&origin_value(t, Seq::new(next), hash)), Some((t, Seq::new(next), hash)));
            prop_assert_eq!(parse_fork_key(&fork_key(s, t)), Some((s, t)));
            let digest = Digest::from_bytes(*hash.as_bytes());
            prop_assert_eq!(parse_blob_key(&blob_key(digest)), Some(digest));
            prop_assert_eq!(parse_blob_value(&blob_value(lsn, len)), Some((lsn, len)));
            prop_assert_eq!(parse_checkpoint_value(&checkpoint_value(lsn, next)), Some((lsn, next)));
        }
    }

    #[test]
    fn kinds_never_collide() {
        // Each parser accepts only its own kind, so no key is two things.
        let s = SessionId::from_parts(1, 2);
        let head = head_key(s);
        let origin = origin_key(s);
        assert!(parse_origin_key(&head).is_none() && parse_head_key(&origin).is_none());
        assert!(parse_locations_key(&v1::event_key(s, Seq::new(3))).is_none());
        let all: Vec<u8> = LogKeyKind::CURRENT.iter().chain(&LogKeyKind::V1).map(|k| *k as u8).collect();
        let distinct: std::collections::BTreeSet<u8> = all.iter().copied().collect();
        assert_eq!(distinct.len(), all.len());
        let kinds: std::collections::BTreeSet<u8> = ResourceKind::ALL.iter().map(|k| *k as u8).collect();
        assert_eq!(kinds.len(), ResourceKind::ALL.len());
        for kind in ResourceKind::ALL {
            assert_eq!(ResourceKind::from_byte(*kind as u8), Some(*kind));
        }
    }
}
