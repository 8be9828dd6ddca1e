"""What every service's settings share (patterns/common/config.py's Env): a renamed setting's
old name keeps working with a warning naming the new one, a directory the service writes is
checked at start, and a Forward client's settings have one name and one parser."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from patterns.adapter.log_adapter.config import load_config as adapter_config
from patterns.ambassador.db_ambassador.config import load_config as ambassador_config
from patterns.common.config import ConfigError, Env, checking_dirs
from patterns.common.forward.settings import forward_settings
from patterns.sidecar.shipper.config import RENAMED as SHIPPER_RENAMED
from patterns.sidecar.shipper.config import load_config as shipper_config

RENAMED = {"OLD_SECONDS": "NEW_SECONDS"}


def test_the_old_name_is_read_when_the_new_one_is_unset_with_a_warning_naming_it(caplog):
    with caplog.at_level(logging.WARNING, logger="patterns.common.config"):
        env = Env({"OLD_SECONDS": "3"}, renamed=RENAMED)
        assert env.float("NEW_SECONDS", 1.0) == 3.0
    env.check()
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == ["OLD_SECONDS is deprecated: use NEW_SECONDS"]


def test_the_new_name_wins_silently_and_both_alike_is_fine(caplog):
    with caplog.at_level(logging.WARNING, logger="patterns.common.config"):
        assert Env({"NEW_SECONDS": "4"}, renamed=RENAMED).float("NEW_SECONDS", 1.0) == 4.0
        assert not caplog.records
        env = Env({"NEW_SECONDS": "4", "OLD_SECONDS": " 4 "}, renamed=RENAMED)
        assert env.float("NEW_SECONDS", 1.0) == 4.0
    env.check()


def test_both_names_set_and_different_is_a_configuration_error_naming_both():
    env = Env({"NEW_SECONDS": "4", "OLD_SECONDS": "5"}, renamed=RENAMED)
    assert env.float("NEW_SECONDS", 1.0) == 1.0
    with pytest.raises(ConfigError, match="OLD_SECONDS and NEW_SECONDS are both set and differ"):
        env.check()


def test_a_bad_value_under_the_old_name_is_reported_under_the_name_that_was_set():
    env = Env({"OLD_SECONDS": "soon"}, renamed=RENAMED)
    env.float("NEW_SECONDS", 1.0)
    with pytest.raises(ConfigError, match=r"^OLD_SECONDS='soon': expected a number$"):
        env.check()


def test_parsing_settings_touches_no_directory(tmp_path: Path):
    wanted = tmp_path / "state"
    assert Env({"X_DIR": str(wanted)}).writable_dir("X_DIR", "/nowhere") == wanted
    assert not wanted.exists()


def test_at_start_a_writable_dir_is_created(tmp_path: Path):
    wanted = tmp_path / "a" / "state"
    env = Env({"X_DIR": str(wanted)})
    with checking_dirs():
        assert env.writable_dir("X_DIR", "/nowhere") == wanted
    env.check()
    assert wanted.is_dir()


def test_at_start_an_unusable_dir_is_a_configuration_error_naming_the_variable(tmp_path: Path):
    (tmp_path / "file").write_text("")
    env = Env({"X_DIR": str(tmp_path / "file" / "state")})
    with checking_dirs():
        env.writable_dir("X_DIR", "/nowhere")
    with pytest.raises(ConfigError, match=r"^X_DIR=/.*/file/state: Not a directory$"):
        env.check()


FORWARD = {"FLUENT_HOST": "collector", "FLUENT_PORT": "24225", "FLUENT_TAG": "t",
           "FLUENT_SHARED_KEY": "k3y"}


def test_the_shipper_and_the_adapter_read_the_forward_settings_alike():
    shipper = shipper_config({"SHIPPER_PATHS": "/x.log", **FORWARD}).forward
    adapter = adapter_config({"ADAPTER_INPUTS": "json=/x.log", **FORWARD}).forward
    assert shipper == adapter == forward_settings(Env(FORWARD), default_tag="unused")
    assert (shipper.address, shipper.tag, shipper.shared_key) == ("collector:24225", "t", "k3y")
    assert "k3y" not in repr(shipper)


def test_the_shippers_old_forward_names_still_work():
    assert SHIPPER_RENAMED["SHIPPER_TAG"] == "FLUENT_TAG"
    config = shipper_config({"SHIPPER_PATHS": "/x.log", "SHIPPER_TAG": "old.tag",
                             "SHIPPER_SHARED_KEY": "old", "SHIPPER_POLL_INTERVAL": "0.5",
                             "SHIPPER_RESCAN_INTERVAL": "7"})
    assert (config.forward.tag, config.forward.shared_key) == ("old.tag", "old")
    assert (config.limits.poll_interval, config.limits.rescan_interval) == (0.5, 7.0)
    with pytest.raises(ConfigError, match="SHIPPER_SHARED_KEY and FLUENT_SHARED_KEY"):
        shipper_config({"SHIPPER_PATHS": "/x.log", "SHIPPER_SHARED_KEY": "old",
                        "FLUENT_SHARED_KEY": "new"})


def test_the_ambassadors_old_health_interval_still_works():
    config = ambassador_config({"AMBASSADOR_UPSTREAMS": "db:5432",
                                "AMBASSADOR_HEALTH_INTERVAL": "0.5"})
    assert config.health_interval == 0.5
    with pytest.raises(ConfigError, match=r"AMBASSADOR_HEALTH_INTERVAL='soon': expected"):
        ambassador_config({"AMBASSADOR_UPSTREAMS": "db:5432",
                           "AMBASSADOR_HEALTH_INTERVAL": "soon"})
