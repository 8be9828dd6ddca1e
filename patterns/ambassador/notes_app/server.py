"""The notes app under gunicorn (patterns/common/gunicorn_app.py); its connection pool
opens in the worker, after the fork, so no socket is shared between processes."""

from __future__ import annotations

from typing import Any

from patterns.common.gunicorn_app import GunicornServer

from .app import NOTES_KEY, create_app
from .config import Config


def notes_server(config: Config) -> GunicornServer:
    return GunicornServer(lambda: create_app(config), config.host, config.port,
                          threads=config.threads, graceful_timeout=config.graceful_timeout,
                          worker_exit=_close_pool)


def _close_pool(_server: Any, worker: Any) -> None:
    app = getattr(worker, "wsgi", None)
    notes = getattr(app, "extensions", {}).get(NOTES_KEY)
    if notes is not None:
        notes.close()
