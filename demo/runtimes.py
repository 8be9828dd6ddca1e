"""Which runtime can this machine run a pod on, and why (not)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from demo.errors import DemoError

RUNTIMES = ("kind", "compose", "local")


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


def choose(requested: str | None = None) -> Choice:
    """The best runtime available, or the one the user asked for with DEMO_RUNTIME."""
    requested = requested or os.environ.get("DEMO_RUNTIME") or None
    if requested is not None and requested not in RUNTIMES:
        raise DemoError(f"DEMO_RUNTIME={requested!r}: expected one of {', '.join(RUNTIMES)}")
    docker_problem = docker_engine_problem()
    missing_kind = [tool for tool in ("kind", "kubectl") if shutil.which(tool) is None]
    compose = compose_command() if docker_problem is None else None

    if requested == "local":
        return Choice("local", "DEMO_RUNTIME=local")
    if requested in (None, "kind") and not missing_kind and docker_problem is None:
        return Choice("kind", "kind, kubectl and a Docker engine are available")
    why_not_kind = (
        f"{' and '.join(missing_kind)} not on PATH" if missing_kind else docker_problem or ""
    )
    if requested == "kind":
        raise DemoError(f"DEMO_RUNTIME=kind, but {why_not_kind}")
    if requested in (None, "compose") and docker_problem is None and compose is not None:
        return Choice("compose", f"no kind ({why_not_kind}); Docker engine and Compose found")
    why_not_compose = docker_problem or "neither `docker compose` nor `docker-compose` found"
    if requested == "compose":
        raise DemoError(f"DEMO_RUNTIME=compose, but {why_not_compose}")
    return Choice("local", f"no kind ({why_not_kind}); no Compose ({why_not_compose})")
