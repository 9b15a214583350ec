//! One session's task: catch up with the log, ask the machine, carry out the
//! command, append what happened.
//!
//! Events a step produces are appended together, in one optimistic append
//! (retried on conflict with the API appending client input), after the work
//! is done: a model response becomes `x.model_response`, the public `agent.*`
//! events, `span.model_request_end` and `x.model_request` in one batch. Event
//! ids shown in previews are chosen before the response completes, from the seq
//! the event is expected at; an id's seq is therefore a lower bound, which is
//! what `find_event` relies on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use logbook_core::event::{
    AgentCustomToolUse, AgentMessage, AgentThinking, AgentToolResult, AgentToolUse, AutoPermission, CacheCreationUsage,
    ContentBlock, EvaluatedPermission, Event, ModelRequest, ModelResponse, ModelUsage, RetryStatus, SessionError,
    SessionErrorDetail, SessionStatusIdle, SessionStatusRescheduled, SessionStatusRunning, SessionUsage,
    SpanModelRequestEnd, SpanModelRequestStart, StopReason, ToolEvaluation, ToolStarted, ToolUseLink, UsageSnapshot,
    WorkspaceDelta,
};
use logbook_core::{Entry, EventId, Json, Record, Seq, SessionId};
use logbook_replay::{Command, FailReason, Machine, conversation};
use logbook_store::{Append, AppendError, Read};
use serde_json::Value;

use super::tools::{ToolCall, ToolExecutor};
use super::{RunnerHandle, TaskSignals, ToolOutcome};
use crate::api::environments::{self, Environment};
use crate::api::error::ApiError;
use crate::api::sessions::{self, Status, StoredSession};
use crate::api::tools::{PolicyKind, Tool};
use crate::model::{AgentView, ModelError, StreamEvent, build_request};
use crate::previews::{Preview, PreviewKind};
use crate::state::AppState;
use crate::tenancy::Tenant;

/// Attempts of one append that keeps losing races with the API.
const MAX_APPEND_ATTEMPTS: usize = 256;
/// Records read per catch-up step.
const CATCH_UP_BATCH: usize = 10_000;
/// Built-in tools the `auto` policy lets run without asking: they only read.
const AUTO_ALLOWED: [&str; 5] = ["read", "glob", "grep", "web_search", "web_fetch"];

pub(crate) struct Task {
    state: AppState,
    handle: RunnerHandle,
    tenant: Tenant,
    session: SessionId,
    signals: Arc<TaskSignals>,
    machine: Machine,
    entries: Vec<Entry>,
    /// The last model failure, to name the error when retries run out.
    last_error: Option<ModelError>,
}

impl Task {
    pub(crate) fn new(
        state: AppState,
        handle: RunnerHandle,
        tenant: Tenant,
        session: SessionId,
        signals: Arc<TaskSignals>,
    ) -> Task {
        Task { state, handle, tenant, session, signals, machine: Machine::new(), entries: Vec::new(), last_error: None }
    }

    /// Takes steps until the machine waits (or `max_steps`).
    pub(crate) async fn run(&mut self, max_steps: usize) -> Result<(), ApiError> {
        for _ in 0..max_steps {
            self.catch_up().await?;
            let command = self.machine.next(&self.handle.config().policy);
            tracing::debug!(session = %self.session, ?command, "runner step");
            match command {
                Command::Wait => return Ok(()),
                Command::StartTurn | Command::Resume => {
                    self.append(vec![(None, Event::SessionStatusRunning(SessionStatusRunning {}))]).await?;
                    self.set_status(Status::Running).await;
                }
                Command::CallModel { attempt } => self.call_model(attempt).await?,
                Command::GiveUp => {
                    let error = self.last_error.clone();
                    self.give_up(error.as_ref()).await?;
                }
                Command::CloseModelRequest { start_id } => {
                    self.append(vec![(None, request_end(start_id, ModelUsage::default(), true))]).await?;
                }
                Command::RunTools(ids) => self.run_tools(ids).await?,
                Command::DenyTools(calls) => {
                    let events = calls
                        .into_iter()
                        .map(|(id, message)| {
                            let text = match message {
                                Some(message) => format!("The user denied this tool call: {message}"),
                                None => "This tool call was denied by the permission policy.".to_owned(),
                            };
                            (None, tool_result(id, ToolOutcome::error(text)))
                        })
                        .collect();
                    self.append(events).await?;
                }
                Command::FailTools { ids, reason } => {
                    let text = match reason {
                        FailReason::Orphaned => {
                            "The server restarted while this tool call ran; it was not run again and its outcome is unknown."
                        }
                        FailReason::Interrupted => "Tool execution was interrupted before completion. Please retry.",
                        FailReason::Superseded => "The user sent a new message instead of answering this tool call.",
                    };
                    let events = ids.into_iter().map(|id| (None, tool_result(id, ToolOutcome::error(text)))).collect();
                    self.append(events).await?;
                }
                Command::AwaitClient(ids) => {
                    self.idle(StopReason::RequiresAction { event_ids: ids }, Vec::new()).await?;
                }
                Command::EndTurn => self.idle(StopReason::EndTurn, Vec::new()).await?,
                Command::Interrupt { open } => {
                    let text = "Tool execution was interrupted before completion. Please retry.";
                    let results =
                        open.into_iter().map(|id| (None, tool_result(id, ToolOutcome::error(text)))).collect();
                    self.idle(StopReason::EndTurn, results).await?;
                }
            }
        }
        Ok(())
    }

    /// Reads and applies every durable entry not yet seen.
    async fn catch_up(&mut self) -> Result<(), ApiError> {
        loop {
            let from = Seq::new(self.entries.len() as u64);
            let session = self.session;
            let records: Vec<Record> =
                self.state.blocking(move |store| Ok(store.read(session, from, CATCH_UP_BATCH)?)).await?;
            if records.is_empty() {
                return Ok(());
            }
            for record in records {
                let entry = record.entry().map_err(ApiError::internal)?;
                self.machine.apply(&entry);
                self.entries.push(entry);
            }
        }
    }

    /// Appends events at the head; `Some(id)` keeps an id chosen in advance.
    async fn append(&self, events: Vec<(Option<EventId>, Event)>) -> Result<Vec<Record>, ApiError> {
        let state = self.state.clone();
        let session = self.session;
        self.state
            .blocking(move |store| {
                // A conflict names the written head (the durable one may lag it).
                let mut expected = store.head(session)?.next;
                for _ in 0..MAX_APPEND_ATTEMPTS {
                    let at = state.now();
                    let entries: Vec<Entry> = events
                        .iter()
                        .enumerate()
                        .map(|(idx, (id, event))| Entry {
                            id: id.unwrap_or_else(|| state.event_id(Seq::new(expected.get() + idx as u64))),
                            event: event.clone(),
                            at,
                        })
                        .collect();
                    match store.append(session, expected, &entries) {
                        Ok(records) => return Ok(records),
                        Err(AppendError::Conflict { actual, .. }) => expected = actual,
                        Err(other) => return Err(other.into()),
                    }
                }
                Err(ApiError::unavailable("the session is too busy to append to"))
            })
            .await
    }

    async fn load_session(&self) -> Result<StoredSession, ApiError> {
        let tenant = self.tenant;
        let session = self.session;
        self.state.blocking(move |store| sessions::load(store, &tenant, session).map(|(_, s)| s)).await
    }

    /// Records the session's status in its object (an index of the log).
    async fn set_status(&self, status: Status) {
        let tenant = self.tenant;
        let session = self.session;
        let now = self.state.now();
        let res = self.state.blocking(move |store| sessions::set_status(store, &tenant, session, status, now)).await;
        if let Err(err) = res {
            tracing::warn!(%session, error = %err, "cannot record the session status");
        }
    }

    /// `session.usage` then `session.status_idle`, after `before`.
    async fn idle(
        &mut self,
        stop_reason: StopReason,
        mut before: Vec<(Option<EventId>, Event)>,
    ) -> Result<(), ApiError> {
        let session = self.load_session().await?;
        let mut totals = logbook_replay::totals(&self.entries);
        // A turn still running is counted up to its last entry; the idle is now.
        if self.machine.in_turn()
            && let Some(last) = self.entries.last()
        {
            totals.active_micros += u64::try_from(self.state.now().unix_micros() - last.at.unix_micros()).unwrap_or(0);
        }
        let cents = super::pricing::list_cost_cents(&session.agent.model.id, &totals);
        let budget = session.budget.as_ref().and_then(|b| serde_json::from_value(b.clone()).ok());
        before.push((None, Event::SessionUsage(SessionUsage { usage: usage_snapshot(&totals, cents), budget })));
        before.push((None, Event::SessionStatusIdle(SessionStatusIdle { stop_reason, stop_details: None })));
        self.append(before).await?;
        self.set_status(Status::Idle).await;
        let view = sessions::UsageView {
            input_tokens: totals.input_tokens,
            output_tokens: totals.output_tokens,
            cache_read_input_tokens: totals.cache_read_input_tokens,
            cache_creation_input_tokens: totals.cache_creation_input_tokens,
            active_seconds: totals.active_micros as f64 / 1e6,
            list_cost_cents: cents,
        };
        let (tenant, id) = (self.tenant, self.session);
        if let Err(err) = self.state.blocking(move |store| sessions::set_usage(store, &tenant, id, view)).await {
            tracing::warn!(session = %id, error = %err, "cannot record the session usage");
        }
        Ok(())
    }

    async fn give_up(&mut self, error: Option<&ModelError>) -> Result<(), ApiError> {
        let detail = error_detail(error, RetryStatus::Exhausted);
        self.idle(StopReason::RetriesExhausted, vec![(None, Event::SessionError(SessionError { error: detail }))]).await
    }

    async fn call_model(&mut self, attempt: u32) -> Result<(), ApiError> {
        let session = self.load_session().await?;
        // A budget stops the session before a request once the cost reached it,
        // so it overshoots by at most one request.
        if let Some(limit) = session.budget_cents() {
            let totals = logbook_replay::totals(&self.entries);
            let cost = super::pricing::list_cost_cents(&session.agent.model.id, &totals).unwrap_or(0);
            if cost >= limit {
                return self.idle(StopReason::BudgetReached, Vec::new()).await;
            }
        }
        let messages: Vec<Value> = conversation(&self.entries).iter().map(|m| m.to_json()).collect();
        let tools: Vec<Value> = session.agent.tools.iter().filter_map(|t| serde_json::to_value(t).ok()).collect();
        let view = AgentView {
            model: session.agent.model.id.clone(),
            effort: Some(session.agent.model.effort.level.clone()),
            system: session.agent.system.clone(),
            tools,
        };
        let request = build_request(&view, &messages, &self.handle.config().request_options);
        let started = self.append(vec![(None, Event::SpanModelRequestStart(SpanModelRequestStart {}))]).await?;
        let Some(start) = started.first() else { return Err(ApiError::internal("append returned nothing")) };
        let start_id = start.entry().map_err(ApiError::internal)?.id;
        let base = start.seq().get() + 2; // after the start and x.model_response
        let Some(client) = self.handle.config().model.as_ref() else {
            let error = ModelError::Authentication {
                message:
                    "no model API is configured: set ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL for another endpoint)"
                        .to_owned(),
            };
            return self.model_failed(start_id, attempt, error).await;
        };
        let began = Instant::now();
        // Preview ids by content block index, chosen at block start.
        let mut preview_ids: HashMap<usize, EventId> = HashMap::new();
        let mut n_public_blocks = 0u64;
        let state = self.state.clone();
        let session_id = self.session;
        // The preview callback borrows the id table only while the stream runs.
        let outcome = {
            let mut on_event = |event: StreamEvent| match event {
                StreamEvent::BlockStart { index, kind } => {
                    let preview = match kind.as_str() {
                        "text" => Some(PreviewKind::Message),
                        "thinking" | "redacted_thinking" => Some(PreviewKind::Thinking),
                        _ => None,
                    };
                    if matches!(kind.as_str(), "text" | "thinking" | "redacted_thinking" | "tool_use") {
                        let id = state.event_id(Seq::new(base + n_public_blocks));
                        n_public_blocks += 1;
                        preview_ids.insert(index, id);
                        if let Some(kind) = preview {
                            state.previews().publish(session_id, Preview::Start { event_id: id, kind });
                        }
                    }
                }
                StreamEvent::TextDelta { index, text } => {
                    if let Some(id) = preview_ids.get(&index) {
                        state.previews().publish(session_id, Preview::Delta { event_id: *id, index: 0, text });
                    }
                }
                StreamEvent::MessageStart { .. }
                | StreamEvent::ThinkingDelta { .. }
                | StreamEvent::InputJsonDelta { .. }
                | StreamEvent::BlockStop { .. }
                | StreamEvent::MessageDelta { .. } => {}
            };
            tokio::select! {
                res = client.stream(&request, &mut on_event) => Some(res),
                () = self.signals.interrupt.notified() => None,
            }
        };
        match outcome {
            None => {
                // Interrupted: close the request; the machine applies the interrupt.
                self.append(vec![(None, request_end(start_id, ModelUsage::default(), true))]).await?;
                Ok(())
            }
            Some(Err(error)) => self.model_failed(start_id, attempt, error).await,
            Some(Ok(response)) => {
                self.last_error = None;
                let usage = ModelUsage {
                    input_tokens: response.usage.input_tokens,
                    output_tokens: response.usage.output_tokens,
                    cache_creation_input_tokens: response.usage.cache_creation_input_tokens,
                    cache_read_input_tokens: response.usage.cache_read_input_tokens,
                    speed: None,
                };
                let mut events: Vec<(Option<EventId>, Event)> = Vec::new();
                let mut public: Vec<(Option<EventId>, Event)> = Vec::new();
                let mut links = Vec::new();
                for (index, block) in response.content.iter().enumerate() {
                    let id = preview_ids.get(&index).copied();
                    let kind = block.get("type").and_then(Value::as_str).unwrap_or("");
                    match kind {
                        "text" => {
                            let text = block.get("text").and_then(Value::as_str).unwrap_or("").to_owned();
                            let content = vec![ContentBlock::Text { text }];
                            public.push((id, Event::AgentMessage(AgentMessage { content })));
                        }
                        "thinking" | "redacted_thinking" => public.push((id, Event::AgentThinking(AgentThinking {}))),
                        "tool_use" => {
                            let id = id.unwrap_or_else(|| self.state.event_id(Seq::new(base + public.len() as u64)));
                            let name = block.get("name").and_then(Value::as_str).unwrap_or("").to_owned();
                            let input = Json::new(block.get("input").unwrap_or(&Value::Null));
                            if let Some(provider_id) = block.get("id").and_then(Value::as_str) {
                                links.push(ToolUseLink { provider_id: provider_id.to_owned(), event_id: id });
                            }
                            public.push((Some(id), tool_use_event(&session, name, input)));
                        }
                        // Server tool blocks (web search results, ...) stay in x.model_response.
                        _ => {}
                    }
                }
                events.push((
                    None,
                    Event::ModelResponse(ModelResponse {
                        model_request_start_id: start_id,
                        content: Json::new(&Value::Array(response.content.clone())),
                        tool_uses: links,
                    }),
                ));
                events.extend(public);
                events.push((None, request_end(start_id, usage.clone(), false)));
                events.push((
                    None,
                    Event::ModelRequest(ModelRequest {
                        model_request_start_id: start_id,
                        model: response.model.clone(),
                        request_id: response.request_id.clone(),
                        stop_reason: response.stop_reason.clone(),
                        usage,
                        duration_ms: began.elapsed().as_millis() as u64,
                        attempt,
                    }),
                ));
                self.append(events).await?;
                Ok(())
            }
        }
    }

    /// Records a failed model call: retried with backoff while attempts last.
    async fn model_failed(&mut self, start_id: EventId, attempt: u32, error: ModelError) -> Result<(), ApiError> {
        tracing::warn!(session = %self.session, attempt, %error, "model call failed");
        let max = self.handle.config().policy.max_model_attempts;
        let retrying = error.is_retryable() && attempt < max;
        let end = (None, request_end(start_id, ModelUsage::default(), true));
        if !retrying {
            let detail = error_detail(Some(&error), RetryStatus::Exhausted);
            self.last_error = Some(error);
            return self
                .idle(
                    StopReason::RetriesExhausted,
                    vec![end, (None, Event::SessionError(SessionError { error: detail }))],
                )
                .await;
        }
        let detail = error_detail(Some(&error), RetryStatus::Retrying);
        let delay = error.retry_after().unwrap_or_else(|| backoff(self.handle.config().retry_base, attempt));
        self.last_error = Some(error);
        self.append(vec![
            end,
            (None, Event::SessionError(SessionError { error: detail })),
            (None, Event::SessionStatusRescheduled(SessionStatusRescheduled {})),
        ])
        .await?;
        self.set_status(Status::Rescheduling).await;
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = self.signals.interrupt.notified() => {}
        }
        Ok(())
    }

    async fn run_tools(&mut self, ids: Vec<EventId>) -> Result<(), ApiError> {
        self.append(vec![(None, Event::ToolStarted(ToolStarted { tool_use_ids: ids.clone() }))]).await?;
        let session = self.load_session().await?;
        let environment = self.load_environment(&session).await;
        let tools = Arc::clone(&self.handle.config().tools);
        for id in ids {
            let call = self.entries.iter().find(|e| e.id == id).map(|e| e.event.clone());
            let outcome = match call {
                Some(Event::AgentToolUse(tool_use)) => {
                    let call = ToolCall {
                        session: self.session,
                        tool_use_id: id,
                        name: &tool_use.name,
                        input: &tool_use.input,
                        agent_tools: &session.agent.tools,
                        environment: environment.as_ref(),
                        log: &self.entries,
                    };
                    let finished = tokio::select! {
                        outcome = tools.run(&call) => Some(outcome),
                        () = self.signals.interrupt.notified() => None,
                    };
                    match finished {
                        Some(outcome) => outcome,
                        None => {
                            // The machine closes this and the other open calls;
                            // what the call changed before it stopped is still recorded.
                            let delta = self.workspace_delta(tools.as_ref(), id).await;
                            if !delta.is_empty() {
                                self.append(delta).await?;
                            }
                            return Ok(());
                        }
                    }
                }
                Some(Event::AgentMcpToolUse(tool_use)) => ToolOutcome::error(format!(
                    "MCP server {} is not connected: MCP tools are not supported by this server yet",
                    tool_use.mcp_server_name
                )),
                _ => ToolOutcome::error("internal error: the tool call was not found in the log"),
            };
            let mut events = self.workspace_delta(tools.as_ref(), id).await;
            events.push((None, tool_result(id, outcome)));
            self.append(events).await?;
        }
        Ok(())
    }

    /// The session's environment, if it can be loaded (a tool that needs it
    /// fails clearly without it).
    async fn load_environment(&self, session: &StoredSession) -> Option<Environment> {
        let tenant = self.tenant;
        let id = session.environment_id;
        match self.state.blocking(move |store| environments::load(store, &tenant, id).map(|(_, env)| env)).await {
            Ok(environment) => Some(environment),
            Err(err) => {
                tracing::warn!(session = %self.session, error = %err, "cannot load the session's environment");
                None
            }
        }
    }

    /// An `x.workspace_delta` with what the call `id` changed, or nothing when
    /// it changed nothing. A failed scan is logged; its changes are found by
    /// the next one.
    async fn workspace_delta(&self, tools: &dyn ToolExecutor, id: EventId) -> Vec<(Option<EventId>, Event)> {
        match tools.workspace_changes(self.session, &self.entries).await {
            Ok(changes) if changes.is_empty() => Vec::new(),
            Ok(changes) => {
                vec![(None, Event::WorkspaceDelta(WorkspaceDelta { tool_use_id: Some(id), changes }))]
            }
            Err(err) => {
                tracing::warn!(session = %self.session, error = %err, "cannot record the workspace changes");
                Vec::new()
            }
        }
    }
}

fn request_end(start_id: EventId, usage: ModelUsage, is_error: bool) -> Event {
    Event::SpanModelRequestEnd(SpanModelRequestEnd {
        model_request_start_id: start_id,
        model_usage: usage,
        is_error: Some(is_error),
    })
}

fn tool_result(tool_use_id: EventId, outcome: ToolOutcome) -> Event {
    Event::AgentToolResult(AgentToolResult {
        tool_use_id,
        content: Some(outcome.content),
        is_error: Some(outcome.is_error),
    })
}

/// The event for a tool_use block: a custom tool, or a built-in one with the
/// permission its policy gives.
fn tool_use_event(session: &StoredSession, name: String, input: Json) -> Event {
    let custom = session.agent.tools.iter().any(|t| matches!(t, Tool::Custom { name: n, .. } if *n == name));
    if custom {
        return Event::AgentCustomToolUse(AgentCustomToolUse { name, input, session_thread_id: None });
    }
    let (permission, evaluation) = permission_for(session, &name);
    Event::AgentToolUse(AgentToolUse {
        name,
        input,
        evaluated_permission: Some(permission),
        evaluation,
        session_thread_id: None,
    })
}

/// The permission of a built-in tool under the agent's toolset config. The
/// `auto` policy allows the read-only tools and asks for the rest.
fn permission_for(session: &StoredSession, name: &str) -> (EvaluatedPermission, Option<ToolEvaluation>) {
    for tool in &session.agent.tools {
        if let Tool::AgentToolset { default_config, configs } = tool {
            let (enabled, policy) = match configs.iter().find(|c| c.name == name) {
                Some(config) => (config.enabled, config.permission_policy.kind),
                None => (default_config.enabled, default_config.permission_policy.kind),
            };
            if !enabled {
                return (EvaluatedPermission::Deny, None);
            }
            return match policy {
                PolicyKind::AlwaysAllow => (EvaluatedPermission::Allow, Some(ToolEvaluation::AlwaysAllow)),
                PolicyKind::AlwaysAsk => (EvaluatedPermission::Ask, Some(ToolEvaluation::AlwaysAsk)),
                PolicyKind::Auto => {
                    if AUTO_ALLOWED.contains(&name) {
                        (
                            EvaluatedPermission::Allow,
                            Some(ToolEvaluation::Auto { evaluated_permission: AutoPermission::Allow }),
                        )
                    } else {
                        let verdict = AutoPermission::Ask { reason_code: "indeterminate".to_owned() };
                        (EvaluatedPermission::Ask, Some(ToolEvaluation::Auto { evaluated_permission: verdict }))
                    }
                }
            };
        }
    }
    // A tool the agent does not have: refused before any policy applies.
    (EvaluatedPermission::Deny, None)
}

fn error_detail(error: Option<&ModelError>, retry_status: RetryStatus) -> SessionErrorDetail {
    let Some(error) = error else {
        return SessionErrorDetail::ModelRequestFailedError {
            message: "the model request failed too many times".to_owned(),
            retry_status,
        };
    };
    let message = error.to_string();
    match error {
        ModelError::RateLimited { .. } => SessionErrorDetail::ModelRateLimitedError { message, retry_status },
        ModelError::Overloaded { .. } => SessionErrorDetail::ModelOverloadedError { message, retry_status },
        ModelError::Server { .. }
        | ModelError::Broken { .. }
        | ModelError::Authentication { .. }
        | ModelError::InvalidRequest { .. }
        | ModelError::Connect { .. } => SessionErrorDetail::ModelRequestFailedError { message, retry_status },
    }
}

fn backoff(base: Duration, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
    base.saturating_mul(factor).min(super::RETRY_MAX)
}

/// The `session.usage` snapshot of `totals`.
fn usage_snapshot(totals: &logbook_replay::Totals, cents: Option<u64>) -> UsageSnapshot {
    UsageSnapshot {
        input_tokens: Some(totals.input_tokens),
        output_tokens: Some(totals.output_tokens),
        cache_read_input_tokens: Some(totals.cache_read_input_tokens),
        cache_creation: Some(CacheCreationUsage {
            ephemeral_5m_input_tokens: Some(totals.cache_creation_input_tokens),
            ephemeral_1h_input_tokens: None,
        }),
        server_tool_use: None,
        active_seconds: Some(logbook_core::event::Millis(totals.active_micros / 1000)),
        list_cost: cents.map(|c| logbook_core::event::Money { amount: c.to_string(), currency: "USD".to_owned() }),
    }
}
