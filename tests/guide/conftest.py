"""Guide tier: the lab guides (patterns/<pattern>/README.md) executed block by block on
local processes and on Docker Compose (tests/guide/harness.py says how; the kind variant
is in tests/kind/test_guides_kind.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.container.conftest import build_suite_images
from tests.guide.session import compose_command

TRANSCRIPTS = ROOT / "build" / "guides"

# The guide tier's Compose and kind variants both need the images: built (or found) once a
# session for each image tag (what the tree holds: a commit, or edits on top of it).
_BUILT: dict[str, dict[str, str]] = {}


def image_tag() -> str:
    return subprocess.run([sys.executable, str(ROOT / "images" / "build.py"), "--print-tag"],
                          capture_output=True, text=True, check=True, cwd=ROOT).stdout.strip()


def suite_images() -> dict[str, str]:
    """build_suite_images(), once per session and image tag: service -> image reference."""
    tag = image_tag()
    if tag not in _BUILT:
        _BUILT[tag] = build_suite_images()
    return _BUILT[tag]


@pytest.fixture(scope="session")
def transcripts() -> Path:
    """Where each run's transcript goes (every block and its whole output)."""
    TRANSCRIPTS.mkdir(parents=True, exist_ok=True)
    return TRANSCRIPTS


@pytest.fixture(scope="session")
def compose_images() -> dict[str, str]:
    """The images the Compose lab uses: built once (by images/build.py, as the container
    tier does; a tag that exists is reused), so that the guide's `make images` finds them."""
    if shutil.which("docker") is None:
        pytest.skip("needs docker: apt-get install docker.io")
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        pytest.skip("needs a running Docker engine (dockerd)")
    if compose_command() is None:
        pytest.skip("needs Docker Compose: apt-get install docker-compose")
    return suite_images()
