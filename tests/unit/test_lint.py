"""`make lint` as a test, so that `make test` (and CI) catches what the GitHub workflow's
lint job would: ruff over the whole project, mypy over the services in patterns/."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import ROOT, venv_tool


@pytest.mark.parametrize("argv", [["ruff", "check", "."], ["mypy", "patterns"]],
                         ids=["ruff", "mypy"])
def test_lint_finds_nothing(argv: list[str]) -> None:
    tool = venv_tool(argv[0], "pip install -e '.[lint]'")
    result = subprocess.run([tool, *argv[1:]], cwd=ROOT, capture_output=True, text=True,
                            check=False, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
