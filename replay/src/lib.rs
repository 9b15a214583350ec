//! `logbook-replay`: everything derived from a session log, as pure functions.
//!
//! Projections (context window, workspace tree, status and usage), compaction
//! planning, slicing, fork planning and the session state machine live here.
//! Nothing in this crate reads a clock, touches a disk or the network: the same
//! records always give the same output. It depends on `logbook-core` only; the
//! server feeds it records read from the store.
//!
//! The crate is a placeholder until the runner and replay issues land: it holds
//! no projections yet.
