//! Golden vectors: the canonical bytes, digests, chain hashes and record
//! envelopes of one fixed entry per event type, committed in
//! `tests/golden/v1.txt`.
//!
//! The chain hashes these bytes forever, so any change to them is a format
//! break. This test fails when one byte moves. If the change is deliberate (a
//! new event type appended to the enum adds a line; nothing else may change),
//! regenerate with `LOGBOOK_BLESS_GOLDEN=1 cargo test -p logbook-core --test golden`
//! and review the diff: existing lines must be untouched.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

use std::fmt::Write;

use logbook_core::event::sample_events;
use logbook_core::{Entry, EventId, Record, Seq, SessionId, Timestamp, chain};

const GOLDEN_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/v1.txt");

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

fn render() -> String {
    let session = SessionId::from_parts(1_764_000_000_000, 0x1234_5678_9abc_def0_1234);
    let mut prev = chain::GENESIS;
    let mut out = String::from(
        "# Logbook golden vectors, format v1. One line per sample event:\n\
         # seq type canonical_hex digest_hex chain_hash_hex envelope_hex\n",
    );
    for (idx, event) in sample_events().into_iter().enumerate() {
        let seq = Seq::new(idx as u64);
        let entry = Entry {
            id: EventId::from_parts(1_764_000_000_000 + idx as u64, 0xabcdef + idx as u128),
            event,
            at: Timestamp::from_unix_micros(1_764_000_000_123_456 + idx as i64 * 1_000_001),
        };
        let canonical = entry.to_canonical().unwrap();
        let record = Record::from_canonical(session, seq, prev, canonical.clone());
        // Decoding the golden bytes gives the entry back.
        assert_eq!(Entry::from_canonical(&canonical).unwrap(), entry);
        let envelope = record.to_envelope().unwrap();
        assert_eq!(Record::from_envelope(&envelope).unwrap(), record);
        writeln!(
            out,
            "{} {} {} {} {} {}",
            seq,
            entry.event.event_type().as_str(),
            hex(&canonical),
            record.digest(),
            record.hash(),
            hex(&envelope)
        )
        .unwrap();
        prev = record.hash();
    }
    out
}

#[test]
fn golden_vectors_are_unchanged() {
    let rendered = render();
    if std::env::var_os("LOGBOOK_BLESS_GOLDEN").is_some() {
        std::fs::write(GOLDEN_PATH, &rendered).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(GOLDEN_PATH)
        .expect("tests/golden/v1.txt is missing; generate it with LOGBOOK_BLESS_GOLDEN=1");
    for (line_idx, (want, got)) in committed.lines().zip(rendered.lines()).enumerate() {
        assert_eq!(got, want, "golden line {} changed: the canonical encoding or the chain moved", line_idx + 1);
    }
    assert_eq!(
        rendered.lines().count(),
        committed.lines().count(),
        "the number of golden lines changed (a new event type needs a blessed line)"
    );
}

#[test]
fn chain_hash_matches_an_independent_computation() {
    // Recompute the first link from the documented definition, with blake3 alone.
    let committed = std::fs::read_to_string(GOLDEN_PATH).unwrap();
    let first = committed.lines().find(|l| !l.starts_with('#')).unwrap();
    let fields: Vec<&str> = first.split(' ').collect();
    let canonical: Vec<u8> =
        (0..fields[2].len()).step_by(2).map(|i| u8::from_str_radix(&fields[2][i..i + 2], 16).unwrap()).collect();
    let digest = blake3::hash(&canonical);
    assert_eq!(digest.to_hex().as_str(), fields[3]);
    let mut input = [0u8; 72];
    input[40..].copy_from_slice(digest.as_bytes());
    let link = blake3::derive_key(chain::CHAIN_CONTEXT, &input);
    assert_eq!(hex(&link), fields[4]);
}
