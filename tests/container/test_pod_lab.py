"""Lab 0's pod in real containers built from images/: the two containers of
k8s/0-pod/base/pod-definition.yaml (images, environment, mounts taken from the file), run
as a pod of this tier (one network namespace, the `shared` emptyDir as a shared volume).

What the lab shows, checked from inside each container: the same file (same inode) in
both, a line main wrote read by the sidecar, the sidecar unable to change it, each
container reaching the other on localhost; and, with Docker's restart policy as the
pod's `restartPolicy: Always` (the Compose profile's), main restarted alone, in the same
namespace, with the same file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.container.conftest import PodContainer, Pods

POD_DEFINITION = ROOT / "k8s" / "0-pod" / "base" / "pod-definition.yaml"


@dataclass
class LabPod:
    main: PodContainer
    sidecar: PodContainer
    log_path: str  # access.log, where both containers mount the shared volume
    pods: Pods
    ports: dict[str, int]  # container -> its port, from the manifest


def service_of(container: dict[str, Any]) -> str:
    return str(container["image"]).rsplit("/", 1)[-1].split(":", 1)[0]


def ok(container: PodContainer, url: str) -> bool:
    return container.running() and container.http_get(url)[0] == 200


@pytest.fixture(scope="module")
def lab_pod(images: dict[str, str], pods: Pods) -> LabPod:
    spec = yaml.safe_load(POD_DEFINITION.read_text())["spec"]
    by_name = {container["name"]: container for container in spec["containers"]}
    made = pods.new("lab0")
    volumes = {volume["name"]: made.volume(volume["name"]) for volume in spec["volumes"]}
    started = {}
    # The sidecar first: it owns the namespace, as pod-sidecar does on Compose, so that
    # main can restart without taking the namespace with it.
    for name in ("sidecar", "main"):
        container = by_name[name]
        mounts = {volumes[m["name"]]: m["mountPath"] + (":ro" if m.get("readOnly") else "")
                  for m in container.get("volumeMounts", []) if m["mountPath"] != "/tmp"}
        env = {item["name"]: item["value"] for item in container.get("env", [])}
        started[name] = made.start(name, images[service_of(container)], env=env, mounts=mounts)
    ports = {name: int(by_name[name]["ports"][0]["containerPort"]) for name in by_name}
    pods.eventually(lambda: ok(started["sidecar"], f"http://127.0.0.1:{ports['sidecar']}/readyz"),
                    "the sidecar ready")
    pods.eventually(lambda: ok(started["main"], f"http://127.0.0.1:{ports['main']}/healthz"),
                    "main ready")
    shared_path = next(m["mountPath"] for m in by_name["main"]["volumeMounts"]
                       if m["name"] == "shared")
    return LabPod(started["main"], started["sidecar"], f"{shared_path}/access.log", pods, ports)


def inode(container: PodContainer, path: str) -> int:
    code, out = container.python(f"import os; print(os.stat({path!r}).st_ino)")
    assert code == 0, out
    return int(out)


def test_both_containers_see_one_file(lab_pod: LabPod) -> None:
    assert inode(lab_pod.main, lab_pod.log_path) == inode(lab_pod.sidecar, lab_pod.log_path)


def test_the_sidecar_reaches_main_on_localhost_and_reads_the_line_main_wrote(
        lab_pod: LabPod) -> None:
    marker = "/healthz?from=sidecar-container-test"
    status, body = lab_pod.sidecar.http_get(f"http://localhost:{lab_pod.ports['main']}{marker}")
    assert (status, body) == (200, "ok\n")

    def line_in_sidecar_view() -> bool:
        code, out = lab_pod.sidecar.python(f"print(open({lab_pod.log_path!r}).read())")
        return code == 0 and f"GET {marker} HTTP/1.1" in out

    lab_pod.pods.eventually(line_in_sidecar_view, "main's line in the sidecar's view")


def test_main_reaches_the_sidecar_on_localhost_which_has_read_main_s_file(
        lab_pod: LabPod) -> None:
    def read_everything() -> bool:
        status, body = lab_pod.main.http_get(
            f"http://localhost:{lab_pod.ports['sidecar']}/status")
        assert status == 200, body
        code, lines = lab_pod.main.python(
            f"print(open({lab_pod.log_path!r}, 'rb').read().count(b'\\n'))")
        assert code == 0, lines
        return int(json.loads(body)["inputs"][0]["parsed"]) == int(lines) > 0

    lab_pod.pods.eventually(read_everything, "the sidecar to have read every line of main's file")


def test_the_sidecar_cannot_change_main_s_files(lab_pod: LabPod) -> None:
    code, out = lab_pod.sidecar.exec("touch", lab_pod.log_path.rsplit("/", 1)[0] + "/x")
    assert code != 0 and "Read-only file system" in out, out


def restart_counts(lab_pod: LabPod) -> dict[str, int]:
    return {name: int(container.attrs()["RestartCount"])
            for name, container in (("main", lab_pod.main), ("sidecar", lab_pod.sidecar))}


def test_main_restarts_alone_in_the_same_namespace_with_the_same_file(lab_pod: LabPod) -> None:
    before_inode = inode(lab_pod.main, lab_pod.log_path)
    for item in (lab_pod.main, lab_pod.sidecar):
        item.container.update(restart_policy={"Name": "unless-stopped"})
    before = restart_counts(lab_pod)
    # SIGTERM to main's PID 1 (the kernel ignores a SIGKILL to it from inside). Its exit
    # status is not checked: the exec may end with the container it stops.
    lab_pod.main.python("import os, signal; os.kill(1, signal.SIGTERM)")
    lab_pod.pods.eventually(lambda: restart_counts(lab_pod)["main"] == before["main"] + 1,
                            "Docker to restart main", timeout=60)
    lab_pod.pods.eventually(
        lambda: ok(lab_pod.sidecar, f"http://localhost:{lab_pod.ports['main']}/healthz"),
        "the restarted main, on the sidecar's localhost", timeout=60)
    assert restart_counts(lab_pod)["sidecar"] == before["sidecar"]
    assert inode(lab_pod.main, lab_pod.log_path) == before_inode
