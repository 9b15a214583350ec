//! Where benchmarks put their files: on a real disk, never on tmpfs.
//!
//! Durability costs are the point of these benchmarks, and on tmpfs
//! `fdatasync` is free. The base directory is `LOGBOOK_BENCH_DIR` if set, else
//! the system temp directory, unless that is tmpfs (or ramfs), in which case
//! `target/bench-scratch` under the current directory is used instead.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Filesystems that keep data in memory only.
const MEMORY_FILESYSTEMS: &[&str] = &["tmpfs", "ramfs"];

/// The base directory for scratch files, created if missing.
pub fn base_dir() -> anyhow::Result<PathBuf> {
    let chosen = match std::env::var_os("LOGBOOK_BENCH_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let tmp = std::env::temp_dir();
            if filesystem_of(&tmp).is_some_and(|fs| MEMORY_FILESYSTEMS.contains(&fs.as_str())) {
                PathBuf::from("target/bench-scratch")
            } else {
                tmp
            }
        }
    };
    std::fs::create_dir_all(&chosen).with_context(|| format!("creating {}", chosen.display()))?;
    let chosen = chosen.canonicalize()?;
    if let Some(fs) = filesystem_of(&chosen).filter(|fs| MEMORY_FILESYSTEMS.contains(&fs.as_str())) {
        bail!("{} is on {fs}, where fdatasync costs nothing; set LOGBOOK_BENCH_DIR to a disk", chosen.display());
    }
    Ok(chosen)
}

/// A fresh directory under [`base_dir`], removed when dropped.
pub fn temp_dir() -> anyhow::Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new().prefix("logbook-bench-").tempdir_in(base_dir()?)?)
}

/// The filesystem type of the mount holding `path`, from `/proc/self/mountinfo`.
pub fn filesystem_of(path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(usize, String)> = None;
    for line in mountinfo.lines() {
        // `id parent major:minor root mount-point options... - fstype source super-options`
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(mount_point) = fields.get(4) else { continue };
        let Some(dash) = fields.iter().position(|f| *f == "-") else { continue };
        let Some(fstype) = fields.get(dash + 1) else { continue };
        let mount_point = mount_point.replace("\\040", " ");
        if path.starts_with(&mount_point) && best.as_ref().is_none_or(|(len, _)| mount_point.len() >= *len) {
            best = Some((mount_point.len(), (*fstype).to_owned()));
        }
    }
    best.map(|(_, fstype)| fstype)
}
