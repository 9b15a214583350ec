//! The state every handler shares: the store, the clock, configuration, rate
//! limits, metrics, the work queues' wake-ups and the shutdown signal.
//!
//! The store's calls block (sled, and appends wait for fsync), so handlers run
//! them through [`AppState::blocking`], which moves them to tokio's blocking
//! pool and turns a panic or a cancelled task into an `ApiError`.

use std::sync::Arc;
use std::time::Duration;

use logbook_core::{Clock, EnvironmentId, EventId, Seq, Timestamp, WorkspaceId};
use logbook_store::SledStore;
use rand::RngExt;
use tokio::sync::watch;

use crate::api::error::ApiError;
use crate::api::work::hub::WorkHub;
use crate::metrics::Metrics;
use crate::previews::Previews;
use crate::ratelimit::{RateLimiter, RateLimits};

/// Server settings that handlers consult.
#[derive(Debug, Clone)]
pub struct Config {
    pub rate_limits: RateLimits,
    /// How often an idle SSE stream sends `event: ping`.
    pub sse_ping_interval: Duration,
    /// How long a non-streaming request may take before it answers 504.
    pub request_timeout: Duration,
    /// How long a request body may take to arrive, plus a second per
    /// `transport::BODY_MIN_BYTES_PER_SEC` bytes received, before it is cut
    /// off with a 408.
    pub body_read_timeout: Duration,
    /// The lease a self-hosted worker gets on ack, until it asks for another.
    pub work_lease_ttl_secs: u32,
    /// Most SSE streams one workspace may hold open at once (at least 1):
    /// past it a new stream answers 429, so one tenant's streams cannot take
    /// every connection the server accepts.
    pub max_streams_per_workspace: usize,
    /// Most transfers (exports and file uploads) one workspace may have
    /// under way at once (at least 1); see [`Held::Transfer`].
    pub max_transfers_per_workspace: usize,
    /// Free space kept on the data directory's disk for work under way
    /// (`crate::diskguard`; 0: none). Only `serve` installs the guard.
    pub disk_reserve_bytes: u64,
}

/// Most SSE streams one workspace holds open at once, by default: a quarter
/// of the server's default connection cap
/// ([`crate::transport::DEFAULT_MAX_CONNECTIONS`]).
pub const DEFAULT_MAX_STREAMS_PER_WORKSPACE: usize = 1024;
/// Most transfers one workspace has under way at once, by default.
pub const DEFAULT_MAX_TRANSFERS_PER_WORKSPACE: usize = 16;
/// Most transfers under way at once on the whole server: each holds a
/// thread of tokio's blocking pool (512) for as long as its client takes,
/// and every request's store work needs one of the rest.
pub const MAX_TRANSFERS: usize = 128;
/// Most downloads (file contents) one workspace has under way at once: each
/// holds up to a chunk ([`crate::resources::content::CHUNK_BYTES`], 8 MiB)
/// in memory until its client reads it, so a workspace's slow readers hold
/// at most 512 MiB.
pub const MAX_DOWNLOADS_PER_WORKSPACE: usize = 64;

/// What a workspace holds that the server bounds while it lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Held {
    /// An open SSE stream: a connection held as long as the client likes.
    Stream,
    /// An export being read or an upload being written: a blocking thread
    /// held as long as the client takes to read or send it.
    Transfer,
    /// A file's contents being read: a chunk in memory until the client
    /// takes it.
    Download,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            rate_limits: RateLimits::default(),
            sse_ping_interval: Duration::from_secs(15),
            request_timeout: Duration::from_secs(60),
            body_read_timeout: crate::transport::DEFAULT_BODY_READ_TIMEOUT,
            work_lease_ttl_secs: crate::api::work::queue::DEFAULT_LEASE_TTL_SECS,
            max_streams_per_workspace: DEFAULT_MAX_STREAMS_PER_WORKSPACE,
            max_transfers_per_workspace: DEFAULT_MAX_TRANSFERS_PER_WORKSPACE,
            disk_reserve_bytes: crate::diskguard::DEFAULT_RESERVE_BYTES,
        }
    }
}

/// One thing a workspace holds, counted until dropped (see [`AppState::hold`]).
#[derive(Debug)]
pub struct HeldSlot {
    state: AppState,
    workspace: WorkspaceId,
    kind: Held,
}

impl Drop for HeldSlot {
    fn drop(&mut self) {
        let mut counts = self.state.inner.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(open) = counts.per_workspace.get_mut(&(self.workspace, self.kind)) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                counts.per_workspace.remove(&(self.workspace, self.kind));
            }
        }
        match self.kind {
            Held::Transfer => counts.transfers = counts.transfers.saturating_sub(1),
            Held::Stream | Held::Download => {}
        }
    }
}

/// What every workspace holds (only workspaces holding something have an
/// entry), and the transfers of all of them.
#[derive(Debug, Default)]
struct HeldCounts {
    per_workspace: std::collections::HashMap<(WorkspaceId, Held), usize>,
    transfers: usize,
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
    previews: Previews,
    /// Long-poll wake-ups and the workers seen polling, per work queue.
    work: WorkHub,
    /// Workspace API keys authenticated recently.
    keys: crate::tenancy::KeyCache,
    /// Sessions as last decoded, for the send path.
    sessions: crate::api::sessions::DecodedSessions,
    shutdown: watch::Receiver<bool>,
    /// The runner, once started (absent in tests of the API alone).
    runner: std::sync::OnceLock<crate::runner::RunnerHandle>,
    /// The key signed heads are signed with, once loaded.
    audit_key: std::sync::OnceLock<Arc<crate::audit::AuditKey>>,
    /// Where session resources go on disk, once configured.
    resources_host: std::sync::OnceLock<Arc<crate::resources::Host>>,
    /// The reserve of free space kept on the data directory's disk, once
    /// configured (absent: nothing is refused for space).
    disk_guard: std::sync::OnceLock<crate::diskguard::DiskGuard>,
    /// The millisecond and random part of the last id made, for monotonic ids.
    last_id: std::sync::Mutex<(u64, u128)>,
    /// What workspaces hold open (see [`AppState::hold`]).
    held: std::sync::Mutex<HeldCounts>,
    /// The millisecond of the last event id made: event ids never take an
    /// earlier one, so they keep increasing when the wall clock steps back.
    last_event_ms: std::sync::atomic::AtomicU64,
    /// Per environment: shared by session creates (around their environment
    /// check and write), exclusive for the environment's delete (around its
    /// check for sessions), so that a delete never races a create into a
    /// session without its environment, while creates still run, and
    /// group-commit, side by side, and a delete holds up nothing of another
    /// environment's (whose workspace may be another tenant's).
    environment_refs: EnvironmentLocks,
}

/// Read-write locks keyed by environment, created on demand: an entry exists
/// only while someone holds the environment's lock (so the map never holds
/// more entries than there are holders). Blocking: take them on the
/// blocking pool.
#[derive(Debug, Default)]
struct EnvironmentLocks {
    /// Per environment held: how many share it, or [`WRITER`].
    held: std::sync::Mutex<std::collections::HashMap<EnvironmentId, usize>>,
    released: std::sync::Condvar,
}

/// The count of an environment held exclusively.
const WRITER: usize = usize::MAX;

impl EnvironmentLocks {
    fn take(&self, id: EnvironmentId, exclusive: bool) {
        // The guarded counts stay consistent: every update is one statement.
        let mut held = self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            let free = match held.get(&id) {
                None => true,
                Some(&WRITER) => false,
                Some(_) => !exclusive,
            };
            if free {
                break;
            }
            held = self.released.wait(held).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        let count = held.entry(id).or_insert(0);
        *count = if exclusive { WRITER } else { *count + 1 };
    }

    fn give_back(&self, id: EnvironmentId) {
        let mut held = self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = held.get_mut(&id) {
            if *count == WRITER || *count <= 1 {
                held.remove(&id);
            } else {
                *count -= 1;
            }
        }
        drop(held);
        self.released.notify_all();
    }
}

/// An environment's lock, held until dropped (see [`AppState::environment_in_use`]).
#[derive(Debug)]
pub struct EnvironmentGuard<'a> {
    locks: &'a EnvironmentLocks,
    id: EnvironmentId,
}

impl Drop for EnvironmentGuard<'_> {
    fn drop(&mut self) {
        self.locks.give_back(self.id);
    }
}

/// The 80 random bits of a ULID.
const RANDOM_MASK: u128 = (1 << 80) - 1;

impl AppState {
    pub fn new(store: SledStore, clock: Arc<dyn Clock>, config: Config, shutdown: watch::Receiver<bool>) -> AppState {
        let limiter = RateLimiter::new(config.rate_limits);
        AppState {
            inner: Arc::new(Inner {
                store,
                clock,
                config,
                limiter,
                metrics: Metrics::default(),
                previews: Previews::default(),
                work: WorkHub::default(),
                keys: crate::tenancy::KeyCache::default(),
                sessions: crate::api::sessions::DecodedSessions::default(),
                shutdown,
                runner: std::sync::OnceLock::new(),
                audit_key: std::sync::OnceLock::new(),
                resources_host: std::sync::OnceLock::new(),
                disk_guard: std::sync::OnceLock::new(),
                last_id: std::sync::Mutex::new((0, 0)),
                last_event_ms: std::sync::atomic::AtomicU64::new(0),
                held: std::sync::Mutex::new(HeldCounts::default()),
                environment_refs: EnvironmentLocks::default(),
            }),
        }
    }

    /// Sessions as last decoded (see [`crate::api::sessions::DecodedSessions`]).
    pub fn sessions(&self) -> &crate::api::sessions::DecodedSessions {
        &self.inner.sessions
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

    /// Counts one more `kind` held by `workspace` until the slot is dropped:
    /// `None` when the workspace already holds its most
    /// ([`Config::max_streams_per_workspace`],
    /// [`Config::max_transfers_per_workspace`],
    /// [`MAX_DOWNLOADS_PER_WORKSPACE`]), or, for a transfer, the server
    /// [`MAX_TRANSFERS`].
    pub fn hold(&self, workspace: WorkspaceId, kind: Held) -> Option<HeldSlot> {
        let config = &self.inner.config;
        let cap = match kind {
            Held::Stream => config.max_streams_per_workspace,
            Held::Transfer => config.max_transfers_per_workspace,
            Held::Download => MAX_DOWNLOADS_PER_WORKSPACE,
        };
        // A poisoned lock only means a panic elsewhere mid-update of a count.
        let mut counts = self.inner.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if kind == Held::Transfer && counts.transfers >= MAX_TRANSFERS {
            return None;
        }
        let open = counts.per_workspace.get(&(workspace, kind)).copied().unwrap_or(0);
        if open >= cap.max(1) {
            return None;
        }
        counts.per_workspace.insert((workspace, kind), open + 1);
        match kind {
            Held::Transfer => counts.transfers += 1,
            Held::Stream | Held::Download => {}
        }
        Some(HeldSlot { state: self.clone(), workspace, kind })
    }

    /// Attaches the runner; sessions then act on their input.
    pub fn set_runner(&self, runner: crate::runner::RunnerHandle) {
        let _ = self.inner.runner.set(runner);
    }

    pub fn runner(&self) -> Option<&crate::runner::RunnerHandle> {
        self.inner.runner.get()
    }

    /// Attaches the audit key (the `/x/v1` audit endpoints need it).
    pub fn set_audit_key(&self, key: Arc<crate::audit::AuditKey>) {
        let _ = self.inner.audit_key.set(key);
    }

    pub fn audit_key(&self) -> Option<Arc<crate::audit::AuditKey>> {
        self.inner.audit_key.get().cloned()
    }

    /// Attaches the resources host (file mounts, outputs, repositories need it).
    pub fn set_resources_host(&self, host: Arc<crate::resources::Host>) {
        let _ = self.inner.resources_host.set(host);
    }

    pub fn resources_host(&self) -> Option<&Arc<crate::resources::Host>> {
        self.inner.resources_host.get()
    }

    pub fn set_disk_guard(&self, guard: crate::diskguard::DiskGuard) {
        let _ = self.inner.disk_guard.set(guard);
    }

    pub fn disk_guard(&self) -> Option<&crate::diskguard::DiskGuard> {
        self.inner.disk_guard.get()
    }

    /// Whether the data directory's disk is below its reserve now: what to
    /// refuse is `crate::diskguard`'s to say. Counts the refusal the caller
    /// will answer.
    pub fn refuse_for_space(&self) -> Option<crate::api::error::ApiError> {
        let low = self.disk_guard()?.low(std::time::Instant::now())?;
        self.metrics().disk_low_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(crate::api::error::ApiError::insufficient_storage(low))
    }

    pub fn previews(&self) -> &Previews {
        &self.inner.previews
    }

    pub fn work_hub(&self) -> &WorkHub {
        &self.inner.work
    }

    pub fn key_cache(&self) -> &crate::tenancy::KeyCache {
        &self.inner.keys
    }

    /// Becomes `true` when the server starts shutting down.
    pub fn shutdown(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.clone()
    }

    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// Held while a session naming environment `id` is written (see
    /// `Inner::environment_refs`). Blocking: take it on the blocking pool.
    pub fn environment_in_use(&self, id: EnvironmentId) -> EnvironmentGuard<'_> {
        self.inner.environment_refs.take(id, false);
        EnvironmentGuard { locks: &self.inner.environment_refs, id }
    }

    /// Held while environment `id` is checked for sessions and deleted.
    pub fn environment_unused(&self, id: EnvironmentId) -> EnvironmentGuard<'_> {
        self.inner.environment_refs.take(id, true);
        EnvironmentGuard { locks: &self.inner.environment_refs, id }
    }

    /// A fresh id for an object created at `now`: ids sort by creation, also
    /// within one millisecond (the random part then counts up), so lists in id
    /// order are lists in creation order.
    pub fn new_id<T>(&self, now: Timestamp, make: fn(u64, u128) -> T) -> T {
        let ms = u64::try_from(now.unix_ms()).unwrap_or(0);
        let Ok(mut last) = self.inner.last_id.lock() else {
            return make(ms, rand::rng().random::<u128>() & RANDOM_MASK);
        };
        let (id_ms, random) = if ms > last.0 {
            // Leave headroom so increments within the millisecond cannot overflow.
            (ms, rand::rng().random::<u128>() & (RANDOM_MASK >> 1))
        } else {
            (last.0, (last.1 + 1) & RANDOM_MASK)
        };
        *last = (id_ms, random);
        make(id_ms, random)
    }

    /// The id of the event that will be stored at `seq`. Its millisecond
    /// never goes back (a clock stepped back keeps the last one), so the ids
    /// of a session's events increase with their seqs within a process,
    /// with one exception: the runner picks a streamed block's id when the
    /// block starts (its `event_start` preview names it), so input that
    /// lands while the model streams has a larger id than the event
    /// appended after it. Order by seq (the list's and stream's order), not
    /// by id.
    pub fn event_id(&self, seq: Seq) -> EventId {
        let now = u64::try_from(self.now().unix_ms()).unwrap_or(0);
        let ms = self.inner.last_event_ms.fetch_max(now, std::sync::atomic::Ordering::Relaxed).max(now);
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
