"""JSON logs on stdout, one object per line: what cluster logging agents collect.

Fields: time (RFC 3339 UTC), level, service, logger, message, plus any `extra={...}` the
caller passes, so events can be filtered by field rather than by grepping prose.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        text = json.dumps(entry, default=str, ensure_ascii=False)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # A value decoded with surrogateescape (a file name that is not UTF-8) holds
            # lone surrogates: written as they are, the line is invalid UTF-8 or lost to
            # "--- Logging error ---". Each becomes U+FFFD; the rest of the line stays.
            text = _LONE_SURROGATE.sub("\ufffd", text)
        return text


# What LOG_LEVEL expects, for error messages. Any name Python's logging knows is accepted,
# in any case (also "warn", "fatal", "notset"), as it always was.
LEVEL_NAMES = "debug, info, warning, error or critical"


def parse_level(text: str | None) -> int | None:
    """A LOG_LEVEL value -> a logging level; unset or blank is info, unknown is None."""
    if text is None or not text.strip():
        return logging.INFO
    return logging.getLevelNamesMapping().get(text.strip().upper())


def setup_logging(service: str, level: str | None = "info") -> None:
    """Log JSON to stdout at `level` (LOG_LEVEL's value). An unknown level logs at info
    instead of raising: logging starts before the configuration is loaded, and the
    configuration (`Env`) reports a bad LOG_LEVEL like any other bad variable (exit 2)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    parsed = parse_level(level)
    root.setLevel(logging.INFO if parsed is None else parsed)
