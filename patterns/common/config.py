"""Typed configuration from environment variables.

Every service reads its settings through one `Env`; each getter names the variable, its
type and its default, so the code is the single place a setting is defined. Bad values are
collected and reported together: the service stops at start with one message that names
every variable and what it expects, instead of failing later in the middle of work.

`LOG_LEVEL` is checked by every `Env`: each service logs at that level from its first
line (`setup_logging` runs before the configuration is loaded, so it cannot stop the
service), and checking it here makes a bad value a configuration error of every service,
whether it starts through `run_service` or has its own entry point.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TypeVar

from patterns.common.jsonlog import LEVEL_NAMES, parse_level

T = TypeVar("T")


class ConfigError(Exception):
    """One or more environment variables are missing or malformed."""


# Env's getters are named after the types they return; these aliases keep the
# annotations inside the class from meaning the methods.
_Str = str
_Int = int
_Float = float
_Bool = bool
_List = list


class Env:
    def __init__(self, environ: Mapping[_Str, _Str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ
        self.problems: list[str] = []
        level = self._raw("LOG_LEVEL", False)
        if level is not None and parse_level(level) is None:
            self._bad("LOG_LEVEL", level, LEVEL_NAMES)

    def _raw(self, name: _Str, required: _Bool) -> _Str | None:
        value = self._environ.get(name)
        if value is None or value.strip() == "":
            if required:
                self.problems.append(f"{name} is required")
            return None
        return value.strip()

    def _bad(self, name: _Str, value: _Str, expected: _Str) -> None:
        self.problems.append(f"{name}={value!r}: expected {expected}")

    def str(self, name: _Str, default: _Str = "", *, required: _Bool = False) -> _Str:
        raw = self._raw(name, required)
        return default if raw is None else raw

    def optional_str(self, name: _Str) -> _Str | None:
        return self._raw(name, False)

    def int(
        self, name: _Str, default: _Int, *, min: _Int | None = None, max: _Int | None = None
    ) -> _Int:
        raw = self._raw(name, False)
        if raw is None:
            return default
        try:
            value = int(raw, 10)
        except ValueError:
            self._bad(name, raw, "an integer")
            return default
        if (min is not None and value < min) or (max is not None and value > max):
            self._bad(name, raw, f"an integer in [{min}, {max}]")
            return default
        return value

    def float(
        self, name: _Str, default: _Float, *, min: _Float | None = None, max: _Float | None = None
    ) -> _Float:
        raw = self._raw(name, False)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            self._bad(name, raw, "a number")
            return default
        if value != value or (min is not None and value < min) or (max is not None and value > max):
            self._bad(name, raw, f"a number in [{min}, {max}]")
            return default
        return value

    def port(self, name: _Str, default: _Int) -> _Int:
        return self.int(name, default, min=1, max=65535)

    def bool(self, name: _Str, default: _Bool) -> _Bool:
        raw = self._raw(name, False)
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        self._bad(name, raw, "true or false")
        return default

    def list(
        self, name: _Str, default: _List[_Str] | None = None, *, required: _Bool = False
    ) -> _List[_Str]:
        raw = self._raw(name, required)
        if raw is None:
            return list(default or [])
        items = [item.strip() for item in raw.split(",") if item.strip()]
        if required and not items:
            self._bad(name, raw, "a comma-separated list with at least one item")
        return items

    def choice(self, name: _Str, default: _Str, choices: tuple[_Str, ...]) -> _Str:
        raw = self._raw(name, False)
        if raw is None:
            return default
        if raw not in choices:
            self._bad(name, raw, "one of " + ", ".join(choices))
            return default
        return raw

    def host_port(self, name: _Str, default: _Str) -> tuple[_Str, _Int]:
        raw = self._raw(name, False) or default
        parsed = parse_host_port(raw)
        if parsed is None:
            self._bad(name, raw, "host:port")
            parsed = parse_host_port(default) or ("127.0.0.1", 0)
        return parsed

    def check(self) -> None:
        """Raise one ConfigError naming every problem found so far."""
        if self.problems:
            raise ConfigError("; ".join(self.problems))


def parse_host_port(text: str) -> tuple[str, int] | None:
    """'host:port' or '[v6]:port' -> (host, port); None if malformed."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host or not port_text.isdigit():
        return None
    port = int(port_text)
    if not 0 < port < 65536:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port
