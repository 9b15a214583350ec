//! A small HTTP/1.1 server on a loopback address for the web tool tests: it
//! counts every connection it accepts and answers each request from a
//! handler given the request target (`/path?query`). One request per
//! connection (`Connection: close`), which is all the fetcher needs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Largest request head read.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// One answer.
#[derive(Debug, Clone)]
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
}

impl Reply {
    pub(super) fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Reply {
        Reply { status, headers: vec![("Content-Type".to_owned(), content_type.to_owned())], body: body.into() }
    }

    pub(super) fn redirect(status: u16, location: &str) -> Reply {
        Reply { status, headers: vec![("Location".to_owned(), location.to_owned())], body: Vec::new() }
    }
}

pub(super) type Handler = Arc<dyn Fn(&str) -> Reply + Send + Sync>;

/// A running server; stops when dropped.
pub(super) struct TestServer {
    pub(super) addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl TestServer {
    /// Serves `handler` on `bind` (e.g. `127.0.0.1:0`).
    pub(super) async fn start(bind: &str, handler: Handler) -> TestServer {
        let listener = TcpListener::bind(bind).await.unwrap_or_else(|err| panic!("bind {bind}: {err}"));
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, Arc::clone(&handler)));
            }
        });
        TestServer { addr, connections, task }
    }

    /// A server that answers everything with `200 LEAKED`: a connection to
    /// it is what the SSRF tests count.
    pub(super) async fn trap(bind: &str) -> TestServer {
        TestServer::start(bind, Arc::new(|_: &str| Reply::new(200, "text/plain", "LEAKED"))).await
    }

    pub(super) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub(super) fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: tokio::net::TcpStream, handler: Handler) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") && head.len() < MAX_HEAD_BYTES {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let target = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let reply = handler(&target);
    let mut out =
        format!("HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n", reply.status, reply.body.len());
    for (name, value) in &reply.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    if stream.write_all(out.as_bytes()).await.is_ok() {
        let _ = stream.write_all(&reply.body).await;
    }
    let _ = stream.shutdown().await;
}
