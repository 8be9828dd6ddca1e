"""The shipper's entry encoder and its configuration."""

from __future__ import annotations

import pytest

from patterns.common.config import ConfigError
from patterns.common.forward import protocol
from patterns.sidecar.shipper.config import load_config
from patterns.sidecar.shipper.encode import EntryEncoder

LINES = ["plain", "", "é unicode ✓", "x" * 40, "y" * 300, "z" * 70_000, "nul \x00 byte", "\ufffd"]


def test_encoded_entries_are_byte_identical_to_the_reference_encoder():
    timestamp = 1_764_000_000.123456789
    path = "/var/log/app/app.log"
    fast = EntryEncoder().encode(LINES, path, timestamp)
    seconds = int(timestamp)
    reference = b"".join(
        protocol.encode_entry(seconds + (timestamp - seconds), {"log": line, "file": path})
        for line in LINES
    )
    assert fast == reference


def test_encoded_entries_decode_as_forward_events_with_event_time():
    timestamp = 1_764_000_000.5
    data = EntryEncoder().encode(LINES, "/a.log", timestamp)
    limits = protocol.Limits(max_frame_bytes=1 << 24, max_decompressed_bytes=1 << 24)
    events = protocol.decode_entries(data, limits)
    assert [record for _, record in events] == [{"log": line, "file": "/a.log"} for line in LINES]
    assert all(time == timestamp for time, _ in events)


def test_no_lines_encode_to_nothing():
    assert EntryEncoder().encode([], "/a.log", 1.0) == b""


def test_config_defaults():
    config = load_config({"SHIPPER_PATHS": "/var/log/app/*.log, /var/log/other.log"})
    assert config.paths == ["/var/log/app/*.log", "/var/log/other.log"]
    assert config.tag == "app.logs"
    assert (config.fluent_host, config.fluent_port, config.admin_port) == ("127.0.0.1", 24224, 9102)
    assert str(config.state_dir) == "/var/lib/log-shipper"
    assert config.batch_bytes == 512 * 1024
    assert config.limits.max_line_bytes == 64 * 1024
    assert config.shutdown_timeout < 30, "must finish within Kubernetes' default grace period"
    assert config.shared_key is None


def test_config_errors_name_every_bad_variable():
    with pytest.raises(ConfigError) as error:
        load_config(
            {"SHIPPER_BATCH_BYTES": "4 MiB", "FLUENT_PORT": "0", "SHIPPER_LONG_LINES": "drop"}
        )
    message = str(error.value)
    for name in ("SHIPPER_PATHS", "SHIPPER_BATCH_BYTES", "FLUENT_PORT", "SHIPPER_LONG_LINES"):
        assert name in message
