//! The session's files as the log records them: a pure fold of
//! `x.workspace_delta` events into a tree of paths.
//!
//! Each delta lists changed paths in the order they were applied: a regular
//! file (its blob hash, size and mode), a symbolic link, or a removal. A
//! removal takes the path and everything below it (a removed directory). The
//! tree holds no directories of its own: a directory exists while a path
//! below it does. The contents are blobs in the store, fetched by hash.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use logbook_core::event::{FileChange, WorkspaceDelta};

/// What a path holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Node {
    File {
        #[serde(with = "hex")]
        blob: [u8; 32],
        size: u64,
        mode: u32,
    },
    Symlink {
        target: String,
    },
}

/// Every path of the workspace, in path order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
}

impl Tree {
    pub fn apply(&mut self, delta: &WorkspaceDelta) {
        for change in &delta.changes {
            match &change.change {
                FileChange::Written { blob, size, mode } => {
                    self.remove_below(&change.path);
                    self.nodes.insert(change.path.clone(), Node::File { blob: *blob, size: *size, mode: *mode });
                }
                FileChange::Symlink { target } => {
                    self.remove_below(&change.path);
                    self.nodes.insert(change.path.clone(), Node::Symlink { target: target.clone() });
                }
                FileChange::Removed => {
                    self.nodes.remove(&change.path);
                    self.remove_below(&change.path);
                }
            }
        }
    }

    /// Removes every path strictly below `path`.
    fn remove_below(&mut self, path: &str) {
        let prefix = format!("{}/", path.trim_end_matches('/'));
        let below: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .map(|(p, _)| p.clone())
            .collect();
        for path in below {
            self.nodes.remove(&path);
        }
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.nodes.iter().map(|(path, node)| (path.as_str(), node))
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
    use logbook_core::event::WorkspaceChange;

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
    fn a_file_replacing_a_directory_drops_its_contents() {
        let mut tree = Tree::default();
        tree.apply(&delta(vec![("/workspace/d/x", file(1))]));
        tree.apply(&delta(vec![("/workspace/d", FileChange::Symlink { target: "/tmp".into() })]));
        assert_eq!(tree.len(), 1);
        assert_eq!(tree.get("/workspace/d"), Some(&Node::Symlink { target: "/tmp".into() }));
    }
}
