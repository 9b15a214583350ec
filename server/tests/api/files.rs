//! The Files API through the router: upload (multipart), metadata, lists
//! (cursor pages, `ids`, `scope_id`), download, delete, expiry, outputs
//! captured as session-scoped files, and every validation error.
//!
//! Expectations: the SDK's `resources/beta/files.py` and
//! `types/beta/beta_file_metadata.py` (anthropic 2.14.0), the error classes
//! it maps (`file_not_downloadable` 400, `file_expired` 404), and
//! managed-agents-behaviour.md §6.1 (outputs become files scoped to the
//! session).

use axum::body::Body;
use axum::http::{Method, Request};
use logbook_core::{FileId, SessionId};
use logbook_server::http::MANAGED_AGENTS_BETA;
use logbook_store::{ResourceKind, Resources};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use crate::harness::{Auth, Harness, id, ids};

/// Writes a file into a session's outputs directory, as the agent would.
pub(crate) fn write_output(h: &Harness, session: &str, rel: &str, bytes: &[u8]) {
    let path = h.data_dir().join("sandboxes").join(session).join("outputs").join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Captures a session's outputs now (what the runner does after an idle).
pub(crate) async fn capture(h: &Harness, key: &str, session: &str) -> Vec<FileId> {
    let tenant = h.tenant(key);
    let session: SessionId = session.parse().unwrap();
    logbook_server::resources::outputs::capture(&h.state, tenant, session).await.unwrap()
}

/// GET with the managed-agents beta header, as the SDK sends it when asked.
async fn get_with_beta(h: &Harness, path: &str) -> crate::harness::Resp {
    h.call(Method::GET, path, Auth::XApiKey(&h.key_a), None).await
}

/// GET without any beta header (what the SDK sends on files calls by default).
async fn get_plain(h: &Harness, path: &str) -> crate::harness::Resp {
    let request = Request::builder().method(Method::GET).uri(path).header("x-api-key", &h.key_a).body(Body::empty());
    h.raw(request.unwrap()).await
}

fn stored_blob(h: &Harness, file: &Value) -> String {
    let tenant = h.tenant(&h.key_a);
    let id: FileId = id(file).parse().unwrap();
    let bytes = h.state.store().get_resource(ResourceKind::File, &tenant.key(id.to_bytes())).unwrap().unwrap();
    let stored: Value = serde_json::from_slice(&bytes).unwrap();
    stored["blob"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn upload_retrieve_list_delete() {
    // Goal: the metadata object has exactly the SDK's fields; an uploaded
    // file is listed, not downloadable, and gone after delete. Method: one
    // upload without any beta header (the SDK sends none by default).
    let h = Harness::new();
    let csv = b"region,sales\nnorth,10\nsouth,7\n";
    let file = h.upload("sales.csv", "text/csv", csv).await;
    let mut keys: Vec<&str> = file.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["created_at", "downloadable", "expires_at", "filename", "id", "mime_type", "scope", "size_bytes", "type"]
    );
    assert!(id(&file).starts_with("file_"));
    assert_eq!(file["type"], "file");
    assert_eq!(file["filename"], "sales.csv");
    assert_eq!(file["mime_type"], "text/csv");
    assert_eq!(file["size_bytes"], csv.len());
    assert_eq!(file["downloadable"], false);
    assert_eq!(file["scope"], Value::Null);
    assert_eq!(file["expires_at"], Value::Null);
    assert_eq!(file["created_at"], "2026-05-01T12:00:00Z");

    let path = format!("/v1/files/{}", id(&file));
    assert_eq!(get_plain(&h, &path).await.ok(), file);
    assert_eq!(get_with_beta(&h, &path).await.ok(), file);
    let page = get_plain(&h, "/v1/files").await.ok();
    assert_eq!(page, json!({"data": [file.clone()], "next_page": null}));

    let body = get_plain(&h, &format!("{path}/content")).await.error(400, "invalid_request_error");
    assert_eq!(body["error"]["details"]["error_code"], "file_not_downloadable");

    let deleted = h.delete(&path).await.ok();
    assert_eq!(deleted, json!({"id": id(&file), "type": "file_deleted"}));
    let body = get_plain(&h, &path).await.not_found();
    assert_eq!(body["error"]["details"]["error_code"], "file_not_found");
    h.delete(&path).await.not_found();
    assert_eq!(get_plain(&h, "/v1/files").await.ok()["data"], json!([]));
}

#[tokio::test]
async fn the_same_contents_are_stored_once() {
    let h = Harness::new();
    let a = h.upload("a.csv", "text/csv", b"same bytes").await;
    let b = h.upload("b.txt", "text/plain", b"same bytes").await;
    let c = h.upload("c.txt", "text/plain", b"other bytes").await;
    assert_ne!(id(&a), id(&b));
    assert_eq!(stored_blob(&h, &a), stored_blob(&h, &b));
    assert_ne!(stored_blob(&h, &a), stored_blob(&h, &c));
    assert_eq!(stored_blob(&h, &a), logbook_core::chain::digest(b"same bytes").to_string());
}

#[tokio::test]
async fn lists_page_newest_first_and_filter_by_ids_and_scope() {
    let h = Harness::new();
    let mut uploaded = Vec::new();
    for n in 0..5 {
        h.tick(1);
        uploaded.push(id(&h.upload(&format!("f{n}.txt"), "text/plain", format!("{n}").as_bytes()).await).to_owned());
    }
    let mut seen = Vec::new();
    let mut path = "/v1/files?limit=2".to_owned();
    for _ in 0..5 {
        let page = get_plain(&h, &path).await.ok();
        seen.extend(ids(&page));
        match page["next_page"].as_str() {
            Some(next) => {
                assert!(next.starts_with("page_"), "{next}");
                path = format!("/v1/files?limit=2&page={next}");
            }
            None => break,
        }
    }
    let newest_first: Vec<String> = uploaded.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);

    // ids: the requested visible files, in the order asked; unknown ids left out.
    let wanted = format!(
        "/v1/files?ids[]={}&ids[]={}&ids[]=file_01JQ8Z7M3P5R7T9V1X3Z5B7D0E&ids[]=garbage",
        uploaded[1], uploaded[3]
    );
    let page = get_plain(&h, &wanted).await.ok();
    assert_eq!(ids(&page), [uploaded[1].clone(), uploaded[3].clone()]);
    assert_eq!(page["next_page"], Value::Null);
    get_plain(&h, &format!("/v1/files?ids[]={}&limit=2", uploaded[0])).await.invalid();
    get_plain(&h, &format!("/v1/files?ids[]={}&page=page_00", uploaded[0])).await.invalid();
    let many: String = (0..101).map(|n| format!("ids[]=x{n}&")).collect();
    get_plain(&h, &format!("/v1/files?{many}")).await.invalid();

    // Bad limits and cursors.
    for bad in ["limit=0", "limit=1001", "limit=x", "page=agents_00", "page=page_zz"] {
        get_plain(&h, &format!("/v1/files?{bad}")).await.invalid();
    }

    // scope_id: needs the managed-agents beta (as hosted); lists only that session's outputs.
    let session = h.quick_session().await;
    write_output(&h, id(&session), "report.md", b"# Report\n");
    let created = capture(&h, &h.key_a, id(&session)).await;
    assert_eq!(created.len(), 1);
    let scoped = format!("/v1/files?scope_id={}", id(&session));
    let body = get_plain(&h, &scoped).await.invalid();
    assert!(body["error"]["message"].as_str().unwrap().contains(MANAGED_AGENTS_BETA), "{body}");
    let page = get_with_beta(&h, &scoped).await.ok();
    assert_eq!(ids(&page), [created[0].to_string()]);
    assert_eq!(page["data"][0]["scope"], json!({"type": "session", "id": id(&session)}));
    assert_eq!(page["data"][0]["downloadable"], true);
    let page = get_with_beta(&h, "/v1/files?scope_id=sesn_01JQ8Z7M3P5R7T9V1X3Z5B7D0E").await.ok();
    assert_eq!(page["data"], json!([]));
    let page = get_with_beta(&h, "/v1/files?scope_id=not-a-session").await.ok();
    assert_eq!(page["data"], json!([]));
    assert_eq!(ids(&get_plain(&h, "/v1/files?limit=100").await.ok()).len(), 6, "unscoped lists show outputs too");
}

#[tokio::test]
async fn upload_errors() {
    let h = Harness::new();
    let send = |content_type: &str, body: Vec<u8>| {
        Request::builder()
            .method(Method::POST)
            .uri("/v1/files")
            .header("x-api-key", &h.key_a)
            .header("content-type", content_type)
            .body(Body::from(body))
            .unwrap()
    };
    // Not multipart.
    h.raw(send("application/json", b"{}".to_vec())).await.invalid();
    // Multipart without a `file` part.
    let boundary = "b0";
    let only_expiry = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"expires_in_seconds\"\r\n\r\n7200\r\n--{boundary}--\r\n"
    );
    let body =
        h.raw(send(&format!("multipart/form-data; boundary={boundary}"), only_expiry.into_bytes())).await.invalid();
    assert!(body["error"]["message"].as_str().unwrap().contains("file"), "{body}");
    // A truncated body.
    let truncated =
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\nabc");
    h.raw(send(&format!("multipart/form-data; boundary={boundary}"), truncated.into_bytes())).await.invalid();
    // Two file parts.
    let part = |name: &str| {
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\r\nx\r\n")
    };
    let two = format!("{}{}--{boundary}--\r\n", part("a"), part("b"));
    h.raw(send(&format!("multipart/form-data; boundary={boundary}"), two.into_bytes())).await.invalid();
    // Expiry out of range, and not a number.
    for value in ["60", "7776001", "soon"] {
        let body = format!(
            "{}--{boundary}\r\nContent-Disposition: form-data; name=\"expires_in_seconds\"\r\n\r\n{value}\r\n--{boundary}--\r\n",
            part("a.txt")
        );
        let resp = h.raw(send(&format!("multipart/form-data; boundary={boundary}"), body.into_bytes())).await;
        assert!(resp.invalid()["error"]["message"].as_str().unwrap().contains("expires_in_seconds"));
    }
    // A filename with a path keeps its last component; none becomes `unnamed`.
    let file = h.upload("../../etc/passwd", "text/plain", b"x").await;
    assert_eq!(file["filename"], "passwd");
    let nameless = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"\r\nContent-Type: application/pdf\r\n\r\n%PDF\r\n--{boundary}--\r\n"
    );
    let file = h.raw(send(&format!("multipart/form-data; boundary={boundary}"), nameless.into_bytes())).await.ok();
    assert_eq!((file["filename"].as_str(), file["mime_type"].as_str()), (Some("unnamed.pdf"), Some("application/pdf")));
    // No key: 401 before anything is read.
    let anonymous = Request::builder()
        .method(Method::POST)
        .uri("/v1/files")
        .header("content-type", "multipart/form-data; boundary=b0")
        .body(Body::from("--b0--\r\n"))
        .unwrap();
    h.raw(anonymous).await.error(401, "authentication_error");
}

#[tokio::test]
async fn files_expire() {
    // Goal: `expires_in_seconds` sets `expires_at`; after it, the file can no
    // longer be mounted (404 file_expired) but its metadata stays.
    let h = Harness::new();
    let boundary = "b1";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nx\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"expires_in_seconds\"\r\n\r\n3600\r\n--{boundary}--\r\n"
    );
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/files")
        .header("x-api-key", &h.key_a)
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(Body::from(body))
        .unwrap();
    let file = h.raw(request).await.ok();
    assert_eq!(file["expires_at"], "2026-05-01T13:00:00Z");
    let session = h.quick_session().await;
    let add = json!({"type": "file", "file_id": id(&file)});
    h.post(&format!("/v1/sessions/{}/resources", id(&session)), &add).await.ok();
    h.tick(3600 * 1000);
    let body = h
        .post(
            &format!("/v1/sessions/{}/resources", id(&session)),
            &json!({"type": "file", "file_id": id(&file), "mount_path": "/again.txt"}),
        )
        .await
        .not_found();
    assert_eq!(body["error"]["details"]["error_code"], "file_expired");
    get_plain(&h, &format!("/v1/files/{}", id(&file))).await.ok();
}

#[tokio::test]
async fn outputs_become_session_files_once_and_download() {
    // Goal: files in the outputs directory become downloadable files scoped
    // to the session; an unchanged file is not captured twice, a changed one
    // is; links, FIFOs and files outside are never read; the capture is
    // recorded in the log. Method: write host files, capture, repeat.
    let h = Harness::new();
    let session = h.quick_session().await;
    let sid = id(&session);
    write_output(&h, sid, "report.md", b"# Q1\nnorth leads\n");
    write_output(&h, sid, "charts/data.json", b"{\"north\":10}");
    let outside = h.data_dir().join("host-secret.txt");
    std::fs::write(&outside, b"host secret").unwrap();
    let outputs = h.data_dir().join("sandboxes").join(sid).join("outputs");
    std::os::unix::fs::symlink(&outside, outputs.join("leak.txt")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        outputs.join("pipe").as_path(),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();

    let first = capture(&h, &h.key_a, sid).await;
    assert_eq!(first.len(), 2);
    let page = get_with_beta(&h, &format!("/v1/files?scope_id={sid}")).await.ok();
    let mut names: Vec<&str> =
        page["data"].as_array().unwrap().iter().map(|f| f["filename"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(names, ["data.json", "report.md"]);
    let report = page["data"].as_array().unwrap().iter().find(|f| f["filename"] == "report.md").unwrap().clone();
    assert_eq!(report["mime_type"], "text/markdown");
    let resp = get_plain(&h, &format!("/v1/files/{}/content", id(&report))).await;
    assert_eq!(resp.status.as_u16(), 200);
    assert_eq!(resp.header("content-type"), Some("text/markdown"));
    assert_eq!(&resp.bytes[..], b"# Q1\nnorth leads\n");

    assert_eq!(capture(&h, &h.key_a, sid).await, Vec::<FileId>::new(), "unchanged outputs are not captured again");
    write_output(&h, sid, "report.md", b"# Q1\nsouth caught up\n");
    let second = capture(&h, &h.key_a, sid).await;
    assert_eq!(second.len(), 1);
    let resp = get_plain(&h, &format!("/v1/files/{}/content", second[0])).await;
    assert_eq!(&resp.bytes[..], b"# Q1\nsouth caught up\n");
    assert_eq!(get_plain(&h, &format!("/v1/files/{}/content", id(&report))).await.status.as_u16(), 200);

    // The log records what was captured (no tool call caused it).
    let session_id: SessionId = sid.parse().unwrap();
    let records = logbook_store::Read::read(h.state.store(), session_id, logbook_core::Seq::ZERO, 1000).unwrap();
    let deltas: Vec<Vec<String>> = records
        .iter()
        .filter_map(|r| {
            let logbook_core::Event::WorkspaceDelta(delta) = r.entry().unwrap().event else { return None };
            assert_eq!(delta.tool_use_id, None);
            Some(delta.changes.into_iter().map(|c| c.path).collect())
        })
        .collect();
    assert_eq!(
        deltas,
        [
            vec!["/mnt/session/outputs/charts/data.json".to_owned(), "/mnt/session/outputs/report.md".to_owned()],
            vec!["/mnt/session/outputs/report.md".to_owned()]
        ]
    );
    // The internal events are not in the public list.
    assert!(h.events(&session).await.iter().all(|e| !e["type"].as_str().unwrap().starts_with("x.")));
}

#[tokio::test]
async fn a_session_forgets_the_outputs_that_are_gone() {
    // Goal: the session object remembers what each output path was captured
    // as, and that is bounded by what the outputs directory holds: an agent
    // writing a new name each turn (and deleting the last) must not grow the
    // object, read on every send, without end. Method: capture a file under
    // one name, then under another with the first deleted; the object keeps
    // the second only; the first, written again, is captured again.
    let h = Harness::new();
    let session = h.quick_session().await;
    let sid = id(&session);
    let remembered = |h: &Harness| {
        let tenant = h.tenant(&h.key_a);
        let session: SessionId = sid.parse().unwrap();
        let bytes =
            h.state.store().get_resource(ResourceKind::Session, &tenant.key(session.to_bytes())).unwrap().unwrap();
        let stored: logbook_server::api::sessions::StoredSession = logbook_server::api::from_bytes(&bytes).unwrap();
        stored.outputs.into_keys().collect::<Vec<String>>()
    };
    let outputs = h.data_dir().join("sandboxes").join(sid).join("outputs");
    for turn in 0..3 {
        if turn > 0 {
            std::fs::remove_file(outputs.join(format!("run-{}.log", turn - 1))).unwrap();
        }
        write_output(&h, sid, &format!("run-{turn}.log"), b"same bytes each time");
        assert_eq!(capture(&h, &h.key_a, sid).await.len(), 1, "turn {turn}");
        assert_eq!(remembered(&h), [format!("/mnt/session/outputs/run-{turn}.log")], "turn {turn}");
    }
    std::fs::remove_file(outputs.join("run-2.log")).unwrap();
    assert_eq!(capture(&h, &h.key_a, sid).await, Vec::<FileId>::new());
    assert_eq!(remembered(&h), Vec::<String>::new(), "a capture with nothing new forgets too");
    write_output(&h, sid, "run-0.log", b"same bytes each time");
    assert_eq!(capture(&h, &h.key_a, sid).await.len(), 1, "a forgotten name written again is captured again");
    assert_eq!(remembered(&h), ["/mnt/session/outputs/run-0.log"]);
}

/// DEFECT (unbounded host work from the sandbox): a capture hashes every
/// regular file of the outputs directory in full (`content::digest_of`)
/// before it looks at `MAX_FILE_BYTES` or `MAX_CAPTURE_BYTES`, so a file that
/// can never be captured is still read, whole, at every idle. A sparse file
/// costs the sandbox nothing (`truncate -s 4G`, up to the 4 GiB file-size
/// rlimit, 1000 of them per capture): every idle then has the server read
/// ~4 TiB on its blocking pool while holding the session's task lock.
/// Method: one sparse file just over `MAX_FILE_BYTES`; the capture must
/// leave it unread (the process's `rchar` grows by less than its size).
#[tokio::test]
async fn a_capture_does_not_read_outputs_it_cannot_store() {
    fn rchar() -> u64 {
        let io = std::fs::read_to_string("/proc/self/io").unwrap();
        io.lines().find_map(|l| l.strip_prefix("rchar: ")).unwrap().trim().parse().unwrap()
    }
    let h = Harness::new();
    let session = h.quick_session().await;
    let sid = id(&session);
    write_output(&h, sid, "small.txt", b"ok");
    let limit = logbook_server::resources::content::MAX_FILE_BYTES;
    let path = h.data_dir().join("sandboxes").join(sid).join("outputs").join("sparse.bin");
    std::fs::File::create(&path).unwrap().set_len(limit + 32 * 1024 * 1024).unwrap();
    let before = rchar();
    let created = capture(&h, &h.key_a, sid).await;
    let read = rchar() - before;
    assert_eq!(created.len(), 1, "only small.txt can be captured");
    assert!(read < limit, "one capture read {read} bytes to store 2: the over-limit sparse file was read whole");
}

#[tokio::test]
async fn large_files_are_chunked_and_come_back_whole() {
    // Goal: a file over one chunk (8 MiB) is stored as chunks and comes back
    // byte for byte, mounted and downloaded.
    let h = Harness::new();
    let big: Vec<u8> = (0..9 * 1024 * 1024 + 17).map(|n: u32| (n % 251) as u8).collect();
    let file = h.upload("big.bin", "application/octet-stream", &big).await;
    assert_eq!(file["size_bytes"], big.len());
    let agent = h.agent("big").await;
    let env = h.env("big").await;
    let body = json!({"agent": id(&agent), "environment_id": id(&env),
        "resources": [{"type": "file", "file_id": id(&file), "mount_path": "big.bin"}]});
    let session = h.post("/v1/sessions", &body).await.ok();
    let mounted = h.data_dir().join("sandboxes").join(id(&session)).join("uploads/big.bin");
    assert!(std::fs::read(&mounted).unwrap() == big);
    write_output(&h, id(&session), "copy.bin", &big);
    let created = capture(&h, &h.key_a, id(&session)).await;
    let resp = get_plain(&h, &format!("/v1/files/{}/content", created[0])).await;
    assert_eq!(resp.status.as_u16(), 200);
    assert_eq!(resp.header("content-length"), Some(big.len().to_string().as_str()));
    assert!(resp.bytes[..] == big[..]);
}

#[tokio::test]
async fn uploads_past_the_api_body_limit_work_up_to_the_file_limit() {
    // Goal: the upload route takes files larger than the 32 MB limit of other
    // requests, up to MAX_FILE_BYTES, and answers 413 past it without holding
    // the body in memory. Method: streamed bodies of zeros (one chunk, stored
    // once), 40 MiB and just over the limit.
    use futures_util::StreamExt;
    let h = Harness::new();
    let boundary = "big";
    let upload = |size: u64| {
        let head =
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"zeros.bin\"\r\n\r\n");
        let tail = format!("\r\n--{boundary}--\r\n");
        let piece = bytes::Bytes::from(vec![0u8; 1024 * 1024]);
        let n_full = size / piece.len() as u64;
        let rest = (size % piece.len() as u64) as usize;
        let body = futures_util::stream::iter(
            std::iter::once(bytes::Bytes::from(head))
                .chain(std::iter::repeat_n(piece.clone(), n_full as usize))
                .chain(std::iter::once(piece.slice(..rest)))
                .chain(std::iter::once(bytes::Bytes::from(tail))),
        )
        .map(Ok::<_, std::io::Error>);
        Request::builder()
            .method(Method::POST)
            .uri("/v1/files")
            .header("x-api-key", &h.key_a)
            .header("content-type", format!("multipart/form-data; boundary={boundary}"))
            .body(Body::from_stream(body))
            .unwrap()
    };
    let file = h.raw(upload(40 * 1024 * 1024)).await.ok();
    assert_eq!(file["size_bytes"], 40 * 1024 * 1024);
    let limit = logbook_server::resources::content::MAX_FILE_BYTES;
    let body = h.raw(upload(limit + 1)).await.error(413, "request_too_large");
    assert!(body["error"]["message"].as_str().unwrap().contains(&limit.to_string()), "{body}");
}

#[tokio::test]
async fn deleting_a_session_removes_the_files_it_produced() {
    // Behaviour digest §3.8: "Delete: removes record, events, sandbox,
    // session-produced files (not Files-API uploads ...)". A session's
    // captured outputs are Files-API files scoped to it
    // (`resources::outputs`); here one is stored the way the capture stores
    // it, then the session is deleted.
    use logbook_core::{FileId, SessionId};
    use logbook_server::api::files::{StoredFile, insert};
    use logbook_server::resources::content::{MAX_FILE_BYTES, store_reader};
    let h = Harness::new();
    let session = h.quick_session().await;
    let session_id: SessionId = id(&session).parse().unwrap();
    let store = h.state.store();
    let content = store_reader(store, &b"quarterly numbers\n"[..], MAX_FILE_BYTES).unwrap();
    let file = StoredFile {
        id: FileId::from_parts(1_777_636_800_001, 42),
        filename: "report.txt".to_owned(),
        mime_type: "text/plain".to_owned(),
        size_bytes: content.size,
        created_at: h.now(),
        expires_at: None,
        downloadable: true,
        scope: Some(session_id),
        blob: content.blob,
        digest: content.digest,
    };
    insert(store, &h.tenant(&h.key_a), &file).unwrap();
    // An upload (no scope) is the user's, not the session's: it stays.
    let upload = StoredFile { id: FileId::from_parts(1_777_636_800_002, 43), scope: None, ..file.clone() };
    insert(store, &h.tenant(&h.key_a), &upload).unwrap();
    let file_path = format!("/v1/files/{}", file.id);
    h.get(&file_path).await.ok();
    h.delete(&format!("/v1/sessions/{}", id(&session))).await.ok();
    h.get(&format!("/v1/files/{}", upload.id)).await.ok();
    h.get(&format!("/v1/sessions/{}", id(&session))).await.not_found();
    let listed = h.get(&format!("/v1/files?scope_id={}", id(&session))).await.ok();
    let content = h.get(&format!("{file_path}/content")).await;
    assert_eq!(
        listed["data"].as_array().map(Vec::len),
        Some(0),
        "the deleted session's output is still listed under its scope; its content answers {} {:?}",
        content.status,
        content.text()
    );
    h.get(&file_path).await.not_found();
}

#[tokio::test]
async fn a_workspace_file_is_served_whole_at_any_size() {
    // Goal: `GET /x/v1/sessions/{id}/files/{path}` answers a workspace file's
    // bytes, also when it is over one chunk (its blob then names a manifest
    // of chunks, not the contents). Method: two files recorded the way the
    // sandbox records them, one small and one a little over 8 MiB.
    use logbook_core::event::{FileChange, WorkspaceChange, WorkspaceDelta};
    use logbook_server::resources::content::{CHUNK_BYTES, MAX_FILE_BYTES, store_reader};

    let h = Harness::new();
    let session = h.quick_session().await;
    let store = h.state.store();
    let small = b"fn main() {}\n".to_vec();
    let large: Vec<u8> = (0..CHUNK_BYTES + 100).map(|i| (i % 251) as u8).collect();
    let mut changes = Vec::new();
    for (path, bytes) in [("/workspace/main.rs", &small), ("/workspace/data.bin", &large)] {
        let content = store_reader(store, &bytes[..], MAX_FILE_BYTES).unwrap();
        let change = FileChange::Written { blob: *content.blob.as_bytes(), size: content.size, mode: 0o644 };
        changes.push(WorkspaceChange { path: path.to_owned(), change });
    }
    h.inject(&session, vec![logbook_core::Event::WorkspaceDelta(WorkspaceDelta { tool_use_id: None, changes })]);
    for (path, bytes) in [("workspace/main.rs", &small), ("workspace/data.bin", &large)] {
        let got = h.get(&format!("/x/v1/sessions/{}/files/{path}", id(&session))).await;
        assert_eq!(got.status.as_u16(), 200, "{path}: {}", got.text());
        assert_eq!(got.header("content-length"), Some(bytes.len().to_string().as_str()), "{path}");
        assert!(got.bytes[..] == bytes[..], "{path}: {} bytes served, not its {} bytes", got.bytes.len(), bytes.len());
    }
    h.get(&format!("/x/v1/sessions/{}/files/workspace/missing", id(&session))).await.not_found();
}

#[tokio::test]
async fn ids_and_scope_id_together_list_only_files_of_that_scope() {
    // Goal: GET /v1/files with `ids` used to return early
    // (server/src/api/files.rs, `list`, the `if !ids.is_empty()` branch)
    // without reading `scope_id`: the scope filter is silently dropped, so a
    // caller asking "which of these files belong to session S" gets files of
    // other sessions and plain uploads back. The SDK documents `ids` as
    // exclusive with `page` and `limit` only; `scope_id` still filters.
    let h = Harness::new();
    let upload = h.upload("notes.txt", "text/plain", b"mine").await;
    let session = h.quick_session().await;
    write_output(&h, id(&session), "report.md", b"# Report\n");
    let output = capture(&h, &h.key_a, id(&session)).await[0].to_string();
    let both = format!("ids[]={}&ids[]={output}", id(&upload));
    let all = get_with_beta(&h, &format!("/v1/files?{both}")).await.ok();
    assert_eq!(ids(&all).len(), 2);
    let scoped = get_with_beta(&h, &format!("/v1/files?{both}&scope_id={}", id(&session))).await.ok();
    assert_eq!(ids(&scoped), [output], "scope_id was ignored: {scoped}");
}

/// Defect (review of a992103, server/src/resources/outputs.rs:102-106): the
/// per-capture read budget (`MAX_CAPTURE_READ_BYTES`) counts unchanged
/// outputs too, and every capture walks the outputs in the same order, so
/// once the files ahead of it add up to the budget an output is never
/// captured, at any later idle: the commit's "files past it wait for a later
/// idle" does not hold (unlike the storage budget, which unchanged files do
/// not use). Eight outputs of `MAX_FILE_BYTES` (sparse, free to make) fill
/// the 2 GiB read budget; a ninth, small one is never captured (or, in the
/// other walk order, the last big one). Method: four captures (four idles)
/// with nothing changing; every output must have been captured once.
#[tokio::test]
async fn an_output_past_the_read_budget_is_captured_at_a_later_idle() {
    let h = Harness::new();
    let session = h.quick_session().await;
    let sid = id(&session);
    let limit = logbook_server::resources::content::MAX_FILE_BYTES;
    assert_eq!(8 * limit, logbook_server::resources::outputs::MAX_CAPTURE_READ_BYTES);
    let dir = h.data_dir().join("sandboxes").join(sid).join("outputs");
    write_output(&h, sid, "note.txt", b"the deliverable");
    for n in 0..8 {
        std::fs::File::create(dir.join(format!("big{n}.bin"))).unwrap().set_len(limit).unwrap();
    }
    let mut created = Vec::new();
    for _ in 0..4 {
        created.extend(capture(&h, &h.key_a, sid).await);
    }
    assert_eq!(
        created.len(),
        9,
        "after four idles with nothing changed, only {} of 9 outputs were captured",
        created.len()
    );
}

/// An upload the server refuses for its filename (here a control
/// character, which `files::filename` checks) is refused only after its
/// whole contents were stored as blobs (`files::upload` stores the part,
/// then checks the name it had from the part's header all along). Nothing
/// names those blobs and nothing ever removes them (there is no blob
/// garbage collection), so each refused upload keeps up to 256 MiB on disk
/// for good, and the client has no file it could delete.
#[tokio::test]
async fn an_upload_refused_for_its_filename_leaves_nothing_stored() {
    use logbook_store::Blobs;
    let h = Harness::new();
    let bytes = b"contents of an upload that is refused".to_vec();
    let resp = h.upload_as(&h.key_a, "bad\tname.txt", "text/plain", &bytes).await;
    assert_eq!(resp.status.as_u16(), 400, "{}", resp.text());
    let blob = logbook_core::chain::digest(&bytes);
    assert!(!h.state.store().has_blob(blob).unwrap(), "the refused upload's contents stay in the store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_has_at_most_its_cap_of_downloads_under_way() {
    // Goal: a download holds a chunk (up to 8 MiB) until its client takes
    // it, so a workspace may have only so many under way: past the cap a new
    // one answers 429 rate_limit_error with retry-after, and a body dropped
    // frees its place.
    // Method: one captured output; that many bodies held unread, one more
    // refused; one dropped, then the next accepted.
    use logbook_server::state::MAX_DOWNLOADS_PER_WORKSPACE;
    let h = Harness::new();
    let session = h.quick_session().await;
    write_output(&h, id(&session), "report.md", b"# Report\n");
    let created = capture(&h, &h.key_a, id(&session)).await;
    let path = format!("/v1/files/{}/content", created[0]);
    let mut held = Vec::new();
    for _ in 0..MAX_DOWNLOADS_PER_WORKSPACE {
        let open = h.open_unread(&path, &h.key_a).await;
        assert_eq!(open.status().as_u16(), 200);
        held.push(open);
    }
    let refused = h.open_unread(&path, &h.key_a).await;
    assert_eq!(refused.status().as_u16(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    drop(held.pop());
    let again = h.open_unread(&path, &h.key_a).await;
    assert_eq!(again.status().as_u16(), 200, "a dropped download frees its place");
}
