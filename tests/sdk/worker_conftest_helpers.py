"""Fixtures and helpers for the self-hosted worker tests (test_worker.py).

What they start: the scripted fake Messages API (shared with the runner tests,
from runner_conftest_helpers), a `logbook serve` WITH its runner pointed at it,
and, per test, the official SDK's environment worker (`anthropic==2.14.0`,
`EnvironmentWorker`) as a separate process (`worker_main.py`) with its own
working directory.

Environment keys are minted the way an operator mints them: `logbook keys
create --environment ENV_ID`, an offline command. So the server fixture
starts the server, creates one self-hosted environment per test (and a
session queued before the restart), stops the server, mints the keys, and
starts it again on the same data directory. The server runs with
`LOGBOOK_TOOLS=echo`: if Logbook ever executed a self-hosted session's
built-in call itself, its result would be the echo of the input, as an
`agent.tool_result`, which the tests would see. Leases last 4 s
(`LOGBOOK_WORK_LEASE_TTL_SECS`), so the worker heartbeats every 2 s and a dead
worker's lease lapses quickly. When the tests are done, `logbook rerun` checks
every recorded runner decision of these sessions.

`test_worker.py` imports the fixtures from here by name.
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
from typing import Any, Callable, Dict, Iterator, List, Optional

import anthropic
import pytest

from helpers import MODEL, unique
from runner_conftest_helpers import (
    DEFAULT_LOGBOOK_BIN,
    SERVING_RE,
    SHUTDOWN_DEADLINE_S,
    FakeModel,
    Process,
    _binary,
    _spawn,
)

HERE = Path(__file__).resolve().parent
WORKER_MAIN = HERE / "worker_main.py"
# Seconds a lease lasts: the worker beats every half of it.
LEASE_TTL_S = 4
# Deadline of every wait on the worker or the runner (both take milliseconds
# against the fake; a lapse takes LEASE_TTL_S plus the worker's 1-3 s poll jitter).
WAIT_S = 30.0
CLIENT_TIMEOUT_S = 60.0
# One self-hosted environment (and key) per test that runs a worker.
ENVIRONMENTS = [
    "tools",
    "restart",
    "policies",
    "stops",
    "restop",
    "crash",
    "healthcheck",
    "auth",
    "auth-other",
    "lapse",
    "churn",
    "interrupted",
    "cutoff",
    "held",
]


@dataclass
class WorkerServer:
    """A `logbook serve` with its runner, its API key, and one environment key per test environment."""

    proc: Process
    key: str
    fake: FakeModel
    data: Path
    envs: Dict[str, str]
    env_keys: Dict[str, str]
    # The session created on the "restart" environment before the restart.
    queued_before_restart: str = ""

    @property
    def url(self) -> str:
        return self.proc.url


def _serve(binary: Path, data: Path, key: str, fake_url: str) -> Process:
    env = dict(os.environ)
    for name in ("LOGBOOK_LISTEN", "LOGBOOK_DATA", "LOGBOOK_RATE_CREATE", "LOGBOOK_RATE_READ", "LOGBOOK_LOG"):
        env.pop(name, None)
    env.update(
        LOGBOOK_BOOTSTRAP_KEY=key,
        ANTHROPIC_BASE_URL=fake_url,
        ANTHROPIC_API_KEY="test",
        LOGBOOK_TOOLS="echo",
        LOGBOOK_RETRY_BASE_MS="10",
        LOGBOOK_WORK_LEASE_TTL_SECS=str(LEASE_TTL_S),
    )
    cmd = [str(binary), "serve", "--listen", "127.0.0.1:0", "--data", str(data), "--rate-create", "0", "--rate-read", "0", "--rate-work", "0"]
    return _spawn("logbook (worker tests)", cmd, env, SERVING_RE, "stderr")


def strict_client(url: str, **kwargs: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=url, max_retries=0, _strict_response_validation=True, timeout=CLIENT_TIMEOUT_S, **kwargs
    )


@pytest.fixture(scope="session")
def worker_server(fake_model: FakeModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerServer]:
    binary = _binary("LOGBOOK_BIN", DEFAULT_LOGBOOK_BIN, "cargo build -p logbook-server --bin logbook")
    data = tmp_path_factory.mktemp("logbook-worker-data")
    key = f"sk-logbook-{secrets.token_hex(16)}"
    proc = _serve(binary, data, key, fake_model.url)
    envs: Dict[str, str] = {}
    try:
        client = strict_client(proc.url, api_key=key)
        for name in ENVIRONMENTS:
            envs[name] = client.beta.environments.create(name=name, config={"type": "self_hosted"}).id
        agent = client.beta.agents.create(
            name=unique("before-restart"), model=MODEL, tools=[{"type": "agent_toolset_20260401"}]
        )
        queued = client.beta.sessions.create(agent=agent.id, environment_id=envs["restart"]).id
    finally:
        proc.stop()
    env_keys: Dict[str, str] = {}
    for name, env_id in envs.items():
        out = subprocess.run(
            [str(binary), "keys", "create", "--data", str(data), "--environment", env_id],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, f"logbook keys create --environment failed: {out.stderr}"
        env_keys[name] = out.stdout.strip()
        assert env_keys[name].startswith("sk-logbook-env-"), out.stdout
    proc = _serve(binary, data, key, fake_model.url)
    try:
        yield WorkerServer(proc, key, fake_model, data, envs, env_keys, queued_before_restart=queued)
    finally:
        proc.stop()
    # Every decision the runner recorded in these self-hosted sessions follows
    # from the log through the state machine, with each session's tool host.
    rerun = subprocess.run([str(binary), "rerun", "--data", str(data)], capture_output=True, text=True, timeout=120)
    if rerun.returncode != 0:
        pytest.fail(f"logbook rerun found divergent decisions:\n{rerun.stderr}", pytrace=False)


@dataclass
class Worker:
    """One `worker_main.py` process (the SDK's EnvironmentWorker) and its log."""

    process: subprocess.Popen
    workdir: Path
    lines: List[str] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def log(self) -> str:
        with self.cond:
            return "".join(self.lines)

    def wait_log(self, pattern: str, after: int = 0, timeout: float = WAIT_S) -> int:
        """Waits until a log line after line `after` matches `pattern`; returns that line's index."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for idx in range(after, len(self.lines)):
                    if rx.search(self.lines[idx]):
                        return idx
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    pytest.fail(f"the worker never logged {pattern!r}; its log:\n{''.join(self.lines)}", pytrace=False)
                self.cond.wait(timeout=min(left, 0.5))

    def count(self, pattern: str) -> int:
        rx = re.compile(pattern)
        with self.cond:
            return sum(1 for line in self.lines if rx.search(line))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=SHUTDOWN_DEADLINE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=SHUTDOWN_DEADLINE_S)
        self._kill_group()

    def crash(self) -> None:
        """SIGKILL to the worker and everything it started (its bash): the machine died
        holding the lease, mid-tool."""
        self._kill_group()
        self.process.wait(timeout=SHUTDOWN_DEADLINE_S)

    def _kill_group(self) -> None:
        # The worker runs in its own process group (session); nothing it started outlives the test.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class WorkerHarness:
    """What one worker test uses: its environment, the server, clients, workers, and waits."""

    def __init__(self, server: WorkerServer, env_name: str, tmp_path: Path) -> None:
        self.server = server
        self.fake = server.fake
        self.env_id = server.envs[env_name]
        self.env_key = server.env_keys[env_name]
        self.client = strict_client(server.url, api_key=server.key)
        # What a worker holds: the environment key, as a Bearer token.
        self.env_client = strict_client(server.url, auth_token=self.env_key)
        self.tmp_path = tmp_path
        self.workers: List[Worker] = []
        self.log_mark = len(server.proc.lines)

    def start_worker(self, workdir: Optional[Path] = None, max_idle: float = 1.0, strict: bool = True) -> Worker:
        workdir = workdir or self.tmp_path / f"workdir-{len(self.workers)}"
        workdir.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            str(WORKER_MAIN),
            "--base-url",
            self.server.url,
            "--environment-id",
            self.env_id,
            "--workdir",
            str(workdir),
            "--max-idle",
            str(max_idle),
            "--worker-id",
            f"test-worker-{len(self.workers)}",
        ]
        if strict:
            cmd.append("--strict")
        env = dict(os.environ, LOGBOOK_TEST_ENVIRONMENT_KEY=self.env_key, PYTHONUNBUFFERED="1")
        process = subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        worker = Worker(process=process, workdir=workdir)

        def drain() -> None:
            assert process.stderr is not None
            for raw in iter(process.stderr.readline, b""):
                with worker.cond:
                    worker.lines.append(raw.decode("utf-8", "replace"))
                    worker.cond.notify_all()
            with worker.cond:
                worker.cond.notify_all()

        threading.Thread(target=drain, daemon=True, name="drain-worker").start()
        worker.wait_log(r"poller starting")
        self.workers.append(worker)
        return worker

    def agent(self, tools: Optional[List[dict]] = None) -> Any:
        tools = tools if tools is not None else [{"type": "agent_toolset_20260401"}]
        return self.client.beta.agents.create(name=unique("worker-agent"), model=MODEL, tools=tools)  # type: ignore[arg-type]

    def session(self, tools: Optional[List[dict]] = None) -> Any:
        return self.client.beta.sessions.create(agent=self.agent(tools).id, environment_id=self.env_id)

    def listed(self, session_id: str) -> List[Any]:
        return list(self.client.beta.sessions.events.list(session_id, limit=1000))

    def wait_events(self, session_id: str, pred: Callable[[List[Any]], bool], what: str) -> List[Any]:
        deadline = time.monotonic() + WAIT_S
        while True:
            events = self.listed(session_id)
            if pred(events):
                return events
            if time.monotonic() > deadline:
                pytest.fail(
                    f"timed out after {WAIT_S}s waiting for {what}\nevents: {describe(events)}\n"
                    f"--- workers ---\n{self.worker_logs()}\n--- server ---\n{self.server.proc.tail(self.log_mark)}",
                    pytrace=False,
                )
            time.sleep(0.05)

    def wait_end_turn(self, session_id: str, n: int = 1) -> List[Any]:
        def ended(events: List[Any]) -> bool:
            idles = [e for e in events if e.type == "session.status_idle" and e.stop_reason.type == "end_turn"]
            return len(idles) >= n and events[-1].type == "session.status_idle"

        return self.wait_events(session_id, ended, f"end_turn idle #{n}")

    def work_items(self, session_id: str) -> List[Any]:
        """The session's work items, newest first (listed with the environment key)."""
        return [w for w in self.env_client.beta.environments.work.list(self.env_id) if w.data.id == session_id]

    def wait_work(self, session_id: str, pred: Callable[[Any], bool], what: str) -> Any:
        """Waits until the session's newest work item satisfies `pred`."""
        deadline = time.monotonic() + WAIT_S
        while True:
            items = self.work_items(session_id)
            if items and pred(items[0]):
                return items[0]
            if time.monotonic() > deadline:
                pytest.fail(
                    f"timed out after {WAIT_S}s waiting for the work item to be {what}: {items}\n"
                    f"--- workers ---\n{self.worker_logs()}\n--- server ---\n{self.server.proc.tail(self.log_mark)}",
                    pytrace=False,
                )
            time.sleep(0.05)

    def wait_item(self, work_id: str, pred: Callable[[Any], bool], what: str) -> Any:
        """Waits until the work item `work_id` satisfies `pred` (retrieved with the API key,
        without strict validation: the SDK's type models only session items, not healthchecks)."""
        deadline = time.monotonic() + WAIT_S
        loose = anthropic.Anthropic(base_url=self.server.url, api_key=self.server.key, max_retries=0)
        while True:
            item = loose.beta.environments.work.retrieve(work_id, environment_id=self.env_id)
            if pred(item):
                return item
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {work_id} to be {what}: {item}\n{self.worker_logs()}", pytrace=False)
            time.sleep(0.05)

    def wait_path(self, path: Path, what: str) -> None:
        """Waits until `path` exists (a tool's side effect)."""
        deadline = time.monotonic() + WAIT_S
        while not path.exists():
            if time.monotonic() > deadline:
                pytest.fail(f"{path} never appeared: {what}\n{self.worker_logs()}", pytrace=False)
            time.sleep(0.02)

    def worker_logs(self) -> str:
        return "\n".join(f"[worker {i}]\n{w.log()}" for i, w in enumerate(self.workers)) or "(no worker)"

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.client.close()
        self.env_client.close()


def describe(events: List[Any]) -> str:
    out = []
    for e in events:
        extra = ""
        if e.type == "session.status_idle":
            extra = f"({e.stop_reason.type})"
        elif e.type == "agent.tool_use":
            extra = f"({e.name})"
        elif e.type in ("user.tool_result", "agent.tool_result"):
            extra = f"({'error' if e.is_error else 'ok'})"
        out.append(f"{e.type}{extra}")
    return "[" + ", ".join(out) + "]"


def harness_for(env_name: str) -> Callable[..., Iterator[WorkerHarness]]:
    """A per-test fixture for the environment `env_name`."""

    @pytest.fixture
    def fixture(worker_server: WorkerServer, tmp_path: Path) -> Iterator[WorkerHarness]:
        worker_server.fake.reset()
        h = WorkerHarness(worker_server, env_name, tmp_path)
        try:
            yield h
        finally:
            h.close()
            worker_server.fake.reset()
            print(f"--- workers ---\n{h.worker_logs()}\n--- server ---\n{worker_server.proc.tail(h.log_mark)}")

    return fixture
