//! The work queue's storage and the work item's state machine.
//!
//! A work item moves `queued → starting → active → stopping → stopped`:
//! a poll *claims* a queued item (it stays queued, "pending", until acked; a
//! claim older than the poll's `reclaim_older_than_ms` may be claimed again by
//! another poll), `ack` starts its lease, heartbeats keep it (`active`) and say
//! when to stop, `stop` ends it (gracefully through `stopping`, or at once). A
//! lease that is not renewed lapses: the item goes back to the queue (or, if
//! it was stopping, to `stopped`).
//!
//! Each claim gets a sessions token. Acks come with the environment key, so
//! the ack cannot tell which claim it is: the tokens of every claim since the
//! item last entered the queue stay valid until the first heartbeat, which
//! binds the lease to the claim it came with (`expected_last_heartbeat =
//! NO_HEARTBEAT` can succeed once) and retires the other tokens. Only one
//! worker can ack, and only one can win the first heartbeat, so two workers
//! never hold the item at once. Time-based changes are applied lazily, with the
//! injected clock, whenever an item is read ([`StoredWork::settle`]) and, for
//! leases nobody renews, by every poll and `stats` first (the lease markers
//! due, below); there is no background task, and a restart loses nothing.
//!
//! Items are resources of kind `WorkItem`. Every key starts with the
//! workspace's 16 bytes (so a scan never crosses tenants), then a tag:
//!
//! | key                              | value                                     |
//! |----------------------------------|-------------------------------------------|
//! | `ws 'i' env[16] work[16]`        | the item (JSON)                           |
//! | `ws 'q' env[16] work[16]`        | empty: the item is queued                 |
//! | `ws 'e' env[16] due[8] work[16]` | empty: the item is leased; look at `due`  |
//! | `ws 's' session[16]`             | the session's latest item (`SessionWork`) |
//!
//! An item has the marker of its state ([`marker`]): queued (waiting, or
//! claimed and not acked) items a queue marker, leased ones (starting, active,
//! stopping) a lease marker, stopped ones none. Polls scan the queue markers
//! in key order, which is creation order (ids are ULIDs), so the queue is
//! first in, first out, and an item whose lease lapsed keeps its place at the
//! front; items being served are not in that range, so however many run, the
//! queued ones behind them are found. Lease markers are in due order (`due`:
//! big-endian microseconds, [`StoredWork::lapse_check_at`]): a poll reads only
//! those due, applies the lapses, and moves the marker of a lease renewed
//! since to its new expiry (so heartbeats write no marker). Markers of the
//! layout before 2026-12-06 (`ws 'l' env work`, one per unstopped item) are
//! converted by the first polls or `stats` of their environment.
//!
//! Writes that touch several keys are ordered so that a crash between them
//! leaves something harmless: a session pointer is claimed before its item
//! becomes visible (a pointer to nothing means "no item"); an item is written
//! before its new marker, which is written before its old marker is deleted.
//! A marker left behind (by a crash, or a race between two changes of an
//! item) is met by a scan, which deletes it and writes the item's own.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use logbook_core::{EnvironmentId, SessionId, Timestamp, WorkId};
use logbook_store::{Direction, ResourceKind, Resources, SledStore};

use crate::api::error::ApiError;
use crate::api::{from_bytes, to_bytes};
use crate::tenancy::{self, KeyScope, Tenant};

/// The literal a worker sends as `expected_last_heartbeat` on its first beat.
pub const NO_HEARTBEAT: &str = "NO_HEARTBEAT";
/// Shortest lease a worker may ask for: the SDK beats every `ttl / 2` and at
/// least every second, so a shorter lease could lapse between two beats.
pub const MIN_LEASE_TTL_SECS: u32 = 2;
/// Longest lease a worker may ask for: a dead worker holds its item at most
/// this long before the item is re-queued.
pub const MAX_LEASE_TTL_SECS: u32 = 3600;
/// The lease before a worker asks for another: the API's documented default
/// (the SDK retries a result post this long without a lease TTL).
pub const DEFAULT_LEASE_TTL_SECS: u32 = 300;
/// An un-acked claim older than this is offered again (the API's default).
pub const DEFAULT_RECLAIM_MS: u64 = 5000;
/// Queued items one poll looks at (items being served are not among them):
/// bounds a poll's work on a queue that no worker has drained for a long
/// time (the rest are reached as these go). Also the most lease markers, and
/// the most markers of the old layout, one request handles.
pub const MAX_POLL_SCAN: usize = 1000;
/// Queued items `stats` counts: past this, `depth` and `pending` stop growing
/// (a queue that deep needs no exact figure to be scaled on).
pub const MAX_STATS_SCAN: usize = 10_000;
/// Markers read per step of a scan: a poll usually claims one of the first.
const MARKER_BATCH: usize = 32;
// A batch of markers (empty values, keys of at most 64 KiB) never reaches the
// store's read budget, so a batch shorter than asked is the markers' end.
const _: () = assert!(MARKER_BATCH * (u16::MAX as usize + 64) <= logbook_store::MAX_READ_BYTES);
/// Compare-and-swap attempts on one item before answering "busy".
const MAX_CAS_ATTEMPTS: usize = 32;
/// Open claims of one queued item: polls that keep re-claiming an item nobody
/// acks retire the oldest claims' tokens beyond this.
pub const MAX_OPEN_CLAIMS: usize = 16;

const ITEM_TAG: u8 = b'i';
const QUEUED_TAG: u8 = b'q';
const LEASE_TAG: u8 = b'e';
/// The layout before 2026-12-06: a marker per unstopped item, queued or
/// leased. Only converted (see [`convert_old_markers`]), never written.
const OLD_LIVE_TAG: u8 = b'l';
const SESSION_TAG: u8 = b's';

/// A work item's state, as the API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkState {
    Queued,
    Starting,
    Active,
    Stopping,
    Stopped,
}

impl WorkState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkState::Queued => "queued",
            WorkState::Starting => "starting",
            WorkState::Active => "active",
            WorkState::Stopping => "stopping",
            WorkState::Stopped => "stopped",
        }
    }
}

/// What a work item asks a worker to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkData {
    /// Serve this session's tool calls.
    Session { id: SessionId },
    /// Prove a worker is alive: it acks the item and stops it.
    Healthcheck {},
}

/// A poll that took the item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// Numbers the item's claims; a sessions token names the claim it was minted for.
    pub n: u64,
    pub at: Timestamp,
    /// The hash (hex) of the claim's sessions token, to delete it when the claim ends.
    pub token_hash: Option<String>,
}

/// A started item's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub ttl_seconds: u32,
    pub expires_at: Timestamp,
}

/// A work item as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredWork {
    pub id: WorkId,
    pub environment_id: EnvironmentId,
    pub data: WorkData,
    pub metadata: Map<String, Value>,
    pub state: WorkState,
    pub created_at: Timestamp,
    /// When the item last entered the queue (created, or its lease lapsed).
    pub queued_at: Timestamp,
    pub acknowledged_at: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    pub latest_heartbeat_at: Option<Timestamp>,
    pub stop_requested_at: Option<Timestamp>,
    pub stopped_at: Option<Timestamp>,
    /// Claims since the item last entered the queue, oldest first; once a
    /// heartbeat bound the lease, only the holder's.
    pub claims: Vec<Claim>,
    /// Token hashes (hex) of claims that ended (the lease lapsed or went to
    /// another claim): their holders are told so (412, 409, 401 "expired")
    /// until the item stops; at most [`MAX_OPEN_CLAIMS`].
    #[serde(default)]
    pub retired_tokens: Vec<String>,
    pub lease: Option<Lease>,
    /// Claims made so far (numbers them).
    pub n_claims: u64,
    /// When a lease's lapse is next looked for (its lease marker's time): the
    /// lease's expiry when the item was acked or last looked at, or earlier
    /// (a heartbeat that shortened the lease); heartbeats that extend the
    /// lease leave it, so they write no marker. `None` when there is no lease
    /// (and in items stored before it existed: their lease's expiry is used).
    #[serde(default)]
    pub lapse_check_at: Option<Timestamp>,
    /// Its worker stopped it unasked (with a worker's credential, no stop
    /// having been requested): a worker that stops its item while calls still
    /// wait on it failed them, and the session's runner does not queue a new
    /// item for those calls; an interrupt or new input does (see
    /// [`WorkNeed`]).
    #[serde(default)]
    pub stopped_by_worker: bool,
}

/// The lease as a refused heartbeat reports it (`error.details.current_state`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    pub last_heartbeat: Option<String>,
    pub state: WorkState,
    pub ttl_seconds: u32,
}

impl LeaseState {
    pub fn to_json(&self) -> Value {
        json!({
            "last_heartbeat": self.last_heartbeat,
            "lease_extended": false,
            "state": self.state.as_str(),
            "ttl_seconds": self.ttl_seconds,
        })
    }
}

/// Who asks for a stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopBy {
    /// The workspace's API key: an operator, or Logbook itself.
    Operator,
    /// A worker's credential (the item's sessions token, or the environment's key).
    Worker,
}

/// Why a session is given a work item ([`ensure_session_item`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkNeed {
    /// It was created, or got input: a message, an answer, or an interrupt
    /// while it waits on calls. A stopped item is replaced whoever stopped it.
    Input,
    /// Its runner waits on calls only a worker runs, the newest announced at
    /// `newest_call_at`. A stopped item is replaced unless its own worker
    /// stopped it unasked ([`StoredWork::stopped_by_worker`]) after every
    /// waiting call was announced: that worker failed the calls, and a new
    /// item at once would go to the next poll, very likely the same failing
    /// worker, in an endless poll, ack, fail loop. As hosted (behaviour digest
    /// §3.6), the session stays idle with `requires_action` until an interrupt
    /// or new input queues the work again. A worker that released its item
    /// before a call was announced (idled out at a turn's end) failed nothing.
    WorkerCalls { newest_call_at: Timestamp },
}

/// Why a stop changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlreadyStopped;

/// Sessions whose stopping item a lapse ended while a request looked (its
/// worker never confirmed the stop). The request wakes their runners, which
/// queue a new item for a session still waiting on a worker: the stop
/// request's own wake-up came while the item was live, and nothing else
/// would tell them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Lapsed(Vec<SessionId>);

impl Lapsed {
    /// Notes `after` if it is `before` ended by a lapse.
    fn note(&mut self, before: &StoredWork, after: &StoredWork) {
        if let (WorkState::Stopping, WorkState::Stopped, WorkData::Session { id }) =
            (before.state, after.state, after.data)
            && !self.0.contains(&id)
        {
            self.0.push(id);
        }
    }

    pub fn sessions(&self) -> &[SessionId] {
        &self.0
    }
}

/// Where a session's latest work item is (`ws 's' session`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionWork {
    pub environment_id: EnvironmentId,
    pub work_id: WorkId,
}

impl StoredWork {
    /// A new queued item.
    pub fn new(id: WorkId, environment_id: EnvironmentId, data: WorkData, now: Timestamp) -> StoredWork {
        StoredWork {
            id,
            environment_id,
            data,
            metadata: Map::new(),
            state: WorkState::Queued,
            created_at: now,
            queued_at: now,
            acknowledged_at: None,
            started_at: None,
            latest_heartbeat_at: None,
            stop_requested_at: None,
            stopped_at: None,
            claims: Vec::new(),
            retired_tokens: Vec::new(),
            lease: None,
            n_claims: 0,
            lapse_check_at: None,
            stopped_by_worker: false,
        }
    }

    /// Applies the passing of time: a lease that lapsed before `now` sends a
    /// started item back to the queue and ends a stopping one. Returns whether
    /// anything changed.
    pub fn settle(&mut self, now: Timestamp) -> bool {
        let Some(lease) = self.lease else { return false };
        if now < lease.expires_at {
            return false;
        }
        match self.state {
            WorkState::Starting | WorkState::Active => {
                self.state = WorkState::Queued;
                self.queued_at = lease.expires_at;
                self.acknowledged_at = None;
                self.started_at = None;
                self.latest_heartbeat_at = None;
                self.retire_claims(|_| false);
                self.lease = None;
                self.lapse_check_at = None;
                true
            }
            WorkState::Stopping => {
                self.state = WorkState::Stopped;
                self.stopped_at = Some(lease.expires_at);
                self.lease = None;
                self.lapse_check_at = None;
                self.retired_tokens.clear();
                true
            }
            WorkState::Queued | WorkState::Stopped => false,
        }
    }

    /// Whether a poll may take the item now: queued, and not claimed within
    /// the last `reclaim_ms`.
    pub fn claimable(&self, now: Timestamp, reclaim_ms: u64) -> bool {
        let reclaim_micros = i64::try_from(reclaim_ms.saturating_mul(1000)).unwrap_or(i64::MAX);
        self.state == WorkState::Queued
            && self
                .claims
                .last()
                .is_none_or(|claim| claim.at.unix_micros().saturating_add(reclaim_micros) <= now.unix_micros())
    }

    /// Claimed by a poll but not acked within the default reclaim window.
    pub fn pending(&self, now: Timestamp) -> bool {
        self.state == WorkState::Queued && !self.claims.is_empty() && !self.claimable(now, DEFAULT_RECLAIM_MS)
    }

    /// Whether claim `n` may act for the item (a sessions token of that claim
    /// is live): one of its open claims, or the one its lease is bound to.
    pub fn held_by(&self, n: u64) -> bool {
        self.state != WorkState::Stopped && self.claims.iter().any(|claim| claim.n == n)
    }

    /// Takes the item for a poll: a new claim, whose sessions token hashes to
    /// `token_hash`. Returns the claim's number.
    pub fn take(&mut self, now: Timestamp, token_hash: Option<String>) -> u64 {
        self.n_claims += 1;
        self.claims.push(Claim { n: self.n_claims, at: now, token_hash });
        if self.claims.len() > MAX_OPEN_CLAIMS {
            let oldest = self.claims.remove(0);
            self.retired_tokens.extend(oldest.token_hash);
            self.bound_retired();
        }
        self.n_claims
    }

    /// Ends the claims `keep` rejects; their tokens are retired.
    fn retire_claims(&mut self, keep: impl Fn(&Claim) -> bool) {
        let (kept, ended): (Vec<Claim>, Vec<Claim>) = self.claims.drain(..).partition(|claim| keep(claim));
        self.claims = kept;
        self.retired_tokens.extend(ended.into_iter().filter_map(|claim| claim.token_hash));
        self.bound_retired();
    }

    fn bound_retired(&mut self) {
        let excess = self.retired_tokens.len().saturating_sub(MAX_OPEN_CLAIMS);
        self.retired_tokens.drain(..excess);
    }

    /// Every token hash the item remembers (live and retired).
    fn token_hashes(&self) -> impl Iterator<Item = &String> {
        self.claims.iter().filter_map(|claim| claim.token_hash.as_ref()).chain(&self.retired_tokens)
    }

    /// `ack`: starts the lease of a queued item.
    pub fn ack(&mut self, now: Timestamp, ttl_seconds: u32) -> Result<(), WorkState> {
        match self.state {
            WorkState::Queued => {
                self.state = WorkState::Starting;
                self.acknowledged_at = Some(now);
                let expires_at = plus_seconds(now, ttl_seconds);
                self.lease = Some(Lease { ttl_seconds, expires_at });
                self.lapse_check_at = Some(expires_at);
                Ok(())
            }
            other @ (WorkState::Starting | WorkState::Active | WorkState::Stopping | WorkState::Stopped) => Err(other),
        }
    }

    /// The `last_heartbeat` a worker must echo, if there was a heartbeat.
    pub fn last_heartbeat(&self) -> Option<String> {
        self.latest_heartbeat_at.map(|at| at.to_string())
    }

    /// The lease's TTL, or `default` when there is no lease.
    pub fn ttl_seconds(&self, default: u32) -> u32 {
        self.lease.map_or(default, |lease| lease.ttl_seconds)
    }

    pub fn lease_state(&self, default_ttl: u32) -> LeaseState {
        LeaseState {
            last_heartbeat: self.last_heartbeat(),
            state: self.state,
            ttl_seconds: self.ttl_seconds(default_ttl),
        }
    }

    /// A heartbeat: checks `expected` (the `last_heartbeat` the worker saw, or
    /// [`NO_HEARTBEAT`]; `None` skips the check) and, for a sessions token,
    /// that its claim `holder` still holds the item; extends the lease by
    /// `ttl_seconds`. The first heartbeat binds the lease to `holder` (an
    /// environment key's binds it to no claim): the other claims' tokens are
    /// retired. Returns whether the lease was extended: a stopping or stopped
    /// item is not (and is not compared). A mismatch, or an item with no lease
    /// (queued: never acked, or its lease lapsed), is `Err` with the lease as
    /// it is.
    pub fn heartbeat(
        &mut self,
        expected: Option<&str>,
        holder: Option<u64>,
        ttl_seconds: u32,
        now: Timestamp,
        default_ttl: u32,
    ) -> Result<bool, LeaseState> {
        match self.state {
            WorkState::Stopping | WorkState::Stopped => Ok(false),
            WorkState::Queued => Err(self.lease_state(default_ttl)),
            WorkState::Starting | WorkState::Active => {
                if holder.is_some_and(|n| !self.held_by(n)) {
                    return Err(self.lease_state(default_ttl));
                }
                let last = self.last_heartbeat();
                let matches = match expected {
                    None => true,
                    Some(NO_HEARTBEAT) => last.is_none(),
                    Some(value) => last.as_deref() == Some(value),
                };
                if !matches {
                    return Err(self.lease_state(default_ttl));
                }
                // Strictly increasing, so every beat's value differs from the last.
                let at = match self.latest_heartbeat_at {
                    Some(previous) if now <= previous => Timestamp::from_unix_micros(previous.unix_micros() + 1),
                    Some(_) | None => now,
                };
                if self.latest_heartbeat_at.is_none() {
                    self.retire_claims(|claim| Some(claim.n) == holder);
                }
                self.latest_heartbeat_at = Some(at);
                self.started_at.get_or_insert(at);
                self.state = WorkState::Active;
                let expires_at = plus_seconds(now, ttl_seconds);
                self.lease = Some(Lease { ttl_seconds, expires_at });
                // Only a lease that now ends before the look moves its marker.
                if self.lapse_check_at.is_none_or(|at| expires_at < at) {
                    self.lapse_check_at = Some(expires_at);
                }
                Ok(true)
            }
        }
    }

    /// `stop`: a queued item stops at once (no worker to tell), a started one
    /// goes to `stopping` until its worker confirms (or `force` stops it now).
    /// A worker's stop that nobody asked for is remembered
    /// ([`StoredWork::stopped_by_worker`]); its confirmation of a requested
    /// one is not.
    pub fn stop(&mut self, force: bool, by: StopBy, now: Timestamp) -> Result<(), AlreadyStopped> {
        let stop_now = match (self.state, force) {
            (WorkState::Stopped, _) => return Err(AlreadyStopped),
            (WorkState::Queued, _) | (WorkState::Starting | WorkState::Active | WorkState::Stopping, true) => true,
            (WorkState::Starting | WorkState::Active | WorkState::Stopping, false) => false,
        };
        if by == StopBy::Worker && self.stop_requested_at.is_none() {
            self.stopped_by_worker = true;
        }
        self.stop_requested_at.get_or_insert(now);
        if stop_now {
            self.state = WorkState::Stopped;
            self.stopped_at = Some(now);
            self.lease = None;
            self.lapse_check_at = None;
            // The holders of ended claims learn nothing more from a stopped item.
            self.retired_tokens.clear();
        } else {
            self.state = WorkState::Stopping;
        }
        Ok(())
    }

    /// When the lease marker of a leased item has its lapse looked for.
    fn lapse_due(&self) -> Timestamp {
        self.lapse_check_at.or(self.lease.map(|lease| lease.expires_at)).unwrap_or(self.queued_at)
    }

    /// The API's Work object; `secret` only on the poll that claims it.
    pub fn to_wire(&self, secret: Option<&str>) -> Value {
        let data = match self.data {
            WorkData::Session { id } => json!({"type": "session", "id": id}),
            WorkData::Healthcheck {} => json!({"type": "healthcheck", "id": self.id}),
        };
        json!({
            "id": self.id,
            "type": "work",
            "environment_id": self.environment_id,
            "created_at": self.created_at,
            "data": data,
            "metadata": self.metadata,
            "state": self.state.as_str(),
            "secret": secret,
            "acknowledged_at": self.acknowledged_at,
            "started_at": self.started_at,
            "latest_heartbeat_at": self.latest_heartbeat_at,
            "stop_requested_at": self.stop_requested_at,
            "stopped_at": self.stopped_at,
        })
    }
}

fn plus_seconds(at: Timestamp, seconds: u32) -> Timestamp {
    Timestamp::from_unix_micros(at.unix_micros().saturating_add(i64::from(seconds) * 1_000_000))
}

/// `ws tag env work`.
fn env_key(tenant: &Tenant, tag: u8, env: EnvironmentId, work: Option<WorkId>) -> Vec<u8> {
    let mut key = tenant.prefix();
    key.push(tag);
    key.extend_from_slice(&env.to_bytes());
    if let Some(work) = work {
        key.extend_from_slice(&work.to_bytes());
    }
    key
}

/// The key of an item, and the prefix of an environment's items (`work` None).
pub fn item_key(tenant: &Tenant, env: EnvironmentId, work: Option<WorkId>) -> Vec<u8> {
    env_key(tenant, ITEM_TAG, env, work)
}

/// The key of a queued item's marker, and the prefix of an environment's (`work` None).
fn queued_key(tenant: &Tenant, env: EnvironmentId, work: Option<WorkId>) -> Vec<u8> {
    env_key(tenant, QUEUED_TAG, env, work)
}

/// `ws 'e' env due[8] work`: the lease marker of a leased item, due at
/// `due` (big-endian microseconds, so key order is due order).
fn lease_key(tenant: &Tenant, env: EnvironmentId, due: Timestamp, work: WorkId) -> Vec<u8> {
    let mut key = env_key(tenant, LEASE_TAG, env, None);
    key.extend_from_slice(&u64::try_from(due.unix_micros()).unwrap_or(0).to_be_bytes());
    key.extend_from_slice(&work.to_bytes());
    key
}

/// The marker an item has in its state: queued items one in the queue
/// (`'q'`, in creation order), leased ones one in the lease range (`'e'`, in
/// due order), stopped ones none.
fn marker(tenant: &Tenant, item: &StoredWork) -> Option<Vec<u8>> {
    match item.state {
        WorkState::Queued => Some(queued_key(tenant, item.environment_id, Some(item.id))),
        WorkState::Starting | WorkState::Active | WorkState::Stopping => {
            Some(lease_key(tenant, item.environment_id, item.lapse_due(), item.id))
        }
        WorkState::Stopped => None,
    }
}

fn session_key(tenant: &Tenant, session: SessionId) -> Vec<u8> {
    let mut key = tenant.prefix();
    key.push(SESSION_TAG);
    key.extend_from_slice(&session.to_bytes());
    key
}

pub fn not_found(raw: &str) -> ApiError {
    ApiError::not_found(format!("work item {raw} not found")).with_code("work_not_found")
}

fn busy(id: WorkId) -> ApiError {
    ApiError::conflict_transient(format!("work item {id} is changing concurrently; retry"))
}

/// An item with its stored bytes.
pub fn load(
    store: &SledStore,
    tenant: &Tenant,
    env: EnvironmentId,
    work: WorkId,
) -> Result<Option<(Vec<u8>, StoredWork)>, ApiError> {
    match store.get_resource(ResourceKind::WorkItem, &item_key(tenant, env, Some(work)))? {
        Some(bytes) => {
            let item = from_bytes(&bytes)?;
            Ok(Some((bytes, item)))
        }
        None => Ok(None),
    }
}

/// Writes a new item, then its marker (so polls never see a marker of an
/// item that is not written yet).
pub fn create(store: &SledStore, tenant: &Tenant, item: &StoredWork) -> Result<(), ApiError> {
    let key = item_key(tenant, item.environment_id, Some(item.id));
    crate::api::put_new(store, ResourceKind::WorkItem, &key, &to_bytes(item)?)?;
    mark(store, tenant, item)
}

/// Writes the marker of the item's state, if it has one (idempotent).
fn mark(store: &SledStore, tenant: &Tenant, item: &StoredWork) -> Result<(), ApiError> {
    if let Some(key) = marker(tenant, item) {
        store.swap_resource(ResourceKind::WorkItem, &key, None, Some(b""))?.ok();
    }
    Ok(())
}

fn unmark(store: &SledStore, key: &[u8]) -> Result<(), ApiError> {
    store.swap_resource(ResourceKind::WorkItem, key, Some(b""), None)?.ok();
    Ok(())
}

/// Replaces `before` (stored as `old`) with `after`; then moves the item's
/// marker (the new one written before the old one is deleted, so a crash in
/// between leaves the old one, which the scan that meets it repairs) and
/// drops the tokens it no longer remembers. Returns the new stored bytes, or
/// `None` if the item changed meanwhile.
pub fn commit(
    store: &SledStore,
    tenant: &Tenant,
    old: &[u8],
    before: &StoredWork,
    after: &StoredWork,
) -> Result<Option<Vec<u8>>, ApiError> {
    let bytes = to_bytes(after)?;
    let key = item_key(tenant, after.environment_id, Some(after.id));
    if store.swap_resource(ResourceKind::WorkItem, &key, Some(old), Some(&bytes))?.is_err() {
        return Ok(None);
    }
    let (was, is) = (marker(tenant, before), marker(tenant, after));
    if was != is {
        mark(store, tenant, after)?;
        if let Some(was) = was {
            unmark(store, &was)?;
        }
    }
    let remembered: Vec<&String> = after.token_hashes().collect();
    for hash in before.token_hashes() {
        if !remembered.contains(&hash) {
            delete_token(store, hash)?;
        }
    }
    Ok(Some(bytes))
}

fn delete_token(store: &SledStore, hex_hash: &str) -> Result<(), ApiError> {
    match parse_hash(hex_hash) {
        Some(hash) => tenancy::delete_key_hash(store, &hash),
        None => Ok(()),
    }
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (idx, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(idx * 2..idx * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Loads an item with time applied and persisted (a lapsed lease re-queues
/// it before anyone acts on it; a stopping item it ends is noted in
/// `lapsed`).
pub fn load_settled(
    store: &SledStore,
    tenant: &Tenant,
    env: EnvironmentId,
    work: WorkId,
    now: Timestamp,
    lapsed: &mut Lapsed,
) -> Result<(Vec<u8>, StoredWork), ApiError> {
    settle_stored(store, tenant, env, work, now, lapsed)?.ok_or_else(|| not_found(&work.to_string()))
}

/// [`load_settled`], `None` for a missing item. Every lapse is persisted
/// here, so every one that ends an item is noted.
fn settle_stored(
    store: &SledStore,
    tenant: &Tenant,
    env: EnvironmentId,
    work: WorkId,
    now: Timestamp,
    lapsed: &mut Lapsed,
) -> Result<Option<(Vec<u8>, StoredWork)>, ApiError> {
    for _ in 0..MAX_CAS_ATTEMPTS {
        let Some((bytes, item)) = load(store, tenant, env, work)? else { return Ok(None) };
        let mut next = item.clone();
        if !next.settle(now) {
            return Ok(Some((bytes, item)));
        }
        if let Some(bytes) = commit(store, tenant, &bytes, &item, &next)? {
            lapsed.note(&item, &next);
            return Ok(Some((bytes, next)));
        }
    }
    Err(busy(work))
}

/// Applies `change` to an item (time applied first, its lapse noted in
/// `lapsed`), retrying on concurrent writes. `change` returns `Ok(false)` to
/// leave the item as it is; the result says whether it changed.
pub fn update(
    store: &SledStore,
    tenant: &Tenant,
    env: EnvironmentId,
    work: WorkId,
    now: Timestamp,
    lapsed: &mut Lapsed,
    mut change: impl FnMut(&mut StoredWork) -> Result<bool, ApiError>,
) -> Result<(StoredWork, bool), ApiError> {
    for _ in 0..MAX_CAS_ATTEMPTS {
        let (bytes, item) = load_settled(store, tenant, env, work, now, lapsed)?;
        let mut next = item.clone();
        if !change(&mut next)? {
            return Ok((item, false));
        }
        if commit(store, tenant, &bytes, &item, &next)?.is_some() {
            return Ok((next, true));
        }
    }
    Err(busy(work))
}

/// The queued items of an environment (waiting, or claimed and not acked),
/// oldest first, at most [`MAX_STATS_SCAN`], after the lapses due (see
/// [`visit_queued`]).
pub fn queued_items(
    store: &SledStore,
    tenant: &Tenant,
    env: EnvironmentId,
    now: Timestamp,
    lapsed: &mut Lapsed,
) -> Result<Vec<StoredWork>, ApiError> {
    let mut out = Vec::new();
    visit_queued(store, tenant, env, now, MAX_STATS_SCAN, lapsed, |_, item| {
        out.push(item);
        Ok(Visit::Next)
    })?;
    Ok(out)
}

/// Whether [`visit_queued`] goes on.
enum Visit {
    Next,
    Stop,
}

/// Calls `visit` with each queued item of an environment, oldest first,
/// until it says stop; at most `limit` items. Items being served have no
/// queue marker, so however many there are, they cost nothing here. First,
/// markers of the old layout are converted and the lapses due are applied
/// (both bounded), so an item whose lease lapsed is back in the queue, at its
/// old place, before the queue is read.
fn visit_queued(
    store: &SledStore,
    tenant: &Tenant,
    env: EnvironmentId,
    now: Timestamp,
    limit: usize,
    lapsed: &mut Lapsed,
    mut visit: impl FnMut(Vec<u8>, StoredWork) -> Result<Visit, ApiError>,
) -> Result<(), ApiError> {
    apply_lapses(store, tenant, env, now, lapsed)?;
    let prefix = queued_key(tenant, env, None);
    let mut after: Option<Vec<u8>> = None;
    let mut n_seen = 0;
    while n_seen < limit {
        let markers = store.scan_resources(
            ResourceKind::WorkItem,
            &prefix,
            after.as_deref(),
            Direction::Forward,
            MARKER_BATCH.min(limit - n_seen),
        )?;
        let exhausted = markers.len() < MARKER_BATCH.min(limit - n_seen);
        for (key, _) in markers {
            n_seen += 1;
            after = Some(key.clone());
            let Some(raw) = key.get(prefix.len()..).and_then(|rest| <[u8; 16]>::try_from(rest).ok()) else { continue };
            let work = WorkId::from_bytes(raw);
            if let Some((bytes, item)) = look_at_marked(store, tenant, env, &key, work, now, lapsed)? {
                match visit(bytes, item)? {
                    Visit::Next => {}
                    Visit::Stop => return Ok(()),
                }
            }
        }
        if exhausted {
            break;
        }
    }
    Ok(())
}

/// Brings an environment's queue up to `now`: converts markers of the old
/// layout, then applies the lapses due (see [`apply_due_lapses`]). Every
/// read of the queue starts here.
pub fn apply_lapses(
    store: &SledStore,
    tenant: &Tenant,
    env: EnvironmentId,
    now: Timestamp,
    lapsed: &mut Lapsed,
) -> Result<(), ApiError> {
    convert_old_markers(store, tenant, env)?;
    apply_due_lapses(store, tenant, env, now, lapsed)
}

/// Looks for lapses at the lease markers due by `now` (at most
/// [`MAX_POLL_SCAN`]): a lapsed lease sends its item back to the queue (or
/// ends a stopping one, noted in `lapsed`); a lease renewed since moves its
/// marker to its new expiry. Markers are in due order, so this reads only
/// the due ones.
fn apply_due_lapses(
    store: &SledStore,
    tenant: &Tenant,
    env: EnvironmentId,
    now: Timestamp,
    lapsed: &mut Lapsed,
) -> Result<(), ApiError> {
    let prefix = env_key(tenant, LEASE_TAG, env, None);
    let mut after: Option<Vec<u8>> = None;
    let mut n_seen = 0;
    while n_seen < MAX_POLL_SCAN {
        let markers = store.scan_resources(
            ResourceKind::WorkItem,
            &prefix,
            after.as_deref(),
            Direction::Forward,
            MARKER_BATCH,
        )?;
        let exhausted = markers.len() < MARKER_BATCH;
        for (key, _) in markers {
            n_seen += 1;
            after = Some(key.clone());
            let Some(rest) = key.get(prefix.len()..) else { continue };
            let (Some(due), Some(raw)) = (
                rest.get(..8).and_then(|due| <[u8; 8]>::try_from(due).ok()),
                rest.get(8..).and_then(|work| <[u8; 16]>::try_from(work).ok()),
            ) else {
                continue;
            };
            if i64::try_from(u64::from_be_bytes(due)).unwrap_or(i64::MAX) > now.unix_micros() {
                return Ok(());
            }
            let work = WorkId::from_bytes(raw);
            let Some((bytes, item)) = look_at_marked(store, tenant, env, &key, work, now, lapsed)? else { continue };
            // Not lapsed: the lease was renewed past the look. Look again at its expiry.
            if let Some(lease) = item.lease {
                let mut next = item.clone();
                next.lapse_check_at = Some(lease.expires_at);
                // A change meanwhile leaves this marker due: the next request looks again.
                commit(store, tenant, &bytes, &item, &next)?;
            }
        }
        if exhausted {
            break;
        }
    }
    Ok(())
}

/// The item a marker names, with time applied (and persisted), if the marker
/// is the item's: `None` for a marker a crash or a lost race left behind
/// (the item is missing or in another state), which is deleted, and the
/// item's own marker written in case the same crash lost it.
fn look_at_marked(
    store: &SledStore,
    tenant: &Tenant,
    env: EnvironmentId,
    key: &[u8],
    work: WorkId,
    now: Timestamp,
    lapsed: &mut Lapsed,
) -> Result<Option<(Vec<u8>, StoredWork)>, ApiError> {
    let Some((bytes, item)) = settle_stored(store, tenant, env, work, now, lapsed)? else {
        unmark(store, key)?;
        return Ok(None);
    };
    if marker(tenant, &item).as_deref() == Some(key) {
        return Ok(Some((bytes, item)));
    }
    mark(store, tenant, &item)?;
    unmark(store, key)?;
    // A writer may have moved the item back to this marker between the look
    // and the delete (it writes the marker after the item): look once more.
    if let Some((_, again)) = load(store, tenant, env, work)?
        && marker(tenant, &again).as_deref() == Some(key)
    {
        mark(store, tenant, &again)?;
    }
    Ok(None)
}

/// Converts an environment's markers of the old layout (one `'l'` marker per
/// unstopped item) into the markers of their items' states, at most
/// [`MAX_POLL_SCAN`] per call; once none is left this is one empty scan.
fn convert_old_markers(store: &SledStore, tenant: &Tenant, env: EnvironmentId) -> Result<(), ApiError> {
    let prefix = env_key(tenant, OLD_LIVE_TAG, env, None);
    let mut n_seen = 0;
    while n_seen < MAX_POLL_SCAN {
        let markers = store.scan_resources(ResourceKind::WorkItem, &prefix, None, Direction::Forward, MARKER_BATCH)?;
        let exhausted = markers.len() < MARKER_BATCH;
        for (key, _) in markers {
            n_seen += 1;
            let raw = key.get(prefix.len()..).and_then(|rest| <[u8; 16]>::try_from(rest).ok());
            if let Some(raw) = raw
                && let Some((_, item)) = load(store, tenant, env, WorkId::from_bytes(raw))?
            {
                mark(store, tenant, &item)?;
            }
            unmark(store, &key)?;
        }
        if exhausted {
            break;
        }
    }
    Ok(())
}

/// A claimed item and the plaintext of its sessions token (session items only).
#[derive(Debug)]
pub struct Claimed {
    pub item: StoredWork,
    pub token: Option<String>,
}

/// Claims the oldest claimable item of an environment, minting its sessions
/// token; `None` when there is nothing to claim.
pub fn claim_next(
    store: &SledStore,
    tenant: &Tenant,
    env: EnvironmentId,
    now: Timestamp,
    reclaim_ms: u64,
    lapsed: &mut Lapsed,
) -> Result<Option<Claimed>, ApiError> {
    let mut claimed = None;
    visit_queued(store, tenant, env, now, MAX_POLL_SCAN, lapsed, |bytes, item| {
        if !item.claimable(now, reclaim_ms) {
            return Ok(Visit::Next);
        }
        let mut next = item.clone();
        let n = next.n_claims + 1;
        let token = match item.data {
            WorkData::Session { id } => {
                let scope = KeyScope::WorkSession { environment_id: env, work_id: item.id, session_id: id, claim: n };
                Some(tenancy::mint_scoped(store, tenant.workspace, tenancy::SESSIONS_TOKEN_PREFIX, scope, now)?)
            }
            WorkData::Healthcheck {} => None,
        };
        next.take(now, token.as_ref().map(|(_, hash)| hex(hash)));
        match commit(store, tenant, &bytes, &item, &next)? {
            Some(_) => {
                claimed = Some(Claimed { item: next, token: token.map(|(plain, _)| plain) });
                Ok(Visit::Stop)
            }
            None => {
                // Another poll took it first: its token will never be used.
                if let Some((_, hash)) = token {
                    tenancy::delete_key_hash(store, &hash)?;
                }
                Ok(Visit::Next)
            }
        }
    })?;
    Ok(claimed)
}

/// The session's latest work item, if any, with time applied (not persisted).
pub fn session_item(
    store: &SledStore,
    tenant: &Tenant,
    session: SessionId,
    now: Timestamp,
) -> Result<Option<StoredWork>, ApiError> {
    let Some((_, mut item)) = latest_of_session(store, tenant, session)? else { return Ok(None) };
    item.settle(now);
    Ok(Some(item))
}

/// The session's latest work item as stored, if any (a pointer to nothing,
/// left by a crash, means none).
fn latest_of_session(
    store: &SledStore,
    tenant: &Tenant,
    session: SessionId,
) -> Result<Option<(SessionWork, StoredWork)>, ApiError> {
    let Some(bytes) = store.get_resource(ResourceKind::WorkItem, &session_key(tenant, session))? else {
        return Ok(None);
    };
    let pointer: SessionWork = from_bytes(&bytes)?;
    Ok(load(store, tenant, pointer.environment_id, pointer.work_id)?.map(|(_, item)| (pointer, item)))
}

/// Stops the session's latest item at once if it is live (the session was
/// deleted or archived: no worker is to be given it, and `stats` must not
/// count it); a worker holding it hears so on its next heartbeat. Returns the
/// item if this stopped it.
pub fn stop_session_item(
    store: &SledStore,
    tenant: &Tenant,
    session: SessionId,
    now: Timestamp,
) -> Result<Option<StoredWork>, ApiError> {
    let Some((pointer, _)) = latest_of_session(store, tenant, session)? else { return Ok(None) };
    // The session is gone: a lapse noted on the way needs no new item.
    let mut lapsed = Lapsed::default();
    let (item, changed) = update(store, tenant, pointer.environment_id, pointer.work_id, now, &mut lapsed, |item| {
        Ok(item.stop(true, StopBy::Operator, now).is_ok())
    })?;
    Ok(changed.then_some(item))
}

/// Makes sure a session has a live work item in `env`'s queue when `need`
/// calls for one; returns the item it enqueued, or `None` if one was live
/// already (or, for [`WorkNeed::WorkerCalls`], its worker failed the last
/// one). Concurrent callers
/// enqueue one item between them: a new item becomes visible to polls (its
/// live marker) only after it won the session pointer; a loser deletes its
/// invisible item. A pointer to a missing item (a crash) counts as none, and
/// a live item whose marker a crash lost gets it back here.
pub fn ensure_session_item(
    store: &SledStore,
    tenant: &Tenant,
    env: EnvironmentId,
    session: SessionId,
    new_id: WorkId,
    now: Timestamp,
    need: WorkNeed,
) -> Result<Option<StoredWork>, ApiError> {
    let key = session_key(tenant, session);
    for _ in 0..MAX_CAS_ATTEMPTS {
        let current = store.get_resource(ResourceKind::WorkItem, &key)?;
        if let Some(bytes) = &current {
            let pointer: SessionWork = from_bytes(bytes)?;
            if let Some((_, mut item)) = load(store, tenant, pointer.environment_id, pointer.work_id)? {
                item.settle(now);
                if item.state != WorkState::Stopped {
                    mark(store, tenant, &item)?;
                    return Ok(None);
                }
                match need {
                    WorkNeed::WorkerCalls { newest_call_at }
                        if item.stopped_by_worker && item.stopped_at.is_some_and(|at| at >= newest_call_at) =>
                    {
                        return Ok(None);
                    }
                    WorkNeed::WorkerCalls { .. } | WorkNeed::Input => {}
                }
            }
        }
        let item = StoredWork::new(new_id, env, WorkData::Session { id: session }, now);
        let item_bytes = to_bytes(&item)?;
        let item_key = item_key(tenant, env, Some(new_id));
        crate::api::put_new(store, ResourceKind::WorkItem, &item_key, &item_bytes)?;
        let pointer = to_bytes(&SessionWork { environment_id: env, work_id: new_id })?;
        if store.swap_resource(ResourceKind::WorkItem, &key, current.as_deref(), Some(&pointer))?.is_err() {
            store.swap_resource(ResourceKind::WorkItem, &item_key, Some(&item_bytes), None)?.ok();
            continue;
        }
        mark(store, tenant, &item)?;
        return Ok(Some(item));
    }
    Err(ApiError::conflict_transient(format!("session {session}'s work item is changing concurrently; retry")))
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
