//! Strategies for content blocks and their sources.

use proptest::option;
use proptest::prelude::*;

use super::text;
use crate::event::{ContentBlock, DocumentSource, ImageSource, SearchResultCitations, SearchResultContent};

/// Any content block.
pub fn content_block() -> impl Strategy<Value = ContentBlock> {
    let search_result = (text(), text(), prop::collection::vec(text(), 0..3), any::<bool>()).prop_map(
        |(source, title, texts, enabled)| ContentBlock::SearchResult {
            source,
            title,
            content: texts.into_iter().map(|text| SearchResultContent::Text { text }).collect(),
            citations: SearchResultCitations { enabled },
        },
    );
    prop_oneof![
        text().prop_map(|text| ContentBlock::Text { text }),
        image_source().prop_map(|source| ContentBlock::Image { source }),
        (document_source(), option::of(text()), option::of(text()))
            .prop_map(|(source, title, context)| ContentBlock::Document { source, title, context }),
        search_result,
        Just(ContentBlock::Redacted),
    ]
}

/// Up to three content blocks.
pub fn content_list() -> impl Strategy<Value = Vec<ContentBlock>> {
    prop::collection::vec(content_block(), 0..3)
}

pub fn image_source() -> impl Strategy<Value = ImageSource> {
    prop_oneof![
        (text(), text()).prop_map(|(media_type, data)| ImageSource::Base64 { media_type, data }),
        text().prop_map(|url| ImageSource::Url { url }),
        text().prop_map(|file_id| ImageSource::File { file_id }),
    ]
}

pub fn document_source() -> impl Strategy<Value = DocumentSource> {
    prop_oneof![
        (text(), text()).prop_map(|(media_type, data)| DocumentSource::Base64 { media_type, data }),
        (text(), text()).prop_map(|(media_type, data)| DocumentSource::Text { media_type, data }),
        text().prop_map(|url| DocumentSource::Url { url }),
        text().prop_map(|file_id| DocumentSource::File { file_id }),
    ]
}
