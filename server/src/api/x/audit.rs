//! `/x/v1/keys`, `/x/v1/sessions/{id}/verify`, `/x/v1/sessions/{id}/export`
//! and `/x/v1/sessions/{id}/consistency`: the audit trail a client can check
//! without trusting the server's storage (see `crate::audit`).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use logbook_core::Seq;
use logbook_replay::audit::{ConsistencyChecker, SignedHead};
use logbook_store::{MAX_READ_RECORDS, Read};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::error::ApiError;
use crate::api::events::session_of;
use crate::api::sessions::parse_session_id;
use crate::api::wire::JsonBody;
use crate::audit::{self, AuditKey};
use crate::state::AppState;
use crate::tenancy::Tenant;

/// Bytes of bundle text handed to the response body at a time.
const EXPORT_CHUNK_BYTES: usize = 64 * 1024;
/// Chunks in flight between the reader and a slow client.
const EXPORT_CHUNKS_IN_FLIGHT: usize = 8;

fn key(state: &AppState) -> Result<std::sync::Arc<AuditKey>, ApiError> {
    state.audit_key().ok_or_else(|| ApiError::unavailable("this server has no audit key configured"))
}

/// `GET /x/v1/keys`: the public key signed heads are signed with.
pub async fn keys(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let key = key(&state)?;
    let public = key.public_hex();
    Ok(Json(json!({
        "data": [{"type": "ed25519", "id": format!("key_{}", &public[..16]), "public_key": public}],
        "next_page": null,
    })))
}

/// `GET /x/v1/sessions/{id}/verify`: the chain report and a signed head
/// (`null` when the chain has a break: no head is signed over a damaged
/// chain). A record the store refuses to read is a break in the report
/// (`valid: false`), never a 500.
pub async fn verify(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_session_id(&raw)?;
    let key = key(&state)?;
    let now = state.now();
    let (report, head) = state
        .blocking(move |store| {
            session_of(store, &tenant, id)?;
            audit::verify_session(store, &key, id, now).map_err(ApiError::internal)
        })
        .await?;
    Ok(Json(json!({
        "type": "session_verification",
        "session_id": id,
        "valid": report.is_intact(),
        "n_records": report.n_records,
        "n_intact": report.n_intact,
        "n_redacted": report.n_redacted,
        "breaks": report.breaks,
        "signed_head": head,
    })))
}

/// `GET /x/v1/sessions/{id}/export`: the session as a bundle (JSON Lines),
/// streamed as it is read.
pub async fn export(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_session_id(&raw)?;
    let key = key(&state)?;
    let now = state.now();
    // The blobs are found before the answer starts: one the store lacks is
    // an error now, not a 200 broken off half way.
    let (session, plan) = state
        .blocking(move |store| {
            let session = session_of(store, &tenant, id)?;
            let plan = audit::plan_export(store, id).map_err(export_error)?;
            Ok((session, plan))
        })
        .await?;
    let object = serde_json::to_value(&session).map_err(ApiError::internal)?;
    // The writer holds a blocking thread until the client has read it all.
    let slot = state.hold(tenant.workspace, crate::state::Held::Transfer).ok_or_else(ApiError::busy_transfers)?;
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(EXPORT_CHUNKS_IN_FLIGHT);
    let store = state.store().clone();
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let mut writer = ChunkWriter { buffer: Vec::with_capacity(EXPORT_CHUNK_BYTES), sender: sender.clone() };
        // A panic (a bug) breaks the answer off like an error does, rather
        // than end it as if complete.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            audit::write_export(&store, &key, &plan, Some(object), now, &mut writer, &mut |_| {})?;
            writer.flush_chunk()?;
            Ok(())
        }))
        .unwrap_or_else(|_| Err(audit::ExportError::Io(std::io::Error::other("the export panicked"))));
        if let Err(err) = result {
            tracing::warn!(session = %id, error = %err, "export failed mid-stream");
            let _ = sender.blocking_send(Err(std::io::Error::other(err.to_string())));
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx));
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert("content-type", axum::http::HeaderValue::from_static("application/x-ndjson"));
    if let Ok(value) = axum::http::HeaderValue::from_str(&format!("attachment; filename=\"{id}.logbook.jsonl\"")) {
        headers.insert("content-disposition", value);
    }
    Ok(response)
}

/// An export that cannot start: a blob the log names is missing (409
/// `file_contents_missing`: a session imported from a bundle without blobs,
/// say) or damaged; anything else is the server's fault.
fn export_error(err: audit::ExportError) -> ApiError {
    use audit::ExportError;
    match err {
        ExportError::MissingBlob { .. } => ApiError::conflict(format!(
            "{err}: this server holds the session's log but not all of its files' contents (it was imported from \
             a bundle without them)"
        ))
        .with_code("file_contents_missing"),
        ExportError::Store(_)
        | ExportError::Io(_)
        | ExportError::Render { .. }
        | ExportError::BadManifest { .. }
        | ExportError::BlobMismatch { .. } => ApiError::internal(err),
    }
}

/// Buffers bundle text into chunks for the response body; a closed receiver
/// (the client went away) stops the export.
struct ChunkWriter {
    buffer: Vec<u8>,
    sender: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl ChunkWriter {
    fn flush_chunk(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buffer, Vec::with_capacity(EXPORT_CHUNK_BYTES)));
        self.sender
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= EXPORT_CHUNK_BYTES {
            self.flush_chunk()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The body of a consistency check.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyBody {
    pub signed_head: SignedHead,
}

/// `POST /x/v1/sessions/{id}/consistency`: does the current log extend the
/// history an earlier signed head (signed by this server) committed to?
pub async fn check_consistency(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(raw): Path<String>,
    JsonBody(body): JsonBody<ConsistencyBody>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_session_id(&raw)?;
    let key = key(&state)?;
    let head = body.signed_head;
    let result = state
        .blocking(move |store| {
            // Existence first, so another workspace's session answers 404 whatever the body.
            session_of(store, &tenant, id)?;
            if head.session_id != id {
                return Err(ApiError::invalid(format!("signed_head.session_id is {}, not {id}", head.session_id)));
            }
            head.check(Some(&key.public_key()))
                .map_err(|e| ApiError::invalid(format!("signed_head does not check out: {e}")))?;
            let current = store.head(id)?;
            let mut checker = ConsistencyChecker::new(&head, current.next.get());
            let mut next = head.seq.unwrap_or(Seq::ZERO);
            while next < current.next {
                let page = store.read(id, next, MAX_READ_RECORDS)?;
                let Some(last) = page.last() else { break };
                let Some(after) = last.seq().next() else { break };
                for record in page.iter().filter(|r| r.seq() < current.next) {
                    checker.push(record);
                }
                next = after;
            }
            Ok(checker.finish())
        })
        .await?;
    Ok(Json(json!({
        "type": "consistency_check",
        "session_id": id,
        "consistent": result.is_consistent(),
        "detail": result,
    })))
}
