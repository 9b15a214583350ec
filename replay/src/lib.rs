//! `logbook-replay`: everything derived from a session log, as pure functions.
//!
//! [`machine`] folds a log into the session's state and says what the runner
//! must do next; [`context`] projects the conversation the next model request
//! sends and plans its compaction; [`fit`] squeezes it into a token budget
//! for the low-token context API; [`usage`] sums tokens and running time;
//! [`workspace`] folds workspace deltas into the file tree; [`state`] folds
//! all of them together (the state at any seq, and checkpoints of it);
//! [`resources`] lists the attached resources and mounted files;
//! [`slice`] filters and previews events for the slice API; [`tokens`]
//! estimates token counts; [`audit`] and [`bundle`] define signed
//! heads and the verifiable export format. Nothing in this crate reads a clock, touches a disk or the network:
//! the same records always give the same output. It depends on `logbook-core`
//! only; the server feeds it entries read from the store.

pub mod audit;
pub mod blobs;
pub mod bundle;
pub mod context;
pub mod fit;
pub mod machine;
pub mod rerun;
pub mod resources;
pub mod slice;
pub mod state;
pub mod tokens;
pub mod usage;
pub mod workspace;

pub use context::{Context, Message, Role, conversation};
pub use machine::{Command, FailReason, Machine, Policy, SERVER_SIDE_TOOLS, Status, ToolHost};
pub use rerun::{RerunReport, check as rerun_check};
pub use state::SessionState;
pub use usage::{Totals, totals};
