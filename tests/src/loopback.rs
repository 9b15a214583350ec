//! An axum app served on a free loopback port from its own thread and
//! current-thread tokio runtime, for the in-process fakes ([`crate::fake_model`],
//! [`crate::mcp_server`]) that tests start and drop.
//!
//! [`Loopback::serve`] binds `127.0.0.1:0` before it returns (so the address
//! is known and connections queue at once), builds the app on the server's
//! runtime, and returns once that runtime is up. Every accepted connection gets
//! TCP_NODELAY: without it each streamed chunk after the first waits for the
//! client's delayed ACK (tens of ms per response), which tests and benchmarks
//! would count as the client's time. Dropping the [`Loopback`] stops serving
//! (not gracefully: responses in flight, hanging ones included, are cancelled
//! with the runtime) and joins the thread.

use std::net::SocketAddr;

use axum::Router;
use axum::serve::ListenerExt;

/// A running loopback server; stopped when dropped.
#[derive(Debug)]
pub struct Loopback {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Loopback {
    /// Serves the app `make_app` builds (on the server's runtime) on a free
    /// loopback port, from a thread named `thread_name`. `on_accept` sees
    /// every accepted connection (after TCP_NODELAY is set), e.g. to count
    /// them.
    pub fn serve<A, C>(thread_name: &str, make_app: A, mut on_accept: C) -> std::io::Result<Loopback>
    where
        A: FnOnce() -> Router + Send + 'static,
        C: FnMut(&tokio::net::TcpStream) + Send + 'static,
    {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name(thread_name.to_owned()).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = ready_tx.send(Err(error));
                    return;
                }
            };
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => listener,
                    Err(error) => {
                        let _ = ready_tx.send(Err(error));
                        return;
                    }
                };
                let app = make_app();
                let listener = listener.tap_io(move |tcp| {
                    let _ = tcp.set_nodelay(true);
                    on_accept(tcp);
                });
                let _ = ready_tx.send(Ok(()));
                tokio::select! {
                    _ = axum::serve(listener, app) => {}
                    _ = stop_rx => {}
                }
            });
        })?;
        match ready_rx.recv() {
            Ok(result) => result?,
            Err(_) => return Err(std::io::Error::other(format!("the {thread_name} thread died while starting"))),
        }
        Ok(Loopback { addr, stop: Some(stop_tx), thread: Some(thread) })
    }

    /// The address it listens on (`127.0.0.1:PORT`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
