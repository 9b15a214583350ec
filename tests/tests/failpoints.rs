//! A crash, or a bug, at every labelled point of a turn (reliability goal
//! G-T8), with the real binary and its sandboxed tools.
//!
//! Goal: whatever point of a turn the server dies at (SIGKILL) or panics
//! at, the session ends up idle with every call answered by exactly one
//! result (a custom tool's by the client's, or the server's closing it),
//! every model request closed, and the non-idempotent command (`echo run >> runs.txt`, or an MCP server's
//! `echo`) run at most once, and run exactly once if its result says it
//! succeeded; the log's workspace the one on disk; `logbook rerun`
//! reproduces every decision of the log; the next turn works. After a
//! kill the turn goes on after the restart as if nothing happened (no
//! `session.error`, the model's own end; a confirmation asked once; every
//! outcome evaluation ended once, and satisfied). After a panic the server
//! lives on, the turn ends with a `session.error`, and the panic is
//! counted. An interrupt landing at any point stops the turn cleanly
//! ([`interrupt_case`]); a message landing there is answered
//! ([`message_case`]); an answer (a confirmation allowing or denying the
//! call, a custom tool's result) sent as soon as the call is listed, before
//! the session asks, is taken, even across a kill ([`answer_case`]).
//!
//! Method: for each point of `logbook_server::runner::failpoint::Point::ALL`
//! a turn passes (and the second pass of each model point, the call after
//! the tool's result), start the server with
//! `LOGBOOK_FAILPOINT=<point>:<kill|panic>@<pass>`, send a message the fake
//! model answers with that bash call and then text, wait for the kill (and
//! restart without the failpoint) or for the idle, and check. Both sweeps
//! also run a turn that asks to confirm the call (the question's idle and
//! the confirmed turn are points of their own), a turn working to an
//! outcome (the grading points; a panic fails the evaluation under way
//! with the turn), a turn compacted on the way (the compaction points), a
//! turn calling an MCP tool instead of bash, and (kill, panic, interrupt,
//! message) a turn calling a custom tool; the kill sweep also runs a turn
//! whose call the test denies.
//! The points are deterministic, so CI runs
//! each case once; `LOGBOOK_FAILPOINT_ROUNDS` repeats the sweeps (the
//! kill's timing against the server's background work varies between
//! rounds).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use logbook_server::runner::failpoint::{Action, Point};
use logbook_tests::fake_model::{FakeModel, is_summary_request};
use logbook_tests::mcp_server::{Auth, McpServer};
use logbook_tests::server::{Api, Server, host_snapshot, outcome, rerun_passes, sandbox_data_dir, types, user_message};
use serde_json::{Value, json};

/// Deadline of one sandboxed turn on a loaded machine.
const TURN_DEADLINE: Duration = Duration::from_secs(120);
/// Longest wait for an armed kill to end the server.
const KILL_DEADLINE: Duration = Duration::from_secs(120);
/// How often the test looks for the kill or a question.
const POLL: Duration = Duration::from_millis(25);

fn rounds() -> u64 {
    std::env::var("LOGBOOK_FAILPOINT_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1)
}

/// Whether a short turn with no outcome passes `point` (grading needs an
/// outcome, compaction a long context).
fn in_a_plain_turn(point: Point) -> bool {
    match point {
        Point::TurnBeforeRunning
        | Point::TurnAfterRunning
        | Point::ModelBeforeStart
        | Point::ModelAfterStart
        | Point::ModelStreaming
        | Point::ModelAfterResponse
        | Point::ModelAfterAppend
        | Point::ToolBeforeStart
        | Point::ToolAfterStart
        | Point::ToolAfterRun
        | Point::ToolAfterResult
        | Point::IdleBefore
        | Point::IdleAfter => true,
        Point::CompactAfterSummary | Point::GradeAfterStart | Point::GradeAfterVerdict => false,
    }
}

/// Every point a plain turn passes, at its first pass, and the model points
/// at their second (the request after the tool's result).
fn cases() -> Vec<(Point, u64)> {
    let mut cases: Vec<(Point, u64)> =
        Point::ALL.into_iter().filter(|point| in_a_plain_turn(*point)).map(|point| (point, 1)).collect();
    cases.extend(
        [
            Point::ModelBeforeStart,
            Point::ModelAfterStart,
            Point::ModelStreaming,
            Point::ModelAfterResponse,
            Point::ModelAfterAppend,
        ]
        .into_iter()
        .map(|point| (point, 2)),
    );
    cases
}

fn script() -> Vec<Value> {
    vec![
        json!({"content": [{"type": "tool_use", "id": "toolu_count", "name": "bash",
                            "input": {"command": "echo run >> runs.txt"}}],
               "stop_reason": "tool_use"}),
        json!({"content": [{"type": "text", "text": "Counted."}], "stop_reason": "end_turn"}),
    ]
}

/// [`script`], then the grader's verdicts: one, and one more for a grading
/// done again after a restart.
fn script_with_verdicts() -> Vec<Value> {
    let verdict = json!({"content": [{"type": "text", "text": "VERDICT: satisfied\nOne run, as asked."}],
                         "stop_reason": "end_turn"});
    let mut script = script();
    script.extend([verdict.clone(), verdict]);
    script
}

fn start(data: &Path, model: &FakeModel, failpoint: Option<&str>) -> (Server, Api) {
    start_with(data, model, failpoint, &[])
}

fn start_with(data: &Path, model: &FakeModel, failpoint: Option<&str>, extra: &[(&str, &str)]) -> (Server, Api) {
    let mut env: Vec<(&str, &str)> = extra.to_vec();
    env.extend(failpoint.map(|value| ("LOGBOOK_FAILPOINT", value)));
    let server = Server::start_sandboxed(data, model, &env);
    let api = Api::new(&server).with_turn_deadline(TURN_DEADLINE);
    (server, api)
}

async fn new_session(api: &Api) -> String {
    new_session_with(api, Scenario::AlwaysAllow, None).await
}

/// The checks every case ends with, on the session's listed events.
fn check_log(case: &str, events: &[Value], runs: &HashMap<String, usize>) {
    let mut results: HashMap<&str, Vec<&Value>> = HashMap::new();
    for result in events.iter().filter(|e| is_result(e)) {
        let id = ["tool_use_id", "mcp_tool_use_id", "custom_tool_use_id"]
            .into_iter()
            .find_map(|field| result[field].as_str())
            .unwrap();
        results.entry(id).or_default().push(result);
    }
    let mut tags = Vec::new();
    for call in events.iter().filter(|e| is_call(e)) {
        let id = call["id"].as_str().unwrap();
        let answers = results.remove(id).unwrap_or_default();
        assert_eq!(answers.len(), 1, "{case}: call {id} has {} results: {:#?}", answers.len(), types(events));
        if call["type"] == "agent.custom_tool_use" {
            // The client runs it: its one answer is all there is to check.
            continue;
        }
        let tag = tag_of(call);
        let ran = runs.get(tag).copied().unwrap_or(0);
        assert!(ran <= 1, "{case}: the command {tag} ran {ran} times");
        if answers[0]["is_error"] == false {
            assert_eq!(ran, 1, "{case}: the command {tag} succeeded and ran {ran} times");
        }
        tags.push(tag);
    }
    assert!(results.is_empty(), "{case}: results of no call: {results:?}");
    for tag in runs.keys() {
        assert!(tags.contains(&tag.as_str()), "{case}: {tag} ran, called by nothing listed");
    }
    let what = format!("{case}: every model request");
    assert_each_ends_once(
        &what,
        events,
        "span.model_request_start",
        "span.model_request_end",
        "model_request_start_id",
    );
    assert_eq!(events.last().unwrap()["type"], "session.status_idle", "{case}: {:#?}", types(events));
}

/// What a call counts its runs under: `echo <tag> >> runs.txt` in bash,
/// `{"text": <tag>}` to MCP `echo`.
fn tag_of(call: &Value) -> &str {
    let input = &call["input"];
    match input["command"].as_str() {
        Some(command) => command.split_whitespace().nth(1).unwrap(),
        None => input["text"].as_str().unwrap(),
    }
}

fn is_call(event: &Value) -> bool {
    ["agent.tool_use", "agent.mcp_tool_use", "agent.custom_tool_use"].iter().any(|kind| event["type"] == *kind)
}

/// A call's answer: the server's result, or the client's to a custom tool.
fn is_result(event: &Value) -> bool {
    ["agent.tool_result", "agent.mcp_tool_result", "user.custom_tool_result"].iter().any(|kind| event["type"] == *kind)
}

/// Every evaluation that started ended once, and (`satisfied`) the
/// outcome was met. An outcome interrupted with no evaluation under way
/// ends once with an empty start id (the API's way).
fn check_evaluations(case: &str, events: &[Value], satisfied: bool) {
    let what = format!("{case}: every evaluation");
    let (start, end) = ("span.outcome_evaluation_start", "span.outcome_evaluation_end");
    let (unstarted, events): (Vec<Value>, Vec<Value>) =
        events.iter().cloned().partition(|e| e["type"] == end && e["outcome_evaluation_start_id"] == "");
    assert!(unstarted.len() <= 1, "{case}: {unstarted:#?}");
    assert!(unstarted.iter().all(|e| e["result"] == "interrupted"), "{case}: {unstarted:#?}");
    let events = events.as_slice();
    let n = assert_each_ends_once(&what, events, start, end, "outcome_evaluation_start_id");
    assert!(!satisfied || n > 0, "{case}: no evaluation: {:#?}", types(events));
    if satisfied {
        let last = events.iter().rev().find(|e| e["type"] == end).unwrap();
        assert_eq!(last["result"], "satisfied", "{case}: {last}");
    }
}

/// Every `start` event is named by exactly one `end` event's `field`, and
/// every `end` names a `start`; returns how many started.
fn assert_each_ends_once(what: &str, events: &[Value], start: &str, end: &str, field: &str) -> usize {
    let ids = |kind: &str, field: &str| {
        let mut ids: Vec<&str> =
            events.iter().filter(|e| e["type"] == kind).map(|e| e[field].as_str().unwrap()).collect();
        ids.sort_unstable();
        ids
    };
    let started = ids(start, "id");
    assert_eq!(started, ids(end, field), "{what} ends once: {:#?}", types(events));
    started.len()
}

/// The checks of a session at rest: its log ([`check_log`], against the
/// runs of its calls), its files ([`check_files`]) and its status, idle.
async fn check_rest(case: &str, api: &Api, data: &Path, session: &str, mcp: Option<&McpServer>, events: &[Value]) {
    check_log(case, events, &runs(data, session, mcp));
    check_files(case, api, data, session).await;
    assert_eq!(api.get(&format!("/v1/sessions/{session}")).await["status"], "idle", "{case}");
}

/// The log's workspace at its head is the one on disk: what a call changed
/// is recorded even when the call's turn was cut short (a fork, a replay
/// and the files API all read the log's).
async fn check_files(case: &str, api: &Api, data: &Path, session: &str) {
    let head = *api.seqs_of(session, "session.status_idle").await.last().unwrap();
    let disk = host_snapshot(&data.join("sandboxes").join(session).join("workspace"), "/workspace");
    let mut logged = api.projected_files(session, head).await;
    logged.retain(|path, _| path.starts_with("/workspace/"));
    assert_eq!(logged, disk, "{case}: the log's workspace is the disk's");
}

/// How many times each call ran: [`runs_of`] the bash commands, or the MCP
/// server's calls by their text.
fn runs(data: &Path, session: &str, mcp: Option<&McpServer>) -> HashMap<String, usize> {
    let Some(mcp) = mcp else { return runs_of(data, session) };
    let mut counts = HashMap::new();
    for (_, input) in mcp.calls() {
        *counts.entry(input["text"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    counts
}

/// How many times each command ran: the lines its `echo <tag> >> runs.txt`
/// left, by tag.
fn runs_of(data: &Path, session: &str) -> HashMap<String, usize> {
    let runs = data.join("sandboxes").join(session).join("workspace").join("runs.txt");
    let mut counts = HashMap::new();
    for line in std::fs::read_to_string(runs).unwrap_or_default().lines() {
        *counts.entry(line.to_owned()).or_default() += 1;
    }
    counts
}

/// The next turn of the session (at rest) runs and ends as the model says,
/// and the whole log reruns. (In a turn that asks, the test answers.)
async fn next_turn_and_rerun(case: &str, scenario: Scenario, server: Server, api: &Api, data: &Path, session: &str) {
    let n_idles = api.events(session).await.iter().filter(|e| e["type"] == "session.status_idle").count();
    api.send(session, user_message("and now?")).await;
    api.wait_idle(session, n_idles + 1).await;
    settle(case, scenario, api, session, &mut false).await;
    let events = api.events(session).await;
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn", "{case}: {:#?}", types(&events));
    assert_eq!(api.get(&format!("/v1/sessions/{session}")).await["status"], "idle", "{case}");
    drop(server);
    let stderr = rerun_passes(data);
    assert!(stderr.contains("every decision reproduced"), "{case}: {stderr}");
}

/// The turn a sweep runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// A message; the call runs without asking.
    AlwaysAllow,
    /// A message; the session idles asking to confirm the call, and the
    /// test allows it.
    AlwaysAsk,
    /// An outcome instead of a message (the call runs without asking); the
    /// grader is satisfied.
    Outcome,
    /// A message that [`COMPACTING_CALLS`] long calls answer, in a context
    /// window so small that it is compacted on the way.
    Compaction,
    /// A message; an MCP server's tool is called without asking.
    Mcp,
    /// A message; the session idles asking to confirm the call, and the
    /// test denies it.
    Denied,
    /// A message; the model calls the agent's custom tool, and the test
    /// answers with its result.
    Custom,
}

/// The test's MCP server on loopback is the operator's own.
const MCP_ENV: [(&str, &str); 1] = [("LOGBOOK_MCP_PRIVATE_HOSTS", "127.0.0.1")];

/// Calls of the [`Scenario::Compaction`] turn, each about 500 tokens.
const COMPACTING_CALLS: usize = 8;
/// The window (in tokens) and compaction settings of that turn: compacted
/// at 60 %, keeping 15 %, so every few calls.
const COMPACTING_ENV: [(&str, &str); 3] = [
    ("LOGBOOK_CONTEXT_WINDOW", "3000"),
    ("LOGBOOK_COMPACTION_PERCENT", "60"),
    ("LOGBOOK_COMPACTION_KEEP_PERCENT", "15"),
];

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::AlwaysAllow => "always_allow",
            Scenario::AlwaysAsk => "always_ask",
            Scenario::Outcome => "outcome",
            Scenario::Compaction => "compaction",
            Scenario::Mcp => "mcp",
            Scenario::Denied => "denied",
            Scenario::Custom => "custom",
        }
    }

    fn script(self) -> Vec<Value> {
        match self {
            Scenario::AlwaysAllow | Scenario::AlwaysAsk | Scenario::Outcome | Scenario::Denied => {
                script_with_verdicts()
            }
            Scenario::Compaction => {
                let padding = "x".repeat(1_400);
                let mut script: Vec<Value> = (0..COMPACTING_CALLS)
                    .map(|n| {
                        json!({"content": [{"type": "tool_use", "id": format!("toolu_{n}"), "name": "bash",
                                            "input": {"command": format!("echo run{n} >> runs.txt # {padding}")}}],
                               "stop_reason": "tool_use"})
                    })
                    .collect();
                script.push(json!({"content": [{"type": "text", "text": "Counted."}], "stop_reason": "end_turn"}));
                script
            }
            Scenario::Mcp => {
                let mut script = script();
                script[0] = json!({"content": [{"type": "tool_use", "id": "toolu_count", "name": "mcp__counter__echo",
                                                "input": {"text": "run"}}],
                                   "stop_reason": "tool_use"});
                script
            }
            Scenario::Custom => {
                let mut script = script();
                script[0] = json!({"content": [{"type": "tool_use", "id": "toolu_count", "name": "counter",
                                                "input": {"text": "run"}}],
                                   "stop_reason": "tool_use"});
                script
            }
        }
    }

    /// Sends what starts the turn.
    async fn begin(self, api: &Api, session: &str) {
        let events = match self {
            Scenario::AlwaysAllow
            | Scenario::AlwaysAsk
            | Scenario::Compaction
            | Scenario::Mcp
            | Scenario::Denied
            | Scenario::Custom => user_message("count"),
            Scenario::Outcome => outcome("count the runs", "runs.txt has one line", 3),
        };
        api.send(session, events).await;
    }

    fn env(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Scenario::AlwaysAllow | Scenario::AlwaysAsk | Scenario::Outcome | Scenario::Denied | Scenario::Custom => {
                &[]
            }
            Scenario::Compaction => &COMPACTING_ENV,
            Scenario::Mcp => &MCP_ENV,
        }
    }

    fn policy(self) -> &'static str {
        match self {
            Scenario::AlwaysAllow | Scenario::Outcome | Scenario::Compaction | Scenario::Mcp | Scenario::Custom => {
                "always_allow"
            }
            Scenario::AlwaysAsk | Scenario::Denied => "always_ask",
        }
    }

    /// Whether the turn idles asking the test for something (a
    /// confirmation, a custom tool's result) before it can go on.
    fn asks(self) -> bool {
        match self {
            Scenario::AlwaysAsk | Scenario::Denied | Scenario::Custom => true,
            Scenario::AlwaysAllow | Scenario::Outcome | Scenario::Compaction | Scenario::Mcp => false,
        }
    }

    /// The test's answer to the open call `call` (the event as listed).
    fn answer(self, call: &Value) -> Value {
        let id = &call["id"];
        match self {
            Scenario::AlwaysAsk => json!({"type": "user.tool_confirmation", "tool_use_id": id, "result": "allow"}),
            Scenario::Denied => json!({"type": "user.tool_confirmation", "tool_use_id": id, "result": "deny",
                                       "deny_message": DENIAL}),
            Scenario::Custom => json!({"type": "user.custom_tool_result", "custom_tool_use_id": id,
                                       "content": [{"type": "text", "text": CUSTOM_RESULT}]}),
            Scenario::AlwaysAllow | Scenario::Outcome | Scenario::Compaction | Scenario::Mcp => {
                panic!("a {} turn asks nothing", self.name())
            }
        }
    }

    /// The cases of [`cases`]; in a turn that asks, the second pass of the
    /// points the answered turn passes again (its start and its idle), and
    /// no tool points when nothing runs on the server (a denied call, a
    /// custom tool's); with an outcome, the grading points. The compacting
    /// turn is only killed around its compactions (the first two), and in
    /// the calls after the first.
    fn cases(self) -> Vec<(Point, u64)> {
        let mut cases = cases();
        let again = [Point::TurnBeforeRunning, Point::TurnAfterRunning, Point::IdleBefore, Point::IdleAfter];
        match self {
            Scenario::AlwaysAllow | Scenario::Mcp => {}
            Scenario::AlwaysAsk => cases.extend(again.into_iter().map(|point| (point, 2))),
            Scenario::Denied | Scenario::Custom => {
                cases.retain(|(point, _)| {
                    !matches!(
                        point,
                        Point::ToolBeforeStart | Point::ToolAfterStart | Point::ToolAfterRun | Point::ToolAfterResult
                    )
                });
                cases.extend(again.into_iter().map(|point| (point, 2)));
            }
            Scenario::Outcome => cases.extend([(Point::GradeAfterStart, 1), (Point::GradeAfterVerdict, 1)]),
            Scenario::Compaction => {
                cases = vec![
                    (Point::CompactAfterSummary, 1),
                    (Point::CompactAfterSummary, 2),
                    (Point::ModelAfterResponse, 5),
                    (Point::ToolAfterRun, 5),
                ];
            }
        }
        cases
    }
}

/// A session for `scenario`: its tools run under its policy, with `mcp` as
/// its MCP server `counter` if given, and (for [`Scenario::Custom`]) a
/// custom tool `counter`.
async fn new_session_with(api: &Api, scenario: Scenario, mcp: Option<&McpServer>) -> String {
    let config = json!({"permission_policy": {"type": scenario.policy()}});
    let mut tools = vec![json!({"type": "agent_toolset_20260401", "default_config": config})];
    let mut agent = json!({"name": "failpoints"});
    if let Some(mcp) = mcp {
        tools.push(json!({"type": "mcp_toolset", "mcp_server_name": "counter", "default_config": config}));
        agent["mcp_servers"] = json!([{"type": "url", "name": "counter", "url": mcp.url()}]);
    }
    if scenario == Scenario::Custom {
        tools.push(json!({"type": "custom", "name": "counter", "description": "Counts a run",
                          "input_schema": {"type": "object", "properties": {"text": {"type": "string"}}}}));
    }
    agent["tools"] = Value::Array(tools);
    api.session_with(agent, json!({"name": "failpoints"})).await
}

/// What the [`Scenario::Denied`] test says when it denies the call.
const DENIAL: &str = "not now, thanks";
/// What the [`Scenario::Custom`] test answers its tool's call with.
const CUSTOM_RESULT: &str = "counted by the client";

/// Answers the calls the session's last idle asks about, if it asks, as
/// the scenario does; says whether it did. A server that dies meanwhile
/// (the armed kill) is not asking: `false`, and the restarted one is asked
/// again.
async fn answer_if_asked(api: &Api, scenario: Scenario, session: &str) -> bool {
    let path = format!("/v1/sessions/{session}/events?limit=1000");
    let Ok((200, page)) = api.try_raw(reqwest::Method::GET, &path, None).await else { return false };
    let Some(events) = page["data"].as_array() else { return false };
    let Some(last) = events.last() else { return false };
    if last["type"] != "session.status_idle" || last["stop_reason"]["type"] != "requires_action" {
        return false;
    }
    let path = format!("/v1/sessions/{session}/events");
    for id in last["stop_reason"]["event_ids"].as_array().unwrap() {
        let call = events.iter().find(|e| e["id"] == *id).unwrap();
        let answer = scenario.answer(call);
        let sent = api.try_raw(reqwest::Method::POST, &path, Some(json!({"events": [answer]}))).await;
        if !matches!(sent, Ok((200, _))) {
            return false;
        }
    }
    true
}

/// Waits for what the runner does, answering the question if it is (still)
/// asked, until the session rests.
async fn settle(case: &str, scenario: Scenario, api: &Api, session: &str, confirmed: &mut bool) {
    loop {
        api.wait_runner_quiet().await;
        let n_idles = api.events(session).await.iter().filter(|e| e["type"] == "session.status_idle").count();
        if !answer_if_asked(api, scenario, session).await {
            return;
        }
        assert!(scenario.asks() && !*confirmed, "{case}: asked again after the answer");
        *confirmed = true;
        api.wait_idle(session, n_idles + 1).await;
    }
}

/// What a sweep does at each point.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// The server dies ([`kill_case`]).
    Kill,
    /// The runner panics ([`panic_case`]).
    Panic,
    /// An interrupt lands ([`interrupt_case`]).
    Interrupt,
    /// A new message lands ([`message_case`]).
    Message,
    /// The answer to the call just made lands ([`answer_case`]).
    Answer,
    /// The answer lands, then the server dies ([`answer_case`]).
    AnswerThenKill,
}

/// Where an answer can land before the session asks for it: the call is
/// listed, the question's idle not appended, or appended and the session
/// object not yet told.
const ANSWER_CASES: [(Point, u64); 3] = [(Point::ModelAfterAppend, 1), (Point::IdleBefore, 1), (Point::IdleAfter, 1)];

/// The sweep of one scenario with one fault, `rounds()` times.
async fn sweep(scenario: Scenario, fault: Fault) {
    for round in 0..rounds() {
        let cases = match fault {
            Fault::Kill | Fault::Panic | Fault::Interrupt | Fault::Message => scenario.cases(),
            Fault::Answer | Fault::AnswerThenKill => ANSWER_CASES.to_vec(),
        };
        assert!(!cases.is_empty(), "a {} turn has no cases for {fault:?}", scenario.name());
        for (point, pass) in cases {
            let case = format!("round {round}, {}, {fault:?} at {}@{pass}", scenario.name(), point.name());
            match fault {
                Fault::Kill => kill_case(&case, scenario, point, pass).await,
                Fault::Panic => panic_case(&case, scenario, point, pass).await,
                Fault::Interrupt => interrupt_case(&case, scenario, point, pass).await,
                Fault::Message => message_case(&case, scenario, point, pass).await,
                Fault::Answer => answer_case(&case, scenario, point, pass, false).await,
                Fault::AnswerThenKill => answer_case(&case, scenario, point, pass, true).await,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_at_any_point_of_a_turn_is_recovered_after_a_restart() {
    sweep(Scenario::AlwaysAllow, Fault::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_at_any_point_of_a_confirmed_turn_is_recovered_after_a_restart() {
    sweep(Scenario::AlwaysAsk, Fault::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_at_any_point_of_an_outcome_turn_is_recovered_after_a_restart() {
    sweep(Scenario::Outcome, Fault::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_around_a_compaction_is_recovered_after_a_restart() {
    sweep(Scenario::Compaction, Fault::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_at_any_point_of_a_turn_calling_mcp_is_recovered_after_a_restart() {
    sweep(Scenario::Mcp, Fault::Kill).await;
}

/// A case under way: the fake model, a server armed at the case's point,
/// and the session whose turn the scenario has begun.
struct Armed {
    model: FakeModel,
    /// The [`Scenario::Mcp`] turn's MCP server.
    mcp: Option<McpServer>,
    _dir: tempfile::TempDir,
    data: std::path::PathBuf,
    server: Server,
    api: Api,
    session: String,
}

async fn arm(scenario: Scenario, point: Point, pass: u64, action: Action) -> Armed {
    let model = FakeModel::start(scenario.script()).expect("fake starts");
    let mcp = match scenario {
        Scenario::Mcp => Some(McpServer::start(Auth::None).expect("the MCP server starts")),
        Scenario::AlwaysAllow
        | Scenario::AlwaysAsk
        | Scenario::Outcome
        | Scenario::Compaction
        | Scenario::Denied
        | Scenario::Custom => None,
    };
    let (dir, data) = sandbox_data_dir();
    let action = match action {
        Action::Kill => "kill",
        Action::Panic => "panic",
        Action::Stall => "stall",
    };
    let armed = format!("{}:{action}@{pass}", point.name());
    let release = release_file(&data);
    let mut env = scenario.env().to_vec();
    env.push(("LOGBOOK_FAILPOINT_RELEASE", release.to_str().unwrap()));
    let (server, api) = start_with(&data, &model, Some(&armed), &env);
    let session = new_session_with(&api, scenario, mcp.as_ref()).await;
    scenario.begin(&api, &session).await;
    Armed { model, mcp, _dir: dir, data, server, api, session }
}

/// The file whose creation releases a stalled point.
fn release_file(data: &Path) -> std::path::PathBuf {
    data.with_file_name("release-failpoint")
}

async fn kill_case(case: &str, scenario: Scenario, point: Point, pass: u64) {
    let Armed { model, mcp, _dir, data, mut server, api, session } = arm(scenario, point, pass, Action::Kill).await;
    // Until the kill, the test answers the question the session asks.
    let mut confirmed = false;
    let deadline = Instant::now() + KILL_DEADLINE;
    let exit = loop {
        if let Some(exit) = server.exited() {
            break exit;
        }
        assert!(Instant::now() < deadline, "{case}: the server was not killed");
        if scenario.asks() && !confirmed {
            confirmed = answer_if_asked(&api, scenario, &session).await;
        }
        tokio::time::sleep(POLL).await;
    };
    {
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(exit.signal(), Some(9), "{case}: killed by the failpoint's SIGKILL: {exit:?}");
    }

    let (server, api) = start_with(&data, &model, None, scenario.env());
    settle(case, scenario, &api, &session, &mut confirmed).await;
    let events = api.events(&session).await;
    check_rest(case, &api, &data, &session, mcp.as_ref(), &events).await;
    // The crash is not an error of the turn: it ends as the model says.
    let last = events.last().unwrap();
    assert_eq!(last["stop_reason"]["type"], "end_turn", "{case}: {:#?}", types(&events));
    assert!(!events.iter().any(|e| e["type"] == "session.error"), "{case}: {:#?}", types(&events));
    match scenario {
        Scenario::AlwaysAllow | Scenario::AlwaysAsk | Scenario::Mcp | Scenario::Denied | Scenario::Custom => {}
        Scenario::Outcome => check_evaluations(case, &events, true),
        Scenario::Compaction => {
            let n = events.iter().filter(|e| e["type"] == "agent.thread_context_compacted").count();
            assert!(n >= 2, "{case}: {n} compactions: {:#?}", types(&events));
        }
    }
    next_turn_and_rerun(case, scenario, server, &api, &data, &session).await;
}

async fn panic_case(case: &str, scenario: Scenario, point: Point, pass: u64) {
    let Armed { model: _model, mcp, _dir, data, server, api, session } =
        arm(scenario, point, pass, Action::Panic).await;
    api.wait_idle(&session, 1).await;
    let mut confirmed = false;
    settle(case, scenario, &api, &session, &mut confirmed).await;
    let events = api.events(&session).await;
    check_rest(case, &api, &data, &session, mcp.as_ref(), &events).await;
    assert_eq!(api.metric("logbook_panics_total").await, 1.0, "{case}: the panic is counted");
    // The turn ends with an error, unless its idle was already durable
    // when the panic came.
    let errors = events.iter().filter(|e| e["type"] == "session.error").count();
    let expected = usize::from(point != Point::IdleAfter);
    assert_eq!(errors, expected, "{case}: {:#?}", types(&events));
    // The call the panic stopped says whether it may have run.
    let said = match point {
        Point::ToolBeforeStart => Some("before this call ran"),
        Point::ToolAfterStart | Point::ToolAfterRun => Some("its outcome is unknown"),
        Point::TurnBeforeRunning
        | Point::TurnAfterRunning
        | Point::ModelBeforeStart
        | Point::ModelAfterStart
        | Point::ModelStreaming
        | Point::ModelAfterResponse
        | Point::ModelAfterAppend
        | Point::ToolAfterResult
        | Point::CompactAfterSummary
        | Point::GradeAfterStart
        | Point::GradeAfterVerdict
        | Point::IdleBefore
        | Point::IdleAfter => None,
    };
    if let Some(said) = said {
        let failed = events.iter().find(|e| is_result(e) && e["is_error"] == true).unwrap();
        let text = failed["content"][0]["text"].as_str().unwrap();
        assert!(text.contains(said), "{case}: {text}");
    }
    // A request the panic cut short is billed for what the provider counted
    // of it: the input once it started streaming, the output too once the
    // whole response was in.
    if matches!(point, Point::ModelStreaming | Point::ModelAfterResponse) {
        let end = events.iter().find(|e| e["type"] == "span.model_request_end" && e["is_error"] == true).unwrap();
        let usage = &end["model_usage"];
        assert!(usage["input_tokens"].as_u64().unwrap() > 1, "{case}: {end}");
        if point == Point::ModelAfterResponse {
            assert!(usage["output_tokens"].as_u64().unwrap() > 1, "{case}: {end}");
        }
    }
    if scenario == Scenario::Outcome {
        check_evaluations(case, &events, false);
        if matches!(point, Point::GradeAfterStart | Point::GradeAfterVerdict) {
            let end = events.iter().find(|e| e["type"] == "span.outcome_evaluation_end").unwrap();
            assert_eq!(end["result"], "failed", "{case}: the evaluation fails with the turn: {end}");
            // Billed for the grader's answer, once it was in.
            if point == Point::GradeAfterVerdict {
                assert!(end["usage"]["input_tokens"].as_u64().unwrap() > 1, "{case}: {end}");
            }
        }
    }
    next_turn_and_rerun(case, scenario, server, &api, &data, &session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_at_any_point_of_a_turn_ends_the_turn_and_the_server_goes_on() {
    sweep(Scenario::AlwaysAllow, Fault::Panic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_at_any_point_of_a_confirmed_turn_ends_the_turn() {
    sweep(Scenario::AlwaysAsk, Fault::Panic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_at_any_point_of_an_outcome_turn_ends_the_turn_and_its_evaluation() {
    sweep(Scenario::Outcome, Fault::Panic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_around_a_compaction_ends_the_turn() {
    sweep(Scenario::Compaction, Fault::Panic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_at_any_point_of_a_turn_calling_mcp_ends_the_turn() {
    sweep(Scenario::Mcp, Fault::Panic).await;
}

/// Goal: a bug that the session's state always meets (here: every idle
/// panics, so the runner's recovery, which ends the turn with an idle,
/// panics too) still leaves the session idle with its error recorded, not
/// `running` with nothing running it; and so does every later turn, while
/// the server keeps serving. Method: `idle_before:panic@1+`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_the_recovery_meets_again_still_ends_the_turn() {
    let model = FakeModel::start(script()).expect("fake starts");
    let (_dir, data) = sandbox_data_dir();
    let armed = format!("{}:panic@1+", Point::IdleBefore.name());
    let (server, api) = start(&data, &model, Some(&armed));
    let session = new_session(&api).await;
    for turn in 1..=2 {
        api.send(&session, user_message("count")).await;
        api.wait_idle(&session, turn).await;
        api.wait_runner_quiet().await;
        let events = api.events(&session).await;
        let case = format!("turn {turn}");
        check_log(&case, &events, &runs_of(&data, &session));
        check_files(&case, &api, &data, &session).await;
        assert_eq!(api.get(&format!("/v1/sessions/{session}")).await["status"], "idle", "{case}");
        let errors = events.iter().filter(|e| e["type"] == "session.error").count();
        assert_eq!(errors, turn, "{case}: one error a turn: {:#?}", types(&events));
        assert_eq!(events.last().unwrap()["stop_reason"]["type"], "retries_exhausted", "{case}");
        assert_eq!(api.metric("logbook_panics_total").await, (2 * turn) as f64, "{case}: two panics a turn");
    }
    assert_eq!(runs_of(&data, &session).get("run"), Some(&1), "the first turn's command ran once");
    drop(server);
    let stderr = rerun_passes(&data);
    assert!(stderr.contains("every decision reproduced"), "{stderr}");
}

/// Arms `<point>:stall@<pass>`, begins the scenario's turn and waits until
/// the runner is held at the point. On the way the test answers what the
/// session asks if `answering` (and says whether it did). Nothing is
/// released.
async fn stall_at(case: &str, scenario: Scenario, point: Point, pass: u64, answering: bool) -> (Armed, bool) {
    let armed = arm(scenario, point, pass, Action::Stall).await;
    let stalled = format!("failpoint {}: stalled", point.name());
    let deadline = Instant::now() + TURN_DEADLINE;
    let mut answered = false;
    while !armed.server.output().contains(&stalled) {
        assert!(Instant::now() < deadline, "{case}: the point was not reached");
        if answering && scenario.asks() && !answered {
            answered = answer_if_asked(&armed.api, scenario, &armed.session).await;
        }
        tokio::time::sleep(POLL).await;
    }
    (armed, answered)
}

/// Releases the stalled point and waits until the session rests (answering
/// what it asks then, unless `answered` already).
async fn release(case: &str, scenario: Scenario, armed: &Armed, mut answered: bool) {
    std::fs::write(release_file(&armed.data), b"").unwrap();
    armed.api.wait_idle(&armed.session, 1).await;
    settle(case, scenario, &armed.api, &armed.session, &mut answered).await;
}

/// Stalls the runner at the case's point (answering on the way what the
/// session asks), sends `input` (durable when its POST returns), releases
/// the point and waits until the session rests.
async fn land_at(case: &str, scenario: Scenario, point: Point, pass: u64, input: Value) -> Armed {
    let (armed, answered) = stall_at(case, scenario, point, pass, true).await;
    armed.api.send(&armed.session, input).await;
    release(case, scenario, &armed, answered).await;
    armed
}

/// Goal: an interrupt that lands while the runner is at any point of a turn
/// (between what it read and what it appends) stops the turn cleanly: the
/// session idles (`end_turn`, no `session.error`), every call is answered
/// once, no call the model made after the interrupt runs, the log's files
/// are the disk's, the whole log reruns and the next turn works. Method:
/// `<point>:stall`; the test sees the stall, sends `user.interrupt`
/// (durable when its POST returns), then releases the point.
async fn interrupt_case(case: &str, scenario: Scenario, point: Point, pass: u64) {
    let armed = land_at(case, scenario, point, pass, json!([{"type": "user.interrupt"}])).await;
    let Armed { model: _model, mcp, _dir, data, server, api, session } = armed;
    let mut events = api.events(&session).await;
    // After an idle that ends the turn, the interrupt is a no-op, listed
    // after it (after one asking to confirm, it ends the turn).
    if events.last().unwrap()["type"] == "user.interrupt" {
        assert_eq!(point, Point::IdleAfter, "{case}: an interrupt left unanswered: {:#?}", types(&events));
        events.pop();
    }
    check_rest(case, &api, &data, &session, mcp.as_ref(), &events).await;
    let last = events.last().unwrap();
    assert_eq!(last["stop_reason"]["type"], "end_turn", "{case}: {:#?}", types(&events));
    assert!(!events.iter().any(|e| e["type"] == "session.error"), "{case}: {:#?}", types(&events));
    // Nothing the model asked for after the interrupt ran, nor a call the
    // interrupt came before the start of.
    let ran = runs(&data, &session, mcp.as_ref());
    let before_the_call = pass == 1
        && matches!(
            point,
            Point::TurnBeforeRunning
                | Point::TurnAfterRunning
                | Point::ModelBeforeStart
                | Point::ModelAfterStart
                | Point::ModelStreaming
                | Point::ModelAfterResponse
                | Point::ModelAfterAppend
                | Point::ToolBeforeStart
        );
    assert!(!before_the_call || ran.is_empty(), "{case}: the call ran after the interrupt: {ran:?}");
    let interrupt = match events.iter().position(|e| e["type"] == "user.interrupt") {
        Some(interrupt) => interrupt,
        None => {
            assert_eq!(point, Point::IdleAfter, "{case}: the interrupt is listed: {:#?}", types(&events));
            events.len()
        }
    };
    for call in events[interrupt..].iter().filter(|e| is_call(e)) {
        assert_eq!(ran.get(tag_of(call)), None, "{case}: a call after the interrupt ran: {:#?}", types(&events));
    }
    if scenario == Scenario::Outcome {
        check_evaluations(case, &events, false);
    }
    // A summary the interrupt overtook gives way, billed, cutting nothing.
    if point == Point::CompactAfterSummary {
        let last = compactions(&api, &session).await.pop().unwrap();
        assert_eq!((&last["summary"], &last["through_seq"]), (&json!(""), &json!(0)), "{case}: {last}");
        assert!(last["usage"]["input_tokens"].as_u64().unwrap() > 1, "{case}: billed: {last}");
    }
    next_turn_and_rerun(case, scenario, server, &api, &data, &session).await;
}

/// The session's `x.compaction` events, whole, in order.
async fn compactions(api: &Api, session: &str) -> Vec<Value> {
    let mut compactions = Vec::new();
    for seq in api.seqs_of(session, "x.compaction").await {
        compactions.push(api.get(&format!("/x/v1/sessions/{session}/events/{seq}")).await);
    }
    compactions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_at_any_point_of_a_turn_stops_it_cleanly() {
    sweep(Scenario::AlwaysAllow, Fault::Interrupt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_at_any_point_of_a_confirmed_turn_stops_it_cleanly() {
    sweep(Scenario::AlwaysAsk, Fault::Interrupt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_at_any_point_of_an_outcome_turn_stops_it_and_its_evaluation() {
    sweep(Scenario::Outcome, Fault::Interrupt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_at_any_point_of_a_turn_calling_mcp_stops_it_cleanly() {
    sweep(Scenario::Mcp, Fault::Interrupt).await;
}

/// Goal: a message that lands while the runner is at any point of a turn is
/// answered (the model gets it, in this turn or the next, and an
/// `agent.message` follows it), and the turn is whole: every call answered
/// once and run at most once, the log's files the disk's, no
/// `session.error`; the whole log reruns and the next turn works. Method:
/// `<point>:stall`, then `user.message`, then the release.
async fn message_case(case: &str, scenario: Scenario, point: Point, pass: u64) {
    const LATE: &str = "one more thing";
    let armed = land_at(case, scenario, point, pass, user_message(LATE)).await;
    let Armed { model, mcp, _dir, data, server, api, session } = armed;
    let events = api.events(&session).await;
    check_rest(case, &api, &data, &session, mcp.as_ref(), &events).await;
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn", "{case}: {:#?}", types(&events));
    assert!(!events.iter().any(|e| e["type"] == "session.error"), "{case}: {:#?}", types(&events));
    let late = events.iter().position(|e| e["type"] == "user.message" && e["content"][0]["text"] == LATE).unwrap();
    assert!(
        events[late..].iter().any(|e| e["type"] == "agent.message"),
        "{case}: the late message is answered: {:#?}",
        types(&events)
    );
    let seen = model.requests().iter().any(|request| request.body.to_string().contains(LATE));
    assert!(seen, "{case}: the model got the late message");
    // A summary the message overtook is kept, not written again.
    let summaries = model.requests().iter().filter(|request| is_summary_request(&request.body)).count();
    assert_eq!(summaries, compactions(&api, &session).await.len(), "{case}: one compaction per summary");
    if scenario == Scenario::Outcome {
        check_evaluations(case, &events, false);
    }
    next_turn_and_rerun(case, scenario, server, &api, &data, &session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_at_any_point_of_a_turn_is_answered() {
    sweep(Scenario::AlwaysAllow, Fault::Message).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_at_any_point_of_a_confirmed_turn_is_answered() {
    sweep(Scenario::AlwaysAsk, Fault::Message).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_at_any_point_of_an_outcome_turn_is_answered() {
    sweep(Scenario::Outcome, Fault::Message).await;
}

/// Goal: a call cut short while a process it left in the sandbox writes on
/// is still answered: its changes are recorded once, not chased for ever,
/// and the turn ends with its error. Method: `tool_after_run:panic` on a
/// command that starts a background writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_cut_short_while_its_sandbox_writes_on_is_answered() {
    let writer = "(while :; do echo x >> busy.txt; done) > /dev/null 2>&1 & echo run >> runs.txt";
    let model = FakeModel::start(vec![
        json!({"content": [{"type": "tool_use", "id": "toolu_bg", "name": "bash", "input": {"command": writer}}],
               "stop_reason": "tool_use"}),
        json!({"content": [{"type": "text", "text": "Done."}], "stop_reason": "end_turn"}),
    ])
    .expect("fake starts");
    let (_dir, data) = sandbox_data_dir();
    let armed = format!("{}:panic", Point::ToolAfterRun.name());
    let (_server, api) = start(&data, &model, Some(&armed));
    let session = new_session(&api).await;
    api.send(&session, user_message("write")).await;
    let events = api.wait_idle(&session, 1).await;
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "retries_exhausted", "{:#?}", types(&events));
    let result = events.iter().find(|e| e["type"] == "agent.tool_result").unwrap();
    assert!(result["content"][0]["text"].as_str().unwrap().contains("its outcome is unknown"), "{result}");
    assert_eq!(api.get(&format!("/v1/sessions/{session}")).await["status"], "idle");
    let deltas = api.seqs_of(&session, "x.workspace_delta").await;
    assert_eq!(deltas.len(), 1, "the call's changes are recorded once: {deltas:?}");
    let head = *api.seqs_of(&session, "session.status_idle").await.last().unwrap();
    let recorded = api.projected_files(&session, head).await;
    assert!(recorded.contains_key("/workspace/runs.txt"), "the call's changes are recorded: {recorded:?}");
}

/// Goal: a restart that finds an interrupt already durable after a call
/// that ran (its result not recorded) still records what the call changed
/// before the interrupt closes it, and ends the turn as an interrupt does.
/// Method: `tool_after_run:stall`, the interrupt, then SIGKILL while the
/// runner is held, and a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_pending_at_a_restart_records_the_call_it_closes() {
    let (scenario, case) = (Scenario::AlwaysAllow, "interrupt pending at a restart");
    let (Armed { model, mcp: _, _dir, data, server, api, session }, _) =
        stall_at(case, scenario, Point::ToolAfterRun, 1, false).await;
    api.send(&session, json!([{"type": "user.interrupt"}])).await;
    server.stop();

    let (server, api) = start(&data, &model, None);
    api.wait_idle(&session, 1).await;
    api.wait_runner_quiet().await;
    let events = api.events(&session).await;
    check_rest(case, &api, &data, &session, None, &events).await;
    assert_eq!(runs_of(&data, &session).get("run"), Some(&1), "the call ran before the kill");
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn", "{:#?}", types(&events));
    assert!(!events.iter().any(|e| e["type"] == "session.error"), "{:#?}", types(&events));
    next_turn_and_rerun(case, scenario, server, &api, &data, &session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_around_a_compaction_stops_the_turn_cleanly() {
    sweep(Scenario::Compaction, Fault::Interrupt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_around_a_compaction_is_answered() {
    sweep(Scenario::Compaction, Fault::Message).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_at_any_point_of_a_turn_calling_mcp_is_answered() {
    sweep(Scenario::Mcp, Fault::Message).await;
}

/// Goal: an answer sent as soon as its call is listed, before the session
/// idles asking for it (or before the session object is told of that idle),
/// is taken as it would be after: the call runs once if allowed and never
/// if denied (the denial's message in its result), a custom tool's result
/// reaches the model, the session does not ask again for what it has, and
/// the turn ends as the model says, whole (as [`check_log`] and
/// [`check_files`] have it); the whole log reruns and the next turn works.
/// With `kill`, the server dies right after the answer is durable, and the
/// restarted one does the same. Method: `<point>:stall` at each of
/// [`ANSWER_CASES`]; the test answers the call listed last, then releases
/// the point (or kills the server and starts it again without the point).
async fn answer_case(case: &str, scenario: Scenario, point: Point, pass: u64, kill: bool) {
    let (Armed { model, mcp, _dir, data, server, api, session }, _) =
        stall_at(case, scenario, point, pass, false).await;
    let listed = api.events(&session).await;
    let call = listed.iter().rev().find(|e| is_call(e)).unwrap_or_else(|| panic!("{case}: {:#?}", types(&listed)));
    let call_id = call["id"].clone();
    api.send(&session, json!([scenario.answer(call)])).await;
    let (server, api) = if kill {
        server.stop();
        start_with(&data, &model, None, scenario.env())
    } else {
        std::fs::write(release_file(&data), b"").unwrap();
        (server, api)
    };
    api.wait_idle(&session, 1).await;
    settle(case, scenario, &api, &session, &mut true).await;
    let events = api.events(&session).await;
    check_rest(case, &api, &data, &session, mcp.as_ref(), &events).await;
    assert_eq!(events.last().unwrap()["stop_reason"]["type"], "end_turn", "{case}: {:#?}", types(&events));
    assert!(!events.iter().any(|e| e["type"] == "session.error"), "{case}: {:#?}", types(&events));
    // Not asked for what it has: no question after the answer names the call.
    let answered = events
        .iter()
        .position(|e| {
            let kind = e["type"].as_str().unwrap();
            (kind == "user.tool_confirmation" || kind == "user.custom_tool_result")
                && (e["tool_use_id"] == call_id || e["custom_tool_use_id"] == call_id)
        })
        .unwrap_or_else(|| panic!("{case}: the answer is listed: {:#?}", types(&events)));
    let asked_again = events[answered..]
        .iter()
        .filter(|e| e["type"] == "session.status_idle")
        .any(|e| e["stop_reason"]["event_ids"].as_array().is_some_and(|ids| ids.contains(&call_id)));
    assert!(!asked_again, "{case}: asked for the answer it had: {:#?}", types(&events));
    let ran = runs(&data, &session, mcp.as_ref());
    let result = events.iter().find(|e| is_result(e)).unwrap();
    match scenario {
        Scenario::AlwaysAsk => assert_eq!(ran.get("run"), Some(&1), "{case}: the allowed call ran once"),
        Scenario::Denied => {
            assert!(ran.is_empty(), "{case}: the denied call ran: {ran:?}");
            assert_eq!(result["is_error"], true, "{case}: {result}");
            assert!(result["content"][0]["text"].as_str().unwrap().contains(DENIAL), "{case}: {result}");
        }
        Scenario::Custom => {
            assert_eq!(result["type"], "user.custom_tool_result", "{case}: {result}");
            let seen = model.requests().iter().any(|request| request.body.to_string().contains(CUSTOM_RESULT));
            assert!(seen, "{case}: the model got the custom tool's result");
        }
        Scenario::AlwaysAllow | Scenario::Outcome | Scenario::Compaction | Scenario::Mcp => {
            unreachable!("{case}: nothing to answer")
        }
    }
    next_turn_and_rerun(case, scenario, server, &api, &data, &session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmation_sent_before_the_question_is_taken_even_across_a_kill() {
    sweep(Scenario::AlwaysAsk, Fault::Answer).await;
    sweep(Scenario::AlwaysAsk, Fault::AnswerThenKill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_sent_before_the_question_is_taken_even_across_a_kill() {
    sweep(Scenario::Denied, Fault::Answer).await;
    sweep(Scenario::Denied, Fault::AnswerThenKill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_result_sent_before_the_question_is_taken_even_across_a_kill() {
    sweep(Scenario::Custom, Fault::Answer).await;
    sweep(Scenario::Custom, Fault::AnswerThenKill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_at_any_point_of_a_turn_calling_a_custom_tool_is_recovered_after_a_restart() {
    sweep(Scenario::Custom, Fault::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_at_any_point_of_a_denied_turn_is_recovered_after_a_restart() {
    sweep(Scenario::Denied, Fault::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_at_any_point_of_a_turn_calling_a_custom_tool_stops_it_cleanly() {
    sweep(Scenario::Custom, Fault::Interrupt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_at_any_point_of_a_turn_calling_a_custom_tool_ends_the_turn() {
    sweep(Scenario::Custom, Fault::Panic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_at_any_point_of_a_turn_calling_a_custom_tool_is_answered() {
    sweep(Scenario::Custom, Fault::Message).await;
}
