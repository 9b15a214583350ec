//! HTTP load generator: durable `user.message` appends through the real
//! server on loopback, side by side with the store's own in-process append
//! rate in the same run.
//!
//! Usage: `cargo build --release -p logbook-server && cargo run --release -p
//! logbook-benches --bin http_load`. Env: `LOGBOOK_BIN` (default
//! `target/release/logbook`), `LOGBOOK_LOAD_EVENTS` (events per configuration,
//! default 20000), `LOGBOOK_LOAD_SUBSCRIBERS` (default 100). Prints durable
//! events/s and p50/p99 latency at 16 and 64 clients, the ratio to the store's
//! in-process rate, and append-to-SSE-delivery latency with many subscribers.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark fails by panicking")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use logbook_benches::serve::{self, KEY};
use logbook_core::event::{ContentBlock, Event, UserMessage};
use logbook_core::{Entry, EventId, SessionId, Timestamp};
use logbook_store::{Append, Read as _, SledOptions, SledStore};

const N_SESSIONS: usize = 100;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A keep-alive HTTP/1.1 connection.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        Conn { stream, buf: Vec::new() }
    }

    fn call(&mut self, method: &str, path: &str, body: &str) -> (u16, String) {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: x\r\nx-api-key: {KEY}\r\nanthropic-beta: managed-agents-2026-04-01\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream.write_all(request.as_bytes()).unwrap();
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
                let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.to_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                    .map(|v| v.parse().unwrap())
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + len {
                    let body = String::from_utf8_lossy(&self.buf[end + 4..end + 4 + len]).to_string();
                    self.buf.drain(..end + 4 + len);
                    return (status, body);
                }
            }
            let mut chunk = [0u8; 16384];
            let n = self.stream.read(&mut chunk).unwrap();
            assert!(n > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn json_field(body: &str, field: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(body).unwrap();
    value[field].as_str().unwrap().to_owned()
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

/// The store's own durable append rate: `writers` threads, 1 event per append.
fn store_rate(writers: usize, n_events: usize) -> f64 {
    let dir = tempfile::tempdir_in("target").unwrap();
    let store = Arc::new(SledStore::open(&dir.path().join("data"), &SledOptions::default()).unwrap());
    let per_writer = n_events / writers;
    let barrier = Arc::new(Barrier::new(writers + 1));
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let store = Arc::clone(&store);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..per_writer {
                    let session = SessionId::from_parts(1, ((w * per_writer + i) % N_SESSIONS) as u128);
                    let text = format!("message {i} from writer {w}: please look at the failing test in src/lib.rs");
                    let event = Event::UserMessage(UserMessage { content: vec![ContentBlock::Text { text }] });
                    let mut expected = store.head(session).unwrap().next;
                    loop {
                        let entry = Entry {
                            id: EventId::for_seq(1, expected, i as u64),
                            event: event.clone(),
                            at: Timestamp::from_unix_micros(0),
                        };
                        match store.append(session, expected, &[entry]) {
                            Ok(_) => break,
                            Err(logbook_store::AppendError::Conflict { actual, .. }) => expected = actual,
                            Err(other) => panic!("append failed: {other}"),
                        }
                    }
                }
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    for handle in handles {
        handle.join().unwrap();
    }
    (per_writer * writers) as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let n_events = env_usize("LOGBOOK_LOAD_EVENTS", 20_000);
    let n_subscribers = env_usize("LOGBOOK_LOAD_SUBSCRIBERS", 100);
    let dir = tempfile::tempdir_in("target").unwrap();
    let server = serve::launch(&dir.path().join("data")).arg("--no-runner").start();
    let addr = serve::addr(&server);
    let mut setup = Conn::open(addr);
    let (_, agent) = setup.call("POST", "/v1/agents", r#"{"model":"claude-sonnet-4-6","name":"load"}"#);
    let (_, env) = setup.call("POST", "/v1/environments", r#"{"name":"load"}"#);
    let body = format!(r#"{{"agent":"{}","environment_id":"{}"}}"#, json_field(&agent, "id"), json_field(&env, "id"));
    let sessions: Arc<Vec<String>> =
        Arc::new((0..N_SESSIONS).map(|_| json_field(&setup.call("POST", "/v1/sessions", &body).1, "id")).collect());

    println!("| config | durable events/s | p50 ms | p99 ms | × store in-process |");
    println!("|---|---:|---:|---:|---:|");
    for clients in [16usize, 64] {
        let store = store_rate(clients, n_events.min(20_000));
        let per_client = n_events / clients;
        let barrier = Arc::new(Barrier::new(clients + 1));
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let sessions = Arc::clone(&sessions);
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    let mut conn = Conn::open(addr);
                    let mut latencies = Vec::with_capacity(per_client);
                    barrier.wait();
                    for i in 0..per_client {
                        let session = &sessions[(c * per_client + i) % N_SESSIONS];
                        let body = format!(
                            r#"{{"events":[{{"type":"user.message","content":[{{"type":"text","text":"message {i} from client {c}: please look at the failing test"}}]}}]}}"#
                        );
                        let t = Instant::now();
                        let (status, _) = conn.call("POST", &format!("/v1/sessions/{session}/events"), &body);
                        assert_eq!(status, 200);
                        latencies.push(t.elapsed().as_micros() as u64);
                    }
                    latencies
                })
            })
            .collect();
        barrier.wait();
        let started = Instant::now();
        let mut latencies: Vec<u64> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
        let rate = latencies.len() as f64 / started.elapsed().as_secs_f64();
        latencies.sort_unstable();
        println!(
            "| {clients} clients, 100 sessions | {rate:.0} | {:.2} | {:.2} | {:.2} (store {store:.0}/s) |",
            percentile(&latencies, 0.5) as f64 / 1000.0,
            percentile(&latencies, 0.99) as f64 / 1000.0,
            rate / store
        );
    }

    // Append-to-delivery latency with one SSE subscriber per session.
    let delivered = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let n_sub = n_subscribers.min(N_SESSIONS);
    let ready = Arc::new(Barrier::new(n_sub + 1));
    for s in 0..n_sub {
        let session = sessions[s].clone();
        let delivered = Arc::clone(&delivered);
        let latencies = Arc::clone(&latencies);
        let ready = Arc::clone(&ready);
        std::thread::spawn(move || {
            let mut stream = TcpStream::connect(addr).unwrap();
            let request = format!(
                "GET /v1/sessions/{session}/events/stream HTTP/1.1\r\nhost: x\r\nx-api-key: {KEY}\r\n\
                 anthropic-beta: managed-agents-2026-04-01\r\n\r\n"
            );
            stream.write_all(request.as_bytes()).unwrap();
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            // Wait for the response head before declaring readiness.
            loop {
                line.clear();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" {
                    break;
                }
            }
            ready.wait();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap() == 0 {
                    return;
                }
                if let Some(pos) = line.find("sent_us=") {
                    let digits: String = line[pos + 8..].chars().take_while(char::is_ascii_digit).collect();
                    if let Ok(sent) = digits.parse::<u64>() {
                        latencies.lock().unwrap().push(now_us().saturating_sub(sent));
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    ready.wait();
    let n_messages = 2000usize;
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let sessions = Arc::clone(&sessions);
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr);
                for i in 0..n_messages / 16 {
                    let session = &sessions[(w * 131 + i) % n_sub];
                    let body = format!(
                        r#"{{"events":[{{"type":"user.message","content":[{{"type":"text","text":"sent_us={}"}}]}}]}}"#,
                        now_us()
                    );
                    conn.call("POST", &format!("/v1/sessions/{session}/events"), &body);
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered.load(Ordering::Relaxed) < (n_messages / 16 * 16) as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut sorted = latencies.lock().unwrap().clone();
    sorted.sort_unstable();
    println!(
        "\nappend-to-SSE delivery with {n_sub} subscribers, 16 writers: {} delivered, p50 {:.2} ms, p99 {:.2} ms",
        sorted.len(),
        percentile(&sorted, 0.5) as f64 / 1000.0,
        percentile(&sorted, 0.99) as f64 / 1000.0
    );
    drop(server);
}
