"""The sidecar pattern on a real cluster: k8s/sidecar/kind applied with kustomize, then the
same promises as the container tier, checked with `kubectl exec` inside the pods.

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

from tests.kind.conftest import (
    Cluster,
    Deployed,
    RunningContainer,
    assert_hardened,
    eventually,
    find,
)

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
    status, body = sidecar.cluster.http_get(
        sidecar.app.namespace, sidecar.app.pod, sidecar.app.name,
        f"http://127.0.0.1:{port}/traffic?n={TRAFFIC_LINES}", timeout=30)
    assert status == 200, body
    return dict(json.loads(body))


def file_identity(sidecar: SidecarOnKind, where: RunningContainer, path: str) -> dict:
    code = (
        "import json, os, sys\n"
        f"st = os.stat({path!r})\n"
        "json.dump({'ino': st.st_ino, 'dev': st.st_dev, 'size': st.st_size}, sys.stdout)\n"
    )
    exit_code, output = sidecar.cluster.python(where.namespace, where.pod, where.name, code)
    assert exit_code == 0, output
    return dict(json.loads(output))


def collector_counts(sidecar: SidecarOnKind) -> dict[str, Any]:
    """The collector's /api/counts: {"tags": {tag: records}, "total": records}."""
    port = sidecar.collector.env("COLLECTOR_HTTP_PORT", "8081")
    status, body = sidecar.cluster.http_get(
        sidecar.collector.namespace, sidecar.collector.pod, sidecar.collector.name,
        f"http://127.0.0.1:{port}/api/counts")
    assert status == 200, body
    return dict(json.loads(body))


def test_app_and_shipper_see_the_same_file_on_the_shared_volume(
    sidecar: SidecarOnKind, traffic: dict[str, Any]
) -> None:
    # The app keeps writing (kubelet probes are logged too), so compare the file's
    # identity, not its size.
    in_app = file_identity(sidecar, sidecar.app, f"{sidecar.app_log_dir}/access.log")
    in_shipper = file_identity(sidecar, sidecar.shipper,
                               f"{sidecar.shipper_log_dir}/access.log")
    assert (in_app["ino"], in_app["dev"]) == (in_shipper["ino"], in_shipper["dev"])
    assert in_app["size"] > 0


def test_app_reaches_the_shipper_admin_port_on_localhost(sidecar: SidecarOnKind) -> None:
    port = sidecar.shipper.env("SHIPPER_HTTP_PORT", "9102")
    status, body = sidecar.cluster.http_get(sidecar.app.namespace, sidecar.app.pod,
                                            sidecar.app.name, f"http://localhost:{port}/healthz")
    assert status == 200, body


def test_every_container_runs_as_uid_10001_on_a_read_only_root(sidecar: SidecarOnKind) -> None:
    for where in (sidecar.app, sidecar.shipper, sidecar.collector):
        assert_hardened(sidecar.cluster, where)
        exit_code, output = sidecar.cluster.python(where.namespace, where.pod, where.name,
                                                   "open('/opt/venv/probe', 'w')")
        assert exit_code != 0 and "Read-only file system" in output, (where.name, output)


def test_lines_reach_the_collector(sidecar: SidecarOnKind, traffic: dict[str, Any]) -> None:
    exit_code, output = sidecar.cluster.python(
        sidecar.app.namespace, sidecar.app.pod, sidecar.app.name,
        f"import glob; print(sum(sum(1 for _ in open(p, 'rb')) "
        f"for p in glob.glob({sidecar.app_log_dir + '/access.log'!r} + '*')))")
    assert exit_code == 0, output
    logged = int(output)

    # Probes keep adding lines, so every line logged up to now must be there, at least.
    eventually(lambda: collector_counts(sidecar)["total"] >= logged,
               f"the collector to hold the {logged} lines the app had logged")


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
        tag = RunningContainer(namespace, "", shipper["name"], shipper).env("SHIPPER_TAG", "")
        sidecar.cluster.kubectl("-n", namespace, "wait", "--for=condition=complete",
                                f"job/{name}", "--timeout=300s")
        # Complete means the sidecar has exited too, so the count is final: exactly the
        # lines written, none lost, none twice.
        stored = collector_counts(sidecar)["tags"].get(tag, 0)
        assert stored == lines, f"job {name}: {stored} records of tag {tag} for {lines} lines"
