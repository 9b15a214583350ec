//! Value framing and compression.
//!
//! Resources (and, in storage version 1, record envelopes and blobs) are
//! framed `[format u8][codec u8][payload]`, so that the codec can change per
//! value and old values stay readable. Record bodies and blobs in the
//! write-ahead log carry their codec in their entry header instead (see
//! [`crate::wal`]) and use [`compress`] and [`decompress`] directly. The codec
//! is chosen per value: zstd at an explicit level when the value is at least
//! [`COMPRESS_MIN_BYTES`] long and compression saves at least
//! [`COMPRESS_MIN_SAVING_PERCENT`]; raw otherwise. Compression is invisible to
//! the chain, which hashes the uncompressed canonical bytes.
//!
//! zstd contexts are expensive to create (a fresh one per value cost ≈ 3 µs per
//! small value, half of a small event's decompression), so each thread keeps
//! one compression and one decompression context and reuses it.

/// The frame layout version.
pub const FRAME_V1: u8 = 1;

/// Values shorter than this are stored raw: zstd's frame overhead (~10 bytes)
/// and the CPU cost outweigh the saving on short values.
pub const COMPRESS_MIN_BYTES: usize = 256;

/// Keep the compressed form only if it saves this much.
pub const COMPRESS_MIN_SAVING_PERCENT: usize = 10;

/// zstd level, spelled out so a library change cannot move it. Compression is
/// most of an append's CPU work; on the benchmark corpus level 1 compresses
/// about 1.6 × faster than zstd's default (3) and stores 0.38 × the JSONL bytes
/// instead of 0.35 × (see `benches/README.md`). Any level decodes the same way.
pub const ZSTD_LEVEL: i32 = 1;

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
    pub fn from_byte(byte: u8) -> Option<Codec> {
        match byte {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Zstd),
            _ => None,
        }
    }
}

/// Frames `payload`, compressing it when that pays.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + payload.len());
    out.push(FRAME_V1);
    out.push(Codec::Raw as u8);
    let codec = compress(payload, &mut out);
    out[1] = codec as u8;
    out
}

/// Appends `payload` to `out`, compressed when that pays, and says how.
pub fn compress(payload: &[u8], out: &mut Vec<u8>) -> Codec {
    if payload.len() >= COMPRESS_MIN_BYTES {
        let start = out.len();
        let room = room_for(payload);
        out.reserve(room);
        let compressed = compress_into(payload, out, start);
        match compressed {
            Some(n) if n <= room => {
                out.truncate(start + n);
                return Codec::Zstd;
            }
            Some(_) | None => out.truncate(start),
        }
    }
    out.extend_from_slice(payload);
    Codec::Raw
}

/// `payload` compressed, if that pays; `None` (and no copy) if not.
pub fn compressed(payload: &[u8]) -> Option<Vec<u8>> {
    if payload.len() < COMPRESS_MIN_BYTES {
        return None;
    }
    let room = room_for(payload);
    let mut out = Vec::with_capacity(room);
    match compress_into(payload, &mut out, 0) {
        Some(n) if n <= room => {
            out.truncate(n);
            Some(out)
        }
        Some(_) | None => None,
    }
}

/// The most bytes a compressed form may take to be kept: zstd is given only
/// that much room, so it gives up early on what does not compress.
fn room_for(payload: &[u8]) -> usize {
    payload.len() - payload.len() * COMPRESS_MIN_SAVING_PERCENT / 100
}

/// Compresses `payload` into `out`'s spare capacity from `start` with this
/// thread's context; the compressed length, or `None` if it did not fit.
fn compress_into(payload: &[u8], out: &mut Vec<u8>, start: usize) -> Option<usize> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok();
        }
        let compressor = slot.as_mut()?;
        let mut cursor = std::io::Cursor::new(&mut *out);
        cursor.set_position(start as u64);
        compressor.compress_to_buffer(payload, &mut cursor).ok()
    })
}

/// The size a zstd frame says it decompresses to, if it has a header that says.
pub fn claimed_size(payload: &[u8]) -> Option<u64> {
    zstd::zstd_safe::get_frame_content_size(payload).ok().flatten()
}

/// Decompresses a zstd frame this store wrote (it states its size), refusing
/// sizes over `max_bytes`.
pub fn decompress(payload: &[u8], max_bytes: usize) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::new();
    decompress_into(payload, max_bytes, &mut out)?;
    Ok(out)
}

/// [`decompress`] into `out`, replacing what it held: a caller decompressing
/// many frames reuses one buffer instead of allocating (and for large frames,
/// mapping and zeroing fresh pages) for each.
pub fn decompress_into(payload: &[u8], max_bytes: usize, out: &mut Vec<u8>) -> Result<(), FrameError> {
    // The frame header states the content size; refuse absurd claims before
    // allocating, so corrupt bytes cannot make us allocate gigabytes.
    let claimed = zstd::zstd_safe::get_frame_content_size(payload)
        .map_err(|_| FrameError::Decompress { reason: "no zstd frame header".to_owned() })?;
    let capacity = match claimed {
        Some(n) if n <= max_bytes as u64 => n as usize,
        Some(n) => {
            return Err(FrameError::Decompress { reason: format!("claims {n} bytes, over the limit of {max_bytes}") });
        }
        // Frames this store writes always state their size.
        None => return Err(FrameError::Decompress { reason: "frame does not state its size".to_owned() }),
    };
    out.clear();
    out.reserve(capacity);
    let res = DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = zstd::bulk::Decompressor::new().ok();
        }
        match slot.as_mut() {
            Some(decompressor) => decompressor.decompress_to_buffer(payload, out).map_err(|err| err.to_string()),
            None => Err("cannot create a zstd context".to_owned()),
        }
    });
    match res {
        Ok(n) if n == capacity => Ok(()),
        Ok(n) => Err(FrameError::Decompress { reason: format!("frame claims {capacity} bytes but holds {n}") }),
        Err(reason) => Err(FrameError::Decompress { reason }),
    }
}

thread_local! {
    /// This thread's zstd compression context (see the module documentation).
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
    /// This thread's zstd decompression context.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Frames `payload` without compression.
pub fn encode_raw(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + payload.len());
    out.push(FRAME_V1);
    out.push(Codec::Raw as u8);
    out.extend_from_slice(payload);
    out
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
        Some(Codec::Zstd) => decompress(payload, MAX_DECOMPRESSED_BYTES),
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

    #[test]
    fn compression_appends_and_keeps_what_was_there() {
        let mut out = b"prefix".to_vec();
        let long = b"tool output line\n".repeat(100);
        assert_eq!(compress(&long, &mut out), Codec::Zstd);
        assert_eq!(&out[..6], b"prefix");
        assert_eq!(decompress(&out[6..], long.len()).unwrap(), long);
        assert!(decompress(&out[6..], long.len() - 1).is_err(), "a frame over the limit is refused");
        let mut out = b"p".to_vec();
        let mut random = vec![0u8; 1000];
        blake3::Hasher::new().update(b"seed").finalize_xof().fill(&mut random);
        assert_eq!(compress(&random, &mut out), Codec::Raw);
        assert_eq!(&out[1..], &random[..]);
        assert_eq!(compressed(&random), None);
        assert_eq!(compressed(b"short"), None);
        assert_eq!(decompress(&compressed(&long).unwrap(), long.len()).unwrap(), long);
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
