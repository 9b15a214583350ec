//! Every key the store writes, in one place.
//!
//! Keys are byte strings whose order is the order we scan in: a one-byte kind
//! prefix, then fixed-width fields, integers big-endian so that byte order equals
//! numeric order. Values are not described here; they are framed by
//! [`crate::frame`]. The layout is specified in `docs/format.md`; change both
//! together, and only by adding kinds.
//!
//! | tree        | key                                              | value                         |
//! |-------------|--------------------------------------------------|-------------------------------|
//! | `log`       | `0x01 session[16] seq[8]`                        | framed record envelope        |
//! | `log`       | `0x02 session[16]`                               | head: `next[8] hash[32]`      |
//! | `log`       | `0x03 session[16] type[2] seq[8]`                | empty (type index)            |
//! | `blobs`     | `blake3[32]`                                     | framed blob bytes             |
//! | `resources` | `kind[1] key...`                                 | framed resource bytes         |
//! | `meta`      | ASCII name                                       | see [`MetaKey`]               |

use logbook_core::{ChainHash, EventType, Seq, SessionId};

/// The kinds of keys in the `log` tree. The discriminants are on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum LogKeyKind {
    Event = 0x01,
    Head = 0x02,
    TypeIndex = 0x03,
}

pub const EVENT_KEY_LEN: usize = 1 + 16 + 8;
pub const HEAD_KEY_LEN: usize = 1 + 16;
pub const TYPE_KEY_LEN: usize = 1 + 16 + 2 + 8;
pub const HEAD_VALUE_LEN: usize = 8 + 32;

pub fn event_key(session: SessionId, seq: Seq) -> [u8; EVENT_KEY_LEN] {
    let mut key = [0u8; EVENT_KEY_LEN];
    key[0] = LogKeyKind::Event as u8;
    key[1..17].copy_from_slice(&session.to_bytes());
    key[17..].copy_from_slice(&seq.get().to_be_bytes());
    key
}

/// The prefix shared by all of a session's event keys.
pub fn event_prefix(session: SessionId) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = LogKeyKind::Event as u8;
    key[1..].copy_from_slice(&session.to_bytes());
    key
}

pub fn parse_event_key(key: &[u8]) -> Option<(SessionId, Seq)> {
    if key.len() != EVENT_KEY_LEN || key[0] != LogKeyKind::Event as u8 {
        return None;
    }
    Some((session_at(key, 1)?, Seq::new(u64_at(key, 17)?)))
}

pub fn head_key(session: SessionId) -> [u8; HEAD_KEY_LEN] {
    let mut key = [0u8; HEAD_KEY_LEN];
    key[0] = LogKeyKind::Head as u8;
    key[1..].copy_from_slice(&session.to_bytes());
    key
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
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&value[8..]);
    Some((Seq::new(u64_at(value, 0)?), ChainHash::from_bytes(hash)))
}

pub fn type_key(session: SessionId, event_type: EventType, seq: Seq) -> [u8; TYPE_KEY_LEN] {
    let mut key = [0u8; TYPE_KEY_LEN];
    key[..19].copy_from_slice(&type_prefix(session, event_type));
    key[19..].copy_from_slice(&seq.get().to_be_bytes());
    key
}

pub fn type_prefix(session: SessionId, event_type: EventType) -> [u8; 19] {
    let mut key = [0u8; 19];
    key[0] = LogKeyKind::TypeIndex as u8;
    key[1..17].copy_from_slice(&session.to_bytes());
    key[17..19].copy_from_slice(&event_type.code().to_be_bytes());
    key
}

pub fn parse_type_key(key: &[u8]) -> Option<(SessionId, u16, Seq)> {
    if key.len() != TYPE_KEY_LEN || key[0] != LogKeyKind::TypeIndex as u8 {
        return None;
    }
    let code = u16::from_be_bytes([key[17], key[18]]);
    Some((session_at(key, 1)?, code, Seq::new(u64_at(key, 19)?)))
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
    /// `u64` big-endian: the number of the last durability barrier, compared
    /// with the head journal's at open.
    Commit,
}

impl MetaKey {
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            MetaKey::StorageVersion => b"storage_version",
            MetaKey::Commit => b"commit",
        }
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn event_keys_round_trip_and_sort_by_session_then_seq(
            a in any::<SessionId>(), b in any::<SessionId>(), x in 0u64..1 << 40, y in 0u64..1 << 40,
        ) {
            let ka = event_key(a, Seq::new(x));
            let kb = event_key(b, Seq::new(y));
            prop_assert_eq!(parse_event_key(&ka), Some((a, Seq::new(x))));
            prop_assert_eq!(ka.cmp(&kb), (a.to_bytes(), x).cmp(&(b.to_bytes(), y)));
            prop_assert!(ka.starts_with(&event_prefix(a)));
        }

        #[test]
        fn type_keys_round_trip(s in any::<SessionId>(), idx in 0usize..EventType::ALL.len(), seq in any::<u64>()) {
            let event_type = EventType::ALL[idx];
            let key = type_key(s, event_type, Seq::new(seq));
            prop_assert_eq!(parse_type_key(&key), Some((s, event_type.code(), Seq::new(seq))));
        }

        #[test]
        fn head_round_trip(s in any::<SessionId>(), next in any::<u64>(), hash in any::<[u8; 32]>()) {
            prop_assert_eq!(parse_head_key(&head_key(s)), Some(s));
            let value = head_value(Seq::new(next), ChainHash::from_bytes(hash));
            prop_assert_eq!(parse_head_value(&value), Some((Seq::new(next), ChainHash::from_bytes(hash))));
        }
    }

    #[test]
    fn kinds_never_collide() {
        // Each parser accepts only its own kind, so no key is two things.
        let s = SessionId::from_parts(1, 2);
        let ev = event_key(s, Seq::new(3));
        let head = head_key(s);
        assert!(parse_head_key(&ev).is_none() && parse_type_key(&ev).is_none());
        assert!(parse_event_key(&head).is_none());
        let kinds: std::collections::BTreeSet<u8> = ResourceKind::ALL.iter().map(|k| *k as u8).collect();
        assert_eq!(kinds.len(), ResourceKind::ALL.len());
    }
}
