//! Tool execution as the runner sees it: a trait, so that the sandboxed
//! built-in toolset (bash, read, write, ...) can plug in, and what the server
//! does until a sandbox is configured.
//!
//! There is no unsandboxed fallback: [`UnavailableTools`] answers every
//! built-in call with an error result saying the tool is not available. The
//! `echo` executor exists for tests of the runner only (it runs nothing; it
//! returns its input), and must be chosen explicitly.

use std::future::Future;
use std::pin::Pin;

use logbook_core::Json;
use logbook_core::event::ContentBlock;

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
}

/// A boxed tool future (object-safe async).
pub type ToolFuture<'a> = Pin<Box<dyn Future<Output = ToolOutcome> + Send + 'a>>;

/// Runs built-in and MCP tool calls.
pub trait ToolExecutor: Send + Sync + std::fmt::Debug {
    /// Runs `name` with `input` for `session`. Cancelled (dropped) on interrupt.
    fn run<'a>(&'a self, session: logbook_core::SessionId, name: &'a str, input: &'a Json) -> ToolFuture<'a>;
}

/// The server without a sandbox: every built-in tool call fails clearly.
#[derive(Debug, Default)]
pub struct UnavailableTools;

impl ToolExecutor for UnavailableTools {
    fn run<'a>(&'a self, _session: logbook_core::SessionId, name: &'a str, _input: &'a Json) -> ToolFuture<'a> {
        Box::pin(async move {
            ToolOutcome::error(format!(
                "the {name} tool is not available on this server: no sandbox is configured for built-in tools"
            ))
        })
    }
}

/// For runner tests: answers every call with its own input as text, and the
/// tool `fail` with an error. Runs nothing.
#[derive(Debug, Default)]
pub struct EchoTools;

impl ToolExecutor for EchoTools {
    fn run<'a>(&'a self, _session: logbook_core::SessionId, name: &'a str, input: &'a Json) -> ToolFuture<'a> {
        Box::pin(async move {
            if name == "fail" {
                return ToolOutcome::error("echo: the fail tool always fails");
            }
            ToolOutcome { content: vec![ContentBlock::Text { text: format!("{name}: {input}") }], is_error: false }
        })
    }
}
