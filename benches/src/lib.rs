//! `logbook-benches`: the Logbook store measured against its baselines.
//!
//! [`workload`] generates seeded, deterministic sessions of realistic agent
//! events (text from [`text`]), and [`corpus`] precomputes every form the
//! systems write. The baselines are [`raw`] (group commit with `write` +
//! `fdatasync`, the physical limit), [`sqlite`] (WAL, `synchronous=FULL`) and
//! [`jsonl`] (a file per session, `fdatasync` per event). [`durable`] drives
//! any of them, or the store, with N writer threads; [`reads`], [`verify`],
//! [`open`], [`forks`] and [`dict`] hold the other measurements, and [`diag`] breaks the
//! store's costs down. The `durability` binary
//! runs them all side by side and prints the tables; the criterion bench
//! `micro` times the small operations. [`serve`] starts the real server for
//! the load benchmarks (`http_load`, `work_load`, `runner_load`,
//! `files_load`). See `benches/README.md`.

pub mod codec;
pub mod corpus;
pub mod diag;
pub mod dict;
pub mod durable;
pub mod forks;
pub mod group;
pub mod jsonl;
pub mod open;
pub mod raw;
pub mod reads;
pub mod scratch;
pub mod serve;
pub mod sqlite;
pub mod text;
pub mod verify;
pub mod workload;

#[cfg(test)]
mod tests;

pub use corpus::{Corpus, CorpusStats, Prepared, PreparedSession};
pub use workload::{SessionGen, SessionLog, WorkloadConfig, jsonl_line};
