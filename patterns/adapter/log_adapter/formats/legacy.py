"""`legacy`: `YYYY-MM-DD HH:MM:SS,mmm LEVEL [thread] logger - message` headers, each
followed by the continuation lines of its record (a Python or Java trace gives
exception.* attributes). Times are read as UTC."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from patterns.adapter.log_adapter import otel
from patterns.adapter.log_adapter.formats.base import CACHE_LIMIT, Context, unparsed
from patterns.adapter.log_adapter.otel import Record

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
_EPOCH_DAY = date(1970, 1, 1).toordinal()


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

    def __init__(self, context: Context, path: str) -> None:
        self.context = context
        self.path = path
        self.max_record_bytes = context.max_record_bytes
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
        self.context.events.count_lines(self.context.input_name, parsed, rejected)
        return records

    def flush(self, observed: str) -> list[Record]:
        records: list[Record] = []
        if self._pending is not None:
            parsed, rejected = self._finish(records, observed, 0, 0)
            self.context.events.count_lines(self.context.input_name, parsed, rejected)
        return records

    def _in_range(self, date_text: str, time_text: str) -> bool:
        """Whether the header's date exists and its time is one the model carries."""
        day = self._days.get(date_text, -1)
        if day == -1:
            try:
                day = (date.fromisoformat(date_text).toordinal() - _EPOCH_DAY) * 86400
            except ValueError:
                day = None
            if len(self._days) >= CACHE_LIMIT:
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
            self.context.events.observe_app_record(otel.severity_short_name(number))
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
