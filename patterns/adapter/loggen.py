"""Synthetic legacy logs whose metrics are known in advance.

The tests and the benchmark generate a log with these functions and compare what the
adapter (or mtail) reports with the `Expected` tallies computed here from the same
random choices, independently of the adapter's code.
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
