"""The sidecar pattern's manifests (k8s/sidecar) played by podman: the promises the kind
tier checks on a cluster, checked with `podman exec` inside the pods podman runs.

What podman cannot show, the kind tier checks: the native sidecar started and ready before
the app, the Job completing while its sidecar runs, probes, the NetworkPolicies.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from demo.podman import state
from tests import pod_assertions as check
from tests.podman.conftest import PlayedPattern, Running, eventually

TRAFFIC_LINES = 200


@pytest.fixture(scope="module")
def sidecar(play: Callable[..., PlayedPattern]) -> PlayedPattern:
    return play("sidecar")


@pytest.fixture(scope="module")
def pod(sidecar: PlayedPattern) -> dict[str, Running]:
    """The native-sidecar web-app pod's app and shipper, the collector, and the app's log
    directory as each of the two mounts it; with TRAFFIC_LINES requests logged."""
    app, shipper = sidecar.find("web-app", "log-shipper")
    (collector,) = sidecar.find("log-collector")
    port = app.env("WEB_APP_PORT", "8080")
    status, body = check.http_get(app.exec, f"http://127.0.0.1:{port}/traffic?n={TRAFFIC_LINES}",
                                  timeout=30)
    assert status == 200, body
    assert json.loads(body)["written"] == TRAFFIC_LINES
    return {"app": app, "shipper": shipper, "collector": collector}


def log_dirs(app: Running, shipper: Running) -> tuple[str, str]:
    """The app's log directory, where the app and where the shipper mount it."""
    app_dir = app.env("WEB_APP_LOG_DIR", "/var/log/app")
    shared = [m["name"] for m in app.item.spec.get("volumeMounts", [])
              if m["mountPath"] == app_dir]
    assert shared, f"the web app's log dir {app_dir} is not on a volume"
    shipper_dir = shipper.mount_of(shared[0])
    assert shipper_dir, f"the shipper does not mount the app's log volume {shared[0]}"
    return app_dir, shipper_dir


def counts_url(collector: Running) -> str:
    return f"http://127.0.0.1:{collector.env('COLLECTOR_HTTP_PORT', '8081')}/api/counts"


def collector_tags(collector: Running) -> dict[str, int]:
    return check.collector_tags(collector.exec, counts_url(collector))


def test_app_and_shipper_see_the_same_file_on_the_shared_volume(pod) -> None:
    app_dir, shipper_dir = log_dirs(pod["app"], pod["shipper"])
    check.assert_same_file(pod["app"].exec, f"{app_dir}/access.log",
                           pod["shipper"].exec, f"{shipper_dir}/access.log")


def test_the_shipper_reads_the_apps_logs_but_cannot_change_them(pod) -> None:
    _, shipper_dir = log_dirs(pod["app"], pod["shipper"])
    check.assert_reads_but_cannot_write(pod["shipper"].exec, f"{shipper_dir}/access.log")


def test_the_app_reaches_the_shipper_admin_port_on_localhost(pod) -> None:
    port = pod["shipper"].env("SHIPPER_HTTP_PORT", "9102")
    status, body = check.http_get(pod["app"].exec, f"http://localhost:{port}/healthz")
    assert status == 200, body


def test_every_line_reaches_the_collector_once(pod) -> None:
    """Every line the app logged, under the native sidecar's own tag, none lost and none
    twice (podman runs no probes: nothing else writes to the log meanwhile, and the count
    is read again on each poll in case something did)."""
    app, shipper, collector = pod["app"], pod["shipper"], pod["collector"]
    app_dir, _ = log_dirs(app, shipper)
    tag = shipper.env("FLUENT_TAG", "")
    assert tag, "the shipper has no FLUENT_TAG"
    eventually(lambda: check.every_line_collected_once(
        app.exec, f"{app_dir}/access.log*", collector.exec, counts_url(collector), tag,
        at_least=TRAFFIC_LINES), f"the collector to hold every line of tag {tag}, once")


def test_the_batch_pods_lines_all_reach_the_collector(sidecar: PlayedPattern, pod) -> None:
    """The Job's pod (a plain pod on podman): main exits 0 and its sidecar ships exactly
    the lines it wrote, across the log's rotations. (That the Job then completes, its
    sidecar stopped, only a cluster shows: the kind tier.)"""
    jobs = [p for p in sidecar.plan.pods if p.kind == "Job"]
    assert jobs, "the sidecar manifests have no Job"
    for job in jobs:
        main = next(c for c in job.containers if "podpatterns/web-app:" in c.spec["image"])
        shipper = next(c for c in job.containers if "podpatterns/log-shipper:" in c.spec["image"])
        assert shipper.native_sidecar, "the Job's shipper is not a native sidecar"
        lines = int(main.spec["args"][main.spec["args"].index("--lines") + 1])
        tag = shipper.env("FLUENT_TAG", "")
        eventually(lambda main=main: state(main.container) == ("exited", 0),
                   f"{main.container} to write its {lines} lines and exit 0", timeout=180)
        eventually(lambda tag=tag, lines=lines: collector_tags(pod["collector"]).get(tag) == lines,
                   f"the collector to hold exactly {lines} records of tag {tag}", timeout=120)


def test_every_container_runs_as_uid_10001_on_a_read_only_root(sidecar: PlayedPattern,
                                                               pod) -> None:
    running = sidecar.running()
    assert {pod["app"].name, pod["shipper"].name, pod["collector"].name} <= \
        {where.name for where in running}
    for where in running:  # the classic variant's and the Job's too
        check.assert_hardened(where.exec, where.name)
