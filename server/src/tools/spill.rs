//! Large outputs: an output whose text blocks come to over
//! [`MAX_INLINE_CHARS`] characters together is saved whole to a file in the
//! workspace and its text replaced by one block: its head, its tail and the
//! file's path, so the model can page through the rest with read or grep.
//! The limit is on the output, not on each block: an MCP result of many
//! blocks each under it would otherwise fill the context all the same.
//!
//! The file is `/workspace/.logbook/tool-outputs/<blake3 of its text>.txt`:
//! named by content, so the same output is saved once and nothing depends on
//! a clock or a random number. It is written like the write tool writes
//! (confined, owned by the sandbox's user). The text blocks are joined with a
//! line break, and lines over [`SAVED_LINE_CHARS`] are broken into lines of
//! that many characters (the preview says so): read's view_range refuses a
//! line over its 256 KiB and grep cuts lines at that length, so an unbroken
//! line (minified JSON, a page of text) could not be read back as the
//! preview says. If saving fails the model still gets the preview, with a
//! note saying the rest was lost.

use logbook_core::event::ContentBlock;

use super::files::Roots;
use crate::runner::ToolOutcome;

/// Most characters of an output's text put in the context as they are (the
/// platform's MCP and tool output rule).
pub const MAX_INLINE_CHARS: usize = 100_000;
/// Characters of the beginning and of the end kept in the preview.
pub const PREVIEW_HEAD_CHARS: usize = 6_000;
pub const PREVIEW_TAIL_CHARS: usize = 2_000;
/// Where saved outputs go, below the workspace.
pub const SPILL_DIR: &str = ".logbook/tool-outputs";
/// Longest line in a saved output: grep's own cut, so a match shows its
/// whole line, and far below what view_range returns.
pub const SAVED_LINE_CHARS: usize = super::files::MAX_LINE_CHARS;

/// The number of characters of `outcome`'s text blocks together, when it is
/// over [`MAX_INLINE_CHARS`] (a cheap byte-length bound first: a character
/// is at least one byte).
pub(crate) fn oversized_text_chars(outcome: &ToolOutcome) -> Option<usize> {
    let texts = || outcome.content.iter().filter_map(text_of);
    if texts().map(str::len).sum::<usize>() <= MAX_INLINE_CHARS {
        return None;
    }
    Some(texts().map(|text| text.chars().count()).sum::<usize>()).filter(|n_chars| *n_chars > MAX_INLINE_CHARS)
}

/// Replaces the text of `outcome`, when over the limit, by a preview, saving
/// it to the workspace.
pub(crate) fn spill_large_outputs(roots: &Roots, outcome: ToolOutcome) -> ToolOutcome {
    if oversized_text_chars(&outcome).is_none() {
        return outcome;
    }
    let text = joined_text(&outcome);
    let n_chars = text.chars().count();
    let saved = save(roots, &wrap_long_lines(&text, SAVED_LINE_CHARS));
    with_preview(outcome, preview(&text, n_chars, saved))
}

/// Replaces the text of `outcome`, when over the limit, by a preview without
/// saving it (`reason` says why it could not be saved, e.g. the workspace is
/// on a self-hosted worker).
pub fn preview_large_outputs(outcome: ToolOutcome, reason: &str) -> ToolOutcome {
    if oversized_text_chars(&outcome).is_none() {
        return outcome;
    }
    let text = joined_text(&outcome);
    let n_chars = text.chars().count();
    with_preview(outcome, preview(&text, n_chars, Err(reason.to_owned())))
}

fn text_of(block: &ContentBlock) -> Option<&str> {
    match block {
        ContentBlock::Text { text } => Some(text),
        ContentBlock::Image { .. }
        | ContentBlock::Document { .. }
        | ContentBlock::SearchResult { .. }
        | ContentBlock::Redacted => None,
    }
}

/// The text blocks of `outcome`, one after the other, a line break between.
fn joined_text(outcome: &ToolOutcome) -> String {
    outcome.content.iter().filter_map(text_of).collect::<Vec<_>>().join("\n")
}

/// `outcome` with its text blocks replaced by one, `preview`, where the
/// first was; its other blocks (images, documents) stay as they are.
fn with_preview(mut outcome: ToolOutcome, preview: String) -> ToolOutcome {
    let mut preview = Some(preview);
    outcome.content = outcome
        .content
        .into_iter()
        .filter_map(|block| match block {
            ContentBlock::Text { .. } => preview.take().map(|text| ContentBlock::Text { text }),
            ContentBlock::Image { .. }
            | ContentBlock::Document { .. }
            | ContentBlock::SearchResult { .. }
            | ContentBlock::Redacted => Some(block),
        })
        .collect();
    outcome
}

/// `text` with every line over `max_chars` characters broken into lines of
/// `max_chars` (the last one shorter).
fn wrap_long_lines(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / max_chars.max(1) + 1);
    for line in text.split_inclusive('\n') {
        let mut in_line = 0usize;
        for ch in line.chars() {
            if in_line == max_chars && ch != '\n' {
                out.push('\n');
                in_line = 0;
            }
            out.push(ch);
            in_line += 1;
        }
    }
    out
}

/// Saves `text` in the workspace; the sandbox path, or why it failed.
fn save(roots: &Roots, text: &str) -> Result<String, String> {
    let hash = blake3::hash(text.as_bytes()).to_hex();
    let rel = format!("{SPILL_DIR}/{}.txt", &hash.as_str()[..32]);
    let workspace = roots.workspace()?;
    workspace.dir.write_file(&rel, text.as_bytes()).map_err(|err| err.to_string())?;
    Ok(format!("{}/{rel}", workspace.dir.sandbox_path))
}

fn preview(text: &str, n_chars: usize, saved: Result<String, String>) -> String {
    let head_end = text.char_indices().nth(PREVIEW_HEAD_CHARS).map_or(text.len(), |(idx, _)| idx);
    let tail_start = text.char_indices().nth_back(PREVIEW_TAIL_CHARS - 1).map_or(0, |(idx, _)| idx).max(head_end);
    let head = &text[..head_end];
    let tail = &text[tail_start..];
    let omitted = n_chars.saturating_sub(PREVIEW_HEAD_CHARS + PREVIEW_TAIL_CHARS);
    let note = match saved {
        Ok(path) => format!(
            "[This output is {n_chars} characters, more than the {MAX_INLINE_CHARS} shown in full. It is saved \
             whole in {path} (lines over {SAVED_LINE_CHARS} characters broken into lines of that length): read it \
             with view_range, or search it with grep. Its first {PREVIEW_HEAD_CHARS} and last {PREVIEW_TAIL_CHARS} \
             characters follow.]"
        ),
        Err(reason) => format!(
            "[This output is {n_chars} characters, more than the {MAX_INLINE_CHARS} shown in full, and saving it \
             failed ({reason}); only its first {PREVIEW_HEAD_CHARS} and last {PREVIEW_TAIL_CHARS} characters \
             follow.]"
        ),
    };
    format!("{note}\n{head}\n[... {omitted} characters omitted ...]\n{tail}")
}
