"""client.beta.environments: create, retrieve, update, list, archive, delete."""

from __future__ import annotations

import anthropic
import pytest

from helpers import unique

EMPTY_PACKAGES = {"apt": [], "cargo": [], "gem": [], "go": [], "npm": [], "pip": []}


def packages_of(env) -> dict:
    p = env.config.packages
    return {"apt": p.apt, "cargo": p.cargo, "gem": p.gem, "go": p.go, "npm": p.npm, "pip": p.pip}


def test_create_cloud_default(client: anthropic.Anthropic) -> None:
    name = unique("env")
    env = client.beta.environments.create(name=name)
    assert env.type == "environment"
    assert env.id.startswith("env_")
    assert env.name == name
    assert env.config.type == "cloud"
    assert env.config.networking.type == "unrestricted"
    assert packages_of(env) == EMPTY_PACKAGES
    assert env.metadata == {}
    assert env.archived_at is None
    assert env.scope in (None, "organization")
    assert isinstance(env.created_at, str) and isinstance(env.updated_at, str)


def test_create_cloud_limited_networking_with_packages(client: anthropic.Anthropic) -> None:
    env = client.beta.environments.create(
        name=unique("env"),
        description="limited",
        metadata={"owner": "sdk-tests"},
        config={
            "type": "cloud",
            "networking": {
                "type": "limited",
                "allowed_hosts": ["api.example.com", "*.example.org"],
                "allow_package_managers": True,
            },
            "packages": {"pip": ["requests==2.32.0"], "npm": ["left-pad"]},
        },
    )
    assert env.description == "limited"
    assert env.metadata == {"owner": "sdk-tests"}
    net = env.config.networking
    assert net.type == "limited"
    assert net.allowed_hosts == ["api.example.com", "*.example.org"]
    assert net.allow_package_managers is True
    assert net.allow_mcp_servers is False, "allow_mcp_servers defaults to false"
    assert packages_of(env) == {**EMPTY_PACKAGES, "pip": ["requests==2.32.0"], "npm": ["left-pad"]}

    got = client.beta.environments.retrieve(env.id)
    assert got.config.networking.allowed_hosts == net.allowed_hosts
    assert packages_of(got) == packages_of(env)


def test_create_packages_without_package_managers_on_limited_network_is_rejected(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError):
        client.beta.environments.create(
            name=unique("env"),
            config={
                "type": "cloud",
                "networking": {"type": "limited", "allowed_hosts": ["example.com"]},
                "packages": {"pip": ["requests"]},
            },
        )


def test_create_self_hosted(client: anthropic.Anthropic) -> None:
    env = client.beta.environments.create(name=unique("env"), config={"type": "self_hosted"})
    assert env.config.type == "self_hosted"
    assert client.beta.environments.retrieve(env.id).config.type == "self_hosted"


def test_retrieve(client: anthropic.Anthropic) -> None:
    env = client.beta.environments.create(name=unique("env"), metadata={"k": "v"})
    got = client.beta.environments.retrieve(env.id)
    assert got.id == env.id
    assert got.name == env.name
    assert got.metadata == {"k": "v"}
    assert got.created_at == env.created_at


def test_update_metadata_patch_semantics(client: anthropic.Anthropic) -> None:
    env = client.beta.environments.create(name=unique("env"), metadata={"a": "1", "b": "2", "c": "3"})
    updated = client.beta.environments.update(env.id, metadata={"a": None, "b": "", "d": "4"})
    assert updated.metadata == {"c": "3", "d": "4"}, "null and '' delete, strings upsert, others stay"
    # Omitting metadata keeps it.
    renamed = client.beta.environments.update(env.id, name=unique("renamed"))
    assert renamed.metadata == {"c": "3", "d": "4"}
    assert renamed.name != env.name
    assert client.beta.environments.retrieve(env.id).metadata == {"c": "3", "d": "4"}


def test_update_description_and_config(client: anthropic.Anthropic) -> None:
    env = client.beta.environments.create(name=unique("env"), description="first")
    updated = client.beta.environments.update(
        env.id,
        description="second",
        config={"type": "cloud", "networking": {"type": "limited", "allowed_hosts": ["example.com"]}},
    )
    assert updated.description == "second"
    assert updated.config.type == "cloud"
    assert updated.config.networking.type == "limited"
    assert updated.config.networking.allowed_hosts == ["example.com"]
    cleared = client.beta.environments.update(env.id, description=None)
    assert cleared.description is None


def test_update_config_type_change_is_rejected(client: anthropic.Anthropic) -> None:
    env = client.beta.environments.create(name=unique("env"))
    with pytest.raises(anthropic.BadRequestError) as info:
        client.beta.environments.update(env.id, config={"type": "self_hosted"})
    assert info.value.status_code == 400
    assert info.value.error_code == "invalid_config_type_change"

    hosted = client.beta.environments.create(name=unique("env"), config={"type": "self_hosted"})
    with pytest.raises(anthropic.BadRequestError) as info:
        client.beta.environments.update(hosted.id, config={"type": "cloud"})
    assert info.value.error_code == "invalid_config_type_change"
    assert client.beta.environments.retrieve(hosted.id).config.type == "self_hosted"


def test_list(client: anthropic.Anthropic) -> None:
    created = [client.beta.environments.create(name=unique("env")) for _ in range(3)]
    ids = {e.id for e in created}
    seen = [e.id for e in client.beta.environments.list(limit=2)]
    assert len(seen) == len(set(seen)), "an environment appeared on two pages"
    assert ids <= set(seen)
    first = client.beta.environments.list(limit=1)
    assert len(first.data) == 1
    assert first.next_page


def test_archive_then_update_is_rejected(client: anthropic.Anthropic) -> None:
    env = client.beta.environments.create(name=unique("env"))
    archived = client.beta.environments.archive(env.id)
    assert archived.archived_at is not None
    assert client.beta.environments.retrieve(env.id).archived_at is not None

    with pytest.raises(anthropic.BadRequestError) as info:
        client.beta.environments.update(env.id, description="too late")
    assert info.value.error_code == "environment_archived"

    assert env.id not in {e.id for e in client.beta.environments.list(limit=100)}
    assert env.id in {e.id for e in client.beta.environments.list(limit=100, include_archived=True)}


def test_delete_then_retrieve_is_not_found(client: anthropic.Anthropic) -> None:
    env = client.beta.environments.create(name=unique("env"))
    deleted = client.beta.environments.delete(env.id)
    assert deleted.id == env.id
    assert deleted.type == "environment_deleted"
    with pytest.raises(anthropic.NotFoundError) as info:
        client.beta.environments.retrieve(env.id)
    err = info.value
    assert err.status_code == 404
    assert err.error_code == "environment_not_found"
    assert err.type == "not_found_error"
    # The SDK maps (404, environment_not_found) to its specific subclass.
    assert type(err).__name__ == "BetaEnvironmentNotFoundError"
    with pytest.raises(anthropic.NotFoundError):
        client.beta.environments.delete(env.id)


def test_update_partial_config_preserves_omitted_fields(client: anthropic.Anthropic) -> None:
    env = client.beta.environments.create(
        name=unique("env"),
        config={
            "type": "cloud",
            "networking": {"type": "limited", "allowed_hosts": ["a.example.com"], "allow_package_managers": True},
            "packages": {"pip": ["requests"]},
        },
    )
    updated = client.beta.environments.update(env.id, config={"type": "cloud", "packages": {"apt": ["curl"]}})
    assert updated.config.networking.type == "limited", "omitted networking is preserved"
    assert updated.config.networking.allowed_hosts == ["a.example.com"]
    assert updated.config.packages.apt == ["curl"]


def test_scope(client: anthropic.Anthropic) -> None:
    env = client.beta.environments.create(name=unique("env"), scope="account")
    assert env.scope == "account"
    assert client.beta.environments.update(env.id, scope="organization").scope == "organization"


def test_create_validation(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError):
        client.beta.environments.create(name="")
    with pytest.raises(anthropic.BadRequestError):
        client.beta.environments.create(name=unique("env"), config={"type": "moon"})  # type: ignore[typeddict-item]
    with pytest.raises(anthropic.BadRequestError) as info:
        client.beta.environments.create(name=unique("env"), metadata={f"k{i}": "v" for i in range(17)})
    assert info.value.error_code == "invalid_metadata"
