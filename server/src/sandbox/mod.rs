//! The per-session sandbox: a bubblewrap jail as an unprivileged uid with no
//! capabilities, its directories on the host, resource limits, the persistent
//! bash shell, and the egress proxy the sandbox reaches the network through.
//! There is no unsandboxed code path: if a sandbox cannot be made, the tool
//! call fails with an error that says why.
//!
//! [`SandboxTools`] is the runner's tool executor: `bash` runs in the
//! session's jail ([`shell`], started on the first call and kept between
//! calls), the server-side tools (`crate::tools::SERVER_TOOLS`) run through
//! `crate::tools::run` against the session's directories, and after each call
//! [`SandboxTools::workspace_changes`] reports what changed (see
//! `crate::workspace`). A jail is made from the session's environment as it is
//! when the jail starts: its networking gives the egress policy ([`policy`],
//! enforced by [`proxy`]; the jail itself has no network but loopback), its
//! packages the cached layer ([`packages`]). Killing a jail (timeout,
//! `restart`, a cancelled call, session end, shutdown) kills every process in
//! it.

pub mod cgroup;
pub mod disk;
pub mod forward;
pub mod jail;
pub mod layout;
pub mod output;
pub mod packages;
pub mod policy;
pub mod proxy;
pub mod seccomp;
pub mod shell;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use logbook_core::event::WorkspaceChange;
use logbook_core::{Entry, SessionId};
use logbook_store::Blobs;
use serde::Deserialize;

use crate::api::environments::EnvConfig;
use crate::runner::tools::{BoxFuture, ChangesError, ToolCall, ToolExecutor, ToolFuture, ToolOutcome};
use crate::workspace::{Area, Index, ScanRoot, materialize_entries};
use cgroup::{CgroupSupport, SandboxCgroup};
use disk::{DiskLimit, Watch};
use jail::{JailSpec, Mount, System};
use layout::{OUTPUTS_DIR, SANDBOX_UID, SessionPaths, UPLOADS_DIR, WORKSPACE_DIR};
use packages::{InstallContext, PACKAGES_DIR, PackageCache};
use policy::EgressPolicy;
use proxy::{Proxy, Resolve};
use shell::{Completion, Shell};

/// Live jails one server keeps: starting one more first stops the least
/// recently used idle jail (its files stay; its next call starts a new one).
pub const MAX_LIVE_JAILS: usize = 64;
/// The bash tool's timeout when the call gives none.
pub const DEFAULT_BASH_TIMEOUT: Duration = Duration::from_secs(120);
/// The longest `timeout_ms` a call may ask for.
pub const MAX_BASH_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// Where the session's `run` directory (the proxy socket) is bound.
pub const RUN_DIR: &str = "/run/logbook";
/// Where the forwarder binary (the `logbook` executable) is bound.
pub const FORWARDER_PATH: &str = "/opt/logbook/bin/logbook";
/// The jail's command.
pub const SHELL_COMMAND: [&str; 3] = ["/bin/bash", "--noprofile", "--norc"];
/// What `HTTP_PROXY` and friends point at inside a sandbox.
pub const PROXY_URL: &str = "http://127.0.0.1:3128";
/// `PATH` inside a sandbox (package layers go first).
pub const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The system CA bundle; when present, TLS clients are pointed at it.
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The start-up script of every shell: start the forwarder and wait until it
/// listens. It is started through a subshell that exits at once, so it is not
/// a child of the shell (a bare `wait` in a command must not wait for it);
/// its stderr goes nowhere and it does not hold the marker fd.
pub const FORWARDER_INIT: &str = r#"umask 022
exec 8< <( (exec /opt/logbook/bin/logbook sandbox-forward --socket /run/logbook/proxy.sock 2>/dev/null 9>&- &) )
IFS= read -r -t 20 __logbook_ready <&8 || true
exec 8<&-
if [ "${__logbook_ready:-}" != ready ]; then echo "logbook: the sandbox's network forwarder did not start"; (exit 97); else unset __logbook_ready; fi"#;

/// Why a sandbox could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "bubblewrap is not installed at {}: install the Debian package `bubblewrap` (there is no unsandboxed fallback)",
        path.display()
    )]
    NoBubblewrap { path: PathBuf },
    #[error("the server does not run as root, so it cannot start sandboxes as the unprivileged sandbox user")]
    NotRoot,
    #[error("sandboxes are not supported here: {reason}")]
    Unsupported { reason: String },
    #[error("{what}: {source}")]
    Setup {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the server-side tools cannot be set up: {0}")]
    ToolServices(#[from] crate::tools::ServicesError),
    #[error("the sandbox did not start: {detail}")]
    Startup { detail: String },
    #[error("the environment's packages could not be installed: {detail}")]
    Packages { detail: String },
    #[error("the session's environment could not be loaded, so its sandbox settings are unknown")]
    NoEnvironment,
    #[error("built-in tools of a self_hosted environment run on its own workers, not on this server")]
    SelfHosted,
}

/// What the sandboxes of a server need to know.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The data directory (sessions' directories go in `sandboxes/`, package
    /// layers in `packages/`).
    pub data: PathBuf,
    /// The bubblewrap executable.
    pub bwrap: PathBuf,
    /// The `logbook` executable, bound into sandboxes as the forwarder.
    pub forwarder: PathBuf,
    pub resolver: Arc<dyn Resolve>,
    /// Live jails kept at most (default [`MAX_LIVE_JAILS`]).
    pub max_live_jails: usize,
    /// What a session's workspace and outputs may hold (see [`disk`]).
    pub disk_limit: DiskLimit,
    /// What the server-side tools use (web_fetch's client, the search
    /// provider); `None` builds the default one, without a search provider.
    pub tool_services: Option<Arc<crate::tools::ToolServices>>,
}

impl SandboxConfig {
    /// The defaults for a server with data in `data`: `bwrap` from `PATH`
    /// (else `/usr/bin/bwrap`) and this executable as the forwarder.
    pub fn for_data(data: &Path, forwarder: PathBuf) -> SandboxConfig {
        let bwrap = std::env::var_os("PATH")
            .and_then(|path| std::env::split_paths(&path).map(|dir| dir.join("bwrap")).find(|p| p.is_file()))
            .unwrap_or_else(|| PathBuf::from("/usr/bin/bwrap"));
        SandboxConfig {
            data: data.to_owned(),
            bwrap,
            forwarder,
            resolver: Arc::new(proxy::SystemResolver),
            max_live_jails: MAX_LIVE_JAILS,
            disk_limit: DiskLimit::default(),
            tool_services: None,
        }
    }
}

/// The blob store deltas' contents go to.
pub type BlobStore = Arc<dyn Blobs + Send + Sync>;

/// The runner's tool executor with sandboxes.
#[derive(Clone)]
pub struct SandboxTools {
    inner: Arc<Inner>,
}

struct Inner {
    /// The forwarder executable bubblewrap binds: the configured one, or a
    /// copy the sandbox user can reach (see [`reachable_forwarder`]).
    forwarder: PathBuf,
    /// The server-side tools' web client and search provider.
    services: Arc<crate::tools::ToolServices>,
    config: SandboxConfig,
    system: System,
    cgroups: CgroupSupport,
    packages: PackageCache,
    blobs: BlobStore,
    sessions: Mutex<HashMap<SessionId, Arc<SessionSandbox>>>,
    n_jails: AtomicU64,
    /// Counts bash calls; a session's last one orders evictions.
    n_calls: AtomicU64,
    /// Random, so cgroup names never collide with another server's (or another
    /// executor's in the same process) on the same machine.
    instance: u32,
}

impl std::fmt::Debug for SandboxTools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxTools")
            .field("data", &self.inner.config.data)
            .field("bwrap", &self.inner.config.bwrap)
            .field("cgroups", &self.inner.cgroups)
            .finish_non_exhaustive()
    }
}

/// One session's sandbox state.
#[derive(Debug)]
struct SessionSandbox {
    paths: SessionPaths,
    shell: tokio::sync::Mutex<Option<Running>>,
    index: tokio::sync::Mutex<Option<Index>>,
    /// The server's call count at this session's last bash call.
    last_call: AtomicU64,
    /// Why the disk watch stopped the jail between calls, for the next
    /// call's result.
    disk_note: Mutex<Option<String>>,
}

impl SessionSandbox {
    fn set_disk_note(&self, note: String) {
        match self.disk_note.lock() {
            Ok(mut slot) => *slot = Some(note),
            Err(poisoned) => *poisoned.into_inner() = Some(note),
        }
    }

    fn take_disk_note(&self) -> Option<String> {
        match self.disk_note.lock() {
            Ok(mut slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        }
    }
}

/// A live jail with its proxy, cgroup and disk watch; dropping it kills the
/// jail and ends the watch.
#[derive(Debug)]
struct Running {
    shell: Option<Shell>,
    proxy: Option<Proxy>,
    cgroup: Option<SandboxCgroup>,
    disk: Option<DiskWatch>,
    /// Why the jail started over its disk limit, if it did: it then runs
    /// with a file-size limit of 0 (see [`disk`]) until its directories are
    /// back under the limit, when the next call replaces it.
    over_at_start: Option<String>,
}

/// A jail's disk watch and the task measuring for it; dropping it ends the
/// task unless [`DiskWatch::disarm`]ed.
#[derive(Debug)]
struct DiskWatch {
    watch: Arc<Watch>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl DiskWatch {
    /// Lets the task run on when this is dropped (the task itself stopping
    /// the jail must not cancel itself half way).
    fn disarm(mut self) {
        self.task = None;
    }
}

impl Drop for DiskWatch {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Running {
    /// Kills the jail and waits for its cgroup to empty.
    async fn stop(mut self) {
        if let Some(shell) = self.shell.take() {
            shell.kill().await;
        }
        self.proxy = None;
        if let Some(cgroup) = self.cgroup.take() {
            cgroup.destroy().await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(shell) = self.shell.as_mut() {
            shell.kill_now();
        }
        if let Some(cgroup) = self.cgroup.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(cgroup.destroy());
        }
    }
}

/// The bash tool's input.
#[derive(Debug, Deserialize)]
struct BashInput {
    command: Option<String>,
    #[serde(default)]
    restart: bool,
    timeout_ms: Option<u64>,
}

impl SandboxTools {
    /// Prepares the sandboxes of a server (the generated `/etc`, the seccomp
    /// filter, the cgroup base directories). Fails only if the data directory
    /// cannot be written; a missing bubblewrap or a non-root server shows up
    /// when a jail starts (see [`SandboxTools::check`]).
    pub fn new(config: SandboxConfig, blobs: BlobStore) -> Result<SandboxTools, SandboxError> {
        let sandboxes = layout::sandboxes_root(&config.data);
        std::fs::create_dir_all(&sandboxes)
            .map_err(|source| SandboxError::Setup { what: format!("creating {}", sandboxes.display()), source })?;
        std::fs::set_permissions(&sandboxes, std::os::unix::fs::PermissionsExt::from_mode(0o711))
            .map_err(|source| SandboxError::Setup { what: format!("securing {}", sandboxes.display()), source })?;
        let system = System::prepare(config.bwrap.clone(), &sandboxes.join(".system"))?;
        let forwarder = reachable_forwarder(&config.forwarder, &system.dir)?;
        let cgroups = if rustix::process::geteuid().is_root() {
            CgroupSupport::detect()
        } else {
            CgroupSupport::Unavailable { reason: "the server does not run as root".to_owned() }
        };
        let packages = PackageCache::new(&config.data);
        let services = match &config.tool_services {
            Some(services) => Arc::clone(services),
            None => Arc::new(crate::tools::ToolServices::from_search_url(None)?),
        };
        Ok(SandboxTools {
            inner: Arc::new(Inner {
                forwarder,
                services,
                config,
                system,
                cgroups,
                packages,
                blobs,
                sessions: Mutex::new(HashMap::new()),
                n_jails: AtomicU64::new(0),
                n_calls: AtomicU64::new(0),
                instance: rand::random(),
            }),
        })
    }

    /// Problems that will stop every jail from starting, for the startup log.
    pub fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.inner.config.bwrap.exists() {
            problems.push(SandboxError::NoBubblewrap { path: self.inner.config.bwrap.clone() }.to_string());
        }
        if !rustix::process::geteuid().is_root() {
            problems.push(SandboxError::NotRoot.to_string());
        }
        if !self.inner.forwarder.is_file() {
            problems.push(format!("the forwarder {} does not exist", self.inner.forwarder.display()));
        }
        // bubblewrap runs as the sandbox uid and must reach the session
        // directories (and the forwarder) through every directory above them.
        let paths = [layout::sandboxes_root(&self.inner.config.data), self.inner.forwarder.clone()];
        for dir in paths.iter().flat_map(|path| path.ancestors().skip(1)) {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(dir)
                && meta.permissions().mode() & 0o001 == 0
            {
                problems.push(format!(
                    "{} (mode {:o}) cannot be traversed by the sandbox uid {SANDBOX_UID}: chmod o+x it",
                    dir.display(),
                    meta.permissions().mode() & 0o7777
                ));
            }
        }
        problems.dedup();
        problems
    }

    /// The cgroup limits in effect, for the startup log.
    pub fn describe_limits(&self) -> String {
        self.inner.cgroups.describe()
    }

    /// The directories of `session`.
    pub fn paths(&self, session: SessionId) -> SessionPaths {
        SessionPaths::new(&self.inner.config.data, session)
    }

    fn session(&self, session: SessionId) -> Arc<SessionSandbox> {
        let mut sessions = match self.inner.sessions.lock() {
            Ok(sessions) => sessions,
            Err(poisoned) => poisoned.into_inner(),
        };
        Arc::clone(sessions.entry(session).or_insert_with(|| {
            Arc::new(SessionSandbox {
                paths: self.paths(session),
                shell: tokio::sync::Mutex::new(None),
                index: tokio::sync::Mutex::new(None),
                last_call: AtomicU64::new(0),
                disk_note: Mutex::new(None),
            })
        }))
    }

    /// The bash tool.
    pub async fn bash(&self, call: &ToolCall<'_>) -> ToolOutcome {
        let input: BashInput = match serde_json::from_value(call.input.to_value()) {
            Ok(input) => input,
            Err(err) => return ToolOutcome::error(format!("bash: invalid input: {err}")),
        };
        let sandbox = self.session(call.session);
        sandbox.last_call.store(self.inner.n_calls.fetch_add(1, Ordering::SeqCst), Ordering::SeqCst);
        let mut slot = sandbox.shell.lock().await;
        if input.restart {
            if let Some(running) = slot.take() {
                running.stop().await;
            }
            if input.command.is_none() {
                return ToolOutcome::text("bash session restarted");
            }
        }
        let Some(command) = input.command else { return ToolOutcome::error("bash: command is required") };
        if command.contains('\0') {
            return ToolOutcome::error("bash: the command contains a NUL byte");
        }
        let timeout = match input.timeout_ms {
            None | Some(0) => DEFAULT_BASH_TIMEOUT,
            Some(ms) => Duration::from_millis(ms).min(MAX_BASH_TIMEOUT),
        };
        // A jail the disk watch found over its limit while this call waited
        // for the slot is stopped here.
        if let Some(reason) = slot.as_ref().and_then(|running| running.disk.as_ref()).and_then(|d| d.watch.exceeded()) {
            sandbox.set_disk_note(disk_note(&reason));
            if let Some(running) = slot.take() {
                running.stop().await;
            }
        }
        // A jail that started over the limit cannot write: once its
        // directories are back under, it is replaced by one that can.
        if slot.as_ref().is_some_and(|running| running.over_at_start.is_some())
            && self.back_under_the_limit(call.session).await
            && let Some(running) = slot.take()
        {
            running.stop().await;
            sandbox.set_disk_note(BACK_UNDER_NOTE.to_owned());
        }
        let mut notes: Vec<String> = sandbox.take_disk_note().into_iter().collect();
        let alive = slot.as_mut().and_then(|running| running.shell.as_mut()).is_some_and(|shell| !shell.has_exited());
        if !alive {
            if let Some(dead) = slot.take() {
                dead.stop().await;
            }
            self.evict_idle(call.session).await;
            match self.start(call, &sandbox).await {
                Ok(running) => {
                    if let Some(reason) = &running.over_at_start {
                        notes.push(read_only_note(reason));
                    }
                    *slot = Some(running);
                }
                Err(err) => {
                    let outcome = ToolOutcome::error(format!("bash: the sandbox could not be started: {err}"));
                    return with_notes(outcome, &notes);
                }
            }
        }
        let with_note = |outcome: ToolOutcome| with_notes(outcome, &notes);
        // While the command runs the jail is out of the slot: if this call is
        // cancelled, dropping `running` kills it, and the next call starts a
        // fresh one.
        let Some(mut running) = slot.take() else { return ToolOutcome::error("bash: the sandbox is gone") };
        let watch = running.disk.as_ref().map(|disk| Arc::clone(&disk.watch));
        let Some(shell) = running.shell.as_mut() else { return ToolOutcome::error("bash: the sandbox is gone") };
        let went_over = async {
            match &watch {
                Some(watch) => watch.went_over().await,
                None => std::future::pending().await,
            }
        };
        let mut completion = shell.run_until(&command, timeout, went_over).await;
        // A command that ended as its jail went over the limit is reported
        // as stopped: the jail must go either way.
        if let Ok(Completion::Exited { output, truncated, .. }) = &mut completion
            && watch.as_ref().is_some_and(|watch| watch.exceeded().is_some())
        {
            completion = Ok(Completion::Stopped {
                output: std::mem::take(output),
                truncated: std::mem::replace(truncated, false),
            });
        }
        let outcome = match completion {
            Ok(Completion::Exited { status, output, truncated }) => {
                *slot = Some(running);
                let text = output::render(&output, truncated);
                match (status, text.is_empty()) {
                    (0, true) => ToolOutcome::text("(no output)"),
                    (0, false) => ToolOutcome::text(text),
                    (status, true) => ToolOutcome::error(format!("(no output; exit status {status})")),
                    (_, false) => ToolOutcome::error(text),
                }
            }
            Ok(Completion::TimedOut { output, truncated }) => {
                running.stop().await;
                let secs = timeout.as_secs_f64();
                let mut message = if timeout.subsec_millis() == 0 {
                    format!("bash command timed out after {}s", timeout.as_secs())
                } else {
                    format!("bash command timed out after {secs:.3}s")
                };
                message.push_str("; the shell was killed and the next command starts a new one");
                let text = output::render(&output, truncated);
                if !text.is_empty() {
                    message.push_str("\n\nOutput before the timeout:\n");
                    message.push_str(&text);
                }
                ToolOutcome::error(message)
            }
            Ok(Completion::ShellEnded { output, truncated }) => {
                running.stop().await;
                let mut message = "bash: the shell exited; the next command starts a new one".to_owned();
                let text = output::render(&output, truncated);
                if !text.is_empty() {
                    message.push_str("\n\n");
                    message.push_str(&text);
                }
                ToolOutcome::error(message)
            }
            Ok(Completion::Stopped { output, truncated }) => {
                running.stop().await;
                let reason = watch.and_then(|watch| watch.exceeded()).unwrap_or_else(|| "it was stopped".to_owned());
                tracing::warn!(session = %call.session, %reason, "a sandbox went over its disk limit during a command");
                let mut message = format!("bash: the command was stopped: {}", disk_stop_note(&reason));
                let text = output::render(&output, truncated);
                if !text.is_empty() {
                    message.push_str("\n\nOutput before it was stopped:\n");
                    message.push_str(&text);
                }
                ToolOutcome::error(message)
            }
            Err(err) => {
                running.stop().await;
                ToolOutcome::error(format!("bash: lost the shell ({err}); the next command starts a new one"))
            }
        };
        with_note(outcome)
    }

    /// Stops the least recently used idle jails while `max_live_jails` or
    /// more run (a jail busy with a call is never stopped).
    async fn evict_idle(&self, starting: SessionId) {
        let sandboxes: Vec<Arc<SessionSandbox>> = {
            let sessions = match self.inner.sessions.lock() {
                Ok(sessions) => sessions,
                Err(poisoned) => poisoned.into_inner(),
            };
            sessions.iter().filter(|(id, _)| **id != starting).map(|(_, sandbox)| Arc::clone(sandbox)).collect()
        };
        let max_live = self.inner.config.max_live_jails;
        let mut n_live = 0;
        let mut idle = Vec::new();
        for sandbox in sandboxes {
            match sandbox.shell.try_lock() {
                Ok(slot) if slot.is_some() => {
                    n_live += 1;
                    idle.push((sandbox.last_call.load(Ordering::SeqCst), Arc::clone(&sandbox)));
                }
                Ok(_) => {}
                Err(_) => n_live += 1,
            }
        }
        idle.sort_by_key(|(last_call, _)| *last_call);
        for (_, sandbox) in idle {
            if n_live < max_live {
                break;
            }
            let running = sandbox.shell.lock().await.take();
            if let Some(running) = running {
                tracing::info!(session = %sandbox.paths.root().display(), "stopping an idle sandbox (too many live ones)");
                running.stop().await;
                n_live -= 1;
            }
        }
    }

    /// Starts the session's jail from its environment, with its disk watch.
    async fn start(&self, call: &ToolCall<'_>, sandbox: &Arc<SessionSandbox>) -> Result<Running, SandboxError> {
        let paths = &sandbox.paths;
        let environment = call.environment.ok_or(SandboxError::NoEnvironment)?;
        let (networking, packages) = match &environment.config {
            EnvConfig::Cloud { networking, packages } => (networking, packages),
            EnvConfig::SelfHosted {} => return Err(SandboxError::SelfHosted),
        };
        let policy = EgressPolicy::from_networking(networking);
        paths.create().map_err(|source| SandboxError::Setup {
            what: format!("creating the session directories in {}", paths.root().display()),
            source,
        })?;
        let inner = &self.inner;
        let ctx = InstallContext {
            system: &inner.system,
            cgroups: &inner.cgroups,
            forwarder: &inner.forwarder,
            resolver: &inner.config.resolver,
        };
        let layer = inner.packages.ensure(ctx, packages, &policy).await?;
        let proxy = Proxy::start(&paths.run().join("proxy.sock"), policy, Arc::clone(&inner.config.resolver))
            .map_err(|source| SandboxError::Setup { what: "starting the egress proxy".to_owned(), source })?;
        let n = inner.n_jails.fetch_add(1, Ordering::SeqCst);
        let name = format!("{}-{:08x}-{n}", call.session, inner.instance);
        let cgroup = SandboxCgroup::create(&inner.cgroups, &name, SANDBOX_UID)
            .map_err(|source| SandboxError::Setup { what: "creating the sandbox's cgroup".to_owned(), source })?;
        // The baseline: what the directories hold before any command of this
        // jail runs (a jail is stopped only for growing past the limit). A
        // jail that starts over the limit may not write at all: otherwise
        // each call's jail could add another interval's overshoot.
        let roots = vec![paths.workspace(), paths.outputs()];
        let procs = cgroup.as_ref().and_then(|cgroup| cgroup.procs_files().into_iter().next());
        let (baseline, _) = disk::measure(roots.clone(), procs.clone(), inner.config.disk_limit.entries).await;
        log_failed_walk(call.session, &baseline);
        let over_at_start = baseline.over(&inner.config.disk_limit);
        let mut spec = session_spec(paths, layer.as_deref(), &inner.forwarder, cgroup.as_ref());
        if over_at_start.is_some() {
            spec.max_file_bytes = 0;
        }
        let mut running = Running { shell: None, proxy: Some(proxy), cgroup, disk: None, over_at_start };
        running.shell = Some(Shell::start(&inner.system, &spec, FORWARDER_INIT).await?);
        let watch = Arc::new(Watch::new(inner.config.disk_limit));
        watch.observe(baseline);
        let task = tokio::spawn(watch_disk(Arc::downgrade(sandbox), Arc::clone(&watch), roots, procs, call.session));
        running.disk = Some(DiskWatch { watch, task: Some(task) });
        Ok(running)
    }

    /// Whether the session's directories are under its disk limit now (a
    /// fresh measurement; a walk that cannot see everything is over).
    async fn back_under_the_limit(&self, session: SessionId) -> bool {
        let paths = self.paths(session);
        let limit = self.inner.config.disk_limit;
        let (usage, _) = disk::measure(vec![paths.workspace(), paths.outputs()], None, limit.entries).await;
        usage.over(&limit).is_none()
    }

    /// Runs a server-side tool against the session's directories.
    async fn server_tool(&self, call: &ToolCall<'_>) -> ToolOutcome {
        let paths = self.paths(call.session);
        // A self-hosted session's files are on its worker: nothing of it is
        // kept here (its web tools still run here).
        let files_here = match call.environment.map(|environment| &environment.config) {
            Some(crate::api::environments::EnvConfig::SelfHosted {}) => false,
            Some(crate::api::environments::EnvConfig::Cloud { .. }) | None => true,
        };
        if files_here && let Err(err) = paths.create() {
            return ToolOutcome::error(format!("{}: cannot create the session's directories: {err}", call.name));
        }
        let egress = crate::tools::egress_of(call.environment);
        let ctx = crate::tools::ToolContext {
            session: call.session,
            paths: &paths,
            agent_tools: call.agent_tools,
            egress: &egress,
            services: &self.inner.services,
            log: call.log,
            files_here,
            disk_limit: Some(self.inner.config.disk_limit),
        };
        crate::tools::run(&ctx, call.name, call.input).await
    }

    /// What changed in the session's workspace and outputs since the last
    /// call (see `crate::workspace::scan`); the first call after a start
    /// rebuilds the index from the log's deltas.
    pub async fn changes(&self, session: SessionId, log: &[Entry]) -> Result<Vec<WorkspaceChange>, ChangesError> {
        let sandbox = self.session(session);
        let mut guard = sandbox.index.lock().await;
        let index = match guard.take() {
            Some(index) => index,
            None => Index::from_tree(&materialize_entries(log)),
        };
        let paths = sandbox.paths.clone();
        let blobs = Arc::clone(&self.inner.blobs);
        let scanned = tokio::task::spawn_blocking(move || {
            let mut index = index;
            let (workspace, outputs) = (paths.workspace(), paths.outputs());
            let roots = [
                ScanRoot { area: Area::Workspace, host: &workspace },
                ScanRoot { area: Area::Outputs, host: &outputs },
            ];
            let sink = |bytes: &[u8]| blobs.put_blob(bytes).map(|d| *d.as_bytes()).map_err(|err| err.to_string());
            let report = index.scan(&roots, SystemTime::now(), &sink);
            (index, report)
        })
        .await;
        let (index, report) = scanned.map_err(|err| ChangesError(format!("the workspace scan failed: {err}")))?;
        *guard = Some(index);
        let report = report.map_err(|err| ChangesError(err.to_string()))?;
        if !report.skipped.is_empty() {
            tracing::warn!(%session, skipped = ?report.skipped, "workspace paths left out of the recorded delta");
        }
        Ok(report.changes)
    }

    /// Kills the session's jail (its files stay).
    pub async fn end(&self, session: SessionId) {
        let removed = match self.inner.sessions.lock() {
            Ok(mut sessions) => sessions.remove(&session),
            Err(poisoned) => poisoned.into_inner().remove(&session),
        };
        if let Some(sandbox) = removed {
            let running = sandbox.shell.lock().await.take();
            if let Some(running) = running {
                running.stop().await;
            }
        }
    }

    /// Kills every jail.
    pub async fn stop_all(&self) {
        let sessions: Vec<SessionId> = match self.inner.sessions.lock() {
            Ok(sessions) => sessions.keys().copied().collect(),
            Err(poisoned) => poisoned.into_inner().keys().copied().collect(),
        };
        for session in sessions {
            self.end(session).await;
        }
    }

    /// The pid of the session's jail, if one runs (for tests).
    pub async fn jail_pid(&self, session: SessionId) -> Option<u32> {
        let sandbox = self.session(session);
        let slot = sandbox.shell.lock().await;
        slot.as_ref().and_then(|running| running.shell.as_ref()).and_then(Shell::pid)
    }
}

impl ToolExecutor for SandboxTools {
    fn run<'a>(&'a self, call: &'a ToolCall<'a>) -> ToolFuture<'a> {
        Box::pin(async move {
            if call.name == "bash" {
                self.bash(call).await
            } else if crate::tools::SERVER_TOOLS.contains(&call.name) {
                self.server_tool(call).await
            } else {
                ToolOutcome::error(format!("{} is not a built-in tool of this server", call.name))
            }
        })
    }

    fn workspace_changes<'a>(
        &'a self,
        session: SessionId,
        log: &'a [Entry],
    ) -> BoxFuture<'a, Result<Vec<WorkspaceChange>, ChangesError>> {
        Box::pin(self.changes(session, log))
    }

    fn save_large_outputs(&self, session: SessionId, outcome: ToolOutcome) -> BoxFuture<'_, ToolOutcome> {
        Box::pin(async move {
            let paths = self.paths(session);
            if let Err(err) = paths.create() {
                let reason = format!("the session's directories cannot be created: {err}");
                return crate::tools::spill::preview_large_outputs(outcome, &reason);
            }
            let task = tokio::task::spawn_blocking(move || {
                crate::tools::spill::spill_large_outputs(&crate::tools::files::Roots::new(&paths), outcome)
            });
            match task.await {
                Ok(outcome) => outcome,
                Err(err) => ToolOutcome::error(format!("internal error while saving a large output: {err}")),
            }
        })
    }

    fn end_session(&self, session: SessionId) -> BoxFuture<'_, ()> {
        Box::pin(self.end(session))
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.stop_all())
    }
}

/// `outcome` opened by `notes`, in order.
fn with_notes(outcome: ToolOutcome, notes: &[String]) -> ToolOutcome {
    notes.iter().rev().fold(outcome, |outcome, note| outcome.with_preamble(note))
}

/// Said with the first command of a jail that replaced one that started
/// over the disk limit, once the files were deleted.
const BACK_UNDER_NOTE: &str = "Note: the sandbox is back under its disk limit, so this command ran in a new shell \
     that can write files again.";

/// Said with the first command of a jail that starts over its disk limit.
fn read_only_note(reason: &str) -> String {
    format!(
        "Note: the sandbox is over its disk limit ({reason}), so commands cannot write files (writes fail with \
         \"File too large\") until files in {WORKSPACE_DIR} or {OUTPUTS_DIR} are deleted to get back under it."
    )
}

/// What the model is told when the disk watch stopped its jail for `reason`.
fn disk_stop_note(reason: &str) -> String {
    format!(
        "the sandbox went over its disk limit ({reason}), so every process in it was killed and the next \
         command starts a new shell. Delete files in {WORKSPACE_DIR} or {OUTPUTS_DIR} to get back under the limit."
    )
}

/// The note that opens the first result after the disk watch stopped a jail
/// between calls (this call ran in a new shell).
fn disk_note(reason: &str) -> String {
    format!(
        "Note: after the last command, the sandbox went over its disk limit ({reason}), so every process in it was \
         killed and this command ran in a new shell. Delete files in {WORKSPACE_DIR} or {OUTPUTS_DIR} to get back \
         under the limit."
    )
}

/// Logs a disk walk that failed (the watch then judges growth by the whole
/// file system, see [`disk`]).
fn log_failed_walk(session: SessionId, usage: &disk::Usage) {
    if let Some(disk::Cut::Failed(err)) = usage.cut {
        tracing::warn!(%session, error = %err, "the sandbox's disk use could not be measured");
    }
}

/// Measures a live jail's directories until it goes over its disk limit
/// (see [`disk`]), then stops the jail if no call is using it (a running call
/// hears of it through the watch and stops it itself). Ends when the jail's
/// [`DiskWatch`] is dropped, or with the session's sandbox.
async fn watch_disk(
    sandbox: Weak<SessionSandbox>,
    watch: Arc<Watch>,
    roots: Vec<PathBuf>,
    procs: Option<PathBuf>,
    session: SessionId,
) {
    let limit = watch.limit();
    let measuring = async {
        let mut took = Duration::ZERO;
        loop {
            tokio::time::sleep(disk::next_check_after(took)).await;
            let (usage, walk) = disk::measure(roots.clone(), procs.clone(), limit.entries).await;
            took = walk;
            log_failed_walk(session, &usage);
            if let Some(reason) = watch.observe(usage) {
                break reason;
            }
        }
    };
    // A watch that dies (a bug that panics) would leave the jail unbounded:
    // it is stopped instead, fail-closed.
    let reason = match futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(measuring)).await {
        Ok(reason) => reason,
        Err(_) => {
            tracing::error!(%session, "the sandbox's disk watch panicked; stopping the sandbox");
            watch.give_up()
        }
    };
    // A call holding the slot stops the jail itself (it hears of it through
    // the watch, or sees it once its command ends); if it returned the jail
    // to the slot regardless, the slot frees up and the jail is stopped here.
    loop {
        let Some(sandbox) = sandbox.upgrade() else { return };
        let taken = match sandbox.shell.try_lock() {
            Ok(mut slot) => {
                let ours = slot
                    .as_ref()
                    .and_then(|running| running.disk.as_ref())
                    .is_some_and(|d| Arc::ptr_eq(&d.watch, &watch));
                if !ours {
                    return;
                }
                tracing::warn!(%session, %reason, "a sandbox went over its disk limit between calls; stopping it");
                sandbox.set_disk_note(disk_note(&reason));
                Some(slot.take())
            }
            Err(_) => None,
        };
        match taken {
            Some(Some(mut running)) => {
                if let Some(disk) = running.disk.take() {
                    disk.disarm();
                }
                running.stop().await;
                return;
            }
            Some(None) => return,
            None => {
                drop(sandbox);
                tokio::time::sleep(disk::CHECK_INTERVAL).await;
            }
        }
    }
}

/// `forwarder` if the sandbox user can reach it, else a hard link (or, on
/// another file system, a copy) of it in the sandboxes' system directory:
/// bubblewrap binds it as the sandbox user, through every directory above it.
fn reachable_forwarder(forwarder: &Path, system_dir: &Path) -> Result<PathBuf, SandboxError> {
    if layout::traversable_by_others(forwarder) || !forwarder.is_file() {
        return Ok(forwarder.to_owned());
    }
    let setup = |what: &str| {
        let what = format!("{what} {} into {}", forwarder.display(), system_dir.display());
        move |source| SandboxError::Setup { what, source }
    };
    let reachable = system_dir.join("logbook-forward");
    let _ = std::fs::remove_file(&reachable);
    if std::fs::hard_link(forwarder, &reachable).is_err() {
        std::fs::copy(forwarder, &reachable).map_err(setup("copying the forwarder"))?;
    }
    std::fs::set_permissions(&reachable, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(setup("making reachable the forwarder"))?;
    Ok(reachable)
}

/// The jail of a session: its directories, the proxy socket, the forwarder
/// and the package layer.
fn session_spec(
    paths: &SessionPaths,
    layer: Option<&Path>,
    forwarder: &Path,
    cgroup: Option<&SandboxCgroup>,
) -> JailSpec {
    let mut mounts = vec![
        Mount::Bind { host: paths.workspace(), dest: WORKSPACE_DIR.to_owned() },
        Mount::ReadOnly { host: paths.uploads(), dest: UPLOADS_DIR.to_owned() },
        Mount::Bind { host: paths.outputs(), dest: OUTPUTS_DIR.to_owned() },
        Mount::ReadOnly { host: paths.run(), dest: RUN_DIR.to_owned() },
        Mount::ReadOnly { host: forwarder.to_owned(), dest: FORWARDER_PATH.to_owned() },
    ];
    if let Some(layer) = layer {
        mounts.push(Mount::ReadOnly { host: layer.to_owned(), dest: PACKAGES_DIR.to_owned() });
    }
    JailSpec {
        mounts,
        env: base_env(layer),
        chdir: WORKSPACE_DIR.to_owned(),
        command: SHELL_COMMAND.iter().map(|s| (*s).to_owned()).collect(),
        cgroup_procs: cgroup.map(SandboxCgroup::procs_files).unwrap_or_default(),
        max_file_bytes: jail::RLIMIT_FSIZE_BYTES,
    }
}

/// The whole environment of a sandbox: fixed values only, nothing from the
/// server's own environment.
pub fn base_env(layer: Option<&Path>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |key: &str, value: &str| env.push((key.to_owned(), value.to_owned()));
    let layer_env = packages::layer_env();
    match (layer, layer_env.iter().find(|(key, _)| key == "PATH")) {
        (Some(_), Some((_, layer_path))) => set("PATH", &format!("{layer_path}:{SYSTEM_PATH}")),
        _ => set("PATH", SYSTEM_PATH),
    }
    set("HOME", WORKSPACE_DIR);
    set("LANG", "C.UTF-8");
    set("TERM", "dumb");
    for key in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
        set(key, PROXY_URL);
    }
    for key in ["NO_PROXY", "no_proxy"] {
        set(key, "localhost,127.0.0.1,::1");
    }
    if Path::new(CA_BUNDLE).exists() {
        for key in [
            "SSL_CERT_FILE",
            "NODE_EXTRA_CA_CERTS",
            "REQUESTS_CA_BUNDLE",
            "PIP_CERT",
            "CURL_CA_BUNDLE",
            "GIT_SSL_CAINFO",
        ] {
            set(key, CA_BUNDLE);
        }
    }
    if layer.is_some() {
        for (key, value) in layer_env.iter().filter(|(key, _)| key != "PATH") {
            set(key, value);
        }
    }
    env
}
