//! Per-sandbox cgroups: a `pids` limit (a fork bomb stays inside its own
//! sandbox) and a `memory` limit (a memory bomb is OOM-killed inside its own
//! sandbox), where the machine lets the server create cgroups.
//!
//! Detection at startup: cgroup v2 when `/sys/fs/cgroup/cgroup.controllers`
//! exists, else v1 with separate `pids` and `memory` hierarchies (this
//! project's machines), else none. Sandboxes are nested under the server's
//! own cgroup (read from `/proc/self/cgroup`), in `logbook/`, so they stay
//! inside whatever limits the server itself runs under. Without cgroups the
//! rlimits of the sandbox still apply (see `jail.rs`), but processes are then
//! limited per user across all sandboxes, not per sandbox: the server logs
//! that at startup.
//!
//! A sandbox's processes join its cgroup before bubblewrap starts: the
//! wrapper shell writes its own pid to `cgroup.procs` (the only file of the
//! cgroup handed to the sandbox uid) and then execs bubblewrap, so no process
//! of the sandbox ever runs outside it.

use std::path::{Path, PathBuf};

/// Processes (and threads) one sandbox may have at once.
pub const PIDS_MAX: u32 = 256;
/// Memory (RSS, page cache and tmpfs) one sandbox may use.
pub const MEMORY_MAX_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// The directory under the server's own cgroup that holds the sandboxes'.
pub const CGROUP_DIR: &str = "logbook";

/// What the machine offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupSupport {
    /// v1: the base directories (under the server's own cgroup) of the pids
    /// and memory hierarchies.
    V1 { pids: PathBuf, memory: PathBuf },
    /// v2: the base directory, with the pids and memory controllers enabled
    /// for its children.
    V2 { base: PathBuf },
    /// No writable cgroups; why not.
    Unavailable { reason: String },
}

impl CgroupSupport {
    /// Finds out what the machine offers, creating the base directories.
    pub fn detect() -> CgroupSupport {
        let root = Path::new("/sys/fs/cgroup");
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        if root.join("cgroup.controllers").exists() {
            let path = own_path(&own, None).unwrap_or_default();
            let base = root.join(path.trim_start_matches('/')).join(CGROUP_DIR);
            return match setup_v2(&base) {
                Ok(()) => CgroupSupport::V2 { base },
                Err(err) => CgroupSupport::Unavailable { reason: format!("cgroup v2 at {}: {err}", base.display()) },
            };
        }
        let base = |controller: &str| -> Result<PathBuf, String> {
            let mount = root.join(controller);
            if !mount.join("cgroup.procs").exists() {
                return Err(format!("no cgroup v1 {controller} hierarchy at {}", mount.display()));
            }
            let path = own_path(&own, Some(controller)).unwrap_or_default();
            let base = mount.join(path.trim_start_matches('/')).join(CGROUP_DIR);
            std::fs::create_dir_all(&base).map_err(|err| format!("creating {}: {err}", base.display()))?;
            Ok(base)
        };
        match (base("pids"), base("memory")) {
            (Ok(pids), Ok(memory)) => CgroupSupport::V1 { pids, memory },
            (Err(reason), _) | (_, Err(reason)) => CgroupSupport::Unavailable { reason },
        }
    }

    /// A line for the startup log.
    pub fn describe(&self) -> String {
        match self {
            CgroupSupport::V1 { pids, memory } => format!(
                "cgroup v1: each sandbox limited to {PIDS_MAX} processes ({}) and {} MiB ({})",
                pids.display(),
                MEMORY_MAX_BYTES >> 20,
                memory.display()
            ),
            CgroupSupport::V2 { base } => format!(
                "cgroup v2: each sandbox limited to {PIDS_MAX} processes and {} MiB ({})",
                MEMORY_MAX_BYTES >> 20,
                base.display()
            ),
            CgroupSupport::Unavailable { reason } => format!(
                "no per-sandbox cgroup limits ({reason}); only rlimits apply, and the process limit is shared by all sandboxes"
            ),
        }
    }
}

/// The server's own cgroup path in the hierarchy of `controller` (v1) or the
/// unified one (v2), from `/proc/self/cgroup`.
fn own_path(proc_cgroup: &str, controller: Option<&str>) -> Option<String> {
    proc_cgroup.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let matches = match controller {
            Some(name) => controllers.split(',').any(|c| c == name),
            None => controllers.is_empty(),
        };
        matches.then(|| path.to_owned())
    })
}

fn setup_v2(base: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(base)?;
    std::fs::write(base.join("cgroup.subtree_control"), "+pids +memory")
}

/// The cgroup(s) of one sandbox; removed (after killing what is left in
/// them) by [`SandboxCgroup::destroy`].
#[derive(Debug)]
pub struct SandboxCgroup {
    dirs: Vec<PathBuf>,
}

impl SandboxCgroup {
    /// Creates the cgroup `name` with the limits, handing its `cgroup.procs`
    /// to `uid` so the sandbox's wrapper can move itself in. `None` when the
    /// machine has no cgroups.
    pub fn create(support: &CgroupSupport, name: &str, uid: u32) -> std::io::Result<Option<SandboxCgroup>> {
        let dirs = match support {
            CgroupSupport::Unavailable { .. } => return Ok(None),
            CgroupSupport::V1 { pids, memory } => {
                let (pids, memory) = (pids.join(name), memory.join(name));
                make_dir(&pids)?;
                make_dir(&memory)?;
                std::fs::write(pids.join("pids.max"), PIDS_MAX.to_string())?;
                std::fs::write(memory.join("memory.limit_in_bytes"), MEMORY_MAX_BYTES.to_string())?;
                vec![pids, memory]
            }
            CgroupSupport::V2 { base } => {
                let dir = base.join(name);
                make_dir(&dir)?;
                std::fs::write(dir.join("pids.max"), PIDS_MAX.to_string())?;
                std::fs::write(dir.join("memory.max"), MEMORY_MAX_BYTES.to_string())?;
                std::fs::write(dir.join("memory.swap.max"), "0").or_else(ignore_missing)?;
                vec![dir]
            }
        };
        for dir in &dirs {
            std::os::unix::fs::chown(dir.join("cgroup.procs"), Some(uid), None)?;
        }
        Ok(Some(SandboxCgroup { dirs }))
    }

    /// The `cgroup.procs` files a process writes its pid to, to join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|dir| dir.join("cgroup.procs")).collect()
    }

    /// Pids in the cgroup (from the first hierarchy).
    pub fn pids(&self) -> Vec<i32> {
        let Some(dir) = self.dirs.first() else { return Vec::new() };
        std::fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect()
    }

    /// Kills every process in the cgroup and removes it, retrying while
    /// processes are still exiting (bounded: a cgroup that stays busy is left
    /// behind and logged).
    pub async fn destroy(self) {
        const ATTEMPTS: u32 = 100;
        const PAUSE: std::time::Duration = std::time::Duration::from_millis(20);
        for _ in 0..ATTEMPTS {
            for pid in self.pids() {
                if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
            let mut busy = false;
            for dir in &self.dirs {
                match std::fs::remove_dir(dir) {
                    Ok(()) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(_) => busy = true,
                }
            }
            if !busy {
                return;
            }
            tokio::time::sleep(PAUSE).await;
        }
        tracing::warn!(dirs = ?self.dirs, "a sandbox cgroup is still busy; left behind");
    }
}

impl Drop for SandboxCgroup {
    /// Best effort for a cgroup that was not destroyed (a cancelled start):
    /// removed if already empty, else left behind.
    fn drop(&mut self) {
        for dir in &self.dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn make_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(err),
    }
}

fn ignore_missing(err: std::io::Error) -> std::io::Result<()> {
    if err.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(err) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_servers_own_cgroup_per_controller() {
        let text = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/abc\n3:cpu,cpuacct:/x\n0::/unified/path\n";
        assert_eq!(own_path(text, Some("memory")).as_deref(), Some("/process_api/abc"));
        assert_eq!(own_path(text, Some("pids")).as_deref(), Some("/"));
        assert_eq!(own_path(text, Some("cpuacct")).as_deref(), Some("/x"));
        assert_eq!(own_path(text, None).as_deref(), Some("/unified/path"));
        assert_eq!(own_path(text, Some("freezer")), None);
    }
}
