"""One follower collector (patterns/common/follower/metrics.py) for the shipper and the
adapter, each under its prefix: the families and help texts each service exposed before
they shared it are exposed as they were (the adapter gained the `rotated_while_down`
event), and the values are the follower's own counters."""

from __future__ import annotations

import types
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from patterns.adapter.log_adapter.adapter import FollowerCollector
from patterns.common.follower import Follower
from patterns.common.follower.metrics import EVENTS, FollowerMetrics
from patterns.sidecar.shipper.metrics import follower_metrics

SHIPPER = [
    (
        '# HELP shipper_backlog_bytes Bytes in followed files not yet acknowledged by '
        'the collector.'
    ),
    '# HELP shipper_bytes_read_total Bytes read from the followed files.',
    '# HELP shipper_checkpoints_lost_total Checkpointed files found nowhere at start.',
    (
        '# HELP shipper_copies_found_total copytruncate copies found and read from the '
        'truncation point.'
    ),
    '# HELP shipper_deletions_total Followed files deleted.',
    (
        '# HELP shipper_files_closed_total Rotated or deleted files closed after they '
        'were fully shipped.'
    ),
    '# HELP shipper_files_followed Files open and followed now.',
    '# HELP shipper_files_opened_total Files opened for following.',
    (
        '# HELP shipper_files_refused_total Files not read, once per path: symlink, '
        "outside (of the globs' directories), not_regular, pseudo_file (/proc), "
        'unreadable, too_many_files.'
    ),
    (
        '# HELP shipper_invalid_utf8_lines_total Lines with invalid UTF-8, shipped with '
        'U+FFFD replacements.'
    ),
    '# HELP shipper_lines_read_total Lines read from the followed files.',
    (
        '# HELP shipper_long_lines_total Lines longer than SHIPPER_MAX_LINE_BYTES '
        '(split or truncated).'
    ),
    '# HELP shipper_nul_lines_total Lines (or pieces) containing NUL bytes, shipped as U+0000.',
    (
        '# HELP shipper_rotated_while_down_total Files rotated away while the shipper '
        'was down, found at start (newer than the checkpointed file) and shipped from '
        'their beginning.'
    ),
    '# HELP shipper_rotations_total Followed files renamed away (rename rotation).',
    (
        '# HELP shipper_truncations_total Followed files truncated in place '
        '(copytruncate, or a rewrite).'
    ),
    (
        '# HELP shipper_truncations_without_copy_total Truncations where no copy was '
        'found: lines between the read position and the truncation may be lost.'
    ),
    '# TYPE shipper_backlog_bytes gauge',
    '# TYPE shipper_bytes_read_total counter',
    '# TYPE shipper_checkpoints_lost_total counter',
    '# TYPE shipper_copies_found_total counter',
    '# TYPE shipper_deletions_total counter',
    '# TYPE shipper_files_closed_total counter',
    '# TYPE shipper_files_followed gauge',
    '# TYPE shipper_files_opened_total counter',
    '# TYPE shipper_files_refused_total counter',
    '# TYPE shipper_invalid_utf8_lines_total counter',
    '# TYPE shipper_lines_read_total counter',
    '# TYPE shipper_long_lines_total counter',
    '# TYPE shipper_nul_lines_total counter',
    '# TYPE shipper_rotated_while_down_total counter',
    '# TYPE shipper_rotations_total counter',
    '# TYPE shipper_truncations_total counter',
    '# TYPE shipper_truncations_without_copy_total counter',
]
ADAPTER = [
    '# HELP adapter_backlog_bytes Bytes in followed files not yet handled (committed).',
    '# HELP adapter_bytes_read_total Bytes read from the inputs.',
    (
        '# HELP adapter_file_events_total Input repairs and file events seen by the '
        'follower (invalid UTF-8 replaced, long lines split, rotations, truncations, '
        '...).'
    ),
    '# HELP adapter_files_followed Files open for reading.',
    (
        '# HELP adapter_files_refused_total Files not read, once per path: symlink, '
        "outside (of the globs' directories), not_regular, pseudo_file (/proc), "
        'unreadable, too_many_files.'
    ),
    (
        '# HELP adapter_lines_held Lines of multi-line records still being assembled '
        '(not yet counted).'
    ),
    '# HELP adapter_lines_read_total Lines read from the inputs.',
    '# TYPE adapter_backlog_bytes gauge',
    '# TYPE adapter_bytes_read_total counter',
    '# TYPE adapter_file_events_total counter',
    '# TYPE adapter_files_followed gauge',
    '# TYPE adapter_files_refused_total counter',
    '# TYPE adapter_lines_held gauge',
    '# TYPE adapter_lines_read_total counter',
]


def exposition(collector: FollowerMetrics) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def described(text: str) -> list[str]:
    return sorted(line for line in text.splitlines() if line.startswith(("# HELP", "# TYPE")))


def adapter_collector(follower: Follower) -> FollowerCollector:
    return FollowerCollector(types.SimpleNamespace(follower=follower, held_lines=lambda: 3))


def test_the_shipper_and_the_adapter_expose_what_they_did(tmp_path: Path) -> None:
    follower = Follower([str(tmp_path / "*.log")], None)
    assert described(exposition(follower_metrics(follower))) == SHIPPER
    assert described(exposition(adapter_collector(follower))) == ADAPTER


def test_the_values_are_the_followers_counters(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_bytes(b"one\ntwo\n\xff\n")
    follower = Follower([str(tmp_path / "*.log")], None)
    chunk = follower.read(timeout=5)
    assert chunk is not None and len(chunk.lines) == 3
    follower.stats.rotations = 7
    follower.stats.files_refused["symlink"] = 2
    shipper = {
        (s.name, tuple(s.labels.items())): s.value
        for family in text_string_to_metric_families(exposition(follower_metrics(follower)))
        for s in family.samples
    }
    adapter = {
        (s.name, tuple(s.labels.items())): s.value
        for family in text_string_to_metric_families(exposition(adapter_collector(follower)))
        for s in family.samples
    }
    for prefix, samples in (("shipper", shipper), ("adapter", adapter)):
        assert samples[(f"{prefix}_lines_read_total", ())] == 3
        assert samples[(f"{prefix}_bytes_read_total", ())] == 10
        assert samples[(f"{prefix}_files_refused_total", (("reason", "symlink"),))] == 2
        assert samples[(f"{prefix}_files_followed", ())] == 1
        assert samples[(f"{prefix}_backlog_bytes", ())] == 10  # nothing committed
    assert shipper[("shipper_rotations_total", ())] == 7
    assert shipper[("shipper_invalid_utf8_lines_total", ())] == 1
    assert adapter[("adapter_file_events_total", (("event", "rotations"),))] == 7
    assert adapter[("adapter_file_events_total", (("event", "invalid_utf8_lines"),))] == 1
    assert adapter[("adapter_lines_held", ())] == 3
    events = {labels[0][1] for name, labels in adapter if name == "adapter_file_events_total"}
    assert events == set(EVENTS)
    follower.close()
