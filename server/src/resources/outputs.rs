//! Outputs: what the agent leaves under `/mnt/session/outputs` becomes Files
//! API files scoped to the session (`scope_id` = the session id,
//! `downloadable: true`), shortly after the session goes idle.
//!
//! A capture walks the session's outputs directory (kernel-confined: symbolic
//! links, FIFOs and devices are skipped, see `confine`), stores each regular
//! file's contents as blobs, and creates a file for each path whose contents
//! changed since that path was last captured (unchanged files are not
//! created again; a changed one gets a new file, the old one stays). The
//! captured paths and their contents are recorded in the session's log as an
//! `x.workspace_delta` (no tool call: `tool_use_id` is null), so a fork sees
//! them; the session object keeps which contents each path was captured with.
//!
//! A capture's work is bounded before any file is read: a file over
//! `MAX_FILE_BYTES` (by its size) is skipped unread and logged, a file
//! unchanged since its capture (same inode, size and change time) is not
//! read, at most [`MAX_CAPTURE_READ_BYTES`] are read to hash files and at
//! most [`MAX_CAPTURE_BYTES`] stored; what does not fit waits for a later
//! idle, when what was read this time is not read again.
//!
//! What the session object remembers is bounded too: a path no longer in the
//! outputs directory is forgotten once a capture has walked all of it (an
//! agent writing a new name each turn and deleting the last would otherwise
//! grow the object, read on every send, without end). A path forgotten and
//! written again is a new file, as any changed one is.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Seek, SeekFrom};

use logbook_core::event::{Event, FileChange, WorkspaceChange, WorkspaceDelta};
use logbook_core::{Digest, FileId, SessionId};
use logbook_store::{ResourceKind, Resources, SledStore};
use serde::{Deserialize, Serialize};

use super::Host;
use super::confine::Root;
use super::content::{self, ContentError, MAX_FILE_BYTES};
use crate::api::error::ApiError;
use crate::api::files::{self, StoredFile};
use crate::api::sessions::{self, StoredSession};
use crate::api::{events, from_bytes, to_bytes};
use crate::sandbox::layout::OUTPUTS_DIR;
use crate::state::AppState;
use crate::tenancy::Tenant;

/// Most files one capture looks at: a bound on the work of one idle. More
/// files than this in the outputs directory are captured by later idles only
/// if earlier names go away.
pub const MAX_OUTPUT_FILES: usize = 1000;

/// Most bytes one capture stores: an agent filling its outputs with large
/// files cannot make one idle write more than this to the store (files past
/// it wait for a later idle, when earlier ones are unchanged and cost nothing).
pub const MAX_CAPTURE_BYTES: u64 = 1024 * 1024 * 1024;

/// Most bytes one capture reads to hash outputs (unchanged ones included):
/// hashing costs the sandbox nothing to cause (a sparse file is free), so it
/// is bounded too. Files past it wait for a later idle.
pub const MAX_CAPTURE_READ_BYTES: u64 = 2 * MAX_CAPTURE_BYTES;

/// What a path of the outputs directory was last captured as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedOutput {
    pub digest: Digest,
    pub file_id: FileId,
    /// The file as it was when hashed: while it is the same, the contents
    /// are, and the file is not read again (so unchanged outputs cost no
    /// read budget, and a file past it is reached at a later idle).
    #[serde(default)]
    pub stamp: Option<FileStamp>,
}

/// What tells a file's contents unchanged without reading them: its inode,
/// size and change time, which no user can set (writing the file updates
/// it, and so does setting its modification time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    pub ino: u64,
    pub size: u64,
    pub ctime: i64,
    pub ctime_nsec: i64,
}

impl FileStamp {
    fn of(file: &std::fs::File) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let meta = file.metadata().ok()?;
        Some(FileStamp { ino: meta.ino(), size: meta.size(), ctime: meta.ctime(), ctime_nsec: meta.ctime_nsec() })
    }
}

/// Captures the session's outputs now; returns the files it created.
pub async fn capture(state: &AppState, tenant: Tenant, session: SessionId) -> Result<Vec<FileId>, ApiError> {
    let Some(host) = state.resources_host().cloned() else { return Ok(Vec::new()) };
    let _guard = host.lock_task(session).await;
    let worker = state.clone();
    let blocking_host = std::sync::Arc::clone(&host);
    state.blocking(move |store| capture_now(&worker, store, &blocking_host, tenant, session)).await
}

fn capture_now(
    state: &AppState,
    store: &SledStore,
    host: &Host,
    tenant: Tenant,
    session: SessionId,
) -> Result<Vec<FileId>, ApiError> {
    let stored = match sessions::load(store, &tenant, session) {
        Ok((_, stored)) => stored,
        // Deleted since it went idle: nothing to capture for.
        Err(err) if err.status == axum::http::StatusCode::NOT_FOUND => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let dir = host.paths(session).outputs();
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let root = Root::open(&dir).map_err(ApiError::internal)?;
    let found = root.walk_files(MAX_OUTPUT_FILES).map_err(ApiError::internal)?;
    // Walked whole: a remembered path not found is gone.
    let walked_all = found.len() < MAX_OUTPUT_FILES;
    let present: BTreeSet<String> = found.iter().map(|output| output_path(&output.components)).collect();
    let now = state.now();
    let mut changes = Vec::new();
    let mut captured = BTreeMap::new();
    let mut created = Vec::new();
    let mut stored_bytes = 0u64;
    let mut read_bytes = 0u64;
    for output in found {
        let path = output_path(&output.components);
        // Judged by size, unread: it could never be stored (a sparse file of
        // any size costs the sandbox nothing).
        if output.size > MAX_FILE_BYTES {
            tracing::warn!(%session, %path, size = output.size, limit = MAX_FILE_BYTES, "an output is over the file size limit; not captured");
            continue;
        }
        let stamp = FileStamp::of(&output.file);
        let previous = stored.outputs.get(&path);
        if stamp.is_some() && previous.is_some_and(|previous| previous.stamp == stamp) {
            // Unchanged since it was captured: not read again.
            continue;
        }
        if read_bytes + output.size > MAX_CAPTURE_READ_BYTES {
            tracing::warn!(%session, %path, limit = MAX_CAPTURE_READ_BYTES, "the outputs are over one capture's read limit; the rest waits");
            continue;
        }
        read_bytes += output.size;
        // Hash first: an unchanged file (the common case) costs one read, no
        // store write, and nothing of the capture's storage budget. No more
        // than the size seen is read, even if the file grows meanwhile.
        let mut file = output.file;
        let digest = content::digest_of(std::io::Read::take(&mut file, output.size)).map_err(ApiError::internal)?;
        if let Some(previous) = previous.filter(|previous| previous.digest == digest) {
            // Unchanged, seen anew (touched, or captured before stamps).
            captured.insert(path, CapturedOutput { stamp, ..previous.clone() });
            continue;
        }
        if stored_bytes + output.size > MAX_CAPTURE_BYTES {
            tracing::warn!(%session, %path, limit = MAX_CAPTURE_BYTES, "the outputs are over one capture's limit; the rest waits");
            continue;
        }
        stored_bytes += output.size;
        file.seek(SeekFrom::Start(0)).map_err(ApiError::internal)?;
        let content = match content::store_reader(store, file, MAX_FILE_BYTES) {
            Ok(content) => content,
            Err(ContentError::TooLarge { limit }) => {
                tracing::warn!(%session, %path, limit, "an output is over the file size limit; not captured");
                continue;
            }
            Err(err) => return Err(files::content_error(err)),
        };
        // The file may have changed back while it was stored.
        if stored.outputs.get(&path).is_some_and(|previous| previous.digest == content.digest) {
            continue;
        }
        let filename = output.components.last().cloned().unwrap_or_default();
        let file = StoredFile {
            id: state.new_id(now, FileId::from_parts),
            mime_type: files::mime_type(&filename, None),
            filename,
            size_bytes: content.size,
            created_at: now,
            expires_at: None,
            downloadable: true,
            scope: Some(session),
            blob: content.blob,
            digest: content.digest,
        };
        files::insert(store, &tenant, &file)?;
        changes.push(WorkspaceChange {
            path: path.clone(),
            change: FileChange::Written { blob: *content.blob.as_bytes(), size: content.size, mode: output.mode },
        });
        captured.insert(path, CapturedOutput { digest: content.digest, file_id: file.id, stamp });
        created.push(file.id);
    }
    // A delete does not wait for a capture: one that took the session away
    // after the check above deleted its scoped files before these were
    // inserted, so they go now. (A delete after this check finds them.)
    if !created.is_empty() {
        match sessions::load(store, &tenant, session) {
            Ok(_) => {}
            Err(err) if err.status == axum::http::StatusCode::NOT_FOUND => {
                files::delete_scoped(store, &tenant, session)?;
                return Ok(Vec::new());
            }
            Err(err) => return Err(err),
        }
    }
    if !changes.is_empty() {
        events::append_system(
            state,
            store,
            session,
            vec![Event::WorkspaceDelta(WorkspaceDelta { tool_use_id: None, changes })],
        )?;
    }
    let gone = walked_all && stored.outputs.keys().any(|path| !present.contains(path));
    if !captured.is_empty() || gone {
        remember(store, &tenant, session, captured, walked_all.then_some(&present))?;
    }
    Ok(created)
}

/// The sandbox path of the output at `components` below the directory.
fn output_path(components: &[String]) -> String {
    format!("{OUTPUTS_DIR}/{}", components.join("/"))
}

/// Records in the session object what each path was captured as, and
/// forgets the paths not `present` (when the capture walked them all).
fn remember(
    store: &SledStore,
    tenant: &Tenant,
    session: SessionId,
    captured: BTreeMap<String, CapturedOutput>,
    present: Option<&BTreeSet<String>>,
) -> Result<(), ApiError> {
    let key = tenant.key(session.to_bytes());
    // Other writers (status, usage) change the object too: retry on a race,
    // from the value the lost swap returns (see `sessions::try_swap`).
    let Some(mut bytes) = store.get_resource(ResourceKind::Session, &key)? else { return Ok(()) };
    for _ in 0..crate::api::events::MAX_APPEND_ATTEMPTS {
        let mut object: StoredSession = from_bytes(&bytes)?;
        object.outputs.extend(captured.clone());
        if let Some(present) = present {
            object.outputs.retain(|path, _| present.contains(path));
        }
        match store.swap_resource(ResourceKind::Session, &key, Some(&bytes), Some(&to_bytes(&object)?))? {
            Ok(()) => return Ok(()),
            Err(Some(current)) => bytes = current,
            // Deleted meanwhile: nothing to record.
            Err(None) => return Ok(()),
        }
    }
    Err(ApiError::conflict(format!("session {session} keeps changing; its captured outputs were not recorded")))
}
