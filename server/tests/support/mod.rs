//! Support for end-to-end tests of the `logbook` binary: start a real server
//! on a free loopback port with a temp data dir, and talk to it with a minimal
//! HTTP/1.1 client over raw sockets (so tests can cut a connection at any byte).

#![allow(dead_code, reason = "each test binary uses a different part")]
#![allow(clippy::zombie_processes, reason = "Server::drop kills and waits for the child")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub(crate) const KEY: &str = "sk-logbook-e2e0000000000000000000000000001";
pub(crate) const BETA: &str = "managed-agents-2026-04-01";

/// A running server; killed when dropped.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) data: PathBuf,
    pub(crate) stderr_lines: mpsc::Receiver<String>,
}

impl Server {
    /// Starts `logbook serve` on `data` with unlimited rate limits and `extra` arguments.
    pub(crate) fn start(data: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_logbook"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--rate-create",
                "0",
                "--rate-read",
                "0",
                "--rate-work",
                "0",
                "--no-runner",
            ])
            .arg("--data")
            .arg(data)
            .args(extra)
            .env("LOGBOOK_BOOTSTRAP_KEY", KEY)
            .env("LOGBOOK_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn logbook");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).expect("server did not print its address in time");
            if let Some(rest) = line.strip_prefix("logbook: serving on http://") {
                let addr = rest.split(' ').next().expect("address").parse().expect("socket address");
                return Server { child, addr, data: data.to_owned(), stderr_lines: rx };
            }
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits (with a deadline) for a clean exit.
    pub(crate) fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not exit within 40 s of SIGTERM");
            let _ = self.stderr_lines.recv_timeout(Duration::from_millis(100));
        }
    }

    /// Resident memory of the server process, in KiB.
    pub(crate) fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response of the minimal client.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Response {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!("status {}: body is not JSON ({err}): {}", self.status, String::from_utf8_lossy(&self.body))
        })
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// One request on its own connection (`Connection: close`).
pub(crate) fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&serde_json::Value>) -> Response {
    try_call(addr, method, path, body).expect("request failed")
}

/// Like [`call`], but a connection failure is an error, not a panic.
pub(crate) fn try_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nx-api-key: {KEY}\r\nanthropic-beta: {BETA}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    if raw.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed without a response"));
    }
    Ok(parse_response(&raw))
}

fn parse_response(raw: &[u8]) -> Response {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).expect("status");
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned())).collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")) {
        body = dechunk(&body);
    }
    Response { status, headers, body }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = raw.windows(2).position(|w| w == b"\r\n") else { return out };
        let size = usize::from_str_radix(String::from_utf8_lossy(&raw[..line_end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = line_end + 2;
        out.extend_from_slice(&raw[start..start + size]);
        raw = &raw[start + size + 2..];
    }
}

/// Creates an agent, an environment and a session; returns the session id.
pub(crate) fn new_session(addr: SocketAddr) -> String {
    let agent =
        call(addr, "POST", "/v1/agents", Some(&serde_json::json!({"model": "claude-sonnet-4-6", "name": "e2e"})));
    assert_eq!(agent.status, 200, "{}", String::from_utf8_lossy(&agent.body));
    let env = call(addr, "POST", "/v1/environments", Some(&serde_json::json!({"name": "e2e"})));
    assert_eq!(env.status, 200);
    let session = call(
        addr,
        "POST",
        "/v1/sessions",
        Some(&serde_json::json!({"agent": agent.json()["id"], "environment_id": env.json()["id"]})),
    );
    assert_eq!(session.status, 200, "{}", String::from_utf8_lossy(&session.body));
    session.json()["id"].as_str().expect("session id").to_owned()
}

/// Posts one user.message; returns the event id.
pub(crate) fn send_message(addr: SocketAddr, session: &str, text: &str) -> String {
    let body = serde_json::json!({"events": [{"type": "user.message", "content": [{"type": "text", "text": text}]}]});
    let res = call(addr, "POST", &format!("/v1/sessions/{session}/events"), Some(&body));
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    res.json()["data"][0]["id"].as_str().expect("event id").to_owned()
}

/// Every event id of a session, in order, through the list API (all pages).
pub(crate) fn list_ids(addr: SocketAddr, session: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut page: Option<String> = None;
    loop {
        let path = match &page {
            Some(cursor) => format!("/v1/sessions/{session}/events?limit=1000&page={cursor}"),
            None => format!("/v1/sessions/{session}/events?limit=1000"),
        };
        let res = call(addr, "GET", &path, None);
        assert_eq!(res.status, 200);
        let json = res.json();
        for event in json["data"].as_array().expect("data") {
            ids.push(event["id"].as_str().expect("id").to_owned());
        }
        match json["next_page"].as_str() {
            Some(next) => page = Some(next.to_owned()),
            None => return ids,
        }
    }
}

/// One SSE frame: its `event:`, `id:` and `data:` fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) event: String,
    pub(crate) id: Option<String>,
    pub(crate) data: String,
}

/// An open SSE stream on a raw socket.
pub(crate) struct SseClient {
    pub(crate) stream: TcpStream,
    /// Raw body bytes not yet decoded (an incomplete chunk).
    raw: Vec<u8>,
    /// Decoded body text not yet parsed into frames (an incomplete frame).
    text: Vec<u8>,
    /// Bytes of the body read so far.
    pub(crate) n_read: usize,
    /// The server ended the body (the last chunk) or closed the connection.
    pub(crate) closed: bool,
}

impl SseClient {
    /// Opens the stream, optionally resuming after `last_event_id`.
    pub(crate) fn open(addr: SocketAddr, session: &str, last_event_id: Option<&str>) -> SseClient {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        let resume = last_event_id.map(|id| format!("last-event-id: {id}\r\n")).unwrap_or_default();
        let request = format!(
            "GET /v1/sessions/{session}/events/stream HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {KEY}\r\n\
             anthropic-beta: {BETA}\r\naccept: application/json\r\n{resume}\r\n"
        );
        stream.write_all(request.as_bytes()).expect("write");
        let mut client = SseClient { stream, raw: Vec::new(), text: Vec::new(), n_read: 0, closed: false };
        loop {
            if let Some(end) = client.raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&client.raw[..end]).to_string();
                assert!(head.starts_with("HTTP/1.1 200"), "stream refused: {head}");
                assert!(head.to_lowercase().contains("text/event-stream"), "{head}");
                client.raw.drain(..end + 4);
                client.decode_chunks();
                break;
            }
            let mut chunk = [0u8; 4096];
            let n = client.stream.read(&mut chunk).expect("read head");
            assert!(n > 0, "connection closed before the response head");
            client.raw.extend_from_slice(&chunk[..n]);
        }
        client
    }

    /// Moves every complete chunk from `raw` to `text`.
    fn decode_chunks(&mut self) {
        loop {
            let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") else { return };
            let size_text = String::from_utf8_lossy(&self.raw[..line_end]).to_string();
            let Ok(size) = usize::from_str_radix(size_text.trim(), 16) else { return };
            let data_start = line_end + 2;
            if size == 0 {
                self.closed = true;
                return;
            }
            if self.raw.len() < data_start + size + 2 {
                return;
            }
            self.text.extend_from_slice(&self.raw[data_start..data_start + size]);
            self.raw.drain(..data_start + size + 2);
        }
    }

    /// Reads some bytes; returns how many, `Some(0)` when closed, `None` when
    /// nothing arrived within the read timeout.
    fn fill(&mut self, max: usize) -> Option<usize> {
        if self.closed {
            return Some(0);
        }
        let mut chunk = vec![0u8; max.clamp(1, 4096)];
        let n = match self.stream.read(&mut chunk) {
            Ok(n) => n,
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock || err.kind() == std::io::ErrorKind::TimedOut => {
                return None;
            }
            Err(err) => panic!("read stream: {err}"),
        };
        if n == 0 {
            self.closed = true;
        }
        self.raw.extend_from_slice(&chunk[..n]);
        self.n_read += n;
        self.decode_chunks();
        Some(n)
    }

    /// The next frame; `None` when the server closed the stream.
    pub(crate) fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = self.take_frame() {
                return Some(frame);
            }
            match self.fill(4096) {
                Some(0) => return None,
                Some(_) => {}
                None => panic!("no frame within the read timeout"),
            }
        }
    }

    /// Reads up to `n_bytes` more raw bytes (less if nothing arrives within the
    /// read timeout) and returns the frames they completed (a partial frame is
    /// lost when the caller then drops the connection: a cut mid-frame), and
    /// whether the server ended the stream.
    pub(crate) fn read_bytes(&mut self, n_bytes: usize) -> (Vec<Frame>, bool) {
        let mut got = 0;
        let mut frames = Vec::new();
        while got < n_bytes {
            let n = self.fill(n_bytes - got);
            frames.extend(std::iter::from_fn(|| self.take_frame()));
            match n {
                Some(0) => return (frames, true),
                Some(n) => got += n,
                None => return (frames, false),
            }
        }
        (frames, false)
    }

    /// Sets how long a read waits for data.
    pub(crate) fn set_read_timeout(&self, timeout: Duration) {
        self.stream.set_read_timeout(Some(timeout)).expect("timeout");
    }

    /// Parses one complete frame from the decoded text, skipping comments.
    fn take_frame(&mut self) -> Option<Frame> {
        loop {
            let end = self.text.windows(2).position(|w| w == b"\n\n")?;
            let frame_text = String::from_utf8_lossy(&self.text[..end]).to_string();
            self.text.drain(..end + 2);
            let mut frame = Frame { event: String::new(), id: None, data: String::new() };
            for line in frame_text.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    frame.event = v.trim_start().to_owned();
                } else if let Some(v) = line.strip_prefix("id:") {
                    frame.id = Some(v.trim_start().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    if !frame.data.is_empty() {
                        frame.data.push('\n');
                    }
                    frame.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            if !(frame.event.is_empty() && frame.data.is_empty()) {
                return Some(frame);
            }
        }
    }
}
