"""The ambassador's Prometheus metrics, on the service's own registry: those of the
upstream pool (health, roles, failover) and those of the sessions it serves."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from patterns.common.metrics import counter_by

from .cancel import RESULTS as CANCEL_RESULTS
from .relay import Traffic
from .upstream import Upstream

REFUSAL_REASONS = (
    "too_many_connections",
    "no_healthy_upstream",
    "startup_timeout",
    "bad_startup",
    "shutting_down",
)


class _UpstreamCollector(Collector):
    """Each upstream's state, read at scrape time."""

    def __init__(self, upstreams: Sequence[Upstream]) -> None:
        self.upstreams = upstreams

    def collect(self) -> Iterator[GaugeMetricFamily]:
        healthy = GaugeMetricFamily(
            "ambassador_upstream_healthy", "1 if the last health check passed.", labels=["upstream"]
        )
        primary = GaugeMetricFamily(
            "ambassador_upstream_primary",
            "1 if the upstream is a writable primary, 0 if a standby (health credentials only).",
            labels=["upstream"],
        )
        sessions = GaugeMetricFamily(
            "ambassador_upstream_sessions", "Open sessions per upstream.", labels=["upstream"]
        )
        for upstream in list(self.upstreams):
            healthy.add_metric([upstream.name], 1.0 if upstream.healthy else 0.0)
            if upstream.in_recovery is not None:
                primary.add_metric([upstream.name], 0.0 if upstream.in_recovery else 1.0)
            sessions.add_metric([upstream.name], upstream.sessions)
        yield healthy
        yield primary
        yield sessions


class _TrafficCollector(Collector):
    """Byte totals and open sessions, read at scrape time, so the relay's hot path only
    adds to plain ints."""

    def __init__(self, traffic: Traffic, open_sessions: Callable[[], int]) -> None:
        self.traffic = traffic
        self.open_sessions = open_sessions

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        traffic = CounterMetricFamily(
            "ambassador_bytes", "Bytes relayed, by direction.", labels=["direction"]
        )
        to_upstream, to_client = self.traffic.totals()
        traffic.add_metric(["client_to_upstream"], to_upstream)
        traffic.add_metric(["upstream_to_client"], to_client)
        yield traffic
        yield GaugeMetricFamily(
            "ambassador_sessions_open",
            "Client sessions being relayed now.",
            value=self.open_sessions(),
        )


class PoolMetrics:
    """What the upstream pool counts: health checks and failovers, and each upstream's state."""

    def __init__(self, registry: CollectorRegistry, upstreams: Sequence[Upstream]) -> None:
        registry.register(_UpstreamCollector(upstreams))
        self.failovers = Counter(
            "ambassador_failovers",
            "Times new sessions moved from one upstream to another.",
            registry=registry,
        )
        self.health_checks = Counter(
            "ambassador_health_checks",
            "Health checks, by upstream and result.",
            ["upstream", "result"],
            registry=registry,
        )


class SessionMetrics:
    """What the server counts: sessions, refusals, cancels, bytes relayed and draining."""

    def __init__(
        self, registry: CollectorRegistry, traffic: Traffic, open_sessions: Callable[[], int]
    ) -> None:
        registry.register(_TrafficCollector(traffic, open_sessions))
        self.sessions = Counter(
            "ambassador_sessions", "Sessions relayed, by upstream.", ["upstream"], registry=registry
        )
        self.refusals = counter_by(
            "ambassador_refusals",
            "Clients refused with an ErrorResponse (or dropped), by reason.",
            "reason", REFUSAL_REASONS, registry,
        )
        self.cancels = counter_by(
            "ambassador_cancel_requests",
            "CancelRequests, by outcome: forwarded (to the session's own upstream), undelivered"
            " (that upstream unreachable), unknown_key (no session relayed here has that key),"
            " rate_limited (over AMBASSADOR_CANCEL_RATE for that session).",
            "result", CANCEL_RESULTS, registry,
        )
        self.sessions_killed = Counter(
            "ambassador_sessions_killed",
            "Sessions closed by the ambassador because their upstream failed its check.",
            ["upstream"],
            registry=registry,
        )
        self.draining = Gauge(
            "ambassador_draining", "1 while shutting down and draining sessions.", registry=registry
        )
