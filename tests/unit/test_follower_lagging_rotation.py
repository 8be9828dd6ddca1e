"""Rotations the follower looks at late: by the time a rename's event (or the next scan)
is handled, the app may have rotated again, so the name the event carries already holds a
later file. A generation created and rotated away between two looks must still be read
whole, and in the order it was written."""

from __future__ import annotations

import os
import shutil
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


def copytruncate(path: Path, copy: Path) -> None:
    """What logrotate's copytruncate does: copy the file, then empty it in place."""
    shutil.copyfile(path, copy)
    with open(path, "r+b") as handle:
        handle.truncate(0)


@pytest.mark.parametrize("read_before", [True, False], ids=["read", "opened-unread"])
@pytest.mark.parametrize("use_inotify", [True, False], ids=["inotify", "polling"])
def test_copy_of_a_file_truncated_then_rotated_between_two_looks_goes_on_from_our_position(
    tmp_path: Path, use_inotify: bool, read_before: bool
) -> None:
    """The copy is named like the file, so the search for missed generations finds it too;
    it is the truncated file's copy, not a generation of its own: read from where we were,
    else the lines already read from the file come again, and the truncation, its copy
    taken, is counted as lines lost (read_before=False: the file was opened and its head
    taken, nothing read: no line comes twice, but the loss counted is false)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    app = logs / "app.log"
    follower = make(tmp_path, use_inotify=use_inotify)
    try:
        follower.start()
        write(app, 1, 10)
        if read_before:
            assert drain(follower) == [f"line {i}" for i in range(1, 11)]
        else:
            follower.poll()  # opened, its head taken; the consumer's destination is down
        with follower._lock:  # the app copytruncates, then rotates, before we look again
            write(app, 11, 20)
            copytruncate(app, logs / "app.log-20261202")  # dateext
            write(app, 21, 30)
            rotate(logs)
            write(app, 31, 40)
            # The rotation is seen before the file is read again (the consumer waits for
            # its destination, or reads another file): its truncation is not noticed yet.
            follower.poll()
        first = 11 if read_before else 1
        assert drain(follower) == [f"line {i}" for i in range(first, 41)]
        assert follower.stats.truncations == follower.stats.copies_found == 1
        assert follower.stats.truncations_without_copy == 0
    finally:
        follower.close()


@pytest.mark.parametrize("use_inotify", [True, False], ids=["inotify", "polling"])
def test_copy_of_a_file_truncated_before_its_first_bytes_were_seen_is_read_first(
    tmp_path: Path, use_inotify: bool
) -> None:
    """Followed while still empty, the file has no head to tell a truncation by: if the
    app writes, copytruncates and writes again before we look, only the copy tells. It is
    the app's last rotation: no later one makes us look for missed generations."""
    logs = tmp_path / "logs"
    logs.mkdir()
    app = logs / "app.log"
    follower = make(tmp_path, use_inotify=use_inotify)
    try:
        follower.start()
        app.touch()  # the app opens its new log
        follower.poll()
        assert follower.files() != []  # followed, empty
        with follower._lock:
            write(app, 1, 10)
            copytruncate(app, logs / "app.log-20261202")  # dateext
            write(app, 11, 20)
        assert drain(follower) == [f"line {i}" for i in range(1, 21)]
    finally:
        follower.close()
