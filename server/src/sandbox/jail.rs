//! One bubblewrap process: the argument list (a pure function of a
//! [`JailSpec`], so tests can read it) and the spawn.
//!
//! How a jail starts: the server (root) spawns `/bin/sh` as the sandbox uid
//! and gid (`SANDBOX_UID`, supplementary groups dropped) in a new process
//! group, with an empty environment. That wrapper writes its pid to the
//! sandbox's `cgroup.procs` files, sets the rlimits, opens the seccomp filter
//! on fd 3 and execs bubblewrap, which (unprivileged) creates new user, pid,
//! ipc, uts, net and cgroup namespaces with the same uid inside (so files the
//! sandbox creates belong to a real, unprivileged host uid, never to root),
//! forbids further user namespaces, drops every capability, sets
//! `no_new_privs`, loads the seccomp filter and builds the root: an empty
//! tmpfs with `/usr` (without the configuration tools keep there,
//! [`USR_HIDDEN`]) and the `/bin`, `/lib*`, `/sbin` links or directories as
//! the host has them, a minimal `/etc` (generated `passwd`, `group`, `hosts`,
//! `nsswitch.conf` plus a fixed list of host files that hold no secrets),
//! private `/proc`, `/dev` and `/tmp`, the spec's own mounts, and finally
//! remounts `/` read-only. `--die-with-parent` ties the sandbox to the server
//! process; killing the bubblewrap process ends its pid namespace and with it
//! every process of the sandbox.
//!
//! The server must run as root (it switches to the sandbox uid); otherwise
//! jails do not start, and every tool call that needs one fails saying so.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::SandboxError;
use super::layout::{SANDBOX_GID, SANDBOX_UID};

/// The sandbox's hostname.
pub const HOSTNAME: &str = "sandbox";
/// Size of the sandbox's private `/tmp` (it is memory, charged to the
/// sandbox's memory cgroup).
pub const TMP_SIZE_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Size of the sandbox's `/dev/shm` (memory too, charged the same way).
pub const SHM_SIZE_BYTES: u64 = 512 * 1024 * 1024;
/// Processes per user (the rlimit) of a sandbox without a cgroup. All
/// sandboxes share one uid and the kernel counts this limit per user across
/// user namespaces, so it is a machine-wide backstop, shared by every
/// sandbox, for when cgroups are unavailable.
pub const RLIMIT_NPROC: u64 = 4096;
/// The same rlimit for a sandbox in a cgroup, whose `pids.max` is its own
/// limit: high enough that every live jail at its limit together stays
/// under it (the rlimit counts them all), so sandboxes at their pids limit
/// never keep another session from starting processes. The rest is room for
/// jails being stopped while others start, and other processes of the uid.
pub const RLIMIT_NPROC_WITH_CGROUP: u64 = 2 * super::MAX_LIVE_JAILS as u64 * super::cgroup::PIDS_MAX as u64;
/// Largest file a sandbox process may write.
pub const RLIMIT_FSIZE_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// Address space per process: a backstop below the machine's memory, high
/// enough for runtimes that reserve large virtual areas (V8, Go, the JVM).
pub const RLIMIT_AS_BYTES: u64 = 16 * 1024 * 1024 * 1024;
/// Open files per process.
pub const RLIMIT_NOFILE: u64 = 8192;

/// Host entries of `/etc` bound read-only into every sandbox when present:
/// what libraries, TLS and package managers read, and nothing that holds
/// secrets (no `shadow`, `ssl/private`, `gitconfig` credential helpers, ...).
/// Package-manager configuration often does (`pip.conf` index URLs with
/// tokens, `npmrc` auth tokens, apt's `auth.conf.d` and proxy settings in
/// `apt.conf.d`), so none of it is bound: apt gets only what resolves its
/// sources (the source lists, trusted keys, pinning), pip and npm the
/// generated [`GENERATED_TRUST`].
const ETC_ENTRIES: &[&str] = &[
    "alternatives",
    "ssl/certs",
    "ssl/openssl.cnf",
    "ca-certificates",
    "ca-certificates.conf",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "timezone",
    "mime.types",
    "protocols",
    "services",
    "os-release",
    "debian_version",
    "inputrc",
    "gai.conf",
    "host.conf",
    "python3",
    "python3.11",
    "python3.12",
    "python3.13",
    "perl",
    "apt/sources.list",
    "apt/sources.list.d",
    "apt/trusted.gpg",
    "apt/trusted.gpg.d",
    "apt/keyrings",
    "apt/preferences",
    "apt/preferences.d",
];

/// The host's CA bundle (bound with `ssl/certs`), which holds any CA the
/// operator added (an egress proxy's, a private registry's).
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Generated package-manager configuration, written and bound only when the
/// host has [`CA_BUNDLE`]: pip and npm trust the host's CAs (pip's own
/// bundle would not hold an operator's), and carry nothing else of the
/// host's configuration.
const GENERATED_TRUST: &[(&str, &str)] = &[
    ("pip.conf", "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n"),
    ("npmrc", "cafile=/etc/ssl/certs/ca-certificates.crt\n"),
];

/// Files of the generated minimal `/etc`.
const GENERATED_ETC: &[(&str, &str)] = &[
    ("passwd", "root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:sandbox:/workspace:/bin/bash\n"),
    ("group", "root:x:0:\nnogroup:x:65534:\n"),
    ("hosts", "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
    ("nsswitch.conf", "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"),
];

/// Paths below the host's `/usr` that no sandbox sees, because tools keep
/// system configuration there, which often holds credentials (registry
/// tokens, credential helpers, proxy passwords), as `/etc` does (which no
/// sandbox gets either, but a fixed list of harmless entries):
///
/// - the system configuration directory (`$prefix/etc`, autoconf's
///   `sysconfdir`) of the two prefixes under `/usr`: where a tool installed
///   there keeps what it would otherwise keep in `/etc`. npm's global
///   `npmrc` (`globalconfig` is `$PREFIX/etc/npmrc`, where `npm config set
///   --global` writes), git's system `gitconfig` (`$(prefix)/etc/gitconfig`
///   for a git built from source), gem's `gemrc`, wget's `wgetrc`, ...;
/// - pip's site configuration, `$prefix/pip.conf` (`sys.prefix`: `/usr` for
///   the distribution's Python, `/usr/local` for one built from source);
/// - a cargo home under `/usr/local` (rust images set `CARGO_HOME` there):
///   its registry tokens and configuration. Cargo in a sandbox uses its own
///   home (`$HOME/.cargo`), so it never reads them.
///
/// Only what exists when a jail is built is hidden; `/usr` is then rebuilt
/// from binds of its other entries ([`usr_args`]).
const USR_HIDDEN: &[&str] = &[
    "etc",
    "pip.conf",
    "local/etc",
    "local/pip.conf",
    "local/cargo/credentials",
    "local/cargo/credentials.toml",
    "local/cargo/config",
    "local/cargo/config.toml",
];

/// The top-level system entries bound from the host as they are there (a
/// symlink stays a symlink, a directory is bound read-only).
const SYSTEM_ENTRIES: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// The wrapper that joins the cgroups, sets the rlimits and execs bwrap with
/// the seccomp filter on fd 3. Arguments: cgroup.procs files (space
/// separated), the filter's path, NPROC, FSIZE (512-byte blocks), AS (KiB),
/// NOFILE, then the bwrap command line.
const WRAPPER: &str = r#"set -e
for f in $1; do echo $$ > "$f"; done
ulimit -p "$3"
ulimit -f "$4"
ulimit -v "$5"
ulimit -n "$6"
ulimit -c 0
trap '' XFSZ
seccomp=$2
shift 6
exec "$@" 3< "$seccomp"
"#;

/// What the server prepared once for every jail.
#[derive(Debug, Clone)]
pub struct System {
    pub bwrap: PathBuf,
    /// The generated `/etc` files and the seccomp filter live here.
    pub dir: PathBuf,
}

impl System {
    /// Writes the generated `/etc` files and the seccomp filter under `dir`
    /// (readable by the sandbox uid, writable only by root).
    pub fn prepare(bwrap: PathBuf, dir: &Path) -> Result<System, SandboxError> {
        let setup = |what: &str| {
            let what = what.to_owned();
            move |source| SandboxError::Setup { what, source }
        };
        let etc = dir.join("etc");
        std::fs::create_dir_all(&etc).map_err(setup("creating the sandbox /etc"))?;
        for (name, text) in GENERATED_ETC {
            std::fs::write(etc.join(name), text).map_err(setup("writing the sandbox /etc"))?;
        }
        let trusted = Path::new(CA_BUNDLE).is_file();
        for (name, text) in GENERATED_TRUST {
            let path = etc.join(name);
            if trusted {
                std::fs::write(&path, text).map_err(setup("writing the sandbox /etc"))?;
            } else {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => return Err(setup("writing the sandbox /etc")(err)),
                }
            }
        }
        let program = super::seccomp::program()
            .ok_or(SandboxError::Unsupported { reason: "no seccomp filter for this CPU architecture".to_owned() })?;
        std::fs::write(dir.join("seccomp.bpf"), program).map_err(setup("writing the seccomp filter"))?;
        for path in [dir, etc.as_path()] {
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .map_err(setup("setting permissions of the sandbox /etc"))?;
        }
        Ok(System { bwrap, dir: dir.to_owned() })
    }

    fn seccomp(&self) -> PathBuf {
        self.dir.join("seccomp.bpf")
    }
}

/// A mount of the spec, on top of the system ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// Read-write bind of a host path.
    Bind { host: PathBuf, dest: String },
    /// Read-only bind of a host path.
    ReadOnly { host: PathBuf, dest: String },
}

/// What one jail is: its mounts, environment, command and cgroup.
#[derive(Debug, Clone)]
pub struct JailSpec {
    pub mounts: Vec<Mount>,
    pub env: Vec<(String, String)>,
    pub chdir: String,
    pub command: Vec<String>,
    pub cgroup_procs: Vec<PathBuf>,
    /// The largest file a process in the jail may write (`RLIMIT_FSIZE`):
    /// [`RLIMIT_FSIZE_BYTES`], or 0 for a jail that starts over its disk
    /// limit (it may delete files, not write them). `SIGXFSZ` is ignored, so
    /// a write past it fails with `EFBIG` instead of killing the writer.
    pub max_file_bytes: u64,
}

/// bubblewrap's arguments for `spec` (after the wrapper's own ones).
pub fn bwrap_args(system: &System, spec: &JailSpec) -> Result<Vec<OsString>, SandboxError> {
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
    push(&[
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-net",
        "--unshare-cgroup-try",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--seccomp",
        "3",
        "--hostname",
        HOSTNAME,
        "--clearenv",
    ]);
    let uid = SANDBOX_UID.to_string();
    let gid = SANDBOX_GID.to_string();
    push(&["--uid", &uid, "--gid", &gid]);
    for (key, value) in &spec.env {
        push(&["--setenv", key, value]);
    }
    args.extend(usr_args(Path::new("/usr"))?);
    for name in SYSTEM_ENTRIES {
        let host = Path::new("/").join(name);
        let dest = format!("/{name}");
        match std::fs::read_link(&host) {
            Ok(target) => {
                args.extend(["--symlink".into(), target.into_os_string(), dest.into()]);
            }
            Err(_) if host.is_dir() => args.extend(["--ro-bind".into(), host.into_os_string(), dest.into()]),
            Err(_) => {}
        }
    }
    let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
    push(&["--dir", "/etc"]);
    for (name, _) in GENERATED_ETC {
        args.extend([
            "--ro-bind".into(),
            system.dir.join("etc").join(name).into_os_string(),
            format!("/etc/{name}").into(),
        ]);
    }
    for (name, _) in GENERATED_TRUST {
        let generated = system.dir.join("etc").join(name);
        if generated.is_file() {
            args.extend(["--ro-bind".into(), generated.into_os_string(), format!("/etc/{name}").into()]);
        }
    }
    for name in ETC_ENTRIES {
        let host = Path::new("/etc").join(name);
        if host.exists() {
            args.extend(["--ro-bind".into(), host.into_os_string(), format!("/etc/{name}").into()]);
        }
    }
    let tmp_size = TMP_SIZE_BYTES.to_string();
    let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
    let shm_size = SHM_SIZE_BYTES.to_string();
    // /dev is bubblewrap's tmpfs of device nodes: read-only, with a sized
    // tmpfs for POSIX shared memory in it (`shm_open`, semaphores).
    push(&["--proc", "/proc", "--dev", "/dev", "--size", &shm_size, "--tmpfs", "/dev/shm", "--remount-ro", "/dev"]);
    push(&["--size", &tmp_size, "--tmpfs", "/tmp"]);
    push(&["--dir", "/var", "--symlink", "../tmp", "/var/tmp"]);
    for mount in &spec.mounts {
        let (flag, host, dest) = match mount {
            Mount::Bind { host, dest } => ("--bind", host, dest),
            Mount::ReadOnly { host, dest } => ("--ro-bind", host, dest),
        };
        args.extend([flag.into(), host.clone().into_os_string(), dest.into()]);
    }
    let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
    push(&["--remount-ro", "/", "--chdir", &spec.chdir, "--"]);
    push(&spec.command.iter().map(String::as_str).collect::<Vec<_>>());
    Ok(args)
}

/// The arguments that give a sandbox the host's `host_usr` as `/usr`,
/// read-only, without the [`USR_HIDDEN`] paths it has: one bind of the
/// whole when it has none (the common case), else the directories above a
/// hidden path are made anew and every other entry in them is bound (a
/// symlink made as it is), so a hidden path does not exist in the sandbox at
/// all (tools read a missing configuration file as none). A hidden path
/// reached through a symlink within `/usr` (a `local` that links elsewhere
/// in `/usr`) is hidden where it really is too.
fn usr_args(host_usr: &Path) -> Result<Vec<OsString>, SandboxError> {
    let real_usr = std::fs::canonicalize(host_usr).unwrap_or_else(|_| host_usr.to_owned());
    let mut hidden: Vec<PathBuf> = Vec::new();
    for rel in USR_HIDDEN {
        let path = host_usr.join(rel);
        if std::fs::symlink_metadata(&path).is_err() {
            continue;
        }
        hidden.push(PathBuf::from(rel));
        if let Ok(real) = std::fs::canonicalize(&path)
            && let Ok(real_rel) = real.strip_prefix(&real_usr)
            && !real_rel.as_os_str().is_empty()
        {
            hidden.push(real_rel.to_owned());
        }
    }
    let mut args = Vec::new();
    if hidden.is_empty() {
        args.extend(["--ro-bind".into(), host_usr.as_os_str().to_owned(), "/usr".into()]);
        return Ok(args);
    }
    bind_all_but(&mut args, host_usr, Path::new("/usr"), &hidden)?;
    Ok(args)
}

/// Makes `dest` a new directory holding `host`'s entries, bound read-only,
/// but `hidden` (paths relative to `host`, none empty), recursing into the
/// directories that hold hidden paths.
fn bind_all_but(args: &mut Vec<OsString>, host: &Path, dest: &Path, hidden: &[PathBuf]) -> Result<(), SandboxError> {
    let reading = |source| SandboxError::Setup { what: format!("reading {} for the sandbox", host.display()), source };
    args.extend(["--dir".into(), dest.as_os_str().to_owned()]);
    let mut entries = std::fs::read_dir(host)
        .map_err(reading)?
        .map(|entry| entry.and_then(|entry| Ok((entry.file_name(), entry.file_type()?))))
        .collect::<Result<Vec<_>, _>>()
        .map_err(reading)?;
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, kind) in entries {
        if hidden.iter().any(|path| path.as_os_str() == name.as_os_str()) {
            continue;
        }
        let below: Vec<PathBuf> = hidden
            .iter()
            .filter_map(|path| path.strip_prefix(&name).ok())
            .filter(|rest| !rest.as_os_str().is_empty())
            .map(Path::to_owned)
            .collect();
        let (source, target) = (host.join(&name), dest.join(&name));
        if kind.is_symlink() {
            let link = std::fs::read_link(&source).map_err(reading)?;
            args.extend(["--symlink".into(), link.into_os_string(), target.into_os_string()]);
        } else if kind.is_dir() && !below.is_empty() {
            bind_all_but(args, &source, &target, &below)?;
        } else {
            args.extend(["--ro-bind".into(), source.into_os_string(), target.into_os_string()]);
        }
    }
    Ok(())
}

/// The rlimits the wrapper sets, each no higher than the server's own hard
/// limit (an unprivileged process cannot raise a hard limit).
pub(crate) fn rlimits(max_file_bytes: u64, in_cgroup: bool) -> [String; 4] {
    use rustix::process::{Resource, getrlimit};
    let capped = |resource: Resource, want: u64| getrlimit(resource).maximum.map_or(want, |max| max.min(want));
    let nproc = if in_cgroup { RLIMIT_NPROC_WITH_CGROUP } else { RLIMIT_NPROC };
    [
        capped(Resource::Nproc, nproc).to_string(),
        (capped(Resource::Fsize, max_file_bytes) / 512).to_string(),
        (capped(Resource::As, RLIMIT_AS_BYTES) / 1024).to_string(),
        capped(Resource::Nofile, RLIMIT_NOFILE).to_string(),
    ]
}

/// A running jail: the bubblewrap process and its stdio.
#[derive(Debug)]
pub struct Jail {
    pub child: tokio::process::Child,
    /// The process group of the wrapper/bubblewrap process.
    pub pgid: Option<rustix::process::Pid>,
}

impl Jail {
    /// Starts `spec` with piped stdin, stdout and stderr. Must be called on a
    /// thread that outlives the jail (a runtime worker, not a blocking-pool
    /// thread): the parent-death signal follows the spawning thread.
    pub fn spawn(system: &System, spec: &JailSpec) -> Result<Jail, SandboxError> {
        if !system.bwrap.exists() {
            return Err(SandboxError::NoBubblewrap { path: system.bwrap.clone() });
        }
        if !rustix::process::geteuid().is_root() {
            return Err(SandboxError::NotRoot);
        }
        let procs: Vec<String> = spec.cgroup_procs.iter().map(|p| p.display().to_string()).collect();
        let [nproc, fsize, address_space, nofile] = rlimits(spec.max_file_bytes, !spec.cgroup_procs.is_empty());
        let mut command = tokio::process::Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(WRAPPER)
            .arg("logbook-sandbox")
            .arg(procs.join(" "))
            .arg(system.seccomp())
            .args([nproc, fsize, address_space, nofile])
            .arg(&system.bwrap)
            .args(bwrap_args(system, spec)?)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .current_dir("/")
            .uid(SANDBOX_UID)
            .gid(SANDBOX_GID)
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = command.spawn().map_err(|source| SandboxError::Setup {
            what: "starting the sandbox (/bin/sh and bubblewrap)".to_owned(),
            source,
        })?;
        let pgid = child.id().and_then(|id| rustix::process::Pid::from_raw(id as i32));
        Ok(Jail { child, pgid })
    }

    /// Kills the jail's process group (bubblewrap; its pid namespace, and so
    /// every sandbox process, goes with it).
    pub fn kill(&mut self) {
        if let Some(pgid) = self.pgid {
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
        let _ = self.child.start_kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_argument_list_isolates_and_confines() {
        let system = System { bwrap: "/usr/bin/bwrap".into(), dir: "/data/sandboxes/.system".into() };
        let spec = JailSpec {
            mounts: vec![
                Mount::Bind { host: "/data/ws".into(), dest: "/workspace".to_owned() },
                Mount::ReadOnly { host: "/data/up".into(), dest: "/mnt/session/uploads".to_owned() },
            ],
            env: vec![("HOME".to_owned(), "/workspace".to_owned())],
            chdir: "/workspace".to_owned(),
            command: vec!["/bin/bash".to_owned(), "--noprofile".to_owned(), "--norc".to_owned()],
            cgroup_procs: Vec::new(),
            max_file_bytes: RLIMIT_FSIZE_BYTES,
        };
        let args: Vec<String> =
            bwrap_args(&system, &spec).unwrap().into_iter().map(|a| a.into_string().unwrap()).collect();
        let joined = args.join(" ");
        for expected in [
            "--unshare-user --unshare-pid --unshare-ipc --unshare-uts --unshare-net",
            "--disable-userns",
            "--die-with-parent --new-session",
            "--cap-drop ALL",
            "--seccomp 3",
            "--clearenv",
            "--uid 65534 --gid 65534",
            "--setenv HOME /workspace",
            "--proc /proc --dev /dev",
            "--tmpfs /tmp",
            "--bind /data/ws /workspace",
            "--ro-bind /data/up /mnt/session/uploads",
            "--ro-bind /data/sandboxes/.system/etc/passwd /etc/passwd",
            "--remount-ro / --chdir /workspace -- /bin/bash --noprofile --norc",
        ] {
            assert!(joined.contains(expected), "missing {expected:?} in {joined}");
        }
        for forbidden in
            ["--share-net", "--ro-bind / /", "--bind / ", "shadow", "ssl/private", "gitconfig", "--cap-add"]
        {
            assert!(!joined.contains(forbidden), "{forbidden:?} in {joined}");
        }
        // The host's /usr, whole or rebuilt around hidden paths (`usr_args`).
        assert!(joined.contains("--ro-bind /usr /usr") || joined.contains("--dir /usr "), "{joined}");
        // The remount and the command come last.
        assert!(joined.ends_with("-- /bin/bash --noprofile --norc"));
    }

    /// Goal: no host package-manager configuration, which often holds
    /// credentials (registry tokens, apt's auth.conf.d, proxy settings in
    /// apt.conf.d), is bound into a sandbox; apt's source lists and keys are.
    /// Method: the bind sources of the argument list, on this host.
    #[test]
    fn package_manager_credentials_are_not_bound() {
        let system = System { bwrap: "/usr/bin/bwrap".into(), dir: "/nonexistent/.system".into() };
        let spec = JailSpec {
            mounts: Vec::new(),
            env: Vec::new(),
            chdir: "/".to_owned(),
            command: vec!["/bin/true".to_owned()],
            cgroup_procs: Vec::new(),
            max_file_bytes: RLIMIT_FSIZE_BYTES,
        };
        let args: Vec<String> =
            bwrap_args(&system, &spec).unwrap().into_iter().map(|a| a.into_string().unwrap()).collect();
        let sources: Vec<&str> = args
            .windows(2)
            .filter(|pair| matches!(pair[0].as_str(), "--ro-bind" | "--bind" | "--ro-bind-try" | "--bind-try"))
            .map(|pair| pair[1].as_str())
            .collect();
        for source in &sources {
            let forbidden = matches!(*source, "/etc" | "/etc/apt" | "/etc/pip.conf" | "/etc/npmrc")
                || source.starts_with("/etc/apt/apt.conf")
                || source.starts_with("/etc/apt/auth.conf");
            assert!(!forbidden, "{source} is bound into the sandbox: {sources:?}");
        }
        for name in ETC_ENTRIES {
            assert!(!name.contains("pip") && !name.contains("npm") && *name != "apt", "{name}");
            assert!(!name.starts_with("apt/apt.conf") && !name.starts_with("apt/auth.conf"), "{name}");
        }
        if Path::new("/etc/apt/sources.list.d").exists() {
            assert!(sources.contains(&"/etc/apt/sources.list.d"), "apt's sources are needed: {sources:?}");
        }
    }

    /// Pairs of arguments: a bind's (source, destination), a symlink's
    /// (target, link).
    type Pairs = Vec<(String, String)>;

    /// The binds, the destination of each made directory and the symlinks
    /// in `args`.
    fn mounts(args: &[OsString]) -> (Pairs, Vec<String>, Pairs) {
        let args: Vec<String> = args.iter().map(|a| a.to_str().unwrap().to_owned()).collect();
        let (mut binds, mut dirs, mut links) = (Vec::new(), Vec::new(), Vec::new());
        let mut idx = 0;
        while idx < args.len() {
            match args[idx].as_str() {
                "--ro-bind" => {
                    binds.push((args[idx + 1].clone(), args[idx + 2].clone()));
                    idx += 3;
                }
                "--symlink" => {
                    links.push((args[idx + 1].clone(), args[idx + 2].clone()));
                    idx += 3;
                }
                "--dir" => {
                    dirs.push(args[idx + 1].clone());
                    idx += 2;
                }
                other => panic!("unexpected argument {other:?} in {args:?}"),
            }
        }
        (binds, dirs, links)
    }

    /// Goal: the host's package-manager and git configuration kept under
    /// `/usr` is not in a sandbox (docs/sandbox.md: never `gitconfig`,
    /// `npmrc`, `pip.conf`), on any host, not only one that has such files:
    /// npm's global `npmrc` is `$PREFIX/etc/npmrc`, git's system `gitconfig`
    /// `$(prefix)/etc/gitconfig`, pip's `$prefix/pip.conf`, for the prefixes
    /// `/usr` and `/usr/local`, and rust images keep a cargo home (with its
    /// credentials) in `/usr/local/cargo`. Method: the arguments for a fake
    /// host `/usr` holding each, against what every other entry must be.
    #[test]
    fn configuration_under_usr_is_hidden_and_everything_else_bound() {
        let root = tempfile::tempdir().unwrap();
        let usr = root.path().join("usr");
        for dir in ["bin", "share/man", "etc", "local/bin", "local/etc/ssl", "local/cargo/bin", "local/lib"] {
            std::fs::create_dir_all(usr.join(dir)).unwrap();
        }
        for file in [
            "bin/git",
            "etc/npmrc",
            "pip.conf",
            "local/etc/gitconfig",
            "local/etc/npmrc",
            "local/pip.conf",
            "local/cargo/credentials.toml",
            "local/cargo/bin/cargo",
            "local/lib/libx.so",
        ] {
            std::fs::write(usr.join(file), "token=secret\n").unwrap();
        }
        std::os::unix::fs::symlink("share/man", usr.join("local/man")).unwrap();
        let (binds, dirs, links) = mounts(&usr_args(&usr).unwrap());
        let at = |rel: &str| usr.join(rel).display().to_string();
        let mut expected_binds: Vec<(String, String)> = ["bin", "share", "local/bin", "local/cargo/bin", "local/lib"]
            .iter()
            .map(|rel| (at(rel), format!("/usr/{rel}")))
            .collect();
        expected_binds.sort();
        let mut binds_sorted = binds.clone();
        binds_sorted.sort();
        assert_eq!(binds_sorted, expected_binds);
        assert_eq!(dirs, ["/usr", "/usr/local", "/usr/local/cargo"]);
        assert_eq!(links, [("share/man".to_owned(), "/usr/local/man".to_owned())]);
        // Nothing bound is or holds a hidden path.
        for (source, _) in &binds {
            for rel in USR_HIDDEN {
                assert!(!at(rel).starts_with(source.as_str()), "{source} holds {rel}");
            }
        }

        // A host without any: /usr whole, as it is.
        let plain = root.path().join("plain");
        std::fs::create_dir_all(plain.join("bin")).unwrap();
        let (binds, dirs, links) = mounts(&usr_args(&plain).unwrap());
        assert_eq!((binds, dirs.len(), links.len()), (vec![(plain.display().to_string(), "/usr".to_owned())], 0, 0));
    }

    /// Goal: a hidden path reached through a symlink inside `/usr` is hidden
    /// where it really is too. Method: a fake `/usr` whose `local` links to
    /// `opt-local`, which holds `etc/npmrc`.
    #[test]
    fn configuration_behind_a_symlink_within_usr_is_hidden_too() {
        let root = tempfile::tempdir().unwrap();
        let usr = root.path().join("usr");
        std::fs::create_dir_all(usr.join("opt-local/etc")).unwrap();
        std::fs::create_dir_all(usr.join("opt-local/bin")).unwrap();
        std::fs::write(usr.join("opt-local/etc/npmrc"), "//registry.example/:_authToken=secret\n").unwrap();
        std::os::unix::fs::symlink("opt-local", usr.join("local")).unwrap();
        let (binds, dirs, links) = mounts(&usr_args(&usr).unwrap());
        assert_eq!(binds, [(usr.join("opt-local/bin").display().to_string(), "/usr/opt-local/bin".to_owned())]);
        assert_eq!(dirs, ["/usr", "/usr/opt-local"]);
        assert_eq!(links, [("opt-local".to_owned(), "/usr/local".to_owned())]);
    }
}
