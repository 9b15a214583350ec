"""The official SDK's environment worker as a process: what the worker tests start.

Runs `EnvironmentWorker(...).run()` from `anthropic==2.14.0`, unchanged,
against `--base-url` with the environment key from `LOGBOOK_TEST_ENVIRONMENT_KEY`
(an environment variable, not an argument, so it is not in process listings).
The SDK's log lines go to stderr; the tests read them (for example
"heartbeat signals shutdown state=stopping"). The process runs until it is
terminated (SIGTERM exits cleanly, SIGKILL simulates a crashed worker).

Usage: python worker_main.py --base-url URL --environment-id ENV --workdir DIR
       [--max-idle SECONDS] [--worker-id ID] [--strict]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

import anthropic
from anthropic.lib.environments import EnvironmentWorker


async def serve(args: argparse.Namespace, key: str) -> None:
    client = anthropic.AsyncAnthropic(
        auth_token=key,
        base_url=args.base_url,
        _strict_response_validation=args.strict,
    )
    worker = EnvironmentWorker(
        client,
        environment_id=args.environment_id,
        environment_key=key,
        workdir=args.workdir,
        max_idle=args.max_idle,
        # Logbook has no memory stores; the worker then never calls their endpoints.
        memory_sync_interval=None,
        worker_id=args.worker_id,
    )
    task = asyncio.ensure_future(worker.run())
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    print(f"worker_main: polling environment {args.environment_id}", file=sys.stderr, flush=True)
    try:
        await task
    except asyncio.CancelledError:
        print("worker_main: stopped", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--environment-id", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--max-idle", type=float, default=60.0)
    parser.add_argument("--worker-id", default=None)
    parser.add_argument("--strict", action="store_true", help="strict response validation")
    args = parser.parse_args()
    key = os.environ.get("LOGBOOK_TEST_ENVIRONMENT_KEY")
    if not key:
        sys.exit("worker_main: set LOGBOOK_TEST_ENVIRONMENT_KEY to the environment key")
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    # The HTTP client's per-request lines drown the worker's own.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    asyncio.run(serve(args, key))


if __name__ == "__main__":
    main()
