//! Typed identifiers with the API's prefixes (`sesn_`, `sevt_`, `agent_`, ...).
//!
//! Every id is a 128-bit ULID behind a prefix: it sorts by creation time, is 16
//! bytes in keys and in the canonical encoding, and is a string only at the JSON
//! edge, where it is parsed once. This module does not generate ids (that needs a
//! clock and randomness, which `core` does not have): callers build them with
//! [`SessionId::from_parts`] and friends.

use std::fmt;
use std::str::FromStr;

use bincode::de::Decoder;
use bincode::enc::Encoder;
use bincode::error::{DecodeError, EncodeError};
use bincode::{Decode, Encode};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use ulid::Ulid;

/// An id string that does not parse as the expected typed id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} id {input:?}: expected `{prefix}` followed by 26 Crockford base32 characters")]
pub struct ParseIdError {
    pub kind: &'static str,
    pub prefix: &'static str,
    pub input: String,
}

macro_rules! prefixed_id {
    ($(#[$meta:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Ulid);

        impl $name {
            /// The prefix this id carries in its string form.
            pub const PREFIX: &'static str = $prefix;

            /// The all-zero id, which no generated id is: where the API's
            /// field is empty (see `span::start_id`).
            pub const NIL: Self = Self(Ulid::nil());

            /// Builds an id from a millisecond timestamp and 80 random bits.
            pub fn from_parts(unix_ms: u64, random: u128) -> Self {
                Self(Ulid::from_parts(unix_ms, random))
            }

            /// The id as 16 big-endian bytes: byte order equals creation order.
            pub fn to_bytes(self) -> [u8; 16] {
                self.0.to_bytes()
            }

            pub fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(Ulid::from_bytes(bytes))
            }

            /// Milliseconds since the Unix epoch encoded in the id.
            pub fn unix_ms(self) -> u64 {
                self.0.timestamp_ms()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;

            fn from_str(input: &str) -> Result<Self, ParseIdError> {
                let err = || ParseIdError { kind: $kind, prefix: $prefix, input: input.to_owned() };
                let rest = input.strip_prefix($prefix).ok_or_else(err)?;
                // Ulid::from_string accepts lowercase too; we only ever print uppercase,
                // and a canonical string form keeps ids usable as map keys in clients.
                if rest.len() != 26 || rest.bytes().any(|b| b.is_ascii_lowercase()) {
                    return Err(err());
                }
                let ulid = Ulid::from_string(rest).map_err(|_| err())?;
                // 26 base32 digits hold 130 bits and the decoder drops the top
                // two; any other spelling of the same 128 bits is refused too.
                if ulid.to_string() != rest {
                    return Err(err());
                }
                Ok(Self(ulid))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        impl Encode for $name {
            fn encode<E: Encoder>(&self, encoder: &mut E) -> Result<(), EncodeError> {
                self.to_bytes().encode(encoder)
            }
        }

        impl<Context> Decode<Context> for $name {
            fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
                <[u8; 16]>::decode(decoder).map(Self::from_bytes)
            }
        }

        impl<'de, Context> bincode::BorrowDecode<'de, Context> for $name {
            fn borrow_decode<D: bincode::de::BorrowDecoder<'de, Context = Context>>(
                decoder: &mut D,
            ) -> Result<Self, DecodeError> {
                <[u8; 16]>::decode(decoder).map(Self::from_bytes)
            }
        }

        #[cfg(any(test, feature = "arbitrary"))]
        impl proptest::arbitrary::Arbitrary for $name {
            type Parameters = ();
            type Strategy = proptest::strategy::Map<proptest::num::u128::Any, fn(u128) -> Self>;

            fn arbitrary_with((): ()) -> Self::Strategy {
                use proptest::strategy::Strategy;
                proptest::num::u128::ANY.prop_map(|n| Self(Ulid(n)))
            }
        }
    };
}

prefixed_id!(
    /// A session: one agent instance in one environment, owning one log.
    SessionId, "sesn_", "session"
);
prefixed_id!(
    /// One event in a session's log (the API's event `id`).
    EventId, "sevt_", "event"
);
prefixed_id!(
    /// An agent definition (all its versions share the id).
    AgentId, "agent_", "agent"
);
prefixed_id!(
    /// An environment (sandbox template).
    EnvironmentId, "env_", "environment"
);
prefixed_id!(
    /// A thread of a multi-agent session.
    ThreadId, "sthr_", "session thread"
);
prefixed_id!(
    /// An outcome defined with `user.define_outcome`.
    OutcomeId, "outc_", "outcome"
);
prefixed_id!(
    /// A work item of a self-hosted environment's queue.
    WorkId, "work_", "work item"
);
prefixed_id!(
    /// A file of the Files API.
    FileId, "file_", "file"
);
prefixed_id!(
    /// A resource attached to a session (a mounted file, a cloned repository).
    SessionResourceId, "sesrsc_", "session resource"
);
prefixed_id!(
    /// A workspace: the tenant that owns API keys and every object.
    WorkspaceId, "wrkspc_", "workspace"
);
prefixed_id!(
    /// A multi-agent workflow run (preview).
    WorkflowRunId, "wrun_", "workflow run"
);

/// Bits of an event id's random part that hold its seq.
const EVENT_SEQ_BITS: u32 = 40;

impl EventId {
    /// An event id for the record at `seq`: the ULID's 80 random bits are the
    /// seq (40 bits, enough for `MAX_EVENTS_PER_SESSION`) and 40 random bits. An
    /// id so made finds its record without an index (`Last-Event-ID`, event
    /// references); [`EventId::seq_hint`] reads it back, and the record's own id
    /// confirms it.
    pub fn for_seq(unix_ms: u64, seq: crate::record::Seq, random: u64) -> EventId {
        const _: () = assert!(crate::limits::MAX_EVENTS_PER_SESSION <= 1 << EVENT_SEQ_BITS);
        let low = u128::from(random) & ((1u128 << EVENT_SEQ_BITS) - 1);
        EventId::from_parts(unix_ms, (u128::from(seq.get()) << EVENT_SEQ_BITS) | low)
    }

    /// The seq an id made by [`EventId::for_seq`] names. Meaningless for other
    /// ids: always check the record found there.
    pub fn seq_hint(self) -> crate::record::Seq {
        let random = self.0.random();
        crate::record::Seq::new(((random >> EVENT_SEQ_BITS) & ((1u128 << EVENT_SEQ_BITS) - 1)) as u64)
    }
}

#[cfg(test)]
#[path = "id_tests.rs"]
mod tests;
