"""cert-renewer's schedule (when to renew, how long to back off) and settings, in-process."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from patterns.common.config import ConfigError
from patterns.security import pki
from patterns.security.cert_renewer.config import Config, load_config
from patterns.security.cert_renewer.renewer import MIN_WAIT, backoff, renew_at


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "ca.crt").write_text("x")
    (tmp_path / "token").write_text("t")
    return {"RENEWER_CA_BUNDLE": str(tmp_path / "ca.crt"),
            "RENEWER_TOKEN_FILE": str(tmp_path / "token")}


@pytest.fixture
def config(files: dict[str, str]) -> Config:
    return load_config(files)


def test_defaults(config: Config) -> None:
    assert (config.issuer_host, config.issuer_port) == ("cert-issuer", 8444)
    assert config.admin_port == 9107
    assert config.dns_names == ("localhost",)
    assert config.cert_dir == Path("/etc/tls")
    assert config.lifetime_seconds == 21600 and config.renew_fraction == 0.5
    assert config.expiry_margin_seconds == pytest.approx(2160)
    assert not config.key_group_readable


def test_config_errors(files: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({**files, "RENEWER_ISSUER_URL": "http://cert-issuer:8444",
                     "RENEWER_LIFETIME_SECONDS": "10", "RENEWER_EXPIRY_MARGIN_SECONDS": "10",
                     "RENEWER_RETRY_MIN_SECONDS": "5", "RENEWER_RETRY_MAX_SECONDS": "1",
                     "RENEWER_CA_BUNDLE": "/nonexistent/ca.crt",
                     "RENEWER_DNS_NAMES": "localhost,bad name,ok.example,b\u00e4d.example"})
    message = str(caught.value)
    assert "RENEWER_ISSUER_URL='http://cert-issuer:8444': expected https://" in message
    assert "RENEWER_EXPIRY_MARGIN_SECONDS must be less than" in message
    assert "RENEWER_RETRY_MAX_SECONDS must be at least" in message
    assert "RENEWER_CA_BUNDLE='/nonexistent/ca.crt': no such file" in message
    assert "RENEWER_DNS_NAMES item 'bad name': expected a DNS name" in message
    assert "RENEWER_DNS_NAMES item 'b\u00e4d.example'" in message
    assert "'ok.example'" not in message


def _info(issued: datetime, lifetime: float) -> pki.CertInfo:
    return pki.CertInfo("ab", issued - timedelta(seconds=60),
                        issued + timedelta(seconds=lifetime), ("localhost",))


def test_renews_at_the_fraction_of_the_lifetime_not_counting_the_skew(config: Config) -> None:
    issued = datetime(2026, 1, 1, tzinfo=UTC)
    config = replace(config, lifetime_seconds=100, expiry_margin_seconds=10)
    assert renew_at(_info(issued, 100), config) == issued + timedelta(seconds=50)
    late = replace(config, renew_fraction=0.95)  # but never inside the expiry margin
    assert renew_at(_info(issued, 100), late) == issued + timedelta(seconds=90)


def test_backoff_is_full_jitter_capped_and_never_past_expiry(config: Config) -> None:
    random.seed(7)
    config = replace(config, retry_min_seconds=1, retry_max_seconds=30)
    for attempt, cap in [(0, 1), (1, 2), (3, 8), (10, 30), (500, 30)]:
        waits = [backoff(attempt, config, None) for _ in range(2000)]
        assert max(waits) <= cap and min(waits) >= MIN_WAIT
        assert max(waits) > cap * 0.9 and min(waits) < cap * 0.1  # spread over [0, cap]
    # With 4 s of certificate left, no wait goes past half of it.
    assert max(backoff(10, config, 4.0) for _ in range(2000)) <= 2.0
