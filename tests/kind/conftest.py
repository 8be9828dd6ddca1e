"""kind tier: the suite's manifests on a real Kubernetes cluster made by kind.

Needs `kind`, `kubectl` and a running Docker engine; without them every test here skips,
naming what is missing. The cluster is $KIND_CLUSTER (default `podpatterns`, the one
`make kind-up` and the demos use): reused if it exists, otherwise created from
k8s/kind-cluster.yaml and deleted again after the session (KEEP_KIND_CLUSTER=1 keeps it).

Images are built by images/build.py (the same path as `make images`), loaded with
`kind load docker-image`, and the rendered overlay is applied with its image tags replaced
by the ones just built.

What a test asserts inside a pod, it asserts with tests/pod_assertions.py, handing it a
`kubectl exec` for each container (`Cluster.exec_in`): the podman tier asserts the same
with the same code.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from demo.podman import env_value, mount_path
from tests import pod_assertions as check
from tests.conftest import ROOT, require_tool, wait_until
from tests.guide.conftest import suite_images
from tests.in_pod import http_get_script, parse_http_response
from tests.pod_assertions import Exec

KIND_CLUSTER = os.environ.get("KIND_CLUSTER", "podpatterns")
IMAGE_REF = re.compile(r"(image:\s*['\"]?)(podpatterns/([a-z0-9-]+)):[A-Za-z0-9_.-]+")


def run(argv: list[str], input: str | None = None, timeout: float = 600,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, input=input, capture_output=True, text=True, cwd=ROOT,
                            timeout=timeout, check=False)
    if check and result.returncode != 0:
        pytest.fail(f"$ {' '.join(argv)}\nexit {result.returncode}\n{result.stdout}"
                    f"\n{result.stderr}", pytrace=False)
    return result


@dataclass
class Cluster:
    name: str

    @property
    def context(self) -> str:
        return f"kind-{self.name}"

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 600,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["kubectl", "--context", self.context, *args], input=input,
                   timeout=timeout, check=check)

    def json(self, *args: str) -> Any:
        import json

        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def exec(self, namespace: str, pod: str, container: str, *argv: str,
             check: bool = False) -> tuple[int, str]:
        result = self.kubectl("-n", namespace, "exec", pod, "-c", container, "--", *argv,
                              timeout=60, check=check)
        return result.returncode, result.stdout + result.stderr

    def python(self, namespace: str, pod: str, container: str, code: str) -> tuple[int, str]:
        result = self.kubectl("-n", namespace, "exec", pod, "-c", container, "--",
                              "python3", "-c", code, timeout=60, check=False)
        # stdout only: kubectl's own warnings go to stderr.
        return result.returncode, result.stdout if result.returncode == 0 else result.stderr

    def http_get(self, namespace: str, pod: str, container: str, url: str,
                 timeout: float = 5.0) -> tuple[int, str]:
        return parse_http_response(*self.python(namespace, pod, container,
                                           http_get_script(url, timeout)))

    def exec_in(self, where: RunningContainer) -> Exec:
        """`kubectl exec` into one container, as tests/pod_assertions.py takes it: (0,
        stdout) when the command succeeded (kubectl's own warnings go to stderr), else
        (exit code, stdout and stderr)."""
        def run_in(*argv: str) -> tuple[int, str]:
            result = self.kubectl("-n", where.namespace, "exec", where.pod, "-c", where.name,
                                  "--", *argv, timeout=60, check=False)
            if result.returncode == 0:
                return 0, result.stdout
            return result.returncode, result.stdout + result.stderr
        return run_in

    def logs(self, where: RunningContainer) -> str:
        return self.kubectl("-n", where.namespace, "logs", where.pod, "-c", where.name,
                            timeout=60).stdout


@pytest.fixture(scope="session")
def kind_cluster() -> Iterator[Cluster]:
    require_tool("kind", "https://kind.sigs.k8s.io/docs/user/quick-start/#installation")
    require_tool("kubectl", "https://kubernetes.io/docs/tasks/tools/")
    require_tool("docker", "apt-get install docker.io")
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.skip("needs a running Docker engine for kind: start dockerd")
    cluster = Cluster(KIND_CLUSTER)
    existing = run(["kind", "get", "clusters"]).stdout.split()
    created = KIND_CLUSTER not in existing
    if created:
        run(["make", "--no-print-directory", "kind-up", f"KIND_CLUSTER={KIND_CLUSTER}"],
            timeout=900)
    yield cluster
    if created and os.environ.get("KEEP_KIND_CLUSTER") != "1":
        run(["kind", "delete", "cluster", "--name", KIND_CLUSTER], check=False)


@pytest.fixture(scope="session")
def kind_images(kind_cluster: Cluster) -> dict[str, str]:
    """Every suite image, built and loaded into the cluster's node (built once a session
    for the guide tier's Compose variant and this one)."""
    images = suite_images()
    for ref in images.values():
        run(["kind", "load", "docker-image", "--name", kind_cluster.name, ref], timeout=600)
    return images


@dataclass
class Deployed:
    cluster: Cluster
    manifests: str
    documents: list[dict[str, Any]]

    def namespace_of(self, kind: str, name: str) -> str:
        for doc in self.documents:
            if doc.get("kind") == kind and doc["metadata"]["name"] == name:
                return str(doc["metadata"].get("namespace", "default"))
        raise AssertionError(f"no {kind} {name} in the rendered manifests")


def render(pattern: str, images: dict[str, str]) -> str:
    """`kubectl kustomize k8s/<pattern>/kind` with every podpatterns/<service> image set to
    the reference just built (the overlay names a placeholder tag)."""
    rendered = run(["kubectl", "kustomize", str(ROOT / "k8s" / pattern / "kind")]).stdout

    def built(match: re.Match[str]) -> str:
        service = match.group(3)
        if service not in images:
            raise AssertionError(f"manifest uses podpatterns/{service}, which no Dockerfile builds")
        return match.group(1) + images[service]

    return IMAGE_REF.sub(built, rendered)


@pytest.fixture(scope="module")
def deploy(kind_cluster: Cluster, kind_images: dict[str, str]) -> Iterator:
    """Factory: `deploy("sidecar")` deletes what an earlier run or a demo left of
    k8s/sidecar/kind (the tests count records from a fresh start), calls `prepare()` if
    given (e.g. to create Secrets the pods mount), applies the overlay, waits until every
    Deployment is Available, and deletes it all after the module."""
    applied: list[str] = []

    def apply(pattern: str, prepare: Callable[[], None] | None = None) -> Deployed:
        manifests = render(pattern, kind_images)
        kind_cluster.kubectl("delete", "--ignore-not-found", "--wait=true", "--timeout=300s",
                             "-f", "-", input=manifests, timeout=360)
        if prepare is not None:
            prepare()
        kind_cluster.kubectl("apply", "-f", "-", input=manifests)
        applied.append(manifests)
        documents = [doc for doc in yaml.safe_load_all(manifests) if doc]
        for doc in documents:
            if doc.get("kind") == "Deployment":
                meta = doc["metadata"]
                result = kind_cluster.kubectl(
                    "-n", meta.get("namespace", "default"), "rollout", "status",
                    f"deployment/{meta['name']}", "--timeout=300s", check=False)
                if result.returncode != 0:
                    events = kind_cluster.kubectl(
                        "-n", meta.get("namespace", "default"), "get", "events",
                        "--sort-by=.lastTimestamp", check=False).stdout
                    pytest.fail(f"deployment {meta['name']} did not roll out:\n"
                                f"{result.stderr}\n{events[-4000:]}", pytrace=False)
        return Deployed(kind_cluster, manifests, documents)

    yield apply
    for manifests in reversed(applied):
        kind_cluster.kubectl("delete", "--ignore-not-found", "--wait=false", "-f", "-",
                             input=manifests, check=False)


@dataclass
class RunningContainer:
    namespace: str
    pod: str
    name: str
    spec: dict[str, Any]

    def env(self, name: str, default: str) -> str:
        return env_value(self.spec, name, default)

    def mount_of(self, volume: str) -> str | None:
        return mount_path(self.spec, volume)


def all_containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    # Native sidecars are init containers with restartPolicy: Always.
    return list(pod_spec.get("initContainers", [])) + list(pod_spec["containers"])


def running_pod(cluster: Cluster, deployment: dict[str, Any]) -> tuple[str, str]:
    namespace = deployment["metadata"].get("namespace", "default")
    selector = ",".join(f"{key}={value}" for key, value in
                        deployment["spec"]["selector"]["matchLabels"].items())
    pods = cluster.json("-n", namespace, "get", "pods", "-l", selector)["items"]
    running = [pod for pod in pods if pod["status"].get("phase") == "Running"
               and not pod["metadata"].get("deletionTimestamp")]
    assert running, f"no running pod for deployment {deployment['metadata']['name']}"
    return namespace, running[0]["metadata"]["name"]


def find(cluster: Cluster, deployed: Deployed, *services: str) -> list[RunningContainer]:
    """The containers running podpatterns/<service>, for each service, all in one pod: of
    the Deployments that run them all, the one with the most native sidecars (the overlay
    may also carry a classic variant with the sidecar as a regular container)."""
    candidates = []
    for doc in deployed.documents:
        if doc.get("kind") != "Deployment":
            continue
        template = doc["spec"]["template"]["spec"]
        by_service = {}
        for container in all_containers(template):
            for service in services:
                if f"podpatterns/{service}:" in container["image"]:
                    by_service[service] = container
        if len(by_service) == len(services):
            native = sum(1 for c in template.get("initContainers", [])
                         if c.get("restartPolicy") == "Always")
            candidates.append((native, doc, by_service))
    assert candidates, f"no Deployment runs all of {services} in one pod"
    _, doc, by_service = max(candidates, key=lambda candidate: candidate[0])
    namespace, pod = running_pod(cluster, doc)
    return [RunningContainer(namespace, pod, by_service[service]["name"], by_service[service])
            for service in services]


def eventually(predicate: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """wait_until at the pace of kubectl exec: once a second."""
    return wait_until(predicate, timeout=timeout, interval=1.0, what=what)


def assert_hardened(cluster: Cluster, where: RunningContainer) -> None:
    """uid 10001, no capability, no_new_privs, a read-only root (tests/pod_assertions.py)."""
    check.assert_hardened(cluster.exec_in(where), where.name)


def container_of(cluster: Cluster, deployed: Deployed, deployment: str) -> RunningContainer:
    """The first container of a running pod of the named Deployment."""
    for doc in deployed.documents:
        if doc.get("kind") == "Deployment" and doc["metadata"]["name"] == deployment:
            namespace, pod = running_pod(cluster, doc)
            spec = all_containers(doc["spec"]["template"]["spec"])[0]
            return RunningContainer(namespace, pod, spec["name"], spec)
    raise AssertionError(f"no Deployment {deployment} in the rendered manifests")
