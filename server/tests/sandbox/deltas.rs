//! Workspace deltas: the workspace rebuilt from the recorded deltas equals
//! the real one, byte for byte, modes and symlinks included.
//!
//! Method: a proptest drives random sequences of file operations, some
//! through the bash tool (so inside the sandbox, as uid 65534) and some
//! written directly by the server process (as the file tools do), on paths
//! from a small alphabet so files, directories and links collide. After every
//! operation the executor's change detection runs, as the runner does after
//! every tool call, and its changes become one delta. At the end the deltas
//! are materialized, written into fresh directories from the blob store, and
//! both sides are compared leaf by leaf (regular files with content and
//! permission bits, symlinks with their targets). Directories are implied by
//! their contents: empty directories and directory modes are the documented
//! blind spot, as are setuid/setgid/sticky bits (hence the permission-bit
//! comparison). `LOGBOOK_DELTA_CASES` sets the number of cases (default 12).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use logbook_core::event::WorkspaceDelta;
use logbook_server::workspace::{materialize, write_tree};
use proptest::prelude::*;

use crate::harness::{Sbx, session, text, unrestricted};

#[derive(Debug, Clone)]
enum Op {
    BashWrite { path: String, content: String },
    BashAppend { path: String, content: String },
    BashRemove { path: String },
    BashChmod { path: String, mode: u32 },
    BashSymlink { path: String, target: String },
    BashMove { from: String, to: String },
    BashDirTree { path: String },
    BashOutput { name: String, content: String },
    DirectWrite { path: String, content: String, mode: u32 },
    DirectRemove { path: String },
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "d.txt"]), 1..4).prop_map(|parts| parts.join("/"))
}

fn content() -> impl Strategy<Value = String> {
    "[a-z0-9 \n]{0,40}"
}

fn mode() -> impl Strategy<Value = u32> {
    prop::sample::select(vec![0o600, 0o644, 0o664, 0o700, 0o755, 0o4755])
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (path(), content()).prop_map(|(path, content)| Op::BashWrite { path, content }),
        1 => (path(), content()).prop_map(|(path, content)| Op::BashAppend { path, content }),
        2 => path().prop_map(|path| Op::BashRemove { path }),
        1 => (path(), mode()).prop_map(|(path, mode)| Op::BashChmod { path, mode }),
        1 => (path(), prop::sample::select(vec!["a", "../b", "/etc/passwd", "c/d.txt", "missing"]))
            .prop_map(|(path, target)| Op::BashSymlink { path, target: target.to_owned() }),
        1 => (path(), path()).prop_map(|(from, to)| Op::BashMove { from, to }),
        1 => path().prop_map(|path| Op::BashDirTree { path }),
        1 => (prop::sample::select(vec!["r.md", "x/y.csv"]), content())
            .prop_map(|(name, content)| Op::BashOutput { name: name.to_owned(), content }),
        3 => (path(), content(), mode()).prop_map(|(path, content, mode)| Op::DirectWrite { path, content, mode }),
        1 => path().prop_map(|path| Op::DirectRemove { path }),
    ]
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// Leaves of a directory tree: files (content, permission bits) and links.
fn leaves(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                out.insert(rel, format!("-> {}", std::fs::read_link(&path).unwrap().display()));
            } else if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                let mode = meta.permissions().mode() & 0o777;
                out.insert(rel, format!("{mode:o} {:?}", String::from_utf8_lossy(&std::fs::read(&path).unwrap())));
            }
        }
    }
    out
}

async fn apply(sbx: &Sbx, s: logbook_core::SessionId, env: &logbook_server::api::environments::Environment, op: &Op) {
    let ws = sbx.paths(s).workspace();
    let command = match op {
        Op::BashWrite { path, content } => {
            format!("mkdir -p \"$(dirname {p})\" && printf '%s' {c} > {p}", p = quote(path), c = quote(content))
        }
        Op::BashAppend { path, content } => format!("printf '%s' {} >> {}", quote(content), quote(path)),
        Op::BashRemove { path } => format!("rm -rf {}", quote(path)),
        Op::BashChmod { path, mode } => format!("chmod {mode:o} {}", quote(path)),
        Op::BashSymlink { path, target } => {
            format!("mkdir -p \"$(dirname {p})\" && ln -sfn {t} {p}", p = quote(path), t = quote(target))
        }
        Op::BashMove { from, to } => format!("mv -f {} {}", quote(from), quote(to)),
        Op::BashDirTree { path } => {
            format!(
                "rm -rf {p} && mkdir -p {p}/inner && echo deep > {p}/inner/f && ln -s f {p}/inner/l",
                p = quote(path)
            )
        }
        Op::BashOutput { name, content } => format!(
            "mkdir -p \"$(dirname /mnt/session/outputs/{n})\" && printf '%s' {c} > /mnt/session/outputs/{n}",
            n = name,
            c = quote(content)
        ),
        Op::DirectWrite { path, content, mode } => {
            // As a server-side file tool would: as root, then handed to the sandbox uid.
            let target = ws.join(path);
            let mut dir = ws.clone();
            for part in Path::new(path).parent().into_iter().flat_map(Path::components) {
                dir.push(part);
                if std::fs::symlink_metadata(&dir).is_ok_and(|m| !m.is_dir()) {
                    return;
                }
                if std::fs::create_dir(&dir).is_ok() {
                    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
                }
            }
            if std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir() || m.file_type().is_symlink()) {
                return;
            }
            std::fs::write(&target, content).unwrap();
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(*mode & 0o777)).unwrap();
            std::os::unix::fs::chown(&target, Some(65534), Some(65534)).unwrap();
            return;
        }
        Op::DirectRemove { path } => {
            let target = ws.join(path);
            if std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir() && !m.file_type().is_symlink()) {
                let _ = std::fs::remove_dir_all(&target);
            } else {
                let _ = std::fs::remove_file(&target);
            }
            return;
        }
    };
    // Failures (a file where a directory is needed, ...) are part of the game.
    let outcome = sbx.bash(s, env, &format!("{command} 2>/dev/null; true")).await;
    assert!(!outcome.is_error, "{}", text(&outcome));
}

fn cases() -> u32 {
    std::env::var("LOGBOOK_DELTA_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(12)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_workspace_rebuilt_from_deltas_equals_the_real_one(ops in prop::collection::vec(op(), 1..24)) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async {
            let sbx = Sbx::new();
            let (s, env) = (session(), unrestricted());
            sbx.ok(s, &env, "true").await;
            let mut deltas = Vec::new();
            for op in &ops {
                apply(&sbx, s, &env, op).await;
                let changes = sbx.changes(s).await;
                if !changes.is_empty() {
                    deltas.push(WorkspaceDelta { tool_use_id: None, changes });
                }
            }
            let tree = materialize(&deltas);
            let rebuilt = tempfile::tempdir().unwrap();
            let (ws, out) = (rebuilt.path().join("workspace"), rebuilt.path().join("outputs"));
            write_tree(&tree, sbx.store.as_ref(), &ws, &out, None).unwrap();
            let paths = sbx.paths(s);
            assert_eq!(leaves(&ws), leaves(&paths.workspace()), "workspace after {ops:#?}");
            assert_eq!(leaves(&out), leaves(&paths.outputs()), "outputs after {ops:#?}");
        });
    }
}

/// Goal: a change made by bash is in the very next delta, and a restart
/// (an index rebuilt from the log) reports nothing new when nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bash_effects_are_recorded_and_an_index_rebuilt_from_the_log_agrees() {
    let sbx = Sbx::new();
    let (s, env) = (session(), unrestricted());
    sbx.ok(
        s,
        &env,
        "mkdir -p src && echo 'fn main() {}' > src/main.rs && chmod 755 src/main.rs && ln -s src/main.rs m",
    )
    .await;
    let changes = sbx.changes(s).await;
    let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["/workspace/m", "/workspace/src/main.rs"]);
    assert!(sbx.changes(s).await.is_empty(), "nothing changed since");
    // A fresh executor over the same data directory knows only the log.
    let log = vec![logbook_core::Entry {
        id: logbook_core::EventId::for_seq(1, logbook_core::Seq::new(0), 0),
        event: logbook_core::event::Event::WorkspaceDelta(WorkspaceDelta { tool_use_id: None, changes }),
        at: logbook_core::Timestamp::from_unix_micros(0),
    }];
    let config = logbook_server::sandbox::SandboxConfig::for_data(&sbx.data, env!("CARGO_BIN_EXE_logbook").into());
    let restarted = logbook_server::sandbox::SandboxTools::new(config, sbx.store.clone() as _).unwrap();
    assert_eq!(restarted.changes(s, &log).await.unwrap(), Vec::new());
    assert!(crate::harness::exists(&sbx.paths(s).workspace().join("m")));
}

/// Goal: a file that is still there is never recorded as removed, whatever
/// is done to it. A write lease (`F_SETLEASE`, which any owner of a file may
/// take) makes the scan's non-blocking open fail with `EWOULDBLOCK`, which
/// the scan took for a file removed mid-scan, so a sandbox holding a lease
/// kept the file's contents out of the log for good. Method: a lease taken in
/// the sandbox is refused (seccomp); one taken on the host (by root, which
/// may lease any file) makes the scan keep the file as last recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_under_a_lease_is_not_recorded_as_removed() {
    use std::io::BufRead as _;

    use logbook_core::event::FileChange;
    const LEASE: &str = "import fcntl, os, signal, sys, time\n\
signal.signal(signal.SIGIO, signal.SIG_IGN)\n\
fd = os.open(sys.argv[1], os.O_RDONLY)\n\
try:\n    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)\n\
except PermissionError:\n    print('refused', flush=True); sys.exit(0)\n\
print('leased', flush=True)\n\
time.sleep(600)";
    let sbx = Sbx::new();
    let (s, env) = (session(), unrestricted());
    sbx.ok(s, &env, "echo one > f.txt").await;
    let first = sbx.changes(s).await;
    assert!(first.iter().any(|c| c.path == "/workspace/f.txt"), "{first:?}");
    let in_sandbox = sbx.ok(s, &env, &format!("echo two-longer > f.txt; python3 -c \"{LEASE}\" f.txt")).await;
    assert_eq!(in_sandbox, "refused\n", "a sandbox process took a lease");

    let file = sbx.paths(s).workspace().join("f.txt");
    let mut holder = std::process::Command::new("python3")
        .args(["-c", LEASE])
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 starts");
    let mut said = String::new();
    std::io::BufReader::new(holder.stdout.take().expect("piped")).read_line(&mut said).expect("reads");
    assert_eq!(said, "leased\n", "the host's lease");
    let changes = sbx.changes(s).await;
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(
        !changes.iter().any(|c| c.path == "/workspace/f.txt" && matches!(c.change, FileChange::Removed)),
        "an existing file was recorded as removed: {changes:?}"
    );
    // Once the lease is gone, its new contents are recorded.
    let changes = sbx.changes(s).await;
    assert!(changes.iter().any(|c| c.path == "/workspace/f.txt"), "{changes:?}");
}
