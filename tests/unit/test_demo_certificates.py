"""The ambassador demo's certificates (.demo/ambassador/pki, kept across runs and by
`make demo-clean`) last 30 days: a demo that finds them missing, unreadable or within
RENEW_WITHIN_DAYS of expiring makes new ones, and says why; otherwise it keeps them.
Before, they were made only when server.crt was missing: a month later verify-full failed
and notes-app never became ready, on every runtime."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from demo import ambassador
from tests import pg
from tests.conftest import require_tool


@pytest.fixture
def secrets_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The demo's secrets in tmp_path; returns what the demo says."""
    require_tool("openssl", "apt-get install openssl")
    said: list[str] = []
    monkeypatch.setattr(ambassador, "SECRETS", tmp_path / "ambassador")
    monkeypatch.setattr(ambassador, "say", said.append)
    return said


def expires_within(cert: Path, days: int) -> bool:
    check = subprocess.run(["openssl", "x509", "-noout", "-in", str(cert),
                            "-checkend", str(days * 86400)], capture_output=True)
    return check.returncode != 0


def reissue_for(cert: Path, key: Path, days: int) -> None:
    """Replace `cert` by a self-signed one for `key` that expires in `days` days."""
    subprocess.run(["openssl", "req", "-x509", "-key", str(key), "-out", str(cert),
                    "-days", str(days), "-subj", "/CN=localhost"], check=True,
                   capture_output=True)


def test_a_first_run_makes_them(secrets_dir: list[str]) -> None:
    made = ambassador.prepare_secrets()
    assert not made.renewed  # nothing was replaced
    assert made.pki.server_cert.exists() and made.pki.ca_cert.exists()
    assert any("generated a CA and the servers' certificate (no ca.crt yet)" in line
               for line in secrets_dir)


def test_certificates_far_from_expiry_are_kept(secrets_dir: list[str]) -> None:
    first = ambassador.prepare_secrets()
    before = first.pki.server_cert.read_bytes(), first.pki.ca_cert.read_bytes()
    secrets_dir.clear()
    again = ambassador.prepare_secrets()
    assert not again.renewed
    assert (again.pki.server_cert.read_bytes(), again.pki.ca_cert.read_bytes()) == before
    assert not [line for line in secrets_dir if "generated" in line]


@pytest.mark.parametrize("which", ["server.crt", "ca.crt"])
def test_a_certificate_about_to_expire_is_renewed_ahead_of_it(
        secrets_dir: list[str], which: str) -> None:
    first = ambassador.prepare_secrets()
    pki_dir = first.pki.server_cert.parent
    key = pki_dir / ("server.key" if which == "server.crt" else "ca.key")
    reissue_for(pki_dir / which, key, days=ambassador.RENEW_WITHIN_DAYS - 1)
    password = first.password
    secrets_dir.clear()

    renewed = ambassador.prepare_secrets()
    assert renewed.renewed
    assert renewed.password == password  # the databases' password stays
    for cert in (renewed.pki.server_cert, renewed.pki.ca_cert):
        assert not expires_within(cert, ambassador.RENEW_WITHIN_DAYS)
    assert any(f"({which} expires within {ambassador.RENEW_WITHIN_DAYS} days)" in line
               for line in secrets_dir)
    # The new certificate is the new CA's, for every name a server is reached by.
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(renewed.pki.ca_cert),
                             str(renewed.pki.server_cert)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_an_unreadable_certificate_is_made_again(secrets_dir: list[str]) -> None:
    first = ambassador.prepare_secrets()
    first.pki.server_cert.write_text("not a certificate\n")
    again = ambassador.prepare_secrets()
    assert again.renewed
    assert not expires_within(again.pki.server_cert, ambassador.RENEW_WITHIN_DAYS)


def test_the_demo_certificates_outlast_the_renewal_window(tmp_path: Path) -> None:
    """make_pki's certificates must outlast RENEW_WITHIN_DAYS, else every run renews."""
    require_tool("openssl", "apt-get install openssl")
    pki = pg.make_pki(tmp_path, ["localhost"])
    assert not expires_within(pki.server_cert, ambassador.RENEW_WITHIN_DAYS + 1)


class Stop(Exception):
    pass


def test_renewed_certificates_roll_the_pods_on_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL copies its certificate into PGDATA when it initialises it, and the
    ambassador reads the CA when it starts: on kind, whose pods outlive a demo run, renewed
    Secrets need new pods (on Compose and podman a run starts from new containers)."""
    asked: list[bool] = []

    def kind_up(_pattern: str, _namespaces: list[str], restart: bool = False) -> str:
        asked.append(restart)
        raise Stop

    monkeypatch.setattr(ambassador.containers, "kind_teardown_on_abort", lambda _pattern: None)
    monkeypatch.setattr(ambassador.containers, "kind_up", kind_up)
    for renewed in (True, False):
        monkeypatch.setattr(ambassador, "create_k8s_secrets", lambda renewed=renewed: renewed)
        with pytest.raises(Stop):
            ambassador.run_kind()
    assert asked == [True, False]
