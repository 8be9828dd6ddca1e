"""The shop: a few routes that write the application log the way an old Java or Python
service does (`2026-11-25 12:00:00,123 ERROR [thread] shop.checkout - message`, then the
traceback on the following lines). The access log is gunicorn's, in Apache's combined
format with %D; see server.py."""

from __future__ import annotations

import logging
import random
import time

import requests
from flask import Flask, Response, jsonify, request

from patterns.adapter.legacy_app.config import Config
from patterns.common.http_headers import secure_flask_app

APP_LOG_FORMAT = "%(asctime)s %(levelname)s [%(threadName)s] %(name)s - %(message)s"
KNOWN_ORDERS = 1000

log = logging.getLogger("shop")


class PaymentDeclined(Exception):
    """A failed checkout: logged with its traceback, answered with a 500."""


def setup_app_log(config: Config) -> logging.Handler:
    """The `shop` loggers write app.log in the classic layout, timestamps in UTC."""
    handler = logging.FileHandler(config.app_log_path, encoding="utf-8")
    formatter = logging.Formatter(APP_LOG_FORMAT)
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    shop = logging.getLogger("shop")
    shop.handlers[:] = [handler]
    shop.setLevel(logging.DEBUG)
    shop.propagate = False  # legacy: its log is its file, not the container's stdout
    return handler


def _charge(order_id: int, amount: int) -> None:
    raise PaymentDeclined(f"card declined for order {order_id} (amount {amount})")


def create_app(config: Config) -> Flask:
    app = Flask(__name__)
    secure_flask_app(app)  # no page of its own: every response gets the strict policy
    orders_log = logging.getLogger("shop.orders")
    checkout_log = logging.getLogger("shop.checkout")
    traffic_log = logging.getLogger("shop.traffic")

    @app.get("/")
    def index() -> tuple[str, int, dict[str, str]]:
        return (
            "legacy shop: /orders, /orders/<id>, /checkout, /slow?ms=, /traffic?n=\n",
            200,
            {"Content-Type": "text/plain; charset=utf-8"},
        )

    @app.get("/orders")
    def orders() -> Response:
        orders_log.info("listed %d orders", 3)
        return jsonify(orders=[1, 2, 3])

    @app.get("/orders/<int:order_id>")
    def order(order_id: int) -> tuple[Response, int]:
        if order_id > KNOWN_ORDERS:
            orders_log.warning("order %d not found", order_id)
            return jsonify(error="not found"), 404
        orders_log.debug("order %d read", order_id)
        return jsonify(id=order_id, status="shipped"), 200

    @app.route("/checkout", methods=["GET", "POST"])
    def checkout() -> tuple[Response, int]:
        order_id = random.randint(1, KNOWN_ORDERS)
        fail = request.args.get("fail")
        failing = fail == "1" or (fail is None and random.random() < config.error_rate)
        try:
            if failing:
                _charge(order_id, random.randint(5, 500))
        except PaymentDeclined:
            checkout_log.exception("checkout failed for order %d", order_id)
            return jsonify(error="payment declined"), 500
        checkout_log.info("order %d paid", order_id)
        return jsonify(id=order_id, status="paid"), 200

    @app.get("/slow")
    def slow() -> tuple[Response, int]:
        try:
            millis = min(max(int(request.args.get("ms", "250")), 0), 5000)
        except ValueError:
            return jsonify(error="ms must be an integer"), 400
        time.sleep(millis / 1000)
        if millis > 1000:
            logging.getLogger("shop.slow").warning("slow request took %d ms", millis)
        return jsonify(slept_ms=millis), 200

    @app.route("/traffic", methods=["GET", "POST"])
    def traffic() -> tuple[Response, int]:
        """Real requests to this server (so they reach gunicorn's access log): a mix of
        pages, missing orders and failing checkouts, for the demo."""
        try:
            count = int(request.args.get("n", "50"))
        except ValueError:
            count = 0
        if not 1 <= count <= config.traffic_max:
            return jsonify(error=f"n must be an integer from 1 to {config.traffic_max}"), 400
        base = f"http://127.0.0.1:{config.http.port}"
        targets = ["/", "/orders", "/orders/7", "/orders/4242", "/checkout", "/slow?ms=20"]
        statuses: dict[str, int] = {}
        with requests.Session() as session:
            for i in range(count):
                target = targets[i % len(targets)]
                response = session.get(base + target, timeout=10)
                key = str(response.status_code)
                statuses[key] = statuses.get(key, 0) + 1
        traffic_log.info("sent %d requests: %s", count, statuses)
        return jsonify(sent=count, statuses=statuses), 200

    @app.get("/healthz")
    def healthz() -> tuple[str, int, dict[str, str]]:
        return "ok\n", 200, {"Content-Type": "text/plain; charset=utf-8"}

    return app
