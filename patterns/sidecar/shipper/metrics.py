"""The shipper's follower metrics (shipper_*): the suite's one follower collector, its help
texts in the shipper's words (what is committed is what the collector acknowledged)."""

from __future__ import annotations

from patterns.common.follower import Follower
from patterns.common.follower.metrics import FollowerMetrics

HELP = {
    "invalid_utf8_lines": "Lines with invalid UTF-8, shipped with U+FFFD replacements.",
    "nul_lines": "Lines (or pieces) containing NUL bytes, shipped as U+0000.",
    "files_closed": "Rotated or deleted files closed after they were fully shipped.",
    "rotated_while_down": "Files rotated away while the shipper was down, found at"
    " start (newer than the checkpointed file) and shipped from their beginning.",
    "backlog_bytes": "Bytes in followed files not yet acknowledged by the collector.",
}


def follower_metrics(follower: Follower) -> FollowerMetrics:
    return FollowerMetrics(follower, "shipper", help=HELP)
