//! Signed heads: a session's head (`seq`, chain hash) signed with the server's
//! ed25519 key, so that a client holding one can later prove that the log it is
//! shown extends the one it saw. A plain hash chain only detects accidents:
//! whoever can write the store can recompute every link. A signed head anchors
//! the chain outside the store (reliability-goals §0.6).
//!
//! Signing needs the private key and so lives in the server; this module holds
//! what both sides agree on: the exact bytes signed ([`signing_message`]), the
//! [`SignedHead`] object and its check ([`SignedHead::check`]), and the
//! consistency check of an earlier head against a later log
//! ([`consistency`]). All of it is pure.

use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use logbook_core::chain::ChainHash;
use logbook_core::{Record, Seq, SessionId, Timestamp};
use serde::{Deserialize, Serialize};

/// Domain separation for the signed bytes; a new layout gets a new string.
pub const SIGNED_HEAD_CONTEXT: &[u8] = b"logbook signed head v1\0";

/// The only algorithm (the JSON names it, so that another can be added).
pub const ALGORITHM: &str = "ed25519";

/// A session head with the server's signature over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedHead {
    #[serde(rename = "type")]
    pub kind: SignedHeadType,
    pub session_id: SessionId,
    /// Records in the log (the head's seq is `n_records - 1`).
    pub n_records: u64,
    /// The last record's seq; `None` for an empty log.
    pub seq: Option<Seq>,
    /// The last record's chain hash; the chain's start for an empty log.
    pub hash: ChainHash,
    pub signed_at: Timestamp,
    pub algorithm: String,
    /// The verifying key, 64 lowercase hex digits.
    pub public_key: String,
    /// The signature over [`signing_message`], 128 lowercase hex digits.
    pub signature: String,
}

/// The `type` tag of a [`SignedHead`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignedHeadType {
    #[serde(rename = "signed_head")]
    SignedHead,
}

/// Why a signed head does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("unsupported signature algorithm {0:?}; only ed25519 is known")]
    Algorithm(String),
    #[error("the public key is not 32 bytes of lowercase hex")]
    PublicKey,
    #[error("the head is signed by key {found}, not by the expected key {expected}")]
    WrongKey { expected: String, found: String },
    #[error("the signature is not 64 bytes of lowercase hex")]
    SignatureFormat,
    #[error("the signature does not match the head")]
    BadSignature,
    #[error("the head's seq and record count disagree")]
    Shape,
}

/// The bytes a head's signature covers: the context string, the session id
/// text, a NUL, then `n_records`, the hash and `signed_at` (microseconds), the
/// integers little-endian.
pub fn signing_message(session: SessionId, n_records: u64, hash: ChainHash, signed_at: Timestamp) -> Vec<u8> {
    let id = session.to_string();
    let mut message = Vec::with_capacity(SIGNED_HEAD_CONTEXT.len() + id.len() + 1 + 8 + 32 + 8);
    message.extend_from_slice(SIGNED_HEAD_CONTEXT);
    message.extend_from_slice(id.as_bytes());
    message.push(0);
    message.extend_from_slice(&n_records.to_le_bytes());
    message.extend_from_slice(hash.as_bytes());
    message.extend_from_slice(&signed_at.unix_micros().to_le_bytes());
    message
}

impl SignedHead {
    /// The head of a log of `n_records` whose last hash is `hash` (or the
    /// genesis for an empty log), before signing.
    pub fn message(&self) -> Vec<u8> {
        signing_message(self.session_id, self.n_records, self.hash, self.signed_at)
    }

    /// Checks the shape and the signature; with `expected_key`, also that the
    /// head was signed by that key (without it, the head only proves it was
    /// signed by the key it names).
    pub fn check(&self, expected_key: Option<&[u8; 32]>) -> Result<(), HeadError> {
        if self.algorithm != ALGORITHM {
            return Err(HeadError::Algorithm(self.algorithm.clone()));
        }
        let consistent = match self.seq {
            None => self.n_records == 0,
            Some(seq) => seq.get().checked_add(1) == Some(self.n_records),
        };
        if !consistent {
            return Err(HeadError::Shape);
        }
        let key_bytes: [u8; 32] = parse_hex(&self.public_key).ok_or(HeadError::PublicKey)?;
        if let Some(expected) = expected_key
            && *expected != key_bytes
        {
            return Err(HeadError::WrongKey { expected: to_hex(expected), found: self.public_key.clone() });
        }
        check_signature(&self.public_key, &self.signature, &self.message())
    }
}

/// Checks an ed25519 `signature` (hex) over `message` by `public_key` (hex).
pub fn check_signature(public_key: &str, signature: &str, message: &[u8]) -> Result<(), HeadError> {
    let key_bytes: [u8; 32] = parse_hex(public_key).ok_or(HeadError::PublicKey)?;
    let key = VerifyingKey::from_bytes(&key_bytes).map_err(|_| HeadError::PublicKey)?;
    let signature: [u8; 64] = parse_hex(signature).ok_or(HeadError::SignatureFormat)?;
    key.verify(message, &Signature::from_bytes(&signature)).map_err(|_| HeadError::BadSignature)
}

/// Whether a log still contains the history an earlier head committed to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Consistency {
    /// The record at the head's seq has the head's hash, and every link from
    /// there to the current head verifies.
    Consistent { current_n_records: u64, current_hash: ChainHash },
    /// The log is shorter than the earlier head: history was truncated.
    Truncated { current_n_records: u64 },
    /// The record at the head's seq has another hash: history was rewritten
    /// (even if every link was recomputed).
    Rewritten { seq: Seq, signed_hash: ChainHash, current_hash: ChainHash },
    /// A link after the head's seq does not verify.
    Broken { seq: Seq },
}

impl Consistency {
    pub fn is_consistent(&self) -> bool {
        matches!(self, Consistency::Consistent { .. })
    }
}

/// Checks `head` (already signature-checked) against `records`: the session's
/// records from seq `head.seq` (or 0 for an empty head) to its current end, in
/// order, with `n_total` the current record count.
pub fn consistency<'a>(head: &SignedHead, n_total: u64, records: impl IntoIterator<Item = &'a Record>) -> Consistency {
    let mut checker = ConsistencyChecker::new(head, n_total);
    for record in records {
        checker.push(record);
    }
    checker.finish()
}

/// [`consistency`] one record at a time, for logs read in pages.
#[derive(Debug)]
pub struct ConsistencyChecker {
    head_seq: Option<Seq>,
    head_hash: ChainHash,
    n_total: u64,
    /// Whether the record at the head's seq has been seen (true for an empty head).
    anchored: bool,
    next_seq: u64,
    prev: ChainHash,
    verdict: Option<Consistency>,
}

impl ConsistencyChecker {
    pub fn new(head: &SignedHead, n_total: u64) -> ConsistencyChecker {
        let verdict = (n_total < head.n_records).then_some(Consistency::Truncated { current_n_records: n_total });
        ConsistencyChecker {
            head_seq: head.seq,
            head_hash: head.hash,
            n_total,
            anchored: head.seq.is_none(),
            next_seq: head.n_records,
            prev: head.hash,
            verdict,
        }
    }

    /// The next record, in seq order from the head's seq.
    pub fn push(&mut self, record: &Record) {
        if self.verdict.is_some() {
            return;
        }
        if !self.anchored {
            let Some(seq) = self.head_seq else { return };
            if record.seq() == seq && record.hash() == self.head_hash {
                self.anchored = true;
            } else {
                self.verdict =
                    Some(Consistency::Rewritten { seq, signed_hash: self.head_hash, current_hash: record.hash() });
            }
            return;
        }
        if record.seq().get() != self.next_seq || record.prev() != self.prev || !record.is_self_consistent() {
            self.verdict = Some(Consistency::Broken { seq: Seq::new(self.next_seq) });
            return;
        }
        self.prev = record.hash();
        self.next_seq += 1;
    }

    pub fn finish(self) -> Consistency {
        if let Some(verdict) = self.verdict {
            return verdict;
        }
        if !self.anchored {
            return Consistency::Truncated { current_n_records: self.n_total };
        }
        if self.next_seq != self.n_total {
            return Consistency::Broken { seq: Seq::new(self.next_seq) };
        }
        Consistency::Consistent { current_n_records: self.n_total, current_hash: self.prev }
    }
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}

/// Exactly `N` bytes of lowercase hex.
pub fn parse_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let [high, low] = pair else { return None };
        *byte = (nibble(*high)? << 4) | nibble(*low)?;
    }
    Some(out)
}

fn nibble(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}
