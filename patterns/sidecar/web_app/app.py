"""The Flask app: a few pages whose every request becomes one line in the access log FILE."""

from __future__ import annotations

import time
from importlib import resources

from flask import Flask, Response, jsonify, render_template, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from patterns.common.http_headers import page_policy, secure_flask_app
from patterns.common.service import new_registry
from patterns.sidecar.web_app.access_log import AccessLog, Request
from patterns.sidecar.web_app.config import Config

STATE_KEY = "web_app.access_log"
# The page's policy admits its inline style by hash, computed from the template's source
# (not from a rendered page): the style block holds no template variables.
PAGE_POLICY = page_policy(resources.files(__package__).joinpath("index.html").read_text())


def create_app(config: Config, registry: CollectorRegistry | None = None) -> Flask:
    registry = registry or new_registry()
    access_log = AccessLog(
        config.access_log_path, config.log_max_bytes, config.log_backups, registry
    )
    requests_served = Counter(
        "web_app_requests", "HTTP requests served.", ["route", "status"], registry=registry
    )
    # Templates sit next to the code so the package data stays one flat folder.
    app = Flask(__name__, template_folder=".")
    app.extensions[STATE_KEY] = access_log
    secure_flask_app(app, PAGE_POLICY)

    @app.after_request
    def write_access_line(response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule else "unmatched"
        requests_served.labels(route=rule, status=str(response.status_code)).inc()
        access_log.write(
            [
                Request(
                    remote=request.remote_addr or "-",
                    method=request.method,
                    # The request target as the client sent it (gunicorn keeps it in RAW_URI).
                    target=request.environ.get("RAW_URI") or request.full_path.rstrip("?"),
                    protocol=request.environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
                    status=response.status_code,
                    size=response.content_length,
                    referer=request.referrer or "-",
                    user_agent=request.user_agent.string or "-",
                )
            ]
        )
        return response

    @app.get("/")
    def index() -> str:
        return render_template(
            "index.html",
            log_path=str(config.access_log_path),
            max_bytes=config.log_max_bytes,
            backups=config.log_backups,
            sequence=access_log.sequence,
            rotations=access_log.rotation_count,
            traffic_max=config.traffic_max,
        )

    @app.route("/traffic", methods=["GET", "POST"])
    def traffic() -> tuple[Response, int]:
        raw = request.args.get("n", "100")
        try:
            count = int(raw, 10)
        except ValueError:
            count = 0
        if not 1 <= count <= config.traffic_max:
            return jsonify(error=f"n must be an integer from 1 to {config.traffic_max}", n=raw), 400
        started = time.perf_counter()
        remote = request.remote_addr or "-"
        first, last = access_log.write(
            Request(
                remote=remote,
                method="GET",
                target=f"/synthetic/{i}",
                protocol="HTTP/1.1",
                status=200,
                size=0,
                referer="-",
                user_agent="web-app-traffic",
            )
            for i in range(1, count + 1)
        )
        written = last - first + 1
        body = jsonify(
            requested=count,
            written=written,
            first_seq=first,
            last_seq=last,
            seconds=round(time.perf_counter() - started, 4),
        )
        # A short write (disk full) is a server error, never a silent success.
        return body, (200 if written == count else 507)

    @app.get("/api/stats")
    def stats() -> Response:
        # Read before this request's own line is written: that one shows up in the next call.
        return jsonify(
            log_path=str(access_log.path),
            lines_written=access_log.lines_written,
            last_seq=access_log.sequence,
            rotations=access_log.rotation_count,
            write_errors=access_log.write_error_count,
        )

    @app.get("/healthz")
    def healthz() -> tuple[str, int, dict[str, str]]:
        return "ok\n", 200, {"Content-Type": "text/plain; charset=utf-8"}

    @app.get("/readyz")
    def readyz() -> tuple[str, int, dict[str, str]]:
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if access_log.healthy:
            return "ok\n", 200, headers
        return f"cannot write {access_log.path}\n", 503, headers

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

    return app
