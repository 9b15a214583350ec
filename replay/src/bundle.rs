//! Session bundles: a session's whole log as self-contained JSON Lines that
//! anyone can verify offline (`logbook verify BUNDLE`) and load into another
//! server (`logbook import`), chain intact.
//!
//! Line 1 is the [`Header`]: the format, the session, the chain's anchor (the
//! genesis, or for a fork the parent's hash it continues from), the record
//! count and the server's [`SignedHead`]; optionally the session object, which
//! the chain does not cover. Then one [`Line`] per record in seq order: `seq`,
//! `prev`, `hash`, the canonical bytes in base64 (or, for a redacted record,
//! only its digest) and the event's JSON. Every line is written in one
//! canonical form ([`render_line`]): the verifier re-renders each record from
//! its canonical bytes and requires the line to be byte-identical, so a change
//! anywhere in a line (the event JSON included) is caught at that line's seq.
//!
//! Since format 2 the records are followed by one [`BlobLine`] per blob the
//! log names (`crate::blobs`: the contents `x.workspace_delta` records write,
//! manifests and their chunks), each once; the header counts them
//! (`n_blobs`). Blobs are content-addressed, so the records (covered by the
//! chain and the signed head) and the carried manifests say exactly which
//! blobs must be there: the verifier checks each against its hash and
//! reports one that is damaged, missing, carried twice or named by nothing.
//! Format 1 bundles (no blobs) are still read. See `docs/extensions.md` for
//! the layout.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use logbook_core::chain::{ChainHash, Digest};
use logbook_core::record::Body;
use logbook_core::verify::{Anchor, Depth, Verifier};
use logbook_core::{Record, Seq, SessionId};
use serde::{Deserialize, Serialize};

use crate::audit::{HeadError, SignedHead};
use crate::blobs::{self, Referenced};

/// The bundle format this module writes (and reads): records, then blobs.
pub const BUNDLE_FORMAT: u32 = 2;
/// The first bundle format, records only (no `n_blobs`, no blob lines):
/// still read and verified.
pub const BUNDLE_FORMAT_V1: u32 = 1;
/// The header's `type`.
pub const BUNDLE_TYPE: &str = "logbook_bundle";
/// Longest line accepted when reading a bundle (a record's canonical bytes are
/// bounded by `MAX_EVENT_BYTES`; base64 and the JSON twin make a line at most
/// about three times that).
pub const MAX_LINE_BYTES: usize = 3 * logbook_core::limits::MAX_EVENT_BYTES + 64 * 1024;

// A blob line (base64: 4 bytes per 3) of the largest blob the store holds fits a line.
const _: () = assert!(logbook_core::limits::MAX_BLOB_BYTES / 3 * 4 + 4 + 1024 <= MAX_LINE_BYTES);

/// The first line of a bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    #[serde(rename = "type")]
    pub kind: String,
    pub format: u32,
    pub session_id: SessionId,
    /// The seq of the first record and the hash before it.
    pub anchor: BundleAnchor,
    pub n_records: u64,
    /// The blob lines after the records (format 2; absent in format 1,
    /// whose headers render as they always did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_blobs: Option<u64>,
    pub signed_head: SignedHead,
    /// The session object as the exporting server stored it (not covered by
    /// the chain; `logbook import` uses it).
    #[serde(default)]
    pub session: Option<serde_json::Value>,
    /// The signed head's key's signature over this header with this field
    /// empty ([`header_message`]): the anchor, the count and the session
    /// object cannot change unnoticed either.
    pub header_signature: String,
}

/// Where every bundle's chain starts: bundles hold a session's whole log.
pub const GENESIS_ANCHOR: BundleAnchor = BundleAnchor { next_seq: Seq::ZERO, prev: logbook_core::chain::GENESIS };

/// Domain separation for the header signature.
pub const HEADER_CONTEXT: &[u8] = b"logbook bundle header v1\0";

/// The bytes the header signature covers: the context string, then the
/// header's canonical JSON with `header_signature` empty.
pub fn header_message(header: &Header) -> Result<Vec<u8>, serde_json::Error> {
    let unsigned = Header { header_signature: String::new(), ..header.clone() };
    let mut message = HEADER_CONTEXT.to_vec();
    message.extend_from_slice(render_header(&unsigned)?.as_bytes());
    Ok(message)
}

/// Where a bundle's chain starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleAnchor {
    pub next_seq: Seq,
    pub prev: ChainHash,
}

impl From<BundleAnchor> for Anchor {
    fn from(anchor: BundleAnchor) -> Anchor {
        Anchor { next_seq: anchor.next_seq, prev: anchor.prev }
    }
}

/// One record of a bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    pub seq: Seq,
    pub prev: ChainHash,
    pub hash: ChainHash,
    /// The canonical bytes, base64 (standard alphabet, padded); `None` when
    /// redacted.
    pub canonical: Option<String>,
    /// The payload digest of a redacted record (hex); `None` otherwise.
    pub digest: Option<String>,
    /// The event as the API shows it (id, type, fields, processed_at); `None`
    /// when redacted.
    pub event: Option<serde_json::Value>,
}

/// One blob of a bundle (format 2), after the records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobLine {
    /// The blake3 hash of the bytes (hex): the blob's name.
    pub blob: Digest,
    /// The bytes' length.
    pub size: u64,
    /// The bytes, base64 (standard alphabet, padded).
    pub data: String,
}

/// The one canonical line for the blob holding `bytes`.
pub fn render_blob(bytes: &[u8]) -> Result<String, RenderError> {
    let line =
        BlobLine { blob: logbook_core::chain::digest(bytes), size: bytes.len() as u64, data: BASE64.encode(bytes) };
    serde_json::to_string(&line).map_err(|e| RenderError(e.to_string()))
}

/// The header line for a session's records.
pub fn render_header(header: &Header) -> Result<String, serde_json::Error> {
    serde_json::to_string(header)
}

/// The one canonical line for `record`.
pub fn render_line(record: &Record) -> Result<String, RenderError> {
    let line = match record.body() {
        Body::Canonical(bytes) => {
            let entry = record.entry().map_err(|e| RenderError(e.to_string()))?;
            let event = serde_json::to_value(&entry).map_err(|e| RenderError(e.to_string()))?;
            Line {
                seq: record.seq(),
                prev: record.prev(),
                hash: record.hash(),
                canonical: Some(BASE64.encode(bytes)),
                digest: None,
                event: Some(event),
            }
        }
        Body::Redacted { digest } => Line {
            seq: record.seq(),
            prev: record.prev(),
            hash: record.hash(),
            canonical: None,
            digest: Some(digest.to_hex()),
            event: None,
        },
    };
    serde_json::to_string(&line).map_err(|e| RenderError(e.to_string()))
}

/// A record that cannot be rendered (its canonical bytes do not decode).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot render the record as a bundle line: {0}")]
pub struct RenderError(pub String);

/// What is wrong with a bundle, where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// The header is missing or not a header of a known format.
    Header { reason: String },
    /// The signed head does not check out (signature, key, or shape).
    Signature { reason: String },
    /// The line expected to hold this seq is not a valid record line.
    Line { seq: Seq, reason: String },
    /// A chain link fails at this seq.
    Chain { seq: Seq, reason: String },
    /// The bundle ends before the header's record count.
    Truncated { seq: Seq },
    /// Lines after the last record the header counts.
    Trailing { seq: Seq },
    /// The signed head names another hash than the bundle's last record.
    HeadMismatch { reason: String },
    /// The blob line at `index` (0 for the first after the records) is
    /// damaged, does not hash to the blob it names, is carried twice, is
    /// named by nothing in the log, or is not as many as the header counts.
    Blob { index: u64, blob: Option<Digest>, reason: String },
    /// A blob the record at `seq` names (directly, or as a chunk of the
    /// manifest it names) that the bundle does not carry.
    MissingBlob { blob: Digest, seq: Seq, reason: String },
}

impl Problem {
    /// The seq the problem is at, if it is about a record.
    pub fn seq(&self) -> Option<Seq> {
        match self {
            Problem::Line { seq, .. }
            | Problem::Chain { seq, .. }
            | Problem::Truncated { seq }
            | Problem::Trailing { seq } => Some(*seq),
            Problem::Header { .. }
            | Problem::Signature { .. }
            | Problem::HeadMismatch { .. }
            | Problem::Blob { .. }
            | Problem::MissingBlob { .. } => None,
        }
    }

    /// Whether the problem is about the carried blobs (the records may be
    /// intact).
    pub fn is_blob(&self) -> bool {
        match self {
            Problem::Blob { .. } | Problem::MissingBlob { .. } => true,
            Problem::Header { .. }
            | Problem::Signature { .. }
            | Problem::Line { .. }
            | Problem::Chain { .. }
            | Problem::Truncated { .. }
            | Problem::Trailing { .. }
            | Problem::HeadMismatch { .. } => false,
        }
    }

    /// Report order: header and signature problems first, then by seq, then
    /// the blobs'.
    fn order(&self) -> u64 {
        match self.seq() {
            Some(seq) => seq.get().saturating_add(1),
            None if self.is_blob() => u64::MAX,
            None => 0,
        }
    }
}

/// The outcome of checking a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BundleReport {
    pub session_id: Option<SessionId>,
    /// Record lines read.
    pub n_lines: u64,
    /// Records from the anchor before the first problem.
    pub n_intact: u64,
    /// Blob lines read (format 2).
    pub n_blobs: u64,
    pub problems: Vec<Problem>,
}

impl BundleReport {
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty()
    }

    /// The first seq with a problem; for a damaged header or signature, the
    /// anchor's seq (nothing can be trusted from the start).
    pub fn first_bad_seq(&self) -> Option<Seq> {
        self.problems.iter().filter_map(Problem::seq).min()
    }
}

/// A verified bundle's parts, for import.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub header: Header,
    pub records: Vec<Record>,
    /// The carried blobs, each once, in the bundle's order, checked against
    /// their names (empty for format 1).
    pub blobs: Vec<(Digest, Vec<u8>)>,
}

/// Checks a bundle given as lines (without their newlines), with an optional
/// pinned signing key. Reports every problem, never stops at the first, and
/// never panics.
pub fn verify<'a>(lines: impl IntoIterator<Item = &'a str>, expected_key: Option<&[u8; 32]>) -> BundleReport {
    check(lines, expected_key, false).0
}

/// Verifies a bundle and returns its records if it is valid.
pub fn parse<'a>(
    lines: impl IntoIterator<Item = &'a str>,
    expected_key: Option<&[u8; 32]>,
) -> Result<Parsed, BundleReport> {
    let (report, parsed) = check(lines, expected_key, true);
    match parsed {
        Some(parsed) if report.is_valid() => Ok(parsed),
        Some(_) | None => Err(report),
    }
}

fn check<'a>(
    lines: impl IntoIterator<Item = &'a str>,
    expected_key: Option<&[u8; 32]>,
    keep: bool,
) -> (BundleReport, Option<Parsed>) {
    let mut lines = lines.into_iter();
    let mut report = BundleReport { session_id: None, n_lines: 0, n_intact: 0, n_blobs: 0, problems: Vec::new() };
    let header = match lines.next().map(parse_header) {
        Some(Ok(header)) => header,
        Some(Err(reason)) => {
            report.problems.push(Problem::Header { reason });
            return (report, None);
        }
        None => {
            report.problems.push(Problem::Header { reason: "the bundle is empty".to_owned() });
            return (report, None);
        }
    };
    report.session_id = Some(header.session_id);
    if let Err(err) = check_head(&header, expected_key) {
        report.problems.push(Problem::Signature { reason: err.to_string() });
    }
    if header.anchor != GENESIS_ANCHOR {
        // Bundles always hold the whole log (a fork's inherited prefix too).
        report
            .problems
            .push(Problem::Header { reason: "the chain does not start at seq 0 and the genesis".to_owned() });
    }
    if header.n_records != header.signed_head.n_records {
        report.problems.push(Problem::Header {
            reason: format!(
                "the header counts {} records, its signed head {}",
                header.n_records, header.signed_head.n_records
            ),
        });
    }
    // The signed count is the one to trust (the signature covers it).
    let anchor = Anchor::GENESIS;
    let mut verifier = Verifier::new(anchor, Depth::Entries);
    let mut records = Vec::new();
    let mut expected_seq = 0u64;
    let end = header.signed_head.n_records;
    let mut last_hash = anchor.prev;
    // Format 2: the blobs the records name, then the blobs carried.
    let mut referenced = header.n_blobs.map(|_| Referenced::new());
    let mut carried = CarriedBlobs::default();
    let mut in_blobs = false;
    for text in lines {
        if text.is_empty() {
            continue;
        }
        let seq = Seq::new(expected_seq);
        if let Some(referenced) = &referenced
            && (in_blobs || expected_seq >= end || text.starts_with(BLOB_LINE_START))
        {
            // Blobs starting where records still belong: the records are
            // truncated (reported below).
            in_blobs = true;
            carried.take(&mut report, referenced, text, keep);
            continue;
        }
        report.n_lines += 1;
        if expected_seq >= end {
            report.problems.push(Problem::Trailing { seq });
            break;
        }
        match parse_line(header.session_id, text) {
            Ok(record) if record.seq() != seq => {
                // A line out of place (deleted, reordered, duplicated, or its
                // seq edited) is reported at the position it occupies.
                let reason = format!("the line holds seq {} where seq {seq} belongs", record.seq());
                report.problems.push(Problem::Line { seq, reason });
                verifier.push(Err(&logbook_core::verify::Unreadable { seq, reason: "line out of place".to_owned() }));
            }
            Ok(record) => {
                verifier.push(Ok(&record));
                last_hash = record.hash();
                if let Some(referenced) = &mut referenced
                    && let Ok(entry) = record.entry()
                {
                    referenced.note(seq, &entry);
                }
                if keep {
                    records.push(record);
                }
            }
            Err(reason) => {
                report.problems.push(Problem::Line { seq, reason });
                verifier.push(Err(&logbook_core::verify::Unreadable { seq, reason: "damaged line".to_owned() }));
            }
        }
        expected_seq += 1;
    }
    let chain_report = verifier.finish();
    for broken in chain_report.breaks {
        let already = report.problems.iter().any(|p| p.seq() == Some(broken.seq));
        if !already {
            report.problems.push(Problem::Chain { seq: broken.seq, reason: format!("{:?}", broken.kind) });
        }
    }
    if expected_seq < end {
        report.problems.push(Problem::Truncated { seq: Seq::new(expected_seq) });
    }
    if expected_seq == end && header.signed_head.hash != last_hash {
        report.problems.push(Problem::HeadMismatch {
            reason: format!("the signed head ends in {}, the bundle's records in {last_hash}", header.signed_head.hash),
        });
    }
    if let (Some(referenced), Some(n_blobs)) = (&referenced, header.n_blobs) {
        carried.finish(&mut report, referenced, n_blobs);
    }
    report.problems.sort_by_key(Problem::order);
    report.n_intact = match report.first_bad_seq() {
        Some(seq) => seq.get().saturating_sub(anchor.next_seq.get()),
        None if report.problems.iter().all(Problem::is_blob) => report.n_lines,
        None => 0,
    };
    let parsed = keep.then_some(Parsed { header, records, blobs: carried.kept });
    (report, parsed)
}

/// How every blob line starts (its canonical rendering's first field).
const BLOB_LINE_START: &str = "{\"blob\":";

/// Whether `text` looks like a blob line (for counting; the check is
/// [`verify`]'s).
pub fn is_blob_line(text: &str) -> bool {
    text.starts_with(BLOB_LINE_START)
}

/// The blob lines of a format 2 bundle, as they are read.
#[derive(Debug, Default)]
struct CarriedBlobs {
    /// Blob lines read.
    n_lines: u64,
    /// Each blob carried, with the index of its line.
    seen: std::collections::HashMap<Digest, u64>,
    /// The chunks the carried manifests list: chunk, manifest, and the seq
    /// of the record naming the manifest.
    chunks: Vec<(Digest, Digest, Seq)>,
    /// The blobs themselves, when kept for import.
    kept: Vec<(Digest, Vec<u8>)>,
}

impl CarriedBlobs {
    /// Checks one blob line: canonical, hashing to its name, carried once;
    /// a manifest's chunks are noted for [`CarriedBlobs::finish`].
    fn take(&mut self, report: &mut BundleReport, referenced: &Referenced, text: &str, keep: bool) {
        let index = self.n_lines;
        self.n_lines += 1;
        report.n_blobs = self.n_lines;
        let mut problem = |blob: Option<Digest>, reason: String| {
            report.problems.push(Problem::Blob { index, blob, reason });
        };
        let (blob, bytes) = match parse_blob(text) {
            Ok(parsed) => parsed,
            Err((blob, reason)) => return problem(blob, reason),
        };
        if let Some(first) = self.seen.get(&blob) {
            return problem(Some(blob), format!("carried twice (first at blob line {first})"));
        }
        self.seen.insert(blob, index);
        if let Some(named) = referenced.get(&blob)
            && blobs::is_manifest_size(named.size)
        {
            match blobs::manifest_chunks(&bytes, named.size) {
                Some(chunks) => self.chunks.extend(chunks.into_iter().map(|chunk| (chunk, blob, named.seq))),
                None => problem(
                    Some(blob),
                    format!(
                        "record {} names it as the manifest of {} bytes of contents, and it is not one",
                        named.seq, named.size
                    ),
                ),
            }
        }
        if keep {
            self.kept.push((blob, bytes));
        }
    }

    /// After the last line: every blob the log names is carried, every
    /// carried blob is named, and the lines are as many as the header says.
    fn finish(&self, report: &mut BundleReport, referenced: &Referenced, n_blobs: u64) {
        for (blob, named) in referenced.iter() {
            if !self.seen.contains_key(&blob) {
                let reason = format!("record {} writes contents of {} bytes with it", named.seq, named.size);
                report.problems.push(Problem::MissingBlob { blob, seq: named.seq, reason });
            }
        }
        let mut chunks = std::collections::HashSet::new();
        for (chunk, manifest, seq) in &self.chunks {
            if chunks.insert(*chunk) && !self.seen.contains_key(chunk) {
                let reason = format!("a chunk of the manifest {manifest} that record {seq} names");
                report.problems.push(Problem::MissingBlob { blob: *chunk, seq: *seq, reason });
            }
        }
        let mut unnamed: Vec<(u64, Digest)> = self
            .seen
            .iter()
            .filter(|(blob, _)| referenced.get(blob).is_none() && !chunks.contains(*blob))
            .map(|(blob, index)| (*index, *blob))
            .collect();
        unnamed.sort();
        for (index, blob) in unnamed {
            let reason = "named by no record of the bundle (nor by a manifest it carries)".to_owned();
            report.problems.push(Problem::Blob { index, blob: Some(blob), reason });
        }
        if self.n_lines != n_blobs {
            report.problems.push(Problem::Blob {
                index: self.n_lines.min(n_blobs),
                blob: None,
                reason: format!("the header counts {n_blobs} blobs, the bundle carries {}", self.n_lines),
            });
        }
    }
}

/// Parses one blob line, requires it in canonical form and its bytes to
/// hash to its name; a failure names the blob when the line does.
fn parse_blob(text: &str) -> Result<(Digest, Vec<u8>), (Option<Digest>, String)> {
    if text.len() > MAX_LINE_BYTES {
        return Err((None, format!("the line is longer than {MAX_LINE_BYTES} bytes")));
    }
    let line: BlobLine = serde_json::from_str(text).map_err(|e| (None, format!("not a blob line: {e}")))?;
    let named = Some(line.blob);
    let bytes = BASE64.decode(&line.data).map_err(|e| (named, format!("its data is not base64: {e}")))?;
    if bytes.len() as u64 != line.size {
        return Err((named, format!("the line says {} bytes and carries {}", line.size, bytes.len())));
    }
    let actual = logbook_core::chain::digest(&bytes);
    if actual != line.blob {
        return Err((named, format!("its bytes hash to {actual}, not to the blob's name")));
    }
    let rendered = render_blob(&bytes).map_err(|e| (named, e.to_string()))?;
    if rendered != text {
        return Err((named, "the line differs from its blob's canonical rendering (it was edited)".to_owned()));
    }
    Ok((line.blob, bytes))
}

/// Levels of the header's own structure above the JSON values its session
/// object carries (header, session, agent, tools, tool, `input_schema`, with
/// room to spare).
const HEADER_OWN_DEPTH: usize = 16;

/// Parses the header line and requires it to be in canonical form. The
/// session object may carry values (a custom tool's `input_schema`) as deep
/// as the log stores them, deeper than serde_json's default limit of 128, so
/// the header is read the way record lines are: bounded by a depth scan,
/// then without serde_json's limit.
fn parse_header(text: &str) -> Result<Header, String> {
    let header: Header = logbook_core::json::from_slice_deep(text.as_bytes(), HEADER_OWN_DEPTH)
        .map_err(|e| format!("not a bundle header: {e}"))?;
    if header.kind != BUNDLE_TYPE {
        return Err(format!("type is {:?}, not {BUNDLE_TYPE:?}", header.kind));
    }
    match (header.format, header.n_blobs) {
        (BUNDLE_FORMAT_V1, None) | (BUNDLE_FORMAT, Some(_)) => {}
        (BUNDLE_FORMAT_V1, Some(_)) => return Err("a format 1 header counts no blobs (n_blobs)".to_owned()),
        (BUNDLE_FORMAT, None) => return Err("a format 2 header counts its blobs (n_blobs)".to_owned()),
        (other, _) => {
            return Err(format!("format {other} is not a supported format ({BUNDLE_FORMAT_V1} or {BUNDLE_FORMAT})"));
        }
    }
    let canonical = render_header(&header).map_err(|e| e.to_string())?;
    if canonical != text {
        return Err("the header is not in canonical form (it was edited)".to_owned());
    }
    Ok(header)
}

fn check_head(header: &Header, expected_key: Option<&[u8; 32]>) -> Result<(), HeadError> {
    if header.signed_head.session_id != header.session_id {
        return Err(HeadError::Shape);
    }
    header.signed_head.check(expected_key)?;
    let message = header_message(header).map_err(|_| HeadError::Shape)?;
    crate::audit::check_signature(&header.signed_head.public_key, &header.header_signature, &message)
}

/// Levels of a record line's own structure above the event's values.
const LINE_OWN_DEPTH: usize = 16;

/// Parses one record line and requires it to be in canonical form.
fn parse_line(session: SessionId, text: &str) -> Result<Record, String> {
    if text.len() > MAX_LINE_BYTES {
        return Err(format!("the line is longer than {MAX_LINE_BYTES} bytes"));
    }
    // A line carries an event as deep as the log stores it.
    let line: Line = logbook_core::json::from_slice_deep(text.as_bytes(), LINE_OWN_DEPTH)
        .map_err(|e| format!("not a record line: {e}"))?;
    let body = match (&line.canonical, &line.digest) {
        (Some(encoded), None) => {
            let bytes = BASE64.decode(encoded).map_err(|e| format!("canonical bytes are not base64: {e}"))?;
            Body::Canonical(bytes)
        }
        (None, Some(hex)) => {
            let digest: Digest = hex.parse().map_err(|e| format!("digest: {e}"))?;
            Body::Redacted { digest }
        }
        (Some(_), Some(_)) | (None, None) => {
            return Err("a line carries either canonical bytes or a digest".to_owned());
        }
    };
    let record = Record::from_parts(session, line.seq, line.prev, line.hash, body);
    let rendered = render_line(&record).map_err(|e| e.to_string())?;
    if rendered != text {
        return Err("the line differs from its record's canonical rendering (it was edited)".to_owned());
    }
    Ok(record)
}
