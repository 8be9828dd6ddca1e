"""Typed configuration from environment variables.

Every service reads its settings through one `Env`; each getter names the variable, its
type and its default, so the code is the single place a setting is defined. Bad values are
collected and reported together: the service stops at start with one message that names
every variable and what it expects, instead of failing later in the middle of work.

`LOG_LEVEL` is checked by every `Env`: each service logs at that level from its first
line (`setup_logging` runs before the configuration is loaded, so it cannot stop the
service), and checking it here makes a bad value a configuration error of every service,
whether it starts through `run_service` or has its own entry point.

A renamed setting keeps its old name as a deprecated alias: `Env(environ, renamed={old:
new})` reads the old name when the new one is unset (with one warning naming the new
name), and both set to different values is a configuration error naming both.

`writable_dir` declares a directory the service writes: under `run_service` (inside
`checking_dirs()`) it is created if missing and must be writable, else the configuration
error names the variable; a test that only parses settings touches no directory.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TypeVar

from patterns.common.jsonlog import LEVEL_NAMES, parse_level

T = TypeVar("T")

log = logging.getLogger(__name__)

# Set by run_service while it loads a service's configuration: only then does
# `Env.writable_dir` create and check the directory (see the module's docstring).
_CHECKING_DIRS: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "checking_dirs", default=False
)


@contextlib.contextmanager
def checking_dirs() -> Iterator[None]:
    token = _CHECKING_DIRS.set(True)
    try:
        yield
    finally:
        _CHECKING_DIRS.reset(token)


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
    def __init__(
        self,
        environ: Mapping[_Str, _Str] | None = None,
        *,
        renamed: Mapping[_Str, _Str] | None = None,
    ) -> None:
        self._environ = os.environ if environ is None else environ
        self.problems: list[str] = []
        # new name -> old name, for the getters (renamed is given old -> new, as people
        # read a changelog).
        self._old_name = {new: old for old, new in (renamed or {}).items()}
        # The name a getter's value was read from: the old one when only it is set, so a
        # bad value is reported under the name the operator wrote.
        self._source: dict[_Str, _Str] = {}
        level = self._raw("LOG_LEVEL", False)
        if level is not None and parse_level(level) is None:
            self._bad("LOG_LEVEL", level, LEVEL_NAMES)

    def _value(self, name: _Str) -> _Str | None:
        value = self._environ.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def _raw(self, name: _Str, required: _Bool) -> _Str | None:
        value = self._value(name)
        self._source[name] = name
        old = self._old_name.get(name)
        old_value = None if old is None else self._value(old)
        if old is not None and old_value is not None:
            if value is not None and value != old_value:
                self.problems.append(
                    f"{old} and {name} are both set and differ: {old} is the old name of "
                    f"{name}; keep {name}"
                )
                return None
            log.warning(
                f"{old} is deprecated: use {name}", extra={"variable": old, "use": name}
            )
            if value is None:
                self._source[name] = old
                value = old_value
        if value is None and required:
            self.problems.append(f"{name} is required")
        return value

    def _bad(self, name: _Str, value: _Str, expected: _Str) -> None:
        name = self._source.get(name, name)
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

    def writable_dir(self, name: _Str, default: _Str) -> Path:
        """A directory the service writes (state, checkpoints, logs). Under
        `checking_dirs()` it is created if missing and must be writable and searchable by
        this uid; otherwise the problem names the variable."""
        path = Path(self.str(name, default))
        if not _CHECKING_DIRS.get():
            return path
        try:
            path.mkdir(parents=True, exist_ok=True)
            problem = None if os.access(path, os.W_OK | os.X_OK) else (
                f"not writable by uid {os.getuid()}"
            )
        except OSError as exc:
            problem = exc.strerror or str(exc)
        if problem is not None:
            self.problems.append(f"{self._source.get(name, name)}={path}: {problem}")
        return path

    def check(self) -> None:
        """Raise one ConfigError naming every problem found so far."""
        if self.problems:
            raise ConfigError("; ".join(self.problems))


EVENT_LOOPS = ("uvloop", "asyncio")


def event_loop(env: Env, name: str) -> str:
    """An asyncio service's loop: `uvloop` (the default: the `uvloop` extra) or `asyncio`.
    Chosen without the extra installed, it is a configuration error that says both ways
    out, rather than an ImportError when the loop starts."""
    chosen = env.choice(name, "uvloop", EVENT_LOOPS)
    if chosen == "uvloop" and importlib.util.find_spec("uvloop") is None:
        env.problems.append(f"{name}=uvloop: uvloop is not installed "
                            "(pip install 'podpatterns[uvloop]', or set it to asyncio)")
    return chosen


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
