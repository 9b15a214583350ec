//! The store's integration tests: one binary, modules under `suite/`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

mod suite;
