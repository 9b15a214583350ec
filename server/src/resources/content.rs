//! File contents as content-addressed blobs, chunked.
//!
//! A file is cut into chunks of [`CHUNK_BYTES`], each stored as a blob (keyed
//! by its blake3 hash, so equal chunks, equal files, and a file mounted into
//! many sessions or forks are stored once). A file of at most one chunk is
//! named by that chunk's blob, whose hash is the hash of the whole file. A
//! larger one is named by a *manifest* blob listing its chunks.
//!
//! The rule a reader needs (and that `x.workspace_delta` records follow): a
//! `Written { blob, size, .. }` change with `size <= CHUNK_BYTES` names the
//! contents' own blob; a larger `size` names a manifest. The size is computed
//! by the server, never taken from a client, so a small file that happens to
//! look like a manifest is never read as one. Chunks stay well under the
//! store's `MAX_BLOB_BYTES` (64 MiB), and only one chunk is held in memory at
//! a time while storing or reading.

use std::io::{Read, Write};

use logbook_core::Digest;
use logbook_store::{Blobs, SledStore};
use serde::{Deserialize, Serialize};

/// Bytes per chunk (the rule is `logbook_replay::blobs`', which bundles
/// follow too).
pub use logbook_replay::blobs::CHUNK_BYTES;
use logbook_replay::blobs::{Manifest, ManifestBody};

/// Largest file the server stores (uploads and captured outputs). The hosted
/// Files API takes 500 MB; a self-hosted store keeps every version of every
/// file in sled, so the default is lower. Larger uploads answer 413.
pub const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// Stored contents: the blob that names them, their size and their hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Content {
    /// The contents' own blob (one chunk) or their manifest (more).
    pub blob: Digest,
    pub size: u64,
    /// blake3 of the whole contents (equal to `blob` for one chunk).
    pub digest: Digest,
}

/// Why contents could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("the file is over the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("reading the contents failed: {0}")]
    Source(String),
    #[error("blob {0} is missing from the store")]
    Missing(Digest),
    #[error("the chunk manifest {0} is damaged")]
    BadManifest(Digest),
    #[error(transparent)]
    Store(#[from] logbook_store::Error),
    #[error("writing the contents failed: {0}")]
    Sink(#[from] std::io::Error),
}

/// The blobs that store `bytes` (contents held in memory), in the order to
/// put them: the contents themselves when they fit one chunk, else each chunk
/// and then the manifest. The last one names the contents, exactly as
/// [`store_pieces`] would name the same bytes.
pub fn blobs_of(bytes: &[u8]) -> Result<Vec<std::borrow::Cow<'_, [u8]>>, ContentError> {
    use std::borrow::Cow;
    if bytes.len() <= CHUNK_BYTES {
        return Ok(vec![Cow::Borrowed(bytes)]);
    }
    let mut out: Vec<Cow<'_, [u8]>> = bytes.chunks(CHUNK_BYTES).map(Cow::Borrowed).collect();
    let chunks = out.iter().map(|chunk| Digest::from_bytes(*blake3::hash(chunk).as_bytes())).collect();
    let digest = Digest::from_bytes(*blake3::hash(bytes).as_bytes());
    let manifest = Manifest { chunked_v1: ManifestBody { size: bytes.len() as u64, digest, chunks } };
    let manifest = serde_json::to_vec(&manifest).map_err(|err| ContentError::Source(err.to_string()))?;
    out.push(Cow::Owned(manifest));
    Ok(out)
}

/// Stores contents arriving in pieces (from an upload or a file), at most
/// `limit` bytes. Blocks (it writes blobs): run it off the async threads.
pub fn store_pieces<E: std::fmt::Display>(
    store: &SledStore,
    pieces: impl IntoIterator<Item = Result<Vec<u8>, E>>,
    limit: u64,
) -> Result<Content, ContentError> {
    let mut hasher = blake3::Hasher::new();
    let mut size = 0u64;
    let mut buffer: Vec<u8> = Vec::new();
    let mut chunks: Vec<Digest> = Vec::new();
    for piece in pieces {
        let piece = piece.map_err(|err| ContentError::Source(err.to_string()))?;
        size += piece.len() as u64;
        if size > limit {
            return Err(ContentError::TooLarge { limit });
        }
        hasher.update(&piece);
        let mut rest = piece.as_slice();
        while !rest.is_empty() {
            let take = (CHUNK_BYTES - buffer.len()).min(rest.len());
            buffer.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if buffer.len() == CHUNK_BYTES {
                chunks.push(store.put_blob(&buffer)?);
                buffer.clear();
            }
        }
    }
    if !buffer.is_empty() || chunks.is_empty() {
        chunks.push(store.put_blob(&buffer)?);
    }
    let digest = Digest::from_bytes(*hasher.finalize().as_bytes());
    let blob = match chunks.as_slice() {
        [single] => *single,
        _ => {
            let manifest = Manifest { chunked_v1: ManifestBody { size, digest, chunks } };
            let bytes = serde_json::to_vec(&manifest).map_err(|err| ContentError::Source(err.to_string()))?;
            store.put_blob(&bytes)?
        }
    };
    Ok(Content { blob, size, digest })
}

/// Stores what `reader` yields, in reads of one chunk at most.
pub fn store_reader(store: &SledStore, reader: impl Read, limit: u64) -> Result<Content, ContentError> {
    let mut reader = reader.take(limit + 1);
    let pieces = std::iter::from_fn(move || {
        let mut piece = vec![0u8; 1024 * 1024];
        match read_full(&mut reader, &mut piece) {
            Ok(0) => None,
            Ok(n) => {
                piece.truncate(n);
                Some(Ok(piece))
            }
            Err(err) => Some(Err(err)),
        }
    });
    store_pieces(store, pieces, limit)
}

/// The blake3 hash of what `reader` yields (what [`Content::digest`] would be).
pub fn digest_of(mut reader: impl Read) -> std::io::Result<Digest> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = read_full(&mut reader, &mut buf)?;
        if n == 0 {
            return Ok(Digest::from_bytes(*hasher.finalize().as_bytes()));
        }
        hasher.update(&buf[..n]);
    }
}

/// The chunks of stored contents, in order.
pub fn chunks(store: &(impl Blobs + ?Sized), blob: Digest, size: u64) -> Result<Vec<Digest>, ContentError> {
    if size <= CHUNK_BYTES as u64 {
        return Ok(vec![blob]);
    }
    let bytes = store.get_blob(blob)?.ok_or(ContentError::Missing(blob))?;
    logbook_replay::blobs::manifest_chunks(&bytes, size).ok_or(ContentError::BadManifest(blob))
}

/// One chunk's bytes.
pub fn chunk(store: &(impl Blobs + ?Sized), digest: Digest) -> Result<Vec<u8>, ContentError> {
    store.get_blob(digest)?.ok_or(ContentError::Missing(digest))
}

/// A response body of `chunks`' bytes, each read from the store (on the
/// blocking pool) only when the client has taken the one before: one chunk
/// in memory at a time, whatever the size.
///
/// `held` lives as long as the body (a slot the download counts against,
/// given back when the client has read it all or gone).
pub fn chunk_stream<H: Send + 'static>(
    store: logbook_store::SledStore,
    chunks: Vec<Digest>,
    held: H,
) -> axum::body::Body {
    let start = (store, chunks.into_iter(), held);
    let stream = futures_util::stream::unfold(start, |(store, mut rest, held)| async move {
        let digest = rest.next()?;
        let read = store.clone();
        let bytes = tokio::task::spawn_blocking(move || chunk(&read, digest))
            .await
            .map_err(|err| std::io::Error::other(err.to_string()))
            .and_then(|res| res.map_err(|err| std::io::Error::other(err.to_string())))
            .map(bytes::Bytes::from);
        Some((bytes, (store, rest, held)))
    });
    axum::body::Body::from_stream(stream)
}

/// Writes stored contents to `out`, one chunk in memory at a time.
pub fn copy_to(
    store: &(impl Blobs + ?Sized),
    blob: Digest,
    size: u64,
    out: &mut impl Write,
) -> Result<(), ContentError> {
    let mut written = 0u64;
    for digest in chunks(store, blob, size)? {
        let bytes = chunk(store, digest)?;
        written += bytes.len() as u64;
        out.write_all(&bytes)?;
    }
    if written != size {
        return Err(ContentError::BadManifest(blob));
    }
    Ok(())
}

/// Reads until `buf` is full or the reader ends.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

    use logbook_store::SledOptions;

    use super::*;

    fn store() -> (tempfile::TempDir, SledStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("data"), &SledOptions { cache_capacity_bytes: 8 << 20 }).unwrap();
        (dir, store)
    }

    #[test]
    fn small_contents_are_their_own_blob_and_large_ones_a_manifest() {
        let (_dir, store) = store();
        let small = store_reader(&store, &b"a,b\n1,2\n"[..], MAX_FILE_BYTES).unwrap();
        assert_eq!(small.blob, small.digest);
        assert_eq!(small.blob, logbook_core::chain::digest(b"a,b\n1,2\n"));
        let empty = store_reader(&store, &b""[..], MAX_FILE_BYTES).unwrap();
        assert_eq!((empty.size, store.get_blob(empty.blob).unwrap()), (0, Some(Vec::new())));

        // Two and a half chunks, with a repeated chunk stored once.
        let mut big = vec![7u8; CHUNK_BYTES];
        big.extend(vec![7u8; CHUNK_BYTES]);
        big.extend((0..CHUNK_BYTES / 2).map(|n| (n % 251) as u8));
        let content = store_reader(&store, big.as_slice(), MAX_FILE_BYTES).unwrap();
        assert_eq!(content.size, big.len() as u64);
        assert_eq!(content.digest, logbook_core::chain::digest(&big));
        assert_ne!(content.blob, content.digest);
        let parts = chunks(&store, content.blob, content.size).unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], parts[1]);
        let mut out = Vec::new();
        copy_to(&store, content.blob, content.size, &mut out).unwrap();
        assert!(out == big);
        // The same contents again: the same blob.
        assert_eq!(store_reader(&store, big.as_slice(), MAX_FILE_BYTES).unwrap(), content);
        assert_eq!(digest_of(big.as_slice()).unwrap(), content.digest);
        // In memory: the same blobs, the last naming the contents.
        let blobs = blobs_of(&big).unwrap();
        assert_eq!(blobs.len(), 4);
        assert_eq!(logbook_core::chain::digest(&blobs[3]), content.blob);
        let small_blobs = blobs_of(b"a,b\n1,2\n").unwrap();
        assert_eq!(small_blobs.len(), 1);
        assert_eq!(logbook_core::chain::digest(&small_blobs[0]), small.blob);
        let exact = vec![3u8; CHUNK_BYTES];
        assert_eq!(blobs_of(&exact).unwrap().len(), 1);
    }

    #[test]
    fn limits_and_damage_are_errors() {
        let (_dir, store) = store();
        let err = store_reader(&store, &[1u8; 100][..], 99).unwrap_err();
        assert!(matches!(err, ContentError::TooLarge { limit: 99 }), "{err}");
        // A size that claims a manifest where the blob is plain contents.
        let plain = store.put_blob(b"not a manifest").unwrap();
        let err = chunks(&store, plain, CHUNK_BYTES as u64 + 1).unwrap_err();
        assert!(matches!(err, ContentError::BadManifest(_)), "{err}");
        let missing = Digest::from_bytes([9; 32]);
        assert!(matches!(copy_to(&store, missing, 3, &mut Vec::new()), Err(ContentError::Missing(_))));
    }
}
