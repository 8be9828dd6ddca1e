"""Lab 0's pod on a real cluster (k8s/0-pod/kind), what its guide shows, checked with
`kubectl exec` inside each container: one file (one inode) in both, the sidecar reading
what main wrote and unable to change it, each container on the other's localhost, main
restarted alone by the kubelet with the volume kept, both containers gone with the pod;
and the namespace refusing a pod that breaks the restricted profile.

The tests run in file order: deleting the pod comes last.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from tests.kind.conftest import (
    Cluster,
    Deployed,
    RunningContainer,
    assert_hardened,
    eventually,
)

POD = "two-containers"


@dataclass
class LabOnKind:
    cluster: Cluster
    deployed: Deployed
    namespace: str
    main: RunningContainer
    sidecar: RunningContainer
    log_path: str  # access.log where both mount the shared volume

    def python(self, where: RunningContainer, code: str) -> str:
        exit_code, out = self.cluster.python(self.namespace, POD, where.name, code)
        assert exit_code == 0, out
        return out

    def get(self, where: RunningContainer, url: str) -> tuple[int, str]:
        return self.cluster.http_get(self.namespace, POD, where.name, url)

    def inode(self, where: RunningContainer) -> int:
        return int(self.python(where, f"import os; print(os.stat({self.log_path!r}).st_ino)"))

    def statuses(self) -> dict[str, dict[str, Any]]:
        pod = self.cluster.json("-n", self.namespace, "get", "pod", POD)
        return {s["name"]: s for s in pod["status"].get("containerStatuses", [])}


def port_of(container: RunningContainer) -> int:
    return int(container.spec["ports"][0]["containerPort"])


@pytest.fixture(scope="module")
def lab(kind_cluster: Cluster, deploy) -> LabOnKind:
    deployed: Deployed = deploy("0-pod")
    namespace = deployed.namespace_of("Pod", POD)
    kind_cluster.kubectl("-n", namespace, "wait", "--for=condition=Ready", f"pod/{POD}",
                         "--timeout=300s", timeout=330)
    doc = next(d for d in deployed.documents if d["kind"] == "Pod")
    by_name = {c["name"]: RunningContainer(namespace, POD, c["name"], c)
               for c in doc["spec"]["containers"]}
    shared = by_name["main"].mount_of("shared")
    assert shared and by_name["sidecar"].mount_of("shared") == shared
    return LabOnKind(kind_cluster, deployed, namespace, by_name["main"], by_name["sidecar"],
                     f"{shared}/access.log")


def test_both_containers_are_ready_and_hardened(lab: LabOnKind) -> None:
    statuses = lab.statuses()
    assert set(statuses) == {"main", "sidecar"}
    assert all(status["ready"] for status in statuses.values()), statuses
    for container in (lab.main, lab.sidecar):
        assert_hardened(lab.cluster, container)


def test_both_containers_see_one_file(lab: LabOnKind) -> None:
    assert lab.inode(lab.main) == lab.inode(lab.sidecar)


def test_the_sidecar_reaches_main_on_localhost_and_reads_the_line_main_wrote(
        lab: LabOnKind) -> None:
    marker = "/healthz?from=sidecar-kind-test"
    assert lab.get(lab.sidecar, f"http://localhost:{port_of(lab.main)}{marker}") == (200, "ok\n")
    eventually(lambda: f"GET {marker} HTTP/1.1" in lab.python(
        lab.sidecar, f"print(open({lab.log_path!r}).read())"), "main's line in the sidecar")


def test_main_reaches_the_sidecar_on_localhost(lab: LabOnKind) -> None:
    status, body = lab.get(lab.main, f"http://localhost:{port_of(lab.sidecar)}/status")
    assert status == 200, body
    assert json.loads(body)["inputs"][0]["glob"] == lab.log_path


def test_the_sidecar_cannot_change_main_s_files(lab: LabOnKind) -> None:
    exit_code, out = lab.cluster.exec(lab.namespace, POD, "sidecar", "touch",
                                      lab.log_path.rsplit("/", 1)[0] + "/x")
    assert exit_code != 0 and "Read-only file system" in out, out


def test_the_namespace_refuses_a_pod_that_breaks_the_restricted_profile(lab: LabOnKind) -> None:
    doc = copy.deepcopy(next(d for d in lab.deployed.documents if d["kind"] == "Pod"))
    doc["metadata"]["name"] = "two-containers-unhardened"
    del doc["spec"]["containers"][1]["securityContext"]
    result = lab.cluster.kubectl("apply", "--dry-run=server", "-f", "-",
                                 input=yaml.safe_dump(doc), check=False)
    assert result.returncode != 0
    assert 'violates PodSecurity "restricted' in result.stderr, result.stderr


def test_main_restarts_alone_and_keeps_the_volume(lab: LabOnKind) -> None:
    before = {name: int(s["restartCount"]) for name, s in lab.statuses().items()}
    before_inode = lab.inode(lab.main)
    # SIGTERM to main's PID 1 (a SIGKILL from inside the container would be ignored). Its
    # exit status is not checked: the exec may end with the container it stops.
    lab.cluster.python(lab.namespace, POD, lab.main.name,
                       "import os, signal; os.kill(1, signal.SIGTERM)")
    eventually(lambda: int(lab.statuses()["main"]["restartCount"]) == before["main"] + 1,
               "the kubelet to restart main", timeout=120)
    eventually(lambda: lab.statuses()["main"].get("ready"), "the restarted main ready",
               timeout=120)
    assert int(lab.statuses()["sidecar"]["restartCount"]) == before["sidecar"]
    assert lab.inode(lab.main) == before_inode


def test_deleting_the_pod_ends_both_containers(lab: LabOnKind) -> None:
    lab.cluster.kubectl("-n", lab.namespace, "delete", "pod", POD, "--wait=true",
                        "--timeout=120s", timeout=150)
    result = lab.cluster.kubectl("-n", lab.namespace, "get", "pod", POD, check=False)
    assert result.returncode != 0 and "NotFound" in result.stderr, result.stderr
