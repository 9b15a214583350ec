//! Value framing: `[format u8][codec u8][payload]`.
//!
//! Every value the store writes (record envelopes, blobs, resources) is framed,
//! so that the codec can change per value and old values stay readable. The
//! codec is chosen per value: zstd at an explicit level when the value is at
//! least [`COMPRESS_MIN_BYTES`] long and compression saves at least
//! [`COMPRESS_MIN_SAVING_PERCENT`]; raw otherwise. Compression is invisible to
//! the chain, which hashes the uncompressed canonical bytes.

/// The frame layout version.
pub const FRAME_V1: u8 = 1;

/// Values shorter than this are stored raw: zstd's frame overhead (~10 bytes)
/// and the CPU cost outweigh the saving on short values.
pub const COMPRESS_MIN_BYTES: usize = 256;

/// Keep the compressed form only if it saves this much.
pub const COMPRESS_MIN_SAVING_PERCENT: usize = 10;

/// zstd level. 3 is zstd's default, spelled out so a library change cannot move it.
pub const ZSTD_LEVEL: i32 = 3;

/// Largest decompressed value we accept: a record envelope at its limit.
pub const MAX_DECOMPRESSED_BYTES: usize = logbook_core::limits::MAX_BLOB_BYTES + logbook_core::limits::MAX_RECORD_BYTES;

/// How a frame's payload is stored. The discriminants are on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Codec {
    Raw = 0,
    Zstd = 1,
}

impl Codec {
    fn from_byte(byte: u8) -> Option<Codec> {
        match byte {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Zstd),
            _ => None,
        }
    }
}

/// Frames `payload`, compressing it when that pays.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    if payload.len() >= COMPRESS_MIN_BYTES
        && let Ok(compressed) = zstd::bulk::compress(payload, ZSTD_LEVEL)
    {
        let saving = payload.len().saturating_sub(compressed.len());
        if saving * 100 >= payload.len() * COMPRESS_MIN_SAVING_PERCENT {
            return with_header(Codec::Zstd, &compressed);
        }
    }
    with_header(Codec::Raw, payload)
}

/// Frames `payload` without compression.
pub fn encode_raw(payload: &[u8]) -> Vec<u8> {
    with_header(Codec::Raw, payload)
}

/// Unframes a value.
pub fn decode(framed: &[u8]) -> Result<Vec<u8>, FrameError> {
    let [format, codec, payload @ ..] = framed else {
        return Err(FrameError::Truncated { n_bytes: framed.len() });
    };
    if *format != FRAME_V1 {
        return Err(FrameError::UnknownFormat { found: *format });
    }
    match Codec::from_byte(*codec) {
        Some(Codec::Raw) => Ok(payload.to_vec()),
        Some(Codec::Zstd) => decompress(payload),
        None => Err(FrameError::UnknownCodec { found: *codec }),
    }
}

/// A value that does not unframe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {n_bytes} bytes is shorter than its header")]
    Truncated { n_bytes: usize },
    #[error("unknown frame format {found}")]
    UnknownFormat { found: u8 },
    #[error("unknown codec {found}")]
    UnknownCodec { found: u8 },
    #[error("zstd payload does not decompress: {reason}")]
    Decompress { reason: String },
}

fn with_header(codec: Codec, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + payload.len());
    out.push(FRAME_V1);
    out.push(codec as u8);
    out.extend_from_slice(payload);
    out
}

fn decompress(payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    // The frame header states the content size; refuse absurd claims before
    // allocating, so corrupt bytes cannot make us allocate gigabytes.
    let claimed = zstd::zstd_safe::get_frame_content_size(payload)
        .map_err(|_| FrameError::Decompress { reason: "no zstd frame header".to_owned() })?;
    let capacity = match claimed {
        Some(n) if n as usize <= MAX_DECOMPRESSED_BYTES => n as usize,
        Some(n) => {
            return Err(FrameError::Decompress { reason: format!("claims {n} bytes, over the limit") });
        }
        // Frames this store writes always state their size.
        None => return Err(FrameError::Decompress { reason: "frame does not state its size".to_owned() }),
    };
    zstd::bulk::decompress(payload, capacity).map_err(|err| FrameError::Decompress { reason: err.to_string() })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn short_values_stay_raw_and_long_repetitive_ones_compress() {
        assert_eq!(encode(b"abc")[1], Codec::Raw as u8);
        let long = b"tool output line\n".repeat(100);
        let framed = encode(&long);
        assert_eq!(framed[1], Codec::Zstd as u8);
        assert!(framed.len() < long.len() / 4);
        assert_eq!(decode(&framed).unwrap(), long);
    }

    proptest! {
        #[test]
        fn round_trip(payload in prop::collection::vec(any::<u8>(), 0..2048)) {
            prop_assert_eq!(decode(&encode(&payload)).unwrap(), payload);
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
            let mut zstd_frame = vec![FRAME_V1, Codec::Zstd as u8];
            zstd_frame.extend_from_slice(&bytes);
            let _ = decode(&zstd_frame);
        }
    }
}
