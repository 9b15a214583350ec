//! Storage version 1's head journal, read by the migration.
//!
//! Version 1 appended the heads each durability barrier acknowledged to
//! `heads.journal` beside sled's directory, to catch sled silently dropping
//! the end of its log. The migration to version 2 reads it to check that the
//! version 1 data it is about to move still holds everything acknowledged;
//! version 2 needs no journal (its write-ahead log is where records live).
//!
//! Format (little endian): entries `len u32 | checksum [16] | payload[len]`
//! where `checksum` is the first 16 bytes of blake3(payload) and the payload
//! is `commit u64 | n u32 | n × (session [16] | next u64 | hash [32])`. A zero
//! `len` or a failed checksum ends the journal (a torn last entry).

use std::collections::BTreeMap;
use std::path::Path;

use logbook_core::{ChainHash, Seq, SessionId};

use crate::Head;

pub(crate) const JOURNAL_FILE: &str = "heads.journal";
const ENTRY_HEADER_BYTES: usize = 4 + 16;
const HEAD_BYTES: usize = 16 + 8 + 32;

/// What the journal says was acknowledged.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Journaled {
    pub(crate) heads: BTreeMap<SessionId, Head>,
    pub(crate) commit: u64,
}

/// Reads the journal in `dir`; an absent journal is empty.
pub(crate) fn read(dir: &Path) -> std::io::Result<Journaled> {
    match std::fs::read(dir.join(JOURNAL_FILE)) {
        Ok(bytes) => Ok(parse(&bytes)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Journaled::default()),
        Err(err) => Err(err),
    }
}

/// Reads entries up to the first zero length or bad checksum.
fn parse(bytes: &[u8]) -> Journaled {
    let mut out = Journaled::default();
    let mut at = 0usize;
    while let Some(header) = bytes.get(at..at + ENTRY_HEADER_BYTES) {
        let payload_len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if payload_len < 12 {
            break;
        }
        let Some(payload) = bytes.get(at + ENTRY_HEADER_BYTES..at + ENTRY_HEADER_BYTES + payload_len) else { break };
        if blake3::hash(payload).as_bytes()[..16] != header[4..20] {
            break;
        }
        let Some((commit, heads)) = decode_payload(payload) else { break };
        out.commit = out.commit.max(commit);
        for (session, head) in heads {
            out.heads.insert(session, head);
        }
        at += ENTRY_HEADER_BYTES + payload_len;
    }
    out
}

fn decode_payload(payload: &[u8]) -> Option<(u64, Vec<(SessionId, Head)>)> {
    let commit = u64::from_le_bytes(payload.get(0..8)?.try_into().ok()?);
    let n = u32::from_le_bytes(payload.get(8..12)?.try_into().ok()?) as usize;
    if payload.len() != 12 + n * HEAD_BYTES {
        return None;
    }
    let mut heads = Vec::with_capacity(n);
    for item in payload[12..].chunks_exact(HEAD_BYTES) {
        let session = SessionId::from_bytes(item[0..16].try_into().ok()?);
        let next = Seq::new(u64::from_le_bytes(item[16..24].try_into().ok()?));
        let hash = ChainHash::from_bytes(item[24..56].try_into().ok()?);
        heads.push((session, Head { next, hash }));
    }
    Some((commit, heads))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(commit: u64, heads: &[(SessionId, u64)]) -> Vec<u8> {
        let mut payload = Vec::new();
        payload.extend_from_slice(&commit.to_le_bytes());
        payload.extend_from_slice(&(heads.len() as u32).to_le_bytes());
        for (session, next) in heads {
            payload.extend_from_slice(&session.to_bytes());
            payload.extend_from_slice(&next.to_le_bytes());
            payload.extend_from_slice(&[*next as u8; 32]);
        }
        let mut out = (payload.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(&blake3::hash(&payload).as_bytes()[..16]);
        out.extend_from_slice(&payload);
        out
    }

    #[test]
    fn later_entries_win_and_a_torn_tail_is_ignored() {
        let a = SessionId::from_parts(1, 1);
        let b = SessionId::from_parts(2, 2);
        let mut bytes = entry(1, &[(a, 3)]);
        bytes.extend(entry(2, &[(a, 5), (b, 1)]));
        let read = parse(&bytes);
        assert_eq!(read.commit, 2);
        assert_eq!(read.heads[&a].next, Seq::new(5));
        let last = bytes.len() - 3;
        bytes[last] ^= 0xff;
        let read = parse(&bytes);
        assert_eq!(read.commit, 1);
        assert_eq!(read.heads[&a].next, Seq::new(3));
    }
}
