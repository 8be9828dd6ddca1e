"""Plug-in registries: a name a setting gives -> "module:attribute" in a package, imported
only when asked for, so the settings can check names without importing any plug-in (the
adapter's formats, the ambassador's routing rules, the shipper's tag rule)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping


def registered(registry: Mapping[str, str], name: str, package: str, what: str) -> object:
    """The attribute registered as `name` in `package`, imported now; ValueError naming
    `what` (for example "format") if no such name is registered."""
    try:
        spec = registry[name]
    except KeyError:
        raise ValueError(f"unknown {what} {name!r}") from None
    return imported(spec, package)


def imported(spec: str, package: str) -> object:
    """"module:attribute" of `package`, imported now."""
    module, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(f"{package}.{module}"), attribute)
