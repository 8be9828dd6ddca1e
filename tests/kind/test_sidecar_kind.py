"""The sidecar pattern on a real cluster: k8s/sidecar/kind applied with kustomize, then the
promises the podman tier checks too, with the same code (tests/pod_assertions.py), through
`kubectl exec` inside the pods; and what only a cluster shows: the Job completing once its
native sidecar has shipped every line.

Nothing here assumes object names: the pod under test is the Deployment's that runs both
podpatterns/web-app and podpatterns/log-shipper (preferring the native-sidecar variant),
and the collector the pod running podpatterns/log-collector.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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

TRAFFIC_LINES = 200


@dataclass
class SidecarOnKind:
    cluster: Cluster
    deployed: Deployed
    app: RunningContainer
    shipper: RunningContainer
    collector: RunningContainer
    app_log_dir: str
    shipper_log_dir: str

    def exec(self, where: RunningContainer) -> Exec:
        return self.cluster.exec_in(where)

    @property
    def counts_url(self) -> str:
        return f"http://127.0.0.1:{self.collector.env('COLLECTOR_HTTP_PORT', '8081')}/api/counts"

    def collector_tags(self) -> dict[str, int]:
        return check.collector_tags(self.exec(self.collector), self.counts_url)


@pytest.fixture(scope="module")
def sidecar(kind_cluster: Cluster, deploy: Callable[[str], Deployed]) -> SidecarOnKind:
    deployed = deploy("sidecar")
    app, shipper = find(kind_cluster, deployed, "web-app", "log-shipper")
    (collector,) = find(kind_cluster, deployed, "log-collector")
    app_log_dir = app.env("WEB_APP_LOG_DIR", "/var/log/app")
    shared = [mount["name"] for mount in app.spec.get("volumeMounts", [])
              if mount["mountPath"] == app_log_dir]
    assert shared, f"the web app's log dir {app_log_dir} is not on a volume"
    shipper_log_dir = shipper.mount_of(shared[0])
    assert shipper_log_dir, f"the shipper does not mount the app's log volume {shared[0]}"
    return SidecarOnKind(kind_cluster, deployed, app, shipper, collector, app_log_dir,
                         shipper_log_dir)


@pytest.fixture(scope="module")
def traffic(sidecar: SidecarOnKind) -> dict[str, Any]:
    port = sidecar.app.env("WEB_APP_PORT", "8080")
    status, body = check.http_get(sidecar.exec(sidecar.app),
                                  f"http://127.0.0.1:{port}/traffic?n={TRAFFIC_LINES}",
                                  timeout=30)
    assert status == 200, body
    return dict(json.loads(body))


def test_app_and_shipper_see_the_same_file_on_the_shared_volume(
    sidecar: SidecarOnKind, traffic: dict[str, Any]
) -> None:
    check.assert_same_file(sidecar.exec(sidecar.app), f"{sidecar.app_log_dir}/access.log",
                           sidecar.exec(sidecar.shipper),
                           f"{sidecar.shipper_log_dir}/access.log")


def test_the_shipper_reads_the_apps_logs_but_cannot_change_them(
    sidecar: SidecarOnKind, traffic: dict[str, Any]
) -> None:
    check.assert_reads_but_cannot_write(sidecar.exec(sidecar.shipper),
                                        f"{sidecar.shipper_log_dir}/access.log")


def test_app_reaches_the_shipper_admin_port_on_localhost(sidecar: SidecarOnKind) -> None:
    port = sidecar.shipper.env("SHIPPER_HTTP_PORT", "9102")
    status, body = check.http_get(sidecar.exec(sidecar.app), f"http://localhost:{port}/healthz")
    assert status == 200, body


def test_every_container_runs_as_uid_10001_on_a_read_only_root(sidecar: SidecarOnKind) -> None:
    for where in (sidecar.app, sidecar.shipper, sidecar.collector):
        check.assert_hardened(sidecar.exec(where), where.name)


def test_every_line_reaches_the_collector_once(sidecar: SidecarOnKind,
                                               traffic: dict[str, Any]) -> None:
    """Every line the app logged, under the native sidecar's own tag (the collector's total
    also counts the classic variant's and the Job's), none lost and none twice. The
    kubelet's probes keep adding lines: the check reads the files first and is polled until
    no line arrived between its two reads."""
    tag = sidecar.shipper.env("FLUENT_TAG", "")
    assert tag, "the shipper has no FLUENT_TAG"
    eventually(lambda: check.every_line_collected_once(
        sidecar.exec(sidecar.app), f"{sidecar.app_log_dir}/access.log*",
        sidecar.exec(sidecar.collector), sidecar.counts_url, tag, at_least=TRAFFIC_LINES),
        f"the collector to hold every line of tag {tag}, once")


def test_the_job_completes_and_its_native_sidecar_shipped_every_line(
    sidecar: SidecarOnKind,
) -> None:
    """Kubernetes stops a Job's native sidecar once `main` exits; the shipper drains first,
    so the collector holds exactly the lines the batch wrote, and the Job completes."""
    jobs = [doc for doc in sidecar.deployed.documents if doc.get("kind") == "Job"]
    assert jobs, "the sidecar overlay has no Job"
    for job in jobs:
        namespace, name = job["metadata"].get("namespace", "default"), job["metadata"]["name"]
        spec = job["spec"]["template"]["spec"]
        main = next(c for c in spec["containers"] if "podpatterns/web-app:" in c["image"])
        lines = int(main["args"][main["args"].index("--lines") + 1])
        shipper = next(c for c in spec.get("initContainers", [])
                       if "podpatterns/log-shipper:" in c["image"])
        assert shipper.get("restartPolicy") == "Always", "the Job's shipper is not native"
        tag = RunningContainer(namespace, "", shipper["name"], shipper).env("FLUENT_TAG", "")
        sidecar.cluster.kubectl("-n", namespace, "wait", "--for=condition=complete",
                                f"job/{name}", "--timeout=300s")
        # Complete means the sidecar has exited too, so the count is final: exactly the
        # lines written, none lost, none twice.
        stored = sidecar.collector_tags().get(tag, 0)
        assert stored == lines, f"job {name}: {stored} records of tag {tag} for {lines} lines"
