//! Migration from storage version 1: a real version 1 data directory, written
//! by the version 1 code (`tests/fixtures/v1`, with the records' hashes and
//! the resources' digests it held in `tests/fixtures/v1.expected`), is opened.
//!
//! Goal: every record, blob and resource survives with the same hashes, the
//! version 1 leftovers are gone, the store works and reopens; a version 1
//! directory whose data lost acknowledged records is refused and left as it
//! was. Method: copy the fixture to a temp dir, open, compare with the expected
//! list, then damage a copy and check the refusal.

use std::path::Path;

use logbook_core::{ChainHash, Seq, SessionId, chain};
use logbook_store::engine::{Direction, Engine, Tree};
use logbook_store::{Append, Blobs, OpenError, Read, ResourceKind, Resources, SledEngine, SledStore};

use super::{entries, small_sled_options};

fn fixture_copy(into: &Path) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
    copy_dir(&from, into);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for item in std::fs::read_dir(from).unwrap() {
        let item = item.unwrap();
        let target = to.join(item.file_name());
        if item.file_type().unwrap().is_dir() {
            copy_dir(&item.path(), &target);
        } else {
            std::fs::copy(item.path(), target).unwrap();
        }
    }
}

/// `(session, seq, hash)` of every record.
type Records = Vec<(SessionId, Seq, ChainHash)>;
/// `(kind, key, digest)` of every resource.
type ResourceDigests = Vec<(String, String, String)>;

fn expected() -> (Records, ResourceDigests) {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1.expected")).unwrap();
    let (mut records, mut resources) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        match fields.as_slice() {
            ["record", session, seq, hash] => {
                records.push((session.parse().unwrap(), Seq::new(seq.parse().unwrap()), hash.parse().unwrap()));
            }
            ["resource", kind, key, digest] => resources.push((kind.to_string(), key.to_string(), digest.to_string())),
            other => panic!("unexpected line {other:?}"),
        }
    }
    (records, resources)
}

#[test]
fn a_version_1_directory_is_migrated_intact() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fixture_copy(&data);
    let (records, resources) = expected();
    assert_eq!(records.len(), 37);

    let store = SledStore::open(&data, &small_sled_options()).unwrap();
    assert!(store.quarantined().is_empty() && store.store_damage().is_empty());
    let mut sessions: Vec<SessionId> = records.iter().map(|r| r.0).collect();
    sessions.dedup();
    assert_eq!(store.sessions().unwrap(), sessions);
    for session in &sessions {
        let read = store.read(*session, Seq::ZERO, 1000).unwrap();
        let want: Vec<(Seq, ChainHash)> = records.iter().filter(|r| r.0 == *session).map(|r| (r.1, r.2)).collect();
        assert_eq!(read.iter().map(|r| (r.seq(), r.hash())).collect::<Vec<_>>(), want);
        for record in &read {
            record.entry().unwrap();
        }
    }
    for (kind, key, digest) in &resources {
        let kind = *ResourceKind::ALL.iter().find(|k| format!("{k:?}") == *kind).unwrap();
        let value = store.get_resource(kind, key.as_bytes()).unwrap().unwrap();
        assert_eq!(chain::digest(&value).to_hex(), *digest);
    }
    assert_eq!(store.get_resource(ResourceKind::Agent, b"ws1/agent_2").unwrap(), None, "removed in version 1");
    for blob in [b"a small blob".to_vec(), b"a blob that compresses well\n".repeat(100)] {
        assert_eq!(store.get_blob(chain::digest(&blob)).unwrap(), Some(blob));
    }
    let report = store.verify_all(&mut |_| {}).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.n_records, 37);
    // Version 1 is gone: the journal, its keys and its blob tree.
    assert!(!data.join("heads.journal").exists());
    let engine = store.engine();
    for prefix in [[0x01u8], [0x02], [0x03]] {
        let range = logbook_store::engine::prefix_range(&prefix);
        assert!(engine.range(Tree::Log, range, Direction::Forward, 1).unwrap().is_empty());
    }
    let all = (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded);
    assert!(engine.range(Tree::Blobs, all, Direction::Forward, 1).unwrap().is_empty());
    assert_eq!(engine.get(Tree::Meta, b"storage_version").unwrap(), Some(2u32.to_be_bytes().to_vec()));

    // It works as a version 2 store, and reopens.
    let first = sessions[0];
    let next = store.head(first).unwrap().next;
    let more = store.append(first, next, &entries(100..102)).unwrap();
    drop(store);
    let store = SledStore::open(&data, &small_sled_options()).unwrap();
    assert_eq!(store.read(first, next, 10).unwrap(), more);
    assert!(store.verify_all(&mut |_| {}).unwrap().is_intact());
}

/// A version 1 directory whose sled data lost records the head journal says
/// were acknowledged is refused, with nothing changed.
#[test]
fn a_damaged_version_1_directory_is_refused_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fixture_copy(&data);
    let (records, _) = expected();
    let (session, last, _) = *records.last().unwrap();
    {
        let engine = SledEngine::open(&data, &small_sled_options()).unwrap();
        let mut key = vec![0x01u8];
        key.extend_from_slice(&session.to_bytes());
        key.extend_from_slice(&last.get().to_be_bytes());
        engine.apply(Tree::Log, vec![(key, None)]).unwrap();
        engine.sync().unwrap();
    }
    match SledStore::open(&data, &small_sled_options()) {
        Err(OpenError::Migration { reason, .. }) => assert!(reason.contains(&session.to_string()), "{reason}"),
        other => panic!("expected a refused migration, got {other:?}"),
    }
    let engine = SledEngine::open(&data, &small_sled_options()).unwrap();
    assert_eq!(engine.get(Tree::Meta, b"storage_version").unwrap(), Some(1u32.to_be_bytes().to_vec()));
    assert!(data.join("heads.journal").exists());
}
