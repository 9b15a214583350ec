//! The workspace as the log says it is: a [`Tree`] folded from
//! `x.workspace_delta` events ([`materialize`]), and [`write_tree`], which
//! writes a tree out to a session's directories (for state at a seq and for
//! forks).
//!
//! Paths in deltas are the agent's view: relative to `/workspace` for the
//! workspace (`src/main.rs`), and absolute under `/mnt/session/outputs/` for
//! outputs (`/mnt/session/outputs/report.pdf`). A tree holds only leaves
//! (regular files and symlinks); directories are implied by the paths under
//! them, so an empty directory and a directory's own mode are not recorded.
//! Applying a change makes the tree consistent whatever came before: a path
//! written over a file's former descendants removes them, and a file written
//! under a path that held a file or symlink replaces that ancestor, as a real
//! file system would have had to.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use logbook_core::event::{Event, FileChange, WorkspaceChange, WorkspaceDelta};
use logbook_core::{Digest, Entry};
use logbook_store::Blobs;

use crate::sandbox::layout::OUTPUTS_DIR;

/// A leaf of the workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A regular file: its content's blob (blake3), size and permission bits.
    File {
        blob: [u8; 32],
        size: u64,
        mode: u32,
    },
    Symlink {
        target: String,
    },
}

/// Which of the session's directories a recorded path is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    Workspace,
    Outputs,
}

/// The workspace and outputs at some point of the log, by recorded path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
}

/// A delta that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error("recorded path {path:?} is not a clean relative workspace path or a path under {OUTPUTS_DIR}")]
    BadPath { path: String },
}

/// Writing a tree out failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{path} is not empty: a tree is written only into empty directories")]
    NotEmpty { path: PathBuf },
    #[error("blob {blob} of {path:?} is missing from the store")]
    MissingBlob { path: String, blob: String },
    #[error("blob {blob} of {path:?} has {actual} bytes, the delta says {recorded}")]
    SizeMismatch { path: String, blob: String, recorded: u64, actual: u64 },
    #[error("reading blob {blob}: {source}")]
    Store { blob: String, source: logbook_store::Error },
    #[error("writing {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl Tree {
    /// Applies one change.
    pub fn apply(&mut self, change: &WorkspaceChange) -> Result<(), TreeError> {
        let path = &change.path;
        check_path(path)?;
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

    /// Applies every change of `delta`, in order.
    pub fn apply_delta(&mut self, delta: &WorkspaceDelta) -> Result<(), TreeError> {
        delta.changes.iter().try_for_each(|change| self.apply(change))
    }

    pub fn nodes(&self) -> &BTreeMap<String, Node> {
        &self.nodes
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Removes `path` and everything below it.
    fn remove_under(&mut self, path: &str) {
        self.nodes.remove(path);
        let prefix = format!("{path}/");
        let below: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(&prefix))
            .map(|(key, _)| key.clone())
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
}

/// The tree the deltas build, applied in order from an empty workspace.
pub fn materialize<'a>(deltas: impl IntoIterator<Item = &'a WorkspaceDelta>) -> Result<Tree, TreeError> {
    let mut tree = Tree::default();
    for delta in deltas {
        tree.apply_delta(delta)?;
    }
    Ok(tree)
}

/// The tree of a session's log (its `x.workspace_delta` events, in order).
pub fn materialize_entries(entries: &[Entry]) -> Result<Tree, TreeError> {
    materialize(
        entries
            .iter()
            .filter_map(|entry| if let Event::WorkspaceDelta(delta) = &entry.event { Some(delta) } else { None }),
    )
}

/// Splits a recorded path into its area and its path relative to the area.
pub fn split(path: &str) -> Result<(Area, &str), TreeError> {
    check_path(path)?;
    match path.strip_prefix(OUTPUTS_DIR).and_then(|rest| rest.strip_prefix('/')) {
        Some(rest) => Ok((Area::Outputs, rest)),
        None => Ok((Area::Workspace, path)),
    }
}

/// The recorded path of `relative` in `area`.
pub fn recorded_path(area: Area, relative: &str) -> String {
    match area {
        Area::Workspace => relative.to_owned(),
        Area::Outputs => format!("{OUTPUTS_DIR}/{relative}"),
    }
}

fn check_path(path: &str) -> Result<(), TreeError> {
    let bad = || TreeError::BadPath { path: path.to_owned() };
    let relative = match path.strip_prefix('/') {
        Some(_) => path.strip_prefix(OUTPUTS_DIR).and_then(|rest| rest.strip_prefix('/')).ok_or_else(bad)?,
        None => path,
    };
    let clean = !relative.is_empty()
        && !relative.contains('\0')
        && relative.split('/').all(|part| !part.is_empty() && part != "." && part != "..");
    if clean { Ok(()) } else { Err(bad()) }
}

/// Writes `tree` into `workspace` and `outputs` (created if missing, else
/// required to be empty), reading contents from `blobs`. Files get their
/// recorded permission bits (never setuid, setgid or sticky); with `owner`,
/// every created file, link and directory is given to that uid and gid.
pub fn write_tree(
    tree: &Tree,
    blobs: &dyn Blobs,
    workspace: &Path,
    outputs: &Path,
    owner: Option<(u32, u32)>,
) -> Result<(), WriteError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, lchown, symlink};
    for root in [workspace, outputs] {
        let io = |source| WriteError::Io { path: root.to_owned(), source };
        std::fs::create_dir_all(root).map_err(io)?;
        if std::fs::read_dir(root).map_err(io)?.next().is_some() {
            return Err(WriteError::NotEmpty { path: root.to_owned() });
        }
        if let Some((uid, gid)) = owner {
            lchown(root, Some(uid), Some(gid)).map_err(io)?;
        }
    }
    for (path, node) in &tree.nodes {
        // The tree was checked when built: each path splits cleanly, and no
        // leaf is an ancestor of another, so no symlink is ever traversed here.
        let Ok((area, relative)) = split(path) else { continue };
        let root = match area {
            Area::Workspace => workspace,
            Area::Outputs => outputs,
        };
        let mut dir = root.to_owned();
        let mut parts: Vec<&str> = relative.split('/').collect();
        let name = parts.pop().unwrap_or_default();
        for part in parts {
            dir.push(part);
            match std::fs::create_dir(&dir) {
                Ok(()) => {
                    if let Some((uid, gid)) = owner {
                        lchown(&dir, Some(uid), Some(gid))
                            .map_err(|source| WriteError::Io { path: dir.clone(), source })?;
                    }
                }
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(source) => return Err(WriteError::Io { path: dir, source }),
            }
        }
        let target_path = dir.join(name);
        let io = |source| WriteError::Io { path: target_path.clone(), source };
        match node {
            Node::File { blob, size, mode } => {
                let digest = Digest::from_bytes(*blob);
                let bytes = blobs
                    .get_blob(digest)
                    .map_err(|source| WriteError::Store { blob: digest.to_hex(), source })?
                    .ok_or_else(|| WriteError::MissingBlob { path: path.clone(), blob: digest.to_hex() })?;
                if bytes.len() as u64 != *size {
                    return Err(WriteError::SizeMismatch {
                        path: path.clone(),
                        blob: digest.to_hex(),
                        recorded: *size,
                        actual: bytes.len() as u64,
                    });
                }
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .open(&target_path)
                    .map_err(io)?;
                file.write_all(&bytes).map_err(io)?;
                file.set_permissions(std::fs::Permissions::from_mode(mode & 0o777)).map_err(io)?;
                if let Some((uid, gid)) = owner {
                    rustix::fs::fchown(
                        &file,
                        Some(rustix::fs::Uid::from_raw(uid)),
                        Some(rustix::fs::Gid::from_raw(gid)),
                    )
                    .map_err(|err| io(err.into()))?;
                }
            }
            Node::Symlink { target } => {
                symlink(target, &target_path).map_err(io)?;
                if let Some((uid, gid)) = owner {
                    lchown(&target_path, Some(uid), Some(gid)).map_err(io)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "tree_tests.rs"]
mod tests;
