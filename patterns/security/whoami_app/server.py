"""whoami-app under gunicorn (patterns/common/gunicorn_app.py): one worker with threads."""

from __future__ import annotations

from patterns.common.gunicorn_app import GunicornServer
from patterns.security.whoami_app.app import create_app
from patterns.security.whoami_app.config import Config


def whoami_app_server(config: Config) -> GunicornServer:
    return GunicornServer(create_app, config.host, config.port, threads=config.threads,
                          keepalive=config.keepalive)
