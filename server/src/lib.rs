//! `logbook-server`: the `logbook` binary's library.
//!
//! The only crate that knows HTTP, the tokio runtime, the model provider and
//! the sandbox. It holds the Managed Agents API (`api`), the HTTP app with its
//! middleware (`http`), its transport (`transport`: connections, slow
//! clients, graceful shutdown), tenancy (`tenancy`), rate limits, metrics, the OpenAPI
//! document and the command line (`cli`). `resources` puts session resources
//! (mounted files, outputs, cloned repositories) on disk; `mcp` connects
//! sessions to their agents' MCP servers.

pub mod api;
pub mod audit;
pub mod cli;
pub mod diskguard;
pub mod http;
pub mod mcp;
pub mod metrics;
pub mod model;
pub mod net;
pub mod offline;
pub mod openapi;
pub mod previews;
pub mod progress;
pub mod projection;
pub mod ratelimit;
pub mod resources;
pub mod runner;
pub mod sandbox;
pub mod state;
pub mod tenancy;
pub mod tools;
pub mod transport;
pub mod workspace;
