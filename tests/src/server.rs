//! The real `logbook` binary as end-to-end tests drive it: started on a free
//! loopback port with a data directory and a fake model, and an HTTP client
//! for its API.
//!
//! [`Server::start`] waits for the "serving on" line and forwards the
//! server's stderr to the test's, prefixed; dropping the server kills it.
//! [`Api`] sends JSON with the test key and the beta header, and fails the test
//! on a non-success status unless asked for the raw response.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fake_model::FakeModel;

/// The API key every test server is seeded with.
pub const KEY: &str = "sk-logbook-runner00000000000000000000000001";
/// How long a test waits for a turn to end.
pub const TURN_DEADLINE: Duration = Duration::from_secs(30);

/// The `logbook` binary next to the running test executable
/// (`target/debug/deps/test-xxxx` -> `target/debug/logbook`).
pub fn logbook_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
    let bin = dir.join("logbook");
    assert!(bin.exists(), "{} is missing: build it first (cargo build -p logbook-server)", bin.display());
    bin
}

/// Which built-in tools a test server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tools {
    /// Calls echo their input (runner tests that need no sandbox).
    Echo,
    /// The real sandboxed tools.
    Sandbox,
}

/// A running server; killed when dropped.
#[derive(Debug)]
pub struct Server {
    child: Child,
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `logbook serve` on `data` against `model`, with echo tools and a
    /// short retry backoff, plus the extra environment `env`.
    pub fn start(data: &Path, model: &FakeModel, env: &[(&str, &str)]) -> Server {
        Server::start_with(data, model, env, Tools::Echo)
    }

    /// [`Server::start`] with the real sandboxed tools (needs root and
    /// bubblewrap; `data` should be reachable by the sandbox user, see
    /// `logbook_server::sandbox::layout::sandboxes_root`).
    pub fn start_sandboxed(data: &Path, model: &FakeModel, env: &[(&str, &str)]) -> Server {
        Server::start_with(data, model, env, Tools::Sandbox)
    }

    fn start_with(data: &Path, model: &FakeModel, env: &[(&str, &str)], tools: Tools) -> Server {
        let mut command = Command::new(logbook_bin());
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--rate-create", "0", "--rate-read", "0"])
            .arg("--data")
            .arg(data)
            .env("LOGBOOK_BOOTSTRAP_KEY", KEY)
            .env("ANTHROPIC_BASE_URL", model.base_url())
            .env("ANTHROPIC_API_KEY", "test-key")
            .env_remove("LOGBOOK_TOOLS")
            .env("LOGBOOK_RETRY_BASE_MS", "10")
            .env("LOGBOOK_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        match tools {
            Tools::Echo => {
                command.env("LOGBOOK_TOOLS", "echo");
            }
            Tools::Sandbox => {}
        }
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot start logbook: {e}"));
        let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
        let mut lines = BufReader::new(stderr).lines();
        let base = loop {
            let line = lines.next().unwrap_or_else(|| panic!("the server exited before serving"));
            let line = line.unwrap_or_default();
            if let Some(rest) = line.strip_prefix("logbook: serving on ") {
                break rest.split(' ').next().unwrap_or_default().to_owned();
            }
        };
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                eprintln!("[server] {line}");
            }
        });
        Server { child, base }
    }

    /// Stops the server (it is killed: no graceful shutdown).
    pub fn stop(self) {
        drop(self);
    }
}

/// Runs `logbook ARGS` to completion; returns its exit code, stdout and stderr.
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(logbook_bin()).args(args).output().unwrap_or_else(|e| panic!("cannot run logbook: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An HTTP client of one server.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    pub base: String,
}

impl Api {
    pub fn new(server: &Server) -> Api {
        Api { http: reqwest::Client::new(), base: server.base.clone() }
    }

    /// Sends a request; returns the status and the body (JSON, or the text as
    /// a JSON string).
    pub async fn raw(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("x-api-key", KEY)
            .header("anthropic-beta", "managed-agents-2026-04-01");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap_or_default();
        let body =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, body)
    }

    /// Sends a request and fails the test unless it succeeds.
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (status, body) = self.raw(method, path, body).await;
        assert!((200..300).contains(&status), "{path}: {status}: {body}");
        body
    }

    pub async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// Bytes of a GET (files, exports).
    pub async fn get_bytes(&self, path: &str) -> (u16, Vec<u8>) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .header("x-api-key", KEY)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = response.status().as_u16();
        (status, response.bytes().await.unwrap_or_default().to_vec())
    }

    /// Uploads `bytes` as `filename` through the Files API (multipart, as
    /// the SDK sends it); returns the file id.
    pub async fn upload(&self, filename: &str, bytes: &[u8]) -> String {
        const BOUNDARY: &str = "logbook-test-boundary-7d0e";
        let mut body = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(bytes);
        body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
        let response = self
            .http
            .post(format!("{}/v1/files", self.base))
            .header("x-api-key", KEY)
            .header("anthropic-beta", "files-api-2025-04-14")
            .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("upload: {e}"));
        let status = response.status().as_u16();
        let file: Value = response.json().await.unwrap_or_default();
        assert_eq!(status, 200, "upload: {file}");
        file["id"].as_str().unwrap_or_default().to_owned()
    }

    /// An agent with `tools` in a new environment, and a session of it.
    pub async fn session(&self, tools: Value) -> String {
        let agent = self.post("/v1/agents", json!({"model": "claude-sonnet-4-6", "name": "e2e", "tools": tools})).await;
        let env = self.post("/v1/environments", json!({"name": "e2e"})).await;
        let session = self.post("/v1/sessions", json!({"agent": agent["id"], "environment_id": env["id"]})).await;
        session["id"].as_str().unwrap_or_default().to_owned()
    }

    /// An agent from `agent` (its `model` and `name` filled in when absent)
    /// in an environment from `environment`, and a session of it.
    pub async fn session_with(&self, mut agent: Value, environment: Value) -> String {
        if let Some(fields) = agent.as_object_mut() {
            fields.entry("model").or_insert_with(|| json!("claude-sonnet-4-6"));
            fields.entry("name").or_insert_with(|| json!("e2e"));
        }
        let agent = self.post("/v1/agents", agent).await;
        let env = self.post("/v1/environments", environment).await;
        let session = self.post("/v1/sessions", json!({"agent": agent["id"], "environment_id": env["id"]})).await;
        session["id"].as_str().unwrap_or_default().to_owned()
    }

    /// The seqs of every record of `event_type` (internal ones included).
    pub async fn seqs_of(&self, session: &str, event_type: &str) -> Vec<u64> {
        let slice = self
            .get(&format!(
                "/x/v1/sessions/{session}/slice?types[]={event_type}&include_internal=true&budget_tokens=1000000&limit=10000"
            ))
            .await;
        slice["data"].as_array().into_iter().flatten().filter_map(|e| e["seq"].as_u64()).collect()
    }

    /// Checks that every model request `model` received (compaction summaries
    /// aside: they have no start of their own) equals the request the state
    /// endpoint rebuilds from the log just before its start (the recorded
    /// settings and the projected context); returns how many.
    pub async fn assert_requests_reproject(&self, session: &str, model: &FakeModel) -> usize {
        let received: Vec<Value> = model
            .requests()
            .into_iter()
            .map(|r| r.body)
            .filter(|body| !crate::fake_model::is_summary_request(body))
            .collect();
        self.assert_bodies_reproject(session, &received).await
    }

    /// Checks that `bodies`, in order, are the requests of the session's model
    /// calls as the state endpoint rebuilds them at the seq before each start.
    pub async fn assert_bodies_reproject(&self, session: &str, bodies: &[Value]) -> usize {
        let starts = self.seqs_of(session, "span.model_request_start").await;
        assert_eq!(starts.len(), bodies.len(), "one recorded start per request the model received");
        for (start, body) in starts.iter().zip(bodies) {
            let state = self.get(&format!("/x/v1/sessions/{session}/state?at_seq={}", start - 1)).await;
            assert_eq!(state["context"]["settings"], "recorded", "settings at {start}");
            assert_eq!(&state["context"]["request"], body, "the request of the call at seq {start}");
        }
        starts.len()
    }

    /// The workspace the state endpoint projects at `at`, as
    /// [`host_snapshot`] shows a directory: file bytes, `-> target` of links.
    pub async fn projected_files(&self, session: &str, at: u64) -> BTreeMap<String, Vec<u8>> {
        let state = self.get(&format!("/x/v1/sessions/{session}/state?at_seq={at}")).await;
        let mut projected = BTreeMap::new();
        for file in state["workspace"]["files"].as_array().into_iter().flatten() {
            let path = file["path"].as_str().unwrap_or_default().to_owned();
            let bytes = if file["type"] == "symlink" {
                format!("-> {}", file["target"].as_str().unwrap_or_default()).into_bytes()
            } else {
                let (status, bytes) =
                    self.get_bytes(&format!("/x/v1/sessions/{session}/files{path}?at_seq={at}")).await;
                assert_eq!(status, 200, "{path}");
                bytes
            };
            projected.insert(path, bytes);
        }
        projected
    }

    pub async fn send(&self, session: &str, events: Value) -> Value {
        self.post(&format!("/v1/sessions/{session}/events"), json!({ "events": events })).await
    }

    /// Every listed event of a session (first page of 1,000).
    pub async fn events(&self, session: &str) -> Vec<Value> {
        let page = self.get(&format!("/v1/sessions/{session}/events?limit=1000")).await;
        page["data"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until the `n`-th `session.status_idle` of the session is listed.
    pub async fn wait_idle(&self, session: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + TURN_DEADLINE;
        loop {
            let events = self.events(session).await;
            if events.iter().filter(|e| e["type"] == "session.status_idle").count() >= n {
                return events;
            }
            assert!(Instant::now() < deadline, "no idle #{n} within {TURN_DEADLINE:?}: {:#?}", types(&events));
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// The `type` of each event.
pub fn types(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["type"].as_str().unwrap_or_default().to_owned()).collect()
}

/// A one-event `user.message` list.
pub fn user_message(text: &str) -> Value {
    json!([{"type": "user.message", "content": [{"type": "text", "text": text}]}])
}

/// The files of a host directory, by sandbox path under `root`: bytes of
/// regular files, `-> target` of links. Panics (failing the test) when the
/// directory cannot be read.
pub fn host_snapshot(dir: &Path, root: &str) -> BTreeMap<String, Vec<u8>> {
    fn read(host: &Path, sandbox: &str, out: &mut BTreeMap<String, Vec<u8>>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(host)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let (host, sandbox) = (entry.path(), format!("{sandbox}/{name}"));
            let kind = entry.file_type()?;
            if kind.is_symlink() {
                out.insert(sandbox, format!("-> {}", std::fs::read_link(&host)?.display()).into_bytes());
            } else if kind.is_dir() {
                read(&host, &sandbox, out)?;
            } else {
                out.insert(sandbox, std::fs::read(&host)?);
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    read(dir, root, &mut out).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    out
}
