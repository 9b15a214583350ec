//! Mount paths: where a resource goes in the sandbox, and putting a file
//! there.
//!
//! A file resource's `mount_path` is rooted at `/mnt/session/uploads`, as on
//! the hosted service: `/data.csv` and `data.csv` both mean
//! `/mnt/session/uploads/data.csv`, and a path that already starts with
//! `/mnt/session/uploads/` is taken as written. An absolute path naming
//! another directory of the sandbox's file system (`/workspace/...`,
//! `/mnt/session/outputs/...`, `/etc/...`, `/tmp/...`: any of
//! [`SANDBOX_TOP_DIRS`]) is refused rather than silently moved under
//! uploads, and so is any `..` component. A repository's `mount_path` must be
//! under `/workspace` (relative paths are rooted there); the default is
//! `/workspace/<repo>`. These checks give clear 400s; the confinement itself
//! is the kernel's (see `confine`), which also refuses symbolic links on the
//! way.

use std::collections::BTreeMap;

use logbook_core::event::{FileChange, WorkspaceChange};
use logbook_core::{Digest, FileId};
use logbook_replay::resources::RecordedFile;
use logbook_store::SledStore;

use super::confine::{ConfineError, Root};
use super::content::{self, Content, ContentError};
use crate::sandbox::layout::{UPLOADS_DIR, WORKSPACE_DIR};

/// Longest `mount_path` accepted (the API's documented maximum).
pub const MAX_MOUNT_PATH_BYTES: usize = 4096;
/// Longest path component (Linux `NAME_MAX`).
pub const MAX_COMPONENT_BYTES: usize = 255;
/// Most components below the uploads or workspace directory: deep enough for
/// any real layout, and a bound on the directories one mount creates.
pub const MAX_MOUNT_DEPTH: usize = 32;
/// Mode of a mounted file: read-only for everyone (the sandbox also binds the
/// uploads directory read-only).
pub const MOUNTED_FILE_MODE: u32 = 0o444;

/// Top-level directories of the sandbox's file system: an absolute
/// `mount_path` starting with one of them names a place outside the uploads
/// directory and is refused.
pub const SANDBOX_TOP_DIRS: [&str; 19] = [
    "mnt",
    "workspace",
    "tmp",
    "etc",
    "usr",
    "bin",
    "sbin",
    "lib",
    "lib32",
    "lib64",
    "proc",
    "sys",
    "dev",
    "home",
    "root",
    "var",
    "opt",
    "run",
    "srv",
];

/// The sandbox directory a mount path is below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    Uploads,
    Workspace,
}

impl Area {
    pub fn sandbox_dir(self) -> &'static str {
        match self {
            Area::Uploads => UPLOADS_DIR,
            Area::Workspace => WORKSPACE_DIR,
        }
    }
}

/// A validated place below the uploads or workspace directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPath {
    area: Area,
    components: Vec<String>,
}

/// Why a `mount_path` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountPathError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_MOUNT_PATH_BYTES} bytes")]
    TooLong,
    #[error("{0:?} must not contain `..`")]
    DotDot(String),
    #[error("{path:?} is outside {dir}")]
    Outside { path: String, dir: &'static str },
    #[error("{0:?} must name a file or directory below {1}, not {1} itself")]
    NamesRoot(String, &'static str),
    #[error("{0:?} has a component longer than {MAX_COMPONENT_BYTES} bytes")]
    LongComponent(String),
    #[error("{0:?} is nested deeper than {MAX_MOUNT_DEPTH} directories")]
    TooDeep(String),
    #[error("{0:?} contains a control character")]
    Control(String),
}

impl MountPath {
    /// The absolute sandbox path, e.g. `/mnt/session/uploads/data.csv`.
    pub fn absolute(&self) -> String {
        let mut out = self.area.sandbox_dir().to_owned();
        for component in &self.components {
            out.push('/');
            out.push_str(component);
        }
        out
    }

    pub fn area(&self) -> Area {
        self.area
    }

    pub fn components(&self) -> Vec<&str> {
        self.components.iter().map(String::as_str).collect()
    }

    /// Whether two mounts would collide: the same path, or one inside the other.
    pub fn overlaps(&self, other: &MountPath) -> bool {
        let n = self.components.len().min(other.components.len());
        self.area == other.area && self.components[..n] == other.components[..n]
    }

    /// Parses an absolute sandbox path as recorded in the log.
    pub fn from_absolute(path: &str) -> Option<MountPath> {
        for area in [Area::Uploads, Area::Workspace] {
            if let Some(rest) = path.strip_prefix(area.sandbox_dir()).and_then(|rest| rest.strip_prefix('/')) {
                return components(rest)
                    .ok()
                    .filter(|c| !c.is_empty())
                    .map(|components| MountPath { area, components });
            }
        }
        None
    }
}

/// The mount path of a file resource: `raw` rooted at the uploads directory,
/// or `<uploads>/<file_id>` when absent.
pub fn upload_path(raw: Option<&str>, file_id: FileId) -> Result<MountPath, MountPathError> {
    let Some(raw) = raw else {
        return Ok(MountPath { area: Area::Uploads, components: vec![file_id.to_string()] });
    };
    check_text(raw)?;
    let rest = match strip_dir(raw, UPLOADS_DIR) {
        Some(rest) => rest,
        None => {
            let first = raw.split('/').find(|c| !c.is_empty() && *c != ".");
            if raw.starts_with('/') && first.is_some_and(|first| SANDBOX_TOP_DIRS.contains(&first)) {
                return Err(MountPathError::Outside { path: raw.to_owned(), dir: UPLOADS_DIR });
            }
            raw
        }
    };
    let components = components(rest).map_err(|err| err.with_path(raw))?;
    if components.is_empty() {
        return Err(MountPathError::NamesRoot(raw.to_owned(), UPLOADS_DIR));
    }
    Ok(MountPath { area: Area::Uploads, components })
}

/// The mount path of a repository: `raw` under the workspace (relative paths
/// rooted there), or `<workspace>/<repo_name>` when absent.
pub fn repository_path(raw: Option<&str>, repo_name: &str) -> Result<MountPath, MountPathError> {
    let Some(raw) = raw else {
        // The repository's name is the path: held to the rules of a given one.
        if repo_name.len() > MAX_COMPONENT_BYTES {
            return Err(MountPathError::LongComponent(format!("{WORKSPACE_DIR}/{repo_name}")));
        }
        return Ok(MountPath { area: Area::Workspace, components: vec![repo_name.to_owned()] });
    };
    check_text(raw)?;
    let rest = match strip_dir(raw, WORKSPACE_DIR) {
        Some(rest) => rest,
        None if raw.starts_with('/') => {
            return Err(MountPathError::Outside { path: raw.to_owned(), dir: WORKSPACE_DIR });
        }
        None => raw,
    };
    let components = components(rest).map_err(|err| err.with_path(raw))?;
    if components.is_empty() {
        return Err(MountPathError::NamesRoot(raw.to_owned(), WORKSPACE_DIR));
    }
    Ok(MountPath { area: Area::Workspace, components })
}

impl MountPathError {
    fn with_path(self, raw: &str) -> MountPathError {
        let raw = raw.to_owned();
        match self {
            MountPathError::DotDot(_) => MountPathError::DotDot(raw),
            MountPathError::LongComponent(_) => MountPathError::LongComponent(raw),
            MountPathError::TooDeep(_) => MountPathError::TooDeep(raw),
            other @ (MountPathError::Empty
            | MountPathError::TooLong
            | MountPathError::Outside { .. }
            | MountPathError::NamesRoot(..)
            | MountPathError::Control(_)) => other,
        }
    }
}

fn check_text(raw: &str) -> Result<(), MountPathError> {
    if raw.is_empty() {
        return Err(MountPathError::Empty);
    }
    if raw.len() > MAX_MOUNT_PATH_BYTES {
        return Err(MountPathError::TooLong);
    }
    if raw.chars().any(char::is_control) {
        return Err(MountPathError::Control(raw.to_owned()));
    }
    Ok(())
}

/// `raw` below `dir` (`dir` itself gives ""), if it starts with it.
fn strip_dir<'a>(raw: &'a str, dir: &str) -> Option<&'a str> {
    let rest = raw.strip_prefix(dir)?;
    if rest.is_empty() {
        return Some("");
    }
    rest.strip_prefix('/')
}

fn components(rest: &str) -> Result<Vec<String>, MountPathError> {
    let mut out = Vec::new();
    for component in rest.split('/') {
        match component {
            "" | "." => {}
            ".." => return Err(MountPathError::DotDot(rest.to_owned())),
            other if other.len() > MAX_COMPONENT_BYTES => {
                return Err(MountPathError::LongComponent(rest.to_owned()));
            }
            other => out.push(other.to_owned()),
        }
    }
    if out.len() > MAX_MOUNT_DEPTH {
        return Err(MountPathError::TooDeep(rest.to_owned()));
    }
    Ok(out)
}

/// Why a file could not be mounted or unmounted.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error(transparent)]
    Confine(#[from] ConfineError),
    #[error(transparent)]
    Content(#[from] ContentError),
}

/// Writes `content` at `path` below the uploads root, read-only, and returns
/// the change to record.
pub fn mount_file(
    store: &SledStore,
    uploads: &Root,
    path: &MountPath,
    content: &Content,
) -> Result<WorkspaceChange, MountError> {
    write_stored(store, uploads, path, content.blob, content.size, MOUNTED_FILE_MODE)
}

/// Writes the files a log recorded below the uploads directory (as
/// `logbook_replay::resources::files_under` gives them) into `uploads`: the
/// mounted files of a session as of any point of its log, which is what a
/// fork from that point mounts. Returns how many files it wrote.
pub fn materialize(
    store: &SledStore,
    uploads: &Root,
    files: &BTreeMap<String, RecordedFile>,
) -> Result<usize, MountError> {
    let mut n_written = 0;
    for (path, file) in files {
        let Some(mount) = MountPath::from_absolute(path).filter(|m| m.area() == Area::Uploads) else { continue };
        write_stored(store, uploads, &mount, Digest::from_bytes(file.blob), file.size, file.mode)?;
        n_written += 1;
    }
    Ok(n_written)
}

fn write_stored(
    store: &SledStore,
    root: &Root,
    path: &MountPath,
    blob: Digest,
    size: u64,
    mode: u32,
) -> Result<WorkspaceChange, MountError> {
    let mut failure: Option<ContentError> = None;
    let res = root.write_file(&path.components(), mode, |file| {
        content::copy_to(store, blob, size, file).map_err(|err| {
            let message = err.to_string();
            failure = Some(err);
            std::io::Error::other(message)
        })
    });
    match (res, failure) {
        (Err(_), Some(content_error)) => Err(MountError::Content(content_error)),
        (Err(confine_error), None) => Err(MountError::Confine(confine_error)),
        (Ok(()), _) => Ok(WorkspaceChange {
            path: path.absolute(),
            change: FileChange::Written { blob: *blob.as_bytes(), size, mode },
        }),
    }
}

/// Removes the file at `path` below the uploads root (if it is there) and
/// returns the change to record.
pub fn unmount_file(uploads: &Root, path: &MountPath) -> Result<WorkspaceChange, MountError> {
    uploads.remove_file(&path.components())?;
    Ok(WorkspaceChange { path: path.absolute(), change: FileChange::Removed })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

    use super::*;

    fn file_id() -> FileId {
        "file_01JQ8Z7M3P5R7T9V1X3Z5B7D0E".parse().unwrap()
    }

    fn upload(raw: &str) -> Result<String, MountPathError> {
        upload_path(Some(raw), file_id()).map(|p| p.absolute())
    }

    #[test]
    fn upload_paths_are_rooted_at_the_uploads_directory() {
        assert_eq!(upload_path(None, file_id()).unwrap().absolute(), format!("/mnt/session/uploads/{}", file_id()));
        for (raw, want) in [
            ("/data.csv", "/mnt/session/uploads/data.csv"),
            ("data.csv", "/mnt/session/uploads/data.csv"),
            ("./reports//q1.csv", "/mnt/session/uploads/reports/q1.csv"),
            ("/mnt/session/uploads/in/a.pdf", "/mnt/session/uploads/in/a.pdf"),
            ("/reports/q1 final.csv", "/mnt/session/uploads/reports/q1 final.csv"),
        ] {
            assert_eq!(upload(raw).unwrap(), want, "{raw}");
        }
        // Not the uploads directory, though it starts with its name.
        assert!(upload("/mnt/session/uploadsX/a").is_err());
    }

    #[test]
    fn upload_paths_outside_or_escaping_are_refused() {
        for raw in [
            "../etc/passwd",
            "a/../../b",
            "/mnt/session/uploads/../outputs/x",
            "/mnt/session/outputs/report.md",
            "/workspace/app.py",
            "/etc/passwd",
            "/tmp/x",
            "/mnt/memory/x",
            "",
            "/",
            "/mnt/session/uploads",
            "/mnt/session/uploads/",
            "a\nb",
            "a\0b",
        ] {
            assert!(upload(raw).is_err(), "{raw:?} must be refused");
        }
        assert_eq!(upload(&"a".repeat(4097)), Err(MountPathError::TooLong));
        assert!(matches!(upload(&"a".repeat(256)), Err(MountPathError::LongComponent(_))));
        assert!(matches!(upload(&"a/".repeat(33)), Err(MountPathError::TooDeep(_))));
    }

    #[test]
    fn repository_paths_stay_in_the_workspace() {
        assert_eq!(repository_path(None, "parser").unwrap().absolute(), "/workspace/parser");
        assert_eq!(repository_path(Some("/workspace/src/p"), "parser").unwrap().absolute(), "/workspace/src/p");
        assert_eq!(repository_path(Some("src/p"), "parser").unwrap().absolute(), "/workspace/src/p");
        for raw in ["/workspace", "/workspace/", "/mnt/session/uploads/p", "/tmp/p", "../p", "/workspace/../etc"] {
            assert!(repository_path(Some(raw), "parser").is_err(), "{raw} must be refused");
        }
    }

    #[test]
    fn overlaps_and_round_trip() {
        let a = upload_path(Some("/a"), file_id()).unwrap();
        let ab = upload_path(Some("/a/b"), file_id()).unwrap();
        let b = upload_path(Some("/b"), file_id()).unwrap();
        assert!(a.overlaps(&ab) && ab.overlaps(&a) && a.overlaps(&a));
        assert!(!a.overlaps(&b));
        let ws = repository_path(Some("a"), "r").unwrap();
        assert!(!a.overlaps(&ws), "different areas never overlap");
        assert_eq!(MountPath::from_absolute(&ab.absolute()), Some(ab));
        assert_eq!(MountPath::from_absolute("/mnt/session/outputs/x"), None);
    }
}
