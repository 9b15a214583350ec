//! The workspace as the log says it is, written out: [`write_tree`] writes a
//! tree (`logbook_replay::workspace`, folded from `x.workspace_delta` events)
//! to a session's directories, for forks and state at a seq.
//!
//! The tree itself, its paths (absolute sandbox paths under `/workspace`,
//! `/mnt/session/uploads` and `/mnt/session/outputs`) and its rules are the
//! replay crate's, so the server and every projection agree on them.

use std::path::{Path, PathBuf};

use logbook_core::event::Event;
use logbook_core::{Digest, Entry};
use logbook_store::Blobs;

use crate::resources::content::{ContentError, copy_to};

pub use logbook_replay::workspace::{Area, BadPath, Node, Tree, materialize, recorded_path, split};

/// Writing a tree out failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{path} is not empty: a tree is written only into empty directories")]
    NotEmpty { path: PathBuf },
    #[error("blob {blob} of {path:?} is missing from the store")]
    MissingBlob { path: String, blob: String },
    #[error("blob {blob} of {path:?} does not hold the {recorded} bytes the delta says")]
    SizeMismatch { path: String, blob: String, recorded: u64 },
    #[error("reading blob {blob}: {source}")]
    Store { blob: String, source: logbook_store::Error },
    #[error("writing {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// The tree of a session's log (its `x.workspace_delta` events, in order).
pub fn materialize_entries(entries: &[Entry]) -> Tree {
    materialize(
        entries
            .iter()
            .filter_map(|entry| if let Event::WorkspaceDelta(delta) = &entry.event { Some(delta) } else { None }),
    )
}

/// Writes `tree`'s workspace and outputs into `workspace` and `outputs`
/// (created if missing, else required to be empty), reading contents from
/// `blobs` (chunked ones one chunk at a time); its uploads are mounted files, which `resources::mount` writes. Files get their
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
    for (path, node) in tree.nodes() {
        // The tree was checked when built: each path splits cleanly, and no
        // leaf is an ancestor of another, so no symlink is ever traversed here.
        let Ok((area, relative)) = split(path) else { continue };
        let root = match area {
            Area::Workspace => workspace,
            Area::Outputs => outputs,
            Area::Uploads => continue,
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
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .open(&target_path)
                    .map_err(io)?;
                copy_to(blobs, digest, *size, &mut file).map_err(|err| match err {
                    ContentError::Missing(_) => WriteError::MissingBlob { path: path.clone(), blob: digest.to_hex() },
                    ContentError::Store(source) => WriteError::Store { blob: digest.to_hex(), source },
                    ContentError::Sink(source) => WriteError::Io { path: target_path.clone(), source },
                    ContentError::BadManifest(_) | ContentError::TooLarge { .. } | ContentError::Source(_) => {
                        WriteError::SizeMismatch { path: path.clone(), blob: digest.to_hex(), recorded: *size }
                    }
                })?;
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
