//! The head journal: an anchor outside sled for every acknowledged head.
//!
//! sled treats a record that fails its checksum as the torn end of its log and
//! silently drops everything after it, so a flipped bit or a zeroed block in the
//! middle of its file would roll the whole store back to an older, internally
//! consistent state. To detect that, every durability barrier also appends the
//! heads it made durable to this small file (`heads.journal` beside sled's
//! directory) and `fdatasync`s it before any of those appends is acknowledged.
//! On open, each session's head in sled must reach at least its journaled head,
//! with the same hash at that seq; a session that falls short is quarantined
//! with a [`Corruption`] naming the first lost seq.
//!
//! Format (little endian): a sequence of entries `len u32 | checksum [16] |
//! payload[len]` where `checksum` is the first 16 bytes of blake3(payload) and
//! the payload is `commit u64 | n u32 | n × (session [16] | next u64 | hash [32])`.
//! The file is preallocated with zeroes in [`PREALLOC_BYTES`] steps so that an
//! append overwrites already-written blocks and `fdatasync` has no metadata to
//! flush; a zero `len` ends the journal, and so does an entry whose checksum
//! fails (a torn write). When the file passes [`COMPACT_AFTER_BYTES`] it is
//! rewritten as one entry with the latest head of every session, fsynced, and
//! renamed into place, and the directory is fsynced.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use logbook_core::{ChainHash, Seq, SessionId};

use crate::Head;

pub(crate) const JOURNAL_FILE: &str = "heads.journal";
const PREALLOC_BYTES: u64 = 1 << 20;
const COMPACT_AFTER_BYTES: u64 = 16 << 20;
const ENTRY_HEADER_BYTES: usize = 4 + 16;
const HEAD_BYTES: usize = 16 + 8 + 32;
/// Most heads in one entry; a barrier covering more writes several entries.
const MAX_HEADS_PER_ENTRY: usize = 4096;

/// What the journal says was acknowledged.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Journaled {
    pub(crate) heads: BTreeMap<SessionId, Head>,
    pub(crate) commit: u64,
}

#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    file: File,
    /// Where the next entry goes.
    end: u64,
    /// Bytes preallocated (zero-filled and synced).
    allocated: u64,
    /// The latest journaled head of every session, for compaction.
    latest: Journaled,
}

impl Journal {
    /// Opens the journal in `dir`, creating it if missing, and returns what it holds.
    pub(crate) fn open(dir: &Path) -> std::io::Result<(Journal, Journaled)> {
        let path = dir.join(JOURNAL_FILE);
        let created = !path.exists();
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        if created {
            file.sync_all()?;
            File::open(dir)?.sync_all()?;
        }
        let allocated = file.metadata()?.len();
        let (latest, end) = read_entries(&file, allocated)?;
        let journal = Journal { path, file, end, allocated, latest: latest.clone() };
        Ok((journal, latest))
    }

    /// Appends the heads of one barrier and makes them durable.
    pub(crate) fn append(&mut self, commit: u64, heads: &BTreeMap<SessionId, Head>) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        let items: Vec<(&SessionId, &Head)> = heads.iter().collect();
        if items.is_empty() {
            encode_entry(&mut bytes, commit, &[]);
        }
        for chunk in items.chunks(MAX_HEADS_PER_ENTRY) {
            encode_entry(&mut bytes, commit, chunk);
        }
        if self.end + bytes.len() as u64 > COMPACT_AFTER_BYTES {
            for (session, head) in heads {
                self.latest.heads.insert(*session, *head);
            }
            self.latest.commit = commit;
            return self.compact();
        }
        if self.end + bytes.len() as u64 > self.allocated {
            self.preallocate(self.end + bytes.len() as u64)?;
        }
        self.file.write_all_at(&bytes, self.end)?;
        self.file.sync_data()?;
        self.end += bytes.len() as u64;
        for (session, head) in heads {
            self.latest.heads.insert(*session, *head);
        }
        self.latest.commit = commit;
        Ok(())
    }

    fn preallocate(&mut self, at_least: u64) -> std::io::Result<()> {
        let target = at_least.div_ceil(PREALLOC_BYTES) * PREALLOC_BYTES;
        let zeroes = vec![0u8; (target - self.allocated) as usize];
        self.file.write_all_at(&zeroes, self.allocated)?;
        self.file.sync_all()?;
        self.allocated = target;
        Ok(())
    }

    /// Rewrites the journal as the latest heads only.
    fn compact(&mut self) -> std::io::Result<()> {
        let tmp = self.path.with_extension("journal.tmp");
        let mut bytes = Vec::new();
        let items: Vec<(&SessionId, &Head)> = self.latest.heads.iter().collect();
        encode_entry(&mut bytes, self.latest.commit, &[]);
        for chunk in items.chunks(MAX_HEADS_PER_ENTRY) {
            encode_entry(&mut bytes, self.latest.commit, chunk);
        }
        let allocated = (bytes.len() as u64 + 1).div_ceil(PREALLOC_BYTES) * PREALLOC_BYTES;
        {
            let mut file = File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.write_all(&vec![0u8; allocated as usize - bytes.len()])?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.file = OpenOptions::new().read(true).write(true).open(&self.path)?;
        self.end = bytes.len() as u64;
        self.allocated = allocated;
        Ok(())
    }
}

fn encode_entry(out: &mut Vec<u8>, commit: u64, heads: &[(&SessionId, &Head)]) {
    let mut payload = Vec::with_capacity(12 + heads.len() * HEAD_BYTES);
    payload.extend_from_slice(&commit.to_le_bytes());
    payload.extend_from_slice(&(heads.len() as u32).to_le_bytes());
    for (session, head) in heads {
        payload.extend_from_slice(&session.to_bytes());
        payload.extend_from_slice(&head.next.get().to_le_bytes());
        payload.extend_from_slice(head.hash.as_bytes());
    }
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&blake3::hash(&payload).as_bytes()[..16]);
    out.extend_from_slice(&payload);
}

/// Reads entries up to the first zero length or bad checksum.
fn read_entries(file: &File, len: u64) -> std::io::Result<(Journaled, u64)> {
    let mut bytes = vec![0u8; len as usize];
    file.read_exact_at(&mut bytes, 0)?;
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
        let Some(entry) = decode_payload(payload) else { break };
        out.commit = out.commit.max(entry.0);
        for (session, head) in entry.1 {
            out.heads.insert(session, head);
        }
        at += ENTRY_HEADER_BYTES + payload_len;
    }
    Ok((out, at as u64))
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

    fn head(n: u64) -> Head {
        Head { next: Seq::new(n), hash: ChainHash::from_bytes([n as u8; 32]) }
    }

    #[test]
    fn appends_survive_reopen_and_a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, initial) = Journal::open(dir.path()).unwrap();
        assert_eq!(initial, Journaled::default());
        let a = SessionId::from_parts(1, 1);
        let b = SessionId::from_parts(2, 2);
        journal.append(1, &BTreeMap::from([(a, head(3))])).unwrap();
        journal.append(2, &BTreeMap::from([(a, head(5)), (b, head(1))])).unwrap();
        let end = journal.end;
        drop(journal);
        let (_, read) = Journal::open(dir.path()).unwrap();
        assert_eq!(read.heads, BTreeMap::from([(a, head(5)), (b, head(1))]));
        assert_eq!(read.commit, 2);

        // Damage the last entry: the journal reads as of the first one.
        let file = OpenOptions::new().write(true).open(dir.path().join(JOURNAL_FILE)).unwrap();
        file.write_all_at(&[0xff], end - 3).unwrap();
        let (_, read) = Journal::open(dir.path()).unwrap();
        assert_eq!(read.heads, BTreeMap::from([(a, head(3))]));
    }

    #[test]
    fn compaction_keeps_the_latest_heads() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(dir.path()).unwrap();
        let many: BTreeMap<SessionId, Head> =
            (0..3000u64).map(|n| (SessionId::from_parts(n, u128::from(n)), head(n % 250 + 1))).collect();
        for commit in 0..110 {
            journal.append(commit, &many).unwrap();
        }
        assert!(journal.end < COMPACT_AFTER_BYTES);
        drop(journal);
        let (_, read) = Journal::open(dir.path()).unwrap();
        assert_eq!(read.heads, many);
        assert_eq!(read.commit, 109);
    }
}
