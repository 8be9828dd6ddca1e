"""The OpenTelemetry log data model as this adapter writes it.

A record is a plain dict, serialised as one JSON object per line:

    {"timestamp": "2026-11-25T12:00:00.123Z",      # when the event happened (RFC 3339, UTC)
     "observed_timestamp": "...",                  # when the adapter read it
     "severity_text": "ERROR", "severity_number": 17,
     "body": "...",
     "attributes": {"http.request.method": "GET", ...},   # semantic-convention names
     "resource": {"service.name": "legacy-app"}}

Severity numbers follow the data model's ranges (TRACE 1-4, DEBUG 5-8, INFO 9-12,
WARN 13-16, ERROR 17-20, FATAL 21-24; 0 is unspecified).
"""

from __future__ import annotations

import calendar
import time
from datetime import UTC, datetime
from typing import Any

Record = dict[str, Any]

# HTTP methods the semantic conventions name; any other is `_OTHER` (with the method as
# written in http.request.method_original): clients choose methods, so taking them as they
# come would let any client grow a label's values.
KNOWN_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
)
OTHER_METHOD = "_OTHER"

UNSPECIFIED = 0

# Level words seen in the wild (log4j, logback, Python logging, syslog) -> severity number.
_SEVERITY_BY_WORD: dict[str, int] = {
    "TRACE": 1,
    "FINEST": 1,
    "FINER": 2,
    "DEBUG": 5,
    "FINE": 5,
    "CONFIG": 6,
    "INFO": 9,
    "INFORMATION": 9,
    "NOTICE": 10,
    "WARN": 13,
    "WARNING": 13,
    "ERROR": 17,
    "ERR": 17,
    "SEVERE": 17,
    "CRITICAL": 21,
    "CRIT": 21,
    "FATAL": 21,
    "ALERT": 22,
    "EMERG": 23,
    "EMERGENCY": 23,
    "PANIC": 23,
}

# The data model's short names, one per range of four: these are the only values the
# `severity` metric label takes, so its cardinality is bounded whatever the input says.
_SHORT_NAMES = ("UNSPECIFIED", "TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")


def severity_number(text: str) -> int:
    return _SEVERITY_BY_WORD.get(text.upper(), UNSPECIFIED)


def severity_short_name(number: int) -> str:
    if not 1 <= number <= 24:
        return "UNSPECIFIED"
    return _SHORT_NAMES[(number - 1) // 4 + 1]


def http_status_severity(status: int) -> tuple[str, int]:
    """An access-log line has no level; derive one from the status code, as the HTTP
    semantic conventions suggest for server spans (5xx is an error, 4xx a client problem)."""
    if status >= 500:
        return "ERROR", 17
    if status >= 400:
        return "WARN", 13
    return "INFO", 9


# Event times the model carries: OpenTelemetry's time_unix_nano is unsigned (nothing before
# 1970) and the Forward protocol's EventTime holds its seconds in 32 unsigned bits (nothing
# after 2106-02-07T06:28:15Z). A time outside is not an event time: every format treats it
# as an unreadable one.
MAX_EPOCH = 2**32 - 1


def timestamp(epoch: float) -> str | None:
    """RFC 3339 of an event time; None if the model cannot carry it (NaN, infinite, before
    1970 or after MAX_EPOCH)."""
    if not 0 <= epoch <= MAX_EPOCH:  # False for NaN too
        return None
    return format_timestamp(epoch)


def format_timestamp(epoch: float) -> str:
    """RFC 3339 UTC with milliseconds, e.g. 2026-11-25T12:00:00.123Z."""
    whole = int(epoch)
    millis = round((epoch - whole) * 1000)
    if millis == 1000:
        whole, millis = whole + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


def parse_timestamp(text: str) -> float | None:
    """Epoch seconds of an RFC 3339 / ISO 8601 timestamp; naive times are UTC."""
    try:
        parsed = datetime.fromisoformat(text.strip())
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    except (ValueError, OverflowError):
        return None


def record_epoch(record: Record) -> float:
    """The event time of a record as epoch seconds (the Forward protocol's EventTime);
    now, if the record has none the protocol can carry."""
    text = record.get("timestamp") or record.get("observed_timestamp")
    value = parse_timestamp(text) if isinstance(text, str) else None
    return value if value is not None and 0 <= value <= MAX_EPOCH else time.time()


def utc_epoch(year: int, month: int, day: int, hour: int, minute: int, second: int) -> int:
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
