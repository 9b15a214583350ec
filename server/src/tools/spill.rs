//! Large outputs: a text block over [`MAX_INLINE_CHARS`] is saved whole to a
//! file in the workspace and replaced by its head, its tail and the file's
//! path, so the model can page through the rest with read or grep.
//!
//! The file is `/workspace/.logbook/tool-outputs/<blake3 of the text>.txt`:
//! named by content, so the same output is saved once and nothing depends on
//! a clock or a random number. It is written like the write tool writes
//! (confined, owned by the sandbox's user). If saving fails the model still
//! gets the preview, with a note saying the rest was lost.

use logbook_core::event::ContentBlock;

use super::files::Roots;
use crate::runner::ToolOutcome;

/// Largest text block put in the context as it is (the platform's MCP and
/// tool output rule).
pub const MAX_INLINE_CHARS: usize = 100_000;
/// Characters of the beginning and of the end kept in the preview.
pub const PREVIEW_HEAD_CHARS: usize = 6_000;
pub const PREVIEW_TAIL_CHARS: usize = 2_000;
/// Where saved outputs go, below the workspace.
pub const SPILL_DIR: &str = ".logbook/tool-outputs";

/// Replaces every text block of `outcome` over the limit by a preview.
pub(crate) fn spill_large_outputs(roots: &Roots, mut outcome: ToolOutcome) -> ToolOutcome {
    for block in &mut outcome.content {
        let ContentBlock::Text { text } = block else { continue };
        let n_chars = text.chars().count();
        if n_chars <= MAX_INLINE_CHARS {
            continue;
        }
        let saved = save(roots, text);
        *text = preview(text, n_chars, saved);
    }
    outcome
}

/// Replaces every text block of `outcome` over the limit by a preview without
/// saving it (`reason` says why it could not be saved, e.g. the workspace is
/// on a self-hosted worker).
pub fn preview_large_outputs(mut outcome: ToolOutcome, reason: &str) -> ToolOutcome {
    for block in &mut outcome.content {
        let ContentBlock::Text { text } = block else { continue };
        let n_chars = text.chars().count();
        if n_chars > MAX_INLINE_CHARS {
            *text = preview(text, n_chars, Err(reason.to_owned()));
        }
    }
    outcome
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
             whole in {path}: read it with view_range, or search it with grep. Its first {PREVIEW_HEAD_CHARS} and \
             last {PREVIEW_TAIL_CHARS} characters follow.]"
        ),
        Err(reason) => format!(
            "[This output is {n_chars} characters, more than the {MAX_INLINE_CHARS} shown in full, and saving it \
             failed ({reason}); only its first {PREVIEW_HEAD_CHARS} and last {PREVIEW_TAIL_CHARS} characters \
             follow.]"
        ),
    };
    format!("{note}\n{head}\n[... {omitted} characters omitted ...]\n{tail}")
}
