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

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use logbook_core::verify::{Anchor, verify_chain};
use logbook_core::{Record, Seq, SessionId};
use logbook_store::{Read, Resources, SledOptions, SledStore};
use logbook_tests::{Ack, CRASH_COUNTER, counter_value, crash_session};
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
    // The highest ack per session, and the records seen after the last crash.
    let mut acked: BTreeMap<SessionId, Ack> = BTreeMap::new();
    let mut seen: BTreeMap<SessionId, Vec<Record>> = BTreeMap::new();
    let mut n_acks_total = 0u64;
    // The highest acknowledged value of the counter, and its value after the last crash.
    let mut counter_acked = 0u64;
    let mut counter_seen = 0u64;

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
                if line == "ready" {
                    continue;
                }
                if let Some(value) = line.strip_prefix("resource ") {
                    counter_acked = counter_acked.max(value.parse().unwrap());
                    continue;
                }
                let ack: Ack = line.parse().unwrap();
                record_ack(&mut acked, ack);
                n_acks += 1;
                if n_acks >= kill_after {
                    break;
                }
            }
        }
        child.kill().unwrap();
        // Acks printed between our last read and the kill still count: the pipe
        // keeps them after the child is gone.
        for line in lines {
            let Ok(line) = line else { break };
            if line == "ready" || line.is_empty() {
                continue;
            }
            if let Some(value) = line.strip_prefix("resource ") {
                // A line cut short by the kill is no acknowledgement.
                if let Ok(value) = value.parse::<u64>() {
                    counter_acked = counter_acked.max(value);
                }
                continue;
            }
            if let Ok(ack) = line.parse::<Ack>() {
                record_ack(&mut acked, ack);
                n_acks += 1;
            }
        }
        let status = child.wait().unwrap();
        // Killed by us, not ended by a failure of its own (which it reports).
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "{context}: {status}");
        n_acks_total += n_acks;

        let store = SledStore::open(&data, &SledOptions { cache_capacity_bytes: 16 << 20 })
            .unwrap_or_else(|err| panic!("{context}: reopen failed: {err}"));
        assert!(store.quarantined().is_empty(), "{context}: {:?}", store.quarantined());
        assert!(store.store_damage().is_empty(), "{context}: {:?}", store.store_damage());
        // The whole log against the index, every chain from genesis.
        let report = store.verify_all(&mut |_| {}).unwrap_or_else(|err| panic!("{context}: verify: {err}"));
        assert!(report.is_intact(), "{context}: {:?} {:?}", report.log_errors, report.damaged().collect::<Vec<_>>());
        for n in 0..N_SESSIONS {
            let session = crash_session(n);
            let records = read_all(&store, session);
            let report = verify_chain(Anchor::GENESIS, records.iter().map(Ok));
            assert!(report.is_intact(), "{context}: {session}: {report:?}");
            for (idx, record) in records.iter().enumerate() {
                assert_eq!(record.seq(), Seq::new(idx as u64), "{context}: gap in {session}");
            }
            if let Some(ack) = acked.get(&session) {
                let n_records = records.len() as u64;
                assert!(
                    n_records >= ack.next.get(),
                    "{context}: {session} lost acknowledged records: has {n_records}, acked {}",
                    ack.next
                );
                assert_eq!(
                    records[ack.next.get() as usize - 1].hash(),
                    ack.hash,
                    "{context}: {session} acked hash differs"
                );
            }
            if let Some(before) = seen.get(&session) {
                assert!(records.len() >= before.len(), "{context}: {session} shrank");
                assert_eq!(records[..before.len()], before[..], "{context}: {session} changed");
            }
            seen.insert(session, records);
        }
        let (kind, key) = CRASH_COUNTER;
        let counter = counter_value(store.get_resource(kind, key).unwrap().as_deref()).unwrap();
        assert!(
            (counter_acked..=counter_acked + 1).contains(&counter) && counter >= counter_seen,
            "{context}: the counter holds {counter}; acknowledged {counter_acked}, held {counter_seen} after the last crash"
        );
        counter_seen = counter;
        counter_acked = counter_acked.max(counter);
        drop(store);
    }
    let n_records: usize = seen.values().map(Vec::len).sum();
    eprintln!(
        "crash test: {iterations} kills, {n_acks_total} acks checked, {n_records} records and a counter of \
         {counter_seen} at the end"
    );
    assert!(n_acks_total > 0, "the writer never acknowledged anything");
    assert!(counter_seen > 0, "the resource counter never moved");
}

fn record_ack(acked: &mut BTreeMap<SessionId, Ack>, ack: Ack) {
    let entry = acked.entry(ack.session).or_insert(ack);
    if ack.next > entry.next {
        *entry = ack;
    }
}

#[expect(clippy::unwrap_used, reason = "test helper: a failed read fails the test")]
fn read_all(store: &SledStore, session: SessionId) -> Vec<Record> {
    let mut out = Vec::new();
    loop {
        let batch = store.read(session, Seq::new(out.len() as u64), 10_000).unwrap();
        if batch.is_empty() {
            return out;
        }
        out.extend(batch);
    }
}
