//! Baseline: one JSONL file per session, `fdatasync` after every event.
//!
//! The simplest durable event log: each event is one line of JSON appended to
//! its session's file, and the append returns after `fdatasync`. No batching
//! across events or sessions; concurrent writers of different sessions sync
//! different files, so any batching happens in the filesystem's journal.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, anyhow};

/// See the module documentation.
#[derive(Debug)]
pub struct JsonlLog {
    files: Vec<Mutex<File>>,
    paths: Vec<PathBuf>,
}

impl JsonlLog {
    /// Creates `n_sessions` empty files in `dir`.
    pub fn create(dir: &Path, n_sessions: usize) -> anyhow::Result<JsonlLog> {
        std::fs::create_dir_all(dir)?;
        let mut files = Vec::with_capacity(n_sessions);
        let mut paths = Vec::with_capacity(n_sessions);
        for idx in 0..n_sessions {
            let path = dir.join(format!("session-{idx:04}.jsonl"));
            let file = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            file.sync_all()?;
            files.push(Mutex::new(file));
            paths.push(path);
        }
        File::open(dir)?.sync_all()?;
        Ok(JsonlLog { files, paths })
    }

    /// Appends `line` (which must end in a newline) to session `idx` and syncs it.
    pub fn append(&self, idx: usize, line: &[u8]) -> anyhow::Result<()> {
        let file = self.files.get(idx).ok_or_else(|| anyhow!("no session {idx}"))?;
        let mut file = file.lock().map_err(|_| anyhow!("file lock poisoned"))?;
        file.write_all(line)?;
        file.sync_data()?;
        Ok(())
    }

    /// Bytes in all files.
    pub fn total_bytes(&self) -> anyhow::Result<u64> {
        let mut total = 0;
        for path in &self.paths {
            total += std::fs::metadata(path)?.len();
        }
        Ok(total)
    }
}
