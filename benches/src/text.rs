//! Realistic-looking text for the workload: prose, code, shell output, logs.
//!
//! Compression ratios (and so stored bytes, and whether a zstd dictionary pays)
//! depend on what the text looks like, so random bytes would not do. Each
//! generator mixes a fixed vocabulary (English words, keywords, commands: what
//! real agent transcripts repeat) with an open one (identifiers built from
//! random syllables, hex hashes, numbers, timestamps: what real transcripts do
//! not repeat), driven by a seeded RNG so that a seed always gives the same text.
//! The open part matters: a small closed vocabulary would fit entirely in a
//! 64 KiB dictionary and flatter it.

use std::fmt::Write as _;

use rand::RngExt;
use rand::rngs::StdRng;

const WORDS: &[&str] = &[
    "the",
    "a",
    "to",
    "of",
    "and",
    "in",
    "is",
    "it",
    "that",
    "for",
    "this",
    "with",
    "on",
    "as",
    "be",
    "not",
    "we",
    "can",
    "if",
    "but",
    "so",
    "now",
    "then",
    "when",
    "which",
    "there",
    "should",
    "would",
    "will",
    "also",
    "just",
    "into",
    "from",
    "by",
    "at",
    "all",
    "one",
    "only",
    "still",
    "instead",
    "because",
    "before",
    "after",
    "again",
    "test",
    "tests",
    "failing",
    "passes",
    "error",
    "errors",
    "warning",
    "file",
    "files",
    "function",
    "module",
    "crate",
    "build",
    "change",
    "changes",
    "fix",
    "fixed",
    "bug",
    "issue",
    "config",
    "value",
    "values",
    "type",
    "types",
    "field",
    "struct",
    "method",
    "call",
    "calls",
    "return",
    "returns",
    "input",
    "output",
    "path",
    "line",
    "lines",
    "log",
    "logs",
    "event",
    "events",
    "session",
    "store",
    "read",
    "write",
    "check",
    "run",
    "running",
    "look",
    "looks",
    "like",
    "seems",
    "need",
    "needs",
    "make",
    "makes",
    "use",
    "uses",
    "add",
    "remove",
    "update",
    "rename",
    "move",
    "handle",
    "handles",
    "case",
    "cases",
    "edge",
    "empty",
    "missing",
    "wrong",
    "right",
    "first",
    "last",
    "next",
    "previous",
    "new",
    "old",
    "current",
    "expected",
    "actual",
    "result",
    "results",
    "found",
    "see",
    "let",
    "me",
    "I",
    "I'll",
    "you",
    "your",
    "our",
    "here",
    "what",
    "why",
    "how",
    "where",
    "let's",
    "done",
    "works",
    "timeout",
    "retry",
    "cache",
    "request",
    "response",
    "server",
    "client",
    "database",
    "query",
    "index",
    "key",
    "schema",
    "migration",
    "version",
    "dependency",
    "dependencies",
    "release",
    "debug",
    "trace",
    "stack",
    "panic",
    "thread",
    "lock",
    "async",
    "await",
    "future",
    "channel",
    "buffer",
    "stream",
    "parser",
    "token",
    "tokens",
    "memory",
    "disk",
    "latency",
    "throughput",
    "benchmark",
    "profile",
    "hot",
    "loop",
    "allocation",
    "clone",
    "string",
    "bytes",
    "number",
    "count",
    "limit",
    "offset",
    "page",
    "batch",
    "commit",
    "branch",
    "merge",
    "diff",
    "patch",
    "review",
    "comment",
    "documentation",
    "example",
    "examples",
    "user",
    "users",
    "permission",
    "access",
];

const SYLLABLES: &[&str] = &[
    "ka", "to", "ri", "mo", "ven", "dal", "sor", "pi", "lux", "ner", "tha", "qui", "bor", "zen", "fa", "gre", "lo",
    "mi", "stra", "vo", "pel", "dru", "cas", "win", "ob", "ix", "um", "ar", "el", "on", "tra", "ske",
];

const IDENT_PARTS: &[&str] = &[
    "get",
    "set",
    "parse",
    "load",
    "read",
    "write",
    "config",
    "session",
    "event",
    "store",
    "buf",
    "len",
    "index",
    "node",
    "tree",
    "item",
    "user",
    "request",
    "handle",
    "error",
    "result",
    "value",
    "key",
    "map",
    "list",
    "state",
    "cache",
    "file",
    "path",
    "token",
    "stream",
    "frame",
    "chunk",
    "record",
    "entry",
    "log",
    "sync",
    "flush",
    "open",
    "close",
    "init",
    "build",
    "check",
    "verify",
    "hash",
    "seal",
    "client",
    "server",
    "query",
    "row",
    "column",
    "schema",
    "field",
    "span",
    "metric",
    "batch",
    "retry",
    "timeout",
    "limit",
    "offset",
    "cursor",
    "page",
    "view",
    "model",
    "agent",
    "tool",
    "output",
    "input",
    "env",
    "workspace",
    "diff",
    "patch",
    "commit",
    "head",
    "tail",
];

const DIRS: &[&str] = &[
    "src",
    "crates",
    "lib",
    "tests",
    "benches",
    "server",
    "core",
    "api",
    "internal",
    "pkg",
    "cmd",
    "utils",
    "handlers",
    "models",
    "store",
    "engine",
    "docs",
    "scripts",
    "config",
    "migrations",
    "web",
    "components",
];

const EXTS: &[&str] = &["rs", "rs", "rs", "py", "ts", "go", "toml", "json", "md", "yaml", "sql", "sh"];

const TYPES: &[&str] = &[
    "u64",
    "usize",
    "i64",
    "bool",
    "String",
    "&str",
    "Vec<u8>",
    "Option<String>",
    "Result<(), Error>",
    "PathBuf",
    "Duration",
    "Arc<Mutex<State>>",
    "HashMap<String, Value>",
    "&[u8]",
    "Bytes",
];

const COMMANDS: &[&str] = &[
    "cargo test",
    "cargo build --release",
    "cargo clippy --all-targets",
    "git status",
    "git diff",
    "git log --oneline",
    "ls -la",
    "grep -rn",
    "rg",
    "find . -name",
    "cat",
    "head -50",
    "tail -100",
    "npm test",
    "pytest -x",
    "go test ./...",
    "make",
    "python3 -m pip install",
    "docker ps",
    "wc -l",
    "sed -n",
    "du -sh",
    "curl -s localhost:8080/healthz",
];

const LEVELS: &[&str] = &["INFO", "INFO", "INFO", "DEBUG", "DEBUG", "WARN", "ERROR", "TRACE"];

/// A random element of a non-empty slice.
pub fn pick<'a>(rng: &mut StdRng, items: &[&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

/// A made-up word from random syllables: the open part of the vocabulary.
pub fn pseudo_word(rng: &mut StdRng) -> String {
    let n = rng.random_range(2..4);
    (0..n).map(|_| pick(rng, SYLLABLES)).collect()
}

/// A snake_case identifier, partly from common parts, partly made up.
pub fn ident(rng: &mut StdRng) -> String {
    let n = rng.random_range(1..4);
    let parts: Vec<String> = (0..n)
        .map(|_| if rng.random_bool(0.7) { pick(rng, IDENT_PARTS).to_owned() } else { pseudo_word(rng) })
        .collect();
    parts.join("_")
}

/// A CamelCase type name.
pub fn type_name(rng: &mut StdRng) -> String {
    ident(rng)
        .split('_')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// A relative file path such as `crates/store/src/frame_cache.rs`.
pub fn file_path(rng: &mut StdRng) -> String {
    let depth = rng.random_range(1..4);
    let mut path = String::new();
    for _ in 0..depth {
        if rng.random_bool(0.8) {
            path.push_str(pick(rng, DIRS));
        } else {
            path.push_str(&pseudo_word(rng));
        }
        path.push('/');
    }
    let _ = write!(path, "{}.{}", ident(rng), pick(rng, EXTS));
    path
}

/// `n` lowercase hex digits.
pub fn hex(rng: &mut StdRng, n: usize) -> String {
    (0..n).map(|_| char::from(b"0123456789abcdef"[rng.random_range(0..16)])).collect()
}

/// One English-like sentence, occasionally naming code.
pub fn sentence(rng: &mut StdRng) -> String {
    let n = rng.random_range(6..22);
    let mut out = String::new();
    for idx in 0..n {
        if idx > 0 {
            out.push(' ');
        }
        if rng.random_bool(0.06) {
            let _ = write!(out, "`{}`", ident(rng));
        } else if rng.random_bool(0.03) {
            let _ = write!(out, "`{}`", file_path(rng));
        } else {
            out.push_str(pick(rng, WORDS));
        }
    }
    if let Some(first) = out.get(0..1) {
        let upper = first.to_ascii_uppercase();
        out.replace_range(0..1, &upper);
    }
    out.push(if rng.random_bool(0.9) { '.' } else { ':' });
    out
}

/// Prose of about `target` bytes, in paragraphs.
pub fn prose(rng: &mut StdRng, target: usize) -> String {
    let mut out = String::new();
    while out.len() < target {
        if !out.is_empty() {
            out.push_str(if rng.random_bool(0.2) { "\n\n" } else { " " });
        }
        out.push_str(&sentence(rng));
    }
    out
}

/// One line of Rust-like code at `indent` levels.
fn code_line(rng: &mut StdRng, indent: usize) -> String {
    let pad = "    ".repeat(indent);
    match rng.random_range(0..10) {
        0 => format!("{pad}let {} = {}.{}({})?;", ident(rng), ident(rng), ident(rng), ident(rng)),
        1 => format!("{pad}let mut {}: {} = {}::new();", ident(rng), pick(rng, TYPES), type_name(rng)),
        2 => format!("{pad}if {}.{}() {{ return Err(Error::{}); }}", ident(rng), ident(rng), type_name(rng)),
        3 => format!("{pad}// {}", sentence(rng)),
        4 => format!("{pad}self.{} += {};", ident(rng), rng.random_range(1..4096)),
        5 => format!("{pad}{}.push({});", ident(rng), ident(rng)),
        6 => format!("{pad}for {} in &{} {{", ident(rng), ident(rng)),
        7 => format!("{pad}assert_eq!({}, {});", ident(rng), rng.random_range(0..1000)),
        8 => format!("{pad}match {} {{ Some(x) => x, None => continue }};", ident(rng)),
        _ => format!("{pad}tracing::debug!({} = %{}, \"{}\");", ident(rng), ident(rng), sentence(rng)),
    }
}

/// A Rust-like source snippet of about `target` bytes.
pub fn code(rng: &mut StdRng, target: usize) -> String {
    let mut out = String::new();
    if rng.random_bool(0.5) {
        let _ = writeln!(out, "use crate::{}::{{{}, {}}};", ident(rng), type_name(rng), type_name(rng));
        let _ = writeln!(out, "use std::{}::{};\n", pick(rng, &["sync", "io", "fs", "collections"]), type_name(rng));
    }
    while out.len() < target {
        let _ = writeln!(out, "/// {}", sentence(rng));
        let _ = writeln!(
            out,
            "pub fn {}(&self, {}: {}) -> {} {{",
            ident(rng),
            ident(rng),
            pick(rng, TYPES),
            pick(rng, TYPES)
        );
        for _ in 0..rng.random_range(2..12) {
            let indent = rng.random_range(1..3);
            out.push_str(&code_line(rng, indent));
            out.push('\n');
        }
        out.push_str("}\n\n");
    }
    out
}

/// Source with `cat -n`-style line numbers, as a file-read tool returns it.
pub fn numbered(text: &str, first_line: usize) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for (idx, line) in text.lines().enumerate() {
        let _ = writeln!(out, "{:>6}\t{line}", first_line + idx);
    }
    out
}

/// A timestamped application log of about `target` bytes.
pub fn log_lines(rng: &mut StdRng, target: usize) -> String {
    let mut out = String::new();
    let mut ms = rng.random_range(0..3_600_000u64);
    while out.len() < target {
        ms += rng.random_range(0..900);
        let _ = writeln!(
            out,
            "2026-11-29T{:02}:{:02}:{:02}.{:03}Z {:5} {}::{}: {} {}={} {}={}",
            10 + ms / 3_600_000,
            ms / 60_000 % 60,
            ms / 1000 % 60,
            ms % 1000,
            pick(rng, LEVELS),
            ident(rng),
            ident(rng),
            sentence(rng),
            ident(rng),
            rng.random_range(0..100_000),
            pick(rng, &["request_id", "session", "trace_id", "span"]),
            hex(rng, 16),
        );
    }
    out
}

/// `cargo build`/`cargo test` output of about `target` bytes.
pub fn cargo_output(rng: &mut StdRng, target: usize) -> String {
    let mut out = String::new();
    while out.len() < target {
        match rng.random_range(0..8) {
            0..=2 => {
                let _ = writeln!(
                    out,
                    "   Compiling {} v{}.{}.{}",
                    ident(rng).replace('_', "-"),
                    rng.random_range(0..3),
                    rng.random_range(0..40),
                    rng.random_range(0..12)
                );
            }
            3 | 4 => {
                let outcome = if rng.random_bool(0.93) { "ok" } else { "FAILED" };
                let _ = writeln!(out, "test {}::{}::{} ... {outcome}", ident(rng), ident(rng), ident(rng));
            }
            5 => {
                let _ = writeln!(
                    out,
                    "warning: unused variable: `{}`\n  --> {}:{}:{}\n   |\n{:>3} | {}\n   |",
                    ident(rng),
                    file_path(rng),
                    rng.random_range(1..900),
                    rng.random_range(1..80),
                    rng.random_range(1..900),
                    code_line(rng, 1)
                );
            }
            6 => {
                let _ = writeln!(
                    out,
                    "error[E0{}]: {}\n  --> {}:{}:{}",
                    rng.random_range(100..800),
                    sentence(rng),
                    file_path(rng),
                    rng.random_range(1..900),
                    rng.random_range(1..80)
                );
            }
            _ => {
                let passed = rng.random_range(0..400);
                let _ = writeln!(
                    out,
                    "test result: ok. {passed} passed; 0 failed; {} ignored; 0 measured; 0 filtered out; finished in {}.{:02}s",
                    rng.random_range(0..4),
                    rng.random_range(0..30),
                    rng.random_range(0..100)
                );
            }
        }
    }
    out
}

/// An `ls -la` listing of about `target` bytes.
pub fn listing(rng: &mut StdRng, target: usize) -> String {
    let mut out = format!("total {}\n", rng.random_range(8..4000));
    while out.len() < target {
        let dir = rng.random_bool(0.2);
        let name = if dir { pick(rng, DIRS).to_owned() } else { format!("{}.{}", ident(rng), pick(rng, EXTS)) };
        let _ = writeln!(
            out,
            "{} {:>2} {} {} {:>8} Nov {:>2} {:02}:{:02} {name}",
            if dir { "drwxr-xr-x" } else { "-rw-r--r--" },
            rng.random_range(1..9),
            pick(rng, &["root", "agent", "ubuntu"]),
            pick(rng, &["root", "agent", "staff"]),
            rng.random_range(0..200_000),
            rng.random_range(1..30),
            rng.random_range(0..24),
            rng.random_range(0..60),
        );
    }
    out
}

/// `grep -rn` output of about `target` bytes.
pub fn grep_output(rng: &mut StdRng, target: usize) -> String {
    let mut out = String::new();
    while out.len() < target {
        let path = file_path(rng);
        for _ in 0..rng.random_range(1..5) {
            let _ = writeln!(out, "{path}:{}:{}", rng.random_range(1..2000), code_line(rng, 1));
        }
    }
    out
}

/// `git log` and `git diff` output of about `target` bytes.
pub fn git_output(rng: &mut StdRng, target: usize) -> String {
    let mut out = String::new();
    while out.len() < target {
        if rng.random_bool(0.4) {
            let _ = writeln!(out, "{} {}", hex(rng, 7), sentence(rng));
        } else {
            let path = file_path(rng);
            let _ = writeln!(
                out,
                "diff --git a/{path} b/{path}\nindex {}..{} 100644\n--- a/{path}\n+++ b/{path}\n@@ -{},{} +{},{} @@",
                hex(rng, 7),
                hex(rng, 7),
                rng.random_range(1..500),
                rng.random_range(3..20),
                rng.random_range(1..500),
                rng.random_range(3..20)
            );
            for _ in 0..rng.random_range(3..12) {
                let sign = pick(rng, &[" ", " ", "-", "+"]);
                let indent = rng.random_range(0..3);
                let _ = writeln!(out, "{sign}{}", code_line(rng, indent));
            }
        }
    }
    out
}

/// A JSON array of records (an API response, a data dump) of about `target` bytes.
pub fn json_dump(rng: &mut StdRng, target: usize) -> String {
    let mut out = String::from("[\n");
    while out.len() < target {
        let _ = writeln!(
            out,
            "  {{\"id\": \"{}\", \"name\": \"{}\", \"status\": \"{}\", \"count\": {}, \"updated_at\": \"2026-11-{:02}T{:02}:{:02}:00Z\", \"path\": \"{}\"}},",
            hex(rng, 12),
            ident(rng),
            pick(rng, &["active", "pending", "done", "failed"]),
            rng.random_range(0..10_000),
            rng.random_range(1..30),
            rng.random_range(0..24),
            rng.random_range(0..60),
            file_path(rng)
        );
    }
    out.push(']');
    out
}

/// A shell command line, as an agent would run it.
pub fn command(rng: &mut StdRng) -> String {
    match rng.random_range(0..4) {
        0 => format!("{} {}", pick(rng, COMMANDS), file_path(rng)),
        1 => format!("cd {} && {}", pick(rng, DIRS), pick(rng, COMMANDS)),
        2 => format!("{} -p {} -- {}", pick(rng, &["cargo test", "cargo check"]), ident(rng), ident(rng)),
        _ => format!("grep -rn \"{}\" {} | head -{}", ident(rng), pick(rng, DIRS), rng.random_range(10..100)),
    }
}

/// Mixed tool output of about `target` bytes, of one kind chosen at random.
pub fn tool_output(rng: &mut StdRng, target: usize) -> String {
    match rng.random_range(0..8) {
        0 | 1 => cargo_output(rng, target),
        2 => {
            let first = rng.random_range(1..400);
            numbered(&code(rng, target * 4 / 5), first)
        }
        3 => listing(rng, target),
        4 => grep_output(rng, target),
        5 => git_output(rng, target),
        6 => log_lines(rng, target),
        _ => json_dump(rng, target),
    }
}
