"""Truncation in place (copytruncate, or a rewrite): how it is told, and what follows.

A followed file that is shorter than our read position, or no longer starts with the head
we know, was truncated in place (it may also have been renamed since). Its old content
goes on from the copy a copytruncate made, if there is one (`Locator.copy_of`: same head,
at least as long as our position), opened and read to its end first; the file itself is
followed again from 0, as a new stream on the same descriptor. With no copy, what was
written between our position and the truncation is lost: counted and logged.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from patterns.common.follower.access import Access, pread
from patterns.common.follower.locate import Locator
from patterns.common.follower.stream import Ident, Stream

if TYPE_CHECKING:
    from patterns.common.follower.follower import FollowerStats

log = logging.getLogger("patterns.common.follower.follower")


class Truncations:
    def __init__(
        self,
        fingerprint_bytes: int,
        stats: FollowerStats,
        access: Access,
        locate: Locator,
        followed: dict[Ident, Stream],
        renew: Callable[[Stream], None],
    ) -> None:
        self.fingerprint_bytes = fingerprint_bytes
        self.stats = stats
        self.access = access
        self.locate = locate
        self.followed = followed  # (device, inode) -> stream: the follower's own map
        self.renew = renew  # follow the stream's file again from 0, as a new stream

    def head_intact(self, stream: Stream) -> bool:
        """True if the file still starts with the head we know (and extend the head while
        the file is shorter than the fingerprint)."""
        head = pread(stream.fd, self.fingerprint_bytes, 0)
        if not head.startswith(stream.head):
            return False
        stream.head = head
        return True

    def check(self, stream: Stream) -> bool:
        """Whether the file was truncated (then handled); for a read that found no data."""
        try:
            size = os.fstat(stream.fd).st_size
        except OSError:
            return False
        if size < stream.read_pos or not self.head_intact(stream):
            self.handle(stream)
            return True
        return False

    def handle(self, stream: Stream) -> None:
        """The file was truncated: `stream` goes on with the old content, from the copy
        or nowhere (detached); the file is renewed. `stream` keeps its lower seq, so it is
        read before the renewed one."""
        self.stats.truncations += 1
        position = stream.read_pos
        # Looked for while the truncated file is still followed: it is no copy of itself.
        copy = self._open_copy(stream.path, stream.head, position) if stream.head else None
        del self.followed[stream.ident]
        self.renew(stream)
        if copy is not None:
            fd, ident, copy_path = copy
            stream.fd, stream.ident, stream.path = fd, ident, copy_path
            stream.live = False
            stream.last_growth = time.monotonic()
            self.followed[ident] = stream
            self.stats.copies_found += 1
            log.info(
                "file truncated in place; reading the rest of its copy first",
                extra={"path": stream.origin, "copy": copy_path, "offset": position},
            )
        else:
            stream.fd = -1  # the descriptor now belongs to the renewed stream
            stream.detached = True
            stream.live = False
            self.stats.truncations_without_copy += 1
            log.warning(
                "file truncated in place and no copy found: lines written after our position"
                " and before the truncation are lost",
                extra={"path": stream.origin, "offset": position},
            )

    def _open_copy(self, path: str, head: bytes, position: int) -> tuple[int, Ident, str] | None:
        """The copy a copytruncate made of `path` (see `Locator.copy_of`), opened."""
        copy = self.locate.copy_of(path, head, position, self.followed)
        opened = self.access.open(copy) if copy is not None else None
        if copy is None or opened is None:
            return None
        fd, st = opened
        return fd, (st.st_dev, st.st_ino), copy
