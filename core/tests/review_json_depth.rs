//! Review finding (branch review-core): canonical JSON deeper than serde_json's
//! recursion limit is sealed but never decodes.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

use logbook_core::event::{ModelResponse, ToolUseLink};
use logbook_core::{Entry, Event, EventId, Json, Record, Seq, SessionId, Timestamp, chain};
use serde_json::{Value, json};

fn nested_arrays(depth: usize) -> Value {
    let mut value = Value::Null;
    for _ in 0..depth {
        value = Value::Array(vec![value]);
    }
    value
}

/// A model's tool input is parsed on its own (serde_json accepts up to 127
/// levels) and then wrapped into `x.model_response`'s content array
/// (`[{"type":"tool_use","input":...}]`, two more levels). `Json::new` accepts
/// it and `Record::seal` seals it, but `Json`'s `Decode` parses with
/// serde_json's recursion limit of 128 and refuses it: the sealed record can
/// never be read back as an entry.
#[test]
fn an_entry_whose_json_is_deeper_than_serde_json_limit_decodes_after_sealing() {
    let input = nested_arrays(127);
    // What server/src/model/stream.rs accepts as a tool input.
    assert!(serde_json::from_str::<Value>(&input.to_string()).is_ok());
    let content = json!([{"type": "tool_use", "id": "toolu_1", "name": "bash", "input": input}]);
    let entry = Entry {
        id: EventId::from_parts(1_764_000_000_000, 1),
        at: Timestamp::from_unix_micros(1_764_000_000_000_000),
        event: Event::ModelResponse(ModelResponse {
            model_request_start_id: EventId::from_parts(1_764_000_000_000, 2),
            content: Json::new(&content),
            tool_uses: vec![ToolUseLink {
                provider_id: "toolu_1".to_owned(),
                event_id: EventId::from_parts(1_764_000_000_000, 3),
            }],
        }),
    };
    let session = SessionId::from_parts(1_764_000_000_000, 9);
    let record = Record::seal(session, Seq::ZERO, chain::GENESIS, &entry).expect("sealing accepts it");
    assert_eq!(record.entry(), Ok(entry), "a sealed entry must decode (or sealing must refuse it)");
}

/// `Json`'s `Serialize` falls back to `null` when its text does not parse, so
/// the same deep value silently becomes `null` in the API's JSON.
#[test]
fn a_deep_json_value_serializes_as_itself_not_null() {
    let value = nested_arrays(130);
    let json = Json::new(&value);
    let out = serde_json::to_value(&json).unwrap();
    assert_ne!(out, Value::Null, "the value was replaced by null");
}
