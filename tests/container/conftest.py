"""Container tier: the images built from images/ (by images/build.py, the same path as
`make images`), run on a Docker engine as "pods".

A pod here is what Kubernetes gives a pod's containers: one network namespace (the first
container owns it, the others join with `network_mode="container:<first>"`, so they reach
each other on localhost) and shared volumes (tmpfs-backed, owned by uid 10001 like an
emptyDir with fsGroup). Every container gets the hardening of the k8s manifests: read-only
root filesystem with a tmpfs /tmp, all capabilities dropped, no-new-privileges, user
10001:10001, a memory limit.

Pods reach each other by container name on one internal Docker network (no route out), and
tests talk to them with `docker exec` from inside the pod, so nothing is published on the
host.

Missing docker SDK or engine: skip, naming it. An image that fails to build: fail.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from demo.timing import poll
from tests.conftest import ROOT
from tests.in_pod import http_get_script, parse_http_response

RUN_AS = "10001:10001"
BUILD_LOG = ROOT / "build" / "container-images.log"


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    try:
        import docker
    except ImportError:
        pytest.skip("needs the docker Python SDK: pip install -e '.[test]'")
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as error:  # the SDK raises several types for "no engine"
        pytest.skip(f"needs a running Docker engine (apt-get install docker.io; dockerd): {error}")
    yield client
    client.close()


def build_suite_images() -> dict[str, str]:
    """Build every image with images/build.py (as `make images` does); service name ->
    image reference. A failed build fails the calling test: it is a defect, not a
    missing prerequisite."""
    BUILD_LOG.parent.mkdir(parents=True, exist_ok=True)
    # The list of built images is this session's own: another session may build at once.
    with open(BUILD_LOG, "w") as log, tempfile.TemporaryDirectory() as scratch:
        images_json = Path(scratch) / "images.json"
        result = subprocess.run(
            [sys.executable, str(ROOT / "images" / "build.py"), "--json", str(images_json)],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, check=False,
        )
        built = json.loads(images_json.read_text())["images"] if result.returncode == 0 else {}
    if result.returncode != 0:
        tail = "\n".join(BUILD_LOG.read_text(errors="replace").splitlines()[-40:])
        pytest.fail(f"images/build.py failed (exit {result.returncode}); full log in "
                    f"{BUILD_LOG}:\n{tail}", pytrace=False)
    return dict(built)


@pytest.fixture(scope="session")
def images(docker_client: Any) -> dict[str, str]:
    """service name -> image reference, built once per session."""
    return build_suite_images()


@pytest.fixture(scope="session")
def pod_network(docker_client: Any) -> Iterator[str]:
    """An internal network: pods reach each other by container name, nothing goes out."""
    network = docker_client.networks.create(f"pp-test-{uuid.uuid4().hex[:8]}",
                                            driver="bridge", internal=True)
    yield network.name
    network.remove()


@dataclass
class PodContainer:
    name: str
    container: Any

    def exec(self, *argv: str, user: str = RUN_AS) -> tuple[int, str]:
        result = self.container.exec_run(list(argv), user=user, demux=False)
        return result.exit_code, (result.output or b"").decode(errors="replace")

    def python(self, code: str) -> tuple[int, str]:
        """Run Python inside the container (its image has the service's venv on PATH)."""
        return self.exec("python3", "-c", code)

    def http_get(self, url: str, timeout: float = 3.0) -> tuple[int, str]:
        """(HTTP status, body) of a GET made from inside the container; status 0 when the
        connection itself failed."""
        return parse_http_response(*self.python(http_get_script(url, timeout)))

    def running(self) -> bool:
        self.container.reload()
        return self.container.status == "running"

    def logs(self) -> str:
        return self.container.logs().decode(errors="replace")

    def attrs(self) -> dict[str, Any]:
        self.container.reload()
        return dict(self.container.attrs)


@dataclass
class Pod:
    """Containers sharing one network namespace and named volumes, hardened like the k8s
    manifests. Remove with `remove()` (the `pod` fixture does it)."""

    client: Any
    network: str
    name: str
    containers: list[PodContainer] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)

    def volume(self, name: str, size: str = "64m") -> str:
        """A shared volume like an emptyDir: tmpfs, writable by uid/gid 10001."""
        volume = self.client.volumes.create(
            name=f"{self.name}-{name}", driver="local",
            driver_opts={"type": "tmpfs", "device": "tmpfs",
                         "o": f"size={size},uid=10001,gid=10001,mode=0770"},
        )
        self.volumes.append(volume.name)
        return volume.name

    def start(self, name: str, image: str, env: dict[str, str] | None = None,
              mounts: dict[str, str] | None = None, command: list[str] | None = None,
              tmpfs: tuple[str, ...] = ("/tmp",), mem_limit: str = "256m") -> PodContainer:
        """Start a container; the first one owns the pod's network namespace. `mounts`
        maps a volume of this pod to a path in the container (suffix `:ro`: read-only)."""
        kwargs: dict[str, Any] = {}
        if self.containers:
            kwargs["network_mode"] = f"container:{self.containers[0].container.id}"
        else:
            kwargs["network"] = self.network
            kwargs["hostname"] = self.name
        container = self.client.containers.run(
            image,
            command=command,
            name=f"{self.name}-{name}",
            environment=env or {},
            volumes={volume: {"bind": path.removesuffix(":ro"),
                              "mode": "ro" if path.endswith(":ro") else "rw"}
                     for volume, path in (mounts or {}).items()},
            tmpfs={path: "rw,nosuid,nodev,size=32m,mode=1777" for path in tmpfs},
            read_only=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            user=RUN_AS,
            mem_limit=mem_limit,
            labels={"podpatterns.test": "container-tier"},
            detach=True,
            **kwargs,
        )
        pod_container = PodContainer(name=container.name, container=container)
        self.containers.append(pod_container)
        return pod_container

    @property
    def address(self) -> str:
        """Where other pods reach this one: its first container's name on the network."""
        return self.containers[0].name

    def describe(self) -> str:
        """Every container's state and last log lines, for a failed test's report."""
        parts = []
        for item in self.containers:
            try:
                state = item.attrs()["State"]
                logs = item.logs().splitlines()[-40:]
            except Exception as error:
                state, logs = {"error": str(error)}, []
            parts.append(f"--- {item.name}: {state.get('Status')} exit={state.get('ExitCode')}"
                         f" oom={state.get('OOMKilled')}\n" + "\n".join(logs))
        return "\n".join(parts)

    def remove(self) -> None:
        # Sidecars and apps in reverse start order, as a pod's termination does.
        for item in reversed(self.containers):
            with contextlib.suppress(Exception):
                item.container.remove(force=True)
        for volume in self.volumes:
            with contextlib.suppress(Exception):
                self.client.volumes.get(volume).remove(force=True)


class Pods:
    """The pods a test (or a test module) made; `remove_all()` deletes them."""

    def __init__(self, client: Any, network: str) -> None:
        self.client = client
        self.network = network
        self.made: list[Pod] = []

    def new(self, name: str) -> Pod:
        made = Pod(self.client, self.network, f"pp-{name}-{uuid.uuid4().hex[:6]}")
        self.made.append(made)
        return made

    def describe(self) -> str:
        return "\n".join(made.describe() for made in self.made)

    def eventually(self, predicate: Callable[[], Any], what: str, timeout: float = 30.0,
                   interval: float = 0.25) -> Any:
        """Poll until `predicate()` is truthy; on timeout fail with every container's
        state and logs."""
        value = poll(predicate, timeout, interval)
        if not value:
            pytest.fail(f"timed out after {timeout}s waiting for {what}\n{self.describe()}",
                        pytrace=False)
        return value

    def remove_all(self) -> None:
        for made in reversed(self.made):
            made.remove()


@pytest.fixture(scope="module")
def pods(docker_client: Any, pod_network: str) -> Iterator[Pods]:
    """Module-scoped: a module starts its pods once and its tests look at them."""
    registry = Pods(docker_client, pod_network)
    yield registry
    registry.remove_all()


