//! The command line: `logbook serve` and the offline tools (`verify`, `keys`
//! including environment keys, `rerun`, `show`, `export`, `import`).
//!
//! Every subcommand reports a failure as one line saying what went wrong and
//! what to do, and exits non-zero. Long operations print progress to stderr.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use logbook_core::{Clock, SystemClock};
use logbook_store::{SledOptions, SledStore};

use crate::http::app;
use crate::model::{ModelClient, ModelConfig};
use crate::ratelimit::RateLimits;
use crate::runner::tools::EchoTools;
use crate::runner::{RunnerConfig, RunnerHandle, ToolExecutor};
use crate::sandbox::{SandboxConfig, SandboxTools};
use crate::state::{AppState, Config};
use crate::tenancy;
use crate::transport::{self, Transport};
use logbook_replay::{Policy, ToolHost};

/// `serve --tcp-user-timeout-secs` by default (see [`transport::DEFAULT_TCP_USER_TIMEOUT`]).
pub const DEFAULT_TCP_USER_TIMEOUT_SECS: u64 = transport::DEFAULT_TCP_USER_TIMEOUT.as_secs();
/// `serve --header-read-timeout-secs` by default.
pub const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = transport::DEFAULT_HEADER_READ_TIMEOUT.as_secs();
/// `serve --body-read-timeout-secs` by default.
pub const DEFAULT_BODY_READ_TIMEOUT_SECS: u64 = transport::DEFAULT_BODY_READ_TIMEOUT.as_secs();
/// The longest interval or timeout `serve` takes, in seconds (a day): far
/// past any useful setting, and small enough that adding it to an instant
/// never overflows.
pub const MAX_TIMEOUT_SECS: u64 = 86_400;
/// Largest sled cache `serve --cache-mib` takes: 1 TiB (its bytes must fit a u64).
pub const MAX_CACHE_MIB: u64 = 1 << 20;
/// How long shutdown waits for in-flight requests.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(25);

#[derive(Debug, Parser)]
#[command(name = "logbook", version, about = "A self-hosted, event-sourced Managed Agents runtime")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP API.
    Serve {
        /// Address to listen on (port 0 picks a free port; the address is printed).
        #[arg(long, env = "LOGBOOK_LISTEN", default_value = "127.0.0.1:8088")]
        listen: SocketAddr,
        /// Data directory (created if missing).
        #[arg(long, env = "LOGBOOK_DATA", default_value = "./logbook-data")]
        data: PathBuf,
        /// sled cache size in MiB.
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=MAX_CACHE_MIB))]
        cache_mib: u64,
        /// Create calls (POST, DELETE) per minute per workspace; 0 for no limit.
        #[arg(long, env = "LOGBOOK_RATE_CREATE", default_value_t = 300)]
        rate_create: u32,
        /// Read calls (GET) per minute per workspace; 0 for no limit.
        #[arg(long, env = "LOGBOOK_RATE_READ", default_value_t = 1200)]
        rate_read: u32,
        /// Calls per minute per workspace made with its self-hosted workers'
        /// credentials (environment keys, sessions tokens); 0 for no limit.
        #[arg(long, env = "LOGBOOK_RATE_WORK", default_value_t = crate::ratelimit::DEFAULT_WORK_PER_MINUTE)]
        rate_work: u32,
        /// Seconds between SSE pings on idle streams.
        #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_SECS))]
        sse_ping_secs: u64,
        /// Seconds a connection may leave sent data unread before it is cut off.
        #[arg(long, default_value_t = DEFAULT_TCP_USER_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_SECS))]
        tcp_user_timeout_secs: u64,
        /// Seconds a client has to send a request's line and headers, from
        /// connecting or from its previous response (an idle keep-alive
        /// connection is closed after as long).
        #[arg(long, default_value_t = DEFAULT_HEADER_READ_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_SECS))]
        header_read_timeout_secs: u64,
        /// Seconds a request body may take to arrive, plus one per 16 KiB
        /// received; a slower body is cut off with a 408.
        #[arg(long, default_value_t = DEFAULT_BODY_READ_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_SECS))]
        body_read_timeout_secs: u64,
        /// Most connections open at once; past it, new ones wait to be accepted.
        #[arg(long, default_value_t = transport::DEFAULT_MAX_CONNECTIONS,
              value_parser = clap::value_parser!(u32).range(1..=i64::from(transport::MAX_CONNECTIONS_LIMIT)))]
        max_connections: u32,
        /// Most SSE event streams one workspace may hold open at once; past
        /// it a new stream answers 429.
        #[arg(long, env = "LOGBOOK_MAX_STREAMS_PER_WORKSPACE",
              default_value_t = u32::try_from(crate::state::DEFAULT_MAX_STREAMS_PER_WORKSPACE).unwrap_or(u32::MAX),
              value_parser = clap::value_parser!(u32).range(1..=i64::from(transport::MAX_CONNECTIONS_LIMIT)))]
        max_streams_per_workspace: u32,
        /// MiB of free space kept on the data directory's disk for work
        /// under way: below it, clients' new work (messages, outcomes,
        /// creates, uploads) answers 503 until space is freed; 0 for none.
        #[arg(long, env = "LOGBOOK_DISK_RESERVE_MIB", default_value_t = crate::diskguard::DEFAULT_RESERVE_BYTES >> 20,
              value_parser = clap::value_parser!(u64).range(0..=crate::diskguard::MAX_RESERVE_MIB))]
        disk_reserve_mib: u64,
        /// Store events without running sessions (no model calls): for
        /// benchmarks of the API alone, and for operators who drain a server.
        #[arg(long)]
        no_runner: bool,
        /// Git hosts (names or IP literals, comma-separated) that repository
        /// resources may reach on private addresses: your own forges.
        #[arg(long, env = "LOGBOOK_GIT_PRIVATE_HOSTS", default_value = "")]
        git_private_hosts: String,
        /// The certificate authorities git trusts, instead of the system's (a
        /// PEM bundle: your private forge's CA, plus the system roots if you
        /// also clone from public forges).
        #[arg(long, env = "LOGBOOK_GIT_CA_FILE")]
        git_ca_file: Option<PathBuf>,
        /// The git executable (default: `git` on the PATH).
        #[arg(long, env = "LOGBOOK_GIT")]
        git: Option<PathBuf>,
        /// MCP server hosts (names or IP literals, comma-separated) that
        /// agents' MCP servers may reach on private addresses: your own MCP
        /// servers. Every other host must resolve to public addresses only.
        #[arg(long, env = "LOGBOOK_MCP_PRIVATE_HOSTS", default_value = "")]
        mcp_private_hosts: String,
        /// Seconds a self-hosted worker's lease lasts until it asks for
        /// another (its heartbeats come every half of it, at most every 30 s).
        #[arg(long, env = "LOGBOOK_WORK_LEASE_TTL_SECS", default_value_t = crate::api::work::queue::DEFAULT_LEASE_TTL_SECS,
              value_parser = clap::value_parser!(u32).range(i64::from(crate::api::work::queue::MIN_LEASE_TTL_SECS)..=i64::from(crate::api::work::queue::MAX_LEASE_TTL_SECS)))]
        work_lease_ttl_secs: u32,
    },
    /// Verify every session's hash chain, every head and every blob; or, given
    /// a BUNDLE, check that exported bundle offline (exit 1 and the first bad
    /// seq if it is damaged).
    Verify {
        #[arg(long, env = "LOGBOOK_DATA", default_value = "./logbook-data")]
        data: PathBuf,
        /// Print the full report as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// A bundle written by `logbook export` or `GET /x/v1/sessions/{id}/export`.
        bundle: Option<PathBuf>,
        /// With BUNDLE: require the signed head to be signed by this key (hex, from `GET /x/v1/keys`).
        #[arg(long, requires = "bundle")]
        public_key: Option<String>,
        /// With BUNDLE: an earlier signed head (JSON) the bundle must extend.
        #[arg(long, requires = "bundle")]
        against: Option<PathBuf>,
    },
    /// Export a session as a verifiable bundle (JSON Lines).
    Export {
        #[arg(long, env = "LOGBOOK_DATA", default_value = "./logbook-data")]
        data: PathBuf,
        /// The audit key file (default: DATA/keys/ed25519.key).
        #[arg(long, env = "LOGBOOK_AUDIT_KEY")]
        audit_key: Option<PathBuf>,
        /// The session id (sesn_...).
        session: String,
        /// Write here instead of stdout.
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Write the records only (bundle format 1), without the blobs they
        /// name: for a session whose files' contents this store lacks.
        #[arg(long)]
        records_only: bool,
    },
    /// Import a bundle into a data directory (offline: stop the server first).
    Import {
        #[arg(long, env = "LOGBOOK_DATA", default_value = "./logbook-data")]
        data: PathBuf,
        /// The workspace the session is imported into; created if new.
        #[arg(long, default_value = tenancy::DEFAULT_WORKSPACE)]
        workspace: String,
        /// Require the bundle's signed head to be signed by this key (hex).
        #[arg(long)]
        public_key: Option<String>,
        /// Attach the imported session to this environment of the workspace
        /// (env_...; hosted as the session's was), so it can be forked and
        /// continued here; by default it keeps its source's environment id.
        #[arg(long)]
        environment: Option<String>,
        bundle: PathBuf,
    },
    /// Re-execution check: every session's (or one session's) recorded runner
    /// decisions must follow from its recorded inputs through the state machine.
    Rerun {
        #[arg(long, env = "LOGBOOK_DATA", default_value = "./logbook-data")]
        data: PathBuf,
        /// Only this session (sesn_...).
        session: Option<String>,
    },
    /// A session's state after a seq: the next model request, the workspace,
    /// status and usage (JSON); or a workspace file; or the fitted context.
    Show {
        #[arg(long, env = "LOGBOOK_DATA", default_value = "./logbook-data")]
        data: PathBuf,
        /// The session id (sesn_...).
        session: String,
        /// After this seq (default: the last record).
        #[arg(long)]
        at_seq: Option<u64>,
        /// Print this file's bytes instead (a sandbox path, e.g. /workspace/main.rs).
        #[arg(long)]
        file: Option<String>,
        /// Print the context fitted to this many tokens instead (as the
        /// API's `budget_tokens`: 512 to 1,000,000).
        #[arg(
            long,
            conflicts_with = "file",
            value_parser = clap::value_parser!(u64).range(
                logbook_replay::fit::MIN_BUDGET_TOKENS..=crate::api::x::state::MAX_CONTEXT_BUDGET_TOKENS
            )
        )]
        budget_tokens: Option<u64>,
    },
    /// Fork a session after a seq or an event (offline: stop the server
    /// first): a new session sharing its log up to there, with its workspace
    /// as it was; the server continues it when it starts. Prints the session.
    Fork {
        #[arg(long, env = "LOGBOOK_DATA", default_value = "./logbook-data")]
        data: PathBuf,
        /// The session to fork (sesn_...).
        session: String,
        /// Fork after this seq.
        #[arg(long, required_unless_present = "at_event_id", conflicts_with = "at_event_id")]
        at_seq: Option<u64>,
        /// Fork after this event (sevt_...).
        #[arg(long)]
        at_event_id: Option<String>,
        /// Run the fork with this model instead.
        #[arg(long)]
        model: Option<String>,
        /// Run the fork with this system prompt instead.
        #[arg(long)]
        system: Option<String>,
        /// The fork's title.
        #[arg(long)]
        title: Option<String>,
    },
    /// Manage API keys (offline: stop the server first).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Inside a sandbox only: relay the sandbox's loopback proxy port to its
    /// egress proxy socket.
    #[command(hide = true)]
    SandboxForward {
        #[arg(long, default_value = crate::sandbox::forward::LISTEN_ADDR)]
        listen: String,
        #[arg(long)]
        socket: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key and print it (it is stored only as a hash).
    Create {
        #[arg(long, env = "LOGBOOK_DATA", default_value = "./logbook-data")]
        data: PathBuf,
        /// Workspace of the key; created if new.
        #[arg(long, default_value = tenancy::DEFAULT_WORKSPACE, conflicts_with = "environment")]
        workspace: String,
        /// Create an environment key instead: the credential of this
        /// self-hosted environment's workers (env_...), scoped to its work
        /// queue and its sessions' events.
        #[arg(long)]
        environment: Option<String>,
    },
    /// Revoke a key: given whole (`-` reads it from standard input, keeping
    /// it out of shell history and `ps`), or by the hint `keys list` shows.
    Revoke {
        #[arg(long, env = "LOGBOOK_DATA", default_value = "./logbook-data")]
        data: PathBuf,
        /// The key to revoke, or `-` to read it from standard input.
        #[arg(required_unless_present = "hint", conflicts_with = "hint")]
        key: Option<String>,
        /// Revoke the one live key whose hint (as `keys list` prints it) is this.
        #[arg(long)]
        hint: Option<String>,
    },
    /// List keys (their first characters, workspace, state).
    List {
        #[arg(long, env = "LOGBOOK_DATA", default_value = "./logbook-data")]
        data: PathBuf,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Serve {
            listen,
            data,
            cache_mib,
            rate_create,
            rate_read,
            rate_work,
            sse_ping_secs,
            tcp_user_timeout_secs,
            header_read_timeout_secs,
            body_read_timeout_secs,
            max_connections,
            max_streams_per_workspace,
            disk_reserve_mib,
            no_runner,
            git_private_hosts,
            git_ca_file,
            git,
            mcp_private_hosts,
            work_lease_ttl_secs,
        } => {
            let config = Config {
                rate_limits: RateLimits {
                    create_per_minute: rate_create,
                    read_per_minute: rate_read,
                    work_per_minute: rate_work,
                },
                sse_ping_interval: Duration::from_secs(sse_ping_secs),
                body_read_timeout: Duration::from_secs(body_read_timeout_secs),
                work_lease_ttl_secs,
                max_streams_per_workspace: usize::try_from(max_streams_per_workspace).unwrap_or(usize::MAX),
                disk_reserve_bytes: disk_reserve_mib << 20,
                ..Config::default()
            };
            let git = crate::resources::git::GitSettings::new(git, &git_private_hosts, git_ca_file);
            let remotes = Remotes { git, mcp: crate::mcp::McpSettings::new(&mcp_private_hosts) };
            let transport = Transport {
                tcp_user_timeout: Duration::from_secs(tcp_user_timeout_secs),
                header_read_timeout: Duration::from_secs(header_read_timeout_secs),
                max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
            };
            serve(listen, &data, cache_mib, config, transport, no_runner, remotes)
        }
        Command::Verify { bundle: Some(bundle), public_key, against, json, .. } => {
            crate::offline::verify_bundle(&bundle, public_key.as_deref(), against.as_deref(), json)
        }
        Command::Verify { data, json, bundle: None, .. } => verify(&data, json),
        Command::Export { data, audit_key, session, out, records_only } => {
            open_existing_store(&data).and_then(|store| {
                // A key named on the command line must be there: one made at
                // a mistyped path would sign with a key the server never used.
                if let Some(path) = audit_key.as_deref()
                    && !path.exists()
                {
                    anyhow::bail!("the audit key {} does not exist", path.display());
                }
                let key = load_audit_key(&data, audit_key.as_deref())?;
                crate::offline::export(&store, &key, &session, out.as_deref(), records_only)
            })
        }
        Command::Import { data, workspace, public_key, environment, bundle } => {
            open_store(&data, 64).and_then(|store| {
                crate::offline::import(&store, &bundle, &workspace, public_key.as_deref(), environment.as_deref())
            })
        }
        Command::Keys { command } => keys(command),
        Command::Rerun { data, session } => rerun(&data, session.as_deref()),
        Command::Show { data, session, at_seq, file, budget_tokens } => open_existing_store(&data)
            .and_then(|store| crate::offline::show(&store, &session, at_seq, file.as_deref(), budget_tokens)),
        Command::Fork { data, session, at_seq, at_event_id, model, system, title } => {
            let mut agent = serde_json::Map::new();
            if let Some(model) = model {
                agent.insert("model".to_owned(), serde_json::Value::String(model));
            }
            if let Some(system) = system {
                agent.insert("system".to_owned(), serde_json::Value::String(system));
            }
            let request = serde_json::json!({"at_seq": at_seq, "at_event_id": at_event_id, "title": title,
                "agent": if agent.is_empty() { serde_json::Value::Null } else { serde_json::Value::Object(agent) }});
            serde_json::from_value(request)
                .context("the fork request")
                .and_then(|request| open_existing_store(&data).map(|store| (store, request)))
                .and_then(|(store, request)| crate::offline::fork(&store, &data, &session, request))
        }
        Command::SandboxForward { listen, socket } => crate::sandbox::forward::run(&listen, &socket)
            .map(|()| ExitCode::SUCCESS)
            .with_context(|| format!("forwarding {listen} to {}", socket.display())),
    };
    match res {
        Ok(code) => code,
        Err(err) => {
            eprintln!("logbook: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The audit key at `path`, or the data directory's default one.
/// Writes `text` and a newline to stdout: an error (a closed pipe, a full
/// disk) is returned to be said on one line, never a panic as `println!`'s.
pub(crate) fn print_line(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").and_then(|()| out.flush()).context("writing to stdout")
}

/// Prints a key just stored, once: if it cannot be printed, nobody has it,
/// so it is revoked again rather than left live.
fn print_new_key(store: &SledStore, key: &str, now: logbook_core::Timestamp) -> anyhow::Result<()> {
    print_line(key).map_err(|err| match tenancy::revoke_key(store, key, now) {
        Ok(_) => err.context("the key could not be printed, so it was revoked"),
        Err(revoke) => err.context(format!("the key could not be printed, nor revoked ({})", revoke.message)),
    })
}

fn load_audit_key(data: &Path, path: Option<&Path>) -> anyhow::Result<crate::audit::AuditKey> {
    let path = path.map_or_else(|| crate::audit::default_key_path(data), Path::to_owned);
    Ok(crate::audit::AuditKey::load_or_create(&path)?)
}

fn open_store(data: &Path, cache_mib: u64) -> anyhow::Result<SledStore> {
    let options = SledOptions { cache_capacity_bytes: cache_mib.min(MAX_CACHE_MIB) * 1024 * 1024 };
    let store = SledStore::open(data, &options).with_context(|| {
        format!("opening the store in {}; is a logbook server already running on it?", data.display())
    })?;
    for corruption in store.quarantined() {
        eprintln!(
            "logbook: quarantined {corruption}; run `logbook verify --data {}` for a full report",
            data.display()
        );
    }
    for damage in store.store_damage() {
        eprintln!("logbook: {damage}; run `logbook verify --data {}`", data.display());
    }
    Ok(store)
}

/// Seeds the first API key of an empty store.
fn bootstrap_key(store: &SledStore, clock: &dyn Clock) -> anyhow::Result<()> {
    let existing = tenancy::list_keys(store).map_err(|e| anyhow::anyhow!("{e}"))?;
    if !existing.is_empty() {
        // The variable seeds an empty store only: an operator who set it
        // expecting it to work is told why it does not.
        if let Ok(key) = std::env::var("LOGBOOK_BOOTSTRAP_KEY")
            && !key.trim().is_empty()
            && tenancy::authenticate(store, key.trim()).is_err()
        {
            eprintln!(
                "logbook: LOGBOOK_BOOTSTRAP_KEY was not stored and is no API key of this store: it seeds an \
                 empty store only, and this one has keys (add one with `logbook keys create`)"
            );
        }
        return Ok(());
    }
    let workspace = tenancy::ensure_workspace(store, tenancy::DEFAULT_WORKSPACE, clock.now())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    match std::env::var("LOGBOOK_BOOTSTRAP_KEY") {
        Ok(key) if !key.is_empty() => {
            tenancy::store_key(store, &workspace, &key, clock.now())
                .map_err(|e| anyhow::anyhow!("LOGBOOK_BOOTSTRAP_KEY: {}", e.message))?;
            eprintln!("logbook: stored LOGBOOK_BOOTSTRAP_KEY as the first API key (workspace {})", workspace.name);
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            anyhow::bail!("LOGBOOK_BOOTSTRAP_KEY is not valid UTF-8; no key was stored")
        }
        Ok(_) | Err(std::env::VarError::NotPresent) => {
            let key = tenancy::create_key(store, &workspace, clock.now()).map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!("logbook: created the first API key (workspace {}); it will not be shown again:", workspace.name);
            print_new_key(store, &key, clock.now())?;
        }
    }
    Ok(())
}

/// Where sessions' remote resources come from: git forges and MCP servers.
#[derive(Debug)]
struct Remotes {
    git: crate::resources::git::GitSettings,
    mcp: crate::mcp::McpSettings,
}

/// The open-files limit `serve` raises its soft limit to (or to the hard
/// limit, if lower): every connection, stream, sandbox shell, egress proxy
/// and disk walk holds descriptors, and the common default soft limit (1024)
/// is far below what a busy server holds. Sandboxes set their own limit.
const WANTED_OPEN_FILES: u64 = 1 << 20;

/// Raises the soft open-files limit towards [`WANTED_OPEN_FILES`], as far as
/// the hard limit allows; says so if it cannot.
fn raise_open_files_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let wanted = limit.maximum.map_or(WANTED_OPEN_FILES, |hard| hard.min(WANTED_OPEN_FILES));
    if limit.current.is_some_and(|soft| soft < wanted) {
        let raised = Rlimit { current: Some(wanted), maximum: limit.maximum };
        if let Err(err) = setrlimit(Resource::Nofile, raised) {
            eprintln!("logbook: WARNING: cannot raise the open-files limit to {wanted} ({err})");
        }
    }
}

fn serve(
    listen: SocketAddr,
    data: &Path,
    cache_mib: u64,
    config: Config,
    transport: Transport,
    no_runner: bool,
    remotes: Remotes,
) -> anyhow::Result<ExitCode> {
    let Remotes { git, mcp } = remotes;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LOGBOOK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // The MCP SDK logs server URLs, which may carry tokens: cut down to
        // scheme://host:port whatever the filter (mcp::log says why).
        .event_format(crate::mcp::log::RedactSdkUrls::new(tracing_subscriber::fmt::format()))
        .init();
    crate::metrics::count_panics();
    // Egress refuses the host's own addresses; read them now so that a
    // problem shows at start-up (they are read again as they age).
    if let Err(err) = crate::net::addr::refresh_own_addresses() {
        eprintln!("logbook: WARNING: cannot read the host's own addresses ({err}); egress cannot refuse them");
    }
    raise_open_files_limit();
    let disk_limit = sandbox_disk_limit()?;
    let store = open_store(data, cache_mib)?;
    let audit_key = load_audit_key(data, std::env::var_os("LOGBOOK_AUDIT_KEY").map(PathBuf::from).as_deref())?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let key_clock = Arc::clone(&clock);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}; is another server running there? pass --listen"))?;
        let local = listener.local_addr().context("reading the bound address")?;
        let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
        let state = AppState::new(store, clock, config, shutdown_rx);
        state.set_audit_key(Arc::new(audit_key));
        state.set_resources_host(Arc::new(crate::resources::Host::new(data, git, disk_limit)));
        let guard = crate::diskguard::DiskGuard::new(data, state.config().disk_reserve_bytes);
        if let Some(low) = guard.low(std::time::Instant::now()) {
            eprintln!(
                "logbook: WARNING: the data directory's disk has {} MiB free, under the {} MiB reserve \
                 (--disk-reserve-mib): clients' new work is refused until space is freed",
                low.free >> 20,
                low.reserve >> 20
            );
        }
        state.set_disk_guard(guard);
        if no_runner {
            eprintln!("logbook: --no-runner: sessions store their events but do not run");
        } else {
            let runner = RunnerHandle::new(runner_config_from_env(data, state.store(), mcp)?);
            state.set_runner(runner.clone());
            let n_recovered = runner.recover(&state).await;
            if n_recovered > 0 {
                eprintln!("logbook: resuming {n_recovered} sessions that were running");
            }
        }
        // Only once the port is bound and the configuration checked: a
        // first start that fails on either would print a key and exit, and
        // the next start (the store has a key now) would show none.
        bootstrap_key(state.store(), key_clock.as_ref())?;
        eprintln!("logbook: serving on http://{local} with data in {}", data.display());
        let (fired_tx, fired_rx) = tokio::sync::oneshot::channel::<()>();
        let stopping = state.clone();
        let server = transport::serve(listener, app(state), transport, async move {
            shutdown_signal().await;
            eprintln!("logbook: shutting down: finishing in-flight requests, closing streams");
            let _ = shutdown_tx.send(true);
            let _ = fired_tx.send(());
        });
        let grace = async {
            if fired_rx.await.is_ok() {
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = server => {}
            () = grace => {
                eprintln!("logbook: connections still open after {}s; exiting", SHUTDOWN_GRACE.as_secs());
                if let Some(runner) = stopping.runner() {
                    runner.shutdown_tools().await;
                }
                return Ok(ExitCode::SUCCESS);
            }
        }
        if let Some(runner) = stopping.runner() {
            runner.shutdown_tools().await;
        }
        eprintln!("logbook: shut down cleanly");
        Ok(ExitCode::SUCCESS)
    })
}

/// The runner's model client and tools, from the environment: `ANTHROPIC_API_KEY`,
/// `ANTHROPIC_BASE_URL`; built-in tools run in sandboxes unless
/// `LOGBOOK_TOOLS=echo` selects the test-only echo tools;
/// `LOGBOOK_RETRY_BASE_MS` sets the model retry backoff.
fn runner_config_from_env(
    data: &Path,
    store: &SledStore,
    mcp: crate::mcp::McpSettings,
) -> anyhow::Result<RunnerConfig> {
    let model_config = ModelConfig::from_env()?;
    let request_options = model_config.request_options();
    let model = ModelClient::new(model_config).context("setting up the model client")?;
    if let Some(armed) = crate::runner::failpoint::arm_from_env()? {
        let after = if armed.and_after { " and after" } else { "" };
        eprintln!(
            "logbook: failpoint {} armed: {:?} on pass {}{after} (tests only)",
            armed.point.name(),
            armed.action,
            armed.nth
        );
    }
    let tools: Arc<dyn ToolExecutor> = match std::env::var("LOGBOOK_TOOLS").as_deref() {
        Ok("echo") => {
            eprintln!("logbook: LOGBOOK_TOOLS=echo: built-in tools echo their input (tests only)");
            Arc::new(EchoTools)
        }
        Ok("") | Err(_) => Arc::new(sandbox_tools(data, store)?),
        Ok(other) => anyhow::bail!("LOGBOOK_TOOLS={other}: the only test tool set is `echo`"),
    };
    let retry_base = std::env::var("LOGBOOK_RETRY_BASE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(crate::runner::RETRY_BASE, Duration::from_millis);
    let outcome_heartbeat = outcome_heartbeat_from(std::env::var("LOGBOOK_OUTCOME_HEARTBEAT_MS").ok().as_deref())?;
    let mcp = Arc::new(crate::mcp::McpHub::new(mcp).context("setting up MCP connections")?);
    let auto_allowed = auto_allowed_from(std::env::var("LOGBOOK_AUTO_ALLOW").ok().as_deref())?;
    let max_working_per_workspace = max_working_from(std::env::var("LOGBOOK_MAX_WORKING_SESSIONS").ok().as_deref())?;
    Ok(RunnerConfig {
        model: Some(model),
        request_options,
        tools,
        mcp,
        policy: Policy::default(),
        retry_base,
        outcome_heartbeat,
        auto_allowed,
        max_working_per_workspace,
    })
}

/// `LOGBOOK_OUTCOME_HEARTBEAT_MS`: how often a grading call under way
/// appends `span.outcome_evaluation_ongoing` (default
/// [`crate::runner::OUTCOME_HEARTBEAT`]).
fn outcome_heartbeat_from(raw: Option<&str>) -> anyhow::Result<Duration> {
    use crate::runner::{MAX_OUTCOME_HEARTBEAT, OUTCOME_HEARTBEAT};
    let Some(raw) = raw else { return Ok(OUTCOME_HEARTBEAT) };
    let max = MAX_OUTCOME_HEARTBEAT.as_millis();
    match raw.trim().parse::<u64>() {
        Ok(ms) if (1..=max).contains(&u128::from(ms)) => Ok(Duration::from_millis(ms)),
        Ok(_) | Err(_) => {
            anyhow::bail!(
                "LOGBOOK_OUTCOME_HEARTBEAT_MS={raw:?}: expected a whole number of milliseconds from 1 to {max}"
            )
        }
    }
}

/// `LOGBOOK_MAX_WORKING_SESSIONS`: how many sessions of one workspace may
/// call the model or run tools at once (default
/// [`crate::runner::DEFAULT_MAX_WORKING_PER_WORKSPACE`]).
fn max_working_from(raw: Option<&str>) -> anyhow::Result<usize> {
    use crate::runner::{DEFAULT_MAX_WORKING_PER_WORKSPACE, MAX_WORKING_PER_WORKSPACE_LIMIT};
    let Some(raw) = raw else { return Ok(DEFAULT_MAX_WORKING_PER_WORKSPACE) };
    match raw.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_WORKING_PER_WORKSPACE_LIMIT).contains(&n) => Ok(n),
        Ok(_) | Err(_) => anyhow::bail!(
            "LOGBOOK_MAX_WORKING_SESSIONS={raw:?}: expected a whole number from 1 to {MAX_WORKING_PER_WORKSPACE_LIMIT}"
        ),
    }
}

/// The tools the `auto` policy allows: `LOGBOOK_AUTO_ALLOW`, a comma-separated
/// list of built-in tool names (empty: ask for every tool), else the default.
fn auto_allowed_from(raw: Option<&str>) -> anyhow::Result<Vec<String>> {
    use crate::runner::{BUILT_IN_TOOLS, DEFAULT_AUTO_ALLOWED};
    let Some(raw) = raw else { return Ok(DEFAULT_AUTO_ALLOWED.iter().map(|t| (*t).to_owned()).collect()) };
    raw.split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            if BUILT_IN_TOOLS.contains(&name) {
                Ok(name.to_owned())
            } else {
                anyhow::bail!(
                    "LOGBOOK_AUTO_ALLOW: {name:?} is not a built-in tool (one of {})",
                    BUILT_IN_TOOLS.join(", ")
                )
            }
        })
        .collect()
}

/// The sandboxed built-in tools; problems that will stop every sandbox are
/// printed now (tool calls then fail saying the same), never worked around.
fn sandbox_tools(data: &Path, store: &SledStore) -> anyhow::Result<SandboxTools> {
    let forwarder = std::env::current_exe().context("finding the logbook executable (the sandbox forwarder)")?;
    let mut config = SandboxConfig::for_data(data, forwarder);
    config.disk_limit = sandbox_disk_limit()?;
    let services = crate::tools::ToolServices::from_env().context("setting up web_fetch and web_search")?;
    config.tool_services = Some(Arc::new(services));
    let tools = SandboxTools::new(config, Arc::new(store.clone())).context("preparing the sandboxes")?;
    for problem in tools.check() {
        eprintln!("logbook: WARNING: sandboxes cannot start: {problem}; bash tool calls will fail");
    }
    eprintln!("logbook: sandboxes: {}", tools.describe_limits());
    Ok(tools)
}

/// A session's disk limit: the sandbox's, which also bounds what a
/// repository clone may write (into the git cache and into the workspace).
fn sandbox_disk_limit() -> anyhow::Result<crate::sandbox::disk::DiskLimit> {
    let mut limit = crate::sandbox::disk::DiskLimit::default();
    if let Some(bytes) = sandbox_disk_limit_from_env()? {
        limit.bytes = bytes;
    }
    Ok(limit)
}

/// `LOGBOOK_SANDBOX_DISK_MB`: what one session's workspace and outputs may
/// hold, in megabytes (10^6 bytes; default 10,000, the hosted 10 GB).
fn sandbox_disk_limit_from_env() -> anyhow::Result<Option<u64>> {
    let Some(value) = std::env::var_os("LOGBOOK_SANDBOX_DISK_MB") else { return Ok(None) };
    let megabytes = value
        .to_str()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|mb| (1..=MAX_SANDBOX_DISK_MB).contains(mb))
        .with_context(|| {
            format!("LOGBOOK_SANDBOX_DISK_MB={value:?}: expected a whole number of megabytes from 1 to {MAX_SANDBOX_DISK_MB}")
        })?;
    Ok(Some(megabytes * 1_000_000))
}

/// The largest `LOGBOOK_SANDBOX_DISK_MB` (1 PB: past any real disk, short of
/// overflowing a byte count).
const MAX_SANDBOX_DISK_MB: u64 = 1_000_000_000;

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        () = term => {},
    }
}

fn keys(command: KeysCommand) -> anyhow::Result<ExitCode> {
    let clock = SystemClock;
    match command {
        KeysCommand::Create { data, environment: Some(environment), .. } => {
            let store = open_existing_store(&data)?;
            let env: logbook_core::EnvironmentId = environment
                .parse()
                .map_err(|_| anyhow::anyhow!("--environment {environment:?} is not an environment id (env_...)"))?;
            let Some((workspace, found)) =
                crate::api::work::find_environment(&store, env).map_err(|e| anyhow::anyhow!("{}", e.message))?
            else {
                anyhow::bail!("no environment {env} in {}; create it through the API first", data.display());
            };
            if !matches!(found.config, crate::api::environments::EnvConfig::SelfHosted {}) {
                anyhow::bail!("environment {env} is a cloud environment; environment keys are for self_hosted ones");
            }
            let key = tenancy::create_environment_key(&store, workspace, env, clock.now())
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            eprintln!(
                "logbook: created an environment key for {env} ({}); give it to the environment's workers; it will not be shown again:",
                found.name
            );
            print_new_key(&store, &key, clock.now())?;
        }
        KeysCommand::Create { data, workspace, environment: None } => {
            let store = open_store(&data, 64)?;
            let workspace = tenancy::ensure_workspace(&store, &workspace, clock.now())
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            let key =
                tenancy::create_key(&store, &workspace, clock.now()).map_err(|e| anyhow::anyhow!("{}", e.message))?;
            eprintln!(
                "logbook: created an API key for workspace {} ({}); it will not be shown again:",
                workspace.name, workspace.id
            );
            print_new_key(&store, &key, clock.now())?;
        }
        KeysCommand::Revoke { data, key, hint } => {
            let store = open_existing_store(&data)?;
            let listing = format!("`logbook keys list --data {}` shows the keys", data.display());
            if let Some(hint) = hint {
                match tenancy::revoke_by_hint(&store, &hint, clock.now())
                    .map_err(|e| anyhow::anyhow!("{}", e.message))?
                {
                    tenancy::HintRevoke::Revoked => {}
                    tenancy::HintRevoke::NoMatch => anyhow::bail!("no live key has the hint {hint:?}; {listing}"),
                    tenancy::HintRevoke::Ambiguous(n) => {
                        anyhow::bail!("{n} live keys share the hint {hint:?}; revoke with the key itself")
                    }
                }
            } else {
                let mut key = key.unwrap_or_default();
                if key == "-" {
                    key.clear();
                    std::io::stdin().read_line(&mut key)?;
                }
                let key = key.trim();
                let revoked =
                    tenancy::revoke_key(&store, key, clock.now()).map_err(|e| anyhow::anyhow!("{}", e.message))?;
                if !revoked {
                    anyhow::bail!("no live key matches; {listing}");
                }
            }
            eprintln!("logbook: revoked the key");
        }
        KeysCommand::List { data } => {
            let store = open_existing_store(&data)?;
            for record in tenancy::list_keys(&store).map_err(|e| anyhow::anyhow!("{}", e.message))? {
                let workspace = tenancy::workspace_by_id(&store, record.workspace_id)
                    .map_err(|e| anyhow::anyhow!("{}", e.message))?
                    .map_or_else(|| record.workspace_id.to_string(), |w| w.name);
                let state = record.revoked_at.map_or_else(|| "live".to_owned(), |at| format!("revoked {at}"));
                let scope = match record.scope {
                    tenancy::KeyScope::Workspace => String::new(),
                    tenancy::KeyScope::Environment { environment_id } => format!("  environment={environment_id}"),
                    tenancy::KeyScope::WorkSession { work_id, .. } => format!("  work={work_id}"),
                };
                print_line(&format!(
                    "{}...  workspace={workspace}{scope}  created={}  {state}",
                    record.hint, record.created_at
                ))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Opens the store of a data directory that must exist already: a mistyped
/// `--data` is an error rather than a new empty store. (`keys create` of an
/// API key may make one, to seed a server before its first start.)
fn open_existing_store(data: &Path) -> anyhow::Result<SledStore> {
    if !data.exists() {
        anyhow::bail!("no data directory at {}; pass --data DIR", data.display());
    }
    open_store(data, 64)
}

fn rerun(data: &Path, only: Option<&str>) -> anyhow::Result<ExitCode> {
    use logbook_store::Read;
    if !data.exists() {
        anyhow::bail!("no data directory at {}; pass --data DIR", data.display());
    }
    let store = open_store(data, 64)?;
    let mut n_steps = 0;
    let mut n_inconsistent = 0;
    let sessions = match only {
        Some(raw) => {
            let id: logbook_core::SessionId =
                raw.parse().map_err(|_| anyhow::anyhow!("{raw:?} is not a session id (sesn_...)"))?;
            if store.head(id)?.next == logbook_core::Seq::ZERO {
                anyhow::bail!("no session {id} with events in {}", data.display());
            }
            vec![id]
        }
        None => store.sessions().context("listing sessions")?,
    };
    let self_hosted = crate::api::work::self_hosted_sessions(&store).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    for session in &sessions {
        let mut entries = Vec::new();
        loop {
            let records = store.read(*session, logbook_core::Seq::new(entries.len() as u64), 10_000)?;
            if records.is_empty() {
                break;
            }
            for record in records {
                entries.push(record.entry().with_context(|| format!("{session}: decoding seq {}", record.seq()))?);
            }
        }
        // A session's decisions follow from its own policy: where its tools run.
        let tool_host = if self_hosted.contains(session) { ToolHost::Worker } else { ToolHost::Server };
        let report = logbook_replay::rerun_check(&entries, &Policy { tool_host, ..Policy::default() });
        n_steps += report.n_steps;
        if !report.is_consistent() {
            n_inconsistent += 1;
            for mismatch in &report.mismatches {
                eprintln!(
                    "logbook: {session}: entry {} recorded {} where the state machine decides {}",
                    mismatch.entry_idx, mismatch.recorded, mismatch.expected
                );
            }
        }
    }
    eprintln!(
        "logbook: rerun of {} sessions, {n_steps} runner steps: {}",
        sessions.len(),
        if n_inconsistent == 0 {
            "every decision reproduced".to_owned()
        } else {
            format!("{n_inconsistent} sessions diverge")
        }
    );
    Ok(if n_inconsistent == 0 { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

fn verify(data: &Path, json: bool) -> anyhow::Result<ExitCode> {
    if !data.exists() {
        anyhow::bail!("no data directory at {}; pass --data DIR", data.display());
    }
    let store = open_store(data, 64)?;
    let started = Instant::now();
    let mut lines = crate::progress::Progress::new("verified", None);
    let report = store
        .verify_all(&mut |progress| {
            if lines.due() {
                eprintln!(
                    "logbook: verified {} records in {} sessions, {} blobs",
                    progress.n_records, progress.n_sessions, progress.n_blobs
                );
            }
        })
        .context("reading the store")?;
    if json {
        print_line(&serde_json::to_string_pretty(&report).context("encoding the report")?)?;
    }
    let n_damaged = report.damaged().count();
    for damaged in report.damaged() {
        for brk in &damaged.report.breaks {
            eprintln!("logbook: {}: break at seq {}: {:?}", damaged.session, brk.seq, brk.kind);
        }
    }
    for err in report.blob_errors.iter().chain(&report.log_errors) {
        eprintln!("logbook: {err}");
    }
    let intact = report.is_intact() && store.store_damage().is_empty();
    eprintln!(
        "logbook: {} records in {} sessions and {} blobs checked in {:.1}s: {}",
        report.n_records,
        report.sessions.len(),
        report.n_blobs,
        started.elapsed().as_secs_f64(),
        if intact { "intact".to_owned() } else { format!("{n_damaged} sessions damaged") }
    );
    Ok(if intact { ExitCode::SUCCESS } else { ExitCode::from(2) })
}
