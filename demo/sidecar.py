"""The sidecar demo: app -> shared volume -> log-shipper sidecar -> log-collector."""

from __future__ import annotations

import time
from collections.abc import Callable

import requests

from demo import console, containers, podman
from demo.local import LocalPod, demo_seconds, say, wait_http
from demo.ports import Port
from demo.timing import every_second, how_long

NAMESPACE = "podpatterns-sidecar"
PROFILE = "sidecar"
# Host ports, as docker-compose.yml publishes them (a unit test holds the two together).
PORTS = {"app": 8080, "collector": 8081, "forward": 24224, "shipper": 9102}
TAG = "app.access"
# On podman: (workload, containerPort) of k8s/sidecar -> host port, on 127.0.0.1.
PODMAN_PUBLISH = {("web-app", 8080): PORTS["app"], ("log-collector", 8081): PORTS["collector"]}


def url(name: str) -> str:
    return f"http://127.0.0.1:{PORTS[name]}"


def ports(runtime: str) -> list[Port]:
    """What the demo listens on in `runtime` (Compose: docker-compose.yml says)."""
    if runtime == "kind":
        return [Port(PORTS["app"], "kubectl port-forward to web-app"),
                Port(PORTS["collector"], "kubectl port-forward to log-collector")]
    if runtime == "podman":
        return [Port(PORTS["app"], "web-app, published by podman"),
                Port(PORTS["collector"], "log-collector HTTP, published by podman")]
    return [Port(PORTS["app"], "web-app"), Port(PORTS["collector"], "log-collector HTTP"),
            Port(PORTS["forward"], "log-collector Forward"),
            Port(PORTS["shipper"], "log-shipper admin")]


def lines_written() -> int:
    # The sequence number, not the process's own count: it continues across app restarts.
    # /api/stats answers with the last seq before its own request's line, which the app
    # writes right after: that line counts too.
    return int(requests.get(f"{url('app')}/api/stats", timeout=5).json()["last_seq"]) + 1


def lines_received() -> int:
    counts = requests.get(f"{url('collector')}/api/counts", timeout=5).json()
    return int(counts["tags"].get(TAG, 0))


def exercise(seconds: float, check: Callable[[], None]) -> None:
    """Generate traffic and show lines arriving until `seconds` pass (0: until Ctrl-C).
    `check()` raises when something the demo started is gone: nothing else is counted."""
    say(f"generating traffic; watch the collector live at {url('collector')}/ "
        f"({how_long(seconds)})")

    def step() -> str:
        requests.get(f"{url('app')}/traffic", params={"n": 2000}, timeout=10)
        return f"app wrote {lines_written():>8} lines  collector has {lines_received():>8}"

    every_second(seconds, check, step)


def wait_for_collector(expected: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    received = lines_received()
    while received < expected and time.monotonic() < deadline:
        time.sleep(0.5)
        received = lines_received()
    return received


def report(written: int, check: Callable[[], None]) -> None:
    """The verdict, only about the collector this demo started and checked."""
    received = wait_for_collector(written)
    check()
    verdict = "nothing lost" if received >= written else f"{written - received} missing"
    say(f"{received} records reached the collector for {written} lines written ({verdict})")


def run_local() -> None:
    with LocalPod("sidecar") as pod:
        logs = pod.path("shared-volume")
        say(f"shared volume (the pod's emptyDir): {logs}")
        pod.start("log-collector", "patterns.sidecar.collector", {
            "COLLECTOR_FORWARD_HOST": "127.0.0.1", "COLLECTOR_HTTP_HOST": "127.0.0.1",
            "COLLECTOR_FORWARD_PORT": str(PORTS["forward"]),
            "COLLECTOR_HTTP_PORT": str(PORTS["collector"]),
            "COLLECTOR_DATA_DIR": str(pod.path("collector-data")),
        }, listens_on=[PORTS["collector"], PORTS["forward"]])
        pod.wait_ready("log-collector", f"{url('collector')}/readyz")
        # The sidecar starts before the app, as a native sidecar does in Kubernetes.
        pod.start("log-shipper", "patterns.sidecar.shipper", {
            "SHIPPER_PATHS": f"{logs}/*.log", "FLUENT_TAG": TAG,
            "SHIPPER_STATE_DIR": str(pod.path("shipper-state")),
            "SHIPPER_HTTP_HOST": "127.0.0.1", "SHIPPER_HTTP_PORT": str(PORTS["shipper"]),
            "FLUENT_HOST": "127.0.0.1", "FLUENT_PORT": str(PORTS["forward"]),
        }, listens_on=[PORTS["shipper"]])
        pod.wait_ready("log-shipper", f"{url('shipper')}/readyz")
        pod.start("web-app", "patterns.sidecar.web_app", {
            "WEB_APP_HOST": "127.0.0.1", "WEB_APP_PORT": str(PORTS["app"]),
            "WEB_APP_LOG_DIR": str(logs),
        }, listens_on=[PORTS["app"]])
        pod.wait_ready("web-app", f"{url('app')}/readyz")
        exercise(demo_seconds(), pod.check_running)
        written = lines_written()
        pod.check_running()
        say("stopping the app first; the sidecar ships its last lines")
        pod.stop("web-app")
        report(written, pod.check_running)
        say(f"rotated files in the shared volume: {sorted(p.name for p in logs.iterdir())}")


def explore(runtime: str) -> None:
    if runtime == "kind":
        console.explore([
            f"kubectl -n {NAMESPACE} get pods",
            f"kubectl -n {NAMESPACE} exec deploy/web-app -c main -- ls -l /var/log/app",
            f"kubectl -n {NAMESPACE} exec deploy/web-app -c sidecar -- ls -l /var/log/app",
            f"kubectl -n {NAMESPACE} port-forward svc/log-collector 8081"
            f"  # then open {url('collector')}/"])
    elif runtime == "podman":
        app = podman.pod_name("Deployment", "web-app")
        console.explore([
            "podman pod ps",
            f"podman exec {app}-main ls -l /var/log/app",
            f"podman exec {app}-sidecar ls -l /var/log/app",
            f"open {url('collector')}/ (live records)"])
    else:
        console.explore([
            "docker ps --filter name=sidecar",
            "docker exec <sidecar-main container> ls -l /var/log/app",
            f"open {url('collector')}/ (live records), {url('shipper')}/metrics (the shipper)"])


SERVICES = ["sidecar-main", "sidecar-shipper", "sidecar-collector"]


def run_compose() -> None:
    containers.compose_up(PROFILE)
    for name in ("app", "collector", "shipper"):
        wait_http(f"{url(name)}/readyz",
                  check=lambda port=PORTS[name]: containers.check_compose_owner(PROFILE, port))
    def check() -> None:
        containers.check_compose_running(PROFILE, SERVICES)

    exercise(demo_seconds(30), check)
    report(lines_written(), check)
    explore("compose")


def run_kind() -> None:
    containers.kind_up("sidecar", [NAMESPACE])
    with containers.port_forward(NAMESPACE, "svc/web-app", PORTS["app"], 8080) as app, \
            containers.port_forward(NAMESPACE, "svc/log-collector", PORTS["collector"],
                                    8081) as collector:
        check = containers.check_all(app, collector)
        exercise(demo_seconds(30), check)
        report(lines_written(), check)
    explore("kind")


def run_podman() -> None:
    played = containers.podman_up(PROFILE, PODMAN_PUBLISH)
    check = podman.check_running(played.plan)
    for name in ("app", "collector"):
        wait_http(f"{url(name)}/readyz", check=check)
    exercise(demo_seconds(30), check)
    report(lines_written(), check)
    explore("podman")
