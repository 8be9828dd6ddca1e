"""The sidecar pattern's manifests say what the lab guide says: a native sidecar (an init
container with restartPolicy Always, gated by a startupProbe) next to a classic one, a Job
that completes while its native sidecar runs, and env that each service accepts.

(The hardening rules every workload shares are checked in test_manifests.py.)
"""

from __future__ import annotations

import fnmatch
from typing import Any

import pytest

from patterns.sidecar.collector.config import load_config as collector_config
from patterns.sidecar.shipper.config import load_config as shipper_config
from patterns.sidecar.web_app.config import load_config as web_app_config
from tests.conftest import render_kustomize as render

NAMESPACE = "podpatterns-sidecar"


@pytest.fixture(scope="module", params=["k8s/sidecar", "k8s/sidecar/kind"])
def docs(request: pytest.FixtureRequest) -> dict[tuple[str, str], dict[str, Any]]:
    return render(request.param)


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return dict(doc["spec"]["template"]["spec"])


def container(spec: dict[str, Any], name: str, *, init: bool) -> dict[str, Any]:
    found = [
        c for c in spec.get("initContainers" if init else "containers", []) if c["name"] == name
    ]
    assert len(found) == 1, f"no {'init ' if init else ''}container {name}"
    return dict(found[0])


def env_of(c: dict[str, Any]) -> dict[str, str]:
    """The literal values (entries from a Secret have none here)."""
    return {item["name"]: item["value"] for item in c.get("env", []) if "value" in item}


def secret_refs(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item["valueFrom"]["secretKeyRef"] for item in c.get("env", [])
            if "secretKeyRef" in item.get("valueFrom", {})}


def mounts(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in c.get("volumeMounts", [])}


def test_namespace_enforces_the_restricted_pod_security_profile(docs):
    labels = docs[("Namespace", NAMESPACE)]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_native_sidecar_is_a_restartable_init_container_that_gates_main(docs):
    spec = pod_spec(docs[("Deployment", "web-app")])
    sidecar = container(spec, "sidecar", init=True)

    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["startupProbe"]["httpGet"]["port"] == "shipper-admin"
    assert [c["name"] for c in spec["containers"]] == ["main"]


def test_classic_sidecar_is_a_second_container_that_outlives_main_on_stop(docs):
    spec = pod_spec(docs[("Deployment", "web-app-classic")])

    assert "initContainers" not in spec
    assert [c["name"] for c in spec["containers"]] == ["main", "sidecar"]
    sidecar = container(spec, "sidecar", init=False)
    assert "restartPolicy" not in sidecar
    # The preStop sleep must cover main's graceful stop, inside the pod's grace period.
    sleep = sidecar["lifecycle"]["preStop"]["sleep"]["seconds"]
    main_grace = web_app_config(env_of(container(spec, "main", init=False))).http.graceful_timeout
    drain = shipper_config(env_of(sidecar)).shutdown_timeout
    assert main_grace < sleep and sleep + drain < spec["terminationGracePeriodSeconds"]


def test_job_main_writes_and_exits_while_its_native_sidecar_ships(docs):
    job = docs[("Job", "log-batch")]
    spec = pod_spec(job)

    assert spec["restartPolicy"] == "Never"
    assert container(spec, "sidecar", init=True)["restartPolicy"] == "Always"
    main = container(spec, "main", init=False)
    assert main["args"][0] == "batch"
    # A stalled writer is killed; the check is about the file the batch writes.
    assert "access.log" in " ".join(main["livenessProbe"]["exec"]["command"])
    drain = shipper_config(env_of(container(spec, "sidecar", init=True))).shutdown_timeout
    assert drain < spec["terminationGracePeriodSeconds"]


@pytest.mark.parametrize(
    ("kind", "name"),
    [("Deployment", "web-app"), ("Deployment", "web-app-classic"), ("Job", "log-batch")],
)
def test_shipper_follows_the_files_main_writes_and_sends_to_the_collector(docs, kind, name):
    spec = pod_spec(docs[(kind, name)])
    sidecar = next(
        c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == "sidecar"
    )
    main = container(spec, "main", init=False)
    shipper = shipper_config(env_of(sidecar))  # raises ConfigError on a bad variable
    app = web_app_config(env_of(main))

    # The glob matches the app's access.log, on the same volume, read-only for the shipper.
    assert any(fnmatch.fnmatch(str(app.access_log_path), pattern) for pattern in shipper.paths)
    log_mount = mounts(sidecar)[str(app.log_dir)]
    assert log_mount["name"] == mounts(main)[str(app.log_dir)]["name"]
    assert log_mount.get("readOnly") is True
    # Its read positions are on a volume of their own, so a restarted shipper resumes.
    state_volume = mounts(sidecar)[str(shipper.state_dir)]["name"]
    assert "emptyDir" in next(v for v in spec["volumes"] if v["name"] == state_volume)
    # It sends to the collector Service's forward port.
    service = docs[("Service", "log-collector")]
    assert shipper.forward.host == f"log-collector.{NAMESPACE}.svc"
    forward = next(p for p in service["spec"]["ports"] if p["name"] == "forward")
    assert shipper.forward.port == forward["port"]
    # Service links off: a Service named web-app would otherwise set WEB_APP_PORT=tcp://...
    assert spec["enableServiceLinks"] is False


FORWARD_SECRET = {"name": "forward-shared-key", "key": "shared-key", "optional": True}


@pytest.mark.parametrize(
    ("kind", "name"),
    [("Deployment", "web-app"), ("Deployment", "web-app-classic"), ("Job", "log-batch")],
)
def test_shippers_take_the_forward_shared_key_from_the_secret(docs, kind, name):
    # Never a literal in the manifest; optional, so the pods start without the Secret (and
    # the Forward link is then unauthenticated, as the lab guide says).
    spec = pod_spec(docs[(kind, name)])
    sidecar = next(
        c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == "sidecar"
    )
    assert "FLUENT_SHARED_KEY" not in env_of(sidecar)
    assert secret_refs(sidecar)["FLUENT_SHARED_KEY"] == FORWARD_SECRET


def test_the_collector_reads_the_shippers_secret_if_it_reads_a_key(docs):
    # A key from another Secret (or a literal) would fail every shipper's handshake as soon
    # as the Secret exists. (That the collector reads it at all is the collector's own test.)
    collector = container(pod_spec(docs[("Deployment", "log-collector")]), "collector",
                          init=False)
    assert "COLLECTOR_SHARED_KEY" not in env_of(collector)
    assert secret_refs(collector).get("COLLECTOR_SHARED_KEY", FORWARD_SECRET) == FORWARD_SECRET


def test_collector_env_is_valid_and_its_data_is_on_a_volume(docs):
    spec = pod_spec(docs[("Deployment", "log-collector")])
    collector = container(spec, "collector", init=False)
    config = collector_config(env_of(collector))

    assert (config.forward_port, config.admin_port) == (24224, 8081)
    assert str(config.data_dir) in mounts(collector)


def test_services_reach_the_named_ports(docs):
    for name, ports in (
        ("web-app", {"http": 8080, "shipper-admin": 9102}),
        ("log-collector", {"forward": 24224, "http": 8081}),
    ):
        service = docs[("Service", name)]
        assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == ports


def test_images_are_the_suite_images_with_a_pinned_tag(docs):
    for (kind, name), doc in docs.items():
        if kind not in ("Deployment", "Job"):
            continue
        spec = pod_spec(doc)
        for c in spec.get("initContainers", []) + spec["containers"]:
            image, _, tag = c["image"].rpartition(":")
            assert image in (
                "podpatterns/web-app",
                "podpatterns/log-shipper",
                "podpatterns/log-collector",
            ), c["image"]
            assert tag and tag != "latest", f"{name}/{c['name']}: {c['image']}"


def test_the_kind_overlay_never_pulls():
    for (kind, _name), doc in render("k8s/sidecar/kind").items():
        if kind in ("Deployment", "Job"):
            spec = pod_spec(doc)
            for c in spec.get("initContainers", []) + spec["containers"]:
                assert c["imagePullPolicy"] == "Never"

