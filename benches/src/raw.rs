//! Baseline: raw group commit, the physical limit of durable appends here.
//!
//! Writer threads hand length-prefixed records to one committer thread, which
//! appends a batch of up to [`RAW_BATCH`] records with a single `write` to one
//! append-only file and then `fdatasync`s it, acknowledging the whole batch.
//! There is no index, no checksum, no per-session structure and no recovery:
//! nothing a log store could do with fewer syscalls, so no store can beat it on
//! this disk. Reading the records back is not supported.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::group::{CommitStats, GroupCommit};

/// Most records per `write` + `fdatasync`.
pub const RAW_BATCH: usize = 32;

/// See the module documentation.
#[derive(Debug)]
pub struct RawLog {
    committer: GroupCommit<Arc<[u8]>>,
}

impl RawLog {
    /// Creates (truncating) the log file at `path`.
    pub fn create(path: &Path) -> anyhow::Result<RawLog> {
        let mut file = create_durably(path)?;
        let mut buf = Vec::new();
        let committer = GroupCommit::start(RAW_BATCH, move |batch: &mut Vec<Arc<[u8]>>| {
            frame_batch(batch, &mut buf);
            file.write_all(&buf)?;
            file.sync_data()?;
            Ok(())
        });
        Ok(RawLog { committer })
    }

    /// The same log with `depth` committers (see
    /// [`GroupCommit::start_pipelined`]): each batch is written at the offset
    /// it reserved with one `pwrite` and made durable with its own
    /// `fdatasync`, while the next batch is written and synced. A diagnostic
    /// of overlapping syncs of one file, not a baseline of the issue.
    pub fn create_pipelined(path: &Path, depth: usize) -> anyhow::Result<RawLog> {
        use std::os::unix::fs::FileExt;
        use std::sync::atomic::{AtomicU64, Ordering};
        let file = create_durably(path)?;
        let end = AtomicU64::new(0);
        let committer = GroupCommit::start_pipelined(RAW_BATCH, depth, move |batch: &mut Vec<Arc<[u8]>>| {
            let mut buf = Vec::new();
            frame_batch(batch, &mut buf);
            let offset = end.fetch_add(buf.len() as u64, Ordering::Relaxed);
            file.write_all_at(&buf, offset)?;
            file.sync_data()?;
            Ok(())
        });
        Ok(RawLog { committer })
    }

    /// The same log in a file of `bytes` zeroes written and synced ahead,
    /// as the store prepares its segments: each batch overwrites allocated
    /// blocks, so its `fdatasync` writes data only. Batches wrap around to
    /// the file's start at its end (what this measures is the syncs, not
    /// what the file keeps). A diagnostic, not a baseline of the issue.
    pub fn create_prepared(path: &Path, bytes: u64) -> anyhow::Result<RawLog> {
        use std::os::unix::fs::FileExt;
        let mut file = create_durably(path)?;
        let zeroes = vec![0u8; 1 << 20];
        let mut written = 0u64;
        while written < bytes {
            file.write_all(&zeroes)?;
            written += zeroes.len() as u64;
        }
        file.sync_all()?;
        let mut end = 0u64;
        let mut buf = Vec::new();
        let committer = GroupCommit::start(RAW_BATCH, move |batch: &mut Vec<Arc<[u8]>>| {
            frame_batch(batch, &mut buf);
            if end + buf.len() as u64 > written {
                end = 0;
            }
            file.write_all_at(&buf, end)?;
            end += buf.len() as u64;
            file.sync_data()?;
            Ok(())
        });
        Ok(RawLog { committer })
    }

    /// Appends `record` and returns once it is durable.
    pub fn append(&self, record: Arc<[u8]>) -> anyhow::Result<()> {
        self.committer.submit(record)
    }

    pub fn stats(&self) -> CommitStats {
        self.committer.stats()
    }

    pub fn finish(self) -> anyhow::Result<CommitStats> {
        self.committer.finish()
    }
}

/// A batch as one buffer, each record prefixed with its length (u32 LE).
fn frame_batch(batch: &[Arc<[u8]>], buf: &mut Vec<u8>) {
    buf.clear();
    for record in batch {
        buf.extend_from_slice(&(record.len() as u32).to_le_bytes());
        buf.extend_from_slice(record);
    }
}

/// Creates (truncating) the file at `path` and makes its directory entry durable.
fn create_durably(path: &Path) -> anyhow::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    File::open(path.parent().unwrap_or(Path::new("."))).and_then(|dir| dir.sync_all())?;
    Ok(file)
}
