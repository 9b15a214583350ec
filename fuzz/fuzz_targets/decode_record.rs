//! Fuzz target: every decoder that reads stored bytes, fed arbitrary bytes.
//!
//! Each input goes to three decoders. `Record::from_envelope`: it must not
//! panic, and a record that decodes must answer `entry()` and
//! `is_self_consistent()` and survive `to_envelope` then `from_envelope`
//! unchanged. `Entry::from_canonical`, on the input and on any canonical body a
//! decoded record carries: an entry that decodes must re-encode to exactly the
//! bytes it came from, because the chain hashes those bytes and one entry must
//! have one encoding. `logbook_store::frame::decode`: it must not panic, a value
//! that unframes must frame and unframe back to itself, and the unframed payload
//! goes through the envelope checks above, as the store reads it (values over
//! 1 MiB, which a few bytes of zstd can claim, are only decoded). Any panic or
//! failed assertion is a bug in `core` or `store`, not in this target.

#![no_main]

use libfuzzer_sys::fuzz_target;
use logbook_core::{Entry, Record};
use logbook_store::frame;

fuzz_target!(|data: &[u8]| {
    check_envelope(data);
    check_entry(data);
    check_frame(data);
});

/// A record that decodes behaves, and round-trips by value.
fn check_envelope(bytes: &[u8]) {
    let Ok(record) = Record::from_envelope(bytes) else { return };
    let _ = record.is_self_consistent();
    // Decoding the body is `check_entry`'s job; here it only must not panic
    // and must agree with it.
    let decoded = record.entry();
    if let Some(canonical) = record.canonical() {
        assert_eq!(decoded.is_ok(), Entry::from_canonical(canonical).is_ok());
        check_entry(canonical);
    }
    let envelope = record.to_envelope().unwrap_or_else(|err| panic!("a decoded record does not re-encode: {err}"));
    assert_eq!(Record::from_envelope(&envelope).as_ref(), Ok(&record), "envelope round trip changed the record");
}

/// An entry that decodes re-encodes to exactly its input: the canonical
/// encoding is unique.
fn check_entry(bytes: &[u8]) {
    let Ok(entry) = Entry::from_canonical(bytes) else { return };
    let canonical = entry.to_canonical().unwrap_or_else(|err| panic!("a decoded entry does not re-encode: {err}"));
    assert!(
        canonical == bytes,
        "two canonical encodings of one entry:\n input     {}\n re-encoded {}\n entry {entry:?}",
        hex(bytes),
        hex(&canonical),
    );
}

/// A value that unframes frames back to itself, and is read as an envelope.
fn check_frame(bytes: &[u8]) {
    let Ok(payload) = frame::decode(bytes) else { return };
    // A few bytes of zstd can legitimately claim tens of MiB; re-compressing
    // those on every run would make the fuzzer crawl, and proves nothing more.
    if payload.len() > REFRAME_BYTES_MAX {
        return;
    }
    assert_eq!(frame::decode(&frame::encode(&payload)).as_ref(), Ok(&payload), "frame round trip changed the value");
    assert_eq!(
        frame::decode(&frame::encode_raw(&payload)).as_ref(),
        Ok(&payload),
        "raw frame round trip changed the value"
    );
    check_envelope(&payload);
}

/// Largest unframed value that is re-framed and read as an envelope.
const REFRAME_BYTES_MAX: usize = 1 << 20;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
