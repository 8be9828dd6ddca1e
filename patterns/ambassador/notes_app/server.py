"""Serve the notes app under gunicorn from the console script itself (gunicorn's
BaseApplication): the image's ENTRYPOINT is just `notes-app`."""

from __future__ import annotations

import logging
from typing import Any

from gunicorn.app.base import BaseApplication

from patterns.sidecar.web_app.server import JsonGunicornLogger

from .app import NOTES_KEY, create_app
from .config import Config


class NotesServer(BaseApplication):
    def __init__(self, config: Config) -> None:
        self.config = config
        super().__init__()

    def load_config(self) -> None:
        settings: dict[str, Any] = {
            "bind": [f"{self.config.host}:{self.config.port}"],
            "workers": 1,
            "worker_class": "gthread",
            "threads": self.config.threads,
            "graceful_timeout": self.config.graceful_timeout,
            # The pool opens in the worker, after the fork: sockets are not shared.
            "preload_app": False,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": logging.getLevelName(logging.getLogger().level).lower(),
            "logger_class": JsonGunicornLogger,
            "control_socket_disable": True,
            "worker_exit": _close_pool,
        }
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return create_app(self.config)


def _close_pool(_server: Any, worker: Any) -> None:
    app = getattr(worker, "wsgi", None)
    notes = getattr(app, "extensions", {}).get(NOTES_KEY)
    if notes is not None:
        notes.close()
