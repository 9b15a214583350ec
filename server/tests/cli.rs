//! End-to-end tests of the `logbook` binary's offline commands.
//!
//! Goal: `logbook verify` says "intact" and exits 0 on a healthy store, names
//! the damaged session and seq and exits 2 on a tampered one, and fails with a
//! clear message on a missing directory. Method: build a store with the library,
//! tamper with a record's bytes in the log, run the real binary. Also `logbook
//! keys revoke` from standard input and by hint, and `serve`'s range checks.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

use std::io::Read as _;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use logbook_core::event::sample_events;
use logbook_core::{Entry, EventId, Seq, SessionId, Timestamp};
use logbook_store::engine::Engine;
use logbook_store::{Append, Blobs as _, SledOptions, SledStore, wal};

fn logbook(args: &[&str], data: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_logbook")).args(args).arg("--data").arg(data).output().unwrap()
}

fn entries(n: usize) -> Vec<Entry> {
    sample_events()
        .into_iter()
        .cycle()
        .take(n)
        .enumerate()
        .map(|(idx, event)| Entry {
            id: EventId::from_parts(1_764_000_000_000, idx as u128),
            event,
            at: Timestamp::from_unix_micros(1_764_000_000_000_000 + idx as i64),
        })
        .collect()
}

#[test]
fn verify_reports_intact_then_names_the_tampered_seq() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let session = SessionId::from_parts(1_764_000_000_000, 42);
    {
        let store = SledStore::open(&data, &SledOptions::default()).unwrap();
        store.append(SessionId::from_parts(1_764_000_000_000, 7), Seq::ZERO, &entries(5)).unwrap();
        store.append(session, Seq::ZERO, &entries(20)).unwrap();
    }

    let out = logbook(&["verify"], &data);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("25 records in 2 sessions") && stderr.contains("intact"), "{stderr}");

    {
        // One byte of record 13's event (stored raw: sample events are small).
        let store = SledStore::open(&data, &SledOptions::default()).unwrap();
        let location = store.locate(session, Seq::new(13)).unwrap().unwrap();
        let segment = store.engine().log_dir().open_segment(wal::segment_of(location.lsn), false).unwrap();
        let at = wal::offset_of(location.lsn) + wal::RECORD_HEADER_BYTES as u64 + 3;
        let mut byte = [0u8];
        segment.read_exact_at(&mut byte, at).unwrap();
        segment.write_at(&[byte[0] ^ 0x01], at).unwrap();
    }
    let out = logbook(&["verify", "--json"], &data);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("{session}: break at seq 13")), "{stderr}");
    assert!(stderr.contains("1 sessions damaged"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["n_records"], 25);
}

#[test]
fn verify_of_a_missing_directory_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = logbook(&["verify"], &dir.path().join("nope"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no data directory") && stderr.contains("--data"), "{stderr}");
}

#[test]
fn serve_refuses_timeouts_out_of_range_before_touching_the_data() {
    // A timeout of 0, or one so long that adding it to an instant would
    // overflow, is a usage error (exit 2), not a server that panics per request.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for flag in ["--header-read-timeout-secs", "--body-read-timeout-secs", "--tcp-user-timeout-secs", "--sse-ping-secs"]
    {
        for value in ["0", "86401", "18446744073709551615"] {
            let out = logbook(&["serve", "--listen", "127.0.0.1:0", flag, value], &data);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
            assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
        }
    }
    assert!(!data.exists(), "nothing was created");
}

/// Goal: a `--cache-mib` whose bytes do not fit a u64 is a usage error like
/// the other out-of-range flags, not a panic (debug builds: "attempt to
/// multiply with overflow" in `open_store`) or a cache size that silently
/// wraps (release builds: 2^44 MiB becomes a cache of 0 bytes).
#[test]
fn serve_refuses_a_cache_size_whose_bytes_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for value in ["17592186044416", "18446744073709551615"] {
        let out = logbook(&["serve", "--listen", "127.0.0.1:0", "--no-runner", "--cache-mib", value], &data);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "--cache-mib {value}: {stderr}");
        assert_eq!(out.status.code(), Some(2), "--cache-mib {value}: {stderr}");
        assert!(stderr.contains("--cache-mib"), "--cache-mib {value}: {stderr}");
    }
    assert!(!data.exists(), "nothing was created");
}

/// Goal: a sandbox disk limit that is not a number of megabytes in range stops
/// `serve` with a message naming the variable, instead of a silent default.
#[test]
fn serve_refuses_a_bad_sandbox_disk_limit() {
    serve_refuses_each("LOGBOOK_SANDBOX_DISK_MB", "LOGBOOK_SANDBOX_DISK_MB", &["lots", "0", "-5", "1000000001"]);
}

/// Runs `serve` with `variable` set to each of `values`; each must stop it
/// with a message naming `named` (the variable, or the flag it sets).
/// Reads the stderr lines of `child` (spawned with a piped stderr) until one
/// contains `wanted` or 60 s pass, then stops it: whether the line came, and
/// the lines before it.
fn stderr_until(child: &mut std::process::Child, wanted: &str) -> (bool, Vec<String>) {
    use std::io::BufRead as _;
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let found = loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains(wanted) => break true,
            Ok(line) => seen.push(line),
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    (found, seen)
}

fn serve_refuses_each(variable: &str, named: &str, values: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    for value in values {
        serve_refuses(&dir.path().join("data"), &[(variable, value.as_ref())], named);
    }
}

/// `serve` on `data` with `env` (and a model, a key) exits at once, saying
/// something that contains `named`.
fn serve_refuses(data: &Path, env: &[(&str, &std::ffi::OsStr)], named: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_logbook"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .envs(env.iter().copied())
        .env("ANTHROPIC_API_KEY", "test-key")
        .env("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
        .env("LOGBOOK_BOOTSTRAP_KEY", "sk-logbook-test-bootstrap-0000000000000000")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{env:?}: {stderr}");
    assert!(stderr.contains(named), "{env:?}: {stderr}");
}

/// Goal: a per-workspace cap on working sessions that is not a whole number
/// in range stops `serve` with a message naming the variable.
#[test]
fn serve_refuses_a_bad_working_sessions_cap() {
    serve_refuses_each("LOGBOOK_MAX_WORKING_SESSIONS", "LOGBOOK_MAX_WORKING_SESSIONS", &["many", "0", "-1", "1048577"]);
}

/// Goal: a grading heartbeat period that is not a whole number of
/// milliseconds in range (zero would spin) stops `serve` with a message
/// naming the variable.
#[test]
fn serve_refuses_a_bad_outcome_heartbeat() {
    serve_refuses_each("LOGBOOK_OUTCOME_HEARTBEAT_MS", "LOGBOOK_OUTCOME_HEARTBEAT_MS", &["soon", "0", "-5", "3600001"]);
}

/// Goal: a failpoint (tests only) that names no point, no action or a bad
/// pass stops `serve` with a message naming the variable: a typo must not
/// quietly test nothing.
#[test]
fn serve_refuses_a_bad_failpoint() {
    serve_refuses_each(
        "LOGBOOK_FAILPOINT",
        "LOGBOOK_FAILPOINT",
        &["idle_before", "nowhere:kill", "idle_before:stop", "idle_before:kill@0"],
    );
    // A stall with nothing to release it.
    serve_refuses_each("LOGBOOK_FAILPOINT", "LOGBOOK_FAILPOINT_RELEASE", &["idle_before:stall"]);
    // A stall released before it starts.
    let dir = tempfile::tempdir().unwrap();
    let env =
        [("LOGBOOK_FAILPOINT", "idle_before:stall".as_ref()), ("LOGBOOK_FAILPOINT_RELEASE", dir.path().as_os_str())];
    serve_refuses(&dir.path().join("data"), &env, "exists already");
}

/// Goal: a first start that fails on its configuration makes no key: the
/// first key is printed once, so one made by a start that then exits would
/// be lost (the next start, finding a key, prints none). Method: serve an
/// empty data dir with a bad cap; the store then holds no key.
#[test]
fn a_first_start_refused_for_its_configuration_makes_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_logbook"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .env("LOGBOOK_MAX_WORKING_SESSIONS", "many")
        .env("ANTHROPIC_API_KEY", "test-key")
        .env("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
        .env_remove("LOGBOOK_BOOTSTRAP_KEY")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(!stderr.contains("created the first API key"), "{stderr}");
    assert!(out.stdout.is_empty(), "a key was printed: {}", String::from_utf8_lossy(&out.stdout));
    let listed =
        Command::new(env!("CARGO_BIN_EXE_logbook")).args(["keys", "list", "--data"]).arg(&data).output().unwrap();
    assert!(listed.stdout.is_empty(), "the store holds a key: {}", String::from_utf8_lossy(&listed.stdout));
}

/// Goal: the same for the per-workspace cap on open SSE streams.
#[test]
fn serve_refuses_a_bad_streams_cap() {
    serve_refuses_each(
        "LOGBOOK_MAX_STREAMS_PER_WORKSPACE",
        "--max-streams-per-workspace",
        &["many", "0", "-1", "16777217"],
    );
}

/// Runs `logbook keys ARGS --data DIR`, feeding `stdin`.
fn keys(args: &[&str], data: &Path, stdin: &str) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_logbook"))
        .arg("keys")
        .args(args)
        .arg("--data")
        .arg(data)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// Goal: a key can be revoked without putting it on the command line: from
/// standard input (`-`), or by the hint `keys list` shows; an unknown hint
/// fails with a message. Method: two keys created, one revoked each way,
/// the list read after each.
#[test]
fn keys_are_revoked_from_stdin_or_by_their_hint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let created = |n: usize| {
        let out = keys(&["create"], &data, "");
        assert!(out.status.success(), "create #{n}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let (first, _second) = (created(1), created(2));
    let listed = || String::from_utf8(keys(&["list"], &data, "").stdout).unwrap();
    assert_eq!(listed().matches("  live").count(), 2, "{}", listed());

    let out = keys(&["revoke", "-"], &data, &format!("{first}\n"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(listed().matches("  live").count(), 1, "{}", listed());

    let live_line = listed().lines().find(|line| line.ends_with("  live")).unwrap().to_owned();
    let hint = live_line.split("...").next().unwrap().to_owned();
    let out = keys(&["revoke", "--hint", "sk-logbook-nosuchhint"], &data, "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no live key has the hint"));
    let out = keys(&["revoke", "--hint", &format!("{hint}...")], &data, "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(listed().matches("  live").count(), 0, "{}", listed());
}

/// Goal: a mistyped `--data` is an error for the key commands that read an
/// existing store, not a new empty store. Method: list, revoke and an
/// environment key's create against a missing directory; the directory must
/// still not exist after each.
#[test]
fn key_commands_that_need_a_store_refuse_a_missing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("mistyped");
    for args in
        [&["list"][..], &["revoke", "-"][..], &["create", "--environment", "env_01KB0000000000000000000000"][..]]
    {
        let out = keys(args, &data, "sk-logbook-0123456789abcdef0123\n");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains("no data directory"), "{args:?}: {stderr}");
        assert!(!data.exists(), "{args:?} created {}", data.display());
    }
}

/// A `LOGBOOK_BOOTSTRAP_KEY` that is not valid UTF-8 is not reported: the
/// server silently generates and prints a random key instead of the one the
/// operator configured (and never seeds the configured one later).
#[test]
fn a_non_utf8_bootstrap_key_is_an_error_not_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_logbook"))
        .args(["serve", "--listen", "127.0.0.1:0", "--no-runner", "--data"])
        .arg(&data)
        .env("LOGBOOK_BOOTSTRAP_KEY", std::ffi::OsStr::from_bytes(b"sk-logbook-0123456789abcdef\xff"))
        .env("LOGBOOK_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Read stdout on a thread: serve prints a generated key there, then keeps running.
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        let mut text = String::new();
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
            if text.contains('\n') {
                break;
            }
        }
        let _ = tx.send(text);
    });
    // Either serve exits (refusing the key: stdout closes empty) or it prints a line.
    let stdout = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(!stdout.contains("sk-logbook-"), "a random key was generated and printed instead: {stdout:?}");
    assert!(status.is_some_and(|s| !s.success()), "serve must refuse a bootstrap key it cannot read");
}

/// DEFECT (every tenant's data readable by every local user): the data
/// directory and everything in it are created with the process umask's modes
/// (0755 directories, 0644 files: `log/*.wal` holds every session's events,
/// `sled/` the blobs of uploads, workspaces and outputs). The sandbox needs
/// the data directory traversable by the sandbox uid (docs/sandbox.md), so a
/// deployment such as `--data /var/lib/logbook` is; then any local account
/// (a service user, a shell user, a compromised daemon) reads all of it.
/// Method: let the binary create a store under a world-traversable
/// directory; no file with data may be reachable and readable by others.
#[test]
fn the_store_is_not_readable_by_other_local_users() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("data");
    let out = keys(&["create"], &data, "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut exposed = Vec::new();
    // (directory, reachable by others)
    let mut stack = vec![(data.clone(), true)];
    while let Some((path, reachable)) = stack.pop() {
        let mode = std::fs::symlink_metadata(&path).unwrap().permissions().mode();
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push((entry.unwrap().path(), reachable && mode & 0o001 != 0));
            }
        } else if reachable && mode & 0o004 != 0 {
            exposed.push(format!("{:o} {}", mode & 0o777, path.strip_prefix(&data).unwrap().display()));
        }
    }
    assert!(exposed.is_empty(), "readable by any local user: {exposed:?}");
}

/// DEFECT (a forged continuation passes `--against`): `logbook verify BUNDLE
/// --against HEAD.json` "also checks that the bundle extends that earlier
/// signed head", the head a client kept from the server. Without
/// `--public-key`, the bundle's own signature is only checked against the key
/// the bundle names, and nothing ties that key to the key of the earlier head:
/// anyone holding the first records can append events of their choosing,
/// sign the result with a key of their own and get "chain and signed head
/// valid ... consistent with the earlier signed head", exit 0. Method: a log
/// and a head the server signed after 5 of its 10 records; a bundle with the
/// same 5 records and 5 others, signed with another key; verified against
/// the server's head (the server's own export is the control).
#[test]
fn verify_against_an_earlier_head_refuses_a_bundle_signed_by_another_key() {
    use logbook_server::audit::{self, AuditKey};
    use logbook_store::Read as _;

    let dir = tempfile::tempdir().unwrap();
    let session = SessionId::from_parts(1_764_000_000_000, 42);
    let now = Timestamp::from_unix_micros(1_765_000_000_000_000);
    let server_key = AuditKey::from_seed([1; 32]);
    let genuine = entries(10);
    let export_to = |data: &Path, key: &AuditKey, log: &[Entry], path: &Path| {
        let store = SledStore::open(data, &SledOptions::default()).unwrap();
        store.append(session, Seq::ZERO, log).unwrap();
        let mut out = Vec::new();
        audit::export(&store, key, session, None, now, &mut out).unwrap();
        std::fs::write(path, out).unwrap();
        store.read(session, Seq::new(4), 1).unwrap().remove(0).hash()
    };
    let genuine_path = dir.path().join("genuine.jsonl");
    let fifth = export_to(&dir.path().join("server"), &server_key, &genuine, &genuine_path);
    let head_path = dir.path().join("head.json");
    std::fs::write(&head_path, serde_json::to_string(&server_key.sign(session, 5, fifth, now)).unwrap()).unwrap();

    let mut forged = genuine[..5].to_vec();
    forged.extend(
        genuine[5..].iter().map(|entry| Entry {
            at: Timestamp::from_unix_micros(entry.at.unix_micros() + 1_000_000),
            ..entry.clone()
        }),
    );
    let forged_path = dir.path().join("forged.jsonl");
    let forged_fifth = export_to(&dir.path().join("forger"), &AuditKey::from_seed([2; 32]), &forged, &forged_path);
    assert_eq!(forged_fifth, fifth, "the forged bundle shares the signed prefix");

    let verify_against = |bundle: &Path| {
        Command::new(env!("CARGO_BIN_EXE_logbook"))
            .arg("verify")
            .arg(bundle)
            .arg("--against")
            .arg(&head_path)
            .output()
            .unwrap()
    };
    let out = verify_against(&genuine_path);
    assert!(out.status.success(), "the server's own bundle: {}", String::from_utf8_lossy(&out.stderr));
    let out = verify_against(&forged_path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a bundle signed by another key than the earlier head's passes as its continuation: {stderr}"
    );
}

/// DEFECT (a mistyped `--data` makes a new store and a new audit key): the
/// offline commands that read one session (`export`, `show`, `fork`) open
/// the data directory with `SledStore::open`, which creates it, and `export`
/// then creates an audit key in it; they end with "no session ... in this
/// data directory; `logbook verify` lists sessions" (it does not list them),
/// never saying that the directory did not exist. `verify`, `rerun` and the
/// key commands refuse a missing directory with "no data directory ...; pass
/// --data DIR". Method: each command against a missing directory.
#[test]
fn offline_session_commands_refuse_a_missing_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("mistyped");
    let session = SessionId::from_parts(1_764_000_000_000, 42).to_string();
    for args in [&["export", &session][..], &["show", &session][..], &["fork", &session, "--at-seq", "0"][..]] {
        let out = logbook(args, &data);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        let created = data.exists();
        let _ = std::fs::remove_dir_all(&data);
        assert!(stderr.contains("no data directory"), "{args:?} does not say the directory is missing: {stderr}");
        assert!(!created, "{args:?} created a store at {}", data.display());
    }
}

/// DEFECT (no progress on long offline operations): "every long operation
/// shows progress" (DESIGN.md, Command line), and `offline.rs` says its
/// commands "print progress ... to stderr"; `logbook verify --data` prints a
/// line every half second. `export`, `verify BUNDLE` and `import` print
/// nothing until they are done, however long the session: on a session of
/// millions of events they look hung. Method: a session long enough that
/// each command runs for seconds; every run that took over two seconds must
/// have printed a line before its last.
#[test]
fn export_verify_and_import_of_a_long_session_show_progress() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let session = SessionId::from_parts(1_764_000_000_000, 42);
    {
        let store = SledStore::open(&data, &SledOptions::default()).unwrap();
        // The sample workspace delta names a blob no store holds: name one
        // this store holds, which the bundle then carries.
        let blob = *store.put_blob(&[7u8; 5_120]).unwrap().as_bytes();
        let all: Vec<Entry> = entries(200_000).into_iter().map(|entry| naming_blob(entry, blob)).collect();
        for (k, chunk) in all.chunks(1024).enumerate() {
            store.append(session, Seq::new((k * 1024) as u64), chunk).unwrap();
        }
        put_session_object(&store, session);
    }
    let bundle = dir.path().join("bundle.jsonl");
    let bundle_arg = bundle.to_str().unwrap().to_owned();
    let other = dir.path().join("other");
    let id = session.to_string();
    let runs: [(&str, Vec<&str>, &Path); 3] = [
        ("export", vec!["export", &id, "-o", &bundle_arg], &data),
        ("verify BUNDLE", vec!["verify", &bundle_arg], &data),
        ("import", vec!["import", &bundle_arg], &other),
    ];
    let mut silent = Vec::new();
    for (name, args, data) in runs {
        let started = Instant::now();
        let out = logbook(&args, data);
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{name}: {stderr}");
        let n_lines = stderr.lines().count();
        eprintln!("{name}: {took:?}, {n_lines} lines on stderr");
        if took > Duration::from_secs(2) && n_lines < 2 {
            silent.push(format!("{name} ran {took:?} and printed only {stderr:?}"));
        }
    }
    assert!(silent.is_empty(), "long operations without progress: {silent:#?}");
}

/// Goal: `serve` raises its soft open-files limit as far as the hard limit
/// allows (connections, streams, sandboxes and disk walks all hold
/// descriptors; the usual default of 1024 is far too low). Method: start it
/// under `prlimit` with a soft limit of 256 and read its limits from /proc.
#[test]
fn serve_raises_its_open_files_limit() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let hard = std::fs::read_to_string("/proc/self/limits")
        .unwrap()
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(4).map(str::to_owned))
        .unwrap();
    let mut child = Command::new("prlimit")
        .arg(format!("--nofile=256:{hard}"))
        .arg(env!("CARGO_BIN_EXE_logbook"))
        .args(["serve", "--listen", "127.0.0.1:0", "--no-runner", "--data"])
        .arg(dir.path().join("data"))
        .env("LOGBOOK_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("prlimit (util-linux) runs logbook");
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("serving on") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "serve exited before serving");
    }
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let soft = limits.lines().find(|line| line.starts_with("Max open files")).unwrap().split_whitespace().nth(3);
    let wanted = if hard == "unlimited" { 1 << 20 } else { hard.parse::<u64>().unwrap().min(1 << 20) };
    assert_eq!(soft, Some(wanted.to_string().as_str()), "{limits}");
}

/// `entry` with every file its workspace delta writes named by `blob`.
fn naming_blob(mut entry: Entry, blob: [u8; 32]) -> Entry {
    use logbook_core::Event;
    use logbook_core::event::FileChange;
    if let Event::WorkspaceDelta(delta) = &mut entry.event {
        for change in &mut delta.changes {
            if let FileChange::Written { blob: named, .. } = &mut change.change {
                *named = blob;
            }
        }
    }
    entry
}

/// Stores a session object for `session` in workspace `default` (the offline
/// commands look sessions up by it).
fn put_session_object(store: &SledStore, session: SessionId) {
    let object: logbook_server::api::sessions::StoredSession = serde_json::from_value(serde_json::json!({
        "id": session.to_string(), "status": "idle", "environment_id": "env_01KAV9FT00000000000000001A",
        "agent": {"id": "agent_01KAV9FT00000000000000001A", "type": "agent", "version": 1, "name": "a",
            "description": null, "model": {"id": "claude-sonnet-4-6", "effort": {"type": "high"}, "speed": "standard", "inference_geo": null}, "system": null, "tools": [],
            "mcp_servers": [], "skills": [], "execution_identity": {"type": "service_account"},
            "multiagent": null},
        "from_agent_ref": true, "title": null, "metadata": {}, "budget": null,
        "created_at": "2025-11-24T16:00:00Z", "updated_at": "2025-11-24T16:00:00Z",
        "archived_at": null, "terminated_at": null, "self_hosted": false,
    }))
    .unwrap();
    let now = Timestamp::from_unix_micros(1_764_000_000_000_000);
    let workspace = logbook_server::tenancy::ensure_workspace(store, "default", now).unwrap();
    let key = logbook_server::tenancy::Tenant { workspace: workspace.id }.key(session.to_bytes());
    let bytes = logbook_server::api::to_bytes(&object).unwrap();
    logbook_server::api::put_new(store, logbook_store::ResourceKind::Session, &key, &bytes).unwrap();
}

/// Goal: `logbook export` writes every blob the session's records name; a
/// session whose store lacks one (imported from a bundle without blobs) is
/// refused with the blob named before anything is written, rather than
/// written as a bundle that does not verify, and `--records-only` still
/// exports its records (format 1), which verify. Method: a log whose
/// workspace delta names a blob the store never held; export it both ways.
#[test]
fn export_names_a_missing_blob_and_records_only_exports_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let session = SessionId::from_parts(1_764_000_000_000, 43);
    {
        let store = SledStore::open(&data, &SledOptions::default()).unwrap();
        store.append(session, Seq::ZERO, &entries(sample_events().len())).unwrap();
        put_session_object(&store, session);
    }
    let bundle = dir.path().join("bundle.jsonl");
    let id = session.to_string();
    let out = logbook(&["export", &id, "-o", bundle.to_str().unwrap()], &data);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exported without the blob: {stderr}");
    assert!(stderr.contains(&"a7".repeat(32)) && stderr.contains("--records-only"), "{stderr}");
    let out = logbook(&["export", &id, "-o", bundle.to_str().unwrap(), "--records-only"], &data);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&bundle).unwrap();
    assert!(text.starts_with("{\"type\":\"logbook_bundle\",\"format\":1,"), "{}", &text[..80]);
    let out = logbook(&["verify", bundle.to_str().unwrap()], &data);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Goal: `LOGBOOK_BOOTSTRAP_KEY` seeds an empty store only; set on a store
/// that already has keys (one made with `keys create`), it is not stored, and
/// `serve` says so instead of leaving the operator with a key that gets 401.
/// Method: create a key, start `serve` with another bootstrap key, wait for
/// the warning on stderr (under a deadline), stop the server.
#[test]
fn a_bootstrap_key_on_a_store_with_keys_is_reported_not_silently_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let created = keys(&["create"], &data, "");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let mut child = Command::new(env!("CARGO_BIN_EXE_logbook"))
        .args(["serve", "--listen", "127.0.0.1:0", "--no-runner", "--data"])
        .arg(&data)
        .env("LOGBOOK_BOOTSTRAP_KEY", "sk-logbook-test-bootstrap-0000000000000000")
        .env("LOGBOOK_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (found, seen) = stderr_until(&mut child, "LOGBOOK_BOOTSTRAP_KEY was not stored");
    assert!(found, "no warning about the bootstrap key; stderr: {seen:#?}");
}

/// DEFECT (`keys create` panics when it cannot print the key, leaving a live
/// key nobody was shown): the key is stored first, then printed with
/// `println!`, which panics (exit 101, a backtrace) when stdout cannot be
/// written: a full disk, a closed pipe. Every subcommand "reports a failure
/// as one line saying what went wrong and what to do" (cli.rs); and the
/// store is left with a live credential whose plaintext no one has ("it
/// will not be shown again"). Method: `keys create` with stdout on
/// /dev/full, then `keys list`.
#[test]
fn keys_create_that_cannot_print_the_key_fails_cleanly_and_leaves_no_live_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_logbook"))
        .args(["keys", "create", "--data"])
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "keys create panicked: {stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let listed = String::from_utf8(keys(&["list"], &data, "").stdout).unwrap();
    assert_eq!(listed.matches("  live").count(), 0, "a key no one was shown is live: {listed}");
}

/// DEFECT (`keys list | head` panics): `keys list` prints with `println!`,
/// which panics on a closed pipe ("failed printing to stdout: Broken pipe",
/// exit 101 and a backtrace on stderr) instead of stopping quietly or with
/// one line. Method: `keys list` with stdout a pipe whose read end is
/// already closed.
#[test]
fn keys_list_into_a_closed_pipe_does_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let created = keys(&["create"], &data, "");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_logbook"))
        .args(["keys", "list", "--data"])
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "keys list panicked on a closed pipe: {stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
}

/// DEFECT (a mistyped `--audit-key` signs the export with a brand-new key):
/// `logbook export --audit-key FILE` names "the audit key file", the
/// server's signing key. A path where no key exists is not refused:
/// `AuditKey::load_or_create` creates its directories and a fresh random
/// key there, and the export succeeds, "signed by key <new key>", a key no
/// verifier trusts and the server never used. A mistyped `--data` is
/// refused for the same reason ("no data directory"). Method: a store with
/// a session, exported with `--audit-key` pointing into a missing directory.
#[test]
fn export_refuses_an_audit_key_file_that_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let session = SessionId::from_parts(1_764_000_000_000, 44);
    {
        let store = SledStore::open(&data, &SledOptions::default()).unwrap();
        store.append(session, Seq::ZERO, &entries(3)).unwrap();
        put_session_object(&store, session);
    }
    let mistyped = dir.path().join("secrets").join("ed25519.kye");
    let bundle = dir.path().join("bundle.jsonl");
    let out = logbook(
        &[
            "export",
            &session.to_string(),
            "--records-only",
            "-o",
            bundle.to_str().unwrap(),
            "--audit-key",
            mistyped.to_str().unwrap(),
        ],
        &data,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let created = mistyped.exists();
    assert!(!out.status.success(), "exported, signed by a key made up on the spot: {stderr}");
    assert!(!created, "export created a new signing key at {}", mistyped.display());
}

/// DEFECT (`show --budget-tokens` takes any u64 and panics on a large one):
/// `logbook show SESSION --budget-tokens N` is the twin of `GET
/// /x/v1/sessions/{id}/context?budget_tokens=N` (docs/extensions.md), which
/// refuses a budget outside 512 to 1,000,000. The flag has no range: a
/// budget near u64::MAX reaches `logbook_replay::fit`, where `budget *
/// MANIFEST_PERCENT` overflows (debug builds panic, "attempt to multiply
/// with overflow"; release builds wrap to a tiny manifest budget). Method:
/// `show --budget-tokens 18446744073709551615` on a stored session; it
/// must be a usage error naming the flag (exit 2, like serve's range checks).
#[test]
fn show_refuses_a_budget_out_of_range_instead_of_overflowing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let session = SessionId::from_parts(1_764_000_000_000, 45);
    {
        let store = SledStore::open(&data, &SledOptions::default()).unwrap();
        store.append(session, Seq::ZERO, &entries(3)).unwrap();
        put_session_object(&store, session);
    }
    let out = logbook(&["show", &session.to_string(), "--budget-tokens", "18446744073709551615"], &data);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "show panicked: {stderr}");
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--budget-tokens"), "{stderr}");
}

/// DEFECT (`verify BUNDLE --json` prints no report for a bundle with a
/// non-UTF-8 byte): `--json` "prints the full report as JSON on stdout",
/// and a bundle damaged anywhere else gets one (`{"report": {..., "valid":
/// false}, ...}`, exit 1). A line that is not UTF-8 returns early from
/// `offline::verify_bundle` (the `NotUtf8` arm) with exit 1 and nothing on
/// stdout, so a script reading the report finds no JSON at all. Method: an
/// exported bundle with one byte of a record line set to 0xFF.
#[test]
fn verify_bundle_json_reports_a_non_utf8_bundle_as_damaged() {
    use logbook_server::audit::{self, AuditKey};
    let dir = tempfile::tempdir().unwrap();
    let session = SessionId::from_parts(1_764_000_000_000, 46);
    let store = SledStore::open(&dir.path().join("data"), &SledOptions::default()).unwrap();
    store.append(session, Seq::ZERO, &entries(3)).unwrap();
    let mut bytes = Vec::new();
    let now = Timestamp::from_unix_micros(1_765_000_000_000_000);
    audit::export(&store, &AuditKey::from_seed([1; 32]), session, None, now, &mut bytes).unwrap();
    let second_line = bytes.iter().position(|b| *b == b'\n').unwrap() + 1;
    bytes[second_line + 10] = 0xFF;
    let bundle = dir.path().join("bundle.jsonl");
    std::fs::write(&bundle, &bytes).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_logbook")).arg("verify").arg(&bundle).arg("--json").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let report: Result<serde_json::Value, _> = serde_json::from_slice(&out.stdout);
    assert!(
        report.is_ok(),
        "--json printed no report: stdout {:?}, stderr {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(report.unwrap()["report"]["valid"], false);
}

/// DEFECT (starting the server runs an imported session): `logbook import`
/// without `--environment` warns that the session "can be read, verified and
/// exported, but forking or continuing it needs an environment"
/// (docs/extensions.md: a fork of it answers 400 `environment_missing`).
/// Yet the next `serve` counts it among the "sessions that were running"
/// (`sessions::unfinished`: its log ends in a user input) and the runner
/// continues it, in an environment the workspace does not have: it calls the
/// model with this server's API key and appends to the imported log (by
/// hand: 27 new records, retries then an error). A bundle imported to be
/// inspected is changed, and billed, by merely starting the server.
/// Method: a session whose log is one `user.message`, exported and imported
/// into another data directory; `serve` started on it (echo tools, a model
/// URL nothing listens on) must not resume it.
#[test]
fn serve_does_not_resume_a_session_imported_without_its_environment() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let session = SessionId::from_parts(1_764_000_000_000, 47);
    {
        let store = SledStore::open(&data, &SledOptions::default()).unwrap();
        store.append(session, Seq::ZERO, &entries(1)).unwrap();
        put_session_object(&store, session);
    }
    let bundle = dir.path().join("bundle.jsonl");
    let out = logbook(&["export", &session.to_string(), "-o", bundle.to_str().unwrap()], &data);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let other = dir.path().join("other");
    let out = logbook(&["import", bundle.to_str().unwrap()], &other);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("needs an environment"), "{stderr}");

    let mut child = Command::new(env!("CARGO_BIN_EXE_logbook"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&other)
        .env("LOGBOOK_TOOLS", "echo")
        .env("ANTHROPIC_API_KEY", "test-key")
        .env("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
        .env("LOGBOOK_BOOTSTRAP_KEY", "sk-logbook-test-bootstrap-0000000000000000")
        .env("LOGBOOK_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (serving, seen) = stderr_until(&mut child, "serving on");
    assert!(serving, "serve did not start: {seen:#?}");
    assert!(
        !seen.iter().any(|line| line.contains("resuming")),
        "the imported session, whose environment this store lacks, is run on start: {seen:#?}"
    );
}
