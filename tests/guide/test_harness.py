"""The harness itself: what makes a guide's run fail, and what it cleans up."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.guide.session import run_guide_session

pytestmark = pytest.mark.guide


def _run(tmp_path: Path, text: str) -> str:
    """The failure message of running `text` as a guide on local processes ("" if none)."""
    guide = tmp_path / "README.md"
    guide.write_text(text)
    try:
        run_guide_session(guide, "local", tmp_path)
    except pytest.fail.Exception as failure:
        return str(failure)
    return ""


def test_a_guide_whose_blocks_print_what_it_shows_passes(tmp_path: Path) -> None:
    assert _run(tmp_path, "```sh local\nX=3\n```\n\n```sh local\necho $((X * 2))\n"
                          "cat    # no block can read the next one as its input\n```\n\n"
                          "```text\n6\n```\n") == ""


def test_a_command_that_fails_fails_the_block_and_names_the_command(tmp_path: Path) -> None:
    message = _run(tmp_path, "```sh local\nls /no-such-dir\necho after\n```\n")
    assert "a command failed" in message and "exit 2: ls /no-such-dir" in message


def test_a_block_marked_fails_must_fail(tmp_path: Path) -> None:
    assert _run(tmp_path, "```sh local fails\nfalse\n```\n") == ""
    assert "none did" in _run(tmp_path, "```sh local fails\ntrue\n```\n")


def test_a_different_output_fails_with_a_diff(tmp_path: Path) -> None:
    message = _run(tmp_path, "```sh local\necho 41\n```\n\n```text\n42\n```\n")
    assert "-42" in message and "+41" in message


def test_after_a_failure_only_the_cleanup_blocks_run(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    message = _run(tmp_path, f"```sh local\nfalse\n```\n\n```sh local\necho skipped >> {marks}\n"
                             f"```\n\n```sh local cleanup\necho cleaned >> {marks}\n```\n")
    assert "exit 1: false" in message
    assert marks.read_text() == "cleaned\n"


def test_what_the_guide_leaves_running_is_ended_and_fails_the_test(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    # setsid: a process of its own session, as pg_ctl starts PostgreSQL; the variable
    # the harness gives the session still finds it.
    message = _run(tmp_path, f"```sh local\nsetsid sleep 300 > /dev/null 2>&1 < /dev/null &\n"
                             f"sleep 0.5; pgrep -n -f 'sleep 300' > {pidfile}\n```\n")
    assert "left processes running" in message and "sleep 300" in message
    stat = Path("/proc") / pidfile.read_text().strip() / "stat"
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_a_block_that_does_not_finish_fails(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tests.guide.harness.BLOCK_TIMEOUT_S", 1.0)
    message = _run(tmp_path, "```sh local\nsleep 30\n```\n\n```sh local cleanup\necho ok\n```\n")
    assert "did not finish in 1s" in message
