"""Line formats: each decoder turns one file's lines into OpenTelemetry records and metrics.

A decoder is per file (the `legacy` one holds a record under assembly), is fed the file's
lines in order, updates `AdapterMetrics` (the caller holds `metrics.lock`) and, when
`emit` is set, returns the records to write. Every line fed is counted exactly once, as
parsed or rejected; a rejected line still becomes a record: `adapter.unparsed` set, the
raw text as its body, no event timestamp.

The app's files are not trusted. A value a line carries that does not fit the model
(a number too large, non-finite, negative or out of range, a time outside 1970..2106, JSON
nested too deep) rejects that line before any metric moves; and each decoder's loop
decodes a line inside one guard, so an exception raised while decoding a line, whatever
its cause, rejects that line (logged once per kind, `Context.faults`) and never leaves
`feed`: the adapter goes on, and its checkpoint moves past the line.

Formats:
  combined  NCSA combined (or common) log, optionally followed by Apache's %D (microseconds)
  legacy    `YYYY-MM-DD HH:MM:SS,mmm LEVEL [thread] logger - message` + continuation lines
  json      one JSON object per line (timestamp/level/message keys recognised)
  regex     a user-supplied regular expression with named groups
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol

from patterns.adapter.log_adapter import otel
from patterns.adapter.log_adapter.metrics import (
    DURATION_BOUNDS_US,
    KNOWN_METHODS,
    OTHER_METHOD,
    OTHER_PATH,
    AdapterMetrics,
)
from patterns.adapter.log_adapter.otel import Record

log = logging.getLogger(__name__)

FORMATS = ("combined", "legacy", "json", "regex")

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
_FLOAT_ATTRIBUTES = frozenset(("http.server.request.duration",))
_INT_ATTRIBUTES = frozenset(NUMERIC_RANGES) - _FLOAT_ATTRIBUTES
# A JSON line nested deeper than this is rejected: the outputs' encoders (orjson, msgpack)
# and the recursion limit have their own limits, and no log record needs more.
MAX_JSON_DEPTH = 64


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


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether JSON data nests more than `limit` objects and arrays deep (no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


_QUOTED = r'[^"\\]*(?:\\.[^"\\]*)*'  # Apache escapes " and \ inside quoted fields
# ASCII: Apache writes ASCII digits and spaces; a Unicode \d would take Arabic-Indic digits
# ("5\u0660\u0660") for a status label. RE2 (mtail, as in benchmarks/) reads \d, \S so too.
COMBINED = re.compile(
    r"(?P<client>\S+) \S+ (?P<user>\S+) "
    r"\[(?P<time>\d\d/[A-Z][a-z][a-z]/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] "
    rf'"(?:(?P<method>[A-Za-z]+) (?P<target>[^ "]+)(?: (?P<proto>[^ "]+))?'
    rf'|(?P<request>{_QUOTED}))" '
    r"(?P<status>[1-5]\d\d) (?P<size>\d+|-)"
    rf'(?: "(?P<referer>{_QUOTED})" "(?P<agent>{_QUOTED})")?'
    r"(?: (?P<duration>\d+))?",
    re.ASCII,
)

# ASCII digits, as the combined format: a Unicode digit would make a timestamp no reader takes.
LEGACY_HEADER = re.compile(
    r"(?P<date>[0-9]{4}-[0-9][0-9]-[0-9][0-9]) "
    r"(?P<time>(?:[01][0-9]|2[0-3]):[0-5][0-9]:(?:[0-5][0-9]|60))[,.](?P<ms>[0-9]{3}) +"
    r"(?P<level>[A-Za-z]+) +\[(?P<thread>[^\]]*)\] (?P<logger>\S+) - (?P<message>.*)",
    re.DOTALL,
)
# The last line of a Python traceback ("ValueError: bad input") or the first line of a
# Java one ("java.lang.IllegalStateException: closed").
_EXCEPTION_LINE = re.compile(r"(?P<type>[A-Za-z_$][\w$.]*)(?::\s*(?P<message>.*))?", re.DOTALL)
_JAVA_EXCEPTION = re.compile(r"[\w$.]+(?:Exception|Error|Throwable)(?::.*)?", re.DOTALL)

_MONTHS = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_CACHE_LIMIT = 4096
_EPOCH_DAY = date(1970, 1, 1).toordinal()


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


class Decoder(Protocol):
    format: str

    @property
    def held_lines(self) -> int:
        """Trailing lines fed but not yet emitted (a record under assembly)."""
        ...

    def feed(self, lines: Sequence[str], observed: str) -> list[Record]: ...

    def flush(self, observed: str) -> list[Record]: ...


@dataclass(frozen=True)
class Context:
    """What every decoder of one input shares."""

    input_name: str
    metrics: AdapterMetrics
    emit: bool
    resource: dict[str, Any]
    faults: Faults = field(default_factory=Faults)

    def fault(self, fmt: str, exc: Exception) -> None:
        self.faults(self.input_name, fmt, exc)


def unparsed(line: str, fmt: str, path: str, observed: str, resource: dict[str, Any]) -> Record:
    return {
        "observed_timestamp": observed,
        "severity_text": "UNSPECIFIED",
        "severity_number": otel.UNSPECIFIED,
        "body": line,
        "attributes": {"log.file.path": path, "adapter.unparsed": True, "adapter.format": fmt},
        "resource": resource,
    }


# --- combined --------------------------------------------------------------------------------


class _AccessTime:
    """`10/Oct/2000:13:55:36 -0700` -> RFC 3339 UTC, cached: a busy log repeats each second
    hundreds of times, and strptime would cost more than the rest of the line."""

    def __init__(self) -> None:
        # "" marks an impossible time (31/Feb): the line is malformed.
        self.cache: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        value = self.cache.get(text)
        if value is None:
            value = self._parse(text)
            if len(self.cache) >= _CACHE_LIMIT:
                self.cache.clear()
            self.cache[text] = value
        return value

    @staticmethod
    def _parse(text: str) -> str:
        month = _MONTHS.get(text[3:6])
        if month is None:
            return ""
        try:
            moment = datetime(
                int(text[7:11]),
                month,
                int(text[0:2]),
                int(text[12:14]),
                int(text[15:17]),
                int(text[18:20]),
            )
        except ValueError:
            return ""
        offset = int(text[22:24]) * 3600 + int(text[24:26]) * 60
        if text[21] == "-":
            offset = -offset
        epoch = otel.utc_epoch(*moment.timetuple()[:6]) - offset
        return otel.timestamp(epoch) or ""


class CombinedDecoder:
    format = "combined"
    held_lines = 0

    def __init__(self, context: Context, path: str) -> None:
        self.context = context
        self.path = path
        self.access_time = _AccessTime()

    def feed(self, lines: Sequence[str], observed: str) -> list[Record]:
        # One regex match per line and only dict/list bumps after it: this loop is the
        # adapter's throughput (see benchmarks/adapter_vs_mtail.py), so the cache lookups
        # and the metric update of AdapterMetrics.observe_request are inlined here. Every
        # value is checked and the record built before any metric moves: a line that
        # fails on the way (a value that does not fit, or an exception) leaves no trace
        # but its rejection.
        ctx = self.context
        metrics = ctx.metrics
        emit = ctx.emit
        match = COMBINED.fullmatch
        time_get = self.access_time.cache.get
        access_time = self.access_time
        path_get = metrics.path_label.cache.get
        path_label = metrics.path_label
        requests_get = metrics.requests.get
        requests = metrics.requests
        buckets = metrics.duration_buckets
        bounds = DURATION_BOUNDS_US
        known = KNOWN_METHODS
        max_digits = MAX_DIGITS
        records: list[Record] = []
        rejected = 0
        duration_sum = 0
        for line in lines:
            try:
                m = match(line)
                if m is not None:
                    (
                        client,
                        user,
                        time_text,
                        method,
                        target,
                        proto,
                        _request,
                        status,
                        size,
                        referer,
                        agent,
                        duration,
                    ) = m.groups()
                    timestamp = time_get(time_text)
                    if timestamp is None:
                        timestamp = access_time(time_text)
                    if (
                        timestamp
                        and len(size) <= max_digits
                        and (duration is None or len(duration) <= max_digits)
                    ):
                        nbytes = 0 if size == "-" else int(size)
                        micros = None if duration is None else int(duration)
                        label_method = method if method in known else OTHER_METHOD
                        if target is None:
                            path = OTHER_PATH
                        else:
                            cached = path_get(target)
                            path = path_label(target) if cached is None else cached
                        if emit:
                            records.append(
                                self._record(
                                    line,
                                    observed,
                                    timestamp,
                                    client,
                                    user,
                                    method,
                                    label_method,
                                    target,
                                    proto,
                                    status,
                                    None if size == "-" else nbytes,
                                    referer,
                                    agent,
                                    micros,
                                )
                            )
                        key = (label_method, status, path)
                        entry = requests_get(key)
                        if entry is None:
                            entry = requests[key] = [0, 0]
                        entry[0] += 1
                        entry[1] += nbytes
                        if micros is not None:
                            buckets[bisect_left(bounds, micros)] += 1
                            duration_sum += micros
                        continue
            except Exception as exc:  # a fault on this line costs this line
                ctx.fault("combined", exc)
            rejected += 1
            if emit:
                records.append(unparsed(line, "combined", self.path, observed, ctx.resource))
        metrics.duration_sum_us += duration_sum
        metrics.count_lines(ctx.input_name, len(lines) - rejected, rejected)
        return records

    def _record(
        self,
        line: str,
        observed: str,
        timestamp: str,
        client: str,
        user: str,
        method: str | None,
        label_method: str,
        target: str | None,
        proto: str | None,
        status: str,
        size: int | None,
        referer: str | None,
        agent: str | None,
        micros: int | None,
    ) -> Record:
        status_code = int(status)
        severity_text, severity_number = otel.http_status_severity(status_code)
        attributes: dict[str, Any] = {"client.address": client}
        if user != "-":
            attributes["user.name"] = user
        attributes["http.request.method"] = label_method
        if method is not None and method != label_method:
            attributes["http.request.method_original"] = method
        if target is not None:
            url_path, question, query = target.partition("?")
            attributes["url.path"] = url_path
            if question:
                attributes["url.query"] = query
        if proto is not None:
            name, _slash, version = proto.partition("/")
            attributes["network.protocol.name"] = name.lower()
            if version:
                attributes["network.protocol.version"] = version
        attributes["http.response.status_code"] = status_code
        if size is not None:
            attributes["http.response.body.size"] = size
        if referer is not None and referer != "-":
            attributes["http.request.header.referer"] = [referer]
        if agent is not None and agent != "-":
            attributes["user_agent.original"] = agent
        if micros is not None:
            attributes["http.server.request.duration"] = micros / 1_000_000
        attributes["log.file.path"] = self.path
        return {
            "timestamp": timestamp,
            "observed_timestamp": observed,
            "severity_text": severity_text,
            "severity_number": severity_number,
            "body": line,
            "attributes": attributes,
            "resource": self.context.resource,
        }

    def flush(self, observed: str) -> list[Record]:
        return []


# --- legacy ----------------------------------------------------------------------------------


@dataclass
class _Pending:
    header: str  # the raw first line, the body of its unparsed record if it fails
    timestamp: str
    level: str
    thread: str
    logger: str
    lines: list[str]
    size: int


class LegacyDecoder:
    """Multi-line records: a header line starts a record, any other line continues the
    one before it. A record is complete when the next header arrives or `flush` is called
    (the adapter does that after a quiet period); until then its lines are `held_lines`,
    and the adapter's checkpoint stays at its first line, so a restart re-reads it whole.
    A continuation line with no record to join (start of a file, or past
    `max_record_bytes`) is rejected, and so is a header whose time the model cannot carry
    (an impossible date, or outside 1970..2106)."""

    format = "legacy"

    def __init__(self, context: Context, path: str, max_record_bytes: int = 65536) -> None:
        self.context = context
        self.path = path
        self.max_record_bytes = max_record_bytes
        self._pending: _Pending | None = None
        self._days: dict[str, int | None] = {}

    @property
    def held_lines(self) -> int:
        return 0 if self._pending is None else len(self._pending.lines)

    def feed(self, lines: Sequence[str], observed: str) -> list[Record]:
        records: list[Record] = []
        parsed = rejected = 0
        match = LEGACY_HEADER.fullmatch
        for line in lines:
            try:
                m = match(line)
                if m is not None and not self._in_range(m.group("date"), m.group("time")):
                    m = None  # header-shaped but impossible: malformed, not a continuation
                    continuing = False
                else:
                    continuing = True
                if m is not None:
                    if self._pending is not None:
                        parsed, rejected = self._finish(records, observed, parsed, rejected)
                    date_text, time_text, ms, level, thread, logger, message = m.groups()
                    self._pending = _Pending(
                        line,
                        f"{date_text}T{time_text}.{ms}Z",
                        level,
                        thread,
                        logger,
                        [message],
                        len(message),
                    )
                    continue
                if (
                    continuing
                    and self._pending is not None
                    and self._pending.size + len(line) <= self.max_record_bytes
                ):
                    self._pending.lines.append(line)
                    self._pending.size += len(line) + 1
                    continue
                if self._pending is not None:
                    parsed, rejected = self._finish(records, observed, parsed, rejected)
            except Exception as exc:  # a fault on this line costs this line
                self.context.fault("legacy", exc)
            rejected += 1
            if self.context.emit:
                records.append(unparsed(line, "legacy", self.path, observed, self.context.resource))
        self.context.metrics.count_lines(self.context.input_name, parsed, rejected)
        return records

    def flush(self, observed: str) -> list[Record]:
        records: list[Record] = []
        if self._pending is not None:
            parsed, rejected = self._finish(records, observed, 0, 0)
            self.context.metrics.count_lines(self.context.input_name, parsed, rejected)
        return records

    def _in_range(self, date_text: str, time_text: str) -> bool:
        """Whether the header's date exists and its time is one the model carries."""
        day = self._days.get(date_text, -1)
        if day == -1:
            try:
                day = (date.fromisoformat(date_text).toordinal() - _EPOCH_DAY) * 86400
            except ValueError:
                day = None
            if len(self._days) >= _CACHE_LIMIT:
                self._days.clear()
            self._days[date_text] = day
        if day is None:
            return False
        seconds = int(time_text[0:2]) * 3600 + int(time_text[3:5]) * 60 + int(time_text[6:8])
        return 0 <= day + seconds <= otel.MAX_EPOCH

    def _finish(
        self, records: list[Record], observed: str, parsed: int, rejected: int
    ) -> tuple[int, int]:
        """Complete the pending record: (parsed, rejected) plus the lines it consumed."""
        pending = self._pending
        assert pending is not None
        self._pending = None
        try:
            number = otel.severity_number(pending.level)
            record: Record | None = None
            if self.context.emit:
                attributes: dict[str, Any] = {"thread.name": pending.thread}
                if len(pending.lines) > 1:
                    attributes.update(_exception_attributes(pending.lines[1:]))
                attributes["log.file.path"] = self.path
                record = {
                    "timestamp": pending.timestamp,
                    "observed_timestamp": observed,
                    "severity_text": pending.level,
                    "severity_number": number,
                    "body": "\n".join(pending.lines),
                    "attributes": attributes,
                    "instrumentation_scope": {"name": pending.logger},
                    "resource": self.context.resource,
                }
            self.context.metrics.observe_app_record(otel.severity_short_name(number))
        except Exception as exc:  # a fault on this record costs its lines
            self.context.fault("legacy", exc)
            if self.context.emit:
                raw = [pending.header, *pending.lines[1:]]
                records += [
                    unparsed(line, "legacy", self.path, observed, self.context.resource)
                    for line in raw
                ]
            return parsed, rejected + len(pending.lines)
        if record is not None:
            records.append(record)
        return parsed + len(pending.lines), rejected


def _exception_attributes(continuation: list[str]) -> dict[str, str]:
    """exception.* attributes when the continuation lines are a Python or Java trace."""
    if continuation[0].startswith("Traceback (most recent call last)"):
        candidate = continuation[-1]
    elif _JAVA_EXCEPTION.fullmatch(continuation[0]):
        candidate = continuation[0]
    else:
        return {}
    m = _EXCEPTION_LINE.fullmatch(candidate)
    if m is None:
        return {}
    attributes = {"exception.type": m.group("type")}
    if m.group("message"):
        attributes["exception.message"] = m.group("message")
    attributes["exception.stacktrace"] = "\n".join(continuation)
    return attributes


# --- json and regex: records with semantic-convention attributes ----------------------------

_TIME_KEYS = ("timestamp", "time", "@timestamp", "ts")
_LEVEL_KEYS = ("severity_text", "level", "severity", "levelname", "lvl")
_BODY_KEYS = ("body", "message", "msg")


def _observe(metrics: AdapterMetrics, record: Record) -> None:
    """Metrics of a record from a generic format: an HTTP request if it carries a method
    and a status code, otherwise an application log record. The record `fits`: its
    numbers are in range."""
    attributes = record["attributes"]
    method = attributes.get("http.request.method")
    status = attributes.get("http.response.status_code")
    if isinstance(method, str) and isinstance(status, int) and 100 <= status <= 599:
        size = attributes.get("http.response.body.size")
        duration = attributes.get("http.server.request.duration")
        metrics.observe_request(
            method,
            str(status),
            attributes.get("url.path") if isinstance(attributes.get("url.path"), str) else None,
            size if type(size) is int else 0,  # not a bool; `fits` checked the range
            round(duration * 1_000_000) if type(duration) in (int, float) else None,
        )
    else:
        metrics.observe_app_record(otel.severity_short_name(record["severity_number"]))


def _timestamp_value(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:  # a huge integer overflows the float division or conversion
            seconds = value / 1000 if value > 1e11 else value  # epoch milliseconds are common
            return otel.timestamp(float(seconds))
        except OverflowError:
            return None
    if isinstance(value, str):
        epoch = otel.parse_timestamp(value)
        return None if epoch is None else otel.timestamp(epoch)
    return None


def _severity(text: Any, number: Any) -> tuple[str, int]:
    severity_text = str(text) if text is not None else ""
    if isinstance(number, int) and not isinstance(number, bool) and 1 <= number <= 24:
        return severity_text or otel.severity_short_name(number), number
    if not severity_text:
        return "UNSPECIFIED", otel.UNSPECIFIED
    return severity_text, otel.severity_number(severity_text)


def _first(mapping: dict[str, Any], keys: tuple[str, ...]) -> tuple[str | None, Any]:
    for key in keys:
        if key in mapping:
            return key, mapping[key]
    return None, None


class _OneLineDecoder:
    """A format whose every line is one record on its own (json, regex): `_record` parses
    a line, None rejects it (still emitted, flagged unparsed, raw text kept), and so does
    a record whose numbers do not fit (`fits`) or an exception on the way."""

    format: str
    held_lines = 0
    context: Context
    path: str

    def _record(self, line: str, observed: str) -> Record | None:
        raise NotImplementedError

    def feed(self, lines: Sequence[str], observed: str) -> list[Record]:
        records: list[Record] = []
        parsed = rejected = 0
        for line in lines:
            try:
                record = self._record(line, observed)
                if record is not None and fits(record["attributes"]):
                    _observe(self.context.metrics, record)
                    parsed += 1
                    if self.context.emit:
                        records.append(record)
                    continue
            except Exception as exc:  # a fault on this line costs this line
                self.context.fault(self.format, exc)
            rejected += 1
            if self.context.emit:
                records.append(
                    unparsed(line, self.format, self.path, observed, self.context.resource)
                )
        self.context.metrics.count_lines(self.context.input_name, parsed, rejected)
        return records

    def flush(self, observed: str) -> list[Record]:
        return []


class JsonDecoder(_OneLineDecoder):
    """One JSON object per line. `timestamp`/`time`/`@timestamp`/`ts` (RFC 3339 or epoch
    seconds/milliseconds), `severity_text`/`level`/..., `body`/`message`/`msg` become the
    record's fields; an `attributes` object is merged and every other key becomes an
    attribute as is. A line that is not a JSON object, or nests deeper than
    MAX_JSON_DEPTH, is rejected."""

    format = "json"

    def __init__(self, context: Context, path: str) -> None:
        self.context = context
        self.path = path

    def _record(self, line: str, observed: str) -> Record | None:
        try:
            data = json.loads(line)
        except (ValueError, RecursionError):
            return None
        if not isinstance(data, dict):
            return None
        if line.count("{") + line.count("[") > MAX_JSON_DEPTH and _deeper_than(
            data, MAX_JSON_DEPTH
        ):
            return None
        time_key, time_value = _first(data, _TIME_KEYS)
        level_key, level_value = _first(data, _LEVEL_KEYS)
        body_key, body = _first(data, _BODY_KEYS)
        timestamp = _timestamp_value(time_value) if time_key else None
        severity_text, severity_number = _severity(level_value, data.get("severity_number"))
        attributes: dict[str, Any] = {}
        nested = data.get("attributes")
        if isinstance(nested, dict):
            attributes.update(nested)
        used = {
            time_key if timestamp else None,
            level_key,
            body_key,
            "attributes",
            "severity_number",
            "observed_timestamp",
            "resource",
        }
        for key, value in data.items():
            if key not in used:
                attributes[key] = value
        attributes["log.file.path"] = self.path
        record: Record = {}
        if timestamp is not None:
            record["timestamp"] = timestamp
        record["observed_timestamp"] = observed
        record["severity_text"] = severity_text
        record["severity_number"] = severity_number
        record["body"] = body if body_key else line
        record["attributes"] = attributes
        record["resource"] = self.context.resource
        return record


@dataclass(frozen=True)
class RegexFormat:
    """A user's format: a regular expression whose named groups become fields.

    `timestamp`, `severity` and `body` groups fill the record's fields (no `body` group:
    the whole line); every other group is an attribute, `__` in its name standing for a
    dot (`http__response__status_code` -> `http.response.status_code`, which Python group
    names cannot spell). `time_format` is a strptime format for the timestamp group
    (default: ISO 8601; without a zone, UTC)."""

    pattern: re.Pattern[str]
    time_format: str | None = None

    @classmethod
    def compile(cls, pattern: str, time_format: str | None = None) -> RegexFormat:
        compiled = re.compile(pattern)
        if not compiled.groupindex:
            raise ValueError("the regular expression has no named groups")
        return cls(compiled, time_format)


class RegexDecoder(_OneLineDecoder):
    format = "regex"

    def __init__(self, context: Context, path: str, regex: RegexFormat) -> None:
        self.context = context
        self.path = path
        self.regex = regex
        self._names = {
            name: name.replace("__", ".")
            for name in regex.pattern.groupindex
            if name not in ("timestamp", "severity", "body")
        }

    def _timestamp(self, text: str) -> str | None:
        if self.regex.time_format is None:
            return _timestamp_value(text)
        try:
            parsed = datetime.strptime(text, self.regex.time_format)
        except ValueError:
            return None
        if parsed.tzinfo is None:
            epoch = float(otel.utc_epoch(*parsed.timetuple()[:6])) + parsed.microsecond / 1e6
        else:
            try:
                epoch = parsed.timestamp()
            except (OverflowError, ValueError):
                return None
        return otel.timestamp(epoch)

    def _record(self, line: str, observed: str) -> Record | None:
        m = self.regex.pattern.fullmatch(line)
        if m is None:
            return None
        groups = m.groupdict()
        record: Record = {}
        time_text = groups.get("timestamp")
        if time_text is not None:
            timestamp = self._timestamp(time_text)
            if timestamp is None:
                return None  # the user said where the time is: an unreadable one is malformed
            record["timestamp"] = timestamp
        record["observed_timestamp"] = observed
        severity_text, severity_number = _severity(groups.get("severity"), None)
        record["severity_text"] = severity_text
        record["severity_number"] = severity_number
        body = groups.get("body")
        record["body"] = line if body is None else body
        attributes: dict[str, Any] = {}
        for group, name in self._names.items():
            value: Any = groups[group]
            if value is None:
                continue
            # Only ASCII digits make an integer (as in the combined format: int() reads
            # Arabic-Indic digits and fails on a superscript two, which isdigit() accepts).
            if name in _INT_ATTRIBUTES and value.isascii() and value.isdigit():
                if len(value) > MAX_DIGITS:
                    return None  # too large for the model (and for int(), at 4,300 digits)
                value = int(value)
            elif name in _FLOAT_ATTRIBUTES:
                with contextlib.suppress(ValueError):
                    value = float(value)
            attributes[name] = value
        attributes["log.file.path"] = self.path
        record["attributes"] = attributes
        record["resource"] = self.context.resource
        return record


def new_decoder(
    fmt: str,
    context: Context,
    path: str,
    regex: RegexFormat | None = None,
    max_record_bytes: int = 65536,
) -> Decoder:
    if fmt == "combined":
        return CombinedDecoder(context, path)
    if fmt == "legacy":
        return LegacyDecoder(context, path, max_record_bytes)
    if fmt == "json":
        return JsonDecoder(context, path)
    if fmt == "regex":
        if regex is None:
            raise ValueError("the regex format needs ADAPTER_REGEX")
        return RegexDecoder(context, path, regex)
    raise ValueError(f"unknown format {fmt!r}")


def observed_now() -> str:
    return otel.format_timestamp(time.time())
