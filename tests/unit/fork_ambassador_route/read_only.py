"""`read-only`: a session whose application_name ends in "-readonly" goes to a healthy
standby, so reports and other long reads keep their load off the primary; every other
session goes where `priority` sends it (the writable primary). With no healthy standby a
read-only session goes to the primary too: it only reads, and a primary serves reads.

Roles are known only when the health checks log in (AMBASSADOR_HEALTH_USER); without
them no upstream is a standby, and this rule sends every session where `priority` does.
A standby replays the primary's changes a little later: a session marked read-only may
not yet see a write another session has just committed.
"""

from __future__ import annotations

from collections.abc import Sequence

from patterns.ambassador.db_ambassador.routes import Startup
from patterns.ambassador.db_ambassador.upstream import Upstream

SUFFIX = "-readonly"


def route(startup: Startup, candidates: Sequence[Upstream]) -> Sequence[Upstream]:
    if not startup.application_name.endswith(SUFFIX):
        return candidates
    standbys = [u for u in candidates if u.role == "standby"]
    return standbys + [u for u in candidates if u.role != "standby"]
