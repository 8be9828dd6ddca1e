"""images/build.py, the one build path of the images: each service image installs only its
own extras, the CA bundle for pip is opt-in, and $BASE_IMAGE is taken as is."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
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
                "notes-app": "web-db"}
    for spec in specs:
        if spec.service in expected:
            found = build.REQUIREMENTS_REF.findall(spec.dockerfile.read_text())
            assert found == [expected[spec.service]], spec.dockerfile


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
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BASE_IMAGE", "registry.example/python:3.12-slim")
    assert build.choose_base() == "registry.example/python:3.12-slim"


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
