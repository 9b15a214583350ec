//! Environment packages: an environment's `apt`, `cargo`, `gem`, `go`, `npm`
//! and `pip` lists, installed once into a cached layer that every sandbox of
//! the environment mounts read-only at [`PACKAGES_DIR`].
//!
//! A layer is keyed by the blake3 hash of the package lists (so an updated
//! environment gets a new layer for its new sandboxes, and identical lists
//! share one) and lives in `DATA/packages/<key>/layer`, with the install's
//! output in `install.log` next to it. The install runs in a sandbox like any
//! other (same uid, namespaces, seccomp and cgroup limits; the layer bound
//! read-write), reaching the network through its own egress proxy with the
//! environment's policy plus the package-manager hosts. The managers run in
//! the documented order (apt, cargo, gem, go, npm, pip). It is written to a
//! partial directory and renamed into place only when everything succeeded
//! (and is on disk: a power loss never leaves a layer named complete whose
//! files were not written);
//! concurrent sessions of one environment wait for the same install. A failed
//! install is not cached on disk; its error is reused for
//! [`FAILED_INSTALL_RETRY_AFTER`], then the next sandbox tries again.
//!
//! How each manager installs (each needs its tool under the host's `/usr`;
//! a missing tool fails the install with a message naming it):
//! - apt: `apt-get -s install` against the host's package lists and dpkg
//!   status resolves the named packages and the dependencies the image lacks,
//!   `apt-get download` fetches them and `dpkg -x` unpacks them into the
//!   layer's `apt/`. Maintainer scripts do not run, nothing is configured,
//!   and programs that hard-code `/usr` paths may not find their files: the
//!   layer adds its `usr/bin` to `PATH` and its library directories to
//!   `LD_LIBRARY_PATH`, nothing more. The host needs `apt-get update` lists.
//! - cargo: `cargo install --root`; gem: `gem install --install-dir`
//!   (`name:version` pins become `-v`); go: `go install` with `GOBIN`
//!   (unpinned modules get `@latest`); npm: `npm install --global --prefix`;
//!   pip: `pip install --target`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::SandboxError;
use super::cgroup::{CgroupSupport, SandboxCgroup};
use super::jail::{JailSpec, Mount, System};
use super::layout::SANDBOX_UID;
use super::policy::EgressPolicy;
use super::proxy::{Proxy, Resolve};
use super::shell::{Completion, Shell};
use crate::api::environments::Packages;

/// Where the layer is mounted in sandboxes.
pub const PACKAGES_DIR: &str = "/opt/logbook/packages";
/// The data directory's subdirectory holding the layers.
pub const PACKAGES_SUBDIR: &str = "packages";
/// How long one environment's install may take.
pub const INSTALL_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// How long a failed install's error is reused before trying again.
pub const FAILED_INSTALL_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Bump when the layer layout or the install commands change.
const LAYER_FORMAT: &str = "logbook-packages-v1";
/// The host directories an apt install reads.
const APT_STATE: &[&str] = &["/var/lib/apt/lists", "/var/lib/dpkg"];

/// The layers of this server, and the installs in flight.
#[derive(Debug)]
pub struct PackageCache {
    root: PathBuf,
    installs: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    failures: Mutex<HashMap<String, (Instant, String)>>,
}

/// What an install needs from the sandbox machinery.
#[derive(Debug, Clone, Copy)]
pub struct InstallContext<'a> {
    pub system: &'a System,
    pub cgroups: &'a CgroupSupport,
    pub forwarder: &'a Path,
    pub resolver: &'a Arc<dyn Resolve>,
}

impl PackageCache {
    /// The cache in `data`, removing partial layers an interrupted install
    /// left behind (a data directory has one server at a time).
    pub fn new(data: &Path) -> PackageCache {
        let root = data.join(PACKAGES_SUBDIR);
        if let Ok(entries) = std::fs::read_dir(&root) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().contains(".partial-") {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        PackageCache { root, installs: Mutex::new(HashMap::new()), failures: Mutex::new(HashMap::new()) }
    }

    /// The layer for `packages`, installing it first if needed; `None` when
    /// there are no packages.
    pub async fn ensure(
        &self,
        ctx: InstallContext<'_>,
        packages: &Packages,
        policy: &EgressPolicy,
    ) -> Result<Option<PathBuf>, SandboxError> {
        if is_empty(packages) {
            return Ok(None);
        }
        let key = layer_key(packages);
        let dir = self.root.join(&key);
        let layer = dir.join("layer");
        if layer.is_dir() {
            return Ok(Some(layer));
        }
        let lock = {
            let mut installs = self.installs.lock().map_err(|_| poisoned())?;
            Arc::clone(installs.entry(key.clone()).or_default())
        };
        let _guard = lock.lock().await;
        if layer.is_dir() {
            return Ok(Some(layer));
        }
        if let Some((at, message)) = self.failures.lock().map_err(|_| poisoned())?.get(&key)
            && at.elapsed() < FAILED_INSTALL_RETRY_AFTER
        {
            return Err(SandboxError::Packages { detail: message.clone() });
        }
        let started = Instant::now();
        tracing::info!(layer = %key, summary = %summary(packages), "installing environment packages");
        match self.install(ctx, packages, policy, &key, &dir).await {
            Ok(()) => {
                tracing::info!(layer = %key, seconds = started.elapsed().as_secs_f64(), "environment packages installed");
                Ok(Some(layer))
            }
            Err(err) => {
                tracing::warn!(layer = %key, error = %err, "environment packages failed to install");
                let message =
                    if let SandboxError::Packages { detail } = &err { detail.clone() } else { err.to_string() };
                self.failures.lock().map_err(|_| poisoned())?.insert(key, (Instant::now(), message));
                Err(err)
            }
        }
    }

    async fn install(
        &self,
        ctx: InstallContext<'_>,
        packages: &Packages,
        policy: &EgressPolicy,
        key: &str,
        dir: &Path,
    ) -> Result<(), SandboxError> {
        let script = install_script(packages).map_err(|detail| SandboxError::Packages { detail })?;
        let setup = |what: &'static str| move |source| SandboxError::Setup { what: what.to_owned(), source };
        let partial = self.root.join(format!("{key}.partial-{:08x}", rand::random::<u32>()));
        let layer = partial.join("layer");
        let run = partial.join("run");
        std::fs::create_dir_all(&layer).map_err(setup("creating the package layer"))?;
        std::fs::create_dir_all(&run).map_err(setup("creating the package layer"))?;
        std::os::unix::fs::chown(&layer, Some(SANDBOX_UID), Some(super::layout::SANDBOX_GID))
            .map_err(setup("handing the package layer to the sandbox uid"))?;
        let proxy = Proxy::start(&run.join("proxy.sock"), policy.with_package_managers(), Arc::clone(ctx.resolver))
            .map_err(setup("starting the install's egress proxy"))?;
        let cgroup = SandboxCgroup::create(ctx.cgroups, &format!("install-{}", &partial_name(&partial)), SANDBOX_UID)
            .map_err(setup("creating the install's cgroup"))?;
        let mut mounts = vec![
            Mount::Bind { host: layer.clone(), dest: PACKAGES_DIR.to_owned() },
            Mount::ReadOnly { host: run.clone(), dest: super::RUN_DIR.to_owned() },
            Mount::ReadOnly { host: ctx.forwarder.to_owned(), dest: super::FORWARDER_PATH.to_owned() },
        ];
        for state in APT_STATE {
            if Path::new(state).is_dir() {
                mounts.push(Mount::ReadOnly { host: state.into(), dest: (*state).to_owned() });
            }
        }
        let mut env = super::base_env(None);
        env.retain(|(key, _)| key != "HOME");
        env.extend(
            [
                ("HOME", "/tmp"),
                ("npm_config_cache", "/tmp/npm-cache"),
                ("CARGO_HOME", "/tmp/cargo"),
                ("GOPATH", "/tmp/go"),
                ("GOCACHE", "/tmp/go-cache"),
                ("GEM_HOME", "/tmp/gem"),
                ("PIP_DISABLE_PIP_VERSION_CHECK", "1"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        let spec = JailSpec {
            mounts,
            env,
            chdir: "/tmp".to_owned(),
            command: super::SHELL_COMMAND.iter().map(|s| (*s).to_owned()).collect(),
            cgroup_procs: cgroup.as_ref().map(SandboxCgroup::procs_files).unwrap_or_default(),
            max_file_bytes: super::jail::RLIMIT_FSIZE_BYTES,
        };
        let result = async {
            let mut shell = Shell::start(ctx.system, &spec, super::FORWARDER_INIT).await?;
            let completion = shell.run(&script, INSTALL_TIMEOUT).await;
            shell.kill().await;
            completion.map_err(|source| SandboxError::Setup { what: "running the install".to_owned(), source })
        }
        .await;
        drop(proxy);
        if let Some(cgroup) = cgroup {
            cgroup.destroy().await;
        }
        let outcome = match result {
            Ok(Completion::Exited { status: 0, output, .. }) => Ok(output),
            Ok(Completion::Exited { status, output, .. }) => {
                Err(format!("the install failed (status {status}):\n{}", tail(&output)))
            }
            Ok(Completion::TimedOut { output, .. }) => {
                Err(format!("the install took over {}s:\n{}", INSTALL_TIMEOUT.as_secs(), tail(&output)))
            }
            Ok(Completion::ShellEnded { output, .. }) => Err(format!("the install's shell died:\n{}", tail(&output))),
            // (The install runs without a stop signal.)
            Ok(Completion::Stopped { output, .. }) => Err(format!("the install was stopped:\n{}", tail(&output))),
            Err(err) => Err(err.to_string()),
        };
        match outcome {
            Ok(output) => {
                std::fs::write(partial.join("install.log"), &output).map_err(setup("writing install.log"))?;
                let _ = std::fs::remove_dir_all(&run);
                // The layer's files must be on disk before its name says it
                // is complete: after a power loss, a layer renamed into place
                // with files the kernel had not yet written (empty, or
                // zeroed) would be mounted by every later sandbox. One
                // `syncfs` covers the whole tree (an install writes thousands
                // of files); the rename is then made durable.
                let layer_dir = std::fs::File::open(&partial).map_err(setup("opening the package layer"))?;
                rustix::fs::syncfs(&layer_dir).map_err(|err| setup("syncing the package layer")(err.into()))?;
                std::fs::rename(&partial, dir).map_err(setup("moving the package layer into place"))?;
                if let Some(parent) = dir.parent() {
                    std::fs::File::open(parent)
                        .and_then(|handle| handle.sync_all())
                        .map_err(setup("syncing the package layers' directory"))?;
                }
                Ok(())
            }
            Err(detail) => {
                let _ = std::fs::remove_dir_all(&partial);
                Err(SandboxError::Packages { detail })
            }
        }
    }
}

/// The environment variables a sandbox using `layer` gets, on top of the
/// base ones (`PATH` is returned whole).
pub fn layer_env() -> Vec<(String, String)> {
    let p = PACKAGES_DIR;
    let lib = "x86_64-linux-gnu";
    vec![
        (
            "PATH".to_owned(),
            format!(
                "{p}/pip/bin:{p}/npm/bin:{p}/go/bin:{p}/gem/bin:{p}/cargo/bin:{p}/apt/usr/local/bin:{p}/apt/usr/bin:{p}/apt/bin:{p}/apt/usr/sbin"
            ),
        ),
        ("PYTHONPATH".to_owned(), format!("{p}/pip")),
        ("NODE_PATH".to_owned(), format!("{p}/npm/lib/node_modules")),
        ("GEM_PATH".to_owned(), format!("{p}/gem")),
        ("LD_LIBRARY_PATH".to_owned(), format!("{p}/apt/usr/lib/{lib}:{p}/apt/usr/lib:{p}/apt/lib/{lib}:{p}/apt/lib")),
    ]
}

fn is_empty(packages: &Packages) -> bool {
    [&packages.apt, &packages.cargo, &packages.gem, &packages.go, &packages.npm, &packages.pip]
        .iter()
        .all(|list| list.is_empty())
}

/// The cache key of a set of package lists.
pub fn layer_key(packages: &Packages) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(LAYER_FORMAT.as_bytes());
    for (name, list) in managers(packages) {
        hasher.update(name.as_bytes());
        hasher.update(&(list.len() as u64).to_le_bytes());
        for item in list {
            hasher.update(&(item.len() as u64).to_le_bytes());
            hasher.update(item.as_bytes());
        }
    }
    hasher.finalize().to_hex()[..32].to_owned()
}

/// The managers in install order (alphabetical, as documented).
fn managers(packages: &Packages) -> [(&'static str, &Vec<String>); 6] {
    [
        ("apt", &packages.apt),
        ("cargo", &packages.cargo),
        ("gem", &packages.gem),
        ("go", &packages.go),
        ("npm", &packages.npm),
        ("pip", &packages.pip),
    ]
}

fn summary(packages: &Packages) -> String {
    managers(packages)
        .iter()
        .filter(|(_, list)| !list.is_empty())
        .map(|(name, list)| format!("{name} {}", list.len()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The bash script that installs `packages` into the layer; an error names a
/// package specification that cannot be passed to its manager safely.
pub fn install_script(packages: &Packages) -> Result<String, String> {
    for (name, list) in managers(packages) {
        for spec in list {
            if spec.starts_with('-') || spec.is_empty() || spec.contains(['\0', '\n']) {
                return Err(format!("{name} package {spec:?} is not a package specification"));
            }
        }
    }
    let quoted = |list: &[String]| list.iter().map(|s| shell_quote(s)).collect::<Vec<_>>().join(" ");
    let mut script = String::from(
        "set -euo pipefail\nP=/opt/logbook/packages\n\
         step() { printf '== %s\\n' \"$*\"; }\n\
         need() { command -v \"$1\" >/dev/null 2>&1 || { echo \"logbook: the $2 packages need $1, which is not installed on this server\"; exit 90; }; }\n",
    );
    if !packages.apt.is_empty() {
        script.push_str(&format!(
            "step 'apt: {n} packages'\nneed apt-get apt; need dpkg apt\n\
             A=(-o Debug::NoLocking=1 -o Dir::Cache=/tmp/apt -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= -o Dir::Log=/tmp/apt)\n\
             mkdir -p /tmp/apt/archives/partial /tmp/apt/debs \"$P/apt\"\n\
             names=$(apt-get \"${{A[@]}}\" -s -q install --no-install-recommends -- {list} | awk '/^Inst /{{print $2}}')\n\
             if [ -n \"$names\" ]; then (cd /tmp/apt/debs && apt-get \"${{A[@]}}\" -q download $names); fi\n\
             for f in /tmp/apt/debs/*.deb; do [ -e \"$f\" ] || continue; echo \"unpacking $(basename \"$f\")\"; dpkg -x \"$f\" \"$P/apt\"; done\n",
            n = packages.apt.len(),
            list = quoted(&packages.apt),
        ));
    }
    if !packages.cargo.is_empty() {
        script.push_str(&format!(
            "step 'cargo: {n} packages'\nneed cargo cargo\nfor c in {list}; do cargo install --root \"$P/cargo\" -- \"$c\"; done\n",
            n = packages.cargo.len(),
            list = quoted(&packages.cargo),
        ));
    }
    if !packages.gem.is_empty() {
        script.push_str(&format!(
            "step 'gem: {n} packages'\nneed gem gem\n\
             for g in {list}; do if [[ $g == *:* ]]; then set -- \"${{g%%:*}}\" -v \"${{g#*:}}\"; else set -- \"$g\"; fi; \
             gem install --no-document --install-dir \"$P/gem\" --bindir \"$P/gem/bin\" \"$@\"; done\n",
            n = packages.gem.len(),
            list = quoted(&packages.gem),
        ));
    }
    if !packages.go.is_empty() {
        script.push_str(&format!(
            "step 'go: {n} packages'\nneed go go\n\
             for m in {list}; do [[ $m == *@* ]] || m=\"$m@latest\"; GOBIN=\"$P/go/bin\" go install \"$m\"; done\n",
            n = packages.go.len(),
            list = quoted(&packages.go),
        ));
    }
    if !packages.npm.is_empty() {
        script.push_str(&format!(
            "step 'npm: {n} packages'\nneed npm npm\n\
             npm install --global --prefix \"$P/npm\" --no-audit --no-fund --no-update-notifier -- {list}\n",
            n = packages.npm.len(),
            list = quoted(&packages.npm),
        ));
    }
    if !packages.pip.is_empty() {
        script.push_str(&format!(
            "step 'pip: {n} packages'\nneed python3 pip\n\
             python3 -m pip install --no-cache-dir --disable-pip-version-check --no-input --target \"$P/pip\" -- {list}\n",
            n = packages.pip.len(),
            list = quoted(&packages.pip),
        ));
    }
    script.push_str("step done\n");
    Ok(script)
}

/// `text` in single quotes for bash.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

fn tail(output: &[u8]) -> String {
    const KEEP: usize = 4000;
    let start = output.len().saturating_sub(KEEP);
    super::output::render(&output[start..], start > 0).trim().to_owned()
}

fn partial_name(partial: &Path) -> String {
    partial.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn poisoned() -> SandboxError {
    SandboxError::Packages { detail: "internal error: the package cache lock is poisoned".to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::environments::PackagesTag;

    fn packages(pip: &[&str], npm: &[&str]) -> Packages {
        Packages {
            kind: PackagesTag::Packages,
            pip: pip.iter().map(|s| (*s).to_owned()).collect(),
            npm: npm.iter().map(|s| (*s).to_owned()).collect(),
            ..Packages::default()
        }
    }

    #[test]
    fn keys_depend_on_every_list_and_its_order() {
        let a = layer_key(&packages(&["six"], &[]));
        assert_eq!(a, layer_key(&packages(&["six"], &[])));
        assert_ne!(a, layer_key(&packages(&[], &["six"])));
        assert_ne!(layer_key(&packages(&["a", "b"], &[])), layer_key(&packages(&["ab"], &[])));
    }

    #[test]
    fn the_script_installs_in_the_documented_order_with_quoted_specs() {
        let mut all = packages(&["six==1.16.0"], &["is-number@7"]);
        all.apt = vec!["jq".to_owned()];
        all.gem = vec!["rake:13.0".to_owned()];
        let script = install_script(&all).unwrap();
        let apt = script.find("step 'apt").unwrap();
        let gem = script.find("step 'gem").unwrap();
        let npm = script.find("step 'npm").unwrap();
        let pip = script.find("step 'pip").unwrap();
        assert!(apt < gem && gem < npm && npm < pip);
        assert!(script.contains("-- 'six==1.16.0'"));
        assert!(script.contains("-- 'is-number@7'"));
        assert!(!script.contains("cargo install"));
    }

    #[test]
    fn option_like_and_hostile_specs_are_refused_or_quoted() {
        assert!(install_script(&packages(&["--index-url=http://evil"], &[])).is_err());
        let script = install_script(&packages(&["x';touch /tmp/pwn;'"], &[])).unwrap();
        assert!(script.contains(r"'x'\'';touch /tmp/pwn;'\'''"));
    }
}
