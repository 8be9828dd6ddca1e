"""The notes service: a page and a JSON API over the notes table. Database errors are
shown plainly -- the server's (or the ambassador's) own message -- never hidden."""

from __future__ import annotations

import html
import logging
from typing import Any

import psycopg
from flask import Flask, Response, jsonify, request

from patterns.common.http_headers import page_policy, secure_flask_app

from .config import Config
from .db import DatabaseUnavailable, Notes

log = logging.getLogger(__name__)

NOTES_KEY = "notes"

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>notes</title>
<style>body{{font-family:sans-serif;max-width:40em;margin:2em auto}}
.error{{background:#fdd;padding:1em;white-space:pre-wrap}}</style></head>
<body><h1>notes</h1>
<p>DATABASE_URL host: <code>{host}</code> (the db-ambassador sidecar)</p>
<form method="post" action="/notes"><input name="body" size="40" maxlength="2000" required>
<button>add</button></form>
{content}
</body></html>
"""
# Its inline style by hash (computed from the code's own template, never from a page with
# notes in it), and its form posts back to this app.
_PAGE_POLICY = page_policy(_PAGE.format(host="", content=""), forms=True)


def _error(exc: Exception) -> tuple[Response, int]:
    sqlstate = getattr(exc, "sqlstate", None)
    log.warning("database error", extra={"error": str(exc), "sqlstate": sqlstate})
    status = 503 if isinstance(exc, DatabaseUnavailable | psycopg.OperationalError) else 500
    return jsonify(error="database error", detail=str(exc).strip(), sqlstate=sqlstate), status


def create_app(config: Config, notes: Notes | None = None) -> Flask:
    app = Flask(__name__)
    secure_flask_app(app, _PAGE_POLICY)
    store = notes or Notes(config.database_url, config.pool_size, config.db_timeout)
    store.open()
    app.extensions[NOTES_KEY] = store

    @app.errorhandler(psycopg.Error)
    @app.errorhandler(DatabaseUnavailable)
    def database_error(exc: Exception) -> Any:
        if request.accept_mimetypes.best == "text/html":
            body = f'<p class="error">database error: {html.escape(str(exc).strip())}</p>'
            host = html.escape(_url_host(config.database_url))
            return Response(_PAGE.format(host=host, content=body), 503, mimetype="text/html")
        return _error(exc)

    @app.get("/")
    def index() -> Response:
        rows = store.list()
        items = "".join(
            f"<li>{html.escape(row['body'])} <small>#{row['id']}</small></li>" for row in rows
        )
        host = html.escape(_url_host(config.database_url))
        return Response(_PAGE.format(host=host, content=f"<ul>{items}</ul>"), mimetype="text/html")

    @app.get("/notes")
    def list_notes() -> Any:
        return jsonify(notes=store.list())

    @app.post("/notes")
    def add_note() -> Any:
        payload = request.get_json(silent=True) if request.is_json else request.form
        body = str((payload or {}).get("body", "")).strip()
        if not 1 <= len(body) <= 2000:
            return jsonify(error="body must be 1 to 2000 characters"), 400
        note = store.add(body)
        if not request.is_json:
            return Response(status=303, headers={"Location": "/"})
        return jsonify(note), 201

    @app.get("/db")
    def which_server() -> Any:
        return jsonify(store.server())

    @app.get("/healthz")
    def healthz() -> Any:
        return "ok\n"  # the process answers; the database is /readyz's business

    @app.get("/readyz")
    def readyz() -> Any:
        store.server()
        return "ok\n"

    return app


def _url_host(database_url: str) -> str:
    try:
        info = psycopg.conninfo.conninfo_to_dict(database_url)
    except psycopg.Error:
        return "?"
    return f"{info.get('host', 'localhost')}:{info.get('port', '5432')}"
