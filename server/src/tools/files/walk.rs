//! The directory walk behind glob and grep: descriptor-based, so it can
//! never leave the tree it started in.
//!
//! Each directory is read through its own descriptor and each child is opened
//! relative to it with `RESOLVE_NO_SYMLINKS` and `O_NOFOLLOW`
//! ([`confined::open_child_dir`]); there is no path string for a swapped
//! symlink to redirect. Symbolic links are reported, never followed.
//!
//! What is walked, decided explicitly (ripgrep's defaults differ): hidden
//! files are included (the model asks for `.github/**` or `.env` on purpose);
//! `.git` and `.logbook` (the tools' own spill directory) are never entered
//! below the starting directory; `.gitignore` files found during the walk are
//! honoured whether or not the tree is a git repository (a fresh workspace
//! often is not), with the deepest file deciding, as git does. Entries are
//! visited in byte order of their names, so results do not depend on the file
//! system's directory order. The walk stops after [`MAX_WALK_ENTRIES`]
//! entries and does not descend below [`MAX_WALK_DEPTH`].

use std::ffi::{CStr, CString};
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use rustix::fs::{Dir, FileType};

use super::confined;

/// Entries a walk visits at most (the SDK reference implementation's cap):
/// a walk over a huge tree must end in bounded time.
pub(crate) const MAX_WALK_ENTRIES: usize = 50_000;
/// Deepest directory level entered: the walk holds one open descriptor per
/// level, so this bounds the descriptors one call uses.
pub(crate) const MAX_WALK_DEPTH: usize = 64;
/// Largest `.gitignore` read; a bigger one is ignored rather than parsed.
const MAX_GITIGNORE_BYTES: u64 = 1024 * 1024;
/// Directories never entered during a walk.
const SKIPPED_DIRS: [&str; 2] = [".git", ".logbook"];

/// A non-directory entry found by the walk.
#[derive(Debug)]
pub(crate) struct Visit<'a> {
    /// The directory holding it, open.
    pub(crate) dir: BorrowedFd<'a>,
    pub(crate) name: &'a CStr,
    /// Its path relative to the walk's start, `/`-separated (lossy UTF-8).
    pub(crate) rel: &'a str,
    pub(crate) kind: EntryKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryKind {
    File,
    Symlink,
    /// FIFOs, sockets, devices: reported so callers can list them, never opened here.
    Special,
}

/// Whether the walk goes on after a visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Stop,
}

/// How a walk ended.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Summary {
    pub(crate) n_entries: usize,
    /// Stopped at the entry limit.
    pub(crate) capped: bool,
    /// Directories that could not be opened or read (swapped, removed, too deep).
    pub(crate) n_skipped_dirs: usize,
}

/// Walks the directory `start`, calling `visit` for every file, symlink and
/// special file below it, for at most `max_entries` entries (the tools pass
/// [`MAX_WALK_ENTRIES`]).
pub(crate) fn walk(start: &OwnedFd, max_entries: usize, visit: &mut dyn FnMut(&Visit<'_>) -> Flow) -> Summary {
    let mut walker = Walker { summary: Summary::default(), max_entries, ignores: Vec::new(), visit };
    walker.walk_dir(start, "", 0);
    walker.summary
}

struct Walker<'v> {
    summary: Summary,
    max_entries: usize,
    /// The `.gitignore` matchers of the directories being walked, outermost first,
    /// each with the directory's path relative to the start.
    ignores: Vec<(String, Gitignore)>,
    visit: &'v mut dyn FnMut(&Visit<'_>) -> Flow,
}

impl Walker<'_> {
    fn walk_dir(&mut self, dir: &OwnedFd, prefix: &str, depth: usize) -> Flow {
        let Ok(entries) = read_entries(dir) else {
            self.summary.n_skipped_dirs += 1;
            return Flow::Continue;
        };
        let pushed = match load_gitignore(dir, &entries) {
            Some(gitignore) => {
                self.ignores.push((prefix.to_owned(), gitignore));
                true
            }
            None => false,
        };
        let flow = self.walk_entries(dir, prefix, depth, &entries);
        if pushed {
            self.ignores.pop();
        }
        flow
    }

    fn walk_entries(&mut self, dir: &OwnedFd, prefix: &str, depth: usize, entries: &[(CString, FileType)]) -> Flow {
        for (name, file_type) in entries {
            if self.summary.n_entries >= self.max_entries {
                self.summary.capped = true;
                return Flow::Stop;
            }
            self.summary.n_entries += 1;
            let name_text = name.to_string_lossy();
            let rel = if prefix.is_empty() { name_text.into_owned() } else { format!("{prefix}/{name_text}") };
            // Some file systems leave the type out of directory entries.
            let file_type = if *file_type == FileType::Unknown {
                match confined::stat_child(dir, name) {
                    Ok(stat) => FileType::from_raw_mode(stat.st_mode),
                    Err(_) => continue,
                }
            } else {
                *file_type
            };
            let kind = match file_type {
                FileType::Directory => None,
                FileType::RegularFile => Some(EntryKind::File),
                FileType::Symlink => Some(EntryKind::Symlink),
                FileType::Fifo
                | FileType::Socket
                | FileType::CharacterDevice
                | FileType::BlockDevice
                | FileType::Unknown => Some(EntryKind::Special),
            };
            if self.is_ignored(&rel, kind.is_none()) {
                continue;
            }
            let flow = match kind {
                Some(kind) => (self.visit)(&Visit { dir: dir.as_fd(), name, rel: &rel, kind }),
                None => {
                    if SKIPPED_DIRS.contains(&rel.rsplit('/').next().unwrap_or("")) {
                        continue;
                    }
                    if depth + 1 > MAX_WALK_DEPTH {
                        self.summary.n_skipped_dirs += 1;
                        continue;
                    }
                    match confined::open_child_dir(dir, name) {
                        Ok(child) => self.walk_dir(&child, &rel, depth + 1),
                        Err(_) => {
                            // Swapped for a link or removed since it was listed.
                            self.summary.n_skipped_dirs += 1;
                            Flow::Continue
                        }
                    }
                }
            };
            if flow == Flow::Stop {
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    /// Whether the deepest `.gitignore` with an opinion ignores `rel`.
    fn is_ignored(&self, rel: &str, is_dir: bool) -> bool {
        for (prefix, gitignore) in self.ignores.iter().rev() {
            let below = if prefix.is_empty() {
                rel
            } else {
                match rel.strip_prefix(prefix.as_str()).and_then(|rest| rest.strip_prefix('/')) {
                    Some(below) => below,
                    None => continue,
                }
            };
            match gitignore.matched(below, is_dir) {
                Match::Ignore(_) => return true,
                Match::Whitelist(_) => return false,
                Match::None => {}
            }
        }
        false
    }
}

/// The entries of `dir` but `.` and `..`, sorted by name.
fn read_entries(dir: &OwnedFd) -> rustix::io::Result<Vec<(CString, FileType)>> {
    let mut entries = Vec::new();
    for entry in Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        entries.push((name.to_owned(), entry.file_type()));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(entries)
}

/// The matcher of `dir`'s `.gitignore`, if it has a readable one.
fn load_gitignore(dir: &OwnedFd, entries: &[(CString, FileType)]) -> Option<Gitignore> {
    entries.iter().find(|(name, _)| name.as_c_str() == c".gitignore")?;
    let (file, stat) = confined::open_child_file(dir, c".gitignore").ok()?;
    if stat.st_size < 0 || stat.st_size as u64 > MAX_GITIGNORE_BYTES {
        return None;
    }
    let mut text = String::new();
    file.take(MAX_GITIGNORE_BYTES).read_to_string(&mut text).ok()?;
    let mut builder = GitignoreBuilder::new("");
    for line in text.lines() {
        // A line git would reject is skipped, as git skips it.
        let _ = builder.add_line(None, line);
    }
    builder.build().ok()
}
