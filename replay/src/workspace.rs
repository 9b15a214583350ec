//! The session's files as the log records them: a pure fold of
//! `x.workspace_delta` events into a tree of paths.
//!
//! Paths are the agent's, absolute, under one of the three sandbox
//! directories ([`Area`]): `/workspace/src/main.rs` (what tools changed),
//! `/mnt/session/uploads/data.csv` (mounted files) and
//! `/mnt/session/outputs/report.md` (deliverables). Each delta lists changed
//! paths in the order they were applied: a regular file (its blob hash, size
//! and permission bits), a symbolic link, or a removal. A tree holds only
//! leaves; directories are implied by the paths under them, so an empty
//! directory and a directory's own mode are not recorded. Applying a change
//! keeps the tree consistent whatever came before, as a real file system
//! would have had to be: a path removed or written over takes everything below
//! it, and a leaf written under a path that held a file or a link replaces
//! that ancestor. A path outside the three directories, or not clean (empty
//! parts, `.`, `..`, NUL), is refused. The contents are blobs in the store,
//! fetched by hash (a mounted upload's blob may name its chunks; see the
//! server's `resources::content`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use logbook_core::event::{FileChange, WorkspaceChange, WorkspaceDelta};

/// The agent's working directory.
pub const WORKSPACE_ROOT: &str = "/workspace";
/// Files-API files mounted as session resources.
pub const UPLOADS_ROOT: &str = "/mnt/session/uploads";
/// Deliverables, captured as session-scoped files.
pub const OUTPUTS_ROOT: &str = "/mnt/session/outputs";

/// Which sandbox directory a path is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Area {
    Workspace,
    Uploads,
    Outputs,
}

impl Area {
    pub const ALL: [Area; 3] = [Area::Workspace, Area::Uploads, Area::Outputs];

    /// The directory's absolute sandbox path.
    pub fn root(self) -> &'static str {
        match self {
            Area::Workspace => WORKSPACE_ROOT,
            Area::Uploads => UPLOADS_ROOT,
            Area::Outputs => OUTPUTS_ROOT,
        }
    }
}

/// A path that names no file in a sandbox directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("recorded path {path:?} is not a clean path under {WORKSPACE_ROOT}, {UPLOADS_ROOT} or {OUTPUTS_ROOT}")]
pub struct BadPath {
    pub path: String,
}

/// Splits an absolute sandbox path into its area and its clean relative part.
pub fn split(path: &str) -> Result<(Area, &str), BadPath> {
    let bad = || BadPath { path: path.to_owned() };
    let (area, relative) = Area::ALL
        .into_iter()
        .find_map(|area| {
            path.strip_prefix(area.root()).and_then(|rest| rest.strip_prefix('/')).map(|rest| (area, rest))
        })
        .ok_or_else(bad)?;
    let clean = !relative.is_empty()
        && !relative.contains('\0')
        && relative.split('/').all(|part| !part.is_empty() && part != "." && part != "..");
    if clean { Ok((area, relative)) } else { Err(bad()) }
}

/// The recorded path of `relative` in `area`.
pub fn recorded_path(area: Area, relative: &str) -> String {
    format!("{}/{relative}", area.root())
}

/// What a path holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Node {
    File {
        #[serde(with = "hex")]
        blob: [u8; 32],
        size: u64,
        /// Permission bits only (never setuid, setgid or sticky).
        mode: u32,
    },
    Symlink {
        target: String,
    },
}

/// Every path of the session's directories, in path order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
}

impl Tree {
    /// Applies one change; a bad path changes nothing.
    pub fn apply_change(&mut self, change: &WorkspaceChange) -> Result<(), BadPath> {
        let path = &change.path;
        split(path)?;
        self.remove_under(path);
        match &change.change {
            FileChange::Removed => {}
            FileChange::Written { blob, size, mode } => {
                self.remove_ancestors(path);
                self.nodes.insert(path.clone(), Node::File { blob: *blob, size: *size, mode: *mode & 0o777 });
            }
            FileChange::Symlink { target } => {
                self.remove_ancestors(path);
                self.nodes.insert(path.clone(), Node::Symlink { target: target.clone() });
            }
        }
        Ok(())
    }

    /// Applies every change of `delta` in order, skipping bad paths (a fold
    /// of the log never fails); returns how many were skipped.
    pub fn apply(&mut self, delta: &WorkspaceDelta) -> usize {
        delta.changes.iter().filter(|change| self.apply_change(change).is_err()).count()
    }

    /// Removes `path` and everything below it.
    fn remove_under(&mut self, path: &str) {
        self.nodes.remove(path);
        let prefix = format!("{path}/");
        let below: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for key in below {
            self.nodes.remove(&key);
        }
    }

    /// Removes the leaves at `path`'s ancestors (they must be directories now).
    fn remove_ancestors(&mut self, path: &str) {
        for (idx, _) in path.match_indices('/') {
            if idx > 0 {
                self.nodes.remove(&path[..idx]);
            }
        }
    }

    pub fn nodes(&self) -> &BTreeMap<String, Node> {
        &self.nodes
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.nodes.iter().map(|(path, node)| (path.as_str(), node))
    }

    /// The paths of one area.
    pub fn in_area(&self, area: Area) -> impl Iterator<Item = (&str, &Node)> {
        let prefix = format!("{}/", area.root());
        self.nodes
            .range(prefix.clone()..)
            .take_while(move |(path, _)| path.starts_with(&prefix))
            .map(|(p, n)| (p.as_str(), n))
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Total bytes of the regular files.
    pub fn total_bytes(&self) -> u64 {
        self.nodes
            .values()
            .map(|node| match node {
                Node::File { size, .. } => *size,
                Node::Symlink { .. } => 0,
            })
            .sum()
    }
}

/// The tree the deltas build, applied in order from nothing.
pub fn materialize<'a>(deltas: impl IntoIterator<Item = &'a WorkspaceDelta>) -> Tree {
    let mut tree = Tree::default();
    for delta in deltas {
        tree.apply(delta);
    }
    tree
}

/// serde for 32-byte hashes as 64 lowercase hex characters.
mod hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8; 32], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&crate::audit::to_hex(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 32], D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        crate::audit::parse_hex(&text).ok_or_else(|| serde::de::Error::custom("expected 64 lowercase hex characters"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(changes: Vec<(&str, FileChange)>) -> WorkspaceDelta {
        WorkspaceDelta {
            tool_use_id: None,
            changes: changes
                .into_iter()
                .map(|(path, change)| WorkspaceChange { path: path.to_owned(), change })
                .collect(),
        }
    }

    fn file(n: u8) -> FileChange {
        FileChange::Written { blob: [n; 32], size: u64::from(n), mode: 0o644 }
    }

    #[test]
    fn removing_a_directory_removes_what_is_below_it_only() {
        let mut tree = Tree::default();
        tree.apply(&delta(vec![("/workspace/a/x", file(1)), ("/workspace/a/y", file(2)), ("/workspace/ab", file(3))]));
        tree.apply(&delta(vec![("/workspace/a", FileChange::Removed)]));
        let paths: Vec<&str> = tree.iter().map(|(p, _)| p).collect();
        assert_eq!(paths, ["/workspace/ab"]);
        assert_eq!(tree.total_bytes(), 3);
    }

    #[test]
    fn a_leaf_replaces_what_was_at_and_above_it() {
        let mut tree = Tree::default();
        tree.apply(&delta(vec![("/workspace/d/x", file(1)), ("/mnt/session/uploads/u.csv", file(2))]));
        tree.apply(&delta(vec![("/workspace/d", FileChange::Symlink { target: "/tmp".into() })]));
        assert_eq!(tree.get("/workspace/d"), Some(&Node::Symlink { target: "/tmp".into() }));
        tree.apply(&delta(vec![("/workspace/d/y", file(3))]));
        assert_eq!(tree.get("/workspace/d"), None, "a file under a link's path makes it a directory");
        assert_eq!(tree.in_area(Area::Uploads).count(), 1);
        assert_eq!(tree.in_area(Area::Workspace).count(), 1);
    }

    #[test]
    fn paths_outside_the_sandbox_directories_are_refused() {
        for bad in [
            "src/main.rs",
            "/etc/passwd",
            "/workspace",
            "/workspace/",
            "/workspace/a/../b",
            "/workspace//a",
            "/mnt/session/uploadsx/a",
        ] {
            assert!(split(bad).is_err(), "{bad}");
        }
        let mut tree = Tree::default();
        assert_eq!(tree.apply(&delta(vec![("/etc/passwd", file(1)), ("/workspace/ok", file(2))])), 1);
        assert_eq!(tree.len(), 1);
        assert_eq!(split("/mnt/session/outputs/r.md"), Ok((Area::Outputs, "r.md")));
    }
}
