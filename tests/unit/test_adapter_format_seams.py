"""The seams between the adapter's formats, its metrics and its settings: a decoder reports
through `DecoderEvents` and nothing else of the metrics, a format is found by its name in
the registry, and the settings know format names without loading any decoder."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from patterns.adapter.log_adapter import formats
from patterns.adapter.log_adapter.formats import FORMATS, Context, decoder_class, new_decoder
from patterns.adapter.log_adapter.metrics import AdapterMetrics
from tests.conftest import ROOT
from tests.unit.test_adapter_formats import GOLDEN, OBSERVED, decode, read_lines, regex_format

PACKAGE = Path(formats.__file__).parent


class Recorded:
    """A `DecoderEvents` that is no AdapterMetrics: it keeps what it is told."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str | None, int, int | None]] = []
        self.app_records: list[str] = []
        self.lines: dict[str, list[int]] = {}

    def observe_request(
        self, method: str, status: str, target: str | None, size: int, duration_us: int | None
    ) -> None:
        self.requests.append((method, status, target, size, duration_us))

    def observe_app_record(self, severity: str) -> None:
        self.app_records.append(severity)

    def count_lines(self, input_name: str, parsed: int, rejected: int) -> None:
        entry = self.lines.setdefault(input_name, [0, 0])
        entry[0] += parsed
        entry[1] += rejected


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_a_decoder_reports_through_decoder_events_alone(fmt: str) -> None:
    """Any DecoderEvents will do: fed the golden input, each decoder gives the records it
    gives with AdapterMetrics and tells the recorder what the metrics would count."""
    lines = read_lines(GOLDEN / fmt / "input.log")
    events = Recorded()
    regex = regex_format() if fmt == "regex" else None
    decoder = new_decoder(fmt, Context("golden", events, True, {}, regex=regex), "/x.log")
    records = decoder.feed(lines, OBSERVED) + decoder.flush(OBSERVED)
    with_metrics, metrics = decode(fmt, lines, chunk=len(lines))

    assert len(records) == len(with_metrics)
    assert events.lines == {"golden": metrics.lines["golden"]}
    requests = sum(count for count, _size in metrics.requests.values())
    assert len(events.requests) == requests
    assert sum(size for *_, size, _d in events.requests) == sum(
        size for _count, size in metrics.requests.values()
    )
    assert len(events.app_records) == sum(metrics.app_records.values())
    assert events.requests or events.app_records, "the golden input says something"


def test_no_decoder_module_imports_the_metrics() -> None:
    for module in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(module.read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        imported |= {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        assert not any(name and name.endswith("log_adapter.metrics") for name in imported), (
            module.name
        )


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_registered_format_loads_under_its_name(fmt: str) -> None:
    assert decoder_class(fmt).format == fmt


def test_an_unknown_format_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown format 'nope'"):
        new_decoder("nope", Context("in", AdapterMetrics(["in"]), True, {}), "/x.log")


def test_the_settings_load_no_decoder(tmp_path: Path) -> None:
    """config.py validates ADAPTER_INPUTS against the registry's names: loading the
    settings imports no decoder module (nor the metrics)."""
    code = (
        "import sys\n"
        "from patterns.adapter.log_adapter.config import load_config\n"
        "load_config({'ADAPTER_INPUTS': 'json=/var/log/app/*.log',"
        " 'ADAPTER_STATE_DIR': sys.argv[1]})\n"
        "print('\\n'.join(m for m in sys.modules if m.startswith('patterns.adapter')))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "state")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    decoders = {f"patterns.adapter.log_adapter.formats.{spec.split(':')[0]}" for spec in
                FORMATS.values()}
    assert "patterns.adapter.log_adapter.formats" in loaded
    assert not decoders & set(loaded)
    assert "patterns.adapter.log_adapter.metrics" not in loaded
