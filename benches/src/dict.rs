//! Does a trained zstd dictionary pay off on small events?
//!
//! The store frames each record envelope on its own (see
//! `logbook_store::frame`): values under 256 bytes stay raw, longer ones are
//! compressed with plain zstd level 3 when that saves at least 10%. Small
//! values compress poorly on their own because zstd starts each one with an
//! empty window; a dictionary trained on typical values primes it. Here a
//! dictionary is trained on the envelopes of one seeded corpus and measured on
//! the envelopes of a corpus with another seed, per size class: total bytes for
//! each codec and the time per event to compress and decompress.
//!
//! Both corpora come from the same generator, so they share its vocabulary:
//! real traffic will differ more from the training set than the test corpus
//! does, and the dictionary's gain here is an upper bound.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use logbook_store::frame;
use zstd::bulk::{Compressor, Decompressor};
use zstd::dict::{DecoderDictionary, EncoderDictionary};

use crate::corpus::Corpus;

/// The level the store uses.
pub const LEVEL: i32 = frame::ZSTD_LEVEL;

/// Envelopes at least this long are "large" and not part of the measurement.
pub const SMALL_MAX: usize = 16 * 1024;

/// Size classes of envelopes, as `[low, high)` byte ranges.
pub const CLASSES: &[(usize, usize)] = &[(0, 256), (256, 1024), (1024, 4096), (4096, SMALL_MAX)];

/// Totals for one size class (or all small events).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassRow {
    pub low: usize,
    pub high: usize,
    pub n_events: u64,
    /// Envelope bytes plus the 2-byte frame header.
    pub raw: u64,
    /// What the store writes today (`frame::encode`).
    pub store: u64,
    /// Plain zstd level 3 for every value, plus header.
    pub zstd: u64,
    /// zstd level 3 with the dictionary for every value, plus header.
    pub dict: u64,
    /// The dictionary where it saves bytes, raw otherwise (what a store
    /// using the dictionary would write).
    pub dict_policy: u64,
}

/// Mean time per event of each codec over all small events.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// `frame::encode` as the store calls it (a fresh zstd context per value).
    pub store_encode: Duration,
    pub store_decode: Duration,
    /// Plain zstd with a reused context.
    pub zstd_compress: Duration,
    pub zstd_decompress: Duration,
    /// zstd with the prepared dictionary and a reused context.
    pub dict_compress: Duration,
    pub dict_decompress: Duration,
}

/// The whole measurement.
#[derive(Debug, Clone, Default)]
pub struct DictReport {
    pub dict_bytes: usize,
    pub n_training_samples: usize,
    pub training_time: Duration,
    pub classes: Vec<ClassRow>,
    pub total: ClassRow,
    pub timings: Timings,
    /// What the store writes today for every event of the test corpus, large ones included.
    pub corpus_store_bytes: u64,
}

/// The envelopes of `corpus` shorter than [`SMALL_MAX`].
pub fn small_envelopes(corpus: &Corpus) -> Vec<&[u8]> {
    corpus
        .sessions
        .iter()
        .flat_map(|s| &s.events)
        .map(|e| &e.envelope[..])
        .filter(|envelope| envelope.len() < SMALL_MAX)
        .collect()
}

/// Trains a dictionary of at most `dict_size` bytes on `train`.
pub fn train(train: &[&[u8]], dict_size: usize) -> anyhow::Result<Vec<u8>> {
    zstd::dict::from_samples(train, dict_size).context("training the zstd dictionary")
}

/// Trains on `train`'s small envelopes and measures on `test`'s.
pub fn measure(train_corpus: &Corpus, test_corpus: &Corpus, dict_size: usize) -> anyhow::Result<DictReport> {
    let samples = small_envelopes(train_corpus);
    let start = Instant::now();
    let dict = train(&samples, dict_size)?;
    let training_time = start.elapsed();
    let test = small_envelopes(test_corpus);
    ensure!(!test.is_empty(), "no small events to measure");

    let encoder_dict = EncoderDictionary::copy(&dict, LEVEL);
    let decoder_dict = DecoderDictionary::copy(&dict);
    let mut plain_c = Compressor::new(LEVEL)?;
    let mut plain_d = Decompressor::new()?;
    let mut dict_c = Compressor::with_prepared_dictionary(&encoder_dict)?;
    let mut dict_d = Decompressor::with_prepared_dictionary(&decoder_dict)?;

    let mut classes: Vec<ClassRow> =
        CLASSES.iter().map(|&(low, high)| ClassRow { low, high, ..ClassRow::default() }).collect();
    let mut total = ClassRow { low: 0, high: SMALL_MAX, ..ClassRow::default() };
    let mut plain_frames = Vec::with_capacity(test.len());
    let mut dict_frames = Vec::with_capacity(test.len());
    let mut store_frames = Vec::with_capacity(test.len());
    for envelope in &test {
        let store = frame::encode(envelope);
        let plain = plain_c.compress(envelope)?;
        let with_dict = dict_c.compress(envelope)?;
        ensure!(dict_d.decompress(&with_dict, envelope.len())? == *envelope, "dictionary round trip differs");
        let raw = envelope.len() as u64 + 2;
        let row = ClassRow {
            low: 0,
            high: 0,
            n_events: 1,
            raw,
            store: store.len() as u64,
            zstd: plain.len() as u64 + 2,
            dict: with_dict.len() as u64 + 2,
            dict_policy: (with_dict.len() as u64 + 2).min(raw),
        };
        for class in classes.iter_mut().chain(std::iter::once(&mut total)) {
            if (class.low..class.high).contains(&envelope.len()) {
                add(class, &row);
            }
        }
        store_frames.push(store);
        plain_frames.push(plain);
        dict_frames.push(with_dict);
    }

    // Timings: each codec over every test value, in separate passes.
    let n = test.len() as u32;
    let per_event = |elapsed: Duration| elapsed / n;
    let mut timings = Timings::default();
    let mut sink = 0usize;
    let start = Instant::now();
    for envelope in &test {
        sink ^= frame::encode(envelope).len();
    }
    timings.store_encode = per_event(start.elapsed());
    let start = Instant::now();
    for framed in &store_frames {
        sink ^= frame::decode(framed)?.len();
    }
    timings.store_decode = per_event(start.elapsed());
    let start = Instant::now();
    for envelope in &test {
        sink ^= plain_c.compress(envelope)?.len();
    }
    timings.zstd_compress = per_event(start.elapsed());
    let start = Instant::now();
    for (compressed, envelope) in plain_frames.iter().zip(&test) {
        sink ^= plain_d.decompress(compressed, envelope.len())?.len();
    }
    timings.zstd_decompress = per_event(start.elapsed());
    let start = Instant::now();
    for envelope in &test {
        sink ^= dict_c.compress(envelope)?.len();
    }
    timings.dict_compress = per_event(start.elapsed());
    let start = Instant::now();
    for (compressed, envelope) in dict_frames.iter().zip(&test) {
        sink ^= dict_d.decompress(compressed, envelope.len())?.len();
    }
    timings.dict_decompress = per_event(start.elapsed());
    std::hint::black_box(sink);

    Ok(DictReport {
        dict_bytes: dict.len(),
        n_training_samples: samples.len(),
        training_time,
        classes,
        total,
        timings,
        corpus_store_bytes: test_corpus.stats().stored_bytes,
    })
}

fn add(into: &mut ClassRow, row: &ClassRow) {
    into.n_events += row.n_events;
    into.raw += row.raw;
    into.store += row.store;
    into.zstd += row.zstd;
    into.dict += row.dict;
    into.dict_policy += row.dict_policy;
}
