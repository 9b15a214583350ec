"""client.beta.agents: create, retrieve (by version), update, list, archive, versions."""

from __future__ import annotations

from datetime import timedelta

import anthropic
import pytest

from helpers import MODEL, unique

TOOLSET_WITH_CONFIGS = {
    "type": "agent_toolset_20260401",
    "default_config": {"permission_policy": {"type": "always_allow"}},
    "configs": [
        {"name": "bash", "permission_policy": {"type": "always_ask"}},
        {"name": "web_fetch", "enabled": False},
    ],
}

CUSTOM_TOOL = {
    "type": "custom",
    "name": "get_weather",
    "description": "Get the weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def test_create_with_string_model(client: anthropic.Anthropic) -> None:
    name = unique("agent")
    agent = client.beta.agents.create(name=name, model=MODEL, system="be helpful", description="a test agent")
    assert agent.type == "agent"
    assert agent.id
    assert agent.name == name
    assert agent.model.id == MODEL
    assert agent.model.effort is not None, "effort is resolved at save time and always present"
    assert agent.system == "be helpful"
    assert agent.description == "a test agent"
    assert agent.version == 1
    assert agent.tools == []
    assert agent.mcp_servers == []
    assert agent.skills == []
    assert agent.metadata == {}
    assert agent.execution_identity.type == "service_account"
    assert agent.archived_at is None
    assert agent.created_at == agent.updated_at


def test_create_with_model_object(client: anthropic.Anthropic) -> None:
    agent = client.beta.agents.create(
        name=unique("agent"), model={"id": MODEL, "effort": "low", "speed": "standard"}
    )
    assert agent.model.id == MODEL
    assert agent.model.effort is not None and agent.model.effort.type == "low"
    assert agent.model.speed == "standard"
    # The object form of effort is accepted too.
    agent2 = client.beta.agents.create(name=unique("agent"), model={"id": MODEL, "effort": {"type": "max"}})
    assert agent2.model.effort is not None and agent2.model.effort.type == "max"


def test_create_with_toolset_configs_and_custom_tool(client: anthropic.Anthropic) -> None:
    agent = client.beta.agents.create(
        name=unique("agent"), model=MODEL, tools=[TOOLSET_WITH_CONFIGS, CUSTOM_TOOL]
    )
    assert len(agent.tools) == 2
    toolset, custom = agent.tools
    assert toolset.type == "agent_toolset_20260401"
    assert toolset.default_config is not None
    assert toolset.default_config.enabled is True
    assert toolset.default_config.permission_policy.type == "always_allow"
    configs = {c.name: c for c in toolset.configs}
    assert configs["bash"].permission_policy.type == "always_ask"
    assert configs["bash"].enabled is True
    assert configs["web_fetch"].enabled is False
    assert custom.type == "custom"
    assert custom.name == "get_weather"
    assert custom.description == "Get the weather for a city"
    assert custom.input_schema.type == "object"
    assert custom.input_schema.required == ["city"]


def test_create_with_mcp_server_and_toolset(client: anthropic.Anthropic) -> None:
    agent = client.beta.agents.create(
        name=unique("agent"),
        model=MODEL,
        mcp_servers=[{"type": "url", "name": "docs", "url": "https://mcp.example.com/sse"}],
        tools=[
            {
                "type": "mcp_toolset",
                "mcp_server_name": "docs",
                "configs": [{"name": "search", "permission_policy": {"type": "always_allow"}}],
            }
        ],
    )
    assert len(agent.mcp_servers) == 1
    server = agent.mcp_servers[0]
    assert (server.type, server.name, server.url) == ("url", "docs", "https://mcp.example.com/sse")
    (toolset,) = agent.tools
    assert toolset.type == "mcp_toolset"
    assert toolset.mcp_server_name == "docs"
    assert toolset.default_config is not None
    assert toolset.default_config.permission_policy.type == "always_ask", "MCP toolsets default to always_ask"
    (config,) = toolset.configs
    assert config.name == "search"
    assert config.permission_policy.type == "always_allow"


def test_create_unreferenced_mcp_server_is_rejected(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError):
        client.beta.agents.create(
            name=unique("agent"),
            model=MODEL,
            mcp_servers=[{"type": "url", "name": "orphan", "url": "https://mcp.example.com/sse"}],
        )


def test_create_with_metadata(client: anthropic.Anthropic) -> None:
    agent = client.beta.agents.create(name=unique("agent"), model=MODEL, metadata={"team": "infra", "tier": "1"})
    assert agent.metadata == {"team": "infra", "tier": "1"}
    assert client.beta.agents.retrieve(agent.id).metadata == {"team": "infra", "tier": "1"}


def test_retrieve_and_retrieve_version(client: anthropic.Anthropic) -> None:
    agent = client.beta.agents.create(name=unique("agent"), model=MODEL, system="v1")
    got = client.beta.agents.retrieve(agent.id)
    assert got.id == agent.id
    assert got.version == 1
    assert got.system == "v1"

    v2 = client.beta.agents.update(agent.id, system="v2", version=1)
    assert v2.version == 2
    assert v2.system == "v2"

    assert client.beta.agents.retrieve(agent.id).version == 2
    old = client.beta.agents.retrieve(agent.id, version=1)
    assert old.version == 1
    assert old.system == "v1"
    new = client.beta.agents.retrieve(agent.id, version=2)
    assert new.version == 2
    assert new.system == "v2"

    with pytest.raises(anthropic.NotFoundError):
        client.beta.agents.retrieve(agent.id, version=99)


def test_update_with_version_new_version_and_noop(client: anthropic.Anthropic) -> None:
    agent = client.beta.agents.create(name=unique("agent"), model=MODEL, metadata={"a": "1", "b": "2"})
    updated = client.beta.agents.update(agent.id, version=1, description="now described", metadata={"a": None, "c": "3"})
    assert updated.version == 2
    assert updated.description == "now described"
    assert updated.metadata == {"b": "2", "c": "3"}, "metadata update is a patch: null deletes, omitted keys stay"
    assert updated.updated_at >= agent.updated_at
    assert updated.created_at == agent.created_at

    # An update that changes nothing keeps the version.
    same = client.beta.agents.update(agent.id, version=2, description="now described")
    assert same.version == 2
    same2 = client.beta.agents.update(agent.id)
    assert same2.version == 2

    # Without a version the update is unconditional.
    v3 = client.beta.agents.update(agent.id, name=unique("renamed"))
    assert v3.version == 3


def test_update_version_mismatch_is_conflict_with_single_attempt(make_client) -> None:
    import httpx2

    requests: list = []
    http_client = anthropic.DefaultHttpxClient(event_hooks={"request": [requests.append]})
    # max_retries=2: the SDK would retry a 409 unless the server says x-should-retry: false.
    retrying = make_client(max_retries=2, http_client=http_client)
    agent = retrying.beta.agents.create(name=unique("agent"), model=MODEL)
    retrying.beta.agents.update(agent.id, version=1, system="changed")
    requests.clear()
    with pytest.raises(anthropic.ConflictError) as info:
        retrying.beta.agents.update(agent.id, version=1, system="stale writer")
    err = info.value
    assert err.status_code == 409
    assert err.type == "conflict_error"
    assert err.response.headers.get("x-should-retry") == "false"
    assert len(requests) == 1, f"the SDK retried a non-transient 409: {len(requests)} attempts"
    assert isinstance(requests[0], httpx2.Request)
    # Nothing changed.
    assert retrying.beta.agents.retrieve(agent.id).system == "changed"


def test_update_cannot_clear_name_or_model(client: anthropic.Anthropic) -> None:
    agent = client.beta.agents.create(name=unique("agent"), model=MODEL)
    with pytest.raises(anthropic.BadRequestError):
        client.beta.agents.update(agent.id, name="")
    with pytest.raises(anthropic.BadRequestError):
        client.beta.agents.update(agent.id, extra_body={"model": None})


def test_list_auto_pager_sees_every_agent_once(client: anthropic.Anthropic) -> None:
    tag = unique("page")
    created = [client.beta.agents.create(name=unique("agent"), model=MODEL, metadata={"tag": tag}) for _ in range(6)]
    ids = {a.id for a in created}

    first = client.beta.agents.list(limit=2)
    assert len(first.data) == 2
    assert first.next_page, "a first page of 2 out of >=6 agents has a next_page"
    assert first.has_next_page()

    seen: list = []
    n_pages = 0
    page = first
    while True:
        n_pages += 1
        assert len(page.data) <= 2
        seen.extend(a.id for a in page.data)
        if not page.has_next_page():
            break
        page = page.get_next_page()
    assert n_pages >= 3
    assert len(seen) == len(set(seen)), "an agent appeared on two pages"
    assert ids <= set(seen)

    # The auto-pager (iterating the page object) follows next_page to the end.
    auto = [a.id for a in client.beta.agents.list(limit=2)]
    assert len(auto) == len(set(auto))
    assert ids <= set(auto)
    tagged = [a.id for a in client.beta.agents.list(limit=2) if a.metadata.get("tag") == tag]
    assert sorted(tagged) == sorted(ids)


def test_list_created_at_filters(client: anthropic.Anthropic) -> None:
    a = client.beta.agents.create(name=unique("agent"), model=MODEL)
    b = client.beta.agents.create(name=unique("agent"), model=MODEL)
    assert b.created_at >= a.created_at

    since_a = {x.id for x in client.beta.agents.list(created_at_gte=a.created_at, limit=100)}
    assert {a.id, b.id} <= since_a

    after_b = {x.id for x in client.beta.agents.list(created_at_gte=b.created_at + timedelta(seconds=1), limit=100)}
    assert a.id not in after_b and b.id not in after_b

    until_a = {x.id for x in client.beta.agents.list(created_at_lte=a.created_at, limit=100)}
    assert a.id in until_a
    before_a = {x.id for x in client.beta.agents.list(created_at_lte=a.created_at - timedelta(seconds=1), limit=100)}
    assert a.id not in before_a

    # A string with a Z suffix is sent verbatim and accepted too.
    z = a.created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert a.id in {x.id for x in client.beta.agents.list(created_at_gte=z, limit=100)}


def test_archive_and_include_archived(client: anthropic.Anthropic) -> None:
    agent = client.beta.agents.create(name=unique("agent"), model=MODEL)
    archived = client.beta.agents.archive(agent.id)
    assert archived.id == agent.id
    assert archived.archived_at is not None
    assert client.beta.agents.retrieve(agent.id).archived_at is not None

    assert agent.id not in {a.id for a in client.beta.agents.list(limit=100, created_at_gte=agent.created_at)}
    assert agent.id in {
        a.id for a in client.beta.agents.list(limit=100, include_archived=True, created_at_gte=agent.created_at)
    }
    # Archiving again is harmless.
    assert client.beta.agents.archive(agent.id).archived_at == archived.archived_at


def test_versions_list(client: anthropic.Anthropic) -> None:
    agent = client.beta.agents.create(name=unique("agent"), model=MODEL, system="s1")
    client.beta.agents.update(agent.id, system="s2", version=1)
    client.beta.agents.update(agent.id, system="s3", version=2)
    page = client.beta.agents.versions.list(agent.id)
    versions = sorted(v.version for v in page.data)
    assert versions == [1, 2, 3]
    by_version = {v.version: v for v in page.data}
    assert by_version[1].system == "s1" and by_version[3].system == "s3"
    assert all(v.id == agent.id for v in page.data)

    paged = [v.version for v in client.beta.agents.versions.list(agent.id, limit=1)]
    assert sorted(paged) == [1, 2, 3]
    assert len(paged) == 3

    with pytest.raises(anthropic.NotFoundError):
        client.beta.agents.versions.list("agent_does_not_exist")


def test_update_clears_and_replaces(client: anthropic.Anthropic) -> None:
    agent = client.beta.agents.create(
        name=unique("agent"),
        model=MODEL,
        system="sys",
        description="desc",
        tools=[TOOLSET_WITH_CONFIGS, CUSTOM_TOOL],
    )
    cleared = client.beta.agents.update(agent.id, system=None, description="")
    assert cleared.version == 2
    assert cleared.system is None, "system: null clears"
    assert cleared.description is None, 'description: "" clears'
    assert len(cleared.tools) == 2, "omitted tools are preserved"

    replaced = client.beta.agents.update(agent.id, tools=[CUSTOM_TOOL])
    assert replaced.version == 3
    assert [t.type for t in replaced.tools] == ["custom"], "tools are replaced as a whole"
    emptied = client.beta.agents.update(agent.id, tools=None)
    assert emptied.tools == []
    assert emptied.version == 4


def test_update_model_keeps_effort_when_omitted(client: anthropic.Anthropic) -> None:
    agent = client.beta.agents.create(name=unique("agent"), model={"id": MODEL, "effort": "low"})
    same = client.beta.agents.update(agent.id, model={"id": MODEL})
    assert same.model.effort is not None and same.model.effort.type == "low", (
        "on update, omitting effort leaves the stored value unchanged"
    )
    assert same.version == 1, "re-sending the same model changes nothing"
    changed = client.beta.agents.update(agent.id, model={"id": MODEL, "effort": "high"})
    assert changed.model.effort is not None and changed.model.effort.type == "high"
    assert changed.version == 2


def test_retrieve_bad_version_is_rejected(client: anthropic.Anthropic) -> None:
    agent = client.beta.agents.create(name=unique("agent"), model=MODEL)
    with pytest.raises(anthropic.BadRequestError):
        client.beta.agents.retrieve(agent.id, version=0)


def test_archived_agent_cannot_be_updated_or_start_sessions(client: anthropic.Anthropic, shared_env) -> None:
    agent = client.beta.agents.create(name=unique("agent"), model=MODEL)
    client.beta.agents.archive(agent.id)
    with pytest.raises(anthropic.BadRequestError):
        client.beta.agents.update(agent.id, system="x")
    with pytest.raises(anthropic.BadRequestError):
        client.beta.sessions.create(agent=agent.id, environment_id=shared_env.id)
    # Its versions stay readable.
    assert [v.version for v in client.beta.agents.versions.list(agent.id)] == [1]


def test_list_limit_bounds(client: anthropic.Anthropic) -> None:
    assert len(client.beta.agents.list(limit=100).data) <= 100
    with pytest.raises(anthropic.BadRequestError):
        client.beta.agents.list(limit=0)
    with pytest.raises(anthropic.BadRequestError):
        client.beta.agents.list(limit=101)
    with pytest.raises(anthropic.BadRequestError):
        client.beta.agents.list(page="not-a-cursor")


def test_coordinator_self_entry_is_resolved_to_an_agent_reference(client: anthropic.Anthropic) -> None:
    # BetaManagedAgentsMultiagentSelfParams: the `{"type": "self"}` sentinel is
    # "resolved server-side to a concrete agent reference"; the response's
    # BetaManagedAgentsMultiagentCoordinator.agents is a union of
    # BetaManagedAgentsAgentReference and BetaManagedAgentsAdvisor only, so an
    # echoed `{"type": "self"}` fails strict validation.
    member = client.beta.agents.create(name=unique("member"), model=MODEL)
    created = client.beta.agents.with_raw_response.create(
        name=unique("lead"), model=MODEL, multiagent={"type": "coordinator", "agents": [member.id, {"type": "self"}]}
    )
    lead_id = created.http_response.json()["id"]
    try:
        lead = created.parse()
        assert lead.multiagent is not None and lead.multiagent.type == "coordinator"
        assert [(a.type, a.id) for a in lead.multiagent.agents] == [("agent", member.id), ("agent", lead_id)]
    finally:
        # Archived, so that later agent lists of the shared server do not meet it.
        client.beta.agents.with_raw_response.archive(lead_id)


def test_multiagent_20261001_is_returned_resolved(client: anthropic.Anthropic) -> None:
    # BetaManagedAgentsMultiagent20261001 (the response model) requires
    # `advisor`, `subagents` and `workflows`, each resolved (advisor defaults to
    # disabled, subagents and workflows to enabled with inline_agents and
    # predefined_agents); Logbook echoes the request's members only.
    created = client.beta.agents.with_raw_response.create(
        name=unique("lead"), model=MODEL, multiagent={"type": "multiagent_20261001"}
    )
    try:
        agent = created.parse()
        assert agent.multiagent is not None and agent.multiagent.type == "multiagent_20261001"
        assert agent.multiagent.advisor.type == "disabled"
        assert agent.multiagent.subagents.type == "enabled"
        assert agent.multiagent.workflows.type == "enabled"
    finally:
        # Archived, so that later agent lists of the shared server do not meet it.
        client.beta.agents.with_raw_response.archive(created.http_response.json()["id"])
