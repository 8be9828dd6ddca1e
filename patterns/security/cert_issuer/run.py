"""cert-issuer's run: load (or create) the CA, then serve the API until stopped."""

from __future__ import annotations

import asyncio
import logging
import sys

from patterns.common.admin import json_response
from patterns.common.service import Runtime

from .ca import CAError, init_ca
from .config import Config
from .server import Issuer

log = logging.getLogger(__name__)


def _wake(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    loop.call_soon_threadsafe(stop.set)


def run(config: Config, runtime: Runtime) -> int:
    try:
        ca, created = init_ca(config.ca_dir)
    except (CAError, OSError) as exc:
        # Like a configuration error: one line naming the variable, exit 2.
        problem = str(exc) if isinstance(exc, CAError) else f"{config.ca_dir}: {exc.strerror}"
        print(f"cert-issuer: configuration error: ISSUER_CA_DIR={problem}", file=sys.stderr)
        log.error("CA directory unusable", extra={"error": problem})
        return 2
    if created:
        log.info("CA created", extra={"ca_dir": str(config.ca_dir), "ca_serial": ca.info.serial})
    issuer = Issuer(config, ca, runtime)
    runtime.admin.liveness.append(lambda: (True, "ok"))
    runtime.admin.readiness.append(
        lambda: (issuer.listening, "listening" if issuer.listening else "not listening yet")
    )
    runtime.admin.route("/api/ca", lambda _query: json_response(ca.info.to_json()))
    runtime.admin.open_probes()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        runtime.on_stop.append(lambda: _wake(loop, stop))
        if runtime.stopping.is_set():
            return
        await issuer.serve(stop)

    asyncio.run(main())
    return 0
