//! Tests of the workload generator, the group committer and the diagnostics:
//! determinism, the promised shape of the corpus, that every submitted item is
//! committed, and that the codec probe measures what the store stores.

use std::sync::{Arc, Mutex};

use logbook_core::{Entry, Event};

use crate::group::GroupCommit;
use crate::workload::{self, WorkloadConfig};

fn canonical_len(entry: &Entry) -> usize {
    entry.to_canonical().unwrap().len()
}

#[test]
fn a_seed_always_gives_the_same_sessions_and_another_seed_does_not() {
    // Goal: reproducible benchmarks. Method: generate twice with one seed, once with another.
    let config = WorkloadConfig { n_sessions: 3, ..WorkloadConfig::new(7, 60) };
    let a = workload::generate(&config, 2);
    let b = workload::generate(&config, 1);
    let c = workload::generate(&WorkloadConfig { seed: 8, ..config }, 2);
    assert_eq!(a.len(), 3);
    for ((a, b), c) in a.iter().zip(&b).zip(&c) {
        assert_eq!(a.session, b.session);
        assert_eq!(a.entries, b.entries);
        assert_ne!(a.entries, c.entries);
    }
    assert_eq!(a[1].session, workload::session_id(7, 1));
}

#[test]
fn the_corpus_has_the_promised_shape() {
    // Goal: the workload the issue asks for. Method: generate 2000 events and
    // check tool result sizes, the rate of large outputs and the event mix.
    let config = WorkloadConfig { n_sessions: 4, ..WorkloadConfig::new(1, 500) };
    let logs = workload::generate(&config, 2);
    let entries: Vec<&Entry> = logs.iter().flat_map(|log| &log.entries).collect();
    let results: Vec<usize> =
        entries.iter().filter(|e| matches!(e.event, Event::AgentToolResult(_))).map(|e| canonical_len(e)).collect();
    let big = results.iter().filter(|n| **n >= 50 * 1024).count();
    let small = results.iter().filter(|n| (300..4096 + 200).contains(*n)).count();
    assert_eq!(big + small, results.len(), "tool results are 0.3–4 KiB or 50–500 KiB");
    assert!(results.iter().all(|n| *n < 500 * 1024 + 4096));
    // About one event in 50 is large: 40 expected in 2000.
    assert!((25..=60).contains(&big), "{big} large outputs in {} events", entries.len());
    for wanted in ["user.message", "agent.message", "agent.tool_use", "span.model_request_end", "session.status_idle"] {
        assert!(entries.iter().any(|e| e.event.event_type().as_str() == wanted), "no {wanted}");
    }
    // Time moves forward within a session.
    for log in &logs {
        assert!(log.entries.windows(2).all(|w| w[0].at < w[1].at && w[0].id < w[1].id));
    }
}

#[test]
fn a_jsonl_line_is_the_api_event_plus_its_session() {
    let log = workload::session(&WorkloadConfig::new(3, 5), 0);
    let line = workload::jsonl_line(log.session, &log.entries[0]).unwrap();
    assert!(!line.contains('\n'));
    let value: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(value["session_id"], log.session.to_string());
    assert_eq!(value["type"], "user.message");
    assert_eq!(value["id"], log.entries[0].id.to_string());
}

#[test]
fn the_group_committer_commits_every_item_in_batches() {
    // Goal: no acknowledged item is lost and batches respect the limit, with
    // one committer and with three committing at once. Method: 8 threads
    // submit 50 items each; the commit function records batches.
    for depth in [1, 3] {
        let committed = Arc::new(Mutex::new(Vec::new()));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let (c, s) = (Arc::clone(&committed), Arc::clone(&sizes));
        let commit = move |batch: &mut Vec<u32>| {
            s.lock().unwrap().push(batch.len());
            c.lock().unwrap().extend(batch.iter().copied());
            Ok(())
        };
        let group = match depth {
            1 => GroupCommit::start(4, commit),
            _ => GroupCommit::start_pipelined(4, depth, commit),
        };
        std::thread::scope(|scope| {
            for thread in 0..8u32 {
                let group = &group;
                let committed = &committed;
                scope.spawn(move || {
                    for idx in 0..50 {
                        let item = thread * 1000 + idx;
                        group.submit(item).unwrap();
                        assert!(committed.lock().unwrap().contains(&item), "acknowledged before commit");
                    }
                });
            }
        });
        let stats = group.finish().unwrap();
        let mut all = committed.lock().unwrap().clone();
        all.sort_unstable();
        let expected: Vec<u32> = (0..8).flat_map(|t| (0..50).map(move |i| t * 1000 + i)).collect();
        assert_eq!(all, expected, "depth {depth}");
        assert!(sizes.lock().unwrap().iter().all(|n| (1..=4).contains(n)));
        assert_eq!(stats.n_items, 400);
    }
}

#[test]
fn pipelined_commits_are_acknowledged_in_the_order_they_were_taken() {
    // Goal: with two committers, a batch committed early is acknowledged only
    // after every batch taken before it. Method: the first batch's commit
    // waits (under a deadline) until the second batch's commit has returned;
    // the second batch's writer must then still find the first one committed
    // when its submit returns.
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    let wait_for = |flag: &AtomicBool, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !flag.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::yield_now();
        }
    };
    let calls = Arc::new(AtomicUsize::new(0));
    let first_started = Arc::new(AtomicBool::new(false));
    let second_done = Arc::new(AtomicBool::new(false));
    let first_done = Arc::new(AtomicBool::new(false));
    let commit = {
        let (calls, first_started, second_done, first_done) =
            (Arc::clone(&calls), Arc::clone(&first_started), Arc::clone(&second_done), Arc::clone(&first_done));
        move |_: &mut Vec<u32>| {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                first_started.store(true, Ordering::SeqCst);
                wait_for(&second_done, "the second batch was committed meanwhile");
                first_done.store(true, Ordering::SeqCst);
            } else {
                second_done.store(true, Ordering::SeqCst);
            }
            Ok(())
        }
    };
    let group = Arc::new(GroupCommit::start_pipelined(4, 2, commit));
    let first = std::thread::spawn({
        let group = Arc::clone(&group);
        move || group.submit(1)
    });
    wait_for(&first_started, "the first batch was taken");
    // Submitted on its own thread and awaited with a deadline: a broken
    // ordering may also leave it waiting for ever.
    let (sent, second) = std::sync::mpsc::channel();
    let second_writer = std::thread::spawn({
        let group = Arc::clone(&group);
        let first_done = Arc::clone(&first_done);
        move || sent.send(group.submit(2).map(|()| first_done.load(Ordering::SeqCst)))
    });
    let first_was_done = second.recv_timeout(Duration::from_secs(60)).expect("the second item is acknowledged");
    assert!(first_was_done.unwrap(), "acknowledged before the batch taken before it");
    first.join().unwrap().unwrap();
    // Its thread may still hold the committer for a moment after sending.
    second_writer.join().unwrap().unwrap();
    let group = Arc::try_unwrap(group).unwrap_or_else(|_| panic!("no submitter holds the committer"));
    assert_eq!(group.finish().unwrap().n_items, 2);
}

#[test]
fn a_striped_raw_log_keeps_every_acknowledged_record_in_its_stripe() {
    // Every record the writers were acknowledged for was written to one of the
    // stripes' prepared files: each file's records, read back from its start,
    // are intact and add up to the acknowledged records' bytes.
    use std::time::Duration;

    use crate::corpus::Corpus;
    use crate::durable::{self, Limits, RunSpec, System};

    let corpus = Corpus::build(&WorkloadConfig { n_sessions: 12, big_every: 0, ..WorkloadConfig::new(7, 8) }, 2)
        .expect("corpus");
    let dir = crate::scratch::temp_dir().expect("scratch dir");
    let spec = RunSpec { label: "striped".to_owned(), system: System::RawStriped { stripes: 3 }, writers: 4 };
    let limits = Limits { max_events: 60, max_time: Duration::from_secs(120) };
    let result = durable::run(&spec, &corpus, &limits, dir.path()).expect("run");
    assert_eq!(result.events, 60);
    let mut n_records = 0;
    let mut bytes = 0u64;
    for stripe in 0..3 {
        let file = std::fs::read(dir.path().join(format!("raw{stripe}.log"))).expect("stripe file");
        let mut at = 0;
        let mut in_stripe = 0;
        // Records until the zeroes that were prepared and never written.
        while let Some(len) = file.get(at..at + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize) {
            if len == 0 {
                break;
            }
            let record = &file[at + 4..at + 4 + len];
            let envelope = corpus.sessions.iter().flat_map(|s| &s.events).find(|e| &e.envelope[..] == record);
            assert!(envelope.is_some(), "stripe {stripe} holds a record of the corpus at {at}");
            at += 4 + len;
            bytes += 4 + len as u64;
            in_stripe += 1;
        }
        assert!(in_stripe > 0, "stripe {stripe} got no records");
        n_records += in_stripe;
    }
    assert_eq!(n_records, 60);
    assert_eq!(bytes, result.logical_bytes);
}

#[test]
fn the_verify_bound_is_what_the_cores_could_decompress_and_hash() {
    use crate::codec::{self, CodecReport, LevelRow};

    // 1 / (1/1000 + 1/3000) = 750 MiB/s a core; two cores: 1500 of 3000.
    let row = LevelRow { level: 1, stored_ratio: 0.4, compress_mib_s: 300.0, decompress_mib_s: 1000.0 };
    let report = CodecReport { canonical_mib: 1.0, blake3_mib_s: 3000.0, rows: vec![row] };
    assert!((report.bound(&row, 2) - 0.5).abs() < 1e-9);
    assert!((report.bound(&row, 1) - 0.25).abs() < 1e-9);

    // The best of two rounds takes each speed's best.
    let slower = CodecReport {
        blake3_mib_s: 2000.0,
        rows: vec![LevelRow { decompress_mib_s: 1200.0, ..row }],
        ..report.clone()
    };
    let best = codec::best_of(&[slower, report]).expect("two reports");
    assert_eq!(best.blake3_mib_s, 3000.0);
    assert_eq!(best.rows[0].decompress_mib_s, 1200.0);
}

#[test]
fn the_codec_probe_stores_at_the_stores_level_what_the_store_would() {
    use logbook_store::frame;

    use crate::codec;
    use crate::corpus::Corpus;

    let corpus = Corpus::build(&WorkloadConfig { n_sessions: 4, big_every: 5, ..WorkloadConfig::new(3, 12) }, 2)
        .expect("corpus");
    let report = codec::measure(&corpus, 1).expect("measure");
    assert_eq!(report.rows.len(), codec::LEVELS.len());
    let (mut canonical, mut stored) = (0usize, 0usize);
    for entry in corpus.sessions.iter().flat_map(|s| &s.entries) {
        let bytes = entry.to_canonical().unwrap();
        let mut out = Vec::new();
        frame::compress(&bytes, &mut out);
        canonical += bytes.len();
        stored += out.len();
    }
    let store_row = report.rows.iter().find(|row| row.level == frame::ZSTD_LEVEL).expect("the store's level");
    assert!((store_row.stored_ratio - stored as f64 / canonical as f64).abs() < 1e-9);
    assert!(report.rows.iter().all(|row| row.stored_ratio > 0.0 && row.stored_ratio <= 1.0));
}
