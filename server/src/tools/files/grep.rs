//! `grep {pattern, path?}`: the lines matching a regular expression, as
//! `path:line:text`, in the working directory, a directory or one file.
//!
//! ripgrep's engine (grep-regex, grep-searcher) with its regex syntax. Files
//! are opened one by one through their directory's descriptor
//! ([`confined::open_child_file`]), never by path; symbolic links are not
//! followed; files with a NUL byte are binary and skipped, as ripgrep does;
//! the files [`walk`] skips are skipped. Output stops at
//! [`MAX_GREP_OUTPUT_BYTES`] with a note, and each line is cut at
//! [`MAX_LINE_CHARS`].

use std::fs::File;
use std::io;

use grep_regex::{RegexMatcher, RegexMatcherBuilder};
use grep_searcher::sinks::Lossy;
use grep_searcher::{BinaryDetection, MmapChoice, Searcher, SearcherBuilder};
use rustix::fs::{FileType, OFlags};
use serde::Deserialize;
use serde_json::Value;

use super::confined::{self, FileError};
use super::walk::{self, EntryKind, Flow, Visit};
use super::{Roots, parse_input, text};
use crate::runner::ToolOutcome;

/// Most output returned (the SDK's cap); the rest is cut with a note.
pub(crate) const MAX_GREP_OUTPUT_BYTES: usize = 100 * 1024;
/// Longest line shown (the SDK's line cap); longer lines are cut.
pub(crate) const MAX_LINE_CHARS: usize = 2_000;
/// Bounds on the compiled regex: the pattern comes from the model.
const REGEX_SIZE_LIMIT: usize = 10 * 1024 * 1024;
const REGEX_DFA_SIZE_LIMIT: usize = 10 * 1024 * 1024;
/// Largest line buffer the searcher grows to; a longer line ends that file's search.
const SEARCH_HEAP_LIMIT: usize = 16 * 1024 * 1024;

#[derive(Debug, Deserialize)]
struct Input {
    pattern: String,
    #[serde(default)]
    path: Option<String>,
}

pub(crate) fn grep(roots: &Roots, input: &Value) -> ToolOutcome {
    let input: Input = match parse_input("grep", input) {
        Ok(input) => input,
        Err(outcome) => return outcome,
    };
    match run(roots, &input) {
        Ok(outcome) => outcome,
        Err(reason) => ToolOutcome::error(format!("grep: {reason}")),
    }
}

fn run(roots: &Roots, input: &Input) -> Result<ToolOutcome, String> {
    let matcher = RegexMatcherBuilder::new()
        .line_terminator(Some(b'\n'))
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
        .build(&input.pattern)
        .map_err(|err| format!("invalid regex: {err}"))?;
    let mut searcher = SearcherBuilder::new()
        .binary_detection(BinaryDetection::quit(b'\0'))
        .line_number(true)
        .memory_map(MmapChoice::never())
        .heap_limit(Some(SEARCH_HEAP_LIMIT))
        .build();
    let path = input.path.as_deref().filter(|path| !path.is_empty());
    let target = match path {
        Some(path) => roots.resolve(path).map_err(|reason| format!("{path}: {reason}"))?,
        None => roots.workspace()?,
    };
    let shown = roots.display(target.root, &target.rel);
    let (fd, stat) = target.dir.open(&target.rel, OFlags::RDONLY).map_err(|err| format!("{shown}: {err}"))?;
    let mut output = Output::default();
    let mut summary = walk::Summary::default();
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::Directory => {
            let prefix = target.rel.clone();
            summary = walk::walk(&fd, roots.walk_limit, &mut |visit: &Visit<'_>| {
                if visit.kind != EntryKind::File {
                    return Flow::Continue;
                }
                let rel = if prefix.is_empty() { visit.rel.to_owned() } else { format!("{prefix}/{}", visit.rel) };
                let shown = roots.display(target.root, &rel);
                match confined::open_child_file(visit.dir, visit.name) {
                    Ok((file, _)) => output.search(&mut searcher, &matcher, &file, &shown),
                    Err(FileError::HardLinked { .. }) => {
                        output.n_hard_linked += 1;
                        Flow::Continue
                    }
                    // Replaced or removed since it was listed.
                    Err(_) => Flow::Continue,
                }
            });
        }
        FileType::RegularFile => {
            drop(fd);
            let (file, _) = target.dir.open_file(&target.rel).map_err(|err| format!("{shown}: {err}"))?;
            output.search(&mut searcher, &matcher, &file, &shown);
        }
        FileType::Symlink
        | FileType::Fifo
        | FileType::Socket
        | FileType::CharacterDevice
        | FileType::BlockDevice
        | FileType::Unknown => {
            return Err(format!("{shown}: not a regular file or directory (it is a {})", confined::kind_name(&stat)));
        }
    }
    Ok(text(output.finish(summary, roots.walk_limit)))
}

/// The lines found so far, within the output cap.
#[derive(Debug, Default)]
struct Output {
    text: String,
    truncated: bool,
    n_hard_linked: usize,
    n_failed: usize,
}

impl Output {
    fn search(&mut self, searcher: &mut Searcher, matcher: &RegexMatcher, file: &File, shown: &str) -> Flow {
        let result = searcher.search_file(
            matcher,
            file,
            Lossy(|line_no, line| {
                let line = line.trim_end_matches(['\n', '\r']);
                let line = match line.char_indices().nth(MAX_LINE_CHARS) {
                    Some((cut, _)) => format!("{}… [line cut at {MAX_LINE_CHARS} characters]", &line[..cut]),
                    None => line.to_owned(),
                };
                let entry = format!("{shown}:{line_no}:{line}\n");
                if self.text.len() + entry.len() > MAX_GREP_OUTPUT_BYTES {
                    self.truncated = true;
                    return Ok(false);
                }
                self.text.push_str(&entry);
                Ok::<bool, io::Error>(true)
            }),
        );
        // A file that fails mid-search (a line over the heap limit, an IO
        // error) keeps what it matched; the search goes on with the next one.
        if result.is_err() {
            self.n_failed += 1;
        }
        if self.truncated { Flow::Stop } else { Flow::Continue }
    }

    fn finish(mut self, summary: walk::Summary, walk_limit: usize) -> String {
        if self.text.is_empty() {
            self.text.push_str("no matches\n");
        }
        if self.truncated {
            self.text.push_str(&format!(
                "[output truncated at {MAX_GREP_OUTPUT_BYTES} bytes; narrow the pattern or the path]\n"
            ));
        }
        if self.n_hard_linked > 0 {
            self.text.push_str(&format!(
                "[{} files with more than one hard link were not searched; use bash for them]\n",
                self.n_hard_linked
            ));
        }
        if self.n_failed > 0 {
            self.text.push_str(&format!(
                "[{} files could not be searched to the end (a line longer than {SEARCH_HEAP_LIMIT} bytes, or a \
                 read error)]\n",
                self.n_failed
            ));
        }
        if summary.capped {
            self.text.push_str(&format!(
                "[the search stopped after {walk_limit} entries, so matches may be missing; give a narrower path]\n"
            ));
        }
        self.text.trim_end_matches('\n').to_owned()
    }
}
