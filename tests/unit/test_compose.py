"""docker-compose.yml publishes the demos' ports on this machine's loopback only, unless
the user asks for another address with PODPATTERNS_PUBLISH_ADDRESS: the collector's
Forward port takes records from anyone who reaches it, and the admin ports show metrics
and file lists, so a laptop on a shared network must not offer them to its neighbours.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"
VARIABLE = "PODPATTERNS_PUBLISH_ADDRESS"
# "${PODPATTERNS_PUBLISH_ADDRESS:-127.0.0.1}:8080:8080": the one form every port must have.
PUBLISHED = re.compile(
    r"^\$\{" + VARIABLE + r":-(?P<default>[^}]*)\}:(?P<host>\d+):(?P<container>\d+)$"
)


def published_ports() -> list[Any]:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    return [pytest.param(name, entry, id=f"{name}:{entry}")
            for name, service in services.items() for entry in service.get("ports", [])]


def test_the_demos_publish_ports() -> None:
    assert len(published_ports()) >= 8  # app, admin and collector ports of three patterns


@pytest.mark.parametrize(("service", "entry"), published_ports())
def test_every_published_port_binds_the_loopback_by_default(service: str, entry: Any) -> None:
    # The short syntax as a string: the long syntax or a bare "8080:8080" would bind every
    # interface (docker publishes on 0.0.0.0 when no address is given).
    assert isinstance(entry, str), f"{service}: use the short syntax with the address"
    match = PUBLISHED.match(entry)
    assert match, f"{service}: {entry!r} does not start with ${{{VARIABLE}:-127.0.0.1}}:"
    assert match["default"] == "127.0.0.1", f"{service}: {entry!r}"


def compose_config(env: dict[str, str]) -> dict[str, Any]:
    """`docker-compose config` (1.29, the oldest Compose the suite supports) of every profile."""
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("needs docker-compose: apt-get install docker-compose")
    result = subprocess.run(
        [tool, "-f", str(COMPOSE), "--profile", "sidecar", "--profile", "adapter",
         "--profile", "ambassador", "config"],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "IMAGE_TAG": "t", **env},
        cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr
    return dict(yaml.safe_load(result.stdout))


def host_addresses(config: dict[str, Any]) -> set[str]:
    addresses = set()
    for service in config["services"].values():
        for port in service.get("ports", []):
            addresses.add(str(port).rsplit(":", 2)[0] if isinstance(port, str)
                          else port.get("host_ip", ""))
    return addresses


def test_compose_resolves_the_default_and_the_users_choice() -> None:
    assert host_addresses(compose_config({})) == {"127.0.0.1"}
    assert host_addresses(compose_config({VARIABLE: "0.0.0.0"})) == {"0.0.0.0"}
