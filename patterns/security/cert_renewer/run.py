"""cert-renewer's run: the renewal loop, its checks and its view on the admin port."""

from __future__ import annotations

import logging

from patterns.common.service import Runtime

from .config import Config
from .renewer import Renewer

log = logging.getLogger(__name__)


def run(config: Config, runtime: Runtime) -> None:
    renewer = Renewer(config, runtime)
    runtime.admin.liveness.append(lambda: (True, "ok"))  # retrying is alive, not broken
    runtime.admin.readiness.append(renewer.ready)
    runtime.admin.route("/api/certificate", lambda _query: renewer.view())
    runtime.admin.open_probes()
    log.info("renewing", extra={
        "issuer": config.issuer_url, "dns_names": list(config.dns_names),
        "cert_dir": str(config.cert_dir), "lifetime_seconds": config.lifetime_seconds,
        "renew_fraction": config.renew_fraction,
    })
    renewer.run()
