"""The security lab's shared PKI helpers and the atomic certificate directory."""

from __future__ import annotations

import os
import stat
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509

from patterns.security import certdir, pki


def _pair(ca_key, ca_cert, lifetime=timedelta(hours=1)):
    key = pki.generate_key()
    csr = x509.load_pem_x509_csr(pki.build_csr(key, ["localhost", "127.0.0.1"]))
    cert = pki.issue(ca_key, ca_cert, csr.public_key(), pki.csr_names(csr), lifetime)
    return key, cert


def test_issued_certificate_has_the_names_validity_and_chain() -> None:
    ca_key, ca_cert = pki.create_ca()
    key, cert = _pair(ca_key, ca_cert, timedelta(seconds=30))
    cert.verify_directly_issued_by(ca_cert)
    info = pki.CertInfo.of(cert)
    assert info.dns_names == ("localhost", "127.0.0.1")
    assert info.serial == format(cert.serial_number, "x") and info.serial == info.serial.lower()
    assert cert.serial_number.bit_length() == 159
    assert (info.not_after - info.not_before) == timedelta(seconds=90)  # 60 s of skew
    assert pki.key_matches_cert(key, cert)
    assert not pki.key_matches_cert(pki.generate_key(), cert)
    assert info.to_json()["not_after"].endswith("Z")


def _write(cert_dir: Path, ca_key, ca_cert, **kwargs) -> tuple[certdir.Generation, str]:
    key, cert = _pair(ca_key, ca_cert)
    serial = pki.serial_hex(cert.serial_number)
    generation = certdir.write_generation(
        cert_dir, pki.key_to_pem(key), pki.cert_to_pem(cert) + pki.cert_to_pem(ca_cert),
        pki.cert_to_pem(ca_cert), serial, **kwargs,
    )
    return generation, serial


def test_generation_layout_modes_and_cleanup(tmp_path: Path) -> None:
    ca_key, ca_cert = pki.create_ca()
    old = os.umask(0)  # the key's mode must not depend on the umask
    try:
        first, _ = _write(tmp_path, ca_key, ca_cert)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(first.key_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(first.cert_path).st_mode) == 0o644
    for name in ("tls.key", "tls.crt", "ca.crt"):
        assert os.readlink(tmp_path / name) == f"..data/{name}"
    second, serial = _write(tmp_path, ca_key, ca_cert, key_group_readable=True)
    assert stat.S_IMODE(os.stat(second.key_path).st_mode) == 0o640
    assert first.directory.is_dir()  # the previous generation stays until the next switch
    third, serial = _write(tmp_path, ca_key, ca_cert)
    assert not first.directory.exists() and second.directory.exists()
    current = certdir.read_generation(tmp_path)
    assert current == third and current.name.endswith(serial)
    key_path, cert_path, ca_path = current
    assert ca_path.read_bytes() == pki.cert_to_pem(ca_cert)
    assert pki.CertInfo.from_pem(cert_path.read_bytes()).serial == serial
    assert pki.key_matches_cert(pki.load_key(key_path.read_bytes()),
                                pki.load_cert(cert_path.read_bytes()))


def test_no_generation_and_foreign_links(tmp_path: Path) -> None:
    with pytest.raises(certdir.NoGeneration):
        certdir.read_generation(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    os.symlink("elsewhere", tmp_path / "..data")
    with pytest.raises(certdir.NoGeneration):  # a link out of the generations is not followed
        certdir.read_generation(tmp_path)
    os.unlink(tmp_path / "..data")
    os.symlink("/etc", tmp_path / "..data")
    assert certdir.current_name(tmp_path) is None


def test_reader_never_sees_a_key_of_one_generation_with_another_certificate(
    tmp_path: Path,
) -> None:
    ca_key, ca_cert = pki.create_ca()
    pairs = [_pair(ca_key, ca_cert) for _ in range(4)]
    _write(tmp_path, ca_key, ca_cert)
    stop = threading.Event()
    checked = mismatched = 0
    errors: list[str] = []

    def read() -> None:
        nonlocal checked, mismatched
        while not stop.is_set():
            try:
                key_pem, cert_pem, _ca = certdir.read_generation(tmp_path).read()
            except OSError:
                continue  # resolved, then removed after two switches: read again
            except Exception as exc:  # NoGeneration while one exists is a failure too
                errors.append(repr(exc))
                continue
            if not pki.key_matches_cert(pki.load_key(key_pem), pki.load_cert(cert_pem)):
                mismatched += 1
            checked += 1

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(200):
            key, cert = pairs[i % len(pairs)]
            certdir.write_generation(
                tmp_path, pki.key_to_pem(key), pki.cert_to_pem(cert), pki.cert_to_pem(ca_cert),
                pki.serial_hex(cert.serial_number),
            )
    finally:
        stop.set()
        reader.join()
    assert errors == []
    assert checked > 0 and mismatched == 0
    assert len([e for e in os.listdir(tmp_path) if e.startswith("..2")]) == 2


def test_a_failed_switch_leaves_no_generation_behind(tmp_path: Path) -> None:
    """Something that is not a link in the way of ..data: each attempt fails, counted by
    the renewer, and no attempt's directory piles up on the memory-backed volume."""
    ca_key, ca_cert = pki.create_ca()
    (tmp_path / "..data").mkdir()
    (tmp_path / "..data" / "x").write_text("in the way")
    for _ in range(3):
        with pytest.raises(OSError):
            _write(tmp_path, ca_key, ca_cert)
    assert sorted(os.listdir(tmp_path)) == ["..data", ".data_tmp"]
