"""A follower's work must not grow with the square of the files it follows: a scan that
finds many new files lists their directory a fixed number of times, not once per file
(it looks there for generations rotated away before each file was opened), and still
finds a generation rotated away between its listing and the opening of the name; a
restart lists the directory only for checkpointed files that are not where they were."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from patterns.common.follower import CheckpointStore, Follower
from patterns.common.follower.checkpoints import Checkpoint
from patterns.common.follower.follower import Limits
from patterns.common.follower.stream import Stream
from tests.unit.test_follower_discovery import Side, written


def test_a_scan_of_many_new_files_lists_their_directory_a_fixed_number_of_times(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    side = Side([str(logs / "*.log")])
    listed: list[str] = []
    scandir = os.scandir

    def counting_scandir(path: str = ".") -> os._ScandirIterator[str]:  # type: ignore[name-defined]
        listed.append(os.fspath(path))
        return scandir(path)

    try:
        side.discovery.start()
        now = time.time_ns()
        for index in range(60):
            written(logs / f"f{index:03d}.log", f"{index}\n", now)
        written(logs / "f007.log.1", "rotated before we looked\n", now)
        monkeypatch.setattr(os, "scandir", counting_scandir)
        side.discovery.scan()
        monkeypatch.undo()
        assert len(side.opened) == 61
        assert side.opened[7] == (str(logs / "f007.log.1"), str(logs / "f007.log"), False)
        assert side.opened[8] == (str(logs / "f007.log"), str(logs / "f007.log"), True)
        # The glob's own listing, then one listing before the files are opened and one
        # after: not one per file.
        assert listed.count(str(logs)) <= 3
    finally:
        side.close()


class CountingStreams(dict):
    """The follower's streams, counting how often all of them are gone through."""

    walks = 0

    def values(self):  # type: ignore[override]
        self.walks += 1
        return super().values()


def test_a_scan_of_many_new_files_goes_through_the_followed_files_a_fixed_number_of_times(
    tmp_path: Path,
) -> None:
    """Each new file is checked against the files already followed under its name (a
    truncation not noticed yet); looking through all of them for each new file made a
    start with 1,000 files a million comparisons."""
    logs = tmp_path / "logs"
    logs.mkdir()
    side = Side([str(logs / "*.log")])
    streams = CountingStreams()
    side.streams = side.discovery._streams = streams
    try:
        side.discovery.start()
        now = time.time_ns()
        for index in range(60):
            written(logs / f"f{index:03d}.log", f"{index}\n", now)
        side.discovery.scan()
        assert len(side.opened) == 60
        assert streams.walks <= 3, f"{streams.walks} walks over the followed files"
    finally:
        side.close()


def test_a_generation_rotated_away_after_the_listing_before_its_name_opened_is_read(
    tmp_path: Path,
) -> None:
    app = tmp_path / "app.log"
    side = Side([str(app)])
    open_file = side.open_file
    rotated: list[str] = []

    def rotate_then_open(
        path: str, *, origin: str, live: bool, checkpoint: Checkpoint | None = None
    ) -> Stream | None:
        if live and not rotated:  # the app rotates between our listing and our open
            os.rename(app, tmp_path / "app.log.1")
            written(app, "2\n", time.time_ns() + 1_000_000)
            rotated.append(path)
        return open_file(path, origin=origin, live=live, checkpoint=checkpoint)

    side.discovery._open = rotate_then_open
    try:
        side.discovery.start()
        written(app, "1\n", time.time_ns())
        side.discovery.scan()
        assert side.opened == [
            (str(app), str(app), True),  # the file the name holds now
            (str(tmp_path / "app.log.1"), str(app), False),  # and the one rotated meanwhile
        ]
        # Opened after the live file, it is still read before it: the reader goes round
        # a name's files that are not live first.
        generation = next(s for s in side.streams.values() if not s.live)
        assert os.read(generation.fd, 10) == b"1\n"
        assert side.stats.rotations == 1
    finally:
        side.close()


def test_a_restart_resumes_files_where_they_were_without_listing_per_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs, state = tmp_path / "logs", tmp_path / "state"
    logs.mkdir()
    state.mkdir()
    for index in range(40):
        (logs / f"f{index:03d}.log").write_text(f"{index}\n")
    limits = Limits(use_inotify=False)
    first = Follower([str(logs / "*.log")], CheckpointStore(state), limits)
    try:
        while (chunk := first.read(timeout=0.05)) is not None:
            first.commit(chunk)
        first.save(final=True)
    finally:
        first.close()
    (logs / "f005.log").write_text("5\nafter the restart\n")  # same inode, grown
    listed: list[str] = []
    scandir = os.scandir

    def counting_scandir(path: str = ".") -> os._ScandirIterator[str]:  # type: ignore[name-defined]
        listed.append(os.fspath(path))
        return scandir(path)

    again = Follower([str(logs / "*.log")], CheckpointStore(state), limits)
    try:
        monkeypatch.setattr(os, "scandir", counting_scandir)
        again.start()
        monkeypatch.undo()
        assert again.followed == 40 and again.stats.checkpoints_lost == 0
        assert listed.count(str(logs)) <= 3  # the glob's, not one per checkpoint
        chunk = again.read(timeout=0.05)
        assert chunk is not None and chunk.lines == ["after the restart"]
        again.commit(chunk)
        assert again.read(timeout=0.05) is None  # nothing read twice
    finally:
        again.close()
