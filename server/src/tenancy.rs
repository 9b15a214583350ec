//! Workspaces, API keys and the scoped credentials of self-hosted workers.
//!
//! Every object belongs to a workspace; an API key belongs to one workspace and
//! sees only its objects (another workspace's object answers 404, exactly like a
//! missing one). Keys are stored only as their blake3 hash: the plaintext is
//! shown once, when created. Resource keys of every object start with the
//! owning workspace's 16 id bytes, so a scan can never cross tenants.
//!
//! Besides workspace keys there are two narrower credentials, stored the same
//! way and told apart by their record's [`KeyScope`]: an environment key
//! (`logbook keys create --environment ENV_ID`), the standing credential of a
//! self-hosted environment's workers, and a sessions token, minted for one
//! claim of one work item and handed to the worker inside the poll's `secret`.
//! Which routes accept which scope is the route table's business
//! ([`crate::http`]); what a scoped credential may reach there is checked by
//! `api::work::access`.

use logbook_core::{EnvironmentId, SessionId, Timestamp, WorkId, WorkspaceId};
use logbook_store::{ResourceKind, Resources, SledStore};
use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

use crate::api::error::ApiError;

/// The workspace of keys created without `--workspace`.
pub const DEFAULT_WORKSPACE: &str = "default";

/// Every API key starts with this.
pub const KEY_PREFIX: &str = "sk-logbook-";

/// Longest key accepted on the wire; anything longer is rejected unhashed.
pub const MAX_KEY_CHARS: usize = 200;

/// Environment keys start with this (it extends [`KEY_PREFIX`], so every
/// credential passes the same cheap prefix check before hashing).
pub const ENVIRONMENT_KEY_PREFIX: &str = "sk-logbook-env-";

/// Sessions tokens (one per claim of a work item) start with this.
pub const SESSIONS_TOKEN_PREFIX: &str = "sk-logbook-wst-";

/// Random bytes in a generated key or token: 192 bits, beyond guessing.
const SECRET_BYTES: usize = 24;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Workspace {
    pub id: WorkspaceId,
    pub name: String,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyRecord {
    pub workspace_id: WorkspaceId,
    /// The key's first characters, to recognise it in listings.
    pub hint: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    /// What the key may reach; records written before scopes existed are
    /// workspace keys.
    #[serde(default)]
    pub scope: KeyScope,
}

/// What a credential may reach inside its workspace.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum KeyScope {
    /// An API key: every object of the workspace, on the routes that take API keys.
    #[default]
    Workspace,
    /// An environment key: one self-hosted environment's work queue and the
    /// sessions running in that environment.
    Environment { environment_id: EnvironmentId },
    /// A sessions token: one work item (its heartbeat and stop) and its
    /// session, for as long as the claim it was minted for holds the lease.
    WorkSession { environment_id: EnvironmentId, work_id: WorkId, session_id: SessionId, claim: u64 },
}

/// Who is calling: the workspace a valid key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tenant {
    pub workspace: WorkspaceId,
}

/// A valid credential: its workspace and its scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub workspace: WorkspaceId,
    pub scope: KeyScope,
}

impl Principal {
    pub fn tenant(&self) -> Tenant {
        Tenant { workspace: self.workspace }
    }
}

impl Tenant {
    /// The resource key of an object of this tenant.
    pub fn key(&self, object: [u8; 16]) -> Vec<u8> {
        let mut key = self.workspace.to_bytes().to_vec();
        key.extend_from_slice(&object);
        key
    }

    pub fn prefix(&self) -> Vec<u8> {
        self.workspace.to_bytes().to_vec()
    }
}

/// Whether `presented` has the shape of a key this server makes (its
/// prefix, at most [`MAX_KEY_CHARS`]): anything else is refused before it is
/// hashed or looked up.
pub fn could_be_key(presented: &str) -> bool {
    presented.len() <= MAX_KEY_CHARS && presented.starts_with(KEY_PREFIX)
}

/// The hash a credential is stored under.
pub fn key_hash(key: &str) -> [u8; 32] {
    *blake3::hash(key.as_bytes()).as_bytes()
}

/// Finds the workspace of a presented credential of any scope. The route
/// table decides which scopes a route takes; use [`authenticate_principal`]
/// where the scope matters.
pub fn authenticate(store: &SledStore, presented: &str) -> Result<Tenant, ApiError> {
    authenticate_principal(store, presented).map(|principal| principal.tenant())
}

/// Finds the workspace and scope of a presented credential. Revocation is read
/// from the store on every call.
pub fn authenticate_principal(store: &SledStore, presented: &str) -> Result<Principal, ApiError> {
    let invalid = || ApiError::unauthenticated("invalid API key");
    if !could_be_key(presented) {
        return Err(invalid());
    }
    let Some(bytes) = store.get_resource(ResourceKind::ApiKey, &key_hash(presented))? else {
        return Err(invalid());
    };
    let record: KeyRecord = serde_json::from_slice(&bytes).map_err(ApiError::internal)?;
    if record.revoked_at.is_some() {
        return Err(ApiError::unauthenticated("this API key was revoked"));
    }
    Ok(Principal { workspace: record.workspace_id, scope: record.scope })
}

/// How long an authenticated API key is remembered. Keys are created and
/// revoked only offline (`logbook keys`, with the server stopped), so this
/// bounds staleness for any future online change rather than being needed now.
pub const KEY_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(10);
/// Most keys remembered at once (the cache is emptied when it fills).
pub const MAX_CACHED_KEYS: usize = 10_000;

/// Recently authenticated workspace API keys, by hash, so that most requests
/// authenticate without a store lookup (which runs off the async threads).
/// Environment keys and sessions tokens are never cached: their checks read
/// the store per request.
#[derive(Debug, Default)]
pub struct KeyCache {
    entries: std::sync::Mutex<std::collections::HashMap<[u8; 32], (Principal, std::time::Instant)>>,
}

impl KeyCache {
    /// The principal of a key authenticated less than [`KEY_CACHE_TTL`] ago.
    pub fn get(&self, hash: &[u8; 32], now: std::time::Instant) -> Option<Principal> {
        let entries = self.entries.lock().ok()?;
        let (principal, at) = entries.get(hash)?;
        (now.saturating_duration_since(*at) < KEY_CACHE_TTL).then_some(*principal)
    }

    /// Remembers a workspace key just authenticated (other scopes are ignored).
    pub fn insert(&self, hash: [u8; 32], principal: Principal, now: std::time::Instant) {
        if principal.scope != KeyScope::Workspace {
            return;
        }
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MAX_CACHED_KEYS {
                entries.clear();
            }
            entries.insert(hash, (principal, now));
        }
    }
}

/// Finds or creates the workspace called `name`.
pub fn ensure_workspace(store: &SledStore, name: &str, now: Timestamp) -> Result<Workspace, ApiError> {
    if name.is_empty() || name.len() > 64 {
        return Err(ApiError::invalid("workspace names are 1 to 64 bytes"));
    }
    loop {
        if let Some(bytes) = store.get_resource(ResourceKind::Workspace, name.as_bytes())? {
            return serde_json::from_slice(&bytes).map_err(ApiError::internal);
        }
        let ms = u64::try_from(now.unix_ms()).unwrap_or(0);
        let workspace = Workspace {
            id: WorkspaceId::from_parts(ms, rand::rng().random::<u128>()),
            name: name.to_owned(),
            created_at: now,
        };
        let bytes = serde_json::to_vec(&workspace).map_err(ApiError::internal)?;
        if store.swap_resource(ResourceKind::Workspace, name.as_bytes(), None, Some(&bytes))?.is_ok() {
            return Ok(workspace);
        }
    }
}

/// Creates a key in `workspace` and returns its plaintext (shown only now).
pub fn create_key(store: &SledStore, workspace: &Workspace, now: Timestamp) -> Result<String, ApiError> {
    let key = generate(KEY_PREFIX);
    store_key(store, workspace, &key, now)?;
    Ok(key)
}

/// Creates an environment key: the credential of one self-hosted
/// environment's workers. Returns its plaintext (shown only now).
pub fn create_environment_key(
    store: &SledStore,
    workspace: WorkspaceId,
    environment_id: EnvironmentId,
    now: Timestamp,
) -> Result<String, ApiError> {
    let key = generate(ENVIRONMENT_KEY_PREFIX);
    store_scoped(store, workspace, &key, KeyScope::Environment { environment_id }, now)?;
    Ok(key)
}

/// Mints a credential of `scope` (a sessions token) with `prefix`; returns the
/// plaintext and the hash it is stored under.
pub fn mint_scoped(
    store: &SledStore,
    workspace: WorkspaceId,
    prefix: &str,
    scope: KeyScope,
    now: Timestamp,
) -> Result<(String, [u8; 32]), ApiError> {
    let key = generate(prefix);
    store_scoped(store, workspace, &key, scope, now)?;
    let hash = key_hash(&key);
    Ok((key, hash))
}

/// Deletes a credential by its hash (a sessions token whose claim is over).
pub fn delete_key_hash(store: &SledStore, hash: &[u8; 32]) -> Result<(), ApiError> {
    loop {
        let Some(old) = store.get_resource(ResourceKind::ApiKey, hash)? else { return Ok(()) };
        if store.swap_resource(ResourceKind::ApiKey, hash, Some(&old), None)?.is_ok() {
            return Ok(());
        }
    }
}

fn generate(prefix: &str) -> String {
    let mut secret = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut secret);
    format!("{prefix}{}", hex(&secret))
}

fn store_scoped(
    store: &SledStore,
    workspace: WorkspaceId,
    key: &str,
    scope: KeyScope,
    now: Timestamp,
) -> Result<(), ApiError> {
    let record = KeyRecord {
        workspace_id: workspace,
        hint: key.chars().take(KEY_PREFIX.len() + 10).collect(),
        created_at: now,
        revoked_at: None,
        scope,
    };
    let bytes = serde_json::to_vec(&record).map_err(ApiError::internal)?;
    match store.swap_resource(ResourceKind::ApiKey, &key_hash(key), None, Some(&bytes))? {
        Ok(()) => Ok(()),
        Err(_) => Err(ApiError::conflict("that key already exists")),
    }
}

/// Stores a key chosen by the operator (`LOGBOOK_BOOTSTRAP_KEY`).
pub fn store_key(store: &SledStore, workspace: &Workspace, key: &str, now: Timestamp) -> Result<(), ApiError> {
    // Visible ASCII only: clients' headers are trimmed before lookup, so a key
    // stored with a newline from a secret file could never authenticate.
    if !key.starts_with(KEY_PREFIX)
        || key.len() < KEY_PREFIX.len() + 16
        || key.len() > MAX_KEY_CHARS
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::invalid(format!(
            "API keys must start with {KEY_PREFIX} followed by 16 to {} visible ASCII characters \
             (no spaces or line breaks)",
            MAX_KEY_CHARS - KEY_PREFIX.len()
        )));
    }
    let record = KeyRecord {
        workspace_id: workspace.id,
        // Four characters: an operator's key may have as few as 16 secret ones.
        hint: key.chars().take(KEY_PREFIX.len() + 4).collect(),
        created_at: now,
        revoked_at: None,
        scope: KeyScope::Workspace,
    };
    let bytes = serde_json::to_vec(&record).map_err(ApiError::internal)?;
    match store.swap_resource(ResourceKind::ApiKey, &key_hash(key), None, Some(&bytes))? {
        Ok(()) => Ok(()),
        Err(_) => Err(ApiError::conflict("that API key already exists")),
    }
}

/// Revokes a key. Returns whether it existed and was live.
pub fn revoke_key(store: &SledStore, key: &str, now: Timestamp) -> Result<bool, ApiError> {
    revoke_hash(store, &key_hash(key), now)
}

/// Revokes the key stored under `hash`. Returns whether it existed and was live.
///
/// Revoking an environment key also revokes every sessions token of its
/// environment. A token does not record which key minted it, so a token from
/// a leaked key could otherwise heartbeat its lease for ever; workers holding
/// a token of a key that is still live get 401 and poll again.
fn revoke_hash(store: &SledStore, hash: &[u8], now: Timestamp) -> Result<bool, ApiError> {
    let Some(record) = revoke_one(store, hash, now)? else { return Ok(false) };
    match record.scope {
        KeyScope::Environment { environment_id } => {
            let mut tokens = Vec::new();
            crate::api::scan_all(store, ResourceKind::ApiKey, b"", |hash, bytes| {
                let record: KeyRecord = serde_json::from_slice(bytes).map_err(ApiError::internal)?;
                match record.scope {
                    KeyScope::WorkSession { environment_id: env, .. }
                        if env == environment_id && record.revoked_at.is_none() =>
                    {
                        tokens.push(hash.to_vec());
                    }
                    KeyScope::Workspace | KeyScope::Environment { .. } | KeyScope::WorkSession { .. } => {}
                }
                Ok(std::ops::ControlFlow::Continue(()))
            })?;
            for token in tokens {
                revoke_one(store, &token, now)?;
            }
        }
        KeyScope::Workspace | KeyScope::WorkSession { .. } => {}
    }
    Ok(true)
}

/// Marks the credential under `hash` revoked; returns its record if it was
/// live.
fn revoke_one(store: &SledStore, hash: &[u8], now: Timestamp) -> Result<Option<KeyRecord>, ApiError> {
    loop {
        let Some(old) = store.get_resource(ResourceKind::ApiKey, hash)? else { return Ok(None) };
        let mut record: KeyRecord = serde_json::from_slice(&old).map_err(ApiError::internal)?;
        if record.revoked_at.is_some() {
            return Ok(None);
        }
        record.revoked_at = Some(now);
        let new = serde_json::to_vec(&record).map_err(ApiError::internal)?;
        if store.swap_resource(ResourceKind::ApiKey, hash, Some(&old), Some(&new))?.is_ok() {
            return Ok(Some(record));
        }
    }
}

/// What revoking by hint found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HintRevoke {
    /// The one live key with that hint is revoked now.
    Revoked,
    /// No live key has that hint.
    NoMatch,
    /// Several live keys share it: nothing was revoked.
    Ambiguous(usize),
}

/// Revokes the one live key whose hint (the first characters `keys list`
/// shows) is `hint`, for an operator who no longer has the key itself.
pub fn revoke_by_hint(store: &SledStore, hint: &str, now: Timestamp) -> Result<HintRevoke, ApiError> {
    let hint = hint.trim().trim_end_matches("...");
    let live: Vec<Vec<u8>> = listed_keys(store)?
        .into_iter()
        .filter(|(_, record)| record.revoked_at.is_none() && record.hint == hint)
        .map(|(hash, _)| hash)
        .collect();
    match live.as_slice() {
        [] => Ok(HintRevoke::NoMatch),
        // Revoked in between by someone else: no live key had it after all.
        [hash] => Ok(if revoke_hash(store, hash, now)? { HintRevoke::Revoked } else { HintRevoke::NoMatch }),
        several => Ok(HintRevoke::Ambiguous(several.len())),
    }
}

/// Every key record of API keys and environment keys (hashes are not shown;
/// sessions tokens, which live only as long as a lease, are left out).
pub fn list_keys(store: &SledStore) -> Result<Vec<KeyRecord>, ApiError> {
    Ok(listed_keys(store)?.into_iter().map(|(_, record)| record).collect())
}

/// The records `list_keys` shows, each with the hash it is stored under
/// (all of them, however many).
fn listed_keys(store: &SledStore) -> Result<Vec<(Vec<u8>, KeyRecord)>, ApiError> {
    let mut out = Vec::new();
    crate::api::scan_all(store, ResourceKind::ApiKey, b"", |hash, bytes| {
        let record: KeyRecord = serde_json::from_slice(bytes).map_err(ApiError::internal)?;
        match record.scope {
            KeyScope::Workspace | KeyScope::Environment { .. } => out.push((hash.to_vec(), record)),
            KeyScope::WorkSession { .. } => {}
        }
        Ok(std::ops::ControlFlow::Continue(()))
    })?;
    Ok(out)
}

/// Workspaces read per scan when looking one up by id (there are a few).
const WORKSPACE_SCAN_BATCH: usize = 1000;

/// The workspace with this id, if any.
pub fn workspace_by_id(store: &SledStore, id: WorkspaceId) -> Result<Option<Workspace>, ApiError> {
    let mut after: Option<Vec<u8>> = None;
    loop {
        let pairs = store.scan_resources(
            ResourceKind::Workspace,
            b"",
            after.as_deref(),
            logbook_store::Direction::Forward,
            WORKSPACE_SCAN_BATCH,
        )?;
        let Some((last, _)) = pairs.last() else { return Ok(None) };
        after = Some(last.clone());
        for (_, bytes) in pairs {
            let workspace: Workspace = serde_json::from_slice(&bytes).map_err(ApiError::internal)?;
            if workspace.id == id {
                return Ok(Some(workspace));
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn the_key_cache_keeps_workspace_keys_for_a_while_and_nothing_else() {
        let cache = KeyCache::default();
        let workspace = WorkspaceId::from_parts(1_700_000_000_000, 7);
        let key = Principal { workspace, scope: KeyScope::Workspace };
        let env_key = Principal {
            workspace,
            scope: KeyScope::Environment { environment_id: EnvironmentId::from_parts(1_700_000_000_000, 9) },
        };
        let t0 = Instant::now();
        cache.insert([1; 32], key, t0);
        cache.insert([2; 32], env_key, t0);
        assert_eq!(cache.get(&[1; 32], t0 + Duration::from_secs(1)), Some(key));
        assert_eq!(cache.get(&[2; 32], t0), None, "environment keys are checked against the store every time");
        assert_eq!(cache.get(&[3; 32], t0), None);
        assert_eq!(cache.get(&[1; 32], t0 + KEY_CACHE_TTL), None, "an entry expires");
        for n in 0..MAX_CACHED_KEYS as u32 + 1 {
            let mut hash = [0u8; 32];
            hash[..4].copy_from_slice(&n.to_be_bytes());
            cache.insert(hash, key, t0);
        }
        assert!(cache.entries.lock().unwrap().len() <= MAX_CACHED_KEYS, "bounded");
    }

    fn fixed_now() -> Timestamp {
        Timestamp::from_unix_micros(1_764_000_000_000_000)
    }

    /// An operator revokes a leaked environment key (offline, as documented) and
    /// restarts the server. The sessions token a worker minted with that key
    /// before (the poll's `secret`) still authenticates and still passes the
    /// guard of the heartbeat route, which renews the lease: the worker keeps its
    /// session for as long as it heartbeats. Nothing lists or revokes sessions
    /// tokens (`keys list` leaves them out), so the operator has no way to cut it
    /// off.
    #[test]
    fn revoking_an_environment_key_cuts_off_the_sessions_tokens_minted_under_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("data"), &logbook_store::SledOptions::default()).unwrap();
        let workspace = ensure_workspace(&store, "default", fixed_now()).unwrap();
        let env = EnvironmentId::from_parts(1_764_000_000_000, 1);
        let work = WorkId::from_parts(1_764_000_000_000, 2);
        let env_key = create_environment_key(&store, workspace.id, env, fixed_now()).unwrap();
        let scope = KeyScope::WorkSession {
            environment_id: env,
            work_id: work,
            session_id: SessionId::from_parts(1_764_000_000_000, 3),
            claim: 1,
        };
        let (token, _) = mint_scoped(&store, workspace.id, SESSIONS_TOKEN_PREFIX, scope, fixed_now()).unwrap();
        assert!(revoke_key(&store, &env_key, fixed_now()).unwrap());
        assert!(authenticate_principal(&store, &env_key).is_err(), "the environment key is revoked");

        let params = crate::api::work::access::PathParams(vec![
            ("environment_id".to_owned(), env.to_string()),
            ("work_id".to_owned(), work.to_string()),
        ]);
        let heartbeat_admitted = authenticate_principal(&store, &token)
            .and_then(|principal| {
                crate::api::work::access::check(
                    &store,
                    &principal,
                    crate::api::work::Access::WORKER,
                    &params,
                    fixed_now(),
                )
            })
            .is_ok();
        assert!(!heartbeat_admitted, "a sessions token of a revoked environment key is still admitted");
    }

    /// `keys list` shows a key's hint. An operator's key may have as few as
    /// 16 secret characters, so the hint shows four of them, not ten.
    #[test]
    fn a_keys_hint_shows_four_secret_characters() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("data"), &logbook_store::SledOptions::default()).unwrap();
        let workspace = ensure_workspace(&store, "default", fixed_now()).unwrap();
        store_key(&store, &workspace, "sk-logbook-0123456789abcdef", fixed_now()).unwrap();
        let generated = create_key(&store, &workspace, fixed_now()).unwrap();
        let mut hints: Vec<String> = list_keys(&store).unwrap().into_iter().map(|record| record.hint).collect();
        hints.sort();
        let mut expected = vec!["sk-logbook-0123".to_owned(), generated[..KEY_PREFIX.len() + 4].to_owned()];
        expected.sort();
        assert_eq!(hints, expected);
    }

    /// `LOGBOOK_BOOTSTRAP_KEY` read from a secret file often ends in a newline.
    /// `store_key` accepts it verbatim and stores the hash of the key *with* the
    /// newline, but the guard trims what clients present (`x-api-key`,
    /// `Authorization: Bearer`), and `keys revoke` trims too: the first key can
    /// never authenticate nor be revoked by value, and since a key now exists the
    /// next `serve` does not seed another one.
    #[test]
    fn a_bootstrap_key_with_a_trailing_newline_is_refused_or_usable() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("data"), &logbook_store::SledOptions::default()).unwrap();
        let workspace = ensure_workspace(&store, "default", fixed_now()).unwrap();
        let key = "sk-logbook-0123456789abcdef0123";
        match store_key(&store, &workspace, &format!("{key}\n"), fixed_now()) {
            Err(_) => {} // refused: the operator is told at startup
            Ok(()) => assert!(
                authenticate_principal(&store, key).is_ok(),
                "stored a key no client can present (the guard trims the header)"
            ),
        }
    }
}
