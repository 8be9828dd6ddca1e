"""The adapter pattern on a real cluster: k8s/adapter/kind applied with kustomize, then the
promises the podman tier checks too, with the same code (tests/pod_assertions.py), through
`kubectl exec` inside the pod: one file seen by both containers, read-only for the
adapter, the adapter's metrics on the app container's localhost, every access-log line
accounted for, tracebacks as single records on the adapter's stdout, and the hardening.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests import pod_assertions as check
from tests.kind.conftest import (
    Cluster,
    Deployed,
    RunningContainer,
    eventually,
    find,
)
from tests.pod_assertions import Exec

TRAFFIC_REQUESTS = 60
FAILED_CHECKOUTS = 2


@dataclass
class AdapterOnKind:
    cluster: Cluster
    app: RunningContainer
    adapter: RunningContainer
    access_log: str  # as the app writes it
    adapter_access_log: str  # the same file, where the adapter mounts it
    app_log: str

    def exec(self, where: RunningContainer) -> Exec:
        return self.cluster.exec_in(where)

    @property
    def metrics_url(self) -> str:
        """The adapter's metrics, as the APP container reaches them: on its localhost."""
        return f"http://localhost:{self.adapter.env('ADAPTER_HTTP_PORT', '9103')}/metrics"


def inputs_of(adapter: RunningContainer) -> dict[str, str]:
    """ADAPTER_INPUTS as {format: path}."""
    pairs = [item.split("=", 1) for item in adapter.env("ADAPTER_INPUTS", "").split(",") if item]
    return {fmt.strip(): path.strip() for fmt, path in pairs}


@pytest.fixture(scope="module")
def adapter_pod(kind_cluster: Cluster, deploy) -> AdapterOnKind:
    deployed: Deployed = deploy("adapter")
    app, adapter = find(kind_cluster, deployed, "legacy-app", "log-adapter")
    log_dir = app.env("LEGACY_APP_LOG_DIR", "/var/log/app")
    shared = [mount["name"] for mount in app.spec.get("volumeMounts", [])
              if mount["mountPath"] == log_dir]
    assert shared, f"the legacy app's log dir {log_dir} is not on a volume"
    adapter_dir = adapter.mount_of(shared[0])
    assert adapter_dir, f"the adapter does not mount the app's log volume {shared[0]}"
    inputs = inputs_of(adapter)
    assert set(inputs) >= {"combined", "legacy"}, inputs
    pod = AdapterOnKind(kind_cluster, app, adapter,
                        access_log=inputs["combined"].replace(adapter_dir, log_dir, 1),
                        adapter_access_log=inputs["combined"],
                        app_log=inputs["legacy"])
    port = app.env("LEGACY_APP_PORT", "8080")
    status, body = check.http_get(pod.exec(app), f"http://127.0.0.1:{port}/traffic?n="
                                  f"{TRAFFIC_REQUESTS}", timeout=60)
    assert status == 200, body
    for _ in range(FAILED_CHECKOUTS):
        status, body = check.http_get(pod.exec(app), f"http://127.0.0.1:{port}/checkout?fail=1",
                                      timeout=10)
        assert status == 500, body
    return pod


def test_app_and_adapter_see_the_same_file_on_the_shared_volume(adapter_pod) -> None:
    pod = adapter_pod
    check.assert_same_file(pod.exec(pod.app), pod.access_log, pod.exec(pod.adapter),
                           pod.adapter_access_log)


def test_the_app_reaches_the_adapters_metrics_on_localhost(adapter_pod) -> None:
    found = check.metric_samples(adapter_pod.exec(adapter_pod.app), adapter_pod.metrics_url)
    parsed = ("adapter_lines_total",
              (("input", adapter_pod.adapter_access_log), ("result", "parsed")))
    assert parsed in found, sorted(name for name, _ in found)
    assert found[("service_info", (("service", "log-adapter"),))] == 1


def test_every_line_of_the_apps_access_log_is_accounted_for(adapter_pod) -> None:
    # The kubelet's probes are requests too and keep adding lines: the check reads the
    # count first, and is polled until no line arrived between its two reads.
    pod = adapter_pod
    app = pod.exec(pod.app)
    eventually(lambda: check.every_access_line_counted(
        app, pod.access_log, app, pod.metrics_url, pod.adapter_access_log,
        at_least=TRAFFIC_REQUESTS + FAILED_CHECKOUTS),
        "the adapter to count every access-log line")
    found = check.metric_samples(app, pod.metrics_url)
    checkout_5xx = ("http_requests_by_path_total",
                    (("path", "/checkout"), ("status_class", "5xx")))
    assert found[checkout_5xx] >= FAILED_CHECKOUTS


def test_tracebacks_become_one_record_each_on_the_adapters_stdout(adapter_pod) -> None:
    pod = adapter_pod
    errors = eventually(
        lambda: (found := check.traceback_records(pod.cluster.logs(pod.adapter)))
        and len(found) >= FAILED_CHECKOUTS and found,
        f"{FAILED_CHECKOUTS} traceback records")
    check.assert_tracebacks_are_single_records(
        errors, FAILED_CHECKOUTS, pod.adapter.env("OTEL_SERVICE_NAME", "legacy-app"),
        pod.app_log)
    found = check.metric_samples(pod.exec(pod.app), pod.metrics_url)
    assert found[("app_log_records_total", (("severity", "ERROR"),))] >= FAILED_CHECKOUTS


def test_the_adapter_reads_the_apps_logs_but_cannot_change_them(adapter_pod) -> None:
    check.assert_reads_but_cannot_write(adapter_pod.exec(adapter_pod.adapter),
                                        adapter_pod.adapter_access_log)


def test_every_container_runs_as_uid_10001_on_a_read_only_root(adapter_pod) -> None:
    for where in (adapter_pod.app, adapter_pod.adapter):
        check.assert_hardened(adapter_pod.exec(where), where.name)
