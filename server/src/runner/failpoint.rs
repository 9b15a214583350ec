//! Labelled points in a turn where a test can make the server die, panic or
//! wait, to check what a crash, a bug or input arriving at exactly that
//! point leaves behind (reliability goal G-T8: after a restart every
//! `agent.tool_use` has one result, no request is left open, no command
//! runs twice).
//!
//! Tests only. `LOGBOOK_FAILPOINT=<point>:<action>[@<n>[+]]` arms one point:
//! `kill` sends the server process SIGKILL (as a power cut or an OOM kill
//! would end it: nothing after the point runs, not even destructors), `panic`
//! panics there (a bug), `stall` holds the runner there until the file
//! `LOGBOOK_FAILPOINT_RELEASE` names exists (so that a test can land input,
//! an interrupt, exactly while the runner is at that point; the file must
//! not exist at start-up, and a point gives up waiting after [`MAX_STALL`]).
//! The `n`th time the point is reached (1 if not given) it fires; every
//! other time it does nothing, so a restarted server, or the runner going
//! on after a panic, passes it. With `+` it fires every
//! time from the `n`th on (a bug that the same state always meets: the
//! runner's recovery from the panic panics too). Unset, a point costs one
//! load of a `OnceLock`. A value that names no point or action stops the
//! server at start-up: a typo must not quietly test nothing.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The environment variable that arms a point.
pub const FAILPOINT_ENV: &str = "LOGBOOK_FAILPOINT";
/// The environment variable naming the file whose creation releases a
/// stalled point.
pub const RELEASE_ENV: &str = "LOGBOOK_FAILPOINT_RELEASE";
/// Longest a point stalls: a test that never releases it does not hang the
/// server for good.
pub const MAX_STALL: Duration = Duration::from_secs(120);
/// How often a stalled point looks for its release file.
const STALL_POLL: Duration = Duration::from_millis(5);

/// Where in a turn a failpoint sits, in the order a turn with one tool call
/// passes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// A turn is about to start: its `session.status_running` not appended.
    TurnBeforeRunning,
    /// `session.status_running` durable, the session object not yet told.
    TurnAfterRunning,
    /// A model request is built; its `span.model_request_start` not appended.
    ModelBeforeStart,
    /// The request's start is durable; the request not yet sent.
    ModelAfterStart,
    /// The response's first content block has begun streaming.
    ModelStreaming,
    /// The whole response arrived; nothing of it appended.
    ModelAfterResponse,
    /// The response's events (`agent.*`, the request's end) are durable.
    ModelAfterAppend,
    /// A tool call is to run; its `x.tool_started` not appended.
    ToolBeforeStart,
    /// `x.tool_started` durable; the tool not yet run.
    ToolAfterStart,
    /// The tool ran; its result not appended.
    ToolAfterRun,
    /// The call's result (and workspace changes) are durable.
    ToolAfterResult,
    /// The context's summary is in hand (or the elided one); the
    /// compaction not appended.
    CompactAfterSummary,
    /// An outcome's evaluation has started (its span durable, or one a
    /// restart found open); the grader not yet called.
    GradeAfterStart,
    /// The grader answered; the evaluation's end not appended.
    GradeAfterVerdict,
    /// The turn's `session.status_idle` is about to be appended.
    IdleBefore,
    /// The idle is durable; the session object not yet told.
    IdleAfter,
}

impl Point {
    /// Every point, in turn order.
    pub const ALL: [Point; 16] = [
        Point::TurnBeforeRunning,
        Point::TurnAfterRunning,
        Point::ModelBeforeStart,
        Point::ModelAfterStart,
        Point::ModelStreaming,
        Point::ModelAfterResponse,
        Point::ModelAfterAppend,
        Point::ToolBeforeStart,
        Point::ToolAfterStart,
        Point::ToolAfterRun,
        Point::ToolAfterResult,
        Point::CompactAfterSummary,
        Point::GradeAfterStart,
        Point::GradeAfterVerdict,
        Point::IdleBefore,
        Point::IdleAfter,
    ];

    /// The point's name in [`FAILPOINT_ENV`].
    pub fn name(self) -> &'static str {
        match self {
            Point::TurnBeforeRunning => "turn_before_running",
            Point::TurnAfterRunning => "turn_after_running",
            Point::ModelBeforeStart => "model_before_start",
            Point::ModelAfterStart => "model_after_start",
            Point::ModelStreaming => "model_streaming",
            Point::ModelAfterResponse => "model_after_response",
            Point::ModelAfterAppend => "model_after_append",
            Point::ToolBeforeStart => "tool_before_start",
            Point::ToolAfterStart => "tool_after_start",
            Point::ToolAfterRun => "tool_after_run",
            Point::ToolAfterResult => "tool_after_result",
            Point::CompactAfterSummary => "compact_after_summary",
            Point::GradeAfterStart => "grade_after_start",
            Point::GradeAfterVerdict => "grade_after_verdict",
            Point::IdleBefore => "idle_before",
            Point::IdleAfter => "idle_after",
        }
    }
}

/// What an armed point does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// SIGKILL the server's own process.
    Kill,
    /// Panic on the runner's task.
    Panic,
    /// Hold the runner's thread until the release file exists.
    Stall,
}

/// An armed point: `action` on the `nth` time `point` is reached, and
/// every time after if `and_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Armed {
    pub point: Point,
    pub action: Action,
    pub nth: u64,
    pub and_after: bool,
}

/// Most passes a point may be armed for.
pub const MAX_NTH: u64 = 1_000_000;

/// A [`FAILPOINT_ENV`] value that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("{FAILPOINT_ENV}={value:?}: {reason} (expected <point>:<kill|panic|stall>[@<n>[+]], points: {points})")]
pub struct ParseError {
    value: String,
    reason: &'static str,
    points: String,
}

impl Armed {
    pub fn parse(value: &str) -> Result<Armed, ParseError> {
        let fail = |reason| ParseError { value: value.to_owned(), reason, points: point_names() };
        let (point, rest) = value.split_once(':').ok_or_else(|| fail("no action"))?;
        let (action, nth, and_after) = match rest.split_once('@') {
            Some((action, pass)) => {
                let (nth, and_after) = match pass.strip_suffix('+') {
                    Some(nth) => (nth, true),
                    None => (pass, false),
                };
                (action, nth.parse::<u64>().map_err(|_| fail("the pass is not a number"))?, and_after)
            }
            None => (rest, 1, false),
        };
        if !(1..=MAX_NTH).contains(&nth) {
            return Err(fail("the pass is out of range"));
        }
        let point = Point::ALL.into_iter().find(|p| p.name() == point).ok_or_else(|| fail("no such point"))?;
        let action = match action {
            "kill" => Action::Kill,
            "panic" => Action::Panic,
            "stall" => Action::Stall,
            _ => return Err(fail("no such action")),
        };
        Ok(Armed { point, action, nth, and_after })
    }
}

fn point_names() -> String {
    Point::ALL.iter().map(|p| p.name()).collect::<Vec<_>>().join(", ")
}

static ARMED: OnceLock<Armed> = OnceLock::new();
static PASSES: AtomicU64 = AtomicU64::new(0);
static RELEASE: OnceLock<PathBuf> = OnceLock::new();

/// Arms the point [`FAILPOINT_ENV`] names, if it is set (once per process,
/// at start-up). Returns what was armed, for the start-up message.
pub fn arm_from_env() -> Result<Option<Armed>, ParseError> {
    let Ok(value) = std::env::var(FAILPOINT_ENV) else { return Ok(None) };
    let armed = Armed::parse(&value)?;
    match armed.action {
        Action::Kill | Action::Panic => {}
        Action::Stall => {
            let Some(release) = std::env::var_os(RELEASE_ENV).filter(|path| !path.is_empty()) else {
                return Err(ParseError {
                    value,
                    reason: "a stall needs LOGBOOK_FAILPOINT_RELEASE",
                    points: point_names(),
                });
            };
            // A file left over would release every stall at once: the test
            // would quietly test nothing.
            if Path::new(&release).exists() {
                let reason = "the LOGBOOK_FAILPOINT_RELEASE file exists already";
                return Err(ParseError { value, reason, points: point_names() });
            }
            RELEASE.get_or_init(|| PathBuf::from(release));
        }
    }
    Ok(Some(*ARMED.get_or_init(|| armed)))
}

/// Passes `point`: fires it if it is the armed one and this is its `nth`
/// pass (or a later one, `and_after`).
pub fn pass(point: Point) {
    let Some(armed) = ARMED.get() else { return };
    if armed.point != point {
        return;
    }
    let pass = PASSES.fetch_add(1, Ordering::SeqCst).saturating_add(1);
    if pass < armed.nth || (pass > armed.nth && !armed.and_after) {
        return;
    }
    match armed.action {
        Action::Kill => {
            eprintln!("logbook: failpoint {}: SIGKILL", point.name());
            // Nothing after the point may run: if the signal cannot be
            // sent, abort (which runs no destructors either).
            let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
            std::process::abort();
        }
        Action::Panic => panic!("failpoint {}", point.name()),
        Action::Stall => {
            eprintln!("logbook: failpoint {}: stalled", point.name());
            // The runtime's other threads go on serving meanwhile (the
            // server's runtime has several; on a single-threaded one
            // nothing else runs until the stall ends).
            let wait = || {
                let deadline = Instant::now() + MAX_STALL;
                loop {
                    if RELEASE.get().is_some_and(|path| path.exists()) {
                        return "released";
                    }
                    if Instant::now() >= deadline {
                        return "not released in time; going on";
                    }
                    std::thread::sleep(STALL_POLL);
                }
            };
            let how = match tokio::runtime::Handle::try_current().map(|handle| handle.runtime_flavor()) {
                Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
                Ok(_) | Err(_) => wait(),
            };
            eprintln!("logbook: failpoint {}: {how}", point.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_or_say_what_is_wrong() {
        let armed = Armed::parse("tool_after_run:kill").unwrap();
        assert_eq!(armed, Armed { point: Point::ToolAfterRun, action: Action::Kill, nth: 1, and_after: false });
        let armed = Armed::parse("model_after_append:panic@2").unwrap();
        assert_eq!(armed, Armed { point: Point::ModelAfterAppend, action: Action::Panic, nth: 2, and_after: false });
        let armed = Armed::parse("tool_after_start:stall").unwrap();
        assert_eq!(armed, Armed { point: Point::ToolAfterStart, action: Action::Stall, nth: 1, and_after: false });
        let armed = Armed::parse("idle_before:panic@1+").unwrap();
        assert_eq!(armed, Armed { point: Point::IdleBefore, action: Action::Panic, nth: 1, and_after: true });
        for point in Point::ALL {
            assert_eq!(Armed::parse(&format!("{}:kill", point.name())).unwrap().point, point);
        }
        for (bad, reason) in [
            ("tool_after_run", "no action"),
            ("tool_after:kill", "no such point"),
            ("tool_after_run:stop", "no such action"),
            ("tool_after_run:kill@x", "the pass is not a number"),
            ("tool_after_run:kill@0", "the pass is out of range"),
            ("tool_after_run:kill@+", "the pass is not a number"),
            ("tool_after_run:kill@1++", "the pass is not a number"),
        ] {
            let err = Armed::parse(bad).unwrap_err().to_string();
            assert!(err.contains(reason), "{bad}: {err}");
            assert!(err.contains("idle_after"), "the points are listed: {err}");
        }
    }
}
