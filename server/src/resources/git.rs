//! Repository resources: validating their URLs, and cloning them into the
//! workspace before the agent starts.
//!
//! Any `https://` git URL is accepted, not only `https://github.com/...` (an
//! extension for self-hosted forges; the resource type keeps its API name
//! `github_repository`). Because the server itself connects, the host's
//! addresses are resolved first and must all be public (`net::addr`), unless
//! the host is on the operator's allowlist of private forges
//! (`LOGBOOK_GIT_PRIVATE_HOSTS`); git is then pinned to exactly the checked
//! addresses (`http.curloptResolve`) and does not follow redirects, so DNS
//! rebinding or a redirect cannot move it elsewhere.
//!
//! `git` runs as a child process with a cleared environment: no system or
//! global configuration, no credential helpers, no prompts, only https. It
//! never discovers a repository: every command runs in a directory the server
//! created (the cache, or a staging directory), with `GIT_CEILING_DIRECTORIES`
//! naming that directory's parent, so a `.git` another local user planted in
//! `/tmp` or above the data directory is never read (its `core.askPass` or
//! `url.*.insteadOf` would run as root or redirect the token). Every
//! repository git touches is the server's own, so git's ownership check
//! (`safe.directory`) stays on. The
//! token goes in an `Authorization` header set through `GIT_CONFIG_*`
//! environment variables, never on a command line, never in a config file,
//! never in an event or a log line.
//!
//! Every clone first fetches into a per-server cache (one bare repository per
//! URL under `<data>/git-cache`), authenticating against the remote each time
//! (a cached repository is never handed to a session whose token does not
//! work); a later session's fetch transfers only what changed. The checkout
//! is cloned from the cache into a staging directory outside the sandbox's
//! view (copying objects, never hard-linking them, so a session cannot alter
//! the cache), given to the sandbox user, and moved into the workspace.
//! Fetches into one cached repository run one at a time under that URL's own
//! lock (`Host::lock_repo`), and a session's clones under its own task lock
//! (`Host::lock_task`), so a host that never answers stalls only the clones
//! of its URL and the turns of the sessions naming it.
//!
//! Every git command that writes is bounded by the session's disk limit (the
//! sandbox's `DiskLimit`, bytes and entries), not only by time: the fetch by
//! what the cached repository then holds, the clone and checkout by what the
//! staging directory holds plus what the workspace and outputs already hold.
//! While git runs, those directories are measured every
//! `GIT_DISK_CHECK_INTERVAL` (`sandbox::disk::measure`), and once more
//! when it ends; past the limit, git's process group (git and its helpers)
//! is killed, as on a timeout, and the clone fails as a
//! `repository_clone_error` saying the repository is larger than the limit.
//! A cached repository whose fetch went past it is removed, so the cache
//! keeps no partial pack, and no repository a session may not clone; the
//! staging directory is always removed. A huge repository, or a host
//! streaming an endless pack, costs the host at most the limit plus one
//! interval's writing.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use logbook_core::event::{
    AttachedResource, Event, RepositoryCheckout, ResourceChange, RetryStatus, SessionError, SessionErrorDetail,
    SessionResource,
};
use logbook_core::{SessionId, SessionResourceId};

use super::Host;
use super::confine::{Root, own_tree};
use super::mount::MountPath;
use super::secrets::Secret;
use crate::net::addr::is_public;
use crate::sandbox::disk::{self, DiskLimit, Usage};
use crate::state::AppState;
use crate::tenancy::Tenant;

/// How long one git command may take before it is killed. Generous: a first
/// clone of a large repository over a slow link takes minutes.
pub const GIT_TIMEOUT: Duration = Duration::from_secs(600);
/// A transfer from the remote slower than [`GIT_LOW_SPEED_BYTES`] per second
/// for [`GIT_LOW_SPEED_TIME`] fails (git's `http.lowSpeedLimit` and
/// `http.lowSpeedTime`): a host that answers and then stalls costs two
/// minutes, not [`GIT_TIMEOUT`]. One byte a second: a forge still preparing
/// a large pack sends only keep-alive packets (5 bytes every 5 s), and must
/// not be cut off. (It does not cover the TLS handshake: a host that accepts
/// and never answers is cut off by curl's connect timeout or
/// [`GIT_TIMEOUT`].)
const GIT_LOW_SPEED_BYTES: u32 = 1;
/// See [`GIT_LOW_SPEED_BYTES`].
const GIT_LOW_SPEED_TIME: Duration = Duration::from_secs(120);
/// How often the directories a git command writes into are measured while
/// it runs (or twenty times as long as the last walk took, if longer; see
/// `sandbox::disk`). Between two measurements git can write past the disk
/// limit: the overshoot is what it writes in one interval.
const GIT_DISK_CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// Bytes in the megabyte of `LOGBOOK_SANDBOX_DISK_MB` (10^6), for messages.
const BYTES_PER_MB: u64 = 1_000_000;
/// Longest repository URL accepted.
pub const MAX_URL_BYTES: usize = 2048;
/// Most bytes of git's error output kept for a message.
const MAX_MESSAGE_BYTES: usize = 300;
/// Most of git's standard output kept (the start of it): what is parsed
/// (`ls-remote`, `rev-parse`) is a few lines.
const MAX_GIT_STDOUT_BYTES: usize = 1 << 20;
/// Most of git's standard error kept (the end of it, where its `fatal:`
/// line is): a hostile host can stream `remote:` messages for as long as a
/// command may run, which must not grow the server's memory.
const MAX_GIT_STDERR_BYTES: usize = 64 * 1024;
/// The user name sent with a token (GitHub's convention for tokens; other
/// forges accept any user name with a personal access token).
const TOKEN_USER: &str = "x-access-token";

/// How the server runs git.
#[derive(Debug, Clone)]
pub struct GitSettings {
    /// The git executable.
    pub program: PathBuf,
    /// Hosts (names or IP literals, as written in URLs) that may resolve to
    /// private addresses: the operator's own forges.
    pub private_hosts: Vec<String>,
    /// A PEM bundle git trusts instead of the system's (a private forge's
    /// CA; git's `http.sslCAInfo` replaces the default bundle).
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
}

impl Default for GitSettings {
    fn default() -> Self {
        GitSettings { program: PathBuf::from("git"), private_hosts: Vec::new(), ca_file: None, timeout: GIT_TIMEOUT }
    }
}

impl GitSettings {
    /// Settings from the server's options: `program` (default `git` on the
    /// `PATH`), a comma-separated host allowlist, an optional CA file.
    pub fn new(program: Option<PathBuf>, private_hosts: &str, ca_file: Option<PathBuf>) -> GitSettings {
        GitSettings {
            program: program.unwrap_or_else(|| find_on_path("git").unwrap_or_else(|| PathBuf::from("git"))),
            private_hosts: private_hosts
                .split(',')
                .map(|h| h.trim().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
            ca_file,
            timeout: GIT_TIMEOUT,
        }
    }
}

/// The executable `name` on the server's `PATH` (git runs with a cleared
/// environment, so it is found once, here).
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

/// A repository URL that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoUrl {
    url: reqwest::Url,
    /// The last path segment without `.git`: the default directory name.
    name: String,
}

/// Why a repository URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("must be at most {MAX_URL_BYTES} bytes")]
    TooLong,
    #[error("is not a URL: {0}")]
    Unparsable(String),
    #[error("must be an https:// URL, got {0}://")]
    NotHttps(String),
    #[error("must not contain credentials; send the token as authorization_token")]
    Credentials,
    #[error("must not have a query or a fragment")]
    QueryOrFragment,
    #[error("must name a repository (a path such as /owner/repo)")]
    NoRepository,
}

impl RepoUrl {
    pub fn parse(raw: &str) -> Result<RepoUrl, UrlError> {
        if raw.len() > MAX_URL_BYTES {
            return Err(UrlError::TooLong);
        }
        let url = reqwest::Url::parse(raw).map_err(|err| UrlError::Unparsable(err.to_string()))?;
        if url.scheme() != "https" {
            return Err(UrlError::NotHttps(url.scheme().to_owned()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::Credentials);
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(UrlError::QueryOrFragment);
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(UrlError::Unparsable("no host".to_owned()));
        }
        let last = url.path_segments().and_then(|mut segments| segments.rfind(|s| !s.is_empty())).unwrap_or("");
        let name = last.strip_suffix(".git").unwrap_or(last);
        let valid = !name.is_empty()
            && !name.starts_with(['.', '-'])
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !valid {
            return Err(UrlError::NoRepository);
        }
        let name = name.to_owned();
        Ok(RepoUrl { url, name })
    }

    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn host(&self) -> String {
        self.url.host_str().unwrap_or("").trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase()
    }

    fn port(&self) -> u16 {
        self.url.port_or_known_default().unwrap_or(443)
    }
}

/// Checks a branch name or commit given as `checkout`.
pub fn check_checkout(checkout: &RepositoryCheckout) -> Result<(), String> {
    match checkout {
        RepositoryCheckout::Branch { name } => {
            let bad = name.is_empty()
                || name.len() > 255
                || name.starts_with(['-', '/', '.'])
                || name.ends_with(['/', '.'])
                || name.ends_with(".lock")
                || name.contains("..")
                || name.contains("//")
                || name.contains("@{")
                || name.chars().any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c));
            if bad { Err(format!("checkout.name: {name:?} is not a valid branch name")) } else { Ok(()) }
        }
        RepositoryCheckout::Commit { sha } => {
            let ok = (sha.len() == 40 || sha.len() == 64) && sha.bytes().all(|b| b.is_ascii_hexdigit());
            if ok { Ok(()) } else { Err(format!("checkout.sha: {sha:?} must be a full commit SHA (40 hex digits)")) }
        }
    }
}

/// Why a clone failed; each is one of the API's `repository_*_error`s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloneError {
    #[error("authentication failed: {0}")]
    Authentication(String),
    #[error("access was denied: {0}")]
    Forbidden(String),
    #[error("the repository was not found: {0}")]
    NotFound(String),
    #[error("the checkout failed: {0}")]
    Checkout(String),
    #[error("{0}")]
    Clone(String),
    /// What git wrote went past the session's disk limit (with `held`, what
    /// the session's workspace and outputs already held), so it was stopped.
    #[error("{}", too_large_message(limit, held))]
    TooLarge { limit: DiskLimit, held: Usage },
}

/// The message of [`CloneError::TooLarge`].
fn too_large_message(limit: &DiskLimit, held: &Usage) -> String {
    let size = if limit.bytes.is_multiple_of(BYTES_PER_MB) {
        format!("{} MB", limit.bytes / BYTES_PER_MB)
    } else {
        format!("{} bytes", limit.bytes)
    };
    let limit_text = format!("the session's disk limit of {size} and {} files and directories", limit.entries);
    if held.bytes == 0 && held.entries == 0 && held.cut.is_none() {
        format!("the repository is larger than {limit_text}")
    } else {
        format!(
            "the repository is larger than the room left under {limit_text} \
             (the workspace and outputs already hold {} bytes in {} files and directories)",
            held.bytes, held.entries
        )
    }
}

impl CloneError {
    /// The `session.error` detail for this failure (always `retrying`: the
    /// session continues without the repository).
    pub fn detail(&self, url: &str) -> SessionErrorDetail {
        let message = format!("cloning {url} failed: {self}");
        let retry_status = RetryStatus::Retrying;
        let repository_url = Some(url.to_owned());
        match self {
            CloneError::Authentication(_) => {
                SessionErrorDetail::RepositoryAuthenticationError { message, retry_status, repository_url }
            }
            CloneError::Forbidden(_) => {
                SessionErrorDetail::RepositoryForbiddenError { message, retry_status, repository_url }
            }
            CloneError::NotFound(_) => {
                SessionErrorDetail::RepositoryNotFoundError { message, retry_status, repository_url }
            }
            CloneError::Checkout(_) => {
                SessionErrorDetail::RepositoryCheckoutError { message, retry_status, repository_url }
            }
            CloneError::Clone(_) | CloneError::TooLarge { .. } => {
                SessionErrorDetail::RepositoryCloneError { message, retry_status, repository_url }
            }
        }
    }

    /// Whether git was stopped for writing past the disk limit.
    fn is_too_large(&self) -> bool {
        match self {
            CloneError::TooLarge { .. } => true,
            CloneError::Authentication(_)
            | CloneError::Forbidden(_)
            | CloneError::NotFound(_)
            | CloneError::Checkout(_)
            | CloneError::Clone(_) => false,
        }
    }
}

/// Clones every repository of the session that is attached, not cloned yet,
/// and not yet attempted with its current token; records each outcome.
///
/// The session's task lock is taken only when there is something to clone
/// (most turns take none), and it is the session's own: a clone that hangs
/// holds up this session's turns and captures, nobody else's.
pub async fn clone_pending(state: &AppState, tenant: Tenant, session: SessionId) {
    let Some(host) = state.resources_host().cloned() else { return };
    let Some(pending) = pending_clones(state, &host, tenant, session).await else { return };
    if pending.is_empty() {
        return;
    }
    let _guard = host.lock_task(session).await;
    // Read again under the lock: a turn that held it may have cloned them,
    // or the session may be gone.
    let Some(pending) = pending_clones(state, &host, tenant, session).await else { return };
    for resource in pending {
        let AttachedResource::GithubRepository { url, mount_path, checkout } = &resource.resource else { continue };
        let Some(token) = host.vault().begin_attempt(session, resource.id) else { continue };
        let outcome = clone_one(&host, session, resource.id, url, mount_path, checkout.as_ref(), token.as_ref()).await;
        let event = match outcome {
            Ok(commit) => {
                tracing::info!(%session, url = %url, %commit, "repository cloned");
                Event::SessionResource(SessionResource {
                    resource_id: resource.id,
                    change: ResourceChange::RepositoryCloned { commit },
                })
            }
            Err(err) => {
                tracing::warn!(%session, url = %url, error = %err, "repository clone failed; the session continues without it");
                Event::SessionError(SessionError { error: err.detail(url) })
            }
        };
        let worker = state.clone();
        let res =
            state.blocking(move |store| crate::api::events::append_system(&worker, store, session, vec![event])).await;
        if let Err(err) = res {
            tracing::warn!(%session, error = %err, "cannot record a repository's clone");
        }
    }
}

/// The session's repositories still to clone: attached, not cloned, not
/// attempted with their current token. `None` when they cannot be read (the
/// session is gone, or the store failed).
async fn pending_clones(
    state: &AppState,
    host: &Host,
    tenant: Tenant,
    session: SessionId,
) -> Option<Vec<logbook_replay::resources::Resource>> {
    let read = move |store: &logbook_store::SledStore| {
        // A deleted session (its object is gone) clones nothing.
        crate::api::sessions::load(store, &tenant, session)?;
        crate::api::resources::attached(store, session)
    };
    let attached = match state.blocking(read).await {
        Ok(resources) => resources,
        Err(err) => {
            tracing::warn!(%session, error = %err, "cannot read the session's resources");
            return None;
        }
    };
    let pending = attached
        .into_iter()
        .filter(|resource| match &resource.resource {
            AttachedResource::GithubRepository { .. } => {
                resource.cloned_commit.is_none() && host.vault().awaits_attempt(session, resource.id)
            }
            AttachedResource::File { .. } => false,
        })
        .collect();
    Some(pending)
}

/// Clones one repository into the session's workspace; its commit.
///
/// Every git command that writes is bounded by the session's disk limit
/// ([`WriteBound`]): the fetch into the cache by what the cached repository
/// holds, the clone and checkout into the staging directory by what it holds
/// together with the workspace and outputs. A command that goes past it is
/// killed; a cached repository it was fetching into is removed (a partial
/// pack, or a repository no session may clone, is not kept).
async fn clone_one(
    host: &Host,
    session: SessionId,
    resource: SessionResourceId,
    url: &str,
    mount_path: &str,
    checkout: Option<&RepositoryCheckout>,
    token: Option<&Secret>,
) -> Result<String, CloneError> {
    let repo = RepoUrl::parse(url).map_err(|err| CloneError::Clone(format!("the URL {err}")))?;
    let mount = MountPath::from_absolute(mount_path)
        .ok_or_else(|| CloneError::Checkout(format!("{mount_path} is not a workspace path")))?;
    let settings = host.git();
    let pin = check_addresses(settings, &repo).await?;
    let run = Git { settings, repo: &repo, pin: &pin, token };
    let limit = host.disk_limit();
    // Private: it holds every private repository cloned so far.
    let cache_root = host.private_git_cache().map_err(|err| CloneError::Clone(format!("creating the cache: {err}")))?;
    let cache = cache_root.join(format!("{}.git", &blake3::hash(repo.as_str().as_bytes()).to_hex()[..32]));
    let commit = {
        let _cache_guard = host.lock_repo(repo.as_str()).await;
        let bound = WriteBound { dirs: vec![cache.clone()], held: Usage::default(), limit };
        let fetched = fetch_into_cache(&run, &cache, checkout, &bound).await;
        if fetched.as_ref().is_err_and(CloneError::is_too_large) {
            // Still under the URL's lock: nobody else fetches into it now.
            if let Err(err) = std::fs::remove_dir_all(&cache) {
                tracing::warn!(url = %repo.as_str(), error = %err, "cannot remove an oversized cached repository");
            }
        }
        fetched?
    };
    let paths = host.paths(session);
    // The staging directory is root's, 0700, inside the private session
    // directory: nobody else sees the checkout before it is moved in.
    paths.create().map_err(|err| CloneError::Clone(format!("creating the session's directories: {err}")))?;
    let staging = paths.root().join(format!(".clone-{resource}"));
    let _ = std::fs::remove_dir_all(&staging);
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&staging)
        .map_err(|err| CloneError::Clone(format!("creating the staging directory: {err}")))?;
    // The checkout will join what the workspace and outputs hold, under the
    // same limit.
    let (held, _) = disk::measure(vec![paths.workspace(), paths.outputs()], None, limit.entries).await;
    let bound = WriteBound { dirs: vec![staging.clone()], held, limit };
    let res = stage_and_move(&run, &cache, &staging, &paths.workspace(), &mount, &commit, &bound).await;
    let _ = std::fs::remove_dir_all(&staging);
    res.map(|()| checkout_commit(&commit))
}

/// Fetches the remote's branches and tags into the cached repository `cache`
/// (creating it), and the commit `checkout` names if no branch or tag holds
/// it; what to check out, resolved to a commit. Called under the URL's lock.
async fn fetch_into_cache(
    run: &Git<'_>,
    cache: &Path,
    checkout: Option<&RepositoryCheckout>,
    bound: &WriteBound,
) -> Result<Checkout, CloneError> {
    if !cache.join("HEAD").is_file() {
        std::fs::create_dir_all(cache).map_err(|err| CloneError::Clone(format!("creating the cache: {err}")))?;
        run.local(cache, &["init", "--bare", "--quiet"], None).await?;
    }
    // `ls-remote` needs no repository; it runs in the cache's own directory,
    // which the server made.
    let default_branch = run.default_branch(cache).await?;
    let repo = run.repo.as_str();
    run.remote(
        cache,
        &[
            "fetch",
            "--quiet",
            "--prune",
            "--no-write-fetch-head",
            repo,
            "+refs/heads/*:refs/heads/*",
            "+refs/tags/*:refs/tags/*",
        ],
        Some(bound),
    )
    .await?;
    match checkout {
        Some(RepositoryCheckout::Branch { name }) => {
            let spec = format!("refs/heads/{name}^{{commit}}");
            let commit = run.local(cache, &["rev-parse", "--verify", "--quiet", &spec], None).await;
            let commit = commit.map_err(|_| CloneError::Checkout(format!("the branch {name:?} does not exist")))?;
            Ok(Checkout::Branch { name: name.clone(), commit: commit.trim().to_owned() })
        }
        Some(RepositoryCheckout::Commit { sha }) => {
            let probe = format!("{sha}^{{commit}}");
            if run.local(cache, &["cat-file", "-e", &probe], None).await.is_err() {
                // Not on any branch or tag: ask for the commit itself (a
                // remote that refuses is told by the check below).
                let fetched =
                    run.remote(cache, &["fetch", "--quiet", "--no-write-fetch-head", repo, sha], Some(bound)).await;
                if let Err(err) = fetched.as_ref()
                    && err.is_too_large()
                {
                    return Err(err.clone());
                }
            }
            let commit = run.local(cache, &["rev-parse", "--verify", "--quiet", &probe], None).await;
            let commit = commit.map_err(|_| CloneError::Checkout(format!("the commit {sha} does not exist")))?;
            Ok(Checkout::Detached { commit: commit.trim().to_owned() })
        }
        None => {
            let name = default_branch.ok_or_else(|| {
                CloneError::Checkout("the repository has no default branch (is it empty?)".to_owned())
            })?;
            let spec = format!("refs/heads/{name}^{{commit}}");
            let commit = run.local(cache, &["rev-parse", "--verify", "--quiet", &spec], None).await;
            let commit =
                commit.map_err(|_| CloneError::Checkout(format!("the default branch {name:?} has no commit")))?;
            Ok(Checkout::Branch { name, commit: commit.trim().to_owned() })
        }
    }
}

/// What to check out, resolved to a commit.
#[derive(Debug, Clone)]
enum Checkout {
    Branch { name: String, commit: String },
    Detached { commit: String },
}

fn checkout_commit(checkout: &Checkout) -> String {
    match checkout {
        Checkout::Branch { commit, .. } | Checkout::Detached { commit } => commit.clone(),
    }
}

/// Clones the cache into `staging` and checks `checkout` out, each bounded
/// by `bound`, then gives the clone to the sandbox user and moves it into
/// the workspace at `mount`.
async fn stage_and_move(
    run: &Git<'_>,
    cache: &Path,
    staging: &Path,
    workspace: &Path,
    mount: &MountPath,
    checkout: &Checkout,
    bound: &WriteBound,
) -> Result<(), CloneError> {
    let target = staging.join("repo");
    let cache_text = cache.to_string_lossy().into_owned();
    let target_text = target.to_string_lossy().into_owned();
    let clone = ["clone", "--quiet", "--no-hardlinks", "--no-checkout", cache_text.as_str(), target_text.as_str()];
    run.local(staging, &clone, Some(bound)).await?;
    let checked_out = match checkout {
        Checkout::Branch { name, .. } => {
            let remote_branch = format!("refs/remotes/origin/{name}");
            run.local(&target, &["checkout", "--quiet", "-B", name, &remote_branch], Some(bound)).await
        }
        Checkout::Detached { commit } => {
            run.local(&target, &["checkout", "--quiet", "--detach", commit], Some(bound)).await
        }
    };
    checked_out.map_err(|err| if err.is_too_large() { err } else { CloneError::Checkout(err.to_string()) })?;
    // The workspace's repository names the real remote, never the cache.
    run.local(&target, &["remote", "set-url", "origin", run.repo.as_str()], None).await?;
    own_tree(&target).map_err(|err| CloneError::Clone(err.to_string()))?;
    let root = Root::open(workspace).map_err(|err| CloneError::Clone(err.to_string()))?;
    root.move_in(staging, "repo", &mount.components()).map_err(|err| match err {
        super::confine::ConfineError::Exists { .. } | super::confine::ConfineError::IsADirectory { .. } => {
            CloneError::Checkout(format!("{} already exists in the workspace", mount.absolute()))
        }
        other @ (super::confine::ConfineError::Symlink { .. }
        | super::confine::ConfineError::Escape { .. }
        | super::confine::ConfineError::NotADirectory { .. }
        | super::confine::ConfineError::Io { .. }) => CloneError::Clone(other.to_string()),
    })
}

/// What a git command that writes may leave in the directories it writes
/// into: with `held`, at most the session's disk limit. Measured while git
/// runs and once it is done (a command that ends between two measurements
/// is measured all the same).
#[derive(Debug, Clone)]
struct WriteBound {
    /// The directories git writes into.
    dirs: Vec<PathBuf>,
    /// What the session holds elsewhere against the same limit.
    held: Usage,
    limit: DiskLimit,
}

impl WriteBound {
    /// Measures the directories: whether they are over the limit (a walk
    /// that cannot see everything is, as in the sandbox's watch), and how
    /// long the walk took.
    async fn measure(&self) -> (bool, Duration) {
        let room = self.limit.entries.saturating_sub(self.held.entries);
        let (usage, took) = disk::measure(self.dirs.clone(), None, room).await;
        // Judged as the sandbox's watch judges, on both together.
        let together = Usage {
            bytes: usage.bytes.saturating_add(self.held.bytes),
            entries: usage.entries.saturating_add(self.held.entries),
            cut: self.held.cut.or(usage.cut),
            ..usage
        };
        (together.over(&self.limit).is_some(), took)
    }

    /// Resolves once the directories are over the limit.
    async fn outgrown(&self) {
        let mut pause = GIT_DISK_CHECK_INTERVAL;
        loop {
            tokio::time::sleep(pause).await;
            let (over, took) = self.measure().await;
            if over {
                return;
            }
            pause = disk::pause_after(GIT_DISK_CHECK_INTERVAL, took);
        }
    }

    fn error(&self) -> CloneError {
        CloneError::TooLarge { limit: self.limit, held: self.held }
    }
}

/// The addresses git may connect to for `repo`: all of the host's addresses,
/// each public unless the host is allowlisted. `None` for an IP literal.
async fn check_addresses(settings: &GitSettings, repo: &RepoUrl) -> Result<Option<Vec<IpAddr>>, CloneError> {
    let host = repo.host();
    let allowed = settings.private_hosts.contains(&host);
    let refuse = |ip: IpAddr| {
        CloneError::Clone(format!(
            "refused to connect: {host} resolves to {ip}, which is not a public address \
             (an operator can allow a private forge with LOGBOOK_GIT_PRIVATE_HOSTS)"
        ))
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        if !allowed && !is_public(ip) {
            return Err(refuse(ip));
        }
        return Ok(None);
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), repo.port()))
        .await
        .map_err(|err| CloneError::Clone(format!("cannot resolve {host}: {err}")))?
        .collect();
    if addrs.is_empty() {
        return Err(CloneError::Clone(format!("{host} has no addresses")));
    }
    let mut ips: Vec<IpAddr> = Vec::new();
    for addr in addrs {
        if !allowed && !is_public(addr.ip()) {
            return Err(refuse(addr.ip()));
        }
        if !ips.contains(&addr.ip()) {
            ips.push(addr.ip());
        }
    }
    Ok(Some(ips))
}

/// One repository's git invocations.
struct Git<'a> {
    settings: &'a GitSettings,
    repo: &'a RepoUrl,
    pin: &'a Option<Vec<IpAddr>>,
    token: Option<&'a Secret>,
}

impl Git<'_> {
    /// The remote's default branch (`None` for an empty repository), asked
    /// from `cwd`, a directory the server owns.
    async fn default_branch(&self, cwd: &Path) -> Result<Option<String>, CloneError> {
        let out = self.remote(cwd, &["ls-remote", "--symref", self.repo.as_str(), "HEAD"], None).await?;
        Ok(out.lines().find_map(|line| {
            let rest = line.strip_prefix("ref: refs/heads/")?;
            rest.split('\t').next().map(str::to_owned)
        }))
    }

    /// A command that talks to the remote: https only, pinned, with the token;
    /// one that writes is bounded by `bound`.
    async fn remote(&self, cwd: &Path, args: &[&str], bound: Option<&WriteBound>) -> Result<String, CloneError> {
        let mut config: Vec<(String, String)> = vec![
            ("protocol.allow".to_owned(), "never".to_owned()),
            ("protocol.https.allow".to_owned(), "always".to_owned()),
            ("http.followRedirects".to_owned(), "false".to_owned()),
            ("http.lowSpeedLimit".to_owned(), GIT_LOW_SPEED_BYTES.to_string()),
            ("http.lowSpeedTime".to_owned(), GIT_LOW_SPEED_TIME.as_secs().to_string()),
        ];
        if let Some(ips) = self.pin {
            let addrs: Vec<String> = ips
                .iter()
                .map(|ip| match ip {
                    IpAddr::V4(v4) => v4.to_string(),
                    IpAddr::V6(v6) => format!("[{v6}]"),
                })
                .collect();
            config.push((
                "http.curloptResolve".to_owned(),
                format!("{}:{}:{}", self.repo.host(), self.repo.port(), addrs.join(",")),
            ));
        }
        if let Some(ca) = &self.settings.ca_file {
            config.push(("http.sslCAInfo".to_owned(), ca.to_string_lossy().into_owned()));
        }
        if let Some(token) = self.token {
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{TOKEN_USER}:{}", token.expose()));
            config.push(("http.extraHeader".to_owned(), format!("Authorization: Basic {basic}")));
        }
        self.run(cwd, args, config, bound).await
    }

    /// A command on local repositories only (the cache, the staging clone);
    /// one that writes is bounded by `bound`.
    async fn local(&self, cwd: &Path, args: &[&str], bound: Option<&WriteBound>) -> Result<String, CloneError> {
        self.run(cwd, args, Vec::new(), bound).await
    }

    /// Runs git in `cwd`, a directory the server created: git looks for a
    /// repository in `cwd` only (`GIT_CEILING_DIRECTORIES` is its parent),
    /// never in the directories above it, which other users may write.
    ///
    /// git runs in a process group of its own: a command that takes longer
    /// than the timeout, or writes past `bound`, is killed with its helpers
    /// (`git-remote-https`, `index-pack`), which would otherwise go on
    /// writing.
    async fn run(
        &self,
        cwd: &Path,
        args: &[&str],
        extra: Vec<(String, String)>,
        bound: Option<&WriteBound>,
    ) -> Result<String, CloneError> {
        let mut config: Vec<(String, String)> = vec![
            ("credential.helper".to_owned(), String::new()),
            ("core.hooksPath".to_owned(), "/dev/null".to_owned()),
            ("core.askPass".to_owned(), String::new()),
            ("advice.detachedHead".to_owned(), "false".to_owned()),
            ("init.defaultBranch".to_owned(), "main".to_owned()),
        ];
        config.extend(extra);
        let ceiling = ceiling_of(cwd)?;
        let mut command = tokio::process::Command::new(&self.settings.program);
        command
            .args(args)
            .current_dir(cwd)
            .env_clear()
            .env("GIT_CEILING_DIRECTORIES", ceiling)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", "/nonexistent")
            .env("LC_ALL", "C")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_COUNT", config.len().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        for (idx, (key, value)) in config.iter().enumerate() {
            command.env(format!("GIT_CONFIG_KEY_{idx}"), key).env(format!("GIT_CONFIG_VALUE_{idx}"), value);
        }
        let what = args.first().copied().unwrap_or("git");
        let mut child = command
            .spawn()
            .map_err(|err| CloneError::Clone(format!("cannot run {}: {err}", self.settings.program.display())))?;
        let group = child.id().and_then(|id| i32::try_from(id).ok()).and_then(rustix::process::Pid::from_raw);
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let waited = async {
            let (stdout, stderr, status) = tokio::join!(
                read_capped(stdout, MAX_GIT_STDOUT_BYTES, Keep::Start),
                read_capped(stderr, MAX_GIT_STDERR_BYTES, Keep::End),
                child.wait()
            );
            status.map(|status| std::process::Output { status, stdout, stderr })
        };
        tokio::pin!(waited);
        let outgrown = async {
            match bound {
                Some(bound) => {
                    bound.outgrown().await;
                    bound.error()
                }
                None => std::future::pending().await,
            }
        };
        // The child is reaped only by `waited` or when dropped at the end,
        // so its process group cannot be another's when it is killed.
        let stopped = tokio::select! {
            done = &mut waited => match done {
                Ok(output) => Ok(output),
                Err(err) => return Err(CloneError::Clone(format!("git {what}: {err}"))),
            },
            () = tokio::time::sleep(self.settings.timeout) => {
                Err(CloneError::Clone(format!("git {what} took longer than {}s", self.settings.timeout.as_secs())))
            }
            err = outgrown => Err(err),
        };
        let output = match stopped {
            Ok(output) => output,
            Err(err) => {
                if let Some(group) = group {
                    let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
                }
                tracing::debug!(command = what, error = %err, "git was stopped");
                return Err(err);
            }
        };
        if output.status.success() {
            // A command that ended between two measurements is measured now.
            if let Some(bound) = bound
                && bound.measure().await.0
            {
                return Err(bound.error());
            }
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        let stderr = self.redact(&String::from_utf8_lossy(&output.stderr));
        tracing::debug!(command = what, %stderr, "git failed");
        Err(classify(what, &stderr))
    }

    /// Removes the token from a text (git never prints it; this is a second
    /// line of defence).
    fn redact(&self, text: &str) -> String {
        match self.token {
            Some(token) if !token.expose().is_empty() => text.replace(token.expose(), "[redacted]"),
            Some(_) | None => text.to_owned(),
        }
    }
}

/// Which part of a long output [`read_capped`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    Start,
    End,
}

/// Reads `pipe` to its end (so the writer never blocks on a full pipe),
/// keeping at most `cap` bytes of it: its start or its end.
async fn read_capped(pipe: Option<impl tokio::io::AsyncRead + Unpin>, cap: usize, keep: Keep) -> Vec<u8> {
    use tokio::io::AsyncReadExt as _;
    let Some(mut pipe) = pipe else { return Vec::new() };
    let mut kept = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let read = chunk.get(..n).unwrap_or_default();
        match keep {
            Keep::Start => {
                kept.extend_from_slice(read.get(..cap.saturating_sub(kept.len()).min(n)).unwrap_or_default())
            }
            Keep::End => {
                kept.extend_from_slice(read);
                // Trimmed in steps, not per read: amortized linear.
                if kept.len() > 2 * cap {
                    kept.drain(..kept.len() - cap);
                }
            }
        }
    }
    if keep == Keep::End && kept.len() > cap {
        kept.drain(..kept.len() - cap);
    }
    kept
}

/// The value of `GIT_CEILING_DIRECTORIES` that confines git's repository
/// discovery to `cwd` itself: `cwd`'s parent, absolute (git ignores relative
/// entries, and it never climbs into a ceiling directory).
fn ceiling_of(cwd: &Path) -> Result<std::ffi::OsString, CloneError> {
    let absolute =
        std::path::absolute(cwd).map_err(|err| CloneError::Clone(format!("resolving {}: {err}", cwd.display())))?;
    let parent = absolute.parent().unwrap_or(Path::new("/"));
    if parent.as_os_str().as_encoded_bytes().contains(&b':') {
        // A colon would split the list: refuse rather than leave git free to
        // climb.
        return Err(CloneError::Clone(format!("the path {} contains ':'", parent.display())));
    }
    Ok(parent.as_os_str().to_owned())
}

/// The error a failed git command means, with its last line of output.
fn classify(what: &str, stderr: &str) -> CloneError {
    // git's own message is the last `fatal:` or `error:` line; hints follow it.
    let lines: Vec<&str> = stderr.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let line = lines
        .iter()
        .rev()
        .find(|l| l.starts_with("fatal:") || l.starts_with("error:"))
        .or(lines.last())
        .copied()
        .unwrap_or("");
    let mut shown: String = line.chars().take(MAX_MESSAGE_BYTES).collect();
    if shown.is_empty() {
        shown = format!("git {what} failed");
    }
    let has = |needle: &str| stderr.contains(needle);
    if has("Authentication failed")
        || has("could not read Username")
        || has("could not read Password")
        || has("error: 401")
        || has("terminal prompts disabled")
    {
        CloneError::Authentication(shown)
    } else if has("error: 403") {
        CloneError::Forbidden(shown)
    } else if has("error: 404") || has("not found") || has("does not appear to be a git repository") {
        CloneError::NotFound(shown)
    } else {
        CloneError::Clone(shown)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

    use super::*;

    #[test]
    fn urls_must_be_plain_https_repositories() {
        let ok = RepoUrl::parse("https://github.com/octo-org/parser").unwrap();
        assert_eq!((ok.as_str(), ok.name()), ("https://github.com/octo-org/parser", "parser"));
        assert_eq!(RepoUrl::parse("https://git.example.com:8443/team/app.git").unwrap().name(), "app");
        assert_eq!(RepoUrl::parse("https://git.example.com/team/app/").unwrap().name(), "app");
        for (raw, err) in [
            ("http://github.com/o/r", UrlError::NotHttps("http".into())),
            ("ssh://git@github.com/o/r", UrlError::NotHttps("ssh".into())),
            ("file:///etc", UrlError::NotHttps("file".into())),
            ("https://ghp_secret@github.com/o/r", UrlError::Credentials),
            ("https://u:p@github.com/o/r", UrlError::Credentials),
            ("https://github.com/o/r?x=1", UrlError::QueryOrFragment),
            ("https://github.com/o/r#main", UrlError::QueryOrFragment),
            ("https://github.com/", UrlError::NoRepository),
            ("https://github.com/o/.git", UrlError::NoRepository),
            ("https://github.com/o/-r", UrlError::NoRepository),
        ] {
            assert_eq!(RepoUrl::parse(raw), Err(err), "{raw}");
        }
        assert!(matches!(RepoUrl::parse("not a url"), Err(UrlError::Unparsable(_))));
        assert_eq!(RepoUrl::parse(&format!("https://h/{}", "a".repeat(2048))), Err(UrlError::TooLong));
    }

    #[test]
    fn checkouts_reject_option_like_and_invalid_refs() {
        let branch = |name: &str| check_checkout(&RepositoryCheckout::Branch { name: name.to_owned() });
        let commit = |sha: &str| check_checkout(&RepositoryCheckout::Commit { sha: sha.to_owned() });
        assert!(branch("main").is_ok() && branch("feature/dates-2").is_ok());
        for bad in ["", "-x", "--upload-pack=evil", "a..b", "a b", "a~1", "x.lock", "/a", "a/", "a@{1}", "a\\b"] {
            assert!(branch(bad).is_err(), "{bad:?}");
        }
        assert!(commit(&"a".repeat(40)).is_ok());
        for bad in ["abc", "--all", &"g".repeat(40)] {
            assert!(commit(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn git_failures_map_to_the_documented_errors() {
        let auth = "fatal: could not read Username for 'https://h': terminal prompts disabled\n";
        assert!(matches!(classify("ls-remote", auth), CloneError::Authentication(_)));
        let forbidden = "fatal: unable to access 'https://h/r/': The requested URL returned error: 403\n";
        assert!(matches!(classify("ls-remote", forbidden), CloneError::Forbidden(_)));
        let missing = "remote: Repository not found.\nfatal: repository 'https://h/r/' not found\n";
        assert!(matches!(classify("ls-remote", missing), CloneError::NotFound(_)));
        let other = "fatal: unable to access 'https://h/r/': Failed to connect\n";
        assert_eq!(
            classify("fetch", other),
            CloneError::Clone("fatal: unable to access 'https://h/r/': Failed to connect".into())
        );
        let detail = CloneError::NotFound("x".into()).detail("https://h/r");
        assert!(matches!(
            detail,
            SessionErrorDetail::RepositoryNotFoundError { retry_status: RetryStatus::Retrying, .. }
        ));
    }

    /// A stand-in for git: the shell script `body`, run by [`Git::run`] in
    /// `<dir>/work` with a bound of 1 MB and 1,000 entries.
    async fn run_fake_git(dir: &Path, body: &str, limit: DiskLimit) -> Result<String, CloneError> {
        use std::os::unix::fs::PermissionsExt as _;
        let program = dir.join("fake-git");
        std::fs::write(&program, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        let work = dir.join("work");
        std::fs::create_dir_all(&work).unwrap();
        // The deadline of the test: a watch that never fires ends in a
        // timeout error, not a hang.
        let settings = GitSettings { program, timeout: Duration::from_secs(120), ..GitSettings::default() };
        let repo = RepoUrl::parse("https://git.example.com/team/app").unwrap();
        let run = Git { settings: &settings, repo: &repo, pin: &None, token: None };
        let bound = WriteBound { dirs: vec![work.clone()], held: Usage::default(), limit };
        run.local(&work, &["fetch"], Some(&bound)).await
    }

    const MB: DiskLimit = DiskLimit { bytes: 1_000_000, entries: 1000 };

    #[tokio::test]
    async fn git_writing_without_end_is_killed_with_its_helpers_at_the_disk_limit() {
        let dir = tempfile::tempdir().unwrap();
        // Like `index-pack` under `fetch`: a child of git's writes.
        let body = "( while :; do head -c 65536 /dev/zero >> \"$PWD/pack\"; done ) &\n\
                    echo $! > \"$PWD/../writer.pid\"\nwait";
        let err = run_fake_git(dir.path(), body, MB).await.unwrap_err();
        assert_eq!(err, CloneError::TooLarge { limit: MB, held: Usage::default() });
        assert_eq!(
            err.to_string(),
            "the repository is larger than the session's disk limit of 1 MB and 1000 files and directories"
        );
        // The writer was in git's process group: it is killed too.
        let pid = std::fs::read_to_string(dir.path().join("writer.pid")).unwrap();
        let stat = format!("/proc/{}/stat", pid.trim());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            // Gone, or a zombie waiting for its new parent to reap it.
            let alive = std::fs::read_to_string(&stat)
                .is_ok_and(|text| text.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')));
            if !alive {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the writer {} still runs", pid.trim());
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn git_that_ends_past_the_disk_limit_between_measurements_fails() {
        let dir = tempfile::tempdir().unwrap();
        let err = run_fake_git(dir.path(), "head -c 2000000 /dev/zero > \"$PWD/pack\"", MB).await.unwrap_err();
        assert!(err.is_too_large(), "{err}");
        let held = Usage { bytes: 8192, entries: 2, ..Usage::default() };
        let message = CloneError::TooLarge { limit: MB, held }.to_string();
        assert!(message.contains("room left under the session's disk limit of 1 MB"), "{message}");
        assert!(message.contains("already hold 8192 bytes"), "{message}");
        assert!(matches!(
            err.detail("https://h/r"),
            SessionErrorDetail::RepositoryCloneError { retry_status: RetryStatus::Retrying, .. }
        ));
    }

    #[tokio::test]
    async fn git_that_says_too_much_is_read_to_its_end_and_kept_bounded() {
        // A host streaming `remote:` lines: stderr is read to its end (git is
        // not blocked) but only its end is kept, where the reason is.
        let dir = tempfile::tempdir().unwrap();
        let body =
            "head -c 8000000 /dev/zero | tr '\\0' 'x' >&2; echo >&2; echo 'fatal: the real reason' >&2; exit 128";
        let err = run_fake_git(dir.path(), body, DiskLimit { bytes: u64::MAX, entries: u64::MAX }).await.unwrap_err();
        assert_eq!(err, CloneError::Clone("fatal: the real reason".into()));
        for (keep, expected) in [(Keep::Start, b"ab".as_slice()), (Keep::End, b"yz".as_slice())] {
            let long = [b"ab".as_slice(), &vec![b'-'; 100_000], b"yz"].concat();
            assert_eq!(read_capped(Some(long.as_slice()), 2, keep).await, expected, "{keep:?}");
        }
    }

    #[tokio::test]
    async fn git_that_stays_under_the_disk_limit_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let out = run_fake_git(dir.path(), "head -c 100000 /dev/zero > \"$PWD/pack\"; echo done", MB).await;
        assert_eq!(out.unwrap(), "done\n");
    }

    #[tokio::test]
    async fn private_addresses_are_refused_unless_allowlisted() {
        let settings = GitSettings::default();
        for url in [
            "https://127.0.0.1/r",
            "https://[::1]/r",
            "https://10.1.2.3/r",
            "https://169.254.169.254/r",
            "https://localhost/r",
        ] {
            let repo = RepoUrl::parse(url).unwrap();
            let err = check_addresses(&settings, &repo).await.unwrap_err();
            assert!(err.to_string().contains("not a public address"), "{url}: {err}");
        }
        let allowed = GitSettings::new(None, "localhost, 127.0.0.1,[::1]", None);
        assert_eq!(allowed.private_hosts, ["localhost", "127.0.0.1", "::1"]);
        assert_eq!(check_addresses(&allowed, &RepoUrl::parse("https://127.0.0.1/r").unwrap()).await, Ok(None));
        let pinned = check_addresses(&allowed, &RepoUrl::parse("https://localhost/r").unwrap()).await.unwrap();
        assert!(pinned.unwrap().iter().all(|ip| ip.is_loopback()));
    }
}
