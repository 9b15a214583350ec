//! Crash test: SIGKILL a process that appends with concurrent writers, at
//! random moments, and check what survives.
//!
//! Goal: every acknowledged append is present after the crash, seqs are
//! gap-free, every chain verifies, and what one iteration saw survives the next
//! crash unchanged. The writer uses tiny log segments and checkpoints
//! continuously, so kills land in rollovers and checkpoints too. Method: `crash-writer` appends to 8 sessions with 2 writers
//! each and prints an ack line after each acknowledged append; the parent kills
//! it after a random number of acks (0 for 10% of iterations: a kill during
//! start-up and recovery), reopens the store and checks it against every ack
//! ever printed. Iterations: `LOGBOOK_CRASH_ITERATIONS` (default 100), seed
//! `LOGBOOK_CRASH_SEED`. Resources too: the writer counts a resource up by
//! compare-and-swap, one write in flight at a time, and prints each value
//! acknowledged; after the crash the counter holds the last acknowledged value
//! or the one write in flight after it, never less (a lost write) and never
//! more, and never less than it held after the previous crash.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use logbook_tests::crash_check::{Line, Survivors};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const N_SESSIONS: u64 = 8;
const WRITERS_PER_SESSION: u64 = 2;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    let iterations = env_or("LOGBOOK_CRASH_ITERATIONS", 100);
    let seed = env_or("LOGBOOK_CRASH_SEED", 0xc0ffee);
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut survivors = Survivors::default();

    for iteration in 0..iterations {
        let context = format!("seed {seed} iteration {iteration}");
        let kill_after = if rng.random_ratio(1, 10) { 0 } else { rng.random_range(1..200u64) };
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash-writer"))
            .arg(&data)
            .arg(N_SESSIONS.to_string())
            .arg(WRITERS_PER_SESSION.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut n_acks = 0;
        if kill_after > 0 {
            // Wait (on the child's own output, no sleeping) for `kill_after` acks.
            for line in lines.by_ref() {
                let line = line.unwrap();
                let parsed = Line::parse(&line).unwrap_or_else(|| panic!("{context}: unexpected line {line:?}"));
                survivors.take(&parsed);
                if matches!(parsed, Line::Ack(_)) {
                    n_acks += 1;
                    if n_acks >= kill_after {
                        break;
                    }
                }
            }
        }
        child.kill().unwrap();
        // Acks printed between our last read and the kill still count: the pipe
        // keeps them after the child is gone.
        for line in lines {
            let Ok(line) = line else { break };
            if let Some(parsed) = Line::parse(&line) {
                survivors.take(&parsed);
            }
        }
        let status = child.wait().unwrap();
        // Killed by us, not ended by a failure of its own (which it reports).
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "{context}: {status}");
        survivors.check(&data, N_SESSIONS).unwrap_or_else(|err| panic!("{context}: {err:#}"));
    }
    eprintln!(
        "crash test: {iterations} kills, {} acks checked, {} records and a counter of {} at the end",
        survivors.n_acks,
        survivors.n_records(),
        survivors.counter()
    );
    assert!(survivors.n_acks > 0, "the writer never acknowledged anything");
    assert!(survivors.counter() > 0, "the resource counter never moved");
}
