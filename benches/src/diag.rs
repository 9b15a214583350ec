//! Diagnostics: where the store's time goes, measured piece by piece.
//!
//! The throughput and read numbers say how fast the store is; these say why.
//! [`append_costs`] separates an append's CPU work (the store over the memory
//! engine, whose sync does nothing), sled's `apply` of the resulting writes,
//! sled's durability barrier (`SledEngine::sync`: sled `flush()`, `fdatasync`
//! of sled's file, new-file checks) and a bare `fdatasync` like the head
//! journal's. [`read_stages`] times the stages of reading a session's last 100
//! records: the sled range scan, unframing (zstd), envelope decoding, and the
//! hash check; [`scan_stages`] does the same for a whole-store scan, as
//! `verify_all` does it.

use std::fs::OpenOptions;
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure};
use logbook_core::verify::{Anchor, Depth, Verifier};
use logbook_core::{Record, Seq, SessionId};
use logbook_store::engine::{Direction, Engine, Tree, prefix_range};
use logbook_store::{Append, MemStore, Read, SledEngine, SledOptions, SledStore, frame, keys};

use crate::corpus::Corpus;
use crate::reads::quantile;

/// The writes of one append: key and value (`None` removes).
type Writes = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// Per-operation costs of the append path, one thread, no contention.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AppendCosts {
    /// Store logic per 1-event append over the memory engine (encode, hash,
    /// frame with zstd, batch, barrier bookkeeping).
    pub mem_append: Duration,
    /// sled `apply` of one event's writes (record, type index, head), framed beforehand.
    pub sled_apply: Duration,
    /// `SledEngine::sync` after one event's writes.
    pub sled_sync: Duration,
    /// `pwrite` of 100 bytes into a preallocated file + `fdatasync` (the head journal's pattern).
    pub fdatasync_prealloc: Duration,
    /// `write` of 4 KiB appended to a growing file + `fdatasync` (the raw baseline's pattern).
    pub fdatasync_append: Duration,
}

/// Measures [`AppendCosts`] with up to `n` events of `corpus`, in `dir`.
pub fn append_costs(corpus: &Corpus, n: usize, dir: &Path) -> anyhow::Result<AppendCosts> {
    let events: Vec<(SessionId, usize)> = corpus
        .sessions
        .iter()
        .enumerate()
        .flat_map(|(s, session)| (0..session.entries.len()).map(move |i| (session.session, s * 1_000_000 + i)))
        .take(n)
        .collect();
    ensure!(!events.is_empty(), "empty corpus");
    let entry = |code: usize| &corpus.sessions[code / 1_000_000].entries[code % 1_000_000];
    let mut costs = AppendCosts::default();

    let mem = MemStore::in_memory()?;
    let start = Instant::now();
    for (session, code) in &events {
        let next = mem.head(*session)?.next;
        mem.append(*session, next, std::slice::from_ref(entry(*code)))?;
    }
    costs.mem_append = start.elapsed() / events.len() as u32;

    // The writes one 1-event append makes, framed outside the timed loops.
    let writes: Vec<Writes> = events
        .iter()
        .map(|(session, code)| {
            let event = &corpus.sessions[code / 1_000_000].events[code % 1_000_000];
            let seq = Seq::new((code % 1_000_000) as u64);
            let event_type = entry(*code).event.event_type();
            vec![
                (keys::event_key(*session, seq).to_vec(), Some(frame::encode(&event.envelope))),
                (keys::type_key(*session, event_type, seq).to_vec(), Some(Vec::new())),
                (keys::head_key(*session).to_vec(), Some(vec![0u8; keys::HEAD_VALUE_LEN])),
            ]
        })
        .collect();
    let engine = SledEngine::open(&dir.join("apply"), &SledOptions::default())?;
    let start = Instant::now();
    for batch in &writes {
        engine.apply(Tree::Log, batch.clone())?;
    }
    costs.sled_apply = start.elapsed() / writes.len() as u32;
    drop(engine);

    let n_syncs = writes.len().min(500);
    let engine = SledEngine::open(&dir.join("sync"), &SledOptions::default())?;
    let mut in_sync = Duration::ZERO;
    for batch in writes.iter().take(n_syncs) {
        engine.apply(Tree::Log, batch.clone())?;
        let start = Instant::now();
        engine.sync()?;
        in_sync += start.elapsed();
    }
    costs.sled_sync = in_sync / n_syncs as u32;
    drop(engine);

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
    /// sled range scan returning the `n` framed values.
    pub scan: Duration,
    /// + unframing (zstd decompression of the compressed ones).
    pub unframe: Duration,
    /// scan + unframing with one reused zstd context instead of a fresh one
    /// per value (`frame::decode` uses `zstd::bulk::decompress`, which makes one each call).
    pub unframe_reused: Duration,
    /// + decoding the envelopes into records.
    pub decode: Duration,
    /// + checking each record's hash (blake3 of its canonical bytes): all a store read does.
    pub hash: Duration,
    /// The store's `read_before`, for comparison.
    pub store: Duration,
}

/// Measures [`ReadStages`] over `sessions`, `rounds` reads each.
pub fn read_stages(store: &SledStore, sessions: &[SessionId], n: usize, rounds: usize) -> anyhow::Result<ReadStages> {
    let mut samples: [Vec<Duration>; 6] = Default::default();
    let mut decompressor = zstd::bulk::Decompressor::new()?;
    for _ in 0..rounds {
        for session in sessions {
            let end = store.head(*session)?.next;
            let from = Seq::new(end.get().saturating_sub(n as u64));
            let range = (
                Bound::Included(keys::event_key(*session, from).to_vec()),
                Bound::Excluded(keys::event_key(*session, end).to_vec()),
            );
            for (stage, out) in samples.iter_mut().enumerate().take(4) {
                let start = Instant::now();
                let pairs = store.engine().range(Tree::Log, range.clone(), Direction::Forward, n)?;
                let mut ok = pairs.len();
                if stage >= 1 {
                    for (_, value) in &pairs {
                        let envelope = frame::decode(value)?;
                        if stage >= 2 {
                            let record = Record::from_envelope(&envelope)?;
                            if stage >= 3 && !record.is_self_consistent() {
                                ok = 0;
                            }
                        }
                    }
                }
                out.push(start.elapsed());
                ensure!(ok == n, "stage {stage} read {ok} records");
            }
            let start = Instant::now();
            let records = store.read_before(*session, end, n)?;
            samples[4].push(start.elapsed());
            let start = Instant::now();
            let pairs = store.engine().range(Tree::Log, range.clone(), Direction::Forward, n)?;
            for (_, value) in &pairs {
                unframe_reusing(&mut decompressor, value)?;
            }
            samples[5].push(start.elapsed());
            ensure!(records.len() == n, "read_before returned {}", records.len());
        }
    }
    let [scan, unframe, decode, hash, store_read, unframe_reused] = samples.map(|s| quantile(&s, 0.5));
    Ok(ReadStages { scan, unframe, unframe_reused, decode, hash, store: store_read })
}

/// `frame::decode` with a caller's zstd context.
fn unframe_reusing(decompressor: &mut zstd::bulk::Decompressor<'_>, framed: &[u8]) -> anyhow::Result<Vec<u8>> {
    match framed {
        [frame::FRAME_V1, codec, payload @ ..] if *codec == frame::Codec::Zstd as u8 => {
            let size = zstd::zstd_safe::get_frame_content_size(payload)
                .map_err(|_| anyhow!("no zstd frame header"))?
                .ok_or_else(|| anyhow!("zstd frame without a content size"))?;
            Ok(decompressor.decompress(payload, usize::try_from(size)?)?)
        }
        _ => Ok(frame::decode(framed)?),
    }
}

/// Total time of each cumulative stage of scanning every record of the store.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ScanStages {
    pub n_records: u64,
    pub canonical_bytes: u64,
    /// sled scan of every event value, in pages.
    pub scan: Duration,
    /// + unframing.
    pub unframe: Duration,
    /// + decoding envelopes.
    pub decode: Duration,
    /// + verifying the chains (digests and links).
    pub links: Duration,
    /// + decoding every entry (`Depth::Entries`, what `verify_all` does).
    pub entries: Duration,
}

/// Measures [`ScanStages`] over the whole store.
pub fn scan_stages(store: &SledStore) -> anyhow::Result<ScanStages> {
    let mut out = ScanStages::default();
    let mut totals = [Duration::ZERO; 5];
    for (stage, total) in totals.iter_mut().enumerate() {
        let start = Instant::now();
        let event_kind = [keys::LogKeyKind::Event as u8];
        let (mut from, end) = prefix_range(&event_kind);
        let mut current: Option<(SessionId, Verifier)> = None;
        let (mut n_records, mut canonical_bytes) = (0u64, 0u64);
        loop {
            let page = store.engine().range(Tree::Log, (from.clone(), end.clone()), Direction::Forward, 4096)?;
            let Some((last, _)) = page.last() else { break };
            from = Bound::Excluded(last.clone());
            for (key, value) in &page {
                n_records += 1;
                if stage == 0 {
                    continue;
                }
                let envelope = frame::decode(value)?;
                if stage == 1 {
                    continue;
                }
                let record = Record::from_envelope(&envelope)?;
                canonical_bytes += record.canonical().map_or(0, <[u8]>::len) as u64;
                if stage == 2 {
                    continue;
                }
                let (session, _) = keys::parse_event_key(key).ok_or_else(|| anyhow!("bad event key"))?;
                if current.as_ref().map(|(s, _)| *s) != Some(session) {
                    if let Some((_, verifier)) = current.take() {
                        ensure!(verifier.finish().is_intact(), "chain broken");
                    }
                    let depth = if stage == 4 { Depth::Entries } else { Depth::Links };
                    current = Some((session, Verifier::new(Anchor::GENESIS, depth)));
                }
                if let Some((_, verifier)) = current.as_mut() {
                    verifier.push(Ok(&record));
                }
            }
        }
        if let Some((_, verifier)) = current.take() {
            ensure!(verifier.finish().is_intact(), "chain broken");
        }
        *total = start.elapsed();
        out.n_records = n_records;
        out.canonical_bytes = out.canonical_bytes.max(canonical_bytes);
    }
    [out.scan, out.unframe, out.decode, out.links, out.entries] = totals;
    Ok(out)
}
