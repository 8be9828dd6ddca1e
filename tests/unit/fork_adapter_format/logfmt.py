"""`logfmt`: one record per line of key=value pairs, as Heroku, Go's logfmt and Grafana
write them:

    time=2026-11-25T12:00:00Z level=info msg="order placed" method=POST path=/orders status=201

`time`, `level` and `msg` fill the record's fields; `method`, `path`, `status`, `bytes`
and `duration` (seconds) become HTTP attributes, so such a line counts as a request in
the metrics; any other key is an attribute as it is. A line that is not all pairs, or
whose time cannot be read, is rejected.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from patterns.adapter.log_adapter.formats.base import MAX_DIGITS
from patterns.adapter.log_adapter.formats.oneline import (
    OneLineDecoder,
    severity,
    timestamp_value,
)
from patterns.adapter.log_adapter.otel import Record

PAIR = re.compile(r'\s*([^\s="]+)=("(?:[^"\\]|\\.)*"|[^\s"]*)')
# logfmt's usual keys -> the semantic-convention attributes the metrics read.
ATTRIBUTES = {
    "method": "http.request.method",
    "path": "url.path",
    "status": "http.response.status_code",
    "bytes": "http.response.body.size",
    "duration": "http.server.request.duration",
}
INTEGERS = ("http.response.status_code", "http.response.body.size")


class LogfmtDecoder(OneLineDecoder):
    format = "logfmt"

    def record(self, line: str, observed: str) -> Record | None:
        pairs: dict[str, str] = {}
        position, end = 0, len(line.rstrip())
        while position < end:
            m = PAIR.match(line, position)
            if m is None:
                return None  # not key=value: malformed
            key, text = m.groups()
            if text.startswith('"'):
                text = re.sub(r"\\(.)", r"\1", text[1:-1])
            pairs[key] = text
            position = m.end()
        if not pairs:
            return None
        record: Record = {}
        if "time" in pairs:
            timestamp = timestamp_value(pairs.pop("time"))
            if timestamp is None:
                return None
            record["timestamp"] = timestamp
        record["observed_timestamp"] = observed
        record["severity_text"], record["severity_number"] = severity(pairs.pop("level", None))
        record["body"] = pairs.pop("msg", line)
        attributes: dict[str, Any] = {}
        for key, text in pairs.items():
            name = ATTRIBUTES.get(key, key)
            value: Any = text
            if name == "http.server.request.duration":
                with contextlib.suppress(ValueError):
                    value = float(text)  # out of range (NaN, inf, negative): `fits` rejects
            elif name in INTEGERS and text.isascii() and text.isdigit():
                if len(text) > MAX_DIGITS:
                    return None  # too large for the model
                value = int(text)
            attributes[name] = value
        attributes["log.file.path"] = self.path
        record["attributes"] = attributes
        record["resource"] = self.context.resource
        return record
