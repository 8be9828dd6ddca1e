"""Metric helpers shared by the services."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter


def counter_by(name: str, documentation: str, label: str, values: Iterable[str],
               registry: CollectorRegistry) -> Counter:
    """A counter with one label whose every known value is exported at 0 from the start:
    a series that first appears at its first increment hides that increment from
    `rate()` and `increase()`, and an alert on it has nothing to compare against."""
    counter = Counter(name, documentation, [label], registry=registry)
    for value in values:
        counter.labels(value)
    return counter
