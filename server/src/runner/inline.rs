//! File-sourced content made readable for the model.
//!
//! An `image` or `document` block may name a file of the Files API
//! (`source: {type: "file", file_id}`). Those ids are Logbook's own and mean
//! nothing to the Messages API, so before each model call the runner replaces
//! such a source with the file's contents: base64 for images and PDFs, text
//! for text files. The log keeps the block as the client sent it (the send
//! checked that the file existed). A file that is gone by the time of the call
//! (deleted, expired), too large, or of a type the model cannot read becomes a
//! text block saying so, so that one bad block does not fail every call of
//! the session. An image is sent as the media type its bytes are, not the
//! one its upload declared, and one whose bytes are no image the API reads,
//! or too large an image, is such a text block too ([`image::check`]).

use base64::Engine as _;
use serde_json::{Value, json};

use logbook_core::Timestamp;
use logbook_store::SledStore;

use crate::api::error::ApiError;
use crate::api::files::{self, StoredFile};
use crate::resources::content;
use crate::tenancy::Tenant;
use crate::tools::image::{self, MediaType};

/// Largest file inlined into a model request, as sent (base64 for images
/// and PDFs, escaped text for text files). The Messages API takes requests of
/// up to 32 MB.
pub const MAX_INLINE_FILE_BYTES: u64 = 20 * 1024 * 1024;

/// Largest image inlined, as sent: the Messages API refuses images over 5 MB.
pub const MAX_INLINE_IMAGE_BYTES: u64 = 5_000_000;

/// Most bytes of files inlined into one request, as sent, leaving room under
/// the 32 MB limit for the rest of the request; past it, further files become
/// text blocks saying they were left out.
pub const MAX_INLINE_REQUEST_BYTES: u64 = 24 * 1024 * 1024;

/// The content blocks that may hold file sources: a user turn's blocks and
/// the blocks inside its tool results. Never the assistant's (a `tool_use`
/// input is what the model wrote, whatever its shape).
fn source_blocks(messages: &mut [Value]) -> Vec<&mut Value> {
    let mut out = Vec::new();
    for message in messages.iter_mut() {
        if message.get("role").and_then(Value::as_str) != Some("user") {
            continue;
        }
        let Some(blocks) = message.get_mut("content").and_then(Value::as_array_mut) else { continue };
        for block in blocks.iter_mut() {
            if block.get("type").and_then(Value::as_str) == Some("tool_result") {
                if let Some(inner) = block.get_mut("content").and_then(Value::as_array_mut) {
                    out.extend(inner.iter_mut());
                }
            } else {
                out.push(block);
            }
        }
    }
    out
}

/// The file a content block's source names, with the block's type, if it is
/// an image or document with a `file` source.
fn file_of(block: &Value) -> Option<(&str, &str)> {
    let kind = block.get("type").and_then(Value::as_str).filter(|kind| matches!(*kind, "image" | "document"))?;
    let source = block.get("source").filter(|source| source.get("type").and_then(Value::as_str) == Some("file"))?;
    Some((kind, source.get("file_id").and_then(Value::as_str)?))
}

/// Whether any content block of `messages` has a `file` source (the common
/// case has none, and then the store is not touched).
pub fn has_file_sources(messages: &[Value]) -> bool {
    // Runs before every model call: reads only, copies nothing.
    fn content(value: &Value) -> &[Value] {
        value.get("content").and_then(Value::as_array).map_or(&[], Vec::as_slice)
    }
    messages.iter().filter(|message| message.get("role").and_then(Value::as_str) == Some("user")).any(|message| {
        content(message).iter().any(|block| {
            file_of(block).is_some()
                || (block.get("type").and_then(Value::as_str) == Some("tool_result")
                    && content(block).iter().any(|inner| file_of(inner).is_some()))
        })
    })
}

/// Replaces the `file` source of every image and document block a user turn
/// holds (tool results included) with the file's contents read from `store`.
pub fn inline_files(
    store: &SledStore,
    tenant: &Tenant,
    now: Timestamp,
    messages: &mut [Value],
) -> Result<(), ApiError> {
    let mut budget = MAX_INLINE_REQUEST_BYTES;
    // Newest first: when the budget runs out, older turns' files (already
    // answered about) are the ones left out, not the file just sent.
    for block in source_blocks(messages).into_iter().rev() {
        if let Some((kind, file_id)) = file_of(block) {
            let (kind, file_id) = (kind.to_owned(), file_id.to_owned());
            *block = resolved_block(store, tenant, now, block, &kind, &file_id, &mut budget)?;
        }
    }
    Ok(())
}

/// The block with its file source replaced, or a text block saying why not.
fn resolved_block(
    store: &SledStore,
    tenant: &Tenant,
    now: Timestamp,
    block: &Value,
    kind: &str,
    file_id: &str,
    budget: &mut u64,
) -> Result<Value, ApiError> {
    let note = |why: String| json!({"type": "text", "text": format!("[{kind} from file {file_id}: {why}]")});
    let file = match files::parse_file_id(file_id).and_then(|id| files::load_live(store, tenant, id, now)) {
        Ok(file) => file,
        Err(err) if err.status.is_client_error() => return Ok(note("the file is no longer available".to_owned())),
        Err(err) => return Err(err),
    };
    let limit = if kind == "image" { MAX_INLINE_IMAGE_BYTES } else { MAX_INLINE_FILE_BYTES }.min(*budget);
    let too_large = |sent: u64| {
        note(format!("{sent} bytes as sent is more than this request can carry ({limit} left for it); it was left out"))
    };
    // Base64 sends 4 bytes for every 3: refuse before reading what cannot fit.
    let base64_len = file.size_bytes.div_ceil(3) * 4;
    let source = match kind {
        "image" if MediaType::named(&file.mime_type).is_some() => {
            if base64_len > limit {
                return Ok(too_large(base64_len));
            }
            let bytes = read(store, &file)?;
            match image::check(&bytes) {
                Ok(media_type) => base64_source(media_type.as_str(), &bytes),
                Err(refusal) => return Ok(note(format!("{refusal}; it was left out"))),
            }
        }
        "document" if file.mime_type == "application/pdf" => {
            if base64_len > limit {
                return Ok(too_large(base64_len));
            }
            let bytes = read(store, &file)?;
            // The API refuses a "PDF" that is not one, and this block would be
            // sent again with every later request.
            if !bytes.starts_with(b"%PDF-") {
                return Ok(note("its bytes are not a PDF (they do not start with %PDF-); it was left out".to_owned()));
            }
            base64_source(&file.mime_type, &bytes)
        }
        "document" if file.mime_type.starts_with("text/") => {
            if file.size_bytes > limit {
                return Ok(too_large(file.size_bytes));
            }
            let bytes = read(store, &file)?;
            json!({"type": "text", "media_type": "text/plain", "data": String::from_utf8_lossy(&bytes)})
        }
        _ => {
            return Ok(note(format!("the model cannot read a file of type {} here; it was left out", file.mime_type)));
        }
    };
    // What is sent, escapes included (text with many quotes or control
    // characters grows when written as JSON).
    let sent = serde_json::to_vec(&source).map_or(u64::MAX, |bytes| bytes.len() as u64);
    if sent > limit {
        return Ok(too_large(sent));
    }
    *budget -= sent;
    let mut block = block.clone();
    if let Some(map) = block.as_object_mut() {
        map.insert("source".to_owned(), source);
    }
    Ok(block)
}

fn base64_source(media_type: &str, bytes: &[u8]) -> Value {
    json!({
        "type": "base64",
        "media_type": media_type,
        "data": base64::engine::general_purpose::STANDARD.encode(bytes),
    })
}

fn read(store: &SledStore, file: &StoredFile) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::with_capacity(usize::try_from(file.size_bytes).unwrap_or(0));
    content::copy_to(store, file.blob, file.size_bytes, &mut out).map_err(files::content_error)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

    use logbook_core::{FileId, WorkspaceId};
    use logbook_store::SledOptions;

    use super::*;

    fn now() -> Timestamp {
        Timestamp::from_unix_micros(1_764_000_000_000_000)
    }

    fn upload(store: &SledStore, tenant: &Tenant, n: u128, mime_type: &str, bytes: &[u8]) -> String {
        let stored = content::store_reader(store, bytes, content::MAX_FILE_BYTES).unwrap();
        let file = StoredFile {
            id: FileId::from_parts(1_764_000_000_000, n),
            filename: format!("f{n}"),
            mime_type: mime_type.to_owned(),
            size_bytes: stored.size,
            created_at: now(),
            expires_at: None,
            downloadable: false,
            scope: None,
            blob: stored.blob,
            digest: stored.digest,
        };
        files::insert(store, tenant, &file).unwrap();
        file.id.to_string()
    }

    fn image(file_id: &str) -> Value {
        json!({"type": "image", "source": {"type": "file", "file_id": file_id}})
    }

    fn document(file_id: &str) -> Value {
        json!({"type": "document", "title": "t", "source": {"type": "file", "file_id": file_id}})
    }

    #[test]
    fn file_sources_become_contents_or_say_why_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("data"), &SledOptions::default()).unwrap();
        let ours = Tenant { workspace: WorkspaceId::from_parts(1, 1) };
        let theirs = Tenant { workspace: WorkspaceId::from_parts(1, 2) };
        // A PNG's signature and header (1 x 1): an image's bytes are checked.
        let dot = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";
        let png = upload(&store, &ours, 1, "image/png", dot);
        let pdf = upload(&store, &ours, 2, "application/pdf", b"%PDF-1.7 fake");
        let text = upload(&store, &ours, 3, "text/markdown", "# notes é".as_bytes());
        let zip = upload(&store, &ours, 4, "application/zip", b"PK");
        let other = upload(&store, &theirs, 5, "text/plain", b"their secret");
        let not_pdf = upload(&store, &ours, 6, "application/pdf", b"<html>a page</html>");
        let mut messages = vec![
            json!({"role": "user", "content": [
                {"type": "text", "text": "look"}, image(&png), document(&pdf), document(&text),
                document(&zip), document(&other), image("file_011CNha8iCJcU1wXNR6q4V8w"), document(&not_pdf),
            ]}),
            // A custom tool's result holds blocks of its own.
            json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [image(&png)]}]}),
        ];
        assert!(has_file_sources(&messages));
        inline_files(&store, &ours, now(), &mut messages).unwrap();
        assert!(!has_file_sources(&messages), "{messages:?}");
        let blocks = messages[0]["content"].as_array().unwrap();
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        assert_eq!(blocks[0], json!({"type": "text", "text": "look"}));
        assert_eq!(blocks[1]["source"], json!({"type": "base64", "media_type": "image/png", "data": b64(dot)}));
        assert_eq!(blocks[2]["source"]["data"], b64(b"%PDF-1.7 fake"));
        assert_eq!(blocks[2]["title"], "t", "the block's other fields stay");
        assert_eq!(blocks[3]["source"], json!({"type": "text", "media_type": "text/plain", "data": "# notes é"}));
        for (idx, why) in [
            (4, "cannot read a file of type application/zip"),
            (5, "no longer available"),
            (6, "no longer available"),
            (7, "not a PDF"),
        ] {
            assert_eq!(blocks[idx]["type"], "text", "{idx}: {}", blocks[idx]);
            assert!(blocks[idx]["text"].as_str().unwrap().contains(why), "{idx}: {}", blocks[idx]);
        }
        assert!(!blocks[5].to_string().contains("their secret"), "another workspace's file is never read");
        assert_eq!(messages[1]["content"][0]["content"][0]["source"]["type"], "base64");
    }

    /// The request budget is in raw bytes (24 MiB), but images and PDFs are
    /// sent base64, a third larger: files that fit the budget make a request
    /// of more than 32 MiB, over the Messages API's 32 MB request limit. The
    /// blocks stay in the context, so every later call of the session is
    /// refused the same way (and an image over the API's 5 MB per-image
    /// limit likewise), which the module says one bad block must not do.
    #[test]
    fn inlined_files_keep_the_request_under_the_messages_api_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("data"), &SledOptions::default()).unwrap();
        let tenant = Tenant { workspace: WorkspaceId::from_parts(1, 1) };
        let big = vec![b'x'; usize::try_from(MAX_INLINE_FILE_BYTES).unwrap()];
        let first = upload(&store, &tenant, 1, "image/png", &big);
        let rest = usize::try_from(MAX_INLINE_REQUEST_BYTES - MAX_INLINE_FILE_BYTES).unwrap();
        let second = upload(&store, &tenant, 2, "application/pdf", &big[..rest]);
        let mut messages = vec![json!({"role": "user", "content": [image(&first), document(&second)]})];
        inline_files(&store, &tenant, now(), &mut messages).unwrap();
        let request_bytes = serde_json::to_vec(&messages).unwrap().len();
        assert!(request_bytes <= 32 * 1024 * 1024, "the inlined messages alone are {request_bytes} bytes");
    }

    /// `inline_in` walks every value of every message, so an object shaped
    /// like a file-sourced block inside the assistant's `tool_use.input`
    /// (arbitrary JSON the model wrote, e.g. a custom tool that takes file
    /// references) is rewritten too: the history the model is sent claims it
    /// wrote the file's whole contents (or a note) as the tool's input.
    /// Only content blocks (message content, tool_result content) hold
    /// sources to resolve.
    #[test]
    fn a_tool_use_input_naming_a_file_is_sent_as_the_model_wrote_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("data"), &SledOptions::default()).unwrap();
        let tenant = Tenant { workspace: WorkspaceId::from_parts(1, 1) };
        let png = upload(
            &store,
            &tenant,
            1,
            "image/png",
            b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89",
        );
        let input = json!({"attachment": image(&png), "missing": document("file_011CNha8iCJcU1wXNR6q4V8w")});
        let mut messages = vec![
            json!({"role": "user", "content": [{"type": "text", "text": "attach it"}]}),
            json!({"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "attach", "input": input.clone()},
            ]}),
        ];
        inline_files(&store, &tenant, now(), &mut messages).unwrap();
        assert_eq!(messages[1]["content"][0]["input"], input, "the model's tool input was rewritten");
    }

    #[test]
    fn files_past_the_request_budget_are_left_out_with_a_note() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("data"), &SledOptions::default()).unwrap();
        let tenant = Tenant { workspace: WorkspaceId::from_parts(1, 1) };
        // Room for the source's JSON around the text.
        let big = vec![b'x'; usize::try_from(MAX_INLINE_FILE_BYTES).unwrap() - 1024];
        let first = upload(&store, &tenant, 1, "text/plain", &big);
        let second = upload(&store, &tenant, 2, "text/plain", &big[..big.len() / 2]);
        let mut messages = vec![json!({"role": "user", "content": [document(&second), document(&first)]})];
        inline_files(&store, &tenant, now(), &mut messages).unwrap();
        assert_eq!(messages[0]["content"][1]["source"]["type"], "text", "the newest block goes first");
        let left_out = &messages[0]["content"][0];
        assert_eq!(left_out["type"], "text");
        assert!(left_out["text"].as_str().unwrap().contains("left out"), "{left_out}");
    }

    /// The request budget is spent oldest block first, so once older turns'
    /// files use it up, the file the user has just sent (the newest user
    /// turn, the one the model is asked about) is the one left out, on this
    /// call and on every later one, while files the model has already
    /// answered about are sent again in full. The newest turn's files should
    /// be budgeted first (walk the messages newest first).
    #[test]
    fn the_newest_turns_file_is_inlined_before_older_turns_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("data"), &SledOptions::default()).unwrap();
        let tenant = Tenant { workspace: WorkspaceId::from_parts(1, 1) };
        let size = usize::try_from(MAX_INLINE_REQUEST_BYTES).unwrap() / 2 + 1024;
        let old = upload(&store, &tenant, 1, "text/plain", &vec![b'o'; size]);
        let new = upload(&store, &tenant, 2, "text/plain", &vec![b'n'; size]);
        let mut messages = vec![
            json!({"role": "user", "content": [{"type": "text", "text": "read this"}, document(&old)]}),
            json!({"role": "assistant", "content": [{"type": "text", "text": "done"}]}),
            json!({"role": "user", "content": [{"type": "text", "text": "now this one"}, document(&new)]}),
        ];
        inline_files(&store, &tenant, now(), &mut messages).unwrap();
        let newest = &messages[2]["content"][1];
        assert_eq!(
            newest["type"],
            "document",
            "the file just sent was left out: {}",
            newest.to_string().chars().take(300).collect::<String>()
        );
    }

    /// Defect (review, tools): an uploaded file is inlined as an image with
    /// the media type its upload declared, whatever its bytes are. A photo
    /// saved as `photo.png` that is really a JPEG (common), or a text file
    /// uploaded as `image/png`, becomes an image block the Messages API
    /// refuses ("Image does not match the provided media type"); the block
    /// stays in the context, so every later call of the session is refused,
    /// which the module says one bad block must not do. The read tool
    /// already checks the bytes (`tools/files/read.rs`). Method: a JPEG and
    /// a text declared `image/png`; no inlined image may claim a media type
    /// its bytes do not have (a corrected type or a note are both fine).
    #[test]
    fn an_image_file_whose_bytes_are_not_its_declared_type_is_not_sent_as_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("data"), &SledOptions::default()).unwrap();
        let tenant = Tenant { workspace: WorkspaceId::from_parts(1, 1) };
        let mut jpeg = vec![0xff, 0xd8, 0xff, 0xe0, 0x00, 0x04, 0x00, 0x00];
        jpeg.extend_from_slice(&[0xff, 0xc0, 0x00, 0x11, 0x08, 0x00, 0x0a, 0x00, 0x0a]);
        let photo = upload(&store, &tenant, 1, "image/png", &jpeg);
        let notes = upload(&store, &tenant, 2, "image/png", b"these are my notes, not an image");
        let mut messages = vec![json!({"role": "user", "content": [image(&photo), image(&notes)]})];
        inline_files(&store, &tenant, now(), &mut messages).unwrap();
        let signature =
            |bytes: &[u8]| crate::tools::image::MediaType::of(bytes).map(crate::tools::image::MediaType::as_str);
        let mut mislabelled = Vec::new();
        for block in messages[0]["content"].as_array().unwrap() {
            if block["type"] != "image" || block["source"]["type"] != "base64" {
                continue;
            }
            let declared = block["source"]["media_type"].as_str().unwrap_or_default().to_owned();
            let data = block["source"]["data"].as_str().unwrap_or_default();
            let bytes = base64::engine::general_purpose::STANDARD.decode(data).unwrap_or_default();
            let actual = signature(&bytes);
            if actual != Some(declared.as_str()) {
                mislabelled.push((declared, actual));
            }
        }
        assert!(
            mislabelled.is_empty(),
            "image blocks whose bytes are not their media type are sent to the model (declared, actual): \
             {mislabelled:?}"
        );
    }

    /// Defect (review, tools): an uploaded image is inlined whatever its
    /// dimensions. The Messages API rejects an image over 8,000 pixels on a
    /// side, and the block is inlined again on every later call of the
    /// session, so all of them are refused; the module says one bad block
    /// must not do that, and MCP images are checked for exactly this
    /// (`mcp::tools::image`). Method: a PNG header of 9,000 x 10 pixels
    /// uploaded as `image/png`; it must become a note, not an image block.
    #[test]
    fn an_image_file_over_the_messages_api_dimensions_is_not_inlined() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("data"), &SledOptions::default()).unwrap();
        let tenant = Tenant { workspace: WorkspaceId::from_parts(1, 1) };
        let mut png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
        png.extend_from_slice(&9_000u32.to_be_bytes());
        png.extend_from_slice(&10u32.to_be_bytes());
        png.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
        let banner = upload(&store, &tenant, 1, "image/png", &png);
        let mut messages = vec![json!({"role": "user", "content": [image(&banner)]})];
        inline_files(&store, &tenant, now(), &mut messages).unwrap();
        let block = &messages[0]["content"][0];
        assert_ne!(block["type"], "image", "a 9000-pixel-wide image is sent to the model: {block}");
    }
}
