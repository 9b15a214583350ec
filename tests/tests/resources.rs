//! End to end: repository resources cloned by the real `logbook` binary
//! from a git server on loopback (https, `git http-backend`), before the
//! agent starts.
//!
//! Goal: the default branch, a branch and a commit are checked out where the
//! resource says, owned by the sandbox user, with the real remote and no
//! credentials in the clone; each failure (wrong token, forbidden, missing
//! repository, missing branch, a host on a private address that is not
//! allowlisted) is the documented `repository_*_error` session error and the
//! turn still runs; rotating the token makes the next turn clone; a later
//! session clones through the server's cache and transfers far less; and the
//! tokens appear nowhere: not in the data directory (store, logs of git,
//! clones, cache), the server's output, or the events.
//! Method: the fake model answers every request with text; sessions are
//! created with resources, a message starts a turn, and the test waits (with
//! a deadline, polling the event list) for its idle. Finally `logbook rerun`
//! checks that the logs, repository errors included, are consistent.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use logbook_core::Event;
use logbook_core::event::ResourceChange;
use logbook_store::{Read, SledOptions, SledStore};
use logbook_tests::fake_model::FakeModel;
use logbook_tests::git_server::{CommitSpec, GitServer, git, make_repo};
use logbook_tests::server::{Api, Server, rerun_passes, types, user_message};
use serde_json::{Value, json};

const TOKEN: &str = "ghp_good_token_7c1e5a9b3d";
const WRONG_TOKEN: &str = "ghp_wrong_token_0f2d4b6a8c";
/// Deadline of one turn (clones included) on a loaded machine.
const TURN_DEADLINE: Duration = Duration::from_secs(120);

/// The server (echo tools, debug logs, `localhost` allowed as a git host that
/// is trusted through the git server's CA), and a client that waits long
/// enough for clones.
fn start(data: &Path, model: &FakeModel, git: &GitServer) -> (Server, Api) {
    let ca_file = git.ca_file().to_str().unwrap().to_owned();
    let env = [("LOGBOOK_LOG", "debug"), ("LOGBOOK_GIT_PRIVATE_HOSTS", "localhost"), ("LOGBOOK_GIT_CA_FILE", &ca_file)];
    let server = Server::start(data, model, &env);
    let api = Api::new(&server).with_turn_deadline(TURN_DEADLINE);
    (server, api)
}

/// A session with these resources; returns its id.
async fn new_session(api: &Api, resources: Value) -> String {
    let environment = json!({"name": format!("env-{}", rand::random::<u64>())});
    api.session_with_fields(json!({"name": "repo-agent"}), environment, json!({"resources": resources})).await
}

/// Sends a message and waits for the `n`-th idle; returns every event.
async fn turn(api: &Api, session: &str, n: usize) -> Vec<Value> {
    api.send(session, user_message("go")).await;
    api.wait_idle(session, n).await
}

fn errors(events: &[Value]) -> Vec<Value> {
    events.iter().filter(|e| e["type"] == "session.error").map(|e| e["error"].clone()).collect()
}

fn workspace(data: &Path, session: &str) -> PathBuf {
    data.join("sandboxes").join(session).join("workspace")
}

/// The sandbox user when the tests run as root (the server gives files to
/// it), else the tests' own user.
fn expected_owner(scratch: &Path) -> u32 {
    let own = std::fs::metadata(scratch).unwrap().uid();
    if own == 0 { 65534 } else { own }
}

/// The repository served to the tests: two commits on main (the second adds a
/// large, incompressible file, so a clone transfers a sizeable pack) and a
/// `feature` branch. Returns (main's first, main's second, feature) shas.
fn repositories(root: &Path) -> (String, String, String) {
    // xorshift64*: bytes zlib cannot compress.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let big: Vec<u8> = (0..400_000)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect();
    let commits = [
        CommitSpec { branch: "main", files: vec![("README.md", b"# parser v1\n".to_vec())] },
        CommitSpec {
            branch: "main",
            files: vec![("README.md", b"# parser v2\n".to_vec()), ("data/big.bin", big.clone())],
        },
        CommitSpec { branch: "feature", files: vec![("feature.txt", b"feature work\n".to_vec())] },
    ];
    let shas = make_repo(root, "private/parser.git", &commits).unwrap();
    make_repo(root, "public/tools.git", &commits[..1]).unwrap();
    make_repo(root, "forbidden/secret.git", &commits[..1]).unwrap();
    make_repo(root, "public/ssrf.git", &commits[..1]).unwrap();
    (shas[0].clone(), shas[1].clone(), shas[2].clone())
}

/// Asserts the secrets appear in no file under `data`, not in `output` and not in `events`.
fn assert_nowhere(data: &Path, output: &str, events: &str, secrets: &[&str]) {
    let mut files = Vec::new();
    let mut stack = vec![data.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
    }
    assert!(files.len() > 10, "the data directory holds the store, the cache and the clones");
    for secret in secrets {
        for file in &files {
            let bytes = std::fs::read(file).unwrap();
            assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "{secret} is in {}", file.display());
        }
        assert!(!output.contains(secret), "{secret} is in the server's output");
        assert!(!events.contains(secret), "{secret} is in the events");
    }
}

/// Stops the server and checks every session's log with `logbook rerun`;
/// returns what the server wrote to stderr.
fn rerun_check(server: Server, data: &Path) -> String {
    let output = server.output();
    drop(server);
    rerun_passes(data);
    output
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repositories_are_checked_out_before_the_agent_starts() {
    let repos = tempfile::tempdir().unwrap();
    let (first, second, feature) = repositories(repos.path());
    let git_server = GitServer::start(repos.path(), TOKEN).unwrap();
    let model = FakeModel::start(Vec::new()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (server, api) = start(&data, &model, &git_server);
    let url = git_server.url("private/parser.git");

    let default =
        new_session(&api, json!([{"type": "github_repository", "url": url, "authorization_token": TOKEN}])).await;
    let branch = new_session(
        &api,
        json!([{"type": "github_repository", "url": url, "authorization_token": TOKEN,
                         "checkout": {"type": "branch", "name": "feature"}, "mount_path": "/workspace/src/parser"}]),
    )
    .await;
    let commit = new_session(
        &api,
        json!([{"type": "github_repository", "url": url, "authorization_token": TOKEN,
                         "checkout": {"type": "commit", "sha": first}},
                        {"type": "github_repository", "url": git_server.url("public/tools.git")}]),
    )
    .await;
    let mut all_events = String::new();
    for session in [&default, &branch, &commit] {
        let events = turn(&api, session, 1).await;
        assert_eq!(errors(&events), Vec::<Value>::new(), "{session}");
        assert_eq!(
            types(&events),
            [
                "user.message",
                "session.status_running",
                "session.thread_status_running",
                "span.model_request_start",
                "agent.message",
                "span.model_request_end",
                "session.usage",
                "session.status_idle"
            ]
        );
        all_events.push_str(&serde_json::to_string(&events).unwrap());
        let object = api.get(&format!("/v1/sessions/{session}")).await;
        all_events.push_str(&object.to_string());
    }

    let head = |path: &Path| git(path, &["rev-parse", "HEAD"]).unwrap().trim().to_owned();
    let repo = workspace(&data, &default).join("parser");
    assert_eq!(head(&repo), second);
    assert_eq!(git(&repo, &["rev-parse", "--abbrev-ref", "HEAD"]).unwrap().trim(), "main");
    assert_eq!(std::fs::read(repo.join("README.md")).unwrap(), b"# parser v2\n");
    assert_eq!(git(&repo, &["remote", "get-url", "origin"]).unwrap().trim(), url);
    assert_eq!(std::fs::metadata(repo.join("README.md")).unwrap().uid(), expected_owner(dir.path()));
    assert_eq!(std::fs::metadata(repo.join(".git/config")).unwrap().uid(), expected_owner(dir.path()));
    assert_eq!(git(&repo, &["status", "--porcelain"]).unwrap(), "", "a clean checkout");

    let repo = workspace(&data, &branch).join("src/parser");
    assert_eq!(head(&repo), feature);
    assert_eq!(git(&repo, &["rev-parse", "--abbrev-ref", "HEAD"]).unwrap().trim(), "feature");
    assert_eq!(std::fs::read(repo.join("feature.txt")).unwrap(), b"feature work\n");
    assert!(!workspace(&data, &branch).join("parser").exists());

    let repo = workspace(&data, &commit).join("parser");
    assert_eq!(head(&repo), first);
    assert_eq!(git(&repo, &["rev-parse", "--abbrev-ref", "HEAD"]).unwrap().trim(), "HEAD", "detached");
    assert_eq!(std::fs::read(repo.join("README.md")).unwrap(), b"# parser v1\n");
    assert!(workspace(&data, &commit).join("tools/README.md").is_file(), "a public repository needs no token");

    // The repository's state is in the log: its clone is one of its records.
    let resources = api.get(&format!("/v1/sessions/{commit}/resources")).await;
    assert_eq!(resources["data"].as_array().unwrap().len(), 2);

    let output = rerun_check(server, &data);
    assert!(output.contains("repository cloned"), "the server logged the clones");
    assert_nowhere(&data, &output, &all_events, &[TOKEN]);

    // The log records each clone's commit: the repository's state for a fork.
    let store = SledStore::open(&data, &SledOptions { cache_capacity_bytes: 8 << 20 }).unwrap();
    for (session, want) in [(&default, &second), (&branch, &feature), (&commit, &first)] {
        let id: logbook_core::SessionId = session.parse().unwrap();
        let cloned: Vec<String> = store
            .read(id, logbook_core::Seq::ZERO, 1000)
            .unwrap()
            .iter()
            .filter_map(|record| {
                let Event::SessionResource(resource) = record.entry().unwrap().event else { return None };
                let ResourceChange::RepositoryCloned { commit } = resource.change else { return None };
                Some(commit)
            })
            .collect();
        assert_eq!(cloned.first(), Some(want), "{session}: {cloned:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_failures_are_session_errors_and_the_session_still_runs() {
    let repos = tempfile::tempdir().unwrap();
    let (_, second, _) = repositories(repos.path());
    let git_server = GitServer::start(repos.path(), TOKEN).unwrap();
    let model = FakeModel::start(Vec::new()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (server, api) = start(&data, &model, &git_server);
    let url = git_server.url("private/parser.git");
    let cases = [
        (json!({"url": url, "authorization_token": WRONG_TOKEN}), "repository_authentication_error"),
        (json!({"url": url}), "repository_authentication_error"),
        (json!({"url": git_server.url("forbidden/secret.git")}), "repository_forbidden_error"),
        (json!({"url": git_server.url("public/missing.git")}), "repository_not_found_error"),
        (
            json!({"url": url, "authorization_token": TOKEN, "checkout": {"type": "branch", "name": "no-such-branch"}}),
            "repository_checkout_error",
        ),
        (
            json!({"url": url, "authorization_token": TOKEN, "checkout": {"type": "commit", "sha": "0".repeat(40)}}),
            "repository_checkout_error",
        ),
        // 127.0.0.1 is not on the allowlist (only `localhost` is): refused before connecting.
        (json!({"url": git_server.ip_url("public/ssrf.git")}), "repository_clone_error"),
    ];
    let mut all_events = String::new();
    let mut wrong_token_session = String::new();
    for (idx, (resource, expected)) in cases.iter().enumerate() {
        let mut resource = resource.clone();
        resource["type"] = json!("github_repository");
        let session = new_session(&api, json!([resource])).await;
        let events = turn(&api, &session, 1).await;
        all_events.push_str(&serde_json::to_string(&events).unwrap());
        let errors = errors(&events);
        assert_eq!(errors.len(), 1, "{expected}: {errors:?}");
        assert_eq!(errors[0]["type"], *expected, "{}", errors[0]);
        assert_eq!(errors[0]["retry_status"], json!({"type": "retrying"}));
        assert_eq!(errors[0]["repository_url"], resource["url"]);
        // The error comes before the agent starts, and the turn still runs.
        let order = types(&events);
        let error_at = order.iter().position(|t| t == "session.error").unwrap();
        let model_at = order.iter().position(|t| t == "span.model_request_start").unwrap();
        assert!(error_at < model_at, "{order:?}");
        assert!(order.contains(&"agent.message".to_owned()), "{order:?}");
        let idle = events.iter().rfind(|e| e["type"] == "session.status_idle").unwrap();
        assert_eq!(idle["stop_reason"]["type"], "end_turn");
        assert!(!workspace(&data, &session).join("parser").exists());
        if idx == 0 {
            wrong_token_session = session;
        }
    }
    assert!(!git_server.served().iter().any(|s| s.path.contains("ssrf")), "a refused host is never contacted");
    assert!(all_events.contains("not a public address"), "the refusal says why");

    // Rotating the token makes the next turn clone.
    let resources = api.get(&format!("/v1/sessions/{wrong_token_session}/resources")).await;
    let resource_id = resources["data"][0]["id"].as_str().unwrap().to_owned();
    let rotated = api
        .post(
            &format!("/v1/sessions/{wrong_token_session}/resources/{resource_id}"),
            json!({"authorization_token": TOKEN}),
        )
        .await;
    all_events.push_str(&rotated.to_string());
    let events = turn(&api, &wrong_token_session, 2).await;
    all_events.push_str(&serde_json::to_string(&events).unwrap());
    assert_eq!(errors(&events).len(), 1, "no new error after the rotation");
    let repo = workspace(&data, &wrong_token_session).join("parser");
    assert_eq!(git(&repo, &["rev-parse", "HEAD"]).unwrap().trim(), second);

    let output = rerun_check(server, &data);
    assert_nowhere(&data, &output, &all_events, &[TOKEN, WRONG_TOKEN]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_sessions_clone_through_the_cache() {
    // Goal: the second clone of a repository fetches only what changed (here
    // nothing), so it transfers far fewer bytes than the first. Method: the git
    // server records the bytes of every response; compare the pack transfers
    // (git-upload-pack responses) of the two sessions' clones.
    let repos = tempfile::tempdir().unwrap();
    repositories(repos.path());
    let git_server = GitServer::start(repos.path(), TOKEN).unwrap();
    let model = FakeModel::start(Vec::new()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (server, api) = start(&data, &model, &git_server);
    let resource = json!([{"type": "github_repository", "url": git_server.url("private/parser.git"),
                           "authorization_token": TOKEN}]);
    let pack_bytes = |served: &[logbook_tests::git_server::Served]| -> u64 {
        served.iter().filter(|s| s.path.ends_with("git-upload-pack")).map(|s| s.bytes).sum()
    };
    let first = new_session(&api, resource.clone()).await;
    turn(&api, &first, 1).await;
    let after_first = git_server.served();
    let second = new_session(&api, resource).await;
    turn(&api, &second, 1).await;
    let after_second = git_server.served();
    let first_bytes = pack_bytes(&after_first);
    let second_bytes = pack_bytes(&after_second[after_first.len()..]);
    assert!(first_bytes > 300_000, "the first clone transfers the large file: {first_bytes} bytes");
    assert!(
        second_bytes * 10 < first_bytes,
        "the cached clone transferred {second_bytes} bytes, the first {first_bytes}"
    );
    for session in [&first, &second] {
        assert!(workspace(&data, session).join("parser/data/big.bin").is_file());
    }
    // Each session has its own copy: no hard links into the cache.
    let meta = std::fs::metadata(workspace(&data, &second).join("parser/data/big.bin")).unwrap();
    assert_eq!(meta.nlink(), 1);
    rerun_check(server, &data);
}

/// DEFECT (local root code execution / token theft through git's repository
/// discovery): `ls-remote`, which carries the token, runs with the server's
/// temp directory (`/tmp`, writable by every local user) as its working
/// directory, with `safe.directory=*` on every git command. git therefore
/// discovers any `.git` a local user planted in `/tmp` (or above the
/// directory), trusts its config although another user owns it (the check
/// `safe.directory=*` turns off), and follows it: `core.askPass` runs a
/// program of that user's choosing as root whenever the forge answers 401 (a
/// wrong or missing token); `url.*.insteadOf` or `http.proxy` would send the
/// token elsewhere. Method: the server's `TMPDIR` holds a `.git` owned by
/// the sandbox user (standing for any unprivileged local user) whose
/// `core.askPass` writes a marker; a session with a wrong token makes the
/// clone meet a 401; the marker must not appear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_never_uses_a_repository_another_user_planted_above_its_working_directory() {
    let repos = tempfile::tempdir().unwrap();
    repositories(repos.path());
    let git_server = GitServer::start(repos.path(), TOKEN).unwrap();
    let model = FakeModel::start(Vec::new()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    git(&tmp, &["init", "--quiet", "."]).unwrap();
    let marker = tmp.join("askpass-ran");
    let askpass = tmp.join("askpass.sh");
    std::fs::write(&askpass, format!("#!/bin/sh\nid -u >> {}\necho x\n", marker.display())).unwrap();
    std::fs::set_permissions(&askpass, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    git(&tmp, &["config", "core.askPass", askpass.to_str().unwrap()]).unwrap();
    let status = std::process::Command::new("chown")
        .args(["-R", "65534:65534", tmp.join(".git").to_str().unwrap(), askpass.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    let ca_file = git_server.ca_file().to_str().unwrap().to_owned();
    let env = [
        ("LOGBOOK_GIT_PRIVATE_HOSTS", "localhost"),
        ("LOGBOOK_GIT_CA_FILE", ca_file.as_str()),
        ("TMPDIR", tmp.to_str().unwrap()),
    ];
    let server = Server::start(&data, &model, &env);
    let api = Api::new(&server).with_turn_deadline(TURN_DEADLINE);
    let url = git_server.url("private/parser.git");
    let session =
        new_session(&api, json!([{"type": "github_repository", "url": url, "authorization_token": WRONG_TOKEN}])).await;
    let events = turn(&api, &session, 1).await;
    assert_eq!(errors(&events).len(), 1, "the clone fails: {:?}", errors(&events));
    drop(server);
    let ran = std::fs::read_to_string(&marker).unwrap_or_default();
    assert!(ran.is_empty(), "the planted core.askPass ran as uid(s) {:?}", ran.lines().collect::<Vec<_>>());
}

/// Defect (review, tools): one session's clone stalls the turns of other
/// sessions, whoever owns them. `clone_pending` (the hook every turn start
/// awaits) takes the session's task lock, which is one of 64 stripes shared
/// by every session whose id ends in the same byte (`resources::stripe`),
/// and holds it through every git command of the clone, each allowed
/// `GIT_TIMEOUT` (600 s). A repository host that accepts the connection and
/// never answers (any tenant can name one) therefore holds the stripe for
/// minutes, and every other session of the stripe, even one with no
/// repository at all, cannot start a turn until it lets go; a tenant with a
/// few hundred such sessions covers every stripe and stalls the server.
/// Method: a TCP listener that accepts and says nothing stands in for the
/// repository host. Session A names a repository there and starts a turn;
/// once the host has accepted A's connection (A holds its stripe), session
/// B, a session without resources created until its id falls in A's stripe,
/// sends a message. B's turn must end (the fake model answers at once)
/// while A's clone still hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_that_hangs_does_not_stall_the_turns_of_other_sessions() {
    /// The stripe of a session's task lock, as `resources::stripe` picks it.
    fn stripe(session: &str) -> u8 {
        let id: logbook_core::SessionId = session.parse().unwrap();
        id.to_bytes()[15] % 64
    }
    let silent = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
            let _ = accepted_tx.send(());
        }
    });

    let model = FakeModel::start(Vec::new()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = [("LOGBOOK_GIT_PRIVATE_HOSTS", "127.0.0.1"), ("LOGBOOK_RATE_CREATE", "100000")];
    let server = Server::start(&data, &model, &env);
    let api = Api::new(&server).with_turn_deadline(Duration::from_secs(90));

    let url = format!("https://127.0.0.1:{port}/team/stalls.git");
    let a = new_session(&api, json!([{"type": "github_repository", "url": url}])).await;
    let agent = api.post("/v1/agents", json!({"model": "claude-sonnet-4-6", "name": "plain"})).await;
    let environment = api.post("/v1/environments", json!({"name": "plain-env"})).await;
    let mut b = None;
    for _ in 0..2_000 {
        let session =
            api.post("/v1/sessions", json!({"agent": agent["id"], "environment_id": environment["id"]})).await;
        let id = session["id"].as_str().unwrap().to_owned();
        if stripe(&id) == stripe(&a) {
            b = Some(id);
            break;
        }
    }
    let b = b.expect("no session id fell in the first session's stripe");

    api.send(&a, user_message("clone and go")).await;
    let held = tokio::time::timeout(Duration::from_secs(60), accepted.recv()).await;
    assert!(matches!(held, Ok(Some(()))), "session A's clone never connected to the repository host");

    api.send(&b, user_message("hello")).await;
    let events = api.wait_idle(&b, 1).await;
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn", "{:?}", types(&events));
    holder.abort();
}

/// Defect (review, tools): a repository is cloned whatever its size, past
/// the sandbox's disk limit. The server clones as root into the shared
/// cache (`<data>/git-cache`) and then into the session's workspace, with no
/// bound but time (`GIT_TIMEOUT`, 600 s per git command): a tenant naming a
/// huge repository (or a host that streams an endless pack) fills the
/// host's disk for every session and the store, and the session's
/// workspace ends up far over the limit the sandbox is held to (its next
/// jail starts read-only). Method: a sandboxed server whose sessions may
/// hold 1 MB (`LOGBOOK_SANDBOX_DISK_MB=1`) and a public repository holding
/// a 3 MB incompressible file; after the turn the session's workspace must
/// not hold more than the limit, the clone must have failed as a
/// `repository_clone_error` naming the limit, and the git cache must keep
/// nothing of the fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_larger_than_the_sandboxs_disk_limit_is_not_cloned_into_it() {
    const LIMIT_BYTES: u64 = 1_000_000;
    let repos = tempfile::tempdir().unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let big: Vec<u8> = (0..3_000_000)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8
        })
        .collect();
    let commits = [CommitSpec { branch: "main", files: vec![("blob.bin", big)] }];
    make_repo(repos.path(), "public/huge.git", &commits).unwrap();
    let git_server = GitServer::start(repos.path(), TOKEN).unwrap();
    let model = FakeModel::start(Vec::new()).unwrap();
    let (_dir, data) = logbook_tests::server::sandbox_data_dir();
    let ca_file = git_server.ca_file().to_str().unwrap().to_owned();
    let env = [
        ("LOGBOOK_GIT_PRIVATE_HOSTS", "localhost"),
        ("LOGBOOK_GIT_CA_FILE", ca_file.as_str()),
        ("LOGBOOK_SANDBOX_DISK_MB", "1"),
    ];
    let server = Server::start_sandboxed(&data, &model, &env);
    let api = Api::new(&server).with_turn_deadline(TURN_DEADLINE);
    let session =
        new_session(&api, json!([{"type": "github_repository", "url": git_server.url("public/huge.git")}])).await;
    let events = turn(&api, &session, 1).await;

    let root = logbook_server::sandbox::layout::sandboxes_root(&data).join(&session).join("workspace");
    let mut held = 0u64;
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                held += meta.len();
            }
        }
    }
    assert!(
        held <= LIMIT_BYTES,
        "the server cloned {held} bytes into a workspace limited to {LIMIT_BYTES} (errors: {:?})",
        errors(&events)
    );
    // The clone failed the documented way, saying why.
    let errors = errors(&events);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["type"], "repository_clone_error", "{errors:?}");
    let message = errors[0]["message"].as_str().unwrap();
    assert!(message.contains("larger than the session's disk limit of 1 MB"), "{message}");
    // The shared cache keeps nothing of the oversized fetch.
    let cache = data.join(logbook_server::resources::GIT_CACHE_SUBDIR);
    let cached: Vec<_> = std::fs::read_dir(&cache).unwrap().flatten().map(|entry| entry.path()).collect();
    assert!(cached.is_empty(), "the git cache kept {cached:?}");
}
