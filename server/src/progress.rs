//! Progress lines on stderr for long command-line operations (`logbook
//! verify`, `export`, `verify BUNDLE`, `import`): one line at most every
//! [`PROGRESS_INTERVAL`], so a run over millions of records (or gigabytes of
//! blobs) never looks hung and a short one prints nothing extra.

use std::time::{Duration, Instant};

/// The least time between two progress lines.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);

/// Rate-limits progress lines: [`Progress::due`] says when the next one may
/// be printed, [`Progress::tick`] prints a standard one.
#[derive(Debug)]
pub struct Progress {
    /// What is being done, as the line says it: "verified", "exported", ...
    doing: &'static str,
    /// The items the operation will do, when known.
    total: Option<u64>,
    last_print: Instant,
}

impl Progress {
    /// Starts the clock: the first line is due [`PROGRESS_INTERVAL`] from now.
    pub fn new(doing: &'static str, total: Option<u64>) -> Progress {
        Progress { doing, total, last_print: Instant::now() }
    }

    /// Whether a line is due; if so, the next one is due a full interval
    /// later. For callers that print a line of their own.
    pub fn due(&mut self) -> bool {
        if self.last_print.elapsed() < PROGRESS_INTERVAL {
            return false;
        }
        self.last_print = Instant::now();
        true
    }

    /// Notes that `done` records are done, printing `logbook: {doing} {done}
    /// of {total} records` (or without the total, when unknown) if a line is
    /// due.
    pub fn tick(&mut self, done: u64) {
        if !self.due() {
            return;
        }
        eprintln!("logbook: {}", self.records(done));
    }

    /// [`Progress::tick`] for an operation that also moves blobs (bundles):
    /// `logbook: {doing} {done} of {total} records, {blobs} of {n_blobs}
    /// blobs ({bytes} bytes)`.
    pub fn tick_with_blobs(&mut self, done: u64, blobs: u64, n_blobs: u64, bytes: Option<u64>) {
        if !self.due() {
            return;
        }
        match bytes {
            Some(bytes) => eprintln!("logbook: {}, {blobs} of {n_blobs} blobs ({bytes} bytes)", self.records(done)),
            None => eprintln!("logbook: {}, {blobs} of {n_blobs} blobs", self.records(done)),
        }
    }

    fn records(&self, done: u64) -> String {
        match self.total {
            Some(total) => format!("{} {done} of {total} records", self.doing),
            None => format!("{} {done} records", self.doing),
        }
    }
}
