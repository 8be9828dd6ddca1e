"""Encoding a chunk of lines as Forward protocol entries, without per-line Python objects.

Every entry is `[EventTime, {"log": line, "file": path}]`. Within one chunk the time and
the path are the same for every line, so the bytes before and after the line are built
once and the entries are joined around the packed lines: the only per-line work is
msgpack's C packer on the line itself.
"""

from __future__ import annotations

import struct

import msgpack

_EVENT_TIME = struct.Struct(">II")


class EntryEncoder:
    """Not thread-safe (it keeps a packer): one per encoding thread."""

    def __init__(self) -> None:
        self._packer = msgpack.Packer(use_bin_type=True, autoreset=True)

    def encode(self, lines: list[str], path: str, timestamp: float) -> bytes:
        """The concatenated entries of a PackedForward request, one per line."""
        if not lines:
            return b""
        seconds = int(timestamp)
        nanoseconds = min(int((timestamp - seconds) * 1e9), 999_999_999)
        # fixarray(2), EventTime as fixext8 of type 0, fixmap(2), "log"
        prefix = b"\x92\xd7\x00" + _EVENT_TIME.pack(seconds, nanoseconds) + b"\x82\xa3log"
        suffix = b"\xa4file" + self._packer.pack(path)
        packed = map(self._packer.pack, lines)
        return prefix + (suffix + prefix).join(packed) + suffix
