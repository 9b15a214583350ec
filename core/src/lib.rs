//! `logbook-core`: the vocabulary of a session log.
//!
//! Event types (the Managed Agents public union plus Logbook's internal events),
//! typed ids, timestamps, the record envelope, the canonical encoding and the
//! blake3 hash chain with its verifier. Everything here is a pure function of its
//! inputs: no IO, no async runtime, no storage engine, no HTTP. Decoding
//! arbitrary bytes never panics; it returns [`DecodeError`].
//!
//! ```
//! use logbook_core::{chain, Entry, Event, EventId, Record, Seq, SessionId, Timestamp};
//! use logbook_core::event::SessionStatusRunning;
//! use logbook_core::verify::{verify_chain, Anchor};
//!
//! let session = SessionId::from_parts(1_764_000_000_000, 1);
//! let entry = Entry {
//!     id: EventId::from_parts(1_764_000_000_000, 2),
//!     at: Timestamp::from_unix_micros(1_764_000_000_000_000),
//!     event: Event::SessionStatusRunning(SessionStatusRunning {}),
//! };
//! let record = Record::seal(session, Seq::ZERO, chain::GENESIS, &entry).unwrap();
//! assert_eq!(record.entry().unwrap(), entry);
//! let report = verify_chain(Anchor::GENESIS, [Ok(&record)]);
//! assert!(report.is_intact());
//! ```

pub mod chain;
pub mod encoding;
pub mod entry;
pub mod event;
pub mod id;
pub mod json;
pub mod limits;
pub mod record;
pub mod time;
pub mod verify;

pub use chain::{ChainHash, Digest};
pub use encoding::{DecodeError, EncodeError};
pub use entry::Entry;
pub use event::{Event, EventType};
pub use id::{
    AgentId, EnvironmentId, EventId, FileId, OutcomeId, ParseIdError, SessionId, SessionResourceId, ThreadId, WorkId,
    WorkflowRunId, WorkspaceId,
};
pub use json::Json;
pub use record::{Body, Record, Seq};
pub use time::{Clock, ManualClock, SystemClock, Timestamp};
