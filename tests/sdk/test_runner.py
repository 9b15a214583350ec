"""The runner, end to end, through the official Python SDK (strict response validation).

Goal: what a client of the hosted service observes of a running session —
the turn anatomy on `events.stream`, confirmations, custom tools, previews
(`event_deltas`), interrupts, queued messages, model faults, outcomes graded
with heartbeats, and the SDK's own session tool runner — holds against `logbook serve` with its runner, and the
model is given what it must see (its tool ids, the tool results, every user
message).

Method: one `logbook serve` WITH the runner per test session, pointed at the
scripted fake Messages API (`fake-model`); built-in tools echo their input
(`LOGBOOK_TOOLS=echo`). Each test sets the fake's script, opens the stream
before sending, consumes it on a thread and waits with deadlines (never fixed
sleeps) for the idle that ends the turn; then compares the stream with the
list API and the requests the fake recorded. Fixtures: runner_conftest_helpers.py.
Expected behaviour: managed-agents-behaviour.md §3.4-3.7 and §4.4,
managed-agents-api.md §4.2, §4.5 and §6.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from typing import Any, List

import anthropic
import anyio
import pytest
from anthropic.lib.sessions import accumulate_managed_agents_event
from anthropic.lib.tools import beta_async_tool
from anthropic.types.beta import BetaManagedAgentsDeltaEvent, BetaManagedAgentsStartEvent
from anthropic.types.beta.sessions import BetaManagedAgentsAgentMessageEvent

from helpers import MODEL, unique, user_message
from runner_conftest_helpers import (  # noqa: F401 - fixtures are found by name
    TURN_DEADLINE_S,
    WEATHER_TOOL,
    Harness,
    count,
    describe,
    fake_model,
    first,
    harness,
    make_runner_client,
    of_type,
    runner_client,
    runner_env,
    runner_server,
    text_of,
    text_response,
    tool_response,
    toolset,
    types,
    user_texts,
)

# The event sequence of a turn that ends normally, after its model requests.
TURN_END = ["session.usage", "session.status_idle"]


def _after(events: List[Any], event_id: str) -> List[Any]:
    """The events that follow the event `event_id`."""
    ids = [getattr(e, "id", None) for e in events]
    return events[ids.index(event_id) + 1 :]


def _last_user_message(request: dict) -> dict:
    message = request["body"]["messages"][-1]
    assert message["role"] == "user", request["body"]["messages"]
    return message


def _tool_results(message: dict) -> List[dict]:
    return [b for b in message["content"] if isinstance(b, dict) and b.get("type") == "tool_result"]


def _block_text(block: dict) -> str:
    content = block.get("content")
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content or [])


def _assert_usage_sums(events: List[Any]) -> None:
    """`session.usage` (cumulative) equals the sum of the model requests' `model_usage`."""
    usage = of_type(events, "session.usage")[-1].usage
    ends = of_type(events, "span.model_request_end")
    assert usage.input_tokens == sum(e.model_usage.input_tokens for e in ends)
    assert usage.output_tokens == sum(e.model_usage.output_tokens for e in ends)


# --------------------------------------------------------------------------- 1. a tool-using turn


def test_tool_using_turn_has_the_hosted_event_sequence(harness: Harness) -> None:
    h = harness
    h.fake.set_script(
        [
            tool_response(("toolu_sdk_bash", "bash", {"command": "ls"})),
            text_response("There are two files."),
        ]
    )
    session = h.session([toolset("always_allow")])
    reader = h.open_stream(session.id)
    (sent,) = h.send(session.id, user_message("what is here?"))
    streamed = h.wait_idles(reader, 1)

    assert types(streamed) == [
        "user.message",
        "session.status_running",
        "session.thread_status_running",
        "span.model_request_start",
        "agent.tool_use",
        "span.model_request_end",
        "agent.tool_result",
        "span.model_request_start",
        "agent.message",
        "span.model_request_end",
        *TURN_END,
    ], describe(streamed)
    (msg, running, thread_running, start1, tool_use, end1, result, start2, answer, end2, usage, idle) = streamed
    assert msg.id == sent.id
    # The primary thread runs with the session.
    assert thread_running.session_thread_id == "sthr_" + session.id.removeprefix("sesn_")
    assert tool_use.name == "bash"
    assert tool_use.input == {"command": "ls"}
    assert tool_use.evaluated_permission == "allow"
    assert tool_use.evaluation is not None and tool_use.evaluation.type == "always_allow"
    assert end1.model_request_start_id == start1.id and end1.is_error is False
    assert end2.model_request_start_id == start2.id and end2.is_error is False
    assert end1.model_usage.input_tokens > 0 and end1.model_usage.output_tokens > 0
    assert result.tool_use_id == tool_use.id
    assert result.is_error is False
    assert "ls" in text_of(result.content), "the echo tool answers with its input"
    assert text_of(answer.content) == "There are two files."
    assert idle.stop_reason.type == "end_turn"
    _assert_usage_sums(streamed)

    # The history lists exactly what was streamed, in the same order.
    listed = h.listed(session.id)
    assert [e.id for e in listed] == [e.id for e in streamed]
    assert [e.type for e in listed] == types(streamed)
    h.wait_status(session.id, "idle")

    # The model saw its own tool_use, then the result under its own tool id.
    requests = h.requests()
    assert len(requests) == 2, [r["body"]["messages"] for r in requests]
    assert user_texts(requests[0]) == ["what is here?"]
    messages = requests[1]["body"]["messages"]
    assistant = [m for m in messages if m["role"] == "assistant"]
    assert any(
        b.get("type") == "tool_use" and b.get("id") == "toolu_sdk_bash" for m in assistant for b in m["content"]
    ), messages
    (tool_result,) = _tool_results(_last_user_message(requests[1]))
    assert tool_result["tool_use_id"] == "toolu_sdk_bash"
    assert tool_result.get("is_error") in (None, False)
    assert "ls" in _block_text(tool_result)


# --------------------------------------------------------------------------- 2. confirmations


def _ask_turn(h: Harness, *calls: tuple) -> tuple:
    """Starts an `always_ask` session whose model calls `calls`, up to the requires_action idle."""
    h.fake.set_script([tool_response(*calls), text_response("Done.")])
    session = h.session([toolset("always_ask")])
    reader = h.open_stream(session.id)
    h.send(session.id, user_message("clean up"))
    events = h.wait_idles(reader, 1)
    assert types(events) == [
        "user.message",
        "session.status_running",
        "session.thread_status_running",
        "span.model_request_start",
        *["agent.tool_use"] * len(calls),
        "span.model_request_end",
        *TURN_END,
    ], describe(events)
    tool_uses = of_type(events, "agent.tool_use")
    for tool_use in tool_uses:
        assert tool_use.evaluated_permission == "ask"
        assert tool_use.evaluation is not None and tool_use.evaluation.type == "always_ask"
    idle = events[-1]
    assert idle.stop_reason.type == "requires_action"
    assert idle.stop_reason.event_ids == [t.id for t in tool_uses]
    h.wait_status(session.id, "idle")
    assert len(h.requests()) == 1, "nothing runs before the confirmation"
    return session, reader, tool_uses, idle


def test_always_ask_waits_and_an_allowed_call_runs(harness: Harness) -> None:
    h = harness
    session, reader, (tool_use,), idle = _ask_turn(h, ("toolu_sdk_ask", "bash", {"command": "rm -rf /tmp/x"}))
    (confirmation,) = h.send(
        session.id, {"type": "user.tool_confirmation", "tool_use_id": tool_use.id, "result": "allow"}
    )
    events = h.wait_idles(reader, 2)
    rest = _after(events, idle.id)
    assert types(rest) == [
        "user.tool_confirmation",
        "session.status_running",
        "session.thread_status_running",
        "agent.tool_result",
        "span.model_request_start",
        "agent.message",
        "span.model_request_end",
        *TURN_END,
    ], describe(rest)
    assert rest[0].id == confirmation.id and rest[0].result == "allow"
    result = rest[3]
    assert result.tool_use_id == tool_use.id and result.is_error is False
    assert "rm -rf /tmp/x" in text_of(result.content)
    assert rest[-1].stop_reason.type == "end_turn"

    requests = h.requests()
    assert len(requests) == 2
    (tool_result,) = _tool_results(_last_user_message(requests[1]))
    assert tool_result["tool_use_id"] == "toolu_sdk_ask"
    assert tool_result.get("is_error") in (None, False)


def test_always_ask_denial_becomes_an_error_result_with_the_message(harness: Harness) -> None:
    h = harness
    session, reader, (tool_use,), idle = _ask_turn(h, ("toolu_sdk_deny", "bash", {"command": "rm -rf /"}))
    h.send(
        session.id,
        {"type": "user.tool_confirmation", "tool_use_id": tool_use.id, "result": "deny", "deny_message": "not today"},
    )
    events = h.wait_idles(reader, 2)
    rest = _after(events, idle.id)
    assert types(rest) == [
        "user.tool_confirmation",
        "session.status_running",
        "session.thread_status_running",
        "agent.tool_result",
        "span.model_request_start",
        "agent.message",
        "span.model_request_end",
        *TURN_END,
    ], describe(rest)
    result = rest[3]
    assert result.tool_use_id == tool_use.id
    assert result.is_error is True
    assert "not today" in text_of(result.content)
    assert rest[-1].stop_reason.type == "end_turn"

    requests = h.requests()
    assert len(requests) == 2
    (tool_result,) = _tool_results(_last_user_message(requests[1]))
    assert tool_result["tool_use_id"] == "toolu_sdk_deny"
    assert tool_result.get("is_error") is True
    assert "not today" in _block_text(tool_result)


def test_resolving_some_confirmations_reemits_idle_with_the_rest(harness: Harness) -> None:
    """§3.5: resolving fewer than all re-emits `session.status_idle` with the remaining ids."""
    h = harness
    session, reader, (first_use, second_use), idle = _ask_turn(
        h,
        ("toolu_sdk_one", "bash", {"command": "echo one"}),
        ("toolu_sdk_two", "bash", {"command": "echo two"}),
    )
    h.send(session.id, {"type": "user.tool_confirmation", "tool_use_id": first_use.id, "result": "allow"})
    events = h.wait_idles(reader, 2)
    rest = _after(events, idle.id)
    assert types(rest) == ["user.tool_confirmation", *TURN_END], describe(rest)
    assert rest[-1].stop_reason.type == "requires_action"
    assert rest[-1].stop_reason.event_ids == [second_use.id]
    assert len(h.requests()) == 1

    h.send(
        session.id,
        {"type": "user.tool_confirmation", "tool_use_id": second_use.id, "result": "deny", "deny_message": "no"},
    )
    events = h.wait_idles(reader, 3)
    rest = _after(events, rest[-1].id)
    assert types(rest) == [
        "user.tool_confirmation",
        "session.status_running",
        "session.thread_status_running",
        *["agent.tool_result"] * 2,
        "span.model_request_start",
        "agent.message",
        "span.model_request_end",
        *TURN_END,
    ], describe(rest)
    results = {r.tool_use_id: r for r in of_type(rest, "agent.tool_result")}
    assert results[first_use.id].is_error is False
    assert "echo one" in text_of(results[first_use.id].content)
    assert results[second_use.id].is_error is True
    assert rest[-1].stop_reason.type == "end_turn"

    requests = h.requests()
    assert len(requests) == 2
    tool_results = _tool_results(_last_user_message(requests[1]))
    assert sorted(r["tool_use_id"] for r in tool_results) == ["toolu_sdk_one", "toolu_sdk_two"]


def test_confirming_a_call_that_does_not_ask_is_rejected(harness: Harness) -> None:
    """§3.5: a confirmation for an event whose evaluated_permission is not `ask` is a 400."""
    h = harness
    h.fake.set_script([tool_response(("toolu_sdk_ok", "bash", {"command": "pwd"})), text_response("Done.")])
    session = h.session([toolset("always_allow")])
    reader = h.open_stream(session.id)
    h.send(session.id, user_message("where am I?"))
    events = h.wait_idles(reader, 1)
    tool_use = first(events, "agent.tool_use")
    assert tool_use.evaluated_permission == "allow"
    with pytest.raises(anthropic.BadRequestError):
        h.send(session.id, {"type": "user.tool_confirmation", "tool_use_id": tool_use.id, "result": "deny"})
    assert [e.id for e in h.listed(session.id)] == [e.id for e in events], "a rejected event is not recorded"


def test_interrupt_while_awaiting_confirmation_closes_the_call(harness: Harness) -> None:
    """§3.6: pending calls get an error result and the session idles with end_turn, without sampling the model."""
    h = harness
    session, reader, (tool_use,), idle = _ask_turn(h, ("toolu_sdk_int", "bash", {"command": "make"}))
    (interrupt,) = h.send(session.id, {"type": "user.interrupt"})
    events = h.wait_idles(reader, 2)
    rest = _after(events, idle.id)
    assert types(rest) == ["user.interrupt", "agent.tool_result", *TURN_END], describe(rest)
    assert rest[0].id == interrupt.id
    result = rest[1]
    assert result.tool_use_id == tool_use.id and result.is_error is True
    assert "interrupted" in text_of(result.content).lower()
    assert rest[-1].stop_reason.type == "end_turn"
    assert len(h.requests()) == 1, "the model is not sampled"

    # The next message: the model sees the closed call, then the new text.
    h.send(session.id, user_message("forget it"))
    events = h.wait_idles(reader, 3)
    assert events[-1].stop_reason.type == "end_turn", describe(events)
    requests = h.requests()
    assert len(requests) == 2
    last = _last_user_message(requests[1])
    (tool_result,) = _tool_results(last)
    assert tool_result["tool_use_id"] == "toolu_sdk_int" and tool_result.get("is_error") is True
    assert user_texts(requests[1])[-1] == "forget it"


# --------------------------------------------------------------------------- 3. custom tools


def test_custom_tool_waits_for_the_client_result(harness: Harness) -> None:
    h = harness
    h.fake.set_script(
        [
            tool_response(("toolu_sdk_w", "get_weather", {"city": "Oslo"})),
            text_response("It is cold in Oslo."),
        ]
    )
    session = h.session([toolset(), WEATHER_TOOL])
    reader = h.open_stream(session.id)
    h.send(session.id, user_message("weather?"))
    events = h.wait_idles(reader, 1)
    assert types(events) == [
        "user.message",
        "session.status_running",
        "session.thread_status_running",
        "span.model_request_start",
        "agent.custom_tool_use",
        "span.model_request_end",
        *TURN_END,
    ], describe(events)
    call = events[4]
    assert call.name == "get_weather" and call.input == {"city": "Oslo"}
    idle = events[-1]
    assert idle.stop_reason.type == "requires_action"
    assert idle.stop_reason.event_ids == [call.id]

    (answer,) = h.send(
        session.id,
        {"type": "user.custom_tool_result", "custom_tool_use_id": call.id, "content": [{"type": "text", "text": "-3 C"}]},
    )
    events = h.wait_idles(reader, 2)
    rest = _after(events, idle.id)
    assert types(rest) == [
        "user.custom_tool_result",
        "session.status_running",
        "session.thread_status_running",
        "span.model_request_start",
        "agent.message",
        "span.model_request_end",
        *TURN_END,
    ], describe(rest)
    assert rest[0].id == answer.id
    assert rest[-1].stop_reason.type == "end_turn"

    requests = h.requests()
    assert len(requests) == 2
    (tool_result,) = _tool_results(_last_user_message(requests[1]))
    assert tool_result["tool_use_id"] == "toolu_sdk_w"
    assert _block_text(tool_result) == "-3 C"
    assert tool_result.get("is_error") in (None, False)


def test_builtin_and_custom_calls_in_one_response(harness: Harness) -> None:
    """The built-in call runs at once; the custom one waits; the model then gets both results."""
    h = harness
    h.fake.set_script(
        [
            tool_response(
                ("toolu_sdk_b", "bash", {"command": "date"}),
                ("toolu_sdk_c", "get_weather", {"city": "Lima"}),
                text="Checking both.",
            ),
            text_response("All done."),
        ]
    )
    session = h.session([toolset(), WEATHER_TOOL])
    reader = h.open_stream(session.id)
    h.send(session.id, user_message("date and weather"))
    events = h.wait_idles(reader, 1)
    assert types(events) == [
        "user.message",
        "session.status_running",
        "session.thread_status_running",
        "span.model_request_start",
        "agent.message",
        "agent.tool_use",
        "agent.custom_tool_use",
        "span.model_request_end",
        "agent.tool_result",
        *TURN_END,
    ], describe(events)
    tool_use, custom = events[5], events[6]
    assert events[8].tool_use_id == tool_use.id and events[8].is_error is False
    assert events[-1].stop_reason.type == "requires_action"
    assert events[-1].stop_reason.event_ids == [custom.id]

    h.send(
        session.id,
        {
            "type": "user.custom_tool_result",
            "custom_tool_use_id": custom.id,
            "content": [{"type": "text", "text": "service down"}],
            "is_error": True,
        },
    )
    events = h.wait_idles(reader, 2)
    assert events[-1].stop_reason.type == "end_turn", describe(events)
    requests = h.requests()
    assert len(requests) == 2
    results = _tool_results(_last_user_message(requests[1]))
    # Every tool_use of the assistant turn is answered, in its order.
    assert [r["tool_use_id"] for r in results] == ["toolu_sdk_b", "toolu_sdk_c"]
    assert results[0].get("is_error") in (None, False)
    assert results[1].get("is_error") is True and _block_text(results[1]) == "service down"


def test_a_new_message_instead_of_the_custom_result_closes_the_call(harness: Harness) -> None:
    """A user.message while a custom call waits: the call is closed with an error result the model sees."""
    h = harness
    h.fake.set_script(
        [tool_response(("toolu_sdk_sup", "get_weather", {"city": "Rome"})), text_response("Fine, never mind.")]
    )
    session = h.session([toolset(), WEATHER_TOOL])
    reader = h.open_stream(session.id)
    h.send(session.id, user_message("weather in Rome?"))
    events = h.wait_idles(reader, 1)
    call = first(events, "agent.custom_tool_use")
    assert events[-1].stop_reason.type == "requires_action"
    h.send(session.id, user_message("never mind"))
    events = h.wait_idles(reader, 2)
    assert events[-1].stop_reason.type == "end_turn", describe(events)
    (closed,) = of_type(events, "agent.tool_result")
    assert closed.tool_use_id == call.id and closed.is_error is True
    requests = h.requests()  # checks that the call is answered before the new text
    assert len(requests) == 2
    (tool_result,) = _tool_results(_last_user_message(requests[1]))
    assert tool_result["tool_use_id"] == "toolu_sdk_sup" and tool_result.get("is_error") is True
    assert user_texts(requests[1])[-1] == "never mind"


def test_custom_result_sent_as_soon_as_the_call_arrives(harness: Harness) -> None:
    """§4.5: the client may answer as soon as `agent.custom_tool_use` arrives, before the idle."""
    h = harness
    h.fake.set_script(
        [tool_response(("toolu_sdk_fast", "get_weather", {"city": "Bergen"})), text_response("Rainy, as usual.")]
    )
    session = h.session([toolset(), WEATHER_TOOL])
    reader = h.open_stream(session.id)
    h.send(session.id, user_message("weather in Bergen?"))
    events = h.wait(reader, lambda evs: "agent.custom_tool_use" in types(evs), "agent.custom_tool_use")
    call = first(events, "agent.custom_tool_use")
    h.send(
        session.id,
        {"type": "user.custom_tool_result", "custom_tool_use_id": call.id, "content": [{"type": "text", "text": "rain"}]},
    )
    events = h.wait(
        reader,
        lambda evs: bool(evs) and evs[-1].type == "session.status_idle" and evs[-1].stop_reason.type == "end_turn",
        "the end_turn idle",
    )
    assert text_of(of_type(events, "agent.message")[-1].content) == "Rainy, as usual."
    requests = h.requests()
    assert len(requests) == 2
    (tool_result,) = _tool_results(_last_user_message(requests[1]))
    assert tool_result["tool_use_id"] == "toolu_sdk_fast" and _block_text(tool_result) == "rain"


# --------------------------------------------------------------------------- 4. previews


def _check_previews(events: List[Any], kinds: List[str]) -> None:
    """The §4.4 guarantees for one connection that asked for previews of `kinds`."""
    starts = [e for e in events if e.type == "event_start"]
    assert all(isinstance(e, BetaManagedAgentsStartEvent) for e in starts)
    assert all(isinstance(e, BetaManagedAgentsDeltaEvent) for e in events if e.type == "event_delta")
    start_ids = [s.event.id for s in starts]
    assert len(start_ids) == len(set(start_ids)), "at most one event_start per id per connection"
    assert {s.event.type for s in starts} <= set(kinds), describe(events)
    position = {id(e): i for i, e in enumerate(events)}
    for start in starts:
        previewed = start.event.id
        finals = [e for e in events if getattr(e, "id", None) == previewed]
        assert len(finals) == 1 and finals[0].type == start.event.type, describe(events)
        final = finals[0]
        deltas = [e for e in events if e.type == "event_delta" and e.event_id == previewed]
        # start < deltas < final: the buffered event is the last thing delivered for the id.
        assert position[id(start)] < position[id(final)]
        for delta in deltas:
            assert position[id(start)] < position[id(delta)] < position[id(final)], describe(events)
            assert delta.delta.type == "content_delta"
            assert delta.delta.index in (None, 0)
        if start.event.type == "agent.thinking":
            assert deltas == [], "thinking previews are start-only"
        else:
            text = "".join(d.delta.content.text for d in deltas)
            assert deltas, "the message was streamed in several deltas by the fake"
            assert text_of(final.content).startswith(text), (text, text_of(final.content))
        # Inside its model request: after the span start, before the span end.
        spans_before = [e for e in events[: position[id(start)]] if e.type.startswith("span.model_request")]
        assert spans_before and spans_before[-1].type == "span.model_request_start", describe(events)
        span_end = next(e for e in events[position[id(final)] :] if e.type == "span.model_request_end")
        assert span_end.model_request_start_id == spans_before[-1].id


def _fold(events: List[Any]) -> Any:
    """Folds a stream with the SDK's accumulator (raises on a delta before its start or an index gap)."""
    acc = None
    for event in events:
        acc = accumulate_managed_agents_event(acc, event)
        if event.type == "event_delta":
            assert acc is not None and acc.id == event.event_id
    return acc


def test_event_deltas_preview_the_message_before_it_is_buffered(harness: Harness) -> None:
    h = harness
    final_text = "The quick brown fox jumps over the lazy dog, twice over."
    h.fake.set_script(
        [
            {
                "content": [
                    {"type": "thinking", "thinking": "They want a pangram."},
                    {"type": "text", "text": final_text},
                ],
                "stop_reason": "end_turn",
            }
        ]
    )
    session = h.session([toolset()])
    plain = h.open_stream(session.id)
    messages = h.open_stream(session.id, event_deltas=["agent.message"])
    both = h.open_stream(session.id, event_deltas=["agent.message", "agent.thinking"])
    h.send(session.id, user_message("a pangram, please"))
    for reader in (plain, messages, both):
        h.wait_idles(reader, 1)
    plain_events, message_events, both_events = list(plain.events), list(messages.events), list(both.events)

    # Without event_deltas: no previews; the persisted sequence.
    assert types(plain_events) == [
        "user.message",
        "session.status_running",
        "session.thread_status_running",
        "span.model_request_start",
        "agent.thinking",
        "agent.message",
        "span.model_request_end",
        *TURN_END,
    ], describe(plain_events)
    final = first(plain_events, "agent.message")
    thinking = first(plain_events, "agent.thinking")
    assert isinstance(final, BetaManagedAgentsAgentMessageEvent)
    assert text_of(final.content) == final_text

    # With them: the same persisted events, plus previews.
    for events in (message_events, both_events):
        persisted = [e for e in events if e.type not in ("event_start", "event_delta")]
        assert [e.id for e in persisted] == [e.id for e in plain_events]
    _check_previews(message_events, ["agent.message"])
    _check_previews(both_events, ["agent.message", "agent.thinking"])
    assert [s.event.id for s in message_events if s.type == "event_start"] == [final.id]
    assert [(s.event.type, s.event.id) for s in both_events if s.type == "event_start"] == [
        ("agent.thinking", thinking.id),
        ("agent.message", final.id),
    ]
    # Nothing was shed at this size: the deltas spell the whole text.
    deltas = "".join(e.delta.content.text for e in message_events if e.type == "event_delta")
    assert deltas == final_text

    # The SDK's accumulator folds the stream without complaint, ending at the buffered event.
    for events in (message_events, both_events):
        preview = None
        for event in events:
            preview = accumulate_managed_agents_event(preview, event)
            if event.type == "event_delta":
                assert preview is not None and final_text.startswith(text_of(preview.content))
        assert preview is not None and preview.id == final.id and text_of(preview.content) == final_text

    # Previews are never persisted.
    listed = h.listed(session.id)
    assert [e.id for e in listed] == [e.id for e in plain_events]


def test_initial_events_create_the_session_running(harness: Harness) -> None:
    """§3.2: a non-empty `initial_events` creates the session directly in `running`; the turn runs."""
    h = harness
    h.fake.set_script([text_response("Hello from the start.")])
    agent = h.client.beta.agents.create(name=unique("initial-agent"), model=MODEL, tools=[toolset()])  # type: ignore[arg-type]
    session = h.client.beta.sessions.create(
        agent=agent.id, environment_id=h.env_id, initial_events=[user_message("hello")]  # type: ignore[list-item]
    )
    h.sessions.append(session.id)
    assert session.status == "running", session.status
    h.wait_requests(lambda rs: len(rs) >= 1, "the initial turn's model request")
    done = h.wait_status(session.id, "idle")
    assert done.status == "idle"
    answers = [e for e in h.listed(session.id) if e.type == "agent.message"]
    assert [text_of(a.content) for a in answers] == ["Hello from the start."]


# --------------------------------------------------------------------------- 5. interrupts


def test_interrupt_mid_stream_ends_the_turn_without_a_message(harness: Harness) -> None:
    h = harness
    drip_ms = 400
    h.fake.set_script(
        [
            {"fault": "drip", "delay_ms": drip_ms},
            text_response("a very long answer that takes a good while to stream to the runner"),
            text_response("Short answer."),
        ]
    )
    session = h.session([toolset()])
    reader = h.open_stream(session.id, event_deltas=["agent.message"])
    h.send(session.id, user_message("tell me everything"))
    h.wait(reader, lambda evs: "span.model_request_start" in types(evs), "span.model_request_start")
    # The span starts before the request leaves: interrupt only once the fake
    # took it (and with it the slow answer), or the next turn would get that one.
    h.wait_requests(lambda rs: len(rs) >= 1, "the first model request")
    interrupted_at = time.monotonic()
    (interrupt,) = h.send(session.id, {"type": "user.interrupt"})
    events = h.wait_idles(reader, 1)
    took = time.monotonic() - interrupted_at

    persisted = [e for e in events if e.type not in ("event_start", "event_delta")]
    assert "agent.message" not in types(persisted), describe(events)
    assert types(persisted)[-2:] == TURN_END, describe(events)
    assert persisted[-1].stop_reason.type == "end_turn", "an interrupted turn ends with end_turn"
    assert interrupt.id in [e.id for e in persisted], "the interrupt is on the stream"
    start = first(persisted, "span.model_request_start")
    (end,) = of_type(persisted, "span.model_request_end")
    assert end.model_request_start_id == start.id and end.is_error is True
    # The response would take ~18 chunks x drip; the interrupt stops it at once.
    assert took < 18 * drip_ms / 1000 / 2, f"the interrupt took {took:.1f}s to end the turn"
    _fold(events)
    h.wait_status(session.id, "idle")

    # The session takes the next message normally.
    h.send(session.id, user_message("briefly, then"))
    events = h.wait_idles(reader, 2)
    rest = _after([e for e in events if e.type not in ("event_start", "event_delta")], persisted[-1].id)
    assert types(rest) == [
        "user.message",
        "session.status_running",
        "session.thread_status_running",
        "span.model_request_start",
        "agent.message",
        "span.model_request_end",
        *TURN_END,
    ], describe(rest)
    assert text_of(rest[4].content) == "Short answer."
    assert rest[-1].stop_reason.type == "end_turn"
    requests = h.requests()
    assert len(requests) == 2
    assert user_texts(requests[1])[-1] == "briefly, then"


def test_interrupt_after_deltas_closes_the_preview_with_the_span_end(harness: Harness) -> None:
    """§4.4: an interrupted request gives no buffered event; `span.model_request_end` closes the preview."""
    h = harness
    h.fake.set_script(
        [
            {"fault": "drip", "delay_ms": 150},
            text_response("one two three four five six seven eight nine ten eleven twelve"),
        ]
    )
    session = h.session([toolset()])
    reader = h.open_stream(session.id, event_deltas=["agent.message"])
    h.send(session.id, user_message("count"))
    h.wait(reader, lambda evs: "event_delta" in types(evs), "a first event_delta")
    h.send(session.id, {"type": "user.interrupt"})
    events = h.wait_idles(reader, 1)
    (start,) = of_type(events, "event_start")
    assert start.event.id not in [getattr(e, "id", None) for e in events if e.type != "event_start"]
    assert "agent.message" not in types(events)
    position = types(events).index("event_start")
    assert "span.model_request_end" in types(events[position:]), describe(events)
    assert first(events, "span.model_request_end").is_error is True
    assert events[-1].stop_reason.type == "end_turn"
    _fold(events)


def test_interrupt_then_message_in_one_request_starts_the_next_turn(harness: Harness) -> None:
    """§3.6: a user.message sent in the same request after the interrupt starts the next turn."""
    h = harness
    h.fake.set_script(
        [
            {"fault": "drip", "delay_ms": 300},
            text_response("an answer nobody will read, streamed very slowly"),
            text_response("Here is the new answer."),
        ]
    )
    session = h.session([toolset()])
    reader = h.open_stream(session.id)
    h.send(session.id, user_message("old question"))
    h.wait(reader, lambda evs: "span.model_request_start" in types(evs), "span.model_request_start")
    h.wait_requests(lambda rs: len(rs) >= 1, "the first model request (and with it the slow answer)")
    _, new = h.send(session.id, {"type": "user.interrupt"}, user_message("new question"))
    events = h.wait_idles(reader, 2)
    idles = of_type(events, "session.status_idle")
    assert [i.stop_reason.type for i in idles] == ["end_turn", "end_turn"], describe(events)
    first_turn = events[: events.index(idles[0]) + 1]
    assert "agent.message" not in types(first_turn), describe(events)
    second_turn = _after(events, idles[0].id)
    assert types(second_turn) == [
        "session.status_running",
        "session.thread_status_running",
        "span.model_request_start",
        "agent.message",
        "span.model_request_end",
        *TURN_END,
    ], describe(events)
    assert text_of(second_turn[3].content) == "Here is the new answer."
    requests = h.requests()
    assert len(requests) == 2
    assert user_texts(requests[1])[-1] == "new question"
    assert new.id in [e.id for e in first_turn] + [e.id for e in second_turn]


# --------------------------------------------------------------------------- 6. queued messages


def test_a_message_sent_during_a_model_call_is_seen_by_the_model(harness: Harness) -> None:
    h = harness
    h.fake.set_script(
        [
            {"fault": "drip", "delay_ms": 100},
            text_response("first answer"),
            text_response("second answer"),
        ]
    )
    session = h.session([toolset()])
    reader = h.open_stream(session.id)
    (first_msg,) = h.send(session.id, user_message("first question"))
    h.wait(reader, lambda evs: "span.model_request_start" in types(evs), "span.model_request_start")
    (second_msg,) = h.send(session.id, user_message("second question"))

    requests = h.wait_requests(
        lambda reqs: any("second question" in user_texts(r) for r in reqs), "a model request with the second message"
    )
    n_requests = len(requests)
    events = h.wait(
        reader,
        lambda evs: count(evs, "span.model_request_end") >= n_requests
        and evs[-1].type == "session.status_idle"
        and second_msg.id in [e.id for e in evs],
        "the idle after the request that saw the second message",
    )
    assert events[-1].stop_reason.type == "end_turn"
    h.wait_status(session.id, "idle")

    requests = h.requests()
    assert user_texts(requests[0]) == ["first question"], "the second message came after the first request began"
    last = user_texts(requests[-1])
    assert "first question" in last and "second question" in last
    assert last.index("first question") < last.index("second question")
    # Every model call got to speak: one agent.message per request.
    assert count(events, "agent.message") == len(requests) == count(events, "span.model_request_end")
    for event in h.listed(session.id):
        if event.type == "user.message":
            assert event.processed_at is not None, "processed messages carry processed_at"
    assert [e.id for e in of_type(events, "user.message")] == [first_msg.id, second_msg.id]


# A PNG's signature and header, 1 x 1 pixels: the runner reads an image's
# size from its header and leaves out an image it cannot read.
DOT_PNG = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89"


def test_file_sourced_blocks_reach_the_model_as_contents(harness: Harness) -> None:
    """Files API ids mean nothing to the Messages API: the runner sends the file's contents."""
    h = harness
    h.fake.set_script([text_response("read them")])
    notes = h.client.beta.files.upload(file=("notes.md", b"# plan\nship it", "text/markdown"))
    picture = h.client.beta.files.upload(file=("dot.png", DOT_PNG, "image/png"))
    session = h.session([toolset()])
    reader = h.open_stream(session.id)
    h.send(
        session.id,
        {
            "type": "user.message",
            "content": [
                {"type": "text", "text": "what do these say?"},
                {"type": "document", "source": {"type": "file", "file_id": notes.id}},
                {"type": "image", "source": {"type": "file", "file_id": picture.id}},
            ],
        },
    )
    h.wait_idles(reader, 1)
    (request,) = h.requests()
    blocks = [b for m in request["body"]["messages"] if m["role"] == "user" for b in m["content"]]
    sources = [b["source"] for b in blocks if b["type"] in ("document", "image")]
    assert sources == [
        {"type": "text", "media_type": "text/plain", "data": "# plan\nship it"},
        {"type": "base64", "media_type": "image/png", "data": base64.b64encode(DOT_PNG).decode()},
    ], sources
    listed = [e for e in h.listed(session.id) if e.type == "user.message"]
    assert listed[0].content[1].source.type == "file", "the log keeps the block as sent"


def test_a_message_queued_during_a_turn_is_echoed_unprocessed(harness: Harness) -> None:
    """§3.5/§4.2: user events other than tool results get `processed_at` when processed, null while queued."""
    h = harness
    h.fake.set_script(
        [{"fault": "drip", "delay_ms": 150}, text_response("slow first answer"), text_response("second answer")]
    )
    session = h.session([toolset()])
    reader = h.open_stream(session.id)
    h.send(session.id, user_message("first question"))
    h.wait(reader, lambda evs: "span.model_request_start" in types(evs), "span.model_request_start")
    (queued,) = h.send(session.id, user_message("second question"))
    try:
        assert queued.processed_at is None, (
            f"a user.message sent while the model is answering the previous one is echoed with "
            f"processed_at={queued.processed_at} (expected null: it is queued)"
        )
    finally:
        h.wait(
            reader,
            lambda evs: bool(evs) and evs[-1].type == "session.status_idle" and count(evs, "agent.message") >= 2,
            "both answers",
        )
    listed = {e.id: e for e in h.listed(session.id)}
    assert listed[queued.id].processed_at is not None, "once processed, it has processed_at"


# --------------------------------------------------------------------------- 7. model faults


def test_overloaded_model_is_retried_with_rescheduling(harness: Harness) -> None:
    h = harness
    h.fake.set_script([{"fault": "status", "status": 529, "retry_after": 0}, text_response("Recovered.")])
    session = h.session([toolset()])
    reader = h.open_stream(session.id)
    h.send(session.id, user_message("hi"))
    events = h.wait_idles(reader, 1)
    assert types(events) == [
        "user.message",
        "session.status_running",
        "session.thread_status_running",
        "span.model_request_start",
        "span.model_request_end",
        "session.error",
        "session.status_rescheduled",
        "session.status_running",
        "session.thread_status_running",
        "span.model_request_start",
        "agent.message",
        "span.model_request_end",
        *TURN_END,
    ], describe(events)
    failed_start, failed_end, error = events[3], events[4], events[5]
    assert failed_end.model_request_start_id == failed_start.id and failed_end.is_error is True
    assert error.error.type == "model_overloaded_error"
    assert error.error.retry_status.type == "retrying"
    assert error.error.message
    assert text_of(events[10].content) == "Recovered."
    assert events[-1].stop_reason.type == "end_turn"
    assert len(h.requests()) == 2
    assert [e.id for e in h.listed(session.id)] == [e.id for e in events]


def test_rejected_key_ends_the_turn_with_retries_exhausted(harness: Harness) -> None:
    h = harness
    h.fake.set_script([{"fault": "status", "status": 401, "message": "invalid x-api-key"}])
    session = h.session([toolset()])
    reader = h.open_stream(session.id)
    h.send(session.id, user_message("hi"))
    events = h.wait_idles(reader, 1)
    assert types(events) == [
        "user.message",
        "session.status_running",
        "session.thread_status_running",
        "span.model_request_start",
        "span.model_request_end",
        "session.error",
        *TURN_END,
    ], describe(events)
    assert events[4].is_error is True
    error = events[5].error
    assert error.retry_status.type == "exhausted"
    assert error.type in ("model_request_failed_error", "unknown_error"), error.type
    assert error.message
    assert events[-1].stop_reason.type == "retries_exhausted"
    assert len(h.requests()) == 1, "a rejected key is not retried"
    h.wait_status(session.id, "idle")

    # The client may send a new prompt (§3.7).
    h.fake.set_script([text_response("Working again.")])
    h.send(session.id, user_message("again"))
    events = h.wait_idles(reader, 2)
    assert events[-1].stop_reason.type == "end_turn", describe(events)
    assert text_of(of_type(events, "agent.message")[-1].content) == "Working again."


def test_broken_streams_are_retried_without_duplicate_messages(harness: Harness) -> None:
    """An `error` event and a cut connection mid-response: retried; previews of the dead attempts end at their span end."""
    h = harness
    h.fake.set_script(
        [
            {"fault": "error_event", "after_events": 4},
            text_response("partial answer one two three"),
            {"fault": "cut", "after_events": 5},
            text_response("partial answer four five six"),
            text_response("Recovered in full."),
        ]
    )
    session = h.session([toolset()])
    reader = h.open_stream(session.id, event_deltas=["agent.message"])
    h.send(session.id, user_message("hi"))
    events = h.wait_idles(reader, 1)
    persisted = [e for e in events if e.type not in ("event_start", "event_delta")]
    errors = of_type(persisted, "session.error")
    assert [e.error.retry_status.type for e in errors] == ["retrying", "retrying"], describe(events)
    assert errors[0].error.type == "model_overloaded_error"
    assert count(persisted, "session.status_rescheduled") == 2
    (message,) = of_type(persisted, "agent.message")
    assert text_of(message.content) == "Recovered in full."
    ends = of_type(persisted, "span.model_request_end")
    assert [e.is_error for e in ends] == [True, True, False]
    assert persisted[-1].stop_reason.type == "end_turn"
    assert len(h.requests()) == 3

    # Each preview is closed: by its buffered event, or by its request's span end.
    for start in of_type(events, "event_start"):
        at = events.index(start)
        closing = next(
            e for e in events[at:] if getattr(e, "id", None) == start.event.id or e.type == "span.model_request_end"
        )
        if closing.type == "span.model_request_end":
            assert closing.is_error is True
        else:
            assert closing.id == message.id
    assert message.id in [s.event.id for s in of_type(events, "event_start")]
    final = _fold(events)
    assert final is not None and final.id == message.id and text_of(final.content) == "Recovered in full."


def test_retries_run_out_after_repeated_overload(harness: Harness) -> None:
    """§3.7: `retrying` may fire again, then once as `exhausted`; the turn ends with retries_exhausted."""
    h = harness
    h.fake.set_script([{"fault": "status", "status": 529, "retry_after": 0}] * 8 + [text_response("too late")])
    session = h.session([toolset()])
    reader = h.open_stream(session.id)
    h.send(session.id, user_message("hi"))
    events = h.wait_idles(reader, 1)
    errors = of_type(events, "session.error")
    statuses = [e.error.retry_status.type for e in errors]
    assert len(statuses) >= 2 and set(statuses[:-1]) == {"retrying"} and statuses[-1] == "exhausted", describe(events)
    assert {e.error.type for e in errors} == {"model_overloaded_error"}
    n_attempts = len(errors)
    assert count(events, "span.model_request_start") == count(events, "span.model_request_end") == n_attempts
    assert all(e.is_error for e in of_type(events, "span.model_request_end"))
    assert count(events, "session.status_rescheduled") == n_attempts - 1
    assert "agent.message" not in types(events)
    assert types(events)[-3:] == ["session.error", *TURN_END], describe(events)
    assert events[-1].stop_reason.type == "retries_exhausted"
    assert len(h.requests()) == n_attempts


# --------------------------------------------------------------------------- 8. the SDK's session tool runner


def test_sdk_session_tool_runner_answers_a_custom_tool(harness: Harness, make_runner_client: Any) -> None:
    """`client.beta.sessions.events.tool_runner` (SessionToolRunner, async client) runs the custom tool round trip."""
    h = harness
    h.fake.set_script(
        [
            tool_response(("toolu_sdk_rt", "get_weather", {"city": "Oslo"})),
            text_response("It is -3 C in Oslo."),
        ]
    )
    session = h.session([toolset(), WEATHER_TOOL])
    ran: List[dict] = []

    @beta_async_tool
    async def get_weather(city: str) -> str:
        """Get the weather for a city."""
        ran.append({"city": city})
        return f"-3 C in {city}"

    async def drive() -> List[Any]:
        client = make_runner_client(asynchronous=True)
        calls: List[Any] = []
        try:
            # The runner opens the stream, then reconciles with the history, so
            # sending before iterating is fine.
            await client.beta.sessions.events.send(session.id, events=[user_message("weather in Oslo?")])
            runner = client.beta.sessions.events.tool_runner(session.id, tools=[get_weather], max_idle=0.5)
            # It stops by itself max_idle seconds after the end_turn idle.
            with anyio.fail_after(TURN_DEADLINE_S):
                async for call in runner:
                    calls.append(call)
        finally:
            await client.close()
        return calls

    try:
        calls = asyncio.run(drive())
    except TimeoutError:
        pytest.fail(
            f"the SDK tool runner did not finish within {TURN_DEADLINE_S}s; "
            f"history: {describe(h.listed(session.id))}",
            pytrace=False,
        )
    assert ran == [{"city": "Oslo"}]
    (call,) = calls
    assert call.name == "get_weather"
    assert call.posted is True and call.is_error is False
    assert call.event.type == "agent.custom_tool_use"
    assert call.result is not None and call.result["content"] == [{"type": "text", "text": "-3 C in Oslo"}]

    listed = h.listed(session.id)
    (answer,) = of_type(listed, "user.custom_tool_result")
    assert answer.custom_tool_use_id == call.tool_use_id
    assert listed[-1].type == "session.status_idle" and listed[-1].stop_reason.type == "end_turn", describe(listed)
    assert text_of(of_type(listed, "agent.message")[-1].content) == "It is -3 C in Oslo."
    requests = h.requests()
    assert len(requests) == 2
    (tool_result,) = _tool_results(_last_user_message(requests[1]))
    assert tool_result["tool_use_id"] == "toolu_sdk_rt"
    assert _block_text(tool_result) == "-3 C in Oslo"


# --------------------------------------------------------------------------- the session object


def test_session_object_agrees_with_the_idle_event(harness: Harness) -> None:
    """A client that saw `session.status_idle` and then retrieves the session finds it idle, with that usage.

    (Archiving or deleting right after the idle depends on this: both refuse a
    running session.) Several sessions take short turns at once, and after
    each idle their client retrieves the session at once.
    """
    h = harness
    n_sessions, n_turns = 8, 25
    h.fake.set_script([text_response("ok")] * (n_sessions * n_turns))
    sessions = [h.session([toolset()]) for _ in range(n_sessions)]
    readers = [h.open_stream(s.id) for s in sessions]
    stale: List[str] = []
    failures: List[BaseException] = []

    def take_turns(session: Any, reader: Any) -> None:
        try:
            for turn in range(n_turns):
                h.send(session.id, user_message(f"turn {turn}"))
                events = h.wait_idles(reader, turn + 1)
                seen = h.client.beta.sessions.retrieve(session.id)
                usage = of_type(events, "session.usage")[-1].usage
                if seen.status != "idle":
                    stale.append(f"{session.id} turn {turn}: status {seen.status!r} after session.status_idle")
                elif seen.usage.input_tokens != usage.input_tokens:
                    stale.append(
                        f"{session.id} turn {turn}: usage.input_tokens {seen.usage.input_tokens} "
                        f"!= {usage.input_tokens} of the session.usage event"
                    )
        except BaseException as err:  # noqa: BLE001 - re-raised below
            failures.append(err)

    threads = [threading.Thread(target=take_turns, args=pair) for pair in zip(sessions, readers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=TURN_DEADLINE_S * n_turns)
    if failures:
        raise failures[0]
    # Lagging, or lost? Eventually every session object must show its last usage.
    for session, reader in zip(sessions, readers):
        want = of_type(list(reader.events), "session.usage")[-1].usage.input_tokens
        deadline = time.monotonic() + TURN_DEADLINE_S
        while h.client.beta.sessions.retrieve(session.id).usage.input_tokens != want:
            assert time.monotonic() < deadline, f"{session.id}: the session object never got the usage {want}"
            time.sleep(0.02)
    lagging_status = [s for s in stale if "status" in s]
    lagging_usage = [s for s in stale if "usage" in s]
    assert not stale, (
        f"of {n_sessions * n_turns} retrieves right after session.status_idle, {len(lagging_status)} still "
        f"said running and {len(lagging_usage)} had the previous usage; e.g. {(lagging_status + lagging_usage)[:4]}"
    )


# --------------------------------------------------------------------------- outcomes


def test_an_outcome_is_graded_with_heartbeats_through_the_sdk(harness: Harness) -> None:
    """§4.5 outcomes as the SDK sees them (strict validation of the stream, the
    list and the session object): a `needs_revision` verdict sends the agent
    back; the next grading, while its call is under way, sends
    `span.outcome_evaluation_ongoing` heartbeats and the session shows the
    outcome `evaluating`; an interrupt then ends it `interrupted`."""
    h = harness
    h.fake.set_script(
        [
            text_response("A draft."),
            text_response("VERDICT: needs_revision\nThe README has no usage section."),
            text_response("The README, with a usage section."),
            {"fault": "hang"},
        ]
    )
    session = h.session([toolset()])
    reader = h.open_stream(session.id)
    (defined,) = h.send(
        session.id,
        {
            "type": "user.define_outcome",
            "description": "a README for the project",
            "rubric": {"type": "text", "content": "has a usage section"},
            "max_iterations": 3,
        },
    )
    assert defined.type == "user.define_outcome" and defined.outcome_id, defined
    events = h.wait(reader, lambda evs: count(evs, "span.outcome_evaluation_ongoing") >= 2, "two heartbeats")
    first_end = first(events, "span.outcome_evaluation_end")
    assert (first_end.result, first_end.iteration, first_end.outcome_id) == ("needs_revision", 0, defined.outcome_id)
    assert "usage section" in first_end.explanation
    starts = of_type(events, "span.outcome_evaluation_start")
    assert [s.iteration for s in starts] == [0, 1], describe(events)
    assert first_end.outcome_evaluation_start_id == starts[0].id
    for beat in of_type(events, "span.outcome_evaluation_ongoing"):
        assert (beat.outcome_id, beat.iteration) == (defined.outcome_id, 1), beat
    shown = h.client.beta.sessions.retrieve(session.id)
    (evaluation,) = shown.outcome_evaluations
    assert (evaluation.outcome_id, evaluation.result, evaluation.iteration) == (defined.outcome_id, "evaluating", 1)

    h.send(session.id, {"type": "user.interrupt"})
    events = h.wait_idles(reader, 1)
    last_end = of_type(events, "span.outcome_evaluation_end")[-1]
    assert (last_end.result, last_end.outcome_evaluation_start_id) == ("interrupted", starts[1].id), last_end
    beats = [i for i, e in enumerate(events) if e.type == "span.outcome_evaluation_ongoing"]
    assert beats[-1] < events.index(last_end), "a heartbeat after the evaluation ended"
    assert types(events)[-2:] == TURN_END, describe(events)
    # The list validates every event strictly, and agrees with the stream.
    h.wait_status(session.id, "idle")
    assert [e.id for e in h.listed(session.id)] == [e.id for e in events]
    (evaluation,) = h.client.beta.sessions.retrieve(session.id).outcome_evaluations
    assert (evaluation.result, evaluation.iteration) == ("interrupted", 1), evaluation


# --------------------------------------------------------------------------- 8. forks (a Logbook extension)


def test_a_fork_is_an_ordinary_session_to_the_sdk(harness: Harness) -> None:
    """A fork made through `/x/v1` retries the turn with another model; the SDK
    sees it as any session: retrieve, list and stream validate strictly, the
    shared prefix keeps the parent's event ids, and the new turn streams."""
    h = harness
    h.fake.set_script([text_response("first answer"), text_response("second opinion")])
    parent = h.session([])
    reader = h.open_stream(parent.id)
    (sent,) = h.send(parent.id, user_message("what is the answer?"))
    h.wait_idles(reader, 1)

    fork = h.client.post(
        f"/x/v1/sessions/{parent.id}/fork",
        cast_to=object,
        body={"at_event_id": sent.id, "agent": {"model": "claude-opus-4-6"}},
    )
    assert isinstance(fork, dict) and fork["fork_origin"]["parent_session_id"] == parent.id, fork
    h.sessions.append(fork["id"])
    retrieved = h.client.beta.sessions.retrieve(fork["id"])
    assert retrieved.agent.model.id == "claude-opus-4-6"
    assert retrieved.environment_id == parent.environment_id
    # The fork starts idle (its prefix ends before the parent's turn): wait
    # for its own turn to reach the model, then for that turn to end.
    h.wait_requests(lambda rs: len(rs) >= 2, "the fork's model request")
    h.wait_status(fork["id"], "idle")

    listed = h.listed(fork["id"])
    assert listed[0].id == sent.id, "the shared prefix keeps the parent's event ids"
    answers = [e for e in listed if e.type == "agent.message"]
    assert [text_of(a.content) for a in answers] == ["second opinion"]
    requests = h.requests()
    assert [r["body"]["model"] for r in requests] == [MODEL, "claude-opus-4-6"]
    assert requests[0]["body"]["messages"] == requests[1]["body"]["messages"]

    # The fork takes input and streams like any session.
    h.fake.set_script([text_response("third")])
    fork_reader = h.open_stream(fork["id"])
    h.send(fork["id"], user_message("and again?"))
    streamed = h.wait_idles(fork_reader, 1)
    assert text_of(first(streamed, "agent.message").content) == "third"
    assert [e.id for e in h.listed(parent.id)][-1] != streamed[-1].id, "the parent did not move"
