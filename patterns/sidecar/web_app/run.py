"""The web-app's run(config, runtime): serve the Flask app (app.py) under gunicorn
(patterns/common/gunicorn_app.py). ONE worker with threads, because the access log is
rotated by Python's RotatingFileHandler, which is thread-safe but not safe across processes
(two workers would rotate the same file under each other and lose lines). The app opens
its access log in the worker, after the fork: a worker that gunicorn replaces reopens the
file and resumes the sequence from it. Imports Flask and gunicorn (the `web` extra), so
the entry point names it by reference."""

from __future__ import annotations

from patterns.common.gunicorn_app import close_extension, serve
from patterns.common.service import Runtime
from patterns.sidecar.web_app.app import STATE_KEY, create_app
from patterns.sidecar.web_app.config import Config


def run(config: Config, _runtime: Runtime) -> None:
    # The access log is the app's own FILE (for the sidecar): none on stdout.
    serve(lambda: create_app(config), config.http, worker_exit=close_extension(STATE_KEY))
