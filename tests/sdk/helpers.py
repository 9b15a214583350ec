"""Shared helpers for the SDK conformance suite (imported by conftest and tests)."""

from __future__ import annotations

import threading
import uuid
from typing import Any, Callable, List, Optional

MODEL = "claude-sonnet-4-6"
WAIT_S = 10.0


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def user_message(text: str) -> dict:
    return {"type": "user.message", "content": [{"type": "text", "text": text}]}


def system_message(text: str) -> dict:
    return {"type": "system.message", "content": [{"type": "text", "text": text}]}


class StreamReader:
    """Iterates an SDK `Stream` on a background thread.

    `wait_for(pred)` blocks (with a deadline) until `pred(events)` holds;
    `wait_ended()` until the iteration stopped (server closed the stream).
    """

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.events: List[Any] = []
        self.error: Optional[BaseException] = None
        self.ended = threading.Event()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._closing = False

    def start(self) -> "StreamReader":
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            for event in self.stream:
                with self._cond:
                    self.events.append(event)
                    self._cond.notify_all()
        except BaseException as err:  # noqa: BLE001 - reported to the test
            if not self._closing:
                self.error = err
        finally:
            self.ended.set()
            with self._cond:
                self._cond.notify_all()

    def wait_for(self, pred: Callable[[List[Any]], bool], timeout: float = WAIT_S) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: pred(list(self.events)) or self.ended.is_set(), timeout=timeout) and pred(
                list(self.events)
            )

    def wait_ended(self, timeout: float = WAIT_S) -> bool:
        return self.ended.wait(timeout=timeout)

    def close(self, timeout: float = 1.0) -> None:
        """Closes the response. A thread blocked reading the socket may not wake
        up from this; end the stream server-side first (archive the session)."""
        self._closing = True
        try:
            self.stream.close()
        except Exception:  # noqa: BLE001
            pass
        self._thread.join(timeout=timeout)

    def ids(self) -> List[str]:
        return [e.id for e in list(self.events) if getattr(e, "id", None)]
