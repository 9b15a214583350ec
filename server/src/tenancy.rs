//! Workspaces and API keys.
//!
//! Every object belongs to a workspace; an API key belongs to one workspace and
//! sees only its objects (another workspace's object answers 404, exactly like a
//! missing one). Keys are stored only as their blake3 hash: the plaintext is
//! shown once, when created. Resource keys of every object start with the
//! owning workspace's 16 id bytes, so a scan can never cross tenants.

use logbook_core::{Timestamp, WorkspaceId};
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
}

/// Who is calling: the workspace a valid key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tenant {
    pub workspace: WorkspaceId,
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

fn key_hash(key: &str) -> [u8; 32] {
    *blake3::hash(key.as_bytes()).as_bytes()
}

/// Finds the tenant of a presented key.
pub fn authenticate(store: &SledStore, presented: &str) -> Result<Tenant, ApiError> {
    let invalid = || ApiError::unauthenticated("invalid API key");
    if presented.len() > MAX_KEY_CHARS || !presented.starts_with(KEY_PREFIX) {
        return Err(invalid());
    }
    let Some(bytes) = store.get_resource(ResourceKind::ApiKey, &key_hash(presented))? else {
        return Err(invalid());
    };
    let record: KeyRecord = serde_json::from_slice(&bytes).map_err(ApiError::internal)?;
    if record.revoked_at.is_some() {
        return Err(ApiError::unauthenticated("this API key was revoked"));
    }
    Ok(Tenant { workspace: record.workspace_id })
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
    let mut secret = [0u8; 24];
    rand::rng().fill_bytes(&mut secret);
    let key = format!("{KEY_PREFIX}{}", hex(&secret));
    store_key(store, workspace, &key, now)?;
    Ok(key)
}

/// Stores a key chosen by the operator (`LOGBOOK_BOOTSTRAP_KEY`).
pub fn store_key(store: &SledStore, workspace: &Workspace, key: &str, now: Timestamp) -> Result<(), ApiError> {
    if !key.starts_with(KEY_PREFIX) || key.len() < KEY_PREFIX.len() + 16 || key.len() > MAX_KEY_CHARS {
        return Err(ApiError::invalid(format!(
            "API keys must start with {KEY_PREFIX} followed by 16 to {} characters",
            MAX_KEY_CHARS - KEY_PREFIX.len()
        )));
    }
    let record = KeyRecord {
        workspace_id: workspace.id,
        hint: key.chars().take(KEY_PREFIX.len() + 6).collect(),
        created_at: now,
        revoked_at: None,
    };
    let bytes = serde_json::to_vec(&record).map_err(ApiError::internal)?;
    match store.swap_resource(ResourceKind::ApiKey, &key_hash(key), None, Some(&bytes))? {
        Ok(()) => Ok(()),
        Err(_) => Err(ApiError::conflict("that API key already exists")),
    }
}

/// Revokes a key. Returns whether it existed and was live.
pub fn revoke_key(store: &SledStore, key: &str, now: Timestamp) -> Result<bool, ApiError> {
    let hash = key_hash(key);
    loop {
        let Some(old) = store.get_resource(ResourceKind::ApiKey, &hash)? else { return Ok(false) };
        let mut record: KeyRecord = serde_json::from_slice(&old).map_err(ApiError::internal)?;
        if record.revoked_at.is_some() {
            return Ok(false);
        }
        record.revoked_at = Some(now);
        let new = serde_json::to_vec(&record).map_err(ApiError::internal)?;
        if store.swap_resource(ResourceKind::ApiKey, &hash, Some(&old), Some(&new))?.is_ok() {
            return Ok(true);
        }
    }
}

/// Every key record (hashes are not shown).
pub fn list_keys(store: &SledStore) -> Result<Vec<KeyRecord>, ApiError> {
    let pairs = store.scan_resources(ResourceKind::ApiKey, b"", None, logbook_store::Direction::Forward, 10_000)?;
    pairs.iter().map(|(_, bytes)| serde_json::from_slice(bytes).map_err(ApiError::internal)).collect()
}

/// The workspace with this id, if any.
pub fn workspace_by_id(store: &SledStore, id: WorkspaceId) -> Result<Option<Workspace>, ApiError> {
    let pairs = store.scan_resources(ResourceKind::Workspace, b"", None, logbook_store::Direction::Forward, 10_000)?;
    for (_, bytes) in pairs {
        let workspace: Workspace = serde_json::from_slice(&bytes).map_err(ApiError::internal)?;
        if workspace.id == id {
            return Ok(Some(workspace));
        }
    }
    Ok(None)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
