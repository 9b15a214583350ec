//! The real `logbook` binary as end-to-end tests (and the load benchmarks)
//! drive it: started on a free loopback port with a data directory and a fake
//! model, and an HTTP client for its API.
//!
//! [`Launch`] is how any `logbook serve` child is started: it waits for the
//! "serving on" line, keeps the server's stderr (forwarded to the test's,
//! prefixed, or read and dropped), and the [`Server`] it returns kills the
//! child when dropped. [`Server::start`] and [`Server::start_sandboxed`] are
//! the tests' usual launches. [`Api`] sends JSON with the server's key and the
//! beta header, and fails the test on a non-success status unless asked for
//! the raw response.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fake_model::FakeModel;

/// The API key every test server is seeded with.
pub const KEY: &str = "sk-logbook-runner00000000000000000000000001";
/// How long a test waits for a turn to end (see [`Api::with_turn_deadline`]).
pub const TURN_DEADLINE: Duration = Duration::from_secs(30);
/// How often [`Api::wait_idle`] lists the events (see [`Api::with_poll_interval`]).
pub const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// What a sandboxed server prints before serving when bash calls will fail.
const SANDBOX_PROBLEM: &str = "sandboxes cannot start";

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

/// What becomes of a server's stderr once it serves (the lines before are
/// always kept, see [`Server::output`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stderr {
    /// Printed on the test's stderr prefixed `[server] `, and kept.
    Forward,
    /// Read and dropped, so the server never blocks on a full pipe and
    /// nothing grows (benchmarks).
    Discard,
}

/// How a `logbook serve` child is started: `BIN serve --listen 127.0.0.1:0
/// --rate-create 0 --rate-read 0 --rate-work 0 --data DATA`, seeded with a key, logging
/// warnings, stdout dropped; more arguments and environment on top.
#[derive(Debug)]
pub struct Launch {
    command: Command,
    key: String,
    stderr: Stderr,
}

impl Launch {
    pub fn new(bin: &Path, data: &Path, key: &str) -> Launch {
        let mut command = Command::new(bin);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--rate-create", "0", "--rate-read", "0", "--rate-work", "0"])
            .arg("--data")
            .arg(data)
            .env("LOGBOOK_BOOTSTRAP_KEY", key)
            .env("LOGBOOK_LOG", "warn")
            // No disk reserve: a test that fills the disk (the one of the
            // reserve, which sets its own) must not make the others refuse
            // work. Given again, `env` replaces it.
            .env("LOGBOOK_DISK_RESERVE_MIB", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        Launch { command, key: key.to_owned(), stderr: Stderr::Forward }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Launch {
        self.command.arg(arg);
        self
    }

    /// Sets (or, given again, replaces) an environment variable of the server.
    pub fn env(mut self, name: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Launch {
        self.command.env(name, value);
        self
    }

    pub fn env_remove(mut self, name: impl AsRef<OsStr>) -> Launch {
        self.command.env_remove(name);
        self
    }

    /// Points the server's model client at `model`.
    pub fn model(self, model: &FakeModel) -> Launch {
        self.env("ANTHROPIC_BASE_URL", model.base_url()).env("ANTHROPIC_API_KEY", "test-key")
    }

    pub fn stderr(mut self, stderr: Stderr) -> Launch {
        self.stderr = stderr;
        self
    }

    /// Starts the server and waits until it serves; fails (panics) when it
    /// cannot start or exits first.
    pub fn start(self) -> Server {
        self.try_start().unwrap_or_else(|output| panic!("the server exited before serving: {output}"))
    }

    /// [`Launch::start`], returning what the server wrote to stderr when it
    /// exits before serving (it still panics when it cannot be spawned).
    pub fn try_start(mut self) -> Result<Server, String> {
        let program = self.command.get_program().to_string_lossy().into_owned();
        let mut child = self.command.spawn().unwrap_or_else(|e| {
            panic!("cannot start {program}: {e}; build it first (cargo build [--release] -p logbook-server)")
        });
        let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
        let output = Arc::new(Mutex::new(String::new()));
        let mut lines = BufReader::new(stderr).lines();
        let base = loop {
            let Some(line) = lines.next() else {
                let status = child.wait().map(|status| status.to_string()).unwrap_or_else(|e| e.to_string());
                let text = output.lock().unwrap_or_else(PoisonError::into_inner).clone();
                return Err(format!("{status}; {text}"));
            };
            let line = line.unwrap_or_else(|e| panic!("reading the server's stderr: {e}"));
            keep_line(&output, &line);
            if let Some(rest) = line.strip_prefix("logbook: serving on ") {
                break rest.split(' ').next().unwrap_or_default().to_owned();
            }
        };
        let sink = Arc::clone(&output);
        let mode = self.stderr;
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                match mode {
                    Stderr::Forward => {
                        eprintln!("[server] {line}");
                        keep_line(&sink, &line);
                    }
                    Stderr::Discard => {}
                }
            }
        });
        Ok(Server { child, base, key: self.key, output })
    }
}

fn keep_line(output: &Mutex<String>, line: &str) {
    let mut text = output.lock().unwrap_or_else(PoisonError::into_inner);
    text.push_str(line);
    text.push('\n');
}

/// A running server; killed when dropped.
#[derive(Debug)]
pub struct Server {
    child: Child,
    pub base: String,
    key: String,
    output: Arc<Mutex<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `logbook serve` on `data` against `model`, with echo tools and a
    /// short retry backoff, plus the extra environment `env` (which may
    /// replace any of those settings).
    pub fn start(data: &Path, model: &FakeModel, env: &[(&str, &str)]) -> Server {
        Server::start_with(data, model, env, Tools::Echo)
    }

    /// [`Server::start`] with the real sandboxed tools (needs root and
    /// bubblewrap; `data` should be reachable by the sandbox user, see
    /// `logbook_server::sandbox::layout::sandboxes_root`). Fails when the
    /// server says its sandboxes cannot start.
    pub fn start_sandboxed(data: &Path, model: &FakeModel, env: &[(&str, &str)]) -> Server {
        let server = Server::start_with(data, model, env, Tools::Sandbox);
        let output = server.output();
        assert!(!output.contains(SANDBOX_PROBLEM), "{output}");
        server
    }

    fn start_with(data: &Path, model: &FakeModel, env: &[(&str, &str)], tools: Tools) -> Server {
        let mut launch = Launch::new(&logbook_bin(), data, KEY)
            .model(model)
            .env_remove("LOGBOOK_TOOLS")
            .env("LOGBOOK_RETRY_BASE_MS", "10");
        match tools {
            Tools::Echo => launch = launch.env("LOGBOOK_TOOLS", "echo"),
            Tools::Sandbox => {}
        }
        for (name, value) in env {
            launch = launch.env(name, value);
        }
        launch.start()
    }

    /// Everything the server wrote to stderr so far, a line each (with
    /// [`Stderr::Discard`], only what it wrote before serving).
    pub fn output(&self) -> String {
        self.output.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the server exits of itself (say, killed by a fault
    /// injector) and returns how it ended. Blocking.
    pub fn wait_exit(mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait()
    }

    /// How the server ended, if it has (without waiting).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Stops the server (it is killed: no graceful shutdown).
    pub fn stop(self) {
        drop(self);
    }
}

/// A temporary directory the sandbox uid can traverse (a tempdir is 0700),
/// and the data directory to use inside it. Keep the `TempDir` alive.
pub fn sandbox_data_dir() -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("a temporary directory: {e}"));
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.path().display()));
    let data = dir.path().join("data");
    (dir, data)
}

/// Runs `logbook ARGS` to completion; returns its exit code, stdout and stderr.
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    run_cli_env(args, &[])
}

/// [`run_cli`] with extra environment variables.
pub fn run_cli_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(logbook_bin())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot run logbook: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `logbook rerun --data DATA` and fails the test unless every recorded
/// decision follows from the logs; returns rerun's stderr.
pub fn rerun_passes(data: &Path) -> String {
    let out = Command::new(logbook_bin())
        .arg("rerun")
        .arg("--data")
        .arg(data)
        .output()
        .unwrap_or_else(|e| panic!("cannot run logbook rerun: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "rerun found divergent decisions:\n{stderr}");
    stderr
}

/// An HTTP client of one server.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    pub base: String,
    key: String,
    turn_deadline: Duration,
    poll_interval: Duration,
}

impl Api {
    pub fn new(server: &Server) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: server.base.clone(),
            key: server.key.clone(),
            turn_deadline: TURN_DEADLINE,
            poll_interval: POLL_INTERVAL,
        }
    }

    /// How long [`Api::wait_idle`] waits (sandboxes and clones are slower
    /// than echo tools).
    pub fn with_turn_deadline(mut self, deadline: Duration) -> Api {
        self.turn_deadline = deadline;
        self
    }

    /// How often [`Api::wait_idle`] lists the events (a benchmark that times
    /// turns polls often).
    pub fn with_poll_interval(mut self, interval: Duration) -> Api {
        self.poll_interval = interval;
        self
    }

    /// A request to `path` with the server's key (and no other header), on
    /// this client's pooled connections.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base)).header("x-api-key", &self.key)
    }

    /// Sends a request; returns the status and the body (JSON, or the text as
    /// a JSON string).
    pub async fn raw(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.try_raw(method, path, body).await.unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// [`Api::raw`], with the error of a request that got no answer (a
    /// server that died) instead of a panic.
    pub async fn try_raw(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), reqwest::Error> {
        let mut request = self.request(method, path).header("anthropic-beta", "managed-agents-2026-04-01");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        // A body cut short is no answer.
        let bytes = response.bytes().await?;
        let body =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        Ok((status, body))
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
        let response = self.request(reqwest::Method::GET, path).send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
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
            .request(reqwest::Method::POST, "/v1/files")
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
    pub async fn session_with(&self, agent: Value, environment: Value) -> String {
        self.session_with_fields(agent, environment, json!({})).await
    }

    /// [`Api::session_with`], the session created with `fields` (an object:
    /// `resources`, `budget`...) besides its agent and environment.
    pub async fn session_with_fields(&self, mut agent: Value, environment: Value, fields: Value) -> String {
        if let Some(agent) = agent.as_object_mut() {
            agent.entry("model").or_insert_with(|| json!("claude-sonnet-4-6"));
            agent.entry("name").or_insert_with(|| json!("e2e"));
        }
        let agent = self.post("/v1/agents", agent).await;
        let env = self.post("/v1/environments", environment).await;
        let mut body = json!({"agent": agent["id"], "environment_id": env["id"]});
        if let (Some(body), Some(fields)) = (body.as_object_mut(), fields.as_object()) {
            body.extend(fields.clone());
        }
        let session = self.post("/v1/sessions", body).await;
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

    /// Waits until the `n`-th `session.status_idle` of the session is listed;
    /// returns every listed event.
    pub async fn wait_idle(&self, session: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + self.turn_deadline;
        loop {
            let events = self.events(session).await;
            if events.iter().filter(|e| e["type"] == "session.status_idle").count() >= n {
                return events;
            }
            assert!(Instant::now() < deadline, "no idle #{n} within {:?}: {:#?}", self.turn_deadline, types(&events));
            tokio::time::sleep(self.poll_interval).await;
        }
    }

    /// The value of the gauge or counter `name` in the server's `/metrics`;
    /// fails if it reports none.
    pub async fn metric(&self, name: &str) -> f64 {
        let response =
            self.request(reqwest::Method::GET, "/metrics").send().await.unwrap_or_else(|e| panic!("GET /metrics: {e}"));
        let text = response.text().await.unwrap_or_else(|e| panic!("the metrics text: {e}"));
        let prefix = format!("{name} ");
        text.lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("/metrics reports no {name}: {text}"))
    }

    /// Waits until no session of the server has a runner task (each woke,
    /// did its work and found nothing more to do), as `/metrics` reports it:
    /// from then on, the logs hold everything the runner was going to append
    /// for what was sent so far. Fails after the turn deadline.
    pub async fn wait_runner_quiet(&self) {
        let deadline = Instant::now() + self.turn_deadline;
        while self.metric("logbook_runner_sessions").await != 0.0 {
            assert!(Instant::now() < deadline, "the runner still works after {:?}", self.turn_deadline);
            tokio::time::sleep(self.poll_interval).await;
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

/// A request's `events` body with one `user.define_outcome` (a text rubric).
pub fn outcome(description: &str, rubric: &str, max_iterations: u32) -> Value {
    json!([{"type": "user.define_outcome", "description": description,
            "rubric": {"type": "text", "content": rubric}, "max_iterations": max_iterations}])
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
