"""The sidecar pattern's NetworkPolicies, enforced by a real cluster (kind's kindnet has
enforced NetworkPolicy since kind v0.24): the collector's Forward port admits the pods that
run a log-shipper and no one else.

Two throwaway pods are started side by side in the pattern's namespace, the same image and
spec, differing only in their labels: one labelled like the Job's shipper pods
(app.kubernetes.io/name=log-batch, which no controller or Service selects), one a stranger.
Both must reach the web app's own port (open to all: this also proves their network is up
and known to the policy controller); the look-alike then reaches the Forward port, the
stranger neither the Forward port nor the shipper's admin port. The shipper's own container
reaches the Forward port through the address it ships to.

(Semantics of every policy, for every pattern, are checked without a cluster in
tests/unit/test_network_policy.py.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from tests.kind.conftest import Cluster, Deployed, RunningContainer, eventually, find

CONNECT_TIMEOUT = 3.0  # a dropped SYN shows as a timeout; an admitted one connects in ms


def connect_script(host: str, port: int) -> str:
    """Python source that opens a TCP connection and prints `connected` or why not."""
    return (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(({host!r}, {port}), timeout={CONNECT_TIMEOUT}).close()\n"
        "    print('connected')\n"
        "except OSError as e:\n"
        "    print('not connected: ' + type(e).__name__ + ' ' + str(e))\n"
    )


@dataclass
class Target:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class SidecarPolicies:
    cluster: Cluster
    shipper: RunningContainer
    forward: Target  # the collector's Forward port, as the shipper addresses it
    app_port: Target  # the web app's own port, through its Service
    shipper_admin: Target  # the shipper's admin port, through the same Service

    def connects(self, where: RunningContainer, target: Target) -> str:
        exit_code, output = self.cluster.python(where.namespace, where.pod, where.name,
                                                connect_script(target.host, target.port))
        assert exit_code == 0, output
        return output.strip()


def service_ports(deployed: Deployed, namespace: str, pod_labels: dict[str, str]) -> list[Any]:
    """(Service name, port) of every Service of the namespace that selects the pod."""
    found = []
    for doc in deployed.documents:
        if doc.get("kind") != "Service" or doc["metadata"].get("namespace") != namespace:
            continue
        selector = doc["spec"].get("selector") or {}
        if selector and selector.items() <= pod_labels.items():
            found += [(doc["metadata"]["name"], port) for port in doc["spec"]["ports"]]
    return found


@pytest.fixture(scope="module")
def sidecar(kind_cluster: Cluster, deploy: Callable[[str], Deployed]) -> SidecarPolicies:
    deployed = deploy("sidecar")
    app, shipper = find(kind_cluster, deployed, "web-app", "log-shipper")
    labels = kind_cluster.json("-n", app.namespace, "get", "pod", app.pod)["metadata"]["labels"]
    ports = {port.get("targetPort"): (name, port["port"])
             for name, port in service_ports(deployed, app.namespace, labels)}
    app_port = int(app.env("WEB_APP_PORT", "8080"))
    admin_port = int(shipper.env("SHIPPER_HTTP_PORT", "9102"))
    app_service = next(v for k, v in ports.items() if k in ("http", app_port))
    admin_service = next(v for k, v in ports.items() if k in ("shipper-admin", admin_port))
    svc = f".{app.namespace}.svc"
    return SidecarPolicies(
        kind_cluster, shipper,
        forward=Target(shipper.env("FLUENT_HOST", ""), int(shipper.env("FLUENT_PORT", "24224"))),
        app_port=Target(app_service[0] + svc, app_service[1]),
        shipper_admin=Target(admin_service[0] + svc, admin_service[1]),
    )


def throwaway_pod(name: str, namespace: str, labels: dict[str, str], image: str) -> dict:
    """A pod that only sleeps, meeting the namespace's Pod Security "restricted" profile."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 1,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "probe", "image": image, "imagePullPolicy": "Never",
                "command": ["python3", "-c", "import time; time.sleep(3600)"],
                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                              "limits": {"memory": "64Mi"}},
                "securityContext": {"allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}},
            }],
        },
    }


@pytest.fixture(scope="module")
def probes(sidecar: SidecarPolicies,
           kind_images: dict[str, str]) -> Iterator[dict[str, RunningContainer]]:
    """{"lookalike": ..., "stranger": ...}: started together, ready together."""
    namespace = sidecar.shipper.namespace
    wanted = {
        "lookalike": {"app.kubernetes.io/name": "log-batch"},
        "stranger": {"app.kubernetes.io/name": "netpol-stranger"},
    }
    pods = [throwaway_pod(f"netpol-{role}", namespace, labels, kind_images["web-app"])
            for role, labels in wanted.items()]
    manifests = yaml.safe_dump_all(pods)
    sidecar.cluster.kubectl("apply", "-f", "-", input=manifests)
    try:
        for pod in pods:
            sidecar.cluster.kubectl("-n", namespace, "wait", "--for=condition=Ready",
                                    f"pod/{pod['metadata']['name']}", "--timeout=120s")
        yield {role: RunningContainer(namespace, f"netpol-{role}", "probe",
                                      pod["spec"]["containers"][0])
               for role, pod in zip(wanted, pods, strict=True)}
    finally:
        sidecar.cluster.kubectl("delete", "--ignore-not-found", "--wait=false", "-f", "-",
                                input=manifests, check=False)


def test_the_shipper_reaches_the_collectors_forward_port(sidecar: SidecarPolicies) -> None:
    assert sidecar.forward.host, "the shipper has no FLUENT_HOST"
    result = eventually(lambda: sidecar.connects(sidecar.shipper, sidecar.forward) == "connected",
                        f"the shipper to connect to {sidecar.forward}")
    assert result


def test_only_a_shippers_labels_open_the_forward_port(
    sidecar: SidecarPolicies, probes: dict[str, RunningContainer]
) -> None:
    lookalike, stranger = probes["lookalike"], probes["stranger"]
    # Both pods' network works and the policy controller knows them: the app's port is open
    # to every source.
    for where in (lookalike, stranger):
        eventually(lambda where=where: sidecar.connects(where, sidecar.app_port) == "connected",
                   f"{where.pod} to reach the app's port {sidecar.app_port}")
    # Admitted by its labels alone...
    eventually(lambda: sidecar.connects(lookalike, sidecar.forward) == "connected",
               f"{lookalike.pod} (labelled like a shipper pod) to reach {sidecar.forward}")
    # ...and the same pod without them is not, neither to the Forward port nor to the
    # shipper's admin port.
    for target in (sidecar.forward, sidecar.shipper_admin):
        outcome = sidecar.connects(stranger, target)
        assert outcome != "connected", (
            f"a pod without a shipper's labels reached {target}: NetworkPolicy is not "
            "enforced (kindnet needs the nfnetlink_queue kernel module) or admits too much")
