"""The follower's discovery on its own (discovery.py): what it asks the follower to open,
and what it makes of a followed file renamed away, through its small interface (open a
file, wake the reader) and nothing else of the follower. Polling only: a scan is a call,
so every test is deterministic."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from patterns.common.follower.access import Access, pread
from patterns.common.follower.checkpoints import Checkpoint
from patterns.common.follower.discovery import Discovery
from patterns.common.follower.follower import FollowerStats, Limits
from patterns.common.follower.lines import LineBuffer
from patterns.common.follower.locate import Locator
from patterns.common.follower.stream import Ident, Stream
from patterns.common.follower.truncation import Truncations


class Side:
    """The follower's side of the interface: the streams, and a record of the calls."""

    def __init__(self, globs: list[str]) -> None:
        self.limits = Limits(use_inotify=False)
        self.stats = FollowerStats()
        self.streams: dict[int, Stream] = {}
        self.by_ident: dict[Ident, Stream] = {}
        self.opened: list[tuple[str, str, bool]] = []  # (path, origin, live)
        self.woken_all = 0
        access = Access(globs, self.limits.follow_symlinks, self.stats.files_refused)
        locate = Locator(access)
        truncations = Truncations(
            self.limits.fingerprint_bytes, self.stats, access, locate, self.by_ident, self.renew
        )
        self.discovery = Discovery(
            globs,
            self.limits,
            self.stats,
            threading.RLock(),
            access,
            locate,
            truncations,
            streams=self.streams,
            followed=self.by_ident,
            open_file=self.open_file,
            wake=lambda path: None,
            wake_all=self.wake_all,
        )

    def open_file(
        self, path: str, *, origin: str, live: bool, checkpoint: Checkpoint | None = None
    ) -> Stream | None:
        fd = os.open(path, os.O_RDONLY)
        st = os.fstat(fd)
        stream = Stream(
            seq=len(self.streams) + 1,
            on_change=lambda *_: None,
            fd=fd,
            ident=(st.st_dev, st.st_ino),
            path=path,
            origin=origin,
            live=live,
            read_pos=0,
            committed=0,
            handed_out=0,
            head=pread(fd, self.limits.fingerprint_bytes, 0),
            buffer=LineBuffer(self.limits.max_line_bytes, self.stats),
            last_growth=time.monotonic(),
        )
        self.streams[stream.seq] = stream
        self.by_ident[stream.ident] = stream
        self.discovery.added(stream)
        self.opened.append((path, origin, live))
        return stream

    def renew(self, stream: Stream) -> None:
        raise AssertionError("no file is truncated in these tests")

    def wake_all(self) -> None:
        self.woken_all += 1

    def close_stream(self, stream: Stream) -> None:
        """What the follower does with a file read to its end."""
        stream.finished = stream.closed = True
        self.discovery.done(stream)
        os.close(stream.fd)
        del self.streams[stream.seq], self.by_ident[stream.ident]

    def close(self) -> None:
        for stream in self.streams.values():
            os.close(stream.fd)
        self.discovery.close()


def written(path: Path, text: str, mtime_ns: int) -> None:
    path.write_text(text)
    os.utime(path, ns=(mtime_ns, mtime_ns))  # the order of generations, not the clock's


def test_a_scan_asks_to_open_each_glob_match_once_as_a_live_file(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_text("a\n")
    (tmp_path / "b.log").write_text("b\n")
    (tmp_path / "sub.log").mkdir()  # a directory the glob matches: not a file to read
    side = Side([str(tmp_path / "*.log")])
    try:
        side.discovery.start()
        side.discovery.scan()
        side.discovery.scan()
        a, b = str(tmp_path / "a.log"), str(tmp_path / "b.log")
        assert side.opened == [(a, a, True), (b, b, True)]
        assert not side.discovery.uses_inotify
        assert not side.discovery.watcher_stopped()  # polling: no thread to stop
    finally:
        side.close()


def test_a_followed_name_now_another_file_is_a_rotation_read_after_what_was_missed(
    tmp_path: Path,
) -> None:
    app = tmp_path / "app.log"
    side = Side([str(app)])
    try:
        side.discovery.start()
        now = time.time_ns()
        written(app, "1\n", now)
        side.discovery.scan()
        (first,) = side.streams.values()
        # Between two looks: app.log rotated to app.log.2, a new app.log rotated to
        # app.log.1 (never seen), and a third app.log is live.
        os.rename(app, tmp_path / "app.log.2")
        written(app, "2\n", now + 1_000_000)
        os.rename(app, tmp_path / "app.log.1")
        written(app, "3\n", now + 2_000_000)
        side.discovery.scan()
        assert not first.live and first.origin == str(app), "read on under its old name"
        assert side.opened[1:] == [
            (str(tmp_path / "app.log.1"), str(app), False),  # the one we never saw, first
            (str(app), str(app), True),  # then the live file
        ]
        assert side.stats.rotations == 2  # the followed file, and the one never seen
        assert side.stats.deletions == 0
    finally:
        side.close()


def test_a_file_read_and_closed_is_no_missed_generation(tmp_path: Path) -> None:
    app = tmp_path / "app.log"
    side = Side([str(app)])
    try:
        side.discovery.start()
        now = time.time_ns()
        written(app, "1\n", now)
        side.discovery.scan()
        (first,) = side.streams.values()
        os.rename(app, tmp_path / "app.log.1")
        side.discovery.scan()  # rotated away: read on, then closed by the follower
        side.close_stream(first)
        written(app, "2\n", now + 1_000_000)
        side.discovery.scan()  # app.log is new; app.log.1 was read whole already
        assert side.opened == [(str(app), str(app), True), (str(app), str(app), True)]
    finally:
        side.close()
