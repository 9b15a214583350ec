"""Self-hosted environments, end to end, with the official SDK's environment worker.

Goal: the `EnvironmentWorker` of `anthropic==2.14.0`, unchanged, serves a
Logbook self-hosted environment with an environment key minted by
`logbook keys create --environment`: it polls, acks, heartbeats, runs every
built-in tool (bash, read, write, edit, glob, grep) in its own working
directory, posts `user.tool_result`s, and stops its work item; Logbook runs the
model and never the tools; permission policies hold before the worker sees a
call; stops (graceful and forced) reach the worker; a crashed worker's lease
lapses and another worker finishes the call, answered once; work queued
before a restart is served after it; healthcheck items are acked and stopped.

Method: a `logbook serve` with its runner and the scripted fake model; per
test, one self-hosted environment and one or two worker processes
(`worker_main.py`). Each test scripts the model, talks to the session with an
API key (strict response validation), and waits with deadlines on the
session's events, the work item's state, or the worker's log lines. Fixtures:
worker_conftest_helpers.py. Expected behaviour: managed-agents-api.md §2.3,
managed-agents-behaviour.md §7 and §15.6-15.7.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, List

import anthropic
import pytest

from helpers import user_message
from runner_conftest_helpers import fake_model, text_response, tool_response  # noqa: F401 - fixtures by name
from worker_conftest_helpers import (  # noqa: F401 - fixtures by name
    LEASE_TTL_S,
    WorkerHarness,
    describe,
    harness_for,
    strict_client,
    worker_server,
)

tools_env = harness_for("tools")
restart_env = harness_for("restart")
policies_env = harness_for("policies")
stops_env = harness_for("stops")
restop_env = harness_for("restop")
crash_env = harness_for("crash")
healthcheck_env = harness_for("healthcheck")
auth_env = harness_for("auth")
lapse_env = harness_for("lapse")
churn_env = harness_for("churn")
interrupted_env = harness_for("interrupted")
cutoff_env = harness_for("cutoff")
held_env = harness_for("held")


def of_type(events: List[Any], type_: str) -> List[Any]:
    return [e for e in events if e.type == type_]


def text_of(blocks: Any) -> str:
    return "".join(getattr(b, "text", "") or "" for b in (blocks or []))


def results_by_call(events: List[Any]) -> dict:
    """`user.tool_result`s by the id of the call they answer (each call at most once)."""
    out: dict = {}
    for e in of_type(events, "user.tool_result"):
        assert e.tool_use_id not in out, f"two results for {e.tool_use_id}: {describe(events)}"
        out[e.tool_use_id] = e
    return out


def tool_results_sent(request: dict) -> List[dict]:
    """The tool_result blocks of the last user turn of a recorded model request."""
    message = request["body"]["messages"][-1]
    assert message["role"] == "user", request["body"]["messages"]
    return [b for b in message["content"] if isinstance(b, dict) and b.get("type") == "tool_result"]


def block_text(block: dict) -> str:
    content = block.get("content")
    return content if isinstance(content, str) else "".join(b.get("text", "") for b in content or [])


# --------------------------------------------------------------------------- the tools


def test_the_sdk_worker_runs_every_builtin_tool_in_its_workdir(tools_env: WorkerHarness) -> None:
    h = tools_env
    worker = h.start_worker(max_idle=1.0)
    h.fake.set_script(
        [
            tool_response(("toolu_w1", "write", {"file_path": "notes.txt", "content": "alpha\nbeta\n"})),
            tool_response(
                ("toolu_w2", "read", {"file_path": "notes.txt"}),
                ("toolu_w3", "edit", {"file_path": "notes.txt", "old_string": "beta", "new_string": "gamma"}),
            ),
            tool_response(
                ("toolu_w4", "bash", {"command": "cat notes.txt && pwd && echo key=${ANTHROPIC_API_KEY:-none}"}),
                ("toolu_w5", "glob", {"pattern": "*.txt"}),
                ("toolu_w6", "grep", {"pattern": "gam+a"}),
            ),
            text_response("All done."),
        ]
    )
    session = h.session()
    assert h.work_items(session.id)[0].state in ("queued", "starting", "active"), "creating the session queued it"
    h.client.beta.sessions.events.send(session.id, events=[user_message("take notes")])  # type: ignore[list-item]
    events = h.wait_end_turn(session.id)

    uses = of_type(events, "agent.tool_use")
    assert [u.name for u in uses] == ["write", "read", "edit", "bash", "glob", "grep"], describe(events)
    assert of_type(events, "agent.tool_result") == [], "Logbook ran none of the worker's calls"
    results = results_by_call(events)
    assert sorted(results) == sorted(u.id for u in uses), describe(events)
    for use in uses:
        assert results[use.id].is_error is False, (use.name, results[use.id])
    out = {use.name: text_of(results[use.id].content) for use in uses}
    workdir = str(worker.workdir.resolve())
    assert out["write"] == "wrote 11 bytes to notes.txt"
    assert out["read"] == "alpha\nbeta\n"
    assert out["edit"] == "edited notes.txt (1 replacement(s))"
    assert out["bash"].splitlines() == ["alpha", "gamma", workdir, "key=none"], out["bash"]
    assert out["glob"] == f"{workdir}/notes.txt"
    assert out["grep"].strip().endswith("notes.txt:2:gamma"), out["grep"]
    assert (worker.workdir / "notes.txt").read_text() == "alpha\ngamma\n"

    # Statuses: each batch of calls idles with requires_action naming the
    # calls (the worker answers them), the turn ends with end_turn.
    idles = of_type(events, "session.status_idle")
    assert idles[-1].stop_reason.type == "end_turn"
    first_wait = idles[0].stop_reason
    assert first_wait.type == "requires_action" and first_wait.event_ids == [uses[0].id]
    assert h.client.beta.sessions.retrieve(session.id).status == "idle"
    assert text_of(of_type(events, "agent.message")[-1].content) == "All done."

    # The model saw each result under its own tool id.
    requests = h.fake.requests()
    assert len(requests) == 4
    sent = {b["tool_use_id"]: block_text(b) for r in requests[1:] for b in tool_results_sent(r)}
    assert sent["toolu_w1"] == "wrote 11 bytes to notes.txt"
    assert sent["toolu_w2"] == "alpha\nbeta\n"
    assert sent["toolu_w6"].strip().endswith("notes.txt:2:gamma")

    # The worker lets go max_idle after the turn: its item is stopped, by it.
    item = h.wait_work(session.id, lambda w: w.state == "stopped", "stopped")
    assert item.acknowledged_at and item.started_at and item.latest_heartbeat_at and item.stopped_at
    assert worker.count(r"executing tool") == 6


def test_work_queued_before_a_restart_is_served_after_it(worker_server: Any, restart_env: WorkerHarness) -> None:
    h = restart_env
    session_id = worker_server.queued_before_restart
    (item,) = h.work_items(session_id)
    assert item.state == "queued", "the item queued before the restart is still there"
    worker = h.start_worker(max_idle=1.0)
    h.fake.set_script([tool_response(("toolu_r1", "bash", {"command": "echo served"})), text_response("ok")])
    h.client.beta.sessions.events.send(session_id, events=[user_message("after the restart")])  # type: ignore[list-item]
    events = h.wait_end_turn(session_id)
    (result,) = of_type(events, "user.tool_result")
    assert text_of(result.content) == "served"
    served = h.wait_work(session_id, lambda w: w.state == "stopped", "stopped")
    assert served.id == item.id, "the same item, not a new one"
    assert worker.count(rf"claimed work work_id={item.id}") == 1


# --------------------------------------------------------------------------- permission policies


def test_calls_awaiting_confirmation_are_not_the_workers_until_allowed(policies_env: WorkerHarness) -> None:
    """behaviour §15.6: Logbook enforces permission policies before a call reaches the worker.

    An `always_ask` call is listed in `requires_action`; the worker holds it
    (the SDK 2.14.0 runner honours `evaluated_permission`) and Logbook refuses
    a result for it until a `user.tool_confirmation` allows it. The allowed
    one runs on the worker; the denied one never runs: Logbook answers it
    with the denial.
    """
    h = policies_env
    worker = h.start_worker(max_idle=1.0)
    h.fake.set_script(
        [
            tool_response(
                ("toolu_p1", "bash", {"command": "touch allowed.txt && echo ran"}),
                ("toolu_p2", "bash", {"command": "touch denied.txt && echo ran"}),
            ),
            text_response("Understood."),
        ]
    )
    ask = [{"type": "agent_toolset_20260401", "default_config": {"permission_policy": {"type": "always_ask"}}}]
    session = h.session(ask)
    h.client.beta.sessions.events.send(session.id, events=[user_message("make two files")])  # type: ignore[list-item]
    events = h.wait_events(
        session.id,
        lambda evs: bool(evs) and evs[-1].type == "session.status_idle",
        "the requires_action idle",
    )
    allowed, denied = of_type(events, "agent.tool_use")
    assert (allowed.evaluated_permission, denied.evaluated_permission) == ("ask", "ask")
    assert events[-1].stop_reason.type == "requires_action"
    assert events[-1].stop_reason.event_ids == [allowed.id, denied.id]
    # A result before the confirmation is refused (a worker that ignored the gate could not inject one).
    with pytest.raises(anthropic.BadRequestError) as refused:
        h.client.beta.sessions.events.send(
            session.id,
            events=[{"type": "user.tool_result", "tool_use_id": allowed.id, "content": [{"type": "text", "text": "x"}]}],  # type: ignore[list-item]
        )
    assert refused.value.error_code == "tool_use_not_executable"

    h.client.beta.sessions.events.send(
        session.id, events=[{"type": "user.tool_confirmation", "tool_use_id": allowed.id, "result": "allow"}]  # type: ignore[list-item]
    )
    h.client.beta.sessions.events.send(
        session.id,
        events=[{"type": "user.tool_confirmation", "tool_use_id": denied.id, "result": "deny", "deny_message": "no"}],  # type: ignore[list-item]
    )
    events = h.wait_end_turn(session.id)
    h.wait_work(session.id, lambda w: w.state == "stopped", "stopped (the worker is done with the session)")

    results = results_by_call(events)
    assert list(results) == [allowed.id], "the worker answered the allowed call only"
    assert text_of(results[allowed.id].content) == "ran"
    position = {e.id: i for i, e in enumerate(events)}
    confirmation = next(e for e in of_type(events, "user.tool_confirmation") if e.tool_use_id == allowed.id)
    assert position[confirmation.id] < position[results[allowed.id].id], "it ran only after it was allowed"
    (denial,) = [e for e in of_type(events, "agent.tool_result") if e.tool_use_id == denied.id]
    assert denial.is_error is True and "no" in text_of(denial.content)
    assert (worker.workdir / "allowed.txt").exists()
    assert not (worker.workdir / "denied.txt").exists(), "the denied call never ran"


# --------------------------------------------------------------------------- stops


def test_graceful_and_forced_stops_reach_the_worker(stops_env: WorkerHarness) -> None:
    h = stops_env
    # A long max_idle: without a stop the worker would hold the session for a minute.
    worker = h.start_worker(max_idle=60.0)
    # Each turn has a call, so it can only end once the worker serves the session.
    h.fake.set_script(
        [
            tool_response(("toolu_s1", "bash", {"command": "echo one"})),
            text_response("first"),
            tool_response(("toolu_s2", "bash", {"command": "echo two"})),
            text_response("second"),
        ]
    )
    session = h.session()
    h.client.beta.sessions.events.send(session.id, events=[user_message("hello")])  # type: ignore[list-item]
    h.wait_end_turn(session.id)
    item = h.wait_work(session.id, lambda w: w.state == "active", "active (heartbeating)")
    stats = h.client.beta.environments.work.stats(h.env_id)
    assert stats.workers_polling == 1 and stats.depth == 0

    # Graceful: stopping until the worker's next heartbeat hears it, then it force-stops.
    mark = len(worker.lines)
    stopping = h.client.beta.environments.work.stop(item.id, environment_id=h.env_id)
    assert stopping.state == "stopping" and stopping.stop_requested_at is not None
    worker.wait_log(r"heartbeat signals shutdown state=stopping", after=mark)
    stopped = h.wait_work(session.id, lambda w: w.state == "stopped", "stopped by the worker")
    assert stopped.id == item.id and stopped.stopped_at is not None

    # New input gives the dormant session a new item; the worker (still polling) takes it.
    h.client.beta.sessions.events.send(session.id, events=[user_message("again")])  # type: ignore[list-item]
    h.wait_end_turn(session.id, n=2)
    second = h.wait_work(session.id, lambda w: w.state == "active", "active again")
    assert second.id != item.id

    # Forced: stopped at once; the worker hears it and its own stop gets a 409 it ignores.
    mark = len(worker.lines)
    forced = h.client.beta.environments.work.stop(second.id, environment_id=h.env_id, force=True)
    assert forced.state == "stopped"
    worker.wait_log(r"heartbeat signals shutdown state=stopped", after=mark)
    worker.wait_log(r"idle; polling|still polling", after=mark)
    with pytest.raises(anthropic.ConflictError):
        h.client.beta.environments.work.stop(second.id, environment_id=h.env_id, force=True)
    assert worker.count(r"force-stop on exit failed") == 0, worker.log()
    assert worker.process.poll() is None, "the worker keeps serving the queue"


def test_a_call_in_flight_when_its_item_is_force_stopped_gets_a_new_item(restop_env: WorkerHarness) -> None:
    """A forced stop ends the lease while the worker runs a call: the worker's result is
    refused (its sessions token died with the lease), Logbook queues a new item for the
    session that still waits on the call, and a worker answers it there, once."""
    h = restop_env
    worker = h.start_worker(max_idle=1.0)
    # The first run finishes only once the test has stopped its item (the
    # `go` file), so the order comes from the test, not from a clock.
    command = "if [ -f once ]; then echo again; else touch once; while [ ! -f go ]; do sleep 0.05; done; echo first; fi"
    h.fake.set_script([tool_response(("toolu_f1", "bash", {"command": command})), text_response("finished")])
    session = h.session()
    h.client.beta.sessions.events.send(session.id, events=[user_message("work")])  # type: ignore[list-item]
    h.wait_path(worker.workdir / "once", "the worker started the call")
    first = h.wait_work(session.id, lambda w: w.state == "active", "active")
    h.client.beta.environments.work.stop(first.id, environment_id=h.env_id, force=True)
    (worker.workdir / "go").touch()
    events = h.wait_end_turn(session.id)
    results = results_by_call(events)
    (call,) = of_type(events, "agent.tool_use")
    assert list(results) == [call.id]
    assert text_of(results[call.id].content) == "again", "the stopped lease's result was refused"
    items = h.work_items(session.id)
    assert len(items) == 2 and items[1].id == first.id, items
    h.wait_work(session.id, lambda w: w.state == "stopped", "the new item stopped by the worker")
    assert worker.count(r"failed to send tool result") == 1, worker.log()


# --------------------------------------------------------------------------- a crashed worker


def test_a_crashed_workers_call_is_finished_by_the_next_worker_once(crash_env: WorkerHarness, tmp_path: Path) -> None:
    """A worker killed mid-tool holds a lease nobody renews: it lapses (LEASE_TTL_S), the
    item is queued again, the next worker claims it, finds the call unanswered in the
    history and runs it; the call gets exactly one result."""
    h = crash_env
    shared = tmp_path / "shared-workdir"
    first = h.start_worker(workdir=shared, max_idle=1.0)
    command = "if [ -f started ]; then echo resumed; else touch started; sleep 600; fi"
    h.fake.set_script([tool_response(("toolu_c1", "bash", {"command": command})), text_response("recovered")])
    session = h.session()
    h.client.beta.sessions.events.send(session.id, events=[user_message("long job")])  # type: ignore[list-item]
    h.wait_path(shared / "started", "the first worker's bash started the job")
    held = h.wait_work(session.id, lambda w: w.state == "active", "active")
    first.crash()

    second = h.start_worker(workdir=shared, max_idle=1.0)
    events = h.wait_end_turn(session.id)
    (call,) = of_type(events, "agent.tool_use")
    results = results_by_call(events)
    assert list(results) == [call.id]
    assert text_of(results[call.id].content) == "resumed"
    assert of_type(events, "agent.tool_result") == []
    assert second.count(rf"claimed work work_id={held.id}") == 1, "the same item, re-queued"
    items = h.work_items(session.id)
    assert [w.id for w in items] == [held.id], "no second item: the lease lapsed back into the queue"
    h.wait_work(session.id, lambda w: w.state == "stopped", "stopped by the second worker")
    requests = h.fake.requests()
    (result,) = tool_results_sent(requests[1])
    assert result["tool_use_id"] == "toolu_c1" and block_text(result) == "resumed"


def test_a_stopping_item_whose_worker_vanished_gives_the_waiting_session_a_new_item(
    lapse_env: WorkerHarness,
) -> None:
    """Goal: a graceful stop puts an active item in `stopping`; if its worker dies before
    confirming, the lease lapses and the item ends `stopped`. The session still waits on a
    built-in call, so it gets a new item, as after a forced stop
    (test_a_call_in_flight_when_its_item_is_force_stopped_gets_a_new_item): the request that
    applies the lapse (here the listing) wakes the session's runner, which queues it. Before,
    the stop request's wake-up came while the item was live and nothing woke the runner after
    the lapse: no worker was ever given the call. Method: the test is the worker (raw
    poll/ack/heartbeat with the environment key, a 2 s lease), requests a graceful stop with
    the API key, and stops heartbeating; it only lists the work items."""
    h = lapse_env
    h.fake.set_script([tool_response(("toolu_l1", "bash", {"command": "echo hi"})), text_response("done")])
    session = h.session()
    h.client.beta.sessions.events.send(session.id, events=[user_message("run it")])  # type: ignore[list-item]
    h.wait_events(session.id, lambda events: bool(of_type(events, "agent.tool_use")), "the bash call")
    work = h.env_client.beta.environments.work
    item = work.poll(h.env_id, block_ms=999, anthropic_worker_id="review-doomed-worker")
    assert item is not None and item.data.id == session.id
    work.ack(item.id, environment_id=h.env_id)
    beat = work.heartbeat(
        item.id, environment_id=h.env_id, desired_ttl_seconds=2, expected_last_heartbeat="NO_HEARTBEAT"
    )
    assert beat.state == "active" and beat.ttl_seconds == 2
    stopping = h.client.beta.environments.work.stop(item.id, environment_id=h.env_id)
    assert stopping.state == "stopping"
    # The worker dies here: no heartbeat confirms the stop; the 2 s lease lapses.
    h.wait_work(session.id, lambda w: w.id == item.id and w.state == "stopped", "stopped by the lapse")
    # The call still waits for a worker, so the session needs a new item in the queue.
    fresh = h.wait_work(session.id, lambda w: w.id != item.id and w.state != "stopped", "a new item for the waiting call")
    assert fresh.state == "queued"


def test_a_worker_that_fails_its_item_does_not_get_it_back_in_a_loop(churn_env: WorkerHarness) -> None:
    """Goal: when the worker itself fails a work item (the SDK worker's `stop(force=True)`
    with the item's sessions token after any exception in `_handle_item`) while the session
    still waits on a built-in call, no new item is queued for that call: a worker whose
    failure is deterministic (bad workdir, a tool context that cannot start, a stream it may
    not open) would get it on its very next poll and fail it again, an endless poll/ack/fail
    loop persisting one more work item and sessions token per pass. As hosted
    (managed-agents-behaviour.md §3.6), the session stays idle with `requires_action`, and
    an interrupt re-queues the work (it also closes the waiting call, as for any
    `requires_action`). Method: the test is the failing worker (poll, ack, first heartbeat,
    force-stop with the sessions token), ten times in a row; then it sends an interrupt."""
    h = churn_env
    h.fake.set_script([tool_response(("toolu_x1", "bash", {"command": "echo hi"})), text_response("done")])
    session = h.session()
    h.client.beta.sessions.events.send(session.id, events=[user_message("run it")])  # type: ignore[list-item]
    h.wait_events(session.id, lambda events: bool(of_type(events, "agent.tool_use")), "the bash call")
    work = h.env_client.beta.environments.work
    failed = []
    for _ in range(10):
        item = work.poll(h.env_id, block_ms=999, anthropic_worker_id="review-failing-worker")
        if item is None:
            break
        assert item.data.id == session.id and item.secret
        work.ack(item.id, environment_id=h.env_id)
        payload = json.loads(base64.urlsafe_b64decode(item.secret + "=" * (-len(item.secret) % 4)))
        token_work = strict_client(h.server.url, auth_token=payload["sessions_token"]).beta.environments.work
        token_work.heartbeat(item.id, environment_id=h.env_id, expected_last_heartbeat="NO_HEARTBEAT")
        # The worker hits its (deterministic) error and fails the item, as the SDK does.
        token_work.stop(item.id, environment_id=h.env_id, force=True)
        failed.append(item.id)
    assert len(failed) == 1, (
        f"the failing worker got the session back {len(failed)} times in a row "
        f"({len(h.work_items(session.id))} work items for one call)"
    )
    status = h.client.beta.sessions.retrieve(session.id).status
    assert status == "idle", f"the session waits for an interrupt or input, not a worker: {status}"
    h.client.beta.sessions.events.send(session.id, events=[{"type": "user.interrupt"}])  # type: ignore[list-item]
    fresh = h.wait_work(session.id, lambda w: w.id != failed[0], "the work queued again by the interrupt")
    assert fresh.state == "queued"
    events = h.wait_end_turn(session.id)
    (call,) = of_type(events, "agent.tool_use")
    assert of_type(events, "agent.tool_result")[-1].tool_use_id == call.id, describe(events)


def test_a_call_closed_by_an_interrupt_is_never_run_by_a_worker(interrupted_env: WorkerHarness) -> None:
    """Goal: an interrupt closes the calls a session waits on (Logbook answers them with an
    error `agent.tool_result`, ARCHITECTURE "The runner's side": "an interrupt closes them"), so
    no worker runs them afterwards. The SDK 2.14.0 runner counts a call as answered only by a
    `user.tool_result` (managed-agents-behaviour.md §7.3 step 6), so a worker that serves the
    session later reads the interrupted call as unanswered and executes it: the command the
    user interrupted runs anyway (its result is then refused, the side effect is done).
    Method: a bash call waits for a worker (none is running); the user interrupts it; a worker
    starts; a second turn's bash call proves the worker has read the history and run what it
    would run (the SDK runs calls one at a time, in history order)."""
    h = interrupted_env
    h.fake.set_script(
        [
            tool_response(("toolu_i1", "bash", {"command": "touch interrupted.txt && echo ran"})),
            tool_response(("toolu_i2", "bash", {"command": "touch second.txt && echo ran"})),
            text_response("done"),
        ]
    )
    session = h.session()
    h.client.beta.sessions.events.send(session.id, events=[user_message("run it")])  # type: ignore[list-item]
    events = h.wait_events(
        session.id,
        lambda evs: bool(evs) and evs[-1].type == "session.status_idle",
        "the requires_action idle (no worker yet)",
    )
    (interrupted,) = of_type(events, "agent.tool_use")
    assert events[-1].stop_reason.type == "requires_action", describe(events)
    h.client.beta.sessions.events.send(session.id, events=[{"type": "user.interrupt"}])  # type: ignore[list-item]
    events = h.wait_end_turn(session.id)
    (closed,) = of_type(events, "agent.tool_result")
    assert closed.tool_use_id == interrupted.id and closed.is_error is True, describe(events)

    worker = h.start_worker(max_idle=1.0)
    h.client.beta.sessions.events.send(session.id, events=[user_message("now the second")])  # type: ignore[list-item]
    events = h.wait_end_turn(session.id, n=2)
    second = [u for u in of_type(events, "agent.tool_use") if u.id != interrupted.id]
    assert len(second) == 1 and second[0].id in results_by_call(events), describe(events)
    assert (worker.workdir / "second.txt").exists(), "the worker ran the second turn's call"
    assert not (worker.workdir / "interrupted.txt").exists(), (
        f"the worker ran the call the user interrupted:\n{h.worker_logs()}"
    )


def test_a_call_cut_off_by_max_tokens_is_never_run_by_a_worker(cutoff_env: WorkerHarness) -> None:
    """Goal: a call whose input `max_tokens` cut off is "answered with an error result, never
    run" (replay/src/machine.rs, module doc; `FailReason::CutOff`). On a self-hosted session
    Logbook still announces it as an allowed `agent.tool_use` (the truncated input as the
    model left it) and answers it with an `agent.tool_result`, which the SDK 2.14.0 runner
    does not count as an answer: the worker serving the session runs the truncated command.
    Method: a worker serves the session; the model's first response ends in a bash call and
    stops for `max_tokens`; a second turn's bash call proves the worker has dispatched every
    call it would (it runs them one at a time, in order)."""
    h = cutoff_env
    worker = h.start_worker(max_idle=1.0)
    cut = tool_response(("toolu_c1", "bash", {"command": "touch cut.txt && echo ran"}))
    cut["stop_reason"] = "max_tokens"
    h.fake.set_script(
        [
            cut,
            text_response("I ran out of room."),
            tool_response(("toolu_c2", "bash", {"command": "touch second.txt && echo ran"})),
            text_response("done"),
        ]
    )
    session = h.session()
    h.client.beta.sessions.events.send(session.id, events=[user_message("run it")])  # type: ignore[list-item]
    events = h.wait_end_turn(session.id)
    (cut_call,) = of_type(events, "agent.tool_use")
    (closed,) = of_type(events, "agent.tool_result")
    assert closed.tool_use_id == cut_call.id and closed.is_error is True, describe(events)

    h.client.beta.sessions.events.send(session.id, events=[user_message("now the second")])  # type: ignore[list-item]
    events = h.wait_end_turn(session.id, n=2)
    second = [u for u in of_type(events, "agent.tool_use") if u.id != cut_call.id]
    assert len(second) == 1 and second[0].id in results_by_call(events), describe(events)
    assert any((w.workdir / "second.txt").exists() for w in h.workers), "a worker ran the second call"
    assert not (worker.workdir / "cut.txt").exists(), f"the worker ran the cut-off call:\n{h.worker_logs()}"


def test_a_worker_holding_an_ask_call_is_released_once_an_interrupt_closes_the_call(held_env: WorkerHarness) -> None:
    """Goal: a worker is not pinned to a session for ever by a call nobody can confirm any
    more. The SDK 2.14.0 runner holds an `always_ask` call until its `user.tool_confirmation`
    and, while it holds one, defers its `max_idle` countdown (`_IdleClock.hold`). An interrupt
    closes the call with Logbook's `agent.tool_result` (which the SDK does not read as an
    answer), and Logbook then refuses any confirmation for it ("already has a result and no
    longer awaits confirmation"): the hold is never released, so the worker never idles out,
    heartbeats its item for ever and serves no other session. Method: a worker holds an
    `always_ask` bash call; the user interrupts; the worker (max_idle 1 s) should release its
    item."""
    h = held_env
    worker = h.start_worker(max_idle=1.0)
    h.fake.set_script([tool_response(("toolu_h1", "bash", {"command": "touch held.txt && echo ran"}))])
    ask = [{"type": "agent_toolset_20260401", "default_config": {"permission_policy": {"type": "always_ask"}}}]
    session = h.session(ask)
    h.client.beta.sessions.events.send(session.id, events=[user_message("run it")])  # type: ignore[list-item]
    events = h.wait_events(
        session.id,
        lambda evs: bool(evs) and evs[-1].type == "session.status_idle",
        "the requires_action idle",
    )
    (call,) = of_type(events, "agent.tool_use")
    assert call.evaluated_permission == "ask" and events[-1].stop_reason.type == "requires_action"
    worker.wait_log(rf"holding tool_use_id={call.id}")
    h.client.beta.sessions.events.send(session.id, events=[{"type": "user.interrupt"}])  # type: ignore[list-item]
    events = h.wait_end_turn(session.id)
    (closed,) = of_type(events, "agent.tool_result")
    assert closed.tool_use_id == call.id, describe(events)
    with pytest.raises(anthropic.BadRequestError):
        h.client.beta.sessions.events.send(
            session.id, events=[{"type": "user.tool_confirmation", "tool_use_id": call.id, "result": "deny"}]  # type: ignore[list-item]
        )
    h.wait_work(session.id, lambda w: w.state == "stopped", "released by its worker after the turn ended")
    assert not (worker.workdir / "held.txt").exists()


# --------------------------------------------------------------------------- healthchecks


def test_the_worker_acks_and_stops_healthcheck_items(healthcheck_env: WorkerHarness) -> None:
    h = healthcheck_env
    # The generated type models only session items; strict validation would refuse the poll.
    worker = h.start_worker(strict=False)
    check = h.client.post(f"/x/v1/environments/{h.env_id}/work/healthcheck", cast_to=object, body={})
    assert check["data"] == {"type": "healthcheck", "id": check["id"]}  # type: ignore[index]
    work_id = check["id"]  # type: ignore[index]
    worker.wait_log(rf"claimed work work_id={work_id} work_type=healthcheck")
    item = h.wait_item(work_id, lambda w: w.state == "stopped", "stopped by the worker")
    assert item.acknowledged_at is not None and item.stopped_at is not None


# --------------------------------------------------------------------------- credentials


def test_worker_credentials_reach_only_their_environment_and_session(
    worker_server: Any, auth_env: WorkerHarness
) -> None:
    h = auth_env
    mine = h.session()
    other_env_session = h.client.beta.sessions.create(
        agent=h.agent().id, environment_id=worker_server.envs["auth-other"]
    )
    # The environment key: its queue and its sessions, nothing else.
    assert h.env_client.beta.sessions.retrieve(mine.id).id == mine.id
    with pytest.raises(anthropic.NotFoundError):
        h.env_client.beta.sessions.retrieve(other_env_session.id)
    with pytest.raises(anthropic.NotFoundError):
        list(h.env_client.beta.environments.work.list(worker_server.envs["auth-other"]))
    with pytest.raises(anthropic.PermissionDeniedError):
        h.env_client.beta.environments.retrieve(h.env_id)
    with pytest.raises(anthropic.PermissionDeniedError):
        list(h.env_client.beta.agents.list())

    # The sessions token of a polled item: that session, that item.
    polled = h.env_client.beta.environments.work.poll(h.env_id, block_ms=999)
    assert polled is not None and polled.data.id == mine.id and polled.secret
    payload = json.loads(base64.urlsafe_b64decode(polled.secret + "=" * (-len(polled.secret) % 4)))
    token_client = strict_client(h.server.url, auth_token=payload["sessions_token"])
    h.env_client.beta.environments.work.ack(polled.id, environment_id=h.env_id)
    beat = token_client.beta.environments.work.heartbeat(
        polled.id, environment_id=h.env_id, expected_last_heartbeat="NO_HEARTBEAT"
    )
    assert beat.state == "active" and beat.lease_extended is True and beat.ttl_seconds == LEASE_TTL_S
    with pytest.raises(anthropic.PreconditionFailedError) as stale:
        token_client.beta.environments.work.heartbeat(
            polled.id, environment_id=h.env_id, expected_last_heartbeat="NO_HEARTBEAT"
        )
    assert stale.value.error_code == "heartbeat_precondition_failed"
    assert token_client.beta.sessions.retrieve(mine.id).id == mine.id
    list(token_client.beta.sessions.events.list(mine.id))
    with pytest.raises(anthropic.NotFoundError):
        token_client.beta.sessions.retrieve(other_env_session.id)
    with pytest.raises(anthropic.PermissionDeniedError):
        token_client.beta.environments.work.poll(h.env_id)
    token_client.beta.environments.work.stop(polled.id, environment_id=h.env_id, force=True)
    with pytest.raises(anthropic.AuthenticationError):
        token_client.beta.sessions.retrieve(mine.id)
    token_client.close()
