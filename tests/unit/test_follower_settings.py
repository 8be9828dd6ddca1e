"""The file follower's safety settings, as each service that uses it reads them: links are
not followed and the open files are bounded unless the operator says otherwise."""

from __future__ import annotations

import pytest

from patterns.adapter.log_adapter.config import load_config as adapter_config
from patterns.common.config import ConfigError
from patterns.sidecar.shipper.config import load_config as shipper_config

SHIPPER = {"SHIPPER_PATHS": "/var/log/app/*.log"}
ADAPTER = {"ADAPTER_INPUTS": "combined=/var/log/app/access.log"}


def test_shipper_does_not_follow_links_unless_asked():
    config = shipper_config(SHIPPER)
    assert config.limits.follow_symlinks is False
    assert config.limits.max_files == 256
    config = shipper_config(
        {**SHIPPER, "SHIPPER_FOLLOW_SYMLINKS": "true", "SHIPPER_MAX_FILES": "5000"}
    )
    assert config.limits.follow_symlinks is True
    assert config.limits.max_files == 5000


def test_adapter_does_not_follow_links_unless_asked():
    config = adapter_config(ADAPTER)
    assert config.follow_symlinks is False
    assert config.max_files == 256
    config = adapter_config(
        {**ADAPTER, "ADAPTER_FOLLOW_SYMLINKS": "true", "ADAPTER_MAX_FILES": "5000"}
    )
    assert config.follow_symlinks is True
    assert config.max_files == 5000


@pytest.mark.parametrize(
    ("load", "base", "prefix"),
    [(shipper_config, SHIPPER, "SHIPPER"), (adapter_config, ADAPTER, "ADAPTER")],
)
def test_bad_follower_settings_are_named(load, base, prefix):
    with pytest.raises(ConfigError) as error:
        load({**base, f"{prefix}_FOLLOW_SYMLINKS": "maybe", f"{prefix}_MAX_FILES": "0"})
    assert f"{prefix}_FOLLOW_SYMLINKS" in str(error.value)
    assert f"{prefix}_MAX_FILES" in str(error.value)
