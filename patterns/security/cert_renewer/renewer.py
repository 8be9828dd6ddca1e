"""The renewal loop: install a certificate, renew it at a fraction of its lifetime, back off
with full jitter while the issuer is down or refuses, and say how things stand on the admin
port (/readyz, /metrics, /api/certificate)."""

from __future__ import annotations

import logging
import os
import random
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from patterns.common.admin import json_response
from patterns.common.metrics import counter_by
from patterns.common.service import Runtime
from patterns.security import certdir, pki

from .client import RenewalFailed, request_certificate
from .config import Config

log = logging.getLogger(__name__)

RESULTS = (
    "success", "issuer_unreachable", "refused", "issuer_error", "bad_certificate",
    "write_failed", "no_token",
)
# The shortest wait between two attempts, whatever the jitter draws.
MIN_WAIT = 0.05


@dataclass(frozen=True)
class Installed:
    info: pki.CertInfo
    generation: str
    renew_at: datetime


def renew_at(info: pki.CertInfo, config: Config) -> datetime:
    """When to renew: `renew_fraction` into the certificate's lifetime, and before the
    expiry margin starts (readiness would drop otherwise). The lifetime starts at its
    issue, notAfter - lifetime (notBefore is a minute earlier, for clock skew)."""
    start = max(info.not_before, info.not_after - timedelta(seconds=config.lifetime_seconds))
    at = start + (info.not_after - start) * config.renew_fraction
    return min(at, info.not_after - timedelta(seconds=config.expiry_margin_seconds))


def backoff(attempt: int, config: Config, seconds_left: float | None) -> float:
    """Full jitter: uniform in [0, min(max, min * 2^attempt)]; while a certificate is still
    valid, at most half the time it has left, so a retry always comes before it expires."""
    cap = min(config.retry_max_seconds, config.retry_min_seconds * 2 ** min(attempt, 60))
    wait = random.uniform(0, cap)
    if seconds_left is not None and seconds_left > 0:
        wait = min(wait, seconds_left / 2)
    return max(wait, MIN_WAIT)


class Renewer:
    def __init__(self, config: Config, runtime: Runtime) -> None:
        self.config = config
        self.runtime = runtime
        self.installed: Installed | None = None
        self.failures = 0  # consecutive failed attempts
        self.renewals = counter_by(
            "renewer_renewals",
            "Renewal attempts by result (success installs a new certificate).",
            "result", RESULTS, runtime.registry,
        )
        runtime.registry.register(_StateCollector(self))

    # --- what the admin port shows ----------------------------------------------------

    def ready(self) -> tuple[bool, str]:
        installed = self.installed
        if installed is None:
            return False, "no certificate installed yet"
        left = installed.info.seconds_left()
        if left <= self.config.expiry_margin_seconds:
            return False, (
                f"certificate {installed.info.serial} expires in {left:.1f}s "
                f"(margin {self.config.expiry_margin_seconds:g}s); renewal failing"
            )
        return True, "ok"

    def view(self) -> tuple[int, str, bytes]:
        installed = self.installed
        if installed is None:
            return json_response({"error": "no certificate installed yet"}, 503)
        return json_response({
            **installed.info.to_json(),
            "renew_at": pki.rfc3339(installed.renew_at),
            "generation": installed.generation,
        })

    # --- the loop -----------------------------------------------------------------------

    def adopt_existing(self) -> None:
        """Reuse the generation already in the cert dir if it is ours and still good: a
        restarted renewer does not need the issuer."""
        try:
            generation = certdir.read_generation(self.config.cert_dir)
            key_pem, chain_pem, _ca = generation.read()
            key, cert = pki.load_key(key_pem), pki.load_cert(chain_pem)
        except (certdir.NoGeneration, OSError, ValueError):
            return
        info = pki.CertInfo.of(cert)
        if not pki.key_matches_cert(key, cert):
            log.warning("installed key does not match its certificate; renewing",
                        extra={"generation": generation.name})
            return
        if set(info.dns_names) != set(self.config.dns_names):
            log.info("installed certificate is for other names; renewing",
                     extra={"dns_names": list(info.dns_names)})
            return
        if info.seconds_left() <= self.config.expiry_margin_seconds:
            return
        # The key's mode follows RENEWER_KEY_GROUP_READABLE even across a restart that
        # changed it.
        wanted = certdir.KEY_MODE_GROUP if self.config.key_group_readable else certdir.KEY_MODE
        try:
            if stat.S_IMODE(os.lstat(generation.key_path).st_mode) != wanted:
                os.chmod(generation.key_path, wanted)
        except OSError:
            return
        self._install(Installed(info, generation.name, renew_at(info, self.config)), "reused")

    def _install(self, installed: Installed, how: str) -> None:
        self.installed = installed
        log.info(
            f"certificate {how}",
            extra={
                "serial": installed.info.serial,
                "not_after": pki.rfc3339(installed.info.not_after),
                "renew_at": pki.rfc3339(installed.renew_at),
                "dns_names": list(installed.info.dns_names),
                "generation": installed.generation,
            },
        )

    def renew_once(self) -> RenewalFailed | None:
        """One attempt: request, check, write. None once the new generation is in place,
        else why not (counted here, logged by the caller with the wait before the next)."""
        try:
            signed = request_certificate(self.config)
            try:
                generation = certdir.write_generation(
                    self.config.cert_dir, signed.key_pem, signed.chain_pem, signed.ca_pem,
                    signed.info.serial, key_group_readable=self.config.key_group_readable,
                )
            except OSError as exc:
                raise RenewalFailed(
                    "write_failed", f"cannot write to {self.config.cert_dir}: {exc.strerror}"
                ) from None
        except RenewalFailed as failure:
            self.renewals.labels(result=failure.result).inc()
            self.failures += 1
            return failure
        except Exception as exc:  # a bug, or an answer nothing above foresaw: retried too
            log.exception("renewal attempt failed unexpectedly")
            self.renewals.labels(result="issuer_error").inc()
            self.failures += 1
            return RenewalFailed("issuer_error", f"unexpected {type(exc).__name__}")
        self.renewals.labels(result="success").inc()
        if self.failures:
            log.info("issuer reachable again", extra={"failed_attempts": self.failures})
        self.failures = 0
        self._install(
            Installed(signed.info, generation.name, renew_at(signed.info, self.config)),
            "installed",
        )
        return None

    def due(self) -> bool:
        installed = self.installed
        return installed is None or datetime.now(UTC) >= installed.renew_at

    def run(self) -> None:
        self.adopt_existing()
        stopping = self.runtime.stopping
        while not stopping.is_set():
            failure = self.renew_once() if self.due() else None
            if failure is not None:
                installed = self.installed
                left = installed.info.seconds_left() if installed else None
                wait = backoff(self.failures - 1, self.config, left)
                log.warning(
                    "renewal failed",
                    extra={
                        "result": failure.result,
                        "error": failure.error,
                        "attempt": self.failures,
                        "retry_in": round(wait, 3),
                        "current_serial": installed.info.serial if installed else None,
                        "current_expires_in": None if left is None else round(left, 3),
                    },
                )
                stopping.wait(wait)
                continue
            installed = self.installed
            if installed is not None:
                stopping.wait(max(0.0, (installed.renew_at - datetime.now(UTC)).total_seconds()))


class _StateCollector(Collector):
    """The installed certificate's state, read at scrape time."""

    def __init__(self, renewer: Renewer) -> None:
        self.renewer = renewer

    def collect(self) -> Iterator[GaugeMetricFamily]:
        installed = self.renewer.installed
        expiry = GaugeMetricFamily(
            "renewer_certificate_expiry_seconds",
            "Seconds until the installed certificate's notAfter (absent before the first).",
        )
        serial = GaugeMetricFamily(
            "renewer_certificate_serial_info",
            "The installed certificate's serial (lowercase hex), value 1.",
            labels=["serial"],
        )
        if installed is not None:
            expiry.add_metric([], installed.info.seconds_left())
            serial.add_metric([installed.info.serial], 1.0)
        failures = GaugeMetricFamily(
            "renewer_consecutive_failures", "Failed renewal attempts since the last success."
        )
        failures.add_metric([], self.renewer.failures)
        yield expiry
        yield serial
        yield failures
