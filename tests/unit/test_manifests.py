"""Every object in k8s/ validates strictly against the schema of the pinned Kubernetes
version (as `make validate` checks), and every workload meets the Pod Security "restricted"
profile and the suite's own rules: numeric non-root user, read-only root filesystem, all
capabilities dropped, no privilege escalation, RuntimeDefault seccomp, requests and limits,
liveness and readiness probes on every long-running container (native sidecars included),
and pinned images.

Manifests are rendered with `kubectl kustomize` (each k8s/<pattern>/ and its kind/
overlay) when kubectl is on PATH; otherwise the files a base's kustomization.yaml lists are
parsed directly (overlays need kustomize, so they are only checked with it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

K8S = ROOT / "k8s"
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob",
                  "Pod"}
LONG_RUNNING_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"}
# Pod Security Standards, restricted: the only volume types allowed.
RESTRICTED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                           "persistentVolumeClaim", "projected", "secret"}


@dataclass(frozen=True)
class Workload:
    source: str  # what was rendered or parsed: k8s/sidecar, k8s/sidecar/kind, or a file
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.doc["kind"])

    @property
    def id(self) -> str:
        return f"{self.source}:{self.kind}/{self.doc['metadata']['name']}"

    def pod_spec(self) -> dict[str, Any]:
        if self.kind == "Pod":
            return dict(self.doc["spec"])
        if self.kind == "CronJob":
            return dict(self.doc["spec"]["jobTemplate"]["spec"]["template"]["spec"])
        return dict(self.doc["spec"]["template"]["spec"])

    def long_running(self) -> bool:
        if self.kind == "Pod":
            return self.doc["spec"].get("restartPolicy", "Always") == "Always"
        return self.kind in LONG_RUNNING_KINDS


def kustomize_dirs() -> list[Path]:
    dirs = []
    for kustomization in sorted(K8S.glob("*/kustomization.yaml")):
        dirs.append(kustomization.parent)
        if (kustomization.parent / "kind" / "kustomization.yaml").exists():
            dirs.append(kustomization.parent / "kind")
    return dirs


def rendered_documents() -> Iterator[tuple[str, dict[str, Any]]]:
    kubectl = shutil.which("kubectl")
    for directory in kustomize_dirs():
        source = str(directory.relative_to(ROOT))
        if kubectl:
            result = subprocess.run([kubectl, "kustomize", str(directory)],
                                    capture_output=True, text=True, check=False)
            if result.returncode != 0:
                # Surfaced as a failing test case, never silently dropped.
                yield source, {"kind": "KustomizeError", "metadata": {"name": "render"},
                               "error": result.stderr}
                continue
            for doc in yaml.safe_load_all(result.stdout):
                if doc:
                    yield source, doc
        elif directory.name != "kind":
            yield from listed_resources(directory)


def listed_resources(directory: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Without kustomize: the documents of the files a kustomization lists, following
    listed folders (bases) to their own kustomization.yaml."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    for entry in kustomization.get("resources", []):
        path = directory / entry
        if path.is_dir():
            yield from listed_resources(path)
        elif path.is_file():
            for doc in yaml.safe_load_all(path.read_text()):
                if doc:
                    yield str(path.relative_to(ROOT)), doc


def workloads() -> list[Any]:
    found = []
    for source, doc in rendered_documents():
        if doc.get("kind") == "KustomizeError":
            found.append(pytest.param(Workload(source, doc), id=f"{source}:render"))
        elif doc.get("kind") in WORKLOAD_KINDS:
            workload = Workload(source, doc)
            found.append(pytest.param(workload, id=workload.id))
    return found


def effective(container: dict[str, Any], pod: dict[str, Any], key: str) -> Any:
    """A security setting as the kubelet applies it: the container's, else the pod's."""
    value = (container.get("securityContext") or {}).get(key)
    if value is None:
        value = (pod.get("securityContext") or {}).get(key)
    return value


def image_problem(image: str) -> str | None:
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    if ":" not in last and not digest:
        return f"image {image!r} has no tag or digest"
    if last.endswith(":latest"):
        return f"image {image!r} uses :latest"
    return None


def violations(workload: Workload) -> list[str]:
    """Every rule the workload breaks, each naming the container and the field."""
    pod = workload.pod_spec()
    problems: list[str] = []
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            problems.append(f"pod: {flag} is set")
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']}: type {sorted(kinds)} not allowed")

    init = [(c, c.get("restartPolicy") == "Always") for c in pod.get("initContainers", [])]
    regular = [(c, workload.long_running()) for c in pod.get("containers", [])]
    for container, long_running in init + regular:
        where = f"container {container['name']}"
        context = container.get("securityContext") or {}
        user = effective(container, pod, "runAsUser")
        if not isinstance(user, int) or isinstance(user, bool) or user == 0:
            problems.append(f"{where}: runAsUser must be a numeric non-root uid, is {user!r}")
        if effective(container, pod, "runAsNonRoot") is not True:
            problems.append(f"{where}: runAsNonRoot is not true")
        if context.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: readOnlyRootFilesystem is not true")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        if context.get("privileged"):
            problems.append(f"{where}: privileged")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(f"{where}: capabilities do not drop ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{where}: adds capabilities {capabilities['add']}")
        seccomp = effective(container, pod, "seccompProfile") or {}
        if seccomp.get("type") != "RuntimeDefault":
            problems.append(f"{where}: seccompProfile is not RuntimeDefault")
        resources = container.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        for resource in ("cpu", "memory"):
            if resource not in requests:
                problems.append(f"{where}: no {resource} request")
        if "memory" not in limits:
            problems.append(f"{where}: no memory limit")
        for port in container.get("ports", []):
            if port.get("hostPort"):
                problems.append(f"{where}: hostPort {port['hostPort']}")
        if long_running:
            for probe in ("livenessProbe", "readinessProbe"):
                if probe not in container:
                    problems.append(f"{where}: long-running without a {probe}")
        problem = image_problem(str(container.get("image", "")))
        if problem:
            problems.append(f"{where}: {problem}")
    return problems


WORKLOADS = workloads()


def pinned_kubernetes_version() -> str:
    """K8S_VERSION from the Makefile: the version kind runs, which `make validate` uses."""
    match = re.search(r"^K8S_VERSION\s*\?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert match, "no K8S_VERSION in the Makefile"
    return match.group(1)


def all_rendered() -> list[Any]:
    return [pytest.param(source, doc, id=f"{source}:{doc.get('kind')}/"
                         f"{(doc.get('metadata') or {}).get('name')}")
            for source, doc in rendered_documents()]


@pytest.mark.parametrize(("source", "doc"), all_rendered())
def test_object_validates_strictly_against_the_pinned_kubernetes_schema(
    source: str, doc: dict[str, Any]
) -> None:
    # What `make validate` checks, in the test run too (unknown fields are errors).
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="needs kubernetes-validate: pip install -e '.[lint]'")
    assert doc.get("kind") != "KustomizeError", f"kubectl kustomize failed:\n{doc.get('error')}"
    try:
        kubernetes_validate.validate(doc, pinned_kubernetes_version(), strict=True)
    except kubernetes_validate.ValidationError as error:
        pytest.fail(f"{source}: {doc['kind']}/{doc['metadata']['name']}: "
                    f"{error.message} at {'.'.join(str(p) for p in error.path)}", pytrace=False)


def test_manifests_exist_for_the_patterns() -> None:
    assert kustomize_dirs(), "no k8s/<pattern>/kustomization.yaml found"
    assert WORKLOADS, "the kustomizations in k8s/ render no workloads"


@pytest.mark.parametrize("workload", WORKLOADS)
def test_workload_meets_restricted_and_suite_rules(workload: Workload) -> None:
    assert workload.kind != "KustomizeError", f"kubectl kustomize failed:\n{workload.doc['error']}"
    problems = violations(workload)
    assert not problems, f"{workload.id}:\n  " + "\n  ".join(problems)


HARDENED_CONTAINER: dict[str, Any] = {
    "name": "app",
    "image": "podpatterns/web-app:0.1.0",
    "securityContext": {
        "runAsUser": 10001, "runAsNonRoot": True, "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    },
    "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
    "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
    "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}},
}


def deployment(pod_spec: dict[str, Any]) -> Workload:
    return Workload("test", {"kind": "Deployment", "metadata": {"name": "d"},
                             "spec": {"template": {"spec": pod_spec}}})


def test_the_rules_accept_a_hardened_pod_with_a_native_sidecar() -> None:
    sidecar = {**HARDENED_CONTAINER, "name": "shipper", "restartPolicy": "Always"}
    assert violations(deployment({"containers": [HARDENED_CONTAINER],
                                  "initContainers": [sidecar]})) == []


def test_the_rules_reject_each_weakened_setting() -> None:
    weak_sidecar = {"name": "shipper", "image": "podpatterns/log-shipper:latest",
                    "restartPolicy": "Always",
                    "securityContext": {"runAsUser": 0, "capabilities": {"add": ["SYS_ADMIN"]}}}
    untagged = {**HARDENED_CONTAINER, "name": "untagged", "image": "busybox"}
    problems = "\n".join(violations(deployment({
        "hostNetwork": True,
        "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
        "containers": [untagged],
        "initContainers": [weak_sidecar],
    })))
    for expected in ("hostNetwork", "volume host", "shipper: runAsUser",
                     "shipper: runAsNonRoot", "shipper: readOnlyRootFilesystem",
                     "shipper: allowPrivilegeEscalation", "shipper: capabilities do not drop",
                     "shipper: adds capabilities", "shipper: seccompProfile",
                     "shipper: no cpu request", "shipper: no memory limit",
                     "shipper: long-running without a livenessProbe",
                     "shipper: long-running without a readinessProbe",
                     "shipper: image 'podpatterns/log-shipper:latest' uses :latest",
                     "untagged: image 'busybox' has no tag"):
        assert expected in problems, f"{expected!r} not reported in:\n{problems}"


def test_a_one_shot_job_needs_no_probes() -> None:
    container = {k: v for k, v in HARDENED_CONTAINER.items() if not k.endswith("Probe")}
    job = Workload("test", {"kind": "Job", "metadata": {"name": "j"},
                            "spec": {"template": {"spec": {"containers": [container],
                                                           "restartPolicy": "Never"}}}})
    assert violations(job) == []


def services_and_templates() -> list[Any]:
    """Each Service with the pod templates it selects, per rendered source."""
    by_source: dict[str, list[dict[str, Any]]] = {}
    for source, doc in rendered_documents():
        by_source.setdefault(source, []).append(doc)
    found = []
    for source, docs in by_source.items():
        templates = [Workload(source, doc) for doc in docs if doc.get("kind") in WORKLOAD_KINDS]
        for service in (doc for doc in docs if doc.get("kind") == "Service"):
            namespace = service["metadata"].get("namespace")
            selector = service["spec"].get("selector") or {}
            selected = [
                w.pod_spec() for w in templates
                if w.doc["metadata"].get("namespace") == namespace and selector
                and selector.items() <= template_labels(w).items()
            ]
            found.append(pytest.param(service, selected,
                                      id=f"{source}:Service/{service['metadata']['name']}"))
    return found


def template_labels(workload: Workload) -> dict[str, str]:
    if workload.kind == "Pod":
        return dict(workload.doc["metadata"].get("labels") or {})
    if workload.kind == "CronJob":
        template = workload.doc["spec"]["jobTemplate"]["spec"]["template"]
    else:
        template = workload.doc["spec"]["template"]
    return dict(template["metadata"].get("labels") or {})


@pytest.mark.parametrize(("service", "pod_specs"), services_and_templates())
def test_service_ports_reach_a_container_port_on_every_supported_kubernetes(
    service: dict[str, Any], pod_specs: list[dict[str, Any]]
) -> None:
    """A named targetPort must name a port of a regular container: Kubernetes before 1.32
    does not resolve the named ports of native sidecars (init containers) for Services, so
    their Services would get no endpoints. Those use the number."""
    assert pod_specs, f"Service {service['metadata']['name']} selects no pod template"
    for port in service["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        for spec in pod_specs:
            regular = {p.get("name"): p["containerPort"]
                       for c in spec.get("containers", []) for p in c.get("ports", [])}
            native = {p["containerPort"] for c in spec.get("initContainers", [])
                      if c.get("restartPolicy") == "Always" for p in c.get("ports", [])}
            if isinstance(target, str):
                assert target in regular, (
                    f"port {port.get('name')}: targetPort {target!r} names no port of a regular"
                    " container (a native sidecar's port must be given as a number)")
            else:
                assert target in set(regular.values()) | native, (
                    f"port {port.get('name')}: no container declares port {target}")
