"""The ambassador's routing seam: what a rule sees of the client's startup packet, the
setting that names the rule, and how the pool uses what the rule returns (the order it
tries, a refusal, a rule that raises). The guide's example rule is in
test_fork_ambassador_route.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest
from prometheus_client import CollectorRegistry

from patterns.ambassador.db_ambassador import pgwire
from patterns.ambassador.db_ambassador.config import load_config
from patterns.ambassador.db_ambassador.pool import NoUpstream, UpstreamPool
from patterns.ambassador.db_ambassador.routes import ROUTES, Startup, route_function
from patterns.ambassador.db_ambassador.routes.priority import route as priority
from patterns.ambassador.db_ambassador.upstream import Upstream
from patterns.common.config import ConfigError


def _pool(upstreams: str, **env: str) -> UpstreamPool:
    config = load_config({"AMBASSADOR_UPSTREAMS": upstreams, **env})
    return UpstreamPool(config, CollectorRegistry(), on_failed=lambda _upstream: None)


def test_a_rule_sees_user_database_and_application_name_of_the_startup_packet():
    packet = pgwire.startup_message(
        {"user": "ann", "database": "shop", "application_name": "reports-readonly",
         "options": "-c work_mem=64MB"}
    )  # fmt: skip
    startup = Startup(packet)
    assert (startup.user, startup.database, startup.application_name) == (
        "ann", "shop", "reports-readonly")  # fmt: skip
    assert startup.params["options"] == "-c work_mem=64MB"
    # No database parameter: the server takes the user's name, and so does the rule.
    assert Startup(pgwire.startup_message({"user": "ann"})).database == "ann"
    # A client that sent none of them (or a caller with no packet) reads as empty strings.
    assert (Startup(b"").user, Startup(b"").application_name) == ("", "")


def test_the_setting_names_a_registered_rule_and_priority_is_the_default():
    assert load_config({"AMBASSADOR_UPSTREAMS": "db:5432"}).route == "priority"
    assert route_function("priority") is priority
    with pytest.raises(ConfigError, match=r"AMBASSADOR_ROUTE='nearest'.*one of priority"):
        load_config({"AMBASSADOR_UPSTREAMS": "db:5432", "AMBASSADOR_ROUTE": "nearest"})
    with pytest.raises(ValueError, match="unknown route 'nearest'"):
        route_function("nearest")
    assert "priority" in ROUTES


def test_the_default_rule_keeps_the_pools_order_for_every_client():
    pool = _pool("a:1,b:2,c:3", AMBASSADOR_HEALTH_USER="health")
    a, b, c = pool.upstreams
    a.healthy, a.in_recovery = True, True
    b.healthy, b.in_recovery = True, False
    c.healthy = False
    for params in ({}, {"user": "ann", "application_name": "reports-readonly"}):
        startup = Startup(pgwire.startup_message(params) if params else b"")
        assert list(pool.routed(startup)) == pool.candidates() == [b, a]


def test_the_pool_tries_upstreams_in_the_order_the_rule_returns():
    async def scenario() -> None:
        async def accept(reader, writer) -> None:
            writer.close()

        first = await asyncio.start_server(accept, "127.0.0.1", 0)
        second = await asyncio.start_server(accept, "127.0.0.1", 0)
        ports = [s.sockets[0].getsockname()[1] for s in (first, second)]
        pool = _pool(",".join(f"127.0.0.1:{port}" for port in ports))
        for upstream in pool.upstreams:
            upstream.healthy = True
        seen: list[tuple[str, list[Upstream]]] = []

        def last_first(startup: Startup, candidates: Sequence[Upstream]) -> list[Upstream]:
            seen.append((startup.user, list(candidates)))
            return list(reversed(candidates))

        pool.route = last_first
        async with first, second:
            upstream, _reader, writer = await pool.connect(pgwire.startup_message({"user": "ann"}))
            writer.close()
        assert upstream.port == ports[1]
        assert seen == [("ann", pool.upstreams)]

    asyncio.run(scenario())


def test_a_rule_that_chooses_nothing_refuses_the_session_and_says_why():
    pool = _pool("a:1,b:2")
    for upstream in pool.upstreams:
        upstream.healthy = True
    pool.route = lambda _startup, _candidates: []
    with pytest.raises(NoUpstream) as refused:
        pool.routed(Startup(b""))
    assert str(refused.value) == (
        "db-ambassador: AMBASSADOR_ROUTE=priority sends this session to none of the healthy"
        " upstreams: a:1 (unknown), b:2 (unknown)"
    )
    # No healthy upstream at all is the usual refusal, before any rule runs.
    for upstream in pool.upstreams:
        upstream.healthy = False
    with pytest.raises(NoUpstream, match="no healthy upstream"):
        pool.routed(Startup(b""))


def test_a_rule_that_raises_is_logged_and_the_session_goes_in_the_pools_order(caplog):
    pool = _pool("a:1,b:2")
    for upstream in pool.upstreams:
        upstream.healthy = True

    def broken(startup: Startup, candidates: Sequence[Upstream]) -> list[Upstream]:
        raise KeyError(startup.application_name)

    pool.route = broken
    with caplog.at_level(logging.ERROR, "patterns.ambassador.db_ambassador.pool"):
        assert list(pool.routed(Startup(b""))) == pool.upstreams
    [record] = caplog.records
    assert record.getMessage() == "routing rule failed"
    assert record.exc_info is not None and record.exc_info[0] is KeyError
