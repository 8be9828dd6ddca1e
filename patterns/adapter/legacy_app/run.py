"""The legacy-app's run(config, runtime): serve the shop (app.py) under gunicorn
(patterns/common/gunicorn_app.py). ONE worker with threads, so a single process owns both
log files, and gunicorn's own access log in Apache's combined format with %D
(microseconds) appended. Like the legacy software it stands for, it logs gunicorn's
messages as plain text on stderr, not JSON. Imports Flask and gunicorn (the `web` extra),
so the entry point names it by reference."""

from __future__ import annotations

from flask import Flask
from gunicorn import glogging

from patterns.adapter.legacy_app.app import create_app, setup_app_log
from patterns.adapter.legacy_app.config import Config
from patterns.common.gunicorn_app import serve
from patterns.common.service import Runtime

# NCSA combined + %D, exactly as an Apache `LogFormat "%h %l %u %t \"%r\" %>s %b
# \"%{Referer}i\" \"%{User-agent}i\" %D"` would write it.
ACCESS_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(D)s'


def run(config: Config, _runtime: Runtime) -> None:
    def load() -> Flask:  # in the worker, after the fork: the worker owns the application log
        setup_app_log(config)
        return create_app(config)

    serve(load, config.http, accesslog=str(config.access_log_path),
          access_log_format=ACCESS_LOG_FORMAT, loglevel="info", logger_class=glogging.Logger)
