"""Encoding a chunk of lines as Forward protocol entries, without per-line Python objects.

Every entry is `[EventTime, {"log": line, "file": path}]`. Within one chunk the time and
the path are the same for every line, so the bytes before and after the line are built
once and the entries are joined around the packed lines: the only per-line work is
msgpack's C packer on the line itself.

A chunk goes as one PackedForward request, or as several when its entries would exceed
MAX_REQUEST_BYTES or MAX_EVENTS_PER_REQUEST: each entry adds about 25 bytes plus the
path's length to its line, so a batch of short lines is much larger on the wire than in the file.
"""

from __future__ import annotations

import struct
from itertools import pairwise

import msgpack

_EVENT_TIME = struct.Struct(">II")

# The entries of one request, on the wire (before gzip); the request adds the tag and the
# options. A single entry is always smaller: lines are cut at SHIPPER_MAX_LINE_BYTES.
MAX_REQUEST_BYTES = 1024 * 1024
# Collectors also cap the events in one request (log-collector: 100,000 by default).
MAX_EVENTS_PER_REQUEST = 50_000


class EntryEncoder:
    """Not thread-safe (it keeps a packer): one per encoding thread."""

    def __init__(self) -> None:
        self._packer = msgpack.Packer(use_bin_type=True, autoreset=True)

    def encode(self, lines: list[str], path: str, timestamp: float) -> bytes:
        """The concatenated entries of a PackedForward request, one per line."""
        if not lines:
            return b""
        prefix, suffix = self._framing(path, timestamp)
        return prefix + (suffix + prefix).join(map(self._packer.pack, lines)) + suffix

    def requests(
        self,
        lines: list[str],
        path: str,
        timestamp: float,
        *,
        max_bytes: int = MAX_REQUEST_BYTES,
        max_events: int = MAX_EVENTS_PER_REQUEST,
    ) -> list[tuple[bytes, int]]:
        """The entries of the lines as (entries, count) per request, each request at most
        `max_bytes` of entries and `max_events` entries (a single larger entry goes alone)."""
        if not lines:
            return []
        prefix, suffix = self._framing(path, timestamp)
        packed = list(map(self._packer.pack, lines))
        framing = len(prefix) + len(suffix)
        cuts = [0]
        if len(packed) > max_events or sum(map(len, packed)) + framing * len(packed) > max_bytes:
            size = 0
            for index, item in enumerate(packed):
                entry = framing + len(item)
                if index > cuts[-1] and (
                    size + entry > max_bytes or index - cuts[-1] >= max_events
                ):
                    cuts.append(index)
                    size = 0
                size += entry
        cuts.append(len(packed))
        between = suffix + prefix
        return [
            (prefix + between.join(packed[start:end]) + suffix, end - start)
            for start, end in pairwise(cuts)
        ]

    def _framing(self, path: str, timestamp: float) -> tuple[bytes, bytes]:
        """The bytes before and after a packed line in its entry."""
        seconds = int(timestamp)
        nanoseconds = min(int((timestamp - seconds) * 1e9), 999_999_999)
        # fixarray(2), EventTime as fixext8 of type 0, fixmap(2), "log"
        prefix = b"\x92\xd7\x00" + _EVENT_TIME.pack(seconds, nanoseconds) + b"\x82\xa3log"
        suffix = b"\xa4file" + self._packer.pack(path)
        return prefix, suffix
