"""The web app under gunicorn (patterns/common/gunicorn_app.py): ONE worker with threads,
because the access log is rotated by Python's RotatingFileHandler, which is thread-safe but
not safe across processes (two workers would rotate the same file under each other and
lose lines). The app opens its access log in the worker, after the fork: a worker that
gunicorn replaces reopens the file and resumes the sequence from it."""

from __future__ import annotations

from typing import Any

from patterns.common.gunicorn_app import GunicornServer
from patterns.sidecar.web_app.app import STATE_KEY, create_app
from patterns.sidecar.web_app.config import Config


def web_app_server(config: Config) -> GunicornServer:
    # The access log is the app's own FILE (for the sidecar): none on stdout.
    return GunicornServer(lambda: create_app(config), config.host, config.port,
                          threads=config.threads, graceful_timeout=config.graceful_timeout,
                          worker_exit=_close_access_log)


def _close_access_log(_server: Any, worker: Any) -> None:
    app = getattr(worker, "wsgi", None)
    access_log = getattr(app, "extensions", {}).get(STATE_KEY)
    if access_log is not None:
        access_log.close()
