"""What every format shares: the decoder's contract, what it reports to, and the checks
a value must pass before it counts.

A decoder is per file (the `legacy` one holds a record under assembly), is fed the file's
lines in order and, when `context.emit` is set, returns the records to write. It reports
what it saw through `context.events` (a `DecoderEvents`: the adapter's metrics implement
it; the adapter holds their lock while it feeds a chunk) and knows nothing else of the
metrics. Every line fed is counted exactly once, as parsed or rejected (`count_lines`); a
rejected line still becomes a record: `adapter.unparsed` set, the raw text as its body,
no event timestamp (`unparsed`).

The app's files are not trusted. A value a line carries that does not fit the model
(a number too large, non-finite, negative or out of range, a time outside 1970..2106)
rejects that line before anything is reported; and each decoder decodes a line inside
one guard, so an exception raised while decoding a line, whatever its cause, rejects that
line (logged once per kind, `Context.fault`) and never leaves `feed`: the adapter goes
on, and its checkpoint moves past the line.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from patterns.adapter.log_adapter import otel
from patterns.adapter.log_adapter.otel import Record

log = logging.getLogger("patterns.adapter.log_adapter.formats")

# --- what a value may be -----------------------------------------------------------------
# A size (bytes) or duration (microseconds) written as digits has at most MAX_DIGITS of
# them: a length test before any int() (Python refuses to convert 4,300 digits or more),
# and what passes fits OpenTelemetry's int64 attributes and msgpack, and sums to a finite
# float in the exposition.
MAX_DIGITS = 18
MAX_VALUE = 10**MAX_DIGITS - 1
_MAX_INT64 = 2**63 - 1
# The numeric semantic-convention attributes and the values they may take (json and regex
# formats; the combined format's are checked in its loop). A number outside its range
# (NaN and infinities included) rejects the line; a value that is no number at all (a
# string, a bool) stays an attribute as it is and counts for nothing in the metrics.
NUMERIC_RANGES: dict[str, tuple[float, float]] = {
    "http.response.status_code": (100, 599),
    "http.response.body.size": (0, MAX_VALUE),
    "http.server.request.duration": (0, MAX_VALUE / 1_000_000),  # seconds
    "process.pid": (0, _MAX_INT64),
    "thread.id": (0, _MAX_INT64),
    "client.port": (0, 65535),
    "server.port": (0, 65535),
}
FLOAT_ATTRIBUTES = frozenset(("http.server.request.duration",))
INT_ATTRIBUTES = frozenset(NUMERIC_RANGES) - FLOAT_ATTRIBUTES
# Entries in a decoder's own caches (parsed times, dates) before they are dropped.
CACHE_LIMIT = 4096


def fits(attributes: dict[str, Any]) -> bool:
    """Whether every numeric semantic-convention attribute is a number its range holds."""
    for name, (low, high) in NUMERIC_RANGES.items():
        value = attributes.get(name)
        if (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and not low <= value <= high  # False for NaN too
        ):
            return False
    return True


# --- the contract --------------------------------------------------------------------------


class DecoderEvents(Protocol):
    """What a decoder reports: all it knows of the metrics (`AdapterMetrics` implements
    it). Only values that passed the checks above are reported."""

    def observe_request(
        self, method: str, status: str, target: str | None, size: int, duration_us: int | None
    ) -> None:
        """One HTTP request: its method as written (one outside the known set is folded
        into `_OTHER`), a three-digit status, the raw request target (None: the line had
        none), response bytes, and its duration in microseconds if the line gave one."""
        ...

    def observe_app_record(self, severity: str) -> None:
        """One application log record, by its severity's OpenTelemetry short name."""
        ...

    def count_lines(self, input_name: str, parsed: int, rejected: int) -> None:
        """Lines of one `feed` or `flush`: every line fed is counted once, either way."""
        ...


class Decoder(Protocol):
    format: str

    @property
    def held_lines(self) -> int:
        """Trailing lines fed but not yet emitted (a record under assembly)."""
        ...

    def feed(self, lines: Sequence[str], observed: str) -> list[Record]: ...

    def flush(self, observed: str) -> list[Record]: ...


class Faults:
    """Faults of a decoder's own code on a line (an exception the line caused): logged once
    per kind (format, exception type) per LOG_INTERVAL seconds, with how many went unlogged,
    so a flood of poison lines cannot flood the adapter's logs."""

    LOG_INTERVAL = 60.0

    def __init__(self) -> None:
        self._next_log: dict[tuple[str, str], float] = {}
        self._unlogged: dict[tuple[str, str], int] = {}

    def __call__(self, input_name: str, fmt: str, exc: Exception) -> None:
        kind = (fmt, type(exc).__name__)
        now = time.monotonic()
        if now < self._next_log.get(kind, 0.0):
            self._unlogged[kind] = self._unlogged.get(kind, 0) + 1
            return
        self._next_log[kind] = now + self.LOG_INTERVAL
        error = f"{type(exc).__name__}: {exc}"[:200]
        log.warning(
            "a line could not be decoded; it is rejected",
            extra={
                "input": input_name,
                "format": fmt,
                # The message may quote the line: printable ASCII only, in the logs.
                "error": error.encode("ascii", "backslashreplace").decode(),
                "unlogged_since_last": self._unlogged.pop(kind, 0),
            },
        )


@dataclass(frozen=True)
class RegexFormat:
    """A user's format (ADAPTER_REGEX): a regular expression whose named groups become
    fields, and `time_format`, a strptime format for its timestamp group (default: ISO
    8601; without a zone, UTC). See formats/regex.py."""

    pattern: re.Pattern[str]
    time_format: str | None = None

    @classmethod
    def compile(cls, pattern: str, time_format: str | None = None) -> RegexFormat:
        compiled = re.compile(pattern)
        if not compiled.groupindex:
            raise ValueError("the regular expression has no named groups")
        return cls(compiled, time_format)


@dataclass(frozen=True)
class Context:
    """What every decoder of one input shares: where it reports, whether it emits records,
    the resource they carry, and the settings a format may take."""

    input_name: str
    events: DecoderEvents
    emit: bool
    resource: dict[str, Any]
    faults: Faults = field(default_factory=Faults)
    regex: RegexFormat | None = None  # ADAPTER_REGEX, for the regex format
    max_record_bytes: int = 65536  # ADAPTER_MAX_RECORD_BYTES, for multi-line records

    def fault(self, fmt: str, exc: Exception) -> None:
        self.faults(self.input_name, fmt, exc)


def unparsed(line: str, fmt: str, path: str, observed: str, resource: dict[str, Any]) -> Record:
    """The record of a rejected line: its raw text, flagged, with no event time."""
    return {
        "observed_timestamp": observed,
        "severity_text": "UNSPECIFIED",
        "severity_number": otel.UNSPECIFIED,
        "body": line,
        "attributes": {"log.file.path": path, "adapter.unparsed": True, "adapter.format": fmt},
        "resource": resource,
    }


def observed_now() -> str:
    return otel.format_timestamp(time.time())
