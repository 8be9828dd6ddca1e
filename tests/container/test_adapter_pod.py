"""The adapter pattern in real containers built from images/: a legacy-app + log-adapter pod
sharing a log volume and a network namespace.

The pod is started once for the module; each test checks one thing a user relies on: the
adapter reads the app's files through the shared volume (every line accounted for, the
records on its stdout), the app reaches the adapter's metrics on localhost, and the
adapter can read the app's logs but never change them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.container.conftest import PodContainer, Pods

LOG_DIR = "/var/log/app"
ACCESS_LOG = f"{LOG_DIR}/access.log"
APP_LOG = f"{LOG_DIR}/app.log"


@dataclass
class AdapterPod:
    app: PodContainer
    adapter: PodContainer
    pods: Pods


def ok(container: PodContainer, url: str) -> bool:
    return container.running() and container.http_get(url)[0] == 200


def samples(app: PodContainer) -> dict[tuple[str, tuple], float]:
    """The adapter's metrics, fetched from the APP container: the adapter is on its
    localhost."""
    status, body = app.http_get("http://localhost:9103/metrics")
    assert status == 200, body
    found = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def line_count(container: PodContainer, path: str) -> int:
    code, out = container.python(f"print(open({path!r}, 'rb').read().count(b'\\n'))")
    assert code == 0, out
    return int(out)


@pytest.fixture(scope="module")
def pod(images: dict[str, str], pods: Pods) -> AdapterPod:
    made = pods.new("adapter")
    logs = made.volume("logs")
    state = made.volume("state")
    app = made.start("main", images["legacy-app"],
                     env={"LEGACY_APP_PORT": "8080", "LEGACY_APP_LOG_DIR": LOG_DIR},
                     mounts={logs: LOG_DIR})
    adapter = made.start(
        "adapter", images["log-adapter"],
        env={"ADAPTER_INPUTS": f"combined={ACCESS_LOG},legacy={APP_LOG}",
             "ADAPTER_STATE_DIR": "/var/lib/log-adapter", "ADAPTER_HTTP_PORT": "9103",
             "ADAPTER_MULTILINE_FLUSH_SECONDS": "0.5", "OTEL_SERVICE_NAME": "legacy-app"},
        # Read-only, as in the k8s manifest: the adapter never changes the app's files.
        mounts={logs: f"{LOG_DIR}:ro", state: "/var/lib/log-adapter"},
    )
    pods.eventually(lambda: ok(app, "http://127.0.0.1:8080/healthz"), "the legacy app")
    pods.eventually(lambda: ok(adapter, "http://127.0.0.1:9103/readyz"), "the adapter")
    status, body = app.http_get("http://127.0.0.1:8080/traffic?n=60", timeout=60)
    assert status == 200, body
    for _ in range(2):
        assert app.http_get("http://127.0.0.1:8080/checkout?fail=1")[0] == 500
    return AdapterPod(app, adapter, pods)


def test_the_app_reaches_the_adapters_metrics_on_localhost(pod: AdapterPod) -> None:
    found = samples(pod.app)
    assert ("adapter_lines_total", (("input", ACCESS_LOG), ("result", "parsed"))) in found
    assert found[("service_info", (("service", "log-adapter"),))] == 1


def test_every_line_of_the_apps_access_log_is_accounted_for(pod: AdapterPod) -> None:
    def all_counted() -> bool:
        written = line_count(pod.app, ACCESS_LOG)
        found = samples(pod.app)
        parsed = found[("adapter_lines_total", (("input", ACCESS_LOG), ("result", "parsed")))]
        rejected = found[("adapter_lines_total", (("input", ACCESS_LOG), ("result", "rejected")))]
        requests = sum(v for (name, _), v in found.items() if name == "http_requests_total")
        return written >= 63 and parsed == written == requests and rejected == 0

    pod.pods.eventually(all_counted, "the adapter to count every access-log line")
    found = samples(pod.app)
    assert found[("http_requests_total", (("method", "GET"), ("status", "404")))] >= 10
    checkout_5xx = ("http_requests_by_path_total", (("path", "/checkout"), ("status_class", "5xx")))
    assert found[checkout_5xx] >= 2


def test_tracebacks_become_one_record_each_on_the_adapters_stdout(pod: AdapterPod) -> None:
    def error_records() -> list[dict]:
        records = [json.loads(line) for line in pod.adapter.logs().splitlines()
                   if line.startswith("{") and '"observed_timestamp"' in line]
        return [r for r in records if "exception.type" in r["attributes"]]

    errors = pod.pods.eventually(lambda: len(error_records()) >= 2 and error_records(),
                                 "two traceback records")
    assert all(r["attributes"]["exception.type"].endswith("PaymentDeclined") for r in errors)
    assert all(r["resource"] == {"service.name": "legacy-app"} for r in errors)
    assert all(r["attributes"]["log.file.path"] == APP_LOG for r in errors)
    found = samples(pod.app)
    assert found[("app_log_records_total", (("severity", "ERROR"),))] >= 2


def test_the_adapter_reads_the_apps_logs_but_cannot_change_them(pod: AdapterPod) -> None:
    code, out = pod.adapter.python(
        f"import os; print(os.getuid(), len(open({ACCESS_LOG!r}).read()) > 0)\n"
        f"try:\n    open({ACCESS_LOG!r}, 'a')\nexcept OSError as e:\n    print('denied', e.errno)"
    )
    assert code == 0, out
    assert out.split() == ["10001", "True", "denied", "30"]  # EROFS
