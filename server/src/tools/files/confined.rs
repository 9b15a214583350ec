//! Opening, creating and writing files below a root directory, with the
//! confinement enforced by the kernel rather than by string checks.
//!
//! Every path is resolved by `openat2` from an open directory with
//! `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV`: `..`, absolute
//! symbolic links, links that climb out of the directory, `/proc` magic links
//! and other mounts all fail in the kernel, at the moment of the open, so a
//! symlink swapped in between a check and a use cannot lead anywhere else.
//! Symbolic links that stay below the root are followed (the sandbox's bash
//! sees them the same way). Walks open each child relative to its parent's
//! descriptor with `RESOLVE_NO_SYMLINKS`, so they never follow a link at all.
//!
//! Files are opened `O_NONBLOCK` (a FIFO cannot hang the open) and checked
//! with `fstat` before anything is read or written: only regular files with a
//! single link are used. A second hard link could name a file outside the
//! session (the sandbox cannot make one, but whoever else can write the
//! session's directories could), and writing through it would change that
//! file, so such files are refused and left to bash, which the sandbox
//! confines. What the tools create belongs to the sandbox's user
//! ([`SANDBOX_UID`]) with modes 0644 and 0755, so bash can change it.

use std::ffi::CStr;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, FileType, Gid, Mode, OFlags, ResolveFlags, Stat, Uid};
use rustix::io::Errno;

use crate::sandbox::layout::{SANDBOX_GID, SANDBOX_UID};

/// How every path below a root is resolved (see the module docs).
const BENEATH: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_MAGICLINKS).union(ResolveFlags::NO_XDEV);
/// How walks open a child of a directory they hold: no links at all.
const CHILD: ResolveFlags = BENEATH.union(ResolveFlags::NO_SYMLINKS);
/// How often an `openat2` failing with `EAGAIN` is retried. The kernel gives
/// `EAGAIN` when a lookup under `RESOLVE_BENEATH` meets `..` (in the path or a
/// link) while any rename or mount happens anywhere on the machine; a busy
/// machine (a build renaming files) hits that now and then, and only a
/// process renaming in a tight loop (such as the sandbox itself, against its
/// own session) hits it every time.
const MAX_EAGAIN_RETRIES: usize = 128;
/// Mode of the files the tools create (rw-r--r--).
pub(crate) const FILE_MODE: u32 = 0o644;
/// Mode of the directories the tools create (rwxr-xr-x).
pub(crate) const DIR_MODE: u32 = 0o755;

/// Why a file operation failed, in words for the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FileError {
    #[error("no such file or directory")]
    NotFound,
    #[error("not a directory")]
    NotADirectory,
    #[error("is a directory")]
    IsADirectory,
    #[error("not a regular file (it is a {kind})")]
    NotRegular { kind: &'static str },
    #[error(
        "has {n_links} hard links; the file tools only use files with a single link, so they cannot reach a file \
         outside the session through one (use bash for this file)"
    )]
    HardLinked { n_links: u64 },
    #[error(
        "leads outside the session's directories (through '..' or a symbolic link that is absolute or points \
         out of its directory)"
    )]
    Escapes,
    #[error("is a symbolic link where none may be followed, or a loop of symbolic links")]
    Symlink,
    #[error("is a symbolic link to a missing file")]
    DanglingSymlink,
    #[error("{root} is read-only")]
    ReadOnly { root: &'static str },
    #[error("permission denied")]
    PermissionDenied,
    #[error("the file is being used by another operation; try again")]
    Busy,
    #[error("{0}")]
    Io(String),
}

impl FileError {
    /// The error for a failed syscall.
    pub(crate) fn from_errno(errno: Errno) -> FileError {
        match errno {
            Errno::NOENT => FileError::NotFound,
            Errno::NOTDIR => FileError::NotADirectory,
            Errno::ISDIR => FileError::IsADirectory,
            Errno::XDEV => FileError::Escapes,
            Errno::LOOP => FileError::Symlink,
            Errno::ACCESS | Errno::PERM | Errno::ROFS => FileError::PermissionDenied,
            Errno::NXIO => FileError::NotRegular { kind: "socket or device without a reader" },
            Errno::TXTBSY | Errno::BUSY | Errno::AGAIN => FileError::Busy,
            other => FileError::Io(other.to_string().to_lowercase()),
        }
    }
}

impl From<Errno> for FileError {
    fn from(errno: Errno) -> FileError {
        FileError::from_errno(errno)
    }
}

impl From<std::io::Error> for FileError {
    fn from(err: std::io::Error) -> FileError {
        match err.raw_os_error() {
            Some(raw) => FileError::from_errno(Errno::from_raw_os_error(raw)),
            None => FileError::Io(err.to_string().to_lowercase()),
        }
    }
}

/// One of the session's roots, open.
#[derive(Debug)]
pub(crate) struct RootDir {
    fd: OwnedFd,
    /// Where the model sees it, e.g. `/workspace`.
    pub(crate) sandbox_path: &'static str,
    pub(crate) writable: bool,
}

impl RootDir {
    /// Opens the host directory `host`. It is the server's own path (under the
    /// data directory), so a plain open is right; its last component must not
    /// be a symbolic link.
    pub(crate) fn at(host: &Path, sandbox_path: &'static str, writable: bool) -> Result<RootDir, FileError> {
        let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        let fd = rfs::open(host, flags, Mode::empty())?;
        Ok(RootDir { fd, sandbox_path, writable })
    }

    /// Opens `rel` (no leading `/`; empty for the root itself) with `flags`
    /// (`O_CLOEXEC | O_NOCTTY | O_NONBLOCK` are added) and returns it with its
    /// `fstat`.
    pub(crate) fn open(&self, rel: &str, flags: OFlags) -> Result<(OwnedFd, Stat), FileError> {
        let path = if rel.is_empty() { "." } else { rel };
        let flags = flags | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
        let fd = openat2(&self.fd, path, flags, Mode::empty(), BENEATH)?;
        let stat = rfs::fstat(&fd)?;
        Ok((fd, stat))
    }

    /// Opens the regular file `rel` for reading.
    pub(crate) fn open_file(&self, rel: &str) -> Result<(File, Stat), FileError> {
        let (fd, stat) = self.open(rel, OFlags::RDONLY)?;
        check_single_regular(&stat)?;
        Ok((File::from(fd), stat))
    }

    /// Opens the regular file `rel` for reading and writing in place.
    pub(crate) fn open_file_rw(&self, rel: &str) -> Result<(File, Stat), FileError> {
        self.check_writable()?;
        let (fd, stat) = self.open(rel, OFlags::RDWR)?;
        check_single_regular(&stat)?;
        Ok((File::from(fd), stat))
    }

    /// Opens the directory `rel`.
    pub(crate) fn open_dir(&self, rel: &str) -> Result<OwnedFd, FileError> {
        let (fd, _) = self.open(rel, OFlags::DIRECTORY | OFlags::RDONLY)?;
        Ok(fd)
    }

    /// Replaces the content of `rel` with `content`, creating the file and its
    /// missing parent directories. An existing file is truncated and written
    /// in place (it keeps its owner and mode).
    pub(crate) fn write_file(&self, rel: &str, content: &[u8]) -> Result<(), FileError> {
        self.check_writable()?;
        let (parent, name) = match rel.rsplit_once('/') {
            Some((parent, name)) => (parent, name),
            None => ("", rel),
        };
        if name.is_empty() {
            return Err(FileError::IsADirectory);
        }
        let mut file = match self.open(rel, OFlags::WRONLY) {
            Ok((fd, stat)) => {
                check_single_regular(&stat)?;
                let file = File::from(fd);
                file.set_len(0)?;
                file
            }
            Err(FileError::NotFound) => {
                let dir = self.create_dirs(parent)?;
                create_file(&dir, name)?
            }
            Err(err) => return Err(err),
        };
        file.write_all(content)?;
        Ok(())
    }

    /// Opens the directory `rel`, creating it and its missing parents.
    pub(crate) fn create_dirs(&self, rel: &str) -> Result<OwnedFd, FileError> {
        self.check_writable()?;
        match self.open_dir(rel) {
            Ok(fd) => return Ok(fd),
            Err(FileError::NotFound) => {}
            Err(err) => return Err(err),
        }
        let mut dir = self.open_dir("")?;
        for name in rel.split('/').filter(|name| !name.is_empty()) {
            dir = match open_dir_beneath(&dir, name) {
                Ok(child) => child,
                Err(FileError::NotFound) => create_dir(&dir, name)?,
                Err(err) => return Err(err),
            };
        }
        Ok(dir)
    }

    fn check_writable(&self) -> Result<(), FileError> {
        if self.writable { Ok(()) } else { Err(FileError::ReadOnly { root: self.sandbox_path }) }
    }
}

/// Opens the regular file `name` in the directory `dir` without following
/// any link (for walks).
pub(crate) fn open_child_file(dir: impl AsFd, name: &CStr) -> Result<(File, Stat), FileError> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
    let fd = openat2(dir, name, flags, Mode::empty(), CHILD)?;
    let stat = rfs::fstat(&fd)?;
    check_single_regular(&stat)?;
    Ok((File::from(fd), stat))
}

/// Opens the directory `name` in `dir` without following any link (for walks).
pub(crate) fn open_child_dir(dir: impl AsFd, name: &CStr) -> Result<OwnedFd, FileError> {
    let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(openat2(dir, name, flags, Mode::empty(), CHILD)?)
}

/// The `lstat` of `name` in `dir`.
pub(crate) fn stat_child(dir: impl AsFd, name: &CStr) -> Result<Stat, FileError> {
    Ok(rfs::statat(dir, name, rfs::AtFlags::SYMLINK_NOFOLLOW)?)
}

/// What kind of file a `Stat` describes, as the errors name it.
pub(crate) fn kind_name(stat: &Stat) -> &'static str {
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symbolic link",
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Unknown => "file of unknown type",
    }
}

/// `openat2`, retried while the kernel answers `EAGAIN` (see
/// [`MAX_EAGAIN_RETRIES`]).
fn openat2<P: rustix::path::Arg + Copy>(
    dir: impl AsFd,
    path: P,
    flags: OFlags,
    mode: Mode,
    resolve: ResolveFlags,
) -> Result<OwnedFd, Errno> {
    let mut n_retries = 0;
    loop {
        match rfs::openat2(&dir, path, flags, mode, resolve) {
            Err(Errno::AGAIN) if n_retries < MAX_EAGAIN_RETRIES => {
                n_retries += 1;
                std::thread::yield_now();
            }
            result => return result,
        }
    }
}

/// Refuses anything but a regular file with one link.
fn check_single_regular(stat: &Stat) -> Result<(), FileError> {
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => {}
        FileType::Directory => return Err(FileError::IsADirectory),
        FileType::Symlink
        | FileType::Fifo
        | FileType::Socket
        | FileType::CharacterDevice
        | FileType::BlockDevice
        | FileType::Unknown => return Err(FileError::NotRegular { kind: kind_name(stat) }),
    }
    // `st_nlink` is u32 or u64 depending on the architecture.
    #[allow(clippy::useless_conversion, reason = "u32 on some architectures")]
    let n_links = u64::from(stat.st_nlink);
    if n_links > 1 {
        return Err(FileError::HardLinked { n_links });
    }
    Ok(())
}

/// Opens the existing directory `name` in `dir`, following links only while
/// they stay below `dir`.
fn open_dir_beneath(dir: &OwnedFd, name: &str) -> Result<OwnedFd, FileError> {
    let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
    Ok(openat2(dir, name, flags, Mode::empty(), BENEATH)?)
}

/// Creates the directory `name` in `dir` for the sandbox's user and opens it.
fn create_dir(dir: &OwnedFd, name: &str) -> Result<OwnedFd, FileError> {
    let created = match rfs::mkdirat(dir, name, Mode::from_raw_mode(DIR_MODE)) {
        Ok(()) => true,
        // Made by someone else meanwhile: use it as it is.
        Err(Errno::EXIST) => false,
        Err(errno) => return Err(errno.into()),
    };
    let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let child = openat2(dir, name, flags, Mode::empty(), CHILD)?;
    if created {
        give_to_sandbox(&child, DIR_MODE)?;
    }
    Ok(child)
}

/// Creates the new regular file `name` in `dir` for the sandbox's user.
fn create_file(dir: &OwnedFd, name: &str) -> Result<File, FileError> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
    let fd = match openat2(dir, name, flags, Mode::from_raw_mode(FILE_MODE), CHILD) {
        Ok(fd) => fd,
        // Not there a moment ago when opened through the root: a link to a
        // missing file, or a file that just appeared.
        Err(Errno::EXIST) => return Err(existing_after_not_found(dir, name)),
        Err(errno) => return Err(errno.into()),
    };
    give_to_sandbox(&fd, FILE_MODE)?;
    Ok(File::from(fd))
}

fn existing_after_not_found(dir: &OwnedFd, name: &str) -> FileError {
    match rfs::statat(dir, name, rfs::AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Symlink => FileError::DanglingSymlink,
        Ok(_) | Err(_) => FileError::Busy,
    }
}

/// Makes what the tools created belong to the sandbox's user, with `mode`.
fn give_to_sandbox(fd: &OwnedFd, mode: u32) -> Result<(), FileError> {
    rfs::fchown(fd, Some(Uid::from_raw(SANDBOX_UID)), Some(Gid::from_raw(SANDBOX_GID)))?;
    rfs::fchmod(fd, Mode::from_raw_mode(mode))?;
    Ok(())
}
