"""Routing rules: which upstreams a new session may go to, in the order to try them. The
pool (`pool.py`) keeps the healthy upstreams in priority order, writable primaries first
when the checks know roles; the rule named by AMBASSADOR_ROUTE gets them with what the
client asked for in its startup packet, and returns the ones to try.

  priority    the pool's order as it is: the first healthy upstream (the primary)

A new rule is one new module here and one line in ROUTES: its function is imported when
the pool starts, so the settings (config.py) know the names alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, cast

from patterns.ambassador.db_ambassador import pgwire
from patterns.common.registry import registered

if TYPE_CHECKING:
    from patterns.ambassador.db_ambassador.upstream import Upstream

# Rule name (AMBASSADOR_ROUTE=name) -> "module:function" in this package.
ROUTES: dict[str, str] = {
    "priority": "priority:route",
}


class Startup:
    """What a client asked for in its startup packet, as a rule sees it: `user`,
    `database`, `application_name`, and every parameter in `params`. The client wrote it
    and nothing has checked it yet (the server authenticates after the rule), so a rule
    may route on it but must not trust it. Parsed only if a rule reads it."""

    __slots__ = ("_packet", "_params")

    def __init__(self, packet: bytes) -> None:
        self._packet = packet
        self._params: dict[str, str] | None = None

    @property
    def params(self) -> Mapping[str, str]:
        if self._params is None:
            self._params = pgwire.startup_params(self._packet) if self._packet else {}
        return self._params

    @property
    def user(self) -> str:
        return self.params.get("user", "")

    @property
    def database(self) -> str:
        # As the server does: no database parameter means the database named as the user.
        return self.params.get("database") or self.user

    @property
    def application_name(self) -> str:
        return self.params.get("application_name", "")


# A rule: the client's startup and the healthy upstreams in the pool's order -> the ones
# this session may go to, in the order to try them (each is tried in turn within
# AMBASSADOR_CONNECT_TIMEOUT). An empty result refuses the session (08006).
Route = Callable[[Startup, Sequence["Upstream"]], Sequence["Upstream"]]


def route_function(name: str) -> Route:
    """The rule registered as `name` (ValueError if none is), imported now."""
    return cast(Route, registered(ROUTES, name, __name__, "route"))


__all__ = ["ROUTES", "Route", "Startup", "route_function"]
