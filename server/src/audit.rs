//! The server's audit key and what it signs: signed heads, session export as a
//! verifiable bundle, and import of a bundle into a store.
//!
//! The ed25519 signing key is a 32-byte seed in its own file (`0600`, by
//! default `<data>/keys/ed25519.key`, created on first use), not in the store:
//! whoever can rewrite the store must not thereby be able to re-sign it. The
//! signed bytes and the bundle format are defined in `logbook_replay::audit`
//! and `logbook_replay::bundle`, so that verification needs no server.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer as _, SigningKey};
use logbook_core::verify::{Anchor, Break, BreakKind, Depth, Report, Verifier};
use logbook_core::{Digest, EventType, Record, Seq, SessionId, Timestamp};
use logbook_replay::audit::{SignedHead, SignedHeadType, to_hex};
use logbook_replay::blobs::{self, Referenced};
use logbook_replay::bundle::{self, BUNDLE_FORMAT, BUNDLE_TYPE, Header};
use logbook_store::{Append, Blobs, MAX_READ_RECORDS, Read, SledStore};
use rand::RngExt as _;

/// The key file under the data directory, unless configured otherwise.
pub const DEFAULT_KEY_FILE: &str = "keys/ed25519.key";

/// Most events one import append carries.
const IMPORT_BATCH_EVENTS: usize = 256;
/// Most canonical bytes one import append carries (a single larger event goes alone).
const IMPORT_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// Errors of the audit key and of bundles.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit key {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error(transparent)]
    Store(#[from] logbook_store::Error),
}

/// The server's signing key.
pub struct AuditKey {
    signing: SigningKey,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the seed.
        f.debug_struct("AuditKey").field("public_key", &self.public_hex()).finish()
    }
}

impl AuditKey {
    /// Loads the key at `path`, creating it (and its directory) if missing.
    ///
    /// A new key appears at `path` only complete and durable: its seed is
    /// written to a file of the caller's own, synced, and hard-linked to
    /// `path` (which fails if another process got there first: then that
    /// key is the one), and the directory is synced. A crash or a power loss
    /// in the middle leaves no key (a later start makes one) rather than a
    /// short file no start could ever read.
    pub fn load_or_create(path: &Path) -> Result<AuditKey, AuditError> {
        let fail = |message: String| AuditError::Key { path: path.to_owned(), message };
        match std::fs::read(path) {
            Ok(bytes) => AuditKey::from_file_bytes(&bytes).map_err(fail),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
                logbook_store::create_dir_durably(dir, 0o700)
                    .map_err(|e| fail(format!("creating its directory: {e}")))?;
                let seed: [u8; 32] = rand::rng().random();
                let mut temp_name = path.file_name().unwrap_or_default().to_owned();
                // Its own name, even against another thread of this process.
                temp_name.push(format!(".creating.{}.{:016x}", std::process::id(), rand::rng().random::<u64>()));
                let temp = path.with_file_name(temp_name);
                let written = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&temp)
                    .and_then(|mut file| file.write_all(&seed).and_then(|()| file.sync_all()));
                let linked = written.and_then(|()| std::fs::hard_link(&temp, path));
                // The temporary name goes whatever happened; a crash may leave one behind, harmless.
                let _ = std::fs::remove_file(&temp);
                let key = match linked {
                    Ok(()) => AuditKey { signing: SigningKey::from_bytes(&seed) },
                    // Another process created it meanwhile: theirs is the key.
                    Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                        let bytes = std::fs::read(path).map_err(|e| fail(format!("reading it: {e}")))?;
                        AuditKey::from_file_bytes(&bytes).map_err(fail)?
                    }
                    Err(err) => return Err(fail(format!("creating it: {err}"))),
                };
                std::fs::File::open(dir)
                    .and_then(|handle| handle.sync_all())
                    .map_err(|e| fail(format!("syncing its directory: {e}")))?;
                Ok(key)
            }
            Err(err) => Err(fail(format!("reading it: {err}"))),
        }
    }

    fn from_file_bytes(bytes: &[u8]) -> Result<AuditKey, String> {
        let seed: [u8; 32] = bytes.try_into().map_err(|_| format!("expected 32 bytes, found {}", bytes.len()))?;
        Ok(AuditKey { signing: SigningKey::from_bytes(&seed) })
    }

    /// A key from a seed (tests).
    pub fn from_seed(seed: [u8; 32]) -> AuditKey {
        AuditKey { signing: SigningKey::from_bytes(&seed) }
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    pub fn public_hex(&self) -> String {
        to_hex(&self.public_key())
    }

    /// Signs the head of a log of `n_records` ending in `hash`.
    pub fn sign(
        &self,
        session: SessionId,
        n_records: u64,
        hash: logbook_core::ChainHash,
        now: Timestamp,
    ) -> SignedHead {
        let mut head = SignedHead {
            kind: SignedHeadType::SignedHead,
            session_id: session,
            n_records,
            seq: n_records.checked_sub(1).map(Seq::new),
            hash,
            signed_at: now,
            algorithm: logbook_replay::audit::ALGORITHM.to_owned(),
            public_key: self.public_hex(),
            signature: String::new(),
        };
        let signature = self.signing.sign(&head.message());
        head.signature = to_hex(&signature.to_bytes());
        head
    }

    /// Fills in a bundle header's `header_signature`.
    pub fn sign_header(&self, header: &mut Header) -> Result<(), serde_json::Error> {
        let message = logbook_replay::bundle::header_message(header)?;
        header.header_signature = to_hex(&self.signing.sign(&message).to_bytes());
        Ok(())
    }
}

/// Every record of `session` from `from` on, in pages.
pub fn for_each_record(
    store: &SledStore,
    session: SessionId,
    from: Seq,
    mut visit: impl FnMut(&Record) -> Result<(), AuditError>,
) -> Result<u64, AuditError> {
    let mut next = from;
    let mut n = 0;
    loop {
        let page = store.read(session, next, MAX_READ_RECORDS)?;
        let Some(last) = page.last() else { return Ok(n) };
        let Some(after) = last.seq().next() else { return Ok(n) };
        for record in &page {
            visit(record)?;
            n += 1;
        }
        next = after;
    }
}

/// The chain report of a session and, when the chain verified, its signed
/// head.
///
/// Records are read through the store, which checks each record's hash and
/// link as it reads and refuses (and quarantines the session at) the first one
/// that fails. Such a refusal ([`logbook_store::Error::Corrupted`], naming the
/// session and seq) is what this report exists to tell, not a failure of the
/// check: it becomes an [`BreakKind::Unreadable`] break at that seq, and the
/// walk stops there (a quarantined session cannot be read past it; `logbook
/// verify --data`, which scans the log itself, reports every break after it).
/// `n_records` is then the number of records the session's head counts, and
/// `n_intact` the records verified before the refused read.
///
/// No head is signed over a chain that failed verification: the second value
/// is `None` whenever the report has a break. Any other store error is an
/// error.
pub fn verify_session(
    store: &SledStore,
    key: &AuditKey,
    session: SessionId,
    now: Timestamp,
) -> Result<(Report, Option<SignedHead>), AuditError> {
    let head = store.head(session)?;
    let mut verifier = Verifier::new(Anchor::GENESIS, Depth::Entries);
    let mut next = Seq::ZERO;
    let refused = loop {
        let page = match store.read(session, next, MAX_READ_RECORDS) {
            Ok(page) => page,
            Err(logbook_store::Error::Corrupted(corruption)) => break Some(corruption),
            Err(other) => return Err(other.into()),
        };
        let Some(after) = page.last().and_then(|last| last.seq().next()) else { break None };
        verifier.push_all(&page);
        next = after;
    };
    let mut report = verifier.finish();
    if let Some(corruption) = refused {
        let reason = format!("the store refuses to read it: {corruption}");
        report.breaks.push(Break { seq: corruption.seq, kind: BreakKind::Unreadable { reason } });
        report.breaks.sort_by_key(|b| b.seq);
        report.n_records = report.n_records.max(head.next.get());
    }
    let signed = report.is_intact().then(|| key.sign(session, head.next.get(), head.hash, now));
    Ok((report, signed))
}

/// Writes `session` as a bundle to `out`: the header with a fresh signed head,
/// then every record, then every blob the records name. `session_object` is
/// the stored session object. Returns the number of records written.
pub fn export(
    store: &SledStore,
    key: &AuditKey,
    session: SessionId,
    session_object: Option<serde_json::Value>,
    now: Timestamp,
    out: &mut dyn std::io::Write,
) -> Result<u64, ExportError> {
    export_with_progress(store, key, session, session_object, now, out, &mut |_| {}).map(|done| done.records)
}

/// What an export has written so far, and the blobs it will write in all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exported {
    pub records: u64,
    pub blobs: u64,
    /// The blobs the bundle carries in all.
    pub n_blobs: u64,
    /// The bytes of the blobs written so far.
    pub blob_bytes: u64,
}

/// [`export`], calling `progress` with what was written so far after each
/// page of records and after each blob (for `logbook export`'s progress
/// lines); returns what it wrote.
pub fn export_with_progress(
    store: &SledStore,
    key: &AuditKey,
    session: SessionId,
    session_object: Option<serde_json::Value>,
    now: Timestamp,
    out: &mut dyn std::io::Write,
    progress: &mut dyn FnMut(Exported),
) -> Result<Exported, ExportError> {
    let plan = plan_export(store, session)?;
    write_export(store, key, &plan, session_object, now, out, progress)
}

/// What a bundle of a session will hold, found before anything is written
/// (the header counts the blobs): the head it ends at and the blobs it
/// carries.
#[derive(Debug, Clone)]
pub struct ExportPlan {
    session: SessionId,
    head: logbook_store::Head,
    /// Each blob once, in the order written, with the first record naming it;
    /// `None` for a bundle of the records alone (format 1).
    carried: Option<Vec<(Digest, Seq)>>,
}

impl ExportPlan {
    /// The blobs the bundle carries.
    pub fn n_blobs(&self) -> u64 {
        self.carried.as_ref().map_or(0, |carried| carried.len() as u64)
    }
}

/// Plans the export of `session` at its current head: the blobs are the
/// contents every `x.workspace_delta` of the log writes (a fork's inherited
/// records included), and for contents over one chunk the manifest and the
/// chunks it lists. A blob the store lacks is [`ExportError::MissingBlob`],
/// so a caller can refuse before the first byte.
pub fn plan_export(store: &SledStore, session: SessionId) -> Result<ExportPlan, ExportError> {
    let head = store.head(session)?;
    let carried = blobs_to_carry(store, session, head.next)?;
    Ok(ExportPlan { session, head, carried: Some(carried) })
}

/// Plans a bundle of `session`'s records alone, in the first bundle format
/// (no blobs): for a session whose files' contents the store lacks (one
/// imported from such a bundle). It verifies, and imports without contents.
pub fn plan_records_only(store: &SledStore, session: SessionId) -> Result<ExportPlan, ExportError> {
    Ok(ExportPlan { session, head: store.head(session)?, carried: None })
}

/// Writes the bundle `plan` describes: the header with a fresh signed head,
/// the records, then the blobs, each read once, checked against its hash
/// and written once.
pub fn write_export(
    store: &SledStore,
    key: &AuditKey,
    plan: &ExportPlan,
    session_object: Option<serde_json::Value>,
    now: Timestamp,
    out: &mut dyn std::io::Write,
    progress: &mut dyn FnMut(Exported),
) -> Result<Exported, ExportError> {
    let ExportPlan { session, head, carried } = plan;
    let (session, head) = (*session, *head);
    let mut done = Exported { n_blobs: plan.n_blobs(), ..Exported::default() };
    let mut header = Header {
        kind: BUNDLE_TYPE.to_owned(),
        format: if carried.is_some() { BUNDLE_FORMAT } else { bundle::BUNDLE_FORMAT_V1 },
        session_id: session,
        anchor: bundle::GENESIS_ANCHOR,
        n_records: head.next.get(),
        n_blobs: carried.as_ref().map(|carried| carried.len() as u64),
        signed_head: key.sign(session, head.next.get(), head.hash, now),
        session: session_object,
        header_signature: String::new(),
    };
    key.sign_header(&mut header).map_err(|e| ExportError::Io(std::io::Error::other(e)))?;
    let text = bundle::render_header(&header).map_err(|e| ExportError::Io(std::io::Error::other(e)))?;
    writeln!(out, "{text}")?;
    let mut next = Seq::ZERO;
    while next < head.next {
        let page = store.read(session, next, MAX_READ_RECORDS)?;
        let Some(last) = page.last() else { break };
        for record in page.iter().filter(|r| r.seq() < head.next) {
            let line = bundle::render_line(record)
                .map_err(|e| ExportError::Render { seq: record.seq(), message: e.to_string() })?;
            writeln!(out, "{line}")?;
            done.records += 1;
        }
        progress(done);
        let Some(after) = last.seq().next() else { break };
        next = after;
    }
    for &(blob, seq) in carried.iter().flatten() {
        let bytes = checked_blob(store, blob, seq)?;
        let line = bundle::render_blob(&bytes).map_err(|e| ExportError::Render { seq, message: e.to_string() })?;
        writeln!(out, "{line}")?;
        done.blobs += 1;
        done.blob_bytes += bytes.len() as u64;
        progress(done);
    }
    Ok(done)
}

/// The blobs a bundle of the log's first `end` records carries, each once,
/// in the order they are written (a manifest's chunks before it), each with
/// the seq of the first record that names it. Reads only the workspace
/// deltas (through the type index) and the manifests.
fn blobs_to_carry(store: &SledStore, session: SessionId, end: Seq) -> Result<Vec<(Digest, Seq)>, ExportError> {
    let mut referenced = Referenced::new();
    let mut next = Seq::ZERO;
    while next < end {
        let page = store.scan_types(session, &[EventType::WorkspaceDelta], next, MAX_READ_RECORDS)?;
        let Some(last) = page.last() else { break };
        for record in page.iter().filter(|r| r.seq() < end) {
            // A redacted delta names no blob any more.
            if record.canonical().is_some() {
                let entry =
                    record.entry().map_err(|e| ExportError::Render { seq: record.seq(), message: e.to_string() })?;
                referenced.note(record.seq(), &entry);
            }
        }
        let Some(after) = last.seq().next() else { break };
        next = after;
    }
    let mut seen = std::collections::HashSet::new();
    let mut carried = Vec::new();
    for (blob, named) in referenced.iter() {
        if blobs::is_manifest_size(named.size) {
            let manifest = checked_blob(store, blob, named.seq)?;
            let chunks = blobs::manifest_chunks(&manifest, named.size)
                .ok_or(ExportError::BadManifest { blob, seq: named.seq })?;
            for chunk in chunks {
                if !store.has_blob(chunk)? {
                    return Err(ExportError::MissingBlob { blob: chunk, seq: named.seq });
                }
                if seen.insert(chunk) {
                    carried.push((chunk, named.seq));
                }
            }
        } else if !store.has_blob(blob)? {
            return Err(ExportError::MissingBlob { blob, seq: named.seq });
        }
        if seen.insert(blob) {
            carried.push((blob, named.seq));
        }
    }
    Ok(carried)
}

/// A blob's bytes, checked against its hash.
fn checked_blob(store: &SledStore, blob: Digest, seq: Seq) -> Result<Vec<u8>, ExportError> {
    let bytes = store.get_blob(blob)?.ok_or(ExportError::MissingBlob { blob, seq })?;
    let actual = logbook_core::chain::digest(&bytes);
    if actual != blob {
        return Err(ExportError::BlobMismatch { blob, actual });
    }
    Ok(bytes)
}

/// Errors while exporting.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] logbook_store::Error),
    #[error("writing the bundle: {0}")]
    Io(#[from] std::io::Error),
    #[error("record {seq} cannot be rendered: {message}")]
    Render { seq: Seq, message: String },
    /// A blob the log names is not in this store (a session imported from a
    /// bundle without blobs, say): a bundle without it would not verify.
    #[error(
        "blob {blob}, which record {seq} names (file contents, or a chunk of them), is not in this store; \
         the session cannot be exported with its files"
    )]
    MissingBlob { blob: Digest, seq: Seq },
    #[error("blob {blob}, which record {seq} names as a chunk manifest, is not one")]
    BadManifest { blob: Digest, seq: Seq },
    #[error("blob {blob} read from the store hashes to {actual}")]
    BlobMismatch { blob: Digest, actual: Digest },
}

/// Errors while importing.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the bundle does not verify: {0}")]
    Invalid(String),
    #[error("session {0} already exists in this store with other records; imports never overwrite")]
    Exists(SessionId),
    #[error("record {0} is redacted; a redacted record cannot be re-appended (its bytes are gone)")]
    Redacted(Seq),
    #[error("the bundle starts at seq {0}; only whole logs (from the genesis) can be imported")]
    NotFromGenesis(Seq),
    /// A record the store would refuse to append, found before anything was
    /// appended: the store is unchanged.
    #[error("record {seq} cannot be imported, nothing was imported: {reason}")]
    OverLimit { seq: Seq, reason: String },
    /// An append failed after `appended` records were in the log. A log
    /// cannot be shortened, so they stay; importing the same bundle again
    /// resumes after them.
    #[error(
        "appending from record {appended}: {source}; records 0..{appended} stay in the log (it cannot be shortened) \
         and importing this bundle again resumes after them"
    )]
    Append {
        appended: Seq,
        #[source]
        source: logbook_store::AppendError,
    },
    #[error(transparent)]
    Store(#[from] logbook_store::Error),
    #[error("after import the head is {found}, not the bundle's {expected}: nothing else may write to it")]
    HeadMismatch { expected: String, found: String },
    /// A carried blob over the store's blob limit, found before anything was
    /// stored or appended: the store is unchanged.
    #[error("blob {blob} is {size} bytes, over the store's limit of {limit}; nothing was imported")]
    BlobOverLimit { blob: Digest, size: u64, limit: usize },
    /// A carried blob whose bytes do not hash to its name, found before
    /// anything was stored or appended.
    #[error("blob {blob} in the bundle hashes to {actual}; nothing was imported")]
    BlobMismatch { blob: Digest, actual: Digest },
    /// Storing a blob failed (before any record was appended); blobs already
    /// stored stay (they are content-addressed), and importing this bundle
    /// again stores the rest.
    #[error("storing blob {blob}: {source}; no record was appended, and importing this bundle again goes on")]
    Blob {
        blob: Digest,
        #[source]
        source: logbook_store::Error,
    },
}

/// What an import has stored so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Imported {
    /// Records in the log.
    pub records: u64,
    /// Blobs the bundle carries that the store holds.
    pub blobs: u64,
    /// Blobs the bundle carries.
    pub n_blobs: u64,
}

/// Checks that the store's append limits (`logbook_core::limits`) accept
/// every record of `parsed`, so that an import the store would refuse part-way
/// is refused before its first append. A bundle verifies with records the
/// store never writes: the decoder's limit (`MAX_RECORD_BYTES`) is above the
/// append limit (`MAX_EVENT_BYTES`).
fn check_append_limits(parsed: &bundle::Parsed) -> Result<(), ImportError> {
    use logbook_core::limits::{MAX_BLOB_BYTES, MAX_EVENT_BYTES, MAX_EVENTS_PER_SESSION};
    if parsed.records.len() as u64 > MAX_EVENTS_PER_SESSION {
        return Err(ImportError::OverLimit {
            seq: Seq::new(MAX_EVENTS_PER_SESSION),
            reason: format!("a session holds at most {MAX_EVENTS_PER_SESSION} events"),
        });
    }
    for record in &parsed.records {
        let Some(canonical) = record.canonical() else { return Err(ImportError::Redacted(record.seq())) };
        if canonical.len() > MAX_EVENT_BYTES {
            return Err(ImportError::OverLimit {
                seq: record.seq(),
                reason: format!(
                    "its event is {} canonical bytes, over the store's limit of {MAX_EVENT_BYTES}",
                    canonical.len()
                ),
            });
        }
    }
    // A bundle line holds a blob larger than the store takes (`MAX_LINE_BYTES`
    // is above it); and `Parsed` may have been built by hand, so each blob is
    // checked against its name again.
    for (blob, bytes) in &parsed.blobs {
        if bytes.len() > MAX_BLOB_BYTES {
            return Err(ImportError::BlobOverLimit { blob: *blob, size: bytes.len() as u64, limit: MAX_BLOB_BYTES });
        }
        let actual = logbook_core::chain::digest(bytes);
        if actual != *blob {
            return Err(ImportError::BlobMismatch { blob: *blob, actual });
        }
    }
    Ok(())
}

/// Stores a verified bundle's blobs, then appends its records to an empty
/// session log in `store`, in batches, and checks that the resulting chain
/// ends in the bundle's head.
///
/// Every record and blob is checked against the store's limits (and every
/// blob against its hash) before anything is stored, so a bundle the store
/// would refuse leaves it unchanged. The blobs go first, each stored once
/// (one the store holds already is skipped), so no record naming a blob is
/// in the log before the blob is. If
/// an append still fails part-way (a full disk, say), the records appended
/// stay (a log cannot be shortened) and the error says so; a later import
/// of the same bundle finds a log that is a prefix of it (the hash of its
/// last record equals the bundle's at that seq, and chain hashes commit to
/// everything before) and resumes after it. A log that is not such a prefix
/// is [`ImportError::Exists`]. The caller makes sure no session object
/// exists for the session (only a log an import left behind is resumed).
///
/// `progress` is called with what is stored after each blob and after each
/// append.
pub fn import_records(
    store: &SledStore,
    parsed: &bundle::Parsed,
    progress: &mut dyn FnMut(Imported),
) -> Result<Imported, ImportError> {
    let session = parsed.header.session_id;
    if parsed.header.anchor.next_seq != Seq::ZERO || parsed.header.anchor.prev != logbook_core::chain::GENESIS {
        return Err(ImportError::NotFromGenesis(parsed.header.anchor.next_seq));
    }
    let existing = store.head(session)?;
    let resume_at = match usize::try_from(existing.next.get()) {
        Ok(0) => 0,
        Ok(n) if parsed.records.get(n - 1).is_some_and(|last| last.hash() == existing.hash) => n,
        Ok(_) | Err(_) => return Err(ImportError::Exists(session)),
    };
    check_append_limits(parsed)?;
    let mut done = Imported { records: existing.next.get(), blobs: 0, n_blobs: parsed.blobs.len() as u64 };
    for (blob, bytes) in &parsed.blobs {
        let stored = |source| ImportError::Blob { blob: *blob, source };
        if !store.has_blob(*blob).map_err(stored)? {
            let put = store.put_blob(bytes).map_err(stored)?;
            if put != *blob {
                return Err(ImportError::BlobMismatch { blob: *blob, actual: put });
            }
        }
        done.blobs += 1;
        progress(done);
    }
    let mut entries = Vec::with_capacity(parsed.records.len() - resume_at);
    for record in &parsed.records[resume_at..] {
        entries.push(record.entry().map_err(|_| ImportError::Redacted(record.seq()))?);
    }
    let mut expected = existing.next;
    let mut start = 0;
    while start < entries.len() {
        // Batches bounded by count and by bytes, well inside the append limits.
        let mut end = start;
        let mut bytes = 0usize;
        while end < entries.len() && end - start < IMPORT_BATCH_EVENTS {
            let size = parsed.records[resume_at + end].canonical().map_or(0, <[u8]>::len);
            if end > start && bytes + size > IMPORT_BATCH_BYTES {
                break;
            }
            bytes += size;
            end += 1;
        }
        let batch = &entries[start..end];
        store.append(session, expected, batch).map_err(|source| ImportError::Append { appended: expected, source })?;
        expected = expected.plus(batch.len() as u64).ok_or_else(|| ImportError::OverLimit {
            seq: expected,
            reason: format!("a session holds at most {} events", logbook_core::limits::MAX_EVENTS_PER_SESSION),
        })?;
        done.records = expected.get();
        progress(done);
        start = end;
    }
    let head = store.head(session)?;
    if head.hash != parsed.header.signed_head.hash {
        return Err(ImportError::HeadMismatch {
            expected: parsed.header.signed_head.hash.to_hex(),
            found: head.hash.to_hex(),
        });
    }
    done.records = head.next.get();
    Ok(done)
}

/// The default key path for a data directory.
pub fn default_key_path(data: &Path) -> PathBuf {
    data.join(DEFAULT_KEY_FILE)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use super::AuditKey;

    /// Goal: creating the key is all or nothing and happens once: what a
    /// crash left under a temporary name is no key and stops nothing, the
    /// key file holds the 32-byte seed, and threads creating it at once all
    /// end with the same key, the one on disk.
    #[test]
    fn the_key_is_created_whole_and_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join("ed25519.key");
        std::fs::create_dir(dir.path().join("keys")).unwrap();
        std::fs::write(path.with_file_name("ed25519.key.creating.1.00"), b"short").unwrap();
        let keys: Vec<String> = std::thread::scope(|scope| {
            let threads: Vec<_> =
                (0..8).map(|_| scope.spawn(|| AuditKey::load_or_create(&path).unwrap().public_hex())).collect();
            threads.into_iter().map(|thread| thread.join().unwrap()).collect()
        });
        let on_disk = AuditKey::load_or_create(&path).unwrap().public_hex();
        assert!(keys.iter().all(|key| *key == on_disk), "{keys:?} against {on_disk}");
        assert_eq!(std::fs::read(&path).unwrap().len(), 32);
    }
}
