//! Tests of the work item's state machine, without a store: each transition,
//! leases lapsing, claims and reclaims, and the heartbeat's precondition.

use logbook_core::{EnvironmentId, SessionId, Timestamp, WorkId};
use pretty_assertions::assert_eq;

use super::*;

const T0: i64 = 1_777_636_800_000_000;

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_unix_micros(T0 + seconds * 1_000_000)
}

fn item() -> StoredWork {
    StoredWork::new(
        WorkId::from_parts(1, 1),
        EnvironmentId::from_parts(1, 2),
        WorkData::Session { id: SessionId::from_parts(1, 3) },
        at(0),
    )
}

#[test]
fn a_lease_runs_queued_starting_active_stopping_stopped() {
    let mut work = item();
    assert_eq!(work.state, WorkState::Queued);
    assert!(work.claimable(at(0), DEFAULT_RECLAIM_MS));
    let n = work.take(at(0), None);
    assert!(work.pending(at(1)) && !work.claimable(at(1), DEFAULT_RECLAIM_MS));
    work.ack(at(1), 10).unwrap();
    assert_eq!((work.state, work.acknowledged_at), (WorkState::Starting, Some(at(1))));
    assert_eq!(work.heartbeat(Some(NO_HEARTBEAT), Some(n), 10, at(2), 10), Ok(true));
    assert_eq!((work.state, work.started_at, work.latest_heartbeat_at), (WorkState::Active, Some(at(2)), Some(at(2))));
    let last = work.last_heartbeat().unwrap();
    assert_eq!(work.heartbeat(Some(&last), Some(n), 20, at(3), 10), Ok(true));
    assert_eq!(work.ttl_seconds(10), 20);
    work.stop(false, StopBy::Operator, at(4)).unwrap();
    assert_eq!((work.state, work.stop_requested_at), (WorkState::Stopping, Some(at(4))));
    // A stopping item is not compared and not extended: the worker shuts down.
    assert_eq!(work.heartbeat(Some("anything"), Some(n), 20, at(5), 10), Ok(false));
    work.stop(true, StopBy::Operator, at(6)).unwrap();
    assert_eq!((work.state, work.stopped_at), (WorkState::Stopped, Some(at(6))));
    assert_eq!(work.stop(true, StopBy::Operator, at(7)), Err(AlreadyStopped));
    assert_eq!(work.heartbeat(Some(NO_HEARTBEAT), None, 20, at(8), 10), Ok(false));
    assert!(!work.held_by(n), "a stopped item's token is dead");
}

#[test]
fn a_stale_or_foreign_heartbeat_is_refused_with_the_lease() {
    let mut work = item();
    // Never acked: there is no lease to extend.
    let refused = work.heartbeat(Some(NO_HEARTBEAT), None, 10, at(1), 30).unwrap_err();
    assert_eq!(refused, LeaseState { last_heartbeat: None, state: WorkState::Queued, ttl_seconds: 30 });
    let n = work.take(at(0), None);
    work.ack(at(1), 10).unwrap();
    assert!(work.heartbeat(Some(NO_HEARTBEAT), Some(n), 10, at(2), 10).is_ok());
    let first = work.last_heartbeat().unwrap();
    // A second worker claiming the lease with NO_HEARTBEAT loses.
    let refused = work.heartbeat(Some(NO_HEARTBEAT), None, 10, at(2), 10).unwrap_err();
    assert_eq!(refused.last_heartbeat.as_deref(), Some(first.as_str()));
    assert_eq!(refused.state, WorkState::Active);
    assert!(work.heartbeat(Some(&first), Some(n), 10, at(3), 10).is_ok());
    // Echoing the previous value again (a stale view) loses too.
    assert!(work.heartbeat(Some(&first), Some(n), 10, at(4), 10).is_err());
    // A token of another claim loses even with the right value.
    let current = work.last_heartbeat().unwrap();
    assert!(work.heartbeat(Some(&current), Some(n + 1), 10, at(4), 10).is_err());
}

#[test]
fn the_first_heartbeat_binds_the_lease_to_its_claim() {
    // Two polls claimed the item (the first was slow to ack); the ack cannot
    // tell whose it is, so both tokens live until a heartbeat binds one.
    let mut work = item();
    let slow = work.take(at(0), Some("aa".repeat(32)));
    let fast = work.take(at(6), Some("bb".repeat(32)));
    assert!(work.held_by(slow) && work.held_by(fast));
    work.ack(at(7), 10).unwrap();
    assert!(work.held_by(slow) && work.held_by(fast));
    assert!(work.heartbeat(Some(NO_HEARTBEAT), Some(slow), 10, at(8), 10).is_ok());
    assert!(work.held_by(slow) && !work.held_by(fast), "the other claim is retired");
    assert!(work.heartbeat(Some(NO_HEARTBEAT), Some(fast), 10, at(8), 10).is_err());
    let last = work.last_heartbeat().unwrap();
    assert!(work.heartbeat(Some(&last), Some(fast), 10, at(9), 10).is_err(), "even with the right value");
    // Many re-claims of an item nobody acks keep a bounded number of tokens.
    let mut work = item();
    for n in 0..(MAX_OPEN_CLAIMS as i64 + 5) {
        work.take(at(n * 6), None);
    }
    assert_eq!(work.claims.len(), MAX_OPEN_CLAIMS);
    assert!(!work.held_by(1) && work.held_by(work.n_claims));
}

#[test]
fn heartbeats_in_the_same_instant_still_change_the_value() {
    let mut work = item();
    work.ack(at(1), 10).unwrap();
    work.heartbeat(Some(NO_HEARTBEAT), None, 10, at(2), 10).unwrap();
    let first = work.last_heartbeat().unwrap();
    work.heartbeat(Some(&first), None, 10, at(2), 10).unwrap();
    let second = work.last_heartbeat().unwrap();
    assert_ne!(first, second);
    assert!(work.heartbeat(Some(&first), None, 10, at(2), 10).is_err());
}

#[test]
fn a_lapsed_lease_requeues_the_item_and_ends_its_claim() {
    let mut work = item();
    let n = work.take(at(0), Some("ab".repeat(32)));
    work.ack(at(1), 10).unwrap();
    work.heartbeat(Some(NO_HEARTBEAT), Some(n), 10, at(2), 10).unwrap();
    assert!(!work.settle(at(11)), "the lease runs to 12 s");
    assert!(work.settle(at(12)));
    assert_eq!(work.state, WorkState::Queued);
    assert_eq!(
        (work.queued_at, work.acknowledged_at, work.started_at, work.claims.clone()),
        (at(12), None, None, vec![])
    );
    assert!(!work.held_by(n));
    assert!(work.claimable(at(12), DEFAULT_RECLAIM_MS));
    let again = work.take(at(13), None);
    assert_eq!(again, n + 1, "claims are numbered");
    // A stopping item whose worker never confirms ends stopped.
    let mut work = item();
    work.ack(at(1), 10).unwrap();
    work.stop(false, StopBy::Operator, at(2)).unwrap();
    assert!(work.settle(at(11)));
    assert_eq!((work.state, work.stopped_at), (WorkState::Stopped, Some(at(11))));
}

#[test]
fn an_unacked_claim_is_offered_again_after_the_reclaim_window() {
    let mut work = item();
    work.take(at(0), None);
    assert!(!work.claimable(at(4), DEFAULT_RECLAIM_MS));
    assert!(work.claimable(at(5), DEFAULT_RECLAIM_MS));
    assert!(work.claimable(at(1), 1000), "the poll may ask for a shorter window");
    assert!(work.claimable(at(0), 0));
    work.ack(at(1), 10).unwrap();
    assert!(!work.claimable(at(100), 0), "an acked item is not in the queue");
    assert_eq!(work.ack(at(2), 10), Err(WorkState::Starting));
}

#[test]
fn stopping_a_queued_item_stops_it_at_once() {
    let mut work = item();
    work.stop(false, StopBy::Operator, at(1)).unwrap();
    assert_eq!((work.state, work.stop_requested_at, work.stopped_at), (WorkState::Stopped, Some(at(1)), Some(at(1))));
    assert_eq!(work.ack(at(2), 10), Err(WorkState::Stopped));
}

#[test]
fn the_wire_object_has_every_field_and_a_secret_only_when_given() {
    let work = item();
    let wire = work.to_wire(None);
    let mut keys: Vec<&str> = wire.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "acknowledged_at",
            "created_at",
            "data",
            "environment_id",
            "id",
            "latest_heartbeat_at",
            "metadata",
            "secret",
            "started_at",
            "state",
            "stop_requested_at",
            "stopped_at",
            "type"
        ]
    );
    assert_eq!(wire["secret"], Value::Null);
    assert_eq!(wire["data"], json!({"type": "session", "id": SessionId::from_parts(1, 3)}));
    assert_eq!(work.to_wire(Some("s"))["secret"], "s");
    let check =
        StoredWork::new(WorkId::from_parts(1, 9), EnvironmentId::from_parts(1, 2), WorkData::Healthcheck {}, at(0));
    assert_eq!(check.to_wire(None)["data"], json!({"type": "healthcheck", "id": WorkId::from_parts(1, 9)}));
}

#[test]
fn only_a_lease_that_ends_sooner_moves_its_lapse_check() {
    // Goal: a lease marker moves only when it must: acking sets the look at
    // the lease's expiry, a heartbeat that extends the lease leaves it (so
    // heartbeats write no marker), one that shortens it brings it forward, and
    // the lease's end clears it. Method: the item's transitions, one by one.
    let mut work = item();
    let n = work.take(at(0), None);
    work.ack(at(1), 10).unwrap();
    assert_eq!(work.lapse_check_at, Some(at(11)));
    assert_eq!(work.heartbeat(Some(NO_HEARTBEAT), Some(n), 30, at(2), 10), Ok(true));
    assert_eq!(work.lapse_check_at, Some(at(11)), "extended: the look stays");
    let last = work.last_heartbeat().unwrap();
    assert_eq!(work.heartbeat(Some(&last), Some(n), 2, at(3), 10), Ok(true));
    assert_eq!(work.lapse_check_at, Some(at(5)), "shortened: the look comes forward");
    assert!(work.settle(at(5)));
    assert_eq!((work.state, work.lapse_check_at), (WorkState::Queued, None));
}

#[test]
fn only_a_workers_unasked_stop_is_remembered_as_its_own() {
    // Goal: a stop made with a worker's credential that nobody asked for
    // marks the item `stopped_by_worker` (the runner then queues nothing for
    // the calls it failed); the worker's confirmation of a requested stop,
    // and an operator's stop, do not. Method: three items, three stops.
    let mut failed = item();
    failed.ack(at(1), 10).unwrap();
    failed.stop(true, StopBy::Worker, at(2)).unwrap();
    assert!(failed.stopped_by_worker);
    let mut confirmed = item();
    confirmed.ack(at(1), 10).unwrap();
    confirmed.stop(false, StopBy::Operator, at(2)).unwrap();
    confirmed.stop(true, StopBy::Worker, at(3)).unwrap();
    assert_eq!((confirmed.state, confirmed.stopped_by_worker), (WorkState::Stopped, false));
    let mut forced = item();
    forced.ack(at(1), 10).unwrap();
    forced.stop(true, StopBy::Operator, at(2)).unwrap();
    assert!(!forced.stopped_by_worker);
}
