"""`priority` (the default): every session goes where the pool's order says, the first
healthy upstream of AMBASSADOR_UPSTREAMS, writable primaries first when the health checks
log in; the next ones if it does not answer."""

from __future__ import annotations

from collections.abc import Sequence

from patterns.ambassador.db_ambassador.routes import Startup
from patterns.ambassador.db_ambassador.upstream import Upstream


def route(startup: Startup, candidates: Sequence[Upstream]) -> Sequence[Upstream]:
    return candidates
