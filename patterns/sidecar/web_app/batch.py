"""`web-app batch`: write N access-log lines to the same rotating file, then exit.

It is the main container of the sidecar Job: it finishes while its native sidecar is still
running, and Kubernetes then stops the sidecar, which must ship every line before it exits.
"""

from __future__ import annotations

import logging
import signal
import time

from patterns.common.service import Runtime
from patterns.sidecar.web_app.access_log import AccessLog, Request
from patterns.sidecar.web_app.config import Config

log = logging.getLogger(__name__)

# Lines per write() call: small enough that pacing stays smooth and SIGTERM is prompt.
_CHUNK = 100


def run_batch(config: Config, runtime: Runtime, lines: int, rate: float) -> int:
    """Write `lines` lines at about `rate` lines per second (0: as fast as possible) until
    `runtime.stopping` (SIGTERM). Returns the exit code: 0 when all were written."""
    stopping = runtime.stopping
    access_log = AccessLog(
        config.access_log_path, config.log_max_bytes, config.log_backups, runtime.registry
    )
    started = time.monotonic()
    written = 0
    first_seq = access_log.sequence + 1
    try:
        while written < lines and not stopping.is_set():
            chunk = min(_CHUNK, lines - written)
            first, last = access_log.write(
                Request(
                    remote="127.0.0.1",
                    method="POST",
                    target=f"/batch/item/{i}",
                    protocol="HTTP/1.1",
                    status=201,
                    size=0,
                    referer="-",
                    user_agent="web-app-batch",
                )
                for i in range(written + 1, written + chunk + 1)
            )
            if last - first + 1 != chunk:
                log.error("batch could not write its lines", extra={"written": written})
                return 1
            written += chunk
            if rate > 0:
                # Sleep until this many lines are due: the pace holds over the whole run.
                delay = started + written / rate - time.monotonic()
                if delay > 0:
                    stopping.wait(delay)
    finally:
        access_log.close()
    log.info(
        "batch finished",
        extra={
            "lines": written,
            "first_seq": first_seq,
            "last_seq": access_log.sequence,
            "rotations": access_log.rotation_count,
            "seconds": round(time.monotonic() - started, 3),
        },
    )
    return 0 if written == lines else 128 + signal.SIGTERM
