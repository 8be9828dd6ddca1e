"""A Compose demo starts from a fresh pod: what an earlier run of the same pattern left up
(to explore) is removed before `up`, its volumes included (kept, the sidecar demo counted
the earlier run's lines as written and not collected: '8008 missing'), and nothing of
another pattern's demo is touched. A stand-in docker and docker-compose record the calls."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from demo import containers, lifecycle


@pytest.fixture
def compose_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Install the stand-ins; `containers_up(*lines)` makes `docker inspect` describe those
    containers ("<id> <running> <service> <project>") and returns the calls log."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    for name in ("docker", "docker-compose"):
        (bin_dir / name).write_text(
            f'#!/bin/sh\necho "{name} $*" >> {calls}\n'
            'case "$*" in\n'
            '  "compose version") exit 1 ;;\n'
            f'  *" ps -q") cut -d" " -f1 {tmp_path}/containers ;;\n'
            f'  inspect*) cat {tmp_path}/containers ;;\n'
            'esac\nexit 0\n')
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(containers, "build_images", lambda: "t1")
    monkeypatch.setattr(containers, "say", lambda _message: None)

    def containers_up(*lines: str) -> Path:
        (tmp_path / "containers").write_text("".join(line + "\n" for line in lines))
        calls.write_text("")
        return calls

    yield containers_up
    lifecycle.forget_aborts()  # compose_up's teardown is this test's, not a later test's


def test_an_earlier_run_of_the_pattern_is_removed_before_up(compose_calls) -> None:
    calls = compose_calls("c1 false sidecar-main main", "c2 true sidecar-collector main",
                          "c9 true adapter-main main")
    containers.compose_up("sidecar")
    made = [line for line in calls.read_text().splitlines()
            if " rm " in line or "volume rm" in line or " up " in line]
    assert made == [
        "docker-compose --profile sidecar rm --stop --force -v "
        "sidecar-main sidecar-shipper sidecar-collector",
        "docker volume rm main_sidecar-collector-data main_sidecar-logs "
        "main_sidecar-shipper-state",
        "docker-compose --profile sidecar up -d",
    ]


def test_another_patterns_demo_is_left_alone(compose_calls) -> None:
    calls = compose_calls("c9 true adapter-main main", "c8 true adapter-adapter main")
    containers.compose_up("sidecar")
    made = [line for line in calls.read_text().splitlines() if " rm " in line
            or "volume rm" in line or " up " in line]
    assert made == ["docker-compose --profile sidecar up -d"]
