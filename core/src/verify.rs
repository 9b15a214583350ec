//! Chain verification that reports every break instead of stopping at the first.
//!
//! A [`Verifier`] takes a session's records in order (or the reason a stored
//! record could not be read) and checks each link: seq continuity, `prev` equal
//! to the previous stored hash, stored hash equal to the computed one, and
//! optionally that the entry decodes. After a break it re-anchors on what is
//! stored, so independent damage is reported where it is: a flipped bit in
//! record n gives its first break at n (a flip in n's stored hash also breaks
//! the link to n+1, reported at n+1). The result is a [`Report`],
//! a value, never a panic.

use serde::Serialize;

use crate::chain::{self, ChainHash, Digest};
use crate::id::SessionId;
use crate::record::{Body, Record, Seq};

/// Where verification starts: the seq of the first record and the hash before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    pub next_seq: Seq,
    pub prev: ChainHash,
}

impl Anchor {
    /// The start of every session that is not a fork.
    pub const GENESIS: Anchor = Anchor { next_seq: Seq::ZERO, prev: chain::GENESIS };
}

/// A stored record that could not even be decoded as a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// The seq the record's key gives.
    pub seq: Seq,
    pub reason: String,
}

/// One broken link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Break {
    pub seq: Seq,
    pub kind: BreakKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BreakKind {
    /// The stored bytes are not a record.
    Unreadable { reason: String },
    /// A record is missing or out of place.
    SeqGap { expected: Seq, found: Seq },
    /// `prev` is not the previous record's hash.
    PrevMismatch { expected: ChainHash, found: ChainHash },
    /// The stored hash does not match the record's contents.
    HashMismatch { stored: ChainHash, computed: ChainHash },
    /// The hash matches but the canonical bytes do not decode as an entry.
    EntryUndecodable { reason: String },
}

/// The outcome of verifying one chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Records looked at.
    pub n_records: u64,
    /// Records from the start before the first break: the valid prefix.
    pub n_intact: u64,
    /// Redacted records among them (verified through their digest).
    pub n_redacted: u64,
    /// The last record's seq and stored hash, if any record was read.
    pub head: Option<(Seq, ChainHash)>,
    pub breaks: Vec<Break>,
}

impl Report {
    pub fn is_intact(&self) -> bool {
        self.breaks.is_empty()
    }

    /// The first break, if any.
    pub fn first_break(&self) -> Option<&Break> {
        self.breaks.first()
    }
}

/// Whether to decode each entry as well as checking its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Hash links only: the integrity of the bytes.
    Links,
    /// Links, and every canonical body decodes as an entry.
    Entries,
}

/// Records from which [`Verifier::push_all`] spreads its work over threads.
pub const PARALLEL_VERIFY_MIN: usize = 512;
/// Most threads [`Verifier::push_all`] uses.
pub const MAX_VERIFY_THREADS: usize = 4;

/// The per-record part of verifying, independent of the chain around the
/// record, so it can run on any thread: the record's place in its chain (seq,
/// stored `prev` and hash), its computed hash and, at [`Depth::Entries`], why
/// its body does not decode as an entry. It holds no body, so a caller
/// reading many records can drop each one's bytes as soon as it is prechecked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prechecked {
    seq: Seq,
    prev: ChainHash,
    stored: ChainHash,
    redacted: bool,
    computed: ChainHash,
    undecodable: Option<String>,
}

/// A stored record's body as [`Prechecked::of_parts`] reads it.
#[derive(Debug, Clone, Copy)]
pub enum BodyRef<'a> {
    Canonical(&'a [u8]),
    Redacted { digest: Digest },
}

impl Prechecked {
    pub fn of(record: &Record, depth: Depth) -> Prechecked {
        let body = match record.body() {
            Body::Canonical(bytes) => BodyRef::Canonical(bytes),
            Body::Redacted { digest } => BodyRef::Redacted { digest: *digest },
        };
        Prechecked::of_parts(record.seq(), record.prev(), record.hash(), body, depth)
    }

    /// The same as [`Prechecked::of`] on the record with these parts, for a
    /// caller that has them without a [`Record`] (a body decompressed into a
    /// reused buffer).
    pub fn of_parts(seq: Seq, prev: ChainHash, stored: ChainHash, body: BodyRef<'_>, depth: Depth) -> Prechecked {
        let digest = match body {
            BodyRef::Canonical(bytes) => chain::digest(bytes),
            BodyRef::Redacted { digest } => digest,
        };
        let computed = chain::link(prev, seq, digest);
        let undecodable = match body {
            BodyRef::Canonical(bytes) if depth == Depth::Entries && computed == stored => {
                crate::entry::Entry::from_canonical(bytes).err().map(|err| err.to_string())
            }
            BodyRef::Canonical(_) | BodyRef::Redacted { .. } => None,
        };
        Prechecked { seq, prev, stored, redacted: matches!(body, BodyRef::Redacted { .. }), computed, undecodable }
    }

    /// The record's stored hash: what the next record's `prev` must be.
    pub fn stored_hash(&self) -> ChainHash {
        self.stored
    }
}

/// `work` over `items` in order, spread over up to [`MAX_VERIFY_THREADS`]
/// threads when there are at least [`PARALLEL_VERIFY_MIN`] items. Items a
/// helper thread lost by panicking are done again on the calling thread; a
/// panic on the calling thread propagates.
pub fn map_parallel<T: Sync, R: Send>(items: &[T], work: impl Fn(&T) -> R + Sync) -> Vec<R> {
    map_parallel_with(items, || (), |(), item| work(item))
}

/// Items a thread of [`map_parallel_with`] takes at a time: small enough that
/// threads finish together when items differ in cost (a 500 KiB tool output
/// among 1 KiB messages), large enough that taking them costs nothing.
const PARALLEL_CLAIM: usize = 32;

/// [`map_parallel`] with a value each thread makes once (`init`) and lends
/// to its `work` on every item: a reused buffer, say. The calling thread
/// works too; every thread claims [`PARALLEL_CLAIM`] items at a time until
/// none are left.
pub fn map_parallel_with<T: Sync, S, R: Send>(
    items: &[T],
    init: impl Fn() -> S + Sync,
    work: impl Fn(&mut S, &T) -> R + Sync,
) -> Vec<R> {
    let n_threads = std::thread::available_parallelism().map_or(1, usize::from).clamp(1, MAX_VERIFY_THREADS);
    if items.len() < PARALLEL_VERIFY_MIN || n_threads == 1 {
        let mut state = init();
        return items.iter().map(|item| work(&mut state, item)).collect();
    }
    let claims: Vec<&[T]> = items.chunks(PARALLEL_CLAIM).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    // Each thread's results: (claim number, the claim's results).
    let take_claims = || {
        let mut state = init();
        let mut done = Vec::new();
        loop {
            let claim_no = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(claim) = claims.get(claim_no) else { break };
            done.push((claim_no, claim.iter().map(|item| work(&mut state, item)).collect::<Vec<_>>()));
        }
        done
    };
    let take_claims = &take_claims;
    let mut by_claim: Vec<Option<Vec<R>>> = claims.iter().map(|_| None).collect();
    std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..n_threads).map(|_| scope.spawn(take_claims)).collect();
        let own = take_claims();
        // A helper that panicked loses its claims; they are done again below.
        for (claim_no, results) in own.into_iter().chain(helpers.into_iter().flat_map(|h| h.join().unwrap_or_default()))
        {
            by_claim[claim_no] = Some(results);
        }
    });
    let mut redo_state = None;
    by_claim
        .into_iter()
        .zip(&claims)
        .flat_map(|(results, claim)| {
            results.unwrap_or_else(|| {
                let state = redo_state.get_or_insert_with(&init);
                claim.iter().map(|item| work(state, item)).collect()
            })
        })
        .collect()
}

/// An incremental verifier over one session's records in seq order.
#[derive(Debug)]
pub struct Verifier {
    depth: Depth,
    expected: Anchor,
    /// The anchor before the last record that jumped ahead: if the record
    /// after the jump continues from here instead, the jump was a stray and
    /// the chain goes on from this anchor.
    before_jump: Option<Anchor>,
    report: Report,
}

impl Verifier {
    pub fn new(anchor: Anchor, depth: Depth) -> Verifier {
        Verifier {
            depth,
            expected: anchor,
            before_jump: None,
            report: Report { n_records: 0, n_intact: 0, n_redacted: 0, head: None, breaks: Vec::new() },
        }
    }

    /// Checks the next record.
    pub fn push(&mut self, item: Result<&Record, &Unreadable>) {
        let n_breaks_before = self.report.breaks.len();
        self.report.n_records += 1;
        match item {
            Err(unreadable) => {
                self.before_jump = None;
                let expected = self.expected.next_seq;
                // At the last seq a session may hold the anchor cannot move
                // past the record it just took: nothing is missing before
                // what follows it.
                let saturated = self.report.head.is_some_and(|(head, _)| head == expected);
                if unreadable.seq != expected && !saturated {
                    self.note(expected, BreakKind::SeqGap { expected, found: unreadable.seq });
                }
                let reason = unreadable.reason.clone();
                if unreadable.seq < expected {
                    // Out of place, like a stray record in `check_with`: the
                    // chain stays anchored on the last record in place.
                    self.note(expected, BreakKind::Unreadable { reason });
                } else {
                    self.note(unreadable.seq, BreakKind::Unreadable { reason });
                    // Nothing stored can be trusted to re-anchor on: the next record's
                    // `prev` is accepted as long as its seq follows.
                    self.expected = Anchor { next_seq: next_or_same(unreadable.seq), prev: UNKNOWN_PREV };
                }
            }
            Ok(record) => self.check(record),
        }
        if self.report.breaks.len() == n_breaks_before && self.report.n_intact + 1 == self.report.n_records {
            self.report.n_intact += 1;
        }
    }

    /// Checks the next records, in order: the same as [`Self::push`] on
    /// each, with the per-record work (hashing the body, decoding the entry)
    /// spread over up to [`MAX_VERIFY_THREADS`] threads for long runs.
    pub fn push_all(&mut self, records: &[Record]) {
        let depth = self.depth;
        for pre in map_parallel(records, |record| Prechecked::of(record, depth)) {
            self.push_prechecked(pre);
        }
    }

    /// Checks the next record given its [`Prechecked`] work, done at this
    /// verifier's depth (on any thread): the same as [`Self::push`].
    pub fn push_prechecked(&mut self, pre: Prechecked) {
        let n_breaks_before = self.report.breaks.len();
        self.report.n_records += 1;
        self.check_with(pre);
        if self.report.breaks.len() == n_breaks_before && self.report.n_intact + 1 == self.report.n_records {
            self.report.n_intact += 1;
        }
    }

    pub fn finish(self) -> Report {
        self.report
    }

    fn check(&mut self, record: &Record) {
        self.check_with(Prechecked::of(record, self.depth));
    }

    /// The checks of one record, given its [`Prechecked`] work.
    fn check_with(&mut self, pre: Prechecked) {
        let Prechecked { seq, prev, stored, redacted, computed, undecodable } = pre;
        if let Some(before) = self.before_jump.take()
            && seq != self.expected.next_seq
            && seq == before.next_seq
            && (before.prev == UNKNOWN_PREV || prev == before.prev)
        {
            // The record that jumped ahead was a stray (its break is noted):
            // this one continues the chain from before it.
            self.expected = before;
        }
        let expected = self.expected.next_seq;
        if seq < expected {
            // A record out of place (a stray copy, or one from the past): the
            // break is reported where it stands, and the chain stays anchored
            // on the last record in place, so the records around it that are
            // intact are not blamed.
            self.note(expected, BreakKind::SeqGap { expected, found: seq });
            return;
        }
        if seq > expected {
            // Reported at the first seq that is missing.
            self.note(expected, BreakKind::SeqGap { expected, found: seq });
            self.before_jump = Some(self.expected);
        } else if self.expected.prev != UNKNOWN_PREV && prev != self.expected.prev {
            self.note(seq, BreakKind::PrevMismatch { expected: self.expected.prev, found: prev });
        }
        if computed != stored {
            self.note(seq, BreakKind::HashMismatch { stored, computed });
        }
        if redacted {
            self.report.n_redacted += 1;
        }
        if let Some(reason) = undecodable {
            self.note(seq, BreakKind::EntryUndecodable { reason });
        }
        self.report.head = Some((seq, stored));
        self.expected = Anchor { next_seq: next_or_same(seq), prev: stored };
    }

    fn note(&mut self, seq: Seq, kind: BreakKind) {
        self.report.breaks.push(Break { seq, kind });
    }
}

/// Decodes a stored envelope found under the key `(session, seq)`. A record that
/// does not decode, or whose own session or seq differ from its key's, is
/// [`Unreadable`] at the key's seq.
pub fn read_stored(session: SessionId, seq: Seq, envelope: &[u8]) -> Result<Record, Unreadable> {
    let record = Record::from_envelope(envelope).map_err(|err| Unreadable { seq, reason: err.to_string() })?;
    if record.session() != session || record.seq() != seq {
        return Err(Unreadable {
            seq,
            reason: format!("record claims {}#{} but is stored under {session}#{seq}", record.session(), record.seq()),
        });
    }
    Ok(record)
}

/// Verifies `records` from `anchor`, checking links only.
pub fn verify_chain<'a>(
    anchor: Anchor,
    records: impl IntoIterator<Item = Result<&'a Record, &'a Unreadable>>,
) -> Report {
    let mut verifier = Verifier::new(anchor, Depth::Links);
    for item in records {
        verifier.push(item);
    }
    verifier.finish()
}

// A `prev` no real link produces with non-negligible probability; it marks "accept
// any prev" after an unreadable record. All-ones is not GENESIS and not a blake3
// output anyone can aim for.
const UNKNOWN_PREV: ChainHash = ChainHash::from_bytes([0xff; 32]);

fn next_or_same(seq: Seq) -> Seq {
    seq.next().unwrap_or(seq)
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
