//! [`sample_events`]: one realistic, fixed instance of every event type, for
//! golden vectors, documentation and benchmarks.
//!
//! Deterministic by construction (fixed ids, no randomness, no clock), so its
//! encoding can be committed and compared. It is not a consistent session: the
//! events reference each other loosely and are in type order, not a real flow.

use std::collections::BTreeMap;

use serde_json::json;

use crate::event::{
    AgentConfig, AgentCustomToolUse, AgentMcpToolResult, AgentMcpToolUse, AgentMessage, AgentThinking,
    AgentThreadContextCompacted, AgentThreadMessageReceived, AgentThreadMessageSent, AgentToolResult, AgentToolUse,
    AttachedResource, AutoPermission, Budget, CacheCreationUsage, Compaction, ConfirmationResult, ContentBlock,
    DocumentSource, EvaluatedPermission, Event, FileChange, ForkOrigin, ImageSource, Millis, ModelRequest,
    ModelResponse, ModelUsage, Money, OutcomeEvaluationResult, RepositoryCheckout, ResourceChange, RetryStatus, Rubric,
    SearchResultCitations, SearchResultContent, ServerToolRequests, ServerToolUsage, SessionDeleted, SessionError,
    SessionErrorDetail, SessionResource, SessionStatusIdle, SessionStatusRescheduled, SessionStatusRunning,
    SessionStatusTerminated, SessionThreadCreated, SessionThreadStatusIdle, SessionThreadStatusRescheduled,
    SessionThreadStatusRunning, SessionThreadStatusTerminated, SessionUpdated, SessionUsage, SpanModelRequestEnd,
    SpanModelRequestStart, SpanOutcomeEvaluationEnd, SpanOutcomeEvaluationOngoing, SpanOutcomeEvaluationStart, Speed,
    StopDetails, StopReason, SystemMessage, ToolEvaluation, ToolStarted, ToolUseLink, UsageSnapshot,
    UserCustomToolResult, UserDefineOutcome, UserInterrupt, UserMessage, UserToolConfirmation, UserToolResult,
    WorkflowRunCreated, WorkflowRunError, WorkflowRunErrorDetail, WorkflowRunPhase, WorkflowRunPhaseEnded,
    WorkflowRunPhaseStarted, WorkflowRunResult, WorkflowRunStatusEnded, WorkflowRunStatusIdle,
    WorkflowRunStatusRunning, WorkspaceChange, WorkspaceDelta,
};
use crate::id::{EventId, OutcomeId, SessionId, SessionResourceId, ThreadId, WorkflowRunId};
use crate::json::Json;

/// One instance of every [`Event`] variant, in [`EventType::ALL`] order.
///
/// [`EventType::ALL`]: crate::event::EventType::ALL
pub fn sample_events() -> Vec<Event> {
    let tool_use = event_id(10);
    let mcp_tool_use = event_id(12);
    let custom_tool_use = event_id(14);
    let request_start = event_id(31);
    let evaluation_start = event_id(33);
    let phase_started = event_id(39);
    let subagent = ThreadId::from_parts(T0, 0x5ab);
    let outcome = OutcomeId::from_parts(T0, 0x0c);
    let run = WorkflowRunId::from_parts(T0, 0x3f);
    let usage = ModelUsage {
        input_tokens: 1_830,
        output_tokens: 412,
        cache_creation_input_tokens: 1_024,
        cache_read_input_tokens: 6_144,
        speed: Some(Speed::Standard),
    };

    vec![
        Event::UserMessage(UserMessage {
            content: vec![
                ContentBlock::text("Summarize the attached report and fix the failing test."),
                ContentBlock::Document {
                    source: DocumentSource::Base64 {
                        media_type: "application/pdf".to_owned(),
                        data: "JVBERi0xLjcKJeLjz9MK".to_owned(),
                    },
                    title: Some("Q3 report".to_owned()),
                    context: None,
                },
                ContentBlock::Image { source: ImageSource::Url { url: "https://example.com/chart.png".to_owned() } },
            ],
        }),
        Event::UserInterrupt(UserInterrupt { session_thread_id: None }),
        Event::UserToolConfirmation(UserToolConfirmation {
            tool_use_id: tool_use,
            result: ConfirmationResult::Deny,
            deny_message: Some("Don't touch the production config.".to_owned()),
            session_thread_id: None,
        }),
        Event::UserCustomToolResult(UserCustomToolResult {
            custom_tool_use_id: custom_tool_use,
            content: Some(vec![ContentBlock::text(r#"{"city":"Paris","temp_c":18}"#)]),
            is_error: Some(false),
            session_thread_id: None,
        }),
        Event::UserToolResult(UserToolResult {
            tool_use_id: tool_use,
            content: Some(vec![ContentBlock::text("test result: ok. 42 passed; 0 failed")]),
            is_error: None,
            session_thread_id: Some(subagent),
        }),
        Event::UserDefineOutcome(UserDefineOutcome {
            outcome_id: outcome,
            description: "A passing test suite and a one-page summary.".to_owned(),
            rubric: Rubric::Text { content: "- all tests pass\n- summary fits on one page".to_owned() },
            max_iterations: Some(3),
        }),
        Event::SystemMessage(SystemMessage {
            content: vec![ContentBlock::text("The user is on a metered connection.")],
        }),
        Event::AgentMessage(AgentMessage {
            content: vec![ContentBlock::text("The failing test expects UTC; fixing it now.")],
        }),
        Event::AgentThinking(AgentThinking {}),
        Event::AgentToolUse(AgentToolUse {
            name: "bash".to_owned(),
            input: Json::new(&json!({"command": "cargo test -p logbook-core", "timeout_ms": 120000})),
            evaluated_permission: Some(EvaluatedPermission::Ask),
            evaluation: Some(ToolEvaluation::Auto {
                evaluated_permission: AutoPermission::Ask { reason_code: "high_risk".to_owned() },
            }),
            session_thread_id: None,
        }),
        Event::AgentToolResult(AgentToolResult {
            tool_use_id: tool_use,
            content: Some(vec![ContentBlock::text("test result: ok. 42 passed; 0 failed")]),
            is_error: Some(false),
        }),
        Event::AgentMcpToolUse(AgentMcpToolUse {
            name: "search_issues".to_owned(),
            mcp_server_name: "github".to_owned(),
            input: Json::new(&json!({"query": "is:open label:bug", "limit": 5})),
            evaluated_permission: Some(EvaluatedPermission::Allow),
            evaluation: Some(ToolEvaluation::AlwaysAllow),
            session_thread_id: None,
        }),
        Event::AgentMcpToolResult(AgentMcpToolResult {
            mcp_tool_use_id: mcp_tool_use,
            content: Some(vec![ContentBlock::SearchResult {
                source: "https://github.com/example/repo/issues/7".to_owned(),
                title: "Timestamps drift in CI".to_owned(),
                content: vec![SearchResultContent::Text {
                    text: "CI runs in UTC+2 and the test hard-codes UTC.".to_owned(),
                }],
                citations: SearchResultCitations { enabled: true },
            }]),
            is_error: None,
        }),
        Event::AgentCustomToolUse(AgentCustomToolUse {
            name: "get_weather".to_owned(),
            input: Json::new(&json!({"city": "Paris"})),
            session_thread_id: None,
        }),
        Event::AgentThreadMessageSent(AgentThreadMessageSent {
            to_session_thread_id: subagent,
            content: vec![ContentBlock::text("Review the diff in src/time.rs.")],
            to_agent_name: Some("reviewer".to_owned()),
        }),
        Event::AgentThreadMessageReceived(AgentThreadMessageReceived {
            from_session_thread_id: subagent,
            content: vec![ContentBlock::text("Looks good; one nit on naming.")],
            from_agent_name: Some("reviewer".to_owned()),
        }),
        Event::AgentThreadContextCompacted(AgentThreadContextCompacted {}),
        Event::SessionStatusRunning(SessionStatusRunning {}),
        Event::SessionStatusIdle(SessionStatusIdle {
            stop_reason: StopReason::RequiresAction { event_ids: vec![tool_use, custom_tool_use] },
            stop_details: None,
        }),
        Event::SessionStatusRescheduled(SessionStatusRescheduled {}),
        Event::SessionStatusTerminated(SessionStatusTerminated {}),
        Event::SessionError(SessionError {
            error: SessionErrorDetail::ModelOverloadedError {
                message: "The model is overloaded; retrying.".to_owned(),
                retry_status: RetryStatus::Retrying,
            },
        }),
        Event::SessionUpdated(SessionUpdated {
            agent: None,
            budget: Some(None),
            metadata: Some(BTreeMap::from([("ticket".to_owned(), "OPS-142".to_owned())])),
            title: Some(Some("Fix the UTC test".to_owned())),
        }),
        Event::SessionUsage(SessionUsage {
            usage: UsageSnapshot {
                input_tokens: Some(12_400),
                output_tokens: Some(2_310),
                cache_read_input_tokens: Some(48_000),
                cache_creation: Some(CacheCreationUsage {
                    ephemeral_5m_input_tokens: Some(4_096),
                    ephemeral_1h_input_tokens: Some(0),
                }),
                server_tool_use: Some(ServerToolUsage { web_search_requests: Some(2), web_fetch_requests: Some(1) }),
                active_seconds: Some(Millis(93_250)),
                list_cost: Some(usd("184")),
            },
            budget: Some(Budget::Limit { max_list_cost: usd("2500") }),
        }),
        Event::SessionDeleted(SessionDeleted {}),
        Event::SessionThreadCreated(SessionThreadCreated {
            session_thread_id: subagent,
            agent_name: "reviewer".to_owned(),
            workflow_run_id: Some(run),
        }),
        Event::SessionThreadStatusRunning(SessionThreadStatusRunning {
            session_thread_id: subagent,
            agent_name: "reviewer".to_owned(),
        }),
        Event::SessionThreadStatusIdle(SessionThreadStatusIdle {
            session_thread_id: subagent,
            agent_name: "reviewer".to_owned(),
            stop_reason: StopReason::Refusal,
            stop_details: Some(StopDetails::Refusal { category: Some("cyber".to_owned()), explanation: None }),
        }),
        Event::SessionThreadStatusRescheduled(SessionThreadStatusRescheduled {
            session_thread_id: subagent,
            agent_name: "reviewer".to_owned(),
        }),
        Event::SessionThreadStatusTerminated(SessionThreadStatusTerminated {
            session_thread_id: subagent,
            agent_name: "reviewer".to_owned(),
        }),
        Event::SpanModelRequestStart(SpanModelRequestStart {}),
        Event::SpanModelRequestEnd(SpanModelRequestEnd {
            model_request_start_id: request_start,
            model_usage: usage.clone(),
            is_error: Some(false),
        }),
        Event::SpanOutcomeEvaluationStart(SpanOutcomeEvaluationStart { outcome_id: outcome, iteration: 0 }),
        Event::SpanOutcomeEvaluationOngoing(SpanOutcomeEvaluationOngoing { outcome_id: outcome, iteration: 0 }),
        Event::SpanOutcomeEvaluationEnd(SpanOutcomeEvaluationEnd {
            outcome_evaluation_start_id: evaluation_start,
            outcome_id: outcome,
            iteration: 0,
            result: OutcomeEvaluationResult::NeedsRevision,
            explanation: "The summary runs to two pages.".to_owned(),
            usage: ModelUsage { speed: None, ..usage.clone() },
        }),
        Event::WorkflowRunCreated(WorkflowRunCreated {
            workflow_run_id: run,
            name: "audit-dependencies".to_owned(),
            description: None,
            phases: vec![
                WorkflowRunPhase {
                    id: "wrph_collect".to_owned(),
                    name: "collect".to_owned(),
                    description: Some("List every dependency.".to_owned()),
                },
                WorkflowRunPhase { id: "wrph_review".to_owned(), name: "review".to_owned(), description: None },
            ],
        }),
        Event::WorkflowRunStatusRunning(WorkflowRunStatusRunning { workflow_run_id: run }),
        Event::WorkflowRunStatusIdle(WorkflowRunStatusIdle { workflow_run_id: run }),
        Event::WorkflowRunPhaseStarted(WorkflowRunPhaseStarted {
            workflow_run_id: run,
            workflow_run_phase_id: "wrph_collect".to_owned(),
        }),
        Event::WorkflowRunPhaseEnded(WorkflowRunPhaseEnded {
            workflow_run_id: run,
            workflow_run_phase_id: "wrph_collect".to_owned(),
            phase_started_id: phase_started,
        }),
        Event::WorkflowRunStatusEnded(WorkflowRunStatusEnded {
            workflow_run_id: run,
            result: WorkflowRunResult::Error {
                error: WorkflowRunErrorDetail::TimeoutError { message: "The run reached its time limit.".to_owned() },
            },
        }),
        Event::WorkflowRunError(WorkflowRunError {
            workflow_run_id: Some(run),
            error: WorkflowRunErrorDetail::TimeoutError { message: "The run reached its time limit.".to_owned() },
        }),
        Event::WorkspaceDelta(WorkspaceDelta {
            tool_use_id: Some(tool_use),
            changes: vec![
                WorkspaceChange {
                    path: "src/time.rs".to_owned(),
                    change: FileChange::Written { blob: [0xa7; 32], size: 5_120, mode: 0o100_644 },
                },
                WorkspaceChange { path: "target/.lock".to_owned(), change: FileChange::Removed },
                WorkspaceChange {
                    path: "latest".to_owned(),
                    change: FileChange::Symlink { target: "reports/2026-05-01.md".to_owned() },
                },
            ],
        }),
        Event::ForkOrigin(ForkOrigin {
            parent_session_id: SessionId::from_parts(T0 - 60_000, 0x9a7e27),
            parent_seq: 41,
            parent_chain_hash: [0x3c; 32],
        }),
        Event::ModelRequest(ModelRequest {
            model_request_start_id: request_start,
            model: "claude-sonnet-4-6".to_owned(),
            request_id: Some("req_011CZm3vQ8pKx2Lr7Nq9TbYd".to_owned()),
            stop_reason: Some("tool_use".to_owned()),
            usage,
            duration_ms: 2_840,
            attempt: 1,
        }),
        Event::ModelResponse(ModelResponse {
            model_request_start_id: request_start,
            content: Json::new(&serde_json::json!([
                {"type": "thinking", "thinking": "The tests fail on the date parser.", "signature": "EqQBCkgIARABGAIiQL"},
                {"type": "text", "text": "I'll run the test suite."},
                {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "bash",
                 "input": {"command": "cargo test -p parser"}}
            ])),
            tool_uses: vec![ToolUseLink {
                provider_id: "toolu_01A09q90qw90lq917835lq9".to_owned(),
                event_id: event_id(9),
            }],
        }),
        Event::ToolStarted(ToolStarted { tool_use_ids: vec![event_id(9)] }),
        Event::AgentConfig(AgentConfig {
            agent: Json::new(&serde_json::json!({
                "model": {"id": "claude-sonnet-4-6", "effort": {"type": "medium"}},
                "system": "You are a careful engineer.",
                "tools": [{"type": "agent_toolset_20260401"}]
            })),
            options: Json::new(&serde_json::json!({"max_tokens": 16000, "thinking": "from_effort"})),
        }),
        Event::Compaction(Compaction {
            summary: "The user asked to fix the date parser; the tests now pass.".to_owned(),
            through_seq: 41,
            tokens_before: 151_000,
            tokens_after: 12_400,
            model: Some("claude-sonnet-4-6".to_owned()),
            usage: ModelUsage {
                input_tokens: 151_000,
                output_tokens: 900,
                cache_creation_input_tokens: 0,
                cache_read_input_tokens: 0,
                speed: None,
            },
        }),
        Event::SessionResource(SessionResource {
            resource_id: SessionResourceId::from_parts(T0, 0x5e5),
            change: ResourceChange::Attached {
                resource: AttachedResource::GithubRepository {
                    url: "https://github.com/octo-org/parser".to_owned(),
                    mount_path: "/workspace/parser".to_owned(),
                    checkout: Some(RepositoryCheckout::Branch { name: "fix-dates".to_owned() }),
                },
            },
        }),
        Event::ServerToolRequests(ServerToolRequests {
            model_request_start_id: request_start,
            web_search_requests: 3,
            web_fetch_requests: 1,
        }),
    ]
}

/// 2025-11-24T16:00:00Z, the instant every sample id is minted at.
const T0: u64 = 1_764_000_000_000;

fn event_id(n: u128) -> EventId {
    EventId::from_parts(T0, n)
}

fn usd(amount: &str) -> Money {
    Money { amount: amount.to_owned(), currency: "USD".to_owned() }
}
