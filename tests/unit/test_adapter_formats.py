"""Golden files: each format's decoder turns a sample log (good, multi-line and malformed
lines) into exactly the OpenTelemetry records stored next to it.

Regenerate after an intended change with UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from patterns.adapter.log_adapter.formats import Context, RegexFormat, new_decoder
from patterns.adapter.log_adapter.metrics import AdapterMetrics

GOLDEN = Path(__file__).parent / "golden" / "adapter"
OBSERVED = "2026-11-25T12:30:00.000Z"
RESOURCE = {"service.name": "legacy-app"}


def read_lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return text[:-1].split("\n") if text.endswith("\n") else text.split("\n")


def regex_format() -> RegexFormat:
    return RegexFormat.compile(
        (GOLDEN / "regex" / "pattern.txt").read_text().strip(),
        (GOLDEN / "regex" / "time_format.txt").read_text().strip(),
    )


def decode(fmt: str, lines: list[str], chunk: int) -> tuple[list[dict], AdapterMetrics]:
    metrics = AdapterMetrics(["golden"])
    regex = regex_format() if fmt == "regex" else None
    context = Context("golden", metrics, True, RESOURCE, regex=regex)
    decoder = new_decoder(fmt, context, f"/var/log/app/{fmt}.log")
    records: list[dict] = []
    for start in range(0, len(lines), chunk):
        records += decoder.feed(lines[start : start + chunk], OBSERVED)
    records += decoder.flush(OBSERVED)
    return records, metrics


@pytest.mark.parametrize("fmt", ["combined", "legacy", "json", "regex"])
def test_records_match_the_golden_file(fmt: str) -> None:
    lines = read_lines(GOLDEN / fmt / "input.log")
    records, metrics = decode(fmt, lines, chunk=len(lines))
    produced = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in records)
    expected_path = GOLDEN / fmt / "expected.jsonl"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        expected_path.write_text(produced, encoding="utf-8")
    assert produced == expected_path.read_text(encoding="utf-8")
    parsed, rejected = metrics.lines["golden"]
    assert parsed + rejected == len(lines), "every line is accounted for"
    unparsed = [r for r in records if r["attributes"].get("adapter.unparsed")]
    assert len(unparsed) == rejected, "a rejected line is still emitted, once"
    assert all(r["body"] in lines for r in unparsed), "with its raw text"


@pytest.mark.parametrize("fmt", ["combined", "legacy", "json", "regex"])
def test_chunk_boundaries_do_not_change_the_records(fmt: str) -> None:
    lines = read_lines(GOLDEN / fmt / "input.log")
    whole, _ = decode(fmt, lines, chunk=len(lines))
    one_by_one, _ = decode(fmt, lines, chunk=1)
    assert one_by_one == whole


def test_a_traceback_is_one_record_with_exception_attributes() -> None:
    records, _ = decode("legacy", read_lines(GOLDEN / "legacy" / "input.log"), chunk=3)
    failed = next(r for r in records if r["body"].startswith("checkout failed"))
    assert failed["body"].count("\n") == 6
    assert failed["attributes"]["exception.type"] == "shop.PaymentDeclined"
    assert failed["attributes"]["exception.message"] == "card declined for order 81"
    assert failed["severity_number"] == 17
    assert failed["timestamp"] == "2026-11-25T12:00:02.250Z"


def test_combined_line_carries_semantic_convention_attributes() -> None:
    records, _ = decode("combined", read_lines(GOLDEN / "combined" / "input.log"), chunk=5)
    checkout = records[1]["attributes"]
    assert checkout["http.request.method"] == "POST"
    assert checkout["url.path"] == "/checkout"
    assert checkout["url.query"] == "cart=42&coupon=X"
    assert checkout["http.response.status_code"] == 500
    assert checkout["client.address"] == "10.0.0.7"
    assert checkout["http.server.request.duration"] == pytest.approx(0.002193)
    assert records[1]["severity_text"] == "ERROR"
    # -0700 is converted to UTC.
    assert records[0]["timestamp"] == "2000-10-10T20:55:36.000Z"
