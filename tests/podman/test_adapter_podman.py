"""The adapter pattern's manifests (k8s/adapter) played by podman: the promises the kind
tier checks on a cluster, checked with `podman exec` inside the pod podman runs: one file
seen by both containers, read-only for the adapter, the adapter's metrics on the app's
localhost, every access-log line accounted for, tracebacks as single records on the
adapter's stdout, and the hardening.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests import pod_assertions as check
from tests.podman.conftest import PlayedPattern, Running, eventually

TRAFFIC_REQUESTS = 60
FAILED_CHECKOUTS = 2


@dataclass
class AdapterOnPodman:
    app: Running
    adapter: Running
    access_log: str  # as the app writes it
    adapter_access_log: str  # the same file, where the adapter mounts it
    app_log: str

    @property
    def metrics_url(self) -> str:
        return f"http://localhost:{self.adapter.env('ADAPTER_HTTP_PORT', '9103')}/metrics"


@pytest.fixture(scope="module")
def adapter_pod(play: Callable[..., PlayedPattern]) -> AdapterOnPodman:
    app, adapter = play("adapter").find("legacy-app", "log-adapter")
    log_dir = app.env("LEGACY_APP_LOG_DIR", "/var/log/app")
    shared = [m["name"] for m in app.item.spec.get("volumeMounts", [])
              if m["mountPath"] == log_dir]
    assert shared, f"the legacy app's log dir {log_dir} is not on a volume"
    adapter_dir = adapter.mount_of(shared[0])
    assert adapter_dir, f"the adapter does not mount the app's log volume {shared[0]}"
    pairs = [item.split("=", 1) for item in adapter.env("ADAPTER_INPUTS", "").split(",") if item]
    inputs = {fmt.strip(): path.strip() for fmt, path in pairs}
    assert set(inputs) >= {"combined", "legacy"}, inputs
    pod = AdapterOnPodman(app, adapter,
                          access_log=inputs["combined"].replace(adapter_dir, log_dir, 1),
                          adapter_access_log=inputs["combined"], app_log=inputs["legacy"])
    port = app.env("LEGACY_APP_PORT", "8080")
    status, body = check.http_get(app.exec, f"http://127.0.0.1:{port}/traffic?n="
                                  f"{TRAFFIC_REQUESTS}", timeout=60)
    assert status == 200, body
    for _ in range(FAILED_CHECKOUTS):
        status, body = check.http_get(app.exec, f"http://127.0.0.1:{port}/checkout?fail=1")
        assert status == 500, body
    return pod


def test_app_and_adapter_see_the_same_file_on_the_shared_volume(adapter_pod) -> None:
    check.assert_same_file(adapter_pod.app.exec, adapter_pod.access_log,
                           adapter_pod.adapter.exec, adapter_pod.adapter_access_log)


def test_the_adapter_reads_the_apps_logs_but_cannot_change_them(adapter_pod) -> None:
    check.assert_reads_but_cannot_write(adapter_pod.adapter.exec,
                                        adapter_pod.adapter_access_log)


def test_the_app_reaches_the_adapters_metrics_on_localhost(adapter_pod) -> None:
    found = check.metric_samples(adapter_pod.app.exec, adapter_pod.metrics_url)
    parsed = ("adapter_lines_total",
              (("input", adapter_pod.adapter_access_log), ("result", "parsed")))
    assert parsed in found, sorted(name for name, _ in found)
    assert found[("service_info", (("service", "log-adapter"),))] == 1


def test_every_line_of_the_apps_access_log_is_accounted_for(adapter_pod) -> None:
    pod = adapter_pod
    eventually(lambda: check.every_access_line_counted(
        pod.app.exec, pod.access_log, pod.app.exec, pod.metrics_url, pod.adapter_access_log,
        at_least=TRAFFIC_REQUESTS + FAILED_CHECKOUTS),
        "the adapter to count every access-log line")
    found = check.metric_samples(pod.app.exec, pod.metrics_url)
    checkout_5xx = ("http_requests_by_path_total",
                    (("path", "/checkout"), ("status_class", "5xx")))
    assert found[checkout_5xx] >= FAILED_CHECKOUTS


def test_tracebacks_become_one_record_each_on_the_adapters_stdout(adapter_pod) -> None:
    adapter = adapter_pod.adapter
    errors = eventually(lambda: (found := check.traceback_records(adapter.logs()))
                        and len(found) >= FAILED_CHECKOUTS and found,
                        f"{FAILED_CHECKOUTS} traceback records")
    check.assert_tracebacks_are_single_records(
        errors, FAILED_CHECKOUTS, adapter.env("OTEL_SERVICE_NAME", "legacy-app"),
        adapter_pod.app_log)
    found = check.metric_samples(adapter_pod.app.exec, adapter_pod.metrics_url)
    assert found[("app_log_records_total", (("severity", "ERROR"),))] >= FAILED_CHECKOUTS


def test_every_container_runs_as_uid_10001_on_a_read_only_root(adapter_pod) -> None:
    for where in (adapter_pod.app, adapter_pod.adapter):
        check.assert_hardened(where.exec, where.name)
