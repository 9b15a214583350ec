//! Limits, as named constants with the reasons for their values.
//!
//! Every size or count the log accepts is bounded here, so that a bad client or
//! a corrupt file cannot make the server allocate without limit. The store and
//! the server check against these; decoding enforces [`MAX_EVENT_BYTES`].

/// Largest canonical encoding of one event. The API accepts request bodies of up
/// to 32 MiB (a user message with base64 PDFs can be that big), so one event can
/// be too; anything larger must be a blob reference.
pub const MAX_EVENT_BYTES: usize = 32 * 1024 * 1024;

/// Most events in one append. The API's send-events call takes a small batch;
/// the runner appends a turn's worth at most. Bounded so that one append cannot
/// hold the group-commit barrier for long.
pub const MAX_EVENTS_PER_APPEND: usize = 1024;

/// Most bytes of canonical event encodings in one append.
pub const MAX_APPEND_BYTES: usize = 64 * 1024 * 1024;

/// Largest blob (file contents, large tool outputs). Blobs live in the store as
/// single values, so this stays well under what sled handles comfortably.
pub const MAX_BLOB_BYTES: usize = 64 * 1024 * 1024;

/// Deepest nesting (arrays and objects) of a JSON value inside an event.
/// serde_json's parser stops at 128 levels, and events wrap parsed values in a
/// few more (a model's tool input inside a model response's content array),
/// so stored values may nest deeper than serde_json parses by default. They
/// are parsed with this limit instead, checked by a scan before the parser
/// runs so it never recurses deeper; encoding refuses deeper values, so every
/// value that is stored decodes.
pub const MAX_JSON_DEPTH: usize = 256;

/// Largest record envelope: the canonical bytes plus the fixed fields.
pub const MAX_RECORD_BYTES: usize = MAX_EVENT_BYTES + 256;

/// Most events a session's log may hold. Far beyond any real session (the
/// hosted service caps turns and tool uses much lower); it bounds seq arithmetic.
pub const MAX_EVENTS_PER_SESSION: u64 = 1 << 40;

const _: () = assert!(MAX_APPEND_BYTES >= MAX_EVENT_BYTES);
const _: () = assert!(MAX_EVENTS_PER_APPEND as u64 <= MAX_EVENTS_PER_SESSION);
