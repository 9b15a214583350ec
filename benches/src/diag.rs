//! Diagnostics: where the store's time goes, measured piece by piece.
//!
//! The throughput and read numbers say how fast the store is; these say why.
//! [`append_costs`] separates an append's CPU work before any lock (canonical
//! encoding, blake3, zstd), the whole append over the memory engine (the same
//! logic, plus the committer thread's handoff), one batch written to the log
//! and made durable (`pwrite` + `fdatasync`), and bare `fdatasync`s of the two
//! file patterns. [`read_stages`] times the stages of reading a session's last
//! 100 records from the log (reading the entries, decompressing, checking
//! hashes) against the store's read with and without its tail cache;
//! [`scan_stages`] does the same for a whole-log scan, as `verify_all` does it.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, ensure};
use logbook_core::verify::{Anchor, Depth, Verifier};
use logbook_core::{Entry, Record, Seq, SessionId, chain};
use logbook_store::engine::files::FsLogDir;
use logbook_store::engine::{Engine, LogDir};
use logbook_store::wal::{self, BatchBuf, BodyCodec, LogWriter, Scan};
use logbook_store::{Append, MemStore, Read, SledStore, frame};

use crate::corpus::Corpus;
use crate::reads::quantile;

/// Per-operation costs of the append path, one thread, no contention.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AppendCosts {
    /// What an append does per event before taking any lock: canonical
    /// encoding, blake3 of the canonical bytes, zstd when it pays.
    pub prepare: Duration,
    /// A whole 1-event append over the memory engine: the above, sealing,
    /// the copy into the batch, the committer's handoff and publication.
    pub mem_append: Duration,
    /// One batch of one event written to the log and made durable (`pwrite`
    /// + `fdatasync` into a segment prepared ahead): the store's whole barrier.
    pub log_write: Duration,
    /// `pwrite` of 100 bytes into a preallocated file + `fdatasync`.
    pub fdatasync_prealloc: Duration,
    /// `write` of 4 KiB appended to a growing file + `fdatasync` (the raw baseline's pattern).
    pub fdatasync_append: Duration,
}

/// Measures [`AppendCosts`] with up to `n` events of `corpus`, in `dir`.
pub fn append_costs(corpus: &Corpus, n: usize, dir: &Path) -> anyhow::Result<AppendCosts> {
    let events: Vec<(SessionId, &Entry)> = corpus
        .sessions
        .iter()
        .flat_map(|session| session.entries.iter().map(move |entry| (session.session, entry)))
        .take(n)
        .collect();
    ensure!(!events.is_empty(), "empty corpus");
    let mut costs = AppendCosts::default();

    let start = Instant::now();
    let mut sink = 0usize;
    for (_, entry) in &events {
        let canonical = entry.to_canonical()?;
        let digest = chain::digest(&canonical);
        let mut body = Vec::new();
        frame::compress(&canonical, &mut body);
        sink += body.len() + usize::from(digest.as_bytes()[0]);
    }
    costs.prepare = start.elapsed() / events.len() as u32;
    ensure!(sink > 0, "nothing prepared");

    let mem = MemStore::in_memory()?;
    let start = Instant::now();
    for (session, entry) in &events {
        let next = mem.head(*session)?.next;
        mem.append(*session, next, std::slice::from_ref(*entry))?;
    }
    costs.mem_append = start.elapsed() / events.len() as u32;
    drop(mem);

    let n_syncs = events.len().min(500);
    let log: Arc<dyn LogDir> = Arc::new(FsLogDir::open(&dir.join("log"))?);
    // As the store writes: into a segment prepared ahead, bodies compressed.
    log.prepare_segment(0, wal::SEGMENT_BYTES)?;
    let mut writer = LogWriter::new(log, 0, 0, None);
    let mut in_write = Duration::ZERO;
    for (session, entry) in events.iter().take(n_syncs) {
        let canonical = entry.to_canonical()?;
        let mut batch = BatchBuf::new();
        let hash = chain::link(chain::GENESIS, Seq::ZERO, chain::digest(&canonical));
        let code = entry.event.event_type().code();
        let (codec, body) = match frame::compressed(&canonical) {
            Some(compressed) => (BodyCodec::Zstd, compressed),
            None => (BodyCodec::Raw, canonical),
        };
        batch.push_record(*session, Seq::ZERO, chain::GENESIS, hash, code, codec, &body);
        let start = Instant::now();
        writer.write(&mut batch)?;
        in_write += start.elapsed();
    }
    costs.log_write = in_write / n_syncs as u32;

    let file = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(dir.join("prealloc"))?;
    file.write_all_at(&vec![0u8; 1 << 20], 0)?;
    file.sync_all()?;
    let start = Instant::now();
    for idx in 0..n_syncs {
        file.write_all_at(&[0xa5; 100], (idx * 100) as u64)?;
        file.sync_data()?;
    }
    costs.fdatasync_prealloc = start.elapsed() / n_syncs as u32;

    let file = OpenOptions::new().create(true).truncate(true).write(true).open(dir.join("append"))?;
    let block = vec![0x5a; 4096];
    let start = Instant::now();
    for idx in 0..n_syncs {
        file.write_all_at(&block, (idx * block.len()) as u64)?;
        file.sync_data()?;
    }
    costs.fdatasync_append = start.elapsed() / n_syncs as u32;
    Ok(costs)
}

/// Median time of each cumulative stage of reading a session's last `n` records.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReadStages {
    /// `pread` of the `n` entries from the log (locations looked up beforehand).
    pub read: Duration,
    /// + decompressing each body and building the record.
    pub decode: Duration,
    /// + checking each record's hash (blake3 of its canonical bytes).
    pub hash: Duration,
    /// The store's `read_before` with its tail cache emptied first: index
    /// lookups, the above, and link checks.
    pub store_cold: Duration,
    /// The store's `read_before` served by its tail cache.
    pub store_cached: Duration,
}

/// Measures [`ReadStages`] over `sessions`, `rounds` reads each.
pub fn read_stages(store: &SledStore, sessions: &[SessionId], n: usize, rounds: usize) -> anyhow::Result<ReadStages> {
    let mut samples: [Vec<Duration>; 5] = Default::default();
    let log = store.engine().log_dir();
    for _ in 0..rounds {
        for session in sessions {
            let end = store.head(*session)?.next;
            let from = end.get().saturating_sub(n as u64);
            let mut locations = Vec::with_capacity(n);
            for seq in from..end.get() {
                locations
                    .push(store.locate(*session, Seq::new(seq))?.ok_or_else(|| anyhow!("{session}#{seq} not stored"))?);
            }
            for (stage, out) in samples.iter_mut().enumerate().take(3) {
                let start = Instant::now();
                let mut n_ok = 0;
                for location in &locations {
                    let bytes = wal::read_entry(&*log, *location)?;
                    if stage == 0 {
                        n_ok += usize::from(!bytes.is_empty());
                        continue;
                    }
                    let (wal::Entry::Record { header, body }, _) = wal::decode_entry(&bytes).map_err(|e| anyhow!(e))?
                    else {
                        anyhow::bail!("not a record at {location}");
                    };
                    let record = wal::record_from_entry(&header, body).map_err(|e| anyhow!(e))?;
                    n_ok += usize::from(stage == 1 || record.is_self_consistent());
                }
                out.push(start.elapsed());
                ensure!(n_ok == locations.len(), "stage {stage} read {n_ok} records");
            }
            store.clear_caches();
            let start = Instant::now();
            let cold = store.read_before(*session, end, n)?;
            samples[3].push(start.elapsed());
            let start = Instant::now();
            let cached = store.read_before(*session, end, n)?;
            samples[4].push(start.elapsed());
            ensure!(cold.len() == n && cold == cached, "read_before returned {} records", cold.len());
        }
    }
    let [read, decode, hash, store_cold, store_cached] = samples.map(|s| quantile(&s, 0.5));
    Ok(ReadStages { read, decode, hash, store_cold, store_cached })
}

/// Total time of each cumulative stage of scanning every record of the log.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ScanStages {
    pub n_records: u64,
    pub canonical_bytes: u64,
    /// Reading every batch of the log (checksums checked).
    pub scan: Duration,
    /// + decompressing every record's body.
    pub decode: Duration,
    /// + verifying the chains (digests and links).
    pub links: Duration,
    /// + decoding every entry (`Depth::Entries`).
    pub entries: Duration,
    /// The store's `verify_all` (the above, index cross-checks, blobs).
    pub verify_all: Duration,
}

/// Measures [`ScanStages`] over the whole log of `store`.
pub fn scan_stages(store: &SledStore) -> anyhow::Result<ScanStages> {
    let mut out = ScanStages::default();
    let mut totals = [Duration::ZERO; 4];
    let log = store.engine().log_dir();
    for (stage, total) in totals.iter_mut().enumerate() {
        let start = Instant::now();
        let mut verifiers: std::collections::HashMap<SessionId, Verifier> = std::collections::HashMap::new();
        let (mut n_records, mut canonical_bytes) = (0u64, 0u64);
        let mut scan = Scan::new(Arc::clone(&log), 0, None)?;
        while let Some(batch) = scan.next_batch()? {
            for item in wal::entries(&batch.payload) {
                let (_, entry) = item.map_err(|e| anyhow!(e))?;
                let wal::Entry::Record { header, body } = entry else { continue };
                n_records += 1;
                if stage == 0 {
                    continue;
                }
                let record: Record = wal::record_from_entry(&header, body).map_err(|e| anyhow!(e))?;
                canonical_bytes += record.canonical().map_or(0, <[u8]>::len) as u64;
                if stage == 1 {
                    continue;
                }
                let depth = if stage == 3 { Depth::Entries } else { Depth::Links };
                verifiers
                    .entry(header.session)
                    .or_insert_with(|| Verifier::new(Anchor::GENESIS, depth))
                    .push(Ok(&record));
            }
        }
        for (session, verifier) in verifiers {
            ensure!(verifier.finish().is_intact(), "{session}: chain broken");
        }
        *total = start.elapsed();
        out.n_records = n_records;
        out.canonical_bytes = out.canonical_bytes.max(canonical_bytes);
    }
    [out.scan, out.decode, out.links, out.entries] = totals;
    let start = Instant::now();
    let report = store.verify_all(&mut |_| {}).context("verify_all")?;
    out.verify_all = start.elapsed();
    ensure!(report.is_intact(), "verify_all found damage");
    Ok(out)
}
