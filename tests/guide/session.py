"""Run one guide on one runtime, and leave nothing behind: what the guide's own clean-up
missed (processes, containers, volumes) is removed and makes the test fail."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.guide.harness import GUIDES, Shell, parse, run_guide, session_env

# Every process the guide starts inherits this variable (the demos pass their environment
# on, so do pg_ctl and runuser): it finds what the guide left, in any session.
MARKER = "PODPATTERNS_GUIDE_RUN"


# Guides that cannot pass yet, and why: strict, so the day they pass the mark must go.
PENDING: dict[str, str] = {}


def guides() -> Iterator[Any]:
    """The guides as pytest parameters, a pending one marked as such."""
    for guide in GUIDES:
        reason = PENDING.get(guide.parent.name)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        yield pytest.param(guide, id=guide.parent.name, marks=marks)


def compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(
            ["docker", "compose", "version"], capture_output=True, check=False).returncode == 0:
        return ["docker", "compose"]
    return None


def _marked_processes(marker: str) -> list[int]:
    found = []
    needle = f"{MARKER}={marker}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if needle in environ and state != "Z":
            found.append(int(entry.name))
    return found


def _describe(pid: int) -> str:
    try:
        raw = (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return f"pid {pid}"
    return f"pid {pid}: " + raw.replace(b"\0", b" ").decode(errors="replace").strip()[:200]


def _end_processes(marker: str, grace: float = 15.0) -> list[str]:
    """SIGTERM, then SIGKILL, to every process carrying the marker; what was found."""
    left = [_describe(pid) for pid in _marked_processes(marker)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _marked_processes(marker):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while _marked_processes(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
    return left


def _compose_leftovers(project: str) -> list[str]:
    label = f"label=com.docker.compose.project={project}"
    containers = subprocess.run(["docker", "ps", "-a", "--filter", label, "--format",
                                 "container {{.Names}} ({{.Status}})"],
                                capture_output=True, text=True, check=False).stdout.split("\n")
    volumes = subprocess.run(["docker", "volume", "ls", "--filter", label, "--format",
                              "volume {{.Name}}"],
                             capture_output=True, text=True, check=False).stdout.split("\n")
    networks = subprocess.run(["docker", "network", "ls", "--filter", label, "--format",
                               "network {{.Name}}"],
                              capture_output=True, text=True, check=False).stdout.split("\n")
    return [line for line in containers + volumes + networks if line.strip()]


def _compose_down(project: str) -> None:
    command = compose_command()
    if command is None:
        return
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    profiles = sorted({p for service in services.values() for p in service.get("profiles", [])})
    selected = [arg for profile in profiles for arg in ("--profile", profile)]
    subprocess.run([*command, "--project-name", project, *selected, "down", "-v",
                    "--remove-orphans", "--timeout", "5"],
                   cwd=ROOT, capture_output=True, check=False,
                   env={**os.environ, "IMAGE_TAG": "none"})


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def run_guide_session(guide: Path, runtime: str, transcript_dir: Path,
                      extra_env: Mapping[str, str] = {}) -> None:
    """Run the guide's blocks for `runtime`; fail the test with every problem found, the
    guide's own and what it left behind."""
    document = parse(guide, runtime)
    if not any(True for _ in document.examples()):
        pytest.fail(f"{_shown(guide)} has no block for the {runtime} runtime "
                    f"(```sh {runtime}): every guide runs on it", pytrace=False)
    marker = uuid.uuid4().hex[:12]
    # A directory every user can enter: the ambassador's local PostgreSQL runs as nobody
    # when we are root, in a directory made under TMPDIR.
    tmpdir = Path(tempfile.mkdtemp(prefix=f"podpatterns-guide-{runtime}-"))
    tmpdir.chmod(0o755)
    workdir = tmpdir / ".harness"
    workdir.mkdir()
    project = f"ppguide{marker}"
    env = session_env(runtime, tmpdir, {MARKER: marker, **extra_env})
    if runtime == "compose":
        env["COMPOSE_PROJECT_NAME"] = project
    transcript = transcript_dir / f"{guide.parent.name}-{runtime}.transcript"
    transcript.write_text("")
    problems: list[str] = []
    shell = Shell(env, workdir, transcript)
    try:
        problems += run_guide(document, shell)
    finally:
        shell.close()
        left = _end_processes(marker)
        if left:
            problems.append("the guide's clean-up left processes running (ended now):\n  "
                            + "\n  ".join(left))
        if runtime == "compose":
            leftovers = _compose_leftovers(project)
            _compose_down(project)
            if leftovers:
                problems.append("the guide's clean-up left Compose objects (removed now):\n  "
                                + "\n  ".join(leftovers))
        shutil.rmtree(tmpdir, ignore_errors=True)
    if problems:
        pytest.fail(f"{_shown(guide)} on {runtime} (the session's transcript: "
                    f"{transcript}):\n\n" + "\n\n".join(problems), pytrace=False)
