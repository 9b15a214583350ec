//! Request parsing shared by every endpoint: JSON bodies, bracket query
//! parameters, cursors, metadata, timestamps.
//!
//! The SDK sends `Content-Type: application/json` with empty bodies on archive
//! and delete calls, arrays as `types[]=a&types[]=b`, ranges as
//! `created_at[gte]=...`, and datetimes either with `Z` or an offset. Everything
//! that does not parse is a 400 `invalid_request_error` whose message names the
//! field.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use logbook_core::Timestamp;

use super::error::ApiError;

/// Largest request body: the API's 32 MB.
pub const MAX_BODY_BYTES: usize = 32 * 1000 * 1000;

/// A JSON body; an empty body reads as `{}`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large(format!("request body is over the limit of {MAX_BODY_BYTES} bytes"))
            } else {
                ApiError::invalid(format!("could not read the request body: {rejection}"))
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses a JSON body, naming the offending field in the error.
///
/// Bodies that parse (nearly all) are parsed once, without tracking the
/// path: that costs a wrapper around every value. Only a body that fails is
/// parsed again with the path tracked, for the error's field name; both
/// parses accept exactly the same bodies.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { bytes };
    // `from_slice` also refuses anything but whitespace after the value.
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if path == "." || path.is_empty() {
            ApiError::invalid(format!("invalid request body: {inner}"))
        } else {
            ApiError::invalid(format!("{path}: {inner}"))
        }
    })?;
    // Only whitespace may follow the JSON value.
    deserializer.end().map_err(|err| ApiError::invalid(format!("invalid request body: {err}")))?;
    Ok(value)
}

/// `value` as a JSON response, as `axum::Json` answers (`content-type:
/// application/json`), written into a buffer of `capacity` bytes to start
/// with: `Json` starts at 128 and grows, copying, to the body's size.
pub fn json_response<T: Serialize>(value: &T, capacity: usize) -> Response {
    let mut body = Vec::with_capacity(capacity);
    match serde_json::to_writer(&mut body, value) {
        Ok(()) => {
            ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], Bytes::from(body)).into_response()
        }
        Err(err) => ApiError::internal(err).into_response(),
    }
}

/// The query string as ordered pairs, with bracket arrays and ranges.
#[derive(Debug, Default, Clone)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        Ok(Query::parse(parts.uri.query().unwrap_or("")))
    }
}

/// Sort order of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

impl Order {
    pub fn as_str(self) -> &'static str {
        match self {
            Order::Asc => "asc",
            Order::Desc => "desc",
        }
    }
}

/// A `created_at[...]` filter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub gt: Option<Timestamp>,
    pub gte: Option<Timestamp>,
    pub lt: Option<Timestamp>,
    pub lte: Option<Timestamp>,
}

impl TimeRange {
    pub fn contains(&self, at: Timestamp) -> bool {
        self.gt.is_none_or(|t| at > t)
            && self.gte.is_none_or(|t| at >= t)
            && self.lt.is_none_or(|t| at < t)
            && self.lte.is_none_or(|t| at <= t)
    }
}

impl Query {
    pub fn parse(raw: &str) -> Query {
        Query { pairs: form_urlencoded::parse(raw.as_bytes()).into_owned().collect() }
    }

    /// The single value of `name`; the last one wins if repeated.
    pub fn one(&self, name: &str) -> Option<&str> {
        self.pairs.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Every value of an array parameter, given as `name[]=` or `name=`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        let bracketed = format!("{name}[]");
        self.pairs.iter().filter(|(k, _)| *k == bracketed || k == name).map(|(_, v)| v.as_str()).collect()
    }

    pub fn limit(&self, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.one("limit") {
            None => Ok(default),
            Some(raw) => match raw.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::invalid(format!("limit: must be an integer from 1 to {max}, got {raw:?}"))),
            },
        }
    }

    pub fn order(&self, default: Order) -> Result<Order, ApiError> {
        match self.one("order") {
            None => Ok(default),
            Some("asc") => Ok(Order::Asc),
            Some("desc") => Ok(Order::Desc),
            Some(other) => Err(ApiError::invalid(format!("order: must be asc or desc, got {other:?}"))),
        }
    }

    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.one(name) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(ApiError::invalid(format!("{name}: must be true or false, got {other:?}"))),
        }
    }

    pub fn time_range(&self, name: &str) -> Result<TimeRange, ApiError> {
        let get = |op: &str| -> Result<Option<Timestamp>, ApiError> {
            let key = format!("{name}[{op}]");
            match self.one(&key) {
                None => Ok(None),
                Some(raw) => parse_time(raw).map(Some).map_err(|msg| ApiError::invalid(format!("{key}: {msg}"))),
            }
        };
        Ok(TimeRange { gt: get("gt")?, gte: get("gte")?, lt: get("lt")?, lte: get("lte")? })
    }
}

/// An RFC 3339 datetime (with `Z` or an offset), or a bare date (midnight UTC).
pub fn parse_time(raw: &str) -> Result<Timestamp, String> {
    if let Ok(ts) = raw.parse::<Timestamp>() {
        return Ok(ts);
    }
    if raw.len() == 10
        && let Ok(ts) = format!("{raw}T00:00:00Z").parse::<Timestamp>()
    {
        return Ok(ts);
    }
    Err(format!("expected an RFC 3339 datetime such as 2026-05-01T12:00:00Z, got {raw:?}"))
}

/// Opaque page cursors: `<kind>_<hex>`; the SDK echoes them back verbatim.
pub fn encode_cursor(kind: &str, bytes: &[u8]) -> String {
    let mut out = String::with_capacity(kind.len() + 1 + bytes.len() * 2);
    out.push_str(kind);
    out.push('_');
    for byte in bytes {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// Decodes a cursor that must name a key under `prefix` (the caller's
/// workspace): a cursor of another tenant or a crafted one is refused.
pub fn decode_owned_cursor(kind: &str, cursor: &str, prefix: &[u8]) -> Result<Vec<u8>, ApiError> {
    let key = decode_cursor(kind, cursor)?;
    if !key.starts_with(prefix) {
        return Err(ApiError::invalid(format!("page: {cursor:?} is not a cursor this list returned")));
    }
    Ok(key)
}

pub fn decode_cursor(kind: &str, cursor: &str) -> Result<Vec<u8>, ApiError> {
    let bad = || ApiError::invalid(format!("page: {cursor:?} is not a cursor this list returned"));
    let hex = cursor.strip_prefix(kind).and_then(|rest| rest.strip_prefix('_')).ok_or_else(bad)?;
    if hex.len() % 2 != 0 || hex.len() > 512 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    // All ASCII now, so every two-byte slice falls on character boundaries.
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| bad())).collect()
}

/// Metadata limits (agents, environments, sessions).
pub const MAX_METADATA_PAIRS: usize = 16;
pub const MAX_METADATA_KEY_CHARS: usize = 64;
pub const MAX_METADATA_VALUE_CHARS: usize = 512;

/// Validates metadata given in full (create).
pub fn check_metadata(metadata: &Map<String, Value>) -> Result<(), ApiError> {
    let mut out = Map::new();
    for (key, value) in metadata {
        match value {
            Value::String(_) => {
                out.insert(key.clone(), value.clone());
            }
            other @ (Value::Null | Value::Bool(_) | Value::Number(_) | Value::Array(_) | Value::Object(_)) => {
                return Err(metadata_error(format!("metadata.{key}: values must be strings, got {other}")));
            }
        }
    }
    check_metadata_limits(&out)
}

/// Applies a metadata patch: a string upserts, `null` (or, where `empty_deletes`,
/// "") deletes. Validates the result.
pub fn patch_metadata(
    current: &Map<String, Value>,
    patch: &Map<String, Value>,
    empty_deletes: bool,
) -> Result<Map<String, Value>, ApiError> {
    let mut out = current.clone();
    for (key, value) in patch {
        match value {
            Value::Null => {
                out.remove(key);
            }
            Value::String(text) if text.is_empty() && empty_deletes => {
                out.remove(key);
            }
            Value::String(_) => {
                out.insert(key.clone(), value.clone());
            }
            other @ (Value::Bool(_) | Value::Number(_) | Value::Array(_) | Value::Object(_)) => {
                return Err(metadata_error(format!("metadata.{key}: values must be strings or null, got {other}")));
            }
        }
    }
    check_metadata_limits(&out)?;
    Ok(out)
}

fn check_metadata_limits(metadata: &Map<String, Value>) -> Result<(), ApiError> {
    if metadata.len() > MAX_METADATA_PAIRS {
        return Err(metadata_error(format!("metadata: at most {MAX_METADATA_PAIRS} pairs, got {}", metadata.len())));
    }
    for (key, value) in metadata {
        let n_key = key.chars().count();
        if n_key == 0 || n_key > MAX_METADATA_KEY_CHARS {
            return Err(metadata_error(format!(
                "metadata: keys must be 1 to {MAX_METADATA_KEY_CHARS} characters, got {n_key}"
            )));
        }
        let n_value = value.as_str().map_or(0, |v| v.chars().count());
        if n_value > MAX_METADATA_VALUE_CHARS {
            return Err(metadata_error(format!(
                "metadata.{key}: values must be at most {MAX_METADATA_VALUE_CHARS} characters, got {n_value}"
            )));
        }
    }
    Ok(())
}

fn metadata_error(message: String) -> ApiError {
    ApiError::invalid(message).with_code("invalid_metadata")
}

/// A field that distinguishes "absent" from "null": `None` = absent,
/// `Some(None)` = null, `Some(Some(v))` = a value. Use with `#[serde(default)]`.
pub fn double_option<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    use serde::Deserialize;
    Option::<T>::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bracket_arrays_ranges_and_plain_forms() {
        let q = Query::parse(
            "types%5B%5D=agent.message&types%5B%5D=session.status_idle&types=x&limit=5&created_at%5Bgt%5D=2026-05-01T12%3A00%3A00%2B00%3A00",
        );
        assert_eq!(q.all("types"), vec!["agent.message", "session.status_idle", "x"]);
        assert_eq!(q.limit(20, 100).unwrap(), 5);
        let range = q.time_range("created_at").unwrap();
        assert_eq!(range.gt, Some("2026-05-01T12:00:00Z".parse().unwrap()));
        assert!(Query::parse("limit=0").limit(20, 100).is_err());
        assert!(Query::parse("limit=101").limit(20, 100).is_err());
        assert!(Query::parse("order=up").order(Order::Asc).is_err());
    }

    #[test]
    fn cursors_round_trip_and_reject_foreign_ones() {
        let cursor = encode_cursor("sess", &[1, 2, 0xff]);
        assert_eq!(decode_cursor("sess", &cursor).unwrap(), vec![1, 2, 0xff]);
        assert!(decode_cursor("evt", &cursor).is_err());
        assert!(decode_cursor("sess", "sess_zz").is_err());
    }

    #[test]
    fn metadata_limits_and_patches() {
        let mut big = Map::new();
        for n in 0..17 {
            big.insert(format!("k{n}"), Value::from("v"));
        }
        assert!(check_metadata(&big).is_err());
        let current: Map<String, Value> = serde_json::from_str(r#"{"a":"1","b":"2"}"#).unwrap();
        let patch: Map<String, Value> = serde_json::from_str(r#"{"a":null,"c":"3","b":""}"#).unwrap();
        let out = patch_metadata(&current, &patch, true).unwrap();
        assert_eq!(Value::Object(out), serde_json::json!({"c":"3"}));
        let long = Map::from_iter([("k".to_owned(), Value::from("x".repeat(513)))]);
        let err = check_metadata(&long).unwrap_err();
        assert_eq!(err.details.unwrap()["error_code"], "invalid_metadata");
    }

    #[test]
    fn empty_body_is_an_empty_object() {
        let value: Map<String, Value> = parse_json(b"").unwrap();
        assert!(value.is_empty());
        let err = parse_json::<Map<String, Value>>(b"[1]").unwrap_err();
        assert_eq!(err.status.as_u16(), 400);
        assert!(parse_json::<Map<String, Value>>(b"{} trailing").is_err());
        assert!(parse_json::<Map<String, Value>>(b"{}{}").is_err());
        assert!(parse_json::<Map<String, Value>>(b"{}  \n").is_ok());
    }
}
