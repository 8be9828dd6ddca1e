"""`make demo-<pattern>` picks the best runtime available and says why."""

import stat
from pathlib import Path

import pytest

from demo.errors import DemoError
from demo.runtimes import choose


def fake_tools(directory: Path, **exit_codes: int) -> None:
    """Executables that exit with the given code, standing in for docker, kind, ..."""
    for name, code in exit_codes.items():
        path = directory / name.replace("_", "-")
        path.write_text(f"#!/bin/sh\nexit {code}\n")
        path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def path_of(tmp_path, monkeypatch):
    calls = iter(range(100))

    def use(**tools: int) -> None:
        directory = tmp_path / f"bin{next(calls)}"
        directory.mkdir()
        fake_tools(directory, **tools)
        monkeypatch.setenv("PATH", str(directory))
        monkeypatch.delenv("DEMO_RUNTIME", raising=False)

    return use


def test_only_python_means_local_processes(path_of):
    path_of()
    choice = choose()
    assert choice.runtime == "local"
    assert "kind and kubectl not on PATH" in choice.reason
    assert "no `docker` command on PATH" in choice.reason


def test_a_docker_engine_with_compose_but_no_kind_means_compose(path_of):
    path_of(docker=0)
    choice = choose()
    assert choice.runtime == "compose"
    assert "kind and kubectl not on PATH" in choice.reason
    assert "no podman (no `podman` command on PATH)" in choice.reason


def test_podman_and_a_docker_engine_without_kind_mean_podman(path_of):
    """podman plays the manifests of k8s/, closer to kind than Compose; the images it runs
    are built with Docker."""
    path_of(docker=0, podman=0)
    choice = choose()
    assert choice.runtime == "podman"
    assert "kind and kubectl not on PATH" in choice.reason
    assert "podman and a Docker engine found" in choice.reason


def test_kind_comes_before_podman(path_of):
    path_of(docker=0, podman=0, kind=0, kubectl=0)
    assert choose().runtime == "kind"


def test_podman_without_a_docker_engine_says_why_it_is_not_chosen(path_of):
    path_of(docker=1, podman=0)
    choice = choose()
    assert choice.runtime == "local"
    assert "no podman (`docker info` failed: no Docker engine is reachable (the images " \
           "podman runs are built with Docker))" in choice.reason


def test_a_podman_that_does_not_work_is_passed_over(path_of):
    path_of(docker=0, podman=125)
    choice = choose()
    assert choice.runtime == "compose"
    assert "no podman (`podman info` failed" in choice.reason


def test_kind_kubectl_and_docker_mean_kind(path_of):
    path_of(docker=0, kind=0, kubectl=0)
    assert choose().runtime == "kind"


def test_an_unreachable_docker_engine_falls_back_to_local(path_of):
    path_of(docker=1, kind=0, kubectl=0)
    choice = choose()
    assert choice.runtime == "local"
    assert "no Docker engine is reachable" in choice.reason


def test_demo_runtime_forces_a_choice_and_refuses_an_impossible_one(path_of, monkeypatch):
    path_of(docker=0, kind=0, kubectl=0)
    monkeypatch.setenv("DEMO_RUNTIME", "local")
    assert choose().runtime == "local"
    path_of()
    monkeypatch.setenv("DEMO_RUNTIME", "kind")
    with pytest.raises(DemoError, match="DEMO_RUNTIME=kind, but kind and kubectl not on PATH"):
        choose()
    monkeypatch.setenv("DEMO_RUNTIME", "podman")
    with pytest.raises(DemoError, match="DEMO_RUNTIME=podman, but no `podman` command on PATH"):
        choose()
    path_of(docker=0, podman=0, kind=0, kubectl=0)
    monkeypatch.setenv("DEMO_RUNTIME", "podman")
    assert choose().runtime == "podman"
    monkeypatch.setenv("DEMO_RUNTIME", "minikube")
    with pytest.raises(DemoError, match="expected one of kind, podman, compose, local"):
        choose()


def test_a_demo_without_a_podman_runtime_gets_the_next_best(path_of, monkeypatch):
    """A pattern's demo runs on the runtimes it has a run_<runtime>() for."""
    path_of(docker=0, podman=0)
    choice = choose(supported=("kind", "compose", "local"))
    assert choice.runtime == "compose"
    assert "no podman (this demo does not run on it)" in choice.reason
    monkeypatch.setenv("DEMO_RUNTIME", "podman")
    with pytest.raises(DemoError, match="this demo runs on kind, compose, local only"):
        choose(supported=("kind", "compose", "local"))
