"""Serve a Flask app under gunicorn from the service's own console script (gunicorn's
BaseApplication), so an image's ENTRYPOINT is just the service's name and every setting
comes from its environment variables. Every HTTP app of the suite runs this way: ONE
worker with threads, because each app owns files (its logs) that only one process may
write, and the app built in the worker, after the fork, so a worker gunicorn replaces
reopens them. Needs the `web` extra (Flask, gunicorn).

What a client may hold of such an app: a request line of 4 KiB and 100 header fields of
8 KiB each at most (pinned below), so a head costs at most about 800 KiB per thread, and a
kept-alive connection closes after 2 s without a request. What gthread does NOT bound: a
new connection holds a thread for up to 5 s waiting for its first byte, and a request
trickled a byte at a time holds its thread with no deadline, so `threads` such peers keep
every other client, probes included, out. These servers are the patterns' demo apps, in
the place of a team's own app; an app served this way that untrusted clients reach belongs
behind a buffering proxy (gunicorn's own advice) or on a worker with a request deadline.
The sidecars' admin server (patterns/common/admin.py) is not gunicorn and has one.

An app's `run(config, runtime)` (its run.py) calls `serve(create_app, config.http, ...)`:
from there gunicorn's master owns the process, its signals (SIGTERM: graceful stop) and its
exit code, both in the master and in each worker it forks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from gunicorn import glogging
from gunicorn.app.base import BaseApplication

from patterns.common.http_settings import HttpSettings

log = logging.getLogger(__name__)


class JsonGunicornLogger(glogging.Logger):
    """gunicorn's own messages (boot, worker exits, signals) go through the root logger, so
    they come out as the same JSON lines on stdout as the app's diagnostics."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        self.error_log.handlers[:] = []
        self.error_log.propagate = True


class GunicornServer(BaseApplication):
    """`GunicornServer(create_app, host, port, threads=4).run()`: gunicorn's master, which
    stops gracefully on SIGTERM (in-flight requests get `graceful_timeout` seconds) and
    exits 0. `settings` override or add gunicorn settings (accesslog, worker_exit, ...)."""

    def __init__(self, create_app: Callable[[], Any], host: str, port: int, threads: int,
                 graceful_timeout: float = 30, **settings: Any) -> None:
        self.create_app = create_app
        self.settings: dict[str, Any] = {
            "bind": [bind_address(host, port)],
            "workers": 1,
            "worker_class": "gthread",
            "threads": threads,
            "graceful_timeout": graceful_timeout,
            # gunicorn's defaults, pinned: what one request head and one idle connection
            # may hold (see the module's docstring for what they do not bound).
            "limit_request_line": 4094,
            "limit_request_fields": 100,
            "limit_request_field_size": 8190,
            "keepalive": 2,
            "preload_app": False,
            # Apps write their access log themselves (or set it here): none on stdout.
            "accesslog": None,
            "errorlog": "-",
            "loglevel": logging.getLevelName(logging.getLogger().level).lower(),
            "logger_class": JsonGunicornLogger,
            # gunicorn's control socket lives under $HOME, which is read-only in the pod.
            "control_socket_disable": True,
            **settings,
        }
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.settings.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self.create_app()


def serve(create_app: Callable[[], Any], http: HttpSettings, **settings: Any) -> None:
    """Run gunicorn's master on `http` (the app's HttpSettings) until it stops; gunicorn
    exits the process with its own status (0 after a graceful SIGTERM)."""
    log.info("serving", extra={"bind": bind_address(http.host, http.port),
                               "threads": http.threads})
    GunicornServer(create_app, http.host, http.port, threads=http.threads,
                   graceful_timeout=http.graceful_timeout, **settings).run()


def close_extension(key: str) -> Callable[[Any, Any], None]:
    """A `worker_exit` hook: close what the app keeps under `app.extensions[key]` (its
    access log, its connection pool) when the worker that built it exits."""

    def worker_exit(_server: Any, worker: Any) -> None:
        app = getattr(worker, "wsgi", None)
        held = getattr(app, "extensions", {}).get(key)
        if held is not None:
            held.close()

    return worker_exit


def bind_address(host: str, port: int) -> str:
    # gunicorn wants IPv6 literals in brackets ("[::]:8080").
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"
