//! The canonical encoding: the one place that turns values into the bytes the
//! chain hashes.
//!
//! bincode 2.0.1 with every option spelled out (little endian, variable-length
//! integers, a decode limit of [`MAX_RECORD_BYTES`]): bincode's defaults have
//! changed between versions, and relying on one would quietly fork the format.
//! Decoding must consume every byte; trailing bytes are an error, so that one
//! value has exactly one encoding. Enum variants are encoded by position, which
//! is why the event enums may only ever be appended to.

use bincode::config::{Configuration, Limit, LittleEndian, Varint};
use bincode::{Decode, Encode};

use crate::limits::MAX_RECORD_BYTES;

/// The first byte of an entry's canonical bytes. Bumped only together with an
/// upcasting path for the older versions.
pub const ENTRY_FORMAT_V1: u8 = 1;

/// The first byte of an encoded record envelope.
pub const RECORD_FORMAT_V1: u8 = 1;

/// The bincode configuration of the canonical encoding. Never change it.
pub type CanonicalConfig = Configuration<LittleEndian, Varint, Limit<MAX_RECORD_BYTES>>;

pub const CANONICAL: CanonicalConfig =
    bincode::config::standard().with_little_endian().with_variable_int_encoding().with_limit::<MAX_RECORD_BYTES>();

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("no bytes to decode")]
    Empty,
    #[error("unknown format version {found} (this binary reads version {supported}); upgrade logbook")]
    UnknownFormat { found: u8, supported: u8 },
    #[error("malformed encoding: {reason}")]
    Malformed { reason: String },
    #[error("{n_bytes} trailing bytes after the value")]
    TrailingBytes { n_bytes: usize },
    #[error("the payload was redacted; only its digest remains")]
    Redacted,
    #[error("not the canonical encoding of its value (an integer or map written in a non-canonical form)")]
    NotCanonical,
}

/// Why a value did not encode. Only an oversized value can cause it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("value does not encode: {reason}")]
pub struct EncodeError {
    pub reason: String,
}

/// Encodes `value` behind a format byte.
///
/// The value is measured first (an encoding pass that only counts bytes)
/// so that its buffer is allocated once, at its size: grown from nothing as
/// bytes arrive it would be reallocated and copied several times for a
/// typical entry, and kept with up to twice the room it needs.
pub fn encode_versioned<T: Encode>(format: u8, value: &T) -> Result<Vec<u8>, EncodeError> {
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::encode_into_writer(value, &mut size, CANONICAL).map_err(|err| EncodeError { reason: err.to_string() })?;
    let mut out = Vec::with_capacity(1 + size.bytes_written);
    out.push(format);
    bincode::encode_into_std_write(value, &mut out, CANONICAL)
        .map_err(|err| EncodeError { reason: err.to_string() })?;
    Ok(out)
}

/// Decodes bytes written by [`encode_versioned`] with the same format byte,
/// accepting only the canonical encoding of the decoded value.
///
/// bincode accepts integers written longer than needed (`fb 02 00` for 2) and
/// map keys out of order or repeated, so several byte strings decode to one
/// value. The chain hashes bytes, so a second encoding would be a second
/// identity for one event: the decoded value is re-encoded and must give back
/// exactly the input.
pub fn decode_versioned<T: Decode<()> + Encode>(format: u8, bytes: &[u8]) -> Result<T, DecodeError> {
    let value = decode_versioned_lenient::<T>(format, bytes)?;
    // The format byte was checked by the lenient decode.
    let mut matches = Matches { rest: bytes.get(1..).unwrap_or_default() };
    match bincode::encode_into_writer(&value, &mut matches, CANONICAL) {
        Ok(()) if matches.rest.is_empty() => Ok(value),
        Ok(()) | Err(_) => Err(DecodeError::NotCanonical),
    }
}

/// A bincode writer that compares what is written with the bytes a value was
/// decoded from instead of keeping it: the canonical check of
/// [`decode_versioned`] without a second copy of the value's bytes. It stops
/// the encoding at the first byte that differs.
struct Matches<'a> {
    rest: &'a [u8],
}

impl bincode::enc::write::Writer for Matches<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        match self.rest.strip_prefix(bytes) {
            Some(rest) => {
                self.rest = rest;
                Ok(())
            }
            None => Err(bincode::error::EncodeError::Other("not the bytes the value was decoded from")),
        }
    }
}

fn decode_versioned_lenient<T: Decode<()>>(format: u8, bytes: &[u8]) -> Result<T, DecodeError> {
    let (&found, payload) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if found != format {
        return Err(DecodeError::UnknownFormat { found, supported: format });
    }
    let (value, n_read) = bincode::decode_from_slice(payload, CANONICAL)
        .map_err(|err| DecodeError::Malformed { reason: err.to_string() })?;
    if n_read != payload.len() {
        return Err(DecodeError::TrailingBytes { n_bytes: payload.len() - n_read });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlong_integers_are_not_canonical() {
        // 2 as a one-byte varint is canonical; `fb 02 00` (u16 form) decodes to
        // the same value and must be refused. Found by the decode_record fuzzer.
        assert_eq!(decode_versioned::<u64>(7, &[7, 0x02]), Ok(2));
        assert_eq!(decode_versioned::<u64>(7, &[7, 0xfb, 0x02, 0x00]), Err(DecodeError::NotCanonical));
    }

    #[test]
    fn unsorted_or_repeated_map_keys_are_not_canonical() {
        use std::collections::BTreeMap;
        let sorted = encode_versioned(9, &BTreeMap::from([("a".to_owned(), 1u8), ("b".to_owned(), 2u8)])).unwrap();
        assert!(decode_versioned::<BTreeMap<String, u8>>(9, &sorted).is_ok());
        // Same pairs, keys swapped.
        let swapped = [9, 2, 1, b'b', 2, 1, b'a', 1];
        assert_eq!(decode_versioned::<BTreeMap<String, u8>>(9, &swapped), Err(DecodeError::NotCanonical));
        let repeated = [9, 2, 1, b'a', 1, 1, b'a', 2];
        assert_eq!(decode_versioned::<BTreeMap<String, u8>>(9, &repeated), Err(DecodeError::NotCanonical));
    }
}
