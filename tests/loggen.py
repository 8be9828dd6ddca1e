"""Synthetic legacy logs whose metrics are known in advance, and a hostile battery.

The tests and the benchmark generate a log with these functions and compare what the
adapter (or mtail) reports with the `Expected` tallies computed here from the same
random choices, independently of the adapter's code. `hostile_lines` is what an app (or
whoever writes its logs) can put in each format to break a decoder, with the outcome the
adapter promises for each line.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field

from patterns.adapter.log_adapter.metrics import DURATION_BOUNDS_US

# (method, its `method` label): a method outside HTTP's registered set is "_OTHER".
METHODS = (
    ("GET", "GET"), ("GET", "GET"), ("GET", "GET"), ("GET", "GET"),
    ("POST", "POST"), ("PUT", "PUT"), ("DELETE", "DELETE"), ("HEAD", "HEAD"),
    ("PURGE", "_OTHER"),
)
# (request target, its `path` label): query dropped, numeric segments folded.
TARGETS = (
    ("/", "/"),
    ("/orders", "/orders"),
    ("/orders/17", "/orders/:id"),
    ("/orders/4242?expand=1", "/orders/:id"),
    ("/checkout", "/checkout"),
    ("/static/app.js", "/static/app.js"),
    ("/healthz", "/healthz"),  # always 200: a path whose error rate is 0
)
STATUSES = ("200", "200", "200", "201", "304", "404", "500", "503")
# Share of requests logged with "-" as the request line: a client that connected and sent
# nothing (Apache logs 408). They count as method "_OTHER", path "_other".
NO_REQUEST_SHARE = 0.01
AGENTS = ("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0", "curl/8.5.0")
LEVELS = ("DEBUG", "INFO", "INFO", "INFO", "WARNING", "ERROR")
# What a malformed line looks like in the wild: truncated writes, another format, noise.
MALFORMED = (
    "",
    "garbage that is not an access log line",
    '10.0.0.1 - - [25/Nov/2026:12:00:00 +0000] "GET / HTTP/1.1" 2OO 12',
    "10.0.0.1 - - [25/Nov/2026:12:00:00 +0000] truncated",
)


@dataclass
class Expected:
    lines: int = 0
    parsed: int = 0
    rejected: int = 0
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    # (path label, status class such as "5xx") -> requests
    by_path: Counter[tuple[str, str]] = field(default_factory=Counter)
    response_bytes: Counter[tuple[str, str]] = field(default_factory=Counter)
    # Non-cumulative counts per duration bucket (last slot +Inf), and their sum in us.
    duration_buckets: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BOUNDS_US) + 1))
    duration_sum_us: int = 0
    app_records: Counter[str] = field(default_factory=Counter)


def combined_lines(
    count: int, seed: int = 1, malformed_every: int = 0
) -> tuple[list[str], Expected]:
    """`count` lines; every `malformed_every`-th one (if > 0) is malformed."""
    rng = random.Random(seed)
    expected = Expected()
    lines = []
    for i in range(count):
        expected.lines += 1
        if malformed_every and i % malformed_every == malformed_every - 1:
            lines.append(MALFORMED[i % len(MALFORMED)])
            expected.rejected += 1
            continue
        method, method_label = rng.choice(METHODS)
        target, path = rng.choice(TARGETS)
        status = "200" if path == "/healthz" else rng.choice(STATUSES)
        size = rng.randrange(0, 20_000)
        request = f"{method} {target} HTTP/1.1"
        if rng.random() < NO_REQUEST_SHARE:
            request, method_label, path, status, size = "-", "_OTHER", "_other", "408", 0
        # Microseconds, mean 40 ms, at least 1: mtail (3.0.0~rc50) counts a 0 observation
        # in _count but in no bucket, and the benchmark compares bucket by bucket.
        duration = 1 + int(rng.expovariate(1 / 40_000))
        second = i // 500
        clock = f"{10 + second // 3600 % 10:02d}:{second // 60 % 60:02d}:{second % 60:02d}"
        lines.append(
            f"10.1.{i % 250}.{i % 199} - - [25/Nov/2026:{clock} +0000] "
            f'"{request}" {status} {size} "-" "{rng.choice(AGENTS)}" {duration}'
        )
        expected.parsed += 1
        expected.requests[(method_label, status)] += 1
        expected.response_bytes[(method_label, status)] += size
        expected.by_path[(path, status[0] + "xx")] += 1
        expected.duration_buckets[bisect_left(DURATION_BOUNDS_US, duration)] += 1
        expected.duration_sum_us += duration
    return lines, expected


_SHORT = {"DEBUG": "DEBUG", "INFO": "INFO", "WARNING": "WARN", "ERROR": "ERROR"}


def legacy_lines(records: int, seed: int = 1) -> tuple[list[str], Expected]:
    """`records` application-log records; every ERROR carries a 4-line traceback, and one
    orphan continuation line opens the file (rejected: it has no record to join)."""
    rng = random.Random(seed)
    expected = Expected()
    lines = ["    at orphan.continuation(Unknown Source)"]
    expected.lines = expected.rejected = 1
    for i in range(records):
        level = rng.choice(LEVELS)
        second = i // 20
        lines.append(
            f"2026-11-25 12:{second // 60 % 60:02d}:{second % 60:02d},{i % 1000:03d} {level} "
            f"[worker-{i % 4}] shop.orders - event {i}"
        )
        record_lines = 1
        if level == "ERROR":
            lines += [
                "Traceback (most recent call last):",
                '  File "shop.py", line 10, in pay',
                "    charge()",
                f"ValueError: declined {i}",
            ]
            record_lines += 4
        expected.lines += record_lines
        expected.parsed += record_lines
        expected.app_records[_SHORT[level]] += 1
    return lines, expected


# --- the hostile battery ------------------------------------------------------------------


@dataclass(frozen=True)
class Hostile:
    line: str
    result: str  # "parsed" or "rejected": how adapter_lines_total counts it
    why: str


# The regex format's expression for the battery: every field the adapter reads as a number,
# taken from the line as text, and an ISO 8601 timestamp.
HOSTILE_REGEX = (
    r"(?P<timestamp>\S+) (?P<http__request__method>\S+) (?P<url__path>\S+) "
    r"(?P<http__response__status_code>\S+) (?P<http__response__body__size>\S+) "
    r"(?P<http__server__request__duration>\S+)"
)

# Control characters a logged path can carry raw; none may reach /metrics as they are.
CONTROLS = "\x1b[31m\x07\x00\x7f\x85"


def _access(
    path: str = "/h",
    size: str = "1",
    duration: str = "5",
    when: str = "25/Nov/2026:12:00:00 +0000",
    status: str = "200",
) -> str:
    return f'10.0.0.1 - - [{when}] "GET {path} HTTP/1.1" {status} {size} "-" "-" {duration}'


def _json_request(extra: str) -> str:
    return '{"http.request.method": "GET", "http.response.status_code": 200, ' + extra + "}"


def _nested(depth: int) -> str:
    return '{"a": ' * (depth - 1) + "{}" + "}" * (depth - 1)


def _regex(
    size: str = "1",
    duration: str = "0.005",
    status: str = "200",
    path: str = "/r",
    when: str = "2026-11-25T12:00:00Z",
) -> str:
    return f"{when} GET {path} {status} {size} {duration}"


def hostile_lines() -> dict[str, list[Hostile]]:
    """Per format, lines whose values do not fit the model (too large, non-finite,
    negative, out of range, control characters, lone surrogates) next to the boundary
    values that still fit."""
    big = "9" * 5000  # beyond Python's int-str conversion limit (4,300 digits)
    wide = "9" * 400  # an int no float holds
    return {
        "combined": [
            Hostile(_access(size=big), "rejected", "a 5,000-digit size"),
            Hostile(_access(size=wide), "rejected", "a 400-digit size"),
            Hostile(_access(size="9" * 19), "rejected", "a size of 19 digits"),
            Hostile(_access(size="9" * 18), "parsed", "the largest size: 18 digits"),
            Hostile(_access(duration=wide), "rejected", "a 400-digit %D"),
            Hostile(_access(duration=big), "rejected", "a 5,000-digit %D"),
            Hostile(_access(path="/c" + CONTROLS), "parsed", "control characters in the path"),
            Hostile(_access(path="/" + "x" * 300), "parsed", "a path too long for a label"),
            Hostile(_access(path="/" + "y" * 3000 + "?q=1"), "parsed", "a 3,000-byte target"),
            Hostile(_access(when="31/Dec/1969:23:59:59 +0000"), "rejected", "before 1970"),
            Hostile(_access(when="01/Jan/1970:00:30:00 +0100"), "rejected", "1969 in UTC"),
            Hostile(_access(when="07/Feb/2106:06:28:16 +0000"), "rejected", "2**32 seconds"),
            Hostile(_access(when="07/Feb/2106:06:28:15 +0000"), "parsed", "the last second"),
            Hostile(_access(when="01/Jan/0000:00:00:00 +0000"), "rejected", "year 0"),
            Hostile(_access(when="31/Dec/9999:23:59:59 -2359"), "rejected", "year 10000 in UTC"),
        ],
        "json": [
            *(
                Hostile(
                    _json_request(f'"http.server.request.duration": {value}'),
                    "rejected",
                    f"a duration of {value}",
                )
                for value in ("1e999", "-1e999", "NaN", "Infinity", "-Infinity", "-0.5", "1e300")
            ),
            Hostile(_json_request('"http.server.request.duration": 0'), "parsed", "0 s"),
            Hostile(
                _json_request('"http.response.body.size": 1' + "0" * 400),
                "rejected",
                "a 401-digit size",
            ),
            Hostile(
                _json_request('"http.response.body.size": ' + big), "rejected", "a 5,000-digit size"
            ),
            Hostile(_json_request('"http.response.body.size": -1'), "rejected", "size -1"),
            Hostile(_json_request('"http.response.body.size": 1e999'), "rejected", "size inf"),
            Hostile(_json_request('"client.port": 65536'), "rejected", "port 65536"),
            *(
                Hostile(
                    f'{{"http.request.method": "GET", "http.response.status_code": {status}}}',
                    "rejected",
                    f"status {status}",
                )
                for status in ("99", "600", "-200", "1" + "0" * 30, "NaN")
            ),
            Hostile(_json_request('"url.path": "/\\ud800"'), "parsed", "a lone surrogate"),
            Hostile(
                _json_request('"url.path": "/j\\u001b[31m\\u0007\\u0000\\u007f"'),
                "parsed",
                "control characters in url.path",
            ),
            Hostile(_json_request('"url.path": 12'), "parsed", "a path that is no string"),
            Hostile('{"time": 1' + "0" * 400 + "}", "parsed", "a 401-digit time: no timestamp"),
            Hostile('{"time": "1969-12-31T23:59:59Z"}', "parsed", "a time before 1970"),
            Hostile('{"time": 4294967296}', "parsed", "2**32 seconds"),
            Hostile('{"time": 1e999, "ts": NaN}', "parsed", "non-finite times"),
            Hostile('{"time": -1}', "parsed", "a negative time"),
            Hostile('{"severity_number": 1' + "0" * 400 + "}", "parsed", "a huge severity"),
            Hostile(
                '{"body": "\\ud800", "\\udfff": "\\udc80"}',
                "parsed",
                "lone surrogates in the body and a key",
            ),
            Hostile(
                '{"big": 1' + "0" * 30 + ', "nan": NaN, "inf": -Infinity}',
                "parsed",
                "numbers JSON output and msgpack cannot carry as they are",
            ),
            Hostile(_nested(64), "parsed", "nested 64 deep"),
            Hostile(_nested(65), "rejected", "nested 65 deep"),
            Hostile(_nested(900), "rejected", "nested 900 deep"),
            Hostile(_nested(5000), "rejected", "nested deeper than Python recurses"),
        ],
        "regex": [
            *(
                Hostile(_regex(duration=value), "rejected", f"a duration of {value}")
                for value in ("inf", "nan", "-1", "1e999", "-inf", "1e300")
            ),
            Hostile(_regex(size=big), "rejected", "a 5,000-digit size"),
            Hostile(_regex(size=wide), "rejected", "a 400-digit size"),
            Hostile(_regex(size="9" * 19), "rejected", "a 19-digit size"),
            Hostile(_regex(size="\u00b2"), "parsed", "a superscript two: no number, a string"),
            Hostile(_regex(size="\u0661"), "parsed", "an Arabic-Indic one: a string"),
            Hostile(_regex(status="999"), "rejected", "status 999"),
            Hostile(_regex(status="099"), "rejected", "status 99"),
            Hostile(
                _regex(path="/r" + CONTROLS.replace("\x85", "")),
                "parsed",
                "control characters in the path",
            ),
            Hostile(_regex(when="1969-12-31T23:59:59Z"), "rejected", "before 1970"),
            Hostile(_regex(when="2200-01-01T00:00:00Z"), "rejected", "after 2106"),
            Hostile(_regex(when="9999-12-31T23:59:59-23:59"), "rejected", "year 10000 in UTC"),
        ],
        "legacy": [
            Hostile("2026-11-25 12:00:00,000 INFO [main] shop - start", "parsed", "a header"),
            Hostile(
                "1969-12-31 23:59:59,999 INFO [main] shop - before 1970", "rejected", "before 1970"
            ),
            Hostile(
                "2026-11-25 1\u0663:00:00,000 INFO [main] shop - Arabic-Indic",
                "rejected",
                "not a header (ASCII digits only), and no record to continue",
            ),
            Hostile(
                "2106-02-07 06:28:16,000 INFO [main] shop - 2**32", "rejected", "2**32 seconds"
            ),
            Hostile(
                "2106-02-07 06:28:15,000 INFO [m\x1b\x07] shop - the last second" + CONTROLS,
                "parsed",
                "the last second, controls in the thread",
            ),
            Hostile("0000-01-01 00:00:00,000 INFO [main] shop - year 0", "rejected", "year 0"),
        ],
    }


def good_after(fmt: str, n: int) -> str:
    """The n-th good line written after the battery: a request (an app record for legacy)
    that the adapter parses, carrying `n` (in url.query, or the body)."""
    if fmt == "combined":
        return _access(path=f"/after?n={n}")
    if fmt == "json":
        return _json_request(f'"url.path": "/after", "url.query": "n={n}"')
    if fmt == "regex":
        return _regex(path=f"/after?n={n}")
    return f"2026-11-25 12:00:01,000 INFO [main] shop - n={n}"
