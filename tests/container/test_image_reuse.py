"""Images are built once: a second images/build.py run of the same code builds nothing, and
a forced rebuild of unchanged code gives the same image (a reproducible wheel: every layer
is a cache hit) and leaves no dangling image behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

SERVICE = "log-shipper"


@pytest.fixture
def prefix(docker_client: Any) -> Iterator[str]:
    """An image prefix of this test's own; its images are removed afterwards."""
    name = f"podpatterns-reuse-{uuid.uuid4().hex[:8]}"
    yield name
    for image in docker_client.images.list(name=f"{name}/{SERVICE}"):
        for tag in image.tags:
            docker_client.images.remove(tag, noprune=False)


def build(prefix: str, tmp_path: Path, *args: str) -> tuple[dict[str, Any], str, str]:
    """(images.json, stderr, the build log) of one images/build.py run."""
    log = tmp_path / "images.log"
    result = subprocess.run(
        [sys.executable, str(ROOT / "images" / "build.py"), SERVICE, "--json",
         str(tmp_path / "images.json"), "--log", str(log), *args],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "IMAGE_PREFIX": prefix})
    assert result.returncode == 0, result.stderr + log.read_text(errors="replace")[-3000:]
    return json.loads((tmp_path / "images.json").read_text()), result.stderr, log.read_text()


def dangling_of_our_builds(docker_client: Any) -> list[str]:
    return [image.id for image in docker_client.images.list(
        filters={"dangling": True, "label": "podpatterns.build"})]


def test_a_second_build_builds_nothing_and_a_rebuild_leaves_nothing_dangling(
        docker_client: Any, prefix: str, tmp_path: Path) -> None:
    first, _, _ = build(prefix, tmp_path)
    ref = first["images"][SERVICE]
    built = docker_client.images.get(ref).id

    second, err, log = build(prefix, tmp_path)
    assert second["images"][SERVICE] == ref
    assert "$ docker build" not in log
    assert f"{ref}  reused" in err
    assert docker_client.images.get(ref).id == built
    assert docker_client.images.get(f"{prefix}/{SERVICE}:dev").id == built

    before = set(dangling_of_our_builds(docker_client))
    build(prefix, tmp_path, "--rebuild")
    assert docker_client.images.get(ref).id == built  # the same code, the same image
    assert set(dangling_of_our_builds(docker_client)) <= before
