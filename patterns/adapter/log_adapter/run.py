"""The log-adapter's run(config, runtime): builds the adapter, its output and its admin
checks, then runs the loop until SIGTERM. Imports orjson (the `json` extra), so the entry
point names it by reference."""

from __future__ import annotations

import logging
import time

from patterns.adapter.log_adapter.adapter import Adapter, FollowerCollector
from patterns.adapter.log_adapter.config import Config
from patterns.adapter.log_adapter.metrics import AdapterMetrics
from patterns.adapter.log_adapter.output import ForwardOutput, NullOutput, Output, StdoutOutput
from patterns.common.admin import json_response
from patterns.common.forward.client import ForwardClient
from patterns.common.service import Runtime

log = logging.getLogger("patterns.adapter.log_adapter")

# The loop wakes at least every poll interval; this long without a turn means it is stuck.
STALL_SECONDS = 60.0


def make_output(config: Config, runtime: Runtime, while_waiting: object) -> Output:
    if config.output == "stdout":
        return StdoutOutput()
    if config.output == "forward":
        forward = config.forward
        client = ForwardClient(forward.host, forward.port, shared_key=forward.shared_key)
        return ForwardOutput(client, forward.tag, runtime.stopping, while_waiting)
    return NullOutput()


def run(config: Config, runtime: Runtime) -> None:
    metrics = AdapterMetrics([spec.name for spec in config.inputs], config.max_paths)
    runtime.registry.register(metrics)
    adapter: Adapter | None = None

    def while_waiting() -> None:
        # The loop is blocked on the collector: it is alive, and without inotify's watcher
        # thread files created and rotated away meanwhile must still be opened and held.
        if adapter is not None:
            adapter.heartbeat = time.monotonic()
            if not adapter.follower.uses_inotify:
                adapter.follower.poll()

    adapter = Adapter(config, metrics, make_output(config, runtime, while_waiting),
                      runtime.stopping)
    runtime.registry.register(FollowerCollector(adapter))
    runtime.admin.readiness.append(
        lambda: (
            (adapter.started, "starting") if not adapter.started else adapter.store.check_writable()
        )
    )
    runtime.admin.liveness.append(
        lambda: (
            time.monotonic() - adapter.heartbeat < STALL_SECONDS,
            f"main loop stalled for {time.monotonic() - adapter.heartbeat:.0f}s",
        )
    )
    runtime.admin.route("/status", lambda _query: json_response(adapter.status()))
    runtime.admin.open_probes()
    adapter.run()
