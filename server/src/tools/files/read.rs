//! `read {file_path, view_range?}`: a UTF-8 text file (whole, up to
//! [`MAX_TEXT_BYTES`], or a range of lines), an image as an image block, a PDF
//! as a document block.
//!
//! The kind comes from the extension, as in the SDK reference
//! implementation, and is then confirmed by the file's first bytes: a `.png`
//! that is really a JPEG is sent as `image/jpeg` (the Messages API rejects a
//! wrong media type), and one that is no image at all, or larger than the API
//! takes, is refused ([`crate::tools::image`]).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};

use base64::Engine;
use logbook_core::event::{ContentBlock, DocumentSource, ImageSource};
use serde::Deserialize;
use serde_json::Value;

use super::{Roots, parse_input, text};
use crate::runner::ToolOutcome;
use crate::tools::image::{self, Refusal};

/// Largest text file read whole, and largest range of lines returned (the
/// SDK's cap): more would crowd the context; bash can page through it.
pub(crate) const MAX_TEXT_BYTES: u64 = 256 * 1024;
/// Most bytes a view_range read scans for its lines: a sparse file can claim
/// a terabyte without newlines, and the blocking thread must come back.
pub(crate) const MAX_SCAN_BYTES: u64 = 256 * 1024 * 1024;
/// Largest image, as base64 (the SDK's cap, and the Messages API's per-image
/// limit).
pub(crate) const MAX_IMAGE_BASE64_BYTES: u64 = 5 * 1024 * 1024;
/// Largest PDF (the SDK's cap; the Messages API takes 32 MB requests).
pub(crate) const MAX_PDF_BYTES: u64 = 20 * 1024 * 1024;

#[derive(Debug, Deserialize)]
struct Input {
    file_path: String,
    #[serde(default)]
    view_range: Option<Vec<i64>>,
}

/// What the extension says a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Image,
    Pdf,
}

pub(crate) fn read(roots: &Roots, input: &Value) -> ToolOutcome {
    let input: Input = match parse_input("read", input) {
        Ok(input) => input,
        Err(outcome) => return outcome,
    };
    let file_path = &input.file_path;
    let fail = |reason: String| ToolOutcome::error(format!("read: {file_path}: {reason}"));
    let range = match input.view_range.as_deref().map(LineRange::parse).transpose() {
        Ok(range) => range,
        Err(reason) => return ToolOutcome::error(format!("read: {reason}")),
    };
    let target = match roots.resolve(file_path) {
        Ok(target) => target,
        Err(reason) => return fail(reason),
    };
    let (file, stat) = match target.dir.open_file(&target.rel) {
        Ok(opened) => opened,
        Err(err) => return fail(err.to_string()),
    };
    let size = u64::try_from(stat.st_size).unwrap_or(0);
    let kind = kind_of(&target.rel);
    if range.is_some() && kind != Kind::Text {
        return ToolOutcome::error(format!("read: view_range applies to text files only, not to {file_path}"));
    }
    let result = match (kind, range) {
        (Kind::Image, _) => read_image(file, size),
        (Kind::Pdf, _) => read_pdf(file, size, &target.rel),
        (Kind::Text, None) => read_whole_text(file, size),
        (Kind::Text, Some(range)) => read_lines(file, range),
    };
    match result {
        Ok(outcome) => outcome,
        Err(reason) => fail(reason),
    }
}

/// `[start_line, end_line]`, 1-based and inclusive; `end` `None` reads to the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LineRange {
    start: u64,
    end: Option<u64>,
}

impl LineRange {
    fn parse(raw: &[i64]) -> Result<LineRange, String> {
        let [start, end] = raw else {
            return Err(format!("view_range must be [start_line, end_line], got {} numbers", raw.len()));
        };
        let start = u64::try_from(*start)
            .ok()
            .filter(|start| *start >= 1)
            .ok_or_else(|| format!("view_range: start_line must be 1 or more, got {start}"))?;
        let end = match u64::try_from(*end) {
            Ok(0) | Err(_) => None,
            Ok(end) if end < start => {
                return Err(format!("view_range: end_line {end} is before start_line {start}"));
            }
            Ok(end) => Some(end),
        };
        Ok(LineRange { start, end })
    }
}

fn kind_of(rel: &str) -> Kind {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    let extension = name.rsplit_once('.').map(|(_, ext)| ext.to_ascii_lowercase()).unwrap_or_default();
    match extension.as_str() {
        "png" | "jpg" | "jpeg" | "gif" | "webp" => Kind::Image,
        "pdf" => Kind::Pdf,
        _ => Kind::Text,
    }
}

fn read_whole_text(file: File, size: u64) -> Result<ToolOutcome, String> {
    if size > MAX_TEXT_BYTES {
        return Err(format!(
            "the file is {size} bytes, more than the {MAX_TEXT_BYTES}-byte limit; read part of it with view_range, \
             or use bash (head, tail, sed -n) to read a slice"
        ));
    }
    // One byte more than the cap tells a file that grew since its fstat.
    let bytes = read_capped(file, MAX_TEXT_BYTES + 1)?;
    if bytes.len() as u64 > MAX_TEXT_BYTES {
        return Err(format!("the file grew past the {MAX_TEXT_BYTES}-byte limit while it was read"));
    }
    let content = String::from_utf8(bytes).map_err(|_| not_utf8())?;
    if content.is_empty() {
        return Ok(text("[the file is empty]"));
    }
    Ok(text(content))
}

fn read_lines(file: File, range: LineRange) -> Result<ToolOutcome, String> {
    let mut reader = BufReader::new(file.take(MAX_SCAN_BYTES));
    let mut out: Vec<u8> = Vec::new();
    let mut line_no = 0u64;
    loop {
        let wanted = line_no + 1 >= range.start && range.end.is_none_or(|end| line_no < end);
        if range.end.is_some_and(|end| line_no >= end) {
            break;
        }
        let limit = usize::try_from(MAX_TEXT_BYTES).unwrap_or(usize::MAX);
        match next_line(&mut reader, wanted.then_some(&mut out), limit) {
            Ok(true) => line_no += 1,
            Ok(false) if reader.get_ref().limit() == 0 => {
                return Err(format!(
                    "view_range reads lines within the first {MAX_SCAN_BYTES} bytes of a file; use bash (sed -n, \
                     tail) beyond that"
                ));
            }
            Ok(false) => break,
            Err(LineError::TooLong) => {
                return Err(format!(
                    "lines {}-{} are more than {MAX_TEXT_BYTES} bytes; read a smaller range",
                    range.start,
                    line_no + 1
                ));
            }
            Err(LineError::Io(err)) => return Err(err),
        }
    }
    if line_no < range.start {
        return Ok(text(format!("[no lines in the range: the file has {line_no} lines]")));
    }
    let content = String::from_utf8(out).map_err(|_| not_utf8())?;
    Ok(text(content))
}

#[derive(Debug)]
enum LineError {
    TooLong,
    Io(String),
}

/// Consumes the next line (through its `\n`), appending it to `out` if given
/// while `out` stays within `limit` bytes; `false` at the end of the file.
/// Skipped lines are never held in memory, however long.
fn next_line(reader: &mut impl BufRead, mut out: Option<&mut Vec<u8>>, limit: usize) -> Result<bool, LineError> {
    let mut read_any = false;
    loop {
        let buf = reader.fill_buf().map_err(|err| LineError::Io(err.to_string()))?;
        if buf.is_empty() {
            return Ok(read_any);
        }
        read_any = true;
        let (n_used, done) = match buf.iter().position(|byte| *byte == b'\n') {
            Some(idx) => (idx + 1, true),
            None => (buf.len(), false),
        };
        if let Some(out) = out.as_deref_mut() {
            if out.len() + n_used > limit {
                return Err(LineError::TooLong);
            }
            out.extend_from_slice(&buf[..n_used]);
        }
        reader.consume(n_used);
        if done {
            return Ok(true);
        }
    }
}

fn read_image(file: File, size: u64) -> Result<ToolOutcome, String> {
    let base64_len = size.div_ceil(3) * 4;
    if base64_len > MAX_IMAGE_BASE64_BYTES {
        return Err(format!(
            "the image is {size} bytes, more than the limit of {MAX_IMAGE_BASE64_BYTES} bytes as base64 (about {} \
             bytes); make it smaller with bash (e.g. ImageMagick's convert)",
            MAX_IMAGE_BASE64_BYTES / 4 * 3
        ));
    }
    let bytes = read_capped(file, size)?;
    let media_type = image::check(&bytes).map_err(|refusal| match refusal {
        Refusal::NotAnImage => "has an image extension but is not a PNG, JPEG, GIF or WebP image".to_owned(),
        Refusal::TooLarge { .. } => {
            format!("the image is {refusal}; make it smaller with bash (e.g. ImageMagick's convert)")
        }
        Refusal::Damaged => format!("cannot be read as an image: {refusal}"),
    })?;
    let data = base64::engine::general_purpose::STANDARD.encode(&bytes);
    Ok(ToolOutcome {
        content: vec![ContentBlock::Image {
            source: ImageSource::Base64 { media_type: media_type.as_str().to_owned(), data },
        }],
        is_error: false,
    })
}

fn read_pdf(file: File, size: u64, rel: &str) -> Result<ToolOutcome, String> {
    if size > MAX_PDF_BYTES {
        return Err(format!("the PDF is {size} bytes, more than the {MAX_PDF_BYTES}-byte limit"));
    }
    let bytes = read_capped(file, size)?;
    if !bytes.starts_with(b"%PDF-") {
        return Err("has a .pdf extension but is not a PDF".to_owned());
    }
    let data = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let title = rel.rsplit('/').next().map(str::to_owned);
    Ok(ToolOutcome {
        content: vec![ContentBlock::Document {
            source: DocumentSource::Base64 { media_type: "application/pdf".to_owned(), data },
            title,
            context: None,
        }],
        is_error: false,
    })
}

/// Reads at most `limit` bytes: the file may have grown since its `fstat`.
fn read_capped(file: File, limit: u64) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    file.take(limit).read_to_end(&mut bytes).map_err(|err| err.to_string())?;
    Ok(bytes)
}

fn not_utf8() -> String {
    "not valid UTF-8 text (a binary file? use bash, e.g. file or xxd, to inspect it)".to_owned()
}
