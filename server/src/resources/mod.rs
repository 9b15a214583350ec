//! Session resources on the host: mounting Files API files into a session's
//! uploads directory, capturing what the agent leaves in its outputs
//! directory as session-scoped files, and cloning repositories into its
//! workspace.
//!
//! The API modules (`api::files`, `api::resources`) validate requests and
//! record what happened in the session's log; this module does the work on
//! disk, always through kernel-confined operations ([`confine`]). Files go to
//! the directories `sandbox::layout::SessionPaths` names, owned by the sandbox
//! user. Contents live in the store as content-addressed blobs ([`content`]).
//! Repository tokens live only in memory ([`secrets`]).
//!
//! Two hooks tie this to the runner: [`before_turn`] clones the repositories
//! not yet cloned when a turn starts (so before the agent's first model
//! call), and [`after_idle`] captures outputs shortly after the session goes
//! idle.

pub mod confine;
pub mod content;
pub mod git;
pub mod locks;
pub mod mount;
pub mod outputs;
pub mod secrets;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use logbook_core::SessionId;

use crate::sandbox::disk::DiskLimit;
use crate::sandbox::layout::SessionPaths;
use crate::state::AppState;
use crate::tenancy::Tenant;

use self::confine::{ConfineError, Root};

/// Locks striped over sessions for the API's changes to a session's
/// resources (add, update, delete), which are short and local (no network,
/// see [`Host::lock`]). The hooks' slow work (clones, captures) uses a lock
/// of its own per session instead ([`Host::lock_task`]).
const N_LOCK_STRIPES: usize = 64;

/// The data directory's subdirectory holding the per-server clone cache.
pub const GIT_CACHE_SUBDIR: &str = "git-cache";
/// The git cache's mode: the server's user only.
const GIT_CACHE_MODE: u32 = 0o700;

/// What the server needs to put resources on disk.
#[derive(Debug)]
pub struct Host {
    data: PathBuf,
    git: git::GitSettings,
    /// A session's disk limit (the sandbox's): it also bounds what cloning
    /// one repository writes, into the cache and into the workspace.
    disk_limit: DiskLimit,
    vault: secrets::Vault,
    locks: Vec<Mutex<()>>,
    /// The hooks' work (clones, captures) of one session runs one at a time;
    /// one lock per session, so no other session ever waits for it.
    tasks: locks::KeyedLocks<SessionId>,
    /// Fetches into one cached repository run one at a time; one lock per
    /// URL, so a clone never waits for another repository's.
    repo_locks: locks::KeyedLocks<String>,
}

impl Host {
    /// Resources of sessions whose directories are under `data` (the server's
    /// data directory), each session's disk use bounded by `disk_limit`.
    pub fn new(data: &Path, git: git::GitSettings, disk_limit: DiskLimit) -> Host {
        Host {
            data: data.to_owned(),
            git,
            disk_limit,
            vault: secrets::Vault::default(),
            locks: (0..N_LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            tasks: locks::KeyedLocks::default(),
            repo_locks: locks::KeyedLocks::default(),
        }
    }

    pub fn paths(&self, session: SessionId) -> SessionPaths {
        SessionPaths::new(&self.data, session)
    }

    pub fn git(&self) -> &git::GitSettings {
        &self.git
    }

    /// What one session's workspace and outputs may hold.
    pub fn disk_limit(&self) -> DiskLimit {
        self.disk_limit
    }

    pub fn vault(&self) -> &secrets::Vault {
        &self.vault
    }

    /// The per-server cache of repositories cloned so far.
    pub fn git_cache(&self) -> PathBuf {
        self.data.join(GIT_CACHE_SUBDIR)
    }

    /// Creates the git cache mode 0700 (it holds private repositories), or
    /// restricts an existing one to it.
    pub fn private_git_cache(&self) -> std::io::Result<PathBuf> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let dir = self.git_cache();
        match std::fs::DirBuilder::new().mode(GIT_CACHE_MODE).create(&dir) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(err),
        }
        let meta = std::fs::symlink_metadata(&dir)?;
        if !meta.is_dir() {
            return Err(std::io::Error::other(format!("{} is not a directory", dir.display())));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(GIT_CACHE_MODE))?;
        }
        Ok(dir)
    }

    /// Creates the session's directories (workspace, uploads, outputs) if
    /// missing, owned by the sandbox user, inside the private session
    /// directory `SessionPaths::create` makes (0700).
    pub fn prepare(&self, session: SessionId) -> Result<(), ConfineError> {
        let paths = self.paths(session);
        paths.create().map_err(|source| ConfineError::Io { path: paths.root().display().to_string(), source })?;
        Root::open(&paths.workspace())?;
        Root::open(&paths.uploads())?;
        Root::open(&paths.outputs())?;
        Ok(())
    }

    /// The session's uploads directory.
    pub fn uploads(&self, session: SessionId) -> Result<Root, ConfineError> {
        Root::open(&self.paths(session).uploads())
    }

    /// Serializes blocking changes to one session's resources. Striped: hold
    /// it only for local work, never across network I/O or a wait for
    /// [`Host::lock_task`].
    pub fn lock(&self, session: SessionId) -> MutexGuard<'_, ()> {
        let stripe = &self.locks[stripe(session)];
        stripe.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Serializes the async work of the hooks (clones, captures) per session.
    /// It may be held across git's network I/O (minutes): only the same
    /// session's turns and captures wait for it.
    pub async fn lock_task(&self, session: SessionId) -> locks::KeyedGuard<'_, SessionId> {
        self.tasks.lock(session).await
    }

    /// Serializes fetches into one cached repository (the same URL). Held
    /// across git's network I/O: only clones of the same URL wait for it.
    pub(crate) async fn lock_repo(&self, url: &str) -> locks::KeyedGuard<'_, String> {
        self.repo_locks.lock(url.to_owned()).await
    }
}

fn stripe(session: SessionId) -> usize {
    let bytes = session.to_bytes();
    // The id's random tail spreads sessions over the stripes.
    usize::from(bytes[15]) % N_LOCK_STRIPES
}

/// The runner's hook at the start of a turn: clones the session's
/// repositories that are not cloned yet (once per token). Failures are
/// recorded as `repository_*_error` session errors; the turn goes on.
pub async fn before_turn(state: &AppState, tenant: Tenant, session: SessionId) {
    git::clone_pending(state, tenant, session).await;
}

/// The runner's hook after it appended `session.status_idle`: captures the
/// outputs directory in the background, so the idle is not delayed.
pub fn after_idle(state: &AppState, tenant: Tenant, session: SessionId) {
    if state.resources_host().is_none() {
        return;
    }
    let state = state.clone();
    tokio::spawn(async move {
        if let Err(err) = outputs::capture(&state, tenant, session).await {
            tracing::warn!(%session, error = %err, "capturing the session's outputs failed");
        }
    });
}
