"""The adapter demo: legacy app -> two log files on the shared volume -> log-adapter ->
OpenTelemetry JSON records (its stdout) and Prometheus metrics (:9103)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from demo import containers, podman
from demo.console import explore
from demo.local import LocalPod, demo_seconds, say, wait_http
from demo.ports import Port
from demo.timing import every_second, how_long

NAMESPACE = "podpatterns-adapter"
PROFILE = "adapter"
# Host ports, as docker-compose.yml publishes them (a unit test holds the two together):
# the app on 8082, since the sidecar demo's app has 8080.
PORTS = {"app": 8082, "adapter": 9103}
SERVICES = ["adapter-main", "adapter-adapter"]
# On podman: (workload, containerPort) of k8s/adapter -> host port, on 127.0.0.1.
PODMAN_PUBLISH = {("legacy-app", 8080): PORTS["app"], ("legacy-app", 9103): PORTS["adapter"]}


def url(name: str) -> str:
    return f"http://127.0.0.1:{PORTS[name]}"


def ports(runtime: str) -> list[Port]:
    """What the demo listens on in `runtime` (Compose: docker-compose.yml says)."""
    if runtime == "kind":
        return [Port(PORTS["app"], "kubectl port-forward to legacy-app"),
                Port(PORTS["adapter"], "kubectl port-forward to the log-adapter's metrics")]
    if runtime == "podman":
        return [Port(PORTS["app"], "legacy-app, published by podman"),
                Port(PORTS["adapter"], "log-adapter admin, published by podman")]
    return [Port(PORTS["app"], "legacy-app"), Port(PORTS["adapter"], "log-adapter admin")]


def tallies() -> dict[str, float]:
    """Sums of the series a learner looks at first."""
    text = requests.get(f"{url('adapter')}/metrics", timeout=5).text
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "http_requests_total":
                key = "requests" if s.labels["status"] < "500" else "5xx"
                found[key] = found.get(key, 0) + s.value
            elif s.name == "app_log_records_total" and s.labels["severity"] == "ERROR":
                found["app errors"] = found.get("app errors", 0) + s.value
            elif s.name == "adapter_lines_total":
                found[s.labels["result"]] = found.get(s.labels["result"], 0) + s.value
    return found


def exercise(seconds: float, check: Callable[[], None]) -> None:
    """Generate traffic and show the adapter's metrics growing (0 seconds: until Ctrl-C).
    `check()` raises when something the demo started is gone: nothing else is counted."""
    say(f"generating traffic; the adapter's metrics are at {url('adapter')}/metrics "
        f"({how_long(seconds)})")

    def step() -> str:
        requests.get(f"{url('app')}/traffic", params={"n": 30}, timeout=30)
        t = tallies()
        total = t.get("requests", 0) + t.get("5xx", 0)
        return (f"requests {total:>6.0f}  of which 5xx {t.get('5xx', 0):>5.0f}"
                f"  app ERROR records {t.get('app errors', 0):>5.0f}"
                f"  lines parsed {t.get('parsed', 0):>6.0f} rejected {t.get('rejected', 0):>3.0f}")

    every_second(seconds, check, step)


def show_twins(logs: Path, adapter_output: Path) -> None:
    """Raw legacy lines and the JSON records the adapter made of them, one after the other."""
    records = [
        json.loads(line) for line in adapter_output.read_text(errors="replace").splitlines()
        if line.startswith("{") and '"observed_timestamp"' in line
    ]
    access = next((r for r in reversed(records) if "url.path" in r.get("attributes", {})), None)
    if access is not None:
        say("an access-log line, as gunicorn wrote it to access.log:")
        print(access["body"])
        say("and its JSON twin, on the adapter's stdout:")
        print(json.dumps(access, indent=2))
    raw = (logs / "app.log").read_text(errors="replace").splitlines()
    twin = next((r for r in records if "exception.type" in r.get("attributes", {})), None)
    if twin is None:
        return
    first_line = twin["body"].split("\n", 1)[0]
    start = next((i for i, line in enumerate(raw) if line.endswith(" - " + first_line)), None)
    if start is None:
        return
    say("a legacy record, as the app wrote it to app.log:")
    print("\n".join(raw[start:start + twin["body"].count("\n") + 1]))
    say("and the adapter's JSON twin of it, on its stdout:")
    print(json.dumps(twin, indent=2))


def run_local() -> None:
    with LocalPod("adapter") as pod:
        logs = pod.path("shared-volume")
        say(f"shared volume (the pod's emptyDir): {logs}")
        # The adapter starts first, as its native sidecar does in Kubernetes.
        pod.start("log-adapter", "patterns.adapter.log_adapter", {
            "ADAPTER_INPUTS": f"combined={logs}/access.log,legacy={logs}/app.log",
            "ADAPTER_STATE_DIR": str(pod.path("adapter-state")),
            "ADAPTER_HTTP_HOST": "127.0.0.1", "ADAPTER_HTTP_PORT": str(PORTS["adapter"]),
            "OTEL_SERVICE_NAME": "legacy-app",
        }, listens_on=[PORTS["adapter"]])
        pod.wait_ready("log-adapter", f"{url('adapter')}/readyz")
        pod.start("legacy-app", "patterns.adapter.legacy_app", {
            "LEGACY_APP_HOST": "127.0.0.1", "LEGACY_APP_PORT": str(PORTS["app"]),
            "LEGACY_APP_LOG_DIR": str(logs),
        }, listens_on=[PORTS["app"]])
        pod.wait_ready("legacy-app", f"{url('app')}/healthz")
        exercise(demo_seconds(), pod.check_running)
        time.sleep(1.5)  # the last traceback is emitted after a quiet second
        pod.check_running()
        show_twins(logs, pod.log_of("log-adapter"))
        say(f"error rate per path, from the adapter's metrics: {url('adapter')}/metrics "
            "(series http_requests_by_path_total); the lab guide has the PromQL")


# The request the explore hints follow, as the lab guide's step 2 does: its line in
# access.log and the record the adapter made of it are both found by its path. /traffic
# never asks for this order, so each holds one line and one record: the twins.
TWIN_PATH = "/orders/2026"
TWIN_LINE = f"grep 'GET {TWIN_PATH} ' /var/log/app/access.log"
TWIN_RECORD = f"""grep '"url.path":"{TWIN_PATH}"'"""


def request_twin() -> None:
    """The one request whose line and record the hints show (a 404: no such order)."""
    requests.get(url("app") + TWIN_PATH, timeout=10)


def explore_commands(runtime: str, main: str = "<main>", adapter: str = "<adapter>"
                     ) -> list[str]:
    """What to look at after the demo; `main` and `adapter` name the Compose containers."""
    if runtime == "kind":
        kubectl = f"kubectl -n {NAMESPACE}"
        in_main = f"{kubectl} exec deploy/legacy-app -c main --"
        adapter_output = f"{kubectl} logs deploy/legacy-app -c adapter"
        metrics = (f"{in_main} python -c \"import urllib.request; print(urllib.request"
                   ".urlopen('http://localhost:9103/metrics').read().decode())\"")
    elif runtime == "podman":
        app = podman.pod_name("Deployment", "legacy-app")
        in_main, adapter_output = f"podman exec {app}-main", f"podman logs {app}-adapter"
        metrics = f"curl {url('adapter')}/metrics"
    else:
        in_main, adapter_output = f"docker exec {main}", f"docker logs {adapter}"
        metrics = f"curl {url('adapter')}/metrics"
    return [f"{in_main} {TWIN_LINE}   # one request's line, as the app wrote it",
            f"{adapter_output} | {TWIN_RECORD}   # its JSON twin, from the adapter",
            metrics]


def run_compose() -> None:
    containers.compose_up(PROFILE)
    for name, path in (("app", "/healthz"), ("adapter", "/readyz")):
        wait_http(url(name) + path,
                  check=lambda port=PORTS[name]: containers.check_compose_owner(PROFILE, port))
    exercise(demo_seconds(30), lambda: containers.check_compose_running(PROFILE, SERVICES))
    request_twin()
    running = containers.compose_containers(PROFILE)
    main, adapter = (running[s][:12] if s in running else f"<{s} container>" for s in SERVICES)
    explore(explore_commands("compose", main, adapter))


def run_kind() -> None:
    containers.kind_up("adapter", [NAMESPACE])
    with containers.port_forward(NAMESPACE, "svc/legacy-app", PORTS["app"], 8080) as app, \
            containers.port_forward(NAMESPACE, "svc/legacy-app-metrics", PORTS["adapter"],
                                    9103) as metrics:
        exercise(demo_seconds(30), containers.check_all(app, metrics))
        request_twin()
    explore(explore_commands("kind"))


def run_podman() -> None:
    played = containers.podman_up(PROFILE, PODMAN_PUBLISH)
    check = podman.check_running(played.plan)
    for name, path in (("app", "/healthz"), ("adapter", "/readyz")):
        wait_http(url(name) + path, check=check)
    exercise(demo_seconds(30), check)
    request_twin()
    explore(explore_commands("podman"))
