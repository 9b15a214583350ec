//! The HTTP server's transport: accepting TCP connections and serving HTTP/1
//! on them, with bounds on slow and idle clients, and graceful shutdown.
//!
//! `axum::serve` gives hyper no timer, so hyper's header-read timeout never
//! runs there: a client that trickles its request headers, or connects and
//! sends nothing, would hold a connection and a task forever. [`serve`]
//! drives hyper's HTTP/1 connections itself, with tokio's timer and
//! [`Transport::header_read_timeout`], which also closes a keep-alive
//! connection left idle that long between requests. A request body is bounded
//! separately ([`DeadlineBody`], applied by the HTTP middleware), since hyper
//! times only the head. At most [`Transport::max_connections`] connections
//! are open at once; past it, accepting waits (the kernel's backlog holds new
//! ones) until one closes.
//!
//! Every accepted socket gets `TCP_USER_TIMEOUT` (a peer that stops reading,
//! such as a stalled SSE client, is cut off once sent data goes unacknowledged
//! that long) and `TCP_NODELAY`.
//!
//! Shutdown: once the shutdown future resolves, no connection is accepted,
//! idle connections close, and each connection closes after its in-flight
//! response (SSE streams end on the app's own shutdown signal); [`serve`]
//! returns when the last one closed. It puts no deadline on that wait: the
//! caller does (`cli::SHUTDOWN_GRACE`).
//!
//! Not here: TLS (terminate it in front), HTTP/2 (not served), request
//! timeouts of handlers (the HTTP middleware).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

/// How long the kernel keeps unacknowledged data (or a zero receive window) on
/// a connection before aborting it: cuts off SSE clients that stopped reading.
pub const DEFAULT_TCP_USER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a client has to send a request's head (request line and
/// headers), from connecting or from the end of its previous response.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a request body may take before it must have kept up
/// [`BODY_MIN_BYTES_PER_SEC`].
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The slowest upload that is never cut off: each this many bytes received
/// extend a body's deadline by a second (a 500 MB upload at this rate takes
/// about 8 hours).
pub const BODY_MIN_BYTES_PER_SEC: u64 = 16 * 1024;
/// Most connections open at once, by default.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 4096;
/// The largest cap on connections one may set (tokio's semaphore holds at
/// most `usize::MAX >> 3` permits; far more than a process has descriptors).
pub const MAX_CONNECTIONS_LIMIT: u32 = 1 << 24;
/// How long accepting backs off after an error (out of file descriptors and
/// the like), instead of spinning.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How the server treats connections.
#[derive(Debug, Clone, Copy)]
pub struct Transport {
    /// `TCP_USER_TIMEOUT` of every accepted socket.
    pub tcp_user_timeout: Duration,
    /// How long a request's head may take, from connecting or from the
    /// previous response on the connection.
    pub header_read_timeout: Duration,
    /// Most connections open at once (at least 1, at most [`MAX_CONNECTIONS_LIMIT`]).
    pub max_connections: usize,
}

impl Default for Transport {
    fn default() -> Self {
        Transport {
            tcp_user_timeout: DEFAULT_TCP_USER_TIMEOUT,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS as usize,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves and every connection
/// has closed (see the module's doc).
pub async fn serve(listener: TcpListener, app: Router, transport: Transport, shutdown: impl Future<Output = ()>) {
    let slots = Arc::new(Semaphore::new(transport.max_connections.clamp(1, MAX_CONNECTIONS_LIMIT as usize)));
    // Each connection holds a receiver: `closed()` resolves once all are gone.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = Arc::clone(&slots).acquire_owned() => slot,
        };
        // The semaphore is never closed.
        let Ok(slot) = slot else { break };
        let (stream, addr) = tokio::select! {
            () = &mut shutdown => break,
            accepted = accept(&listener, transport) => accepted,
        };
        let app = app.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            serve_connection(stream, addr, app, transport, stop).await;
            // Freed only once the socket is closed: the next client is
            // accepted after this one is gone.
            drop(slot);
        });
    }
    drop(listener);
    stop_tx.send_replace(true);
    drop(stop_rx);
    stop_tx.closed().await;
}

/// Serves one connection until it closes; after `stop` turns true, it closes
/// once idle or after its in-flight response.
/// hyper's read buffer per connection, which bounds a request head: a head
/// larger is refused by hyper itself (a bare 431). Heads between
/// `http::MAX_HEADER_BYTES` and this get the API's envelope; bodies stream
/// through it in pieces. (hyper's default is about 400 KiB.)
pub const MAX_HEAD_BUFFER_BYTES: usize = 64 * 1024;
/// Most header fields hyper parses (its default is 100, answered with a bare
/// 431): as many as the smallest fields (`a:` and a line end) fill
/// [`crate::http::MAX_HEADER_BYTES`], so that the byte limit, answered with
/// the envelope and a request id, is the one that binds.
pub const MAX_HEADER_FIELDS: usize = crate::http::MAX_HEADER_BYTES / 4;

async fn serve_connection(
    stream: TcpStream,
    addr: SocketAddr,
    app: Router,
    transport: Transport,
    mut stop: watch::Receiver<bool>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(transport.header_read_timeout)
        .max_buf_size(MAX_HEAD_BUFFER_BYTES)
        .max_headers(MAX_HEADER_FIELDS);
    let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    let mut conn = std::pin::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(err) = res {
                    tracing::debug!(error = %err, %addr, "connection ended with an error");
                }
                return;
            }
            stopped = stop.wait_for(|stop| *stop), if !stopping => {
                stopping = true;
                if stopped.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// The next connection, with its socket options set.
async fn accept(listener: &TcpListener, transport: Transport) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                let sock = socket2::SockRef::from(&stream);
                // Best effort: a socket that refuses an option still serves.
                let _ = sock.set_tcp_user_timeout(Some(transport.tcp_user_timeout));
                let _ = stream.set_nodelay(true);
                return (stream, addr);
            }
            Err(err) => {
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// A request body that fails with [`BodyTimedOut`] once it falls behind its
/// deadline: `timeout` after the request began, plus a second for every
/// [`BODY_MIN_BYTES_PER_SEC`] bytes received. A trickled upload is cut off;
/// one that keeps up the minimum rate never is. The deadline is checked only
/// while the body is being read.
#[derive(Debug)]
pub struct DeadlineBody {
    inner: axum::body::Body,
    start: tokio::time::Instant,
    timeout: Duration,
    n_received: u64,
    /// Armed the first time the body has to wait for the client: a body that
    /// is already buffered (most JSON requests) never touches the timer.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// What the middleware learns of the body (see [`BodyProgress`]).
    progress: Arc<BodyProgress>,
}

/// How a request body is going, for the HTTP middleware: whether its
/// deadline cut it off (answer 408 whatever the handler made of that), and
/// whether the handler is waiting for more of it (a request timeout that
/// fires then is the client's slowness, not the server's: 408, not 504).
#[derive(Debug, Default)]
pub struct BodyProgress {
    timed_out: std::sync::atomic::AtomicBool,
    waiting: std::sync::atomic::AtomicBool,
}

impl BodyProgress {
    pub fn timed_out(&self) -> bool {
        self.timed_out.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The last read of the body found nothing yet: the request is waiting
    /// for the client.
    pub fn waiting_for_client(&self) -> bool {
        self.waiting.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The error of a body that fell behind its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body took too long to arrive")]
pub struct BodyTimedOut;

impl DeadlineBody {
    /// Wraps `inner`, starting its clock now; `progress` hears how it went.
    pub fn new(inner: axum::body::Body, timeout: Duration, progress: Arc<BodyProgress>) -> Self {
        DeadlineBody { inner, start: tokio::time::Instant::now(), timeout, n_received: 0, sleep: None, progress }
    }

    fn deadline(&self) -> tokio::time::Instant {
        self.start + self.timeout + Duration::from_secs(self.n_received / BODY_MIN_BYTES_PER_SEC)
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            if let Some(Ok(frame)) = &frame
                && let Some(data) = frame.data_ref()
            {
                this.n_received = this.n_received.saturating_add(data.len() as u64);
                let deadline = this.deadline();
                if let Some(sleep) = this.sleep.as_mut() {
                    sleep.as_mut().reset(deadline);
                }
            }
            this.progress.waiting.store(false, std::sync::atomic::Ordering::Relaxed);
            return Poll::Ready(frame);
        }
        let deadline = this.deadline();
        let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.progress.timed_out.store(true, std::sync::atomic::Ordering::Relaxed);
                Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))))
            }
            Poll::Pending => {
                this.progress.waiting.store(true, std::sync::atomic::Ordering::Relaxed);
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
