//! Review findings (branch review-core) in API-key handling. Each test fails
//! on the code it was written against and passes once the defect is fixed.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use logbook_core::{EnvironmentId, SessionId, Timestamp, WorkId};
use logbook_server::api::work::Access;
use logbook_server::api::work::access::{self, PathParams};
use logbook_server::tenancy::{self, KeyScope};
use logbook_store::{SledOptions, SledStore};

fn now() -> Timestamp {
    Timestamp::from_unix_micros(1_764_000_000_000_000)
}

/// An operator revokes a leaked environment key (offline, as documented) and
/// restarts the server. The sessions token a worker minted with that key
/// before (the poll's `secret`) still authenticates and still passes the
/// guard of the heartbeat route, which renews the lease: the worker keeps its
/// session for as long as it heartbeats. Nothing lists or revokes sessions
/// tokens (`keys list` leaves them out), so the operator has no way to cut it
/// off.
#[test]
fn revoking_an_environment_key_cuts_off_the_sessions_tokens_minted_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&dir.path().join("data"), &SledOptions::default()).unwrap();
    let workspace = tenancy::ensure_workspace(&store, "default", now()).unwrap();
    let env = EnvironmentId::from_parts(1_764_000_000_000, 1);
    let work = WorkId::from_parts(1_764_000_000_000, 2);
    let env_key = tenancy::create_environment_key(&store, workspace.id, env, now()).unwrap();
    let scope = KeyScope::WorkSession {
        environment_id: env,
        work_id: work,
        session_id: SessionId::from_parts(1_764_000_000_000, 3),
        claim: 1,
    };
    let (token, _) = tenancy::mint_scoped(&store, workspace.id, tenancy::SESSIONS_TOKEN_PREFIX, scope, now()).unwrap();
    assert!(tenancy::revoke_key(&store, &env_key, now()).unwrap());
    assert!(tenancy::authenticate_principal(&store, &env_key).is_err(), "the environment key is revoked");

    let params =
        PathParams(vec![("environment_id".to_owned(), env.to_string()), ("work_id".to_owned(), work.to_string())]);
    let heartbeat_admitted = tenancy::authenticate_principal(&store, &token)
        .and_then(|principal| access::check(&store, &principal, Access::WORKER, &params, now()))
        .is_ok();
    assert!(!heartbeat_admitted, "a sessions token of a revoked environment key is still admitted");
}

/// `LOGBOOK_BOOTSTRAP_KEY` read from a secret file often ends in a newline.
/// `store_key` accepts it verbatim and stores the hash of the key *with* the
/// newline, but the guard trims what clients present (`x-api-key`,
/// `Authorization: Bearer`), and `keys revoke` trims too: the first key can
/// never authenticate nor be revoked by value, and since a key now exists the
/// next `serve` does not seed another one.
#[test]
fn a_bootstrap_key_with_a_trailing_newline_is_refused_or_usable() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&dir.path().join("data"), &SledOptions::default()).unwrap();
    let workspace = tenancy::ensure_workspace(&store, "default", now()).unwrap();
    let key = "sk-logbook-0123456789abcdef0123";
    match tenancy::store_key(&store, &workspace, &format!("{key}\n"), now()) {
        Err(_) => {} // refused: the operator is told at startup
        Ok(()) => assert!(
            tenancy::authenticate_principal(&store, key).is_ok(),
            "stored a key no client can present (the guard trims the header)"
        ),
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
