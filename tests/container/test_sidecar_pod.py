"""The sidecar pattern in real containers built from images/: a web-app + log-shipper pod
sharing a log volume and a network namespace, shipping to a log-collector pod.

The pods are started once for the module; each test checks one thing a user relies on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from tests.container.conftest import Pod, PodContainer, Pods

LOG_DIR = "/var/log/app"
ACCESS_LOG = f"{LOG_DIR}/access.log"
TRAFFIC_LINES = 500


@dataclass
class SidecarPods:
    collector_pod: Pod
    app_pod: Pod
    collector: PodContainer
    app: PodContainer
    shipper: PodContainer
    pods: Pods


def ready(container: PodContainer, port: int) -> bool:
    return container.running() and container.http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200


@pytest.fixture(scope="module")
def sidecar(images: dict[str, str], pods: Pods) -> SidecarPods:
    collector_pod = pods.new("collector")
    collector_data = collector_pod.volume("data")
    collector = collector_pod.start(
        "log-collector", images["log-collector"],
        env={"COLLECTOR_FORWARD_PORT": "24224", "COLLECTOR_HTTP_PORT": "8081",
             "COLLECTOR_DATA_DIR": "/var/lib/log-collector"},
        mounts={collector_data: "/var/lib/log-collector"},
    )
    pods.eventually(lambda: ready(collector, 8081), "the collector to be ready")

    app_pod = pods.new("web")
    logs = app_pod.volume("logs")
    state = app_pod.volume("state")
    app = app_pod.start("web-app", images["web-app"],
                        env={"WEB_APP_PORT": "8080", "WEB_APP_LOG_DIR": LOG_DIR},
                        mounts={logs: LOG_DIR})
    shipper = app_pod.start(
        "log-shipper", images["log-shipper"],
        env={"SHIPPER_PATHS": ACCESS_LOG, "FLUENT_HOST": collector_pod.address,
             "FLUENT_PORT": "24224", "SHIPPER_HTTP_PORT": "9102",
             "SHIPPER_STATE_DIR": "/var/lib/log-shipper"},
        # The shipper only reads the app's logs, as in the k8s manifest.
        mounts={logs: f"{LOG_DIR}:ro", state: "/var/lib/log-shipper"},
    )
    pods.eventually(lambda: ready(app, 8080), "the web app to be ready")
    pods.eventually(lambda: ready(shipper, 9102), "the shipper to be ready")
    return SidecarPods(collector_pod, app_pod, collector, app, shipper, pods)


@pytest.fixture(scope="module")
def traffic(sidecar: SidecarPods) -> dict[str, Any]:
    """Ask the app (on its localhost, from inside the pod) to log TRAFFIC_LINES requests."""
    status, body = sidecar.app.http_get(f"http://127.0.0.1:8080/traffic?n={TRAFFIC_LINES}",
                                        timeout=30)
    assert status == 200, f"/traffic answered {status}: {body}"
    result = json.loads(body)
    assert result["written"] == TRAFFIC_LINES
    return dict(result)


def file_identity(container: PodContainer, path: str) -> dict[str, Any]:
    code = (
        "import hashlib, json, os, sys\n"
        f"st = os.stat({path!r})\n"
        f"digest = hashlib.sha256(open({path!r}, 'rb').read()).hexdigest()\n"
        "json.dump({'ino': st.st_ino, 'size': st.st_size, 'sha256': digest}, sys.stdout)\n"
    )
    exit_code, output = container.python(code)
    assert exit_code == 0, f"cannot read {path} in {container.name}: {output}"
    return dict(json.loads(output))


def test_app_and_shipper_see_the_same_file_on_the_shared_volume(
    sidecar: SidecarPods, traffic: dict[str, Any]
) -> None:
    in_app = file_identity(sidecar.app, ACCESS_LOG)
    in_shipper = file_identity(sidecar.shipper, ACCESS_LOG)
    assert in_app["size"] > 0
    assert in_app == in_shipper


def test_shipper_mounts_the_log_volume_read_only(sidecar: SidecarPods) -> None:
    exit_code, output = sidecar.shipper.python(f"open('{LOG_DIR}/probe', 'w')")
    assert exit_code != 0 and "Read-only file system" in output, output


def test_app_reaches_the_shipper_admin_port_on_localhost(sidecar: SidecarPods) -> None:
    status, body = sidecar.app.http_get("http://localhost:9102/healthz")
    assert status == 200, body
    status, metrics = sidecar.app.http_get("http://localhost:9102/metrics")
    assert status == 200
    assert "process_resident_memory_bytes" in metrics


def test_every_container_runs_as_uid_10001_on_a_read_only_root(sidecar: SidecarPods) -> None:
    for container in (sidecar.collector, sidecar.app, sidecar.shipper):
        attrs = container.attrs()
        assert attrs["HostConfig"]["ReadonlyRootfs"] is True
        assert attrs["Config"]["User"] == "10001:10001"
        # The service itself (PID 1 of the container), not just our exec, is non-root with
        # no effective capabilities.
        exit_code, status = container.exec("cat", "/proc/1/status")
        assert exit_code == 0, status
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        assert fields["Uid"].split() == ["10001"] * 4, (container.name, fields["Uid"])
        assert fields["Gid"].split() == ["10001"] * 4, (container.name, fields["Gid"])
        assert int(fields["CapEff"].strip(), 16) == 0, (container.name, fields["CapEff"])
        assert fields["NoNewPrivs"].strip() == "1", container.name
        exit_code, output = container.python("open('/opt/venv/probe', 'w')")
        assert exit_code != 0 and "Read-only file system" in output, (container.name, output)


def test_every_line_reaches_the_collector_once(
    sidecar: SidecarPods, traffic: dict[str, Any]
) -> None:
    # Everything the app logged (its own probes included) is what must arrive: no line
    # lost, none twice.
    def logged_lines() -> int:
        exit_code, output = sidecar.app.python(
            f"import glob; print(sum(sum(1 for _ in open(p, 'rb')) "
            f"for p in glob.glob({ACCESS_LOG!r} + '*')))"
        )
        assert exit_code == 0, output
        return int(output)

    def collected() -> int:
        status, body = sidecar.collector.http_get("http://127.0.0.1:8081/api/counts")
        assert status == 200, body
        return int(json.loads(body)["total"])

    assert logged_lines() >= TRAFFIC_LINES
    sidecar.pods.eventually(lambda: collected() >= logged_lines(),
                            f"the collector to receive the {logged_lines()} logged lines")
    assert collected() == logged_lines()


def test_each_image_carries_only_its_own_dependencies(sidecar: SidecarPods) -> None:
    # The shipper is core-only, the collector adds orjson; the web app has the web extra,
    # not db; only the ambassador's image has uvloop.
    for container, absent in ((sidecar.shipper, "flask"), (sidecar.shipper, "orjson"),
                              (sidecar.shipper, "uvloop"), (sidecar.collector, "gunicorn"),
                              (sidecar.collector, "uvloop"), (sidecar.app, "psycopg")):
        exit_code, output = container.python(f"import {absent}")
        assert exit_code != 0 and "ModuleNotFoundError" in output, (container.name, absent)
    exit_code, output = sidecar.app.python("import flask, gunicorn")
    assert exit_code == 0, output
    exit_code, output = sidecar.collector.python("import orjson")
    assert exit_code == 0, output
    # No pip at run time: nothing can be installed into a running container's venv.
    exit_code, _ = sidecar.shipper.python("import pip")
    assert exit_code != 0
