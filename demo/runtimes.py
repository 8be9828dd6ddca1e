"""Which runtime can this machine run a pod on, and why (not)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Collection
from dataclasses import dataclass

from demo import podman
from demo.errors import DemoError

# In the order `make demo-<pattern>` prefers them.
RUNTIMES = ("kind", "podman", "compose", "local")


@dataclass(frozen=True)
class Choice:
    runtime: str
    reason: str


def _run_ok(argv: list[str], timeout: float = 10) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=timeout).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def docker_engine_problem() -> str | None:
    if shutil.which("docker") is None:
        return "no `docker` command on PATH"
    if not _run_ok(["docker", "info"]):
        return "`docker info` failed: no Docker engine is reachable"
    return None


def compose_command() -> list[str] | None:
    """`docker compose` (v2 plugin) if present, else `docker-compose` (v1)."""
    if _run_ok(["docker", "compose", "version"]):
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


# How the reasons name each runtime, and what it needs once it is found.
NAMES = {"kind": "kind", "podman": "podman", "compose": "Compose", "local": "local processes"}
FOUND = {
    "kind": "kind, kubectl and a Docker engine are available",
    "podman": "podman and a Docker engine found: it plays the manifests of k8s/",
    "compose": "Docker engine and Compose found",
}


def _problem(runtime: str, docker_problem: str | None) -> str | None:
    """Why `runtime` cannot run here, or None."""
    if runtime == "kind":
        missing = [tool for tool in ("kind", "kubectl") if shutil.which(tool) is None]
        return f"{' and '.join(missing)} not on PATH" if missing else docker_problem
    if runtime == "podman":
        # podman plays the manifests of k8s/; the images it runs are built with Docker.
        return podman.problem() or (
            f"{docker_problem} (the images podman runs are built with Docker)"
            if docker_problem else None)
    if runtime == "compose":
        if docker_problem:
            return docker_problem
        if compose_command() is None:
            return "neither `docker compose` nor `docker-compose` found"
    return None


def choose(requested: str | None = None, supported: Collection[str] = RUNTIMES) -> Choice:
    """The best runtime available of those the demo runs on (`supported`), or the one the
    user asked for with DEMO_RUNTIME; the reason says why the better ones were not."""
    requested = requested or os.environ.get("DEMO_RUNTIME") or None
    if requested is not None and requested not in RUNTIMES:
        raise DemoError(f"DEMO_RUNTIME={requested!r}: expected one of {', '.join(RUNTIMES)}")
    if requested is not None and requested not in supported:
        raise DemoError(f"DEMO_RUNTIME={requested}, but this demo runs on "
                        f"{', '.join(r for r in RUNTIMES if r in supported)} only")
    if requested == "local":
        return Choice("local", "DEMO_RUNTIME=local")
    docker_problem = docker_engine_problem()
    why_not: list[str] = []
    for runtime in ("kind", "podman", "compose"):
        if requested not in (None, runtime):
            continue
        problem = (_problem(runtime, docker_problem) if runtime in supported
                   else "this demo does not run on it")
        if problem is None:
            asked = [f"DEMO_RUNTIME={runtime}"] if requested else []
            return Choice(runtime, "; ".join([*asked, *why_not, FOUND[runtime]]))
        if requested is not None:
            raise DemoError(f"DEMO_RUNTIME={runtime}, but {problem}")
        why_not.append(f"no {NAMES[runtime]} ({problem})")
    if "local" not in supported:
        raise DemoError(f"this demo needs {' or '.join(NAMES[r] for r in supported)}: "
                        + "; ".join(why_not))
    return Choice("local", "; ".join(why_not))
