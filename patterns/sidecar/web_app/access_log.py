"""The access log FILE the log-shipper sidecar follows: one combined-format line per request
with a sequence number, rotated by size.

Writes go through the standard library's RotatingFileHandler, which renames access.log to
access.log.1 (and so on) when the next line would pass the size limit. It is safe across
threads but NOT across processes: two processes rotating the same file would rename it under
each other and lose lines. That is why the server runs a single gunicorn worker (with
threads), and why only one process may write a given log directory.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import re
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

log = logging.getLogger(__name__)

# The sequence number closes every line: `... "<user agent>" seq=<n>`.
SEQ_PATTERN = re.compile(r" seq=(\d+)$")
# How much of the end of a file to read to find its last sequence number.
_TAIL_BYTES = 64 * 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\\"]")


def escape(text: str) -> str:
    """Make client-controlled text safe inside one quoted field of one line: a newline in a
    URL or User-Agent must never split a log line (log injection) or hide its sequence
    number. Non-ASCII becomes \\x/\\u escapes, as Apache's combined log does."""
    quoted = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return quoted.encode("ascii", "backslashreplace").decode("ascii")


@dataclass(frozen=True)
class Request:
    """What one access-log line says about a request (combined log format fields)."""

    remote: str
    method: str
    target: str
    protocol: str
    status: int
    size: int | None
    referer: str
    user_agent: str


def format_line(request: Request, when: datetime, seq: int) -> str:
    size = "-" if request.size is None else str(request.size)
    return (
        f"{escape(request.remote or '-')} - - [{when.strftime('%d/%b/%Y:%H:%M:%S %z')}] "
        f'"{escape(request.method)} {escape(request.target)} {escape(request.protocol)}" '
        f'{request.status} {size} "{escape(request.referer or "-")}" '
        f'"{escape(request.user_agent or "-")}" seq={seq}'
    )


def last_sequence(path: Path) -> int:
    """The highest sequence number already in `path` or its newest backup (0 if none), so a
    restarted app continues the numbering instead of repeating it."""
    for candidate in (path, path.with_name(path.name + ".1")):
        if not candidate.is_file():  # missing, or a device/FIFO that has no "last line"
            continue
        try:
            with open(candidate, "rb") as file:
                file.seek(0, 2)
                size = file.tell()
                file.seek(max(0, size - _TAIL_BYTES))
                tail = file.read(_TAIL_BYTES).decode("ascii", "replace")
        except FileNotFoundError:
            continue
        for line in reversed(tail.splitlines()):
            match = SEQ_PATTERN.search(line)
            if match:
                return int(match.group(1))
    return 0


class _CountingRotatingHandler(logging.handlers.RotatingFileHandler):
    def __init__(
        self, path: Path, max_bytes: int, backups: int, on_rotate: Callable[[], None]
    ) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="ascii")
        self._on_rotate = on_rotate
        self.last_error: BaseException | None = None

    def doRollover(self) -> None:  # the stdlib's name
        super().doRollover()
        self._on_rotate()

    def handleError(self, record: logging.LogRecord) -> None:
        # The stdlib prints a traceback to stderr and carries on; we keep the error so the
        # caller can count it, fail readiness and report it as a structured event.
        self.last_error = sys.exc_info()[1]


class AccessLog:
    def __init__(
        self, path: Path, max_bytes: int, backups: int, registry: CollectorRegistry
    ) -> None:
        self.path = path
        self.lines = Counter(
            "web_app_log_lines", "Access-log lines written to the file.", registry=registry
        )
        # Plain counts for /api/stats (the Prometheus counters hold the same numbers).
        self.rotation_count = 0
        self.lines_written = 0
        self.write_error_count = 0
        self.rotations = Counter(
            "web_app_log_rotations", "Times access.log was rotated by size.", registry=registry
        )
        self.write_errors = Counter(
            "web_app_log_write_errors",
            "Access-log lines that could not be written (disk full, directory gone...).",
            registry=registry,
        )
        self.sequence_gauge = Gauge(
            "web_app_log_last_sequence",
            "Sequence number of the last line written; the collector should reach it too.",
            registry=registry,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        self.sequence = last_sequence(path)
        self.sequence_gauge.set(self.sequence)
        self._handler = _CountingRotatingHandler(path, max_bytes, backups, self._rotated)
        self._lock = threading.Lock()
        self.healthy = True
        log.info(
            "access log open",
            extra={
                "path": str(path),
                "max_bytes": max_bytes,
                "backups": backups,
                "resumed_at_seq": self.sequence,
            },
        )

    def _rotated(self) -> None:
        self.rotation_count += 1
        self.rotations.inc()
        log.info(
            "access log rotated",
            extra={"path": str(self.path), "seq": self.sequence, "rotations": self.rotation_count},
        )

    def write(self, requests: Iterable[Request]) -> tuple[int, int]:
        """Append one line per request; returns (first, last) sequence numbers written.

        One lock covers numbering and writing, so the numbers in the file are strictly
        increasing and a burst from /traffic is one contiguous range.
        """
        with self._lock:
            first = self.sequence + 1
            for request in requests:
                self._write_one(request)
            return first, self.sequence

    def _write_one(self, request: Request) -> None:
        seq = self.sequence + 1
        line = format_line(request, datetime.now(UTC), seq)
        if not self.healthy and not self._ends_with_newline():
            # A write that failed half-way (disk full) may have left a torn line: end it,
            # so the next line is not glued to it and keeps its own sequence number.
            line = "\n" + line
        self._handler.last_error = None
        self._handler.handle(logging.makeLogRecord({"msg": line, "args": None}))
        error = self._handler.last_error
        if error is not None:
            # The number is not consumed, so a gap in the file always means lost lines
            # downstream, never a failed write here.
            self._drop_stream()
            self.write_errors.inc()
            self.write_error_count += 1
            if self.healthy:
                log.error(
                    "cannot write access log", extra={"path": str(self.path), "error": repr(error)}
                )
            self.healthy = False
            return
        if not self.healthy:
            log.info("access log writable again", extra={"path": str(self.path)})
        self.healthy = True
        self.sequence = seq
        self.sequence_gauge.set(seq)
        self.lines.inc()
        self.lines_written += 1

    def _drop_stream(self) -> None:
        """Close the file right after a failed write, while the disk is still refusing
        data, so that bytes left in the write buffer are discarded instead of reaching the
        file later ahead of the retried line (which has the same number)."""
        stream, self._handler.stream = self._handler.stream, None
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):
                stream.close()

    def _ends_with_newline(self) -> bool:
        try:
            with open(self.path, "rb") as file:
                if not self.path.is_file() or file.seek(0, 2) == 0:
                    return True
                file.seek(-1, 2)
                return file.read(1) == b"\n"
        except OSError:
            return True  # nothing readable to repair; the write itself will report

    def close(self) -> None:
        with self._lock:
            self._handler.close()
