//! The Messages API's limits on the images of one request, applied to a
//! conversation before it is sent.
//!
//! A request may hold at most [`MAX_IMAGES`] images, and one that holds more
//! than [`MANY_IMAGES`] may hold none over [`MANY_IMAGES_MAX_SIDE`] pixels on
//! a side. Every image a session saw stays in its log and is sent again with
//! every later request, so the first request past either limit, and every
//! one after it, would be refused: the session could never call the model
//! again. [`fit_images`] replaces the images past a limit with a text block
//! saying what was left out and why, oldest first, so the newest images
//! (what the model is most likely working on) stay:
//!
//! - past [`MAX_IMAGES`], the oldest images;
//! - then, while more than [`MANY_IMAGES`] remain, the oldest inline image
//!   whose header says it is over [`MANY_IMAGES_MAX_SIDE`] on a side.
//!   An image whose size is not known here (a URL the API fetches, a header
//!   this code cannot read) is sent as it is.
//!
//! Images sit in user messages' content and in their `tool_result` blocks'
//! content. Pure: the log is not touched, only what one request carries.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::tools::image;

/// The most images the Messages API takes in one request.
pub const MAX_IMAGES: usize = 100;

/// A request holding more images than this may hold none over
/// [`MANY_IMAGES_MAX_SIDE`] pixels on a side.
pub const MANY_IMAGES: usize = 20;

/// The longest side an image may have in a request of more than
/// [`MANY_IMAGES`] images.
pub const MANY_IMAGES_MAX_SIDE: u32 = 2_000;

/// How much of an inline image's base64 data is decoded to read its header:
/// 256 KiB of bytes, past a JPEG's largest metadata segments before its start
/// of frame in all but unusual files. Bounded so that a request's worth of
/// large images costs little to judge on every call.
const HEADER_BASE64_CHARS: usize = 256 * 1024 / 3 * 4;

/// Where an image block sits: the message, the block, and for an image
/// inside a `tool_result`, its place in that result's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Place {
    message: usize,
    block: usize,
    inner: Option<usize>,
}

/// Replaces the images of `messages` that would have the request refused
/// (see the module documentation); how many it replaced.
pub fn fit_images(messages: &mut [Value]) -> usize {
    let places = image_places(messages);
    let mut kept = places.len();
    let mut replaced = 0;
    for place in &places {
        if kept <= MAX_IMAGES {
            break;
        }
        let note = format!(
            "[An image was left out here: a request may hold at most {MAX_IMAGES} images, and this was one of the oldest.]"
        );
        if replace(messages, *place, note) {
            kept -= 1;
            replaced += 1;
        }
    }
    for place in places.iter().skip(replaced) {
        if kept <= MANY_IMAGES {
            break;
        }
        let Some((width, height)) = block_at(messages, *place).and_then(inline_dimensions) else { continue };
        if width.max(height) <= MANY_IMAGES_MAX_SIDE {
            continue;
        }
        let note = format!(
            "[An image of {width} x {height} pixels was left out here: a request holding more than {MANY_IMAGES} \
             images may hold none over {MANY_IMAGES_MAX_SIDE} pixels on a side.]"
        );
        if replace(messages, *place, note) {
            kept -= 1;
            replaced += 1;
        }
    }
    replaced
}

/// Every image block of `messages`, in the order the model reads them.
fn image_places(messages: &[Value]) -> Vec<Place> {
    let mut places = Vec::new();
    for (message, value) in messages.iter().enumerate() {
        let Some(blocks) = value.get("content").and_then(Value::as_array) else { continue };
        for (block, item) in blocks.iter().enumerate() {
            match item.get("type").and_then(Value::as_str) {
                Some("image") => places.push(Place { message, block, inner: None }),
                Some("tool_result") => {
                    let Some(inner_blocks) = item.get("content").and_then(Value::as_array) else { continue };
                    for (inner, inner_item) in inner_blocks.iter().enumerate() {
                        if inner_item.get("type").and_then(Value::as_str) == Some("image") {
                            places.push(Place { message, block, inner: Some(inner) });
                        }
                    }
                }
                Some(_) | None => {}
            }
        }
    }
    places
}

fn block_at(messages: &[Value], place: Place) -> Option<&Value> {
    let block = messages.get(place.message)?.get("content")?.get(place.block)?;
    match place.inner {
        Some(inner) => block.get("content")?.get(inner),
        None => Some(block),
    }
}

fn block_at_mut(messages: &mut [Value], place: Place) -> Option<&mut Value> {
    let block = messages.get_mut(place.message)?.get_mut("content")?.get_mut(place.block)?;
    match place.inner {
        Some(inner) => block.get_mut("content")?.get_mut(inner),
        None => Some(block),
    }
}

/// Puts a text block saying `note` where the image at `place` was.
fn replace(messages: &mut [Value], place: Place, note: String) -> bool {
    match block_at_mut(messages, place) {
        Some(block) => {
            *block = json!({"type": "text", "text": note});
            true
        }
        None => false,
    }
}

/// The width and height an inline (base64) image block's header gives.
fn inline_dimensions(block: &Value) -> Option<(u32, u32)> {
    let source = block.get("source")?;
    if source.get("type").and_then(Value::as_str) != Some("base64") {
        return None;
    }
    let data = source.get("data")?.as_str()?;
    let prefix = if data.len() <= HEADER_BASE64_CHARS {
        data
    } else {
        // A whole number of 4-character groups decodes without padding.
        data.get(..HEADER_BASE64_CHARS)?
    };
    let bytes = base64::engine::general_purpose::STANDARD.decode(prefix).ok()?;
    image::dimensions(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PNG header of `width` x `height` pixels, as an image block.
    fn png_block(width: u32, height: u32) -> Value {
        let mut png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
        png.extend_from_slice(&width.to_be_bytes());
        png.extend_from_slice(&height.to_be_bytes());
        png.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
        let data = base64::engine::general_purpose::STANDARD.encode(&png);
        json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}})
    }

    fn url_block() -> Value {
        json!({"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}})
    }

    /// One user message per image, each image the answer to a read.
    fn conversation(images: Vec<Value>) -> Vec<Value> {
        images
            .into_iter()
            .enumerate()
            .map(|(idx, image)| {
                json!({"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": format!("toolu_{idx}"), "content": [image]}
                ]})
            })
            .collect()
    }

    fn images_left(messages: &[Value]) -> usize {
        image_places(messages).len()
    }

    fn text_at(messages: &[Value], idx: usize) -> String {
        messages[idx]["content"][0]["content"][0]["text"].as_str().unwrap_or_default().to_owned()
    }

    #[test]
    fn twenty_large_images_are_all_sent() {
        let mut messages = conversation((0..MANY_IMAGES).map(|_| png_block(7_000, 3_000)).collect());
        let before = messages.clone();
        assert_eq!(fit_images(&mut messages), 0);
        assert_eq!(messages, before);
    }

    #[test]
    fn past_twenty_images_the_oldest_large_ones_give_way_until_twenty_remain() {
        // 25 images, the first 8 large: 5 of them must go, the oldest.
        let mut images: Vec<Value> = (0..8).map(|_| png_block(3_000, 2_001)).collect();
        images.extend((0..17).map(|_| png_block(2_000, 2_000)));
        let mut messages = conversation(images);
        assert_eq!(fit_images(&mut messages), 5);
        assert_eq!(images_left(&messages), MANY_IMAGES);
        for idx in 0..5 {
            let text = text_at(&messages, idx);
            assert!(text.contains("3000 x 2001 pixels") && text.contains("more than 20"), "{text}");
        }
        assert_eq!(messages[5]["content"][0]["content"][0]["type"], "image");
    }

    #[test]
    fn past_twenty_images_every_large_one_goes_when_the_rest_are_still_many() {
        let mut images: Vec<Value> = (0..30).map(|_| png_block(1_000, 800)).collect();
        images.insert(10, png_block(2_001, 10));
        images.push(png_block(10, 4_000));
        images.push(url_block());
        let mut messages = conversation(images);
        assert_eq!(fit_images(&mut messages), 2);
        assert_eq!(images_left(&messages), 31);
        assert!(text_at(&messages, 10).contains("2001 x 10"));
        assert!(text_at(&messages, 31).contains("10 x 4000"));
        // A URL's size is not known here: it is sent.
        assert_eq!(messages[32]["content"][0]["content"][0]["type"], "image");
    }

    #[test]
    fn past_a_hundred_images_the_oldest_give_way() {
        let mut messages = conversation((0..105).map(|_| png_block(100, 100)).collect());
        // Images in a user message's own content count too.
        messages.push(json!({"role": "user", "content": [png_block(100, 100), {"type": "text", "text": "and this"}]}));
        assert_eq!(fit_images(&mut messages), 6);
        assert_eq!(images_left(&messages), MAX_IMAGES);
        for idx in 0..6 {
            assert!(text_at(&messages, idx).contains("at most 100 images"), "{}", text_at(&messages, idx));
        }
        assert_eq!(messages[6]["content"][0]["content"][0]["type"], "image");
        assert_eq!(messages[105]["content"][0]["type"], "image");
    }

    #[test]
    fn data_that_does_not_decode_is_sent_as_it_is() {
        let mut images: Vec<Value> = (0..21).map(|_| png_block(5_000, 5_000)).collect();
        images[0]["source"]["data"] = json!("not base64!");
        let mut messages = conversation(images);
        // 20 of the 21 are judged large; removing the oldest judged one
        // (the second) leaves 20.
        assert_eq!(fit_images(&mut messages), 1);
        assert_eq!(messages[0]["content"][0]["content"][0]["type"], "image");
        assert!(text_at(&messages, 1).contains("5000 x 5000"));
    }
}
