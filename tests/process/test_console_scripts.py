"""Every console script, started as a user starts it (the venv's script), with one broken
setting of each kind it has: a bad number, a directory it cannot write, a required setting
left out. Each stops at start with exit 2 and exactly one line on stderr that names the
variable, and no traceback anywhere: the one entry path (patterns/common/service.py's
main_for) turns every configuration error into that line.

A new console script gets a row in CASES (its valid settings and what breaks them).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port

SCRIPTS: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
    "scripts"
]
BIN = Path(sys.executable).parent

Settings = Callable[[Path], dict[str, str]]


@dataclass(frozen=True)
class Case:
    """A console script's valid settings (free ports, directories under tmp_path) and,
    for each kind of breakage it can have, the variable that breaks it."""

    valid: Settings
    bad_number: str  # set to "not-a-number"
    unwritable_dir: str | None = None  # set to a path beneath a regular file
    required: str | None = None  # left out
    args: tuple[str, ...] = field(default=())


def _loopback(prefix: str) -> dict[str, str]:
    return {f"{prefix}_HOST": "127.0.0.1", f"{prefix}_PORT": str(free_port())}


def _issuer(tmp: Path) -> dict[str, str]:
    (tmp / "token").write_text("a bootstrap token\n")
    return {"ISSUER_CA_DIR": f"{tmp}/ca", "ISSUER_TOKEN_FILE": f"{tmp}/token",
            "ISSUER_LISTEN": f"127.0.0.1:{free_port()}", **_loopback("ISSUER_HTTP")}


def _renewer(tmp: Path) -> dict[str, str]:
    (tmp / "token").write_text("a bootstrap token\n")
    (tmp / "ca.crt").write_text("read when the renewer connects, not at start\n")
    return {"RENEWER_CERT_DIR": f"{tmp}/tls", "RENEWER_CA_BUNDLE": f"{tmp}/ca.crt",
            "RENEWER_TOKEN_FILE": f"{tmp}/token", **_loopback("RENEWER_HTTP")}


CASES: dict[str, Case] = {
    "log-shipper": Case(
        lambda tmp: {"SHIPPER_PATHS": f"{tmp}/*.log", "SHIPPER_STATE_DIR": f"{tmp}/state",
                     "SHIPPER_HTTP_HOST": "127.0.0.1", "SHIPPER_HTTP_PORT": str(free_port()),
                     "FLUENT_PORT": str(free_port())},
        bad_number="SHIPPER_POLL_SECONDS", unwritable_dir="SHIPPER_STATE_DIR",
        required="SHIPPER_PATHS",
    ),
    "log-collector": Case(
        lambda tmp: {"COLLECTOR_DATA_DIR": f"{tmp}/data", "COLLECTOR_HTTP_HOST": "127.0.0.1",
                     "COLLECTOR_HTTP_PORT": str(free_port()),
                     **_loopback("COLLECTOR_FORWARD")},
        bad_number="COLLECTOR_MAX_CONNECTIONS", unwritable_dir="COLLECTOR_DATA_DIR",
    ),
    "web-app": Case(
        lambda tmp: {"WEB_APP_LOG_DIR": f"{tmp}/logs", **_loopback("WEB_APP")},
        bad_number="WEB_APP_THREADS", unwritable_dir="WEB_APP_LOG_DIR",
    ),
    "log-adapter": Case(
        lambda tmp: {"ADAPTER_INPUTS": f"combined={tmp}/access.log",
                     "ADAPTER_STATE_DIR": f"{tmp}/state", "ADAPTER_HTTP_HOST": "127.0.0.1",
                     "ADAPTER_HTTP_PORT": str(free_port())},
        bad_number="ADAPTER_POLL_SECONDS", unwritable_dir="ADAPTER_STATE_DIR",
        required="ADAPTER_INPUTS",
    ),
    "legacy-app": Case(
        lambda tmp: {"LEGACY_APP_LOG_DIR": f"{tmp}/logs", **_loopback("LEGACY_APP")},
        bad_number="LEGACY_APP_THREADS", unwritable_dir="LEGACY_APP_LOG_DIR",
    ),
    "db-ambassador": Case(
        lambda tmp: {"AMBASSADOR_UPSTREAMS": f"127.0.0.1:{free_port()}",
                     "AMBASSADOR_LISTEN": f"127.0.0.1:{free_port()}",
                     "AMBASSADOR_HTTP_HOST": "127.0.0.1",
                     "AMBASSADOR_HTTP_PORT": str(free_port())},
        bad_number="AMBASSADOR_HEALTH_POLL_SECONDS", required="AMBASSADOR_UPSTREAMS",
    ),
    "notes-app": Case(
        lambda tmp: {"DATABASE_URL": f"postgresql://notes@127.0.0.1:{free_port()}/notes",
                     **_loopback("NOTES_APP")},
        bad_number="NOTES_APP_POOL_SIZE",
    ),
    "whoami-app": Case(
        lambda tmp: _loopback("WHOAMI_APP"),
        bad_number="WHOAMI_APP_THREADS",
    ),
    "cert-issuer": Case(_issuer, bad_number="ISSUER_MAX_LIFETIME_SECONDS",
                        unwritable_dir="ISSUER_CA_DIR"),
    "cert-renewer": Case(_renewer, bad_number="RENEWER_LIFETIME_SECONDS",
                         unwritable_dir="RENEWER_CERT_DIR"),
    "tls-proxy": Case(
        lambda tmp: {"PROXY_CERT_DIR": f"{tmp}/tls", "PROXY_LISTEN": f"127.0.0.1:{free_port()}",
                     "PROXY_UPSTREAM": f"127.0.0.1:{free_port()}", **_loopback("PROXY_HTTP")},
        bad_number="PROXY_WORKERS",
    ),
}

# A script of pyproject.toml without a row yet (none now): it stays out of the test below
# until it has one, and is named here so that leaving it out is a decision.
PENDING: set[str] = set()


# Settings of the services under test: none comes from the environment the tests run in.
PREFIXES = ("SHIPPER_", "FLUENT_", "COLLECTOR_", "ADAPTER_", "WEB_APP_", "LEGACY_APP_",
            "AMBASSADOR_", "NOTES_APP_", "WHOAMI_APP_", "ISSUER_", "RENEWER_", "PROXY_")


def broken(case: Case, kind: str, tmp_path: Path) -> tuple[str, dict[str, str]]:
    """(the variable named, the environment with it broken)."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(PREFIXES)}
    env.pop("LOG_LEVEL", None)
    env.update(case.valid(tmp_path))
    if kind == "bad number":
        env[case.bad_number] = "not-a-number"
        return case.bad_number, env
    if kind == "unwritable directory":
        assert case.unwritable_dir is not None
        (tmp_path / "a-file").write_text("")
        env[case.unwritable_dir] = str(tmp_path / "a-file" / "dir")
        return case.unwritable_dir, env
    assert case.required is not None
    env.pop(case.required, None)
    return case.required, env


def params() -> list[object]:
    found: list[object] = []
    for script, case in CASES.items():
        kinds = ["bad number"]
        kinds += ["unwritable directory"] if case.unwritable_dir else []
        kinds += ["missing required"] if case.required else []
        found += [pytest.param(script, kind, id=f"{script}-{kind.replace(' ', '-')}")
                  for kind in kinds]
    return found


def test_every_console_script_has_a_row():
    assert set(SCRIPTS) - PENDING == set(CASES)


@pytest.mark.parametrize(("script", "kind"), params())
def test_a_broken_setting_stops_the_script_with_one_line_naming_it(
    script: str, kind: str, tmp_path: Path
) -> None:
    case = CASES[script]
    variable, env = broken(case, kind, tmp_path)
    result = subprocess.run([str(BIN / script), *case.args], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=60, check=False)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    prefix = f"{script}: configuration error: "
    assert lines[0].startswith(prefix), lines[0]
    # The only problem named is the one made: the row's other settings are valid.
    problems = lines[0].removeprefix(prefix).split("; ")
    assert len(problems) == 1 and problems[0].startswith(variable), lines[0]
    assert result.returncode == 2, output
