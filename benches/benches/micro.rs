//! Criterion micro-benchmarks: reading the last 100 events (Logbook store
//! against SQLite), verification against raw blake3 over the same bytes, and
//! framing small events with plain zstd against zstd with a trained dictionary.
//!
//! The durable-throughput comparison lives in the `durability` binary, which
//! also prints these measurements as tables with ratios. Data lives on disk
//! (see `logbook_benches::scratch`), never on tmpfs.
//!
//! ```text
//! cargo bench -p logbook-benches --bench micro [-- FILTER]
//! ```

#![allow(clippy::expect_used, reason = "a benchmark has no caller to return setup errors to")]

use std::cell::Cell;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main, measurement::WallTime};
use logbook_benches::corpus::Corpus;
use logbook_benches::reads::ReadFixture;
use logbook_benches::workload::WorkloadConfig;
use logbook_benches::{dict, scratch, verify};
use logbook_core::Record;
use logbook_core::verify::Depth;
use logbook_store::frame;
use zstd::bulk::{Compressor, Decompressor};
use zstd::dict::{DecoderDictionary, EncoderDictionary};

/// Seed of the measured corpus; the dictionary trains on another.
const SEED: u64 = 1;
/// Events per session in the read fixture (the corpus's 100, cycled).
const READ_EVENTS: usize = 300;

fn corpus(seed: u64, big_every: usize) -> Corpus {
    let config = WorkloadConfig { big_every, ..WorkloadConfig::new(seed, 100) };
    Corpus::build(&config, 2).expect("corpus")
}

fn configure<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    group
}

fn read_last_100(c: &mut Criterion) {
    for (name, big_every) in [("read_last_100", 50), ("read_last_100_no_large_outputs", 0)] {
        let corpus = corpus(SEED, big_every);
        let dir = scratch::temp_dir().expect("scratch dir");
        let fixture = ReadFixture::build(&corpus, READ_EVENTS, dir.path()).expect("read fixture");
        let next = Cell::new(0usize);
        let pick = || {
            let idx = next.get();
            next.set(idx + 1);
            fixture.sessions[idx % fixture.sessions.len()]
        };
        let mut group = configure(c, name);
        group.throughput(Throughput::Elements(100));
        group.bench_function("logbook_read_before", |b| {
            b.iter(|| black_box(fixture.store_last(pick(), 100).expect("read")));
        });
        group.bench_function("logbook_read_before_decode_entries", |b| {
            b.iter(|| {
                let records = fixture.store_last(pick(), 100).expect("read");
                black_box(records.iter().map(|r| r.entry().expect("entry")).collect::<Vec<_>>())
            });
        });
        group.bench_function("sqlite_order_by_seq_desc_limit_100", |b| {
            b.iter(|| black_box(fixture.sqlite.read_last(&pick().to_bytes(), 100).expect("read")));
        });
        group.finish();
    }
}

fn verify_throughput(c: &mut Criterion) {
    let corpus = corpus(SEED, 50);
    let dir = scratch::temp_dir().expect("scratch dir");
    let fixture = ReadFixture::build(&corpus, 100, dir.path()).expect("fixture");
    let records: Vec<Vec<Record>> = fixture.all_records().expect("records");
    let bytes: u64 = records.iter().flatten().filter_map(Record::canonical).map(|c| c.len() as u64).sum();
    let mut group = configure(c, "verify");
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("raw_blake3_hash_per_record", |b| b.iter(|| black_box(verify::blake3_baseline(&records))));
    group.bench_function("verify_links_in_memory", |b| {
        b.iter(|| verify::verify_in_memory(&records, Depth::Links).expect("intact"));
    });
    group.bench_function("verify_links_and_entries_in_memory", |b| {
        b.iter(|| verify::verify_in_memory(&records, Depth::Entries).expect("intact"));
    });
    group.sample_size(10);
    group.bench_function("store_verify_all", |b| b.iter(|| verify::verify_store(&fixture.store).expect("intact")));
    group.finish();
}

fn frame_small_events(c: &mut Criterion) {
    let train_corpus = corpus(SEED + 1_000_003, 50);
    let test_corpus = corpus(SEED, 50);
    let dictionary = dict::train(&dict::small_envelopes(&train_corpus), 64 * 1024).expect("dictionary");
    let test: Vec<Vec<u8>> = dict::small_envelopes(&test_corpus).into_iter().take(1000).map(<[u8]>::to_vec).collect();
    let bytes: u64 = test.iter().map(|e| e.len() as u64).sum();
    let encoder_dict = EncoderDictionary::copy(&dictionary, dict::LEVEL);
    let decoder_dict = DecoderDictionary::copy(&dictionary);
    let mut plain_c = Compressor::new(dict::LEVEL).expect("compressor");
    let mut plain_d = Decompressor::new().expect("decompressor");
    let mut dict_c = Compressor::with_prepared_dictionary(&encoder_dict).expect("compressor");
    let mut dict_d = Decompressor::with_prepared_dictionary(&decoder_dict).expect("decompressor");
    let store_frames: Vec<Vec<u8>> = test.iter().map(|e| frame::encode(e)).collect();
    let plain: Vec<Vec<u8>> = test.iter().map(|e| plain_c.compress(e).expect("compress")).collect();
    let with_dict: Vec<Vec<u8>> = test.iter().map(|e| dict_c.compress(e).expect("compress")).collect();

    let mut group = configure(c, "frame_small_events");
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("encode_store_today", |b| {
        b.iter(|| test.iter().map(|e| frame::encode(e).len()).sum::<usize>());
    });
    group.bench_function("compress_zstd3_reused_context", |b| {
        b.iter(|| test.iter().map(|e| plain_c.compress(e).expect("compress").len()).sum::<usize>());
    });
    group.bench_function("compress_zstd3_dictionary", |b| {
        b.iter(|| test.iter().map(|e| dict_c.compress(e).expect("compress").len()).sum::<usize>());
    });
    group.bench_function("decode_store_today", |b| {
        b.iter(|| store_frames.iter().map(|f| frame::decode(f).expect("decode").len()).sum::<usize>());
    });
    group.bench_function("decompress_zstd3_reused_context", |b| {
        b.iter(|| {
            plain
                .iter()
                .zip(&test)
                .map(|(f, e)| plain_d.decompress(f, e.len()).expect("decompress").len())
                .sum::<usize>()
        });
    });
    group.bench_function("decompress_zstd3_dictionary", |b| {
        b.iter(|| {
            with_dict
                .iter()
                .zip(&test)
                .map(|(f, e)| dict_d.decompress(f, e.len()).expect("decompress").len())
                .sum::<usize>()
        });
    });
    group.finish();
}

criterion_group!(benches, read_last_100, verify_throughput, frame_small_events);
criterion_main!(benches);
