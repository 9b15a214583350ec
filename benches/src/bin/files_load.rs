//! Files and repositories through the real server, each next to a baseline
//! measured in the same run.
//!
//! - upload: a 64 MiB incompressible file through `POST /v1/files`, against
//!   the store's own blob writes of the same bytes in 8 MiB chunks (what the
//!   server does under the HTTP and multipart layers);
//! - mount: creating a session that mounts that file (contents copied from
//!   the store to the session's uploads directory), against `std::fs::write`
//!   of the same bytes;
//! - download: the same bytes captured as a session output and downloaded
//!   with `GET /v1/files/{id}/content`, against reading the blobs back from
//!   the store;
//! - clone: a turn whose session clones a repository (about 20 MiB of
//!   incompressible files and 2,000 small ones) from a loopback https git
//!   server, cold (empty cache) and warm (a later session), against a plain
//!   `git clone` of the same URL.
//!
//! Each measurement runs `LOGBOOK_FILES_ROUNDS` times (default 3); the best
//! round is reported (noise only slows a run down). Usage:
//! `cargo build --release -p logbook-server && cargo run --release -p
//! logbook-benches --bin files_load`. `LOGBOOK_BIN` overrides the server
//! binary (default `target/release/logbook`).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark fails by panicking")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use logbook_benches::serve;
use logbook_store::{Blobs, SledOptions, SledStore};
use logbook_tests::fake_model::FakeModel;
use logbook_tests::git_server::{CommitSpec, GitServer, make_repo};
use logbook_tests::server::{Api, Server, user_message};
use serde_json::{Value, json};

const TOKEN: &str = "bench-token";
const FILE_BYTES: usize = 64 * 1024 * 1024;
const CHUNK: usize = 8 * 1024 * 1024;
/// How often a waiting benchmark lists events or files: turns are timed, so
/// the wait adds at most this much to each.
const POLL: Duration = Duration::from_millis(5);
/// A turn that has not ended by then (a clone on a loaded machine takes
/// seconds) has hung: the benchmark fails.
const TURN_DEADLINE: Duration = Duration::from_secs(600);

fn rounds() -> usize {
    std::env::var("LOGBOOK_FILES_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3)
}

/// Incompressible bytes (xorshift64*).
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..n)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

/// The server with sandboxed tools, `localhost` allowed as a git host
/// trusted through the git server's CA.
fn start(data: &Path, model: &FakeModel, git: &GitServer) -> Server {
    serve::launch(data)
        .model(model)
        .env("LOGBOOK_GIT_PRIVATE_HOSTS", "localhost")
        .env("LOGBOOK_GIT_CA_FILE", git.ca_file())
        .start()
}

/// A session with these resources; returns its id.
async fn new_session(api: &Api, resources: Value) -> String {
    let environment = json!({"name": format!("e{}", rand::random::<u64>())});
    api.session_with_fields(json!({"model": "m", "name": "b"}), environment, json!({"resources": resources})).await
}

/// Sends a message and waits for the session's `n`-th idle, which must come
/// without a session error.
async fn turn(api: &Api, session: &str, n: usize) {
    api.send(session, user_message("go")).await;
    let events = api.wait_idle(session, n).await;
    assert!(!events.iter().any(|e| e["type"] == "session.error"), "{events:?}");
}

/// Waits for the session's output `name` and returns its id.
async fn wait_output(api: &Api, session: &str, name: &str) -> String {
    loop {
        let page = api.get(&format!("/v1/files?scope_id={session}")).await;
        if let Some(file) = page["data"].as_array().unwrap().iter().find(|f| f["filename"] == name) {
            return file["id"].as_str().unwrap().to_owned();
        }
        tokio::time::sleep(POLL).await;
    }
}

fn mib_per_s(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / took.as_secs_f64()
}

fn best(times: &[Duration]) -> Duration {
    times.iter().copied().min().unwrap_or_default()
}

fn line(what: &str, ours: Duration, base: Duration, bytes: Option<usize>) {
    match bytes {
        Some(bytes) => println!(
            "{what:<34} {:>8.1} MiB/s   baseline {:>8.1} MiB/s   ratio {:>5.2}",
            mib_per_s(bytes, ours),
            mib_per_s(bytes, base),
            ours.as_secs_f64() / base.as_secs_f64()
        ),
        None => println!(
            "{what:<34} {:>8.0} ms      baseline {:>8.0} ms      ratio {:>5.2}",
            ours.as_secs_f64() * 1000.0,
            base.as_secs_f64() * 1000.0,
            ours.as_secs_f64() / base.as_secs_f64()
        ),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let scratch = tempfile::tempdir_in("target").unwrap();
    let repos = scratch.path().join("repos");
    let big_files: Vec<(String, Vec<u8>)> =
        (0..20).map(|n| (format!("data/blob{n}.bin"), noise(1 << 20, n + 7))).collect();
    let small_files: Vec<(String, Vec<u8>)> = (0..2000)
        .map(|n| (format!("src/m{}/f{n}.rs", n % 40), format!("pub fn f{n}() -> u32 {{ {n} }}\n").into_bytes()))
        .collect();
    let files: Vec<(&str, Vec<u8>)> =
        big_files.iter().chain(small_files.iter()).map(|(p, b)| (p.as_str(), b.clone())).collect();
    make_repo(&repos, "private/bench.git", &[CommitSpec { branch: "main", files }]).unwrap();
    let git_server = GitServer::start(&repos, TOKEN).unwrap();
    let model = FakeModel::start(Vec::new()).unwrap();
    let data = scratch.path().join("data");
    let server = start(&data, &model, &git_server);
    let api = Api::new(&server).with_poll_interval(POLL).with_turn_deadline(TURN_DEADLINE);
    let bytes = noise(FILE_BYTES, 42);
    println!("files_load: {} rounds, best of each; ratio = ours / baseline time (lower is better)", rounds());

    // Upload vs the store's own blob writes (a separate store on the same disk).
    let (mut upload_times, mut put_times) = (Vec::new(), Vec::new());
    let mut file_id = String::new();
    let baseline_dir = tempfile::tempdir_in("target").unwrap();
    let baseline = SledStore::open(&baseline_dir.path().join("data"), &SledOptions::default()).unwrap();
    baseline.put_blob(b"warm up").unwrap();
    for round in 0..rounds() {
        let mut varied = bytes.clone();
        varied[0] = round as u8; // new contents each round: nothing deduplicated
        let started = Instant::now();
        file_id = api.upload("noise.bin", &varied).await;
        upload_times.push(started.elapsed());
        let started = Instant::now();
        for chunk in varied.chunks(CHUNK) {
            baseline.put_blob(chunk).unwrap();
        }
        put_times.push(started.elapsed());
    }
    line("upload 64 MiB (POST /v1/files)", best(&upload_times), best(&put_times), Some(FILE_BYTES));

    // Mount (session create) vs writing the same bytes to a file.
    let (mut mount_times, mut write_times) = (Vec::new(), Vec::new());
    for _ in 0..rounds() {
        let started = Instant::now();
        new_session(&api, json!([{"type": "file", "file_id": file_id}])).await;
        mount_times.push(started.elapsed());
        let path: PathBuf = scratch.path().join("plain.bin");
        let started = Instant::now();
        std::fs::write(&path, &bytes).unwrap();
        write_times.push(started.elapsed());
    }
    line("mount 64 MiB (session create)", best(&mount_times), best(&write_times), Some(FILE_BYTES));

    // Download of a captured output vs reading its blobs back from a store.
    let session = new_session(&api, json!([])).await;
    std::fs::write(data.join("sandboxes").join(&session).join("outputs/noise.bin"), &bytes).unwrap();
    turn(&api, &session, 1).await;
    let output = wait_output(&api, &session, "noise.bin").await;
    let dir = tempfile::tempdir_in("target").unwrap();
    let store = SledStore::open(&dir.path().join("data"), &SledOptions::default()).unwrap();
    let digests: Vec<_> = bytes.chunks(CHUNK).map(|chunk| store.put_blob(chunk).unwrap()).collect();
    let (mut download_times, mut read_times) = (Vec::new(), Vec::new());
    for _ in 0..rounds() {
        let started = Instant::now();
        let response = api.request(reqwest::Method::GET, &format!("/v1/files/{output}/content")).send().await.unwrap();
        let body = response.bytes().await.unwrap();
        download_times.push(started.elapsed());
        assert_eq!(body.len(), FILE_BYTES);
        let started = Instant::now();
        let mut total = 0;
        for digest in &digests {
            total += store.get_blob(*digest).unwrap().unwrap().len();
        }
        read_times.push(started.elapsed());
        assert_eq!(total, FILE_BYTES);
    }
    line("download 64 MiB (GET .../content)", best(&download_times), best(&read_times), Some(FILE_BYTES));

    // Clones: plain git, then a session's first (cold cache) and later (warm) clones.
    let url = git_server.url("private/bench.git");
    let basic = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{TOKEN}"))
    };
    let mut plain_times = Vec::new();
    for round in 0..rounds() {
        let target = scratch.path().join(format!("plain-clone-{round}"));
        let started = Instant::now();
        // A cleared environment, as the server runs git (GIT_SSL_CAINFO and
        // the like would override the CA given here).
        let status = Command::new("git")
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", "/nonexistent")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .args(["-c", &format!("http.extraHeader=Authorization: Basic {basic}")])
            .args(["-c", &format!("http.sslCAInfo={}", git_server.ca_file().display())])
            .args(["clone", "--quiet", &url])
            .arg(&target)
            .status()
            .unwrap();
        assert!(status.success());
        plain_times.push(started.elapsed());
    }
    let resource = json!([{"type": "github_repository", "url": url, "authorization_token": TOKEN}]);
    let cold_session = new_session(&api, resource.clone()).await;
    let started = Instant::now();
    turn(&api, &cold_session, 1).await;
    let cold = started.elapsed();
    let mut warm_times = Vec::new();
    for _ in 0..rounds() {
        let session = new_session(&api, resource.clone()).await;
        let started = Instant::now();
        turn(&api, &session, 1).await;
        warm_times.push(started.elapsed());
    }
    // A turn without a repository: the part of a turn that is not the clone.
    let mut bare_times = Vec::new();
    for _ in 0..rounds() {
        let session = new_session(&api, json!([])).await;
        let started = Instant::now();
        turn(&api, &session, 1).await;
        bare_times.push(started.elapsed());
    }
    line("turn with a cold clone", cold, best(&plain_times), None);
    line("turn with a warm clone (cache)", best(&warm_times), best(&plain_times), None);
    line("warm / cold clone turn", best(&warm_times), cold, None);
    line("turn without a repository", best(&bare_times), best(&plain_times), None);
    drop(server);
}
