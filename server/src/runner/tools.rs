//! Tool execution as the runner sees it: the [`ToolExecutor`] trait, so the
//! sandboxed built-in toolset (`crate::sandbox::SandboxTools`: bash in the
//! session's sandbox, the file and web tools in the server) plugs in, and the
//! stand-ins used without it.
//!
//! There is no unsandboxed fallback: [`UnavailableTools`] answers every
//! built-in call with an error result saying the tool is not available. The
//! `echo` executor exists for tests of the runner only (it runs nothing; it
//! returns its input), and must be chosen explicitly.

use std::future::Future;
use std::pin::Pin;

use logbook_core::event::{ContentBlock, WorkspaceChange};
use logbook_core::{Entry, EventId, Json, SessionId};

use crate::api::environments::Environment;
use crate::api::tools::Tool;

/// What a tool call produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutcome {
    pub content: Vec<ContentBlock>,
    pub is_error: bool,
}

impl ToolOutcome {
    pub fn error(message: impl Into<String>) -> ToolOutcome {
        ToolOutcome { content: vec![ContentBlock::Text { text: message.into() }], is_error: true }
    }

    pub fn text(text: impl Into<String>) -> ToolOutcome {
        ToolOutcome { content: vec![ContentBlock::Text { text: text.into() }], is_error: false }
    }

    /// This outcome with `note` as its first text (joined to a leading text
    /// block by a blank line), for something the model must hear first.
    pub fn with_preamble(mut self, note: &str) -> ToolOutcome {
        if let Some(ContentBlock::Text { text }) = self.content.first_mut() {
            *text = format!("{note}\n\n{text}");
        } else {
            self.content.insert(0, ContentBlock::Text { text: note.to_owned() });
        }
        self
    }
}

/// A boxed future (object-safe async).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// A boxed tool future.
pub type ToolFuture<'a> = BoxFuture<'a, ToolOutcome>;

/// One built-in tool call and what it may need to know about its session.
#[derive(Debug, Clone, Copy)]
pub struct ToolCall<'a> {
    pub session: SessionId,
    /// The `agent.tool_use` event of the call.
    pub tool_use_id: EventId,
    pub name: &'a str,
    pub input: &'a Json,
    /// The session's resolved agent tools (tool configs, web tool settings).
    pub agent_tools: &'a [Tool],
    /// The session's environment (networking, packages), when it could be
    /// loaded; a sandbox refuses to start without it.
    pub environment: Option<&'a Environment>,
    /// The session's log so far.
    pub log: &'a [Entry],
}

/// Why the workspace changes of a call could not be recorded.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ChangesError(pub String);

/// Runs built-in tool calls and reports what they changed in the workspace.
pub trait ToolExecutor: Send + Sync + std::fmt::Debug {
    /// Runs one call. Cancelled (dropped) on interrupt: an executor must then
    /// leave nothing running that the next call could trip over.
    fn run<'a>(&'a self, call: &'a ToolCall<'a>) -> ToolFuture<'a>;

    /// What changed in the session's workspace and outputs since the last
    /// time this was asked (contents already stored as blobs); `log` is the
    /// session's log, from which the executor can rebuild what it knew.
    fn workspace_changes<'a>(
        &'a self,
        session: SessionId,
        log: &'a [Entry],
    ) -> BoxFuture<'a, Result<Vec<WorkspaceChange>, ChangesError>> {
        let _ = (session, log);
        Box::pin(async { Ok(Vec::new()) })
    }

    /// `outcome` with its text, when over 100,000 characters (its text
    /// blocks together), replaced by one preview, the whole text saved to
    /// the session's workspace when the executor has one (MCP results; the
    /// built-in tools do this themselves). Without a workspace the rest is left out, and the preview
    /// says so.
    fn save_large_outputs(&self, session: SessionId, outcome: ToolOutcome) -> BoxFuture<'_, ToolOutcome> {
        let _ = session;
        Box::pin(async move {
            crate::tools::spill::preview_large_outputs(outcome, "this server keeps no workspace for the session")
        })
    }

    /// The session ended (archived or deleted): release what it holds.
    /// Resolves once nothing of it runs any more.
    fn end_session(&self, session: SessionId) -> BoxFuture<'_, ()> {
        let _ = session;
        Box::pin(async {})
    }

    /// The server is shutting down: stop everything still running.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// The server without a sandbox: every built-in tool call fails clearly.
#[derive(Debug, Default)]
pub struct UnavailableTools;

impl ToolExecutor for UnavailableTools {
    fn run<'a>(&'a self, call: &'a ToolCall<'a>) -> ToolFuture<'a> {
        Box::pin(async move {
            ToolOutcome::error(format!(
                "the {} tool is not available on this server: no sandbox is configured for built-in tools",
                call.name
            ))
        })
    }
}

/// For runner tests: answers every call with its own input as text, and the
/// tool `fail` with an error. Runs nothing. A `bash` call whose input holds
/// [`ECHO_PANIC_COMMAND`] panics, as a bug in a tool would.
#[derive(Debug, Default)]
pub struct EchoTools;

/// The `bash` command [`EchoTools`] panics on.
pub const ECHO_PANIC_COMMAND: &str = "logbook-test-panic";

impl ToolExecutor for EchoTools {
    fn run<'a>(&'a self, call: &'a ToolCall<'a>) -> ToolFuture<'a> {
        Box::pin(async move {
            if call.name == "fail" {
                return ToolOutcome::error("echo: the fail tool always fails");
            }
            #[allow(clippy::panic, reason = "a test tool set, panicking on purpose")]
            if call.name == "bash" && call.input.to_string().contains(ECHO_PANIC_COMMAND) {
                panic!("echo: the bash command {ECHO_PANIC_COMMAND} panics");
            }
            ToolOutcome::text(format!("{}: {}", call.name, call.input))
        })
    }
}
