"""client.beta.sessions: create, retrieve, update, list, archive, delete."""

from __future__ import annotations

from datetime import timedelta

import anthropic
import pytest

from helpers import MODEL, unique, user_message


def test_create_from_agent_id(client: anthropic.Anthropic, new_agent, shared_env) -> None:
    agent = new_agent(system="sys", metadata={"k": "v"})
    session = client.beta.sessions.create(agent=agent.id, environment_id=shared_env.id, title="t1")
    assert session.type == "session"
    assert session.id.startswith("sesn_")
    assert session.status == "idle"
    assert session.environment_id == shared_env.id
    assert session.title == "t1"
    assert session.metadata == {}
    assert session.resources == []
    assert session.vault_ids == []
    assert session.outcome_evaluations == []
    assert session.archived_at is None
    snap = session.agent
    assert snap.id == agent.id
    assert snap.type == "agent"
    assert snap.version == 1
    assert snap.name == agent.name
    assert snap.model.id == MODEL
    assert snap.system == "sys"


def test_create_from_agent_id_pins_latest_version(client: anthropic.Anthropic, new_agent, shared_env) -> None:
    agent = new_agent(system="v1")
    client.beta.agents.update(agent.id, system="v2", version=1)
    session = client.beta.sessions.create(agent=agent.id, environment_id=shared_env.id)
    assert session.agent.version == 2
    assert session.agent.system == "v2"


def test_create_from_agent_object_with_version(client: anthropic.Anthropic, new_agent, shared_env) -> None:
    agent = new_agent(system="v1")
    client.beta.agents.update(agent.id, system="v2", version=1)
    session = client.beta.sessions.create(
        agent={"type": "agent", "id": agent.id, "version": 1}, environment_id=shared_env.id
    )
    assert session.agent.id == agent.id
    assert session.agent.version == 1
    assert session.agent.system == "v1"
    latest = client.beta.sessions.create(agent={"type": "agent", "id": agent.id}, environment_id=shared_env.id)
    assert latest.agent.version == 2


def test_create_with_overrides(client: anthropic.Anthropic, new_agent, shared_env) -> None:
    agent = new_agent(system="original")
    session = client.beta.sessions.create(
        agent={
            "type": "agent_with_overrides",
            "id": agent.id,
            "system": "overridden",
            "model": "claude-haiku-4-5",
            "tools": [{"type": "agent_toolset_20260401"}],
        },
        environment_id=shared_env.id,
    )
    assert session.agent.id == agent.id
    assert session.agent.system == "overridden"
    assert session.agent.model.id == "claude-haiku-4-5"
    assert [t.type for t in session.agent.tools] == ["agent_toolset_20260401"]
    # The agent itself is unchanged.
    stored = client.beta.agents.retrieve(agent.id)
    assert stored.system == "original"
    assert stored.version == 1


def test_create_with_initial_events(client: anthropic.Anthropic, new_session) -> None:
    session = new_session(initial_events=[user_message("hello"), user_message("again")])
    events = list(client.beta.sessions.events.list(session.id))
    messages = [e for e in events if e.type == "user.message"]
    assert [m.content[0].text for m in messages] == ["hello", "again"]
    assert all(m.id for m in messages)


def test_create_rejects_unknown_environment_and_agent(client: anthropic.Anthropic, shared_agent, shared_env) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        client.beta.sessions.create(agent=shared_agent.id, environment_id="env_doesnotexist")
    assert info.value.error_code == "environment_not_found"
    with pytest.raises(anthropic.NotFoundError):
        client.beta.sessions.create(agent="agent_doesnotexist", environment_id=shared_env.id)


def test_create_in_archived_environment_is_rejected(client: anthropic.Anthropic, shared_agent, new_env) -> None:
    env = new_env()
    client.beta.environments.archive(env.id)
    with pytest.raises(anthropic.BadRequestError):
        client.beta.sessions.create(agent=shared_agent.id, environment_id=env.id)


def test_retrieve(client: anthropic.Anthropic, new_session) -> None:
    session = new_session(title="retrieve me", metadata={"a": "1"})
    got = client.beta.sessions.retrieve(session.id)
    assert got.id == session.id
    assert got.status == "idle"
    assert got.title == "retrieve me"
    assert got.metadata == {"a": "1"}
    assert got.stats is not None
    assert got.stats.duration_seconds is not None and got.stats.duration_seconds >= 0
    assert got.usage is not None
    assert got.usage.input_tokens == 0
    assert got.usage.output_tokens == 0
    assert got.created_at == session.created_at


def test_update_title_and_metadata(client: anthropic.Anthropic, new_session) -> None:
    session = new_session(title="before", metadata={"a": "1", "b": "2"})
    updated = client.beta.sessions.update(session.id, title="after", metadata={"a": None, "c": "3"})
    assert updated.title == "after"
    assert updated.metadata == {"b": "2", "c": "3"}
    assert updated.updated_at >= session.updated_at
    got = client.beta.sessions.retrieve(session.id)
    assert got.title == "after"
    assert got.metadata == {"b": "2", "c": "3"}
    # The change is recorded as a session.updated event.
    updates = list(client.beta.sessions.events.list(session.id, types=["session.updated"]))
    assert len(updates) == 1
    assert updates[0].type == "session.updated"
    assert updates[0].title == "after"


def _tagged_sessions(client, agent_id, n, env_id):
    return [client.beta.sessions.create(agent=agent_id, environment_id=env_id, title=f"s{i}") for i in range(n)]


def test_list_order_and_statuses(client: anthropic.Anthropic, new_agent, shared_env) -> None:
    agent = new_agent()
    sessions = _tagged_sessions(client, agent.id, 3, shared_env.id)
    ids = [s.id for s in sessions]

    desc = [s.id for s in client.beta.sessions.list(agent_id=agent.id)]
    assert desc == list(reversed(ids)), "sessions list newest first by default"
    asc = [s.id for s in client.beta.sessions.list(agent_id=agent.id, order="asc")]
    assert asc == ids

    client.beta.sessions.archive(ids[0])
    idle = [s.id for s in client.beta.sessions.list(agent_id=agent.id, statuses=["idle"], order="asc")]
    assert idle == ids[1:]
    terminated = [
        s.id
        for s in client.beta.sessions.list(agent_id=agent.id, statuses=["terminated"], include_archived=True)
    ]
    assert terminated == [ids[0]]
    both = [
        s.id
        for s in client.beta.sessions.list(
            agent_id=agent.id, statuses=["idle", "terminated"], include_archived=True, order="asc"
        )
    ]
    assert both == ids
    # Archived sessions are hidden unless asked for.
    assert ids[0] not in [s.id for s in client.beta.sessions.list(agent_id=agent.id)]

    with pytest.raises(anthropic.BadRequestError):
        client.beta.sessions.list(statuses=["sleeping"])  # type: ignore[list-item]


def test_list_created_at_filters(client: anthropic.Anthropic, new_agent, shared_env) -> None:
    agent = new_agent()
    a, b = _tagged_sessions(client, agent.id, 2, shared_env.id)

    def ids(**kw):
        return {s.id for s in client.beta.sessions.list(agent_id=agent.id, **kw)}

    assert ids(created_at_gte=a.created_at) == {a.id, b.id}
    assert ids(created_at_gt=a.created_at) == ({b.id} if b.created_at > a.created_at else set())
    assert ids(created_at_lte=b.created_at) == {a.id, b.id}
    assert ids(created_at_lt=b.created_at) == ({a.id} if a.created_at < b.created_at else set())
    assert ids(created_at_gte=b.created_at + timedelta(seconds=1)) == set()
    assert ids(created_at_lte=a.created_at - timedelta(seconds=1)) == set()


def test_list_pagination_both_directions(client: anthropic.Anthropic, new_agent, shared_env) -> None:
    agent = new_agent()
    sessions = _tagged_sessions(client, agent.id, 5, shared_env.id)
    newest_first = [s.id for s in reversed(sessions)]

    page1 = client.beta.sessions.list(agent_id=agent.id, limit=2)
    assert [s.id for s in page1.data] == newest_first[0:2]
    assert page1.prev_page is None, "the first page has no prev_page"
    assert page1.next_page

    page2 = client.beta.sessions.list(agent_id=agent.id, limit=2, page=page1.next_page)
    assert [s.id for s in page2.data] == newest_first[2:4]
    assert page2.prev_page, "a later page has a prev_page"
    assert page2.next_page

    page3 = page2.get_next_page()
    assert [s.id for s in page3.data] == newest_first[4:5]
    assert not page3.next_page
    assert not page3.has_next_page()
    assert page3.prev_page

    back2 = client.beta.sessions.list(agent_id=agent.id, limit=2, page=page3.prev_page)
    assert [s.id for s in back2.data] == newest_first[2:4]
    back1 = client.beta.sessions.list(agent_id=agent.id, limit=2, page=back2.prev_page)
    assert [s.id for s in back1.data] == newest_first[0:2]
    assert back1.prev_page is None, "paging back to the start ends with no prev_page"
    assert back1.next_page

    # The auto-pager sees each exactly once.
    auto = [s.id for s in client.beta.sessions.list(agent_id=agent.id, limit=2)]
    assert auto == newest_first

    # Ascending pages too.
    asc = [s.id for s in client.beta.sessions.list(agent_id=agent.id, limit=2, order="asc")]
    assert asc == [s.id for s in sessions]


def test_list_agent_version_filter(client: anthropic.Anthropic, new_agent, shared_env) -> None:
    agent = new_agent(system="v1")
    s1 = client.beta.sessions.create(agent=agent.id, environment_id=shared_env.id)
    client.beta.agents.update(agent.id, system="v2")
    s2 = client.beta.sessions.create(agent=agent.id, environment_id=shared_env.id)
    assert [s.id for s in client.beta.sessions.list(agent_id=agent.id, agent_version=1)] == [s1.id]
    assert [s.id for s in client.beta.sessions.list(agent_id=agent.id, agent_version=2)] == [s2.id]


def test_archive(client: anthropic.Anthropic, new_session) -> None:
    session = new_session()
    archived = client.beta.sessions.archive(session.id)
    assert archived.id == session.id
    assert archived.status == "terminated"
    assert archived.archived_at is not None
    got = client.beta.sessions.retrieve(session.id)
    assert got.status == "terminated"
    assert got.archived_at is not None
    types = [e.type for e in client.beta.sessions.events.list(session.id)]
    assert types[-1] == "session.status_terminated"
    # An archived session takes no more events and no updates.
    with pytest.raises(anthropic.BadRequestError):
        client.beta.sessions.events.send(session.id, events=[user_message("late")])
    with pytest.raises(anthropic.BadRequestError):
        client.beta.sessions.update(session.id, title="late")


def test_delete(client: anthropic.Anthropic, new_session) -> None:
    session = new_session()
    deleted = client.beta.sessions.delete(session.id)
    assert deleted.id == session.id
    assert deleted.type == "session_deleted"
    with pytest.raises(anthropic.NotFoundError) as info:
        client.beta.sessions.retrieve(session.id)
    assert info.value.status_code == 404
    with pytest.raises(anthropic.NotFoundError):
        client.beta.sessions.events.list(session.id)
    with pytest.raises(anthropic.NotFoundError):
        client.beta.sessions.delete(session.id)


def test_budget(client: anthropic.Anthropic, new_session) -> None:
    budget = {"type": "limit", "max_list_cost": {"amount": "2500", "currency": "USD"}}
    session = new_session(budget=budget)
    assert session.budget is not None
    assert session.budget.type == "limit"
    assert session.budget.max_list_cost.amount == "2500"
    assert session.budget.max_list_cost.currency == "USD"
    raised = client.beta.sessions.update(
        session.id, budget={"type": "limit", "max_list_cost": {"amount": "5000", "currency": "USD"}}
    )
    assert raised.budget is not None and raised.budget.max_list_cost.amount == "5000"
    removed = client.beta.sessions.update(session.id, budget=None)
    assert removed.budget is None

    plain = new_session()
    with pytest.raises(anthropic.BadRequestError):
        client.beta.sessions.update(plain.id, budget=budget)


def test_update_unchanged_emits_no_event(client: anthropic.Anthropic, new_session) -> None:
    session = new_session(title="same")
    client.beta.sessions.update(session.id, title="same")
    assert list(client.beta.sessions.events.list(session.id, types=["session.updated"])) == []
    client.beta.sessions.update(session.id, metadata={"k": "v"})
    (event,) = list(client.beta.sessions.events.list(session.id, types=["session.updated"]))
    assert event.metadata == {"k": "v"}
    assert event.title is None, "only changed fields are carried"


def test_list_validation(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError):
        client.beta.sessions.list(limit=0)
    with pytest.raises(anthropic.BadRequestError):
        client.beta.sessions.list(page="garbage")
    with pytest.raises(anthropic.BadRequestError):
        client.beta.sessions.list(agent_version=1)


def test_update_agent_tools(client: anthropic.Anthropic, new_agent, shared_env) -> None:
    agent = new_agent(tools=[{"type": "agent_toolset_20260401"}])
    session = client.beta.sessions.create(agent=agent.id, environment_id=shared_env.id)
    custom = {"type": "custom", "name": "lookup", "description": "Look up", "input_schema": {"type": "object"}}
    updated = client.beta.sessions.update(session.id, agent={"tools": [custom]})
    assert [t.type for t in updated.agent.tools] == ["custom"]
    assert updated.agent.version == 1
    # Only this session changed, and the change is an event carrying the new snapshot.
    assert [t.type for t in client.beta.agents.retrieve(agent.id).tools] == ["agent_toolset_20260401"]
    (event,) = list(client.beta.sessions.events.list(session.id, types=["session.updated"]))
    assert event.agent is not None
    assert [t.type for t in event.agent.tools] == ["custom"]
    assert event.title is None and event.metadata is None


def test_coordinator_agent_snapshot_expands_its_roster(client: anthropic.Anthropic, new_agent, shared_env) -> None:
    # BetaManagedAgentsSessionMultiagentCoordinator.agents (the session's
    # `agent.multiagent`) holds "full `agent` definitions"
    # (BetaManagedAgentsSessionThreadAgent: name, model, tools, ... required);
    # Logbook copies the agent's `{type, id, version}` references, so the
    # session object (create, retrieve, list) fails strict validation.
    member = new_agent(system="member prompt")
    lead = new_agent(multiagent={"type": "coordinator", "agents": [member.id]})
    created = client.beta.sessions.with_raw_response.create(agent=lead.id, environment_id=shared_env.id)
    try:
        session = created.parse()
        assert session.agent.multiagent is not None and session.agent.multiagent.type == "coordinator"
        (entry,) = session.agent.multiagent.agents
        assert (entry.type, entry.id, entry.name, entry.system) == ("agent", member.id, member.name, "member prompt")
    finally:
        # Deleted, so that later session lists of the shared server do not meet it.
        client.beta.sessions.with_raw_response.delete(created.http_response.json()["id"])
