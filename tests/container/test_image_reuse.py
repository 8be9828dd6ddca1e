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
        # Only this test's tags: the same image may carry other ones (a reproducible build
        # of the same code is the same image).
        for tag in image.tags:
            if tag.startswith(f"{name}/"):
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
    # The tag names the working tree's content: a commit or an edit made by someone else
    # while this runs gives the next run another tag. Then start over, on the new content.
    for _attempt in range(3):
        first, _, _ = build(prefix, tmp_path)
        ref = first["images"][SERVICE]
        built = docker_client.images.get(ref).id
        second, err, log = build(prefix, tmp_path)
        before = set(dangling_of_our_builds(docker_client))
        rebuilt, _, _ = build(prefix, tmp_path, "--rebuild")
        if first["tag"] == second["tag"] == rebuilt["tag"]:
            break
    else:
        pytest.fail("the working tree changed during every attempt")
    assert second["images"][SERVICE] == ref
    assert "$ docker build" not in log
    assert f"{ref}  reused" in err
    assert docker_client.images.get(f"{prefix}/{SERVICE}:dev").id == built
    # A rebuild of the same code: the same image, and nothing left dangling.
    assert docker_client.images.get(ref).id == built
    assert set(dangling_of_our_builds(docker_client)) <= before
