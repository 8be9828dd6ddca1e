"""The notes-app's run(config, runtime): serve the notes service (app.py) under gunicorn
(patterns/common/gunicorn_app.py); its connection pool opens in the worker, after the
fork, so no socket is shared between processes. Imports Flask, gunicorn and psycopg (the
`web` and `db` extras), so the entry point names it by reference."""

from __future__ import annotations

from patterns.ambassador.notes_app.app import NOTES_KEY, create_app
from patterns.ambassador.notes_app.config import Config
from patterns.common.gunicorn_app import close_extension, serve
from patterns.common.service import Runtime


def run(config: Config, _runtime: Runtime) -> None:
    serve(lambda: create_app(config), config.http, worker_exit=close_extension(NOTES_KEY))
