"""What the one-line formats share (json, regex, and most you would add): every line is
one record on its own, made by a subclass's `record(line, observed)`; None rejects the
line. What a record reports is read from its semantic-convention attributes: an HTTP
request if it carries `http.request.method` and `http.response.status_code` (with
`url.path`, `http.response.body.size`, `http.server.request.duration` in seconds), any
other record an application log record by its severity."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from patterns.adapter.log_adapter import otel
from patterns.adapter.log_adapter.formats.base import Context, DecoderEvents, fits, unparsed
from patterns.adapter.log_adapter.otel import Record


class OneLineDecoder:
    """A format whose every line is one record: `record` parses a line, None rejects it
    (still emitted, flagged unparsed, raw text kept), and so does a record whose numbers
    do not fit (`fits`) or an exception on the way."""

    format: str  # the name it is registered under (formats/__init__.py)
    held_lines = 0

    def __init__(self, context: Context, path: str) -> None:
        self.context = context
        self.path = path

    def record(self, line: str, observed: str) -> Record | None:
        raise NotImplementedError

    def feed(self, lines: Sequence[str], observed: str) -> list[Record]:
        context = self.context
        records: list[Record] = []
        parsed = rejected = 0
        for line in lines:
            try:
                record = self.record(line, observed)
                if record is not None and fits(record["attributes"]):
                    report(context.events, record)
                    parsed += 1
                    if context.emit:
                        records.append(record)
                    continue
            except Exception as exc:  # a fault on this line costs this line
                context.fault(self.format, exc)
            rejected += 1
            if context.emit:
                records.append(unparsed(line, self.format, self.path, observed, context.resource))
        context.events.count_lines(context.input_name, parsed, rejected)
        return records

    def flush(self, observed: str) -> list[Record]:
        return []


def report(events: DecoderEvents, record: Record) -> None:
    """What a record says to the metrics: an HTTP request if it carries a method and a
    status code, otherwise an application log record. The record `fits`: its numbers are
    in range."""
    attributes = record["attributes"]
    method = attributes.get("http.request.method")
    status = attributes.get("http.response.status_code")
    if isinstance(method, str) and isinstance(status, int) and 100 <= status <= 599:
        size = attributes.get("http.response.body.size")
        duration = attributes.get("http.server.request.duration")
        events.observe_request(
            method,
            str(status),
            attributes.get("url.path") if isinstance(attributes.get("url.path"), str) else None,
            size if type(size) is int else 0,  # not a bool; `fits` checked the range
            round(duration * 1_000_000) if type(duration) in (int, float) else None,
        )
    else:
        events.observe_app_record(otel.severity_short_name(record["severity_number"]))


def timestamp_value(value: Any) -> str | None:
    """A time as a line may give it (RFC 3339 text, epoch seconds or milliseconds) ->
    RFC 3339 UTC, or None if it is none or outside what the model carries."""
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


def severity(text: Any, number: Any = None) -> tuple[str, int]:
    """(severity_text, severity_number) from a level word and/or a 1..24 number."""
    severity_text = str(text) if text is not None else ""
    if isinstance(number, int) and not isinstance(number, bool) and 1 <= number <= 24:
        return severity_text or otel.severity_short_name(number), number
    if not severity_text:
        return "UNSPECIFIED", otel.UNSPECIFIED
    return severity_text, otel.severity_number(severity_text)
