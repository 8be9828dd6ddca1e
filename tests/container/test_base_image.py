"""images/base/build.sh: the Debian-packaged base for machines that cannot pull
python:3.12-slim. Built once (it is quick when the image or its cached rootfs exists), then
checked for what the service images rely on."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from typing import Any

import pytest

from tests.conftest import ROOT

BUILD = ROOT / "images" / "base" / "build.sh"
TAG = re.compile(r"^podpatterns/debian-python:bookworm-[0-9a-f]{12}$")


@pytest.fixture(scope="module")
def base_image(docker_client: Any) -> str:
    result = subprocess.run([str(BUILD)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        if shutil.which("debootstrap") is None or os.geteuid() != 0:
            pytest.skip("needs debootstrap and root to build the base: apt-get install debootstrap")
        pytest.fail(f"images/base/build.sh failed:\n{result.stderr[-3000:]}", pytrace=False)
    return result.stdout.strip().splitlines()[-1]


def test_tag_is_unique_per_recipe_and_never_latest(base_image: str) -> None:
    assert TAG.match(base_image), base_image


def test_a_second_run_reuses_the_image(base_image: str) -> None:
    started = time.monotonic()
    result = subprocess.run([str(BUILD)], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == base_image
    assert "already exists" in result.stderr
    assert time.monotonic() - started < 10


def test_image_runs_python_and_makes_venvs(docker_client: Any, base_image: str) -> None:
    output = docker_client.containers.run(
        base_image, ["sh", "-c", "python3 -m venv /tmp/v && /tmp/v/bin/python -c "
                     "'import sys; print(sys.version_info[:2] >= (3, 11))'"],
        remove=True, network_disabled=True,
    ).decode()
    assert output.split()[0] == "True", output
    attrs = docker_client.images.get(base_image).attrs["Config"]
    assert attrs["Cmd"] == ["python3"]
    assert any(env.startswith("PATH=/usr/local/sbin:") for env in attrs["Env"])


def test_image_is_minimal(docker_client: Any, base_image: str) -> None:
    # What an image does not need is gone: apt's lists and downloaded packages, docs.
    code = (
        "import glob, os\n"
        "print(len(glob.glob('/var/lib/apt/lists/*')),"
        " len(glob.glob('/var/cache/apt/archives/*.deb')),"
        " len(os.listdir('/usr/share/doc')),"
        " os.path.getsize('/etc/ssl/certs/ca-certificates.crt') > 0)\n"
    )
    output = docker_client.containers.run(base_image, ["python3", "-c", code], remove=True,
                                          network_disabled=True).decode().split()
    assert output == ["0", "0", "0", "True"], output
    size_mb = docker_client.images.get(base_image).attrs["Size"] / 1e6
    assert size_mb < 250, f"{size_mb:.0f} MB"
