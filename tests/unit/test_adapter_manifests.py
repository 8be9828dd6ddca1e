"""The adapter pattern's manifests (k8s/adapter and its kind overlay) and its Compose
services say what the lab guide says: the legacy app and the log-adapter share one pod,
the adapter reads the app's files from the shared volume without being able to change
them, starts first as a native sidecar, and its metrics are where the Service and its
Prometheus annotations point.

(The hardening rules every workload shares are checked in test_manifests.py.)
"""

from __future__ import annotations

import fnmatch
from typing import Any

import pytest
import yaml

from patterns.adapter.legacy_app.config import Config as AppConfig
from patterns.adapter.legacy_app.config import load_config as app_config
from patterns.adapter.log_adapter.config import Config as AdapterConfig
from patterns.adapter.log_adapter.config import load_config as adapter_config
from tests.conftest import ROOT
from tests.conftest import render_kustomize as render

NAMESPACE = "podpatterns-adapter"
METRICS_PATH = "/metrics"  # patterns/common/admin.py serves the registry there


@pytest.fixture(scope="module", params=["k8s/adapter", "k8s/adapter/kind"])
def docs(request: pytest.FixtureRequest) -> dict[tuple[str, str], dict[str, Any]]:
    return render(request.param)


def pod_template(docs: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    return dict(docs[("Deployment", "legacy-app")]["spec"]["template"])


def one(containers: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [c for c in containers if c["name"] == name]
    assert len(found) == 1, f"no container {name}"
    return found[0]


def env_of(c: dict[str, Any]) -> dict[str, str]:
    """The literal values (entries from a Secret have none here)."""
    return {item["name"]: item["value"] for item in c.get("env", []) if "value" in item}


def mounts(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in c.get("volumeMounts", [])}


def adapter_and_app(spec: dict[str, Any]) -> tuple[dict, AdapterConfig, dict, AppConfig]:
    adapter = one(spec.get("initContainers", []), "adapter")
    main = one(spec["containers"], "main")
    # load_config raises ConfigError on a variable the service would refuse at start.
    return adapter, adapter_config(env_of(adapter)), main, app_config(env_of(main))


def test_the_legacy_app_and_its_adapter_are_one_pod(docs):
    spec = pod_template(docs)["spec"]
    assert [c["image"].rpartition(":")[0] for c in spec["containers"]] == ["podpatterns/legacy-app"]
    assert [c["image"].rpartition(":")[0] for c in spec["initContainers"]] == [
        "podpatterns/log-adapter"
    ]


def test_the_adapter_is_a_native_sidecar_that_is_ready_before_the_app_starts(docs):
    adapter, config, _main, _app = adapter_and_app(pod_template(docs)["spec"])
    assert adapter["restartPolicy"] == "Always"
    probe = adapter["startupProbe"]["httpGet"]
    # /readyz answers 200 once the adapter follows the files and can write checkpoints.
    assert probe["path"] == "/readyz"
    assert named_port(adapter, probe["port"]) == config.admin_port


def test_a_forward_output_would_take_its_shared_key_from_the_secret(docs):
    # ADAPTER_OUTPUT is stdout here; switched to forward, the key is never a literal in the
    # manifest, and the pod starts without the Secret (the link is then unauthenticated).
    adapter, _config, _main, _app = adapter_and_app(pod_template(docs)["spec"])
    refs = {item["name"]: item["valueFrom"]["secretKeyRef"] for item in adapter["env"]
            if "secretKeyRef" in item.get("valueFrom", {})}
    assert "FLUENT_SHARED_KEY" not in env_of(adapter)
    assert refs["FLUENT_SHARED_KEY"] == {
        "name": "forward-shared-key", "key": "shared-key", "optional": True}


def named_port(c: dict[str, Any], port: str | int) -> int:
    if isinstance(port, int):
        return port
    return int(next(p["containerPort"] for p in c["ports"] if p["name"] == port))


def test_the_adapter_reads_the_apps_files_read_only_on_the_shared_volume(docs):
    spec = pod_template(docs)["spec"]
    adapter, config, main, app = adapter_and_app(spec)

    app_mount = mounts(main)[str(app.log_dir)]
    adapter_mount = mounts(adapter)[str(app.log_dir)]
    assert adapter_mount["name"] == app_mount["name"]
    assert adapter_mount.get("readOnly") is True
    assert app_mount.get("readOnly") is not True, "the app must be able to write its logs"
    volume = next(v for v in spec["volumes"] if v["name"] == app_mount["name"])
    assert "emptyDir" in volume

    # Each input's glob is inside that mount and names the file the app writes.
    formats = {spec_.format: spec_.glob for spec_ in config.inputs}
    assert set(formats) == {"combined", "legacy"}
    for glob in formats.values():
        assert glob.startswith(adapter_mount["mountPath"].rstrip("/") + "/")
    assert fnmatch.fnmatch(str(app.access_log_path), formats["combined"])
    assert fnmatch.fnmatch(str(app.app_log_path), formats["legacy"])

    # Its checkpoints are on a volume of their own, so a restarted adapter resumes.
    state = mounts(adapter)[str(config.state_dir)]
    assert state.get("readOnly") is not True
    assert "emptyDir" in next(v for v in spec["volumes"] if v["name"] == state["name"])


def test_the_metrics_service_points_prometheus_at_the_adapter(docs):
    template = pod_template(docs)
    adapter, config, _main, _app = adapter_and_app(template["spec"])
    service = docs[("Service", "legacy-app-metrics")]

    selector = service["spec"]["selector"]
    assert selector and selector.items() <= template["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    assert named_port(adapter, port["targetPort"]) == config.admin_port
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(config.admin_port)
    assert annotations["prometheus.io/path"] == METRICS_PATH
    assert service["metadata"]["namespace"] == NAMESPACE


def compose_services() -> dict[str, dict[str, Any]]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return {
        name: service
        for name, service in compose["services"].items()
        if "adapter" in service.get("profiles", [])
    }


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    return {key: str(value) for key, value in service.get("environment", {}).items()}


def compose_mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """mount path -> (volume, read-only) of the short `volume:path[:ro]` syntax."""
    found = {}
    for entry in service.get("volumes", []):
        volume, path, *mode = entry.split(":")
        found[path] = (volume, mode == ["ro"])
    return found


def test_compose_emulates_the_pod_with_a_shared_network_and_volume():
    services = compose_services()
    assert set(services) == {"adapter-main", "adapter-adapter"}
    main, adapter = services["adapter-main"], services["adapter-adapter"]
    app = app_config(compose_env(main))
    config = adapter_config(compose_env(adapter))

    assert adapter["network_mode"] == "service:adapter-main"
    assert "ports" not in adapter, "its ports are the app's network namespace's"
    # Published by the app's service (host port = container port; the bind address is
    # tests/unit/test_compose.py's business).
    published = [entry.rsplit(":", 2)[1:] for entry in main["ports"]]
    assert [str(config.admin_port)] * 2 in published

    app_volume, app_read_only = compose_mounts(main)[str(app.log_dir)]
    adapter_volume, adapter_read_only = compose_mounts(adapter)[str(app.log_dir)]
    assert adapter_volume == app_volume and adapter_read_only and not app_read_only
    formats = {spec.format: spec.glob for spec in config.inputs}
    assert fnmatch.fnmatch(str(app.access_log_path), formats["combined"])
    assert fnmatch.fnmatch(str(app.app_log_path), formats["legacy"])
    state_volume, state_read_only = compose_mounts(adapter)[str(config.state_dir)]
    assert not state_read_only and state_volume != app_volume
