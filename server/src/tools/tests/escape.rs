//! The path-escape corpus (G-T3): read, write, edit, glob and grep must never
//! read, list, create or change anything outside the session's directories.
//!
//! Method: a workspace is seeded with every trap we know of: `..` in every
//! position, absolute paths, host paths, symbolic links to `/etc`, to another
//! session's workspace, to the data directory and to a directory outside
//! (absolute and relative), links that climb out from deep inside, dangling
//! links (inside and pointing outside), loops, a `/proc` magic link, a hard
//! link to an outside file, a FIFO, character devices (a copy of /dev/zero
//! would never end) and a unix socket. Every outside file holds a canary.
//! Each probe runs through `run` under the hang guard. After each probe:
//! no canary (and no outside-only file name) in the output, read/write/edit
//! probes failed, and a snapshot of every outside tree is unchanged. A
//! positive control shows the traps are live: the host follows them to the
//! canaries.
//!
//! The race: a thread swaps a directory with a symbolic link to the outside
//! (`renameat2(RENAME_EXCHANGE)`, atomic) as fast as it can while the tools
//! work inside it; zero canaries read, zero outside files touched, and both
//! states seen by the tools (so the race really ran).
//! `LOGBOOK_PATH_RACE_ITERATIONS` (default 2,000 per tool) scales it.

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{FileType, Mode, RenameFlags};
use serde_json::{Value, json};

use super::{Fixture, text_of};
use crate::runner::ToolOutcome;
use crate::sandbox::layout::SessionPaths;
use crate::tools::files::{self, Roots};

const CANARY_OUTSIDE: &str = "CANARY-OUTSIDE-7f3a";
const CANARY_OTHER: &str = "CANARY-OTHER-SESSION-91c2";
const CANARY_DATA: &str = "CANARY-DATA-DIR-5be0";
/// A name that exists only outside; a listing that shows it has escaped.
const OUTSIDE_ONLY_NAME: &str = "only-outside-e1d4.txt";
const CANARIES: [&str; 3] = [CANARY_OUTSIDE, CANARY_OTHER, CANARY_DATA];
/// Text that only /etc/passwd holds.
const PASSWD_MARK: &str = "root:x:0:0";

/// Default race iterations per tool; `LOGBOOK_PATH_RACE_ITERATIONS` overrides.
const DEFAULT_RACE_ITERATIONS: usize = 2_000;

/// The seeded workspace and what lies around it.
struct Traps {
    fx: Fixture,
    outside: PathBuf,
    other: SessionPaths,
    /// Every outside tree, snapshotted before the probes.
    before: BTreeMap<PathBuf, Vec<u8>>,
}

/// Every file below `roots` (following nothing), with its content or link target.
fn snapshot(roots: &[PathBuf]) -> BTreeMap<PathBuf, Vec<u8>> {
    fn visit(path: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(meta) = std::fs::symlink_metadata(path) else { return };
        if meta.file_type().is_symlink() {
            out.insert(path.to_owned(), std::fs::read_link(path).unwrap().into_os_string().into_encoded_bytes());
        } else if meta.is_dir() {
            out.insert(path.to_owned(), b"<dir>".to_vec());
            for entry in std::fs::read_dir(path).unwrap() {
                visit(&entry.unwrap().path(), out);
            }
        } else if meta.is_file() {
            out.insert(path.to_owned(), std::fs::read(path).unwrap());
        } else {
            out.insert(path.to_owned(), b"<special>".to_vec());
        }
    }
    let mut out = BTreeMap::new();
    for root in roots {
        visit(root, &mut out);
    }
    out
}

impl Traps {
    fn new() -> Traps {
        let fx = Fixture::new();
        let outside = fx.data.join("outside");
        std::fs::create_dir_all(outside.join("dir")).unwrap();
        std::fs::write(outside.join("secret.txt"), format!("{CANARY_OUTSIDE}\n")).unwrap();
        std::fs::write(outside.join(OUTSIDE_ONLY_NAME), format!("{CANARY_OUTSIDE}\n")).unwrap();
        std::fs::write(outside.join("dir/f.txt"), format!("{CANARY_OUTSIDE}\n")).unwrap();
        std::fs::write(fx.data.join("db.conf"), format!("{CANARY_DATA}\n")).unwrap();
        let other = SessionPaths::new(&fx.data, logbook_core::SessionId::from_parts(2, 2));
        std::fs::create_dir_all(other.workspace()).unwrap();
        std::fs::write(other.workspace().join("secret.txt"), format!("{CANARY_OTHER}\n")).unwrap();

        let ws = fx.paths.workspace();
        fx.put("inside.txt", "inside\n");
        fx.put("sub/deep/file.txt", "deep\n");
        // The workspace is data/sandboxes/<id>/workspace.
        symlink("/etc", ws.join("link_etc")).unwrap();
        symlink("/etc/passwd", ws.join("link_passwd")).unwrap();
        symlink(&outside, ws.join("link_outside")).unwrap();
        symlink("../../../outside", ws.join("rel_outside")).unwrap();
        symlink("../../../outside/secret.txt", ws.join("rel_secret")).unwrap();
        symlink(other.workspace(), ws.join("link_other")).unwrap();
        let other_id = logbook_core::SessionId::from_parts(2, 2).to_string();
        symlink(format!("../../{other_id}/workspace"), ws.join("rel_other")).unwrap();
        symlink(&fx.data, ws.join("link_data")).unwrap();
        symlink("../../..", ws.join("rel_data")).unwrap();
        symlink("nowhere/missing.txt", ws.join("dangling")).unwrap();
        symlink("../../../outside/created-through-link.txt", ws.join("dangling_out")).unwrap();
        symlink(outside.join("new-dir"), ws.join("dangling_dir_out")).unwrap();
        symlink("loop_b", ws.join("loop_a")).unwrap();
        symlink("loop_a", ws.join("loop_b")).unwrap();
        symlink("self_loop", ws.join("self_loop")).unwrap();
        symlink("../../..", ws.join("sub/deep/up3")).unwrap();
        symlink("../../../..", ws.join("sub/deep/up4")).unwrap();
        symlink("../../../../..", ws.join("sub/deep/up5")).unwrap();
        symlink("/proc/self/root", ws.join("proc_root")).unwrap();
        symlink("/proc/self/cwd", ws.join("proc_cwd")).unwrap();
        symlink("../workspace", fx.paths.outputs().join("to_ws")).unwrap();
        symlink("../uploads", ws.join("to_uploads")).unwrap();
        std::fs::write(fx.paths.uploads().join("data.csv"), "a,b\n").unwrap();
        std::fs::hard_link(outside.join("secret.txt"), ws.join("hard_secret")).unwrap();
        std::fs::hard_link(fx.data.join("db.conf"), ws.join("sub/hard_db")).unwrap();
        let ws_fd = rustix::fs::open(&ws, rustix::fs::OFlags::DIRECTORY, Mode::empty()).unwrap();
        rustix::fs::mknodat(&ws_fd, "fifo", FileType::Fifo, Mode::from_raw_mode(0o666), 0).unwrap();
        rustix::fs::mknodat(&ws_fd, "sub/fifo.txt", FileType::Fifo, Mode::from_raw_mode(0o666), 0).unwrap();
        let dev = |major, minor| rustix::fs::makedev(major, minor);
        rustix::fs::mknodat(&ws_fd, "zero.txt", FileType::CharacterDevice, Mode::from_raw_mode(0o666), dev(1, 5))
            .unwrap();
        rustix::fs::mknodat(&ws_fd, "null", FileType::CharacterDevice, Mode::from_raw_mode(0o666), dev(1, 3)).unwrap();
        rustix::fs::mknodat(&ws_fd, "random.png", FileType::CharacterDevice, Mode::from_raw_mode(0o666), dev(1, 8))
            .unwrap();
        let socket = std::os::unix::net::UnixListener::bind(ws.join("sock")).unwrap();
        std::mem::forget(socket);

        let before = snapshot(&[outside.clone(), other.root().to_owned(), fx.data.join("db.conf")]);
        Traps { fx, outside, other, before }
    }

    fn check_untouched(&self, probe: &str) {
        let now = snapshot(&[self.outside.clone(), self.other.root().to_owned(), self.fx.data.join("db.conf")]);
        assert_eq!(now, self.before, "{probe}: something outside the session changed");
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
        assert!(passwd.contains(PASSWD_MARK), "{probe}: /etc/passwd changed");
    }
}

/// What a probe must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// An error result (and no leak).
    Refused,
    /// Any result without a leak (listings and searches that may succeed inside).
    NoLeak,
}

/// The canary or outside-only name an output shows, leaving out the echo of
/// the probe's own input (errors repeat the path they were given).
fn leaked(outcome: &ToolOutcome, input: &Value) -> Option<&'static str> {
    let mut text = text_of(outcome);
    for key in ["file_path", "path"] {
        if let Some(value) = input.get(key).and_then(Value::as_str).filter(|value| value.len() > 3) {
            text = text.replace(value, "<input>");
        }
    }
    let mut marks: Vec<&'static str> = CANARIES.to_vec();
    marks.push(OUTSIDE_ONLY_NAME);
    marks.push(PASSWD_MARK);
    marks.into_iter().find(|mark| text.contains(mark))
}

/// The corpus: (tool, input, expectation).
fn corpus(traps: &Traps) -> Vec<(&'static str, Value, Expect)> {
    use Expect::{NoLeak, Refused};
    let outside_secret = traps.outside.join("secret.txt").display().to_string();
    let host_inside = traps.fx.ws("inside.txt").display().to_string();
    let other_secret = traps.other.workspace().join("secret.txt").display().to_string();
    let other_id = logbook_core::SessionId::from_parts(2, 2).to_string();
    let mut probes: Vec<(&'static str, Value, Expect)> = Vec::new();

    // Paths that lead outside, into this test's own temp dir: safe to probe
    // with write too (an escape would only damage the canaries).
    let escaping: Vec<String> = vec![
        "../outside/secret.txt".into(),
        "../../outside/secret.txt".into(),
        "../../../outside/secret.txt".into(),
        "../../../../outside/secret.txt".into(),
        "./../../../outside/secret.txt".into(),
        "sub/../../../../outside/secret.txt".into(),
        "sub/deep/../../../../../outside/secret.txt".into(),
        "/workspace/../../../outside/secret.txt".into(),
        "/mnt/session/outputs/../../../../outside/secret.txt".into(),
        outside_secret,
        host_inside,
        other_secret,
        "link_outside/secret.txt".into(),
        format!("link_outside/{OUTSIDE_ONLY_NAME}"),
        "link_outside/dir/f.txt".into(),
        "rel_outside/secret.txt".into(),
        "rel_outside/dir/f.txt".into(),
        "rel_secret".into(),
        "link_other/secret.txt".into(),
        "rel_other/secret.txt".into(),
        "link_data/db.conf".into(),
        "link_data/outside/secret.txt".into(),
        "rel_data/db.conf".into(),
        "rel_data/outside/secret.txt".into(),
        "sub/deep/up3/uploads/data.csv".into(),
        "sub/deep/up3/workspace/inside.txt".into(),
        format!("sub/deep/up4/{other_id}/workspace/secret.txt"),
        "sub/deep/up5/db.conf".into(),
        "sub/deep/up5/outside/secret.txt".into(),
        "/mnt/session/outputs/to_ws/inside.txt".into(),
        "to_uploads/data.csv".into(),
        "hard_secret".into(),
        "sub/hard_db".into(),
        "loop_a".into(),
        "loop_b/x".into(),
        "self_loop".into(),
        "self_loop/x".into(),
        "fifo".into(),
        "sub/fifo.txt".into(),
        "zero.txt".into(),
        "null".into(),
        "sock".into(),
    ];
    for path in &escaping {
        probes.push(("read", json!({"file_path": path}), Refused));
        probes.push(("read", json!({"file_path": path, "view_range": [1, 1]}), Refused));
        probes.push(("grep", json!({"pattern": ".", "path": path}), Refused));
        probes.push(("edit", json!({"file_path": path, "old_string": "CANARY", "new_string": "PWNED"}), Refused));
        probes.push(("write", json!({"file_path": path, "content": "PWNED"}), Refused));
    }
    // Paths into the machine's own files: read and edit only (the edit's
    // old_string matches nothing there, so even a broken confinement could not
    // change them; a write probe could).
    for path in [
        "/workspace/../etc/passwd",
        "/mnt/session/uploads/../../../etc/passwd",
        "/mnt/../etc/passwd",
        "/etc/passwd",
        "//etc//passwd",
        "/etc/shadow",
        "/proc/self/environ",
        "/proc/1/environ",
        "/proc/self/root/etc/passwd",
        "link_passwd",
        "link_etc/passwd",
        "link_etc/../etc/passwd",
        "proc_root/etc/passwd",
        "proc_cwd/Cargo.toml",
    ] {
        probes.push(("read", json!({"file_path": path}), Refused));
        probes.push(("edit", json!({"file_path": path, "old_string": "CANARY-NOT-THERE", "new_string": "x"}), Refused));
    }
    // Paths that do not exist yet and must not be created outside.
    for path in [
        "../outside/new.txt",
        "link_outside/new.txt",
        "link_outside/newdir/new.txt",
        "rel_outside/new.txt",
        "link_other/new.txt",
        "rel_data/new.txt",
        "dangling_out",
        "dangling_dir_out/new.txt",
        "sub/deep/up4/new.txt",
        "sub/deep/up5/new.txt",
        "/mnt/session/uploads/new.txt",
        "/mnt/session/outputs/to_ws/new.txt",
        "to_uploads/new.txt",
        "/tmp/logbook-escape-probe.txt",
    ] {
        probes.push(("write", json!({"file_path": path, "content": "PWNED"}), Refused));
    }
    probes.push(("read", json!({"file_path": "random.png"}), Refused));
    probes.push(("read", json!({"file_path": "zero.txt", "view_range": [1, 2]}), Refused));
    probes.push(("read", json!({"file_path": "dangling"}), Refused));
    probes.push(("write", json!({"file_path": "dangling", "content": "x"}), Refused));

    // Listings and searches: may succeed, must not show anything outside.
    for pattern in ["../*", "../../**/*", "sub/../../*", "**/../../*"] {
        probes.push(("glob", json!({"pattern": pattern}), Refused));
    }
    for pattern in ["/etc/*", "/*", "/mnt/*/*", "/mnt/session/../../etc/*"] {
        probes.push(("glob", json!({"pattern": pattern}), Refused));
    }
    for pattern in ["**/*", "**/secret.txt", "**/*.conf", "*/*", "**/only-outside*"] {
        probes.push(("glob", json!({"pattern": pattern}), NoLeak));
    }
    for path in [
        "link_outside",
        "rel_outside",
        "link_etc",
        "link_other",
        "link_data",
        "rel_data",
        "sub/deep/up4",
        "sub/deep/up5",
        "proc_root",
        "/etc",
        "../outside",
        "loop_a",
    ] {
        probes.push(("glob", json!({"pattern": "**/*", "path": path}), Refused));
        probes.push(("grep", json!({"pattern": "CANARY|root:x", "path": path}), Refused));
    }
    for path in ["link_passwd", "hard_secret", "fifo", "zero.txt", "sock", "rel_secret"] {
        probes.push(("grep", json!({"pattern": ".", "path": path}), Refused));
    }
    for pattern in ["CANARY", "root:x:0:0", "."] {
        probes.push(("grep", json!({"pattern": pattern}), NoLeak));
        probes.push(("grep", json!({"pattern": pattern, "path": "sub"}), NoLeak));
    }
    probes.push(("glob", json!({"pattern": "*", "path": "/mnt/session/outputs/to_ws"}), Refused));
    probes
}

#[tokio::test]
async fn the_path_escape_corpus_never_escapes() {
    let traps = Traps::new();
    // Positive control: followed by an unconfined program, the traps reach the canaries.
    let ws = traps.fx.paths.workspace();
    for (path, canary) in [
        ("rel_outside/secret.txt", CANARY_OUTSIDE),
        ("link_other/secret.txt", CANARY_OTHER),
        ("sub/deep/up5/db.conf", CANARY_DATA),
        ("rel_other/secret.txt", CANARY_OTHER),
        ("hard_secret", CANARY_OUTSIDE),
        ("link_passwd", PASSWD_MARK),
    ] {
        assert!(std::fs::read_to_string(ws.join(path)).unwrap().contains(canary), "control {path}");
    }

    let probes = corpus(&traps);
    assert!(probes.len() >= 300, "the corpus has {} probes", probes.len());
    eprintln!("path-escape corpus: {} probes", probes.len());
    let mut n_refused = 0;
    for (tool, input, expect) in &probes {
        let probe = format!("{tool} {input}");
        let outcome = traps.fx.call(tool, input.clone()).await;
        if let Some(mark) = leaked(&outcome, input) {
            panic!("{probe}: leaked {mark}: {}", text_of(&outcome));
        }
        match expect {
            Expect::Refused => assert!(outcome.is_error, "{probe}: should be refused, got {}", text_of(&outcome)),
            Expect::NoLeak => {}
        }
        n_refused += usize::from(outcome.is_error);
        traps.check_untouched(&probe);
    }
    assert!(!Path::new("/tmp/logbook-escape-probe.txt").exists());
    // The inside files are still reachable: the refusals are not blanket ones.
    assert_eq!(traps.fx.ok("read", json!({"file_path": "inside.txt"})).await, "inside\n");
    assert_eq!(traps.fx.ok("read", json!({"file_path": "sub/deep/../deep/file.txt"})).await, "deep\n");
    assert!(n_refused > 0);
}

/// The refusals the corpus relies on, by reason: confinement errors, not
/// incidental ones (a missing file would also be "refused").
#[tokio::test]
async fn escapes_are_refused_for_the_right_reason() {
    let traps = Traps::new();
    let fx = &traps.fx;
    for (path, expected) in [
        ("link_outside/secret.txt", "leads outside the session's directories"),
        ("rel_outside/secret.txt", "leads outside the session's directories"),
        ("link_etc/passwd", "leads outside the session's directories"),
        ("sub/deep/up3/uploads/data.csv", "leads outside the session's directories"),
        ("proc_root/etc/passwd", "leads outside the session's directories"),
        ("/etc/passwd", "/etc/passwd is outside the session's directories"),
        ("../outside/secret.txt", "is outside the session's directories"),
        ("hard_secret", "has 2 hard links"),
        ("fifo", "not a regular file (it is a FIFO)"),
        ("zero.txt", "not a regular file (it is a character device)"),
        ("loop_a", "loop of symbolic links"),
    ] {
        let text = fx.err("read", json!({"file_path": path})).await;
        assert!(text.contains(expected), "read {path}: {text}");
    }
    let text = fx.err("write", json!({"file_path": "dangling_out", "content": "x"})).await;
    assert!(text.contains("leads outside") || text.contains("symbolic link to a missing file"), "{text}");
    let text = fx.err("write", json!({"file_path": "fifo", "content": "x"})).await;
    assert!(text.contains("not a regular file"), "{text}");
}

/// Swaps `a` and `b` atomically until told to stop.
fn flipper(dir: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let fd = rustix::fs::open(&dir, rustix::fs::OFlags::DIRECTORY, Mode::empty()).unwrap();
        let mut n_swaps = 0;
        while !stop.load(Ordering::Relaxed) {
            rustix::fs::renameat_with(&fd, "race", &fd, "race_alt", RenameFlags::EXCHANGE).unwrap();
            n_swaps += 1;
        }
        n_swaps
    })
}

fn race_iterations() -> usize {
    match std::env::var("LOGBOOK_PATH_RACE_ITERATIONS") {
        Ok(text) => text.parse().unwrap_or_else(|_| panic!("LOGBOOK_PATH_RACE_ITERATIONS={text:?} is not a number")),
        Err(_) => DEFAULT_RACE_ITERATIONS,
    }
}

/// One race: `race` flips between a real directory and the link `target` names.
fn race_against(target: impl Fn(&Traps) -> PathBuf) {
    let traps = Traps::new();
    let ws = traps.fx.paths.workspace();
    traps.fx.put("race/f.txt", "INSIDE\n");
    symlink(target(&traps), ws.join("race_alt")).unwrap();
    assert!(std::fs::read_to_string(ws.join("race_alt/f.txt")).unwrap().contains(CANARY_OUTSIDE), "control");
    let roots = Roots::new(&traps.fx.paths);
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = flipper(ws.clone(), Arc::clone(&stop));

    let iterations = race_iterations();
    let mut n_inside = 0usize;
    let mut n_refused = 0usize;
    let calls: [(&str, Value); 7] = [
        ("read", json!({"file_path": "race/f.txt"})),
        ("write", json!({"file_path": "race/f.txt", "content": "INSIDE\n"})),
        ("write", json!({"file_path": "race/new/g.txt", "content": "NEW\n"})),
        (
            "edit",
            json!({"file_path": "race/f.txt", "old_string": "INSIDE", "new_string": "INSIDE", "replace_all": true}),
        ),
        ("edit", json!({"file_path": "race/f.txt", "old_string": "CANARY-OUTSIDE-7f3a", "new_string": "PWNED"})),
        ("glob", json!({"pattern": "**/*", "path": "race"})),
        ("grep", json!({"pattern": "CANARY|INSIDE", "path": "race"})),
    ];
    for iteration in 0..iterations {
        for (tool, input) in &calls {
            let outcome = match *tool {
                "read" => files::read(&roots, input),
                "write" => files::write(&roots, input),
                "edit" => files::edit(&roots, input),
                "glob" => files::glob(&roots, input),
                _ => files::grep(&roots, input),
            };
            if let Some(mark) = leaked(&outcome, input) {
                panic!("iteration {iteration}, {tool} {input}: leaked {mark}: {}", text_of(&outcome));
            }
            if *tool == "read" {
                if outcome.is_error { n_refused += 1 } else { n_inside += 1 }
            }
        }
        // The walk-based tools from the workspace root see `race` in either state.
        let root_grep = json!({"pattern": "CANARY-OUTSIDE"});
        let outcome = files::grep(&roots, &root_grep);
        assert!(leaked(&outcome, &root_grep).is_none(), "iteration {iteration}: {}", text_of(&outcome));
    }
    stop.store(true, Ordering::Relaxed);
    let n_swaps = swapper.join().unwrap();
    traps.check_untouched("the symlink-swap race");
    assert!(!traps.outside.join("new").exists() && !traps.outside.join("g.txt").exists());
    // Both states were met: the race ran (a test that never saw the link proves nothing).
    assert!(n_inside > 0 && n_refused > 0, "inside {n_inside}, refused {n_refused}, swaps {n_swaps}");
    eprintln!("race: {iterations} iterations per tool, {n_swaps} swaps, reads inside {n_inside}, refused {n_refused}");
}

#[test]
fn a_directory_swapped_for_an_absolute_link_never_leads_outside() {
    race_against(|traps| traps.outside.join("dir"));
}

#[test]
fn a_directory_swapped_for_a_relative_link_never_leads_outside() {
    // From data/sandboxes/<id>/workspace, three levels up is the data dir.
    race_against(|_| PathBuf::from("../../../outside/dir"));
}
