//! An entry: one event with the id and time the log gives it.
//!
//! The entry is what the canonical bytes encode and the chain therefore covers:
//! the event's API id, the time it was recorded (`processed_at` in the API; from
//! the injected clock) and the event itself. Its JSON form is the API's event
//! object: `{"id", "type", ...fields, "processed_at"}`.

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::encoding::{self, DecodeError, ENTRY_FORMAT_V1, EncodeError};
use crate::event::Event;
use crate::id::EventId;
use crate::time::Timestamp;

#[derive(Debug, Clone, PartialEq, Encode, Decode, Serialize, Deserialize)]
pub struct Entry {
    pub id: EventId,
    #[serde(flatten)]
    pub event: Event,
    #[serde(rename = "processed_at")]
    pub at: Timestamp,
}

impl Entry {
    /// The canonical bytes: the entry format byte, then the bincode encoding.
    pub fn to_canonical(&self) -> Result<Vec<u8>, EncodeError> {
        encoding::encode_versioned(ENTRY_FORMAT_V1, self)
    }

    pub fn from_canonical(bytes: &[u8]) -> Result<Entry, DecodeError> {
        encoding::decode_versioned(ENTRY_FORMAT_V1, bytes)
    }
}

#[cfg(any(test, feature = "arbitrary"))]
impl proptest::arbitrary::Arbitrary for Entry {
    type Parameters = ();
    type Strategy = proptest::strategy::BoxedStrategy<Entry>;

    fn arbitrary_with((): ()) -> Self::Strategy {
        use proptest::prelude::*;
        (any::<EventId>(), any::<Timestamp>(), any::<Event>())
            .prop_map(|(id, at, event)| Entry { id, event, at })
            .boxed()
    }
}
