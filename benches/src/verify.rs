//! Verification throughput against raw blake3 over the same bytes.
//!
//! The bytes are the records' canonical bytes (what the chain's digests cover).
//! The baseline is `blake3::hash` of each record's canonical bytes, one call per
//! record, nothing else: any verifier must at least do that. Measured here:
//! [`verify_in_memory`], `logbook_core::verify` over records already in memory
//! (digest, link, seq and `prev` checks; optionally decoding each entry), and
//! [`verify_store`], the store's `verify_all` (reading every value from sled,
//! unframing, decoding the envelope, verifying chains and heads, decoding
//! entries, re-hashing blobs).

use std::time::{Duration, Instant};

use anyhow::ensure;
use logbook_core::Record;
use logbook_core::verify::{Anchor, Depth, Verifier};
use logbook_store::SledStore;

/// Bytes hashed and the time `blake3::hash` took over each record's canonical bytes.
pub fn blake3_baseline(sessions: &[Vec<Record>]) -> (u64, Duration) {
    let mut bytes = 0u64;
    let mut sink = 0u8;
    let start = Instant::now();
    for record in sessions.iter().flatten() {
        if let Some(canonical) = record.canonical() {
            bytes += canonical.len() as u64;
            sink ^= blake3::hash(canonical).as_bytes()[0];
        }
    }
    let elapsed = start.elapsed();
    std::hint::black_box(sink);
    (bytes, elapsed)
}

/// Time to verify every chain with `logbook_core::verify` at `depth`.
pub fn verify_in_memory(sessions: &[Vec<Record>], depth: Depth) -> anyhow::Result<Duration> {
    let start = Instant::now();
    for records in sessions {
        let mut verifier = Verifier::new(Anchor::GENESIS, depth);
        for record in records {
            verifier.push(Ok(record));
        }
        let report = verifier.finish();
        ensure!(report.is_intact(), "chain broken: {:?}", report.first_break());
    }
    Ok(start.elapsed())
}

/// Time of the store's whole-store verification, and the records it checked.
pub fn verify_store(store: &SledStore) -> anyhow::Result<(Duration, u64)> {
    let start = Instant::now();
    let report = store.verify_all(&mut |_| {})?;
    let elapsed = start.elapsed();
    ensure!(report.is_intact(), "store damaged: {} damaged sessions", report.damaged().count());
    Ok((elapsed, report.n_records))
}
