//! How fast can any verifier of the stored log be, given its codec?
//!
//! `verify_all` must decompress every record body it reads and hash the
//! canonical bytes; the target compares it with `blake3::hash` alone over the
//! same bytes on one thread. This measures, on the corpus's canonical bytes,
//! zstd at several levels (the store's own, [`logbook_store::frame::ZSTD_LEVEL`],
//! among them): the bytes kept, compression and decompression speed on one
//! thread, and the bound they put on verification: `threads` cores doing
//! nothing but decompress and hash, with perfect scaling and no reads,
//! decoding or index work, reach `threads / (1/decompress + 1/blake3)`.
//! Values are compressed as the store does (at least
//! [`frame::COMPRESS_MIN_BYTES`], kept when that saves 10%).

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use logbook_store::frame;
use zstd::bulk::{Compressor, Decompressor};

use crate::corpus::Corpus;

/// The levels measured: zstd's default, the store's, and two faster ones.
pub const LEVELS: &[i32] = &[3, frame::ZSTD_LEVEL, -1, -5];

/// One level's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LevelRow {
    pub level: i32,
    /// Bytes stored over canonical bytes.
    pub stored_ratio: f64,
    /// MiB of canonical bytes per second, one thread.
    pub compress_mib_s: f64,
    pub decompress_mib_s: f64,
}

/// The whole measurement.
#[derive(Debug, Clone)]
pub struct CodecReport {
    pub canonical_mib: f64,
    /// `blake3::hash` per value, one thread.
    pub blake3_mib_s: f64,
    pub rows: Vec<LevelRow>,
}

impl CodecReport {
    /// The most a verifier on `threads` cores could reach, over raw blake3,
    /// for values stored as `row` says (see the module documentation).
    pub fn bound(&self, row: &LevelRow, threads: usize) -> f64 {
        let per_core = 1.0 / (1.0 / row.decompress_mib_s + 1.0 / self.blake3_mib_s);
        threads as f64 * per_core / self.blake3_mib_s
    }
}

/// Each speed's best over `reports` (noise only ever slows a pass down), with
/// the first report's sizes.
pub fn best_of(reports: &[CodecReport]) -> Option<CodecReport> {
    let mut best = reports.first()?.clone();
    for report in &reports[1..] {
        best.blake3_mib_s = best.blake3_mib_s.max(report.blake3_mib_s);
        for (into, row) in best.rows.iter_mut().zip(&report.rows) {
            into.compress_mib_s = into.compress_mib_s.max(row.compress_mib_s);
            into.decompress_mib_s = into.decompress_mib_s.max(row.decompress_mib_s);
        }
    }
    Some(best)
}

/// Measures every level of [`LEVELS`] over `corpus`, each pass `repeats` times.
pub fn measure(corpus: &Corpus, repeats: u32) -> anyhow::Result<CodecReport> {
    let canonical: Vec<Vec<u8>> = corpus
        .sessions
        .iter()
        .flat_map(|s| &s.entries)
        .map(|entry| entry.to_canonical().context("encoding an entry"))
        .collect::<anyhow::Result<_>>()?;
    let total: usize = canonical.iter().map(Vec::len).sum();
    ensure!(total > 0, "empty corpus");
    let mib = total as f64 / f64::from(1 << 20);
    let repeats = repeats.max(1);
    let mut sink = 0u8;

    let start = Instant::now();
    for _ in 0..repeats {
        for value in &canonical {
            sink ^= blake3::hash(value).as_bytes()[0];
        }
    }
    let blake3_mib_s = rate(mib, start.elapsed() / repeats);

    let mut rows = Vec::with_capacity(LEVELS.len());
    let mut out = Vec::new();
    for &level in LEVELS {
        let mut compressor = Compressor::new(level)?;
        let start = Instant::now();
        let mut frames: Vec<Option<Vec<u8>>> = Vec::with_capacity(canonical.len());
        for value in &canonical {
            let kept = if value.len() < frame::COMPRESS_MIN_BYTES {
                None
            } else {
                let compressed = compressor.compress(value)?;
                let room = value.len() - value.len() * frame::COMPRESS_MIN_SAVING_PERCENT / 100;
                (compressed.len() <= room).then_some(compressed)
            };
            frames.push(kept);
        }
        let compress_time = start.elapsed();
        let stored: usize = frames.iter().zip(&canonical).map(|(f, v)| f.as_ref().map_or(v.len(), Vec::len)).sum();

        let mut decompressor = Decompressor::new()?;
        let start = Instant::now();
        for _ in 0..repeats {
            for (kept, value) in frames.iter().zip(&canonical) {
                match kept {
                    Some(compressed) => {
                        out.clear();
                        out.reserve(value.len());
                        decompressor.decompress_to_buffer(compressed, &mut out)?;
                        sink ^= out.first().copied().unwrap_or(0);
                    }
                    None => sink ^= value.first().copied().unwrap_or(0),
                }
            }
        }
        let decompress_time = start.elapsed() / repeats;
        rows.push(LevelRow {
            level,
            stored_ratio: stored as f64 / total as f64,
            compress_mib_s: rate(mib, compress_time),
            decompress_mib_s: rate(mib, decompress_time),
        });
    }
    std::hint::black_box(sink);
    Ok(CodecReport { canonical_mib: mib, blake3_mib_s, rows })
}

fn rate(mib: f64, took: Duration) -> f64 {
    mib / took.as_secs_f64().max(1e-9)
}
