//! The built-in tools that run in the server, not in the sandbox: the file
//! tools (confined to the session's directories by the kernel) and the web
//! tools (which connect only to public addresses).
//!
//! [`run`] is the one entry point the runner's tool executor calls for
//! `read`, `write`, `edit`, `glob`, `grep`, `web_fetch` and `web_search`
//! (bash runs in the sandbox, see `crate::sandbox`).

use logbook_core::{Json, SessionId};

use crate::api::tools::Tool;
use crate::runner::ToolOutcome;
use crate::sandbox::layout::SessionPaths;

/// What a server-side tool call may use.
#[derive(Debug, Clone, Copy)]
pub struct ToolContext<'a> {
    pub session: SessionId,
    /// The session's directories (the file tools' roots).
    pub paths: &'a SessionPaths,
    /// The session's resolved agent tools (web tool domain lists and limits).
    pub agent_tools: &'a [Tool],
}

/// The tools [`run`] handles.
pub const SERVER_TOOLS: [&str; 7] = ["read", "write", "edit", "glob", "grep", "web_fetch", "web_search"];

/// Runs the server-side built-in tool `name` with `input`.
pub async fn run(ctx: &ToolContext<'_>, name: &str, input: &Json) -> ToolOutcome {
    let _ = (ctx, input);
    ToolOutcome::error(format!("the {name} tool is not implemented on this server yet"))
}
