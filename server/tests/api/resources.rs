//! Session resources through the router: files mounted at creation and on a
//! running session, list/retrieve/delete, token rotation, every validation
//! rule (mount path escapes, limits, collisions, unknown and foreign files,
//! self-hosted environments), what reaches the disk and the log, and a fork's
//! view of the mounted files.
//!
//! Expectations: managed-agents-api.md §2.6 and §3.4, managed-agents-behaviour.md
//! §6.1 (uploads layout), §6.5 (limits, repositories stay attached) and §7.1
//! (self-hosted environments take no file or repository resources).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

use axum::http::Method;
use logbook_core::event::{AttachedResource, FileChange, ResourceChange};
use logbook_core::{Entry, Event, Seq, SessionId};
use logbook_server::resources::confine::Root;
use logbook_server::resources::mount;
use logbook_server::sandbox::layout::SANDBOX_UID;
use logbook_store::Read;
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use crate::harness::{Auth, Harness, id, ids};

const CSV: &[u8] = b"region,sales\nnorth,10\nsouth,7\n";
const PDF: &[u8] = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n";

fn uploads(h: &Harness, session: &str) -> PathBuf {
    h.data_dir().join("sandboxes").join(session).join("uploads")
}

fn entries(h: &Harness, session: &str) -> Vec<Entry> {
    let session: SessionId = session.parse().unwrap();
    h.state.store().read(session, Seq::ZERO, 10_000).unwrap().iter().map(|r| r.entry().unwrap()).collect()
}

fn expected_owner() -> u32 {
    if rustix::process::geteuid().is_root() { SANDBOX_UID } else { rustix::process::geteuid().as_raw() }
}

async fn session_with(h: &Harness, resources: Value) -> crate::harness::Resp {
    let agent = h.agent("with-resources").await;
    let env = h.env(&format!("env-{}", h.now().unix_micros())).await;
    h.tick(1);
    h.post("/v1/sessions", &json!({"agent": id(&agent), "environment_id": id(&env), "resources": resources})).await
}

#[tokio::test]
async fn files_mounted_at_creation_are_on_disk_in_the_log_and_on_the_session() {
    // Goal: a CSV at its default path and a PDF at a rooted mount path are
    // materialized read-only, owned by the sandbox user, recorded as
    // x.session_resource and x.workspace_delta (absolute sandbox paths, blob
    // hashes), and shown in the session's `resources`.
    let h = Harness::new();
    let csv = h.upload("sales.csv", "text/csv", CSV).await;
    let pdf = h.upload("q1.pdf", "application/pdf", PDF).await;
    let session = session_with(
        &h,
        json!([{"type": "file", "file_id": id(&csv)}, {"type": "file", "file_id": id(&pdf), "mount_path": "/reports/q1.pdf"}]),
    )
    .await
    .ok();
    let sid = id(&session);
    let resources = session["resources"].as_array().unwrap().clone();
    assert_eq!(resources.len(), 2);
    let csv_path = format!("/mnt/session/uploads/{}", id(&csv));
    assert_eq!(resources[0]["type"], "file");
    assert_eq!(resources[0]["file_id"], id(&csv));
    assert_eq!(resources[0]["mount_path"], csv_path);
    assert!(id(&resources[0]).starts_with("sesrsc_"));
    assert_eq!(resources[1]["mount_path"], "/mnt/session/uploads/reports/q1.pdf");
    let mut keys: Vec<&str> = resources[0].as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["created_at", "file_id", "id", "mount_path", "type", "updated_at"]);

    let dir = uploads(&h, sid);
    for (rel, bytes) in [(id(&csv).to_owned(), CSV), ("reports/q1.pdf".to_owned(), PDF)] {
        let path = dir.join(&rel);
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{rel}");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o444, "{rel} is read-only");
        assert_eq!(meta.uid(), expected_owner(), "{rel}");
    }
    assert_eq!(std::fs::metadata(dir.join("reports")).unwrap().uid(), expected_owner());
    for sub in ["workspace", "outputs"] {
        assert!(h.data_dir().join("sandboxes").join(sid).join(sub).is_dir(), "{sub} is made at creation");
    }

    let log = entries(&h, sid);
    let attached: Vec<(String, String)> = log
        .iter()
        .filter_map(|e| {
            let Event::SessionResource(r) = &e.event else { return None };
            let ResourceChange::Attached { resource: AttachedResource::File { file_id, mount_path } } = &r.change
            else {
                panic!("unexpected {r:?}")
            };
            Some((file_id.to_string(), mount_path.clone()))
        })
        .collect();
    assert_eq!(
        attached,
        [(id(&csv).to_owned(), csv_path.clone()), (id(&pdf).to_owned(), "/mnt/session/uploads/reports/q1.pdf".into())]
    );
    let files = logbook_replay::resources::files_under(&log, "/mnt/session/uploads");
    assert_eq!(files.len(), 2);
    assert_eq!(files[&csv_path].blob, *logbook_core::chain::digest(CSV).as_bytes());
    assert_eq!((files[&csv_path].size, files[&csv_path].mode), (CSV.len() as u64, 0o444));
    assert!(log.iter().all(|e| if let Event::WorkspaceDelta(d) = &e.event { d.tool_use_id.is_none() } else { true }));
    // The same object from retrieve and list; the resources list agrees.
    let retrieved = h.get(&format!("/v1/sessions/{sid}")).await.ok();
    assert_eq!(retrieved["resources"], json!(resources));
    let listed = h.get(&format!("/v1/sessions/{sid}/resources")).await.ok();
    assert_eq!(listed, json!({"data": resources, "next_page": null}));
    let all = h.get("/v1/sessions").await.ok();
    assert_eq!(all["data"][0]["resources"], json!(resources));
}

/// DEFECT (session files readable by every local user): the session
/// directory is meant to be mode 0700, owned by the sandbox user, so that
/// nobody else on the host reaches its workspace, uploads and outputs
/// (`SessionPaths::create`, docs/sandbox.md "the session dir 0700"), and
/// `sandboxes/` 0711 so session ids cannot be listed. But a session created
/// with resources gets its directories from `Host::prepare` ->
/// `confine::Root::open` -> `create_dir_all`, with the process umask's modes
/// (0755, root-owned); `SessionPaths::create` later finds them existing and
/// leaves them so. Session ids are in every jail's `bwrap` command line (`ps`),
/// so any local user can then read every such session's files (0644/0444).
/// Method: attach a file at creation, let the sandbox's own set-up run too,
/// and look at the modes.
#[tokio::test]
async fn a_session_directory_made_for_resources_is_private() {
    let h = Harness::new();
    let csv = h.upload("sales.csv", "text/csv", CSV).await;
    let session = session_with(&h, json!([{"type": "file", "file_id": id(&csv)}])).await.ok();
    let sid = id(&session);
    let paths = logbook_server::sandbox::layout::SessionPaths::new(&h.data_dir(), sid.parse().unwrap());
    assert_eq!(paths.root(), h.data_dir().join("sandboxes").join(sid));
    paths.create().unwrap();
    let meta = std::fs::metadata(paths.root()).unwrap();
    let mode = meta.permissions().mode() & 0o777;
    assert!(
        mode & 0o077 == 0 && meta.uid() == expected_owner(),
        "the session directory {} is mode {mode:o}, owner {}: other local users can read its files",
        paths.root().display(),
        meta.uid()
    );
}

#[tokio::test]
async fn resources_are_added_listed_retrieved_and_deleted_on_a_running_session() {
    let h = Harness::new();
    let session = h.quick_session().await;
    let sid = id(&session);
    h.inject(&session, vec![Event::SessionStatusRunning(logbook_core::event::SessionStatusRunning {})]);
    assert_eq!(h.get(&format!("/v1/sessions/{sid}")).await.ok()["status"], "running");
    let csv = h.upload("sales.csv", "text/csv", CSV).await;
    let pdf = h.upload("q1.pdf", "application/pdf", PDF).await;
    let base = format!("/v1/sessions/{sid}/resources");
    let first = h.post(&base, &json!({"type": "file", "file_id": id(&csv), "mount_path": "data/sales.csv"})).await.ok();
    h.tick(1);
    let second = h.post(&base, &json!({"type": "file", "file_id": id(&pdf), "mount_path": null})).await.ok();
    assert_eq!(first["mount_path"], "/mnt/session/uploads/data/sales.csv");
    assert_eq!(second["mount_path"], format!("/mnt/session/uploads/{}", id(&pdf)));
    assert_eq!(std::fs::read(uploads(&h, sid).join("data/sales.csv")).unwrap(), CSV);

    let page = h.get(&base).await.ok();
    assert_eq!(ids(&page), [id(&first).to_owned(), id(&second).to_owned()]);
    let one = h.get(&format!("{base}?limit=1")).await.ok();
    assert_eq!(ids(&one), [id(&first).to_owned()]);
    let next = one["next_page"].as_str().unwrap();
    let rest = h.get(&format!("{base}?limit=1&page={next}")).await.ok();
    assert_eq!((ids(&rest), rest["next_page"].clone()), (vec![id(&second).to_owned()], Value::Null));
    h.get(&format!("{base}?limit=1001")).await.invalid();
    h.get(&format!("{base}?page=resources_zz")).await.invalid();
    assert_eq!(h.get(&format!("{base}/{}", id(&first))).await.ok(), first);

    let deleted = h.delete(&format!("{base}/{}", id(&first))).await.ok();
    assert_eq!(deleted, json!({"id": id(&first), "type": "session_resource_deleted"}));
    assert!(!uploads(&h, sid).join("data/sales.csv").exists(), "the file is unmounted");
    let body = h.get(&format!("{base}/{}", id(&first))).await.not_found();
    assert_eq!(body["error"]["details"]["error_code"], "session_resource_not_found");
    h.delete(&format!("{base}/{}", id(&first))).await.not_found();
    h.get(&format!("{base}/sesrsc_garbage")).await.not_found();
    assert_eq!(ids(&h.get(&base).await.ok()), [id(&second).to_owned()]);
    // Its path is free again.
    h.post(&base, &json!({"type": "file", "file_id": id(&pdf), "mount_path": "data/sales.csv"})).await.ok();

    let log = entries(&h, sid);
    let removed = log.iter().any(|e| {
        let Event::WorkspaceDelta(d) = &e.event else { return false };
        d.changes.iter().any(|c| c.path == "/mnt/session/uploads/data/sales.csv" && c.change == FileChange::Removed)
    });
    assert!(removed, "the unmount is in the log");
}

#[tokio::test]
async fn mount_path_escapes_are_refused() {
    let h = Harness::new();
    let csv = h.upload("sales.csv", "text/csv", CSV).await;
    let session = h.quick_session().await;
    let sid = id(&session);
    let base = format!("/v1/sessions/{sid}/resources");
    for path in [
        "../escape.csv",
        "a/../../escape.csv",
        "/mnt/session/uploads/../outputs/x.csv",
        "/mnt/session/outputs/x.csv",
        "/workspace/x.csv",
        "/etc/passwd",
        "/tmp/x.csv",
        "",
        "/mnt/session/uploads",
        "bad\nname",
    ] {
        let body = h.post(&base, &json!({"type": "file", "file_id": id(&csv), "mount_path": path})).await.invalid();
        assert!(body["error"]["message"].as_str().unwrap().contains("mount_path"), "{path:?}: {body}");
    }
    // A symbolic link planted in the uploads directory is not followed.
    let outside = h.data_dir().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, uploads(&h, sid).join("link")).unwrap();
    let body = h.post(&base, &json!({"type": "file", "file_id": id(&csv), "mount_path": "link/x.csv"})).await.invalid();
    assert!(body["error"]["message"].as_str().unwrap().contains("symbolic link"), "{body}");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "nothing was written through the link");
    // At creation too, and then nothing is created.
    let before = h.get("/v1/sessions").await.ok()["data"].as_array().unwrap().len();
    session_with(&h, json!([{"type": "file", "file_id": id(&csv), "mount_path": "../x"}])).await.invalid();
    assert_eq!(h.get("/v1/sessions").await.ok()["data"].as_array().unwrap().len(), before);
    assert_eq!(ids(&h.get(&base).await.ok()), Vec::<String>::new());
}

#[tokio::test]
async fn unknown_and_foreign_files_answer_not_found() {
    let h = Harness::new();
    let theirs = h.upload_as(&h.key_b, "theirs.csv", "text/csv", b"tenant b").await.ok();
    let session = h.quick_session().await;
    let base = format!("/v1/sessions/{}/resources", id(&session));
    let foreign = h.post(&base, &json!({"type": "file", "file_id": id(&theirs)})).await;
    let missing = h.post(&base, &json!({"type": "file", "file_id": "file_01JQ8Z7M3P5R7T9V1X3Z5B7D0E"})).await;
    let malformed = h.post(&base, &json!({"type": "file", "file_id": "file_x"})).await;
    for resp in [&foreign, &missing, &malformed] {
        let body = resp.not_found();
        assert_eq!(body["error"]["details"]["error_code"], "file_not_found");
        assert!(!resp.text().contains("tenant b"));
    }
    let shape = |resp: &crate::harness::Resp, file: &str| {
        resp.json()["error"]["message"].as_str().unwrap().replace(file, "<file>")
    };
    assert_eq!(shape(&foreign, id(&theirs)), shape(&missing, "file_01JQ8Z7M3P5R7T9V1X3Z5B7D0E"));
    session_with(&h, json!([{"type": "file", "file_id": id(&theirs)}])).await.not_found();
    // B cannot touch A's session's resources either.
    let b = Auth::XApiKey(&h.key_b);
    h.call(Method::GET, &base, b, None).await.not_found();
}

#[tokio::test]
async fn limits_collisions_and_unsupported_resources() {
    let h = Harness::new();
    let csv = h.upload("sales.csv", "text/csv", CSV).await;
    let file = |path: &str| json!({"type": "file", "file_id": id(&csv), "mount_path": path});
    // Collisions: the same path, and a file where another needs a directory.
    let body = session_with(&h, json!([file("a.csv"), file("/a.csv")])).await.invalid();
    assert!(body["error"]["message"].as_str().unwrap().contains("collides"), "{body}");
    session_with(&h, json!([file("a"), file("a/b.csv")])).await.invalid();
    // Too many files: 500 fit, one more does not.
    let many: Vec<Value> = (0..500).map(|n| file(&format!("f{n}.csv"))).collect();
    let session = session_with(&h, json!(many)).await.ok();
    assert_eq!(session["resources"].as_array().unwrap().len(), 500);
    let base = format!("/v1/sessions/{}/resources", id(&session));
    let body = h.post(&base, &file("one-more.csv")).await.invalid();
    assert!(body["error"]["message"].as_str().unwrap().contains("500"), "{body}");
    let too_many: Vec<Value> = (0..501).map(|n| file(&format!("f{n}.csv"))).collect();
    session_with(&h, json!(too_many)).await.invalid();
    let repo = |n: usize| json!({"type": "github_repository", "url": format!("https://github.com/o/r{n}")});
    session_with(&h, json!((0..11).map(repo).collect::<Vec<_>>())).await.invalid();
    session_with(&h, json!((0..10).map(repo).collect::<Vec<_>>())).await.ok();

    // Memory stores are not supported; repositories only at creation; unknown types.
    let body = session_with(&h, json!([{"type": "memory_store", "memory_store_id": "memstore_1"}])).await.invalid();
    assert!(body["error"]["message"].as_str().unwrap().contains("memory_store"), "{body}");
    let plain = h.quick_session().await;
    let base = format!("/v1/sessions/{}/resources", id(&plain));
    h.post(&base, &repo(1)).await.invalid();
    h.post(&base, &json!({"type": "memory_store", "memory_store_id": "memstore_1"})).await.invalid();
    h.post(&base, &json!({"type": "volume"})).await.invalid();
    h.post(&base, &json!({"file_id": id(&csv)})).await.invalid();
    h.post(&base, &json!({"type": "file"})).await.invalid();
    session_with(&h, json!("not a list")).await.invalid();
    session_with(&h, json!([{"type": "file", "file_id": 7}])).await.invalid();
}

#[tokio::test]
async fn self_hosted_environments_take_no_files_or_repositories() {
    let h = Harness::new();
    let csv = h.upload("sales.csv", "text/csv", CSV).await;
    let agent = h.agent("sh").await;
    let env = h.self_hosted_env("sh").await;
    let body = h
        .post(
            "/v1/sessions",
            &json!({"agent": id(&agent), "environment_id": id(&env), "resources": [{"type": "file", "file_id": id(&csv)}]}),
        )
        .await
        .invalid();
    assert_eq!(
        body["error"]["message"],
        format!(
            "Environment {} is a self-hosted environment. `resources` are not supported with self-hosted environments.",
            id(&env)
        )
    );
    let session = h.session(&agent, &env).await;
    h.post(&format!("/v1/sessions/{}/resources", id(&session)), &json!({"type": "file", "file_id": id(&csv)}))
        .await
        .invalid();
}

#[tokio::test]
async fn repositories_validate_keep_their_token_out_and_rotate_it() {
    // Goal: a repository resource's token is accepted, never echoed, never in
    // the log or the store; rotation answers the resource and moves
    // updated_at; files have no token; repositories cannot be deleted.
    let h = Harness::new();
    let token = "ghp_canary_9f8e7d6c5b4a";
    let session = session_with(
        &h,
        json!([{"type": "github_repository", "url": "https://github.com/octo-org/parser",
                "authorization_token": token, "checkout": {"type": "branch", "name": "fix-dates"}}]),
    )
    .await
    .ok();
    assert!(!session.to_string().contains(token));
    let repo = session["resources"][0].clone();
    assert_eq!(
        repo,
        json!({"id": id(&repo), "type": "github_repository", "url": "https://github.com/octo-org/parser",
               "mount_path": "/workspace/parser", "checkout": {"type": "branch", "name": "fix-dates"},
               "created_at": "2026-05-01T12:00:00.001Z", "updated_at": "2026-05-01T12:00:00.001Z"})
    );
    let base = format!("/v1/sessions/{}/resources", id(&session));
    h.tick(5);
    let rotated_token = "ghp_rotated_1a2b3c4d";
    let rotated = h.post(&format!("{base}/{}", id(&repo)), &json!({"authorization_token": rotated_token})).await.ok();
    assert_eq!(rotated["updated_at"], "2026-05-01T12:00:00.006Z");
    assert_eq!(rotated["created_at"], repo["created_at"]);
    assert!(!rotated.to_string().contains(rotated_token));
    for bad in [json!({}), json!({"authorization_token": ""}), json!({"authorization_token": 5})] {
        h.post(&format!("{base}/{}", id(&repo)), &bad).await.invalid();
    }
    let body = h.delete(&format!("{base}/{}", id(&repo))).await.invalid();
    assert!(body["error"]["message"].as_str().unwrap().contains("session's life"), "{body}");
    let csv = h.upload("sales.csv", "text/csv", CSV).await;
    let file = h.post(&base, &json!({"type": "file", "file_id": id(&csv)})).await.ok();
    h.post(&format!("{base}/{}", id(&file)), &json!({"authorization_token": "x"})).await.invalid();

    // Nowhere in the log or the store's files.
    let log = serde_json::to_string(&entries(&h, id(&session))).unwrap();
    assert!(log.contains("octo-org/parser") && !log.contains(token) && !log.contains(rotated_token));
    let files = walk(&h.data_dir());
    assert!(files.len() > 3, "the store's files: {files:?}");
    for entry in files {
        let bytes = std::fs::read(&entry).unwrap();
        for secret in [token, rotated_token] {
            assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "{secret} is in {}", entry.display());
        }
    }

    // Validation of the other fields.
    let bad_repos = [
        (json!({"type": "github_repository", "url": "http://github.com/o/r"}), "url"),
        (json!({"type": "github_repository", "url": "https://user:pw@github.com/o/r"}), "url"),
        (json!({"type": "github_repository", "url": "git@github.com:o/r.git"}), "url"),
        (
            json!({"type": "github_repository", "url": "https://github.com/o/r", "checkout": {"type": "branch", "name": "--upload-pack=x"}}),
            "checkout",
        ),
        (
            json!({"type": "github_repository", "url": "https://github.com/o/r", "checkout": {"type": "commit", "sha": "abc"}}),
            "checkout",
        ),
        (
            json!({"type": "github_repository", "url": "https://github.com/o/r", "checkout": {"type": "tag", "name": "v1"}}),
            "checkout",
        ),
        (
            json!({"type": "github_repository", "url": "https://github.com/o/r", "mount_path": "/mnt/session/uploads/r"}),
            "mount_path",
        ),
        (json!({"type": "github_repository", "url": "https://github.com/o/r", "mount_path": "../r"}), "mount_path"),
        (json!({"type": "github_repository"}), "url"),
    ];
    for (resource, field) in bad_repos {
        let body = session_with(&h, json!([resource])).await.invalid();
        assert!(body["error"]["message"].as_str().unwrap().contains(field), "{field}: {body}");
    }
    let ok = session_with(
        &h,
        json!([{"type": "github_repository", "url": "https://git.example.com/team/app.git", "mount_path": "/workspace/src/app",
                "checkout": {"type": "commit", "sha": "0123456789abcdef0123456789abcdef01234567"}}]),
    )
    .await
    .ok();
    assert_eq!(ok["resources"][0]["mount_path"], "/workspace/src/app");
    assert_eq!(ok["resources"][0]["url"], "https://git.example.com/team/app.git");
}

/// A repository's default mount path (`/workspace/<repo name>`) skips the
/// checks an explicit `mount_path` gets: `mount::repository_path` builds it
/// from the URL's last segment without the component length check (and
/// `RepoUrl::parse` bounds only the whole URL, at 2048 bytes). A URL whose
/// name is longer than a path component can be is accepted (200), recorded
/// with a mount path `MountPath::from_absolute` cannot parse back, and every
/// clone then fails (`git::clone_one`: "is not a workspace path"), while the
/// same path given as `mount_path` is refused up front.
#[tokio::test]
async fn a_repository_name_too_long_for_its_default_mount_path_is_refused() {
    let h = Harness::new();
    let name = "a".repeat(300);
    let url = format!("https://github.com/o/{name}");
    let explicit = json!([{"type": "github_repository", "url": url, "mount_path": format!("/workspace/{name}")}]);
    session_with(&h, explicit).await.invalid();
    let resp = session_with(&h, json!([{"type": "github_repository", "url": url}])).await;
    assert_eq!(
        resp.status.as_u16(),
        400,
        "the default mount path /workspace/<300 bytes> was accepted: {}",
        resp.text()
    );
}

#[tokio::test]
async fn archived_and_deleted_sessions_refuse_changes() {
    let h = Harness::new();
    let csv = h.upload("sales.csv", "text/csv", CSV).await;
    let session = h.quick_session().await;
    let base = format!("/v1/sessions/{}/resources", id(&session));
    let added = h.post(&base, &json!({"type": "file", "file_id": id(&csv)})).await.ok();
    h.post_empty(&format!("/v1/sessions/{}/archive", id(&session))).await.ok();
    h.post(&base, &json!({"type": "file", "file_id": id(&csv), "mount_path": "x"})).await.invalid();
    h.delete(&format!("{base}/{}", id(&added))).await.invalid();
    assert_eq!(ids(&h.get(&base).await.ok()), [id(&added).to_owned()], "reads still work");
    let other = h.quick_session().await;
    h.delete(&format!("/v1/sessions/{}", id(&other))).await.ok();
    h.post(&format!("/v1/sessions/{}/resources", id(&other)), &json!({"type": "file", "file_id": id(&csv)}))
        .await
        .not_found();
}

#[tokio::test]
async fn a_fork_at_any_point_sees_the_mounted_files_of_that_point() {
    // Goal: the uploads directory as of any seq follows from the log alone.
    // Method: mount two files, then replace one and remove the other; for
    // each prefix of the log, materialize the recorded files into a fresh
    // directory (what a fork there mounts) and compare with what the session
    // had at that point.
    let h = Harness::new();
    let csv = h.upload("sales.csv", "text/csv", CSV).await;
    let pdf = h.upload("q1.pdf", "application/pdf", PDF).await;
    let session =
        session_with(&h, json!([{"type": "file", "file_id": id(&csv), "mount_path": "data/in.csv"}])).await.ok();
    let sid = id(&session);
    let base = format!("/v1/sessions/{sid}/resources");
    let after_create = entries(&h, sid).len();
    let pdf_resource = h.post(&base, &json!({"type": "file", "file_id": id(&pdf), "mount_path": "q1.pdf"})).await.ok();
    let after_add = entries(&h, sid).len();
    let csv_resource = session["resources"][0].clone();
    h.delete(&format!("{base}/{}", id(&csv_resource))).await.ok();
    let log = entries(&h, sid);
    let fork_view = |n: usize| -> Vec<(String, Vec<u8>)> {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(&dir.path().join("uploads")).unwrap();
        let recorded = logbook_replay::resources::files_under(&log[..n], "/mnt/session/uploads");
        mount::materialize(h.state.store(), &root, &recorded).unwrap();
        let mut files: Vec<(String, Vec<u8>)> = walk(&dir.path().join("uploads"))
            .into_iter()
            .map(|p| {
                (p.strip_prefix(dir.path().join("uploads")).unwrap().display().to_string(), std::fs::read(&p).unwrap())
            })
            .collect();
        files.sort();
        files
    };
    assert_eq!(fork_view(after_create), [("data/in.csv".to_owned(), CSV.to_vec())]);
    assert_eq!(fork_view(after_add), [("data/in.csv".to_owned(), CSV.to_vec()), ("q1.pdf".to_owned(), PDF.to_vec())]);
    assert_eq!(fork_view(log.len()), [("q1.pdf".to_owned(), PDF.to_vec())]);
    // And the resource list at each point.
    let listed =
        |n: usize| logbook_replay::resources::resources(&log[..n]).iter().map(|r| r.id.to_string()).collect::<Vec<_>>();
    assert_eq!(listed(after_create), [id(&csv_resource).to_owned()]);
    assert_eq!(listed(after_add), [id(&csv_resource).to_owned(), id(&pdf_resource).to_owned()]);
    assert_eq!(listed(log.len()), [id(&pdf_resource).to_owned()]);
}

/// Every regular file below `dir` (a directory that cannot be read fails the test).
fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            out.extend(walk(&entry.path()));
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
    out
}

#[tokio::test]
async fn deleting_a_session_removes_its_directories() {
    // Goal: a deleted session's directories (workspace, mounted files,
    // outputs) do not outlive it on disk; an archived one keeps them.
    // Method: two sessions with a mounted file; one archived, one deleted.
    let h = Harness::new();
    let csv = h.upload("sales.csv", "text/csv", CSV).await;
    let kept = session_with(&h, json!([{"type": "file", "file_id": id(&csv)}])).await.ok();
    let gone = session_with(&h, json!([{"type": "file", "file_id": id(&csv)}])).await.ok();
    let dir = |session: &Value| h.data_dir().join("sandboxes").join(id(session));
    assert!(uploads(&h, id(&gone)).join(id(&csv)).exists(), "the mounted file is on disk");
    h.post_empty(&format!("/v1/sessions/{}/archive", id(&kept))).await.ok();
    h.delete(&format!("/v1/sessions/{}", id(&gone))).await.ok();
    assert!(!dir(&gone).exists(), "{} outlived its session", dir(&gone).display());
    assert!(uploads(&h, id(&kept)).join(id(&csv)).exists(), "an archived session keeps its files");
}
