//! Timestamps and the injected clock.
//!
//! A [`Timestamp`] is microseconds since the Unix epoch (UTC): an `i64` in the
//! canonical encoding and an RFC 3339 string (`2026-05-01T12:00:00.123456Z`) in
//! JSON. `core` never reads the wall clock; whoever builds events passes a
//! [`Clock`], so tests and re-projection are deterministic.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};

use bincode::de::Decoder;
use bincode::error::DecodeError;
use bincode::{Decode, Encode};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Microseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode)]
pub struct Timestamp(i64);

/// A string that is not an RFC 3339 timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timestamp {input:?}: expected RFC 3339, e.g. 2026-05-01T12:00:00Z")]
pub struct ParseTimestampError {
    pub input: String,
}

impl Timestamp {
    /// The earliest instant: 0001-01-01T00:00:00Z.
    pub const MIN: Timestamp = Timestamp(-62_135_596_800_000_000);
    /// The latest instant: 9999-12-30T22:00:00Z, the end of jiff's range (which
    /// keeps every civil date in every time zone within year 9999).
    pub const MAX: Timestamp = Timestamp(253_402_207_200_000_000);

    /// Clamps to the printable range so that formatting can never fail.
    pub fn from_unix_micros(micros: i64) -> Self {
        Timestamp(micros.clamp(Self::MIN.0, Self::MAX.0))
    }

    pub fn unix_micros(self) -> i64 {
        self.0
    }

    pub fn unix_ms(self) -> i64 {
        self.0.div_euclid(1000)
    }

    fn to_jiff(self) -> jiff::Timestamp {
        // In range by construction: from_unix_micros clamps and decode rejects.
        jiff::Timestamp::from_microsecond(self.0).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // jiff prints the shortest fraction that is exact, and `Z` for UTC.
        write!(f, "{}", self.to_jiff())
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Timestamp {
    type Err = ParseTimestampError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let parsed: jiff::Timestamp = input.parse().map_err(|_| ParseTimestampError { input: input.to_owned() })?;
        // Sub-microsecond precision is truncated: the log stores microseconds.
        let micros = parsed.as_microsecond();
        Ok(Timestamp::from_unix_micros(micros))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl<Context> Decode<Context> for Timestamp {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        let micros = i64::decode(decoder)?;
        if !(Self::MIN.0..=Self::MAX.0).contains(&micros) {
            return Err(DecodeError::Other("timestamp outside 0001-01-01..=9999-12-30T22:00:00Z"));
        }
        Ok(Timestamp(micros))
    }
}
bincode::impl_borrow_decode!(Timestamp);

/// Where timestamps come from. The server uses [`SystemClock`]; tests use
/// [`ManualClock`].
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> Timestamp;
}

/// The wall clock. The one place in `core` that reads time, and only when a
/// caller asks for it.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let micros = jiff::Timestamp::now().as_microsecond();
        Timestamp::from_unix_micros(micros)
    }
}

/// A clock that moves only when told to; for tests.
#[derive(Debug, Default)]
pub struct ManualClock {
    micros: AtomicI64,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        Self { micros: AtomicI64::new(start.unix_micros()) }
    }

    pub fn advance_micros(&self, delta: i64) {
        self.micros.fetch_add(delta, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_micros(self.micros.load(Ordering::SeqCst))
    }
}

#[cfg(any(test, feature = "arbitrary"))]
impl proptest::arbitrary::Arbitrary for Timestamp {
    type Parameters = ();
    type Strategy = proptest::strategy::Map<std::ops::RangeInclusive<i64>, fn(i64) -> Self>;

    fn arbitrary_with((): ()) -> Self::Strategy {
        use proptest::strategy::Strategy;
        (Timestamp::MIN.0..=Timestamp::MAX.0).prop_map(Timestamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        let ts: Timestamp = "2026-05-01T12:00:00Z".parse().unwrap();
        assert_eq!(ts.to_string(), "2026-05-01T12:00:00Z");
        let with_offset: Timestamp = "2026-05-01T14:00:00.5+02:00".parse().unwrap();
        assert_eq!(with_offset.to_string(), "2026-05-01T12:00:00.5Z");
        assert!("yesterday".parse::<Timestamp>().is_err());
    }

    #[test]
    fn extremes_format() {
        assert_eq!(Timestamp::MIN.to_string(), "0001-01-01T00:00:00Z");
        assert_eq!(Timestamp::MAX.to_string(), "9999-12-30T22:00:00Z");
        assert_eq!(Timestamp::from_unix_micros(i64::MAX), Timestamp::MAX);
    }
}
