"""The log-collector's manifest fits its pod: the defaults are the manifest's limits (so
the memory sums written next to them hold for both), retention keeps the data files under
the volume's sizeLimit, and the Forward shared key comes from the shippers' Secret.

(What every sidecar manifest shares is checked in test_sidecar_manifests.py; that the
memory sums hold under load, in tests/process/test_collector*.py.)
"""

from __future__ import annotations

from typing import Any

import yaml

from patterns.sidecar.collector.config import load_config, max_stored_request_bytes
from tests.conftest import ROOT

MANIFEST = ROOT / "k8s/sidecar/base/log-collector.yaml"
UNITS = {"Mi": 2**20, "Gi": 2**30}


def deployment_spec() -> dict[str, Any]:
    docs = yaml.safe_load_all(MANIFEST.read_text())
    [spec] = [d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Deployment"]
    return dict(spec)


def collector_container() -> dict[str, Any]:
    [container] = deployment_spec()["containers"]
    return dict(container)


def literal_env() -> dict[str, str]:
    return {e["name"]: e["value"] for e in collector_container()["env"] if "value" in e}


def quantity(text: str) -> int:
    return int(text[:-2]) * UNITS[text[-2:]]


def test_the_shared_key_comes_from_the_shippers_secret_and_is_optional() -> None:
    [key] = [e for e in collector_container()["env"] if e["name"] == "COLLECTOR_SHARED_KEY"]
    assert key["valueFrom"]["secretKeyRef"] == {
        "name": "forward-shared-key",
        "key": "shared-key",
        "optional": True,
    }


def test_the_defaults_are_the_limits_the_manifest_sizes_its_pod_for() -> None:
    # The memory sums are written once, next to the manifest's settings: the defaults
    # must be the same, or the sums say nothing about a collector started without them.
    manifest, defaults = load_config(literal_env()), load_config({})
    for name in (
        "limits",
        "max_connections",
        "max_buffered_bytes",
        "max_inflight_requests",
        "frame_timeout",
        "segment_bytes",
        "retention_bytes",
        "retention_seconds",
        "recent_bytes",
    ):
        assert getattr(manifest, name) == getattr(defaults, name), name


def test_retention_keeps_the_data_files_under_the_volumes_size_limit() -> None:
    config = load_config(literal_env())
    [data] = [v for v in deployment_spec()["volumes"] if v["name"] == "data"]
    size_limit = quantity(data["emptyDir"]["sizeLimit"])
    assert config.retention_bytes > 0 and config.retention_seconds > 0
    # Retention holds the files under retention_bytes (before each write); what the
    # filesystem adds (blocks, directory, a counts file being replaced) fits the rest.
    assert config.retention_bytes + 64 * 2**20 <= size_limit
    assert config.retention_bytes >= 2 * config.segment_bytes + (
        config.max_inflight_requests * max_stored_request_bytes(config.limits)
    )
