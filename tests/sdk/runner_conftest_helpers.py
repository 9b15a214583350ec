"""Fixtures and helpers for the runner end-to-end tests (test_runner.py).

These tests need what the conformance suite deliberately does not start: a
`logbook serve` WITH its runner, pointed at the scripted fake Messages API
(`target/debug/fake-model`, built by `scripts/sdk-tests.sh`). Both processes
are started once per test session and shared by the runner tests, which
therefore run one at a time: each test sets the fake's script before sending
events and resets it afterwards, and every session a test creates is settled
(interrupted if still busy) and archived at teardown, so that no leftover turn
consumes the next test's script.

`test_runner.py` imports the fixtures from here by name (pytest finds fixtures
in a test module's namespace).

Environment:
  LOGBOOK_BIN      the server binary (default: <repo>/target/debug/logbook)
  FAKE_MODEL_BIN   the fake's binary (default: <repo>/target/debug/fake-model)
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional

import anthropic
import pytest

from helpers import MODEL, StreamReader, unique

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_LOGBOOK_BIN = REPO_ROOT / "target" / "debug" / "logbook"
DEFAULT_FAKE_BIN = REPO_ROOT / "target" / "debug" / "fake-model"
STARTUP_DEADLINE_S = 30.0
SHUTDOWN_DEADLINE_S = 10.0
CLIENT_TIMEOUT_S = 60.0
# Deadline of every wait for the runner (turns take milliseconds against the fake).
TURN_DEADLINE_S = 20.0
SERVING_RE = re.compile(r"logbook: serving on (http://127\.0\.0\.1:\d+) with data in ")
FAKE_RE = re.compile(r"fake-model listening on (http://127\.0\.0\.1:\d+)")


# --------------------------------------------------------------------------- processes


@dataclass
class Process:
    """A child process whose output lines are collected by a thread (so pipes never fill)."""

    name: str
    url: str
    process: subprocess.Popen
    lines: List[str] = field(default_factory=list)

    def tail(self, since: int = 0, last: int = 150) -> str:
        return "".join(self.lines[since:][-last:]) or "(nothing)\n"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=SHUTDOWN_DEADLINE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=SHUTDOWN_DEADLINE_S)


def _binary(env_name: str, default: Path, build_hint: str) -> Path:
    path = Path(os.environ.get(env_name, str(default)))
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing or not executable: run `{build_hint}` (or set {env_name})", pytrace=False)
    return path


def _spawn(name: str, cmd: List[str], env: dict, ready: "re.Pattern[str]", stream: str) -> Process:
    """Starts `cmd` and waits (with a deadline) for the line matching `ready` on `stream`."""
    kwargs: dict = dict(env=env, stdin=subprocess.DEVNULL)
    if stream == "stdout":
        kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    else:
        kwargs.update(stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    process = subprocess.Popen(cmd, **kwargs)
    pipe = process.stdout if stream == "stdout" else process.stderr
    lines: List[str] = []
    found = threading.Event()
    result: dict = {}

    def drain() -> None:
        for raw in iter(pipe.readline, b""):
            line = raw.decode("utf-8", "replace")
            lines.append(line)
            if not found.is_set():
                m = ready.search(line)
                if m:
                    result["url"] = m.group(1)
                    found.set()
        found.set()

    threading.Thread(target=drain, daemon=True, name=f"drain-{name}").start()
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while "url" not in result and process.poll() is None and time.monotonic() < deadline:
        found.wait(timeout=0.2)
    if "url" not in result:
        process.kill()
        process.wait(timeout=SHUTDOWN_DEADLINE_S)
        pytest.fail(
            f"{name} did not report its address (exit code {process.returncode}); command: {' '.join(cmd)}\n"
            f"--- output ---\n{''.join(lines)}",
            pytrace=False,
        )
    return Process(name=name, url=result["url"], process=process, lines=lines)


class FakeModel:
    """The `fake-model` process and its control endpoints."""

    def __init__(self, proc: Process) -> None:
        self.proc = proc
        self.url = proc.url

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        if data is not None:
            req.add_header("content-type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def set_script(self, steps: List[dict]) -> None:
        answer = self._call("POST", "/_fake/script", steps)
        assert answer == {"steps": len(steps)}, answer

    def requests(self) -> List[dict]:
        """Every `/v1/messages` request so far: `{method, path, headers, body}`, oldest first."""
        return self._call("GET", "/_fake/requests")

    def reset(self) -> None:
        """Forgets the script and the recorded requests."""
        req = urllib.request.Request(f"{self.url}/_fake/reset", data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 204, resp.status


@dataclass
class RunnerServer:
    """A `logbook serve` with the runner, its key, and the fake it calls."""

    proc: Process
    key: str
    fake: FakeModel
    # The server's data directory (sessions' directories are under sandboxes/).
    data_dir: Optional[Path] = None

    @property
    def url(self) -> str:
        return self.proc.url


@pytest.fixture(scope="session")
def fake_model() -> Iterator[FakeModel]:
    binary = _binary("FAKE_MODEL_BIN", DEFAULT_FAKE_BIN, "cargo build -p logbook-tests --bin fake-model")
    proc = _spawn("fake-model", [str(binary), "--port", "0"], dict(os.environ), FAKE_RE, "stdout")
    try:
        yield FakeModel(proc)
    finally:
        proc.stop()


def _start_runner_server(
    fake_model: FakeModel, tmp_path_factory: pytest.TempPathFactory, name: str, tools: Optional[str]
) -> RunnerServer:
    """`logbook serve` against the fake model; `tools="echo"` selects the echo
    tools, `None` the real sandboxed tools (needs root and bubblewrap)."""
    binary = _binary("LOGBOOK_BIN", DEFAULT_LOGBOOK_BIN, "cargo build -p logbook-server --bin logbook")
    # Traversable by the sandbox user (pytest's own temporary root is not), so
    # the sessions' directories are DATA/sandboxes, where tests look.
    data_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir="/tmp"))
    os.chmod(data_dir, 0o711)
    key = f"sk-logbook-{secrets.token_hex(16)}"
    env = dict(os.environ)
    for var in ("LOGBOOK_LISTEN", "LOGBOOK_DATA", "LOGBOOK_RATE_CREATE", "LOGBOOK_RATE_READ", "LOGBOOK_LOG", "LOGBOOK_TOOLS"):
        env.pop(var, None)
    env.update(
        LOGBOOK_BOOTSTRAP_KEY=key,
        ANTHROPIC_BASE_URL=fake_model.url,
        ANTHROPIC_API_KEY="test",
        LOGBOOK_RETRY_BASE_MS="10",
        # Outcome tests see `span.outcome_evaluation_ongoing` without waiting 5 s.
        LOGBOOK_OUTCOME_HEARTBEAT_MS="50",
    )
    if tools is not None:
        env["LOGBOOK_TOOLS"] = tools
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
    ]
    proc = _spawn(f"logbook ({name})", cmd, env, SERVING_RE, "stderr")
    return RunnerServer(proc=proc, key=key, fake=fake_model, data_dir=Path(data_dir))


@pytest.fixture(scope="session")
def runner_server(fake_model: FakeModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunnerServer]:
    server = _start_runner_server(fake_model, tmp_path_factory, "logbook-runner-data", "echo")
    try:
        yield server
    finally:
        server.proc.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def sandbox_server(fake_model: FakeModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunnerServer]:
    """A runner server whose built-in tools run for real, in sandboxes."""
    if os.geteuid() != 0:
        pytest.fail("the sandboxed-tools tests need root (the sandbox runs tools as an unprivileged uid)", pytrace=False)
    server = _start_runner_server(fake_model, tmp_path_factory, "logbook-sandbox-data", None)
    try:
        yield server
    finally:
        server.proc.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)


@pytest.fixture
def sandbox_harness(sandbox_server: RunnerServer) -> Iterator[Harness]:
    """A harness on the sandboxed server, with its own strict client and environment."""
    client = anthropic.Anthropic(
        api_key=sandbox_server.key,
        base_url=sandbox_server.url,
        max_retries=0,
        _strict_response_validation=True,
        timeout=CLIENT_TIMEOUT_S,
    )
    env = client.beta.environments.create(name=unique("sandbox-env"))
    sandbox_server.fake.reset()
    h = Harness(client, sandbox_server, env.id)
    try:
        yield h
    finally:
        h.settle()
        sandbox_server.fake.reset()
        print(f"--- sandbox server log during the test ---\n{sandbox_server.proc.tail(h.log_mark)}")


@pytest.fixture(scope="session")
def make_runner_client(runner_server: RunnerServer) -> Callable[..., Any]:
    """Strict SDK clients for the runner server: `make_runner_client()` or `make_runner_client(asynchronous=True)`."""

    def factory(asynchronous: bool = False, **overrides: Any) -> Any:
        kwargs: dict = dict(
            api_key=runner_server.key,
            base_url=runner_server.url,
            max_retries=0,
            _strict_response_validation=True,
            timeout=CLIENT_TIMEOUT_S,
        )
        kwargs.update(overrides)
        return anthropic.AsyncAnthropic(**kwargs) if asynchronous else anthropic.Anthropic(**kwargs)

    return factory


@pytest.fixture(scope="session")
def runner_client(make_runner_client: Callable[..., Any]) -> anthropic.Anthropic:
    return make_runner_client()


@pytest.fixture(scope="session")
def runner_env(runner_client: anthropic.Anthropic) -> Any:
    return runner_client.beta.environments.create(name=unique("runner-env"))


# --------------------------------------------------------------------------- per test


class Harness:
    """What one runner test uses: the fake (script set per test), sessions, streams, waits."""

    def __init__(self, client: anthropic.Anthropic, server: RunnerServer, env_id: str) -> None:
        self.client = client
        self.server = server
        self.fake = server.fake
        self.env_id = env_id
        self.sessions: List[str] = []
        self.readers: List[StreamReader] = []
        self.log_mark = len(server.proc.lines)

    # sessions ----------------------------------------------------------------

    def session(self, tools: List[dict], **agent_kwargs: Any) -> Any:
        agent_kwargs.setdefault("name", unique("runner-agent"))
        agent_kwargs.setdefault("model", MODEL)
        agent = self.client.beta.agents.create(tools=tools, **agent_kwargs)  # type: ignore[arg-type]
        session = self.client.beta.sessions.create(agent=agent.id, environment_id=self.env_id)
        self.sessions.append(session.id)
        return session

    def send(self, session_id: str, *events: dict) -> List[Any]:
        sent = self.client.beta.sessions.events.send(session_id, events=list(events))  # type: ignore[arg-type]
        assert sent.data is not None and len(sent.data) == len(events), sent
        return list(sent.data)

    def listed(self, session_id: str) -> List[Any]:
        return list(self.client.beta.sessions.events.list(session_id, limit=1000))

    # streams -----------------------------------------------------------------

    def open_stream(self, session_id: str, **kwargs: Any) -> StreamReader:
        """Opens `events.stream` (the server has subscribed once this returns) and reads it on a thread."""
        reader = StreamReader(self.client.beta.sessions.events.stream(session_id, **kwargs)).start()
        self.readers.append(reader)
        return reader

    def wait(self, reader: StreamReader, pred: Callable[[List[Any]], bool], what: str) -> List[Any]:
        """Waits (deadline TURN_DEADLINE_S) until `pred(events)` holds on the stream; fails with context."""
        if not reader.wait_for(pred, timeout=TURN_DEADLINE_S):
            pytest.fail(
                f"timed out after {TURN_DEADLINE_S}s waiting for {what}\n"
                f"stream error: {reader.error!r}\n"
                f"streamed: {describe(reader.events)}\n"
                f"fake requests: {len(self.fake.requests())}\n"
                f"--- runner server log since the test began ---\n{self.server.proc.tail(self.log_mark)}",
                pytrace=False,
            )
        assert reader.error is None, f"the stream failed: {reader.error!r}"
        return list(reader.events)

    def wait_idles(self, reader: StreamReader, n: int) -> List[Any]:
        """Waits until the stream delivered `n` `session.status_idle` events; returns what it delivered."""
        return self.wait(reader, lambda evs: count(evs, "session.status_idle") >= n, f"idle #{n}")

    def requests(self) -> List[dict]:
        """The fake's recorded requests, each checked to be a conversation the Messages API accepts."""
        requests = self.fake.requests()
        for request in requests:
            assert_valid_conversation(request)
        return requests

    def wait_requests(self, pred: Callable[[List[dict]], bool], what: str) -> List[dict]:
        deadline = time.monotonic() + TURN_DEADLINE_S
        while True:
            requests = self.fake.requests()
            if pred(requests):
                return requests
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}; fake requests: {json.dumps(requests)[:4000]}", pytrace=False)
            time.sleep(0.02)

    def wait_status(self, session_id: str, status: str) -> Any:
        """Waits until the session object reports `status` (it may lag the log; see
        test_session_object_agrees_with_the_idle_event for the immediate check)."""
        deadline = time.monotonic() + TURN_DEADLINE_S
        while True:
            session = self.client.beta.sessions.retrieve(session_id)
            if session.status == status:
                return session
            if time.monotonic() > deadline:
                pytest.fail(f"session {session_id} is {session.status!r}, not {status!r}, after {TURN_DEADLINE_S}s")
            time.sleep(0.02)

    # teardown ----------------------------------------------------------------

    def settle(self) -> None:
        """Interrupts sessions still busy, waits for them to idle, archives them (which ends their streams)."""
        for session_id in self.sessions:
            try:
                status = self.client.beta.sessions.retrieve(session_id).status
                if status in ("running", "rescheduling"):
                    self.client.beta.sessions.events.send(session_id, events=[{"type": "user.interrupt"}])
                    deadline = time.monotonic() + TURN_DEADLINE_S
                    while self.client.beta.sessions.retrieve(session_id).status in ("running", "rescheduling"):
                        if time.monotonic() > deadline:
                            break
                        time.sleep(0.05)
                self.client.beta.sessions.archive(session_id)
            except anthropic.APIError:
                pass
        for reader in self.readers:
            reader.wait_ended(timeout=2.0)
            reader.close()


@pytest.fixture
def harness(runner_client: anthropic.Anthropic, runner_server: RunnerServer, runner_env: Any) -> Iterator[Harness]:
    runner_server.fake.reset()
    h = Harness(runner_client, runner_server, runner_env.id)
    try:
        yield h
    finally:
        h.settle()
        runner_server.fake.reset()
        # Shown by pytest only when the test failed.
        print(f"--- runner server log during the test ---\n{runner_server.proc.tail(h.log_mark)}")


# --------------------------------------------------------------------------- small helpers


def types(events: List[Any]) -> List[str]:
    return [e.type for e in events]


def count(events: List[Any], type_: str) -> int:
    return sum(1 for e in events if e.type == type_)


def of_type(events: List[Any], type_: str) -> List[Any]:
    return [e for e in events if e.type == type_]


def first(events: List[Any], type_: str) -> Any:
    found = of_type(events, type_)
    assert found, f"no {type_} in {describe(events)}"
    return found[0]


def describe(events: List[Any]) -> str:
    out = []
    for e in events:
        extra = ""
        if e.type == "session.status_idle":
            extra = f"({e.stop_reason.type})"
        elif e.type == "session.error":
            extra = f"({e.error.type}/{e.error.retry_status.type})"
        elif e.type in ("event_start",):
            extra = f"({e.event.type} {e.event.id})"
        elif e.type == "event_delta":
            extra = f"({e.event_id} {e.delta.content.text!r})"
        out.append(f"{e.type}{extra}")
    return "[" + ", ".join(out) + "]"


def text_of(blocks: Optional[List[Any]]) -> str:
    return "".join(getattr(b, "text", "") or "" for b in (blocks or []))


def user_texts(request: dict) -> List[str]:
    """All text the model was given in `user` turns of a recorded request, in order."""
    texts = []
    for message in request["body"]["messages"]:
        if message["role"] != "user":
            continue
        content = message["content"]
        if isinstance(content, str):
            texts.append(content)
            continue
        for block in content:
            if block.get("type") == "text":
                texts.append(block["text"])
    return texts


def toolset(policy: str = "always_allow") -> dict:
    return {"type": "agent_toolset_20260401", "default_config": {"permission_policy": {"type": policy}}}


WEATHER_TOOL = {
    "type": "custom",
    "name": "get_weather",
    "description": "Get the weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def text_response(text: str, **extra: Any) -> dict:
    return {"content": [{"type": "text", "text": text}], "stop_reason": "end_turn", **extra}


def tool_response(*calls: tuple, text: Optional[str] = None) -> dict:
    """A response with `tool_use` blocks: `calls` are `(provider id, name, input)`."""
    content: List[dict] = [{"type": "text", "text": text}] if text else []
    content += [{"type": "tool_use", "id": tid, "name": name, "input": inp} for tid, name, inp in calls]
    return {"content": content, "stop_reason": "tool_use"}


def assert_valid_conversation(request: dict) -> None:
    """The Messages API's pairing rules for a request's `messages`.

    The conversation starts with a user turn; every `tool_use` of an assistant
    turn is answered by a `tool_result` in the very next (user) turn, and those
    results come first in it; every `tool_result` answers a `tool_use` of the
    assistant turn right before it. The fake does not check these; the real
    API answers 400 when they do not hold.
    """
    messages = request["body"]["messages"]
    assert messages and messages[0]["role"] == "user", messages

    def blocks(message: dict) -> List[dict]:
        content = message["content"]
        return [{"type": "text", "text": content}] if isinstance(content, str) else content

    for i, message in enumerate(messages):
        previous_uses = (
            [b["id"] for b in blocks(messages[i - 1]) if b.get("type") == "tool_use"]
            if i > 0 and messages[i - 1]["role"] == "assistant"
            else []
        )
        content = blocks(message)
        results = [b["tool_use_id"] for b in content if b.get("type") == "tool_result"]
        if message["role"] == "assistant":
            assert not results, f"tool_result in an assistant turn: {message}"
            uses = [b["id"] for b in content if b.get("type") == "tool_use"]
            if uses:
                assert i + 1 < len(messages), f"tool_use {uses} is never answered: {messages}"
                following = messages[i + 1]
                assert following["role"] == "user", f"tool_use {uses} is not followed by a user turn: {messages}"
            continue
        assert sorted(results) == sorted(previous_uses), (
            f"message {i}: tool_results {results} do not answer the previous tool_uses {previous_uses}: {messages}"
        )
        leading = [b.get("type") for b in content[: len(results)]]
        assert leading == ["tool_result"] * len(results), f"message {i}: tool_result blocks must come first: {content}"
