//! The session workspace as the log records it.
//!
//! After every tool call the runner asks the tool executor what changed in the
//! session's workspace and outputs; the sandbox answers with [`scan`]'s
//! change detection (a stat-only walk against a per-session index, hashing
//! only files it cannot vouch for) and stores changed contents as blobs keyed
//! by blake3. The runner appends the changes as an `x.workspace_delta`. The
//! workspace at any seq is then the fold of the deltas up to it (the replay
//! crate's `workspace::Tree`),
//! and [`tree::write_tree`] writes such a tree to a directory, for state at a
//! seq and for forks.

pub mod scan;
pub mod tree;

pub use scan::{Index, ScanError, ScanReport, ScanRoot};
pub use tree::{Area, Node, Tree, WriteError, materialize, materialize_entries, write_tree};
