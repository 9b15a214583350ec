"""Errors as the SDK sees them: exception classes, request ids, the envelope, the beta header."""

from __future__ import annotations

import anthropic
import httpx2
import pytest

from helpers import MODEL, unique

BETA = "managed-agents-2026-04-01"


def check_envelope(err: anthropic.APIStatusError, status: int, error_type: str) -> None:
    assert err.status_code == status
    assert err.request_id, "request-id header missing or empty"
    assert err.request_id == err.response.headers.get("request-id")
    body = err.body
    assert isinstance(body, dict), f"error body is not JSON: {body!r}"
    assert body.get("type") == "error"
    inner = body.get("error")
    assert isinstance(inner, dict)
    assert inner.get("type") == error_type
    assert isinstance(inner.get("message"), str) and inner["message"]
    assert body.get("request_id") == err.request_id, "body request_id differs from the request-id header"
    assert err.type == error_type
    assert err.api_message == inner["message"]
    if "details" in inner:
        assert isinstance(inner["details"], dict)


def test_400_bad_request(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        client.beta.agents.create(name="", model=MODEL)
    check_envelope(info.value, 400, "invalid_request_error")


def test_400_bad_query_parameter(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        client.beta.agents.list(limit=1000)
    check_envelope(info.value, 400, "invalid_request_error")


def test_401_wrong_key(make_client) -> None:
    bad = make_client(api_key="sk-logbook-" + "0" * 32)
    with pytest.raises(anthropic.AuthenticationError) as info:
        bad.beta.agents.list()
    check_envelope(info.value, 401, "authentication_error")


def test_401_missing_key(server) -> None:
    response = httpx2.get(f"{server.url}/v1/agents", headers={"anthropic-beta": BETA})
    assert response.status_code == 401
    assert response.headers.get("request-id")
    assert response.json()["error"]["type"] == "authentication_error"


def test_404_not_found(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        client.beta.agents.retrieve("agent_doesnotexist")
    check_envelope(info.value, 404, "not_found_error")
    with pytest.raises(anthropic.NotFoundError) as info:
        client.beta.sessions.retrieve("sesn_doesnotexist")
    check_envelope(info.value, 404, "not_found_error")


def test_404_environment_not_found_code(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        client.beta.environments.retrieve("env_doesnotexist")
    check_envelope(info.value, 404, "not_found_error")
    assert info.value.error_code == "environment_not_found"
    assert info.value.body["error"]["details"]["error_code"] == "environment_not_found"  # type: ignore[index]


def test_409_conflict(client: anthropic.Anthropic) -> None:
    agent = client.beta.agents.create(name=unique("agent"), model=MODEL)
    with pytest.raises(anthropic.ConflictError) as info:
        client.beta.agents.update(agent.id, version=7, system="x")
    check_envelope(info.value, 409, "conflict_error")
    assert info.value.response.headers.get("x-should-retry") == "false"


def test_error_code_subclasses(client: anthropic.Anthropic) -> None:
    env = client.beta.environments.create(name=unique("env"))
    with pytest.raises(anthropic.BadRequestError) as info:
        client.beta.environments.update(env.id, config={"type": "self_hosted"})
    check_envelope(info.value, 400, "invalid_request_error")
    assert info.value.error_code == "invalid_config_type_change"
    assert type(info.value).__name__ == "BetaInvalidConfigTypeChangeError"

    client.beta.environments.archive(env.id)
    with pytest.raises(anthropic.BadRequestError) as info:
        client.beta.environments.update(env.id, name="x")
    assert info.value.error_code == "environment_archived"
    assert type(info.value).__name__ == "BetaEnvironmentArchivedError"

    with pytest.raises(anthropic.BadRequestError) as info:
        client.beta.agents.create(name=unique("agent"), model=MODEL, metadata={"k": "v" * 513})
    assert info.value.error_code == "invalid_metadata"
    assert type(info.value).__name__ == "BetaInvalidMetadataError"


def test_wrong_beta_header_is_400(client: anthropic.Anthropic) -> None:
    # The SDK sets anthropic-beta per call, after the client's default headers;
    # a per-call extra header is what replaces it.
    with pytest.raises(anthropic.BadRequestError) as info:
        client.beta.agents.list(extra_headers={"anthropic-beta": "something-else"})
    check_envelope(info.value, 400, "invalid_request_error")

    # with_options(default_headers=...) cannot remove it: the call still succeeds.
    other = client.with_options(default_headers={"anthropic-beta": "something-else"})
    other.beta.agents.list(limit=1)


def test_missing_beta_header_is_400_raw(server) -> None:
    response = httpx2.get(f"{server.url}/v1/agents", headers={"authorization": f"Bearer {server.key}"})
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert response.headers.get("request-id")
    assert body.get("request_id") == response.headers.get("request-id")


def test_beta_header_as_comma_list_and_x_api_key(client: anthropic.Anthropic, server) -> None:
    client.beta.agents.list(limit=1, betas=["files-api-2025-04-14"])
    response = httpx2.get(
        f"{server.url}/v1/agents?limit=1",
        headers={"x-api-key": server.key, "anthropic-beta": f"files-api-2025-04-14, {BETA}"},
    )
    assert response.status_code == 200, response.text
    assert "data" in response.json()


def test_success_responses_carry_request_id(client: anthropic.Anthropic) -> None:
    raw = client.beta.agents.with_raw_response.list(limit=1)
    assert raw.headers.get("request-id")
    assert raw.request_id == raw.headers.get("request-id")
    raw.parse()


def test_unknown_route_is_404_envelope(server) -> None:
    response = httpx2.get(
        f"{server.url}/v1/nothing-here",
        headers={"authorization": f"Bearer {server.key}", "anthropic-beta": BETA},
    )
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


def test_503_insufficient_storage_below_the_disk_reserve(tmp_path) -> None:
    """Goal: below the data directory's disk reserve, new work answers 503,
    which the SDK raises as ServiceUnavailableError with error_code
    `insufficient_storage` and does not retry (x-should-retry: false), while
    reads still answer. Method: a server of its own whose reserve (1 TiB,
    `--disk-reserve-mib` at its largest) is above the disk's free space."""
    import os
    import secrets

    from runner_conftest_helpers import DEFAULT_LOGBOOK_BIN, SERVING_RE, _binary, _spawn

    reserve_mib = 1 << 20
    disk = os.statvfs(tmp_path)
    assert disk.f_bavail * disk.f_frsize < reserve_mib << 20, "this test needs a disk with under 1 TiB free"
    key = f"sk-logbook-{secrets.token_hex(16)}"
    env = {name: value for name, value in os.environ.items() if not name.startswith("LOGBOOK_")}
    env["LOGBOOK_BOOTSTRAP_KEY"] = key
    binary = _binary("LOGBOOK_BIN", DEFAULT_LOGBOOK_BIN, "cargo build -p logbook-server --bin logbook")
    cmd = [str(binary), "serve", "--listen", "127.0.0.1:0", "--data", str(tmp_path / "data"), "--no-runner",
           "--disk-reserve-mib", str(reserve_mib)]
    proc = _spawn("logbook (disk reserve)", cmd, env, SERVING_RE, "stderr")
    try:
        requests: list = []
        http = httpx2.Client(event_hooks={"request": [requests.append]})
        client = anthropic.Anthropic(api_key=key, base_url=proc.url, max_retries=2, http_client=http,
                                     _strict_response_validation=True)
        with pytest.raises(anthropic.ServiceUnavailableError) as info:
            client.beta.agents.create(name=unique("agent"), model=MODEL)
        check_envelope(info.value, 503, "api_error")
        assert info.value.error_code == "insufficient_storage"
        assert info.value.response.headers.get("x-should-retry") == "false"
        assert len(requests) == 1, f"the SDK retried: {len(requests)} requests"
        assert list(client.beta.agents.list()) == []
        assert "under the" in proc.tail(), "the server warns at start-up"
    finally:
        proc.stop()
