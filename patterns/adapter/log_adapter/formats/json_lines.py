"""`json`: one JSON object per line (JSON Lines), as structured loggers write them."""

from __future__ import annotations

import json
from typing import Any

from patterns.adapter.log_adapter.formats.oneline import (
    OneLineDecoder,
    severity,
    timestamp_value,
)
from patterns.adapter.log_adapter.otel import Record

# A JSON line nested deeper than this is rejected: the outputs' encoders (orjson, msgpack)
# and the recursion limit have their own limits, and no log record needs more.
MAX_JSON_DEPTH = 64
_TIME_KEYS = ("timestamp", "time", "@timestamp", "ts")
_LEVEL_KEYS = ("severity_text", "level", "severity", "levelname", "lvl")
_BODY_KEYS = ("body", "message", "msg")


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


def _first(mapping: dict[str, Any], keys: tuple[str, ...]) -> tuple[str | None, Any]:
    for key in keys:
        if key in mapping:
            return key, mapping[key]
    return None, None


class JsonDecoder(OneLineDecoder):
    """One JSON object per line. `timestamp`/`time`/`@timestamp`/`ts` (RFC 3339 or epoch
    seconds/milliseconds), `severity_text`/`level`/..., `body`/`message`/`msg` become the
    record's fields; an `attributes` object is merged and every other key becomes an
    attribute as is. A line that is not a JSON object, or nests deeper than
    MAX_JSON_DEPTH, is rejected."""

    format = "json"

    def record(self, line: str, observed: str) -> Record | None:
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
        timestamp = timestamp_value(time_value) if time_key else None
        severity_text, severity_number = severity(level_value, data.get("severity_number"))
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
