//! The sandbox under test: `SandboxTools` over a temp data directory and an
//! in-memory blob store, with the built `logbook` binary as the forwarder,
//! driven through the same `ToolExecutor` calls the runner makes.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use logbook_core::event::{ContentBlock, WorkspaceChange};
use logbook_core::{EnvironmentId, EventId, Json, SessionId, Timestamp};
use logbook_server::api::environments::{EnvConfig, Environment, Networking, Packages};
use logbook_server::runner::{ToolCall, ToolExecutor, ToolOutcome};
use logbook_server::sandbox::layout::SessionPaths;
use logbook_server::sandbox::{SandboxConfig, SandboxTools};
use logbook_store::MemStore;
use serde_json::{Value, json};

pub(crate) struct Sbx {
    pub(crate) tools: SandboxTools,
    pub(crate) store: Arc<MemStore>,
    pub(crate) data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Sbx {
    pub(crate) fn new() -> Sbx {
        Sbx::with_max_live_jails(logbook_server::sandbox::MAX_LIVE_JAILS)
    }

    pub(crate) fn with_max_live_jails(max_live_jails: usize) -> Sbx {
        Sbx::with_config(|config| SandboxConfig { max_live_jails, ..config })
    }

    /// A sandbox made with the default configuration as `adjust` changes it.
    pub(crate) fn with_config(adjust: impl FnOnce(SandboxConfig) -> SandboxConfig) -> Sbx {
        let dir = tempfile::tempdir().unwrap();
        // bubblewrap runs as the sandbox uid and must reach the session
        // directories through the data directory (a tempdir is 0700).
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o711)).unwrap();
        let store = Arc::new(MemStore::in_memory().unwrap());
        let config = adjust(SandboxConfig::for_data(&data, PathBuf::from(env!("CARGO_BIN_EXE_logbook"))));
        let tools = SandboxTools::new(config, Arc::clone(&store) as _).unwrap();
        assert_eq!(tools.check(), Vec::<String>::new(), "the sandbox prerequisites (root, bubblewrap) are missing");
        Sbx { tools, store, data, _dir: dir }
    }

    pub(crate) fn paths(&self, session: SessionId) -> SessionPaths {
        self.tools.paths(session)
    }

    pub(crate) async fn run(&self, session: SessionId, env: &Environment, name: &str, input: Value) -> ToolOutcome {
        let input = Json::new(&input);
        let call = ToolCall {
            session,
            tool_use_id: EventId::for_seq(1, logbook_core::Seq::new(1), 1),
            name,
            input: &input,
            agent_tools: &[],
            environment: Some(env),
            log: &[],
        };
        self.tools.run(&call).await
    }

    /// Runs `command` in the session's shell (default timeout).
    pub(crate) async fn bash(&self, session: SessionId, env: &Environment, command: &str) -> ToolOutcome {
        self.run(session, env, "bash", json!({ "command": command })).await
    }

    /// Runs `command` and returns its output, failing the test if it failed.
    pub(crate) async fn ok(&self, session: SessionId, env: &Environment, command: &str) -> String {
        let outcome = self.bash(session, env, command).await;
        assert!(!outcome.is_error, "`{command}` failed: {}", text(&outcome));
        text(&outcome)
    }

    pub(crate) async fn changes(&self, session: SessionId) -> Vec<WorkspaceChange> {
        self.tools.workspace_changes(session, &[]).await.unwrap()
    }
}

pub(crate) fn text(outcome: &ToolOutcome) -> String {
    outcome
        .content
        .iter()
        .map(|block| match block {
            ContentBlock::Text { text } => text.clone(),
            ContentBlock::Image { .. }
            | ContentBlock::Document { .. }
            | ContentBlock::SearchResult { .. }
            | ContentBlock::Redacted => format!("{block:?}"),
        })
        .collect()
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

pub(crate) fn session() -> SessionId {
    SessionId::from_parts(1_700_000_000_000, rand::random::<u128>() & ((1 << 80) - 1))
}

pub(crate) fn environment(networking: Networking, packages: Packages) -> Environment {
    let at = Timestamp::from_unix_micros(1_700_000_000_000_000);
    Environment {
        id: EnvironmentId::from_parts(
            1_700_000_000_000,
            u128::from(NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)),
        ),
        object: "environment".to_owned(),
        name: "test".to_owned(),
        description: None,
        metadata: Default::default(),
        config: EnvConfig::Cloud { networking, packages },
        scope: "workspace".to_owned(),
        created_at: at,
        updated_at: at,
        archived_at: None,
    }
}

pub(crate) fn unrestricted() -> Environment {
    environment(Networking::Unrestricted {}, Packages::default())
}

pub(crate) fn limited(hosts: &[&str], package_managers: bool) -> Environment {
    environment(
        Networking::Limited {
            allowed_hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            allow_mcp_servers: false,
            allow_package_managers: package_managers,
        },
        Packages::default(),
    )
}

/// Runs `script` with `sh -c` on the host (as the test's own user, root),
/// killed after a minute, with no stdin.
pub(crate) fn host(script: &str) -> std::process::Output {
    std::process::Command::new("timeout")
        .args(["-s", "KILL", "60", "/bin/sh", "-c", script])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// Waits until `check` holds, for at most `limit`.
pub(crate) async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Copies the probe script into a session's workspace (as the sandbox would
/// see a file the agent wrote).
pub(crate) fn install_probe(paths: &SessionPaths) -> PathBuf {
    paths.create().unwrap();
    let path = paths.workspace().join("probe.py");
    std::fs::write(&path, include_str!("probe.py")).unwrap();
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    path
}

pub(crate) fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}
