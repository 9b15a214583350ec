//! File-system operations confined by the kernel to one directory.
//!
//! A [`Root`] is an open directory (a session's uploads, outputs or
//! workspace). Every path below it is resolved with `openat2` and
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`, one
//! component at a time: a `..`, an absolute path or a symbolic link anywhere on
//! the way fails in the kernel, whatever was swapped in since a check. Callers
//! also validate names (see `mount`), but that is for good messages; the
//! confinement does not depend on it. Files and directories made here belong to
//! the sandbox user ([`SANDBOX_UID`]) when the server runs as root, so the
//! sandbox sees them as its own; otherwise ownership is left to the server's
//! user.
//!
//! Nothing here follows a symbolic link, and nothing opens a FIFO or a device
//! for reading: [`Root::walk_files`] opens with `O_NONBLOCK` and keeps only
//! what `fstat` says is a regular file.

use std::ffi::CStr;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rand::RngExt;
use rustix::fs::{AtFlags, Dir, FileType, Gid, Mode, OFlags, RenameFlags, ResolveFlags, Uid};
use rustix::io::Errno;

use crate::sandbox::layout::{SANDBOX_GID, SANDBOX_UID};

/// Deepest directory nesting [`Root::walk_files`] descends into: far beyond
/// real output trees, and a bound on its recursion.
pub const MAX_WALK_DEPTH: usize = 32;

/// Mode of directories made here: the sandbox user may write, others read.
const DIR_MODE: u32 = 0o755;

/// How every path below a root is resolved.
fn beneath() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

/// Why a confined operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error("{path} passes through a symbolic link")]
    Symlink { path: String },
    #[error("{path} leads outside its directory")]
    Escape { path: String },
    #[error("{path} is not a directory")]
    NotADirectory { path: String },
    #[error("{path} is a directory")]
    IsADirectory { path: String },
    #[error("{path} already exists")]
    Exists { path: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

impl ConfineError {
    fn from_errno(path: &str, errno: Errno) -> ConfineError {
        let path = path.to_owned();
        match errno {
            Errno::LOOP => ConfineError::Symlink { path },
            Errno::XDEV => ConfineError::Escape { path },
            Errno::NOTDIR => ConfineError::NotADirectory { path },
            Errno::ISDIR | Errno::NOTEMPTY => ConfineError::IsADirectory { path },
            Errno::EXIST => ConfineError::Exists { path },
            other => ConfineError::Io { path, source: other.into() },
        }
    }
}

/// An open directory that confined operations start from.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    /// The host path, for messages only.
    host: PathBuf,
}

/// A regular file found by [`Root::walk_files`], open for reading.
#[derive(Debug)]
pub struct FoundFile {
    /// The components below the root.
    pub components: Vec<String>,
    pub file: File,
    pub size: u64,
    /// The permission bits.
    pub mode: u32,
}

impl Root {
    /// Opens the directory `host` (a server-chosen path, trusted), creating it
    /// and its parents if missing. Directories it creates belong to the
    /// sandbox user.
    pub fn open(host: &Path) -> Result<Root, ConfineError> {
        let text = host.display().to_string();
        if !host.is_dir() {
            std::fs::create_dir_all(host).map_err(|source| ConfineError::Io { path: text.clone(), source })?;
        }
        let fd = rustix::fs::open(host, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|errno| ConfineError::from_errno(&text, errno))?;
        own(&fd).map_err(|errno| ConfineError::from_errno(&text, errno))?;
        Ok(Root { fd, host: host.to_owned() })
    }

    pub fn host(&self) -> &Path {
        &self.host
    }

    fn name(&self, components: &[&str]) -> String {
        let mut out = self.host.display().to_string();
        for component in components {
            out.push('/');
            out.push_str(component);
        }
        out
    }

    /// Opens the directory at `components` below the root, creating missing
    /// ones (owned by the sandbox user).
    pub fn make_dirs(&self, components: &[&str]) -> Result<OwnedFd, ConfineError> {
        let mut current = self.dup()?;
        for (idx, component) in components.iter().enumerate() {
            let shown = self.name(&components[..=idx]);
            current = match open_dir(&current, component) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&current, *component, Mode::from_raw_mode(DIR_MODE)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(errno) => return Err(ConfineError::from_errno(&shown, errno)),
                    }
                    let fd = open_dir(&current, component).map_err(|errno| ConfineError::from_errno(&shown, errno))?;
                    own(&fd).map_err(|errno| ConfineError::from_errno(&shown, errno))?;
                    fd
                }
                Err(errno) => return Err(ConfineError::from_errno(&shown, errno)),
            };
        }
        Ok(current)
    }

    /// Opens the existing directory at `components`; `None` if it is missing.
    pub fn open_dirs(&self, components: &[&str]) -> Result<Option<OwnedFd>, ConfineError> {
        let mut current = self.dup()?;
        for (idx, component) in components.iter().enumerate() {
            current = match open_dir(&current, component) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => return Ok(None),
                Err(errno) => return Err(ConfineError::from_errno(&self.name(&components[..=idx]), errno)),
            };
        }
        Ok(Some(current))
    }

    /// Writes a file at `components` (parents created), replacing a regular
    /// file there, never a directory: the contents go to a fresh temporary
    /// file in the same directory, which gets `mode` and the sandbox owner
    /// and is then renamed into place, so a reader sees the old file or the
    /// new one, never half of one.
    pub fn write_file(
        &self,
        components: &[&str],
        mode: u32,
        fill: impl FnOnce(&mut File) -> std::io::Result<()>,
    ) -> Result<(), ConfineError> {
        let Some((name, parents)) = components.split_last() else {
            return Err(ConfineError::IsADirectory { path: self.name(&[]) });
        };
        let shown = self.name(components);
        let dir = self.make_dirs(parents)?;
        let temp = format!(".logbook-tmp-{:016x}", rand::rng().random::<u64>());
        let fd = rustix::fs::openat2(
            &dir,
            temp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
            beneath(),
        )
        .map_err(|errno| ConfineError::from_errno(&shown, errno))?;
        let mut file = File::from(fd);
        let written = fill(&mut file)
            .and_then(|()| file.flush())
            .map_err(|source| ConfineError::Io { path: shown.clone(), source })
            .and_then(|()| {
                rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))
                    .and_then(|()| own(&file))
                    .map_err(|errno| ConfineError::from_errno(&shown, errno))
            })
            .and_then(|()| {
                rustix::fs::renameat(&dir, temp.as_str(), &dir, *name)
                    .map_err(|errno| ConfineError::from_errno(&shown, errno))
            });
        if written.is_err() {
            let _ = rustix::fs::unlinkat(&dir, temp.as_str(), AtFlags::empty());
        }
        written
    }

    /// Removes the file at `components`. `Ok(false)` if it was not there.
    pub fn remove_file(&self, components: &[&str]) -> Result<bool, ConfineError> {
        let Some((name, parents)) = components.split_last() else {
            return Err(ConfineError::IsADirectory { path: self.name(&[]) });
        };
        let Some(dir) = self.open_dirs(parents)? else { return Ok(false) };
        match rustix::fs::unlinkat(&dir, *name, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(errno) => Err(ConfineError::from_errno(&self.name(components), errno)),
        }
    }

    /// What is at `components`, without following a final symbolic link;
    /// `None` if nothing is.
    pub fn file_type(&self, components: &[&str]) -> Result<Option<FileType>, ConfineError> {
        let Some((name, parents)) = components.split_last() else { return Ok(Some(FileType::Directory)) };
        let Some(dir) = self.open_dirs(parents)? else { return Ok(None) };
        match rustix::fs::statat(&dir, *name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(Some(FileType::from_raw_mode(stat.st_mode))),
            Err(Errno::NOENT) => Ok(None),
            Err(errno) => Err(ConfineError::from_errno(&self.name(components), errno)),
        }
    }

    /// Every regular file below the root, opened for reading, in name order:
    /// symbolic links, FIFOs, sockets and devices are skipped, as are names
    /// that are not UTF-8. Stops after `max_files` files; descends at most
    /// [`MAX_WALK_DEPTH`] directories.
    pub fn walk_files(&self, max_files: usize) -> Result<Vec<FoundFile>, ConfineError> {
        let mut out = Vec::new();
        let root = self.dup()?;
        walk(&root, &mut Vec::new(), &mut out, max_files, &self.host)?;
        Ok(out)
    }

    /// Moves the directory `from` (an entry of the directory `from_dir`,
    /// outside any root) to `components` below this root; fails if something
    /// is already there.
    pub fn move_in(&self, from_dir: &Path, from: &str, components: &[&str]) -> Result<(), ConfineError> {
        let Some((name, parents)) = components.split_last() else {
            return Err(ConfineError::Exists { path: self.name(&[]) });
        };
        let shown = self.name(components);
        let dir = self.make_dirs(parents)?;
        let source = rustix::fs::open(from_dir, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|errno| ConfineError::from_errno(&from_dir.display().to_string(), errno))?;
        rustix::fs::renameat_with(&source, from, &dir, *name, RenameFlags::NOREPLACE)
            .map_err(|errno| ConfineError::from_errno(&shown, errno))
    }

    fn dup(&self) -> Result<OwnedFd, ConfineError> {
        self.fd.try_clone().map_err(|source| ConfineError::Io { path: self.host.display().to_string(), source })
    }
}

/// Gives everything below the directory `host` (a server-chosen path),
/// and the directory itself, to the sandbox user, without following symbolic
/// links. Does nothing unless the server runs as root.
pub fn own_tree(host: &Path) -> Result<(), ConfineError> {
    if !rustix::process::geteuid().is_root() {
        return Ok(());
    }
    let text = host.display().to_string();
    let fd =
        rustix::fs::open(host, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
            .map_err(|errno| ConfineError::from_errno(&text, errno))?;
    own(&fd).map_err(|errno| ConfineError::from_errno(&text, errno))?;
    own_below(&fd, &text, 0)
}

fn own_below(dir: &OwnedFd, shown: &str, depth: usize) -> Result<(), ConfineError> {
    let entries = Dir::read_from(dir).map_err(|errno| ConfineError::from_errno(shown, errno))?;
    for entry in entries {
        let entry = entry.map_err(|errno| ConfineError::from_errno(shown, errno))?;
        let name = entry.file_name();
        if is_dot(name) {
            continue;
        }
        rustix::fs::chownat(dir, name, Some(sandbox_uid()), Some(sandbox_gid()), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|errno| ConfineError::from_errno(shown, errno))?;
        if entry.file_type() == FileType::Directory {
            // A tree deeper than any checkout git makes is not walked further.
            if depth + 1 >= 4 * MAX_WALK_DEPTH {
                continue;
            }
            let child = rustix::fs::openat2(
                dir,
                name,
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
                beneath(),
            )
            .map_err(|errno| ConfineError::from_errno(shown, errno))?;
            own_below(&child, shown, depth + 1)?;
        }
    }
    Ok(())
}

fn walk(
    dir: &OwnedFd,
    prefix: &mut Vec<String>,
    out: &mut Vec<FoundFile>,
    max_files: usize,
    host: &Path,
) -> Result<(), ConfineError> {
    let shown = || format!("{}/{}", host.display(), prefix.join("/"));
    let entries = Dir::read_from(dir).map_err(|errno| ConfineError::from_errno(&shown(), errno))?;
    let mut names: Vec<String> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|errno| ConfineError::from_errno(&shown(), errno))?;
        let name = entry.file_name();
        if is_dot(name) {
            continue;
        }
        match name.to_str() {
            Ok(name) => names.push(name.to_owned()),
            Err(_) => tracing::warn!(dir = %shown(), "skipping a file whose name is not UTF-8"),
        }
    }
    names.sort_unstable();
    for name in names {
        if out.len() >= max_files {
            return Ok(());
        }
        let Ok(stat) = rustix::fs::statat(dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) else { continue };
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile => {
                // O_NONBLOCK: if a FIFO was swapped in since the stat, opening it
                // does not block; fstat then rejects it.
                let Ok(fd) = rustix::fs::openat2(
                    dir,
                    name.as_str(),
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
                    Mode::empty(),
                    beneath(),
                ) else {
                    continue;
                };
                let Ok(stat) = rustix::fs::fstat(&fd) else { continue };
                if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
                    continue;
                }
                let mut components = prefix.clone();
                components.push(name);
                out.push(FoundFile {
                    components,
                    file: File::from(fd),
                    size: u64::try_from(stat.st_size).unwrap_or(0),
                    mode: stat.st_mode & 0o7777,
                });
            }
            FileType::Directory if prefix.len() + 1 < MAX_WALK_DEPTH => {
                let Ok(child) = open_dir(dir, &name) else { continue };
                prefix.push(name);
                let res = walk(&child, prefix, out, max_files, host);
                prefix.pop();
                res?;
            }
            FileType::Directory
            | FileType::Symlink
            | FileType::Fifo
            | FileType::Socket
            | FileType::CharacterDevice
            | FileType::BlockDevice
            | FileType::Unknown => {}
        }
    }
    Ok(())
}

/// Opens the directory `name` of `dir`. A symbolic link there fails as
/// `ELOOP` (the kernel reports `ENOTDIR` for `O_NOFOLLOW | O_DIRECTORY` on a
/// link; the link is what matters).
fn open_dir(dir: &impl AsFd, name: &str) -> Result<OwnedFd, Errno> {
    let opened = rustix::fs::openat2(
        dir,
        name,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        beneath(),
    );
    match opened {
        Err(Errno::NOTDIR) => match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Symlink => Err(Errno::LOOP),
            Ok(_) | Err(_) => Err(Errno::NOTDIR),
        },
        other => other,
    }
}

fn is_dot(name: &CStr) -> bool {
    name.to_bytes() == b"." || name.to_bytes() == b".."
}

fn sandbox_uid() -> Uid {
    Uid::from_raw(SANDBOX_UID)
}

fn sandbox_gid() -> Gid {
    Gid::from_raw(SANDBOX_GID)
}

/// Gives `fd` to the sandbox user when the server runs as root.
fn own(fd: &impl AsFd) -> Result<(), Errno> {
    if rustix::process::geteuid().is_root() {
        rustix::fs::fchown(fd, Some(sandbox_uid()), Some(sandbox_gid()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

    use super::*;

    fn expected_owner() -> u32 {
        if rustix::process::geteuid().is_root() { SANDBOX_UID } else { rustix::process::geteuid().as_raw() }
    }

    #[test]
    fn writes_files_below_with_parents_mode_and_owner() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(&dir.path().join("uploads")).unwrap();
        root.write_file(&["a", "b", "data.csv"], 0o444, |f| f.write_all(b"x,y\n")).unwrap();
        let path = dir.path().join("uploads/a/b/data.csv");
        assert_eq!(std::fs::read(&path).unwrap(), b"x,y\n");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o444);
        assert_eq!(meta.uid(), expected_owner());
        assert_eq!(std::fs::metadata(dir.path().join("uploads/a")).unwrap().uid(), expected_owner());
        // Replacing keeps one file; no temporary file is left behind.
        root.write_file(&["a", "b", "data.csv"], 0o444, |f| f.write_all(b"z\n")).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"z\n");
        assert_eq!(std::fs::read_dir(dir.path().join("uploads/a/b")).unwrap().count(), 1);
        assert!(root.remove_file(&["a", "b", "data.csv"]).unwrap());
        assert!(!root.remove_file(&["a", "b", "data.csv"]).unwrap());
        assert!(!root.remove_file(&["missing", "x"]).unwrap());
    }

    #[test]
    fn symlinks_and_escapes_fail_in_the_kernel() {
        // Goal: no path below a root reaches outside it, whatever the names
        // say. Method: plant a symlink to a directory outside, a symlinked
        // file, and try `..` components (which callers never pass; this checks
        // the kernel refuses them anyway).
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let root = Root::open(&dir.path().join("uploads")).unwrap();
        symlink(&outside, dir.path().join("uploads/link")).unwrap();
        symlink(outside.join("f"), dir.path().join("uploads/file-link")).unwrap();
        let err = root.write_file(&["link", "x.csv"], 0o444, |f| f.write_all(b"no")).unwrap_err();
        assert!(matches!(err, ConfineError::Symlink { .. }), "{err:?}");
        let err = root.write_file(&["..", "outside", "x.csv"], 0o444, |f| f.write_all(b"no")).unwrap_err();
        assert!(matches!(err, ConfineError::Escape { .. }), "{err:?}");
        let err = root.make_dirs(&["/etc"]).unwrap_err();
        assert!(matches!(err, ConfineError::Escape { .. }), "{err:?}");
        // Writing over a symlink replaces the link itself, never its target.
        root.write_file(&["file-link"], 0o444, |f| f.write_all(b"mine")).unwrap();
        assert!(!outside.join("f").exists());
        assert_eq!(std::fs::read(dir.path().join("uploads/file-link")).unwrap(), b"mine");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "nothing was written outside");
        // A directory is never replaced by a file.
        root.make_dirs(&["d"]).unwrap();
        let err = root.write_file(&["d"], 0o444, |f| f.write_all(b"no")).unwrap_err();
        assert!(matches!(err, ConfineError::IsADirectory { .. }), "{err:?}");
    }

    #[test]
    fn walk_finds_regular_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("outputs");
        let root = Root::open(&host).unwrap();
        std::fs::write(dir.path().join("secret"), b"host secret").unwrap();
        std::fs::create_dir_all(host.join("sub/deeper")).unwrap();
        std::fs::write(host.join("report.md"), b"# report").unwrap();
        std::fs::write(host.join("sub/deeper/x.txt"), b"x").unwrap();
        symlink(dir.path().join("secret"), host.join("leak.txt")).unwrap();
        symlink(dir.path(), host.join("up")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            host.join("fifo").as_path(),
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let found = root.walk_files(100).unwrap();
        let names: Vec<String> = found.iter().map(|f| f.components.join("/")).collect();
        assert_eq!(names, ["report.md", "sub/deeper/x.txt"]);
        let mut text = String::new();
        let mut first = found.into_iter().next().unwrap();
        first.file.read_to_string(&mut text).unwrap();
        assert_eq!((text.as_str(), first.size), ("# report", 8));
        assert_eq!(root.walk_files(1).unwrap().len(), 1);
    }

    #[test]
    fn moves_a_tree_in_without_replacing_and_owns_it() {
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path().join("staging");
        std::fs::create_dir_all(staging.join("repo/src")).unwrap();
        std::fs::write(staging.join("repo/src/lib.rs"), b"fn main() {}").unwrap();
        symlink("/etc/passwd", staging.join("repo/link")).unwrap();
        own_tree(&staging.join("repo")).unwrap();
        let root = Root::open(&dir.path().join("workspace")).unwrap();
        root.move_in(&staging, "repo", &["team", "repo"]).unwrap();
        let moved = dir.path().join("workspace/team/repo");
        assert_eq!(std::fs::read(moved.join("src/lib.rs")).unwrap(), b"fn main() {}");
        assert_eq!(std::fs::metadata(moved.join("src/lib.rs")).unwrap().uid(), expected_owner());
        assert_eq!(std::fs::symlink_metadata(moved.join("link")).unwrap().uid(), expected_owner());
        assert_ne!(std::fs::metadata("/etc/passwd").unwrap().uid(), SANDBOX_UID, "the link's target is untouched");
        std::fs::create_dir_all(staging.join("again")).unwrap();
        let err = root.move_in(&staging, "again", &["team", "repo"]).unwrap_err();
        assert!(matches!(err, ConfineError::Exists { .. } | ConfineError::IsADirectory { .. }), "{err:?}");
    }
}
