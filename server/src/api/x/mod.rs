//! Logbook's extensions to the Managed Agents API, under `/x/v1/` so they can
//! never collide with the compatible surface. They take the same keys and
//! answer the same error envelope, but need no `anthropic-beta` header.
//!
//! [`audit`]: the server's public key, a session's verification report with a
//! signed head, export as a verifiable bundle, and the consistency check of an
//! earlier signed head against the current log. [`state`]: a session's state
//! (context window, workspace, status, usage) and files at any seq.
//! [`slice`]: filtered, budgeted views of a session's events. [`fork`]: a new
//! session continuing another from any point of its log.

pub mod audit;
pub mod fork;
pub mod slice;
pub mod state;
