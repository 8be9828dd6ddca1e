"""Hostile input to every decoder and output: a value that does not fit the model costs its
line (counted as rejected, emitted flagged) or takes the place the model documents for it
(no event time, the `_other` path, a string); it never raises out of the loop, never
reaches a metric, and the exposition and the outputs stay valid.

The battery (`tests.loggen.hostile_lines`) says what each line must become.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import threading
from pathlib import Path

import msgpack
import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from patterns.adapter.log_adapter import formats, otel
from patterns.adapter.log_adapter.adapter import Adapter, FollowerCollector
from patterns.adapter.log_adapter.config import load_config
from patterns.adapter.log_adapter.formats import Context, RegexFormat, new_decoder
from patterns.adapter.log_adapter.metrics import OTHER_PATH, AdapterMetrics, PathLabels
from patterns.adapter.log_adapter.output import (
    ForwardOutput,
    NullOutput,
    StdoutOutput,
    encode_entry,
)
from tests import loggen
from tests.conftest import wait_until

OBSERVED = "2026-11-25T12:30:00.000Z"
FORMATS = ("combined", "json", "regex", "legacy")
GOOD = 5
# C0 and C1 controls and DEL: what a label value must never carry raw (the exposition's
# own line breaks aside).
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def decoder(fmt: str, metrics: AdapterMetrics, emit: bool = True) -> formats.Decoder:
    regex = RegexFormat.compile(loggen.HOSTILE_REGEX) if fmt == "regex" else None
    context = Context("in", metrics, emit, {"service.name": "s"}, regex=regex)
    return new_decoder(fmt, context, "/x.log")


def battery(fmt: str) -> tuple[list[str], list[loggen.Hostile]]:
    hostile = loggen.hostile_lines()[fmt]
    return [h.line for h in hostile] + [loggen.good_after(fmt, n) for n in range(GOOD)], hostile


def exposition(metrics: AdapterMetrics) -> str:
    registry = CollectorRegistry()
    registry.register(metrics)
    return generate_latest(registry).decode("utf-8")  # strict: no lone surrogate got in


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def assert_writable(record: dict) -> None:
    """Both outputs write the record: valid JSON on stdout (no NaN, no Infinity), and a
    Forward entry with an EventTime the protocol can hold and valid UTF-8 strings."""
    stream = io.BytesIO()
    StdoutOutput(stream).write([record])

    def no_constant(name: str) -> None:
        raise AssertionError(f"{name} is not JSON")

    json.loads(stream.getvalue(), parse_constant=no_constant)
    seconds, decoded = _entry(record)
    assert 0 <= seconds < 2**32
    assert decoded["observed_timestamp"] == record["observed_timestamp"]


def _entry(record: dict) -> tuple[int, dict]:
    time, decoded = msgpack.unpackb(
        encode_entry(record), raw=False, ext_hook=lambda code, data: msgpack.ExtType(code, data)
    )
    assert time.code == 0  # EventTime: seconds and nanoseconds as unsigned 32-bit integers
    return int.from_bytes(time.data[:4], "big"), decoded


@pytest.mark.parametrize("chunk", [1, 1000])
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_decoder_costs_a_hostile_line_at_most_that_line(fmt: str, chunk: int) -> None:
    lines, hostile = battery(fmt)
    metrics = AdapterMetrics(["in"])
    decode = decoder(fmt, metrics)
    records: list[dict] = []
    for start in range(0, len(lines), chunk):
        records += decode.feed(lines[start : start + chunk], OBSERVED)
    records += decode.flush(OBSERVED)

    parsed, rejected = metrics.lines["in"]
    assert parsed + rejected == len(lines), "every line is counted once"
    unparsed = [r["body"] for r in records if r["attributes"].get("adapter.unparsed")]
    assert len(unparsed) == rejected, "each rejected line is still emitted, flagged"
    wanted = [h.line for h in hostile if h.result == "rejected"]
    missed = [h.why for h in hostile if (h.line in unparsed) != (h.result == "rejected")]
    assert unparsed == wanted, missed
    # The lines after the battery are parsed as usual.
    bodies = "\n".join(str(r["body"]) for r in records if "adapter.unparsed" not in r["attributes"])
    for n in range(GOOD):
        assert f"n={n}" in bodies
    for record in records:
        assert_writable(record)
        if "timestamp" in record:
            epoch = otel.parse_timestamp(record["timestamp"])
            assert epoch is not None and 0 <= epoch < 2**32, record["timestamp"]

    text = exposition(metrics)
    assert not RAW_CONTROL.search(text), "no raw control character reaches /metrics"
    values = samples(text)
    assert all(math.isfinite(v) for v in values.values())
    assert values[("adapter_lines_total", (("input", "in"), ("result", "rejected")))] == rejected


def test_numbers_that_do_not_fit_never_reach_a_metric() -> None:
    """A 400-digit size or %D is rejected before any metric moves: the exposition keeps
    only the good line's numbers."""
    metrics = AdapterMetrics(["in"])
    lines = [h.line for h in loggen.hostile_lines()["combined"][:6] if h.result == "rejected"]
    decoder("combined", metrics, emit=False).feed([*lines, loggen.good_after("combined", 0)],
                                                  OBSERVED)
    values = samples(exposition(metrics))
    assert values[("http_requests_total", (("method", "GET"), ("status", "200")))] == 1
    assert values[("http_response_size_bytes_total", (("method", "GET"), ("status", "200")))] == 1
    assert values[("http_request_duration_seconds_sum", ())] == 5e-6
    assert values[("adapter_lines_total", (("input", "in"), ("result", "rejected")))] == 5


def test_path_labels_are_valid_utf8_without_raw_controls_and_short() -> None:
    labels = PathLabels(max_paths=10)
    assert labels("/a\x1b[31m\x07\x00\x7f\x85/7") == "/a%1B[31m%07%00%7F%C2%85/:id"
    assert labels("/\ud800") == "/\ufffd"
    assert labels("/" + "x" * 300) == OTHER_PATH
    assert labels("/ok?" + "q" * 3000) == "/ok"
    # Long raw targets are not cached: 10,000 of them would hold 30 MB.
    for n in range(100):
        labels(f"/ok?{n}" + "q" * 3000)
    assert max(map(len, labels.cache)) < 3000


class Poison(Exception):
    """A decoder fault this test plants: what an unforeseen bug would raise."""


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_exception_while_decoding_a_line_costs_that_line(
    fmt: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Not a hostile value the decoders know of but a fault in their own code, planted on
    the lines that carry "boom": each such line is counted rejected and emitted flagged, the
    lines around it are parsed, and the fault is logged once, not once per line."""
    if fmt == "legacy":
        known = otel.severity_number

        def severity_number(text: str) -> int:
            if text == "BOOM":
                raise Poison("planted")
            return known(text)

        monkeypatch.setattr(otel, "severity_number", severity_number)
        poison = "2026-11-25 12:00:00,000 BOOM [main] shop - boom"
    else:
        class Planted(PathLabels):
            def __call__(self, target: str) -> str:
                if "boom" in target:
                    raise Poison("planted")
                return super().__call__(target)

        poison = loggen.good_after(fmt, 0).replace("/after", "/boom")
    metrics = AdapterMetrics(["in"])
    if fmt != "legacy":
        metrics.path_label = Planted(100)
    decode = decoder(fmt, metrics)
    good = [loggen.good_after(fmt, n) for n in range(GOOD)]
    lines = [good[0], *[poison] * 50, *good[1:]]
    with caplog.at_level(logging.WARNING):
        records = decode.feed(lines, OBSERVED) + decode.flush(OBSERVED)
    parsed, rejected = metrics.lines["in"]
    assert (parsed, rejected) == (GOOD, 50)
    unparsed = [r for r in records if r["attributes"].get("adapter.unparsed")]
    assert [r["body"] for r in unparsed] == [poison] * 50
    faults = [r for r in caplog.records if str(getattr(r, "error", "")).startswith("Poison")]
    assert len(faults) == 1, "logged once per kind, not once per line"


def test_a_read_hands_the_decoders_a_bounded_number_of_lines(tmp_path: Path) -> None:
    """1 MiB of empty lines is a million records: read at once they took ~750 MiB (the
    pod's limit is 128Mi), and the OOM kill repeated at every restart on the same chunk."""
    log = tmp_path / "access.log"
    log.write_bytes(b"\n" * 2**20 + (loggen.good_after("combined", 0) + "\n").encode())
    (tmp_path / "state").mkdir()
    config = load_config({
        "ADAPTER_INPUTS": f"combined={log}", "ADAPTER_STATE_DIR": str(tmp_path / "state"),
        "ADAPTER_POLL_SECONDS": "0.05", "ADAPTER_INOTIFY": "false",
    })

    class Recording:
        def __init__(self) -> None:
            self.sizes: list[int] = []

        def write(self, records: list[dict]) -> None:
            self.sizes.append(len(records))

        def close(self) -> None:
            pass

    metrics = AdapterMetrics(["in"])
    output = Recording()
    stopping = threading.Event()
    adapter = Adapter(config, metrics, output, stopping)
    runner = threading.Thread(target=adapter.run)
    runner.start()
    try:
        wait_until(lambda: sum(metrics.lines_total(str(log))) == 2**20 + 1, timeout=60,
                   what="every line counted")
    finally:
        stopping.set()
        runner.join(30)
    assert sum(output.sizes) == 2**20 + 1
    assert max(output.sizes) <= 10_000, "at most 10,000 records (a few MiB) in memory at once"


class FakeClient:
    def __init__(self) -> None:
        self.requests: list[tuple[bytes, int]] = []

    def send_packed(self, tag: str, entries: bytes, count: int) -> None:
        self.requests.append((entries, count))

    def close(self) -> None:
        pass


def test_forward_requests_stay_within_a_wire_limit_whatever_the_chunk() -> None:
    """A chunk's records went as one request: 1 MiB of short lines made a request of tens
    of MiB, which the collector (16 MiB frames, 2 MiB in its manifest) refuses, and the
    adapter retried it forever. Requests are cut at 1 MiB, in order."""
    client = FakeClient()
    output = ForwardOutput(client, "t", threading.Event())  # type: ignore[arg-type]
    records = [
        {"observed_timestamp": OBSERVED, "body": f"line {n} " + "x" * (n % 300),
         "attributes": {}, "resource": {}}
        for n in range(20_000)
    ]
    output.write(records)
    assert len(client.requests) > 1
    assert all(len(entries) <= 2**20 for entries, _ in client.requests)
    bodies = []
    for entries, count in client.requests:
        unpacked = list(msgpack.Unpacker(io.BytesIO(entries), raw=False,
                                         ext_hook=lambda code, data: (code, data)))
        assert len(unpacked) == count
        bodies += [record["body"] for _, record in unpacked]
    assert bodies == [r["body"] for r in records]


@pytest.mark.parametrize("timestamp", ["1969-12-31T23:59:59.000Z", "2200-01-01T00:00:00.000Z",
                                       "not a time"])
def test_forward_entries_carry_an_event_time_the_protocol_can_hold(timestamp: str) -> None:
    """EventTime is two unsigned 32-bit integers: a record dated outside 1970..2106 made
    struct.error out of encode_entry (no decoder emits one now; the output still holds)."""
    record = {"timestamp": timestamp, "observed_timestamp": OBSERVED, "body": "b",
              "attributes": {}}
    seconds, decoded = _entry(record)
    assert 0 <= seconds < 2**32 and decoded["timestamp"] == timestamp


def test_stdout_writes_valid_json_whatever_the_numbers() -> None:
    """orjson writes NaN and infinities as null; its fallback (a lone surrogate or a big
    integer on the same record) wrote them as NaN and Infinity, which no JSON reader takes."""
    record = {"observed_timestamp": OBSERVED, "body": "\ud800",
              "attributes": {"nan": math.nan, "inf": -math.inf, "big": 2**70}}
    stream = io.BytesIO()
    StdoutOutput(stream).write([record])
    written = orjson.loads(stream.getvalue().replace(b"\\ud800", b"?"))
    assert written["attributes"] == {"nan": None, "inf": None, "big": 2**70}


def run_adapter_until(config_env: dict[str, str], tmp_path: Path, done) -> Adapter:
    """An in-process adapter (no output) run until `done(adapter)`, then stopped."""
    (tmp_path / "state").mkdir(exist_ok=True)
    config = load_config({"ADAPTER_STATE_DIR": str(tmp_path / "state"), "ADAPTER_OUTPUT": "none",
                          "ADAPTER_POLL_SECONDS": "0.05", **config_env})
    stopping = threading.Event()
    adapter = Adapter(config, AdapterMetrics([s.name for s in config.inputs]),
                      NullOutput(), stopping)
    runner = threading.Thread(target=adapter.run)
    runner.start()
    try:
        wait_until(lambda: done(adapter), timeout=20, what="the adapter's state")
    finally:
        stopping.set()
        runner.join(30)
    return adapter


@pytest.mark.parametrize("follow", [False, True])
def test_a_link_the_app_plants_is_refused_counted_unless_links_are_followed(
    tmp_path: Path, follow: bool
) -> None:
    """The adapter shares the follower: by default a link out of the shared volume is not
    read, and adapter_files_refused_total{reason} says so; ADAPTER_FOLLOW_SYMLINKS=true
    follows it (a node agent on /var/log/containers)."""
    logs, outside = tmp_path / "logs", tmp_path / "outside"
    logs.mkdir()
    outside.mkdir()
    (outside / "secret.log").write_text(loggen.good_after("combined", 0) + "\n")
    (logs / "evil.log").symlink_to(outside / "secret.log")
    (logs / "app.log").write_text(loggen.good_after("combined", 1) + "\n")
    glob = f"{logs}/*.log"

    def refused(adapter: Adapter) -> dict[str, float]:
        registry = CollectorRegistry()
        registry.register(FollowerCollector(adapter))
        return {dict(labels)["reason"]: value
                for (name, labels), value in samples(generate_latest(registry).decode()).items()
                if name == "adapter_files_refused_total"}

    expected = 2 if follow else 1
    adapter = run_adapter_until(
        {"ADAPTER_INPUTS": f"combined={glob}", "ADAPTER_FOLLOW_SYMLINKS": str(follow).lower()},
        tmp_path,
        lambda a: sum(a.metrics.lines_total(glob)) == expected
        and (follow or refused(a).get("symlink") == 1),
    )
    assert adapter.metrics.lines_total(glob) == (expected, 0)
    assert refused(adapter).get("symlink", 0) == (0 if follow else 1)
