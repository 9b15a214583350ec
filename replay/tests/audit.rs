//! Bundles and signed heads under tampering.
//!
//! Goal (issue #6, "Tamper"): every single-byte change, deletion, reordering
//! or truncation of a bundle is detected with the exact first bad seq; a
//! history rebuilt with recomputed hashes is caught by the consistency check
//! against an earlier signed head. Method: a bundle of every sample event
//! type, signed with a test key; each mutation is applied to a copy and
//! checked with `bundle::verify`, expecting the seq of the line the mutation
//! touched (header mutations must be reported as header or signature
//! problems). Exhaustive over bytes at CI size (`LOGBOOK_TAMPER_STRIDE`
//! thins it for quick local runs; default 1 = every byte).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

use ed25519_dalek::{Signer as _, SigningKey};
use logbook_core::chain::{self, ChainHash};
use logbook_core::event::sample_events;
use logbook_core::{Entry, EventId, Record, Seq, SessionId, Timestamp};
use logbook_replay::audit::{Consistency, SignedHead, SignedHeadType, consistency, to_hex};
use logbook_replay::bundle::{self, BUNDLE_FORMAT, BUNDLE_FORMAT_V1, BUNDLE_TYPE, BundleAnchor, Header, Problem};

const T0: u64 = 1_777_636_800_000;

fn session() -> SessionId {
    SessionId::from_parts(T0, 42)
}

fn entries(n: usize) -> Vec<Entry> {
    let events = sample_events();
    (0..n)
        .map(|i| Entry {
            id: EventId::from_parts(T0 + i as u64, i as u128 + 1),
            at: Timestamp::from_unix_micros((T0 as i64 + i as i64) * 1000),
            event: events[i % events.len()].clone(),
        })
        .collect()
}

fn chain(entries: &[Entry]) -> Vec<Record> {
    let mut prev = chain::GENESIS;
    let mut out = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let record = Record::seal(session(), Seq::new(i as u64), prev, entry).unwrap();
        prev = record.hash();
        out.push(record);
    }
    out
}

fn sign(key: &SigningKey, n_records: u64, hash: ChainHash) -> SignedHead {
    let mut head = SignedHead {
        kind: SignedHeadType::SignedHead,
        session_id: session(),
        n_records,
        seq: n_records.checked_sub(1).map(Seq::new),
        hash,
        signed_at: Timestamp::from_unix_micros(T0 as i64 * 1000),
        algorithm: "ed25519".to_owned(),
        public_key: to_hex(&key.verifying_key().to_bytes()),
        signature: String::new(),
    };
    head.signature = to_hex(&key.sign(&head.message()).to_bytes());
    head
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&[9; 32])
}

/// The bundle's lines: header, then one per record.
fn bundle_lines(records: &[Record]) -> Vec<String> {
    let hash = records.last().map_or(chain::GENESIS, Record::hash);
    let header = Header {
        kind: BUNDLE_TYPE.to_owned(),
        // Records only (the sample events name blobs no test holds).
        format: BUNDLE_FORMAT_V1,
        n_blobs: None,
        session_id: session(),
        anchor: BundleAnchor { next_seq: Seq::ZERO, prev: chain::GENESIS },
        n_records: records.len() as u64,
        signed_head: sign(&key(), records.len() as u64, hash),
        session: Some(serde_json::json!({"title": "a session"})),
        header_signature: String::new(),
    };
    let mut header = header;
    header.header_signature = to_hex(&key().sign(&bundle::header_message(&header).unwrap()).to_bytes());
    let mut lines = vec![bundle::render_header(&header).unwrap()];
    lines.extend(records.iter().map(|r| bundle::render_line(r).unwrap()));
    lines
}

fn verify_text(text: &str) -> bundle::BundleReport {
    let pinned = key().verifying_key().to_bytes();
    bundle::verify(text.split('\n'), Some(&pinned))
}

#[test]
fn an_untouched_bundle_verifies_and_parses() {
    let records = chain(&entries(sample_events().len()));
    let text = bundle_lines(&records).join("\n") + "\n";
    let report = verify_text(&text);
    assert!(report.is_valid(), "{report:?}");
    assert_eq!(report.n_lines, records.len() as u64);
    let parsed = bundle::parse(text.split('\n'), None).unwrap();
    assert_eq!(parsed.records, records);
}

#[test]
fn every_single_byte_change_is_detected_at_its_line() {
    // Every sample event type once, so every JSON shape is covered.
    let records = chain(&entries(sample_events().len()));
    let lines = bundle_lines(&records);
    let text = lines.join("\n") + "\n";
    let bytes = text.as_bytes();
    // Which line (0 = header) each byte belongs to; a newline belongs to the line it ends.
    let mut line_of = Vec::with_capacity(bytes.len());
    let mut line = 0usize;
    for &byte in bytes {
        line_of.push(line);
        if byte == b'\n' {
            line += 1;
        }
    }
    let stride: usize = std::env::var("LOGBOOK_TAMPER_STRIDE").ok().and_then(|v| v.parse().ok()).unwrap_or(1).max(1);
    let positions: Vec<usize> = (0..bytes.len()).step_by(stride).collect();
    let n_threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = positions.len().div_ceil(n_threads).max(1);
    let (n_checked, misses) = std::thread::scope(|scope| {
        let workers: Vec<_> = positions
            .chunks(chunk)
            .map(|positions| {
                let line_of = &line_of;
                scope.spawn(move || {
                    let mut n_checked = 0usize;
                    let mut misses = Vec::new();
                    for &position in positions {
                        // Every byte gets a neighbouring value; every fifth also a far one.
                        let flips: &[u8] = if position % 5 == 0 { &[0x01, 0x20] } else { &[0x01] };
                        for &flip in flips {
                            let mut mutated = bytes.to_vec();
                            mutated[position] ^= flip;
                            // Not UTF-8: `logbook verify` reads such a line lossily, so
                            // it cannot render canonically; check through the lossy path.
                            let text = match String::from_utf8(mutated) {
                                Ok(text) => text,
                                Err(err) => String::from_utf8_lossy(err.as_bytes()).into_owned(),
                            };
                            check_mutation(&text, line_of[position], position, &mut misses);
                            n_checked += 1;
                        }
                    }
                    (n_checked, misses)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).fold((0, Vec::new()), |(n, mut all), (k, misses)| {
            all.extend(misses);
            (n + k, all)
        })
    });
    assert!(n_checked > 1000, "only {n_checked} mutations");
    assert!(misses.is_empty(), "{} of {n_checked} mutations misreported:\n{}", misses.len(), misses.join("\n"));
}

fn check_mutation(text: &str, line: usize, position: usize, misses: &mut Vec<String>) {
    let report = verify_text(text);
    if report.is_valid() {
        misses.push(format!("byte {position} (line {line}): not detected"));
        return;
    }
    if line == 0 {
        let header_problem =
            report.problems.iter().any(|p| matches!(p, Problem::Header { .. } | Problem::Signature { .. }));
        if !header_problem {
            misses.push(format!("byte {position} (header): reported as {:?}", report.problems));
        }
        return;
    }
    let expected = Seq::new(line as u64 - 1);
    if report.first_bad_seq() != Some(expected) {
        misses.push(format!(
            "byte {position} (line {line}): first bad seq {:?}, expected {expected}: {:?}",
            report.first_bad_seq(),
            report.problems
        ));
    }
}

#[test]
fn deletions_reorderings_and_truncations_name_the_first_bad_seq() {
    let records = chain(&entries(24));
    let lines = bundle_lines(&records);
    let n = records.len();
    for victim in 0..n {
        // Deleting record `victim`.
        let mut cut = lines.clone();
        cut.remove(victim + 1);
        let report = verify_text(&(cut.join("\n") + "\n"));
        assert_eq!(report.first_bad_seq(), Some(Seq::new(victim as u64)), "delete {victim}: {:?}", report.problems);
        // Swapping it with the next one.
        if victim + 1 < n {
            let mut swapped = lines.clone();
            swapped.swap(victim + 1, victim + 2);
            let report = verify_text(&(swapped.join("\n") + "\n"));
            assert_eq!(report.first_bad_seq(), Some(Seq::new(victim as u64)), "swap {victim}: {:?}", report.problems);
        }
        // Truncating before it, at the line boundary and in the middle of its line.
        let whole = lines[..=victim].join("\n") + "\n";
        let report = verify_text(&whole);
        assert_eq!(report.first_bad_seq(), Some(Seq::new(victim as u64)), "truncate {victim}: {:?}", report.problems);
        let partial = format!("{whole}{}", &lines[victim + 1][..lines[victim + 1].len() / 2]);
        let report = verify_text(&partial);
        assert_eq!(report.first_bad_seq(), Some(Seq::new(victim as u64)), "cut in {victim}: {:?}", report.problems);
        // Duplicating it.
        let mut doubled = lines.clone();
        doubled.insert(victim + 1, lines[victim + 1].clone());
        let report = verify_text(&(doubled.join("\n") + "\n"));
        assert!(!report.is_valid(), "duplicate {victim}");
        assert_eq!(report.first_bad_seq(), Some(Seq::new(victim as u64 + 1)), "duplicate {victim}");
    }
    // Lines appended after the last record.
    let mut extra = lines.clone();
    extra.push(lines[1].clone());
    let report = verify_text(&(extra.join("\n") + "\n"));
    assert_eq!(report.first_bad_seq(), Some(Seq::new(n as u64)));
}

#[test]
fn a_bundle_signed_by_another_key_fails_when_a_key_is_pinned() {
    let records = chain(&entries(5));
    let text = bundle_lines(&records).join("\n");
    let other = SigningKey::from_bytes(&[1; 32]).verifying_key().to_bytes();
    let report = bundle::verify(text.split('\n'), Some(&other));
    assert!(report.problems.iter().any(|p| matches!(p, Problem::Signature { .. })), "{report:?}");
    // Without pinning it verifies: it proves only consistency with its own key.
    assert!(bundle::verify(text.split('\n'), None).is_valid());
}

#[test]
fn a_rewritten_history_with_recomputed_hashes_fails_the_consistency_check() {
    let original = entries(40);
    let records = chain(&original);
    let key = key();
    let earlier = sign(&key, 20, records[19].hash());
    earlier.check(Some(&key.verifying_key().to_bytes())).unwrap();
    // Honest growth: consistent.
    let verdict = consistency(&earlier, records.len() as u64, records[19..].iter());
    assert!(verdict.is_consistent(), "{verdict:?}");

    for target in [0usize, 7, 19] {
        // Rewrite one event before the signed seq and recompute every link.
        let mut forged = original.clone();
        forged[target].at = Timestamp::from_unix_micros(forged[target].at.unix_micros() + 1);
        let rebuilt = chain(&forged);
        // The rebuilt chain verifies on its own...
        let report = logbook_core::verify::verify_chain(
            logbook_core::verify::Anchor::GENESIS,
            rebuilt.iter().map(Ok::<_, &logbook_core::verify::Unreadable>),
        );
        assert!(report.is_intact());
        // ...but not against the earlier head.
        let verdict = consistency(&earlier, rebuilt.len() as u64, rebuilt[19..].iter());
        assert!(matches!(verdict, Consistency::Rewritten { seq, .. } if seq == Seq::new(19)), "{verdict:?}");
    }
    // Truncation below the signed head.
    let verdict = consistency(&earlier, 10, records[19..].iter());
    assert!(matches!(verdict, Consistency::Truncated { .. }), "{verdict:?}");
    // A head whose signature was tampered with.
    let mut tampered = earlier.clone();
    tampered.n_records = 21;
    tampered.seq = Some(Seq::new(20));
    assert!(tampered.check(None).is_err());
}

/// Since today's change, stored JSON may nest up to `MAX_JSON_DEPTH` (256):
/// a model's tool input of 127 levels (what `server/src/model/stream.rs`
/// accepts) wrapped into `x.model_response`'s content seals and decodes. But
/// a bundle line carries the event as JSON inside the line object, and
/// `bundle::parse_line` reads it with serde_json's default recursion limit
/// (128): the export of such a session is refused by its own verifier.
#[test]
fn a_bundle_of_a_record_with_deep_but_storable_json_verifies() {
    use logbook_core::Json;
    use logbook_core::event::{Event, ModelResponse, ToolUseLink};
    let mut input = serde_json::Value::Null;
    for _ in 0..127 {
        input = serde_json::Value::Array(vec![input]);
    }
    let content = serde_json::json!([{"type": "tool_use", "id": "toolu_1", "name": "bash", "input": input}]);
    let entry = Entry {
        id: EventId::from_parts(T0, 1),
        at: Timestamp::from_unix_micros(T0 as i64 * 1000),
        event: Event::ModelResponse(ModelResponse {
            model_request_start_id: EventId::from_parts(T0, 2),
            content: Json::new(&content),
            tool_uses: vec![ToolUseLink { provider_id: "toolu_1".to_owned(), event_id: EventId::from_parts(T0, 3) }],
        }),
    };
    let records = chain(&[entry]);
    assert!(records[0].entry().is_ok(), "the record decodes");
    let text = bundle_lines(&records).join("\n") + "\n";
    let report = verify_text(&text);
    assert!(report.is_valid(), "{report:?}");
}

#[test]
fn a_bundle_whose_session_object_carries_a_deep_tool_schema_verifies() {
    // The header's session object may hold a custom tool's `input_schema`
    // nested past serde_json's default limit of 128 levels (the log stores
    // values up to MAX_JSON_DEPTH); the header must parse like record lines.
    let mut schema = serde_json::json!({"type": "string"});
    // 200 levels of schema: past serde_json's 128, inside MAX_JSON_DEPTH.
    for _ in 0..100 {
        schema = serde_json::json!({"type": "object", "properties": {"x": schema}});
    }
    let records = chain(&entries(3));
    let hash = records.last().map_or(chain::GENESIS, Record::hash);
    let mut header = Header {
        kind: BUNDLE_TYPE.to_owned(),
        // Records only (the sample events name blobs no test holds).
        format: BUNDLE_FORMAT_V1,
        n_blobs: None,
        session_id: session(),
        anchor: BundleAnchor { next_seq: Seq::ZERO, prev: chain::GENESIS },
        n_records: records.len() as u64,
        signed_head: sign(&key(), records.len() as u64, hash),
        session: Some(serde_json::json!({"agent": {"tools": [{"type": "custom", "input_schema": schema}]}})),
        header_signature: String::new(),
    };
    header.header_signature = to_hex(&key().sign(&bundle::header_message(&header).unwrap()).to_bytes());
    let mut lines = vec![bundle::render_header(&header).unwrap()];
    lines.extend(records.iter().map(|r| bundle::render_line(r).unwrap()));
    let text = lines.join("\n") + "\n";
    let report = verify_text(&text);
    assert!(report.is_valid(), "{report:?}");

    // Deeper than the log can hold is still refused, as a header problem.
    let mut too_deep = serde_json::Value::Null;
    for _ in 0..logbook_core::limits::MAX_JSON_DEPTH + 64 {
        too_deep = serde_json::Value::Array(vec![too_deep]);
    }
    header.session = Some(too_deep);
    let line = bundle::render_header(&header).unwrap();
    let report = bundle::verify([line.as_str()], None);
    assert!(report.problems.iter().any(|p| matches!(p, Problem::Header { .. })), "{report:?}");
}

/// A format 2 bundle of a session whose records write a small file and one
/// over a chunk (named by its manifest), with its blobs; and those blobs'
/// bytes in the order carried (small, the two chunks, the manifest).
fn bundle_with_blobs() -> (Vec<String>, Vec<Vec<u8>>) {
    use logbook_core::Event;
    use logbook_core::event::{AgentMessage, ContentBlock, FileChange, WorkspaceChange, WorkspaceDelta};
    use logbook_replay::blobs::{CHUNK_BYTES, Manifest, ManifestBody};

    let small = b"fn main() {}\n".to_vec();
    let big: Vec<u8> = (0..CHUNK_BYTES + 1000).map(|n| (n % 251) as u8).collect();
    let chunks: Vec<Vec<u8>> = big.chunks(CHUNK_BYTES).map(<[u8]>::to_vec).collect();
    let manifest = Manifest {
        chunked_v1: ManifestBody {
            size: big.len() as u64,
            digest: chain::digest(&big),
            chunks: chunks.iter().map(|c| chain::digest(c)).collect(),
        },
    };
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let written = |path: &str, blob: &[u8], size: usize| WorkspaceChange {
        path: path.to_owned(),
        change: FileChange::Written { blob: *chain::digest(blob).as_bytes(), size: size as u64, mode: 0o644 },
    };
    let events = [
        Event::AgentMessage(AgentMessage { content: vec![ContentBlock::Text { text: "writing".to_owned() }] }),
        Event::WorkspaceDelta(WorkspaceDelta {
            tool_use_id: None,
            changes: vec![written("/workspace/main.rs", &small, small.len())],
        }),
        Event::WorkspaceDelta(WorkspaceDelta {
            tool_use_id: None,
            changes: vec![
                written("/workspace/big.bin", &manifest, big.len()),
                written("/workspace/again.rs", &small, small.len()),
            ],
        }),
    ];
    let entries: Vec<Entry> = events
        .into_iter()
        .enumerate()
        .map(|(i, event)| Entry {
            id: EventId::from_parts(T0 + i as u64, i as u128 + 1),
            at: Timestamp::from_unix_micros((T0 as i64 + i as i64) * 1000),
            event,
        })
        .collect();
    let records = chain(&entries);
    let blobs = vec![small, chunks[0].clone(), chunks[1].clone(), manifest];
    let hash = records.last().map_or(chain::GENESIS, Record::hash);
    let mut header = Header {
        kind: BUNDLE_TYPE.to_owned(),
        format: BUNDLE_FORMAT,
        session_id: session(),
        anchor: BundleAnchor { next_seq: Seq::ZERO, prev: chain::GENESIS },
        n_records: records.len() as u64,
        n_blobs: Some(blobs.len() as u64),
        signed_head: sign(&key(), records.len() as u64, hash),
        session: None,
        header_signature: String::new(),
    };
    header.header_signature = to_hex(&key().sign(&bundle::header_message(&header).unwrap()).to_bytes());
    let mut lines = vec![bundle::render_header(&header).unwrap()];
    lines.extend(records.iter().map(|r| bundle::render_line(r).unwrap()));
    lines.extend(blobs.iter().map(|b| bundle::render_blob(b).unwrap()));
    (lines, blobs)
}

fn verify_lines(lines: &[String]) -> bundle::BundleReport {
    let pinned = key().verifying_key().to_bytes();
    bundle::verify(lines.iter().map(String::as_str), Some(&pinned))
}

#[test]
fn a_bundles_blobs_are_checked_and_a_damaged_missing_or_stray_one_is_named() {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;

    let (lines, blobs) = bundle_with_blobs();
    let n_records = 3;
    let report = verify_lines(&lines);
    assert!(report.is_valid(), "{report:?}");
    assert_eq!((report.n_lines, report.n_blobs), (n_records, 4));
    let pinned = key().verifying_key().to_bytes();
    let parsed = bundle::parse(lines.iter().map(String::as_str), Some(&pinned)).unwrap();
    let carried: Vec<&Vec<u8>> = parsed.blobs.iter().map(|(_, bytes)| bytes).collect();
    assert_eq!(carried, blobs.iter().collect::<Vec<_>>());
    let name = |bytes: &[u8]| chain::digest(bytes);
    let blob_line = |k: usize| 1 + n_records as usize + k;
    // Every problem is a blob problem: the records are intact.
    let records_intact = |report: &bundle::BundleReport| {
        report.first_bad_seq().is_none() && report.problems.iter().all(Problem::is_blob) && report.n_intact == n_records
    };

    // One byte of the small blob changed, the line otherwise canonical.
    let mut damaged = blobs[0].clone();
    damaged[0] ^= 1;
    let line = bundle::BlobLine { blob: name(&blobs[0]), size: damaged.len() as u64, data: BASE64.encode(&damaged) };
    let mut tampered = lines.clone();
    tampered[blob_line(0)] = serde_json::to_string(&line).unwrap();
    let report = verify_lines(&tampered);
    assert!(!report.is_valid() && records_intact(&report), "{report:?}");
    assert!(
        report.problems.iter().any(|p| matches!(p, Problem::Blob { index: 0, blob: Some(b), reason }
            if *b == name(&blobs[0]) && reason.contains("hash"))),
        "{report:?}"
    );
    assert!(bundle::parse(tampered.iter().map(String::as_str), Some(&pinned)).is_err());

    // A missing content blob, and a missing chunk of the manifest.
    for k in [0, 2] {
        let mut missing = lines.clone();
        missing.remove(blob_line(k));
        let report = verify_lines(&missing);
        assert!(!report.is_valid() && records_intact(&report), "{report:?}");
        assert!(
            report.problems.iter().any(|p| matches!(p, Problem::MissingBlob { blob, .. } if *blob == name(&blobs[k]))),
            "blob {k}: {report:?}"
        );
    }

    // A blob named by nothing, in place of the small one.
    let mut stray = lines.clone();
    stray[blob_line(0)] = bundle::render_blob(b"not in the log").unwrap();
    let report = verify_lines(&stray);
    assert!(
        report
            .problems
            .iter()
            .any(|p| matches!(p, Problem::Blob { blob: Some(b), .. } if *b == name(b"not in the log"))),
        "{report:?}"
    );
    // Carried twice.
    let mut twice = lines.clone();
    twice.push(lines[blob_line(0)].clone());
    let report = verify_lines(&twice);
    assert!(report.problems.iter().any(|p| matches!(p, Problem::Blob { index: 4, .. })), "{report:?}");
}

#[test]
fn a_format_1_bundle_with_blob_lines_or_a_format_2_one_without_its_count_is_refused() {
    let (lines, _) = bundle_with_blobs();
    let header: Header = serde_json::from_str(&lines[0]).unwrap();
    for (format, n_blobs) in [(BUNDLE_FORMAT_V1, Some(4)), (BUNDLE_FORMAT, None), (3, Some(4))] {
        let mut changed = Header { format, n_blobs, ..header.clone() };
        changed.header_signature = to_hex(&key().sign(&bundle::header_message(&changed).unwrap()).to_bytes());
        let mut edited = lines.clone();
        edited[0] = bundle::render_header(&changed).unwrap();
        let report = verify_lines(&edited);
        assert!(report.problems.iter().any(|p| matches!(p, Problem::Header { .. })), "{format}: {report:?}");
    }
}
