//! Arbitrary JSON inside events (tool inputs, schemas, metadata values).
//!
//! bincode cannot carry `serde_json::Value` (it is not self-describing), so such
//! values are stored as canonical JSON text: compact, object keys sorted, as
//! serde_json prints a `Value` whose maps are `BTreeMap`s. In JSON the value is
//! written inline, unchanged. Decoding checks that the text is valid JSON, so a
//! decoded [`Json`] can always be serialized. Nesting is bounded by
//! [`MAX_JSON_DEPTH`] both ways: encoding refuses a deeper value, decoding
//! parses up to it (beyond serde_json's default of 128).

use std::fmt;

use bincode::de::Decoder;
use bincode::enc::Encoder;
use bincode::error::{DecodeError, EncodeError};
use bincode::{Decode, Encode};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::limits::MAX_JSON_DEPTH;

/// A JSON value held as canonical JSON text.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Json(String);

impl Json {
    /// Canonicalizes a value: compact, keys sorted.
    pub fn new(value: &Value) -> Self {
        // `Value`'s Display is compact JSON and cannot fail; maps are BTreeMaps
        // (the `preserve_order` feature is off workspace-wide), so keys are sorted.
        Json(value.to_string())
    }

    /// An empty JSON object, `{}`.
    pub fn empty_object() -> Self {
        Json("{}".to_owned())
    }

    /// Parses and canonicalizes JSON text.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        let value: Value = serde_json::from_str(text)?;
        Ok(Json::new(&value))
    }

    /// The canonical text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The value, parsed. Cannot fail for a `Json` that was decoded or can be
    /// encoded; only a value nested deeper than [`MAX_JSON_DEPTH`] (which
    /// sealing refuses) reads as `null`.
    pub fn to_value(&self) -> Value {
        parse_bounded(&self.0).unwrap_or(Value::Null)
    }

    /// Whether the value is a JSON object.
    pub fn is_object(&self) -> bool {
        self.0.starts_with('{')
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Value> for Json {
    fn from(value: Value) -> Self {
        Json::new(&value)
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(|value| Json::new(&value))
    }
}

impl Encode for Json {
    fn encode<E: Encoder>(&self, encoder: &mut E) -> Result<(), EncodeError> {
        if !depth_within_limit(&self.0) {
            return Err(EncodeError::Other("JSON value nested deeper than MAX_JSON_DEPTH"));
        }
        self.0.encode(encoder)
    }
}

impl<Context> Decode<Context> for Json {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        let text = String::decode(decoder)?;
        let value = parse_bounded(&text).map_err(DecodeError::Other)?;
        // Only canonical text is accepted, so that decode(encode(x)) == x and two
        // stored forms of one value cannot exist.
        let canonical = value.to_string();
        if canonical != text {
            return Err(DecodeError::Other("JSON payload is not in canonical form"));
        }
        Ok(Json(text))
    }
}
bincode::impl_borrow_decode!(Json);

/// Whether JSON text nests at most [`MAX_JSON_DEPTH`] arrays and objects.
fn depth_within_limit(text: &str) -> bool {
    depth_at_most(text.as_bytes(), MAX_JSON_DEPTH)
}

/// Whether JSON text nests at most `limit` arrays and objects. A linear scan
/// with no recursion. For text that is not valid JSON the count is exact up
/// to the first error, which is as far as a parser goes.
fn depth_at_most(text: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in text {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// Deserializes JSON that carries event values ([`Json`], nested up to
/// [`MAX_JSON_DEPTH`]) inside at most `own_depth` levels of its own structure:
/// a checkpoint of a session's state, a line of an exported bundle. serde_json's
/// default limit (128) would refuse what the log stores; the depth is bounded
/// by a scan first, so no input can exhaust the stack.
pub fn from_slice_deep<T: serde::de::DeserializeOwned>(bytes: &[u8], own_depth: usize) -> Result<T, serde_json::Error> {
    if !depth_at_most(bytes, MAX_JSON_DEPTH.saturating_add(own_depth)) {
        return Err(<serde_json::Error as serde::de::Error>::custom("JSON nested deeper than the log can hold"));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    deserializer.disable_recursion_limit();
    let value = T::deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// Parses JSON text nested up to [`MAX_JSON_DEPTH`] levels. serde_json's own
/// limit (128) is lifted only after [`depth_within_limit`] has bounded the
/// recursion, so no input can exhaust the stack.
fn parse_bounded(text: &str) -> Result<Value, &'static str> {
    // The common case, in one pass: serde_json's own limit is ample.
    if let Ok(value) = serde_json::from_str(text) {
        return Ok(value);
    }
    if !depth_within_limit(text) {
        return Err("JSON payload nested deeper than MAX_JSON_DEPTH");
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    deserializer.disable_recursion_limit();
    let value = Value::deserialize(&mut deserializer).map_err(|_| "JSON payload is not valid JSON")?;
    deserializer.end().map_err(|_| "JSON payload is not valid JSON")?;
    Ok(value)
}

#[cfg(any(test, feature = "arbitrary"))]
pub mod strategy {
    //! proptest strategies for JSON values.

    use proptest::prelude::*;
    use serde_json::Value;

    use super::Json;

    /// Small nested JSON values with string, number, bool and null leaves.
    pub fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1.0e9f64..1.0e9).prop_map(Value::from),
            "[a-z \\n\"é🦀]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    /// A JSON object, as tool inputs are.
    pub fn json_object() -> impl Strategy<Value = Json> {
        prop::collection::btree_map("[a-z_]{1,8}", json_value(), 0..4)
            .prop_map(|map| Json::new(&Value::Object(map.into_iter().collect())))
    }

    impl Arbitrary for Json {
        type Parameters = ();
        type Strategy = BoxedStrategy<Json>;

        fn arbitrary_with((): ()) -> Self::Strategy {
            json_value().prop_map(|value| Json::new(&value)).boxed()
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::event::{ModelResponse, ToolUseLink};
    use crate::{Entry, Event, EventId, Record, Seq, SessionId, Timestamp, chain};

    #[test]
    fn keys_are_sorted_and_compact() {
        let json = Json::parse(r#"{ "b": 1, "a": [true, null, "x"] }"#).unwrap();
        assert_eq!(json.as_str(), r#"{"a":[true,null,"x"],"b":1}"#);
    }

    #[test]
    fn decode_rejects_non_canonical_and_invalid_text() {
        let config = bincode::config::standard();
        for text in [r#"{"b":1,"a":2}"#, "{ }", "not json"] {
            let bytes = bincode::encode_to_vec(text.to_owned(), config).unwrap();
            let res: Result<(Json, usize), _> = bincode::decode_from_slice(&bytes, config);
            assert!(res.is_err(), "{text} must not decode");
        }
    }

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn nesting_up_to_the_limit_round_trips_and_deeper_is_refused_both_ways() {
        let config = bincode::config::standard();
        let deepest = Json::parse(&nested(100)).unwrap();
        // Wrapped past serde_json's default limit of 128, as events wrap
        // parsed values, and still within MAX_JSON_DEPTH.
        let wrapped = Json::new(&serde_json::json!([[{"input": [[[deepest.to_value()]]]}]]));
        let bytes = bincode::encode_to_vec(&wrapped, config).unwrap();
        let (back, _): (Json, usize) = bincode::decode_from_slice(&bytes, config).unwrap();
        assert_eq!(back, wrapped);
        assert_ne!(back.to_value(), Value::Null);

        let too_deep = Json(nested(MAX_JSON_DEPTH + 1));
        assert!(bincode::encode_to_vec(&too_deep, config).is_err(), "encoding refuses what decoding would");
        // Far deeper text, as a damaged store could hold: refused by the scan,
        // without recursing.
        let bytes = bincode::encode_to_vec(nested(1_000_000), config).unwrap();
        let res: Result<(Json, usize), _> = bincode::decode_from_slice(&bytes, config);
        assert!(res.is_err());
    }

    #[test]
    fn brackets_inside_strings_do_not_count_as_nesting() {
        let text = format!(r#"["{}\"{}"]"#, "[".repeat(MAX_JSON_DEPTH * 2), "{".repeat(MAX_JSON_DEPTH * 2));
        assert!(depth_within_limit(&text));
        assert!(parse_bounded(&text).is_ok());
        assert!(depth_within_limit(&nested(MAX_JSON_DEPTH)));
        assert!(!depth_within_limit(&nested(MAX_JSON_DEPTH + 1)));
    }

    fn nested_array_values(depth: usize) -> Value {
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
        let input = nested_array_values(127);
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
        let value = nested_array_values(130);
        let json = Json::new(&value);
        let out = serde_json::to_value(&json).unwrap();
        assert_ne!(out, Value::Null, "the value was replaced by null");
    }
}
