"""One followed file as the follower holds it, and the chunks of lines read from it.

A `Stream` is an open file descriptor (kept across renames, so a rotated file is read to
its end), the read position, the committed (durably handled) position, the held
incomplete line and the head of the file (its first bytes: the fingerprint that tells a
truncated, rewritten or reused file from the one we know).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from patterns.common.follower.checkpoints import Checkpoint, head_hash
from patterns.common.follower.lines import LineBuffer

Ident = tuple[int, int]  # (st_dev, st_ino)


# What a checkpoint says of a stream: a change to one of these is reported to the follower
# (`Stream.on_change`), so that a commit re-encodes the checkpoint of the file that
# changed, not of every file followed.
_CHECKPOINTED = frozenset({"ident", "path", "origin", "live", "committed", "head", "detached"})
_UNSET = object()


@dataclass(eq=False)
class Stream:
    seq: int
    on_change: Callable[[Stream, str, Any], None] = field(repr=False)
    fd: int
    ident: Ident
    path: str  # where the file is now (as far as we know)
    origin: str  # the followed name its lines were written under
    live: bool  # still under a followed name
    read_pos: int
    committed: int
    handed_out: int  # end of the last chunk given to the consumer
    head: bytes
    buffer: LineBuffer
    last_growth: float
    detached: bool = False  # truncated without a copy: nothing more to read from fd
    finished: bool = False  # done reading; closed once everything handed out is committed
    closed: bool = False
    _head_hash: str = field(default="", repr=False)
    _hashed_head: bytes = field(default=b"", repr=False)

    def __setattr__(self, name: str, value: Any) -> None:
        old = getattr(self, name, _UNSET) if name in _CHECKPOINTED else value
        if old != value:
            object.__setattr__(self, name, value)
            if "on_change" in self.__dict__:
                self.on_change(self, name, old)
        else:
            object.__setattr__(self, name, value)

    def checkpoint(self) -> Checkpoint:
        if self._hashed_head != self.head or not self._head_hash:
            self._head_hash = head_hash(self.head)
            self._hashed_head = self.head
        return Checkpoint(
            dev=self.ident[0],
            ino=self.ident[1],
            offset=self.committed,
            head_len=len(self.head),
            head_hash=self._head_hash,
            path=self.path,
            origin=self.origin,
            live=self.live,
            mtime_ns=self.mtime_ns(),
        )

    def mtime_ns(self) -> int:
        try:
            return os.fstat(self.fd).st_mtime_ns
        except OSError:
            return 0


@dataclass(frozen=True)
class Chunk:
    """Lines read from one file. `path` is the followed name the lines were written
    under (also for a rotated or copied file); [start, end) the bytes they came from."""

    path: str
    lines: list[str]
    start: int
    end: int
    _stream: Any = field(repr=False, compare=False)


def up_to_line(block: bytes, count: int) -> bytes:
    """`block` up to and including its `count`-th newline (all of it if it has fewer)."""
    if block.count(b"\n") <= count:
        return block
    low, high = 0, len(block)  # the shortest prefix holding `count` newlines
    while low < high:
        middle = (low + high) // 2
        if block.count(b"\n", 0, middle) >= count:
            high = middle
        else:
            low = middle + 1
    return block[:low]
