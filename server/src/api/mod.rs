//! The Managed Agents API: one module per resource, the shared page shape, and
//! helpers every resource uses (id parsing, bounded resource scans, JSON
//! storage of objects).

pub mod agents;
pub mod environments;
pub mod error;
pub mod events;
pub mod files;
pub mod model_id;
pub mod resources;
pub mod sessions;
pub mod stream;
pub mod threads;
pub mod tools;
pub mod wire;
pub mod work;
pub mod x;

use serde::Serialize;
use serde::de::DeserializeOwned;

use logbook_store::{Direction, ResourceKind, Resources, SledStore};

use self::error::ApiError;

/// A page of a list: `{data, next_page, prev_page}`. `prev_page` is sent only
/// by the lists that page backwards (sessions); others omit it.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub next_page: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_page: Option<String>,
}

/// Resource scans per list request: bounds the work a filter that matches
/// little can cause. A page may come back short (with a `next_page`) when hit.
pub const MAX_SCAN_STEPS: usize = 64;
const SCAN_BATCH: usize = 256;

/// Parses an id from a path, answering 404 (not 400) for ids that cannot exist,
/// as the hosted API does.
pub fn parse_id<T: std::str::FromStr>(raw: &str, what: &str) -> Result<T, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found(format!("{what} {raw} not found")).with_code(&format!("{what}_not_found")))
}

/// What a bounded scan found: the kept items with their keys, and the cursor
/// of the next page if there may be one.
#[derive(Debug)]
pub struct Scanned<T> {
    pub items: Vec<(Vec<u8>, T)>,
    pub next: Option<Vec<u8>>,
}

/// Scans resources of `kind` under `prefix` from the cursor `after`, keeping up
/// to `limit` items that `keep` accepts.
pub fn scan_page<T>(
    store: &SledStore,
    kind: ResourceKind,
    prefix: &[u8],
    after: Option<Vec<u8>>,
    direction: Direction,
    limit: usize,
    mut keep: impl FnMut(&[u8]) -> Result<Option<T>, ApiError>,
) -> Result<Scanned<T>, ApiError> {
    let mut items: Vec<(Vec<u8>, T)> = Vec::new();
    let mut cursor = after;
    for _ in 0..MAX_SCAN_STEPS {
        let batch = store.scan_resources(kind, prefix, cursor.as_deref(), direction, SCAN_BATCH)?;
        // A batch shorter than asked may have been cut by the store's byte
        // budget: it ends the scan only if nothing follows it.
        let exhausted = batch.len() < SCAN_BATCH
            && batch.last().map_or(Ok(true), |(last, _)| {
                store.scan_resources(kind, prefix, Some(last), direction, 1).map(|more| more.is_empty())
            })?;
        for (key, bytes) in batch {
            cursor = Some(key.clone());
            if let Some(item) = keep(&bytes)? {
                if items.len() == limit {
                    // One more match exists: the page is full and there is a next one.
                    let next = items.last().map(|(key, _)| key.clone());
                    return Ok(Scanned { items, next });
                }
                items.push((key, item));
            }
        }
        if exhausted {
            return Ok(Scanned { items, next: None });
        }
    }
    // Scanned as far as one request may: let the client continue from here.
    Ok(Scanned { items, next: cursor })
}

/// Visits every resource of `kind` under `prefix`, with its key and bytes, a
/// batch of [`SCAN_BATCH`] at a time, until `visit` breaks. For walks of the
/// whole store (start-up, offline commands), never for a request's page:
/// that is [`scan_page`], which bounds its work.
pub fn scan_all(
    store: &SledStore,
    kind: ResourceKind,
    prefix: &[u8],
    mut visit: impl FnMut(&[u8], &[u8]) -> Result<std::ops::ControlFlow<()>, ApiError>,
) -> Result<(), ApiError> {
    let mut after: Option<Vec<u8>> = None;
    loop {
        let batch = store.scan_resources(kind, prefix, after.as_deref(), Direction::Forward, SCAN_BATCH)?;
        let Some((last, _)) = batch.last() else { return Ok(()) };
        after = Some(last.clone());
        for (key, bytes) in &batch {
            if visit(key, bytes)?.is_break() {
                return Ok(());
            }
        }
    }
}

/// Writes a value that must not exist yet; overwrites a leftover of an
/// interrupted earlier write at the same key.
pub fn put_new(store: &SledStore, kind: ResourceKind, key: &[u8], bytes: &[u8]) -> Result<(), ApiError> {
    match store.swap_resource(kind, key, None, Some(bytes))? {
        Ok(()) => Ok(()),
        Err(current) => match store.swap_resource(kind, key, current.as_deref(), Some(bytes))? {
            Ok(()) => Ok(()),
            Err(_) => Err(ApiError::conflict_transient("concurrent write; retry")),
        },
    }
}

pub fn to_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(value).map_err(ApiError::internal)
}

/// Levels of a stored object's own structure around the request values it
/// holds (a session holds its agent, which holds tool schemas...).
const STORED_OBJECT_DEPTH: usize = 16;

/// Reads a stored object. A request's values are parsed with serde_json's
/// limit of 128 levels, and a stored object wraps them in a few levels of its
/// own, so an object the API accepted can be deeper than that limit: such
/// objects are read again with the deep (scan-bounded) parser.
pub fn from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // The common case in one pass; anything else (too deep, or damaged,
    // which the deep parser reports the same) once more without the limit.
    serde_json::from_slice(bytes)
        .or_else(|_| logbook_core::json::from_slice_deep(bytes, STORED_OBJECT_DEPTH))
        .map_err(ApiError::internal)
}
