//! HTTP load generator: durable `user.message` appends through the real
//! server on loopback, side by side with the store's own in-process append
//! rate in the same run.
//!
//! Usage: `cargo build --release -p logbook-server && cargo run --release -p
//! logbook-benches --bin http_load`. Env: `LOGBOOK_BIN` (default
//! `target/release/logbook`), `LOGBOOK_LOAD_EVENTS` (events per configuration,
//! default 40000), `LOGBOOK_LOAD_STORE_EVENTS` (events of each in-process store
//! run, default 40000), `LOGBOOK_LOAD_SUBSCRIBERS` (default 100),
//! `LOGBOOK_LOAD_CLIENTS` (default `16,64`), `LOGBOOK_LOAD_ROUNDS` (default 3).
//! This binary keeps the system allocator: the store's in-process rate with
//! it was higher and steadier than with mimalloc, so the ratio's denominator
//! is the store at its best (the server uses jemalloc). Prints, per round,
//! durable events/s and p50/p99 latency at each client count with the ratio
//! to the store's in-process rate measured just before, and `GET /healthz` at
//! the same concurrency (the HTTP ceiling); then the medians over the rounds,
//! and append-to-SSE-delivery latency with many subscribers.

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
        self.stream.write_all(&request_bytes(method, path, body)).unwrap();
        loop {
            if let Some((status, used)) = parse_response(&self.buf) {
                let head_end = self.buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
                let body = String::from_utf8_lossy(&self.buf[head_end..used]).to_string();
                self.buf.drain(..used);
                return (status, body);
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

/// The server's count of durability barriers (fsyncs of the log) and the
/// seconds spent in them, from `/metrics`.
fn barriers(conn: &mut Conn) -> (f64, f64) {
    let (_, body) = conn.call("GET", "/metrics", "");
    let metric = |name: &str| {
        body.lines()
            .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("/metrics reports {name}"))
    };
    (metric("logbook_store_barriers"), metric("logbook_store_barrier_seconds"))
}

/// Per client count: each round's HTTP rate, its ratio to the store's, and
/// the HTTP ceiling.
type Rounds = (usize, Vec<f64>, Vec<f64>, Vec<f64>);

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
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

/// Runs `clients` keep-alive connections, each sending its share of
/// `n_events` requests made by `request(client, i)` back to back; returns the
/// rate of 200 answers and the sorted latencies in microseconds.
///
/// All connections are driven from one thread by a current-thread tokio
/// runtime (epoll), as `redis-benchmark` and `wrk` drive theirs: a thread per
/// connection would spend the machine's two cores switching between 64
/// client threads instead of leaving them to the server.
fn drive<F>(addr: SocketAddr, clients: usize, n_events: usize, request: F) -> (f64, Vec<u64>)
where
    F: Fn(usize, usize) -> (&'static str, String, String) + Send + Sync + 'static,
{
    let per_client = n_events / clients;
    let request = Arc::new(request);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap();
    let (elapsed, mut latencies) = runtime.block_on(async move {
        let mut conns = Vec::with_capacity(clients);
        for _ in 0..clients {
            conns.push(AsyncConn::open(addr).await);
        }
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for (c, mut conn) in conns.into_iter().enumerate() {
            let request = Arc::clone(&request);
            tasks.spawn(async move {
                let mut latencies = Vec::with_capacity(per_client);
                for i in 0..per_client {
                    let (method, path, body) = request(c, i);
                    let t = Instant::now();
                    let status = conn.call(method, &path, &body).await;
                    assert_eq!(status, 200);
                    latencies.push(t.elapsed().as_micros() as u64);
                }
                latencies
            });
        }
        let mut latencies = Vec::with_capacity(n_events);
        while let Some(done) = tasks.join_next().await {
            latencies.extend(done.unwrap());
        }
        (started.elapsed(), latencies)
    });
    let rate = latencies.len() as f64 / elapsed.as_secs_f64();
    latencies.sort_unstable();
    (rate, latencies)
}

/// [`Conn`] for the async driver: a keep-alive HTTP/1.1 connection that
/// returns only the status (the body is read and dropped).
struct AsyncConn {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
    /// The request being sent, reused so the client allocates little: its
    /// CPU is taken from the server's two cores.
    request: Vec<u8>,
}

impl AsyncConn {
    async fn open(addr: SocketAddr) -> AsyncConn {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        AsyncConn { stream, buf: Vec::with_capacity(16384), request: Vec::with_capacity(1024) }
    }

    async fn call(&mut self, method: &str, path: &str, body: &str) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        self.request.clear();
        write_request(&mut self.request, method, path, body);
        self.stream.write_all(&self.request).await.unwrap();
        loop {
            if let Some((status, used)) = parse_response(&self.buf) {
                self.buf.drain(..used);
                return status;
            }
            // Reads into spare capacity: no zeroed chunk, no copy.
            self.buf.reserve(16384);
            let n = self.stream.read_buf(&mut self.buf).await.unwrap();
            assert!(n > 0, "connection closed");
        }
    }
}

fn request_bytes(method: &str, path: &str, body: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + body.len());
    write_request(&mut out, method, path, body);
    out
}

fn write_request(out: &mut Vec<u8>, method: &str, path: &str, body: &str) {
    write!(
        out,
        "{method} {path} HTTP/1.1\r\nhost: x\r\nx-api-key: {KEY}\r\nanthropic-beta: managed-agents-2026-04-01\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
}

/// A complete response at the start of `buf`: its status and length. Parses
/// bytes in place (no allocation), as the client shares the server's cores.
fn parse_response(buf: &[u8]) -> Option<(u16, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = &buf[..end];
    let digits = head.get(9..12).expect("a status line");
    let status = digits.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    let len = head
        .split(|&b| b == b'\n')
        .find_map(|line| {
            let name = b"content-length:";
            (line.len() > name.len() && line[..name.len()].eq_ignore_ascii_case(name)).then(|| {
                line[name.len()..]
                    .iter()
                    .filter(|b| b.is_ascii_digit())
                    .fold(0usize, |n, d| n * 10 + usize::from(d - b'0'))
            })
        })
        .unwrap_or(0);
    (buf.len() >= end + 4 + len).then_some((status, end + 4 + len))
}

fn main() {
    let n_events = env_usize("LOGBOOK_LOAD_EVENTS", 40_000);
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

    let client_counts: Vec<usize> = std::env::var("LOGBOOK_LOAD_CLIENTS")
        .ok()
        .map(|v| v.split(',').map(|n| n.trim().parse().expect("LOGBOOK_LOAD_CLIENTS: numbers")).collect())
        .unwrap_or_else(|| vec![16, 64]);
    let rounds = env_usize("LOGBOOK_LOAD_ROUNDS", 3).max(1);
    let mut summary: Vec<Rounds> =
        client_counts.iter().map(|&clients| (clients, Vec::new(), Vec::new(), Vec::new())).collect();
    println!("| round | config | durable events/s | p50 ms | p99 ms | × store in-process |");
    println!("|---|---|---:|---:|---:|---:|");
    for round in 1..=rounds {
        for (clients, rates, ratios, ceilings) in &mut summary {
            let clients = *clients;
            let store = store_rate(clients, env_usize("LOGBOOK_LOAD_STORE_EVENTS", 40_000));
            let barriers_before = barriers(&mut setup);
            let sessions = Arc::clone(&sessions);
            let (rate, latencies) = drive(addr, clients, n_events, move |c, i| {
                let session = &sessions[(c * 7919 + i) % N_SESSIONS];
                let body = format!(
                    r#"{{"events":[{{"type":"user.message","content":[{{"type":"text","text":"message {i} from client {c}: please look at the failing test"}}]}}]}}"#
                );
                ("POST", format!("/v1/sessions/{session}/events"), body)
            });
            let barriers_after = barriers(&mut setup);
            let n_barriers = (barriers_after.0 - barriers_before.0).max(1.0);
            let per_barrier = latencies.len() as f64 / n_barriers;
            let barrier_us = (barriers_after.1 - barriers_before.1) / n_barriers * 1e6;
            println!(
                "| {round} | {clients} clients, 100 sessions | {rate:.0} | {:.2} | {:.2} | {:.2} (store {store:.0}/s; {per_barrier:.1} events per fsync of {barrier_us:.0} µs) |",
                percentile(&latencies, 0.5) as f64 / 1000.0,
                percentile(&latencies, 0.99) as f64 / 1000.0,
                rate / store
            );
            rates.push(rate);
            ratios.push(rate / store);
            // The same clients against `/healthz` (no store work, no body):
            // what this loopback HTTP stack and this load generator can do.
            let (ceiling, latencies) =
                drive(addr, clients, n_events, |_, _| ("GET", "/healthz".to_owned(), String::new()));
            println!(
                "| {round} | {clients} clients, GET /healthz (HTTP ceiling) | {ceiling:.0} req/s | {:.2} | {:.2} | |",
                percentile(&latencies, 0.5) as f64 / 1000.0,
                percentile(&latencies, 0.99) as f64 / 1000.0,
            );
            ceilings.push(ceiling);
        }
    }
    println!("\n| config | median durable events/s | median × store | median HTTP ceiling req/s |");
    println!("|---|---:|---:|---:|");
    for (clients, rates, ratios, ceilings) in &mut summary {
        println!("| {clients} clients | {:.0} | {:.2} | {:.0} |", median(rates), median(ratios), median(ceilings));
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
