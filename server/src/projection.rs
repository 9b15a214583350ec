//! A session's state at any seq, from checkpoints and the log.
//!
//! [`state_at`] starts from the nearest saved checkpoint at or before the seq
//! (a [`SessionState`] folded up to it, zstd-compressed JSON under
//! `ResourceKind::Checkpoint`) and folds only the records after it, so the
//! cost of a state is proportional to the distance from that checkpoint
//! (at most [`CHECKPOINT_INTERVAL`] records) plus the size of the state, never
//! to the session's length. Checkpoints are made on the way: a fold that
//! crosses a multiple of the interval saves one. They are derived data: a
//! missing or unreadable checkpoint is skipped (and logged), never trusted
//! over the log.
//!
//! A fork shares its parent's records up to the fork point, so states within
//! that prefix are the parent's: their checkpoints are saved and found under
//! the ancestor that wrote the records, and a fork of a long session is as
//! cheap to project as its parent.

use logbook_core::{Seq, SessionId};
use logbook_replay::SessionState;
use logbook_store::{Direction, Fork, MAX_FORK_DEPTH, MAX_READ_RECORDS, Read, ResourceKind, Resources, SledStore};

use crate::api::error::ApiError;

/// Records between checkpoints. A state costs at most this many records'
/// folding; a checkpoint costs its state's size in storage.
pub const CHECKPOINT_INTERVAL: u64 = 1_024;
/// zstd level of checkpoints: fast, and JSON compresses well anyway.
const CHECKPOINT_ZSTD_LEVEL: i32 = 3;
/// Largest checkpoint accepted when reading one back (a corrupt length
/// cannot make the server allocate without bound).
pub const MAX_CHECKPOINT_BYTES: usize = 256 * 1024 * 1024;

/// The state of `session` after the record at `at` (which must exist).
pub fn state_at(store: &SledStore, session: SessionId, at: Seq) -> Result<SessionState, ApiError> {
    let mut state = nearest_checkpoint(store, session, at)?.unwrap_or_default();
    let target = at.get() + 1;
    while state.next_seq < target {
        let want = usize::try_from(target - state.next_seq).unwrap_or(MAX_READ_RECORDS).min(MAX_READ_RECORDS);
        let records = store.read(session, Seq::new(state.next_seq), want)?;
        if records.is_empty() {
            return Err(ApiError::invalid(format!(
                "at_seq: the session has no record {at} (it has {})",
                state.next_seq
            )));
        }
        for record in records {
            if record.seq().get() >= target {
                break;
            }
            let entry = record.entry().map_err(ApiError::internal)?;
            state.apply(&entry);
            if state.next_seq % CHECKPOINT_INTERVAL == 0 {
                save_checkpoint(store, owner(store, session, state.next_seq)?, &state);
            }
        }
    }
    Ok(state)
}

fn checkpoint_key(session: SessionId, next_seq: u64) -> Vec<u8> {
    let mut key = session.to_bytes().to_vec();
    key.extend_from_slice(&next_seq.to_be_bytes());
    key
}

/// The session whose log holds the records before `next_seq`: a fork's
/// inherited prefix belongs to the ancestor that wrote it.
fn owner(store: &SledStore, session: SessionId, next_seq: u64) -> Result<SessionId, ApiError> {
    let mut owner = session;
    for _ in 0..=MAX_FORK_DEPTH {
        match store.fork_origin(owner)? {
            Some(origin) if next_seq <= origin.at_seq.get() + 1 => owner = origin.parent,
            Some(_) | None => return Ok(owner),
        }
    }
    Ok(owner)
}

/// The checkpoint with the largest `next_seq` not beyond `at + 1`: the
/// session's own, else (within a fork's inherited prefix) its ancestors'.
fn nearest_checkpoint(store: &SledStore, session: SessionId, at: Seq) -> Result<Option<SessionState>, ApiError> {
    let (mut session, mut at) = (session, at);
    for _ in 0..=MAX_FORK_DEPTH {
        if let Some(state) = own_checkpoint(store, session, at)? {
            return Ok(Some(state));
        }
        match store.fork_origin(session)? {
            Some(origin) => (session, at) = (origin.parent, at.min(origin.at_seq)),
            None => return Ok(None),
        }
    }
    Ok(None)
}

/// The checkpoint saved under `session` with the largest `next_seq` not beyond `at + 1`.
fn own_checkpoint(store: &SledStore, session: SessionId, at: Seq) -> Result<Option<SessionState>, ApiError> {
    let prefix = session.to_bytes().to_vec();
    // Keys sort by seq; scanning backward from just after `at + 1` finds it first.
    let after = checkpoint_key(session, at.get().saturating_add(2));
    let pairs = store.scan_resources(ResourceKind::Checkpoint, &prefix, Some(&after), Direction::Backward, 4)?;
    for (key, value) in pairs {
        match decode(&value) {
            Ok(state) if checkpoint_key(session, state.next_seq) == key && state.next_seq <= at.get() + 1 => {
                return Ok(Some(state));
            }
            Ok(_) => tracing::warn!(%session, "a checkpoint does not match its key; skipped"),
            Err(err) if err.kind() == std::io::ErrorKind::InvalidData && err.to_string() == OLD_FORMAT => {
                // Made by an older projection: gone, so a new one can be saved.
                let _ = store.swap_resource(ResourceKind::Checkpoint, &key, Some(&value), None);
            }
            Err(err) => tracing::warn!(%session, error = %err, "an unreadable checkpoint; skipped"),
        }
    }
    Ok(None)
}

fn save_checkpoint(store: &SledStore, session: SessionId, state: &SessionState) {
    let key = checkpoint_key(session, state.next_seq);
    let result = encode(state).map_err(|e| e.to_string()).and_then(|bytes| {
        // A concurrent fold may have saved the same checkpoint: same bytes, fine.
        store.swap_resource(ResourceKind::Checkpoint, &key, None, Some(&bytes)).map(|_| ()).map_err(|e| e.to_string())
    });
    if let Err(err) = result {
        tracing::warn!(%session, error = %err, "cannot save a checkpoint");
    }
}

/// The first byte of every checkpoint: the form of the state it holds. Bump
/// it whenever the projection changes what a state means (not only its
/// fields): a checkpoint of another form is deleted when met and the state
/// folded again from the log, which is the truth.
/// 2: input held while a model request is open (`Context::held`).
/// 3: the machine pauses at a budget, and an interrupt stops the input its
/// turn was for.
/// 4: the context leaves out blank text blocks and a refused response with
/// the input that drew it (`Context::last_response`); the machine compacts
/// after a prompt refused as too long (`Machine::too_long`).
/// 5: the place of a refused response's drawing input also records how many
/// blocks it had (`ResponsePlace::input`), and a 413 counts as too long;
/// form-4 checkpoints written before those changes would decode wrongly or
/// not at all (and one that does not decode is never replaced).
/// 6: a text block's citations count in the token estimate, so a form-5
/// checkpoint's estimates differ from a fold of the same log.
/// 7: the context keeps the system messages and the open outcome a
/// compaction replaces (`Context::standing_blocks`), and the machine the
/// outcome being graded; a form-6 checkpoint has lost them.
const CHECKPOINT_FORMAT: u8 = 7;

fn encode(state: &SessionState) -> Result<Vec<u8>, std::io::Error> {
    let json = serde_json::to_vec(state).map_err(std::io::Error::other)?;
    let mut out = vec![CHECKPOINT_FORMAT];
    out.extend(zstd::bulk::compress(&json, CHECKPOINT_ZSTD_LEVEL)?);
    Ok(out)
}

const OLD_FORMAT: &str = "a checkpoint of another format";

/// Levels of a checkpoint's own structure above the event values it holds
/// (state → context → message → content → block …), with room to spare.
const CHECKPOINT_OWN_DEPTH: usize = 32;

fn decode(bytes: &[u8]) -> Result<SessionState, std::io::Error> {
    let Some((&CHECKPOINT_FORMAT, bytes)) = bytes.split_first() else {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, OLD_FORMAT));
    };
    let json = zstd::bulk::decompress(bytes, MAX_CHECKPOINT_BYTES)?;
    // The state holds event values as deep as the log stores them.
    logbook_core::json::from_slice_deep(&json, CHECKPOINT_OWN_DEPTH).map_err(std::io::Error::other)
}

/// Removes every checkpoint of `session` (when the session is deleted).
pub fn delete_checkpoints(store: &SledStore, session: SessionId) -> Result<(), ApiError> {
    let prefix = session.to_bytes().to_vec();
    loop {
        let pairs = store.scan_resources(ResourceKind::Checkpoint, &prefix, None, Direction::Forward, 256)?;
        if pairs.is_empty() {
            return Ok(());
        }
        for (key, value) in pairs {
            store.swap_resource(ResourceKind::Checkpoint, &key, Some(&value), None)?.ok();
        }
    }
}

#[cfg(test)]
#[path = "projection_tests.rs"]
mod tests;
