"""Start-up and shutdown shared by every service.

`run_service` turns a service's `load_config` and `run` functions into a process:
JSON logging, configuration errors reported by variable name (exit 2), the admin server,
SIGTERM/SIGINT handled gracefully (the first asks `run` to finish and exit 0; a second one
exits at once), and a clean exit code.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import Protocol, TypeVar

from prometheus_client import CollectorRegistry, Gauge, PlatformCollector, ProcessCollector

from patterns.common.admin import AdminServer
from patterns.common.config import ConfigError
from patterns.common.jsonlog import setup_logging

log = logging.getLogger(__name__)

EXIT_CONFIG = 2


class AdminSettings(Protocol):
    """What run_service needs from a service's config dataclass (read-only members, so
    the frozen dataclasses the services use satisfy it under mypy)."""

    @property
    def admin_host(self) -> str: ...

    @property
    def admin_port(self) -> int: ...


C = TypeVar("C", bound=AdminSettings)


def new_registry() -> CollectorRegistry:
    """A registry per service instance (tests run several in one process) with the
    standard process_* metrics (RSS, CPU, open fds) that operators look for."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


@dataclass
class Runtime:
    """What a running service gets: its name, metrics registry, admin server and the
    `stopping` event set by the first SIGTERM/SIGINT."""

    name: str
    registry: CollectorRegistry
    admin: AdminServer
    stopping: threading.Event = field(default_factory=threading.Event)
    # Called (from the signal handler) after `stopping` is set; asyncio services use it
    # to wake their loop.
    on_stop: list[Callable[[], None]] = field(default_factory=list)

    def request_stop(self) -> None:
        self.stopping.set()
        for callback in self.on_stop:
            callback()


def _install_signal_handlers(runtime: Runtime) -> None:
    signals_seen = 0

    def handle(signum: int, _frame: FrameType | None) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            log.warning("second signal, exiting now", extra={"signal": signal.Signals(signum).name})
            logging.shutdown()
            os._exit(128 + signum)
        log.info("shutting down", extra={"signal": signal.Signals(signum).name})
        runtime.request_stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def run_service(
    name: str,
    load_config: Callable[[Mapping[str, str]], C],
    run: Callable[[C, Runtime], None],
    environ: Mapping[str, str] | None = None,
) -> int:
    """Run a service to completion and return its exit code."""
    setup_logging(name, os.environ.get("LOG_LEVEL", "info"))
    try:
        config = load_config(os.environ if environ is None else environ)
    except ConfigError as exc:
        print(f"{name}: configuration error: {exc}", file=sys.stderr)
        log.error("configuration error", extra={"error": str(exc)})
        return EXIT_CONFIG
    registry = new_registry()
    try:
        admin = AdminServer(config.admin_host, config.admin_port, registry)
    except OSError as exc:
        print(
            f"{name}: cannot listen on admin port {config.admin_host}:{config.admin_port}: {exc}",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    runtime = Runtime(name=name, registry=registry, admin=admin)
    Gauge(
        "service_info", "Static facts about this service.", ["service"], registry=registry
    ).labels(service=name).set(1)
    _install_signal_handlers(runtime)
    admin.start()
    log.info("started", extra={"admin_port": admin.port})
    try:
        run(config, runtime)
    except Exception:
        log.exception("service failed")
        return 1
    finally:
        admin.stop()
    log.info("stopped")
    return 0


def main_for(
    name: str,
    load_config: Callable[[Mapping[str, str]], C],
    run: Callable[[C, Runtime], None],
) -> Callable[[], None]:
    """A console-script entry point: `main = main_for("log-shipper", load_config, run)`."""

    def main() -> None:
        sys.exit(run_service(name, load_config, run))

    return main
