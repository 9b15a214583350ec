//! In-process tests of the Managed Agents API router: every endpoint, every
//! validation rule, every error type, and the tenant-isolation matrix.
//!
//! Method: each test builds its own server over a fresh sled store in a temp
//! dir (two workspaces with keys, a manual clock, rate limits off unless the
//! test is about them) and sends requests through `logbook_server::http::app`
//! with tower's `oneshot`: no sockets, no sleeps, every request under a
//! deadline. Expectations come from the API digest (managed-agents-api.md
//! §1-§5) and the behaviour digest (managed-agents-behaviour.md §2-§4, §14).
//! Where the server disagrees with them, the test asserts the reference and
//! fails, with a FIXME naming the discrepancy.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

#[path = "api/harness.rs"]
mod harness;

#[path = "api/transport.rs"]
mod transport;

#[path = "api/agents.rs"]
mod agents;

#[path = "api/environments.rs"]
mod environments;

#[path = "api/sessions.rs"]
mod sessions;

#[path = "api/events.rs"]
mod events;

#[path = "api/isolation.rs"]
mod isolation;

#[path = "api/previews.rs"]
mod previews;

#[path = "api/files.rs"]
mod files;

#[path = "api/resources.rs"]
mod resources;

#[path = "api/work.rs"]
mod work;

#[path = "api/review.rs"]
mod review;

#[path = "api/audit.rs"]
mod audit;

#[path = "api/threads.rs"]
mod threads;

#[path = "api/mcp.rs"]
mod mcp;

#[path = "api/fork_review.rs"]
mod fork_review;
