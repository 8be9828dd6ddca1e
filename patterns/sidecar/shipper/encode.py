"""Encoding a chunk of lines as Forward protocol entries, without per-line Python objects.

Every entry is `[EventTime, {"log": line, "file": path}]`. Within one chunk the time and
the path are the same for every line, so the bytes before and after the line are built
once and the entries are joined around the packed lines: the only per-line work is
msgpack's C packer on the line itself.

A chunk goes as one PackedForward request, or as several when its entries would exceed
MAX_REQUEST_BYTES or MAX_EVENTS_PER_REQUEST: each entry adds about 25 bytes plus the
path's length to its line, so a batch of short lines is much larger on the wire than in the file.
The entries of chunks of several files under one tag are joined again into as few requests
as those limits allow (`merge_requests`): entries are self-contained, so joining is
concatenation.
"""

from __future__ import annotations

import struct
from itertools import accumulate, pairwise

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
        # ends[i]: the wire size of entries 0..i. Summed in C (accumulate, map), and the
        # cuts found by bisection: no Python work per line on this hot path.
        ends = list(accumulate(map(len, packed), initial=0))
        cuts = [0]
        while cuts[-1] < len(packed):
            start = cuts[-1]
            # The most entries from `start` within max_bytes: entry i ends at
            # ends[i + 1] - ends[start] + framing * (i + 1 - start) bytes.
            fits = start
            low, high = start + 1, min(len(packed), start + max_events)
            while low <= high:
                middle = (low + high) // 2
                if ends[middle] - ends[start] + framing * (middle - start) <= max_bytes:
                    fits, low = middle, middle + 1
                else:
                    high = middle - 1
            cuts.append(max(fits, start + 1))  # a single larger entry goes alone
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
        suffix = b"\xa4file" + self._packer.pack(valid_utf8(path))
        return prefix, suffix


def merge_requests(
    pieces: list[tuple[bytes, int]],
    *,
    max_bytes: int = MAX_REQUEST_BYTES,
    max_events: int = MAX_EVENTS_PER_REQUEST,
) -> list[tuple[bytes, int]]:
    """Consecutive (entries, count) requests of one tag joined, in order, into as few
    requests as fit in `max_bytes` of entries and `max_events` entries each (a piece that
    is larger on its own, a single large entry, stays alone, as `requests` made it)."""
    merged: list[tuple[bytes, int]] = []
    parts: list[bytes] = []
    size = count = 0
    for entries, events in pieces:
        if parts and (size + len(entries) > max_bytes or count + events > max_events):
            merged.append((b"".join(parts), count))
            parts, size, count = [], 0, 0
        parts.append(entries)
        size += len(entries)
        count += events
    if parts:
        merged.append((b"".join(parts), count))
    return merged


def valid_utf8(path: str) -> str:
    """A file name as valid UTF-8 text. Names are bytes: the app may create one that is not
    UTF-8 (Python holds its bytes as lone surrogates, which no encoder accepts); those bytes
    become U+FFFD, as in the lines."""
    try:
        path.encode()
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return path
