"""Serve the app under gunicorn from the console script itself (gunicorn's BaseApplication),
so the image's ENTRYPOINT is just `web-app` and every setting comes from WEB_APP_* variables.
"""

from __future__ import annotations

import logging
from typing import Any

from gunicorn import glogging
from gunicorn.app.base import BaseApplication

from patterns.sidecar.web_app.app import STATE_KEY, create_app
from patterns.sidecar.web_app.config import Config


class JsonGunicornLogger(glogging.Logger):
    """gunicorn's own messages (boot, worker exits, signals) go through the root logger, so
    they come out as the same JSON lines on stdout as the app's diagnostics."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        self.error_log.handlers[:] = []
        self.error_log.propagate = True


class WebAppServer(BaseApplication):
    def __init__(self, config: Config) -> None:
        self.config = config
        super().__init__()

    def load_config(self) -> None:
        settings: dict[str, Any] = {
            "bind": [_bind_address(self.config.host, self.config.port)],
            # ONE worker, several threads: the access log is rotated by Python's
            # RotatingFileHandler, which is thread-safe but not safe across processes (two
            # workers would rotate the same file under each other and lose lines).
            "workers": 1,
            "worker_class": "gthread",
            "threads": self.config.threads,
            "graceful_timeout": self.config.graceful_timeout,
            # The app creates its access log in the worker, after the fork: a worker that
            # gunicorn replaces reopens the file and resumes the sequence from it.
            "preload_app": False,
            # The access log is the app's own FILE (for the sidecar); no second copy on stdout.
            "accesslog": None,
            "errorlog": "-",
            "loglevel": logging.getLevelName(logging.getLogger().level).lower(),
            "logger_class": JsonGunicornLogger,
            # gunicorn's control socket lives under $HOME, which is read-only in the pod.
            "control_socket_disable": True,
            "worker_exit": _close_access_log,
        }
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return create_app(self.config)


def _bind_address(host: str, port: int) -> str:
    # gunicorn wants IPv6 literals in brackets ("[::]:8080").
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def _close_access_log(_server: Any, worker: Any) -> None:
    app = getattr(worker, "wsgi", None)
    access_log = getattr(app, "extensions", {}).get(STATE_KEY)
    if access_log is not None:
        access_log.close()
