//! The forwarder that runs inside a sandbox (`logbook sandbox-forward`): it
//! listens on the sandbox's own loopback, where `HTTP_PROXY` points, and
//! relays each connection to the egress proxy's unix socket bound into the
//! sandbox. It is a convenience for tools that only speak to TCP proxies, not
//! a security boundary: the proxy on the other side of the socket enforces the
//! policy, and the sandbox can only reach that socket.
//!
//! Plain threads and blocking IO: no runtime to start in the sandbox. It
//! prints `ready` on stdout once listening, so the shell that starts it knows
//! when the proxy is usable.

use std::io::Write;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Where the forwarder listens inside the sandbox.
pub const LISTEN_ADDR: &str = "127.0.0.1:3128";
/// Connections relayed at once (the proxy has its own, equal, limit).
pub const MAX_CONNECTIONS: usize = 64;

/// Listens on `listen` and relays every connection to the unix socket at
/// `socket`. Returns only on a listen error.
pub fn run(listen: &str, socket: &Path) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen)?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "ready")?;
        stdout.flush()?;
    }
    let active = Arc::new(AtomicUsize::new(0));
    for client in listener.incoming() {
        let Ok(client) = client else {
            // Out of file descriptors, say: a pause rather than a spin.
            std::thread::sleep(crate::transport::ACCEPT_BACKOFF);
            continue;
        };
        if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            continue; // dropping the stream closes it
        }
        let Ok(upstream) = UnixStream::connect(socket) else { continue };
        let counted = Counted::new(&active);
        // The sandbox's task limit can refuse a thread: the connection is
        // closed (the closure, and the streams in it, dropped) and counted
        // out, and the forwarder goes on.
        let _ = std::thread::Builder::new().spawn(move || {
            relay(client, upstream);
            drop(counted);
        });
    }
    Ok(())
}

/// One relayed connection, counted in `active` until dropped (however its
/// thread ends).
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new(active: &Arc<AtomicUsize>) -> Counted {
        active.fetch_add(1, Ordering::SeqCst);
        Counted(Arc::clone(active))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Copies both ways until both directions are done.
fn relay(client: TcpStream, upstream: UnixStream) {
    let (Ok(mut client_read), Ok(mut upstream_write)) = (client.try_clone(), upstream.try_clone()) else { return };
    let up = std::thread::Builder::new().spawn(move || {
        let _ = std::io::copy(&mut client_read, &mut upstream_write);
        let _ = upstream_write.shutdown(Shutdown::Write);
    });
    // Without a thread for the other direction the connection is closed.
    let Ok(up) = up else { return };
    let (mut upstream_read, mut client_write) = (upstream, client);
    let _ = std::io::copy(&mut upstream_read, &mut client_write);
    let _ = client_write.shutdown(Shutdown::Write);
    let _ = up.join();
}
