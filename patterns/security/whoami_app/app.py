"""The Flask app: `GET /` answers who is calling, as the tls-proxy put it in the headers.

It trusts X-Forwarded-For, X-Client-Verify, X-Client-Subject and X-Forwarded-Proto because
it listens on 127.0.0.1 only: in the pod, the tls-proxy is the one peer that can reach it,
and the proxy removes any such header a client sent before setting its own."""

from __future__ import annotations

from flask import Flask, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from patterns.common.http_headers import secure_flask_app
from patterns.common.service import new_registry


def identity() -> dict[str, str | None]:
    """The identity the proxy passed on, with the defaults of a request that did not come
    through it (no proxy: plain http, unverified, address unknown)."""
    get = request.headers.get
    return {
        "client_address": get("X-Forwarded-For") or "-",
        "client_verify": get("X-Client-Verify") or "NONE",
        "client_subject": get("X-Client-Subject") or None,
        "proto": get("X-Forwarded-Proto") or "http",
    }


def create_app(registry: CollectorRegistry | None = None) -> Flask:
    registry = registry or new_registry()
    requests_served = Counter(
        "whoami_app_requests", "HTTP requests served.", ["route", "status"], registry=registry
    )
    app = Flask(__name__)
    secure_flask_app(app)

    @app.after_request
    def count(response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule else "unmatched"
        requests_served.labels(route=rule, status=str(response.status_code)).inc()
        return response

    @app.get("/")
    def whoami() -> Response:
        return jsonify(identity())

    @app.get("/healthz")
    def healthz() -> tuple[str, int, dict[str, str]]:
        return "ok\n", 200, {"Content-Type": "text/plain; charset=utf-8"}

    @app.get("/readyz")
    def readyz() -> tuple[str, int, dict[str, str]]:
        return "ok\n", 200, {"Content-Type": "text/plain; charset=utf-8"}

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

    return app
