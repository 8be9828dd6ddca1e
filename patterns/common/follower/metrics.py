"""A follower's counters for Prometheus: one collector, under each service's prefix.

`FollowerStats`, `Follower.followed` and `Follower.backlog_bytes()` are read at scrape
time (no second bookkeeping). The families, for a prefix `p`:

  p_lines_read_total, p_bytes_read_total
  p_files_refused_total{reason}            see REFUSALS
  p_files_followed                         files open now
  p_backlog_bytes                          bytes in followed files not yet committed
  the events (EVENTS: repairs and file events) as one counter each,
  p_rotations_total, ..., or, with `events_family`, as one counter labelled `event`,
  p_<events_family>_total{event="rotations"}

A service words the help texts its own way (`help`, keyed by the name without prefix:
"lines_read", an event's name, the events family's name...), so they say what the
numbers mean in its terms (committed = acknowledged by the collector, for the shipper).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from patterns.common.follower.follower import Follower

# FollowerStats' event counters, in the order they are exposed, and what each counts.
# `{PREFIX}` is the service's prefix in capitals (its settings' prefix too).
EVENTS: Mapping[str, str] = MappingProxyType(
    {
        "invalid_utf8_lines": "Lines with invalid UTF-8, read with U+FFFD replacements.",
        "long_lines": "Lines longer than {PREFIX}_MAX_LINE_BYTES (split or truncated).",
        "nul_lines": "Lines (or pieces) containing NUL bytes, read as U+0000.",
        "rotations": "Followed files renamed away (rename rotation).",
        "deletions": "Followed files deleted.",
        "truncations": "Followed files truncated in place (copytruncate, or a rewrite).",
        "copies_found": "copytruncate copies found and read from the truncation point.",
        "truncations_without_copy": "Truncations where no copy was found: lines between"
        " the read position and the truncation may be lost.",
        "files_opened": "Files opened for following.",
        "files_closed": "Rotated or deleted files closed after they were fully read.",
        "checkpoints_lost": "Checkpointed files found nowhere at start.",
        "rotated_while_down": "Files rotated away while the process was down, found at"
        " start (newer than the checkpointed file) and read from their beginning.",
    }
)
HELP: Mapping[str, str] = MappingProxyType(
    {
        "lines_read": "Lines read from the followed files.",
        "bytes_read": "Bytes read from the followed files.",
        "files_refused": "Files not read, once per path: symlink, outside (of the globs'"
        " directories), not_regular, pseudo_file (/proc), unreadable, too_many_files.",
        "files_followed": "Files open and followed now.",
        "backlog_bytes": "Bytes in followed files not yet committed.",
        **EVENTS,
    }
)


class FollowerMetrics(Collector):
    def __init__(
        self,
        follower: Follower,
        prefix: str,
        *,
        help: Mapping[str, str] = MappingProxyType({}),
        events_family: str | None = None,
    ) -> None:
        self.follower = follower
        self.prefix = prefix
        self.events_family = events_family
        self._help = {
            name: text.replace("{PREFIX}", prefix.upper())
            for name, text in {**HELP, **help}.items()
        }

    def describe(self) -> Iterator[Metric]:
        return iter(())  # read at scrape time; nothing to pre-register

    def collect(self) -> Iterator[Metric]:
        stats = self.follower.stats
        prefix, help_ = self.prefix, self._help
        for name in ("lines_read", "bytes_read"):
            yield CounterMetricFamily(f"{prefix}_{name}", help_[name], value=getattr(stats, name))
        if self.events_family is None:
            for name in EVENTS:
                yield CounterMetricFamily(
                    f"{prefix}_{name}", help_[name], value=getattr(stats, name)
                )
        else:
            events = CounterMetricFamily(
                f"{prefix}_{self.events_family}", help_[self.events_family], labels=["event"]
            )
            for name in EVENTS:
                events.add_metric([name], getattr(stats, name))
            yield events
        refused = CounterMetricFamily(
            f"{prefix}_files_refused", help_["files_refused"], labels=["reason"]
        )
        for reason, count in sorted(stats.files_refused.items()):
            refused.add_metric([reason], count)
        yield refused
        yield GaugeMetricFamily(
            f"{prefix}_files_followed", help_["files_followed"], value=self.follower.followed
        )
        yield GaugeMetricFamily(
            f"{prefix}_backlog_bytes", help_["backlog_bytes"], value=self.follower.backlog_bytes()
        )
