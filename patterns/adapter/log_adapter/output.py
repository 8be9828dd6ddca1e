"""Where records go: stdout (one JSON object per line, what cluster logging agents collect),
the Forward protocol (to the collector, acknowledged) or nowhere (metrics only).

`write` returns only when the records are durably handed over; the adapter commits its
checkpoint after that, so a crash re-sends rather than loses.
"""

from __future__ import annotations

import json
import logging
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
        # line's escapes): the standard library writes them, escaped.
        return json.dumps(record, separators=(",", ":"), default=str).encode()


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
    epoch = record_epoch(record)
    try:
        return protocol.encode_entry(epoch, record)
    except (UnicodeEncodeError, OverflowError, TypeError, ValueError):
        return protocol.encode_entry(epoch, _sanitize(record))


# How often a blocked ForwardOutput hands control back (heartbeat, polling the files).
WAKE_SECONDS = 0.25


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
        if not records:
            return
        entries = b"".join(map(encode_entry, records))
        backoff = 0.1
        while True:
            try:
                self.client.send_packed(self.tag, entries, len(records))
                return
            except ForwardError as exc:
                self.failures += 1
                log.warning(
                    "forward failed, retrying",
                    extra={"error": str(exc), "retry_in": backoff, "records": len(records)},
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
