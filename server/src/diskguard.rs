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
//! taken with a workspace key (creates, updates, uploads, new resources,
//! forks, a queued health check) but those of [`LET_THROUGH`], and on the
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::Method;

/// The reserve by default: room for the turns in flight to end and for an
/// operator to act, small next to today's disks.
pub const DEFAULT_RESERVE_BYTES: u64 = 1 << 30;

/// The largest reserve `--disk-reserve-mib` takes (1 TiB).
pub const MAX_RESERVE_MIB: u64 = 1 << 20;

/// Longest a reading of the free space is used for.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// The guard of one data directory.
#[derive(Debug)]
pub struct DiskGuard {
    path: PathBuf,
    reserve: u64,
    /// When the guard was made: readings are timed from it.
    base: Instant,
    /// The last reading: free bytes ([`UNKNOWN`] when it failed) and its
    /// time in microseconds after `base` ([`NEVER`] before the first).
    free: AtomicU64,
    read_at: AtomicU64,
    /// Held by the one request reading the disk; the others meanwhile use
    /// the last reading rather than wait on a slow file system.
    reading: Mutex<()>,
}

const UNKNOWN: u64 = u64::MAX;
const NEVER: u64 = u64::MAX;

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
        DiskGuard {
            path: path.to_owned(),
            reserve,
            base: Instant::now(),
            free: AtomicU64::new(UNKNOWN),
            read_at: AtomicU64::new(NEVER),
            reading: Mutex::new(()),
        }
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
    /// [`SAMPLE_EVERY`] (unless another request is reading it: then the last
    /// reading, or [`Free::Unknown`] before the first).
    pub fn free(&self, now: Instant) -> Free {
        let micros =
            |at: Instant| u64::try_from(at.saturating_duration_since(self.base).as_micros()).unwrap_or(NEVER - 1);
        let last = || match self.free.load(Ordering::Acquire) {
            UNKNOWN => Free::Unknown,
            bytes => Free::Bytes(bytes),
        };
        let read_at = self.read_at.load(Ordering::Acquire);
        let fresh = read_at != NEVER && micros(now).saturating_sub(read_at) < SAMPLE_EVERY.as_micros() as u64;
        if fresh {
            return last();
        }
        let Ok(_reading) = self.reading.try_lock() else { return last() };
        let free = match rustix::fs::statvfs(&self.path) {
            Ok(fs) => Free::Bytes(fs.f_bavail.saturating_mul(fs.f_frsize).min(UNKNOWN - 1)),
            Err(err) => {
                tracing::warn!(path = %self.path.display(), error = %err, "cannot read the data directory's free space");
                Free::Unknown
            }
        };
        let stored = match free {
            Free::Bytes(bytes) => bytes,
            Free::Unknown => UNKNOWN,
        };
        self.free.store(stored, Ordering::Release);
        self.read_at.store(micros(now), Ordering::Release);
        free
    }
}

/// The route whose events [`starts_work`] judges one by one.
pub const EVENTS_ROUTE: &str = "/v1/sessions/{session_id}/events";

/// The write routes a workspace key may still take while space is low:
/// they wind work down (archives, a work item's stop), serve work under way
/// (the events route, whose events [`starts_work`] judges; a work item's
/// ack and heartbeat; a repository resource's new token, which its running
/// turn may need), or only read (a consistency check).
pub const LET_THROUGH: [&str; 10] = [
    "/v1/agents/{agent_id}/archive",
    "/v1/environments/{environment_id}/archive",
    "/v1/sessions/{session_id}/archive",
    "/v1/sessions/{session_id}/threads/{thread_id}/archive",
    EVENTS_ROUTE,
    "/v1/environments/{environment_id}/work/{work_id}/stop",
    "/v1/environments/{environment_id}/work/{work_id}/ack",
    "/v1/environments/{environment_id}/work/{work_id}/heartbeat",
    "/v1/sessions/{session_id}/resources/{resource_id}",
    "/x/v1/sessions/{session_id}/consistency",
];

/// Whether a request taken with a workspace key on `route` (a route of the
/// API with this method) is let through while space is low: reads, deletes
/// and [`LET_THROUGH`] are; other writes are not.
pub fn exempt(method: &Method, route: &str) -> bool {
    match *method {
        Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE => true,
        _ => LET_THROUGH.contains(&route),
    }
}

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
        assert!(exempt(&Method::GET, "/v1/agents"));
        assert!(exempt(&Method::DELETE, "/v1/sessions/{session_id}"));
        assert!(exempt(&Method::POST, "/v1/sessions/{session_id}/archive"));
        assert!(exempt(&Method::POST, "/v1/environments/{environment_id}/work/{work_id}/stop"));
        assert!(exempt(&Method::POST, EVENTS_ROUTE));
        assert!(!exempt(&Method::POST, "/v1/agents"));
        assert!(!exempt(&Method::POST, "/v1/files"));
        assert!(!exempt(&Method::POST, "/x/v1/sessions/{session_id}/fork"));
        assert!(!exempt(&Method::POST, "/x/v1/environments/{environment_id}/work/healthcheck"), "it queues work");
        assert!(!exempt(&Method::POST, "/v1/environments/{environment_id}/work/{work_id}"), "an update");
        // Every route let through is a POST route of the API.
        let routes = crate::http::routes();
        for route in LET_THROUGH {
            let known = routes.iter().any(|spec| spec.method == Method::POST && spec.path == route);
            assert!(known, "{route} is no POST route of the API");
        }
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
