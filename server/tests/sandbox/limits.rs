//! Resource limits (G-X5): a fork bomb and an output flood stay inside their
//! own sandbox, and another session keeps answering meanwhile; a sandbox that
//! fills its disk limit is stopped, during a command or between calls.

use serde_json::json;

use std::time::{Duration, Instant};

use logbook_server::sandbox::SandboxConfig;
use logbook_server::sandbox::cgroup::PIDS_MAX;
use logbook_server::sandbox::disk::{DiskLimit, MAX_OPEN_FDS_SCANNED};
use logbook_server::sandbox::output::{MAX_OUTPUT_BYTES, TRUNCATED_MARKER};

use crate::harness::{Sbx, session, text, unrestricted};

/// Goal: a fork bomb is capped at the sandbox's pids limit, ends with the
/// call's timeout, and another session's command completes while it rages.
/// Method: the bomb and the other session's commands run concurrently; the
/// other session must also be able to start processes (the per-user rlimit
/// is shared by all sandboxes, the cgroup limit is not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_is_contained_and_another_session_stays_responsive() {
    let sbx = Sbx::new();
    let (bomber, other, env) = (session(), session(), unrestricted());
    sbx.ok(other, &env, "true").await;
    let bomb = sbx.run(
        bomber,
        &env,
        "bash",
        json!({"command": "bomb() { bomb | bomb & }; bomb; sleep 100", "timeout_ms": 8000}),
    );
    let bystander = async {
        // Give the bomb a moment to start, through a command of our own.
        sbx.ok(other, &env, "sleep 1").await;
        sbx.ok(other, &env, "for i in $(seq 20); do (echo $i > /dev/null) & done; wait; echo alive").await
    };
    let (bombed, alive) = tokio::join!(bomb, bystander);
    assert!(bombed.is_error, "{}", text(&bombed));
    assert!(text(&bombed).contains("timed out"), "{}", text(&bombed));
    assert_eq!(alive, "alive\n");
    // The bomber's next command gets a fresh sandbox and works.
    assert_eq!(sbx.ok(bomber, &env, "echo recovered").await, "recovered\n");
}

/// Goal: the number of processes in one sandbox never passes the cgroup's
/// pids limit. Method: start far more background processes than the limit
/// and count what the sandbox's own /proc shows (with builtins only: at the
/// limit, nothing can fork). The loop runs in a subshell: bash gives up and
/// exits when a fork keeps failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_are_capped_per_sandbox() {
    let sbx = Sbx::new();
    let (s, env) = (session(), unrestricted());
    let count = sbx
        .ok(
            s,
            &env,
            &format!(
                "(for i in $(seq {}); do sleep 60 & done) >/dev/null 2>&1; c=0; for p in /proc/[0-9]*; do c=$((c+1)); done; echo $c",
                PIDS_MAX + 150
            ),
        )
        .await;
    let count: u32 = count.trim().parse().unwrap();
    assert!(count <= PIDS_MAX, "{count} processes in one sandbox, limit {PIDS_MAX}");
    assert!(count >= PIDS_MAX - 20, "the limit, not something else, stopped the processes: {count}");
}

/// Goal: an output flood leaves a capped tool result and does not stall
/// another session. Method: an endless `yes` with a short timeout, and a
/// 50 MB burst that ends by itself, while another session answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_flood_is_capped_and_another_session_stays_responsive() {
    let sbx = Sbx::new();
    let (flooder, other, env) = (session(), session(), unrestricted());
    let endless = sbx.run(flooder, &env, "bash", json!({"command": "yes logbook-flood", "timeout_ms": 3000}));
    let bystander = sbx.ok(other, &env, "echo alive");
    let (flooded, alive) = tokio::join!(endless, bystander);
    assert!(flooded.is_error && text(&flooded).contains("timed out"));
    assert!(text(&flooded).len() <= MAX_OUTPUT_BYTES + 300, "{} bytes", text(&flooded).len());
    assert_eq!(alive, "alive\n");
    let burst = sbx.ok(flooder, &env, "head -c 50000000 /dev/zero | tr '\\0' y; echo; echo done").await;
    assert!(burst.starts_with(TRUNCATED_MARKER));
    assert!(burst.ends_with("yyy\ndone\n"));
    assert!(burst.len() <= MAX_OUTPUT_BYTES + TRUNCATED_MARKER.len() + 1);
}

/// Goal: output that trickles in a byte at a time after a large output is
/// read whole, through a real sandbox's shell: the marker scan looks only at
/// what each read adds, so this must not change what the call returns. The
/// cost itself (bytes scanned per read, not CPU time, which a busy machine
/// makes flaky) is `sandbox::shell::tests::a_slow_trickle_after_a_large_output_is_scanned_once`.
/// Method: a 150 KB line, then 1,000 one-byte writes a millisecond apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_trickle_after_a_large_output_is_read_whole() {
    let sbx = Sbx::new();
    let (s, env) = (session(), unrestricted());
    let command = "python3 -c 'import os, time\nos.write(1, b\"x\" * 150000)\nfor _ in range(1000):\n    os.write(1, b\"y\"); time.sleep(0.001)\n'; echo; echo done";
    let output = sbx.ok(s, &env, command).await;
    assert!(output.starts_with(TRUNCATED_MARKER), "{}", &output[..64.min(output.len())]);
    let expected_end = format!("x{}\ndone\n", "y".repeat(1000));
    assert!(output.ends_with(&expected_end), "{}", &output[output.len().saturating_sub(64)..]);
    assert!(output.len() <= MAX_OUTPUT_BYTES + TRUNCATED_MARKER.len() + 1, "{} bytes", output.len());
}

/// A sandbox whose sessions may hold `bytes` bytes and `entries` files.
fn with_disk_limit(bytes: u64, entries: u64) -> Sbx {
    Sbx::with_config(|config| SandboxConfig { disk_limit: DiskLimit { bytes, entries }, ..config })
}

/// Runs `command` in `session` with a timeout far longer than any test
/// waits, expects the disk watch to stop it, and returns what it said.
async fn stopped_by_the_disk_watch(sbx: &Sbx, session: logbook_core::SessionId, command: &str) -> String {
    let env = unrestricted();
    let outcome = sbx.run(session, &env, "bash", serde_json::json!({"command": command, "timeout_ms": 600_000})).await;
    let said = text(&outcome);
    assert!(outcome.is_error && said.starts_with("bash: the command was stopped: "), "{said}");
    said
}

/// Goal: a command that writes past the sandbox's disk limit is stopped, not
/// left to fill the host's disk until its timeout; the jail's files stay, the
/// agent can still look at them (over the limit but not growing) and delete
/// them, and then write again. Method: a 20 MB limit, a command that writes
/// 64 MB and then waits far longer than the test will.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_writing_past_the_disk_limit_is_stopped() {
    let sbx = with_disk_limit(20_000_000, 10_000);
    let (s, env) = (session(), unrestricted());
    let said = stopped_by_the_disk_watch(&sbx, s, "head -c 64000000 /dev/zero > big; echo written; sleep 600").await;
    assert!(said.contains("over the sandbox's disk limit of 20000000 bytes"), "{said}");
    assert!(said.contains("Output before it was stopped:\nwritten"), "{said}");
    // Over the limit: commands run, and say they cannot write.
    let looked = sbx.ok(s, &env, "stat -c %s big").await;
    assert!(looked.starts_with("Note: the sandbox is over its disk limit"), "{looked}");
    assert!(looked.ends_with("\n\n64000000\n"), "{looked}");
    sbx.ok(s, &env, "rm big").await;
    let wrote = sbx.ok(s, &env, "head -c 1000000 /dev/zero > small; stat -c %s small").await;
    assert!(wrote.starts_with("Note: the sandbox is back under its disk limit"), "{wrote}");
    assert!(wrote.ends_with("\n\n1000000\n"), "{wrote}");
    assert_eq!(sbx.ok(s, &env, "echo again").await, "again\n", "the note is said once");
}

/// Goal: a file deleted while a process still fills it counts against the
/// limit (the walk cannot see it by name). Method: bash holds the file on fd
/// 3 after deleting it and writes 64 MB to it past a 20 MB limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_file_still_being_written_is_stopped() {
    let sbx = with_disk_limit(20_000_000, 10_000);
    let command = "exec 3>hidden; rm hidden; head -c 64000000 /dev/zero >&3; sleep 600";
    let said = stopped_by_the_disk_watch(&sbx, session(), command).await;
    assert!(said.contains("over the sandbox's disk limit of 20000000 bytes"), "{said}");
}

/// Goal (review, stop 21): the disk limit bounds what a session holds,
/// whatever the number of calls. A jail stopped for going over leaves its
/// files; were the next call's jail to take them as its baseline and write
/// again, each jail would add an interval's overshoot. Method: a 20 MB limit;
/// a first call writing 30 MB is stopped; two more calls try to write 30 MB
/// each and are refused ("File too large"), so the session holds at most the
/// limit plus one overshoot; deleting gets writing back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overshoots_of_successive_jails_do_not_add_up() {
    let sbx = with_disk_limit(20_000_000, 10_000);
    let (s, env) = (session(), unrestricted());
    stopped_by_the_disk_watch(&sbx, s, "head -c 30000000 /dev/zero > fill0; sleep 600").await;
    for n in 1..3 {
        let refused = sbx.bash(s, &env, &format!("head -c 30000000 /dev/zero > fill{n}")).await;
        let said = text(&refused);
        assert!(refused.is_error && said.contains("File too large"), "{said}");
        assert_eq!(said.starts_with("Note: the sandbox is over its disk limit"), n == 1, "{said}");
    }
    let held: u64 = sbx.ok(s, &env, "du -sb --apparent-size /workspace | cut -f1").await.trim().parse().unwrap();
    assert!(held <= 20_000_000 + 30_000_000, "the session holds {held} bytes under a 20000000-byte limit");
    sbx.ok(s, &env, "rm fill*").await;
    let wrote = sbx.ok(s, &env, "head -c 1000000 /dev/zero > small; stat -c %s small").await;
    assert!(wrote.ends_with("\n\n1000000\n"), "{wrote}");
}

/// Goal: a jail that starts over its disk limit cannot add to what the
/// session holds (it runs with a file-size limit of 0, so it "can delete
/// files but not write them"), whatever call it uses. Method: a 20 MB limit;
/// a first call writing 30 MB is stopped; the next call creates an empty
/// file and allocates 200 MB to it with `fallocate --keep-size` (the size
/// stays 0, which is all `RLIMIT_FSIZE` looks at); what the workspace holds
/// is then measured from the host, whatever became of the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jail_over_its_limit_cannot_allocate_with_fallocate_keep_size() {
    let sbx = with_disk_limit(20_000_000, 10_000);
    let (s, env) = (session(), unrestricted());
    stopped_by_the_disk_watch(&sbx, s, "head -c 30000000 /dev/zero > fill0; sleep 600").await;
    let _ = sbx.bash(s, &env, ": > more; fallocate -n -l 200000000 more; echo rc=$?").await;
    let du = crate::harness::host(&format!("du -sB1 {} | cut -f1", sbx.paths(s).workspace().display()));
    let held: u64 = String::from_utf8_lossy(&du.stdout).trim().parse().unwrap();
    assert!(
        held <= 20_000_000 + 30_000_000 + 1_000_000,
        "the session holds {held} allocated bytes under a 20000000-byte limit"
    );
}

/// Goal: a file deleted while a process still fills it through a shared
/// memory mapping counts against the limit too: the walk cannot see it by
/// name, and no descriptor in `/proc/<pid>/fd` holds it once the process
/// has closed it (only the mapping does). Method: python (through libc, as
/// its own mmap module keeps a descriptor) maps a 64 MB file, closes and
/// deletes it, then fills the mapping and syncs it to disk past a 20 MB
/// limit; the command ends by itself after 20 s (far longer than the watch's
/// one-second interval) if it is not stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_file_still_filled_through_a_mapping_is_stopped() {
    let sbx = with_disk_limit(20_000_000, 10_000);
    let command = "python3 -c 'import ctypes, os, time\n\
                   libc = ctypes.CDLL(None)\n\
                   libc.mmap.restype = ctypes.c_void_p\n\
                   libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]\n\
                   libc.msync.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]\n\
                   n = 64000000\n\
                   fd = os.open(\"hidden\", os.O_RDWR | os.O_CREAT, 0o644); os.ftruncate(fd, n)\n\
                   addr = libc.mmap(None, n, 3, 1, fd, 0)\n\
                   os.close(fd); os.unlink(\"hidden\")\n\
                   ctypes.memset(addr, 1, n); assert libc.msync(addr, n, 4) == 0\n\
                   print(\"written\", flush=True); time.sleep(20)'";
    let said = stopped_by_the_disk_watch(&sbx, session(), command).await;
    assert!(said.contains("over the sandbox's disk limit of 20000000 bytes"), "{said}");
}

/// Goal: a deleted file still being written counts against the limit
/// however many descriptors the jail's other processes hold: a jail may hold
/// its pids limit times its open-files limit of them (256 x 8192, twice
/// `MAX_OPEN_FDS_SCANNED`), so a cap on the entries looked at must not let
/// decoys hide the writer. Method: python forks 140 decoys that each hold
/// 8180 descriptors of /dev/null, then (with a higher pid, so listed after
/// them in `cgroup.procs`) a writer that deletes its file and writes 64 MB
/// to it past a 20 MB limit; the command ends by itself after 120 s if it is
/// not stopped. (With 20 s it failed on a slower machine: a measurement
/// while the decoys were made took seconds, and the watch paused twenty
/// times that; the pause is now capped at `MAX_CHECK_PAUSE`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decoy_descriptors_do_not_hide_a_deleted_file_being_written() {
    let sbx = with_disk_limit(20_000_000, 10_000);
    let command = "python3 -c 'import os, time\n\
                   r, w = os.pipe()\n\
                   for i in range(140):\n\
                   \x20   if os.fork() == 0:\n\
                   \x20       fd = os.open(\"/dev/null\", os.O_RDONLY)\n\
                   \x20       for j in range(8180): os.dup(fd)\n\
                   \x20       os.write(w, b\"x\"); time.sleep(600); os._exit(0)\n\
                   n = 0\n\
                   while n < 140: n += len(os.read(r, 140))\n\
                   if os.fork() == 0:\n\
                   \x20   fd = os.open(\"hidden\", os.O_WRONLY | os.O_CREAT, 0o644); os.unlink(\"hidden\")\n\
                   \x20   for k in range(64): os.write(fd, bytes(1000000))\n\
                   \x20   os.fsync(fd); os.write(w, b\"y\"); time.sleep(600); os._exit(0)\n\
                   os.read(r, 1); print(\"written\", flush=True); time.sleep(120)'";
    let said = stopped_by_the_disk_watch(&sbx, session(), command).await;
    // Past what a measurement looks at, growth is judged by the file system.
    let past = format!("more than {MAX_OPEN_FDS_SCANNED} open files and mappings");
    assert!(said.contains(&past), "{said}");
}

/// Goal: many empty files are stopped too (each costs an inode, and the
/// watch's walk must stay bounded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_making_too_many_files_is_stopped() {
    let sbx = with_disk_limit(10_000_000_000, 300);
    let command = "mkdir d && cd d && for i in $(seq 1000); do : > f$i; done; sleep 600";
    let s = session();
    let said = stopped_by_the_disk_watch(&sbx, s, command).await;
    assert!(said.contains("more than 300 files and directories"), "{said}");
    // The next jail starts over the limit, past the walk's cut: it cannot
    // write at all.
    let env = unrestricted();
    let refused = sbx.bash(s, &env, "head -c 64000000 /dev/zero > big").await;
    let said = text(&refused);
    assert!(refused.is_error && said.contains("more than 300 files and directories"), "{said}");
    assert!(said.contains("File too large"), "{said}");
}

/// Goal: nesting directories deeper than the walk goes does not hide what is
/// written beneath them. Method: 300 levels of directories, then 64 MB
/// written at the bottom past a 20 MB limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_writing_below_the_walk_depth_is_stopped() {
    let sbx = with_disk_limit(20_000_000, 10_000);
    let command =
        "for i in $(seq 300); do mkdir d && cd d || exit 1; done; head -c 64000000 /dev/zero > big; sleep 600";
    let said = stopped_by_the_disk_watch(&sbx, session(), command).await;
    assert!(said.contains("nests directories 256 levels deep"), "{said}");
}

/// Goal: a background job that fills the disk between calls is stopped with
/// its jail, and the next call's result says why its shell is new. Method: a
/// background writer started by a call that returns at once; the test waits
/// (deadline) for the jail to be gone, then runs a command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_job_filling_the_disk_between_calls_is_stopped() {
    let sbx = with_disk_limit(20_000_000, 10_000);
    let (s, env) = (session(), unrestricted());
    sbx.ok(s, &env, "(sleep 1; head -c 64000000 /dev/zero > bg; sleep 600) >/dev/null 2>&1 & echo started").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while sbx.tools.jail_pid(s).await.is_some() {
        assert!(Instant::now() < deadline, "the filling jail was not stopped within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let next = sbx.bash(s, &env, "echo fresh").await;
    assert!(!next.is_error, "{}", text(&next));
    let said = text(&next);
    assert!(said.starts_with("Note: after the last command, the sandbox went over its disk limit"), "{said}");
    assert!(said.ends_with("\n\nfresh\n"), "{said}");
    // The note is said once.
    assert_eq!(sbx.ok(s, &env, "echo again").await, "again\n");
}

/// Goal: sandboxes that each stay within their own pids limit cannot, all
/// together, stop another session from starting processes. All sandboxes
/// run as one host uid and the kernel counts `RLIMIT_NPROC` per uid across
/// user namespaces, so in a cgroup (whose `pids.max` is the sandbox's own
/// limit) the rlimit must be above what every live jail at its limit holds
/// together. Method: the rlimit a sandbox runs with, read inside it, against
/// `MAX_LIVE_JAILS` x `PIDS_MAX` (filling 64 jails with 256 processes each
/// to show the starvation itself is too heavy for CI; the review that found
/// it filled 5 under `ulimit -Hu 1100`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_at_their_pids_limit_do_not_starve_another_session() {
    use logbook_server::sandbox::MAX_LIVE_JAILS;
    use logbook_server::sandbox::jail::RLIMIT_NPROC_WITH_CGROUP;
    let together = MAX_LIVE_JAILS as u64 * u64::from(PIDS_MAX);
    assert!(RLIMIT_NPROC_WITH_CGROUP > together, "{RLIMIT_NPROC_WITH_CGROUP} <= {together}");
    let sbx = Sbx::new();
    let limit = sbx.ok(session(), &unrestricted(), "ulimit -u").await;
    // The tests run with cgroups (see `processes_are_capped_per_sandbox`).
    assert_eq!(limit.trim(), RLIMIT_NPROC_WITH_CGROUP.to_string(), "the sandbox's process rlimit");
}

/// Goal: `/tmp` is the sandbox's only writable memory-backed file system,
/// and it is sized (`TMP_SIZE_BYTES`): no other tmpfs the sandbox can write
/// lets it hold more files in memory than that. Method: for `/dev` and
/// `/dev/shm`, if the sandbox can create a file there, the file system's
/// size must not exceed `/tmp`'s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_writable_tmpfs_but_tmp_and_none_larger_than_it() {
    use logbook_server::sandbox::jail::TMP_SIZE_BYTES;
    let sbx = Sbx::new();
    let (s, env) = (session(), unrestricted());
    let found = sbx
        .ok(
            s,
            &env,
            &format!(
                "for d in /dev /dev/shm; do \
                   if touch $d/.logbook-probe 2>/dev/null; then \
                     size=$(df -B1 --output=size $d | tail -n 1 | tr -d ' '); \
                     [ \"$size\" -le {TMP_SIZE_BYTES} ] || echo \"$d is writable and $size bytes\"; \
                   fi; \
                 done; echo done"
            ),
        )
        .await;
    assert_eq!(found, "done\n", "a writable memory file system larger than /tmp's {TMP_SIZE_BYTES} bytes");
}
