"""The per-test timeout counts a test's own body in the tiers whose set-up builds images,
creates a cluster or plays pods; their set-up and teardown have a budget of their own
(tests/conftest.py). Timed together, the first kind test on a cold machine paid for the
cluster, eight image builds, their loading and a rollout, and every test sharing those
fixtures errored with it.

The suite's own hooks run here in a throwaway pytest session: a test module in a
`podman` tier folder and one in a `unit` tier folder, whose module fixture takes longer
than the per-test timeout."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import ROOT

CONFTEST = """
from pathlib import Path
import os

import tests.conftest as suite

suite.ROOT = Path(__file__).resolve().parent.parent
suite.SETUP_TIMEOUT = float(os.environ["SETUP_TIMEOUT"])
from tests.conftest import (  # noqa: E402
    pytest_collection_modifyitems, pytest_runtest_setup, pytest_runtest_teardown)
"""

TESTS = """
import os
import time

import pytest


@pytest.fixture(scope="module")
def slow_setup():
    time.sleep(float(os.environ["SETUP_SECONDS"]))


def test_after_a_slow_setup(slow_setup):
    pass


def test_a_slow_body():
    time.sleep(60)
"""


def session(tmp_path: Path, setup_seconds: float, setup_timeout: float) -> dict[str, str]:
    """Run the throwaway session (per-test timeout 1 s); {test id: outcome and message}."""
    (tmp_path / "pytest.ini").write_text("[pytest]\ntimeout = 1\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "conftest.py").write_text(CONFTEST)
    for tier in ("podman", "unit"):
        (tmp_path / "tests" / tier).mkdir()
        (tmp_path / "tests" / tier / f"test_{tier}_slow.py").write_text(TESTS)
    report = tmp_path / "report.xml"
    env = {**os.environ, "SETUP_SECONDS": str(setup_seconds),
           "SETUP_TIMEOUT": str(setup_timeout), "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "pytest", "-c", str(tmp_path / "pytest.ini"),
                    "--rootdir", str(tmp_path), "-p", "no:cacheprovider", "-q",
                    f"--junitxml={report}", str(tmp_path / "tests")],
                   cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        tier = case.get("classname", "").split(".")[1]
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        outcomes[f"{tier}::{case.get('name')}"] = (
            "passed" if bad is None else f"{bad.tag}: {bad.get('message', '')}")
    return outcomes


def test_a_slow_setup_does_not_count_against_the_tests_timeout(tmp_path: Path) -> None:
    pytest.importorskip("pytest_timeout")
    outcomes = session(tmp_path, setup_seconds=3, setup_timeout=300)
    assert outcomes["podman::test_after_a_slow_setup"] == "passed"
    # The body is still timed, in every tier; the set-up of the unit tier too.
    assert "Timeout (>1.0s)" in outcomes["podman::test_a_slow_body"]
    assert "Timeout (>1.0s)" in outcomes["unit::test_a_slow_body"]
    assert outcomes["unit::test_after_a_slow_setup"].startswith("error: ")


def test_the_setup_has_a_budget_of_its_own(tmp_path: Path) -> None:
    pytest.importorskip("pytest_timeout")
    outcomes = session(tmp_path, setup_seconds=60, setup_timeout=2)
    assert outcomes["podman::test_after_a_slow_setup"].startswith("error: ")
    assert "Timeout (>2.0s)" in outcomes["podman::test_after_a_slow_setup"]
