"""The adapter pattern on a real cluster: k8s/adapter/kind applied with kustomize, then the
promises of the container tier (tests/container/test_adapter_pod.py), checked with
`kubectl exec` inside the pod: one file seen by both containers, the adapter's metrics on
the app container's localhost, every access-log line accounted for, tracebacks as single
records on the adapter's stdout, and the hardening.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.kind.conftest import (
    Cluster,
    Deployed,
    RunningContainer,
    assert_hardened,
    eventually,
    find,
)

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

    def app_get(self, url: str, timeout: float = 10.0) -> tuple[int, str]:
        return self.cluster.http_get(self.app.namespace, self.app.pod, self.app.name, url,
                                     timeout=timeout)


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
    status, body = pod.app_get(f"http://127.0.0.1:{port}/traffic?n={TRAFFIC_REQUESTS}",
                               timeout=60)
    assert status == 200, body
    for _ in range(FAILED_CHECKOUTS):
        status, body = pod.app_get(f"http://127.0.0.1:{port}/checkout?fail=1")
        assert status == 500, body
    return pod


def samples(pod: AdapterOnKind) -> dict[tuple[str, tuple], float]:
    """The adapter's metrics, fetched from the APP container: the adapter is on its
    localhost."""
    port = pod.adapter.env("ADAPTER_HTTP_PORT", "9103")
    status, body = pod.app_get(f"http://localhost:{port}/metrics")
    assert status == 200, body
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def test_app_and_adapter_see_the_same_file_on_the_shared_volume(adapter_pod) -> None:
    identities = []
    for where, path in ((adapter_pod.app, adapter_pod.access_log),
                        (adapter_pod.adapter, adapter_pod.adapter_access_log)):
        exit_code, output = adapter_pod.cluster.python(
            where.namespace, where.pod, where.name,
            f"import os; st = os.stat({path!r}); print(st.st_dev, st.st_ino, st.st_size)")
        assert exit_code == 0, output
        identities.append(output.split())
    (app_dev, app_ino, app_size), (adapter_dev, adapter_ino, _) = identities
    assert (app_dev, app_ino) == (adapter_dev, adapter_ino)
    assert int(app_size) > 0


def test_the_app_reaches_the_adapters_metrics_on_localhost(adapter_pod) -> None:
    found = samples(adapter_pod)
    parsed = ("adapter_lines_total",
              (("input", adapter_pod.adapter_access_log), ("result", "parsed")))
    assert parsed in found, sorted(name for name, _ in found)
    assert found[("service_info", (("service", "log-adapter"),))] == 1


def test_every_line_of_the_apps_access_log_is_accounted_for(adapter_pod) -> None:
    app = adapter_pod.app
    path = adapter_pod.adapter_access_log

    def written() -> int:
        exit_code, output = adapter_pod.cluster.python(
            app.namespace, app.pod, app.name,
            f"print(open({adapter_pod.access_log!r}, 'rb').read().count(b'\\n'))")
        assert exit_code == 0, output
        return int(output)

    def all_counted() -> bool:
        # The kubelet's probes are requests too and keep adding lines: read the count
        # first, and retry until no line arrived between the two reads.
        lines = written()
        found = samples(adapter_pod)
        parsed = found.get(("adapter_lines_total", (("input", path), ("result", "parsed"))))
        rejected = found.get(("adapter_lines_total", (("input", path), ("result", "rejected"))))
        requests = sum(v for (name, _), v in found.items() if name == "http_requests_total")
        return (lines >= TRAFFIC_REQUESTS + FAILED_CHECKOUTS and parsed == lines == requests
                and rejected == 0)

    eventually(all_counted, "the adapter to count every access-log line")
    found = samples(adapter_pod)
    checkout_5xx = ("http_requests_by_path_total",
                    (("path", "/checkout"), ("status_class", "5xx")))
    assert found[checkout_5xx] >= FAILED_CHECKOUTS


def test_tracebacks_become_one_record_each_on_the_adapters_stdout(adapter_pod) -> None:
    adapter = adapter_pod.adapter

    def error_records() -> list[dict]:
        logs = adapter_pod.cluster.kubectl("-n", adapter.namespace, "logs", adapter.pod,
                                           "-c", adapter.name, timeout=60).stdout
        records = [json.loads(line) for line in logs.splitlines()
                   if line.startswith("{") and '"observed_timestamp"' in line]
        return [r for r in records if "exception.type" in r["attributes"]]

    errors = eventually(lambda: len(error_records()) >= FAILED_CHECKOUTS and error_records(),
                        f"{FAILED_CHECKOUTS} traceback records")
    assert all(r["attributes"]["exception.type"].endswith("PaymentDeclined") for r in errors)
    service_name = adapter.env("OTEL_SERVICE_NAME", "legacy-app")
    assert all(r["resource"] == {"service.name": service_name} for r in errors)
    assert all(r["attributes"]["log.file.path"] == adapter_pod.app_log for r in errors)
    found = samples(adapter_pod)
    assert found[("app_log_records_total", (("severity", "ERROR"),))] >= FAILED_CHECKOUTS


def test_the_adapter_reads_the_apps_logs_but_cannot_change_them(adapter_pod) -> None:
    adapter, path = adapter_pod.adapter, adapter_pod.adapter_access_log
    exit_code, output = adapter_pod.cluster.python(
        adapter.namespace, adapter.pod, adapter.name,
        f"import os; print(len(open({path!r}).read()) > 0)\n"
        f"try:\n    open({path!r}, 'a')\nexcept OSError as e:\n    print('denied', e.errno)")
    assert exit_code == 0, output
    assert output.split() == ["True", "denied", "30"]  # EROFS


def test_every_container_runs_as_uid_10001_on_a_read_only_root(adapter_pod) -> None:
    for where in (adapter_pod.app, adapter_pod.adapter):
        assert_hardened(adapter_pod.cluster, where)
