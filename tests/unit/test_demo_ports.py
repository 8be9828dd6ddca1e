"""A demo never reports on processes it did not start: it checks its ports before it
builds or starts anything (naming each port in use and what holds it), and its readiness
wait takes an HTTP 200 only from the process it started."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import demo.__main__ as runner
from demo import containers, ports, processes, sidecar
from demo.errors import DemoError
from demo.local import LocalPod
from demo.runtimes import Choice
from tests.conftest import ROOT, free_port, http_ok, wait_until

SERVER = "import http.server, sys; http.server.test(http.server.SimpleHTTPRequestHandler, " \
         "port=int(sys.argv[1]), bind='127.0.0.1')"


@pytest.fixture
def impostor() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """Another process answering HTTP 200 on a free port."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/"), what="the impostor server")
    yield port, proc
    proc.kill()
    proc.wait()


def test_a_port_held_by_another_process_is_named_with_what_holds_it(impostor) -> None:
    port, proc = impostor
    assert ports.in_use(port)
    with pytest.raises(DemoError) as error:
        ports.check_free([ports.Port(port, "web-app"), ports.Port(free_port(), "other")],
                         "local")
    message = str(error.value)
    assert f"127.0.0.1:{port} (web-app) is held by pid {proc.pid}" in message
    assert "other" not in message  # only the ports in use
    assert "make demo-clean" in message and "\n" not in message


def test_the_listening_socket_is_known_to_be_held_by_its_process() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert ports.held_by(port, "127.0.0.1", {os.getpid()}) is True
        assert ports.held_by(port, "127.0.0.1", {os.getppid()}) is False
    assert ports.held_by(port, "127.0.0.1", {os.getpid()}) is False  # nobody listens


@pytest.fixture
def no_build(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every build and start of a demo recorded instead of done."""
    done: list[str] = []
    monkeypatch.setattr(containers, "build_images", lambda: done.append("build") or "tag")
    monkeypatch.setattr(containers, "use_kind_cluster", lambda create=True: done.append("kind"))
    monkeypatch.setattr(LocalPod, "start", lambda *_args, **_kwargs: done.append("start"))
    monkeypatch.setattr(containers, "own_published_ports", lambda _profile: {})
    return done


def test_a_held_port_stops_the_compose_demo_before_it_builds(
        impostor, no_build: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    port, proc = impostor
    compose_file = tmp_path / "docker-compose.yml"
    compose_file.write_text(
        "services:\n"
        "  sidecar-main:\n"
        "    profiles: [sidecar]\n"
        f'    ports: ["${{PODPATTERNS_PUBLISH_ADDRESS:-127.0.0.1}}:{port}:8080"]\n')
    monkeypatch.setattr(containers, "COMPOSE_FILE", compose_file)
    monkeypatch.setattr(runner, "choose", lambda *_args: Choice("compose", "test"))
    assert runner.main(["sidecar"]) == 1
    assert no_build == []  # nothing built, nothing started
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"127.0.0.1:{port} (published by Compose service sidecar-main) is held by " \
           f"pid {proc.pid}" in err


def test_a_held_port_stops_the_local_demo_before_it_starts_anything(
        impostor, no_build: list[str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    port, proc = impostor
    monkeypatch.setattr(sidecar, "PORTS", {**sidecar.PORTS, "collector": port})
    monkeypatch.setattr(processes, "STATE_DIR", Path("/nonexistent"))
    assert runner.main(["sidecar", "--runtime", "local"]) == 1
    assert no_build == []
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f":{port} (log-collector HTTP) is held by pid {proc.pid}" in err


def test_readiness_refuses_a_200_from_a_process_the_demo_did_not_start(
        impostor, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The false verdict: the demo's collector had exited with 'Address already in use',
    another process answered 200 on its port, and the demo counted that one's records."""
    port, proc = impostor
    monkeypatch.setattr(processes, "STATE_DIR", tmp_path)
    with pytest.raises(DemoError) as error, LocalPod("standin") as pod:
        # Alive, and never listening: what answers on the port is the impostor.
        pod.start("log-collector", "tests.unit.standin_demo", {}, listens_on=[port])
        pod.wait_ready("log-collector", f"http://127.0.0.1:{port}/", timeout=10)
    processes.clean(tmp_path)  # the directory it kept, its logs in it, for the user
    message = str(error.value)
    assert f"port {port} is held by pid {proc.pid}" in message
    assert "not by the log-collector this demo started" in message


def test_the_demo_talks_to_the_ports_compose_publishes() -> None:
    """The patterns' host ports and docker-compose.yml's agree (either port syntax)."""
    from demo import adapter, ambassador

    for module, profile in ((sidecar, "sidecar"), (adapter, "adapter"),
                            (ambassador, "ambassador")):
        published = {p.port for p in containers.compose_ports(profile)}
        assert set(module.PORTS.values()) <= published, profile


@pytest.mark.parametrize(("entry", "expected"), [
    ("8080:8080", ("0.0.0.0", 8080)),
    ("127.0.0.1:8081:8081/tcp", ("127.0.0.1", 8081)),
    ("${PODPATTERNS_PUBLISH_ADDRESS:-127.0.0.1}:9102:9102", ("127.0.0.1", 9102)),
    ({"target": 8080, "published": 8084, "host_ip": "127.0.0.1"}, ("127.0.0.1", 8084)),
    ("8080", None),
])
def test_compose_port_entries_in_every_form(entry: object, expected: object,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PODPATTERNS_PUBLISH_ADDRESS", raising=False)
    assert containers._published(entry) == expected
    monkeypatch.setenv("PODPATTERNS_PUBLISH_ADDRESS", "0.0.0.0")
    if isinstance(entry, str) and entry.startswith("$"):
        assert containers._published(entry) == ("0.0.0.0", 9102)
