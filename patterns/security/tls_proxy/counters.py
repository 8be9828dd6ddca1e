"""The proxy's counters, shared by its worker processes.

Every worker counts into its own row of one shared memory block (a memfd the first
process creates and the others map), with plain float adds: no lock, no prometheus
object on the hot path. The first process's admin server sums the rows at scrape time
(metrics.py); the other workers never import prometheus_client.
"""

from __future__ import annotations

import mmap
import os

HANDSHAKE_RESULTS = (
    "ok",
    "no_client_certificate",  # mutual TLS: the client sent none
    "bad_client_certificate",  # mutual TLS: it did not verify against PROXY_CLIENT_CA_FILE
    "timeout",  # not done within PROXY_HANDSHAKE_TIMEOUT_SECONDS
    "no_certificate",  # refused: none loaded yet, or the loaded one expired
    "failed",  # anything else: not TLS, an old protocol, no common cipher, reset
)
CLOSE_REASONS = (
    "idle_timeout",
    "request_timeout",
    "evicted",
    "too_large",  # 431: head over PROXY_MAX_HEADER_BYTES or PROXY_MAX_HEADERS
    "bad_request",  # 400: not HTTP/1.x
    "not_implemented",  # 501: Upgrade / CONNECT
    "upstream_unavailable",  # 502: the app did not accept the connection
    "shutdown",
)
RELOAD_RESULTS = ("ok", "bad")

_NAMES = (
    [f"handshakes:{r}" for r in HANDSHAKE_RESULTS]
    + [f"closed:{r}" for r in CLOSE_REASONS]
    + [f"reloads:{r}" for r in RELOAD_RESULTS]
    + ["requests", "connections_open", "not_after", "alive"]
)
SLOT = {name: i for i, name in enumerate(_NAMES)}
ROW = len(_NAMES)
_DOUBLE = 8


class SharedCounters:
    """`workers` rows of ROW float slots in a memfd; `row(i)` is worker i's view."""

    def __init__(self, workers: int, fd: int | None = None) -> None:
        self.workers = workers
        size = workers * ROW * _DOUBLE
        if fd is None:
            fd = os.memfd_create("tls-proxy-counters")
            os.ftruncate(fd, size)
        self.fd = fd
        self._map = mmap.mmap(fd, size)
        self.slots = memoryview(self._map).cast("d")

    def row(self, index: int) -> Row:
        return Row(self.slots, index * ROW)

    def total(self, name: str) -> float:
        slot = SLOT[name]
        return sum(self.slots[i * ROW + slot] for i in range(self.workers))

    def each(self, name: str) -> list[float]:
        slot = SLOT[name]
        return [self.slots[i * ROW + slot] for i in range(self.workers)]


class Row:
    """One worker's slots: `row.add("requests")`, or `row.slots[row.base + SLOT[...]]`
    in hot paths."""

    def __init__(self, slots: memoryview[float], base: int) -> None:
        self.slots = slots
        self.base = base

    def add(self, name: str, amount: float = 1.0) -> None:
        self.slots[self.base + SLOT[name]] += amount

    def set(self, name: str, value: float) -> None:
        self.slots[self.base + SLOT[name]] = value

    def get(self, name: str) -> float:
        return float(self.slots[self.base + SLOT[name]])
