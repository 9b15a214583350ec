//! Tests for the event types: both encodings round-trip, [`EventType`] stays in
//! step with [`Event`], and decoding garbage fails cleanly. The JSON shapes
//! checked against the API reference are in `tests/json_shapes.rs`.

use pretty_assertions::assert_eq;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;

use super::strategy::event_of_type;
use super::*;
use crate::json::Json;

mod json_shapes;

pub(super) fn encode(event: &Event) -> Vec<u8> {
    bincode::encode_to_vec(event, bincode::config::standard()).unwrap()
}

pub(super) fn decode(bytes: &[u8]) -> Result<(Event, usize), bincode::error::DecodeError> {
    bincode::decode_from_slice(bytes, bincode::config::standard().with_limit::<1048576>())
}

// --- (a) round trips -------------------------------------------------------

proptest! {
    #![proptest_config(Config::with_cases(1024))]

    #[test]
    fn bincode_round_trips(event in any::<Event>()) {
        let bytes = encode(&event);
        let (back, read) = decode(&bytes).unwrap();
        prop_assert_eq!(read, bytes.len());
        prop_assert_eq!(back, event);
    }

    #[test]
    fn json_round_trips(event in any::<Event>()) {
        let text = serde_json::to_string(&event).unwrap();
        let back: Event = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(back, event);
    }
}

#[test]
fn every_variant_round_trips_in_both_encodings() {
    // Goal: no variant escapes the round-trip properties by chance of the
    // union strategy. Method: run each type's own strategy 64 times.
    for &event_type in EventType::ALL {
        let mut runner = TestRunner::new(Config::with_cases(64));
        let res = runner.run(&event_of_type(event_type), |event| {
            prop_assert_eq!(event.event_type(), event_type);
            let (back, _) = decode(&encode(&event)).unwrap();
            prop_assert_eq!(&back, &event);
            let back: Event = serde_json::from_str(&serde_json::to_string(&event).unwrap()).unwrap();
            prop_assert_eq!(&back, &event);
            Ok(())
        });
        assert!(res.is_ok(), "{event_type}: {res:?}");
    }
}

#[test]
fn samples_round_trip_in_both_encodings() {
    for event in sample_events() {
        assert_eq!(decode(&encode(&event)).unwrap().0, event);
        let text = serde_json::to_string(&event).unwrap();
        assert_eq!(serde_json::from_str::<Event>(&text).unwrap(), event, "{text}");
    }
}

#[test]
fn float_in_tool_input_round_trips() {
    // Regression, found by `bincode_round_trips` and `json_round_trips`: a tool
    // input holding the float 230479600.89283538 failed to decode ("JSON payload
    // is not in canonical form"), and its JSON round trip changed the last digit.
    // Cause: without serde_json's `float_roundtrip` feature, parsing a float may
    // be off by one ulp, so `Json`'s canonical text did not survive its own
    // decode check. A stored event with such an input would be undecodable.
    // Fix: enable `float_roundtrip` on the workspace's serde_json dependency.
    for number in [230_479_600.892_835_38_f64, -234_129_611.160_694_66, 0.1, 1e300, -0.0] {
        let event = Event::AgentCustomToolUse(AgentCustomToolUse {
            name: "measure".to_owned(),
            input: Json::new(&json!({ "value": number })),
            session_thread_id: None,
        });
        assert_eq!(decode(&encode(&event)).unwrap().0, event, "bincode, {number}");
        let text = serde_json::to_string(&event).unwrap();
        assert_eq!(serde_json::from_str::<Event>(&text).unwrap(), event, "JSON, {number}");
    }
}

// --- (b) EventType stays in step with Event --------------------------------

#[test]
fn all_matches_sample_events_in_order() {
    let types: Vec<EventType> = sample_events().iter().map(Event::event_type).collect();
    assert_eq!(types, EventType::ALL);
}

#[test]
fn codes_are_positions() {
    for (position, &event_type) in EventType::ALL.iter().enumerate() {
        assert_eq!(usize::from(event_type.code()), position, "{event_type}");
        assert_eq!(EventType::from_code(event_type.code()), Some(event_type));
    }
    let past_end = u16::try_from(EventType::ALL.len()).unwrap();
    assert_eq!(EventType::from_code(past_end), None);
}

#[test]
fn codes_are_bincode_variant_indexes() {
    // bincode's standard config writes the variant index as a varint, one byte
    // below 251; the chain and golden vectors rely on this staying so.
    assert!(EventType::ALL.len() < 251);
    for event in sample_events() {
        assert_eq!(u16::from(encode(&event)[0]), event.event_type().code(), "{event:?}");
    }
}

#[test]
fn wire_strings_round_trip_and_match_serde() {
    for event in sample_events() {
        let event_type = event.event_type();
        let name = event_type.as_str();
        assert_eq!(name.parse::<EventType>(), Ok(event_type));
        assert_eq!(event_type.to_string(), name);
        let value = serde_json::to_value(&event).unwrap();
        assert_eq!(value["type"], name, "serde tag of {event_type:?}");
        assert_eq!(serde_json::to_value(event_type).unwrap(), json!(name));
        assert_eq!(serde_json::from_value::<EventType>(json!(name)).unwrap(), event_type);
    }
    let mut names: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), EventType::ALL.len(), "wire strings are unique");
}

#[test]
fn unknown_type_string_is_a_typed_error() {
    assert_eq!("event_delta".parse::<EventType>(), Err(UnknownEventType { input: "event_delta".to_owned() }));
    assert!("User.Message".parse::<EventType>().is_err());
    assert!(serde_json::from_str::<Event>(r#"{"type":"future.thing"}"#).is_err());
}

#[test]
fn public_and_input_classification() {
    let internal: Vec<EventType> = EventType::ALL.iter().copied().filter(|t| !t.is_public()).collect();
    assert_eq!(
        internal,
        [
            EventType::WorkspaceDelta,
            EventType::ForkOrigin,
            EventType::ModelRequest,
            EventType::ModelResponse,
            EventType::ToolStarted,
            EventType::AgentConfig,
            EventType::Compaction,
            EventType::SessionResource,
            EventType::ServerToolRequests
        ]
    );
    for &event_type in EventType::ALL {
        assert_eq!(event_type.is_public(), !event_type.as_str().starts_with("x."));
    }
    let input: Vec<&str> = EventType::ALL.iter().filter(|t| t.is_input()).map(|t| t.as_str()).collect();
    assert_eq!(
        input,
        [
            "user.message",
            "user.interrupt",
            "user.tool_confirmation",
            "user.custom_tool_result",
            "user.tool_result",
            "user.define_outcome",
            "system.message",
        ]
    );
}

// --- (d) decoding garbage --------------------------------------------------

proptest! {
    #![proptest_config(Config::with_cases(4096))]

    #[test]
    fn decoding_random_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn decoding_mutated_events_never_panics(
        event in any::<Event>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        // Random bytes mostly fail at the first varint; flipping bytes of a
        // valid encoding reaches the decoders of the payload fields.
        let mut bytes = encode(&event);
        for (index, mask) in flips {
            let at = index.index(bytes.len());
            bytes[at] ^= mask;
        }
        let _ = decode(&bytes);
    }
}

#[test]
fn truncated_encodings_are_errors() {
    for event in sample_events() {
        let bytes = encode(&event);
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "{:?} cut at {len}", event.event_type());
        }
    }
}
