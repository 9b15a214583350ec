//! Where a session's directories live on the host, and the paths the sandbox
//! and the model see them at.
//!
//! Every session owns one directory under the data directory's `sandboxes/`
//! holding its workspace, its uploads (read-only to the agent) and its
//! outputs. The sandbox binds each one at its fixed path; the file tools,
//! which run in the server, resolve the model's paths against the same
//! directories through [`Root`]s, never by string checks.

use std::path::{Path, PathBuf};

use logbook_core::SessionId;

/// The agent's working directory inside the sandbox.
pub const WORKSPACE_DIR: &str = logbook_replay::workspace::WORKSPACE_ROOT;
/// Files-API files mounted as session resources (read-only to the agent).
pub const UPLOADS_DIR: &str = logbook_replay::workspace::UPLOADS_ROOT;
/// Deliverables: captured as session-scoped files when the session idles.
pub const OUTPUTS_DIR: &str = logbook_replay::workspace::OUTPUTS_ROOT;

/// The unprivileged user and group every sandbox runs as (`nobody` on
/// Debian). The session directories and every file the server-side tools
/// create belong to them, so that bash in the sandbox can change what the file
/// tools wrote and the other way round.
pub const SANDBOX_UID: u32 = 65534;
pub const SANDBOX_GID: u32 = 65534;

/// The data directory's subdirectory holding every session's directories.
pub const SANDBOXES_SUBDIR: &str = "sandboxes";

/// Where sessions' directories go when the data directory cannot be reached
/// by the sandbox user (see [`sandboxes_root`]).
pub const FALLBACK_SANDBOXES_DIR: &str = "/var/lib/logbook/sandboxes";

/// The directory holding every session's directories for the data directory
/// `data`: `DATA/sandboxes`, unless a directory above it cannot be traversed
/// by other users (a data directory under `/root`, say), which bubblewrap,
/// running as the sandbox user, needs in order to bind them. Then a directory
/// of [`FALLBACK_SANDBOXES_DIR`] named by a hash of the data directory's
/// canonical path. Sessions' directories are derived data (the log holds the
/// workspace), so they may live outside the data directory.
pub fn sandboxes_root(data: &Path) -> PathBuf {
    let inside = data.join(SANDBOXES_SUBDIR);
    if traversable_by_others(&inside) {
        return inside;
    }
    let canonical = std::fs::canonicalize(data).unwrap_or_else(|_| data.to_owned());
    let hash = blake3::hash(std::os::unix::ffi::OsStrExt::as_bytes(canonical.as_os_str()));
    Path::new(FALLBACK_SANDBOXES_DIR).join(&hash.to_hex()[..16])
}

/// Whether every existing directory above `path` lets other users through
/// (missing ones will be created traversable).
pub fn traversable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.ancestors()
        .skip(1)
        .all(|dir| std::fs::metadata(dir).map_or(true, |meta| meta.permissions().mode() & 0o001 != 0))
}

/// The host directories of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPaths {
    root: PathBuf,
}

impl SessionPaths {
    /// The directories of `session` of the data directory `data` (under
    /// [`sandboxes_root`]).
    pub fn new(data: &Path, session: SessionId) -> SessionPaths {
        SessionPaths { root: sandboxes_root(data).join(session.to_string()) }
    }

    /// The session's own directory (holds the three below and nothing the
    /// agent can see directly).
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn workspace(&self) -> PathBuf {
        self.root.join("workspace")
    }

    pub fn uploads(&self) -> PathBuf {
        self.root.join("uploads")
    }

    pub fn outputs(&self) -> PathBuf {
        self.root.join("outputs")
    }

    /// Host-side sockets of the sandbox (its egress proxy), bound read-only
    /// into the sandbox; not a file-tool root.
    pub fn run(&self) -> PathBuf {
        self.root.join("run")
    }

    /// Creates the session's directories if missing: the session directory
    /// (mode 0700) and the workspace, uploads and outputs in it (0755), all
    /// owned by the sandbox uid (when the server runs as root), and `run`
    /// owned by root. Also makes the `sandboxes/` directory above them
    /// traversable but not listable (0711). An existing session directory
    /// that others can reach, or that the sandbox uid does not own, is made
    /// so (something else may have created it first).
    pub fn create(&self) -> std::io::Result<()> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt, chown};
        let as_root = rustix::process::geteuid().is_root();
        if let Some(parent) = self.root.parent()
            && !parent.exists()
        {
            std::fs::create_dir_all(parent)?;
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o711))?;
        }
        let dirs =
            [(self.root.clone(), 0o700), (self.workspace(), 0o755), (self.uploads(), 0o755), (self.outputs(), 0o755)];
        for (dir, mode) in dirs {
            match std::fs::create_dir(&dir) {
                Ok(()) => {
                    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))?;
                    if as_root {
                        chown(&dir, Some(SANDBOX_UID), Some(SANDBOX_GID))?;
                    }
                }
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists && dir == self.root => {
                    let meta = std::fs::symlink_metadata(&dir)?;
                    if !meta.is_dir() {
                        return Err(std::io::Error::other(format!("{} is not a directory", dir.display())));
                    }
                    if meta.mode() & 0o077 != 0 {
                        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))?;
                    }
                    if as_root && (meta.uid() != SANDBOX_UID || meta.gid() != SANDBOX_GID) {
                        chown(&dir, Some(SANDBOX_UID), Some(SANDBOX_GID))?;
                    }
                }
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(err) => return Err(err),
            }
        }
        match std::fs::create_dir(self.run()) {
            Ok(()) => std::fs::set_permissions(self.run(), std::fs::Permissions::from_mode(0o755)),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// The roots the file tools may act in, the workspace first (relative
    /// paths resolve against it).
    pub fn roots(&self) -> [Root; 3] {
        [
            Root { sandbox_path: WORKSPACE_DIR, host: self.workspace(), writable: true },
            Root { sandbox_path: UPLOADS_DIR, host: self.uploads(), writable: false },
            Root { sandbox_path: OUTPUTS_DIR, host: self.outputs(), writable: true },
        ]
    }
}

/// A directory the agent sees at `sandbox_path` and the server finds at `host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    pub sandbox_path: &'static str,
    pub host: PathBuf,
    pub writable: bool,
}
