//! The blobs a session's log names, and how a large file's blob names its
//! chunks.
//!
//! The log names file contents only by blob hash: every `x.workspace_delta`
//! change `Written { blob, size, .. }` (the workspace, mounted uploads,
//! captured outputs). Contents of at most [`CHUNK_BYTES`] are their own blob;
//! larger contents are named by a *manifest* blob (JSON, [`Manifest`]) that
//! lists their chunks, each a blob too. The size is computed by the server,
//! never taken from a client, so a small file that happens to look like a
//! manifest is never read as one. Bundles (`crate::bundle`) carry these blobs;
//! the server's `resources::content` stores and reads them by the same rule.

use std::collections::HashMap;

use logbook_core::chain::Digest;
use logbook_core::event::{Event, FileChange};
use logbook_core::{Entry, Seq};
use serde::{Deserialize, Serialize};

/// Bytes per chunk: large enough that almost every file is one blob, small
/// enough that an upload holds little memory and a blob write is short.
pub const CHUNK_BYTES: usize = 8 * 1024 * 1024;

const _: () = assert!(CHUNK_BYTES <= logbook_core::limits::MAX_BLOB_BYTES);

/// The manifest of contents of several chunks:
/// `{"chunked_v1": {"size": N, "digest": "<blake3 of all bytes>", "chunks": ["<blob>", ...]}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub chunked_v1: ManifestBody,
}

/// What a manifest says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestBody {
    /// The contents' size in bytes.
    pub size: u64,
    /// blake3 of the whole contents.
    pub digest: Digest,
    /// The chunks' blobs, in order.
    pub chunks: Vec<Digest>,
}

/// Whether contents of `size` bytes are named by a manifest (rather than
/// being their own blob).
pub fn is_manifest_size(size: u64) -> bool {
    size > CHUNK_BYTES as u64
}

/// The chunks a manifest blob of contents of `size` bytes lists, or `None`
/// when `bytes` is not such a manifest (not one, or of another size).
pub fn manifest_chunks(bytes: &[u8], size: u64) -> Option<Vec<Digest>> {
    let manifest: Manifest = serde_json::from_slice(bytes).ok()?;
    (manifest.chunked_v1.size == size).then_some(manifest.chunked_v1.chunks)
}

/// A blob a record names directly: its size as the record states it (which
/// says whether the blob is a manifest) and the first record naming it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Named {
    pub size: u64,
    pub seq: Seq,
}

/// The blobs records name directly, in the order first named (the chunks
/// of manifests are not among them: they are read from the manifests).
#[derive(Debug, Clone, Default)]
pub struct Referenced {
    order: Vec<Digest>,
    named: HashMap<Digest, Named>,
}

impl Referenced {
    pub fn new() -> Referenced {
        Referenced::default()
    }

    /// Notes the blobs `entry` (the record at `seq`) names.
    pub fn note(&mut self, seq: Seq, entry: &Entry) {
        let Event::WorkspaceDelta(delta) = &entry.event else { return };
        for change in &delta.changes {
            match &change.change {
                FileChange::Written { blob, size, .. } => {
                    let blob = Digest::from_bytes(*blob);
                    if let std::collections::hash_map::Entry::Vacant(slot) = self.named.entry(blob) {
                        slot.insert(Named { size: *size, seq });
                        self.order.push(blob);
                    } else if let Some(known) = self.named.get_mut(&blob)
                        && is_manifest_size(*size)
                        && !is_manifest_size(known.size)
                    {
                        // The same bytes named both as contents and as a
                        // manifest: keep the manifest reading (its chunks
                        // are needed too).
                        *known = Named { size: *size, seq };
                    }
                }
                FileChange::Removed | FileChange::Symlink { .. } => {}
            }
        }
    }

    /// The blobs named, in the order first named, with how.
    pub fn iter(&self) -> impl Iterator<Item = (Digest, Named)> + '_ {
        self.order.iter().filter_map(|blob| self.named.get(blob).map(|named| (*blob, *named)))
    }

    /// How `blob` is named, if a record names it.
    pub fn get(&self, blob: &Digest) -> Option<Named> {
        self.named.get(blob).copied()
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

    use logbook_core::event::{WorkspaceChange, WorkspaceDelta};
    use logbook_core::{EventId, Timestamp};

    use super::*;

    fn written(blob: u8, size: u64) -> WorkspaceChange {
        WorkspaceChange {
            path: format!("/workspace/{blob}"),
            change: FileChange::Written { blob: [blob; 32], size, mode: 0o644 },
        }
    }

    #[test]
    fn records_name_blobs_once_in_order_and_a_manifest_reading_wins() {
        let entry = |changes| Entry {
            id: EventId::from_parts(1, 1),
            at: Timestamp::from_unix_micros(0),
            event: Event::WorkspaceDelta(WorkspaceDelta { tool_use_id: None, changes }),
        };
        let mut referenced = Referenced::new();
        referenced.note(Seq::new(3), &entry(vec![written(2, 5), written(1, 7)]));
        referenced.note(Seq::new(4), &entry(vec![written(2, 5), written(1, CHUNK_BYTES as u64 + 1)]));
        let seen: Vec<(Digest, Named)> = referenced.iter().collect();
        assert_eq!(
            seen,
            vec![
                (Digest::from_bytes([2; 32]), Named { size: 5, seq: Seq::new(3) }),
                (Digest::from_bytes([1; 32]), Named { size: CHUNK_BYTES as u64 + 1, seq: Seq::new(4) }),
            ]
        );
        let manifest = Manifest {
            chunked_v1: ManifestBody {
                size: 9,
                digest: Digest::from_bytes([0; 32]),
                chunks: vec![Digest::from_bytes([5; 32])],
            },
        };
        let bytes = serde_json::to_vec(&manifest).unwrap();
        assert_eq!(manifest_chunks(&bytes, 9), Some(vec![Digest::from_bytes([5; 32])]));
        assert_eq!(manifest_chunks(&bytes, 10), None);
        assert_eq!(manifest_chunks(b"plain contents", 9), None);
    }
}
