"""`combined`: the NCSA combined (or common) access log, optionally followed by Apache's
%D (microseconds). Severity from the status (5xx ERROR, 4xx WARN, else INFO); the body
is the raw line; each line is one HTTP request for the metrics."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from patterns.adapter.log_adapter import otel
from patterns.adapter.log_adapter.formats.base import (
    CACHE_LIMIT,
    MAX_DIGITS,
    Context,
    unparsed,
)
from patterns.adapter.log_adapter.otel import KNOWN_METHODS, OTHER_METHOD, Record

_QUOTED = r'[^"\\]*+(?:\\.[^"\\]*+)*+'  # Apache escapes " and \ inside quoted fields
# ASCII: Apache writes ASCII digits and spaces; a Unicode \d would take Arabic-Indic digits
# ("5\u0660\u0660") for a status label. RE2 (mtail, as in benchmarks/) reads \d, \S so too.
# Possessive (*+, ++): each run stops at a character it cannot hold (a space, a quote, a
# backslash) and the next token needs exactly that character, so giving a character back
# can never lead to a match. Not saving those positions makes a line about 9% cheaper to
# match; the matches are the same.
COMBINED = re.compile(
    r"(?P<client>\S++) \S++ (?P<user>\S++) "
    r"\[(?P<time>\d\d/[A-Z][a-z][a-z]/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] "
    rf'"(?:(?P<method>[A-Za-z]++) (?P<target>[^ "]++)(?: (?P<proto>[^ "]++))?'
    rf'|(?P<request>{_QUOTED}))" '
    r"(?P<status>[1-5]\d\d) (?P<size>\d+|-)"
    rf'(?: "(?P<referer>{_QUOTED})" "(?P<agent>{_QUOTED})")?'
    r"(?: (?P<duration>\d+))?",
    re.ASCII,
)


_MONTHS = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}


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
            if len(self.cache) >= CACHE_LIMIT:
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
        # One regex match per line and a few dict lookups after it: this loop is the
        # adapter's throughput (see benchmarks/adapter_vs_mtail.py), so it keeps its
        # lookups in locals. Every value is checked and the record built before the
        # request is reported, and the record is kept only once it is: a line that fails
        # on the way (a value that does not fit, or an exception) leaves no trace but its
        # rejection.
        ctx = self.context
        emit = ctx.emit
        observe = ctx.events.observe_request
        match = COMBINED.fullmatch
        time_get = self.access_time.cache.get
        access_time = self.access_time
        known = KNOWN_METHODS
        max_digits = MAX_DIGITS
        records: list[Record] = []
        rejected = 0
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
                        if emit:
                            record = self._record(
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
                            observe(label_method, status, target, nbytes, micros)
                            records.append(record)
                        else:
                            observe(label_method, status, target, nbytes, micros)
                        continue
            except Exception as exc:  # a fault on this line costs this line
                ctx.fault("combined", exc)
            rejected += 1
            if emit:
                records.append(unparsed(line, "combined", self.path, observed, ctx.resource))
        ctx.events.count_lines(ctx.input_name, len(lines) - rejected, rejected)
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
