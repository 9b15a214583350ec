//! Per-workspace rate limits: one token bucket for create calls (POST, DELETE),
//! one for reads (GET) and one for the calls of self-hosted workers, each
//! refilled continuously at its per-minute rate on the injected clock.
//!
//! The hosted service documents per-minute limits for its create and read
//! endpoints (behaviour digest §14) and none for the work queue, so workers
//! (requests made with an environment key or a sessions token: polls, acks,
//! heartbeats, their session reads and results) draw on their own allowance:
//! a fleet of idle workers polling cannot starve the workspace's API.
//!
//! A bucket holds [`BURST_SECONDS`] of its rate (at least one request). The
//! hosted service documents no burst size; three seconds lets a client send a
//! page's worth of requests at once while keeping any minute within about 5%
//! of the limit. A rate of 0 disables the limit. The table of buckets is
//! bounded by the number of workspaces, which is bounded by the keys an
//! operator made. Nothing here reads the system time: callers pass the
//! server's clock.

use std::collections::HashMap;
use std::sync::Mutex;

use logbook_core::{Timestamp, WorkspaceId};

/// Seconds of its rate a bucket holds: the most a workspace can send at once
/// after a pause (at 1,200 reads a minute, 60 reads; at 300 creates, 15).
pub const BURST_SECONDS: u32 = 3;

/// The default allowance of a workspace's self-hosted workers, per minute.
/// An SDK worker makes at most about one call a second (a long poll of up to
/// 999 ms, then 1-3 s of sleep when the queue is empty; a heartbeat at most
/// every second, usually every 30 s; one result per tool call), so this
/// serves about a hundred busy workers.
pub const DEFAULT_WORK_PER_MINUTE: u32 = 6_000;

/// Microseconds in a minute: the units of a token, so that a bucket refills
/// by exactly `per_minute` units a microsecond, in integers.
const MICROS_PER_MINUTE: u128 = 60_000_000;

/// Requests per minute; 0 means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub create_per_minute: u32,
    pub read_per_minute: u32,
    /// Calls made with a worker's credential (environment key, sessions
    /// token), whatever their method.
    pub work_per_minute: u32,
}

impl Default for RateLimits {
    /// The hosted service's documented limits, and [`DEFAULT_WORK_PER_MINUTE`].
    fn default() -> Self {
        RateLimits { create_per_minute: 300, read_per_minute: 1200, work_per_minute: DEFAULT_WORK_PER_MINUTE }
    }
}

/// Which allowance a request draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Create,
    Read,
    /// A self-hosted worker's call.
    Work,
}

#[derive(Debug)]
pub struct RateLimiter {
    limits: RateLimits,
    buckets: Mutex<HashMap<(WorkspaceId, Class), Bucket>>,
}

/// Tokens in units of [`MICROS_PER_MINUTE`] per request.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    units: u128,
    updated: Timestamp,
}

impl RateLimiter {
    pub fn new(limits: RateLimits) -> RateLimiter {
        RateLimiter { limits, buckets: Mutex::new(HashMap::new()) }
    }

    /// The most requests of `class` a workspace can send at once.
    pub fn burst(&self, class: Class) -> u32 {
        burst(self.per_minute(class))
    }

    fn per_minute(&self, class: Class) -> u32 {
        match class {
            Class::Create => self.limits.create_per_minute,
            Class::Read => self.limits.read_per_minute,
            Class::Work => self.limits.work_per_minute,
        }
    }

    /// Takes one token, or says how many milliseconds until one is available.
    pub fn check(&self, workspace: WorkspaceId, class: Class, now: Timestamp) -> Result<(), u64> {
        let per_minute = self.per_minute(class);
        if per_minute == 0 {
            return Ok(());
        }
        let rate = u128::from(per_minute);
        let capacity = u128::from(burst(per_minute)) * MICROS_PER_MINUTE;
        // A poisoned lock means a panic mid-update of a counter; admitting the
        // request is safer than refusing every request from then on.
        let Ok(mut buckets) = self.buckets.lock() else { return Ok(()) };
        let bucket = buckets.entry((workspace, class)).or_insert(Bucket { units: capacity, updated: now });
        // A clock that steps back refills nothing (and does not stall).
        let elapsed_micros =
            u128::try_from(now.unix_micros().saturating_sub(bucket.updated.unix_micros())).unwrap_or(0);
        bucket.units = bucket.units.saturating_add(elapsed_micros.saturating_mul(rate)).min(capacity);
        bucket.updated = now;
        if MICROS_PER_MINUTE <= bucket.units {
            bucket.units -= MICROS_PER_MINUTE;
            Ok(())
        } else {
            let wait_micros = (MICROS_PER_MINUTE - bucket.units).div_ceil(rate);
            Err(u64::try_from(wait_micros.div_ceil(1000)).unwrap_or(u64::MAX))
        }
    }
}

/// [`BURST_SECONDS`] of `per_minute`, at least one request.
fn burst(per_minute: u32) -> u32 {
    (u64::from(per_minute) * u64::from(BURST_SECONDS) / 60).max(1).try_into().unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_ms(ms: i64) -> Timestamp {
        Timestamp::from_unix_micros(1_777_636_800_000_000 + ms * 1000)
    }

    #[test]
    fn three_times_the_rate_for_a_minute_gets_about_the_rate() {
        let limiter = RateLimiter::new(RateLimits { create_per_minute: 300, read_per_minute: 0, work_per_minute: 0 });
        let ws = WorkspaceId::from_parts(1, 1);
        let mut accepted = 0;
        // 900 requests evenly over 60 s.
        for n in 0..900i64 {
            if limiter.check(ws, Class::Create, at_ms(n * 60_000 / 900)).is_ok() {
                accepted += 1;
            }
        }
        // The rate for a minute plus one burst, less what refilled while full.
        assert!((300..=315).contains(&accepted), "accepted {accepted}");
        // Reads are unlimited here; another workspace has its own bucket.
        assert!(limiter.check(ws, Class::Read, at_ms(0)).is_ok());
        assert!(limiter.check(WorkspaceId::from_parts(2, 2), Class::Create, at_ms(60_000)).is_ok());
    }

    #[test]
    fn refusal_says_when_to_retry() {
        let limiter = RateLimiter::new(RateLimits { create_per_minute: 60, read_per_minute: 60, work_per_minute: 60 });
        let ws = WorkspaceId::from_parts(1, 1);
        assert_eq!(limiter.burst(Class::Read), 3);
        for _ in 0..3 {
            assert!(limiter.check(ws, Class::Read, at_ms(0)).is_ok());
        }
        assert_eq!(limiter.check(ws, Class::Read, at_ms(0)), Err(1000));
        assert_eq!(limiter.check(ws, Class::Read, at_ms(400)), Err(600));
        assert!(limiter.check(ws, Class::Read, at_ms(1000)).is_ok());
        // The other classes have their own buckets.
        assert!(limiter.check(ws, Class::Work, at_ms(1000)).is_ok());
        assert!(limiter.check(ws, Class::Create, at_ms(1000)).is_ok());
        // A clock that steps back neither refills nor stalls the bucket.
        assert_eq!(limiter.check(ws, Class::Read, at_ms(0)), Err(1000));
    }

    #[test]
    fn the_default_bursts() {
        let limiter = RateLimiter::new(RateLimits::default());
        assert_eq!(
            (limiter.burst(Class::Create), limiter.burst(Class::Read), limiter.burst(Class::Work)),
            (15, 60, 300)
        );
        assert_eq!(RateLimiter::new(RateLimits { read_per_minute: 1, ..RateLimits::default() }).burst(Class::Read), 1);
    }
}
