"""For a generated log whose tallies are computed independently (tests.loggen),
every metric in the exposition equals the count computed from the input."""

from __future__ import annotations

from itertools import accumulate

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from patterns.adapter.log_adapter.formats import Context, new_decoder
from patterns.adapter.log_adapter.metrics import (
    DURATION_BUCKETS,
    OTHER_PATH,
    AdapterMetrics,
    PathLabels,
    normalize_path,
)
from tests import loggen


def scrape(metrics: AdapterMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(metrics)
    samples = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def feed(fmt: str, lines: list[str], emit: bool, chunk: int = 1000) -> AdapterMetrics:
    metrics = AdapterMetrics(["in"])
    decoder = new_decoder(fmt, Context("in", metrics, emit, {}), "/var/log/app/x.log")
    for start in range(0, len(lines), chunk):
        decoder.feed(lines[start : start + chunk], "2026-11-25T12:00:00.000Z")
    decoder.flush("2026-11-25T12:00:00.000Z")
    return metrics


@pytest.mark.parametrize("emit", [True, False])
def test_combined_metrics_equal_the_counts_of_the_input(emit: bool) -> None:
    lines, expected = loggen.combined_lines(20_000, seed=7, malformed_every=97)
    samples = scrape(feed("combined", lines, emit))

    assert (
        samples[("adapter_lines_total", (("input", "in"), ("result", "parsed")))] == expected.parsed
    )
    assert (
        samples[("adapter_lines_total", (("input", "in"), ("result", "rejected")))]
        == expected.rejected
    )
    assert expected.parsed + expected.rejected == len(lines)

    requests = {
        (dict(labels)["method"], dict(labels)["status"]): value
        for (name, labels), value in samples.items()
        if name == "http_requests_total"
    }
    assert requests == dict(expected.requests)
    sizes = {
        (dict(labels)["method"], dict(labels)["status"]): value
        for (name, labels), value in samples.items()
        if name == "http_response_size_bytes_total"
    }
    assert sizes == dict(expected.response_bytes)

    cumulative = list(accumulate(expected.duration_buckets))
    for bound, count in zip((*DURATION_BUCKETS, float("inf")), cumulative, strict=True):
        le = "+Inf" if bound == float("inf") else repr(bound)
        assert samples[("http_request_duration_seconds_bucket", (("le", le),))] == count
    assert samples[("http_request_duration_seconds_count", ())] == expected.parsed
    assert samples[("http_request_duration_seconds_sum", ())] == pytest.approx(
        expected.duration_sum_us / 1e6
    )

    by_path = {
        (dict(labels)["path"], dict(labels)["status_class"]): value
        for (name, labels), value in samples.items()
        if name == "http_requests_by_path_total"
    }
    assert by_path == dict(expected.by_path)
    assert sum(by_path.values()) == expected.parsed
    # The generator's variety reaches every label rule: folded ids, a path that never
    # fails, requests without a request line, methods outside the known set.
    assert {"/orders/:id", "/healthz", "_other"} <= {path for path, _ in by_path}
    assert ("/healthz", "5xx") not in by_path
    assert ("_OTHER", "408") in requests


def test_app_log_records_by_severity_equal_the_input() -> None:
    lines, expected = loggen.legacy_lines(3_000, seed=3)
    samples = scrape(feed("legacy", lines, emit=False, chunk=77))
    by_severity = {
        dict(labels)["severity"]: value
        for (name, labels), value in samples.items()
        if name == "app_log_records_total"
    }
    assert by_severity == dict(expected.app_records)
    assert (
        samples[("adapter_lines_total", (("input", "in"), ("result", "parsed")))] == expected.parsed
    )
    assert samples[("adapter_lines_total", (("input", "in"), ("result", "rejected")))] == 1


def test_configured_inputs_are_exposed_before_any_line() -> None:
    samples = scrape(AdapterMetrics(["/var/log/app/access.log"]))
    key = ("adapter_lines_total", (("input", "/var/log/app/access.log"), ("result", "rejected")))
    assert samples[key] == 0


def test_path_labels_fold_ids_and_stay_bounded() -> None:
    assert normalize_path("/orders/4242?expand=1") == "/orders/:id"
    assert normalize_path("/u/3f2504e0-4f89-11d3-9a0c-0305e82c3301/x") == "/u/:id/x"
    labels = PathLabels(max_paths=3)
    assert labels("/a") == "/a"
    assert labels("/b/1") == "/b/:id"
    assert labels("/c") == "/c"
    assert labels("/d") == OTHER_PATH  # a fourth distinct path: bounded
    assert labels("/b/2?x") == "/b/:id"  # known ones keep their label
    assert labels("*") == OTHER_PATH


def test_unknown_methods_share_one_label() -> None:
    line = '1.2.3.4 - - [25/Nov/2026:12:00:00 +0000] "{} / HTTP/1.1" 200 1 "-" "-" 5'
    lines = [line.format(m) for m in ("FOO", "BAR", "get", "GET")]
    samples = scrape(feed("combined", lines, emit=True))
    methods = {
        dict(labels)["method"] for (name, labels) in samples if name == "http_requests_total"
    }
    assert methods == {"_OTHER", "GET"}


def test_only_ascii_digits_make_a_status_or_a_size() -> None:
    line = '1.2.3.4 - - [25/Nov/2026:12:00:00 +0000] "GET / HTTP/1.1" {} {} "-" "-" 5'
    # Arabic-Indic digits: Python's \d takes them, int() reads them; Apache never writes them.
    lines = [line.format(status, size) for status, size in
             (("5\u0660\u0660", "1"), ("200", "\u0661"), ("200", "1"))]
    samples = scrape(feed("combined", lines, emit=False))
    statuses = {dict(labels)["status"] for name, labels in samples if name == "http_requests_total"}
    assert statuses == {"200"}
    assert samples[("adapter_lines_total", (("input", "in"), ("result", "rejected")))] == 2


def test_json_and_regex_records_feed_the_same_metrics() -> None:
    """A record with semantic-convention HTTP attributes is a request, whatever its format;
    any other record counts as an application log record."""
    lines = [
        '{"http.request.method": "GET", "http.response.status_code": 503, "url.path": "/a/7",'
        ' "http.response.body.size": 10, "http.server.request.duration": 0.02}',
        '{"http.request.method": "PURGE", "http.response.status_code": 200}',
        '{"level": "error", "message": "boom"}',
        '{"message": "no level"}',
        "not json",
    ]
    samples = scrape(feed("json", lines, emit=False))
    assert samples[("http_requests_total", (("method", "GET"), ("status", "503")))] == 1
    assert samples[("http_requests_total", (("method", "_OTHER"), ("status", "200")))] == 1
    assert samples[("http_response_size_bytes_total", (("method", "GET"), ("status", "503")))] == 10
    assert (
        samples[("http_requests_by_path_total", (("path", "/a/:id"), ("status_class", "5xx")))] == 1
    )
    assert samples[("http_request_duration_seconds_bucket", (("le", "0.025"),))] == 1
    assert samples[("http_request_duration_seconds_bucket", (("le", "0.01"),))] == 0
    assert samples[("app_log_records_total", (("severity", "ERROR"),))] == 1
    assert samples[("app_log_records_total", (("severity", "UNSPECIFIED"),))] == 1
    assert samples[("adapter_lines_total", (("input", "in"), ("result", "rejected")))] == 1
