//! Review finding (branch review-core): id strings that overflow 128 bits parse.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

use logbook_core::{EventId, SessionId};

/// 26 base32 characters hold 130 bits; a ULID has 128, so its first
/// character is at most `7`. ulid 3.0.0's decoder shifts the top two bits out
/// silently, so `sesn_8…` parses to the same id as `sesn_0…`: a second
/// string for one id, which the lowercase check exists to prevent.
#[test]
fn an_id_string_beyond_128_bits_is_rejected() {
    let id = SessionId::from_parts(1_764_000_000_000, 42);
    let text = id.to_string();
    assert!(text.starts_with("sesn_0"));
    let overflowed = format!("sesn_8{}", &text[6..]);
    let parsed = overflowed.parse::<SessionId>();
    assert!(parsed.is_err(), "{overflowed} parsed as {parsed:?}, which prints as {text}");
    assert!("sevt_ZZZZZZZZZZZZZZZZZZZZZZZZZZ".parse::<EventId>().is_err());
}
