//! Environment packages: installed once per package set into a cached,
//! read-only layer that every sandbox of the environment mounts; a failed
//! install is a clear tool error. Uses one tiny package per registry
//! reachable here (PyPI, npm).

use logbook_server::api::environments::{Networking, Packages, PackagesTag};
use logbook_server::sandbox::packages::layer_key;

use crate::harness::{Sbx, environment, session, text};

fn packages(pip: &[&str], npm: &[&str], cargo: &[&str]) -> Packages {
    let list = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect();
    Packages { kind: PackagesTag::Packages, pip: list(pip), npm: list(npm), cargo: list(cargo), ..Packages::default() }
}

fn limited_with_package_managers() -> Networking {
    Networking::Limited { allowed_hosts: Vec::new(), allow_mcp_servers: false, allow_package_managers: true }
}

/// Goal: pip and npm packages are usable in every session of the
/// environment, installed once, and the layer is read-only to sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pip_and_npm_packages_are_installed_once_and_shared() {
    let sbx = Sbx::new();
    let set = packages(&["six"], &["is-number@7"], &[]);
    let env = environment(limited_with_package_managers(), set.clone());
    let first = session();
    let out = sbx
        .ok(first, &env, "python3 -c 'import six; print(\"six\", six.__version__)'; node -e 'console.log(\"is-number\", require(\"is-number\")(5))'")
        .await;
    assert!(out.starts_with("six 1."), "{out}");
    assert!(out.ends_with("is-number true\n"), "{out}");
    let log = sbx.data.join("packages").join(layer_key(&set)).join("install.log");
    let installed = std::fs::metadata(&log).unwrap().modified().unwrap();
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(log_text.contains("== npm: 1 packages") && log_text.contains("== pip: 1 packages"), "{log_text}");
    assert!(log_text.find("== npm").unwrap() < log_text.find("== pip").unwrap(), "documented order");
    // Another session of the environment mounts the same layer, read-only.
    let second = session();
    assert_eq!(sbx.ok(second, &env, "python3 -c 'import six; print(six.PY3)'").await, "True\n");
    let write = sbx.bash(second, &env, "touch /opt/logbook/packages/pip/x").await;
    assert!(write.is_error, "{}", text(&write));
    assert_eq!(std::fs::metadata(&log).unwrap().modified().unwrap(), installed, "installed once");
}

/// Goal: an apt package the image lacks is fetched and unpacked into the
/// layer (no maintainer scripts) and runs from `PATH`. `tree` is small, has
/// no dependencies beyond libc, and is not part of the CI image (if an image
/// has it, apt has nothing to fetch and this test fails on the path check).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apt_packages_are_unpacked_into_the_layer() {
    let sbx = Sbx::new();
    let set = Packages { apt: vec!["tree".to_owned()], ..Packages::default() };
    let env = environment(limited_with_package_managers(), set);
    let out = sbx.ok(session(), &env, "mkdir -p d/e && touch d/e/f && command -v tree && tree d").await;
    assert!(out.starts_with("/opt/logbook/packages/apt/usr/bin/tree\n"), "{out}");
    assert!(out.contains("1 directory, 1 file") || out.contains("2 directories, 1 file"), "{out}");
}

/// Goal: a package that does not exist fails the sandbox's start with an
/// error that names the manager and shows its output; so does a manager that
/// is not installed on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_install_is_a_clear_tool_error() {
    let sbx = Sbx::new();
    let env = environment(limited_with_package_managers(), packages(&["logbook-no-such-package-4f1c9e"], &[], &[]));
    let failed = sbx.bash(session(), &env, "echo never").await;
    assert!(failed.is_error);
    let message = text(&failed);
    assert!(message.contains("packages could not be installed"), "{message}");
    assert!(message.contains("logbook-no-such-package-4f1c9e"), "{message}");
    // The failure is remembered for a while rather than retried per call.
    let again = sbx.bash(session(), &env, "echo never").await;
    assert!(again.is_error && text(&again).contains("packages could not be installed"));
    // Checked, not skipped: an image with a system cargo needs another probe.
    assert!(!std::path::Path::new("/usr/bin/cargo").exists(), "this test needs a server without /usr/bin/cargo");
    let env = environment(limited_with_package_managers(), packages(&[], &[], &["ripgrep"]));
    let missing = sbx.bash(session(), &env, "echo never").await;
    assert!(text(&missing).contains("need cargo, which is not installed on this server"), "{}", text(&missing));
}
