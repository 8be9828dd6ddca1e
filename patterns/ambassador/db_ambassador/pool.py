"""The upstream pool: the upstreams in priority order, their health and roles, which one
new sessions go to (failover, and the routing rule AMBASSADOR_ROUTE names: `routes/`),
and opening a connection to it.

The pool knows nothing of clients. It tells the server, through `on_failed`, when an
upstream that still carries sessions fails its check; the server closes them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry

from .config import Config
from .metrics import PoolMetrics
from .routes import Startup, route_function
from .upstream import Upstream, UpstreamError, check, describe, open_upstream, tls_context

log = logging.getLogger(__name__)


class NoUpstream(Exception):
    """No upstream can take a session now; the text says why, for the client."""


class UpstreamPool:
    def __init__(
        self,
        config: Config,
        registry: CollectorRegistry,
        on_failed: Callable[[Upstream], None],
    ) -> None:
        self.config = config
        self.upstreams = [Upstream(host, port) for host, port in config.upstreams]
        self.tls = tls_context(config)
        self.on_failed = on_failed
        self.metrics = PoolMetrics(registry, self.upstreams)
        self.route = route_function(config.route)
        # Where new sessions go first: the head of candidates() at the last check round.
        self.preferred: Upstream | None = None

    # --- state shown to operators ---------------------------------------------------

    def ready(self) -> tuple[bool, str]:
        if not any(u.healthy for u in self.upstreams):
            return False, "no healthy upstream: " + "; ".join(
                f"{u.name}: {u.last_error}" for u in self.upstreams
            )
        return True, "ok"

    def view(self) -> dict[str, object]:
        preferred = self.preferred
        return {
            "tls_mode": self.config.tls_mode,
            "role_checks": self.config.checks_role,
            "active_upstream": preferred.name if preferred else None,
        }

    def unreachable_message(self) -> str:
        return "db-ambassador: no healthy upstream: " + "; ".join(
            f"{u.name}: {u.last_error or 'unhealthy'}" for u in self.upstreams
        )

    # --- routing --------------------------------------------------------------------

    def candidates(self) -> list[Upstream]:
        """Healthy upstreams in the order new sessions try them: priority order, and with
        role checks writable primaries first (a standby still serves reads if no primary
        is left)."""
        healthy = [u for u in self.upstreams if u.healthy]
        if not self.config.checks_role:
            return healthy
        return [u for u in healthy if u.in_recovery is False] + [
            u for u in healthy if u.in_recovery is not False
        ]

    def routed(self, startup: Startup) -> Sequence[Upstream]:
        """The upstreams a session that sent `startup` may go to, in the order to try
        them: what the routing rule makes of candidates(). A rule that raises is a bug in
        it, not the client's: logged, and the session goes where `priority` sends it."""
        candidates = self.candidates()
        if not candidates:
            raise NoUpstream(self.unreachable_message())
        try:
            chosen = self.route(startup, candidates)
        except Exception:
            log.exception("routing rule failed", extra={"route": self.config.route})
            return candidates
        if not chosen:
            raise NoUpstream(
                f"db-ambassador: AMBASSADOR_ROUTE={self.config.route} sends this session to "
                "none of the healthy upstreams: "
                + ", ".join(f"{u.name} ({u.role})" for u in candidates)
            )
        return chosen

    async def connect(
        self, packet: bytes = b""
    ) -> tuple[Upstream, asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to the first upstream the routing rule chooses for the client's
        startup `packet` that answers within AMBASSADOR_CONNECT_TIMEOUT, ready for that
        packet; NoUpstream if none does."""
        candidates = self.routed(Startup(packet))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.connect_timeout
        errors = []
        for index, upstream in enumerate(candidates):
            # Each gets an equal share of the time left: one that says nothing (a host
            # gone, a hung server) until the health checks notice cannot use up the
            # client's whole wait, and a refusal leaves its share to the next.
            share = (deadline - loop.time()) / (len(candidates) - index)
            try:
                async with asyncio.timeout(share):
                    reader, writer = await open_upstream(upstream, self.tls)
                return upstream, reader, writer
            except TimeoutError:
                errors.append(f"{upstream.name}: no answer within {share:.1f}s")
            except (OSError, EOFError, UpstreamError) as exc:
                errors.append(f"{upstream.name}: {describe(exc)}")
        raise NoUpstream(
            "db-ambassador: cannot reach any upstream within "
            f"AMBASSADOR_CONNECT_TIMEOUT={self.config.connect_timeout:g}s: " + "; ".join(errors)
        )

    async def send_cancel(self, upstream: Upstream, packet: bytes) -> bool:
        """Deliver a CancelRequest to `upstream`; False (logged) if it cannot be."""
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                reader, writer = await open_upstream(upstream, self.tls)
                try:
                    writer.write(packet)
                    await reader.read()  # the server closes once it has signalled the backend
                finally:
                    writer.transport.abort()
        except (OSError, EOFError, UpstreamError, TimeoutError) as exc:
            log.info(
                "cancel request not delivered",
                extra={"upstream": upstream.name, "error": describe(exc)},
            )
            return False
        log.debug("cancel request passed on", extra={"upstream": upstream.name})
        return True

    # --- health checks ---------------------------------------------------------------

    async def check_all(self) -> None:
        """One round of health checks, then failover if the preferred upstream changed."""
        was_healthy = {u.name: u.healthy for u in self.upstreams}
        had_error = {u.name: u.last_error for u in self.upstreams}
        await asyncio.gather(*(check(u, self.config, self.tls) for u in self.upstreams))
        for upstream in self.upstreams:
            result = "ok" if upstream.healthy else "failed"
            self.metrics.health_checks.labels(upstream=upstream.name, result=result).inc()
            if upstream.healthy != was_healthy[upstream.name]:
                if upstream.healthy:
                    log.info(
                        "upstream healthy", extra={"upstream": upstream.name, "role": upstream.role}
                    )
                else:
                    log.warning(
                        "upstream unhealthy",
                        extra={"upstream": upstream.name, "error": upstream.last_error},
                    )
            changed = upstream.last_error != had_error[upstream.name]
            if upstream.healthy and upstream.last_error and changed:
                log.warning(
                    "health login rejected: upstream is up, its role unknown",
                    extra={"upstream": upstream.name, "error": upstream.last_error},
                )
            if not upstream.healthy and upstream.sessions:
                self.on_failed(upstream)
        self._fail_over()

    def _fail_over(self) -> None:
        candidates = self.candidates()
        preferred = candidates[0] if candidates else None
        if preferred is self.preferred:
            return
        if self.preferred is not None and preferred is not None:
            self.metrics.failovers.inc()
            log.warning(
                "failover: new sessions go to another upstream",
                extra={"from": self.preferred.name, "to": preferred.name, "role": preferred.role},
            )
        elif preferred is None:
            log.error("no healthy upstream", extra={"detail": self.unreachable_message()})
        self.preferred = preferred

    async def check_forever(self) -> None:
        """A check round every AMBASSADOR_HEALTH_POLL_SECONDS (the first one is the caller's)."""
        while True:
            await asyncio.sleep(self.config.health_interval)
            await self.check_all()
