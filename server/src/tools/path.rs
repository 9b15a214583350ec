//! The model's paths, mapped onto the session's roots: which root a path is
//! in, and the path relative to that root.
//!
//! This is a lexical step only, done the way the sandbox's shell would read
//! the path (relative paths start at the working directory, `.` and empty
//! components vanish, `..` drops the previous component and stops at `/`). It
//! is not what keeps a tool inside its root: every open of the result goes
//! through `openat2` with `RESOLVE_BENEATH` (see `files::confined`), which the
//! kernel enforces whatever this module returns. What this module guarantees
//! is the shape of its output: a root index that exists and a relative path
//! with no empty, `.` or `..` components, no NUL and no leading `/`.
//!
//! Pure and dependency-free (only `std`), so that the fuzz target
//! `fuzz/fuzz_targets/resolve_path.rs` can include it as it is.

use std::fmt;

/// The longest path accepted, in bytes: Linux's `PATH_MAX`, which no
/// syscall would accept beyond anyway.
pub const MAX_PATH_BYTES: usize = 4096;

/// A model path inside one of the roots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPath {
    /// Index into the roots given to [`resolve`].
    pub root: usize,
    /// The path below the root, `/`-separated; empty for the root itself.
    pub rel: String,
}

/// Why a model path was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    Empty,
    TooLong {
        n_bytes: usize,
    },
    Nul,
    /// The path, normalised, is not under any root.
    OutsideRoots {
        normalized: String,
    },
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::Empty => write!(f, "the path is empty"),
            PathError::TooLong { n_bytes } => {
                write!(f, "the path is {n_bytes} bytes long; at most {MAX_PATH_BYTES} are accepted")
            }
            PathError::Nul => write!(f, "the path contains a NUL character"),
            PathError::OutsideRoots { normalized } => write!(f, "{normalized} is outside the session's directories"),
        }
    }
}

impl std::error::Error for PathError {}

/// Maps `input` onto `roots` (absolute sandbox paths such as `/workspace`;
/// relative inputs start at `roots[0]`). The deepest matching root wins.
pub fn resolve(roots: &[&str], input: &str) -> Result<ModelPath, PathError> {
    if input.is_empty() {
        return Err(PathError::Empty);
    }
    if input.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong { n_bytes: input.len() });
    }
    if input.contains('\0') {
        return Err(PathError::Nul);
    }
    let mut stack: Vec<&str> = Vec::new();
    if !input.starts_with('/') {
        let cwd = roots.first().copied().unwrap_or("/");
        push_components(&mut stack, cwd);
    }
    push_components(&mut stack, input);

    let mut best: Option<(usize, usize)> = None;
    for (root_idx, root) in roots.iter().enumerate() {
        let mut root_parts: Vec<&str> = Vec::new();
        push_components(&mut root_parts, root);
        let inside = root_parts.len() <= stack.len() && stack[..root_parts.len()] == root_parts[..];
        if inside && best.is_none_or(|(_, depth)| root_parts.len() > depth) {
            best = Some((root_idx, root_parts.len()));
        }
    }
    match best {
        Some((root, depth)) => Ok(ModelPath { root, rel: stack[depth..].join("/") }),
        None => Err(PathError::OutsideRoots { normalized: format!("/{}", stack.join("/")) }),
    }
}

/// The path the model would use for `rel` under `root`: relative to the
/// working directory (`roots[0]`) when it is there, absolute otherwise.
pub fn display(roots: &[&str], root: usize, rel: &str) -> String {
    let root_path = roots.get(root).copied().unwrap_or("/");
    match (root, rel.is_empty()) {
        (0, true) => ".".to_owned(),
        (0, false) => rel.to_owned(),
        (_, true) => root_path.to_owned(),
        (_, false) => format!("{}/{rel}", root_path.trim_end_matches('/')),
    }
}

/// Applies `path`'s components to `stack` the way a shell reads them.
fn push_components<'a>(stack: &mut Vec<&'a str>, path: &'a str) {
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                stack.pop();
            }
            name => stack.push(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOTS: [&str; 3] = ["/workspace", "/mnt/session/uploads", "/mnt/session/outputs"];

    fn ok(input: &str) -> (usize, String) {
        match resolve(&ROOTS, input) {
            Ok(path) => (path.root, path.rel),
            Err(err) => panic!("{input}: {err}"),
        }
    }

    #[test]
    fn maps_paths_onto_roots() {
        assert_eq!(ok("a.txt"), (0, "a.txt".to_owned()));
        assert_eq!(ok("./a//b/./c"), (0, "a/b/c".to_owned()));
        assert_eq!(ok("."), (0, String::new()));
        assert_eq!(ok("/workspace"), (0, String::new()));
        assert_eq!(ok("/workspace/"), (0, String::new()));
        assert_eq!(ok("/workspace/src/../lib.rs"), (0, "lib.rs".to_owned()));
        assert_eq!(ok("/mnt/session/uploads/data.csv"), (1, "data.csv".to_owned()));
        assert_eq!(ok("/mnt/session/outputs/r/x.md"), (2, "r/x.md".to_owned()));
        assert_eq!(ok("../mnt/session/outputs/x"), (2, "x".to_owned()));
        assert_eq!(ok("/workspace/../mnt/session/outputs/x"), (2, "x".to_owned()));
        assert_eq!(ok("//workspace///a"), (0, "a".to_owned()));
    }

    #[test]
    fn refuses_paths_outside_every_root() {
        for input in [
            "/etc/passwd",
            "../etc/passwd",
            "..",
            "/",
            "/workspacex/a",
            "/mnt/session",
            "/mnt/session/uploadsx",
            "/../..",
        ] {
            assert!(
                matches!(resolve(&ROOTS, input), Err(PathError::OutsideRoots { .. })),
                "{input} must be outside the roots"
            );
        }
        assert_eq!(resolve(&ROOTS, ""), Err(PathError::Empty));
        assert_eq!(resolve(&ROOTS, "a\0b"), Err(PathError::Nul));
        assert!(matches!(resolve(&ROOTS, &"a/".repeat(3000)), Err(PathError::TooLong { .. })));
    }

    #[test]
    fn displays_workspace_paths_relative() {
        assert_eq!(display(&ROOTS, 0, "src/a.rs"), "src/a.rs");
        assert_eq!(display(&ROOTS, 0, ""), ".");
        assert_eq!(display(&ROOTS, 2, "x.md"), "/mnt/session/outputs/x.md");
        assert_eq!(display(&ROOTS, 1, ""), "/mnt/session/uploads");
    }
}
