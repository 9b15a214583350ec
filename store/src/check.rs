//! Whole-store verification (`logbook verify`).
//!
//! One pass over every stored record in key order, that is session by session
//! and seq by seq, feeding each session's records to a [`Verifier`] at
//! [`Depth::Entries`] and comparing where each chain ends with its stored head.
//! Unlike reads, which stop at the first damage, this reports every break, and
//! it also finds records that no head accounts for. Blobs are re-hashed.

use std::collections::BTreeMap;
use std::ops::Bound;

use logbook_core::verify::{Anchor, Break, BreakKind, Depth, Report, Verifier, read_stored};
use logbook_core::{ChainHash, Seq, SessionId, chain};
use serde::Serialize;

use crate::engine::{Direction, Engine, Tree, prefix_range};
use crate::error::Error;
use crate::frame;
use crate::keys;
use crate::log::LogStore;

/// Records read per engine scan.
const SCAN_PAGE: usize = 4096;

/// Where a long verification is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyProgress {
    pub n_records: u64,
    pub n_sessions: u64,
    pub n_blobs: u64,
}

/// The outcome of verifying a whole store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreReport {
    pub sessions: Vec<SessionReport>,
    pub n_records: u64,
    pub n_blobs: u64,
    pub blob_errors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionReport {
    pub session: SessionId,
    pub report: Report,
}

impl StoreReport {
    pub fn is_intact(&self) -> bool {
        self.blob_errors.is_empty() && self.sessions.iter().all(|s| s.report.is_intact())
    }

    /// Sessions with at least one break.
    pub fn damaged(&self) -> impl Iterator<Item = &SessionReport> {
        self.sessions.iter().filter(|s| !s.report.is_intact())
    }
}

impl<E: Engine> LogStore<E> {
    /// Verifies every chain, every head and every blob. `progress` is called
    /// after each page of records or blobs.
    pub fn verify_all(&self, progress: &mut dyn FnMut(VerifyProgress)) -> Result<StoreReport, Error> {
        let engine = &self.inner.engine;
        let heads = load_heads(engine)?;
        let mut sessions = Vec::new();
        let mut current: Option<(SessionId, Verifier)> = None;
        let mut done = VerifyProgress { n_records: 0, n_sessions: 0, n_blobs: 0 };
        let event_kind = [keys::LogKeyKind::Event as u8];
        let (mut start, end) = prefix_range(&event_kind);
        loop {
            let page = engine.range(Tree::Log, (start.clone(), end.clone()), Direction::Forward, SCAN_PAGE)?;
            let Some((last_key, _)) = page.last() else { break };
            start = Bound::Excluded(last_key.clone());
            for (key, value) in &page {
                let Some((session, seq)) = keys::parse_event_key(key) else { continue };
                if current.as_ref().map(|(s, _)| *s) != Some(session) {
                    if let Some((done_session, verifier)) = current.take() {
                        sessions.push(finish(done_session, verifier, heads.get(&done_session)));
                        done.n_sessions += 1;
                    }
                    current = Some((session, Verifier::new(Anchor::GENESIS, Depth::Entries)));
                }
                if let Some((_, verifier)) = current.as_mut() {
                    let stored = frame::decode(value)
                        .map_err(|err| logbook_core::verify::Unreadable { seq, reason: err.to_string() })
                        .and_then(|envelope| read_stored(session, seq, &envelope));
                    match &stored {
                        Ok(record) => verifier.push(Ok(record)),
                        Err(unreadable) => verifier.push(Err(unreadable)),
                    }
                }
                done.n_records += 1;
            }
            progress(done);
        }
        if let Some((session, verifier)) = current.take() {
            sessions.push(finish(session, verifier, heads.get(&session)));
            done.n_sessions += 1;
        }
        // Heads whose sessions have no records at all.
        for (session, head) in &heads {
            if sessions.iter().all(|s| s.session != *session) {
                let mut report = Verifier::new(Anchor::GENESIS, Depth::Entries).finish();
                report.breaks.push(Break {
                    seq: Seq::ZERO,
                    kind: BreakKind::Unreadable { reason: format!("head records {:?} but no record is stored", head) },
                });
                sessions.push(SessionReport { session: *session, report });
            }
        }
        sessions.sort_by_key(|s| s.session);

        let mut blob_errors = Vec::new();
        let (mut start, end) = (Bound::Unbounded, Bound::Unbounded);
        loop {
            let page = engine.range(Tree::Blobs, (start.clone(), end.clone()), Direction::Forward, 256)?;
            let Some((last_key, _)) = page.last() else { break };
            start = Bound::Excluded(last_key.clone());
            for (key, value) in &page {
                done.n_blobs += 1;
                let ok =
                    frame::decode(value).map(|bytes| chain::digest(&bytes).as_bytes().as_slice() == key.as_slice());
                match ok {
                    Ok(true) => {}
                    Ok(false) => blob_errors.push(format!("blob {key:02x?}: contents do not match its hash")),
                    Err(err) => blob_errors.push(format!("blob {key:02x?}: {err}")),
                }
            }
            progress(done);
        }
        Ok(StoreReport { sessions, n_records: done.n_records, n_blobs: done.n_blobs, blob_errors })
    }
}

fn load_heads(engine: &dyn Engine) -> Result<BTreeMap<SessionId, Option<(Seq, ChainHash)>>, Error> {
    let mut heads = BTreeMap::new();
    let (mut start, end) = prefix_range(&[keys::LogKeyKind::Head as u8]);
    loop {
        let page = engine.range(Tree::Log, (start.clone(), end.clone()), Direction::Forward, SCAN_PAGE)?;
        let Some((last_key, _)) = page.last() else { break };
        start = Bound::Excluded(last_key.clone());
        for (key, value) in page {
            if let Some(session) = keys::parse_head_key(&key) {
                heads.insert(session, keys::parse_head_value(&value));
            }
        }
    }
    Ok(heads)
}

fn finish(session: SessionId, verifier: Verifier, head: Option<&Option<(Seq, ChainHash)>>) -> SessionReport {
    let mut report = verifier.finish();
    let chain_end = report.head.map(|(seq, hash)| (Seq::new(seq.get() + 1), hash));
    let problem = match head {
        None => Some("records are stored but the session has no head".to_owned()),
        Some(None) => Some("the head record is malformed".to_owned()),
        Some(Some(head)) if Some(*head) != chain_end => {
            Some(format!("head says {} records ending in {}, the chain ends at {:?}", head.0, head.1, chain_end))
        }
        Some(Some(_)) => None,
    };
    if let Some(reason) = problem {
        let seq = chain_end.map_or(Seq::ZERO, |(next, _)| next);
        report.breaks.push(Break { seq, kind: BreakKind::Unreadable { reason } });
    }
    SessionReport { session, report }
}
