//! The built-in tools that run in the server, not in the sandbox: the file
//! tools (confined to the session's directories by the kernel) and the web
//! tools (which connect only to public addresses).
//!
//! [`run`] is the one entry point the runner's tool executor calls for
//! `read`, `write`, `edit`, `glob`, `grep`, `web_fetch` and `web_search`
//! (bash runs in the sandbox, see `crate::sandbox`). It refuses a tool the
//! agent's toolset does not enable, runs the file tools on the blocking pool
//! and saves any text output over [`spill::MAX_INLINE_CHARS`] to the
//! workspace ([`spill`]). [`ToolServices`] holds what outlives one call: the
//! web_fetch HTTP client and the search provider.
//!
//! - `path`: the model's paths mapped onto the session's roots (lexical).
//! - `files`: read, write, edit, glob, grep; `files::confined` is where the
//!   kernel confinement lives, `files::walk` the descriptor-based walk.
//! - `web`: web_fetch and web_search.
//! - `image`: whether bytes can be sent to the model as an image (their real
//!   media type, their dimensions), for read, MCP results and inlined files.

pub mod files;
pub(crate) mod image;
pub mod path;
pub mod spill;
pub mod web;

use std::sync::Arc;

use logbook_core::{Json, SessionId};
use serde_json::Value;

use crate::api::environments::{EnvConfig, Environment};
use crate::api::tools::Tool;
use crate::runner::ToolOutcome;
use crate::sandbox::disk::{self, DiskLimit};
use crate::sandbox::layout::SessionPaths;
use crate::sandbox::policy::EgressPolicy;

/// The environment variable naming a SearXNG-compatible search endpoint.
pub const SEARCH_URL_ENV: &str = "LOGBOOK_SEARCH_URL";

/// What a server-side tool call may use.
#[derive(Debug, Clone, Copy)]
pub struct ToolContext<'a> {
    pub session: SessionId,
    /// The session's directories (the file tools' roots).
    pub paths: &'a SessionPaths,
    /// The session's resolved agent tools (which tools are enabled, web tool
    /// domain lists and limits).
    pub agent_tools: &'a [Tool],
    /// The hosts the session's environment lets it reach: the web tools obey
    /// it as the sandbox's proxy does (see [`egress_of`]).
    pub egress: &'a EgressPolicy,
    /// Shared by every session: build once at startup.
    pub services: &'a ToolServices,
    /// The session's log so far: web_fetch's `url_sources` bound URLs to
    /// what it holds.
    pub log: &'a [logbook_core::entry::Entry],
    /// Whether the model reads the session's files here: false for a
    /// self-hosted session, whose file tools run on its worker, so a large
    /// output is previewed instead of saved where the worker never looks.
    pub files_here: bool,
    /// The session's disk limit, which the jail's watch enforces on bash:
    /// `write`, `edit` and saving a large output check it too, so that the
    /// server's own writes cannot grow the files past it (`None`: no limit).
    pub disk_limit: Option<DiskLimit>,
}

/// The long-lived parts of the server-side tools.
#[derive(Debug, Clone)]
pub struct ToolServices {
    fetcher: web::Fetcher,
    search: Option<Arc<dyn web::SearchProvider>>,
}

/// Why the tools could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    #[error(transparent)]
    Fetcher(#[from] web::FetcherError),
    #[error("{SEARCH_URL_ENV}: {0}")]
    Search(#[from] web::SearchError),
}

impl ToolServices {
    /// Services resolving names with `resolver` and searching with `search`.
    pub fn new(
        resolver: Arc<dyn web::HostResolver>,
        search: Option<Arc<dyn web::SearchProvider>>,
    ) -> Result<ToolServices, ServicesError> {
        Ok(ToolServices { fetcher: web::Fetcher::new(resolver)?, search })
    }

    /// The production setup: the system resolver, and the SearXNG endpoint
    /// named by `search_url` (from [`SEARCH_URL_ENV`]), if any.
    pub fn from_search_url(search_url: Option<&str>) -> Result<ToolServices, ServicesError> {
        let search = match search_url.map(str::trim).filter(|url| !url.is_empty()) {
            Some(url) => Some(Arc::new(web::SearxngProvider::new(url)?) as Arc<dyn web::SearchProvider>),
            None => None,
        };
        ToolServices::new(Arc::new(web::SystemResolver), search)
    }

    /// [`ToolServices::from_search_url`] with [`SEARCH_URL_ENV`]: call once at
    /// startup.
    pub fn from_env() -> Result<ToolServices, ServicesError> {
        ToolServices::from_search_url(std::env::var(SEARCH_URL_ENV).ok().as_deref())
    }

    /// For tests: a fetcher whose checked addresses are rewritten.
    #[cfg(test)]
    pub(crate) fn for_tests(fetcher: web::Fetcher, search: Option<Arc<dyn web::SearchProvider>>) -> ToolServices {
        ToolServices { fetcher, search }
    }
}

/// The tools [`run`] handles.
pub const SERVER_TOOLS: [&str; 7] = ["read", "write", "edit", "glob", "grep", "web_fetch", "web_search"];

/// One of the tools [`run`] handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerTool {
    Read,
    Write,
    Edit,
    Glob,
    Grep,
    WebFetch,
    WebSearch,
}

impl ServerTool {
    fn from_name(name: &str) -> Option<ServerTool> {
        Some(match name {
            "read" => ServerTool::Read,
            "write" => ServerTool::Write,
            "edit" => ServerTool::Edit,
            "glob" => ServerTool::Glob,
            "grep" => ServerTool::Grep,
            "web_fetch" => ServerTool::WebFetch,
            "web_search" => ServerTool::WebSearch,
            _ => return None,
        })
    }
}

/// Runs the server-side built-in tool `name` with `input`.
pub async fn run(ctx: &ToolContext<'_>, name: &str, input: &Json) -> ToolOutcome {
    let Some(tool) = ServerTool::from_name(name) else {
        return ToolOutcome::error(format!("{name} is not a tool this server runs itself"));
    };
    if !is_enabled(ctx.agent_tools, name) {
        return ToolOutcome::error(format!("the {name} tool is not enabled for this agent"));
    }
    let input = input.to_value();
    let roots = files::Roots::new(ctx.paths);
    if matches!(tool, ServerTool::Write | ServerTool::Edit)
        && let Some(reason) = over_disk_limit(ctx, written_bytes(&input)).await
    {
        return ToolOutcome::error(format!(
            "{name}: the session's files cannot grow: {reason}. Delete files (with bash) to make room"
        ));
    }
    let outcome = match tool {
        ServerTool::Read | ServerTool::Write | ServerTool::Edit | ServerTool::Glob | ServerTool::Grep => {
            let roots = roots.clone();
            let task = tokio::task::spawn_blocking(move || run_file_tool(&roots, tool, &input));
            match task.await {
                Ok(outcome) => outcome,
                Err(err) => {
                    tracing::error!(session = %ctx.session, tool = name, %err, "a file tool failed");
                    ToolOutcome::error(format!("{name}: internal error; the call did not complete"))
                }
            }
        }
        ServerTool::WebFetch => {
            let settings = web::FetchSettings::from_tools(ctx.agent_tools, ctx.egress).with_context(ctx.log);
            ctx.services.fetcher.run(&settings, &input).await
        }
        ServerTool::WebSearch => {
            let settings = web::SearchSettings::from_tools(ctx.agent_tools, ctx.egress);
            web::search::run(ctx.services.search.as_deref(), &settings, &input).await
        }
    };
    if !needs_spill(&outcome) {
        return outcome;
    }
    if !ctx.files_here {
        return spill::preview_large_outputs(outcome, "the session's files are on its worker, not on this server");
    }
    let spilled = spill::oversized_text_chars(&outcome).map_or(0, |chars| chars as u64 * 4);
    if let Some(reason) = over_disk_limit(ctx, spilled).await {
        return spill::preview_large_outputs(outcome, &format!("the session's files cannot grow: {reason}"));
    }
    let task = tokio::task::spawn_blocking(move || spill::spill_large_outputs(&roots, outcome));
    match task.await {
        Ok(outcome) => outcome,
        Err(err) => {
            tracing::error!(session = %ctx.session, tool = name, %err, "saving a large output failed");
            ToolOutcome::error(format!("{name}: internal error while saving a large output"))
        }
    }
}

/// Why writing `adding` more bytes would take the session's files past its
/// disk limit, if it would: measured now (a walk of the workspace and
/// outputs, as the jail's watch does; a walk that cannot see everything is
/// over). `None` when the session has no limit.
async fn over_disk_limit(ctx: &ToolContext<'_>, adding: u64) -> Option<String> {
    let limit = ctx.disk_limit?;
    let (usage, _) = disk::measure(vec![ctx.paths.workspace(), ctx.paths.outputs()], None, limit.entries).await;
    if let Some(reason) = usage.over(&limit) {
        return Some(reason);
    }
    let after = usage.bytes.saturating_add(adding);
    (after > limit.bytes).then(|| {
        format!(
            "its files take {} bytes and this would add {adding}, over the sandbox's disk limit of {} bytes",
            usage.bytes, limit.bytes
        )
    })
}

/// The bytes a write or edit call's input would add at most (its new text).
fn written_bytes(input: &Value) -> u64 {
    ["content", "new_string"]
        .iter()
        .filter_map(|field| input.get(field).and_then(Value::as_str))
        .map(|text| text.len() as u64)
        .sum()
}

/// The hosts the web tools may reach for a session in `environment`: a cloud
/// environment's networking (`limited`: its `allowed_hosts`), any host for a
/// self-hosted one (its tools run elsewhere), and none when the environment
/// could not be loaded (the policy is unknown, so nothing is allowed).
pub fn egress_of(environment: Option<&Environment>) -> EgressPolicy {
    match environment.map(|environment| &environment.config) {
        Some(EnvConfig::Cloud { networking, .. }) => EgressPolicy::from_networking(networking),
        Some(EnvConfig::SelfHosted {}) => EgressPolicy::Open,
        None => EgressPolicy::Hosts(Vec::new()),
    }
}

/// The web tools that take `allowed_domains`.
const WEB_TOOLS: [&str; 2] = ["web_fetch", "web_search"];

/// Refuses an enabled web tool whose `allowed_domains` names a domain a
/// `limited` environment never lets it reach (behaviour digest §6.4: such a
/// session is refused at create and update, rather than failing every call).
pub fn check_environment(tools: &[Tool], config: &EnvConfig) -> Result<(), crate::api::error::ApiError> {
    let EnvConfig::Cloud { networking: networking @ crate::api::environments::Networking::Limited { .. }, .. } = config
    else {
        return Ok(());
    };
    let policy = EgressPolicy::from_networking(networking);
    for name in WEB_TOOLS.into_iter().filter(|name| is_enabled(tools, name)) {
        let domains = tools.iter().filter_map(|tool| match tool {
            Tool::AgentToolset { configs, .. } => configs.iter().find(|config| config.name == name),
            Tool::McpToolset { .. } | Tool::Custom { .. } => None,
        });
        let domains = domains
            .filter_map(|config| config.extra.get("allowed_domains").and_then(Value::as_array))
            .flatten()
            .filter_map(Value::as_str);
        for (idx, domain) in domains.enumerate() {
            if !policy.reaches_within(domain) {
                return Err(crate::api::error::ApiError::invalid(format!(
                    "agent.tools: {name}.allowed_domains[{idx}] {domain:?} is not within the environment's \
                     networking.allowed_hosts, so {name} could never reach it; add it there or remove it"
                )));
            }
        }
    }
    Ok(())
}

fn run_file_tool(roots: &files::Roots, tool: ServerTool, input: &Value) -> ToolOutcome {
    match tool {
        ServerTool::Read => files::read(roots, input),
        ServerTool::Write => files::write(roots, input),
        ServerTool::Edit => files::edit(roots, input),
        ServerTool::Glob => files::glob(roots, input),
        ServerTool::Grep => files::grep(roots, input),
        ServerTool::WebFetch | ServerTool::WebSearch => ToolOutcome::error("internal error: not a file tool"),
    }
}

/// Whether the output's text is long enough to be saved to a file.
fn needs_spill(outcome: &ToolOutcome) -> bool {
    spill::oversized_text_chars(outcome).is_some()
}

/// Whether the agent's built-in toolset enables `name` (per-tool config over
/// the toolset default; no toolset, no built-in tools).
pub(crate) fn is_enabled(tools: &[Tool], name: &str) -> bool {
    tools.iter().any(|tool| match tool {
        Tool::AgentToolset { default_config, configs } => {
            configs.iter().find(|config| config.name == name).map_or(default_config.enabled, |config| config.enabled)
        }
        Tool::McpToolset { .. } | Tool::Custom { .. } => false,
    })
}

#[cfg(test)]
#[path = "tests/mod.rs"]
mod tests;
