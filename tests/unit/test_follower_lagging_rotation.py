"""Rotations the follower looks at late: by the time a rename's event (or the next scan)
is handled, the app may have rotated again, so the name the event carries already holds a
later file. A generation created and rotated away between two looks must still be read
whole, and in the order it was written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from patterns.common.follower import CheckpointStore, Follower, Limits

FAST = {"rotate_wait": 0.2, "poll_interval": 0.05, "rescan_interval": 0.2}


def make(tmp_path: Path, **limits: object) -> Follower:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    return Follower(
        [str(tmp_path / "logs" / "*.log")], CheckpointStore(state), Limits(**{**FAST, **limits})
    )


def drain(follower: Follower, idle: float = 0.6) -> list[str]:
    got: list[str] = []
    while (chunk := follower.read(timeout=idle)) is not None:
        got.extend(chunk.lines)
        follower.commit(chunk)
    return got


def rotate(logs: Path) -> None:
    """What Python's RotatingFileHandler does: app.log.N -> .N+1, app.log -> .1."""
    backups = sorted(
        (int(p.name.rsplit(".", 1)[1]) for p in logs.glob("app.log.*")), reverse=True
    )
    for n in backups:
        os.rename(logs / f"app.log.{n}", logs / f"app.log.{n + 1}")
    os.rename(logs / "app.log", logs / "app.log.1")


def write(path: Path, first: int, last: int) -> None:
    with open(path, "a") as handle:
        handle.writelines(f"line {i}\n" for i in range(first, last + 1))


@pytest.mark.parametrize("use_inotify", [True, False], ids=["inotify", "polling"])
def test_generations_rotated_between_two_looks_are_read_whole_and_in_order(
    tmp_path: Path, use_inotify: bool
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    app = logs / "app.log"
    write(app, 1, 10)
    follower = make(tmp_path, use_inotify=use_inotify)
    try:
        assert drain(follower) == [f"line {i}" for i in range(1, 11)]
        # The follower's lock held: its watcher thread cannot handle the events (nor
        # read() scan) until the app has rotated three times, as under CPU load.
        with follower._lock:
            write(app, 11, 20)
            rotate(logs)
            write(app, 21, 30)  # a generation created and rotated away unseen
            rotate(logs)
            write(app, 31, 40)  # another one
            rotate(logs)
            write(app, 41, 50)  # the live file
        assert drain(follower) == [f"line {i}" for i in range(11, 51)]
    finally:
        follower.close()


@pytest.mark.parametrize("use_inotify", [True, False], ids=["inotify", "polling"])
def test_generations_rotated_before_the_first_look_are_read_whole_and_in_order(
    tmp_path: Path, use_inotify: bool
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    app = logs / "app.log"
    follower = make(tmp_path, use_inotify=use_inotify)
    try:
        follower.start()
        with follower._lock:  # the app writes and rotates twice before we look at all
            write(app, 1, 10)
            rotate(logs)
            write(app, 11, 20)
            rotate(logs)
            write(app, 21, 30)
        assert drain(follower) == [f"line {i}" for i in range(1, 31)]
    finally:
        follower.close()
