"""Official-SDK conformance suite: fixtures.

One real `logbook serve` process per test session (built beforehand by
`scripts/sdk-tests.sh`; this file builds nothing). Every client the tests use is
`anthropic.Anthropic(..., max_retries=0, _strict_response_validation=True)`, so
a response missing a field the SDK declares required fails the test.

Environment:
  LOGBOOK_BIN   path of the server binary (default: <repo>/target/debug/logbook)
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, List

import anthropic
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import MODEL, unique  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO_ROOT / "target" / "debug" / "logbook"
STARTUP_DEADLINE_S = 30.0
SHUTDOWN_DEADLINE_S = 10.0
SERVING_RE = re.compile(r"logbook: serving on (http://127\.0\.0\.1:\d+) with data in ")
CLIENT_TIMEOUT_S = 60.0  # guards against a hung server; streams get pings every 15s


@dataclass
class Server:
    """A running `logbook serve` process."""

    url: str
    key: str
    process: subprocess.Popen
    stderr_lines: List[str] = field(default_factory=list)

    def stderr_text(self, last: int = 200) -> str:
        return "".join(self.stderr_lines[-last:])


_SERVER: Server | None = None  # for the terminal summary


def _drain(stream: Any, sink: List[str], found: threading.Event, result: dict) -> None:
    """Reads the server's stderr until EOF (so its pipe never fills)."""
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace")
        sink.append(line)
        if not found.is_set():
            m = SERVING_RE.search(line)
            if m:
                result["url"] = m.group(1)
                found.set()
    found.set()  # EOF: wake the waiter (it checks whether a URL was found)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    global _SERVER
    binary = Path(os.environ.get("LOGBOOK_BIN", str(DEFAULT_BIN)))
    if not binary.is_file() or not os.access(binary, os.X_OK):
        pytest.fail(
            f"logbook binary not found or not executable at {binary}; "
            "run `cargo build -p logbook-server --bin logbook` or set LOGBOOK_BIN",
            pytrace=False,
        )
    data_dir = tmp_path_factory.mktemp("logbook-data")
    key = f"sk-logbook-{secrets.token_hex(16)}"
    env = dict(os.environ)
    env["LOGBOOK_BOOTSTRAP_KEY"] = key
    # Make sure no ambient setting overrides the command line.
    for name in ("LOGBOOK_LISTEN", "LOGBOOK_DATA", "LOGBOOK_RATE_CREATE", "LOGBOOK_RATE_READ"):
        env.pop(name, None)
    cmd = [
        str(binary),
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data",
        str(data_dir),
        "--rate-create",
        "0",
        "--rate-read",
        "0",
        "--rate-work",
        "0",
        # These tests cover the API surface; the runner has its own end-to-end
        # tests against the fake model (tests/tests/runner.rs).
        "--no-runner",
    ]
    process = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lines: List[str] = []
    found = threading.Event()
    result: dict = {}
    drainer = threading.Thread(target=_drain, args=(process.stderr, lines, found, result), daemon=True)
    drainer.start()

    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while "url" not in result:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or process.poll() is not None:
            break
        found.wait(timeout=min(remaining, 0.5))
    if "url" not in result:
        process.kill()
        process.wait(timeout=SHUTDOWN_DEADLINE_S)
        drainer.join(timeout=2)
        exited = process.returncode if process.returncode is not None and process.returncode >= 0 else None
        reason = (
            f"exited with code {exited} before reporting its address"
            if exited is not None
            else f"did not report its address within {STARTUP_DEADLINE_S}s (killed)"
        )
        pytest.fail(
            f"logbook serve {reason}; command: {' '.join(cmd)}\n"
            f"--- server stderr ---\n{''.join(lines)}",
            pytrace=False,
        )

    srv = Server(url=result["url"], key=key, process=process, stderr_lines=lines)
    _SERVER = srv
    try:
        yield srv
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=SHUTDOWN_DEADLINE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=SHUTDOWN_DEADLINE_S)
        drainer.join(timeout=2)


ClientFactory = Callable[..., anthropic.Anthropic]


@pytest.fixture(scope="session")
def make_client(server: Server) -> ClientFactory:
    """Builds a strict SDK client for the server; keyword arguments override the defaults."""

    def factory(**overrides: Any) -> anthropic.Anthropic:
        kwargs: dict = dict(
            api_key=server.key,
            base_url=server.url,
            max_retries=0,
            _strict_response_validation=True,
            timeout=CLIENT_TIMEOUT_S,
        )
        kwargs.update(overrides)
        return anthropic.Anthropic(**kwargs)

    return factory


@pytest.fixture(scope="session")
def client(make_client: ClientFactory) -> anthropic.Anthropic:
    return make_client()


@pytest.fixture
def new_agent(client: anthropic.Anthropic) -> Callable[..., Any]:
    def make(**kwargs: Any) -> Any:
        kwargs.setdefault("name", unique("agent"))
        kwargs.setdefault("model", MODEL)
        return client.beta.agents.create(**kwargs)

    return make


@pytest.fixture
def new_env(client: anthropic.Anthropic) -> Callable[..., Any]:
    def make(**kwargs: Any) -> Any:
        kwargs.setdefault("name", unique("env"))
        return client.beta.environments.create(**kwargs)

    return make


@pytest.fixture(scope="session")
def shared_env(client: anthropic.Anthropic) -> Any:
    return client.beta.environments.create(name=unique("shared-env"))


@pytest.fixture(scope="session")
def shared_agent(client: anthropic.Anthropic) -> Any:
    return client.beta.agents.create(name=unique("shared-agent"), model=MODEL)


@pytest.fixture
def new_session(client: anthropic.Anthropic, shared_env: Any, shared_agent: Any) -> Callable[..., Any]:
    def make(**kwargs: Any) -> Any:
        kwargs.setdefault("agent", shared_agent.id)
        kwargs.setdefault("environment_id", shared_env.id)
        return client.beta.sessions.create(**kwargs)

    return make


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    """On failure, show what the server logged."""
    if _SERVER is None:
        return
    failed = terminalreporter.stats.get("failed", []) or terminalreporter.stats.get("error", [])
    if not failed and exitstatus == 0:
        return
    terminalreporter.write_sep("-", f"logbook server stderr (last 200 lines; {_SERVER.url})")
    terminalreporter.write(_SERVER.stderr_text(200) or "(empty)\n")
