"""tls-proxy's run(config, runtime): the admin server's checks and routes, the workers
beyond the first (workers.py), then this process as worker 0 (server.py) until SIGTERM
has drained it. Only this first process imports it, so only it serves the admin port and
imports prometheus_client (metrics.py): the other workers (worker.py) run server.py alone."""

from __future__ import annotations

import logging
from collections.abc import Callable

from patterns.common.admin import json_response
from patterns.common.service import Runtime

from .certs import CertStore
from .config import Config
from .counters import SharedCounters
from .metrics import register
from .server import run_worker
from .workers import Workers

log = logging.getLogger(__name__)


def run(config: Config, runtime: Runtime) -> None:
    counters = SharedCounters(config.workers)
    certs = CertStore(config.cert_dir, config.client_ca_file)
    workers = Workers(config, counters)
    register(runtime.registry, counters, certs.certificate)
    row = counters.row(0)

    def ready() -> tuple[bool, str]:
        ok, detail = certs.ready()
        if not ok:
            return ok, detail
        return workers.ready()

    runtime.admin.readiness.append(ready)
    runtime.admin.liveness.append(workers.alive)
    runtime.admin.route("/api/certificate", lambda _query: _certificate_view(certs))
    runtime.admin.open_probes()

    def stop_hook(wake: Callable[[], None]) -> None:
        runtime.on_stop.append(wake)
        if runtime.stopping.is_set():
            wake()

    log.info("listening", extra={
        "listen": f"{config.listen_host}:{config.listen_port}",
        "upstream": f"{config.upstream_host}:{config.upstream_port}",
        "cert_dir": str(config.cert_dir), "workers": config.workers,
        "mutual_tls": config.client_ca_file is not None})  # fmt: skip
    workers.start()
    try:
        run_worker(config, counters, 0, stop_hook, tick=workers.check, certs=certs)
    finally:
        workers.stop()
        row.set("alive", 0)


def _certificate_view(certs: CertStore) -> tuple[int, str, bytes]:
    certificate = certs.certificate()
    if certificate is None:
        return json_response({"error": "no certificate loaded yet"}, 503)
    view = certificate.view()
    view["serving"] = certs.context() is not None
    return json_response(view)
