"""The headers of the suite's HTTP apps (web-app, legacy-app, notes-app), set by the one
hook they share (patterns/common/http_headers.py): nosniff and no-store on every
response; on a page, a Content-Security-Policy that admits exactly the page's own inline
style and script (by hash) and nothing else; on everything else, nothing at all."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from patterns.adapter.legacy_app.app import create_app as create_legacy_app
from patterns.adapter.legacy_app.config import load_config as load_legacy_config
from patterns.ambassador.notes_app.app import create_app as create_notes_app
from patterns.ambassador.notes_app.config import load_config as load_notes_config
from patterns.ambassador.notes_app.db import DatabaseUnavailable
from patterns.common.http_headers import STRICT_POLICY, page_policy
from patterns.sidecar.web_app.app import create_app as create_web_app
from patterns.sidecar.web_app.config import load_config as load_web_config


def directives(policy: str) -> dict[str, str]:
    return dict(d.strip().split(" ", 1) for d in policy.split(";"))


def inline_hashes(html: str, tag: str) -> str:
    """The CSP sources for a rendered page's inline <tag> blocks, computed the way a
    browser does (sha256 of the block's text, UTF-8)."""
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.DOTALL)
    return " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() + "'"
        for b in blocks
    )


def assert_common_headers(response: Any) -> None:
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"


def assert_page_fits_its_policy(response: Any, *, forms: bool) -> None:
    """The page's policy admits its inline style, no script, no connection, no frame."""
    assert_common_headers(response)
    page = response.get_data(as_text=True)
    assert 'style="' not in page and "<script" not in page
    assert directives(response.headers["Content-Security-Policy"]) == {
        "default-src": "'none'",
        "style-src": inline_hashes(page, "style"),
        "base-uri": "'none'",
        "form-action": "'self'" if forms else "'none'",
        "frame-ancestors": "'none'",
    }


@pytest.fixture
def web_client(tmp_path: Path) -> FlaskClient:
    config = load_web_config({"WEB_APP_LOG_DIR": str(tmp_path / "logs")})
    return create_web_app(config).test_client()


def test_web_app_page_fits_its_policy_and_the_rest_allows_nothing(web_client):
    page = web_client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert_page_fits_its_policy(page, forms=False)
    for path in ("/api/stats", "/traffic?n=2", "/traffic?n=0", "/metrics", "/healthz",
                 "/readyz"):
        response = web_client.get(path)
        assert_common_headers(response)
        assert response.headers["Content-Security-Policy"] == STRICT_POLICY, path
    missing = web_client.get("/nope")  # Flask's own HTML error page: no style, no script
    assert missing.status_code == 404
    assert_common_headers(missing)
    assert "default-src 'none'" in missing.headers["Content-Security-Policy"]


def test_legacy_app_answers_allow_nothing_to_load(tmp_path):
    config = load_legacy_config({"LEGACY_APP_LOG_DIR": str(tmp_path)})
    client = create_legacy_app(config).test_client()
    for path, status in [("/", 200), ("/orders", 200), ("/orders/7", 200),
                         ("/orders/4242", 404), ("/slow?ms=1", 200), ("/healthz", 200),
                         ("/nope", 404)]:
        response = client.get(path)
        assert response.status_code == status, path
        assert_common_headers(response)
        assert response.headers["Content-Security-Policy"] == STRICT_POLICY, path


class FakeNotes:
    """The notes table without a database: the headers are the app's business."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.rows: list[dict[str, Any]] = [{"id": 1, "body": "<b>bold</b> & more"}]

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def list(self) -> list[dict[str, Any]]:
        if self.fail:
            raise DatabaseUnavailable("connection refused")
        return self.rows

    def add(self, body: str) -> dict[str, Any]:
        row = {"id": len(self.rows) + 1, "body": body}
        self.rows.append(row)
        return row

    def server(self) -> dict[str, Any]:
        return {"address": "127.0.0.1", "port": 5432}


def test_notes_app_page_fits_its_policy_including_its_form_and_error_page():
    config = load_notes_config({})
    client = create_notes_app(config, notes=FakeNotes()).test_client()  # type: ignore[arg-type]
    page = client.get("/")
    assert page.status_code == 200 and "&lt;b&gt;bold&lt;/b&gt;" in page.get_data(as_text=True)
    assert_page_fits_its_policy(page, forms=True)
    for response in (client.get("/notes"), client.get("/db"),
                     client.post("/notes", json={"body": "hi"})):
        assert_common_headers(response)
        assert response.headers["Content-Security-Policy"] == STRICT_POLICY
    posted = client.post("/notes", data={"body": "from the form"})
    assert posted.status_code == 303
    assert_common_headers(posted)

    failing = create_notes_app(config, notes=FakeNotes(fail=True)).test_client()  # type: ignore[arg-type]
    error_page = failing.get("/", headers={"Accept": "text/html"})
    assert error_page.status_code == 503
    assert_page_fits_its_policy(error_page, forms=True)


def test_page_policy_hashes_what_a_browser_hashes():
    """Comments are not blocks, CRLF counts as LF (the browser's input normalization),
    and non-ASCII text is hashed as UTF-8."""
    page = "<!-- <style>x</style> --><style>\r\np{content:'·'}\r\n</style><script>1</script>"
    policy = directives(page_policy(page))
    assert policy["style-src"] == inline_hashes("<style>\np{content:'·'}\n</style>", "style")
    assert policy["script-src"] == inline_hashes("<script>1</script>", "script")
    assert "connect-src" not in policy and policy["form-action"] == "'none'"
