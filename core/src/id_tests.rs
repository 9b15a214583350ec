//! Tests for typed ids: string round-trip, prefix checks, byte order.

use super::*;

#[test]
fn display_and_parse_round_trip() {
    let id = SessionId::from_parts(1_764_000_000_000, 42);
    let text = id.to_string();
    assert!(text.starts_with("sesn_"));
    assert_eq!(text.len(), 5 + 26);
    assert_eq!(text.parse::<SessionId>(), Ok(id));
}

#[test]
fn wrong_prefix_and_garbage_are_rejected() {
    let id = EventId::from_parts(1, 2).to_string();
    assert!(id.parse::<SessionId>().is_err());
    assert!("sesn_".parse::<SessionId>().is_err());
    assert!("sesn_0000000000000000000000000!".parse::<SessionId>().is_err());
    let lower = SessionId::from_parts(5, 77).to_string().to_lowercase();
    assert!(lower.parse::<SessionId>().is_err(), "lowercase is not the canonical form");
}

#[test]
fn byte_order_is_creation_order() {
    let a = SessionId::from_parts(1000, u128::MAX >> 48);
    let b = SessionId::from_parts(1001, 0);
    assert!(a.to_bytes() < b.to_bytes());
    assert!(a < b);
}

#[test]
fn json_form_is_the_string() {
    let id = AgentId::from_parts(7, 9);
    let json = serde_json::to_string(&id).unwrap_or_default();
    assert_eq!(json, format!("\"{id}\""));
    let back: AgentId = serde_json::from_str(&json).unwrap_or(AgentId::from_parts(0, 0));
    assert_eq!(back, id);
}

#[test]
fn event_ids_carry_their_seq() {
    use crate::record::Seq;
    for seq in [0u64, 1, 12345, (1 << 40) - 1] {
        let id = EventId::for_seq(1_764_000_000_000, Seq::new(seq), u64::MAX);
        assert_eq!(id.seq_hint(), Seq::new(seq));
        assert_eq!(id.unix_ms(), 1_764_000_000_000);
    }
    let a = EventId::for_seq(5, Seq::new(3), 1);
    let b = EventId::for_seq(5, Seq::new(3), 2);
    assert_ne!(a, b);
}

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
