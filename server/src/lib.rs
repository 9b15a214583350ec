//! `logbook-server`: the `logbook` binary's library.
//!
//! The only crate that knows HTTP, tokio, the model provider and the sandbox.
//! Today it holds the command line (`serve`, `verify`) and a minimal HTTP app
//! (a health check and the API's error envelope for everything else); the
//! Managed Agents API and the runner land here next.

pub mod cli;
pub mod http;
