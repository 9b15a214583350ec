"""client.beta.sessions.events.stream: live SSE, the SDK's reconnect recipe, deltas, the end of a stream.

The stream is iterated on a background thread (`StreamReader`); every wait has a
deadline.
"""

from __future__ import annotations

import anthropic
import pytest

from helpers import WAIT_S, StreamReader, user_message


def _open(client: anthropic.Anthropic, session_id: str, **kwargs) -> StreamReader:
    # `stream()` returns once the response headers are in: the server has
    # subscribed, so everything appended from now on will be delivered.
    return StreamReader(client.beta.sessions.events.stream(session_id, **kwargs)).start()


def _finish(client: anthropic.Anthropic, reader: StreamReader, session_id: str) -> None:
    """Ends a stream server-side (archiving closes it), then closes the response."""
    if not reader.ended.is_set():
        try:
            client.beta.sessions.archive(session_id)
        except anthropic.APIError:
            pass
        reader.wait_ended(timeout=2.0)
    reader.close()


def test_stream_delivers_sent_events_with_listed_ids(client: anthropic.Anthropic, new_session) -> None:
    session = new_session()
    reader = _open(client, session.id)
    try:
        sent_ids = []
        for i in range(3):
            sent = client.beta.sessions.events.send(session.id, events=[user_message(f"live {i}")])
            assert sent.data is not None
            sent_ids.append(sent.data[0].id)
        sent_ids.append(
            client.beta.sessions.events.send(session.id, events=[{"type": "user.interrupt"}]).data[0].id  # type: ignore[index]
        )

        assert reader.wait_for(lambda evs: {e.id for e in evs} >= set(sent_ids)), (
            f"stream did not deliver the sent events within {WAIT_S}s: got {reader.ids()}, "
            f"error {reader.error!r}"
        )
        assert reader.error is None
        streamed = reader.ids()
        assert len(streamed) == len(set(streamed)), "an event was streamed twice"
        listed = [e.id for e in client.beta.sessions.events.list(session.id)]
        # Same ids, same order, as the history.
        assert [i for i in streamed if i in sent_ids] == sent_ids
        assert [i for i in listed if i in streamed] == streamed
        by_id = {e.id: e for e in reader.events}
        assert by_id[sent_ids[0]].type == "user.message"
        assert by_id[sent_ids[0]].content[0].text == "live 0"
        assert by_id[sent_ids[3]].type == "user.interrupt"
    finally:
        _finish(client, reader, session.id)


def test_reconnect_recipe_gives_every_event_once(client: anthropic.Anthropic, new_session) -> None:
    """The SDK runner's recipe: open the stream, then list the history, dedupe by id."""
    session = new_session(initial_events=[user_message("before 1")])
    client.beta.sessions.events.send(session.id, events=[user_message("before 2")])

    reader = _open(client, session.id)
    try:
        after = client.beta.sessions.events.send(session.id, events=[user_message("after 1")])
        assert after.data is not None
        history = list(client.beta.sessions.events.list(session.id))
        after2 = client.beta.sessions.events.send(session.id, events=[user_message("after 2")])
        assert after2.data is not None
        last_id = after2.data[0].id

        assert reader.wait_for(lambda evs: last_id in {e.id for e in evs}), (
            f"stream did not deliver {last_id}: got {reader.ids()}, error {reader.error!r}"
        )
        seen: set = set()
        merged = []
        for event in history + list(reader.events):
            if event.id in seen:
                continue
            seen.add(event.id)
            merged.append(event.id)

        full = [e.id for e in client.beta.sessions.events.list(session.id)]
        assert merged == full, "history + stream (deduped by id) is the whole log, in order"
        texts = [
            e.content[0].text
            for e in client.beta.sessions.events.list(session.id, types=["user.message"])
        ]
        assert texts == ["before 1", "before 2", "after 1", "after 2"]
    finally:
        _finish(client, reader, session.id)


def test_stream_with_event_deltas_opens(client: anthropic.Anthropic, new_session) -> None:
    session = new_session()
    reader = _open(client, session.id, event_deltas=["agent.message"])
    try:
        sent = client.beta.sessions.events.send(session.id, events=[user_message("with deltas")])
        assert sent.data is not None
        assert reader.wait_for(lambda evs: sent.data[0].id in {e.id for e in evs}), (  # type: ignore[index]
            f"stream with event_deltas delivered nothing: {reader.ids()}, error {reader.error!r}"
        )
        both = _open(client, session.id, event_deltas=["agent.message", "agent.thinking"])
        try:
            client.beta.sessions.archive(session.id)
            assert both.wait_ended() and reader.wait_ended()
            assert both.error is None and reader.error is None
            assert [e.type for e in both.events] == ["session.status_terminated"]
        finally:
            both.close()
    finally:
        _finish(client, reader, session.id)


def test_stream_with_bad_event_deltas_is_rejected(client: anthropic.Anthropic, new_session) -> None:
    session = new_session()
    with pytest.raises(anthropic.BadRequestError):
        client.beta.sessions.events.stream(session.id, event_deltas=["agent.tool_use"])  # type: ignore[list-item]


def test_stream_of_unknown_session_is_not_found(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError):
        client.beta.sessions.events.stream("sesn_doesnotexist")


def test_archiving_ends_the_stream(client: anthropic.Anthropic, new_session) -> None:
    session = new_session()
    reader = _open(client, session.id)
    try:
        client.beta.sessions.events.send(session.id, events=[user_message("last words")])
        client.beta.sessions.archive(session.id)
        assert reader.wait_ended(), f"the stream did not end within {WAIT_S}s after archiving"
        assert reader.error is None, f"the stream failed instead of ending: {reader.error!r}"
        types = [e.type for e in reader.events]
        assert types[-1] == "session.status_terminated"
        assert "user.message" in types
    finally:
        reader.close()


def test_deleting_ends_the_stream(client: anthropic.Anthropic, new_session) -> None:
    session = new_session()
    reader = _open(client, session.id)
    try:
        client.beta.sessions.delete(session.id)
        assert reader.wait_ended(), f"the stream did not end within {WAIT_S}s after deleting"
        assert reader.error is None, f"the stream failed instead of ending: {reader.error!r}"
        assert [e.type for e in reader.events][-1:] == ["session.deleted"]
    finally:
        reader.close()


def test_stream_of_terminated_session_ends_at_once(client: anthropic.Anthropic, new_session) -> None:
    session = new_session()
    client.beta.sessions.archive(session.id)
    reader = _open(client, session.id)
    try:
        assert reader.wait_ended(), "a stream of a terminated session stays open"
        assert reader.error is None
    finally:
        reader.close()


def test_sse_framing(client: anthropic.Anthropic, new_session) -> None:
    """Each persisted event is framed with `event: <type>` and `id: <event id>` (the SDK drops frames without `event:`)."""
    session = new_session()
    with client.beta.sessions.events.with_streaming_response.stream(session.id) as response:
        assert response.http_response.headers["content-type"].startswith("text/event-stream")
        assert response.headers.get("cache-control") == "no-cache"
        sent = client.beta.sessions.events.send(session.id, events=[user_message("framed")])
        assert sent.data is not None
        client.beta.sessions.archive(session.id)  # ends the stream, so reading terminates
        frames = list(anthropic.Stream.raw_events(response.http_response))
    data_frames = [f for f in frames if f.event != "ping"]
    assert [f.event for f in data_frames] == ["user.message", "session.status_terminated"]
    for frame in data_frames:
        payload = frame.json()
        assert frame.id == payload["id"]
        assert frame.event == payload["type"]
    assert data_frames[0].id == sent.data[0].id
