//! End-to-end tests of the sandbox through the runner's tool executor: the
//! bash tool's contract, isolation probes (each with a positive control on
//! the host), egress through the proxy, environment packages, and workspace
//! deltas that rebuild the workspace byte for byte.
//!
//! They need what CI has: root, bubblewrap (`scripts/test.sh` installs it),
//! python3 and curl under `/usr`, and for the package and allowed-host tests
//! the registries this project's machines reach (PyPI, npm). Each test makes
//! its own data directory and sandboxes and waits on results with deadlines.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

#[path = "sandbox/harness.rs"]
mod harness;

#[path = "sandbox/bash.rs"]
mod bash;

#[path = "sandbox/probes.rs"]
mod probes;

#[path = "sandbox/limits.rs"]
mod limits;

#[path = "sandbox/network.rs"]
mod network;

#[path = "sandbox/deltas.rs"]
mod deltas;

#[path = "sandbox/packages.rs"]
mod packages;

#[path = "sandbox/fail_closed.rs"]
mod fail_closed;
