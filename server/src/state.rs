//! The state every handler shares: the store, the clock, configuration, rate
//! limits, metrics and the shutdown signal.
//!
//! The store's calls block (sled, and appends wait for fsync), so handlers run
//! them through [`AppState::blocking`], which moves them to tokio's blocking
//! pool and turns a panic or a cancelled task into an `ApiError`.

use std::sync::Arc;
use std::time::Duration;

use logbook_core::{Clock, EventId, Seq, Timestamp};
use logbook_store::SledStore;
use rand::RngExt;
use tokio::sync::watch;

use crate::api::error::ApiError;
use crate::metrics::Metrics;
use crate::ratelimit::{RateLimiter, RateLimits};

/// Server settings that handlers consult.
#[derive(Debug, Clone)]
pub struct Config {
    pub rate_limits: RateLimits,
    /// How often an idle SSE stream sends `event: ping`.
    pub sse_ping_interval: Duration,
    /// How long a non-streaming request may take before it answers 504.
    pub request_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            rate_limits: RateLimits::default(),
            sse_ping_interval: Duration::from_secs(15),
            request_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: SledStore,
    clock: Arc<dyn Clock>,
    config: Config,
    limiter: RateLimiter,
    metrics: Metrics,
    shutdown: watch::Receiver<bool>,
}

impl AppState {
    pub fn new(store: SledStore, clock: Arc<dyn Clock>, config: Config, shutdown: watch::Receiver<bool>) -> AppState {
        let limiter = RateLimiter::new(config.rate_limits);
        AppState { inner: Arc::new(Inner { store, clock, config, limiter, metrics: Metrics::default(), shutdown }) }
    }

    pub fn store(&self) -> &SledStore {
        &self.inner.store
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn limiter(&self) -> &RateLimiter {
        &self.inner.limiter
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Becomes `true` when the server starts shutting down.
    pub fn shutdown(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.clone()
    }

    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// A fresh id: the current millisecond and 80 random bits.
    pub fn new_id<T>(&self, make: fn(u64, u128) -> T) -> T {
        let ms = u64::try_from(self.now().unix_ms()).unwrap_or(0);
        make(ms, rand::rng().random::<u128>())
    }

    /// The id of the event that will be stored at `seq`.
    pub fn event_id(&self, seq: Seq) -> EventId {
        let ms = u64::try_from(self.now().unix_ms()).unwrap_or(0);
        EventId::for_seq(ms, seq, rand::rng().random::<u64>())
    }

    /// Runs a blocking store operation off the async threads.
    pub async fn blocking<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&SledStore) -> Result<T, ApiError> + Send + 'static,
    {
        let store = self.inner.store.clone();
        match tokio::task::spawn_blocking(move || work(&store)).await {
            Ok(res) => res,
            Err(join) => Err(ApiError::internal(format!("blocking task failed: {join}"))),
        }
    }
}
