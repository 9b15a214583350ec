//! `glob {pattern, path?}`: the files whose path below the search directory
//! matches a doublestar pattern, most recently modified first.
//!
//! Matching is globset's with `literal_separator(true)`, so `*` stays inside
//! one component and only `**` crosses directories. The search directory is
//! `path`, or the working directory; an absolute pattern names its own
//! directory (`/mnt/session/outputs/**/*.md`), which must be inside a root.
//! `..` is refused in patterns (a pattern only ever looks down). Directories
//! are not listed; symbolic links are listed but never followed. What the walk
//! skips is [`walk`]'s decision.

use std::ffi::CStr;

use globset::{GlobBuilder, GlobMatcher};
use serde::Deserialize;
use serde_json::Value;

use super::confined;
use super::walk::{self, Flow, Visit};
use super::{Roots, Target, parse_input, text};
use crate::runner::ToolOutcome;

/// Most paths returned (the SDK's cap); the newest come first.
pub(crate) const MAX_GLOB_RESULTS: usize = 200;

/// A matching path below the search directory and its modification time
/// (seconds, nanoseconds).
type Match = ((i64, u32), String);

#[derive(Debug, Deserialize)]
struct Input {
    pattern: String,
    #[serde(default)]
    path: Option<String>,
}

pub(crate) fn glob(roots: &Roots, input: &Value) -> ToolOutcome {
    let input: Input = match parse_input("glob", input) {
        Ok(input) => input,
        Err(outcome) => return outcome,
    };
    match run(roots, &input) {
        Ok(outcome) => outcome,
        Err(reason) => ToolOutcome::error(format!("glob: {reason}")),
    }
}

fn run(roots: &Roots, input: &Input) -> Result<ToolOutcome, String> {
    if input.pattern.is_empty() {
        return Err("the pattern is empty".to_owned());
    }
    if input.pattern.split('/').any(|part| part == "..") {
        return Err("'..' is not permitted in the pattern".to_owned());
    }
    let path = input.path.as_deref().filter(|path| !path.is_empty());
    let (base, pattern) = match (input.pattern.starts_with('/'), path) {
        (true, Some(_)) => return Err("give either an absolute pattern or a path, not both".to_owned()),
        (true, None) => {
            let (dir, pattern) = split_literal_prefix(&input.pattern);
            if pattern.is_empty() {
                return Err(format!("the pattern {} has no wildcard; use read for one file", input.pattern));
            }
            (roots.resolve(&dir).map_err(|reason| format!("{}: {reason}", input.pattern))?, pattern)
        }
        (false, Some(path)) => {
            (roots.resolve(path).map_err(|reason| format!("{path}: {reason}"))?, input.pattern.clone())
        }
        (false, None) => (roots.workspace()?, input.pattern.clone()),
    };
    let matcher = GlobBuilder::new(&pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|err| format!("invalid pattern: {err}"))?
        .compile_matcher();
    let start =
        base.dir.open_dir(&base.rel).map_err(|err| format!("{}: {err}", roots.display(base.root, &base.rel)))?;
    let (mut matches, summary) = collect(&start, roots.walk_limit, &matcher);
    let n_matches = matches.len();
    matches.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let mut out: Vec<String> =
        matches.into_iter().take(MAX_GLOB_RESULTS).map(|(_, rel)| display(roots, &base, &rel)).collect();
    if out.is_empty() {
        out.push("no matches".to_owned());
    }
    if n_matches > MAX_GLOB_RESULTS {
        out.push(format!(
            "[showing the {MAX_GLOB_RESULTS} most recently modified of {n_matches} matches; narrow the pattern]"
        ));
    }
    if summary.capped {
        out.push(format!(
            "[the search stopped after {} entries, so matches may be missing; narrow the pattern or give a path]",
            roots.walk_limit
        ));
    }
    Ok(text(out.join("\n")))
}

/// Every match below `start` with its modification time.
fn collect(start: &std::os::fd::OwnedFd, walk_limit: usize, matcher: &GlobMatcher) -> (Vec<Match>, walk::Summary) {
    let mut matches = Vec::new();
    let summary = walk::walk(start, walk_limit, &mut |visit: &Visit<'_>| {
        if matcher.is_match(visit.rel) {
            matches.push((mtime(visit.dir, visit.name), visit.rel.to_owned()));
        }
        Flow::Continue
    });
    (matches, summary)
}

fn mtime(dir: std::os::fd::BorrowedFd<'_>, name: &CStr) -> (i64, u32) {
    match confined::stat_child(dir, name) {
        Ok(stat) => (stat.st_mtime, stat.st_mtime_nsec as u32),
        Err(_) => (0, 0),
    }
}

fn display(roots: &Roots, base: &Target, rel: &str) -> String {
    let full = if base.rel.is_empty() { rel.to_owned() } else { format!("{}/{rel}", base.rel) };
    roots.display(base.root, &full)
}

/// Splits an absolute pattern into its leading directory without wildcards
/// and the pattern below it.
fn split_literal_prefix(pattern: &str) -> (String, String) {
    let parts: Vec<&str> = pattern.split('/').collect();
    let first_glob = parts.iter().position(|part| part.contains(['*', '?', '[', '{', '\\'])).unwrap_or(parts.len());
    let dir = parts[..first_glob].join("/");
    let rest = parts[first_glob..].join("/");
    (if dir.is_empty() { "/".to_owned() } else { dir }, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_absolute_patterns() {
        assert_eq!(split_literal_prefix("/workspace/src/**/*.rs"), ("/workspace/src".to_owned(), "**/*.rs".to_owned()));
        assert_eq!(split_literal_prefix("/mnt/session/outputs/*"), ("/mnt/session/outputs".to_owned(), "*".to_owned()));
        assert_eq!(split_literal_prefix("/*"), ("/".to_owned(), "*".to_owned()));
        assert_eq!(split_literal_prefix("/workspace/a.txt"), ("/workspace/a.txt".to_owned(), String::new()));
    }
}
