//! The file tools (`read`, `write`, `edit`, `glob`, `grep`), acting on the
//! session's directories from the server.
//!
//! A model path is first mapped onto one of the session's roots
//! ([`super::path`]: `/workspace`, which relative paths start from,
//! `/mnt/session/uploads`, read-only, and `/mnt/session/outputs`), then every
//! file system access below that root goes through [`confined`], where the
//! kernel keeps it there. The tools block (file IO), so [`super::run`] calls
//! them on tokio's blocking pool. Their contract is the SDK reference
//! implementation's (managed-agents-behaviour.md §8.3): its limits, its result
//! texts (`wrote N bytes to <path>`, `no matches`) and its error texts
//! (`edit: old_string appears N times in <path> (must be unique)`).

pub(crate) mod confined;
mod glob;
mod grep;
mod read;
pub(crate) mod walk;
mod write;

use serde::de::DeserializeOwned;
use serde_json::Value;

pub(crate) use glob::glob;
pub(crate) use grep::{MAX_LINE_CHARS, grep};
pub(crate) use read::{MAX_IMAGE_BASE64_BYTES, MAX_PDF_BYTES, read};
pub(crate) use write::{edit, write};

use self::confined::RootDir;
use super::path;
use crate::runner::ToolOutcome;
use crate::sandbox::layout::{Root, SessionPaths};

/// The session's roots as the file tools use them.
#[derive(Debug, Clone)]
pub(crate) struct Roots {
    roots: Vec<Root>,
    sandbox_paths: Vec<&'static str>,
    /// Entries a glob or grep walk visits at most.
    pub(crate) walk_limit: usize,
}

/// A model path resolved to an open root and a path below it.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) dir: RootDir,
    pub(crate) root: usize,
    /// Below the root, `/`-separated, no `.`/`..`/empty components; empty for the root.
    pub(crate) rel: String,
}

impl Roots {
    pub(crate) fn new(paths: &SessionPaths) -> Roots {
        let roots = paths.roots().to_vec();
        let sandbox_paths = roots.iter().map(|root| root.sandbox_path).collect();
        Roots { roots, sandbox_paths, walk_limit: walk::MAX_WALK_ENTRIES }
    }

    /// For tests: a smaller walk limit, so that reaching it needs few files.
    #[cfg(test)]
    pub(crate) fn with_walk_limit(mut self, walk_limit: usize) -> Roots {
        self.walk_limit = walk_limit;
        self
    }

    /// Maps `input` onto a root and opens the root.
    pub(crate) fn resolve(&self, input: &str) -> Result<Target, String> {
        let model_path = path::resolve(&self.sandbox_paths, input).map_err(|err| err.to_string())?;
        let dir = self.open_root(model_path.root)?;
        Ok(Target { dir, root: model_path.root, rel: model_path.rel })
    }

    /// The working directory's root (`/workspace`).
    pub(crate) fn workspace(&self) -> Result<Target, String> {
        Ok(Target { dir: self.open_root(0)?, root: 0, rel: String::new() })
    }

    /// How the model sees `rel` below root `root`.
    pub(crate) fn display(&self, root: usize, rel: &str) -> String {
        path::display(&self.sandbox_paths, root, rel)
    }

    fn open_root(&self, index: usize) -> Result<RootDir, String> {
        let root = self.roots.get(index).ok_or_else(|| "internal error: no such root".to_owned())?;
        RootDir::at(&root.host, root.sandbox_path, root.writable).map_err(|err| match err {
            confined::FileError::NotFound => format!("{} does not exist in this session", root.sandbox_path),
            other @ (confined::FileError::NotADirectory
            | confined::FileError::IsADirectory
            | confined::FileError::NotRegular { .. }
            | confined::FileError::HardLinked { .. }
            | confined::FileError::Escapes
            | confined::FileError::Symlink
            | confined::FileError::DanglingSymlink
            | confined::FileError::ReadOnly { .. }
            | confined::FileError::PermissionDenied
            | confined::FileError::Busy
            | confined::FileError::Io(_)) => format!("{}: {other}", root.sandbox_path),
        })
    }
}

/// Parses a tool's input, or says what is wrong with it.
pub(crate) fn parse_input<T: DeserializeOwned>(tool: &str, input: &Value) -> Result<T, ToolOutcome> {
    serde_json::from_value(input.clone()).map_err(|err| ToolOutcome::error(format!("{tool}: invalid input: {err}")))
}

/// A successful text result.
pub(crate) fn text(text: impl Into<String>) -> ToolOutcome {
    ToolOutcome { content: vec![logbook_core::event::ContentBlock::Text { text: text.into() }], is_error: false }
}
