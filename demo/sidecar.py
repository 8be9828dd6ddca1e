"""The sidecar demo: app -> shared volume -> log-shipper sidecar -> log-collector."""

from __future__ import annotations

import time

import requests

from demo import containers
from demo.local import LocalPod, demo_seconds, say, wait_http

NAMESPACE = "podpatterns-sidecar"
APP_URL = "http://127.0.0.1:8080"
COLLECTOR_URL = "http://127.0.0.1:8081"
SHIPPER_ADMIN = "http://127.0.0.1:9102"
TAG = "app.access"


def lines_written() -> int:
    # The sequence number, not the process's own count: it continues across app restarts.
    # /api/stats answers with the last seq before its own request's line, which the app
    # writes right after: that line counts too.
    return int(requests.get(f"{APP_URL}/api/stats", timeout=5).json()["last_seq"]) + 1


def lines_received() -> int:
    counts = requests.get(f"{COLLECTOR_URL}/api/counts", timeout=5).json()
    return int(counts["tags"].get(TAG, 0))


def exercise(seconds: float) -> None:
    """Generate traffic and show lines arriving until `seconds` pass (0: until Ctrl-C)."""
    say(f"generating traffic; watch the collector live at {COLLECTOR_URL}/ "
        + ("(Ctrl-C to stop)" if not seconds else f"for {seconds:.0f}s"))
    started = time.monotonic()
    try:
        while not seconds or time.monotonic() - started < seconds:
            requests.get(f"{APP_URL}/traffic", params={"n": 2000}, timeout=10)
            say(f"{time.monotonic() - started:5.0f}s  app wrote {lines_written():>8} lines"
                f"  collector has {lines_received():>8}")
            time.sleep(1)
    except KeyboardInterrupt:
        say("Ctrl-C: stopping")


def wait_for_collector(expected: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    received = lines_received()
    while received < expected and time.monotonic() < deadline:
        time.sleep(0.5)
        received = lines_received()
    return received


def report(written: int) -> None:
    received = wait_for_collector(written)
    verdict = "nothing lost" if received >= written else f"{written - received} missing"
    say(f"{received} records reached the collector for {written} lines written ({verdict})")


def run_local() -> None:
    pod = LocalPod("sidecar")
    logs = pod.path("shared-volume")
    say(f"shared volume (the pod's emptyDir): {logs}")
    try:
        pod.start("log-collector", "patterns.sidecar.collector", {
            "COLLECTOR_FORWARD_HOST": "127.0.0.1", "COLLECTOR_HTTP_HOST": "127.0.0.1",
            "COLLECTOR_DATA_DIR": str(pod.path("collector-data")),
        })
        pod.wait_ready("log-collector", f"{COLLECTOR_URL}/readyz")
        # The sidecar starts before the app, as a native sidecar does in Kubernetes.
        pod.start("log-shipper", "patterns.sidecar.shipper", {
            "SHIPPER_PATHS": f"{logs}/*.log", "SHIPPER_TAG": TAG,
            "SHIPPER_STATE_DIR": str(pod.path("shipper-state")),
            "SHIPPER_HTTP_HOST": "127.0.0.1", "FLUENT_HOST": "127.0.0.1",
        })
        pod.wait_ready("log-shipper", f"{SHIPPER_ADMIN}/readyz")
        pod.start("web-app", "patterns.sidecar.web_app", {
            "WEB_APP_HOST": "127.0.0.1", "WEB_APP_LOG_DIR": str(logs),
        })
        pod.wait_ready("web-app", f"{APP_URL}/readyz")
        exercise(demo_seconds())
        written = lines_written()
        say("stopping the app first; the sidecar ships its last lines")
        pod.stop("web-app")
        report(written)
        say(f"rotated files in the shared volume: {sorted(p.name for p in logs.iterdir())}")
    finally:
        pod.stop_all()
        say(f"everything the demo wrote is under {pod.workdir}")


def explore(runtime: str) -> None:
    if runtime == "kind":
        say("explore:\n"
            f"  kubectl -n {NAMESPACE} get pods\n"
            f"  kubectl -n {NAMESPACE} exec deploy/web-app -c main -- ls -l /var/log/app\n"
            f"  kubectl -n {NAMESPACE} exec deploy/web-app -c sidecar -- ls -l /var/log/app\n"
            f"  kubectl -n {NAMESPACE} port-forward svc/log-collector 8081"
            f"  # then open {COLLECTOR_URL}/\n"
            "  make demo-clean")
    else:
        say("explore:\n"
            "  docker ps --filter name=sidecar\n"
            "  docker exec <sidecar-main container> ls -l /var/log/app\n"
            f"  open {COLLECTOR_URL}/ (live records), {SHIPPER_ADMIN}/metrics (the shipper)\n"
            "  make demo-clean")


def run_compose() -> None:
    containers.compose_up("sidecar")
    for url in (f"{APP_URL}/readyz", f"{COLLECTOR_URL}/readyz", f"{SHIPPER_ADMIN}/readyz"):
        wait_http(url)
    exercise(demo_seconds(30))
    report(lines_written())
    explore("compose")


def run_kind() -> None:
    containers.kind_up("sidecar", [NAMESPACE])
    with containers.port_forward(NAMESPACE, "svc/web-app", 8080, 8080), \
            containers.port_forward(NAMESPACE, "svc/log-collector", 8081, 8081):
        exercise(demo_seconds(30))
        report(lines_written())
    explore("kind")
