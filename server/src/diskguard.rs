//! Keeps a nearly full disk from stopping the server: below a reserve of
//! free space on the data directory's file system, the API refuses what
//! would start new work or add new content, and lets through what winds
//! work down.
//!
//! Why: the store is fail-stop. A write or sync that fails (`ENOSPC`
//! included) poisons it, and every write then answers 503 until a restart
//! (`docs/format.md` §6.1). A disk filled by clients' uploads, new sessions
//! and their turns would take the whole server down, turns in flight with
//! it. With the guard, the reserve stays for what is already running: the
//! runner's turns go on and end (their events, their tools' changes), and
//! clients can still read, stream, interrupt, confirm, send tool results,
//! archive and delete. Once space is freed, writes are accepted again with
//! no restart.
//!
//! What is refused while space is low (503 `api_error`, code
//! `insufficient_storage`, `x-should-retry: false`): every write route
//! taken with a workspace key (creates, updates, uploads, resources, forks,
//! imports), except archives, deletes and the work queue's, and on the
//! events route a request with an event that starts work (`user.message`,
//! `user.define_outcome`, `system.message`). Calls made with a worker's
//! credential (polls, heartbeats, results) are never refused: they finish
//! turns in flight.
//!
//! The free space is read with `statvfs` (blocks available to unprivileged
//! users) at most every [`SAMPLE_EVERY`]: a request costs at most one
//! syscall every quarter second, and a refusal reflects the disk as it was
//! at most that long ago. A reserve of 0 turns the guard off.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::Method;

/// The reserve by default: room for the turns in flight to end and for an
/// operator to act, small next to today's disks.
pub const DEFAULT_RESERVE_BYTES: u64 = 1 << 30;

/// The largest reserve `--disk-reserve-mib` takes (1 TiB).
pub const MAX_RESERVE_MIB: u64 = 1 << 20;

/// Longest a reading of the free space is used for.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// Seconds a refused client is told to wait before trying again.
pub const RETRY_AFTER_SECS: u64 = 30;

/// The guard of one data directory.
#[derive(Debug)]
pub struct DiskGuard {
    path: PathBuf,
    reserve: u64,
    last: Mutex<Option<Sample>>,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    free: Free,
}

/// What a reading of the file system said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Free {
    /// Bytes available to the server.
    Bytes(u64),
    /// The file system could not be read (the error is logged): writes are
    /// not refused on that account, the store's own errors still stop them.
    Unknown,
}

/// Space is low: what a refusal says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Low {
    pub free: u64,
    pub reserve: u64,
}

impl DiskGuard {
    /// A guard keeping `reserve` bytes free on the file system of `path`
    /// (0: no guard).
    pub fn new(path: &Path, reserve: u64) -> DiskGuard {
        DiskGuard { path: path.to_owned(), reserve, last: Mutex::new(None) }
    }

    pub fn reserve(&self) -> u64 {
        self.reserve
    }

    /// Whether space is low now (as read at most [`SAMPLE_EVERY`] ago).
    pub fn low(&self, now: Instant) -> Option<Low> {
        if self.reserve == 0 {
            return None;
        }
        match self.free(now) {
            Free::Bytes(free) if free < self.reserve => Some(Low { free, reserve: self.reserve }),
            Free::Bytes(_) | Free::Unknown => None,
        }
    }

    /// The free space, read again if the last reading is older than
    /// [`SAMPLE_EVERY`].
    pub fn free(&self, now: Instant) -> Free {
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(sample) = *last
            && now.saturating_duration_since(sample.at) < SAMPLE_EVERY
        {
            return sample.free;
        }
        let free = match rustix::fs::statvfs(&self.path) {
            Ok(fs) => Free::Bytes(fs.f_bavail.saturating_mul(fs.f_frsize)),
            Err(err) => {
                tracing::warn!(path = %self.path.display(), error = %err, "cannot read the data directory's free space");
                Free::Unknown
            }
        };
        *last = Some(Sample { at: now, free });
        free
    }
}

/// Whether a request taken with a workspace key is let through while space
/// is low: reads, archives, deletes and the work queue's calls (a stop, an
/// ack: they serve or wind down work under way) are; other writes are not
/// (the events route judges its events itself, with [`starts_work`]).
pub fn exempt(method: &Method, route: Option<&str>) -> bool {
    match *method {
        Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE => true,
        _ => {
            route.is_some_and(|route| route.ends_with("/archive") || route.contains("/work/") || route == EVENTS_ROUTE)
        }
    }
}

/// The route whose events [`starts_work`] judges one by one.
pub const EVENTS_ROUTE: &str = "/v1/sessions/{session_id}/events";

/// Whether an input event starts new work (a turn, an outcome): refused
/// while space is low. Interrupts, confirmations and tool results wind
/// work down or let a turn in flight end, and are taken.
pub fn starts_work(event_type: logbook_core::event::InputType) -> bool {
    use logbook_core::event::InputType;
    match event_type {
        InputType::UserMessage | InputType::UserDefineOutcome | InputType::SystemMessage => true,
        InputType::UserInterrupt
        | InputType::UserToolConfirmation
        | InputType::UserCustomToolResult
        | InputType::UserToolResult => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_above_the_free_space_is_low_and_zero_is_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = Instant::now();
        let Free::Bytes(free) = DiskGuard::new(dir.path(), 1).free(now) else { panic!("statvfs reads a tempdir") };
        assert!(free > 0);
        let low = DiskGuard::new(dir.path(), u64::MAX).low(now).expect("low");
        assert_eq!(low.reserve, u64::MAX);
        assert!(low.free > 0);
        assert_eq!(DiskGuard::new(dir.path(), 1).low(now), None);
        assert_eq!(DiskGuard::new(dir.path(), 0).low(now), None);
    }

    #[test]
    fn what_winds_work_down_goes_through_and_new_work_does_not() {
        let events = Some(EVENTS_ROUTE);
        assert!(exempt(&Method::GET, Some("/v1/agents")));
        assert!(exempt(&Method::DELETE, Some("/v1/sessions/{session_id}")));
        assert!(exempt(&Method::POST, Some("/v1/sessions/{session_id}/archive")));
        assert!(exempt(&Method::POST, Some("/v1/environments/{environment_id}/work/{work_id}/stop")));
        assert!(exempt(&Method::POST, events));
        assert!(!exempt(&Method::POST, Some("/v1/agents")));
        assert!(!exempt(&Method::POST, Some("/v1/files")));
        assert!(!exempt(&Method::POST, Some("/x/v1/sessions/{session_id}/fork")));
        assert!(!exempt(&Method::POST, None), "an unmatched route is not let through");
        use logbook_core::event::InputType;
        assert!(starts_work(InputType::UserMessage) && starts_work(InputType::SystemMessage));
        assert!(!starts_work(InputType::UserInterrupt) && !starts_work(InputType::UserCustomToolResult));
    }

    #[test]
    fn a_reading_is_kept_for_a_while_then_taken_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let guard = DiskGuard::new(dir.path(), 1);
        let now = Instant::now();
        assert!(matches!(guard.free(now), Free::Bytes(_)));
        // Within the period the reading is reused: a path gone since does
        // not show.
        let path = dir.path().to_owned();
        drop(dir);
        assert!(matches!(guard.free(now + SAMPLE_EVERY / 2), Free::Bytes(_)));
        assert!(!path.exists());
        // After it, the file system is read again: the path is gone.
        assert_eq!(guard.free(now + SAMPLE_EVERY), Free::Unknown);
        assert_eq!(guard.low(now + SAMPLE_EVERY), None, "an unreadable disk refuses nothing");
    }
}
