//! Tests of projections at a seq: a fork's inherited prefix is projected from,
//! and checkpointed under, the ancestor that wrote it.

use logbook_core::event::sample_events;
use logbook_core::{Entry, EventId, Timestamp};
use logbook_store::{Append, Fork, SledOptions};

use super::*;

fn store() -> (tempfile::TempDir, SledStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&dir.path().join("data"), &SledOptions { cache_capacity_bytes: 8 << 20 }).unwrap();
    (dir, store)
}

fn session(n: u128) -> SessionId {
    SessionId::from_parts(1_700_000_000_000, n)
}

/// `n` entries cycling through every event type.
fn entries(first_seq: u64, n: usize) -> Vec<Entry> {
    let samples = sample_events();
    (0..n)
        .map(|i| {
            let seq = first_seq + i as u64;
            Entry {
                id: EventId::for_seq(1_700_000_000_000, Seq::new(seq), 7),
                event: samples[seq as usize % samples.len()].clone(),
                at: Timestamp::from_unix_micros(1_700_000_000_000_000 + seq as i64),
            }
        })
        .collect()
}

fn checkpoints_of(store: &SledStore, session: SessionId) -> Vec<u64> {
    let pairs =
        store.scan_resources(ResourceKind::Checkpoint, &session.to_bytes(), None, Direction::Forward, 1000).unwrap();
    pairs.iter().map(|(key, _)| u64::from_be_bytes(key[16..24].try_into().unwrap())).collect()
}

#[test]
fn a_fork_projects_its_inherited_prefix_from_the_parents_checkpoints() {
    let (_dir, store) = store();
    let (parent, child) = (session(1), session(2));
    let n = 3 * CHECKPOINT_INTERVAL as usize;
    for (i, chunk) in entries(0, n).chunks(500).enumerate() {
        store.append(parent, Seq::new(i as u64 * 500), chunk).unwrap();
    }
    let at = Seq::new(2 * CHECKPOINT_INTERVAL + 100);
    store.fork(child, parent, at, &entries(at.get() + 1, 10)).unwrap();

    // Within the prefix the fork's state is the parent's, and folding the
    // fork saves its checkpoints under the parent, who wrote those records.
    let inside = Seq::new(2 * CHECKPOINT_INTERVAL + 50);
    assert_eq!(state_at(&store, child, inside).unwrap(), state_at(&store, parent, inside).unwrap());
    assert_eq!(checkpoints_of(&store, parent), vec![CHECKPOINT_INTERVAL, 2 * CHECKPOINT_INTERVAL]);
    assert!(checkpoints_of(&store, child).is_empty());
    // Past the fork point the fork's own records count, from the parent's checkpoint on.
    let past = Seq::new(at.get() + 10);
    let mut full = SessionState::new();
    for record in store.read(child, Seq::ZERO, 100_000).unwrap() {
        full.apply(&record.entry().unwrap());
    }
    assert_eq!(state_at(&store, child, past).unwrap(), full);
    assert!(nearest_checkpoint(&store, child, past).unwrap().is_some_and(|s| s.next_seq == 2 * CHECKPOINT_INTERVAL));
}

/// Stored JSON may now nest up to `MAX_JSON_DEPTH` (256), and a model's tool
/// input of 127 levels (what `model/stream.rs` accepts) inside
/// `x.model_response` now decodes. The context keeps that content, and a
/// checkpoint is the state as JSON read back with serde_json's default
/// recursion limit (128): the checkpoint of such a session never decodes, is
/// skipped as unreadable, and every state of the session is folded from the
/// last readable checkpoint (or seq 0), unbounded by `CHECKPOINT_INTERVAL`.
#[test]
fn a_checkpoint_of_a_state_holding_deep_but_storable_json_decodes() {
    use logbook_core::Json;
    use logbook_core::event::{Event, ModelResponse, ToolUseLink};
    let mut input = serde_json::Value::Null;
    for _ in 0..127 {
        input = serde_json::Value::Array(vec![input]);
    }
    let content = serde_json::json!([{"type": "tool_use", "id": "toolu_1", "name": "bash", "input": input}]);
    let entry = Entry {
        id: EventId::for_seq(1_700_000_000_000, Seq::ZERO, 7),
        at: Timestamp::from_unix_micros(1_700_000_000_000_000),
        event: Event::ModelResponse(ModelResponse {
            model_request_start_id: EventId::from_parts(1_700_000_000_000, 2),
            content: Json::new(&content),
            tool_uses: vec![ToolUseLink {
                provider_id: "toolu_1".to_owned(),
                event_id: EventId::from_parts(1_700_000_000_000, 3),
            }],
        }),
    };
    let record = logbook_core::Record::seal(session(9), Seq::ZERO, logbook_core::chain::GENESIS, &entry).unwrap();
    let mut state = SessionState::new();
    state.apply(&record.entry().expect("the record decodes"));
    let bytes = encode(&state).unwrap();
    let back = decode(&bytes);
    assert!(back.is_ok(), "the checkpoint does not decode: {:?}", back.err());
}

/// Goal: a checkpoint made by an older projection (another first byte) is
/// not used, and is replaced: the state is folded from the log and a
/// checkpoint of the current form is saved in its place.
#[test]
fn a_checkpoint_of_an_older_format_is_replaced_by_folding_the_log() {
    let (_dir, store) = store();
    let id = session(3);
    for (i, chunk) in entries(0, CHECKPOINT_INTERVAL as usize + 10).chunks(500).enumerate() {
        store.append(id, Seq::new(i as u64 * 500), chunk).unwrap();
    }
    let at = Seq::new(CHECKPOINT_INTERVAL + 5);
    let folded = state_at(&store, id, at).unwrap();
    let key = checkpoint_key(id, CHECKPOINT_INTERVAL);
    let current = store.get_resource(ResourceKind::Checkpoint, &key).unwrap().unwrap();
    assert_eq!(current[0], CHECKPOINT_FORMAT);
    // An older form: the same state under another format byte, claiming to
    // be a different one (a stale projection would mislead).
    let mut stale = SessionState::new();
    stale.next_seq = CHECKPOINT_INTERVAL;
    let mut old = encode(&stale).unwrap();
    old[0] = CHECKPOINT_FORMAT - 1;
    store.swap_resource(ResourceKind::Checkpoint, &key, Some(&current), Some(&old)).unwrap().unwrap();

    assert_eq!(state_at(&store, id, at).unwrap(), folded, "the stale checkpoint was used");
    let replaced = store.get_resource(ResourceKind::Checkpoint, &key).unwrap().unwrap();
    assert_eq!(replaced[0], CHECKPOINT_FORMAT, "the stale checkpoint was not replaced");
}
