//! The write-ahead log: where every record, blob and resource write is made
//! durable, and where records live for good.
//!
//! The log is a sequence of numbered segment files (see
//! [`crate::engine::LogDir`]). A position in the log, an LSN, is
//! `segment << 32 | offset`. Each segment starts with a [`SegmentHeader`]
//! carrying a random salt; after it come batches, each written with one
//! `pwrite` and made durable with one `fdatasync` by the group committer
//! (`store/src/commit.rs`). A batch is a [`BATCH_HEADER_BYTES`] header (magic,
//! LSN, batch number, length, entry count, and a checksum keyed by the
//! segment's salt over the header and the payload) followed by its entries,
//! padded to [`BATCH_ALIGN`]. Entries are records, resource writes, blobs and
//! fork origins ([`Entry`]).
//!
//! Only one batch is ever unsynced: the committer writes the next batch only
//! after the previous one's `fdatasync` returned. So after a crash at most the
//! last batch is torn, and a torn batch fails its checksum. Recovery reads
//! batches from the last checkpoint until the first that is not valid (the end
//! of the log), then checks that no valid batch follows it in that segment and
//! that no later segment holds data: a valid batch past an invalid one means
//! damage, not a torn tail, and is reported instead of silently cutting the
//! log short. The salt makes the checksums unforgeable by anyone who cannot
//! read the data directory, so bytes a client put in an event can never pass
//! for a batch. Verification's salvaging scan ([`Scan::next_salvaged`]) reads
//! on past damage, and reads a segment whose header is damaged (so whose
//! checksums cannot be checked) by its batch headers alone.
//!
//! All integers are little-endian. The byte layout is specified in
//! `docs/format.md`; offsets here are named constants derived from one another.

use std::fmt;
use std::io;
use std::sync::Arc;

use logbook_core::limits::{MAX_BLOB_BYTES, MAX_EVENT_BYTES};
use logbook_core::verify::{BodyRef, Depth, Prechecked};
use logbook_core::{Body, ChainHash, Digest, Record, Seq, SessionId};

use crate::engine::{LogDir, SegmentFile};
use crate::frame::{self, Codec};
use crate::keys::ResourceKind;

/// The layout version of segments, batches and entries.
pub const WAL_FORMAT: u32 = 1;

/// A segment is closed once the next batch would not fit under this size; a
/// larger batch gets a segment of its own. 64 MiB keeps the number of files
/// small (16 per GiB) while a segment stays cheap to scan on recovery. The
/// format allows any size up to 4 GiB per segment ([`WalOptions`]).
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// How the store writes its log. Segments of any size read the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalOptions {
    /// See [`SEGMENT_BYTES`]; small segments are for tests of rollover.
    pub segment_bytes: u64,
    /// The longest the group committer waits for the writers it just
    /// released before it writes the next batch (see `store/src/commit.rs`);
    /// zero, the default, never waits.
    pub max_linger: std::time::Duration,
    /// The longest the group committer may spend on one batch, or a
    /// checkpoint or a segment's preparation may run, before the store fails
    /// (see `store/src/commit.rs`); [`COMMIT_STALL_LIMIT`] by default, zero
    /// for never.
    ///
    /// [`COMMIT_STALL_LIMIT`]: crate::commit::COMMIT_STALL_LIMIT
    pub stall_limit: std::time::Duration,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: SEGMENT_BYTES,
            max_linger: std::time::Duration::ZERO,
            stall_limit: crate::commit::COMMIT_STALL_LIMIT,
        }
    }
}

/// Most bytes in one batch. A batch is one `pwrite`; appends beyond this wait
/// for the next batch. Well above one maximal append or blob (64 MiB each).
pub const MAX_BATCH_BYTES: usize = 256 << 20;

/// Batches start at multiples of this, so a scan for a damaged log's next
/// valid batch looks at one position in eight.
pub const BATCH_ALIGN: u64 = 8;

const _: () = assert!(MAX_BATCH_BYTES as u64 + SEGMENT_HEADER_BYTES as u64 <= u32::MAX as u64);
const _: () = assert!(SEGMENT_BYTES < 1 << 32);

// Segment header: magic[8] format[4] reserved[4] number[8] salt[24] checksum[16].
pub const SEGMENT_MAGIC: [u8; 8] = *b"LBKSEG\x00\x01";
const SEG_FORMAT_AT: usize = 8;
const SEG_NUMBER_AT: usize = SEG_FORMAT_AT + 8;
const SEG_SALT_AT: usize = SEG_NUMBER_AT + 8;
pub const SALT_BYTES: usize = 24;
const SEG_CHECKSUM_AT: usize = SEG_SALT_AT + SALT_BYTES;
pub const SEGMENT_HEADER_BYTES: usize = SEG_CHECKSUM_AT + CHECKSUM_BYTES;

// Batch header: magic[8] lsn[8] batch[8] len[4] n_entries[4] checksum[16].
pub const BATCH_MAGIC: [u8; 8] = *b"LBKBATCH";
const BATCH_LSN_AT: usize = 8;
const BATCH_NUMBER_AT: usize = BATCH_LSN_AT + 8;
const BATCH_LEN_AT: usize = BATCH_NUMBER_AT + 8;
const BATCH_COUNT_AT: usize = BATCH_LEN_AT + 4;
const BATCH_CHECKSUM_AT: usize = BATCH_COUNT_AT + 4;
pub const BATCH_HEADER_BYTES: usize = BATCH_CHECKSUM_AT + CHECKSUM_BYTES;

const CHECKSUM_BYTES: usize = 16;

const _: () = assert!(SEGMENT_HEADER_BYTES.is_multiple_of(BATCH_ALIGN as usize));
const _: () = assert!(BATCH_HEADER_BYTES.is_multiple_of(BATCH_ALIGN as usize));

/// Domain separation of the batch checksum key.
const BATCH_KEY_CONTEXT: &str = "logbook 2026-12 write-ahead log batch checksum v1";

/// Entry kinds. The discriminants are on disk; only append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum EntryKind {
    Record = 1,
    Resource = 2,
    Blob = 3,
    Fork = 4,
}

// Record entry: kind[1] session[16] seq[8] prev[32] hash[32] type[2] codec[1] len[4] body.
const REC_SESSION_AT: usize = 1;
const REC_SEQ_AT: usize = REC_SESSION_AT + 16;
const REC_PREV_AT: usize = REC_SEQ_AT + 8;
const REC_HASH_AT: usize = REC_PREV_AT + 32;
const REC_TYPE_AT: usize = REC_HASH_AT + 32;
const REC_CODEC_AT: usize = REC_TYPE_AT + 2;
const REC_LEN_AT: usize = REC_CODEC_AT + 1;
pub const RECORD_HEADER_BYTES: usize = REC_LEN_AT + 4;

// Resource entry: kind[1] resource_kind[1] key_len[2] value_len[4] key value.
const RES_KIND_AT: usize = 1;
const RES_KEY_LEN_AT: usize = RES_KIND_AT + 1;
const RES_VALUE_LEN_AT: usize = RES_KEY_LEN_AT + 2;
const RESOURCE_HEADER_BYTES: usize = RES_VALUE_LEN_AT + 4;
/// `value_len` of a removal.
const RESOURCE_REMOVED: u32 = u32::MAX;

// Blob entry: kind[1] digest[32] codec[1] len[4] body.
const BLOB_DIGEST_AT: usize = 1;
const BLOB_CODEC_AT: usize = BLOB_DIGEST_AT + 32;
const BLOB_LEN_AT: usize = BLOB_CODEC_AT + 1;
pub const BLOB_HEADER_BYTES: usize = BLOB_LEN_AT + 4;

// Fork entry: kind[1] child[16] parent[16] at_seq[8] parent_hash[32].
const FORK_CHILD_AT: usize = 1;
const FORK_PARENT_AT: usize = FORK_CHILD_AT + 16;
const FORK_AT_SEQ_AT: usize = FORK_PARENT_AT + 16;
const FORK_HASH_AT: usize = FORK_AT_SEQ_AT + 8;
pub const FORK_ENTRY_BYTES: usize = FORK_HASH_AT + 32;

/// How a record's body is stored. The discriminants are on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum BodyCodec {
    /// The canonical bytes as they are.
    Raw = 0,
    /// The canonical bytes as one zstd frame stating its size.
    Zstd = 1,
    /// Redacted: the body is the 32-byte digest of the canonical bytes.
    Redacted = 2,
}

impl BodyCodec {
    fn from_byte(byte: u8) -> Option<BodyCodec> {
        match byte {
            0 => Some(BodyCodec::Raw),
            1 => Some(BodyCodec::Zstd),
            2 => Some(BodyCodec::Redacted),
            _ => None,
        }
    }
}

/// The LSN of `offset` in segment `segment`.
pub fn lsn(segment: u64, offset: u64) -> u64 {
    (segment << 32) | offset
}

pub fn segment_of(lsn: u64) -> u64 {
    lsn >> 32
}

pub fn offset_of(lsn: u64) -> u64 {
    lsn & 0xffff_ffff
}

fn align(offset: u64) -> u64 {
    offset.div_ceil(BATCH_ALIGN) * BATCH_ALIGN
}

/// Where an entry is: its LSN and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    pub lsn: u64,
    pub len: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "segment {} offset {} ({} bytes)", segment_of(self.lsn), offset_of(self.lsn), self.len)
    }
}

/// An LSN as people read it: the segment and the byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "segment {} offset {}", segment_of(self.0), offset_of(self.0))
    }
}

/// The first bytes of every segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub number: u64,
    pub salt: [u8; SALT_BYTES],
}

impl SegmentHeader {
    /// A header for segment `number` with a fresh random salt.
    pub fn new(number: u64) -> io::Result<SegmentHeader> {
        let mut salt = [0u8; SALT_BYTES];
        random_bytes(&mut salt)?;
        Ok(SegmentHeader { number, salt })
    }

    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut out = [0u8; SEGMENT_HEADER_BYTES];
        out[..8].copy_from_slice(&SEGMENT_MAGIC);
        out[SEG_FORMAT_AT..SEG_FORMAT_AT + 4].copy_from_slice(&WAL_FORMAT.to_le_bytes());
        out[SEG_NUMBER_AT..SEG_NUMBER_AT + 8].copy_from_slice(&self.number.to_le_bytes());
        out[SEG_SALT_AT..SEG_SALT_AT + SALT_BYTES].copy_from_slice(&self.salt);
        let checksum = checksum16(blake3::hash(&out[..SEG_CHECKSUM_AT]).as_bytes());
        out[SEG_CHECKSUM_AT..].copy_from_slice(&checksum);
        out
    }

    /// Decodes a header, checking its magic, format, checksum and number.
    pub fn decode(bytes: &[u8], number: u64) -> Result<SegmentHeader, String> {
        let bytes = bytes.get(..SEGMENT_HEADER_BYTES).ok_or("segment shorter than its header")?;
        if bytes[..8] != SEGMENT_MAGIC {
            return Err("no segment header".to_owned());
        }
        if checksum16(blake3::hash(&bytes[..SEG_CHECKSUM_AT]).as_bytes()) != bytes[SEG_CHECKSUM_AT..] {
            return Err("segment header checksum fails".to_owned());
        }
        let format = u32_at(bytes, SEG_FORMAT_AT);
        if format != WAL_FORMAT {
            return Err(format!("segment format {format}, this binary reads {WAL_FORMAT}"));
        }
        let found = u64_at(bytes, SEG_NUMBER_AT);
        if found != number {
            return Err(format!("segment file {number} holds segment {found}"));
        }
        let mut salt = [0u8; SALT_BYTES];
        salt.copy_from_slice(&bytes[SEG_SALT_AT..SEG_SALT_AT + SALT_BYTES]);
        Ok(SegmentHeader { number, salt })
    }

    pub fn batch_key(&self) -> BatchKey {
        BatchKey(blake3::derive_key(BATCH_KEY_CONTEXT, &self.salt))
    }
}

/// The key of a segment's batch checksums.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BatchKey([u8; 32]);

impl fmt::Debug for BatchKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BatchKey(..)")
    }
}

impl BatchKey {
    fn checksum(&self, header: &[u8], payload: &[u8]) -> [u8; CHECKSUM_BYTES] {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        hasher.update(&header[..BATCH_CHECKSUM_AT]);
        hasher.update(payload);
        checksum16(hasher.finalize().as_bytes())
    }
}

fn checksum16(hash: &[u8; 32]) -> [u8; CHECKSUM_BYTES] {
    let mut out = [0u8; CHECKSUM_BYTES];
    out.copy_from_slice(&hash[..CHECKSUM_BYTES]);
    out
}

fn random_bytes(out: &mut [u8]) -> io::Result<()> {
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom")?.read_exact(out)
}

/// A decoded batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub lsn: u64,
    pub batch: u64,
    pub len: u32,
    pub n_entries: u32,
}

impl BatchHeader {
    /// The LSN just past this batch (and its padding): where the next one goes.
    pub fn end(&self) -> u64 {
        align(self.lsn + BATCH_HEADER_BYTES as u64 + u64::from(self.len))
    }

    /// Decodes the fixed fields; the checksum is checked by [`BatchHeader::check`].
    fn decode(bytes: &[u8]) -> Option<BatchHeader> {
        let bytes = bytes.get(..BATCH_HEADER_BYTES)?;
        if bytes[..8] != BATCH_MAGIC {
            return None;
        }
        Some(BatchHeader {
            lsn: u64_at(bytes, BATCH_LSN_AT),
            batch: u64_at(bytes, BATCH_NUMBER_AT),
            len: u32_at(bytes, BATCH_LEN_AT),
            n_entries: u32_at(bytes, BATCH_COUNT_AT),
        })
    }

    fn check(header: &[u8], payload: &[u8], key: &BatchKey) -> bool {
        header.get(BATCH_CHECKSUM_AT..BATCH_HEADER_BYTES) == Some(&key.checksum(header, payload)[..])
    }
}

/// A batch being filled: header room, then entries. The committer seals it.
#[derive(Debug)]
pub struct BatchBuf {
    pub bytes: Vec<u8>,
    pub n_entries: u32,
}

impl Default for BatchBuf {
    fn default() -> Self {
        BatchBuf::new()
    }
}

impl BatchBuf {
    pub fn new() -> BatchBuf {
        BatchBuf::with_capacity(BATCH_HEADER_BYTES)
    }

    /// An empty batch with room for `capacity` bytes before it grows.
    pub fn with_capacity(capacity: usize) -> BatchBuf {
        let mut bytes = Vec::with_capacity(capacity.max(BATCH_HEADER_BYTES));
        bytes.resize(BATCH_HEADER_BYTES, 0);
        BatchBuf { bytes, n_entries: 0 }
    }

    /// Bytes of entries so far.
    pub fn payload_len(&self) -> usize {
        self.bytes.len() - BATCH_HEADER_BYTES
    }

    pub fn is_empty(&self) -> bool {
        self.n_entries == 0
    }

    /// Offset of the next entry from the batch's start.
    pub fn next_offset(&self) -> u32 {
        self.bytes.len() as u32
    }

    /// Appends a record entry whose body is `body` (already coded as `codec`).
    #[expect(clippy::too_many_arguments, reason = "one argument per field of the entry header")]
    pub fn push_record(
        &mut self,
        session: SessionId,
        seq: Seq,
        prev: ChainHash,
        hash: ChainHash,
        code: u16,
        codec: BodyCodec,
        body: &[u8],
    ) -> u32 {
        let out = &mut self.bytes;
        out.push(EntryKind::Record as u8);
        out.extend_from_slice(&session.to_bytes());
        out.extend_from_slice(&seq.get().to_le_bytes());
        out.extend_from_slice(prev.as_bytes());
        out.extend_from_slice(hash.as_bytes());
        out.extend_from_slice(&code.to_le_bytes());
        out.push(codec as u8);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(body);
        self.n_entries += 1;
        (RECORD_HEADER_BYTES + body.len()) as u32
    }

    /// Appends a resource write; `value` is the framed value, `None` a removal.
    pub fn push_resource(&mut self, kind: ResourceKind, key: &[u8], value: Option<&[u8]>) -> u32 {
        let out = &mut self.bytes;
        let start = out.len();
        out.push(EntryKind::Resource as u8);
        out.push(kind as u8);
        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
        out.extend_from_slice(&value.map_or(RESOURCE_REMOVED, |v| v.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        if let Some(value) = value {
            out.extend_from_slice(value);
        }
        self.n_entries += 1;
        (out.len() - start) as u32
    }

    /// Appends a blob entry whose body is `body` (see [`code_blob`]).
    pub fn push_blob(&mut self, digest: Digest, codec: BodyCodec, body: &[u8]) -> u32 {
        let out = &mut self.bytes;
        out.push(EntryKind::Blob as u8);
        out.extend_from_slice(digest.as_bytes());
        out.push(codec as u8);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(body);
        self.n_entries += 1;
        (BLOB_HEADER_BYTES + body.len()) as u32
    }

    pub fn push_fork(&mut self, fork: &ForkEntry) -> u32 {
        let out = &mut self.bytes;
        out.push(EntryKind::Fork as u8);
        out.extend_from_slice(&fork.child.to_bytes());
        out.extend_from_slice(&fork.parent.to_bytes());
        out.extend_from_slice(&fork.at_seq.get().to_le_bytes());
        out.extend_from_slice(fork.parent_hash.as_bytes());
        self.n_entries += 1;
        FORK_ENTRY_BYTES as u32
    }

    /// Fills in the header for a batch at `lsn` numbered `batch` and pads the
    /// bytes to [`BATCH_ALIGN`]; returns the header.
    pub fn seal(&mut self, lsn: u64, batch: u64, key: &BatchKey) -> BatchHeader {
        let len = self.payload_len() as u32;
        let header = BatchHeader { lsn, batch, len, n_entries: self.n_entries };
        let (head, payload) = self.bytes.split_at_mut(BATCH_HEADER_BYTES);
        head[..8].copy_from_slice(&BATCH_MAGIC);
        head[BATCH_LSN_AT..BATCH_LSN_AT + 8].copy_from_slice(&lsn.to_le_bytes());
        head[BATCH_NUMBER_AT..BATCH_NUMBER_AT + 8].copy_from_slice(&batch.to_le_bytes());
        head[BATCH_LEN_AT..BATCH_LEN_AT + 4].copy_from_slice(&len.to_le_bytes());
        head[BATCH_COUNT_AT..BATCH_COUNT_AT + 4].copy_from_slice(&self.n_entries.to_le_bytes());
        let checksum = key.checksum(head, payload);
        head[BATCH_CHECKSUM_AT..].copy_from_slice(&checksum);
        let padded = align(self.bytes.len() as u64) as usize;
        self.bytes.resize(padded, 0);
        header
    }
}

/// A blob's body as the log stores it: compressed when that pays.
pub fn code_blob(bytes: &[u8]) -> (BodyCodec, Vec<u8>) {
    let mut body = Vec::new();
    match frame::compress(bytes, &mut body) {
        Codec::Zstd => (BodyCodec::Zstd, body),
        Codec::Raw => (BodyCodec::Raw, body),
    }
}

/// A fork origin as the log records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForkEntry {
    pub child: SessionId,
    pub parent: SessionId,
    pub at_seq: Seq,
    pub parent_hash: ChainHash,
}

/// A record entry's fixed fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub session: SessionId,
    pub seq: Seq,
    pub prev: ChainHash,
    pub hash: ChainHash,
    pub code: u16,
    pub codec: BodyCodec,
    pub body_len: u32,
}

/// One decoded entry, borrowing from the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry<'a> {
    Record { header: RecordHeader, body: &'a [u8] },
    Resource { kind: ResourceKind, key: &'a [u8], value: Option<&'a [u8]> },
    Blob { digest: Digest, codec: BodyCodec, body: &'a [u8] },
    Fork(ForkEntry),
}

impl Entry<'_> {
    /// Bytes of this entry's body once decoded (what its frame claims, capped
    /// at the limit decoding enforces): what reading it holds in memory.
    pub fn decoded_len(&self) -> usize {
        match self {
            Entry::Record { header, body } => decoded_body_len(header.codec, body, MAX_EVENT_BYTES),
            Entry::Blob { codec, body, .. } => decoded_body_len(*codec, body, MAX_BLOB_BYTES),
            Entry::Resource { .. } | Entry::Fork(_) => 0,
        }
    }
}

fn decoded_body_len(codec: BodyCodec, body: &[u8], max_bytes: usize) -> usize {
    match codec {
        BodyCodec::Raw | BodyCodec::Redacted => body.len(),
        BodyCodec::Zstd => frame::claimed_size(body)
            .map_or(body.len(), |claimed| usize::try_from(claimed).unwrap_or(max_bytes).min(max_bytes)),
    }
}

/// Decodes the entry at the start of `bytes`; returns it and its length.
pub fn decode_entry(bytes: &[u8]) -> Result<(Entry<'_>, usize), String> {
    let kind = *bytes.first().ok_or("empty entry")?;
    let need = |n: usize| if bytes.len() >= n { Ok(()) } else { Err(format!("entry of kind {kind} cut short")) };
    match kind {
        k if k == EntryKind::Record as u8 => {
            need(RECORD_HEADER_BYTES)?;
            let header = decode_record_header(bytes)?;
            let end = RECORD_HEADER_BYTES + header.body_len as usize;
            need(end)?;
            Ok((Entry::Record { header, body: &bytes[RECORD_HEADER_BYTES..end] }, end))
        }
        k if k == EntryKind::Resource as u8 => {
            need(RESOURCE_HEADER_BYTES)?;
            let kind = ResourceKind::from_byte(bytes[RES_KIND_AT]).ok_or("unknown resource kind")?;
            let key_len = usize::from(u16::from_le_bytes([bytes[RES_KEY_LEN_AT], bytes[RES_KEY_LEN_AT + 1]]));
            let value_len = u32_at(bytes, RES_VALUE_LEN_AT);
            let key_end = RESOURCE_HEADER_BYTES + key_len;
            need(key_end)?;
            let key = &bytes[RESOURCE_HEADER_BYTES..key_end];
            if value_len == RESOURCE_REMOVED {
                return Ok((Entry::Resource { kind, key, value: None }, key_end));
            }
            let end = key_end + value_len as usize;
            need(end)?;
            Ok((Entry::Resource { kind, key, value: Some(&bytes[key_end..end]) }, end))
        }
        k if k == EntryKind::Blob as u8 => {
            need(BLOB_HEADER_BYTES)?;
            let digest = Digest::from_bytes(array32(bytes, BLOB_DIGEST_AT));
            let codec = BodyCodec::from_byte(bytes[BLOB_CODEC_AT])
                .filter(|c| *c != BodyCodec::Redacted)
                .ok_or("unknown blob codec")?;
            let end = BLOB_HEADER_BYTES + u32_at(bytes, BLOB_LEN_AT) as usize;
            need(end)?;
            Ok((Entry::Blob { digest, codec, body: &bytes[BLOB_HEADER_BYTES..end] }, end))
        }
        k if k == EntryKind::Fork as u8 => {
            need(FORK_ENTRY_BYTES)?;
            let fork = ForkEntry {
                child: SessionId::from_bytes(array16(bytes, FORK_CHILD_AT)),
                parent: SessionId::from_bytes(array16(bytes, FORK_PARENT_AT)),
                at_seq: Seq::new(u64_at(bytes, FORK_AT_SEQ_AT)),
                parent_hash: ChainHash::from_bytes(array32(bytes, FORK_HASH_AT)),
            };
            Ok((Entry::Fork(fork), FORK_ENTRY_BYTES))
        }
        other => Err(format!("unknown entry kind {other}")),
    }
}

fn decode_record_header(bytes: &[u8]) -> Result<RecordHeader, String> {
    let codec = BodyCodec::from_byte(bytes[REC_CODEC_AT]).ok_or("unknown body codec")?;
    Ok(RecordHeader {
        session: SessionId::from_bytes(array16(bytes, REC_SESSION_AT)),
        seq: Seq::new(u64_at(bytes, REC_SEQ_AT)),
        prev: ChainHash::from_bytes(array32(bytes, REC_PREV_AT)),
        hash: ChainHash::from_bytes(array32(bytes, REC_HASH_AT)),
        code: u16::from_le_bytes([bytes[REC_TYPE_AT], bytes[REC_TYPE_AT + 1]]),
        codec,
        body_len: u32_at(bytes, REC_LEN_AT),
    })
}

/// Every entry of a batch's payload, with its offset in the payload.
pub fn entries(payload: &[u8]) -> impl Iterator<Item = Result<(usize, Entry<'_>), String>> {
    let mut at = 0usize;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || at >= payload.len() {
            return None;
        }
        match decode_entry(&payload[at..]) {
            Ok((entry, len)) => {
                let item = (at, entry);
                at += len;
                Some(Ok(item))
            }
            Err(reason) => {
                failed = true;
                Some(Err(format!("at payload offset {at}: {reason}")))
            }
        }
    })
}

/// Turns a record entry into the record it stores, checking that it is the
/// record expected there and that its hash matches its contents. Decompresses
/// the body.
pub fn decode_record(bytes: &[u8], session: SessionId, seq: Seq) -> Result<Record, String> {
    let (entry, len) = decode_entry(bytes)?;
    let Entry::Record { header, body } = entry else {
        return Err("not a record entry".to_owned());
    };
    if len != bytes.len() {
        return Err(format!("record entry of {len} bytes where the index says {}", bytes.len()));
    }
    if header.session != session || header.seq != seq {
        return Err(format!("entry holds {}#{} where {session}#{seq} belongs", header.session, header.seq));
    }
    let record = record_from_entry(&header, body)?;
    if !record.is_self_consistent() {
        return Err("stored hash does not match the record".to_owned());
    }
    Ok(record)
}

/// The record a record entry stores, without checking its hash.
pub fn record_from_entry(header: &RecordHeader, body: &[u8]) -> Result<Record, String> {
    let body = match header.codec {
        BodyCodec::Raw => Body::Canonical(body.to_vec()),
        BodyCodec::Zstd => Body::Canonical(frame::decompress(body, MAX_EVENT_BYTES).map_err(|e| e.to_string())?),
        BodyCodec::Redacted => Body::Redacted { digest: redacted_digest(body)? },
    };
    Ok(Record::from_parts(header.session, header.seq, header.prev, header.hash, body))
}

/// [`Prechecked::of`] the record a record entry stores, without keeping it:
/// a compressed body is decompressed into `scratch`, which the caller reuses.
pub fn precheck_entry(
    header: &RecordHeader,
    body: &[u8],
    depth: Depth,
    scratch: &mut Vec<u8>,
) -> Result<Prechecked, String> {
    let body = match header.codec {
        BodyCodec::Raw => BodyRef::Canonical(body),
        BodyCodec::Zstd => {
            frame::decompress_into(body, MAX_EVENT_BYTES, scratch).map_err(|e| e.to_string())?;
            BodyRef::Canonical(scratch)
        }
        BodyCodec::Redacted => BodyRef::Redacted { digest: redacted_digest(body)? },
    };
    Ok(Prechecked::of_parts(header.seq, header.prev, header.hash, body, depth))
}

/// The digest a redacted record's body holds in place of its bytes.
fn redacted_digest(body: &[u8]) -> Result<Digest, String> {
    let digest: [u8; 32] = body.try_into().map_err(|_| "redacted body is not a 32-byte digest")?;
    Ok(Digest::from_bytes(digest))
}

/// A blob entry's bytes, checked against its digest.
pub fn decode_blob(bytes: &[u8], digest: Digest) -> Result<Vec<u8>, String> {
    let (entry, len) = decode_entry(bytes)?;
    let Entry::Blob { digest: found, codec, body } = entry else {
        return Err("not a blob entry".to_owned());
    };
    if len != bytes.len() || found != digest {
        return Err("the location holds another entry".to_owned());
    }
    blob_bytes(digest, codec, body)
}

/// A blob entry's bytes from its body, checked against its digest.
pub fn blob_bytes(digest: Digest, codec: BodyCodec, body: &[u8]) -> Result<Vec<u8>, String> {
    match codec {
        BodyCodec::Raw => check_blob(digest, body.to_vec()),
        BodyCodec::Zstd => check_blob(digest, frame::decompress(body, MAX_BLOB_BYTES).map_err(|e| e.to_string())?),
        BodyCodec::Redacted => Err("blob cannot be redacted".to_owned()),
    }
}

/// Checks a blob entry's bytes against its digest without keeping them: a
/// compressed body is decompressed into `scratch`, which the caller reuses.
pub fn check_blob_entry(digest: Digest, codec: BodyCodec, body: &[u8], scratch: &mut Vec<u8>) -> Result<(), String> {
    let bytes = match codec {
        BodyCodec::Raw => body,
        BodyCodec::Zstd => {
            frame::decompress_into(body, MAX_BLOB_BYTES, scratch).map_err(|e| e.to_string())?;
            scratch.as_slice()
        }
        BodyCodec::Redacted => return Err("blob cannot be redacted".to_owned()),
    };
    check_blob(digest, bytes).map(|_| ())
}

fn check_blob<B: AsRef<[u8]>>(digest: Digest, bytes: B) -> Result<B, String> {
    if logbook_core::chain::digest(bytes.as_ref()) != digest {
        return Err("contents do not match the blob's hash".to_owned());
    }
    Ok(bytes)
}

/// Reads the entry at `location`.
pub fn read_entry(dir: &dyn LogDir, location: Location) -> io::Result<Vec<u8>> {
    // The length comes from the index: a damaged one must not size the buffer.
    if location.len as usize > MAX_BATCH_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("an entry of {} bytes is longer than any batch ({MAX_BATCH_BYTES})", location.len),
        ));
    }
    let segment = dir.open_segment(segment_of(location.lsn), false)?;
    let mut buf = vec![0u8; location.len as usize];
    segment.read_exact_at(&mut buf, offset_of(location.lsn))?;
    Ok(buf)
}

/// Appends batches to the log: the one writer, owned by the committer.
#[derive(Debug)]
pub struct LogWriter {
    dir: Arc<dyn LogDir>,
    segment_bytes: u64,
    segment: Option<Arc<dyn SegmentFile>>,
    header: Option<SegmentHeader>,
    key: Option<BatchKey>,
    /// Segment and offset of the next batch.
    number: u64,
    offset: u64,
    next_batch: u64,
}

impl LogWriter {
    /// A writer continuing at `end` (as recovery found it) with batch number
    /// `next_batch`. `header` is the segment header at `end`'s segment, if that
    /// segment exists and is valid.
    pub fn new(dir: Arc<dyn LogDir>, end: u64, next_batch: u64, header: Option<SegmentHeader>) -> LogWriter {
        LogWriter {
            dir,
            segment_bytes: SEGMENT_BYTES,
            segment: None,
            key: header.map(|h| h.batch_key()),
            header,
            number: segment_of(end),
            offset: offset_of(end),
            next_batch,
        }
    }

    /// The same writer, closing segments at `segment_bytes` (at most 4 GiB).
    pub fn with_segment_bytes(mut self, segment_bytes: u64) -> LogWriter {
        self.segment_bytes = segment_bytes.clamp(SEGMENT_HEADER_BYTES as u64 + 1, u64::from(u32::MAX));
        self
    }

    /// Where the next batch will go.
    pub fn end(&self) -> u64 {
        lsn(self.number, self.offset)
    }

    pub fn next_batch(&self) -> u64 {
        self.next_batch
    }

    /// Seals `batch`, writes it and makes it durable. Returns its header (its
    /// LSN tells where its entries are).
    pub fn write(&mut self, batch: &mut BatchBuf) -> io::Result<BatchHeader> {
        let total = align((BATCH_HEADER_BYTES + batch.payload_len()) as u64);
        let fresh = self.header.is_none() || self.offset < SEGMENT_HEADER_BYTES as u64;
        let full = self.offset > SEGMENT_HEADER_BYTES as u64 && self.offset + total > self.segment_bytes;
        if full {
            self.number += 1;
        }
        if full || fresh {
            return self.write_in_new_segment(batch);
        }
        let segment = match &self.segment {
            Some(segment) => Arc::clone(segment),
            None => {
                let segment = self.dir.open_segment(self.number, false)?;
                self.segment = Some(Arc::clone(&segment));
                segment
            }
        };
        let key = self.key.ok_or_else(|| io::Error::other("segment without a batch key"))?;
        let header = batch.seal(lsn(self.number, self.offset), self.next_batch, &key);
        segment.write_at(&batch.bytes, self.offset)?;
        segment.sync_data()?;
        self.offset += batch.bytes.len() as u64;
        self.next_batch += 1;
        Ok(header)
    }

    /// Starts segment `self.number` (overwriting a torn or empty one) with its
    /// header and `batch`, in one write and one sync.
    fn write_in_new_segment(&mut self, batch: &mut BatchBuf) -> io::Result<BatchHeader> {
        let header = SegmentHeader::new(self.number)?;
        let key = header.batch_key();
        let segment = self.dir.open_segment(self.number, true)?;
        let batch_header = batch.seal(lsn(self.number, SEGMENT_HEADER_BYTES as u64), self.next_batch, &key);
        let mut bytes = Vec::with_capacity(SEGMENT_HEADER_BYTES + batch.bytes.len());
        bytes.extend_from_slice(&header.encode());
        bytes.extend_from_slice(&batch.bytes);
        segment.write_at(&bytes, 0)?;
        segment.sync_data()?;
        self.segment = Some(segment);
        self.header = Some(header);
        self.key = Some(key);
        self.offset = bytes.len() as u64;
        self.next_batch += 1;
        Ok(batch_header)
    }
}

/// Why a scan of the log stopped somewhere other than its clean end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("reading the log: {0}")]
    Io(String),
    #[error("the log is damaged at {} ({reason}): an intact batch follows at {}", Lsn(*at), Lsn(*later))]
    Damaged { at: u64, later: u64, reason: String },
    #[error("segment {segment} is damaged: {reason}")]
    BadSegment { segment: u64, reason: String },
}

/// One valid batch read by a [`Scan`].
#[derive(Debug)]
pub struct ScannedBatch {
    pub header: BatchHeader,
    pub payload: Vec<u8>,
}

/// Reads the log's batches in order from an LSN to the end, telling a torn
/// tail from damage (see the module documentation).
#[derive(Debug)]
pub struct Scan {
    dir: Arc<dyn LogDir>,
    segments: Vec<u64>,
    number: u64,
    offset: u64,
    reader: Option<SegmentReader>,
    /// The number the next batch must carry, once known.
    expected_batch: Option<u64>,
    done: bool,
    /// A salvaging scan ([`Scan::next_salvaged`]) is reading a segment whose
    /// header does not decode, batch header by batch header.
    keyless: bool,
    /// A damaged segment header the salvaging scan met and has not yet
    /// reported with a batch: its segment and why.
    unreported: Option<(u64, String)>,
}

/// A batch read by [`Scan::next_salvaged`], and what was wrong around it.
#[derive(Debug)]
pub struct Salvaged {
    pub batch: ScannedBatch,
    pub problem: Option<String>,
}

impl Salvaged {
    /// The same batch with `problem` reported before its own.
    fn with_problem_first(mut self, problem: String) -> Salvaged {
        self.problem = Some(match self.problem.take() {
            Some(own) => format!("{problem}; {own}"),
            None => problem,
        });
        self
    }
}

/// Where a scan ended: the log's end and the next batch number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanEnd {
    pub end: u64,
    pub next_batch: u64,
    /// The header of the end's segment, if it holds one.
    pub header: Option<SegmentHeader>,
}

/// How a salvaging scan says that it read a segment's batches without their
/// checksums.
const KEYLESS_NOTE: &str = "its batches are read by their headers alone, without their checksums";

/// Bytes read per `pread` while scanning.
const SCAN_READ_BYTES: usize = 1 << 20;

impl Scan {
    /// A scan from `from`, expecting batch number `batch` first (`None`: any).
    pub fn new(dir: Arc<dyn LogDir>, from: u64, batch: Option<u64>) -> io::Result<Scan> {
        let segments = dir.segments()?;
        Ok(Scan {
            dir,
            segments,
            number: segment_of(from),
            offset: offset_of(from),
            reader: None,
            expected_batch: batch,
            done: false,
            keyless: false,
            unreported: None,
        })
    }

    /// The next valid batch, or `None` at the end of the log.
    pub fn next_batch(&mut self) -> Result<Option<ScannedBatch>, ScanError> {
        if self.done {
            return Ok(None);
        }
        loop {
            if self.reader.is_none() && !self.open_current()? {
                self.done = true;
                return Ok(None);
            }
            let Some(reader) = self.reader.as_mut() else { continue };
            if reader.header.is_none() && self.segments.contains(&(self.number + 1)) {
                // Only the newest segment can have a torn header.
                return Err(ScanError::BadSegment {
                    segment: self.number,
                    reason: "its header is damaged while a later segment exists".to_owned(),
                });
            }
            let at = lsn(self.number, self.offset);
            let reason = match reader.batch_at(self.offset, self.number, self.expected_batch) {
                Ok(Some(batch)) => {
                    self.offset = offset_of(batch.header.end());
                    self.expected_batch = Some(batch.header.batch + 1);
                    return Ok(Some(batch));
                }
                Ok(None) => "nothing written".to_owned(),
                Err(BatchProblem::Invalid(reason)) => reason,
                Err(BatchProblem::Misnumbered { found, expected }) => {
                    // An intact batch is never a torn write: it is out of place.
                    let reason = format!("intact batch numbered {found} where {expected} belongs");
                    return Err(ScanError::Damaged { at, later: at, reason });
                }
            };
            // No valid batch here: a torn tail, the segment's end, or damage.
            if let Some(later) = reader.find_valid_after(self.offset, self.number) {
                return Err(ScanError::Damaged { at, later, reason });
            }
            if self.next_segment_has_data()? {
                self.number += 1;
                self.offset = SEGMENT_HEADER_BYTES as u64;
                self.reader = None;
                continue;
            }
            self.done = true;
            return Ok(None);
        }
    }

    /// Like [`Scan::next_batch`], but for verification: a batch whose header
    /// is intact but whose checksum fails is returned with the problem (its
    /// records are then checked one by one), and past a batch that cannot be
    /// read at all the scan skips to the next valid one, reporting the gap. A
    /// segment whose header does not decode is reported as damaged (with the
    /// next batch returned, or as the error at the end if none follows) and
    /// its batches are read by their headers alone, without their checksums
    /// (whose key the header holds); then the scan goes on into the next
    /// segment. The records' hashes still check every entry.
    pub fn next_salvaged(&mut self) -> Result<Option<Salvaged>, ScanError> {
        let next = self.salvage_next();
        let Some((segment, reason)) = self.unreported.take() else { return next };
        let header_problem = format!("segment {segment}: {reason}; {KEYLESS_NOTE}");
        match next {
            Ok(Some(salvaged)) => Ok(Some(salvaged.with_problem_first(header_problem))),
            Ok(None) => Err(ScanError::BadSegment { segment, reason }),
            Err(err) => Err(ScanError::BadSegment { segment, reason: format!("{reason}; then {err}") }),
        }
    }

    /// What [`Scan::next_salvaged`] returns, before the damaged header it
    /// may have met on the way (`unreported`) is added.
    fn salvage_next(&mut self) -> Result<Option<Salvaged>, ScanError> {
        loop {
            if self.keyless {
                if let Some(salvaged) = self.next_keyless() {
                    return Ok(Some(salvaged));
                }
                // The damaged segment is read: on to the next one, if any.
                self.keyless = false;
                let next = self.number + 1;
                if !self.segments.contains(&next) {
                    // Done with it (so that a call after the end does not read it again).
                    (self.done, self.reader) = (true, None);
                    return Ok(None);
                }
                (self.number, self.offset, self.reader) = (next, SEGMENT_HEADER_BYTES as u64, None);
                (self.expected_batch, self.done) = (None, false);
                continue;
            }
            return match self.next_batch() {
                Ok(Some(batch)) => Ok(Some(Salvaged { batch, problem: None })),
                Ok(None) if self.header_damaged_here() => {
                    // The scan started in a segment whose header does not
                    // decode, the last one, with nothing showing it durable
                    // (torn at creation, or damaged): its batches are read
                    // anyway. The caller ignores batches past the log's
                    // durable end (a torn creation's), their problem with them.
                    self.start_keyless();
                    let header_problem = format!("segment {}'s header does not decode: {KEYLESS_NOTE}", self.number);
                    let salvaged = self.next_keyless().map(|salvaged| salvaged.with_problem_first(header_problem));
                    if salvaged.is_none() {
                        (self.keyless, self.done, self.reader) = (false, true, None);
                    }
                    Ok(salvaged)
                }
                Ok(None) => {
                    // The end, unless what is there has an intact header: then it
                    // is a damaged batch, not a torn one (the caller ignores
                    // batches past the log's durable end, where a torn one is).
                    let Some(reader) = self.reader.as_mut() else { return Ok(None) };
                    let Some(batch) = reader.batch_ignoring_checksum(self.offset, self.number) else {
                        return Ok(None);
                    };
                    let problem = format!("the batch at {} fails its checksum", Lsn(batch.header.lsn));
                    self.offset = offset_of(batch.header.end());
                    self.expected_batch = None;
                    self.done = false;
                    Ok(Some(Salvaged { batch, problem: Some(problem) }))
                }
                Err(ScanError::BadSegment { segment, reason })
                    if segment == self.number && self.header_damaged_here() =>
                {
                    // Reported with the next batch salvaged (`next_salvaged`).
                    self.unreported = Some((segment, reason));
                    self.start_keyless();
                    continue;
                }
                Err(ScanError::Damaged { at, later, reason }) => {
                    let Some(reader) = self.reader.as_mut() else { return Ok(None) };
                    self.expected_batch = None;
                    // The batch there is read by its header alone, unless that
                    // header claims bytes of the intact batch found after it
                    // (its length is damaged): then the stretch is skipped.
                    if let Some(batch) = reader.batch_ignoring_checksum(offset_of(at), self.number)
                        && (later <= at || batch.header.end() <= later)
                    {
                        self.offset = offset_of(batch.header.end());
                        let problem = format!("the batch at {}: {reason}", Lsn(at));
                        return Ok(Some(Salvaged { batch, problem: Some(problem) }));
                    }
                    if later <= at {
                        return Ok(None);
                    }
                    if segment_of(later) != self.number {
                        // The intact batch is the next segment's first.
                        (self.number, self.reader) = (segment_of(later), None);
                    }
                    self.offset = offset_of(later);
                    let problem = format!("{} to {} unreadable ({reason}): skipped", Lsn(at), Lsn(later));
                    let batch = self.next_batch()?;
                    Ok(batch.map(|batch| Salvaged { batch, problem: Some(problem) }))
                }
                Err(other) => Err(other),
            };
        }
    }

    /// Whether the scan is in a segment whose header does not decode.
    fn header_damaged_here(&self) -> bool {
        self.reader.as_ref().is_some_and(|reader| reader.header.is_none())
    }

    /// Reads the current segment (whose header does not decode) from its
    /// first batch on, by batch headers ([`Scan::next_keyless`]).
    fn start_keyless(&mut self) {
        (self.keyless, self.done) = (true, false);
        self.offset = SEGMENT_HEADER_BYTES as u64;
        self.expected_batch = None;
    }

    /// The next batch of the current segment, whose header does not decode:
    /// the batch at the scan's offset if its header is intact (with the
    /// magic, stating that position and a length the segment holds), else
    /// the next such one in the segment, the stretch before it reported as
    /// skipped. `None` at the segment's end.
    fn next_keyless(&mut self) -> Option<Salvaged> {
        let number = self.number;
        let at = self.offset;
        let reader = self.reader.as_mut()?;
        let (batch, problem) = match reader.batch_ignoring_checksum(at, number) {
            Some(batch) => (batch, None),
            None => {
                let later = reader.find_magic_from(at + BATCH_ALIGN, |reader, candidate| {
                    reader.batch_header_at(candidate, number).is_some()
                })?;
                let batch = reader.batch_ignoring_checksum(later, number)?;
                let skipped =
                    format!("{} to {} holds no batch header: skipped", Lsn(lsn(number, at)), Lsn(lsn(number, later)));
                (batch, Some(skipped))
            }
        };
        self.offset = offset_of(batch.header.end());
        Some(Salvaged { batch, problem })
    }

    /// Where the log ends, once [`Scan::next_batch`] returned `None`; also
    /// checks that no segment beyond holds anything.
    pub fn end(&self) -> Result<ScanEnd, ScanError> {
        if let Some(stray) = self.segments.iter().find(|n| **n > self.number + 1) {
            return Err(ScanError::BadSegment {
                segment: *stray,
                reason: format!("exists beyond the log's end in segment {}", self.number),
            });
        }
        Ok(ScanEnd {
            end: lsn(self.number, self.offset),
            next_batch: self.expected_batch.unwrap_or(0),
            header: self.reader.as_ref().and_then(|r| r.header),
        })
    }

    /// Opens the scan's current segment; `false` if it does not exist.
    fn open_current(&mut self) -> Result<bool, ScanError> {
        let starts_inside = self.offset > SEGMENT_HEADER_BYTES as u64;
        let bad = |reason: &str| ScanError::BadSegment { segment: self.number, reason: reason.to_owned() };
        if !self.segments.contains(&self.number) {
            if starts_inside {
                // The scan starts where earlier batches were (a checkpoint): they must be there.
                return Err(bad("is missing, though the log was checkpointed inside it"));
            }
            // Segments are never deleted: a later one that holds batches
            // means this one was lost (an empty log would have the writer
            // overwrite them).
            for later in self.segments.iter().copied().filter(|n| *n > self.number) {
                if self.holds_batches(later)? {
                    return Err(bad(&format!("is missing, though segment {later} after it holds batches")));
                }
            }
            return Ok(false);
        }
        let mut reader = self.reader_of(self.number)?;
        if starts_inside && reader.len < self.offset {
            return Err(bad("is shorter than the log was when it was checkpointed"));
        }
        if reader.header.is_none() {
            if starts_inside {
                return Err(bad("has a damaged header, though it holds checkpointed batches"));
            }
            // A segment whose header never became durable holds nothing,
            // unless a batch in it shows that its header was durable once.
            // (With a later segment, `next_batch` reports the header anyway.)
            self.offset = SEGMENT_HEADER_BYTES as u64;
            if !self.segments.contains(&(self.number + 1))
                && let Some(evidence) = reader.durable_batch_evidence(self.number, self.expected_batch)
            {
                let segment = self.number;
                // The reader stays, so that a salvaging scan reads on from it.
                self.reader = Some(reader);
                return Err(damaged_header(segment, evidence));
            }
        } else if self.offset < SEGMENT_HEADER_BYTES as u64 {
            self.offset = SEGMENT_HEADER_BYTES as u64;
        }
        self.reader = Some(reader);
        Ok(true)
    }

    /// A reader of segment `number`, its header loaded.
    fn reader_of(&self, number: u64) -> Result<SegmentReader, ScanError> {
        let file = self.dir.open_segment(number, false).map_err(|e| ScanError::Io(e.to_string()))?;
        let mut reader = SegmentReader::new(file).map_err(|e| ScanError::Io(e.to_string()))?;
        reader.load_header(number);
        Ok(reader)
    }

    /// Whether segment `number` holds a batch: a valid one anywhere in it, or
    /// one showing that its (damaged) header was durable.
    fn holds_batches(&self, number: u64) -> Result<bool, ScanError> {
        let mut reader = self.reader_of(number)?;
        if reader.key.is_none() {
            return Ok(reader.durable_batch_evidence(number, None).is_some());
        }
        let first = SEGMENT_HEADER_BYTES as u64;
        Ok(matches!(reader.batch_at(first, number, None), Ok(Some(_)))
            || reader.find_valid_after(first, number).is_some())
    }

    /// Whether the next segment exists and starts with a valid batch.
    fn next_segment_has_data(&mut self) -> Result<bool, ScanError> {
        let next = self.number + 1;
        if !self.segments.contains(&next) {
            return Ok(false);
        }
        let mut reader = self.reader_of(next)?;
        let first = SEGMENT_HEADER_BYTES as u64;
        if reader.key.is_none() {
            // Prepared (zeroes) or torn at creation: no batch in it can be
            // valid, and it holds nothing. Unless a batch in it shows that its
            // header was durable: then the header is damaged, and ending the
            // log here would drop acknowledged batches (the next rollover
            // would overwrite them).
            if let Some(evidence) = reader.durable_batch_evidence(next, self.expected_batch) {
                // The scan moves to `next`, so that a salvaging scan reads on from it.
                (self.number, self.offset, self.reader) = (next, first, Some(reader));
                return Err(damaged_header(next, evidence));
            }
            return Ok(false);
        }
        let at = lsn(next, first);
        let reason = match reader.batch_at(first, next, self.expected_batch) {
            Ok(Some(_)) => return Ok(true),
            Ok(None) => "nothing written".to_owned(),
            Err(BatchProblem::Invalid(reason)) => reason,
            Err(BatchProblem::Misnumbered { found, expected }) => {
                // The damage is where the scan stands (the batch that should
                // have been numbered `expected`, or the end of this segment):
                // reported from there, so that a salvaging scan reads that
                // batch first, then goes on to `next`'s.
                let reason =
                    format!("intact batch numbered {found} where {expected} belongs (it starts segment {next})");
                return Err(ScanError::Damaged { at: lsn(self.number, self.offset), later: at, reason });
            }
        };
        // A rollover writes the new segment's header and first batch in one
        // write, after everything before is durable: if that first batch is
        // torn, nothing can follow it. An intact batch later on is damage,
        // not a clean end (which a rollover would then overwrite).
        match reader.find_valid_after(first, next) {
            Some(later) => {
                // The damage is in `next`: the scan moves there, so that a
                // salvaging scan goes on from it (not from this segment again).
                (self.number, self.offset, self.reader) = (next, first, Some(reader));
                Err(ScanError::Damaged { at, later, reason })
            }
            None => Ok(false),
        }
    }
}

/// The error for segment `segment`, whose header does not decode although
/// the batch header at `evidence` shows it was durable once (see
/// [`SegmentReader::durable_batch_evidence`]).
fn damaged_header(segment: u64, evidence: u64) -> ScanError {
    ScanError::BadSegment {
        segment,
        reason: format!(
            "its header is damaged, though the batch at {} shows that batches in it were durable \
             (a rollover writes the header with the segment's first batch, the next batch only once that is synced)",
            Lsn(evidence)
        ),
    }
}

/// Whether a batch numbered `batch` at `offset` can be a later batch (not
/// the first) of a segment whose first batch is numbered `first` (`None`:
/// unknown, anything can): numbers grow by one a batch, and each batch takes
/// at least [`BATCH_HEADER_BYTES`].
fn follows_first_batch(batch: u64, offset: u64, first: Option<u64>) -> bool {
    let Some(first) = first else { return true };
    let room = offset.saturating_sub(SEGMENT_HEADER_BYTES as u64) / BATCH_HEADER_BYTES as u64;
    batch > first && batch - first <= room
}

/// Why there is no valid batch where one was looked for.
#[derive(Debug)]
enum BatchProblem {
    /// Torn, damaged or never written.
    Invalid(String),
    /// Intact, but not the batch that belongs there.
    Misnumbered { found: u64, expected: u64 },
}

/// Buffered sequential reads of one segment.
#[derive(Debug)]
struct SegmentReader {
    file: Arc<dyn SegmentFile>,
    len: u64,
    header: Option<SegmentHeader>,
    key: Option<BatchKey>,
    buf: Vec<u8>,
    buf_at: u64,
}

impl SegmentReader {
    fn new(file: Arc<dyn SegmentFile>) -> io::Result<SegmentReader> {
        let len = file.len()?;
        Ok(SegmentReader { file, len, header: None, key: None, buf: Vec::new(), buf_at: 0 })
    }

    fn load_header(&mut self, number: u64) {
        let header = self.read(0, SEGMENT_HEADER_BYTES).ok().and_then(|b| SegmentHeader::decode(b, number).ok());
        self.key = header.map(|h| h.batch_key());
        self.header = header;
    }

    /// `len` bytes at `offset`, from the buffer or a fresh read.
    fn read(&mut self, offset: u64, len: usize) -> io::Result<&[u8]> {
        let end = offset + len as u64;
        if end > self.len {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "past the end of the segment"));
        }
        if offset < self.buf_at || end > self.buf_at + self.buf.len() as u64 {
            let want = len.max(SCAN_READ_BYTES).min((self.len - offset) as usize);
            self.buf.resize(want, 0);
            let n_read = self.file.read_at(&mut self.buf, offset)?;
            self.buf.truncate(n_read);
            self.buf_at = offset;
            if n_read < len {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "segment shorter than it claimed"));
            }
        }
        let start = (offset - self.buf_at) as usize;
        Ok(&self.buf[start..start + len])
    }

    /// The valid batch at `offset`: `Ok(None)` where nothing was written.
    fn batch_at(
        &mut self,
        offset: u64,
        number: u64,
        expected: Option<u64>,
    ) -> Result<Option<ScannedBatch>, BatchProblem> {
        let invalid = |reason: &str| BatchProblem::Invalid(reason.to_owned());
        let Some(key) = self.key else { return Err(invalid("the segment has no valid header")) };
        let Ok(head) = self.read(offset, BATCH_HEADER_BYTES) else { return Ok(None) };
        if head.iter().all(|b| *b == 0) {
            return Ok(None);
        }
        let head = head.to_vec();
        let header = BatchHeader::decode(&head).ok_or_else(|| invalid("no batch header"))?;
        if header.lsn != lsn(number, offset) {
            return Err(BatchProblem::Invalid(format!("the batch header claims {}", Lsn(header.lsn))));
        }
        if header.len as usize > MAX_BATCH_BYTES {
            return Err(BatchProblem::Invalid(format!("batch claims {} bytes", header.len)));
        }
        let payload = self
            .read(offset + BATCH_HEADER_BYTES as u64, header.len as usize)
            .map_err(|_| invalid("batch cut short"))?
            .to_vec();
        if !BatchHeader::check(&head, &payload, &key) {
            return Err(invalid("batch checksum fails"));
        }
        if let Some(expected) = expected
            && header.batch != expected
        {
            return Err(BatchProblem::Misnumbered { found: header.batch, expected });
        }
        Ok(Some(ScannedBatch { header, payload }))
    }

    /// The header of the batch at `offset` if it has the magic, states this
    /// position and a length that a batch can have and the segment holds,
    /// whatever its checksum says (checking that needs the segment's key).
    fn batch_header_at(&mut self, offset: u64, number: u64) -> Option<BatchHeader> {
        let header = BatchHeader::decode(self.read(offset, BATCH_HEADER_BYTES).ok()?)?;
        let end = offset + BATCH_HEADER_BYTES as u64 + u64::from(header.len);
        let plausible = header.lsn == lsn(number, offset) && header.len as usize <= MAX_BATCH_BYTES && end <= self.len;
        plausible.then_some(header)
    }

    /// The batch at `offset` if its header is intact and its payload within
    /// the segment, whatever its checksum says.
    fn batch_ignoring_checksum(&mut self, offset: u64, number: u64) -> Option<ScannedBatch> {
        let header = self.batch_header_at(offset, number)?;
        let payload = self.read(offset + BATCH_HEADER_BYTES as u64, header.len as usize).ok()?.to_vec();
        Some(ScannedBatch { header, payload })
    }

    /// The LSN of a valid batch after `offset` in this segment, if any.
    fn find_valid_after(&mut self, offset: u64, number: u64) -> Option<u64> {
        let found = self.find_magic_from(offset + BATCH_ALIGN, |reader, candidate| {
            matches!(reader.batch_at(candidate, number, None), Ok(Some(_)))
        })?;
        Some(lsn(number, found))
    }

    /// For a segment whose header does not decode (so whose batches cannot be
    /// checked): the LSN of a batch header showing that the header was
    /// durable once, if there is one. A rollover writes the header and the
    /// segment's first batch in one write, and the next batch only once that
    /// write is synced: so a batch header past the first batch's end (as the
    /// first batch's header states it; without that header, no evidence is
    /// looked for), standing where it says it is and numbered as a later
    /// batch of the segment can be (`first_batch` is the number the first
    /// batch must carry, if known), is one a torn creation cannot have left.
    /// The bytes past the first batch's end are, after a torn creation, what
    /// the file held before: zeroes, or nothing. Reads at most the rest of the
    /// segment, and only for a damaged header over a readable first batch.
    fn durable_batch_evidence(&mut self, number: u64, first_batch: Option<u64>) -> Option<u64> {
        let first_at = SEGMENT_HEADER_BYTES as u64;
        // Without the first batch's header there is nothing to search from:
        // a segment prepared ahead (all zeroes) looks exactly like that, and
        // searching it would read up to a whole segment at every open. A
        // header zeroed together with the first batch's header is a blind
        // spot (docs/format.md §6.4).
        let first = self.batch_header_at(first_at, number)?;
        let from = offset_of(first.end());
        let found = self.find_magic_from(from, |reader, candidate| {
            reader
                .batch_header_at(candidate, number)
                .is_some_and(|header| follows_first_batch(header.batch, candidate, first_batch))
        })?;
        Some(lsn(number, found))
    }

    /// The first offset from `from` (a multiple of [`BATCH_ALIGN`]) holding
    /// the batch magic where `accept` holds, if any in this segment.
    fn find_magic_from(&mut self, from: u64, mut accept: impl FnMut(&mut Self, u64) -> bool) -> Option<u64> {
        let mut at = from;
        while at + BATCH_HEADER_BYTES as u64 <= self.len {
            // Look for the magic a buffer at a time (most of a prepared
            // segment's remainder is zeroes).
            let window = SCAN_READ_BYTES.min((self.len - at) as usize) / BATCH_ALIGN as usize * BATCH_ALIGN as usize;
            let Ok(bytes) = self.read(at, window.max(BATCH_ALIGN as usize)) else { return None };
            let found = bytes.chunks_exact(BATCH_ALIGN as usize).position(|word| word == BATCH_MAGIC);
            let Some(idx) = found else {
                at += window.max(BATCH_ALIGN as usize) as u64;
                continue;
            };
            let candidate = at + idx as u64 * BATCH_ALIGN;
            if accept(self, candidate) {
                return Some(candidate);
            }
            at = candidate + BATCH_ALIGN;
        }
        None
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(raw)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}

fn array16(bytes: &[u8], at: usize) -> [u8; 16] {
    let mut raw = [0u8; 16];
    raw.copy_from_slice(&bytes[at..at + 16]);
    raw
}

fn array32(bytes: &[u8], at: usize) -> [u8; 32] {
    let mut raw = [0u8; 32];
    raw.copy_from_slice(&bytes[at..at + 32]);
    raw
}

#[cfg(test)]
#[path = "wal_tests.rs"]
mod tests;
