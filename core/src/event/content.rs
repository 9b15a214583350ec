//! Content blocks (API reference §4.3): the pieces that messages and tool
//! results are made of.
//!
//! One general [`ContentBlock`] union serves every event that carries content.
//! The API narrows the allowed block types per event (documented on each event
//! field); this module does not enforce those narrowings, the server does when it
//! accepts input. Block payloads (base64 data, URLs) are stored as the client sent
//! them: nothing here decodes, fetches or validates media.

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

/// One block of message or tool-result content, tagged by `type`.
///
/// # Important
/// The variant order is the canonical (bincode) encoding: variants may only be
/// appended, never reordered or removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock {
    /// `{type:"text", text}`.
    Text { text: String },
    /// `{type:"image", source}`.
    Image { source: ImageSource },
    /// `{type:"document", source, title?, context?}`.
    Document {
        source: DocumentSource,
        #[serde(default)]
        title: Option<String>,
        #[serde(default)]
        context: Option<String>,
    },
    /// `{type:"search_result", source, title, content, citations}`; tool results
    /// only. `source` is the URL the result came from.
    SearchResult { source: String, title: String, content: Vec<SearchResultContent>, citations: SearchResultCitations },
    /// `{type:"redacted"}`: content withheld by policy.
    Redacted,
}

/// Where an image block's bytes come from.
///
/// # Important
/// Variant order is the canonical encoding: append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ImageSource {
    /// Inline bytes; `media_type` is one of `image/png`, `image/jpeg`,
    /// `image/gif`, `image/webp`.
    Base64 { media_type: String, data: String },
    /// An image the server fetches.
    Url { url: String },
    /// A file of the Files API. Kept as a string: file ids may come from other
    /// systems and need not carry our `file_` prefix.
    File { file_id: String },
}

/// Where a document block's content comes from.
///
/// # Important
/// Variant order is the canonical encoding: append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DocumentSource {
    /// Inline bytes, e.g. `application/pdf`.
    Base64 { media_type: String, data: String },
    /// Inline plain text; `media_type` is `text/plain`.
    Text { media_type: String, data: String },
    /// A document the server fetches.
    Url { url: String },
    /// A file of the Files API (see [`ImageSource::File`] for why a string).
    File { file_id: String },
}

/// One block inside a search result's `content`: the API allows text only.
///
/// # Important
/// Variant order is the canonical encoding: append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SearchResultContent {
    /// `{type:"text", text}`.
    Text { text: String },
}

/// Citation settings of a search result block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct SearchResultCitations {
    pub enabled: bool,
}

impl ContentBlock {
    /// A text block.
    pub fn text(text: impl Into<String>) -> Self {
        ContentBlock::Text { text: text.into() }
    }
}
