"""images/build.py builds images `kind load docker-image` can load wherever `docker build`
is BuildKit: no default provenance attestation. With one, Docker's containerd image store
makes `docker save` name an attestation manifest it does not include, and kind's
`ctr images import` fails ("content digest ...: not found", kubernetes-sigs/kind#3795).
The legacy builder (Docker 20.10's engine here, a CLI without buildx) makes none and
ignores the setting. A stand-in `docker` records the environment each build gets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.unit.test_image_build import build


@pytest.fixture
def builds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in docker on PATH; each `docker build` appends its tag and the value of
    BUILDX_NO_DEFAULT_ATTESTATIONS to the returned file."""
    bin_dir, seen = tmp_path / "bin", tmp_path / "builds"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text("#!/bin/sh\n"
                      '[ "$1" = build ] || exit 1\n'
                      'while [ "$1" != --tag ]; do shift; done\n'
                      f'echo "$2 ${{BUILDX_NO_DEFAULT_ATTESTATIONS-unset}}" >> {seen}\n')
    docker.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.delenv("BUILDX_NO_DEFAULT_ATTESTATIONS", raising=False)
    return seen


def build_postgres(tmp_path: Path) -> None:
    spec = next(spec for spec in build.image_specs() if spec.service == "postgres")
    log = build.BuildLog(tmp_path / "images.log")
    try:
        build.build_image(spec, "base:1", "t1", "0.1.0", "abc", tmp_path, log)
    finally:
        log.close()


def test_every_docker_build_asks_for_no_default_attestation(builds: Path,
                                                           tmp_path: Path) -> None:
    build_postgres(tmp_path)
    assert builds.read_text().splitlines() == ["podpatterns/postgres:t1 1"]


def test_an_explicit_setting_wins(builds: Path, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUILDX_NO_DEFAULT_ATTESTATIONS", "0")
    build_postgres(tmp_path)
    assert builds.read_text().splitlines() == ["podpatterns/postgres:t1 0"]
