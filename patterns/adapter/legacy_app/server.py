"""gunicorn, started by the console script itself (gunicorn's BaseApplication): ONE worker
with threads, so a single process owns both log files, and gunicorn's own access log in
Apache's combined format with %D (microseconds) appended."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from patterns.adapter.legacy_app.app import create_app, setup_app_log
from patterns.adapter.legacy_app.config import Config

# NCSA combined + %D, exactly as an Apache `LogFormat "%h %l %u %t \"%r\" %>s %b
# \"%{Referer}i\" \"%{User-agent}i\" %D"` would write it.
ACCESS_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(D)s'


class LegacyAppServer(BaseApplication):
    def __init__(self, config: Config) -> None:
        self.config = config
        super().__init__()

    def load_config(self) -> None:
        settings: dict[str, Any] = {
            "bind": [f"{self.config.host}:{self.config.port}"],
            "workers": 1,
            "worker_class": "gthread",
            "threads": self.config.threads,
            "preload_app": False,
            "accesslog": str(self.config.access_log_path),
            "access_log_format": ACCESS_LOG_FORMAT,
            "errorlog": "-",
            "loglevel": "info",
            # gunicorn's control socket lives under $HOME, which is read-only in the pod.
            "control_socket_disable": True,
        }
        for key, value in settings.items():
            if key in self.cfg.settings:
                self.cfg.set(key, value)

    def load(self) -> Any:
        setup_app_log(self.config)
        return create_app(self.config)
