//! Per-workspace rate limits: one token bucket for create calls (POST, DELETE)
//! and one for reads (GET), each refilled continuously at its per-minute rate.
//!
//! A bucket holds at most a twentieth of a minute's allowance (3 s of burst),
//! so a client pushing at three times the rate for a minute gets within about 5%
//! of the limit. A rate of 0 disables the limit. The table of buckets is bounded
//! by the number of workspaces, which is bounded by the keys an operator made.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use logbook_core::WorkspaceId;

/// Requests per minute; 0 means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub create_per_minute: u32,
    pub read_per_minute: u32,
}

impl Default for RateLimits {
    /// The hosted service's documented limits.
    fn default() -> Self {
        RateLimits { create_per_minute: 300, read_per_minute: 1200 }
    }
}

/// Which allowance a request draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Create,
    Read,
}

#[derive(Debug)]
pub struct RateLimiter {
    limits: RateLimits,
    buckets: Mutex<HashMap<(WorkspaceId, Class), Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    pub fn new(limits: RateLimits) -> RateLimiter {
        RateLimiter { limits, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token, or says how many milliseconds until one is available.
    pub fn check(&self, workspace: WorkspaceId, class: Class, now: Instant) -> Result<(), u64> {
        let per_minute = match class {
            Class::Create => self.limits.create_per_minute,
            Class::Read => self.limits.read_per_minute,
        };
        if per_minute == 0 {
            return Ok(());
        }
        let rate_per_sec = f64::from(per_minute) / 60.0;
        let capacity = (f64::from(per_minute) / 20.0).max(1.0);
        let Ok(mut buckets) = self.buckets.lock() else { return Ok(()) };
        let bucket = buckets.entry((workspace, class)).or_insert(Bucket { tokens: capacity, updated: now });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate_per_sec).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait_secs = (1.0 - bucket.tokens) / rate_per_sec;
            Err((wait_secs * 1000.0).ceil() as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn three_times_the_rate_for_a_minute_gets_about_the_rate() {
        let limiter = RateLimiter::new(RateLimits { create_per_minute: 300, read_per_minute: 0 });
        let ws = WorkspaceId::from_parts(1, 1);
        let start = Instant::now();
        let mut accepted = 0;
        // 900 requests evenly over 60 s.
        for n in 0..900u64 {
            let at = start + Duration::from_millis(n * 60_000 / 900);
            if limiter.check(ws, Class::Create, at).is_ok() {
                accepted += 1;
            }
        }
        assert!((285..=330).contains(&accepted), "accepted {accepted}");
        // Reads are unlimited here; another workspace has its own bucket.
        assert!(limiter.check(ws, Class::Read, start).is_ok());
        assert!(limiter.check(WorkspaceId::from_parts(2, 2), Class::Create, start + Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn refusal_says_when_to_retry() {
        let limiter = RateLimiter::new(RateLimits { create_per_minute: 60, read_per_minute: 60 });
        let ws = WorkspaceId::from_parts(1, 1);
        let now = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check(ws, Class::Read, now).is_ok());
        }
        let wait = limiter.check(ws, Class::Read, now).unwrap_err();
        assert!((900..=1000).contains(&wait), "{wait}");
    }
}
