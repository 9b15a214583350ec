//! `write {file_path, content}` (create or overwrite, with parent
//! directories) and `edit {file_path, old_string, new_string, replace_all?}`
//! (exact string replacement, unique unless `replace_all`). `edit` reads
//! and makes files of at most `MAX_TEXT_BYTES`: a larger result is refused
//! before it is built.

use std::io::{Read, Seek, SeekFrom, Write};

use serde::Deserialize;
use serde_json::Value;

use super::read::MAX_TEXT_BYTES;
use super::{Roots, parse_input, text};
use crate::runner::ToolOutcome;

#[derive(Debug, Deserialize)]
struct WriteInput {
    file_path: String,
    content: String,
}

#[derive(Debug, Deserialize)]
struct EditInput {
    file_path: String,
    old_string: String,
    new_string: String,
    #[serde(default)]
    replace_all: Option<bool>,
}

pub(crate) fn write(roots: &Roots, input: &Value) -> ToolOutcome {
    let input: WriteInput = match parse_input("write", input) {
        Ok(input) => input,
        Err(outcome) => return outcome,
    };
    let file_path = &input.file_path;
    let target = match roots.resolve(file_path) {
        Ok(target) => target,
        Err(reason) => return ToolOutcome::error(format!("write: {file_path}: {reason}")),
    };
    match target.dir.write_file(&target.rel, input.content.as_bytes()) {
        Ok(()) => text(format!("wrote {} bytes to {file_path}", input.content.len())),
        Err(err) => ToolOutcome::error(format!("write: {file_path}: {err}")),
    }
}

pub(crate) fn edit(roots: &Roots, input: &Value) -> ToolOutcome {
    let input: EditInput = match parse_input("edit", input) {
        Ok(input) => input,
        Err(outcome) => return outcome,
    };
    let file_path = &input.file_path;
    if input.old_string.is_empty() {
        return ToolOutcome::error("edit: old_string must not be empty (use write to create a file)");
    }
    if input.old_string == input.new_string {
        return ToolOutcome::error("edit: new_string is the same as old_string; there is nothing to change");
    }
    match edit_file(roots, &input) {
        Ok(outcome) => outcome,
        Err(reason) => ToolOutcome::error(format!("edit: {file_path}: {reason}")),
    }
}

fn edit_file(roots: &Roots, input: &EditInput) -> Result<ToolOutcome, String> {
    let file_path = &input.file_path;
    let target = roots.resolve(file_path)?;
    let (mut file, stat) = target.dir.open_file_rw(&target.rel).map_err(|err| err.to_string())?;
    let size = u64::try_from(stat.st_size).unwrap_or(0);
    if size > MAX_TEXT_BYTES {
        return Err(format!(
            "the file is {size} bytes, more than the {MAX_TEXT_BYTES}-byte limit; use bash (sed, awk) to edit a \
             large file"
        ));
    }
    let mut bytes = Vec::new();
    (&mut file).take(MAX_TEXT_BYTES + 1).read_to_end(&mut bytes).map_err(|err| err.to_string())?;
    if bytes.len() as u64 > MAX_TEXT_BYTES {
        return Err(format!("the file grew past the {MAX_TEXT_BYTES}-byte limit while it was read"));
    }
    let content = String::from_utf8(bytes).map_err(|_| "not valid UTF-8 text".to_owned())?;
    let count = content.matches(input.old_string.as_str()).count();
    if count == 0 {
        return Ok(ToolOutcome::error(format!("edit: old_string not found in {file_path}")));
    }
    let replace_all = input.replace_all.unwrap_or(false);
    if count > 1 && !replace_all {
        return Ok(ToolOutcome::error(format!(
            "edit: old_string appears {count} times in {file_path} (must be unique)"
        )));
    }
    let n_replaced = if replace_all { count } else { 1 };
    // Refused before anything is built: `replace_all` multiplies new_string by
    // the number of matches, in the server's memory and on the host's disk.
    let removed = (n_replaced as u64).saturating_mul(input.old_string.len() as u64);
    let added = (n_replaced as u64).saturating_mul(input.new_string.len() as u64);
    let result_size = (content.len() as u64).saturating_sub(removed).saturating_add(added);
    if result_size > MAX_TEXT_BYTES {
        return Ok(ToolOutcome::error(format!(
            "edit: the edited {file_path} would be {result_size} bytes ({n_replaced} replacement(s)), more than the \
             {MAX_TEXT_BYTES}-byte limit; the file is unchanged. Use bash (sed, awk) to make a large file"
        )));
    }
    let updated = if replace_all {
        content.replace(&input.old_string, &input.new_string)
    } else {
        content.replacen(&input.old_string, &input.new_string, 1)
    };
    file.seek(SeekFrom::Start(0)).map_err(|err| err.to_string())?;
    file.write_all(updated.as_bytes()).map_err(|err| err.to_string())?;
    file.set_len(updated.len() as u64).map_err(|err| err.to_string())?;
    Ok(text(format!("edited {file_path} ({n_replaced} replacement(s))")))
}
