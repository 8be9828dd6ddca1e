"""whoami-app's run(config, runtime): serve the Flask app (app.py) under gunicorn
(patterns/common/gunicorn_app.py), one worker with threads. Imports Flask and gunicorn
(the `web` extra), so the entry point names it by reference."""

from __future__ import annotations

from patterns.common.gunicorn_app import serve
from patterns.common.service import Runtime
from patterns.security.whoami_app.app import create_app
from patterns.security.whoami_app.config import Config


def run(config: Config, _runtime: Runtime) -> None:
    serve(create_app, config.http, keepalive=config.keepalive)
