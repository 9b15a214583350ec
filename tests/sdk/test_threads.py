"""client.beta.sessions.threads: a session's primary thread (all Logbook runs), its events and stream."""

from __future__ import annotations

import anthropic
import pytest

from helpers import WAIT_S, StreamReader, user_message


def _primary(session_id: str) -> str:
    return "sthr_" + session_id.removeprefix("sesn_")


def test_a_session_has_its_primary_thread(client: anthropic.Anthropic, new_session) -> None:
    session = new_session()
    threads = list(client.beta.sessions.threads.list(session.id))
    assert [t.id for t in threads] == [_primary(session.id)]
    thread = threads[0]
    assert thread.type == "session_thread"
    assert thread.session_id == session.id
    assert thread.parent_thread_id is None
    assert thread.status == session.status
    assert thread.agent.type == "agent"
    assert thread.agent.id == session.agent.id
    assert thread.created_at == session.created_at
    again = client.beta.sessions.threads.retrieve(thread.id, session_id=session.id)
    assert again.id == thread.id
    assert list(client.beta.sessions.threads.list(session.id, statuses=["running"])) == []
    with pytest.raises(anthropic.NotFoundError):
        client.beta.sessions.threads.retrieve("sthr_01JQ8Z7M3P5R7T9V1X3Z5B7D0C", session_id=session.id)
    with pytest.raises(anthropic.BadRequestError):
        client.beta.sessions.threads.archive(thread.id, session_id=session.id)


def test_the_primary_threads_events_and_stream_are_the_sessions(client: anthropic.Anthropic, new_session) -> None:
    session = new_session()
    thread = _primary(session.id)
    reader = StreamReader(client.beta.sessions.threads.events.stream(thread, session_id=session.id)).start()
    try:
        sent = [
            client.beta.sessions.events.send(session.id, events=[user_message(f"to the thread {i}")]).data[0].id  # type: ignore[index]
            for i in range(3)
        ]
        assert reader.wait_for(lambda evs: {e.id for e in evs} >= set(sent)), (
            f"the thread stream did not deliver the sent events within {WAIT_S}s: {reader.ids()}, {reader.error!r}"
        )
        listed = [e.id for e in client.beta.sessions.threads.events.list(thread, session_id=session.id, limit=2)]
        assert listed == [e.id for e in client.beta.sessions.events.list(session.id)]
        assert [i for i in listed if i in sent] == sent
    finally:
        try:
            client.beta.sessions.archive(session.id)
        except anthropic.APIError:
            pass
        reader.wait_ended(timeout=2.0)
        reader.close()
