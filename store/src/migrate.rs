//! Migration of a storage version 1 data directory to version 2.
//!
//! Version 1 kept every record, the type index and the heads in sled's `log`
//! tree and blob bytes in its `blobs` tree, with the head journal beside it.
//! Version 2 keeps records and blobs in the write-ahead log and only indexes
//! in sled. The migration checks the version 1 data first (every chain from
//! genesis to its head, every head against the journal's acknowledged one,
//! every blob against its hash) and refuses, changing nothing, if anything is
//! off. Then it writes every record, blob and resource into a new log, builds
//! the index as a checkpoint would, and only then sets the storage version to
//! 2: that write is the commit point. A crash before it leaves version 1 data
//! untouched and the next open starts over (discarding the partial log); a
//! crash after it leaves version 1 keys that every open removes.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;

use logbook_core::verify::read_stored;
use logbook_core::{ChainHash, Digest, Seq, SessionId, chain};

use crate::engine::sled::SledEngine;
use crate::engine::{Direction, Engine, LogDir, Tree, Write, prefix_range};
use crate::error::OpenError;
use crate::index;
use crate::journal;
use crate::keys::{self, LogKeyKind, MetaKey, ResourceKind};
use crate::session::PendingRecord;
use crate::wal::{self, BatchBuf, BodyCodec, Location, LogWriter};
use crate::{Head, frame};

/// Keys read per engine scan.
const PAGE: usize = 4096;

/// Bytes of entries per batch written by the migration.
const MIGRATION_BATCH_BYTES: usize = 8 << 20;

/// Migrates `engine` (opened on the data directory `dir`) if it holds
/// version 1 data, and removes version 1 leftovers from an interrupted one.
pub(crate) fn migrate_if_needed(engine: &SledEngine, dir: &Path) -> Result<(), OpenError> {
    let fail = |reason: String| OpenError::Migration { path: dir.to_owned(), reason };
    let version = engine
        .get(Tree::Meta, MetaKey::StorageVersion.as_bytes())
        .map_err(|err| fail(err.to_string()))?
        .and_then(|bytes| <[u8; 4]>::try_from(bytes.as_slice()).ok())
        .map(u32::from_be_bytes);
    match version {
        Some(1) => migrate(engine, dir).map_err(fail),
        Some(crate::STORAGE_VERSION) => remove_v1_leftovers(engine, dir).map_err(fail),
        Some(_) | None => Ok(()),
    }
}

fn migrate(engine: &SledEngine, dir: &Path) -> Result<(), String> {
    discard_partial_v2(engine)?;
    let journaled = journal::read(dir).map_err(|err| format!("reading heads.journal: {err}"))?;
    let heads = v1_heads(engine)?;
    for (session, acked) in &journaled.heads {
        match heads.get(session) {
            Some(head) if head.next >= acked.next => {}
            Some(_) | None => {
                return Err(format!("{session}: acknowledged records are missing from the version 1 data"));
            }
        }
    }
    let mut out = Output {
        writer: LogWriter::new(engine.log_dir(), 0, 0, None),
        batch: BatchBuf::new(),
        queued: Vec::new(),
        pending: BTreeMap::new(),
        blobs: Vec::new(),
    };
    for (session, head) in &heads {
        migrate_session(engine, &mut out, *session, *head, journaled.heads.get(session))?;
    }
    migrate_blobs(engine, &mut out)?;
    migrate_resources(engine, &mut out)?;
    out.flush()?;

    let mut writes: Vec<Write> = Vec::new();
    for (session, records) in &out.pending {
        writes.extend(index::checkpoint_writes(engine, *session, Seq::ZERO, records).map_err(|e| e.to_string())?);
    }
    for (digest, location) in &out.blobs {
        writes.push((keys::blob_key(*digest).to_vec(), Some(keys::blob_value(location.lsn, location.len).to_vec())));
    }
    engine.apply(Tree::Log, writes).map_err(|e| e.to_string())?;
    let checkpoint = keys::checkpoint_value(out.writer.end(), out.writer.next_batch()).to_vec();
    engine
        .apply(Tree::Meta, vec![(MetaKey::Checkpoint.as_bytes().to_vec(), Some(checkpoint))])
        .map_err(|e| e.to_string())?;
    engine.sync().map_err(|e| e.to_string())?;
    // The commit point.
    let version = crate::STORAGE_VERSION.to_be_bytes().to_vec();
    engine
        .apply(Tree::Meta, vec![(MetaKey::StorageVersion.as_bytes().to_vec(), Some(version))])
        .map_err(|e| e.to_string())?;
    engine.sync().map_err(|e| e.to_string())?;
    remove_v1_leftovers(engine, dir)
}

/// What the migration has written to the new log so far.
struct Output {
    writer: LogWriter,
    batch: BatchBuf,
    /// Entries of `batch` not yet located: `(session or blob, offset, len, code, hash)`.
    queued: Vec<Queued>,
    pending: BTreeMap<SessionId, Vec<PendingRecord>>,
    blobs: Vec<(Digest, Location)>,
}

enum Queued {
    Record { session: SessionId, offset: u32, len: u32, code: u16, hash: ChainHash },
    Blob { digest: Digest, offset: u32, len: u32 },
    Resource,
}

impl Output {
    fn maybe_flush(&mut self) -> Result<(), String> {
        if self.batch.payload_len() >= MIGRATION_BATCH_BYTES { self.flush() } else { Ok(()) }
    }

    fn flush(&mut self) -> Result<(), String> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let header = self.writer.write(&mut self.batch).map_err(|err| format!("writing the new log: {err}"))?;
        for item in self.queued.drain(..) {
            match item {
                Queued::Record { session, offset, len, code, hash } => {
                    let location = Location { lsn: header.lsn + u64::from(offset), len };
                    self.pending.entry(session).or_default().push(PendingRecord { location, code, hash });
                }
                Queued::Blob { digest, offset, len } => {
                    self.blobs.push((digest, Location { lsn: header.lsn + u64::from(offset), len }));
                }
                Queued::Resource => {}
            }
        }
        self.batch = BatchBuf::new();
        Ok(())
    }
}

/// Every version 1 head.
fn v1_heads(engine: &SledEngine) -> Result<BTreeMap<SessionId, Head>, String> {
    let mut heads = BTreeMap::new();
    for pair in pages(engine, Tree::Log, &[LogKeyKind::V1Head as u8])? {
        let (key, value) = pair?;
        let session = keys::v1::parse_head_key(&key).ok_or("malformed version 1 head key")?;
        let (next, hash) = keys::parse_head_value(&value).ok_or_else(|| format!("{session}: malformed head"))?;
        heads.insert(session, Head { next, hash });
    }
    Ok(heads)
}

/// Checks a version 1 session's chain and copies its records into the log.
fn migrate_session(
    engine: &SledEngine,
    out: &mut Output,
    session: SessionId,
    head: Head,
    acked: Option<&Head>,
) -> Result<(), String> {
    let (mut expected, mut prev) = (Seq::ZERO, chain::GENESIS);
    let mut prefix = vec![LogKeyKind::V1Event as u8];
    prefix.extend_from_slice(&session.to_bytes());
    for pair in pages(engine, Tree::Log, &prefix)? {
        let (key, value) = pair?;
        let (_, seq) = keys::v1::parse_event_key(&key).ok_or("malformed version 1 event key")?;
        let bad = |what: &str| format!("{session}: record {seq} {what}");
        if seq != expected {
            return Err(format!("{session}: record {expected} is missing"));
        }
        let envelope = frame::decode(&value).map_err(|e| bad(&e.to_string()))?;
        let record = read_stored(session, seq, &envelope).map_err(|e| bad(&e.reason))?;
        if !record.is_self_consistent() || record.prev() != prev {
            return Err(bad("does not verify"));
        }
        if let Some(acked) = acked
            && acked.next == Seq::new(seq.get() + 1)
            && acked.hash != record.hash()
        {
            return Err(bad("differs from the acknowledged one"));
        }
        let entry = record.entry().map_err(|e| bad(&e.to_string()))?;
        let canonical = record.canonical().ok_or_else(|| bad("is redacted"))?;
        let mut body = Vec::new();
        let codec = match frame::compress(canonical, &mut body) {
            frame::Codec::Zstd => BodyCodec::Zstd,
            frame::Codec::Raw => BodyCodec::Raw,
        };
        let code = entry.event.event_type().code();
        let offset = out.batch.next_offset();
        let len = out.batch.push_record(session, seq, record.prev(), record.hash(), code, codec, &body);
        out.queued.push(Queued::Record { session, offset, len, code, hash: record.hash() });
        out.maybe_flush()?;
        prev = record.hash();
        expected = Seq::new(seq.get() + 1);
    }
    if expected != head.next || prev != head.hash {
        return Err(format!("{session}: the head says {} records, the chain ends at {expected}", head.next));
    }
    Ok(())
}

fn migrate_blobs(engine: &SledEngine, out: &mut Output) -> Result<(), String> {
    for pair in pages(engine, Tree::Blobs, &[])? {
        let (key, value) = pair?;
        let digest = Digest::from_bytes(key.as_slice().try_into().map_err(|_| "malformed blob key")?);
        let bytes = frame::decode(&value).map_err(|e| format!("blob {digest}: {e}"))?;
        if chain::digest(&bytes) != digest {
            return Err(format!("blob {digest}: contents do not match its hash"));
        }
        let (codec, body) = wal::code_blob(&bytes);
        let offset = out.batch.next_offset();
        let len = out.batch.push_blob(digest, codec, &body);
        out.queued.push(Queued::Blob { digest, offset, len });
        out.maybe_flush()?;
    }
    Ok(())
}

fn migrate_resources(engine: &SledEngine, out: &mut Output) -> Result<(), String> {
    for pair in pages(engine, Tree::Resources, &[])? {
        let (key, value) = pair?;
        let (kind, name) = key.split_first().ok_or("empty resource key")?;
        let kind = ResourceKind::from_byte(*kind).ok_or("unknown resource kind")?;
        frame::decode(&value).map_err(|e| format!("resource {}: {e}", String::from_utf8_lossy(name)))?;
        out.batch.push_resource(kind, name, Some(&value));
        out.queued.push(Queued::Resource);
        out.maybe_flush()?;
    }
    Ok(())
}

/// Removes what an interrupted migration wrote: the new log and index.
fn discard_partial_v2(engine: &SledEngine) -> Result<(), String> {
    for kind in LogKeyKind::CURRENT {
        remove_prefix(engine, Tree::Log, &[kind as u8])?;
    }
    engine.apply(Tree::Meta, vec![(MetaKey::Checkpoint.as_bytes().to_vec(), None)]).map_err(|e| e.to_string())?;
    let files = engine.files();
    for number in files.segments().map_err(|e| e.to_string())? {
        std::fs::remove_file(files.segment_path(number)).map_err(|e| format!("removing a partial segment: {e}"))?;
    }
    engine.sync().map_err(|e| e.to_string())
}

/// Removes version 1 keys and the head journal from a version 2 store.
fn remove_v1_leftovers(engine: &SledEngine, dir: &Path) -> Result<(), String> {
    let mut any = false;
    for kind in LogKeyKind::V1 {
        any |= remove_prefix(engine, Tree::Log, &[kind as u8])?;
    }
    any |= remove_prefix(engine, Tree::Blobs, &[])?;
    if engine.get(Tree::Meta, MetaKey::V1Commit.as_bytes()).map_err(|e| e.to_string())?.is_some() {
        engine.apply(Tree::Meta, vec![(MetaKey::V1Commit.as_bytes().to_vec(), None)]).map_err(|e| e.to_string())?;
        any = true;
    }
    if any {
        engine.sync().map_err(|e| e.to_string())?;
    }
    match std::fs::remove_file(dir.join(journal::JOURNAL_FILE)) {
        Ok(()) => std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| e.to_string()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(format!("removing heads.journal: {err}")),
    }
}

/// Removes every key with `prefix`; whether there was any.
fn remove_prefix(engine: &SledEngine, tree: Tree, prefix: &[u8]) -> Result<bool, String> {
    let mut any = false;
    loop {
        let (start, end) = range_of(prefix);
        let page = engine.range(tree, (start, end), Direction::Forward, PAGE).map_err(|e| e.to_string())?;
        if page.is_empty() {
            return Ok(any);
        }
        any = true;
        let writes = page.into_iter().map(|(key, _)| (key, None)).collect();
        engine.apply(tree, writes).map_err(|e| e.to_string())?;
    }
}

/// Every pair with `prefix`, read in pages.
/// A key and its value.
type Pair = (Vec<u8>, Vec<u8>);

/// Every pair with `prefix`, read a page at a time (so that a large version 1
/// store is never held in memory whole).
fn pages<'a>(
    engine: &'a SledEngine,
    tree: Tree,
    prefix: &[u8],
) -> Result<impl Iterator<Item = Result<Pair, String>> + 'a, String> {
    let (mut start, end) = range_of(prefix);
    let mut page: std::vec::IntoIter<Pair> = Vec::new().into_iter();
    let mut done = false;
    Ok(std::iter::from_fn(move || {
        loop {
            if let Some(pair) = page.next() {
                start = Bound::Excluded(pair.0.clone());
                return Some(Ok(pair));
            }
            if done {
                return None;
            }
            match engine.range(tree, (start.clone(), end.clone()), Direction::Forward, PAGE) {
                Ok(next) if next.is_empty() => done = true,
                Ok(next) => page = next.into_iter(),
                Err(err) => {
                    done = true;
                    return Some(Err(err.to_string()));
                }
            }
        }
    }))
}

fn range_of(prefix: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    if prefix.is_empty() { (Bound::Unbounded, Bound::Unbounded) } else { prefix_range(prefix) }
}
