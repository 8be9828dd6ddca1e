"""The proxy's Prometheus metrics: the shared counters (counters.py) summed over the
workers at scrape time, and the certificate new handshakes get."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .certs import Certificate
from .counters import CLOSE_REASONS, HANDSHAKE_RESULTS, RELOAD_RESULTS, SharedCounters


class _Collector(Collector):
    def __init__(
        self, counters: SharedCounters, certificate: Callable[[], Certificate | None]
    ) -> None:
        self.counters = counters
        self.certificate = certificate

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        counters = self.counters
        handshakes = CounterMetricFamily(
            "proxy_handshakes", "TLS handshakes, by result.", labels=["result"])
        for result in HANDSHAKE_RESULTS:
            handshakes.add_metric([result], counters.total(f"handshakes:{result}"))
        yield handshakes
        closed = CounterMetricFamily(
            "proxy_connections_closed", "Client connections closed by the proxy, by reason.",
            labels=["reason"])  # fmt: skip
        for reason in CLOSE_REASONS:
            closed.add_metric([reason], counters.total(f"closed:{reason}"))
        yield closed
        reloads = CounterMetricFamily(
            "proxy_certificate_reloads",
            "Certificate generations loaded (ok) or refused (bad), as the first worker saw them.",
            labels=["result"])  # fmt: skip
        for result in RELOAD_RESULTS:
            reloads.add_metric([result], counters.row(0).get(f"reloads:{result}"))
        yield reloads
        yield CounterMetricFamily(
            "proxy_requests", "HTTP requests relayed to the upstream.",
            value=counters.total("requests"))  # fmt: skip
        yield GaugeMetricFamily(
            "proxy_connections_open", "Client connections open now (handshaking included).",
            value=counters.total("connections_open"))  # fmt: skip
        yield GaugeMetricFamily(
            "proxy_workers_alive", "Worker processes running.", value=counters.total("alive"))
        certificate = self.certificate()
        expiry = GaugeMetricFamily(
            "proxy_certificate_expiry_seconds",
            "Seconds until notAfter of the certificate new handshakes get.")
        serial = GaugeMetricFamily(
            "proxy_certificate_serial_info", "The serial of the certificate new handshakes get.",
            labels=["serial"])  # fmt: skip
        if certificate is not None:
            expiry.add_metric([], certificate.not_after - time.time())
            serial.add_metric([certificate.serial], 1.0)
        yield expiry
        yield serial


def register(
    registry: CollectorRegistry,
    counters: SharedCounters,
    certificate: Callable[[], Certificate | None],
) -> None:
    registry.register(_Collector(counters, certificate))
