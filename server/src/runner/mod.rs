//! The runner: drives sessions by interpreting the state machine's commands.
//!
//! One tokio task per active session. The task reads the session's new log
//! entries (new since the fold its session's previous task left, kept in
//! `folded`), folds them into the [`Machine`], asks for the next [`Command`],
//! carries it out (a model call, tool runs, status events) and appends what
//! happened; then asks again, until the machine says [`Command::Wait`]. It
//! changes a session only by appending events. [`RunnerHandle::wake`] starts a
//! task (or tells the running one to look again); an interrupt also cancels the
//! model call or tool in flight. After a restart, [`RunnerHandle::recover`]
//! wakes every session whose last status was running, and the machine turns
//! what was in flight into explicit results. In a self-hosted session the
//! machine never asks to run a built-in call: the task makes sure the session
//! has a work item in its environment's queue and waits for the worker's
//! `user.tool_result`s like any client input. MCP calls always run here,
//! through the session's connections in `crate::mcp`, which the task
//! prepares when a turn starts.

pub mod failpoint;
mod folded;
pub mod inline;
mod outcome;
pub mod pricing;
pub mod server_tools;
mod step;
pub mod tools;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt as _;
use logbook_core::event::ModelUsage;
use logbook_core::{EventId, SessionId, WorkspaceId};
use logbook_replay::Policy;
use tokio::sync::{Notify, Semaphore};

use crate::model::{ModelClient, RequestOptions};
use crate::state::AppState;
use crate::tenancy::Tenant;

pub use tools::{ToolCall, ToolExecutor, ToolOutcome, UnavailableTools};

/// Backoff of the first retry of a model request; doubles per attempt.
pub const RETRY_BASE: Duration = Duration::from_millis(500);
/// Longest backoff between model attempts.
pub const RETRY_MAX: Duration = Duration::from_secs(8);
/// How often a grading call under way says so, by default. The hosted
/// platform's cadence is not documented; a grader's answer takes seconds to
/// minutes, and each heartbeat is an event in the log.
pub const OUTCOME_HEARTBEAT: Duration = Duration::from_secs(5);
/// The longest heartbeat period `LOGBOOK_OUTCOME_HEARTBEAT_MS` may set.
pub const MAX_OUTCOME_HEARTBEAT: Duration = Duration::from_secs(3_600);
/// Steps one task takes before yielding to other sessions and going on.
const MAX_STEPS_PER_WAKE: usize = 10_000;
/// Rounds of [`MAX_STEPS_PER_WAKE`] steps one wake may take (about 80,000
/// model calls) before its turn is ended as a runaway decision loop.
const MAX_STEP_LIMITS_PER_WAKE: usize = 16;

/// What the runner needs besides the app state.
#[derive(Debug)]
pub struct RunnerConfig {
    pub model: Option<ModelClient>,
    pub request_options: RequestOptions,
    pub tools: Arc<dyn ToolExecutor>,
    /// Sessions' connections to their agents' MCP servers.
    pub mcp: Arc<crate::mcp::McpHub>,
    pub policy: Policy,
    /// Retry backoff base (tests use a small one).
    pub retry_base: Duration,
    /// How often a grading call under way appends
    /// `span.outcome_evaluation_ongoing` (`LOGBOOK_OUTCOME_HEARTBEAT_MS`;
    /// default [`OUTCOME_HEARTBEAT`]); from 1 ms to [`MAX_OUTCOME_HEARTBEAT`].
    pub outcome_heartbeat: Duration,
    /// Built-in tools the `auto` permission policy runs without asking
    /// (`LOGBOOK_AUTO_ALLOW`; default [`DEFAULT_AUTO_ALLOWED`]); it asks for
    /// the others. Each decision is recorded in its `agent.tool_use`, so
    /// changing this never changes how a log re-projects.
    pub auto_allowed: Vec<String>,
    /// Most sessions of one workspace calling the model or running tools at
    /// once (`LOGBOOK_MAX_WORKING_SESSIONS`; default
    /// [`DEFAULT_MAX_WORKING_PER_WORKSPACE`]); at least 1.
    pub max_working_per_workspace: usize,
}

/// Sessions of one workspace that may call the model or run tools at once,
/// by default. The others stay `running` and take the next free slot in
/// order, one model call or tool run at a time, so that one tenant's many
/// sessions cannot take every sandbox and model connection of the server.
pub const DEFAULT_MAX_WORKING_PER_WORKSPACE: usize = 64;
/// The largest `max_working_per_workspace` (tokio's semaphore holds fewer
/// than 2^61 permits; far past any machine's sandboxes).
pub const MAX_WORKING_PER_WORKSPACE_LIMIT: usize = 1 << 20;

/// Built-in tools the `auto` policy runs without asking by default: they only read.
pub const DEFAULT_AUTO_ALLOWED: [&str; 5] = ["read", "glob", "grep", "web_search", "web_fetch"];
/// The built-in tools `LOGBOOK_AUTO_ALLOW` may name.
pub const BUILT_IN_TOOLS: [&str; 8] = ["bash", "read", "write", "edit", "glob", "grep", "web_fetch", "web_search"];

/// Shared handle: which sessions have a task, and their signals.
#[derive(Debug, Clone)]
pub struct RunnerHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: RunnerConfig,
    tasks: Mutex<HashMap<SessionId, Arc<TaskSignals>>>,
    /// What finished tasks had read, for their sessions' next wakes.
    folded: folded::FoldedCache,
    /// Each workspace's work slots (see [`DEFAULT_MAX_WORKING_PER_WORKSPACE`]).
    /// One entry per workspace that ran a session: workspaces are made by
    /// the operator, so this stays small.
    slots: Mutex<HashMap<WorkspaceId, Arc<Semaphore>>>,
}

impl Inner {
    /// The task map. A lock poisoned by a panic is taken anyway: each
    /// update is one insert or remove, so the map holds whole entries, and
    /// giving up on it would leave every session to no task for good.
    fn tasks(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Arc<TaskSignals>>> {
        self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Signals from the API to a session's task, and what the task keeps
/// beyond a panic of its own (the usage the provider reported).
#[derive(Debug, Default)]
pub(crate) struct TaskSignals {
    /// New entries may be there: look again before exiting.
    pub(crate) dirty: std::sync::atomic::AtomicBool,
    /// An interrupt arrived: stop what is in flight.
    pub(crate) interrupt: Notify,
    /// The session ended (archived or deleted): its fold is not kept.
    pub(crate) ended: std::sync::atomic::AtomicBool,
    /// Anything happened (input, an interrupt, the end): a task waiting for
    /// a work slot decides again.
    pub(crate) poke: Notify,
    /// What the provider reported so far of the model request in flight
    /// (by its start's id): kept outside the task, so that a turn a panic
    /// ends is billed for what the provider counted before it.
    pub(crate) reported: KeptFor<crate::model::Usage>,
    /// What the grading calls of the evaluation under way (by its start's
    /// id) were billed so far, kept outside the task for the same reason.
    pub(crate) graded: KeptFor<ModelUsage>,
}

/// A value kept for one event (a request's or an evaluation's start) and
/// read back only for that event: a later one replaces it.
#[derive(Debug)]
pub(crate) struct KeptFor<T>(Mutex<Option<(EventId, T)>>);

impl<T> Default for KeptFor<T> {
    fn default() -> Self {
        KeptFor(Mutex::new(None))
    }
}

impl<T: Clone> KeptFor<T> {
    pub(crate) fn set(&self, id: EventId, value: T) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((id, value));
    }

    /// The value kept for `id`, if this process kept one.
    pub(crate) fn get(&self, id: EventId) -> Option<T> {
        let kept = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        kept.as_ref().and_then(|(kept_for, value)| (*kept_for == id).then(|| value.clone()))
    }
}

impl TaskSignals {
    /// Drops a stored interrupt signal, if any: the interrupt it announced
    /// is in the log, which the task reads next.
    pub(crate) fn forget_interrupt(&self) {
        let _ = self.interrupt.notified().now_or_never();
    }
}

/// A session's entry in the runner's task map, while its task runs. The task
/// removes the entry itself when it exits (under the lock that decides
/// whether it exits); this removes it if the task ended by a panic outside
/// its steps (which are caught), so that the next wake starts a new task
/// instead of finding a dead one's entry and leaving the session to no one.
struct Registered {
    handle: RunnerHandle,
    session: SessionId,
    signals: Arc<TaskSignals>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut tasks = self.handle.inner.tasks();
        if tasks.get(&self.session).is_some_and(|signals| Arc::ptr_eq(signals, &self.signals)) {
            tasks.remove(&self.session);
        }
    }
}

/// Why [`end_turn`] ends a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// A step failed (or ran away): the task's state is sound.
    Failed,
    /// A step panicked: the task was made afresh from the log.
    Panicked,
}

/// Ends the turn a step failed or panicked in, guarded: if ending it
/// panics too (the same state meets the same bug), a fresh task records
/// the error with the store alone ([`step::Task::record_unreadable`]).
/// Errors are logged: the session then waits for new input.
async fn end_turn(
    task: &mut step::Task,
    why: Ending,
    new_task: &impl Fn(folded::Folded) -> step::Task,
    session: SessionId,
) {
    let ended = match why {
        Ending::Failed => std::panic::AssertUnwindSafe(task.fail_turn()).catch_unwind().await,
        Ending::Panicked => std::panic::AssertUnwindSafe(task.fail_after_panic()).catch_unwind().await,
    };
    match ended {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            tracing::error!(%session, error = %err, "cannot end the turn; the session waits for new input");
        }
        Err(again) => {
            tracing::error!(%session, panic = panic_message(again.as_ref()),
                "the runner panicked ending the turn; recording the error with the store alone");
            *task = new_task(folded::Folded::default());
            if let Err(err) = task.record_unreadable().await {
                tracing::error!(%session, error = %err, "cannot record the error; the session waits for new input");
            }
        }
    }
}

/// What a caught panic said, for the log.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(message), _) => message,
        (None, Some(message)) => message,
        (None, None) => "(a panic without a message)",
    }
}

impl RunnerHandle {
    pub fn new(config: RunnerConfig) -> RunnerHandle {
        RunnerHandle {
            inner: Arc::new(Inner {
                config,
                tasks: Mutex::new(HashMap::new()),
                folded: Default::default(),
                slots: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Makes sure the session's task runs and sees the latest entries.
    /// `interrupt` also cancels the model call or tool in flight.
    pub fn wake(&self, state: &AppState, workspace: WorkspaceId, session: SessionId, interrupt: bool) {
        let mut tasks = self.inner.tasks();
        if let Some(signals) = tasks.get(&session) {
            signals.dirty.store(true, std::sync::atomic::Ordering::SeqCst);
            if interrupt {
                signals.interrupt.notify_one();
            }
            signals.poke.notify_one();
            return;
        }
        let signals = Arc::new(TaskSignals::default());
        tasks.insert(session, Arc::clone(&signals));
        drop(tasks);
        let handle = self.clone();
        let state = state.clone();
        let tenant = Tenant { workspace };
        tokio::spawn(async move {
            let _registered = Registered { handle: handle.clone(), session, signals: Arc::clone(&signals) };
            // A session woken before goes on from what its last task read.
            let folded = handle.inner.folded.take(session).unwrap_or_default();
            let new_task =
                |folded| step::Task::new(state.clone(), handle.clone(), tenant, session, Arc::clone(&signals), folded);
            let mut task = new_task(folded);
            let mut limits = 0;
            loop {
                match std::panic::AssertUnwindSafe(task.run(MAX_STEPS_PER_WAKE)).catch_unwind().await {
                    Ok(Ok(step::Stopped::Waiting)) => {}
                    Ok(Ok(step::Stopped::StepLimit)) if limits + 1 < MAX_STEP_LIMITS_PER_WAKE => {
                        // A long turn: let other sessions' tasks run, then go on.
                        limits += 1;
                        tokio::task::yield_now().await;
                        continue;
                    }
                    Ok(Ok(step::Stopped::StepLimit)) => {
                        // No turn takes this many steps: a decision loop (a bug),
                        // which must not append for ever.
                        tracing::error!(%session, steps = MAX_STEPS_PER_WAKE * MAX_STEP_LIMITS_PER_WAKE,
                            "the runner took too many steps without waiting; ending the turn");
                        end_turn(&mut task, Ending::Failed, &new_task, session).await;
                    }
                    Ok(Err(err)) => {
                        tracing::error!(%session, error = %err, "runner step failed; ending the turn");
                        end_turn(&mut task, Ending::Failed, &new_task, session).await;
                    }
                    Err(panic) => {
                        // A bug. The task's state is whatever the panic left: a
                        // new one reads the session from its log and ends the
                        // turn (or fails the one the panic kept from
                        // starting), so the session does not stay `running`
                        // with nothing running it.
                        tracing::error!(%session, panic = panic_message(panic.as_ref()),
                            "the runner panicked; ending the turn");
                        task = new_task(Default::default());
                        end_turn(&mut task, Ending::Panicked, &new_task, session).await;
                    }
                }
                // Exit unless something arrived while the task decided to stop.
                let mut tasks = handle.inner.tasks();
                if signals.dirty.swap(false, std::sync::atomic::Ordering::SeqCst) {
                    drop(tasks);
                    limits = 0;
                    continue;
                }
                // Parked before the task is gone from the map: a wake that
                // finds no task finds the fold. `end_session` marks a live
                // task under the same lock, so an ended session's fold is
                // either never parked or forgotten after.
                if !signals.ended.load(std::sync::atomic::Ordering::SeqCst) {
                    handle.inner.folded.park(session, task.into_folded());
                }
                tasks.remove(&session);
                return;
            }
        });
    }

    /// Wakes every session whose last status was running or rescheduling: after
    /// a restart, their work in flight must be closed and continued.
    pub async fn recover(&self, state: &AppState) -> usize {
        let sessions = match state.blocking(crate::api::sessions::unfinished).await {
            Ok(sessions) => sessions,
            Err(err) => {
                tracing::error!(error = %err, "cannot list sessions to recover");
                return 0;
            }
        };
        for (workspace, session) in &sessions {
            self.wake(state, *workspace, *session, false);
        }
        sessions.len()
    }

    /// The session ended (archived or deleted): its sandbox and MCP
    /// connections are released; once this returns, nothing of it runs.
    pub async fn end_session(&self, session: SessionId) {
        if let Some(signals) = self.inner.tasks().get(&session) {
            signals.ended.store(true, std::sync::atomic::Ordering::SeqCst);
            signals.poke.notify_one();
        }
        self.inner.folded.forget(session);
        self.inner.config.mcp.end_session(session);
        self.inner.config.tools.end_session(session).await;
    }

    /// Stops every sandbox and closes every MCP connection (server shutdown).
    pub async fn shutdown_tools(&self) {
        self.inner.config.tools.shutdown().await;
        self.inner.config.mcp.close_all();
    }

    /// `workspace`'s work slots.
    pub(crate) fn slots(&self, workspace: WorkspaceId) -> Arc<Semaphore> {
        let permits = self.inner.config.max_working_per_workspace.clamp(1, MAX_WORKING_PER_WORKSPACE_LIMIT);
        // A poisoned lock only means a panic elsewhere mid-insert: the map
        // still holds whole entries.
        let mut slots = self.inner.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(slots.entry(workspace).or_insert_with(|| Arc::new(Semaphore::new(permits))))
    }

    pub(crate) fn config(&self) -> &RunnerConfig {
        &self.inner.config
    }

    /// Sessions with a live task (for tests and metrics).
    pub fn n_active(&self) -> usize {
        self.inner.tasks().len()
    }

    /// Sessions whose folded log is kept for their next wake, and the
    /// canonical bytes of their entries (for tests and metrics).
    pub fn folded_usage(&self) -> (usize, usize) {
        self.inner.folded.usage()
    }
}
