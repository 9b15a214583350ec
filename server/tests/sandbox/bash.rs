//! The bash tool's contract (behaviour digest §8.3): one persistent shell per
//! session, timeouts that kill and restart it, `restart`, output capped at
//! 100 KiB keeping the tail, ANSI stripped, non-zero exit as an error result,
//! background jobs that outlive their call.

use std::time::Duration;

use serde_json::json;

use crate::harness::{Sbx, session, text, unrestricted};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_persists_between_calls() {
    let sbx = Sbx::new();
    let (s, env) = (session(), unrestricted());
    sbx.ok(s, &env, "mkdir -p sub && cd sub && export GREETING=hello && f() { echo \"f:$1\"; }").await;
    assert_eq!(sbx.ok(s, &env, "pwd; echo $GREETING; f x").await, "/workspace/sub\nhello\nf:x\n");
    assert_eq!(sbx.ok(s, &env, "echo $HOME; id -un; hostname").await, "/workspace\nnobody\nsandbox\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_and_syntax_errors_are_error_results_with_the_output() {
    let sbx = Sbx::new();
    let (s, env) = (session(), unrestricted());
    let failed = sbx.bash(s, &env, "echo before; echo oops >&2; false").await;
    assert!(failed.is_error);
    assert_eq!(text(&failed), "before\noops\n");
    let status = sbx.bash(s, &env, "exit_code() { return 3; }; exit_code").await;
    assert!(status.is_error);
    assert_eq!(text(&status), "(no output; exit status 3)");
    let syntax = sbx.bash(s, &env, "if then fi (").await;
    assert!(syntax.is_error);
    assert!(text(&syntax).contains("syntax error"), "{}", text(&syntax));
    // The shell survived all of that.
    assert_eq!(sbx.ok(s, &env, "true").await, "(no output)");
    assert_eq!(
        sbx.ok(s, &env, "echo 'quotes \" and $(subshells) and <<EOF survive'").await.trim(),
        "quotes \" and $(subshells) and <<EOF survive"
    );
    // stdin is /dev/null: a command reading it does not eat the protocol.
    assert_eq!(sbx.ok(s, &env, "cat; echo after").await, "after\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_kills_the_shell_and_the_next_call_gets_a_new_one() {
    let sbx = Sbx::new();
    let (s, env) = (session(), unrestricted());
    sbx.ok(s, &env, "export MARK=old; sleep 600 &").await;
    let old_pid = sbx.tools.jail_pid(s).await.unwrap();
    let timed_out = sbx.run(s, &env, "bash", json!({"command": "echo partial; sleep 30", "timeout_ms": 1500})).await;
    assert!(timed_out.is_error);
    let message = text(&timed_out);
    assert!(message.starts_with("bash command timed out after 1.500s"), "{message}");
    assert!(message.contains("partial"), "{message}");
    // The old jail and its background job are gone.
    assert!(!std::path::Path::new(&format!("/proc/{old_pid}")).exists(), "the old jail still runs");
    assert_eq!(sbx.ok(s, &env, "echo \"[$MARK]\"; pgrep -c sleep || true").await, "[]\n0\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_replaces_the_shell() {
    let sbx = Sbx::new();
    let (s, env) = (session(), unrestricted());
    sbx.ok(s, &env, "export KEEP=1").await;
    let restarted = sbx.run(s, &env, "bash", json!({"restart": true})).await;
    assert_eq!((restarted.is_error, text(&restarted).as_str()), (false, "bash session restarted"));
    assert_eq!(sbx.ok(s, &env, "echo \"[${KEEP:-}]\"").await, "[]\n");
    let missing = sbx.run(s, &env, "bash", json!({})).await;
    assert_eq!((missing.is_error, text(&missing).as_str()), (true, "bash: command is required"));
    // `exit` ends the shell; the call says so and the next one works.
    let exited = sbx.bash(s, &env, "echo bye; exit 4").await;
    assert!(exited.is_error && text(&exited).contains("the shell exited") && text(&exited).contains("bye"));
    assert_eq!(sbx.ok(s, &env, "echo again").await, "again\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_capped_at_100_kib_keeping_the_end_and_ansi_is_stripped() {
    let sbx = Sbx::new();
    let (s, env) = (session(), unrestricted());
    let flood = sbx.ok(s, &env, "seq 1 200000; echo THE-END").await;
    assert!(flood.starts_with("[output truncated]\n"), "{}", &flood[..100]);
    assert!(flood.ends_with("199999\n200000\nTHE-END\n"));
    assert!(flood.len() <= 100 * 1024 + "[output truncated]\n".len());
    let coloured = sbx.ok(s, &env, r"printf '\033[1;31mred\033[0m \033]0;title\007plain\n'").await;
    assert_eq!(coloured, "red plain\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_jobs_keep_running_between_calls() {
    let sbx = Sbx::new();
    let (s, env) = (session(), unrestricted());
    sbx.ok(s, &env, "(for i in 1 2 3 4 5 6 7 8 9 10; do echo tick $i >> ticks.txt; sleep 0.2; done) >/dev/null 2>&1 &")
        .await;
    let paths = sbx.paths(s);
    let ticks = paths.workspace().join("ticks.txt");
    let finished = crate::harness::eventually(Duration::from_secs(30), || {
        std::fs::read_to_string(&ticks).is_ok_and(|t| t.contains("tick 10"))
    })
    .await;
    assert!(finished, "the background job stopped with its call");
    // A bare `wait` waits for the command's own jobs only (the sandbox's
    // network forwarder is not a child of the shell).
    assert_eq!(sbx.ok(s, &env, "(sleep 0.2; echo job) & wait; echo waited").await, "job\nwaited\n");
    // A server started in the background is reachable from later calls.
    sbx.ok(s, &env, "python3 -m http.server 8765 --bind 127.0.0.1 >/dev/null 2>&1 & echo started").await;
    let fetched = sbx
        .ok(
            s,
            &env,
            "for i in $(seq 50); do curl -s --noproxy '*' http://127.0.0.1:8765/ticks.txt && break; sleep 0.2; done",
        )
        .await;
    assert!(fetched.contains("tick 1"), "{fetched}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_clear_error() {
    let sbx = Sbx::new();
    let (s, env) = (session(), unrestricted());
    for (input, expected) in [
        (json!({"command": 5}), "bash: invalid input"),
        (json!({"command": "echo \u{0}"}), "bash: the command contains a NUL byte"),
    ] {
        let outcome = sbx.run(s, &env, "bash", input).await;
        assert!(outcome.is_error && text(&outcome).starts_with(expected), "{}", text(&outcome));
    }
}

/// Goal: a server keeps a bounded number of live sandboxes: starting one
/// more stops the least recently used idle one, whose session simply gets a
/// fresh sandbox at its next call (its files stay).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sandboxes_beyond_the_limit_are_stopped_oldest_first() {
    let sbx = Sbx::with_max_live_jails(2);
    let env = unrestricted();
    let (first, second, third) = (session(), session(), session());
    sbx.ok(first, &env, "echo kept > file; export GONE=1").await;
    sbx.ok(second, &env, "true").await;
    let first_pid = sbx.tools.jail_pid(first).await.unwrap();
    sbx.ok(third, &env, "true").await;
    assert!(sbx.tools.jail_pid(first).await.is_none(), "the oldest idle sandbox was stopped");
    assert!(!std::path::Path::new(&format!("/proc/{first_pid}")).exists());
    assert!(sbx.tools.jail_pid(second).await.is_some() && sbx.tools.jail_pid(third).await.is_some());
    assert_eq!(sbx.ok(first, &env, "cat file; echo \"[${GONE:-}]\"").await, "kept\n[]\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_the_sandbox_user_cannot_reach_still_works() {
    // A data directory under a 0700 directory (/root, or a fresh tempdir):
    // the sessions' directories and the forwarder move where the sandbox
    // user can reach them, and bash runs.
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let root = logbook_server::sandbox::layout::sandboxes_root(&data);
    assert!(root.starts_with(logbook_server::sandbox::layout::FALLBACK_SANDBOXES_DIR), "{}", root.display());
    let store = std::sync::Arc::new(logbook_store::MemStore::in_memory().unwrap());
    // A forwarder behind the same 0700 directory.
    let forwarder = dir.path().join("logbook");
    std::fs::copy(env!("CARGO_BIN_EXE_logbook"), &forwarder).unwrap();
    let config = logbook_server::sandbox::SandboxConfig::for_data(&data, forwarder);
    let tools = logbook_server::sandbox::SandboxTools::new(config, store as _).unwrap();
    assert_eq!(tools.check(), Vec::<String>::new());
    let (s, env) = (session(), unrestricted());
    let input =
        logbook_core::Json::new(&serde_json::json!({"command": "echo reached > here.txt && cat here.txt && id -u"}));
    let call = logbook_server::runner::ToolCall {
        session: s,
        tool_use_id: logbook_core::EventId::for_seq(1, logbook_core::Seq::new(1), 1),
        name: "bash",
        input: &input,
        agent_tools: &[],
        environment: Some(&env),
        log: &[],
    };
    let outcome = logbook_server::runner::ToolExecutor::run(&tools, &call).await;
    assert!(!outcome.is_error, "{outcome:?}");
    assert_eq!(crate::harness::text(&outcome), "reached\n65534\n");
    assert_eq!(std::fs::read(tools.paths(s).workspace().join("here.txt")).unwrap(), b"reached\n");
    logbook_server::runner::ToolExecutor::end_session(&tools, s).await;
    let _ = std::fs::remove_dir_all(&root);
}
