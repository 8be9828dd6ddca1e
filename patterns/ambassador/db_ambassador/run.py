"""The db-ambassador's run(config, runtime): the server (server.py) on the event loop
AMBASSADOR_EVENT_LOOP names, until SIGTERM has drained it."""

from __future__ import annotations

import asyncio

from patterns.common.service import Runtime

from .config import Config
from .server import Ambassador


def run(config: Config, runtime: Runtime) -> None:
    ambassador = Ambassador(config, runtime)  # registers its checks, opens the probes
    if config.event_loop == "uvloop":
        import uvloop  # the `uvloop` extra: main_for names it if it is missing

        # libuv's loop roughly halves the relay's per-message cost.
        uvloop.run(ambassador.serve())
    else:
        asyncio.run(ambassador.serve())
