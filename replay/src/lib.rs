//! `logbook-replay`: everything derived from a session log, as pure functions.
//!
//! [`machine`] folds a log into the session's state and says what the runner
//! must do next; [`context`] projects the conversation the next model request
//! sends; [`usage`] sums tokens and running time; [`audit`] and [`bundle`]
//! define signed heads and the verifiable export format. Nothing in this crate reads a clock, touches a disk or the network:
//! the same records always give the same output. It depends on `logbook-core`
//! only; the server feeds it entries read from the store.

pub mod audit;
pub mod bundle;
pub mod context;
pub mod machine;
pub mod rerun;
pub mod usage;

pub use context::{Message, Role, conversation};
pub use machine::{Command, FailReason, Machine, Policy, SERVER_SIDE_TOOLS, Status, ToolHost};
pub use rerun::{RerunReport, check as rerun_check};
pub use usage::{Totals, totals};
