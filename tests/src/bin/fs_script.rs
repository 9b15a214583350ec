//! A child process for the storage-fault shim's own test: it makes the file
//! system operations its arguments name, in order, so that the test can cut
//! the power at a known one and check which of the others the shim kept.
//!
//! Usage: `fs-script OP ARGS... [, OP ARGS...]...`, the operations separated
//! by `,`: `mkdir PATH`, `create PATH` (an empty new file), `write PATH TEXT`
//! (appended), `sync PATH` (an `fsync` of a file or a directory),
//! `rename FROM TO`, `remove PATH` (a file).

use std::fs::{File, OpenOptions};
use std::io::Write;

use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    for op in args.split(|arg| arg == ",") {
        match op.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            ["mkdir", path] => std::fs::create_dir(path).with_context(|| format!("mkdir {path}"))?,
            ["create", path] => drop(File::create_new(path).with_context(|| format!("create {path}"))?),
            ["write", path, text] => OpenOptions::new()
                .append(true)
                .open(path)
                .and_then(|mut file| file.write_all(text.as_bytes()))
                .with_context(|| format!("write {path}"))?,
            ["sync", path] => {
                File::open(path).and_then(|file| file.sync_all()).with_context(|| format!("sync {path}"))?
            }
            ["rename", from, to] => std::fs::rename(from, to).with_context(|| format!("rename {from} {to}"))?,
            ["remove", path] => std::fs::remove_file(path).with_context(|| format!("remove {path}"))?,
            other => bail!("unknown operation {other:?}"),
        }
    }
    Ok(())
}
