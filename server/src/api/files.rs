//! `/v1/files`: the Files API (beta `files-api-2025-04-14`): upload
//! (multipart), list (cursor pages, `ids`, `scope_id`), retrieve metadata,
//! download content, delete.
//!
//! A file is stored as metadata under `(workspace, file id)` and its contents
//! as content-addressed blobs (`resources::content`: the same bytes uploaded
//! twice, or mounted into many sessions, are stored once). As on the hosted
//! service, uploaded files are not downloadable (`downloadable: false`,
//! download answers 400 `file_not_downloadable`); files the agent leaves in a
//! session's outputs directory are (`resources::outputs`), scoped to the
//! session (`scope: {type: "session", id}`). Uploads are streamed to the store
//! a chunk at a time and limited to `MAX_FILE_BYTES`. Deleting a file removes
//! its metadata; its blobs stay while any session log names them (there is
//! no blob garbage collection yet).

use axum::extract::multipart::{Field, MultipartError, MultipartRejection};
use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use logbook_core::{Digest, FileId, SessionId, Timestamp};
use logbook_store::{Direction, ResourceKind, Resources, SledStore};

use super::error::ApiError;
use super::wire::{Query, decode_owned_cursor, encode_cursor};
use super::{from_bytes, parse_id, put_new, scan_page, to_bytes};
use crate::http::MANAGED_AGENTS_BETA;
use crate::resources::content::{self, Content, ContentError, MAX_FILE_BYTES};
use crate::state::AppState;
use crate::tenancy::Tenant;

/// The body limit of an upload: the largest file plus room for the
/// multipart framing and the other fields.
pub const MAX_UPLOAD_BODY_BYTES: usize = MAX_FILE_BYTES as usize + 1024 * 1024;
/// Longest filename kept (Linux `NAME_MAX`; the name may become a path).
pub const MAX_FILENAME_BYTES: usize = 255;
/// `expires_in_seconds` bounds (one hour to ninety days, as documented).
pub const MIN_EXPIRES_SECONDS: i64 = 3600;
pub const MAX_EXPIRES_SECONDS: i64 = 7_776_000;
/// `ids` filter: at most this many ids per list call (documented).
pub const MAX_LIST_IDS: usize = 100;
const DEFAULT_LIST_LIMIT: usize = 20;
const MAX_LIST_LIMIT: usize = 1000;
/// Upload chunks in flight between the request and the store writer.
const UPLOAD_QUEUE: usize = 4;

/// What is stored for a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFile {
    pub id: FileId,
    pub filename: String,
    pub mime_type: String,
    pub size_bytes: u64,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub downloadable: bool,
    /// The session a captured output belongs to.
    pub scope: Option<SessionId>,
    /// The contents' blob (see `resources::content`) and hash.
    pub blob: Digest,
    pub digest: Digest,
}

impl StoredFile {
    /// The API's file metadata object.
    pub fn to_wire(&self) -> Value {
        json!({
            "id": self.id,
            "type": "file",
            "filename": self.filename,
            "mime_type": self.mime_type,
            "size_bytes": self.size_bytes,
            "created_at": self.created_at,
            "downloadable": self.downloadable,
            "expires_at": self.expires_at,
            "scope": self.scope.map(|id| json!({"type": "session", "id": id})),
        })
    }

    pub fn content(&self) -> Content {
        Content { blob: self.blob, size: self.size_bytes, digest: self.digest }
    }

    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

pub fn not_found(raw: &str) -> ApiError {
    ApiError::not_found(format!("file {raw} not found")).with_code("file_not_found")
}

fn expired(id: FileId) -> ApiError {
    ApiError::not_found(format!("file {id} has expired; its content is no longer available")).with_code("file_expired")
}

/// The file `id` of `tenant`; another workspace's file answers like a missing one.
pub fn load(store: &SledStore, tenant: &Tenant, id: FileId) -> Result<StoredFile, ApiError> {
    let bytes = store
        .get_resource(ResourceKind::File, &tenant.key(id.to_bytes()))?
        .ok_or_else(|| not_found(&id.to_string()))?;
    from_bytes(&bytes)
}

/// The file `id` of `tenant` for mounting: it must exist and not be expired.
pub fn load_live(store: &SledStore, tenant: &Tenant, id: FileId, now: Timestamp) -> Result<StoredFile, ApiError> {
    let file = load(store, tenant, id)?;
    if file.is_expired(now) {
        return Err(expired(id));
    }
    Ok(file)
}

/// Stores a new file's metadata.
pub fn insert(store: &SledStore, tenant: &Tenant, file: &StoredFile) -> Result<(), ApiError> {
    put_new(store, ResourceKind::File, &tenant.key(file.id.to_bytes()), &to_bytes(file)?)
}

pub async fn upload(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<Value>, ApiError> {
    let mut multipart = multipart.map_err(|rejection| {
        ApiError::invalid(format!(
            "the body must be multipart/form-data with a `file` part ({})",
            rejection.body_text()
        ))
    })?;
    // Storing the file holds a blocking thread for as long as the client
    // takes to send it.
    let _slot = state.hold(tenant.workspace, crate::state::Held::Transfer).ok_or_else(ApiError::busy_transfers)?;
    let mut upload: Option<(String, String, Content)> = None;
    let mut expires_in: Option<i64> = None;
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("file") => {
                if upload.is_some() {
                    return Err(ApiError::invalid("file: send exactly one file part"));
                }
                let declared_name = field.file_name().map(str::to_owned);
                let declared_type = field.content_type().map(str::to_owned);
                // Judged before a byte is stored: the store keeps blobs
                // nothing names (it has no collection of them yet).
                let mime_type = mime_type(declared_name.as_deref().unwrap_or(""), declared_type.as_deref());
                let filename = filename(declared_name.as_deref(), &mime_type)?;
                let content = store_field(&state, field).await?;
                upload = Some((filename, mime_type, content));
            }
            Some("expires_in_seconds") => {
                let text = small_text(field).await?;
                let seconds =
                    text.trim().parse::<i64>().ok().filter(|s| (MIN_EXPIRES_SECONDS..=MAX_EXPIRES_SECONDS).contains(s));
                expires_in = Some(seconds.ok_or_else(|| {
                    ApiError::invalid(format!(
                        "expires_in_seconds: must be an integer from {MIN_EXPIRES_SECONDS} to {MAX_EXPIRES_SECONDS}, got {text:?}"
                    ))
                })?);
            }
            // Other parts (the SDK sends none) are read and ignored.
            Some(_) | None => {}
        }
    }
    let Some((filename, mime_type, content)) = upload else {
        return Err(ApiError::invalid("file: the multipart body has no `file` part"));
    };
    let now = state.now();
    let file = StoredFile {
        id: state.new_id(now, FileId::from_parts),
        filename,
        mime_type,
        size_bytes: content.size,
        created_at: now,
        expires_at: expires_in.map(|s| Timestamp::from_unix_micros(now.unix_micros() + s * 1_000_000)),
        downloadable: false,
        scope: None,
        blob: content.blob,
        digest: content.digest,
    };
    let stored = file.clone();
    state.blocking(move |store| insert(store, &tenant, &stored)).await?;
    Ok(Json(file.to_wire()))
}

/// Streams one multipart field into the store, a chunk at a time.
async fn store_field(state: &AppState, mut field: Field<'_>) -> Result<Content, ApiError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, String>>(UPLOAD_QUEUE);
    let store = state.store().clone();
    let writer = tokio::task::spawn_blocking(move || {
        content::store_pieces(&store, std::iter::from_fn(move || rx.blocking_recv()), MAX_FILE_BYTES)
    });
    let mut read_error: Option<MultipartError> = None;
    loop {
        match field.chunk().await {
            Ok(Some(bytes)) => {
                if tx.send(Ok(bytes.to_vec())).await.is_err() {
                    break; // The writer stopped (the file is too large); its error says why.
                }
            }
            Ok(None) => break,
            Err(err) => {
                let _ = tx.send(Err(err.body_text())).await;
                read_error = Some(err);
                break;
            }
        }
    }
    drop(tx);
    let stored = writer.await.map_err(|err| ApiError::internal(format!("upload writer failed: {err}")))?;
    if let Some(err) = read_error {
        return Err(multipart_error(err));
    }
    stored.map_err(content_error)
}

/// A short text field (a number), read without holding a long one.
async fn small_text(mut field: Field<'_>) -> Result<String, ApiError> {
    const MAX_FIELD_BYTES: usize = 64;
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > MAX_FIELD_BYTES {
            return Err(ApiError::invalid(format!("expires_in_seconds: at most {MAX_FIELD_BYTES} bytes")));
        }
    }
    String::from_utf8(bytes).map_err(|_| ApiError::invalid("expires_in_seconds: must be an integer"))
}

fn multipart_error(err: MultipartError) -> ApiError {
    if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::too_large(format!("the upload is over the limit of {MAX_FILE_BYTES} bytes per file"));
    }
    ApiError::invalid(format!("the multipart body is malformed: {}", err.body_text()))
}

pub fn content_error(err: ContentError) -> ApiError {
    match err {
        ContentError::TooLarge { limit } => ApiError::too_large(format!("file: over the limit of {limit} bytes")),
        ContentError::Source(message) => ApiError::invalid(format!("file: could not be read: {message}")),
        ContentError::Store(store) => store.into(),
        other @ (ContentError::Missing(_) | ContentError::BadManifest(_) | ContentError::Sink(_)) => {
            ApiError::internal(other)
        }
    }
}

/// The stored name: the last path component of what the client sent, or
/// `unnamed` with the MIME type's extension.
fn filename(declared: Option<&str>, mime_type: &str) -> Result<String, ApiError> {
    let last = declared.unwrap_or("").rsplit(['/', '\\']).next().unwrap_or("").trim();
    if last.chars().any(char::is_control) {
        return Err(ApiError::invalid("file: the filename must not contain control characters"));
    }
    if last.len() > MAX_FILENAME_BYTES {
        return Err(ApiError::invalid(format!("file: the filename must be at most {MAX_FILENAME_BYTES} bytes")));
    }
    if last.is_empty() || last == "." || last == ".." {
        return Ok(format!("unnamed{}", extension_for(mime_type)));
    }
    Ok(last.to_owned())
}

/// MIME types by file extension, for files whose client sent none (or a
/// generic one), and for captured outputs.
const MIME_TYPES: &[(&str, &str)] = &[
    ("txt", "text/plain"),
    ("md", "text/markdown"),
    ("csv", "text/csv"),
    ("tsv", "text/tab-separated-values"),
    ("json", "application/json"),
    ("jsonl", "application/jsonl"),
    ("xml", "application/xml"),
    ("yaml", "application/yaml"),
    ("yml", "application/yaml"),
    ("html", "text/html"),
    ("htm", "text/html"),
    ("css", "text/css"),
    ("js", "text/javascript"),
    ("py", "text/x-python"),
    ("rs", "text/x-rust"),
    ("go", "text/x-go"),
    ("java", "text/x-java"),
    ("c", "text/x-c"),
    ("h", "text/x-c"),
    ("cpp", "text/x-c++"),
    ("sh", "application/x-sh"),
    ("sql", "application/sql"),
    ("pdf", "application/pdf"),
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("svg", "image/svg+xml"),
    ("zip", "application/zip"),
    ("gz", "application/gzip"),
    ("tar", "application/x-tar"),
    ("docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    ("xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    ("pptx", "application/vnd.openxmlformats-officedocument.presentationml.presentation"),
];

/// The MIME type of a file: the declared one unless it is missing, malformed
/// or the generic `application/octet-stream`; else by extension.
pub fn mime_type(filename: &str, declared: Option<&str>) -> String {
    let declared = declared.map(|d| d.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    if let Some(declared) = declared {
        let valid = declared.len() <= 127
            && declared.split_once('/').is_some_and(|(a, b)| {
                !a.is_empty()
                    && !b.is_empty()
                    && declared.bytes().all(|c| c.is_ascii_alphanumeric() || b"/.+-_".contains(&c))
            });
        if valid && declared != "application/octet-stream" {
            return declared;
        }
    }
    let extension = filename.rsplit_once('.').map(|(_, ext)| ext.to_ascii_lowercase()).unwrap_or_default();
    MIME_TYPES
        .iter()
        .find(|(ext, _)| *ext == extension)
        .map_or_else(|| "application/octet-stream".to_owned(), |(_, mime)| (*mime).to_owned())
}

fn extension_for(mime_type: &str) -> String {
    MIME_TYPES.iter().find(|(_, mime)| *mime == mime_type).map(|(ext, _)| format!(".{ext}")).unwrap_or_default()
}

pub async fn list(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    headers: HeaderMap,
    query: Query,
) -> Result<Json<Value>, ApiError> {
    // `scope_id` filters both ways of listing: by `ids` and by pages.
    let scope = match query.one("scope_id") {
        None => None,
        Some(raw) => {
            if !crate::http::has_beta(&headers, MANAGED_AGENTS_BETA) {
                return Err(ApiError::invalid(format!(
                    "scope_id: listing a session's files needs the anthropic-beta header {MANAGED_AGENTS_BETA}"
                )));
            }
            // A scope that is not a session id matches nothing.
            Some(raw.parse::<SessionId>().ok())
        }
    };
    let in_scope = move |file: &StoredFile| match scope {
        None => true,
        Some(wanted) => wanted.is_some() && file.scope == wanted,
    };
    let ids = query.all("ids");
    if !ids.is_empty() {
        if query.one("page").is_some() || query.one("limit").is_some() {
            return Err(ApiError::invalid("ids: cannot be combined with page or limit"));
        }
        let mut wanted: Vec<FileId> = Vec::new();
        for raw in &ids {
            // Ids that name no visible file are left out, as documented.
            if let Ok(id) = raw.parse::<FileId>()
                && !wanted.contains(&id)
            {
                wanted.push(id);
            }
        }
        let n_distinct = ids.iter().collect::<std::collections::BTreeSet<_>>().len();
        if n_distinct > MAX_LIST_IDS {
            return Err(ApiError::invalid(format!("ids: at most {MAX_LIST_IDS} ids, got {n_distinct}")));
        }
        let data = state
            .blocking(move |store| {
                let mut data = Vec::new();
                for id in wanted {
                    if let Some(bytes) = store.get_resource(ResourceKind::File, &tenant.key(id.to_bytes()))? {
                        let file: StoredFile = from_bytes(&bytes)?;
                        if in_scope(&file) {
                            data.push(file.to_wire());
                        }
                    }
                }
                Ok(data)
            })
            .await?;
        return Ok(Json(json!({"data": data, "next_page": null})));
    }
    let limit = query.limit(DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT)?;
    let after = query.one("page").map(|page| decode_owned_cursor("page", page, &tenant.prefix())).transpose()?;
    let page = state
        .blocking(move |store| {
            let scanned =
                scan_page(store, ResourceKind::File, &tenant.prefix(), after, Direction::Backward, limit, |bytes| {
                    let file: StoredFile = from_bytes(bytes)?;
                    Ok(in_scope(&file).then_some(file))
                })?;
            Ok(json!({
                "data": scanned.items.iter().map(|(_, file)| file.to_wire()).collect::<Vec<_>>(),
                "next_page": scanned.next.map(|key| encode_cursor("page", &key)),
            }))
        })
        .await?;
    Ok(Json(page))
}

pub async fn retrieve(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(file_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_file_id(&file_id)?;
    let file = state.blocking(move |store| load(store, &tenant, id)).await?;
    Ok(Json(file.to_wire()))
}

pub async fn content(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(file_id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_file_id(&file_id)?;
    let now = state.now();
    let (file, chunks) = state
        .blocking(move |store| {
            let file = load(store, &tenant, id)?;
            if !file.downloadable {
                return Err(ApiError::invalid(format!(
                    "file {id} is not downloadable: only files an agent created (a session's outputs) can be downloaded"
                ))
                .with_code("file_not_downloadable"));
            }
            if file.is_expired(now) {
                return Err(expired(id));
            }
            let chunks = content::chunks(store, file.blob, file.size_bytes).map_err(content_error)?;
            Ok((file, chunks))
        })
        .await?;
    // One chunk in memory at a time, read as the client consumes the body.
    let slot = state.hold(tenant.workspace, crate::state::Held::Download).ok_or_else(ApiError::busy_downloads)?;
    let mut response = Response::new(content::chunk_stream(state.store().clone(), chunks, slot));
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&file.mime_type) {
        headers.insert("content-type", value);
    }
    if let Ok(value) = HeaderValue::from_str(&file.size_bytes.to_string()) {
        headers.insert("content-length", value);
    }
    Ok(response.into_response())
}

pub async fn delete(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(file_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_file_id(&file_id)?;
    state
        .blocking(move |store| {
            let key = tenant.key(id.to_bytes());
            let current = store.get_resource(ResourceKind::File, &key)?.ok_or_else(|| not_found(&id.to_string()))?;
            match store.swap_resource(ResourceKind::File, &key, Some(&current), None)? {
                Ok(()) => Ok(()),
                Err(_) => Err(ApiError::conflict_transient(format!("file {id} changed concurrently; retry"))),
            }
        })
        .await?;
    Ok(Json(json!({"id": id, "type": "file_deleted"})))
}

/// Deletes the files scoped to `session` (its captured outputs, every
/// version of them): a deleted session's outputs are deleted with it
/// (behaviour digest §3.8). Walks the workspace's files (session deletes are
/// rare; outputs are not indexed by session). Returns how many went.
pub fn delete_scoped(store: &SledStore, tenant: &Tenant, session: SessionId) -> Result<usize, ApiError> {
    let mut scoped: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    super::scan_all(store, ResourceKind::File, &tenant.prefix(), |key, bytes| {
        let file: StoredFile = from_bytes(bytes)?;
        if file.scope == Some(session) {
            scoped.push((key.to_vec(), bytes.to_vec()));
        }
        Ok(std::ops::ControlFlow::Continue(()))
    })?;
    let mut n_deleted = 0;
    for (key, bytes) in scoped {
        // A file deleted meanwhile is gone already; files never change otherwise.
        if store.swap_resource(ResourceKind::File, &key, Some(&bytes), None)?.is_ok() {
            n_deleted += 1;
        }
    }
    Ok(n_deleted)
}

pub fn parse_file_id(raw: &str) -> Result<FileId, ApiError> {
    parse_id::<FileId>(raw, "file").map_err(|_| not_found(raw))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

    use super::*;

    #[test]
    fn mime_types_prefer_a_specific_declared_type() {
        assert_eq!(mime_type("data.csv", Some("text/csv")), "text/csv");
        assert_eq!(mime_type("data.csv", Some("application/octet-stream")), "text/csv");
        assert_eq!(mime_type("report.PDF", None), "application/pdf");
        assert_eq!(mime_type("x", Some("Text/Plain; charset=utf-8")), "text/plain");
        assert_eq!(mime_type("x.bin", Some("not a type")), "application/octet-stream");
        assert_eq!(mime_type("x.weird", None), "application/octet-stream");
    }

    #[test]
    fn filenames_keep_the_last_component() {
        assert_eq!(filename(Some("/home/me/data.csv"), "text/csv").unwrap(), "data.csv");
        assert_eq!(filename(Some("C:\\docs\\a.pdf"), "application/pdf").unwrap(), "a.pdf");
        assert_eq!(filename(None, "application/pdf").unwrap(), "unnamed.pdf");
        assert_eq!(filename(Some("dir/"), "application/x-unknown").unwrap(), "unnamed");
        assert_eq!(filename(Some(".."), "text/plain").unwrap(), "unnamed.txt");
        assert!(filename(Some("a\nb"), "text/plain").is_err());
        assert!(filename(Some(&"a".repeat(256)), "text/plain").is_err());
    }
}
