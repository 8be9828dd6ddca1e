"""Checkpoint recovery at start: what the checkpoints name, found and reopened.

Each checkpointed file is looked for where it is now: under its name, renamed (same
inode, same head) or copied (a copytruncate while we were down: same head); it is read
from its committed offset if it still holds what was checkpointed, else from 0. A file
found nowhere is counted (`checkpoints_lost`) and its unshipped lines are lost. Then, for
each followed name whose live file is not back under it, the generations the app rotated
away while we were down after the checkpointed file (named like it, not compressed,
newer) are read from 0, oldest first, before the live file (`rotated_while_down`).

The searches are `Locator`'s (locate.py); opening, and following what was opened, is the
follower's (`Open`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Container
from typing import TYPE_CHECKING, Protocol

from patterns.common.follower.access import pread
from patterns.common.follower.checkpoints import Checkpoint, head_hash
from patterns.common.follower.locate import Locator
from patterns.common.follower.stream import Ident, Stream

if TYPE_CHECKING:
    from patterns.common.follower.follower import FollowerStats

log = logging.getLogger("patterns.common.follower.follower")


class Open(Protocol):
    """The follower's way to open a file and follow it (None: refused, or none there)."""

    def __call__(
        self, path: str, *, origin: str, live: bool, checkpoint: Checkpoint | None = None
    ) -> Stream | None: ...


def resume_offset(fd: int, size: int, checkpoint: Checkpoint) -> int:
    """Where to read a reopened checkpointed file from: the committed offset if the file
    still holds what was checkpointed (at least as long, same head), else 0: it was
    rewritten, and all of it is new."""
    if size >= checkpoint.offset:
        head = pread(fd, checkpoint.head_len, 0)
        if len(head) == checkpoint.head_len and head_hash(head) == checkpoint.head_hash:
            return checkpoint.offset
    return 0


class Recovery:
    def __init__(
        self,
        locate: Locator,
        stats: FollowerStats,
        open_file: Open,
        followed: Container[Ident],
        matches: Callable[[str], bool],
    ) -> None:
        self.locate = locate
        self.stats = stats
        self.open_file = open_file
        self.followed = followed  # (device, inode) of every file followed now
        self.matches = matches  # whether a path is a live name (matches a glob)

    def run(self, checkpoints: list[Checkpoint]) -> None:
        resumed = [self._resume(checkpoint) for checkpoint in checkpoints]
        self._rotated_while_down(checkpoints, resumed)

    def _resume(self, checkpoint: Checkpoint) -> Stream | None:
        """Reopen a checkpointed file where it is now."""
        found = self.locate.checkpointed(checkpoint, self.followed)
        if found is not None:
            path, ident = found
            if ident != (checkpoint.dev, checkpoint.ino) or path != checkpoint.path:
                log.info(
                    "checkpointed file found elsewhere (renamed or copied while we were down)",
                    extra={"path": checkpoint.path, "now_at": path},
                )
            return self.open_file(
                path, origin=checkpoint.origin, live=self.matches(path), checkpoint=checkpoint
            )
        self.stats.checkpoints_lost += 1
        log.warning(
            "checkpointed file not found (deleted, or rewritten in place); its unshipped"
            " lines are lost",
            extra={"path": checkpoint.path, "offset": checkpoint.offset},
        )
        return None

    def _rotated_while_down(
        self, checkpoints: list[Checkpoint], resumed: list[Stream | None]
    ) -> None:
        """Files rotated away while we were down after the checkpointed one (an app that
        rotated several times): named like the followed file (`app.log.1`, `app.log-2026…`,
        not compressed), newer than the checkpointed file, not followed. Read from 0,
        oldest first, before the live file."""
        newest: dict[str, int] = {}
        live_found: set[str] = set()
        for checkpoint, stream in zip(checkpoints, resumed, strict=True):
            if stream is not None and stream.live and stream.path == checkpoint.origin:
                live_found.add(checkpoint.origin)
            mtime = stream.mtime_ns() if stream is not None else checkpoint.mtime_ns
            newest[checkpoint.origin] = max(newest.get(checkpoint.origin, 0), mtime)
        for origin, reference in newest.items():
            if origin in live_found or not reference:
                continue
            for path in self.locate.rotated_after(origin, reference, self.followed, self.matches):
                if self.open_file(path, origin=origin, live=False) is not None:
                    self.stats.rotated_while_down += 1
                    log.info(
                        "file rotated away while we were down: reading it from the start",
                        extra={"path": path, "origin": origin},
                    )
