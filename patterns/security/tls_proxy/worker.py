"""A worker process beyond the first (see workers.py): no admin server of its own; its
counters go to the shared memory block the first process reads."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from types import FrameType

from patterns.common.jsonlog import setup_logging

from .config import load_config
from .counters import SharedCounters
from .server import run_worker
from .workers import ENV_COUNTERS_FD, ENV_INDEX, ENV_WORKERS


def main() -> None:
    index = int(os.environ[ENV_INDEX])
    setup_logging(f"tls-proxy-worker-{index}", os.environ.get("LOG_LEVEL", "info"))
    config = load_config(os.environ)
    counters = SharedCounters(int(os.environ[ENV_WORKERS]), fd=int(os.environ[ENV_COUNTERS_FD]))
    parent = os.getppid()
    wakers: list[Callable[[], None]] = []

    def handle(_signum: int, _frame: FrameType | None) -> None:
        for wake in wakers:
            wake()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)

    def orphaned() -> None:
        if os.getppid() != parent:  # the first process is gone: so is this worker's job
            handle(signal.SIGTERM, None)

    run_worker(config, counters, index, wakers.append, tick=orphaned)
    sys.exit(0)


if __name__ == "__main__":
    main()
