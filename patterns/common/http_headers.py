"""The response headers every HTTP server of the suite sends: the admin server and the
Flask apps alike.

- `X-Content-Type-Options: nosniff` on every response: a browser renders a body only as
  the type it was sent with (a JSON record or a log line is never sniffed into HTML).
- `Cache-Control: no-store`: every page and API shows live state; no proxy or browser
  keeps a copy of records or metrics.
- `Content-Security-Policy`: `STRICT_POLICY` (nothing may load, no framing) on everything
  that is not a page; a page gets `page_policy(its html)`, which admits exactly its own
  inline `<script>` and `<style>` blocks by sha256. The hashes are computed from the
  page's source at start-up, never from a rendered response: a script injected into a
  response has no hash in the policy and does not run.

Pure functions and one Flask hook (`secure_flask_app`); importing this module does not
need Flask, so the admin server, which every service runs, uses it too.
"""

from __future__ import annotations

import base64
import hashlib
from html.parser import HTMLParser
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask, Response

NOSNIFF = "nosniff"
NO_STORE = "no-store"
STRICT_POLICY = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"


class _InlineBlocks(HTMLParser):
    """A page's inline <script> and <style> texts, as a browser's parser sees them
    (comments skipped), and what the policy would block: style="" attributes and
    external scripts."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.blocks: list[tuple[str, str]] = []
        self.blocked: list[str] = []
        self._open: tuple[str, list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _value in attrs}
        if "style" in names:
            self.blocked.append(f'a style="" attribute on <{tag}>: use a class')
        if tag == "script" and "src" in names:
            self.blocked.append("an external <script src>")
        if tag in ("script", "style"):
            self._open = (tag, [])

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open[1].append(data)

    def handle_endtag(self, tag: str) -> None:
        if self._open is not None and tag == self._open[0]:
            self.blocks.append((tag, "".join(self._open[1])))
            self._open = None


def page_policy(html: str, *, connect: bool = False, forms: bool = False) -> str:
    """The Content-Security-Policy of one page: `default-src 'none'` plus its own inline
    scripts and styles by hash, `connect-src 'self'` if it fetches from its server
    (`connect`), `form-action 'self'` if it posts forms to it (`forms`), never framed.

    A page with a `style="..."` attribute or an external `<script src>` is refused here,
    at start-up: the policy would block them, and the page would break only in a browser.
    """
    parser = _InlineBlocks()
    # A browser hashes the text after its input stream's newline normalization.
    parser.feed(html.replace("\r\n", "\n").replace("\r", "\n"))
    parser.close()
    if parser.blocked:
        raise ValueError("the page policy would block " + ", ".join(parser.blocked))
    sources: dict[str, list[str]] = {"script": [], "style": []}
    for kind, text in parser.blocks:
        digest = base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()
        sources[kind].append(f"'sha256-{digest}'")
    directives = ["default-src 'none'"]
    if sources["script"]:
        directives.append("script-src " + " ".join(sources["script"]))
    if sources["style"]:
        directives.append("style-src " + " ".join(sources["style"]))
    if connect:
        directives.append("connect-src 'self'")
    directives += [
        "base-uri 'none'",
        "form-action 'self'" if forms else "form-action 'none'",
        "frame-ancestors 'none'",
    ]
    return "; ".join(directives)


def secure_flask_app(app: Flask, html_policy: str = STRICT_POLICY) -> None:
    """Every response of `app` gets the suite's headers; its HTML responses (its pages,
    and Flask's own error pages) the page policy `html_policy`, computed once by the app
    from its page source with `page_policy`, everything else `STRICT_POLICY`."""

    @app.after_request
    def add_security_headers(response: Response) -> Response:
        headers = response.headers
        headers["X-Content-Type-Options"] = NOSNIFF
        headers.setdefault("Cache-Control", NO_STORE)
        policy = html_policy if response.mimetype == "text/html" else STRICT_POLICY
        headers.setdefault("Content-Security-Policy", policy)
        return response
