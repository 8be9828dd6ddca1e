"""`regex`: a user's format (ADAPTER_REGEX, a `RegexFormat`): a regular expression whose
named groups become fields.

`timestamp`, `severity` and `body` groups fill the record's fields (no `body` group:
the whole line); every other group is an attribute, `__` in its name standing for a
dot (`http__response__status_code` -> `http.response.status_code`, which Python group
names cannot spell). ADAPTER_REGEX_TIME_FORMAT is a strptime format for the timestamp
group (default: ISO 8601; without a zone, UTC)."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

from patterns.adapter.log_adapter import otel
from patterns.adapter.log_adapter.formats.base import (
    FLOAT_ATTRIBUTES,
    INT_ATTRIBUTES,
    MAX_DIGITS,
    Context,
)
from patterns.adapter.log_adapter.formats.oneline import (
    OneLineDecoder,
    severity,
    timestamp_value,
)
from patterns.adapter.log_adapter.otel import Record


class RegexDecoder(OneLineDecoder):
    format = "regex"

    def __init__(self, context: Context, path: str) -> None:
        super().__init__(context, path)
        if context.regex is None:
            raise ValueError("the regex format needs ADAPTER_REGEX")
        self.regex = regex = context.regex
        self._names = {
            name: name.replace("__", ".")
            for name in regex.pattern.groupindex
            if name not in ("timestamp", "severity", "body")
        }

    def _timestamp(self, text: str) -> str | None:
        if self.regex.time_format is None:
            return timestamp_value(text)
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

    def record(self, line: str, observed: str) -> Record | None:
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
        severity_text, severity_number = severity(groups.get("severity"), None)
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
            if name in INT_ATTRIBUTES and value.isascii() and value.isdigit():
                if len(value) > MAX_DIGITS:
                    return None  # too large for the model (and for int(), at 4,300 digits)
                value = int(value)
            elif name in FLOAT_ATTRIBUTES:
                with contextlib.suppress(ValueError):
                    value = float(value)
            attributes[name] = value
        attributes["log.file.path"] = self.path
        record["attributes"] = attributes
        record["resource"] = self.context.resource
        return record
