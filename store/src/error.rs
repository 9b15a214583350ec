//! The store's errors: one [`Error`] for every operation, plus [`AppendError`]
//! for appends, where callers branch on conflicts, [`ForkError`] for forks and
//! [`OpenError`] for opening.
//!
//! Corruption is a value ([`Corruption`]) naming the session and seq it was found
//! at, never a panic and never silently wrong data. A failed durability barrier
//! poisons the store: after an fsync error nothing more is acknowledged (the
//! "fsyncgate" lesson: the kernel may have dropped the dirty pages, so retrying
//! the fsync proves nothing).

use std::path::PathBuf;

use logbook_core::{EncodeError, Seq, SessionId};

use crate::wal::ScanError;

/// Where and what damage was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{session}: corrupt at seq {seq}: {what}")]
pub struct Corruption {
    pub session: SessionId,
    pub seq: Seq,
    pub what: String,
}

/// Damage outside any session's log (a blob, a resource, the meta tree).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt {place}: {what}")]
pub struct StoreCorruption {
    pub place: String,
    pub what: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Corrupted(#[from] Corruption),
    #[error(transparent)]
    StoreCorrupted(#[from] StoreCorruption),
    #[error("storage engine failed: {0}")]
    Engine(String),
    #[error(
        "the store stopped accepting writes after a failed durability barrier ({reason}); restart the server, which re-checks every session on open"
    )]
    Poisoned { reason: String },
    #[error("invalid request to the store: {0}")]
    Invalid(String),
}

/// Why an append was refused.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Another writer appended first: the session's log has `actual` records, not
    /// `expected`. Re-read and retry.
    #[error("{session}: append expected {expected} records but the log has {actual}")]
    Conflict { session: SessionId, expected: Seq, actual: Seq },
    #[error("an append takes 1 to {max} events, got {n_events}")]
    BadCount { n_events: usize, max: usize },
    #[error("event {event_idx} encodes to {n_bytes} bytes, over the limit of {max}")]
    EventTooLarge { event_idx: usize, n_bytes: usize, max: usize },
    #[error("append of {n_bytes} bytes is over the limit of {max}")]
    AppendTooLarge { n_bytes: usize, max: usize },
    #[error("{session} is full ({max} events)")]
    SessionFull { session: SessionId, max: u64 },
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error(transparent)]
    Store(#[from] Error),
}

/// Why a fork was refused.
#[derive(Debug, thiserror::Error)]
pub enum ForkError {
    /// A fork is a new session; this one already has records or is a fork.
    #[error("{child} already exists; a fork must be a new session")]
    Exists { child: SessionId },
    #[error("{parent} has {next} records, so it has no record at seq {at_seq} to fork at")]
    BeyondHead { parent: SessionId, at_seq: Seq, next: Seq },
    #[error("a session cannot be its own fork")]
    SelfFork { session: SessionId },
    #[error("forks of forks are limited to {max} levels")]
    TooDeep { max: usize },
    /// The fork's first events were refused.
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error(transparent)]
    Store(#[from] Error),
}

/// Why a store did not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot use data directory {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error(
        "storage engine refused to open {path}: {reason}; if no other process has it open, run `logbook verify` or restore from an export"
    )]
    Engine { path: PathBuf, reason: String },
    #[error(
        "data directory {path} is in use by another process (it holds the directory's `lock` file); stop that process first"
    )]
    InUse { path: PathBuf },
    #[error("storage version {found} is newer than this binary supports ({supported}); upgrade logbook")]
    UnknownStorageVersion { found: u32, supported: u32 },
    #[error("data directory {path} holds data but no storage version: not a logbook store")]
    NotAStore { path: PathBuf },
    #[error(transparent)]
    Corrupted(#[from] StoreCorruption),
    #[error(
        "the write-ahead log is damaged: {0}; nothing was changed. Run `logbook verify`, then restore the data directory from a backup or an export"
    )]
    DamagedLog(#[from] ScanError),
    #[error(
        "cannot migrate the storage version 1 data in {path}: {reason}. Nothing was changed; open it with the previous logbook release to export it, or restore a backup"
    )]
    Migration { path: PathBuf, reason: String },
}

impl From<sled::Error> for Error {
    fn from(err: sled::Error) -> Self {
        match err {
            sled::Error::Corruption { at, .. } => Error::StoreCorrupted(StoreCorruption {
                place: "sled data files".to_owned(),
                what: format!("sled reports corruption at {at:?}"),
            }),
            other @ (sled::Error::CollectionNotFound(_)
            | sled::Error::Unsupported(_)
            | sled::Error::ReportableBug(_)
            | sled::Error::Io(_)) => Error::Engine(other.to_string()),
        }
    }
}
