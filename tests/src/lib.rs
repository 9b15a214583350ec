//! Helpers shared by the end-to-end tests and their child processes.
//!
//! The crash tests run `crash-writer` as a child that appends and reports each
//! acknowledged append on stdout as one [`Ack`] line; the child is killed (by
//! the parent, or by the storage-fault shim at a chosen storage operation) and
//! [`crash_check`] checks the store against those lines.
//!
//! [`fake_model`] is a scripted fake of the Anthropic Messages API, used
//! in-process by Rust tests and as the `fake-model` binary by the others.
//! [`server`] starts the real `logbook` binary and talks to its API.
//! [`git_server`] serves git repositories over https on loopback.
//! [`mcp_server`] is a small MCP server (the official SDK's server side) on
//! loopback. [`loopback`] runs the in-process fake model and MCP server: an
//! axum app on its own thread, with TCP_NODELAY, stopped on drop.

pub mod crash_check;
pub mod fake_model;
pub mod git_server;
pub mod loopback;
pub mod mcp_server;
pub mod server;

use std::fmt;
use std::str::FromStr;

use logbook_core::{ChainHash, Seq, SessionId};

/// One acknowledged append: the session's log had `next` records ending in
/// `hash` when `append` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub session: SessionId,
    pub next: Seq,
    pub hash: ChainHash,
}

impl fmt::Display for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ack {} {} {}", self.session, self.next.get(), self.hash)
    }
}

impl FromStr for Ack {
    type Err = String;

    fn from_str(line: &str) -> Result<Ack, String> {
        let mut parts = line.split(' ');
        let (Some("ack"), Some(session), Some(next), Some(hash), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("not an ack line: {line:?}"));
        };
        Ok(Ack {
            session: session.parse().map_err(|e| format!("{e}"))?,
            next: Seq::new(next.parse().map_err(|e| format!("{e}"))?),
            hash: hash.parse().map_err(|e| format!("{e}"))?,
        })
    }
}

/// The sessions the crash writer appends to.
pub fn crash_session(n: u64) -> SessionId {
    SessionId::from_parts(1_764_000_000_000, 0xc4a5 << 16 | u128::from(n))
}

/// The resource the crash writer counts up: its kind and key.
pub const CRASH_COUNTER: (logbook_store::ResourceKind, &[u8]) =
    (logbook_store::ResourceKind::Setting, b"crash-counter");

/// The crash counter's value: absent is 0, else a u64 little-endian.
pub fn counter_value(stored: Option<&[u8]>) -> anyhow::Result<u64> {
    match stored {
        None => Ok(0),
        Some(bytes) => Ok(u64::from_le_bytes(
            bytes.try_into().map_err(|_| anyhow::anyhow!("the crash counter holds {} bytes", bytes.len()))?,
        )),
    }
}
