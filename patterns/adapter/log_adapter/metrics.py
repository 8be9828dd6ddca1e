"""The metrics the adapter derives from the logs, as one Prometheus collector.

The hot loop only bumps plain dict and list entries (a `prometheus_client` Counter costs a
lock and a label lookup per call, which would dominate a line's budget); the exposition is
built from those tallies at scrape time. The parsing thread updates them a chunk at a time
under `lock`, and `collect` reads them under the same lock, so a scrape never sees half a
chunk.

Series:
  http_requests_total{method,status}
  http_response_size_bytes_total{method,status}
  http_request_duration_seconds (histogram, from the access log's %D)
  http_requests_by_path_total{path,status_class}   (bounded: see PathLabels)
  app_log_records_total{severity}
  adapter_lines_total{input,result}                 result = parsed | rejected
"""

from __future__ import annotations

import re
import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from patterns.adapter.log_adapter.otel import KNOWN_METHODS, OTHER_METHOD

# Seconds. Prometheus' default buckets, which suit request latencies.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
# The same bounds in microseconds, the access log's unit, so an observation is an integer
# comparison and never a float conversion.
DURATION_BOUNDS_US = tuple(round(b * 1_000_000) for b in DURATION_BUCKETS)

OTHER_PATH = "_other"

_ID_SEGMENT = re.compile(r"\d+|[0-9a-fA-F-]{16,}|[0-9a-fA-F]{8}-[0-9a-fA-F-]{27}")
# What a label value must not carry as is: C0 and C1 controls and DEL (a terminal escape in
# a logged URL reaches whoever reads /metrics), and lone surrogates (from a JSON line's
# "\ud800" escapes), which are not UTF-8 at all: the exposition could not be encoded.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if "\ud800" <= char <= "\udfff":
        return "\ufffd"
    return "".join(f"%{byte:02X}" for byte in char.encode())  # as a URL carries it


def label_value(text: str) -> str:
    """`text` made a safe label value: controls percent-encoded, lone surrogates U+FFFD."""
    return _UNSAFE.sub(_escape, text) if _UNSAFE.search(text) else text


def normalize_path(path: str) -> str:
    """/orders/1234?x=1 -> /orders/:id : identifiers in paths become one label value."""
    path = path.split("?", 1)[0].split("#", 1)[0]
    segments = path.split("/")
    return "/".join(":id" if _ID_SEGMENT.fullmatch(s) else s for s in segments)


class PathLabels:
    """Request target -> bounded `path` label value.

    Targets are normalised (query dropped, id-like segments folded) and made safe
    (`label_value`); the first `max_paths` distinct paths of at most MAX_LABEL_CHARS
    characters get their own value and any other one becomes `_other`, so a scanner
    probing random or huge URLs cannot blow up Prometheus. The raw-target cache is
    bounded too, in entries and in the length of what it keeps.
    """

    CACHE_LIMIT = 10_000
    CACHED_TARGET_CHARS = 512  # longer targets are labelled afresh each time, not kept
    MAX_LABEL_CHARS = 256

    def __init__(self, max_paths: int) -> None:
        self.max_paths = max_paths
        self._known: set[str] = set()
        self.cache: dict[str, str] = {}  # looked at first by observe_request

    def __call__(self, target: str) -> str:
        label = self.cache.get(target)
        if label is not None:
            return label
        label = label_value(normalize_path(target))
        if label not in self._known:
            if (
                len(self._known) >= self.max_paths
                or not label.startswith("/")
                or len(label) > self.MAX_LABEL_CHARS
            ):
                label = OTHER_PATH
            else:
                self._known.add(label)
        if len(target) <= self.CACHED_TARGET_CHARS:
            if len(self.cache) >= self.CACHE_LIMIT:
                self.cache.clear()
            self.cache[target] = label
        return label


class AdapterMetrics(Collector):
    """The tallies, and the decoders' `DecoderEvents` (formats/base.py): the updates below
    are all a decoder knows of the metrics."""

    def __init__(self, inputs: Iterable[str], max_paths: int = 100) -> None:
        self.lock = threading.Lock()
        self.path_label = PathLabels(max_paths)
        # (method, status, path label) -> [requests, response bytes]
        self.requests: dict[tuple[str, str, str], list[int]] = {}
        # Per-bucket (not cumulative) counts; the last slot is +Inf.
        self.duration_buckets = [0] * (len(DURATION_BOUNDS_US) + 1)
        self.duration_sum_us = 0
        self.app_records: dict[str, int] = {}
        # input -> [parsed, rejected]; every configured input is exposed from the start.
        self.lines: dict[str, list[int]] = {name: [0, 0] for name in inputs}

    # --- updates: DecoderEvents (caller holds `lock`) ----------------------------------

    def observe_request(
        self, method: str, status: str, target: str | None, size: int, duration_us: int | None
    ) -> None:
        """One request (`DecoderEvents`). Called once per access-log line: the path
        label's cache is looked at here, before the labelling call, for speed."""
        if method not in KNOWN_METHODS:
            method = OTHER_METHOD
        if target is None:
            path = OTHER_PATH
        else:
            labels = self.path_label
            path = labels.cache.get(target) or labels(target)
        key = (method, status, path)
        requests = self.requests
        entry = requests.get(key)
        if entry is None:
            entry = requests[key] = [0, 0]
        entry[0] += 1
        entry[1] += size
        if duration_us is not None:
            self.duration_buckets[bisect_left(DURATION_BOUNDS_US, duration_us)] += 1
            self.duration_sum_us += duration_us

    def observe_app_record(self, severity: str) -> None:
        self.app_records[severity] = self.app_records.get(severity, 0) + 1

    def count_lines(self, input_name: str, parsed: int, rejected: int) -> None:
        entry = self.lines.get(input_name)
        if entry is None:
            entry = self.lines[input_name] = [0, 0]
        entry[0] += parsed
        entry[1] += rejected

    # --- reads ---------------------------------------------------------------------------

    def lines_total(self, input_name: str) -> tuple[int, int]:
        with self.lock:
            parsed, rejected = self.lines.get(input_name, (0, 0))
            return parsed, rejected

    def describe(self) -> Iterator[Metric]:
        return iter(())  # no help-only pre-registration: collect() is cheap

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            requests = {k: tuple(v) for k, v in self.requests.items()}
            buckets = list(self.duration_buckets)
            duration_sum_us = self.duration_sum_us
            app_records = dict(self.app_records)
            lines = {k: tuple(v) for k, v in self.lines.items()}

        by_method_status: dict[tuple[str, str], list[int]] = {}
        by_path: dict[tuple[str, str], int] = {}
        for (method, status, path), (count, size) in requests.items():
            total = by_method_status.setdefault((method, status), [0, 0])
            total[0] += count
            total[1] += size
            path_key = (path, status[0] + "xx")
            by_path[path_key] = by_path.get(path_key, 0) + count

        requests_total = CounterMetricFamily(
            "http_requests_total",
            "HTTP requests seen in the access log.",
            labels=["method", "status"],
        )
        size_total = CounterMetricFamily(
            "http_response_size_bytes_total",
            "Response body bytes from the access log.",
            labels=["method", "status"],
        )
        for (method, status), (count, size) in sorted(by_method_status.items()):
            requests_total.add_metric([method, status], count)
            size_total.add_metric([method, status], size)
        yield requests_total
        yield size_total

        by_path_total = CounterMetricFamily(
            "http_requests_by_path_total",
            "HTTP requests by normalised path and status class (bounded path set).",
            labels=["path", "status_class"],
        )
        for (path, status_class), count in sorted(by_path.items()):
            by_path_total.add_metric([path, status_class], count)
        yield by_path_total

        cumulative: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*DURATION_BUCKETS, float("inf")), buckets, strict=True):
            running += count
            cumulative.append((_le(bound), running))
        histogram = HistogramMetricFamily(
            "http_request_duration_seconds",
            "Request duration from the access log (Apache %D).",
        )
        histogram.add_metric([], cumulative, duration_sum_us / 1_000_000)
        yield histogram

        app_total = CounterMetricFamily(
            "app_log_records_total",
            "Application log records by severity (OpenTelemetry short name).",
            labels=["severity"],
        )
        for severity, count in sorted(app_records.items()):
            app_total.add_metric([severity], count)
        yield app_total

        lines_total = CounterMetricFamily(
            "adapter_lines_total",
            "Lines read per input: parsed + rejected = read.",
            labels=["input", "result"],
        )
        for name, (parsed, rejected) in sorted(lines.items()):
            lines_total.add_metric([name, "parsed"], parsed)
            lines_total.add_metric([name, "rejected"], rejected)
        yield lines_total


def _le(bound: float) -> Any:
    return "+Inf" if bound == float("inf") else repr(bound)
