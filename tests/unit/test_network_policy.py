"""Each pattern's NetworkPolicies admit exactly the connections its pods need.

The policies are read as a cluster enforces them (a small evaluator of the NetworkPolicy
rules below), over the pods of the same `kubectl kustomize` render (base and kind overlay):

- every namespace denies ingress by default;
- every connection the manifests' own settings make (a shipper's FLUENT_HOST:FLUENT_PORT,
  the ambassador's AMBASSADOR_UPSTREAMS, a standby's PG_PRIMARY_HOST:PG_PRIMARY_PORT,
  resolved through the Services to the pods and ports they select) is admitted;
- nothing else is: a pod of the render, a stranger pod in any namespace and a Prometheus
  in `monitoring` reach only the apps' own ports (open to all), and that Prometheus also
  the metrics ports (every `*_HTTP_PORT` of a service);
- every policy selects real pods, names ports they declare, and admits peers by selectors
  that select real pods (or that Prometheus), never by IP block or whole namespaces.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import render_kustomize as render

RENDERS = ["k8s/sidecar", "k8s/sidecar/kind", "k8s/adapter", "k8s/adapter/kind",
           "k8s/ambassador", "k8s/ambassador/kind"]
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
NAMESPACE_NAME = "kubernetes.io/metadata.name"  # set by the API server on every namespace
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
Docs = dict[tuple[str, str], dict[str, Any]]


@dataclass(frozen=True)
class Source:
    """Whoever opens a connection: a pod's namespace and labels."""

    namespace: str
    labels: tuple[tuple[str, str], ...]
    name: str

    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


# The scraper the policies admit to the metrics ports (documented in each lab guide).
PROMETHEUS = Source("monitoring", (("app.kubernetes.io/name", "prometheus"),), "prometheus")


@dataclass(frozen=True)
class Pod:
    """A pod template of the render."""

    namespace: str
    name: str  # the workload's
    labels: Mapping[str, str]
    containers: tuple[dict[str, Any], ...]  # init containers (native sidecars) included

    def source(self) -> Source:
        return Source(self.namespace, tuple(sorted(self.labels.items())), self.name)

    def ports(self) -> set[tuple[int, str]]:
        return {(p["containerPort"], p.get("protocol", "TCP"))
                for c in self.containers for p in c.get("ports", [])}

    def named_ports(self) -> dict[str, int]:
        return {p["name"]: p["containerPort"]
                for c in self.containers for p in c.get("ports", []) if "name" in p}

    def app_ports(self) -> set[int]:
        """The ports of the app container itself (`main`): what the app serves to all."""
        return {p["containerPort"] for c in self.containers if c["name"] == "main"
                for p in c.get("ports", [])}

    def metrics_ports(self) -> set[int]:
        """Every service's admin port (/metrics): its *_HTTP_PORT setting."""
        return {int(value) for c in self.containers for key, value in env_of(c).items()
                if key.endswith("_HTTP_PORT")}

    def runs(self, image: str) -> bool:
        return any(c["image"].rpartition(":")[0] == image for c in self.containers)


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e}


def pods_of(docs: Docs) -> list[Pod]:
    found = []
    for (kind, name), doc in docs.items():
        if kind in WORKLOAD_KINDS:
            template = doc["spec"]["template"]
            spec = template["spec"]
            found.append(Pod(doc["metadata"]["namespace"], name,
                             dict(template["metadata"].get("labels") or {}),
                             tuple(spec.get("initContainers", []) + spec["containers"])))
    return found


def namespace_labels(docs: Docs, namespace: str) -> dict[str, str]:
    doc = docs.get(("Namespace", namespace))
    labels = dict(doc["metadata"].get("labels") or {}) if doc else {}
    return {**labels, NAMESPACE_NAME: namespace}


def policies_of(docs: Docs) -> list[dict[str, Any]]:
    return [doc for (kind, _), doc in docs.items() if kind == "NetworkPolicy"]


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A label selector as the API defines it; {} selects everything."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def peer_admits(peer: Mapping[str, Any], policy_namespace: str, source: Source,
                docs: Docs) -> bool:
    if "ipBlock" in peer:
        return False  # pods are matched by labels here; an IP block matches no pod label
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], namespace_labels(docs, source.namespace)):
            return False
    elif source.namespace != policy_namespace:
        return False  # a podSelector alone means the policy's own namespace
    return selects(peer.get("podSelector"), source.label_map())


def port_admits(entry: Mapping[str, Any], pod: Pod, port: int, protocol: str) -> bool:
    if entry.get("protocol", "TCP") != protocol:
        return False
    if "port" not in entry:
        return True
    named = entry["port"]
    first = pod.named_ports().get(named, -1) if isinstance(named, str) else int(named)
    return first <= port <= int(entry.get("endPort", first))


def admits(docs: Docs, source: Source, pod: Pod, port: int, protocol: str = "TCP") -> bool:
    """Would the cluster let `source` open a connection to `pod` on `port`?"""
    applying = [
        p for p in policies_of(docs)
        if p["metadata"]["namespace"] == pod.namespace
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
        and selects(p["spec"].get("podSelector"), pod.labels)
    ]
    if not applying:
        return True  # a pod no policy selects is not isolated
    for policy in applying:
        for rule in policy["spec"].get("ingress") or []:
            ports = rule.get("ports") or [{"protocol": protocol}]
            peers = rule.get("from") or [{"namespaceSelector": {}, "podSelector": {}}]
            if (any(port_admits(entry, pod, port, protocol) for entry in ports)
                    and any(peer_admits(peer, policy["metadata"]["namespace"], source, docs)
                            for peer in peers)):
                return True
    return False


@dataclass(frozen=True)
class Flow:
    client: Pod
    server: Pod
    port: int
    why: str


def resolve(docs: Docs, pods: list[Pod], client: Pod, host: str, port: int,
            why: str) -> list[Flow]:
    """host:port as the client's setting names it -> the pods and port its Service selects."""
    if host in LOOPBACK:
        return []  # inside the pod: no policy applies
    parts = host.removesuffix(".cluster.local").removesuffix(".svc").split(".")
    name, namespace = parts[0], parts[1] if len(parts) > 1 else client.namespace
    service = docs.get(("Service", name))
    assert service and service["metadata"]["namespace"] == namespace, (
        f"{client.name}: {why} names {host}, which is no Service of the render")
    flows = []
    for service_port in service["spec"]["ports"]:
        if service_port["port"] != port:
            continue
        for pod in pods:
            # A Service's selector is a plain label map, not a LabelSelector.
            if pod.namespace == namespace and selects({"matchLabels": service["spec"]["selector"]},
                                                      pod.labels):
                target = service_port.get("targetPort", port)
                number = pod.named_ports()[target] if isinstance(target, str) else int(target)
                flows.append(Flow(client, pod, number, f"{why} {host}:{port}"))
    assert flows, f"{client.name}: {why} {host}:{port} reaches no pod"
    return flows


def needed_flows(docs: Docs) -> list[Flow]:
    """Every connection the pods' own settings make to another pod."""
    pods = pods_of(docs)
    flows: list[Flow] = []
    for pod in pods:
        for container in pod.containers:
            env = env_of(container)
            if "FLUENT_HOST" in env and env.get("ADAPTER_OUTPUT", "forward") == "forward":
                flows += resolve(docs, pods, pod, env["FLUENT_HOST"],
                                 int(env.get("FLUENT_PORT", "24224")), "FLUENT_HOST")
            for upstream in filter(None, env.get("AMBASSADOR_UPSTREAMS", "").split(",")):
                host, _, port = upstream.strip().rpartition(":")
                flows += resolve(docs, pods, pod, host, int(port), "AMBASSADOR_UPSTREAMS")
            if "PG_PRIMARY_HOST" in env:
                flows += resolve(docs, pods, pod, env["PG_PRIMARY_HOST"],
                                 int(env.get("PG_PRIMARY_PORT", "5432")), "PG_PRIMARY_HOST")
    return flows


def strangers(docs: Docs) -> list[Source]:
    """Pods nobody admitted: one in each namespace of the render, one in `default`."""
    namespaces = {pod.namespace for pod in pods_of(docs)} | {"default"}
    return [Source(ns, (("app.kubernetes.io/name", "stranger"),), f"stranger in {ns}")
            for ns in sorted(namespaces)]


@pytest.fixture(scope="module", params=RENDERS)
def docs(request: pytest.FixtureRequest) -> Docs:
    return render(request.param)


def test_every_namespace_denies_ingress_by_default(docs: Docs) -> None:
    namespaces = {name for kind, name in docs if kind == "Namespace"}
    assert {pod.namespace for pod in pods_of(docs)} <= namespaces
    for namespace in namespaces:
        default_deny = [
            p for p in policies_of(docs)
            if p["metadata"]["namespace"] == namespace
            and not selects_something_specific(p["spec"].get("podSelector"))
            and "Ingress" in p["spec"].get("policyTypes", [])
            and not p["spec"].get("ingress")
        ]
        assert default_deny, f"namespace {namespace} has no default-deny ingress policy"


def selects_something_specific(selector: Mapping[str, Any] | None) -> bool:
    return bool((selector or {}).get("matchLabels") or (selector or {}).get("matchExpressions"))


def test_the_connections_the_pods_make_are_admitted(docs: Docs) -> None:
    flows = needed_flows(docs)
    pods = pods_of(docs)
    # The settings really were found: each shipper forwards, each ambassador has upstreams.
    for image, setting in (("podpatterns/log-shipper", "FLUENT_HOST"),
                           ("podpatterns/db-ambassador", "AMBASSADOR_UPSTREAMS")):
        for pod in (p for p in pods if p.runs(image)):
            assert any(f.client == pod and f.why.startswith(setting) for f in flows), (
                f"{pod.name} runs {image} but no {setting} connection was derived")
    for flow in flows:
        assert admits(docs, flow.client.source(), flow.server, flow.port), (
            f"{flow.client.name} -> {flow.server.name}:{flow.port} ({flow.why}) is refused")


def test_nothing_else_is_admitted(docs: Docs) -> None:
    pods = pods_of(docs)
    needed = {(f.client.source(), f.server.name, f.port) for f in needed_flows(docs)}
    sources = [pod.source() for pod in pods] + strangers(docs) + [PROMETHEUS]
    undeclared = (1, "TCP")  # a port nobody declares: a rule without `ports` would admit it
    for server in pods:
        for port, protocol in sorted(server.ports() | {undeclared}):
            for source in sources:
                if not admits(docs, source, server, port, protocol):
                    continue
                assert (
                    (source, server.name, port) in needed
                    or port in server.app_ports()
                    or (source == PROMETHEUS and port in server.metrics_ports())
                ), f"{source.name} ({source.namespace}) is admitted to {server.name}:{port}"


def test_the_apps_ports_stay_open_and_prometheus_reaches_every_metrics_port(docs: Docs) -> None:
    for pod in pods_of(docs):
        for port in pod.app_ports():
            for stranger in strangers(docs):
                assert admits(docs, stranger, pod, port), f"{pod.name}:{port} (the app's port)"
        for port in pod.metrics_ports():
            assert admits(docs, PROMETHEUS, pod, port), f"{pod.name}:{port} for Prometheus"


def test_the_collectors_forward_port_admits_only_the_shippers(docs: Docs) -> None:
    # The same property as above, said the way the lab guide says it.
    pods = pods_of(docs)
    for collector in (p for p in pods if p.runs("podpatterns/log-collector")):
        forward = int(env_of(next(c for c in collector.containers
                                  if "podpatterns/log-collector:" in c["image"]))
                      .get("COLLECTOR_FORWARD_PORT", "24224"))
        admitted = {p.name for p in pods if admits(docs, p.source(), collector, forward)}
        assert admitted == {p.name for p in pods if p.runs("podpatterns/log-shipper")}
        assert not any(admits(docs, s, collector, forward) for s in strangers(docs))


def test_each_policy_names_real_pods_ports_and_peers(docs: Docs) -> None:
    pods = pods_of(docs)
    rendered_namespaces = {name for kind, name in docs if kind == "Namespace"}
    for policy in policies_of(docs):
        where = f"NetworkPolicy {policy['metadata']['name']}"
        namespace = policy["metadata"]["namespace"]
        selected = [p for p in pods if p.namespace == namespace
                    and selects(policy["spec"].get("podSelector"), p.labels)]
        assert selected, f"{where} selects no pod of {namespace}"
        for rule in policy["spec"].get("ingress") or []:
            assert rule.get("ports"), f"{where}: a rule without ports admits every port"
            for entry in rule["ports"]:
                assert isinstance(entry.get("port"), int), f"{where}: ports by number"
                for pod in selected:
                    assert (entry["port"], entry.get("protocol", "TCP")) in pod.ports(), (
                        f"{where}: {pod.name} declares no port {entry['port']}")
            for peer in rule.get("from") or []:
                check_peer(where, namespace, peer, pods, rendered_namespaces)


def check_peer(where: str, namespace: str, peer: Mapping[str, Any], pods: Iterable[Pod],
               rendered_namespaces: set[str]) -> None:
    assert "ipBlock" not in peer, f"{where}: peers by label, not by IP block"
    assert selects_something_specific(peer.get("podSelector")), (
        f"{where}: a peer without a pod selector admits every pod of its namespace(s)")
    peer_namespace = namespace
    if "namespaceSelector" in peer:
        # By name only: any other namespace label can be set by whoever edits a namespace.
        assert set(peer["namespaceSelector"]) == {"matchLabels"}, where
        assert set(peer["namespaceSelector"]["matchLabels"]) == {NAMESPACE_NAME}, where
        peer_namespace = peer["namespaceSelector"]["matchLabels"][NAMESPACE_NAME]
    if peer_namespace in rendered_namespaces:
        assert any(p.namespace == peer_namespace and selects(peer["podSelector"], p.labels)
                   for p in pods), f"{where}: peer {peer} selects no pod of the render"
    else:
        assert (peer_namespace, peer["podSelector"]) == (
            PROMETHEUS.namespace, {"matchLabels": PROMETHEUS.label_map()}), (
            f"{where}: peer {peer} is outside the render and is not the documented Prometheus")


# The evaluator itself, on hand-made policies: it must refuse and admit as a cluster does.

def _policy(namespace: str, selector: dict, ingress: list | None) -> dict:
    spec: dict[str, Any] = {"podSelector": selector, "policyTypes": ["Ingress"]}
    if ingress is not None:
        spec["ingress"] = ingress
    return {"kind": "NetworkPolicy", "metadata": {"name": str(id(spec)), "namespace": namespace},
            "spec": spec}


def test_the_evaluator_reads_policies_as_a_cluster_does() -> None:
    server = Pod("ns", "server", {"app": "server"},
                 ({"name": "main", "image": "x:1", "ports": [{"containerPort": 80}]},))
    friend = Source("ns", (("app", "friend"),), "friend")
    other = Source("ns", (("app", "other"),), "other")
    friend_elsewhere = Source("elsewhere", (("app", "friend"),), "friend elsewhere")

    def with_policies(*policies: dict) -> Docs:
        return {("NetworkPolicy", str(i)): p for i, p in enumerate(policies)}

    assert admits({}, other, server, 80)  # no policy: not isolated
    deny = _policy("ns", {}, None)
    assert not admits(with_policies(deny), friend, server, 80)
    allow = _policy("ns", {"matchLabels": {"app": "server"}}, [
        {"from": [{"podSelector": {"matchExpressions": [
            {"key": "app", "operator": "In", "values": ["friend"]}]}}],
         "ports": [{"protocol": "TCP", "port": 80}]}])
    docs = with_policies(deny, allow)
    assert admits(docs, friend, server, 80)
    assert not admits(docs, other, server, 80)
    assert not admits(docs, friend, server, 81)
    assert not admits(docs, friend, server, 80, "UDP")
    assert not admits(docs, friend_elsewhere, server, 80)  # podSelector alone: own namespace
    across = _policy("ns", {}, [{"from": [{
        "namespaceSelector": {"matchLabels": {NAMESPACE_NAME: "elsewhere"}},
        "podSelector": {"matchLabels": {"app": "friend"}}}], "ports": [{"port": 80}]}])
    assert admits(with_policies(deny, across), friend_elsewhere, server, 80)
    assert not admits(with_policies(deny, across), friend, server, 80)
    open_port = _policy("ns", {}, [{"ports": [{"port": 80}]}])
    assert admits(with_policies(deny, open_port), friend_elsewhere, server, 80)
    assert not admits(with_policies(deny, open_port), friend_elsewhere, server, 81)
