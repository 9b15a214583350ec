//! The audit and offline surface found wanting by the audit review: the
//! `/x/v1` verify endpoint, bundles exported by one server and imported into
//! another (`logbook_server::offline::import`), and slices. Each test asserts
//! what `docs/extensions.md` promises and fails until the server does it.

use crate::harness::{Harness, events_body, id, user_message};

fn agent_message(text: &str) -> logbook_core::Event {
    use logbook_core::event::{AgentMessage, ContentBlock};
    logbook_core::Event::AgentMessage(AgentMessage { content: vec![ContentBlock::Text { text: text.to_owned() }] })
}

#[tokio::test]
async fn the_verify_endpoint_reports_a_tampered_record_as_a_break_not_a_500() {
    // Goal: `GET /x/v1/sessions/{id}/verify` returns "the chain's
    // verification report (records, intact prefix, every break with its seq
    // and kind)" (docs/extensions.md, Verifiable audit). `audit::verify_session`
    // reads the log through `Read::read`, which refuses a record whose bytes
    // fail their hash; the handler turns that into a bare 500 `api_error`,
    // so the one endpoint meant to report tampering can never say where the
    // log was changed. `logbook verify --data` (which walks the log) names the
    // seq; the endpoint must too.
    // Method: 200 small events in a session; one byte of record 5's body
    // flipped in the write-ahead log; the tail cache emptied so reads go to
    // the log; then verify.
    use logbook_core::{Event, Seq, SessionId};
    use logbook_store::engine::Engine as _;
    use logbook_store::wal;

    let h = Harness::new();
    let session = h.quick_session().await;
    let events: Vec<Event> = (0..200).map(|k| agent_message(&format!("message number {k}"))).collect();
    h.inject(&session, events);
    let sid: SessionId = id(&session).parse().unwrap();
    let store = h.state.store();
    let intact = h.get(&format!("/x/v1/sessions/{sid}/verify")).await.ok();
    assert_eq!(intact["valid"], true, "{intact}");

    let location = store.locate(sid, Seq::new(5)).unwrap().expect("record 5 is stored by the session");
    let segment = store.engine().log_dir().open_segment(wal::segment_of(location.lsn), false).unwrap();
    let at = wal::offset_of(location.lsn) + wal::RECORD_HEADER_BYTES as u64 + 3;
    let mut byte = [0u8];
    segment.read_exact_at(&mut byte, at).unwrap();
    segment.write_at(&[byte[0] ^ 0x01], at).unwrap();
    store.clear_caches();

    let resp = h.get(&format!("/x/v1/sessions/{sid}/verify")).await;
    assert_eq!(
        resp.status.as_u16(),
        200,
        "verify of a session with one tampered record must answer its report (valid: false, a break at seq 5), \
         not {}: {}",
        resp.status,
        resp.text()
    );
    let report = resp.json();
    assert_eq!(report["valid"], false, "{report}");
    assert_eq!(report["breaks"][0]["seq"], 5, "{report}");
}

/// The session's bundle, as `GET /x/v1/sessions/{id}/export` streams it.
async fn export(h: &Harness, session: &str) -> Vec<u8> {
    let resp = h.get(&format!("/x/v1/sessions/{session}/export")).await;
    assert_eq!(resp.status.as_u16(), 200, "export: {}", resp.text());
    resp.bytes.to_vec()
}

/// GET as workspace A, collecting the body without panicking when the
/// stream fails: `(status, body or the stream's error)`.
async fn get_body(h: &Harness, path: &str) -> (u16, Result<Vec<u8>, String>) {
    use axum::body::Body;
    use axum::http::{Method, Request};
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    let request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header("anthropic-beta", logbook_server::http::MANAGED_AGENTS_BETA)
        .header("x-api-key", &h.key_a)
        .body(Body::empty())
        .unwrap();
    let response = h.app.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.map(|b| b.to_bytes().to_vec()).map_err(|e| e.to_string());
    (status, body)
}

/// A session of workspace A on `h` whose log writes `/workspace/main.rs`
/// (small) and `/workspace/big.bin` (over one chunk, named by a manifest),
/// recorded the way the sandbox records them; returns the session id and
/// both files' bytes.
async fn session_with_files(h: &Harness) -> (String, Vec<u8>, Vec<u8>) {
    use logbook_core::Event;
    use logbook_core::event::{FileChange, WorkspaceChange, WorkspaceDelta};
    use logbook_server::resources::content::{CHUNK_BYTES, MAX_FILE_BYTES, store_reader};

    let session = h.quick_session().await;
    let sid = id(&session).to_owned();
    let small = b"fn main() { println!(\"exported\"); }\n".to_vec();
    let big: Vec<u8> = (0..CHUNK_BYTES + CHUNK_BYTES / 2).map(|n| (n % 253) as u8).collect();
    let mut changes = Vec::new();
    for (path, bytes) in [("/workspace/main.rs", &small), ("/workspace/big.bin", &big)] {
        let content =
            store_reader(h.state.store(), &bytes[..], MAX_FILE_BYTES).unwrap_or_else(|e| panic!("storing {path}: {e}"));
        let change = FileChange::Written { blob: *content.blob.as_bytes(), size: content.size, mode: 0o644 };
        changes.push(WorkspaceChange { path: path.to_owned(), change });
    }
    h.inject(&session, vec![agent_message("writing files")]);
    h.inject(&session, vec![Event::WorkspaceDelta(WorkspaceDelta { tool_use_id: None, changes })]);
    (sid, small, big)
}

/// Writes `bundle` to a file in `dir` and returns its path.
fn bundle_file(dir: &tempfile::TempDir, name: &str, bundle: &[u8]) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bundle).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

#[tokio::test]
async fn an_imported_session_serves_its_files_contents_small_and_chunked() {
    // Goal: a bundle is "the session" (`GET /x/v1/sessions/{id}/export`) and
    // `logbook import` loads it into another data directory. The log names
    // file contents only by blob hash; a bundle that carried no blobs gave
    // a session whose files list and whose contents are gone (404
    // `file_contents_missing`). Method: a small file and one over a chunk
    // (a manifest and its chunks) recorded the way the sandbox records them;
    // export from one server; import into a fresh one; read both there.
    let a = Harness::new();
    let (sid, small, big) = session_with_files(&a).await;
    for (path, bytes) in [("main.rs", &small), ("big.bin", &big)] {
        let (status, served) = get_body(&a, &format!("/x/v1/sessions/{sid}/files/workspace/{path}")).await;
        assert!(status == 200 && served.as_ref().is_ok_and(|s| s == bytes), "the exporting server serves {path}");
    }

    let bundle = export(&a, &sid).await;
    let text = String::from_utf8(bundle.clone()).unwrap_or_else(|e| panic!("the bundle is not UTF-8: {e}"));
    let report = logbook_replay::bundle::verify(text.lines(), None);
    assert!(report.is_valid(), "{report:?}");
    // The small file, two chunks and the manifest, each once.
    assert_eq!(report.n_blobs, 4, "{report:?}");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let path = bundle_file(&dir, "session.jsonl", &bundle);

    let b = Harness::new();
    logbook_server::offline::import(b.state.store(), &path, "tenant-a", None, None)
        .unwrap_or_else(|e| panic!("import: {e:#}"));
    let state = b.get(&format!("/x/v1/sessions/{sid}/state")).await.ok();
    let listed: Vec<&str> =
        state["workspace"]["files"].as_array().into_iter().flatten().filter_map(|f| f["path"].as_str()).collect();
    assert_eq!(listed, ["/workspace/big.bin", "/workspace/main.rs"], "{state}");
    for (path, bytes) in [("main.rs", &small), ("big.bin", &big)] {
        let (status, served) = get_body(&b, &format!("/x/v1/sessions/{sid}/files/workspace/{path}")).await;
        assert_eq!(status, 200, "{path} after import: {:?}", served.map(|s| String::from_utf8_lossy(&s).into_owned()));
        assert!(served.is_ok_and(|s| s == *bytes), "{path} is served with other contents after import");
    }
    // Importing the same bundle again is refused (the session exists), and
    // the export of the imported session carries the same blobs.
    assert!(logbook_server::offline::import(b.state.store(), &path, "tenant-a", None, None).is_err());
    let again = export(&b, &sid).await;
    let again = String::from_utf8(again).unwrap_or_else(|e| panic!("the bundle is not UTF-8: {e}"));
    let blob_lines =
        |text: &str| text.lines().filter(|l| l.starts_with("{\"blob\":")).map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(blob_lines(&again), blob_lines(&text));
}

#[tokio::test]
async fn a_bundle_with_a_tampered_blob_is_refused_by_verify_and_import() {
    // Goal: verify checks every carried blob against its hash and names a
    // bad one; import refuses such a bundle with a typed error before it
    // stores or appends anything. Method: the export of a session with
    // files, one byte of the small file's blob changed (the line otherwise
    // canonical); verify it, import it; then an import of a hand-built
    // `Parsed` whose blob was changed after parsing.
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use logbook_core::{Seq, SessionId};
    use logbook_replay::bundle::{self, BlobLine, Problem};
    use logbook_server::audit::ImportError;
    use logbook_store::{Blobs as _, Read as _};

    let a = Harness::new();
    let (sid, small, _) = session_with_files(&a).await;
    let genuine = String::from_utf8(export(&a, &sid).await).unwrap_or_else(|e| panic!("not UTF-8: {e}"));
    let name = logbook_core::chain::digest(&small);
    let mut lines: Vec<String> = genuine.lines().map(str::to_owned).collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with(&format!("{{\"blob\":\"{name}\"")))
        .unwrap_or_else(|| panic!("the bundle carries no blob {name}"));
    let mut damaged = small.clone();
    damaged[3] ^= 0x20;
    let line = BlobLine { blob: name, size: damaged.len() as u64, data: BASE64.encode(&damaged) };
    lines[at] = serde_json::to_string(&line).unwrap_or_else(|e| panic!("{e}"));

    let report = bundle::verify(lines.iter().map(String::as_str), None);
    let named = report.problems.iter().any(|p| matches!(p, Problem::Blob { blob: Some(b), .. } if *b == name));
    assert!(!report.is_valid() && named, "the damaged blob {name} is not named: {report:?}");
    assert_eq!(report.first_bad_seq(), None, "the records are intact: {report:?}");

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let path = bundle_file(&dir, "tampered.jsonl", (lines.join("\n") + "\n").as_bytes());
    let b = Harness::new();
    let store = b.state.store();
    let err = logbook_server::offline::import(store, &path, "tenant-a", None, None)
        .err()
        .unwrap_or_else(|| panic!("a bundle with a damaged blob was imported"));
    match err.downcast_ref::<ImportError>() {
        Some(ImportError::Invalid(problems)) => assert!(problems.contains(&name.to_hex()), "{problems}"),
        other => panic!("not ImportError::Invalid naming the blob: {other:?} ({err:#})"),
    }
    let sid: SessionId = sid.parse().unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(store.head(sid).unwrap_or_else(|e| panic!("{e}")).next, Seq::ZERO, "records were appended");
    assert!(!store.has_blob(name).unwrap_or_else(|e| panic!("{e}")), "the genuine blob came from nowhere");

    // A parsed bundle whose blob changed after its check: the import's own
    // check refuses it before anything is stored.
    let mut parsed = bundle::parse(genuine.lines(), None).unwrap_or_else(|r| panic!("{r:?}"));
    let (blob, bytes) = parsed.blobs.iter_mut().find(|(b, _)| *b == name).unwrap_or_else(|| panic!("no blob {name}"));
    bytes[0] ^= 1;
    let blob = *blob;
    let err = logbook_server::audit::import_records(store, &parsed, &mut |_| {})
        .err()
        .unwrap_or_else(|| panic!("a changed blob was imported"));
    assert!(matches!(err, ImportError::BlobMismatch { blob: b, .. } if b == blob), "{err}");
    assert_eq!(store.head(sid).unwrap_or_else(|e| panic!("{e}")).next, Seq::ZERO);
    assert!(parsed.blobs.iter().all(|(b, _)| !store.has_blob(*b).unwrap_or(true)), "blobs were stored");
}

#[tokio::test]
async fn a_format_1_bundle_without_blobs_still_verifies_and_imports() {
    // Goal: bundles written before blobs were carried (format 1: no
    // `n_blobs`, no blob lines) still verify and import; their files list
    // and their contents are missing, said before any byte (404
    // `file_contents_missing`). Method: the records of a genuine export
    // under a format 1 header, signed with another key (none pinned).
    use logbook_replay::bundle::{self, BUNDLE_FORMAT_V1, Header};
    use logbook_server::audit::AuditKey;

    let a = Harness::new();
    let (sid, _, _) = session_with_files(&a).await;
    let genuine = String::from_utf8(export(&a, &sid).await).unwrap_or_else(|e| panic!("not UTF-8: {e}"));
    let parsed = bundle::parse(genuine.lines(), None).unwrap_or_else(|r| panic!("{r:?}"));
    let key = AuditKey::from_seed([4; 32]);
    let head = &parsed.header.signed_head;
    let mut header = Header {
        format: BUNDLE_FORMAT_V1,
        n_blobs: None,
        signed_head: key.sign(parsed.header.session_id, head.n_records, head.hash, head.signed_at),
        header_signature: String::new(),
        ..parsed.header.clone()
    };
    key.sign_header(&mut header).unwrap_or_else(|e| panic!("{e}"));
    let mut lines = vec![bundle::render_header(&header).unwrap_or_else(|e| panic!("{e}"))];
    lines.extend(genuine.lines().skip(1).take(parsed.records.len()).map(str::to_owned));
    let report = bundle::verify(lines.iter().map(String::as_str), None);
    assert!(report.is_valid() && report.n_blobs == 0, "{report:?}");
    assert!(!lines[0].contains("n_blobs"), "{}", lines[0]);

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let path = bundle_file(&dir, "v1.jsonl", (lines.join("\n") + "\n").as_bytes());
    let b = Harness::new();
    logbook_server::offline::import(b.state.store(), &path, "tenant-a", None, None)
        .unwrap_or_else(|e| panic!("a format 1 bundle does not import: {e:#}"));
    let state = b.get(&format!("/x/v1/sessions/{sid}/state")).await.ok();
    assert_eq!(state["workspace"]["files"][1]["path"], "/workspace/main.rs", "{state}");
    let resp = b.get(&format!("/x/v1/sessions/{sid}/files/workspace/main.rs")).await;
    assert_eq!(resp.status.as_u16(), 404, "{}", resp.text());
    assert_eq!(resp.json()["error"]["details"]["error_code"], "file_contents_missing", "{}", resp.text());
    // Such a session cannot be exported with its files: the export says
    // which blob is missing before it answers, rather than write a bundle
    // that fails verify.
    let resp = b.get(&format!("/x/v1/sessions/{sid}/export")).await;
    assert_eq!(resp.status.as_u16(), 409, "{}", resp.text());
    assert_eq!(resp.json()["error"]["details"]["error_code"], "file_contents_missing", "{}", resp.text());
}

#[tokio::test]
async fn an_imported_session_is_forked_in_the_environment_it_was_imported_into() {
    // Goal: an imported session keeps its source's environment id, which
    // the importing server lacks: its fork answered a bare 404
    // (`environment ... not found`) as if something the caller named were
    // missing. `logbook import --environment` attaches it to an environment
    // of the workspace (hosted the same way); without it a fork says why it
    // cannot start (400 `environment_missing`). Method: import a session
    // with files without and with `--environment`; fork each.
    use serde_json::json;

    let a = Harness::new();
    let (sid, small, _) = session_with_files(&a).await;
    let bundle = export(&a, &sid).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let path = bundle_file(&dir, "session.jsonl", &bundle);
    let header: serde_json::Value = serde_json::from_slice(bundle.split(|b| *b == b'\n').next().unwrap_or_default())
        .unwrap_or_else(|e| panic!("the bundle's header: {e}"));
    // The last record: the workspace delta.
    let last = header["n_records"].as_u64().unwrap_or_else(|| panic!("{header}")) - 1;

    let b = Harness::new();
    logbook_server::offline::import(b.state.store(), &path, "tenant-a", None, None)
        .unwrap_or_else(|e| panic!("import: {e:#}"));
    let resp = b.post(&format!("/x/v1/sessions/{sid}/fork"), &json!({"at_seq": last})).await;
    let body = resp.invalid();
    assert_eq!(body["error"]["details"]["error_code"], "environment_missing", "{body}");

    let c = Harness::new();
    let env = c.env("imported").await;
    let env_id = env["id"].as_str().unwrap_or_else(|| panic!("{env}"));
    let self_hosted = c.self_hosted_env("workers").await;
    let self_hosted_id = self_hosted["id"].as_str().unwrap_or_else(|| panic!("{self_hosted}"));
    let other_hosting = logbook_server::offline::import(c.state.store(), &path, "tenant-a", None, Some(self_hosted_id));
    assert!(other_hosting.is_err(), "a cloud session was attached to a self-hosted environment");
    logbook_server::offline::import(c.state.store(), &path, "tenant-a", None, Some(env_id))
        .unwrap_or_else(|e| panic!("import --environment: {e:#}"));
    let session = c.get(&format!("/v1/sessions/{sid}")).await.ok();
    assert_eq!(session["environment_id"], env_id, "{session}");
    let forked = c.post(&format!("/x/v1/sessions/{sid}/fork"), &json!({"at_seq": last})).await.ok();
    let child = forked["id"].as_str().unwrap_or_else(|| panic!("{forked}"));
    let (status, served) = get_body(&c, &format!("/x/v1/sessions/{child}/files/workspace/main.rs")).await;
    assert!(status == 200 && served.is_ok_and(|s| s == small), "the fork of the imported session lacks its file");
}

#[tokio::test]
async fn a_failed_import_leaves_no_partial_log_behind() {
    // Goal: `logbook import` "loads a verified bundle ... chain intact"; one
    // that fails must leave the data directory as it was, so that the
    // session can be imported once the bundle is fixed. A bundle verifies
    // with events the store refuses to append (an event of more than
    // MAX_EVENT_BYTES canonical bytes still decodes: the decoder's limit is
    // MAX_RECORD_BYTES), and `audit::import_records` appends the bundle in
    // several durable appends before it meets the refused one: the records
    // before it stay in the log for good, without a session object, and every
    // later import of that session is refused as "already exists".
    // Method: a bundle of a real session object with a small record, then one
    // just over the event limit, signed with another key (no key pinned);
    // import it; then import the real export of that session.
    use logbook_core::event::{ContentBlock, UserMessage};
    use logbook_core::limits::MAX_EVENT_BYTES;
    use logbook_core::{Entry, Event, EventId, Record, Seq, SessionId};
    use logbook_replay::bundle::{self, BUNDLE_FORMAT, BUNDLE_TYPE, GENESIS_ANCHOR, Header};
    use logbook_server::audit::AuditKey;
    use logbook_store::Read as _;
    use serde_json::Value;

    let a = Harness::new();
    let session = a.quick_session().await;
    let sid: SessionId = id(&session).parse().unwrap();
    a.inject(&session, vec![agent_message("hello")]);
    let genuine = export(&a, id(&session)).await;
    let genuine_text = String::from_utf8(genuine.clone()).unwrap();
    let header: Value = serde_json::from_str(genuine_text.lines().next().unwrap()).unwrap();
    let object = header["session"].clone();
    assert_eq!(object["id"], id(&session));

    let now = a.now();
    let ms = u64::try_from(now.unix_ms()).unwrap();
    let entry = |seq: u64, text: String| Entry {
        id: EventId::for_seq(ms, Seq::new(seq), seq + 1),
        event: Event::UserMessage(UserMessage { content: vec![ContentBlock::Text { text }] }),
        at: now,
    };
    let overhead = entry(1, String::new()).to_canonical().unwrap().len();
    // The text's length prefix grows from one byte to five.
    let big = entry(1, "x".repeat(MAX_EVENT_BYTES + 12 - overhead));
    let first = Record::seal(sid, Seq::ZERO, logbook_core::chain::GENESIS, &entry(0, "hi".to_owned())).unwrap();
    let second = Record::seal(sid, Seq::new(1), first.hash(), &big).unwrap();
    let size = second.canonical().unwrap().len();
    assert!(size > MAX_EVENT_BYTES, "the second event is over the limit ({size} bytes)");
    assert!(second.entry().is_ok(), "and still decodes");

    let key = AuditKey::from_seed([3; 32]);
    let mut header = Header {
        kind: BUNDLE_TYPE.to_owned(),
        format: BUNDLE_FORMAT,
        session_id: sid,
        anchor: GENESIS_ANCHOR,
        n_records: 2,
        n_blobs: Some(0),
        signed_head: key.sign(sid, 2, second.hash(), now),
        session: Some(object),
        header_signature: String::new(),
    };
    key.sign_header(&mut header).unwrap();
    let lines = [
        bundle::render_header(&header).unwrap(),
        bundle::render_line(&first).unwrap(),
        bundle::render_line(&second).unwrap(),
    ];
    let report = bundle::verify(lines.iter().map(String::as_str), None);
    assert!(report.is_valid(), "the crafted bundle verifies: {report:?}");
    let dir = tempfile::tempdir().unwrap();
    let crafted = dir.path().join("crafted.jsonl");
    std::fs::write(&crafted, lines.join("\n") + "\n").unwrap();
    let genuine_path = dir.path().join("genuine.jsonl");
    std::fs::write(&genuine_path, &genuine).unwrap();
    drop((lines, first, second, big));

    let b = Harness::new();
    let store = b.state.store();
    let failed = logbook_server::offline::import(store, &crafted, "tenant-a", None, None);
    assert!(failed.is_err(), "the store refuses the oversized event");
    assert_eq!(
        store.head(sid).unwrap().next,
        Seq::ZERO,
        "a failed import left {} records of {sid} in the log, with no session object",
        store.head(sid).unwrap().next
    );
    let retried = logbook_server::offline::import(store, &genuine_path, "tenant-a", None, None);
    assert!(retried.is_ok(), "the genuine bundle cannot be imported after the failed import: {retried:?}");
}

#[tokio::test]
async fn an_import_resumes_after_the_records_a_failed_one_left_behind() {
    // Goal: an append that fails part-way (a full disk) leaves its records in
    // the log, which cannot be shortened; importing the same bundle again
    // must go on after them instead of being refused for good, and a log
    // that is not a prefix of the bundle must still never be continued.
    // Method: the first records of a genuine export appended by hand with no
    // session object (what such a failure leaves), then the import; and a
    // log whose one record differs, then the import.
    use logbook_core::{Entry, Seq, SessionId, Timestamp};
    use logbook_replay::bundle;
    use logbook_store::{Append as _, Read as _};

    let a = Harness::new();
    let session = a.quick_session().await;
    let sid: SessionId = id(&session).parse().unwrap();
    a.inject(&session, (0..20).map(|k| agent_message(&format!("message {k}"))).collect());
    let genuine = export(&a, id(&session)).await;
    let text = String::from_utf8(genuine.clone()).unwrap();
    let parsed = bundle::parse(text.lines(), None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("genuine.jsonl");
    std::fs::write(&path, &genuine).unwrap();
    let first: Vec<Entry> = parsed.records[..7].iter().map(|r| r.entry().unwrap()).collect();

    let b = Harness::new();
    let store = b.state.store();
    store.append(sid, Seq::ZERO, &first).unwrap();
    let resumed = logbook_server::offline::import(store, &path, "tenant-a", None, None);
    assert!(resumed.is_ok(), "the import does not resume after the records left behind: {resumed:?}");
    let head = store.head(sid).unwrap();
    assert_eq!(head.next.get(), parsed.records.len() as u64);
    assert_eq!(head.hash, parsed.header.signed_head.hash);

    let c = Harness::new();
    let store = c.state.store();
    let other = Entry { at: Timestamp::from_unix_micros(first[0].at.unix_micros() + 1), ..first[0].clone() };
    store.append(sid, Seq::ZERO, &[other]).unwrap();
    let refused = logbook_server::offline::import(store, &path, "tenant-a", None, None);
    assert!(refused.is_err(), "a log that is not a prefix of the bundle was continued");
    assert_eq!(store.head(sid).unwrap().next, Seq::new(1), "the refused import appended");
}

#[tokio::test]
async fn last_turns_after_a_title_change_still_returns_the_last_turn() {
    // Goal: `slice?last_turns=K` is "from the start of the K-th last turn (a
    // turn ends at `session.status_idle`)"; a turn is "from a user input to
    // the next `session.status_idle`" (glossary). `slice::turn_start` counts
    // anything after the last idle as a running turn, so a session whose
    // title was changed after its turn ended (a `session.updated`, no input,
    // nothing running) answers `last_turns=1` with no event of its last turn.
    // Method: one whole turn (message, running, reply, idle) recorded, then
    // a title update; the slice of the last turn must hold the reply.
    use logbook_core::Event;
    use logbook_core::event::{SessionStatusIdle, SessionStatusRunning, StopReason};
    use serde_json::json;

    let h = Harness::new();
    let session = h.quick_session().await;
    let sid = id(&session).to_owned();
    h.post(&format!("/v1/sessions/{sid}/events"), &json!({"events": [crate::harness::user_message("hi")]})).await.ok();
    h.inject(
        &session,
        vec![
            Event::SessionStatusRunning(SessionStatusRunning {}),
            agent_message("the reply"),
            Event::SessionStatusIdle(SessionStatusIdle { stop_reason: StopReason::EndTurn, stop_details: None }),
        ],
    );
    let whole = h.get(&format!("/x/v1/sessions/{sid}/slice?last_turns=1")).await.ok();
    assert!(whole["data"].as_array().unwrap().iter().any(|e| e["type"] == "agent.message"), "{whole}");
    h.post(&format!("/v1/sessions/{sid}"), &json!({"title": "renamed"})).await.ok();
    let slice = h.get(&format!("/x/v1/sessions/{sid}/slice?last_turns=1")).await.ok();
    let types: Vec<&str> = slice["data"].as_array().unwrap().iter().filter_map(|e| e["type"].as_str()).collect();
    assert!(
        types.contains(&"agent.message") && types.contains(&"user.message"),
        "last_turns=1 after a title change holds no event of the last turn: {types:?} (from_seq {})",
        slice["from_seq"]
    );
}

#[tokio::test]
async fn a_newest_first_slice_by_tool_with_a_to_seq_past_the_head_keeps_the_open_call() {
    // Goal: a slice filtered by `tools[]` holds the tool calls of those
    // names (docs/extensions.md, Slices), whatever `to_seq` says beyond the
    // log. `slice::build` learns which calls are relevant in a pre-pass over
    // the window of `MAX_SCAN_RECORDS` seqs ending at `to_seq`, unclamped:
    // with `order=desc` and a `to_seq` far past the head the window holds no
    // record, and a call whose result is not in the log yet (the one the
    // session waits on) is never learned and left out.
    // Method: a bash call with no result yet; the same newest-first slice
    // with and without a large `to_seq`.
    use logbook_core::Event;
    use logbook_core::Json;
    use logbook_core::event::AgentToolUse;
    use logbook_core::event::SessionStatusRunning;
    use serde_json::{Value, json};

    let h = Harness::new();
    let session = h.quick_session().await;
    let sid = id(&session).to_owned();
    h.inject(
        &session,
        vec![
            Event::SessionStatusRunning(SessionStatusRunning {}),
            Event::AgentToolUse(AgentToolUse {
                name: "bash".into(),
                input: Json::new(&json!({"command": "ls"})),
                evaluated_permission: None,
                evaluation: None,
                session_thread_id: None,
            }),
        ],
    );
    let calls =
        |slice: &Value| slice["data"].as_array().unwrap().iter().filter(|e| e["type"] == "agent.tool_use").count();
    let bounded = h.get(&format!("/x/v1/sessions/{sid}/slice?tools[]=bash&order=desc")).await.ok();
    assert_eq!(calls(&bounded), 1, "{bounded}");
    let unbounded = h.get(&format!("/x/v1/sessions/{sid}/slice?tools[]=bash&order=desc&to_seq=1000000")).await.ok();
    assert_eq!(calls(&unbounded), 1, "with to_seq past the head the open bash call is missing: {unbounded}");
}

/// A custom tool whose `input_schema` holds arrays nested `depth` levels.
fn deep_tool(depth: usize) -> serde_json::Value {
    use serde_json::json;
    let mut nested = json!([]);
    for _ in 1..depth {
        nested = json!([nested]);
    }
    json!({"type": "custom", "name": "deep", "description": "d", "input_schema": {"type": "object", "examples": nested}})
}

/// JSON as deep as the log stores it (the harness's `json()` stops at 128 levels).
fn deep_json(bytes: &[u8]) -> serde_json::Value {
    logbook_core::json::from_slice_deep(bytes, 16).unwrap()
}

#[tokio::test]
async fn a_session_of_an_agent_the_api_accepted_stays_readable() {
    // Goal: whatever agent `POST /v1/agents` accepts can run a session that
    // the API and the `/x/v1` extensions can read. A custom tool's
    // `input_schema` is accepted nested as deep as serde_json's default limit
    // lets the request body parse (128 levels); the session object stores
    // the agent one level deeper, and `api::from_bytes` reads stored objects
    // with that same default limit. The session is created (200) and from
    // then on every read of it is a 500: the session, its export and verify,
    // archive and delete, and the list of every session of the workspace,
    // for good (the session cannot be deleted either).
    // Method: the deepest such schema agent create accepts; a session of
    // that agent; then read it.
    use serde_json::json;

    let h = Harness::new();
    let env = h.env("e").await;
    let mut agent = None;
    for depth in (1..=130).rev() {
        let body = json!({"name": "deep", "model": "claude-sonnet-4-6", "tools": [deep_tool(depth)]});
        let resp = h.post("/v1/agents", &body).await;
        if resp.status.as_u16() == 200 {
            agent = Some(deep_json(&resp.bytes));
            break;
        }
    }
    let agent = agent.expect("agent create accepts some depth");
    let resp = h.post("/v1/sessions", &json!({"agent": agent["id"], "environment_id": env["id"]})).await;
    assert_eq!(resp.status.as_u16(), 200, "the session is created");
    let sid = deep_json(&resp.bytes)["id"].as_str().unwrap().to_owned();
    let mut statuses = Vec::new();
    for path in [
        "/v1/sessions".to_owned(),
        format!("/v1/sessions/{sid}"),
        format!("/x/v1/sessions/{sid}/verify"),
        format!("/x/v1/sessions/{sid}/export"),
    ] {
        statuses.push((h.get(&path).await.status.as_u16(), path));
    }
    statuses
        .push((h.delete(&format!("/v1/sessions/{sid}")).await.status.as_u16(), format!("DELETE /v1/sessions/{sid}")));
    assert!(
        statuses.iter().all(|(status, _)| *status == 200),
        "a session of an agent the API accepted cannot be read, exported or deleted: {statuses:?}"
    );
}

#[tokio::test]
async fn a_bundle_of_a_session_with_a_deep_tool_schema_verifies() {
    // Goal: an untouched bundle verifies (`logbook verify BUNDLE`, exit 0)
    // and imports. The header carries the session object, whose agent may
    // hold a custom tool `input_schema` nested as deep as the API reads
    // back; the header nests it one level deeper again, and
    // `bundle::parse_header` parses it with serde_json's default limit (128
    // levels), while record lines are read with `from_slice_deep`. Such a
    // session's own export is reported damaged ("not a bundle header:
    // recursion limit exceeded") and cannot be imported.
    // Method: the deepest schema whose session the API still reads back;
    // export that session; verify the bundle with the server's key pinned.
    use logbook_replay::bundle;
    use logbook_server::audit::AuditKey;
    use serde_json::json;

    let h = Harness::new();
    let env = h.env("e").await;
    let mut session = None;
    for depth in (1..=130).rev() {
        let body = json!({"name": "deep", "model": "claude-sonnet-4-6", "tools": [deep_tool(depth)]});
        let resp = h.post("/v1/agents", &body).await;
        if resp.status.as_u16() != 200 {
            continue;
        }
        let agent = deep_json(&resp.bytes);
        let resp = h.post("/v1/sessions", &json!({"agent": agent["id"], "environment_id": env["id"]})).await;
        let sid = deep_json(&resp.bytes)["id"].as_str().unwrap().to_owned();
        if h.get(&format!("/v1/sessions/{sid}")).await.status.as_u16() == 200 {
            session = Some(sid);
            break;
        }
    }
    let sid = session.expect("some depth gives a readable session");
    let text = String::from_utf8(export(&h, &sid).await).unwrap();
    let pinned = AuditKey::from_seed(crate::harness::AUDIT_SEED).public_key();
    let report = bundle::verify(text.lines(), Some(&pinned));
    assert!(report.is_valid(), "the server's own untouched export does not verify: {:?}", report.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_has_at_most_its_cap_of_exports_under_way() {
    // Goal: an export holds a blocking thread until its client has read it,
    // so a workspace may have only so many under way (the server too):
    // past the cap a new one answers 429 rate_limit_error with retry-after,
    // other workspaces are unaffected, and a client that goes away frees
    // its place.
    // Method: a cap of 1; a session whose bundle is far larger than the
    // export's buffers; one export's body held unread, a second refused,
    // workspace B's accepted; the first body dropped, then A's next export
    // accepted once the writer noticed (retried under a deadline).
    let config = logbook_server::state::Config { max_transfers_per_workspace: 1, ..Default::default() };
    let h = Harness::with_config(config);
    let session = h.quick_session().await;
    let big = "x".repeat(400_000);
    let path = format!("/v1/sessions/{}/events", id(&session));
    for _ in 0..4 {
        h.post(&path, &events_body(vec![user_message(&big)])).await.ok();
    }
    let export = |key: String, session: String| {
        let h = &h;
        async move { h.open_unread(&format!("/x/v1/sessions/{session}/export"), &key).await }
    };
    let sid = id(&session).to_owned();
    let first = export(h.key_a.clone(), sid.clone()).await;
    assert_eq!(first.status().as_u16(), 200);
    let second = export(h.key_a.clone(), sid.clone()).await;
    assert_eq!(second.status().as_u16(), 429);
    assert!(second.headers().contains_key("retry-after"));
    let body = http_body_util::BodyExt::collect(second.into_body()).await.unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");

    let b = h.call(axum::http::Method::GET, "/v1/sessions", crate::harness::Auth::XApiKey(&h.key_b), None).await.ok();
    assert!(b["data"].as_array().unwrap().is_empty(), "workspace B has no session to export: {b}");
    let tenant_b_upload = h.upload_as(&h.key_b.clone(), "b.txt", "text/plain", b"from b").await;
    assert_eq!(tenant_b_upload.status.as_u16(), 200, "another workspace's transfers are not counted");

    drop(first);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let again = export(h.key_a.clone(), sid.clone()).await;
        if again.status().as_u16() == 200 {
            break;
        }
        assert_eq!(again.status().as_u16(), 429);
        assert!(std::time::Instant::now() < deadline, "the dropped export never freed its place");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn verify_refuses_a_bundle_whose_bytes_were_changed_to_invalid_utf8() {
    // Goal: a bundle line must be byte-identical to its record's canonical
    // rendering, "so a change anywhere in a line (the event JSON included)
    // is caught" (replay/src/bundle.rs). `offline::read_lines` decodes each
    // line with `String::from_utf8_lossy`, so any invalid byte sequence
    // becomes U+FFFD before the comparison: a bundle in which the three bytes
    // of a U+FFFD (common in tool output read from binary files) were
    // replaced by one stray byte is not what export wrote, and verifies.
    // Method: an event holding U+FFFD; export; replace its UTF-8 (EF BF BD)
    // by 0xFF in the file; `logbook verify` must exit 1.
    let h = Harness::new();
    let session = h.quick_session().await;
    h.inject(&session, vec![agent_message("cat /bin/true printed: \u{FFFD}ELF")]);
    let sid = id(&session).to_owned();
    let bundle = export(&h, &sid).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let genuine = bundle_file(&dir, "genuine.jsonl", &bundle);
    assert_eq!(
        logbook_server::offline::verify_bundle(&genuine, None, None, false).unwrap(),
        std::process::ExitCode::SUCCESS
    );
    let needle = "\u{FFFD}".as_bytes();
    let at = bundle.windows(needle.len()).position(|w| w == needle).expect("the bundle holds the U+FFFD");
    let mut tampered = bundle[..at].to_vec();
    tampered.push(0xFF);
    tampered.extend_from_slice(&bundle[at + needle.len()..]);
    assert_ne!(tampered, bundle);
    let path = bundle_file(&dir, "tampered.jsonl", &tampered);
    let verdict = logbook_server::offline::verify_bundle(&path, None, None, false).unwrap();
    assert_eq!(
        verdict,
        std::process::ExitCode::from(1),
        "a bundle with bytes export never wrote (0xFF where U+FFFD was) verifies"
    );
}
