"""Start-up and shutdown shared by every service: the one entry path.

`main_for` / `run_service` turn a service's `load_config` and `run` functions into a
process: JSON logging, configuration errors reported by variable name (exit 2: a bad value,
a missing one, a directory that cannot be written), a missing extra reported by its name
(exit 2: `log-adapter needs the `json` extra: pip install ...`), the admin server for a
service whose settings have one, SIGTERM/SIGINT handled gracefully (the first asks `run` to
finish and exit 0; a second one exits at once), and a clean exit code. The HTTP apps come
through here too; their `run` hands the process to gunicorn's master, which installs its
own signal handlers and exits as gunicorn does.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import Protocol, TypeVar, runtime_checkable

from prometheus_client import CollectorRegistry, Gauge, PlatformCollector, ProcessCollector

from patterns.common.admin import AdminServer
from patterns.common.config import ConfigError, checking_dirs
from patterns.common.jsonlog import setup_logging

log = logging.getLogger(__name__)

EXIT_CONFIG = 2

# The module an optional dependency is imported as -> the extra of pyproject.toml that
# installs it. The images install each service's extras; a user of the distribution who
# runs a console script without them gets one line naming the extra, not a traceback.
EXTRA_OF_MODULE = {
    "orjson": "json",
    "uvloop": "uvloop",
    "flask": "web",
    "werkzeug": "web",
    "gunicorn": "web",
    "psycopg": "db",
    "psycopg_pool": "db",
    "cryptography": "tls",
    "httptools": "httptools",
}


def missing_extra(error: ImportError) -> str | None:
    """The extra whose module `error` did not find; None when it is not an extra's module
    (a bug or a broken install: that one keeps its traceback)."""
    if not isinstance(error, ModuleNotFoundError) or not error.name:
        return None
    return EXTRA_OF_MODULE.get(error.name.partition(".")[0])


def missing_extra_message(name: str, extra: str) -> str:
    return f"{name} needs the `{extra}` extra: pip install 'podpatterns[{extra}]'"


def load_entry(ref: str) -> Callable[..., object]:
    """"package.module:function", imported now: an entry point names its service's code
    this way so that what the code imports (an extra's module) is imported here, inside
    the entry path that reports a missing extra, rather than when the console script
    imports the entry point."""
    module, _, attr = ref.partition(":")
    target = getattr(importlib.import_module(module), attr)
    if not callable(target):
        raise TypeError(f"{ref} is not callable")
    return target


@runtime_checkable
class AdminSettings(Protocol):
    """A service's config dataclass with these two gets the admin server (read-only
    members, so the frozen dataclasses the services use satisfy it under mypy). The HTTP
    apps have none: their own port serves their probes."""

    @property
    def admin_host(self) -> str: ...

    @property
    def admin_port(self) -> int: ...


C = TypeVar("C")


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
    admin_server: AdminServer | None
    stopping: threading.Event = field(default_factory=threading.Event)
    # Called (from the signal handler) after `stopping` is set; asyncio services use it
    # to wake their loop.
    on_stop: list[Callable[[], None]] = field(default_factory=list)

    @property
    def admin(self) -> AdminServer:
        if self.admin_server is None:
            raise RuntimeError(f"{self.name}'s settings have no admin_host/admin_port")
        return self.admin_server

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


def report_missing_extra(name: str, extra: str) -> int:
    print(missing_extra_message(name, extra), file=sys.stderr)
    log.error("missing extra", extra={"extra": extra})
    return EXIT_CONFIG


# A service's run(config, runtime): returns when the service is done; None means exit 0,
# an int is the exit code (a batch that stopped early).
RunFunction = Callable[[C, Runtime], "int | None"]


def run_service(
    name: str,
    load_config: Callable[[Mapping[str, str]], C],
    run: RunFunction[C] | str,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Run a service to completion and return its exit code. `run` may be the function or
    its "module:function" reference (load_entry), imported once the configuration is
    loaded and before anything listens."""
    setup_logging(name, os.environ.get("LOG_LEVEL", "info"))
    try:
        with checking_dirs():  # the writable directories are created and checked now
            config = load_config(os.environ if environ is None else environ)
        service_run = load_entry(run) if isinstance(run, str) else run
    except ConfigError as exc:
        print(f"{name}: configuration error: {exc}", file=sys.stderr)
        log.error("configuration error", extra={"error": str(exc)})
        return EXIT_CONFIG
    except ModuleNotFoundError as exc:
        extra = missing_extra(exc)
        if extra is None:
            raise
        return report_missing_extra(name, extra)
    registry = new_registry()
    admin = None
    if isinstance(config, AdminSettings):
        try:
            admin = AdminServer(config.admin_host, config.admin_port, registry)
        except OSError as exc:
            print(f"{name}: cannot listen on admin port {config.admin_host}:"
                  f"{config.admin_port}: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    runtime = Runtime(name=name, registry=registry, admin_server=admin)
    Gauge(
        "service_info", "Static facts about this service.", ["service"], registry=registry
    ).labels(service=name).set(1)
    _install_signal_handlers(runtime)
    if admin is not None:
        admin.start()
    log.info("started", extra={"admin_port": None if admin is None else admin.port})
    try:
        result = service_run(config, runtime)
    except ModuleNotFoundError as exc:
        # An extra imported only on a path a setting chooses (the ambassador's uvloop).
        extra = missing_extra(exc)
        if extra is None:
            log.exception("service failed")
            return 1
        return report_missing_extra(name, extra)
    except Exception:
        log.exception("service failed")
        return 1
    finally:
        if admin is not None:
            admin.stop()
    code = result if isinstance(result, int) else 0
    log.info("stopped", extra={"exit_code": code})
    return code


def main_for(
    name: str,
    load_config: Callable[[Mapping[str, str]], C],
    run: RunFunction[C] | str,
) -> Callable[[], None]:
    """A console-script entry point:
    `main = main_for("log-adapter", load_config, "patterns.adapter.log_adapter.run:run")`.
    Name `run` by reference when its module imports an extra's module (orjson, uvloop,
    Flask, psycopg), and keep the entry point's module free of such imports: then a missing
    extra is reported here, at start, by name."""

    def main() -> None:
        sys.exit(run_service(name, load_config, run))

    return main


def exit_if_extra_missing(name: str, error: ModuleNotFoundError) -> None:
    """For an entry point of its own (one that cannot use main_for): exit 2 with the line
    naming the extra when `error` is an extra's module missing; otherwise return (the
    caller re-raises)."""
    extra = missing_extra(error)
    if extra is not None:
        print(missing_extra_message(name, extra), file=sys.stderr)
        sys.exit(EXIT_CONFIG)
