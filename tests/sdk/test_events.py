"""client.beta.sessions.events: send and list."""

from __future__ import annotations

import anthropic
import pytest

from helpers import system_message, user_message


def test_send_user_message(client: anthropic.Anthropic, new_session) -> None:
    session = new_session()
    sent = client.beta.sessions.events.send(session.id, events=[user_message("hi")])
    assert sent.data is not None and len(sent.data) == 1
    echo = sent.data[0]
    assert echo.type == "user.message"
    assert echo.id
    assert echo.content[0].type == "text"
    assert echo.content[0].text == "hi"

    listed = list(client.beta.sessions.events.list(session.id))
    assert [e.id for e in listed if e.type == "user.message"] == [echo.id]
    (stored,) = [e for e in listed if e.id == echo.id]
    assert stored.content[0].text == "hi"


def test_send_user_interrupt(client: anthropic.Anthropic, new_session) -> None:
    session = new_session()
    sent = client.beta.sessions.events.send(session.id, events=[{"type": "user.interrupt"}])
    assert sent.data is not None
    (echo,) = sent.data
    assert echo.type == "user.interrupt"
    assert echo.id
    assert echo.id in [e.id for e in client.beta.sessions.events.list(session.id, types=["user.interrupt"])]


def test_send_batch_keeps_order_and_ids(client: anthropic.Anthropic, new_session) -> None:
    session = new_session()
    sent = client.beta.sessions.events.send(
        session.id, events=[user_message("one"), {"type": "user.interrupt"}, user_message("two")]
    )
    assert sent.data is not None
    assert [e.type for e in sent.data] == ["user.message", "user.interrupt", "user.message"]
    ids = [e.id for e in sent.data]
    assert len(set(ids)) == 3
    assert [e.id for e in client.beta.sessions.events.list(session.id)][-3:] == ids


def test_system_message_after_user_message(client: anthropic.Anthropic, new_session) -> None:
    session = new_session()
    sent = client.beta.sessions.events.send(
        session.id, events=[user_message("question"), system_message("answer briefly")]
    )
    assert sent.data is not None
    assert [e.type for e in sent.data] == ["user.message", "system.message"]
    system = sent.data[1]
    assert system.content[0].text == "answer briefly"
    listed = list(client.beta.sessions.events.list(session.id, types=["system.message"]))
    assert [e.id for e in listed] == [system.id]
    assert listed[0].type == "system.message"


def test_misplaced_system_message_is_rejected(client: anthropic.Anthropic, new_session) -> None:
    session = new_session()
    # Alone: does not follow a user.message.
    with pytest.raises(anthropic.BadRequestError):
        client.beta.sessions.events.send(session.id, events=[system_message("alone")])
    # Not last.
    with pytest.raises(anthropic.BadRequestError):
        client.beta.sessions.events.send(
            session.id, events=[user_message("q"), system_message("s"), user_message("q2")]
        )
    # After an interrupt.
    with pytest.raises(anthropic.BadRequestError):
        client.beta.sessions.events.send(session.id, events=[{"type": "user.interrupt"}, system_message("s")])
    # All or nothing: nothing was appended.
    assert list(client.beta.sessions.events.list(session.id)) == []


def test_send_rejects_server_event_types_and_empty_batches(client: anthropic.Anthropic, new_session) -> None:
    session = new_session()
    with pytest.raises(anthropic.BadRequestError):
        client.beta.sessions.events.send(
            session.id, events=[{"type": "agent.message", "content": [{"type": "text", "text": "x"}]}]  # type: ignore[list-item]
        )
    with pytest.raises(anthropic.BadRequestError):
        client.beta.sessions.events.send(session.id, events=[])
    with pytest.raises(anthropic.NotFoundError):
        client.beta.sessions.events.send("sesn_doesnotexist", events=[user_message("x")])


def test_list_types_order_limit(client: anthropic.Anthropic, new_session) -> None:
    session = new_session()
    ids = []
    for i in range(3):
        sent = client.beta.sessions.events.send(session.id, events=[user_message(f"m{i}")])
        assert sent.data is not None
        ids.append(sent.data[0].id)
    interrupt = client.beta.sessions.events.send(session.id, events=[{"type": "user.interrupt"}])
    assert interrupt.data is not None
    client.beta.sessions.update(session.id, title="renamed")

    messages = list(client.beta.sessions.events.list(session.id, types=["user.message"]))
    assert [e.id for e in messages] == ids
    assert all(e.type == "user.message" for e in messages)

    two_types = list(client.beta.sessions.events.list(session.id, types=["user.interrupt", "session.updated"]))
    assert [e.type for e in two_types] == ["user.interrupt", "session.updated"]

    desc = list(client.beta.sessions.events.list(session.id, types=["user.message"], order="desc"))
    assert [e.id for e in desc] == list(reversed(ids))

    limited = client.beta.sessions.events.list(session.id, limit=2, types=["user.message"])
    assert [e.id for e in limited.data] == ids[:2]
    assert limited.next_page

    # Unfiltered, the history holds at least what was sent, in order, once each.
    everything = [e.id for e in client.beta.sessions.events.list(session.id)]
    assert len(everything) == len(set(everything))
    mine = ids + [interrupt.data[0].id]
    assert [i for i in everything if i in mine] == mine


def test_list_pagination_across_pages(client: anthropic.Anthropic, new_session) -> None:
    session = new_session()
    sent = client.beta.sessions.events.send(session.id, events=[user_message(f"m{i}") for i in range(7)])
    assert sent.data is not None
    ids = [e.id for e in sent.data]

    page = client.beta.sessions.events.list(session.id, limit=2, types=["user.message"])
    pages = []
    while True:
        pages.append([e.id for e in page.data])
        assert len(page.data) <= 2
        if not page.has_next_page():
            break
        page = page.get_next_page()
    assert [i for p in pages for i in p] == ids
    assert len(pages) == 4

    # Unfiltered auto-paging, both orders: every event once, sent ones in order.
    asc = [e.id for e in client.beta.sessions.events.list(session.id, limit=3)]
    assert len(asc) == len(set(asc))
    assert [i for i in asc if i in ids] == ids
    desc = [e.id for e in client.beta.sessions.events.list(session.id, limit=3, order="desc")]
    assert desc == list(reversed(asc))


def test_list_created_at_filter(client: anthropic.Anthropic, new_session) -> None:
    session = new_session()
    sent = client.beta.sessions.events.send(session.id, events=[user_message("a")])
    assert sent.data is not None
    listed = list(client.beta.sessions.events.list(session.id, types=["user.message"]))
    (event,) = listed
    assert event.processed_at is not None
    at = event.processed_at

    def ids(**kw):
        return [e.id for e in client.beta.sessions.events.list(session.id, types=["user.message"], **kw)]

    assert ids(created_at_gte=at) == [event.id]
    assert ids(created_at_gt=at) == []
    assert ids(created_at_lte=at) == [event.id]
    assert ids(created_at_lt=at) == []


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("filtered", [False, True], ids=["all-types", "types-filter"])
def test_last_page_has_no_next_page(client: anthropic.Anthropic, new_session, order: str, filtered: bool) -> None:
    """A page that reaches the end of the history carries `next_page: null`.

    The SDK's `SyncPageCursor.has_next_page()` is `next_page_info() is not None`,
    i.e. true for any non-empty `next_page` (anthropic/pagination.py,
    SyncPageCursor.has_next_page / next_page_info), so a cursor on the last page
    makes callers fetch an extra, empty page.
    """
    session = new_session()
    client.beta.sessions.events.send(session.id, events=[user_message(f"m{i}") for i in range(4)])
    kw: dict = {"order": order, "limit": 2}
    if filtered:
        kw["types"] = ["user.message"]

    # Exactly `limit` events in total would be one page; here 4 events = 2 full pages.
    page1 = client.beta.sessions.events.list(session.id, **kw)
    assert len(page1.data) == 2
    assert page1.next_page
    page2 = client.beta.sessions.events.list(session.id, page=page1.next_page, **kw)
    assert len(page2.data) == 2
    assert page2.next_page is None, (
        f"order={order}: the page holding the last event still has next_page={page2.next_page!r}"
    )
    assert not page2.has_next_page()

    # A single page that holds the whole history exactly.
    single = new_session()
    client.beta.sessions.events.send(single.id, events=[user_message("a"), user_message("b")])
    only = client.beta.sessions.events.list(single.id, **kw)
    assert len(only.data) == 2
    assert only.next_page is None, f"order={order}: a complete single page has next_page={only.next_page!r}"


