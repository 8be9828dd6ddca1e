"""Where records go: stdout (one JSON object per line, what cluster logging agents collect),
the Forward protocol (to the collector, acknowledged) or nowhere (metrics only).

`write` returns only when the records are durably handed over; the adapter commits its
checkpoint after that, so a crash re-sends rather than loses.

Every record can be written, whatever its lines carried: what the fast encoders refuse
(lone surrogates, integers beyond 64 bits) takes a slower path that writes it, JSON on
stdout stays valid JSON (no NaN or Infinity), a Forward entry's EventTime is one the
protocol holds, and Forward requests are cut at MAX_REQUEST_BYTES so that the collector
takes them, however many records one read made.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import threading
import time
from typing import Any, BinaryIO, Protocol

import orjson

from patterns.adapter.log_adapter.otel import Record, record_epoch
from patterns.common.forward import protocol
from patterns.common.forward.client import ForwardClient, ForwardError

log = logging.getLogger(__name__)


class Stopped(Exception):
    """Shutdown was requested while records were still undelivered: do not commit."""


class Output(Protocol):
    def write(self, records: list[Record]) -> None: ...

    def close(self) -> None: ...


def dumps(record: Record) -> bytes:
    try:
        return orjson.dumps(record)
    except TypeError:
        # Input orjson refuses (integers beyond 64 bits, lone surrogates from a JSON
        # line's escapes): the standard library writes them, escaped. orjson writes NaN
        # and infinities as null; so must this path (json.dumps would write NaN).
        return json.dumps(_finite(record), separators=(",", ":"), default=str).encode()


def _finite(value: Any) -> Any:
    """`value` with NaN and infinities (a JSON line's NaN, 1e999) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


class NullOutput:
    def write(self, records: list[Record]) -> None:
        pass

    def close(self) -> None:
        pass


class StdoutOutput:
    def __init__(self, stream: BinaryIO | None = None) -> None:
        self.stream = stream

    def write(self, records: list[Record]) -> None:
        if not records:
            return
        # Appended one by one, not joined: each orjson result keeps its write buffer (4 KiB
        # or more, however short the JSON), so a chunk's worth held at once for a join
        # cost ~32 MiB per 1 MiB read, half the pod's memory limit.
        data = bytearray()
        for record in records:
            data += dumps(record)
            data += b"\n"
        if self.stream is not None:
            self.stream.write(data)
            self.stream.flush()
            return
        # The service's own JSON logs share stdout through the text layer: flush it first
        # so lines never interleave mid-line.
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    def close(self) -> None:
        pass


def _sanitize(value: Any) -> Any:
    """What msgpack cannot encode (lone surrogates, huge integers) made encodable."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, dict):
        return {_sanitize(k): _sanitize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_sanitize(v) for v in value]
    return str(value)


def encode_entry(record: Record) -> bytes:
    epoch = record_epoch(record)  # within EventTime's range whatever the record says
    try:
        return protocol.encode_entry(epoch, record)
    except (UnicodeEncodeError, OverflowError, TypeError, ValueError):
        return protocol.encode_entry(epoch, _sanitize(record))


# How often a blocked ForwardOutput hands control back (heartbeat, polling the files).
WAKE_SECONDS = 0.25
# Bytes of entries per request at most, as the shipper's: a read's records (up to the adapter's
# MAX_LINES_PER_READ, each far larger than its line) in one request could pass the
# collector's frame limit (16 MiB by default, 2 MiB in its manifest), and a request the
# collector refuses would be retried forever. A single larger record goes alone.
MAX_REQUEST_BYTES = 1024 * 1024


class ForwardOutput:
    """PackedForward requests to the collector, each acknowledged. While the collector is
    unreachable the adapter waits here (retrying with backoff, calling `while_waiting`
    between tries), so lines stay in the file and nothing is lost; `stopping` ends the wait
    without committing."""

    def __init__(
        self,
        client: ForwardClient,
        tag: str,
        stopping: threading.Event,
        while_waiting: Any = None,
        max_backoff: float = 5.0,
    ) -> None:
        self.client = client
        self.tag = tag
        self.stopping = stopping
        self.while_waiting = while_waiting
        self.max_backoff = max_backoff
        self.failures = 0

    def write(self, records: list[Record]) -> None:
        batch: list[bytes] = []
        size = 0
        for record in records:
            entry = encode_entry(record)
            if batch and size + len(entry) > MAX_REQUEST_BYTES:
                self._send(batch)
                batch, size = [], 0
            batch.append(entry)
            size += len(entry)
        if batch:
            self._send(batch)

    def _send(self, batch: list[bytes]) -> None:
        """One request, acknowledged; retried until it is (or Stopped)."""
        entries = b"".join(batch)
        backoff = 0.1
        while True:
            try:
                self.client.send_packed(self.tag, entries, len(batch))
                return
            except ForwardError as exc:
                self.failures += 1
                log.warning(
                    "forward failed, retrying",
                    extra={"error": str(exc), "retry_in": backoff, "records": len(batch)},
                )
            self._wait(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    def _wait(self, seconds: float) -> None:
        """Sleep until the next try, calling `while_waiting` at least every WAKE_SECONDS
        (a long backoff must not leave rotations unwatched); Stopped ends it early."""
        deadline = time.monotonic() + seconds
        while True:
            if self.while_waiting is not None:
                self.while_waiting()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self.stopping.wait(min(left, WAKE_SECONDS)):
                raise Stopped()

    def close(self) -> None:
        self.client.close()
