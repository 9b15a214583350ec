//! Whether the Messages API will take bytes as an image, judged from the
//! bytes alone: the media type is the one their signature names (PNG, JPEG,
//! GIF or WebP), never the one a file name, an upload or an MCP server
//! declared, and neither side may be over [`MAX_SIDE_PIXELS`]. The API
//! refuses an image whose data is not of its media type, or too large, and
//! an image block, once in a session's log, is sent again with every later
//! request, so one such block would have all of them refused. The read
//! tool, MCP tool results and Files API images inlined into model calls all
//! ask [`check`]; each checks the size itself first (before the bytes are
//! read or decoded).
//!
//! The dimensions come from the header; an image whose header does not give
//! them (cut short, damaged, a JPEG without a start of frame) or gives a
//! side of zero is refused: the API cannot read it either. Pure: no IO.

/// The longest side of an image the Messages API takes.
pub(crate) const MAX_SIDE_PIXELS: u32 = 8_000;

/// The image formats the Messages API reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MediaType {
    Png,
    Jpeg,
    Gif,
    Webp,
}

impl MediaType {
    const ALL: [MediaType; 4] = [MediaType::Png, MediaType::Jpeg, MediaType::Gif, MediaType::Webp];

    /// The MIME type, as the Messages API names it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            MediaType::Png => "image/png",
            MediaType::Jpeg => "image/jpeg",
            MediaType::Gif => "image/gif",
            MediaType::Webp => "image/webp",
        }
    }

    /// The format a declared MIME type names, if the Messages API reads it.
    pub(crate) fn named(mime_type: &str) -> Option<MediaType> {
        MediaType::ALL.into_iter().find(|media_type| media_type.as_str() == mime_type)
    }

    /// The format the bytes' signature names.
    pub(crate) fn of(bytes: &[u8]) -> Option<MediaType> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(MediaType::Png)
        } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
            Some(MediaType::Jpeg)
        } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
            Some(MediaType::Gif)
        } else if bytes.starts_with(b"RIFF") && bytes.get(8..12) == Some(b"WEBP") {
            Some(MediaType::Webp)
        } else {
            None
        }
    }
}

/// Why the Messages API would refuse bytes as an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// The signature is none of the formats the API reads.
    #[error("its bytes are not a PNG, JPEG, GIF or WebP image")]
    NotAnImage,
    /// A side is over [`MAX_SIDE_PIXELS`].
    #[error("{width} x {height} pixels, more than the limit of {MAX_SIDE_PIXELS} on a side")]
    TooLarge { width: u32, height: u32 },
    /// The header does not give a size, or gives a side of zero.
    #[error("its header gives no size (the image is cut short or damaged)")]
    Damaged,
}

/// The media type to send `bytes` as, or why they cannot be sent as an
/// image.
pub(crate) fn check(bytes: &[u8]) -> Result<MediaType, Refusal> {
    let media_type = MediaType::of(bytes).ok_or(Refusal::NotAnImage)?;
    match dimensions(bytes) {
        Some((width, height)) if width.max(height) > MAX_SIDE_PIXELS => Err(Refusal::TooLarge { width, height }),
        Some((width, height)) if width.min(height) == 0 => Err(Refusal::Damaged),
        Some(_) => Ok(media_type),
        None => Err(Refusal::Damaged),
    }
}

/// An image's width and height from its header (PNG, GIF, JPEG, WebP), if
/// the bytes are one of those and say.
pub(crate) fn dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    let be16 = |at: usize| Some(u32::from(u16::from_be_bytes(bytes.get(at..at + 2)?.try_into().ok()?)));
    let le16 = |at: usize| Some(u32::from(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?)));
    let be32 = |at: usize| Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    let le24 = |at: usize| {
        let b = bytes.get(at..at + 3)?;
        Some(u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16)
    };
    match MediaType::of(bytes)? {
        MediaType::Png => Some((be32(16)?, be32(20)?)),
        MediaType::Gif => Some((le16(6)?, le16(8)?)),
        MediaType::Webp => match bytes.get(12..16)? {
            b"VP8X" => Some((le24(24)? + 1, le24(27)? + 1)),
            b"VP8 " => Some((le16(26)? & 0x3fff, le16(28)? & 0x3fff)),
            b"VP8L" => {
                let bits = u32::from_le_bytes(bytes.get(21..25)?.try_into().ok()?);
                Some(((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1))
            }
            _ => None,
        },
        MediaType::Jpeg => {
            // Walk the segments to the first start-of-frame marker.
            let mut at = 2;
            while at + 4 <= bytes.len() {
                if bytes[at] != 0xff {
                    return None;
                }
                let marker = bytes[at + 1];
                // Fill bytes before a marker, and markers without a length.
                if marker == 0xff {
                    at += 1;
                    continue;
                }
                if marker == 0x01 || (0xd0..=0xd7).contains(&marker) {
                    at += 2;
                    continue;
                }
                let length = usize::try_from(be16(at + 2)?).ok()?;
                let start_of_frame = matches!(marker, 0xc0..=0xcf) && !matches!(marker, 0xc4 | 0xc8 | 0xcc);
                if start_of_frame {
                    return Some((be16(at + 7)?, be16(at + 5)?));
                }
                at += 2 + length;
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PNG header of `width` x `height` pixels.
    fn png(width: u32, height: u32) -> Vec<u8> {
        let mut png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
        png.extend_from_slice(&width.to_be_bytes());
        png.extend_from_slice(&height.to_be_bytes());
        png.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
        png
    }

    #[test]
    fn dimensions_are_read_from_each_headers_format() {
        assert_eq!(dimensions(&png(9_000, 10)), Some((9_000, 10)));
        // GIF: logical screen width and height, little-endian.
        assert_eq!(dimensions(b"GIF89a\x40\x1f\x0a\x00rest"), Some((8_000, 10)));
        // JPEG: an APP0 segment, then a baseline start of frame (height, width).
        let mut jpeg = vec![0xff, 0xd8, 0xff, 0xe0, 0x00, 0x04, 0x00, 0x00];
        jpeg.extend_from_slice(&[0xff, 0xc0, 0x00, 0x11, 0x08, 0x00, 0x0a, 0x23, 0x28]);
        assert_eq!(dimensions(&jpeg), Some((9_000, 10)));
        // Fill bytes and a marker without a length before the frame.
        let mut padded = vec![0xff, 0xd8, 0xff, 0xff, 0xff, 0xd0];
        padded.extend_from_slice(&jpeg[2..]);
        assert_eq!(dimensions(&padded), Some((9_000, 10)));
        // WebP (extended): 24-bit sizes minus one.
        let mut webp = b"RIFF\0\0\0\0WEBPVP8X\0\0\0\0\0\0\0\0".to_vec();
        webp.extend_from_slice(&[0x27, 0x23, 0x00, 0x09, 0x00, 0x00]);
        assert_eq!(dimensions(&webp), Some((9_000, 10)));
        assert_eq!(dimensions(b"not an image"), None);
        assert_eq!(dimensions(&[0xff, 0xd8, 0xff]), None);
    }

    #[test]
    fn the_media_type_is_the_signatures_and_the_size_is_bounded() {
        assert_eq!(check(&png(MAX_SIDE_PIXELS, 1)), Ok(MediaType::Png));
        assert_eq!(
            check(&png(1, MAX_SIDE_PIXELS + 1)),
            Err(Refusal::TooLarge { width: 1, height: MAX_SIDE_PIXELS + 1 })
        );
        assert_eq!(check(b"\xff\xd8\xff\xe0 a JPEG whose header gives no size"), Err(Refusal::Damaged));
        assert_eq!(check(b"\x89PNG\r\n\x1a\n"), Err(Refusal::Damaged), "a signature alone");
        assert_eq!(check(&png(0, 10)), Err(Refusal::Damaged));
        assert_eq!(check(b"GIF87a\x01\x00\x01\x00"), Ok(MediaType::Gif));
        assert_eq!(check(b"GIF8 is not enough"), Err(Refusal::NotAnImage));
        assert_eq!(check(b"hello, this is not an image"), Err(Refusal::NotAnImage));
        assert_eq!(check(b""), Err(Refusal::NotAnImage));
        for media_type in MediaType::ALL {
            assert_eq!(MediaType::named(media_type.as_str()), Some(media_type));
        }
        assert_eq!(MediaType::named("image/tiff"), None);
    }
}
