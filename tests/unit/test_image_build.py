"""images/build.py, the one build path of the images: each service image installs only its
own extras, the CA bundle for pip is opt-in, and $BASE_IMAGE is taken as is."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import ROOT


def load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("images_build", ROOT / "images" / "build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


build = load_build()
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirement_names(path: Path) -> set[str]:
    return {line.split("==")[0].split("[")[0].lower()
            for line in path.read_text().splitlines() if line}


def test_each_service_image_gets_only_its_extras(tmp_path: Path) -> None:
    specs = build.image_specs()
    names = build.requirement_sets(specs)
    build.write_requirements(tmp_path, names)
    core = {req.split("==")[0].lower() for req in PROJECT["dependencies"]}
    assert requirement_names(tmp_path / "requirements" / "core.txt") == core
    web = requirement_names(tmp_path / "requirements" / "web.txt")
    assert {"flask", "gunicorn"} <= web and "psycopg" not in web
    web_db = requirement_names(tmp_path / "requirements" / "web-db.txt")
    assert {"flask", "psycopg"} <= web_db
    # Core is msgpack, fluent-logger and prometheus-client: orjson and uvloop only where
    # the service imports them.
    assert not {"orjson", "uvloop"} & core
    assert requirement_names(tmp_path / "requirements" / "json.txt") == core | {"orjson"}
    assert requirement_names(tmp_path / "requirements" / "uvloop.txt") == core | {"uvloop"}
    expected = {"log-collector": "json", "log-shipper": "core", "log-adapter": "json",
                "db-ambassador": "uvloop", "web-app": "web", "legacy-app": "web",
                "notes-app": "web-db", "whoami-app": "web", "cert-issuer": "tls",
                "cert-renewer": "tls", "tls-proxy": "uvloop-httptools"}
    assert {spec.service: spec.requirements for spec in specs} == \
        {**expected, "postgres": None}


def test_requirements_pin_every_package(tmp_path: Path) -> None:
    build.write_requirements(tmp_path, {"core", "web", "web-db"})
    for path in (tmp_path / "requirements").iterdir():
        for line in path.read_text().splitlines():
            assert "==" in line, f"{path.name}: {line} is not pinned"


def test_an_unknown_extra_is_a_build_error(tmp_path: Path) -> None:
    with pytest.raises(build.BuildError, match="no extra"):
        build.write_requirements(tmp_path, {"web-nosuchextra"})


def test_ca_bundle_is_empty_unless_asked_for(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIP_CA_BUNDLE", raising=False)
    monkeypatch.delenv("PIP_CERT", raising=False)
    build.write_ca_bundle(tmp_path)
    assert (tmp_path / "pip-ca.crt").read_bytes() == b""

    bundle = tmp_path / "proxy-ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("PIP_CERT", str(bundle))
    build.write_ca_bundle(tmp_path)
    assert (tmp_path / "pip-ca.crt").read_text() == bundle.read_text()

    monkeypatch.setenv("PIP_CA_BUNDLE", "")  # explicitly off, whatever PIP_CERT says
    build.write_ca_bundle(tmp_path)
    assert (tmp_path / "pip-ca.crt").read_bytes() == b""


def test_base_image_from_the_environment_is_used_as_is(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BASE_IMAGE", "registry.example/python:3.12-slim")
    log = build.BuildLog(tmp_path / "images.log")
    assert build.choose_base(log) == "registry.example/python:3.12-slim"
    log.close()


def test_tag_is_version_and_git_sha() -> None:
    version, _, rest = build.image_tag().partition("-")
    sha, _, dirty = rest.partition("-dirty-")
    assert version == PROJECT["version"]
    assert sha == build.git_short_sha() and sha != "latest"
    assert dirty == (build.uncommitted_digest() or "")


def test_uncommitted_changes_to_what_goes_into_an_image_change_the_tag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tag names one content: an image built from edited code never passes for the
    commit's (nor for another edit's)."""
    repo = tmp_path / "repo"
    (repo / "patterns").mkdir(parents=True)
    (repo / "pyproject.toml").write_text('[project]\nversion = "1.2.3"\n')
    (repo / "patterns" / "service.py").write_text("A = 1\n")
    (repo / "README.md").write_text("docs\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    for argv in (["init", "-q"], ["add", "."], ["commit", "-qm", "c"]):
        subprocess.run([*git, *argv], check=True)
    monkeypatch.setattr(build, "ROOT", repo)
    clean = build.image_tag()
    assert clean == f"1.2.3-{build.git_short_sha()}"
    (repo / "README.md").write_text("docs, edited\n")  # not in an image: same tag
    assert build.image_tag() == clean
    (repo / "patterns" / "service.py").write_text("A = 2\n")
    edited = build.image_tag()
    assert edited.startswith(clean + "-dirty-")
    (repo / "patterns" / "new.py").write_text("B = 1\n")  # untracked files count too
    assert build.image_tag() not in (clean, edited)
    (repo / "patterns" / "new.py").unlink()
    assert build.image_tag() == edited  # the same content, the same tag


def test_the_wheel_and_so_the_images_hold_the_product_only(tmp_path: Path) -> None:
    """What the images install is this wheel: test fixtures (tests/loggen.py, the log
    generator of the tests and benchmarks) are not in it, nor anything outside patterns/."""
    context = tmp_path / "run" / "build" / "docker"
    context.mkdir(parents=True)
    log = build.BuildLog(tmp_path / "images.log")
    try:
        build.build_wheel(context, log)
    finally:
        log.close()
    (wheel,) = (context / "wheels").glob("podpatterns-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert [name for name in names if "loggen" in name] == []
    assert all(name.startswith(("patterns/", "podpatterns-")) for name in names), names
    assert "patterns/adapter/log_adapter/__main__.py" in names


# --- built once, quietly: a stand-in docker ---------------------------------------------------

FAKE_DOCKER = '''
import json, os, sys
from pathlib import Path

state = Path(os.environ["FAKE_DOCKER_STATE"])
args = sys.argv[1:]
with open(state / "calls", "a") as calls:
    calls.write(json.dumps(args) + "\\n")
images = json.loads((state / "images.json").read_text()) if (state / "images.json").exists() else {}

def save():
    (state / "images.json").write_text(json.dumps(images))

def option(name):
    return [args[i + 1] for i, arg in enumerate(args) if arg == name]

if args[0] == "info":
    if os.environ.get("FAKE_DOCKER_INFO"):
        print("Cannot connect to the Docker daemon at unix:///var/run/docker.sock", file=sys.stderr)
        sys.exit(1)
elif args[:2] == ["image", "inspect"]:
    if args[-1] not in images:
        print("Error: No such image", file=sys.stderr)
        sys.exit(1)
    if "{{json .Config.Labels}}" in args:
        print(json.dumps(images[args[-1]]))
    elif "{{.Size}}" in args:
        print(150000000)
elif args[0] == "build":
    tag = option("--tag")[0]
    for step in range(1, 201):
        print(f"Step {step}/200 : RUN pip install --no-cache-dir -r /tmp/requirements.txt")
    if os.environ.get("FAKE_DOCKER_FAIL") and os.environ["FAKE_DOCKER_FAIL"] in tag:
        print("ERROR: Could not find a version that satisfies the requirement flask",
              file=sys.stderr)
        sys.exit(1)
    labels = dict(label.split("=", 1) for label in option("--label"))
    base = [a for a in option("--build-arg") if a.startswith("BASE_IMAGE=")][0]
    labels["org.opencontainers.image.base.name"] = base.split("=", 1)[1]
    images[tag] = labels
    save()
elif args[0] == "tag":
    images[args[2]] = images[args[1]]
    save()
elif args[:2] == ["image", "prune"]:
    print("Total reclaimed space: 0B")
else:
    sys.exit(1)
'''


@pytest.fixture
def docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A stand-in `docker` on PATH; returns a function running images/build.py's main with
    it: (exit status, stdout, stderr, docker calls of that run)."""
    state = tmp_path / "docker"
    state.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(f"#!{sys.executable}\n{FAKE_DOCKER}")
    (bin_dir / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_STATE", str(state))
    monkeypatch.setenv("BASE_IMAGE", "base:1")
    monkeypatch.setenv("IMAGE_PREFIX", "pp")
    monkeypatch.setattr(build, "build_wheel", lambda _context, _log: None)

    def run(capsys: pytest.CaptureFixture[str], *args: str):
        (state / "calls").write_text("")
        status = build.main(["--log", str(tmp_path / "images.log"), *args])
        out, err = capsys.readouterr()
        calls = [json.loads(line) for line in (state / "calls").read_text().splitlines()]
        return status, out, err, calls

    return run


def builds(calls: list[list[str]]) -> list[str]:
    return [call[call.index("--tag") + 1] for call in calls if call[0] == "build"]


def test_a_second_build_builds_nothing(docker, capsys, tmp_path: Path) -> None:
    specs = build.image_specs()
    tag = build.image_tag()
    status, out, err, calls = docker(capsys)
    assert status == 0 and out.splitlines()[-1] == tag
    # Each image once, its build stage first (tagged, so that it never dangles).
    expected = []
    for spec in specs:
        if "AS build" in spec.dockerfile.read_text():
            expected.append(f"pp/{spec.service}:cache-build")
        expected.append(f"pp/{spec.service}:{tag}")
    assert builds(calls) == expected
    assert all("podpatterns.build=images/build.py" in call for call in calls if call[0] == "build")
    # Quiet: one line per image; docker's output is in the log, not on the terminal.
    progress = [line for line in err.splitlines() if "] pp/" in line]
    assert [line.split("] ")[1].split()[0] for line in progress] == \
        [f"pp/{spec.service}:{tag}" for spec in specs]
    assert all(re.search(r"  building \.\.\. built in \d+s, 150\.0 MB$", line)
               for line in progress), progress
    assert "Step " not in err and "Step 200/200" in (tmp_path / "images.log").read_text()
    # Dangling images of earlier builds: only ours.
    assert ["image", "prune", "--force", "--filter", "label=podpatterns.build"] in calls

    status, out, err, calls = docker(capsys)
    assert status == 0 and out.splitlines()[-1] == tag
    assert builds(calls) == []
    assert err.count("reused (it exists; --rebuild builds it again), 150.0 MB\n") == len(specs)
    # The stable tag the kind overlays name, on what was just reused.
    assert [call[1:] for call in calls if call[0] == "tag"] == \
        [[f"pp/{s.service}:{tag}", f"pp/{s.service}:dev"] for s in specs]


def test_an_image_built_on_another_base_is_built_again(docker, capsys,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    docker(capsys, "log-shipper")
    monkeypatch.setenv("BASE_IMAGE", "base:2")
    _, _, _, calls = docker(capsys, "log-shipper")
    assert builds(calls)[-1] == f"pp/log-shipper:{build.image_tag()}"
    _, _, _, calls = docker(capsys, "log-shipper", "--rebuild")
    assert builds(calls)[-1] == f"pp/log-shipper:{build.image_tag()}"


def test_a_failed_build_shows_the_log_tail_and_one_line(docker, capsys, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_DOCKER_FAIL", "log-shipper")
    status, out, err, _ = docker(capsys)
    assert status == 1 and out == ""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert "  | ERROR: Could not find a version that satisfies the requirement flask" in lines
    assert lines[-1] == ("images: docker build of pp/log-shipper:cache-build failed; the full "
                         f"output is in {tmp_path / 'images.log'}")


def test_no_docker_engine_is_one_line(docker, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_DOCKER_INFO", "down")
    status, _, err, _ = docker(capsys)
    assert status == 1
    assert err.splitlines()[-1].startswith(
        "images: needs a running Docker engine (`docker info`: Cannot connect to the Docker "
        "daemon")
    assert len(err.splitlines()) == 1
