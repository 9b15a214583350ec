//! The release `logbook` binary as the load benchmarks (`http_load`,
//! `work_load`, `runner_load`, `files_load`) start it: `LOGBOOK_BIN`, or
//! `target/release/logbook` (the benchmarks run from the workspace root),
//! through the end-to-end tests' [`Launch`] with the server's stderr read and
//! dropped, so nothing it logs competes with the measured work.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use logbook_tests::server::{Launch, Server, Stderr};

/// The API key every benchmark server is seeded with.
pub const KEY: &str = "sk-logbook-load0000000000000000000000000001";

/// The server binary: `LOGBOOK_BIN`, or `target/release/logbook`.
pub fn bin() -> PathBuf {
    std::env::var_os("LOGBOOK_BIN").map_or_else(|| PathBuf::from("target/release/logbook"), PathBuf::from)
}

/// `logbook serve` on `data` with [`KEY`], its stderr dropped; add arguments
/// and environment, then [`Launch::start`].
pub fn launch(data: &Path) -> Launch {
    Launch::new(&bin(), data, KEY).stderr(Stderr::Discard)
}

/// The server's `127.0.0.1:PORT`, for raw TCP clients. Panics (failing the
/// benchmark) when its base URL is not `http://ADDR`.
pub fn addr(server: &Server) -> SocketAddr {
    server
        .base
        .strip_prefix("http://")
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("the server's base {} is not http://ADDR", server.base))
}
