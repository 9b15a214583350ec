//! Tests of the server-side tools, through [`super::run`] as the runner
//! calls it.
//!
//! - `behaviour`: each file tool against the contract of
//!   managed-agents-behaviour.md §8.3 (and the spill of large outputs).
//! - `escape`: the path-escape corpus and the symlink-swap race.
//! - `ssrf`: the SSRF corpus for web_fetch, against loopback listeners that
//!   count connections, and web_fetch's own behaviour.
//! - `search`: web_search against a fake SearXNG endpoint.
//!
//! Every test builds its own session directories in a temp dir ([`Fixture`])
//! and runs each call under a deadline, so a tool that hangs (on a FIFO, a
//! device, a silent server) fails the test instead of stalling it. The tests
//! run as root (CI does): the tools `fchown` what they create to the
//! sandbox's user, and the corpus makes device nodes.

mod behaviour;
mod escape;
mod http;
mod search;
mod self_hosted;
mod ssrf;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use logbook_core::event::ContentBlock;
use logbook_core::{Json, SessionId};
use serde_json::{Value, json};
use tempfile::TempDir;

use super::{ToolContext, ToolServices, run};
use crate::api::tools::{Tool, resolve_tools};
use crate::runner::ToolOutcome;
use crate::sandbox::layout::SessionPaths;
use crate::sandbox::policy::EgressPolicy;

/// Hang guard for one tool call: far beyond any healthy call, so it only
/// ever fires on a hang.
const CALL_DEADLINE: Duration = Duration::from_secs(60);

/// One session's directories in a temp data dir, plus what lies outside them.
pub(super) struct Fixture {
    _dir: TempDir,
    pub(super) data: PathBuf,
    pub(super) paths: SessionPaths,
    pub(super) tools: Vec<Tool>,
    /// The environment's networking (any host unless a test limits it).
    pub(super) egress: EgressPolicy,
    pub(super) services: ToolServices,
    /// The session's disk limit (none unless a test sets one).
    pub(super) disk_limit: Option<crate::sandbox::disk::DiskLimit>,
}

impl Fixture {
    pub(super) fn new() -> Fixture {
        Fixture::with_tools(json!([{"type": "agent_toolset_20260401"}]))
    }

    /// A fixture whose agent has the `tools` array (as a request gives it).
    pub(super) fn with_tools(tools: Value) -> Fixture {
        let services = ToolServices::from_search_url(None).unwrap();
        Fixture::with_services(tools, services)
    }

    pub(super) fn with_services(tools: Value, services: ToolServices) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().canonicalize().unwrap();
        let paths = SessionPaths::new(&data, SessionId::from_parts(1, 1));
        for path in [paths.workspace(), paths.uploads(), paths.outputs()] {
            std::fs::create_dir_all(&path).unwrap();
        }
        let tools = resolve_tools(tools.as_array().unwrap()).unwrap();
        Fixture { _dir: dir, data, paths, tools, egress: EgressPolicy::Open, services, disk_limit: None }
    }

    /// The host path of `rel` in the workspace.
    pub(super) fn ws(&self, rel: &str) -> PathBuf {
        self.paths.workspace().join(rel)
    }

    /// Writes a workspace file (and its parents) directly, as bash would.
    pub(super) fn put(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.ws(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        path
    }

    /// Calls `name` with `input` through [`run`], under the hang guard.
    pub(super) async fn call(&self, name: &str, input: Value) -> ToolOutcome {
        self.call_with_log(name, input, &[]).await
    }

    /// [`Fixture::call`] in a session whose log is `log` (what `url_sources`
    /// and other context-dependent checks read).
    pub(super) async fn call_with_log(&self, name: &str, input: Value, log: &[logbook_core::Entry]) -> ToolOutcome {
        let ctx = ToolContext {
            session: SessionId::from_parts(1, 1),
            paths: &self.paths,
            agent_tools: &self.tools,
            egress: &self.egress,
            services: &self.services,
            log,
            files_here: true,
            disk_limit: self.disk_limit,
        };
        let input = Json::new(&input);
        match tokio::time::timeout(CALL_DEADLINE, run(&ctx, name, &input)).await {
            Ok(outcome) => outcome,
            Err(_) => panic!("{name} {input}: no answer within {CALL_DEADLINE:?} (the tool hangs)"),
        }
    }

    /// Calls and expects success; returns the text.
    pub(super) async fn ok(&self, name: &str, input: Value) -> String {
        let outcome = self.call(name, input.clone()).await;
        assert!(!outcome.is_error, "{name} {input} failed: {}", text_of(&outcome));
        text_of(&outcome)
    }

    /// Calls and expects an error result; returns its text.
    pub(super) async fn err(&self, name: &str, input: Value) -> String {
        let outcome = self.call(name, input.clone()).await;
        assert!(outcome.is_error, "{name} {input} should fail, got: {}", text_of(&outcome));
        text_of(&outcome)
    }
}

/// Every text block of an outcome, joined.
pub(super) fn text_of(outcome: &ToolOutcome) -> String {
    outcome
        .content
        .iter()
        .filter_map(|block| match block {
            ContentBlock::Text { text } => Some(text.as_str()),
            ContentBlock::Image { .. }
            | ContentBlock::Document { .. }
            | ContentBlock::SearchResult { .. }
            | ContentBlock::Redacted => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The owner, group and permission bits of a host path.
pub(super) fn owner_and_mode(path: &Path) -> (u32, u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).unwrap();
    (meta.uid(), meta.gid(), meta.mode() & 0o7777)
}

/// Fixture services whose fetcher sends the checked address `public` to
/// `actual` (see `web::guard`) and resolves names with `resolver`.
pub(super) fn services_with(
    resolver: Arc<dyn super::web::HostResolver>,
    rewrites: Vec<(std::net::IpAddr, std::net::SocketAddr)>,
    search: Option<Arc<dyn super::web::SearchProvider>>,
) -> ToolServices {
    let rewrite = Arc::new(move |addr: std::net::SocketAddr| {
        rewrites.iter().find(|(public, _)| *public == addr.ip()).map_or(addr, |(_, actual)| *actual)
    });
    ToolServices::for_tests(super::web::Fetcher::with_rewrite(resolver, rewrite), search)
}
